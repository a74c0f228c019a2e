"""auto_compress: the search keeps the budget on the .tflite, recipes round-trip, bad input, CLI.

Three pipeline runs in all (a search whose one trial fails and backs off, and
the CLI re-running the recipe found); everything else is checked without
training.
"""

import json
import os
import random

import keras
import numpy as np
import pytest

import tfcompress
from conftest import fit_small_classifier, small_digits
from tfcompress import cli, lite
from tfcompress.auto import allocate, knobs, pipeline, sizes
from tfcompress.auto.sensitivity import Evaluator, measure
from tfcompress.report import stored_bits, tflite_weights

BUDGET = 0.04
SETTINGS = dict(
    max_accuracy_drop=BUDGET,
    seed=0,
    epochs={"prune": 2, "cluster": 1, "qat": 1},
    sensitivity_samples=128,
    verbose=0,
)


def tiny_classifier():
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(32, activation="relu", name="hidden"),
            keras.layers.Dense(10, name="logits"),
        ]
    )


@pytest.fixture(scope="module")
def data(digits):
    return small_digits(digits)


@pytest.fixture(scope="module")
def trained(data):
    x, y, _, _ = data
    return fit_small_classifier(tiny_classifier, x, y)


@pytest.fixture(scope="module")
def searched(trained, data):
    """A search of one trial (and the back-off); validation data as a tf.data.Dataset."""
    import tensorflow as tf

    x, y, x_val, y_val = data
    before = [w.copy() for w in trained.get_weights()]
    validation = tf.data.Dataset.from_tensor_slices((x_val, y_val)).batch(64)
    result = tfcompress.auto_compress(trained, x, y, validation, max_trials=1, **SETTINGS)
    return result, before


def test_search_keeps_the_budget_on_the_converted_tflite(searched, trained, data):
    result, before = searched
    _, _, x_val, y_val = data
    baseline = lite.evaluate(lite.convert(trained), x_val, y_val)["accuracy"]
    accuracy = lite.evaluate(result.tflite, x_val, y_val)["accuracy"]
    assert result.within_budget
    assert result.baseline_accuracy == baseline
    assert accuracy >= baseline - BUDGET
    assert result.report[-1]["tflite_accuracy"] == accuracy
    assert result.report[-1]["gzip_bytes"] < result.report[0]["gzip_bytes"] / 4
    assert [t["passed"] for t in result.trials] == [
        t["tflite_accuracy"] >= baseline - BUDGET for t in result.trials
    ]
    # The first trial (harsher than any recipe that keeps the budget untrained) failed on
    # its .tflite; the search backed off to one that kept it, and returned that one.
    assert [t["passed"] for t in result.trials] == [False, True]
    assert result.trials[0]["gzip_bytes"] < result.trials[1]["gzip_bytes"]
    assert result.trials[1]["gzip_bytes"] == result.report[-1]["gzip_bytes"]
    # The search measured on the float model and left it as it was.
    assert all(np.array_equal(a, b) for a, b in zip(before, trained.get_weights()))
    assert set(result.seconds) >= {"baseline", "sensitivity", "allocation", "trials", "total"}


def test_recipe_is_plain_json_and_what_the_tflite_holds(searched):
    result, _ = searched
    recipe = result.recipe
    assert json.loads(json.dumps(recipe)) == recipe
    assert list(recipe) == ["conv", "hidden", "logits"]
    assert any(entry["sparsity"] > 0 for entry in recipe.values())
    for entry in recipe.values():
        assert entry["sparsity"] in knobs.SPARSITY.grid
        assert entry["clusters"] in knobs.CLUSTERS.grid
    # The int8 kernels in the file: the recipe's zeros and at most its clusters.
    int8 = {name: values for name, values, _ in tflite_weights(result.tflite) if values.dtype == np.int8}
    for layer, entry in recipe.items():
        (values,) = [v for name, v in int8.items() if f"quant_{layer}" in name]
        assert np.mean(values == 0) >= entry["sparsity"] - 0.01
        if entry["clusters"] is not None:
            assert len(np.unique(values[values != 0])) <= entry["clusters"]


def test_size_model_encodes_kernels_as_the_tflite_stores_them(searched):
    """`sizes.kernel_codes` of the shipped QAT kernels is exactly the int8 / INT4 tensor of the file."""
    result, _ = searched
    int8 = {name: values for name, values, _ in tflite_weights(result.tflite) if values.dtype == np.int8}
    wrappers = [l for l in result.model.layers if isinstance(l, tfcompress.QuantizeWrapper)]
    assert len(wrappers) == 3
    for wrapper in wrappers:
        inner = wrapper.layer
        (name,) = [name for name in result.recipe if wrapper.name.startswith(f"quant_{name}")]
        shipped = wrapper.shipped_weights()[id(inner.kernel)]
        shared = result.recipe[name]["clusters"] is not None
        bits = result.recipe[name]["weight_bits"]
        codes = sizes.kernel_codes(inner, inner.kernel, shipped, shared, bits)
        (stored,) = [v for key, v in int8.items() if f"quant_{name}" in key]
        assert stored_bits(stored) == (8 if bits == 8 else 4)
        assert np.array_equal(codes.reshape(stored.shape), stored)
    # The search gave at least one layer fewer bits (a model this small barely
    # shrinks otherwise).
    assert min(entry["weight_bits"] for entry in result.recipe.values()) < 8


def test_recipe_round_trip_through_the_cli(searched, data, trained, tmp_path, capsys):
    """The CLI re-runs the recipe with the same seed: the same file, byte for byte."""
    result, _ = searched
    x, y, x_val, y_val = data
    model_path = str(tmp_path / "model.keras")
    trained.save(model_path)
    np.savez(tmp_path / "train.npz", x=x, y=y)
    np.savez(tmp_path / "val.npz", x=x_val, y=y_val)
    (tmp_path / "recipe.json").write_text(result.recipe_json())
    out = str(tmp_path / "model.tflite")
    status = cli.main(
        ["compress", model_path, "--data", str(tmp_path / "train.npz"),
         "--validation", str(tmp_path / "val.npz"), "--max-drop", str(100 * BUDGET),
         "--recipe", str(tmp_path / "recipe.json"), "--save-recipe", str(tmp_path / "again.json"),
         "--epochs", "2", "1", "1", "-o", out]
    )
    stdout = capsys.readouterr().out
    assert status == 0
    assert "[2/2] pipeline with the given recipe" in stdout
    assert "| float32 |" in stdout and "recipe (JSON):" in stdout
    assert json.loads((tmp_path / "again.json").read_text()) == result.recipe
    with open(out, "rb") as f:
        assert f.read() == result.tflite
    assert f"wrote {out} ({len(result.tflite):,} bytes" in stdout


def test_cli_bad_input_is_one_line_and_status_2(trained, data, tmp_path, capsys):
    x, y, _, _ = data
    model_path = str(tmp_path / "model.keras")
    trained.save(model_path)
    np.savez(tmp_path / "train.npz", x=x, y=y)
    np.savez(tmp_path / "no_y.npz", x=x)
    (tmp_path / "bad.json").write_text("{nope")
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 not really")
    base = ["compress", model_path, "--data", str(tmp_path / "train.npz"),
            "--validation", str(tmp_path / "train.npz"), "-o", str(tmp_path / "o.tflite")]
    for argv, message in [
        (["--max-drop", "-1"], "--max-drop must be >= 0. Received: --max-drop=-1.0"),
        (["--data", str(tmp_path / "no_y.npz")], "no_y.npz has no array 'y' (it holds ['x'])"),
        (["--recipe", str(tmp_path / "bad.json")], "is not valid JSON"),
        (["--recipe", str(tmp_path / "train.npz")], "--recipe must be a .json file. Received: --recipe="),
        (["--validation", str(tmp_path / "broken.npz")], "broken.npz is not a readable numpy file (BadZipFile"),
    ]:
        status = cli.main(base + argv)
        stderr = capsys.readouterr().err
        assert status == 2, argv
        assert stderr.strip().count("\n") == 0
        assert message in stderr
        assert not os.path.exists(tmp_path / "o.tflite")


# -- bad input, checked before any training ----------------------------------


BAD_ARGUMENTS = [
    (dict(max_accuracy_drop=-0.01), ValueError, "max_accuracy_drop must be >= 0.0. Received: max_accuracy_drop=-0.01"),
    (dict(max_accuracy_drop="1%"), ValueError, "max_accuracy_drop must be a number"),
    (dict(objective="speed"), ValueError, "objective must be one of ['latency', 'size']"),
    (dict(x=np.zeros((10, 28, 28, 1), "float32"), y=np.zeros(10, "int32")), ValueError,
     "x has shape (10, 28, 28, 1), but the model expects (batch, 8, 8, 1)"),
    (dict(y=np.zeros(7, "int32")), ValueError, "x and y must have the same number of examples"),
    (dict(validation_data=(np.zeros((5, 8, 8), "float32"), np.zeros(5))), ValueError,
     "validation_data x has shape (5, 8, 8), but the model expects (batch, 8, 8, 1)"),
    (dict(validation_data=(np.zeros((5, 8, 8, 1), "float32"), np.full(5, 12))), ValueError,
     "holds class labels in [12, 12], but the output has 10 classes"),
    (dict(validation_data=None), ValueError, "validation_data is required"),
    (dict(recipe={"dense_9": {"sparsity": 0.5}}), ValueError, "recipe names layers the model has no compressible layer for: ['dense_9']"),
    (dict(recipe={"hidden": {"bits": 4}}), ValueError, "recipe['hidden'] has unknown knob(s) ['bits']"),
    (dict(recipe={"hidden": {"weight_bits": 3}}), ValueError,
     "recipe['hidden']['weight_bits'] must be one of [1, 2, 4, 8]. Received: recipe['hidden']['weight_bits']=3"),
    (dict(recipe={"hidden": {"sparsity": 1.5}}), ValueError, "recipe['hidden']['sparsity'] must be in [0, 1). Received: recipe['hidden']['sparsity']=1.5"),
    (dict(recipe={"hidden": {"clusters": 1}}), ValueError, "recipe['hidden']['clusters'] must be >= 2"),
    (dict(recipe=[("hidden", 0.5)]), ValueError, "recipe must be a dict {layer_name: {knob: value}}"),
    (dict(epochs={"finetune": 3}), ValueError, "epochs must be a dict with keys from ['channels', 'prune', 'cluster', 'qat']"),
    (dict(max_trials=0), ValueError, "max_trials must be >= 1"),
]


def test_bad_arguments_fail_before_any_training(trained, data):
    x, y, x_val, y_val = data
    for change, error, message in BAD_ARGUMENTS:
        kwargs = dict(x=x[:20], y=y[:20], validation_data=(x_val[:20], y_val[:20]), **SETTINGS)
        kwargs.update(change)
        with pytest.raises(error) as info:
            tfcompress.auto_compress(trained, **kwargs)
        assert message in str(info.value), change
    one_hot = np.eye(10, dtype="float32")[y[:20]]
    with pytest.raises(ValueError, match="compiled loss 'sparse_categorical_crossentropy' does "
                       r"not fit the labels of shape \(10,\)"):
        tfcompress.auto_compress(trained, x[:20], one_hot, (x_val[:20], y_val[:20]))


def test_model_with_nothing_to_compress_or_not_a_classifier(data):
    x, y, x_val, y_val = data
    nothing = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.AveragePooling2D(4),
                                keras.layers.Flatten(), keras.layers.Softmax()])
    with pytest.raises(ValueError, match="has no layer that pruning or clustering can compress"):
        tfcompress.auto_compress(nothing, x[:8, :, :, :], y[:8] % 4, (x_val[:8], y_val[:8] % 4))
    regression = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(1)])
    with pytest.raises(ValueError, match=r"needs a classifier.*outputs shape \(None, 1\)"):
        tfcompress.auto_compress(regression, x[:8], y[:8], (x_val[:8], y_val[:8]))
    with pytest.raises(TypeError, match="auto_compress expects a keras.Model"):
        tfcompress.auto_compress("model.keras", x, y, (x_val, y_val))
    pruned = tfcompress.prune_low_magnitude(tiny_classifier())
    with pytest.raises(ValueError, match="already holds a PruneLowMagnitude"):
        tfcompress.auto_compress(pruned, x[:8], y[:8], (x_val[:8], y_val[:8]))


def test_training_data_as_a_dataset(trained, data):
    import tensorflow as tf

    x, y, _, _ = data
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(64)
    training = pipeline.TrainingData(dataset)
    assert training.steps_per_epoch == 10
    first_x, first_y = training.first_batch()
    assert first_x.shape == (64, 8, 8, 1) and np.array_equal(first_y, y[:64])
    loss = pipeline.classification_loss(tiny_classifier(), training)
    assert isinstance(loss, keras.losses.SparseCategoricalCrossentropy)
    with pytest.raises(ValueError, match=r"x \(dataset\) has examples of shape \(4, 4, 1\)"):
        tfcompress.auto_compress(
            trained, tf.data.Dataset.from_tensor_slices((x[:, :4, :4], y)).batch(8),
            validation_data=(x[:8], y[:8]),
        )


def test_keep_zeros_holds_pruned_layers_that_a_stage_trains_unwrapped(data):
    """In the clustering stage, a pruned layer that is not clustered keeps its zeros."""
    x, y, _, _ = data
    model = tiny_classifier()
    hidden = model.get_layer("hidden")
    hidden.kernel.assign(knobs.SPARSITY.apply(hidden.kernel.numpy(), 0.8, 0))
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    keep = pipeline.KeepZeros(model, {"hidden"})
    model.fit(x, y, batch_size=64, epochs=1, verbose=0, callbacks=[keep])
    assert np.mean(hidden.kernel.numpy() == 0) == pytest.approx(0.8, abs=0.001)
    model.fit(x, y, batch_size=64, epochs=1, verbose=0)  # without it, they train back
    assert np.mean(hidden.kernel.numpy() == 0) < 0.1


def test_a_recipe_that_clusters_without_pruning_ships_its_clusters(trained, data):
    """QAT keeps the clusters of a stage that pruned nothing (they were re-spread before)."""
    x, y, _, _ = data
    models = pipeline.train_pipeline(
        trained, x, y, epochs={"cluster": 1, "qat": 1}, clusters={"hidden": 4}, verbose=0
    )
    wrapper = models.qat.get_layer("quant_hidden")
    kernel = wrapper.shipped_weights()[id(wrapper.layer.kernel)]
    assert len(np.unique(kernel)) <= 4


# -- the search machinery, without training ----------------------------------


def test_sensitivity_is_monotone_and_restores_the_model(trained, data):
    _, _, x_val, y_val = data
    before = [w.copy() for w in trained.get_weights()]
    layers = knobs.compressible_layers(trained)
    table = measure(trained, layers, knobs.search_grids(layers), x_val, y_val, verbose=0)
    assert all(np.array_equal(a, b) for a, b in zip(before, trained.get_weights()))
    assert table.base_loss == pytest.approx(Evaluator(trained, x_val, y_val)()[0])
    for name in layers:
        rises = list(table.loss[name]["sparsity"].values())
        assert rises == sorted(rises) and rises[0] == 0.0
        assert rises[-1] > 0.1  # 98% of a layer's weights gone hurts
    # Pruning 90% costs the 4,608-weight hidden layer least, the 36-weight conv and the
    # 320-weight logits layer far more.
    at_90 = {name: table.loss[name]["sparsity"][0.9] for name in layers}
    assert at_90["hidden"] < min(at_90["conv"], at_90["logits"]) / 1.5, at_90


def test_size_table_prices_sparsity_clusters_and_bits(trained):
    table = sizes.size_table(trained.get_layer("hidden"))
    assert len(table) == len(knobs.SPARSITY.grid) * len(knobs.CLUSTERS.grid) * len(knobs.BITS.grid)
    plain = table[(0.0, None, 8)]
    assert 3000 < plain < 4700  # 4,608 int8 values, little redundancy
    assert table[(0.9, None, 8)] < plain / 3
    assert table[(0.9, 4, 8)] < table[(0.9, 32, 8)] < table[(0.9, None, 8)]
    # 4,608 INT4 values pack into 2,304 bytes: about half the int8 size (scales aside).
    assert 1500 < table[(0.0, None, 4)] < 0.6 * plain + 256
    assert table[(0.0, None, 2)] < table[(0.0, None, 4)]
    # The scales: 8 B for the Dense kernel at int8 (one per tensor) and when clustered,
    # 8 B per channel (kernel and bias) at 4 bits and fewer, where each of the 32 has one.
    hidden = trained.get_layer("hidden")
    prices = {
        (shared, bits): sizes.scale_bytes(hidden, hidden.kernel, hidden.kernel.shape, shared, bits)
        for shared in (False, True)
        for bits in (8, 4, 2)
    }
    assert prices == {(False, 8): 8, (False, 4): 256, (False, 2): 256, (True, 8): 8, (True, 4): 8, (True, 2): 8}
    conv = trained.get_layer("conv")  # per channel at 8 bits too: 4 channels
    assert sizes.scale_bytes(conv, conv.kernel, conv.kernel.shape, False, 8) == 32


def test_frontier_points_are_pareto_optimal():
    rng = random.Random(0)
    options = {
        f"layer{i}": [allocate.Option((i, j), rng.randint(10, 1000), rng.random()) for j in range(4)]
        for i in range(4)
    }
    for table in options.values():  # each layer has its untouched option: biggest, free
        table.append(allocate.Option("neutral", 1200, 0.0))
    points = allocate.frontier(options)
    assert [p.bytes for p in points] == sorted((p.bytes for p in points), reverse=True)
    assert points[0].cost == 0.0
    every = [[]]
    for table in options.values():
        every = [chosen + [o] for chosen in every for o in table]
    for point in points:
        assert not any(
            sum(o.bytes for o in c) <= point.bytes and sum(o.cost for o in c) < point.cost - 1e-12
            for c in every
        )


def test_search_backs_off_after_a_failure_and_falls_back_to_no_compression():
    points = [allocate.Point({}, b, 0.0) for b in (1000, 700, 500, 300, 200, 120, 80, 50)]

    def passes_up_to(last_passing):
        return lambda index: (index <= last_passing, points[index].bytes)

    # From the start (predicted to pass) harsher: 4 fails, backs off to 3, which passes.
    best, tried = allocate.search(points, passes_up_to(3), start=2, max_trials=4)
    assert (best, tried) == (3, {4: False, 3: True})
    # Nothing passes within the trials: the start, then no compression at all.
    best, tried = allocate.search(points, passes_up_to(0), start=3, max_trials=2)
    assert best == 0 and list(tried) == [5, 4, 3, 0]


def test_search_spends_the_runs_left_on_the_moves_past_the_failed_one():
    """Once point 1 passes and point 2 fails, the next moves of the other layers are tried."""
    options = {
        "a": [allocate.Option("a0", 100, 0.0), allocate.Option("a1", 60, 0.1), allocate.Option("a2", 30, 0.5)],
        "b": [allocate.Option("b0", 100, 0.0), allocate.Option("b1", 50, 0.2)],
        "c": [allocate.Option("c0", 80, 0.0), allocate.Option("c1", 40, 0.3), allocate.Option("c2", 20, 0.9)],
    }
    points = allocate.frontier(options)
    recipes = [[o.settings for o in p.choice.values()] for p in points]
    assert recipes == [
        ["a0", "b0", "c0"], ["a1", "b0", "c0"], ["a1", "b1", "c0"],
        ["a1", "b1", "c1"], ["a2", "b1", "c1"], ["a2", "b1", "c2"],
    ]

    def run(index):  # b's move costs the budget, and so does c's second one
        settings = {o.settings for o in points[index].choice.values()}
        return not settings & {"b1", "c2"}, points[index].bytes

    best, tried = allocate.search(points, run, start=0, max_trials=6)
    # Bisection: 3 and 2 fail, 1 passes; then c1 and a2 from point 1 pass, c2 fails.
    assert tried == {3: False, 2: False, 1: True, 6: True, 7: True, 8: False}
    assert [o.settings for o in points[best].choice.values()] == ["a2", "b0", "c1"]
    assert (best, points[best].bytes) == (7, 170)  # point 1: 240 B
    # No runs left, no extra points; nor on a frontier whose points move every layer.
    assert allocate.search(allocate.frontier(options), run, start=0, max_trials=3)[0] == 1
    two_at_once = [
        allocate.Point({"a": a, "c": c}, a.bytes + c.bytes, 0.0) for a, c in zip(options["a"], options["c"])
    ]
    best, tried = allocate.search(two_at_once, lambda i: (i <= 1, two_at_once[i].bytes), 0, 6)
    assert (best, tried) == (1, {1: True, 2: False}) and len(two_at_once) == 3

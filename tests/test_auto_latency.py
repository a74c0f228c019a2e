"""auto_compress(objective="latency"): kept channels per group, MACs, the budget on the .tflite, recipes.

Three pipeline runs in all (a search of one trial, its recipe edited to add
pruning and clustering, and the CLI re-running that one); everything else is
checked without training.
"""

import json

import keras
import numpy as np
import pytest

import tfcompress
from conftest import fit_small_classifier, small_digits
from tfcompress import cli, lite
from tfcompress.auto import channels, knobs
from tfcompress.auto import recipe as recipe_lib
from tfcompress.report import tflite_weights

BUDGET = 0.04
SETTINGS = dict(
    max_accuracy_drop=BUDGET,
    seed=0,
    epochs={"channels": 2, "qat": 1},
    sensitivity_samples=128,
    verbose=0,
)
FLOAT_MACS = 320_832  # conv1 8*8*9*1*16 + conv2 8*8*9*16*32 + hidden 512*32 + logits 32*10


def conv_classifier():
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1"),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2"),
            keras.layers.MaxPooling2D(2, name="pool"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(32, activation="relu", name="hidden"),
            keras.layers.Dense(10, name="logits"),
        ]
    )


def residual_classifier():
    """Conv a and conv b are joined by an Add: one channel group, two producers."""
    inputs = keras.Input((8, 8, 1))
    a = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="a")(inputs)
    b = keras.layers.Conv2D(16, 3, padding="same", name="b")(a)
    x = keras.layers.Add(name="add")([a, b])
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="logits")(x), name="residual")


@pytest.fixture(scope="module")
def data(digits):
    return small_digits(digits)


@pytest.fixture(scope="module")
def trained(data):
    x, y, _, _ = data
    return fit_small_classifier(conv_classifier, x, y)


@pytest.fixture(scope="module")
def searched(trained, data):
    x, y, x_val, y_val = data
    before = [w.copy() for w in trained.get_weights()]
    result = tfcompress.auto_compress(
        trained, x, y, (x_val, y_val), objective="latency", max_trials=1, **SETTINGS
    )
    return result, before


COMBINED_EPOCHS = {"channels": 2, "prune": 1, "cluster": 1, "qat": 1}


@pytest.fixture(scope="module")
def combined(searched, trained, data):
    """The recipe found, edited to also prune `hidden` and cluster `conv2`, run again."""
    x, y, x_val, y_val = data
    recipe = json.loads(searched[0].recipe_json())
    recipe["hidden"].update(sparsity=0.8)
    recipe["conv2"].update(clusters=8)
    return tfcompress.auto_compress(
        trained, x, y, (x_val, y_val), recipe=recipe, objective="latency",
        **{**SETTINGS, "epochs": COMBINED_EPOCHS},
    )


def test_latency_search_cuts_macs_within_the_budget_on_the_tflite(searched, trained, data):
    result, before = searched
    _, _, x_val, y_val = data
    baseline = lite.evaluate(lite.convert(trained), x_val, y_val)["accuracy"]
    accuracy = lite.evaluate(result.tflite, x_val, y_val)["accuracy"]
    assert result.within_budget and result.objective == "latency"
    assert accuracy >= baseline - BUDGET
    assert result.report[-1]["tflite_accuracy"] == accuracy
    # MACs: counted on the shipped model, exactly what the allocation predicted.
    (trial,) = result.trials
    assert result.report[0]["macs"] == FLOAT_MACS == tfcompress.count_macs(trained).total
    assert result.report[-1]["macs"] == trial["macs"] == trial["predicted_macs"]
    assert trial["macs"] == tfcompress.count_macs(result.model).total
    assert trial["macs"] <= FLOAT_MACS / 2, trial["macs"]
    assert result.report[-1]["latency_ms"] > 0 and result.report[0]["latency_ms"] > 0
    # The int8 file holds fewer filters: conv2's kernel has the channels the recipe keeps.
    kept = 32 - int(round(result.recipe["conv2"]["channel_sparsity"] * 32))
    kept = int(np.clip(8 * round(kept / 8), 8, 32))
    int8 = [v for name, v, _ in tflite_weights(result.tflite) if "conv2" in name and v.ndim == 4]
    assert [v.shape[0] for v in int8] == [kept]
    assert all(np.array_equal(a, b) for a, b in zip(before, trained.get_weights()))
    assert "| MACs | vs float |" in result.report_table()


def test_latency_recipe_is_plain_json_one_value_per_group(searched):
    result, _ = searched
    recipe = result.recipe
    assert json.loads(json.dumps(recipe)) == recipe
    assert list(recipe) == ["conv1", "conv2", "hidden"]  # the logits are a model output
    assert any(entry["channel_sparsity"] > 0 for entry in recipe.values())
    for entry in recipe.values():
        assert entry["channel_sparsity"] in knobs.CHANNELS.grid
        # The size knobs stay neutral: they save bytes, not multiplies.
        assert (entry["sparsity"], entry["clusters"], entry["weight_bits"]) == (0.0, None, 8)
    assert set(result.sensitivity["groups"]) == {"conv1", "conv2", "hidden"}


def test_a_recipe_combines_kept_channels_with_the_size_knobs(searched, combined):
    """Channels first, then pruning and clustering act on the thinner model's kernels."""
    assert combined.recipe["hidden"]["sparsity"] == 0.8 and combined.within_budget
    assert combined.report[-1]["macs"] == searched[0].report[-1]["macs"]  # zeros save no MACs
    int8 = {name: v for name, v, _ in tflite_weights(combined.tflite) if v.dtype == np.int8}
    (hidden,) = [v for name, v in int8.items() if "hidden" in name and v.ndim == 2]
    (conv2,) = [v for name, v in int8.items() if "conv2" in name and v.ndim == 4]
    assert hidden.shape[1] == 4 * 4 * conv2.shape[0] < 4 * 4 * 32  # thinner conv2, fewer rows
    assert np.mean(hidden == 0) >= 0.79
    assert len(np.unique(conv2[conv2 != 0])) <= 8


def test_latency_recipe_round_trip_through_the_cli(combined, data, trained, tmp_path, capsys):
    """`--objective latency --recipe` re-runs a recipe with kept channels: the same file."""
    x, y, x_val, y_val = data
    model_path = str(tmp_path / "model.keras")
    trained.save(model_path)
    np.savez(tmp_path / "train.npz", x=x, y=y)
    np.savez(tmp_path / "val.npz", x=x_val, y=y_val)
    (tmp_path / "recipe.json").write_text(combined.recipe_json())
    out = str(tmp_path / "model.tflite")
    epochs = [str(COMBINED_EPOCHS[stage]) for stage in ("prune", "cluster", "qat")]
    status = cli.main(
        ["compress", model_path, "--data", str(tmp_path / "train.npz"),
         "--validation", str(tmp_path / "val.npz"), "--max-drop", str(100 * BUDGET),
         "--objective", "latency", "--recipe", str(tmp_path / "recipe.json"),
         "--channel-epochs", "2", "--epochs", *epochs, "-o", out]
    )
    stdout = capsys.readouterr().out
    assert status == 0
    assert "channel pruning (2 epochs)" in stdout
    with open(out, "rb") as f:
        assert f.read() == combined.tflite
    assert f"{combined.report[-1]['macs']:,} MACs)" in stdout
    status = cli.main(
        ["compress", model_path, "--data", str(tmp_path / "train.npz"), "--validation",
         str(tmp_path / "val.npz"), "--objective", "speed", "-o", out]
    )
    assert status == 2
    assert "--objective must be one of ['latency', 'size']. Received: --objective='speed'" in (
        capsys.readouterr().err
    )


# -- without training ---------------------------------------------------------


def test_sensitivity_masks_exactly_what_strip_channels_ships(trained, data):
    """The scan's masked model computes what the stripped model of the same masks computes."""
    _, _, x_val, y_val = data
    layers = knobs.compressible_layers(trained)
    groups = channels.recipe_groups(trained, layers)
    masker = channels.Masker(trained, groups, x_val, y_val)
    loss, drop, (base_loss, _) = channels.measure(masker, knobs.CHANNELS.grid, verbose=0)
    assert base_loss == pytest.approx(
        tfcompress.auto.sensitivity.Evaluator(trained, x_val, y_val)()[0], abs=1e-6
    )
    for name in groups.names:
        rises = list(loss[name].values())
        assert rises == sorted(rises) and rises[0] == 0.0
    assert loss["conv2"][0.75] > 0.3  # three quarters of conv2's filters gone hurts
    masker.pruning.mask_channels(channels.sparsity_vector({"conv2": 0.5}, groups), masker.scores)
    assert masker.pruning.kept_channels() == {"conv1": (16, 16), "conv2": (16, 32), "hidden": (32, 32)}
    stripped = tfcompress.strip_channels(masker.pruning)
    assert stripped.get_layer("conv2").filters == 16
    np.testing.assert_allclose(
        stripped.predict(x_val, verbose=0), masker.pruning.predict(x_val, verbose=0), atol=1e-4
    )
    counter = channels.MacCounter(trained, groups)
    assert counter({"conv2": 0.5}) == tfcompress.count_macs(stripped).total == 165_184
    masker.pruning.mask_channels(0.0)
    assert masker.pruning.kept_channels()["conv2"] == (32, 32)


def test_frontier_orders_by_loss_per_mac_and_counts_macs_exactly(trained, data):
    _, _, x_val, y_val = data
    layers = knobs.compressible_layers(trained)
    groups = channels.recipe_groups(trained, layers)
    counter = channels.MacCounter(trained, groups)
    grid = (0.0, 0.5)
    loss = {"conv1": {0.0: 0.0, 0.5: 0.01}, "conv2": {0.0: 0.0, 0.5: 0.2}, "hidden": {0.0: 0.0, 0.5: 0.5}}
    points, values = channels.frontier(loss, counter, grid)
    # conv1 first (cheapest per MAC saved), then conv2 (most MACs), hidden last.
    assert values == [
        {"conv1": 0.0, "conv2": 0.0, "hidden": 0.0},
        {"conv1": 0.5, "conv2": 0.0, "hidden": 0.0},
        {"conv1": 0.5, "conv2": 0.5, "hidden": 0.0},
        {"conv1": 0.5, "conv2": 0.5, "hidden": 0.5},
    ]
    # conv1 and conv2 both halved: conv2's MACs drop to a quarter (both its
    # input and output channels), which additive savings would miss.
    assert [p.bytes for p in points] == [FLOAT_MACS, 168_768, 86_848, 82_592]
    assert points[2].bytes == 8 * 8 * 9 * 8 + 8 * 8 * 9 * 8 * 16 + 256 * 32 + 32 * 10


def test_recipe_group_values_fill_in_and_must_agree():
    model = residual_classifier()
    layers = knobs.compressible_layers(model)
    groups = channels.recipe_groups(model, layers)
    assert groups.layers == {"a": ("a", "b")}
    # A member the recipe leaves out takes its group's value.
    assert recipe_lib.check_recipe({"a": {"channel_sparsity": 0.5}}, layers, groups) == {
        "a": {"channel_sparsity": 0.5, "sparsity": 0.0, "clusters": None, "weight_bits": 8},
        "b": {"channel_sparsity": 0.5, "sparsity": 0.0, "clusters": None, "weight_bits": 8},
    }
    assert recipe_lib.check_recipe({"logits": {"sparsity": 0.5}}, layers, groups) == {
        "logits": {"sparsity": 0.5, "clusters": None, "weight_bits": 8}
    }


LATENCY_BAD_INPUT = [
    (dict(recipe={"a": {"channel_sparsity": 1.5}}),
     "recipe['a']['channel_sparsity'] must be in [0, 1). Received: recipe['a']['channel_sparsity']=1.5"),
    (dict(recipe={"a": {"channel_sparsity": "half"}}),
     "recipe['a']['channel_sparsity'] must be in [0, 1). Received: recipe['a']['channel_sparsity']='half'"),
    (dict(recipe={"a": {"channel_sparsity": 0.5}, "b": {"channel_sparsity": 0.25}}),
     "recipe gives the layers of one channel group (of 'a': ['a', 'b']) different "
     "channel_sparsity values: {'a': 0.5, 'b': 0.25}"),
    (dict(recipe={"logits": {"channel_sparsity": 0.5}}),
     "recipe['logits'] sets channel_sparsity=0.5, but the output channels of layer 'logits' "
     "cannot be pruned: it is a model output. Layers that can: ['a', 'b']."),
    (dict(recipe={"a": {"channels": 0.5}}),
     "recipe['a'] has unknown knob(s) ['channels']. Known knobs: ['channel_sparsity', "
     "'sparsity', 'clusters', 'weight_bits']"),
]


def test_bad_latency_input_fails_before_any_training(data):
    x, y, x_val, y_val = data
    model = residual_classifier()
    for change, message in LATENCY_BAD_INPUT:
        for objective in ("latency", "size"):  # a recipe with kept channels runs under either
            kwargs = dict(x=x[:20], y=y[:20], validation_data=(x_val[:20], y_val[:20]), **SETTINGS)
            kwargs.update(change, objective=objective)
            with pytest.raises(ValueError) as info:
                tfcompress.auto_compress(model, **kwargs)
            assert message in str(info.value), (change, str(info.value))
    # Groups of at most 8 channels keep them all (multiples of 8): nothing to prune.
    narrow = keras.Sequential([
        keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, name="conv"), keras.layers.Flatten(),
        keras.layers.Dense(8, name="hidden"), keras.layers.Dense(10, name="logits"),
    ], name="narrow")
    with pytest.raises(ValueError) as info:
        tfcompress.auto_compress(narrow, x[:20], y[:20], (x_val[:20], y_val[:20]), objective="latency")
    assert str(info.value) == (
        "objective='latency' removes channels (prune_channels), but model 'narrow' has no "
        "channel group it can prune ('conv': its channel group (of 'conv') has 4 channels, and "
        "groups keep multiples of 8; 'hidden': its channel group (of 'hidden') has 8 channels, "
        "and groups keep multiples of 8; 'logits': it is a model output). Use objective='size'."
    )

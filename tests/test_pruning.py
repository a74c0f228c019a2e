"""Pruning: schedules at exact steps, masks, every prunable layer type, models, saving."""

import os
import warnings

import keras
import numpy as np
import pytest
from conftest import accuracy, compile_for_digits, make_cnn, make_mobile_block

import tfcompress
from tfcompress import pruning
from tfcompress._rewrite import iter_layers

L = keras.layers


# ---------------------------------------------------------------- schedules


def test_constant_sparsity_prunes_every_frequency_steps_in_range():
    schedule = pruning.ConstantSparsity(0.6, begin_step=10, end_step=30, frequency=10)
    turns = [step for step in range(0, 50) if bool(schedule(step)[0])]
    assert turns == [10, 20, 30]
    assert float(schedule(20)[1]) == pytest.approx(0.6)


def test_constant_sparsity_without_end_keeps_pruning():
    schedule = pruning.ConstantSparsity(0.5, begin_step=0, frequency=100)
    assert [bool(schedule(s)[0]) for s in (0, 99, 100, 10_000)] == [True, False, True, True]


def test_polynomial_decay_values_at_exact_steps():
    schedule = pruning.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=100, power=3, frequency=25)
    values = [float(schedule(s)[1]) for s in (0, 25, 50, 100, 150)]
    # 0.8 - 0.8 * (1 - t/100)^3
    np.testing.assert_allclose(values, [0.0, 0.4625, 0.7, 0.8, 0.8], atol=1e-6)
    assert [s for s in range(0, 200) if bool(schedule(s)[0])] == [0, 25, 50, 75, 100]


def test_polynomial_decay_from_nonzero_start_and_linear_power():
    schedule = pruning.PolynomialDecay(0.2, 0.6, begin_step=10, end_step=50, power=1, frequency=1)
    np.testing.assert_allclose(
        [float(schedule(s)[1]) for s in (0, 10, 30, 50)], [0.2, 0.2, 0.4, 0.6], atol=1e-6
    )


def test_polynomial_decay_with_equal_begin_and_end_jumps_to_target():
    schedule = pruning.PolynomialDecay(0.0, 0.7, begin_step=5, end_step=5, frequency=1)
    assert float(schedule(4)[1]) == pytest.approx(0.0)
    assert float(schedule(5)[1]) == pytest.approx(0.7)
    assert [s for s in range(10) if bool(schedule(s)[0])] == [5]


@pytest.mark.parametrize(
    "schedule",
    [
        pruning.ConstantSparsity(0.3, begin_step=5, end_step=50, frequency=7),
        pruning.PolynomialDecay(0.1, 0.9, begin_step=0, end_step=400, power=2, frequency=20),
    ],
)
def test_schedule_config_round_trip(schedule):
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
    assert restored == schedule
    assert restored.get_config() == schedule.get_config()


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: pruning.ConstantSparsity(1.2, 0), "target_sparsity must be in [0, 1). Received: target_sparsity=1.2"),
        (lambda: pruning.ConstantSparsity(-0.1, 0), "Received: target_sparsity=-0.1"),
        (lambda: pruning.ConstantSparsity(0.5, -1), "begin_step must be >= 0. Received: begin_step=-1"),
        (lambda: pruning.ConstantSparsity(0.5, 10, end_step=5), "end_step must be >= begin_step"),
        (lambda: pruning.ConstantSparsity(0.5, 0, frequency=0), "frequency must be >= 1. Received: frequency=0"),
        (lambda: pruning.ConstantSparsity(0.5, 1.5), "begin_step must be an integer. Received: begin_step=1.5"),
        (lambda: pruning.PolynomialDecay(0.0, 1.0, 0, 10), "final_sparsity must be in [0, 1). Received: final_sparsity=1.0"),
        (lambda: pruning.PolynomialDecay(0.0, 0.5, 0, -1), "needs an end_step"),
        (lambda: pruning.PolynomialDecay(0.0, 0.5, 0, 10, power=0), "power must be a number > 0. Received: power=0"),
    ],
)
def test_schedule_arguments_are_checked(make, message):
    with pytest.raises(ValueError) as error:
        make()
    assert message in str(error.value)


# -------------------------------------------------------------------- masks


def test_magnitude_mask_zeros_exactly_the_smallest_fraction():
    weights = np.random.default_rng(0).normal(size=(40, 25)).astype("float32")
    mask = keras.ops.convert_to_numpy(pruning.magnitude_mask(weights, 0.3))
    assert mask.mean() == pytest.approx(0.7, abs=1e-9)
    assert np.abs(weights[mask == 0]).max() < np.abs(weights[mask == 1]).min()


def test_magnitude_mask_at_zero_sparsity_keeps_everything():
    weights = np.zeros((3, 3), "float32")
    assert keras.ops.convert_to_numpy(pruning.magnitude_mask(weights, 0.0)).min() == 1.0


def test_block_mask_zeros_whole_blocks():
    weights = np.random.default_rng(1).normal(size=(8, 6)).astype("float32")
    mask = keras.ops.convert_to_numpy(pruning.block_mask(weights, 0.5, (2, 3), "AVG"))
    blocks = mask.reshape(4, 2, 2, 3).transpose(0, 2, 1, 3).reshape(8, 6)
    assert set(np.unique(blocks.sum(axis=1))) <= {0.0, 6.0}  # each block all 0 or all 1
    assert mask.mean() == pytest.approx(0.5)


def test_m_by_n_mask_on_conv_kernel_groups_input_channels():
    kernel = np.random.default_rng(2).normal(size=(3, 3, 8, 5)).astype("float32")
    mask = keras.ops.convert_to_numpy(pruning.m_by_n_mask(kernel, 2, 4))
    groups = mask.reshape(3, 3, 2, 4, 5)  # input axis split into groups of 4
    np.testing.assert_array_equal(groups.sum(axis=3), 2.0)
    kept = np.abs(kernel.reshape(3, 3, 2, 4, 5)) * groups
    dropped = np.abs(kernel.reshape(3, 3, 2, 4, 5)) * (1 - groups)
    assert np.all(kept.max(axis=3) >= dropped.max(axis=3))


# -------------------------------------------------- every prunable layer type


def _layer_case(name):
    """(model, x, y) with the layer under test right after the input."""
    rng = np.random.default_rng(0)
    cases = {
        "Dense": ((12,), lambda: L.Dense(16)),
        "EinsumDense": ((12,), lambda: L.EinsumDense("ab,bc->ac", output_shape=16)),
        "Conv1D": ((10, 4), lambda: L.Conv1D(8, 3)),
        "Conv2D": ((6, 6, 4), lambda: L.Conv2D(8, 3)),
        "Conv3D": ((4, 4, 4, 2), lambda: L.Conv3D(8, 3)),
        "Conv1DTranspose": ((10, 4), lambda: L.Conv1DTranspose(8, 3)),
        "Conv2DTranspose": ((6, 6, 4), lambda: L.Conv2DTranspose(8, 3)),
        "Conv3DTranspose": ((4, 4, 4, 2), lambda: L.Conv3DTranspose(8, 3)),
        "DepthwiseConv1D": ((10, 8), lambda: L.DepthwiseConv1D(3, depth_multiplier=2)),
        "DepthwiseConv2D": ((6, 6, 8), lambda: L.DepthwiseConv2D(3, depth_multiplier=2)),
        "SeparableConv1D": ((10, 8), lambda: L.SeparableConv1D(8, 3, depth_multiplier=2)),
        "SeparableConv2D": ((6, 6, 8), lambda: L.SeparableConv2D(8, 3, depth_multiplier=2)),
        "Embedding": ((7,), lambda: L.Embedding(50, 8)),
        "SimpleRNN": ((5, 6), lambda: L.SimpleRNN(8)),
        "LSTM": ((5, 6), lambda: L.LSTM(8)),
        "GRU": ((5, 6), lambda: L.GRU(8)),
    }
    shape, make_layer = cases[name]
    inputs = keras.Input(shape, dtype="int32" if name == "Embedding" else "float32")
    x = make_layer()(inputs)
    outputs = L.Dense(3)(L.Flatten()(x))
    if name == "Embedding":
        data = rng.integers(0, 50, size=(64,) + shape)
    else:
        data = rng.normal(size=(64,) + shape).astype("float32")
    return keras.Model(inputs, outputs), data, rng.integers(0, 3, size=64)


def _attention_case():
    rng = np.random.default_rng(0)
    inputs = keras.Input((6, 8))
    x = L.MultiHeadAttention(num_heads=2, key_dim=8)(inputs, inputs)
    outputs = L.Dense(3)(L.Flatten()(x))
    data = rng.normal(size=(64, 6, 8)).astype("float32")
    return keras.Model(inputs, outputs), data, rng.integers(0, 3, size=64)


PRUNABLE = [
    "Dense", "EinsumDense", "Conv1D", "Conv2D", "Conv3D", "Conv1DTranspose",
    "Conv2DTranspose", "Conv3DTranspose", "DepthwiseConv1D", "DepthwiseConv2D",
    "SeparableConv1D", "SeparableConv2D", "Embedding", "SimpleRNN", "LSTM", "GRU",
    "MultiHeadAttention",
]  # fmt: skip


@pytest.mark.parametrize("layer_type", PRUNABLE)
def test_every_prunable_layer_type_reaches_its_target(layer_type):
    model, x, y = _attention_case() if layer_type == "MultiHeadAttention" else _layer_case(layer_type)
    schedule = pruning.PolynomialDecay(0.0, 0.6, begin_step=0, end_step=6, power=1, frequency=2)
    # Named, so that depthwise layers (left dense in a whole model) are pruned too.
    schedules = {layer.name: schedule for layer in model.layers if layer.weights}
    pruned = tfcompress.prune_low_magnitude(model, pruning_schedule=schedules)
    wrapped = [l for l in pruned.layers if isinstance(l, pruning.PruneLowMagnitude)]
    assert [type(w.layer).__name__ for w in wrapped] == [layer_type, "Dense"]
    pruned.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    pruned.fit(x, y, batch_size=8, epochs=1, verbose=0)  # 8 steps: last update at step 6
    stripped = tfcompress.strip_pruning(pruned)
    assert not any(type(l).__module__.startswith("tfcompress") for l in iter_layers(stripped))
    target = next(l for l in iter_layers(stripped) if type(l).__name__ == layer_type)
    expected = {
        "SeparableConv1D": 2, "SeparableConv2D": 2, "SimpleRNN": 2, "LSTM": 2, "GRU": 2,
        "MultiHeadAttention": 4,
    }.get(layer_type, 1)  # fmt: skip
    assert len(wrapped[0].masks) == expected
    for mask in wrapped[0].masks:
        assert 1.0 - float(np.mean(mask.numpy())) == pytest.approx(0.6, abs=0.01)
    kernels = {id(v) for v in pruning.PruneLowMagnitude(target).target_weights}
    for variable in target.weights:
        zeros = float(np.mean(variable.numpy() == 0))
        if id(variable) in kernels:
            assert zeros == pytest.approx(0.6, abs=0.01), variable.path
        else:
            assert zeros < 0.5, variable.path  # biases are left alone


# ------------------------------------------------------------------ models


@pytest.fixture(scope="module")
def trained_cnn():
    keras.utils.set_random_seed(0)
    (x, y), (x_test, y_test) = tfcompress.datasets.load_digits()
    model = compile_for_digits(make_cnn())
    model.fit(x, y, epochs=6, batch_size=32, verbose=0)
    return model


def test_cnn_reaches_80_percent_with_polynomial_decay_and_keeps_accuracy(trained_cnn, digits):
    (x, y), (x_test, y_test) = digits
    float_accuracy = accuracy(trained_cnn, x_test, y_test)
    steps_per_epoch = int(np.ceil(len(x) / 32))
    schedule = pruning.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=2 * steps_per_epoch, frequency=10)
    pruned = compile_for_digits(tfcompress.prune_low_magnitude(trained_cnn, schedule), 1e-3)
    history = pruned.fit(
        x, y, epochs=4, batch_size=32, verbose=0, callbacks=[tfcompress.UpdatePruningStep(), tfcompress.PruningSummaries()]
    )
    for key in ("sparsity/conv2d", "sparsity/conv2d_1", "sparsity/dense", "sparsity/dense_1"):
        assert history.history[key][-1] == pytest.approx(0.8, abs=0.01), key
    assert history.history["sparsity/dense"][0] < history.history["sparsity/dense"][-1]
    stripped = tfcompress.strip_pruning(pruned)
    np.testing.assert_allclose(stripped.predict(x_test, verbose=0), pruned.predict(x_test, verbose=0), atol=1e-4)
    for layer in stripped.layers:
        if layer.weights:
            assert float(np.mean(layer.kernel.numpy() == 0)) == pytest.approx(0.8, abs=0.01)
    assert accuracy(stripped, x_test, y_test) >= float_accuracy - 0.015
    # The input model is not modified.
    assert float(np.mean(trained_cnn.layers[0].kernel.numpy() == 0)) == 0.0


def test_mobile_block_reaches_80_percent_within_a_point_of_float(digits):
    (x, y), (x_test, y_test) = digits
    model = compile_for_digits(make_mobile_block())
    model.fit(x, y, epochs=10, batch_size=32, verbose=0)
    float_accuracy = accuracy(model, x_test, y_test)
    steps_per_epoch = int(np.ceil(len(x) / 32))
    schedule = pruning.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=3 * steps_per_epoch, frequency=10)
    pruned = compile_for_digits(tfcompress.prune_low_magnitude(model, schedule), 1e-3)
    pruned.fit(x, y, epochs=6, batch_size=32, verbose=0)
    logs = pruning.sparsity_logs(pruned)
    assert len(logs) == 5  # 3 convs + dense + overall; depthwise and BatchNorm are left alone
    assert logs["sparsity"] == pytest.approx(0.8, abs=0.01)
    stripped = tfcompress.strip_pruning(pruned)
    assert accuracy(stripped, x_test, y_test) >= float_accuracy - 0.012


def test_depthwise_layers_are_pruned_only_when_named():
    model = make_mobile_block()
    depthwise = next(l.name for l in model.layers if isinstance(l, L.DepthwiseConv2D))
    schedule = pruning.ConstantSparsity(0.5, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # left dense on purpose: no warning
        pruned = tfcompress.prune_low_magnitude(model, schedule)
    assert depthwise not in [w.layer.name for w in pruning.pruning_wrappers(pruned)]
    assert len(pruning.pruning_wrappers(pruned)) == 4
    named = tfcompress.prune_low_magnitude(model, {depthwise: schedule})
    assert [w.layer.name for w in pruning.pruning_wrappers(named)] == [depthwise]
    # 2:4 sparsity applies to a whole model holding depthwise layers.
    separable = keras.Sequential([keras.Input((4, 4, 8)), L.DepthwiseConv2D(3), L.Conv2D(8, 1)])
    assert len(pruning.pruning_wrappers(tfcompress.prune_low_magnitude(separable, sparsity_m_by_n=(2, 4)))) == 1


def test_save_mid_pruning_reload_and_resume(tmp_path, digits):
    (x, y), _ = digits
    x, y = x[:256], y[:256]  # 8 steps per epoch at batch 32
    model = make_cnn(8, 8, 16)
    schedule = pruning.PolynomialDecay(0.0, 0.75, begin_step=0, end_step=24, frequency=4)
    pruned = compile_for_digits(tfcompress.prune_low_magnitude(model, schedule))
    pruned.fit(x, y, epochs=1, batch_size=32, verbose=0, shuffle=False)
    mid_sparsity = pruning.sparsity_logs(pruned)["sparsity"]
    assert 0.3 < mid_sparsity < 0.75
    path = os.path.join(tmp_path, "mid.keras")
    pruned.save(path)

    restored = keras.saving.load_model(path)  # no custom_objects
    wrappers = pruning.pruning_wrappers(restored)
    assert [int(w.pruning_step.numpy()) for w in wrappers] == [7, 7, 7, 7]
    assert restored.layers[0].pruning_schedule == schedule
    assert pruning.sparsity_logs(restored)["sparsity"] == pytest.approx(mid_sparsity)
    np.testing.assert_allclose(restored.predict(x, verbose=0), pruned.predict(x, verbose=0), atol=1e-5)

    restored.fit(x, y, epochs=2, batch_size=32, verbose=0)
    assert [int(w.pruning_step.numpy()) for w in wrappers] == [23, 23, 23, 23]
    # Step 24 is the end of the ramp; one more epoch reaches it.
    restored.fit(x, y, epochs=1, batch_size=32, verbose=0)
    assert pruning.sparsity_logs(restored)["sparsity"] == pytest.approx(0.75, abs=0.01)


def test_nested_functional_model(digits):
    (x, y), _ = digits
    head = keras.Sequential([keras.Input((64,)), L.Dense(32, activation="relu"), L.Dense(10)], name="head")
    inputs = keras.Input((8, 8, 1))
    features = L.Flatten()(L.Conv2D(4, 3, padding="same")(inputs))
    model = keras.Model(inputs, head(L.Dense(64)(features)))
    pruned = tfcompress.prune_low_magnitude(model, pruning.ConstantSparsity(0.5, 0, frequency=1))
    names = [l.layer.name for l in iter_layers(pruned) if isinstance(l, pruning.PruneLowMagnitude)]
    assert sorted(names) == sorted(["conv2d", "dense", "dense_1", "dense_2"])
    compile_for_digits(pruned).fit(x[:128], y[:128], epochs=1, batch_size=32, verbose=0)
    assert pruning.sparsity_logs(pruned)["sparsity"] == pytest.approx(0.5, abs=0.01)
    stripped = tfcompress.strip_pruning(pruned)
    inner = stripped.get_layer("head")
    assert isinstance(inner.layers[0], L.Dense)
    assert float(np.mean(inner.layers[0].kernel.numpy() == 0)) == pytest.approx(0.5, abs=0.01)


class SmallClassifier(keras.Model):
    def __init__(self):
        super().__init__()
        self.flatten = L.Flatten()
        self.hidden = [L.Dense(32, activation="relu"), L.Dense(32, activation="relu")]
        self.norm = L.BatchNormalization()
        self.out = L.Dense(10)

    def call(self, inputs, training=False):
        x = self.flatten(inputs)
        for layer in self.hidden:
            x = layer(x)
        return self.out(self.norm(x, training=training))


def test_subclassed_model_is_pruned_in_place(digits):
    (x, y), _ = digits
    model = SmallClassifier()
    model(x[:2])
    pruned = tfcompress.prune_low_magnitude(model, pruning.ConstantSparsity(0.7, 0, frequency=1))
    assert pruned is model
    assert all(isinstance(l, pruning.PruneLowMagnitude) for l in pruned.hidden)
    assert isinstance(pruned.norm, L.BatchNormalization)
    compile_for_digits(pruned).fit(x[:128], y[:128], epochs=1, batch_size=32, verbose=0)
    assert pruning.sparsity_logs(pruned)["sparsity"] == pytest.approx(0.7, abs=0.01)
    before = pruned.predict(x[:16], verbose=0)
    stripped = tfcompress.strip_pruning(pruned)
    assert isinstance(stripped.out, L.Dense) and isinstance(stripped.hidden[0], L.Dense)
    fresh = SmallClassifier()
    fresh(x[:2])
    assert len(stripped.weights) == len(fresh.weights)  # masks and steps are gone
    np.testing.assert_allclose(stripped.predict(x[:16], verbose=0), before, atol=1e-4)


def test_layer_api_inside_a_new_model_and_custom_opt_in(digits):
    (x, y), _ = digits

    @keras.saving.register_keras_serializable(package="tfcompress_tests")
    class Scaled(L.Layer):
        def build(self, input_shape):
            self.w = self.add_weight(shape=(input_shape[-1], 10), initializer="glorot_uniform")

        def call(self, inputs):
            return keras.ops.matmul(inputs, self.w)

        def get_prunable_weights(self):
            return [self.w]

    schedule = pruning.ConstantSparsity(0.4, 0, frequency=1)
    model = keras.Sequential(
        [keras.Input((8, 8, 1)), L.Flatten()] + tfcompress.prune_low_magnitude([L.Dense(16), Scaled()], schedule)
    )
    compile_for_digits(model).fit(x[:64], y[:64], epochs=1, batch_size=32, verbose=0)
    assert [round(l.sparsity(), 2) for l in model.layers[1:]] == [0.4, 0.4]


def test_block_sparsity_after_fit(digits):
    (x, y), _ = digits
    model = keras.Sequential([keras.Input((8, 8, 1)), L.Flatten(), L.Dense(32), L.Dense(10)])
    pruned = tfcompress.prune_low_magnitude(
        model, pruning.ConstantSparsity(0.5, 0, frequency=1), block_size=(4, 2), block_pooling_type="MAX"
    )
    compile_for_digits(pruned).fit(x[:64], y[:64], epochs=1, batch_size=32, verbose=0)
    kernel = tfcompress.strip_pruning(pruned).layers[1].kernel.numpy()
    blocks = (kernel != 0).reshape(16, 4, 16, 2).sum(axis=(1, 3))
    assert set(np.unique(blocks)) <= {0, 8}
    assert float(np.mean(blocks == 0)) == pytest.approx(0.5, abs=0.01)


def test_two_by_four_sparsity_after_fit(digits):
    (x, y), _ = digits
    model = make_cnn(8, 16, 32)
    # The first conv has a single input channel, which 2:4 cannot split.
    schedule = pruning.ConstantSparsity(0.0, 0, frequency=1)
    pruned = tfcompress.prune_low_magnitude(
        model, {model.layers[1].name: schedule, model.layers[4].name: schedule}, sparsity_m_by_n=(2, 4)
    )
    compile_for_digits(pruned).fit(x[:64], y[:64], epochs=1, batch_size=32, verbose=0)
    stripped = tfcompress.strip_pruning(pruned)
    conv2, dense = stripped.layers[1].kernel.numpy(), stripped.layers[4].kernel.numpy()
    assert np.all((conv2.reshape(3, 3, 2, 4, 16) == 0).sum(axis=3) >= 2)
    assert np.all((dense.reshape(64, 4, 32) == 0).sum(axis=1) >= 2)


def test_mirrored_strategy_two_replicas(digits, mirrored_strategy):
    (x, y), _ = digits
    strategy = mirrored_strategy
    assert strategy.num_replicas_in_sync == 2
    with strategy.scope():
        model = make_cnn(8, 8, 16)
        pruned = compile_for_digits(
            tfcompress.prune_low_magnitude(model, pruning.PolynomialDecay(0.0, 0.6, 0, 8, frequency=2))
        )
    pruned.fit(x[:320], y[:320], epochs=1, batch_size=32, verbose=0)  # 10 steps
    assert [int(w.pruning_step.numpy()) for w in pruning.pruning_wrappers(pruned)] == [9] * 4
    assert pruning.sparsity_logs(pruned)["sparsity"] == pytest.approx(0.6, abs=0.01)


def tf_make_ndarray(tensor_proto):
    import tensorflow as tf

    return tf.make_ndarray(tensor_proto)


def test_pruning_summaries_write_tensorboard_events(tmp_path, digits):
    (x, y), _ = digits
    pruned = compile_for_digits(tfcompress.prune_low_magnitude(make_cnn(4, 4, 8)))
    pruned.fit(x[:64], y[:64], epochs=2, batch_size=32, verbose=0, callbacks=[tfcompress.PruningSummaries(tmp_path, update_freq=1)])
    events = [f for f in os.listdir(tmp_path) if f.startswith("events.out.tfevents")]
    assert len(events) == 1
    # Read the scalars back: 2 epochs of 2 batches, written every batch and every epoch.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(tmp_path), size_guidance={"tensors": 0})
    accumulator.Reload()
    tags = accumulator.Tags()["tensors"]
    assert "sparsity" in tags and sum(tag.startswith("sparsity/") for tag in tags) == 4
    overall = {
        event.step: float(tf_make_ndarray(event.tensor_proto))
        for event in accumulator.Tensors("sparsity")
    }
    assert sorted(overall) == [0, 1, 2, 3, 4]  # epochs 0, 1 and batches 1..4
    # ConstantSparsity(0.5) from step 0: every figure is 50% of the prunable weights.
    assert all(value == pytest.approx(0.5, abs=0.01) for value in overall.values())


# ------------------------------------------------------------------ errors


def test_error_for_things_that_are_not_models_or_layers():
    with pytest.raises(TypeError, match="Received: to_prune='model' of type str"):
        tfcompress.prune_low_magnitude("model")
    with pytest.raises(TypeError, match="Unexpected keyword"):
        tfcompress.prune_low_magnitude(L.Dense(3), sparsity=0.5)


def test_error_for_a_layer_that_cannot_be_pruned():
    with pytest.raises(ValueError, match="Layer 'bn' of type BatchNormalization is not supported by pruning"):
        tfcompress.prune_low_magnitude(L.BatchNormalization(name="bn"))


def test_error_for_m_by_n_on_an_incompatible_shape():
    model = keras.Sequential([keras.Input((6,)), L.Dense(4, name="narrow")])
    with pytest.raises(ValueError, match="Layer 'narrow' cannot take 2:4 sparsity.*6 input channels"):
        tfcompress.prune_low_magnitude(model, sparsity_m_by_n=(2, 4))
    with pytest.raises(ValueError, match="layer 'dw' is a DepthwiseConv2D"):
        tfcompress.prune_low_magnitude(L.DepthwiseConv2D(3, name="dw"), sparsity_m_by_n=(2, 4))
    with pytest.raises(ValueError, match=r"0 < m < n. Received: sparsity_m_by_n=\(4, 2\)"):
        tfcompress.prune_low_magnitude(L.Dense(4), sparsity_m_by_n=(4, 2))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"block_size": (0, 2)}, r"block_size must be a pair of integers >= 1. Received: block_size=\(0, 2\)"),
        ({"block_pooling_type": "MEAN"}, "block_pooling_type must be one of \\['AVG', 'MAX'\\]. Received: block_pooling_type='MEAN'"),
        ({"pruning_schedule": 0.5}, "Received: pruning_schedule=0.5"),
        ({"block_size": (2, 2), "sparsity_m_by_n": (2, 4)}, "cannot be combined"),
    ],
)
def test_error_for_bad_wrapper_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tfcompress.prune_low_magnitude(L.Dense(4), **kwargs)


def test_error_for_unbuilt_model_and_unknown_layer_names():
    with pytest.raises(ValueError, match="is not built"):
        tfcompress.prune_low_magnitude(keras.Sequential([L.Dense(3)]))
    model = make_cnn(4, 4, 8)
    with pytest.raises(ValueError, match=r"pruning_schedule names layers that model '.*' does not have: \['nope'\]"):
        tfcompress.prune_low_magnitude(model, {"nope": pruning.ConstantSparsity(0.5, 0)})


def test_per_layer_schedules_prune_only_named_layers(digits):
    (x, y), _ = digits
    model = make_cnn(4, 4, 8)
    dense = model.layers[4].name
    pruned = tfcompress.prune_low_magnitude(model, {dense: pruning.ConstantSparsity(0.9, 0, frequency=1)})
    assert [l.layer.name for l in pruning.pruning_wrappers(pruned)] == [dense]
    compile_for_digits(pruned).fit(x[:64], y[:64], epochs=1, batch_size=32, verbose=0)
    assert pruning.sparsity_logs(pruned)[f"sparsity/{dense}"] == pytest.approx(0.9, abs=0.01)


def test_update_pruning_step_rejects_an_unpruned_model(digits):
    (x, y), _ = digits
    model = compile_for_digits(make_cnn(4, 4, 8))
    with pytest.raises(ValueError, match="has no layer wrapped by prune_low_magnitude"):
        model.fit(x[:32], y[:32], epochs=1, verbose=0, callbacks=[tfcompress.UpdatePruningStep()])
    with pytest.raises(ValueError, match="Received: update_freq=0"):
        tfcompress.PruningSummaries(update_freq=0)

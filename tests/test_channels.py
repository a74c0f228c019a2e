"""Channel pruning: groups of the graph, masks, stripping, saving, strategies, MACs."""

import keras
import numpy as np
import pytest
from conftest import compile_for_digits, make_cnn

import tfcompress
from tfcompress import ConstantSparsity, PolynomialDecay, count_macs
from tfcompress.pruning.channels import graph as channel_graph
from tfcompress.pruning.channels import sparsity_for_macs

L = keras.layers


def mobile_block(activation="relu6", input_shape=(8, 8, 1)):
    """Conv-BN-act, DepthwiseConv-BN-act, 1x1 Conv-BN, residual Add, Conv, Flatten, Dense."""
    act = (lambda: L.ReLU(6.0)) if activation == "relu6" else (lambda: L.Activation(activation))
    inputs = keras.Input(input_shape)
    x = L.Conv2D(16, 3, padding="same", use_bias=False, name="stem")(inputs)
    x = L.BatchNormalization(momentum=0.9, name="stem_bn")(x)
    x = act()(x)
    y = L.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(x)
    y = L.BatchNormalization(momentum=0.9, name="dw_bn")(y)
    y = act()(y)
    y = L.Conv2D(16, 1, use_bias=False, name="project")(y)
    y = L.BatchNormalization(momentum=0.9, name="project_bn")(y)
    x = L.Add(name="residual")([x, y])
    x = L.Conv2D(12, 3, strides=2, padding="same", activation="relu", name="down")(x)
    x = L.Flatten(name="flatten")(x)
    outputs = L.Dense(10, name="logits")(x)
    return keras.Model(inputs, outputs, name="mobile_block")


def groups_of(model):
    return {g.name: (g.size, g.producers, g.layers) for g in tfcompress.channel_groups(model)}


def train_call(model, x, times=1):
    """Training-mode forward passes: each advances the step and may update masks."""
    for _ in range(times):
        model(x, training=True)


# ------------------------------------------------------------------ groups


def test_residual_block_groups_join_both_branches_of_the_add():
    groups = groups_of(mobile_block())
    assert groups == {
        "stem": (
            16,
            ("stem", "project"),
            ("stem", "stem_bn", "dw", "dw_bn", "project", "project_bn", "down"),
        ),
        "down": (12, ("down",), ("down", "logits")),
    }


def test_concatenate_lays_groups_end_to_end_in_the_reader():
    inputs = keras.Input((6, 6, 3))
    a = L.Conv2D(8, 3, name="a")(inputs)
    b = L.Conv2D(4, 3, name="b")(inputs)
    x = L.Concatenate(name="cat")([a, b])
    x = L.Conv2D(5, 1, name="reader")(x)
    outputs = L.Dense(2, name="head")(L.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    assert groups_of(model) == {
        "a": (8, ("a",), ("a", "reader")),
        "b": (4, ("b",), ("b", "reader")),
        "reader": (5, ("reader",), ("reader", "head")),
    }
    graph = channel_graph.analyze(model)
    ((axis, slots), _) = graph.weight_slots["reader"]["kernel"]
    assert axis == 2
    # reader's 12 input rows: a's 8 units (group 0), then b's 4 (group 1).
    assert graph.slot_group[slots].tolist() == [0] * 8 + [1] * 4


def test_depthwise_with_multiplier_repeats_its_input_channels():
    inputs = keras.Input((6, 6, 2))
    x = L.Conv2D(4, 1, name="c")(inputs)
    x = L.DepthwiseConv2D(3, depth_multiplier=2, name="dw")(x)
    outputs = L.Dense(3, name="head")(L.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    assert groups_of(model) == {"c": (4, ("c",), ("c", "dw", "head"))}
    pruned = tfcompress.prune_channels(model, ConstantSparsity(0.5, 0))
    train_call(pruned, np.random.rand(2, 6, 6, 2).astype("float32"))
    small = tfcompress.strip_channels(pruned)
    assert small.get_layer("dw").kernel.shape == (3, 3, 2, 2)
    assert small.get_layer("head").kernel.shape == (4, 3)  # 2 kept channels x multiplier 2


def test_squeeze_excite_joins_the_excitation_with_the_features():
    inputs = keras.Input((6, 6, 3))
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="features")(inputs)
    s = L.GlobalAveragePooling2D(name="squeeze")(x)
    s = L.Dense(4, activation="relu", name="reduce")(s)
    s = L.Dense(8, activation="sigmoid", name="expand")(s)
    s = L.Reshape((1, 1, 8), name="to_map")(s)
    x = L.Multiply(name="excite")([x, s])
    outputs = L.Dense(2, name="head")(L.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    assert groups_of(model) == {
        "features": (8, ("features", "expand"), ("features", "reduce", "expand", "to_map", "head")),
        "reduce": (4, ("reduce",), ("reduce", "expand")),
    }
    pruned = tfcompress.prune_channels(model, ConstantSparsity(0.5, 0))
    x_data = np.random.rand(3, 6, 6, 3).astype("float32")
    train_call(pruned, x_data)
    small = tfcompress.strip_channels(pruned)
    assert small.get_layer("to_map").target_shape == (1, 1, 4)
    np.testing.assert_allclose(small(x_data), pruned(x_data), atol=1e-5)


def test_unknown_ops_and_outputs_keep_their_channels():
    inputs = keras.Input((6, 6, 3))
    a = L.Conv2D(8, 3, name="a")(inputs)
    b = L.Conv2D(6, 3, name="b")(inputs)
    shifted = a + 3.0  # a Keras Operation that is not a layer
    sliced = b[..., :4]  # a slice
    x = L.Concatenate()([shifted, sliced])
    c = L.Conv2D(5, 1, name="c")(x)
    model = keras.Model(inputs, [c, L.Conv2D(2, 1, name="side")(x)])
    assert groups_of(model) == {}
    with pytest.raises(ValueError, match=r"output channels of layer 'a' cannot be pruned: they are read by '.*' \(Add\)"):
        tfcompress.prune_channels(model, {"a": ConstantSparsity(0.5, 0)})
    with pytest.raises(ValueError, match="output channels of layer 'c' cannot be pruned: it is a model output"):
        tfcompress.prune_channels(model, {"c": ConstantSparsity(0.5, 0)})
    with pytest.raises(ValueError, match="has no channels to prune"):
        tfcompress.prune_channels(model)


def test_nested_model_groups_cross_its_boundary():
    block = keras.Sequential(
        [keras.Input((6, 6, 8)), L.Conv2D(8, 1, name="inner"), L.BatchNormalization(name="inner_bn")],
        name="block",
    )
    inputs = keras.Input((6, 6, 3))
    x = L.Conv2D(8, 3, padding="same", name="outer")(inputs)
    x = L.Add()([x, block(x)])
    outputs = L.Dense(2, name="head")(L.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    assert groups_of(model) == {
        "outer": (8, ("outer", "inner"), ("outer", "inner", "inner_bn", "head")),
    }
    pruned = tfcompress.prune_channels(model, ConstantSparsity(0.25, 0))
    x_data = np.random.rand(2, 6, 6, 3).astype("float32")
    train_call(pruned, x_data)
    small = tfcompress.strip_channels(pruned)
    assert small.get_layer("block").get_layer("inner").kernel.shape == (1, 1, 6, 6)
    np.testing.assert_allclose(small(x_data), pruned(x_data), atol=1e-5)


# ------------------------------------------------------- masks and strip


@pytest.mark.parametrize("activation", ["relu6", "sigmoid"])
def test_stripped_model_has_fewer_filters_and_the_masked_model_outputs(activation):
    # sigmoid(0) = 0.5: a removed channel still has outputs, which the masked
    # readers' kernel rows must ignore for the two models to agree.
    model = mobile_block(activation)
    pruned = tfcompress.prune_channels(model, ConstantSparsity(0.5, 0))
    x = np.random.default_rng(0).random((4, 8, 8, 1), "float32")
    train_call(pruned, x)
    assert pruned.kept_channels() == {"stem": (8, 16), "down": (6, 12)}
    small = tfcompress.strip_channels(pruned)
    shapes = {w.path: tuple(w.shape) for w in small.weights}
    assert shapes["stem/kernel"] == (3, 3, 1, 8)
    assert shapes["stem_bn/gamma"] == (8,)
    assert shapes["dw/kernel"] == (3, 3, 8, 1)
    assert shapes["project/kernel"] == (1, 1, 8, 8)
    assert shapes["down/kernel"] == (3, 3, 8, 6)
    assert shapes["logits/kernel"] == (4 * 4 * 6, 10)  # Flatten rows of the kept channels
    assert not any("tfcompress" in type(layer).__module__ for layer in small.layers)
    # BatchNorm in inference mode: its moving statistics are sliced too.
    np.testing.assert_allclose(small.predict(x, verbose=0), pruned.predict(x, verbose=0), atol=1e-5)


def test_masks_zero_the_whole_channel_in_every_layer():
    pruned = tfcompress.prune_channels(mobile_block(), {"stem": ConstantSparsity(0.25, 0)})
    train_call(pruned, np.ones((2, 8, 8, 1), "float32"))
    wrappers = {w.layer.name: w for w in pruned.channel_plan.wrappers}
    gone = np.nonzero(keras.ops.convert_to_numpy(pruned.channel_mask)[:16] == 0)[0]
    assert len(gone) == 4
    shipped = lambda name: [keras.ops.convert_to_numpy(v) for v in wrappers[name].weight_values(False)]  # noqa: E731
    assert np.all(shipped("stem")[0][..., gone] == 0)
    gamma, beta = shipped("stem_bn")
    assert np.all(gamma[gone] == 0) and np.all(beta[gone] == 0)
    assert np.all(shipped("dw")[0][:, :, gone] == 0)
    assert np.all(shipped("project")[0][:, :, gone, :] == 0)  # input rows
    assert np.all(shipped("project")[0][..., gone] == 0)  # output filters
    assert np.all(shipped("down")[0][:, :, gone, :] == 0)
    assert sorted(wrappers) == ["down", "dw", "dw_bn", "project", "project_bn", "stem", "stem_bn"]


def test_masks_grow_with_the_schedule_inside_fit(digits):
    (x, y), _ = digits
    schedule = PolynomialDecay(0.0, 0.5, begin_step=0, end_step=6, power=1, frequency=2)
    pruned = compile_for_digits(tfcompress.prune_channels(make_cnn(8, 16, 24), schedule))
    kept = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            kept.append(self.model.kept_channels()["conv2d"][0])

    pruned.fit(x[:256], y[:256], batch_size=32, epochs=1, verbose=0, callbacks=[Record()])
    # Updates at steps 0, 2, 4, 6 to sparsity 0, 1/6, 1/3, 1/2 of 8 channels.
    assert kept == [8, 8, 7, 7, 5, 5, 4, 4]
    assert pruned.kept_channels() == {"conv2d": (4, 8), "conv2d_1": (8, 16), "dense": (12, 24)}
    assert int(pruned.channel_pruning_step.numpy()) == 7


def test_dict_prunes_only_the_named_groups_each_on_its_schedule():
    model = mobile_block()
    pruned = tfcompress.prune_channels(
        model, {"project_bn": ConstantSparsity(0.75, 0), "down": ConstantSparsity(0.5, 3)}
    )
    train_call(pruned, np.ones((1, 8, 8, 1), "float32"), times=2)
    assert pruned.kept_channels() == {"stem": (4, 16), "down": (12, 12)}
    train_call(pruned, np.ones((1, 8, 8, 1), "float32"), times=2)
    assert pruned.kept_channels() == {"stem": (4, 16), "down": (6, 12)}


def test_round_to_keeps_multiples_of_it():
    pruned = tfcompress.prune_channels(mobile_block(), ConstantSparsity(0.6, 0), round_to=8)
    train_call(pruned, np.ones((1, 8, 8, 1), "float32"))
    # stem: 16 - round(9.6) = 6 kept -> 8; down: 12 - round(7.2) = 5 kept -> 8.
    assert pruned.kept_channels() == {"stem": (8, 16), "down": (8, 12)}
    assert tfcompress.strip_channels(pruned).get_layer("down").kernel.shape == (3, 3, 8, 8)


def _dense_model(kernel):
    inputs = keras.Input((kernel.shape[0],))
    hidden = L.Dense(kernel.shape[1], use_bias=False, name="hidden")
    outputs = L.Dense(1, name="head")(hidden(inputs))
    model = keras.Model(inputs, outputs)
    hidden.kernel.assign(kernel)
    model.get_layer("head").kernel.assign(np.ones((kernel.shape[1], 1)))
    return model


@pytest.mark.parametrize("importance, removed", [("l1", 1), ("l2", 0), ("magnitude", 0)])
def test_l1_and_l2_rank_channels_by_their_norms(importance, removed):
    # Channel 0: four 1s (L1 4, L2 2); channel 1: one 3 (L1 3, L2 3); channel 2: large.
    kernel = np.array([[1, 3, 9], [1, 0, 9], [1, 0, 9], [1, 0, 9]], "float32")
    pruned = tfcompress.prune_channels(_dense_model(kernel), ConstantSparsity(0.34, 0), importance=importance)
    train_call(pruned, np.ones((1, 4), "float32"))
    mask = keras.ops.convert_to_numpy(pruned.channel_mask)[:3]
    assert mask.tolist() == [float(i != removed) for i in range(3)]


def test_bn_scale_removes_the_smallest_gammas():
    model = mobile_block()
    gamma = np.linspace(1.0, 2.0, 16).astype("float32")
    gamma[[3, 11]] = 0.01
    model.get_layer("project_bn").gamma.assign(gamma)
    pruned = tfcompress.prune_channels(
        model, {"stem": ConstantSparsity(0.125, 0)}, importance="bn_scale"
    )
    train_call(pruned, np.ones((1, 8, 8, 1), "float32"))
    mask = keras.ops.convert_to_numpy(pruned.channel_mask)[:16]
    assert np.nonzero(mask == 0)[0].tolist() == [3, 11]


def test_taylor_scores_come_from_gradients(digits):
    (x, y), _ = digits
    model = make_cnn(8, 8, 16)
    pruned = compile_for_digits(
        tfcompress.prune_channels(model, ConstantSparsity(0.25, begin_step=4, frequency=4), importance="taylor")
    )
    pruned.fit(x[:160], y[:160], batch_size=32, epochs=1, verbose=0)  # 5 steps: update at step 4
    taylor = keras.ops.convert_to_numpy(pruned.channel_taylor)
    assert np.count_nonzero(taylor[:-1]) > 0.5 * (len(taylor) - 1)
    assert pruned.kept_channels() == {"conv2d": (6, 8), "conv2d_1": (6, 8), "dense": (12, 16)}
    # The removed channels are the lowest-scored of their group at that step.
    mask = keras.ops.convert_to_numpy(pruned.channel_mask)[:8]
    assert mask.tolist().count(0.0) == 2


# ------------------------------------------------ saving and distribution


def test_save_mid_training_reload_without_custom_objects_and_resume(tmp_path, digits):
    (x, y), _ = digits
    x, y = x[:128], y[:128]
    schedule = PolynomialDecay(0.0, 0.5, begin_step=0, end_step=6, power=1, frequency=2)
    pruned = compile_for_digits(tfcompress.prune_channels(make_cnn(8, 8, 16), schedule))
    pruned.fit(x, y, batch_size=32, epochs=1, verbose=0)  # steps 0-3
    assert pruned.kept_channels()["dense"] == (13, 16)
    path = tmp_path / "mid.keras"
    pruned.save(path)
    reloaded = keras.saving.load_model(path)
    assert type(reloaded).__name__ == "ChannelPruningModel"
    assert int(reloaded.channel_pruning_step.numpy()) == 3
    assert reloaded.kept_channels() == pruned.kept_channels()
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), pruned.predict(x, verbose=0), atol=1e-6)
    reloaded.fit(x, y, batch_size=32, epochs=1, verbose=0)  # steps 4-7: the schedule ends
    assert reloaded.kept_channels() == {"conv2d": (4, 8), "conv2d_1": (4, 8), "dense": (8, 16)}


def test_mirrored_strategy_two_replicas(digits, mirrored_strategy):
    (x, y), _ = digits
    with mirrored_strategy.scope():
        pruned = compile_for_digits(
            tfcompress.prune_channels(make_cnn(8, 8, 16), PolynomialDecay(0.0, 0.5, 0, 4, frequency=2))
        )
    pruned.fit(x[:192], y[:192], epochs=1, batch_size=32, verbose=0)  # 6 steps
    assert int(pruned.channel_pruning_step.numpy()) == 5
    assert pruned.kept_channels() == {"conv2d": (4, 8), "conv2d_1": (4, 8), "dense": (8, 16)}
    small = tfcompress.strip_channels(pruned)
    np.testing.assert_allclose(small.predict(x[:64], verbose=0), pruned.predict(x[:64], verbose=0), atol=1e-5)


# ------------------------------------------------------------ bad input


def test_bad_input_is_refused_with_the_value():
    model = mobile_block()
    with pytest.raises(ValueError, match=r"names layers that model 'mobile_block' does not have: \['nope'\]"):
        tfcompress.prune_channels(model, {"nope": ConstantSparsity(0.5, 0)})
    with pytest.raises(ValueError, match=r"layer 'flatten' \(Flatten\), which has no channels to prune"):
        tfcompress.prune_channels(model, {"flatten": ConstantSparsity(0.5, 0)})
    with pytest.raises(ValueError, match=r"importance must be one of .*Received: importance='l3'"):
        tfcompress.prune_channels(model, importance="l3")
    with pytest.raises(ValueError, match="must be a PruningSchedule"):
        tfcompress.prune_channels(model, 0.5)
    with pytest.raises(ValueError, match="round_to must be >= 1. Received: round_to=0"):
        tfcompress.prune_channels(model, round_to=0)
    with pytest.raises(ValueError, match="'stem' and 'project' share their output channels"):
        tfcompress.prune_channels(
            model, {"stem": ConstantSparsity(0.5, 0), "project": ConstantSparsity(0.25, 0)}
        )
    with pytest.raises(TypeError, match="Expected a keras.Model"):
        tfcompress.prune_channels(L.Dense(2))

    class Subclassed(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="needs a Sequential or functional model"):
        tfcompress.prune_channels(Subclassed())
    pruned = tfcompress.prune_channels(model)
    with pytest.raises(ValueError, match="already channel-pruned"):
        tfcompress.prune_channels(pruned)


def test_a_sparsity_removing_every_channel_of_a_group_is_refused():
    inputs = keras.Input((4,))
    x = L.Dense(2, name="narrow")(inputs)
    x = L.Dense(8, name="wide")(x)
    model = keras.Model(inputs, L.Dense(1, name="head")(x))
    with pytest.raises(
        ValueError,
        match=r"would remove every channel of the group of layer 'narrow' .*sparsity 0.8 of its 2 "
        r"channel\(s\) rounds to 2",
    ):
        tfcompress.prune_channels(model, PolynomialDecay(0.0, 0.8, 0, 10))
    pruned = tfcompress.prune_channels(
        model, {"narrow": ConstantSparsity(0.5, 0), None: ConstantSparsity(0.8, 0)}
    )
    train_call(pruned, np.ones((1, 4), "float32"))
    assert pruned.kept_channels() == {"narrow": (1, 2), "wide": (2, 8)}


# --------------------------------------- the stripped model goes on alone


def test_stripped_model_saves_and_goes_on_to_every_technique(tmp_path, digits):
    (x, y), _ = digits
    pruned = tfcompress.prune_channels(make_cnn(8, 8, 16), ConstantSparsity(0.5, 0))
    train_call(pruned, x[:8])
    small = tfcompress.strip_channels(pruned)
    small.save(tmp_path / "small.keras")
    small = keras.saving.load_model(tmp_path / "small.keras")
    assert [tuple(w.shape) for w in small.weights if w.path.endswith("kernel")] == [
        (3, 3, 1, 4), (3, 3, 4, 4), (64, 8), (8, 10)
    ]
    assert tfcompress.quantize_model(small).count_params() > 0
    assert tfcompress.cluster_weights(small, number_of_clusters=4).count_params() > 0
    distiller = tfcompress.Distiller(student=small, teacher=make_cnn(8, 8, 16))
    assert distiller.student is small
    flatbuffer = tfcompress.lite.convert(small)
    np.testing.assert_allclose(
        tfcompress.lite.predict(flatbuffer, x[:32]), small.predict(x[:32], verbose=0), atol=1e-4
    )


# ---------------------------------------------------------------- MACs


def test_count_macs_matches_hand_computed_numbers():
    inputs = keras.Input((10, 10, 3))
    x = L.Conv2D(8, 3, name="conv")(inputs)  # 8x8 out x 3*3*3*8
    x = L.DepthwiseConv2D(3, padding="same", depth_multiplier=2, name="dw")(x)  # 8x8 x 3*3*8*2
    x = L.SeparableConv2D(4, 3, strides=2, name="sep")(x)  # 3x3 x (3*3*16 + 16*4)
    x = L.BatchNormalization()(x)
    seq = L.Reshape((9, 4))(x)
    y = L.Conv1D(5, 2, name="conv1d")(seq)  # 8 x 2*4*5
    y = L.Dense(7, name="dense")(y)  # 8 x 5*7
    outputs = L.Dense(2, name="head")(L.Flatten()(y))  # 56*2
    macs = count_macs(keras.Model(inputs, outputs))
    assert macs.layers == {
        "conv": 64 * 216,
        "dw": 64 * 144,
        "sep": 9 * (144 + 64),
        "conv1d": 8 * 40,
        "dense": 8 * 35,
        "head": 112,
    }
    assert macs.total == 13824 + 9216 + 1872 + 320 + 280 + 112


def test_count_macs_of_a_channel_pruned_model_is_what_ships():
    pruned = tfcompress.prune_channels(make_cnn(8, 8, 16), ConstantSparsity(0.5, 0))
    before = count_macs(pruned).total
    assert before == count_macs(make_cnn(8, 8, 16)).total == 64 * 9 * 8 + 64 * 9 * 64 + 128 * 16 + 160
    train_call(pruned, np.ones((1, 8, 8, 1), "float32"))
    # conv 1 -> 4 filters; conv 4 -> 4; Dense reads 16 * 4 rows, 8 units; head 8 rows.
    assert count_macs(pruned).total == 64 * 9 * 4 + 64 * 9 * 16 + 64 * 8 + 80


def test_sparsity_for_macs_lands_at_or_below_the_target_once_stripped():
    # 8 kept of "b" needs 21 of 32 removed: sparsity above 20.5 / 32 = 0.640625,
    # which rounds down to 0.6406 at 4 decimals (16 kept: 0.28x the MACs).
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(16, 3, padding="same", name="a")(inputs)
    x = L.Conv2D(32, 3, padding="same", name="b")(x)
    model = keras.Model(inputs, L.Conv2D(4, 1, name="out")(x))
    sparsity = sparsity_for_macs(model, 0.2, round_to=8)
    assert sparsity == 0.6407
    pruned = tfcompress.prune_channels(model, ConstantSparsity(sparsity, 0), round_to=8)
    train_call(pruned, np.ones((1, 8, 8, 3), "float32"))
    assert pruned.kept_channels() == {"a": (8, 16), "b": (8, 32)}
    small = tfcompress.strip_channels(pruned)
    assert count_macs(small).total == 64 * (9 * 3 * 8 + 9 * 8 * 8 + 8 * 4) <= 0.2 * count_macs(model).total


def test_summarize_reports_macs_per_layer():
    model = make_cnn(8, 8, 16)
    report = tfcompress.summarize(model)
    macs = {row.name: row.macs for row in report.rows}
    assert macs["sequential/conv2d/kernel"] == 64 * 9 * 8
    assert macs["sequential/conv2d/bias"] is None
    assert report.macs == count_macs(model).total
    assert "MACs" in str(report)

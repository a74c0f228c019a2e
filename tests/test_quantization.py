"""Quantization-aware training: placement, numerics vs TFLite, sparsity, saving."""

import keras
import numpy as np
import pytest
import zoo_models as zoo
from conftest import accuracy, compile_for_digits, make_cnn, make_mobile_block

import tfcompress
from tfcompress import lite
from tfcompress.quantization import (
    ActivationQuantizer,
    QuantizeConfig,
    QuantizeWrapper,
    WeightQuantizer,
    float_layers,
    fold_batchnorm,
    quantize_annotate_layer,
    quantize_annotate_model,
    quantize_apply,
    quantize_model,
)


def _interpreter(flatbuffer):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=flatbuffer)
    interpreter.allocate_tensors()
    return interpreter


def _weight_tensors(flatbuffer):
    """{op name: [weight tensor detail]} for conv / depthwise / fully-connected ops."""
    interpreter = _interpreter(flatbuffer)
    details = {d["index"]: d for d in interpreter.get_tensor_details()}
    out = []
    for op in interpreter._get_ops_details():
        if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            out.append((op["op_name"], details[op["inputs"][1]], interpreter))
    return out


@pytest.fixture(scope="module")
def mobile(digits):
    """(float model, its accuracy, QAT model, its int8 flatbuffer)."""
    (x_train, y_train), (x_test, y_test) = digits
    keras.utils.set_random_seed(0)
    model = compile_for_digits(make_mobile_block())
    model.fit(x_train, y_train, epochs=8, batch_size=32, verbose=0)
    float_acc = accuracy(model, x_test, y_test)
    qat = compile_for_digits(quantize_model(model), learning_rate=1e-3)
    qat.fit(x_train, y_train, epochs=2, batch_size=32, verbose=0)
    return model, float_acc, qat, lite.convert(qat, quantization="int8")


def test_int8_tflite_computes_what_the_qat_model_computes(mobile, digits):
    model, float_acc, qat, flatbuffer = mobile
    _, (x_test, y_test) = digits
    keras_top1 = np.argmax(qat.predict(x_test, verbose=0), axis=-1)
    tflite_top1 = np.argmax(lite.predict(flatbuffer, x_test), axis=-1)
    assert np.mean(keras_top1 == tflite_top1) >= 0.99
    assert float_acc >= 0.93
    tflite_acc = lite.evaluate(flatbuffer, x_test, y_test)["accuracy"]
    assert tflite_acc >= float_acc - 0.01


def test_every_conv_and_dense_weight_is_int8(mobile):
    weights = _weight_tensors(mobile[3])
    ops = sorted(name for name, _, _ in weights)
    assert ops == ["CONV_2D"] * 3 + ["DEPTHWISE_CONV_2D", "FULLY_CONNECTED"]
    assert all(detail["dtype"] == np.int8 for _, detail, _ in weights)
    interpreter = _interpreter(mobile[3])
    ops = [op["op_name"] for op in interpreter._get_ops_details()]
    # One QUANTIZE at the input, one DEQUANTIZE at the output, nothing between.
    assert ops.count("QUANTIZE") == 1 and ops.count("DEQUANTIZE") == 1
    float_tensors = [
        d["name"] for d in interpreter.get_tensor_details() if d["dtype"] == np.float32
    ]
    assert len(float_tensors) == 2  # the model input and output


def test_quantizers_sit_where_tflite_quantizes(mobile):
    qat = mobile[2]
    kinds = [type(layer).__name__ for layer in qat.layers]
    assert kinds == ["InputLayer"] + ["QuantizeWrapper", "FoldedBatchNormalization",
                                      "QuantizeWrapper"] * 2 + [
        "QuantizeWrapper", "FoldedBatchNormalization", "QuantizeWrapper",
        "QuantizeWrapper", kinds[11], "QuantizeWrapper",
    ]
    assert kinds[11] in ("Flatten", "GlobalAveragePooling2D")  # pass-through: untouched
    conv, _, relu6, depthwise, _, _, pointwise, _, add, conv2, _, dense = qat.layers[1:]
    # The model input is quantized by the first conv; its output waits for
    # the fused ReLU6, which quantizes after it.
    assert conv.quantize_inputs is True and conv.quantize_output is False
    assert conv.layer.use_bias  # BatchNormalization folded into it
    assert relu6.quantize_inputs is False and relu6.quantize_output is True
    assert depthwise.quantize_output is False
    # The 1x1 conv feeds Add directly (no activation), so it has its own range.
    assert pointwise.quantize_output is True
    assert add.quantize_inputs == [False, False] and add.quantize_output is True
    assert conv2.quantize_output is True and dense.quantize_inputs is False
    assert float(add.output_max) > 0.5  # learned in training


@pytest.mark.parametrize("kind", ["conv", "depthwise"])
def test_fold_batchnorm_matches_conv_then_bn(kind):
    rng = np.random.default_rng(1)
    conv = (
        keras.layers.Conv2D(4, 3, use_bias=False)
        if kind == "conv"
        else keras.layers.DepthwiseConv2D(3, depth_multiplier=2)
    )
    bn = keras.layers.BatchNormalization(epsilon=1e-3)
    x = rng.normal(size=(2, 6, 6, 3)).astype("float32")
    y = conv(x)
    bn(y)
    channels = y.shape[-1]
    bn.set_weights([rng.uniform(0.5, 2, channels), rng.normal(size=channels),
                    rng.normal(size=channels), rng.uniform(0.2, 3, channels)])
    expected = bn(conv(x), training=False)
    folded = fold_batchnorm(conv, bn)
    np.testing.assert_allclose(folded(x), expected, atol=1e-5)


def test_weight_quantizer_rounds_each_channel_to_127_levels():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(3, 3, 2, 4)).astype("float32")
    q = keras.ops.convert_to_numpy(WeightQuantizer((-1,))(w))
    for c in range(4):
        scale = np.abs(w[..., c]).max() / 127
        levels = q[..., c] / scale
        np.testing.assert_allclose(levels, np.round(levels), atol=1e-3)
        assert np.abs(levels).max() == pytest.approx(127, abs=1e-3)
    assert np.abs(q - w).max() <= np.abs(w).max() / 127 / 2 + 1e-6


def test_activation_quantizer_learns_a_moving_average_range():
    layer = keras.layers.Layer()
    quantizer = ActivationQuantizer(ema_decay=0.9)
    state = quantizer.build(layer, "out")
    quantizer(np.array([-1.0, 3.0], "float32"), state, training=True)
    assert (float(state[0]), float(state[1])) == (-1.0, 3.0)  # first batch sets it
    quantizer(np.array([0.5, 13.0], "float32"), state, training=True)
    # min of a positive batch counts as 0 (zero must be representable).
    assert float(state[0]) == pytest.approx(-0.9)
    assert float(state[1]) == pytest.approx(0.9 * 3.0 + 0.1 * 13.0)
    out = quantizer(np.array([100.0], "float32"), state, training=False)
    assert float(out[0]) == pytest.approx(4.0, abs=0.02)  # clipped to the range


def test_pruned_model_keeps_its_zeros_through_qat_and_in_the_int8_file(digits):
    (x_train, y_train), (x_test, y_test) = digits
    model = compile_for_digits(make_cnn())
    model.fit(x_train, y_train, epochs=2, batch_size=64, verbose=0)
    pruned = tfcompress.prune_low_magnitude(
        model, pruning_schedule=tfcompress.ConstantSparsity(0.75, begin_step=0, frequency=10)
    )
    compile_for_digits(pruned)
    pruned.fit(x_train, y_train, epochs=1, batch_size=64, verbose=0)
    # Still wrapped: quantize_model strips the pruning wrappers itself.
    qat = compile_for_digits(quantize_model(pruned, preserve_sparsity=True), 1e-3)
    qat.fit(x_train, y_train, epochs=1, batch_size=64, verbose=0)
    assert accuracy(qat, x_test, y_test) >= 0.85
    weights = _weight_tensors(lite.convert(qat, quantization="int8"))
    assert len(weights) == 4
    for _, detail, interpreter in weights:
        values = interpreter.get_tensor(detail["index"])
        assert values.dtype == np.int8
        if values.size > 200:  # the 10-output logits layer is small: skip nothing else
            assert np.mean(values == 0) >= 0.74, detail["name"]


def test_clustered_kernel_keeps_few_distinct_values(digits):
    (x_train, y_train), _ = digits
    model = make_cnn()
    rng = np.random.default_rng(0)
    centroids = np.array([-0.3, -0.1, 0.0, 0.1, 0.3], "float32")
    conv = model.layers[1]  # 3x3x16x32: per-channel by default
    conv.kernel.assign(rng.choice(centroids, size=conv.kernel.shape))
    qat = compile_for_digits(quantize_model(model, preserve_sparsity=True), 1e-3)
    wrapper = qat.layers[1]
    assert wrapper.cluster_counts == {"kernel": 5}
    assert qat.layers[0].cluster_counts == {}  # 144 distinct values: not clustered
    qat.fit(x_train[:256], y_train[:256], epochs=1, batch_size=64, verbose=0)
    effective = wrapper.shipped_weights()[id(wrapper.layer.kernel)]
    assert np.unique(effective).size == 5
    assert np.all(effective[conv.kernel.numpy() == 0] == 0)
    assert not np.allclose(np.unique(effective), centroids, atol=1e-3)  # centroids trained
    (conv_weights,) = [
        (d, i) for _, d, i in _weight_tensors(lite.convert(qat, "int8")) if d["shape"][-1] == 16
    ]
    values = conv_weights[1].get_tensor(conv_weights[0]["index"])
    assert values.dtype == np.int8 and np.unique(values).size == 5


def test_other_layer_types_convert_to_integer_only_ops(digits):
    (x_train, y_train), (x_test, _) = digits
    L = keras.layers
    inputs = keras.Input((8, 8, 1))
    a = L.SeparableConv2D(8, 3, padding="same", activation="relu")(inputs)
    b = L.Conv2D(8, 3, padding="same", activation="swish")(inputs)
    x = L.AveragePooling2D(2)(L.Concatenate()([a, b]))
    x = L.Conv2DTranspose(4, 3, strides=2, padding="same", activation="relu6")(x)
    x = L.Conv1D(8, 3, activation="relu")(L.Reshape((64, 4))(x))
    outputs = L.Dense(10, activation="softmax")(L.Flatten()(x))
    qat = quantize_model(keras.Model(inputs, outputs))
    qat.compile("adam", "sparse_categorical_crossentropy")
    qat.fit(x_train[:512], y_train[:512], epochs=1, batch_size=64, verbose=0)
    flatbuffer = lite.convert(qat, quantization="int8")
    interpreter = _interpreter(flatbuffer)
    ops = [op["op_name"] for op in interpreter._get_ops_details()]
    for op in ("DEPTHWISE_CONV_2D", "CONCATENATION", "AVERAGE_POOL_2D", "TRANSPOSE_CONV",
               "LOGISTIC", "MUL", "SOFTMAX"):
        assert op in ops
    assert ops.count("QUANTIZE") == 1 and ops.count("DEQUANTIZE") == 1
    dtypes = [d["dtype"] for d in interpreter.get_tensor_details()]
    assert dtypes.count(np.float32) == 2  # the model input and output only
    top1 = np.argmax(lite.predict(flatbuffer, x_test), -1)
    assert np.mean(top1 == np.argmax(qat.predict(x_test, verbose=0), -1)) >= 0.97


def test_qat_model_saves_and_reloads_without_custom_objects(mobile, digits, tmp_path):
    qat, flatbuffer = mobile[2], mobile[3]
    _, (x_test, _) = digits
    path = tmp_path / "qat.keras"
    qat.save(path)
    restored = keras.saving.load_model(path)
    np.testing.assert_allclose(
        restored.predict(x_test, verbose=0), qat.predict(x_test, verbose=0), atol=1e-5
    )
    again = lite.convert(restored, quantization="int8")
    np.testing.assert_array_equal(lite.predict(again, x_test), lite.predict(flatbuffer, x_test))


def test_qat_trains_under_mirrored_strategy(digits, tmp_path, mirrored_strategy):
    (x_train, y_train), (x_test, _) = digits
    strategy = mirrored_strategy
    with strategy.scope():
        qat = compile_for_digits(quantize_model(make_cnn(8, 8, 16)))
    history = qat.fit(x_train[:512], y_train[:512], epochs=2, batch_size=64, verbose=0)
    assert history.history["loss"][1] < history.history["loss"][0]
    out = qat.layers[-1]
    assert out.output_count.numpy() == 16  # 2 epochs x 8 steps, updated in every step
    assert out.output_max.numpy() > out.output_min.numpy() + 0.1
    # Ranges come from the global batch, so every replica holds the same one
    # and the saved model computes what the distributed one computed.
    qat.save(tmp_path / "qat.keras")
    restored = keras.saving.load_model(tmp_path / "qat.keras")
    np.testing.assert_allclose(
        restored.predict(x_test, verbose=0), qat.predict(x_test, verbose=0), atol=1e-5
    )


def test_annotate_and_apply_quantize_only_chosen_layers():
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    x = keras.layers.Flatten()(x)
    x = quantize_annotate_layer(keras.layers.Dense(8, activation="relu"))(x)
    outputs = quantize_annotate_layer(keras.layers.Dense(10))(x)
    qat = quantize_apply(keras.Model(inputs, outputs))
    kinds = [type(layer).__name__ for layer in qat.layers]
    assert kinds == ["InputLayer", "Conv2D", "Flatten", "QuantizeWrapper", "QuantizeWrapper"]
    # The first quantized layer reads a float tensor, so it quantizes it.
    assert qat.layers[3].quantize_inputs is True
    assert qat.layers[4].quantize_inputs is False


def test_annotate_model_then_apply_equals_quantize_model():
    model = make_cnn(4, 4, 8)
    a = quantize_apply(quantize_annotate_model(model))
    b = quantize_model(model)
    assert [layer.name for layer in a.layers] == [layer.name for layer in b.layers]


def test_custom_layer_with_a_quantize_config():
    @keras.saving.register_keras_serializable(package="tests")
    class Scale(keras.layers.Layer):
        def build(self, input_shape):
            self.kernel = self.add_weight(shape=(input_shape[-1],), initializer="ones")

        def call(self, x):
            return x * self.kernel

    inputs = keras.Input((4,))
    config = QuantizeConfig(weights=["kernel"])
    outputs = quantize_annotate_layer(Scale(), config)(keras.layers.Dense(4)(inputs))
    qat = quantize_apply(keras.Model(inputs, outputs))
    assert isinstance(qat.layers[-1], QuantizeWrapper)
    wrapper = qat.layers[-1]
    assert wrapper.target_weights == [wrapper.layer.kernel]
    assert list(wrapper.shipped_weights()) == [id(wrapper.layer.kernel)]


def test_nested_model_is_quantized():
    inner = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3), keras.layers.ReLU()], name="inner"
    )
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Flatten()(inner(inputs))
    model = keras.Model(inputs, keras.layers.Dense(10)(x))
    qat = quantize_model(model)
    nested = qat.get_layer("inner")
    assert [type(layer).__name__ for layer in nested.layers] == ["QuantizeWrapper"] * 2
    assert nested.layers[0].quantize_inputs is True and nested.layers[0].quantize_output is False
    assert qat.layers[-1].quantize_inputs is False


def test_dense_softmax_is_split_with_the_fixed_tflite_range():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    wrapper = quantize_model(model).layers[0]
    assert wrapper.activation == "softmax"
    assert wrapper.layer.activation is keras.activations.linear


class Scale(keras.layers.Layer):
    """A weighted layer the defaults table does not know."""

    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1],), initializer="ones")

    def call(self, x):
        return keras.ops.cos(x * self.w)


def test_unknown_layer_with_weights_stays_float_naming_it():
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(4), Scale(name="scale"), keras.layers.Dense(2)]
    )
    with pytest.warns(UserWarning, match=r"\['scale'\] have weights.*stay float.*QuantizeConfig"):
        qat = quantize_model(model)
    assert type(qat.get_layer("scale")) is Scale
    assert float_layers(qat) == ["scale"]
    # The Dense after it quantizes its (float) input; COS has no int8 kernel.
    assert qat.layers[-1].quantize_inputs is True
    x = np.random.default_rng(0).normal(size=(8, 4)).astype("float32")
    qat(x, training=True)
    flatbuffer = lite.convert(qat, quantization="int8")
    np.testing.assert_allclose(lite.predict(flatbuffer, x), qat.predict(x, verbose=0), atol=0.05)
    assert zoo.float_ops_and_tensors(flatbuffer)[0] == ["COS"]
    with pytest.raises(ValueError, match=r"'scale'.*Scale.*quantize_annotate_layer"):
        quantize_model(model, strict=True)


def test_unknown_weightless_layer_stays_float_with_a_warning():
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.UnitNormalization(name="unit"), keras.layers.Dense(2)]
    )
    with pytest.warns(UserWarning, match="'unit'.*stay float"):
        qat = quantize_model(model)
    assert type(qat.layers[0]).__name__ == "UnitNormalization"
    assert qat.layers[1].quantize_inputs is True


def test_subclassed_model_raises_with_how_to_proceed():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    net = Net()
    net(np.zeros((1, 4), "float32"))
    with pytest.raises(ValueError, match="functional API"):
        quantize_model(net)


def test_bad_arguments_repeat_the_value():
    with pytest.raises(ValueError, match="ema_decay=1.5"):
        ActivationQuantizer(ema_decay=1.5)
    with pytest.raises(ValueError, match="preserve_clusters='yes'"):
        quantize_model(make_cnn(), preserve_clusters="yes")

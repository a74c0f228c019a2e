"""QAT of Keras operations, BatchNormalization after no conv, and transformer layers.

Each converted model must be full-integer (no float op besides QUANTIZE /
DEQUANTIZE at the edges) and agree with the Keras QAT model. The larger
models (ViT, keyword spotter with BN after ReLU, MobileNetV3-style block) are
the fast rows of `test_zoo.py`.
"""

import keras
import numpy as np
import pytest
import zoo_models as zoo
from keras import layers as L
from keras import ops

from tfcompress import lite
from tfcompress.quantization import (
    QuantizeWrapper,
    quantize_annotate_model,
    quantize_apply,
    quantize_model,
)


def _calibrate(model, x, steps=3):
    for i in range(steps):
        model(x[i * 8:(i + 1) * 8], training=True)
    return model


def test_fake_quant_goes_after_the_operations_tflite_computes_in_int8():
    inputs = keras.Input((8, 4))
    x = L.Dense(4, name="dense")(inputs)
    x = L.ReLU(6.0, name="relu6")(x + 3.0)  # ADD with a fused RELU6: one range, after it
    x = x * (1.0 / 6.0)
    x = ops.reshape(x, (-1, 32))[:, ::2]  # moves values: keeps its input's scale
    model = keras.Model(inputs, L.Dense(2, name="head")(x))
    qat = quantize_model(model)
    wrappers = {l.name: l for l in qat.layers if isinstance(l, QuantizeWrapper)}
    assert sorted(wrappers) == ["quant_dense", "quant_head", "quant_multiply", "quant_relu6"]
    assert type(wrappers["quant_multiply"].layer).__name__ == "Identity"
    x = np.random.default_rng(0).normal(size=(32, 8, 4)).astype("float32")
    flatbuffer = lite.convert(_calibrate(qat, x), quantization="int8")
    assert zoo.float_ops_and_tensors(flatbuffer) == ([], [])
    assert zoo.tflite_ops(flatbuffer).count("ADD") == 1  # the RELU6 fused into it
    assert zoo.cosine(qat.predict(x, verbose=0), lite.predict(flatbuffer, x)) >= 0.999


def test_rank3_dense_with_a_bias_is_one_int8_fully_connected():
    inputs = keras.Input((6, 8))
    dense = L.Dense(5, bias_initializer="ones")
    model = keras.Model(inputs, dense(inputs))
    x = np.random.default_rng(0).normal(size=(32, 6, 8)).astype("float32")
    qat = _calibrate(quantize_model(model), x)
    flatbuffer = lite.convert(qat, quantization="int8")
    assert zoo.float_ops_and_tensors(flatbuffer) == ([], [])
    assert "ADD" not in zoo.tflite_ops(flatbuffer)  # the bias is in the FULLY_CONNECTED
    np.testing.assert_allclose(lite.predict(flatbuffer, x), qat.predict(x, verbose=0), atol=0.05)


@pytest.mark.parametrize("untrained", [True, False], ids=["gamma_1_beta_0", "trained_affine"])
def test_causal_attention_and_layer_norm_are_full_integer(untrained):
    inputs = keras.Input((8, 16))
    x = L.LayerNormalization(name="norm")(inputs)
    x = L.MultiHeadAttention(2, 8, name="attention")(x, x, use_causal_mask=True)
    model = keras.Model(inputs, L.Dense(4)(x))
    if not untrained:
        zoo._perturb(model)
    x = np.random.default_rng(0).normal(size=(32, 8, 16)).astype("float32")
    qat = _calibrate(quantize_model(model), x)
    flatbuffer = lite.convert(qat, quantization="int8")
    assert zoo.float_ops_and_tensors(flatbuffer) == ([], [])
    ops_ = zoo.tflite_ops(flatbuffer)
    assert "SOFTMAX" in ops_ and "RSQRT" in ops_ and "NEG" not in ops_
    keras_out = qat.predict(x, verbose=0)
    assert zoo.cosine(keras_out, lite.predict(flatbuffer, x)) >= 0.999
    # The first position attends to itself only, in Keras and in int8 alike.
    assert zoo.cosine(model.predict(x, verbose=0), keras_out) >= 0.99


def test_annotate_model_then_apply_with_flatten_reshape_and_pooling(digits):
    (x, y), _ = digits
    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        L.Conv2D(8, 3, activation="relu"),
        L.MaxPooling2D(2),
        L.Reshape((9, 8)),
        L.Flatten(),
        L.Dense(10),
    ])
    qat = quantize_apply(quantize_annotate_model(model))
    # Pass-through layers keep their input's scale: no wrapper.
    names = ["QuantizeWrapper", "MaxPooling2D", "Reshape", "Flatten", "QuantizeWrapper"]
    assert [type(l).__name__ for l in qat.layers] == names
    qat.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    qat.fit(x[:256], y[:256], batch_size=64, epochs=1, verbose=0)
    flatbuffer = lite.convert(qat, quantization="int8")
    assert zoo.float_ops_and_tensors(flatbuffer) == ([], [])
    keras_top1 = np.argmax(qat.predict(x[:256], verbose=0), axis=-1)
    assert np.mean(np.argmax(lite.predict(flatbuffer, x[:256]), axis=-1) == keras_top1) >= 0.99


class ResidualBlock(L.Layer):
    """A subclassed block of known layers (as keras_hub's TransformerEncoder)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = L.Dense(16, activation="gelu")
        self.norm = L.LayerNormalization()

    def call(self, x):
        return self.norm(x + self.dense(x))


def test_subclassed_blocks_are_written_out_and_quantized_layer_by_layer():
    inputs = keras.Input((4, 16))
    x = ResidualBlock(name="block0")(inputs)
    model = keras.Model(inputs, ResidualBlock(name="block1")(x))
    zoo._perturb(model)
    qat = quantize_model(model)
    inner = sorted(type(l.layer).__name__ for l in qat.layers if l.name.startswith("quant_block"))
    assert inner == ["Dense", "Dense", "LayerNormalization", "LayerNormalization"]
    # The input, read by the Dense and by `x + ...`, gets one quantizer.
    assert [l.name for l in qat.layers if isinstance(l, QuantizeWrapper) and l.quantize_inputs] == []
    assert "quant_input_layer" in [l.name for l in qat.layers]
    x = np.random.default_rng(0).normal(size=(32, 4, 16)).astype("float32")
    _calibrate(qat, x)
    assert zoo.cosine(qat.predict(x, verbose=0), model.predict(x, verbose=0)) >= 0.99
    flatbuffer = lite.convert(qat, quantization="int8")
    assert zoo.float_ops_and_tensors(flatbuffer) == ([], [])
    assert zoo.cosine(qat.predict(x, verbose=0), lite.predict(flatbuffer, x)) >= 0.999


class EagerBlock(L.Layer):
    """A block whose `call` needs concrete tensors: it cannot be written out as nodes."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = L.Dense(4)

    def build(self, input_shape):
        self.dense.build(input_shape)

    def call(self, x):
        scale = 2.0 if float(keras.ops.convert_to_numpy(keras.ops.max(x))) > 100 else 1.0
        return self.dense(x) * scale

    def compute_output_shape(self, input_shape):
        return input_shape[:-1] + (4,)


def test_a_block_that_cannot_be_written_out_stays_float_with_a_warning():
    inputs = keras.Input((8,))
    model = keras.Model(inputs, L.Dense(2)(EagerBlock(name="eager")(L.Dense(8)(inputs))))
    with pytest.warns(UserWarning) as record:
        qat = quantize_model(model)
    messages = [str(w.message) for w in record]
    assert any("['eager'] could not be written out" in m for m in messages), messages
    assert any("Layers ['eager'] have weights but no quantization config" in m for m in messages)
    assert type(qat.get_layer("eager")) is EagerBlock
    x = np.random.default_rng(0).normal(size=(8, 8)).astype("float32")
    # (Eager calls: this block cannot run in a traced function either.)
    assert zoo.cosine(_calibrate(qat, x, steps=1)(x), model(x)) >= 0.99


class ScaledSum(L.Layer):
    """A weightless layer of the user's: InceptionResNetV2's `x + scale * branch`."""

    def __init__(self, scale, **kwargs):
        super().__init__(**kwargs)
        self.scale = scale

    def call(self, inputs):
        return inputs[0] + inputs[1] * self.scale

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


class NoisyScale(ScaledSum):
    """Weightless too, but its `call` depends on `training`: it stays one layer."""

    def call(self, inputs, training=False):
        return inputs[0] + inputs[1] * (self.scale if training else 2 * self.scale)


def test_weightless_layers_of_the_user_and_lambdas_are_written_out_and_quantized():
    inputs = keras.Input((8, 8, 3))
    a = L.Conv2D(8, 3, padding="same", activation="relu", name="conv")(inputs)
    b = L.Conv2D(8, 1, name="branch")(a)
    x = ScaledSum(0.17, name="scaled_sum")([a, b])
    x = L.Lambda(lambda t: ops.maximum(t, 0.0) * 0.5, name="half_relu")(x)
    model = keras.Model(inputs, L.Dense(3, name="head")(L.GlobalAveragePooling2D()(x)))
    qat = quantize_model(model)
    names = [l.name for l in qat.layers]
    assert "scaled_sum" not in names and "half_relu" not in names
    assert {"quant_multiply", "quant_add", "quant_maximum", "quant_multiply_1"} <= set(names)
    x = np.random.default_rng(0).normal(size=(32, 8, 8, 3)).astype("float32")
    _calibrate(qat, x)
    flatbuffer = lite.convert(qat, quantization="int8")
    assert zoo.float_ops_and_tensors(flatbuffer) == ([], [])
    assert zoo.cosine(qat.predict(x, verbose=0), lite.predict(flatbuffer, x)) >= 0.999
    # The float model keeps its layers (the rewrite works on a copy).
    assert type(model.get_layer("scaled_sum")) is ScaledSum


def test_a_weightless_layer_whose_call_takes_training_stays_one_float_layer():
    inputs = keras.Input((4,))
    x = NoisyScale(0.5, name="noisy")([inputs, L.Dense(4, name="dense")(inputs)])
    model = keras.Model(inputs, L.Dense(2, name="head")(x))
    with pytest.warns(UserWarning, match=r"\['noisy'\] are not in the quantization table"):
        qat = quantize_model(model)
    assert type(qat.get_layer("noisy")) is NoisyScale


def test_qat_transformer_saves_and_reloads_without_custom_objects(tmp_path):
    model = zoo.vit(depth=1, dim=16, mlp=32)
    x = np.random.default_rng(0).normal(size=(24, 8, 8, 1)).astype("float32")
    qat = _calibrate(quantize_model(model), x)
    path = str(tmp_path / "vit_qat.keras")
    qat.save(path)
    reloaded = keras.saving.load_model(path)
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), qat.predict(x, verbose=0), atol=1e-5)


def test_batchnorm_after_no_conv_is_an_int8_multiply_add_with_the_relu_fused():
    # DenseNet / ResNetV2 pre-activation: concatenate -> BN -> ReLU -> conv.
    inputs = keras.Input((8, 8, 3))
    a = L.Conv2D(4, 3, padding="same")(inputs)
    b = L.Conv2D(4, 1)(inputs)
    x = L.BatchNormalization()(L.Concatenate()([a, b]))
    x = L.Activation("relu")(x)
    x = L.Conv2D(8, 3)(x)
    model = zoo._perturb(keras.Model(inputs, L.Dense(3)(L.GlobalAveragePooling2D()(x))))
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            layer.moving_mean.assign(np.linspace(-1, 1, 8))
            layer.moving_variance.assign(np.linspace(0.5, 2, 8))
    x = np.random.default_rng(0).normal(size=(32, 8, 8, 3)).astype("float32")
    qat = _calibrate(quantize_model(model), x)
    flatbuffer = lite.convert(qat, quantization="int8")
    assert zoo.float_ops_and_tensors(flatbuffer) == ([], [])
    ops_ = zoo.tflite_ops(flatbuffer)
    assert ops_.count("MUL") == 1 and ops_.count("ADD") == 1 and "RELU" not in ops_
    assert zoo.cosine(qat.predict(x, verbose=0), lite.predict(flatbuffer, x)) >= 0.999
    assert zoo.cosine(model.predict(x, verbose=0), qat.predict(x, verbose=0)) >= 0.99


def test_recurrent_layers_stay_float_with_a_warning_naming_them():
    inputs = keras.Input((6, 4))
    x = L.Dense(8, name="embed")(inputs)
    x = L.LSTM(8, return_sequences=True, name="lstm")(x)
    x = L.Bidirectional(L.GRU(4), name="bigru")(x)
    model = keras.Model(inputs, L.Dense(2, name="head")(x))
    with pytest.warns(UserWarning, match=r"\['lstm', 'bigru'\] have weights.*stay float"):
        qat = quantize_model(model)
    assert [l.name for l in qat.layers if isinstance(l, QuantizeWrapper)] == ["quant_embed", "quant_head"]
    assert qat.get_layer("quant_head").quantize_inputs is True  # after the float GRU
    x = np.random.default_rng(0).normal(size=(8, 6, 4)).astype("float32")
    assert zoo.cosine(_calibrate(qat, x, steps=1).predict(x, verbose=0), model.predict(x, verbose=0)) >= 0.99


def test_layer_norm_of_a_flat_token_trains_without_nan_and_matches_tflite():
    # Token 0 is flat (variance 0); the others vary 1000x more: in int8 its
    # `variance + epsilon` rounds to 0, and RSQRT saturates at its range's top.
    inputs = keras.Input((4, 8))
    x = L.LayerNormalization(epsilon=1e-6, name="norm")(L.Dense(8, name="dense")(inputs))
    model = keras.Model(inputs, L.Dense(3, name="head")(x))
    model.get_layer("dense").set_weights([np.eye(8, dtype="float32"), np.zeros(8, "float32")])
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4, 8)).astype("float32") * 10.0
    x[:, 0, :] = 0.5
    qat = quantize_model(model)
    qat.compile(keras.optimizers.SGD(1e-3), "mse")
    history = qat.fit(x, rng.normal(size=(64, 4, 3)), epochs=2, batch_size=16, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    norm = qat.get_layer("quant_norm")
    top = [keras.ops.convert_to_numpy(v) for v in norm.weights if v.path.endswith("inverse_std_max")]
    assert len(top) == 1 and np.isfinite(top[0]).all() and 0 < float(top[0]) < 10
    flatbuffer = lite.convert(qat, quantization="int8")
    assert zoo.float_ops_and_tensors(flatbuffer) == ([], [])
    assert zoo.cosine(qat.predict(x, verbose=0), lite.predict(flatbuffer, x)) >= 0.99

"""Low-bit weights: 4-bit, ternary and binary QAT, their INT4 export and checks."""

import keras
import numpy as np
import pytest
from conftest import accuracy, compile_for_digits

import tfcompress
from tfcompress import lite
from tfcompress.report import stored_bits, tflite_weights
from tfcompress.quantization import (
    BinaryQuantizer,
    QuantizeConfig,
    TernaryQuantizer,
    WeightQuantizer,
    quantize_annotate_layer,
    quantize_apply,
    quantize_model,
)
from tfcompress.quantization import verify

L = keras.layers
# The fixture model's bits: the first layer at 4, the middle ternary and binary,
# the logits at 8 (the usual low-bit recipe keeps the last layer wider).
BITS = {"conv": 4, "dw": 2, "hidden": 1, "logits": 8}


def small_model():
    inputs = keras.Input((8, 8, 1))
    x = L.Conv2D(16, 3, padding="same", activation="relu", name="conv")(inputs)
    x = L.DepthwiseConv2D(3, padding="same", activation="relu", name="dw")(x)
    x = L.Flatten(name="flatten")(L.MaxPooling2D(2)(x))
    x = L.Dense(32, activation="relu", name="hidden")(x)
    return keras.Model(inputs, L.Dense(10, name="logits")(x))


@pytest.fixture(scope="module")
def lowbit(digits):
    """(float model, its accuracy, mixed low-bit QAT model, its .tflite)."""
    (x_train, y_train), (x_test, y_test) = digits
    keras.utils.set_random_seed(0)
    model = compile_for_digits(small_model())
    model.fit(x_train, y_train, epochs=3, batch_size=128, verbose=0)
    qat = compile_for_digits(quantize_model(model, weight_bits=BITS), 1e-3)
    qat.fit(x_train, y_train, epochs=2, batch_size=128, verbose=0)
    return model, accuracy(model, x_test, y_test), qat, lite.convert(qat, "int8")


def _kernels(flatbuffer):
    """{layer: (stored type, integer values, number of scales)} of the fixture's kernels."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.interpreter import Interpreter

    types = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    interpreter = Interpreter(model_content=flatbuffer)
    graph = schema.Model.GetRootAs(flatbuffer, 0).Subgraphs(0)
    found = {}
    for detail in interpreter.get_tensor_details():
        tensor = graph.Tensors(detail["index"])
        layers = [n for n in BITS if verify._in_scope(detail["name"].split(";")[0], f"quant_{n}")]
        if len(detail["shape"]) >= 2 and layers and types[tensor.Type()] in ("INT4", "INT8"):
            try:
                values = interpreter.get_tensor(detail["index"])  # INT4 comes unpacked
            except ValueError:
                continue  # not a constant
            scales = len(detail["quantization_parameters"]["scales"])
            found[layers[0]] = (types[tensor.Type()], values, scales)
    return found


@pytest.mark.parametrize(
    "quantizer, levels",
    [
        (WeightQuantizer((-1,), num_bits=4), 15),
        (TernaryQuantizer((-1,)), 3),
        (BinaryQuantizer((-1,)), 2),
    ],
)
def test_each_channel_holds_at_most_the_grid_values_and_gradients_pass_through(quantizer, levels):
    rng = np.random.default_rng(0)
    kernel = keras.Variable(rng.normal(size=(3, 3, 4, 8)).astype("float32"))
    import tensorflow as tf

    with tf.GradientTape() as tape:
        out = quantizer(kernel)
        loss = keras.ops.sum(out * np.arange(8, dtype="float32"))
    values = out.numpy().reshape(-1, 8)
    top = 7 if levels == 15 else 1  # the largest integer of the grid
    for column in values.T:
        steps = column / (np.abs(column).max() / top)
        np.testing.assert_allclose(steps, np.round(steps), atol=1e-5)  # on the grid
        distinct = np.unique(np.round(steps))
        assert len(distinct) <= levels and distinct.min() >= -top and distinct.max() <= top
        assert len(distinct) >= min(levels, 10)
    if isinstance(quantizer, BinaryQuantizer):  # scale = mean |w| per channel
        np.testing.assert_allclose(
            np.abs(values).max(0), np.abs(kernel.numpy()).reshape(-1, 8).mean(0), rtol=1e-6
        )
    # Straight-through: d loss / d w is the channel's coefficient everywhere
    # (the 4-bit grid spans the weights, so nothing is clipped).
    gradient = tape.gradient(loss, kernel).numpy().reshape(-1, 8)
    np.testing.assert_array_equal(gradient, np.tile(np.arange(8.0), (36, 1)))
    again = type(quantizer).from_config(quantizer.get_config())
    np.testing.assert_array_equal(again(kernel).numpy(), out.numpy())


def test_ternary_threshold_and_zeros_of_a_pruned_kernel():
    w = np.array([[0.0], [0.0], [0.1], [-0.9], [1.1], [0.2]], "float32")
    # Zeros do not count: mean |w| of the non-zero ones is 0.575, the cut 0.4025.
    out = TernaryQuantizer((-1,))(w).numpy().ravel()
    np.testing.assert_allclose(out, [0, 0, 0, -1.0, 1.0, 0], atol=1e-6)
    out = BinaryQuantizer((-1,))(w).numpy().ravel()
    np.testing.assert_allclose(out, [0, 0, 0.575, -0.575, 0.575, 0.575], atol=1e-6)


def test_low_bit_tflite_stores_int4_with_the_trained_values(lowbit, digits):
    model, float_acc, qat, flatbuffer = lowbit
    _, (x_test, y_test) = digits
    kernels = _kernels(flatbuffer)
    assert {name: k[0] for name, k in kernels.items()} == {
        "conv": "INT4", "dw": "INT4", "hidden": "INT4", "logits": "INT8"
    }
    # One scale per output channel, Dense included (the STATIC QDQ mode).
    assert {name: k[2] for name, k in kernels.items()} == {
        "conv": 16, "dw": 16, "hidden": 32, "logits": 1
    }
    # 'hidden' (8,192 weights) also guards the converter's constant folding: a
    # projection it cannot fold (ops.where) would leave FakeQuant unconverted.
    conv, dw, hidden = (kernels[name][1] for name in ("conv", "dw", "hidden"))
    assert conv.min() >= -7 and conv.max() <= 7 and np.unique(conv).size == 15
    assert set(np.unique(dw)) == {-7, 0, 7}  # ternary: 3 values per channel
    assert set(np.unique(hidden)) == {-7, 7}  # binary: 2
    # LiteRT computes what Keras computes, within one step of the output's int8
    # grid (LiteRT's INT4 kernels round some accumulators one step off).
    keras_out = qat.predict(x_test, verbose=0)
    tflite_out = lite.predict(flatbuffer, x_test)
    logits = qat.get_layer("quant_logits")
    step = float(logits.output_max.numpy() - logits.output_min.numpy()) / 255
    assert np.abs(keras_out - tflite_out).max() <= 1.01 * step
    assert np.mean(np.argmax(keras_out, -1) == np.argmax(tflite_out, -1)) >= 0.99
    assert accuracy(qat, x_test, y_test) >= float_acc - 0.02


def test_summarize_reads_int4_and_shows_the_entropy_bound(lowbit):
    flatbuffer = lowbit[3]
    report = tfcompress.summarize(flatbuffer)
    rows = {r.name: r for r in report.rows if r.params >= 144}
    kinds = {
        name: next(n for n in BITS if verify._in_scope(r.name, f"quant_{n}"))
        for name, r in rows.items() if r.dtype in ("int4", "int8")
    }
    by_layer = {kind: rows[name] for name, kind in kinds.items()}
    conv, dw, hidden = by_layer["conv"], by_layer["dw"], by_layer["hidden"]
    dtypes = (conv.dtype, dw.dtype, hidden.dtype, by_layer["logits"].dtype)
    assert dtypes == ("int4", "int4", "int4", "int8")
    assert hidden.bytes == hidden.params // 2  # two weights per byte
    assert dw.distinct == 3 and dw.bits_per_weight <= np.log2(3)
    assert hidden.distinct == 2 and hidden.bits_per_weight <= 1.0
    assert 3.0 < conv.bits_per_weight <= 4.0
    assert report.entropy_bytes < sum(r.bytes for r in by_layer.values())


def test_saved_low_bit_model_reloads_and_resumes(lowbit, digits, tmp_path):
    qat = lowbit[2]
    (x_train, y_train), (x_test, _) = digits
    qat.save(tmp_path / "lowbit.keras")
    restored = keras.saving.load_model(tmp_path / "lowbit.keras")
    assert isinstance(
        restored.get_layer("quant_dw").quantize_config.weights["kernel"], TernaryQuantizer
    )
    np.testing.assert_allclose(
        restored.predict(x_test, verbose=0), qat.predict(x_test, verbose=0), atol=1e-5
    )
    compile_for_digits(restored, 1e-3)
    history = restored.fit(x_train[:256], y_train[:256], epochs=1, batch_size=64, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    hidden = restored.get_layer("quant_hidden")
    shipped = hidden.shipped_weights()[id(hidden.layer.kernel)]
    assert all(np.unique(column).size == 2 for column in shipped.T)  # still binary


def test_mixed_precision_dict_sets_each_layer():
    model = small_model()
    qat = quantize_model(model, weight_bits={"conv": 4, "logits": 8, None: 2})

    def kernel(name, model=qat):
        return model.get_layer(f"quant_{name}").quantize_config.weights["kernel"]

    assert (type(kernel("conv")), kernel("conv").num_bits) == (WeightQuantizer, 4)
    assert isinstance(kernel("dw"), TernaryQuantizer) and kernel("dw").channel_axes == (-2, -1)
    # Dense goes per output unit at low bits, stays per tensor at 8 (as TFLite's default).
    assert isinstance(kernel("hidden"), TernaryQuantizer) and kernel("hidden").channel_axes == (-1,)
    assert (kernel("logits").num_bits, kernel("logits").channel_axes) == (8, None)

    # quantize_apply: bits go to annotated layers; an own QuantizeConfig is kept.
    inputs = keras.Input((8, 8, 1))
    x = quantize_annotate_layer(L.Conv2D(4, 3, name="own"), QuantizeConfig(weights={
        "kernel": WeightQuantizer((-1,), num_bits=4)}))(inputs)
    x = L.Flatten()(L.Conv2D(4, 3, name="plain")(x))
    outputs = quantize_annotate_layer(L.Dense(10, name="head"))(x)
    annotated = keras.Model(inputs, outputs)
    qat = quantize_apply(annotated, weight_bits=1)
    assert isinstance(kernel("head", qat), BinaryQuantizer)
    assert kernel("own", qat).num_bits == 4
    assert not any(l.name == "quant_plain" for l in qat.layers)
    with pytest.raises(ValueError, match="names layer 'own', which has its own QuantizeConfig"):
        quantize_apply(annotated, weight_bits={"own": 2})
    with pytest.raises(ValueError, match=r"without quantized weights: \['plain'\]"):
        quantize_apply(annotated, weight_bits={"plain": 2})


def test_bad_weight_bits_repeat_the_value():
    model = small_model()
    with pytest.raises(ValueError, match=r"must be one of \[1, 2, 4, 8\]. Received: weight_bits=3"):
        quantize_model(model, weight_bits=3)
    with pytest.raises(ValueError, match="must be an integer. Received: weight_bits=True"):
        quantize_model(model, weight_bits=True)
    with pytest.raises(ValueError, match=r"\['conv'\] must be one of .* weight_bits\['conv'\]=16"):
        quantize_model(model, weight_bits={"conv": 16})
    with pytest.raises(ValueError, match=r"model '.*' does not have: \['nope'\]"):
        quantize_model(model, weight_bits={"nope": 4, None: 8})
    with pytest.raises(ValueError, match=r"without quantized weights: \['flatten'\]"):
        quantize_model(model, weight_bits={"flatten": 4})
    with pytest.raises(ValueError, match="threshold must be >= 0"):
        TernaryQuantizer(threshold=-0.1)


def test_transposed_conv_keeps_8_bits_with_a_warning_or_raises_when_named():
    inputs = keras.Input((4, 4, 2))
    x = L.Conv2DTranspose(4, 3, strides=2, padding="same", name="up")(inputs)
    model = keras.Model(inputs, L.Conv2D(2, 3, name="conv")(x))
    with pytest.warns(UserWarning, match=r"'up' \(Conv2DTranspose\) cannot have 4-bit.*keeps 8"):
        qat = quantize_model(model, weight_bits=4)
    assert qat.get_layer("quant_up").quantize_config.weights["kernel"].num_bits == 8
    assert qat.get_layer("quant_conv").quantize_config.weights["kernel"].num_bits == 4
    with pytest.raises(ValueError, match=r"'up' \(Conv2DTranspose\) cannot have 2-bit.*TRANSPOSE"):
        quantize_model(model, weight_bits={"up": 2, "conv": 4})


def test_rank3_dense_with_one_4_bit_range_is_int4():
    # A Dense on a sequence runs as one FULLY_CONNECTED on the flattened rows,
    # so one 4-bit range per tensor packs as INT4 too.
    inputs = keras.Input((5, 16))
    config = QuantizeConfig(weights={"kernel": WeightQuantizer(None, num_bits=4)})
    dense = L.Dense(8, bias_initializer="ones", name="seq_dense")
    qat = quantize_apply(keras.Model(inputs, quantize_annotate_layer(dense, config)(inputs)))
    qat(np.ones((2, 5, 16), "float32"), training=True)
    stored = {values.size: stored_bits(values) for _, values, _ in tflite_weights(lite.convert(qat, "int8"))}
    assert stored[128] == 4


def test_check_int4_raises_naming_a_low_bit_layer_that_is_not_int4():
    # The converter silently keeps a weight it cannot pack in another type:
    # here an 8-bit file checked as if the kernel were 4-bit.
    inputs = keras.Input((16,))
    qat = quantize_model(keras.Model(inputs, L.Dense(8, name="dense8")(inputs)))
    qat(np.ones((2, 16), "float32"), training=True)
    flatbuffer = lite.convert(qat, "int8")
    expected = [verify.LowBitWeight("dense8", "quant_dense8", "kernel", 128, 4)]
    with pytest.raises(ValueError, match=r"low-bit weights as INT4: 'dense8' \(kernel, 128 values, 4-bit\)"):
        verify.check_int4(flatbuffer, expected)


class _RecordingConverter:
    """Stands in for a TFLiteConverter: records the attributes set on it."""

    optimizations = ["DEFAULT"]


def test_only_low_bit_models_convert_in_the_static_qdq_mode():
    # The STATIC mode would change int8 files where an activation is not fused
    # (swish runs in float), so int8 QAT models convert as they always did.
    converter = _RecordingConverter()
    assert verify.prepare_converter(converter, quantize_model(small_model())) == []
    assert not hasattr(converter, "_experimental_qdq_conversion_mode")
    # For low-bit models, the per-channel Dense of the fixture's file (which the
    # default mode cannot write) shows the mode is set. A float export of them
    # would not run (QUANTIZE to UINT4): refused.
    lowbit = quantize_model(small_model(), weight_bits=BITS)
    assert [w.layer for w in verify.low_bit_weights(lowbit)] == ["conv", "dw", "hidden"]
    converter.optimizations = []
    with pytest.raises(ValueError, match=r"\['conv', 'dw', 'hidden'\] have low-bit weights"):
        verify.prepare_converter(converter, lowbit)


def test_pruned_clustered_kernels_keep_zeros_and_clusters_through_4_bit_qat(digits):
    (x_train, y_train), _ = digits
    model = small_model()
    rng = np.random.default_rng(0)
    # What prune -> strip -> cluster(6, preserve_sparsity) -> strip leaves: 75% zeros
    # and 6 shared values.
    centroids = np.array([-0.3, -0.2, -0.1, 0.1, 0.2, 0.3], "float32")
    for name in ("conv", "hidden"):
        kernel = model.get_layer(name).kernel
        values = rng.choice(centroids, size=kernel.shape) * (rng.random(kernel.shape) >= 0.75)
        kernel.assign(values.astype("float32"))
    qat = compile_for_digits(quantize_model(model, preserve_sparsity=True, weight_bits=4), 1e-3)
    assert qat.get_layer("quant_hidden").cluster_counts == {"kernel": 7}
    qat.fit(x_train[:256], y_train[:256], epochs=1, batch_size=64, verbose=0)
    kernels = _kernels(lite.convert(qat, "int8"))
    for name in ("conv", "hidden"):
        stored, values, scales = kernels[name]
        zeros = model.get_layer(name).kernel.numpy() == 0
        assert stored == "INT4" and scales == 1  # shared values, one scale: they stay shared
        assert np.all(_to_keras_layout(values, zeros.shape)[zeros] == 0)
        assert np.unique(values).size <= 7  # 6 clusters + zero


def _to_keras_layout(values, shape):
    """A TFLite kernel (output channels first) in Keras' layout (output channels last)."""
    return np.moveaxis(values, 0, -1).reshape(shape)


def test_distiller_trains_a_ternary_student_under_mirrored_strategy(
    lowbit, digits, mirrored_strategy
):
    teacher, teacher_acc = lowbit[0], lowbit[1]
    (x_train, y_train), (x_test, y_test) = digits
    with mirrored_strategy.scope():
        # The usual recipe: the float model's own ternary copy, taught by it.
        student = quantize_model(teacher, weight_bits={"logits": 8, None: 2})
        distiller = tfcompress.Distiller(student=student, teacher=teacher)
        distiller.compile(keras.optimizers.Adam(1e-3), metrics=["accuracy"])
    history = distiller.fit(x_train[:384], y_train[:384], epochs=2, batch_size=64, verbose=0)
    assert history.history["loss"][1] < history.history["loss"][0]
    assert accuracy(student, x_test, y_test) >= teacher_acc - 0.1
    dense = student.get_layer("quant_hidden")
    shipped = dense.shipped_weights()[id(dense.layer.kernel)]
    assert all(np.unique(column).size <= 3 for column in shipped.T)

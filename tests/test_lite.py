"""TFLite export and the LiteRT runtime."""

import keras
import numpy as np
import pytest
from conftest import accuracy, compile_for_digits, make_cnn
import zoo_models as zoo

import tfcompress
from tfcompress import lite


@pytest.fixture(scope="module")
def cnn(digits):
    """A trained float CNN, its test accuracy and its float32 flatbuffer."""
    (x_train, y_train), (x_test, y_test) = digits
    keras.utils.set_random_seed(0)
    model = compile_for_digits(make_cnn())
    model.fit(x_train, y_train, epochs=4, batch_size=64, verbose=0)
    return model, accuracy(model, x_test, y_test), lite.convert(model)


def test_float_file_predicts_like_keras(cnn, digits, tmp_path):
    model, float_acc, flatbuffer = cnn
    _, (x_test, y_test) = digits
    np.testing.assert_allclose(
        lite.predict(flatbuffer, x_test, batch_size=100),  # 5 full batches + a short one
        model.predict(x_test, verbose=0),
        atol=1e-4,
    )
    assert float_acc >= 0.9
    result = lite.evaluate(flatbuffer, x_test, y_test)
    assert result == {"accuracy": pytest.approx(float_acc), "num_examples": len(y_test)}
    # One-hot labels and a file path work too.
    path = tmp_path / "model.tflite"
    path.write_bytes(flatbuffer)
    one_hot = np.eye(10)[y_test]
    assert lite.evaluate(str(path), x_test, one_hot)["accuracy"] == pytest.approx(float_acc)


def test_float16_and_dynamic_are_2x_and_4x_smaller(cnn, tmp_path):
    model, _, float_file = cnn
    path = tmp_path / "out" / "f16.tflite"
    half = lite.convert(model, quantization="float16", output_path=str(path))
    assert path.read_bytes() == half
    dynamic = lite.convert(model, quantization="dynamic")
    assert 1.8 <= len(float_file) / len(half) <= 2.1
    assert 3.2 <= len(float_file) / len(dynamic) <= 4.1


def test_post_training_int8_calibrates_on_representative_data(cnn, digits):
    model, float_acc, _ = cnn
    (x_train, _), (x_test, y_test) = digits
    batches = [x_train[i : i + 50] for i in range(0, 200, 50)]  # an iterable of batches
    int8 = lite.convert(model, quantization="int8", representative_data=batches)
    assert lite.evaluate(int8, x_test, y_test)["accuracy"] >= float_acc - 0.02
    int8_io = lite.convert(
        model, quantization="int8", representative_data=x_train[:200], int8_io=True
    )
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=int8_io)
    assert interpreter.get_input_details()[0]["dtype"] == np.int8
    assert interpreter.get_output_details()[0]["dtype"] == np.int8
    # predict scales int8 input/output: same answers as the float-I/O file.
    agree = np.mean(
        np.argmax(lite.predict(int8_io, x_test), -1) == np.argmax(lite.predict(int8, x_test), -1)
    )
    assert agree >= 0.98


def test_pruning_wrappers_are_stripped_by_convert(digits):
    (x_train, y_train), (x_test, _) = digits
    pruned = tfcompress.prune_low_magnitude(
        make_cnn(4, 8, 16), pruning_schedule=tfcompress.ConstantSparsity(0.5, begin_step=0)
    )
    compile_for_digits(pruned).fit(x_train[:128], y_train[:128], epochs=1, verbose=0)
    flatbuffer = lite.convert(pruned)
    np.testing.assert_allclose(
        lite.predict(flatbuffer, x_test[:32]), pruned.predict(x_test[:32], verbose=0), atol=1e-4
    )


def test_subclassed_model_converts():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = keras.layers.Conv2D(4, 3, activation="relu")
            self.flat = keras.layers.Flatten()
            self.out = keras.layers.Dense(10)

        def call(self, x):
            return self.out(self.flat(self.conv(x)))

    net = Net()
    x = np.random.default_rng(0).random((5, 8, 8, 1)).astype("float32")
    expected = net(x)
    np.testing.assert_allclose(lite.predict(lite.convert(net), x), expected, atol=1e-5)


def test_benchmark_reports_median_and_p90(cnn):
    result = lite.benchmark(cnn[2], num_threads=1, runs=30, warmup=3)
    assert 0 < result["median_ms"] <= result["p90_ms"] < 1000
    assert result["runs"] == 30 and result["size_bytes"] == len(cnn[2])


# Bad arguments, inputs and files: test_bad_input.py and test_fuzz.py.


# -- models of any signature ---------------------------------------------------------

VOCAB, STEPS = 30, 6


def two_in_two_out(structure):
    """int32 token ids first and floats second, logits first and a sigmoid second:
    names chosen so that alphabetical order is not Keras order."""
    layers = keras.layers
    ids = keras.Input((STEPS,), dtype="int32", name="zeta_ids")
    feats = keras.Input((5,), name="alpha_feats")
    pooled = layers.GlobalAveragePooling1D()(layers.Embedding(VOCAB, 8)(ids))
    hidden = layers.Dense(16, activation="relu")(
        layers.Concatenate()([pooled, layers.Dense(8, activation="relu")(feats)])
    )
    logits = layers.Dense(3, name="z_logits")(hidden)
    score = layers.Dense(1, activation="sigmoid", name="a_score")(hidden)
    if structure == "dict":
        return keras.Model({"zeta_ids": ids, "alpha_feats": feats}, {"z": logits, "a": score})
    return keras.Model([ids, feats], [logits, score])


@pytest.fixture(scope="module")
def signature_data():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, VOCAB, (64, STEPS)).astype("int32")
    feats = rng.standard_normal((64, 5)).astype("float32")
    return ids, feats


def cosine(a, b):
    a, b = np.ravel(a).astype("float64"), np.ravel(b).astype("float64")
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_several_inputs_and_outputs_convert_in_every_mode_in_keras_order(signature_data):
    from tfcompress import _litert

    ids, feats = signature_data
    keras.utils.set_random_seed(0)
    model = two_in_two_out("list")
    expected = model.predict([ids, feats], verbose=0)
    for mode in (None, "dynamic", "float16", "int8"):
        flatbuffer = lite.convert(model, mode, representative_data=[ids, feats])
        runtime = _litert.Runtime(flatbuffer)
        assert [(name, d["dtype"]) for name, d in runtime.inputs] == [
            ("zeta_ids", np.int32),
            ("alpha_feats", np.float32),
        ]
        got = lite.predict(flatbuffer, [ids, feats], batch_size=20)
        assert isinstance(got, list) and [g.shape for g in got] == [(64, 3), (64, 1)]
        for g, e in zip(got, expected):
            if mode in (None, "dynamic"):
                np.testing.assert_allclose(g, e, atol=1e-5)
            assert cosine(g, e) >= 0.999
        # By name too, in any order.
        by_name = lite.predict(flatbuffer, {"alpha_feats": feats, "zeta_ids": ids})
        np.testing.assert_array_equal(by_name[0], got[0])
    int8_io = lite.convert(model, "int8", representative_data=[ids, feats], int8_io=True)
    runtime = _litert.Runtime(int8_io)
    assert [d["dtype"] for _, d in runtime.inputs] == [np.int32, np.int8]  # ids stay int32
    assert all(d["dtype"] == np.int8 for _, d in runtime.outputs)
    got = lite.predict(int8_io, [ids, feats])
    assert min(cosine(g, e) for g, e in zip(got, expected)) >= 0.99
    labels = [np.argmax(expected[0], -1), (expected[1][:, 0] > 0.5).astype(int)]
    result = lite.evaluate(int8_io, [ids, feats], labels)
    assert result["num_examples"] == 64 and min(result["accuracy"]) >= 0.9
    assert lite.evaluate(int8_io, [ids, feats], [None, labels[1]])["accuracy"][0] is None


def test_dict_inputs_and_outputs_keep_their_keys(signature_data):
    ids, feats = signature_data
    keras.utils.set_random_seed(0)
    model = two_in_two_out("dict")
    x = {"zeta_ids": ids, "alpha_feats": feats}
    expected = model.predict(x, verbose=0)
    flatbuffer = lite.convert(model, "int8", representative_data=x)
    got = lite.predict(flatbuffer, x)
    assert isinstance(got, dict) and sorted(got) == ["a", "z"]
    assert min(cosine(got[k], expected[k]) for k in got) >= 0.999
    # A list follows Keras' order of a dict: sorted keys.
    np.testing.assert_array_equal(lite.predict(flatbuffer, [feats, ids])["z"], got["z"])
    result = lite.evaluate(flatbuffer, x, {"z": np.argmax(expected["z"], -1)})
    assert result == {"accuracy": {"a": None, "z": pytest.approx(1.0, abs=0.05)}, "num_examples": 64}
    report = tfcompress.summarize(flatbuffer)
    assert report.params > 0 and any(row.dtype == "int8" for row in report.rows)
    assert tfcompress.summarize(model).params == model.count_params()


def test_files_are_compact_and_compute_what_the_full_file_does(monkeypatch):
    """Short tensor names, no converter metadata, no empty buffers: the same outputs, bit for bit."""
    import gzip

    from tfcompress import _flatbuffer

    full_files, original = [], _flatbuffer.rewrite

    def keep_full_copy(data, metadata=None, **kwargs):
        full_files.append(original(data, metadata, **kwargs, compact=False))
        return original(data, metadata, **kwargs)

    monkeypatch.setattr(_flatbuffer, "rewrite", keep_full_copy)
    keras.utils.set_random_seed(0)
    layers = keras.layers
    inputs = keras.Input((8, 8, 1))
    x = layers.ReLU()(layers.BatchNormalization()(layers.Conv2D(8, 3, use_bias=False)(inputs)))
    x = layers.Flatten()(layers.DepthwiseConv2D(3, activation="relu")(x))
    outputs = [layers.Dense(3, name="z_logits")(x), layers.Dense(1, activation="sigmoid", name="a_score")(x)]
    qat = tfcompress.quantize_model(keras.Model(inputs, outputs))
    compact = lite.convert(qat, "int8")
    (full,) = full_files
    _flatbuffer.check_model(compact)
    s = _flatbuffer.schema()
    before, after = (s.ModelT.InitFromObj(s.Model.GetRootAs(f, 0)) for f in (full, compact))
    old_names = [t.name for t in before.subgraphs[0].tensors]
    new_names = [t.name for t in after.subgraphs[0].tensors]
    # Each name is the leading parts of the converter's "a;b;c" name, all distinct.
    assert all(old.startswith(new) for old, new in zip(old_names, new_names))
    assert len(set(new_names)) == len(new_names)
    assert sum(b";" in n for n in old_names) == 7 and sum(b";" in n for n in new_names) == 2
    assert sum(map(len, new_names)) < 0.8 * sum(map(len, old_names))  # 934 of 1,233 B
    # The converter's own metadata is not written, ours is; no description.
    assert [m.name for m in after.metadata] == [b"min_runtime_version", b"tfcompress_io"]
    assert before.description and after.description is None
    # One empty buffer (index 0, the schema's), where the converter wrote one per activation.
    empty = [i for i, b in enumerate(after.buffers) if b.data is None or not len(b.data)]
    assert empty == [0] and len(before.buffers) >= len(after.buffers) + 10
    assert len(compact) <= len(full) - 400  # 5,552 vs 6,016 B
    assert len(gzip.compress(compact)) < len(gzip.compress(full))
    # The same outputs bit for bit, in Keras order; the same report rows.
    x = np.random.default_rng(0).standard_normal((32, 8, 8, 1)).astype("float32")
    got, expected = lite.predict(compact, x), lite.predict(full, x)
    assert [g.shape for g in got] == [(32, 3), (32, 1)]
    for g, e in zip(got, expected):
        np.testing.assert_array_equal(g, e)
    assert np.all((got[1] > 0) & (got[1] < 1))  # the sigmoid head second, as in Keras
    rows = [(r.name, r.params) for r in tfcompress.summarize(compact).rows]
    assert rows == [(r.name, r.params) for r in tfcompress.summarize(full).rows]


def test_token_ids_outside_the_vocabulary_are_refused_not_read(signature_data):
    ids, feats = signature_data
    keras.utils.set_random_seed(0)
    flatbuffer = lite.convert(two_in_two_out("list"))
    with pytest.raises(ValueError, match=r"x\[0\] holds fractions, but the model input 'zeta_ids'"):
        lite.predict(flatbuffer, [ids + 0.5, feats])
    bad = ids.copy()
    bad[0, 0] = VOCAB + 5
    with pytest.raises(ValueError, match=r"LiteRT cannot run .* on these inputs: .*gather index out of bounds"):
        lite.predict(flatbuffer, [bad, feats])


# -- RNNs ----------------------------------------------------------------------------------


def rnn_model(kind, steps=STEPS):
    layers = keras.layers
    keras.utils.set_random_seed(0)
    inputs = keras.Input((steps, 4))
    rnn = {
        "lstm": lambda: layers.LSTM(8),
        "gru": lambda: layers.GRU(8),
        "simple_rnn": lambda: layers.SimpleRNN(8),
        "bidirectional_lstm": lambda: layers.Bidirectional(layers.LSTM(8)),
    }[kind]()
    return keras.Model(inputs, layers.Dense(3)(rnn(inputs)))


def float_op_outputs(flatbuffer):
    """Names of the ops (besides DEQUANTIZE) that write a float32 tensor."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(flatbuffer, 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    found = set()
    for g in range(model.SubgraphsLength()):
        graph = model.Subgraphs(g)
        for o in range(graph.OperatorsLength()):
            op = graph.Operators(o)
            code = model.OperatorCodes(op.OpcodeIndex())
            name = names[max(code.BuiltinCode(), code.DeprecatedBuiltinCode())]
            for i in range(op.OutputsLength()):
                if graph.Tensors(op.Outputs(i)).Type() == schema.TensorType.FLOAT32 and name != "DEQUANTIZE":
                    found.add(name)
    return found


@pytest.mark.parametrize(
    "kind, fused_op",
    [("lstm", True), ("gru", False), ("bidirectional_lstm", True)],
)
def test_rnns_convert_to_builtin_ops_in_every_mode(kind, fused_op):
    from tfcompress import _flatbuffer

    model = rnn_model(kind)
    x = np.random.default_rng(1).standard_normal((48, STEPS, 4)).astype("float32")
    expected = model.predict(x, verbose=0)
    for mode in (None, "dynamic", "int8"):
        flatbuffer = lite.convert(model, mode, representative_data=x)
        ops = _flatbuffer.operator_names(flatbuffer)
        assert "CUSTOM" not in ops and "WHILE" not in ops
        metadata = _flatbuffer.io_metadata(flatbuffer)
        if mode is None:
            assert ("UNIDIRECTIONAL_SEQUENCE_LSTM" in ops) == fused_op
            assert metadata["batch_size"] == (1 if fused_op else None)
            np.testing.assert_allclose(lite.predict(flatbuffer, x), expected, atol=2e-5)
        else:
            assert cosine(lite.predict(flatbuffer, x), expected) >= 0.999
        if mode == "int8":
            assert float_op_outputs(flatbuffer) == set()  # int8 from QUANTIZE to DEQUANTIZE
    # The Keras model is as it was: layers restored, same outputs.
    rnns = [l for l in model.layers if isinstance(l, (keras.layers.RNN, keras.layers.Bidirectional))]
    for layer in rnns:
        for inner in getattr(layer, "forward_layer", None), getattr(layer, "backward_layer", None), layer:
            if isinstance(inner, keras.layers.RNN):
                assert inner.unroll is False and "inner_loop" not in vars(inner)
    np.testing.assert_array_equal(model.predict(x, verbose=0), expected)


def test_fused_lstm_state_does_not_leak_between_examples():
    model = rnn_model("lstm")
    x = np.random.default_rng(2).standard_normal((6, STEPS, 4)).astype("float32")
    flatbuffer = lite.convert(model)
    one_by_one = np.concatenate([lite.predict(flatbuffer, x[i : i + 1]) for i in range(6)])
    np.testing.assert_allclose(lite.predict(flatbuffer, x), one_by_one, atol=1e-6)
    np.testing.assert_allclose(lite.predict(flatbuffer, x[::-1])[::-1], one_by_one, atol=1e-6)


def test_rnn_unroll_keeps_a_free_batch_and_loops_take_any_length():
    from tfcompress import _flatbuffer

    model = rnn_model("lstm")
    x = np.random.default_rng(3).standard_normal((5, STEPS, 4)).astype("float32")
    unrolled = lite.convert(model, rnn="unroll")
    assert "UNIDIRECTIONAL_SEQUENCE_LSTM" not in _flatbuffer.operator_names(unrolled)
    assert _flatbuffer.io_metadata(unrolled)["batch_size"] is None
    np.testing.assert_allclose(lite.predict(unrolled, x), model.predict(x, verbose=0), atol=2e-5)

    any_length = rnn_model("simple_rnn", steps=None)
    looping = lite.convert(any_length)
    assert "WHILE" in _flatbuffer.operator_names(looping)
    for steps in (3, 11):
        x = np.random.default_rng(steps).standard_normal((4, steps, 4)).astype("float32")
        np.testing.assert_allclose(lite.predict(looping, x), any_length.predict(x, verbose=0), atol=2e-5)
    with pytest.raises(ValueError, match=r"int8' needs RNNs over a fixed number of steps, but \['simple_rnn.*'\]"):
        lite.convert(any_length, "int8", representative_data=x)
    with pytest.raises(ValueError, match=r"rnn='unroll' needs a static sequence length"):
        lite.convert(any_length, rnn="unroll")


def test_convert_never_strips_a_subclassed_model_and_fit_keeps_the_zeros(digits):
    (x_train, y_train), (x_test, _) = digits

    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.flat = keras.layers.Flatten()
            self.d = keras.layers.Dense(10)

        def call(self, x, training=None):
            return self.d(self.flat(x), training=training)

    net = Net()
    net(x_train[:1])
    # Masks are updated at steps 0 and 1 only: later training must keep their zeros.
    schedule = tfcompress.ConstantSparsity(0.75, begin_step=0, end_step=1, frequency=1)
    pruned = tfcompress.prune_low_magnitude(net, schedule)
    compile_for_digits(pruned).fit(x_train[:64], y_train[:64], epochs=1, batch_size=32, verbose=0)
    flatbuffer = lite.convert(pruned)
    assert isinstance(pruned.d, tfcompress.PruneLowMagnitude)  # not stripped in place
    np.testing.assert_allclose(lite.predict(flatbuffer, x_test[:8]), pruned.predict(x_test[:8], verbose=0), atol=1e-5)
    pruned.fit(x_train[64:192], y_train[64:192], epochs=1, batch_size=32, verbose=0)
    shipped = pruned.d.shipped_weights()[id(pruned.d.layer.kernel)]
    assert np.mean(shipped == 0) == pytest.approx(0.75, abs=0.01)


def test_qat_lstm_converts_to_int8_unrolled_around_the_float_lstm():
    """QAT leaves the LSTM float; the converter cannot quantize around a fused one."""
    from tfcompress import _flatbuffer

    model = rnn_model("lstm")
    x = np.random.default_rng(1).standard_normal((32, STEPS, 4)).astype("float32")
    with pytest.warns(UserWarning, match=r"Layers \['lstm.*'\] have weights but no quantization config"):
        qat = tfcompress.quantize_model(model)
    flatbuffer = lite.convert(qat, "int8")
    ops = _flatbuffer.operator_names(flatbuffer)
    assert "UNIDIRECTIONAL_SEQUENCE_LSTM" not in ops and "WHILE" not in ops
    assert _flatbuffer.io_metadata(flatbuffer)["rnn"] == {"lstm": "unroll"}
    assert "FULLY_CONNECTED" in ops
    assert cosine(lite.predict(flatbuffer, x), qat.predict(x, verbose=0)) >= 0.99


# -- 16x8: int16 activations, int8 weights ----------------------------------------------


def small_transformer(layer_norm=False):
    """Attention (softmax), GELU MLP, residual adds: ops with 16x8 kernels in LiteRT."""
    layers = keras.layers
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8))
    x = layers.Dense(16)(inputs)
    x = x + layers.MultiHeadAttention(2, 8)(x, x)
    if layer_norm:
        x = layers.LayerNormalization()(x)
    x = x + layers.Dense(16)(layers.Dense(32, activation="gelu")(x))
    return keras.Model(inputs, layers.Dense(4)(layers.GlobalAveragePooling1D()(x)))


def test_int16x8_has_int16_activations_int8_weights_and_agrees_with_keras():
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    model = small_transformer()
    x = np.random.default_rng(0).standard_normal((64, 8, 8)).astype("float32")
    expected = model.predict(x, verbose=0)
    flatbuffer = lite.convert(model, "int16x8", representative_data=x)
    interpreter = Interpreter(
        model_content=flatbuffer,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    tensors = {d["index"]: d for d in interpreter.get_tensor_details()}
    dtype = lambda i: tensors[i]["dtype"]  # noqa: E731
    ops = interpreter._get_ops_details()
    names = [op["op_name"] for op in ops]
    for kind, count in (("FULLY_CONNECTED", 8), ("BATCH_MATMUL", 2), ("SOFTMAX", 1), ("GELU", 1)):
        assert names.count(kind) == count, (kind, names)
    for op in ops:
        if op["op_name"] == "FULLY_CONNECTED":
            activation, kernel = op["inputs"][:2]
            assert (dtype(activation), dtype(kernel), dtype(op["outputs"][0])) == (np.int16, np.int8, np.int16)
        if op["op_name"] in ("BATCH_MATMUL", "SOFTMAX", "GELU", "ADD", "MEAN"):
            assert {dtype(i) for i in list(op["inputs"]) + list(op["outputs"]) if dtype(i) != np.int32} == {np.int16}
    # Float only at the edges: the QUANTIZE of the input and DEQUANTIZE of the output.
    assert [op["op_name"] for op in ops if any(dtype(i) == np.float32 for i in op["outputs"])] == ["DEQUANTIZE"]
    got = lite.predict(flatbuffer, x)
    assert cosine(got, expected) >= 0.9999
    # int16 activations: a quarter of int8's largest error (0.012 vs 0.047; the
    # rest is the int8 weights'), same model and calibration.
    int8 = lite.predict(lite.convert(model, "int8", representative_data=x), x)
    assert np.abs(got - expected).max() < 0.5 * np.abs(int8 - expected).max()


def test_post_training_modes_convert_layer_normalization_as_ops_with_integer_kernels():
    model = small_transformer(layer_norm=True)
    norm = next(layer for layer in model.layers if isinstance(layer, keras.layers.LayerNormalization))
    norm.set_weights([np.linspace(0.5, 1.5, 16, dtype="float32"), np.full(16, 0.1, "float32")])
    x = np.random.default_rng(0).standard_normal((64, 8, 8)).astype("float32")
    flatbuffer = lite.convert(model, "int16x8", representative_data=x)
    ops = zoo.tflite_ops(flatbuffer)
    assert "SQUARED_DIFFERENCE" not in ops and ops.count("RSQRT") == 1
    assert zoo.float_ops_and_tensors(flatbuffer) == ([], [])
    assert cosine(lite.predict(flatbuffer, x), model.predict(x, verbose=0)) >= 0.9999
    # Post-training int8 too: full integer (the converter's lowering leaves a float NEG).
    int8 = lite.convert(model, "int8", representative_data=x)
    assert zoo.float_ops_and_tensors(int8) == ([], [])
    assert cosine(lite.predict(int8, x), model.predict(x, verbose=0)) >= 0.99
    # The caller's model keeps its layer; only the converted copy is rewritten.
    assert type(model.get_layer(norm.name)) is keras.layers.LayerNormalization


def test_layer_norm_as_tflite_ops_reloads_and_refuses_a_one_op_layer(tmp_path):
    from tfcompress.quantization.kernels import AsTFLiteOps

    norm = keras.layers.LayerNormalization(name="norm")
    model = keras.Sequential([keras.Input((3, 8)), AsTFLiteOps(norm)])
    norm.set_weights([np.linspace(0.5, 1.5, 8, dtype="float32"), np.full(8, 0.1, "float32")])
    x = np.random.default_rng(0).standard_normal((4, 3, 8)).astype("float32")
    np.testing.assert_allclose(model.predict(x, verbose=0), norm(x), atol=1e-5)
    model.save(tmp_path / "ops.keras")
    reloaded = keras.saving.load_model(tmp_path / "ops.keras")
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), norm(x), atol=1e-5)
    with pytest.raises(ValueError, match=r"AsTFLiteOps needs a layer TFLite runs as several ops.*"
                       r"Received: layer='relu' of type ReLU"):
        AsTFLiteOps(keras.layers.ReLU(name="relu"))


def test_int16x8_refuses_what_litert_cannot_run():
    inputs = keras.Input((8, 16))
    h = keras.layers.Dense(16)(inputs)
    squares = keras.ops.square(h - keras.ops.mean(h, axis=-1, keepdims=True))
    model = keras.Model(inputs, keras.layers.Dense(4)(squares))
    x = np.random.default_rng(0).standard_normal((16, 8, 16)).astype("float32")
    with pytest.raises(ValueError, match=r"quantization='int16x8' converted model '.*', but LiteRT cannot "
                       r"run the result \(SquaredDifference only supports FLOAT32 and INT32"):
        lite.convert(model, "int16x8", representative_data=x)

"""Bad input never crashes and never silently gives a wrong answer (issue 11).

One table per module: each row calls the public API (or the CLI) with one bad
or edge input and states the error type and the words of its message, or the
exact result. Tiny models; the flatbuffers are converted once per session.
"""

import functools
import os
import re
import zipfile

import keras
import numpy as np
import pytest

import tfcompress
from tfcompress import cli, datasets, lite, report
from tfcompress.pruning import masks
from tfcompress.quantization import ActivationQuantizer, WeightQuantizer

L = keras.layers
NAN, INF = float("nan"), float("inf")


# -- tiny models and files, built once -----------------------------------------


def dense_model(inputs=4, units=3, activation=None):
    return keras.Sequential([keras.Input((inputs,)), L.Dense(units, activation=activation)])


def small_cnn():
    return keras.Sequential(
        [keras.Input((6, 6, 1)), L.Conv2D(4, 3), L.Flatten(), L.Dense(10, name="logits")]
    )


def unbuilt():
    return keras.Sequential([L.Dense(2)])


def with_weight(model, value):
    """`model` with one kernel entry set to `value` (NaN: training diverged)."""
    weights = model.layers[0].get_weights()
    weights[0].flat[0] = value
    model.layers[0].set_weights(weights)
    return model


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.d = L.Dense(2)

    def call(self, x):
        return self.d(x)


@functools.cache
def rng_data():
    rng = np.random.default_rng(0)
    return rng.random((40, 6, 6, 1)).astype("float32"), rng.integers(0, 10, 40)


@functools.cache
def cnn_file():
    keras.utils.set_random_seed(1)
    return lite.convert(small_cnn())


@functools.cache
def binary_files():
    """A one-unit sigmoid head and the same head without the sigmoid (logits)."""
    w, b = np.array([[1.0], [-1.0], [2.0], [0.5]]), np.array([-0.6])
    files = []
    for activation in ("sigmoid", None):
        model = dense_model(4, 1, activation)
        model.layers[0].set_weights([w, b])
        files.append((model, lite.convert(model)))
    x = np.random.default_rng(2).random((300, 4)).astype("float32") - 0.2
    return files, x


def patched(data, field):
    """`data` with the scale or zero point of its first int8 activation broken."""
    from ai_edge_litert import schema_py_generated as schema

    graph = schema.Model.GetRootAs(data, 0).Subgraphs(0)
    for t in range(graph.TensorsLength()):
        tensor = graph.Tensors(t)
        quant = tensor.Quantization()
        if tensor.Type() == schema.TensorType.INT8 and quant and quant.ScaleLength() == 1:
            # Vtable slots of QuantizationParameters: min 4, max 6, scale 8, zero_point 10.
            slot, value = (8, np.float32(-0.5)) if field == "scale" else (10, np.int64(-16512))
            position = quant._tab.Vector(quant._tab.Offset(slot))
            broken = bytearray(data)
            broken[position : position + value.nbytes] = value.tobytes()
            return bytes(broken)
    raise AssertionError("no int8 tensor")


@functools.cache
def int8_file():
    x, _ = rng_data()
    keras.utils.set_random_seed(1)
    return lite.convert(small_cnn(), "int8", representative_data=x[:20])


def buffer_size_mismatch(data):
    """A float constant whose shape claims one more row than its buffer holds."""
    from ai_edge_litert import schema_py_generated as schema

    graph = schema.Model.GetRootAs(data, 0).Subgraphs(0)
    for t in range(graph.TensorsLength()):
        tensor = graph.Tensors(t)
        if tensor.Buffer() and tensor.ShapeLength() == 2:
            position = tensor._tab.Vector(tensor._tab.Offset(4))  # shape[0]
            broken = bytearray(data)
            broken[position : position + 4] = np.int32(tensor.Shape(0) + 1).tobytes()
            return bytes(broken)
    raise AssertionError("no 2-D constant")


def nan_weights(data):
    """The Dense kernel of a float file filled with NaN (a diverged model converted as is)."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(data, 0)
    graph = model.Subgraphs(0)
    for t in range(graph.TensorsLength()):
        tensor = graph.Tensors(t)
        if tensor.Buffer() and tensor.ShapeLength() == 2 and tensor.Type() == schema.TensorType.FLOAT32:
            buffer = model.Buffers(tensor.Buffer())
            start = buffer._tab.Vector(buffer._tab.Offset(4))
            broken = bytearray(data)
            broken[start : start + 4 * buffer.DataLength() // 4] = np.full(buffer.DataLength() // 4, np.nan, "float32").tobytes()
            return bytes(broken)
    raise AssertionError("no 2-D float constant")


def missing_filter(data):
    """The first CONV_2D with its filter input index set to -1 ("left out")."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(data, 0)
    graph = model.Subgraphs(0)
    for o in range(graph.OperatorsLength()):
        op = graph.Operators(o)
        if model.OperatorCodes(op.OpcodeIndex()).BuiltinCode() == schema.BuiltinOperator.CONV_2D:
            position = op._tab.Vector(op._tab.Offset(6)) + 4  # inputs[1]
            broken = bytearray(data)
            broken[position : position + 4] = np.int32(-1).tobytes()
            return bytes(broken)
    raise AssertionError("no CONV_2D")


@pytest.fixture(autouse=True)
def _seed():
    """Overrides conftest's: these tiny models need no session clearing (1 s a test)."""
    keras.utils.set_random_seed(0)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Paths of good and broken files."""
    folder = tmp_path_factory.mktemp("bad_input")
    paths = {}

    def write(name, data):
        path = folder / name
        path.write_bytes(data)
        paths[name] = str(path)

    good = cnn_file()
    write("model.tflite", good)
    write("truncated.tflite", good[: len(good) // 2])
    write("header_junk.tflite", good[:8] + bytes(range(256)) * 4)
    write("zero_point.tflite", patched(int8_file(), "zero_point"))
    write("scale.tflite", patched(int8_file(), "scale"))
    write("buffer.tflite", buffer_size_mismatch(good))
    write("no_filter.tflite", missing_filter(good))
    write("nan_weights.tflite", nan_weights(good))
    write("empty.tflite", b"")
    write("model.txt", good)
    keras_path = folder / "model.keras"
    keras.utils.set_random_seed(1)
    small_cnn().save(keras_path)
    paths["model.keras"] = str(keras_path)
    whole = keras_path.read_bytes()
    write("truncated.keras", whole[: len(whole) // 2])
    with zipfile.ZipFile(folder / "noconfig.keras", "w") as archive:
        archive.writestr("metadata.json", "{}")
    paths["noconfig.keras"] = str(folder / "noconfig.keras")
    with zipfile.ZipFile(folder / "badjson.keras", "w") as archive:
        archive.writestr("config.json", "{not json")
        archive.writestr("metadata.json", "{}")
    paths["badjson.keras"] = str(folder / "badjson.keras")
    x, _ = rng_data()
    for name, array in {
        "calib.npy": x[:8],
        "calib_inf.npy": np.where(np.arange(x[:8].size).reshape(x[:8].shape) == 5, np.inf, x[:8]),
        "calib_nan.npy": np.full((4, 6, 6, 1), np.nan, "float32"),
        "calib_shape.npy": np.zeros((4, 28, 28, 1), "float32"),
        "calib_empty.npy": np.zeros((0, 6, 6, 1), "float32"),
        "calib_str.npy": np.array([["a", "b"]]),
    }.items():
        np.save(folder / name, array)
        paths[name] = str(folder / name)
    write("calib_junk.npy", b"\x93NUMPY junk")
    paths["dir"] = str(folder)
    paths["missing"] = str(folder / "missing.tflite")
    return paths


# -- the tables ------------------------------------------------------------------
# Each row: (id, call, expected exception type, regex of its message).

SCHEDULES = [
    ("constant_1.0", lambda: tfcompress.ConstantSparsity(1.0, 0), ValueError, r"target_sparsity must be in \[0, 1\). Received: target_sparsity=1.0"),
    ("constant_negative", lambda: tfcompress.ConstantSparsity(-0.1, 0), ValueError, r"Received: target_sparsity=-0.1"),
    ("constant_nan", lambda: tfcompress.ConstantSparsity(NAN, 0), ValueError, r"target_sparsity=nan"),
    ("constant_str", lambda: tfcompress.ConstantSparsity("0.5", 0), ValueError, r"target_sparsity='0.5'"),
    ("constant_begin_negative", lambda: tfcompress.ConstantSparsity(0.5, -1), ValueError, r"begin_step must be >= 0. Received: begin_step=-1"),
    ("constant_begin_float", lambda: tfcompress.ConstantSparsity(0.5, 1.5), ValueError, r"begin_step must be an integer. Received: begin_step=1.5"),
    ("constant_begin_bool", lambda: tfcompress.ConstantSparsity(0.5, True), ValueError, r"begin_step must be an integer. Received: begin_step=True"),
    ("constant_frequency_0", lambda: tfcompress.ConstantSparsity(0.5, 0, frequency=0), ValueError, r"frequency must be >= 1. Received: frequency=0"),
    ("constant_end_before_begin", lambda: tfcompress.ConstantSparsity(0.5, 10, end_step=5), ValueError, r"end_step must be >= begin_step.*end_step=5, begin_step=10"),
    ("poly_power_nan", lambda: tfcompress.PolynomialDecay(0.0, 0.5, 0, 10, power=NAN), ValueError, r"power must be a number > 0. Received: power=nan"),
    ("poly_power_inf", lambda: tfcompress.PolynomialDecay(0.0, 0.5, 0, 10, power=INF), ValueError, r"power must be a number > 0. Received: power=inf"),
    ("poly_power_0", lambda: tfcompress.PolynomialDecay(0.0, 0.5, 0, 10, power=0), ValueError, r"power must be a number > 0. Received: power=0"),
    ("poly_power_negative", lambda: tfcompress.PolynomialDecay(0.0, 0.5, 0, 10, power=-2), ValueError, r"power must be a number > 0. Received: power=-2"),
    ("poly_power_str", lambda: tfcompress.PolynomialDecay(0.0, 0.5, 0, 10, power="3"), ValueError, r"power must be a number > 0. Received: power='3'"),
    ("poly_decreasing", lambda: tfcompress.PolynomialDecay(0.8, 0.2, 0, 10), ValueError, r"final_sparsity must be >= initial_sparsity.*initial_sparsity=0.8, final_sparsity=0.2"),
    ("poly_no_end", lambda: tfcompress.PolynomialDecay(0.0, 0.5, 0, -1), ValueError, r"needs an end_step.*end_step=-1"),
    ("poly_final_1", lambda: tfcompress.PolynomialDecay(0.0, 1.0, 0, 10), ValueError, r"final_sparsity must be in \[0, 1\). Received: final_sparsity=1.0"),
    ("poly_end_float", lambda: tfcompress.PolynomialDecay(0.0, 0.5, 0, 10.0), ValueError, r"end_step must be an integer. Received: end_step=10.0"),
]

MASKS = [
    ("block_zero", lambda: masks.block_mask(np.ones((4, 4), "float32"), 0.5, (0, 2)), ValueError, r"block_size must be a pair of integers >= 1. Received: block_size=\(0, 2\)"),
    ("block_pooling", lambda: masks.block_mask(np.ones((4, 4), "float32"), 0.5, (2, 2), "MEAN"), ValueError, r"pooling must be one of \['AVG', 'MAX'\]. Received: pooling='MEAN'"),
    ("block_rank_1", lambda: masks.block_mask(np.ones((4,), "float32"), 0.5, (2, 2)), ValueError, r"rank >= 2. Received shape \(4,\)"),
    ("m_by_n_m_ge_n", lambda: masks.m_by_n_mask(np.ones((4, 2), "float32"), 4, 4), ValueError, r"0 < m < n.*m=4, n=4"),
    ("m_by_n_not_multiple", lambda: masks.m_by_n_mask(np.ones((6, 2), "float32"), 2, 4), ValueError, r"multiple of n.*weight shape \(6, 2\)"),
    ("m_by_n_float", lambda: masks.m_by_n_mask(np.ones((4, 2), "float32"), 1.0, 4), ValueError, r"m must be an integer. Received: m=1.0"),
]

PRUNING = [
    ("block_covers_kernel", lambda: tfcompress.prune_low_magnitude(dense_model(4, 3), block_size=(8, 8)), ValueError, r"block_size=\(8, 8\) covers the whole weight 'kernel' of layer 'dense.*' \(a 4x3 matrix\)"),
    ("block_equals_kernel", lambda: tfcompress.prune_low_magnitude(dense_model(4, 3), block_size=(4, 3)), ValueError, r"covers the whole weight"),
    ("block_zero", lambda: tfcompress.prune_low_magnitude(dense_model(), block_size=(0, 2)), ValueError, r"block_size must be a pair of integers >= 1. Received: block_size=\(0, 2\)"),
    ("block_one_number", lambda: tfcompress.prune_low_magnitude(dense_model(), block_size=(2,)), ValueError, r"Received: block_size=\(2,\)"),
    ("block_float", lambda: tfcompress.prune_low_magnitude(dense_model(), block_size=(1.5, 2)), ValueError, r"Received: block_size=\(1.5, 2\)"),
    ("pooling", lambda: tfcompress.prune_low_magnitude(dense_model(), block_pooling_type="MEAN"), ValueError, r"block_pooling_type must be one of \['AVG', 'MAX'\]. Received: block_pooling_type='MEAN'"),
    ("m_by_n_reversed", lambda: tfcompress.prune_low_magnitude(dense_model(8), sparsity_m_by_n=(4, 2)), ValueError, r"0 < m < n. Received: sparsity_m_by_n=\(4, 2\)"),
    ("m_by_n_shape", lambda: tfcompress.prune_low_magnitude(dense_model(6), sparsity_m_by_n=(2, 4)), ValueError, r"cannot take 2:4 sparsity.*6 input channels, not a multiple of 4"),
    ("m_by_n_and_block", lambda: tfcompress.prune_low_magnitude(dense_model(8), sparsity_m_by_n=(2, 4), block_size=(2, 2)), ValueError, r"sparsity_m_by_n and block_size cannot be combined"),
    ("m_by_n_single", lambda: tfcompress.prune_low_magnitude(dense_model(8), sparsity_m_by_n=4), ValueError, r"pair \(m, n\).*Received: sparsity_m_by_n=4"),
    ("schedule_number", lambda: tfcompress.prune_low_magnitude(dense_model(), 0.5), ValueError, r"pruning_schedule must be a PruningSchedule.*Received: pruning_schedule=0.5"),
    ("schedule_empty_dict", lambda: tfcompress.prune_low_magnitude(dense_model(), {}), ValueError, r"non-empty dict.*Received: pruning_schedule=\{\}"),
    ("schedule_unknown_layer", lambda: tfcompress.prune_low_magnitude(dense_model(), {"nope": tfcompress.ConstantSparsity(0.5, 0)}), ValueError, r"names layers that model '.*' does not have: \['nope'\]"),
    ("schedule_key_int", lambda: tfcompress.prune_low_magnitude(dense_model(), {3: tfcompress.ConstantSparsity(0.5, 0)}), ValueError, r"keys must be layer names \(str\) or None. Received: key 3"),
    ("unbuilt", lambda: tfcompress.prune_low_magnitude(unbuilt()), ValueError, r"is not built"),
    ("not_a_model", lambda: tfcompress.prune_low_magnitude(42), TypeError, r"to_prune must be a keras.Model.*Received: to_prune=42"),
    ("empty_list", lambda: tfcompress.prune_low_magnitude([]), TypeError, r"non-empty list"),
    ("unknown_kwarg", lambda: tfcompress.prune_low_magnitude(dense_model(), sparsity=0.5), TypeError, r"Unexpected keyword argument\(s\): \['sparsity'\]"),
    ("clustered_not_stripped", lambda: tfcompress.prune_low_magnitude(tfcompress.cluster_weights(dense_model(), 2)), ValueError, r"already wrapped by ClusterWeights.*strip_clustering"),
    ("unsupported_layer", lambda: tfcompress.prune_low_magnitude(L.BatchNormalization()), ValueError, r"is not supported by pruning"),
    ("summaries_update_freq", lambda: tfcompress.PruningSummaries(update_freq="daily"), ValueError, r'update_freq must be "epoch" or an integer >= 1. Received: update_freq=\'daily\''),
    ("summaries_update_freq_0", lambda: tfcompress.PruningSummaries(update_freq=np.int64(0)), ValueError, r"Received: update_freq=np.int64\(0\)"),
]

CLUSTERING = [
    ("k_1", lambda: tfcompress.cluster_weights(dense_model(), 1), ValueError, r"number_of_clusters must be >= 2. Received: number_of_clusters=1"),
    ("k_float", lambda: tfcompress.cluster_weights(dense_model(), 2.5), ValueError, r"number_of_clusters must be an integer. Received: number_of_clusters=2.5"),
    ("k_bool", lambda: tfcompress.cluster_weights(dense_model(), True), ValueError, r"number_of_clusters=True"),
    ("k_more_than_weights", lambda: tfcompress.cluster_weights(dense_model(2, 2), 1000), ValueError, r"number_of_clusters=1000 is more than the 4 values of weight '.*kernel' of layer 'dense.*'"),
    ("k_dict_more_than_weights", lambda: tfcompress.cluster_weights(keras.Sequential([keras.Input((2,)), L.Dense(2, name="d")]), {"d": 5}), ValueError, r"number_of_clusters=5 is more than the 4 values"),
    ("init", lambda: tfcompress.cluster_weights(dense_model(), 2, cluster_centroids_init="kmeans"), ValueError, r"cluster_centroids_init must be one of .*Received: cluster_centroids_init='kmeans'"),
    ("preserve_no", lambda: tfcompress.cluster_weights(dense_model(), 2, preserve_sparsity="no"), ValueError, r"preserve_sparsity must be True or False. Received: preserve_sparsity='no'"),
    ("preserve_1", lambda: tfcompress.cluster_weights(dense_model(), 2, preserve_sparsity=1), ValueError, r"preserve_sparsity=1"),
    ("pruned_not_stripped", lambda: tfcompress.cluster_weights(tfcompress.prune_low_magnitude(dense_model()), 2), ValueError, r"already wrapped by PruneLowMagnitude \(pruning\); clustering cannot wrap it too: call tfcompress.strip_pruning\(model\) first"),
    ("unbuilt", lambda: tfcompress.cluster_weights(unbuilt(), 2), ValueError, r"is not built"),
    ("not_a_model", lambda: tfcompress.cluster_weights("model.keras", 2), TypeError, r"to_cluster='model.keras'"),
    ("dict_key", lambda: tfcompress.cluster_weights(dense_model(), {("a",): 2}), ValueError, r"keys must be layer names"),
    ("init_k", lambda: tfcompress.clustering.init_centroids(np.ones(4), 1), ValueError, r"number_of_clusters must be >= 2"),
    ("nan_weight", lambda: tfcompress.cluster_weights(with_weight(dense_model(), NAN), 2), ValueError, r"Cannot cluster weight '.*kernel' of layer 'dense.*': it holds NaN or infinity"),
]

QUANTIZATION = [
    ("unbuilt", lambda: tfcompress.quantize_model(unbuilt()), ValueError, r"Model 'sequential.*' is not built"),
    ("subclassed", lambda: tfcompress.quantize_model(Subclassed()), ValueError, r"needs a Sequential or functional model"),
    ("not_a_model", lambda: tfcompress.quantize_model(42), TypeError, r"quantize_model expects a keras.Model. Received: model=42"),
    ("preserve_sparsity_str", lambda: tfcompress.quantize_model(dense_model(), preserve_sparsity="yes"), ValueError, r"preserve_sparsity must be True or False. Received: preserve_sparsity='yes'"),
    ("preserve_clusters_1", lambda: tfcompress.quantize_model(dense_model(), preserve_clusters=1), ValueError, r"preserve_clusters must be True or False. Received: preserve_clusters=1"),
    ("apply_unannotated", lambda: tfcompress.quantize_apply(dense_model()), ValueError, r"has no annotated layers"),
    ("annotate_unbuilt", lambda: tfcompress.quantize_annotate_model(unbuilt()), ValueError, r"is not built"),
    ("weight_bits_1", lambda: WeightQuantizer(num_bits=1), ValueError, r"num_bits must be >= 2. Received: num_bits=1"),
    ("weight_axes_positive", lambda: WeightQuantizer(channel_axes=(0,)), ValueError, r"trailing negative axes.*channel_axes=\(0,\)"),
    ("weight_axes_float", lambda: WeightQuantizer(channel_axes=(-1.5,)), ValueError, r"channel_axes must be an integer. Received: channel_axes=-1.5"),
    ("ema_1", lambda: ActivationQuantizer(ema_decay=1.0), ValueError, r"ema_decay must be in \[0, 1\). Received: ema_decay=1.0"),
    ("ema_nan", lambda: ActivationQuantizer(ema_decay=NAN), ValueError, r"ema_decay=nan"),
    ("ema_str", lambda: ActivationQuantizer(ema_decay="0.9"), ValueError, r"ema_decay='0.9'"),
    ("range_inf", lambda: ActivationQuantizer(fixed_range=(0.0, INF)), ValueError, r"fixed_range must be a finite number. Received: fixed_range=inf"),
    ("range_without_zero", lambda: ActivationQuantizer(fixed_range=(1.0, 2.0)), ValueError, r"min <= 0 <= max.*fixed_range=\(1.0, 2.0\)"),
    ("range_three", lambda: ActivationQuantizer(fixed_range=(0, 1, 2)), ValueError, r"pair \(min, max\). Received: fixed_range=\(0, 1, 2\)"),
]

def _distiller(student=None, teacher=None, **compile_args):
    distiller = tfcompress.Distiller(student or dense_model(4, 3), teacher or dense_model(4, 3))
    if compile_args:
        distiller.compile(**compile_args)
    return distiller


def _teacher_fed_the_students_input():
    """A subclassed student (input shape unknown until called) that reads 5 features."""
    distiller = tfcompress.Distiller(Subclassed(), dense_model(4, 2))
    distiller.compile(temperature=2.0)
    x = np.ones((2, 5), "float32")
    return distiller.compute_loss(x=x, y=None, y_pred=distiller.student(x))


DISTILLATION = [
    ("student_not_a_model", lambda: tfcompress.Distiller(42, dense_model()), TypeError, r"student must be a keras.Model. Received: student=42"),
    ("teacher_unbuilt", lambda: tfcompress.Distiller(dense_model(), unbuilt()), ValueError, r"teacher must be a built"),
    ("input_shapes", lambda: _distiller(student=dense_model(5, 3)), ValueError, r"teacher and student must take the same inputs.*teacher 'sequential.*' with input shape\(s\) \[\(None, 4\)\], student 'sequential.*' with input shape\(s\) \[\(None, 5\)\]"),
    ("output_shapes", lambda: _distiller(student=dense_model(4, 5)), ValueError, r"teacher output shape \(None, 3\), student output shape \(None, 5\)"),
    ("teacher_softmax", lambda: _distiller(teacher=dense_model(4, 3, "softmax")), ValueError, r"output logits.*teacher"),
    ("alpha", lambda: _distiller(alpha=1.5), ValueError, r"alpha must be in \[0, 1\]. Received: alpha=1.5"),
    ("temperature_0", lambda: _distiller(temperature=0), ValueError, r"temperature must be > 0. Received: temperature=0"),
    ("temperature_nan", lambda: _distiller(temperature=NAN), ValueError, r"temperature must be a finite number. Received: temperature=nan"),
    ("temperature_str", lambda: _distiller(temperature="3"), ValueError, r"temperature must be a number. Received: temperature='3'"),
    ("loss_argument", lambda: _distiller(loss="mse"), TypeError, r"instead of `loss`"),
    ("teacher_call", _teacher_fed_the_students_input, ValueError, r"The teacher 'sequential.*' cannot take the student's input \[\(2, 5\)\]"),
]

DATASETS = [
    ("fraction_0", lambda: datasets.load_digits(test_fraction=0), ValueError, r"test_fraction must be in \(0, 1\). Received: test_fraction=0"),
    ("fraction_1.5", lambda: datasets.load_digits(test_fraction=1.5), ValueError, r"Received: test_fraction=1.5"),
    ("fraction_str", lambda: datasets.load_digits(test_fraction="0.3"), ValueError, r"test_fraction must be a number. Received: test_fraction='0.3'"),
    ("fraction_nan", lambda: datasets.load_digits(test_fraction=NAN), ValueError, r"test_fraction must be a finite number"),
    ("seed_negative", lambda: datasets.load_digits(seed=-1), ValueError, r"seed must be >= 0. Received: seed=-1"),
]

# Rows of the file tables take the `files` fixture's paths.
REPORT = [
    ("not_a_model", lambda f: report.summarize(42), TypeError, r"summarize expects a keras.Model.*Received: obj=42"),
    ("junk_bytes", lambda f: report.summarize(b"definitely not a flatbuffer"), ValueError, r"obj \(27 bytes\) is not a TFLite model \(missing the 'TFL3' identifier"),
    ("empty_bytes", lambda f: report.summarize(b""), ValueError, r"obj \(0 bytes\) is not a TFLite model"),
    ("header_then_junk", lambda f: report.summarize(f["header_junk.tflite"]), ValueError, r"header_junk.tflite is not a valid TFLite model"),
    ("truncated", lambda f: report.summarize(f["truncated.tflite"]), ValueError, r"truncated.tflite is not a valid TFLite model: truncated or corrupted \(struct.error"),
    ("zero_point", lambda f: report.summarize(f["zero_point.tflite"]), ValueError, r"zero_point.tflite is not a valid TFLite model: tensor \d+ of subgraph 0 \(INT8\) has zero points outside \[-128, 127\]: \[-16512\]"),
    ("negative_scale", lambda f: report.summarize(f["scale.tflite"]), ValueError, r"quantization scales that are not finite and > 0: \[-0.5\]"),
    ("buffer_size", lambda f: report.summarize(f["buffer.tflite"]), ValueError, r"needs \d+ bytes of data but its buffer holds \d+"),
    ("missing_filter", lambda f: report.summarize(f["no_filter.tflite"]), ValueError, r"operator 0 \(CONV_2D\) of subgraph 0 input 1 refers to index -1, outside \[0, \d+\)"),
    ("missing", lambda f: report.summarize(f["missing"]), FileNotFoundError, r"No such file. Received: obj='.*missing.tflite'"),
    ("directory", lambda f: report.summarize(f["dir"]), ValueError, r"obj must be a file, not a directory"),
    ("truncated_keras", lambda f: report.summarize(f["truncated.keras"]), ValueError, r"truncated.keras is not a .keras model: the file is not a zip archive"),
    ("keras_without_config", lambda f: report.summarize(f["noconfig.keras"]), ValueError, r"noconfig.keras is not a complete .keras archive \(no config.json\)"),
    ("keras_bad_json", lambda f: report.summarize(f["badjson.keras"]), ValueError, r"badjson.keras could not be loaded as a Keras model: JSONDecodeError"),
    ("unbuilt_model", lambda f: report.summarize(Subclassed()), ValueError, r"is not built, so it has no weights to report"),
    ("tflite_weights_junk", lambda f: report.tflite_weights(b"\x1c\x00\x00\x00TFL3" + bytes(40)), ValueError, r"data \(48 bytes\) is not a valid TFLite model"),
    ("summaries_min_rank", lambda f: report.CompressionSummaries(min_rank=-1), ValueError, r"min_rank must be >= 0. Received: min_rank=-1"),
]

LITE_CONVERT = [
    ("not_a_model", lambda: lite.convert(42), TypeError, r"convert expects a keras.Model. Received: model=42"),
    ("mode", lambda: lite.convert(dense_model(), "int4"), ValueError, r"quantization must be one of \[None, 'dynamic', 'float16', 'int16x8', 'int8'\]. Received: quantization='int4'"),
    ("int8_io_str", lambda: lite.convert(dense_model(), "int8", int8_io="yes"), ValueError, r"int8_io must be True or False. Received: int8_io='yes'"),
    ("int8_io_dynamic", lambda: lite.convert(dense_model(), "dynamic", int8_io=True), ValueError, r"int8_io=True needs quantization='int8'"),
    ("int8_without_data", lambda: lite.convert(dense_model(), "int8"), ValueError, r"needs representative_data"),
    ("int16x8_without_data", lambda: lite.convert(dense_model(), "int16x8"), ValueError, r"quantization='int16x8' on a float model is post-training quantization and needs representative_data"),
    ("int16x8_of_qat", lambda: lite.convert(tfcompress.quantize_model(dense_model()), "int16x8", representative_data=np.zeros((4, 4))), ValueError, r"quantization='int16x8' is post-training quantization of a float model, but model '.*' is a QAT model whose learned ranges are int8"),
    ("int16x8_int8_io", lambda: lite.convert(dense_model(), "int16x8", representative_data=np.zeros((4, 4)), int8_io=True), ValueError, r"int8_io=True needs quantization='int8'.*Received: quantization='int16x8'"),
    ("calibration_inf", lambda: lite.convert(dense_model(), "int8", representative_data=np.array([[0.0, 1.0, INF, 2.0]] * 4)), ValueError, r"representative_data holds 4 non-finite value\(s\) \(NaN or infinity\)"),
    ("calibration_nan_in_batches", lambda: lite.convert(dense_model(), "int8", representative_data=[np.zeros((2, 4)), np.full((2, 4), NAN)]), ValueError, r"representative_data holds 8 non-finite value\(s\)"),
    ("calibration_shape", lambda: lite.convert(dense_model(), "int8", representative_data=np.zeros((4, 5))), ValueError, r"representative_data has shape \(4, 5\), but the model input '.*' takes \(batch, 4\) float32"),
    ("calibration_rank", lambda: lite.convert(dense_model(), "int8", representative_data=np.zeros((4, 4, 1))), ValueError, r"representative_data has shape \(4, 4, 1\)"),
    ("calibration_empty", lambda: lite.convert(dense_model(), "int8", representative_data=np.zeros((0, 4))), ValueError, r"representative_data holds no examples"),
    ("calibration_no_batches", lambda: lite.convert(dense_model(), "int8", representative_data=[]), ValueError, r"representative_data is empty"),
    ("calibration_strings", lambda: lite.convert(dense_model(), "int8", representative_data=np.array([["a"] * 4])), ValueError, r"representative_data must hold numbers.*dtype <U1"),
    ("calibration_number", lambda: lite.convert(dense_model(), "int8", representative_data=3), ValueError, r"representative_data must be an array of inputs, or an iterable of batches. Received: a int"),
    ("unbuilt", lambda: lite.convert(unbuilt()), ValueError, r"is not built"),
    ("output_path", lambda: lite.convert(dense_model(), output_path=42), TypeError, r"output_path must be a file path or None. Received: output_path=42"),
    ("subclassed_unbuilt", lambda: lite.convert(Subclassed()), ValueError, r"Cannot tell the input shape of subclassed model"),
    ("nan_weight", lambda: lite.convert(with_weight(dense_model(), NAN)), ValueError, r"Cannot convert: model 'sequential.*' has weights holding NaN or infinity \(did training diverge\?\): sequential.*/dense.*/kernel \(1 values\)"),
    ("inf_weight_int8", lambda: lite.convert(with_weight(dense_model(), INF), "int8", representative_data=np.ones((2, 4))), ValueError, r"has weights holding NaN or infinity"),
]

LITE_RUN = [
    ("tflite_int", lambda f, x: lite.predict(123, x), TypeError, r"tflite must be the flatbuffer bytes or a .tflite path. Received: tflite=123"),
    ("missing_file", lambda f, x: lite.predict(f["missing"], x), FileNotFoundError, r"No such file"),
    ("truncated_bytes", lambda f, x: lite.predict(cnn_file()[:500], x), ValueError, r"tflite \(500 bytes\) is not a valid TFLite model: truncated or corrupted"),
    ("header_junk", lambda f, x: lite.predict(f["header_junk.tflite"], x), ValueError, r"is not a valid TFLite model"),
    ("empty_file", lambda f, x: lite.predict(f["empty.tflite"], x), ValueError, r"empty.tflite is not a TFLite model \(missing the 'TFL3' identifier"),
    ("zero_point", lambda f, x: lite.predict(f["zero_point.tflite"], x), ValueError, r"zero points outside \[-128, 127\]"),
    ("scale", lambda f, x: lite.predict(f["scale.tflite"], x), ValueError, r"scales that are not finite and > 0"),
    ("missing_filter", lambda f, x: lite.predict(f["no_filter.tflite"], x), ValueError, r"\(CONV_2D\) of subgraph 0 input 1 refers to index -1"),
    ("wrong_shape", lambda f, x: lite.predict(cnn_file(), x[:, :5]), ValueError, r"x has shape \(40, 5, 6, 1\), but the model input '.*' takes \(batch, 6, 6, 1\) float32"),
    ("wrong_rank", lambda f, x: lite.predict(cnn_file(), x[..., 0]), ValueError, r"x has shape \(40, 6, 6\)"),
    ("one_example_no_batch", lambda f, x: lite.predict(cnn_file(), x[0]), ValueError, r"x has shape \(6, 6, 1\)"),
    ("nan", lambda f, x: lite.predict(cnn_file(), np.where(x > 0.5, NAN, x)), ValueError, r"x holds \d+ non-finite value\(s\) \(NaN or infinity\)"),
    ("inf", lambda f, x: lite.predict(cnn_file(), x * INF), ValueError, r"x holds \d+ non-finite value\(s\)"),
    ("empty", lambda f, x: lite.predict(cnn_file(), x[:0]), ValueError, r"x holds no examples"),
    ("beyond_float32", lambda f, x: lite.predict(cnn_file(), x.astype("float64") * 1e300), ValueError, r"x holds values up to .*e\+300 in magnitude, beyond the float32 range of the model input"),
    ("strings", lambda f, x: lite.predict(cnn_file(), x.astype(str)), ValueError, r"x must hold numbers.*dtype <U"),
    ("objects", lambda f, x: lite.predict(cnn_file(), np.array([None] * 3)), ValueError, r"x must hold numbers.*dtype object"),
    ("ragged", lambda f, x: lite.predict(cnn_file(), [[1.0, 2.0], [3.0]]), ValueError, r"x must be an array of numbers"),
    ("two_arrays_one_input", lambda f, x: lite.predict(cnn_file(), [x, x]), ValueError, r"The model has 1 input\(s\) \['.*'\], but x holds 2 arrays"),
    ("dict_unknown_name", lambda f, x: lite.predict(cnn_file(), {"pixels": x}), ValueError, r"x must be a dict with one array per model input \['.*'\]. Missing: \['.*'\]; unknown: \['pixels'\]"),
    ("batch_size_0", lambda f, x: lite.predict(cnn_file(), x, batch_size=0), ValueError, r"batch_size must be >= 1. Received: batch_size=0"),
    ("batch_size_float", lambda f, x: lite.predict(cnn_file(), x, batch_size=8.0), ValueError, r"batch_size must be an integer. Received: batch_size=8.0"),
    ("threads_0", lambda f, x: lite.predict(cnn_file(), x, num_threads=0), ValueError, r"num_threads must be >= 1. Received: num_threads=0"),
    ("y_length", lambda f, x: lite.evaluate(cnn_file(), x, np.zeros(39, int)), ValueError, r"x and y must have the same number of examples \(first dimension\). Received: x: 40, y: 39"),
    ("y_one_element", lambda f, x: lite.evaluate(cnn_file(), x, [3]), ValueError, r"Received: x: 40, y: 1"),
    ("y_scalar", lambda f, x: lite.evaluate(cnn_file(), x, 3), ValueError, r"y must have at least 1 dimension\(s\)"),
    ("y_out_of_range", lambda f, x: lite.evaluate(cnn_file(), x, np.full(40, 10)), ValueError, r"y holds class labels in \[10, 10\], but the output has 10 classes: labels must be in \[0, 10\)"),
    ("y_negative", lambda f, x: lite.evaluate(cnn_file(), x, np.full(40, -1)), ValueError, r"labels must be in \[0, 10\)"),
    ("y_fractions", lambda f, x: lite.evaluate(cnn_file(), x, np.full(40, 1.5)), ValueError, r"y holds fractions"),
    ("y_nan", lambda f, x: lite.evaluate(cnn_file(), x, np.full(40, NAN)), ValueError, r"y holds 40 non-finite value\(s\)"),
    ("y_wrong_one_hot", lambda f, x: lite.evaluate(cnn_file(), x, np.zeros((40, 3))), ValueError, r"y has shape \(40, 3\), but the output has shape \(40, 10\)"),
    ("y_strings", lambda f, x: lite.evaluate(cnn_file(), x, np.array(["cat"] * 40)), ValueError, r"y must hold numbers"),
    ("y_binary_2", lambda f, x: lite.evaluate(binary_files()[0][0][1], binary_files()[1], np.full(300, 2)), ValueError, r"y must hold 0/1 labels for a one-unit \(binary\) output. Received values \[2\]"),
    ("y_binary_shape", lambda f, x: lite.evaluate(binary_files()[0][0][1], binary_files()[1], np.zeros((300, 2))), ValueError, r"y has shape \(300, 2\), but the output has shape \(300, 1\)"),
    ("nan_outputs", lambda f, x: lite.evaluate(f["nan_weights.tflite"], x, np.zeros(40, int)), ValueError, r"The model output 400 non-finite value\(s\) \(NaN or infinity\) for the inputs scored against y"),
    ("threshold_nan", lambda f, x: lite.evaluate(cnn_file(), x, np.zeros(40, int), threshold=NAN), ValueError, r"threshold must be a finite number"),
    ("bench_runs_0", lambda f, x: lite.benchmark(cnn_file(), runs=0), ValueError, r"runs must be >= 1. Received: runs=0"),
    ("bench_warmup", lambda f, x: lite.benchmark(cnn_file(), warmup=-1), ValueError, r"warmup must be >= 0. Received: warmup=-1"),
    ("bench_threads", lambda f, x: lite.benchmark(cnn_file(), num_threads=0), ValueError, r"num_threads must be >= 1. Received: num_threads=0"),
    ("bench_junk", lambda f, x: lite.benchmark(f["header_junk.tflite"]), ValueError, r"is not a valid TFLite model"),
]


def _ids(table):
    return [row[0] for row in table]


def _rows(table):
    return [row[1:] for row in table]


@pytest.mark.parametrize(
    "call, error, words",
    _rows(SCHEDULES + MASKS + PRUNING + CLUSTERING + QUANTIZATION + DISTILLATION + DATASETS + LITE_CONVERT),
    ids=[f"schedules-{i}" for i in _ids(SCHEDULES)]
    + [f"masks-{i}" for i in _ids(MASKS)]
    + [f"pruning-{i}" for i in _ids(PRUNING)]
    + [f"clustering-{i}" for i in _ids(CLUSTERING)]
    + [f"quantization-{i}" for i in _ids(QUANTIZATION)]
    + [f"distillation-{i}" for i in _ids(DISTILLATION)]
    + [f"datasets-{i}" for i in _ids(DATASETS)]
    + [f"convert-{i}" for i in _ids(LITE_CONVERT)],
)
def test_bad_argument_is_refused(call, error, words):
    with pytest.raises(error, match=words):
        call()


@pytest.mark.parametrize("call, error, words", _rows(REPORT), ids=_ids(REPORT))
def test_bad_file_is_refused_by_summarize(files, call, error, words):
    with pytest.raises(error, match=words):
        call(files)


@pytest.mark.parametrize("call, error, words", _rows(LITE_RUN), ids=_ids(LITE_RUN))
def test_bad_input_is_refused_by_the_runtime(files, call, error, words):
    x, _ = rng_data()
    with pytest.raises(error, match=words):
        call(files, x)


# -- CLI: one line on stderr, status 2, never a traceback -----------------------

CLI = [
    ("convert_missing_model", lambda f: ["convert", f["missing"][:-7] + ".keras", "-o", "x.tflite"], r"No such file. Received: MODEL='.*missing.keras'"),
    ("convert_not_keras", lambda f: ["convert", f["model.tflite"], "-o", "x.tflite"], r"MODEL must be a .keras file"),
    ("convert_truncated_keras", lambda f: ["convert", f["truncated.keras"], "-o", "x.tflite"], r"truncated.keras is not a .keras model: the file is not a zip archive"),
    ("convert_keras_without_config", lambda f: ["convert", f["noconfig.keras"], "-o", "x.tflite"], r"not a complete .keras archive \(no config.json\)"),
    ("convert_mode", lambda f: ["convert", f["model.keras"], "-o", "x.tflite", "--quantization", "int4"], r"--quantization must be one of \['dynamic', 'float16', 'float32', 'int16x8', 'int8'\]. Received: --quantization='int4'"),
    ("convert_int8_io_float", lambda f: ["convert", f["model.keras"], "-o", "x.tflite", "--int8-io"], r"int8_io=True needs quantization='int8'"),
    ("convert_int8_without_calibration", lambda f: ["convert", f["model.keras"], "-o", "x.tflite", "--quantization", "int8"], r"needs representative_data"),
    ("convert_int16x8_without_calibration", lambda f: ["convert", f["model.keras"], "-o", "x.tflite", "--quantization", "int16x8"], r"quantization='int16x8' on a float model .* needs representative_data"),
    ("convert_calibration_inf", lambda f: ["convert", f["model.keras"], "-o", "x.tflite", "--quantization", "int8", "--calibration", f["calib_inf.npy"]], r"representative_data holds 1 non-finite value\(s\)"),
    ("convert_calibration_nan", lambda f: ["convert", f["model.keras"], "-o", "x.tflite", "--quantization", "int8", "--calibration", f["calib_nan.npy"]], r"representative_data holds 144 non-finite"),
    ("convert_calibration_shape", lambda f: ["convert", f["model.keras"], "-o", "x.tflite", "--quantization", "int8", "--calibration", f["calib_shape.npy"]], r"representative_data has shape \(4, 28, 28, 1\), but the model input '.*' takes \(batch, 6, 6, 1\) float32"),
    ("convert_calibration_empty", lambda f: ["convert", f["model.keras"], "-o", "x.tflite", "--quantization", "int8", "--calibration", f["calib_empty.npy"]], r"representative_data holds no examples"),
    ("convert_calibration_strings", lambda f: ["convert", f["model.keras"], "-o", "x.tflite", "--quantization", "int8", "--calibration", f["calib_str.npy"]], r"representative_data must hold numbers"),
    ("convert_calibration_junk", lambda f: ["convert", f["model.keras"], "-o", "x.tflite", "--quantization", "int8", "--calibration", f["calib_junk.npy"]], r"calib_junk.npy is not a readable numpy file"),
    ("convert_calibration_suffix", lambda f: ["convert", f["model.keras"], "-o", "x.tflite", "--quantization", "int8", "--calibration", f["model.txt"]], r"--calibration must be a .npy or .npz file"),
    ("convert_calibration_missing", lambda f: ["convert", f["model.keras"], "-o", "x.tflite", "--calibration", f["missing"][:-7] + ".npy"], r"No such file. Received: --calibration="),
    ("convert_output_is_directory", lambda f: ["convert", f["model.keras"], "-o", f["dir"]], r"output_path must be a file path, not a directory"),
    ("inspect_missing", lambda f: ["inspect", f["missing"]], r"No such file. Received: FILE='.*missing.tflite'"),
    ("inspect_suffix", lambda f: ["inspect", f["model.txt"]], r"FILE must be a .keras or .tflite file"),
    ("inspect_truncated", lambda f: ["inspect", f["truncated.tflite"]], r"truncated.tflite is not a valid TFLite model: truncated or corrupted"),
    ("inspect_header_junk", lambda f: ["inspect", f["header_junk.tflite"]], r"header_junk.tflite is not a valid TFLite model"),
    ("inspect_empty", lambda f: ["inspect", f["empty.tflite"]], r"empty.tflite is not a TFLite model"),
    ("inspect_zero_point", lambda f: ["inspect", f["zero_point.tflite"]], r"zero points outside \[-128, 127\]"),
    ("inspect_scale", lambda f: ["inspect", f["scale.tflite"]], r"scales that are not finite and > 0"),
    ("inspect_buffer_size", lambda f: ["inspect", f["buffer.tflite"]], r"bytes of data but its buffer holds"),
    ("inspect_truncated_keras", lambda f: ["inspect", f["truncated.keras"]], r"is not a .keras model"),
    ("inspect_bad_json_keras", lambda f: ["inspect", f["badjson.keras"]], r"could not be loaded as a Keras model: JSONDecodeError"),
    ("inspect_directory", lambda f: ["inspect", f["dir"]], r"FILE must be a file, not a directory"),
    ("bench_missing", lambda f: ["bench", f["missing"]], r"No such file"),
    ("bench_truncated", lambda f: ["bench", f["truncated.tflite"]], r"is not a valid TFLite model"),
    ("bench_zero_point", lambda f: ["bench", f["zero_point.tflite"]], r"zero points outside"),
    ("bench_threads_0", lambda f: ["bench", f["model.tflite"], "--threads", "0"], r"num_threads must be >= 1. Received: num_threads=0"),
    ("bench_runs_0", lambda f: ["bench", f["model.tflite"], "--runs", "0"], r"runs must be >= 1. Received: runs=0"),
    ("bench_runs_word", lambda f: ["bench", f["model.tflite"], "--runs", "many"], r"argument --runs: invalid int value: 'many'"),
    ("convert_without_output", lambda f: ["convert", f["model.keras"]], r"the following arguments are required: -o/--output"),
    ("unknown_command", lambda f: ["shrink", f["model.keras"]], r"invalid choice: 'shrink'"),
    ("no_command", lambda f: [], r"the following arguments are required: COMMAND"),
    ("unknown_option", lambda f: ["inspect", f["model.tflite"], "--verbose"], r"unrecognized arguments: --verbose"),
]


@pytest.mark.parametrize("argv, words", _rows(CLI), ids=_ids(CLI))
def test_cli_failure_is_one_line_with_status_2(files, argv, words, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    try:
        status = cli.main(argv(files))
    except SystemExit as exit:  # argparse's usage errors
        status = exit.code
    captured = capsys.readouterr()
    assert status == 2
    assert captured.err.count("\n") == 1, captured.err
    assert "Traceback" not in captured.err
    assert re.search(words, captured.err), captured.err
    assert not os.path.exists(tmp_path / "x.tflite")


def test_cli_debug_flag_shows_the_traceback(files, capsys):
    for argv in (["--debug", "inspect", files["truncated.tflite"]], ["inspect", files["truncated.tflite"], "--debug"]):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert "Traceback (most recent call last)" in err
        assert err.strip().splitlines()[-1].startswith("tfcompress inspect: error: ")


# -- edge inputs with an exact right answer ----------------------------------------


def test_numpy_scalars_are_accepted_wherever_python_numbers_are():
    schedule = tfcompress.ConstantSparsity(np.float32(0.5), np.int64(0), np.int32(-1), np.uint8(10))
    assert schedule.get_config() == tfcompress.ConstantSparsity(0.5, 0, -1, 10).get_config()
    decay = tfcompress.PolynomialDecay(np.float64(0.0), np.float32(0.5), np.int64(0), np.int64(10), power=np.float32(2.0))
    assert float(decay(np.int64(5))[1]) == pytest.approx(0.5 - 0.5 * 0.25)
    pruned = tfcompress.prune_low_magnitude(dense_model(8, 4), block_size=(np.int64(2), np.int64(2)))
    assert pruned.layers[0].block_size == (2, 2)
    clustered = tfcompress.strip_clustering(tfcompress.cluster_weights(dense_model(8, 4), np.int64(3)))
    assert len(np.unique(clustered.layers[0].kernel.numpy())) == 3
    assert tfcompress.PruningSummaries(update_freq=np.int64(3)).update_freq == 3
    distiller = _distiller(alpha=np.float32(0.25), temperature=np.float32(2.0))
    assert (distiller.alpha, distiller.temperature) == (0.25, 2.0)
    assert ActivationQuantizer(ema_decay=np.float32(0.5)).ema_decay == 0.5
    (x_train, _), (x_test, _) = datasets.load_digits(test_fraction=np.float32(0.25), seed=np.int64(1))
    assert len(x_test) == 450 and len(x_train) == 1347
    x, _ = rng_data()
    assert lite.predict(cnn_file(), x[:5], batch_size=np.int64(2), num_threads=np.int32(1)).shape == (5, 10)


def test_sigmoid_head_is_scored_at_half_like_keras():
    (sigmoid, sigmoid_file), (logits, logits_file) = binary_files()[0]
    x = binary_files()[1]
    probabilities = sigmoid.predict(x, verbose=0)
    y = (probabilities[:, 0] > 0.5).astype(int)
    y[:30] = 1 - y[:30]  # 30 of 300 wrong: accuracy exactly 0.9
    keras_accuracy = keras.metrics.BinaryAccuracy()
    keras_accuracy.update_state(y[:, None], probabilities)
    assert float(keras_accuracy.result()) == pytest.approx(0.9)
    assert lite.evaluate(sigmoid_file, x, y) == {"accuracy": pytest.approx(0.9), "num_examples": 300}
    assert lite.evaluate(sigmoid_file, x, y[:, None])["accuracy"] == pytest.approx(0.9)
    assert lite.evaluate(sigmoid_file, x, y.astype(bool))["accuracy"] == pytest.approx(0.9)
    # The same head without its sigmoid outputs logits: thresholded at 0, same answer.
    assert lite.evaluate(logits_file, x, y)["accuracy"] == pytest.approx(0.9)
    # An explicit threshold is used as given.
    strict = float(np.mean((probabilities[:, 0] > 0.9) == y))
    assert lite.evaluate(sigmoid_file, x, y, threshold=0.9)["accuracy"] == pytest.approx(strict)


def test_int8_sigmoid_head_is_recognised_through_dequantize():
    (sigmoid, _), _ = binary_files()[0]
    x = binary_files()[1]
    int8 = lite.convert(sigmoid, "int8", representative_data=x)
    y = (sigmoid.predict(x, verbose=0)[:, 0] > 0.5).astype(int)
    assert lite.evaluate(int8, x, y)["accuracy"] >= 0.97


def test_labels_in_every_layout_give_the_same_accuracy():
    x, _ = rng_data()
    logits = lite.predict(cnn_file(), x)
    y = np.argmax(logits, -1)
    y[:4] = (y[:4] + 1) % 10
    expected = {"accuracy": pytest.approx(0.9), "num_examples": 40}
    assert lite.evaluate(cnn_file(), x, y) == expected
    assert lite.evaluate(cnn_file(), x, y[:, None]) == expected
    assert lite.evaluate(cnn_file(), x, np.eye(10)[y]) == expected
    assert lite.evaluate(cnn_file(), x, y.astype("float32")) == expected
    assert lite.evaluate(cnn_file(), x, list(y)) == expected


def test_inputs_in_every_layout_give_the_same_prediction():
    x, _ = rng_data()
    expected = lite.predict(cnn_file(), x)
    np.testing.assert_array_equal(lite.predict(cnn_file(), x.tolist()), expected)
    np.testing.assert_array_equal(lite.predict(cnn_file(), [x]), expected)
    np.testing.assert_array_equal(lite.predict(cnn_file(), x.astype("float64")), expected)
    np.testing.assert_array_equal(lite.predict(cnn_file(), list(x)), expected)  # rows
    np.testing.assert_array_equal(lite.predict(cnn_file(), x, batch_size=7), expected)
    name = lite._litert.Runtime(cnn_file()).inputs[0][0]
    np.testing.assert_array_equal(lite.predict(cnn_file(), {name: x}), expected)


def test_one_calibration_example_without_batch_axis_is_one_example():
    model = dense_model()
    one = lite.convert(model, "int8", representative_data=[np.array([0.5, -1.0, 2.0, 0.0])])
    assert lite.predict(one, np.ones((2, 4))).shape == (2, 3)


def test_bit_flipped_flatbuffer_that_crashed_allocate_is_refused_before_it():
    """The crash the fuzzing found: a zero point of -16512 passed LiteRT's verifier."""
    from ai_edge_litert.interpreter import Interpreter

    broken = patched(int8_file(), "zero_point")
    Interpreter(model_content=broken)  # LiteRT's verifier alone accepts it
    with pytest.raises(ValueError, match="zero points outside"):
        lite.predict(broken, rng_data()[0])

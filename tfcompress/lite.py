"""TFLite export and the LiteRT runtime: convert, predict, evaluate, benchmark.

The only module of tfcompress that imports TensorFlow (for the converter) and
`ai_edge_litert` (the interpreter that replaces the deprecated
`tf.lite.Interpreter`). Both are imported when a function runs.

Conversion goes through a SavedModel written by `model.export`, which works for
Sequential, functional and subclassed Keras 3 models alike.
"""

import contextlib
import os
import statistics
import sys
import tempfile
import time

import keras
import numpy as np

from tfcompress import _rewrite
from tfcompress._quiet import hold_back_fd2
from tfcompress._wrapper import strip_for_export
from tfcompress.quantization.verify import convert_checked

QUANTIZATION_MODES = (None, "float16", "dynamic", "int8")
# Samples of representative data used to calibrate post-training int8.
_MAX_CALIBRATION_SAMPLES = 500


def convert(model, quantization=None, representative_data=None, int8_io=False, output_path=None):
    """Converts a Keras model to a `.tflite` flatbuffer.

    Pruning and clustering wrappers are stripped first (their masks and
    centroids baked into the weights); the fake-quant ops of a QAT model
    (`tfcompress.quantization.quantize_model`) are kept, and the converter
    turns them into int8 kernels with the learned ranges.

    Args:
        model: A Sequential, functional or subclassed (built) `keras.Model`.
        quantization: None (float32), "float16" (weights stored as float16),
            "dynamic" (int8 weights, float activations) or "int8" (full
            integer: int8 weights and activations). "int8" on a QAT model uses
            its learned ranges; on a float model it is post-training
            quantization calibrated on `representative_data`.
        representative_data: For "int8" on a float model: a numpy array of
            inputs (first axis = examples), or an iterable / `tf.data.Dataset`
            of input batches (or `(x, y)` batches). Up to 500 examples are used.
        int8_io: With "int8", make the input and output tensors int8 too (for
            integer-only targets such as microcontrollers and NPUs).
        output_path: If given, the flatbuffer is also written there.

    Returns:
        The `.tflite` flatbuffer as `bytes`.

    Raises:
        ValueError: for an unknown `quantization`; `int8_io` without "int8";
            "int8" on a float model without `representative_data`;
            representative data whose shape does not fit the model input.

    Example:

    >>> import keras
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> flatbuffer = convert(model, quantization="dynamic")
    >>> len(flatbuffer) > 0
    True
    """
    if quantization not in QUANTIZATION_MODES:
        raise ValueError(
            "quantization must be one of None, 'float16', 'dynamic', 'int8'. "
            f"Received: quantization={quantization!r}"
        )
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"convert expects a keras.Model. Received: model={model!r} of type "
            f"{type(model).__name__}"
        )
    if int8_io and quantization != "int8":
        raise ValueError(
            "int8_io=True needs quantization='int8' (integer input/output tensors "
            f"exist only in a full-integer model). Received: quantization={quantization!r}"
        )
    import tensorflow as tf

    if _rewrite.is_graph_model(model):
        model = strip_for_export(model)  # a copy: the caller's model keeps its wrappers
    # A subclassed model is stripped in place, so it is exported as it is: its
    # wrappers compute the shipped weights at inference, which the converter
    # folds into constants.
    is_qat = _is_qat(model)
    input_shapes = _input_shapes(model, representative_data)
    samples = None
    if quantization == "int8" and not is_qat:
        if representative_data is None:
            raise ValueError(
                "quantization='int8' on a float model is post-training quantization "
                "and needs representative_data (a numpy array or batches of typical "
                "inputs, ~100-500 examples) to calibrate the activation ranges. "
                "Pass representative_data=x_train[:500], or train the model with "
                "tfcompress.quantization.quantize_model first."
            )
        samples = _calibration_samples(representative_data, input_shapes)

    with tempfile.TemporaryDirectory() as tmp, _native_logs_held_back():
        signature = [tf.TensorSpec((None,) + tuple(s), tf.float32) for s in input_shapes]
        model.export(
            tmp,
            format="tf_saved_model",
            verbose=False,
            input_signature=signature,
        )
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
        if quantization is not None:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantization == "float16":
            converter.target_spec.supported_types = [tf.float16]
        if samples is not None:
            converter.representative_dataset = lambda: ([s] for s in samples)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if int8_io:
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
        flatbuffer = convert_checked(converter, model)  # low-bit weights: INT4 or an error
    if output_path is not None:
        os.makedirs(os.path.dirname(os.path.abspath(output_path)), exist_ok=True)
        with open(output_path, "wb") as f:
            f.write(flatbuffer)
    return flatbuffer


def predict(tflite, x, batch_size=256, num_threads=None):
    """Runs a `.tflite` model on `x` with the LiteRT interpreter.

    int8 input tensors get `x / scale + zero_point` (rounded, clipped); int8
    outputs are dequantized, so the result is comparable with Keras'
    `model.predict`.

    Args:
        tflite: The flatbuffer (`bytes`) or the path of a `.tflite` file.
        x: Numpy array of inputs, first axis = examples (a list of arrays for
            a model with several inputs).
        batch_size: Examples per interpreter call.
        num_threads: Interpreter threads (None: LiteRT's default).

    Returns:
        Numpy float32 array of the (first) output, one row per example.

    Example:

    >>> import keras, numpy as np
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> predict(convert(model), np.ones((3, 4), "float32")).shape
    (3, 2)
    """
    interpreter = _interpreter(tflite, num_threads)
    inputs = interpreter.get_input_details()
    xs = list(x) if isinstance(x, (list, tuple)) else [x]
    if len(xs) != len(inputs):
        raise ValueError(
            f"The model has {len(inputs)} inputs but x holds {len(xs)} arrays."
        )
    xs = [np.asarray(a) for a in xs]
    n = len(xs[0])
    output = interpreter.get_output_details()[0]
    results, current = [], None
    for start in range(0, n, batch_size):
        chunk = [a[start : start + batch_size] for a in xs]
        if current != len(chunk[0]):
            for detail, a in zip(inputs, chunk):
                interpreter.resize_tensor_input(detail["index"], a.shape)
            interpreter.allocate_tensors()
            current = len(chunk[0])
            inputs = interpreter.get_input_details()
            output = interpreter.get_output_details()[0]
        for detail, a in zip(inputs, chunk):
            interpreter.set_tensor(detail["index"], _to_input(a, detail))
        interpreter.invoke()
        results.append(_from_output(interpreter.get_tensor(output["index"]), output))
    return np.concatenate(results, axis=0)


def evaluate(tflite, x, y, batch_size=256):
    """Top-1 accuracy of a `.tflite` classifier.

    Args:
        tflite: Flatbuffer bytes or `.tflite` path.
        x: Inputs (numpy array).
        y: Integer labels, or one-hot rows.
        batch_size: Examples per interpreter call.

    Returns:
        Dict `{"accuracy": float, "num_examples": int}`.
    """
    y = np.asarray(y)
    if y.ndim > 1 and y.shape[-1] > 1:
        y = np.argmax(y, axis=-1)
    logits = predict(tflite, x, batch_size=batch_size)
    pred = np.argmax(logits, axis=-1) if logits.ndim > 1 and logits.shape[-1] > 1 else (
        logits.reshape(-1) > 0
    ).astype(y.dtype)
    return {"accuracy": float(np.mean(pred == y.reshape(-1))), "num_examples": int(len(y))}


def benchmark(tflite, num_threads=1, runs=200, warmup=20):
    """Per-inference latency of a `.tflite` model on this CPU (batch of 1).

    Args:
        tflite: Flatbuffer bytes or `.tflite` path.
        num_threads: Interpreter threads.
        runs: Timed inferences.
        warmup: Untimed inferences first.

    Returns:
        Dict with `median_ms`, `p90_ms`, `mean_ms`, `runs`, `num_threads`
        and `size_bytes` (of the flatbuffer).

    Raises:
        ValueError: if `runs` < 1.
    """
    from tfcompress._validate import check_int

    check_int("runs", runs, minimum=1)
    check_int("warmup", warmup, minimum=0)
    check_int("num_threads", num_threads, minimum=1)
    interpreter = _interpreter(tflite, num_threads)
    rng = np.random.default_rng(0)
    for detail in interpreter.get_input_details():
        shape = [1 if d in (-1, None) else d for d in detail["shape_signature"]]
        shape[0] = 1
        interpreter.resize_tensor_input(detail["index"], shape)
    interpreter.allocate_tensors()
    for detail in interpreter.get_input_details():
        x = rng.random(detail["shape"]).astype("float32")
        interpreter.set_tensor(detail["index"], _to_input(x, detail))
    for _ in range(warmup):
        interpreter.invoke()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        interpreter.invoke()
        times.append((time.perf_counter() - start) * 1e3)
    times.sort()
    return {
        "median_ms": statistics.median(times),
        "p90_ms": times[min(len(times) - 1, int(round(0.9 * (len(times) - 1))))],
        "mean_ms": statistics.fmean(times),
        "runs": runs,
        "num_threads": num_threads,
        "size_bytes": len(_read(tflite)),
    }


@contextlib.contextmanager
def _native_logs_held_back():
    """Holds back what the exporter and converter print to file descriptor 2.

    Their C++ layers log a few dozen lines per conversion, written straight to
    the process' stderr where `TF_CPP_MIN_LOG_LEVEL` set after TensorFlow's
    import cannot silence them. The lines are shown only if conversion fails.
    """
    release = hold_back_fd2()
    try:
        yield
    except BaseException:
        sys.stderr.write(release())
        raise
    release()


def _read(tflite):
    if isinstance(tflite, (bytes, bytearray)):
        return bytes(tflite)
    if isinstance(tflite, (str, os.PathLike)):
        with open(tflite, "rb") as f:
            return f.read()
    raise TypeError(
        "tflite must be the flatbuffer bytes or a .tflite path. "
        f"Received: {type(tflite).__name__}"
    )


def _interpreter(tflite, num_threads=None):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=_read(tflite), num_threads=num_threads)
    interpreter.allocate_tensors()
    return interpreter


def _to_input(x, detail):
    if detail["dtype"] in (np.int8, np.uint8):
        scale, zero_point = detail["quantization"]
        info = np.iinfo(detail["dtype"])
        q = np.round(np.asarray(x, "float32") / scale + zero_point)
        return np.clip(q, info.min, info.max).astype(detail["dtype"])
    return np.asarray(x, detail["dtype"])


def _from_output(y, detail):
    if detail["dtype"] in (np.int8, np.uint8):
        scale, zero_point = detail["quantization"]
        return ((y.astype("float32") - zero_point) * scale).astype("float32")
    return y.astype("float32")


def _is_qat(model):
    from tfcompress.quantization.wrapper import QuantizeWrapper

    return any(isinstance(l, QuantizeWrapper) for l in _rewrite.iter_layers(model))


def _input_shapes(model, representative_data):
    """Input shapes without the batch axis."""
    if _rewrite.is_graph_model(model) or getattr(model, "inputs", None):
        return [tuple(t.shape[1:]) for t in model.inputs]
    shapes = getattr(model, "_build_shapes_dict", None) or {}
    if len(shapes) == 1:
        shape = next(iter(shapes.values()))
        if shape is not None and not isinstance(shape[0], (list, tuple, dict)):
            return [tuple(shape[1:])]
    if representative_data is not None and isinstance(representative_data, np.ndarray):
        return [representative_data.shape[1:]]
    raise ValueError(
        f"Cannot tell the input shape of subclassed model '{model.name}'. Build it "
        "with model.build((None, ...)) or call it once on a batch before converting."
    )


def _calibration_samples(data, input_shapes):
    expected = tuple(input_shapes[0])
    batches = [data] if isinstance(data, np.ndarray) else data
    samples = []
    for batch in batches:
        if isinstance(batch, (tuple, list)) and not isinstance(batch, np.ndarray):
            batch = batch[0]
        batch = np.asarray(batch, "float32")
        if batch.shape[1:] != expected and batch.shape == expected:
            batch = batch[np.newaxis]
        if tuple(batch.shape[1:]) != expected:
            raise ValueError(
                f"representative_data has examples of shape {tuple(batch.shape[1:])} "
                f"(batch shape {tuple(batch.shape)}), but the model input expects "
                f"{expected} (plus a batch axis)."
            )
        for row in batch:
            samples.append(row[np.newaxis])
            if len(samples) >= _MAX_CALIBRATION_SAMPLES:
                return samples
    if not samples:
        raise ValueError("representative_data is empty: give at least one example.")
    return samples

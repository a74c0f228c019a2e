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

from tfcompress import _litert, _rewrite, _validate
from tfcompress._quiet import hold_back_fd2
from tfcompress._wrapper import strip_for_export

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
    _validate.check_one_of("quantization", quantization, QUANTIZATION_MODES)
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"convert expects a keras.Model. Received: model={model!r} of type "
            f"{type(model).__name__}"
        )
    int8_io = _validate.check_bool("int8_io", int8_io)
    if int8_io and quantization != "int8":
        raise ValueError(
            "int8_io=True needs quantization='int8' (integer input/output tensors "
            f"exist only in a full-integer model). Received: quantization={quantization!r}"
        )
    if output_path is not None:
        output_path = _validate.check_output_path("output_path", output_path)
    import tensorflow as tf

    specs = _keras_input_specs(model, representative_data)
    input_shapes = [spec.shape[1:] for spec in specs]
    if _rewrite.is_graph_model(model):
        model = strip_for_export(model)  # a copy: the caller's model keeps its wrappers
    # A subclassed model is stripped in place, so it is exported as it is: its
    # wrappers compute the shipped weights at inference, which the converter
    # folds into constants.
    is_qat = _is_qat(model)
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
        # Checked here: the converter segfaults on calibration data holding inf.
        samples = _calibration_samples(representative_data, specs)

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
            converter.representative_dataset = lambda: iter(samples)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if int8_io:
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
        flatbuffer = converter.convert()
    if output_path is not None:
        os.makedirs(os.path.dirname(os.path.abspath(output_path)), exist_ok=True)
        with open(output_path, "wb") as f:
            f.write(flatbuffer)
    return flatbuffer


def predict(tflite, x, batch_size=256, num_threads=None):
    """Runs a `.tflite` model on `x` with the LiteRT interpreter.

    int8 input tensors get `x / scale + zero_point` (rounded, clipped); int8
    outputs are dequantized, so the result is comparable with Keras'
    `model.predict`. `x` is checked first (finite numbers, the input's shape
    and, for integer inputs such as token ids, whole numbers).

    Args:
        tflite: The flatbuffer (`bytes`) or the path of a `.tflite` file.
        x: Numpy array of inputs, first axis = examples; for a model with
            several inputs a list of arrays (in the Keras model's input order)
            or a dict `{input name: array}`.
        batch_size: Examples per interpreter call (a model converted for a
            fixed batch size runs in batches of that size).
        num_threads: Interpreter threads (None: LiteRT's default).

    Returns:
        For a model with one output, a numpy array (float32 unless the output
        is an integer tensor), one row per example. With several outputs,
        a list of arrays in the Keras model's output order, or a dict by
        output name when the Keras model's outputs were a dict.

    Raises:
        ValueError: for a file that is not a valid TFLite model, `x` that
            does not fit the model's inputs (the message names the input), or
            a model LiteRT refuses to prepare or run (e.g. a token id outside
            an embedding's table).
        TypeError: for a `tflite` that is neither bytes nor a path.

    Example:

    >>> import keras, numpy as np
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> predict(convert(model), np.ones((3, 4), "float32")).shape
    (3, 2)
    """
    runtime, arrays = _runtime_and_inputs(tflite, x, batch_size, num_threads)
    return runtime.structure(runtime.run(arrays, batch_size))


def evaluate(tflite, x, y, batch_size=256, threshold=None):
    """Accuracy of a `.tflite` classifier, scored as Keras' `"accuracy"` metric does.

    How each output is scored follows its shape and the op that computes it
    (read from the `.tflite`):

    * several units: top-1 against integer labels (`(n,)` or `(n, 1)`) or
      one-hot rows (`(n, classes)`); for a sigmoid (multi-label) head, a `y`
      shaped like the output is scored unit by unit at the threshold;
    * one unit (binary): `output > threshold` against 0/1 labels. The
      threshold defaults to 0.5 after a sigmoid (probabilities: the op
      before the output is LOGISTIC) and to 0 otherwise (logits);
      pass `threshold` to choose it.

    Args:
        tflite: Flatbuffer bytes or `.tflite` path.
        x: Inputs, as for `predict`.
        y: Labels. For several outputs, a list (Keras order) or dict (by
            output name) of label arrays; None skips an output.
        batch_size: Examples per interpreter call.
        threshold: Decision threshold of one-unit and sigmoid outputs; None
            chooses as above.

    Returns:
        `{"accuracy": float, "num_examples": int}`; with several outputs,
        `"accuracy"` is a list or dict (as `predict` returns outputs) with
        None for skipped outputs.

    Raises:
        ValueError: for labels that do not fit the outputs: another number of
            examples than `x`, another shape, class ids outside the output's
            classes, binary labels other than 0 and 1, non-finite values.
    """
    if threshold is not None:
        threshold = _validate.check_number("threshold", threshold)
    runtime, arrays = _runtime_and_inputs(tflite, x, batch_size, None)
    n = len(arrays[0])
    labels = _labels_per_output(y, runtime)
    for i, label in enumerate(labels):
        if label is not None:
            labels[i] = _validate.check_array(_label_name(runtime, i), label, min_ndim=1)
            _validate.check_same_length(x=arrays[0], **{_label_name(runtime, i): labels[i]})
    outputs = runtime.run(arrays, batch_size)
    producers = runtime.output_producers()
    scores = [
        None
        if label is None
        else _accuracy(out, label, producer, threshold, _label_name(runtime, i))
        for i, (out, label, producer) in enumerate(zip(outputs, labels, producers))
    ]
    return {"accuracy": runtime.structure(scores), "num_examples": n}


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
        ValueError: if `runs` < 1, `warmup` < 0, `num_threads` < 1, or the
            file is not a valid TFLite model.
    """
    runs = _validate.check_int("runs", runs, minimum=1)
    warmup = _validate.check_int("warmup", warmup, minimum=0)
    num_threads = _validate.check_int("num_threads", num_threads, minimum=1)
    runtime = _litert.Runtime(tflite, num_threads)
    rng = np.random.default_rng(0)
    example = []
    for spec in runtime.input_specs():
        shape = (1,) + tuple(1 if d is None else d for d in spec.shape[1:])
        if spec.dtype.kind in "iu":  # token ids: small valid ids
            example.append(np.zeros(shape, spec.dtype))
        else:
            example.append(rng.random(shape).astype(spec.dtype))
    runtime.run(example, 1)
    interpreter = runtime.interpreter
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
        "size_bytes": len(runtime.data),
    }


def _runtime_and_inputs(tflite, x, batch_size, num_threads):
    batch_size = _validate.check_int("batch_size", batch_size, minimum=1)
    runtime = _litert.Runtime(tflite, num_threads)
    return runtime, _validate.check_inputs(x, runtime.input_specs())


def _label_name(runtime, i):
    return "y" if len(runtime.outputs) == 1 else f"y[{runtime.outputs[i][0]!r}]"


def _labels_per_output(y, runtime):
    names = [name for name, _ in runtime.outputs]
    if len(names) == 1:
        return [y]
    if isinstance(y, dict):
        unknown = sorted(str(k) for k in y if k not in names)
        if unknown:
            raise ValueError(f"y names outputs the model does not have: {unknown}. Outputs: {names}")
        return [y.get(name) for name in names]
    if isinstance(y, (list, tuple)) and len(y) == len(names):
        return list(y)
    raise ValueError(
        f"The model has {len(names)} outputs {names}: pass y as a list of {len(names)} "
        "label arrays in that order (None to skip an output) or a dict by output name. "
        f"Received: a {type(y).__name__}"
        + (f" of length {len(y)}" if isinstance(y, (list, tuple)) else "")
    )


def _accuracy(output, y, producer, threshold, name):
    """Keras' accuracy of one output against its labels (see `evaluate`)."""
    output = np.asarray(output, "float32")
    units = output.shape[-1] if output.ndim > 1 else 1
    sigmoid = producer == "LOGISTIC"
    if threshold is None:
        threshold = 0.5 if sigmoid else 0.0
    if units == 1 or (sigmoid and y.shape == output.shape):
        if y.size != output.size or y.shape[0] != output.shape[0]:
            raise ValueError(
                f"{name} has shape {y.shape}, but the output has shape {output.shape}: "
                "pass one 0/1 label per output value."
            )
        _check_binary(name, y)
        predicted = (output > threshold).reshape(y.shape)
        return float(np.mean(predicted == (y > 0.5)))
    if y.shape == output.shape:  # one-hot rows
        y = np.argmax(y, axis=-1)
    elif y.shape[1:] == output.shape[1:-1] + (1,):
        y = y.reshape(y.shape[:-1])
    if y.shape != output.shape[:-1]:
        raise ValueError(
            f"{name} has shape {y.shape}, but the output has shape {output.shape}: pass "
            f"class ids of shape {output.shape[:-1]} or one-hot rows of shape {output.shape}."
        )
    if y.dtype.kind == "f" and not np.all(np.floor(y) == y):
        raise ValueError(f"{name} holds fractions; class labels are whole numbers in [0, {units}).")
    if y.size and (y.min() < 0 or y.max() >= units):
        raise ValueError(
            f"{name} holds class labels in [{y.min()}, {y.max()}], but the output has "
            f"{units} classes: labels must be in [0, {units})."
        )
    return float(np.mean(np.argmax(output, axis=-1) == y))


def _check_binary(name, y):
    values = np.unique(y)
    if not np.all(np.isin(values, (0, 1))):
        raise ValueError(
            f"{name} must hold 0/1 labels for a one-unit (binary) output. Received values "
            f"{values[:5].tolist()}{' ...' if values.size > 5 else ''}"
        )


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


def _is_qat(model):
    from tfcompress.quantization.wrapper import QuantizeWrapper

    return any(isinstance(l, QuantizeWrapper) for l in _rewrite.iter_layers(model))


def _keras_input_specs(model, representative_data):
    """`_validate.InputSpec` of each input of a Keras model (batch axis first)."""
    if _rewrite.is_graph_model(model) and not model.built:
        raise ValueError(
            f"Model '{model.name}' is not built: give it a keras.Input(shape=...) or call "
            "it once on a batch of data before converting."
        )
    inputs = getattr(model, "inputs", None) if _rewrite.is_graph_model(model) else None
    if inputs:
        return [
            _validate.InputSpec(t.name, tuple(t.shape), t.dtype or "float32") for t in inputs
        ]
    shapes = getattr(model, "_build_shapes_dict", None) or {}
    if len(shapes) == 1:
        shape = next(iter(shapes.values()))
        if shape is not None and shape and not isinstance(shape[0], (list, tuple, dict)):
            return [_validate.InputSpec("inputs", tuple(shape), "float32")]
    if isinstance(representative_data, np.ndarray) and representative_data.ndim >= 1:
        return [_validate.InputSpec("inputs", (None,) + representative_data.shape[1:], "float32")]
    raise ValueError(
        f"Cannot tell the input shape of subclassed model '{model.name}'. Build it "
        "with model.build((None, ...)) or call it once on a batch before converting."
    )


def _calibration_samples(data, specs):
    """Up to 500 single examples of checked calibration inputs (one list per example)."""
    name = "representative_data"
    if _is_one_batch(data, specs):
        batches = [data]
    else:
        try:
            batches = iter(data)
        except TypeError:
            raise ValueError(
                f"{name} must be an array of inputs, or an iterable of batches. "
                f"Received: a {type(data).__name__}"
            ) from None
    samples = []
    for batch in batches:
        if isinstance(batch, tuple) and len(batch) in (2, 3) and not _is_one_batch(batch, specs):
            batch = batch[0]  # an (x, y) or (x, y, sample_weight) batch
        if len(specs) == 1 and np.ndim(batch) == len(specs[0].shape) - 1:
            batch = np.asarray(batch)[np.newaxis]  # one example without its batch axis
        arrays = _validate.check_inputs(batch, specs, name=name)
        arrays = [a.astype(np.float32) if a.dtype.kind == "f" else a for a in arrays]
        for i in range(len(arrays[0])):
            samples.append([a[i : i + 1] for a in arrays])
            if len(samples) >= _MAX_CALIBRATION_SAMPLES:
                return samples
    if not samples:
        raise ValueError(f"{name} is empty: give at least one example.")
    return samples


def _is_one_batch(data, specs):
    """Is `data` the inputs of one batch (rather than an iterable of batches)?"""
    if isinstance(data, dict) or hasattr(data, "shape"):
        return True
    return (
        len(specs) > 1
        and isinstance(data, (list, tuple))
        and len(data) == len(specs)
        and all(hasattr(a, "shape") and len(a.shape) == len(s.shape) for a, s in zip(data, specs))
    )

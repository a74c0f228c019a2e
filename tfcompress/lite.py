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
import time
import warnings

import keras
import numpy as np

from tfcompress import _export, _flatbuffer, _graph, _litert, _rewrite, _scoring, _validate
from tfcompress._quiet import hold_back_fd2
from tfcompress._wrapper import strip_for_export

QUANTIZATION_MODES = (None, "float16", "dynamic", "int8", "int16x8")
# Modes that quantize activations: calibrated on representative data (or QAT ranges for int8).
FULL_INTEGER_MODES = ("int8", "int16x8")


def convert(
    model,
    quantization=None,
    representative_data=None,
    int8_io=False,
    output_path=None,
    rnn="auto",
):
    """Converts a Keras model to a `.tflite` flatbuffer (builtin TFLite ops only).

    Pruning and clustering wrappers are stripped first (their masks and
    centroids baked into the weights) in a copy: the model given is never
    changed. The fake-quant ops of a QAT model
    (`tfcompress.quantization.quantize_model`) are kept, and the converter
    turns them into int8 kernels with the learned ranges.

    Models of any signature convert: several inputs (a list, or a dict by
    name), several outputs, integer inputs (token ids stay int32 in the
    `.tflite`, also with `int8_io`). The file records the Keras order of the
    inputs and outputs, so `predict` returns outputs as Keras does.

    The file is kept small: each tensor is named by the first part of the
    converter's `"op;fused op;..."` name (still the layer's, as `summarize`
    shows it; the signature's input and output names stay), and the
    converter's conversion metadata, its description and the empty buffers
    of activations are left out. The outputs are the same bit for bit; a
    small int8 model's gzip is ~4% smaller (300 of 7,400 B for the mobile
    block).

    RNNs (LSTM, GRU, SimpleRNN, Bidirectional) convert to builtin ops: an
    LSTM with the standard activations becomes one fused
    UNIDIRECTIONAL_SEQUENCE_LSTM (Bidirectional: two, a REVERSE_V2 and a
    CONCATENATION) with the batch fixed to 1; other RNNs are unrolled over a
    static number of steps (any batch), or loop (WHILE, batch 1, float and
    dynamic only) when the number of steps is not fixed. With
    `rnn="unroll"` every RNN is unrolled and the batch stays free. For "int8"
    with fused LSTMs, both TFLite quantizers (and unrolling, when the steps
    are fixed) are tried and the file closest to Keras on the calibration
    data is kept: neither quantizer is reliable on the fused op alone. "int8"
    of a QAT model never fuses: QAT leaves RNNs float, and the converter
    cannot quantize around a float fused LSTM, so they are unrolled (or loop).

    Args:
        model: A Sequential, functional or subclassed (built) `keras.Model`.
        quantization: None (float32), "float16" (weights stored as float16),
            "dynamic" (int8 weights, float activations) or "int8" (full
            integer: int8 weights and activations). "int8" on a QAT model uses
            its learned ranges; on a float model it is post-training
            quantization calibrated on `representative_data`. "int16x8":
            post-training quantization of a float model to int16 activations
            and int8 weights (TFLite's 16x8 mode), for models whose
            activations lose too much in int8 (wide ranges: attention,
            regression outputs); twice int8's activation memory, and not
            accelerated on every target. In both post-training modes,
            LayerNormalization is converted as MEAN / SUB / MUL / RSQRT ops,
            which all have int8 and 16x8 kernels (the converter's own
            lowering leaves a float NEG in int8 and cannot run in 16x8).
            Ops without a 16x8 kernel stay float; the file is run once, and
            a model LiteRT cannot run in 16x8 raises.
        representative_data: For "int8" on a float model and for "int16x8":
            inputs as `predict` takes them (an array; a list or dict of
            arrays for several inputs), or an iterable / `tf.data.Dataset` of
            such batches (or of `(x, y)` batches). Up to 500 examples are
            used. Checked first (finite values, the inputs' shapes): the
            converter crashes on inf.
        int8_io: With "int8", make the float input and output tensors int8
            too (for integer-only targets such as microcontrollers and NPUs).
        output_path: If given, the flatbuffer is also written there.
        rnn: "auto" or "unroll" (see above).

    Returns:
        The `.tflite` flatbuffer as `bytes`.

    Raises:
        ValueError: for an unknown `quantization` or `rnn`; `int8_io` without
            "int8"; "int8" on a float model, or "int16x8", without
            `representative_data`; "int16x8" of a QAT model (its ranges are
            int8: use "int8") or of a model LiteRT cannot run in 16x8;
            representative data that does not fit the inputs or holds NaN /
            inf; a model whose weights hold NaN / inf; "int8" of an RNN whose
            number of steps is not fixed (unless it is a fusable LSTM); what
            the converter refuses, with its reason.
        TypeError: for a `model` that is not a `keras.Model`.

    Example:

    >>> import keras
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> flatbuffer = convert(model, quantization="dynamic")
    >>> len(flatbuffer) > 0
    True
    """
    _validate.check_one_of("quantization", quantization, QUANTIZATION_MODES)
    _validate.check_one_of("rnn", rnn, _export.RNN_MODES)
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
    layout = _export.Layout.of(model, representative_data)
    if _rewrite.is_graph_model(model):
        model = strip_for_export(model)  # a copy: the caller's model keeps its wrappers
    # A subclassed model cannot be copied, so it is exported as it is: its
    # wrappers compute the shipped weights at inference, which the converter
    # folds into constants.
    _validate.check_finite_weights(model, "convert")
    qat = _is_qat(model)
    plan, batch = _export.rnn_plan(model, layout, rnn, fuse=not (qat and quantization == "int8"))
    samples = None
    if quantization == "int16x8" and qat:
        raise ValueError(
            f"quantization='int16x8' is post-training quantization of a float model, but "
            f"model '{model.name}' is a QAT model whose learned ranges are int8: convert "
            "it with quantization='int8', or give the float model before quantize_model."
        )
    if quantization in FULL_INTEGER_MODES and not qat:
        if _rewrite.is_graph_model(model):
            model = _layer_norms_as_ops(model)
        if representative_data is None:
            hint = "" if quantization == "int16x8" else (
                ", or train the model with tfcompress.quantization.quantize_model first"
            )
            raise ValueError(
                f"quantization={quantization!r} on a float model is post-training "
                "quantization and needs representative_data (a numpy array or batches of "
                "typical inputs, ~100-500 examples) to calibrate the activation ranges. "
                f"Pass representative_data=x_train[:500]{hint}."
            )
        looping = [layer.name for layer, how in plan if how == "loop"]
        if looping:
            raise ValueError(
                f"quantization={quantization!r} needs RNNs over a fixed number of steps, but {looping} "
                "read sequences of any length (the TFLite calibrator crashes on their "
                "loop). Give keras.Input a fixed number of steps, or use 'dynamic'."
            )
        samples = _export.calibration_samples(representative_data, layout, batch)
    with _native_logs_held_back():
        if quantization == "int8" and samples is not None and any(how == "fuse" for _, how in plan):
            flatbuffer, variant = _best_int8_lstm(model, layout, plan, batch, samples, int8_io)
        else:
            flatbuffer = _export.convert_once(model, layout, plan, batch, quantization, samples, int8_io)
            variant = None
    if quantization == "int16x8":
        _check_runs_16x8(flatbuffer, layout, samples[0], model.name)
    metadata = {
        "version": 1,
        "input_structure": layout.structure,
        "inputs": layout.names,
        "output_structure": layout.output_structure,
        "outputs": _output_names(flatbuffer, layout),
        "batch_size": batch,
        "rnn": {layer.name: how for layer, how in plan},
        "int8_variant": variant,
    }
    flatbuffer = _flatbuffer.rewrite(
        flatbuffer, metadata, unclip_lstm=quantization in (None, "float16", "dynamic")
    )
    if output_path is not None:
        os.makedirs(os.path.dirname(os.path.abspath(output_path)), exist_ok=True)
        with open(output_path, "wb") as f:
            f.write(flatbuffer)
    return flatbuffer


def _best_int8_lstm(model, layout, plan, batch, samples, int8_io):
    """The int8 file closest to Keras among the quantizers (and unrolling) for fused LSTMs."""
    candidates = [("fused, legacy quantizer", plan, batch, False), ("fused", plan, batch, True)]
    if all(how == "fuse" for _, how in plan) and all(None not in s.shape[1:] for s in layout.specs):
        candidates.append(("unrolled", [(layer, "unroll") for layer, _ in plan], None, True))
    check = samples[:64]
    arrays = [np.concatenate([s[name] for s in check]) for name in layout.names]
    expected = keras.tree.flatten(model(layout.keras_inputs(arrays), training=False))
    best = None
    for name, candidate, candidate_batch, new_quantizer in candidates:
        flatbuffer = _export.convert_once(
            model, layout, candidate, candidate_batch, "int8", samples, int8_io, new_quantizer
        )
        runtime = _litert.Runtime(flatbuffer, order=(layout.names, _output_names(flatbuffer, layout)))
        got = runtime.run(arrays, 64)
        score = min(_cosine(np.asarray(e), g) for e, g in zip(expected, got))
        if best is None or score > best[0] + 1e-3:
            best = (score, flatbuffer, name)
        if score > 0.999:
            break
    if best[0] < 0.99:
        warnings.warn(
            f"The int8 file of model '{model.name}' agrees with Keras only to cosine "
            f"{best[0]:.3f} on the calibration data (best of: {', '.join(c[0] for c in candidates)}): "
            f"TFLite's int8 kernel of the fused LSTMs {[l.name for l, _ in plan]} loses "
            "precision here. Give keras.Input a fixed number of steps (the LSTMs can then be "
            "unrolled), or use quantization='dynamic'.",
            stacklevel=3,
        )
    return best[1], best[2]


def _layer_norms_as_ops(model):
    """`model` with each LayerNormalization computed as MEAN / SUB / MUL / RSQRT ops.

    For post-training int8 / 16x8: the converter's own lowering has a NEG
    with no int8 kernel (a float island) and a SQUARED_DIFFERENCE with no
    int16 one (LiteRT cannot run the 16x8 file); every op of this form has
    both. (QAT models compute LayerNorm as these ops already.)
    """
    from tfcompress.quantization.kernels import AsTFLiteOps

    norm = keras.layers.LayerNormalization
    if not any(isinstance(layer, norm) for layer in model._flatten_layers()):
        return model
    return _graph.rebuild(model, replace=lambda layer: AsTFLiteOps(layer) if isinstance(layer, norm) else None)


def _check_runs_16x8(flatbuffer, layout, sample, name):
    """Runs the 16x8 file once: the converter emits some int16 ops LiteRT has no kernel for."""
    runtime = _litert.Runtime(flatbuffer, order=(layout.names, _output_names(flatbuffer, layout)))
    try:
        runtime.run([sample[n] for n in layout.names], 1)
    except ValueError as error:
        raise ValueError(
            f"quantization='int16x8' converted model '{name}', but LiteRT cannot run the "
            f"result ({str(error).split(': ', 1)[-1]}): its 16x8 kernels do not cover every "
            "op the converter quantizes. "
            "Use quantization='int8' (QAT for transformers) or 'dynamic'."
        ) from None


def _cosine(a, b):
    a, b = a.ravel().astype("float64"), b.ravel().astype("float64")
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def _output_names(flatbuffer, layout):
    """The signature's output names in Keras order (`output_<i>`, or sorted dict keys)."""
    names = list(_litert.signature_outputs(flatbuffer))
    if layout.output_structure == "dict":
        return sorted(names)
    return sorted(names, key=lambda n: int(n.rsplit("_", 1)[1]))


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
    names = [name for name, _ in runtime.outputs]
    labels = _scoring.labels_per_output(y, names, arrays[0])
    outputs = runtime.run(arrays, batch_size)
    scores = [
        None if label is None else _scoring.accuracy(out, label, producer, threshold, label_name)
        for out, (label_name, label), producer in zip(outputs, labels, runtime.output_producers())
    ]
    return {"accuracy": runtime.structure(scores), "num_examples": len(arrays[0])}


def benchmark(tflite, num_threads=1, runs=200, warmup=20):
    """Per-inference latency of a `.tflite` model on this CPU (batch of 1).

    Inputs are random floats (zeros for integer inputs such as token ids);
    dimensions the model leaves free besides the batch (e.g. the number of
    steps of an RNN converted without a fixed length) are set to 1.

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
    _validate.check_int("batch_size", batch_size, minimum=1)
    runtime = _litert.Runtime(tflite, num_threads)
    if not runtime.ordered_inputs and not isinstance(x, dict):
        raise ValueError(
            f"{runtime.where} does not record the order of its {len(runtime.inputs)} inputs "
            "(it was not written by tfcompress.lite.convert): pass x as a dict by input "
            f"name {[name for name, _ in runtime.inputs]}."
        )
    return runtime, _validate.check_inputs(x, runtime.input_specs())


@contextlib.contextmanager
def _native_logs_held_back():
    """Holds back what the exporter and converter print to file descriptor 2.

    Their C++ layers log a few dozen lines per conversion, written straight to
    the process' stderr where `TF_CPP_MIN_LOG_LEVEL` set after TensorFlow's
    import cannot silence them. If conversion fails, the error says why (the
    converter's reason is in its message) and carries the log as a note, shown
    with its traceback (`tfcompress --debug`), so the CLI keeps its one line.
    """
    release = hold_back_fd2()
    try:
        yield
    except BaseException as error:
        log = release().strip()
        if log and hasattr(error, "add_note"):  # Python 3.11+
            error.add_note(f"TensorFlow's log of the conversion:\n{log}")
        elif log:
            sys.stderr.write(log + "\n")
        raise
    release()


def _is_qat(model):
    from tfcompress.quantization.wrapper import QuantizeWrapper

    return any(isinstance(l, QuantizeWrapper) for l in _rewrite.iter_layers(model))



"""From a Keras model to a `.tflite`: the export signature, RNNs, calibration samples.

* Signature: the SavedModel is exported with the model's own input structure
  (one tensor, a list or a dict), each input with its dtype (int32 token ids
  stay int32) and a name: the dict key, or the `keras.Input`'s layer name
  (the names Keras itself accepts in a dict). Outputs are named `output_0`,
  `output_1`, ... in Keras order, or keep their dict keys. The `.tflite` does
  not keep Keras' order of inputs (the interpreter lists them in no fixed
  order), so `convert` records it as metadata (`tfcompress._flatbuffer`).
* RNNs: every Keras 3 RNN traces to a While loop over TensorLists, which the
  converter lowers to builtin ops only with a static batch. So, for the time
  of the export (the layers are restored afterwards): an LSTM with the standard
  activations becomes the converter's fused `UNIDIRECTIONAL_SEQUENCE_LSTM`
  (a tf.function the converter recognises by its `api_implements="lstm_*"`
  attribute; this needs the batch fixed to 1); other RNNs are unrolled when the
  sequence length is static (any batch), else traced as a WHILE loop with the
  batch fixed to 1 (float and dynamic only: the int8 calibrator segfaults on
  WHILE loops).
"""

import contextlib
import tempfile
import uuid
import warnings

import keras
import numpy as np

from tfcompress import _rewrite, _validate
from tfcompress.quantization import verify

# Samples of representative data used to calibrate post-training int8.
MAX_CALIBRATION_SAMPLES = 500
RNN_MODES = ("auto", "unroll")


class Layout:
    """How a Keras model's inputs and outputs map to the `.tflite` signature.

    Attributes:
        structure: "single", "list" or "dict": the Keras input structure.
        specs: One `_validate.InputSpec` per input, in Keras order; its name
            is the signature name (dict key or input layer name).
        output_structure: "single", "list" or "dict".
    """

    def __init__(self, structure, specs, output_structure):
        self.structure = structure
        self.specs = specs
        self.output_structure = output_structure

    @classmethod
    def of(cls, model, representative_data=None):
        """The layout of a built Keras model (see `_validate.InputSpec`)."""
        if _rewrite.is_graph_model(model):
            _validate.check_built(model, "convert")
            struct = model.inputs if isinstance(model, keras.Sequential) else model.input
            outputs = model.outputs if isinstance(model, keras.Sequential) else model.output
            if isinstance(struct, dict):
                specs = [_spec(key, struct[key]) for key in sorted(struct)]
                structure = "dict"
            else:
                tensors = list(struct) if isinstance(struct, (list, tuple)) else [struct]
                specs = [_spec(_input_name(t), t) for t in tensors]
                structure = "list" if isinstance(struct, (list, tuple)) and len(tensors) > 1 else "single"
            if isinstance(outputs, dict):
                out = "dict"
            else:
                out = "list" if isinstance(outputs, (list, tuple)) and len(outputs) > 1 else "single"
            return cls(structure, specs, out)
        shapes = getattr(model, "_build_shapes_dict", None) or {}
        if len(shapes) == 1:
            shape = next(iter(shapes.values()))
            if shape and not isinstance(shape[0], (list, tuple, dict)):
                return cls("single", [_validate.InputSpec("inputs", tuple(shape), "float32")], "single")
        if isinstance(representative_data, np.ndarray) and representative_data.ndim >= 1:
            shape = (None,) + representative_data.shape[1:]
            return cls("single", [_validate.InputSpec("inputs", shape, "float32")], "single")
        raise ValueError(
            f"Cannot tell the input shape of subclassed model '{model.name}'. Build it "
            "with model.build((None, ...)) or call it once on a batch before converting."
        )

    @property
    def names(self):
        return [spec.name for spec in self.specs]

    def signature(self, batch):
        """The `input_signature` of `model.export`: one argument with the model's structure."""
        import tensorflow as tf

        specs = [
            tf.TensorSpec((batch,) + tuple(s.shape[1:]), tf.as_dtype(s.dtype.name), name=s.name)
            for s in self.specs
        ]
        if self.structure == "dict":
            return [dict(zip(self.names, specs))]
        if self.structure == "list":
            return [specs]
        return specs

    def keras_inputs(self, arrays):
        """Arrays (Keras order) packed as the Keras model takes them."""
        if self.structure == "dict":
            return dict(zip(self.names, arrays))
        return list(arrays) if self.structure == "list" else arrays[0]


def _spec(name, tensor):
    return _validate.InputSpec(name, tuple(tensor.shape), tensor.dtype or "float32")


def _input_name(tensor):
    """The name Keras accepts for this input in a dict: its InputLayer's name."""
    history = getattr(tensor, "_keras_history", None)
    operation = getattr(history, "operation", None)
    return getattr(operation, "name", None) or tensor.name


# -- calibration ------------------------------------------------------------------


def calibration_samples(data, layout, batch):
    """Up to 500 checked examples of `data` as dicts `{signature name: array}`.

    `data` is one batch (an array, a list of arrays in Keras order, a dict by
    input name) or an iterable of batches (each possibly an `(x, y)` tuple).
    Each sample holds `batch` examples (the converted batch size) or one.
    """
    name, specs, step = "representative_data", layout.specs, batch or 1
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
    for x in batches:
        if isinstance(x, tuple) and len(x) in (2, 3) and not _is_one_batch(x, specs):
            x = x[0]  # an (x, y) or (x, y, sample_weight) batch
        if len(specs) == 1 and np.ndim(x) == len(specs[0].shape) - 1:
            x = np.asarray(x)[np.newaxis]  # one example without its batch axis
        arrays = _validate.check_inputs(x, specs, name=name)
        for start in range(0, len(arrays[0]) - step + 1, step):
            samples.append({s.name: a[start : start + step] for s, a in zip(specs, arrays)})
            if len(samples) * step >= MAX_CALIBRATION_SAMPLES:
                return samples
    if not samples:
        raise ValueError(f"{name} is empty: give at least {step} example(s).")
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


# -- RNNs ---------------------------------------------------------------------------


def rnn_plan(model, layout, rnn, fuse=True):
    """How each RNN layer is exported, and the batch size the export needs.

    `fuse=False` never fuses LSTMs (int8 of a QAT model: the converter cannot
    quantize around a float fused LSTM, "Failed to duplicate values for the
    stateful op"), so they are unrolled or loop like the other RNNs.

    Returns:
        `([(layer, "fuse" | "unroll" | "loop")], batch)` where batch is 1 if
        a fused LSTM or a loop needs a static batch, else None (any batch).
    """
    static_default = all(None not in s.shape[1:] for s in layout.specs)
    static = {}
    layers = [model] + list(_rewrite.iter_layers(model))
    for layer in layers:
        if isinstance(layer, (keras.layers.RNN, keras.layers.Bidirectional)):
            value = _static_time(layer, static_default)
            if isinstance(layer, keras.layers.Bidirectional):
                static[id(layer.forward_layer)] = static[id(layer.backward_layer)] = value
            else:
                static.setdefault(id(layer), value)
    plan = []
    for layer in layers:
        if not isinstance(layer, keras.layers.RNN):
            continue
        if rnn == "auto" and fuse and _fusable_lstm(layer):
            plan.append((layer, "fuse"))
        elif static.get(id(layer), static_default):
            plan.append((layer, "unroll"))
        elif rnn == "unroll":
            raise ValueError(
                f"rnn='unroll' needs a static sequence length, but layer '{layer.name}' "
                "reads sequences of any length: give keras.Input a fixed number of steps."
            )
        else:
            plan.append((layer, "loop"))
    needs_batch_1 = any(how in ("fuse", "loop") for _, how in plan)
    return plan, (1 if needs_batch_1 else None)


def _static_time(layer, default):
    try:
        return layer.input.shape[1] is not None
    except (AttributeError, ValueError, IndexError):  # never called symbolically
        return default


def _fusable_lstm(layer):
    cell = getattr(layer, "cell", None)
    return (
        isinstance(layer, keras.layers.LSTM)
        and cell.use_bias
        and not layer.stateful
        and not layer.return_state
        and cell.activation is keras.activations.tanh
        and cell.recurrent_activation is keras.activations.sigmoid
    )


@contextlib.contextmanager
def rnn_export_mode(plan):
    """Patches the planned RNN layers for the export and restores them after."""
    saved = []
    try:
        for layer, how in plan:
            saved.append((layer, layer.unroll, getattr(layer, "use_cudnn", None)))
            if hasattr(layer, "use_cudnn"):
                layer.use_cudnn = False  # CudnnRNN ops do not convert
            if how == "unroll":
                layer.unroll = True
            elif how == "fuse":
                layer.inner_loop = _fused_inner_loop(layer)
        yield
    finally:
        for layer, unroll, cudnn in saved:
            layer.unroll = unroll
            if cudnn is not None:
                layer.use_cudnn = cudnn
            layer.__dict__.pop("inner_loop", None)


def _fused_inner_loop(layer):
    import tensorflow as tf

    fused = _lstm_composite(layer.go_backwards)
    original = type(layer).inner_loop

    def inner_loop(sequences, initial_state, mask=None, training=False):
        if mask is not None:  # the fused op has no mask: the layer's own loop
            layer.unroll = sequences.shape[1] is not None
            return original(layer, sequences, initial_state, mask=mask, training=training)
        # Tensors, not variables: with variables the converter silently does not fuse.
        kernel, recurrent, bias = (
            tf.convert_to_tensor(v) for v in (layer.cell.kernel, layer.cell.recurrent_kernel, layer.cell.bias)
        )
        last, sequence, h, c, _ = fused(sequences, initial_state[0], initial_state[1], kernel, recurrent, bias)
        return last, sequence, [h, c]

    return inner_loop


def _lstm_composite(go_backwards):
    """A tf.function the converter replaces by one UNIDIRECTIONAL_SEQUENCE_LSTM.

    The converter's Keras-LSTM fusion takes a function marked
    `api_implements="lstm_<unique>"` with `time_major` (and `go_backwards`)
    attributes, 6 arguments (inputs, h0, c0, kernel, recurrent kernel, bias)
    of static shapes and 5 results of which it uses the first two. The body
    (Keras' LSTM math, gates i, f, c, o) only runs if the fusion does not fire.
    """
    import tensorflow as tf

    attributes = {
        "api_implements": "lstm_" + uuid.uuid4().hex,
        "time_major": False,
        "go_backwards": bool(go_backwards),
    }

    @tf.function(experimental_attributes=attributes, autograph=False)
    def lstm(inputs, init_h, init_c, kernel, recurrent_kernel, bias):
        x = tf.reverse(inputs, [1]) if go_backwards else inputs
        xw = tf.einsum("btf,fg->btg", x, kernel) + bias

        def cell(state, xw_t):
            h, c = state
            i, f, g, o = tf.split(xw_t + tf.matmul(h, recurrent_kernel), 4, axis=1)
            c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
            return tf.sigmoid(o) * tf.tanh(c), c

        if x.shape[1] is not None:
            state, outputs = (init_h, init_c), []
            for t in range(x.shape[1]):
                state = cell(state, xw[:, t])
                outputs.append(state[0])
            sequence = tf.stack(outputs, axis=1)
        else:
            hs, cs = tf.scan(cell, tf.transpose(xw, [1, 0, 2]), initializer=(init_h, init_c))
            sequence, state = tf.transpose(hs, [1, 0, 2]), (hs[-1], cs[-1])
        return sequence[:, -1], sequence, state[0], state[1], tf.constant(0.0)

    return lstm


# -- the conversion -------------------------------------------------------------------


def convert_once(model, layout, plan, batch, quantization, samples, int8_io, new_quantizer=True):
    """Exports `model` (RNNs as planned) and runs the TFLite converter once."""
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as tmp, rnn_export_mode(plan):
        model.export(tmp, format="tf_saved_model", verbose=False, input_signature=layout.signature(batch))
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
        # CONVERSION_METADATA, the converter's record of its options and environment:
        # nothing reads it at run time.
        converter.exclude_conversion_metadata = True
        if quantization is not None:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantization == "float16":
            converter.target_spec.supported_types = [tf.float16]
        if samples is not None:
            converter.representative_dataset = lambda: iter(samples)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            if quantization == "int16x8":
                # Ops without a 16x8 kernel (NEG in LayerNormalization, ...) stay float.
                converter.target_spec.supported_ops = [
                    tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8,
                    tf.lite.OpsSet.TFLITE_BUILTINS,
                ]
            converter.experimental_new_quantizer = new_quantizer
        if int8_io:  # float inputs and outputs become int8; int32 token ids stay int32
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
        low_bit = verify.prepare_converter(converter, model)
        try:
            with warnings.catch_warnings():
                # The converter's own calibrator still runs tf.lite.Interpreter.
                warnings.filterwarnings("ignore", message=r"\s*Warning: tf.lite.Interpreter is deprecated")
                flatbuffer = converter.convert()
        except Exception as error:  # noqa: BLE001 - ConverterError and friends
            raise ValueError(
                f"The TFLite converter cannot convert model '{model.name}': {_converter_reason(error)}"
            ) from error
    if low_bit:
        verify.check_int4(flatbuffer, low_bit)  # the converter may silently keep them float
    return flatbuffer


def _converter_reason(error):
    """The converter's own explanation, without its MLIR location prefixes."""
    reasons = []
    for line in str(error).splitlines():
        if "error:" not in line:
            continue
        reason = line.rsplit("error:", 1)[1].strip()
        if reason and reason not in reasons:
            reasons.append(reason)
    return "; ".join(reasons[:2]) or " ".join(str(error).split())[:300]

"""Running a checked `.tflite` with LiteRT: inputs and outputs by name, in Keras order.

A `.tflite` written by `lite.convert` carries the SavedModel's serving
signature: its inputs by the Keras input names, its outputs as `output_0`,
`output_1`, ... in the order of the Keras model's outputs (or by key when the
Keras outputs are a dict). The interpreter's own output list follows the
converter's tensor order instead, which is why outputs are read through the
signature here. A `.tflite` without a signature is run in its subgraph's
order.
"""

import re

import numpy as np

from tfcompress import _flatbuffer, _validate
from tfcompress._quiet import hold_back_fd2

# A model converted for a fixed batch gets its last batch padded to that size.
_MAX_FIXED_BATCH = 1 << 16
# What LiteRT prints to fd 2 the first time it creates its CPU delegate.
_DELEGATE_NOTE = re.compile(r"^INFO: (Created TensorFlow Lite|Initialized TensorFlow Lite)")


class Runtime:
    """A LiteRT interpreter over a checked `.tflite`, with its input and output specs.

    Attributes:
        data: The flatbuffer bytes.
        inputs: `[(name, detail)]` in the model's input order.
        outputs: `[(name, detail)]` in the Keras model's output order.
        output_structure: "single", "list" or "dict": what `predict` returns.
    """

    def __init__(self, tflite, num_threads=None, name="tflite", order=None):
        self.interpreter, self.data, self.where = _validate.load_interpreter(
            tflite, name, num_threads
        )
        interpreter = self.interpreter
        details = {d["index"]: d for d in interpreter.get_input_details()}
        details.update({d["index"]: d for d in interpreter.get_output_details()})
        signature = _serving_signature(interpreter)
        try:
            metadata = _flatbuffer.io_metadata(self.data)
        except _flatbuffer.CorruptModel as error:
            raise ValueError(f"{self.where} is not a valid TFLite model: {error}") from None
        if order is not None:
            metadata = {"inputs": order[0], "outputs": order[1], "output_structure": "list"}
        if signature is None:
            self.inputs = [(d["name"], d) for d in interpreter.get_input_details()]
            self.outputs = [(d["name"], d) for d in interpreter.get_output_details()]
            structure = "list"
        elif metadata is not None:
            self.inputs = self._named(signature["inputs"], metadata.get("inputs"), details, "input")
            self.outputs = self._named(signature["outputs"], metadata.get("outputs"), details, "output")
            structure = "dict" if metadata.get("output_structure") == "dict" else "list"
        else:  # not written by tfcompress: the signature's own names
            names = sorted(signature["inputs"])
            self.inputs = [(n, details[signature["inputs"][n]]) for n in names]
            names = list(signature["outputs"])
            numbered = all(re.fullmatch(r"output_\d+", n) for n in names)
            names.sort(key=(lambda n: int(n[len("output_"):])) if numbered else None)
            self.outputs = [(n, details[signature["outputs"][n]]) for n in names]
            structure = "list" if numbered else "dict"
        # Without recorded Keras order, several inputs can only be matched by name.
        self.ordered_inputs = signature is None or metadata is not None or len(self.inputs) == 1
        self.output_structure = "single" if len(self.outputs) == 1 else structure
        self._shapes = None

    def _named(self, by_name, order, details, what):
        if not isinstance(order, list) or sorted(order) != sorted(by_name):
            raise ValueError(
                f"{self.where} is not a valid TFLite model: its recorded {what} names "
                f"{order!r} do not match its signature {sorted(by_name)}"
            )
        return [(name, details[by_name[name]]) for name in order]

    def input_specs(self):
        """`_validate.InputSpec` of each input (real-valued for quantized int8 inputs)."""
        specs = []
        for name, detail in self.inputs:
            dtype = detail["dtype"]
            if _is_quantized(detail):
                dtype = np.float32  # predict quantizes real values itself
            specs.append(_validate.InputSpec(name, detail["shape_signature"], dtype))
        return specs

    def fixed_batch(self):
        """The batch size the model was converted for, or None if any batch fits."""
        sizes = {int(d["shape_signature"][0]) for _, d in self.inputs if len(d["shape_signature"])}
        sizes.discard(-1)
        return sizes.pop() if len(sizes) == 1 else None

    def run(self, arrays, batch_size):
        """Runs checked input arrays through the model in batches.

        Returns:
            One numpy array per output (Keras order); quantized outputs are
            dequantized to float32.
        """
        n = len(arrays[0])
        fixed = self.fixed_batch()
        if fixed is not None and fixed > _MAX_FIXED_BATCH:
            raise ValueError(
                f"{self.where} takes batches of exactly {fixed} examples: too many to "
                "pad a batch to (the file is corrupted, or convert it with a free batch)."
            )
        step = fixed or batch_size
        results = [[] for _ in self.outputs]
        for start in range(0, n, step):
            chunk = [a[start : start + step] for a in arrays]
            rows = len(chunk[0])
            if fixed and rows < fixed:  # pad the last chunk to the converted batch size
                chunk = [np.concatenate([c, np.repeat(c[-1:], fixed - rows, axis=0)]) for c in chunk]
            try:
                self._prepare([c.shape for c in chunk])
                for (_, detail), c in zip(self.inputs, chunk):
                    self.interpreter.set_tensor(detail["index"], _to_input(c, detail))
                self.interpreter.invoke()
            except RuntimeError as error:  # a kernel refused the model or the data
                raise ValueError(
                    f"LiteRT cannot run {self.where} on these inputs: "
                    f"{' '.join(str(error).split())}"
                ) from None
            for out, (name, detail) in zip(results, self.outputs):
                value = self.interpreter.get_tensor(detail["index"])
                if value.ndim == 0 or len(value) != len(chunk[0]):
                    raise ValueError(
                        f"{self.where} returned output '{name}' of shape {value.shape} for "
                        f"{len(chunk[0])} examples: its outputs have no batch axis, or the "
                        "file is corrupted."
                    )
                out.append(_from_output(value, detail)[:rows])
        return [np.concatenate(parts, axis=0) for parts in results]

    def _prepare(self, shapes):
        shapes = [tuple(int(d) for d in s) for s in shapes]
        if shapes != self._shapes:
            for (_, detail), shape in zip(self.inputs, shapes):
                self.interpreter.resize_tensor_input(detail["index"], shape)
            allocate(self.interpreter)
            self._shapes = shapes
        # Stateful ops (fused LSTMs keep their state in variable tensors)
        # start every batch from zeros, as a Keras model without stateful=True.
        self.interpreter.reset_all_variables()

    def output_producers(self):
        """The op behind each output (`"LOGISTIC"`, `"SOFTMAX"`, ...), Keras order."""
        return _flatbuffer.output_producers(self.data, [d["index"] for _, d in self.outputs])

    def structure(self, values):
        """Packs per-output values as `predict` returns them."""
        if self.output_structure == "single":
            return values[0]
        if self.output_structure == "dict":
            return {name: v for (name, _), v in zip(self.outputs, values)}
        return list(values)


def signature_outputs(data):
    """The output names of a flatbuffer's serving signature (a fresh interpreter)."""
    from ai_edge_litert.interpreter import Interpreter

    signature = _serving_signature(Interpreter(model_content=data))
    return list(signature["outputs"]) if signature else []


def allocate(interpreter):
    """`allocate_tensors` without LiteRT's delegate note on stderr."""
    release = hold_back_fd2()
    try:
        interpreter.allocate_tensors()
    finally:
        kept = [l for l in release().splitlines() if l.strip() and not _DELEGATE_NOTE.match(l)]
        if kept:
            import sys

            sys.stderr.write("\n".join(kept) + "\n")


def _serving_signature(interpreter):
    signatures = interpreter._get_full_signature_list()  # noqa: SLF001 - names -> tensor indices
    if not signatures:
        return None
    key = "serving_default" if "serving_default" in signatures else sorted(signatures)[0]
    try:  # a signature of another subgraph (a multi-signature file): run subgraph 0 as is
        if interpreter._interpreter.GetSubgraphIndexFromSignature(key) != 0:  # noqa: SLF001
            return None
    except (AttributeError, ValueError, RuntimeError):
        return None
    return signatures[key]


def _is_quantized(detail):
    scale, _ = detail["quantization"]
    return detail["dtype"] in (np.int8, np.uint8, np.int16) and scale > 0


def _to_input(x, detail):
    if _is_quantized(detail):
        scale, zero_point = detail["quantization"]
        info = np.iinfo(detail["dtype"])
        q = np.round(np.asarray(x, "float32") / scale + zero_point)
        return np.clip(q, info.min, info.max).astype(detail["dtype"])
    return np.asarray(x, detail["dtype"])


def _from_output(y, detail):
    if _is_quantized(detail):
        scale, zero_point = detail["quantization"]
        return ((y.astype("float32") - zero_point) * scale).astype("float32")
    return y.astype("float32") if y.dtype.kind == "f" else y.copy()

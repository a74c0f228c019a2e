"""Checking a `.tflite` flatbuffer before anything loads it.

A `.tflite` is a flatbuffer: offsets into itself, read without copying. LiteRT
verifies that those offsets stay inside the buffer, but not what the values
mean, and a file that passes its verifier can still crash the process when the
interpreter allocates it: a bit flip that gives an int8 tensor the zero point
-16512 or a negative scale, or that turns a convolution's filter into a
"left out" input (-1), segfaults inside the XNNPACK delegate. So
`check_model` walks the model first, in Python (where a bad offset raises
instead of reading stray memory), with every vector length bounded by the
file's size, and checks what the runtime trusts: tensor, buffer, operator-code
and subgraph indices in range, inputs left out only where the operator allows
it; shapes not negative; constant buffers exactly as large as their tensor's
shape and type say; quantization scales finite and positive, zero points
inside their integer type, per-channel parameters matching the channel count;
options of the operator's own type with usable values (strides, split
counts); and the data flow: each operator reads tensors that hold data by
then, writes none that is a model input, a constant or another operator's,
and the arithmetic operators keep their input's type. The per-operator rules
are tables in `tfcompress._flatbuffer_rules`.
"""

import numpy as np

from tfcompress import _flatbuffer_rules as rules

# numpy dtype and bits per element of each TensorType name; None: no fixed size.
TYPES = {
    "FLOAT32": (np.float32, 32),
    "FLOAT16": (np.float16, 16),
    "FLOAT64": (np.float64, 64),
    "BFLOAT16": (None, 16),
    "INT8": (np.int8, 8),
    "UINT8": (np.uint8, 8),
    "INT16": (np.int16, 16),
    "UINT16": (np.uint16, 16),
    "INT32": (np.int32, 32),
    "UINT32": (np.uint32, 32),
    "INT64": (np.int64, 64),
    "UINT64": (np.uint64, 64),
    "BOOL": (np.bool_, 8),
    "COMPLEX64": (np.complex64, 64),
    "COMPLEX128": (np.complex128, 128),
    "INT4": (None, 4),
    "UINT4": (None, 4),
    "INT2": (None, 2),
    "FLOAT8_E4M3FN": (None, 8),
    "FLOAT8_E5M2": (None, 8),
    "STRING": (None, None),
    "RESOURCE": (None, None),
    "VARIANT": (None, None),
}
_MAX_RANK = 16
# Integer types numpy has no dtype for.
_INTEGER_RANGES = {"INT4": (-8, 7), "UINT4": (0, 15), "INT2": (-2, 1)}
class CorruptModel(ValueError):
    """The flatbuffer is not a model the runtime can safely load."""


def schema():
    from ai_edge_litert import schema_py_generated

    return schema_py_generated


def enum_names(enum):
    return {v: k for k, v in vars(enum).items() if not k.startswith("_")}


def check_model(data):
    """Raises `CorruptModel` unless `data` is a TFLite model that is safe to load.

    Args:
        data: The bytes of a `.tflite` file (starting with the flatbuffer
            root offset and the "TFL3" identifier).

    Raises:
        CorruptModel: naming the first problem found.
    """
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise CorruptModel(
            f"not a TFLite model (missing the 'TFL3' identifier; it starts with {bytes(data[:8])!r})"
        )
    try:
        _Walk(data).model()
    except CorruptModel:
        raise
    except Exception as error:  # noqa: BLE001 - any failure to read is a corrupt file
        raise CorruptModel(
            f"truncated or corrupted ({_qualified(type(error))} while reading the "
            f"flatbuffer: {error})"
        ) from None


def _qualified(cls):
    return cls.__name__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__name__}"


class _Walk:
    """One pass over a model's tables, bounding every length by the file size."""

    def __init__(self, data):
        self.data = data
        self.s = schema()
        self.type_names = enum_names(self.s.TensorType)
        self.op_names = enum_names(self.s.BuiltinOperator)
        self.max_builtin = max(self.op_names)
        self.option_names = enum_names(self.s.BuiltinOptions)
        by_key = {n.lower(): v for v, n in self.option_names.items()}
        self.expected_options = {}
        for op in self.op_names.values():
            key = rules.OPTIONS_OF.get(op, op.replace("_", "") + "Options").lower()
            if key in by_key:
                self.expected_options[op] = by_key[key]

    def length(self, n, what, element_bytes=1):
        if n < 0 or n * element_bytes > len(self.data):
            raise CorruptModel(f"{what} claims {n} entries, more than the file can hold")
        return n

    def model(self):
        s, data = self.s, self.data
        model = s.Model.GetRootAs(data, 0)
        n_buffers = self.length(model.BuffersLength(), "the buffer list", 4)
        for b in range(n_buffers):
            buffer = model.Buffers(b)
            offset, size = buffer.Offset(), buffer.Size()
            if offset > 1 and offset + size > len(data):
                raise CorruptModel(
                    f"buffer {b} lies at bytes {offset}..{offset + size}, past the end of "
                    f"the {len(data)}-byte file"
                )
            self.length(buffer.DataLength(), f"buffer {b}")
        n_codes = self.length(model.OperatorCodesLength(), "the operator-code list", 4)
        for c in range(n_codes):
            code = model.OperatorCodes(c)
            builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
            if not 0 <= builtin <= self.max_builtin:
                raise CorruptModel(f"operator code {c} is the unknown builtin {builtin}")
        n_graphs = self.length(model.SubgraphsLength(), "the subgraph list", 4)
        if n_graphs == 0:
            raise CorruptModel("the model has no subgraph")
        for g in range(n_graphs):
            self.subgraph(model, g, n_buffers, n_codes, n_graphs)
        for k in range(self.length(model.SignatureDefsLength(), "the signature list", 4)):
            signature = model.SignatureDefs(k)
            index = signature.SubgraphIndex()
            if not 0 <= index < n_graphs:
                raise CorruptModel(f"signature {k} names subgraph {index} of {n_graphs}")
            graph = model.Subgraphs(index)
            for what, get, count, allowed in (
                ("input", signature.Inputs, signature.InputsLength, graph.InputsAsNumpy()),
                ("output", signature.Outputs, signature.OutputsLength, graph.OutputsAsNumpy()),
            ):
                for i in range(self.length(count(), f"signature {k}", 4)):
                    tensor = get(i).TensorIndex()
                    if tensor not in allowed:
                        raise CorruptModel(
                            f"signature {k} names tensor {tensor} as an {what}, but it is "
                            f"not an {what} of subgraph {index}"
                        )
                    get(i).Name()

    def subgraph(self, model, g, n_buffers, n_codes, n_graphs):
        graph = model.Subgraphs(g)
        n_tensors = self.length(graph.TensorsLength(), f"subgraph {g}'s tensor list", 4)
        # Per tensor: its type name; constants and variables hold data before any op runs.
        types, constants, variables, quantized = [], set(), set(), set()
        for t in range(n_tensors):
            tensor = graph.Tensors(t)
            types.append(self.tensor(model, tensor, f"tensor {t} of subgraph {g}", n_buffers))
            if tensor.Quantization() is not None and tensor.Quantization().ScaleLength():
                quantized.add(t)
            if tensor.Buffer() and _holds_data(model.Buffers(tensor.Buffer())):
                constants.add(t)
            elif tensor.IsVariable():
                variables.add(t)
        inputs = set()
        for i in range(self.length(graph.InputsLength(), f"subgraph {g}'s inputs", 4)):
            self.index(graph.Inputs(i), n_tensors, f"subgraph {g}'s inputs")
            inputs.add(graph.Inputs(i))
        outputs = []
        for i in range(self.length(graph.OutputsLength(), f"subgraph {g}'s outputs", 4)):
            self.index(graph.Outputs(i), n_tensors, f"subgraph {g}'s outputs")
            outputs.append(graph.Outputs(i))
        flow = _DataFlow(g, types, constants, variables, inputs, quantized)
        for o in range(self.length(graph.OperatorsLength(), f"subgraph {g}'s operator list", 4)):
            op = graph.Operators(o)
            if not 0 <= op.OpcodeIndex() < n_codes:
                raise CorruptModel(
                    f"operator {o} of subgraph {g} uses operator code {op.OpcodeIndex()} of {n_codes}"
                )
            code = model.OperatorCodes(op.OpcodeIndex())
            name = self.op_names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "CUSTOM")
            where = f"operator {o} ({name}) of subgraph {g}"
            many = name in rules.MANY_OPTIONAL
            optional = rules.OPTIONAL_INPUTS.get(name, set())
            for i in range(self.length(op.InputsLength(), where, 4)):
                index = op.Inputs(i)
                if index == -1 and (i in optional or (many and i > 0)):
                    continue  # an optional input left out
                self.index(index, n_tensors, f"{where} input {i}")
            for i in range(self.length(op.OutputsLength(), where, 4)):
                self.index(op.Outputs(i), n_tensors, f"{where} output {i}", -1 if many else 0)
            for i in range(self.length(op.IntermediatesLength(), where, 4)):
                self.index(op.Intermediates(i), n_tensors, f"{where} intermediate {i}", -1)
            self.options(op, name, where, n_graphs)
            flow.operator(op, name, where)
        flow.finish(outputs)

    def options(self, op, name, where, n_graphs):
        """The operator's options: of its own type, and values its kernel can use."""
        s = self.s
        kind, table = op.BuiltinOptionsType(), op.BuiltinOptions()
        if kind not in self.option_names:
            raise CorruptModel(f"{where} has options of the unknown type {kind}")
        expected = self.expected_options.get(name)
        if kind and expected is not None and kind != expected:
            raise CorruptModel(
                f"{where} has {self.option_names[kind]} where it takes "
                f"{self.option_names[expected]}"
            )
        fields = rules.OPTION_FIELDS.get(name)
        if fields is None:
            return
        if table is None or kind != expected:
            raise CorruptModel(f"{where} has no {self.option_names[expected]}")
        options = getattr(s, self.option_names[expected])()
        options.Init(table.Bytes, table.Pos)
        for field, rule in fields.items():
            value = getattr(options, field)()
            if rule == "subgraph":
                self.index(value, n_graphs, f"{where} ({field})")
            elif rule == "outputs" and value != op.OutputsLength():
                raise CorruptModel(f"{where} has {field}={value} but {op.OutputsLength()} outputs")
            elif rule == "inputs" and value != op.InputsLength():
                raise CorruptModel(f"{where} has {field}={value} but {op.InputsLength()} inputs")
            elif rule == "positive" and value < 1:
                raise CorruptModel(f"{where} has {field}={value} (must be >= 1)")

    def tensor(self, model, tensor, where, n_buffers):
        type_name = self.type_names.get(tensor.Type())
        if type_name is None:
            raise CorruptModel(f"{where} has the unknown type {tensor.Type()}")
        rank = self.length(tensor.ShapeLength(), f"{where}'s shape", 4)
        if rank > _MAX_RANK:
            raise CorruptModel(f"{where} has rank {rank} (at most {_MAX_RANK})")
        shape = [int(d) for d in tensor.ShapeAsNumpy()] if rank else []
        if any(d < 0 for d in shape):
            raise CorruptModel(f"{where} has the negative shape {shape}")
        signature = self.length(tensor.ShapeSignatureLength(), f"{where}'s shape signature", 4)
        if signature and (
            signature != rank
            or any(d != -1 and d != s for d, s in zip(tensor.ShapeSignatureAsNumpy(), shape))
        ):  # -1 marks a free dimension; the others are the shape's
            raise CorruptModel(
                f"{where} has the shape signature {tensor.ShapeSignatureAsNumpy().tolist()}, "
                f"which does not fit its shape {shape}"
            )
        tensor.Name()
        index = tensor.Buffer()
        self.index(index, n_buffers, f"{where}'s buffer")
        self.quantization(tensor, type_name, shape, where)
        if index and tensor.Sparsity() is None:
            self.constant_size(model.Buffers(index), type_name, shape, where)
        return type_name

    def constant_size(self, buffer, type_name, shape, where):
        size = buffer.Size() if buffer.Offset() > 1 else buffer.DataLength()
        bits = TYPES[type_name][1]
        if size == 0 or bits is None:
            return
        expected = -(-int(np.prod(shape, dtype=np.float64)) * bits // 8)
        if size != expected:
            raise CorruptModel(
                f"{where} of shape {shape} and type {type_name} needs {expected} bytes of "
                f"data but its buffer holds {size}"
            )

    def quantization(self, tensor, type_name, shape, where):
        quant = tensor.Quantization()
        if quant is None:
            return
        n_scale = self.length(quant.ScaleLength(), f"{where}'s scales", 4)
        n_zero = self.length(quant.ZeroPointLength(), f"{where}'s zero points", 8)
        self.length(quant.MinLength(), f"{where}'s min", 4)
        self.length(quant.MaxLength(), f"{where}'s max", 4)
        if n_scale:
            scale = quant.ScaleAsNumpy()
            if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
                raise CorruptModel(f"{where} has quantization scales that are not finite and > 0: {scale[:8]}")
        if n_zero:
            if n_scale and n_zero != n_scale:
                raise CorruptModel(f"{where} has {n_scale} scales but {n_zero} zero points")
            bounds = _INTEGER_RANGES.get(type_name)
            dtype = TYPES[type_name][0]
            if bounds is None and dtype is not None and np.issubdtype(dtype, np.integer):
                bounds = (np.iinfo(dtype).min, np.iinfo(dtype).max)
            if bounds is not None:
                zero = quant.ZeroPointAsNumpy()
                if np.any(zero < bounds[0]) or np.any(zero > bounds[1]):
                    raise CorruptModel(
                        f"{where} ({type_name}) has zero points outside [{bounds[0]}, {bounds[1]}]: {zero[:8]}"
                    )
        if n_scale > 1:
            axis = quant.QuantizedDimension()
            if not 0 <= axis < len(shape) or shape[axis] != n_scale:
                raise CorruptModel(
                    f"{where} of shape {shape} has {n_scale} per-channel scales along "
                    f"axis {axis}"
                )

    @staticmethod
    def index(value, count, where, low=0):
        if not low <= value < count:
            raise CorruptModel(f"{where} refers to index {value}, outside [0, {count})")


def _holds_data(buffer):
    return (buffer.Offset() > 1 and buffer.Size() > 0) or buffer.DataLength() > 0


# Integer types an arithmetic kernel reads as quantized real numbers.
_QUANTIZED_TYPES = ("INT8", "UINT8", "INT16")


class _DataFlow:
    """Follows one subgraph in execution order: what each operator reads and writes.

    An operator may read only tensors that hold data when it runs (inputs,
    constants, variables, outputs of earlier operators) and may write neither
    a model input, nor a constant, nor a tensor another operator writes
    (variables it may: an LSTM's state); the main arithmetic operators keep their
    input's type, and their integer tensors carry a quantization scale. A
    flipped index that breaks this makes the interpreter write into a model
    input or read a tensor of another size.
    """

    def __init__(self, g, types, constants, variables, inputs, quantized):
        self.g, self.types, self.inputs, self.constants = g, types, inputs, constants
        self.quantized = quantized
        self.ready = set(constants) | set(variables) | set(inputs)
        self.writer = {}

    def operator(self, op, name, where):
        reads = [op.Inputs(i) for i in range(op.InputsLength())]
        for i, t in enumerate(reads):
            if t >= 0 and t not in self.ready:
                raise CorruptModel(f"{where} input {i} reads tensor {t}, which nothing writes before it")
        for i in range(op.OutputsLength()):
            t = op.Outputs(i)
            if t < 0:
                continue
            if t in self.inputs or t in self.writer or t in self.constants:
                what = (
                    "a model input" if t in self.inputs
                    else f"also written by operator {self.writer[t]}" if t in self.writer
                    else "a constant"
                )
                raise CorruptModel(f"{where} output {i} writes tensor {t}, {what}")
            self.writer[t] = where
            self.ready.add(t)
        if name in rules.SAME_TYPE or name in ("QUANTIZE", "DEQUANTIZE"):
            first_output = [op.Outputs(0)] if op.OutputsLength() else []
            for t in reads[:2] + first_output:
                if t >= 0 and self.types[t] in _QUANTIZED_TYPES and t not in self.quantized:
                    raise CorruptModel(
                        f"{where} uses the {self.types[t]} tensor {t}, which has no "
                        "quantization scale"
                    )
        if name in rules.SAME_TYPE and reads and reads[0] >= 0 and op.OutputsLength():
            checked = reads[:2] if name in rules.SAME_TYPE_BINARY else reads[:1]
            out = op.Outputs(0)
            for i, t in enumerate(checked):
                if t >= 0 and out >= 0 and self.types[t] != self.types[out]:
                    raise CorruptModel(
                        f"{where} reads tensor {t} ({self.types[t]}) as input {i} but writes "
                        f"tensor {out} ({self.types[out]}): the types must match"
                    )

    def finish(self, outputs):
        for t in outputs:
            if t not in self.ready:
                raise CorruptModel(f"subgraph {self.g}'s output tensor {t} is never written")

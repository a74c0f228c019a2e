"""What tfcompress reads from (and writes into) a `.tflite` flatbuffer.

Everything here expects a model that `check_model` accepted (see
`tfcompress._flatbuffer_check`, re-exported here): the constant tensors with
their quantization (`constant_tensors`, for the report), the operator that
computes each output (`output_producers`, for `lite.evaluate`), the operators
used, and the metadata `lite.convert` writes (`rewrite`, `io_metadata`). Only
the schema that ships with `ai_edge_litert` is needed.
"""

import numpy as np

from tfcompress._flatbuffer_check import TYPES, CorruptModel, check_model, enum_names, schema

__all__ = [
    "CorruptModel",
    "check_model",
    "constant_tensors",
    "io_metadata",
    "operator_names",
    "output_producers",
    "rewrite",
]

# Operators that only move values or convert types: the output's meaning is
# decided by the op before them.
_TRANSPARENT_OPS = ("DEQUANTIZE", "QUANTIZE", "RESHAPE", "SQUEEZE", "CAST", "IDENTITY")
# INT4 weights (two per byte in the file) are read as int8 values of this dtype.
INT4 = np.dtype(np.int8, metadata={"stored_bits": 4})


def constant_tensors(data):
    """`[(name, numpy array, zero value)]` of the constant tensors of a checked model.

    Constant tensors are those whose buffer holds data; each buffer is listed
    once. For quantized tensors the zero value is the (common) zero point, so
    sparsity counts real zeros. INT4 tensors come unpacked, as int8 values
    whose dtype carries `metadata={"stored_bits": 4}`; other types numpy
    cannot hold (bfloat16, float8) are skipped.

    Args:
        data: The bytes of a `.tflite` file that passed `check_model`.
    """
    s = schema()
    model = s.Model.GetRootAs(data, 0)
    names = enum_names(s.TensorType)
    result, seen = [], set()
    for g in range(model.SubgraphsLength()):
        graph = model.Subgraphs(g)
        for t in range(graph.TensorsLength()):
            tensor = graph.Tensors(t)
            index = tensor.Buffer()
            type_name = names.get(tensor.Type())
            dtype = INT4 if type_name == "INT4" else TYPES.get(type_name, (None, None))[0]
            if index == 0 or index in seen or dtype is None or tensor.Sparsity() is not None:
                continue
            buffer = model.Buffers(index)
            if buffer.Offset() > 1:  # stored after the flatbuffer (models over 2 GB)
                raw = data[buffer.Offset() : buffer.Offset() + buffer.Size()]
            elif buffer.DataLength():
                raw = buffer.DataAsNumpy().tobytes()
            else:
                continue
            seen.add(index)
            shape = tuple(int(d) for d in tensor.ShapeAsNumpy()) if tensor.ShapeLength() else ()
            if dtype is INT4:
                values = _unpack_int4(raw, int(np.prod(shape))).astype(INT4).reshape(shape)
            else:
                values = np.frombuffer(raw, dtype=dtype).reshape(shape)
            zero = 0
            quant = tensor.Quantization()
            if quant is not None and quant.ZeroPointLength():
                zero_points = quant.ZeroPointAsNumpy()
                if np.all(zero_points == zero_points[0]):
                    zero = int(zero_points[0])
            # The converter names fused tensors "a;b;c"; the first part says which layer.
            name = tensor.Name().decode("utf-8", "replace").split(";")[0]
            result.append((name, values, zero))
    return result


def _unpack_int4(raw, size):
    """Packed INT4 (low nibble first, two's complement) -> `size` int8 values."""
    packed = np.frombuffer(raw, dtype=np.uint8)
    nibbles = np.stack([packed & 0x0F, packed >> 4], axis=-1).reshape(-1)[:size]
    return (nibbles.astype(np.int8) ^ 8) - 8  # 0..15 -> -8..7


def output_producers(data, output_indices):
    """The operator that gives each output its meaning, e.g. `"LOGISTIC"` or `"SOFTMAX"`.

    Walks back from each output tensor of the first subgraph through the ops
    that only convert or reshape it (DEQUANTIZE, QUANTIZE, RESHAPE, ...).

    Args:
        data: The bytes of a model that passed `check_model`.
        output_indices: Tensor indices of the outputs (in the first subgraph).

    Returns:
        A list of operator names (None for an output no operator computes).
    """
    s = schema()
    model = s.Model.GetRootAs(data, 0)
    op_names = enum_names(s.BuiltinOperator)
    graph = model.Subgraphs(0)
    producer = {}
    for o in range(graph.OperatorsLength()):
        op = graph.Operators(o)
        code = model.OperatorCodes(op.OpcodeIndex())
        name = op_names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "CUSTOM")
        first_input = op.Inputs(0) if op.InputsLength() else -1
        for i in range(op.OutputsLength()):
            producer[op.Outputs(i)] = (name, first_input)
    result = []
    for index in output_indices:
        name, steps = None, 0
        while index in producer and steps < 64:
            name, index = producer[index]
            steps += 1
            if name not in _TRANSPARENT_OPS:
                break
        result.append(name)
    return result


def operator_names(data):
    """Sorted names of the builtin operators a checked model uses (all subgraphs)."""
    s = schema()
    model = s.Model.GetRootAs(data, 0)
    op_names = enum_names(s.BuiltinOperator)
    names = set()
    for c in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(c)
        names.add(op_names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "CUSTOM"))
    return sorted(names)


# -- what `lite.convert` writes into the file ----------------------------------------

IO_METADATA = "tfcompress_io"


def rewrite(data, metadata=None, unclip_lstm=False, compact=True):
    """A copy of a converted model with tfcompress' metadata and LSTM fix applied.

    Args:
        data: The converter's flatbuffer.
        metadata: A JSON-serialisable dict stored as the model metadata entry
            `tfcompress_io` (the Keras order of inputs and outputs, which the
            `.tflite` signature does not keep).
        unclip_lstm: Set `cell_clip` to 0 on every UNIDIRECTIONAL_SEQUENCE_LSTM:
            the converter's Keras-LSTM fusion writes 10, Keras does not clip.
        compact: Also drop what no runtime reads (see `_compact`): what
            `lite.convert` does.

    Returns:
        The new flatbuffer bytes.
    """
    import json

    import flatbuffers

    s = schema()
    model = s.ModelT.InitFromObj(s.Model.GetRootAs(data, 0))
    if unclip_lstm:
        lstm = {
            i
            for i, code in enumerate(model.operatorCodes or [])
            if max(code.builtinCode, code.deprecatedBuiltinCode)
            == s.BuiltinOperator.UNIDIRECTIONAL_SEQUENCE_LSTM
        }
        for graph in model.subgraphs:
            for op in graph.operators or []:
                if op.opcodeIndex in lstm and op.builtinOptions is not None:
                    op.builtinOptions.cellClip = 0.0
    if metadata is not None:
        buffer = s.BufferT()
        buffer.data = np.frombuffer(json.dumps(metadata).encode(), np.uint8)
        model.buffers.append(buffer)
        entry = s.MetadataT()
        entry.name = IO_METADATA.encode()
        entry.buffer = len(model.buffers) - 1
        model.metadata = [m for m in (model.metadata or []) if m.name != entry.name] + [entry]
    if compact:
        _compact(model)
    builder = flatbuffers.Builder(len(data) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _compact(model):
    """Drops from a `ModelT` the bytes no runtime reads (in place).

    * Tensor names: the converter names a tensor after every TF op fused
      into it, `"m/conv/BiasAdd;m/conv/convolution;m/conv/Relu..."`; only
      the first part is kept (more parts only where needed to keep names
      distinct). It still names the layer, which is what `summarize` shows.
      Inputs and outputs are found through the signature, whose names stay.
    * The description string ("MLIR Converted.").
    * Empty buffers: the converter gives each activation tensor its own empty
      buffer; they all point at buffer 0, the empty one the schema reserves.

    The graph, the constants, the quantization, the signature and the
    metadata entries are untouched, so the file computes the same outputs
    bit for bit.
    """
    for graph in model.subgraphs:
        tensors = graph.tensors or []
        used = {t.name for t in tensors if t.name and b";" not in t.name}  # kept as they are
        for tensor in tensors:
            if tensor.name and b";" in tensor.name:
                tensor.name = _short_name(tensor.name, used)
    model.description = None
    # Data stored after the flatbuffer (models over 2 GB) has an offset instead.
    keep = [0] + [
        i
        for i, buffer in enumerate(model.buffers)
        if i and (buffer.offset > 1 or (buffer.data is not None and len(buffer.data)))
    ]
    index = {old: new for new, old in enumerate(keep)}
    for graph in model.subgraphs:
        for tensor in graph.tensors or []:
            tensor.buffer = index.get(tensor.buffer, 0)
    for entry in model.metadata or []:
        entry.buffer = index.get(entry.buffer, 0)
    if model.metadataBuffer is not None:
        model.metadataBuffer = [index.get(b, 0) for b in model.metadataBuffer]
    model.buffers = [model.buffers[i] for i in keep]


def _short_name(name, used):
    """The shortest prefix of `;`-joined parts of `name` not in `used` (then added to it)."""
    parts = name.split(b";")
    for end in range(1, len(parts) + 1):
        candidate = b";".join(parts[:end])
        if candidate not in used or end == len(parts):
            used.add(candidate)
            return candidate


def io_metadata(data):
    """The `tfcompress_io` metadata of a checked model as a dict, or None if absent.

    Raises:
        CorruptModel: if the entry is there but is not the JSON `rewrite` wrote.
    """
    import json

    model = schema().Model.GetRootAs(data, 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name() != IO_METADATA.encode():
            continue
        index = entry.Buffer()
        if not 0 < index < model.BuffersLength():
            raise CorruptModel(f"metadata '{IO_METADATA}' refers to buffer {index}")
        try:
            value = json.loads(model.Buffers(index).DataAsNumpy().tobytes().decode())
        except (ValueError, UnicodeDecodeError, AttributeError) as error:
            raise CorruptModel(f"metadata '{IO_METADATA}' is not readable: {error}") from None
        if not isinstance(value, dict):
            raise CorruptModel(f"metadata '{IO_METADATA}' is not a JSON object")
        return value
    return None

"""`count_macs`: the multiply-accumulates of one inference of a Keras model.

Counted per layer call from the shapes Keras recorded in the model's graph:

| layer | MACs |
|---|---|
| Conv1D/2D/3D, DepthwiseConv, SeparableConv | output positions x kernel size (each kernel weight is used once per output position) |
| Conv transposes | input positions x kernel size |
| Dense | input positions x kernel size |
| EinsumDense, `ops.einsum`, `ops.matmul` | output size x product of the summed-over dimensions |
| MultiHeadAttention | its four projections + QK^T + attention x V |
| SimpleRNN / LSTM / GRU | time steps x (kernel + recurrent kernel sizes) |

Biases, BatchNormalization (folded into the conv by TFLite), activations,
pooling and element-wise ops are not multiply-accumulates and count 0.
"""

import dataclasses
import re

import keras
import numpy as np

from tfcompress import _graph, _layers

L = keras.layers


@dataclasses.dataclass
class MacCount:
    """The result of `count_macs`.

    Attributes:
        total: Multiply-accumulates of one inference (batch of 1).
        layers: `{layer name: MACs}` for every layer (or op) doing any, in
            graph order; a layer called several times sums its calls.
    """

    total: int
    layers: dict

    def __int__(self):
        return self.total

    def to_dict(self):
        return {"total": self.total, "layers": dict(self.layers)}

    def __str__(self):
        width = max([len(n) for n in self.layers] + [5])
        lines = [f"{'layer':<{width}}  {'MACs':>15}  share"]
        for name, macs in self.layers.items():
            share = macs / self.total if self.total else 0.0
            lines.append(f"{name:<{width}}  {macs:>15,}  {share:6.1%}")
        lines.append(f"{'total':<{width}}  {self.total:>15,}")
        return "\n".join(lines)


def count_macs(model):
    """Counts the multiply-accumulates of one inference, per layer and in total.

    Args:
        model: A built Sequential or functional model (nested models are
            counted layer by layer). Compression wrappers count as the layer
            they wrap; a channel-pruned model (`prune_channels`) counts what
            `strip_channels` will ship.

    Returns:
        A `MacCount` (`.total`, `.layers`; `print` shows a table).

    Raises:
        TypeError: if `model` is not a `keras.Model`.
        ValueError: for a subclassed or unbuilt model, or a layer whose
            shapes are not all known (e.g. an input of size None).

    Example:

    >>> model = keras.Sequential([
    ...     keras.Input((8, 8, 3)),
    ...     keras.layers.Conv2D(16, 3, padding="same", name="conv"),
    ...     keras.layers.GlobalAveragePooling2D(),
    ...     keras.layers.Dense(10, name="head"),
    ... ])
    >>> macs = count_macs(model)
    >>> macs.layers   # conv: 8*8 positions x 3*3*3*16 weights; head: 16*10
    {'conv': 27648, 'head': 160}
    >>> macs.total
    27808
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"count_macs expects a keras.Model. Received: model={model!r} of type "
            f"{type(model).__name__}"
        )
    from tfcompress.pruning.channels import ChannelPruningModel, strip_channels

    if isinstance(model, ChannelPruningModel) and model.channel_plan is not None:
        model = strip_channels(model)
    layers = {}
    _count_graph(model, layers)
    return MacCount(total=int(sum(layers.values())), layers=layers)


def _count_graph(model, layers):
    for node in _graph.topological_nodes(model):
        op = node.operation
        if node.is_input or not op:
            continue
        if _graph.is_nested_graph(op):
            _count_graph(op, layers)
            continue
        inner = _unwrap(op)
        macs = _node_macs(inner, node)
        if macs:
            layers[inner.name] = layers.get(inner.name, 0) + macs


def _unwrap(op):
    from tfcompress._wrapper import CompressionWrapper

    while isinstance(op, CompressionWrapper):
        op = op.layer
    return op


def _shapes(op, tensors):
    shapes = [_graph.one_example_shape(t) for t in tensors]
    for shape in shapes:
        if any(d is None for d in shape):
            raise ValueError(
                f"count_macs needs every shape known, but '{op.name}' ({type(op).__name__}) "
                f"sees shape {tuple(None if i == 0 else d for i, d in enumerate(shape))}. Build "
                "the model with a fixed input size, e.g. keras.Input((224, 224, 3))."
            )
    return shapes


def _positions(shape, layer):
    """Product of the spatial (non-batch, non-channel) sizes of a conv's tensor."""
    if getattr(layer, "data_format", "channels_last") == "channels_first":
        return int(np.prod(shape[2:], dtype=np.int64))
    return int(np.prod(shape[1:-1], dtype=np.int64))


def _size(variable):
    return int(np.prod(variable.shape, dtype=np.int64))


def _node_macs(op, node):
    kind = type(op).__name__
    if not isinstance(op, L.Layer):
        if kind in ("Matmul", "Einsum"):
            ins, outs = _shapes(op, node.input_tensors), _shapes(op, node.output_tensors)
            return _einsum_op_macs(op, kind, ins, outs[0])
        return 0
    if isinstance(op, (L.Dense,) + _layers.CONV_LAYERS + _layers.DEPTHWISE_LAYERS
                  + _layers.SEPARABLE_LAYERS + _layers.TRANSPOSED_LAYERS + (L.EinsumDense,)
                  + _layers.RNN_LAYERS + (L.MultiHeadAttention,)):
        ins, outs = _shapes(op, node.input_tensors), _shapes(op, node.output_tensors)
    else:
        return 0
    if isinstance(op, _layers.SEPARABLE_LAYERS):
        return _positions(outs[0], op) * (_size(op.depthwise_kernel) + _size(op.pointwise_kernel))
    if isinstance(op, _layers.TRANSPOSED_LAYERS):
        return _positions(ins[0], op) * _size(op.kernel)
    if isinstance(op, _layers.CONV_LAYERS + _layers.DEPTHWISE_LAYERS):
        return _positions(outs[0], op) * _size(op.kernel)
    if isinstance(op, L.Dense):
        return int(np.prod(ins[0][1:-1], dtype=np.int64)) * _size(op.kernel)
    if isinstance(op, L.EinsumDense):
        return _einsum_macs(op.equation, outs[0], [ins[0], tuple(op.kernel.shape)])
    if isinstance(op, _layers.RNN_LAYERS):
        return ins[0][1] * (_size(op.cell.kernel) + _size(op.cell.recurrent_kernel))
    return _attention_macs(op, ins)


def _attention_macs(layer, ins):
    query, value = ins[0], ins[1] if len(ins) > 1 else ins[0]
    key = ins[2] if len(ins) > 2 else value
    steps_q = int(np.prod(query[1:-1], dtype=np.int64))
    steps_v = int(np.prod(value[1:-1], dtype=np.int64))
    steps_k = int(np.prod(key[1:-1], dtype=np.int64))
    heads, key_dim = layer.num_heads, layer.key_dim
    value_dim = layer.value_dim or key_dim
    projections = (
        steps_q * _size(layer.query_dense.kernel)
        + steps_k * _size(layer.key_dense.kernel)
        + steps_v * _size(layer.value_dense.kernel)
        + steps_q * _size(layer.output_dense.kernel)
    )
    return projections + heads * steps_q * steps_k * (key_dim + value_dim)


def _einsum_macs(equation, output_shape, operand_shapes):
    """Output size x the product of the sizes of the summed-over letters."""
    inputs, output = equation.replace(" ", "").split("->")
    sizes = {}
    for subscripts, shape in zip(inputs.split(","), operand_shapes):
        letters = subscripts.replace("...", "")
        if "..." in subscripts:  # the letters are the trailing / leading axes
            start = subscripts.index("...")
            named = list(shape[:start]) + list(shape[len(shape) - (len(subscripts) - start - 3):])
        else:
            named = list(shape)
        for letter, size in zip(letters, named):
            sizes[letter] = size
    summed = [sizes[c] for c in sizes if c not in output]
    return int(np.prod(output_shape[1:], dtype=np.int64)) * int(np.prod(summed, dtype=np.int64))


def _einsum_op_macs(op, kind, ins, out):
    if kind == "Matmul":
        return int(np.prod(out[1:], dtype=np.int64)) * int(ins[0][-1])
    subscripts = getattr(op, "subscripts", None)
    if not isinstance(subscripts, str) or "->" not in subscripts:
        return 0
    if len(subscripts.split("->")[0].split(",")) != len(ins):
        return 0  # a constant operand: its shape is not in the graph
    # Batch axis included in the operands here: count it as 1 like the output.
    return _einsum_macs(re.sub(r"\s", "", subscripts), out, ins)

"""One pass over a functional graph giving every channel of every tensor an id.

The rules of `ChannelWalk.rule_for` say how each kind of layer maps its input
channel ids to output ids (see `graph.py` for what the ids are used for).
Ids that must be the same channel are joined in a union-find (`units`), ids
ranked together in another (`pools`).
"""

import keras
import numpy as np

from tfcompress import _graph, _layers

L = keras.layers
MEMBER_LAYERS = _layers.CHANNEL_MEMBER_LAYERS


def channel_axes(layer):
    """`{variable name: ((role, axis), ...)}` for a layer channel pruning slices, else None."""
    for types, axes in _layers.CHANNEL_AXES:
        if isinstance(layer, types):
            return axes
    return None


def channels_of(tensor):
    """Size of a tensor's last axis (1 for a scalar or an unknown size)."""
    return int(tensor.shape[-1]) if len(tensor.shape) and tensor.shape[-1] is not None else 1


class _UnionFind:
    def __init__(self):
        self.parent = []

    def extend(self, n):
        start = len(self.parent)
        self.parent.extend(range(start, start + n))

    def find(self, i):
        parent = self.parent
        root = i
        while parent[root] != root:
            root = parent[root]
        while parent[i] != root:
            parent[i], i = root, parent[i]
        return root

    def union(self, a, b):
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


class ChannelWalk:
    """One pass over the graph, recording channel ids."""

    def __init__(self):
        self.units = _UnionFind()  # ids that are the same channel
        self.pools = _UnionFind()  # ids ranked together (same producer or joined)
        self.creator = []  # producer layer name of each id (None for pinned fresh ids)
        self.pin_reasons = {}  # id -> why it is kept
        self.layers = {}  # name -> layer object (inner layer of a wrapper)
        self.axes = {}  # layer name -> {variable name: [(axis, ids)]}
        self.out_ids = {}  # producer name -> its filters' ids
        self.outputs = {}  # member layer name -> ids of its (first) output
        self.reshapes = {}  # Reshape name -> (input ids, tile)
        self.nested_inputs = {}  # nested model name -> ids of each of its inputs

    # -- ids ------------------------------------------------------------

    def new_ids(self, n, creator=None, pin=None):
        start = len(self.creator)
        self.units.extend(n)
        self.pools.extend(n)
        self.creator.extend([creator] * n)
        ids = np.arange(start, start + n, dtype=np.int64)
        if pin:
            self.pin(ids, pin)
        return ids

    def pin(self, ids, reason):
        for i in np.asarray(ids).ravel():
            self.pin_reasons.setdefault(int(i), reason)

    def join(self, a, b):
        for i, j in zip(np.asarray(a).ravel(), np.asarray(b).ravel()):
            self.units.union(int(i), int(j))
            self.pools.union(int(i), int(j))

    # -- the graph ------------------------------------------------------

    def walk(self, model, input_ids):
        inputs, outputs = _graph.inputs_and_outputs(model)
        tensors = {id(t): ids for t, ids in zip(inputs, input_ids)}
        for node in _graph.topological_nodes(model):
            if node.is_input or not node.operation:
                continue
            ins = [tensors[id(t)] for t in node.input_tensors]
            outs = self.visit(node, ins)
            for t, ids in zip(node.output_tensors, outs):
                tensors[id(t)] = ids
        return [tensors[id(t)] for t in outputs]

    def visit(self, node, ins):
        op = node.operation
        if _graph.is_nested_graph(op):
            self.remember(op)
            self.nested_inputs.setdefault(op.name, ins)
            return self.walk(op, ins)
        layer = _unwrap(op)
        if isinstance(layer, L.InputLayer):
            return ins
        sizes_out = [channels_of(t) for t in node.output_tensors]
        if not isinstance(layer, L.Layer):
            return self.unknown(f"'{op.name}' ({type(op).__name__})", ins, sizes_out)
        self.remember(layer)
        shapes_in = [tuple(t.shape) for t in node.input_tensors]
        shapes_out = [tuple(t.shape) for t in node.output_tensors]
        rule = self.rule_for(layer, shapes_in, shapes_out)
        if rule is None:
            return self.unknown(_describe(layer), ins, sizes_out)
        outs = rule(layer, ins, shapes_in, shapes_out)
        if isinstance(layer, MEMBER_LAYERS):
            self.outputs.setdefault(layer.name, outs[0])
        return outs

    def remember(self, layer):
        known = self.layers.setdefault(layer.name, layer)
        if known is not layer:
            raise ValueError(
                f"Channel pruning needs distinct layer names, but the model (with its "
                f"nested models) has two layers named '{layer.name}'. Rename one."
            )

    def unknown(self, what, ins, sizes_out):
        """Pins the inputs of an operation the walk cannot see through; new pinned outputs."""
        for ids in ins:
            self.pin(ids, f"they are read by {what}, which channel pruning does not see through")
        return [self.new_ids(n, pin=f"they come from {what}") for n in sizes_out]

    def rule_for(self, layer, shapes_in, shapes_out):
        """The function giving a layer's output ids, or None to treat it as unknown."""
        if len(shapes_out) != 1 or not shapes_in:
            return None
        if getattr(layer, "data_format", "channels_last") != "channels_last":
            return None
        if isinstance(layer, _layers.CHANNEL_PRODUCER_LAYERS + _layers.DEPTHWISE_LAYERS):
            if getattr(layer, "groups", 1) != 1 or len(shapes_in) != 1:
                return None
            if not _elementwise(getattr(layer, "activation", None)):
                return None
            if isinstance(layer, _layers.DEPTHWISE_LAYERS):
                return self.depthwise
            return self.producer
        if isinstance(layer, L.BatchNormalization):
            axis = layer.axis if isinstance(layer.axis, int) else None
            if axis is None or axis % len(shapes_in[0]) != len(shapes_in[0]) - 1:
                return None
            return self.batchnorm
        if isinstance(layer, _layers.MERGE_LAYERS):
            return self.merge
        if isinstance(layer, L.Concatenate):
            return self.concatenate
        if isinstance(layer, L.Flatten):
            return self.flatten
        if isinstance(layer, L.Reshape):
            return self.reshape
        if isinstance(layer, L.Permute):
            dims = tuple(layer.dims)
            return self.same if dims and dims[-1] == len(dims) else None
        if isinstance(layer, L.Rescaling):
            scalar = np.ndim(layer.scale) == 0 and np.ndim(layer.offset) == 0
            return self.same if scalar else None
        if isinstance(layer, _layers.ELEMENTWISE_LAYERS):
            if isinstance(layer, L.Activation) and not _elementwise(layer.activation):
                return None
            return self.same
        if isinstance(layer, _layers.PASSTHROUGH_LAYERS):
            return self.same
        return None

    # -- rules: each returns the list of output ids -----------------------

    def same(self, layer, ins, shapes_in, shapes_out):
        return [ins[0]]

    def record(self, layer, name, axis, ids):
        """Records that `axis` of variable `name` holds channels `ids` (joining shared calls)."""
        axes = self.axes.setdefault(layer.name, {}).setdefault(name, [])
        for known_axis, known_ids in axes:
            if known_axis == axis:
                if len(known_ids) == len(ids):
                    self.join(known_ids, ids)
                return
        axes.append((axis, np.asarray(ids)))

    def record_axes(self, layer, in_ids, out_ids):
        multiplier = getattr(layer, "depth_multiplier", 1)
        roles = {"in": in_ids, "in_repeated": np.repeat(in_ids, multiplier), "out": out_ids}
        for name, axes in channel_axes(layer).items():
            variable = getattr(layer, name, None)
            if variable is None:
                continue
            for role, axis in axes:
                ids = roles[role]
                if ids is not None and int(variable.shape[axis]) == len(ids):
                    self.record(layer, name, axis % len(variable.shape), ids)

    def producer(self, layer, ins, shapes_in, shapes_out):
        if layer.name not in self.out_ids:
            ids = self.new_ids(int(shapes_out[0][-1]), creator=layer.name)
            for i in ids[1:]:
                self.pools.union(int(ids[0]), int(i))
            self.out_ids[layer.name] = ids
        out = self.out_ids[layer.name]
        self.record_axes(layer, ins[0], out)
        return [out]

    def depthwise(self, layer, ins, shapes_in, shapes_out):
        self.record_axes(layer, ins[0], None)
        return [np.repeat(ins[0], layer.depth_multiplier)]

    def batchnorm(self, layer, ins, shapes_in, shapes_out):
        self.record_axes(layer, ins[0], None)
        return [ins[0]]

    def merge(self, layer, ins, shapes_in, shapes_out):
        n = int(shapes_out[0][-1])
        full = [ids for ids in ins if len(ids) == n]
        if len(full) + sum(len(ids) == 1 for ids in ins if len(ids) != n) != len(ins):
            return self.unknown_layer(layer, ins, shapes_out)
        for ids in full[1:]:
            self.join(full[0], ids)  # broadcast inputs (one channel) join nothing
        return [full[0]]

    def concatenate(self, layer, ins, shapes_in, shapes_out):
        rank = len(shapes_out[0])
        if layer.axis % rank == rank - 1:
            return [np.concatenate(ins)]
        for ids in ins[1:]:
            if len(ids) != len(ins[0]):
                return self.unknown_layer(layer, ins, shapes_out)
            self.join(ins[0], ids)
        return [ins[0]]

    def flatten(self, layer, ins, shapes_in, shapes_out):
        spatial = shapes_in[0][1:-1]
        if any(d is None for d in spatial):
            return self.unknown_layer(layer, ins, shapes_out)
        return [np.tile(ins[0], int(np.prod(spatial, dtype=np.int64)))]

    def reshape(self, layer, ins, shapes_in, shapes_out):
        # The channel axis varies fastest in memory, so a last axis holding a
        # whole number of channel rows keeps them in order.
        channels, last = len(ins[0]), shapes_out[0][-1]
        if last is None or last % channels:
            return self.unknown_layer(layer, ins, shapes_out)
        self.reshapes.setdefault(layer.name, (ins[0], last // channels))
        return [np.tile(ins[0], last // channels)]

    def unknown_layer(self, layer, ins, shapes_out):
        return self.unknown(_describe(layer), ins, [int(s[-1] or 1) for s in shapes_out])


def _describe(layer):
    return f"layer '{layer.name}' ({type(layer).__name__})"


def _unwrap(op):
    """The layer a channel-pruning wrapper holds; any other operation as it is."""
    from tfcompress.pruning.channels.wrapper import ChannelMaskWrapper

    return op.layer if isinstance(op, ChannelMaskWrapper) else op


def _elementwise(activation):
    name = _layers.activation_name(activation)
    return name is not None and name not in _layers.MIXING_ACTIVATIONS

"""The channel dependency graph: which channels must be removed together.

Removing output channel c of a conv is only possible if everything that reads
that channel loses it too: the BatchNormalization after it, a depthwise conv
(whose channel c is the same channel), the rows of the next conv's kernel,
the other inputs of an `Add` (a residual stream has one channel c for all its
branches), the Dense rows a `Flatten` spreads it over. The analysis gives
every channel of every tensor an id, follows the ids through the graph and
joins ids that must go together (union-find, as in DepGraph, Fang et al.
CVPR 2023):

* a producer (Conv, Dense, SeparableConv) creates fresh ids for its filters,
  once per layer (a shared layer has one kernel);
* depthwise convs, BatchNormalization, activations, pooling, dropout, padding
  keep their input's ids; `Flatten` / `Reshape` tile them;
* `Add` / `Subtract` / `Multiply` / ... join the ids of their inputs position
  by position (residuals, squeeze-excite); `Concatenate` on the channel axis
  lays its inputs' ids end to end (index ranges, nothing joined);
* ids that reach a model output, a model input, or an operation the analysis
  does not know (a custom layer, `x[..., :4]`, `ops.reshape`, a softmax over
  channels) are pinned: their channels are kept.

A unit is a set of joined ids (one channel of the network, removed as one); a
group is the set of units ranked against each other: the units of one
producer and of every producer joined with it. Each weight axis that holds
channels is recorded as the unit of each of its positions, which is all the
masking and stripping need.
"""

import dataclasses

import keras
import numpy as np

from tfcompress import _graph, _layers

L = keras.layers

# The variables of each member layer kind that hold channels, with the axis:
# "in" (input channels), "in_repeated" (input channels times the depth
# multiplier), "out" (output channels).
_CHANNEL_AXES = (
    (_layers.SEPARABLE_LAYERS, {
        "depthwise_kernel": (("in", -2),),
        "pointwise_kernel": (("in_repeated", -2), ("out", -1)),
        "bias": (("out", 0),),
    }),
    (_layers.DEPTHWISE_LAYERS, {"kernel": (("in", -2),), "bias": (("in_repeated", 0),)}),
    (_layers.CHANNEL_PRODUCER_LAYERS, {"kernel": (("in", -2), ("out", -1)), "bias": (("out", 0),)}),
    ((L.BatchNormalization,), {
        name: (("in", 0),) for name in ("gamma", "beta", "moving_mean", "moving_variance")
    }),
)

MEMBER_LAYERS = tuple(cls for types, _ in _CHANNEL_AXES for cls in types)


def channel_axes(layer):
    """`{variable name: ((role, axis), ...)}` for a layer channel pruning slices, else None."""
    for types, axes in _CHANNEL_AXES:
        if isinstance(layer, types):
            return axes
    return None


@dataclasses.dataclass(frozen=True)
class ChannelGroup:
    """Channels ranked and removed together.

    Attributes:
        name: The first layer creating them (the group's name in messages
            and in `ChannelPruningModel.kept_channels()`).
        size: How many channels the group may lose (its prunable units).
        producers: Layers whose filters / units are these channels.
        layers: Every layer whose weights (or shape) lose channels with it.
        has_batchnorm: True if a BatchNormalization scales these channels.
    """

    name: str
    size: int
    producers: tuple
    layers: tuple
    has_batchnorm: bool


@dataclasses.dataclass
class ChannelGraph:
    """The result of `analyze`.

    Attributes:
        groups: The prunable `ChannelGroup`s.
        slot_group: For each unit ("slot"), the index of its group. Units of a
            group are numbered contiguously, groups in graph order.
        weight_slots: `{layer name: {variable name: [(axis, slots)]}}`: for
            each axis of a variable holding channels, the unit of each
            position; `num_slots` marks a channel that is always kept.
        reshapes: `{Reshape layer name: (slots, tile)}`: Reshapes whose
            target shape ends in `tile` copies of the channel axis, with the
            unit of each of their input channels.
        nested_inputs: `{nested model name: [slots of each input]}`.
        output_groups: `{layer name: group index}` for member layers whose
            output channels are in one group.
        pin_reasons: `{layer name: why}` for member layers whose output
            channels are kept.
    """

    groups: list
    slot_group: np.ndarray
    weight_slots: dict
    reshapes: dict
    nested_inputs: dict
    output_groups: dict
    pin_reasons: dict

    @property
    def num_slots(self):
        return len(self.slot_group)

    def select(self, group_indices):
        """The same graph with only the groups `group_indices` prunable (in that order)."""
        group_indices = list(group_indices)
        old_num = self.num_slots
        remap = np.full(old_num + 1, -1, np.int64)
        offset = 0
        for new_index, g in enumerate(group_indices):
            old = np.nonzero(self.slot_group == g)[0]
            remap[old] = np.arange(offset, offset + len(old))
            offset += len(old)
        remap[remap < 0] = offset  # dropped groups and the keep slot: always kept
        weight_slots = {}
        for layer, variables in self.weight_slots.items():
            kept = {}
            for name, axes in variables.items():
                axes = [(axis, remap[slots]) for axis, slots in axes]
                axes = [(axis, slots) for axis, slots in axes if np.any(slots < offset)]
                if axes:
                    kept[name] = axes
            if kept:
                weight_slots[layer] = kept
        new_of_old = {g: i for i, g in enumerate(group_indices)}
        slot_group = np.concatenate(
            [np.full(self.groups[g].size, i, np.int64) for i, g in enumerate(group_indices)]
            + [np.zeros(0, np.int64)]
        )
        reshapes = {}
        for layer, (slots, tile) in self.reshapes.items():
            slots = remap[slots]
            if np.any(slots < offset):
                reshapes[layer] = (slots, tile)
        return ChannelGraph(
            groups=[self.groups[g] for g in group_indices],
            slot_group=slot_group,
            weight_slots=weight_slots,
            reshapes=reshapes,
            nested_inputs={
                name: [remap[slots] for slots in inputs]
                for name, inputs in self.nested_inputs.items()
            },
            output_groups={
                name: new_of_old[g] for name, g in self.output_groups.items() if g in new_of_old
            },
            pin_reasons=self.pin_reasons,
        )


def analyze(model):
    """Finds the channel groups of a Sequential or functional model.

    Args:
        model: A built Sequential or functional model (nested ones are
            followed; channel-pruning wrappers count as the layer they wrap).

    Returns:
        A `ChannelGraph`.

    Raises:
        ValueError: if `model` has no graph, or two layers of it (nested
            models included) share a name.

    Example:

    >>> inputs = keras.Input((8, 8, 3))
    >>> x = keras.layers.Conv2D(16, 3, name="a")(inputs)
    >>> y = keras.layers.Conv2D(16, 1, name="b")(x)
    >>> outputs = keras.layers.Conv2D(4, 1, name="out")(keras.layers.Add()([x, y]))
    >>> graph = analyze(keras.Model(inputs, outputs))
    >>> [(g.name, g.size, g.producers) for g in graph.groups]
    [('a', 16, ('a', 'b'))]
    """
    walk = _Walk()
    inputs, _ = _graph.inputs_and_outputs(model)
    input_ids = [walk.new_ids(_channels(t), pin="it is a model input") for t in inputs]
    for ids in walk.walk(model, input_ids):
        walk.pin(ids, "it is a model output")
    return walk.finish()


def _channels(tensor):
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


class _Walk:
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
        if not isinstance(layer, L.Layer):
            return self.unknown(node, ins, f"'{op.name}' ({type(op).__name__})")
        self.remember(layer)
        shapes_in = [tuple(t.shape) for t in node.input_tensors]
        shapes_out = [tuple(t.shape) for t in node.output_tensors]
        rule = self.rule_for(layer, shapes_in, shapes_out)
        if rule is None:
            return self.unknown(node, ins, f"layer '{layer.name}' ({type(layer).__name__})")
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

    def unknown(self, node, ins, what):
        for ids in ins:
            self.pin(ids, f"they are read by {what}, which channel pruning does not see through")
        return [
            self.new_ids(_channels(t), pin=f"they come from {what}") for t in node.output_tensors
        ]

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
        for i, (known_axis, known_ids) in enumerate(axes):
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
        what = f"layer '{layer.name}' ({type(layer).__name__})"
        for ids in ins:
            self.pin(ids, f"they are read by {what}, which channel pruning does not see through")
        return [self.new_ids(int(s[-1]) if s[-1] else 1, pin=f"they come from {what}") for s in shapes_out]

    # -- result ---------------------------------------------------------

    def finish(self):
        count = len(self.creator)
        unit_of = np.array([self.units.find(i) for i in range(count)], np.int64)
        pool_of = np.array([self.pools.find(i) for i in range(count)], np.int64)
        pinned_units = {}
        for i, reason in self.pin_reasons.items():
            pinned_units.setdefault(int(unit_of[i]), reason)
        # Prunable units, grouped by pool, pools and units in id order.
        pools = {}
        for i in range(count):
            u = int(unit_of[i])
            if u == i and u not in pinned_units:
                pools.setdefault(int(pool_of[i]), []).append(u)
        slot_of_unit, slot_group, groups = {}, [], []
        for g, (pool, units) in enumerate(sorted(pools.items())):
            for u in units:
                slot_of_unit[u] = len(slot_group)
                slot_group.append(g)
        num_slots = len(slot_group)
        slot_of_id = np.array([slot_of_unit.get(int(u), num_slots) for u in unit_of], np.int64)
        slot_group = np.array(slot_group, np.int64)

        weight_slots = {}
        for layer_name, variables in self.axes.items():
            for name, axes in variables.items():
                for axis, ids in axes:
                    slots = slot_of_id[ids]
                    if np.any(slots < num_slots):
                        weight_slots.setdefault(layer_name, {}).setdefault(name, []).append(
                            (axis, slots)
                        )
        layers_of_group = [[] for _ in pools]
        for layer_name, variables in weight_slots.items():
            touched = {
                int(slot_group[s])
                for axes in variables.values()
                for _, slots in axes
                for s in slots
                if s < num_slots
            }
            for g in touched:
                layers_of_group[g].append(layer_name)
        reshapes = {}
        for layer_name, (ids, tile) in self.reshapes.items():
            touched = self._groups_of(ids, slot_of_id, slot_group)
            if touched:
                reshapes[layer_name] = (slot_of_id[ids], tile)
                for g in touched:
                    layers_of_group[g].append(layer_name)

        nested_inputs = {
            name: [slot_of_id[np.asarray(ids, np.int64)] for ids in inputs]
            for name, inputs in self.nested_inputs.items()
        }
        for g, (pool, units) in enumerate(sorted(pools.items())):
            members = np.nonzero(pool_of == pool)[0]
            producers = list(dict.fromkeys(self.creator[i] for i in members if self.creator[i]))
            names = [n for n in self.layers if n in layers_of_group[g]]
            groups.append(
                ChannelGroup(
                    name=producers[0],
                    size=len(units),
                    producers=tuple(producers),
                    layers=tuple(names),
                    has_batchnorm=any(
                        isinstance(self.layers[n], L.BatchNormalization) for n in names
                    ),
                )
            )

        output_groups, pin_reasons = {}, {}
        for layer_name, ids in self.outputs.items():
            touched = self._groups_of(ids, slot_of_id, slot_group)
            if len(touched) == 1:
                output_groups[layer_name] = touched.pop()
            elif not touched:
                pin_reasons[layer_name] = pinned_units.get(
                    int(unit_of[ids[0]]), "they are not prunable"
                ) if len(ids) else "it has no output channels"
        return ChannelGraph(
            groups=groups,
            slot_group=slot_group,
            weight_slots=weight_slots,
            reshapes=reshapes,
            nested_inputs=nested_inputs,
            output_groups=output_groups,
            pin_reasons=pin_reasons,
        )

    @staticmethod
    def _groups_of(ids, slot_of_id, slot_group):
        slots = slot_of_id[np.asarray(ids, np.int64)]
        return {int(slot_group[s]) for s in slots if s < len(slot_group)}


def _unwrap(op):
    """The layer a channel-pruning wrapper holds; any other operation as it is."""
    from tfcompress.pruning.channels.wrapper import ChannelMaskWrapper

    return op.layer if isinstance(op, ChannelMaskWrapper) else op


def _elementwise(activation):
    name = _layers.activation_name(activation)
    return name is not None and name not in _layers.MIXING_ACTIVATIONS

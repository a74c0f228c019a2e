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

from tfcompress import _graph
from tfcompress.pruning.channels.walk import ChannelWalk, channels_of

L = keras.layers


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
        for g in group_indices:
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
    walk = ChannelWalk()
    inputs, _ = _graph.inputs_and_outputs(model)
    input_ids = [walk.new_ids(channels_of(t), pin="it is a model input") for t in inputs]
    for ids in walk.walk(model, input_ids):
        walk.pin(ids, "it is a model output")
    return _build(walk)


def _build(walk):
    """The `ChannelGraph` of a finished walk."""
    count = len(walk.creator)
    unit_of = np.array([walk.units.find(i) for i in range(count)], np.int64)
    pool_of = np.array([walk.pools.find(i) for i in range(count)], np.int64)
    pinned_units = {}
    for i, reason in walk.pin_reasons.items():
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
    for layer_name, variables in walk.axes.items():
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
    for layer_name, (ids, tile) in walk.reshapes.items():
        touched = _groups_of(ids, slot_of_id, slot_group)
        if touched:
            reshapes[layer_name] = (slot_of_id[ids], tile)
            for g in touched:
                layers_of_group[g].append(layer_name)

    nested_inputs = {
        name: [slot_of_id[np.asarray(ids, np.int64)] for ids in inputs]
        for name, inputs in walk.nested_inputs.items()
    }
    for g, (pool, units) in enumerate(sorted(pools.items())):
        members = np.nonzero(pool_of == pool)[0]
        producers = list(dict.fromkeys(walk.creator[i] for i in members if walk.creator[i]))
        names = [n for n in walk.layers if n in layers_of_group[g]]
        groups.append(
            ChannelGroup(
                name=producers[0],
                size=len(units),
                producers=tuple(producers),
                layers=tuple(names),
                has_batchnorm=any(
                    isinstance(walk.layers[n], L.BatchNormalization) for n in names
                ),
            )
        )

    output_groups, pin_reasons = {}, {}
    for layer_name, ids in walk.outputs.items():
        touched = _groups_of(ids, slot_of_id, slot_group)
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


def _groups_of(ids, slot_of_id, slot_group):
    slots = slot_of_id[np.asarray(ids, np.int64)]
    return {int(slot_group[s]) for s in slots if s < len(slot_group)}



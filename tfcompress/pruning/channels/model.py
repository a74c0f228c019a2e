"""`ChannelPruningModel`: a functional model whose channel groups share masks.

Coupled layers must lose the same channels (a residual stream has one channel
c for all its branches), so a group's mask cannot live in one of its layers'
wrappers. It lives here, in the model that sees the whole graph: one vector
`channel_mask` holding every group's units, and `channel_pruning_step`. The
model is a functional model like any other (its layers, `summary`, saving
and cloning are Keras'); what it adds is done when it is constructed, so a
reloaded or cloned copy gets it too:

1. `graph.analyze` finds the groups of its graph (the same graph gives the
   same groups), counting each `ChannelMaskWrapper` as the layer it wraps;
2. a group is pruned if the wrappers of the layers producing its channels
   carry a `PruningSchedule` (so the schedules travel in the wrappers'
   configs, as `prune_low_magnitude`'s do);
3. every wrapper gets a `ChannelLink` to the mask vector and the unit of each
   of its channel positions.

On each training call the step advances and, when a group's schedule says
so, its mask is recomputed from the units' importance, before the layers run.
"""

import dataclasses

import keras
import numpy as np
from keras import ops

from tfcompress import _rewrite
from tfcompress._state import state_variable
from tfcompress.pruning.channels import graph as channel_graph
from tfcompress.pruning.channels import importance as scoring
from tfcompress.pruning.channels.wrapper import ChannelLink, ChannelMaskWrapper


@dataclasses.dataclass
class ChannelPlan:
    """The groups a `ChannelPruningModel` prunes and how (plain Python, not tracked).

    Attributes:
        graph: The `ChannelGraph` restricted to the pruned groups.
        schedules: The distinct `PruningSchedule`s.
        group_schedule: numpy array, index into `schedules` of each group.
        importance: The importance criterion.
        round_to: Groups keep a multiple of this many channels.
        wrappers: The linked `ChannelMaskWrapper`s.
    """

    graph: channel_graph.ChannelGraph
    schedules: list
    group_schedule: np.ndarray
    importance: str
    round_to: int
    wrappers: list

    @property
    def group_starts(self):
        sizes = [group.size for group in self.graph.groups]
        return np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64) if sizes else np.zeros(0, np.int64)


@keras.saving.register_keras_serializable(package="tfcompress")
class ChannelPruningModel(keras.Model):
    """A functional model pruning whole channels during `fit`; see the module docstring.

    Built by `tfcompress.prune_channels`; constructed like `keras.Model(inputs,
    outputs)`. `tfcompress.strip_channels` turns it into a plain model with
    fewer channels.

    Attributes:
        channel_plan: The `ChannelPlan`, or None for a graph without
            channel-pruning wrappers.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.channel_plan = None
        wrappers = [
            layer for layer in _rewrite.iter_layers(self) if isinstance(layer, ChannelMaskWrapper)
        ]
        if wrappers:
            self._link_wrappers(wrappers)

    def _link_wrappers(self, wrappers):
        full = channel_graph.analyze(self)
        by_name = {w.layer.name: w for w in wrappers}
        group_schedules = {}
        for name, g in full.output_groups.items():
            schedule = getattr(by_name.get(name), "pruning_schedule", None)
            if schedule is None:
                continue
            known = group_schedules.setdefault(g, schedule)
            if known != schedule:
                raise ValueError(
                    f"Layers of one channel group (of '{full.groups[g].name}') carry different "
                    f"pruning schedules: {known!r} and {schedule!r} (on '{name}')."
                )
        settings = {(w.importance, w.round_to) for w in wrappers}
        if len(settings) != 1:
            raise ValueError(
                f"The channel-pruning wrappers of model '{self.name}' use different "
                f"(importance, round_to) settings: {sorted(settings)}."
            )
        active = sorted(group_schedules)
        graph = full.select(active)
        schedules, group_schedule = [], []
        for g in active:
            schedule = group_schedules[g]
            if schedule not in schedules:
                schedules.append(schedule)
            group_schedule.append(schedules.index(schedule))
        importance, round_to = settings.pop()
        self.channel_plan = ChannelPlan(
            graph=graph,
            schedules=schedules,
            group_schedule=np.array(group_schedule, np.int64),
            importance=importance,
            round_to=round_to,
            wrappers=[w for w in wrappers if w.layer.name in graph.weight_slots],
        )
        num_slots = graph.num_slots
        mask = state_variable(self, "channel_mask", (num_slots + 1,), "ones")
        state_variable(self, "channel_pruning_step", (), -1, dtype="int64")
        taylor = None
        if importance == "taylor":
            taylor = state_variable(self, "channel_taylor", (num_slots + 1,), 0.0)
        for wrapper in wrappers:
            axes = {
                name: [(axis, slots.astype(np.int32)) for axis, slots in entries]
                for name, entries in graph.weight_slots.get(wrapper.layer.name, {}).items()
            }
            wrapper.link = ChannelLink(mask, num_slots, axes, taylor) if axes else None

    @property
    def compression_state_variables(self):
        """The model's own variables (masks, step, scores): training state, not weights."""
        if self.channel_plan is None:
            return []
        names = ("channel_mask", "channel_pruning_step", "channel_taylor")
        return [getattr(self, n) for n in names if getattr(self, n, None) is not None]

    def call(self, inputs, training=None, mask=None, **kwargs):
        if training is True and self.channel_plan is not None:
            self._update_masks()
        return super().call(inputs, training=training, mask=mask, **kwargs)

    def _update_masks(self):
        plan = self.channel_plan
        step = self.channel_pruning_step + 1
        self.channel_pruning_step.assign(step)
        if plan.importance == "taylor":
            self.channel_taylor.assign(self.channel_taylor * scoring.TAYLOR_DECAY)
        if plan.graph.num_slots == 0:
            return
        decisions = [schedule(step) for schedule in plan.schedules]
        should = ops.take(ops.stack([d[0] for d in decisions]), plan.group_schedule)
        sparsity = ops.take(ops.stack([d[1] for d in decisions]), plan.group_schedule)

        def update():
            current = self.channel_mask[: plan.graph.num_slots]
            keep = ops.where(ops.take(should, plan.graph.slot_group), self._keep(sparsity), current)
            self.channel_mask.assign(ops.concatenate([keep, ops.ones((1,), "float32")]))
            return ops.zeros(())

        ops.cond(ops.any(should), update, lambda: ops.zeros(()))

    def _keep(self, sparsity, scores=None):
        """0/1 per unit: each group's most important channels at `sparsity` (one per group)."""
        plan = self.channel_plan
        sizes = np.array([group.size for group in plan.graph.groups], np.float32)
        kept = ops.maximum(scoring.kept_channels(sparsity, sizes, plan.round_to), 1.0)
        remove = ops.cast(sizes - kept, "int32")
        current = self.channel_mask[: plan.graph.num_slots]
        scores = (self._importance() if scores is None else scores) * current  # removed stay removed
        return scoring.keep_mask(scores, plan.graph.slot_group, plan.group_starts, remove)

    def channel_scores(self):
        """The importance of every prunable channel now (numpy, one score per unit)."""
        return ops.convert_to_numpy(self._importance())

    def mask_channels(self, sparsity, scores=None):
        """Removes channels at once, without training: what `fit` would reach at `sparsity`.

        Every group's mask is reset, then each group keeps its most important
        channels (by the model's importance criterion, on the current
        weights) at its sparsity. What `auto_compress` measures sensitivity
        with; `mask_channels(0.0)` restores every channel.

        Args:
            sparsity: A float for every group, or one per group (in
                `channel_groups(model)` order).
            scores: `channel_scores()` if already computed (they do not
                change until the weights do).
        """
        plan = self.channel_plan
        sparsity = np.broadcast_to(np.asarray(sparsity, np.float32), (len(plan.graph.groups),))
        self.channel_mask.assign(ops.ones((plan.graph.num_slots + 1,), "float32"))
        if plan.graph.num_slots and np.any(sparsity > 0):
            keep = self._keep(ops.convert_to_tensor(sparsity), scores)
            self.channel_mask.assign(ops.concatenate([keep, ops.ones((1,), "float32")]))

    def _importance(self):
        """Scores of every unit (`num_slots`,) by the plan's criterion."""
        plan = self.channel_plan
        num_slots = plan.graph.num_slots
        norm = "l1" if plan.importance == "l1" else "l2"
        magnitude = sum(w.magnitude_scores(norm) for w in plan.wrappers)[:num_slots]
        slot_group = plan.graph.slot_group
        if plan.importance == "bn_scale":
            has_bn = np.array([g.has_batchnorm for g in plan.graph.groups], bool)[slot_group]
            scale = sum(w.scale_scores() for w in plan.wrappers)[:num_slots]
            return ops.where(has_bn, scale, magnitude)
        if plan.importance == "taylor":
            taylor = self.channel_taylor[:num_slots]
            seen = ops.segment_sum(taylor, slot_group, num_segments=len(plan.graph.groups)) > 0
            return ops.where(ops.take(seen, slot_group), taylor, magnitude)
        return magnitude

    # -- what the user reads ------------------------------------------------

    def kept_channels(self):
        """`{group name: (kept, prunable)}` channel counts of each pruned group."""
        if self.channel_plan is None:
            return {}
        graph = self.channel_plan.graph
        mask = ops.convert_to_numpy(self.channel_mask)[: graph.num_slots]
        return {
            group.name: (int(mask[graph.slot_group == g].sum()), group.size)
            for g, group in enumerate(graph.groups)
        }

    def channel_sparsity(self):
        """Fraction of the prunable channels removed, over all pruned groups (a float)."""
        counts = self.kept_channels().values()
        total = sum(n for _, n in counts)
        return 1.0 - sum(k for k, _ in counts) / total if total else 0.0

"""`prune_channels`: remove whole channels during `fit`, coupled layers together."""

import numpy as np

import keras

from tfcompress import _graph, _rewrite
from tfcompress.pruning.api import _check_schedule as check_schedule
from tfcompress.pruning.channels import graph as channel_graph
from tfcompress.pruning.channels.importance import check_importance
from tfcompress.pruning.channels.model import ChannelPruningModel
from tfcompress.pruning.channels.wrapper import ChannelMaskWrapper
from tfcompress.pruning.schedules import ConstantSparsity


class _Role:
    """A wrapped layer's setting: the schedule of its output group (None: it only reads)."""

    def __init__(self, schedule):
        self.schedule = schedule


def prune_channels(model, pruning_schedule=None, importance="magnitude"):
    """Makes a model remove whole channels (filters, units) during `fit`.

    The output channels of Conv1D/2D/3D, Dense, DepthwiseConv and
    SeparableConv layers are pruned in groups found from the model's graph
    (`channel_groups`): layers joined by Add / Subtract / Multiply (residuals,
    squeeze-excite) lose the same channels, a depthwise conv and a
    BatchNormalization lose their input's, Concatenate lays its inputs end to
    end, and the layers reading a channel (the next conv's kernel rows, the
    Dense rows behind a Flatten or a global pooling) lose it too. Channels
    that reach a model output, or an operation the analysis does not know
    (a custom layer, `ops.reshape`, a slice), are kept.

    Each group keeps its most important channels, at the sparsity its
    schedule gives, recomputed when the schedule says so; a removed channel
    is masked everywhere (its filter, bias, BatchNorm scale and shift, and its
    rows in the layers reading it), so the model computes exactly what
    `strip_channels` will ship. No callback is needed; all state is in
    variables saved with the model.

    Args:
        model: A built Sequential or functional model (nested ones
            included). It is not modified.
        pruning_schedule: A `PruningSchedule` for every group, or a dict
            `{layer_name: PruningSchedule}` pruning only the groups of the named
            layers (a None key gives the schedule of every other group). A
            layer names the group of its output channels. Defaults to
            `ConstantSparsity(0.5, begin_step=0)`.
        importance: How channels are ranked within a group: "magnitude" (or
            "l2"): the L2 norm of the channel's weights in every layer of the
            group, each layer scaled to mean 1; "l1": the same with L1 norms;
            "bn_scale": |gamma| of the group's BatchNormalizations (Network
            Slimming; magnitude for groups without one); "taylor": the
            moving average over training steps of |sum(gradient * weight)|
            over the channel's weights (Molchanov et al. 2019; magnitude
            until gradients are seen).

    Returns:
        A `ChannelPruningModel` (a functional model); compile it before `fit`.

    Raises:
        TypeError: if `model` is not a `keras.Model`.
        ValueError: for a subclassed or unbuilt model, a model already
            channel-pruned, a bad schedule or importance, a dict naming a
            layer the model does not have or whose output channels cannot be
            pruned (and why), layers of one group given different schedules,
            or a sparsity that would remove every channel of a group.

    Example:

    ```python
    schedule = tfcompress.PolynomialDecay(0.0, 0.5, begin_step=0, end_step=1000)
    pruned = tfcompress.prune_channels(model, pruning_schedule=schedule)
    pruned.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    pruned.fit(x, y, epochs=5)
    small = tfcompress.strip_channels(pruned)   # fewer filters, same outputs
    ```
    """
    _check_model(model)
    importance = check_importance(importance)
    if pruning_schedule is None:
        pruning_schedule = ConstantSparsity(0.5, begin_step=0)
    schedules = _rewrite.per_layer_settings("pruning_schedule", pruning_schedule, check_schedule)
    graph = channel_graph.analyze(model)
    group_schedules = _group_schedules(model, graph, schedules)
    _check_sparsities(graph, group_schedules)
    if not group_schedules:
        raise ValueError(
            f"Model '{model.name}' has no channels to prune: "
            + ("; ".join(f"'{n}': {r}" for n, r in graph.pin_reasons.items()) or "no Conv, "
               "Dense, DepthwiseConv or SeparableConv layer.")
        )
    selected = graph.select(sorted(group_schedules))
    order = sorted(group_schedules)
    roles = {}
    for name in selected.weight_slots:
        g = selected.output_groups.get(name)
        roles[name] = _Role(group_schedules[order[g]] if g is not None else None)

    wrapped = _rewrite.apply_per_layer(
        model,
        roles,
        ChannelMaskWrapper,
        lambda layer, role: ChannelMaskWrapper(
            layer, pruning_schedule=role.schedule, importance=importance
        ),
        "pruning_schedule",
        "model",
    )
    graph_of_wrapped = _graph.graph_of(wrapped)
    return ChannelPruningModel(graph_of_wrapped.input, graph_of_wrapped.output, name=model.name)


def channel_groups(model):
    """The channel groups of a model: what `prune_channels` removes together.

    Args:
        model: A built Sequential or functional model, or a
            `ChannelPruningModel` (then only the groups it prunes).

    Returns:
        A list of `ChannelGroup` (name, size, producers, layers,
        has_batchnorm), in graph order.

    Example:

    >>> inputs = keras.Input((8, 8, 3))
    >>> a = keras.layers.Conv2D(8, 3, name="a")(inputs)
    >>> b = keras.layers.Conv2D(4, 3, name="b")(inputs)
    >>> x = keras.layers.Concatenate()([a, b])
    >>> outputs = keras.layers.Dense(2, name="head")(keras.layers.GlobalAveragePooling2D()(x))
    >>> [(g.name, g.size, g.layers) for g in channel_groups(keras.Model(inputs, outputs))]
    [('a', 8, ('a', 'head')), ('b', 4, ('b', 'head'))]
    """
    if isinstance(model, ChannelPruningModel) and model.channel_plan is not None:
        return list(model.channel_plan.graph.groups)
    _check_model(model)
    return list(channel_graph.analyze(model).groups)


def _check_model(model):
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"Expected a keras.Model. Received: model={model!r} of type {type(model).__name__}"
        )
    if not _rewrite.is_graph_model(model):
        raise ValueError(
            f"Channel pruning follows a model's graph, so it needs a Sequential or "
            f"functional model; model '{model.name}' is subclassed ({type(model).__name__})."
        )
    if not model.built or not getattr(_graph.graph_of(model), "outputs", None):
        raise ValueError(
            f"Model '{model.name}' is not built: give it a `keras.Input(shape=...)` first."
        )
    if isinstance(model, ChannelPruningModel) and model.channel_plan is not None:
        raise ValueError(
            f"Model '{model.name}' is already channel-pruned: call "
            "tfcompress.strip_channels(model) first, or keep training it."
        )


def _group_schedules(model, graph, schedules):
    """`{group index: schedule}` of the groups to prune, from `{layer name or None: schedule}`."""
    names = {layer.name: layer for layer in _rewrite.iter_layers(model)}
    missing = sorted(n for n in schedules if n is not None and n not in names)
    if missing:
        raise ValueError(
            f"pruning_schedule names layers that model '{model.name}' does not have: {missing}"
        )
    result, named_by = {}, {}
    for name, schedule in schedules.items():
        if name is None:
            continue
        if name not in graph.output_groups:
            layer = names[name]
            if not isinstance(layer, channel_graph.MEMBER_LAYERS):
                raise ValueError(
                    f"pruning_schedule names layer '{name}' ({type(layer).__name__}), which has no "
                    "channels to prune: name a Conv, Dense, DepthwiseConv, SeparableConv or "
                    "BatchNormalization layer."
                )
            raise ValueError(
                f"The output channels of layer '{name}' cannot be pruned: "
                f"{graph.pin_reasons.get(name, 'they belong to several groups')}."
            )
        g = graph.output_groups[name]
        if g in result and result[g] != schedule:
            raise ValueError(
                f"Layers '{named_by[g]}' and '{name}' share their output channels (one group: "
                f"{list(graph.groups[g].layers)}), so they take one schedule. Received two: "
                f"{result[g]!r} and {schedule!r}"
            )
        result[g], named_by[g] = schedule, name
    if None in schedules:
        for g in range(len(graph.groups)):
            result.setdefault(g, schedules[None])
    return result


def _check_sparsities(graph, group_schedules):
    for g, schedule in sorted(group_schedules.items()):
        group = graph.groups[g]
        sparsity = max_sparsity(schedule)
        removed = int(np.round(sparsity * group.size))
        if removed >= group.size:
            raise ValueError(
                f"pruning_schedule would remove every channel of the group of layer "
                f"'{group.name}' (layers {list(group.layers)}): sparsity {sparsity:g} of its "
                f"{group.size} channel(s) rounds to {removed}. Give this group a lower sparsity "
                f"with a dict {{'{group.name}': schedule, None: schedule}}, or leave it out."
            )


def max_sparsity(schedule):
    """The highest sparsity a (non-decreasing or constant) schedule reaches, as a float."""
    steps = [schedule.begin_step] + ([schedule.end_step] if schedule.end_step != -1 else [])
    return max(float(keras.ops.convert_to_numpy(schedule.sparsity(s))) for s in steps)

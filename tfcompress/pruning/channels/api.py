"""`prune_channels`: remove whole channels during `fit`, coupled layers together."""

import numpy as np

import keras

from tfcompress import _graph, _layers, _rewrite
from tfcompress.pruning.api import _check_schedule as check_schedule
from tfcompress.pruning.channels import graph as channel_graph
from tfcompress.pruning.channels.importance import check_importance, check_round_to, kept_channels
from tfcompress.pruning.channels.model import ChannelPruningModel
from tfcompress.pruning.channels.walk import MEMBER_LAYERS
from tfcompress.pruning.channels.wrapper import ChannelMaskWrapper
from tfcompress.pruning.schedules import ConstantSparsity


class _Role:
    """A wrapped layer's setting: the schedule of its output group (None: it only reads)."""

    def __init__(self, schedule):
        self.schedule = schedule


def prune_channels(model, pruning_schedule=None, importance="magnitude", round_to=1):
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
        round_to: Each pruned group keeps a multiple of `round_to` channels
            (the nearest to what its schedule asks; a group of at most
            `round_to` channels keeps them all). CPU kernels (XNNPACK) and
            accelerators process channels in tiles of 8 or 16: a layer of 27
            channels costs about what one of 32 does.

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
    round_to = check_round_to(round_to)
    if pruning_schedule is None:
        pruning_schedule = ConstantSparsity(0.5, begin_step=0)
    schedules = _rewrite.per_layer_settings("pruning_schedule", pruning_schedule, check_schedule)
    graph = channel_graph.analyze(model)
    group_schedules = _group_schedules(model, graph, schedules)
    _check_sparsities(graph, group_schedules, round_to)
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
            layer, pruning_schedule=role.schedule, importance=importance, round_to=round_to
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
            if not isinstance(layer, MEMBER_LAYERS):
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


def _check_sparsities(graph, group_schedules, round_to):
    for g, schedule in sorted(group_schedules.items()):
        group = graph.groups[g]
        sparsity = max_sparsity(schedule)
        removed = group.size - int(keras.ops.convert_to_numpy(kept_channels(sparsity, [group.size], round_to))[0])
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


def sparsity_for_macs(model, macs_ratio, groups=None, round_to=1):
    """The uniform channel sparsity that brings a model down to `macs_ratio` of its MACs.

    Counted, without training, from the model's channel groups: a group of n
    channels at sparsity s keeps `n - round(s * n)`, and each layer's MACs
    shrink with the kept fraction of its input and output channels (only the
    input's for a depthwise conv). Give the result to `prune_channels` as the
    final sparsity of every group.

    Args:
        model: A built Sequential or functional model.
        macs_ratio: Target MACs of the stripped model over the model's, in (0, 1].
        groups: Names of the groups to prune (`ChannelGroup.name`); None for
            all. The others keep every channel: give `prune_channels` a dict
            `{name: schedule for name in groups}`.
        round_to: As in `prune_channels`: kept counts rounded to multiples.

    Returns:
        The smallest sparsity (a float, to 1e-4) reaching the target. Counts
        are whole channels, so the MACs may land below the target.

    Raises:
        ValueError: if `macs_ratio` is not in (0, 1], or no sparsity keeping
            a channel in every group reaches it (too many MACs are in layers
            whose channels are kept).

    Example:

    >>> inputs = keras.Input((8, 8, 3))
    >>> x = keras.layers.Conv2D(16, 3, padding="same")(inputs)
    >>> outputs = keras.layers.Conv2D(4, 1)(keras.layers.Conv2D(16, 3, padding="same")(x))
    >>> sparsity_for_macs(keras.Model(inputs, outputs), 0.5)  # 16 -> 10 filters: 0.43x
    0.3438
    """
    from tfcompress._validate import check_number
    from tfcompress.macs import count_macs

    macs_ratio = check_number("macs_ratio", macs_ratio, minimum=0, maximum=1, exclusive_minimum=True)
    _check_model(model)
    graph = channel_graph.analyze(model)
    if groups is not None:
        names = [g.name for g in graph.groups]
        unknown = sorted(set(groups) - set(names))
        if unknown:
            raise ValueError(f"groups names no channel group of model '{model.name}': {unknown}")
        graph = graph.select([names.index(name) for name in groups])
    counts = count_macs(model)
    sizes = np.array([g.size for g in graph.groups], np.float64)
    round_to = check_round_to(round_to)

    def macs_at(sparsity):
        kept = keras.ops.convert_to_numpy(kept_channels(sparsity, sizes, round_to)).astype(np.float64)
        return macs_when_kept(model, graph, kept / np.maximum(sizes, 1), counts)

    target = macs_ratio * counts.total
    highest = min(((n - 0.5) / n for n in sizes), default=0.0) - 1e-6
    if macs_at(0.0) <= target:
        return 0.0
    if not sizes.size or macs_at(highest) > target:
        raise ValueError(
            f"No channel sparsity brings model '{model.name}' to macs_ratio={macs_ratio}: "
            f"at most {macs_at(highest) / counts.total:.3f} of its MACs while keeping a "
            "channel in every group."
        )
    low, high = 0.0, highest
    while high - low > 1e-4:
        middle = (low + high) / 2
        low, high = (middle, high) if macs_at(middle) > target else (low, middle)
    # Up, never to the nearest: `high` may sit just above a step where one
    # group keeps `round_to` channels fewer, and rounding down would land on
    # the other side of it, above the target.
    sparsity = np.ceil(high * 1e4) / 1e4
    while macs_at(sparsity) > target and sparsity + 1e-4 <= highest:
        sparsity += 1e-4
    return float(round(sparsity, 4))


def macs_when_kept(model, graph, kept_fraction, counts=None):
    """Multiply-accumulates of `model` once each group of `graph` keeps a fraction of its channels.

    Counted without stripping: each layer's MACs shrink with the kept
    fraction of its input and output channels (only the input's for a
    depthwise conv), which is what `count_macs` of the stripped model gives
    when the fractions are whole channels.

    Args:
        model: A built Sequential or functional model.
        graph: Its `ChannelGraph` (`graph.analyze(model)`, or a `select` of it).
        kept_fraction: One float per group of `graph`: kept / prunable channels.
        counts: `count_macs(model)`, if already counted.

    Returns:
        The MACs, a float.
    """
    from tfcompress.macs import count_macs

    counts = count_macs(model) if counts is None else counts
    layers = {layer.name: layer for layer in _rewrite.iter_layers(model)}
    kept = np.append(np.asarray(kept_fraction, np.float64), 1.0)
    slot_fraction = np.append(kept[graph.slot_group], 1.0)
    total = 0.0
    for name, macs in counts.layers.items():
        axes = graph.weight_slots.get(name, {})

        def fraction(weight, axis):
            found = dict(axes.get(weight, ()))
            return float(np.mean(slot_fraction[found[axis]])) if axis in found else 1.0

        layer = layers[name]
        if isinstance(layer, _layers.SEPARABLE_LAYERS):
            dw, pw = (int(np.prod(v.shape)) for v in (layer.depthwise_kernel, layer.pointwise_kernel))
            rank = len(layer.pointwise_kernel.shape)
            inputs = fraction("depthwise_kernel", rank - 2)
            total += macs * (dw * inputs + pw * inputs * fraction("pointwise_kernel", rank - 1)) / (dw + pw)
        elif "kernel" in axes:
            rank = len(layer.kernel.shape)
            out = 1.0 if isinstance(layer, _layers.DEPTHWISE_LAYERS) else fraction("kernel", rank - 1)
            total += macs * fraction("kernel", rank - 2) * out
        else:
            total += macs
    return total

"""How important each channel is, and which channels a group keeps.

All in `keras.ops`, run inside the train step. A channel ("unit") is scored
from every weight slice that holds it, in every layer of its group: a conv's
filter, the BatchNormalization scale of it, the next conv's input rows.
Scores live in a vector of `num_slots + 1` entries, one per prunable unit,
the last one collecting channels that are always kept (and ignored).
"""

from keras import ops

from tfcompress._validate import check_one_of

IMPORTANCES = ("magnitude", "l1", "l2", "bn_scale", "taylor")

# Exponential moving average of the Taylor scores over training steps.
TAYLOR_DECAY = 0.9

_TINY = 1e-12


def check_importance(importance):
    """Returns `importance` if it is one of `IMPORTANCES`, else raises ValueError.

    Example:

    >>> check_importance("l1")
    'l1'
    """
    return check_one_of("importance", importance, IMPORTANCES)


def check_round_to(round_to):
    """Returns `round_to` if it is an integer >= 1, else raises ValueError."""
    from tfcompress._validate import check_int

    return check_int("round_to", round_to, minimum=1)


def kept_channels(sparsity, sizes, round_to=1):
    """How many channels groups of `sizes` keep at `sparsity` (float tensor per group).

    `round(sparsity * n)` are removed; with `round_to` > 1 the kept count is
    then rounded to the nearest multiple of `round_to` (at least one
    multiple, at most n), and a group of at most `round_to` channels keeps
    them all. Not clipped to one channel: the caller checks that.

    Example:

    >>> ops.convert_to_numpy(kept_channels(0.3, [10.0, 48.0, 8.0], round_to=16)).tolist()
    [10.0, 32.0, 8.0]
    """
    sizes = ops.cast(ops.convert_to_tensor(sizes), "float32")
    kept = sizes - ops.round(ops.cast(sparsity, "float32") * sizes)
    if round_to > 1:
        rounded = ops.clip(ops.round(kept / round_to) * round_to, float(round_to), sizes)
        kept = ops.where(sizes > round_to, rounded, sizes)
    return kept


def _per_position(value, axis, reduce):
    """Reduces `value` over every axis but `axis`."""
    others = tuple(a for a in range(len(value.shape)) if a != axis)
    return reduce(value, axis=others) if others else value


def magnitude_scores(value, axes, num_slots, norm):
    """Scores of the units held by one weight: its L1 or L2 norm per channel.

    Each axis' norms are divided by their mean over prunable channels, so
    every layer of a group counts alike whatever the scale of its weights.

    Args:
        value: The (masked) weight tensor.
        axes: `[(axis, slots)]`: the unit of each position along `axis`
            (`num_slots` for a channel that is always kept).
        num_slots: Number of prunable units.
        norm: "l1" or "l2".

    Returns:
        A float32 vector of `num_slots + 1` scores.
    """
    total = ops.zeros((num_slots + 1,), "float32")
    value = ops.cast(value, "float32")
    for axis, slots in axes:
        if norm == "l1":
            per = _per_position(ops.abs(value), axis, ops.sum)
        else:
            per = ops.sqrt(_per_position(ops.square(value), axis, ops.sum))
        total = total + _normalized_sum(per, slots, num_slots)
    return total


def scale_scores(gamma, slots, num_slots):
    """Scores from a BatchNormalization scale: |gamma| per channel (Network Slimming)."""
    return _normalized_sum(ops.abs(ops.cast(gamma, "float32")), slots, num_slots)


def _normalized_sum(per, slots, num_slots):
    prunable = ops.cast(slots < num_slots, "float32")
    mean = ops.sum(per * prunable) / ops.maximum(ops.sum(prunable), 1.0)
    return ops.segment_sum(per / (mean + _TINY), slots, num_segments=num_slots + 1)


def taylor_probe(value, axes, accumulator, num_slots):
    """`value` unchanged, whose gradient adds Taylor scores to `accumulator`.

    The first-order estimate of the loss change when a channel's weights go
    to zero is `sum(gradient * weight)` over them (Molchanov et al., CVPR
    2019); its absolute value per channel, times `1 - TAYLOR_DECAY`, is added
    in the backward pass (the model decays the accumulator each step).

    Args:
        value: A weight tensor used in the forward pass.
        axes: `[(axis, slots)]` as in `magnitude_scores`.
        accumulator: A `(num_slots + 1,)` float32 variable.
        num_slots: Number of prunable units.

    Returns:
        A tensor equal to `value`.
    """

    @ops.custom_gradient
    def probe(v):
        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            product = ops.cast(upstream * v, "float32")
            added = ops.zeros((num_slots + 1,), "float32")
            for axis, slots in axes:
                per = ops.abs(_per_position(product, axis, ops.sum))
                added = added + ops.segment_sum(per, slots, num_segments=num_slots + 1)
            accumulator.assign_add((1.0 - TAYLOR_DECAY) * added)
            return upstream

        return v, grad

    return probe(value)


def keep_mask(scores, slot_group, group_starts, num_remove):
    """Keeps all but the `num_remove[g]` lowest-scored units of each group g.

    Args:
        scores: `(num_slots,)` float scores (>= 0).
        slot_group: `(num_slots,)` int numpy array, the group of each unit;
            the units of a group are contiguous.
        group_starts: numpy array, first unit of each group.
        num_remove: `(num_groups,)` int tensor.

    Returns:
        A float32 0/1 vector of `num_slots` entries. Ties are broken by order.

    Example:

    >>> import numpy as np
    >>> scores = ops.convert_to_tensor([3.0, 1.0, 2.0, 5.0, 4.0])
    >>> keep = keep_mask(scores, np.array([0, 0, 0, 1, 1]), np.array([0, 3]),
    ...                  ops.convert_to_tensor([2, 1]))
    >>> ops.convert_to_numpy(keep).tolist()
    [1.0, 0.0, 0.0, 1.0, 0.0]
    """
    num_groups = len(group_starts)
    scores = ops.cast(scores, "float32")
    # Sort by (group, score) at once: the group index plus the score scaled
    # into [0, 1), in float64 so the scaled scores keep their order.
    group_max = ops.segment_max(scores, slot_group, num_segments=num_groups)
    scaled = scores / (ops.take(group_max, slot_group) + _TINY) * 0.5
    key = ops.cast(slot_group, "float64") + ops.cast(scaled, "float64")
    position = ops.argsort(ops.argsort(key))
    rank = ops.cast(position, "int32") - ops.take(ops.convert_to_tensor(group_starts, "int32"), slot_group)
    remove = ops.take(ops.cast(num_remove, "int32"), slot_group)
    return ops.cast(rank >= remove, "float32")

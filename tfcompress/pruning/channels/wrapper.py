"""`ChannelMaskWrapper`: one layer of a channel group, masked by the group's mask.

The masks themselves are not here: coupled layers must drop the same
channels, so every group has one mask, held by the `ChannelPruningModel`
(`model.py`) in one vector for all groups. A wrapper holds a `ChannelLink`
to that vector and, for each of its variables, the unit of each channel
position; in `call` it gathers its masks from the vector.
"""

import keras
from keras import ops

from tfcompress._wrapper import CompressionWrapper
from tfcompress.pruning.channels import importance as scoring
from tfcompress.pruning.channels.walk import MEMBER_LAYERS, channel_axes

# Running statistics are sliced when stripping but never masked: BatchNorm
# updates them itself, and a zero gamma and beta already silence the channel.
_UNMASKED = ("moving_mean", "moving_variance")
_KERNELS = ("kernel", "depthwise_kernel", "pointwise_kernel")


class ChannelLink:
    """What a wrapper reads from its `ChannelPruningModel`.

    A plain object (not a list, dict or layer), so Keras neither tracks nor
    saves the model's variables a second time under the wrapper.

    Attributes:
        mask: The model's `(num_slots + 1,)` mask variable (last entry 1).
        num_slots: Number of prunable units.
        axes: `{variable name: [(axis, slots)]}` of the wrapped layer.
        taylor: The model's Taylor accumulator, or None.
    """

    def __init__(self, mask, num_slots, axes, taylor=None):
        self.mask = mask
        self.num_slots = num_slots
        self.axes = axes
        self.taylor = taylor


@keras.saving.register_keras_serializable(package="tfcompress")
class ChannelMaskWrapper(CompressionWrapper):
    """Masks whole channels of a Conv, Dense, DepthwiseConv, SeparableConv or BatchNorm.

    Output channels (filters, units, a BatchNorm's gamma and beta) and input
    channels (the kernel's input rows) are multiplied by the mask of their
    group, so a removed channel contributes nothing anywhere: the masked
    model computes what `strip_channels` will ship. Built by
    `prune_channels`; outside a `ChannelPruningModel` it masks nothing.

    Args:
        layer: The layer to wrap.
        pruning_schedule: The `PruningSchedule` of the group its output
            channels belong to; None if it only reads pruned channels.
        importance: How channels are scored (see `prune_channels`).
        round_to: Groups keep a multiple of this many channels (see
            `prune_channels`).
        **kwargs: Base layer arguments (`name`, ...).
    """

    technique = "channel pruning"
    name_prefix = "prune_channels"
    strip_function = "strip_channels"
    config_args = ("importance", "round_to")
    serialized_args = ("pruning_schedule",)

    def __init__(self, layer, pruning_schedule=None, importance="magnitude", round_to=1, **kwargs):
        super().__init__(layer, **kwargs)
        self.pruning_schedule = pruning_schedule
        self.importance = scoring.check_importance(importance)
        self.round_to = scoring.check_round_to(round_to)
        self.link = None

    @classmethod
    def supports(cls, layer):
        return isinstance(layer, MEMBER_LAYERS)

    @classmethod
    def unsupported_message(cls, layer):
        return (
            f"Layer '{layer.name}' of type {type(layer).__name__} has no channels that "
            f"{cls.technique} removes. Supported types: "
            f"{', '.join(sorted({c.__name__ for c in MEMBER_LAYERS}))}."
        )

    @property
    def target_names(self):
        """Names of the variables masked, in the order of `target_weights`."""
        return [
            name
            for name in channel_axes(self.layer)
            if name not in _UNMASKED and getattr(self.layer, name, None) is not None
        ]

    @property
    def target_weights(self):
        return [getattr(self.layer, name) for name in self.target_names]

    def masks(self):
        """`{variable name: 0/1 tensor broadcastable to it}` (empty when unlinked)."""
        if self.link is None:
            return {}
        result = {}
        for name, axes in self.link.axes.items():
            rank = len(getattr(self.layer, name).shape)
            mask = None
            for axis, slots in axes:
                shape = [1] * rank
                shape[axis] = -1
                axis_mask = ops.reshape(ops.take(self.link.mask, slots), shape)
                mask = axis_mask if mask is None else mask * axis_mask
            result[name] = mask
        return result

    def weight_values(self, training):
        masks = self.masks()
        values = []
        for name, variable in zip(self.target_names, self.target_weights):
            value = ops.convert_to_tensor(variable)
            if name in masks:
                value = value * ops.cast(masks[name], value.dtype)
                if training and self.link.taylor is not None:
                    value = scoring.taylor_probe(
                        value, self.link.axes[name], self.link.taylor, self.link.num_slots
                    )
            values.append(value)
        return values

    def magnitude_scores(self, norm):
        """This layer's share of the units' magnitude scores ("l1" or "l2")."""
        total = ops.zeros((self.link.num_slots + 1,), "float32")
        for name, value in zip(self.target_names, self.weight_values(False)):
            if name in _KERNELS and name in self.link.axes:
                total = total + scoring.magnitude_scores(
                    value, self.link.axes[name], self.link.num_slots, norm
                )
        return total

    def scale_scores(self):
        """This layer's share of the BatchNorm-scale scores (zeros unless a BatchNorm)."""
        total = ops.zeros((self.link.num_slots + 1,), "float32")
        if isinstance(self.layer, keras.layers.BatchNormalization):
            for name, value in zip(self.target_names, self.weight_values(False)):
                if name == "gamma" and name in self.link.axes:
                    for _, slots in self.link.axes[name]:
                        total = total + scoring.scale_scores(value, slots, self.link.num_slots)
        return total

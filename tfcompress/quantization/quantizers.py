"""Fake-quantizers: the TF FakeQuant ops the TFLite converter turns into int8.

Every quantizer goes through `keras.quantizers.fake_quant_with_min_max_vars`,
which on the TensorFlow backend emits `FakeQuantWithMinMaxVars(PerChannel)`.
The converter reads the ranges of those ops, so the Keras QAT model and the
int8 `.tflite` round the same tensors to the same grid.
"""

import keras
from keras import ops

from tfcompress._validate import check_fraction, check_int, check_number

_fake_quant = keras.quantizers.fake_quant_with_min_max_vars
# A channel whose weights are all zero (a pruned filter) still needs a range.
_EPSILON = 1e-8


@keras.saving.register_keras_serializable(package="tfcompress")
class WeightQuantizer:
    """Symmetric int8 fake-quant of a weight, per output channel or per tensor.

    The range is `[-max|w|, max|w|]` of the current weights ("last value", as
    TFLite computes it from the constant), with the narrow range [-127, 127]
    TFLite requires for weights. Zero maps exactly to zero.

    Args:
        channel_axes: None for one scale per tensor, or the trailing axes that
            index output channels, e.g. `(-1,)` for a Conv2D kernel or
            `(-2, -1)` for a DepthwiseConv2D kernel (in_channels x multiplier,
            which TFLite flattens into one channel axis).
        num_bits: Bits of the integer grid.

    Example:

    >>> q = WeightQuantizer(channel_axes=(-1,))
    >>> w = keras.ops.convert_to_tensor([[0.5, -2.0], [1.0, 1.0]])
    >>> # Channel 1 has scale 2/127: 1.0 is 63.5 steps and rounds to 64.
    >>> [round(float(v), 4) for v in keras.ops.ravel(q(w))]
    [0.5039, -2.0, 1.0, 1.0079]
    """

    def __init__(self, channel_axes=None, num_bits=8):
        if channel_axes is not None:
            if not isinstance(channel_axes, (tuple, list)):
                channel_axes = (channel_axes,)
            channel_axes = tuple(check_int("channel_axes", a) for a in channel_axes)
            if any(a >= 0 for a in channel_axes) or channel_axes != tuple(
                range(-len(channel_axes), 0)
            ):
                raise ValueError(
                    "channel_axes must be None or trailing negative axes such as "
                    f"(-1,) or (-2, -1). Received: channel_axes={channel_axes!r}"
                )
        self.channel_axes = channel_axes
        self.num_bits = check_int("num_bits", num_bits, minimum=2)

    def __call__(self, weight):
        """Returns `weight` rounded to the integer grid (still float)."""
        if self.channel_axes is None:
            flat, reduce_axes = weight, None
        else:
            shape = tuple(weight.shape)
            n = len(self.channel_axes)
            channels = 1
            for size in shape[-n:]:
                channels *= size
            flat = ops.reshape(weight, shape[:-n] + (channels,)) if n > 1 else weight
            reduce_axes = tuple(range(len(flat.shape) - 1))
        values, bound = self.project(flat, reduce_axes)
        bound = ops.stop_gradient(ops.maximum(bound, _EPSILON))
        axis = {} if reduce_axes is None else {"axis": -1}
        out = _fake_quant(values, -bound, bound, self.num_bits, narrow_range=True, **axis)
        if self.channel_axes is not None and len(self.channel_axes) > 1:
            out = ops.reshape(out, shape)
        return out

    def project(self, flat, reduce_axes):
        """What the FakeQuant op rounds, and the bound of its grid.

        Args:
            flat: The weight with its output channels on the last axis.
            reduce_axes: The other axes (None: one range for the whole tensor).

        Returns:
            `(values, bound)`: the tensor to fake-quantize onto the symmetric
            grid `[-bound, bound]` (one bound per channel, or a scalar). Here
            the weight itself and its largest magnitude; low-bit quantizers
            (`tfcompress.quantization.lowbit`) project it first.
        """
        return flat, ops.max(ops.abs(flat), axis=reduce_axes)

    @property
    def weight_bits(self):
        """Bits per weight of the grid: `num_bits` here (8, 4, ...)."""
        return self.num_bits

    def per_tensor(self):
        """The same quantizer with one range for the whole tensor.

        Shared (clustered) values keep one integer each only under one scale.
        """
        return type(self).from_config({**self.get_config(), "channel_axes": None})

    def get_config(self):
        return {"channel_axes": self.channel_axes, "num_bits": self.num_bits}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"WeightQuantizer(channel_axes={self.channel_axes}, num_bits={self.num_bits})"


@keras.saving.register_keras_serializable(package="tfcompress")
class ActivationQuantizer:
    """Asymmetric per-tensor int8 fake-quant of an activation.

    With `fixed_range=None` the range is learned: the first training batch sets
    it, later batches move it by an exponential moving average
    (`ema_decay`). Inference uses the stored range ((-6, 6) before any
    training step). The range always contains
    0 so that zero (padding, ReLU) is exact. A `fixed_range` is used for
    outputs whose int8 scale TFLite fixes (softmax, sigmoid, tanh).

    The state (`min`, `max`, `count`) lives in variables of the layer that owns
    the quantizer (see `build`), so it is saved with the model.

    Args:
        ema_decay: Weight of the old range in the moving average, in [0, 1).
        fixed_range: None, or `(min, max)`.
        num_bits: Bits of the integer grid.
    """

    def __init__(self, ema_decay=0.99, fixed_range=None, num_bits=8):
        ema_decay = check_fraction("ema_decay", ema_decay)
        if fixed_range is not None:
            if not isinstance(fixed_range, (tuple, list)) or len(fixed_range) != 2:
                raise ValueError(
                    f"fixed_range must be None or a pair (min, max). Received: fixed_range={fixed_range!r}"
                )
            lo, hi = (check_number("fixed_range", v) for v in fixed_range)
            if not lo <= 0.0 <= hi or lo == hi:
                raise ValueError(
                    "fixed_range must be (min, max) with min <= 0 <= max and min < max. "
                    f"Received: fixed_range={fixed_range!r}"
                )
            fixed_range = (lo, hi)
        self.ema_decay = float(ema_decay)
        self.fixed_range = fixed_range
        self.num_bits = check_int("num_bits", num_bits, minimum=2)

    def build(self, layer, prefix):
        """Creates the range state on `layer`; returns it (None if fixed)."""
        if self.fixed_range is not None:
            return None
        from tfcompress._state import state_variable

        return (
            state_variable(layer, f"{prefix}_min", (), "zeros"),
            state_variable(layer, f"{prefix}_max", (), "zeros"),
            state_variable(layer, f"{prefix}_count", (), "zeros"),
        )

    def __call__(self, x, state, training=False, min_width=None):
        """Fake-quantizes `x`; in training also updates the moving range.

        `min_width`: widen the range used (not the one stored) downwards to at
        least this width (masked attention scores need room below).
        """
        if self.fixed_range is not None:
            lo, hi = self.fixed_range
            return _fake_quant(x, lo, hi, self.num_bits)
        vmin, vmax, count = state
        if training:
            x_min, x_max = _global_min_max(ops.min(x), ops.max(x))
            x_min = ops.stop_gradient(ops.minimum(x_min, 0.0))
            x_max = ops.stop_gradient(ops.maximum(x_max, 0.0))
            first = ops.equal(count, 0.0)
            d = self.ema_decay
            lo = ops.where(first, x_min, d * vmin + (1.0 - d) * x_min)
            hi = ops.where(first, x_max, d * vmax + (1.0 - d) * x_max)
            vmin.assign(lo)
            vmax.assign(hi)
            count.assign(count + 1.0)
        else:
            # Before any training step, use the conventional (-6, 6) (as tfmot).
            seen = ops.greater(count, 0.0)
            lo = ops.where(seen, vmin, -6.0)
            hi = ops.where(seen, vmax, 6.0)
        if min_width is not None:
            lo = ops.minimum(lo, hi - min_width)
        # An all-zero batch or an untrained range (0, 0) has no scale; widen it.
        hi = ops.maximum(hi, lo + _EPSILON)
        return _fake_quant(x, lo, hi, self.num_bits)

    def get_config(self):
        return {
            "ema_decay": self.ema_decay,
            "fixed_range": self.fixed_range,
            "num_bits": self.num_bits,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return (
            f"ActivationQuantizer(ema_decay={self.ema_decay}, "
            f"fixed_range={self.fixed_range}, num_bits={self.num_bits})"
        )


def _global_min_max(x_min, x_max):
    """Min and max over the whole global batch under `tf.distribute`.

    Each replica sees a shard of the batch; without this every replica would
    learn its own range (and the saved model would keep the first one's).
    """
    if keras.backend.backend() != "tensorflow":
        return x_min, x_max
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return x_min, x_max
    both = context.all_gather(ops.stack([x_min, -x_max])[None], axis=0)
    both = ops.min(both, axis=0)
    return both[0], -both[1]

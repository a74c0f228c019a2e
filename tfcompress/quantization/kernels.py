"""Layers TFLite runs as several int8 ops, computed as those ops with fake-quant between.

A `QuantizeWrapper` normally runs its layer with fake-quantized weights and
fake-quantizes the output. When the converter turns a layer into several
ops, every tensor between two of them is stored in int8 too and needs a range
of its own, or the op after it stays float. A `Kernel` here computes such a
layer as exactly those ops and calls `quantize(name, tensor)` on each tensor
in between; `intermediates` names those tensors (with TFLite's fixed range
where it fixes one). The wrapper owns the ranges (`<name>_min` / `_max` /
`_count` variables).

Kernels get the wrapper's fake-quantized weights as `{attribute: tensor}`.
"""

import dataclasses

import keras
import numpy as np
from keras import ops

from tfcompress import _layers
from tfcompress.quantization.quantizers import WeightQuantizer


@dataclasses.dataclass(frozen=True)
class Kernel:
    """How to compute a layer as the ops TFLite runs.

    Attributes:
        intermediates: `{name: fixed range or None}` of the tensors between ops.
        compute: `compute(layer, x, weights, quantize, **call_kwargs) -> y`,
            `y` before the wrapper's output quantizer.
    """

    intermediates: dict
    compute: object


def separable_conv(layer, x, weights, quantize, **kwargs):
    """SeparableConv: DEPTHWISE_CONV_2D, then CONV_2D, the tensor between int8."""
    y = ops.depthwise_conv(
        x,
        weights["depthwise_kernel"],
        strides=layer.strides,
        padding=layer.padding,
        data_format=layer.data_format,
        dilation_rate=layer.dilation_rate,
    )
    y = quantize("intermediate", y)
    pointwise = weights.get("pointwise_kernel", layer.pointwise_kernel)
    y = ops.conv(y, pointwise, strides=1, padding="valid", data_format=layer.data_format)
    if layer.use_bias:
        y = y + _along_axis(layer.bias, y, -1 if layer.data_format == "channels_last" else 1)
    return layer.activation(y) if layer.activation is not None else y


def batch_normalization(layer, x, weights, quantize, **kwargs):
    """A BatchNormalization no conv absorbs: MUL by a per-channel scale, then ADD.

    Runs with the moving statistics, training or not (as a folded one does):
    `x * gamma / sqrt(var + eps) + (beta - mean * gamma / sqrt(var + eps))`.
    Both per-channel constants are fake-quantized per tensor, as the
    converter stores them.
    """
    axis = layer.axis[0] if isinstance(layer.axis, (list, tuple)) else layer.axis
    scale = ops.rsqrt(layer.moving_variance + layer.epsilon)
    if layer.scale:
        scale = scale * layer.gamma
    offset = -layer.moving_mean * scale
    if layer.center:
        offset = offset + layer.beta
    quantizer = WeightQuantizer()
    y = quantize("scaled", x * _along_axis(quantizer(scale), x, axis))
    return y + _along_axis(quantizer(offset), x, axis)


def rescaling(layer, x, weights, quantize, **kwargs):
    """Rescaling: MUL by the scale, then (for a non-zero offset) ADD."""
    y = x * ops.cast(layer.scale, x.dtype)
    if not _has_offset(layer):
        return y
    return quantize("scaled", y) + ops.cast(layer.offset, x.dtype)


def _has_offset(layer):
    return bool(np.any(np.asarray(layer.offset) != 0))


def normalization(layer, x, weights, quantize, **kwargs):
    """Normalization with constant statistics: SUB, then MUL (MUL, ADD if inverted)."""
    std = ops.maximum(ops.sqrt(layer.variance), keras.config.epsilon())
    if layer.invert:
        return quantize("intermediate", x * std) + layer.mean
    return quantize("intermediate", x - layer.mean) / std


def _along_axis(vector, x, axis):
    """`vector` reshaped to broadcast along `axis` of `x`."""
    rank = len(x.shape)
    shape = [1] * rank
    shape[axis % rank] = -1
    return ops.reshape(vector, shape)


def kernel_for(layer, config):
    """The `Kernel` of `layer` under its `QuantizeConfig`, or None (runs as one op).

    Example:

    >>> bn = keras.layers.BatchNormalization()
    >>> list(kernel_for(bn, None).intermediates)
    ['scaled']
    """
    if isinstance(layer, _layers.SEPARABLE_LAYERS) and (
        config is None or "depthwise_kernel" in config.weights
    ):
        return Kernel({"intermediate": None}, separable_conv)
    if isinstance(layer, keras.layers.BatchNormalization):
        return Kernel({"scaled": None}, batch_normalization)
    if isinstance(layer, keras.layers.Rescaling):
        return Kernel({"scaled": None} if _has_offset(layer) else {}, rescaling)
    if isinstance(layer, keras.layers.Normalization):
        return Kernel({"intermediate": None}, normalization)
    return None

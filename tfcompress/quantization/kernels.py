"""Layers TFLite runs as several int8 ops, computed as those ops with fake-quant between.

A `QuantizeWrapper` normally runs its layer with fake-quantized weights and
fake-quantizes the output. When the converter turns a layer into several
ops, every tensor between two of them is stored in int8 too and needs a range
of its own, or the op after it stays float. A `Kernel` here computes such a
layer as exactly those ops and calls `quantize(name, tensor)` on each tensor
in between; `intermediates` names those tensors (with TFLite's fixed range
where it fixes one). The wrapper owns the ranges (`<name>_min` / `_max` /
`_count` variables).

Kernels get the wrapper's fake-quantized weights as `{attribute: tensor}`
and `quantize`: `quantize(name, tensor, min_width=None, update=True)`
fake-quantizes a tensor between ops (`min_width`: widen the range to at least
that; `update=False`: apply it without moving it); `quantize.constant(value)`
a constant operand (a scale, an offset, epsilon) as the converter stores it,
so that Keras computes with the values TFLite computes with.
"""

import dataclasses

import keras
import numpy as np
from keras import ops

from tfcompress import _layers
from tfcompress.quantization.configs import fixed_range_for


@dataclasses.dataclass(frozen=True)
class Kernel:
    """How to compute a layer as the ops TFLite runs.

    Attributes:
        intermediates: `{name: fixed range or None}` of the tensors between ops.
        compute: `compute(layer, weights, quantize, training, *call_args,
            **call_kwargs) -> y`, `y` before the wrapper's output quantizer.
    """

    intermediates: dict
    compute: object


def separable_conv(layer, weights, quantize, training, x):
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


def batch_normalization(layer, weights, quantize, training, x, **kwargs):
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
    y = quantize("scaled", x * _along_axis(quantize.constant(scale), x, axis))
    return y + _along_axis(quantize.constant(offset), x, axis)


def rescaling(layer, weights, quantize, training, x):
    """Rescaling: MUL by the scale, then (for a non-zero offset) ADD."""
    y = x * quantize.constant(ops.cast(layer.scale, x.dtype))
    if not _has_offset(layer):
        return y
    return quantize("scaled", y) + quantize.constant(ops.cast(layer.offset, x.dtype))


def _has_offset(layer):
    return bool(np.any(np.asarray(layer.offset) != 0))


def normalization(layer, weights, quantize, training, x):
    """Normalization with constant statistics: SUB, then MUL (MUL, ADD if inverted)."""
    std = ops.maximum(ops.sqrt(layer.variance), keras.config.epsilon())
    mean = quantize.constant(layer.mean)
    if layer.invert:
        return quantize("intermediate", x * quantize.constant(std)) + mean
    return quantize("intermediate", x - mean) * quantize.constant(1.0 / std)


def projection(layer, weights, quantize, training, x):
    """Dense / EinsumDense on a rank > 2 input as one rank-2 FULLY_CONNECTED with its bias.

    Keras computes them as a matmul (or einsum) and a bias add, which the
    converter leaves as FULLY_CONNECTED + RESHAPE + a float ADD when the bias
    is not zero. Flattening the leading axes first gives one FULLY_CONNECTED
    holding the bias, like a Dense on a rank-2 input.
    """
    return project(layer, x, weights.get("kernel", layer.kernel))


def project(layer, x, kernel):
    """`layer(x)` for a Dense / EinsumDense computing with `kernel`, as a rank-2 matmul."""
    contracted, tail = _contraction(layer)
    size = int(np.prod(kernel.shape[:contracted]))
    lead = [ops.shape(x)[i] if d is None else d for i, d in enumerate(x.shape[: len(x.shape) - contracted])]
    lead[0] = -1
    y = ops.matmul(ops.reshape(x, (-1, size)), ops.reshape(kernel, (size, -1)))
    bias = getattr(layer, "bias", None)
    if bias is not None:
        y = y + ops.reshape(ops.broadcast_to(bias, tail), (-1,))
    activation = getattr(layer, "activation", None)
    if activation is not None:
        y = activation(y)
    return ops.reshape(y, tuple(lead) + tuple(tail))


def _contraction(layer):
    """(number of trailing input axes contracted, output axes the kernel adds), or None.

    For Dense: (1, (units,)). For an EinsumDense whose equation contracts the
    last input axes with the first kernel axes and appends the other kernel
    axes to the remaining input axes ("abc,cde->abde": (1, (d, e))).
    """
    if isinstance(layer, keras.layers.Dense):
        return 1, (layer.units,)
    inputs, rest = layer.equation.split(",")
    kernel_axes, outputs = rest.split("->")
    inputs, outputs = inputs.replace("...", ""), outputs.replace("...", "")
    shape = tuple(layer.kernel.shape)
    for n in range(min(len(inputs), len(kernel_axes)), 0, -1):
        kept = inputs[: len(inputs) - n]
        if (
            inputs[len(inputs) - n:] == kernel_axes[:n]
            and outputs == kept + kernel_axes[n:]
            and not set(kept) & set(kernel_axes)
        ):
            bias = getattr(layer, "bias", None)
            if bias is not None and len(bias.shape) > len(kernel_axes) - n:
                return None
            return n, shape[n:]
    return None


def layer_normalization(layer, weights, quantize, training, x):
    """LayerNormalization as MEAN, SUB, MUL, MEAN, ADD, RSQRT, MUL, MUL, ADD.

    The converter's own lowering has a NEG TFLite cannot run in int8; this
    one has an int8 kernel for each op and a range for each tensor between
    them (the first mean keeps its input's scale). `c * c`, not a square:
    TFLite's SQUARE has no int8 kernel. gamma and beta are fake-quantized per
    tensor, as the converter stores them.
    """
    axes = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
    if layer.rms_scaling:
        centered = x
    else:
        centered = quantize("centered", x - ops.mean(x, axis=axes, keepdims=True))
    squares = quantize("squares", centered * centered)
    variance = quantize("variance", ops.mean(squares, axis=axes, keepdims=True))
    variance = quantize("variance_eps", variance + quantize.constant(layer.epsilon))
    inverse_std = _saturating_rsqrt(variance) if training else ops.rsqrt(variance)
    y = quantize("normalized", centered * quantize("inverse_std", inverse_std))
    if layer.scale:
        y = quantize("scaled", y * _broadcastable(quantize.constant(layer.gamma), x, axes))
    if layer.center:
        y = y + _broadcastable(quantize.constant(layer.beta), x, axes)
    return y


def _saturating_rsqrt(variance):
    """rsqrt, where a variance that rounded to int8 zero takes the others' largest value.

    A token far flatter than the rest of the batch has `variance + epsilon`
    below half a step of its int8 range. TFLite's int8 RSQRT gives a zero
    input its output range's maximum; at inference the fake-quant clamps
    rsqrt(0) = inf to that maximum too. In training the range is still being
    learned: an inf would push it to inf (every other token then rounds to 0)
    and its gradient is NaN. Training only: the exported graph keeps a plain
    RSQRT (a SELECT there would stay float).
    """
    positive = variance > 0
    inverse = ops.rsqrt(ops.where(positive, variance, 1.0))
    largest = ops.stop_gradient(ops.max(ops.where(positive, inverse, 0.0)))
    return ops.where(positive, inverse, largest)


def _layer_normalization_intermediates(layer):
    names = ["squares", "variance", "variance_eps", "inverse_std", "normalized"]
    if not layer.rms_scaling:
        names.insert(0, "centered")
    if layer.scale and layer.center:
        names.append("scaled")
    return dict.fromkeys(names)


def _broadcastable(parameter, x, axes):
    """gamma / beta (shaped like the normalized axes) shaped to broadcast with `x`."""
    rank = len(x.shape)
    axes = sorted(a % rank for a in axes)
    shape = [x.shape[a] if a in axes else 1 for a in range(rank)]
    return ops.reshape(parameter, shape)


# The int8 softmax rounds exp(-12) (< 1/512 of the row maximum) to zero: masked
# scores sit at the bottom of a range at least this wide, so they get no weight.
_MASKED_SCORES_RANGE = 12.0
_MASKED = -1e9


def multi_head_attention(
    layer,
    weights,
    quantize,
    training,
    query,
    value,
    key=None,
    query_mask=None,
    value_mask=None,
    key_mask=None,
    attention_mask=None,
    return_attention_scores=False,
    use_causal_mask=False,
):
    """MultiHeadAttention as TFLite runs it: FC projections, MUL, BATCH_MATMUL, SOFTMAX...

    Every projection, the scaled query, the scores, the probabilities (TFLite's
    fixed 1/256 softmax range) and the context get a range. A mask (padding,
    causal) is applied to the quantized scores: TFLite's SELECT_V2 keeps the
    scores' scale, so the masked value becomes the bottom of their range,
    which is kept at least 12 wide so that those positions get zero weight in
    the int8 softmax, as in Keras.
    """
    key = value if key is None else key
    # Keras' own mask logic (query/value masks, causal mask); private, but
    # the one definition of what MultiHeadAttention masks.
    mask = layer._compute_attention_mask(
        query, value, query_mask=query_mask, value_mask=value_mask, key_mask=key_mask,
        attention_mask=attention_mask, use_causal_mask=use_causal_mask,
    )
    q = quantize("query", project(layer.query_dense, query, weights["query_dense.kernel"]))
    k = quantize("key", project(layer.key_dense, key, weights["key_dense.kernel"]))
    v = quantize("value", project(layer.value_dense, value, weights["value_dense.kernel"]))
    q = quantize("query_scaled", q * quantize.constant(layer._inverse_sqrt_key_dim))
    scores = ops.einsum(layer._dot_product_equation, k, q)
    if mask is None:
        scores = quantize("scores", scores)
    else:
        scores = quantize("scores", scores, min_width=_MASKED_SCORES_RANGE)
        for _ in range(len(scores.shape) - len(mask.shape)):
            mask = ops.expand_dims(mask, axis=-len(layer._attention_axes) * 2 - 1)
        scores = ops.where(ops.cast(mask, "bool"), scores, _MASKED)
        scores = quantize("scores", scores, min_width=_MASKED_SCORES_RANGE, update=False)
    axes = tuple(range(len(scores.shape) - len(layer._attention_axes), len(scores.shape)))
    probabilities = quantize("probabilities", _softmax(scores, axes))
    if layer.dropout and training:
        probabilities = layer._dropout_layer(probabilities, training=True)
    context = quantize("context", ops.einsum(layer._combine_equation, probabilities, v))
    output = project(layer.output_dense, context, weights["output_dense.kernel"])
    if return_attention_scores:
        return output, probabilities
    return output


def _softmax(x, axes):
    if len(axes) == 1:
        return ops.softmax(x, axis=axes[0])
    return ops.exp(x - ops.logsumexp(x, axis=axes, keepdims=True))


def add(layer, weights, quantize, training, inputs):
    """An Add of n > 2 tensors: n - 1 ADD ops, each partial sum with its range."""
    total = inputs[0]
    for i, x in enumerate(inputs[1:-1]):
        total = quantize(f"partial_sum{i}", total + x)
    return total + inputs[-1]


def _along_axis(vector, x, axis):
    """`vector` reshaped to broadcast along `axis` of `x`."""
    rank = len(x.shape)
    shape = [1] * rank
    shape[axis % rank] = -1
    return ops.reshape(vector, shape)


class _Unquantized:
    """The `quantize` of a kernel run in float: every tensor and constant as it is."""

    def __call__(self, name, tensor, min_width=None, update=True):
        del name, min_width, update
        return tensor

    def constant(self, value):
        return value


@keras.saving.register_keras_serializable(package="tfcompress")
class AsTFLiteOps(keras.layers.Wrapper):
    """A float layer computed as the ops of its `Kernel`, with no fake-quant.

    What post-training `lite.convert(..., "int8" / "int16x8")` converts
    LayerNormalization as: the converter's own lowering has a NEG with no
    int8 kernel and a SQUARED_DIFFERENCE with no int16 one in LiteRT; MEAN,
    SUB, MUL, ADD and RSQRT have both. Same values as the layer, up to float
    rounding.

    Example:

    >>> norm = keras.layers.LayerNormalization()
    >>> x = np.random.default_rng(0).normal(size=(2, 3, 8)).astype("float32")
    >>> y = AsTFLiteOps(norm)(x)
    >>> bool(np.allclose(y, norm(x), atol=1e-5))
    True
    """

    def __init__(self, layer, **kwargs):
        super().__init__(layer, **kwargs)
        if kernel_for(layer, None) is None:
            raise ValueError(
                f"AsTFLiteOps needs a layer TFLite runs as several ops (see "
                f"quantization.kernels.kernel_for). Received: layer={layer.name!r} of type "
                f"{type(layer).__name__}"
            )

    def build(self, input_shape=None):
        if not self.layer.built:
            self.layer.build(input_shape)
        self.built = True

    def call(self, inputs):
        return kernel_for(self.layer, None).compute(self.layer, {}, _Unquantized(), False, inputs)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)


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
    if isinstance(layer, keras.layers.LayerNormalization):
        return Kernel(_layer_normalization_intermediates(layer), layer_normalization)
    if isinstance(layer, keras.layers.MultiHeadAttention):
        names = ("query", "key", "value", "query_scaled", "scores", "context")
        return Kernel({**dict.fromkeys(names), "probabilities": fixed_range_for("softmax")},
                      multi_head_attention)
    if isinstance(layer, (keras.layers.Dense, keras.layers.EinsumDense)) and (
        _input_rank(layer) != 2 and _contraction(layer) is not None
    ):
        return Kernel({}, projection)
    if isinstance(layer, keras.layers.Add) and _input_count(layer) > 2:
        return Kernel({f"partial_sum{i}": None for i in range(_input_count(layer) - 2)}, add)
    return None


def supports_attention(layer):
    """True for a MultiHeadAttention these kernels compute (no gate, no sliding window)."""
    plain = not getattr(layer, "_use_gate", False) and getattr(layer, "_sliding_window", None) is None
    projections = (layer.query_dense, layer.key_dense, layer.value_dense, layer.output_dense)
    return plain and all(_contraction(d) is not None for d in projections)


def _build_input_shape(layer):
    config = layer.get_build_config() if layer.built else None
    return (config or {}).get("input_shape")


def _input_rank(layer):
    shape = _build_input_shape(layer)
    return len(shape) if shape is not None else None


def _input_count(layer):
    shape = _build_input_shape(layer)
    return len(shape) if shape is not None else 2

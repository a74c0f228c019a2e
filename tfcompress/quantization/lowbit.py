"""Low-bit weights: 4-bit, ternary and binary quantizers and the table choosing them.

`quantize_model(model, weight_bits=4 | 2 | 1)` trains weights on a coarser grid
than int8 while activations stay int8. What the TFLite converter and LiteRT
accept decides the details:

* 4 bits: symmetric narrow range [-7, 7] (`WeightQuantizer(num_bits=4)`),
  stored as packed INT4 (two weights per byte).
* 2 (ternary) and 1 (binary): there is no INT2 in the converter, so the
  weight is projected onto {-a, 0, +a} or {-a, +a} per output channel, then
  fake-quantized on a 2-bit narrow grid over [-a, a]. TFLite stores that as
  INT4 holding only -7, 0, 7 (scale a / 7): the file is as large as 4-bit, but
  each channel holds 3 or 2 distinct values, which gzip and an entropy coder
  see (`tfcompress.summarize` shows the entropy bound).

Whatever computes the FakeQuant input must be constant-folded by the
converter, which refuses to fold an op whose output is more than twice the
size of its inputs (a boolean mask turned into floats, `ops.where` with scalar
branches): the projections below use only float element-wise ops
(`sign`, `relu`, products) and reductions.
"""

import warnings

import keras
from keras import ops

from tfcompress import _layers, _rewrite
from tfcompress._validate import check_int, check_number, check_one_of
from tfcompress.quantization.configs import QuantizeConfig
from tfcompress.quantization.quantizers import WeightQuantizer

L = keras.layers


def straight_through(projected, weight):
    """`projected` in the forward pass; the gradient flows to `weight` unchanged.

    Written as `projected + (weight - weight)` rather than
    `weight + (projected - weight)`: the forward value is then exactly
    `projected` (no rounding), so it sits exactly on the FakeQuant grid, where
    FakeQuant passes gradients through.
    """
    return ops.stop_gradient(projected) + (weight - ops.stop_gradient(weight))


def _nonzero_mean(magnitude, reduce_axes):
    """Mean of the non-zero magnitudes: pruned zeros do not shrink the scale."""
    count = ops.maximum(ops.sum(ops.sign(magnitude), axis=reduce_axes), 1.0)
    return ops.sum(magnitude, axis=reduce_axes) / count


@keras.saving.register_keras_serializable(package="tfcompress")
class TernaryQuantizer(WeightQuantizer):
    """Ternary weights {-a, 0, +a} per output channel (TWN, Li et al. 2016).

    Weights with `|w| <= threshold * mean|w|` become 0, the others
    `a * sign(w)` with `a` the mean magnitude of the kept ones (the
    least-squares scale). Means are over non-zero weights, so pruned zeros
    neither lower the threshold nor the scale. The gradient passes straight
    through to the float weights.

    Args:
        channel_axes: As `WeightQuantizer`: None for one `a` per tensor, or the
            trailing axes indexing output channels.
        threshold: The zero band, as a multiple of the mean magnitude (0.7 in
            TWN). 0 makes every non-zero weight +-a.

    Example:

    >>> q = TernaryQuantizer(channel_axes=(-1,))
    >>> w = keras.ops.convert_to_tensor([[0.1], [-0.9], [1.1], [0.2]])
    >>> # mean|w| = 0.575, threshold 0.4: 0.1 and 0.2 drop, a = (0.9 + 1.1) / 2.
    >>> [round(float(v), 4) for v in keras.ops.ravel(q(w))]
    [0.0, -1.0, 1.0, 0.0]
    """

    def __init__(self, channel_axes=None, threshold=0.7):
        super().__init__(channel_axes=channel_axes, num_bits=2)
        self.threshold = check_number("threshold", threshold, minimum=0.0)

    def project(self, flat, reduce_axes):
        magnitude = ops.abs(flat)
        cut = self.threshold * _nonzero_mean(magnitude, reduce_axes)
        kept = ops.sign(ops.relu(magnitude - cut))  # 1 above the cut, else 0
        scale = _nonzero_mean(magnitude * kept, reduce_axes)
        return straight_through(ops.sign(flat) * kept * scale, flat), scale

    @property
    def weight_bits(self):
        return 2

    def get_config(self):
        return {"channel_axes": self.channel_axes, "threshold": self.threshold}

    def __repr__(self):
        return f"TernaryQuantizer(channel_axes={self.channel_axes}, threshold={self.threshold})"


@keras.saving.register_keras_serializable(package="tfcompress")
class BinaryQuantizer(WeightQuantizer):
    """Binary weights {-a, +a} per output channel (BWN / XNOR-Net, Rastegari et al. 2016).

    `w -> a * sign(w)` with `a = mean|w|` (the least-squares scale), the
    gradient passing straight through to the float weights. A weight that is
    exactly zero (pruned) stays zero.

    Args:
        channel_axes: As `WeightQuantizer`.

    Example:

    >>> q = BinaryQuantizer(channel_axes=(-1,))
    >>> w = keras.ops.convert_to_tensor([[0.1], [-0.9], [1.1], [0.3]])
    >>> [round(float(v), 4) for v in keras.ops.ravel(q(w))]
    [0.6, -0.6, 0.6, 0.6]
    """

    def __init__(self, channel_axes=None):
        super().__init__(channel_axes=channel_axes, num_bits=2)

    def project(self, flat, reduce_axes):
        scale = _nonzero_mean(ops.abs(flat), reduce_axes)
        return straight_through(ops.sign(flat) * scale, flat), scale

    @property
    def weight_bits(self):
        return 1

    def get_config(self):
        return {"channel_axes": self.channel_axes}

    def __repr__(self):
        return f"BinaryQuantizer(channel_axes={self.channel_axes})"


# The choices of `weight_bits`, and the quantizer each gives a weight whose
# output channels are on `channel_axes`.
_QUANTIZERS = {
    8: lambda channel_axes: WeightQuantizer(channel_axes, num_bits=8),
    4: lambda channel_axes: WeightQuantizer(channel_axes, num_bits=4),
    2: TernaryQuantizer,
    1: BinaryQuantizer,
}
WEIGHT_BITS = tuple(_QUANTIZERS)

# Layers whose int8 weights have one range per tensor only because the default
# converter loses per-channel ranges on them. The low-bit export converts in
# the QDQ mode that keeps them (`verify.convert_checked`), and a grid of 15, 3
# or 2 levels needs a range per channel.
_PER_CHANNEL_AT_LOW_BITS = (
    (L.Dense, {"kernel": (-1,)}),
    (L.Conv1D, {"kernel": (-1,)}),
    (L.DepthwiseConv1D, {"kernel": (-2, -1)}),
    (L.SeparableConv1D, {"depthwise_kernel": (-2, -1), "pointwise_kernel": (-1,)}),
)

# Layers TFLite cannot store with INT4 weights: TRANSPOSE_CONV takes int8 or
# float filters only (the converter fails with "operand #1 must be QI8").
NO_INT4_LAYERS = _layers.TRANSPOSED_LAYERS


def check_weight_bits(name, value):
    """Returns `value` if it is one of `WEIGHT_BITS`; raises ValueError otherwise.

    Example:

    >>> check_weight_bits("weight_bits", 3)
    Traceback (most recent call last):
    ...
    ValueError: weight_bits must be one of [1, 2, 4, 8]. Received: weight_bits=3
    """
    check_int(name, value)
    return check_one_of(name, int(value), WEIGHT_BITS)


def weight_quantizer(bits, channel_axes=None):
    """The weight quantizer of `weight_bits=bits`.

    Example:

    >>> weight_quantizer(2, (-1,))
    TernaryQuantizer(channel_axes=(-1,), threshold=0.7)
    """
    return _QUANTIZERS[check_weight_bits("bits", bits)](channel_axes)


class WeightBits:
    """Gives each quantized layer its `QuantizeConfig` for a `weight_bits` setting.

    `config_for` is called once per quantized layer; `check_names` then
    raises for names of the setting that matched no quantized weights.

    Args:
        weight_bits: 8, 4, 2 or 1 for every layer, or a dict
            `{layer_name: bits}` (a None key sets the others; default 8).
    """

    def __init__(self, weight_bits):
        self.settings = _rewrite.per_layer_settings("weight_bits", weight_bits, check_weight_bits)
        self._used = set()

    def config_for(self, layer, config, explicit):
        """`config` of `layer` with its weights on the grid of the layer's bits.

        Args:
            layer: The (unwrapped) layer to quantize.
            config: Its `QuantizeConfig`.
            explicit: True if the user gave that config (annotation or
                `get_quantize_config()`): it states its own quantizers.

        Returns:
            A `QuantizeConfig`.

        Raises:
            ValueError: for a layer named in the setting that has its own
                config, or that TFLite cannot store in fewer than 8 bits.
        """
        named = layer.name in self.settings
        bits = self.settings.get(layer.name, self.settings.get(None, 8))
        if named and config.weights:
            self._used.add(layer.name)
        if explicit:
            if named:
                raise ValueError(
                    f"weight_bits names layer '{layer.name}', which has its own QuantizeConfig: "
                    "its weight quantizers set its bits (e.g. WeightQuantizer(num_bits=4) or "
                    "TernaryQuantizer()). Leave it out of weight_bits."
                )
            return config
        if bits == 8 or not config.weights:
            return config
        if isinstance(layer, NO_INT4_LAYERS):
            why = (
                f"Layer '{layer.name}' ({type(layer).__name__}) cannot have {bits}-bit weights: "
                "TFLite's TRANSPOSE_CONV takes int8 or float filters only, not INT4."
            )
            if named:
                raise ValueError(f"{why} Give it 8 bits in weight_bits.")
            warnings.warn(f"{why} It keeps 8-bit weights.", stacklevel=4)
            return config
        axes = next(
            (table for types, table in _PER_CHANNEL_AT_LOW_BITS if isinstance(layer, types)), {}
        )
        return QuantizeConfig(
            weights={
                name: weight_quantizer(bits, axes.get(name, quantizer.channel_axes))
                for name, quantizer in config.weights.items()
            },
            quantize_output=config.quantize_output,
            output_quantizer=config.output_quantizer,
        )

    def check_names(self, model):
        """Raises ValueError for names that matched no quantized layer of `model`."""
        unused = sorted(name for name in self.settings if name not in (None, *self._used))
        if not unused:
            return
        present = {layer.name for layer in _rewrite.iter_layers(model)}
        missing = [name for name in unused if name not in present]
        if missing:
            raise ValueError(
                f"weight_bits names layers that model '{model.name}' does not have: {missing}"
            )
        raise ValueError(
            f"weight_bits names layers of model '{model.name}' without quantized weights: "
            f"{unused}. weight_bits applies to the layers whose weights are quantized "
            "(convolutions, Dense; with quantize_apply, the annotated ones)."
        )

"""How each layer is quantized: `QuantizeConfig` and the per-layer defaults table.

The table is matched with `isinstance`, so subclasses of a listed layer are
covered. It mirrors what the TFLite converter does with each op, so that the
fake-quant ops of the QAT model sit exactly on the tensors TFLite stores in
int8:

* layers with weights (Dense, convolutions): weights fake-quantized, output
  fake-quantized after the fused activation (ReLU / ReLU6);
* ops that compute new values (Add, Concatenate, activations, ...): output
  fake-quantized;
* ops that only move or select values (pooling, Reshape, Flatten, Dropout,
  padding, ...): nothing, they keep their input's int8 scale in TFLite.
"""

import keras

from tfcompress import _layers
from tfcompress.quantization.folding import FoldedBatchNormalization
from tfcompress.quantization.quantizers import ActivationQuantizer, WeightQuantizer

L = keras.layers


@keras.saving.register_keras_serializable(package="tfcompress")
class QuantizeConfig:
    """Which weights and which output of a layer to fake-quantize.

    A custom layer declares its quantization by passing a `QuantizeConfig` to
    `quantize_annotate_layer` (or by defining a `get_quantize_config()` method
    returning one).

    Args:
        weights: Dict mapping an attribute name of a layer weight (e.g.
            `"kernel"`) to a `WeightQuantizer`. A list of names means
            per-tensor symmetric int8 for each.
        quantize_output: Whether to fake-quantize the layer output. False with
            no weights means the layer passes its input's quantization through
            (pooling, reshapes).
        output_quantizer: `ActivationQuantizer` for the output; default: moving
            average range.

    Example:

    >>> config = QuantizeConfig(weights={"kernel": WeightQuantizer((-1,))})
    >>> sorted(config.weights)
    ['kernel']
    """

    def __init__(self, weights=None, quantize_output=True, output_quantizer=None):
        if weights is None:
            weights = {}
        if isinstance(weights, (list, tuple)):
            weights = {name: WeightQuantizer() for name in weights}
        if not isinstance(weights, dict) or not all(
            isinstance(k, str) and isinstance(v, WeightQuantizer) for k, v in weights.items()
        ):
            raise ValueError(
                "weights must be a dict {attribute name: WeightQuantizer} or a list of "
                f"attribute names. Received: weights={weights!r}"
            )
        if output_quantizer is not None and not isinstance(output_quantizer, ActivationQuantizer):
            raise ValueError(
                "output_quantizer must be an ActivationQuantizer or None. "
                f"Received: output_quantizer={output_quantizer!r}"
            )
        self.weights = dict(weights)
        self.quantize_output = bool(quantize_output)
        self.output_quantizer = output_quantizer or ActivationQuantizer()

    @property
    def is_passthrough(self):
        """True if the layer only moves values (no weights, no output quantizer)."""
        return not self.weights and not self.quantize_output

    def get_config(self):
        return {
            "weights": {
                k: keras.saving.serialize_keras_object(v) for k, v in self.weights.items()
            },
            "quantize_output": self.quantize_output,
            "output_quantizer": keras.saving.serialize_keras_object(self.output_quantizer),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["weights"] = {
            k: keras.saving.deserialize_keras_object(v) for k, v in config["weights"].items()
        }
        config["output_quantizer"] = keras.saving.deserialize_keras_object(
            config["output_quantizer"]
        )
        return cls(**config)

    def __repr__(self):
        return (
            f"QuantizeConfig(weights={self.weights}, quantize_output={self.quantize_output}, "
            f"output_quantizer={self.output_quantizer})"
        )


# Output ranges TFLite fixes for int8 (scale 1/256, zero point -128; 1/128, 0;
# 16/256, 127 for log-softmax).
_FIXED_RANGES = {
    "softmax": (0.0, 255.0 / 256.0),
    "sigmoid": (0.0, 255.0 / 256.0),
    "hard_sigmoid": (0.0, 255.0 / 256.0),
    "tanh": (-1.0, 127.0 / 128.0),
    "log_softmax": (-255.0 / 16.0, 0.0),
}

# FoldedBatchNormalization (what a folded BatchNorm leaves) passes values through.
_PASSTHROUGH = _layers.PASSTHROUGH_LAYERS + (FoldedBatchNormalization,)

SUPPORTED_LAYER_NAMES = tuple(
    cls.__name__
    for cls in (L.Dense,) + _layers.CONV_LAYERS + _layers.DEPTHWISE_LAYERS
    + _layers.TRANSPOSED_LAYERS + _layers.SEPARABLE_LAYERS
    + (L.BatchNormalization, L.LayerNormalization, L.EinsumDense, L.MultiHeadAttention, L.Embedding)
    + _layers.COMPUTING_LAYERS + _layers.PASSTHROUGH_LAYERS
    if cls is not L.InputLayer
)


def fixed_range_for(name):
    """The TFLite-fixed output range of an activation, or None."""
    return _FIXED_RANGES.get(name)


def _known_by_name(layer, class_name, package):
    # Layers Keras does not export (keras.applications' LayerScale) and those of
    # keras_hub (not a dependency) are known by class name and package.
    cls = type(layer)
    return cls.__name__ == class_name and cls.__module__.startswith(package + ".")


def output_config(activation=None):
    """The config of a weightless op computing new values: its output quantized.

    Args:
        activation: Name of the activation the op computes, if any (softmax,
            sigmoid and tanh get TFLite's fixed output range).
    """
    fixed = fixed_range_for(activation) if activation else None
    return QuantizeConfig(output_quantizer=ActivationQuantizer(fixed_range=fixed) if fixed else None)


def default_operation_config(op):
    """The `QuantizeConfig` TFLite implies for a Keras operation that is not a layer.

    Args:
        op: A `keras.Operation` of a functional graph (`x + 1`, `ops.reshape`...).

    Returns:
        A pass-through config for ops that move values, an output config for
        ops TFLite computes in int8, None for the others (they stay float).

    Example:

    >>> x = keras.Input((4,))
    >>> default_operation_config((x + 1.0)._keras_history.operation).quantize_output
    True
    """
    name = _layers.operation_name(op)
    if name in _layers.PASSTHROUGH_OPERATIONS:
        return QuantizeConfig(quantize_output=False)
    if name in _layers.COMPUTING_OPERATIONS:
        return output_config(_layers.ACTIVATION_OPERATIONS.get(name))
    return None


def default_quantize_config(layer):
    """The `QuantizeConfig` TFLite implies for `layer`, or None if unsupported.

    Args:
        layer: A Keras layer.

    Returns:
        A `QuantizeConfig`, or None for a layer the table does not know.
    """
    custom = getattr(layer, "get_quantize_config", None)
    if callable(custom):
        return custom()
    if isinstance(layer, _PASSTHROUGH):
        return QuantizeConfig(quantize_output=False)
    if isinstance(layer, L.Dense):
        # TFLite's QAT path quantizes FULLY_CONNECTED weights per tensor: the
        # converter transposes the kernel, which a per-channel range cannot follow.
        return QuantizeConfig(weights={"kernel": WeightQuantizer()})
    if isinstance(layer, (L.Conv1D, L.DepthwiseConv1D, L.SeparableConv1D)) and not isinstance(
        layer, _layers.TRANSPOSED_LAYERS
    ):
        # TFLite runs 1-D convolutions as 2-D ones on an expanded kernel, and
        # a per-channel range does not follow the expanded axis: per tensor.
        names = ("depthwise_kernel", "pointwise_kernel") if isinstance(
            layer, L.SeparableConv1D
        ) else ("kernel",)
        return QuantizeConfig(weights={name: WeightQuantizer() for name in names})
    if isinstance(layer, L.SeparableConv2D):
        return QuantizeConfig(
            weights={
                "depthwise_kernel": WeightQuantizer((-2, -1)),
                "pointwise_kernel": WeightQuantizer((-1,)),
            }
        )
    if isinstance(layer, _layers.DEPTHWISE_LAYERS):
        return QuantizeConfig(weights={"kernel": WeightQuantizer((-2, -1))})
    if isinstance(layer, _layers.TRANSPOSED_LAYERS):
        # Output channels are axis -2 of a transposed kernel, which TFLite's
        # per-channel FakeQuant (last axis) cannot express: per tensor.
        return QuantizeConfig(weights={"kernel": WeightQuantizer()})
    if isinstance(layer, _layers.CONV_LAYERS):
        return QuantizeConfig(weights={"kernel": WeightQuantizer((-1,))})
    if isinstance(layer, L.EinsumDense):
        return QuantizeConfig(weights={"kernel": WeightQuantizer()})
    if isinstance(layer, L.MultiHeadAttention):
        from tfcompress.quantization.kernels import supports_attention

        if not supports_attention(layer):
            return None
        names = ("query_dense", "key_dense", "value_dense", "output_dense")
        return QuantizeConfig(weights={f"{name}.kernel": WeightQuantizer() for name in names})
    if _known_by_name(layer, "LayerScale", "keras"):
        # ConvNeXt's `x * gamma`: an int8 MUL by a per-channel constant.
        return QuantizeConfig(weights={"gamma": WeightQuantizer()})
    if isinstance(layer, L.Embedding) or _known_by_name(layer, "PositionEmbedding", "keras_hub"):
        # GATHER keeps the table's scale: one range, on the output, serves both.
        return QuantizeConfig()
    if isinstance(layer, (L.BatchNormalization, L.LayerNormalization)):
        # Run as int8 MUL / ADD ... ops (quantization.kernels) when not folded.
        return QuantizeConfig()
    if isinstance(layer, _layers.COMPUTING_LAYERS):
        if isinstance(layer, L.Softmax):
            return output_config("softmax")
        if isinstance(layer, L.Activation):
            return output_config(_layers.activation_name(layer.activation))
        return output_config()
    return None

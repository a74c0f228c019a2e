"""Folding BatchNormalization into the preceding conv / dense, as TFLite does.

TFLite has no batch-norm op: the converter multiplies the kernel by
`gamma / sqrt(var + eps)` per output channel and shifts the bias. Folding the
same way before QAT means the weights that get fake-quantized in training
are the weights stored in the int8 file.
"""

import keras
import numpy as np

from tfcompress import _layers

_DEPTHWISE = _layers.DEPTHWISE_LAYERS
_TRANSPOSED = _layers.TRANSPOSED_LAYERS


def can_fold(layer, bn, rank):
    """True if `bn` (the only consumer of `layer`'s output) folds into `layer`.

    Args:
        layer: The producing layer.
        bn: The BatchNormalization layer.
        rank: Rank of the tensor between them (batch axis included).
    """
    if not isinstance(layer, _layers.FOLDABLE_LAYERS):
        return False
    if not isinstance(bn, keras.layers.BatchNormalization) or not _layers.has_linear_activation(layer):
        return False
    axis = bn.axis
    if isinstance(axis, (list, tuple)):
        if len(axis) != 1:
            return False
        axis = axis[0]
    return axis % rank == rank - 1


def fold_batchnorm(layer, bn):
    """Returns a copy of `layer` computing `bn(layer(x))` (inference statistics).

    Neither `layer` nor `bn` is changed.

    Args:
        layer: A built Dense / convolution layer with a linear activation.
        bn: The built BatchNormalization applied to its output (last axis).

    Returns:
        A new built layer of the same type with a bias, named like `layer`.
    """
    kernel = keras.ops.convert_to_numpy(layer.kernel)
    bias = (
        keras.ops.convert_to_numpy(layer.bias)
        if layer.use_bias
        else np.zeros(_out_channels(layer, kernel), kernel.dtype)
    )
    mean = keras.ops.convert_to_numpy(bn.moving_mean)
    var = keras.ops.convert_to_numpy(bn.moving_variance)
    gamma = keras.ops.convert_to_numpy(bn.gamma) if bn.scale else np.ones_like(mean)
    beta = keras.ops.convert_to_numpy(bn.beta) if bn.center else np.zeros_like(mean)
    scale = gamma / np.sqrt(var + bn.epsilon)
    if isinstance(layer, _DEPTHWISE):
        # Kernel (..., in, multiplier): output channel c = in * multiplier.
        kernel = kernel * scale.reshape(kernel.shape[-2:])
    elif isinstance(layer, _TRANSPOSED):
        kernel = kernel * scale[:, None]  # (..., out, in)
    else:
        kernel = kernel * scale
    bias = (bias - mean) * scale + beta

    folded = _layers.clone_layer(layer, use_bias=True)
    folded.kernel.assign(kernel.astype(kernel.dtype))
    folded.bias.assign(bias.astype(kernel.dtype))
    return folded


def _out_channels(layer, kernel):
    if isinstance(layer, _DEPTHWISE):
        return kernel.shape[-2] * kernel.shape[-1]
    if isinstance(layer, _TRANSPOSED):
        return kernel.shape[-2]
    return kernel.shape[-1]


@keras.saving.register_keras_serializable(package="tfcompress")
class FoldedBatchNormalization(keras.layers.Layer):
    """Identity left where a BatchNormalization was folded into the previous layer.

    Keeps the model graph (and the call signature of BatchNormalization,
    which graph rebuilding passes `mask` / `training` to) unchanged.
    """

    def call(self, inputs, training=None, mask=None):
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape

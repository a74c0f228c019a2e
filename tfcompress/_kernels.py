"""Which weights of a layer compression may touch: an explicit isinstance table.

Pruning and clustering share it. Subclasses of a listed layer are covered (a
subclass of Dense is a Dense). A custom layer opts in with a method
(`get_prunable_weights()` for pruning, `get_clusterable_weights()` for
clustering) returning the variables to compress; that method wins over the table.
"""

import keras

L = keras.layers

_KERNEL_LAYERS = (
    L.Dense,
    L.EinsumDense,
    L.Conv1D,
    L.Conv2D,
    L.Conv3D,
    L.Conv1DTranspose,
    L.Conv2DTranspose,
    L.Conv3DTranspose,
    L.DepthwiseConv1D,
    L.DepthwiseConv2D,
)
_RNN_LAYERS = (L.SimpleRNN, L.LSTM, L.GRU)

# (layer types, function returning the weights to compress). Biases,
# normalization layers and everything else are left alone on purpose: they
# are few bytes and very sensitive.
_TABLE = (
    (_KERNEL_LAYERS, lambda layer: [layer.kernel]),
    ((L.SeparableConv1D, L.SeparableConv2D), lambda l: [l.depthwise_kernel, l.pointwise_kernel]),
    ((L.Embedding,), lambda layer: [layer.embeddings]),
    (_RNN_LAYERS, lambda layer: [layer.cell.kernel, layer.cell.recurrent_kernel]),
    (
        (L.MultiHeadAttention,),
        lambda l: [d.kernel for d in (l.query_dense, l.key_dense, l.value_dense, l.output_dense)],
    ),
)

SUPPORTED_LAYER_NAMES = tuple(cls.__name__ for types, _ in _TABLE for cls in types)


def is_supported(layer, opt_in_method):
    """True if `layer` is in the table or defines `opt_in_method`."""
    return callable(getattr(layer, opt_in_method, None)) or _lookup(layer) is not None


def compressible_weights(layer, opt_in_method):
    """The variables of a built `layer` to compress, or None if it is not supported.

    Args:
        layer: A built Keras layer.
        opt_in_method: Name of the duck-typed opt-in method of custom layers,
            e.g. "get_prunable_weights".

    Returns:
        A list of `keras.Variable`, or None for a layer that is not supported.
    """
    method = getattr(layer, opt_in_method, None)
    if callable(method):
        return list(method())
    getter = _lookup(layer)
    return None if getter is None else getter(layer)


def check_wrappable(layer, opt_in_method, technique, wrapper_name):
    """Raises ValueError unless `layer` is a layer that `technique` can compress.

    Args:
        layer: What the wrapper was given.
        opt_in_method: Name of the custom-layer opt-in method.
        technique: "pruning", "clustering", ... (for the message).
        wrapper_name: Name of the wrapper class (for the message).
    """
    if not isinstance(layer, keras.layers.Layer):
        raise ValueError(
            f"{wrapper_name} wraps a keras.layers.Layer. Received: "
            f"layer={layer!r} of type {type(layer).__name__}"
        )
    if not is_supported(layer, opt_in_method):
        raise ValueError(unsupported_message(layer, opt_in_method, technique))


def unsupported_message(layer, opt_in_method, technique):
    return (
        f"Layer '{layer.name}' of type {type(layer).__name__} is not supported by "
        f"{technique}. Supported types: {', '.join(SUPPORTED_LAYER_NAMES)}; a custom "
        f"layer opts in by defining `{opt_in_method}()` returning the variables "
        "to compress."
    )


def _lookup(layer):
    for types, getter in _TABLE:
        if isinstance(layer, types):
            return getter
    return None

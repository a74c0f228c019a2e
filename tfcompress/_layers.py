"""The layer-kind tables every technique shares, matched with `isinstance`.

A leaf module (it imports only Keras): which weights of a layer compression may
touch, which layers only move values, which activations TFLite fuses, and the
one way to copy a built layer with changed settings. Subclasses of a listed
layer are covered (a subclass of Dense is a Dense).
"""

import keras

L = keras.layers

CONV_LAYERS = (L.Conv1D, L.Conv2D, L.Conv3D)
DEPTHWISE_LAYERS = (L.DepthwiseConv1D, L.DepthwiseConv2D)
TRANSPOSED_LAYERS = (L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose)
SEPARABLE_LAYERS = (L.SeparableConv1D, L.SeparableConv2D)
RNN_LAYERS = (L.SimpleRNN, L.LSTM, L.GRU)

# Layers whose output is `activation(x @ kernel + bias)` with a per-output-channel
# kernel axis: what BatchNormalization folds into.
FOLDABLE_LAYERS = (L.Dense,) + CONV_LAYERS + DEPTHWISE_LAYERS + TRANSPOSED_LAYERS

# Layers that own weights but are never compressed on purpose: they are few
# bytes and very sensitive (no warning for them).
NORMALIZATION_LAYERS = (
    L.BatchNormalization,
    L.LayerNormalization,
    L.GroupNormalization,
    L.UnitNormalization,
    L.Normalization,
)

# Layers that only move or select values: TFLite keeps their input's int8
# scale, and channel pruning sees through them.
PASSTHROUGH_LAYERS = (
    L.MaxPooling1D,
    L.MaxPooling2D,
    L.MaxPooling3D,
    L.AveragePooling1D,
    L.AveragePooling2D,
    L.AveragePooling3D,
    L.GlobalMaxPooling1D,
    L.GlobalMaxPooling2D,
    L.GlobalMaxPooling3D,
    L.GlobalAveragePooling1D,
    L.GlobalAveragePooling2D,
    L.GlobalAveragePooling3D,
    L.Reshape,
    L.Flatten,
    L.Permute,
    L.RepeatVector,
    L.Dropout,
    L.SpatialDropout1D,
    L.SpatialDropout2D,
    L.SpatialDropout3D,
    L.GaussianNoise,
    L.GaussianDropout,
    L.AlphaDropout,
    L.ZeroPadding1D,
    L.ZeroPadding2D,
    L.ZeroPadding3D,
    L.Cropping1D,
    L.Cropping2D,
    L.Cropping3D,
    L.UpSampling1D,
    L.UpSampling2D,
    L.Identity,
    L.InputLayer,
    L.ActivityRegularization,
)

# Weightless layers that compute new values: TFLite gives their output its own
# int8 range.
COMPUTING_LAYERS = (
    L.Add,
    L.Subtract,
    L.Multiply,
    L.Average,
    L.Maximum,
    L.Minimum,
    L.Concatenate,
    L.ReLU,
    L.LeakyReLU,
    L.ELU,
    L.Softmax,
    L.Activation,
    L.Rescaling,
    L.Normalization,  # constant mean / variance: SUB + MUL in TFLite
)

# Weightless layers that combine same-shaped inputs element by element.
MERGE_LAYERS = (L.Add, L.Subtract, L.Multiply, L.Average, L.Maximum, L.Minimum)

# Layers applying one function to each value: channel c of the output depends
# on channel c of the input only (an `Activation` only with an element-wise
# function: see `MIXING_ACTIVATIONS`).
ELEMENTWISE_LAYERS = (L.ReLU, L.LeakyReLU, L.ELU, L.Activation)

# Activations that mix the values of the last axis (they are not element-wise).
MIXING_ACTIVATIONS = ("softmax", "log_softmax", "glu", "sparsemax")

# Layers whose output channels (filters, units) channel pruning removes.
CHANNEL_PRODUCER_LAYERS = (L.Dense,) + CONV_LAYERS + SEPARABLE_LAYERS

# Channel pruning: the variables of each layer kind whose axes hold channels,
# as (role, axis): "in" (input channels), "in_repeated" (input channels times
# the depth multiplier), "out" (output channels).
CHANNEL_AXES = (
    (SEPARABLE_LAYERS, {
        "depthwise_kernel": (("in", -2),),
        "pointwise_kernel": (("in_repeated", -2), ("out", -1)),
        "bias": (("out", 0),),
    }),
    (DEPTHWISE_LAYERS, {"kernel": (("in", -2),), "bias": (("in_repeated", 0),)}),
    (CHANNEL_PRODUCER_LAYERS, {"kernel": (("in", -2), ("out", -1)), "bias": (("out", 0),)}),
    ((L.BatchNormalization,), {
        name: (("in", 0),) for name in ("gamma", "beta", "moving_mean", "moving_variance")
    }),
)
CHANNEL_MEMBER_LAYERS = tuple(cls for types, _ in CHANNEL_AXES for cls in types)

# Activations TFLite fuses into the preceding conv / fully-connected op.
FUSABLE_ACTIVATIONS = ("linear", "relu", "relu6")

# Keras operations that are not layers (the `keras.ops` calls of a functional
# graph: `x + 3.0`, `ops.reshape`, `x[:, 0]`), by class name.
# Those that only move or select values: TFLite keeps their input's int8 scale.
PASSTHROUGH_OPERATIONS = frozenset({
    "AveragePool", "BroadcastTo", "Cast", "ExpandDims", "Flip", "GetItem", "Max",
    "MaxPool", "Min", "Moveaxis", "Pad", "Repeat", "Reshape", "Resize", "Roll",
    "Slice", "Split", "Squeeze", "Swapaxes", "Take", "Tile", "Transpose",
})
# Those that compute new values TFLite runs in int8: their output gets its own
# int8 range (a fixed one for the activations in `ACTIVATION_OPERATIONS`).
COMPUTING_OPERATIONS = frozenset({
    "Absolute", "Add", "Clip", "Concatenate", "Dot", "Einsum", "Elu", "Exp", "Gelu",
    "HardSigmoid", "HardSilu", "LeakyRelu", "Log", "LogSoftmax", "Matmul", "Maximum",
    "Mean", "Minimum", "Multiply", "Negative", "Relu", "Relu6", "Rsqrt", "Sigmoid",
    "Silu", "Softmax", "Sqrt", "Square", "Stack", "Subtract", "Sum", "Tanh",
    "TrueDivide", "Where",
})
# Operations that are an activation function, by the activation's name.
ACTIVATION_OPERATIONS = {
    "Elu": "elu", "Gelu": "gelu", "HardSigmoid": "hard_sigmoid", "HardSilu": "hard_silu",
    "LeakyRelu": "leaky_relu", "LogSoftmax": "log_softmax", "Relu": "relu",
    "Relu6": "relu6", "Sigmoid": "sigmoid", "Silu": "silu", "Softmax": "softmax",
    "Tanh": "tanh",
}
# Operations and layers into which TFLite fuses a following ReLU / ReLU6 (a
# BatchNormalization that no conv absorbs ends with an ADD).
ACTIVATION_FUSING_OPERATIONS = frozenset({"Add", "Subtract", "Multiply"})
ACTIVATION_FUSING_LAYERS = (L.Add, L.Subtract, L.Multiply, L.BatchNormalization)

# (layer types, function returning the weights pruning and clustering compress).
# Biases, normalization layers and everything else are left alone.
_COMPRESSIBLE = (
    ((L.Dense, L.EinsumDense) + CONV_LAYERS + TRANSPOSED_LAYERS + DEPTHWISE_LAYERS,
     lambda layer: [layer.kernel]),
    (SEPARABLE_LAYERS, lambda layer: [layer.depthwise_kernel, layer.pointwise_kernel]),
    ((L.Embedding,), lambda layer: [layer.embeddings]),
    (RNN_LAYERS, lambda layer: [layer.cell.kernel, layer.cell.recurrent_kernel]),
    (
        (L.MultiHeadAttention,),
        lambda l: [d.kernel for d in (l.query_dense, l.key_dense, l.value_dense, l.output_dense)],
    ),
)

COMPRESSIBLE_LAYER_NAMES = tuple(cls.__name__ for types, _ in _COMPRESSIBLE for cls in types)


def compressible_weights(layer, opt_in_method):
    """The variables of a built `layer` to compress, or None if it is not supported.

    Args:
        layer: A built Keras layer.
        opt_in_method: Name of the duck-typed opt-in method of custom layers,
            e.g. "get_prunable_weights"; it wins over the table.

    Returns:
        A list of `keras.Variable`, or None for a layer that is not supported.

    Example:

    >>> dense = keras.layers.Dense(2)
    >>> dense.build((None, 3))
    >>> [v.name for v in compressible_weights(dense, "get_prunable_weights")]
    ['kernel']
    >>> compressible_weights(keras.layers.Flatten(), "get_prunable_weights") is None
    True
    """
    method = getattr(layer, opt_in_method, None)
    if callable(method):
        return list(method())
    for types, getter in _COMPRESSIBLE:
        if isinstance(layer, types):
            return getter(layer)
    return None


def is_compressible(layer, opt_in_method):
    """True if `layer` is in the table or defines `opt_in_method`."""
    if callable(getattr(layer, opt_in_method, None)):
        return True
    return any(isinstance(layer, types) for types, _ in _COMPRESSIBLE)


def owns_weights(layer):
    """True for a layer with weights of its own (not a container of other layers)."""
    return bool(layer.weights) and not getattr(layer, "_layers", None)


def activation_name(fn):
    """The registered name of an activation function (None if not a Keras one).

    Example:

    >>> activation_name(keras.activations.relu), activation_name(None)
    ('relu', 'linear')
    """
    if fn is None:
        return "linear"
    try:
        name = keras.activations.serialize(fn)
    except Exception:  # a custom callable
        return None
    if isinstance(name, dict) and name.get("class_name") == "function":
        name = name.get("config")  # a registered function: "package>name"
    return name if isinstance(name, str) else None


def activation_fn(name):
    """The activation function `activation_name` named (a Keras or a registered one)."""
    registered = keras.saving.get_registered_object(name) if ">" in name else None
    return registered or keras.activations.get(name)


def has_linear_activation(layer):
    """True if `layer` has no activation of its own (or a linear one)."""
    return activation_name(getattr(layer, "activation", None)) == "linear"


def operation_name(op):
    """The class name of a Keras operation that is not a layer, else None."""
    return None if isinstance(op, keras.layers.Layer) else type(op).__name__


def is_fusable_activation_layer(layer):
    """True for a ReLU / ReLU6 layer (or `ops.relu` / `ops.relu6`) TFLite fuses into the op before."""
    if operation_name(layer) is not None:
        return ACTIVATION_OPERATIONS.get(operation_name(layer)) in ("relu", "relu6")
    if isinstance(layer, L.ReLU):
        plain = float(layer.negative_slope) == 0.0 and float(layer.threshold) == 0.0
        return plain and layer.max_value in (None, 6.0, 6)
    if isinstance(layer, L.Activation):
        return activation_name(layer.activation) in ("relu", "relu6")
    return False


def clone_layer(layer, **config_changes):
    """A new built layer like `layer`, with its weights, and some settings changed.

    The original is left untouched: wrappers that need a variant of the layer
    they wrap (BatchNorm folded in, activation split off) work on the copy.

    Args:
        layer: A built layer.
        **config_changes: Entries of `layer.get_config()` to replace.

    Returns:
        The new layer, built for the same input shape. When the changes alter
        the weights' structure (e.g. `use_bias=True` on a layer without bias),
        the caller assigns the weights itself.

    Example:

    >>> dense = keras.layers.Dense(2, activation="softmax")
    >>> dense.build((None, 3))
    >>> copy = clone_layer(dense, activation="linear")
    >>> activation_name(copy.activation), activation_name(dense.activation)
    ('linear', 'softmax')
    """
    config = {**layer.get_config(), **config_changes}
    copy = type(layer).from_config(config)
    build_config = layer.get_build_config()
    if build_config:
        copy.build_from_config(build_config)
    if [tuple(w.shape) for w in copy.weights] == [tuple(w.shape) for w in layer.weights]:
        copy.set_weights(layer.get_weights())
    return copy

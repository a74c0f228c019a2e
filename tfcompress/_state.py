"""Non-trainable state variables shared by every compression wrapper.

Masks, step counters, quantizer ranges and cluster assignments are updated inside
`call` (often under `keras.ops.cond`). Under `tf.distribute`, an update of a
mirrored variable inside control flow in replica context needs a cross-replica
`merge_call`, which TensorFlow does not support. Every replica computes the same
update from the same (mirrored) weights, so each keeps its own copy
(`synchronization="on_read"`) and reading takes the first replica's value.
"""

import keras
import numpy as np


def state_variable(layer, name, shape, initializer, dtype="float32"):
    """Creates a non-trainable variable tracked (and saved) by `layer`.

    Args:
        layer: The layer that owns the variable. The variable is set as the
            attribute `name` on it, so Keras tracks and saves it.
        name: Attribute and variable name.
        shape: Shape of the variable.
        initializer: A Keras initializer, its name, or a constant.
        dtype: Variable dtype.

    Returns:
        The `keras.Variable`.
    """
    if not callable(initializer) and not isinstance(initializer, str):
        initializer = keras.initializers.Constant(initializer)
    variable = keras.Variable(
        initializer=initializer,
        shape=shape,
        dtype=dtype,
        trainable=False,
        aggregation="only_first_replica",
        synchronization="on_read",
        name=name,
    )
    setattr(layer, name, variable)
    return variable


def zero_mask(layer, name, values):
    """A fixed 0/1 state variable of `layer`: 1 where `values` is non-zero.

    Keeps pruned zeros at zero through later techniques (clustering, QAT).
    """
    values = np.asarray(values)
    mask = state_variable(layer, name, values.shape, "ones")
    mask.assign((values != 0).astype("float32"))
    return mask


def call_with_weights(layer, substitutions, *args, **kwargs):
    """Calls `layer` computing with replacement values for some of its variables.

    The layer reads each substituted variable as the given tensor (a masked,
    fake-quantized or centroid-gathered kernel), so gradients flow through the
    tensor to whatever it was computed from. Any other state the layer updates
    during the call (a dropout seed, running statistics) is written back
    afterwards, since the scope only records updates.

    Args:
        layer: The layer to call.
        substitutions: List of `(variable, tensor)` pairs.
        *args: Positional call arguments.
        **kwargs: Keyword call arguments.

    Returns:
        The layer's outputs.
    """
    with keras.StatelessScope(state_mapping=substitutions) as scope:
        outputs = layer(*args, **kwargs)
    substituted = {id(variable) for variable, _ in substitutions}
    for variable in layer.variables:
        if id(variable) in substituted:
            continue
        new_value = scope.get_current_value(variable)
        if new_value is not None:
            variable.assign(new_value)
    return outputs

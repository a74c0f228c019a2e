"""`prune_low_magnitude` and `strip_pruning`: pruning a whole model or some layers."""

import warnings

import keras

from tfcompress import _kernels, _rewrite
from tfcompress.pruning.schedules import ConstantSparsity, PruningSchedule
from tfcompress.pruning.wrapper import OPT_IN_METHOD, PruneLowMagnitude

# Layers that own weights but are never pruned on purpose (no warning for them).
_LEFT_ALONE = (
    keras.layers.BatchNormalization,
    keras.layers.LayerNormalization,
    keras.layers.GroupNormalization,
    keras.layers.UnitNormalization,
    keras.layers.Normalization,
)


def prune_low_magnitude(
    to_prune,
    pruning_schedule=None,
    block_size=(1, 1),
    block_pooling_type="AVG",
    sparsity_m_by_n=None,
    **kwargs,
):
    """Makes a model (or layers) prune its lowest-magnitude weights during `fit`.

    Every layer of a supported type (Dense, EinsumDense, Conv1D/2D/3D and their
    transposes, DepthwiseConv1D/2D, SeparableConv1D/2D, Embedding,
    SimpleRNN/LSTM/GRU, MultiHeadAttention), or with a `get_prunable_weights()`
    method, is wrapped in `PruneLowMagnitude`; biases and normalization layers
    are left alone. Compile and `fit` the result as usual: the wrappers count
    training steps themselves, so no callback is required (`UpdatePruningStep`
    is accepted for tfmot code). Finish with `strip_pruning`.

    Args:
        to_prune: A built `keras.Model` (Sequential, functional, nested or
            subclassed), a layer, or a list of layers. Sequential and
            functional models are copied (the input model is not modified);
            a subclassed model is rewritten in place and returned.
        pruning_schedule: A `PruningSchedule` for every layer, or a dict
            `{layer_name: PruningSchedule}` to prune only the named layers, each
            on its own schedule (sparsity allocated per layer). Defaults to
            `ConstantSparsity(0.5, begin_step=0)`.
        block_size: `(rows, cols)`: zero whole blocks of each kernel seen as a
            2-D matrix.
        block_pooling_type: "AVG" or "MAX": how a block's magnitude is measured.
        sparsity_m_by_n: None or `(m, n)`: `m` zeros in every `n` consecutive
            input weights of each output (e.g. `(2, 4)`); Dense and Conv only.
        **kwargs: Reserved; any other keyword raises.

    Returns:
        The pruned model (compile it before `fit`), layer, or list of layers.

    Raises:
        TypeError: if `to_prune` is not a model, layer or list of layers.
        ValueError: for bad arguments, a layer that cannot be pruned (when
            given directly), a dict naming layers the model does not have, or a
            layer whose shape cannot take `sparsity_m_by_n`.

    Example:

    ```python
    schedule = tfcompress.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=1000)
    pruned = tfcompress.prune_low_magnitude(model, pruning_schedule=schedule)
    pruned.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    pruned.fit(x, y, epochs=5)
    final = tfcompress.strip_pruning(pruned)
    ```
    """
    if kwargs:
        raise TypeError(f"Unexpected keyword argument(s): {sorted(kwargs)}")
    params = {
        "block_size": block_size,
        "block_pooling_type": block_pooling_type,
        "sparsity_m_by_n": sparsity_m_by_n,
    }
    schedules = _schedules_by_layer(pruning_schedule)

    if isinstance(to_prune, keras.Model):
        return _prune_model(to_prune, schedules, params)
    if isinstance(to_prune, keras.layers.Layer):
        return _wrap(to_prune, schedules.get(to_prune.name, schedules.get(None)), params)
    if isinstance(to_prune, (list, tuple)) and all(
        isinstance(layer, keras.layers.Layer) for layer in to_prune
    ):
        return [_wrap(layer, schedules.get(layer.name, schedules.get(None)), params) for layer in to_prune]
    raise TypeError(
        "prune_low_magnitude takes a keras.Model, a keras layer or a list of "
        f"layers. Received: to_prune={to_prune!r} of type {type(to_prune).__name__}"
    )


def strip_pruning(model):
    """Removes the pruning wrappers, leaving the zeros in the plain layers.

    Args:
        model: A model, layer or list of layers from `prune_low_magnitude`.

    Returns:
        The same kind of object with no tfcompress classes left: Sequential and
        functional models are copied, a subclassed model is unwrapped in place,
        a model without pruning wrappers is returned as it is. Ready for
        `save` or `tfcompress.lite.convert`.

    Example:

    ```python
    final = tfcompress.strip_pruning(pruned)
    final.save("model.keras")
    ```
    """
    return _rewrite.strip_wrappers(model, PruneLowMagnitude)


def _schedules_by_layer(pruning_schedule):
    """Normalizes the schedule argument to {layer_name or None (all): schedule}."""
    if pruning_schedule is None:
        return {None: ConstantSparsity(0.5, begin_step=0)}
    if isinstance(pruning_schedule, PruningSchedule):
        return {None: pruning_schedule}
    if isinstance(pruning_schedule, dict) and pruning_schedule:
        for name, schedule in pruning_schedule.items():
            if not isinstance(schedule, PruningSchedule):
                raise ValueError(
                    "pruning_schedule dict values must be PruningSchedule objects. "
                    f"Received: pruning_schedule[{name!r}]={schedule!r}"
                )
        return dict(pruning_schedule)
    raise ValueError(
        "pruning_schedule must be a PruningSchedule or a non-empty dict "
        f"{{layer_name: PruningSchedule}}. Received: pruning_schedule={pruning_schedule!r}"
    )


def _wrap(layer, schedule, params):
    if isinstance(layer, PruneLowMagnitude):
        return layer
    return PruneLowMagnitude(layer, pruning_schedule=schedule, **params)


def _prune_model(model, schedules, params):
    default = schedules.get(None)
    wrapped_names = set()

    def wrap_if_prunable(layer):
        if isinstance(layer, PruneLowMagnitude):
            return None
        schedule = schedules.get(layer.name, default)
        if schedule is None:
            return None
        if not _kernels.is_supported(layer, OPT_IN_METHOD):
            if layer.name in schedules:
                raise ValueError(_kernels.unsupported_message(layer, OPT_IN_METHOD, "pruning"))
            if _owns_weights(layer) and not isinstance(layer, _LEFT_ALONE):
                warnings.warn(
                    f"Layer '{layer.name}' ({type(layer).__name__}) has weights but is "
                    "not prunable; it is left dense. Define get_prunable_weights() "
                    "on it to prune it.",
                    stacklevel=4,
                )
            return None
        wrapped_names.add(layer.name)
        return PruneLowMagnitude(layer, pruning_schedule=schedule, **params)

    pruned = _rewrite.map_layers(model, wrap_if_prunable)
    missing = sorted(name for name in schedules if name is not None and name not in wrapped_names)
    if missing:
        raise ValueError(
            f"pruning_schedule names layers that model '{model.name}' does not have "
            f"(or that cannot be pruned): {missing}"
        )
    if not wrapped_names:
        warnings.warn(f"Model '{model.name}' has no prunable layer; nothing is pruned.", stacklevel=3)
    return pruned


def _owns_weights(layer):
    # A container (nested model, custom block) is walked into, not warned about.
    return bool(layer.weights) and not getattr(layer, "_layers", None)

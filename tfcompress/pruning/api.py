"""`prune_low_magnitude` and `strip_pruning`: pruning a whole model or some layers."""

from tfcompress import _rewrite
from tfcompress.pruning.schedules import ConstantSparsity, PruningSchedule
from tfcompress.pruning.wrapper import PruneLowMagnitude, check_pruning_arguments


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
    are left alone, and so are DepthwiseConv1D/2D unless `pruning_schedule`
    names them or they are given directly (their few weights per channel are
    very sensitive; tfmot never prunes them). Compile and `fit` the result as
    usual: the wrappers count training steps themselves, so no callback is
    required (`UpdatePruningStep` is accepted for tfmot code). Finish with
    `strip_pruning`.

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
    if pruning_schedule is None:
        pruning_schedule = ConstantSparsity(0.5, begin_step=0)
    schedules = _rewrite.per_layer_settings("pruning_schedule", pruning_schedule, _check_schedule)
    # Checked here too, so a model with nothing to prune still rejects them.
    check_pruning_arguments(block_size, block_pooling_type, sparsity_m_by_n)

    def make_wrapper(layer, schedule):
        return PruneLowMagnitude(
            layer,
            pruning_schedule=schedule,
            block_size=block_size,
            block_pooling_type=block_pooling_type,
            sparsity_m_by_n=sparsity_m_by_n,
        )

    return _rewrite.apply_per_layer(
        to_prune, schedules, PruneLowMagnitude, make_wrapper, "pruning_schedule", "to_prune"
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


def _check_schedule(name, schedule):
    if not isinstance(schedule, PruningSchedule):
        raise ValueError(
            f"{name} must be a PruningSchedule (e.g. ConstantSparsity, PolynomialDecay) "
            f"or a non-empty dict {{layer_name: PruningSchedule}}. Received: {name}={schedule!r}"
        )
    return schedule

"""Pruning callbacks: bookkeeping and logging only (state lives in the wrappers)."""

import keras

from tfcompress import _rewrite, _validate
from tfcompress.pruning.wrapper import PruneLowMagnitude


def pruning_wrappers(model):
    """All `PruneLowMagnitude` layers in `model`, nested models included."""
    return [layer for layer in _rewrite.iter_layers(model) if isinstance(layer, PruneLowMagnitude)]


def sparsity_logs(model):
    """Per-layer and overall sparsity of a pruned model, as a dict of floats.

    Keys are `sparsity/<layer name>` for each pruned layer and `sparsity` for
    the fraction of zeros over all prunable weights.
    """
    logs, zeros, total = {}, 0.0, 0
    for wrapper in pruning_wrappers(model):
        size = sum(int(keras.ops.size(mask)) for mask in wrapper.masks)
        sparsity = wrapper.sparsity()
        logs[f"sparsity/{wrapper.layer.name}"] = sparsity
        zeros += sparsity * size
        total += size
    logs["sparsity"] = zeros / total if total else 0.0
    return logs


class UpdatePruningStep(keras.callbacks.Callback):
    """Checks that the model being trained is really pruned.

    tfcompress wrappers advance their own step inside the train step, so this
    callback is optional; it exists so tfmot code runs unchanged, and it
    catches the common slip of fitting the original model instead of the one
    `prune_low_magnitude` returned.

    Raises:
        ValueError: at the start of `fit` if the model has no pruned layer.

    Example:

    ```python
    pruned.fit(x, y, epochs=2, callbacks=[tfcompress.UpdatePruningStep()])
    ```
    """

    def on_train_begin(self, logs=None):
        if not pruning_wrappers(self.model):
            raise ValueError(
                f"UpdatePruningStep: model '{self.model.name}' has no layer wrapped by "
                "prune_low_magnitude. Fit the model prune_low_magnitude returned."
            )


class PruningSummaries(keras.callbacks.Callback):
    """Writes per-layer sparsity to TensorBoard and into the epoch `logs`.

    The same figures (`sparsity/<layer>` and the overall `sparsity`) are added
    to `logs` at the end of each epoch, so `History` and `CSVLogger` record
    them too.

    Args:
        log_dir: Directory for TensorBoard event files; None to only fill `logs`.
        update_freq: "epoch", or an int N to also write every N batches.

    Raises:
        ValueError: for an `update_freq` that is neither "epoch" nor an int >= 1.
        ImportError: for a `log_dir` when the tensorboard package is missing.

    Example:

    ```python
    pruned.fit(x, y, epochs=3, callbacks=[tfcompress.PruningSummaries("logs/")])
    ```
    """

    def __init__(self, log_dir=None, update_freq="epoch"):
        super().__init__()
        if not (isinstance(update_freq, str) and update_freq == "epoch"):
            try:
                update_freq = _validate.check_int("update_freq", update_freq, minimum=1)
            except ValueError:
                raise ValueError(
                    'update_freq must be "epoch" or an integer >= 1. '
                    f"Received: update_freq={update_freq!r}"
                ) from None
        if log_dir is not None:
            _require_tensorboard()
        self.log_dir = log_dir
        self.update_freq = update_freq
        self._writer = None
        self._batches = 0

    def on_train_begin(self, logs=None):
        if not pruning_wrappers(self.model):
            raise ValueError(
                f"PruningSummaries: model '{self.model.name}' has no layer wrapped by "
                "prune_low_magnitude."
            )
        if self.log_dir is not None and self._writer is None:
            import tensorflow as tf  # TensorBoard event files need TensorFlow.

            self._writer = tf.summary.create_file_writer(str(self.log_dir))

    def on_train_batch_end(self, batch, logs=None):
        self._batches += 1
        if self.update_freq != "epoch" and self._batches % self.update_freq == 0:
            self._write(sparsity_logs(self.model), self._batches)

    def on_epoch_end(self, epoch, logs=None):
        figures = sparsity_logs(self.model)
        if logs is not None:
            logs.update(figures)
        self._write(figures, epoch)

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.flush()

    def _write(self, figures, step):
        if self._writer is None:
            return
        import tensorflow as tf

        with self._writer.as_default():
            for name, value in figures.items():
                tf.summary.scalar(name, value, step=step)


def _require_tensorboard():
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None:
        raise ImportError(
            "PruningSummaries(log_dir=...) writes TensorBoard event files and needs "
            "the tensorboard package: pip install tensorboard (or tfcompress[tensorboard]). "
            "Pass log_dir=None to only put the figures into the fit logs."
        )

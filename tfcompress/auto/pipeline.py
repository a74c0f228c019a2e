"""The training pipeline a recipe runs: channels -> prune -> cluster (zeros kept) -> QAT (zeros and clusters kept).

The one implementation of it: `auto_compress` runs it for every trial, the
digits demo (`demo.train_pipeline`) and the benchmarks for their recipes.
"""

import dataclasses
import math

import keras
import numpy as np

import tfcompress
from tfcompress import _layers, _rewrite
from tfcompress.auto import channels
from tfcompress.pruning import PruneLowMagnitude

# Epochs and Adam learning rates of each stage (those of the digits demo;
# channel pruning, which the demo does not run, as unstructured pruning).
DEFAULT_EPOCHS = {"channels": 12, "prune": 12, "cluster": 4, "qat": 3}
DEFAULT_LEARNING_RATES = {"channels": 5e-4, "prune": 5e-4, "cluster": 3e-4, "qat": 1e-4}
STAGES = tuple(DEFAULT_EPOCHS)


def ramp_schedule(final_sparsity, prune_epochs, steps_per_epoch):
    """`PolynomialDecay` to `final_sparsity` over the first 2/3 of the pruning epochs.

    The remaining third lets the network recover at the final sparsity; masks
    are updated twice per epoch.

    Example:

    >>> ramp_schedule(0.8, prune_epochs=3, steps_per_epoch=10).get_config()["end_step"]
    20
    """
    return tfcompress.PolynomialDecay(
        0.0,
        final_sparsity,
        begin_step=0,
        end_step=steps_per_epoch * max(1, (2 * prune_epochs) // 3),
        frequency=max(1, steps_per_epoch // 2),
    )


class TrainingData:
    """Training data as `fit` takes it: arrays `(x, y)` or a batched `tf.data.Dataset`.

    Args:
        x: Inputs (numpy array) or a `tf.data.Dataset` of `(x, y)` batches.
        y: Labels for array inputs; None with a dataset.
        batch_size: Batch size for arrays.
    """

    def __init__(self, x, y=None, batch_size=32):
        self.x, self.y, self.batch_size = x, y, batch_size
        if is_dataset(x):
            cardinality = int(x.cardinality())
            # Unknown (e.g. after filter) or infinite: count one pass.
            self.steps_per_epoch = cardinality if cardinality > 0 else sum(1 for _ in x)
        else:
            self.steps_per_epoch = int(math.ceil(len(x) / batch_size))

    def fit(self, model, epochs, verbose, callbacks=None):
        if is_dataset(self.x):  # shuffled (or not) by the dataset itself
            return model.fit(
                self.x, epochs=epochs, verbose=verbose, callbacks=callbacks, shuffle=False
            )
        return model.fit(
            self.x, self.y, batch_size=self.batch_size, epochs=epochs, verbose=verbose,
            callbacks=callbacks,
        )

    def first_batch(self):
        """`(x, y)` of one batch, as numpy."""
        if is_dataset(self.x):
            x, y = next(iter(self.x))[:2]
            return np.asarray(x), np.asarray(y)
        return np.asarray(self.x[: self.batch_size]), np.asarray(self.y[: self.batch_size])


def is_dataset(value):
    """True for a `tf.data.Dataset` (checked without importing TensorFlow eagerly)."""
    return type(value).__module__.startswith("tensorflow") and hasattr(value, "element_spec")


def classification_loss(model, data):
    """The loss to train `model` with: its compiled one, else cross-entropy fitting its outputs.

    Sparse or one-hot cross-entropy after the labels' shape, on logits or
    probabilities after what the model outputs.
    """
    from tfcompress.auto.sensitivity import outputs_are_probabilities

    x, y = data.first_batch()
    outputs = np.asarray(model.predict_on_batch(x))
    if getattr(model, "compiled", False) and getattr(model, "loss", None) is not None:
        loss = model.loss
        try:  # a loss for other labels would only fail inside the first fit
            keras.losses.get(loss)(y, outputs)
        except Exception as error:  # noqa: BLE001 - any failure means it does not fit
            raise ValueError(
                f"The model's compiled loss {getattr(loss, 'name', loss)!r} does not fit the "
                f"labels of shape "
                f"{y.shape[1:]} per example ({str(error).splitlines()[0]}). Pass loss=... or "
                "compile the model with a loss for these labels."
            ) from None
        return loss
    from_logits = not outputs_are_probabilities(outputs)
    if y.ndim > 1 and y.shape[-1] > 1:
        return keras.losses.CategoricalCrossentropy(from_logits=from_logits)
    return keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits)


@dataclasses.dataclass
class PipelineModels:
    """The models `train_pipeline` trained.

    Attributes:
        qat: The trained QAT model, ready for `lite.convert(qat, "int8")`.
        channel_pruning: The trained `ChannelPruningModel` (None if no
            channel was pruned).
        thinned: `channel_pruning` stripped (`strip_channels`: fewer
            filters), or the float model.
        pruning: The trained model with its pruning wrappers (None if not pruned).
        pruned: `pruning` stripped of its wrappers (`thinned` if not pruned).
        clustering: The trained model with its clustering wrappers (None if
            not clustered).
        clustered: `clustering` stripped of its wrappers (`pruned` if not
            clustered).
    """

    qat: keras.Model
    channel_pruning: keras.Model = None
    thinned: keras.Model = None
    pruning: keras.Model = None
    pruned: keras.Model = None
    clustering: keras.Model = None
    clustered: keras.Model = None


def train_pipeline(
    float_model,
    x,
    y=None,
    epochs=None,
    sparsity=None,
    clusters=None,
    *,
    batch_size=32,
    learning_rates=None,
    loss=None,
    weight_bits=8,
    channel_sparsity=None,
    log=print,
    verbose=2,
):
    """Channels -> prune -> cluster (preserving zeros) -> QAT (preserving zeros and clusters).

    Each stage starts from the previous one's stripped model with a fresh Adam
    optimizer. Channel pruning (`prune_channels`, then `strip_channels`: a
    model with fewer filters) comes first, as the other stages act on the
    kernels it leaves. Sparsities ramp with `PolynomialDecay` over the first
    two thirds of their stage's epochs; the rest let the network recover at
    the final sparsity. A stage with nothing to do (no channel sparsity, no
    sparsity, no clusters) is skipped.

    Args:
        float_model: The trained float model (not modified).
        x, y: Training data: arrays, or a batched `tf.data.Dataset` of
            `(x, y)` as `x` (and `y=None`).
        epochs: Dict with "channels", "prune", "cluster" and "qat" epoch
            counts (other keys are ignored); missing ones take `DEFAULT_EPOCHS`.
        sparsity: Final sparsity, one float for every prunable layer or
            `{layer_name: float}`; None or 0: no pruning.
        clusters: Clusters per kernel, an int or `{layer_name: int}`; None:
            no clustering.
        batch_size: Batch size with arrays.
        learning_rates: Dict of Adam learning rates per stage; missing ones
            take `DEFAULT_LEARNING_RATES`.
        loss: Loss to train with; None: see `classification_loss`.
        weight_bits: Weight bits of the QAT stage (as `quantize_model`).
        channel_sparsity: `{layer_name: float}`: the fraction of the
            channels of each named layer's channel group to remove (the
            layers of one group given one value; kept counts in multiples of
            `channels.ROUND_TO`, ranked by `channels.IMPORTANCE`); None: no
            channel pruning.
        log: Progress printer (one line per stage).
        verbose: `fit` verbosity.

    Returns:
        The trained models, a `PipelineModels`.
    """
    epochs = {**DEFAULT_EPOCHS, **{k: v for k, v in (epochs or {}).items() if k in STAGES}}
    rates = {**DEFAULT_LEARNING_RATES, **(learning_rates or {})}
    data = TrainingData(x, y, batch_size)
    loss = classification_loss(float_model, data) if loss is None else loss

    def train(model, stage, callbacks=()):
        model.compile(
            optimizer=keras.optimizers.Adam(rates[stage]), loss=loss, metrics=["accuracy"]
        )
        data.fit(model, epochs[stage], verbose, list(callbacks))
        return model

    models = PipelineModels(qat=None, thinned=float_model)
    channel_sparsity = {name: s for name, s in (channel_sparsity or {}).items() if s}
    if channel_sparsity:
        # One schedule object per value: the layers of a group must carry the same one.
        schedules = {
            s: ramp_schedule(s, epochs["channels"], data.steps_per_epoch)
            for s in sorted(set(channel_sparsity.values()))
        }
        log(
            f"  channel pruning ({epochs['channels']} epochs): "
            f"{_describe(channel_sparsity, '{:.0%}')}"
        )
        models.channel_pruning = train(
            tfcompress.prune_channels(
                float_model,
                {name: schedules[s] for name, s in channel_sparsity.items()},
                importance=channels.IMPORTANCE,
                round_to=channels.ROUND_TO,
            ),
            "channels",
        )
        models.thinned = tfcompress.strip_channels(models.channel_pruning)
    models.pruned = models.thinned
    if isinstance(sparsity, dict):
        sparsity = {name: s for name, s in sparsity.items() if s}
    if sparsity:
        if isinstance(sparsity, dict):
            schedule = {
                name: ramp_schedule(s, epochs["prune"], data.steps_per_epoch)
                for name, s in sparsity.items()
            }
        else:
            schedule = ramp_schedule(sparsity, epochs["prune"], data.steps_per_epoch)
        log(f"  pruning ({epochs['prune']} epochs): {_describe(sparsity, '{:.0%}')}")
        models.pruning = train(tfcompress.prune_low_magnitude(models.thinned, schedule), "prune")
        models.pruned = tfcompress.strip_pruning(models.pruning)
    models.clustered = models.pruned
    if isinstance(clusters, dict):
        clusters = {name: k for name, k in clusters.items() if k}
    keep_zeros = bool(sparsity)
    if clusters:
        zeros = ", zeros kept out" if keep_zeros else ""
        log(f"  clustering ({epochs['cluster']} epochs){zeros}: {_describe(clusters, '{}')}")
        clustering = tfcompress.cluster_weights(models.pruned, clusters, preserve_sparsity=keep_zeros)
        # Pruned layers that are not clustered train unwrapped in this stage.
        keep = KeepZeros(clustering, _names(sparsity, clustering) - _names(clusters, clustering))
        models.clustering = train(clustering, "cluster", [keep])
        models.clustered = tfcompress.strip_clustering(models.clustering)
    kept = [kind for kind, kept in (("zeros", keep_zeros), ("clusters", clusters)) if kept]
    log(
        f"  quantization-aware training ({epochs['qat']} epochs)"
        + (f", {' and '.join(kept)} kept" if kept else "")
    )
    qat = tfcompress.quantize_model(
        # Clustered kernels are kept shared only under preserve_sparsity (the
        # auto rule: few distinct values), with or without pruning before.
        models.clustered, preserve_sparsity=keep_zeros or bool(clusters), weight_bits=weight_bits
    )
    models.qat = train(qat, "qat")
    return models


class KeepZeros(keras.callbacks.Callback):
    """Holds the zeros of some layers' kernels at zero while a stage trains them unwrapped.

    After pruning, a layer that the clustering stage does not wrap would
    otherwise train its pruned weights back to non-zero values. The zeros are
    those of the kernels when the callback is made; they are restored after
    every training step, so each forward pass sees them.

    Args:
        model: The model of the stage.
        names: Names of the layers whose zeros to keep.
    """

    def __init__(self, model, names):
        super().__init__()
        self.kept = [
            (variable, (keras.ops.convert_to_numpy(variable) != 0).astype(variable.dtype))
            for layer in _rewrite.iter_layers(model)
            if layer.name in names
            for variable in _layers.compressible_weights(layer, PruneLowMagnitude.opt_in_method)
            or []
        ]

    def on_train_batch_end(self, batch, logs=None):
        for variable, mask in self.kept:
            variable.assign(variable * mask)


def _names(setting, model):
    """Layers a per-layer setting applies to: the dict's keys, or every layer for one value."""
    if isinstance(setting, dict):
        return set(setting)
    if not setting:
        return set()
    return {layer.name for layer in _rewrite.iter_layers(model)}


def _describe(setting, fmt):
    if isinstance(setting, dict):
        if len(setting) > 6:  # a long model: the range, not every layer
            low, high = min(setting.values()), max(setting.values())
            return f"{len(setting)} layers, {fmt.format(low)} to {fmt.format(high)}"
        return ", ".join(f"{name} {fmt.format(value)}" for name, value in setting.items())
    return fmt.format(setting)

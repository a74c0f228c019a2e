"""Per-layer sensitivity: what each knob value costs each layer, measured without training.

One layer at a time, one knob at a time, the layer's kernels are replaced by
what the value does to them at once (`Knob.apply`: magnitude pruning, k-means
clustering), the model is evaluated on (a sample of) the validation data and
the kernels are restored. The cost of a value is the rise of the validation
cross-entropy over the float model's; a layer's cost under a joint setting is
taken as the sum over its knobs (pruning and clustering disturb different
things: how many weights survive, how finely they are resolved).

These costs rank settings; they do not predict the accuracy after the
pipeline's fine-tuning, which recovers most of it. The search uses real,
trained and converted runs for that.
"""

import dataclasses
import sys

import keras
import numpy as np

from tfcompress.auto import knobs as knobs_lib


@dataclasses.dataclass
class Sensitivity:
    """The measured table.

    Attributes:
        base_loss: Validation cross-entropy of the float model (on the sample).
        base_accuracy: Its accuracy on the sample.
        loss: `{layer: {knob: {value: rise of the loss}}}`, made non-decreasing
            along each knob's grid (a harsher value is never counted as
            cheaper than a milder one: the differences are noise).
        accuracy: `{layer: {knob: {value: drop of accuracy}}}` as measured.
        samples: Validation examples used.
    """

    base_loss: float
    base_accuracy: float
    loss: dict
    accuracy: dict
    samples: int

    def joint_loss(self, layer, settings):
        """Cost of a joint setting `{knob: value}` of `layer`: the sum over knobs."""
        return sum(self.loss[layer][name][value] for name, value in settings.items())

    def to_dict(self):
        """The table as JSON-serializable lists (values as they appear in recipes)."""
        return {
            "base_loss": self.base_loss,
            "base_accuracy": self.base_accuracy,
            "samples": self.samples,
            "layers": {
                layer: {
                    name: [
                        {"value": value, "loss": self.loss[layer][name][value],
                         "accuracy_drop": self.accuracy[layer][name][value]}
                        for value in per_knob
                    ]
                    for name, per_knob in knobs.items()
                }
                for layer, knobs in self.loss.items()
            },
        }


class Evaluator:
    """Cross-entropy and accuracy of a classifier on fixed data, computed quickly.

    Args:
        model: A Keras classifier (outputs logits or probabilities).
        x: Inputs.
        labels: Integer labels.
        batch_size: Examples per forward pass.
    """

    def __init__(self, model, x, labels, batch_size=256):
        self.model, self.x, self.labels, self.batch_size = model, x, labels, batch_size
        self.probabilities = None

    def outputs(self):
        return np.concatenate(
            [
                np.asarray(self.model.predict_on_batch(self.x[i : i + self.batch_size]))
                for i in range(0, len(self.x), self.batch_size)
            ]
        ).astype("float64")

    def __call__(self):
        """`(loss, accuracy)` of the model as it is now."""
        out = self.outputs()
        if self.probabilities is None:
            self.probabilities = outputs_are_probabilities(out)
        if self.probabilities:
            log_p = np.log(np.clip(out, 1e-7, 1.0))
        else:
            shifted = out - out.max(axis=-1, keepdims=True)
            log_p = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
        rows = np.arange(len(self.labels))
        loss = float(-np.mean(log_p[rows, self.labels]))
        accuracy = float(np.mean(np.argmax(out, axis=-1) == self.labels))
        return loss, accuracy


def outputs_are_probabilities(outputs):
    """True if every row is a probability distribution (a softmax output), not logits.

    Example:

    >>> outputs_are_probabilities(np.array([[0.2, 0.8], [0.5, 0.5]]))
    True
    >>> outputs_are_probabilities(np.array([[2.0, -1.0]]))
    False
    """
    outputs = np.asarray(outputs)
    return bool(
        outputs.min() >= 0.0 and outputs.max() <= 1.0 and np.allclose(outputs.sum(-1), 1.0, atol=1e-3)
    )


def measure(model, layers, grids, x, labels, verbose=1):
    """Measures the sensitivity table of `layers` (names of `model`'s compressible layers).

    The model's weights are restored afterwards.

    Args:
        model: The float model.
        layers: `{name: layer}` from `knobs.compressible_layers`.
        grids: `{name: {knob: values}}` from `knobs.search_grids`, neutral first.
        x: Validation inputs (already sampled).
        labels: Integer labels.
        verbose: 0 silent, else a progress bar.

    Returns:
        A `Sensitivity`.
    """
    evaluate = Evaluator(model, x, labels)
    base_loss, base_accuracy = evaluate()
    units = sum(len(values) - 1 for grid in grids.values() for values in grid.values())
    progress = progress_bar(units, verbose)
    loss, accuracy, done = {}, {}, 0
    for name, layer in layers.items():
        variables = knobs_lib.kernels(layer)
        originals = [keras.ops.convert_to_numpy(v) for v in variables]
        loss[name], accuracy[name] = {}, {}
        for row in knobs_lib.KNOBS:
            loss[name][row.name] = {row.neutral: 0.0}
            accuracy[name][row.name] = {row.neutral: 0.0}
            rise = 0.0
            for value in grids[name][row.name][1:]:
                for seed, (variable, original) in enumerate(zip(variables, originals)):
                    variable.assign(row.apply(original, value, seed, layer, variable))
                value_loss, value_accuracy = evaluate()
                for variable, original in zip(variables, originals):
                    variable.assign(original)
                rise = max(rise, value_loss - base_loss)
                loss[name][row.name][value] = rise
                accuracy[name][row.name][value] = base_accuracy - value_accuracy
                done += 1
                progress.update(done)
    return Sensitivity(base_loss, base_accuracy, loss, accuracy, int(len(labels)))


def progress_bar(units, verbose):
    """A Progbar over `units` settings: live in a terminal, one line at the end in a log, or silent."""
    shown = 0 if not verbose else 1 if sys.stdout.isatty() else 2
    return keras.utils.Progbar(units, verbose=shown, unit_name="setting")


def harshest_without_training(evaluate, layers, choices, floor):
    """Index of the harshest choice whose model, compressed at once, keeps `floor` accuracy.

    Every layer's kernels are set at once to what its settings do to them
    (no training) and the model is evaluated; a binary search over `choices`
    (ordered from mildest to harshest) finds the last one at or above
    `floor`. Fine-tuning only recovers accuracy, so the search treats this
    point as one that keeps the budget until a real run says otherwise.

    Args:
        evaluate: An `Evaluator` of the float model.
        layers: `{name: layer}`.
        choices: List of `{layer name: {knob: value}}`, mildest first.
        floor: Accuracy to keep.

    Returns:
        An index into `choices` (0 if none keeps it).
    """
    originals = {
        name: [keras.ops.convert_to_numpy(v) for v in knobs_lib.kernels(layer)]
        for name, layer in layers.items()
    }

    def accuracy(settings_by_layer):
        try:
            for name, settings in settings_by_layer.items():
                variables = knobs_lib.kernels(layers[name])
                for seed, (variable, kernel) in enumerate(zip(variables, originals[name])):
                    for row in knobs_lib.KNOBS:
                        kernel = row.apply(kernel, settings[row.name], seed, layers[name], variable)
                    variable.assign(kernel)
            return evaluate()[1]
        finally:
            for name, layer in layers.items():
                for variable, kernel in zip(knobs_lib.kernels(layer), originals[name]):
                    variable.assign(kernel)

    return last_passing(len(choices), lambda i: accuracy(choices[i]) >= floor)


def last_passing(count, passes):
    """The last index in `range(count)` for which `passes(index)`, by binary search (0 if none).

    `passes` is taken to be true up to some index and false after it.

    Example:

    >>> last_passing(10, lambda i: i <= 6)
    6
    """
    lo, hi = 0, count - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if passes(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo

"""Scoring a model's outputs against labels the way Keras' `"accuracy"` metric does.

Used by `lite.evaluate`: labels are checked against the outputs they score
(number of examples, shape, class range, 0/1 for binary heads) so a mistake
raises instead of giving a plausible-looking figure.
"""

import numpy as np

from tfcompress import _validate


def labels_per_output(y, names, x):
    """Matches `y` to the outputs and checks each label array against `x`.

    Args:
        y: One label array (one output), a list in output order or a dict by
            output name (None skips an output).
        names: The output names, in order.
        x: The first input array (for the number of examples).

    Returns:
        A list of `(name for messages, checked labels or None)` per output.
    """
    if len(names) == 1:
        labels = [y]
    elif isinstance(y, dict):
        unknown = sorted(str(k) for k in y if k not in names)
        if unknown:
            raise ValueError(f"y names outputs the model does not have: {unknown}. Outputs: {names}")
        labels = [y.get(name) for name in names]
    elif isinstance(y, (list, tuple)) and len(y) == len(names):
        labels = list(y)
    else:
        raise ValueError(
            f"The model has {len(names)} outputs {names}: pass y as a list of {len(names)} "
            "label arrays in that order (None to skip an output) or a dict by output name. "
            f"Received: a {type(y).__name__}"
            + (f" of length {len(y)}" if isinstance(y, (list, tuple)) else "")
        )
    checked = []
    for name, label in zip(names, labels):
        label_name = "y" if len(names) == 1 else f"y[{name!r}]"
        if label is not None:
            label = _validate.check_array(label_name, label, min_ndim=1)
            _validate.check_same_length(x=x, **{label_name: label})
        checked.append((label_name, label))
    return checked


def accuracy(output, y, producer, threshold, name):
    """Keras' accuracy of one output against its checked labels.

    Args:
        output: The output's values, first axis = examples.
        y: The labels (checked by `labels_per_output`).
        producer: The op that computes the output ("LOGISTIC": a sigmoid).
        threshold: Decision threshold of one-unit and sigmoid outputs, or None
            (0.5 after a sigmoid, 0 for logits).
        name: How to name `y` in messages.

    Returns:
        The accuracy, a float in [0, 1].

    Example:

    >>> accuracy(np.array([[0.2], [0.7]]), np.array([0, 0]), "LOGISTIC", None, "y")
    0.5
    >>> accuracy(np.array([[2.0, -1.0]]), np.array([3]), "SOFTMAX", None, "y")
    Traceback (most recent call last):
    ...
    ValueError: y holds class labels in [3, 3], but the output has 2 classes: labels must be in [0, 2).
    """
    output = np.asarray(output, "float32")
    bad = int(output.size - np.count_nonzero(np.isfinite(output)))
    if bad:  # argmax and thresholds would still give a figure: refuse it
        raise ValueError(
            f"The model output {bad} non-finite value(s) (NaN or infinity) for the "
            f"inputs scored against {name}: its weights or the file are broken."
        )
    units = output.shape[-1] if output.ndim > 1 else 1
    sigmoid = producer == "LOGISTIC"
    if threshold is None:
        threshold = 0.5 if sigmoid else 0.0
    if units == 1 or (sigmoid and y.shape == output.shape):
        if y.size != output.size or y.shape[0] != output.shape[0]:
            raise ValueError(
                f"{name} has shape {y.shape}, but the output has shape {output.shape}: "
                "pass one 0/1 label per output value."
            )
        check_binary(name, y)
        predicted = (output > threshold).reshape(y.shape)
        return float(np.mean(predicted == (y > 0.5)))
    if y.shape == output.shape:  # one-hot rows
        y = np.argmax(y, axis=-1)
    elif y.shape[1:] == output.shape[1:-1] + (1,):
        y = y.reshape(y.shape[:-1])
    if y.shape != output.shape[:-1]:
        raise ValueError(
            f"{name} has shape {y.shape}, but the output has shape {output.shape}: pass "
            f"class ids of shape {output.shape[:-1]} or one-hot rows of shape {output.shape}."
        )
    _validate.check_label_values(name, y, units)
    return float(np.mean(np.argmax(output, axis=-1) == y))


def check_binary(name, y):
    """Raises ValueError unless `y` holds only 0 and 1."""
    values = np.unique(y)
    if not np.all(np.isin(values, (0, 1))):
        raise ValueError(
            f"{name} must hold 0/1 labels for a one-unit (binary) output. Received values "
            f"{values[:5].tolist()}{' ...' if values.size > 5 else ''}"
        )



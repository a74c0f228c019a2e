"""Checks at the boundary, one helper per kind of input; errors repeat the value.

Arguments (numbers, choices, flags), arrays (finite, shape, dtype, batch
length, a model's inputs) and files (`.keras` models, `.npy` arrays, `.tflite`
flatbuffers: `tfcompress._validate_files`, re-exported here) are checked
before they reach Keras, TensorFlow, LiteRT or numpy, so a bad input fails
with a message that names the argument, what was received and what was
expected. numpy scalars are accepted wherever a Python number is.
"""

import numbers

import numpy as np


def check_int(name, value, minimum=None, maximum=None):
    """Returns `value` as an int; raises ValueError unless it is an integer in range.

    Python and numpy integers are accepted; bools and floats are not.

    Example:

    >>> check_int("frequency", np.int64(10), minimum=1)
    10
    >>> check_int("frequency", 0, minimum=1)
    Traceback (most recent call last):
    ...
    ValueError: frequency must be >= 1. Received: frequency=0
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer. Received: {name}={value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}. Received: {name}={value!r}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}. Received: {name}={value!r}")
    return value


def check_number(name, value, minimum=None, maximum=None, exclusive_minimum=False):
    """Returns `value` as a float; raises ValueError unless it is a finite real number in range.

    Example:

    >>> check_number("power", np.float32(2.5), minimum=0, exclusive_minimum=True)
    2.5
    >>> check_number("power", float("nan"))
    Traceback (most recent call last):
    ...
    ValueError: power must be a finite number. Received: power=nan
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number. Received: {name}={value!r}")
    number = float(value)
    if not np.isfinite(number):
        raise ValueError(f"{name} must be a finite number. Received: {name}={value!r}")
    if minimum is not None and (number <= minimum if exclusive_minimum else number < minimum):
        bound = f"> {minimum}" if exclusive_minimum else f">= {minimum}"
        raise ValueError(f"{name} must be {bound}. Received: {name}={value!r}")
    if maximum is not None and number > maximum:
        raise ValueError(f"{name} must be <= {maximum}. Received: {name}={value!r}")
    return number


def check_fraction(name, value, upper_inclusive=False):
    """Returns `value` as a float; raises ValueError unless it is in [0, 1) (or [0, 1]).

    Example:

    >>> check_fraction("final_sparsity", np.float32(0.5))
    0.5
    >>> check_fraction("final_sparsity", 1.2)
    Traceback (most recent call last):
    ...
    ValueError: final_sparsity must be in [0, 1). Received: final_sparsity=1.2
    """
    bound = "1]" if upper_inclusive else "1)"
    ok = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
    if ok:
        v = float(value)
        ok = 0.0 <= v <= 1.0 if upper_inclusive else 0.0 <= v < 1.0
    if not ok:
        raise ValueError(f"{name} must be in [0, {bound}. Received: {name}={value!r}")
    return float(value)


def check_bool(name, value):
    """Returns `value` as a bool; raises ValueError unless it is a bool (not "no", not 0).

    Example:

    >>> check_bool("preserve_sparsity", "no")
    Traceback (most recent call last):
    ...
    ValueError: preserve_sparsity must be True or False. Received: preserve_sparsity='no'
    """
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False. Received: {name}={value!r}")
    return bool(value)


def check_one_of(name, value, choices):
    """Returns `value`; raises ValueError unless it is one of `choices`.

    Example:

    >>> check_one_of("block_pooling_type", "MEAN", ("AVG", "MAX"))
    Traceback (most recent call last):
    ...
    ValueError: block_pooling_type must be one of ['AVG', 'MAX']. Received: block_pooling_type='MEAN'
    """
    try:
        known = value in choices
    except TypeError:  # an unhashable value against a set
        known = False
    if not known:
        listed = sorted(choices, key=str)
        raise ValueError(f"{name} must be one of {listed}. Received: {name}={value!r}")
    return value


def check_array(name, value, dtype_kinds="biuf", finite=True, min_ndim=None, trailing_shape=None):
    """Returns `value` as a numpy array; raises ValueError unless it is usable data.

    Args:
        name: Argument name, for messages.
        value: Array-like.
        dtype_kinds: Accepted numpy dtype kinds ("b" bool, "i" int, "u"
            unsigned, "f" float).
        finite: Reject NaN and infinity.
        min_ndim: Minimum rank (e.g. 1: a batch axis).
        trailing_shape: Expected shape after the batch axis; `None` entries
            match any size.

    Example:

    >>> check_array("x", [[0.0, np.inf]])
    Traceback (most recent call last):
    ...
    ValueError: x holds 1 non-finite value(s) (NaN or infinity); data must be finite.
    """
    if hasattr(value, "numpy") and not isinstance(value, np.ndarray):
        value = value.numpy()  # a TensorFlow / Keras tensor
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as error:
        raise ValueError(f"{name} must be an array of numbers. Received a {type(value).__name__}: {error}") from None
    if array.dtype.kind not in dtype_kinds:
        raise ValueError(
            f"{name} must hold numbers (dtype kinds {dtype_kinds!r}). Received dtype "
            f"{array.dtype} of shape {array.shape}"
        )
    if min_ndim is not None and array.ndim < min_ndim:
        raise ValueError(
            f"{name} must have at least {min_ndim} dimension(s) (the first one indexes "
            f"examples). Received shape {array.shape}"
        )
    if trailing_shape is not None:
        trailing_shape = tuple(trailing_shape)
        got = array.shape[1:]
        if len(got) != len(trailing_shape) or any(
            e is not None and e != g for e, g in zip(trailing_shape, got)
        ):
            expected = "(batch, " + ", ".join("?" if e is None else str(e) for e in trailing_shape)
            raise ValueError(
                f"{name} has shape {array.shape}, but the model expects {expected})."
            )
    if finite and array.dtype.kind == "f":
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        if bad:
            raise ValueError(
                f"{name} holds {bad} non-finite value(s) (NaN or infinity); data must be finite."
            )
    return array


def check_same_length(**arrays):
    """Raises ValueError unless every array has the same first dimension.

    Example:

    >>> check_same_length(x=np.zeros((4, 2)), y=np.zeros(3))
    Traceback (most recent call last):
    ...
    ValueError: x and y must have the same number of examples (first dimension). Received: x: 4, y: 3
    """
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        names = " and ".join(lengths)
        got = ", ".join(f"{name}: {n}" for name, n in lengths.items())
        raise ValueError(
            f"{names} must have the same number of examples (first dimension). Received: {got}"
        )


def check_class_labels(name, y, classes, keep_one_hot=False):
    """Returns class labels as int64 `(batch,)`; raises ValueError unless they fit `classes`.

    Integer labels `(batch,)` or `(batch, 1)`, or one-hot rows `(batch, classes)`.

    Args:
        name: Argument name, for messages.
        y: The labels.
        classes: Number of classes of the model's output.
        keep_one_hot: Return one-hot rows as they are (for training) instead
            of their argmax.

    Example:

    >>> check_class_labels("y", [[0.0, 1.0], [1.0, 0.0]], 2).tolist()
    [1, 0]
    >>> check_class_labels("y", [0, 12], 10)
    Traceback (most recent call last):
    ...
    ValueError: y holds class labels in [0, 12], but the output has 10 classes: labels must be in [0, 10).
    """
    y = check_array(name, y, min_ndim=1)
    if y.ndim == 2 and y.shape[1] == classes and classes > 1:
        return y if keep_one_hot else np.argmax(y, axis=-1)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(
            f"{name} must hold integer class labels (shape (batch,)) or one-hot rows (shape "
            f"(batch, {classes})). Received shape {y.shape}, dtype {y.dtype}"
        )
    return check_label_values(name, y, classes).astype("int64")


def check_label_values(name, y, classes):
    """Returns `y` (numpy); raises ValueError unless it holds whole numbers in [0, classes).

    Example:

    >>> check_label_values("y", np.array([0.0, 1.5]), 3)
    Traceback (most recent call last):
    ...
    ValueError: y holds fractions; class labels are whole numbers in [0, 3).
    """
    if y.dtype.kind == "f" and not np.all(np.floor(y) == y):
        raise ValueError(f"{name} holds fractions; class labels are whole numbers in [0, {classes}).")
    if y.size and (y.min() < 0 or y.max() >= classes):
        raise ValueError(
            f"{name} holds class labels in [{y.min()}, {y.max()}], but the output has "
            f"{classes} classes: labels must be in [0, {classes})."
        )
    return y


def check_finite_weights(model, doing):
    """Raises ValueError naming the weights of `model` that hold NaN or infinity.

    Such a model (training diverged, a bad checkpoint) converts and runs, but
    every figure computed from it is wrong; `doing` says what was refused.
    """
    import keras

    bad = []
    for variable in model.weights:
        if "float" not in str(variable.dtype):
            continue
        values = keras.ops.convert_to_numpy(variable)
        if not np.all(np.isfinite(values)):
            bad.append(f"{variable.path} ({int(np.size(values) - np.isfinite(values).sum())} values)")
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise ValueError(
            f"Cannot {doing}: model '{model.name}' has weights holding NaN or infinity "
            f"(did training diverge?): {shown}."
        )


def check_built(model, doing):
    """Raises ValueError unless `model` is built (a graph model: with its inputs).

    Keras itself raises AttributeError from `model.inputs` of an unbuilt
    Sequential; `doing` says what needed the weights ("compress", ...).
    """
    graph = any(cls.__name__ in ("Functional", "Sequential") for cls in type(model).__mro__)
    try:
        built = model.built and (bool(model.inputs) if graph else True)
    except AttributeError:
        built = False
    if not built:
        raise ValueError(
            f"Model '{model.name}' is not built, so it has no weights to {doing}. Give it a "
            "keras.Input(shape=...) or call it once on a batch of data first."
        )


def check_int_pair(name, value, minimum=1):
    """Returns `value` as a tuple of two ints >= `minimum`; raises ValueError otherwise.

    Example:

    >>> check_int_pair("block_size", [np.int64(2), 4])
    (2, 4)
    >>> check_int_pair("block_size", (2,))
    Traceback (most recent call last):
    ...
    ValueError: block_size must be a pair of integers >= 1. Received: block_size=(2,)
    """
    ok = isinstance(value, (tuple, list)) and len(value) == 2 and all(
        isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_)) and v >= minimum
        for v in value
    )
    if not ok:
        raise ValueError(
            f"{name} must be a pair of integers >= {minimum}. Received: {name}={value!r}"
        )
    return tuple(int(v) for v in value)


class InputSpec:
    """What one model input takes: its name, shape (batch axis first; None: any) and dtype."""

    def __init__(self, name, shape, dtype):
        self.name = name
        self.shape = tuple(None if d is None or d < 0 else int(d) for d in shape)
        self.dtype = np.dtype(dtype)

    def describe(self):
        """E.g. `'tokens' takes (batch, 16) int32`."""
        dims = "".join(", ?" if d is None else f", {d}" for d in self.shape[1:])
        return f"'{self.name}' takes (batch{dims}) {self.dtype}"


def check_inputs(x, specs, name="x"):
    """Matches `x` to a model's inputs; returns one checked array per input.

    Each array must hold finite numbers, have the input's rank and its fixed
    sizes after the batch axis; integer inputs (token ids) take whole numbers
    within their type; all arrays have the same number of examples (>= 1).

    Args:
        x: One array (a model with one input), a list / tuple of arrays in
            the order of `specs`, or a dict `{input name: array}`.
        specs: A list of `InputSpec`.
        name: The argument's name, for messages.

    Returns:
        A list of numpy arrays aligned with `specs`, cast to their dtypes.

    Example:

    >>> spec = InputSpec("x", (None, 4), "float32")
    >>> check_inputs(np.zeros((2, 5)), [spec])
    Traceback (most recent call last):
    ...
    ValueError: x has shape (2, 5), but the model input 'x' takes (batch, 4) float32.
    """
    names = [spec.name for spec in specs]
    if isinstance(x, dict):
        missing = [n for n in names if n not in x]
        unknown = sorted((k for k in x if k not in names), key=str)
        if missing or unknown:
            raise ValueError(
                f"{name} must be a dict with one array per model input {names}. "
                f"Missing: {missing}; unknown: {unknown}"
            )
        arrays = [(f"{name}[{n!r}]", x[n]) for n in names]
    elif isinstance(x, (list, tuple)) and _holds_batches(x, specs):
        if len(x) != len(specs):
            raise ValueError(
                f"The model has {len(specs)} input(s) {names}, but {name} holds {len(x)} "
                f"arrays. Pass one array per input (a list in this order, or a dict by name)."
            )
        arrays = [(f"{name}[{i}]", a) for i, a in enumerate(x)]
    else:
        if len(specs) != 1:
            raise ValueError(
                f"The model has {len(specs)} inputs {names}; pass {name} as a list of "
                f"{len(specs)} arrays in this order, or a dict by name. Received one "
                f"{type(x).__name__}."
            )
        arrays = [(name, x)]
    checked = [_check_input(label, a, spec) for (label, a), spec in zip(arrays, specs)]
    check_same_length(**{label: a for (label, _), a in zip(arrays, checked)})
    if len(checked[0]) == 0:
        raise ValueError(f"{name} holds no examples (its first dimension is 0).")
    return checked


def _holds_batches(x, specs):
    """Is a list `x` one array per input, rather than the rows of a one-input batch?"""
    if len(specs) > 1:
        return True
    rank = len(specs[0].shape)
    return bool(x) and all(hasattr(a, "shape") and len(a.shape) == rank for a in x)


def _check_input(label, value, spec):
    kinds = "biuf" if spec.dtype.kind in "biu" else "buif"
    array = check_array(label, value, dtype_kinds=kinds, finite=True)
    if array.ndim != len(spec.shape) or any(
        e is not None and e != g for e, g in zip(spec.shape[1:], array.shape[1:])
    ):
        raise ValueError(f"{label} has shape {array.shape}, but the model input {spec.describe()}.")
    if spec.dtype.kind in "iu" and array.dtype.kind != "b":
        info = np.iinfo(spec.dtype)
        if array.dtype.kind == "f" and array.size and not np.all(np.floor(array) == array):
            raise ValueError(
                f"{label} holds fractions, but the model input {spec.describe()}: "
                "whole numbers (e.g. token ids)."
            )
        if array.size and (array.min() < info.min or array.max() > info.max):
            raise ValueError(
                f"{label} holds values in [{array.min()}, {array.max()}], outside the "
                f"{spec.dtype} range of the model input '{spec.name}'."
            )
    if spec.dtype.kind == "f" and array.size and array.dtype.kind in "iuf":
        largest = np.finfo(spec.dtype).max
        if np.max(np.abs(array)) > largest:  # would become inf in the model's dtype
            raise ValueError(
                f"{label} holds values up to {np.max(np.abs(array)):.3g} in magnitude, beyond "
                f"the {spec.dtype} range of the model input '{spec.name}' (+-{largest:.3g})."
            )
    return array.astype(spec.dtype, copy=False)


# Files: `.keras`, `.npy` / `.npz`, `.tflite` (kept in their own module for size).
from tfcompress._validate_files import (  # noqa: E402
    check_file,
    check_output_path,
    load_interpreter,
    load_keras_model,
    load_npy,
    read_flatbuffer,
)

__all__ = [
    "InputSpec",
    "check_array",
    "check_bool",
    "check_built",
    "check_class_labels",
    "check_label_values",
    "check_file",
    "check_finite_weights",
    "check_fraction",
    "check_inputs",
    "check_int",
    "check_int_pair",
    "check_number",
    "check_one_of",
    "check_output_path",
    "check_same_length",
    "load_interpreter",
    "load_keras_model",
    "load_npy",
    "read_flatbuffer",
]

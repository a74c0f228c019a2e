"""Checks at the boundary, one helper per kind of input; errors repeat the value.

Arguments (numbers, choices, flags), arrays (finite, shape, batch length) and
files (`.keras` models, `.tflite` flatbuffers) are checked here, before they
reach Keras, TensorFlow, LiteRT or numpy, so a bad input fails with a message
that names the argument, what was received and what was expected. numpy
scalars are accepted wherever a Python number is.
"""

import numbers
import os
import zipfile

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
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{name} must be a finite number. Received: {name}={value!r}")
    if minimum is not None and (value <= minimum if exclusive_minimum else value < minimum):
        bound = f"> {minimum}" if exclusive_minimum else f">= {minimum}"
        raise ValueError(f"{name} must be {bound}. Received: {name}={value!r}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}. Received: {name}={value!r}")
    return value


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
    ValueError: y holds labels outside [0, 10) for a model with 10 classes. Received labels from 0 to 12
    """
    y = check_array(name, y, min_ndim=1)
    if y.ndim == 2 and y.shape[1] == classes and classes > 1:
        return y if keep_one_hot else np.argmax(y, axis=-1)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    whole = y.dtype.kind in "biu" or bool(np.all(np.mod(y, 1) == 0))
    if y.ndim != 1 or not whole:
        raise ValueError(
            f"{name} must hold integer class labels (shape (batch,)) or one-hot rows (shape "
            f"(batch, {classes})). Received shape {y.shape}, dtype {y.dtype}"
        )
    if y.size and (y.min() < 0 or y.max() >= classes):
        raise ValueError(
            f"{name} holds labels outside [0, {classes}) for a model with {classes} classes. "
            f"Received labels from {y.min()} to {y.max()}"
        )
    return y.astype("int64")


def check_file(name, path, suffixes):
    """Returns `path` as a str; raises unless it is an existing file with one of `suffixes`.

    Raises:
        FileNotFoundError: if there is no such file.
        ValueError: for a directory or a file of another type.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a file path. Received: {name}={path!r}")
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No such file. Received: {name}={path!r}")
    if not os.path.isfile(path):
        raise ValueError(f"{name} must be a file, not a directory. Received: {name}={path!r}")
    if not path.endswith(tuple(suffixes)):
        raise ValueError(
            f"{name} must be a {' or '.join(suffixes)} file. Received: {name}={path!r}"
        )
    return path


def load_keras_model(path, name="model"):
    """Loads a `.keras` file, with a clear error for a file that is not a whole one.

    Raises:
        FileNotFoundError: if there is no such file.
        ValueError: for a file that is not a complete `.keras` archive.
    """
    import keras

    path = check_file(name, path, (".keras",))
    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"{path} is not a .keras model: the file is not a zip archive (truncated "
            "or another format)."
        )
    try:
        with zipfile.ZipFile(path) as archive:
            members = set(archive.namelist())
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise ValueError(f"{path} is not a complete .keras archive: {error}") from None
    if bad is not None or "config.json" not in members:
        raise ValueError(
            f"{path} is not a complete .keras archive "
            f"({'corrupt member ' + bad if bad else 'no config.json'})."
        )
    return keras.saving.load_model(path)


def read_flatbuffer(tflite, name="tflite"):
    """Returns the bytes of a `.tflite` model, verified: a ValueError otherwise.

    Args:
        tflite: Flatbuffer bytes, or the path of a `.tflite` file.
        name: Argument name, for messages.

    Raises:
        TypeError: for something that is neither bytes nor a path.
        FileNotFoundError: for a path that does not exist.
        ValueError: for data that is not a valid TFLite flatbuffer (checked
            by LiteRT's flatbuffer verifier, so a truncated or corrupted file
            is refused before anything reads it).
    """
    if isinstance(tflite, (bytes, bytearray, memoryview)):
        data, where = bytes(tflite), f"{name} ({len(tflite)} bytes)"
    elif isinstance(tflite, (str, os.PathLike)):
        path = check_file(name, tflite, ("",))
        with open(path, "rb") as f:
            data = f.read()
        where = path
    else:
        raise TypeError(
            f"{name} must be the flatbuffer bytes or a .tflite path. "
            f"Received: {name}={tflite!r} of type {type(tflite).__name__}"
        )
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ValueError(
            f"{where} is not a TFLite model (missing the 'TFL3' identifier). "
            f"It starts with {bytes(data[:8])!r}"
        )
    from ai_edge_litert.interpreter import Interpreter

    try:
        Interpreter(model_content=data)
    except (ValueError, RuntimeError) as error:
        raise ValueError(f"{where} is not a valid TFLite model: {error}") from None
    return data

"""Checks of the files tfcompress reads and writes: `.keras`, `.npy` / `.npz`, `.tflite`.

Re-exported by `tfcompress._validate`, the one place boundary checks are
imported from. A file that is missing, truncated, of another format or
corrupted fails here with a message naming it, never deep inside Keras,
numpy or LiteRT.
"""

import hashlib
import os
import zipfile

import numpy as np


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


def check_output_path(name, path):
    """Returns `path` as a str; raises unless a file can be written there.

    Checked before long work (a conversion) so it does not fail at the end.

    Raises:
        TypeError: for something that is not a path.
        ValueError: for an existing directory, or a parent that is a file.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a file path or None. Received: {name}={path!r}")
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ValueError(f"{name} must be a file path, not a directory. Received: {name}={path!r}")
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ValueError(f"{name} cannot be created under the file {parent!r}. Received: {name}={path!r}")
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
    try:
        return keras.saving.load_model(path)
    except Exception as error:  # noqa: BLE001 - whatever Keras meets inside the archive
        raise ValueError(
            f"{path} could not be loaded as a Keras model: {type(error).__name__}: "
            f"{_first_line(error)}"
        ) from error


def load_npy(path, name="calibration"):
    """Loads a `.npy` array or the arrays of a `.npz` file (as a dict), checked.

    Raises:
        FileNotFoundError: if there is no such file.
        ValueError: for a file numpy cannot read as plain arrays (pickled
            objects are refused).
    """
    path = check_file(name, path, (".npy", ".npz"))
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded:
                return {key: loaded[key] for key in loaded.files}
        return loaded
    except Exception as error:  # noqa: BLE001 - zip, pickle and header errors alike
        raise ValueError(
            f"{path} is not a readable numpy file ({type(error).__name__}: {_first_line(error)})."
        ) from None


def read_flatbuffer(tflite, name="tflite"):
    """Returns the bytes of a `.tflite` model, checked: a ValueError otherwise.

    Args:
        tflite: Flatbuffer bytes, or the path of a `.tflite` file.
        name: Argument name, for messages.

    Raises:
        TypeError: for something that is neither bytes nor a path.
        FileNotFoundError: for a path that does not exist.
        ValueError: for data that is not a valid TFLite model: a truncated or
            corrupted file is refused before anything reads it (see
            `tfcompress._flatbuffer_check.check_model`), then LiteRT's own flatbuffer
            verifier runs.

    Example:

    >>> read_flatbuffer(b"\\x1c\\x00\\x00\\x00TFL3" + bytes(8))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: tflite (16 bytes) is not a valid TFLite model: truncated or corrupted ...
    """
    return load_interpreter(tflite, name)[1]


def load_interpreter(tflite, name="tflite", num_threads=None):
    """A LiteRT `Interpreter` for a checked `.tflite` (see `read_flatbuffer`), and its bytes.

    Returns:
        `(interpreter, data, where)`: tensors are not allocated yet; `where`
        names the model in messages (its path, or `name` and its size).
    """
    from tfcompress import _flatbuffer_check
    from tfcompress._validate import check_int

    if num_threads is not None:
        num_threads = check_int("num_threads", num_threads, minimum=1)
    data, where = _flatbuffer_bytes(tflite, name)
    digest = hashlib.blake2b(data, digest_size=16).digest()
    try:
        if digest not in _CHECKED:
            _flatbuffer_check.check_model(data)
    except _flatbuffer_check.CorruptModel as error:
        reason = str(error)
        if reason.startswith("not a TFLite model"):
            raise ValueError(f"{where} is {reason}") from None
        raise ValueError(f"{where} is not a valid TFLite model: {reason}") from None
    from ai_edge_litert.interpreter import Interpreter

    try:
        interpreter = Interpreter(model_content=data, num_threads=num_threads)
    except (ValueError, RuntimeError) as error:
        raise ValueError(f"{where} is not a valid TFLite model: {_first_line(error)}") from None
    _CHECKED[digest] = None
    while len(_CHECKED) > 64:
        del _CHECKED[next(iter(_CHECKED))]
    return interpreter, data, where


# Digests of the last files that passed the check (it takes up to ~0.2 s on a
# large model, and predict / evaluate / benchmark often see one file again).
_CHECKED = {}


def _flatbuffer_bytes(tflite, name):
    if isinstance(tflite, (bytes, bytearray, memoryview)):
        data = bytes(tflite)
        return data, f"{name} ({len(data)} bytes)"
    if isinstance(tflite, (str, os.PathLike)):
        path = check_file(name, tflite, ("",))
        with open(path, "rb") as f:
            return f.read(), path
    raise TypeError(
        f"{name} must be the flatbuffer bytes or a .tflite path. "
        f"Received: {name}={tflite!r} of type {type(tflite).__name__}"
    )


def _first_line(error):
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__



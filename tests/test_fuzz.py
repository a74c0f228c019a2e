"""Fuzzing the boundary: random arrays and corrupted files never crash nor pass unnoticed.

Corrupted `.tflite` files (truncated, bit-flipped, bytes and words overwritten)
go through `summarize`, `predict` and `tfcompress inspect` in a forked child,
so a segfault fails the test and names the case instead of killing pytest.
Random arrays (shapes, dtypes, NaN / inf) go through `predict`, `evaluate` and
`convert`'s calibration. Every call must return a well-formed result or raise
ValueError / TypeError with a message. The number of cases is bounded (set
TFCOMPRESS_FUZZ_CASES for a longer run, TFCOMPRESS_FUZZ_SEED for other
corruptions); the seeds are fixed.
"""

import contextlib
import gc
import io
import json
import os
import signal

import keras
import numpy as np
import pytest

from tfcompress import cli, lite, report

CASES = int(os.environ.get("TFCOMPRESS_FUZZ_CASES", "120"))
SEED = int(os.environ.get("TFCOMPRESS_FUZZ_SEED", "11"))
L = keras.layers


@pytest.fixture(scope="module")
def corpus():
    """`{name: (flatbuffer, inputs)}`: a small CNN (float, dynamic-range, int8), an
    LSTM (a fused op with state, float and int8) and a two-input two-output model
    (int32 token ids, int8); and the CNN with its inputs."""
    rng = np.random.default_rng(0)
    keras.utils.set_random_seed(3)
    cnn = keras.Sequential(
        [
            keras.Input((6, 6, 1)),
            L.Conv2D(4, 3, activation="relu"),
            L.DepthwiseConv2D(2),
            L.Flatten(),
            L.Dense(10, activation="softmax"),
        ]
    )
    x = rng.random((16, 6, 6, 1)).astype("float32")
    steps = keras.Input((5, 3))
    lstm = keras.Model(steps, L.Dense(2)(L.LSTM(4)(steps)))
    sequences = rng.standard_normal((16, 5, 3)).astype("float32")
    ids, feats = keras.Input((4,), dtype="int32", name="ids"), keras.Input((3,), name="feats")
    hidden = L.Concatenate()([L.Flatten()(L.Embedding(9, 2)(ids)), feats])
    two = keras.Model([ids, feats], [L.Dense(3)(hidden), L.Dense(1, activation="sigmoid")(hidden)])
    pair = [rng.integers(0, 9, (16, 4)), rng.random((16, 3)).astype("float32")]
    files = {
        "cnn float": (lite.convert(cnn), x),
        "cnn dynamic": (lite.convert(cnn, "dynamic"), x),
        "cnn int8": (lite.convert(cnn, "int8", representative_data=x), x),
        "lstm float": (lite.convert(lstm), sequences),
        "lstm int8": (lite.convert(lstm, "int8", representative_data=sequences), sequences),
        "two inputs int8": (lite.convert(two, "int8", representative_data=pair), pair),
    }
    return cnn, files, x


def mutate(data, rng, kind):
    """One corruption of `data`: truncated, bits flipped, bytes or a word overwritten."""
    broken = bytearray(data)
    if kind == "truncate":
        return bytes(broken[: int(rng.integers(0, len(data)))])
    if kind == "flip":
        for _ in range(int(rng.integers(1, 4))):
            bit = int(rng.integers(0, 8 * len(data)))
            broken[bit // 8] ^= 1 << (bit % 8)
    elif kind == "bytes":
        for _ in range(int(rng.integers(1, 4))):
            broken[int(rng.integers(0, len(data)))] = int(rng.integers(0, 256))
    else:  # a 4-byte word set to a value offsets and counts do not expect
        at = int(rng.integers(0, len(data) - 4)) & ~3
        value = int(rng.choice([0, 1, -1, 2**31 - 1, -(2**31), len(data), rng.integers(-999, 999)]))
        broken[at : at + 4] = np.int32(value).tobytes()
    return bytes(broken)


KINDS = ("truncate", "flip", "bytes", "word")


def _file_cases(files, folder, progress, results):
    """Runs in the child: every case through summarize, predict and inspect."""
    rng = np.random.default_rng(SEED)
    unexpected, outcomes = [], {"refused": 0, "accepted": 0}
    path = os.path.join(folder, "case.tflite")
    for case in range(CASES):
        name = sorted(files)[case % len(files)]
        kind = KINDS[case % len(KINDS)]
        data, x = mutate(files[name][0], rng, kind), files[name][1]
        with open(progress, "w") as f:
            f.write(f"case {case}: {kind} of the {name} file")
        with open(path, "wb") as f:
            f.write(data)
        for step, call in (
            ("summarize", lambda: report.summarize(data)),
            ("predict", lambda: lite.predict(data, _first(x, 3))),
            ("inspect", lambda: _inspect(path)),
        ):
            try:
                result = call()
            except (ValueError, TypeError) as error:
                outcomes["refused"] += 1
                if not str(error).strip():
                    unexpected.append(f"case {case} {step}: {type(error).__name__} without a message")
                continue
            except Exception as error:  # noqa: BLE001 - what the test is looking for
                unexpected.append(f"case {case} ({kind} of {name}) {step}: {type(error).__name__}: {error}")
                continue
            outcomes["accepted"] += 1
            # A corrupted weight may change the answer (nothing can tell), but
            # every output must still have one row per example.
            if step == "predict" and any(len(out) != 3 for out in _outputs(result)):
                unexpected.append(f"case {case} predict: shapes {[o.shape for o in _outputs(result)]}")
    with open(results, "w") as f:
        json.dump({"unexpected": unexpected, **outcomes}, f)


def _first(x, n):
    return [a[:n] for a in x] if isinstance(x, list) else x[:n]


def _outputs(result):
    if isinstance(result, dict):
        return list(result.values())
    return result if isinstance(result, list) else [result]


def _inspect(path):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli.main(["inspect", path])
    if status == 2:
        lines = err.getvalue().strip().splitlines()
        if len(lines) != 1 or "Traceback" in err.getvalue():
            raise AssertionError(f"inspect printed {len(lines)} lines: {err.getvalue()[:300]}")
        raise ValueError(lines[0])
    if status != 0:
        raise AssertionError(f"inspect exited with {status}")
    return out.getvalue()


def test_corrupted_files_are_refused_or_read_never_crash(corpus, tmp_path):
    _, files, _ = corpus
    progress, results = str(tmp_path / "progress"), str(tmp_path / "results.json")
    # The child must not run finalizers of TensorFlow objects the parent made
    # (its runtime threads do not survive fork): the garbage collector leaves
    # the parent's objects alone and stays off in the child.
    gc.collect()
    gc.freeze()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        gc.disable()
        code = 1
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            _file_cases(files, str(tmp_path), progress, results)
            code = 0
        finally:
            os._exit(code)
    gc.unfreeze()
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        with open(progress) as f:
            where = f.read()
        pytest.fail(f"{where} killed the process with {signal.Signals(os.WTERMSIG(status)).name}")
    assert os.WEXITSTATUS(status) == 0, "the fuzzing child failed before its report"
    with open(results) as f:
        outcome = json.load(f)
    assert outcome["unexpected"] == [], "\n".join(outcome["unexpected"])
    # Most corruptions are caught; some (inside weight data, names) cannot be.
    assert outcome["refused"] > outcome["accepted"] / 4
    assert outcome["refused"] + outcome["accepted"] == 3 * CASES


DTYPES = ("float32", "float64", "float16", "int32", "int8", "uint8", "bool", "complex64", "U3", "object")


def random_array(rng, shape_hint):
    """An array that is sometimes right, mostly wrong in shape, dtype or values."""
    shape = list(shape_hint)
    roll = rng.random()
    if roll < 0.3:  # another rank
        shape = [int(d) for d in rng.integers(0, 7, int(rng.integers(0, 5)))]
    elif roll < 0.5:  # one wrong dimension
        shape[int(rng.integers(0, len(shape)))] = int(rng.integers(0, 9))
    dtype = DTYPES[int(rng.integers(0, len(DTYPES)))] if rng.random() < 0.4 else "float32"
    values = rng.standard_normal(shape) * 3
    if dtype in ("U3", "object"):
        return values.astype(dtype)
    array = values.astype(dtype)
    if array.dtype.kind in "fc" and array.size and rng.random() < 0.3:
        array.flat[int(rng.integers(0, array.size))] = rng.choice([np.nan, np.inf, -np.inf])
    return array


def test_random_arrays_through_predict_and_evaluate(corpus):
    _, files, _ = corpus
    rng = np.random.default_rng(5)
    outcomes = {"refused": 0, "accepted": 0}
    for case in range(CASES):
        x = random_array(rng, (int(rng.integers(1, 6)), 6, 6, 1))
        y = random_array(rng, (len(x) if np.ndim(x) else 1,))
        flatbuffer = files[("cnn float", "cnn dynamic", "cnn int8")[case % 3]][0]
        for call in (lambda: lite.predict(flatbuffer, x), lambda: lite.evaluate(flatbuffer, x, y)):
            try:
                result = call()
            except (ValueError, TypeError) as error:
                assert str(error).strip(), f"case {case}: an error without a message"
                outcomes["refused"] += 1
                continue
            outcomes["accepted"] += 1
            if isinstance(result, dict):
                assert 0.0 <= result["accuracy"] <= 1.0 and result["num_examples"] == len(x)
            else:
                assert result.shape == (len(x), 10) and np.all(np.isfinite(result)), f"case {case}"
    assert outcomes["refused"] > 0 and outcomes["accepted"] > 0


def test_random_calibration_data_is_refused_before_the_converter(corpus):
    model, _, _ = corpus
    rng = np.random.default_rng(8)
    converted = 0
    for case in range(CASES):
        data = random_array(rng, (int(rng.integers(1, 4)), 6, 6, 1))
        valid = (
            data.shape[1:] == (6, 6, 1)
            and len(data) > 0
            and data.dtype.kind in "biuf"
            and (data.dtype.kind != "f" or np.all(np.isfinite(data)))
        )
        if valid:
            if converted >= 1:  # a real conversion takes seconds: one is enough
                continue
            converted += 1
        try:
            lite.convert(model, "int8", representative_data=data)
        except (ValueError, TypeError) as error:
            assert str(error).strip(), f"case {case}: an error without a message"
    assert converted == 1


def test_corrupted_keras_files_through_inspect_and_convert(corpus, tmp_path):
    """Truncated and bit-flipped `.keras` archives: status 0 or one line and status 2.

    Run in this process: the zip layer (sizes, CRCs) refuses nearly every
    corruption before Keras reads the archive, and what it accepts is a
    whole, valid model.
    """
    model, _, x = corpus
    path = tmp_path / "model.keras"
    model.save(path)
    good = path.read_bytes()
    rng = np.random.default_rng(SEED)
    statuses = []
    for case in range(max(CASES // 4, 8)):
        kind = KINDS[case % len(KINDS)]
        broken = tmp_path / f"case{case}.keras"
        broken.write_bytes(mutate(good, rng, kind))
        for argv in (["inspect", str(broken)], ["convert", str(broken), "-o", str(tmp_path / "out.tflite")]):
            err = io.StringIO()
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
                status = cli.main(argv)
            lines = err.getvalue().strip().splitlines()
            assert status in (0, 2), f"case {case} ({kind}) {argv[0]}: status {status}"
            if status == 2:
                assert len(lines) == 1 and "Traceback" not in err.getvalue(), err.getvalue()[:500]
            statuses.append(status)
    assert statuses.count(2) > len(statuses) / 2

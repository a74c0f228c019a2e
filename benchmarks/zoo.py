"""The model zoo table: which technique works on which architecture, tfcompress vs tfmot.

For every row of `tests/zoo_models.py` (each `keras.applications` family,
`weights=None`, small inputs; hand-built ViT, BERT-style, keyword spotter,
Keras-operation block, multi-input / multi-output, LSTM, GRU) and each of
prune -> strip -> convert, cluster -> strip and QAT -> int8 `.tflite`: whether
it works, the ops the int8 file still runs in float, the cosine of Keras QAT vs
LiteRT outputs, and the int8 vs float latency (LiteRT, 1 thread, batch 1,
measured side by side in this run). tfmot (0.8, through `tf_keras`) does the
same on the `keras.applications` rows and the ViT / keyword spotter in a
subprocess (`_tfmot_zoo.py`, the tfmot virtualenv's Python); its `.tflite`
files are measured here like ours. Random data and weights: only agreement
and latency figures mean anything. Then a ViT on the digits: float accuracy,
QAT int8 accuracy, Keras = TFLite top-1 agreement.

    python benchmarks/zoo.py [--rows vit,MobileNetV2] [--tfmot-python PATH | --no-tfmot | --tfmot-only]
                             [--no-digits] [--out zoo.md]

(`--tfmot-only` runs the tfmot side alone, e.g. in a second process next to a
`--no-tfmot` run of the same rows.)
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

import tfcompress  # noqa: E402  (first: loads TensorFlow quietly)
import keras  # noqa: E402
import numpy as np  # noqa: E402
import zoo_models as zoo  # noqa: E402
from tfcompress import lite  # noqa: E402

TFMOT_PYTHON = "/work/scratch/venv_tfmot/bin/python"
TFMOT_ROWS = ("vit", "keyword_spotter")  # hand-built rows rebuilt in tf_keras


def log(message):
    print(message, file=sys.stderr, flush=True)


def attempt(fn):
    """(result, None) or (None, short error message)."""
    try:
        return fn(), None
    except Exception as error:  # the table reports what failed
        log(traceback.format_exc(limit=3))
        return None, f"{type(error).__name__}: {str(error).splitlines()[0][:100]}"


def latency_ratio(float_flatbuffer, int8_flatbuffer, rounds=5):
    """(float ms, int8 ms): medians over alternating rounds of `lite.benchmark`."""
    times = {"float": [], "int8": []}
    for _ in range(rounds):
        for name, flatbuffer in (("float", float_flatbuffer), ("int8", int8_flatbuffer)):
            times[name].append(lite.benchmark(flatbuffer, num_threads=1, runs=30, warmup=5)["median_ms"])
    return float(np.median(times["float"])), float(np.median(times["int8"]))


def our_row(row):
    x = row.examples()
    result = {}
    pruned, error = attempt(lambda: zoo.check_pruning(row, x))
    result["prune"] = error or f"ok ({pruned['sparsity']:.0%} zeros)"
    clustered, error = attempt(lambda: zoo.check_clustering(row, x))
    result["cluster"] = error or f"ok ({clustered['distinct']} values)"
    qat, error = attempt(lambda: zoo.check_qat(row, x))
    if error:
        result["qat"] = error
        return result
    result["qat"] = "full int8" if not qat["float_ops"] else f"{len(qat['float_ops'])} float ops"
    # Every float op, the declared ones too (the test skips those), with the row's reason.
    floats = zoo.float_ops_and_tensors(qat["flatbuffer"])[0]
    result["float_ops"] = sorted(set(floats))
    if floats and not qat["float_ops"]:
        result["qat"] = f"int8, {len(floats)} float ops as declared ({'; '.join(row.float_ops.values())})"
    result["cosine"] = qat["cosine"]
    float_flatbuffer = lite.convert(row.build())
    result["float_ms"], result["int8_ms"] = latency_ratio(float_flatbuffer, qat["flatbuffer"])
    return result


def tfmot_rows(rows, python):
    """Runs `_tfmot_zoo.py` on the rows it can build; returns {row: result}."""
    names = [r for r in rows if r.name in TFMOT_ROWS or hasattr(keras.applications, r.name)]
    workdir = tempfile.mkdtemp(prefix="tfmot_zoo_")
    config = []
    for row in names:
        x = row.data(np.random.default_rng(0), 16)
        np.savez(os.path.join(workdir, f"{row.name}.npz"), x=x)
        config.append({"name": row.name, "size": int(x.shape[1])})
    with open(os.path.join(workdir, "config.json"), "w") as f:
        json.dump({"rows": config}, f)
    log(f"tfmot: {len(names)} rows in a subprocess ({workdir})")
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3")
    with open(os.path.join(workdir, "tfmot.log"), "w") as log_file:
        subprocess.run([python, os.path.join(HERE, "_tfmot_zoo.py"), workdir], env=env,
                       stderr=log_file, check=True)
    with open(os.path.join(workdir, "tfmot_zoo.json")) as f:
        raw = json.load(f)
    results = {}
    for row in names:
        entry = raw[row.name]
        result = {k: entry[k] for k in ("prune", "cluster", "qat")}
        if "int8_file" in entry:
            with open(entry["int8_file"], "rb") as f:
                flatbuffer = f.read()
            x = row.data(np.random.default_rng(0), 16)
            keras_out = np.load(os.path.join(workdir, f"{row.name}_keras.npy"))
            floats, _ = zoo.float_ops_and_tensors(flatbuffer)
            result["qat"] = "full int8" if not floats else f"{len(floats)} float ops"
            result["float_ops"] = sorted(set(floats))
            result["cosine"] = zoo.cosine(keras_out, lite.predict(flatbuffer, x))
            result["float_ms"], result["int8_ms"] = latency_ratio(lite.convert(row.build()), flatbuffer)
        results[row.name] = result
    return results, raw.get("versions", {})


def table(results):
    lines = [
        "| model | library | prune | cluster | QAT -> int8 .tflite | float ops left | Keras vs TFLite (cos) | int8 / float latency |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, by_library in results.items():
        for library, r in by_library.items():
            speed = "–"
            if "int8_ms" in r:
                speed = f"{r['float_ms'] / r['int8_ms']:.2f}x faster ({r['float_ms']:.2f} -> {r['int8_ms']:.2f} ms)"
            cos = f"{r['cosine']:.4f}" if "cosine" in r else "–"
            floats = ", ".join(r.get("float_ops", [])) or ("none" if "cosine" in r else "–")
            lines.append(
                f"| {name} | {library} | {_cell(r['prune'])} | {_cell(r['cluster'])} | "
                f"{_cell(r['qat'])} | {floats} | {cos} | {speed} |"
            )
    return "\n".join(lines)


def _cell(text):
    return text.replace("|", "/")


def digits_figures():
    from tfcompress.datasets import load_digits

    (x_train, y_train), (x_test, y_test) = load_digits()
    figures = zoo.digits_transformer(x_train, y_train, x_test, y_test)
    return (
        f"ViT on the digits (8x8, 4x4 patches, 2 blocks): float accuracy "
        f"{figures['float_accuracy']:.4f}, QAT Keras {figures['qat_accuracy']:.4f}, int8 .tflite "
        f"{figures['int8_accuracy']:.4f} ({figures['size_bytes'] / 1024:.0f} KB, float ops: "
        f"{figures['float_ops'] or 'none'}), Keras = TFLite top-1 on "
        f"{figures['top1_agreement']:.2%} of the test set."
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", help="comma-separated row names (default: all)")
    parser.add_argument("--tfmot-python", default=TFMOT_PYTHON)
    parser.add_argument("--no-tfmot", action="store_true")
    parser.add_argument("--tfmot-only", action="store_true", help="skip the tfcompress rows")
    parser.add_argument("--no-digits", action="store_true")
    parser.add_argument("--out", help="also write the markdown here")
    args = parser.parse_args()
    rows = zoo.zoo()
    if args.rows:
        wanted = args.rows.split(",")
        rows = [r for r in rows if r.name in wanted]
    if args.no_tfmot and args.tfmot_only:
        parser.error("--no-tfmot and --tfmot-only exclude each other")
    results = {row.name: {} for row in rows}
    for row in [] if args.tfmot_only else rows:
        start = time.time()
        log(f"tfcompress: {row.name} ...")
        results[row.name]["tfcompress"] = our_row(row)
        keras.backend.clear_session()
        log(f"tfcompress: {row.name} done in {time.time() - start:.0f} s: {results[row.name]['tfcompress']}")
    versions = {}
    if not args.no_tfmot:
        if os.path.exists(args.tfmot_python):
            theirs, versions = tfmot_rows(rows, args.tfmot_python)
            for name, result in theirs.items():
                results[name]["tfmot"] = result
        else:
            log(f"no tfmot Python at {args.tfmot_python}: tfmot rows skipped")
    report = [table(results), ""]
    if versions:
        report.append(f"tfmot {versions.get('tensorflow_model_optimization')} with tf_keras {versions.get('tf_keras')}.")
    if not args.no_digits:
        log("digits transformer ...")
        report.append(digits_figures())
    emit("\n".join(report), args.out)


def emit(text, out=None):
    """Prints the markdown `text`, and writes it to `out` too when given."""
    print(text)
    if out:
        with open(out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()

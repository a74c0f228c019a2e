"""Low-bit weights: 4-bit, ternary and binary QAT against int8 and post-training int4.

On the digits CNN (`tfcompress.demo.demo_cnn`, trained as the demo trains it)
and the mobile block of the tests (Conv-BN-ReLU6, depthwise, residual Add):

* float32, QAT int8, QAT 4-bit, ternary and binary QAT (first and last layers
  at 8 bits, the usual recipe), all exported with `tfcompress.lite.convert`;
* litert-quantizer's post-training int4 of the same float `.tflite`
  (`dynamic_wi4_afp32`: INT4 weights, float activations; and its static
  w4a8 recipe, int8 activations calibrated on 256 training images);
* on the digits CNN, pruning (the demo's per-layer sparsity) + 4-bit QAT,
  with and without clustering, against the README headline (prune + cluster
  + QAT int8: 44.6x the float .tflite once gzipped); then the Dense 256
  pruned to 97%, clustered, at 4 bits and at int8 (the control: what the
  bits bring at equal sparsity).

Reported: top-1 accuracy of the Keras model and of the `.tflite` (LiteRT),
Keras/TFLite top-1 agreement, `.tflite` bytes and gzip bytes, "float .tflite /
gzip", and the latency relative to the float `.tflite` of the same model
(medians over interleaved rounds, 1 thread, batch 1).

    python benchmarks/lowbit.py            # full run
    python benchmarks/lowbit.py --quick    # fewer epochs, a smoke test

Needs the `bench` extra (litert-quantizer). Writes `benchmarks/lowbit_results.md`.
"""

import argparse
import contextlib
import datetime
import io
import json
import os
import platform
import sys
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfcompress  # noqa: E402
from tfcompress import datasets, demo, lite  # noqa: E402

from _tflite_figures import tflite_figures  # noqa: E402
from compare import log, versions  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
from conftest import make_mobile_block  # noqa: E402

# README: prune + cluster + QAT int8 of the demo, float .tflite / gzipped .tflite.
HEADLINE_RATIO = 44.6
BATCH_SIZE = demo.BATCH_SIZE
accuracy = demo.keras_accuracy

# (weight_bits as a function of the first and last weighted layers, learning rate, epochs)
RECIPES = {
    "QAT int8": (lambda first, last: 8, 1e-4, 3),
    "QAT 4-bit": (lambda first, last: 4, 3e-4, 5),
    "QAT ternary (first, last 8-bit)": (lambda first, last: {first: 8, last: 8, None: 2}, 1e-3, 12),
    "QAT binary (first, last 8-bit)": (lambda first, last: {first: 8, last: 8, None: 1}, 1e-3, 12),
}
QUICK_EPOCHS = 1


def weighted_layer_names(model):
    """Names of the layers with a kernel, in order."""
    names = [layer.name for layer in model.layers if hasattr(layer, "kernel")]
    return names[0], names[-1]


def train_qat(model, weight_bits, learning_rate, epochs, x, y, preserve_sparsity=False):
    qat = tfcompress.quantize_model(
        model, preserve_sparsity=preserve_sparsity, weight_bits=weight_bits
    )
    demo.compile_classifier(qat, learning_rate)
    # Low-bit grids settle better when the step shrinks towards the end.
    schedule = keras.callbacks.LearningRateScheduler(
        lambda epoch: learning_rate * (0.5 ** (3 * epoch // max(epochs, 1)))
    )
    qat.fit(x, y, batch_size=BATCH_SIZE, epochs=epochs, verbose=0, callbacks=[schedule])
    return qat


def litert_quantizer_int4(float_tflite, x_calibration):
    """litert-quantizer's post-training int4 recipes applied to a float `.tflite`."""
    # It prints sizes and a calibration progress bar, and LiteRT warns about
    # the debugging option calibration uses: keep the benchmark's output readable.
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _litert_quantizer_int4(float_tflite, x_calibration)


def _litert_quantizer_int4(float_tflite, x_calibration):
    from ai_edge_litert.interpreter import Interpreter
    from litert_quantizer import qtyping, quantizer, recipe

    out = {}
    qt = quantizer.Quantizer(bytearray(float_tflite))
    qt.load_quantization_recipe(recipe.dynamic_wi4_afp32())
    out["PTQ int4 (litert-quantizer dynamic_wi4_afp32)"] = bytes(qt.quantize().quantized_model)

    runner = Interpreter(model_content=float_tflite).get_signature_runner("serving_default")
    input_name = next(iter(runner.get_input_details()))
    manager = recipe.recipe_manager.RecipeManager()
    manager.add_static_config(
        regex=".*",
        operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
        activation_num_bits=8,
        weight_num_bits=4,
    )
    qt = quantizer.Quantizer(bytearray(float_tflite))
    qt.load_quantization_recipe(manager.get_quantization_recipe())
    samples = [{input_name: x_calibration[i : i + 1]} for i in range(len(x_calibration))]
    calibration = qt.calibrate({"serving_default": samples})
    out["PTQ w4a8 (litert-quantizer static)"] = bytes(qt.quantize(calibration).quantized_model)
    return out


def run_model(label, float_model, data, args, extra=None):
    """Every variant of one float model: `(rows, files)`."""
    (x, y), (x_test, y_test) = data
    first, last = weighted_layer_names(float_model)
    models = {"float32": float_model}
    files = {"float32": lite.convert(float_model)}
    for name, (bits, learning_rate, epochs) in RECIPES.items():
        log(f"[{label}] {name}")
        keras.utils.set_random_seed(args.seed)
        epochs = QUICK_EPOCHS if args.quick else epochs
        models[name] = train_qat(float_model, bits(first, last), learning_rate, epochs, x, y)
        files[name] = lite.convert(models[name], "int8")
    log(f"[{label}] litert-quantizer post-training int4")
    files.update(litert_quantizer_int4(files["float32"], x[:256]))
    if extra is not None:
        more_models, more_files = extra(float_model, data, args)
        models.update(more_models)
        files.update(more_files)

    log(f"[{label}] evaluating and timing {len(files)} .tflite files")
    figures = tflite_figures(files, x_test, y_test, args.latency_rounds, args.latency_runs)
    base = figures["float32"]
    rows = []
    for name, flatbuffer in files.items():
        f = figures[name]
        keras_model = models.get(name)
        keras_acc = agree = None
        if keras_model is not None:
            keras_acc = accuracy(keras_model, x_test, y_test)
            keras_top1 = np.argmax(keras_model.predict(x_test, verbose=0, batch_size=256), -1)
            agree = float(np.mean(np.argmax(lite.predict(flatbuffer, x_test), -1) == keras_top1))
        rows.append(
            dict(
                model=label,
                variant=name,
                keras_acc=keras_acc,
                tflite_acc=f["acc"],
                agreement=agree,
                bytes=f["bytes"],
                gzip=f["gzip"],
                ratio=base["bytes"] / f["gzip"],
                latency_ratio=f["latency_ms"] / base["latency_ms"],
                latency_ms=f["latency_ms"],
            )
        )
    return rows, files


# Beyond the demo's per-layer sparsity: the Dense 256 (93% of the weights) at 97%.
SPARSER = {**demo.HEADLINE_SPARSITY, "conv2": 0.9, "dense": 0.97}


def kernel_sparsity(model):
    """Fraction of zeros over the kernels that ship."""
    kernels = [v for name, v, _ in tfcompress.report.keras_weights(model) if v.ndim >= 2]
    return sum(int(np.sum(k == 0)) for k in kernels) / sum(k.size for k in kernels)


def pruned_low_bit(float_model, data, args):
    """Digits CNN: pruning + 4-bit QAT, with and without clusters, and an int8 control."""
    (x, y), _ = data
    epochs = {"prune": 12, "cluster": 4, "qat": 5}
    if args.quick:
        epochs = {k: 1 for k in epochs}
    models, files = {}, {}

    def record(description, model):
        name = f"prune {kernel_sparsity(model):.0%} + {description}"
        models[name], files[name] = model, lite.convert(model, "int8")

    for sparsity, clusters, bits in (
        (demo.HEADLINE_SPARSITY, 0, 4),
        (demo.HEADLINE_SPARSITY, None, 4),
        (SPARSER, None, 4),
        (SPARSER, None, 8),
    ):
        what = f"{'cluster + ' if clusters is None else ''}QAT {'int8' if bits == 8 else '4-bit'}"
        log(f"[digits CNN] prune + {what} (demo pipeline)")
        keras.utils.set_random_seed(args.seed)
        model = demo.train_pipeline(
            float_model, x, y, epochs, sparsity, clusters, log=lambda message: None, verbose=0,
            weight_bits=bits,
        ).qat
        record(what, model)
    return models, files


def render(rows, float_accuracy):
    lines = [
        "| model | variant | Keras acc | TFLite acc | Keras/TFLite top-1 | .tflite bytes | "
        "gzip bytes | float .tflite / gzip | latency vs float |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    pct = lambda v: "-" if v is None else f"{100 * v:.1f}%"  # noqa: E731
    for r in rows:
        delta = r["tflite_acc"] - float_accuracy[r["model"]]
        lines.append(
            f"| {r['model']} | {r['variant']} | {pct(r['keras_acc'])} | {pct(r['tflite_acc'])} "
            f"({100 * delta:+.1f}) | {pct(r['agreement'])} | {r['bytes']:,} | {r['gzip']:,} | "
            f"{r['ratio']:.1f}x | {r['latency_ratio']:.2f}x |"
        )
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one epoch per stage (smoke test)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=os.path.join(HERE, "lowbit_results.md"))
    parser.add_argument("--json", help="also write every figure here")
    parser.add_argument("--only", choices=("digits", "mobile"), help="one model only")
    args = parser.parse_args()
    args.latency_rounds, args.latency_runs = (2, 50) if args.quick else (5, 200)
    started = time.perf_counter()
    data = datasets.load_digits()
    (x, y), (x_test, y_test) = data

    rows, float_accuracy = [], {}
    models = {
        "digits CNN": (demo.demo_cnn, demo.compile_classifier, 20, pruned_low_bit),
        "mobile block": (make_mobile_block, lambda m: demo.compile_classifier(m, 3e-3), 8, None),
    }
    for label, (make, compile_, epochs, extra) in models.items():
        if args.only and not label.startswith(args.only):
            continue
        log(f"[{label}] float ({epochs} epochs)")
        keras.utils.set_random_seed(args.seed)
        float_model = compile_(make())
        float_model.fit(x, y, batch_size=BATCH_SIZE, epochs=1 if args.quick else epochs, verbose=0)
        float_accuracy[label] = accuracy(float_model, x_test, y_test)
        model_rows, _ = run_model(label, float_model, data, args, extra)
        rows += model_rows

    table = render(rows, float_accuracy)
    elapsed = time.perf_counter() - started
    from importlib import metadata

    tools = f"{versions()}, litert-quantizer {metadata.version('litert-quantizer')}"
    text = f"""# Low-bit weights: results

`python benchmarks/lowbit.py{' --quick' if args.quick else ''}`, {datetime.date.today()}, seed
{args.seed}, {elapsed / 60:.1f} min ({platform.machine()}, {os.cpu_count()} CPUs, shared machine:
latency ratios are medians of interleaved rounds). {tools}.

TFLite accuracy in brackets: points against the float model. 540 test digits (1 image = 0.19
point). Headline to beat: prune + cluster + QAT int8, {HEADLINE_RATIO}x.

{table}
"""
    print(text)
    with open(args.output, "w") as f:
        f.write(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "float_accuracy": float_accuracy}, f, indent=2)


if __name__ == "__main__":
    main()

"""The bundled end-to-end job: every technique on scikit-learn's digits.

`tfcompress demo` (and `make demo`) trains the float CNN, then builds each
variant a user would ship, converts it to `.tflite`, runs it with LiteRT and
writes to the output directory:

* `model.tflite`: the smallest model within one point of the float one, found
  by `tfcompress.auto_compress` (per-layer pruning, clustering and weight
  bits, then QAT), and `recipe.json`, the per-layer recipe it chose;
* `report.md`: accuracy (Keras and TFLite), file size, gzip size and latency
  of every variant;
* `tradeoff.png`: accuracy against gzipped size;
* `variants/*.tflite`: the other models.
"""

import dataclasses
import gzip
import os
import time

import keras
import numpy as np

import tfcompress
from tfcompress import datasets, lite
from tfcompress.auto import pipeline

BATCH_SIZE = 32


@dataclasses.dataclass
class Variant:
    """One compressed model and its measured figures."""

    name: str
    keras_accuracy: float
    tflite_accuracy: float
    size_bytes: int
    gzip_bytes: int
    latency_ms: float
    flatbuffer: bytes = dataclasses.field(repr=False, default=b"")


def demo_cnn():
    """The demo model: Conv 32 - Conv 64 - MaxPool - Dense 256 - Dense 10."""
    return _cnn(32, 64, 256, name="digits_cnn")


def small_student():
    """A student with ~30x fewer weights than `demo_cnn`: Conv 8 - Conv 16 - Dense 32."""
    return _cnn(8, 16, 32, name="student")


def _cnn(conv1, conv2, dense, name):
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            layers.Conv2D(conv1, 3, padding="same", activation="relu", name="conv1"),
            layers.Conv2D(conv2, 3, padding="same", activation="relu", name="conv2"),
            layers.MaxPooling2D(2, name="pool"),
            layers.Flatten(name="flatten"),
            layers.Dense(dense, activation="relu", name="dense"),
            layers.Dense(10, name="logits"),
        ],
        name=name,
    )


# The demo's training recipe; the benchmarks reuse it, so every published
# figure comes from these numbers. Quick runs take about a third of the epochs.
EPOCHS = {"float": 20, "prune": 12, "cluster": 4, "qat": 3, "distill": 20}
LEARNING_RATES = {"float": 1e-3, "prune": 5e-4, "cluster": 3e-4, "qat": 1e-4, "distill": 3e-3}
DISTILL_ALPHA = 0.1
DISTILL_TEMPERATURE = 4.0
CALIBRATION_EXAMPLES = 300  # training images that calibrate post-training int8

# The hand-tuned recipe the demo used before `auto_compress` (the benchmarks
# compare the two). Sparsity per layer: Dense 256 holds 93% of the weights
# and tolerates 95%; the first conv has 288 weights and sees raw pixels, so it
# is pruned lightly. Overall the model ends about 94% sparse.
HEADLINE_SPARSITY = {"conv1": 0.5, "conv2": 0.85, "dense": 0.95, "logits": 0.8}
HEADLINE_CLUSTERS = {"conv1": 16, "conv2": 16, "dense": 8, "logits": 16}


# The demo's headline: `auto_compress` with a one-point budget on held-out
# training examples, and the pipeline runs its search may make.
AUTO_BUDGET = 0.01
AUTO_TRIALS = 4


def demo_epochs(quick=False):
    """Epochs of each stage: `EPOCHS`, or about a third of each for a smoke run.

    Example:

    >>> demo_epochs(quick=True)
    {'float': 7, 'prune': 4, 'cluster': 1, 'qat': 1, 'distill': 7}
    """
    scale = 0.34 if quick else 1.0
    return {stage: max(1, round(count * scale)) for stage, count in EPOCHS.items()}


def compile_classifier(model, learning_rate=LEARNING_RATES["float"], **compile_kwargs):
    """Adam + sparse crossentropy on logits + accuracy.

    Args:
        model: The model to compile (returned, for chaining).
        learning_rate: Adam's learning rate.
        **compile_kwargs: Other `keras.Model.compile` arguments
            (`jit_compile`, `steps_per_execution`, ...).
    """
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        **compile_kwargs,
    )
    return model


def keras_accuracy(model, x, y):
    """Top-1 accuracy of a Keras model that outputs logits (or probabilities).

    Args:
        model: A Keras model.
        x: Inputs.
        y: Integer class labels.

    Returns:
        The fraction of `x` whose highest output is the label, a float.
    """
    # Called eagerly: `predict` traces a function per model, and after a few
    # models TensorFlow logs a retracing warning the demo's reader should not see.
    logits = np.concatenate([
        keras.ops.convert_to_numpy(model(x[i : i + 256], training=False))
        for i in range(0, len(x), 256)
    ])
    return float(np.mean(np.argmax(logits, axis=-1) == y))


def gzip_size(data):
    """Bytes of `data` gzipped at level 9: what a `.tflite` weighs in an APK."""
    return len(gzip.compress(data, compresslevel=9, mtime=0))


def train_float(x, y, epochs, verbose=2):
    """Trains a fresh `demo_cnn()` on `(x, y)` and returns it (compiled)."""
    return _fit(demo_cnn(), LEARNING_RATES["float"], x, y, epochs, verbose)


def make_distiller(teacher, student, learning_rate=LEARNING_RATES["distill"], **compile_kwargs):
    """A compiled `tfcompress.Distiller` with the demo's alpha and temperature.

    Args:
        teacher: The trained model to learn from (frozen).
        student: The model that trains.
        learning_rate: Adam's learning rate for the student.
        **compile_kwargs: Other `Distiller.compile` arguments.
    """
    distiller = tfcompress.Distiller(student=student, teacher=teacher)
    distiller.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        metrics=["accuracy"],
        alpha=DISTILL_ALPHA,
        temperature=DISTILL_TEMPERATURE,
        **compile_kwargs,
    )
    return distiller


def ramp_schedule(final_sparsity, prune_epochs, num_examples):
    """`auto.pipeline.ramp_schedule` for `num_examples` in batches of `BATCH_SIZE`."""
    steps_per_epoch = int(np.ceil(num_examples / BATCH_SIZE))
    return pipeline.ramp_schedule(final_sparsity, prune_epochs, steps_per_epoch)


def train_pipeline(
    float_model,
    x,
    y,
    epochs,
    sparsity=None,
    clusters=None,
    learning_rates=None,
    log=print,
    verbose=2,
    weight_bits=8,
):
    """`auto.pipeline.train_pipeline` with the demo's batch size and the headline recipe by default.

    Args:
        float_model: The trained `demo_cnn()`.
        x, y: Training data.
        epochs: Dict with "prune", "cluster" and "qat" epoch counts (as
            `demo_epochs()`; other keys are ignored).
        sparsity: Final sparsity, `{layer_name: fraction}` or one fraction for
            every prunable layer; 0 skips pruning. Defaults to
            `HEADLINE_SPARSITY`.
        clusters: Clusters per kernel, `{layer_name: int}` or one int for every
            clusterable layer; 0 skips clustering. Defaults to
            `HEADLINE_CLUSTERS`.
        learning_rates: Adam learning rates `{"prune", "cluster", "qat"}`
            overriding `LEARNING_RATES`.
        log: Progress printer.
        verbose: `fit` verbosity.
        weight_bits: Weight bits of the QAT stage (`quantize_model`).

    Returns:
        The trained models, a `tfcompress.auto.pipeline.PipelineModels`.
    """
    return pipeline.train_pipeline(
        float_model, x, y, epochs,
        HEADLINE_SPARSITY if sparsity is None else sparsity,
        HEADLINE_CLUSTERS if clusters is None else clusters,
        batch_size=BATCH_SIZE,
        learning_rates={**LEARNING_RATES, **(learning_rates or {})},
        weight_bits=weight_bits, log=log, verbose=verbose,
    )


def _fit(model, learning_rate, x, y, epochs, verbose):
    compile_classifier(model, learning_rate)
    model.fit(x, y, batch_size=BATCH_SIZE, epochs=epochs, verbose=verbose)
    return model


# The type `train_pipeline` returns, for the benchmarks that name it.
PipelineModels = pipeline.PipelineModels


def run(out_dir="demo_out", quick=False, seed=0, log=print):
    """Runs the demo and writes its outputs to `out_dir`.

    Args:
        out_dir: Output directory (created if missing).
        quick: Fewer epochs, for a smoke run (figures are then not meaningful).
        seed: Random seed.
        log: Progress printer.

    Returns:
        The list of `Variant`s measured.
    """
    started = time.perf_counter()
    keras.utils.set_random_seed(seed)
    os.makedirs(os.path.join(out_dir, "variants"), exist_ok=True)
    (x, y), (x_test, y_test) = datasets.load_digits()
    epochs = demo_epochs(quick)
    runs = 30 if quick else 200
    variants = []

    def measure(name, model, flatbuffer):
        latency = lite.benchmark(flatbuffer, num_threads=1, runs=runs)["median_ms"]
        variant = Variant(
            name,
            keras_accuracy(model, x_test, y_test),
            lite.evaluate(flatbuffer, x_test, y_test)["accuracy"],
            len(flatbuffer),
            gzip_size(flatbuffer),
            latency,
            flatbuffer,
        )
        variants.append(variant)
        with open(os.path.join(out_dir, "variants", _slug(name) + ".tflite"), "wb") as f:
            f.write(flatbuffer)
        log(
            f"  -> {name}: Keras {variant.keras_accuracy:.2%}, TFLite "
            f"{variant.tflite_accuracy:.2%}, {len(flatbuffer):,} B, gzip "
            f"{variant.gzip_bytes:,} B, {latency:.3f} ms"
        )

    log(f"[1/6] float CNN on {len(x)} digits ({epochs['float']} epochs)")
    float_model = train_float(x, y, epochs["float"])
    measure("float32", float_model, lite.convert(float_model))

    log(f"[2/6] post-training int8 (calibrated on {CALIBRATION_EXAMPLES} training images)")
    calibration = x[:CALIBRATION_EXAMPLES]
    ptq = lite.convert(float_model, "int8", representative_data=calibration)
    measure("PTQ int8", float_model, ptq)

    log("[3/6] QAT int8")
    qat = train_pipeline(float_model, x, y, epochs, sparsity=0, clusters=0, log=log).qat
    measure("QAT int8", qat, lite.convert(qat, "int8"))

    log("[4/6] prune 80% + QAT int8")
    pruned_qat = train_pipeline(float_model, x, y, epochs, sparsity=0.8, clusters=0, log=log).qat
    measure("prune 80% + QAT int8", pruned_qat, lite.convert(pruned_qat, "int8"))

    log(f"[5/6] auto_compress: the smallest int8 .tflite within {AUTO_BUDGET:.0%} of the float one")
    # The budget is checked on examples held out of training (not the test
    # split the table reports), so the search cannot tune on the test set.
    held_out = len(x) // 5
    result = tfcompress.auto_compress(
        float_model, x[:-held_out], y[:-held_out], (x[-held_out:], y[-held_out:]),
        max_accuracy_drop=AUTO_BUDGET, seed=seed, batch_size=BATCH_SIZE,
        # The demo's stages (it prunes no channels: objective="size").
        epochs={stage: epochs[stage] for stage in pipeline.STAGES if stage in epochs},
        learning_rates={stage: LEARNING_RATES[stage] for stage in pipeline.STAGES if stage in epochs},
        max_trials=2 if quick else AUTO_TRIALS,
        verbose=1,
    )
    log(f"  recipe found:\n{_indent(result.recipe_json())}")
    with open(os.path.join(out_dir, "model.tflite"), "wb") as f:
        f.write(result.tflite)
    with open(os.path.join(out_dir, "recipe.json"), "w") as f:
        f.write(result.recipe_json() + "\n")
    measure("auto_compress (1-pt budget) int8", result.model, result.tflite)

    log(f"[6/6] distilled small student ({epochs['distill']} epochs) + PTQ int8")
    student = small_student()
    distiller = make_distiller(float_model, student)
    distiller.fit(x, y, batch_size=BATCH_SIZE, epochs=epochs["distill"], verbose=2)
    measure(
        "distilled student + PTQ int8",
        student,
        lite.convert(student, "int8", representative_data=calibration),
    )

    elapsed = time.perf_counter() - started
    write_report(variants, os.path.join(out_dir, "report.md"), elapsed, quick)
    plot_tradeoff(variants, os.path.join(out_dir, "tradeoff.png"))
    log(f"\n{render_table(variants)}\n")
    log(f"wrote {out_dir}/model.tflite, recipe.json, report.md, tradeoff.png in {elapsed:.0f} s")
    return variants


def _indent(text):
    return "\n".join("    " + line for line in text.splitlines())


def render_table(variants):
    """Markdown table of the variants.

    The ratio is the float32 `.tflite` (the first variant) over the variant's
    gzipped `.tflite`: what shrinks in an APK, which stores assets compressed.
    """
    base = variants[0]
    lines = [
        "| variant | Keras acc | TFLite acc | .tflite | gzip | float .tflite / gzip | latency (1 thread) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for v in variants:
        lines.append(
            f"| {v.name} | {v.keras_accuracy:.2%} | {v.tflite_accuracy:.2%} | "
            f"{v.size_bytes / 1024:.1f} KiB | {v.gzip_bytes / 1024:.1f} KiB | "
            f"{base.size_bytes / v.gzip_bytes:.1f}x | {v.latency_ms:.3f} ms |"
        )
    return "\n".join(lines)


def write_report(variants, path, elapsed, quick=False):
    """Writes `report.md`: the table plus how it was made."""
    note = " (--quick: few epochs, figures not meaningful)" if quick else ""
    with open(path, "w") as f:
        f.write("# tfcompress demo: digits CNN\n\n")
        f.write(
            f"Made by `tfcompress demo`{note} in {elapsed:.0f} s with tfcompress "
            f"{tfcompress.__version__}, Keras {keras.__version__}. Test split: 540 "
            "of scikit-learn's 1,797 8x8 digits. gzip -9 sizes; latency is the "
            "median of single-image inferences with LiteRT on this CPU.\n\n"
        )
        f.write(render_table(variants) + "\n")


def plot_tradeoff(variants, path):
    """Accuracy (TFLite) against gzipped size, one labelled point per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, v in enumerate(variants):
        point = (v.gzip_bytes / 1024, 100 * v.tflite_accuracy)
        ax.scatter(*point, s=40)
        # Alternate labels above and below so neighbours of equal accuracy stay legible.
        ax.annotate(v.name, point, textcoords="offset points", xytext=(6, 5 if i % 2 == 0 else -12),
                    fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("gzipped .tflite size (KiB, log scale)")
    ax.set_ylabel("TFLite test accuracy (%)")
    ax.set_title("tfcompress on digits: accuracy vs size")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _slug(name):
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")

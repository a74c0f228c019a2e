"""The bundled end-to-end job: every technique on scikit-learn's digits.

`tfcompress demo` (and `make demo`) trains the float CNN, then builds each
variant a user would ship, converts it to `.tflite`, runs it with LiteRT and
writes to the output directory:

* `model.tflite`: the smallest accurate model (pruned + clustered + QAT int8);
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
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            layers.Conv2D(32, 3, padding="same", activation="relu", name="conv1"),
            layers.Conv2D(64, 3, padding="same", activation="relu", name="conv2"),
            layers.MaxPooling2D(2, name="pool"),
            layers.Flatten(name="flatten"),
            layers.Dense(256, activation="relu", name="dense"),
            layers.Dense(10, name="logits"),
        ],
        name="digits_cnn",
    )


def small_student():
    """A student with ~20x fewer weights than `demo_cnn`."""
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            layers.Conv2D(8, 3, padding="same", activation="relu"),
            layers.Conv2D(16, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(2),
            layers.Flatten(),
            layers.Dense(32, activation="relu"),
            layers.Dense(10),
        ],
        name="student",
    )


def compile_classifier(model, learning_rate=1e-3):
    """Adam + sparse crossentropy on logits + accuracy."""
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


# Sparsity per layer: Dense 256 holds 93% of the weights and tolerates 95%;
# the first conv has 288 weights and sees raw pixels, so it is pruned lightly.
# Overall the model ends about 94% sparse.
HEADLINE_SPARSITY = {"conv1": 0.5, "conv2": 0.85, "dense": 0.95, "logits": 0.8}
HEADLINE_CLUSTERS = {"conv1": 16, "conv2": 16, "dense": 8, "logits": 16}


def ramp_schedule(final_sparsity, prune_epochs, num_examples):
    """`auto.pipeline.ramp_schedule` for `num_examples` in batches of `BATCH_SIZE`."""
    steps_per_epoch = int(np.ceil(num_examples / BATCH_SIZE))
    return pipeline.ramp_schedule(final_sparsity, prune_epochs, steps_per_epoch)


def train_pipeline(float_model, x, y, epochs, sparsity=None, clusters=None, log=print, verbose=2):
    """`auto.pipeline.train_pipeline` with the headline recipe by default.

    Args:
        float_model: The trained `demo_cnn()`.
        x, y: Training data.
        epochs: Dict with "prune", "cluster" and "qat" epoch counts.
        sparsity: `{layer_name: final sparsity}`; defaults to `HEADLINE_SPARSITY`.
        clusters: Clusters per kernel, an int or `{layer_name: int}`; defaults
            to `HEADLINE_CLUSTERS`.
        log: Progress printer.
        verbose: `fit` verbosity.

    Returns:
        `(qat_model, stages)`, see `tfcompress.auto.pipeline.train_pipeline`.
    """
    return pipeline.train_pipeline(
        float_model, x, y, epochs,
        HEADLINE_SPARSITY if sparsity is None else sparsity,
        HEADLINE_CLUSTERS if clusters is None else clusters,
        batch_size=BATCH_SIZE, log=log, verbose=verbose,
    )


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
    scale = 0.34 if quick else 1.0
    epochs = {
        k: max(1, round(v * scale))
        for k, v in {"float": 20, "qat": 3, "prune": 12, "cluster": 4, "distill": 20}.items()
    }
    runs = 30 if quick else 200
    variants = []

    def measure(name, model, flatbuffer):
        keras_accuracy = _accuracy(model, x_test, y_test)
        tflite_accuracy = lite.evaluate(flatbuffer, x_test, y_test)["accuracy"]
        latency = lite.benchmark(flatbuffer, num_threads=1, runs=runs)["median_ms"]
        variant = Variant(
            name,
            keras_accuracy,
            tflite_accuracy,
            len(flatbuffer),
            len(gzip.compress(flatbuffer, 9)),
            latency,
            flatbuffer,
        )
        variants.append(variant)
        with open(os.path.join(out_dir, "variants", _slug(name) + ".tflite"), "wb") as f:
            f.write(flatbuffer)
        log(
            f"  -> {name}: Keras {keras_accuracy:.2%}, TFLite {tflite_accuracy:.2%}, "
            f"{len(flatbuffer):,} B, gzip {variant.gzip_bytes:,} B, {latency:.3f} ms"
        )

    log(f"[1/6] float CNN on {len(x)} digits ({epochs['float']} epochs)")
    float_model = compile_classifier(demo_cnn())
    float_model.fit(x, y, batch_size=BATCH_SIZE, epochs=epochs["float"], verbose=2)
    measure("float32", float_model, lite.convert(float_model))

    log("[2/6] post-training int8 (calibrated on 300 training images)")
    measure("PTQ int8", float_model, lite.convert(float_model, "int8", representative_data=x[:300]))

    log(f"[3/6] QAT int8 ({epochs['qat']} epochs)")
    qat = compile_classifier(tfcompress.quantize_model(float_model), learning_rate=1e-4)
    qat.fit(x, y, batch_size=BATCH_SIZE, epochs=epochs["qat"], verbose=2)
    measure("QAT int8", qat, lite.convert(qat, "int8"))

    log(f"[4/6] prune 80% + QAT int8 ({epochs['prune']} + {epochs['qat']} epochs)")
    schedule = ramp_schedule(0.8, epochs["prune"], len(x))
    pruned = compile_classifier(tfcompress.prune_low_magnitude(float_model, schedule), 5e-4)
    pruned.fit(x, y, batch_size=BATCH_SIZE, epochs=epochs["prune"], verbose=2)
    pruned_qat = compile_classifier(
        tfcompress.quantize_model(tfcompress.strip_pruning(pruned), preserve_sparsity=True),
        learning_rate=1e-4,
    )
    pruned_qat.fit(x, y, batch_size=BATCH_SIZE, epochs=epochs["qat"], verbose=2)
    measure("prune 80% + QAT int8", pruned_qat, lite.convert(pruned_qat, "int8"))

    log("[5/6] prune ~90% + cluster + QAT int8")
    headline, _ = train_pipeline(float_model, x, y, epochs, log=log)
    headline_tflite = lite.convert(
        headline, "int8", output_path=os.path.join(out_dir, "model.tflite")
    )
    measure("prune 90% + cluster + QAT int8", headline, headline_tflite)

    log(f"[6/6] distilled small student ({epochs['distill']} epochs) + PTQ int8")
    student = small_student()
    distiller = tfcompress.Distiller(student=student, teacher=float_model)
    distiller.compile(
        optimizer=keras.optimizers.Adam(3e-3), metrics=["accuracy"], alpha=0.1, temperature=4.0
    )
    distiller.fit(x, y, batch_size=BATCH_SIZE, epochs=epochs["distill"], verbose=2)
    measure(
        "distilled student + PTQ int8",
        student,
        lite.convert(student, "int8", representative_data=x[:300]),
    )

    elapsed = time.perf_counter() - started
    write_report(variants, os.path.join(out_dir, "report.md"), elapsed, quick)
    plot_tradeoff(variants, os.path.join(out_dir, "tradeoff.png"))
    log(f"\n{render_table(variants)}\n")
    log(f"wrote {out_dir}/model.tflite, report.md, tradeoff.png in {elapsed:.0f} s")
    return variants


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


def _accuracy(model, x, y):
    logits = model.predict(x, batch_size=256, verbose=0)
    return float(np.mean(np.argmax(logits, axis=-1) == y))


def _slug(name):
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")

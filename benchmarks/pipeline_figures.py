"""The full compression pipeline on the digits CNN, with its figures.

float -> prune (sparsity allocated per layer, PolynomialDecay) -> cluster
(preserving sparsity, clusters per layer) -> QAT int8 (preserving sparsity and
clusters) -> int8 `.tflite`; then the compression report of the final file.

Run:  .venv/bin/python benchmarks/pipeline_figures.py [--out DIR] [--seed 0]

Prints a table (accuracy Keras / TFLite, file size, gzip size, ratio to the
float32 `.tflite`) and writes `pipeline_figures.json` plus the final `.tflite`
to `--out`.
"""

import argparse
import gzip
import json
import math
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfcompress  # noqa: E402
from tfcompress import datasets, lite  # noqa: E402
from tfcompress.quantization import quantize_model  # noqa: E402

BATCH = 32


def demo_cnn():
    """The demo CNN (names given so per-layer settings can refer to them)."""
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv1"),
            keras.layers.Conv2D(64, 3, padding="same", activation="relu", name="conv2"),
            keras.layers.MaxPooling2D(2, name="pool"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(256, activation="relu", name="dense"),
            keras.layers.Dense(10, name="logits"),
        ],
        name="digits_cnn",
    )


def compile_model(model, learning_rate):
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def keras_accuracy(model, x, y):
    return float(np.mean(np.argmax(model.predict(x, verbose=0, batch_size=256), -1) == y))


def gz(data):
    return len(gzip.compress(data, compresslevel=9, mtime=0))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/out")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--float-epochs", type=int, default=30)
    parser.add_argument("--prune-epochs", type=int, default=15)
    parser.add_argument("--cluster-epochs", type=int, default=4)
    parser.add_argument("--qat-epochs", type=int, default=4)
    # Sparsity per layer: Dense 256 holds 93% of the weights and tolerates
    # the most; the first conv has 288 weights and is the most sensitive.
    parser.add_argument("--sparsity", default="conv1=0.5,conv2=0.85,dense=0.95,logits=0.8")
    parser.add_argument("--clusters", default="conv1=16,conv2=16,dense=8,logits=16")
    parser.add_argument("--uniform", action="store_true", help="90%% everywhere, 16 clusters")
    args = parser.parse_args()

    def parse(spec, cast):
        return {k: cast(v) for k, v in (item.split("=") for item in spec.split(","))}

    if args.uniform:
        sparsity = dict.fromkeys(["conv1", "conv2", "dense", "logits"], 0.9)
        clusters = 16
    else:
        sparsity = parse(args.sparsity, float)
        clusters = parse(args.clusters, int)

    os.makedirs(args.out, exist_ok=True)
    keras.utils.set_random_seed(args.seed)
    (x, y), (x_test, y_test) = datasets.load_digits()
    steps = math.ceil(len(x) / BATCH)
    rows, started = [], time.time()

    def record(stage, model, flatbuffer=None):
        row = {"stage": stage, "keras_accuracy": keras_accuracy(model, x_test, y_test)}
        if flatbuffer is not None:
            row.update(
                tflite_accuracy=lite.evaluate(flatbuffer, x_test, y_test)["accuracy"],
                tflite_bytes=len(flatbuffer),
                gzip_bytes=gz(flatbuffer),
            )
        rows.append(row)
        print(f"[{time.time() - started:6.0f}s] {stage}: {row}", flush=True)

    # 1. Float baseline.
    model = compile_model(demo_cnn(), 1e-3)
    model.fit(x, y, epochs=args.float_epochs, batch_size=BATCH, verbose=0)
    float_tflite = lite.convert(model)
    record("float32", model, float_tflite)

    # 2. Prune, sparsity ramped with PolynomialDecay over 2/3 of the epochs.
    end = steps * max(1, (2 * args.prune_epochs) // 3)
    schedules = {
        name: tfcompress.PolynomialDecay(0.0, s, begin_step=0, end_step=end, frequency=steps // 2)
        for name, s in sparsity.items()
    }
    pruned = compile_model(tfcompress.prune_low_magnitude(model, pruning_schedule=schedules), 5e-4)
    pruned.fit(x, y, epochs=args.prune_epochs, batch_size=BATCH, verbose=0)
    pruned = tfcompress.strip_pruning(pruned)
    record("pruned", pruned)

    # 3. Cluster the non-zero weights.
    clustered = compile_model(
        tfcompress.cluster_weights(pruned, clusters, preserve_sparsity=True), 3e-4
    )
    clustered.fit(x, y, epochs=args.cluster_epochs, batch_size=BATCH, verbose=0)
    clustered = tfcompress.strip_clustering(clustered)
    record("pruned+clustered", clustered)

    # 4. QAT keeping zeros and clusters, then the int8 file.
    qat = compile_model(quantize_model(clustered, preserve_sparsity=True), 1e-4)
    qat.fit(x, y, epochs=args.qat_epochs, batch_size=BATCH, verbose=0)
    final = lite.convert(
        qat, quantization="int8", output_path=os.path.join(args.out, "pipeline_int8.tflite")
    )
    record("pruned+clustered+QAT int8", qat, final)

    report = tfcompress.summarize(final)
    print(report)
    base, last = rows[0], rows[-1]
    figures = {
        "settings": {"sparsity": sparsity, "clusters": clusters, **vars(args)},
        "rows": rows,
        "float_tflite_bytes": base["tflite_bytes"],
        "float_tflite_gzip_bytes": base["gzip_bytes"],
        "final_gzip_bytes": last["gzip_bytes"],
        "ratio_vs_float_tflite": base["tflite_bytes"] / last["gzip_bytes"],
        "ratio_vs_gzipped_float_tflite": base["gzip_bytes"] / last["gzip_bytes"],
        "accuracy_drop_points_tflite": 100 * (base["tflite_accuracy"] - last["tflite_accuracy"]),
        "report": report.to_dict(),
        "seconds": time.time() - started,
    }
    with open(os.path.join(args.out, "pipeline_figures.json"), "w") as f:
        json.dump(figures, f, indent=1)
    print(
        f"\nfloat32 .tflite {base['tflite_bytes']:,} B (gzip {base['gzip_bytes']:,} B), "
        f"acc {base['tflite_accuracy']:.4f}\n"
        f"final int8 .tflite {last['tflite_bytes']:,} B, gzip {last['gzip_bytes']:,} B, "
        f"acc {last['tflite_accuracy']:.4f}\n"
        f"gzip ratio: {figures['ratio_vs_float_tflite']:.1f}x vs the float32 .tflite, "
        f"{figures['ratio_vs_gzipped_float_tflite']:.1f}x vs the gzipped float32 .tflite; "
        f"accuracy lost {figures['accuracy_drop_points_tflite']:+.2f} pt"
    )


if __name__ == "__main__":
    main()

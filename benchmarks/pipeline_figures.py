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
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfcompress  # noqa: E402
from tfcompress import datasets, lite  # noqa: E402
from tfcompress import demo  # noqa: E402

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
    parser.add_argument("--sparsity", default=_spec(demo.HEADLINE_SPARSITY))
    parser.add_argument("--clusters", default=_spec(demo.HEADLINE_CLUSTERS))
    parser.add_argument("--uniform", action="store_true", help="90%% everywhere, 16 clusters")
    args = parser.parse_args()

    def parse(spec, cast):
        return {k: cast(v) for k, v in (item.split("=") for item in spec.split(","))}

    if args.uniform:
        sparsity = dict.fromkeys(demo.HEADLINE_SPARSITY, 0.9)
        clusters = 16
    else:
        sparsity = parse(args.sparsity, float)
        clusters = parse(args.clusters, int)

    os.makedirs(args.out, exist_ok=True)
    keras.utils.set_random_seed(args.seed)
    (x, y), (x_test, y_test) = datasets.load_digits()
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

    model = demo.compile_classifier(demo.demo_cnn())
    model.fit(x, y, epochs=args.float_epochs, batch_size=demo.BATCH_SIZE, verbose=0)
    record("float32", model, lite.convert(model))
    epochs = {"prune": args.prune_epochs, "cluster": args.cluster_epochs, "qat": args.qat_epochs}
    qat, stages = demo.train_pipeline(model, x, y, epochs, sparsity, clusters, verbose=0)
    record("pruned", stages["pruned"])
    record("pruned+clustered", stages["clustered"])
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


def _spec(setting):
    return ",".join(f"{name}={value}" for name, value in setting.items())


if __name__ == "__main__":
    main()

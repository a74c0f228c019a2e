"""The demo's prune -> cluster -> QAT pipeline on the digits CNN, stage by stage.

float -> prune (sparsity per layer, PolynomialDecay) -> cluster (preserving
sparsity, clusters per layer) -> QAT int8 (preserving sparsity and clusters)
-> int8 `.tflite`, all by `tfcompress.demo.train_pipeline` with the demo's
epochs unless given; then the compression report of the final file.

    python benchmarks/pipeline_figures.py [--out DIR] [--seed 0] [--uniform]

Prints each stage's accuracy (Keras / TFLite), file size, gzip size and ratio
to the float32 `.tflite`; writes `pipeline_figures.json` and the final
`.tflite` to `--out`.
"""

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

import tfcompress  # noqa: E402
from tfcompress import datasets, demo, lite  # noqa: E402

from _tflite_figures import file_figures  # noqa: E402  (benchmarks/ is sys.path[0])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/out")
    parser.add_argument("--seed", type=int, default=0)
    stages = ("float", "prune", "cluster", "qat")
    for stage in stages:
        parser.add_argument(f"--{stage}-epochs", type=int, default=demo.EPOCHS[stage])
    parser.add_argument("--sparsity", default=_spec(demo.HEADLINE_SPARSITY),
                        help="layer=fraction,... (default: the demo's)")
    parser.add_argument("--clusters", default=_spec(demo.HEADLINE_CLUSTERS),
                        help="layer=count,... (default: the demo's)")
    parser.add_argument("--uniform", action="store_true", help="90%% everywhere, 16 clusters")
    args = parser.parse_args()

    if args.uniform:
        sparsity, clusters = 0.9, 16
    else:
        sparsity, clusters = _parse(args.sparsity, float), _parse(args.clusters, int)
    epochs = {stage: getattr(args, f"{stage}_epochs") for stage in stages}

    os.makedirs(args.out, exist_ok=True)
    keras.utils.set_random_seed(args.seed)
    (x, y), (x_test, y_test) = datasets.load_digits()
    rows, started = [], time.time()

    def record(stage, model, flatbuffer=None):
        row = {"stage": stage, "keras_accuracy": demo.keras_accuracy(model, x_test, y_test)}
        if flatbuffer is not None:
            figures = file_figures(flatbuffer, x_test, y_test)
            row.update(tflite_accuracy=figures["acc"], tflite_bytes=figures["bytes"],
                       gzip_bytes=figures["gzip"])
        rows.append(row)
        print(f"[{time.time() - started:6.0f}s] {stage}: {row}", flush=True)

    model = demo.train_float(x, y, epochs["float"], verbose=0)
    record("float32", model, lite.convert(model))
    models = demo.train_pipeline(model, x, y, epochs, sparsity, clusters, verbose=0)
    record("pruned", models.pruned)
    record("pruned+clustered", models.clustered)
    final = lite.convert(
        models.qat, quantization="int8", output_path=os.path.join(args.out, "pipeline_int8.tflite")
    )
    record("pruned+clustered+QAT int8", models.qat, final)
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


def _parse(spec, cast):
    return {name: cast(value) for name, value in (item.split("=") for item in spec.split(","))}


if __name__ == "__main__":
    main()

"""`auto_compress` against the best uniform recipe (and the hand recipe), on three models.

For each model, trained once in float:

* auto: `auto_compress(..., max_accuracy_drop=0.01)`: per-layer sparsity,
  clusters and weight bits found by the search, no per-layer input;
* uniform: the same search restricted to one setting for every layer
  (`per_layer=False`), with as many pipeline runs, i.e. the best uniform
  recipe of the same techniques (prune -> cluster -> QAT) that keeps the same
  budget;
* hand (digits CNN only): the demo's hand-tuned recipe run through the same
  pipeline (`recipe=...`).

Every row is an int8 `.tflite` whose accuracy is measured with LiteRT on the
540 test digits, which is also the validation data the budget (1 point below
the float32 `.tflite`) is checked on. Models:

* digits_cnn: `demo.demo_cnn()` trained as the demo does (Adam 1e-3, 20 epochs);
* mobile_block: `tests/conftest.py` `make_mobile_block()` (Conv-BN-ReLU6,
  depthwise, residual Add), 20 epochs at 3e-3;
* mobilenetv2: `keras.applications.MobileNetV2(alpha=0.35, weights=None)` on the
  digits upscaled to 32x32 RGB, BatchNorm momentum 0.9, 30 epochs, cosine decay.

    python benchmarks/auto_compress.py [--models digits_cnn,mobile_block,mobilenetv2]

Writes `benchmarks/auto_results.md` (tables) and `--out`/auto_compress.json
(every trial). Takes about an hour on 2 busy cores, most of it MobileNetV2.
"""

import argparse
import datetime
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tfcompress  # noqa: E402  (first: it loads TensorFlow without its C++ log lines)

import keras  # noqa: E402
import numpy as np  # noqa: E402

from tfcompress import datasets, demo  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
from conftest import make_mobile_block  # noqa: E402


def mobilenet_v2():
    model = keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), alpha=0.35, weights=None, classes=10
    )
    # keras.applications uses 0.999: statistics that lag behind short
    # digits epochs (and the pruning that changes the weights) would be stale.
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9
    return model


def upscale(x):
    """8x8 grey digits to 32x32 RGB (bilinear)."""
    x = keras.ops.image.resize(x, (32, 32), interpolation="bilinear")
    return np.repeat(keras.ops.convert_to_numpy(x), 3, axis=-1).astype("float32")


MODELS = {
    "digits_cnn": dict(build=demo.demo_cnn, upscale=False, epochs=20, lr=1e-3, logits=True),
    "mobile_block": dict(build=make_mobile_block, upscale=False, epochs=20, lr=3e-3, logits=True),
    "mobilenetv2": dict(build=mobilenet_v2, upscale=True, epochs=30, lr=2e-3, logits=False),
}


def train_float(spec, x, y, seed):
    keras.utils.set_random_seed(seed)
    model = spec["build"]()
    steps = spec["epochs"] * int(np.ceil(len(x) / demo.BATCH_SIZE))
    rate = keras.optimizers.schedules.CosineDecay(spec["lr"], steps) if spec["upscale"] else spec["lr"]
    model.compile(
        optimizer=keras.optimizers.Adam(rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=spec["logits"]),
        metrics=["accuracy"],
    )
    model.fit(x, y, batch_size=demo.BATCH_SIZE, epochs=spec["epochs"], verbose=0)
    return model


def summarize_run(name, result, float_bytes, baseline):
    final = result.report[-1]
    return {
        "row": name,
        "recipe": result.recipe,
        "gzip_bytes": final["gzip_bytes"],
        "size_bytes": final["size_bytes"],
        "ratio_vs_float_tflite": float_bytes / final["gzip_bytes"],
        "tflite_accuracy": final["tflite_accuracy"],
        "change_points": 100 * (final["tflite_accuracy"] - baseline),
        "within_budget": result.within_budget,
        "pipeline_runs": len(result.trials),
        "search_seconds": result.seconds["total"],
        "trials": [
            {k: v for k, v in t.items()} for t in result.trials
        ],
        "seconds": result.seconds,
    }


def render(model_name, entry):
    rows, base = entry["rows"], entry["float"]
    baseline, float_bytes, float_gzip = base["tflite_accuracy"], base["size_bytes"], base["gzip_bytes"]
    lines = [
        f"### {model_name}",
        "",
        f"float32 `.tflite`: {float_bytes:,} B (gzip {float_gzip:,} B), TFLite accuracy "
        f"{baseline:.2%}; budget: TFLite accuracy >= {baseline - 0.01:.2%}.",
        "",
        "| recipe | gzip | float .tflite / gzip | TFLite acc | vs float | pipeline runs | time |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['row']} | {row['gzip_bytes']:,} B | {row['ratio_vs_float_tflite']:.1f}x | "
            f"{row['tflite_accuracy']:.2%} | {row['change_points']:+.2f} pt | "
            f"{row['pipeline_runs']} | {row['search_seconds'] / 60:.1f} min |"
        )
    by = {row["row"].split(" ")[0]: row for row in rows}
    if "auto" in by and "uniform" in by:
        lines.append("")
        lines.append(
            f"auto is {by['uniform']['gzip_bytes'] / by['auto']['gzip_bytes']:.2f}x smaller "
            "(gzip) than the best uniform recipe."
        )
    lines.append("")
    lines.append("Recipes (sparsity / clusters per layer):")
    lines.append("")
    for row in rows:
        recipe = row["recipe"]
        lines.append(f"* {row['row']}: {tfcompress.auto.result.describe_short(recipe)}")
        if len(recipe) > 6:  # the short form only gives ranges: the layers, folded away
            each = ", ".join(
                f"{layer} {entry['sparsity']:.0%}" + (f"/{entry['clusters']}" if entry["clusters"] else "")
                + (f"/{entry['weight_bits']}-bit" if entry.get("weight_bits", 8) != 8 else "")
                for layer, entry in recipe.items()
            )
            lines.append(f"  <details><summary>per layer</summary>{each}</details>")
    return "\n".join(lines)


def models_and_record(parser, args, filename):
    """`(model names, record path, record)` of a run: `--models` checked, `--out`/filename loaded.

    Models measured by earlier runs into the same `--out` stay in the record (and the tables).
    """
    names = args.models.split(",")
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        parser.error(f"unknown models {unknown}; known: {list(MODELS)}")
    os.makedirs(args.out, exist_ok=True)
    record_path = os.path.join(args.out, filename)
    record = {}
    if os.path.exists(record_path):
        with open(record_path) as f:
            record = json.load(f)
    return names, record_path, record


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--trials", type=int, default=6, help="pipeline runs of each search")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=os.path.join(HERE, "out"))
    parser.add_argument("--output", default=os.path.join(HERE, "auto_results.md"))
    parser.add_argument(
        "--render", action="store_true", help="only rewrite --output from --out/auto_compress.json"
    )
    args = parser.parse_args()
    names, record_path, record = models_and_record(parser, args, "auto_compress.json")
    (x8, y), (xt8, yt) = datasets.load_digits()
    started = time.time()
    for name in [] if args.render else names:
        spec = MODELS[name]
        x, xt = (upscale(x8), upscale(xt8)) if spec["upscale"] else (x8, xt8)
        print(f"\n=== {name}: float training ({spec['epochs']} epochs)", flush=True)
        model = train_float(spec, x, y, args.seed)
        common = dict(max_accuracy_drop=0.01, seed=args.seed)
        rows = []
        if name == "digits_cnn":
            print("\n--- hand recipe (demo.HEADLINE_*)", flush=True)
            hand = {
                layer: {
                    "sparsity": demo.HEADLINE_SPARSITY[layer],
                    "clusters": demo.HEADLINE_CLUSTERS[layer],
                    "weight_bits": 8,
                }
                for layer in demo.HEADLINE_SPARSITY
            }
            result = tfcompress.auto_compress(model, x, y, (xt, yt), recipe=hand, **common)
            rows.append(("hand (demo recipe)", result))
        print(f"\n--- uniform: one setting for every layer, up to {args.trials} runs", flush=True)
        result = tfcompress.auto_compress(
            model, x, y, (xt, yt), per_layer=False, max_trials=args.trials, **common
        )
        rows.append(("uniform (best one setting for all layers)", result))
        print(f"\n--- auto: per-layer search, up to {args.trials} runs", flush=True)
        result = tfcompress.auto_compress(model, x, y, (xt, yt), max_trials=args.trials, **common)
        rows.append(("auto (per-layer search)", result))
        base = result.report[0]
        summaries = [
            summarize_run(label, r, base["size_bytes"], r.baseline_accuracy) for label, r in rows
        ]
        record[name] = {"float": base, "rows": summaries, "seconds": time.time() - started}
        with open(record_path, "w") as f:
            json.dump(record, f, indent=1, default=str)
        print("\n" + render(name, record[name]), flush=True)
    sections = [render(name, record[name]) for name in MODELS if name in record]
    header = (
        "# auto_compress: per-layer search vs the best uniform recipe\n\n"
        f"`python benchmarks/auto_compress.py` (at most {args.trials} pipeline runs per "
        f"search, seed {args.seed}), {datetime.date.today()}, tfcompress "
        f"{tfcompress.__version__}, Keras {keras.__version__}. Every row is an int8 "
        "`.tflite` measured with LiteRT on the 540 test digits (the validation data the "
        "budget is checked on); ratio: float32 `.tflite` bytes / gzip bytes; time: the "
        "whole `auto_compress` call (sensitivity, search and every pipeline run) on 2 "
        "shared CPU cores.\n\n"
    )
    # Sections other benchmarks write into the file ("## ...", e.g. auto_latency.py's) stay.
    others = ""
    if os.path.exists(args.output):
        with open(args.output) as f:
            existing = f.read()
        if "\n## " in existing:
            others = "\n## " + existing.split("\n## ", 1)[1].rstrip() + "\n"
    with open(args.output, "w") as f:
        f.write(header + "\n\n".join(sections) + "\n" + others)
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()

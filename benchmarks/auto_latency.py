"""`auto_compress(objective="latency")` next to `objective="size"` and plain int8 QAT, side by side.

For each model, trained once in float (as `benchmarks/auto_compress.py` trains it):

* int8 QAT: `auto_compress(..., recipe={})`, the pipeline with no knob set
  (what a user gets without instructions);
* size: `auto_compress(..., objective="size")` (per-layer sparsity, clusters
  and weight bits, smallest gzip within the budget);
* latency: `auto_compress(..., objective="latency")` (per-group kept
  channels, fewest MACs within the budget).

Every budget is 1 point of TFLite accuracy below the float32 `.tflite`, checked
on the 540 test digits. The `.tflite` files are then timed side by side in one
process (LiteRT, 1 thread, batch 1, the files taking turns for several rounds;
`channel_pruning.latency_ratios`): speed-ups are medians of per-round ratios,
the figures to read on a loaded machine. MobileNetV2 is also timed at
224x224 (the same weights rebuilt for that input size), where the
convolutions, not the interpreter's per-op overhead, take the time.

    python benchmarks/auto_latency.py [--models digits_cnn,mobilenetv2] [--trials 4]

Writes the section "objective='latency'" of `benchmarks/auto_results.md`
(replacing it if there) and `--out`/auto_latency.json.
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

from tfcompress import datasets, lite  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from auto_compress import MODELS, models_and_record, train_float, upscale  # noqa: E402
from channel_pruning import at_input_size, latency_ratios  # noqa: E402

SECTION = "## objective='latency': fewer MACs, measured with LiteRT"
ROWS = ("float32", "int8 QAT", "size", "latency")


def run_model(name, trials, seed, rounds):
    spec = MODELS[name]
    (x8, y), (xt8, yt) = datasets.load_digits()
    x, xt = (upscale(x8), upscale(xt8)) if spec["upscale"] else (x8, xt8)
    print(f"\n=== {name}: float training ({spec['epochs']} epochs)", flush=True)
    model = train_float(spec, x, y, seed)
    common = dict(max_accuracy_drop=0.01, seed=seed)
    results = {}
    print("\n--- int8 QAT (no knob set)", flush=True)
    results["int8 QAT"] = tfcompress.auto_compress(model, x, y, (xt, yt), recipe={}, **common)
    print(f"\n--- objective='size', up to {trials} runs", flush=True)
    results["size"] = tfcompress.auto_compress(model, x, y, (xt, yt), max_trials=trials, **common)
    print(f"\n--- objective='latency', up to {trials} runs", flush=True)
    results["latency"] = tfcompress.auto_compress(
        model, x, y, (xt, yt), objective="latency", max_trials=trials, **common
    )
    float_row = results["latency"].report[0]
    files = {"float": lite.convert(model)}
    files.update({key: r.tflite for key, r in results.items()})
    macs = {"float": tfcompress.count_macs(model).total}
    macs.update({key: tfcompress.count_macs(r.model).total for key, r in results.items()})
    print(f"\n--- latency, {rounds} interleaved rounds", flush=True)
    medians, speedups = latency_ratios(files, rounds)
    entry = {
        "float": {"tflite_accuracy": float_row["tflite_accuracy"], "size_bytes": float_row["size_bytes"],
                  "gzip_bytes": float_row["gzip_bytes"]},
        "rows": {},
    }
    for key in ("float",) + tuple(results):
        result = results.get(key)
        final = result.report[-1] if result else float_row
        entry["rows"][key] = {
            "macs": macs[key],
            "tflite_accuracy": final["tflite_accuracy"],
            "gzip_bytes": final["gzip_bytes"],
            "latency_ms": medians[key],
            "speedup": speedups[key],
            "search_seconds": result.seconds["total"] if result else None,
            "pipeline_runs": len(result.trials) if result else None,
            "recipe": result.recipe if result else None,
        }
    if spec["upscale"]:
        print("\n--- converting at 224x224 and timing", flush=True)
        big = {"float": lite.convert(at_input_size(model, 224))}
        big.update({key: lite.convert(at_input_size(r.model, 224), "int8") for key, r in results.items()})
        medians, speedups = latency_ratios(big, rounds)
        for key in big:
            entry["rows"][key]["latency_224_ms"] = medians[key]
            entry["rows"][key]["speedup_224"] = speedups[key]
    return entry


def render(name, entry):
    rows = entry["rows"]
    base = entry["float"]["tflite_accuracy"]
    wide = "latency_224_ms" in rows["float"]
    lines = [
        f"### {name}",
        "",
        f"float32 `.tflite`: TFLite accuracy {base:.2%}; budget: TFLite accuracy >= {base - 0.01:.2%}.",
        "",
        "| model | MACs | vs float | TFLite acc | vs float | gzip | latency (1 thread) | speed-up vs float | vs int8 QAT |"
        + (" latency 224x224 | speed-up 224 vs float | vs int8 QAT |" if wide else "")
        + " pipeline runs | search time |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|---:|---:|" if wide else "") + "---:|---:|",
    ]
    labels = {"float": "float32", "int8 QAT": "int8 QAT (no knob)", "size": "auto, objective='size'",
              "latency": "**auto, objective='latency'**"}
    qat = rows["int8 QAT"]
    for key, row in rows.items():
        line = (
            f"| {labels[key]} | {row['macs']:,} | {row['macs'] / rows['float']['macs']:.2f}x | "
            f"{row['tflite_accuracy']:.2%} | {100 * (row['tflite_accuracy'] - base):+.2f} pt | "
            f"{row['gzip_bytes']:,} B | {row['latency_ms']:.3f} ms | {row['speedup']:.2f}x | "
            f"{row['speedup'] / qat['speedup']:.2f}x |"
        )
        if wide:
            line += (
                f" {row['latency_224_ms']:.2f} ms | {row['speedup_224']:.2f}x | "
                f"{row['speedup_224'] / qat['speedup_224']:.2f}x |"
            )
        runs = row["pipeline_runs"]
        seconds = row["search_seconds"]
        line += f" {runs if runs is not None else '-'} | " + (
            f"{seconds / 60:.1f} min |" if seconds is not None else "- |"
        )
        lines.append(line)
    lines += ["", "Recipes:", ""]
    for key in ("size", "latency"):
        lines.append(f"* {labels[key].strip('*')}: {tfcompress.auto.result.describe_short(rows[key]['recipe'])}")
    recipe = rows["latency"]["recipe"]
    if len(recipe) > 6:
        each = ", ".join(
            f"{layer} {entry['channel_sparsity']:.1%}" for layer, entry in recipe.items()
            if entry.get("channel_sparsity")
        )
        lines.append(f"  <details><summary>channel sparsity per layer</summary>{each}</details>")
    return "\n".join(lines)


def notes(record):
    """What the tables say, with their figures."""
    lines = ["Reading the tables:", ""]
    for name, entry in record.items():
        rows = entry["rows"]
        qat, size, fast = rows["int8 QAT"], rows["size"], rows["latency"]
        lines.append(
            f"* {name}: `objective='latency'` keeps {fast['macs'] / rows['float']['macs']:.2f}x "
            f"the MACs and runs {fast['speedup'] / qat['speedup']:.2f}x faster than plain int8 QAT "
            + (f"({fast['speedup_224'] / qat['speedup_224']:.2f}x at 224x224) " if "speedup_224" in fast else "")
            + f"at {100 * (fast['tflite_accuracy'] - rows['float']['tflite_accuracy']):+.2f} pt; "
            f"`objective='size'`'s file is {qat['gzip_bytes'] / size['gzip_bytes']:.1f}x smaller "
            f"than int8 QAT's but runs at {size['speedup'] / qat['speedup']:.2f}x its speed."
        )
    lines += [
        "",
        "The size knobs save bytes, not time: LiteRT's int8 kernels multiply every zero and every "
        "shared value, and the 4-bit and ternary weights the size search picks run slower than "
        "int8 ones on x86. That is why `objective='latency'` leaves them off and searches kept "
        "channels only. MobileNetV2 gains less per MAC removed than the digits CNN: its "
        "depthwise layers and the interpreter's per-op work do not shrink with the 1x1 "
        "convolutions' MACs, and its search stopped after 4 runs with a bracket left to bisect "
        "(`--trials` to go further).",
    ]
    return "\n".join(lines)


def write_section(path, text):
    """Replaces (or appends) this benchmark's section of `path`, keeping the rest."""
    existing = open(path).read() if os.path.exists(path) else ""
    if SECTION in existing:
        before, after = existing.split(SECTION, 1)
        rest = after.split("\n## ", 1)
        existing = before.rstrip() + ("\n\n## " + rest[1] if len(rest) > 1 else "")
    with open(path, "w") as f:
        f.write(existing.rstrip() + "\n\n" + text.rstrip() + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="digits_cnn,mobilenetv2")
    parser.add_argument("--trials", type=int, default=4, help="pipeline runs of each search")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved latency rounds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=os.path.join(HERE, "out"))
    parser.add_argument("--output", default=os.path.join(HERE, "auto_results.md"))
    parser.add_argument("--render", action="store_true", help="only rewrite the section from the json")
    args = parser.parse_args()
    names, record_path, record = models_and_record(parser, args, "auto_latency.json")
    for name in [] if args.render else names:
        started = time.time()
        record[name] = run_model(name, args.trials, args.seed, args.rounds)
        record[name]["seconds"] = time.time() - started
        with open(record_path, "w") as f:
            json.dump(record, f, indent=1, default=str)
        print("\n" + render(name, record[name]), flush=True)
    header = (
        f"{SECTION}\n\n"
        f"`python benchmarks/auto_latency.py` (at most {args.trials} pipeline runs per search, seed "
        f"{args.seed}), {datetime.date.today()}, tfcompress {tfcompress.__version__}, Keras "
        f"{keras.__version__}. The same float model compressed three ways, each an int8 "
        "`.tflite` within 1 point of the float32 `.tflite` on the 540 test digits. MACs: "
        "`count_macs` of the shipped model. Latency: LiteRT, 1 thread, batch 1, the files "
        f"timed in turn for {args.rounds} rounds in one process on 2 shared CPU cores; speed-ups "
        "are medians of per-round ratios (absolute times are noisy under the load of other "
        "jobs). Search time: the whole `auto_compress` call.\n"
    )
    sections = [render(name, record[name]) for name in MODELS if name in record]
    write_section(args.output, header + "\n" + "\n\n".join(sections) + "\n\n" + notes(record))
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()

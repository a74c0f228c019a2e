"""The `tfcompress` command: convert, inspect, bench and demo.

    tfcompress convert MODEL.keras -o OUT.tflite [--quantization int8 --calibration X.npy] [--int8-io]
    tfcompress inspect FILE            (.keras or .tflite: the compression report)
    tfcompress bench FILE.tflite [--threads N] [--runs N]
    tfcompress compress MODEL.keras --data TRAIN.npz --validation VAL.npz [--max-drop 1.0] -o OUT.tflite
    tfcompress demo [--out DIR] [--quick]

Bad input (a missing file, calibration data of the wrong shape, an unknown
mode) prints one line to stderr and exits with status 2, without a traceback.
"""

import argparse
import os
import sys

QUANTIZATION_CHOICES = ("float32", "float16", "dynamic", "int8")


class CommandError(Exception):
    """An error the user can fix; printed as one line."""


def build_parser():
    """The argparse parser of the `tfcompress` command."""
    parser = argparse.ArgumentParser(
        prog="tfcompress",
        description="Compress Keras 3 models for phones: convert, inspect, bench, demo.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    convert = commands.add_parser("convert", help="convert a .keras model to .tflite")
    convert.add_argument("model", help="path of a .keras model")
    convert.add_argument("-o", "--output", required=True, help="path of the .tflite to write")
    convert.add_argument(
        "--quantization",
        default="float32",
        help=f"one of {', '.join(QUANTIZATION_CHOICES)} (default: float32)",
    )
    convert.add_argument(
        "--calibration",
        help="a .npy array of model inputs (first axis = examples) to calibrate "
        "post-training int8 of a float model",
    )
    convert.add_argument(
        "--int8-io", action="store_true", help="int8 input/output tensors (with int8)"
    )

    inspect = commands.add_parser("inspect", help="compression report of a .keras or .tflite")
    inspect.add_argument("file", help="a .keras or .tflite file")

    bench = commands.add_parser("bench", help="latency of a .tflite on this CPU")
    bench.add_argument("file", help="a .tflite file")
    bench.add_argument("--threads", type=int, default=1, help="interpreter threads (default 1)")
    bench.add_argument("--runs", type=int, default=200, help="timed inferences (default 200)")

    compress = commands.add_parser(
        "compress", help="automatic compression: the smallest int8 .tflite within an accuracy budget"
    )
    compress.add_argument("model", help="path of a trained .keras classifier")
    compress.add_argument("--data", required=True, help="training data: a .npz with arrays x and y")
    compress.add_argument(
        "--validation", required=True, help="validation data (.npz with x and y): the budget is checked on it"
    )
    compress.add_argument(
        "--max-drop", type=float, default=1.0, help="accuracy points the .tflite may lose (default 1.0)"
    )
    compress.add_argument("-o", "--output", required=True, help="path of the .tflite to write")
    compress.add_argument("--recipe", help="a recipe .json to run instead of searching")
    compress.add_argument("--save-recipe", help="write the recipe found to this .json")
    compress.add_argument("--trials", type=int, default=4, help="pipeline runs of the search (default 4)")
    compress.add_argument(
        "--epochs", type=int, nargs=3, metavar=("PRUNE", "CLUSTER", "QAT"), help="epochs per stage (default 12 4 3)"
    )
    compress.add_argument("--seed", type=int, default=0, help="random seed (default 0)")

    demo = commands.add_parser("demo", help="the whole pipeline on the bundled digits")
    demo.add_argument("--out", default="demo_out", help="output directory (default demo_out)")
    demo.add_argument("--quick", action="store_true", help="fewer epochs (a smoke run)")
    return parser


def main(argv=None):
    """Entry point of the `tfcompress` console script. Returns the exit status."""
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        return _COMMANDS[args.command](args) or 0
    except (CommandError, ValueError, TypeError, OSError, ImportError) as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        print(f"tfcompress {args.command}: error: {message}", file=sys.stderr)
        return 2


def _convert(args):
    _require_file(args.model, (".keras",))
    if args.quantization not in QUANTIZATION_CHOICES:
        raise CommandError(
            f"--quantization must be one of {', '.join(QUANTIZATION_CHOICES)}. "
            f"Received: {args.quantization!r}"
        )
    calibration = None
    if args.calibration:
        _require_file(args.calibration, (".npy",))
        import numpy as np

        calibration = np.load(args.calibration)
    import keras

    from tfcompress import lite

    model = keras.saving.load_model(args.model)
    quantization = None if args.quantization == "float32" else args.quantization
    flatbuffer = lite.convert(
        model,
        quantization=quantization,
        representative_data=calibration,
        int8_io=args.int8_io,
        output_path=args.output,
    )
    print(f"wrote {args.output} ({len(flatbuffer):,} bytes, {args.quantization})")


def _inspect(args):
    _require_file(args.file, (".keras", ".tflite"))
    from tfcompress import report

    if args.file.endswith(".keras"):
        import keras

        target = keras.saving.load_model(args.file)
    else:
        target = args.file
    print(report.summarize(target))


def _bench(args):
    _require_file(args.file, (".tflite",))
    from tfcompress import lite

    result = lite.benchmark(args.file, num_threads=args.threads, runs=args.runs)
    print(
        f"{args.file}: median {result['median_ms']:.3f} ms, p90 {result['p90_ms']:.3f} ms "
        f"({result['runs']} runs, {result['num_threads']} thread(s), batch 1)"
    )


def _compress(args):
    import json
    import zipfile

    import numpy as np

    from tfcompress import _validate
    from tfcompress.auto import auto_compress

    if args.max_drop < 0:
        raise CommandError(f"--max-drop must be >= 0 (accuracy points). Received: {args.max_drop}")
    arrays = {}
    for flag, path in (("--data", args.data), ("--validation", args.validation)):
        _require_file(path, (".npz",))
        try:
            with np.load(path) as npz:
                missing = [key for key in ("x", "y") if key not in npz.files]
                if missing:
                    raise CommandError(
                        f"{flag} {path} has no array {missing[0]!r} (it holds {npz.files})"
                    )
                arrays[flag] = (npz["x"], npz["y"])
        except (ValueError, OSError, zipfile.BadZipFile) as error:
            raise CommandError(f"{flag} {path} is not a readable .npz file: {error}") from None
    recipe = None
    if args.recipe:
        _require_file(args.recipe, (".json",))
        with open(args.recipe) as f:
            try:
                recipe = json.load(f)
            except json.JSONDecodeError as error:
                raise CommandError(f"--recipe {args.recipe} is not valid JSON: {error}") from None
    model = _validate.load_keras_model(args.model)
    epochs = dict(zip(("prune", "cluster", "qat"), args.epochs)) if args.epochs else None
    result = auto_compress(
        model, *arrays["--data"], arrays["--validation"],
        max_accuracy_drop=args.max_drop / 100, seed=args.seed, recipe=recipe,
        epochs=epochs, max_trials=args.trials,
    )
    print(f"\nrecipe (JSON):\n{result.recipe_json()}")
    if args.save_recipe:
        with open(args.save_recipe, "w") as f:
            f.write(result.recipe_json() + "\n")
        print(f"wrote {args.save_recipe}")
    if not result.within_budget:
        raise CommandError(
            f"no run kept the budget of {args.max_drop} point(s); nothing written to {args.output}"
        )
    with open(args.output, "wb") as f:
        f.write(result.tflite)
    print(f"wrote {args.output} ({len(result.tflite):,} bytes, gzip {result.report[-1]['gzip_bytes']:,})")


def _demo(args):
    from tfcompress import demo

    demo.run(out_dir=args.out, quick=args.quick)


def _require_file(path, suffixes):
    if not os.path.isfile(path):
        raise CommandError(f"no such file: {path}")
    if not path.endswith(suffixes):
        raise CommandError(f"expected a {' or '.join(suffixes)} file. Received: {path}")


_COMMANDS = {
    "convert": _convert,
    "inspect": _inspect,
    "bench": _bench,
    "compress": _compress,
    "demo": _demo,
}


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

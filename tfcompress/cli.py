"""The `tfcompress` command: convert, inspect, bench and demo.

    tfcompress convert MODEL.keras -o OUT.tflite [--quantization int8|int16x8 --calibration X.npy|X.npz]
                       [--int8-io] [--rnn auto|unroll]
    tfcompress inspect FILE            (.keras or .tflite: the compression report)
    tfcompress bench FILE.tflite [--threads N] [--runs N]
    tfcompress compress MODEL.keras --data TRAIN.npz --validation VAL.npz [--max-drop 1.0]
                        [--objective size|latency] -o OUT.tflite
    tfcompress demo [--out DIR] [--quick]

Every failure (a missing, truncated or corrupted file, calibration data of the
wrong shape, an unknown mode, a bad option) prints one line to stderr and
exits with status 2, without a traceback; `--debug` (before or after the
command) prints the traceback too.
"""

import argparse
import sys
import traceback

QUANTIZATION_CHOICES = ("float32", "float16", "dynamic", "int8", "int16x8")


class _Parser(argparse.ArgumentParser):
    """An argparse parser whose usage errors are one line too (status 2)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser():
    """The argparse parser of the `tfcompress` command."""
    debug = _Parser(add_help=False)
    debug.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="on failure, print the traceback too",
    )
    parser = _Parser(
        prog="tfcompress",
        description="Compress Keras 3 models for phones: convert, inspect, bench, demo.",
    )
    parser.add_argument("--debug", action="store_true", help="on failure, print the traceback too")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add = lambda name, help: commands.add_parser(name, help=help, parents=[debug])  # noqa: E731

    convert = add("convert", "convert a .keras model to .tflite")
    convert.add_argument("model", help="path of a .keras model")
    convert.add_argument("-o", "--output", required=True, help="path of the .tflite to write")
    convert.add_argument(
        "--quantization",
        default="float32",
        help=f"one of {', '.join(QUANTIZATION_CHOICES)} (default: float32)",
    )
    convert.add_argument(
        "--calibration",
        help="a .npy array of model inputs (first axis = examples), or a .npz of one "
        "array per input name, to calibrate post-training int8 / int16x8 of a float model",
    )
    convert.add_argument(
        "--int8-io", action="store_true", help="int8 input/output tensors (with int8)"
    )
    convert.add_argument(
        "--rnn",
        default="auto",
        help="auto (fused LSTMs, batch 1) or unroll (every RNN unrolled, any batch)",
    )

    inspect = add("inspect", "compression report of a .keras or .tflite")
    inspect.add_argument("file", help="a .keras or .tflite file")

    bench = add("bench", "latency of a .tflite on this CPU")
    bench.add_argument("file", help="a .tflite file")
    bench.add_argument("--threads", type=int, default=1, help="interpreter threads (default 1)")
    bench.add_argument("--runs", type=int, default=200, help="timed inferences (default 200)")

    compress = add(
        "compress",
        "automatic compression: the smallest (or fewest-MACs) int8 .tflite within an accuracy budget",
    )
    compress.add_argument("model", help="path of a trained .keras classifier")
    compress.add_argument("--data", required=True, help="training data: a .npz with arrays x and y")
    compress.add_argument(
        "--validation", required=True, help="validation data (.npz with x and y): the budget is checked on it"
    )
    compress.add_argument(
        "--max-drop", type=float, default=1.0, help="accuracy points the .tflite may lose (default 1.0)"
    )
    compress.add_argument(
        "--objective",
        default="size",
        help="size (gzip bytes: pruning, clustering, weight bits) or latency (MACs: channel "
        "pruning) (default size)",
    )
    compress.add_argument("-o", "--output", required=True, help="path of the .tflite to write")
    compress.add_argument("--recipe", help="a recipe .json to run instead of searching")
    compress.add_argument("--save-recipe", help="write the recipe found to this .json")
    compress.add_argument("--trials", type=int, default=4, help="pipeline runs of the search (default 4)")
    compress.add_argument(
        "--epochs", type=int, nargs=3, metavar=("PRUNE", "CLUSTER", "QAT"), help="epochs per stage (default 12 4 3)"
    )
    compress.add_argument(
        "--channel-epochs", type=int, help="epochs of the channel-pruning stage (default 12)"
    )
    compress.add_argument("--seed", type=int, default=0, help="random seed (default 0)")

    demo = add("demo", "the whole pipeline on the bundled digits")
    demo.add_argument("--out", default="demo_out", help="output directory (default demo_out)")
    demo.add_argument("--quick", action="store_true", help="fewer epochs (a smoke run)")
    return parser


def main(argv=None):
    """Entry point of the `tfcompress` console script. Returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args) or 0
    except KeyboardInterrupt:
        print(f"tfcompress {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - the contract: one line, status 2
        if args.debug:
            traceback.print_exc()
        print(f"tfcompress {args.command}: error: {_one_line(error, args.debug)}", file=sys.stderr)
        return 2


def _one_line(error, debug):
    text = " ".join(str(error).split()) or type(error).__name__
    if isinstance(error, (ValueError, TypeError, OSError)):
        return text
    # Not an input the user can fix by reading the message alone: say what it was.
    hint = "" if debug else " (run with --debug for the traceback)"
    return f"{type(error).__name__}: {text}{hint}"


def _convert(args):
    from tfcompress import _validate

    _validate.check_file("MODEL", args.model, (".keras",))
    quantization = _validate.check_one_of("--quantization", args.quantization, QUANTIZATION_CHOICES)
    rnn = _validate.check_one_of("--rnn", args.rnn, ("auto", "unroll"))
    calibration = None
    if args.calibration:
        calibration = _validate.load_npy(args.calibration, "--calibration")
        if isinstance(calibration, dict) and len(calibration) == 1:
            calibration = next(iter(calibration.values()))  # one input, whatever its key
    model = _validate.load_keras_model(args.model, "MODEL")
    from tfcompress import lite

    flatbuffer = lite.convert(
        model,
        quantization=None if quantization == "float32" else quantization,
        representative_data=calibration,
        int8_io=args.int8_io,
        output_path=args.output,
        rnn=rnn,
    )
    print(f"wrote {args.output} ({len(flatbuffer):,} bytes, {args.quantization})")


def _inspect(args):
    from tfcompress import _validate, report

    path = _validate.check_file("FILE", args.file, (".keras", ".tflite"))
    print(report.summarize(path))


def _bench(args):
    from tfcompress import _validate, lite

    _validate.check_file("FILE", args.file, (".tflite",))
    result = lite.benchmark(args.file, num_threads=args.threads, runs=args.runs)
    print(
        f"{args.file}: median {result['median_ms']:.3f} ms, p90 {result['p90_ms']:.3f} ms "
        f"({result['runs']} runs, {result['num_threads']} thread(s), batch 1)"
    )


def _compress(args):
    import json

    from tfcompress import _validate
    from tfcompress.auto import auto_compress

    max_drop = _validate.check_number("--max-drop", args.max_drop, minimum=0)
    from tfcompress.auto.api import OBJECTIVES

    objective = _validate.check_one_of("--objective", args.objective, OBJECTIVES)
    _validate.check_output_path("--output", args.output)
    arrays = {}
    for flag, path in (("--data", args.data), ("--validation", args.validation)):
        _validate.check_file(flag, path, (".npz",))
        loaded = _validate.load_npy(path, flag)
        missing = [key for key in ("x", "y") if key not in loaded]
        if missing:
            raise ValueError(f"{flag} {path} has no array {missing[0]!r} (it holds {sorted(loaded)})")
        arrays[flag] = (loaded["x"], loaded["y"])
    recipe = None
    if args.recipe:
        with open(_validate.check_file("--recipe", args.recipe, (".json",))) as f:
            try:
                recipe = json.load(f)
            except json.JSONDecodeError as error:
                raise ValueError(f"--recipe {args.recipe} is not valid JSON: {error}") from None
    if args.save_recipe:
        _validate.check_output_path("--save-recipe", args.save_recipe)
    model = _validate.load_keras_model(args.model, "MODEL")
    epochs = dict(zip(("prune", "cluster", "qat"), args.epochs or ()))
    if args.channel_epochs is not None:
        epochs["channels"] = _validate.check_int("--channel-epochs", args.channel_epochs, minimum=1)
    result = auto_compress(
        model, *arrays["--data"], arrays["--validation"],
        max_accuracy_drop=max_drop / 100, objective=objective, seed=args.seed, recipe=recipe,
        epochs=epochs or None, max_trials=args.trials,
    )
    print(f"\nrecipe (JSON):\n{result.recipe_json()}")
    if args.save_recipe:
        with open(args.save_recipe, "w") as f:
            f.write(result.recipe_json() + "\n")
        print(f"wrote {args.save_recipe}")
    if not result.within_budget:
        raise ValueError(
            f"no run kept the budget of {args.max_drop} point(s); nothing written to {args.output}"
        )
    with open(args.output, "wb") as f:
        f.write(result.tflite)
    final = result.report[-1]
    macs = f", {final['macs']:,} MACs" if final.get("macs") is not None else ""
    print(f"wrote {args.output} ({len(result.tflite):,} bytes, gzip {final['gzip_bytes']:,}{macs})")


def _demo(args):
    from tfcompress import demo

    demo.run(out_dir=args.out, quick=args.quick)


_COMMANDS = {
    "convert": _convert,
    "inspect": _inspect,
    "bench": _bench,
    "compress": _compress,
    "demo": _demo,
}


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

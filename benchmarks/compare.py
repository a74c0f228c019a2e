"""tfcompress side by side with tfmot and Keras' built-ins, on the digits CNN.

One run, one model, one data split: the demo CNN (Conv 32 - Conv 64 - MaxPool -
Dense 256 - Dense 10) is trained once in Keras 3, then compressed

* by tensorflow-model-optimization (tfmot, through `tf_keras`) in a subprocess
  with `TF_USE_LEGACY_KERAS=1` (importing tfmot switches a process to legacy
  Keras, so it never enters this one), starting from the same float weights;
* by tfcompress (Keras 3) here, through `tfcompress.demo.train_pipeline` with
  the demo's epochs, batch size and learning rates, which tfmot gets too;
* by Keras 3's own `model.quantize("int8")` and `keras.distillation.Distiller`.

Every `.tflite`, tfmot's included, is evaluated and timed here, alike; the
table goes to `benchmarks/results.md`.

    python benchmarks/compare.py            # full run (~5 min on 2 cores)
    python benchmarks/compare.py --quick    # about a third of the epochs, a smoke test

Needs the `bench` extra (`pip install -e .[bench]`: tensorflow-model-optimization,
tf_keras matching TensorFlow) unless run with `--no-tfmot`.

Modules: `_tfmot_runner.py` (the subprocess) runs `_tfmot_baseline.py` (tfmot's
side, standalone); `_our_pipelines.py` (our side); `_tflite_figures.py` (accuracy,
sizes, latency of every file); `_results_table.py` (the markdown); `_timing.py`
(step times, both sides).
"""

import argparse
import json
import os
import sys
import tempfile
import time
from importlib import metadata

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402

import tfcompress  # noqa: E402
from tfcompress import datasets, demo  # noqa: E402

# benchmarks/ is sys.path[0] when this script runs.
from _our_pipelines import OurSide  # noqa: E402
from _results_table import Results, render  # noqa: E402
from _tflite_figures import tflite_figures  # noqa: E402
from _tfmot_runner import TfmotRun  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def settings(quick, num_examples):
    """The run's settings, shared by both sides (tfmot reads them as `config.json`).

    Epochs and learning rates are the demo's (`demo.demo_epochs`,
    `demo.LEARNING_RATES`); the pruning schedule is `demo.ramp_schedule`'s.

    Args:
        quick: About a third of the epochs and fewer timed steps.
        num_examples: Training examples (the schedule counts steps).
    """
    epochs = demo.demo_epochs(quick)
    # Steps do not depend on the target sparsity: any target gives them.
    schedule = demo.ramp_schedule(0.9, epochs["prune"], num_examples)
    return {
        "seed": 0,
        "batch_size": demo.BATCH_SIZE,
        "epochs": epochs,
        "learning_rates": dict(demo.LEARNING_RATES),
        "sparsity": {"prune_qat": 0.8, "prune_cluster_qat": 0.9},
        "clusters": 16,
        "prune_end_step": schedule.end_step,
        "prune_frequency": schedule.frequency,
        "timing_steps": 40 if quick else 150,
        "latency_rounds": 2 if quick else 5,
        "latency_runs": 100 if quick else 200,
    }


def log(message):
    print(message, file=sys.stderr, flush=True)


def versions():
    names = ["tensorflow", "keras", "ai-edge-litert", "tf_keras", "tensorflow-model-optimization"]
    found = []
    for name in names:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pass
    return ", ".join(found) + f", tfcompress {tfcompress.__version__}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer epochs (smoke test)")
    parser.add_argument("--no-tfmot", action="store_true", help="skip the tfmot subprocess")
    parser.add_argument("--no-tuned", action="store_true", help="skip the per-layer tfcompress row")
    parser.add_argument("--sequential", action="store_true",
                        help="run the tfmot subprocess before our side instead of alongside")
    parser.add_argument("--workdir", help="keep intermediate files (.tflite, logs) here")
    parser.add_argument("--output", default=os.path.join(HERE, "results.md"))
    args = parser.parse_args()

    started = time.time()
    data = datasets.load_digits()
    (x, y), (x_test, y_test) = data
    cfg = settings(args.quick, len(x))
    workdir = args.workdir or tempfile.mkdtemp(prefix="tfcompress_compare_")
    os.makedirs(workdir, exist_ok=True)

    # 1. The float model, trained once; both sides start from its weights.
    keras.utils.set_random_seed(cfg["seed"])
    float_model = demo.train_float(x, y, cfg["epochs"]["float"], verbose=0)
    log(f"[main]  {time.time() - started:5.0f}s float model: accuracy "
        f"{demo.keras_accuracy(float_model, x_test, y_test):.4f}")

    # 2. tfmot in its subprocess, alongside our side (or first, --sequential).
    tfmot, tfmot_error, run = None, "not run", None
    if not args.no_tfmot:
        gated = not args.sequential
        run = TfmotRun(workdir, cfg, data, float_model.get_weights(), gated=gated, log=log)
        if args.sequential:
            tfmot, tfmot_error = _wait(run)

    # 3. Our side.
    ours = OurSide(cfg, data, float_model, log)
    ours.run(per_layer=not args.no_tuned)

    # Timing slots one after the other: tfmot's (gated until now), then ours,
    # so neither side's step times include the other's CPU load.
    if run is not None and not args.sequential:
        run.start_timing()
        log(f"[main]  {time.time() - started:5.0f}s waiting for the tfmot subprocess (timing)")
        tfmot, tfmot_error = _wait(run)
    ours.log("timing training steps")
    step_seconds, step_ratios = ours.time_steps()

    # 4. Every .tflite evaluated and timed here, interleaved.
    log(f"[main]  {time.time() - started:5.0f}s TFLite accuracy and latency")
    files = {f"ours:{key}": flatbuffer for key, flatbuffer in ours.files.items()}
    if tfmot:
        files.update({f"tfmot:{key}": fb for key, fb in tfmot.pop("flatbuffers").items()})
    tflite = tflite_figures(files, x_test, y_test, cfg["latency_rounds"], cfg["latency_runs"])

    results = Results(
        settings=cfg, ours=ours, tflite=tflite, step_seconds=step_seconds,
        step_ratios=step_ratios, tfmot=tfmot, tfmot_error=tfmot_error,
        per_layer=not args.no_tuned, versions=versions(),
        command="python benchmarks/compare.py" + (" --quick" if args.quick else ""),
        elapsed=time.time() - started, split=(len(x), len(x_test)),
    )
    text = render(results)
    print(text)
    with open(args.output, "w") as f:
        f.write(text)
    with open(os.path.join(workdir, "compare.json"), "w") as f:
        json.dump({"settings": cfg, "ours_stages": ours.stages, "ours_errors": ours.errors,
                   "ours_step_seconds": step_seconds, "ours_step_ratios": step_ratios,
                   "tfmot": tfmot, "tflite": tflite, "seconds": results.elapsed}, f, indent=1)
    log(f"[main]  wrote {args.output} ({results.elapsed:.0f}s); intermediate files in {workdir}")


def _wait(run):
    """`(results, None)` of a finished tfmot run, or `(None, first line of its error)`."""
    try:
        return run.result(), None
    except RuntimeError as e:
        log(str(e))
        return None, str(e).splitlines()[0]


if __name__ == "__main__":
    main()

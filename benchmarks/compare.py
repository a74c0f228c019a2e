"""tfcompress side by side with tfmot and Keras' built-ins, on the digits CNN.

One run, one model, one data split: the demo CNN (Conv 32 - Conv 64 - MaxPool -
Dense 256 - Dense 10) is trained once in Keras 3, then compressed

* by tensorflow-model-optimization (tfmot, through `tf_keras`) in a subprocess
  with `TF_USE_LEGACY_KERAS=1` (importing tfmot switches a process to legacy
  Keras, so it never enters this one), starting from the same float weights;
* by tfcompress (Keras 3) here, with the same schedules, epochs, batch size
  and learning rates;
* by Keras 3's own `model.quantize("int8")` and `keras.distillation.Distiller`.

Pipelines: prune 80% + QAT int8; prune 90% + cluster 16 + QAT int8 (both
keeping zeros and clusters through QAT); post-training int8; distillation of a
small student. Reported per variant: top-1 accuracy of the Keras model and of
the `.tflite`, the `.tflite` size and its gzip size (`gzip -9`) with the ratio
"float32 `.tflite` bytes / gzipped bytes", the training-step time relative to
plain `fit` of the float model measured side by side (round-robin) in the same
process, and the TFLite latency median (1 thread, batch 1). All `.tflite`
files, tfmot's included, are evaluated and timed here, alike.

    python benchmarks/compare.py            # full run (~5-8 min on 2 idle cores)
    python benchmarks/compare.py --quick    # fewer epochs, a smoke test

Needs the `bench` extra (`pip install -e .[bench]`: tensorflow-model-optimization,
tf_keras matching TensorFlow). Writes the table to `benchmarks/results.md`.
"""

import argparse
import datetime
import gzip
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfcompress  # noqa: E402
from tfcompress import datasets, demo  # noqa: E402

from _timing import step_time_ratios  # noqa: E402  (benchmarks/ is sys.path[0])

HERE = os.path.dirname(os.path.abspath(__file__))

# Shared by both sides (the subprocess reads them from config.json).
COMMON = dict(
    seed=0,
    batch_size=32,
    lr_float=1e-3,
    lr_prune=5e-4,
    lr_cluster=3e-4,
    lr_qat=1e-4,
    lr_student=3e-3,
    clusters=16,
    alpha=0.1,
    temperature=4.0,
)
RUNS = {
    "full": dict(
        float_epochs=20, prune_epochs=9, cluster_epochs=4, qat_epochs=4, student_epochs=12,
        timing_steps=150, latency_rounds=5, latency_runs=200,
    ),
    "quick": dict(
        float_epochs=5, prune_epochs=3, cluster_epochs=1, qat_epochs=1, student_epochs=3,
        timing_steps=40, latency_rounds=2, latency_runs=100,
    ),
}
# Per-layer settings of the extra tfcompress-only row (the Dense 256 holds 93%
# of the weights and tolerates most; the first conv has 288 weights).
# The per-layer recipe of the demo (tfcompress.demo), the extra row of the table.
TUNED_SPARSITY = demo.HEADLINE_SPARSITY
TUNED_CLUSTERS = demo.HEADLINE_CLUSTERS

SCCE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def log(message):
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- models


def student_cnn():
    """The distillation student: ~1/40 of the teacher's parameters."""
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            layers.Conv2D(8, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(2),
            layers.Flatten(),
            layers.Dense(32, activation="relu"),
            layers.Dense(10),
        ],
        name="student",
    )


def compiled(model, learning_rate):
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate), loss=SCCE, metrics=["accuracy"]
    )
    return model


def accuracy(model, x, y):
    return float(np.mean(np.argmax(model.predict(x, verbose=0, batch_size=256), -1) == y))


def gzip_size(data):
    return len(gzip.compress(data, compresslevel=9, mtime=0))


# --------------------------------------------------------------------------- tfmot side


class TfmotRun:
    """`_tfmot_baseline.py` in a subprocess with TF_USE_LEGACY_KERAS=1."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.log_path = os.path.join(workdir, "tfmot.log")
        env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3")
        self.process = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "_tfmot_baseline.py"), workdir],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._reader = threading.Thread(target=self._relay, daemon=True)
        self._reader.start()

    def _relay(self):
        # Progress lines go to our stderr; everything (warnings too) to the log.
        with open(self.log_path, "w") as log_file:
            for line in self.process.stderr:
                log_file.write(line)
                if line.startswith("[tfmot]"):
                    log(line.rstrip())

    def result(self):
        """The subprocess' results dict, or raises RuntimeError with its log tail."""
        code = self.process.wait()
        self._reader.join()
        path = os.path.join(self.workdir, "tfmot_results.json")
        if code != 0 or not os.path.exists(path):
            with open(self.log_path) as f:
                tail = "".join(f.readlines()[-15:])
            raise RuntimeError(f"tfmot subprocess failed (exit {code}):\n{tail}")
        with open(path) as f:
            return json.load(f)


# --------------------------------------------------------------------------- our side


class Ours:
    """Runs the tfcompress pipelines; every step guarded so a missing API gives n/a."""

    def __init__(self, cfg, data, float_weights):
        (self.x, self.y), (self.x_test, self.y_test) = data
        self.cfg = cfg
        self.float_weights = float_weights
        self.steps_per_epoch = math.ceil(len(self.x) / cfg["batch_size"])
        self.stages = {}  # name -> Keras accuracy
        self.files = {}  # name -> .tflite bytes
        self.errors = {}  # name -> message
        self.timing = {}  # name -> compiled model to time against plain fit
        self.started = time.time()

    def fresh_float(self):
        model = demo.demo_cnn()
        model.set_weights(self.float_weights)
        return model

    def fit(self, model, epochs):
        model.fit(self.x, self.y, epochs=epochs, batch_size=self.cfg["batch_size"], verbose=0)

    def record(self, stage, model, flatbuffer=None):
        self.stages[stage] = accuracy(model, self.x_test, self.y_test)
        if flatbuffer is not None:
            self.files[stage] = flatbuffer
        log(f"[ours]  {time.time() - self.started:5.0f}s {stage}: accuracy {self.stages[stage]:.4f}")

    def guarded(self, name, fn):
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - a missing/broken API is a table gap, not a crash
            message = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:160]
            self.errors[name] = message
            log(f"[ours]  {name} FAILED: {message}")

    def schedule(self, final_sparsity):
        end = self.steps_per_epoch * max(1, (2 * self.cfg["prune_epochs"]) // 3)
        return tfcompress.PolynomialDecay(
            0.0, final_sparsity, begin_step=0, end_step=end, frequency=self.cfg["prune_frequency"]
        )

    def float_row(self, float_model):
        self.stages["float"] = accuracy(float_model, self.x_test, self.y_test)
        self.timing["plain"] = compiled(self.fresh_float(), self.cfg["lr_float"])
        self.files["float"] = tfcompress.lite.convert(float_model)

    def ptq(self):
        self.files["ptq_int8"] = tfcompress.lite.convert(
            self.fresh_float(), quantization="int8", representative_data=self.x[:500]
        )

    def keras_quantize(self):
        """Keras 3's post-training `model.quantize("int8")`, and its TFLite export."""
        model = self.fresh_float()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Layer Conv2D does not have a quantize method"
            model.quantize("int8")
        self.record("keras_quantize", model)
        covered = sorted(
            {layer.name for layer in model.layers for w in layer.weights if w.dtype == "int8"}
        )
        self.keras_quantize_covered = covered
        try:
            self.files["keras_quantize"] = _saved_model_to_tflite(model)
        except Exception as e:  # noqa: BLE001
            # Keep the converter's one meaningful line ("'tfl.fully_connected' op ...").
            found = re.search(r"'tfl\.[a-z_]+' op [^\n]*", str(e))
            reason = found.group(0) if found else str(e).strip().splitlines()[0]
            self.keras_quantize_export_error = f"{type(e).__name__}: {reason[:200]}"
            log(f"[ours]  keras quantize -> TFLite failed: {self.keras_quantize_export_error}")

    def prune_qat(self):
        cfg = self.cfg
        pruned = compiled(
            tfcompress.prune_low_magnitude(self.fresh_float(), pruning_schedule=self.schedule(0.8)),
            cfg["lr_prune"],
        )
        self.fit(pruned, cfg["prune_epochs"])
        self.timing["prune"] = pruned
        stripped = tfcompress.strip_pruning(pruned)
        self.record("prune80", stripped)
        qat = compiled(tfcompress.quantize_model(stripped, preserve_sparsity=True), cfg["lr_qat"])
        self.fit(qat, cfg["qat_epochs"])
        self.timing["qat_prune_preserve"] = qat
        self.record("prune80_qat", qat, tfcompress.lite.convert(qat, quantization="int8"))

    def prune_cluster_qat(self, stage="prune90_cluster_qat", sparsity=0.9, clusters=None):
        cfg = self.cfg
        schedule = (
            {name: self.schedule(s) for name, s in sparsity.items()}
            if isinstance(sparsity, dict)
            else self.schedule(sparsity)
        )
        pruned = compiled(
            tfcompress.prune_low_magnitude(self.fresh_float(), pruning_schedule=schedule),
            cfg["lr_prune"],
        )
        self.fit(pruned, cfg["prune_epochs"])
        stripped = tfcompress.strip_pruning(pruned)
        self.record(stage.replace("_cluster_qat", ""), stripped)
        clustered = compiled(
            tfcompress.cluster_weights(
                stripped,
                clusters or cfg["clusters"],
                cluster_centroids_init="kmeans++",
                preserve_sparsity=True,
            ),
            cfg["lr_cluster"],
        )
        self.fit(clustered, cfg["cluster_epochs"])
        stripped_clustered = tfcompress.strip_clustering(clustered)
        self.record(stage.replace("_qat", ""), stripped_clustered)
        qat = compiled(
            tfcompress.quantize_model(stripped_clustered, preserve_sparsity=True), cfg["lr_qat"]
        )
        self.fit(qat, cfg["qat_epochs"])
        self.record(stage, qat, tfcompress.lite.convert(qat, quantization="int8"))
        if stage == "prune90_cluster_qat":
            self.timing["cluster"] = clustered
            self.timing["qat_cluster_prune_preserve"] = qat

    def plain_qat_timing(self):
        self.timing["qat"] = compiled(tfcompress.quantize_model(self.fresh_float()), self.cfg["lr_qat"])

    def distillation(self, teacher):
        """Student alone, keras.distillation.Distiller (correct and default loss), ours."""
        cfg = self.cfg
        epochs = cfg["student_epochs"]

        def make_keras_distiller(loss):
            kd = keras.distillation
            logits = (
                kd.LogitsDistillation(temperature=cfg["temperature"])
                if loss is None
                else kd.LogitsDistillation(temperature=cfg["temperature"], loss=loss)
            )
            distiller = kd.Distiller(
                teacher=teacher,
                student=student_cnn(),
                distillation_losses=logits,
                student_loss_weight=cfg["alpha"],
            )
            distiller.compile(keras.optimizers.Adam(cfg["lr_student"]), loss=SCCE)
            return distiller

        def make_ours():
            distiller = tfcompress.Distiller(student_cnn(), teacher)
            distiller.compile(
                keras.optimizers.Adam(cfg["lr_student"]),
                distillation_loss_fn=keras.losses.KLDivergence(),
                alpha=cfg["alpha"],
                temperature=cfg["temperature"],
            )
            return distiller

        makers = {
            "student": lambda: compiled(student_cnn(), cfg["lr_student"]),
            "keras_distiller": lambda: make_keras_distiller(keras.losses.KLDivergence()),
            "keras_distiller_default": lambda: make_keras_distiller(None),
            "ours_distiller": make_ours,
        }
        for name, make in makers.items():
            def run(name=name, make=make):
                keras.utils.set_random_seed(cfg["seed"])
                model = make()
                self.fit(model, epochs)
                student = getattr(model, "student", model)
                self.record(name, student, tfcompress.lite.convert(student))
                self.timing[f"distill:{name}"] = model

            self.guarded(name, run)


def _saved_model_to_tflite(model):
    """Plain TFLite conversion of a Keras 3 model (for `model.quantize` output)."""
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as tmp:
        model.export(tmp, format="tf_saved_model", verbose=False)
        return tf.lite.TFLiteConverter.from_saved_model(tmp).convert()


# --------------------------------------------------------------------------- TFLite side


def tflite_figures(files, x_test, y_test, rounds, runs):
    """Accuracy, sizes and latency (median over interleaved rounds) of each file."""
    out = {}
    for key, flatbuffer in files.items():
        out[key] = {
            "acc": tfcompress.lite.evaluate(flatbuffer, x_test, y_test)["accuracy"],
            "bytes": len(flatbuffer),
            "gzip": gzip_size(flatbuffer),
            "latency": [],
        }
    for _ in range(rounds):
        for key, flatbuffer in files.items():
            bench = tfcompress.lite.benchmark(flatbuffer, num_threads=1, runs=runs)
            out[key]["latency"].append(bench["median_ms"])
    for figures in out.values():
        figures["latency_ms"] = statistics.median(figures.pop("latency"))
    return out


# --------------------------------------------------------------------------- table


def fmt_acc(value):
    return "n/a" if value is None else f"{100 * value:.1f}%"


def fmt_ratio(value):
    return "n/a" if value is None else f"{value:.2f}x"


def build_tables(ctx):
    """Markdown tables (main + step times) from everything measured."""
    ours, tfmot, tfl = ctx["ours"], ctx["tfmot"], ctx["tflite"]
    float_file = tfl.get("ours:float") or tfl.get("tfmot:float")
    float_bytes = float_file["bytes"] if float_file else None
    float_acc = ours.stages.get("float", (tfmot or {}).get("stages", {}).get("float"))
    ours_ratio = ctx["ours_step_ratio"]
    tfmot_ratio = (tfmot or {}).get("step_ratio", {})

    def steps(ratio, *keys):
        parts = [f"{label} {ratio[k]:.2f}x" for label, k in keys if k in ratio]
        return ", ".join(parts) if parts else "n/a"

    rows = []

    def add(variant, tool, acc_keras, file_key, step, note=""):
        figures = tfl.get(file_key) if file_key else None
        if figures:
            cells = [
                fmt_acc(figures["acc"]),
                f"{figures['bytes']:,}",
                f"{figures['gzip']:,}",
                f"{float_bytes / figures['gzip']:.1f}x" if float_bytes else "n/a",
                f"{figures['latency_ms']:.3f}",
            ]
            acc_delta = "n/a" if float_acc is None else f"{100 * (figures['acc'] - float_acc):+.1f}"
        else:
            cells = ["n/a"] * 5
            acc_delta = (
                "n/a" if acc_keras is None or float_acc is None
                else f"{100 * (acc_keras - float_acc):+.1f} (Keras)"
            )
        rows.append([variant, tool, fmt_acc(acc_keras), *cells[:1], acc_delta, *cells[1:4], step, cells[4], note])

    tfmot_name = "tfmot " + (tfmot or {}).get("versions", {}).get("tensorflow_model_optimization", "")
    add("float32 baseline", "Keras 3 (same weights for all rows)", float_acc, "ours:float", "1.00x (plain fit)")
    add(
        "post-training int8", "tfcompress.lite.convert", None, "ours:ptq_int8", "none (no training)",
        ours.errors.get("ptq", "calibrated on 500 training images"),
    )
    kq_note = "post-training; int8 Dense/EinsumDense/Embedding kernels only ("
    kq_note += ", ".join(getattr(ours, "keras_quantize_covered", [])) + " int8; convs stay float32)"
    if getattr(ours, "keras_quantize_export_error", None):
        kq_note += f"; no TFLite file: {ours.keras_quantize_export_error}"
    add(
        'Keras `model.quantize("int8")`', f"Keras {keras.__version__}", ours.stages.get("keras_quantize"),
        "ours:keras_quantize" if "keras_quantize" in ours.files else None, "none (no training)",
        ours.errors.get("keras_quantize", kq_note),
    )
    for stage, variant, keys in (
        ("prune80_qat", "prune 80% + QAT int8",
         (("prune", "prune"), ("QAT", "qat_prune_preserve"))),
        ("prune90_cluster_qat", "prune 90% + cluster 16 + QAT int8",
         (("prune", "prune"), ("cluster", "cluster"), ("QAT", "qat_cluster_prune_preserve"))),
    ):
        if tfmot is not None:
            add(variant, f"{tfmot_name} (tf_keras)", tfmot["stages"].get(stage),
                f"tfmot:{stage}" if stage in tfmot["files"] else None, steps(tfmot_ratio, *keys))
        else:
            add(variant, "tfmot", None, None, "n/a", ctx.get("tfmot_error", "not run"))
        add(variant, "tfcompress", ours.stages.get(stage),
            f"ours:{stage}" if stage in ours.files else None, steps(ours_ratio, *keys),
            ours.errors.get(stage, ""))
    if ctx["tuned"]:
        sp = ", ".join(f"{k} {int(100 * v)}%" for k, v in TUNED_SPARSITY.items())
        cl = ", ".join(f"{k} {v}" for k, v in TUNED_CLUSTERS.items())
        add("prune per layer + cluster per layer + QAT int8", "tfcompress (per-layer dicts)",
            ours.stages.get("tuned_cluster_qat"),
            "ours:tuned_cluster_qat" if "tuned_cluster_qat" in ours.files else None,
            "as above", ours.errors.get("tuned_cluster_qat", f"sparsity {sp}; clusters {cl}"))

    def distill_step(key):
        ratio = ours_ratio.get(key.replace(":student", ":plain"))
        return "n/a" if ratio is None else f"{ratio:.2f}x vs student fit"

    n_student = student_cnn().count_params()
    for key, variant, tool, note in (
        ("student", f"student alone ({n_student:,} params)", "Keras 3 fit", "labels only"),
        ("keras_distiller", "distilled student", "keras.distillation.Distiller",
         "LogitsDistillation(loss=keras.losses.KLDivergence())"),
        ("keras_distiller_default", "distilled student", "keras.distillation.Distiller",
         'default LogitsDistillation: "kl_divergence" applied to raw logits'),
        ("ours_distiller", "distilled student", "tfcompress.Distiller", "KLDivergence() on softmax(logits/T)"),
    ):
        add(variant, tool, ours.stages.get(key), f"ours:{key}" if key in ours.files else None,
            distill_step(f"distill:{key}"), ours.errors.get(key, note))

    header = ["Variant", "Tool", "Acc Keras", "Acc TFLite", "Δ pt vs float", ".tflite B",
              "gzip B", "float .tflite / gzip", "Train step vs plain fit", "Latency ms", "Notes"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]

    step_rows = [
        ("pruning (tfmot: + UpdatePruningStep callback)", "prune"),
        ("QAT", "qat"),
        ("QAT preserving sparsity", "qat_prune_preserve"),
        ("clustering preserving sparsity", "cluster"),
        ("QAT preserving clusters + sparsity", "qat_cluster_prune_preserve"),
    ]
    step_lines = [
        "| Training step vs plain `fit` | tfmot (tf_keras) | Keras 3 built-in | tfcompress |",
        "|---|---|---|---|",
    ]
    sec = ctx["ours_step_seconds"]
    tfmot_sec = (tfmot or {}).get("step_seconds", {})

    def cell(ratios, seconds, key):
        if key not in ratios:
            return "n/a"
        return f"{ratios[key]:.2f}x ({1e3 * seconds[key]:.1f} ms)"

    for label, key in step_rows:
        step_lines.append(
            f"| {label} | {cell(tfmot_ratio, tfmot_sec, key)} | | {cell(ours_ratio, sec, key)} |"
        )
    theirs, mine = ours_ratio.get("distill:keras_distiller"), ours_ratio.get("distill:ours_distiller")
    if theirs and mine:
        step_lines.append(
            "| distillation (vs plain fit of the student; Keras given KLDivergence()) | | "
            f"{cell(ours_ratio, sec, 'distill:keras_distiller')} | "
            f"{cell(ours_ratio, sec, 'distill:ours_distiller')}, {mine / theirs:.2f}x Keras' |"
        )
    plain_ms = [f"tfcompress/Keras 3 {1e3 * sec['plain']:.1f} ms" if "plain" in sec else None]
    if tfmot:
        plain_ms.append(f"tfmot/tf_keras {1e3 * tfmot['step_seconds']['plain']:.1f} ms")
    return "\n".join(lines), "\n".join(step_lines), ", ".join(p for p in plain_ms if p)


# --------------------------------------------------------------------------- main


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
    cfg = dict(COMMON, **RUNS["quick" if args.quick else "full"])
    workdir = args.workdir or tempfile.mkdtemp(prefix="tfcompress_compare_")
    os.makedirs(workdir, exist_ok=True)
    data = datasets.load_digits()
    (x, y), (x_test, y_test) = data
    cfg["prune_frequency"] = max(1, math.ceil(len(x) / cfg["batch_size"]) // 2)

    # 1. The float model, trained once; both sides start from its weights.
    keras.utils.set_random_seed(cfg["seed"])
    float_model = compiled(demo.demo_cnn(), cfg["lr_float"])
    float_model.fit(x, y, epochs=cfg["float_epochs"], batch_size=cfg["batch_size"], verbose=0)
    float_weights = float_model.get_weights()
    log(f"[main]  {time.time() - started:5.0f}s float model: accuracy "
        f"{accuracy(float_model, x_test, y_test):.4f}")

    gate = os.path.join(workdir, "timing_go")
    if os.path.exists(gate):
        os.remove(gate)
    cfg_for_tfmot = dict(cfg, timing_gate=None if args.sequential else gate)
    with open(os.path.join(workdir, "config.json"), "w") as f:
        json.dump(cfg_for_tfmot, f)
    np.savez(os.path.join(workdir, "data.npz"), x_train=x, y_train=y, x_test=x_test, y_test=y_test)
    np.savez(os.path.join(workdir, "float_weights.npz"),
             **{f"w{i}": w for i, w in enumerate(float_weights)})

    # 2. tfmot in its subprocess, alongside our side (or first, --sequential).
    tfmot, tfmot_error, run = None, None, None
    if not args.no_tfmot:
        run = TfmotRun(workdir)
        if args.sequential:
            try:
                tfmot = run.result()
            except RuntimeError as e:
                tfmot_error = str(e)

    # 3. Our side.
    ours = Ours(cfg, data, float_weights)
    ours.guarded("float", lambda: ours.float_row(float_model))
    ours.guarded("ptq", ours.ptq)
    ours.guarded("keras_quantize", ours.keras_quantize)
    ours.guarded("prune80_qat", ours.prune_qat)
    ours.guarded("prune90_cluster_qat", ours.prune_cluster_qat)
    if not args.no_tuned:
        ours.guarded("tuned_cluster_qat", lambda: ours.prune_cluster_qat(
            "tuned_cluster_qat", TUNED_SPARSITY, TUNED_CLUSTERS))
    ours.guarded("qat", ours.plain_qat_timing)
    ours.distillation(float_model)

    # Timing slots one after the other: tfmot's (gated until now), then ours,
    # so neither side's step times include the other's CPU load.
    if run is not None and tfmot is None and tfmot_error is None:
        open(gate, "w").close()
        log(f"[main]  {time.time() - started:5.0f}s waiting for the tfmot subprocess (timing)")
        try:
            tfmot = run.result()
        except RuntimeError as e:
            tfmot_error = str(e)
    if tfmot_error:
        log(tfmot_error)

    log(f"[ours]  {time.time() - ours.started:5.0f}s timing training steps")
    step_seconds, step_ratio = {}, {}
    distill_models = {k.split(":", 1)[1]: v for k, v in ours.timing.items() if k.startswith("distill:")}
    technique_models = {k: v for k, v in ours.timing.items() if not k.startswith("distill:")}
    timing_args = (x, y, cfg["timing_steps"], cfg["batch_size"])
    try:
        step_seconds, step_ratio = step_time_ratios(technique_models, *timing_args)
        if "student" in distill_models:
            # The distillers against plain fit of the same student.
            distill_models["plain"] = distill_models.pop("student")
            seconds, ratios = step_time_ratios(distill_models, *timing_args)
            step_seconds.update({f"distill:{k}": v for k, v in seconds.items()})
            step_ratio.update({f"distill:{k}": v for k, v in ratios.items()})
    except Exception as e:  # noqa: BLE001
        log(f"[ours]  step timing FAILED: {type(e).__name__}: {e}")

    # 4. Every .tflite evaluated and timed here, interleaved.
    log(f"[main]  {time.time() - started:5.0f}s TFLite accuracy and latency")
    files = {f"ours:{k}": v for k, v in ours.files.items()}
    if tfmot:
        for stage, path in tfmot["files"].items():
            with open(path, "rb") as f:
                files[f"tfmot:{stage}"] = f.read()
    tfl = tflite_figures(files, x_test, y_test, cfg["latency_rounds"], cfg["latency_runs"])
    elapsed = time.time() - started

    ctx = {
        "ours": ours, "tfmot": tfmot, "tflite": tfl, "tuned": not args.no_tuned,
        "ours_step_ratio": step_ratio, "ours_step_seconds": step_seconds,
        "tfmot_error": (tfmot_error or "").splitlines()[0] if tfmot_error else "not run",
    }
    main_table, step_table, plain_ms = build_tables(ctx)
    check = ""
    if tfmot and "tfmot:float" in tfl:
        check = (
            f"Same float weights on both sides: tf_keras accuracy {100 * tfmot['stages']['float']:.1f}%, "
            f"its float .tflite {100 * tfl['tfmot:float']['acc']:.1f}% "
            f"({tfl['tfmot:float']['bytes']:,} B).\n"
        )
    versions = (
        f"TensorFlow {_version('tensorflow')}, Keras {keras.__version__}, tfcompress "
        f"{tfcompress.__version__}, ai-edge-litert {_version('ai_edge_litert')}"
    )
    if tfmot:
        v = tfmot["versions"]
        versions += f", tf_keras {v['tf_keras']}, tensorflow-model-optimization {v['tensorflow_model_optimization']}"
    command = "python benchmarks/compare.py" + (" --quick" if args.quick else "")
    epochs = (f"float {cfg['float_epochs']}, prune {cfg['prune_epochs']} (PolynomialDecay 0 -> target "
              f"over the first 2/3), cluster {cfg['cluster_epochs']}, QAT {cfg['qat_epochs']}, "
              f"student {cfg['student_epochs']}; batch {cfg['batch_size']}; Adam lr float "
              f"{cfg['lr_float']:g} / prune {cfg['lr_prune']:g} / cluster {cfg['lr_cluster']:g} / "
              f"QAT {cfg['lr_qat']:g}")
    errors = {**ours.errors}
    gaps = "".join(f"- `{k}`: {v}\n" for k, v in errors.items())
    if tfmot_error:
        gaps += f"- tfmot: {ctx['tfmot_error']}\n"
    text = f"""# tfcompress vs tfmot vs Keras built-ins

Generated by `{command}` on {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC
in {elapsed / 60:.1f} min ({platform.machine()}, {os.cpu_count()} CPUs, shared machine: absolute
times are noisy; ratios are measured side by side). {versions}.

Digits (scikit-learn, {len(x)} train / {len(x_test)} test), demo CNN Conv 32 - Conv 64 - MaxPool -
Dense 256 - Dense 10 trained once in Keras 3; tfmot (tf_keras, subprocess with
`TF_USE_LEGACY_KERAS=1`) and tfcompress start from the same float weights with the same
schedules, epochs and learning rates: {epochs}. All `.tflite` files are evaluated and timed by
the same code (LiteRT, 1 thread, batch 1; latency median of {cfg['latency_rounds']} interleaved
rounds of {cfg['latency_runs']} runs). "float .tflite / gzip" = bytes of the float32 `.tflite`
divided by the variant's `.tflite` gzipped at level 9. The distillation teacher is the float
baseline; students train {cfg['student_epochs']} epochs on all labels with alpha
{cfg['alpha']}, T {cfg['temperature']:g}.

{main_table}

{step_table}

Step times: after a one-batch `fit` each, the models take turns one training step at a time
(the compiled train function `fit` calls; {cfg['timing_steps']} timed steps each, batch {cfg['batch_size']}, after 5 warm-up
turns), so load from other processes hits them alike; ratio = median over steps of (model
step / plain step at the same turn). tfmot's ratios are to `tf_keras` in its process (with
`UpdatePruningStep`'s hook inside the timed step), ours to Keras 3 in ours, the
two sides timed one after the other. Plain step: {plain_ms}.
{check}{"" if not gaps else chr(10) + "Gaps in this run:" + chr(10) + gaps}"""
    print(text)
    with open(args.output, "w") as f:
        f.write(text)
    with open(os.path.join(workdir, "compare.json"), "w") as f:
        json.dump({"cfg": cfg, "ours_stages": ours.stages, "ours_errors": ours.errors,
                   "ours_step_seconds": step_seconds, "tfmot": tfmot, "tflite": tfl,
                   "seconds": elapsed}, f, indent=1, default=str)
    log(f"[main]  wrote {args.output} ({elapsed:.0f}s); intermediate files in {workdir}")


def _version(module):
    try:
        from importlib.metadata import version

        return version(module.replace("_", "-"))
    except Exception:  # noqa: BLE001
        return "?"


if __name__ == "__main__":
    main()

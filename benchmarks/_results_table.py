"""Renders `compare.py`'s measurements as `results.md`: the tables and how they were made."""

import dataclasses
import datetime
import os
import platform

import keras

from tfcompress import demo

import _distillers


@dataclasses.dataclass
class Results:
    """Everything one `compare.py` run measured.

    Attributes:
        settings: The run's settings (`compare.settings()`).
        ours: The `OurSide` that ran (its `stages`, `errors`, `notes`).
        tflite: `"ours:<key>"` / `"tfmot:<key>"` -> `_tflite_figures.tflite_figures` entry.
        step_seconds, step_ratios: Our side's `OurSide.time_steps()`.
        tfmot: The tfmot subprocess' results, or None.
        tfmot_error: Why tfmot has no results ("not run" with `--no-tfmot`).
        per_layer: Whether the per-layer row ran.
        versions: Library versions, one line.
        command: The command line that made the run.
        elapsed: Seconds the run took.
        split: `(train examples, test examples)`.
    """

    settings: dict
    ours: object
    tflite: dict
    step_seconds: dict
    step_ratios: dict
    tfmot: dict
    tfmot_error: str
    per_layer: bool
    versions: str
    command: str
    elapsed: float
    split: tuple


def _acc(value):
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _ratios(ratios, *labelled_keys):
    parts = [f"{label} {ratios[key]:.2f}x" for label, key in labelled_keys if key in ratios]
    return ", ".join(parts) if parts else "n/a"


def main_table(r):
    """The main table: one row per variant and tool."""
    ours, tfmot, tfl = r.ours, r.tfmot, r.tflite
    float_figures = tfl.get("ours:float") or tfl.get("tfmot:float")
    float_bytes = float_figures["bytes"] if float_figures else None
    float_acc = ours.stages.get("float", (tfmot or {}).get("stages", {}).get("float"))
    tfmot_ratios = (tfmot or {}).get("step_ratio", {})
    rows = []

    def add(variant, tool, side, key, step, note=None):
        stages = ours.stages if side == "ours" else tfmot["stages"]
        acc_keras, figures = stages.get(key), tfl.get(f"{side}:{key}")
        if note is None:
            note = ours.errors.get(key, ours.notes.get(key, "")) if side == "ours" else ""
        if figures:
            delta = "n/a" if float_acc is None else f"{100 * (figures['acc'] - float_acc):+.1f}"
            ratio = f"{float_bytes / figures['gzip']:.1f}x" if float_bytes else "n/a"
            cells = [_acc(figures["acc"]), delta, f"{figures['bytes']:,}", f"{figures['gzip']:,}",
                     ratio, step, f"{figures['latency_ms']:.3f}"]
        else:
            delta = ("n/a" if acc_keras is None or float_acc is None
                     else f"{100 * (acc_keras - float_acc):+.1f} (Keras)")
            cells = ["n/a", delta, "n/a", "n/a", "n/a", step, "n/a"]
        rows.append([variant, tool, _acc(acc_keras), *cells, note])

    add("float32 baseline", "Keras 3 (same weights for all rows)", "ours", "float",
        "1.00x (plain fit)")
    add("post-training int8", "tfcompress.lite.convert", "ours", "ptq_int8", "none (no training)")
    add('Keras `model.quantize("int8")`', f"Keras {keras.__version__}", "ours", "keras_quantize",
        "none (no training)")
    settings = r.settings
    clusters = settings["clusters"]
    tfmot_version = (tfmot or {}).get("versions", {}).get("tensorflow_model_optimization", "")
    tfmot_tool = f"tfmot {tfmot_version} (tf_keras)"
    for key, variant, timed in (
        ("prune80_qat", f"prune {settings['sparsity']['prune_qat']:.0%} + QAT int8",
         (("prune", "prune"), ("QAT", "qat_prune_preserve"))),
        ("prune90_cluster_qat",
         f"prune {settings['sparsity']['prune_cluster_qat']:.0%} + cluster {clusters} + QAT int8",
         (("prune", "prune"), ("cluster", "cluster"), ("QAT", "qat_cluster_prune_preserve"))),
    ):
        if tfmot is not None:
            add(variant, tfmot_tool, "tfmot", key, _ratios(tfmot_ratios, *timed))
        else:
            rows.append([variant, "tfmot", *["n/a"] * 8, r.tfmot_error])
        add(variant, "tfcompress", "ours", key, _ratios(r.step_ratios, *timed))
    if r.per_layer:
        sparsity = ", ".join(f"{k} {v:.0%}" for k, v in demo.HEADLINE_SPARSITY.items())
        per_layer = ", ".join(f"{k} {v}" for k, v in demo.HEADLINE_CLUSTERS.items())
        add("prune per layer + cluster per layer + QAT int8 (the demo's recipe)",
            "tfcompress (per-layer dicts)", "ours", "tuned_cluster_qat", "as above",
            ours.errors.get("tuned_cluster_qat", f"sparsity {sparsity}; clusters {per_layer}"))
    params = demo.small_student().count_params()
    for key, (tool, setup) in _distillers.CONTENDERS.items():
        ratio = r.step_ratios.get(f"distill:{key}")
        step = "n/a" if ratio is None else f"{ratio:.2f}x vs student fit"
        variant = f"student alone ({params:,} params)" if key == "student" else "distilled student"
        add(variant, tool, "ours", key, step, ours.errors.get(key, setup))

    header = ["Variant", "Tool", "Acc Keras", "Acc TFLite", "Δ pt vs float", ".tflite B",
              "gzip B", "float .tflite / gzip", "Train step vs plain fit", "Latency ms", "Notes"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def step_table(r):
    """Training-step time of each technique relative to plain `fit`, both sides."""
    tfmot = r.tfmot or {}
    tfmot_ratios, tfmot_seconds = tfmot.get("step_ratio", {}), tfmot.get("step_seconds", {})

    def cell(ratios, seconds, key):
        return "n/a" if key not in ratios else f"{ratios[key]:.2f}x ({1e3 * seconds[key]:.1f} ms)"

    lines = [
        "| Training step vs plain `fit` | tfmot (tf_keras) | Keras 3 built-in | tfcompress |",
        "|---|---|---|---|",
    ]
    for label, key in (
        ("pruning (tfmot: + UpdatePruningStep callback)", "prune"),
        ("QAT", "qat"),
        ("QAT preserving sparsity", "qat_prune_preserve"),
        ("clustering preserving sparsity", "cluster"),
        ("QAT preserving clusters + sparsity", "qat_cluster_prune_preserve"),
    ):
        ours = cell(r.step_ratios, r.step_seconds, key)
        lines.append(f"| {label} | {cell(tfmot_ratios, tfmot_seconds, key)} | | {ours} |")
    theirs = r.step_ratios.get("distill:keras_distiller")
    mine = r.step_ratios.get("distill:ours_distiller")
    if theirs and mine:
        keras_cell = cell(r.step_ratios, r.step_seconds, "distill:keras_distiller")
        ours_cell = cell(r.step_ratios, r.step_seconds, "distill:ours_distiller")
        lines.append(
            "| distillation (vs plain fit of the student; Keras given KLDivergence()) | | "
            f"{keras_cell} | {ours_cell}, {mine / theirs:.2f}x Keras' |"
        )
    return "\n".join(lines)


def render(r):
    """The whole `results.md`: what ran, the two tables, how steps were timed."""
    s, tfmot = r.settings, r.tfmot
    epochs, rates = s["epochs"], s["learning_rates"]
    recipe = (
        f"float {epochs['float']}, prune {epochs['prune']} (PolynomialDecay 0 -> target over the "
        f"first 2/3), cluster {epochs['cluster']}, QAT {epochs['qat']}, student "
        f"{epochs['distill']}; batch {s['batch_size']}; Adam lr float {rates['float']:g} / prune "
        f"{rates['prune']:g} / cluster {rates['cluster']:g} / QAT {rates['qat']:g} / student "
        f"{rates['distill']:g}"
    )
    plain = []
    if "plain" in r.step_seconds:
        plain.append(f"tfcompress/Keras 3 {1e3 * r.step_seconds['plain']:.1f} ms")
    if tfmot:
        plain.append(f"tfmot/tf_keras {1e3 * tfmot['step_seconds']['plain']:.1f} ms")
    check = ""
    if tfmot and "tfmot:float" in r.tflite:
        figures = r.tflite["tfmot:float"]
        check = (
            f"Same float weights on both sides: tf_keras accuracy "
            f"{100 * tfmot['stages']['float']:.1f}%, its float .tflite "
            f"{100 * figures['acc']:.1f}% ({figures['bytes']:,} B).\n"
        )
    gaps = "".join(f"- `{key}`: {message}\n" for key, message in r.ours.errors.items())
    if r.tfmot_error and r.tfmot_error != "not run":
        gaps += f"- tfmot: {r.tfmot_error}\n"
    gaps = f"\nGaps in this run:\n{gaps}" if gaps else ""
    now = datetime.datetime.now(datetime.timezone.utc)
    return f"""# tfcompress vs tfmot vs Keras built-ins

Generated by `{r.command}` on {now:%Y-%m-%d %H:%M} UTC
in {r.elapsed / 60:.1f} min ({platform.machine()}, {os.cpu_count()} CPUs, shared machine: absolute
times are noisy; ratios are measured side by side). {r.versions}.

Digits (scikit-learn, {r.split[0]} train / {r.split[1]} test), demo CNN Conv 32 - Conv 64 -
MaxPool - Dense 256 - Dense 10 trained once in Keras 3; tfmot (tf_keras, subprocess with
`TF_USE_LEGACY_KERAS=1`) and tfcompress start from the same float weights with the same
schedules, epochs and learning rates, those of `make demo` (`tfcompress.demo`): {recipe}.
Every tfcompress row is trained by `tfcompress.demo.train_pipeline`. All `.tflite` files are
evaluated and timed by the same code (LiteRT, 1 thread, batch 1; latency median of
{s['latency_rounds']} interleaved rounds of {s['latency_runs']} runs). "float .tflite / gzip" =
bytes of the float32 `.tflite` divided by the variant's `.tflite` gzipped at level 9. The
distillation teacher is the float baseline; the student (`demo.small_student()`) trains on all
labels with alpha {demo.DISTILL_ALPHA}, T {demo.DISTILL_TEMPERATURE:g}.

{main_table(r)}

{step_table(r)}

Step times: after a one-batch `fit` each, the models take turns one training step at a time
(the compiled train function `fit` calls; {s['timing_steps']} timed steps each, batch
{s['batch_size']}, after 5 warm-up turns), so load from other processes hits them alike; ratio =
median over steps of (model step / plain step at the same turn). tfmot's ratios are to
`tf_keras` in its process (with `UpdatePruningStep`'s hook inside the timed step), ours to
Keras 3 in ours, the two sides timed one after the other. Plain step: {", ".join(plain)}.
{check}{gaps}"""

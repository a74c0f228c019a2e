"""`AutoCompressResult`: what `auto_compress` returns, and its tables."""

import dataclasses
import json

import keras

from tfcompress.auto import recipe as recipe_lib


@dataclasses.dataclass
class AutoCompressResult:
    """The outcome of `auto_compress`.

    Attributes:
        model: The trained QAT model (`lite.convert(model, "int8")` gives `tflite`).
        tflite: The int8 `.tflite` bytes.
        recipe: `{layer: {knob: value}}`, plain and JSON-serializable: edit it
            and pass it back as `auto_compress(..., recipe=...)` to skip the search.
        report: Rows (dicts) for the float32 `.tflite` and the compressed one:
            `model`, `size_bytes`, `gzip_bytes`, `keras_accuracy`,
            `tflite_accuracy`, `latency_ms` (LiteRT, median, 1 thread, batch
            1), `macs` (`count_macs`; None unless `objective="latency"`).
        trials: One dict per pipeline run: the recipe, its predicted and
            measured size (and MACs with `objective="latency"`), its TFLite
            accuracy, whether it kept the budget.
        baseline_accuracy: Accuracy of the float32 `.tflite` on the validation data.
        max_accuracy_drop: The budget (a fraction: 0.01 is one point).
        within_budget: True if the returned `.tflite` keeps the budget.
        seconds: Time per phase and in total.
        sensitivity: The measured sensitivity table (`Sensitivity.to_dict()`;
            per channel group with `objective="latency"`), None when a recipe
            was given.
        objective: "size" or "latency".
    """

    model: keras.Model
    tflite: bytes
    recipe: dict
    report: list
    trials: list
    baseline_accuracy: float
    max_accuracy_drop: float
    within_budget: bool
    seconds: dict
    sensitivity: dict = None
    objective: str = "size"

    def recipe_json(self):
        """The recipe as indented JSON text."""
        return json.dumps(self.recipe, indent=1)

    def report_table(self):
        """The report as a Markdown table (ratio: float32 `.tflite` bytes / gzip bytes).

        With MACs counted (`objective="latency"`), also the MACs and the
        latency against the float32 `.tflite`'s, measured in the same run.
        """
        first = self.report[0]
        macs = first.get("macs") is not None
        lines = [
            "| model | Keras acc | TFLite acc | .tflite | gzip | float .tflite / gzip | "
            + ("MACs | vs float | " if macs else "")
            + "latency (1 thread) |" + (" speed-up |" if macs else ""),
            "|---|---:|---:|---:|---:|---:|" + ("---:|---:|" if macs else "") + "---:|"
            + ("---:|" if macs else ""),
        ]
        for row in self.report:
            line = (
                f"| {row['model']} | {row['keras_accuracy']:.2%} | {row['tflite_accuracy']:.2%} | "
                f"{row['size_bytes']:,} B | {row['gzip_bytes']:,} B | "
                f"{first['size_bytes'] / row['gzip_bytes']:.1f}x | "
            )
            if macs:
                line += f"{row['macs']:,} | {row['macs'] / first['macs']:.2f}x | "
            line += f"{row['latency_ms']:.3f} ms |"
            if macs:
                line += f" {first['latency_ms'] / row['latency_ms']:.2f}x |"
            lines.append(line)
        return "\n".join(lines)

    def trials_table(self):
        """One Markdown row per pipeline run."""
        if self.objective == "latency":
            head, predicted = "predicted MACs | MACs", lambda t: (
                f"{t['predicted_macs']:,}" if t.get("predicted_macs") else "-"
            ) + f" | {t['macs']:,}"
        else:
            head, predicted = "predicted kernels", lambda t: (
                f"{t['predicted_kernel_bytes']:,} B" if t["predicted_kernel_bytes"] else "-"
            )
        lines = [
            f"| trial | recipe | {head} | gzip | TFLite acc | kept budget | time |",
            "|---:|---|---:|" + ("---:|" if self.objective == "latency" else "") + "---:|---:|:---:|---:|",
        ]
        for t in self.trials:
            lines.append(
                f"| {t['trial']} | {describe_short(t['recipe'])} | {predicted(t)}"
                + f" | {t['gzip_bytes']:,} B | {t['tflite_accuracy']:.2%} | "
                f"{'yes' if t['passed'] else 'no'} | {t['seconds']:.0f} s |"
            )
        return "\n".join(lines)

    def __str__(self):
        budget = self.baseline_accuracy - self.max_accuracy_drop
        verdict = "kept" if self.within_budget else "NOT kept"
        return (
            f"recipe:\n{recipe_lib.describe(self.recipe)}\n\n{self.trials_table()}\n\n"
            f"{self.report_table()}\n\n"
            f"budget: TFLite accuracy >= {budget:.2%} (float {self.baseline_accuracy:.2%} - "
            f"{self.max_accuracy_drop:.2%}): {verdict}; {len(self.trials)} pipeline run(s), "
            f"{self.seconds['total']:.0f} s in total"
        )


def describe_short(recipe):
    """A recipe on one line: `conv1 50%/16/8-bit, dense 95%/8/4-bit` (sparsity/clusters/bits).

    Kept channels, where the recipe sets them, come first (`50% ch/0%/-/8-bit`).
    A recipe of more than 6 layers is summed up by each knob's range.

    Example:

    >>> describe_short({"a": {"sparsity": 0.5, "clusters": 16, "weight_bits": 8},
    ...                 "b": {"sparsity": 0.9, "clusters": None, "weight_bits": 4}})
    'a 50%/16/8-bit, b 90%/-/4-bit'
    >>> describe_short({"a": {"channel_sparsity": 0.5, "sparsity": 0.0, "clusters": None,
    ...                       "weight_bits": 8}})
    'a 50% ch/0%/-/8-bit'
    """
    if not recipe:
        return "int8 only"
    shown = recipe_lib.shown_knobs(recipe)
    if len(recipe) > 6:
        parts = []
        for row in shown:
            values = [
                entry.get(row.name, row.neutral) for entry in recipe.values()
                if entry.get(row.name, row.neutral) != row.neutral
            ]
            if values:
                low, high = min(values), max(values)
                span = row.label(low) if low == high else f"{row.label(low)} to {row.label(high)}"
                parts.append(f"{row.name} {span} on {len(values)}")
        return f"{len(recipe)} layers: " + (", ".join(parts) or "int8 only")
    return ", ".join(
        f"{name} " + "/".join(row.label(entry.get(row.name, row.neutral)) for row in shown)
        for name, entry in recipe.items()
    )

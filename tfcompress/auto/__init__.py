"""Automatic compression: per-layer settings searched for an accuracy budget.

`auto_compress(model, x, y, validation_data, max_accuracy_drop=0.01)` measures
how sensitive each layer is to each setting, orders recipes by predicted loss
per byte saved, runs the real prune -> cluster -> QAT pipeline on a few of
them and returns the smallest int8 `.tflite` that keeps the budget, with its
recipe (a plain dict to edit and pass back). `objective="latency"` searches the
channels each channel group keeps instead, for the fewest multiply-accumulates.

Modules: `knobs` (the per-layer settings and the recipe format), `sizes` (the
size model), `sensitivity` (the measurements), `allocate` (frontier and trial
search), `channels` (the kept-channels knob: groups, MACs, masked
sensitivity, the latency search), `pipeline` (the training pipeline), `api`
and `result`.
"""

from tfcompress.auto.api import auto_compress
from tfcompress.auto.knobs import KNOBS, Knob
from tfcompress.auto.recipe import check_recipe
from tfcompress.auto.pipeline import train_pipeline
from tfcompress.auto.result import AutoCompressResult

__all__ = ["AutoCompressResult", "KNOBS", "Knob", "auto_compress", "check_recipe", "train_pipeline"]

"""tfcompress: make Keras 3 models small and fast for phones, inside `model.fit()`.

Pruning, quantization-aware training, weight clustering, knowledge distillation
and TFLite export for Keras 3 (the Keras that TensorFlow 2.16+ ships).
"""

__version__ = "0.1.0"

from tfcompress import datasets, pruning
from tfcompress.pruning import (
    ConstantSparsity,
    PolynomialDecay,
    PruneLowMagnitude,
    PruningSchedule,
    PruningSummaries,
    UpdatePruningStep,
    prune_low_magnitude,
    strip_pruning,
)

__all__ = [
    "__version__",
    "datasets",
    # pruning
    "pruning",
    "ConstantSparsity",
    "PolynomialDecay",
    "PruneLowMagnitude",
    "PruningSchedule",
    "PruningSummaries",
    "UpdatePruningStep",
    "prune_low_magnitude",
    "strip_pruning",
]

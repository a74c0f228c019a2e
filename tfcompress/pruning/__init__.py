"""Magnitude, block and N:M structured pruning inside `model.fit()`."""

from tfcompress.pruning.api import prune_low_magnitude, strip_pruning
from tfcompress.pruning.callbacks import (
    PruningSummaries,
    UpdatePruningStep,
    pruning_wrappers,
    sparsity_logs,
)
from tfcompress.pruning.masks import block_mask, m_by_n_mask, magnitude_mask
from tfcompress.pruning.schedules import ConstantSparsity, PolynomialDecay, PruningSchedule
from tfcompress.pruning.wrapper import PruneLowMagnitude

__all__ = [
    "ConstantSparsity",
    "PolynomialDecay",
    "PruneLowMagnitude",
    "PruningSchedule",
    "PruningSummaries",
    "UpdatePruningStep",
    "block_mask",
    "m_by_n_mask",
    "magnitude_mask",
    "prune_low_magnitude",
    "pruning_wrappers",
    "sparsity_logs",
    "strip_pruning",
]

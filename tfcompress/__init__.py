"""tfcompress: make Keras 3 models small and fast for phones, inside `model.fit()`.

Pruning, quantization-aware training, weight clustering, knowledge distillation
and TFLite export for Keras 3 (the Keras that TensorFlow 2.16+ ships).
"""

__version__ = "0.1.0"

from tfcompress import _quiet

_quiet.import_tensorflow_quietly()

from tfcompress import datasets, pruning  # noqa: E402
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
from tfcompress.pruning.channels import (
    ChannelPruningModel,
    channel_groups,
    prune_channels,
    strip_channels,
)
from tfcompress import clustering, macs, report
from tfcompress.macs import MacCount, count_macs
from tfcompress.clustering import ClusterWeights, cluster_weights, strip_clustering
from tfcompress.report import CompressionReport, CompressionSummaries, summarize
from tfcompress import distillation
from tfcompress.distillation import Distiller
from tfcompress import lite, quantization
from tfcompress.quantization import (
    QuantizeConfig,
    QuantizeWrapper,
    quantize_annotate_layer,
    quantize_annotate_model,
    quantize_apply,
    quantize_model,
)
from tfcompress import auto
from tfcompress.auto import AutoCompressResult, auto_compress

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
    # channel pruning
    "ChannelPruningModel",
    "channel_groups",
    "prune_channels",
    "strip_channels",
    # clustering
    "clustering",
    "ClusterWeights",
    "cluster_weights",
    "strip_clustering",
    # report
    "report",
    "macs",
    "MacCount",
    "count_macs",
    "CompressionReport",
    "CompressionSummaries",
    "summarize",
    # distillation
    "distillation",
    "Distiller",
    # quantization and export
    "quantization",
    "lite",
    "QuantizeConfig",
    "QuantizeWrapper",
    "quantize_annotate_layer",
    "quantize_annotate_model",
    "quantize_apply",
    "quantize_model",
    # automatic compression
    "auto",
    "AutoCompressResult",
    "auto_compress",
]

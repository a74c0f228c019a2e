"""Quantization-aware training: int8 (or 4-, 2-, 1-bit weight) fake-quant matching TFLite.

`quantize_model(model)` returns a model that trains as usual with its weights
and activations rounded to int8 exactly where the TFLite converter will store
them; `tfcompress.lite.convert(qat_model, quantization="int8")` then writes an
integer `.tflite` that computes what the Keras model computed.
"""

from tfcompress.quantization.api import (
    float_layers,
    quantize_annotate_layer,
    quantize_annotate_model,
    quantize_apply,
    quantize_model,
)
from tfcompress.quantization.configs import QuantizeConfig, default_quantize_config
from tfcompress.quantization.folding import fold_batchnorm
from tfcompress.quantization.lowbit import BinaryQuantizer, TernaryQuantizer
from tfcompress.quantization.quantizers import ActivationQuantizer, WeightQuantizer
from tfcompress.quantization.wrapper import QuantizeAnnotate, QuantizeWrapper

__all__ = [
    "ActivationQuantizer",
    "BinaryQuantizer",
    "QuantizeAnnotate",
    "QuantizeConfig",
    "QuantizeWrapper",
    "TernaryQuantizer",
    "WeightQuantizer",
    "default_quantize_config",
    "float_layers",
    "fold_batchnorm",
    "quantize_annotate_layer",
    "quantize_annotate_model",
    "quantize_apply",
    "quantize_model",
]

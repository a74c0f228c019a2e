"""Converting a model with low-bit weights, and checking they came out as INT4.

`tfcompress.lite.convert` hands its configured converter to `prepare_converter`
and the result to `check_int4`.
For a QAT model whose weights are on a grid of at most 4 bits (`weight_bits`
4, 2 or 1) it refuses a float export (LiteRT cannot run 4-bit
quantize-dequantize pairs), and otherwise

* sets the converter's QDQ conversion mode to "STATIC": the default mode
  cannot keep one range per output unit on Dense (FULLY_CONNECTED transposes
  the kernel: "'tfl.transpose' op has mismatched quantized axes") or Conv1D,
  and a grid of 3 or 15 levels needs those ranges. The mode is set for
  low-bit models only: on int8 models it gives identical files except where
  an activation is not fused (swish: STATIC leaves its LOGISTIC and MUL
  float), so the int8 path stays as it was;
* checks that every low-bit weight is an INT4 tensor in the flatbuffer, and
  raises naming the layer otherwise (the converter silently keeps a weight it
  cannot pack as float or int8).
"""

import collections
import re

import numpy as np

from tfcompress import _rewrite

# Weights on a grid of at most this many bits are stored as INT4.
INT4_BITS = 4

LowBitWeight = collections.namedtuple("LowBitWeight", "layer wrapper weight size bits")


def low_bit_weights(model):
    """The weights of `model` that QAT puts on a grid of at most 4 bits.

    Args:
        model: A Keras model (QAT or not).

    Returns:
        A list of `LowBitWeight(layer, wrapper, weight, size, bits)`: the
        layer's name, its `QuantizeWrapper`'s name, the weight attribute, its
        number of values and `weight_bits` (4, 2 or 1).
    """
    from tfcompress.quantization.wrapper import QuantizeWrapper

    found = []
    for layer in _rewrite.iter_layers(model):
        if not isinstance(layer, QuantizeWrapper):
            continue
        for name, quantizer in layer.quantize_config.weights.items():
            if quantizer.num_bits <= INT4_BITS:
                size = int(np.prod(getattr(layer.layer, name).shape))
                found.append(
                    LowBitWeight(layer.layer.name, layer.name, name, size, quantizer.weight_bits)
                )
    return found


def prepare_converter(converter, model):
    """Sets the low-bit conversion mode on `converter` for a low-bit `model`.

    Call it before `converter.convert()`, then `check_int4` on the result with
    what it returns.

    Args:
        converter: A configured `tf.lite.TFLiteConverter` for `model`.
        model: The Keras model it converts.

    Returns:
        The `LowBitWeight`s expected as INT4 (empty for other models, whose
        converter is left as it was).

    Raises:
        ValueError: for a low-bit model converted without quantization.
    """
    expected = low_bit_weights(model)
    if not expected:
        return expected
    if not converter.optimizations:
        # A float export keeps each FakeQuant as a quantize-dequantize pair,
        # which at 4 bits is a QUANTIZE to UINT4 that LiteRT cannot run.
        layers = sorted({w.layer for w in expected})
        raise ValueError(
            f"Layers {layers} have low-bit weights, which LiteRT runs in an integer model "
            "only: convert with quantization='int8' (the weights are then packed INT4). "
            "Received: quantization=None"
        )
    converter._experimental_qdq_conversion_mode = "STATIC"
    return expected


def check_int4(flatbuffer, expected):
    """Raises ValueError unless each expected weight is an INT4 tensor of its size.

    Tensors are matched by size (the converter keeps the number of values while
    it transposes kernels); names only decide which layer to blame.

    Args:
        flatbuffer: The `.tflite` bytes.
        expected: `LowBitWeight`s (`low_bit_weights(model)`).

    Raises:
        ValueError: naming each layer whose low-bit weight is not INT4.
    """
    from tfcompress.report import stored_bits, tflite_weights

    tensors = [
        (name, values.size, stored_bits(values) == INT4_BITS)
        for name, values, _ in tflite_weights(flatbuffer)
    ]
    int4_sizes = collections.Counter(size for _, size, is_int4 in tensors if is_int4)
    short = collections.Counter(w.size for w in expected) - int4_sizes
    if not short:
        return
    suspects = [w for w in expected if short[w.size]]
    # Of the weights of a size that lacks INT4 tensors, blame those whose
    # layer's tensor of that size came out in another type.
    stored_otherwise = [(name, size) for name, size, is_int4 in tensors if not is_int4]
    blamed = [
        w for w in suspects
        if any(size == w.size and _in_scope(name, w.wrapper) for name, size in stored_otherwise)
    ] or suspects
    listed = "; ".join(
        f"'{w.layer}' ({w.weight}, {w.size} values, {_describe(w.bits)})" for w in blamed
    )
    raise ValueError(
        f"The .tflite does not store these low-bit weights as INT4: {listed}. The converter "
        "keeps a weight it cannot pack in int8 or float (e.g. a Dense on a sequence with one "
        "range per tensor, as clustered weights have); quantize these layers with 8 bits "
        "(weight_bits={'<layer>': 8, None: ...})."
    )


def _in_scope(tensor_name, wrapper_name):
    """True if a tensor name holds the wrapper's name scope (maybe uniquified: `name_1`)."""
    pattern = re.compile(re.escape(wrapper_name) + r"(_\d+)?")
    return any(pattern.fullmatch(part) for part in re.split(r"[/;]", tensor_name))


def _describe(bits):
    return {2: "ternary", 1: "binary"}.get(bits, f"{bits}-bit")

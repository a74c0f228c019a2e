"""The size model: gzipped bytes of a layer's integer kernels under each joint setting.

What `objective="size"` minimizes is the gzip size of the int8 `.tflite`.
Most of it is kernels, so each candidate setting of a layer is priced by
applying the knobs to its kernels at once (`Knob.apply`, in pipeline order),
rounding them to the integers TFLite stores (symmetric int8, per output
channel where QAT quantizes per channel, per tensor for clustered kernels,
as `quantize_model` keeps clusters shared; at 4 bits and below, values in
[-7, 7] packed two per byte as INT4) in TFLite's layout, and gzipping
them. The real pipeline then trains, which moves values but keeps the zeros
and the number of distinct values, so these prices rank settings well; the
budget check measures the real file.

The second part of the price is the kernel's quantization scales
(`scale_bytes`): a float32 per output channel for the kernel and another for
its int32 bias, which gzip cannot shrink. They are a fifth of a small
model's compressed file (1.5 of 7.4 kB for the mobile block), and a setting
decides how many there are: a kernel QAT keeps shared has one scale per
tensor, low bits give a Dense kernel one per channel where int8 has one per
tensor. Shared, as `quantize_model(preserve_sparsity=True)` decides it (the
pipeline's QAT of a recipe that prunes): a kernel with few distinct values
after pruning and clustering (`count_clusters`), i.e. a clustered one, or a
small one pruned so far that its survivors are few.
"""

import gzip
import itertools

import keras
import numpy as np

from tfcompress import _layers
from tfcompress.auto import knobs as knobs_lib
from tfcompress.quantization.configs import default_quantize_config
from tfcompress.quantization.wrapper import count_clusters

# The largest code of each storage: int8, and INT4 (which also holds the
# ternary and binary grids).
_INT8_MAX = 127
_INT4_MAX = 7
# Values of a kernel gzipped to price it, at most (see `codes_bytes`).
_GZIP_SAMPLE = 1 << 16
# Bytes per quantization channel of a kernel in the gzipped `.tflite`: its
# float32 scale and its bias' (input scale x kernel scale). The int64 zero
# points beside them are all 0 and gzip to almost nothing.
_SCALE_BYTES = 8


def kernel_codes(layer, variable, kernel, shared, bits=8):
    """The integers TFLite stores for `kernel` (a value of `variable` of `layer`).

    Args:
        layer: The Keras layer.
        variable: Which of its variables `kernel` is (for its quantization axes).
        kernel: Numpy array in Keras' layout.
        shared: True for a clustered kernel: one scale for the tensor, so the
            shared values stay shared.
        bits: The layer's weight bits: 8 gives int8 codes, 4 and below INT4
            codes in [-7, 7] (see `packed_int4`).

    Returns:
        An int8 array in TFLite's layout (output channels first for Dense and
        convolutions).

    Example:

    >>> import keras
    >>> dense = keras.layers.Dense(2)
    >>> dense.build((None, 2))
    >>> kernel_codes(dense, dense.kernel, np.array([[1.0, -0.5], [0.0, 0.25]]), False).tolist()
    [[127, 0], [-64, 32]]
    """
    axes = None if shared else _channel_axes(layer, variable, bits)
    magnitude = np.abs(kernel)
    if axes is None:
        bound = np.full((1,) * kernel.ndim, magnitude.max())
    else:
        bound = magnitude.max(axis=tuple(range(kernel.ndim - len(axes))), keepdims=True)
    largest = _INT8_MAX if bits == 8 else _INT4_MAX
    scale = np.maximum(bound, 1e-12) / largest
    codes = np.clip(np.round(kernel / scale), -largest, largest).astype(np.int8)
    if isinstance(layer, _layers.DEPTHWISE_LAYERS) or codes.ndim < 2:
        return codes  # TFLite's depthwise layout (1, h, w, in x multiplier) keeps this order
    return np.moveaxis(codes, -1, 0)


def packed_int4(codes):
    """INT4 codes as TFLite stores them: two per byte, the first in the low nibble.

    Example:

    >>> packed_int4(np.array([1, -1, 7], np.int8)).tolist()
    [241, 7]
    """
    flat = codes.reshape(-1).astype(np.uint8) & 0x0F
    if flat.size % 2:
        flat = np.append(flat, np.uint8(0))
    return flat[0::2] | (flat[1::2] << 4)


def _channel_axes(layer, variable, bits):
    # Low-bit weights have a range per channel also where int8 has one per
    # tensor (Dense, Conv1D): the quantizers `quantize_model` gives them say.
    if bits == 8:
        config = default_quantize_config(layer)
        quantizers = config.weights if config is not None else {}
    else:
        quantizers = knobs_lib.low_bit_quantizers(layer, bits)
    quantizer = quantizers.get(knobs_lib.weight_attribute(layer, variable))
    return None if quantizer is None else quantizer.channel_axes


def scale_bytes(layer, variable, shape, shared, bits=8):
    """Predicted gzip bytes of the quantization scales TFLite stores with a kernel.

    Args:
        layer, variable: The Keras layer and which of its kernels.
        shape: The kernel's shape in Keras' layout.
        shared: True for a kernel QAT keeps shared (one scale for the tensor).
        bits: The layer's weight bits.

    Example:

    >>> import keras
    >>> dense = keras.layers.Dense(16)
    >>> dense.build((None, 8))
    >>> [scale_bytes(dense, dense.kernel, (8, 16), False, bits) for bits in (8, 4)]
    [8, 128]
    """
    axes = None if shared else _channel_axes(layer, variable, bits)
    channels = 1 if axes is None else int(np.prod([shape[axis] for axis in axes]))
    return _SCALE_BYTES * channels


def gzip_bytes(data):
    """Length of `data` gzipped at level 9, as the objective measures the `.tflite`."""
    return len(gzip.compress(bytes(data), compresslevel=9, mtime=0))


def codes_bytes(codes, bits=8):
    """Predicted gzip bytes of `codes` (TFLite layout, `bits` per weight) inside the `.tflite`.

    A big kernel is priced from evenly spaced rows (output channels) holding
    about `_GZIP_SAMPLE` values, scaled up: gzip's cost per value is steady
    along a kernel, and compressing megabytes for every candidate is slow.
    """
    store = packed_int4 if bits < 8 else (lambda c: c)
    rows = codes.reshape(codes.shape[0], -1) if codes.ndim > 1 else codes.reshape(1, -1)
    if rows.size <= _GZIP_SAMPLE or rows.shape[0] < 8:
        return gzip_bytes(store(rows).tobytes())
    step = int(np.ceil(rows.size / _GZIP_SAMPLE))
    sample = rows[::step]
    return int(round(gzip_bytes(store(sample).tobytes()) * rows.shape[0] / sample.shape[0]))


def size_table(layer, grids=None):
    """Predicted gzip bytes of `layer`'s kernels and their scales for every joint setting.

    Args:
        layer: A built layer with compressible kernels.
        grids: `{knob: values}`; default each knob's own grid.

    Returns:
        `{settings tuple (one value per knob, in KNOBS order): bytes}`.
    """
    rows = knobs_lib.KNOBS
    grids = grids or {row.name: row.grid for row in rows}
    variables = knobs_lib.kernels(layer)
    table = {}
    # Knob i's effect depends on the values of knobs 0..i only, and the product
    # runs in lexicographic order: keep the kernels along the current prefix.
    chain = [((), [keras.ops.convert_to_numpy(v) for v in variables])]
    bits_at = rows.index(knobs_lib.BITS)
    shared_by_prefix = {}
    for combo in itertools.product(*(grids[row.name] for row in rows)):
        depth = 0
        while depth + 1 < len(chain) and chain[depth + 1][0] == combo[: depth + 1]:
            depth += 1
        del chain[depth + 1 :]
        for d in range(depth, len(combo)):
            kernels = [
                rows[d].apply(k, combo[d], seed, layer, variable)
                for seed, (variable, k) in enumerate(zip(variables, chain[-1][1]))
            ]
            chain.append((combo[: d + 1], kernels))
        # QAT keeps a kernel shared (one scale) by what pruning and clustering left of it.
        prefix = combo[:bits_at]
        if prefix not in shared_by_prefix:
            shared_by_prefix[prefix] = [count_clusters(k, None) is not None for k in chain[bits_at][1]]
        bits = combo[bits_at]
        table[combo] = sum(
            codes_bytes(kernel_codes(layer, variable, kernel, shared, bits), bits)
            + scale_bytes(layer, variable, kernel.shape, shared, bits)
            for variable, kernel, shared in zip(variables, chain[-1][1], shared_by_prefix[prefix])
        )
    return table

"""The size model: gzipped bytes of a layer's int8 kernels under each joint setting.

What `objective="size"` minimizes is the gzip size of the int8 `.tflite`.
Almost all of it is kernels, so each candidate setting of a layer is priced by
applying the knobs to its kernels at once (`Knob.apply`, in pipeline order),
rounding them to the integers TFLite stores (symmetric int8, per output
channel where QAT quantizes per channel, per tensor for clustered kernels,
as `quantize_model` keeps clusters shared) in TFLite's layout, and gzipping
them. The real pipeline then trains, which moves values but keeps the zeros
and the number of distinct values, so these prices rank settings well; the
budget check measures the real file.
"""

import gzip
import itertools

import keras
import numpy as np

from tfcompress import _layers
from tfcompress.auto import knobs as knobs_lib
from tfcompress.quantization.configs import default_quantize_config

_INT8_MAX = 127
# Values of a kernel gzipped to price it, at most (see `codes_bytes`).
_GZIP_SAMPLE = 1 << 16


def kernel_codes(layer, variable, kernel, shared):
    """The int8 values TFLite stores for `kernel` (a value of `variable` of `layer`).

    Args:
        layer: The Keras layer.
        variable: Which of its variables `kernel` is (for its quantization axes).
        kernel: Numpy array in Keras' layout.
        shared: True for a clustered kernel: one scale for the tensor, so the
            shared values stay shared.

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
    axes = None if shared else _channel_axes(layer, variable)
    magnitude = np.abs(kernel)
    if axes is None:
        bound = np.full((1,) * kernel.ndim, magnitude.max())
    else:
        bound = magnitude.max(axis=tuple(range(kernel.ndim - len(axes))), keepdims=True)
    scale = np.maximum(bound, 1e-12) / _INT8_MAX
    codes = np.clip(np.round(kernel / scale), -_INT8_MAX, _INT8_MAX).astype(np.int8)
    if isinstance(layer, _layers.DEPTHWISE_LAYERS) or codes.ndim < 2:
        return codes  # TFLite's depthwise layout (1, h, w, in x multiplier) keeps this order
    return np.moveaxis(codes, -1, 0)


def _channel_axes(layer, variable):
    config = default_quantize_config(layer)
    if config is None:
        return None
    for attribute, quantizer in config.weights.items():
        if getattr(layer, attribute, None) is variable:
            return quantizer.channel_axes
    return None


def gzip_bytes(data):
    """Length of `data` gzipped at level 9, as the objective measures the `.tflite`."""
    return len(gzip.compress(bytes(data), compresslevel=9, mtime=0))


def codes_bytes(codes):
    """Predicted gzip bytes of int8 `codes` (TFLite layout) inside the `.tflite`.

    A big kernel is priced from evenly spaced rows (output channels) holding
    about `_GZIP_SAMPLE` values, scaled up: gzip's cost per value is steady
    along a kernel, and compressing megabytes for every candidate is slow.
    """
    rows = codes.reshape(codes.shape[0], -1) if codes.ndim > 1 else codes.reshape(1, -1)
    if rows.size <= _GZIP_SAMPLE or rows.shape[0] < 8:
        return gzip_bytes(rows.tobytes())
    step = int(np.ceil(rows.size / _GZIP_SAMPLE))
    sample = rows[::step]
    return int(round(gzip_bytes(sample.tobytes()) * rows.shape[0] / sample.shape[0]))


def size_table(layer, grids=None):
    """Predicted gzip bytes of `layer`'s kernels for every joint setting of the grids.

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
    for combo in itertools.product(*(grids[row.name] for row in rows)):
        depth = 0
        while depth + 1 < len(chain) and chain[depth + 1][0] == combo[: depth + 1]:
            depth += 1
        del chain[depth + 1 :]
        for d in range(depth, len(combo)):
            kernels = [rows[d].apply(k, combo[d], seed) for seed, k in enumerate(chain[-1][1])]
            chain.append((combo[: d + 1], kernels))
        shared = combo[rows.index(knobs_lib.CLUSTERS)] is not None
        table[combo] = sum(
            codes_bytes(kernel_codes(layer, variable, kernel, shared))
            for variable, kernel in zip(variables, chain[-1][1])
        )
    return table

"""Where the bytes of a model are: `summarize` a Keras model or a `.tflite`.

For every weight tensor the report gives its shape, dtype, parameter count,
sparsity, number of distinct values, entropy (bits per weight) and bytes; for
the whole model the float32 size, the actual size, the gzip size, and two
bounds on what an entropy coder could reach: the Shannon entropy of each
tensor's values and the size of a Huffman code of them (as in Deep Compression,
Han et al. 2016). Only numpy is needed; `.tflite` files are read through the
LiteRT flatbuffer schema, after `tfcompress._flatbuffer.check_model` and
LiteRT's verifier have accepted the file.
"""

import dataclasses
import gzip
import heapq
import io
import os

import keras
import numpy as np

from tfcompress import _flatbuffer, _rewrite, _validate


def huffman_code_lengths(counts):
    """Code length (bits) of each symbol in a Huffman code for these counts.

    Args:
        counts: 1-D sequence of positive symbol counts.

    Returns:
        An int64 numpy array of code lengths, aligned with `counts`. A single
        symbol gets a 1-bit code (a code needs at least one bit).

    Example:

    >>> huffman_code_lengths([5, 2, 1, 1]).tolist()
    [1, 2, 3, 3]
    """
    counts = np.asarray(counts, dtype=np.int64).ravel()
    n = counts.size
    if n == 0:
        return np.zeros(0, np.int64)
    if n == 1:
        return np.ones(1, np.int64)
    # Nodes 0..n-1 are leaves, later ones internal; remember each node's parent
    # and read depths off top-down (children are created before parents).
    parent = np.zeros(2 * n - 1, np.int64)
    heap = [(int(c), i) for i, c in enumerate(counts)]
    heapq.heapify(heap)
    next_node = n
    while len(heap) > 1:
        c1, a = heapq.heappop(heap)
        c2, b = heapq.heappop(heap)
        parent[a] = parent[b] = next_node
        heapq.heappush(heap, (c1 + c2, next_node))
        next_node += 1
    depth = np.zeros(2 * n - 1, np.int64)
    for node in range(2 * n - 3, -1, -1):
        depth[node] = depth[parent[node]] + 1
    return depth[:n]


def huffman_bits(values):
    """Total bits of `values` Huffman-coded with a code built from their own counts."""
    _, counts = np.unique(np.asarray(values).ravel(), return_counts=True)
    return int(np.sum(counts * huffman_code_lengths(counts)))


def entropy_bits(values):
    """Shannon entropy of the distribution of `values`, in bits per value."""
    _, counts = np.unique(np.asarray(values).ravel(), return_counts=True)
    if counts.size <= 1:
        return 0.0
    p = counts / counts.sum()
    return float(-np.sum(p * np.log2(p)))


@dataclasses.dataclass
class TensorRow:
    """One weight tensor of a report."""

    name: str
    shape: tuple
    dtype: str
    params: int
    sparsity: float
    distinct: int
    bits_per_weight: float  # Shannon entropy of the values
    bytes: int
    huffman_bytes: int
    macs: int = None  # of the layer, on its first weight (Keras models only)


@dataclasses.dataclass
class CompressionReport:
    """Per-tensor figures and totals of a model's weights.

    Attributes:
        source: `"keras"` or `"tflite"`.
        rows: One `TensorRow` per weight tensor.
        float32_bytes: Size of all weights stored as float32.
        actual_bytes: Size of the weights as stored (the whole file for
            `.tflite`).
        gzip_bytes: gzip (level 9) size of the file (`.tflite`) or of the
            weights' raw bytes concatenated (Keras).
        entropy_bytes: Sum over tensors of params x entropy / 8: the bound for
            any code of each tensor's values taken one at a time.
        huffman_bytes: Sum over tensors of their Huffman-coded size (codebooks
            not counted). A Huffman code spends at least one bit per weight,
            so on very sparse tensors gzip (which codes runs of zeros) can be
            smaller; the entropy bound is the one neither can beat value by value.
        macs: Multiply-accumulates of one inference (`tfcompress.count_macs`;
            Keras models only, else None).
    """

    source: str
    rows: list
    float32_bytes: int
    actual_bytes: int
    gzip_bytes: int
    entropy_bytes: int
    huffman_bytes: int
    macs: int = None

    @property
    def params(self):
        return sum(row.params for row in self.rows)

    @property
    def sparsity(self):
        """Fraction of zeros over all weights."""
        total = self.params
        zeros = sum(row.sparsity * row.params for row in self.rows)
        return zeros / total if total else 0.0

    def to_dict(self):
        """The report as plain numbers and lists (JSON-serialisable)."""
        return {
            "source": self.source,
            "params": self.params,
            "sparsity": self.sparsity,
            "float32_bytes": self.float32_bytes,
            "actual_bytes": self.actual_bytes,
            "gzip_bytes": self.gzip_bytes,
            "entropy_bytes": self.entropy_bytes,
            "huffman_bytes": self.huffman_bytes,
            "macs": self.macs,
            "rows": [
                {**dataclasses.asdict(row), "shape": list(row.shape)} for row in self.rows
            ],
        }

    def __str__(self):
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"Compression report ({self.source})", show_footer=False)
        table.add_column("tensor", overflow="fold")
        for header in ("shape", "dtype", "params", "sparsity", "distinct"):
            table.add_column(header, justify="left" if header == "dtype" else "right")
        for header in ("entropy bits/w", "bytes", "Huffman bytes"):
            table.add_column(header, justify="right")
        if self.macs is not None:
            table.add_column("MACs", justify="right")
        for row in self.rows:
            macs = [] if self.macs is None else [f"{row.macs:,}" if row.macs else ""]
            table.add_row(
                row.name,
                "x".join(str(d) for d in row.shape) or "scalar",
                row.dtype,
                f"{row.params:,}",
                f"{row.sparsity:.1%}",
                f"{row.distinct:,}",
                f"{row.bits_per_weight:.2f}",
                _size(row.bytes),
                _size(row.huffman_bytes),
                *macs,
            )
        buffer = io.StringIO()
        console = Console(file=buffer, width=160, color_system=None, force_terminal=False)
        console.print(table)
        ratio = lambda b: f"{self.float32_bytes / b:.1f}x" if b else "-"  # noqa: E731
        lines = [
            f"params {self.params:,}   sparsity {self.sparsity:.1%}",
            f"float32 size   {_size(self.float32_bytes):>10}",
            f"actual size    {_size(self.actual_bytes):>10}   {ratio(self.actual_bytes)} smaller",
            f"gzip size      {_size(self.gzip_bytes):>10}   {ratio(self.gzip_bytes)} smaller",
            f"entropy bound  {_size(self.entropy_bytes):>10}   {ratio(self.entropy_bytes)} smaller",
            f"Huffman coded  {_size(self.huffman_bytes):>10}   {ratio(self.huffman_bytes)} smaller",
        ]
        if self.macs is not None:
            lines.append(f"MACs per inference {self.macs:,}")
        return buffer.getvalue() + "\n".join(lines)


def summarize(obj):
    """Builds the compression report of a Keras model or a `.tflite` model.

    Args:
        obj: A `keras.Model` (plain, or holding pruning/clustering/QAT
            wrappers: a wrapper's weights are reported as they will ship, e.g.
            masked or centroid-gathered), a path to a `.keras` or `.tflite`
            file, or the bytes of a `.tflite`.

    Returns:
        A `CompressionReport`. `print(report)` shows the table.

    Raises:
        TypeError: for an object that is none of the above.
        ValueError: for bytes or a (non-`.keras`) file that is not a valid
            TFLite model (truncated, corrupted, junk after a right header),
            or a `.keras` file that is not a complete Keras archive.
        FileNotFoundError: for a path that does not exist.

    Example:

    ```python
    report = tfcompress.summarize("model.tflite")
    print(report)
    report.to_dict()["gzip_bytes"]
    ```
    """
    if isinstance(obj, keras.Model):
        if not obj.built:
            _validate.check_built(obj, "report")
        return _with_macs(_from_tensors("keras", keras_weights(obj)), obj)
    if isinstance(obj, (str, os.PathLike)) and os.fspath(obj).endswith(".keras"):
        model = _validate.load_keras_model(obj, "obj")
        return _with_macs(_from_tensors("keras", keras_weights(model)), model)
    if isinstance(obj, (str, os.PathLike, bytes, bytearray, memoryview)):
        data = _validate.read_flatbuffer(obj, "obj")
        return _from_tensors("tflite", tflite_weights(data), file_bytes=data)
    raise TypeError(
        "summarize expects a keras.Model, a .keras or .tflite path, or .tflite bytes. "
        f"Received: obj={obj!r} of type {type(obj).__name__}"
    )


def keras_weights(model):
    """`[(name, numpy array, zero value)]` of the weights a Keras model ships.

    Wrappers' own variables (masks, centroids, step counters, ranges) are left
    out; every compression wrapper contributes the values its wrapped weights
    will ship with (masked, centroid-gathered, fake-quantized). Of a
    `Distiller`, only the student ships.
    """
    from tfcompress._wrapper import CompressionWrapper
    from tfcompress.distillation import Distiller

    if isinstance(model, Distiller):
        model = model.student
    shipped, skip = {}, set()
    for layer in [model, *_rewrite.iter_layers(model)]:
        # Training state a model holds itself (channel masks, step counters).
        skip.update(id(v) for v in getattr(layer, "compression_state_variables", ()))
        if not isinstance(layer, CompressionWrapper):
            continue
        inner_ids = {id(v) for v in layer.layer.weights}
        skip.update(id(v) for v in layer.weights if id(v) not in inner_ids)
        shipped.update(layer.shipped_weights())
    result, seen = [], set()
    for variable in model.weights:
        if id(variable) in seen or id(variable) in skip:
            continue
        seen.add(id(variable))
        value = shipped.get(id(variable))
        if value is None:
            value = keras.ops.convert_to_numpy(variable)
        result.append((variable.path, np.asarray(value), 0))
    return result


# INT4 tensors (two values per byte) are unpacked to int8 values of this dtype:
# int8 carrying a note that the file stores them in 4 bits.
INT4 = _flatbuffer.INT4


def stored_bits(values):
    """Bits per value in the file: 4 for unpacked INT4 tensors, else the dtype's.

    Example:

    >>> stored_bits(np.zeros(3, INT4)), stored_bits(np.zeros(3, np.float32))
    (4, 32)
    """
    return (values.dtype.metadata or {}).get("stored_bits", 8 * values.dtype.itemsize)


def _with_macs(report, model):
    """Fills in the MACs of each layer (on its first weight's row) and the total."""
    from tfcompress.distillation import Distiller
    from tfcompress.macs import count_macs

    if isinstance(model, Distiller):
        model = model.student
    try:
        counts = count_macs(model)
    except ValueError:  # no graph, or shapes that are not known
        return report
    first_weight = {
        layer.weights[0].path: counts.layers[layer.name]
        for layer in _rewrite.iter_layers(model)
        if layer.name in counts.layers and layer.weights
    }
    for row in report.rows:
        row.macs = first_weight.get(row.name)
    report.macs = counts.total
    return report


def tflite_weights(data):
    """`[(name, numpy array, zero value)]` of the constant tensors of a `.tflite`.

    Constant tensors are those whose buffer holds data. For quantized tensors
    the zero value is the zero point, so sparsity counts real zeros. INT4
    tensors come unpacked, with the dtype `INT4` (see `stored_bits`).

    Args:
        data: The bytes (or the path) of a `.tflite` file.

    Returns:
        A list of `(name, array, zero)` triples.

    Raises:
        ValueError: if `data` is not a valid TFLite model (truncated,
            corrupted, or not a flatbuffer at all).
    """
    return _flatbuffer.constant_tensors(_validate.read_flatbuffer(data, "data"))


def _from_tensors(source, tensors, file_bytes=None):
    rows, raw = [], []
    entropy_total = huffman_total = 0.0
    for name, values, zero in tensors:
        flat = values.ravel()
        _, counts = np.unique(flat, return_counts=True)
        bits = entropy_bits(flat)
        huff = int(np.sum(counts * huffman_code_lengths(counts))) if flat.size else 0
        entropy_total += flat.size * bits / 8
        huffman_total += huff / 8
        stored = stored_bits(values)
        rows.append(
            TensorRow(
                name=name,
                shape=tuple(values.shape),
                dtype="int4" if stored == 4 else str(values.dtype),
                params=int(flat.size),
                sparsity=float(np.mean(flat == zero)) if flat.size else 0.0,
                distinct=int(counts.size),
                bits_per_weight=bits,
                bytes=-(-flat.size * stored // 8),
                huffman_bytes=-(-huff // 8),
            )
        )
        raw.append(np.ascontiguousarray(values).tobytes())
    params = sum(row.params for row in rows)
    if file_bytes is None:
        payload = b"".join(raw)
        actual = sum(row.bytes for row in rows)
    else:
        payload = file_bytes
        actual = len(file_bytes)
    return CompressionReport(
        source=source,
        rows=rows,
        float32_bytes=4 * params,
        actual_bytes=actual,
        gzip_bytes=len(gzip.compress(payload, compresslevel=9, mtime=0)),
        entropy_bytes=int(np.ceil(entropy_total)),
        huffman_bytes=int(np.ceil(huffman_total)),
    )


def _size(n):
    if n >= 1 << 20:
        return f"{n / (1 << 20):.2f} MB"
    if n >= 1 << 10:
        return f"{n / (1 << 10):.1f} KB"
    return f"{n} B"


class CompressionSummaries(keras.callbacks.Callback):
    """Puts sparsity and distinct-value counts of compressed kernels into `logs`.

    At the end of each epoch, for every kernel that pruning or clustering may
    touch (as it will ship: masked, centroid-gathered), adds
    `"<weight path>/sparsity"` and `"<weight path>/distinct"` to `logs`, so
    `History`, `CSVLogger` and TensorBoard see them.

    Args:
        min_rank: Only weights of at least this rank are logged (2 skips
            biases).

    Example:

    ```python
    history = model.fit(x, y, epochs=3, callbacks=[CompressionSummaries()])
    history.history["sequential/dense/kernel/distinct"]
    ```
    """

    def __init__(self, min_rank=2):
        super().__init__()
        self.min_rank = _validate.check_int("min_rank", min_rank, minimum=0)

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        for name, values, zero in keras_weights(self.model):
            if values.ndim < self.min_rank:
                continue
            logs[f"{name}/sparsity"] = float(np.mean(values == zero))
            logs[f"{name}/distinct"] = int(np.unique(values).size)

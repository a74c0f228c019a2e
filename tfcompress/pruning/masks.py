"""Mask math: which weights to zero, in `keras.ops` so it runs in any backend.

Each function takes a weight tensor and returns a 0/1 mask of the same shape
and dtype. They are pure: the wrapper decides when to call them and stores
the result.
"""

from keras import ops

from tfcompress._validate import check_int, check_int_pair, check_one_of


def magnitude_mask(weight, sparsity):
    """Zeros the `round(sparsity * size)` weights of smallest magnitude.

    Ties at the threshold are pruned too, so the sparsity reached is at least
    the target (already-zero weights stay zero as sparsity grows).

    Args:
        weight: A tensor.
        sparsity: Scalar (tensor or float) in [0, 1).

    Returns:
        A mask tensor with the shape and dtype of `weight`.

    Example:

    >>> from keras import ops
    >>> w = ops.convert_to_tensor([[0.1, -3.0], [2.0, -0.5]])
    >>> ops.convert_to_numpy(magnitude_mask(w, 0.5)).tolist()
    [[0.0, 1.0], [1.0, 0.0]]
    """
    magnitude = ops.abs(weight)
    flat = ops.reshape(magnitude, (-1,))
    size = int(flat.shape[0])
    num_zeros = ops.cast(ops.round(ops.cast(sparsity, "float32") * size), "int32")
    num_zeros = ops.clip(num_zeros, 0, size)
    threshold = ops.take(ops.sort(flat), ops.maximum(num_zeros - 1, 0))
    keep = ops.logical_or(ops.equal(num_zeros, 0), ops.greater(magnitude, threshold))
    return ops.cast(keep, weight.dtype)


def block_mask(weight, sparsity, block_size, pooling="AVG"):
    """Zeros whole `block_size` blocks of the weight seen as a 2-D matrix.

    A weight of rank > 2 is seen as (prod(all but last axis), last axis), e.g.
    a conv kernel as (receptive field x input channels, output channels).
    Blocks are ranked by the average (or maximum) magnitude of their weights;
    edge blocks that do not fill `block_size` are padded with zeros.

    Args:
        weight: A tensor of rank >= 2.
        sparsity: Fraction of blocks to zero.
        block_size: `(rows, cols)` of a block.
        pooling: "AVG" or "MAX": how a block's magnitude is measured.

    Returns:
        A mask tensor with the shape and dtype of `weight`.
    """
    rows_per_block, cols_per_block = check_int_pair("block_size", block_size)
    check_one_of("pooling", pooling, ("AVG", "MAX"))
    if len(weight.shape) < 2:
        raise ValueError(f"block_mask needs a weight of rank >= 2. Received shape {tuple(weight.shape)}")
    matrix = ops.reshape(ops.abs(weight), (-1, int(weight.shape[-1])))
    rows, cols = (int(d) for d in matrix.shape)
    pad_rows, pad_cols = -rows % rows_per_block, -cols % cols_per_block
    padded = ops.pad(matrix, [[0, pad_rows], [0, pad_cols]])
    block_rows = (rows + pad_rows) // rows_per_block
    block_cols = (cols + pad_cols) // cols_per_block
    blocks = ops.reshape(padded, (block_rows, rows_per_block, block_cols, cols_per_block))
    pool = ops.max if pooling == "MAX" else ops.mean
    block_magnitude = pool(blocks, axis=(1, 3))
    keep = magnitude_mask(block_magnitude, sparsity)
    keep = ops.repeat(ops.repeat(keep, rows_per_block, axis=0), cols_per_block, axis=1)
    return ops.cast(ops.reshape(keep[:rows, :cols], weight.shape), weight.dtype)


def m_by_n_mask(weight, m, n):
    """N:M structured sparsity: `m` zeros in every `n` consecutive input weights.

    Groups run along the input-channel axis (axis -2 of a Dense or Conv kernel)
    for each output, the layout sparse tensor cores and XNNPACK expect.

    Args:
        weight: A tensor of rank >= 2 whose axis -2 is divisible by `n`.
        m: Zeros per group.
        n: Group size.

    Returns:
        A mask tensor with the shape and dtype of `weight`.

    Example:

    >>> from keras import ops
    >>> w = ops.convert_to_tensor([[4.0], [-1.0], [3.0], [0.5]])
    >>> ops.convert_to_numpy(m_by_n_mask(w, 2, 4)).ravel().tolist()
    [1.0, 0.0, 1.0, 0.0]
    """
    m, n = check_int("m", m, minimum=1), check_int("n", n, minimum=2)
    if m >= n or len(weight.shape) < 2 or weight.shape[-2] % n:
        raise ValueError(
            f"m_by_n_mask needs 0 < m < n and a weight whose axis -2 is a multiple of n. "
            f"Received: m={m}, n={n}, weight shape {tuple(weight.shape)}"
        )
    inputs_last = ops.moveaxis(ops.abs(weight), -2, -1)
    groups = ops.reshape(inputs_last, (-1, n))
    ranks = ops.argsort(ops.argsort(groups, axis=-1), axis=-1)
    keep = ops.reshape(ops.greater_equal(ranks, m), inputs_last.shape)
    return ops.cast(ops.moveaxis(keep, -1, -2), weight.dtype)

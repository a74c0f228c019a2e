"""The bundled data every demo, notebook and test uses: scikit-learn's digits.

`sklearn.datasets.load_digits` ships inside scikit-learn (1,797 8x8 images of
handwritten digits), so nothing is downloaded.
"""

import numpy as np


def load_digits(test_fraction=0.3, seed=0):
    """Loads the digits as NHWC float32 images in [0, 1] with int labels.

    Args:
        test_fraction: Fraction of the 1,797 images held out for testing.
        seed: Seed of the stratified split.

    Returns:
        `((x_train, y_train), (x_test, y_test))`, images of shape (N, 8, 8, 1).

    Raises:
        ValueError: if `test_fraction` is not in (0, 1).
        ImportError: if scikit-learn is not installed.

    Example:

    >>> (x_train, y_train), (x_test, y_test) = load_digits()
    >>> x_train.shape[1:], x_train.dtype.name, int(y_train.max())
    ((8, 8, 1), 'float32', 9)
    """
    from tfcompress._validate import check_int, check_number

    value = check_number("test_fraction", test_fraction)
    if not 0.0 < value < 1.0:
        raise ValueError(
            f"test_fraction must be in (0, 1). Received: test_fraction={test_fraction!r}"
        )
    test_fraction = value
    seed = check_int("seed", seed, minimum=0)
    try:
        from sklearn.datasets import load_digits as sk_load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "The digits data set comes from scikit-learn: pip install scikit-learn"
        ) from e
    data = sk_load_digits()
    x = (data.images / 16.0).astype("float32")[..., np.newaxis]
    y = data.target.astype("int32")
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_fraction, random_state=seed, stratify=y
    )
    return (x_train, y_train), (x_test, y_test)

"""Centroid initialisation (numpy, once per kernel) and nearest-centroid lookup.

Initialisation runs once, when a layer is wrapped, on the trained weights, so
it is plain numpy. The lookup runs every training step inside the graph, so it
is written in `keras.ops`.
"""

import keras
import numpy as np

from tfcompress import _validate
from tfcompress._state import state_variable

CENTROID_INITS = ("kmeans++", "linear", "density", "random")

# Lloyd iterations after k-means++ seeding; 1-D k-means converges in a few.
_KMEANS_ITERATIONS = 20


def init_centroids(values, number_of_clusters, method="kmeans++", seed=0):
    """Picks `number_of_clusters` initial centroids for a set of weights.

    Args:
        values: Array of weights (any shape; flattened). With
            `preserve_sparsity`, pass only the non-zero weights.
        number_of_clusters: Number of centroids, an int >= 2.
        method: One of `"kmeans++"` (k-means++ seeding refined by Lloyd
            iterations), `"linear"` (evenly spaced between min and max),
            `"density"` (evenly spaced quantiles of the weight distribution)
            or `"random"` (uniform between min and max).
        seed: Seed of the random methods, so that wrapping is reproducible.

    Returns:
        A float32 numpy array of shape `(number_of_clusters,)`, sorted.

    Raises:
        ValueError: for a bad `number_of_clusters` or `method`.

    Example:

    >>> init_centroids(np.array([0.0, 1.0, 2.0, 3.0]), 2, "linear")
    array([0., 3.], dtype=float32)
    """
    _validate.check_int("number_of_clusters", number_of_clusters, minimum=2)
    _validate.check_one_of("cluster_centroids_init", method, CENTROID_INITS)
    values = np.asarray(values, dtype=np.float64).ravel()
    k = number_of_clusters
    if values.size == 0:
        return np.zeros(k, np.float32)
    low, high = float(values.min()), float(values.max())
    rng = np.random.default_rng(seed)
    if method == "linear":
        centroids = np.linspace(low, high, k)
    elif method == "random":
        centroids = rng.uniform(low, high, k)
    elif method == "density":
        centroids = np.quantile(values, (np.arange(k) + 0.5) / k)
    else:
        centroids = _kmeans(values, k, rng)
    return np.sort(centroids).astype(np.float32)


def nearest_centroid_numpy(values, centroids):
    """Index of the nearest centroid for every value (numpy twin of `nearest_centroid`)."""
    values = np.asarray(values)
    order = np.argsort(centroids, kind="stable")
    sorted_c = np.asarray(centroids)[order]
    midpoints = (sorted_c[1:] + sorted_c[:-1]) / 2
    return order[np.searchsorted(midpoints, values.ravel())].reshape(values.shape).astype(
        np.int32
    )


def nearest_centroid(values, centroids):
    """Index of the nearest centroid for every element of `values`.

    Sorting the (few) centroids and binary-searching their midpoints costs
    O(n log k) and no n-by-k distance matrix, which matters for big kernels.

    Args:
        values: Tensor of any shape.
        centroids: 1-D tensor of centroids, in any order (training moves them).

    Returns:
        An int32 tensor shaped like `values`.
    """
    order = keras.ops.argsort(centroids)
    sorted_c = keras.ops.take(centroids, order)
    midpoints = (sorted_c[1:] + sorted_c[:-1]) / 2.0
    flat = keras.ops.reshape(values, (-1,))
    position = keras.ops.searchsorted(midpoints, flat)
    indices = keras.ops.take(order, position)
    return keras.ops.cast(keras.ops.reshape(indices, keras.ops.shape(values)), "int32")


def centroid_state(layer, centroids_name, indices_name, centroids, indices):
    """Creates a layer's trainable centroids and its index variable for one weight.

    Args:
        layer: The wrapper that owns them (they are set as its attributes).
        centroids_name: Name of the centroids weight.
        indices_name: Name of the index state variable.
        centroids: Initial centroids, shape `(k,)`.
        indices: Initial index of every weight, shaped like the weight.

    Returns:
        `(centroids, indices)` variables.
    """
    centroids = np.asarray(centroids, "float32")
    variable = layer.add_weight(
        name=centroids_name,
        shape=centroids.shape,
        initializer=keras.initializers.Constant(centroids),
        trainable=True,
    )
    setattr(layer, centroids_name, variable)
    index_variable = state_variable(layer, indices_name, np.shape(indices), "zeros", dtype="int32")
    index_variable.assign(np.asarray(indices, "int32"))
    return variable, index_variable


def gather_centroids(centroids, indices, weight=None, zeros=None):
    """The clustered weight: each element its centroid, zeros kept with a mask.

    Args:
        centroids: `(k,)` tensor of centroids.
        indices: int tensor, the centroid of every weight.
        weight: The float weight the indices were assigned from, or None. Its
            gradient is then the clustered weight's (straight through), so
            weights can move between clusters.
        zeros: None, or a 0/1 mask of the weights kept (zeros stay zero).

    Returns:
        A tensor shaped like `indices`.

    Example:

    >>> c = keras.ops.convert_to_tensor([-1.0, 2.0])
    >>> out = gather_centroids(c, keras.ops.convert_to_tensor([[0, 1], [1, 1]]))
    >>> keras.ops.convert_to_numpy(out).tolist()
    [[-1.0, 2.0], [2.0, 2.0]]
    """
    value = keras.ops.take(centroids, keras.ops.convert_to_tensor(indices))
    if weight is not None:
        # Value: the centroids (weight - weight is exactly 0). Gradient: to the
        # centroids through take, to the float weight straight through.
        weight = keras.ops.convert_to_tensor(weight)
        value = value + (weight - keras.ops.stop_gradient(weight))
    if zeros is not None:
        value = value * keras.ops.convert_to_tensor(zeros)
    return value


def _kmeans(values, k, rng):
    # Seeding: each new centroid drawn with probability ~ squared distance to
    # the nearest existing one (Arthur & Vassilvitskii, 2007).
    sample = values
    if sample.size > 100_000:
        sample = rng.choice(values, 100_000, replace=False)
    centroids = [sample[rng.integers(sample.size)]]
    distance = (sample - centroids[0]) ** 2
    for _ in range(1, k):
        total = distance.sum()
        if total <= 0:
            # Fewer distinct values than clusters: duplicates are harmless.
            centroids.append(centroids[-1])
            continue
        pick = sample[rng.choice(sample.size, p=distance / total)]
        centroids.append(pick)
        distance = np.minimum(distance, (sample - pick) ** 2)
    centroids = np.sort(np.array(centroids))
    # Lloyd iterations on all values; an empty cluster keeps its centroid.
    for _ in range(_KMEANS_ITERATIONS):
        assignment = nearest_centroid_numpy(values, centroids)
        counts = np.bincount(assignment, minlength=k)
        sums = np.bincount(assignment, weights=values, minlength=k)
        updated = np.where(counts > 0, sums / np.maximum(counts, 1), centroids)
        if np.allclose(updated, centroids):
            break
        centroids = np.sort(updated)
    return centroids

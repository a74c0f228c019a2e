"""`ClusterWeights`: a layer whose kernels are shared centroids during training."""

import keras
import numpy as np

from tfcompress import _validate
from tfcompress._state import zero_mask
from tfcompress._wrapper import CompressionWrapper
from tfcompress.clustering import centroids as centroids_lib

OPT_IN_METHOD = "get_clusterable_weights"


@keras.saving.register_keras_serializable(package="tfcompress")
class ClusterWeights(CompressionWrapper):
    """Trains a layer with each kernel restricted to `number_of_clusters` shared values.

    Each clusterable kernel gets trainable centroids and a state variable of
    centroid indices (one per weight). The forward pass uses
    `take(centroids, indices)` in place of the kernel, so `evaluate` measures
    the clustered model. At every training step the indices are re-assigned
    to the nearest centroid of the underlying float kernel; the gradient of
    the clustered kernel reaches the centroids (summed over their members,
    through the gather) and, straight through, the float kernel, so weights
    can move between clusters as in tfmot.

    With `preserve_sparsity=True`, the weights that are zero when the layer is
    wrapped (e.g. after pruning) stay zero and do not form a cluster: the
    centroids are fitted to the non-zero weights and a fixed mask is applied.

    Args:
        layer: The layer to wrap: a supported type (Dense, Conv*, ...; the
            table in `tfcompress._layers`) or a layer defining
            `get_clusterable_weights()` returning the variables to cluster.
        number_of_clusters: Number of distinct values per kernel, an int >= 2.
        cluster_centroids_init: `"kmeans++"`, `"linear"`, `"density"` or
            `"random"` (see `tfcompress.clustering.centroids.init_centroids`).
        preserve_sparsity: Keep the zeros of the kernel at zero.
        **kwargs: Base layer arguments (e.g. `name`).

    Raises:
        ValueError: for bad arguments or a layer with nothing to cluster.

    Example:

    >>> dense = keras.layers.Dense(4)
    >>> dense.build((None, 3))
    >>> layer = ClusterWeights(dense, number_of_clusters=2)
    >>> tuple(layer(np.ones((1, 3))).shape)
    (1, 4)
    >>> len(np.unique(layer.shipped_weights()[id(dense.kernel)]))
    2
    """

    technique = "clustering"
    opt_in_method = OPT_IN_METHOD
    name_prefix = "cluster"
    strip_function = "strip_clustering"
    config_args = ("number_of_clusters", "cluster_centroids_init", "preserve_sparsity")

    def __init__(
        self,
        layer,
        number_of_clusters,
        cluster_centroids_init="kmeans++",
        preserve_sparsity=False,
        **kwargs,
    ):
        super().__init__(layer, **kwargs)
        self.number_of_clusters, self.cluster_centroids_init, self.preserve_sparsity = (
            check_clustering_arguments(number_of_clusters, cluster_centroids_init, preserve_sparsity)
        )

    def build_state(self, input_shape):
        self._clusters = []
        for i, variable in enumerate(self.target_weights):
            values = keras.ops.convert_to_numpy(variable)
            if not np.all(np.isfinite(values)):
                raise ValueError(
                    f"Cannot cluster weight '{variable.path}' of layer '{self.layer.name}': "
                    "it holds NaN or infinity (did training diverge?)."
                )
            if self.number_of_clusters > values.size:
                raise ValueError(
                    f"number_of_clusters={self.number_of_clusters} is more than the "
                    f"{values.size} values of weight '{variable.path}' of layer "
                    f"'{self.layer.name}'. Give this layer at most {values.size} clusters "
                    "(a dict {layer_name: number_of_clusters} sets it per layer)."
                )
            mask = values != 0 if self.preserve_sparsity else np.ones_like(values, bool)
            init = centroids_lib.init_centroids(
                values[mask], self.number_of_clusters, self.cluster_centroids_init, seed=i
            )
            centroids, indices = centroids_lib.centroid_state(
                self,
                f"centroids_{i}",
                f"cluster_indices_{i}",
                init,
                centroids_lib.nearest_centroid_numpy(values, init),
            )
            # Fixed at wrap time (after reload, the saved mask is loaded over it).
            zeros = zero_mask(self, f"sparsity_mask_{i}", values) if self.preserve_sparsity else None
            self._clusters.append((centroids, indices, zeros))

    def update_state(self):
        # Each weight joins the centroid nearest to its float value.
        for variable, (centroids, indices, _) in zip(self.target_weights, self._clusters):
            indices.assign(centroids_lib.nearest_centroid(variable, centroids))

    def weight_values(self, training):
        return [
            centroids_lib.gather_centroids(centroids, indices, variable, zeros)
            for variable, (centroids, indices, zeros) in zip(self.target_weights, self._clusters)
        ]


def check_clustering_arguments(number_of_clusters, cluster_centroids_init, preserve_sparsity):
    """Validates the clustering arguments; returns them."""
    number_of_clusters = _validate.check_int("number_of_clusters", number_of_clusters, minimum=2)
    _validate.check_one_of(
        "cluster_centroids_init", cluster_centroids_init, centroids_lib.CENTROID_INITS
    )
    preserve_sparsity = _validate.check_bool("preserve_sparsity", preserve_sparsity)
    return int(number_of_clusters), cluster_centroids_init, preserve_sparsity

"""`ClusterWeights`: a layer whose kernels are shared centroids during training."""

import keras
import numpy as np

from tfcompress import _checks, _kernels
from tfcompress._state import call_with_weights, state_variable
from tfcompress.clustering import centroids as centroids_lib

OPT_IN_METHOD = "get_clusterable_weights"


@keras.saving.register_keras_serializable(package="tfcompress")
class ClusterWeights(keras.layers.Wrapper):
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
            table in `tfcompress._kernels`) or a layer defining
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
    >>> layer(np.ones((1, 3))).shape
    (1, 4)
    """

    def __init__(
        self,
        layer,
        number_of_clusters,
        cluster_centroids_init="kmeans++",
        preserve_sparsity=False,
        **kwargs,
    ):
        _kernels.check_wrappable(layer, OPT_IN_METHOD, "clustering", "ClusterWeights")
        _checks.check_int("number_of_clusters", number_of_clusters, minimum=2)
        _checks.check_one_of(
            "cluster_centroids_init", cluster_centroids_init, centroids_lib.CENTROID_INITS
        )
        if not isinstance(preserve_sparsity, bool):
            raise ValueError(
                "preserve_sparsity must be a bool. Received: "
                f"preserve_sparsity={preserve_sparsity!r}"
            )
        kwargs.setdefault("name", f"cluster_{layer.name}")
        super().__init__(layer, **kwargs)
        self.number_of_clusters = number_of_clusters
        self.cluster_centroids_init = cluster_centroids_init
        self.preserve_sparsity = preserve_sparsity

    def build(self, input_shape=None):
        super().build(input_shape)
        for i, variable in enumerate(self.clusterable_weights):
            values = keras.ops.convert_to_numpy(variable)
            mask = values != 0 if self.preserve_sparsity else np.ones_like(values, bool)
            init = centroids_lib.init_centroids(
                values[mask],
                self.number_of_clusters,
                self.cluster_centroids_init,
                seed=i,
            )
            centroids = self.add_weight(
                name=f"centroids_{i}",
                shape=(self.number_of_clusters,),
                initializer="zeros",
                trainable=True,
            )
            centroids.assign(init)
            setattr(self, f"centroids_{i}", centroids)
            indices = state_variable(
                self,
                f"cluster_indices_{i}",
                values.shape,
                "zeros",
                dtype="int32",
            )
            indices.assign(centroids_lib.nearest_centroid_numpy(values, init))
            if self.preserve_sparsity:
                # Fixed at wrap time (after reload, the saved mask is loaded over it).
                sparsity_mask = state_variable(self, f"sparsity_mask_{i}", values.shape, "ones")
                sparsity_mask.assign(mask.astype("float32"))
        self.built = True

    @property
    def clusterable_weights(self):
        """The inner layer's variables this wrapper clusters."""
        # Looked up, not stored: an attribute would make Keras track (and save)
        # the inner layer's variables a second time under the wrapper.
        return _kernels.compressible_weights(self.layer, OPT_IN_METHOD)

    def _cluster_state(self):
        for i, variable in enumerate(self.clusterable_weights):
            yield (
                variable,
                getattr(self, f"centroids_{i}"),
                getattr(self, f"cluster_indices_{i}"),
                getattr(self, f"sparsity_mask_{i}", None),
            )

    def call(self, inputs, training=None, **kwargs):
        mapping = []
        for variable, centroids, indices, sparsity_mask in self._cluster_state():
            weight = keras.ops.convert_to_tensor(variable)
            if training:
                assignment = centroids_lib.nearest_centroid(weight, centroids)
                indices.assign(assignment)
            else:
                assignment = keras.ops.convert_to_tensor(indices)
            # Value: the centroids (weight - weight is exactly 0). Gradient:
            # to the centroids through take, to the float weight straight through.
            clustered = keras.ops.take(centroids, assignment) + (
                weight - keras.ops.stop_gradient(weight)
            )
            if sparsity_mask is not None:
                clustered = clustered * keras.ops.convert_to_tensor(sparsity_mask)
            mapping.append((variable, clustered))
        return call_with_weights(self.layer, mapping, inputs, training=training, **kwargs)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def clustered_weights(self):
        """The kernels as the forward pass uses them, as numpy arrays.

        Returns:
            A list of `(inner variable, numpy array)` pairs.
        """
        result = []
        for variable, centroids, indices, mask in self._cluster_state():
            values = keras.ops.convert_to_numpy(centroids)[
                keras.ops.convert_to_numpy(indices)
            ]
            if mask is not None:
                values = values * keras.ops.convert_to_numpy(mask)
            result.append((variable, values.astype(np.float32)))
        return result

    def compressed_weights(self):
        """`{id(inner variable): value that ships}` (used by `tfcompress.report`)."""
        return {id(variable): values for variable, values in self.clustered_weights()}

    def stripped_layer(self):
        """Bakes the clustered kernels into the inner layer and returns it.

        Returns:
            The wrapped layer, whose kernels now hold at most
            `number_of_clusters` distinct values (plus zero with
            `preserve_sparsity`).
        """
        for variable, values in self.clustered_weights():
            variable.assign(values)
        return self.layer

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "number_of_clusters": self.number_of_clusters,
                "cluster_centroids_init": self.cluster_centroids_init,
                "preserve_sparsity": self.preserve_sparsity,
            }
        )
        return config

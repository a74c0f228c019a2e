"""`cluster_weights` and `strip_clustering`."""

from tfcompress import _rewrite, _validate
from tfcompress.clustering.wrapper import ClusterWeights, check_clustering_arguments


def cluster_weights(
    to_cluster,
    number_of_clusters,
    cluster_centroids_init="kmeans++",
    preserve_sparsity=False,
):
    """Wraps every clusterable layer so its kernels train as shared centroids.

    Each kernel of a supported layer (Dense, Conv*, DepthwiseConv*,
    SeparableConv*, Embedding, RNN kernels, or a layer defining
    `get_clusterable_weights()`) is replaced by trainable centroids and fixed
    (per training step) centroid indices; see `ClusterWeights`. Layers with
    nothing to cluster are left as they are. Strip pruning wrappers first
    (`strip_pruning`) and pass `preserve_sparsity=True` to keep the zeros.

    Args:
        to_cluster: A built Sequential, functional (nested too) or subclassed
            `keras.Model`, a layer, or a list of layers.
        number_of_clusters: Distinct values per kernel, an int >= 2; or a
            dict `{layer_name: int}` to cluster only the named layers, each
            with its own count (key `None`: every other clusterable layer).
        cluster_centroids_init: How centroids start: `"kmeans++"` (default),
            `"linear"`, `"density"` or `"random"`.
        preserve_sparsity: Keep zero weights at zero, outside the clusters.

    Returns:
        A new model (Sequential/functional), the same model rewritten in place
        (subclassed), a `ClusterWeights` layer, or a list of layers. Compile
        it before `fit`.

    Raises:
        ValueError: for a bad `number_of_clusters`, `cluster_centroids_init`
            or `preserve_sparsity`; for a single layer with nothing to cluster;
            for a dict naming layers that are not there.
        TypeError: when `to_cluster` is not a model, layer or list of layers.

    Example:

    ```python
    clustered = tfcompress.cluster_weights(model, 16, preserve_sparsity=True)
    clustered.compile(...)
    clustered.fit(x, y, epochs=2)
    final = tfcompress.strip_clustering(clustered)
    ```
    """
    counts = _rewrite.per_layer_settings("number_of_clusters", number_of_clusters, _check_count)
    # Checked here too, so a model with nothing to cluster still rejects them.
    check_clustering_arguments(2, cluster_centroids_init, preserve_sparsity)

    def make_wrapper(layer, k):
        return ClusterWeights(
            layer,
            k,
            cluster_centroids_init=cluster_centroids_init,
            preserve_sparsity=preserve_sparsity,
        )

    return _rewrite.apply_per_layer(
        to_cluster, counts, ClusterWeights, make_wrapper, "number_of_clusters", "to_cluster"
    )


def _check_count(name, k):
    return _validate.check_int(name, k, minimum=2)


def strip_clustering(model):
    """Removes the `ClusterWeights` wrappers, baking the centroids into the kernels.

    Args:
        model: A model, layer or list of layers from `cluster_weights`.

    Returns:
        The plain Keras model (or layers; a model without `ClusterWeights` is
        returned as it is) whose clustered kernels hold at most
        `number_of_clusters` distinct values (plus zero with
        `preserve_sparsity`), ready for `tfcompress.quantization` or export.

    Example:

    ```python
    final = tfcompress.strip_clustering(clustered)
    final.save("clustered.keras")
    ```
    """
    return _rewrite.strip_wrappers(model, ClusterWeights)

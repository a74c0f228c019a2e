"""`cluster_weights` and `strip_clustering`."""

import keras

from tfcompress import _checks, _kernels, _rewrite
from tfcompress.clustering import centroids as centroids_lib
from tfcompress.clustering.wrapper import OPT_IN_METHOD, ClusterWeights


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
    counts = _clusters_by_layer(number_of_clusters)
    _checks.check_one_of(
        "cluster_centroids_init", cluster_centroids_init, centroids_lib.CENTROID_INITS
    )
    if not isinstance(preserve_sparsity, bool):
        raise ValueError(
            f"preserve_sparsity must be a bool. Received: preserve_sparsity={preserve_sparsity!r}"
        )

    def wrap(layer, k):
        wrapper = ClusterWeights(
            layer,
            k,
            cluster_centroids_init=cluster_centroids_init,
            preserve_sparsity=preserve_sparsity,
        )
        # Centroids come from the trained weights: create them now, eagerly,
        # not at the first call (inside `fit`'s traced function for a
        # subclassed model rewritten in place).
        build_config = layer.get_build_config() if layer.built else None
        if build_config and "input_shape" in build_config:
            wrapper.build(build_config["input_shape"])
        return wrapper

    wrapped_names = set()

    def maybe_wrap(layer):
        if isinstance(layer, keras.layers.Wrapper):
            return None
        k = counts.get(layer.name, counts.get(None))
        if k is None or not _kernels.is_supported(layer, OPT_IN_METHOD):
            return None
        wrapped_names.add(layer.name)
        return wrap(layer, k)

    if isinstance(to_cluster, keras.Model):
        clustered = _rewrite.map_layers(to_cluster, maybe_wrap)
    elif isinstance(to_cluster, keras.layers.Layer):
        k = counts.get(to_cluster.name, counts.get(None))
        if k is None:
            raise ValueError(
                f"number_of_clusters has no entry for layer '{to_cluster.name}'. "
                f"Received: number_of_clusters={number_of_clusters!r}"
            )
        return wrap(to_cluster, k)
    elif isinstance(to_cluster, (list, tuple)) and all(
        isinstance(layer, keras.layers.Layer) for layer in to_cluster
    ):
        clustered = [maybe_wrap(layer) or layer for layer in to_cluster]
    else:
        raise TypeError(
            "cluster_weights expects a keras.Model, a layer or a list of layers. "
            f"Received: to_cluster={to_cluster!r} of type {type(to_cluster).__name__}"
        )
    missing = sorted(name for name in counts if name is not None and name not in wrapped_names)
    if missing:
        raise ValueError(
            "number_of_clusters names layers that are not there (or cannot be "
            f"clustered): {missing}"
        )
    return clustered


def _clusters_by_layer(number_of_clusters):
    """Normalizes the argument to {layer_name or None (all others): k}."""
    if isinstance(number_of_clusters, dict):
        if not number_of_clusters:
            raise ValueError(
                "number_of_clusters must be an int >= 2 or a non-empty dict "
                f"{{layer_name: int}}. Received: number_of_clusters={number_of_clusters!r}"
            )
        for name, k in number_of_clusters.items():
            _checks.check_int(f"number_of_clusters[{name!r}]", k, minimum=2)
        return dict(number_of_clusters)
    _checks.check_int("number_of_clusters", number_of_clusters, minimum=2)
    return {None: number_of_clusters}


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

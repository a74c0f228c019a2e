"""Weight clustering (weight sharing): each kernel keeps a few trainable values.

`cluster_weights` wraps a model's layers in `ClusterWeights`; after `fit`,
`strip_clustering` bakes the centroids into plain Keras layers.
"""

from tfcompress.clustering.api import cluster_weights, strip_clustering
from tfcompress.clustering.centroids import CENTROID_INITS, init_centroids
from tfcompress.clustering.wrapper import ClusterWeights

__all__ = [
    "CENTROID_INITS",
    "ClusterWeights",
    "cluster_weights",
    "init_centroids",
    "strip_clustering",
]

"""The per-layer settings the search chooses, one row per knob (the recipe checks: `recipe.py`).

A recipe is a plain, JSON-serializable dict: for each compressed layer, one
value per knob,

    {"conv1": {"sparsity": 0.5, "clusters": 16, "weight_bits": 8},
     "dense": {"sparsity": 0.95, "clusters": 8, "weight_bits": 4}}

Layers the recipe does not name are only quantized (int8 QAT); a knob a layer
entry leaves out takes its neutral value (no pruning, no clustering, 8 bits).

Each `Knob` row says what its values are (`check`), which layers it applies
to (`supports`), what a value does to a kernel at once, without training
(`apply`: what the sensitivity scan measures and the size model encodes), and
which values the search tries (`grid`). The search, the size model and the
recipe checks only loop over `KNOBS`; a new per-layer technique is a new row
plus its stage in `pipeline.py`.

A group knob (`GROUP_KNOBS`: `channel_sparsity`, the fraction of a channel
group's channels `prune_channels` removes) takes one value per channel group,
not per layer: coupled layers (a conv and the depthwise conv after it, the
branches an `Add` joins) must lose the same channels. In a recipe every
layer whose output channels are the group's carries the group's value,

    {"conv1": {"channel_sparsity": 0.5}, "depthwise": {"channel_sparsity": 0.5}}

(a member the recipe leaves out takes its group's value; two different
values in one group are an error). Its sensitivity, cost (MACs) and masking
are per group, in `channels.py`; the recipe checks and tables loop over
`RECIPE_KNOBS`. It is shown in a recipe entry only where it is given.
"""

import dataclasses
from typing import Any, Callable

import keras
import numpy as np

from tfcompress import _layers, _rewrite, _validate
from tfcompress._wrapper import CompressionWrapper
from tfcompress.clustering import ClusterWeights
from tfcompress.clustering.centroids import init_centroids, nearest_centroid_numpy
from tfcompress.pruning import PruneLowMagnitude
from tfcompress.pruning.masks import magnitude_mask
from tfcompress.quantization import lowbit
from tfcompress.quantization.configs import default_quantize_config


@dataclasses.dataclass(frozen=True)
class Knob:
    """One per-layer setting of a recipe.

    Attributes:
        name: Its key in a recipe's layer entry.
        neutral: The value that leaves a layer as it is.
        grid: The values the search measures, mildest (the neutral) first.
        check: `check(argument, value) -> value`: validates one value.
        supports: `supports(layer) -> bool`.
        apply: `apply(kernel, value, seed, layer, variable) -> kernel`: the
            value's effect on a numpy kernel (a value of `variable` of
            `layer`) at once, without training, as the pipeline starts it.
        label: `label(value) -> str` for tables.
        per_group: True for a knob taking one value per channel group
            (`apply` is None: it acts on several layers at once, see
            `channels.py`).
    """

    name: str
    neutral: Any
    grid: tuple
    check: Callable
    supports: Callable
    apply: Callable
    label: Callable
    per_group: bool = False


# Values k-means fits centroids on, at most (the rest only look up their nearest).
_KMEANS_SAMPLE = 65536


def _prune_at_once(kernel, sparsity, seed, layer=None, variable=None):
    """The kernel with its `sparsity` smallest-magnitude weights zeroed (as pruning ends)."""
    del seed, layer, variable  # magnitude pruning is deterministic and layer-blind
    if sparsity <= 0:
        return kernel
    mask = keras.ops.convert_to_numpy(magnitude_mask(keras.ops.convert_to_tensor(kernel), sparsity))
    return kernel * mask


def _cluster_at_once(kernel, clusters, seed, layer=None, variable=None):
    """The kernel's non-zero weights replaced by the nearest of `clusters` k-means centroids.

    The same initialisation `cluster_weights(..., preserve_sparsity=True)` starts from.
    """
    del layer, variable
    if clusters is None:
        return kernel
    kept = kernel != 0
    if np.count_nonzero(kept) <= clusters:
        return kernel
    values = kernel[kept]
    if values.size > _KMEANS_SAMPLE:  # centroids of a big kernel settle on a sample
        values = np.random.default_rng(seed).choice(values, _KMEANS_SAMPLE, replace=False)
    centroids = init_centroids(values, clusters, "kmeans++", seed=seed)
    clustered = centroids[nearest_centroid_numpy(kernel, centroids)]
    return np.where(kept, clustered, 0.0).astype(kernel.dtype)


def _bits_at_once(kernel, bits, seed, layer, variable):
    """The kernel through the weight quantizer QAT gives it at `bits`.

    4: 15 levels per channel; 2: ternary; 1: binary. At 8 bits the kernel is
    left as it is: every recipe quantizes to int8, so that is the baseline the
    others are measured against.
    """
    del seed
    if bits == BITS.neutral:
        return kernel
    quantizer = low_bit_quantizers(layer, bits).get(weight_attribute(layer, variable))
    if quantizer is None:
        return kernel
    return keras.ops.convert_to_numpy(quantizer(keras.ops.convert_to_tensor(kernel)))


def low_bit_quantizers(layer, bits):
    """`{weight attribute: WeightQuantizer}` that `quantize_model(weight_bits=bits)` gives `layer`."""
    config = default_quantize_config(layer)
    if config is None:
        return {}
    return lowbit.WeightBits({layer.name: bits}).config_for(layer, config, explicit=False).weights


def weight_attribute(layer, variable):
    """The attribute of `layer` holding `variable` ("kernel", "depthwise_kernel"...), or None."""
    config = default_quantize_config(layer)
    for attribute in config.weights if config is not None else ():
        if getattr(layer, attribute, None) is variable:
            return attribute
    return None


def _supports_low_bits(layer):
    config = default_quantize_config(layer)
    return (
        config is not None
        and bool(config.weights)
        and not isinstance(layer, lowbit.NO_INT4_LAYERS)
        and (SPARSITY.supports(layer) or CLUSTERS.supports(layer))
    )


def _check_clusters(name, value):
    return None if value is None else _validate.check_int(name, value, minimum=2)


SPARSITY = Knob(
    name="sparsity",
    neutral=0.0,
    grid=(0.0, 0.3, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99),
    check=lambda name, value: _validate.check_fraction(name, value),
    supports=PruneLowMagnitude.supports,
    apply=_prune_at_once,
    label=lambda value: f"{value:.0%}",
)

CLUSTERS = Knob(
    name="clusters",
    neutral=None,
    grid=(None, 32, 16, 8, 4, 2),
    check=_check_clusters,
    supports=ClusterWeights.supports,
    apply=_cluster_at_once,
    label=lambda value: "-" if value is None else str(value),
)

BITS = Knob(
    name="weight_bits",
    neutral=8,
    # Binary (1) costs too much accuracy at once to be worth measuring on every
    # layer; a recipe may still ask for it.
    grid=(8, 4, 2),
    check=lambda name, value: lowbit.check_weight_bits(name, value),
    supports=_supports_low_bits,
    apply=_bits_at_once,
    label=lambda value: f"{value}-bit",
)

# The fewest weight bits the search gives the first layer (see `search_grids`).
FIRST_LAYER_MIN_BITS = 4

CHANNELS = Knob(
    name="channel_sparsity",
    neutral=0.0,
    # Kept counts are rounded to multiples of `channels.ROUND_TO`, so milder
    # steps than 1/4 rarely change a group of a few dozen channels.
    grid=(0.0, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875),
    check=lambda name, value: _validate.check_fraction(name, value),
    supports=lambda layer: isinstance(layer, _layers.CHANNEL_MEMBER_LAYERS),
    apply=None,
    label=lambda value: f"{value:.0%} ch",
    per_group=True,
)

# In the order the pipeline applies them: prune, cluster the survivors, then
# QAT puts the weights on the grid of their bits.
KNOBS = (SPARSITY, CLUSTERS, BITS)
KNOB_NAMES = tuple(knob.name for knob in KNOBS)
# Channel pruning runs first (it changes the shapes the other knobs act on).
GROUP_KNOBS = (CHANNELS,)
RECIPE_KNOBS = GROUP_KNOBS + KNOBS
RECIPE_KNOB_NAMES = tuple(knob.name for knob in RECIPE_KNOBS)


def compressible_layers(model):
    """`{name: layer}` of the layers of `model` that at least one knob applies to.

    Raises:
        ValueError: if `model` already holds compression wrappers (the search
            starts from the float model) or two such layers share a name.
    """
    layers = {}
    for layer in _rewrite.iter_layers(model):
        if isinstance(layer, CompressionWrapper):
            raise ValueError(
                f"Model '{model.name}' already holds a {type(layer).__name__} "
                f"('{layer.name}'): automatic compression starts from the float model."
            )
        if isinstance(layer, keras.Model) or not any(k.supports(layer) for k in KNOBS):
            continue
        if layer.name in layers:
            raise ValueError(
                f"Model '{model.name}' has two layers named '{layer.name}'; recipes name "
                "layers, so their names must be unique."
            )
        layers[layer.name] = layer
    return layers


def search_grids(layers, folded=()):
    """`{layer name: {knob: values}}`: what the search tries on each layer.

    A knob that does not apply to a layer keeps its neutral value.
    Clustering is not searched on layers whose BatchNormalization
    `quantize_model` folds in (`folded`): the fold scales each output channel
    by its own factor, and QAT does not keep the shared values through it
    yet, so clusters there cost accuracy and save nothing. A recipe may
    still set them.

    The first layer (in model order) is not searched below
    `FIRST_LAYER_MIN_BITS`: it reads the raw input, has few weights, and its
    ternary weights cost far more after training than the sensitivity
    measures (the mobile block's first convolution: 66 B saved, 1.5 points
    lost over three seeds). A recipe may still set them.

    Example:

    >>> dense = keras.layers.Dense(4, name="dense")
    >>> dense.build((None, 8))
    >>> search_grids({"dense": dense}, folded={"dense"})["dense"]["clusters"]
    (None,)
    >>> search_grids({"dense": dense})["dense"]["weight_bits"]
    (8, 4)
    """
    grids = {}
    for name, layer in layers.items():
        grids[name] = {
            row.name: row.grid if row.supports(layer) else (row.neutral,) for row in KNOBS
        }
        if name in folded:
            grids[name][CLUSTERS.name] = (CLUSTERS.neutral,)
    first = next(iter(grids), None)
    if first is not None:
        bits = grids[first][BITS.name]
        grids[first][BITS.name] = tuple(b for b in bits if b >= FIRST_LAYER_MIN_BITS) or bits
    return grids


def kernels(layer):
    """The variables of `layer` the knobs change: the kernels pruning and clustering share."""
    for method in (PruneLowMagnitude.opt_in_method, ClusterWeights.opt_in_method):
        found = _layers.compressible_weights(layer, method)
        if found:
            return found
    return []

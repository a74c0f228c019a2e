"""Public QAT API: `quantize_model`, `quantize_annotate_*`, `quantize_apply`."""

import keras

from tfcompress import _rewrite, _validate
from tfcompress._wrapper import strip_for_export
from tfcompress.quantization import folding, plan
from tfcompress.quantization.configs import default_quantize_config
from tfcompress.quantization.wrapper import QuantizeAnnotate, QuantizeWrapper, count_clusters


def quantize_model(model, preserve_sparsity=False, preserve_clusters=None):
    """Returns a quantization-aware-training copy of `model`.

    Weights are fake-quantized to symmetric int8 (per output channel for
    convolutions, per tensor for Dense as TFLite's fully-connected op),
    activations to asymmetric int8 per tensor with moving-average ranges, on
    exactly the tensors the TFLite converter stores in int8: the model input,
    the output of each conv / dense after its fused ReLU / ReLU6, the outputs of
    Add, Concatenate and other computing ops. Pooling, Reshape, Flatten,
    Dropout and padding keep their input's quantization. BatchNormalization
    after a conv / dense is folded into it first (inference statistics), as
    the converter does.

    Compile and `fit` the result as usual, then `tfcompress.lite.convert(qat,
    quantization="int8")`.

    Args:
        model: A built Sequential or functional model (nested ones included),
            float, pruned (wrappers are stripped first) or clustered.
        preserve_sparsity: Keep weights that are zero exactly zero during
            QAT and in the int8 file (for pruned models).
        preserve_clusters: For kernels with few distinct values (clustered
            ones): keep the values shared (fixed cluster indices, trainable
            centroids, zeros kept at zero with `preserve_sparsity`, one int8
            scale per tensor so the int8 file holds at most that many
            distinct values per tensor). None (auto):
            when `preserve_sparsity=True`, for each weight with at most 256
            distinct values that are at most a quarter of its size. True: for
            every weight with at most 256 distinct values. False: never.

    Returns:
        A new `keras.Model` (not compiled).

    Raises:
        ValueError: for a subclassed model, or a layer with weights that the
            defaults table does not know (the message names it and says how
            to proceed). Weightless unknown layers stay float with a warning.

    Example:

    >>> import keras
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> qat = quantize_model(model)
    >>> type(qat.layers[0]).__name__
    'QuantizeWrapper'
    """
    return _quantize(model, "all", preserve_sparsity, preserve_clusters)


def quantize_annotate_layer(layer, quantize_config=None):
    """Marks `layer` to be quantized by `quantize_apply`.

    Args:
        layer: A Keras layer, e.g. inside a functional model definition.
        quantize_config: None (default for the layer type) or a
            `QuantizeConfig` (required for custom layers).

    Returns:
        A `QuantizeAnnotate` layer computing exactly like `layer`.

    Raises:
        ValueError: for a layer outside the defaults table without a config.

    Example:

    >>> import keras
    >>> inputs = keras.Input((4,))
    >>> x = quantize_annotate_layer(keras.layers.Dense(8))(inputs)
    >>> model = keras.Model(inputs, keras.layers.Dense(2)(x))
    >>> qat = quantize_apply(model)  # only the first Dense is quantized
    """
    return QuantizeAnnotate(layer, quantize_config=quantize_config)


def quantize_annotate_model(model):
    """Marks every layer of `model` that the defaults table knows.

    Layers already annotated keep their annotation. A weightless layer the
    table does not know stays unannotated (float) with a warning; a layer with
    weights the table does not know raises (annotate it with a QuantizeConfig
    first).

    Args:
        model: A built Sequential or functional model.

    Returns:
        A new model with `QuantizeAnnotate` layers, for `quantize_apply`.

    Raises:
        ValueError: for a subclassed model or an unknown layer with weights.
    """
    _check_graph_model(model, "quantize_annotate_model")

    def annotate(layer):
        if isinstance(layer, (QuantizeAnnotate, QuantizeWrapper)):
            return None
        if isinstance(layer, keras.layers.InputLayer):
            return None
        if default_quantize_config(layer) is None:
            plan.warn_unknown_layer(layer)
            return None
        return QuantizeAnnotate(layer)

    return _rewrite.map_layers(model, annotate)


def quantize_apply(model, preserve_sparsity=False, preserve_clusters=None):
    """Quantizes the annotated layers of `model`; the others stay float.

    Where a quantized layer reads a float tensor (the model input, the output
    of a float layer) its input is fake-quantized too, so TFLite gets a range
    for it.

    Args:
        model: A built Sequential or functional model holding
            `QuantizeAnnotate` layers.
        preserve_sparsity: See `quantize_model`.
        preserve_clusters: See `quantize_model`.

    Returns:
        A new QAT `keras.Model` (not compiled).

    Raises:
        ValueError: for a subclassed model or one without annotated layers.
    """
    if not any(isinstance(l, QuantizeAnnotate) for l in _rewrite.iter_layers(model)):
        raise ValueError(
            f"Model '{model.name}' has no annotated layers. Mark layers with "
            "quantize_annotate_layer / quantize_annotate_model first, or use "
            "quantize_model to quantize every layer."
        )
    return _quantize(model, "annotated", preserve_sparsity, preserve_clusters)


def _check_graph_model(model, fn_name):
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"{fn_name} expects a keras.Model. Received: model={model!r} "
            f"of type {type(model).__name__}"
        )
    if not _rewrite.is_graph_model(model):
        raise ValueError(
            f"{fn_name} needs a Sequential or functional model, to see which "
            f"tensors TFLite quantizes. Model '{model.name}' is a subclassed "
            f"{type(model).__name__}: rebuild it with the functional API "
            "(keras.Model(inputs, outputs)) to quantize it."
        )
    _validate.check_built(model, "quantize")


def _quantize(model, mode, preserve_sparsity, preserve_clusters):
    _check_graph_model(model, "quantize_model" if mode == "all" else "quantize_apply")
    preserve_sparsity = _validate.check_bool("preserve_sparsity", preserve_sparsity)
    if preserve_clusters is not None:
        preserve_clusters = _validate.check_bool("preserve_clusters", preserve_clusters)
    model = strip_for_export(model)
    decisions = plan.plan_model(model, mode)

    def rewrite(layer):
        decision = decisions.get(layer.name)
        inner = layer.layer if isinstance(layer, QuantizeAnnotate) else layer
        if decision is None:  # float or pass-through: drop the annotation
            return inner if inner is not layer else None
        if decision is plan.FOLDED:
            return folding.FoldedBatchNormalization(name=layer.name)
        if decision.fold is not None:
            inner = folding.fold_batchnorm(inner, decision.fold)
        counts = {}
        if preserve_sparsity or preserve_clusters:
            auto = None if preserve_sparsity else False
            for name in decision.config.weights:
                value = keras.ops.convert_to_numpy(getattr(inner, name))
                k = count_clusters(value, preserve_clusters if preserve_clusters is not None else auto)
                if k is not None:
                    counts[name] = k
        return QuantizeWrapper(
            inner,
            quantize_config=decision.config,
            quantize_inputs=decision.quantize_inputs,
            quantize_output=decision.quantize_output,
            preserve_sparsity=preserve_sparsity,
            cluster_counts=counts or None,
            name=_quantized_name(layer),
        )

    return _rewrite.map_layers(model, rewrite)


def _quantized_name(layer):
    if isinstance(layer, QuantizeAnnotate) and layer.name.startswith("quant_annotate_"):
        return "quant_" + layer.name[len("quant_annotate_"):]
    return f"quant_{layer.name}"

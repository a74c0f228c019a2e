"""Public QAT API: `quantize_model`, `quantize_annotate_*`, `quantize_apply`."""

import inspect
import warnings

import keras

from tfcompress import _graph, _layers, _rewrite, _validate
from tfcompress._wrapper import strip_for_export
from tfcompress.quantization import folding, lowbit, plan
from tfcompress.quantization.configs import default_quantize_config
from tfcompress.quantization.wrapper import (
    QuantizeAnnotate,
    QuantizeWrapper,
    count_clusters,
    weight_variable,
)


def quantize_model(
    model, preserve_sparsity=False, preserve_clusters=None, weight_bits=8, strict=False
):
    """Returns a quantization-aware-training copy of `model`.

    Weights are fake-quantized to symmetric int8 (per output channel for
    convolutions, per tensor for Dense as TFLite's fully-connected op),
    activations to asymmetric int8 per tensor with moving-average ranges, on
    exactly the tensors the TFLite converter stores in int8: the model input,
    the output of each conv / dense after its fused ReLU / ReLU6, the outputs of
    Add, Concatenate and other computing layers, and of the Keras operations
    of a functional graph that TFLite computes in int8 (`x + 3.0`, `x * y`,
    `ops.mean`...; a fake-quant layer is inserted after them). Pooling,
    Reshape, Flatten, Dropout, padding, `ops.reshape` and slicing keep their
    input's quantization. BatchNormalization after a conv / dense is folded
    into it first (inference statistics), as the converter does; one that
    follows no conv runs as a quantized multiply-add with its moving
    statistics.

    A layer with weights that the defaults table does not know (and that has
    no `QuantizeConfig`) stays float, with a warning naming it; so do Keras
    operations without an int8 TFLite kernel. Subclassed blocks, weightless
    layers of your own and `Lambda` layers whose `call` is Keras math (and
    takes no `training`) are written out as their layers and operations,
    which are quantized like the rest.

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
        weight_bits: Bits of the weights (activations stay int8): 8; 4
            (symmetric [-7, 7] per output channel, packed INT4 in the
            `.tflite`); 2 (ternary {-a, 0, +a} per channel); 1 (binary
            {-a, +a} per channel). Ternary and binary are stored as INT4
            holding 3 or 2 values per channel. A dict `{layer_name: bits}`
            sets layers one by one (a None key sets the others; default 8).
            Transposed convolutions keep 8 bits (TFLite has no INT4
            TRANSPOSE_CONV): with a warning, or an error if named. Layers with
            their own `QuantizeConfig` keep their quantizers.
        strict: Raise for a layer with weights that the defaults table does
            not know, instead of leaving it float.

    Returns:
        A new `keras.Model` (not compiled).

    Raises:
        ValueError: for a subclassed model, or (with `strict=True`) a layer
            with weights that the defaults table does not know (the message
            names it and says how to proceed); for a `weight_bits` other
            than 8, 4, 2, 1, or a dict naming a layer without quantized
            weights.

    Example:

    >>> import keras
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> qat = quantize_model(model)
    >>> type(qat.layers[0]).__name__
    'QuantizeWrapper'
    >>> qat4 = quantize_model(model, weight_bits={model.layers[0].name: 4})
    >>> qat4.layers[0].quantize_config.weights["kernel"].num_bits
    4
    """
    strict = _validate.check_bool("strict", strict)
    return _quantize(model, "all", preserve_sparsity, preserve_clusters, weight_bits, strict)


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

    Layers already annotated keep their annotation. A layer the table does
    not know stays unannotated (float) with a warning (annotate it with a
    QuantizeConfig first to quantize it).

    Args:
        model: A built Sequential or functional model.

    Returns:
        A new model with `QuantizeAnnotate` layers, for `quantize_apply`.

    Raises:
        ValueError: for a subclassed model.
    """
    _check_graph_model(model, "quantize_annotate_model")
    unknown = {True: [], False: []}  # has weights -> names

    def annotate(layer):
        if isinstance(layer, (QuantizeAnnotate, QuantizeWrapper, keras.layers.InputLayer)):
            return None
        if default_quantize_config(layer) is None:
            unknown[bool(layer.weights)].append(layer.name)
            return None
        return QuantizeAnnotate(layer)

    annotated = _rewrite.map_layers(model, annotate)
    _warn_float(unknown[True], unknown[False], stacklevel=3)
    return annotated


def quantize_apply(model, preserve_sparsity=False, preserve_clusters=None, weight_bits=8):
    """Quantizes the annotated layers of `model`; the others stay float.

    Where a quantized layer reads a float tensor (the model input, the output
    of a float layer) its input is fake-quantized too, so TFLite gets a range
    for it.

    Args:
        model: A built Sequential or functional model holding
            `QuantizeAnnotate` layers.
        preserve_sparsity: See `quantize_model`.
        preserve_clusters: See `quantize_model`.
        weight_bits: See `quantize_model`; it sets the annotated layers
            without a `QuantizeConfig` of their own.

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
    return _quantize(model, "annotated", preserve_sparsity, preserve_clusters, weight_bits)


def float_layers(model):
    """Names of the layers with weights that a QAT model leaves float.

    Those the defaults table does not know (and that have no
    `QuantizeConfig`): TFLite runs them in float between a DEQUANTIZE and a
    QUANTIZE.

    Args:
        model: A model returned by `quantize_model` / `quantize_apply`.

    Returns:
        A list of layer names, in the model's order.

    Example:

    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> float_layers(quantize_model(model))
    []
    """
    inside = {
        id(inner)
        for layer in _rewrite.iter_layers(model) if isinstance(layer, QuantizeWrapper)
        for inner in _rewrite.iter_layers(layer)
    }
    return [
        layer.name for layer in _rewrite.iter_layers(model)
        if id(layer) not in inside and not isinstance(layer, QuantizeWrapper)
        and _layers.owns_weights(layer)
    ]


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


def _quantize(model, mode, preserve_sparsity, preserve_clusters, weight_bits, strict=False):
    _check_graph_model(model, "quantize_model" if mode == "all" else "quantize_apply")
    preserve_sparsity = _validate.check_bool("preserve_sparsity", preserve_sparsity)
    if preserve_clusters is not None:
        preserve_clusters = _validate.check_bool("preserve_clusters", preserve_clusters)
    bits = lowbit.WeightBits(weight_bits)
    source = model
    # Planned on our own copy, whose tensors the rebuild below walks.
    model = _inline_blocks(_graph.copy(strip_for_export(model)))
    decisions = plan.plan_model(model, mode, strict)
    _warn_float(
        decisions.float_layers, decisions.weightless_layers, decisions.float_operations,
        stacklevel=4,
    )

    def rewrite(layer):
        decision = decisions.layers.get(layer.name)
        inner = layer.layer if isinstance(layer, QuantizeAnnotate) else layer
        if decision is None:  # float or pass-through: drop the annotation
            return inner if inner is not layer else None
        if decision is plan.FOLDED:
            return folding.FoldedBatchNormalization(name=layer.name)
        explicit = (isinstance(layer, QuantizeAnnotate) and layer.quantize_config is not None) or (
            callable(getattr(inner, "get_quantize_config", None))
        )
        config = bits.config_for(inner, decision.config, explicit)
        if decision.fold is not None:
            inner = folding.fold_batchnorm(inner, decision.fold)
        counts = {}
        if preserve_sparsity or preserve_clusters:
            auto = None if preserve_sparsity else False
            for name in config.weights:
                value = keras.ops.convert_to_numpy(weight_variable(inner, name))
                k = count_clusters(value, preserve_clusters if preserve_clusters is not None else auto)
                if k is not None:
                    counts[name] = k
        return QuantizeWrapper(
            inner,
            quantize_config=config,
            quantize_inputs=decision.quantize_inputs,
            quantize_output=decision.quantize_output,
            preserve_sparsity=preserve_sparsity,
            cluster_counts=counts or None,
            name=_quantized_name(layer),
        )

    def insert_after(tensor):
        decision = decisions.tensors.get(id(tensor))
        if decision is None:
            return None
        # A fake-quant after an operation's output: an identity that quantizes.
        identity = keras.layers.Identity(name=decision.name[len("quant_"):])
        return QuantizeWrapper(identity, quantize_config=decision.config, name=decision.name)

    quantized = _graph.rebuild(model, replace=rewrite, insert_after=insert_after)
    bits.check_names(source)
    return quantized


def _inline_blocks(model, passes=3):
    """`model` with its subclassed blocks written out as graph nodes, where possible.

    A layer holding layers that the table does not know (keras_hub's
    TransformerEncoder, a user's residual block) would stay float as a whole;
    calling its `call` on symbolic tensors puts its layers and operations in
    the graph, where each is quantized like any other. Its layers are renamed
    `<block>_<layer>` (names must be unique in a graph). A block whose `call`
    cannot run on symbolic tensors stays as it is (float, with a warning).
    """
    failed = []
    for _ in range(passes):
        blocks = {
            id(node.operation): node.operation for node in _graph.nodes(model)
            if _is_block(node.operation) and node.operation.name not in [f.name for f, _ in failed]
        }
        if not blocks:
            break

        def inline(layer):
            if id(layer) not in blocks:
                return False
            for sub in layer._flatten_layers(include_self=False):
                sub.name = f"{layer.name}_{sub.name}"
            return True

        inline.failed = failed
        model = _graph.rebuild(model, inline=inline)
    if failed:
        reasons = "; ".join(f"{layer.name}: {type(error).__name__}: {error}" for layer, error in failed)
        warnings.warn(
            f"Layers {[layer.name for layer, _ in failed]} could not be written out as graph "
            f"nodes ({reasons}).",
            stacklevel=4,
        )
    return model


# Layers holding layers whose `call` is not a composition of them.
_NOT_BLOCKS = (keras.layers.Wrapper, keras.layers.RNN, keras.layers.Bidirectional, keras.layers.InputLayer)


def _is_block(layer):
    if not isinstance(layer, keras.layers.Layer):  # a Keras operation is a node already
        return False
    if default_quantize_config(layer) is not None or isinstance(layer, _NOT_BLOCKS):
        return False
    if isinstance(layer, keras.Model) and _graph.is_graph_model(layer):
        return False
    return bool(getattr(layer, "_layers", None)) or _is_weightless_composite(layer)


def _is_weightless_composite(layer):
    """A weightless layer of the user's (or a Lambda) whose `call` is fixed Keras math.

    Written out, its operations (InceptionResNetV2's `CustomScaleLayer`,
    `x + scale * branch`: one MUL, one ADD) are quantized like any other;
    left whole it is a float island. Keras' own layers are excluded: each is
    in the table or deliberately float (UnitNormalization). So is a layer
    whose `call` takes `training`: written out, it would run only one branch.
    """
    if layer.weights:
        return False
    if isinstance(layer, keras.layers.Lambda):
        call = layer.function
    elif type(layer).__module__.startswith(("keras.src.layers.", "keras.layers.")):
        return False
    else:
        call = layer.call
    try:
        parameters = inspect.signature(call).parameters
    except (TypeError, ValueError):  # a builtin or C function: nothing to write out
        return False
    return "training" not in parameters


def _warn_float(with_weights, weightless, operations=(), stacklevel=3):
    """Warns about what stays float; `stacklevel` reaches the user's line."""
    if with_weights:
        warnings.warn(plan.unknown_layers_message(with_weights), stacklevel=stacklevel)
    if weightless:
        warnings.warn(plan.weightless_layers_message(weightless), stacklevel=stacklevel)
    if operations:
        warnings.warn(
            f"Operations {list(operations)} have no int8 TFLite kernel in tfcompress' "
            "table; they stay float (TFLite dequantizes before them and quantizes after "
            "them).",
            stacklevel=stacklevel,
        )


def _quantized_name(layer):
    if isinstance(layer, QuantizeAnnotate) and layer.name.startswith("quant_annotate_"):
        return "quant_" + layer.name[len("quant_annotate_"):]
    return f"quant_{layer.name}"

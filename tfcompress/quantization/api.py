"""Public QAT API: `quantize_model`, `quantize_annotate_*`, `quantize_apply`."""

import warnings

import keras

from tfcompress import _rewrite
from tfcompress.clustering.wrapper import ClusterWeights
from tfcompress.pruning.wrapper import PruneLowMagnitude
from tfcompress.quantization import folding
from tfcompress.quantization.configs import (
    QuantizeConfig,
    default_quantize_config,
    is_fusable_activation_layer,
)
from tfcompress.quantization.wrapper import (
    QuantizeAnnotate,
    QuantizeWrapper,
    count_clusters,
    unsupported_message,
)

# Status of a tensor in the graph analysis.
_FLOAT, _QUANT, _FUSED = "float", "quantized", "fused"


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
            _unknown_layer(layer)
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


def strip_compression_wrappers(model):
    """Strips pruning / clustering wrappers, baking masks and centroids in.

    Args:
        model: A `keras.Model`.

    Returns:
        `model` itself when it holds no such wrapper, else the stripped model.
    """
    return _rewrite.strip_wrappers(model, (PruneLowMagnitude, ClusterWeights))


def _quantize(model, mode, preserve_sparsity, preserve_clusters):
    _check_graph_model(model, "quantize_model" if mode == "all" else "quantize_apply")
    if preserve_clusters not in (None, True, False):
        raise ValueError(
            "preserve_clusters must be None, True or False. "
            f"Received: preserve_clusters={preserve_clusters!r}"
        )
    model = strip_compression_wrappers(model)
    plan = {}
    _analyze(model, [_FLOAT] * len(model.inputs), plan, mode)

    def rewrite(layer):
        step = plan.get(layer.name)
        inner = layer.layer if isinstance(layer, QuantizeAnnotate) else layer
        if step is None:  # float or pass-through: drop the annotation
            return inner if inner is not layer else None
        if step["action"] == "identity":
            return folding.FoldedBatchNormalization(name=layer.name)
        if step["fold"] is not None:
            inner = folding.fold_batchnorm(inner, step["fold"], step["input_shape"])
        counts = {}
        if preserve_sparsity or preserve_clusters:
            auto = None if preserve_sparsity else False
            for name in step["config"].weights:
                value = keras.ops.convert_to_numpy(getattr(inner, name))
                k = count_clusters(value, preserve_clusters if preserve_clusters is not None else auto)
                if k is not None:
                    counts[name] = k
        return QuantizeWrapper(
            inner,
            quantize_config=step["config"],
            quantize_inputs=step["quantize_inputs"],
            quantize_output=step["quantize_output"],
            preserve_sparsity=preserve_sparsity,
            cluster_counts=counts or None,
            name=_quantized_name(layer),
        )

    return _rewrite.map_layers(model, rewrite)


def _quantized_name(layer):
    if isinstance(layer, QuantizeAnnotate) and layer.name.startswith("quant_annotate_"):
        return "quant_" + layer.name[len("quant_annotate_"):]
    return f"quant_{layer.name}"


def _graph_of(model):
    if isinstance(model, keras.Sequential):
        return getattr(model, "_functional", None) or model
    return model


def _topological_nodes(graph):
    order, seen = [], set()

    def visit(tensor):
        op, node_index, _ = tensor._keras_history
        node = op._inbound_nodes[node_index]
        if id(node) in seen:
            return
        seen.add(id(node))
        for t in node.input_tensors:
            visit(t)
        order.append(node)

    for t in graph.outputs:
        visit(t)
    return order


def _config_for(layer, mode):
    """(inner layer, QuantizeConfig or None) for a layer in the given mode."""
    if isinstance(layer, QuantizeAnnotate):
        return layer.layer, layer.quantize_config or default_quantize_config(layer.layer)
    if isinstance(layer, QuantizeWrapper):
        raise ValueError(
            f"Layer '{layer.name}' is already quantized. Pass the float model to "
            "quantize_model / quantize_apply."
        )
    config = default_quantize_config(layer)
    if mode == "annotated" and not (config is not None and config.is_passthrough):
        return layer, None  # not annotated: stays float (pass-through ops just pass)
    return layer, config


def _unknown_layer(layer):
    if layer.weights:
        raise ValueError(unsupported_message(layer))
    warnings.warn(
        f"Layer '{layer.name}' of type {type(layer).__name__} is not in the quantization "
        "table and stays float: TFLite will dequantize before it and quantize after it. "
        "Give it a QuantizeConfig with quantize_annotate_layer to quantize it.",
        stacklevel=4,
    )


def _analyze(model, input_status, plan, mode):
    """Decides for each layer of `model` what to do; returns output statuses."""
    graph = _graph_of(model)
    nodes = _topological_nodes(graph)
    consumers = {}
    for node in nodes:
        for t in node.input_tensors:
            consumers.setdefault(id(t), []).append(node)
    for t in graph.outputs:
        consumers.setdefault(id(t), []).append(None)
    status = {id(t): s for t, s in zip(graph.inputs, input_status)}
    # Calls of each layer in this graph (a layer may also appear in other graphs).
    calls = {}
    for node in nodes:
        calls[id(node.operation)] = calls.get(id(node.operation), 0) + 1

    def only_consumer(tensor):
        users = consumers.get(id(tensor), [])
        return users[0] if len(users) == 1 else None

    for node in nodes:
        layer = node.operation
        ins = [status.get(id(t), _FLOAT) for t in node.input_tensors]
        outs = node.output_tensors
        if isinstance(layer, keras.layers.InputLayer):
            for t in outs:
                status.setdefault(id(t), _FLOAT)
            continue
        if (plan.get(layer.name) or {}).get("action") == "identity":  # a folded BN
            for t in outs:
                status[id(t)] = ins[0]
            continue
        if isinstance(layer, keras.Model) and _rewrite.is_graph_model(layer):
            inner_status = _analyze(layer, ins, plan, mode)
            for t, s in zip(outs, inner_status):
                status[id(t)] = s
            continue
        inner, config = _config_for(layer, mode)
        if config is None:
            if mode == "all":
                _unknown_layer(layer)
            for t in outs:
                status[id(t)] = _FLOAT
            continue
        if not isinstance(config, QuantizeConfig):
            raise ValueError(
                f"get_quantize_config() of layer '{layer.name}' must return a "
                f"QuantizeConfig. Received: {config!r}"
            )
        if config.is_passthrough:
            if isinstance(layer, QuantizeAnnotate):
                plan[layer.name] = None  # just unwrap
            out = ins[0] if len(ins) == 1 else (_QUANT if all(s == _QUANT for s in ins) else _FLOAT)
            for t in outs:
                status[id(t)] = out
            continue

        step = {
            "action": "wrap",
            "config": config,
            "fold": None,
            "input_shape": node.input_tensors[0].shape if node.input_tensors else None,
            "quantize_inputs": [s == _FLOAT for s in ins] if len(ins) > 1 else ins[0] == _FLOAT,
            "quantize_output": None,
        }
        out = _QUANT if config.quantize_output else _FLOAT
        tail = outs[0] if len(outs) == 1 else None
        if tail is not None and config.weights and calls[id(layer)] == 1:
            user = only_consumer(tail)
            # Conv + BatchNormalization: fold, the BN becomes an Identity.
            if user is not None and calls[id(user.operation)] == 1:
                bn = user.operation
                bn_inner, bn_config = _config_for(bn, mode)
                if bn_config is not None and folding.can_fold(inner, bn_inner, len(tail.shape)):
                    step["fold"] = bn_inner
                    plan[bn.name] = {"action": "identity"}
                    tail = user.output_tensors[0]
                    user = only_consumer(tail)
            # Conv (+ BN) + ReLU/ReLU6: TFLite fuses them, one quantizer after.
            if user is not None and config.quantize_output:
                act_inner, act_config = _config_for(user.operation, mode)
                fusable = act_config is not None and is_fusable_activation_layer(act_inner)
                if fusable and _activation_is_linear(inner):
                    step["quantize_output"] = False
                    out = _FUSED
        plan[layer.name] = step
        for t in outs:
            status[id(t)] = out
        if step["fold"] is not None:
            status[id(node.output_tensors[0])] = out
    return [status.get(id(t), _FLOAT) for t in graph.outputs]


def _activation_is_linear(layer):
    from tfcompress.quantization.configs import activation_name

    return activation_name(getattr(layer, "activation", None)) == "linear"

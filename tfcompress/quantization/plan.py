"""The QAT graph planner: where the fake-quant ops of a model go.

`plan_model` walks a Sequential / functional model (nested ones included) in
topological order, following which tensors are int8 in TFLite, and decides
for each layer one of:

* `Wrap`: quantize it with a `QuantizeWrapper` (its config, which inputs to
  quantize because their producer is float, whether its output is quantized
  here or by a fused activation after it, a BatchNormalization to fold in);
* `FOLDED`: a BatchNormalization folded into the layer before it;
* no entry: it stays as it is (float, or a pass-through op that keeps its
  input's quantization; an annotation around it is dropped).

The decisions mirror the TFLite converter: Conv/Dense + BatchNormalization
fold, a ReLU / ReLU6 after them fuses (one quantizer after the activation),
pooling and reshapes keep their input's scale.
"""

import dataclasses
import enum
import warnings

import keras

from tfcompress import _layers, _rewrite
from tfcompress.quantization import folding
from tfcompress.quantization.configs import QuantizeConfig, default_quantize_config
from tfcompress.quantization.wrapper import QuantizeAnnotate, QuantizeWrapper, unsupported_message


class Status(enum.Enum):
    """How a tensor will be stored in the int8 `.tflite`."""

    FLOAT = "float"
    QUANTIZED = "quantized"
    FUSED = "fused"  # quantized by the activation op that follows


@dataclasses.dataclass
class Wrap:
    """Quantize a layer with a `QuantizeWrapper`."""

    config: QuantizeConfig
    quantize_inputs: object  # bool, or a list of bools for a multi-input layer
    quantize_output: bool = None  # None: as `config` says
    fold: keras.layers.BatchNormalization = None


# A BatchNormalization folded into the layer before it.
FOLDED = "folded"


def plan_model(model, mode):
    """Decides what quantization does with each layer of `model`.

    Args:
        model: A built Sequential or functional model.
        mode: "all" (quantize every layer the table knows) or "annotated"
            (only `QuantizeAnnotate` layers; pass-through ops follow their input).

    Returns:
        `{layer name: Wrap | FOLDED}`; layers without an entry stay as they are.

    Raises:
        ValueError: for a layer already quantized, an unknown layer with
            weights in mode "all", or a `get_quantize_config()` that does not
            return a `QuantizeConfig`.
    """
    plan = {}
    _plan_graph(model, [Status.FLOAT] * len(model.inputs), plan, mode)
    return plan


def warn_unknown_layer(layer):
    """Raises for an unknown layer with weights; warns for a weightless one."""
    if layer.weights:
        raise ValueError(unsupported_message(layer))
    warnings.warn(
        f"Layer '{layer.name}' of type {type(layer).__name__} is not in the quantization "
        "table and stays float: TFLite will dequantize before it and quantize after it. "
        "Give it a QuantizeConfig with quantize_annotate_layer to quantize it.",
        stacklevel=4,
    )


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


class _Graph:
    """A graph's nodes in topological order, with who reads each tensor."""

    def __init__(self, model):
        graph = _graph_of(model)
        self.inputs, self.outputs = graph.inputs, graph.outputs
        self.nodes = _topological_nodes(graph)
        self._readers = {}
        for node in self.nodes:
            for t in node.input_tensors:
                self._readers.setdefault(id(t), []).append(node)
        for t in graph.outputs:
            self._readers.setdefault(id(t), []).append(None)  # the model output
        # Calls of each layer in this graph (a layer may also be in other graphs).
        self.calls = {}
        for node in self.nodes:
            self.calls[id(node.operation)] = self.calls.get(id(node.operation), 0) + 1

    def only_reader(self, tensor):
        """The one node reading `tensor`, or None (several, or a model output)."""
        readers = self._readers.get(id(tensor), [])
        return readers[0] if len(readers) == 1 else None


def _plan_graph(model, input_status, plan, mode):
    """Fills `plan` for the layers of `model`; returns its outputs' statuses."""
    graph = _Graph(model)
    status = {id(t): s for t, s in zip(graph.inputs, input_status)}

    for node in graph.nodes:
        layer = node.operation
        ins = [status.get(id(t), Status.FLOAT) for t in node.input_tensors]
        outs = node.output_tensors
        if isinstance(layer, keras.layers.InputLayer):
            for t in outs:
                status.setdefault(id(t), Status.FLOAT)
            continue
        if plan.get(layer.name) is FOLDED:  # keeps the folded layer's output status
            for t in outs:
                status[id(t)] = ins[0]
            continue
        if isinstance(layer, keras.Model) and _rewrite.is_graph_model(layer):
            for t, s in zip(outs, _plan_graph(layer, ins, plan, mode)):
                status[id(t)] = s
            continue
        inner, config = _config_for(layer, mode)
        if config is None:
            if mode == "all":
                warn_unknown_layer(layer)
            for t in outs:
                status[id(t)] = Status.FLOAT
            continue
        if not isinstance(config, QuantizeConfig):
            raise ValueError(
                f"get_quantize_config() of layer '{layer.name}' must return a "
                f"QuantizeConfig. Received: {config!r}"
            )
        if config.is_passthrough:
            if len(ins) == 1:
                out = ins[0]
            else:
                out = Status.QUANTIZED if all(s == Status.QUANTIZED for s in ins) else Status.FLOAT
            for t in outs:
                status[id(t)] = out
            continue

        decision = Wrap(
            config=config,
            quantize_inputs=[s == Status.FLOAT for s in ins] if len(ins) > 1 else ins[0] == Status.FLOAT,
        )
        out = _plan_fusions(graph, node, inner, decision, plan, mode)
        plan[layer.name] = decision
        for t in outs:
            status[id(t)] = out
    return [status.get(id(t), Status.FLOAT) for t in graph.outputs]


def _plan_fusions(graph, node, inner, decision, plan, mode):
    """Folds a following BatchNorm and fuses a following ReLU; returns the output status."""
    out = Status.QUANTIZED if decision.config.quantize_output else Status.FLOAT
    outs = node.output_tensors
    layer = node.operation
    if len(outs) != 1 or not decision.config.weights or graph.calls[id(layer)] != 1:
        return out
    tail = outs[0]
    reader = graph.only_reader(tail)
    # Conv + BatchNormalization: fold, the BN becomes an Identity.
    if reader is not None and graph.calls[id(reader.operation)] == 1:
        bn = reader.operation
        bn_inner, bn_config = _config_for(bn, mode)
        if bn_config is not None and folding.can_fold(inner, bn_inner, len(tail.shape)):
            decision.fold = bn_inner
            plan[bn.name] = FOLDED
            reader = graph.only_reader(reader.output_tensors[0])
    # Conv (+ BN) + ReLU/ReLU6: TFLite fuses them, one quantizer after.
    if reader is not None and decision.config.quantize_output:
        act_inner, act_config = _config_for(reader.operation, mode)
        fusable = act_config is not None and _layers.is_fusable_activation_layer(act_inner)
        if fusable and _layers.has_linear_activation(inner):
            decision.quantize_output = False
            out = Status.FUSED
    return out

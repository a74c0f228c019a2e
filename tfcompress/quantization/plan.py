"""The QAT graph planner: where the fake-quant ops of a model go.

`plan_model` walks a Sequential / functional model (nested ones included) in
execution order, following which tensors are int8 in TFLite, and returns a
`Plan`:

* per layer: `Wrap` (quantize it with a `QuantizeWrapper`: its config, which
  inputs to quantize because their producer is float, whether its output is
  quantized here or by a fused activation after it, a BatchNormalization to
  fold in), or `FOLDED` (a BatchNormalization folded into the layer before);
* per tensor: `QuantizeTensor`, a fake-quant inserted after a tensor that a
  Keras operation computes (`x + 3.0`, `x * y`, `ops.mean`: MobileNetV3's
  hard-sigmoid, a transformer's residual adds), or that such an operation
  reads from a float producer;
* the layers and operations that stay float (unknown to the tables).

Layers and operations without a decision stay as they are: float, or a
pass-through op (pooling, reshapes, slicing) that keeps its input's scale.

The decisions mirror the TFLite converter: Conv/Dense + BatchNormalization
fold, a ReLU / ReLU6 after a conv, dense, ADD, SUB or MUL fuses into it (one
quantizer after the activation), pass-through ops keep their input's scale.
"""

import dataclasses
import enum

import keras

from tfcompress import _graph, _layers
from tfcompress.quantization import folding
from tfcompress.quantization.configs import (
    QuantizeConfig,
    default_operation_config,
    default_quantize_config,
)
from tfcompress.quantization.wrapper import QuantizeAnnotate, QuantizeWrapper, unsupported_message


class Status(enum.Enum):
    """How a tensor will be stored in the int8 `.tflite`."""

    FLOAT = "float"
    QUANTIZED = "quantized"
    FUSED = "fused"  # quantized by the activation op that follows
    NOT_FLOAT = "not float"  # integer or boolean: never quantized
    CONSTANT = "constant"  # computed from no model input (a position embedding): folded


@dataclasses.dataclass
class Wrap:
    """Quantize a layer with a `QuantizeWrapper`."""

    config: QuantizeConfig
    quantize_inputs: object  # bool, or a list of bools for a multi-input layer
    quantize_output: bool = None  # None: as `config` says
    fold: keras.layers.BatchNormalization = None


# A BatchNormalization folded into the layer before it.
FOLDED = "folded"


@dataclasses.dataclass
class QuantizeTensor:
    """Insert a fake-quant layer named `name` after a tensor."""

    name: str
    config: QuantizeConfig


@dataclasses.dataclass
class Plan:
    """What `quantize_model` / `quantize_apply` do with a model."""

    layers: dict = dataclasses.field(default_factory=dict)  # layer name -> Wrap | FOLDED
    tensors: dict = dataclasses.field(default_factory=dict)  # id(KerasTensor) -> QuantizeTensor
    float_layers: list = dataclasses.field(default_factory=list)  # unknown, with weights
    weightless_layers: list = dataclasses.field(default_factory=list)  # unknown, no weights
    float_operations: list = dataclasses.field(default_factory=list)  # unknown operations


def plan_model(model, mode, strict=False):
    """Decides what quantization does with each layer and tensor of `model`.

    Args:
        model: A built Sequential or functional model.
        mode: "all" (quantize every layer the table knows) or "annotated"
            (only `QuantizeAnnotate` layers, and the operations between
            quantized tensors; pass-through ops follow their input).
        strict: In mode "all", raise for a layer with weights that the table
            does not know instead of leaving it float.

    Returns:
        A `Plan`.

    Raises:
        ValueError: for a layer already quantized, an unknown layer with
            weights when `strict`, or a `get_quantize_config()` that does not
            return a `QuantizeConfig`.
    """
    graph = _graph.graph_of(model)
    plan = Plan()
    names = {layer.name for layer in _iter_graph_layers(model)}
    _Planner(plan, mode, strict, names).graph(model, [_initial(t) for t in graph.inputs])
    return plan


def unknown_layers_message(names):
    """The warning for layers with weights that stay float."""
    return (
        f"Layers {names} have weights but no quantization config; they stay float "
        "(TFLite dequantizes before them and quantizes after them). To quantize one, "
        "give it a QuantizeConfig: quantize_annotate_layer(layer, "
        "quantize_config=QuantizeConfig(...)) or a get_quantize_config() method."
    )


def weightless_layers_message(names):
    """The warning for weightless layers the table does not know (they stay float)."""
    return (
        f"Layers {names} are not in the quantization table and stay float: TFLite "
        "will dequantize before them and quantize after them. Give one a QuantizeConfig "
        "with quantize_annotate_layer to quantize it."
    )


def _initial(tensor):
    return Status.FLOAT if _graph.is_float(tensor) else Status.NOT_FLOAT


def _iter_graph_layers(model):
    for node in _graph.nodes(model):
        op = node.operation
        if isinstance(op, keras.layers.Layer):
            yield op
            if isinstance(op, keras.Model) and _graph.is_graph_model(op):
                yield from _iter_graph_layers(op)


def _config_for(layer, mode):
    """(inner layer, QuantizeConfig or None) for a layer or operation in the given mode."""
    if not isinstance(layer, keras.layers.Layer):
        return layer, default_operation_config(layer)
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
    """A graph's nodes in execution order, with who reads each tensor."""

    def __init__(self, model):
        graph = _graph.graph_of(model)
        self.inputs, self.outputs = graph.inputs, graph.outputs
        self.nodes = _graph.nodes(model)
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

    def readers(self, tensor):
        """How many nodes (and model outputs) read `tensor`."""
        return len(self._readers.get(id(tensor), []))

    def only_reader(self, tensor):
        """The one node reading `tensor`, or None (several, or a model output)."""
        readers = self._readers.get(id(tensor), [])
        return readers[0] if len(readers) == 1 else None


class _Planner:
    def __init__(self, plan, mode, strict, names):
        self.plan, self.mode, self.strict = plan, mode, strict
        self.names = names  # layer names taken: inserted layers get new ones
        self.status = {}
        self.live = set()  # tensors computed from a model input

    def graph(self, model, input_status, live=None):
        """Plans the nodes of `model`; returns its outputs' statuses."""
        graph = _Graph(model)
        for i, (t, s) in enumerate(zip(graph.inputs, input_status)):
            self.status[id(t)] = s
            if live is None or live[i]:
                self.live.add(id(t))
        for node in graph.nodes:
            self.node(graph, node)
        return [self.status_of(t) for t in graph.outputs]

    def status_of(self, tensor):
        if not _graph.is_float(tensor):
            return Status.NOT_FLOAT
        return self.status.get(id(tensor), Status.FLOAT)

    def set_outputs(self, node, status, live=True):
        for t in node.output_tensors:
            self.status[id(t)] = status if _graph.is_float(t) else Status.NOT_FLOAT
            if live:
                self.live.add(id(t))

    def node(self, graph, node):
        op = node.operation
        ins = [self.status_of(t) for t in node.input_tensors]
        if isinstance(op, keras.layers.InputLayer):
            return
        if self.plan.layers.get(op.name) is FOLDED:  # keeps the folded layer's input status
            return self.set_outputs(node, ins[0])
        if not any(id(t) in self.live for t in node.input_tensors):
            # Computed from no model input (a position embedding of
            # `ops.arange`): the converter folds it into a constant, which it
            # quantizes as an operand of the op that reads it.
            return self.set_outputs(node, Status.CONSTANT, live=False)
        if isinstance(op, keras.Model) and _graph.is_graph_model(op):
            live = [id(t) in self.live for t in node.input_tensors]
            for t, s in zip(node.output_tensors, self.graph(op, ins, live)):
                self.status[id(t)] = s
                self.live.add(id(t))
            return
        inner, config = _config_for(op, self.mode)
        if config is None:
            return self.unknown(node)
        if not isinstance(config, QuantizeConfig):
            raise ValueError(
                f"get_quantize_config() of layer '{op.name}' must return a "
                f"QuantizeConfig. Received: {config!r}"
            )
        if config.is_passthrough:
            floats = [s for s in ins if s not in (Status.NOT_FLOAT, Status.CONSTANT)]
            if len(floats) == 1:
                out = floats[0]
            else:
                quantized = floats and all(s is not Status.FLOAT for s in floats)
                out = Status.QUANTIZED if quantized else Status.FLOAT
            return self.set_outputs(node, out)
        if not isinstance(op, keras.layers.Layer):
            return self.operation(graph, node, config, ins)
        # A float tensor other nodes read too gets one quantizer of its own,
        # shared by all of them, rather than one inside each wrapper.
        for t, s in zip(node.input_tensors, ins):
            if s is Status.FLOAT and graph.readers(t) > 1:
                self.quantize_tensor(t, t._keras_history.operation.name, QuantizeConfig())
        ins = [self.status_of(t) for t in node.input_tensors]
        decision = Wrap(
            config=config,
            quantize_inputs=[s == Status.FLOAT for s in ins] if len(ins) > 1 else ins[0] == Status.FLOAT,
        )
        out = self.fusions(graph, node, inner, decision)
        self.plan.layers[op.name] = decision
        self.set_outputs(node, out)

    def unknown(self, node):
        op = node.operation
        if isinstance(op, keras.layers.Layer) and self.mode == "all":
            if op.weights:
                if self.strict:
                    raise ValueError(unsupported_message(op))
                self.plan.float_layers.append(op.name)
            else:
                self.plan.weightless_layers.append(op.name)
        elif not isinstance(op, keras.layers.Layer) and any(
            _graph.is_float(t) for t in node.output_tensors
        ):
            self.plan.float_operations.append(f"{op.name} ({type(op).__name__})")
        self.set_outputs(node, Status.FLOAT)

    def operation(self, graph, node, config, ins):
        """An operation computing new values: quantize its float inputs and output."""
        if self.mode == "annotated" and Status.FLOAT in ins:
            return self.set_outputs(node, Status.FLOAT)  # outside the quantized part
        for t, s in zip(node.input_tensors, ins):
            if s is Status.FLOAT:
                self.quantize_tensor(t, t._keras_history.operation.name, QuantizeConfig())
        if self.fuses_activation(graph, node):
            return self.set_outputs(node, Status.FUSED)
        for t in node.output_tensors:
            if _graph.is_float(t):
                self.quantize_tensor(t, node.operation.name, config)
        self.set_outputs(node, Status.QUANTIZED)

    def quantize_tensor(self, tensor, base, config):
        name = f"quant_{base}"
        i = 1
        while name in self.names:
            name, i = f"quant_{base}_{i}", i + 1
        self.names.add(name)
        self.plan.tensors[id(tensor)] = QuantizeTensor(name, config)
        self.status[id(tensor)] = Status.QUANTIZED

    def fuses_activation(self, graph, node):
        """True if the one reader of `node`'s output is a ReLU / ReLU6 TFLite fuses into it."""
        op = node.operation
        fusing = (
            isinstance(op, _layers.ACTIVATION_FUSING_LAYERS)
            or _layers.operation_name(op) in _layers.ACTIVATION_FUSING_OPERATIONS
        )
        if not fusing or graph.calls[id(op)] != 1 or len(node.output_tensors) != 1:
            return False
        reader = graph.only_reader(node.output_tensors[0])
        if reader is None:
            return False
        act_inner, act_config = _config_for(reader.operation, self.mode)
        return act_config is not None and _layers.is_fusable_activation_layer(act_inner)

    def fusions(self, graph, node, inner, decision):
        """Folds a following BatchNorm and fuses a following ReLU; returns the output status."""
        out = Status.QUANTIZED if decision.config.quantize_output else Status.FLOAT
        outs = node.output_tensors
        layer = node.operation
        if not decision.config.quantize_output:
            return out
        if not decision.config.weights:  # Add, Multiply...: a ReLU after them fuses
            if self.fuses_activation(graph, node):
                decision.quantize_output = False
                out = Status.FUSED
            return out
        if len(outs) != 1 or graph.calls[id(layer)] != 1:
            return out
        tail = outs[0]
        reader = graph.only_reader(tail)
        # Conv + BatchNormalization: fold, the BN becomes an Identity.
        if reader is not None and graph.calls[id(reader.operation)] == 1:
            bn = reader.operation
            bn_inner, bn_config = _config_for(bn, self.mode)
            if bn_config is not None and folding.can_fold(inner, bn_inner, len(tail.shape)):
                decision.fold = bn_inner
                self.plan.layers[bn.name] = FOLDED
                reader = graph.only_reader(reader.output_tensors[0])
        # Conv (+ BN) + ReLU/ReLU6: TFLite fuses them, one quantizer after.
        if reader is not None:
            act_inner, act_config = _config_for(reader.operation, self.mode)
            fusable = act_config is not None and _layers.is_fusable_activation_layer(act_inner)
            if fusable and _layers.has_linear_activation(inner):
                decision.quantize_output = False
                out = Status.FUSED
        return out

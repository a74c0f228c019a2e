"""The one node-by-node walk and rebuild of Sequential and functional models.

A Keras 3 graph holds layers and also `Operation` nodes that are not layers:
`x + 3.0`, `x * y`, `ops.reshape`, slicing (`GetItem`), `ops.concatenate`...
(MobileNetV3's hard-sigmoid, most keras_hub models). `rebuild` walks the nodes
in execution order and calls each one again on the new tensors with the same
non-tensor arguments (`node.arguments.fill_in`, as Keras' own graph runner
does), which lets it

* replace layers (`replace`), once per layer: a layer called at several nodes
  gets one replacement, called at each of them;
* insert a layer after any tensor (`insert_after`): the model inputs, the
  outputs of layers and of operations (what a QAT output quantizer needs);
* rebuild nested Sequential / functional models, which stay nested.

Operations keep no state (their settings, such as reshape's shape, are
constructor arguments), so the same objects are called again. Sequential
models come back Sequential.
"""

import keras
from keras import tree

from tfcompress import _inplace, _validate


def is_graph_model(model):
    """True for Sequential and functional models (those rebuilt node by node)."""
    if isinstance(model, keras.Sequential):
        return True
    return isinstance(model, keras.Model) and any(
        cls.__name__ == "Functional" for cls in type(model).__mro__
    )


def graph_of(model):
    """The functional graph of `model` (a Sequential keeps one once built)."""
    if isinstance(model, keras.Sequential):
        return getattr(model, "_functional", None)
    return model


def nodes(model):
    """The call nodes of `model`'s graph in execution order (input nodes left out)."""
    graph = graph_of(model)
    order = []
    for depth in sorted(graph._nodes_by_depth, reverse=True):
        order.extend(
            node for node in graph._nodes_by_depth[depth]
            if node.operation is not None and not node.is_input
        )
    return order


def is_float(tensor):
    """True for a float tensor (the kind compression and quantization touch)."""
    return "float" in str(tensor.dtype)


def rebuild(model, replace=None, insert_after=None, inline=None):
    """Returns a new model computing like `model`, with layers replaced or inserted.

    Args:
        model: A built Sequential or functional model.
        replace: `replace(layer) -> layer | None`, called once per layer that is
            not an `InputLayer` nor a nested Sequential / functional model (those
            are rebuilt with the same functions). None keeps the layer itself,
            shared with `model`.
        insert_after: `insert_after(tensor) -> layer | None`, called with every
            tensor of `model`'s graph (and of nested graphs): inputs, and each
            output of each node. A layer it returns is applied to the new
            tensor, and its output replaces the tensor for every reader.
        inline: `inline(layer) -> bool`: for True, the layer's nodes run its
            `call` on the new tensors, so the layers and operations inside a
            subclassed block become nodes of the new graph (their names must
            be unique in it). Asked once per layer, before `replace`. A block
            whose `call` fails on symbolic tensors stays a layer (`replace`
            is asked then), and `inline.failed` (a list, if it has one) gets
            `(layer, error)`.

    Returns:
        The new model: Sequential for a Sequential, else functional.
    """
    _validate.check_built(model, "compress")
    return _Rebuild(
        replace or (lambda layer: None), insert_after or (lambda t: None), inline or (lambda layer: False)
    ).model(model)


def copy(model):
    """A copy of a Sequential / functional model with its own layers and weights.

    Layers are re-created from their configs (nested graph models rebuilt), so
    a rewrite of the copy leaves `model` untouched.
    """
    pairs = []

    def fresh(layer):
        if isinstance(layer, keras.layers.Lambda):
            # Weightless, so sharing it is safe; re-creating one from its
            # config needs unsafe deserialization for a Python lambda.
            return None
        new = type(layer).from_config(layer.get_config())
        pairs.append((layer, new))
        return new

    result = rebuild(model, replace=fresh)
    for old, new in pairs:  # built by the rebuild's calls
        # A block whose layers were wrapped in place (`_inplace`): its config
        # does not hold the wrappers, so they are put back before the weights.
        _inplace.copy_wrappers(old, new)
        new.set_weights(old.get_weights())
    return result


class _Rebuild:
    def __init__(self, replace, insert_after, inline):
        self.replace = replace
        self.insert_after = insert_after
        self.inline = inline
        self.replacements = {}  # id(old operation) -> new operation
        self.inlined = set()  # id of layers whose `call` runs on the new tensors

    def operation(self, op):
        if id(op) not in self.replacements:
            if isinstance(op, keras.Model) and is_graph_model(op):
                new = self.model(op)
            elif isinstance(op, keras.layers.Layer) and self.inline(op):
                new = op.call  # its layers and operations join the graph
                self.inlined.add(id(op))
            elif isinstance(op, keras.layers.Layer):
                new = self.replace(op) or op
            else:  # a keras Operation: stateless, called again as it is
                new = op
            self.replacements[id(op)] = new
        return self.replacements[id(op)]

    def call(self, op, args, kwargs):
        new = self.operation(op)
        if id(op) not in self.inlined:
            return new(*args, **kwargs)
        try:
            return new(*args, **kwargs)
        except Exception as error:  # a block whose `call` needs concrete tensors
            failed = getattr(self.inline, "failed", None)
            if failed is not None:
                failed.append((op, error))
            self.inlined.discard(id(op))
            self.replacements[id(op)] = self.replace(op) or op
            return self.replacements[id(op)](*args, **kwargs)

    def after(self, old, new):
        layer = self.insert_after(old)
        return new if layer is None else layer(new)

    def model(self, model):
        _validate.check_built(model, "compress")
        graph = graph_of(model)
        tensors, new_inputs = {}, []
        for x in graph.inputs:
            layer = x._keras_history.operation
            y = keras.Input(
                batch_shape=x.shape, dtype=x.dtype, sparse=x.sparse, name=layer.name,
                optional=getattr(layer, "optional", False),
            )
            new_inputs.append(y)
            tensors[id(x)] = self.after(x, y)
        for node in nodes(model):
            args, kwargs = node.arguments.fill_in(tensors)
            outputs = tree.flatten(self.call(node.operation, args, kwargs))
            for old, new in zip(node.outputs, outputs):
                tensors[id(old)] = self.after(old, new)
        outputs = [tensors[id(x)] for x in graph.outputs]
        if isinstance(model, keras.Sequential):
            return _as_sequential(model, new_inputs[0], outputs[0])
        inputs = tree.pack_sequence_as(graph._inputs_struct, new_inputs)
        outputs = tree.pack_sequence_as(graph._outputs_struct, outputs)
        return keras.Model(inputs, outputs, name=model.name)


def _as_sequential(model, new_input, new_output):
    """The chain of layers from `new_input` to `new_output`, as a Sequential."""
    chain = []
    tensor = new_output
    while tensor is not new_input:
        op, node_index, _ = tensor._keras_history
        chain.append(op)
        tensor = op._inbound_nodes[node_index].input_tensors[0]
    return keras.Sequential([new_input] + chain[::-1], name=model.name)


def topological_nodes(model):
    """The nodes of `model`'s graph, input nodes included, each after those it reads.

    Unlike `nodes`, the order depends only on the graph's structure (depth
    first from the outputs, inputs in argument order), so a model and its
    reloaded copy give the same order (channel groups are numbered by it).

    Args:
        model: A built Sequential or functional model.

    Returns:
        A list of `Node`s.

    Raises:
        ValueError: if `model` has no graph (subclassed or not built).
    """
    graph = graph_of(model) if is_graph_model(model) else None
    if graph is None or not getattr(graph, "outputs", None):
        raise ValueError(
            f"Model '{model.name}' has no functional graph to walk: give a built "
            "Sequential or functional model (with a `keras.Input`)."
        )
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


def inputs_and_outputs(model):
    """`(inputs, outputs)`: the symbolic input and output tensors of `model`'s graph."""
    graph = graph_of(model)
    return list(graph.inputs), list(graph.outputs)


def is_nested_graph(operation):
    """True for a Sequential / functional model used as a layer of another graph."""
    return isinstance(operation, keras.Model) and is_graph_model(operation)


def one_example_shape(tensor):
    """The shape of a `KerasTensor` for one example: the batch axis as 1.

    Other unknown sizes stay None.
    """
    shape = list(tensor.shape)
    if shape and shape[0] is None:
        shape[0] = 1
    return tuple(None if d is None else int(d) for d in shape)

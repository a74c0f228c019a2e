"""Walking the graph of a Sequential or functional Keras model, node by node.

Keras records every call of an operation as a `Node` (its input and output
`KerasTensor`s). The graph walks of tfcompress (channel dependencies, MAC
counting) visit those nodes in topological order and look inside nested
Sequential / functional models. A node's operation is usually a layer, but it
may also be a Keras `Operation` that is not one (`x + 1`, `ops.reshape`, a
slice): walks must expect those.
"""

import keras

from tfcompress import _rewrite


def graph_of(model):
    """The functional graph of `model` (a Sequential keeps one once built)."""
    if isinstance(model, keras.Sequential):
        return getattr(model, "_functional", None) or model
    return model


def topological_nodes(model):
    """The nodes of `model`'s graph, each after the nodes it reads from.

    The order depends only on the graph's structure (depth first from the
    outputs, inputs in argument order), so a model and its reloaded copy give
    the same order.

    Args:
        model: A built Sequential or functional model.

    Returns:
        A list of `Node`s, input nodes included.

    Raises:
        ValueError: if `model` has no graph (subclassed or not built).
    """
    graph = graph_of(model)
    if not _rewrite.is_graph_model(model) or not getattr(graph, "outputs", None):
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
    return isinstance(operation, keras.Model) and _rewrite.is_graph_model(operation)


def one_example_shape(tensor):
    """The shape of a `KerasTensor` for one example: the batch axis as 1.

    Other unknown sizes stay None.
    """
    shape = list(tensor.shape)
    if shape and shape[0] is None:
        shape[0] = 1
    return tuple(None if d is None else int(d) for d in shape)

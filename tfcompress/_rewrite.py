"""The one model-rewrite mechanism every technique uses.

Pruning, clustering and quantization all replace some layers of a model by a
wrapper (and strip does the inverse). `map_layers` does that for every kind of
Keras model:

* Sequential and functional models (nested ones included) are copied: the
  result has its own layers and weights and the input model is left untouched.
* Subclassed models have no graph to rebuild, so their layer attributes
  (directly, or in lists/tuples/dicts) are replaced in place and the same model
  is returned.
"""

import keras


def is_graph_model(model):
    """True for Sequential and functional models (those `clone_model` rebuilds)."""
    if isinstance(model, keras.Sequential):
        return True
    return isinstance(model, keras.Model) and any(
        cls.__name__ == "Functional" for cls in type(model).__mro__
    )


def iter_layers(model):
    """Yields every layer below `model`, depth first, wrappers before their inner layer."""
    seen = set()

    def visit(layer):
        for sub in _sublayers(layer):
            if id(sub) in seen:
                continue
            seen.add(id(sub))
            yield sub
            yield from visit(sub)

    yield from visit(model)


def map_layers(model, fn):
    """Returns `model` with each layer `l` replaced by `fn(l)` when that is not None.

    `fn` sees fully built layers holding the model's trained weights, so a
    wrapper it returns can initialise itself from them (e.g. cluster centroids).
    Nested Sequential/functional models are rewritten recursively; `fn` is
    never called on them, only on their layers.

    Args:
        model: A built `keras.Model`.
        fn: `fn(layer) -> keras.layers.Layer | None`.

    Returns:
        A new model for Sequential/functional input, `model` itself (modified)
        for a subclassed model. Either way it must be compiled before `fit`.

    Raises:
        TypeError: if `model` is not a `keras.Model`.
        ValueError: if `model` is a Sequential/functional model that is not built.
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            "Expected a keras.Model. Received: "
            f"model={model!r} of type {type(model).__name__}"
        )
    if is_graph_model(model):
        return _map_graph_model(model, fn)
    _map_in_place(model, fn)
    _reset_compiled_functions(model)
    return model


def strip_wrappers(model, wrapper_types):
    """Replaces every wrapper of `wrapper_types` by its inner layer with final weights.

    Each wrapper class implements `stripped_layer()`, which bakes what the
    wrapper applies in `call` (mask, centroids, ...) into its inner layer's
    weights and returns that layer.

    Args:
        model: A `keras.Model`, a layer, or a list of layers.
        wrapper_types: A wrapper class or tuple of classes to remove.

    Returns:
        The same kind of object with those wrappers removed (see `map_layers`);
        a model holding none of them is returned as it is, not copied.
    """

    def unwrap(layer):
        if not isinstance(layer, wrapper_types):
            return None
        inner = layer.stripped_layer()
        return unwrap(inner) or inner

    if isinstance(model, keras.Model):
        if not any(isinstance(layer, wrapper_types) for layer in iter_layers(model)):
            return model
        return map_layers(model, unwrap)
    if isinstance(model, keras.layers.Layer):
        return unwrap(model) or model
    if isinstance(model, (list, tuple)):
        return [unwrap(layer) or layer for layer in model]
    raise TypeError(
        "Expected a keras.Model, a layer or a list of layers. Received: "
        f"{model!r} of type {type(model).__name__}"
    )


def wrapper_from_config(cls, config, serialized_args=()):
    """Rebuilds a wrapper from `get_config()`: the inner layer and `serialized_args`.

    Args:
        cls: The wrapper class.
        config: Its config; "layer" and each of `serialized_args` hold
            `keras.saving.serialize_keras_object` output.
        serialized_args: Names of other arguments stored serialized.

    Returns:
        The new wrapper.
    """
    config = dict(config)
    for key in ("layer",) + tuple(serialized_args):
        config[key] = keras.saving.deserialize_keras_object(config[key])
    return cls(**config)


def _map_graph_model(model, fn):
    if not model.built or not model.inputs:
        raise ValueError(
            f"Model '{model.name}' is not built, so its layers have no weights to "
            "compress. Give it an `keras.Input(shape=...)` or call it once on a "
            "batch of data first."
        )
    # First a plain copy holding the trained weights, then a second pass that
    # hands those built, weight-carrying layers to `fn`.
    copy = keras.models.clone_model(model, recursive=True)
    copy.set_weights(model.get_weights())

    def clone_function(layer):
        replacement = fn(layer)
        return layer if replacement is None else replacement

    return keras.models.clone_model(copy, clone_function=clone_function, recursive=True)


def _map_in_place(layer, fn):
    for name, value in list(vars(layer).items()):
        if _is_internal(name) or not _holds_layer(value):
            continue
        new_value = _map_value(value, fn)
        if new_value is value:
            continue
        for old in _flatten_layers(value):
            _untrack(layer, old)
        object.__delattr__(layer, name)
        _set_tracked(layer, name, new_value)


def _map_value(value, fn):
    if isinstance(value, keras.layers.Layer):
        if isinstance(value, keras.Model) and is_graph_model(value):
            return _map_graph_model(value, fn)
        replacement = fn(value)
        if replacement is not None:
            return replacement
        _map_in_place(value, fn)
        return value
    if isinstance(value, (list, tuple)):
        items = [_map_value(v, fn) for v in value]
        if all(a is b for a, b in zip(items, value)):
            return value
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, dict):
        items = {k: _map_value(v, fn) for k, v in value.items()}
        if all(items[k] is value[k] for k in value):
            return value
        return items
    return value


# Attributes through which Keras (and TensorFlow's checkpoint tracking) record
# layers themselves; rewriting them directly would double-count every layer.
_KERAS_INTERNALS = frozenset({"_layers", "_tracker", "_inbound_nodes", "_outbound_nodes"})


def _is_internal(name):
    return name in _KERAS_INTERNALS or name.startswith("_self_")


def _holds_layer(value):
    return any(True for _ in _flatten_layers(value))


def _flatten_layers(value):
    if isinstance(value, keras.layers.Layer):
        yield value
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _flatten_layers(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _flatten_layers(v)


def _set_tracked(parent, name, value):
    # A built layer locks its tracker against new state; a rewrite is the one
    # legitimate exception.
    tracker = getattr(parent, "_tracker", None)
    was_locked = tracker is not None and tracker.locked
    if was_locked:
        tracker.unlock()
    try:
        setattr(parent, name, value)
    finally:
        if was_locked:
            tracker.lock()


def _untrack(parent, layer):
    tracker = getattr(parent, "_tracker", None)
    if tracker is not None:
        tracker.untrack(layer)


def _sublayers(layer):
    return list(getattr(layer, "_layers", []))


def _reset_compiled_functions(model):
    # A model traced before the rewrite would otherwise keep running its old layers.
    for attr in ("train_function", "test_function", "predict_function"):
        if getattr(model, attr, None) is not None:
            setattr(model, attr, None)

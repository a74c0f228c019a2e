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

import warnings

import keras

from tfcompress import _layers, _validate


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
        wrapper_types: A wrapper class or tuple of classes to remove, or a
            predicate `fn(layer) -> bool` choosing the wrappers to remove.

    Returns:
        The same kind of object with those wrappers removed (see `map_layers`);
        a model holding none of them is returned as it is, not copied.
    """
    if callable(wrapper_types) and not isinstance(wrapper_types, type):
        is_wrapper = wrapper_types
    else:
        is_wrapper = lambda layer: isinstance(layer, wrapper_types)  # noqa: E731

    def unwrap(layer):
        if not is_wrapper(layer):
            return None
        inner = layer.stripped_layer()
        return unwrap(inner) or inner

    if isinstance(model, keras.Model):
        if not any(is_wrapper(layer) for layer in iter_layers(model)):
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


def per_layer_settings(argument, value, check):
    """Normalizes a technique's setting to `{layer_name or None: setting}`.

    One value applies to every layer (key None); a dict names layers, each
    with its own value (a None key gives the value of every other layer).

    Args:
        argument: The argument's name, for messages.
        value: One setting, or a non-empty dict `{layer_name: setting}`.
        check: `check(name, value) -> value`, validating one setting;
            `name` is how to refer to it in a message.

    Returns:
        The dict.

    Raises:
        ValueError: for an empty dict, a key that is not a string, or a
            setting `check` rejects.

    Example:

    >>> per_layer_settings("bits", {"conv": 4, None: 8}, lambda name, v: v)
    {'conv': 4, None: 8}
    """
    if not isinstance(value, dict):
        return {None: check(argument, value)}
    if not value:
        raise ValueError(
            f"{argument} must be a setting for every layer or a non-empty dict "
            f"{{layer_name: setting}}. Received: {argument}={value!r}"
        )
    settings = {}
    for name, setting in value.items():
        if name is not None and not isinstance(name, str):
            raise ValueError(
                f"{argument} dict keys must be layer names (str) or None. "
                f"Received: key {name!r} of type {type(name).__name__}"
            )
        settings[name] = check(f"{argument}[{name!r}]", setting)
    return settings


def apply_per_layer(target, settings, wrapper_cls, make_wrapper, argument, target_argument):
    """Wraps the layers of a model, a layer or a list of layers: THE dispatcher.

    Every technique that wraps layers one by one goes through here, so they
    all accept the same inputs and fail with the same messages.

    * A model: each layer with a setting (its name in `settings`, else the
      None entry) that `wrapper_cls` supports is wrapped. A layer named in
      `settings` that it does not support raises; an unnamed one with weights
      of its own is left as it is with a warning (normalization layers
      silently). Layers already wrapped by `wrapper_cls` are kept; a layer
      held by another compression wrapper raises (strip it first).
    * A layer must have a setting and be supported; so must each layer of a
      list that has a setting (the others pass through unchanged).

    Names in `settings` that match no wrapped layer raise.

    Args:
        target: A built `keras.Model`, a layer, or a list / tuple of layers.
        settings: `{layer_name or None: setting}` from `per_layer_settings`.
        wrapper_cls: The `CompressionWrapper` subclass.
        make_wrapper: `make_wrapper(layer, setting) -> wrapper`.
        argument: Name of the settings argument, for messages.
        target_argument: Name of the `target` argument, for messages.

    Returns:
        The model (a copy for Sequential / functional, rewritten in place when
        subclassed; see `map_layers`), the wrapper, or a list of layers.

    Raises:
        TypeError: if `target` is not a model, a layer or a list of layers.
        ValueError: as described above.
    """
    from tfcompress._wrapper import CompressionWrapper, already_wrapped_message

    wrapped = set()

    def wrap(layer, setting):
        wrapped.add(layer.name)
        wrapper = make_wrapper(layer, setting)
        return wrapper.build_from_wrapped_layer()

    def wrap_given(layer):
        # A layer given directly must be compressible, with a setting.
        if isinstance(layer, wrapper_cls):
            wrapped.add(layer.layer.name)
            return layer
        if isinstance(layer, CompressionWrapper):
            raise ValueError(already_wrapped_message(layer, wrapper_cls))
        setting = settings.get(layer.name, settings.get(None))
        if setting is None:
            raise ValueError(
                f"{argument} has no entry for layer '{layer.name}'. "
                f"Received: {argument}={_describe(settings)}"
            )
        if not wrapper_cls.supports(layer):
            raise ValueError(wrapper_cls.unsupported_message(layer))
        return wrap(layer, setting)

    def wrap_in_model(layer):
        if isinstance(layer, wrapper_cls):
            wrapped.add(layer.layer.name)
            return None
        if isinstance(layer, CompressionWrapper):
            raise ValueError(already_wrapped_message(layer, wrapper_cls))
        setting = settings.get(layer.name, settings.get(None))
        if setting is None:
            return None
        if not wrapper_cls.supports(layer):
            if layer.name in settings:
                raise ValueError(wrapper_cls.unsupported_message(layer))
            if _layers.owns_weights(layer) and not isinstance(layer, _layers.NORMALIZATION_LAYERS):
                warnings.warn(
                    f"Layer '{layer.name}' ({type(layer).__name__}) has weights but is not "
                    f"supported by {wrapper_cls.technique}; it is left as it is. Define "
                    f"{wrapper_cls.opt_in_method}() on it to include it.",
                    stacklevel=4,
                )
            return None
        return wrap(layer, setting)

    if isinstance(target, keras.Model):
        result = map_layers(target, wrap_in_model)
        where = f"model '{target.name}'"
    elif isinstance(target, keras.layers.Layer):
        result, where = wrap_given(target), f"layer '{target.name}'"
    elif isinstance(target, (list, tuple)) and target and all(
        isinstance(layer, keras.layers.Layer) for layer in target
    ):
        # Layers a dict does not name pass through unchanged.
        result = [
            wrap_given(layer) if layer.name in settings or None in settings else layer
            for layer in target
        ]
        where = "the list of layers"
    else:
        raise TypeError(
            f"{target_argument} must be a keras.Model, a keras layer or a non-empty list "
            f"of layers. Received: {target_argument}={target!r} of type {type(target).__name__}"
        )
    missing = sorted(name for name in settings if name is not None and name not in wrapped)
    if missing:
        raise ValueError(f"{argument} names layers that {where} does not have: {missing}")
    if isinstance(target, keras.Model) and not wrapped:
        warnings.warn(
            f"Model '{target.name}' has no layer that {wrapper_cls.technique} supports; "
            "nothing is compressed.",
            stacklevel=3,
        )
    return result


def _describe(settings):
    if list(settings) == [None]:
        return repr(settings[None])
    return repr(settings)


def _map_graph_model(model, fn):
    _validate.check_built(model, "compress")
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

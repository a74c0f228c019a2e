"""The one model-rewrite mechanism every technique uses.

Pruning, clustering and quantization all replace some layers of a model by a
wrapper (and strip does the inverse). `map_layers` does that for every kind of
Keras model:

* Sequential and functional models (nested ones included) are copied and
  rebuilt node by node (`tfcompress._graph`): the result has its own layers and
  weights, the input model is left untouched, and the graph's `Operation`
  nodes that are not layers (`x + 3.0`, `ops.reshape`, slicing) pass through.
  A layer of the graph that holds layers of its own (a subclassed block such
  as a keras_hub `TransformerEncoder`) has them rewritten in place, in the copy.
* Subclassed models have no graph to rebuild, so their layer attributes
  (directly, or in lists/tuples/dicts) are replaced in place and the same model
  is returned. Its `fit` then passes `training=True` to `call` even when `call`
  does not declare the argument (see `map_layers`).
"""

import warnings

import keras

from tfcompress import _graph, _inplace, _layers, _validate
from tfcompress._graph import is_graph_model  # noqa: F401  (the check lives there)


def iter_layers(model):
    """Yields every layer below `model`, depth first, wrappers before their inner layer."""
    seen = set()

    def visit(layer):
        for sub in getattr(layer, "_layers", []):
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
        A subclassed model holding wrappers then trains and saves as
        described in `tfcompress._inplace`.

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
    _inplace.map_in_place(model, fn, _map_graph_model)
    _inplace.mark_rewritten(model)
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
    left = []  # layers with weights the technique does not support

    def wrap(layer, setting):
        wrapped.add(layer.name)
        wrapper = make_wrapper(layer, setting)
        return wrapper.build_from_wrapped_layer()

    def consider(layer, given):
        # `given`: the layer was passed directly (alone or in a list), so it
        # must be compressible and have a setting; in a model, others pass.
        if isinstance(layer, wrapper_cls):
            wrapped.add(layer.layer.name)
            return layer if given else None
        if isinstance(layer, CompressionWrapper):
            raise ValueError(already_wrapped_message(layer, wrapper_cls))
        setting = settings.get(layer.name, settings.get(None))
        if setting is None:
            if given:
                raise ValueError(
                    f"{argument} has no entry for layer '{layer.name}'. "
                    f"Received: {argument}={_describe(settings)}"
                )
            return None
        if not given and layer.name not in settings and not wrapper_cls.wraps_unnamed(layer):
            return None
        if not wrapper_cls.supports(layer):
            if given or layer.name in settings:
                raise ValueError(wrapper_cls.unsupported_message(layer))
            if _layers.owns_weights(layer) and not isinstance(layer, _layers.NORMALIZATION_LAYERS):
                left.append(f"{layer.name} ({type(layer).__name__})")
            return None
        return wrap(layer, setting)

    if isinstance(target, keras.Model):
        result = map_layers(target, lambda layer: consider(layer, given=False))
        where = f"model '{target.name}'"
    elif isinstance(target, keras.layers.Layer):
        result, where = consider(target, given=True), f"layer '{target.name}'"
    elif isinstance(target, (list, tuple)) and target and all(
        isinstance(layer, keras.layers.Layer) for layer in target
    ):
        # Layers a dict does not name pass through unchanged.
        result = [
            consider(layer, given=True) if layer.name in settings or None in settings else layer
            for layer in target
        ]
        where = "the list of layers"
    else:
        raise TypeError(
            f"{target_argument} must be a keras.Model, a keras layer or a non-empty list "
            f"of layers. Received: {target_argument}={target!r} of type {type(target).__name__}"
        )
    if left:
        warnings.warn(
            f"Layers {left} have weights but are not supported by {wrapper_cls.technique}; "
            f"they are left as they are. Define {wrapper_cls.opt_in_method}() on a layer "
            "to include it.",
            stacklevel=3,
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
    # The copy holds the trained weights; `fn` gets its built layers.
    def replace(layer):
        replacement = fn(layer)
        if replacement is None and _inplace.is_container(layer):
            _inplace.map_in_place(layer, fn, _map_graph_model)
        return replacement

    return _graph.rebuild(_graph.copy(model), replace=replace)


def _reset_compiled_functions(model):
    # A model traced before the rewrite would otherwise keep running its old layers.
    for attr in ("train_function", "test_function", "predict_function"):
        if getattr(model, attr, None) is not None:
            setattr(model, attr, None)

"""Rewriting a subclassed model in place, so that it still trains and reloads.

A subclassed model has no graph to rebuild: `map_in_place` replaces its layer
attributes (directly, or in lists / tuples / dicts, and inside layers that
hold layers). Two things then need help, which `mark_rewritten` gives:

* Training. Keras' `fit` passes `training=True` to a model's `call` only if
  `call` declares the argument; otherwise the wrappers would never see a
  training step (nothing pruned, silently). The model is marked so that `fit`
  passes it anyway: `Layer.__call__` drops it before `call` and puts it in the
  call context, where the wrappers read it. So do the model's own
  BatchNormalization and Dropout layers: in `fit` they run in training mode,
  as in a functional model.
* Saving. The `.keras` file stores the model's config, from which Keras
  re-creates the model with its plain layers, which cannot take the wrappers'
  variables. A model holding compression wrappers is given a subclass of its
  own class (same name and module) registered as
  `tfcompress>RewrittenModel`, whose config is the model's own plus the
  wrappers and where they sit; loading re-creates the model and puts the
  wrappers back before Keras loads the variables. Stripping the last wrapper
  gives the model its own class back.
"""

import keras

# Attributes through which Keras (and TensorFlow's checkpoint tracking) record
# layers themselves; rewriting them directly would double-count every layer.
# (A user's attribute may well start with `_self_`, as `_self_attention_layer`.)
_KERAS_INTERNALS = frozenset({
    "_layers",
    "_tracker",
    "_inbound_nodes",
    "_outbound_nodes",
    "_self_unconditional_checkpoint_dependencies",
    "_self_unconditional_dependency_names",
    "_self_unconditional_deferred_dependencies",
    "_self_saveable_object_factories",
    "_self_name_based_restores",
})

REGISTERED_NAME = "tfcompress>RewrittenModel"


def is_container(layer):
    """True for a layer holding layers to rewrite (a compression wrapper's are its own)."""
    from tfcompress._wrapper import CompressionWrapper

    return bool(getattr(layer, "_layers", None)) and not isinstance(layer, CompressionWrapper)


def map_in_place(layer, fn, map_graph):
    """Replaces each layer `l` held by `layer`'s attributes with `fn(l)` when not None.

    Args:
        layer: A layer or subclassed model, changed in place.
        fn: `fn(layer) -> layer | None`.
        map_graph: `map_graph(model, fn) -> model` for a Sequential / functional
            model held as an attribute.
    """
    for name, value in list(vars(layer).items()):
        if name in _KERAS_INTERNALS or not any(True for _ in _flatten_layers(value)):
            continue
        new_value = _map_value(value, fn, map_graph)
        if new_value is not value:
            _replace_attribute(layer, name, value, new_value)


def mark_rewritten(model):
    """Lets a subclassed model rewritten in place train and reload (module docstring)."""
    model._call_has_training_arg = True
    original = getattr(type(model), "_tfcompress_original_class", type(model))
    holds_wrappers = any(True for _ in _wrapper_paths(model))
    model.__class__ = _rewritten_class(original) if holds_wrappers else original


def _map_value(value, fn, map_graph):
    from tfcompress._graph import is_graph_model

    if isinstance(value, keras.layers.Layer):
        if isinstance(value, keras.Model) and is_graph_model(value):
            return map_graph(value, fn)
        replacement = fn(value)
        if replacement is not None:
            return replacement
        if is_container(value):
            map_in_place(value, fn, map_graph)
        return value
    if isinstance(value, (list, tuple)):
        items = [_map_value(v, fn, map_graph) for v in value]
        if all(a is b for a, b in zip(items, value)):
            return value
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, dict):
        items = {k: _map_value(v, fn, map_graph) for k, v in value.items()}
        if all(items[k] is value[k] for k in value):
            return value
        return items
    return value


def _replace_attribute(parent, name, old_value, new_value):
    tracker = getattr(parent, "_tracker", None)
    for old in _flatten_layers(old_value):
        if tracker is not None:
            tracker.untrack(old)
    object.__delattr__(parent, name)
    # A built layer locks its tracker against new state; a rewrite is the one
    # legitimate exception.
    was_locked = tracker is not None and tracker.locked
    if was_locked:
        tracker.unlock()
    try:
        setattr(parent, name, new_value)
    finally:
        if was_locked:
            tracker.lock()


def _flatten_layers(value):
    if isinstance(value, keras.layers.Layer):
        yield value
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _flatten_layers(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _flatten_layers(v)


def _wrapper_paths(layer, path=()):
    """Yields `(attribute path, wrapper)` for each compression wrapper below `layer`."""
    from tfcompress._wrapper import CompressionWrapper

    def visit(value, where):
        if isinstance(value, CompressionWrapper):
            yield where, value
        elif isinstance(value, keras.layers.Layer):
            if is_container(value):
                yield from _wrapper_paths(value, where)
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                yield from visit(v, where + (i,))
        elif isinstance(value, dict):
            for k, v in value.items():
                yield from visit(v, where + (k,))

    for name, value in list(vars(layer).items()):
        if name not in _KERAS_INTERNALS:
            yield from visit(value, path + (name,))


def _put(layer, path, new):
    """Sets the layer at attribute `path` below `layer` to `new`."""
    name, rest = path[0], path[1:]
    value = getattr(layer, name)
    if not rest:
        _replace_attribute(layer, name, value, new)
    elif isinstance(value, keras.layers.Layer):
        _put(value, rest, new)
    else:
        _replace_attribute(layer, name, value, _with_item(value, rest, new))


def copy_wrappers(source, target):
    """Wraps the layers of `target`, a built copy of `source`, as `source`'s are.

    `target` was re-created from `source`'s config (which knows nothing of the
    wrappers put in place) and built. Each new wrapper is built as its
    original was, so that `target.set_weights(source.get_weights())` then
    copies every variable, the wrappers' included.
    """
    for path, wrapper in _wrapper_paths(source):
        kwargs = {k: v for k, v in wrapper.get_config().items() if k != "layer"}
        for key in type(wrapper).serialized_args:
            kwargs[key] = keras.saving.deserialize_keras_object(kwargs[key])
        clone = type(wrapper)(_get(target, path), **kwargs)
        clone.build_from_config(wrapper.get_build_config())
        _put(target, path, clone)


def _get(layer, path):
    value = layer
    for key in path:
        value = getattr(value, key) if isinstance(value, keras.layers.Layer) else value[key]
    return value


def _with_item(container, path, new):
    key, rest = path[0], path[1:]
    item = new if not rest else _with_item(container[key], rest, new)
    if isinstance(container, dict):
        return {**container, key: item}
    items = list(container)
    items[key] = item
    return items if isinstance(container, list) else tuple(items)


class _Rewritten:
    """What the subclass `mark_rewritten` gives a model adds: its config and reload."""

    def get_config(self):
        original = self._tfcompress_original_class
        return {
            "model": {
                "module": original.__module__,
                "class_name": original.__name__,
                "registered_name": keras.saving.get_registered_name(original),
                "config": original.get_config(self),
            },
            "wrappers": [
                {"path": list(path), "layer": keras.saving.serialize_keras_object(wrapper)}
                for path, wrapper in _wrapper_paths(self)
            ],
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        model = keras.saving.deserialize_keras_object(config["model"], custom_objects)
        for entry in config["wrappers"]:
            wrapper = keras.saving.deserialize_keras_object(entry["layer"], custom_objects)
            _put(model, tuple(entry["path"]), wrapper)
        mark_rewritten(model)
        return model


_CLASSES = {}


def _rewritten_class(original):
    if original not in _CLASSES:
        cls = type(
            original.__name__,
            (_Rewritten, original),
            {"__module__": original.__module__, "_tfcompress_original_class": original},
        )
        # The one registered name every such class is saved under; any of them
        # (or `RewrittenModel` in a fresh process) loads any of their files.
        keras.saving.register_keras_serializable("tfcompress", "RewrittenModel")(cls)
        _CLASSES[original] = cls
    return _CLASSES[original]


@keras.saving.register_keras_serializable("tfcompress", "RewrittenModel")
class RewrittenModel(_Rewritten, keras.Model):
    """Loads a `.keras` file of a subclassed model holding compression wrappers.

    Never instantiated: its `from_config` returns the user's model, re-created
    from its own config with the wrappers put back.
    """

"""`CompressionWrapper`: the one base class of every compression wrapper.

A technique (pruning, clustering, quantization-aware training, channel
pruning, ...) is a subclass that states which variables of the wrapped layer
it replaces (`target_weights`) and computes their effective values
(`weight_values`). The base does the rest, the same way for every technique:

* `call` runs the wrapped layer with those values substituted for its
  variables (gradients flow through them), after `update_state` on training
  calls;
* `shipped_weights` gives the values that will ship (for `summarize`);
* `stripped_layer` bakes them into the wrapped layer (for `strip_*`);
* `get_config` / `from_config` store the wrapped layer and the constructor
  arguments named in `config_args` (`serialized_args` for Keras objects).

A wrapper never changes the layer it is given: a technique that needs a
variant of it (an activation split off, BatchNorm folded in) wraps a copy
(`tfcompress._layers.clone_layer`).
"""

import keras
from keras import tree

from tfcompress import _layers
from tfcompress._state import call_with_weights


class CompressionWrapper(keras.layers.Wrapper):
    """Base of the compression wrappers; see the module docstring.

    Class attributes a subclass sets:
        technique: Name of the technique, for messages ("pruning").
        opt_in_method: Method a custom layer defines to take part, returning
            the variables to compress (e.g. "get_prunable_weights"); None
            when the subclass decides `target_weights` itself.
        name_prefix: Default name of the wrapper: `<name_prefix>_<layer name>`.
        strip_function: The public function that removes this wrapper, for
            messages ("strip_pruning"); None if it is never stripped.
        config_args: Constructor arguments stored as they are by `get_config`.
        serialized_args: Constructor arguments holding Keras objects, stored
            with `keras.saving.serialize_keras_object`.
        named_only: Layer types the technique supports but leaves alone in a
            whole model unless the settings name them (a layer given directly
            is still wrapped); custom layers with `opt_in_method` are not
            affected.

    Methods a subclass implements: `build_state` (its variables),
    `weight_values` and, if training changes its state, `update_state`.

    Args:
        layer: The layer to wrap.
        **kwargs: Base layer arguments (`name`, ...).

    Raises:
        ValueError: if `layer` is not a layer the technique supports.
    """

    technique = "compression"
    opt_in_method = None
    name_prefix = "compressed"
    strip_function = None
    config_args = ()
    serialized_args = ()
    named_only = ()

    def __init__(self, layer, **kwargs):
        self.check_layer(layer)
        kwargs.setdefault("name", f"{self.name_prefix}_{layer.name}")
        super().__init__(layer, **kwargs)

    @classmethod
    def supports(cls, layer):
        """True if this technique can wrap `layer`."""
        return cls.opt_in_method is not None and _layers.is_compressible(layer, cls.opt_in_method)

    @classmethod
    def wraps_unnamed(cls, layer):
        """True if a whole-model call wraps `layer` when the settings do not name it."""
        opted_in = cls.opt_in_method is not None and callable(getattr(layer, cls.opt_in_method, None))
        return opted_in or not isinstance(layer, cls.named_only)

    @classmethod
    def unsupported_message(cls, layer):
        """Why `layer` cannot be wrapped, and how a custom layer opts in."""
        return (
            f"Layer '{layer.name}' of type {type(layer).__name__} is not supported by "
            f"{cls.technique}. Supported types: {', '.join(_layers.COMPRESSIBLE_LAYER_NAMES)}; "
            f"a custom layer opts in by defining `{cls.opt_in_method}()` returning the "
            "variables to compress."
        )

    @classmethod
    def check_layer(cls, layer):
        """Raises ValueError unless `layer` is a layer this technique can wrap."""
        check_unwrapped_layer(cls, layer)
        if not cls.supports(layer):
            raise ValueError(cls.unsupported_message(layer))

    # -- what a subclass provides -------------------------------------------

    @property
    def target_weights(self):
        """The wrapped layer's variables this wrapper replaces, in a fixed order."""
        # Looked up, not stored: an attribute would make Keras track (and save)
        # the wrapped layer's variables a second time under the wrapper.
        return _layers.compressible_weights(self.layer, self.opt_in_method)

    def build_state(self, input_shape):
        """Creates the wrapper's own variables (the wrapped layer is built)."""

    def update_state(self):
        """Updates the state once per training call, before the forward pass."""

    def weight_values(self, training):
        """The effective value of each of `target_weights`, as tensors, same order."""
        raise NotImplementedError(f"{type(self).__name__} must implement weight_values")

    # -- what follows from it -----------------------------------------------

    def build(self, input_shape=None):
        if not self.layer.built:
            self.layer.build(input_shape)
        self.build_state(input_shape)
        self.built = True

    def build_from_wrapped_layer(self):
        """Builds now from the wrapped layer's build shape, if it is built.

        State that starts from trained weights (centroids, masks of zeros) is
        then created eagerly, not at the first call inside a traced `fit`.
        """
        build_config = self.layer.get_build_config() if self.layer.built else None
        if not self.built and build_config and "input_shape" in build_config:
            self.build(build_config["input_shape"])
        return self

    def call(self, inputs=None, *args, training=None, **kwargs):
        # Arguments as the wrapped layer takes them: one tensor, several
        # (MultiHeadAttention's query, value, key), or keywords only (a
        # keras_hub block calls `attention(query=x, value=x, ...)`).
        training = training is True
        if training:
            self.update_state()
        substitutions = list(zip(self.target_weights, self.weight_values(training)))
        args = positional(inputs, args)
        return self.call_wrapped(substitutions, *args, training=training, **kwargs)

    def compute_output_spec(self, inputs=None, *args, training=None, **kwargs):
        # What the wrapped layer outputs, from its own shape inference: tracing
        # `call` instead would turn an input Keras marks sparse by mistake
        # (`x * 0.5` in a functional graph) into a SparseTensor.
        spec = self.layer.compute_output_spec(*positional(inputs, args), **kwargs)
        return tree.map_structure(lambda t: keras.KerasTensor(t.shape, dtype=t.dtype), spec)

    def call_wrapped(self, substitutions, *args, **kwargs):
        """Calls the wrapped layer computing with `(variable, value)` substitutions."""
        return call_with_weights(self.layer, substitutions, *args, **kwargs)

    def shipped_weights(self):
        """`{id(wrapped variable): numpy value}`: what ships once stripped or converted."""
        return {
            id(variable): keras.ops.convert_to_numpy(value)
            for variable, value in zip(self.target_weights, self.weight_values(False))
        }

    def stripped_layer(self):
        """Writes the shipped values into the wrapped layer and returns it."""
        values = self.shipped_weights()
        for variable in self.target_weights:
            variable.assign(values[id(variable)])
        return self.layer

    def get_config(self):
        config = super().get_config()
        for name in self.config_args:
            config[name] = getattr(self, name)
        for name in self.serialized_args:
            config[name] = keras.saving.serialize_keras_object(getattr(self, name))
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("layer",) + tuple(cls.serialized_args):
            config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)


def positional(inputs, args):
    """The positional call arguments; `inputs` is None when all are keywords."""
    return args if inputs is None else (inputs,) + tuple(args)


def check_unwrapped_layer(wrapper_cls, layer):
    """Raises ValueError unless `layer` is a layer no compression wrapper holds yet."""
    if not isinstance(layer, keras.layers.Layer):
        raise ValueError(
            f"{wrapper_cls.__name__} wraps a keras.layers.Layer. Received: "
            f"layer={layer!r} of type {type(layer).__name__}"
        )
    if isinstance(layer, CompressionWrapper):
        raise ValueError(already_wrapped_message(layer, wrapper_cls))


def already_wrapped_message(wrapper, technique_cls):
    """The error for compressing a layer another wrapper already holds."""
    remedy = (
        f"call tfcompress.{wrapper.strip_function}(model) first"
        if wrapper.strip_function
        else "start from the float model"
    )
    return (
        f"Layer '{wrapper.layer.name}' is already wrapped by {type(wrapper).__name__} "
        f"({wrapper.technique}); {technique_cls.technique} cannot wrap it too: {remedy}."
    )


def strip_for_export(model):
    """Strips every wrapper that only matters in training (pruning, clustering, ...).

    Their masks and centroids are baked into the weights; wrappers without a
    `strip_function` (QAT's, whose fake-quant ops the converter needs) stay.

    Args:
        model: A `keras.Model`, a layer or a list of layers.

    Returns:
        `model` itself when it holds no such wrapper, else the stripped copy
        (see `tfcompress._rewrite.strip_wrappers`).
    """
    from tfcompress import _rewrite

    return _rewrite.strip_wrappers(
        model, lambda layer: isinstance(layer, CompressionWrapper) and bool(layer.strip_function)
    )

"""`QuantizeWrapper` (the QAT layer) and `QuantizeAnnotate` (a marker)."""

import warnings

import keras
import numpy as np
from keras import ops

from tfcompress._rewrite import wrapper_from_config
from tfcompress._state import call_with_weights
from tfcompress.quantization.configs import (
    FUSABLE_ACTIVATIONS,
    SUPPORTED_LAYER_NAMES,
    QuantizeConfig,
    activation_name,
    default_quantize_config,
    fixed_range_for,
)
from tfcompress.quantization.quantizers import ActivationQuantizer, WeightQuantizer

_SEPARABLE = (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)
# A kernel with at most this many distinct values is treated as clustered.
MAX_CLUSTERS = 256


def unsupported_message(layer):
    return (
        f"Layer '{layer.name}' of type {type(layer).__name__} cannot be quantized: "
        f"it is not one of {', '.join(sorted(set(SUPPORTED_LAYER_NAMES)))}. To proceed, "
        "either give it a QuantizeConfig with `quantize_annotate_layer(layer, "
        "quantize_config=QuantizeConfig(...))` (or a `get_quantize_config()` method), "
        "or quantize only the other layers: `quantize_annotate_layer` them and call "
        "`quantize_apply` (this layer then stays float)."
    )


@keras.saving.register_keras_serializable(package="tfcompress")
class QuantizeAnnotate(keras.layers.Wrapper):
    """Marks a layer for `quantize_apply`; computes exactly like the layer.

    Args:
        layer: The layer to quantize.
        quantize_config: None for the default of the layer type, or a
            `QuantizeConfig` (required for layers outside the defaults table).
        **kwargs: Base layer arguments.

    Raises:
        ValueError: if the layer is not in the table and has no config.
    """

    def __init__(self, layer, quantize_config=None, **kwargs):
        if quantize_config is not None and not isinstance(quantize_config, QuantizeConfig):
            raise ValueError(
                "quantize_config must be a QuantizeConfig or None. "
                f"Received: quantize_config={quantize_config!r}"
            )
        if quantize_config is None and default_quantize_config(layer) is None:
            raise ValueError(unsupported_message(layer))
        kwargs.setdefault("name", f"quant_annotate_{layer.name}")
        super().__init__(layer, **kwargs)
        self.quantize_config = quantize_config

    def build(self, input_shape=None):
        if not self.layer.built:
            self.layer.build(input_shape)
        self.built = True

    def call(self, inputs, training=None, mask=None):
        if getattr(self.layer, "_call_has_training_arg", False):
            return self.layer(inputs, training=training)
        return self.layer(inputs)

    def get_config(self):
        config = super().get_config()
        config["quantize_config"] = keras.saving.serialize_keras_object(self.quantize_config)
        return config

    @classmethod
    def from_config(cls, config):
        return wrapper_from_config(cls, config, ("quantize_config",))


@keras.saving.register_keras_serializable(package="tfcompress")
class QuantizeWrapper(keras.layers.Wrapper):
    """Runs a layer with fake-quantized weights, inputs and output.

    Weights go through their `WeightQuantizer` on every call (the optimizer
    keeps updating the float weights: straight-through estimator). Inputs
    (where the producing op is float, e.g. the model input) and the output
    go through `ActivationQuantizer`s whose moving-average ranges are
    non-trainable variables saved with the model.

    A non-fusable activation of the inner layer (e.g. softmax after Dense) is
    split off and applied by the wrapper, with the pre-activation tensor
    quantized in between, as TFLite runs it as a separate op.

    Use `quantize_model` / `quantize_apply` rather than this class directly.

    Args:
        layer: The layer to quantize.
        quantize_config: A `QuantizeConfig`; None for the default of the
            layer type.
        quantize_inputs: Bool, or a list of bools (one per input): which
            inputs to fake-quantize here.
        quantize_output: None to follow `quantize_config`; False when the next
            op is an activation TFLite fuses into this one.
        preserve_sparsity: Keep the zeros of the weights at exactly zero.
        cluster_counts: Dict {weight name: number of distinct values} of
            weights whose values stay shared (clustered weights): each keeps
            fixed indices into trainable centroids and is quantized per
            tensor. None: no weight is treated as clustered.
        activation: Name of the split-off activation (set automatically).
        **kwargs: Base layer arguments.

    Raises:
        ValueError: for a layer without a default config and none given.

    Example:

    >>> dense = keras.layers.Dense(2)
    >>> wrapper = QuantizeWrapper(dense, quantize_inputs=True)
    >>> wrapper(keras.ops.ones((1, 3))).shape
    TensorShape([1, 2])
    >>> sorted(v.name for v in wrapper.non_trainable_variables)
    ['input0_count', 'input0_max', 'input0_min', 'output_count', 'output_max', 'output_min']
    """

    def __init__(
        self,
        layer,
        quantize_config=None,
        quantize_inputs=False,
        quantize_output=None,
        preserve_sparsity=False,
        cluster_counts=None,
        activation=None,
        **kwargs,
    ):
        if quantize_config is None:
            quantize_config = default_quantize_config(layer)
            if quantize_config is None:
                raise ValueError(unsupported_message(layer))
        if not isinstance(quantize_config, QuantizeConfig):
            raise ValueError(
                "quantize_config must be a QuantizeConfig or None. "
                f"Received: quantize_config={quantize_config!r}"
            )
        kwargs.setdefault("name", f"quant_{layer.name}")
        super().__init__(layer, **kwargs)
        self.quantize_config = quantize_config
        self.quantize_inputs = (
            list(quantize_inputs) if isinstance(quantize_inputs, (list, tuple)) else quantize_inputs
        )
        self.quantize_output = (
            quantize_config.quantize_output if quantize_output is None else bool(quantize_output)
        )
        self.preserve_sparsity = bool(preserve_sparsity)
        self.cluster_counts = dict(cluster_counts or {})
        # Split a non-fusable activation off a layer with weights.
        if activation is None and quantize_config.weights and hasattr(layer, "activation"):
            name = activation_name(layer.activation)
            if name is not None and name not in FUSABLE_ACTIVATIONS:
                activation = name
                layer.activation = keras.activations.get("linear")
        self.activation = activation
        # Initial values of masks / cluster indices, taken from a built layer.
        self._initial = {}
        if layer.built and (self.preserve_sparsity or self.cluster_counts):
            for name in quantize_config.weights:
                self._initial[name] = keras.ops.convert_to_numpy(self._weight(name))

    def _weight(self, name):
        variable = getattr(self.layer, name, None)
        if not isinstance(variable, keras.Variable):
            raise ValueError(
                f"QuantizeConfig of layer '{self.layer.name}' names weight '{name}', "
                f"but {type(self.layer).__name__} has no such variable attribute."
            )
        return variable

    def build(self, input_shape=None):
        if not self.layer.built:
            self.layer.build(input_shape)
        self._masks, self._clusters = {}, {}
        for name in self.quantize_config.weights:
            variable = self._weight(name)
            initial = self._initial.get(name)
            shape = tuple(variable.shape)
            if name in self.cluster_counts:
                k = int(self.cluster_counts[name])
                centroids, indices = np.unique(
                    initial if initial is not None else np.zeros(1), return_inverse=True
                )
                if initial is not None and centroids.size <= k:
                    centroids = np.pad(centroids, (0, k - centroids.size))
                    indices = indices.reshape(shape)
                else:  # rebuilt from a config: the saved values are loaded next
                    centroids, indices = np.zeros(k), np.zeros(shape, "int32")
                idx = self.add_weight(
                    name=f"{name}_cluster_indices", shape=shape, dtype="int32", trainable=False,
                    initializer=keras.initializers.Constant(indices.astype("int32")),
                )
                cen = self.add_weight(
                    name=f"{name}_centroids", shape=(k,), trainable=True,
                    initializer=keras.initializers.Constant(centroids.astype("float32")),
                )
                self._clusters[name] = (idx, cen)
                # The centroids are trained instead of the kernel.
                variable.trainable = False
            if self.preserve_sparsity:
                mask = (initial != 0) if initial is not None else np.ones(shape)
                self._masks[name] = self.add_weight(
                    name=f"{name}_mask", shape=shape, trainable=False,
                    initializer=keras.initializers.Constant(mask.astype("float32")),
                )
        self._initial = {}

        shapes = input_shape if _is_shape_list(input_shape) else [input_shape]
        flags = self.quantize_inputs
        if not isinstance(flags, list):
            flags = [bool(flags)] * len(shapes)
        self._input_quantizers = []
        for i, flag in enumerate(flags):
            if flag:
                q = ActivationQuantizer()
                self._input_quantizers.append((i, q, q.build(self, f"input{i}")))
        # SeparableConv runs as DEPTHWISE_CONV_2D + CONV_2D in TFLite: the
        # tensor between them gets its own range.
        self._intermediate = None
        if isinstance(self.layer, _SEPARABLE) and "depthwise_kernel" in self.quantize_config.weights:
            q = ActivationQuantizer()
            self._intermediate = (q, q.build(self, "intermediate"))
        self._pre_activation = None
        if self.activation is not None:
            q = self.quantize_config.output_quantizer
            self._pre_activation = (q, q.build(self, "pre_activation"))
        self._output = None
        if self.quantize_output:
            q = self.quantize_config.output_quantizer
            fixed = fixed_range_for(self.activation) if self.activation else None
            if fixed is not None:
                q = ActivationQuantizer(fixed_range=fixed)
            self._output = (q, q.build(self, "output"))
        self.built = True

    def quantized_weights(self):
        """Dict {weight name: the fake-quantized tensor the layer computes with}."""
        out = {}
        for name, quantizer in self.quantize_config.weights.items():
            value = self._weight(name)
            if name in self._clusters:
                idx, cen = self._clusters[name]
                value = ops.take(cen, idx)
                quantizer = WeightQuantizer(num_bits=quantizer.num_bits)  # shared values
            if name in self._masks:
                value = value * self._masks[name]
            out[name] = quantizer(ops.convert_to_tensor(value))
        return out

    def call(self, inputs, training=None, mask=None):
        training = bool(training) if isinstance(training, bool) else False
        multi = isinstance(inputs, (list, tuple))
        xs = list(inputs) if multi else [inputs]
        for i, q, state in self._input_quantizers:
            xs[i] = q(xs[i], state, training)
        x = xs if multi else xs[0]
        weights = self.quantized_weights()
        subs = [(self._weight(name), value) for name, value in weights.items()]
        kwargs = {}
        if getattr(self.layer, "_call_has_training_arg", False):
            kwargs["training"] = training
        if self._intermediate is not None:
            y = self._separable_conv(x, weights, training)
        elif subs:
            y = call_with_weights(self.layer, subs, x, **kwargs)
        else:
            y = self.layer(x, **kwargs)
        if self._pre_activation is not None:
            q, state = self._pre_activation
            y = keras.activations.get(self.activation)(q(y, state, training))
        if self._output is not None:
            q, state = self._output
            y = q(y, state, training)
        return y

    def _separable_conv(self, x, weights, training):
        layer = self.layer
        y = ops.depthwise_conv(
            x,
            weights["depthwise_kernel"],
            strides=layer.strides,
            padding=layer.padding,
            data_format=layer.data_format,
            dilation_rate=layer.dilation_rate,
        )
        q, state = self._intermediate
        y = q(y, state, training)
        pointwise = weights.get("pointwise_kernel", layer.pointwise_kernel)
        y = ops.conv(y, pointwise, strides=1, padding="valid", data_format=layer.data_format)
        if layer.use_bias:
            bias = layer.bias
            if layer.data_format == "channels_first":
                bias = ops.reshape(bias, (-1,) + (1,) * (len(y.shape) - 2))
            y = y + bias
        return layer.activation(y) if layer.activation is not None else y

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "quantize_config": keras.saving.serialize_keras_object(self.quantize_config),
                "quantize_inputs": self.quantize_inputs,
                "quantize_output": self.quantize_output,
                "preserve_sparsity": self.preserve_sparsity,
                "cluster_counts": self.cluster_counts,
                "activation": self.activation,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        return wrapper_from_config(cls, config, ("quantize_config",))


def count_clusters(value, preserve_clusters):
    """Distinct values of a weight if it is treated as clustered, else None."""
    if preserve_clusters is False:
        return None
    k = np.unique(value).size
    if preserve_clusters is None and not (k <= MAX_CLUSTERS and 4 * k <= value.size):
        return None
    if k > MAX_CLUSTERS:
        warnings.warn(
            f"preserve_clusters=True but a weight has {k} distinct values (more than "
            f"{MAX_CLUSTERS}); its values are not kept shared.",
            stacklevel=3,
        )
        return None
    return k


def _is_shape_list(shape):
    return isinstance(shape, (list, tuple)) and len(shape) > 0 and isinstance(
        shape[0], (list, tuple)
    )

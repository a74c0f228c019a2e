"""`QuantizeWrapper` (the QAT layer) and `QuantizeAnnotate` (a marker)."""

import warnings

import keras
import numpy as np
from keras import ops, tree

from tfcompress import _layers
from tfcompress._state import zero_mask
from tfcompress._wrapper import CompressionWrapper, check_unwrapped_layer, positional
from tfcompress.clustering.centroids import centroid_state, gather_centroids
from tfcompress.quantization.kernels import kernel_for
from tfcompress.quantization.configs import (
    SUPPORTED_LAYER_NAMES,
    QuantizeConfig,
    default_quantize_config,
    fixed_range_for,
)
from tfcompress.quantization.quantizers import ActivationQuantizer, WeightQuantizer

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
class QuantizeAnnotate(CompressionWrapper):
    """Marks a layer for `quantize_apply`; computes exactly like the layer.

    Args:
        layer: The layer to quantize.
        quantize_config: None for the default of the layer type, or a
            `QuantizeConfig` (required for layers outside the defaults table).
        **kwargs: Base layer arguments.

    Raises:
        ValueError: if the layer is not in the table and has no config.

    Example:

    >>> annotated = QuantizeAnnotate(keras.layers.Dense(2))
    >>> annotated(keras.ops.ones((1, 3))).shape
    TensorShape([1, 2])
    """

    technique = "quantization"
    name_prefix = "quant_annotate"
    serialized_args = ("quantize_config",)

    def __init__(self, layer, quantize_config=None, **kwargs):
        _resolve_config(layer, quantize_config)
        super().__init__(layer, **kwargs)
        self.quantize_config = quantize_config

    @classmethod
    def check_layer(cls, layer):
        # Whether the layer is supported depends on the QuantizeConfig, which
        # the constructor checks first (`_resolve_config`).
        check_unwrapped_layer(cls, layer)

    @property
    def target_weights(self):
        return []

    def weight_values(self, training):
        return []


@keras.saving.register_keras_serializable(package="tfcompress")
class QuantizeWrapper(CompressionWrapper):
    """Runs a layer with fake-quantized weights, inputs and output.

    Weights go through their `WeightQuantizer` on every call (the optimizer
    keeps updating the float weights: straight-through estimator). Inputs
    (where the producing op is float, e.g. the model input) and the output
    go through `ActivationQuantizer`s whose moving-average ranges are
    non-trainable variables saved with the model.

    A non-fusable activation of the inner layer (e.g. softmax after Dense) is
    split off and applied by the wrapper, with the pre-activation tensor
    quantized in between, as TFLite runs it as a separate op. The wrapper then
    holds a copy of the layer with a linear activation; the layer it was
    given is not changed.

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

    technique = "quantization"
    name_prefix = "quant"
    config_args = (
        "quantize_inputs",
        "quantize_output",
        "preserve_sparsity",
        "cluster_counts",
        "activation",
    )
    serialized_args = ("quantize_config",)

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
        quantize_config = _resolve_config(layer, quantize_config)
        # Split a non-fusable activation off a layer with weights (on a copy).
        if activation is None and quantize_config.weights and hasattr(layer, "activation"):
            name = _layers.activation_name(layer.activation)
            if name is not None and name not in _layers.FUSABLE_ACTIVATIONS:
                activation = name
                kwargs.setdefault("name", f"{self.name_prefix}_{layer.name}")
                layer = _layers.clone_layer(layer, activation="linear")
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
        self.activation = activation

    @classmethod
    def supports(cls, layer):
        return default_quantize_config(layer) is not None

    @classmethod
    def unsupported_message(cls, layer):
        return unsupported_message(layer)

    @classmethod
    def check_layer(cls, layer):
        # Whether the layer is supported depends on the QuantizeConfig, which
        # the constructor checks first (`_resolve_config`).
        check_unwrapped_layer(cls, layer)

    @property
    def target_weights(self):
        return [self._weight(name) for name in self.quantize_config.weights]

    def _weight(self, name):
        variable = weight_variable(self.layer, name)
        if not isinstance(variable, keras.Variable):
            raise ValueError(
                f"QuantizeConfig of layer '{self.layer.name}' names weight '{name}', "
                f"but {type(self.layer).__name__} has no such variable attribute."
            )
        return variable

    def build_state(self, input_shape):
        self._zeros, self._clusters = {}, {}
        for name in self.quantize_config.weights:
            variable = self._weight(name)
            # The weights the layer holds now: the trained ones when wrapping,
            # initial ones when rebuilt from a config (the saved state follows).
            values = keras.ops.convert_to_numpy(variable)
            if name in self.cluster_counts:
                self._clusters[name] = self._build_clusters(name, variable, values)
            if self.preserve_sparsity:
                self._zeros[name] = zero_mask(self, f"{name}_mask", values)

        shapes = input_shape if _is_shape_list(input_shape) else [input_shape]
        flags = self.quantize_inputs
        if not isinstance(flags, list):
            flags = [bool(flags)] * len(shapes)
        self._input_quantizers = []
        for i, flag in enumerate(flags):
            if flag:
                q = ActivationQuantizer()
                self._input_quantizers.append((i, q, q.build(self, f"input{i}")))
        # A layer TFLite runs as several ops: the tensors between them get ranges.
        self._kernel = kernel_for(self.layer, self.quantize_config)
        self._intermediates = {}
        for name, fixed in (self._kernel.intermediates if self._kernel else {}).items():
            q = ActivationQuantizer(fixed_range=fixed)
            self._intermediates[name] = (q, q.build(self, name))
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

    def _build_clusters(self, name, variable, values):
        k = int(self.cluster_counts[name])
        centroids, indices = np.unique(values, return_inverse=True)
        if centroids.size <= k:
            centroids = np.pad(centroids, (0, k - centroids.size))
            indices = indices.reshape(values.shape)
        else:  # rebuilt from a config: the saved values are loaded next
            centroids, indices = np.zeros(k), np.zeros(values.shape, "int32")
        state = centroid_state(
            self, f"{name}_centroids", f"{name}_cluster_indices", centroids, indices
        )
        # The (fixed-index) centroids train instead of the kernel.
        variable.trainable = False
        return state

    def weight_values(self, training):
        values = []
        for name, quantizer in self.quantize_config.weights.items():
            value = self._weight(name)
            if name in self._clusters:
                value = gather_centroids(*self._clusters[name])
                # Shared values share one scale, so they stay shared in int8.
                quantizer = quantizer.per_tensor()
            if name in self._zeros:
                value = value * self._zeros[name]
            values.append(quantizer(ops.convert_to_tensor(value)))
        return values

    def call(self, inputs=None, *args, training=None, **kwargs):
        training = training is True
        args = positional(inputs, args)
        # The tensors among the call arguments (positional or keywords, as
        # the wrapped layer takes them), in the order of the graph node's
        # inputs, which `quantize_inputs` follows.
        flat = tree.flatten((args, kwargs))
        positions = [i for i, v in enumerate(flat) if v is not None and _is_tensor(v)]
        for i, q, state in self._input_quantizers:
            flat[positions[i]] = q(flat[positions[i]], state, training)
        args, kwargs = tree.pack_sequence_as((args, kwargs), flat)
        weights = self.weight_values(training)
        if self._kernel is not None:
            named = dict(zip(self.quantize_config.weights, weights))
            quantize = _KernelQuantizers(self, training)
            y = self._kernel.compute(self.layer, named, quantize, training, *args, **kwargs)
        else:
            substitutions = list(zip(self.target_weights, weights))
            y = self.call_wrapped(substitutions, *args, training=training, **kwargs)
        if self._pre_activation is not None:
            q, state = self._pre_activation
            y = _layers.activation_fn(self.activation)(q(y, state, training))
        if self._output is not None:
            q, state = self._output
            y = q(y, state, training)
        return y


class _KernelQuantizers:
    """What a kernel (`quantization.kernels`) quantizes with: the wrapper's ranges."""

    def __init__(self, wrapper, training):
        self._wrapper, self._training = wrapper, training

    def __call__(self, name, tensor, min_width=None, update=True):
        q, state = self._wrapper._intermediates[name]
        return q(tensor, state, self._training and update, min_width=min_width)

    def constant(self, value):
        """A constant operand of an op, fake-quantized per tensor as the converter stores it."""
        return WeightQuantizer()(ops.convert_to_tensor(value, "float32"))


def weight_variable(layer, name):
    """The variable a `QuantizeConfig` weight name refers to, or None.

    A dotted name reaches into a sub-layer: "query_dense.kernel".
    """
    variable = layer
    for part in name.split("."):
        variable = getattr(variable, part, None)
    return variable


def _resolve_config(layer, quantize_config):
    if quantize_config is None:
        quantize_config = default_quantize_config(layer)
        if quantize_config is None:
            raise ValueError(unsupported_message(layer))
    if not isinstance(quantize_config, QuantizeConfig):
        raise ValueError(
            "quantize_config must be a QuantizeConfig or None. "
            f"Received: quantize_config={quantize_config!r}"
        )
    return quantize_config


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


def _is_tensor(value):
    return keras.ops.is_tensor(value) or isinstance(value, keras.KerasTensor)


def _is_shape_list(shape):
    return isinstance(shape, (list, tuple)) and len(shape) > 0 and isinstance(
        shape[0], (list, tuple)
    )

"""`strip_channels`: the channel-pruned model rebuilt with fewer filters."""

import keras
import numpy as np

from tfcompress import _graph, _rewrite
from tfcompress.pruning.channels.walk import channel_axes
from tfcompress.pruning.channels.model import ChannelPruningModel
from tfcompress.pruning.channels.wrapper import ChannelMaskWrapper

def strip_channels(model):
    """Rebuilds a channel-pruned model with its removed channels really gone.

    Every layer of a pruned group is rebuilt with fewer filters / units (and a
    Reshape ending in channels with a smaller target shape), holding the kept
    slices of its weights: the result computes what the masked model
    computes, with fewer parameters and multiply-accumulates. It is a plain
    Keras functional model (no tfcompress classes): it saves to `.keras`,
    and goes on to `quantize_model`, `cluster_weights`, `prune_low_magnitude`,
    `Distiller` and `lite.convert` like any model.

    Args:
        model: A `ChannelPruningModel` from `prune_channels` (trained or not).

    Returns:
        A new, uncompiled `keras.Model`; a model without channel pruning is
        returned as it is.

    Raises:
        TypeError: if `model` is not a `keras.Model`.

    Example:

    ```python
    small = tfcompress.strip_channels(pruned)
    small.save("small.keras")
    tfcompress.count_macs(small).total
    ```
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"strip_channels expects a keras.Model. Received: model={model!r} of type "
            f"{type(model).__name__}"
        )
    if not isinstance(model, ChannelPruningModel) or model.channel_plan is None:
        return model
    graph = model.channel_plan.graph
    keep = keras.ops.convert_to_numpy(model.channel_mask) > 0.5

    def kept(slots):
        return np.nonzero(keep[slots])[0]

    weights, configs = {}, {}
    for wrapper in model.channel_plan.wrappers:
        layer = wrapper.layer
        axes = graph.weight_slots.get(layer.name, {})
        names = {id(getattr(layer, n)): n for n in channel_axes(layer) if getattr(layer, n, None) is not None}
        arrays = []
        for variable in layer.weights:
            array = keras.ops.convert_to_numpy(variable)
            for axis, slots in axes.get(names.get(id(variable)), []):
                array = np.take(array, kept(slots), axis=axis)
            arrays.append(array)
        weights[layer.name] = arrays
        config = layer.get_config()
        for key in ("filters", "units"):
            if key in config:
                output = [id(v) for v in layer.weights].index(id(_output_kernel(layer)))
                config[key] = int(arrays[output].shape[-1])
        configs[layer.name] = config

    def rebuild(layer, input_tensors=None):
        """A new layer (or nested model) for `layer`, with fewer channels where pruned."""
        if _graph.is_nested_graph(layer):
            slots = graph.nested_inputs.get(layer.name)
            if slots is not None:
                inputs, _ = _graph.inputs_and_outputs(layer)
                input_tensors = [
                    keras.Input(batch_shape=tuple(t.shape[:-1]) + (len(kept(s)),), dtype=t.dtype)
                    for t, s in zip(inputs, slots)
                ]
                input_tensors = input_tensors[0] if len(input_tensors) == 1 else input_tensors
            return keras.models.clone_model(
                layer, input_tensors=input_tensors, clone_function=rebuild, recursive=False
            )
        if isinstance(layer, ChannelMaskWrapper):
            return type(layer.layer).from_config(configs[layer.layer.name])
        config = layer.get_config()
        if layer.name in graph.reshapes:
            slots, tile = graph.reshapes[layer.name]
            config["target_shape"] = tuple(config["target_shape"][:-1]) + (len(kept(slots)) * tile,)
        weights.setdefault(layer.name, layer.get_weights())
        return type(layer).from_config(config)

    # Every layer is rebuilt from its config (nothing is shared with the pruned
    # model) and nested models get inputs of their new shapes, which
    # `_rewrite.map_layers` (a copy keeping every shape) cannot give.
    rebuilt = rebuild(model)
    for layer in _rewrite.iter_layers(rebuilt):
        if layer.name in weights and layer.weights:
            layer.set_weights(weights[layer.name])
    return keras.Model(rebuilt.input, rebuilt.output, name=model.name)


def _output_kernel(layer):
    """The variable whose last axis is a producer's output channels."""
    pointwise = getattr(layer, "pointwise_kernel", None)
    return layer.kernel if pointwise is None else pointwise

"""What `auto_compress` accepts: a classifier, training data, validation data, stage settings.

Everything is checked here before any work starts, so a bad input fails with
a message that names it.
"""

import keras
import numpy as np

from tfcompress import _rewrite, _validate
from tfcompress.auto import pipeline


def check_stage_dict(argument, value, check):
    """None, or a dict keyed by pipeline stages whose values pass `check`."""
    if value is None:
        return None
    if not isinstance(value, dict) or any(k not in pipeline.STAGES for k in value):
        raise ValueError(
            f"{argument} must be a dict with keys from {list(pipeline.STAGES)}. "
            f"Received: {argument}={value!r}"
        )
    return {k: check(f"{argument}[{k!r}]", v) for k, v in value.items()}


def check_classifier(model):
    """Returns `(input shape without batch, number of classes)` of a graph classifier."""
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"auto_compress expects a keras.Model. Received: model={model!r} "
            f"of type {type(model).__name__}"
        )
    if not _rewrite.is_graph_model(model) or not model.inputs:
        raise ValueError(
            f"auto_compress needs a built Sequential or functional model (quantization-aware "
            f"training follows its graph). Model '{model.name}' is a "
            f"{type(model).__name__} without one."
        )
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(
            f"auto_compress handles models with one input and one output. Model "
            f"'{model.name}' has {len(model.inputs)} input(s) and {len(model.outputs)} output(s)."
        )
    classes = model.outputs[0].shape[-1]
    if len(model.outputs[0].shape) != 2 or classes is None or classes < 2:
        raise ValueError(
            f"auto_compress needs a classifier: an output of shape (batch, classes) with at "
            f"least 2 classes, as the budget is an accuracy. Model '{model.name}' outputs "
            f"shape {tuple(model.outputs[0].shape)}."
        )
    return tuple(model.inputs[0].shape[1:]), int(classes)


def training_data(x, y, input_shape, classes, batch_size):
    """Checks arrays `(x, y)` or a dataset of `(x, y)` batches; returns a `TrainingData`."""
    if pipeline.is_dataset(x):
        if y is not None:
            raise ValueError("With a tf.data.Dataset as x, y must be None (the dataset yields (x, y)).")
        spec = x.element_spec
        if not isinstance(spec, tuple) or len(spec) < 2:
            raise ValueError(
                f"The training dataset must yield (x, y) batches. Received element_spec={spec}"
            )
        _check_spec("x (dataset)", spec[0].shape, input_shape)
        return pipeline.TrainingData(x, None, batch_size)
    x = _validate.check_array("x", x, min_ndim=1, trailing_shape=input_shape)
    if y is None:
        raise ValueError("y is required with array inputs (or pass a tf.data.Dataset as x).")
    y = _validate.check_class_labels("y", y, classes, keep_one_hot=True)
    _validate.check_same_length(x=x, y=y)
    return pipeline.TrainingData(x, y, batch_size)


def _check_spec(name, shape, input_shape):
    got = tuple(shape)[1:]
    if len(got) != len(input_shape) or any(
        e is not None and g is not None and e != g for e, g in zip(input_shape, got)
    ):
        raise ValueError(
            f"{name} has examples of shape {got}, but the model expects {input_shape}."
        )


def validation_arrays(validation_data, input_shape, classes):
    """`(x_val, integer labels)` as numpy from `(x, y)` or a dataset of batches."""
    if validation_data is None:
        raise ValueError(
            "validation_data is required: sensitivity and the accuracy budget are measured "
            "on it. Pass (x_val, y_val) or a tf.data.Dataset of (x, y) batches."
        )
    if pipeline.is_dataset(validation_data):
        xs, ys = [], []
        for batch in validation_data:
            xs.append(np.asarray(batch[0]))
            ys.append(np.asarray(batch[1]))
        if not xs:
            raise ValueError("validation_data is an empty dataset.")
        x_val, y_val = np.concatenate(xs), np.concatenate(ys)
    elif isinstance(validation_data, (tuple, list)) and len(validation_data) == 2:
        x_val, y_val = validation_data
    else:
        raise ValueError(
            "validation_data must be (x_val, y_val) or a tf.data.Dataset of (x, y) batches. "
            f"Received: {type(validation_data).__name__}"
        )
    x_val = _validate.check_array(
        "validation_data x", x_val, min_ndim=1, trailing_shape=input_shape
    ).astype("float32")
    labels = _validate.check_class_labels("validation_data y", y_val, classes)
    _validate.check_same_length(**{"validation_data x": x_val, "validation_data y": labels})
    if not len(labels):
        raise ValueError("validation_data is empty: give at least one example.")
    return x_val, labels

"""Knowledge distillation: train any student from any teacher inside `fit`.

A `Distiller` is a `keras.Model` whose forward pass is the student. Its
`compute_loss` mixes the student's loss on the labels with a distillation
loss between the teacher's and the student's softened outputs (Hinton et al.,
2015, "Distilling the Knowledge in a Neural Network"):

    loss = alpha * student_loss(y, s)
         + (1 - alpha) * T**2 * distillation_loss(softmax(t / T), softmax(s / T))

where `t` and `s` are the teacher's and the student's logits and `T` the
temperature. The distillation loss is always given *probabilities*, whatever
form it comes in (a `keras.losses.Loss` instance, a function, or a string
such as `"kl_divergence"`), so KL divergence is never applied to raw logits
and never goes negative.

Because only `compute_loss` is overridden, Keras keeps doing the rest:
metrics, callbacks, `tf.distribute`, `evaluate` and `predict` (which report
the student).
"""

import keras

from tfcompress._validate import check_fraction, check_number

__all__ = ["Distiller"]

# Crossentropies expect probabilities unless told `from_logits=True`. The
# Distiller works on logits, so for the student loss their string and function
# forms are read as from_logits=True.
_SCCE = keras.losses.SparseCategoricalCrossentropy
_CCE = keras.losses.CategoricalCrossentropy
_BCE = keras.losses.BinaryCrossentropy
_CROSSENTROPY_BY_NAME = {
    "sparse_categorical_crossentropy": _SCCE,
    "SparseCategoricalCrossentropy": _SCCE,
    "categorical_crossentropy": _CCE,
    "CategoricalCrossentropy": _CCE,
    "binary_crossentropy": _BCE,
    "BinaryCrossentropy": _BCE,
}


@keras.saving.register_keras_serializable(package="tfcompress")
class Distiller(keras.Model):
    """Trains `student` to match a frozen `teacher`'s softened predictions.

    The Distiller is a `keras.Model`: `fit`, `evaluate`, `predict`, callbacks
    (EarlyStopping, ModelCheckpoint, `UpdatePruningStep`, ...) and
    `tf.distribute` strategies work as for any model. Its forward pass is the
    student, so `evaluate` and `predict` report the student, and after
    training `distiller.student` is the trained student (pruned, QAT or plain,
    ready for `strip_pruning` / `lite.convert`).

    Both models must output **logits** (no final softmax) of the same shape.
    The teacher is frozen (`teacher.trainable = False`, set here) and always
    runs with `training=False`, so its weights, including BatchNormalization
    statistics, never change. The training logs show `loss` (the mix below),
    `student_loss` and `distillation_loss`, plus any compiled metrics of the
    student. (To monitor `student_loss` or `distillation_loss` with
    EarlyStopping or ModelCheckpoint, pass `mode="min"`: Keras only infers
    the direction of `loss` and compiled metrics.)

    Labels are optional: `fit(x)` without `y` distills on unlabelled data
    (the student loss is then 0).

    Under `tf.distribute`, create (or load) both models and the Distiller
    inside `strategy.scope()`.

    Args:
        student: The `keras.Model` to train. It may be unbuilt.
        teacher: A built (normally trained) `keras.Model` with the same output
            shape as the student.
        name: Name of the Distiller model.
        **kwargs: Passed to `keras.Model` (e.g. `trainable`, `dtype`).

    Raises:
        TypeError: if `student` or `teacher` is not a `keras.Model`.
        ValueError: if the teacher is not built, the two input or output
            shapes differ, a model has several outputs, or a model ends in a
            softmax.

    Example:

    ```python
    distiller = tfcompress.Distiller(student, teacher)
    distiller.compile(optimizer="adam", metrics=["accuracy"],
                      alpha=0.1, temperature=3.0)
    distiller.fit(x_train, y_train, epochs=10)
    small = distiller.student
    ```
    """

    def __init__(self, student, teacher, name="distiller", **kwargs):
        super().__init__(name=name, **kwargs)
        _check_model("student", student)
        _check_model("teacher", teacher)
        if not teacher.built:
            raise ValueError(
                "teacher must be a built (trained) keras.Model: call it on data "
                "or give it an Input. Received: an unbuilt model "
                f"teacher={teacher.name!r}"
            )
        _check_same_inputs(teacher, student)
        teacher_shape = _output_shape("teacher", teacher)
        student_shape = _output_shape("student", student)
        if teacher_shape is not None and student_shape is not None:
            _check_same_shape(teacher_shape, student_shape)
        _check_outputs_logits("teacher", teacher)
        _check_outputs_logits("student", student)

        self.student = student
        self.teacher = teacher
        # Frozen: no trainable variables, so the optimizer never touches it.
        self.teacher.trainable = False
        # Attribute-tracked metrics join `self.metrics`, hence the logs, and
        # are reset by Keras at each epoch.
        self.student_loss_tracker = keras.metrics.Mean(name="student_loss")
        self.distillation_loss_tracker = keras.metrics.Mean(
            name="distillation_loss"
        )
        self.alpha = 0.1
        self.temperature = 3.0
        self._student_loss = None
        self._distillation_loss = None
        self._loss_config = {}
        if student.built:
            self.built = True

    def call(self, inputs, training=None):
        """Runs the student (the Distiller's forward pass)."""
        return self.student(inputs, training=training)

    def compile(
        self,
        optimizer="adam",
        metrics=None,
        student_loss_fn=None,
        distillation_loss_fn=None,
        alpha=0.1,
        temperature=3.0,
        **kwargs,
    ):
        """Configures the Distiller for training.

        Args:
            optimizer: Optimizer of the student (name or instance).
            metrics: Metrics of the student's predictions against the labels,
                as in `keras.Model.compile` (e.g. `["accuracy"]`).
            student_loss_fn: Loss between the labels and the student's logits.
                Defaults to `keras.losses.SparseCategoricalCrossentropy(
                from_logits=True)` (integer class labels). Because the student
                outputs logits, crossentropy given as a string or function
                (`"sparse_categorical_crossentropy"`, ...) is applied with
                `from_logits=True`.
            distillation_loss_fn: Loss between the teacher's and the student's
                probabilities at temperature `T`, `softmax(logits / T)`, as
                `(y_true=teacher, y_pred=student)`. Defaults to
                `keras.losses.KLDivergence()`. An instance, function or string
                (`"kl_divergence"`, `"kld"`, `"categorical_crossentropy"`,
                ...) all receive probabilities, never logits.
            alpha: Weight of the student loss in [0, 1]; the distillation loss
                gets `1 - alpha`. `alpha=0` trains on soft targets only.
            temperature: Softmax temperature `T` > 0. The distillation loss is
                multiplied by `T**2` so its gradients keep their scale as `T`
                changes (Hinton et al., 2015).
            **kwargs: Other `keras.Model.compile` arguments (`jit_compile`,
                `steps_per_execution`, `run_eagerly`, `weighted_metrics`, ...).

        Raises:
            ValueError: if `alpha` is outside [0, 1], `temperature` is not
                positive, a loss is unknown, or `distillation_loss_fn` expects
                logits (`from_logits=True`).
            TypeError: if `loss` is given (use `student_loss_fn`).
        """
        for key in ("loss", "loss_weights"):
            if kwargs.pop(key, None) is not None:
                raise TypeError(
                    f"Distiller.compile() takes `student_loss_fn`, "
                    f"`distillation_loss_fn`, `alpha` and `temperature` "
                    f"instead of `{key}`."
                )
        alpha = check_fraction("alpha", alpha, upper_inclusive=True)
        temperature = check_number("temperature", temperature, minimum=0, exclusive_minimum=True)
        if student_loss_fn is None:
            student_loss_fn = keras.losses.SparseCategoricalCrossentropy(
                from_logits=True
            )
        if distillation_loss_fn is None:
            distillation_loss_fn = keras.losses.KLDivergence()
        self._student_loss = _student_loss(student_loss_fn)
        self._distillation_loss = _distillation_loss(distillation_loss_fn)
        self.alpha = alpha
        self.temperature = float(temperature)
        self._loss_config = {
            "student_loss_fn": student_loss_fn,
            "distillation_loss_fn": distillation_loss_fn,
            "alpha": self.alpha,
            "temperature": self.temperature,
        }
        super().compile(optimizer=optimizer, metrics=metrics, **kwargs)

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        """Returns `alpha * student_loss + (1 - alpha) * distillation_loss`.

        Also adds the student's regularization losses and updates the
        `student_loss` and `distillation_loss` trackers. Called by Keras in
        `train_step` and `test_step`.

        Args:
            x: Input batch (fed to the teacher).
            y: Labels, or None (then the student loss is 0).
            y_pred: The student's logits for `x`.
            sample_weight: Optional per-example weights, applied to both terms.
            training: Whether Keras is training (the teacher always runs with
                `training=False`).

        Returns:
            The scalar total loss.
        """
        if self._distillation_loss is None:
            raise RuntimeError(
                "Call `distiller.compile(...)` before training or evaluating."
            )
        if y_pred is None:
            y_pred = self(x, training=training)
        try:
            teacher_logits = self.teacher(x, training=False)
        except ValueError as error:  # a Keras shape error that names neither model
            raise ValueError(
                f"The teacher {self.teacher.name!r} cannot take the student's input "
                f"{_shapes(x)}: {' '.join(str(error).split())[:300]}"
            ) from error
        _check_same_shape(
            tuple(teacher_logits.shape[1:]), tuple(y_pred.shape[1:])
        )
        distillation_loss = self.distillation_loss(
            teacher_logits, y_pred, sample_weight
        )
        if y is None:
            student_loss = keras.ops.zeros((), dtype=distillation_loss.dtype)
        else:
            student_loss = keras.ops.cast(
                self._student_loss(y, y_pred, sample_weight=sample_weight),
                distillation_loss.dtype,
            )
        total = self.alpha * student_loss + (1.0 - self.alpha) * distillation_loss
        for extra in self.student.losses:  # regularizers, add_loss
            total = total + _scale_for_replicas(
                keras.ops.cast(keras.ops.sum(extra), total.dtype)
            )
        # Losses came back divided by the number of replicas (Keras' rule for
        # summing gradients across replicas); log the per-example values.
        batch_size = keras.ops.shape(y_pred)[0]
        self.student_loss_tracker.update_state(
            _unscale_for_replicas(student_loss), sample_weight=batch_size
        )
        self.distillation_loss_tracker.update_state(
            _unscale_for_replicas(distillation_loss), sample_weight=batch_size
        )
        return total

    def distillation_loss(self, teacher_logits, student_logits, sample_weight=None):
        """Returns `T**2 * distillation_loss_fn(softmax(t / T), softmax(s / T))`.

        Args:
            teacher_logits: Teacher logits, shape `(batch, classes)`.
            student_logits: Student logits of the same shape.
            sample_weight: Optional per-example weights.

        Returns:
            The scalar distillation term (before the `1 - alpha` weight).
        """
        if self._distillation_loss is None:
            raise RuntimeError("Call `distiller.compile(...)` first.")
        t = self.temperature
        # float32 so softmax/log stay accurate under mixed precision.
        teacher_probs = keras.ops.softmax(
            keras.ops.cast(teacher_logits, "float32") / t, axis=-1
        )
        student_probs = keras.ops.softmax(
            keras.ops.cast(student_logits, "float32") / t, axis=-1
        )
        loss = self._distillation_loss(
            teacher_probs, student_probs, sample_weight=sample_weight
        )
        return keras.ops.cast(loss, "float32") * (t * t)

    def get_config(self):
        """Returns the constructor arguments, both models serialized."""
        return {
            "name": self.name,
            "trainable": self.trainable,
            "student": _serialize_model(self.student),
            "teacher": _serialize_model(self.teacher),
        }

    @classmethod
    def from_config(cls, config):
        """Rebuilds a Distiller from `get_config()` output."""
        config = dict(config)
        for key in ("student", "teacher"):
            config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)

    def get_compile_config(self):
        """Returns `compile()` arguments (losses, alpha, temperature too)."""
        config = super().get_compile_config()
        if config and self._loss_config:
            config = dict(config)
            config.update(
                keras.saving.serialize_keras_object(self._loss_config)
            )
        return config

    def compile_from_config(self, config):
        """Compiles from `get_compile_config()` output (used by load_model)."""
        config = keras.saving.deserialize_keras_object(config)
        config = {
            key: value
            for key, value in config.items()
            if key not in ("loss", "loss_weights")
        }
        self.compile(**config)
        if self.built:
            # Create the slots now so a checkpoint's optimizer state loads.
            self.optimizer.build(self.trainable_variables)


def _serialize_model(model):
    config = keras.saving.serialize_keras_object(model)
    # The Distiller compiles itself; a compile config of the teacher or
    # student (e.g. from training the teacher alone) would rebuild a stale
    # optimizer on load.
    config.pop("compile_config", None)
    return config


def _check_model(role, model):
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"{role} must be a keras.Model. Received: {role}={model!r} "
            f"of type {type(model).__name__}"
        )


def _output_shape(role, model):
    """The per-example output shape of a graph model, else None (known later)."""
    try:
        outputs = model.outputs
    except (AttributeError, ValueError):
        return None
    if not outputs:
        return None
    if len(outputs) != 1:
        raise ValueError(
            f"The Distiller supports models with one output. Received: {role} "
            f"with {len(outputs)} outputs"
        )
    return tuple(outputs[0].shape[1:])


def _input_shapes(model):
    """Per-example input shapes of a graph model, else None (known later)."""
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        return None
    return [tuple(t.shape[1:]) for t in inputs] if inputs else None


def _shapes(x):
    return [tuple(t.shape) for t in keras.tree.flatten(x)]


def _check_same_inputs(teacher, student):
    """Both models read the same batch `x`: their inputs must match."""
    teacher_shapes, student_shapes = _input_shapes(teacher), _input_shapes(student)
    if teacher_shapes is None or student_shapes is None:
        return
    fits = len(teacher_shapes) == len(student_shapes) and all(
        len(t) == len(s) and all(a is None or b is None or a == b for a, b in zip(t, s))
        for t, s in zip(teacher_shapes, student_shapes)
    )
    if not fits:
        batch = lambda shapes: [(None,) + s for s in shapes]  # noqa: E731
        raise ValueError(
            "teacher and student must take the same inputs (both see each batch x). "
            f"Received: teacher {teacher.name!r} with input shape(s) {batch(teacher_shapes)}, "
            f"student {student.name!r} with input shape(s) {batch(student_shapes)}"
        )


def _check_same_shape(teacher_shape, student_shape):
    if len(teacher_shape) != len(student_shape) or any(
        t is not None and s is not None and t != s
        for t, s in zip(teacher_shape, student_shape)
    ):
        raise ValueError(
            "teacher and student must output logits of the same shape. "
            f"Received: teacher output shape {(None,) + tuple(teacher_shape)}, "
            f"student output shape {(None,) + tuple(student_shape)}"
        )


def _check_outputs_logits(role, model):
    """Refuses a Sequential/functional model whose last layer is a softmax."""
    layers = getattr(model, "layers", None)
    if not layers or not hasattr(model, "outputs"):
        return
    last = layers[-1]
    if isinstance(last, keras.layers.Softmax) or (
        getattr(last, "activation", None) is keras.activations.softmax
    ):
        raise ValueError(
            f"The Distiller needs models that output logits, but the {role}'s "
            f"last layer {last.name!r} applies a softmax. Received: {role}="
            f"{model.name!r}. Remove the final softmax (e.g. Dense(10) instead "
            "of Dense(10, activation='softmax'))."
        )


class _FunctionLoss(keras.losses.Loss):
    """Gives a loss function a Loss' reduction, sample weights and replica
    scaling (not serialized: the Distiller saves the original function)."""

    def __init__(self, fn, **kwargs):
        super().__init__(name=getattr(fn, "__name__", "loss"))
        self.fn = fn
        self.fn_kwargs = kwargs

    def call(self, y_true, y_pred):
        return self.fn(y_true, y_pred, **self.fn_kwargs)


def _resolve(name, loss):
    if isinstance(loss, keras.losses.Loss):
        return loss
    try:
        resolved = keras.losses.get(loss)
    except (ValueError, TypeError) as e:
        raise ValueError(f"Unknown {name}. Received: {name}={loss!r}") from e
    if resolved is None or not callable(resolved):
        raise ValueError(f"Unknown {name}. Received: {name}={loss!r}")
    if isinstance(resolved, keras.losses.Loss):
        return resolved
    return _FunctionLoss(resolved)


def _from_logits(loss):
    if isinstance(loss, _FunctionLoss):
        return loss.fn_kwargs.get("from_logits")
    try:
        return loss.get_config().get("from_logits")
    except (NotImplementedError, AttributeError, TypeError):
        return getattr(loss, "from_logits", None)


def _student_loss(loss):
    if not isinstance(loss, keras.losses.Loss):
        key = loss if isinstance(loss, str) else getattr(loss, "__name__", "")
        if key in _CROSSENTROPY_BY_NAME:
            return _CROSSENTROPY_BY_NAME[key](from_logits=True)
    resolved = _resolve("student_loss_fn", loss)
    if isinstance(resolved, (_SCCE, _CCE, _BCE)) and _from_logits(resolved) is False:
        raise ValueError(
            "The student outputs logits, so student_loss_fn needs "
            f"from_logits=True. Received: student_loss_fn={loss!r} with "
            "from_logits=False"
        )
    return resolved


def _distillation_loss(loss):
    resolved = _resolve("distillation_loss_fn", loss)
    if _from_logits(resolved):
        raise ValueError(
            "distillation_loss_fn is given probabilities softmax(logits / "
            "temperature), so it must not expect logits. Received: "
            f"distillation_loss_fn={loss!r} with from_logits=True"
        )
    return resolved


def _num_replicas():
    if keras.backend.backend() != "tensorflow":
        return 1
    import tensorflow as tf

    return tf.distribute.get_strategy().num_replicas_in_sync


def _scale_for_replicas(value):
    n = _num_replicas()
    return value / n if n > 1 else value


def _unscale_for_replicas(value):
    n = _num_replicas()
    return value * n if n > 1 else value

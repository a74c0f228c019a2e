"""The four ways to train the demo's small student, built alike for side-by-side runs.

`compare.py` and `distill_step_time.py` both put `tfcompress.Distiller` next to
Keras 3's `keras.distillation.Distiller` (given a correct loss, and with its
default) and the student trained on labels alone. Every contender trains a
fresh `demo.small_student()` with the demo's alpha, temperature and metrics.
"""

import keras

from tfcompress import demo

# Key -> (tool, how it is set up); the order is the order of the tables.
CONTENDERS = {
    "student": ("Keras 3 fit", "labels only"),
    "keras_distiller": (
        "keras.distillation.Distiller", "LogitsDistillation(loss=keras.losses.KLDivergence())"
    ),
    "keras_distiller_default": (
        "keras.distillation.Distiller",
        'default LogitsDistillation: "kl_divergence" applied to raw logits',
    ),
    "ours_distiller": ("tfcompress.Distiller", "KLDivergence() on softmax(logits / T)"),
}


def keras_distiller(teacher, student, loss=None, learning_rate=demo.LEARNING_RATES["distill"],
                    **compile_kwargs):
    """A compiled `keras.distillation.Distiller` with the demo's alpha and temperature.

    Args:
        teacher: The trained model to learn from.
        student: The model that trains.
        loss: The distillation loss given to `LogitsDistillation`; None keeps
            Keras' default.
        learning_rate: Adam's learning rate.
        **compile_kwargs: Other `compile` arguments.
    """
    kd = keras.distillation
    options = {} if loss is None else {"loss": loss}
    distiller = kd.Distiller(
        teacher=teacher,
        student=student,
        distillation_losses=kd.LogitsDistillation(temperature=demo.DISTILL_TEMPERATURE, **options),
        student_loss_weight=demo.DISTILL_ALPHA,
    )
    distiller.compile(
        keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        **compile_kwargs,
    )
    return distiller


def contenders(teacher, learning_rate=demo.LEARNING_RATES["distill"], **compile_kwargs):
    """Factories of the compiled contenders, keyed as `CONTENDERS`.

    Each factory builds a fresh student, so call it after seeding. The trained
    student of a distiller is its `.student`; "student" is the student itself.

    Args:
        teacher: The trained teacher of the distillers.
        learning_rate: Adam's learning rate for every student.
        **compile_kwargs: Other `compile` arguments (e.g. `steps_per_execution`).
    """
    student = demo.small_student
    return {
        "student": lambda: demo.compile_classifier(student(), learning_rate, **compile_kwargs),
        "keras_distiller": lambda: keras_distiller(
            teacher, student(), keras.losses.KLDivergence(), learning_rate, **compile_kwargs
        ),
        "keras_distiller_default": lambda: keras_distiller(
            teacher, student(), None, learning_rate, **compile_kwargs
        ),
        "ours_distiller": lambda: demo.make_distiller(
            teacher, student(), learning_rate, **compile_kwargs
        ),
    }

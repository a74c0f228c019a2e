"""Tests of tfcompress.distillation.Distiller on the bundled digits."""

import contextlib
import warnings

import keras
import numpy as np
import pytest
from conftest import accuracy, make_cnn, make_mobile_block

import tfcompress
from tfcompress import Distiller

SCCE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def make_student(width=32):
    """Flatten-Dense-Dense: 2,410 parameters, ~16x fewer than the teacher."""
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(width, activation="relu"),
            keras.layers.Dense(10),
        ]
    )


@pytest.fixture(scope="module")
def teacher(digits):
    """make_cnn trained on all 1,257 training digits (~97% test accuracy)."""
    (x_train, y_train), _ = digits
    keras.utils.set_random_seed(0)
    model = make_cnn(16, 32, 64)
    model.compile(keras.optimizers.Adam(3e-3), SCCE, steps_per_execution=8)
    model.fit(x_train, y_train, epochs=6, batch_size=32, verbose=0)
    return model


@pytest.fixture(scope="module")
def few_labels(digits):
    """150 labelled training digits, tiled 15x so 3 epochs = 213 steps."""
    (x_train, y_train), _ = digits
    idx = np.random.RandomState(0).permutation(len(x_train))[:150]
    return np.tile(x_train[idx], (15, 1, 1, 1)), np.tile(y_train[idx], 15)


def softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def identity_model(classes):
    """A model that returns its input: fixed 'teacher logits' for loss tests."""
    return keras.Sequential(
        [
            keras.Input((classes,)),
            keras.layers.Dense(classes, use_bias=False, kernel_initializer="identity"),
        ]
    )


def test_teacher_is_accurate(teacher, digits):
    _, (x_test, y_test) = digits
    assert accuracy(teacher, x_test, y_test) > 0.95


def test_distilled_student_beats_labels_alone(teacher, digits, few_labels):
    _, (x_test, y_test) = digits
    x, y = few_labels
    alone, distilled = [], []
    for seed in range(3):
        keras.utils.set_random_seed(seed)
        student = make_student()
        student.compile(keras.optimizers.Adam(1e-2), SCCE, steps_per_execution=16)
        student.fit(x, y, epochs=3, batch_size=32, verbose=0)
        alone.append(accuracy(student, x_test, y_test))

        keras.utils.set_random_seed(seed)
        distiller = Distiller(make_student(), teacher)
        distiller.compile(
            keras.optimizers.Adam(1e-2), temperature=4.0, steps_per_execution=16
        )
        distiller.fit(x, y, epochs=3, batch_size=32, verbose=0)
        distilled.append(accuracy(distiller.student, x_test, y_test))
    # Measured: 0.891 on labels alone, 0.924 distilled (teacher 0.97).
    assert np.mean(distilled) >= np.mean(alone) + 0.01, (alone, distilled)


def test_soft_targets_only_student_agrees_with_teacher(teacher, digits, few_labels):
    _, (x_test, _) = digits
    x, y = few_labels
    distiller = Distiller(make_student(), teacher)
    distiller.compile(
        keras.optimizers.Adam(1e-2), alpha=0.0, temperature=4.0, steps_per_execution=16
    )
    distiller.fit(x, y, epochs=3, batch_size=32, verbose=0)
    student_top1 = np.argmax(distiller.predict(x_test, verbose=0), axis=-1)
    teacher_top1 = np.argmax(teacher.predict(x_test, verbose=0), axis=-1)
    assert np.mean(student_top1 == teacher_top1) > 0.9  # measured 0.94


@pytest.mark.parametrize(
    "loss_fn",
    [keras.losses.KLDivergence(), "kl_divergence", "kld", keras.losses.kl_divergence],
    ids=["instance", "string", "alias", "function"],
)
def test_loss_equals_hand_computed_value(loss_fn):
    teacher_logits = np.array([[4.0, -2.0, 1.0, 0.5], [-1.0, 3.0, 2.5, -4.0]], "float32")
    student_logits = np.array([[1.0, 2.0, -3.0, 0.0], [0.5, 0.5, 6.0, -1.0]], "float32")
    labels = np.array([0, 2])
    alpha, t = 0.25, 3.0
    p_t, p_s = softmax(teacher_logits / t), softmax(student_logits / t)
    kl = np.mean(np.sum(p_t * np.log(p_t / p_s), axis=-1)) * t**2
    ce = np.mean(-np.log(softmax(student_logits)[np.arange(2), labels]))
    expected = alpha * ce + (1 - alpha) * kl

    distiller = Distiller(identity_model(4), identity_model(4))
    distiller.compile("sgd", distillation_loss_fn=loss_fn, alpha=alpha, temperature=t)
    total = distiller.compute_loss(
        x=teacher_logits, y=labels, y_pred=keras.ops.convert_to_tensor(student_logits)
    )
    assert kl > 1.0  # the logits disagree: a real distillation signal
    np.testing.assert_allclose(float(total), expected, rtol=1e-5)
    np.testing.assert_allclose(
        float(distiller.distillation_loss_tracker.result()), kl, rtol=1e-5
    )
    np.testing.assert_allclose(float(distiller.student_loss_tracker.result()), ce, rtol=1e-5)


def test_crossentropy_as_distillation_loss_gets_probabilities():
    teacher_logits = np.array([[4.0, -2.0, 1.0], [0.0, 3.0, -1.0]], "float32")
    student_logits = np.array([[1.0, 2.0, -3.0], [2.0, 0.0, 1.0]], "float32")
    t = 2.0
    p_t, p_s = softmax(teacher_logits / t), softmax(student_logits / t)
    expected = np.mean(-np.sum(p_t * np.log(p_s), axis=-1)) * t**2
    distiller = Distiller(identity_model(3), identity_model(3))
    distiller.compile("sgd", distillation_loss_fn="categorical_crossentropy", temperature=t)
    value = distiller.distillation_loss(teacher_logits, student_logits)
    np.testing.assert_allclose(float(value), expected, rtol=1e-5)


def test_student_loss_string_is_read_on_logits():
    logits = np.array([[2.0, -1.0, 0.0]], "float32")
    distiller = Distiller(identity_model(3), identity_model(3))
    distiller.compile("sgd", student_loss_fn="sparse_categorical_crossentropy", alpha=1.0)
    total = distiller.compute_loss(x=logits, y=np.array([0]), y_pred=logits)
    np.testing.assert_allclose(float(total), -np.log(softmax(logits)[0, 0]), rtol=1e-5)


def test_logs_evaluate_and_predict_report_the_student(teacher, digits):
    (x_train, y_train), (x_test, y_test) = digits
    distiller = Distiller(make_student(), teacher)
    distiller.compile(keras.optimizers.Adam(1e-2), metrics=["accuracy"])
    history = distiller.fit(
        x_train, y_train, epochs=2, batch_size=64, validation_data=(x_test, y_test), verbose=0
    )
    for key in ("loss", "student_loss", "distillation_loss", "accuracy", "val_distillation_loss"):
        assert key in history.history
    assert history.history["distillation_loss"][1] < history.history["distillation_loss"][0]
    assert min(history.history["distillation_loss"]) > 0.0
    results = distiller.evaluate(x_test, y_test, verbose=0, return_dict=True)
    assert results["accuracy"] == pytest.approx(accuracy(distiller.student, x_test, y_test))
    assert results["accuracy"] > 0.75  # 2 short epochs; measured 0.82
    np.testing.assert_allclose(
        distiller.predict(x_test[:8], verbose=0),
        distiller.student.predict(x_test[:8], verbose=0),
        rtol=1e-6,
    )


def test_teacher_weights_never_change(digits):
    (x_train, y_train), _ = digits
    teacher = make_mobile_block()  # BatchNormalization: moving stats must stay put
    before = [w.copy() for w in teacher.get_weights()]
    student = make_cnn(4, 8, 16)
    distiller = Distiller(student, teacher)
    distiller.compile(keras.optimizers.Adam(1e-2))
    assert len(distiller.trainable_variables) == len(student.trainable_variables)
    distiller.fit(x_train[:256], y_train[:256], epochs=1, batch_size=32, verbose=0)
    unlabelled = distiller.fit(x_train[256:512], epochs=1, batch_size=32, verbose=0)
    assert unlabelled.history["student_loss"] == [0.0]
    assert unlabelled.history["distillation_loss"][0] > 0.0
    for b, a in zip(before, teacher.get_weights()):
        np.testing.assert_array_equal(b, a)
    assert not teacher.trainable


def test_pruned_student_reaches_target_sparsity(teacher, digits):
    (x_train, y_train), (x_test, y_test) = digits
    schedule = tfcompress.ConstantSparsity(0.7, begin_step=0, frequency=10)
    student = tfcompress.prune_low_magnitude(make_student(64), pruning_schedule=schedule)
    distiller = Distiller(student, teacher)
    distiller.compile(keras.optimizers.Adam(1e-2), alpha=0.5)
    distiller.fit(
        x_train, y_train, epochs=3, batch_size=32, verbose=0,
        callbacks=[tfcompress.UpdatePruningStep()],
    )
    final = tfcompress.strip_pruning(distiller.student)
    for layer in final.layers:
        if isinstance(layer, keras.layers.Dense):
            kernel = keras.ops.convert_to_numpy(layer.kernel)
            assert np.mean(kernel == 0) == pytest.approx(0.7, abs=0.01), layer.name
    assert accuracy(final, x_test, y_test) > 0.85


def test_qat_student_converts_to_int8(teacher, digits):
    from tfcompress import lite, quantization

    (x_train, y_train), (x_test, y_test) = digits
    student = quantization.quantize_model(make_cnn(8, 16, 32))
    distiller = Distiller(student, teacher)
    distiller.compile(keras.optimizers.Adam(5e-3), steps_per_execution=8)
    distiller.fit(x_train, y_train, epochs=2, batch_size=32, verbose=0)
    keras_accuracy = accuracy(distiller.student, x_test, y_test)
    flatbuffer = lite.convert(distiller.student, quantization="int8")
    int8_accuracy = lite.evaluate(flatbuffer, x_test, y_test)["accuracy"]
    assert keras_accuracy > 0.88  # measured 0.924, int8 0.924
    assert abs(int8_accuracy - keras_accuracy) <= 0.015, (keras_accuracy, int8_accuracy)


def test_checkpoint_reloads_without_custom_objects(teacher, digits, tmp_path):
    (x_train, y_train), (x_test, y_test) = digits
    path = str(tmp_path / "distiller.keras")
    distiller = Distiller(make_student(), teacher)
    distiller.compile(
        keras.optimizers.Adam(1e-2), metrics=["accuracy"],
        distillation_loss_fn="kld", alpha=0.3, temperature=4.0,
    )
    callbacks = [
        keras.callbacks.ModelCheckpoint(path),
        keras.callbacks.EarlyStopping(monitor="val_student_loss", mode="min", patience=1),
    ]
    distiller.fit(
        x_train, y_train, epochs=3, batch_size=64, validation_data=(x_test, y_test),
        callbacks=callbacks, verbose=0,
    )
    with _no_optimizer_warning():  # no stale optimizer from the compiled teacher
        reloaded = keras.saving.load_model(path)
    assert isinstance(reloaded, Distiller)
    assert (reloaded.alpha, reloaded.temperature) == (0.3, 4.0)
    assert int(reloaded.optimizer.iterations) == int(distiller.optimizer.iterations)
    np.testing.assert_allclose(
        reloaded.predict(x_test, verbose=0), distiller.predict(x_test, verbose=0), atol=1e-6
    )
    expected = distiller.evaluate(x_test, y_test, verbose=0, return_dict=True)
    got = reloaded.evaluate(x_test, y_test, verbose=0, return_dict=True)
    for key in ("loss", "student_loss", "distillation_loss", "accuracy"):
        assert got[key] == pytest.approx(expected[key], rel=1e-5), key
    assert not reloaded.teacher.trainable
    reloaded.fit(x_train[:128], y_train[:128], epochs=1, verbose=0)  # resumes


@contextlib.contextmanager
def _no_optimizer_warning():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    messages = [str(w.message) for w in caught if "optimizer" in str(w.message)]
    assert not messages, messages


def test_mirrored_strategy_matches_single_device(teacher, digits, mirrored_strategy):
    (x_train, y_train), (x_test, y_test) = digits
    strategy = mirrored_strategy
    with strategy.scope():
        distiller = Distiller(make_student(), teacher)
        distiller.compile(keras.optimizers.Adam(1e-2), metrics=["accuracy"])
    distiller.fit(x_train, y_train, epochs=3, batch_size=64, verbose=0)
    distributed = distiller.evaluate(x_test, y_test, batch_size=64, verbose=0, return_dict=True)
    assert distributed["accuracy"] > 0.8

    # Same weights on one device: the logged losses must not depend on replicas.
    student = make_student()
    student.set_weights(distiller.student.get_weights())
    single = Distiller(student, teacher)
    single.compile(metrics=["accuracy"])
    local = single.evaluate(x_test, y_test, batch_size=64, verbose=0, return_dict=True)
    for key in ("loss", "student_loss", "distillation_loss", "accuracy"):
        assert distributed[key] == pytest.approx(local[key], rel=1e-4), key


def test_subclassed_student(teacher, digits):
    (x_train, y_train), (x_test, y_test) = digits

    class Student(keras.Model):
        def __init__(self, classes=10):
            super().__init__()
            self.flatten = keras.layers.Flatten()
            self.hidden = keras.layers.Dense(32, activation="relu")
            self.out = keras.layers.Dense(classes)

        def call(self, x):
            return self.out(self.hidden(self.flatten(x)))

    distiller = Distiller(Student(), teacher)  # unbuilt: checked at the first step
    distiller.compile(keras.optimizers.Adam(1e-2))
    distiller.fit(x_train, y_train, epochs=2, batch_size=64, verbose=0)
    assert accuracy(distiller.student, x_test, y_test) > 0.75  # measured 0.82

    wrong = Distiller(Student(classes=5), teacher)
    wrong.compile("adam")
    with pytest.raises(ValueError, match=r"teacher output shape \(None, 10\).*student output shape \(None, 5\)"):
        wrong.fit(x_train[:64], y_train[:64], epochs=1, verbose=0)


# -- errors -------------------------------------------------------------------


def test_output_shapes_must_match(teacher):
    student = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(5)])
    with pytest.raises(ValueError, match=r"\(None, 10\).*\(None, 5\)"):
        Distiller(student, teacher)


@pytest.mark.parametrize("alpha", [-0.1, 1.5, "0.5"])
def test_alpha_must_be_a_fraction(teacher, alpha):
    distiller = Distiller(make_student(), teacher)
    with pytest.raises(ValueError, match=f"alpha={alpha!r}"):
        distiller.compile("adam", alpha=alpha)


@pytest.mark.parametrize("temperature", [0, -1.0, None])
def test_temperature_must_be_positive(teacher, temperature):
    distiller = Distiller(make_student(), teacher)
    with pytest.raises(ValueError, match=f"temperature={temperature!r}"):
        distiller.compile("adam", temperature=temperature)


def test_teacher_must_be_a_built_keras_model():
    with pytest.raises(TypeError, match="teacher must be a keras.Model"):
        Distiller(make_student(), keras.layers.Dense(10))

    class Unbuilt(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="teacher must be a built"):
        Distiller(make_student(), Unbuilt())


def test_models_must_output_logits():
    softmax_teacher = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax")]
    )
    with pytest.raises(ValueError, match="output logits.*teacher"):
        Distiller(make_student(), softmax_teacher)


def test_bad_losses_are_refused(teacher):
    distiller = Distiller(make_student(), teacher)
    with pytest.raises(ValueError, match="from_logits=True"):
        distiller.compile(
            "adam", distillation_loss_fn=keras.losses.CategoricalCrossentropy(from_logits=True)
        )
    with pytest.raises(ValueError, match="needs from_logits=True"):
        distiller.compile(
            "adam", student_loss_fn=keras.losses.SparseCategoricalCrossentropy()
        )
    with pytest.raises(ValueError, match="Unknown distillation_loss_fn"):
        distiller.compile("adam", distillation_loss_fn="not_a_loss")
    with pytest.raises(TypeError, match="student_loss_fn"):
        distiller.compile("adam", loss="mse")

"""Shared fixtures: the digits data and tiny models that train in seconds."""

import tfcompress  # first: it loads TensorFlow without the C++ start-up log lines

import keras
import numpy as np
import pytest

from tfcompress import datasets, demo


def pytest_configure(config):
    # Two logical CPUs so MirroredStrategy tests have two replicas; this must
    # happen before TensorFlow initialises its devices.
    import tensorflow as tf

    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2
        )
    except RuntimeError:
        pass


@pytest.fixture(scope="session")
def mirrored_strategy():
    """One two-replica MirroredStrategy shared by the whole session.

    Each new strategy numbers its collective ops from the same start, so a
    second strategy in one process can collide with the first one's
    all-reduces ("Shape mismatch in the collective instance"). Users create
    one strategy per program; the tests do the same.
    """
    import tensorflow as tf

    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


@pytest.fixture(scope="session")
def digits():
    """((x_train, y_train), (x_test, y_test)) of the bundled digits."""
    return datasets.load_digits()


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)
    yield
    keras.backend.clear_session()


def make_cnn(conv1=16, conv2=32, dense=64):
    """The demo CNN's shape (Conv-Conv-MaxPool-Dense-Dense), smaller by default."""
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(conv1, 3, padding="same", activation="relu"),
            keras.layers.Conv2D(conv2, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dense(dense, activation="relu"),
            keras.layers.Dense(10),
        ]
    )


def make_mobile_block():
    """Functional model with Conv-BN-ReLU6, DepthwiseConv2D and a residual Add.

    BatchNorm momentum 0.9: the digits epochs are short, and statistics that
    lag behind changing weights (pruning, QAT) would measure a stale model.
    """
    layers = keras.layers
    inputs = keras.Input((8, 8, 1))
    x = layers.Conv2D(32, 3, padding="same", use_bias=False)(inputs)
    x = layers.BatchNormalization(momentum=0.9)(x)
    x = layers.ReLU(6.0)(x)
    y = layers.DepthwiseConv2D(3, padding="same", use_bias=False)(x)
    y = layers.BatchNormalization(momentum=0.9)(y)
    y = layers.ReLU(6.0)(y)
    y = layers.Conv2D(32, 1, use_bias=False)(y)
    y = layers.BatchNormalization(momentum=0.9)(y)
    x = layers.Add()([x, y])
    x = layers.Conv2D(64, 3, strides=2, padding="same", activation="relu")(x)
    x = layers.Flatten()(x)
    outputs = layers.Dense(10)(x)
    return keras.Model(inputs, outputs, name="mobile_block")


def compile_for_digits(model, learning_rate=3e-3):
    return demo.compile_classifier(model, learning_rate)


def small_digits(digits):
    """600 training and 200 validation digits: `(x, y, x_val, y_val)`, the auto tests' data."""
    (x, y), (x_test, y_test) = digits
    return x[:600], y[:600], x_test[:200], y_test[:200]


def fit_small_classifier(build, x, y):
    """`build()` (logits out) made and trained from seed 0: Adam 3e-3, 8 epochs (the auto tests')."""
    keras.utils.set_random_seed(0)
    model = build()
    model.compile(
        keras.optimizers.Adam(3e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(x, y, epochs=8, batch_size=32, verbose=0)
    return model


# One accuracy helper for the tests, the demo and the benchmarks.
accuracy = demo.keras_accuracy

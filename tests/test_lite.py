"""TFLite export and the LiteRT runtime."""

import keras
import numpy as np
import pytest
from conftest import accuracy, compile_for_digits, make_cnn

import tfcompress
from tfcompress import lite


@pytest.fixture(scope="module")
def cnn(digits):
    """A trained float CNN, its test accuracy and its float32 flatbuffer."""
    (x_train, y_train), (x_test, y_test) = digits
    keras.utils.set_random_seed(0)
    model = compile_for_digits(make_cnn())
    model.fit(x_train, y_train, epochs=4, batch_size=64, verbose=0)
    return model, accuracy(model, x_test, y_test), lite.convert(model)


def test_float_file_predicts_like_keras(cnn, digits, tmp_path):
    model, float_acc, flatbuffer = cnn
    _, (x_test, y_test) = digits
    np.testing.assert_allclose(
        lite.predict(flatbuffer, x_test, batch_size=100),  # 5 full batches + a short one
        model.predict(x_test, verbose=0),
        atol=1e-4,
    )
    assert float_acc >= 0.9
    result = lite.evaluate(flatbuffer, x_test, y_test)
    assert result == {"accuracy": pytest.approx(float_acc), "num_examples": len(y_test)}
    # One-hot labels and a file path work too.
    path = tmp_path / "model.tflite"
    path.write_bytes(flatbuffer)
    one_hot = np.eye(10)[y_test]
    assert lite.evaluate(str(path), x_test, one_hot)["accuracy"] == pytest.approx(float_acc)


def test_float16_and_dynamic_are_2x_and_4x_smaller(cnn, tmp_path):
    model, _, float_file = cnn
    path = tmp_path / "out" / "f16.tflite"
    half = lite.convert(model, quantization="float16", output_path=str(path))
    assert path.read_bytes() == half
    dynamic = lite.convert(model, quantization="dynamic")
    assert 1.8 <= len(float_file) / len(half) <= 2.1
    assert 3.2 <= len(float_file) / len(dynamic) <= 4.1


def test_post_training_int8_calibrates_on_representative_data(cnn, digits):
    model, float_acc, _ = cnn
    (x_train, _), (x_test, y_test) = digits
    batches = [x_train[i : i + 50] for i in range(0, 200, 50)]  # an iterable of batches
    int8 = lite.convert(model, quantization="int8", representative_data=batches)
    assert lite.evaluate(int8, x_test, y_test)["accuracy"] >= float_acc - 0.02
    int8_io = lite.convert(
        model, quantization="int8", representative_data=x_train[:200], int8_io=True
    )
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=int8_io)
    assert interpreter.get_input_details()[0]["dtype"] == np.int8
    assert interpreter.get_output_details()[0]["dtype"] == np.int8
    # predict scales int8 input/output: same answers as the float-I/O file.
    agree = np.mean(
        np.argmax(lite.predict(int8_io, x_test), -1) == np.argmax(lite.predict(int8, x_test), -1)
    )
    assert agree >= 0.98


def test_pruning_wrappers_are_stripped_by_convert(digits):
    (x_train, y_train), (x_test, _) = digits
    pruned = tfcompress.prune_low_magnitude(
        make_cnn(4, 8, 16), pruning_schedule=tfcompress.ConstantSparsity(0.5, begin_step=0)
    )
    compile_for_digits(pruned).fit(x_train[:128], y_train[:128], epochs=1, verbose=0)
    flatbuffer = lite.convert(pruned)
    np.testing.assert_allclose(
        lite.predict(flatbuffer, x_test[:32]), pruned.predict(x_test[:32], verbose=0), atol=1e-4
    )


def test_subclassed_model_converts():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = keras.layers.Conv2D(4, 3, activation="relu")
            self.flat = keras.layers.Flatten()
            self.out = keras.layers.Dense(10)

        def call(self, x):
            return self.out(self.flat(self.conv(x)))

    net = Net()
    x = np.random.default_rng(0).random((5, 8, 8, 1)).astype("float32")
    expected = net(x)
    np.testing.assert_allclose(lite.predict(lite.convert(net), x), expected, atol=1e-5)


def test_benchmark_reports_median_and_p90(cnn):
    result = lite.benchmark(cnn[2], num_threads=1, runs=30, warmup=3)
    assert 0 < result["median_ms"] <= result["p90_ms"] < 1000
    assert result["runs"] == 30 and result["size_bytes"] == len(cnn[2])


# Bad arguments, inputs and files: test_bad_input.py and test_fuzz.py.

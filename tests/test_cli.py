"""The `tfcompress` command: convert -> inspect -> bench, the demo's pieces, and bad input."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import compile_for_digits, make_cnn

from tfcompress import cli, demo


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    from tfcompress.datasets import load_digits

    (x, y), _ = load_digits()
    keras.utils.set_random_seed(0)
    model = compile_for_digits(make_cnn())
    model.fit(x[:512], y[:512], epochs=1, batch_size=64, verbose=0)
    folder = tmp_path_factory.mktemp("cli")
    path = str(folder / "model.keras")
    model.save(path)
    calibration = str(folder / "calibration.npy")
    np.save(calibration, x[:64])
    return path, calibration, folder


def run(capsys, *argv):
    status = cli.main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_convert_int8_then_inspect_then_bench(saved_model, capsys):
    model_path, calibration, folder = saved_model
    out = str(folder / "model_int8.tflite")
    status, stdout, _ = run(
        capsys, "convert", model_path, "-o", out, "--quantization", "int8", "--calibration", calibration
    )
    assert status == 0 and os.path.isfile(out)
    assert f"wrote {out}" in stdout and "int8" in stdout

    status, stdout, _ = run(capsys, "inspect", out)
    assert status == 0
    assert "int8" in stdout
    kernel_rows = [line for line in stdout.splitlines() if "int8" in line]
    assert len(kernel_rows) >= 4  # two conv kernels and two dense kernels at least

    status, stdout, _ = run(capsys, "bench", out, "--threads", "1", "--runs", "20")
    assert status == 0
    assert "median" in stdout and "p90" in stdout and "20 runs" in stdout


def test_convert_float16_is_about_half_of_float32(saved_model, capsys):
    model_path, _, folder = saved_model
    sizes = {}
    for mode in ("float32", "float16"):
        out = str(folder / f"model_{mode}.tflite")
        assert run(capsys, "convert", model_path, "-o", out, "--quantization", mode)[0] == 0
        sizes[mode] = os.path.getsize(out)
    assert 0.4 < sizes["float16"] / sizes["float32"] < 0.6


def test_convert_int16x8_writes_int16_activations_and_int8_kernels(saved_model, capsys):
    from ai_edge_litert.interpreter import Interpreter

    model_path, calibration, folder = saved_model
    out = str(folder / "model_int16x8.tflite")
    status, stdout, _ = run(
        capsys, "convert", model_path, "-o", out, "--quantization", "int16x8", "--calibration", calibration
    )
    assert status == 0 and f"wrote {out}" in stdout and "int16x8" in stdout
    interpreter = Interpreter(model_path=out)
    dtypes = {d["index"]: d["dtype"] for d in interpreter.get_tensor_details()}
    convs = [op for op in interpreter._get_ops_details() if op["op_name"] == "CONV_2D"]
    assert len(convs) == 2
    for op in convs:
        assert [dtypes[i] for i in op["inputs"][:2]] == [np.int16, np.int8]
        assert dtypes[op["outputs"][0]] == np.int16


def test_inspect_a_keras_file(saved_model, capsys):
    status, stdout, _ = run(capsys, "inspect", saved_model[0])
    assert status == 0
    assert "float32" in stdout


# Every failure of the command (one line, status 2) is in test_bad_input.py.


def test_two_input_model_and_lstm_through_convert_inspect_bench(tmp_path, capsys):
    layers = keras.layers
    keras.utils.set_random_seed(0)
    ids = keras.Input((6,), dtype="int32", name="ids")
    feats = keras.Input((6, 3), name="feats")
    steps = layers.Concatenate()([layers.Embedding(20, 4)(ids), feats])
    hidden = layers.LSTM(8)(steps)
    model = keras.Model([ids, feats], [layers.Dense(2)(hidden), layers.Dense(1)(hidden)])
    model_path = str(tmp_path / "two.keras")
    model.save(model_path)
    rng = np.random.default_rng(0)
    calibration = str(tmp_path / "calibration.npz")
    np.savez(calibration, ids=rng.integers(0, 20, (16, 6)), feats=rng.random((16, 6, 3)))
    out = str(tmp_path / "two.tflite")
    status, stdout, stderr = run(
        capsys, "convert", model_path, "-o", out, "--quantization", "int8", "--calibration", calibration
    )
    assert status == 0, stderr
    status, stdout, _ = run(capsys, "inspect", out)
    assert status == 0 and "int8" in stdout
    status, stdout, _ = run(capsys, "bench", out, "--runs", "5")
    assert status == 0 and "5 runs" in stdout
    unrolled = str(tmp_path / "unrolled.tflite")
    assert run(capsys, "convert", model_path, "-o", unrolled, "--rnn", "unroll")[0] == 0
    status, _, stderr = run(capsys, "convert", model_path, "-o", unrolled, "--rnn", "fast")
    assert status == 2 and "--rnn must be one of ['auto', 'unroll']. Received: --rnn='fast'" in stderr


def test_console_script_prints_no_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "tfcompress", "bench", str(tmp_path / "nope.tflite")],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        timeout=120,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "tfcompress bench: error: No such file" in result.stderr
    assert result.stderr.strip().count("\n") == 0


def test_demo_table_and_plot(tmp_path):
    variants = [
        demo.Variant("float32", 0.98, 0.98, 100_000, 90_000, 0.05),
        demo.Variant("tiny", 0.97, 0.965, 30_000, 3_000, 0.02),
    ]
    table = demo.render_table(variants)
    assert "| tiny | 97.00% | 96.50% | 29.3 KiB | 2.9 KiB | 33.3x | 0.020 ms |" in table
    assert "| float32 | 98.00% | 98.00% | 97.7 KiB | 87.9 KiB | 1.1x | 0.050 ms |" in table
    demo.write_report(variants, str(tmp_path / "report.md"), elapsed=12.0)
    assert "33.3x" in (tmp_path / "report.md").read_text()
    demo.plot_tradeoff(variants, str(tmp_path / "tradeoff.png"))
    assert (tmp_path / "tradeoff.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_pipeline_settings_name_real_layers():
    model = demo.demo_cnn()
    names = {layer.name for layer in model.layers}
    assert set(demo.HEADLINE_SPARSITY) <= names
    assert set(demo.HEADLINE_CLUSTERS) <= names
    weights = {l.name: int(np.prod(l.kernel.shape)) for l in model.layers if l.weights}
    zeros = sum(weights[name] * target for name, target in demo.HEADLINE_SPARSITY.items())
    assert 0.90 <= zeros / sum(weights.values()) <= 0.95  # "prune ~90%", allocated per layer

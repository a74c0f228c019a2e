"""The compression report: Huffman / entropy math, Keras models, .tflite files."""

import math

import keras
import numpy as np
import pytest

from tfcompress import CompressionReport, CompressionSummaries, cluster_weights, summarize
from tfcompress import report as report_lib


def _by_layer(report):
    """{"layer/weight": row}, without the model's name prefix."""
    return {"/".join(row.name.split("/")[-2:]): row for row in report.rows}


def _tiny_model():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, name="fc")])
    model.layers[0].kernel.assign(
        np.array([[0, 0, 1, 1], [0, 2, 2, 2], [0, 0, 0, 3]], "float32")
    )
    model.layers[0].bias.assign(np.zeros(4, "float32"))
    return model


# --- Huffman and entropy, by hand ------------------------------------------


def test_huffman_code_lengths_match_a_hand_built_tree():
    # Counts a=5, b=2, c=1, d=1: merge c+d (2), then b+(cd) (4), then a+(bcd) (9):
    # a=0, b=10, c=110, d=111.
    assert report_lib.huffman_code_lengths([5, 2, 1, 1]).tolist() == [1, 2, 3, 3]
    values = np.array(list("aaaaabbcd"))
    assert report_lib.huffman_bits(values) == 5 * 1 + 2 * 2 + 1 * 3 + 1 * 3 == 15
    # Four equally likely symbols: 2 bits each; one symbol still needs 1 bit.
    assert report_lib.huffman_code_lengths([7, 7, 7, 7]).tolist() == [2, 2, 2, 2]
    assert report_lib.huffman_code_lengths([9]).tolist() == [1]
    assert report_lib.huffman_code_lengths([]).tolist() == []


def test_huffman_is_within_one_bit_of_the_entropy_on_many_symbols():
    rng = np.random.default_rng(0)
    values = rng.geometric(0.3, size=20_000)
    h = report_lib.entropy_bits(values)
    per_value = report_lib.huffman_bits(values) / values.size
    assert h <= per_value < h + 1


def test_entropy_of_a_hand_computed_distribution():
    # p = 5/9, 2/9, 1/9, 1/9.
    expected = -(5 / 9 * math.log2(5 / 9) + 2 / 9 * math.log2(2 / 9) + 2 / 9 * math.log2(1 / 9))
    assert report_lib.entropy_bits(np.array(list("aaaaabbcd"))) == pytest.approx(expected)
    assert expected == pytest.approx(1.6577, abs=1e-4)
    assert report_lib.entropy_bits(np.zeros(10)) == 0.0


# --- Keras models -----------------------------------------------------------


def test_report_of_a_keras_model_by_hand():
    report = summarize(_tiny_model())
    assert isinstance(report, CompressionReport) and report.source == "keras"
    kernel, bias = report.rows
    assert kernel.name.endswith("fc/kernel") and kernel.shape == (3, 4)
    assert kernel.params == 12 and kernel.dtype == "float32" and kernel.bytes == 48
    assert kernel.sparsity == 0.5 and kernel.distinct == 4
    # Counts 0:6, 2:3, 1:2, 3:1 -> code lengths 1, 2, 3, 3 -> 21 bits -> 3 bytes.
    assert kernel.huffman_bytes == 3
    assert bias.sparsity == 1.0 and bias.distinct == 1 and bias.huffman_bytes == 1
    numbers = report.to_dict()
    assert numbers["params"] == 16
    assert numbers["float32_bytes"] == numbers["actual_bytes"] == 64
    assert numbers["huffman_bytes"] == math.ceil((21 + 4) / 8) == 4
    assert numbers["sparsity"] == pytest.approx(10 / 16)
    assert 0 < numbers["gzip_bytes"] < 64 + 40  # gzip header on 64 bytes
    text = str(report)
    assert "fc/kernel" in text and "Huffman" in text and "3x4" in text and "50.0%" in text


def test_report_of_a_saved_keras_file(tmp_path):
    path = tmp_path / "tiny.keras"
    _tiny_model().save(path)
    loaded, built = summarize(str(path)).to_dict(), summarize(_tiny_model()).to_dict()
    for numbers in (loaded, built):  # the model-name prefix of weight paths differs
        for row in numbers["rows"]:
            row["name"] = "/".join(row["name"].split("/")[-2:])
    assert loaded == built


def test_report_sees_wrapped_layers_as_they_will_ship():
    model = keras.Sequential(
        [keras.Input((20,)), keras.layers.Dense(30, name="a"), keras.layers.Dense(5, name="b")]
    )
    clustered = cluster_weights(model, 3)
    rows = _by_layer(summarize(clustered))
    # Centroids and indices are not shipped; kernels show their clustered values.
    assert sorted(rows) == ["a/bias", "a/kernel", "b/bias", "b/kernel"]
    assert rows["a/kernel"].distinct <= 3 and rows["b/kernel"].distinct <= 3

    from tfcompress import prune_low_magnitude

    pruned = prune_low_magnitude(model)
    wrapper = pruned.layers[0]
    mask = np.zeros((20, 30), "float32")
    mask[:5] = 1.0
    wrapper.masks[0].assign(mask)
    rows = _by_layer(summarize(pruned))
    assert len(rows) == 4
    assert rows["a/kernel"].sparsity == pytest.approx(0.75)


def test_compression_summaries_put_sparsity_and_distinct_values_in_logs(digits):
    (x, y), _ = digits
    model = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(10, name="fc")]
    )
    clustered = cluster_weights(model, 4)
    clustered.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = clustered.fit(
        x[:256], y[:256], epochs=2, batch_size=64, verbose=0, callbacks=[CompressionSummaries()]
    )
    (distinct_key,) = [k for k in history.history if k.endswith("fc/kernel/distinct")]
    (sparsity_key,) = [k for k in history.history if k.endswith("fc/kernel/sparsity")]
    assert len(history.history[distinct_key]) == 2
    assert all(1 <= d <= 4 for d in history.history[distinct_key])
    assert history.history[sparsity_key] == [0.0, 0.0]
    assert not any(k.endswith("bias/distinct") for k in history.history)  # min_rank=2
    with pytest.raises(ValueError, match="min_rank=-1"):
        CompressionSummaries(min_rank=-1)


# --- .tflite ----------------------------------------------------------------


def _int8_tflite(model, x):
    try:
        from tfcompress import lite

        return lite.convert(model, quantization="int8", representative_data=x[:64])
    except ImportError:  # lite not available: convert directly
        import tensorflow as tf

        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([x[i : i + 1]] for i in range(64))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        return converter.convert()


def test_report_of_an_int8_tflite_finds_int8_tensors_and_their_sparsity(digits, tmp_path):
    (x, _), _ = digits
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(8, 3, padding="same", activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(10),
        ]
    )
    dense = model.layers[-1]
    kernel = keras.ops.convert_to_numpy(dense.kernel)
    kernel[np.abs(kernel) < np.quantile(np.abs(kernel), 0.7)] = 0.0
    dense.kernel.assign(kernel)
    flatbuffer = _int8_tflite(model, x)

    report = summarize(flatbuffer)
    assert report.source == "tflite"
    int8 = [row for row in report.rows if row.dtype == "int8"]
    assert sorted(row.params for row in int8) == [72, 5120]
    (dense_row,) = [row for row in int8 if row.params == 5120]
    assert dense_row.sparsity == pytest.approx(0.7, abs=0.01)
    assert dense_row.bytes == 5120 and dense_row.distinct <= 255
    assert report.actual_bytes == len(flatbuffer)
    assert 0 < report.gzip_bytes < len(flatbuffer)
    assert report.huffman_bytes < 5120 + 72

    path = tmp_path / "model.tflite"
    path.write_bytes(flatbuffer)
    assert summarize(str(path)).to_dict() == report.to_dict()
    assert "int8" in str(report)


def test_summarize_rejects_what_it_cannot_read(tmp_path):
    with pytest.raises(TypeError, match="obj=42"):
        summarize(42)
    with pytest.raises(ValueError, match="is not a TFLite model"):
        summarize(b"definitely not a flatbuffer")
    with pytest.raises(FileNotFoundError, match="missing.tflite"):
        summarize(str(tmp_path / "missing.tflite"))

"""The model zoo: pruning, clustering and QAT -> int8 on real architectures.

The models and the checks are in `zoo_models.py` (shared with
`benchmarks/zoo.py`). Rows marked fast run in `make test`; the others, and the
digits transformer, are marked `zoo` and run with `make test-zoo`.
"""

import keras
import numpy as np
import pytest
import zoo_models as zoo

ROWS = zoo.zoo()


def _rows():
    return [
        pytest.param(row, id=row.name, marks=() if row.fast else pytest.mark.zoo) for row in ROWS
    ]


def _data(row):
    return row.examples()


@pytest.mark.parametrize("row", _rows())
def test_prune_strip_convert(row):
    result = zoo.check_pruning(row, _data(row))
    assert result["sparsity"] == pytest.approx(zoo.SPARSITY, abs=0.01)
    assert result["cosine"] >= zoo.MIN_COSINE


@pytest.mark.parametrize("row", _rows())
def test_cluster_strip(row):
    result = zoo.check_clustering(row, _data(row))
    assert result["distinct"] <= zoo.CLUSTERS
    assert result["cosine"] >= 0.9999  # stripping changes nothing the model computes


@pytest.mark.parametrize("row", _rows())
def test_qat_full_integer(row):
    result = zoo.check_qat(row, _data(row))
    assert result["float_ops"] == []
    assert result["float_tensors"] == []
    assert result["cosine"] >= zoo.MIN_COSINE


@pytest.mark.zoo
def test_digits_transformer_keeps_accuracy_in_int8(digits):
    (x_train, y_train), (x_test, y_test) = digits
    figures = zoo.digits_transformer(x_train, y_train, x_test, y_test)
    assert figures["float_accuracy"] >= 0.9
    assert figures["int8_accuracy"] >= figures["float_accuracy"] - 0.01
    assert figures["top1_agreement"] >= 0.99
    assert figures["float_ops"] == []


def test_layers_called_with_several_tensors_are_pruned_and_clustered():
    """MultiHeadAttention gets query, value and key; the wrappers pass them all."""
    import tfcompress
    from tfcompress import pruning

    query = keras.Input((4, 8))
    value = keras.Input((6, 8))
    mha = keras.layers.MultiHeadAttention(2, 4, name="mha")
    model = keras.Model([query, value], mha(query, value, value))
    rng = np.random.default_rng(0)
    x = [rng.normal(size=(8, 4, 8)).astype("float32"), rng.normal(size=(8, 6, 8)).astype("float32")]
    expected = model.predict(x, verbose=0)
    pruned = tfcompress.prune_low_magnitude(model, pruning.ConstantSparsity(0.5, 0, frequency=1))
    assert pruned.get_layer("prune_low_magnitude_mha").sparsity() == 0.0
    np.testing.assert_allclose(pruned.predict(x, verbose=0), expected, atol=1e-6)
    zoo._fit(pruned, x)
    assert pruned.get_layer("prune_low_magnitude_mha").sparsity() == pytest.approx(0.5, abs=0.01)
    clustered = tfcompress.cluster_weights(model, 4)
    kernels = clustered.get_layer("cluster_mha").shipped_weights().values()
    assert [np.unique(k).size for k in kernels] == [4, 4, 4, 4]
    # QAT keeps the pruned zeros of all four projections.
    qat = tfcompress.quantize_model(tfcompress.strip_pruning(pruned), preserve_sparsity=True)
    shipped = qat.get_layer("quant_mha").shipped_weights().values()
    assert [float(np.mean(k == 0)) for k in shipped] == pytest.approx([0.5] * 4, abs=0.01)

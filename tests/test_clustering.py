"""Weight clustering: centroids, the ClusterWeights wrapper, cluster/strip."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import accuracy, compile_for_digits, make_cnn, make_mobile_block

from tfcompress import ClusterWeights, cluster_weights, strip_clustering
from tfcompress.clustering import centroids as centroids_lib


def _distinct(variable):
    return np.unique(keras.ops.convert_to_numpy(variable)).size


@pytest.fixture(scope="module")
def cnn_weights(digits):
    """Weights of the small CNN trained once for the whole module."""
    (x, y), _ = digits
    keras.utils.set_random_seed(0)
    model = compile_for_digits(make_cnn())
    model.fit(x, y, epochs=2, batch_size=64, verbose=0)
    return model.get_weights()


def _trained_cnn(weights):
    model = make_cnn()
    model.set_weights(weights)
    return model


# --- centroid initialisation and lookup ------------------------------------


def test_linear_init_is_evenly_spaced_between_min_and_max():
    values = np.array([-1.0, 0.2, 0.3, 2.0])
    np.testing.assert_allclose(
        centroids_lib.init_centroids(values, 4, "linear"), [-1.0, 0.0, 1.0, 2.0], atol=1e-6
    )


def test_density_init_follows_the_quantiles():
    values = np.arange(100, dtype="float32")
    # Quantiles at 1/4 and 3/4 of 0..99.
    np.testing.assert_allclose(
        centroids_lib.init_centroids(values, 2, "density"), [24.75, 74.25], atol=1e-4
    )


def test_kmeans_plus_plus_finds_separated_groups():
    rng = np.random.default_rng(1)
    values = np.concatenate(
        [rng.normal(c, 0.01, 300) for c in (-1.0, 0.5, 3.0)]
    )
    got = centroids_lib.init_centroids(values, 3, "kmeans++")
    np.testing.assert_allclose(got, [-1.0, 0.5, 3.0], atol=0.01)


@pytest.mark.parametrize("method", ["kmeans++", "linear", "density", "random"])
def test_every_init_gives_k_sorted_centroids_within_the_range(method):
    values = np.random.default_rng(0).normal(size=500)
    got = centroids_lib.init_centroids(values, 8, method)
    assert got.shape == (8,) and got.dtype == np.float32
    assert np.all(np.diff(got) >= 0)
    assert values.min() - 1e-6 <= got.min() and got.max() <= values.max() + 1e-6


def test_nearest_centroid_handles_unsorted_centroids():
    centroids = np.array([0.5, -1.0, 2.0], "float32")
    values = np.array([[-3.0, -0.3], [0.7, 1.3], [1.2, 9.0]], "float32")
    expected = np.argmin(np.abs(values[..., None] - centroids), axis=-1)
    got = keras.ops.convert_to_numpy(centroids_lib.nearest_centroid(values, centroids))
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(centroids_lib.nearest_centroid_numpy(values, centroids), expected)


# --- errors -----------------------------------------------------------------


@pytest.mark.parametrize("bad", [1, 0, 2.5, True, "16"])
def test_number_of_clusters_must_be_an_int_of_at_least_two(bad):
    with pytest.raises(ValueError, match=f"number_of_clusters={bad!r}"):
        cluster_weights(keras.layers.Dense(3), bad)


def test_unknown_init_lists_the_valid_ones():
    with pytest.raises(ValueError, match="kmeans\\+\\+.*Received: cluster_centroids_init='kmeans'"):
        cluster_weights(keras.layers.Dense(3), 4, cluster_centroids_init="kmeans")


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="MaxPooling2D"):
        cluster_weights(keras.layers.MaxPooling2D(), 4)
    with pytest.raises(ValueError, match="preserve_sparsity='yes'"):
        cluster_weights(keras.layers.Dense(3), 4, preserve_sparsity="yes")
    with pytest.raises(TypeError, match="to_cluster='model.keras'"):
        cluster_weights("model.keras", 4)


def test_clusters_per_layer_from_a_dict():
    model = make_cnn()
    dense = model.layers[4].name
    clustered = cluster_weights(model, {dense: 4, None: 16})
    counts = [getattr(l, "number_of_clusters", None) for l in clustered.layers]
    assert counts == [16, 16, None, None, 4, 16]
    only = cluster_weights(model, {dense: 3})
    assert [isinstance(l, ClusterWeights) for l in only.layers] == [
        False, False, False, False, True, False
    ]
    assert _distinct(strip_clustering(only).layers[4].kernel) <= 3
    with pytest.raises(ValueError, match="number_of_clusters names layers that model .* does not have: \\['nope'\\]"):
        cluster_weights(model, {"nope": 4})
    with pytest.raises(ValueError, match=f"number_of_clusters\\['{dense}'\\]=1"):
        cluster_weights(model, {dense: 1})


# --- training and strip -----------------------------------------------------


def test_clustered_training_keeps_accuracy_and_strip_leaves_k_values(digits, cnn_weights):
    (x, y), (x_test, y_test) = digits
    model = _trained_cnn(cnn_weights)
    float_accuracy = accuracy(model, x_test, y_test)
    original_kernel = keras.ops.convert_to_numpy(model.layers[0].kernel).copy()

    clustered = compile_for_digits(cluster_weights(model, 8), learning_rate=1e-3)
    assert [type(l).__name__ for l in clustered.layers] == [
        "ClusterWeights", "ClusterWeights", "MaxPooling2D", "Flatten",
        "ClusterWeights", "ClusterWeights",
    ]
    # Wrapping copies: the input model is untouched.
    np.testing.assert_array_equal(model.layers[0].kernel, original_kernel)

    wrapper = clustered.layers[0]
    centroids_before = keras.ops.convert_to_numpy(wrapper.centroids_0).copy()
    clustered.fit(x, y, epochs=1, batch_size=64, verbose=0)
    assert not np.allclose(keras.ops.convert_to_numpy(wrapper.centroids_0), centroids_before)
    clustered_accuracy = accuracy(clustered, x_test, y_test)
    assert clustered_accuracy >= float_accuracy - 0.03

    stripped = strip_clustering(clustered)
    assert not any(isinstance(l, ClusterWeights) for l in stripped.layers)
    for layer in (stripped.layers[0], stripped.layers[1], stripped.layers[4], stripped.layers[5]):
        assert 2 <= _distinct(layer.kernel) <= 8
    # The forward pass during training was the clustered one: same predictions.
    np.testing.assert_allclose(
        stripped.predict(x_test[:64], verbose=0),
        clustered.predict(x_test[:64], verbose=0),
        atol=1e-5,
    )


def test_gradients_reach_the_centroids_and_indices_follow_the_weights():
    dense = keras.layers.Dense(4, use_bias=False)
    dense.build((None, 6))
    wrapper = ClusterWeights(dense, 3, cluster_centroids_init="linear")
    x = keras.ops.ones((2, 6))
    wrapper(x)
    with tf.GradientTape() as tape:
        loss = keras.ops.sum(wrapper(x, training=True) ** 2)
    grads = tape.gradient(loss, [wrapper.centroids_0, dense.kernel])
    assert grads[0] is not None and float(tf.reduce_sum(tf.abs(tf.convert_to_tensor(grads[0])))) > 0
    assert grads[1] is not None  # straight through to the float weight
    # Move one weight close to another centroid: the next training call re-assigns it.
    centroids = keras.ops.convert_to_numpy(wrapper.centroids_0)
    kernel = keras.ops.convert_to_numpy(dense.kernel)
    kernel[0, 0] = centroids[2]
    dense.kernel.assign(kernel)
    wrapper(x, training=True)
    assert int(keras.ops.convert_to_numpy(wrapper.cluster_indices_0)[0, 0]) == 2


def test_preserve_sparsity_keeps_zeros_out_of_the_clusters(digits, cnn_weights):
    (x, y), _ = digits
    model = _trained_cnn(cnn_weights)
    dense = model.layers[4]
    kernel = keras.ops.convert_to_numpy(dense.kernel)
    zeros = np.abs(kernel) < np.quantile(np.abs(kernel), 0.8)
    dense.kernel.assign(np.where(zeros, 0.0, kernel))

    clustered = compile_for_digits(cluster_weights(model, 4, preserve_sparsity=True))
    clustered.fit(x[:640], y[:640], epochs=1, batch_size=64, verbose=0)
    stripped = strip_clustering(clustered)
    new_kernel = keras.ops.convert_to_numpy(stripped.layers[4].kernel)
    assert np.all(new_kernel[zeros] == 0)
    assert np.all(new_kernel[~zeros] != 0)
    # 4 clusters of non-zero weights, zero on top.
    assert np.unique(new_kernel[~zeros]).size == 4
    assert np.unique(new_kernel).size == 5

    # Without preserve_sparsity the zeros are just weights: they take one of
    # the 4 clusters, leaving at most 3 for the others.
    plain = keras.ops.convert_to_numpy(strip_clustering(cluster_weights(model, 4)).layers[4].kernel)
    assert np.unique(plain).size <= 4
    assert np.unique(plain[plain != 0]).size <= 3


def test_functional_nested_and_subclassed_models(digits):
    (x, y), _ = digits
    block = make_mobile_block()
    inner = keras.Sequential([keras.Input((10,)), keras.layers.Dense(10)], name="head")
    model = keras.Model(block.inputs, inner(block.outputs[0]))
    clustered = cluster_weights(model, 4)
    wrapped = [l.layer.name for l in clustered._flatten_layers() if isinstance(l, ClusterWeights)]
    assert len(wrapped) == 6  # 3 Conv2D, DepthwiseConv2D, Dense, nested Dense
    stripped = strip_clustering(clustered)
    kernels = [
        l.kernel for l in stripped._flatten_layers()
        if isinstance(l, (keras.layers.Conv2D, keras.layers.Dense, keras.layers.DepthwiseConv2D))
    ]
    assert len(kernels) == 6 and all(_distinct(k) <= 4 for k in kernels)
    np.testing.assert_allclose(
        stripped.predict(x[:16], verbose=0), clustered.predict(x[:16], verbose=0), atol=1e-5
    )

    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.flat = keras.layers.Flatten()
            self.hidden = keras.layers.Dense(16, activation="relu")
            self.out = keras.layers.Dense(10)

        def call(self, inputs):
            return self.out(self.hidden(self.flat(inputs)))

    net = Net()
    net(x[:2])
    clustered_net = cluster_weights(net, 3)
    assert isinstance(clustered_net.hidden, ClusterWeights)
    # Rewritten in place and trainable straight away (centroids built eagerly).
    compile_for_digits(clustered_net).fit(x[:64], y[:64], epochs=1, batch_size=32, verbose=0)
    strip_clustering(clustered_net)
    assert _distinct(clustered_net.hidden.kernel) <= 3


def test_layers_lists_and_rnn_kernels():
    embedding = keras.layers.Embedding(50, 8)
    lstm = keras.layers.LSTM(6)
    model = keras.Sequential([keras.Input((5,), dtype="int32"), embedding, lstm])
    # A layer given directly (alone or in a list) must be clusterable.
    with pytest.raises(ValueError, match="Layer 'flat' of type Flatten is not supported by clustering"):
        cluster_weights([embedding, lstm, keras.layers.Flatten(name="flat")], 4)
    layers = cluster_weights([embedding, lstm], 4)
    assert isinstance(layers[0], ClusterWeights) and isinstance(layers[1], ClusterWeights)
    clustered = keras.Sequential([keras.Input((5,), dtype="int32"), layers[0], layers[1]])
    tokens = np.arange(10, dtype="int32").reshape(2, 5)
    out = clustered(tokens)
    stripped = strip_clustering(clustered)
    np.testing.assert_allclose(stripped(tokens), out, atol=1e-5)
    new_embedding, new_lstm = stripped.layers
    cell = new_lstm.cell
    for variable in (new_embedding.embeddings, cell.kernel, cell.recurrent_kernel):
        assert _distinct(variable) <= 4
    assert _distinct(model.layers[1].cell.kernel) > 4  # the original is untouched


def test_save_and_reload_mid_training_then_resume(digits, cnn_weights, tmp_path):
    (x, y), (x_test, _) = digits
    model = _trained_cnn(cnn_weights)
    clustered = compile_for_digits(cluster_weights(model, 6, preserve_sparsity=True))
    clustered.fit(x[:512], y[:512], epochs=1, batch_size=64, verbose=0)
    path = tmp_path / "clustered.keras"
    clustered.save(path)

    loaded = keras.saving.load_model(path)  # no custom_objects
    assert isinstance(loaded.layers[0], ClusterWeights)
    assert loaded.layers[0].number_of_clusters == 6 and loaded.layers[0].preserve_sparsity
    np.testing.assert_allclose(
        loaded.predict(x_test[:32], verbose=0), clustered.predict(x_test[:32], verbose=0), atol=1e-5
    )
    for a, b in zip(loaded.layers[4].weights, clustered.layers[4].weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    assert int(loaded.optimizer.iterations) == int(clustered.optimizer.iterations) == 8

    loaded.fit(x[:512], y[:512], epochs=1, batch_size=64, verbose=0)
    assert int(loaded.optimizer.iterations) == 16
    stripped = strip_clustering(loaded)
    assert all(_distinct(l.kernel) <= 7 for l in stripped.layers if hasattr(l, "kernel"))


def test_mirrored_strategy(digits, cnn_weights, mirrored_strategy):
    (x, y), (x_test, y_test) = digits
    strategy = mirrored_strategy
    model = _trained_cnn(cnn_weights)
    with strategy.scope():
        clustered = compile_for_digits(cluster_weights(model, 8), learning_rate=1e-3)
    before = keras.ops.convert_to_numpy(clustered.layers[4].centroids_0).copy()
    clustered.fit(x[:640], y[:640], epochs=1, batch_size=64, verbose=0)
    assert not np.allclose(keras.ops.convert_to_numpy(clustered.layers[4].centroids_0), before)
    assert accuracy(clustered, x_test, y_test) > 0.8
    stripped = strip_clustering(clustered)
    assert all(_distinct(l.kernel) <= 8 for l in stripped.layers if hasattr(l, "kernel"))


def test_clusters_and_zeros_survive_qat_into_the_int8_file(digits):
    from tfcompress import lite, quantization

    from tfcompress import summarize

    (x, y), (x_test, _) = digits
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(10),
        ]
    )
    hidden = model.layers[1]
    kernel = keras.ops.convert_to_numpy(hidden.kernel)
    kernel[np.abs(kernel) < np.quantile(np.abs(kernel), 0.6)] = 0.0
    hidden.kernel.assign(kernel)

    clustered = compile_for_digits(cluster_weights(model, 4, preserve_sparsity=True))
    clustered.fit(x[:256], y[:256], epochs=1, batch_size=64, verbose=0)
    qat = compile_for_digits(
        quantization.quantize_model(strip_clustering(clustered), preserve_sparsity=True)
    )
    qat.fit(x[:256], y[:256], epochs=1, batch_size=64, verbose=0)
    flatbuffer = lite.convert(qat, quantization="int8")

    rows = [row for row in summarize(flatbuffer).rows if row.dtype == "int8"]
    (hidden_row,) = [row for row in rows if row.params == 64 * 32]
    assert hidden_row.sparsity == pytest.approx(0.6, abs=0.002)
    assert hidden_row.distinct <= 5  # 4 clusters + zero
    (logits_row,) = [row for row in rows if row.params == 32 * 10]
    assert logits_row.distinct <= 4
    assert lite.predict(flatbuffer, x_test[:8]).shape == (8, 10)

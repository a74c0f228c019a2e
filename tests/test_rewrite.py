"""The graph rebuild (`_graph`) and the in-place rewrite of subclassed models (`_inplace`)."""

import keras
import numpy as np
import pytest
from keras import layers as L
from keras import ops

import tfcompress
from tfcompress import _graph, pruning
from tfcompress.clustering import ClusterWeights
from tfcompress.pruning import PruneLowMagnitude


def _ops_model():
    """Two inputs, Keras operations of every kind, a shared layer, a nested model, dict output."""
    a = keras.Input((8, 4), name="a")
    b = keras.Input((8, 4), name="b")
    shared = L.Dense(4, name="shared")
    inner = keras.Sequential([keras.Input((4,)), L.Dense(3, name="inner_dense")], name="inner")
    x = shared(a) + 2.0
    y = shared(b) * x
    hard_swish = x * ops.relu6(x + 3.0) / 6.0
    z = ops.concatenate([ops.reshape(hard_swish, (-1, 32)), y[:, 0], ops.mean(y, axis=1)], axis=-1)
    return keras.Model({"a": a, "b": b}, {"logits": L.Dense(2, name="head")(z), "inner": inner(y[:, 1])})


def test_rebuild_keeps_operations_shared_layers_nested_models_and_structure():
    model = _ops_model()
    rng = np.random.default_rng(0)
    x = {"a": rng.normal(size=(3, 8, 4)).astype("float32"), "b": rng.normal(size=(3, 8, 4)).astype("float32")}
    copy = _graph.copy(model)
    out, expected = copy(x), model(x)
    assert sorted(out) == ["inner", "logits"]
    for key in expected:
        np.testing.assert_allclose(out[key], expected[key], atol=1e-6)
    assert copy.get_layer("shared") is not model.get_layer("shared")  # own layers
    assert copy.get_layer("inner").get_layer("inner_dense").kernel is not None
    # The shared layer is replaced once and called at both of its nodes.
    seen = []
    _graph.rebuild(model, replace=lambda layer: seen.append(layer.name))
    assert sorted(seen) == ["head", "inner_dense", "shared"]


def test_insert_after_any_tensor_including_operation_outputs():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, L.Dense(2)(inputs * 3.0))
    doubled = _graph.rebuild(
        model, insert_after=lambda t: L.Rescaling(2.0) if t.shape == (None, 4) else None
    )
    x = np.ones((1, 4), "float32")
    # Inserted after the input and after `inputs * 3.0`: 2 * (2 * x * 3).
    np.testing.assert_allclose(doubled(x), model(4 * x), atol=1e-5)


def test_pruning_and_clustering_pass_keras_operations_through():
    model = _ops_model()
    pruned = tfcompress.prune_low_magnitude(model, pruning.ConstantSparsity(0.5, 0, frequency=1))
    assert {l.layer.name for l in pruned._flatten_layers() if isinstance(l, PruneLowMagnitude)} == {
        "shared", "head", "inner_dense"
    }
    clustered = tfcompress.cluster_weights(model, 4)
    assert sum(isinstance(l, ClusterWeights) for l in clustered._flatten_layers()) == 3
    assert isinstance(tfcompress.strip_pruning(pruned).get_layer("inner"), keras.Sequential)


@keras.saving.register_keras_serializable(package="tfcompress_tests")
class Block(L.Layer):
    """A subclassed block holding layers (as keras_hub's TransformerEncoder)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._self_attention_layer = L.Dense(8)  # a user attribute may start with _self_
        self.out = L.Dense(8)

    def call(self, x):
        return self.out(self._self_attention_layer(x))


def test_layers_inside_a_subclassed_block_of_a_functional_model_are_pruned():
    inputs = keras.Input((8,))
    model = keras.Model(inputs, Block(name="block")(inputs))
    pruned = tfcompress.prune_low_magnitude(model, pruning.ConstantSparsity(0.5, 0, frequency=1))
    block = pruned.get_layer("block")
    assert isinstance(block._self_attention_layer, PruneLowMagnitude)
    assert isinstance(block.out, PruneLowMagnitude)
    assert isinstance(model.get_layer("block").out, L.Dense)  # the input model is untouched


@keras.saving.register_keras_serializable(package="tfcompress_tests")
class NoTrainingArgument(keras.Model):
    """A subclassed model whose `call` has no `training` argument."""

    def __init__(self, units=16, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.flatten = L.Flatten()
        self.hidden = [L.Dense(units, activation="relu")]
        self.out = L.Dense(10)

    def call(self, x):
        return self.out(self.hidden[0](self.flatten(x)))

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def test_subclassed_model_without_training_argument_is_pruned_by_fit_and_reloads(digits, tmp_path):
    (x, y), _ = digits
    model = NoTrainingArgument()
    model(x[:2])
    pruned = tfcompress.prune_low_magnitude(model, pruning.ConstantSparsity(0.6, 0, frequency=1))
    assert pruned is model and isinstance(pruned, NoTrainingArgument)
    pruned.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    pruned.fit(x[:64], y[:64], batch_size=32, epochs=1, verbose=0)
    assert pruned.hidden[0].sparsity() == pytest.approx(0.6, abs=0.01)  # fit passed training=True
    assert int(pruned.out.pruning_step.numpy()) == 1

    path = str(tmp_path / "pruned.keras")
    pruned.save(path)
    reloaded = keras.saving.load_model(path)
    assert type(reloaded).__name__ == "NoTrainingArgument"
    assert isinstance(reloaded.hidden[0], PruneLowMagnitude)
    assert int(reloaded.out.pruning_step.numpy()) == 1
    np.testing.assert_allclose(reloaded.predict(x[:8], verbose=0), pruned.predict(x[:8], verbose=0), atol=1e-6)
    reloaded.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    reloaded.fit(x[:64], y[:64], batch_size=32, epochs=1, verbose=0)
    assert int(reloaded.out.pruning_step.numpy()) == 3  # resumes

    stripped = tfcompress.strip_pruning(reloaded)
    assert type(stripped) is NoTrainingArgument  # its own class again
    assert isinstance(stripped.hidden[0], L.Dense)


def test_subclassed_model_without_training_argument_is_clustered_by_fit(digits):
    (x, y), _ = digits
    model = NoTrainingArgument()
    model(x[:2])
    clustered = tfcompress.cluster_weights(model, 4)
    before = clustered.hidden[0].cluster_indices_0.numpy().copy()
    clustered.compile(keras.optimizers.Adam(0.05), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    clustered.fit(x[:64], y[:64], batch_size=32, epochs=1, verbose=0)
    # Training calls re-assign the cluster indices: they saw training=True.
    assert np.any(clustered.hidden[0].cluster_indices_0.numpy() != before)

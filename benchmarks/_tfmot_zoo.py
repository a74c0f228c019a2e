"""The tfmot side of `benchmarks/zoo.py`, run in its own process.

tensorflow-model-optimization (tfmot) only accepts `tf_keras` models, and
importing it switches the process to legacy Keras, so `zoo.py` runs this
script in a subprocess (the tfmot virtualenv's Python, `TF_USE_LEGACY_KERAS=1`)
and never imports tfmot itself. Do not import tfcompress here (Keras 3).

    TF_USE_LEGACY_KERAS=1 python benchmarks/_tfmot_zoo.py WORKDIR

`WORKDIR/config.json` lists the rows (`tf_keras.applications` names with their
input size, or "vit" / "keyword_spotter", built here the way
`tests/zoo_models.py` builds them in Keras 3) and `WORKDIR/<row>.npz` holds
each row's inputs. For each row and technique this script does what the
tfcompress side does (wrap, two training steps on random targets, strip,
convert) and records whether it worked, the error if not, and for QAT the
int8 `.tflite` and the Keras QAT model's outputs, in `tfmot_zoo.json`;
`zoo.py` measures the `.tflite` files itself, so both sides are measured alike.
"""

import json
import os
import sys
import traceback
import warnings

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_model_optimization as tfmot  # noqa: E402
import tf_keras as keras  # noqa: E402

tf.get_logger().setLevel("ERROR")
warnings.filterwarnings("ignore")
L = keras.layers


def log(message):
    print(f"[tfmot] {message}", file=sys.stderr, flush=True)


def build(row):
    keras.utils.set_random_seed(0)
    if row["name"] == "vit":
        return vit()
    if row["name"] == "keyword_spotter":
        return keyword_spotter()
    size = row["size"]
    return getattr(keras.applications, row["name"])(
        input_shape=(size, size, 3), weights=None, classes=10, classifier_activation=None
    )


def vit(dim=16, heads=2, mlp=32):
    """tests/zoo_models.vit(depth=1, dim=16, mlp=32) in tf_keras.

    Without the position embedding: tf_keras has no layer for `Embedding(arange)`,
    and a custom one would be the first thing tfmot refuses, hiding the rest.
    """
    image = keras.Input((8, 8, 1))
    x = L.Reshape((4, 2, 4, 2))(image)
    x = L.Permute((1, 3, 2, 4))(x)
    x = L.Reshape((16, 4))(x)
    x = L.Dense(dim)(x)
    h = L.LayerNormalization(epsilon=1e-6)(x)
    h = L.MultiHeadAttention(heads, dim // heads)(h, h)
    x = L.Add()([x, h])
    h = L.LayerNormalization(epsilon=1e-6)(x)
    h = L.Dense(mlp, activation="gelu")(h)
    x = L.Add()([x, L.Dense(dim)(h)])
    x = L.LayerNormalization(epsilon=1e-6)(x)
    x = L.GlobalAveragePooling1D()(x)
    return keras.Model(image, L.Dense(10)(x))


def keyword_spotter():
    x = inputs = keras.Input((49, 10))
    for filters in (16, 32):
        x = L.Conv1D(filters, 3, padding="same")(x)
        x = L.ReLU()(x)
        x = L.BatchNormalization()(x)
    x = L.GlobalAveragePooling1D()(x)
    return keras.Model(inputs, L.Dense(12)(x))


def fit(model, x, callbacks=()):
    """Two training steps of 4 examples on random targets (MSE), as zoo_models._fit."""
    rng = np.random.default_rng(1)
    y = rng.normal(size=(8,) + tuple(model.output.shape[1:])).astype("float32")
    model.compile(keras.optimizers.Adam(1e-4), loss="mse")
    model.fit(x[:8], y, batch_size=4, epochs=1, verbose=0, callbacks=list(callbacks))
    return model


def to_tflite(model, int8):
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if int8:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    return converter.convert()


def prune(model, x):
    schedule = tfmot.sparsity.keras.ConstantSparsity(0.5, begin_step=0, frequency=1)
    pruned = fit(
        tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=schedule), x,
        callbacks=[tfmot.sparsity.keras.UpdatePruningStep()],
    )
    to_tflite(tfmot.sparsity.keras.strip_pruning(pruned), int8=False)


def cluster(model, x):
    clustering = tfmot.clustering.keras
    clustered = fit(clustering.cluster_weights(
        model, number_of_clusters=8,
        cluster_centroids_init=clustering.CentroidInitialization.KMEANS_PLUS_PLUS,
    ), x)
    clustering.strip_clustering(clustered)


def quantize(model, x, row, workdir):
    qat = fit(tfmot.quantization.keras.quantize_model(model), x)
    flatbuffer = to_tflite(qat, int8=True)
    path = os.path.join(workdir, f"{row['name']}_int8.tflite")
    with open(path, "wb") as f:
        f.write(flatbuffer)
    np.save(os.path.join(workdir, f"{row['name']}_keras.npy"), qat.predict(x, verbose=0))
    return path


def main():
    workdir = sys.argv[1]
    with open(os.path.join(workdir, "config.json")) as f:
        rows = json.load(f)["rows"]
    results = {}
    for row in rows:
        x = np.load(os.path.join(workdir, f"{row['name']}.npz"))["x"]
        results[row["name"]] = entry = {}
        for technique in ("prune", "cluster", "qat"):
            log(f"{row['name']}: {technique}")
            try:
                model = build(row)
                if technique == "prune":
                    prune(model, x)
                elif technique == "cluster":
                    cluster(model, x)
                else:
                    entry["int8_file"] = quantize(model, x, row, workdir)
                entry[technique] = "ok"
            except Exception as error:  # the table reports what failed and why
                entry[technique] = f"{type(error).__name__}: {str(error).splitlines()[0][:160]}"
                traceback.print_exc(file=sys.stderr)
            keras.backend.clear_session()
    results["versions"] = {"tensorflow_model_optimization": tfmot.__version__, "tf_keras": keras.__version__}
    with open(os.path.join(workdir, "tfmot_zoo.json"), "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()

"""The tfmot side of `benchmarks/compare.py`, run in its own process.

tensorflow-model-optimization (tfmot) only accepts `tf_keras` models, and
importing it switches the process to legacy Keras, so `compare.py` runs this
script in a subprocess with `TF_USE_LEGACY_KERAS=1` and never imports tfmot
itself. Do not import tfcompress here either (it imports Keras 3).

    TF_USE_LEGACY_KERAS=1 python benchmarks/_tfmot_baseline.py WORKDIR

`WORKDIR` holds what `compare.py` wrote: `config.json` (epochs, batch size,
learning rates, sparsity targets and schedule steps: the demo's recipe),
`data.npz` (the digits split) and `float_weights.npz` (the trained float CNN,
so both sides compress the very same model). This script writes there the
`.tflite` files of each pipeline and `tfmot_results.json` (Keras accuracy of
each stage, median training-step times measured side by side with plain
`fit`, versions); `compare.py` evaluates and times every `.tflite` itself, so
all files are measured alike. The helpers below repeat tfcompress.demo's on
purpose: this process must not import Keras 3.
"""

import json
import os
import sys
import time
import warnings

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_model_optimization as tfmot  # noqa: E402
import tf_keras as keras  # noqa: E402

# tfmot's clustering wrappers make tf_keras warn that the original kernels get
# no gradients (expected: the centroids train instead); keep the log readable.
tf.get_logger().setLevel("ERROR")
warnings.filterwarnings("ignore")


def log(message):
    print(f"[tfmot] {message}", file=sys.stderr, flush=True)


def demo_cnn():
    """The demo CNN, layer for layer the one `compare.py` builds in Keras 3."""
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            layers.Conv2D(32, 3, padding="same", activation="relu", name="conv1"),
            layers.Conv2D(64, 3, padding="same", activation="relu", name="conv2"),
            layers.MaxPooling2D(2, name="pool"),
            layers.Flatten(name="flatten"),
            layers.Dense(256, activation="relu", name="dense"),
            layers.Dense(10, name="logits"),
        ],
        name="digits_cnn",
    )


from _timing import step_time_ratios  # noqa: E402  (benchmarks/ is sys.path[0])


def compiled(model, learning_rate):
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def accuracy(model, x, y):
    return float(np.mean(np.argmax(model.predict(x, verbose=0, batch_size=256), -1) == y))


def polynomial(final_sparsity, cfg):
    """tfcompress.demo.ramp_schedule's steps, from config.json."""
    return tfmot.sparsity.keras.PolynomialDecay(
        initial_sparsity=0.0,
        final_sparsity=final_sparsity,
        begin_step=0,
        end_step=cfg["prune_end_step"],
        frequency=cfg["prune_frequency"],
    )


def to_tflite(model, int8):
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if int8:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    return converter.convert()


def main():
    workdir = sys.argv[1]
    with open(os.path.join(workdir, "config.json")) as f:
        cfg = json.load(f)
    data = np.load(os.path.join(workdir, "data.npz"))
    x, y, x_test, y_test = data["x_train"], data["y_train"], data["x_test"], data["y_test"]
    weights = np.load(os.path.join(workdir, "float_weights.npz"))
    float_weights = [weights[f"w{i}"] for i in range(len(weights.files))]
    batch, epochs, rates = cfg["batch_size"], cfg["epochs"], cfg["learning_rates"]
    keras.utils.set_random_seed(cfg["seed"])
    started = time.time()
    results = {"stages": {}, "files": {}}

    def fresh_float():
        model = demo_cnn()
        model.set_weights(float_weights)
        return model

    def record(stage, model, flatbuffer=None):
        results["stages"][stage] = accuracy(model, x_test, y_test)
        if flatbuffer is not None:
            path = os.path.join(workdir, f"tfmot_{stage}.tflite")
            with open(path, "wb") as f:
                f.write(flatbuffer)
            results["files"][stage] = path
        log(f"{time.time() - started:5.0f}s {stage}: accuracy {results['stages'][stage]:.4f}")

    def fit(model, stage, callbacks=()):
        compiled(model, rates[stage])
        model.fit(
            x, y, epochs=epochs[stage], batch_size=batch, verbose=0, callbacks=list(callbacks)
        )
        return model

    prune_callbacks = [tfmot.sparsity.keras.UpdatePruningStep()]

    def prune(final_sparsity, stage):
        pruned = fit(
            tfmot.sparsity.keras.prune_low_magnitude(
                fresh_float(), pruning_schedule=polynomial(final_sparsity, cfg)
            ),
            "prune",
            prune_callbacks,
        )
        stripped = tfmot.sparsity.keras.strip_pruning(pruned)
        record(stage, compiled(stripped, rates["prune"]))
        return pruned, stripped

    def quantize(model, scheme, stage):
        annotated = tfmot.quantization.keras.quantize_annotate_model(model)
        qat = fit(tfmot.quantization.keras.quantize_apply(annotated, scheme), "qat")
        record(stage, qat, to_tflite(qat, int8=True))
        return qat

    float_model = compiled(fresh_float(), rates["float"])
    record("float", float_model, to_tflite(float_model, int8=False))

    # prune 80% -> strip -> QAT keeping the zeros (prune-preserving scheme).
    combine = tfmot.experimental.combine
    pruned80, stripped80 = prune(cfg["sparsity"]["prune_qat"], "prune80")
    qat80 = quantize(stripped80, combine.Default8BitPrunePreserveQuantizeScheme(), "prune80_qat")

    # prune 90% -> strip -> cluster 16 (k-means++, keep zeros) -> strip ->
    # QAT keeping zeros and clusters.
    _, stripped90 = prune(cfg["sparsity"]["prune_cluster_qat"], "prune90")
    clustering = tfmot.clustering.keras
    clustered = fit(
        clustering.cluster_weights(
            stripped90,
            number_of_clusters=cfg["clusters"],
            cluster_centroids_init=clustering.CentroidInitialization.KMEANS_PLUS_PLUS,
            preserve_sparsity=True,
        ),
        "cluster",
    )
    stripped_clustered = clustering.strip_clustering(clustered)
    record("prune90_cluster", compiled(stripped_clustered, rates["cluster"]))
    pcqat = quantize(
        stripped_clustered,
        combine.Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=True),
        "prune90_cluster_qat",
    )

    # Training-step time of each technique vs plain fit of the same float
    # model, in this process, round-robin. The stage models above are done
    # (converted), so the extra steps change nothing that is reported.
    # compare.py times its own side after this one, so the two never compete:
    # wait for its go-ahead file when it asks for one.
    gate = cfg.get("timing_gate")
    if gate:
        log(f"{time.time() - started:5.0f}s waiting for the timing slot")
        deadline = time.time() + 3600
        while not os.path.exists(gate) and time.time() < deadline:
            time.sleep(0.5)
    log(f"{time.time() - started:5.0f}s timing training steps")
    plain = compiled(fresh_float(), rates["float"])
    qat = compiled(tfmot.quantization.keras.quantize_model(fresh_float()), rates["qat"])
    seconds, ratios = step_time_ratios(
        {
            "plain": (plain, []),
            "prune": (pruned80, prune_callbacks),
            "qat": (qat, []),
            "qat_prune_preserve": (qat80, []),
            "cluster": (clustered, []),
            "qat_cluster_prune_preserve": (pcqat, []),
        },
        x, y, cfg["timing_steps"], batch,
    )
    results["step_seconds"] = seconds
    results["step_ratio"] = ratios
    results["versions"] = {
        "tensorflow": tf.__version__,
        "tf_keras": keras.__version__,
        "tensorflow_model_optimization": tfmot.__version__,
    }
    results["seconds"] = time.time() - started
    with open(os.path.join(workdir, "tfmot_results.json"), "w") as f:
        json.dump(results, f, indent=1)
    log(f"{results['seconds']:5.0f}s done")


if __name__ == "__main__":
    main()

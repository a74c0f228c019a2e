"""One run of the mobile-block pruning comparison, for one tool and one seed.

    python benchmarks/_mobile_block_pruning.py --tool tfcompress --seed 0
    python benchmarks/_mobile_block_pruning.py --tool tfmot --seed 0   # bench extra; TF_USE_LEGACY_KERAS=1

Standalone on purpose (`pruning_parity.py` runs it in a subprocess per tool):
the tfmot side must not import Keras 3 or tfcompress. Same model, data split,
training and schedule for both tools; prints
"<tool> seed <s>: float <acc> pruned <acc>".
"""
import argparse
import os

parser = argparse.ArgumentParser()
parser.add_argument("--tool", choices=("tfcompress", "tfmot"), required=True)
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
if args.tool == "tfmot":
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import tf_keras as keras
    import tensorflow_model_optimization as tfmot
    api = tfmot.sparsity.keras
else:
    import keras
    import tfcompress as api

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

keras.utils.set_random_seed(args.seed)
d = load_digits()
x = (d.images / 16.0).astype("float32")[..., None]
y = d.target.astype("int32")
x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.3, random_state=0, stratify=y)
L = keras.layers


def mobile_block():
    inp = keras.Input((8, 8, 1))
    h = L.Conv2D(32, 3, padding="same", use_bias=False)(inp)
    h = L.ReLU(6.0)(L.BatchNormalization()(h))
    b = L.DepthwiseConv2D(3, padding="same", use_bias=False)(h)
    b = L.ReLU(6.0)(L.BatchNormalization()(b))
    b = L.BatchNormalization()(L.Conv2D(32, 1, use_bias=False)(b))
    h = L.Add()([h, b])
    h = L.Conv2D(64, 3, strides=2, padding="same", activation="relu")(h)
    h = L.Dense(128, activation="relu")(L.GlobalAveragePooling2D()(h))
    return keras.Model(inp, L.Dense(10)(h))


def compiled(model):
    model.compile(keras.optimizers.Adam(1e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    return model


base = compiled(mobile_block())
base.fit(x_train, y_train, epochs=25, batch_size=32, verbose=0)
float_acc = base.evaluate(x_test, y_test, verbose=0)[-1]
steps_per_epoch = int(np.ceil(len(x_train) / 32))
schedule = api.PolynomialDecay(0.0, 0.8, 0, steps_per_epoch * 6, frequency=10)
pruned = compiled(api.prune_low_magnitude(base, pruning_schedule=schedule))
pruned.fit(x_train, y_train, epochs=10, batch_size=32, verbose=0, callbacks=[api.UpdatePruningStep()])
stripped = compiled(api.strip_pruning(pruned))
print(f"{args.tool} seed {args.seed}: float {float_acc:.3f} pruned {stripped.evaluate(x_test, y_test, verbose=0)[-1]:.3f}")

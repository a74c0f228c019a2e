"""The model zoo of `tests/test_zoo.py` and `benchmarks/zoo.py`, and how each row is checked.

Every `keras.applications` architecture (the smallest member of each family,
`weights=None`, small inputs, logits out) and hand-built models: a ViT, a
BERT-style encoder with a padding mask, a Conv1D keyword spotter, a
MobileNetV3-style block of Keras operations, multi-input, multi-output, LSTM
and GRU models. The data is random, so only agreement figures mean anything
(Keras vs TFLite cosine, which tensors are int8), not accuracy.

Each check runs one technique the way a user would: wrap, `fit` a few steps,
strip or convert, and returns what it measured; `tests/test_zoo.py` asserts on
it and `benchmarks/zoo.py` tabulates it.
"""

import dataclasses
import importlib.util

import keras
import numpy as np
from keras import layers as L
from keras import ops

import tfcompress
from tfcompress import lite, pruning

# What the zoo expects of every row.
MIN_COSINE = 0.99
SPARSITY = 0.5
CLUSTERS = 8
# Ops that only convert at the model's edges.
EDGE_OPS = ("QUANTIZE", "DEQUANTIZE")


@dataclasses.dataclass
class Row:
    """One zoo model.

    Attributes:
        name: Row name.
        build: `() -> keras.Model` (fresh weights each call, same seed).
        data: `(rng, n) -> inputs` (an array, or a list for several inputs).
        float_ops: TFLite ops the int8 model is allowed to keep float, with why.
        fast: In the subset `make test` always runs.
        qat_steps: Training steps of the QAT check (batches of 4).
    """

    name: str
    build: object
    data: object
    float_ops: dict = dataclasses.field(default_factory=dict)
    fast: bool = False
    qat_steps: int = 2

    def examples(self, seed=0):
        """The row's data: 16 examples, or enough for its QAT steps."""
        return self.data(np.random.default_rng(seed), max(16, 4 * self.qat_steps))


def images(size, scale=1.0):
    return lambda rng, n: (rng.uniform(0, scale, (n, size, size, 3))).astype("float32")


def application(name, size=32, scale=1.0, qat_steps=2, **kwargs):
    def build():
        keras.utils.set_random_seed(0)
        return getattr(keras.applications, name)(
            input_shape=(size, size, 3), weights=None, classes=10,
            classifier_activation=None, **kwargs
        )

    return Row(name, build, images(size, scale), qat_steps=qat_steps)


T, D = 16, 32


def _perturb(model, seed=0):
    """Non-trivial gamma / beta / biases, as trained weights have (init has 1, 0, 0)."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        if any(part in w.path for part in ("gamma", "beta", "bias")):
            w.assign(w.numpy() + rng.normal(0, 0.1, w.shape).astype("float32"))
    return model


def vit(patch=2, dim=32, heads=2, depth=2, mlp=64, classes=10, name="vit"):
    """A ViT on 8x8x1 images: patches, position embedding, pre-LN encoder blocks."""
    keras.utils.set_random_seed(0)
    n = (8 // patch) ** 2
    image = keras.Input((8, 8, 1), name="image")
    x = L.Reshape((8 // patch, patch, 8 // patch, patch))(image)
    x = ops.transpose(x, (0, 1, 3, 2, 4))
    x = ops.reshape(x, (-1, n, patch * patch))
    x = L.Dense(dim, name="patch_embedding")(x)
    x = x + L.Embedding(n, dim, name="position_embedding")(ops.arange(n))
    for i in range(depth):
        h = L.LayerNormalization(epsilon=1e-6, name=f"norm1_{i}")(x)
        h = L.MultiHeadAttention(heads, dim // heads, name=f"attention_{i}")(h, h)
        x = x + h
        h = L.LayerNormalization(epsilon=1e-6, name=f"norm2_{i}")(x)
        h = L.Dense(mlp, activation="gelu", name=f"mlp1_{i}")(h)
        x = x + L.Dense(dim, name=f"mlp2_{i}")(h)
    x = L.LayerNormalization(epsilon=1e-6, name="norm")(x)
    x = ops.mean(x, axis=1)
    return keras.Model(image, L.Dense(classes, name="head")(x), name=name)


def bert_style():
    """Token + position embeddings, post-LN encoder with a padding mask, [CLS] head."""
    keras.utils.set_random_seed(0)
    tokens = keras.Input((T,), dtype="int32", name="tokens")
    padding = keras.Input((T,), dtype="int32", name="padding_mask")
    x = L.Embedding(100, D)(tokens) + L.Embedding(T, D)(ops.arange(T))
    x = L.LayerNormalization()(x)
    mask = ops.greater(ops.expand_dims(padding, 1), 0)
    h = L.MultiHeadAttention(2, D // 2)(x, x, attention_mask=mask)
    x = L.LayerNormalization()(x + h)
    h = L.Dense(2 * D, activation="gelu")(x)
    x = L.LayerNormalization()(x + L.Dense(D)(h))
    pooled = L.Dense(D, activation="tanh")(x[:, 0, :])
    return _perturb(keras.Model([tokens, padding], L.Dense(4)(pooled), name="bert_style"))


def bert_data(rng, n):
    lengths = rng.integers(4, T + 1, n)
    return [
        rng.integers(0, 100, (n, T)).astype("int32"),
        (np.arange(T)[None] < lengths[:, None]).astype("int32"),
    ]


def keras_hub_bert():
    """keras_hub's BertBackbone from a tiny config (no preset, no download)."""
    import keras_hub

    keras.utils.set_random_seed(0)
    model = keras_hub.models.BertBackbone(
        vocabulary_size=100, num_layers=2, num_heads=2, hidden_dim=32, intermediate_dim=64,
        max_sequence_length=T,
    )
    return _perturb(model)


def keras_hub_bert_data(rng, n):
    tokens, padding = bert_data(rng, n)
    segments = rng.integers(0, 2, (n, T)).astype("int32")
    return {"token_ids": tokens, "segment_ids": segments, "padding_mask": padding}


def keyword_spotter():
    """Conv1D keyword spotter: Conv -> ReLU -> BatchNormalization (not foldable)."""
    keras.utils.set_random_seed(0)
    x = inputs = keras.Input((49, 10), name="mfcc")
    for filters in (16, 32):
        x = L.Conv1D(filters, 3, padding="same")(x)
        x = L.ReLU()(x)
        x = L.BatchNormalization()(x)
    x = L.GlobalAveragePooling1D()(x)
    return _perturb(keras.Model(inputs, L.Dense(12)(x), name="keyword_spotter"))


def op_block():
    """MobileNetV3-style Keras operations: hard-swish, x + 3.0, squeeze-excite, mean."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3), name="image")
    x = L.Conv2D(16, 3, strides=2, padding="same")(inputs)
    x = L.BatchNormalization()(x)
    x = x * L.ReLU(6.0)(x + 3.0) * (1.0 / 6.0)
    y = L.DepthwiseConv2D(3, padding="same")(x)
    y = L.ReLU()(y)
    y = L.BatchNormalization()(y)
    s = ops.mean(y, axis=(1, 2), keepdims=True)
    s = L.Conv2D(16, 1, activation="relu")(s)
    s = L.Conv2D(16, 1)(s)
    y = y * (L.ReLU(6.0)(s + 3.0) * (1.0 / 6.0))
    x = x + y
    x = ops.reshape(x, (-1, 8 * 8 * 16))
    return _perturb(keras.Model(inputs, L.Dense(10)(x[:, ::2]), name="op_block"))


def multi_input():
    """Two images, two conv towers, concatenated."""
    keras.utils.set_random_seed(0)
    a = keras.Input((16, 16, 3), name="left")
    b = keras.Input((16, 16, 3), name="right")
    fa = L.GlobalAveragePooling2D()(L.Conv2D(8, 3, activation="relu")(a))
    fb = L.GlobalAveragePooling2D()(L.Conv2D(8, 3, activation="relu")(b))
    return keras.Model([a, b], L.Dense(4)(L.Concatenate()([fa, fb])), name="multi_input")


def multi_output():
    """One trunk, a classifier head and a regression head."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3), name="image")
    x = L.Conv2D(8, 3, activation="relu")(inputs)
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, [L.Dense(5, name="classes")(x), L.Dense(2, name="box")(x)],
                       name="multi_output")


def recurrent(kind):
    def build():
        keras.utils.set_random_seed(0)
        inputs = keras.Input((T, 8), name="sequence")
        x = L.Dense(16)(inputs)
        x = getattr(L, kind)(16)(x)
        return keras.Model(inputs, L.Dense(4)(x), name=kind.lower())

    return build


def sequences(rng, n):
    return rng.normal(size=(n, T, 8)).astype("float32")


def zoo():
    """All rows: `keras.applications` (one per family), then the hand-built ones."""
    rows = [
        application("ConvNeXtTiny", scale=255.0),
        application("DenseNet121"),
        application("EfficientNetB0", scale=255.0),
        application("EfficientNetV2B0", scale=255.0),
        application("InceptionResNetV2", size=75),
        application("InceptionV3", size=75),
        # Random weights: after 2 QAT steps MobileNet's outputs are still near
        # zero (cosine 0.44); after 12 the int8 file agrees with Keras.
        application("MobileNet", qat_steps=12),
        application("MobileNetV2"),
        # Its QAT outputs stay ~1e-8 after 2 steps (the ranges of its many hard-swish /
        # squeeze-excite operations start at zero), so the cosine would mean nothing.
        application("MobileNetV3Small", scale=255.0, qat_steps=12),
        application("MobileNetV3Large", scale=255.0, qat_steps=12),
        application("NASNetMobile"),
        application("ResNet50"),
        application("ResNet50V2"),
        application("VGG16"),
        application("Xception", size=71),
        Row("vit", lambda: _perturb(vit(depth=1, dim=16, mlp=32)),
            lambda rng, n: rng.normal(size=(n, 8, 8, 1)).astype("float32"), fast=True),
        Row("bert_style", bert_style, bert_data),
        Row("keyword_spotter", keyword_spotter,
            lambda rng, n: rng.normal(size=(n, 49, 10)).astype("float32"), fast=True),
        Row("op_block", op_block, images(16), fast=True),
        Row("multi_input", multi_input, lambda rng, n: [images(16)(rng, n), images(16)(rng, n)]),
        Row("multi_output", multi_output, images(16)),
        Row("keras_hub_bert", keras_hub_bert, keras_hub_bert_data),
        Row("lstm", recurrent("LSTM"), sequences, float_ops={"*": "QAT leaves LSTM float"}),
        Row("gru", recurrent("GRU"), sequences, float_ops={"*": "QAT leaves GRU float"}),
    ]
    if importlib.util.find_spec("keras_hub") is None:  # not a dependency of tfcompress
        rows = [row for row in rows if row.name != "keras_hub_bert"]
    return rows


# -- the checks ---------------------------------------------------------------


def _fit(model, x, steps=2, batch=4, learning_rate=1e-4):
    """A few training steps on random targets shaped like the outputs (MSE on each)."""
    rng = np.random.default_rng(1)
    n = steps * batch
    xs = keras.tree.map_structure(lambda a: a[:n], x)
    # Shapes from a call: a keras_hub backbone's outputs have a free sequence axis.
    ys = keras.tree.map_structure(
        lambda o: rng.normal(size=tuple(o.shape)).astype("float32"), model(xs, training=False)
    )
    model.compile(keras.optimizers.Adam(learning_rate), loss="mse")
    model.fit(xs, ys, batch_size=batch, epochs=1, verbose=0)
    return model


def cosine(a, b):
    """Cosine similarity of two outputs; of several outputs (lists, dicts), the lowest."""
    pairs = zip(keras.tree.flatten(a), keras.tree.flatten(b), strict=True)
    return min(_cosine(np.ravel(u), np.ravel(v)) for u, v in pairs)


def _cosine(a, b):
    a, b = a.astype("float64"), b.astype("float64")
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def compressed_kernels(model, skip=()):
    """The kernels pruning and clustering compress, as numpy arrays.

    `skip`: layer types left out (pruning leaves depthwise kernels dense).
    """
    from tfcompress import _layers

    return [
        keras.ops.convert_to_numpy(w)
        for layer in model._flatten_layers() if not isinstance(layer, skip)
        for w in (_layers.compressible_weights(layer, "get_prunable_weights") or [])
    ]


def prune_and_strip(row, x):
    """prune -> fit -> strip: the stripped model."""
    pruned = tfcompress.prune_low_magnitude(
        row.build(), pruning.ConstantSparsity(SPARSITY, begin_step=0, frequency=1)
    )
    return tfcompress.strip_pruning(_fit(pruned, x))


def check_pruning(row, x):
    """prune -> fit -> strip -> float .tflite: {sparsity, cosine}."""
    stripped = prune_and_strip(row, x)
    kernels = compressed_kernels(stripped, skip=tfcompress.PruneLowMagnitude.named_only)
    zeros = sum(int(np.sum(k == 0)) for k in kernels) / sum(k.size for k in kernels)
    flatbuffer = lite.convert(stripped)
    cos = cosine(stripped.predict(x, verbose=0), lite.predict(flatbuffer, x))
    return {"sparsity": zeros, "cosine": cos}


def check_clustering(row, x):
    """cluster -> fit -> strip: {max distinct values per kernel, cosine of Keras before/after strip}."""
    clustered = _fit(tfcompress.cluster_weights(row.build(), CLUSTERS), x)
    before = clustered.predict(x, verbose=0)
    stripped = tfcompress.strip_clustering(clustered)
    distinct = max(np.unique(k).size for k in compressed_kernels(stripped))
    return {"distinct": distinct, "cosine": cosine(before, stripped.predict(x, verbose=0))}


def quantize_and_fit(row, x, steps=2):
    """QAT -> fit: the QAT model."""
    return _fit(tfcompress.quantize_model(row.build()), x, steps=steps)


def check_qat(row, x):
    """QAT -> fit -> int8 .tflite: {float ops, non-int8 tensors, cosine, flatbuffer}."""
    qat = quantize_and_fit(row, x, row.qat_steps)
    flatbuffer = lite.convert(qat, quantization="int8")
    cos = cosine(qat.predict(x, verbose=0), lite.predict(flatbuffer, x))
    floats, tensors = float_ops_and_tensors(flatbuffer, row.float_ops)
    return {"float_ops": floats, "float_tensors": tensors, "cosine": cos, "flatbuffer": flatbuffer}


def train_digits_transformer(model, x_train, y_train, epochs=60):
    """Trains a digits ViT float: AdamW, 10% linear warm-up, cosine decay, batch 64."""
    steps = -(-len(x_train) // 64) * epochs
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, steps - steps // 10, warmup_target=3e-3, warmup_steps=steps // 10
    )
    model.compile(keras.optimizers.AdamW(schedule, weight_decay=1e-4), _LOGITS_LOSS, metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=epochs, batch_size=64, verbose=0)
    return model


def train_digits_transformer_qat(model, x_train, y_train, epochs=3):
    """The QAT model of a trained digits ViT, fine-tuned `epochs` at 3e-4."""
    qat = tfcompress.quantize_model(model)
    qat.compile(keras.optimizers.Adam(3e-4), _LOGITS_LOSS, metrics=["accuracy"])
    qat.fit(x_train, y_train, epochs=epochs, batch_size=64, verbose=0)
    return qat


_LOGITS_LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def digits_transformer(x_train, y_train, x_test, y_test, patch=4, epochs=60, qat_epochs=3):
    """A ViT on the 8x8 digits, trained float, then QAT -> int8: its figures.

    4x4 patches (4 tokens of 16 pixels): with 2x2 patches (16 tokens, most of
    them blank) Keras = TFLite top-1 is 98.7% (`benchmarks/transformer_modes.py`).
    """
    model = train_digits_transformer(vit(patch=patch), x_train, y_train, epochs)
    float_accuracy = model.evaluate(x_test, y_test, verbose=0)[1]
    qat = train_digits_transformer_qat(model, x_train, y_train, qat_epochs)
    flatbuffer = lite.convert(qat, quantization="int8")
    keras_top1 = np.argmax(qat.predict(x_test, verbose=0), axis=-1)
    tflite_top1 = np.argmax(lite.predict(flatbuffer, x_test), axis=-1)
    return {
        "float_accuracy": float(float_accuracy),
        "qat_accuracy": float(np.mean(keras_top1 == y_test)),
        "int8_accuracy": float(np.mean(tflite_top1 == y_test)),
        "top1_agreement": float(np.mean(keras_top1 == tflite_top1)),
        "float_ops": float_ops_and_tensors(flatbuffer)[0],
        "size_bytes": len(flatbuffer),
    }


def float_ops_and_tensors(flatbuffer, allowed=()):
    """(ops computing in float, float tensors an int8 model should not have).

    Without the XNNPACK delegate, which would hide ops in one DELEGATE op.
    Expected float: the model's inputs and outputs (the QUANTIZE / DEQUANTIZE
    at the edges), int32 biases and shapes are not float, and the tensors of
    the ops `allowed` declares float ("*": any).
    """
    interpreter = interpreter_without_delegates(flatbuffer)
    details = {d["index"]: d for d in interpreter.get_tensor_details()}
    edges = {d["index"] for d in interpreter.get_input_details() + interpreter.get_output_details()}
    floats, tensors = [], set()
    for op in interpreter._get_ops_details():
        name = op["op_name"]
        declared = name in allowed or "*" in allowed
        indices = [i for i in list(op["inputs"]) + list(op["outputs"]) if i >= 0]
        is_float = [i for i in indices if details[i]["dtype"] == np.float32 and i not in edges]
        if name in EDGE_OPS or declared:
            continue
        if any(details[i]["dtype"] == np.float32 for i in op["outputs"]):
            floats.append(name)
        tensors.update(details[i]["name"] for i in is_float)
    return floats, sorted(tensors)


def interpreter_without_delegates(flatbuffer):
    """A LiteRT interpreter with the reference kernels: every op stays visible (no DELEGATE)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(
        model_content=flatbuffer,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    interpreter.allocate_tensors()
    return interpreter


def tflite_ops(flatbuffer):
    """The op names of a `.tflite`, in execution order."""
    return [op["op_name"] for op in interpreter_without_delegates(flatbuffer)._get_ops_details()]

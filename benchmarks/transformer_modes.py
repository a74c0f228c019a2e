"""A ViT on the digits through every integer mode: QAT int8, post-training int8 and 16x8.

The ViT of `tests/zoo_models.py` (pre-LN blocks, MultiHeadAttention, GELU MLP)
on scikit-learn's 8x8 digits, with 2x2 patches (16 tokens, many of them blank)
and 4x4 patches (4 tokens), trained float as `zoo_models.digits_transformer`
trains it (AdamW, warm-up + cosine, 60 epochs), then:

* post-training int8 and int16x8 (`lite.convert(model, mode,
  representative_data=500 training images)`);
* QAT int8 (`quantize_model`, 3 epochs, then `lite.convert(qat, "int8")`).

Reported on the 540 test digits: TFLite top-1 accuracy, agreement of the
TFLite top-1 with the Keras model it was converted from, cosine of the
logits, `.tflite` bytes and the ops left float.

    python benchmarks/transformer_modes.py [--out benchmarks/transformer_results.md]
"""

import argparse
import datetime
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

import tfcompress  # noqa: E402  (first: loads TensorFlow quietly)
import keras  # noqa: E402
import numpy as np  # noqa: E402
import zoo_models as zoo  # noqa: E402
from tfcompress import lite  # noqa: E402
from tfcompress.datasets import load_digits  # noqa: E402
from zoo import emit  # noqa: E402  (benchmarks/zoo.py)


def log(message):
    print(message, file=sys.stderr, flush=True)


def row(name, keras_logits, flatbuffer, y_test, x_test):
    tflite_logits = lite.predict(flatbuffer, x_test)
    keras_top1, tflite_top1 = keras_logits.argmax(-1), tflite_logits.argmax(-1)
    floats = sorted(set(zoo.float_ops_and_tensors(flatbuffer)[0])) if name != "float32" else ["(all)"]
    return (
        f"| {name} | {np.mean(keras_top1 == y_test):.2%} | {np.mean(tflite_top1 == y_test):.2%} | "
        f"{np.mean(keras_top1 == tflite_top1):.2%} | {zoo.cosine(keras_logits, tflite_logits):.5f} | "
        f"{len(flatbuffer):,} | {', '.join(floats) or 'none'} |"
    )


def measure(patch, data):
    (x_train, y_train), (x_test, y_test) = data
    log(f"patch {patch}: float training ...")
    model = zoo.vit(patch=patch)
    zoo.train_digits_transformer(model, x_train, y_train)
    float_logits = model.predict(x_test, verbose=0)
    lines = [row("float32", float_logits, lite.convert(model), y_test, x_test)]
    for mode in ("int8", "int16x8"):
        log(f"patch {patch}: post-training {mode} ...")
        flatbuffer = lite.convert(model, mode, representative_data=x_train[:500])
        lines.append(row(f"post-training {mode}", float_logits, flatbuffer, y_test, x_test))
    log(f"patch {patch}: QAT ...")
    qat = zoo.train_digits_transformer_qat(model, x_train, y_train)
    lines.append(row("QAT int8", qat.predict(x_test, verbose=0), lite.convert(qat, "int8"), y_test, x_test))
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="also write the markdown here")
    args = parser.parse_args()
    data = load_digits()
    report = [
        "# A ViT on the digits in every integer mode (`python benchmarks/transformer_modes.py`)",
        "",
        f"{datetime.date.today()}, tfcompress {tfcompress.__version__}, Keras {keras.__version__}. "
        "Agreement and cosine: the `.tflite` against the Keras model it was converted from "
        "(the float model for post-training modes, the QAT model for QAT); 540 test digits.",
    ]
    for patch in (2, 4):
        tokens = (8 // patch) ** 2
        report += [
            "",
            f"## {patch}x{patch} patches ({tokens} tokens)",
            "",
            "| model | Keras acc | TFLite acc | Keras = TFLite top-1 | cosine | bytes | float ops left |",
            "|---|---:|---:|---:|---:|---:|---|",
            *measure(patch, data),
        ]
    emit("\n".join(report), args.out)


if __name__ == "__main__":
    main()

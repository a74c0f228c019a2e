"""QAT and TFLite export figures on the demo-style CNN (digits).

Measures float / post-training int8 / QAT int8 accuracy (Keras and TFLite),
the `.tflite` sizes, the int8-vs-float TFLite latency on this CPU, and the
QAT training step time relative to a plain `fit`.

    python benchmarks/qat_figures.py [--epochs 10] [--qat-epochs 3] [--json out.json]
"""

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from tfcompress import datasets, lite  # noqa: E402
from tfcompress.demo import demo_cnn  # noqa: E402
from tfcompress.quantization import quantize_model  # noqa: E402


def compile_model(model, learning_rate, jit_compile="auto"):
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=jit_compile,
    )
    return model


class EpochTimer(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times = getattr(self, "times", []) + [time.perf_counter() - self._start]


def step_seconds(models, x, y, rounds, batch_size):
    """Fastest epoch time per step of each model, rounds interleaved.

    The machine is shared, so the models take turns (plain, QAT, plain, ...)
    and the fastest epoch of each counts; the first (tracing) epoch is dropped.
    """
    timers = [EpochTimer() for _ in models]
    for model, timer in zip(models, timers):
        model.fit(x, y, epochs=1, batch_size=batch_size, verbose=0)  # trace
    for _ in range(rounds):
        for model, timer in zip(models, timers):
            model.fit(x, y, epochs=2, batch_size=batch_size, verbose=0, callbacks=[timer])
    steps = int(np.ceil(len(x) / batch_size))
    return [min(timer.times) / steps for timer in timers]


def keras_accuracy(model, x, y):
    return float(np.mean(np.argmax(model.predict(x, verbose=0), -1) == y))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--qat-epochs", type=int, default=3)
    parser.add_argument("--timing-rounds", type=int, default=4)
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    keras.utils.set_random_seed(0)
    (x_train, y_train), (x_test, y_test) = datasets.load_digits()
    model = compile_model(demo_cnn(), 1e-3)
    model.fit(x_train, y_train, epochs=args.epochs, batch_size=32, verbose=0)

    qat = compile_model(quantize_model(model), 1e-4)
    qat.fit(x_train, y_train, epochs=args.qat_epochs, batch_size=32, verbose=0)

    files = {
        "float32": lite.convert(model),
        "float16": lite.convert(model, quantization="float16"),
        "dynamic": lite.convert(model, quantization="dynamic"),
        "ptq_int8": lite.convert(model, "int8", representative_data=x_train[:500]),
        "qat_int8": lite.convert(qat, quantization="int8"),
    }
    acc = {
        "float_keras": keras_accuracy(model, x_test, y_test),
        "qat_keras": keras_accuracy(qat, x_test, y_test),
    }
    for name, flatbuffer in files.items():
        acc[f"{name}_tflite"] = lite.evaluate(flatbuffer, x_test, y_test)["accuracy"]
    qat_top1 = np.argmax(qat.predict(x_test, verbose=0), -1)
    agreement = float(np.mean(np.argmax(lite.predict(files["qat_int8"], x_test), -1) == qat_top1))

    latency = {
        name: lite.benchmark(files[name], num_threads=1, runs=args.runs)
        for name in ("float32", "ptq_int8", "qat_int8")
    }

    # Step time: the same weights, plain vs QAT, identical fit settings; with
    # Keras' default compile (no XLA on CPU) and with jit_compile=True.
    steps = {}
    for jit in ("auto", True):
        plain = compile_model(demo_cnn(), 1e-4, jit)
        plain.set_weights(model.get_weights())
        qat_timed = compile_model(quantize_model(model), 1e-4, jit)
        steps[jit] = step_seconds([plain, qat_timed], x_train, y_train, args.timing_rounds, 32)

    figures = {
        "accuracy": acc,
        "qat_keras_vs_tflite_top1_agreement": agreement,
        "size_bytes": {name: len(b) for name, b in files.items()},
        "latency_ms_median": {k: v["median_ms"] for k, v in latency.items()},
        "latency_ms_p90": {k: v["p90_ms"] for k, v in latency.items()},
        "int8_vs_float_latency_ratio": latency["qat_int8"]["median_ms"]
        / latency["float32"]["median_ms"],
        "step_ms": {"plain": steps["auto"][0] * 1e3, "qat": steps["auto"][1] * 1e3},
        "qat_step_time_ratio": steps["auto"][1] / steps["auto"][0],
        "step_ms_xla": {"plain": steps[True][0] * 1e3, "qat": steps[True][1] * 1e3},
        "qat_step_time_ratio_xla": steps[True][1] / steps[True][0],
    }
    print(json.dumps(figures, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)


if __name__ == "__main__":
    main()

"""QAT and TFLite export figures on the demo CNN (digits).

Measures float / post-training int8 / QAT int8 accuracy (Keras and TFLite),
the Keras-vs-TFLite agreement of the QAT model, the `.tflite` sizes, the
int8-vs-float TFLite latency on this CPU, and the QAT training-step time
relative to plain `fit` (with Keras' default compile and with XLA). Training
follows the demo's recipe (`tfcompress.demo`).

    python benchmarks/qat_figures.py [--qat-epochs 3] [--json out.json]
"""

import argparse
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfcompress  # noqa: E402
from tfcompress import datasets, demo, lite  # noqa: E402

# benchmarks/ is sys.path[0] when this script runs.
from _tflite_figures import latency_medians  # noqa: E402
from _timing import step_time_ratios  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--float-epochs", type=int, default=demo.EPOCHS["float"])
    parser.add_argument("--qat-epochs", type=int, default=demo.EPOCHS["qat"])
    parser.add_argument("--timing-steps", type=int, default=150, help="timed steps per model")
    parser.add_argument("--latency-rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=200, help="inferences per file and round")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    keras.utils.set_random_seed(0)
    (x, y), (x_test, y_test) = datasets.load_digits()
    model = demo.train_float(x, y, args.float_epochs, verbose=0)
    qat = demo.train_pipeline(
        model, x, y, {"qat": args.qat_epochs}, sparsity=0, clusters=0, log=lambda _: None, verbose=0
    ).qat

    calibration = x[: demo.CALIBRATION_EXAMPLES]
    files = {
        "float32": lite.convert(model),
        "float16": lite.convert(model, quantization="float16"),
        "dynamic": lite.convert(model, quantization="dynamic"),
        "ptq_int8": lite.convert(model, "int8", representative_data=calibration),
        "qat_int8": lite.convert(qat, quantization="int8"),
    }
    accuracy = {
        "float_keras": demo.keras_accuracy(model, x_test, y_test),
        "qat_keras": demo.keras_accuracy(qat, x_test, y_test),
    }
    for name, flatbuffer in files.items():
        accuracy[f"{name}_tflite"] = lite.evaluate(flatbuffer, x_test, y_test)["accuracy"]
    qat_top1 = np.argmax(qat.predict(x_test, verbose=0), -1)
    agreement = float(np.mean(np.argmax(lite.predict(files["qat_int8"], x_test), -1) == qat_top1))
    latency = latency_medians(
        {name: files[name] for name in ("float32", "ptq_int8", "qat_int8")},
        args.latency_rounds,
        args.runs,
    )

    # Step time: the same weights, plain vs QAT, identical compile settings;
    # with Keras' default compile (no XLA on CPU) and with jit_compile=True.
    steps = {}
    for jit in ("auto", True):
        plain = demo.compile_classifier(demo.demo_cnn(), jit_compile=jit)
        plain.set_weights(model.get_weights())
        qat_timed = demo.compile_classifier(
            tfcompress.quantize_model(model), demo.LEARNING_RATES["qat"], jit_compile=jit
        )
        steps[jit] = step_time_ratios(
            {"plain": plain, "qat": qat_timed}, x, y, args.timing_steps, demo.BATCH_SIZE
        )

    (seconds, ratios), (xla_seconds, xla_ratios) = steps["auto"], steps[True]
    figures = {
        "accuracy": accuracy,
        "qat_keras_vs_tflite_top1_agreement": agreement,
        "size_bytes": {name: len(b) for name, b in files.items()},
        "latency_ms_median": latency,
        "int8_vs_float_latency_ratio": latency["qat_int8"] / latency["float32"],
        "step_ms": {name: 1e3 * s for name, s in seconds.items()},
        "qat_step_time_ratio": ratios["qat"],
        "step_ms_xla": {name: 1e3 * s for name, s in xla_seconds.items()},
        "qat_step_time_ratio_xla": xla_ratios["qat"],
    }
    print(json.dumps(figures, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)


if __name__ == "__main__":
    main()

"""Channel pruning of MobileNetV2 and a ResNet: MACs, parameters, accuracy, LiteRT latency.

For each architecture, on scikit-learn's digits upscaled to 32x32 RGB:

1. the float model is trained (BatchNorm momentum lowered from Keras'
   0.999 to 0.9: with ~40 steps per epoch, 0.999 leaves the moving statistics
   near their initial values and the evaluated model near chance);
2. `tfcompress.prune_channels` prunes the channels inside blocks (the groups
   of a single producer: MobileNetV2's expansion channels, ResNet's inner
   block channels; the residual streams, joined by `Add`s, stay whole) to the
   uniform sparsity that `sparsity_for_macs` computes for the target MACs
   (MobileNetV2 0.4x, ResNet 0.4x), kept counts multiples of 8
   (`round_to=8`), ranked by BatchNorm scale (ramped over the first half of
   the pruning epochs, the rest recovers), then `strip_channels` rebuilds the
   model with fewer filters;
3. QAT (`quantize_model`) on the stripped model gives a full-integer `.tflite`
   (and, for reference, QAT of the unpruned model);
4. unstructured pruning (`prune_low_magnitude`, same epochs and schedule
   shape) at 50% and 75% is the comparison at the same accuracy;
5. every model is rebuilt at 224x224 with the same weights (both networks are
   fully convolutional up to a global pooling) and timed with LiteRT, float32
   or int8, 1 thread, batch 1, the models taking turns round by round; the
   ratios to the unpruned float model are medians of per-round ratios.

    python benchmarks/channel_pruning.py            # full run (~25-40 min on 2 cores)
    python benchmarks/channel_pruning.py --quick    # a smoke test (fewer epochs)

Writes `benchmarks/channel_results.md` (and `--json`).
"""

import argparse
import datetime
import gzip
import json
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tfcompress  # noqa: E402  (first: it loads TensorFlow quietly)

import keras  # noqa: E402
import numpy as np  # noqa: E402
from tfcompress import datasets, demo, lite  # noqa: E402
from tfcompress.pruning.channels import channel_groups, sparsity_for_macs  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
L = keras.layers
BATCH = 32
SETTINGS = {
    "full": dict(float_epochs=30, prune_epochs=20, qat_epochs=3, rounds=5, unstructured=(0.5, 0.75)),
    "quick": dict(float_epochs=3, prune_epochs=2, qat_epochs=1, rounds=2, unstructured=(0.5,)),
}


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- data and models


def digits_32():
    """The digits as 32x32 RGB images (bilinear upscaling, gray copied to 3 channels)."""

    def upscale(images):
        big = keras.ops.image.resize(images, (32, 32), interpolation="bilinear")
        return np.repeat(keras.ops.convert_to_numpy(big), 3, axis=-1)

    (x, y), (x_test, y_test) = datasets.load_digits()
    # Whole batches only (1,248 of the 1,257): one traced train step, and
    # TensorFlow 2.21's oneDNN kernels crash (double free) training a 1x1
    # stride-2 conv of 8 or 12 input channels on a batch of 9, the channel
    # counts a stripped ResNet has.
    n = len(x) // BATCH * BATCH
    return (upscale(x[:n]), y[:n]), (upscale(x_test), y_test)


def with_bn_momentum(model, momentum):
    """A copy of `model` (fresh weights) whose BatchNormalizations use `momentum`."""

    def clone(layer):
        config = layer.get_config()
        if isinstance(layer, L.BatchNormalization):
            config["momentum"] = momentum
        return type(layer).from_config(config)

    return keras.models.clone_model(model, clone_function=clone)


def mobilenet_v2(alpha):
    base = keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), alpha=alpha, weights=None, classes=10, classifier_activation=None
    )
    return with_bn_momentum(base, 0.9)


def resnet(widths=(16, 32, 64), blocks=2):
    """A CIFAR-style ResNet (He et al. 2016): 3 stages of basic residual blocks."""

    def conv_bn(x, filters, kernel, strides, name):
        x = L.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False, name=name)(x)
        return L.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)

    inputs = keras.Input((32, 32, 3))
    x = L.ReLU(name="stem_relu")(conv_bn(inputs, widths[0], 3, 1, "stem"))
    for stage, width in enumerate(widths):
        for block in range(blocks):
            name = f"stage{stage + 1}_block{block + 1}"
            strides = 2 if stage and not block else 1
            y = L.ReLU(name=f"{name}_relu1")(conv_bn(x, width, 3, strides, f"{name}_conv1"))
            y = conv_bn(y, width, 3, 1, f"{name}_conv2")
            shortcut = x
            if strides != 1 or x.shape[-1] != width:
                shortcut = conv_bn(x, width, 1, strides, f"{name}_shortcut")
            x = L.ReLU(name=f"{name}_out")(L.Add(name=f"{name}_add")([shortcut, y]))
    x = L.GlobalAveragePooling2D(name="pool")(x)
    outputs = L.Dense(10, name="logits")(x)
    return keras.Model(inputs, outputs, name=f"resnet{6 * blocks + 2}")


def at_input_size(model, size):
    """The same model and weights, rebuilt for `size` x `size` inputs."""
    config = model.get_config()
    for layer in config["layers"]:
        if layer["class_name"] == "InputLayer":
            shape = list(layer["config"]["batch_shape"])
            layer["config"]["batch_shape"] = [shape[0], size, size] + shape[3:]
    rebuilt = type(model).from_config(config)
    rebuilt.set_weights(model.get_weights())
    return rebuilt


# --------------------------------------------------------------------------- training


def compiled(model, learning_rate, epochs, steps):
    """Adam with `learning_rate` decayed along a cosine over the training."""
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, epochs * steps, alpha=0.02)
    return demo.compile_classifier(model, schedule)


def accuracy(model, x, y):
    return float(np.mean(np.argmax(model.predict(x, verbose=0, batch_size=128), -1) == y))


class Run:
    """One architecture through the whole pipeline; figures go to `self.rows`."""

    def __init__(self, name, build, data, settings, macs_ratio, importance="bn_scale",
                 all_groups=False, round_to=1):
        (self.x, self.y), (self.x_test, self.y_test) = data
        self.name, self.build, self.cfg = name, build, settings
        self.steps = int(np.ceil(len(self.x) / BATCH))
        self.rows, self.models, self.files = {}, {}, {}
        self.started = time.time()
        self.importance, self.all_groups = importance, all_groups
        self.macs_ratio, self.round_to = macs_ratio, round_to
        self.workdir = None

    def fit(self, model, epochs, learning_rate):
        compiled(model, learning_rate, epochs, self.steps)
        model.fit(self.x, self.y, epochs=epochs, batch_size=BATCH, verbose=0)
        return model

    def record(self, key, model, macs_model=None):
        acc = accuracy(model, self.x_test, self.y_test)
        counted = tfcompress.count_macs(macs_model or model)
        self.rows[key] = {"keras_acc": acc, "macs_32": counted.total}
        self.models[key] = model
        log(f"{self.name} {time.time() - self.started:5.0f}s {key}: accuracy {acc:.4f}, "
            f"MACs {counted.total:,}")

    def schedule(self, final_sparsity, epochs):
        """0 -> `final_sparsity` over the first half of `epochs`, masks updated twice an epoch."""
        frequency = max(1, self.steps // 2)
        # end_step on an update step, or the last update falls short of the target.
        end = frequency * max(1, round((epochs // 2) * self.steps / frequency))
        return tfcompress.PolynomialDecay(
            0.0, final_sparsity, begin_step=0, end_step=end, frequency=frequency
        )

    def run(self):
        cfg = self.cfg
        keras.utils.set_random_seed(0)
        float_model = self.fit(self.build(), cfg["float_epochs"], 2e-3)
        self.record("float", float_model)

        groups = [g.name for g in channel_groups(float_model) if self.all_groups or len(g.producers) == 1]
        sparsity = sparsity_for_macs(float_model, self.macs_ratio, groups=groups, round_to=self.round_to)
        self.sparsity, self.num_groups = sparsity, len(groups)
        log(f"{self.name}: channel sparsity {sparsity:.4f} of {len(groups)} groups for "
            f"{self.macs_ratio}x the MACs")
        schedule = self.schedule(sparsity, cfg["prune_epochs"])
        pruned = tfcompress.prune_channels(
            float_model, {name: schedule for name in groups}, importance=self.importance,
            round_to=self.round_to,
        )
        self.fit(pruned, cfg["prune_epochs"], 1e-3)
        small = tfcompress.strip_channels(pruned)
        self.record("channels", small)

        qat = tfcompress.quantize_model(small)
        self.fit(qat, cfg["qat_epochs"], 1e-4)
        self.record("channels_qat", qat, macs_model=small)

        float_qat = tfcompress.quantize_model(float_model)
        self.fit(float_qat, cfg["qat_epochs"], 1e-4)
        self.record("float_qat", float_qat, macs_model=float_model)

        for level in cfg["unstructured"]:
            key = f"unstructured_{int(level * 100)}"
            unstructured = tfcompress.prune_low_magnitude(
                float_model, self.schedule(level, cfg["prune_epochs"])
            )
            self.fit(unstructured, cfg["prune_epochs"], 1e-3)
            self.record(key, tfcompress.strip_pruning(unstructured))

        for key, model in self.models.items():
            # Kernels, biases, BatchNorm scales and shifts that are not zero (QAT: its float model's).
            counted = self.float_of(key, model)
            self.rows[key]["params"] = int(
                sum(np.count_nonzero(keras.ops.convert_to_numpy(w)) for w in counted.trainable_weights)
            )
        self.convert()
        return self

    def float_of(self, key, model):
        """The float model a QAT model was made from (its MACs and parameters)."""
        return {"channels_qat": self.models["channels"], "float_qat": self.models["float"]}.get(key, model)

    def convert(self):
        """`.tflite` files: int8 QAT at 32x32 for its accuracy, everything at 224x224 for speed."""
        qat32 = lite.convert(self.models["channels_qat"], quantization="int8")
        self.rows["channels_qat"]["tflite_acc"] = lite.evaluate(qat32, self.x_test, self.y_test)["accuracy"]
        for key, model in self.models.items():
            flatbuffer = lite.convert(
                at_input_size(model, 224), quantization="int8" if key.endswith("qat") else None
            )
            self.files[key] = flatbuffer
            if self.workdir:
                with open(os.path.join(self.workdir, f"{self.name}_{key}_224.tflite"), "wb") as f:
                    f.write(flatbuffer)
            self.rows[key]["gzip_bytes"] = len(gzip.compress(flatbuffer, 9, mtime=0))
            self.rows[key]["macs_224"] = tfcompress.count_macs(
                at_input_size(self.float_of(key, model), 224)
            ).total
            log(f"{self.name} {time.time() - self.started:5.0f}s converted {key} at 224x224")


# --------------------------------------------------------------------------- latency


def latency_ratios(files, rounds):
    """Median latency (ms) of each `.tflite` and median per-round ratio to "float".

    The models take turns each round, so load from other processes hits them
    alike; the number of timed runs per model aims at about 1.5 s per turn.
    """
    runs = {}
    for key, flatbuffer in files.items():
        probe = lite.benchmark(flatbuffer, num_threads=1, runs=3, warmup=2)["median_ms"]
        runs[key] = int(np.clip(1500 / max(probe, 1e-3), 5, 300))
    times = {key: [] for key in files}
    for _ in range(rounds):
        for key, flatbuffer in files.items():
            times[key].append(
                lite.benchmark(flatbuffer, num_threads=1, runs=runs[key], warmup=3)["median_ms"]
            )
    medians = {key: statistics.median(t) for key, t in times.items()}
    speedups = {
        key: statistics.median(f / t for f, t in zip(times["float"], times[key])) for key in files
    }
    return medians, speedups


# --------------------------------------------------------------------------- report

LABELS = {
    "float": "float (unpruned)",
    "channels": "channel-pruned, stripped",
    "channels_qat": "channel-pruned + QAT int8",
    "float_qat": "QAT int8, unpruned (for reference)",
    "unstructured_50": "unstructured 50% (prune_low_magnitude)",
    "unstructured_75": "unstructured 75% (prune_low_magnitude)",
}


def table(run):
    lines = [
        f"### {run.title}",
        "",
        f"Channel sparsity {run.sparsity:.3f} in {run.num_groups} groups "
        f"({'all' if run.all_groups else 'the single-producer groups: residual streams kept whole'}; "
        f"`sparsity_for_macs(model, {run.macs_ratio}, groups, round_to={run.round_to})`), "
        f"importance `{run.importance}`, kept channels multiples of {run.round_to} (`round_to`).",
        "",
        "| variant | MACs 32x32 | MACs 224x224 | vs float | nonzero params | accuracy Keras | accuracy TFLite | gzip .tflite | latency 224 (1 thread) | speed-up vs float |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    base = run.rows["float"]
    for key, row in run.rows.items():
        tflite_acc = f"{100 * row['tflite_acc']:.1f}%" if "tflite_acc" in row else ""
        dtype = "int8" if key.endswith("qat") else "float32"
        lines.append(
            f"| {LABELS[key]} | {row['macs_32']:,} | {row['macs_224']:,} | "
            f"{row['macs_32'] / base['macs_32']:.2f}x | {row['params']:,} | "
            f"{100 * row['keras_acc']:.1f}% | {tflite_acc} | {row['gzip_bytes']:,} | "
            f"{row['latency_ms']:.1f} ms ({dtype}) | {row['speedup']:.2f}x |"
        )
    return "\n".join(lines)


def checks(run):
    rows = run.rows
    drop = 100 * (rows["float"]["keras_acc"] - rows["channels"]["keras_acc"])
    return [
        ("stripped MACs <= 0.5x", rows["channels"]["macs_32"] <= 0.5 * rows["float"]["macs_32"],
         f"{rows['channels']['macs_32'] / rows['float']['macs_32']:.3f}x"),
        ("accuracy within 1 point of float", drop <= 1.0, f"{-drop:+.1f} pt"),
        ("float32 speed-up >= 1.7x", rows["channels"]["speedup"] >= 1.7, f"{rows['channels']['speedup']:.2f}x"),
        ("QAT int8 speed-up >= 3x", rows["channels_qat"]["speedup"] >= 3.0,
         f"{rows['channels_qat']['speedup']:.2f}x"),
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", choices=("mobilenetv2", "resnet"), default=None)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--mobilenet-macs", type=float, default=0.4, help="target MACs ratio")
    parser.add_argument("--resnet-macs", type=float, default=0.4, help="target MACs ratio")
    parser.add_argument("--round-to", type=int, default=8, help="kept channels: multiples of this")
    parser.add_argument("--workdir", default=None, help="keep the 224x224 .tflite files here")
    parser.add_argument("--importance", default="bn_scale")
    parser.add_argument("--all-groups", action="store_true", help="prune the residual streams too")
    parser.add_argument("--output", default=os.path.join(HERE, "channel_results.md"))
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    settings = SETTINGS["quick" if args.quick else "full"]
    data = digits_32()
    architectures = {
        "mobilenetv2": (f"MobileNetV2 (alpha {args.alpha}, weights=None)",
                        lambda: mobilenet_v2(args.alpha), args.mobilenet_macs),
        "resnet": ("ResNet-14 (3 stages x 2 basic blocks, 16/32/64 filters)", resnet, args.resnet_macs),
    }
    runs, started = [], time.time()
    if args.workdir:
        os.makedirs(args.workdir, exist_ok=True)
    for key, (title, build, macs_ratio) in architectures.items():
        if args.only and key != args.only:
            continue
        run = Run(key, build, data, settings, macs_ratio, args.importance, args.all_groups, args.round_to)
        run.title, run.workdir = title, args.workdir
        run.run()
        runs.append(run)
    load_before = os.getloadavg()
    for run in runs:
        medians, speedups = latency_ratios(run.files, settings["rounds"])
        for key in run.rows:
            run.rows[key]["latency_ms"], run.rows[key]["speedup"] = medians[key], speedups[key]
        log(f"{run.name}: speed-ups {speedups}")
    load_after = os.getloadavg()

    now = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    text = [
        "# Channel pruning: MobileNetV2 and ResNet on digits (32x32 RGB)",
        "",
        f"`python benchmarks/channel_pruning.py{''.join(' ' + a for a in sys.argv[1:])}`, {now}, "
        f"{time.time() - started:.0f} s; TensorFlow {_version('tensorflow')}, Keras "
        f"{keras.__version__}, ai-edge-litert {_version('ai_edge_litert')}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs.",
        "",
        f"Machine load (1-minute load average) while timing: {load_before[0]:.1f} before, "
        f"{load_after[0]:.1f} after, on {os.cpu_count()} cores: latencies are slowed by other "
        "processes; the speed-ups are per-round ratios of models timed in turn, so they are the "
        "figures to read.",
        "",
        f"Training: float {settings['float_epochs']} epochs (Adam 2e-3, cosine decay), channel or "
        f"unstructured pruning {settings['prune_epochs']} epochs (Adam 1e-3, cosine; sparsity ramped "
        f"over the first half), QAT {settings['qat_epochs']} epochs (Adam 1e-4); batch {BATCH}; "
        "1,248 training (whole batches) / 540 test digits. BatchNorm momentum 0.9 (Keras applications use 0.999, "
        "too slow for ~40 steps per epoch). 'nonzero params' counts kernels, biases and BatchNorm "
        "scales/shifts that are not zero; 'MACs' are `tfcompress.count_macs` (unstructured "
        "sparsity leaves them unchanged: TFLite runs the kernels dense).",
        "",
    ]
    for run in runs:
        text += [table(run), ""]
        text += [f"- {name}: **{'yes' if ok else 'NO'}** ({value})" for name, ok, value in checks(run)]
        text.append("")
    with open(args.output, "w") as f:
        f.write("\n".join(text))
    print("\n".join(text))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({run.name: {"sparsity": run.sparsity, **run.rows} for run in runs}, f, indent=1)


def _version(module):
    try:
        from importlib.metadata import version

        return version(module.replace("_", "-"))
    except Exception:
        return "?"


if __name__ == "__main__":
    main()

"""`auto_compress`: from a trained classifier and an accuracy budget to the smallest (or fastest) int8 `.tflite`."""

import gzip
import time
import warnings

import keras
import numpy as np

from tfcompress import _layers, _validate, lite
from tfcompress.auto import allocate, channels, inputs, knobs as knobs_lib, pipeline, sizes
from tfcompress.auto import recipe as recipe_lib
from tfcompress.auto import sensitivity as sensitivity_lib
from tfcompress.auto.result import AutoCompressResult, describe_short
from tfcompress.macs import count_macs
from tfcompress.quantization import plan

OBJECTIVES = ("size", "latency")


def auto_compress(
    model,
    x,
    y=None,
    validation_data=None,
    max_accuracy_drop=0.01,
    objective="size",
    seed=0,
    recipe=None,
    *,
    epochs=None,
    batch_size=32,
    learning_rates=None,
    loss=None,
    max_trials=4,
    sensitivity_samples=512,
    per_layer=True,
    verbose=1,
):
    """Finds per-layer pruning, clustering and weight bits (or kept channels) that keep an accuracy budget.

    1. Baseline: the float32 `.tflite` of `model` and its accuracy on the
       validation data.
    2. Sensitivity: for each compressible layer, one at a time and without
       training, the rise of the validation loss under each sparsity
       (magnitude pruning), each cluster count (k-means) and each weight
       bits (8, 4, ternary), and the gzip size of its integer kernels (int8,
       or INT4 packed two per byte) under each joint setting.
    3. Allocation: recipes ordered from no compression to the harshest, each
       the least predicted loss for its size (greedy by loss per byte saved).
    4. Trials: the real pipeline (prune -> cluster -> QAT at the layers'
       weight bits, see
       `pipeline.train_pipeline`) runs at a recipe of that order, the int8
       `.tflite` is converted and its accuracy checked against the budget;
       the next trial is harsher after a pass and backs off after a failure
       (bisection in log size), `max_trials` times at most. The smallest
       `.tflite` that kept the budget is returned.

    With `objective="latency"` the knob is the channel sparsity of each
    channel group (`prune_channels`: whole filters removed, coupled layers
    together), and what the search minimizes is multiply-accumulates
    (`count_macs` of the stripped model): sensitivity is the loss rise of
    each group with its least important channels masked, the allocation
    orders recipes by loss per MAC saved, and each trial runs channel
    pruning -> `strip_channels` -> int8 QAT. Unstructured sparsity,
    clusters and low-bit weights stay off (LiteRT's int8 kernels compute
    every zero and every shared value alike: they save bytes, not time); a
    recipe may still combine them with kept channels. The report gives the
    MACs and the LiteRT latency (1 thread) of the float and int8 files.

    Every training run starts from `seed`, so a run is repeatable and a
    recipe given back reproduces its trial.

    Args:
        model: A trained Sequential or functional classifier with one input
            and one output of class scores (logits or probabilities); not
            modified.
        x: Training inputs (numpy array), or a `tf.data.Dataset` of `(x, y)`
            batches (then `y=None`).
        y: Training labels (integers or one-hot).
        validation_data: `(x_val, y_val)` or a `tf.data.Dataset` of batches:
            what sensitivity and the budget are measured on.
        max_accuracy_drop: Accuracy the `.tflite` may lose against the float
            `.tflite`, as a fraction (0.01 = one point).
        objective: "size" (gzip bytes of the int8 `.tflite`) or "latency"
            (its MACs, through channel pruning; the model needs a channel
            group `prune_channels` can prune, of more than 8 channels).
        seed: Seed of the sampling and of every training run.
        recipe: None to search; or a recipe (`result.recipe`, edited or not:
            `{layer: {"sparsity": float, "clusters": int or None,
            "weight_bits": 8, 4, 2 or 1, "channel_sparsity": float}}`, the
            last one the same on every layer of a channel group) to run
            the pipeline once with it, skipping the search.
        epochs: `{"channels": 12, "prune": 12, "cluster": 4, "qat": 3}` by
            default.
        batch_size: Batch size for array data.
        learning_rates: Adam learning rate per stage, by default
            `{"channels": 5e-4, "prune": 5e-4, "cluster": 3e-4, "qat": 1e-4}`.
        loss: Training loss; default: the model's compiled loss, else
            cross-entropy fitting the labels and outputs.
        max_trials: Pipeline runs of the search at most (one more at int8
            QAT only if none kept the budget).
        sensitivity_samples: Validation examples the sensitivity scan uses.
        per_layer: False restricts the search to recipes that give every
            layer the same setting (the baseline per-layer allocation is
            measured against in `benchmarks/auto_compress.py`).
        verbose: 0 silent; 1 the phases, a progress bar and each phase's
            figures; 2 also `fit`'s epoch lines.

    Returns:
        An `AutoCompressResult` (`print(result)` shows the recipe and report).
        If no run kept the budget, `within_budget` is False and a warning is
        issued; the result holds the most accurate run.

    Raises:
        ValueError: for a bad argument (a negative budget, data whose shape
            does not fit the model, an invalid recipe, ...) or a model with
            nothing to compress (for "latency": no channel group to prune).
        TypeError: if `model` is not a Keras model.

    Example:

    ```python
    result = tfcompress.auto_compress(model, x_train, y_train, (x_val, y_val),
                                      max_accuracy_drop=0.01)
    print(result)                       # recipe, sizes, accuracy, latency
    open("model.tflite", "wb").write(result.tflite)
    json.dump(result.recipe, open("recipe.json", "w"))   # edit, then recipe=...

    fast = tfcompress.auto_compress(model, x_train, y_train, (x_val, y_val),
                                    objective="latency")
    fast.report[-1]["macs"] / fast.report[0]["macs"]     # MACs kept
    ```
    """
    started = time.perf_counter()
    _validate.check_one_of("objective", objective, OBJECTIVES)
    max_accuracy_drop = _validate.check_number("max_accuracy_drop", max_accuracy_drop, 0.0, 1.0)
    seed = _validate.check_int("seed", seed, minimum=0)
    max_trials = _validate.check_int("max_trials", max_trials, minimum=1)
    sensitivity_samples = _validate.check_int("sensitivity_samples", sensitivity_samples, minimum=1)
    verbose = _validate.check_int("verbose", verbose, minimum=0, maximum=2)
    per_layer = _validate.check_bool("per_layer", per_layer)
    batch_size = _validate.check_int("batch_size", batch_size, minimum=1)
    epochs = inputs.check_stage_dict(
        "epochs", epochs, lambda n, v: _validate.check_int(n, v, minimum=1)
    )
    learning_rates = inputs.check_stage_dict(
        "learning_rates", learning_rates,
        lambda n, v: _validate.check_number(n, v, minimum=0, exclusive_minimum=True),
    )
    input_shape, classes = inputs.check_classifier(model)
    train = inputs.training_data(x, y, input_shape, classes, batch_size)
    x_val, labels = inputs.validation_arrays(validation_data, input_shape, classes)
    layers = knobs_lib.compressible_layers(model)
    if not layers:
        raise ValueError(
            f"Model '{model.name}' has no layer that pruning or clustering can compress "
            f"(supported: {', '.join(_layers.COMPRESSIBLE_LAYER_NAMES)}); "
            "there is nothing to search."
        )
    groups = None
    if objective == "latency" or channels.sets_channels(recipe):
        groups = channels.recipe_groups(model, layers)
    if objective == "latency" and recipe is None:
        channels.check_latency_model(model, groups)
    if recipe is not None:
        recipe = recipe_lib.check_recipe(recipe, layers, groups)
    # Planned now so that a model QAT cannot quantize fails before any training.
    grids = knobs_lib.search_grids(layers, _folded_layers(model))

    keras.utils.set_random_seed(seed)
    session = _Session(
        model, layers, train, x_val, labels, seed, verbose,
        dict(epochs=epochs, batch_size=batch_size, learning_rates=learning_rates,
             loss=pipeline.classification_loss(model, train) if loss is None else loss),
        objective,
    )
    phases = 2 if recipe is not None else 4
    session.measure_baseline(max_accuracy_drop, phases)
    if recipe is not None:
        session.log(f"[2/{phases}] pipeline with the given recipe")
        session.timed("trials", session.run, recipe)
    elif objective == "latency":
        channels.search(session, groups, max_trials, sensitivity_samples)
    else:
        session.search(grids, per_layer, max_trials, sensitivity_samples)
    return session.result(max_accuracy_drop, started)


class _Session:
    """The state of one `auto_compress` call: the data, the baseline, the runs so far."""

    def __init__(self, model, layers, train, x_val, labels, seed, verbose, training, objective):
        self.model, self.layers, self.train = model, layers, train
        self.x_val, self.labels, self.seed, self.verbose = x_val, labels, seed, verbose
        self.training, self.objective = training, objective
        self.trials, self.best, self.seconds, self.sensitivity = [], None, {}, None

    def log(self, *args):
        if self.verbose:
            print(*args, flush=True)

    def timed(self, phase, fn, *args):
        clock = time.perf_counter()
        value = fn(*args)
        self.seconds[phase] = time.perf_counter() - clock
        return value

    def measure_baseline(self, max_accuracy_drop, phases):
        clock = time.perf_counter()
        self.float_tflite = lite.convert(self.model)
        self.baseline = lite.evaluate(self.float_tflite, self.x_val, self.labels)["accuracy"]
        self.floor = self.baseline - max_accuracy_drop
        self.seconds["baseline"] = time.perf_counter() - clock
        self.log(
            f"[1/{phases}] baseline: float32 .tflite {len(self.float_tflite):,} B "
            f"(gzip {_gzip(self.float_tflite):,} B), accuracy {self.baseline:.2%} on "
            f"{len(self.labels)} validation examples; budget: TFLite accuracy >= {self.floor:.2%}"
        )

    def run(self, recipe, predicted=None, where=""):
        """Trains, converts and checks one recipe; returns `(passed, gzip bytes or MACs)`."""
        number = len(self.trials) + 1
        self.log(f"  trial {number}{where}: {describe_short(recipe)}")
        keras.utils.set_random_seed(self.seed)
        clock = time.perf_counter()
        settings = recipe_lib.stage_settings(recipe)
        models = pipeline.train_pipeline(
            self.model, self.train.x, self.train.y,
            channel_sparsity=settings[knobs_lib.CHANNELS.name],
            sparsity=settings[knobs_lib.SPARSITY.name],
            clusters=settings[knobs_lib.CLUSTERS.name],
            weight_bits={None: knobs_lib.BITS.neutral, **settings[knobs_lib.BITS.name]},
            log=lambda line: self.log("  " + line), verbose=2 if self.verbose >= 2 else 0,
            **self.training,
        )
        qat = models.qat
        flatbuffer = lite.convert(qat, "int8")
        accuracy = lite.evaluate(flatbuffer, self.x_val, self.labels)["accuracy"]
        latency = self.objective == "latency"
        trial = {
            "trial": number,
            "recipe": recipe,
            "predicted_kernel_bytes": None if latency else predicted,
            "predicted_macs": predicted if latency else None,
            "macs": count_macs(models.clustered).total if latency else None,
            "size_bytes": len(flatbuffer),
            "gzip_bytes": _gzip(flatbuffer),
            "tflite_accuracy": accuracy,
            "passed": accuracy >= self.floor - 1e-9,
            "seconds": time.perf_counter() - clock,
        }
        self.trials.append(trial)
        macs = f"{trial['macs']:,} MACs, " if latency else ""
        self.log(
            f"    -> int8 .tflite: {macs}gzip {trial['gzip_bytes']:,} B, TFLite {accuracy:.2%} "
            f"({100 * (accuracy - self.baseline):+.2f} pt): "
            f"{'kept the budget' if trial['passed'] else 'over budget'} ({trial['seconds']:.0f} s)"
        )
        if self.best is None or _better(trial, self.best[0], "macs" if latency else "gzip_bytes"):
            self.best = (trial, qat, flatbuffer)
        return trial["passed"], trial["macs" if latency else "gzip_bytes"]

    def validation_sample(self, samples):
        """`(x, labels)`: at most `samples` validation examples, drawn with the seed."""
        sample = np.sort(np.random.default_rng(self.seed).permutation(len(self.labels))[:samples])
        return self.x_val[sample], self.labels[sample]

    def search(self, grids, per_layer, max_trials, samples):
        """Sensitivity, allocation, then trials along the frontier."""
        x, labels = self.validation_sample(samples)
        count = sum(len(v) - 1 for grid in grids.values() for v in grid.values())
        self.log(
            f"[2/4] sensitivity: {len(self.layers)} layers, {count} settings, one at a time "
            f"on {len(labels)} validation examples"
        )
        measured = self.timed(
            "sensitivity", sensitivity_lib.measure, self.model, self.layers, grids, x, labels,
            self.verbose,
        )
        for line in _sensitivity_lines(measured, self.layers):
            self.log("  " + line)
        self.sensitivity = measured.to_dict()

        def allocation():
            options = {
                name: _options(name, layer, measured, grids[name])
                for name, layer in self.layers.items()
            }
            return (allocate.frontier if per_layer else allocate.uniform_frontier)(options)

        points = self.timed("allocation", allocation)
        self.log(
            f"[3/4] allocation: {len(points)} {'' if per_layer else 'uniform '}recipes from "
            f"{points[0].bytes:,} to {points[-1].bytes:,} B of predicted int8 kernels (gzip), "
            f"least predicted loss per byte saved ({self.seconds['allocation']:.0f} s)"
        )
        recipes = [_recipe_of(point, self.layers) for point in points]
        clock = time.perf_counter()
        # The first trials are harsher than the harshest recipe that keeps the budget untrained.
        start = sensitivity_lib.harshest_without_training(
            sensitivity_lib.Evaluator(self.model, x, labels), self.layers, recipes,
            measured.base_accuracy - (self.baseline - self.floor),
        )
        self.log(
            f"[4/4] trials: the pipeline at up to {max_trials} recipes (and a fallback if none "
            f"passes), each checked on its int8 .tflite; recipe {start}/{len(points) - 1} keeps "
            "the budget even untrained"
        )

        last = len(points) - 1

        def run_point(index):  # past `last`: a point the search added (see allocate.search)
            step = f"recipe {index}/{last}" if index <= last else "next move of another layer"
            where = f" ({step}, predicted kernels {points[index].bytes:,} B)"
            return self.run(_recipe_of(points[index], self.layers), points[index].bytes, where)

        allocate.search(points, run_point, start, max_trials)
        self.seconds["trials"] = time.perf_counter() - clock

    def result(self, max_accuracy_drop, started):
        trial, qat, flatbuffer = self.best
        if not trial["passed"]:
            warnings.warn(
                f"No pipeline run kept the budget (TFLite accuracy >= {self.floor:.2%}); the "
                f"most accurate one reached {trial['tflite_accuracy']:.2%}. Try more epochs, "
                "a larger max_accuracy_drop, or a milder recipe.",
                stacklevel=3,
            )
        report = [
            self._report_row(
                "float32", self.model, self.float_tflite, self.baseline,
                count_macs(self.model).total if self.objective == "latency" else None,
            ),
            self._report_row(
                "int8, " + describe_short(trial["recipe"]), qat, flatbuffer, trial["tflite_accuracy"],
                trial["macs"],
            ),
        ]
        self.seconds["total"] = time.perf_counter() - started
        result = AutoCompressResult(
            model=qat,
            tflite=flatbuffer,
            recipe=trial["recipe"],
            report=report,
            trials=self.trials,
            baseline_accuracy=self.baseline,
            max_accuracy_drop=max_accuracy_drop,
            within_budget=trial["passed"],
            seconds=self.seconds,
            sensitivity=self.sensitivity,
            objective=self.objective,
        )
        self.log(f"\n{result}")
        return result

    def _report_row(self, name, model, flatbuffer, tflite_accuracy, macs):
        _, keras_accuracy = sensitivity_lib.Evaluator(model, self.x_val, self.labels)()
        return {
            "model": name,
            "size_bytes": len(flatbuffer),
            "gzip_bytes": _gzip(flatbuffer),
            "keras_accuracy": keras_accuracy,
            "tflite_accuracy": tflite_accuracy,
            "latency_ms": lite.benchmark(flatbuffer, num_threads=1, runs=100)["median_ms"],
            "macs": macs,
        }


def _folded_layers(model):
    """Names of the layers `quantize_model` folds a BatchNormalization into."""
    decisions = plan.plan_model(model, "all")
    return {
        name for name, d in decisions.layers.items() if isinstance(d, plan.Wrap) and d.fold is not None
    }


def _better(trial, best, measure):
    # A run within budget beats one over it; among those within budget the
    # smaller `measure` (gzip bytes or MACs) wins, then the smaller file;
    # among those over it the more accurate one.
    if trial["passed"] != best["passed"]:
        return trial["passed"]
    if trial["passed"]:
        return (trial[measure], trial["gzip_bytes"]) < (best[measure], best["gzip_bytes"])
    return trial["tflite_accuracy"] > best["tflite_accuracy"]


def _options(name, layer, measured, grids):
    return [
        allocate.Option(combo, size, measured.joint_loss(name, dict(zip(knobs_lib.KNOB_NAMES, combo))))
        for combo, size in sizes.size_table(layer, grids).items()
    ]


def _recipe_of(point, layers):
    return {
        name: dict(zip(knobs_lib.KNOB_NAMES, point.choice[name].settings)) for name in layers
    }


def _sensitivity_lines(measured, layers):
    lines = []
    for name, layer in layers.items():
        weights = sum(int(np.prod(v.shape)) for v in knobs_lib.kernels(layer))
        parts = []
        for row in knobs_lib.KNOBS:
            costs = measured.loss[name][row.name]
            if len(costs) > 1:
                shown = list(costs.items())[1:][:: max(1, (len(costs) - 1) // 3)]
                parts.append(
                    f"{row.name} " + ", ".join(f"{row.label(v)} {c:+.3f}" for v, c in shown)
                )
        lines.append(f"{name} ({weights:,} weights): loss " + "; ".join(parts))
    return lines


def _gzip(data):
    return len(gzip.compress(data, compresslevel=9, mtime=0))

"""The Keras 3 side of `compare.py`: tfcompress' pipelines and Keras' built-ins.

Every compressed row goes through `tfcompress.demo.train_pipeline`, the
recipe of the demo, so the benchmark and `make demo` measure one
implementation. Each row is guarded: an API that fails leaves a gap (`n/a`
and the error) in the table instead of stopping the run.
"""

import re
import tempfile
import time
import warnings

import keras

import tfcompress
from tfcompress import demo, lite

import _distillers
from _timing import step_time_ratios


class OurSide:
    """Trains, converts and records every Keras 3 row of the comparison.

    Args:
        settings: The run's settings (`compare.settings()`).
        data: `((x, y), (x_test, y_test))`.
        float_model: The trained float `demo.demo_cnn()` both sides start from.
        log: Progress printer.

    Attributes:
        stages: Row key -> Keras top-1 accuracy.
        files: Row key -> `.tflite` bytes.
        errors: Row key -> the one-line error of a row that failed.
        notes: Row key -> what the table should say about the row.
    """

    def __init__(self, settings, data, float_model, log):
        (self.x, self.y), (self.x_test, self.y_test) = data
        self.settings = settings
        self.float_model = float_model
        self.float_weights = float_model.get_weights()
        self.stages, self.files, self.errors, self.notes = {}, {}, {}, {}
        self._timed = {}  # timing key -> compiled model, timed against "plain"
        self._timed_distillers = {}  # contender key -> compiled model, against "student"
        self._log = log
        self._started = time.time()

    def run(self, per_layer=True):
        """Every row, in table order; `per_layer` adds the demo's headline recipe."""
        sparsity, clusters = self.settings["sparsity"], self.settings["clusters"]
        self.guarded("float", self.float_row)
        self.guarded("ptq_int8", self.post_training_int8)
        self.guarded("keras_quantize", self.keras_quantize)
        # The uniform pipelines are the ones timed, as on the tfmot side.
        self.guarded("prune80_qat", lambda: self.pipeline(
            "prune80", sparsity["prune_qat"], 0,
            timed={"prune": "pruning", "qat_prune_preserve": "qat"},
        ))
        self.guarded("prune90_cluster_qat", lambda: self.pipeline(
            "prune90", sparsity["prune_cluster_qat"], clusters,
            timed={"cluster": "clustering", "qat_cluster_prune_preserve": "qat"},
        ))
        if per_layer:  # None: the demo's per-layer settings
            self.guarded("tuned_cluster_qat", lambda: self.pipeline("tuned", None, None))
        self.guarded("qat", self.plain_qat)
        self.distillation()

    def guarded(self, key, fn):
        """Runs `fn()`; an exception becomes `errors[key]` instead of ending the run."""
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - a missing/broken API is a table gap, not a crash
            message = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:160]
            self.errors[key] = message
            self.log(f"{key} FAILED: {message}")

    def log(self, message):
        """Logs `message` with the seconds since this side started."""
        self._log(f"[ours]  {time.time() - self._started:5.0f}s {message}")

    def record(self, key, model, flatbuffer=None):
        """Stores the Keras accuracy of `model` (and its `.tflite`) under `key`."""
        self.stages[key] = demo.keras_accuracy(model, self.x_test, self.y_test)
        if flatbuffer is not None:
            self.files[key] = flatbuffer
        self.log(f"{key}: accuracy {self.stages[key]:.4f}")

    def fresh_float(self):
        """A new `demo_cnn()` holding the trained float weights."""
        model = demo.demo_cnn()
        model.set_weights(self.float_weights)
        return model

    def float_row(self):
        """The float baseline, and the plain-`fit` model every step time is relative to."""
        self.record("float", self.float_model, lite.convert(self.float_model))
        self._timed["plain"] = demo.compile_classifier(self.fresh_float())

    def post_training_int8(self):
        """`lite.convert` to int8, calibrated on the demo's number of training images."""
        calibration = self.x[: demo.CALIBRATION_EXAMPLES]
        self.files["ptq_int8"] = lite.convert(
            self.fresh_float(), "int8", representative_data=calibration
        )
        self.notes["ptq_int8"] = f"calibrated on {len(calibration)} training images"

    def keras_quantize(self):
        """Keras 3's post-training `model.quantize("int8")`, and its TFLite export."""
        model = self.fresh_float()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Layer Conv2D does not have a quantize method"
            model.quantize("int8")
        self.record("keras_quantize", model)
        covered = sorted({l.name for l in model.layers for w in l.weights if w.dtype == "int8"})
        note = (
            "post-training; int8 Dense/EinsumDense/Embedding kernels only "
            f"({', '.join(covered)} int8; convs stay float32)"
        )
        try:
            self.files["keras_quantize"] = _saved_model_to_tflite(model)
        except Exception as e:  # noqa: BLE001
            # Keep the converter's one meaningful line ("'tfl.fully_connected' op ...").
            found = re.search(r"'tfl\.[a-z_]+' op [^\n]*", str(e))
            reason = found.group(0) if found else str(e).strip().splitlines()[0]
            note += f"; no TFLite file: {type(e).__name__}: {reason[:200]}"
            self.log(f"keras quantize -> TFLite failed: {reason[:200]}")
        self.notes["keras_quantize"] = note

    def pipeline(self, name, sparsity, clusters, timed=None):
        """`demo.train_pipeline` from the float weights; records each stage.

        Args:
            name: Key of the pruned stage; the clustered one is `name_cluster`,
                the QAT one `name[_cluster]_qat`.
            sparsity, clusters: As `demo.train_pipeline`.
            timed: Timing key -> `demo.PipelineModels` attribute of a trained
                model whose training step is to be timed.
        """
        settings = self.settings
        models = demo.train_pipeline(
            self.fresh_float(), self.x, self.y, settings["epochs"], sparsity, clusters,
            learning_rates=settings["learning_rates"], log=self.log, verbose=0,
        )
        self.record(name, models.pruned)
        key = name
        if models.clustered is not None:
            key += "_cluster"
            self.record(key, models.clustered)
        self.record(key + "_qat", models.qat, lite.convert(models.qat, "int8"))
        for timing_key, attribute in (timed or {}).items():
            self._timed[timing_key] = getattr(models, attribute)

    def plain_qat(self):
        """QAT without pruning, for its training-step time only."""
        qat = tfcompress.quantize_model(self.fresh_float())
        self._timed["qat"] = demo.compile_classifier(qat, self.settings["learning_rates"]["qat"])

    def distillation(self):
        """`demo.small_student()` alone and distilled by Keras' and our Distiller."""
        settings = self.settings
        makers = _distillers.contenders(self.float_model, settings["learning_rates"]["distill"])
        for key, make in makers.items():
            def run(key=key, make=make):
                keras.utils.set_random_seed(settings["seed"])
                model = make()
                model.fit(
                    self.x, self.y, epochs=settings["epochs"]["distill"],
                    batch_size=settings["batch_size"], verbose=0,
                )
                student = getattr(model, "student", model)
                self.record(key, student, lite.convert(student))
                self._timed_distillers[key] = model

            self.guarded(key, run)

    def time_steps(self):
        """Training-step time of each technique vs plain `fit`, side by side.

        Returns:
            `(seconds, ratios)`: timing key -> median seconds per step, and ->
            median ratio to plain `fit` of the float model; the distillers'
            keys are `"distill:<contender>"`, their ratios to plain `fit` of
            the student.
        """
        x, y, settings = self.x, self.y, self.settings
        timing = (x, y, settings["timing_steps"], settings["batch_size"])
        seconds, ratios = {}, {}
        try:
            seconds, ratios = step_time_ratios(self._timed, *timing)
            distillers = dict(self._timed_distillers)
            if "student" in distillers:
                distillers["plain"] = distillers.pop("student")
                more_seconds, more_ratios = step_time_ratios(distillers, *timing)
                for name in more_seconds:
                    key = "distill:" + ("student" if name == "plain" else name)
                    seconds[key], ratios[key] = more_seconds[name], more_ratios[name]
        except Exception as e:  # noqa: BLE001 - no step times is a gap, not a crash
            self.log(f"step timing FAILED: {type(e).__name__}: {e}")
        return seconds, ratios


def _saved_model_to_tflite(model):
    """Plain TFLite conversion of a Keras 3 model (for `model.quantize` output)."""
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as tmp:
        model.export(tmp, format="tf_saved_model", verbose=False)
        return tf.lite.TFLiteConverter.from_saved_model(tmp).convert()

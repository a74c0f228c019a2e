"""Runs `_tfmot_baseline.py` in a subprocess with `TF_USE_LEGACY_KERAS=1`.

Importing tensorflow_model_optimization switches a whole process to legacy
Keras, so tfmot never enters the benchmark's own process: this module hands
the subprocess its inputs through files in a work directory and reads its
results back the same way.
"""

import json
import os
import subprocess
import sys
import threading

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


class TfmotRun:
    """`_tfmot_baseline.py` running in the background.

    The subprocess trains and converts right away but, when `gated`, waits
    for `start_timing()` before it times training steps, so that its timing
    and ours never share the CPU.

    Args:
        workdir: Directory for the inputs, the `.tflite` files, `tfmot.log`
            and `tfmot_results.json`.
        settings: Dict the baseline reads as `config.json` (epochs, learning
            rates, schedule, batch size, seed, timing steps).
        data: `((x, y), (x_test, y_test))`.
        float_weights: The trained float CNN's `get_weights()`.
        gated: Hold the subprocess' step timing until `start_timing()`.
        log: Printer for the subprocess' `[tfmot]` progress lines.
    """

    def __init__(self, workdir, settings, data, float_weights, gated, log):
        self.workdir = workdir
        self.log_path = os.path.join(workdir, "tfmot.log")
        self._gate = os.path.join(workdir, "timing_go")
        if os.path.exists(self._gate):
            os.remove(self._gate)
        (x, y), (x_test, y_test) = data
        with open(os.path.join(workdir, "config.json"), "w") as f:
            json.dump(dict(settings, timing_gate=self._gate if gated else None), f)
        np.savez(
            os.path.join(workdir, "data.npz"), x_train=x, y_train=y, x_test=x_test, y_test=y_test
        )
        np.savez(
            os.path.join(workdir, "float_weights.npz"),
            **{f"w{i}": w for i, w in enumerate(float_weights)},
        )
        env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3")
        self.process = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "_tfmot_baseline.py"), workdir],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._reader = threading.Thread(target=self._relay, args=(log,), daemon=True)
        self._reader.start()

    def _relay(self, log):
        # Progress lines to the caller; everything (warnings too) to the log file.
        with open(self.log_path, "w") as log_file:
            for line in self.process.stderr:
                log_file.write(line)
                if line.startswith("[tfmot]"):
                    log(line.rstrip())

    def start_timing(self):
        """Lets a gated subprocess time its training steps now."""
        open(self._gate, "w").close()

    def result(self):
        """Waits for the subprocess and returns its results.

        Returns:
            The dict of `tfmot_results.json`, plus `"flatbuffers"`: stage ->
            `.tflite` bytes.

        Raises:
            RuntimeError: if the subprocess failed; the message holds the tail
                of its log.
        """
        code = self.process.wait()
        self._reader.join()
        path = os.path.join(self.workdir, "tfmot_results.json")
        if code != 0 or not os.path.exists(path):
            with open(self.log_path) as f:
                tail = "".join(f.readlines()[-15:])
            raise RuntimeError(f"tfmot subprocess failed (exit {code}):\n{tail}")
        with open(path) as f:
            results = json.load(f)
        results["flatbuffers"] = {}
        for stage, tflite_path in results["files"].items():
            with open(tflite_path, "rb") as f:
                results["flatbuffers"][stage] = f.read()
        return results

"""Median training-step time of compressed models relative to plain `fit`.

Models are timed side by side in one process, interleaved round by round, so
machine load affects both alike; the figure reported is a ratio.

    python benchmarks/step_time.py            # pruning vs plain fit on the demo CNN
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np


class StepTimer(keras.callbacks.Callback):
    """Records the wall time of every training batch."""

    def __init__(self):
        super().__init__()
        self.times = []

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.times.append(time.perf_counter() - self._start)


def median_step_times(models, x, y, rounds=5, batch_size=32, steps=40):
    """Median step time (seconds) of each compiled model, measured interleaved.

    Args:
        models: Dict name -> compiled model.
        x, y: Training data.
        rounds: Rounds; each fits every model for `steps` batches in turn.
        batch_size: Batch size.
        steps: Batches per round.

    Returns:
        Dict name -> median seconds per step (first round, with tracing, dropped).
    """
    timers = {name: StepTimer() for name in models}
    n = steps * batch_size
    for round_index in range(rounds + 1):
        for name, model in models.items():
            timer = StepTimer() if round_index == 0 else timers[name]
            model.fit(x[:n], y[:n], batch_size=batch_size, epochs=1, verbose=0, callbacks=[timer])
    return {name: statistics.median(timer.times) for name, timer in timers.items()}


def main():
    import tfcompress
    from tfcompress.demo import compile_classifier, demo_cnn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    (x, y), _ = tfcompress.datasets.load_digits()
    keras.utils.set_random_seed(0)
    plain = compile_classifier(demo_cnn())
    schedule = tfcompress.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=400, frequency=100)
    pruned = compile_classifier(tfcompress.prune_low_magnitude(plain, schedule))
    times = median_step_times({"plain": plain, "pruned": pruned}, x, y, rounds=args.rounds)
    for name, seconds in times.items():
        print(f"{name:>8}: {seconds * 1e3:.2f} ms/step")
    print(f"pruning / plain step time: {times['pruned'] / times['plain']:.3f}x")


if __name__ == "__main__":
    main()

"""Median training-step time of pruning relative to plain `fit` (issue 2's figure).

The models take turns one training step at a time (`_timing.step_time_ratios`),
so machine load affects both alike; the figure reported is a ratio.

    python benchmarks/step_time.py
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

import tfcompress  # noqa: E402
from tfcompress.demo import EPOCHS, compile_classifier, demo_cnn, ramp_schedule  # noqa: E402

from _timing import step_time_ratios  # noqa: E402  (benchmarks/ is sys.path[0])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="timed steps per model")
    args = parser.parse_args()
    (x, y), _ = tfcompress.datasets.load_digits()
    keras.utils.set_random_seed(0)
    plain = compile_classifier(demo_cnn())
    # The demo's schedule: its mask updates fall inside the timed steps.
    schedule = ramp_schedule(0.8, EPOCHS["prune"], len(x))
    pruned = compile_classifier(tfcompress.prune_low_magnitude(plain, schedule))
    seconds, ratios = step_time_ratios(
        {"plain": plain, "pruned": pruned}, x, y, steps=args.steps, batch_size=32
    )
    for name in seconds:
        print(f"{name:>8}: {seconds[name] * 1e3:.2f} ms/step")
    print(f"pruning / plain step time: {ratios['pruned']:.3f}x")


if __name__ == "__main__":
    main()

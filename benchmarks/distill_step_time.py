"""tfcompress.Distiller vs keras.distillation.Distiller with few labels, on the digits.

Reports, in one run, with the demo CNN as teacher and `demo.small_student()`:

1. Test accuracy of the teacher, of the student trained on few labels alone,
   and of the student distilled from the teacher on the same few labels, by
   tfcompress and by Keras (given a correct `keras.losses.KLDivergence()`),
   over several seeds.
2. Keras' default `LogitsDistillation` (loss given as the string
   "kl_divergence", applied to raw logits): its distillation loss goes
   negative and the student's accuracy drops.
3. Training-step time of each distiller relative to plain `fit` of the student,
   side by side (`_timing.step_time_ratios`), and the ratio tfcompress / Keras.

    python benchmarks/distill_step_time.py [--labels 150] [--seeds 3]

Needs Keras >= 3.12 for `keras.distillation`.
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from tfcompress import datasets, demo  # noqa: E402

# benchmarks/ is sys.path[0] when this script runs.
from _distillers import CONTENDERS, contenders  # noqa: E402
from _timing import step_time_ratios  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=int, default=150, help="labelled training digits")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--learning-rate", type=float, default=1e-2, help="the students'")
    parser.add_argument("--timing-steps", type=int, default=150, help="timed steps per model")
    parser.add_argument("--batch-size", type=int, default=64, help="of the timed steps")
    args = parser.parse_args()

    (x_train, y_train), (x_test, y_test) = datasets.load_digits()
    keras.utils.set_random_seed(0)
    teacher = demo.train_float(x_train, y_train, demo.EPOCHS["float"], verbose=0)

    # Few labels: the same `--labels` digits for every run, tiled so that
    # 3 epochs are ~280 steps at batch 32.
    idx = np.random.RandomState(0).permutation(len(x_train))[: args.labels]
    reps = max(1, 3000 // args.labels)
    x_few, y_few = np.tile(x_train[idx], (reps, 1, 1, 1)), np.tile(y_train[idx], reps)

    makers = contenders(teacher, args.learning_rate, steps_per_execution=16)
    results = {}
    for key, make in makers.items():
        accuracies, lowest_distillation_loss = [], []
        for seed in range(args.seeds):
            keras.utils.set_random_seed(seed)
            model = make()
            history = model.fit(x_few, y_few, epochs=3, batch_size=32, verbose=0)
            student = getattr(model, "student", model)
            accuracies.append(demo.keras_accuracy(student, x_test, y_test))
            if "distillation_loss" in history.history:
                lowest_distillation_loss.append(min(history.history["distillation_loss"]))
        results[key] = (accuracies, lowest_distillation_loss)

    print(f"\nDigits, {args.labels} labelled training examples, {args.seeds} seeds, "
          f"alpha={demo.DISTILL_ALPHA}, temperature={demo.DISTILL_TEMPERATURE}")
    print(f"  teacher ({teacher.count_params():,} params, all {len(x_train)} labels): "
          f"{demo.keras_accuracy(teacher, x_test, y_test):.3f}")
    params = demo.small_student().count_params()
    for key, (accuracies, distillation) in results.items():
        tool, setup = CONTENDERS[key]
        extra = f"   lowest distillation_loss {min(distillation):+.3f}" if distillation else ""
        seeds = ", ".join(f"{a:.3f}" for a in accuracies)
        print(f"  {tool}, {setup} ({params:,} params): {np.mean(accuracies):.3f} "
              f"(seeds: {seeds}){extra}")

    # Step time: the student alone and both distillers (given KLDivergence()),
    # one step each in turn.
    keras.utils.set_random_seed(0)
    makers = contenders(teacher, args.learning_rate)
    models = {"plain": makers["student"]()}
    models.update({key: makers[key]() for key in ("keras_distiller", "ours_distiller")})
    seconds, ratios = step_time_ratios(
        models, x_train, y_train, args.timing_steps, args.batch_size
    )
    print(f"\nTraining-step time, batch {args.batch_size}, median of {args.timing_steps} "
          "steps taken in turn:")
    for key, label in (("plain", "student alone (plain fit)"),
                       ("keras_distiller", "keras.distillation.Distiller"),
                       ("ours_distiller", "tfcompress.Distiller")):
        print(f"  {label:<32} {1e3 * seconds[key]:7.2f} ms/step, {ratios[key]:.2f}x plain")
    ours_over_keras = ratios["ours_distiller"] / ratios["keras_distiller"]
    print(f"  ratio tfcompress / keras         {ours_over_keras:7.2f}x")


if __name__ == "__main__":
    main()

"""tfcompress.Distiller vs keras.distillation.Distiller on the bundled digits.

Reports, in one run and on the same teacher / student architectures:

1. Accuracy on the digits test split of the teacher, of the student trained on
   few labels alone, and of the student distilled from the teacher on the same
   few labels -- by tfcompress and by Keras (given a correct
   `keras.losses.KLDivergence()` instance), averaged over seeds.
2. Keras' default `LogitsDistillation(temperature=3)` (loss given as the string
   "kl_divergence", applied to raw logits): its distillation loss goes
   negative and the student's accuracy drops.
3. Median training-step time of both distillers (interleaved rounds, so both
   see the same machine load), and the ratio tfcompress / Keras.

Run: `python benchmarks/distill_step_time.py [--labels 150] [--seeds 3]`.
Needs Keras >= 3.12 for `keras.distillation`.
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from tfcompress import Distiller, datasets  # noqa: E402


SCCE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
ALPHA, TEMPERATURE = 0.1, 4.0


def make_teacher():
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
            keras.layers.Conv2D(64, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(10),
        ],
        name="teacher",
    )


def make_student():
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(10),
        ],
        name="student",
    )


def accuracy(model, x, y):
    return float(np.mean(np.argmax(model.predict(x, verbose=0, batch_size=512), -1) == y))


def ours(teacher, lr=1e-2, **compile_kwargs):
    distiller = Distiller(make_student(), teacher)
    distiller.compile(
        keras.optimizers.Adam(lr), alpha=ALPHA, temperature=TEMPERATURE, **compile_kwargs
    )
    return distiller


def keras_distiller(teacher, loss=None, lr=1e-2, **compile_kwargs):
    """keras.distillation.Distiller; `loss=None` keeps Keras' default string."""
    kd = keras.distillation
    logits = (
        kd.LogitsDistillation(temperature=TEMPERATURE)
        if loss is None
        else kd.LogitsDistillation(temperature=TEMPERATURE, loss=loss)
    )
    distiller = kd.Distiller(
        teacher=teacher,
        student=make_student(),
        distillation_losses=logits,
        student_loss_weight=ALPHA,
    )
    distiller.compile(keras.optimizers.Adam(lr), loss=SCCE, **compile_kwargs)
    return distiller


class StepTimer(keras.callbacks.Callback):
    """Wall time of each training batch (one step per batch)."""

    def __init__(self):
        super().__init__()
        self.times = []

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.times.append(time.perf_counter() - self._start)


def step_times(make, x, y, rounds, steps, batch_size):
    """Per-round median step time after a warm-up fit (tracing excluded)."""
    distiller = make()
    distiller.fit(x[: batch_size * 5], y[: batch_size * 5], batch_size=batch_size, verbose=0)
    medians = []
    for _ in range(rounds):
        timer = StepTimer()
        n = steps * batch_size
        distiller.fit(x[:n], y[:n], batch_size=batch_size, epochs=1, verbose=0, callbacks=[timer])
        medians.append(statistics.median(timer.times))
        yield medians[-1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=int, default=150, help="labelled training digits")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=7, help="timing rounds per distiller")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()

    (x_train, y_train), (x_test, y_test) = datasets.load_digits()
    keras.utils.set_random_seed(0)
    teacher = make_teacher()
    teacher.compile(keras.optimizers.Adam(3e-3), SCCE)
    teacher.fit(x_train, y_train, epochs=10, batch_size=32, verbose=0)
    teacher_acc = accuracy(teacher, x_test, y_test)

    # Few labels: the same `--labels` digits for every run, tiled so that
    # 3 epochs are ~280 steps at batch 32.
    idx = np.random.RandomState(0).permutation(len(x_train))[: args.labels]
    reps = max(1, 3000 // args.labels)
    x_few, y_few = np.tile(x_train[idx], (reps, 1, 1, 1)), np.tile(y_train[idx], reps)

    runs = {
        "student alone": lambda: None,
        "tfcompress.Distiller": lambda: ours(teacher, steps_per_execution=16),
        "keras Distiller, KLDivergence()": lambda: keras_distiller(
            teacher, keras.losses.KLDivergence(), steps_per_execution=16
        ),
        "keras Distiller, default loss": lambda: keras_distiller(
            teacher, None, steps_per_execution=16
        ),
    }
    results = {}
    for name, make in runs.items():
        accs, last_distill = [], []
        for seed in range(args.seeds):
            keras.utils.set_random_seed(seed)
            model = make()
            if model is None:
                model = make_student()
                model.compile(keras.optimizers.Adam(1e-2), SCCE, steps_per_execution=16)
            history = model.fit(x_few, y_few, epochs=3, batch_size=32, verbose=0)
            student = getattr(model, "student", model)
            accs.append(accuracy(student, x_test, y_test))
            if "distillation_loss" in history.history:
                last_distill.append(min(history.history["distillation_loss"]))
        results[name] = (accs, last_distill)

    print(f"\nDigits, {args.labels} labelled training examples, {args.seeds} seeds, "
          f"alpha={ALPHA}, temperature={TEMPERATURE}")
    print(f"  teacher ({teacher.count_params():,} params, all {len(x_train)} labels): "
          f"{teacher_acc:.3f}")
    n_student = make_student().count_params()
    for name, (accs, distill) in results.items():
        extra = f"   lowest distillation_loss {min(distill):+.3f}" if distill else ""
        print(f"  {name:<33} ({n_student:,} params): {np.mean(accs):.3f} "
              f"(seeds: {', '.join(f'{a:.3f}' for a in accs)}){extra}")

    # Step time: alternate rounds of the two distillers on the same models.
    print(f"\nTraining-step time, batch {args.batch_size}, median of {args.rounds} rounds "
          "(interleaved):")
    keras.utils.set_random_seed(0)
    ours_gen = step_times(lambda: ours(teacher), x_train, y_train, args.rounds, 15, args.batch_size)
    theirs_gen = step_times(
        lambda: keras_distiller(teacher, keras.losses.KLDivergence()),
        x_train, y_train, args.rounds, 15, args.batch_size,
    )
    ours_t, theirs_t = [], []
    for a, b in zip(ours_gen, theirs_gen):
        ours_t.append(a)
        theirs_t.append(b)
    ours_ms, theirs_ms = 1e3 * statistics.median(ours_t), 1e3 * statistics.median(theirs_t)
    print(f"  tfcompress.Distiller              {ours_ms:7.2f} ms/step")
    print(f"  keras.distillation.Distiller      {theirs_ms:7.2f} ms/step")
    print(f"  ratio tfcompress / keras          {ours_ms / theirs_ms:7.2f}x")


if __name__ == "__main__":
    main()

"""Side-by-side training-step timing shared by the benchmarks.

Imports only TensorFlow (never Keras 3 or tfcompress), so the tfmot subprocess,
which runs legacy `tf_keras`, uses it too.
"""

import statistics
import time

import tensorflow as tf


def step_time_ratios(models, x, y, steps, batch_size, warmup=5):
    """Training-step time of each model relative to `models["plain"]`.

    Each model is warmed up with a one-batch `fit` (builds the optimizer and
    the compiled train function), then the models take turns one training
    step at a time, calling the same compiled train function `fit` calls, on
    their own iterator over the same data, the order rotating each step. A
    burst of load from other processes thus hits all of them alike; the first
    `warmup` turns are dropped. The ratio is the median over steps of a
    model's step time divided by plain's at the same turn.

    Args:
        models: Dict name -> compiled model, or name -> `(compiled model,
            callbacks)` whose `on_train_batch_begin` runs inside the timed
            step, as in `fit`; one is named "plain".
        x, y: Training data (cycled through in batches).
        steps: Timed steps per model.
        batch_size: Batch size.
        warmup: Untimed turns first.

    Returns:
        `(seconds, ratios)`: dicts name -> median seconds per step and
        name -> median per-step ratio to "plain".
    """
    names = list(models)
    data = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(batch_size, drop_remainder=True)
    runners = {}
    for name in names:
        entry = models[name]
        model, callbacks = entry if isinstance(entry, tuple) else (entry, [])
        model.fit(x[:batch_size], y[:batch_size], batch_size=batch_size, verbose=0, callbacks=callbacks)
        model.make_train_function()
        runners[name] = (model.train_function, iter(data), callbacks)
    times = {name: [] for name in names}
    for step in range(warmup + steps):
        turn = step % len(names)
        for name in names[turn:] + names[:turn]:
            train_function, iterator, callbacks = runners[name]
            begin = time.perf_counter()
            for callback in callbacks:  # as fit does before each step
                callback.on_train_batch_begin(step)
            logs = train_function(iterator)
            float(logs["loss"])  # the step has finished
            if step >= warmup:
                times[name].append(time.perf_counter() - begin)
    seconds = {name: statistics.median(t) for name, t in times.items()}
    ratios = {
        name: statistics.median(a / b for a, b in zip(t, times["plain"]))
        for name, t in times.items()
    }
    return seconds, ratios


"""Pruning schedules: when to update the masks and to which sparsity.

A schedule is a pure function of the training step. `schedule(step)` returns
`(should_prune, sparsity)` as tensors, so the pruning wrapper can evaluate it
inside a compiled train step. The semantics follow tfmot's: masks are updated
every `frequency` steps from `begin_step` through `end_step`.
"""

import keras
import numpy as np
from keras import ops

from tfcompress._validate import check_fraction, check_int, check_number


@keras.saving.register_keras_serializable(package="tfcompress")
class PruningSchedule:
    """Base class: a serializable map from training step to target sparsity.

    Subclasses implement `sparsity(step)` and `get_config()` and call
    `super().__init__(begin_step, end_step, frequency)`.

    Args:
        begin_step: First step at which masks are updated.
        end_step: Last step at which masks may be updated; -1 for no end.
        frequency: Masks are updated every `frequency` steps.
    """

    def __init__(self, begin_step, end_step, frequency):
        self.begin_step = check_int("begin_step", begin_step, minimum=0)
        self.end_step = check_int("end_step", end_step, minimum=-1)
        self.frequency = check_int("frequency", frequency, minimum=1)
        if self.end_step != -1 and self.end_step < self.begin_step:
            raise ValueError(
                "end_step must be >= begin_step (or -1 for no end). "
                f"Received: end_step={end_step!r}, begin_step={begin_step!r}"
            )

    def sparsity(self, step):
        """Target sparsity at `step` (a tensor)."""
        raise NotImplementedError

    def should_prune(self, step):
        """Boolean tensor: are the masks updated at `step`?"""
        step = ops.cast(step, "int64")
        in_range = ops.greater_equal(step, self.begin_step)
        if self.end_step != -1:
            in_range = ops.logical_and(in_range, ops.less_equal(step, self.end_step))
        on_turn = ops.equal(ops.mod(step - self.begin_step, self.frequency), 0)
        return ops.logical_and(in_range, on_turn)

    def __call__(self, step):
        """Returns `(should_prune, sparsity)` tensors for `step`."""
        return self.should_prune(step), ops.cast(self.sparsity(step), "float32")

    def get_config(self):
        raise NotImplementedError

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()


@keras.saving.register_keras_serializable(package="tfcompress")
class ConstantSparsity(PruningSchedule):
    """Prunes to a fixed sparsity every `frequency` steps.

    Args:
        target_sparsity: Fraction of weights set to zero, in [0, 1).
        begin_step: First step at which masks are updated.
        end_step: Last step at which masks may be updated; -1 for no end.
        frequency: Masks are updated every `frequency` steps.

    Raises:
        ValueError: for a sparsity outside [0, 1), a negative step, an
            `end_step` before `begin_step` or a `frequency` below 1.

    Example:

    >>> schedule = ConstantSparsity(0.5, begin_step=100, frequency=10)
    >>> [bool(schedule(step)[0]) for step in (99, 100, 105, 110)]
    [False, True, False, True]
    >>> float(schedule(100)[1])
    0.5
    """

    def __init__(self, target_sparsity, begin_step, end_step=-1, frequency=100):
        super().__init__(begin_step, end_step, frequency)
        self.target_sparsity = check_fraction("target_sparsity", target_sparsity)

    def sparsity(self, step):
        del step
        return ops.convert_to_tensor(self.target_sparsity, "float32")

    def get_config(self):
        return {
            "target_sparsity": self.target_sparsity,
            "begin_step": self.begin_step,
            "end_step": self.end_step,
            "frequency": self.frequency,
        }


@keras.saving.register_keras_serializable(package="tfcompress")
class PolynomialDecay(PruningSchedule):
    """Ramps sparsity from `initial_sparsity` to `final_sparsity` polynomially.

    At step t in [begin_step, end_step], with p = (t - begin) / (end - begin),
    sparsity = final + (initial - final) * (1 - p) ** power: fast pruning early,
    while the network can still recover, slowing as it nears the target
    (Zhu & Gupta, 2017). Before `begin_step` the sparsity is `initial_sparsity`;
    after `end_step` it stays at `final_sparsity` and masks no longer change.

    Args:
        initial_sparsity: Sparsity at `begin_step`, in [0, 1).
        final_sparsity: Sparsity from `end_step` on, in [0, 1).
        begin_step: First step at which masks are updated.
        end_step: Step at which `final_sparsity` is reached (>= begin_step).
        power: Exponent of the polynomial (3 in Zhu & Gupta).
        frequency: Masks are updated every `frequency` steps.

    Raises:
        ValueError: for a sparsity outside [0, 1), a `final_sparsity` below
            `initial_sparsity`, a negative step, `end_step < begin_step`,
            `end_step=-1`, a `frequency` below 1 or a `power` that is not a
            finite number > 0.

    Example:

    >>> schedule = PolynomialDecay(0.0, 0.8, begin_step=0, end_step=100, frequency=10)
    >>> [round(float(schedule(step)[1]), 4) for step in (0, 50, 100, 200)]
    [0.0, 0.7, 0.8, 0.8]
    """

    def __init__(
        self,
        initial_sparsity,
        final_sparsity,
        begin_step,
        end_step,
        power=3,
        frequency=100,
    ):
        if not isinstance(end_step, (bool, np.bool_)) and end_step == -1:
            raise ValueError(
                "PolynomialDecay needs an end_step where final_sparsity is reached. "
                f"Received: end_step={end_step!r}"
            )
        super().__init__(begin_step, end_step, frequency)
        self.initial_sparsity = check_fraction("initial_sparsity", initial_sparsity)
        self.final_sparsity = check_fraction("final_sparsity", final_sparsity)
        if self.final_sparsity < self.initial_sparsity:
            # Masks only ever grow (pruned weights stay pruned), so a falling
            # target would silently stay at initial_sparsity.
            raise ValueError(
                "final_sparsity must be >= initial_sparsity: sparsity only grows during "
                f"pruning. Received: initial_sparsity={initial_sparsity!r}, "
                f"final_sparsity={final_sparsity!r}"
            )
        try:
            self.power = check_number("power", power, minimum=0, exclusive_minimum=True)
        except ValueError:  # nan and inf too: not a usable exponent
            raise ValueError(f"power must be a number > 0. Received: power={power!r}") from None

    def sparsity(self, step):
        step = ops.cast(step, "float32")
        span = self.end_step - self.begin_step
        if span == 0:  # jump straight to the target at begin_step
            progress = ops.cast(ops.greater_equal(step, self.begin_step), "float32")
        else:
            progress = ops.clip((step - self.begin_step) / span, 0.0, 1.0)
        remaining = ops.power(1.0 - progress, float(self.power))
        return self.final_sparsity + (self.initial_sparsity - self.final_sparsity) * remaining

    def get_config(self):
        return {
            "initial_sparsity": self.initial_sparsity,
            "final_sparsity": self.final_sparsity,
            "begin_step": self.begin_step,
            "end_step": self.end_step,
            "power": self.power,
            "frequency": self.frequency,
        }

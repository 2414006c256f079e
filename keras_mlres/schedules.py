"""Learning-rate schedules: warm-up + cosine decay, and coarse levels' rates.

`warmup_cosine` is the schedule practitioners train with (linear warm-up,
then cosine decay to 0 at the end of the budget); `ScaledLearningRate` runs
a coarse level at the fine schedule times a constant.
"""

import keras


@keras.saving.register_keras_serializable(package="keras_mlres")
class ScaledLearningRate(keras.optimizers.schedules.LearningRateSchedule):
    """A learning-rate schedule multiplied by a constant factor.

    A coarse level whose optimizer is cloned from the fine one runs the fine
    schedule times its factor (see `MultilevelModel`'s
    `coarse_learning_rate_scale`), so warm-up or decay stay in step.

    Args:
        schedule: A `keras.optimizers.schedules.LearningRateSchedule`, or its
            serialized config.
        factor: Positive multiplier.

    Example:

    >>> decay = keras.optimizers.schedules.ExponentialDecay(0.01, 100, 0.5)
    >>> round(float(ScaledLearningRate(decay, 8.0)(0)), 6)
    0.08
    """

    def __init__(self, schedule, factor):
        if isinstance(schedule, dict):
            schedule = keras.saving.deserialize_keras_object(schedule)
        self.schedule = schedule
        self.factor = float(factor)

    def __call__(self, step):
        return self.schedule(step) * self.factor

    def get_config(self):
        return {
            "schedule": keras.saving.serialize_keras_object(self.schedule),
            "factor": self.factor,
        }


def scale_learning_rate(learning_rate, factor):
    """Returns `learning_rate` times `factor`, keeping its kind.

    Args:
        learning_rate: A number, a `LearningRateSchedule`, or the serialized
            config of one (as in an optimizer's `get_config()`).
        factor: Positive multiplier.

    Returns:
        A float, or a `ScaledLearningRate` for a schedule. `factor == 1`
        returns `learning_rate` unchanged.

    Raises:
        ValueError: If `learning_rate` is a plain callable, which cannot be
            scaled and serialized.

    Example:

    >>> scale_learning_rate(0.001, 8)
    0.008
    """
    if factor == 1:
        return learning_rate
    if isinstance(learning_rate, (int, float)):
        return float(learning_rate) * factor
    if isinstance(learning_rate, dict):
        learning_rate = keras.saving.deserialize_keras_object(learning_rate)
    schedule_type = keras.optimizers.schedules.LearningRateSchedule
    if isinstance(learning_rate, schedule_type):
        return ScaledLearningRate(learning_rate, factor)
    raise ValueError(
        f"Cannot scale the learning rate {learning_rate!r} for a coarse "
        "level: it is neither a number nor a "
        "keras.optimizers.schedules.LearningRateSchedule. Pass "
        "`level_optimizers` to compile, or coarse_learning_rate_scale=1."
    )


def warmup_cosine(learning_rate, total_steps, warmup_fraction=0.05):
    """Returns a linear warm-up, then a cosine decay to 0 at `total_steps`.

    The rate rises linearly from 0 to `learning_rate` over the first
    `warmup_fraction` of the steps (at least one step), then follows a half
    cosine down to 0 at step `total_steps`, and stays at 0 after it. Pass
    the steps of the whole training budget (epochs x batches per epoch), so
    that the decay ends when training does.

    Args:
        learning_rate: Peak learning rate, positive.
        total_steps: Optimizer steps of the whole budget, at least 2.
        warmup_fraction: Share of the steps spent warming up, in [0, 1).

    Returns:
        A `keras.optimizers.schedules.CosineDecay`.

    Raises:
        ValueError: If an argument is out of its range.

    Example:

    >>> schedule = warmup_cosine(1e-2, total_steps=1000)
    >>> [round(float(schedule(step)), 4) for step in (0, 50, 525, 1000)]
    [0.0, 0.01, 0.005, 0.0]
    """
    if isinstance(learning_rate, bool) or not (
        isinstance(learning_rate, (int, float)) and learning_rate > 0
    ):
        raise ValueError(
            "`learning_rate` must be a positive number (the peak rate). "
            f"Received: learning_rate={learning_rate!r}"
        )
    if isinstance(total_steps, bool) or not (
        isinstance(total_steps, int) and total_steps >= 2
    ):
        raise ValueError(
            "`total_steps` must be an int >= 2: the optimizer steps of the "
            "whole budget (epochs x batches per epoch). Received: "
            f"total_steps={total_steps!r}"
        )
    if not 0 <= warmup_fraction < 1:
        raise ValueError(
            "`warmup_fraction` must be in [0, 1). Received: "
            f"warmup_fraction={warmup_fraction!r}"
        )
    warmup_steps = max(1, round(warmup_fraction * total_steps))
    return keras.optimizers.schedules.CosineDecay(
        0.0,
        decay_steps=total_steps - warmup_steps,
        alpha=0.0,
        warmup_target=float(learning_rate),
        warmup_steps=warmup_steps,
    )

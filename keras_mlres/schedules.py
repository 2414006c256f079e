"""Learning rates of the coarse levels: the fine one times a constant."""

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

"""Argument checks shared by the modules: clear errors that name the fix."""

import math
import numbers

import keras
import numpy as np


def is_integer(value):
    """Whether `value` is an integer of any integral type, numpy's too.

    A bool is not: `True` where a count belongs is a mistake, not 1.

    Args:
        value: The received value.
    """
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_bool(argument, value):
    """Raises ValueError unless `value` is a bool (numpy's too).

    A string such as `"False"` is truthy, so taking it for a bool would
    silently turn the option on.

    Args:
        argument: The argument's name, for the message.
        value: The received value.

    Returns:
        `value` as a plain `bool`.
    """
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(
            f"`{argument}` must be True or False. "
            f"Received: {argument}={value!r}"
        )
    return bool(value)


def check_float(argument, value, allow_zero=False, hint=""):
    """Raises ValueError unless `value` is a finite number > 0 (or >= 0).

    Args:
        argument: The argument's name, for the message.
        value: The received value: a real number, numpy's too (not a bool or
            a string).
        allow_zero: Whether 0 is allowed.
        hint: Optional sentence appended to the message.

    Returns:
        `value` as a `float`.
    """
    valid = (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and (value >= 0 if allow_zero else value > 0)
    )
    if not valid:
        requirement = (
            "a finite number >= 0" if allow_zero
            else "a positive finite number"
        )
        hint = f" {hint}" if hint else ""
        raise ValueError(
            f"`{argument}` must be {requirement}. "
            f"Received: {argument}={value!r}.{hint}"
        )
    return float(value)


def all_finite(variables):
    """Whether every floating-point variable holds only finite values.

    Args:
        variables: Keras variables; those of other dtypes are not read.
    """
    return all(
        np.all(np.isfinite(keras.ops.convert_to_numpy(variable)))
        for variable in variables
        if keras.backend.is_float_dtype(variable.dtype)
    )


def check_finite_weights(weights, filepath):
    """Raises ValueError if a weight is NaN or Inf, before anything is written.

    Args:
        weights: The variables about to be written.
        filepath: Where they would be written, for the message.
    """
    for variable in weights:
        if not all_finite([variable]):
            raise ValueError(
                f"The weight {variable.path} holds NaN or Inf values, so "
                f"nothing was written to {filepath} (a file already there is "
                "left as it was). Training diverged: lower the learning "
                "rate or clip the gradients (e.g. Adam(clipnorm=1.0)), and "
                "look for NaN or Inf inputs."
            )


def check_choice(argument, value, allowed):
    """Raises ValueError unless `value` is one of `allowed`.

    Args:
        argument: The argument's name, for the message.
        value: The received value.
        allowed: The allowed values.
    """
    if value not in allowed:
        raise ValueError(
            f"Unknown {argument}={value!r}. Allowed values: "
            + ", ".join(repr(name) for name in allowed)
            + "."
        )


def check_count(argument, value, minimum=0, hint=""):
    """Raises ValueError unless `value` is an integer >= `minimum`.

    Args:
        argument: The argument's name, for the message.
        value: The received value.
        minimum: The smallest allowed value.
        hint: Optional explanation inserted after the requirement.

    Returns:
        `value` as an `int`, for configs to hold plain ints.
    """
    if not is_integer(value) or value < minimum:
        hint = f" ({hint})" if hint else ""
        raise ValueError(
            f"`{argument}` must be an integer >= {minimum}{hint}. "
            f"Received: {argument}={value!r}"
        )
    return int(value)


def check_coarsening_factor(factor):
    """Raises ValueError unless `factor` is an integer >= 2.

    Args:
        factor: The received coarsening factor.

    Returns:
        `factor` as an `int`.
    """
    if not is_integer(factor) or factor < 2:
        raise ValueError(
            "The coarsening factor must be an integer >= 2. "
            f"Received: factor={factor!r}"
        )
    return int(factor)

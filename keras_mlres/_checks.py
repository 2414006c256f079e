"""Argument checks shared by the modules: clear errors that name the fix."""


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
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        hint = f" ({hint})" if hint else ""
        raise ValueError(
            f"`{argument}` must be an integer >= {minimum}{hint}. "
            f"Received: {argument}={value!r}"
        )

"""The version of keras_mlres, and which saved versions it can read."""

__version__ = "0.1.0"


class IncompatibleVersionError(ValueError):
    """A file or config was written by an incompatible keras_mlres version."""


def _major(version):
    return int(str(version).split(".")[0])


def check_compatible(version, source):
    """Raises unless `version` has the installed version's major number.

    Models, configs and exports record the keras_mlres version that wrote
    them; a different major version may lay them out differently.

    Args:
        version: The version string recorded in `source`, or None for
            artifacts written before versions were recorded (accepted).
        source: What recorded it, for the message (e.g. a path).

    Raises:
        IncompatibleVersionError: If the major versions differ or `version`
            is not a version string.
    """
    if version is None:
        return
    try:
        compatible = _major(version) == _major(__version__)
    except ValueError:
        compatible = False
    if not compatible:
        raise IncompatibleVersionError(
            f"{source} was written by keras_mlres {version}, which is "
            f"incompatible with the installed keras_mlres {__version__} "
            "(the major versions differ). Load it with the version that "
            f"wrote it (pip install 'keras_mlres=={version}'), or re-create "
            f"it with keras_mlres {__version__}."
        )

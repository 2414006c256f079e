"""The version of keras_mlres."""

__version__ = "0.1.0"

"""Shared test set-up: quiet TensorFlow logs, keep tests on the CPU."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def pytest_collection_modifyitems(config, items):
    """Drops `tf.test.TestCase.test_session`, which pytest collects as a test.

    It is a deprecated context manager, not a test; unittest's loader picks it
    up by its name and TensorFlow skips it with "Not a test.", which would
    show every TestCase as having a skipped test.
    """
    del config  # Unused.
    kept = [item for item in items if item.name != "test_session"]
    items[:] = kept

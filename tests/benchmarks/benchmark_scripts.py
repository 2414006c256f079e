"""Loads and runs the scripts in benchmarks/ (scripts, not package modules)."""

import importlib.util
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
_BENCHMARKS = os.path.join(ROOT, "benchmarks")


def load(name):
    """Imports benchmarks/<name>.py and returns the module."""
    spec = importlib.util.spec_from_file_location(
        name, os.path.join(_BENCHMARKS, f"{name}.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(script, *args, env=None, timeout=600):
    """Runs benchmarks/<script> in a new process; returns the completed run."""
    return subprocess.run(
        [sys.executable, os.path.join(_BENCHMARKS, script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=dict(os.environ, **(env or {})),
    )

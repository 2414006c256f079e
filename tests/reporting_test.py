"""Tests of `keras_mlres.reporting` on synthetic histories."""

import json
import math
import os
import shutil
import tempfile

import numpy as np
from absl.testing import absltest
from absl.testing import parameterized

from keras_mlres import reporting

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _tempdir(test):
    """Returns a new empty directory, removed after `test`."""
    path = tempfile.mkdtemp()
    test.addCleanup(shutil.rmtree, path, ignore_errors=True)
    return path


def _summary(epochs, time, work, best=0.97, compile_time=2.0):
    return {
        "epochs": epochs,
        "time": time,
        "work": work,
        "best_val_accuracy": best,
        "compile_time": compile_time,
    }


class FirstEpochReachingTest(parameterized.TestCase):

    @parameterized.named_parameters(
        ("reached_later", [0.5, 0.8, 0.95, 0.9], 0.9, 3),
        ("reached_exactly", [0.5, 0.9], 0.9, 2),
        ("reached_at_once", [0.99, 0.5], 0.9, 1),
        ("never", [0.5, 0.8], 0.9, None),
        ("empty", [], 0.9, None),
        ("nan_never_reaches", [math.nan, 0.95], 0.9, 2),
    )
    def test_first_epoch(self, values, target, expected):
        self.assertEqual(
            reporting.first_epoch_reaching(values, target), expected
        )

    def test_accepts_numpy_values(self):
        self.assertEqual(
            reporting.first_epoch_reaching(np.array([0.1, 0.7]), 0.6), 2
        )


class TimeToTargetTest(absltest.TestCase):

    def test_reports_the_first_epoch_reaching_the_target(self):
        history = {
            "val_accuracy": [0.6, 0.96, 0.97],
            "work": [100.0, 200.0, 300.0],
        }
        self.assertEqual(
            reporting.time_to_target(history, [5.0, 6.5, 8.0], 0.95),
            {"epochs": 2, "time": 6.5, "work": 200.0},
        )

    def test_other_key(self):
        history = {"val_loss": [0.9, 0.1], "accuracy": [0.5, 0.99]}
        result = reporting.time_to_target(
            history, [1.0, 2.0], 0.9, key="accuracy"
        )
        self.assertEqual(result, {"epochs": 2, "time": 2.0, "work": None})

    def test_not_reached_gives_none_values(self):
        history = {"val_accuracy": [0.6, 0.7], "work": [1.0, 2.0]}
        self.assertEqual(
            reporting.time_to_target(history, [1.0, 2.0], 0.95),
            {"epochs": None, "time": None, "work": None},
        )

    def test_a_run_without_any_epoch_never_reaches(self):
        # fit stopped in its first epoch (a NaN loss): History holds {}.
        self.assertEqual(
            reporting.time_to_target({}, [], 0.95),
            {"epochs": None, "time": None, "work": None},
        )

    def test_returns_python_floats(self):
        history = {"val_accuracy": [0.99], "work": [np.float32(50.0)]}
        result = reporting.time_to_target(history, [np.float64(3.0)], 0.9)
        self.assertIs(type(result["time"]), float)
        self.assertIs(type(result["work"]), float)


class SummaryTableTest(absltest.TestCase):

    def test_rows_and_speedups_relative_to_the_baseline(self):
        table = reporting.summary_table(
            {
                "single_level": _summary(8, 40.0, 1600.0, best=0.9712),
                "multilevel": _summary(5, 20.0, 400.0, compile_time=6.3),
                "other": _summary(None, None, None, best=0.5),
            }
        )
        lines = table.splitlines()
        self.assertLen(lines, 4)
        for column in (
            "method",
            "epochs to target",
            "wall time to target (s)",
            "fine-gradient equivalents to target",
            "best val acc",
            "compile (s)",
            "speedup time",
            "speedup work",
        ):
            self.assertIn(column, lines[0])
        self.assertEqual(
            lines[1].split(),
            ["single_level", "8", "40.0", "1600", "0.9712", "2.0", "1.00x",
             "1.00x"],
        )
        self.assertEqual(
            lines[2].split(),
            ["multilevel", "5", "20.0", "400", "0.9700", "6.3", "2.00x",
             "4.00x"],
        )
        self.assertEqual(
            lines[3].split(),
            ["other", "-", "-", "-", "0.5000", "2.0", "-", "-"],
        )
        # Columns are aligned: every line has the same width.
        self.assertLen({len(line) for line in lines}, 1)

    def test_baseline_not_reaching_the_target_gives_no_speedup(self):
        table = reporting.summary_table(
            {
                "single_level": _summary(None, None, None),
                "multilevel": _summary(5, 20.0, 400.0),
            }
        )
        self.assertEqual(table.splitlines()[2].split()[-2:], ["-", "-"])

    def test_without_baseline(self):
        table = reporting.summary_table({"multilevel": _summary(3, 9.0, 50.0)})
        self.assertEqual(table.splitlines()[1].split()[-2:], ["-", "-"])

    def test_other_baseline(self):
        table = reporting.summary_table(
            {"a": _summary(2, 10.0, 100.0), "b": _summary(2, 5.0, 100.0)},
            baseline="a",
        )
        self.assertEqual(table.splitlines()[2].split()[-2:], ["2.00x", "1.00x"])


class LevelStartsTest(parameterized.TestCase):

    @parameterized.parameters(
        ([2, 2, 1, 0, 0], [(0, 2), (2, 1), (3, 0)]),
        ([0, 0, 0], []),
        ([1], [(0, 1)]),
        ([], []),
    )
    def test_the_first_epoch_of_each_level(self, levels, expected):
        self.assertEqual(reporting.level_starts(levels), expected)


class PlotCurvesTest(parameterized.TestCase):

    @parameterized.named_parameters(("with_target", 0.9), ("no_target", None))
    def test_writes_a_png(self, target):
        runs = {
            "single_level": {
                "history": {
                    "val_accuracy": [0.5, 0.8, 0.92],
                    "work": [100.0, 200.0, 300.0],
                },
                "epoch_times": [4.0, 5.0, 6.0],
            },
            "multilevel": {
                "history": {
                    "val_accuracy": [0.6, 0.9, 0.95],
                    "work": [20.0, 60.0, 160.0],
                    "level": [1, 1, 0],
                },
                "epoch_times": [5.0, 7.0, 8.0],
            },
            "stopped in its first epoch": {
                "history": {}, "epoch_times": [],
            },
        }
        path = os.path.join(_tempdir(self), "curves.png")
        reporting.plot_curves(runs, path, target=target, title="spiral")
        with open(path, "rb") as file:
            content = file.read()
        self.assertTrue(content.startswith(_PNG_SIGNATURE))
        self.assertGreater(len(content), 10_000)


class WriteJsonTest(absltest.TestCase):

    def test_round_trip_with_numpy_values_and_non_finite_floats(self):
        path = os.path.join(_tempdir(self), "out.json")
        reporting.write_json(
            path,
            {
                "history": {"loss": [np.float32(0.5), math.nan, math.inf]},
                "array": np.arange(3),
                "matrix": np.eye(2, dtype="float32"),
                "scalar": np.int64(7),
                "flag": np.bool_(True),
                "tuple": (1, "a", None),
            },
        )
        with open(path) as file:
            text = file.read()
        self.assertNotIn("NaN", text)
        self.assertNotIn("Infinity", text)
        self.assertEqual(
            json.loads(text),
            {
                "history": {"loss": [0.5, None, None]},
                "array": [0, 1, 2],
                "matrix": [[1.0, 0.0], [0.0, 1.0]],
                "scalar": 7,
                "flag": True,
                "tuple": [1, "a", None],
            },
        )


if __name__ == "__main__":
    absltest.main()

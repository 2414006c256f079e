"""Tests of `keras_mlres.reporting` on synthetic histories."""

import json
import math
import os
import shutil
import tempfile

import numpy as np
from absl.testing import absltest
from absl.testing import parameterized

from keras_mlres import protocol
from keras_mlres import reporting

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _tempdir(test):
    """Returns a new empty directory, removed after `test`."""
    path = tempfile.mkdtemp()
    test.addCleanup(shutil.rmtree, path, ignore_errors=True)
    return path


def _run(method, seed, accuracies, epoch_seconds=10.0):
    count = len(accuracies)
    return protocol.Run(
        "spiral", method, {}, seed, accuracies,
        [epoch_seconds * (i + 1) for i in range(count)],
        [100.0 * (i + 1) for i in range(count)], [0] * count,
    )


class SummaryTableTest(absltest.TestCase):

    def test_medians_ranges_and_speedups_against_the_baseline(self):
        runs = {
            "single_level": [
                _run("single_level", 0, [0.5, 0.9, 0.96]),
                _run("single_level", 1, [0.5, 0.5, 0.96]),
            ],
            "multilevel": [
                _run("multilevel", 0, [0.95, 0.97], epoch_seconds=5.0),
                _run("multilevel", 1, [0.5, 0.91], epoch_seconds=5.0),
            ],
            "other": [_run("other", 0, [0.5]), _run("other", 1, [0.6])],
        }
        lines = reporting.summary_table(runs, 0.9).splitlines()
        self.assertLen(lines, 4)
        for column in ("method", "seeds at target", "time to target (s)",
                       "epochs", "work", "final val acc", "speedup time",
                       "speedup work"):
            self.assertIn(column, lines[0])
        # Plain fit: 20 s and 30 s; the multilevel run: 5 s and 10 s.
        self.assertEqual(
            lines[1].split(),
            ["single_level", "2/2", "25.00", "(20.00-30.00)", "2", "250",
             "0.9600", "1.00", "(1.00-1.00)", "1.00", "(1.00-1.00)"],
        )
        self.assertEqual(
            lines[2].split(),
            ["multilevel", "2/2", "7.50", "(5.00-10.00)", "2", "150",
             "0.9400", "3.50", "(3.00-4.00)", "1.75", "(1.50-2.00)"],
        )
        self.assertEqual(
            lines[3].split(),
            ["other", "0/2", "-", "-", "-", "0.5500", "0.00", "(0.00-0.00)",
             "0.00", "(0.00-0.00)"],
        )
        # Columns are aligned: every line has the same width.
        self.assertLen({len(line) for line in lines}, 1)

    def test_without_baseline_no_speedups(self):
        runs = {"multilevel": [_run("multilevel", 0, [0.95])]}
        line = reporting.summary_table(runs, 0.9).splitlines()[1]
        self.assertEqual(line.split()[-2:], ["-", "-"])


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

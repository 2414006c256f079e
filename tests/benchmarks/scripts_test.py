"""Runs the benchmarks' measurement scripts in their --quick mode.

(`time_to_accuracy.py` has its own tests beside this file.)
"""

import re
import shutil
import tempfile

from absl.testing import absltest
from absl.testing import parameterized

import benchmark_scripts as scripts


class BenchmarksTest(parameterized.TestCase):
    def test_cycle_cost_quick(self):
        result = scripts.run("cycle_cost.py", "--quick")
        self.assertEqual(result.returncode, 0, result.stderr[-3000:])
        rows = [line.split() for line in result.stdout.splitlines()]
        levels = [row[1] for row in rows if row[:1] == ["off"]]
        self.assertEqual(levels, ["1", "2"])
        # The two-level step must cost more modelled work than a plain one.
        work_ratio = float(rows[-1][-1])
        self.assertGreater(work_ratio, 1.5)

    def test_epoch_stall_quick(self):
        tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, tmp)
        result = scripts.run("epoch_stall.py", "--quick", "--data_dir", tmp)
        self.assertEqual(result.returncode, 0, result.stderr[-3000:])
        rows = {
            row[0]: row[1:]
            for row in (line.split() for line in result.stdout.splitlines())
            if row[:1] in (["on"], ["off"])
        }
        # 3 epochs: two epoch starts after the first, per setting.
        self.assertEqual(rows["on"][0], "2")
        self.assertEqual(rows["off"][0], "2")

    def test_transfer_gap_quick(self):
        tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, tmp)
        result = scripts.run("transfer_gap.py", "--quick", "--data_dir", tmp)
        self.assertEqual(result.returncode, 0, result.stderr[-3000:])
        rows = [
            row for row in (line.split() for line in result.stdout.splitlines())
            if row[:1] in (["relu"], ["tanh"])
        ]
        # Every level, finest first, for each activation.
        self.assertEqual(
            [(row[0], row[2]) for row in rows],
            [("relu", "4"), ("relu", "2"), ("tanh", "4"), ("tanh", "2")],
        )
        for row in rows:
            self.assertBetween(float(row[3]), 0.0, 1.0)

    def test_coarse_optimizer_state_quick(self):
        tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, tmp)
        result = scripts.run("coarse_optimizer_state.py", "--quick", "--data_dir", tmp)
        self.assertEqual(result.returncode, 0, result.stderr[-3000:])
        rows = re.findall(
            r"^(single level|3 levels keep|3 levels reset) +\[(None|1)\] ",
            result.stdout, flags=re.MULTILINE,
        )
        self.assertEqual(
            [label for label, _ in rows],
            ["single level", "3 levels keep", "3 levels reset"],
        )

    def test_epoch_stall_summary(self):
        script = scripts.load("epoch_stall")
        results = [
            {"autotune": True, "gaps_s": [0.001, 1.5], "fit_s": 10.0},
            {"autotune": False, "gaps_s": [0.001, 0.002], "fit_s": 8.0},
            {"autotune": True, "gaps_s": [0.3, 0.001], "fit_s": 9.0},
        ]
        on, off = script.summarize(results)
        self.assertEqual(
            (on["autotune"], on["epoch_starts"], on["stalls"]), (True, 4, 2)
        )
        self.assertAlmostEqual(on["longest_s"], 1.5)
        self.assertAlmostEqual(on["total_s"], 1.802)
        self.assertAlmostEqual(on["fit_s"], 19.0)
        self.assertEqual((off["autotune"], off["stalls"]), (False, 0))
        self.assertAlmostEqual(off["longest_s"], 0.002)


if __name__ == "__main__":
    absltest.main()

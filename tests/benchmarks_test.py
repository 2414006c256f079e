"""Runs each benchmark once in its --quick mode, so that they keep working."""

import os
import shutil
import subprocess
import sys
import tempfile

from absl.testing import absltest

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(script, *args):
    return subprocess.run(
        [sys.executable, os.path.join(_ROOT, "benchmarks", script), *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


class BenchmarksTest(absltest.TestCase):
    def test_cycle_cost_quick(self):
        result = _run("cycle_cost.py", "--quick")
        self.assertEqual(result.returncode, 0, result.stderr[-3000:])
        rows = [line.split() for line in result.stdout.splitlines()]
        levels = [row[1] for row in rows if row[:1] == ["off"]]
        self.assertEqual(levels, ["1", "2"])
        # The two-level step must cost more modelled work than a plain one.
        work_ratio = float(rows[-1][-1])
        self.assertGreater(work_ratio, 1.5)

    def test_time_to_accuracy_quick_writes_results(self):
        tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, tmp)
        output = os.path.join(tmp, "RESULTS.md")
        result = _run(
            "time_to_accuracy.py", "--quick", "--data_dir", tmp,
            "--output", output,
        )
        self.assertEqual(result.returncode, 0, result.stderr[-3000:])
        with open(output) as f:
            text = f.read()
        for heading in ("## Tasks", "## Scaling with depth", "## Ablation"):
            self.assertIn(heading, text)
        for task in ("spiral", "shapes"):  # A point set and an image set.
            self.assertRegex(text, rf"\| {task} \| 0\.\d{{4}} \| adam lr=")
            self.assertTrue(
                os.path.getsize(os.path.join(tmp, "results", f"{task}.png"))
                > 1000
            )
        self.assertTrue(os.path.exists(os.path.join(tmp, "results", "runs.json")))


if __name__ == "__main__":
    absltest.main()

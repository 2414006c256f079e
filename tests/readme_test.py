"""Runs README.md's quickstart as a user pastes it into Python."""

import os
import pathlib
import re
import subprocess
import sys
import tempfile

from absl.testing import absltest

_README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def quickstart():
    """Returns the code of the first Python block under "## Quickstart"."""
    section = _README.read_text().split("\n## Quickstart", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


class ReadmeTest(absltest.TestCase):

    def test_quickstart_runs_as_pasted_and_prints_a_result(self):
        with tempfile.TemporaryDirectory() as home:
            # A fresh machine: the data set is generated, not found.
            result = subprocess.run(
                [sys.executable, "-c", quickstart()],
                cwd=home,
                capture_output=True,
                text=True,
                timeout=600,
                env=dict(os.environ, TFDS_DATA_DIR=os.path.join(home, "d")),
                check=False,
            )
        self.assertEqual(result.returncode, 0, result.stderr[-3000:])
        self.assertIn("level trained per epoch: [2", result.stdout)
        accuracy = re.search(
            r"validation accuracy of the fine network: (\d\.\d{3})",
            result.stdout,
        )
        self.assertIsNotNone(accuracy, result.stdout[-2000:])
        # Three classes: well above chance after 4 epochs.
        self.assertGreater(float(accuracy.group(1)), 0.5)


if __name__ == "__main__":
    absltest.main()

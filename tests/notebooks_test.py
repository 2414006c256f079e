"""Runs every Colab tutorial in colab/ top to bottom, headless, in small mode.

A new tutorial is covered by adding its `.ipynb` file to colab/.
"""

import os
import pathlib
import sys
import tempfile
from unittest import mock

import nbclient
import nbformat
from absl.testing import absltest
from absl.testing import parameterized

_ROOT = pathlib.Path(__file__).resolve().parent.parent
_NOTEBOOKS = sorted((_ROOT / "colab").glob("*.ipynb"))
_CELL_TIMEOUT_SECONDS = 300


def _read(path):
    return nbformat.read(path, as_version=nbformat.NO_CONVERT)


def _code_cells(notebook):
    return [cell for cell in notebook.cells if cell.cell_type == "code"]


class NotebooksTest(parameterized.TestCase):

    def test_tutorials_exist(self):
        self.assertGreaterEqual(len(_NOTEBOOKS), 3, _NOTEBOOKS)

    def test_all_open_with_the_same_guarded_install_cell(self):
        install_cells = {
            path.name: _code_cells(_read(path))[0].source for path in _NOTEBOOKS
        }
        first = install_cells[_NOTEBOOKS[0].name]
        self.assertIn("KERAS_MLRES_REPOSITORY = ", first)
        self.assertIn('importlib.util.find_spec("keras_mlres") is None', first)
        for name, source in install_cells.items():
            self.assertEqual(source, first, f"{name} has another install cell")

    @parameterized.named_parameters(
        (path.stem, path) for path in _NOTEBOOKS
    )
    def test_is_valid_and_stored_without_outputs(self, path):
        notebook = _read(path)
        nbformat.validate(notebook)
        for index, cell in enumerate(_code_cells(notebook)):
            self.assertEqual(cell.outputs, [], f"code cell {index} has outputs")
            self.assertIsNone(
                cell.execution_count, f"code cell {index} has a count"
            )
        self.assertEqual(notebook.cells[0].cell_type, "markdown")

    @parameterized.named_parameters(
        (path.stem, path) for path in _NOTEBOOKS
    )
    def test_runs_top_to_bottom_in_small_mode(self, path):
        notebook = _read(path)
        # Checks afterwards that the tutorial ran on this checkout's package.
        notebook.cells.append(nbformat.v4.new_code_cell(
            "import os, keras_mlres\n"
            "print(os.path.dirname(keras_mlres.__file__))"
        ))
        environment = {
            "KERAS_MLRES_TUTORIAL_SMALL": "1",
            # The kernel imports this checkout's keras_mlres (the install
            # cell then skips pip) with this interpreter ("python" on PATH).
            "PYTHONPATH": os.pathsep.join(
                [str(_ROOT), os.environ.get("PYTHONPATH", "")]
            ),
            "PATH": os.pathsep.join(
                [os.path.dirname(sys.executable), os.environ.get("PATH", "")]
            ),
            "MPLBACKEND": "module://matplotlib_inline.backend_inline",
        }
        with tempfile.TemporaryDirectory() as workdir, mock.patch.dict(
            os.environ, environment
        ):
            nbclient.NotebookClient(
                notebook,
                timeout=_CELL_TIMEOUT_SECONDS,
                kernel_name="python3",
                resources={"metadata": {"path": workdir}},
            ).execute()
            self.assertEqual(os.listdir(workdir), [])  # writes only to tmp
        outputs = [
            output
            for cell in _code_cells(notebook)[:-1]
            for output in cell.outputs
        ]
        errors = [o for o in outputs if o.output_type == "error"]
        self.assertEqual(errors, [])
        figures = [o for o in outputs if "image/png" in o.get("data", {})]
        self.assertNotEmpty(figures, "the tutorial shows no plot")
        # The kernel may send the print in several stream messages, and a
        # warning on stderr beside it.
        printed = "".join(
            output.text for output in notebook.cells[-1].outputs
            if output.output_type == "stream" and output.name == "stdout"
        )
        self.assertEqual(printed.strip(), str(_ROOT / "keras_mlres"))


if __name__ == "__main__":
    absltest.main()

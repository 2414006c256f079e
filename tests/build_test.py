"""Checks that the Bazel BUILD file lists every module and test on disk."""

import os
import pathlib
import shutil
import subprocess
import tempfile

from absl.testing import absltest

_ROOT = pathlib.Path(__file__).resolve().parent.parent
_LIBRARY = "keras_mlres"


def _parse_build_file(path):
    """Evaluates BUILD with stub rule functions; returns the rules by name."""
    rules = {}

    def rule(kind):
        def record(**kwargs):
            name = kwargs["name"]
            if name in rules:
                raise AssertionError(f"Duplicate target {name!r} in BUILD.")
            rules[name] = dict(kwargs, kind=kind)

        return record

    def forbidden_glob(*args, **kwargs):
        raise AssertionError(
            "BUILD must list sources explicitly, not with glob(): the check "
            "against the files on disk is only meaningful for explicit lists."
        )

    namespace = {
        "package": lambda **kwargs: None,
        "py_library": rule("py_library"),
        "py_test": rule("py_test"),
        "py_binary": rule("py_binary"),
        "glob": forbidden_glob,
    }
    exec(compile(path.read_text(), str(path), "exec"), namespace)
    return rules


def _files(directory, pattern):
    return sorted(
        path.relative_to(_ROOT).as_posix()
        for path in (_ROOT / directory).rglob(pattern)
        if "__pycache__" not in path.parts
    )


def _test_name(path):
    return path[: -len(".py")].replace("/", "_")


class BuildFileTest(absltest.TestCase):

    def setUp(self):
        super().setUp()
        self.rules = _parse_build_file(_ROOT / "BUILD")

    def test_workspace_exists(self):
        self.assertTrue((_ROOT / "WORKSPACE").is_file())

    def test_library_lists_every_module(self):
        self.assertIn(_LIBRARY, self.rules)
        library = self.rules[_LIBRARY]
        self.assertEqual(library["kind"], "py_library")
        srcs = list(library["srcs"])
        self.assertEqual(srcs, sorted(srcs), "keep py_library srcs sorted")
        self.assertLen(set(srcs), len(srcs))
        on_disk = _files(_LIBRARY, "*.py")
        self.assertNotEmpty(on_disk)
        missing = sorted(set(on_disk) - set(srcs))
        stale = sorted(set(srcs) - set(on_disk))
        self.assertEqual(
            (missing, stale),
            ([], []),
            f"BUILD py_library srcs out of date: add {missing}, remove {stale}",
        )

    def test_every_test_file_has_a_py_test(self):
        test_files = _files("tests", "*_test.py")
        self.assertIn("tests/build_test.py", test_files)
        missing = [p for p in test_files if _test_name(p) not in self.rules]
        self.assertEqual(missing, [], f"BUILD has no py_test for {missing}")
        for path in test_files:
            rule = self.rules[_test_name(path)]
            self.assertEqual(rule["kind"], "py_test")
            self.assertEqual(list(rule["srcs"]), [path])
            self.assertEqual(rule["main"], path)
            self.assertEqual(list(rule["deps"]), [f":{_LIBRARY}"])
        tests_in_build = {
            name for name, rule in self.rules.items() if rule["kind"] == "py_test"
        }
        stale = tests_in_build - {_test_name(path) for path in test_files}
        self.assertEmpty(stale, f"py_test targets without a test file: {stale}")

    def test_bazel_query_lists_every_target(self):
        bazel = shutil.which("bazel")
        if bazel is None:
            # pip cannot install bazel: a contributor's machine may lack
            # it, CI (which sets CI=true) installs it and must run this.
            message = (
                "bazel is not on PATH; install it with "
                "`apt-get install bazel-bootstrap` (.ci/run does)."
            )
            if os.environ.get("CI", "").lower() == "true":
                self.fail(message)
            self.skipTest(message)
        with tempfile.TemporaryDirectory() as output_user_root:
            result = subprocess.run(
                [
                    bazel,
                    "--batch",
                    f"--output_user_root={output_user_root}",
                    "query",
                    "//...",
                ],
                cwd=_ROOT,
                capture_output=True,
                text=True,
                timeout=600,
                env=dict(os.environ, HOME=output_user_root),
                check=False,
            )
            shutil.rmtree(output_user_root, ignore_errors=True)
        self.assertEqual(
            result.returncode,
            0,
            f"bazel query failed:\n{result.stdout}\n{result.stderr}",
        )
        listed = set(result.stdout.split())
        expected = {f"//:{name}" for name in self.rules}
        expected |= {
            f"//:{_test_name(path)}" for path in _files("tests", "*_test.py")
        }
        self.assertIn(f"//:{_LIBRARY}", listed)
        self.assertEqual(listed, expected)


if __name__ == "__main__":
    absltest.main()

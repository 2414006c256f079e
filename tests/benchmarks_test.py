"""Runs each benchmark once in its --quick mode, so that they keep working."""

import contextlib
import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import types
from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load_script(name):
    """Imports benchmarks/<name>.py (a script, not a package module)."""
    spec = importlib.util.spec_from_file_location(
        name, os.path.join(_ROOT, "benchmarks", f"{name}.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(script, *args, env=None):
    return subprocess.run(
        [sys.executable, os.path.join(_ROOT, "benchmarks", script), *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env=dict(os.environ, **(env or {})),
    )


class BenchmarksTest(parameterized.TestCase):
    def test_cycle_cost_quick(self):
        result = _run("cycle_cost.py", "--quick")
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
        result = _run("epoch_stall.py", "--quick", "--data_dir", tmp)
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
        result = _run("transfer_gap.py", "--quick", "--data_dir", tmp)
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
        result = _run("coarse_optimizer_state.py", "--quick", "--data_dir", tmp)
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
        script = _load_script("epoch_stall")
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

    def test_time_to_accuracy_quick_writes_results(self):
        tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, tmp)
        output = os.path.join(tmp, "RESULTS.md")
        marker = _load_script("time_to_accuracy").NOTES_MARKER
        notes = "\n## What limits it\n\nThe reader's analysis.\n"
        with open(output, "w") as f:
            f.write("# Old tables\n\n" + marker + notes)
        # A limit of one memory map makes the script restart itself with
        # --continue after every run, as it does when XLA's compiled code
        # nears the kernel's limit in a long benchmark.
        result = _run(
            "time_to_accuracy.py", "--quick", "--data_dir", tmp,
            "--output", output, env={"TIME_TO_ACCURACY_MAX_MAPS": "1"},
        )
        self.assertEqual(result.returncode, 0, result.stderr[-3000:])
        self.assertEqual(
            result.stdout.count("restarting with --continue"),
            result.stdout.count("best val acc"),
        )
        with open(output) as f:
            text = f.read()
        for heading in ("## Tasks", "## Scaling with depth", "## Ablation"):
            self.assertIn(heading, text)
        self.assertRegex(text, r"\| control: single level, 8x learning rate")
        for task in ("spiral", "shapes"):  # A point set and an image set.
            self.assertRegex(text, rf"\| {task} \| 0\.\d{{4}} \| adam lr=")
            self.assertTrue(
                os.path.getsize(os.path.join(tmp, "results", f"{task}.png"))
                > 1000
            )
        self.assertTrue(os.path.exists(os.path.join(tmp, "results", "runs.json")))
        # The tables are new; the notes below the marker are kept.
        self.assertNotIn("# Old tables", text)
        self.assertTrue(text.endswith(marker + notes), text[-300:])
        # Every run was trained once, across the restarts, and the command
        # line is the one the benchmark was started with.
        self.assertRegex(text, r"Total benchmark time: \d+ s\.")
        self.assertIn(
            "Command: `python benchmarks/time_to_accuracy.py --quick "
            f"--data_dir {tmp} --output {output}`", text,
        )
        with open(os.path.join(tmp, "results", "runs.json")) as f:
            runs = json.load(f)
        keys = [(r["task"], r["method"], r["seed"]) for r in runs]
        self.assertLen(keys, 5)
        self.assertLen(set(keys), 5)

        # A --continue that trains nothing keeps the runs it does not report.
        other_task = dict(runs[0], task="ellipses")
        with open(os.path.join(tmp, "results", "runs.json"), "w") as f:
            json.dump(runs + [other_task], f)
        result = _run(
            "time_to_accuracy.py", "--quick", "--data_dir", tmp,
            "--output", output, "--continue",
        )
        self.assertEqual(result.returncode, 0, result.stderr[-3000:])
        self.assertNotIn("best val acc", result.stdout)
        with open(os.path.join(tmp, "results", "runs.json")) as f:
            self.assertCountEqual(json.load(f), runs + [other_task])

        # --reuse reports the recorded runs and trains only what is missing,
        # and its footer says which is which, also across a restart. Its
        # own runs.json holds the runs it reports, not the whole reused file
        # (the ellipses run).
        result = _run(
            "time_to_accuracy.py", "--quick", "--data_dir", tmp,
            "--output", os.path.join(tmp, "RESULTS_more.md"),
            "--ablation", "levels2,control",
            "--reuse", os.path.join(tmp, "results", "runs.json"),
            env={"TIME_TO_ACCURACY_MAX_MAPS": "1"},
        )
        self.assertEqual(result.returncode, 0, result.stderr[-3000:])
        self.assertEqual(result.stdout.count("best val acc"), 1)
        self.assertEqual(result.stdout.count("restarting with --continue"), 1)
        self.assertRegex(
            result.stdout,
            r"5 runs reported from `runs\.json`, recorded by an earlier run "
            r"of the same settings; 1 trained by this command in \d+ s\.",
        )
        with open(os.path.join(tmp, "results_more", "runs.json")) as f:
            tasks = [r["task"] for r in json.load(f)]
        self.assertCountEqual(tasks, ["spiral"] * 4 + ["shapes"] * 2)

        # --replicate reports the tasks table again, with the targets of the
        # replicated runs (here reused: same seed, nothing to train).
        result = _run(
            "time_to_accuracy.py", "--quick", "--data_dir", tmp,
            "--output", os.path.join(tmp, "RESULTS_replicate.md"),
            "--replicate", os.path.join(tmp, "results", "runs.json"),
            "--reuse", os.path.join(tmp, "results", "runs.json"),
        )
        self.assertEqual(result.returncode, 0, result.stderr[-3000:])
        self.assertNotIn("best val acc", result.stdout)
        with open(os.path.join(tmp, "RESULTS_replicate.md")) as f:
            replicated = f.read()
        self.assertIn("its target in `" + os.path.join(tmp, "results",
                                                       "runs.json"),
                      replicated)
        self.assertNotIn("## Scaling with depth", replicated)
        for task in ("spiral", "shapes"):
            row = re.search(rf"\| {task} \| .*", text).group()
            self.assertIn(row, replicated)

        # --scheme trains its own multilevel runs (under their own method
        # name, not reported from the default's) against the reused
        # baselines, and its command line can be pasted into a shell.
        scheme = '{"num_levels": 3}'
        scheme_output = os.path.join(tmp, "RESULTS_scheme.md")
        result = _run(
            "time_to_accuracy.py", "--quick", "--data_dir", tmp,
            "--output", scheme_output, "--scheme", scheme,
            "--replicate", os.path.join(tmp, "results", "runs.json"),
            "--reuse", os.path.join(tmp, "results", "runs.json"),
        )
        self.assertEqual(result.returncode, 0, result.stderr[-3000:])
        self.assertEqual(result.stdout.count("best val acc"), 2)
        with open(scheme_output) as f:
            text = f.read()
        self.assertIn(f"--scheme '{scheme}'", text)
        self.assertIn(f"the default changed by --scheme `{scheme}`", text)
        self.assertIn("'num_levels': 3, 'cycle': 'none'", text)
        with open(os.path.join(tmp, "results_scheme", "runs.json")) as f:
            methods = sorted({r["method"] for r in json.load(f)})
        self.assertEqual(methods, ["multilevel num_levels=3", "single level"])

    def test_ablation_variants_change_the_scheme_control_last(self):
        script = _load_script("time_to_accuracy")
        scheme = {"num_levels": 3, "level_patience": 1}
        variants = script.ablation_variants(
            ["control", "levels4", "patience2"], scheme
        )
        self.assertEqual(
            list(variants),
            ["nested iteration, 4 levels", "nested iteration, patience 2",
             script.CONTROL[0]],
        )
        self.assertEqual(
            variants["nested iteration, 4 levels"],
            {"num_levels": 4, "level_patience": 1},
        )
        self.assertEqual(variants[script.CONTROL[0]], script.CONTROL[1])
        self.assertEqual(scheme, {"num_levels": 3, "level_patience": 1})
        self.assertEqual(
            script.ablation_keys("all"),
            list(script.ABLATION) + [script.CONTROL_KEY],
        )
        self.assertEqual(
            script.ablation_keys("levels4,control"), ["levels4", "control"]
        )

    def test_best_configuration_by_time_then_by_accuracy(self):
        script = _load_script("time_to_accuracy")

        def run(optimizer, seed, accuracies):
            return script.Run(
                "shapes", "single level", optimizer, 0.01, seed, 4,
                {"val_accuracy": accuracies, "work": [1.0, 2.0]},
                [1.0, 2.0], [1.0, 2.0],
            )

        slow_to_target = [run("sgd", s, [0.5, 0.9]) for s in range(3)]
        fast_to_target = [run("adam", s, [0.9, 0.9]) for s in range(3)]
        best = script.best_configuration(slow_to_target + fast_to_target, 0.9)
        self.assertEqual(best, fast_to_target)
        # No median seed reaches 0.95: the higher median accuracy wins.
        low = [run("sgd", s, [0.5, a]) for s, a in enumerate((0.6, 0.7, 1))]
        high = [run("adam", s, [0.5, a]) for s, a in enumerate((0.8, 0.9, 0))]
        best = script.best_configuration(low + high, 0.95)
        self.assertEqual({r.optimizer for r in best}, {"adam"})

    def test_a_diverged_run_keeps_its_epochs_before_the_nan(self):
        # Trains for real: a NaN input makes the first epoch's loss NaN.
        script = _load_script("time_to_accuracy")
        tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, tmp)
        (train_ds, val_ds), info = script.mlres.datasets.load(
            "peaks", batch_size=100, split=["train", "validation"],
            data_dir=tmp, with_info=True,
        )
        train_ds = train_ds.take(4).map(lambda x, y: (x * float("nan"), y))
        settings = script.TaskSettings(4, 4, 2, None, False)
        args = types.SimpleNamespace(
            own_runs={}, reused_runs={},
            progress=os.path.join(tmp, "runs.json"),
            time_horizon=4.0, stages=1, batch_norm=False,
            steps_per_execution=1,
        )
        loaded_seeds = []

        def load_data(seed):
            loaded_seeds.append(seed)
            return (train_ds, val_ds.take(2)), info, settings

        clear_session = script.keras.backend.clear_session
        with contextlib.redirect_stdout(io.StringIO()) as printed, \
                mock.patch.object(script.keras.backend, "clear_session",
                                  wraps=clear_session) as cleared:
            diverged = script.train(
                "peaks", load_data, "single level", script.BASELINE_SCHEME,
                "adam", 0.01, 3, args, 4,
            )
        # The run started from a cleared session, with its seed's data.
        cleared.assert_called_once_with()
        self.assertEqual(loaded_seeds, [3])
        self.assertIn("diverged in epoch 1", printed.getvalue())
        self.assertEqual(diverged.diverged_epoch, 0)
        self.assertEqual(diverged.epoch_times, [])
        self.assertEqual(diverged.best_accuracy, 0.0)
        self.assertEqual(diverged.final_accuracy, 0.0)
        with open(args.progress) as f:
            self.assertEqual(json.load(f)[0]["diverged_epoch"], 0)
        # Against a run that trained, it never reaches the target.
        trained = script.Run(
            "peaks", "multilevel", "adam", 0.01, 3, 4,
            {"val_accuracy": [0.5, 0.9], "work": [1.0, 2.0]},
            [1.0, 2.0], [1.0, 2.0],
        )
        result = script.compare([diverged], [trained], 0.9)
        self.assertEqual(result["seeds reaching target"], (0, 1))
        self.assertEqual(result["final accuracy"], (0.0, 0.9))
        self.assertIn("| 0.0000 / 0.9000 | 0 / 1 |", script._row("peaks", result))
        path = script.plot("peaks", result, tmp)
        self.assertGreater(os.path.getsize(path), 1000)

    def test_sweep_alternates_which_method_trains_first(self):
        script = _load_script("time_to_accuracy")
        order = []

        def train(task, load_data, method, scheme, optimizer, rate, seed,
                  args, blocks):
            order.append((method, optimizer, seed))

        args = types.SimpleNamespace(seeds=3, optimizers=[], learning_rates=0)
        methods = {
            "multilevel": ({}, [("adam", 0.01)]),
            "single level": (script.BASELINE_SCHEME, [("sgd", 0.1)]),
        }
        with mock.patch.object(script, "train", train):
            script.sweep("peaks", None, methods, args, 4)
        self.assertEqual(order, [
            ("multilevel", "adam", 0), ("single level", "sgd", 0),
            ("single level", "sgd", 1), ("multilevel", "adam", 1),
            ("multilevel", "adam", 2), ("single level", "sgd", 2),
        ])

    def test_each_run_loads_its_data_shuffled_by_its_seed(self):
        script = _load_script("time_to_accuracy")
        tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, tmp)
        settings = script.TaskSettings(4, 4, 1, 500, False)
        args = types.SimpleNamespace(batch_size=50, data_dir=tmp)

        def load(seed):
            (train_ds, _), _, loaded = script.load_task(
                "peaks", settings, args, seed
            )
            self.assertIs(loaded, settings)
            return train_ds

        def first_batch(train_ds):
            return next(iter(train_ds))[0].numpy()

        earlier_run = load(0)
        first = first_batch(earlier_run)
        for _ in range(2):
            for _ in earlier_run:
                pass
        # A shared pipeline would be in its fourth epoch by now: a run's own
        # starts at the first epoch of its seed.
        np.testing.assert_array_equal(first_batch(load(0)), first)
        self.assertFalse(np.array_equal(first_batch(load(1)), first))

    def test_point_sets_and_images_have_their_own_settings(self):
        script = _load_script("time_to_accuracy")
        args = types.SimpleNamespace(
            width=16, blocks=64, epochs=12, train_examples=None, no_xla=False,
            image_width=8, image_blocks=32, image_epochs=6,
            image_train_examples=3000, image_xla=False, stages=2,
            batch_norm=False, time_horizon=4.0, batch_size=100,
            steps_per_execution=20, seeds=3,
        )
        self.assertEqual(
            script.task_settings(False, args),
            script.TaskSettings(16, 64, 12, None, True),
        )
        self.assertEqual(
            script.task_settings(True, args),
            script.TaskSettings(8, 32, 6, 3000, False),
        )
        self.assertTrue(script.is_image_task("shapes"))
        self.assertFalse(script.is_image_task("spiral"))
        text = script.describe_settings(["peaks"], ["shapes"], args)
        self.assertIn(
            "Point sets (peaks): dense ODE-ResNet of width 16, K = 64 "
            "blocks; all training examples; 12 epochs; XLA on.", text
        )
        self.assertIn(
            "Images (shapes): conv ODE-ResNet of 2 stages from 8 filters "
            "(tanh, batch norm off), K = 32 blocks per stage; the first 3000 "
            "training examples; 6 epochs; XLA off.", text
        )
        self.assertNotIn("Images", script.describe_settings(
            ["peaks"], [], args
        ))

    def test_default_depths_double_from_32_up_to_the_fine_k(self):
        script = _load_script("time_to_accuracy")
        self.assertEqual(script.default_depths(512), [32, 64, 128, 256, 512])
        self.assertEqual(script.default_depths(100), [32, 64, 100])
        self.assertEqual(script.default_depths(32), [32])
        self.assertEqual(script.default_depths(8), [8])
        self.assertEqual(script.depth_list("64,16"), [64, 16])
        for text in ("", "32,x", "0,32", "32,,64"):
            with self.assertRaisesRegex(
                script.argparse.ArgumentTypeError, "positive numbers"
            ):
                script.depth_list(text)

    def test_replicate_takes_each_methods_best_configuration_and_target(self):
        script = _load_script("time_to_accuracy")
        tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, tmp)

        def runs(method, optimizer, rate, accuracies):
            return [
                script.Run("peaks", method, optimizer, rate, seed, 16,
                           {"val_accuracy": accuracies, "work": [1, 2, 3]},
                           [1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
                for seed in range(3)
            ]

        recorded = (
            # The baseline's best configuration is the faster, not the one
            # that reaches the best accuracy, which sets the target.
            runs("single level", "sgd", 0.1, [0.5, 0.99, 0.99])
            + runs("single level", "adam", 0.01, [0.5, 0.5, 1.0])
            + runs("multilevel", "sgd", 0.1, [0.5, 0.5, 0.99])
            + runs("multilevel", "adam", 0.03, [0.99, 0.99, 0.99])
        )
        path = os.path.join(tmp, "runs.json")
        with open(path, "w") as f:
            json.dump([script.dataclasses.asdict(r) for r in recorded], f)
        recorded = script.load_runs(path)
        configurations, target = script.recorded_choices(
            recorded, "peaks", 16, path
        )
        self.assertEqual(
            configurations,
            {"baseline": ("sgd", 0.1), "multilevel": ("adam", 0.03)},
        )
        self.assertAlmostEqual(target, 0.98)
        # A scheme of --scheme: its own runs' best configuration if the
        # file has them, else the default's.
        self.assertEqual(
            script.recorded_choices(
                recorded, "peaks", 16, path, "multilevel num_levels=4"
            )[0],
            configurations,
        )
        other = {
            run.key: run for run in runs(
                "multilevel num_levels=4", "sgd", 0.1, [0.99, 0.99, 0.99]
            )
        }
        self.assertEqual(
            script.recorded_choices(
                {**recorded, **other}, "peaks", 16, path,
                "multilevel num_levels=4",
            )[0],
            {"baseline": ("sgd", 0.1), "multilevel": ("sgd", 0.1)},
        )
        with self.assertRaisesRegex(
            ValueError, "no single level or multilevel runs of spiral at "
            "K = 16: replicate a benchmark that ran this task"
        ):
            script.recorded_choices(recorded, "spiral", 16, path)
        with self.assertRaisesRegex(ValueError, "runs of peaks at K = 32"):
            script.recorded_choices(recorded, "peaks", 32, path)
        # On the command line, before anything is written or trained.
        output = os.path.join(tmp, "RESULTS_replicate.md")
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr):
            with self.assertRaises(SystemExit):
                script.main(["--tasks", "spiral", "--blocks", "16",
                             "--replicate", path, "--output", output])
        self.assertIn("--replicate: " + path + " has no single level or "
                      "multilevel runs of spiral", stderr.getvalue())
        self.assertCountEqual(os.listdir(tmp), ["runs.json"])
        self.assertNotIn(script._STARTED, os.environ)

    def test_scheme_parses_multilevel_model_arguments(self):
        script = _load_script("time_to_accuracy")
        self.assertEqual(
            script.scheme_overrides('{"num_levels": 4, "level_patience": 2}'),
            {"num_levels": 4, "level_patience": 2},
        )
        self.assertEqual(script.multilevel_method({}), "multilevel")
        self.assertEqual(
            script.multilevel_method({"restriction": "average",
                                      "num_levels": 4}),
            "multilevel num_levels=4, restriction='average'",
        )
        for text in ("num_levels=4", "[4]", "{}", '"levels"'):
            with self.assertRaisesRegex(
                script.argparse.ArgumentTypeError, "is not a JSON object"
            ):
                script.scheme_overrides(text)
        with self.assertRaisesRegex(
            script.argparse.ArgumentTypeError,
            r"has no argument\(s\) \['levels'\]; choose among .*'num_levels'",
        ):
            script.scheme_overrides('{"levels": 4}')
        # The network is the benchmark's, not the scheme's.
        with self.assertRaisesRegex(
            script.argparse.ArgumentTypeError, r"no argument\(s\) \['model'\]"
        ):
            script.scheme_overrides('{"model": 1}')

    def _usage_error(self, argv):
        """Runs time_to_accuracy.py's main; returns its usage error.

        Checks that it exits before writing anything or starting its clock.
        """
        script = _load_script("time_to_accuracy")
        tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, tmp)
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr):
            with self.assertRaises(SystemExit):
                script.main(
                    argv + ["--output", os.path.join(tmp, "RESULTS.md")]
                )
        self.assertEqual(os.listdir(tmp), [])
        self.assertNotIn(script._STARTED, os.environ)
        return stderr.getvalue()

    def test_scheme_with_an_ablation_is_a_usage_error(self):
        stderr = self._usage_error(
            ["--scheme", '{"num_levels": 4}', "--ablation", "levels2"]
        )
        self.assertIn("--ablation's variants change the default scheme",
                      stderr)

    @parameterized.named_parameters(
        ("scheme_levels", ["--scheme", '{"num_levels": 5}'],
         "The method 'multilevel num_levels=5' cannot train K = 8 blocks: "
         "Cannot build 5 levels"),
        ("scheme_value", ["--scheme", '{"cycle": "X"}'],
         "cannot train K = 8 blocks: Unknown cycle='X'"),
        ("ablation_variant", ["--ablation", "levels5"],
         "The method 'nested iteration, 5 levels' cannot train K = 8 "
         "blocks: Cannot build 5 levels"),
        ("depth", ["--skip_ablation", "--depths", "6"],
         "The method 'multilevel' cannot train K = 6 blocks: Cannot build "
         "3 levels"),
    )
    def test_scheme_that_cannot_train_a_depth_is_a_usage_error(
        self, arguments, message
    ):
        stderr = self._usage_error(
            ["--tasks", "spiral", "--blocks", "8"] + arguments
        )
        self.assertIn(message, stderr)
        self.assertIn("Change --scheme, --ablation, or the depths", stderr)

    def test_unknown_ablation_variant_is_a_usage_error(self):
        script = _load_script("time_to_accuracy")
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr):
            with self.assertRaises(SystemExit):
                script.main(["--ablation", "levels4,levels9"])
        self.assertIn("Unknown ablation variant(s) ['levels9']",
                      stderr.getvalue())
        self.assertIn("'levels4'", stderr.getvalue())


if __name__ == "__main__":
    absltest.main()

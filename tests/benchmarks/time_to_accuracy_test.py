"""Tests for benchmarks/time_to_accuracy.py: its grid, runs and --quick mode."""

import json
import math
import os
import shutil
import tempfile
import types

from absl.testing import absltest
from absl.testing import parameterized

import keras_mlres as mlres

import benchmark_scripts as scripts

benchmark = scripts.load("time_to_accuracy")


def _tempdir(test):
    path = tempfile.mkdtemp()
    test.addCleanup(shutil.rmtree, path)
    return path


class GridTest(parameterized.TestCase):

    def test_constant_rates_train_the_longest_budget_only(self):
        task = benchmark.Task("spiral", epochs=8, width=4, num_blocks=8,
                              xla=False)
        configs = benchmark.grid(task, ["adam", "sgd"],
                                 ["constant", "cosine"], [1, 2, 4])
        names = [mlres.protocol.config_name(c) for c in configs]
        self.assertLen(configs, 2 * 3 * (1 + 3))
        self.assertIn("adam 0.003 constant 8 ep", names)
        self.assertNotIn("adam 0.003 constant 4 ep", names)
        for epochs in (8, 4, 2):
            self.assertIn(f"sgd 0.1 cosine {epochs} ep", names)

    def test_budgets_of_a_short_task_are_not_repeated(self):
        task = benchmark.Task("spiral", epochs=2, width=4, num_blocks=8,
                              xla=False)
        configs = benchmark.grid(task, ["adam"], ["cosine"], [1, 2, 4],
                                 {"adam": (0.01,)})
        self.assertEqual([c["epochs"] for c in configs], [2, 1])


class LearningRateTest(absltest.TestCase):

    def test_constant_and_warmup_cosine(self):
        constant = dict(optimizer="adam", learning_rate=0.01,
                        schedule="constant", epochs=2)
        self.assertEqual(benchmark.learning_rate(constant, 50), 0.01)
        cosine = dict(constant, schedule="cosine")
        schedule = benchmark.learning_rate(cosine, 50)
        # 100 steps: 5 of warm-up, the peak, then 0 at the end.
        self.assertAlmostEqual(float(schedule(5)), 0.01)
        self.assertAlmostEqual(float(schedule(100)), 0.0)

    def test_the_schedule_control_replays_the_recorded_rates(self):
        recorded = [[0, 0.001], [20, 0.004], [40, 0.002]]
        schedule = benchmark.learning_rate({}, 50, replayed=recorded)
        for step, expected in ((0, 0.001), (19, 0.001), (20, 0.004),
                               (39, 0.004), (40, 0.002), (99, 0.002)):
            self.assertAlmostEqual(float(schedule(step)), expected)


class CoarsestBlocksTest(parameterized.TestCase):

    @parameterized.parameters(
        (32, {}, 8),
        (512, dict(num_levels=2, coarsening_factor=8), 64),
    )
    def test_the_hierarchys_coarsest_level(self, blocks, change, expected):
        scheme = {**mlres.DEFAULT_SCHEME, **change}
        self.assertEqual(benchmark.coarsest_blocks(blocks, scheme), expected)

    def test_a_scheme_that_cannot_coarsen_raises(self):
        with self.assertRaisesRegex(ValueError, "3"):
            benchmark.coarsest_blocks(6, mlres.DEFAULT_SCHEME)


class GoalTest(parameterized.TestCase):

    @parameterized.named_parameters(
        ("met", 4.0, 4.5, 0.95, True),
        ("slow_in_time", 3.9, 4.5, 0.95, False),
        ("slow_in_work", 4.0, 3.0, 0.95, False),
        ("less_accurate", 5.0, 5.0, 0.939, False),
        ("no_comparison", None, None, 0.95, False),
    )
    def test_4x_in_time_and_work_to_the_same_accuracy(
        self, time, work, final, expected
    ):
        def spread(median):
            return mlres.protocol.Spread(median, median, median, 1)

        runs = [mlres.protocol.Run("t", benchmark.MULTILEVEL, {}, seed,
                                   [final], [1.0], [1.0], [0])
                for seed in range(3)]
        result = types.SimpleNamespace(
            headline={benchmark.MULTILEVEL: runs}, target=0.94,
            speedup={"time": spread(time), "work": spread(work)},
        )
        self.assertEqual(benchmark.meets_goal(result), expected)


class RunsTest(absltest.TestCase):

    def test_single_level_runs_do_not_depend_on_the_scheme(self):
        task = benchmark.QUICK_TASKS["spiral"]
        runs = benchmark.Runs("/nonexistent/runs.json", {"num_levels": 3})
        other = benchmark.Runs("/nonexistent/runs.json", {"num_levels": 2})
        self.assertEqual(runs.settings(task, benchmark.SINGLE_LEVEL),
                         other.settings(task, benchmark.SINGLE_LEVEL))
        self.assertNotEqual(runs.settings(task, benchmark.MULTILEVEL),
                            other.settings(task, benchmark.MULTILEVEL))
        # The coarse network depends on the coarsest level's blocks only.
        self.assertNotEqual(runs.settings(task, benchmark.COARSE_ALONE),
                            other.settings(task, benchmark.COARSE_ALONE))

    def test_retraining_the_multilevel_runs_retrains_the_control(self):
        path = os.path.join(_tempdir(self), "runs.json")
        entries = [
            {"settings": "s", "run": dict(
                task="spiral", method=method, config=dict(
                    optimizer="adam", learning_rate=0.01,
                    schedule="constant", epochs=1),
                seed=0, accuracies=[0.5], epoch_times=[1.0], work=[1.0],
                levels=[0])}
            for method in (benchmark.SINGLE_LEVEL, benchmark.MULTILEVEL,
                           benchmark.SCHEDULE_CONTROL)
        ]
        with open(path, "w") as f:
            json.dump(entries, f)
        runs = benchmark.Runs(path, {}, retrain=[benchmark.MULTILEVEL])
        self.assertEqual([r.method for r in runs.recorded.values()],
                         [benchmark.SINGLE_LEVEL])


class TrainTest(absltest.TestCase):

    def test_a_diverged_run_keeps_its_epochs_before_the_nan(self):
        task = benchmark.Task("spiral", epochs=3, width=4, num_blocks=4,
                              xla=False, train_examples=400)
        config = dict(optimizer="sgd", learning_rate=math.inf,
                      schedule="constant", epochs=3)
        run = benchmark.train(task, benchmark.SINGLE_LEVEL, config, 0,
                              mlres.DEFAULT_SCHEME,
                              data_dir=_tempdir(self))
        self.assertEqual(run.diverged_epoch, 0)
        self.assertEqual(run.accuracies, [])
        self.assertEqual(run.final_accuracy, 0.0)

    def test_each_method_records_time_work_and_levels(self):
        data_dir = _tempdir(self)
        task = benchmark.Task("spiral", epochs=2, width=4, num_blocks=8,
                              xla=False, train_examples=400)
        config = dict(optimizer="adam", learning_rate=0.01,
                      schedule="cosine", epochs=2)
        scheme = dict(mlres.DEFAULT_SCHEME, max_level_epochs=1,
                      num_levels=2)
        single, multilevel, coarse = (
            benchmark.train(task, method, config, 0, scheme,
                            data_dir=data_dir)
            for method in (benchmark.SINGLE_LEVEL, benchmark.MULTILEVEL,
                           benchmark.COARSE_ALONE)
        )
        # 400 examples, batch 100: 4 fine gradients an epoch.
        self.assertEqual(single.work, [4.0, 8.0])
        self.assertEqual(single.levels, [0, 0])
        self.assertEqual(multilevel.levels, [1, 0])
        self.assertLess(multilevel.work[0], 4.0)
        self.assertLess(coarse.work[0], 4.0)
        self.assertLen(coarse.accuracies, 2)
        for run in (single, multilevel, coarse):
            self.assertLess(run.epoch_times[0], run.epoch_times[1])
        # The multilevel run records the rate it applied on each level:
        # the cosine schedule from its warm-up, at each execution start.
        steps = [step for step, _ in multilevel.learning_rates]
        self.assertEqual(steps, sorted(steps))
        self.assertEqual(steps[0], 0)
        self.assertEqual(multilevel.learning_rates[0][1], 0.0)
        control = benchmark.train(
            task, benchmark.SCHEDULE_CONTROL, config, 0, scheme,
            replayed=multilevel.learning_rates, data_dir=data_dir,
        )
        self.assertLen(control.accuracies, 2)


class QuickTest(absltest.TestCase):

    def test_quick_writes_the_readme_and_continues_where_it_stopped(self):
        tmp = _tempdir(self)
        output = os.path.join(tmp, "README.md")
        flags = ["--quick", "--data_dir", tmp, "--output", output]
        result = scripts.run("time_to_accuracy.py", *flags)
        self.assertEqual(result.returncode, 0, result.stderr[-3000:])
        with open(output) as f:
            text = f.read()
        for heading in ("## Protocol", "## Results", "### spiral"):
            self.assertIn(heading, text)
        self.assertIn(
            "python benchmarks/time_to_accuracy.py --quick --data_dir", text
        )
        self.assertRegex(text, r"\| spiral[^|]* \| 0\.\d{4} \| adam 0\.01 ")
        self.assertRegex(text, r"ceiling \d+\.\d\dx")
        self.assertGreater(
            os.path.getsize(os.path.join(tmp, "results", "spiral.png")), 1000
        )
        runs_path = os.path.join(tmp, "results", "runs.json")
        with open(runs_path) as f:
            entries = json.load(f)
        self.assertLen(entries, len({
            (e["settings"], e["run"]["method"], e["run"]["seed"],
             json.dumps(e["run"]["config"], sort_keys=True))
            for e in entries
        }))
        self.assertIn(f"{len(entries)} runs in `results/runs.json`; "
                      f"{len(entries)} trained", text)

        # Two runs lost (as if the benchmark had stopped): the next command
        # trains those two only. A limit of one memory map makes the script
        # start itself again after each run, as it does when XLA's compiled
        # code nears the kernel's limit in a long benchmark.
        with open(runs_path, "w") as f:
            json.dump(entries[:-2], f)
        result = scripts.run("time_to_accuracy.py", *flags,
                             env={"TIME_TO_ACCURACY_MAX_MAPS": "1"})
        self.assertEqual(result.returncode, 0, result.stderr[-3000:])
        self.assertEqual(result.stdout.count("restarting"), 2)
        with open(runs_path) as f:
            self.assertLen(json.load(f), len(entries))


class UsageTest(parameterized.TestCase):

    @parameterized.named_parameters(
        ("zero_budget", ["--budgets", "0"], "at least 1"),
        ("unknown_task", ["--tasks", "mnist"], "unknown"),
        ("bad_scheme", ["--scheme", '{"levels": 2}'], "no argument"),
        ("scheme_that_cannot_coarsen",
         ["--scheme", '{"num_levels": 7}'], "cannot train"),
    )
    def test_bad_flags_are_usage_errors(self, flags, message):
        result = scripts.run("time_to_accuracy.py", *flags,
                             "--output", os.path.join(_tempdir(self), "R.md"))
        self.assertEqual(result.returncode, 2, result.stderr[-2000:])
        self.assertIn(message, result.stderr)



if __name__ == "__main__":
    absltest.main()

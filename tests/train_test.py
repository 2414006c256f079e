"""Tests of the `python -m keras_mlres.train` job."""

import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
from unittest import mock

import tensorflow as tf
import tensorflow_datasets as tfds
from absl import flags
from absl.testing import flagsaver
from absl.testing import parameterized

from keras_mlres import protocol
from keras_mlres import reporting
from keras_mlres import train

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_TINY_FLAGS = [
    "--dataset=spiral",
    "--blocks=8",
    "--width=8",
    "--epochs=2",
    "--levels=2",
    "--batch_size=250",
]


def setUpModule():
    # pytest does not parse absl flags; `tf.test.main` does.
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def _tempdir(test):
    """Returns a new empty directory, removed after `test`."""
    path = tempfile.mkdtemp()
    test.addCleanup(shutil.rmtree, path, ignore_errors=True)
    return path


def _run_job(args, cwd):
    """Runs the job in a fresh interpreter; returns the CompletedProcess."""
    return subprocess.run(
        [sys.executable, "-m", "keras_mlres.train", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
        check=False,
    )


class TrainJobTest(tf.test.TestCase):
    """The job end to end, as a user runs it."""

    def test_tiny_run_writes_results_curves_and_tensorboard_logs(self):
        tmp = _tempdir(self)
        output_dir = os.path.join(tmp, "out")
        result = _run_job(
            _TINY_FLAGS
            + [f"--output_dir={output_dir}", f"--data_dir={tmp}/data"],
            cwd=tmp,
        )
        self.assertEqual(result.returncode, 0, result.stderr[-3000:])
        for method in ("single_level", "multilevel"):
            self.assertIn(f"=== {method}", result.stdout)
        self.assertIn("speedup work", result.stdout)  # The summary table.
        self.assertIn("One seed is too noisy to rank the methods",
                      result.stdout)
        self.assertIn(f"to {output_dir}", result.stdout)

        with open(os.path.join(output_dir, "results.json")) as file:
            results = json.load(file)
        self.assertContainsSubset(
            {"flags", "target", "runs", "summary_table", "verdict"}, results,
        )
        self.assertEqual(results["flags"]["dataset"], "spiral")
        self.assertEqual(results["flags"]["epochs"], 2)
        self.assertEqual(results["flags"]["schedule"], "cosine")
        self.assertEqual(results["flags"]["steps_per_execution"], 20)
        self.assertEqual(results["network"], {"width": 8, "num_blocks": 8})
        self.assertTrue(results["jit_compile"])  # Point sets: XLA.
        self.assertEqual(set(results["runs"]), {"single_level", "multilevel"})
        self.assertEqual(
            results["schemes"]["multilevel"],
            dict(train.DEFAULT_SCHEME, num_levels=2),
        )
        for method, (run,) in results["runs"].items():
            self.assertEqual(run["method"], method)
            self.assertEqual(run["seed"], 0)
            for key in ("accuracies", "epoch_times", "work", "levels"):
                self.assertLen(run[key], 2, f"{method} {key}")
        single = results["runs"]["single_level"][0]
        # Plain fit: one fine gradient per batch (20000 / 250 per epoch).
        self.assertEqual(single["work"], [80.0, 160.0])
        self.assertEqual(single["levels"], [0, 0])
        self.assertEqual(results["runs"]["multilevel"][0]["levels"][0], 1)
        # Default target: plain fit's final accuracy less 0.5 points.
        self.assertAllClose(
            results["target"]["value"], single["accuracies"][-1] - 0.005
        )

        with open(os.path.join(output_dir, "curves.png"), "rb") as file:
            png = file.read()
        self.assertTrue(png.startswith(_PNG_SIGNATURE))
        self.assertGreater(len(png), 10_000)

        for method in ("single_level", "multilevel"):
            events = glob.glob(
                os.path.join(output_dir, "tensorboard", method, "seed_0",
                             "**", "events.out.tfevents.*"),
                recursive=True,
            )
            self.assertNotEmpty(events, method)

    def test_unknown_dataset_is_a_short_error(self):
        tmp = _tempdir(self)
        result = _run_job(
            ["--dataset=nope", f"--data_dir={tmp}", f"--output_dir={tmp}/o"],
            cwd=tmp,
        )
        self.assertEqual(result.returncode, 1)
        self.assertNotIn("Traceback", result.stderr)
        last_lines = result.stderr.strip().splitlines()[-2:]
        self.assertStartsWith(last_lines[0], "Error: Unknown data set 'nope'")
        for name in ("peaks", "spiral", "ellipses"):
            self.assertIn(name, last_lines[0])
        self.assertFalse(os.path.exists(os.path.join(tmp, "o")))


class _StopBeforeTraining(Exception):
    """Raised by a stand-in for `train._fit` to end `main` early."""


class MainTest(tf.test.TestCase, parameterized.TestCase):
    """`main` in this process, with flags set by `flagsaver`."""

    def _main_error(self, **flag_values):
        tmp = _tempdir(self)
        with flagsaver.flagsaver(data_dir=tmp, **flag_values):
            with self.assertRaises(SystemExit) as raised:
                train.main(["train"])
        return str(raised.exception.code)

    def test_levels_that_cannot_be_built(self):
        message = self._main_error(dataset="spiral", blocks=8, levels=5)
        self.assertStartsWith(message, "Error: Cannot build 5 levels")

    def test_unknown_dataset_config(self):
        message = self._main_error(dataset="spiral/7")
        self.assertStartsWith(
            message, "Error: The local data set 'spiral' has no config '7'"
        )
        self.assertIn("'spiral/2', 'spiral/3', 'spiral/5'", message)

    @parameterized.named_parameters(
        ("is_a_file", ()), ("is_under_a_file", ("run",))
    )
    def test_output_dir_at_a_file_fails_before_training(self, below):
        path = os.path.join(_tempdir(self), "results.txt")
        with open(path, "w") as file:
            file.write("keep me")
        output_dir = os.path.join(path, *below)
        with mock.patch.object(train, "_fit") as fit:
            message = self._main_error(
                dataset="spiral", blocks=4, levels=2, output_dir=output_dir
            )
        fit.assert_not_called()
        self.assertStartsWith(
            message, f"Error: Cannot create --output_dir={output_dir!r}"
        )
        with open(path) as file:
            self.assertEqual(file.read(), "keep me")

    def test_batch_size_above_the_training_split_fails_before_training(self):
        output_dir = os.path.join(_tempdir(self), "out")
        message = self._main_error(
            dataset="spiral", blocks=4, levels=2, batch_size=100_000,
            output_dir=output_dir,
        )
        self.assertStartsWith(
            message,
            "Error: --batch_size=100000 is larger than the training split of "
            "'spiral' (20000 examples)",
        )
        self.assertIn("Pass a smaller --batch_size", message)
        self.assertFalse(os.path.exists(output_dir))

    @parameterized.named_parameters(("nan", float("nan")), ("zero", 0.0))
    def test_a_learning_rate_that_is_not_positive(self, rate):
        output_dir = os.path.join(_tempdir(self), "out")
        message = self._main_error(
            dataset="spiral", learning_rate=rate, output_dir=output_dir
        )
        self.assertStartsWith(
            message, f"Error: --learning_rate={rate} is not a positive number"
        )
        self.assertFalse(os.path.exists(output_dir))

    def test_a_diverging_learning_rate(self):
        message = self._main_error(
            dataset="spiral", blocks=4, width=4, epochs=2, levels=2,
            batch_size=250, optimizer="sgd", learning_rate=3e38,
            jit_compile=False,
        )
        self.assertStartsWith(
            message,
            "Error: the single_level run diverged: its loss is NaN or Inf in "
            "epoch 1.",
        )
        self.assertIn("pass a smaller --learning_rate (it was 3e+38)", message)

    def test_steps_per_execution_reaches_compile(self):
        compiled = {}

        def stop_before_the_second_fit(name, model, data, seed, output_dir):
            del data, seed, output_dir  # Unused: nothing trains.
            compiled[name] = model.steps_per_execution
            if len(compiled) == 2:
                raise _StopBeforeTraining

        with mock.patch.object(
            train, "_fit", side_effect=stop_before_the_second_fit
        ), flagsaver.flagsaver(
            dataset="spiral", blocks=4, width=4, levels=2,
            steps_per_execution=7, data_dir=_tempdir(self),
            output_dir=os.path.join(_tempdir(self), "out"),
        ):
            with self.assertRaises(_StopBeforeTraining):
                train.main(["train"])
        self.assertEqual(compiled, {"single_level": 7, "multilevel": 7})

    def test_scheme_flags_reach_the_multilevel_model(self):
        built = {}

        def stop_before_training(name, model, data, seed, output_dir):
            del data, seed, output_dir  # Unused: nothing trains.
            built[name] = model
            raise _StopBeforeTraining

        with mock.patch.object(
            train, "_fit", side_effect=stop_before_training
        ), flagsaver.flagsaver(
            dataset="spiral", blocks=8, width=4, levels=2, compare=False,
            coarsening_factor=4, level_patience=2, max_level_epochs=3,
            coarse_learning_rate_scale="dt", data_dir=_tempdir(self),
            output_dir=os.path.join(_tempdir(self), "out"),
        ):
            with self.assertRaises(_StopBeforeTraining):
                train.main(["train"])
        model = built["multilevel"]
        self.assertEqual(model.level_patience, 2)
        self.assertEqual(model.max_level_epochs, 3)
        self.assertEqual(model.coarse_learning_rate_scale, "dt")

    @parameterized.named_parameters(
        ("not_a_number", "fast", "--coarse_learning_rate_scale='fast' is"),
        ("zero", "0", "`coarse_learning_rate_scale` must be 'dt'"),
        (
            "limit_without_nested_iteration",
            None,
            "`max_level_epochs` limits the epochs per coarse level",
        ),
    )
    def test_bad_scheme_flags_fail_before_training(self, scale, expected):
        output_dir = os.path.join(_tempdir(self), "out")
        other_flags = {} if scale else dict(
            nested_iteration=False, cycle="V", max_level_epochs=2
        )
        message = self._main_error(
            dataset="spiral", blocks=8, width=4, levels=2,
            coarse_learning_rate_scale=scale, output_dir=output_dir,
            **other_flags,
        )
        self.assertStartsWith(message, "Error: " + expected)
        self.assertFalse(os.path.exists(output_dir))

    def test_unexpected_arguments(self):
        with self.assertRaises(SystemExit) as raised:
            train.main(["train", "extra"])
        self.assertIn("Unexpected arguments: extra", str(raised.exception.code))

    def test_without_compare_trains_only_the_multilevel_method(self):
        tmp = _tempdir(self)
        output_dir = os.path.join(tmp, "out")
        with flagsaver.flagsaver(
            dataset="spiral", blocks=4, width=4, epochs=1, levels=2,
            coarsening_factor=2, batch_size=500, compare=False, target=0.25,
            jit_compile=False,
            data_dir=tmp, output_dir=output_dir,
        ):
            train.main(["train"])
        with open(os.path.join(output_dir, "results.json")) as file:
            results = json.load(file)
        self.assertEqual(list(results["runs"]), ["multilevel"])
        self.assertEqual(results["target"], {"value": 0.25, "rule": "--target"})
        self.assertFalse(results["flags"]["compare"])


class ImageDataTest(tf.test.TestCase):
    """The job on image data sets builds a conv ODE-ResNet."""

    def _train(self, **flag_values):
        tmp = _tempdir(self)
        output_dir = os.path.join(tmp, "out")
        with flagsaver.flagsaver(
            blocks=2, width=4, epochs=1, levels=2, coarsening_factor=2,
            batch_size=100,
            compare=False, target=0.0, data_dir=tmp,
            output_dir=output_dir, **flag_values,
        ), mock.patch.object(
            train, "MultilevelModel", wraps=train.MultilevelModel
        ) as multilevel:
            train.main(["train"])
        with open(os.path.join(output_dir, "results.json")) as file:
            return multilevel.call_args.args[0], json.load(file)

    def test_shapes_trains_a_two_stage_conv_network(self):
        fine, results = self._train(dataset="shapes", batch_norm=True)
        self.assertEqual(fine.name, "ode_resnet")
        self.assertEqual(fine.input_shape, (None, 28, 28, 1))
        self.assertEqual(
            [(s.block.filters, s.num_blocks) for s in fine.layers
             if hasattr(s, "stacked_weights")],
            [(4, 2), (8, 2)],
        )
        self.assertEqual(fine.layers[1].block.normalization, "batch")
        self.assertFalse(results["jit_compile"])  # Images: no XLA.
        (run,) = results["runs"]["multilevel"]
        self.assertLen(run["accuracies"], 1)

    def test_mnist_validates_on_test_split(self):
        with tfds.testing.mock_data(num_examples=200):
            fine, results = self._train(dataset="mnist", stages=1)
        self.assertEqual(fine.input_shape, (None, 28, 28, 1))
        self.assertEqual(fine.output_shape, (None, 10))
        self.assertLen(results["runs"]["multilevel"][0]["accuracies"], 1)

    def test_fine_network_takes_its_kind_of_default_size(self):
        stacks = [
            (stack.block.filters, stack.num_blocks)
            for stack in train.fine_network((8, 8, 1), 3).layers
            if hasattr(stack, "stacked_weights")
        ]
        self.assertEqual(
            stacks,
            [(train.CONV_NETWORK["width"], train.CONV_NETWORK["num_blocks"]),
             (2 * train.CONV_NETWORK["width"],
              train.CONV_NETWORK["num_blocks"])],
        )

    def test_fine_network_rejects_other_shapes(self):
        with self.assertRaisesRegex(ValueError, r"vectors .*images.*\(4, 4\)"):
            train.fine_network((4, 4), 3)


class NetworkSizeTest(tf.test.TestCase, parameterized.TestCase):

    @parameterized.named_parameters(
        ("vectors", (2,), train.DENSE_NETWORK),
        ("images", (28, 28, 1), train.CONV_NETWORK),
    )
    def test_defaults_by_kind_of_example(self, input_shape, expected):
        self.assertEqual(train.network_size(input_shape), expected)
        self.assertEqual(
            train.network_size(input_shape, width=3),
            dict(expected, width=3),
        )
        self.assertEqual(
            train.network_size(input_shape, num_blocks=5),
            dict(expected, num_blocks=5),
        )

    def test_default_flags_leave_the_size_to_the_data_set(self):
        self.assertIsNone(flags.FLAGS["width"].default)
        self.assertIsNone(flags.FLAGS["blocks"].default)
        self.assertIsNone(flags.FLAGS["jit_compile"].default)

    @parameterized.named_parameters(
        ("vectors", (2,), True), ("images", (28, 28, 1), False)
    )
    def test_xla_by_kind_of_example_unless_chosen(self, shape, expected):
        self.assertEqual(train.uses_xla(shape), expected)
        for choice in (True, False):
            self.assertEqual(train.uses_xla(shape, choice), choice)


class SchemeTest(tf.test.TestCase):

    def test_unset_flags_mean_default_scheme(self):
        for name in (
            "levels", "coarsening_factor", "cycle", "nested_iteration",
            "level_patience", "max_level_epochs", "coarse_learning_rate_scale",
        ):
            self.assertIsNone(flags.FLAGS[name].default, name)
        self.assertEqual(train.multilevel_scheme(), train.DEFAULT_SCHEME)
        self.assertIsNot(train.multilevel_scheme(), train.DEFAULT_SCHEME)
        self.assertEqual(
            train.multilevel_scheme(num_levels=None, cycle=None),
            train.DEFAULT_SCHEME,
        )

    def test_default_scheme_is_the_one_source_of_defaults(self):
        with mock.patch.dict(
            train.DEFAULT_SCHEME, num_levels=3, cycle="V", coarse_steps=4
        ):
            scheme = train.multilevel_scheme()
        self.assertEqual(scheme["num_levels"], 3)
        self.assertEqual(scheme["cycle"], "V")
        self.assertEqual(scheme["coarse_steps"], 4)

    def test_flags_override_the_scheme(self):
        scheme = train.multilevel_scheme(
            num_levels=3, cycle="W", nested_iteration=True, coarsening_factor=2,
            level_patience=2, max_level_epochs=4,
            coarse_learning_rate_scale="dt",
        )
        self.assertEqual(
            scheme,
            dict(
                train.DEFAULT_SCHEME,
                num_levels=3,
                cycle="W",
                nested_iteration=True,
                coarsening_factor=2,
                level_patience=2,
                max_level_epochs=4,
                coarse_learning_rate_scale="dt",
            ),
        )

    def test_a_level_epoch_limit_given_without_nested_iteration_stays(self):
        scheme = train.multilevel_scheme(
            cycle="V", nested_iteration=False, max_level_epochs=2
        )
        self.assertEqual(scheme["max_level_epochs"], 2)

    def test_learning_rate_scale_parses_dt_and_numbers(self):
        self.assertIsNone(train.learning_rate_scale(None))
        self.assertEqual(train.learning_rate_scale("dt"), "dt")
        self.assertEqual(train.learning_rate_scale("0.5"), 0.5)
        self.assertEqual(train.learning_rate_scale("8"), 8.0)
        for text in ("fast", "DT", ""):
            with self.assertRaisesRegex(ValueError, "neither 'dt' nor"):
                train.learning_rate_scale(text)

    def test_without_nested_iteration_the_level_epoch_limit_goes(self):
        with mock.patch.dict(train.DEFAULT_SCHEME, max_level_epochs=3):
            scheme = train.multilevel_scheme(
                cycle="V", nested_iteration=False
            )
        self.assertNotIn("max_level_epochs", scheme)
        self.assertFalse(scheme["nested_iteration"])
        # The scheme builds: no "max_level_epochs without nested iteration".
        fine = train.fine_network((2,), 3, width=4, num_blocks=8)
        model = train.MultilevelModel(fine, **scheme)
        self.assertEqual(model.active_level, 0)


def _runs(**finals):
    """One run per seed for each method, its final accuracies as given."""
    return {
        method: [
            protocol.Run("spiral", method, {}, seed, [0.1, final], [1.0, 2.0],
                         [1.0, 2.0], [0, 0])
            for seed, final in enumerate(values)
        ]
        for method, values in finals.items()
    }


class SelectTargetTest(tf.test.TestCase):

    def test_default_is_the_baseline_median_final_less_half_a_point(self):
        target, rule = train.select_target(
            _runs(single_level=[0.9, 0.8, 0.92], multilevel=[0.95] * 3)
        )
        self.assertAllClose(target, 0.895)
        self.assertIn(reporting.BASELINE, rule)

    def test_without_baseline_the_method_own_final(self):
        target, rule = train.select_target(_runs(multilevel=[0.95]))
        self.assertAllClose(target, 0.945)
        self.assertIn("multilevel", rule)

    def test_absolute_target(self):
        self.assertEqual(
            train.select_target(_runs(single_level=[0.9]), 0.5),
            (0.5, "--target"),
        )


class VerdictTest(tf.test.TestCase, parameterized.TestCase):

    def test_one_seed_is_too_noisy(self):
        runs = _runs(single_level=[0.9], multilevel=[0.9])
        self.assertIn("One seed is too noisy", train.verdict(runs, 0.5))

    @parameterized.named_parameters(
        ("agree", [0.9, 0.9, 0.9], "on 3 of 3 seeds (every seed agrees)"),
        ("disagree", [0.9, 0.1, 0.9], "on 2 of 3 seeds (the seeds disagree)"),
    )
    def test_seeds_that_agree_or_not(self, finals, expected):
        # Plain fit reaches 0.5 at 20 s on every seed; the multilevel
        # method at 10 s, or never where its final accuracy is 0.1.
        runs = _runs(single_level=[0.9] * 3, multilevel=finals)
        for run in runs["single_level"]:
            run.epoch_times = [10.0, 20.0]
        for run in runs["multilevel"]:
            run.epoch_times = [5.0, 10.0]
        self.assertIn(expected, train.verdict(runs, 0.5))

    def test_nothing_to_rank_without_a_baseline(self):
        self.assertEqual(train.verdict(_runs(multilevel=[0.9]), 0.5), "")


class LearningRateTest(tf.test.TestCase):

    def test_constant_or_warm_up_and_cosine_decay_over_the_budget(self):
        self.assertEqual(train.learning_rate("constant", 0.01, 100), 0.01)
        schedule = train.learning_rate("cosine", 0.01, 100)
        self.assertAllClose(
            [schedule(0), schedule(5), schedule(100)], [0.0, 0.01, 0.0]
        )


if __name__ == "__main__":
    tf.test.main()

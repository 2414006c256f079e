"""Tests for keras_mlres.protocol on hand-made runs."""

import math

import numpy as np

from absl.testing import absltest
from absl.testing import parameterized

from keras_mlres import protocol


def _run(accuracies, epoch_seconds=10.0, seed=0, config=None, levels=None,
         work_per_epoch=100.0, method="single level"):
    """A run whose epochs each take `epoch_seconds` (a list or a number)."""
    count = len(accuracies)
    if not isinstance(epoch_seconds, list):
        epoch_seconds = [epoch_seconds] * count
    times = [sum(epoch_seconds[: i + 1]) for i in range(count)]
    return protocol.Run(
        "task", method,
        config or dict(optimizer="adam", learning_rate=0.01,
                       schedule="cosine", epochs=count),
        seed, list(accuracies), times,
        [work_per_epoch * (i + 1) for i in range(count)],
        levels or [0] * count,
    )


def _config(rate, epochs=3, schedule="cosine"):
    return dict(optimizer="adam", learning_rate=rate, schedule=schedule,
                epochs=epochs)


class ReachTest(parameterized.TestCase):

    def test_the_end_of_the_first_epoch_at_or_above_the_target(self):
        reached = protocol.reach(_run([0.5, 0.9, 0.95, 0.99]), 0.9)
        self.assertEqual(reached, protocol.Reach(2, 20.0, 200.0))
        self.assertTrue(reached.reached)

    def test_a_tie_reaches_the_target(self):
        self.assertEqual(protocol.reach(_run([0.8, 0.9]), 0.9).epochs, 2)

    @parameterized.named_parameters(
        ("miss", [0.5, 0.89]), ("no_epoch", []),
    )
    def test_a_run_that_never_reaches_it_takes_forever(self, accuracies):
        reached = protocol.reach(_run(accuracies), 0.9)
        self.assertEqual(
            (reached.epochs, reached.time, reached.work),
            (math.inf, math.inf, math.inf),
        )
        self.assertFalse(reached.reached)


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
            protocol.first_epoch_reaching(values, target), expected
        )

    def test_accepts_numpy_values(self):
        self.assertEqual(
            protocol.first_epoch_reaching(np.array([0.1, 0.7]), 0.6), 2
        )


class TargetTest(absltest.TestCase):

    def test_median_final_accuracy_less_half_a_point(self):
        self.assertAlmostEqual(
            protocol.target_accuracy([0.97, 0.99, 0.98, 0.96, 0.995]), 0.975
        )

    def test_final_accuracy_of_a_run_without_epochs_is_zero(self):
        self.assertEqual(_run([]).final_accuracy, 0.0)


class SpeedupTest(parameterized.TestCase):

    @parameterized.named_parameters(
        ("faster", 100.0, 25.0, 4.0),
        ("tie", 50.0, 50.0, 1.0),
        ("method_misses", 100.0, math.inf, 0.0),
        ("baseline_misses", math.inf, 30.0, math.inf),
        ("both_miss", math.inf, math.inf, None),
    )
    def test_baseline_over_method(self, baseline, method, expected):
        self.assertEqual(protocol.speedup(baseline, method), expected)

    def test_per_seed_speedups_pair_runs_by_seed(self):
        # Seed 0: 30 s / 10 s; seed 1: 40 s / 40 s; seed 2: the method
        # misses; seed 3: only the baseline has a run.
        baseline = [
            _run([0.5, 0.5, 0.95], seed=0),
            _run([0.5, 0.5, 0.5, 0.95], seed=1),
            _run([0.95], seed=2),
            _run([0.95], seed=3),
        ]
        method = [
            _run([0.95], seed=0, work_per_epoch=50.0),
            _run([0.5, 0.95], epoch_seconds=20.0, seed=1),
            _run([0.5], seed=2),
        ]
        result = protocol.speedups(baseline, method, 0.9)
        self.assertEqual(result["time"],
                         protocol.Spread(1.0, 0.0, 3.0, 3))
        self.assertEqual(result["work"].median, 2.0)
        self.assertEqual(result["work"].high, 6.0)
        self.assertEqual(str(result["time"]), "1.00 (0.00-3.00)")

    def test_spread_without_any_comparison_is_na(self):
        self.assertEqual(str(protocol.spread([None, None])), "n/a")
        self.assertEqual(str(protocol.spread([math.inf])), "inf")


class ChoiceTest(absltest.TestCase):

    def test_fastest_configuration_by_median_time_over_seeds(self):
        slow = [_run([0.5, 0.95], seed=s, config=_config(0.01))
                for s in range(3)]
        # Fast on two seeds of three, missing on one: its median is fast.
        fast = [_run([0.95], seed=0, config=_config(0.03)),
                _run([0.95], seed=1, config=_config(0.03)),
                _run([0.5], seed=2, config=_config(0.03))]
        chosen = protocol.fastest(slow + fast, 0.9)
        self.assertEqual(chosen[0].config["learning_rate"], 0.03)
        self.assertLen(chosen, 3)

    def test_a_tie_in_time_goes_to_the_better_final_accuracy(self):
        worse = _run([0.95, 0.93], config=_config(0.01, epochs=2))
        better = _run([0.95, 0.97], config=_config(0.03, epochs=2))
        chosen = protocol.fastest([worse, better], 0.9)
        self.assertEqual(chosen, [better])

    def test_most_accurate_by_median_final_accuracy(self):
        runs = [_run([0.9, 0.96], config=_config(0.01, epochs=2)),
                _run([0.97, 0.95], config=_config(0.03, epochs=2))]
        self.assertEqual(protocol.most_accurate(runs), runs[:1])

    def test_most_accurate_tie_goes_to_the_shorter_budget(self):
        long = _run([0.9, 0.96], config=_config(0.01, epochs=2))
        short = _run([0.96], config=_config(0.01, epochs=1))
        self.assertEqual(protocol.most_accurate([long, short]), [short])

    def test_config_name(self):
        self.assertEqual(protocol.config_name(_config(0.003, epochs=6)),
                         "adam 0.003 cosine 6 ep")


class CostModelTest(absltest.TestCase):

    def test_epoch_cost_share_and_ceiling(self):
        # Fine epochs take 10 s after a 30 s first epoch (compile).
        single = _run([0.5] * 4, epoch_seconds=[30.0, 10.0, 10.0, 10.0])
        # Level 2: 3 epochs of 2.5 s after a 5 s first one; level 1: one
        # epoch of 5 s; level 0: 2 epochs of 10 s after a 12 s one.
        multilevel = _run(
            [0.5] * 7,
            epoch_seconds=[5.0, 2.5, 2.5, 5.0, 12.0, 10.0, 10.0],
            levels=[2, 2, 2, 1, 0, 0, 0], method="multilevel",
        )
        model = protocol.cost_model(multilevel, single)
        self.assertEqual(model.epoch_cost, {0: 1.0, 1: 0.5, 2: 0.25})
        self.assertEqual(model.epoch_share, {0: 3 / 7, 1: 1 / 7, 2: 3 / 7})
        self.assertAlmostEqual(
            model.ceiling, 1 / (3 / 7 * 1.0 + 1 / 7 * 0.5 + 3 / 7 * 0.25)
        )
        self.assertEqual(
            str(model),
            "L2: 43% of epochs at 0.25x; L1: 14% of epochs at 0.50x; "
            "L0: 43% of epochs at 1.00x; ceiling 1.65x",
        )

    def test_single_level_run_has_ceiling_one(self):
        run = _run([0.5] * 3)
        self.assertAlmostEqual(protocol.cost_model(run, run).ceiling, 1.0)

    def test_no_epoch_no_model(self):
        self.assertIsNone(protocol.cost_model(_run([]), _run([0.5])))


if __name__ == "__main__":
    absltest.main()

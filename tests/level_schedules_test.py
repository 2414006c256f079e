"""Tests for keras_mlres.level_schedules."""

from absl.testing import absltest
from absl.testing import parameterized

from keras_mlres import level_schedules


class LevelEpochsTest(parameterized.TestCase):

    @parameterized.parameters(
        ((0.5, 0.25, 0.25), 10, (5, 3, 2)),
        ((0.5, 0.25, 0.25), 8, (4, 2, 2)),
        ((0.8, 0.2), 6, (5, 1)),
        ((0.6, 0.1, 0.3), 6, (4, 0, 2)),
        ((1.0,), 3, (3,)),
        ((0.9, 0.1), 1, (1, 0)),
    )
    def test_shares_rounded_at_the_cumulative_share(
        self, budget, epochs, expected
    ):
        counts = level_schedules.level_epochs(budget, epochs)
        self.assertEqual(counts, expected)
        self.assertEqual(sum(counts), epochs)

    def test_each_epochs_level_follows_the_counts(self):
        budget = (0.6, 0.1, 0.3)  # 4, 0 and 2 epochs of 6.
        self.assertEqual(
            [level_schedules.level_at(budget, e, 6) for e in range(6)],
            [2, 2, 2, 2, 0, 0],
        )

    def test_epochs_past_the_budget_are_fine_epochs(self):
        self.assertEqual(level_schedules.level_at((0.5, 0.5), 7, 4), 0)


class CheckLevelBudgetTest(parameterized.TestCase):

    def test_returns_floats(self):
        self.assertEqual(
            level_schedules.check_level_budget([3 / 4, 1 / 4], 2),
            (0.75, 0.25),
        )

    @parameterized.named_parameters(
        ("not_a_sequence", 0.5, 2, "is not a sequence"),
        ("string", "0.5,0.5", 2, "is not a sequence"),
        ("wrong_length", [0.5, 0.5], 3, "has 2 entries for 3 levels"),
        ("negative", [1.5, -0.5], 2, "not a number >= 0"),
        ("nan", [float("nan"), 1.0], 2, "not a number >= 0"),
        ("bool", [True, 0.0], 2, "not a number >= 0"),
        ("no_fine_epochs", [1.0, 0.0], 2, "gives the fine level"),
        ("sum", [0.5, 0.25, 0.5], 3, "sums to 1.25, not 1"),
    )
    def test_bad_budgets_name_the_problem_and_an_example(
        self, budget, num_levels, message
    ):
        with self.assertRaisesRegex(ValueError, message) as raised:
            level_schedules.check_level_budget(budget, num_levels)
        self.assertIn("`level_budget`", str(raised.exception))
        self.assertIn("summing to 1, such as [0.5", str(raised.exception))


if __name__ == "__main__":
    absltest.main()

"""Tests of the `ellipses` data set: the painter's-order labelling.

The checks shared by every point builder (split sizes, domain, label range,
class balance, determinism, stored data equal to the seeded generator, info
and tfds' builder checks) run for `Ellipses` in points_test.py.
"""

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from keras_mlres.datasets import ellipses


class EllipsesLabelsTest(parameterized.TestCase, tf.test.TestCase):
    """Checks the painter's-order labelling."""

    @parameterized.named_parameters(
        ("far_corner", (1.9, -1.9), 0),
        ("large_ellipse_only", (0.0, -0.9), 1),
        ("first_nested", (-1.0, -0.1), 2),
        ("second_nested_on_top", (0.35, -0.2), 3),
        ("crossing_one_inside", (1.05, 0.55), 4),
        ("crossing_one_outside", (1.35, 1.0), 4),
    )
    def test_known_points(self, point, label):
        self.assertEqual(ellipses.ellipses_labels([point])[0], label)

    def test_overlaps_and_nesting(self):
        # The second nested ellipse covers part of the first one, and the
        # last ellipse lies partly outside the large one.
        points = np.random.default_rng(0).uniform(-2, 2, size=(100000, 2))
        only = [ellipses.ellipses_labels(points, [e]) > 0
                for e in ellipses.ELLIPSES]
        self.assertTrue(np.any(only[1] & only[2]))
        self.assertTrue(np.any(only[3] & ~only[0]))
        self.assertTrue(np.any(only[3] & only[0]))
        self.assertFalse(np.any(only[1] & ~only[0]))  # Nested.
        self.assertFalse(np.any(only[2] & ~only[0]))  # Nested.

    def test_make_ellipses_exact_balance_odd_size(self):
        _, labels = ellipses.make_ellipses(13, seed=0)
        self.assertAllEqual(np.sort(np.bincount(labels)), [2, 2, 3, 3, 3])

    def test_builder_points_match_the_ellipses(self):
        # The stored splits are exactly these draws (points_test.py): each
        # point lies in the region of its class.
        sizes = ellipses.Ellipses.BUILDER_CONFIGS[0].split_sizes()
        for index, split in enumerate(("train", "validation", "test")):
            rng = np.random.default_rng([ellipses.Ellipses.SEED, index])
            features, labels = ellipses.make_ellipses(sizes[split], seed=rng)
            self.assertAllEqual(labels, ellipses.ellipses_labels(features))


if __name__ == "__main__":
    tf.test.main()

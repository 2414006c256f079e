"""Tests of the `peaks` data set: the peaks function and its level sets.

The checks shared by every point builder (split sizes, domain, label range,
class balance, determinism, stored data equal to the seeded generator,
info and tfds' builder checks) run for `Peaks` in points_test.py.
"""

import numpy as np
import tensorflow as tf

from keras_mlres.datasets import peaks


class PeaksFunctionTest(tf.test.TestCase):
    """Checks the peaks function and its class thresholds."""

    def test_peaks_function_values(self):
        # z(0, 0) = (3 - 1/3) / e; the global maximum is near (-0.0093, 1.58).
        self.assertAllClose(peaks.peaks_function(0.0, 0.0), (3 - 1 / 3) / np.e)
        self.assertAllClose(peaks.peaks_function(-0.0093, 1.5814), 8.1062, atol=1e-3)

    def test_thresholds_are_quintiles(self):
        thresholds = peaks.peaks_thresholds()
        self.assertEqual(thresholds.shape, (4,))
        self.assertAllGreater(np.diff(thresholds), 0.0)
        points = np.random.default_rng(0).uniform(-3, 3, size=(200000, 2))
        fractions = np.bincount(peaks.peaks_labels(points), minlength=5) / 2e5
        self.assertAllClose(fractions, [0.2] * 5, atol=0.01)

    def test_make_peaks_is_seeded(self):
        x1, y1 = peaks.make_peaks(100, seed=3)
        x2, y2 = peaks.make_peaks(100, seed=3)
        x3, _ = peaks.make_peaks(100, seed=4)
        self.assertAllEqual(x1, x2)
        self.assertAllEqual(y1, y2)
        self.assertNotAllClose(x1, x3)

    def test_builder_labels_are_the_level_sets(self):
        # The stored splits are exactly these draws (points_test.py), so
        # their labels are the bands of z of their float32 features:
        # band c is [bounds[c], bounds[c + 1]).
        bounds = np.r_[-np.inf, peaks.peaks_thresholds(), np.inf]
        sizes = peaks.Peaks.BUILDER_CONFIGS[0].split_sizes()
        for index, split in enumerate(("train", "validation", "test")):
            rng = np.random.default_rng([peaks.Peaks.SEED, index])
            features, labels = peaks.make_peaks(sizes[split], seed=rng)
            self.assertAllEqual(labels, peaks.peaks_labels(features))
            z = peaks.peaks_function(features[:, 0], features[:, 1])
            self.assertAllGreaterEqual(z - bounds[labels], 0.0)
            self.assertAllLess(z - bounds[labels + 1], 0.0)


if __name__ == "__main__":
    tf.test.main()

"""Tests of the `peaks` data set builder."""

import shutil
import tempfile

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from absl.testing import parameterized

from keras_mlres.datasets import peaks

try:  # tfds.testing.DatasetBuilderTestCase imports dill.
    import dill  # noqa: F401

    _HAS_DILL = True
except ImportError:
    _HAS_DILL = False
_NO_DILL = "tfds.testing.DatasetBuilderTestCase needs dill: pip install dill"

_SMALL = peaks.PeaksConfig(
    name="small", num_train=200, num_validation=50, num_test=50
)


def _build_arrays(data_dir, config=None):
    """Generates the data set in `data_dir`, returns {split: (x, y)}."""
    builder = peaks.Peaks(data_dir=data_dir, config=config)
    builder.download_and_prepare()
    arrays = tfds.as_numpy(
        builder.as_dataset(batch_size=-1, as_supervised=True)
    )
    return builder, arrays


def _sorted_rows(features, labels):
    """Returns the `(x, y, label)` rows sorted, to compare regardless of order."""
    rows = np.column_stack([features.astype(np.float64), labels])
    return rows[np.lexsort(rows.T[::-1])]


if _HAS_DILL:

    class PeaksBuilderTest(tfds.testing.DatasetBuilderTestCase):
        """tfds' own builder checks, on a small config."""

        DATASET_CLASS = peaks.Peaks
        BUILDER_CONFIG_NAMES_TO_TEST = [_SMALL]
        SPLITS = {"train": 200, "validation": 50, "test": 50}
        SKIP_CHECKSUMS = True  # Nothing is downloaded.
        EXAMPLE_DIR = tempfile.gettempdir()  # No dummy data needed.

else:

    class PeaksBuilderTest(tf.test.TestCase):
        def test_dataset_builder_test_case(self):
            self.skipTest(_NO_DILL)


class PeaksDataTest(parameterized.TestCase, tf.test.TestCase):
    """Checks the generated default data set."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.data_dir = tempfile.mkdtemp()
        cls.addClassCleanup(shutil.rmtree, cls.data_dir)
        cls.builder, cls.arrays = _build_arrays(cls.data_dir)

    def test_registered_name_and_info(self):
        self.assertEqual(peaks.Peaks.name, "peaks")
        self.assertIn("peaks", tfds.list_builders(with_community_datasets=False))
        info = self.builder.info
        self.assertEqual(info.supervised_keys, ("features", "label"))
        self.assertEqual(info.features["label"].num_classes, 5)
        self.assertEqual(info.features["features"].shape, (2,))
        self.assertEqual(info.features["features"].np_dtype, np.float32)
        self.assertIn("1.0.0", self.builder.RELEASE_NOTES)

    @parameterized.named_parameters(
        ("train", "train", 20000),
        ("validation", "validation", 5000),
        ("test", "test", 5000),
    )
    def test_split_sizes(self, split, size):
        self.assertEqual(self.builder.info.splits[split].num_examples, size)
        features, labels = self.arrays[split]
        self.assertEqual(features.shape, (size, 2))
        self.assertEqual(features.dtype, np.float32)
        self.assertEqual(labels.shape, (size,))

    def test_features_in_domain(self):
        for features, _ in self.arrays.values():
            self.assertAllInRange(features, -3.0, 3.0)

    def test_labels_are_the_level_sets(self):
        for features, labels in self.arrays.values():
            self.assertAllInSet(labels, range(5))
            self.assertAllEqual(labels, peaks.peaks_labels(features))

    def test_classes_are_roughly_balanced(self):
        _, labels = self.arrays["train"]
        fractions = np.bincount(labels, minlength=5) / labels.size
        self.assertAllInRange(fractions, 0.17, 0.23)

    def test_splits_differ(self):
        train, _ = self.arrays["train"]
        test, _ = self.arrays["test"]
        self.assertNotAllClose(train[:5000], test)

    def test_stored_data_is_the_seeded_generator_output(self):
        # tfds stores the examples in its own (deterministic) order.
        for index, split in enumerate(("train", "validation", "test")):
            features, labels = self.arrays[split]
            rng = np.random.default_rng([peaks.Peaks.SEED, index])
            expected = peaks.make_peaks(labels.size, seed=rng)
            self.assertAllEqual(_sorted_rows(features, labels),
                                _sorted_rows(*expected))

    def test_two_builds_are_identical(self):
        dir_a, dir_b = tempfile.mkdtemp(), tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, dir_a)
        self.addCleanup(shutil.rmtree, dir_b)
        _, arrays_a = _build_arrays(dir_a, config=_SMALL)
        _, arrays_b = _build_arrays(dir_b, config=_SMALL)
        for split, (features, labels) in arrays_a.items():
            self.assertAllEqual(arrays_b[split][0], features)
            self.assertAllEqual(arrays_b[split][1], labels)


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


if __name__ == "__main__":
    tf.test.main()

"""Tests of the `ellipses` data set builder."""

import shutil
import tempfile

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from absl.testing import parameterized

from keras_mlres.datasets import ellipses

try:  # tfds.testing.DatasetBuilderTestCase imports dill.
    import dill  # noqa: F401

    _HAS_DILL = True
except ImportError:
    _HAS_DILL = False
_NO_DILL = "tfds.testing.DatasetBuilderTestCase needs dill: pip install dill"

_SMALL = ellipses.EllipsesConfig(
    name="small", num_train=200, num_validation=50, num_test=50
)


def _build_arrays(data_dir, config=None):
    """Generates the data set in `data_dir`, returns {split: (x, y)}."""
    builder = ellipses.Ellipses(data_dir=data_dir, config=config)
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

    class EllipsesBuilderTest(tfds.testing.DatasetBuilderTestCase):
        """tfds' own builder checks, on a small config."""

        DATASET_CLASS = ellipses.Ellipses
        BUILDER_CONFIG_NAMES_TO_TEST = [_SMALL]
        SPLITS = {"train": 200, "validation": 50, "test": 50}
        SKIP_CHECKSUMS = True  # Nothing is downloaded.
        EXAMPLE_DIR = tempfile.gettempdir()  # No dummy data needed.

else:

    class EllipsesBuilderTest(tf.test.TestCase):
        def test_dataset_builder_test_case(self):
            self.skipTest(_NO_DILL)


class EllipsesDataTest(parameterized.TestCase, tf.test.TestCase):
    """Checks the generated default data set."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.data_dir = tempfile.mkdtemp()
        cls.addClassCleanup(shutil.rmtree, cls.data_dir)
        cls.builder, cls.arrays = _build_arrays(cls.data_dir)

    def test_registered_name_and_info(self):
        self.assertEqual(ellipses.Ellipses.name, "ellipses")
        builder = tfds.builder("ellipses", data_dir=self.data_dir)
        self.assertIsInstance(builder, ellipses.Ellipses)
        info = builder.info
        self.assertEqual(info.supervised_keys, ("features", "label"))
        self.assertEqual(info.features["label"].num_classes, 5)
        self.assertEqual(info.features["features"].shape, (2,))

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

    def test_features_in_domain_and_labels_match_the_ellipses(self):
        for features, labels in self.arrays.values():
            self.assertAllInRange(features, -2.0, 2.0)
            self.assertAllInSet(labels, range(5))
            self.assertAllEqual(labels, ellipses.ellipses_labels(features))

    def test_classes_are_balanced(self):
        for _, labels in self.arrays.values():
            counts = np.bincount(labels, minlength=5)
            self.assertLessEqual(counts.max() - counts.min(), 1)

    def test_stored_data_is_the_seeded_generator_output(self):
        for index, split in enumerate(("train", "validation", "test")):
            features, labels = self.arrays[split]
            rng = np.random.default_rng([ellipses.Ellipses.SEED, index])
            expected = ellipses.make_ellipses(labels.size, seed=rng)
            self.assertAllEqual(
                _sorted_rows(features, labels), _sorted_rows(*expected)
            )

    def test_two_builds_are_identical(self):
        dir_a, dir_b = tempfile.mkdtemp(), tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, dir_a)
        self.addCleanup(shutil.rmtree, dir_b)
        _, arrays_a = _build_arrays(dir_a, config=_SMALL)
        _, arrays_b = _build_arrays(dir_b, config=_SMALL)
        for split, (features, labels) in arrays_a.items():
            self.assertAllEqual(arrays_b[split][0], features)
            self.assertAllEqual(arrays_b[split][1], labels)


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


if __name__ == "__main__":
    tf.test.main()

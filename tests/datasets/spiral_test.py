"""Tests of the `spiral` data set builder."""

import shutil
import tempfile

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from absl.testing import parameterized

from keras_mlres.datasets import spiral

try:  # tfds.testing.DatasetBuilderTestCase imports dill.
    import dill  # noqa: F401

    _HAS_DILL = True
except ImportError:
    _HAS_DILL = False
_NO_DILL = "tfds.testing.DatasetBuilderTestCase needs dill: pip install dill"

_SMALL = spiral.SpiralConfig(
    name="small_4", num_arms=4, num_train=200, num_validation=60, num_test=60
)


def _build_arrays(data_dir, config=None):
    """Generates the data set in `data_dir`, returns {split: (x, y)}."""
    builder = spiral.Spiral(data_dir=data_dir, config=config)
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

    class SpiralBuilderTest(tfds.testing.DatasetBuilderTestCase):
        """tfds' own builder checks, on a small 4-arm config."""

        DATASET_CLASS = spiral.Spiral
        BUILDER_CONFIG_NAMES_TO_TEST = [_SMALL]
        SPLITS = {"train": 200, "validation": 60, "test": 60}
        SKIP_CHECKSUMS = True  # Nothing is downloaded.
        EXAMPLE_DIR = tempfile.gettempdir()  # No dummy data needed.

else:

    class SpiralBuilderTest(tf.test.TestCase):
        def test_dataset_builder_test_case(self):
            self.skipTest(_NO_DILL)


class SpiralDataTest(parameterized.TestCase, tf.test.TestCase):
    """Checks the generated data of the predefined configs."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.data_dir = tempfile.mkdtemp()
        cls.addClassCleanup(shutil.rmtree, cls.data_dir)
        cls.builders = {}
        for name in ("2", "3", "5"):
            builder = spiral.Spiral(data_dir=cls.data_dir, config=name)
            builder.download_and_prepare()
            cls.builders[name] = builder
        # Reading is the slow part (~1 s per 20000 examples): read the
        # validation split of every config, every split of the default one.
        cls.arrays = {
            name: tfds.as_numpy(
                builder.as_dataset(
                    split="validation", batch_size=-1, as_supervised=True
                )
            )
            for name, builder in cls.builders.items()
        }
        cls.default_arrays = tfds.as_numpy(
            cls.builders["3"].as_dataset(batch_size=-1, as_supervised=True)
        )

    def test_configs_and_default(self):
        self.assertEqual(spiral.Spiral.name, "spiral")
        self.assertEqual(
            [c.name for c in spiral.Spiral.BUILDER_CONFIGS], ["2", "3", "5"]
        )
        builder = tfds.builder("spiral", data_dir=self.data_dir)
        self.assertEqual(builder.builder_config.name, "3")
        self.assertEqual(builder.info.features["label"].num_classes, 3)
        self.assertEqual(builder.info.supervised_keys, ("features", "label"))

    @parameterized.named_parameters(("2", "2", 2), ("3", "3", 3), ("5", "5", 5))
    def test_split_sizes(self, name, num_arms):
        builder = self.builders[name]
        self.assertEqual(builder.info.features["label"].num_classes, num_arms)
        sizes = {"train": 20000, "validation": 5000, "test": 5000}
        for split, size in sizes.items():
            self.assertEqual(builder.info.splits[split].num_examples, size)
        features, labels = self.arrays[name]
        self.assertEqual(features.shape, (5000, 2))
        self.assertEqual(features.dtype, np.float32)
        self.assertEqual(labels.shape, (5000,))

    @parameterized.named_parameters(("2", "2", 2), ("3", "3", 3), ("5", "5", 5))
    def test_classes_are_balanced(self, name, num_arms):
        # Exactly: every arm has n // k or one more points.
        _, labels = self.arrays[name]
        counts = np.bincount(labels)
        self.assertLen(counts, num_arms)
        self.assertLessEqual(counts.max() - counts.min(), 1)

    def test_default_config_splits_are_balanced(self):
        for _, labels in self.default_arrays.values():
            counts = np.bincount(labels)
            self.assertLen(counts, 3)
            self.assertLessEqual(counts.max() - counts.min(), 1)

    @parameterized.named_parameters(("2", "2"), ("3", "3"), ("5", "5"))
    def test_features_in_range(self, name):
        features, _ = self.arrays[name]
        noise = spiral.Spiral.builder_configs[name].noise
        radius = np.linalg.norm(features, axis=-1)
        self.assertAllLessEqual(radius, 1.0 + 6 * noise)
        self.assertGreater(radius.max(), 0.95)

    def test_stored_data_is_the_seeded_generator_output(self):
        arrays = self.default_arrays
        for index, split in enumerate(("train", "validation", "test")):
            features, labels = arrays[split]
            rng = np.random.default_rng([spiral.Spiral.SEED, index])
            expected = spiral.make_spiral(labels.size, num_arms=3, seed=rng)
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


class MakeSpiralTest(parameterized.TestCase, tf.test.TestCase):
    """Checks the geometry of the arms."""

    @parameterized.named_parameters(("2_arms", 2, 1.0), ("5_arms", 5, 1.5))
    def test_noise_free_points_lie_on_their_arm(self, num_arms, turns):
        features, labels = spiral.make_spiral(
            1000, num_arms=num_arms, turns=turns, noise=0.0, seed=0
        )
        radius = np.linalg.norm(features.astype(np.float64), axis=-1)
        self.assertAllInRange(radius, 0.05 - 1e-6, 1.0 + 1e-6)
        angle = np.arctan2(features[:, 1], features[:, 0])
        # Arm j: theta = 2 pi (j / k + turns r), modulo 2 pi.
        expected = 2 * np.pi * (labels / num_arms + turns * radius)
        phase = np.angle(np.exp(1j * (angle - expected)))
        self.assertAllClose(phase, np.zeros_like(phase), atol=1e-4)


if __name__ == "__main__":
    tf.test.main()

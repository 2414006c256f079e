"""Tests of the `spiral` data set: its configs and the geometry of the arms.

The checks shared by every point builder (split sizes, domain, label range,
class balance, determinism, stored data equal to the seeded generator,
info and tfds' builder checks) run for the default `spiral/3` in
points_test.py.
"""

import shutil
import tempfile

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from absl.testing import parameterized

from keras_mlres.datasets import spiral


class SpiralConfigsTest(parameterized.TestCase, tf.test.TestCase):
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
        # validation split of every config.
        cls.arrays = {
            name: tfds.as_numpy(
                builder.as_dataset(
                    split="validation", batch_size=-1, as_supervised=True
                )
            )
            for name, builder in cls.builders.items()
        }

    def test_config_names(self):
        self.assertEqual(
            [c.name for c in spiral.Spiral.BUILDER_CONFIGS], ["2", "3", "5"]
        )

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

    @parameterized.named_parameters(("2", "2"), ("3", "3"), ("5", "5"))
    def test_features_in_range(self, name):
        features, _ = self.arrays[name]
        noise = spiral.Spiral.builder_configs[name].noise
        radius = np.linalg.norm(features, axis=-1)
        self.assertAllLessEqual(radius, 1.0 + 6 * noise)
        self.assertGreater(radius.max(), 0.95)


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

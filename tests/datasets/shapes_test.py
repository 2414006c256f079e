"""Tests of the `shapes` image data set."""

import shutil
import tempfile

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from absl.testing import parameterized

import keras_mlres  # noqa: F401  Registers the builders.
from keras_mlres.datasets import shapes


class MakeShapesTest(parameterized.TestCase, tf.test.TestCase):

    @parameterized.named_parameters(("28", 28), ("32", 32))
    def test_images_labels_and_balance(self, size):
        images, labels = shapes.make_shapes(600, image_size=size, seed=3)
        self.assertEqual(images.shape, (600, size, size, 1))
        self.assertEqual(images.dtype, np.uint8)
        self.assertEqual(labels.dtype, np.int64)
        self.assertAllEqual(np.bincount(labels), [100] * 6)
        self.assertGreater(images.max(), 200)  # Bright shapes ...
        self.assertLess(np.median(images), 120)  # ... on darker noise.

    def test_deterministic_per_seed(self):
        first = shapes.make_shapes(50, seed=1)
        again = shapes.make_shapes(50, seed=1)
        other = shapes.make_shapes(50, seed=2)
        self.assertAllEqual(first[0], again[0])
        self.assertAllEqual(first[1], again[1])
        self.assertNotAllClose(first[0], other[0])

    def test_brightness_is_a_weak_cue(self):
        # Random brightness, background and size make an image's mean pixel
        # vary within a class more than the class means (which differ through
        # the shapes' areas) vary between classes: the outline decides.
        images, labels = shapes.make_shapes(1200, seed=0)
        means = images.reshape(len(images), -1).mean(axis=1)
        class_means = [means[labels == c].mean() for c in range(6)]
        within = np.mean([means[labels == c].std() for c in range(6)])
        self.assertLess(max(class_means) - min(class_means), 2.0 * within)

    def test_every_class_draws_its_own_mask(self):
        # One shape of each class at the same place, size and angle: the six
        # masks are pairwise different and non-empty.
        grid = np.arange(28) + 0.5
        u = (grid[None, None, :] - 14.0) * np.ones((1, 28, 28))
        v = (grid[None, :, None] - 14.0) * np.ones((1, 28, 28))
        masks = [
            shapes._inside(label, u, v, np.full((1, 1, 1), 9.0))[0]
            for label in range(6)
        ]
        for a in range(6):
            self.assertGreater(masks[a].sum(), 20)
            for b in range(a):
                self.assertGreater(np.sum(masks[a] != masks[b]), 10,
                                   msg=(shapes.CLASSES[a], shapes.CLASSES[b]))

    @parameterized.named_parameters(("small", 8), ("float", 28.0))
    def test_bad_image_size(self, size):
        with self.assertRaisesRegex(ValueError, "image_size"):
            shapes.make_shapes(4, image_size=size)


class ShapesBuilderTest(tf.test.TestCase):

    def test_tfds_load_after_import(self):
        data_dir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, data_dir)
        small = shapes.ShapesConfig(
            name="small", image_size=32, num_train=60, num_validation=12,
            num_test=12,
        )
        builder = tfds.builder("shapes", config=small, data_dir=data_dir)
        builder.download_and_prepare()
        info = builder.info
        self.assertEqual(info.supervised_keys, ("image", "label"))
        self.assertEqual(info.features["image"].shape, (32, 32, 1))
        self.assertEqual(info.features["label"].num_classes, 6)
        self.assertEqual(
            {name: split.num_examples for name, split in info.splits.items()},
            {"train": 60, "validation": 12, "test": 12},
        )
        images, labels = tfds.as_numpy(
            builder.as_dataset(split="validation", as_supervised=True,
                               batch_size=-1)
        )
        # Stored as drawn from the split's seed (validation is split 1).
        expected = {}
        for image, label in zip(*shapes.make_shapes(
            12, image_size=32, seed=np.random.default_rng([5004, 1])
        )):
            expected[image.tobytes()] = label
        self.assertEqual(
            {image.tobytes(): label for image, label in zip(images, labels)},
            expected,
        )
        self.assertIn("shapes", tfds.list_builders())


if __name__ == "__main__":
    tf.test.main()

"""Tests of the `cluttered_shapes` image data set."""

import shutil
import tempfile
from unittest import mock

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from absl.testing import parameterized

import keras_mlres  # noqa: F401  Registers the builders.
from keras_mlres import datasets as mlres_datasets
from keras_mlres.datasets import cluttered_shapes


def _nearest_centroid_accuracy(features, labels):
    """Returns the accuracy on the second half of centroids of the first."""
    half = len(labels) // 2
    centroids = np.stack(
        [features[:half][labels[:half] == c].mean(axis=0) for c in range(10)]
    )
    distances = np.linalg.norm(
        features[half:, None] - centroids[None], axis=-1
    )
    return np.mean(distances.argmin(axis=1) == labels[half:])


class MakeClutteredShapesTest(parameterized.TestCase, tf.test.TestCase):

    @parameterized.named_parameters(("even", 300), ("odd", 307))
    def test_images_labels_balance_and_seed(self, num_examples):
        images, labels = cluttered_shapes.make_cluttered_shapes(
            num_examples, seed=3
        )
        self.assertEqual(images.shape, (num_examples, 32, 32, 3))
        self.assertEqual(images.dtype, np.uint8)
        self.assertEqual(labels.dtype, np.int64)
        counts = np.bincount(labels, minlength=10)
        self.assertEqual(
            (counts.min(), counts.max(), counts.size),
            (num_examples // 10, -(-num_examples // 10), 10),
        )
        # The same seed draws the same images, another seed others.
        again = cluttered_shapes.make_cluttered_shapes(num_examples, seed=3)
        self.assertAllEqual(again[0], images)
        self.assertAllEqual(again[1], labels)
        other, _ = cluttered_shapes.make_cluttered_shapes(num_examples, seed=4)
        self.assertGreater(np.mean(other != images), 0.5)

    def test_colour_is_no_cue_and_brightness_a_weak_one(self):
        # The colours are drawn independently of the class: a nearest-centroid
        # classifier on an image's hue (its mean red, green and blue less
        # their mean) is at chance (0.1) and the class means of each channel
        # of the hue are much closer together than the images of one class
        # spread. With the brightness too it is barely better (the shapes'
        # areas differ a little), far below what the outlines give.
        images, labels = cluttered_shapes.make_cluttered_shapes(2000, seed=0)
        means = images.reshape(len(images), -1, 3).mean(axis=1)
        hues = means - means.mean(axis=1, keepdims=True)
        self.assertLess(_nearest_centroid_accuracy(hues, labels), 0.14)
        self.assertLess(_nearest_centroid_accuracy(means, labels), 0.22)
        class_means = np.stack(
            [hues[labels == c].mean(axis=0) for c in range(10)]
        )
        within = np.mean(
            [hues[labels == c].std(axis=0) for c in range(10)], axis=0
        )
        spread = class_means.max(axis=0) - class_means.min(axis=0)
        self.assertAllLess(spread / within, 0.4)

    def test_shapes_are_brighter_than_their_background(self):
        rng = np.random.default_rng(4)
        shape = cluttered_shapes._random_colours(
            rng, 10000, cluttered_shapes._SHAPE_BRIGHTNESS_RANGE
        )
        background = cluttered_shapes._random_colours(
            rng, 10000, cluttered_shapes._BACKGROUND_BRIGHTNESS_RANGE
        )
        self.assertGreater(
            shape.mean(axis=1).min() - background.mean(axis=1).max(), 0.25
        )
        # Of every hue: each channel is the largest in some colours.
        for colours in (shape, background):
            self.assertLen(np.unique(colours.argmax(axis=1)), 3)

    def test_classes_differ_and_fit_in_their_circumradius(self):
        # One shape of each class, centred, of circumradius 10 pixels, drawn
        # on a grid of 40x40 pixels: the ten masks are pairwise different by
        # more than a sliver, and each lies within 10 pixels of the centre
        # (the cross's arms and the arrow's shaft reach a little farther).
        grid = np.arange(40) - 19.5
        u, v = np.meshgrid(grid, grid)
        masks = np.stack(
            [
                cluttered_shapes._inside(
                    label, u[None], v[None], np.full((1, 1, 1), 10.0)
                )[0]
                for label in range(10)
            ]
        ).reshape(10, -1)
        self.assertAllGreater(masks.sum(axis=1), 30)
        differences = np.sum(masks[:, None] != masks[None], axis=-1)
        self.assertAllGreater(differences[~np.eye(10, dtype=bool)], 15)
        distance = np.hypot(u, v).reshape(-1)
        self.assertAllLessEqual(np.where(masks, distance, 0.0), 10.5)

    def test_clutter_and_occlusion(self):
        # Every image has 2 to 5 fragments, 40% of the images a patch.
        rng = np.random.default_rng(5)
        fragments, _ = cluttered_shapes._fragments(rng, 200, 32)
        counts = fragments.any(axis=(2, 3)).sum(axis=1)
        self.assertEqual((counts.min(), counts.max()), (2, 5))
        occluders, _ = cluttered_shapes._occluders(
            rng, np.full(200, 16.0), np.full(200, 16.0), np.full(200, 9.0), 32
        )
        share = occluders.any(axis=(1, 2)).mean()
        self.assertBetween(share, 0.3, 0.5)


class ClutteredShapesBuilderTest(tf.test.TestCase):

    def setUp(self):
        super().setUp()
        self.data_dir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.data_dir)
        self.config = cluttered_shapes.ClutteredShapesConfig(
            name="small", num_train=40, num_validation=20, num_test=20
        )

    def test_tfds_load_after_import(self):
        builder = tfds.builder(
            "cluttered_shapes", config=self.config, data_dir=self.data_dir
        )
        builder.download_and_prepare()
        info = builder.info
        self.assertEqual(info.supervised_keys, ("image", "label"))
        self.assertEqual(info.features["image"].shape, (32, 32, 3))
        self.assertEqual(info.features["label"].num_classes, 10)
        self.assertEqual(
            {name: split.num_examples for name, split in info.splits.items()},
            {"train": 40, "validation": 20, "test": 20},
        )
        splits = {
            split: tfds.as_numpy(
                builder.as_dataset(split=split, as_supervised=True,
                                   batch_size=-1)
            )
            for split in ("validation", "test")
        }
        # Stored as drawn from the split's seed (validation is split 1).
        expected = {}
        for image, label in zip(*cluttered_shapes.make_cluttered_shapes(
            20, seed=np.random.default_rng([5005, 1])
        )):
            expected[image.tobytes()] = label
        self.assertEqual(
            {
                image.tobytes(): label
                for image, label in zip(*splits["validation"])
            },
            expected,
        )
        # The splits are drawn from different seeds.
        self.assertEmpty(
            {image.tobytes() for image in splits["validation"][0]}
            & {image.tobytes() for image in splits["test"][0]}
        )
        self.assertIn("cluttered_shapes", tfds.list_builders())

    def test_default_config(self):
        builder = tfds.builder("cluttered_shapes", data_dir=self.data_dir)
        self.assertEqual(builder.builder_config.name, "default")
        self.assertEqual(
            builder.builder_config.split_sizes(),
            {"train": 20000, "validation": 5000, "test": 5000},
        )

    def test_keras_mlres_load(self):
        # `load` takes only the registered configs: shrink the default one
        # (generating 30000 images would take long for a test).
        default = cluttered_shapes.ClutteredShapes.BUILDER_CONFIGS[0]
        with mock.patch.multiple(
            default, num_train=40, num_validation=20, num_test=20
        ):
            train, validation = mlres_datasets.load(
                "cluttered_shapes",
                split=("train", "validation"),
                batch_size=8,
                data_dir=self.data_dir,
            )
        self.assertIn("cluttered_shapes", mlres_datasets.LOCAL_DATASETS)
        self.assertEqual(train.element_spec[0].shape, (8, 32, 32, 3))
        self.assertEqual(train.element_spec[0].dtype, tf.float32)
        self.assertLen(list(train), 5)
        images, labels = zip(*validation.as_numpy_iterator())
        images, labels = np.concatenate(images), np.concatenate(labels)
        self.assertEqual(images.shape, (20, 32, 32, 3))
        self.assertAllInRange(images, 0.0, 1.0)
        self.assertAllEqual(np.bincount(labels, minlength=10), [2] * 10)

if __name__ == "__main__":
    tf.test.main()

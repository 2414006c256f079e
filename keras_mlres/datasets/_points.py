"""Shared machinery of the locally generated data sets (points and images).

Every builder here draws its examples with numpy from a fixed seed per split,
so the data are the same on every machine and every build, and nothing is
ever downloaded: `dl_manager` is unused. `GeneratedBuilder` is the base of
all of them, `PointsBuilder` that of the 2-D point data sets.
"""

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

# Split name -> index mixed into the seed (a different stream per split).
SPLITS = ("train", "validation", "test")


@dataclasses.dataclass(eq=False)
class PointsConfig(tfds.core.BuilderConfig):
    """`BuilderConfig` of a generated data set: the size of each split.

    The split sizes are part of the config, not arguments of `load`: the
    generated data are stored under `data_dir/<name>/<config name>/<version>`,
    so a config with other sizes must also have another `name` (tfds reuses
    whatever is already prepared under a name).

    Args:
        name: Name of the config (the part after `/` in `"spiral/3"`).
        num_train: Number of points of the `"train"` split.
        num_validation: Number of points of the `"validation"` split.
        num_test: Number of points of the `"test"` split.
        **kwargs: The other fields of `tfds.core.BuilderConfig`
            (`description`, `version`, ...).

    Example:

    ```python
    small = keras_mlres.datasets.PeaksConfig(
        name="small", num_train=1000, num_validation=200, num_test=200)
    builder = keras_mlres.datasets.Peaks(config=small, data_dir="/tmp/tfds")
    builder.download_and_prepare()
    ```
    """

    num_train: int = 20_000
    num_validation: int = 5_000
    num_test: int = 5_000

    def split_sizes(self):
        """Returns the number of points per split.

        Returns:
            A dict `{"train": n, "validation": n, "test": n}`.
        """
        return {
            "train": self.num_train,
            "validation": self.num_validation,
            "test": self.num_test,
        }


class GeneratedBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base class of the builders of locally generated classification sets.

    Not registered itself. A subclass sets `SEED`, `DESCRIPTION`,
    `BUILDER_CONFIGS` (of a `PointsConfig` subclass: the split sizes),
    `FEATURES_KEY`, `FEATURES_DTYPE` and implements `features_feature()`,
    `num_classes()` and `sample(rng, num_examples)`.

    Each example is `{FEATURES_KEY: features, "label": int}`, with
    `supervised_keys=(FEATURES_KEY, "label")`. The examples of split `s` are
    drawn from `np.random.default_rng([SEED, index of s])`, so two builds give
    the very same examples.
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}

    SEED = 0
    DESCRIPTION = ""
    CITATION = ""
    FEATURES_KEY = "features"
    # The dtype the features are stored as, whatever dtype `sample` drew.
    FEATURES_DTYPE = np.float32

    def features_feature(self):
        """Returns the tfds feature of one example's features."""
        raise NotImplementedError

    def num_classes(self):
        """Returns the number of classes of the current config."""
        raise NotImplementedError

    def sample(self, rng, num_examples):
        """Draws `num_examples` labelled examples.

        Args:
            rng: A `numpy.random.Generator`.
            num_examples: Number of examples to draw.

        Returns:
            A tuple `(features, labels)`: an array of `num_examples`
            features (as `features_feature` describes one) and an int64
            array of shape `(num_examples,)`.
        """
        raise NotImplementedError

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.DESCRIPTION,
            features=tfds.features.FeaturesDict(
                {
                    self.FEATURES_KEY: self.features_feature(),
                    "label": tfds.features.ClassLabel(
                        num_classes=self.num_classes()
                    ),
                }
            ),
            supervised_keys=(self.FEATURES_KEY, "label"),
            citation=self.CITATION,
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # Generated locally: nothing to download.
        sizes = self.builder_config.split_sizes()
        return {
            split: self._generate_examples(
                split_index=index, num_examples=sizes[split]
            )
            for index, split in enumerate(SPLITS)
        }

    def _generate_examples(self, split_index, num_examples):
        rng = np.random.default_rng([self.SEED, split_index])
        features, labels = self.sample(rng, num_examples)
        features = np.asarray(features, dtype=self.FEATURES_DTYPE)
        labels = np.asarray(labels, dtype=np.int64)
        for i in range(num_examples):
            yield i, {self.FEATURES_KEY: features[i], "label": labels[i]}


class PointsBuilder(GeneratedBuilder, skip_registration=True):
    """Base class of the builders of 2-D point classification data sets.

    Not registered itself. A subclass sets `SEED`, `DESCRIPTION`,
    `BUILDER_CONFIGS` (of a `PointsConfig` subclass) and implements
    `num_classes()` and `sample(rng, num_examples)`, which returns points of
    shape `(num_examples, 2)`.

    Each example is `{"features": float32 (2,), "label": int}`, with
    `supervised_keys=("features", "label")`. The points of split `s` are drawn
    from `np.random.default_rng([SEED, index of s])`, so two builds give the
    very same examples.
    """

    def features_feature(self):
        """Returns the feature of one point: a float32 tensor of shape (2,)."""
        return tfds.features.Tensor(shape=(2,), dtype=np.float32)


def balanced_labels(rng, num_examples, num_classes):
    """Returns shuffled labels with every class (almost) equally often.

    Args:
        rng: A `numpy.random.Generator`.
        num_examples: Number of labels.
        num_classes: Number of classes.

    Returns:
        An int64 array of shape `(num_examples,)`: each class appears
        `num_examples // num_classes` or one more times, in random order.
    """
    labels = np.arange(num_examples, dtype=np.int64) % num_classes
    return rng.permutation(labels)


def draw_images(draw, num_examples, num_classes, image_shape, seed, chunk):
    """Draws balanced labels and their uint8 images, a chunk at a time.

    Args:
        draw: A function `(rng, labels)` returning float images in [0, 1]
            for `labels`, `len(labels)` of them of `image_shape` (or of that
            size), drawn from the `numpy.random.Generator` `rng`.
        num_examples: Number of images.
        num_classes: Number of classes (see `balanced_labels`).
        image_shape: Shape of one image, `(height, width, channels)`.
        seed: Seed of the `numpy.random.Generator` (or a Generator).
        chunk: Number of images per call of `draw` (bounds its temporary
            memory).

    Returns:
        A tuple `(images, labels)`: a uint8 array of shape
        `(num_examples,) + image_shape` (255 times the drawn values,
        rounded) and the int64 labels.
    """
    rng = np.random.default_rng(seed)
    labels = balanced_labels(rng, num_examples, num_classes)
    images = np.empty((num_examples,) + tuple(image_shape), np.uint8)
    for start in range(0, num_examples, chunk):
        drawn = draw(rng, labels[start : start + chunk])
        images[start : start + chunk] = np.round(255.0 * drawn).reshape(
            (-1,) + tuple(image_shape)
        )
    return images, labels

"""Tests of `keras_mlres.datasets._points`, run on each of its builders.

The checks here hold for every `PointsBuilder` (split sizes, label range,
class balance, determinism, stored data equal to the seeded generator,
registration and info, and tfds' own `DatasetBuilderTestCase`); they run once
per builder: `peaks`, `spiral` and `ellipses`. What is specific to one data
set (its geometry, labelling and configs) is tested in its own test file.

`tfds.testing` needs `dill`, a test extra of setup.py: without it this file
fails to import, it does not skip.
"""

import dataclasses
import functools
import shutil
import tempfile
from typing import Callable, Optional, Tuple

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from absl.testing import parameterized

from keras_mlres.datasets import _points
from keras_mlres.datasets import ellipses
from keras_mlres.datasets import peaks
from keras_mlres.datasets import spiral

# Split sizes of every default config.
_DEFAULT_SPLITS = {"train": 20000, "validation": 5000, "test": 5000}
# A small config of peaks and ellipses, and the split sizes it must give.
_SMALL_SIZES = dict(num_train=200, num_validation=50, num_test=50)
_SMALL_SPLITS = {"train": 200, "validation": 50, "test": 50}


@dataclasses.dataclass(frozen=True)
class _Case:
    """One builder and what the generic checks expect of it.

    Attributes:
        builder: The `PointsBuilder` subclass.
        name: Its registered name.
        default_config: Name of its default config.
        num_classes: Number of classes of the default config.
        make: The generator of the default config, `make(n, seed=rng)`.
        domain: `(low, high)` bounds of every coordinate.
        class_fractions: `(low, high)` bounds of the fraction of each class
            in a split, or None for exactly balanced (n // k or one more).
        small_config: A small config, for tfds' checks and the rebuilds.
        small_splits: The split sizes `small_config` must give.
    """

    builder: type
    name: str
    default_config: str
    num_classes: int
    make: Callable
    domain: Tuple[float, float]
    class_fractions: Optional[Tuple[float, float]]
    small_config: _points.PointsConfig
    small_splits: dict


_PEAKS = _Case(
    builder=peaks.Peaks,
    name="peaks",
    default_config="default",
    num_classes=5,
    make=peaks.make_peaks,
    domain=(-3.0, 3.0),
    class_fractions=(0.17, 0.23),  # Quintile thresholds: about balanced.
    small_config=peaks.PeaksConfig(name="small", **_SMALL_SIZES),
    small_splits=_SMALL_SPLITS,
)
_SPIRAL = _Case(
    builder=spiral.Spiral,
    name="spiral",
    default_config="3",
    num_classes=3,
    make=functools.partial(spiral.make_spiral, num_arms=3),
    domain=(-1.12, 1.12),  # Radius at most 1 + 6 noise.
    class_fractions=None,
    small_config=spiral.SpiralConfig(
        name="small_4",
        num_arms=4,
        num_train=200,
        num_validation=60,
        num_test=60,
    ),
    small_splits={"train": 200, "validation": 60, "test": 60},
)
_ELLIPSES = _Case(
    builder=ellipses.Ellipses,
    name="ellipses",
    default_config="default",
    num_classes=5,
    make=ellipses.make_ellipses,
    domain=(-2.0, 2.0),
    class_fractions=None,
    small_config=ellipses.EllipsesConfig(name="small", **_SMALL_SIZES),
    small_splits=_SMALL_SPLITS,
)


def _build_arrays(builder_class, data_dir, config=None):
    """Generates a data set in `data_dir`; returns builder, {split: (x, y)}."""
    builder = builder_class(data_dir=data_dir, config=config)
    builder.download_and_prepare()
    arrays = tfds.as_numpy(
        builder.as_dataset(batch_size=-1, as_supervised=True)
    )
    return builder, arrays


def _sorted_rows(features, labels):
    """Returns the `(x, y, label)` rows sorted, to compare in any order."""
    rows = np.column_stack([features.astype(np.float64), labels])
    return rows[np.lexsort(rows.T[::-1])]


def _dataset_builder_test_case(case):
    """Returns tfds' own checks of `case.builder`, run on its small config.

    absl cannot parameterize a `tfds.testing.DatasetBuilderTestCase` (its
    settings are class attributes), so each builder gets its subclass.
    """

    class BuilderTest(tfds.testing.DatasetBuilderTestCase):
        DATASET_CLASS = case.builder
        BUILDER_CONFIG_NAMES_TO_TEST = [case.small_config]
        SPLITS = case.small_splits
        SKIP_CHECKSUMS = True  # Nothing is downloaded.
        EXAMPLE_DIR = tempfile.gettempdir()  # No dummy data needed.

    name = f"{case.builder.__name__}DatasetBuilderTest"
    BuilderTest.__name__ = BuilderTest.__qualname__ = name
    BuilderTest.__doc__ = f"tfds' builder checks of `{case.name}`."
    return BuilderTest


PeaksDatasetBuilderTest = _dataset_builder_test_case(_PEAKS)
SpiralDatasetBuilderTest = _dataset_builder_test_case(_SPIRAL)
EllipsesDatasetBuilderTest = _dataset_builder_test_case(_ELLIPSES)


@parameterized.named_parameters(
    ("peaks", _PEAKS), ("spiral", _SPIRAL), ("ellipses", _ELLIPSES)
)
class PointsDataTest(parameterized.TestCase, tf.test.TestCase):
    """Checks the generated data of each builder's default config."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.prepared = {}

    def default_data(self, case):
        """Returns the builder and {split: (x, y)} of the default config.

        Generated on first use, in a directory of its own, then shared by the
        tests of the class (a test process only generates what it needs).
        """
        if case.name not in self.prepared:
            data_dir = tempfile.mkdtemp()
            self.addClassCleanup(shutil.rmtree, data_dir)
            self.prepared[case.name] = _build_arrays(case.builder, data_dir)
        return self.prepared[case.name]

    def test_registered_name_and_info(self, case):
        prepared, _ = self.default_data(case)  # The info is the stored one.
        self.assertEqual(case.builder.name, case.name)
        self.assertIn(
            case.name, tfds.list_builders(with_community_datasets=False)
        )
        builder = tfds.builder(case.name, data_dir=prepared.data_dir_root)
        self.assertIsInstance(builder, case.builder)
        self.assertEqual(builder.builder_config.name, case.default_config)
        info = builder.info
        self.assertEqual(info.supervised_keys, ("features", "label"))
        self.assertEqual(info.features["label"].num_classes, case.num_classes)
        self.assertEqual(info.features["features"].shape, (2,))
        self.assertEqual(info.features["features"].np_dtype, np.float32)
        self.assertIn("1.0.0", builder.RELEASE_NOTES)

    def test_split_sizes(self, case):
        builder, arrays = self.default_data(case)
        self.assertCountEqual(arrays, _DEFAULT_SPLITS)
        for split, size in _DEFAULT_SPLITS.items():
            with self.subTest(split=split):
                self.assertEqual(builder.info.splits[split].num_examples, size)
                features, labels = arrays[split]
                self.assertEqual(features.shape, (size, 2))
                self.assertEqual(features.dtype, np.float32)
                self.assertEqual(labels.shape, (size,))

    def test_features_in_domain_and_labels_in_range(self, case):
        for features, labels in self.default_data(case)[1].values():
            self.assertAllInRange(features, *case.domain)
            self.assertAllInSet(labels, range(case.num_classes))

    def test_classes_are_balanced(self, case):
        for split, (_, labels) in self.default_data(case)[1].items():
            counts = np.bincount(labels, minlength=case.num_classes)
            self.assertLen(counts, case.num_classes, msg=split)
            if case.class_fractions is None:
                # Exactly: every class has n // k or one more points.
                spread = counts.max() - counts.min()
                self.assertLessEqual(spread, 1, msg=split)
            else:
                fractions = counts / labels.size
                self.assertAllInRange(fractions, *case.class_fractions)

    def test_splits_differ(self, case):
        arrays = self.default_data(case)[1]
        train, _ = arrays["train"]
        test, _ = arrays["test"]
        self.assertNotAllClose(train[: len(test)], test)

    def test_stored_data_is_the_seeded_generator_output(self, case):
        # tfds stores the examples in its own (deterministic) order.
        arrays = self.default_data(case)[1]
        for index, split in enumerate(("train", "validation", "test")):
            features, labels = arrays[split]
            rng = np.random.default_rng([case.builder.SEED, index])
            expected = case.make(labels.size, seed=rng)
            self.assertAllEqual(
                _sorted_rows(features, labels), _sorted_rows(*expected)
            )

    def test_two_builds_are_identical(self, case):
        dir_a, dir_b = tempfile.mkdtemp(), tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, dir_a)
        self.addCleanup(shutil.rmtree, dir_b)
        _, arrays_a = _build_arrays(case.builder, dir_a, case.small_config)
        _, arrays_b = _build_arrays(case.builder, dir_b, case.small_config)
        self.assertCountEqual(arrays_a, case.small_splits)
        for split, (features, labels) in arrays_a.items():
            self.assertAllEqual(arrays_b[split][0], features)
            self.assertAllEqual(arrays_b[split][1], labels)


class PointsHelpersTest(tf.test.TestCase):
    """Checks the config and label helpers of `_points`."""

    def test_split_sizes_of_a_config(self):
        config = _points.PointsConfig(
            name="sizes", num_train=7, num_validation=3, num_test=2
        )
        self.assertEqual(
            config.split_sizes(), {"train": 7, "validation": 3, "test": 2}
        )
        self.assertEqual(_points.SPLITS, ("train", "validation", "test"))

    def test_balanced_labels(self):
        labels = _points.balanced_labels(np.random.default_rng(0), 13, 5)
        self.assertEqual(labels.dtype, np.int64)
        self.assertAllEqual(np.bincount(labels), [3, 3, 3, 2, 2])
        again = _points.balanced_labels(np.random.default_rng(0), 13, 5)
        self.assertAllEqual(labels, again)
        self.assertNotAllEqual(labels, np.arange(13) % 5)  # Shuffled.


if __name__ == "__main__":
    tf.test.main()

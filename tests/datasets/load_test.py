"""Tests of `keras_mlres.datasets.load`."""

import os
import shutil
import socket
import tempfile
import time
from unittest import mock

import numpy as np
import requests
import tensorflow as tf
import tensorflow_datasets as tfds
from absl.testing import parameterized

import keras_mlres.datasets as mlres_datasets
from keras_mlres.datasets import loading


def _tempdir(test):
    """Returns a new empty directory, removed after `test`."""
    path = tempfile.mkdtemp()
    test.addCleanup(shutil.rmtree, path, ignore_errors=True)
    return path


def _collect(dataset):
    """Returns all batches of `dataset` as numpy `(features, labels)` lists."""
    batches = list(dataset.as_numpy_iterator())
    return [b[0] for b in batches], [b[1] for b in batches]


class LoadLocalTest(parameterized.TestCase, tf.test.TestCase):
    """`load` of the locally generated data sets."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.data_dir = tempfile.mkdtemp()
        cls.addClassCleanup(shutil.rmtree, cls.data_dir)
        # Generated once here, reused by every test of the class.
        cls.raw = {
            split: tfds.as_numpy(dataset)
            for split, dataset in zip(
                ("train", "validation"),
                tfds.load(
                    "peaks",
                    split=["train", "validation"],
                    data_dir=cls.data_dir,
                    as_supervised=True,
                    batch_size=-1,
                ),
            )
        }

    def test_returns_batched_datasets_in_split_order(self):
        datasets = mlres_datasets.load(
            "peaks", batch_size=64, data_dir=self.data_dir
        )
        self.assertIsInstance(datasets, tuple)
        self.assertLen(datasets, 3)
        train, validation, test = datasets
        features_spec, label_spec = train.element_spec
        # drop_remainder: the training batches have a static batch size.
        self.assertEqual(features_spec.shape, (64, 2))
        self.assertEqual(features_spec.dtype, tf.float32)
        self.assertEqual(label_spec.shape, (64,))
        self.assertEqual(label_spec.dtype, tf.int64)
        for dataset in (validation, test):
            self.assertEqual(dataset.element_spec[0].shape.as_list(), [None, 2])
        features, labels = next(iter(validation))
        self.assertEqual(features.shape, (64, 2))
        # The validation split comes unshuffled, in tfds' stored order.
        self.assertAllEqual(features, self.raw["validation"][0][:64])
        self.assertAllEqual(labels, self.raw["validation"][1][:64])

    def test_single_split_string_returns_one_dataset(self):
        train, info = mlres_datasets.load(
            "peaks", split="train", data_dir=self.data_dir, with_info=True
        )
        self.assertIsInstance(train, tf.data.Dataset)
        self.assertEqual(info.name, "peaks")
        self.assertEqual(info.features["label"].num_classes, 5)
        self.assertEqual(info.splits["train"].num_examples, 20000)

    def test_pipelines_run_without_autotuning(self):
        # Its thread stalled `fit` at epoch starts (benchmarks/epoch_stall.py).
        datasets = mlres_datasets.load("peaks", data_dir=self.data_dir)
        for dataset in datasets:
            self.assertFalse(dataset.options().autotune.enabled)

    @parameterized.named_parameters(
        ("drop", True, [3000] * 2), ("keep", False, [3000] * 2 + [2000])
    )
    def test_drop_remainder_of_train(self, drop_remainder, sizes):
        train, validation = mlres_datasets.load(
            "peaks",
            batch_size=3000,
            split=("train[:8000]", "validation"),
            data_dir=self.data_dir,
            drop_remainder=drop_remainder,
        )
        features, _ = _collect(train)
        self.assertEqual([len(f) for f in features], sizes)
        # Evaluation splits keep every example by default.
        features, _ = _collect(validation)
        self.assertEqual([len(f) for f in features], [3000, 2000])

    def test_eval_drop_remainder(self):
        validation = mlres_datasets.load(
            "peaks",
            batch_size=3000,
            split="validation",
            data_dir=self.data_dir,
            eval_drop_remainder=True,
        )
        self.assertEqual(validation.element_spec[0].shape, (3000, 2))
        self.assertLen(list(validation), 1)

    def test_train_is_shuffled_each_epoch_and_complete(self):
        train = mlres_datasets.load(
            "peaks",
            batch_size=4000,
            split="train",
            data_dir=self.data_dir,
        )
        epoch_1 = np.concatenate(_collect(train)[0])
        epoch_2 = np.concatenate(_collect(train)[0])
        raw_features = self.raw["train"][0]
        self.assertNotAllClose(epoch_1, raw_features)
        self.assertNotAllClose(epoch_1, epoch_2)
        # A permutation of the stored examples (20000 = 5 full batches).
        self.assertAllEqual(
            np.sort(epoch_1, axis=0), np.sort(raw_features, axis=0)
        )

    def test_a_pass_that_stops_early_leaves_every_split_whole(self):
        # A peek cancels tfds's parallel reader mid-read; a cache filled by
        # that pass kept 102-110 of the 5000 validation examples for good.
        train, validation = mlres_datasets.load(
            "peaks", batch_size=100, split=("train", "validation"),
            shuffle_buffer=1000, data_dir=self.data_dir,
        )
        for dataset in (train, validation):
            next(iter(dataset))
            for _ in dataset.take(1):
                pass
        self.assertLen(np.concatenate(_collect(validation)[1]), 5000)
        self.assertLen(np.concatenate(_collect(train)[1]), 20000)

    def test_training_slice_is_shuffled_too(self):
        train = mlres_datasets.load(
            "peaks", batch_size=100, split="train[:1000]",
            data_dir=self.data_dir,
        )
        self.assertEqual(train.element_spec[0].shape, (100, 2))
        epoch = np.concatenate(_collect(train)[0])
        self.assertNotAllClose(epoch, self.raw["train"][0][:1000])

    def test_fixed_seed_is_deterministic(self):
        def first_epoch(seed):
            train = mlres_datasets.load(
                "peaks", split="train[:6000]", batch_size=1000,
                data_dir=self.data_dir, seed=seed,
            )
            return _collect(train)

        features_a, labels_a = first_epoch(seed=7)
        features_b, labels_b = first_epoch(seed=7)
        features_c, _ = first_epoch(seed=8)
        self.assertAllEqual(features_a, features_b)
        self.assertAllEqual(labels_a, labels_b)
        self.assertNotAllClose(features_a, features_c)

    def test_no_shuffle(self):
        train = mlres_datasets.load(
            "peaks", split="train", batch_size=500, data_dir=self.data_dir,
            shuffle_buffer=0,
        )
        features, _ = next(iter(train))
        self.assertAllEqual(features, self.raw["train"][0][:500])

    def test_spiral_config_by_name(self):
        data_dir = _tempdir(self)
        train, info = mlres_datasets.load(
            "spiral/5", split="train", batch_size=1000, data_dir=data_dir,
            with_info=True,
        )
        self.assertEqual(info.features["label"].num_classes, 5)
        _, labels = next(iter(train))
        self.assertAllInSet(labels, range(5))
        self.assertTrue(
            os.path.isdir(os.path.join(data_dir, "spiral", "5", "1.0.0"))
        )

    def test_local_data_sets_never_touch_the_network(self):
        data_dir = _tempdir(self)

        def no_network(*args, **kwargs):
            raise AssertionError("network access attempted")

        with mock.patch.object(
            socket, "create_connection", no_network
        ), mock.patch.object(
            socket.socket, "connect", no_network
        ), mock.patch.object(
            requests.Session, "request", no_network
        ), mock.patch.object(
            loading, "_unreachable_endpoint", no_network
        ):
            test = mlres_datasets.load(
                "ellipses", split="test", batch_size=1000, data_dir=data_dir
            )
        self.assertLen(list(test), 5)

    def test_a_concurrent_generation_of_the_same_data_set(self):
        # The race of two processes, in one: while this load generates the
        # data set, "another process" generates it too and finishes first.
        data_dir = _tempdir(self)
        generate = tfds.core.GeneratorBasedBuilder._download_and_prepare
        other_process = []

        def generate_while_another_finishes(builder, *args, **kwargs):
            if not other_process:
                other_process.append(tfds.builder("peaks", data_dir=data_dir))
                other_process[0].download_and_prepare()
            return generate(builder, *args, **kwargs)

        with mock.patch.object(
            tfds.core.GeneratorBasedBuilder,
            "_download_and_prepare",
            generate_while_another_finishes,
        ):
            validation = mlres_datasets.load(
                "peaks", split="validation", batch_size=1000,
                data_dir=data_dir,
            )
        self.assertTrue(other_process[0].is_prepared())
        self.assertAllClose(
            np.concatenate(_collect(validation)[0]), self.raw["validation"][0]
        )

    def test_tfds_load_works_after_import(self):
        dataset = tfds.load(
            "peaks", split="validation", data_dir=self.data_dir,
            as_supervised=True,
        )
        self.assertEqual(dataset.element_spec[0].shape, (2,))

    @parameterized.named_parameters(
        ("unknown", "no_such_data_set"), ("typo", "peak")
    )
    def test_unknown_name_lists_local_data_sets(self, name):
        with self.assertRaisesRegex(ValueError, "Unknown data set") as caught:
            mlres_datasets.load(name, data_dir=self.data_dir)
        for local in mlres_datasets.LOCAL_DATASETS:
            self.assertIn(local, str(caught.exception))
        self.assertIn(name, str(caught.exception))

    @parameterized.named_parameters(
        ("spiral", "spiral/7", "'spiral/2', 'spiral/3', 'spiral/5'"),
        ("spiral_with_version", "spiral/7:1.0.0", "'spiral/3'"),
        ("peaks", "peaks/small", "'peaks/default'"),
        ("shapes", "shapes/64", "'shapes/28', 'shapes/32'"),
    )
    def test_unknown_config_of_a_local_data_set_lists_its_configs(
        self, name, configs
    ):
        data_dir = _tempdir(self)
        with self.assertRaisesRegex(ValueError, "has no config") as caught:
            mlres_datasets.load(name, data_dir=data_dir)
        self.assertIn(configs, str(caught.exception))
        self.assertEmpty(os.listdir(data_dir))  # nothing generated

    @parameterized.named_parameters(
        ("zero_batch", dict(batch_size=0)),
        ("no_split", dict(split=())),
    )
    def test_invalid_arguments(self, kwargs):
        with self.assertRaises(ValueError):
            mlres_datasets.load("peaks", data_dir=self.data_dir, **kwargs)


class LoadCatalogTest(tf.test.TestCase):
    """`load` of TFDS catalog data sets ("mnist"), without network."""

    def test_mnist_with_mock_data(self):
        data_dir = _tempdir(self)
        with tfds.testing.mock_data(num_examples=100):
            train, test = mlres_datasets.load(
                "mnist", split=("train", "test"), batch_size=16,
                data_dir=data_dir,
            )
            self.assertEqual(train.element_spec[0].shape, (16, 28, 28, 1))
            self.assertEqual(train.element_spec[0].dtype, tf.float32)
            train_batches = list(train.as_numpy_iterator())
            test_batches = list(test.as_numpy_iterator())
        self.assertLen(train_batches, 6)  # 100 // 16, remainder dropped.
        self.assertLen(test_batches, 7)  # Remainder kept.
        self.assertEqual(test_batches[-1][0].shape, (4, 28, 28, 1))
        images = np.concatenate([b[0] for b in train_batches])
        labels = np.concatenate([b[1] for b in train_batches])
        self.assertAllInRange(images, 0.0, 1.0)
        self.assertGreater(images.max(), 0.5)  # Scaled, not all zeros.
        self.assertEqual(labels.dtype, np.int64)
        self.assertAllInSet(labels, range(10))

    def _assert_clear_error(self, error, data_dir, reason):
        message = str(error)
        self.assertIn("'mnist'", message)
        self.assertIn(data_dir, message)
        self.assertIn(reason, message)
        self.assertIn("network", message)
        self.assertIn("download_and_prepare()", message)
        self.assertIn("peaks", message)
        self.assertEqual(error.name, "mnist")
        self.assertEqual(error.data_dir, data_dir)

    def test_mnist_not_prepared_and_download_false(self):
        data_dir = _tempdir(self)
        with mock.patch.object(
            loading, "_unreachable_endpoint", side_effect=AssertionError
        ), self.assertRaises(mlres_datasets.DatasetNotAvailableError) as caught:
            mlres_datasets.load("mnist", split="train", data_dir=data_dir,
                                download=False)
        self._assert_clear_error(caught.exception, data_dir, "download=False")
        self.assertIsInstance(caught.exception, RuntimeError)
        self.assertEmpty(os.listdir(data_dir))

    def test_mnist_no_network_does_not_try_to_download(self):
        data_dir = _tempdir(self)
        with mock.patch.object(
            loading, "_unreachable_endpoint",
            return_value="could not reach storage.googleapis.com:443: boom",
        ), mock.patch.object(
            tfds.core.DatasetBuilder, "download_and_prepare",
            side_effect=AssertionError("download attempted"),
        ), self.assertRaises(mlres_datasets.DatasetNotAvailableError) as caught:
            mlres_datasets.load("mnist", data_dir=data_dir)
        self._assert_clear_error(caught.exception, data_dir, "no network")
        # No chained tfds traceback.
        self.assertIsNone(caught.exception.__cause__)
        self.assertIsNone(caught.exception.__context__)

    def test_mnist_download_failure_is_wrapped(self):
        data_dir = _tempdir(self)
        with mock.patch.object(
            loading, "_unreachable_endpoint", return_value=None
        ), mock.patch.object(
            tfds.core.DatasetBuilder, "download_and_prepare",
            side_effect=requests.exceptions.ConnectionError("boom"),
        ), self.assertRaises(mlres_datasets.DatasetNotAvailableError) as caught:
            mlres_datasets.load("mnist", split="train", data_dir=data_dir)
        self._assert_clear_error(
            caught.exception, data_dir, "the download failed: boom"
        )

    def test_mnist_real_offline_error_is_fast(self):
        # The real path, probe included, against a download host that
        # refuses connections (a closed loopback port), whatever this
        # machine's network.
        data_dir = _tempdir(self)
        with socket.socket() as closed:
            closed.bind(("127.0.0.1", 0))
            port = closed.getsockname()[1]
        start = time.monotonic()
        with mock.patch.object(
            loading, "_download_endpoints", return_value=[("127.0.0.1", port)]
        ), self.assertRaises(mlres_datasets.DatasetNotAvailableError) as caught:
            mlres_datasets.load("mnist", data_dir=data_dir)
        self.assertLess(time.monotonic() - start, loading.PROBE_TIMEOUT + 10)
        self._assert_clear_error(caught.exception, data_dir, "no network")


class ImageOptionsTest(parameterized.TestCase, tf.test.TestCase):
    """Normalization and augmentation of image data sets."""

    def _mnist(self, **kwargs):
        with tfds.testing.mock_data(num_examples=64):
            return mlres_datasets.load(
                "mnist", batch_size=64, data_dir=_tempdir(self), seed=3,
                shuffle_buffer=0, **kwargs,
            )

    def test_standardize_uses_train_statistics_per_channel(self):
        train, test = self._mnist(
            split=("train", "test"), normalization="standardize"
        )
        raw_train, raw_test = self._mnist(split=("train", "test"))
        images = next(iter(train))[0].numpy()
        # On the training split: mean 0 and std 1 per channel.
        self.assertAllClose(images.mean(axis=(0, 1, 2)), [0.0], atol=1e-5)
        self.assertAllClose(images.std(axis=(0, 1, 2)), [1.0], atol=1e-4)
        # Other splits with the training split's statistics.
        unit = next(iter(raw_train))[0].numpy()
        mean, std = unit.mean(), unit.std()
        self.assertAllClose(
            next(iter(test))[0], (next(iter(raw_test))[0] - mean) / std,
            atol=1e-4,
        )

    def test_standardize_a_split_other_than_train(self):
        test = self._mnist(split="test", normalization="standardize")
        self.assertEqual(test.element_spec[0].shape.as_list(), [None, 28, 28, 1])

    def test_random_flip_flips_some_images_and_changes_per_epoch(self):
        train = self._mnist(split="train", random_flip=True)
        plain = next(iter(self._mnist(split="train")))[0].numpy()
        epoch_1 = next(iter(train))[0].numpy()
        epoch_2 = next(iter(train))[0].numpy()
        flipped = [
            np.array_equal(image, original[:, ::-1])
            and not np.array_equal(image, original)
            for image, original in zip(epoch_1, plain)
        ]
        kept = [np.array_equal(i, o) for i, o in zip(epoch_1, plain)]
        self.assertAllEqual(np.logical_or(flipped, kept), [True] * 64)
        self.assertBetween(sum(flipped), 16, 48)
        self.assertNotAllClose(epoch_1, epoch_2)
        # The same seed gives the same augmented epochs.
        again = next(iter(self._mnist(split="train", random_flip=True)))[0]
        self.assertAllEqual(again, epoch_1)

    def test_random_crop_shifts_images_within_the_padding(self):
        train = self._mnist(split="train", random_crop_padding=2)
        plain = next(iter(self._mnist(split="train")))[0].numpy()
        images = next(iter(train))[0].numpy()
        self.assertEqual(images.shape, (64, 28, 28, 1))
        shifts = []
        for image, original in zip(images, plain):
            padded = np.pad(original, [(2, 2), (2, 2), (0, 0)])
            matches = [
                (dy, dx)
                for dy in range(5)
                for dx in range(5)
                if np.array_equal(padded[dy : dy + 28, dx : dx + 28], image)
            ]
            self.assertNotEmpty(matches)
            shifts.append(matches[0])
        self.assertGreater(len(set(shifts)), 5)

    def test_evaluation_splits_are_not_augmented(self):
        test = self._mnist(split="test", random_flip=True,
                           random_crop_padding=4)
        plain = self._mnist(split="test")
        self.assertAllEqual(next(iter(test))[0], next(iter(plain))[0])

    def test_shapes_is_local(self):
        self.assertIn("shapes", mlres_datasets.LOCAL_DATASETS)

    @parameterized.named_parameters(
        ("normalization", dict(normalization="minmax"), "normalization"),
        ("padding", dict(random_crop_padding=-1), "random_crop_padding"),
        ("flip_on_points", dict(random_flip=True), "augment images"),
        ("crop_on_points", dict(random_crop_padding=2), "augment images"),
    )
    def test_bad_options(self, kwargs, message):
        with self.assertRaisesRegex(ValueError, message):
            mlres_datasets.load(
                "peaks", split="validation", data_dir=_tempdir(self), **kwargs
            )


class ProbeTest(tf.test.TestCase):
    """The network probe, on the loopback interface only."""

    def test_listening_port_is_reachable(self):
        with socket.socket() as server:
            server.bind(("127.0.0.1", 0))
            server.listen(1)
            port = server.getsockname()[1]
            self.assertIsNone(
                loading._unreachable_endpoint([("127.0.0.1", port)], 2.0)
            )

    def test_closed_port_is_unreachable(self):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]  # Bound, never listening.
            problem = loading._unreachable_endpoint([("127.0.0.1", port)], 2.0)
        self.assertIn(f"127.0.0.1:{port}", problem)

    def test_mnist_endpoints_come_from_its_checksums(self):
        builder = tfds.builder("mnist", data_dir=_tempdir(self))
        with mock.patch.dict(os.environ, clear=True):
            endpoints = loading._download_endpoints(builder)
        self.assertEqual(endpoints, [("storage.googleapis.com", 443)])

    def test_proxy_is_probed_instead_of_the_host(self):
        builder = tfds.builder("mnist", data_dir=_tempdir(self))
        with mock.patch.dict(
            os.environ, {"https_proxy": "http://proxy.example:3128"}, clear=True
        ):
            endpoints = loading._download_endpoints(builder)
        self.assertEqual(endpoints, [("proxy.example", 3128)])


if __name__ == "__main__":
    tf.test.main()

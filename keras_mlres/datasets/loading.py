"""`load`: batched `tf.data` pipelines of the local and the TFDS data sets."""

import numbers
import os
import socket
import threading
import urllib.parse
import urllib.request

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from tensorflow_datasets.core import naming

from keras_mlres._checks import check_choice
from keras_mlres._checks import check_count

# Importing the builders registers them with tfds.
from keras_mlres.datasets import cluttered_shapes as _cluttered  # noqa: F401
from keras_mlres.datasets import ellipses as _ellipses  # noqa: F401
from keras_mlres.datasets import peaks as _peaks  # noqa: F401
from keras_mlres.datasets import shapes as _shapes  # noqa: F401
from keras_mlres.datasets import spiral as _spiral  # noqa: F401

LOCAL_DATASETS = ("peaks", "spiral", "ellipses", "shapes", "cluttered_shapes")
_LOCAL_DESCRIPTION = (
    "peaks, spiral (spiral/2, spiral/3, spiral/5), ellipses, shapes "
    "(images; shapes/28, shapes/32), cluttered_shapes (32x32 RGB images)"
)
NORMALIZATIONS = ("unit_range", "standardize")

# Seconds to wait for a TCP connection to a download host before deciding
# that there is no network.
PROBE_TIMEOUT = 5.0
# Host probed when a builder does not list its download urls.
_FALLBACK_ENDPOINT = ("https", "storage.googleapis.com", 443)
_MAX_PROBED_ENDPOINTS = 4


class DatasetNotAvailableError(RuntimeError):
    """A TFDS data set is neither prepared in `data_dir` nor downloadable.

    Raised by `load` for a TFDS catalog data set (e.g. `"mnist"`) that is not
    prepared in `data_dir` when downloading it is not allowed
    (`download=False`), there is no network, or the download fails. The
    message names the data set and says how to prepare it.

    Args:
        message: The explanation.
        name: The data set name given to `load`.
        data_dir: The TFDS data directory that was searched.
    """

    def __init__(self, message, name=None, data_dir=None):
        super().__init__(message)
        self.name = name
        self.data_dir = data_dir


def load(
    name,
    batch_size=128,
    split=("train", "validation", "test"),
    data_dir=None,
    shuffle_buffer=20_000,
    seed=0,
    drop_remainder=True,
    eval_drop_remainder=False,
    download=True,
    with_info=False,
    normalization="unit_range",
    random_flip=False,
    random_crop_padding=0,
):
    """Loads a data set as batched `tf.data.Dataset`s of `(features, label)`.

    Every split goes through `tfds.load(..., as_supervised=True)`, then is
    cached in memory (read in full before `load` returns, so that a pass
    that stops early cannot truncate the cache), shuffled and augmented
    (training split only), batched,
    normalized and prefetched. Labels are int64 class indices. The pipelines
    run with `tf.data` autotuning off (`options().autotune.enabled` is
    False): its background thread made `fit` stall for up to seconds at the
    start of an epoch.

    Normalization: with `normalization="unit_range"` (the default) integer
    (`uint8`) image features are scaled to float32 in [0, 1] (divided by
    255) and other features are passed through (the point data sets are
    already float32). With `"standardize"`, features are then shifted and
    scaled per channel (last axis) to mean 0 and standard deviation 1 on the
    `"train"` split (`(x - mean) / std`, statistics of the whole training
    split whichever splits are loaded, computed in one pass at each call).

    Augmentation (training split only, per example, before normalization):
    `random_flip` mirrors an image left-right with probability 1/2;
    `random_crop_padding=p` pads an image by p zero pixels on each side and
    crops a random window of the original size (the standard CIFAR-10
    augmentation is `random_flip=True, random_crop_padding=4`). Both need
    image features `(height, width, channels)`. The random draws follow
    `seed` and differ from epoch to epoch.

    Local data sets (`"peaks"`, `"spiral"`, `"spiral/5"`, `"ellipses"`, see
    `LOCAL_DATASETS`) are generated on the first call into `data_dir` (a few
    seconds) and read from there afterwards; they never touch the network.
    Any other name must be a TFDS catalog data set (`"mnist"`, `"cifar10"`,
    ...): it is read from `data_dir` if it is prepared there; otherwise it is
    downloaded if `download=True` and the network answers, and a
    `DatasetNotAvailableError` explaining how to prepare it is raised if not.
    Before downloading, the data set's download hosts are probed with a
    short TCP connection (`PROBE_TIMEOUT` seconds), because tfds itself
    retries an unreachable host for minutes.

    The training split drops its last, short batch by default
    (`drop_remainder=True`): every training batch then has the same static
    shape `(batch_size, ...)`, so a compiled (XLA, `jit_compile=True`)
    training step is traced once, not a second time for a last batch of
    another shape. Evaluation splits keep every example by default
    (`eval_drop_remainder=False`) so that metrics are computed on the whole
    split; their short last batch only costs one more trace of the test
    step.

    Args:
        name: Data set name, as for `tfds.load`: `"peaks"`, `"spiral/3"`,
            `"mnist"`, `"cifar10:3.0.2"`, ...
        batch_size: Number of examples per batch.
        split: A split (`"train"`, `"test"`, `"train[:80%]"`, ...) or a
            sequence of splits. Defaults to `("train", "validation",
            "test")`, the splits of the local data sets (TFDS catalog data
            sets often have no `"validation"` split).
        data_dir: TFDS data directory to read and write. Defaults to
            `$TFDS_DATA_DIR` if set, else `~/tensorflow_datasets`.
        shuffle_buffer: Size of the shuffle buffer of the training split
            (splits named `"train"`, including slices like `"train[:90%]"`).
            The default covers the whole training split of the local data
            sets. 0 or None disables shuffling.
        seed: Seed of the shuffle. With a fixed seed the sequence of epochs
            is the same on every run; each epoch is a new permutation.
        drop_remainder: Whether the training split drops its last batch if
            it is shorter than `batch_size`. Defaults to True (see above).
        eval_drop_remainder: Same for the other splits. Defaults to False.
        download: Whether a TFDS catalog data set that is not prepared in
            `data_dir` may be downloaded. Local data sets are always
            generated when missing.
        with_info: Whether to also return the `tfds.core.DatasetInfo`
            (features, `num_classes`, split sizes, ...).
        normalization: `"unit_range"` or `"standardize"`, see above.
        random_flip: Whether training images are flipped left-right at
            random.
        random_crop_padding: Padding (pixels) of the random crops of the
            training images; 0 (the default) does not crop.

    Returns:
        A `tf.data.Dataset` of `(features, label)` batches if `split` is a
        single string, else a tuple of them in the order of `split`. With
        `with_info=True`, a tuple `(datasets, info)`.

    Raises:
        ValueError: If `name` is neither a local nor a TFDS catalog data
            set (the message lists the local ones), names a config that a
            local data set does not have (the message lists its configs), or
            an argument is invalid.
        DatasetNotAvailableError: If a TFDS catalog data set is not prepared
            in `data_dir` and cannot be downloaded.

    Example:

    ```python
    train, val, test = keras_mlres.datasets.load("peaks", batch_size=256)
    model.fit(train, validation_data=val, epochs=10)

    train = keras_mlres.datasets.load("spiral/5", split="train")

    train, val = keras_mlres.datasets.load(
        "cifar10", split=("train[:90%]", "train[90%:]"),
        normalization="standardize", random_flip=True, random_crop_padding=4)
    ```
    """
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, numbers.Integral)
        or batch_size < 1
    ):
        raise ValueError(
            f"batch_size must be a positive int, got {batch_size!r}."
        )
    single = isinstance(split, str)
    splits = [split] if single else list(split)
    if not splits:
        raise ValueError("split must name at least one split.")
    check_choice("normalization", normalization, NORMALIZATIONS)
    check_count("random_crop_padding", random_crop_padding)
    augment = bool(random_flip) or random_crop_padding > 0

    # Standardization needs the statistics of the whole training split.
    statistics_split = (
        ["train"] if normalization == "standardize" else []
    )
    if _is_local(name):
        datasets, info = _load_local(name, splits + statistics_split, data_dir)
    else:
        datasets, info = _load_catalog(
            name, splits + statistics_split, data_dir, download
        )
    features_shape = info.features[info.supervised_keys[0]].shape
    if augment and len(features_shape) != 3:
        raise ValueError(
            "random_flip and random_crop_padding augment images, but the "
            f"features of {name!r} have shape {features_shape}. Leave them "
            "at False and 0 for this data set."
        )
    statistics = (
        _channel_statistics(datasets.pop()) if statistics_split else None
    )

    pipelines = []
    for split_name, dataset in zip(splits, datasets):
        training = _is_training_split(split_name)
        pipelines.append(
            _pipeline(
                dataset,
                training=training,
                batch_size=batch_size,
                shuffle_buffer=shuffle_buffer,
                seed=seed,
                drop_remainder=(
                    drop_remainder if training else eval_drop_remainder
                ),
                augmentation=(
                    (bool(random_flip), random_crop_padding)
                    if training and augment
                    else None
                ),
                statistics=statistics,
            )
        )
    datasets = tuple(pipelines)
    result = datasets[0] if single else datasets
    return (result, info) if with_info else result


def _parse_name(name):
    """Returns the `DatasetName` and the builder kwargs (`config`, ...)."""
    try:
        return naming.parse_builder_name_kwargs(name)
    except Exception as error:  # tfds raises ValueError/AssertionError.
        raise ValueError(
            f"Invalid data set name {name!r}: {error}. "
            f"Local data sets: {_LOCAL_DESCRIPTION}."
        ) from None


def _is_local(name):
    if not isinstance(name, str):
        raise ValueError(f"name must be a string, got {name!r}.")
    dataset_name, builder_kwargs = _parse_name(name)
    if dataset_name.namespace is None and dataset_name.name in LOCAL_DATASETS:
        _check_local_config(dataset_name.name, builder_kwargs.get("config"))
        return True
    if dataset_name.namespace is None and dataset_name.name not in set(
        tfds.list_builders(with_community_datasets=False)
    ):
        raise ValueError(
            f"Unknown data set {name!r}. Local data sets (generated here, "
            f"no download): {_LOCAL_DESCRIPTION}. Any other name must be a "
            "TFDS catalog data set (see tfds.list_builders()), e.g. 'mnist', "
            "prepared in data_dir or downloadable."
        )
    return False


def _check_local_config(dataset, config):
    """Raises ValueError unless `config` (or None) is a config of `dataset`.

    tfds's own error for an unknown config lists none of the valid ones for
    these builders ("... closely match:" and nothing).
    """
    builder_cls = tfds.builder_cls(dataset)
    configs = [
        builder_config.name for builder_config in builder_cls.BUILDER_CONFIGS
    ]
    if config is not None and config not in configs:
        raise ValueError(
            f"The local data set {dataset!r} has no config {config!r}. Pass "
            "one of its configs: "
            + ", ".join(f"'{dataset}/{name}'" for name in configs)
            + f" (or {dataset!r} for "
            f"'{dataset}/{builder_cls.DEFAULT_BUILDER_CONFIG_NAME}')."
        )


def _load_local(name, splits, data_dir):
    # Generating a local builder runs its numpy generator; GCS is not tried.
    config = tfds.download.DownloadConfig(try_download_gcs=False)
    kwargs = dict(
        split=splits, data_dir=data_dir, as_supervised=True, with_info=True
    )
    try:
        return tfds.load(
            name,
            download=True,
            download_and_prepare_kwargs={"download_config": config},
            **kwargs,
        )
    except FileExistsError:
        # Another process generated the same data set at the same time and
        # renamed its finished directory into place first; tfds then fails
        # to rename this one over it. That data set is complete: read it.
        return tfds.load(name, download=False, **kwargs)


def _load_catalog(name, splits, data_dir, download):
    kwargs = dict(
        split=splits, data_dir=data_dir, as_supervised=True, with_info=True
    )
    try:
        # Reads prepared data (or tfds.testing.mock_data) without any network.
        return tfds.load(name, download=False, **kwargs)
    except AssertionError:  # tfds: "could not find data in <data_dir>".
        builder = tfds.builder(name, data_dir=data_dir)
        if builder.is_prepared():
            raise

    root = os.fspath(builder.data_dir_root)
    if not download:
        raise DatasetNotAvailableError(
            _not_available_message(name, root, "download=False"),
            name=name,
            data_dir=root,
        )
    problem = _unreachable_endpoint(_download_endpoints(builder))
    if problem:
        raise DatasetNotAvailableError(
            _not_available_message(name, root, f"no network: {problem}"),
            name=name,
            data_dir=root,
        )
    try:
        return tfds.load(name, download=True, **kwargs)
    except OSError as error:  # requests' errors are OSErrors too.
        raise DatasetNotAvailableError(
            _not_available_message(
                name, root, f"the download failed: {error}"
            ),
            name=name,
            data_dir=root,
        ) from error


def _not_available_message(name, root, reason):
    folder = _parse_name(name)[0].name
    return (
        f"The data set {name!r} is not prepared in data_dir {root!r} and "
        f"cannot be downloaded here ({reason}).\n"
        f"{name!r} is a TFDS catalog data set: it must be downloaded "
        "(network access needed) or prepared in data_dir beforehand. To "
        "prepare it, on a machine with network access run\n\n"
        "    python -c \"import tensorflow_datasets as tfds; "
        f"tfds.builder('{name}', data_dir='DIR').download_and_prepare()\"\n\n"
        f"(or `tfds build {name} --data_dir=DIR`), then copy DIR/{folder} "
        f"into {root!r} (or pass data_dir=DIR / set TFDS_DATA_DIR=DIR). The "
        f"local data sets ({_LOCAL_DESCRIPTION}) are generated here and need "
        "no network."
    )


def _download_endpoints(builder):
    """Returns the `(host, port)` pairs a download of `builder` connects to."""
    try:
        urls = sorted(type(builder).url_infos or {})
    except Exception:  # A missing or unreadable checksums file.
        urls = []
    endpoints = []
    for url in urls:
        parts = urllib.parse.urlsplit(url)
        if parts.hostname and parts.scheme in ("http", "https"):
            default_port = 443 if parts.scheme == "https" else 80
            port = parts.port or default_port
            endpoint = (parts.scheme, parts.hostname, port)
            if endpoint not in endpoints:
                endpoints.append(endpoint)
    endpoints = endpoints[:_MAX_PROBED_ENDPOINTS] or [_FALLBACK_ENDPOINT]

    proxies = urllib.request.getproxies()
    targets = []
    for scheme, host, port in endpoints:
        proxy = proxies.get(scheme)
        if proxy and not urllib.request.proxy_bypass(host):
            proxy_parts = urllib.parse.urlsplit(proxy)
            if proxy_parts.hostname:
                host = proxy_parts.hostname
                port = proxy_parts.port or (
                    443 if proxy_parts.scheme == "https" else 80
                )
        if (host, port) not in targets:
            targets.append((host, port))
    return targets


def _unreachable_endpoint(endpoints, timeout=None):
    """Returns why one of `endpoints` cannot be reached, or None.

    Each `(host, port)` gets a TCP connection attempt in its own thread; all
    are bounded by `timeout` seconds in total (DNS included), so a machine
    without network answers in at most that long.
    """
    timeout = PROBE_TIMEOUT if timeout is None else timeout
    results = {}

    def connect(endpoint):
        try:
            with socket.create_connection(endpoint, timeout=timeout):
                results[endpoint] = None
        except OSError as error:
            results[endpoint] = str(error) or type(error).__name__

    threads = [
        threading.Thread(target=connect, args=(endpoint,), daemon=True)
        for endpoint in endpoints
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    for host, port in endpoints:
        if (host, port) not in results:
            return f"could not reach {host}:{port} within {timeout:g} s"
        if results[(host, port)] is not None:
            return f"could not reach {host}:{port}: {results[(host, port)]}"
    return None


def _is_training_split(split):
    return str(split).split("[")[0].split("+")[0].strip() == "train"


def _to_unit_float(features):
    if features.dtype == tf.uint8:
        return tf.cast(features, tf.float32) / 255.0
    return features


def _channel_statistics(dataset):
    """Returns the per-channel mean and std of a split's features.

    Args:
        dataset: Unbatched `(features, label)` examples, as tfds gives them.

    Returns:
        Two float32 numpy arrays of the size of the last axis (of the
        features scaled as by `_to_unit_float`); a constant channel gets
        std 1.
    """

    def sums(features, label):
        del label
        values = tf.cast(_to_unit_float(features), tf.float64)
        channels = tf.shape(values)[-1]
        values = tf.reshape(values, [-1, channels])
        return (
            tf.reduce_sum(values, axis=0),
            tf.reduce_sum(tf.square(values), axis=0),
            tf.cast(tf.shape(values)[0], tf.float64),
        )

    total, squares, count = (
        dataset.batch(4096)
        .map(sums, num_parallel_calls=tf.data.AUTOTUNE)
        .reduce(
            (tf.constant(0.0, tf.float64),) * 3,
            lambda state, batch: tuple(a + b for a, b in zip(state, batch)),
        )
    )
    mean = total.numpy() / count.numpy()
    variance = np.maximum(squares.numpy() / count.numpy() - mean**2, 0.0)
    std = np.sqrt(variance)
    std[std == 0.0] = 1.0
    return mean.astype(np.float32), std.astype(np.float32)


def _augment(image, seed, random_flip, crop_padding):
    """Flips and crops one image at random, as drawn from `seed` (2 ints)."""
    flip_seed, crop_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, num=2)
    )
    if random_flip:
        image = tf.image.stateless_random_flip_left_right(image, flip_seed)
    if crop_padding:
        shape = tf.shape(image)
        padded = tf.pad(
            image, [[crop_padding, crop_padding]] * 2 + [[0, 0]]
        )
        image = tf.image.stateless_random_crop(padded, shape, crop_seed)
    return image


def _filled_cache(dataset):
    """Returns `dataset.cache()`, its cache filled by one full pass now.

    A pass that stops early (a peek with `next(iter(ds))`, a `take`)
    cancels tfds's parallel reader, which then reports the end of the data;
    the memory cache records that as complete and every later pass sees
    the truncated split (with TF 2.21, 102-110 of 5000 validation examples
    were left after one peek). A cache filled before anyone iterates it is
    complete and never changes.
    """
    cached = dataset.cache()
    cached.reduce(np.int64(0), lambda count, _: count + 1)
    return cached


def _pipeline(
    dataset,
    training,
    batch_size,
    shuffle_buffer,
    seed,
    drop_remainder,
    augmentation=None,
    statistics=None,
):
    # Cache the decoded (uint8 for images) examples, normalize per batch.
    dataset = _filled_cache(dataset)
    if training and shuffle_buffer:
        dataset = dataset.shuffle(
            shuffle_buffer, seed=seed, reshuffle_each_iteration=True
        )
    if augmentation:
        random_flip, crop_padding = augmentation
        # A new stream of per-example seeds in every epoch (pairs of int64).
        seeds = tf.data.Dataset.random(
            seed=seed, rerandomize_each_iteration=True
        ).batch(2)
        dataset = tf.data.Dataset.zip(dataset, seeds).map(
            lambda example, pair: (
                _augment(example[0], pair, random_flip, crop_padding),
                example[1],
            ),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)

    def normalize(features, label):
        features = _to_unit_float(features)
        if statistics is not None:
            mean, std = statistics
            features = (features - mean) / std
        return features, label

    dataset = dataset.map(normalize, num_parallel_calls=tf.data.AUTOTUNE)
    # Without the autotuning model thread: `fit` drops each epoch's iterator
    # when the next epoch starts, and the iterator's destructor waits for
    # that thread, which may be asleep between two optimization rounds. That
    # stalled the first batch of an epoch by up to seconds (1.9 s at K = 256
    # blocks of width 64, 3.7 s at K = 512; benchmarks/epoch_stall.py).
    # `AUTOTUNE` parallelism and prefetching still apply, at default sizes
    # that these small cached pipelines do not outgrow.
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.prefetch(tf.data.AUTOTUNE).with_options(options)

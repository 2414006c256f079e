"""Training shared by the tests of `MultilevelModel` under `tf.distribute`.

A strategy's devices or cluster must be set up before TensorFlow starts, so
these tests train in fresh processes, which import this module after setting
it up: every replica count and the single device then train the same network
on the same global batches, and report the states the tests compare.
"""

import json

import keras
import numpy as np
import tensorflow as tf

import keras_mlres as mlres

# Marks the line of a process's stdout that holds its results (JSON).
RESULTS = "RESULTS"


def fine():
    """The seeded fine network: 8 residual blocks of width 4, 3 classes."""
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((2,)),
        keras.layers.Dense(4, activation="tanh"),
        mlres.layers.ODEStack(
            mlres.layers.ResidualODEBlock(4, activation="tanh"),
            num_blocks=8, time_horizon=1.0),
        keras.layers.Dense(3),
    ])


def arrays():
    """64 points and their classes (0, 1 or 2)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 2)).astype("float32")
    y = rng.integers(0, 3, 64)
    return x, y


def data():
    """`arrays()` in global batches of 16, repeated.

    Each epoch is `STEPS_PER_EPOCH` batches, the same 4 in the same order.
    One iterator serves every epoch of a `fit` (a new one per epoch costs
    seconds across workers), and a `fit` resumed by `BackupAndRestore` starts
    on the first batch as its epoch does.
    """
    dataset = tf.data.Dataset.from_tensor_slices(arrays()).batch(16).repeat()
    options = tf.data.Options()
    # As Keras shards NumPy arrays: every worker reads each global batch
    # and keeps its replicas' shares.
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA)
    return dataset.with_options(options)


STEPS_PER_EPOCH = 4


def train(strategy, options, optimizer, epochs=2, callbacks=None):
    """Trains a `MultilevelModel` of `fine()` on `data()` under `strategy`.

    Args:
        strategy: The `tf.distribute` strategy whose scope holds the model.
        options: `MultilevelModel` keyword arguments.
        optimizer: An optimizer config for `keras.optimizers.get`.
        epochs: Epochs of `fit`.
        callbacks: Optional callbacks for `fit`.

    Returns:
        The model's `states` and `fit`'s history dict.
    """
    with strategy.scope():
        model = mlres.MultilevelModel(fine(), **options)
        model.compile(
            keras.optimizers.get(optimizer),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(data(), epochs=epochs,
                        steps_per_epoch=STEPS_PER_EPOCH, verbose=0,
                        callbacks=callbacks)
    return states(model), history.history


def states(model):
    """Every level's weights, then every level's optimizer variables."""
    arrays = []
    for level in range(model.num_levels):
        arrays += [v.numpy() for v in model.hierarchy.level(level).weights]
    for optimizer in [model.optimizer] + model.level_optimizers:
        arrays += [v.numpy() for v in optimizer.variables]
    return arrays


def relative(a, b):
    """The largest difference of `a` and `b`, relative to `b`'s magnitude."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / (np.max(np.abs(b)) + 1e-12))


def print_results(results):
    """Prints `results` (JSON-serializable) as the RESULTS line."""
    print(RESULTS + json.dumps(results), flush=True)


def parse_results(stdout):
    """Returns the results of the RESULTS line in a process's `stdout`."""
    line = next(l for l in stdout.splitlines() if l.startswith(RESULTS))
    return json.loads(line[len(RESULTS):])

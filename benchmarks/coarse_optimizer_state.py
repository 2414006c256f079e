"""Measures which coarse optimizer state policy trains faster: keep or reset.

Trains a 64-block dense ODE-ResNet with 3-level MG/OPT V-cycles on a
two-turn spiral, once with coarse Adam state kept from visit to visit and
once reset at every visit, over several seeds, and prints the epochs and the
work (fine-gradient equivalents) to reach the target validation accuracy,
next to single-level Adam. This measurement chose the library default.

Usage:
    python benchmarks/coarse_optimizer_state.py [--seeds 3] [--epochs 15]
"""

import argparse
import os
import statistics

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_mlres as mlres  # noqa: E402
from keras_mlres.datasets import make_spiral  # noqa: E402


def first_hit(history, target):
    """Returns (epochs, work) when val_accuracy first reaches target."""
    for epoch, (accuracy, work) in enumerate(
        zip(history["val_accuracy"], history["work"]), start=1
    ):
        if accuracy >= target:
            return epoch, work
    return None, None


def run(state, num_levels, seed, args, data):
    """Trains one configuration; returns (epochs, work) to the target."""
    (x, y), validation = data
    keras.utils.set_random_seed(seed)
    fine = mlres.models.dense_ode_resnet(
        (2,), 3, width=16, num_blocks=args.blocks, time_horizon=4.0
    )
    model = mlres.MultilevelModel(
        fine,
        num_levels=num_levels,
        coarse_optimizer_state=state,
        post_smoothing=0 if num_levels == 1 else 1,
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=True,
    )
    train = (
        tf.data.Dataset.from_tensor_slices((x, y))
        .shuffle(len(x), seed=seed)
        .batch(100, drop_remainder=True)
    )
    history = model.fit(
        train, epochs=args.epochs, validation_data=validation, verbose=0
    )
    return first_hit(history.history, args.target)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--blocks", type=int, default=64)
    parser.add_argument("--target", type=float, default=0.95)
    args = parser.parse_args()
    data = (
        make_spiral(6000, turns=2.0, noise=0.04, seed=0),
        make_spiral(2000, turns=2.0, noise=0.04, seed=1),
    )
    print(f"{'policy':<14}{'epochs to target':>20}{'median work':>14}")
    for label, state, levels in (
        ("single level", "keep", 1),
        ("3 levels keep", "keep", 3),
        ("3 levels reset", "reset", 3),
    ):
        hits = [run(state, levels, seed, args, data) for seed in range(args.seeds)]
        epochs = [h[0] for h in hits]
        works = [h[1] for h in hits if h[1] is not None]
        median = statistics.median(works) if works else float("nan")
        print(f"{label:<14}{str(epochs):>20}{median:>14.0f}")


if __name__ == "__main__":
    main()

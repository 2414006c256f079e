"""Measures which coarse optimizer state policy trains faster: keep or reset.

Trains a 64-block dense ODE-ResNet of width 16 with 3-level MG/OPT
V-cycles on the packaged `spiral` data set (generated locally), once with
coarse Adam state kept from visit to visit and once reset at every visit,
over several seeds, and prints the epochs and the work (fine-gradient
equivalents) to reach the target validation accuracy, next to single-level
Adam. Its first version (on a two-turn spiral that later stopped training
within its budget) chose the library default, "reset".

Usage:
    python benchmarks/coarse_optimizer_state.py [--seeds 3] [--epochs 10]
    python benchmarks/coarse_optimizer_state.py --quick   # a smoke run
"""

import argparse
import os
import statistics

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

import keras_mlres as mlres  # noqa: E402
from keras_mlres.train import validation_split  # noqa: E402


def first_hit(history, target):
    """Returns (epochs, work) when val_accuracy first reaches target."""
    for epoch, (accuracy, work) in enumerate(
        zip(history["val_accuracy"], history["work"]), start=1
    ):
        if accuracy >= target:
            return epoch, work
    return None, None


def run(state, num_levels, seed, args):
    """Trains one configuration; returns (epochs, work) to the target."""
    # Fresh pipelines for every run: a pipeline reshuffles on each pass, so
    # shared ones would feed the policies of a seed different orders.
    (train, validation), info = mlres.datasets.load(
        "spiral", batch_size=100,
        split=("train", validation_split("spiral", args.data_dir)),
        data_dir=args.data_dir, seed=seed, with_info=True,
    )
    keras.utils.set_random_seed(seed)
    fine = mlres.models.dense_ode_resnet(
        (2,), info.features["label"].num_classes, width=16,
        num_blocks=args.blocks, time_horizon=4.0,
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
    history = model.fit(
        train, epochs=args.epochs, validation_data=validation, verbose=0
    )
    return first_hit(history.history, args.target)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--blocks", type=int, default=64)
    parser.add_argument("--target", type=float, default=0.99)
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--quick", action="store_true",
                        help="one seed, 1 epoch, 8 blocks: checks it runs")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.epochs, args.blocks = 1, 1, 8
    print(f"{'policy':<14}{'epochs to target':>20}{'median work':>14}")
    for label, state, levels in (
        ("single level", "keep", 1),
        ("3 levels keep", "keep", 3),
        ("3 levels reset", "reset", 3),
    ):
        hits = [run(state, levels, seed, args) for seed in range(args.seeds)]
        epochs = [h[0] for h in hits]
        works = [h[1] for h in hits if h[1] is not None]
        median = statistics.median(works) if works else float("nan")
        print(f"{label:<14}{str(epochs):>20}{median:>14.0f}")


if __name__ == "__main__":
    main()

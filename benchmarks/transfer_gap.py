"""Measures how much of a trained coarse network's accuracy the finer levels keep.

Nested iteration trains the coarsest network of the hierarchy first and
prolongates its weights up: the finer networks start from what it learned
only if they compute nearly the same function, that is if the trained
coarse network still discretizes an ODE. For each block activation, this
script trains the coarsest level of the image task's conv ODE-ResNet
(`shapes`, Adam) for a few epochs, prolongates it through every finer level,
and prints each level's validation accuracy.

Usage:
    python benchmarks/transfer_gap.py [--activations relu,tanh]
        [--blocks 32] [--levels 3] [--epochs 3] [--seeds 1]
        [--time_horizon 4] [--interpolation constant] [--quick]
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

import keras_mlres as mlres  # noqa: E402


def level_accuracies(activation, seed, data, args):
    """Trains the coarsest level; returns every level's (K, val accuracy).

    The list is finest first. Levels finer than the coarsest hold the
    prolongation of its trained weights, as nested iteration hands them on.
    """
    train, validation = data
    keras.utils.set_random_seed(seed)
    fine = mlres.models.ode_resnet(
        (28, 28, 1), 6,
        stages=[
            (args.width * 2**i, args.blocks, args.time_horizon)
            for i in range(2)
        ],
        activation=activation,
    )
    model = mlres.MultilevelModel(
        fine,
        **dict(
            mlres.DEFAULT_SCHEME,
            num_levels=args.levels,
            max_level_epochs=args.epochs,
            level_patience=args.epochs,
            interpolation=args.interpolation,
        ),
    )
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(
        optimizer=keras.optimizers.Adam(args.learning_rate), loss=loss,
        steps_per_execution=20,
    )
    # After its last epoch on the coarsest level, nested iteration moves
    # finer: every finer level then holds the prolongated weights.
    model.fit(train, epochs=args.epochs, verbose=0)
    accuracies = []
    for level in range(args.levels):
        network = model.hierarchy.level(level)
        network.compile(loss=loss, metrics=["accuracy"])
        accuracy = network.evaluate(validation, verbose=0, return_dict=True)
        accuracies.append((args.blocks // 2**level, accuracy["accuracy"]))
    return accuracies


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--activations", default="relu,tanh")
    parser.add_argument("--blocks", type=int, default=32,
                        help="K, the blocks of each of the 2 fine stages")
    parser.add_argument("--width", type=int, default=8,
                        help="filters of the first stage")
    parser.add_argument("--levels", type=int, default=3)
    parser.add_argument("--time_horizon", type=float, default=4.0,
                        help="T of each stage")
    parser.add_argument("--interpolation", default="constant",
                        choices=["constant", "linear"],
                        help="prolongation in depth")
    parser.add_argument("--epochs", type=int, default=3,
                        help="epochs on the coarsest level")
    parser.add_argument("--learning_rate", type=float, default=3e-3)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--train_examples", type=int, default=None)
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--quick", action="store_true",
                        help="a tiny run that checks the script works")
    args = parser.parse_args(argv)
    if args.quick:
        args.blocks, args.levels, args.epochs, args.width = 4, 2, 1, 4
        args.train_examples = 500
    split = f"train[:{args.train_examples}]" if args.train_examples else "train"
    data = mlres.datasets.load(
        "shapes", batch_size=100, split=(split, "validation"),
        data_dir=args.data_dir,
    )
    print(f"{'activation':<11}{'seed':>5}{'K':>6}{'val accuracy':>14}")
    for activation in args.activations.split(","):
        for seed in range(args.seeds):
            for blocks, accuracy in level_accuracies(
                activation, seed, data, args
            ):
                print(f"{activation:<11}{seed:>5}{blocks:>6}{accuracy:>14.4f}")


if __name__ == "__main__":
    main()

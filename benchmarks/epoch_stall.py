"""Measures the stall before each epoch's first batch, tf.data autotuning on/off.

`keras_mlres.datasets.load` returns pipelines with `tf.data` autotuning off.
This script shows why. `fit` drops each epoch's data iterator when the next
epoch starts; with autotuning on, the iterator's destructor waits for the
autotuning thread, which may be asleep between two optimization rounds
(seen in a native stack dump: the main thread in `~IteratorResource`, the
`tf_data_model` thread in `Model::OptimizeLoop`'s timed wait).

For each setting the script trains the same dense ODE-ResNet with plain
`keras.Model.fit` on the same `load` pipeline (autotuning switched back on
with `with_options` for the "on" runs), alternating the settings, and
records per epoch the seconds between `on_epoch_begin` and the first
`on_train_batch_begin`. Epoch 1 has no previous iterator and is left out.

Usage:
    python benchmarks/epoch_stall.py [--blocks 256] [--width 64]
        [--epochs 8] [--repeats 2] [--no_xla] [--data_dir DIR] [--quick]
        [--json out.json]
"""

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_mlres as mlres  # noqa: E402

# Gaps above this many seconds count as stalls (a routine epoch start
# takes about 1 ms).
STALL_SECONDS = 0.05


class EpochStartGaps(keras.callbacks.Callback):
    """Records the seconds from each epoch's start to its first batch.

    Attributes:
        gaps: One float per epoch, in order.
    """

    def __init__(self):
        super().__init__()
        self.gaps = []
        self._epoch_start = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()

    def on_train_batch_begin(self, batch, logs=None):
        if self._epoch_start is not None:
            self.gaps.append(time.perf_counter() - self._epoch_start)
            self._epoch_start = None


def measure(autotune, train, blocks, width, epochs, jit_compile):
    """Trains once; returns the epoch-start gaps (epochs 2...) and fit time."""
    options = tf.data.Options()
    options.autotune.enabled = autotune
    keras.utils.set_random_seed(0)
    model = mlres.models.dense_ode_resnet(
        (2,), 5, width=width, num_blocks=blocks, time_horizon=4.0
    )
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit_compile,
        steps_per_execution=20,
    )
    clock = EpochStartGaps()
    start = time.perf_counter()
    model.fit(
        train.with_options(options), epochs=epochs, verbose=0,
        callbacks=[clock],
    )
    return {
        "autotune": autotune,
        "gaps_s": clock.gaps[1:],
        "fit_s": time.perf_counter() - start,
    }


def summarize(results):
    """Per setting: epoch starts, stalls, the longest and the total gap."""
    rows = []
    for autotune in (True, False):
        gaps = [
            gap
            for result in results
            if result["autotune"] == autotune
            for gap in result["gaps_s"]
        ]
        fit_times = [r["fit_s"] for r in results if r["autotune"] == autotune]
        rows.append({
            "autotune": autotune,
            "epoch_starts": len(gaps),
            "stalls": sum(gap > STALL_SECONDS for gap in gaps),
            "longest_s": max(gaps, default=0.0),
            "total_s": sum(gaps),
            "fit_s": sum(fit_times),
        })
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--blocks", type=int, default=256)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--no_xla", action="store_true",
                        help="train without XLA (jit_compile=False)")
    parser.add_argument("--data_dir", help="TFDS data directory of `load`")
    parser.add_argument("--quick", action="store_true",
                        help="tiny settings that only check the script runs")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.blocks, args.width, args.epochs, args.repeats = 4, 8, 3, 1
        args.no_xla = True
    train = mlres.datasets.load(
        "peaks", batch_size=100, split="train", data_dir=args.data_dir
    )
    results = [
        measure(autotune, train, args.blocks, args.width, args.epochs,
                not args.no_xla)
        for _ in range(args.repeats)
        for autotune in (True, False)
    ]
    rows = summarize(results)
    print(
        f"\npeaks, dense ODE-ResNet K={args.blocks} width={args.width}, "
        f"{args.epochs} epochs x {args.repeats} runs per setting, "
        f"XLA {'off' if args.no_xla else 'on'}; a stall is a gap > "
        f"{STALL_SECONDS} s between an epoch's start and its first batch"
    )
    print(
        f"{'autotune':>8} {'epoch starts':>12} {'stalls':>6} "
        f"{'longest s':>9} {'total s':>7} {'fit s':>7}"
    )
    for row in rows:
        print(
            f"{'on' if row['autotune'] else 'off':>8} "
            f"{row['epoch_starts']:>12} {row['stalls']:>6} "
            f"{row['longest_s']:>9.2f} {row['total_s']:>7.2f} "
            f"{row['fit_s']:>7.1f}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"runs": results, "summary": rows}, f, indent=2)
    return rows


if __name__ == "__main__":
    main()

"""Measures what one MG/OPT training step costs against a plain step.

For each number of levels (1 = plain single-level training: one optimizer
step per batch) and with XLA on and off, builds the same dense ODE-ResNet,
and measures

- the time of the first step (tracing + XLA compilation + one step),
- the steady wall time per step (median over repeats),
- the modelled work per step in fine-gradient equivalents (counted by the
  cycle: a level-l gradient costs its parameter fraction, a forward pass a
  third of that),

and prints measured and modelled ratios to the single-level step, side by
side in one run on one machine.

Usage:
    python benchmarks/cycle_cost.py [--blocks 64] [--levels 1,2,3,4]
        [--steps 50] [--quick] [--json out.json]
"""

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_mlres as mlres  # noqa: E402


def _batch(batch_size, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch_size, 2)).astype("float32")
    y = rng.integers(0, 3, size=(batch_size,)).astype("int32")
    return x, y


def measure(num_levels, jit_compile, blocks, width, batch_size, steps, cycle):
    """Times one configuration; returns a dict of measurements."""
    keras.utils.set_random_seed(0)
    fine = mlres.models.dense_ode_resnet(
        (2,), 3, width=width, num_blocks=blocks, time_horizon=4.0
    )
    single = num_levels == 1
    model = mlres.MultilevelModel(
        fine,
        num_levels=num_levels,
        cycle=cycle,
        pre_smoothing=1,
        post_smoothing=0 if single else 1,
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit_compile,
    )
    x, y = _batch(batch_size)
    start = time.perf_counter()
    model.train_on_batch(x, y)
    first_step = time.perf_counter() - start
    work_before = float(model.work.numpy())
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        model.train_on_batch(x, y)
        times.append(time.perf_counter() - start)
    return {
        "levels": num_levels,
        "jit_compile": jit_compile,
        "first_step_s": first_step,
        "step_ms": 1000 * statistics.median(times),
        "work_per_step": (float(model.work.numpy()) - work_before) / steps,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--blocks", type=int, default=64)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--batch_size", type=int, default=100)
    parser.add_argument("--levels", default="1,2,3,4")
    parser.add_argument("--cycle", default="V")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--jit", default="on,off")
    parser.add_argument("--quick", action="store_true",
                        help="tiny settings that only check the script runs")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.blocks, args.levels, args.steps, args.jit = 8, "1,2", 2, "off"
    levels = [int(level) for level in args.levels.split(",")]
    jit_modes = [mode == "on" for mode in args.jit.split(",")]

    results = [
        measure(level, jit, args.blocks, args.width, args.batch_size,
                args.steps, args.cycle)
        for jit in jit_modes
        for level in levels
    ]
    print(
        f"\nK={args.blocks} width={args.width} batch={args.batch_size} "
        f"{args.cycle}-cycle, nu1=nu2=1, 2 coarse steps, line search on; "
        "baseline: 1 level, one Adam step per batch"
    )
    header = (
        f"{'xla':>4} {'levels':>6} {'first step s':>12} {'step ms':>8} "
        f"{'work/step':>9} {'time ratio':>10} {'work ratio':>10}"
    )
    print(header)
    for jit in jit_modes:
        rows = [r for r in results if r["jit_compile"] == jit]
        base = next((r for r in rows if r["levels"] == 1), rows[0])
        for r in rows:
            r["time_ratio"] = r["step_ms"] / base["step_ms"]
            r["work_ratio"] = r["work_per_step"] / base["work_per_step"]
            print(
                f"{'on' if jit else 'off':>4} {r['levels']:>6} "
                f"{r['first_step_s']:>12.2f} {r['step_ms']:>8.2f} "
                f"{r['work_per_step']:>9.2f} {r['time_ratio']:>10.2f} "
                f"{r['work_ratio']:>10.2f}"
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()

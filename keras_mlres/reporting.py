"""Reports of time-to-accuracy runs: a summary table, curves, JSON.

The table reads `keras_mlres.protocol.Run`s; the plot reads Keras histories
(`History.history`: per-epoch lists, with `work` and `level` as logged by
`MultilevelModel`) and the wall time at each epoch end.
"""

import json
import math
import statistics

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from keras_mlres import protocol

# Method name of the single-level baseline in `summary_table`.
BASELINE = "single_level"


def summary_table(runs, target, baseline=BASELINE):
    """Formats each method's time, work and accuracy to a target as a table.

    One line per method: the seeds that reached the target, the median
    (and range over seeds) of the wall time, the median epochs and work to
    the target, the median final validation accuracy, and the median (and
    range) of the per-seed speedups in wall time and in work against
    `baseline` (see `protocol.speedups`; "-" without a baseline).

    Args:
        runs: Dict mapping a method name to its `protocol.Run`s, one per
            seed.
        target: The target validation accuracy.
        baseline: The method the speedups are relative to.

    Returns:
        The table, a header line and one line per method, as a string.

    Example:

    ```python
    print(summary_table({"single_level": [run_a], "multilevel": [run_b]},
                        target=0.95))
    ```
    """
    rows = [(
        "method", "seeds at target", "time to target (s)",
        "epochs", "work", "final val acc", "speedup time", "speedup work",
    )]
    for method, method_runs in runs.items():
        reached = [protocol.reach(run, target) for run in method_runs]
        times = protocol.spread(r.time for r in reached)
        speedups = (
            protocol.speedups(runs[baseline], method_runs, target)
            if baseline in runs else {"time": "-", "work": "-"}
        )
        rows.append((
            method,
            f"{sum(r.reached for r in reached)}/{len(reached)}",
            str(times) if math.isfinite(times.median) else "-",
            _median_or_dash([r.epochs for r in reached], 0),
            _median_or_dash([r.work for r in reached], 0),
            f"{statistics.median(r.final_accuracy for r in method_runs):.4f}",
            str(speedups["time"]),
            str(speedups["work"]),
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(
            [row[0].ljust(widths[0])]
            + [cell.rjust(width) for cell, width in zip(row[1:], widths[1:])]
        )
        for row in rows
    )


def _median_or_dash(values, digits):
    median = statistics.median(values)
    return f"{median:.{digits}f}" if math.isfinite(median) else "-"


def level_starts(levels):
    """Returns the epochs (0-based) where a run starts training a new level.

    Args:
        levels: The level each epoch trained (the `level` log).

    Returns:
        `(epoch, level)` pairs: the first epoch, unless it trained the fine
        level (0), and every epoch whose level differs from the one before.

    Example:

    >>> level_starts([2, 2, 1, 0, 0])
    [(0, 2), (2, 1), (3, 0)]
    """
    return [
        (epoch, level) for epoch, level in enumerate(levels)
        if (level != levels[epoch - 1] if epoch else level != 0)
    ]


def plot_curves(runs, path, target=None, key="val_accuracy", title=None):
    """Plots validation accuracy against wall time and against work.

    Writes a PNG with two panels, `key` against the wall time of each epoch
    end and against the work (fine-gradient equivalents) at each epoch end,
    one line per method, and `target` as a horizontal line. A run whose
    history has a `level` log gets a labelled marker where each level
    starts (`level_starts`); the first epoch that reaches `target` gets a
    star. Uses matplotlib's Agg backend without touching `pyplot`'s global
    state.

    Args:
        runs: Dict mapping a method name to a dict with `history` (per-epoch
            lists with `key`, `work` and optionally `level`; empty for a run
            stopped in its first epoch) and `epoch_times` (seconds).
        path: Output file (PNG).
        target: Optional target value, drawn as a horizontal line.
        key: The plotted log.
        title: Optional title of the figure (e.g. task, K and seed).

    Example:

    ```python
    plot_curves({"multilevel": {"history": history.history,
                                "epoch_times": clock.epoch_times}},
                "curves.png", target=0.95, title="peaks, K = 512, seed 0")
    ```
    """
    figure = Figure(figsize=(11, 4.5), layout="constrained")
    FigureCanvasAgg(figure)
    by_time, by_work = figure.subplots(1, 2, sharey=True)
    for method, run in runs.items():
        history = run["history"]
        values = history.get(key, [])
        for axes, xs in ((by_time, run["epoch_times"]),
                         (by_work, history.get("work", []))):
            if not len(xs):
                continue
            (line,) = axes.plot(xs, values, marker="o", markersize=3,
                                label=method)
            for epoch, level in level_starts(history.get("level", [])):
                axes.annotate(
                    f"L{level}", (xs[epoch], values[epoch]),
                    textcoords="offset points", xytext=(0, 6),
                    ha="center", fontsize=7, color=line.get_color(),
                )
            reached = (
                None if target is None
                else protocol.first_epoch_reaching(values, target)
            )
            if reached is not None:
                axes.plot(xs[reached - 1], values[reached - 1], marker="*",
                          markersize=12, color=line.get_color())
    for axes, label in (
        (by_time, "wall time since the start of fit (s)"),
        (by_work, "work (fine-gradient equivalents)"),
    ):
        if target is not None:
            axes.axhline(
                target,
                color="gray",
                linestyle="--",
                label=f"target {target:.4f}",
            )
        axes.set_xlabel(label)
        axes.grid(alpha=0.3)
        axes.legend(loc="lower right")
    by_time.set_ylabel(key.replace("_", " "))
    if title:
        figure.suptitle(title)
    figure.savefig(path, format="png", dpi=100)


def write_json(path, obj):
    """Writes `obj` as indented JSON, converting numpy values to Python.

    Non-finite floats (a diverged loss) are written as `null`, so the file
    is strict JSON.

    Args:
        path: Output file.
        obj: Nested dicts, lists and tuples of strings, numbers, booleans,
            None, numpy scalars and numpy arrays.

    Example:

    ```python
    write_json("results.json", {"history": history.history})
    ```
    """
    with open(path, "w") as file:
        json.dump(_json_value(obj), file, indent=2)
        file.write("\n")


def _json_value(value):
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if isinstance(value, (np.ndarray, np.generic)):
        return _json_value(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value

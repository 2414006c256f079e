"""Time- and work-to-accuracy reports of training runs: tables, plots, JSON.

A run is described by its Keras history (`History.history`: a dict of
per-epoch lists, with `work`, the cumulative fine-gradient equivalents
logged by `MultilevelModel`) and the wall time at each epoch end (e.g.
`keras_mlres.callbacks.WallClock.epoch_times`).
"""

import json
import math

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

# Method name of the single-level baseline in `summary_table` results.
BASELINE = "single_level"


def first_epoch_reaching(values, target):
    """Returns the first epoch whose value reaches `target`.

    Args:
        values: Per-epoch values, e.g. `history["val_accuracy"]`.
        target: The value to reach (`value >= target`).

    Returns:
        The 1-based epoch index, or None if no epoch reaches `target`
        (NaN never does).

    Example:

    >>> first_epoch_reaching([0.5, 0.9, 0.95], 0.9)
    2
    """
    for epoch, value in enumerate(values, start=1):
        if value >= target:
            return epoch
    return None


def time_to_target(history, epoch_times, target, key="val_accuracy"):
    """Returns the epochs, wall time and work spent to reach `target`.

    Args:
        history: Dict of per-epoch lists (`History.history`). Its `work`
            list (cumulative fine-gradient equivalents) gives the work; if
            it has none, the work is None.
        epoch_times: Seconds from the start of training to each epoch end.
        target: The value of `history[key]` to reach (`>=`).
        key: The monitored log.

    Returns:
        A dict with `epochs` (1-based, the first epoch reaching `target`),
        `time` (seconds at the end of that epoch) and `work`
        (fine-gradient equivalents at the end of that epoch); all None if
        no epoch reaches `target`.

    Example:

    >>> time_to_target({"val_accuracy": [0.8, 0.99], "work": [200, 400]},
    ...                [10.0, 11.0], 0.95)
    {'epochs': 2, 'time': 11.0, 'work': 400.0}
    """
    # A run stopped in its first epoch (a NaN loss) has no logs at all.
    epoch = first_epoch_reaching(history.get(key, []), target)
    if epoch is None:
        return {"epochs": None, "time": None, "work": None}
    work = history.get("work")
    return {
        "epochs": epoch,
        "time": float(epoch_times[epoch - 1]),
        "work": None if work is None else float(work[epoch - 1]),
    }


def _speedup(baseline, value):
    if baseline is None or value is None or value <= 0:
        return "-"
    return f"{baseline / value:.2f}x"


def _number(value, digits):
    return "-" if value is None else f"{value:.{digits}f}"


def summary_table(results, baseline=BASELINE):
    """Formats time- and work-to-target results as a text table.

    Speedups are the baseline's time (work) to target divided by the
    method's; "-" where either did not reach the target or there is no
    baseline in `results`.

    Args:
        results: Dict mapping a method name to a dict with the keys of
            `time_to_target` (`epochs`, `time`, `work`), `best_val_accuracy`
            and `compile_time` (estimated compile seconds, included in
            `time`).
        baseline: Name of the method the speedups are relative to.

    Returns:
        The table, one line per method after a header, as a string.

    Example:

    ```python
    print(summary_table({
        "single_level": {"epochs": 8, "time": 40.0, "work": 1600.0,
                         "best_val_accuracy": 0.97, "compile_time": 4.0},
        "multilevel": {"epochs": 5, "time": 20.0, "work": 700.0,
                       "best_val_accuracy": 0.97, "compile_time": 6.0},
    }))
    ```
    """
    base = results.get(baseline, {})
    rows = [
        (
            "method",
            "epochs to target",
            "wall time to target (s)",
            "fine-gradient equivalents to target",
            "best val acc",
            "compile (s)",
            "speedup time",
            "speedup work",
        )
    ]
    for method, result in results.items():
        rows.append(
            (
                method,
                "-" if result["epochs"] is None else str(result["epochs"]),
                _number(result["time"], 1),
                _number(result["work"], 0),
                f"{result['best_val_accuracy']:.4f}",
                _number(result["compile_time"], 1),
                _speedup(base.get("time"), result["time"]),
                _speedup(base.get("work"), result["work"]),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [row[0].ljust(widths[0])]
        cells += [cell.rjust(width) for cell, width in zip(row[1:], widths[1:])]
        lines.append("  ".join(cells))
    return "\n".join(lines)


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
                else first_epoch_reaching(values, target)
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

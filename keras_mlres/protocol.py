"""The time-to-accuracy protocol: runs, target, speedups and cost model.

How `keras_mlres` measures a speedup, in the main job (`keras_mlres.train`)
and in the benchmark (`benchmarks/time_to_accuracy.py`), as time-to-train
benchmarks do (each method at its best, to a fixed quality, wall time with
compile):

- `RunRecorder` records a `fit`: each epoch end's wall time since `fit`
  was called, validation accuracy, work (fine-gradient equivalents) and
  level, into a `Run`;
- a run reaches a target at the end of the first epoch whose validation
  accuracy is at least the target; its time and work are those at that
  epoch's end, and a run that never reaches it takes forever (`math.inf`);
- the target is the median final validation accuracy (over seeds) of the
  most accurate single-level configuration, less `MARGIN`;
- a method's best configuration is the one with the least median time to
  the target; the speedup of a seed is the baseline's time over the
  method's, summarized by the median and the spread over seeds;
- the cost model: each level's epoch time over the fine epoch time, the
  share of the multilevel run's epochs on each level, and the speedup that
  split would give if no extra epochs were needed (Amdahl's law).
"""

import dataclasses
import math
import statistics
import time

import keras

# "The same accuracy": the target is this far (absolute) below the best
# single-level configuration's median final validation accuracy.
MARGIN = 0.005


@dataclasses.dataclass
class Run:
    """One training run: its configuration and what it measured per epoch.

    Attributes:
        task: The task's name.
        method: `"single level"`, `"multilevel"`, `"coarse alone"` or
            `"schedule control"`.
        config: The configuration: `optimizer`, `learning_rate`, `schedule`
            (`"constant"` or `"cosine"`) and `epochs` (the budget).
        seed: Seed of the initial weights and of the data order.
        accuracies: Validation accuracy at each epoch end.
        epoch_times: Seconds from the call of `fit` (compile included) to
            each epoch end.
        work: Fine-gradient equivalents spent by each epoch end.
        levels: The level each epoch trained (0 is the fine network).
        learning_rates: `[step, rate]` pairs: the active level's learning
            rate from each step on, as training applied it.
        diverged_epoch: The epoch (from 0) whose loss was NaN or Inf, which
            stopped the run; None if it finished.
    """

    task: str
    method: str
    config: dict
    seed: int
    accuracies: list
    epoch_times: list
    work: list
    levels: list
    learning_rates: list = dataclasses.field(default_factory=list)
    diverged_epoch: int | None = None

    @property
    def key(self):
        """What identifies the run among a benchmark's runs."""
        return (self.task, self.method, config_name(self.config), self.seed)

    @property
    def final_accuracy(self):
        """The last epoch's validation accuracy; 0 without any epoch."""
        return self.accuracies[-1] if self.accuracies else 0.0


def config_name(config):
    """Names a configuration, e.g. `"adam 0.003 cosine 6 ep"`.

    Args:
        config: A dict with `optimizer`, `learning_rate`, `schedule` and
            `epochs`.

    Returns:
        The name, which also keys the configuration's runs.
    """
    return (
        f"{config['optimizer']} {config['learning_rate']:g} "
        f"{config['schedule']} {config['epochs']} ep"
    )


@dataclasses.dataclass(frozen=True)
class Reach:
    """When a run reached a target: epochs, seconds and work (inf: never)."""

    epochs: float
    time: float
    work: float

    @property
    def reached(self):
        return math.isfinite(self.time)


def reach(run, target):
    """Returns when `run` first reached `target` (`Reach`, inf if never).

    Args:
        run: A `Run`.
        target: The validation accuracy to reach (`>=`: a tie reaches it).

    Returns:
        A `Reach` with the 1-based epoch, the seconds and the work at the
        end of the first epoch whose accuracy is at least `target`; all
        `math.inf` if none is (also for a run without any epoch).

    Example:

    >>> run = Run("t", "single level", {}, 0, [0.8, 0.95], [10.0, 20.0],
    ...           [100.0, 200.0], [0, 0])
    >>> reach(run, 0.9)
    Reach(epochs=2, time=20.0, work=200.0)
    """
    epoch = first_epoch_reaching(run.accuracies, target)
    if epoch is None:
        return Reach(math.inf, math.inf, math.inf)
    return Reach(epoch, run.epoch_times[epoch - 1], run.work[epoch - 1])


def first_epoch_reaching(values, target):
    """Returns the first epoch (1-based) whose value is at least `target`.

    Args:
        values: Per-epoch values, e.g. validation accuracies.
        target: The value to reach (`>=`).

    Returns:
        The 1-based epoch, or None if no epoch reaches `target` (NaN never
        does).

    Example:

    >>> first_epoch_reaching([0.5, 0.9, 0.95], 0.9)
    2
    """
    for epoch, value in enumerate(values, start=1):
        if value >= target:
            return epoch
    return None


def target_accuracy(final_accuracies, margin=MARGIN):
    """The target: the median of `final_accuracies` less `margin`.

    Args:
        final_accuracies: Final validation accuracies of the most accurate
            single-level configuration, one per seed.
        margin: How far below the median the target is (absolute).

    Returns:
        The target accuracy.
    """
    return statistics.median(final_accuracies) - margin


def speedup(baseline, method):
    """The speedup of one seed: the baseline's time (or work) over the method's.

    Args:
        baseline: The baseline's time or work to the target (inf: missed).
        method: The method's (inf: missed).

    Returns:
        `baseline / method`; `math.inf` if only the baseline missed, 0 if
        only the method missed, None if both missed (no comparison).
    """
    if math.isinf(baseline) and math.isinf(method):
        return None
    if math.isinf(method):
        return 0.0
    return baseline / method


@dataclasses.dataclass(frozen=True)
class Spread:
    """The median of per-seed values and their range."""

    median: float | None
    low: float | None
    high: float | None
    count: int

    def __str__(self):
        if self.median is None:
            return "n/a"
        if self.count == 1:
            return _number(self.median)
        return (
            f"{_number(self.median)} ({_number(self.low)}-"
            f"{_number(self.high)})"
        )


def _number(value):
    return "inf" if math.isinf(value) else f"{value:.2f}"


def spread(values):
    """Summarizes per-seed values (None: no comparison on that seed).

    Args:
        values: Numbers, inf or None.

    Returns:
        A `Spread` of the values that are not None (median None if none).
    """
    values = sorted(v for v in values if v is not None)
    if not values:
        return Spread(None, None, None, 0)
    return Spread(statistics.median(values), values[0], values[-1],
                  len(values))


def by_config(runs):
    """Groups runs by configuration: a dict from `config_name` to runs."""
    groups = {}
    for run in runs:
        groups.setdefault(config_name(run.config), []).append(run)
    return groups


def _median_final(runs):
    return statistics.median(r.final_accuracy for r in runs)


def _median_time(runs, target):
    return statistics.median(reach(r, target).time for r in runs)


def most_accurate(runs):
    """The runs of the configuration with the best median final accuracy.

    Ties go to the configuration of the shorter budget (fewer epochs).

    Args:
        runs: Runs of one method on one task (several configurations).

    Returns:
        The chosen configuration's runs.
    """
    return max(
        by_config(runs).values(),
        key=lambda group: (_median_final(group), -group[0].config["epochs"]),
    )


def fastest(runs, target):
    """The runs of the configuration with the least median time to `target`.

    Ties (also between configurations whose median seed misses) go to the
    better median final accuracy.

    Args:
        runs: Runs of one method on one task (several configurations).
        target: The target accuracy.

    Returns:
        The chosen configuration's runs.
    """
    return min(
        by_config(runs).values(),
        key=lambda group: (_median_time(group, target), -_median_final(group)),
    )


def speedups(baseline_runs, method_runs, target):
    """Per-seed speedups in wall time and in work, paired by seed.

    Args:
        baseline_runs: The baseline configuration's runs, one per seed.
        method_runs: The method configuration's runs, one per seed.
        target: The target accuracy.

    Returns:
        A dict with `time` and `work`, each a `Spread` over the seeds both
        have.
    """
    baseline = {r.seed: reach(r, target) for r in baseline_runs}
    method = {r.seed: reach(r, target) for r in method_runs}
    seeds = sorted(baseline.keys() & method.keys())
    return {
        field: spread(
            speedup(getattr(baseline[s], field), getattr(method[s], field))
            for s in seeds
        )
        for field in ("time", "work")
    }


def epoch_seconds(run):
    """Each epoch's own seconds (the first includes compile)."""
    times = [0.0] + list(run.epoch_times)
    return [after - before for before, after in zip(times, times[1:])]


def steady_epoch_seconds(run, level=None):
    """The median seconds of an epoch on `level` after its first one.

    A level's first epoch pays its compile; if the level trained one epoch
    only, that epoch is taken as it is.

    Args:
        run: A `Run`.
        level: The level; None for every epoch of the run.

    Returns:
        The median epoch seconds, or None if the level trained no epoch.
    """
    seconds = [
        s for s, l in zip(epoch_seconds(run), run.levels)
        if level is None or l == level
    ]
    if not seconds:
        return None
    return statistics.median(seconds[1:] or seconds)


@dataclasses.dataclass(frozen=True)
class CostModel:
    """Where a multilevel run spends its epochs, and what that can give.

    Attributes:
        epoch_cost: Dict from level to its steady epoch seconds over the
            fine network's (the single-level run's) epoch seconds.
        epoch_share: Dict from level to the share of the run's epochs
            trained on it.
        ceiling: `1 / sum(share * cost)`: the wall-time speedup this split
            gives if the run needs no more epochs than the baseline.
    """

    epoch_cost: dict
    epoch_share: dict
    ceiling: float

    def __str__(self):
        levels = sorted(self.epoch_share, reverse=True)
        return (
            "; ".join(
                f"L{level}: {self.epoch_share[level]:.0%} of epochs at "
                f"{self.epoch_cost[level]:.2f}x"
                for level in levels
            )
            + f"; ceiling {self.ceiling:.2f}x"
        )


def cost_model(multilevel_run, single_level_run):
    """The cost model of a multilevel run against a single-level one.

    Args:
        multilevel_run: A `Run` with the level of each epoch.
        single_level_run: A `Run` of the fine network alone on the same
            task; its steady epoch seconds are the unit of cost.

    Returns:
        A `CostModel`, or None if either run has no epoch.
    """
    fine_seconds = steady_epoch_seconds(single_level_run)
    if not multilevel_run.levels or not fine_seconds:
        return None
    levels = sorted(set(multilevel_run.levels))
    total = len(multilevel_run.levels)
    share = {l: multilevel_run.levels.count(l) / total for l in levels}
    cost = {
        l: steady_epoch_seconds(multilevel_run, l) / fine_seconds
        for l in levels
    }
    return CostModel(
        cost, share, 1.0 / sum(share[l] * cost[l] for l in levels)
    )


class RunRecorder(keras.callbacks.Callback):
    """Records what `Run` holds for each epoch of a `fit`.

    Times count from `started` (pass `time.perf_counter()` taken just before
    calling `fit`, so that tracing and compile are included). Work is the
    `work` log of a `MultilevelModel`; for a plain `keras.Model` it is the
    steps so far times `step_cost` (the network's cost in fine gradients).
    With `record_learning_rates`, the learning rate that the active level's
    optimizer applies is read at each call of the train function (every
    `steps_per_execution` steps): a host read, so it is off by default.
    An epoch whose training or validation loss is NaN or Inf is not
    recorded: it sets `diverged_epoch` and stops training.

    Args:
        started: `time.perf_counter()` at the call of `fit`.
        steps_per_epoch: Training batches per epoch.
        step_cost: Fine-gradient equivalents of one step of a plain model.
        record_learning_rates: Whether to record the learning rates.

    Example:

    ```python
    started = time.perf_counter()
    recorder = RunRecorder(started, steps_per_epoch=200)
    model.fit(train, epochs=10, validation_data=val, callbacks=[recorder])
    run = recorder.run("peaks", "multilevel", config, seed=0)
    ```
    """

    def __init__(self, started, steps_per_epoch, step_cost=1.0,
                 record_learning_rates=False):
        super().__init__()
        self.started = started
        self.steps_per_epoch = steps_per_epoch
        self.step_cost = step_cost
        self.record_learning_rates = record_learning_rates
        self.accuracies, self.epoch_times = [], []
        self.work, self.levels, self.learning_rates = [], [], []
        self.diverged_epoch = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if not self.record_learning_rates:
            return
        level = getattr(self.model, "active_level", 0)
        optimizer = (
            self.model.level_optimizers[level - 1] if level
            else self.model.optimizer
        )
        step = self._epoch * self.steps_per_epoch + batch
        rate = keras.ops.convert_to_numpy(optimizer.learning_rate)
        self.learning_rates.append([step, float(rate)])

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if not all(
            math.isfinite(logs.get(key, 0.0)) for key in ("loss", "val_loss")
        ):
            self.diverged_epoch = epoch
            self.model.stop_training = True
            return
        self.epoch_times.append(time.perf_counter() - self.started)
        self.accuracies.append(float(logs["val_accuracy"]))
        steps = (epoch + 1) * self.steps_per_epoch
        self.work.append(float(logs.get("work", steps * self.step_cost)))
        self.levels.append(int(logs.get("level", 0)))

    def run(self, task, method, config, seed):
        """Returns the recorded `Run` (call after `fit`)."""
        return Run(
            task, method, config, seed, self.accuracies, self.epoch_times,
            self.work, self.levels, self.learning_rates, self.diverged_epoch,
        )

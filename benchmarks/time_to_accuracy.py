"""Time to accuracy: multilevel training against plain `fit` at its best.

Measures as time-to-train benchmarks do: each method at its tuned best, to a
fixed quality, in wall time from the call of `fit` (compile included) on the
same machine, side by side. For each task (`TASKS`):

1. Tuning, on the tuning seeds: plain `keras.Model.fit` of the fine network
   ("single level"), `MultilevelModel(fine, **scheme)` ("multilevel") and
   plain `fit` of the hierarchy's coarsest network ("coarse alone") each
   train every configuration of the grid: optimizer (Adam, SGD with momentum
   0.9) x 3 learning rates x schedule (constant; linear warm-up over 5% of
   the steps, then cosine decay to 0 at the end of the budget) x epoch
   budget (E, E/2, E/4). A constant-rate run of a shorter budget is the
   start of the E-epoch run, so constant rates train E epochs only.
2. Choices: the most accurate single-level configuration (best median final
   validation accuracy) sets the tuning target (that accuracy less 0.5
   points); each method's best configuration is its fastest to that target.
3. Headline, on fresh seeds: the most accurate and the fastest single-level
   configurations, the fastest multilevel one, the most accurate coarse one,
   and a schedule control (plain `fit` of the fine network with the
   learning rate the multilevel run applied, step by step) train once per
   seed. The target is the most accurate single-level configuration's
   median final accuracy over these seeds, less 0.5 points.

Reported per task (benchmarks/README.md): the target; each method's choice;
the median (and range) over the headline seeds of the per-seed speedup in
wall time and in work (fine-gradient equivalents) to the target; the final
accuracies; the coarse-alone control (a task it solves does not need depth
and is kept out of the headline); the schedule control's speedup; and the
cost model of the median seed's multilevel run (`protocol.cost_model`).
The arithmetic is `keras_mlres.protocol`.

Every run is appended to benchmarks/results/runs.json as soon as it ends
and is not trained again by a later command with the same settings, so an
interrupted benchmark continues where it stopped (--retrain METHOD drops a
method's recorded runs, e.g. after the library's default scheme changed).

Usage:
    python benchmarks/time_to_accuracy.py             # the whole benchmark
    python benchmarks/time_to_accuracy.py --tasks shapes
    python benchmarks/time_to_accuracy.py --quick     # a smoke run
"""

import argparse
import dataclasses
import functools
import inspect
import json
import math
import os
import shlex
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402

import keras_mlres as mlres  # noqa: E402
from keras_mlres import protocol  # noqa: E402
from keras_mlres import reporting  # noqa: E402
from keras_mlres.schedules import warmup_cosine  # noqa: E402
from keras_mlres.train import fine_network  # noqa: E402
from keras_mlres.train import validation_split  # noqa: E402


_HERE = os.path.dirname(os.path.abspath(__file__))

SINGLE_LEVEL = "single level"
MULTILEVEL = "multilevel"
COARSE_ALONE = "coarse alone"
SCHEDULE_CONTROL = "schedule control"


@dataclasses.dataclass(frozen=True)
class Task:
    """A task: a data set, the fine network trained on it, and its budget.

    Attributes:
        dataset: The data set, as `keras_mlres.datasets.load` takes it.
        epochs: E, the longest epoch budget of the grid.
        width: Width of the (first) residual stage.
        num_blocks: K, the blocks of each stage of the fine network.
        xla: Whether training is XLA-compiled (conv networks train faster
            without it on CPU).
        train_examples: Train on the first N examples only; None for all.
    """

    dataset: str
    epochs: int
    width: int
    num_blocks: int
    xla: bool
    train_examples: int | None = None


# Images: conv ODE-ResNets of 2 stages (the second of twice the filters at
# half the resolution), T = 4 per stage. Point sets: a dense ODE-ResNet.
TASKS = {
    "shapes": Task("shapes", epochs=6, width=8, num_blocks=32, xla=False),
    "cluttered_shapes": Task(
        "cluttered_shapes", epochs=8, width=8, num_blocks=32, xla=False
    ),
    "peaks": Task("peaks", epochs=10, width=64, num_blocks=512, xla=True),
    "spiral/5": Task(
        "spiral/5", epochs=10, width=64, num_blocks=512, xla=True
    ),
}
QUICK_TASKS = {
    "spiral": Task("spiral", epochs=2, width=8, num_blocks=8, xla=True,
                   train_examples=1000),
}
LEARNING_RATES = {"adam": (1e-3, 3e-3, 1e-2), "sgd": (0.03, 0.1, 0.3)}
SCHEDULES = ("constant", "cosine")
# Budgets as divisors of E.
BUDGET_DIVISORS = (1, 2, 4)
TIME_HORIZON = 4.0
BATCH_SIZE = 100
STEPS_PER_EXECUTION = 20
_LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
_OPTIMIZERS = {
    "adam": keras.optimizers.Adam,
    "sgd": lambda rate: keras.optimizers.SGD(rate, momentum=0.9),
}


def grid(task, optimizers, schedules, divisors, rates=LEARNING_RATES):
    """The configurations a method trains on `task` while tuning.

    Args:
        task: A `Task`.
        optimizers: Names among `rates`.
        schedules: Names among `SCHEDULES`.
        divisors: Budgets as divisors of `task.epochs`.
        rates: Dict from optimizer name to its learning rates.

    Returns:
        A list of config dicts (`optimizer`, `learning_rate`, `schedule`,
        `epochs`). Constant rates train the longest budget only: a shorter
        one is its start.
    """
    budgets = sorted({max(1, task.epochs // d) for d in divisors},
                     reverse=True)
    return [
        dict(optimizer=optimizer, learning_rate=rate, schedule=schedule,
             epochs=epochs)
        for optimizer in optimizers
        for rate in rates[optimizer]
        for schedule in schedules
        for epochs in (budgets[:1] if schedule == "constant" else budgets)
    ]


def coarsest_blocks(num_blocks, scheme):
    """K of the coarsest level that `scheme` builds from a K-block network.

    Args:
        num_blocks: K of the fine network.
        scheme: `MultilevelModel` keyword arguments.

    Returns:
        The coarsest level's blocks per stage.

    Raises:
        ValueError: If the scheme cannot coarsen a K-block network.
    """
    return _coarsest_blocks(num_blocks, json.dumps(scheme, sort_keys=True))


@functools.lru_cache(maxsize=None)
def _coarsest_blocks(num_blocks, scheme_json):
    # Builds the hierarchy once per task and scheme, not once per run.
    fine = mlres.models.dense_ode_resnet((1,), 2, width=1,
                                         num_blocks=num_blocks)
    model = mlres.MultilevelModel(fine, **json.loads(scheme_json))
    return model.hierarchy.stages(model.num_levels - 1)[0].num_blocks


def _parameter_count(model):
    return sum(int(np.prod(v.shape)) for v in model.trainable_variables)


def learning_rate(config, steps_per_epoch, replayed=None):
    """The learning rate (or schedule) a run's optimizer gets.

    Args:
        config: The run's configuration.
        steps_per_epoch: Batches per epoch.
        replayed: Optional `[step, rate]` pairs to replay instead (the
            schedule control), as `_Recorder` records them.

    Returns:
        A float or a `keras.optimizers.schedules.LearningRateSchedule`.
    """
    if replayed:
        steps, rates = zip(*replayed)
        # The decay holds a value up to and including its boundary step.
        return keras.optimizers.schedules.PiecewiseConstantDecay(
            [int(s) - 1 for s in steps[1:]], [float(r) for r in rates]
        )
    if config["schedule"] == "constant":
        return config["learning_rate"]
    return warmup_cosine(config["learning_rate"],
                         config["epochs"] * steps_per_epoch)


def train(task, method, config, seed, scheme, replayed=None,
          data_dir=None):
    """Trains one run from a cleared Keras session; returns its `Run`.

    Args:
        task: The `Task`.
        method: One of the four methods.
        config: The configuration.
        seed: Seed of the initial weights and of the data order.
        scheme: The multilevel scheme (`MultilevelModel` arguments); the
            coarse-alone network is its coarsest level.
        replayed: For the schedule control, the multilevel run's recorded
            learning rates.
        data_dir: The TFDS data directory.
    """
    keras.backend.clear_session()
    split = (f"train[:{task.train_examples}]" if task.train_examples
             else "train")
    (train_ds, val_ds), info = mlres.datasets.load(
        task.dataset, batch_size=BATCH_SIZE,
        split=(split, validation_split(task.dataset, data_dir)),
        data_dir=data_dir, seed=seed, with_info=True,
    )
    steps_per_epoch = int(train_ds.cardinality())
    features_key, label_key = info.supervised_keys
    keras.utils.set_random_seed(seed)
    blocks = (coarsest_blocks(task.num_blocks, scheme)
              if method == COARSE_ALONE else task.num_blocks)
    network = fine_network(
        info.features[features_key].shape,
        info.features[label_key].num_classes,
        width=task.width, num_blocks=blocks, time_horizon=TIME_HORIZON,
    )
    step_cost = 1.0
    if method == COARSE_ALONE:
        fine = fine_network(
            info.features[features_key].shape,
            info.features[label_key].num_classes,
            width=task.width, num_blocks=task.num_blocks,
            time_horizon=TIME_HORIZON,
        )
        step_cost = _parameter_count(network) / _parameter_count(fine)
    model = (mlres.MultilevelModel(network, **scheme)
             if method == MULTILEVEL else network)
    model.compile(
        optimizer=_OPTIMIZERS[config["optimizer"]](
            learning_rate(config, steps_per_epoch, replayed)
        ),
        loss=_LOSS, metrics=["accuracy"], jit_compile=task.xla,
        steps_per_execution=STEPS_PER_EXECUTION,
    )
    started = time.perf_counter()
    recorder = protocol.RunRecorder(
        started, steps_per_epoch, step_cost,
        record_learning_rates=method == MULTILEVEL,
    )
    try:
        model.fit(
            train_ds, epochs=config["epochs"], validation_data=val_ds,
            callbacks=[keras.callbacks.TerminateOnNaN(), recorder],
            verbose=0,
        )
    except mlres.NonFiniteLossError as error:
        # A rate of the grid too high for the network: the run keeps the
        # epochs before, as the model does.
        recorder.diverged_epoch = error.epoch
    return recorder.run(task.dataset, method, config, seed)


class Runs:
    """The benchmark's runs: recorded ones reused, new ones trained and saved.

    A run is reused when its task, method, configuration and seed match and
    it was trained with the same settings (network, budget, scheme); every
    new run is written to the JSON file at once, so that a benchmark stopped
    at any point continues where it was.
    """

    def __init__(self, path, scheme, retrain=(), data_dir=None):
        # The schedule control replays the multilevel runs' rates.
        if MULTILEVEL in retrain:
            retrain = [*retrain, SCHEDULE_CONTROL]
        self.path = path
        self.scheme = scheme
        self.data_dir = data_dir
        self.recorded = {}
        if os.path.exists(path):
            with open(path) as f:
                for entry in json.load(f):
                    run = protocol.Run(**entry["run"])
                    if run.method not in retrain:
                        self.recorded[(entry["settings"], run.key)] = run
        self.trained = 0

    def settings(self, task, method):
        """What else a run's result depends on, as a string."""
        settings = dict(dataclasses.asdict(task), time_horizon=TIME_HORIZON,
                        batch_size=BATCH_SIZE,
                        steps_per_execution=STEPS_PER_EXECUTION)
        if method in (MULTILEVEL, SCHEDULE_CONTROL):
            settings["scheme"] = self.scheme
        elif method == COARSE_ALONE:
            settings["num_blocks"] = coarsest_blocks(task.num_blocks,
                                                     self.scheme)
        return json.dumps(settings, sort_keys=True)

    def get(self, task, method, config, seed, replayed=None):
        """Returns the run, training it if it is not recorded yet."""
        run_key = (task.dataset, method, protocol.config_name(config), seed)
        key = (self.settings(task, method), run_key)
        if key not in self.recorded:
            started = time.perf_counter()
            run = train(task, method, config, seed, self.scheme, replayed,
                        self.data_dir)
            self.recorded[key] = run
            self.trained += 1
            self._save()
            print(
                f"  {task.dataset:<16} {method:<16} "
                f"{protocol.config_name(config):<26} seed {seed}: final "
                f"{run.final_accuracy:.4f}, "
                f"{time.perf_counter() - started:.0f} s"
                + ("" if run.diverged_epoch is None else
                   f", diverged in epoch {run.diverged_epoch + 1}"),
                flush=True,
            )
            _restart_if_compiled_code_fills_memory_maps()
        return self.recorded[key]

    def _save(self):
        entries = [
            {"settings": settings, "run": dataclasses.asdict(run)}
            for (settings, _), run in self.recorded.items()
        ]
        temporary = self.path + ".tmp"
        with open(temporary, "w") as f:
            json.dump(entries, f)
        os.replace(temporary, self.path)


# XLA keeps every program it compiled for the life of the process, each in
# its own memory maps; a long benchmark would exhaust the kernel's limit
# (vm.max_map_count, 65530 by default: "LLVM ERROR: Unable to allocate section
# memory"). Past this many maps the script starts itself again, and goes on
# from the runs it recorded.
_MAX_MEMORY_MAPS = int(os.environ.get("TIME_TO_ACCURACY_MAX_MAPS", 40_000))


def _restart_if_compiled_code_fills_memory_maps():
    try:
        with open("/proc/self/maps") as maps:
            count = sum(1 for _ in maps)
    except OSError:  # Not Linux: no such limit to watch.
        return
    if count > _MAX_MEMORY_MAPS:
        print(f"  {count} memory maps: restarting", flush=True)
        os.execv(sys.executable, [sys.executable] + sys.argv)


def _interleaved(jobs, index):
    """`jobs` in their order or reversed, alternating with `index`."""
    return jobs if index % 2 == 0 else jobs[::-1]


@dataclasses.dataclass
class TaskResult:
    """What the benchmark measured on one task."""

    task: Task
    target: float
    choices: dict  # role -> config of the headline runs
    headline: dict  # role -> runs over the headline seeds
    speedup: dict  # "time"/"work" -> Spread (multilevel vs single level)
    control_speedup: dict  # the schedule control vs single level
    coarse_reaches: bool
    cost: protocol.CostModel | None
    median_seed: int

    @property
    def needs_depth(self):
        return not self.coarse_reaches


def run_task(task, runs, args):
    """Tunes, then trains the headline seeds of one task; returns the result."""
    configs = grid(task, args.optimizers, args.schedules, args.budgets,
                   args.learning_rates)
    tuning = {SINGLE_LEVEL: [], MULTILEVEL: [], COARSE_ALONE: []}
    index = 0
    for seed in args.tuning_seeds:
        for config in configs:
            for method in _interleaved(list(tuning), index):
                tuning[method].append(runs.get(task, method, config, seed))
            index += 1
    accurate = protocol.most_accurate(tuning[SINGLE_LEVEL])
    tuning_target = protocol.target_accuracy(
        [r.final_accuracy for r in accurate]
    )
    choices = {
        "most accurate": accurate[0].config,
        SINGLE_LEVEL: protocol.fastest(tuning[SINGLE_LEVEL],
                                       tuning_target)[0].config,
        MULTILEVEL: protocol.fastest(tuning[MULTILEVEL],
                                     tuning_target)[0].config,
        COARSE_ALONE: protocol.most_accurate(tuning[COARSE_ALONE])[0].config,
    }
    headline = {role: [] for role in (*choices, SCHEDULE_CONTROL)}
    for index, seed in enumerate(args.seeds):
        order = _interleaved([SINGLE_LEVEL, MULTILEVEL], index)
        for role in order + ["most accurate", COARSE_ALONE]:
            method = SINGLE_LEVEL if role == "most accurate" else role
            headline[role].append(
                runs.get(task, method, choices[role], seed)
            )
        multilevel_run = headline[MULTILEVEL][-1]
        headline[SCHEDULE_CONTROL].append(runs.get(
            task, SCHEDULE_CONTROL, choices[MULTILEVEL], seed,
            replayed=multilevel_run.learning_rates,
        ))
    target = protocol.target_accuracy(
        [r.final_accuracy for r in headline["most accurate"]]
    )
    baseline = headline[SINGLE_LEVEL]
    coarse_times = [protocol.reach(r, target).time
                    for r in headline[COARSE_ALONE]]
    median_seed = sorted(args.seeds)[len(args.seeds) // 2]
    seed_runs = {role: next(r for r in role_runs if r.seed == median_seed)
                 for role, role_runs in headline.items()}
    return TaskResult(
        task, target, choices, headline,
        protocol.speedups(baseline, headline[MULTILEVEL], target),
        protocol.speedups(baseline, headline[SCHEDULE_CONTROL], target),
        math.isfinite(sorted(coarse_times)[len(coarse_times) // 2]),
        protocol.cost_model(seed_runs[MULTILEVEL], seed_runs[SINGLE_LEVEL]),
        median_seed,
    )


def _short(config):
    return protocol.config_name(config).replace(" ep", " epochs")


def table(results):
    """The headline table of the results, as Markdown lines."""
    lines = [
        "| task | target | single level (fastest) | multilevel (fastest) | "
        "speedup, wall time | speedup, work | final val acc (SL / ML) | "
        "coarse alone (final; reaches target) | schedule control, speedup | "
        "cost model (median seed) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        h = result.headline
        finals = {role: statistics.median([r.final_accuracy for r in h[role]])
                  for role in (SINGLE_LEVEL, MULTILEVEL, COARSE_ALONE)}
        name = result.task.dataset + (
            "" if result.needs_depth else " (does not need depth)"
        )
        lines.append(
            f"| {name} | {result.target:.4f} | "
            f"{_short(result.choices[SINGLE_LEVEL])} | "
            f"{_short(result.choices[MULTILEVEL])} | "
            f"{result.speedup['time']} | {result.speedup['work']} | "
            f"{finals[SINGLE_LEVEL]:.4f} / {finals[MULTILEVEL]:.4f} | "
            f"{finals[COARSE_ALONE]:.4f}; "
            f"{'yes' if result.coarse_reaches else 'no'} | "
            f"{result.control_speedup['time']} | {result.cost or 'n/a'} |"
        )
    return lines


def seed_table(result):
    """Per-seed times to the target of one task, as Markdown lines."""
    lines = [
        "| seed | " + " | ".join(result.headline) + " |",
        "|---|" + "---|" * len(result.headline),
    ]
    for seed in sorted(r.seed for r in result.headline[SINGLE_LEVEL]):
        cells = []
        for role_runs in result.headline.values():
            run = next(r for r in role_runs if r.seed == seed)
            reached = protocol.reach(run, result.target)
            cells.append(
                f"{reached.time:.0f} s (epoch {reached.epochs}), final "
                f"{run.final_accuracy:.4f}" if reached.reached
                else f"missed, final {run.final_accuracy:.4f}"
            )
        lines.append(f"| {seed} | " + " | ".join(cells) + " |")
    return lines


def plot(result, directory):
    """Plots the median seed's validation accuracy against wall time."""
    curves = {}
    for role in (SINGLE_LEVEL, MULTILEVEL, COARSE_ALONE, SCHEDULE_CONTROL):
        run = next(r for r in result.headline[role]
                   if r.seed == result.median_seed)
        curves[role] = {
            "history": {"val_accuracy": run.accuracies, "work": run.work,
                        "level": run.levels},
            "epoch_times": run.epoch_times,
        }
    name = result.task.dataset.replace("/", "_")
    path = os.path.join(directory, f"{name}.png")
    reporting.plot_curves(
        curves, path, target=result.target,
        title=f"{result.task.dataset}, K = {result.task.num_blocks}, "
        f"seed {result.median_seed}",
    )
    return os.path.relpath(path, os.path.dirname(directory))


def meets_goal(result):
    """Whether a task's multilevel run is 4x faster in time and in work,
    to a median final accuracy within 0.5 points of plain `fit`'s best."""
    final = statistics.median(
        r.final_accuracy for r in result.headline[MULTILEVEL]
    )
    return (
        (result.speedup["time"].median or 0) >= 4
        and (result.speedup["work"].median or 0) >= 4
        and final >= result.target
    )


def write_readme(path, results, plots, args, scheme, runs):
    """Writes the benchmark's README: how to rerun, protocol, results."""
    goal = [r for r in results if r.needs_depth]
    lines = [
        "# Benchmarks",
        "",
        "`time_to_accuracy.py` measures how much sooner `MultilevelModel` "
        "reaches the accuracy of plain `keras.Model.fit` at its best. This "
        "file is its output:",
        "",
        "    " + " ".join(["python benchmarks/time_to_accuracy.py"]
                         + [shlex.quote(a) for a in args.argv]),
        "",
        "## Protocol",
        "",
        "- Each method trains the same network on the same data, from a "
        "cleared Keras session, seeded; wall time runs from the call of "
        "`fit`, compile included, to the end of the first epoch whose "
        "validation accuracy reaches the target.",
        "- Grid, tuned on seed(s) "
        f"{', '.join(map(str, args.tuning_seeds))}: "
        + ", ".join(f"{o} lr {args.learning_rates[o]}"
                    for o in args.optimizers)
        + f"; schedules {', '.join(args.schedules)} (cosine: linear warm-up "
        "over 5% of the steps, then cosine decay to 0 at the end of the "
        "budget); budgets E/" + ", E/".join(map(str, args.budgets))
        + " (constant rates: E only, a shorter budget being its start).",
        "- Target: the most accurate single-level configuration's median "
        "final validation accuracy over the headline seeds "
        f"({', '.join(map(str, args.seeds))}), less "
        f"{protocol.MARGIN * 100:.1f} points. Each method's configuration "
        "is its fastest to the tuning seeds' target.",
        "- Speedup per seed = single level's time (work) to the target / "
        "the method's; median (min-max) over the headline seeds; a seed on "
        "which only the method misses counts 0, only the baseline inf.",
        "- Controls: *coarse alone* trains the hierarchy's coarsest network "
        "as a plain network (its most accurate configuration); a task it "
        "solves does not need depth and stays out of the goal. *Schedule "
        "control*: plain `fit` of the fine network with the learning rate "
        "the multilevel run applied, step by step.",
        "- Cost model: each level's epoch time over the fine epoch time, "
        "the share of the multilevel run's epochs on it, and the speedup "
        "that split gives if no extra epochs are needed.",
        "",
        f"Multilevel scheme: `MultilevelModel(fine, **{scheme})`.",
        "",
        "## Results",
        "",
        *table(results),
        "",
        "Goal: a median speedup of at least 4x in wall time and in work on "
        "every task that needs depth, final accuracy within 0.5 points. "
        + ("Met." if goal and all(map(meets_goal, goal))
           else "**Not met.**"),
        "",
    ]
    for result in results:
        lines += [f"### {result.task.dataset}", "",
                  _describe(result.task, scheme, args.data_dir), "",
                  *seed_table(result), "",
                  f"![{result.task.dataset}]({plots[result.task.dataset]})",
                  ""]
    lines += [
        f"{len(runs.recorded)} runs in `results/runs.json`; "
        f"{runs.trained} trained by the command that wrote this file.",
        "",
        "## Other measurements",
        "",
        "- `cycle_cost.py`: the cost of one MG/OPT step against a plain "
        "one, per number of levels, with and without XLA.",
        "- `transfer_gap.py`: how much of a trained coarse network's "
        "accuracy the finer levels keep after prolongation.",
        "- `epoch_stall.py`: the stall before each epoch's first batch "
        "with `tf.data` autotuning on and off.",
        "- `coarse_optimizer_state.py`: coarse optimizer state kept or "
        "reset between cycle visits.",
        "",
    ]
    with open(path, "w") as f:
        f.write("\n".join(lines))


def _describe(task, scheme, data_dir=None):
    """The sentence that says what a task trains."""
    info = tfds.builder(task.dataset, data_dir=data_dir).info
    is_image = len(info.features[info.supervised_keys[0]].shape) == 3
    kind = ("conv ODE-ResNet, 2 stages from" if is_image
            else "dense ODE-ResNet of width")
    return (
        f"{kind} {task.width}, K = {task.num_blocks} blocks per stage "
        f"(coarsest level {coarsest_blocks(task.num_blocks, scheme)}), T = "
        f"{TIME_HORIZON:g}, E = {task.epochs} epochs, batch {BATCH_SIZE}, "
        f"XLA {'on' if task.xla else 'off'}"
        + (f", first {task.train_examples} training examples"
           if task.train_examples else "")
        + "."
    )


def _comma_list(choices):
    def parse(text):
        values = text.split(",")
        unknown = [v for v in values if v not in choices]
        if unknown:
            raise argparse.ArgumentTypeError(
                f"unknown {unknown}; choose among {sorted(choices)}"
            )
        return values
    return parse


def _int_list(text):
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        values = []
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a list of non-negative integers joined by "
            "commas, such as 1,2,3"
        )
    return values


def scheme_overrides(text):
    """Parses --scheme: a JSON object of `MultilevelModel` keyword arguments.

    Raises:
        argparse.ArgumentTypeError: If the text is not a JSON object or names
            an argument `MultilevelModel` does not take.
    """
    try:
        overrides = json.loads(text)
    except json.JSONDecodeError:
        overrides = None
    if not isinstance(overrides, dict):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a JSON object of MultilevelModel arguments, "
            """such as '{"num_levels": 4}'"""
        )
    accepted = set(inspect.signature(mlres.MultilevelModel).parameters) - {
        "model", "kwargs"
    }
    unknown = sorted(set(overrides) - accepted)
    if unknown:
        raise argparse.ArgumentTypeError(
            f"MultilevelModel has no argument(s) {unknown}; choose among "
            f"{sorted(accepted)}"
        )
    return overrides


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=_comma_list(TASKS),
                        default=list(TASKS))
    parser.add_argument("--optimizers", type=_comma_list(LEARNING_RATES),
                        default=list(LEARNING_RATES))
    parser.add_argument("--schedules", type=_comma_list(SCHEDULES),
                        default=list(SCHEDULES))
    parser.add_argument("--budgets", type=_int_list,
                        default=list(BUDGET_DIVISORS),
                        help="epoch budgets as divisors of E")
    parser.add_argument("--tuning_seeds", type=_int_list, default=[0])
    parser.add_argument("--seeds", type=_int_list, default=[1, 2, 3, 4, 5],
                        help="the headline seeds")
    parser.add_argument("--scheme", type=scheme_overrides, default={},
                        help="JSON object of MultilevelModel arguments "
                        "that change the default scheme")
    parser.add_argument("--retrain", type=_comma_list(
        [SINGLE_LEVEL, MULTILEVEL, COARSE_ALONE, SCHEDULE_CONTROL]),
        default=[], help="train these methods' runs again")
    parser.add_argument("--output", default=os.path.join(_HERE, "README.md"))
    parser.add_argument("--data_dir", default=None,
                        help="TFDS data directory (default: TFDS's)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny tasks and grid: checks the script runs")
    args = parser.parse_args(argv)
    args.argv = argv
    tasks = QUICK_TASKS if args.quick else {t: TASKS[t] for t in args.tasks}
    args.learning_rates = LEARNING_RATES
    if args.quick:
        args.optimizers, args.budgets = ["adam"], [1, 2]
        args.learning_rates = {"adam": (1e-2,)}
        args.seeds = [1, 2]
    if 0 in args.budgets:
        parser.error("--budgets: a budget divisor must be at least 1")
    scheme = {**mlres.DEFAULT_SCHEME, **args.scheme}
    for task in tasks.values():
        try:
            coarsest_blocks(task.num_blocks, scheme)
        except (TypeError, ValueError) as error:
            parser.error(f"--scheme cannot train {task.dataset} "
                         f"(K = {task.num_blocks}): {error}")
    directory = os.path.join(os.path.dirname(os.path.abspath(args.output)),
                             "results")
    os.makedirs(directory, exist_ok=True)
    runs = Runs(os.path.join(directory, "runs.json"), scheme, args.retrain,
                args.data_dir)
    results, plots = [], {}
    for task in tasks.values():
        result = run_task(task, runs, args)
        results.append(result)
        plots[task.dataset] = plot(result, directory)
    write_readme(args.output, results, plots, args, scheme, runs)
    print("\n".join(table(results)))
    return results


if __name__ == "__main__":
    main()

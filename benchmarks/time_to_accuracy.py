"""Time-to-accuracy benchmark: multilevel training vs plain `model.fit`.

For each task (a locally generated tfds data set, or an image data set such
as mnist or cifar10 prepared in --data_dir) and seed, trains the same
ODE-ResNet (`keras_mlres.train.fine_network`: a dense one for the point sets
peaks, spiral and ellipses, a conv one of --stages stages for images such as
`shapes`, each kind with its own size and budget flags) with plain
single-level `fit` (one optimizer step per batch)
and with the library's default multilevel scheme, each over the same
learning-rate sweep of SGD with momentum and Adam. The baseline (and,
separately, the multilevel method) is the configuration with the shortest
median wall time to the target. The target is 98% of the best validation
accuracy any single-level run reached within the epoch budget.

Reported per task: median speedups (per seed, best configuration of each
method) in wall time from the start of `fit` (compile included, as a user
waits), in wall time without compile (estimated by `WallClock`), and in work
(fine-gradient equivalents); final validation accuracies. Then the scaling of
the speedup with depth (K = 32, 64, ... up to the first task's K, or
--depths) and an ablation of the multilevel options on the first task. Both
methods of a comparison run side by side in the same process on the same
machine, in alternating order; each run starts from a cleared Keras session,
with its training data shuffled by its seed. --replicate trains the best
configurations of an earlier run again, over --seeds seeds, against its
targets: a check of its tasks table.
--scheme changes the default scheme of the multilevel method.

The point sets' defaults (width 64, K = 512) make a fine epoch cost 7-8 s
on 2 CPU cores, so that compile (about 2 s per trained level) is a small
part of the time to the target. At small sizes compile decides the wall
time (`RESULTS_w16.md`: width 16, K = 64, the flags in the usage below).

Writes `benchmarks/RESULTS.md` (tables), `benchmarks/results/*.png` (curves)
and a JSON file of every run.

Usage:
    python benchmarks/time_to_accuracy.py              # the full benchmark
    python benchmarks/time_to_accuracy.py --quick      # a smoke run
    python benchmarks/time_to_accuracy.py --width 16 --blocks 64 \
        --depths 32,64,128,256 --epochs 12 \
        --output benchmarks/RESULTS_w16.md     # the small, compile-bound size
    python benchmarks/time_to_accuracy.py --tasks shapes --image_blocks 16 \
        --output benchmarks/RESULTS_shapes.md   # the image task alone
    python benchmarks/time_to_accuracy.py --seeds 8 \
        --replicate benchmarks/results/runs.json \
        --output benchmarks/RESULTS_replicate.md  # RESULTS.md's tasks again
    python benchmarks/time_to_accuracy.py --scheme '{"num_levels": 4}' \
        --output benchmarks/RESULTS_levels4.md  # another multilevel scheme
"""

import argparse
import dataclasses
import functools
import inspect
import json
import os
import shlex
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402

import keras_mlres as mlres  # noqa: E402
from keras_mlres import DEFAULT_SCHEME  # noqa: E402
from keras_mlres import reporting  # noqa: E402
from keras_mlres.callbacks import WallClock  # noqa: E402
from keras_mlres.train import BASELINE_SCHEME  # noqa: E402
from keras_mlres.train import CONV_NETWORK  # noqa: E402
from keras_mlres.train import DENSE_NETWORK  # noqa: E402
from keras_mlres.train import OPTIMIZERS  # noqa: E402
from keras_mlres.train import fine_network  # noqa: E402
from keras_mlres.train import validation_split  # noqa: E402

LEARNING_RATES = {"sgd": (0.03, 0.1, 0.3), "adam": (3e-3, 1e-2, 3e-2)}
# The target is this fraction of the best single-level validation accuracy.
TARGET_FRACTION = 0.98
# The shallowest K of the depth scaling's default.
_SHALLOWEST_DEPTH = 32
# Each variant overrides some of DEFAULT_SCHEME's entries; --ablation picks
# variants by key.
_ONE_CYCLE_PER_BATCH = dict(nested_iteration=False, post_smoothing=1)
_TWO_LEVEL_V_CYCLE = dict(_ONE_CYCLE_PER_BATCH, num_levels=2, cycle="V")
_K8_THREE_EPOCHS = dict(
    num_levels=2, coarsening_factor=8, max_level_epochs=3, level_patience=3,
)
ABLATION = {
    "k8": ("K/8, 3 epochs, same learning rate", _K8_THREE_EPOCHS),
    "k8_dt": (
        "K/8, 3 epochs, 8x (dt-scaled) learning rate",
        dict(_K8_THREE_EPOCHS, coarse_learning_rate_scale="dt"),
    ),
    "k8_patience": (
        "K/8, then K, by patience", dict(num_levels=2, coarsening_factor=8),
    ),
    "average": (
        "nested iteration, averaged initial weights",
        dict(restriction="average"),
    ),
    "prolongate_optimizer": (
        "nested iteration, optimizer state prolongated",
        dict(nested_optimizer_state="prolongate"),
    ),
    "levels2": ("nested iteration, 2 levels", dict(num_levels=2)),
    "levels4": ("nested iteration, 4 levels", dict(num_levels=4)),
    "levels5": ("nested iteration, 5 levels", dict(num_levels=5)),
    "patience2": ("nested iteration, patience 2", dict(level_patience=2)),
    "epochs1": (
        "nested iteration, 1 epoch per coarse level",
        dict(max_level_epochs=1),
    ),
    "epochs2": (
        "nested iteration, at most 2 epochs per coarse level",
        dict(max_level_epochs=2),
    ),
    "nested_v": (
        "nested iteration + V-cycles", dict(cycle="V", post_smoothing=1),
    ),
    "v2": (
        "one V-cycle per batch, 2 levels", _TWO_LEVEL_V_CYCLE,
    ),
    "v3": (
        "one V-cycle per batch, 3 levels",
        dict(_ONE_CYCLE_PER_BATCH, num_levels=3, cycle="V"),
    ),
    "w3": (
        "one W-cycle per batch, 3 levels",
        dict(_ONE_CYCLE_PER_BATCH, num_levels=3, cycle="W"),
    ),
    # Eight steps on K/8 blocks cost about one fine gradient: many cheap
    # coarse steps for each fine one.
    "v_k8_steps8": (
        "one V-cycle per batch, K/8, 8 coarse steps",
        dict(_TWO_LEVEL_V_CYCLE, coarsening_factor=8, coarse_steps=8),
    ),
    "v_pre2": (
        "one V-cycle per batch, 2 pre-smoothing steps",
        dict(_TWO_LEVEL_V_CYCLE, pre_smoothing=2),
    ),
    "v_keep": (
        "V-cycle, coarse state kept",
        dict(_TWO_LEVEL_V_CYCLE, coarse_optimizer_state="keep"),
    ),
    "v_no_line_search": (
        "V-cycle, no line search",
        dict(_TWO_LEVEL_V_CYCLE, line_search=False),
    ),
}
# A control for the dt-scaled variant: plain single-level training whose
# learning rate is 8x for the first 3 epochs, as that variant's coarse
# level's is, then the swept rate. `warm_phase` is (factor, epochs). Not a
# change of the default scheme, so it replaces the scheme instead.
CONTROL_KEY = "control"
CONTROL = (
    "control: single level, 8x learning rate for 3 epochs",
    dict(BASELINE_SCHEME, warm_phase=(8, 3)),
)


def ablation_keys(text):
    """Parses --ablation: "all" or comma-separated keys of the variants.

    Args:
        text: "all", or keys of `ABLATION` and `CONTROL_KEY` joined by commas.

    Returns:
        The list of keys.

    Raises:
        argparse.ArgumentTypeError: If a key is unknown.
    """
    keys = list(ABLATION) + [CONTROL_KEY] if text == "all" else text.split(",")
    unknown = sorted(set(keys) - set(ABLATION) - {CONTROL_KEY})
    if unknown:
        raise argparse.ArgumentTypeError(
            f"Unknown ablation variant(s) {unknown}; choose among "
            f"{sorted(ABLATION) + [CONTROL_KEY]} or 'all'."
        )
    return keys


def ablation_variants(keys, scheme):
    """Returns the ablation's variants as a dict from row name to scheme.

    Args:
        keys: Keys of `ABLATION`, and `CONTROL_KEY` for the control, in the
            order of the rows (see `ablation_keys`); the control always
            comes last.
        scheme: The default scheme the variants change.
    """
    variants = {
        ABLATION[key][0]: {**scheme, **ABLATION[key][1]}
        for key in keys if key != CONTROL_KEY
    }
    if CONTROL_KEY in keys:
        variants[CONTROL[0]] = CONTROL[1]
    return variants


def check_schemes(checks):
    """Raises ValueError if a multilevel scheme cannot train a depth it gets.

    Builds each scheme's hierarchy on a dense network of one unit per block
    (a conv network's stages coarsen by the same rule), so that a scheme the
    library rejects stops the command before hours of baseline runs.

    Args:
        checks: Dict mapping `(name, blocks)`, a method's name and a K it
            trains, to its scheme (`MultilevelModel` keyword arguments).
    """
    for (name, blocks), scheme in checks.items():
        fine = mlres.models.dense_ode_resnet(
            (1,), 2, width=1, num_blocks=blocks
        )
        try:
            mlres.MultilevelModel(fine, **scheme)
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"The method {name!r} cannot train K = {blocks} blocks: "
                f"{error}"
            ) from error


def depth_list(text):
    """Parses --depths: comma-separated positive numbers of blocks.

    Args:
        text: Numbers of blocks joined by commas, such as "32,64,128".

    Returns:
        The list of ints.

    Raises:
        argparse.ArgumentTypeError: If an entry is not a positive integer.
    """
    try:
        depths = [int(k) for k in text.split(",")]
    except ValueError:
        depths = []
    if not depths or min(depths) < 1:
        raise argparse.ArgumentTypeError(
            f"--depths {text!r} is not a list of positive numbers of blocks "
            "joined by commas, such as 32,64,128."
        )
    return depths


def default_depths(blocks):
    """The depth scaling's K values for a fine network of `blocks` blocks.

    Powers of 2 from 32 below `blocks`, then `blocks` itself: 32, 64, 128,
    256, 512 for K = 512; only `blocks` below 32.
    """
    depths = []
    depth = _SHALLOWEST_DEPTH
    while depth < blocks:
        depths.append(depth)
        depth *= 2
    return depths + [blocks]


def scheme_overrides(text):
    """Parses --scheme: a JSON object of `MultilevelModel` keyword arguments.

    Args:
        text: A JSON object such as '{"num_levels": 4}'.

    Returns:
        The dict of overrides of the default scheme.

    Raises:
        argparse.ArgumentTypeError: If the text is not a JSON object or names
            an argument `MultilevelModel` does not take.
    """
    try:
        overrides = json.loads(text)
    except json.JSONDecodeError:
        overrides = None
    if not isinstance(overrides, dict) or not overrides:
        raise argparse.ArgumentTypeError(
            f"--scheme {text!r} is not a JSON object of MultilevelModel "
            """arguments, such as '{"num_levels": 4}'."""
        )
    # The network (`model`) is the benchmark's; the rest is the scheme.
    accepted = set(inspect.signature(mlres.MultilevelModel).parameters) - {
        "model", "kwargs"
    }
    unknown = sorted(set(overrides) - accepted)
    if unknown:
        raise argparse.ArgumentTypeError(
            f"--scheme: MultilevelModel has no argument(s) {unknown}; "
            f"choose among {sorted(accepted)}."
        )
    return overrides


def multilevel_method(overrides):
    """The method name of the multilevel runs of a --scheme (or the default).

    Runs are recorded under their method name, so a scheme other than the
    default gets its own name: `--continue` and `--reuse` never report the
    default's runs for it, or its runs for the default.
    """
    if not overrides:
        return "multilevel"
    return "multilevel " + ", ".join(
        f"{key}={value!r}" for key, value in sorted(overrides.items())
    )


@dataclasses.dataclass
class Run:
    """One training run and what it measured."""

    task: str
    method: str
    optimizer: str
    learning_rate: float
    seed: int
    blocks: int
    history: dict
    epoch_times: list
    epoch_times_without_compile: list
    # The epoch (from 0) whose loss was NaN or Inf, which `fit` undid and
    # stopped at: the history holds the epochs before it.
    diverged_epoch: int | None = None

    def to_target(self, target, without_compile=False):
        times = (
            self.epoch_times_without_compile
            if without_compile
            else self.epoch_times
        )
        return reporting.time_to_target(self.history, times, target)

    @property
    def key(self):
        return (self.task, self.method, self.optimizer, self.learning_rate,
                self.seed, self.blocks)

    @property
    def accuracies(self):
        """Validation accuracy per epoch (none if the first diverged)."""
        return self.history.get("val_accuracy", [])

    @property
    def best_accuracy(self):
        """The best validation accuracy; 0 if the first epoch diverged."""
        return max(self.accuracies, default=0.0)

    @property
    def final_accuracy(self):
        """The last validation accuracy; 0 if the first epoch diverged."""
        return self.accuracies[-1] if self.accuracies else 0.0


@dataclasses.dataclass(frozen=True)
class TaskSettings:
    """What one task trains: its network's size, its data and its budget.

    Point sets and images get separate settings (flags `--width` ... and
    `--image_width` ...): a conv network on CPU costs far more per example
    than a dense one and trains better without XLA.
    """

    width: int
    blocks: int
    epochs: int
    train_examples: int | None
    xla: bool


def task_settings(is_image, args):
    """Returns the `TaskSettings` of an image task or a point-set task.

    Args:
        is_image: Whether the task's examples are images (rank 3).
        args: The parsed flags.

    Returns:
        The `TaskSettings` the flags give that kind of task.
    """
    if is_image:
        return TaskSettings(
            args.image_width, args.image_blocks, args.image_epochs,
            args.image_train_examples, args.image_xla,
        )
    return TaskSettings(
        args.width, args.blocks, args.epochs, args.train_examples,
        not args.no_xla,
    )


def is_image_task(name, data_dir=None):
    """Whether a tfds data set's examples are images (height, width, channels).

    Args:
        name: The data set name, as for `datasets.load`.
        data_dir: The TFDS data directory.

    Returns:
        True for images, False for vectors.
    """
    info = tfds.builder(name, data_dir=data_dir).info
    features_key, _ = info.supervised_keys
    return len(info.features[features_key].shape) == 3


def describe_scheme(scheme, overrides):
    """The results file's sentence on the multilevel method's scheme."""
    if not overrides:
        return f"Multilevel default scheme: `{scheme}`."
    return (
        f"Multilevel scheme: the default changed by --scheme "
        f"`{json.dumps(overrides)}`, so `{scheme}`."
    )


def describe_settings(point_tasks, image_tasks, args):
    """The results file's sentences on the networks and budgets.

    Args:
        point_tasks: The point-set tasks run.
        image_tasks: The image tasks run.
        args: The parsed flags.

    Returns:
        A sentence for each kind of task run, then one on what all share.
    """
    def examples(count):
        return f"the first {count} training examples" if count else (
            "all training examples"
        )

    def budget(settings):
        return (
            f"{examples(settings.train_examples)}; {settings.epochs} epochs; "
            f"XLA {'on' if settings.xla else 'off'}."
        )

    sentences = []
    if point_tasks:
        points = task_settings(False, args)
        sentences.append(
            f"Point sets ({', '.join(point_tasks)}): dense ODE-ResNet of "
            f"width {points.width}, K = {points.blocks} blocks; "
            + budget(points)
        )
    if image_tasks:
        images = task_settings(True, args)
        activation = inspect.signature(mlres.models.ode_resnet).parameters[
            "activation"
        ].default
        sentences.append(
            f"Images ({', '.join(image_tasks)}): conv ODE-ResNet of "
            f"{args.stages} stages from {images.width} filters ({activation}, "
            f"batch norm {'on' if args.batch_norm else 'off'}), K = "
            f"{images.blocks} blocks per stage; " + budget(images)
        )
    sentences.append(
        f"All: T = {args.time_horizon}; batch {args.batch_size}; "
        f"steps_per_execution {args.steps_per_execution}; {args.seeds} "
        "seeds."
    )
    return " ".join(sentences)


def load_runs(path):
    """Returns the runs recorded in a runs.json file, by `Run.key`."""
    with open(path) as f:
        return {run.key: run for run in (Run(**r) for r in json.load(f))}


# XLA keeps every program it compiled for the life of the process, each in
# its own memory maps; a long benchmark would exhaust the kernel's limit
# (vm.max_map_count, 65530 by default: "LLVM ERROR: Unable to allocate section
# memory"). Past this many maps the script restarts itself with --continue
# (the variable overrides the limit, for tests).
_MAX_MEMORY_MAPS = int(os.environ.get("TIME_TO_ACCURACY_MAX_MAPS", 40_000))
_STARTED = "TIME_TO_ACCURACY_STARTED"
# The flags the benchmark was started with, which a restart's added
# --continue must not change in the results' command line.
_FLAGS = "TIME_TO_ACCURACY_FLAGS"


def _restart_if_compiled_code_fills_memory_maps():
    """Re-executes the script with --continue if XLA's code fills the maps."""
    try:
        with open("/proc/self/maps") as maps:
            count = sum(1 for _ in maps)
    except OSError:  # Not Linux: no such limit to watch.
        return
    if count > _MAX_MEMORY_MAPS:
        print(f"  {count} memory maps: restarting with --continue", flush=True)
        argv = [a for a in sys.argv if a != "--continue"] + ["--continue"]
        os.execv(sys.executable, [sys.executable] + argv)


def load_task(task, settings, args, seed):
    """Loads a task's training and validation data for one run.

    Args:
        task: The data set name.
        settings: The task's `TaskSettings`.
        args: The parsed flags (batch size, data directory).
        seed: The run's seed, which orders the training data's epochs.

    Returns:
        `((train, validation), info, settings)`: new pipelines, whose
        shuffle starts from `seed` whatever other pipelines have done.
    """
    return mlres.datasets.load(
        task, batch_size=args.batch_size,
        split=(
            f"train[:{settings.train_examples}]"
            if settings.train_examples else "train",
            validation_split(task, args.data_dir),
        ),
        data_dir=args.data_dir, seed=seed, with_info=True,
    ) + (settings,)


def train(task, load_data, method, scheme, optimizer, learning_rate, seed,
          args, blocks):
    """Trains one configuration and returns its `Run`.

    Every run starts from a cleared Keras session and loads its own data,
    shuffled by its seed (`load_data(seed)`), so that neither the runs
    before it nor its place in the benchmark change what it trains on.

    With `--continue` or `--reuse`, a run recorded in this benchmark's
    runs.json (`args.own_runs`) or in the reused one (`args.reused_runs`)
    is returned instead of training again. Every new run is added to this
    benchmark's runs.json at once.
    """
    key = (task, method, optimizer, learning_rate, seed, blocks)
    for recorded in (args.own_runs, args.reused_runs):
        if key in recorded:
            return recorded[key]
    keras.backend.clear_session()
    (train_ds, val_ds), info, settings = load_data(seed)
    features_key, label_key = info.supervised_keys
    input_shape = info.features[features_key].shape
    scheme = dict(scheme)
    rate = learning_rate
    if "warm_phase" in scheme:
        factor, epochs = scheme.pop("warm_phase")
        steps_per_epoch = int(train_ds.cardinality())
        if steps_per_epoch < 1:
            raise ValueError(
                f"warm_phase needs the number of batches per epoch, but the "
                f"{task} training data's cardinality is unknown."
            )
        rate = keras.optimizers.schedules.PiecewiseConstantDecay(
            [epochs * steps_per_epoch], [factor * learning_rate, learning_rate]
        )
    keras.utils.set_random_seed(seed)
    fine = fine_network(
        input_shape,
        info.features[label_key].num_classes,
        width=settings.width,
        num_blocks=blocks,
        time_horizon=args.time_horizon,
        num_stages=args.stages,
        batch_norm=args.batch_norm,
    )
    model = mlres.MultilevelModel(fine, **scheme)
    model.compile(
        optimizer=OPTIMIZERS[optimizer](rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=settings.xla,
        steps_per_execution=args.steps_per_execution,
    )
    clock, history = WallClock(), keras.callbacks.History()
    diverged_epoch = None
    started = time.perf_counter()
    try:
        model.fit(
            train_ds, epochs=settings.epochs, validation_data=val_ds,
            callbacks=[clock, history], verbose=0,
        )
    except mlres.NonFiniteLossError as error:
        # A learning rate of the sweep too high for this network: the run
        # keeps the epochs before, as the model does.
        diverged_epoch = error.epoch
    run = Run(task, method, optimizer, learning_rate, seed, blocks,
              history.history, clock.epoch_times,
              clock.epoch_times_without_compile, diverged_epoch)
    args.own_runs[key] = run
    with open(args.progress, "w") as f:
        json.dump([dataclasses.asdict(r) for r in args.own_runs.values()], f)
    ending = (
        "" if diverged_epoch is None
        else f", diverged in epoch {diverged_epoch + 1}"
    )
    print(
        f"  {task:<9} {method:<32} {optimizer:<4} lr={learning_rate:<6g} "
        f"seed={seed} K={blocks}: best val acc {run.best_accuracy:.4f}, "
        f"{time.perf_counter() - started:.1f} s{ending}",
        flush=True,
    )
    _restart_if_compiled_code_fills_memory_maps()
    return run


def sweep(task, load_data, methods, args, blocks):
    """Runs each method's configurations over the seeds, interleaved.

    Args:
        load_data: The task's data for a seed, as `train` takes it.
        methods: Dict from method name to `(scheme, configurations)`, where
            configurations lists (optimizer, learning rate) pairs or is None
            for the full sweep of both optimizers.

    Returns:
        A dict from method name to its list of `Run`s. The runs of the
        methods alternate, and which method goes first alternates from one
        configuration (or seed) to the next, so that neither a change of
        load on the machine nor the order favours one method.
    """
    full = [
        (optimizer, lr)
        for optimizer in args.optimizers
        for lr in LEARNING_RATES[optimizer][: args.learning_rates]
    ]
    jobs = {
        method: [
            (scheme, optimizer, lr, seed)
            for seed in range(args.seeds)
            for optimizer, lr in (configurations or full)
        ]
        for method, (scheme, configurations) in methods.items()
    }
    runs = {method: [] for method in methods}
    for index in range(max(len(j) for j in jobs.values())):
        order = list(jobs.items())
        for method, method_jobs in order[::-1] if index % 2 else order:
            if index < len(method_jobs):
                scheme, optimizer, lr, seed = method_jobs[index]
                runs[method].append(
                    train(task, load_data, method, scheme, optimizer, lr,
                          seed, args, blocks)
                )
    return runs


def _ratio(baseline, multilevel):
    """Speedup of one seed; a method that misses the target takes forever."""
    if baseline is None:
        return None if multilevel is None else float("inf")
    return 0.0 if multilevel is None else baseline / multilevel


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def best_configuration(runs, target):
    """Returns the runs of the configuration with the least median time.

    Between configurations whose median seed misses the target, the one
    with the highest median best accuracy.
    """
    configurations = {}
    for run in runs:
        key = (run.optimizer, run.learning_rate)
        configurations.setdefault(key, []).append(run)

    def median_time_then_accuracy(group):
        times = [r.to_target(target)["time"] for r in group]
        times = [t if t is not None else float("inf") for t in times]
        return (
            statistics.median(times),
            -statistics.median(r.best_accuracy for r in group),
        )

    return min(configurations.values(), key=median_time_then_accuracy)


def target_of(baseline_runs):
    """The target: `TARGET_FRACTION` of the runs' best validation accuracy."""
    return TARGET_FRACTION * max(r.best_accuracy for r in baseline_runs)


def recorded_choices(recorded, task, blocks, source, method="multilevel"):
    """Returns what an earlier benchmark chose for a task: configurations, target.

    The choices of that benchmark's tasks table, remade from its runs of
    `task` at K = `blocks`: each method's configuration with the least
    median time to the target, and the target.

    Args:
        recorded: The earlier benchmark's runs, as `load_runs` returns them.
        task: The task's name.
        blocks: K of the task's fine network.
        source: Where the runs come from (its runs.json), for the message.
        method: The multilevel method to be replicated (`multilevel_method`):
            its configuration is the best of its own runs if the file has
            them, else the default scheme's.

    Returns:
        `(configurations, target)`: a dict from "baseline" and "multilevel"
        to an `(optimizer, learning_rate)` pair, and the target accuracy.

    Raises:
        ValueError: If the file lacks runs of either method on the task at
            that K.
    """
    runs = {"single level": [], "multilevel": []}
    scheme_runs = []
    for run in recorded.values():
        if run.task == task and run.blocks == blocks:
            if run.method in runs:
                runs[run.method].append(run)
            if run.method == method:
                scheme_runs.append(run)
    if scheme_runs:
        runs["multilevel"] = scheme_runs
    missing = [name for name, found in runs.items() if not found]
    if missing:
        raise ValueError(
            f"{source} has no {' or '.join(missing)} runs of {task} at K = "
            f"{blocks}: replicate a benchmark that ran this task at this "
            "size, or pass the --tasks, --blocks and --image_blocks it ran."
        )
    target = target_of(runs["single level"])
    result = compare(runs["single level"], runs["multilevel"], target)
    return result["configuration"], target


def compare(baseline_runs, multilevel_runs, target):
    """Median per-seed speedups of the best configurations."""
    baseline = {r.seed: r for r in best_configuration(baseline_runs, target)}
    multilevel = {
        r.seed: r for r in best_configuration(multilevel_runs, target)
    }
    ratios = {"time": [], "time without compile": [], "work": []}
    for seed, base in baseline.items():
        other = multilevel[seed]
        for key, without_compile, field in (
            ("time", False, "time"),
            ("time without compile", True, "time"),
            ("work", False, "work"),
        ):
            b = base.to_target(target, without_compile)[field]
            m = other.to_target(target, without_compile)[field]
            ratios[key].append(_ratio(b, m))
    any_base = next(iter(baseline.values()))
    any_multi = next(iter(multilevel.values()))
    return {
        "configuration": {
            "baseline": (any_base.optimizer, any_base.learning_rate),
            "multilevel": (any_multi.optimizer, any_multi.learning_rate),
        },
        "target": target,
        "baseline": f"{any_base.optimizer} lr={any_base.learning_rate:g}",
        "multilevel": f"{any_multi.optimizer} lr={any_multi.learning_rate:g}",
        "speedup": {k: _median(v) for k, v in ratios.items()},
        "seeds reaching target": (
            sum(b.to_target(target)["epochs"] is not None
                for b in baseline.values()),
            sum(m.to_target(target)["epochs"] is not None
                for m in multilevel.values()),
        ),
        "final accuracy": (
            _median([r.final_accuracy for r in baseline.values()]),
            _median([r.final_accuracy for r in multilevel.values()]),
        ),
        "curves": (baseline, multilevel),
    }


def _fmt(value, digits=2, suffix="x"):
    return "n/a" if value is None else f"{value:.{digits}f}{suffix}"


def _row(name, result):
    s = result["speedup"]
    base_acc, multi_acc = result["final accuracy"]
    reached = result["seeds reaching target"]
    return (
        f"| {name} | {result['target']:.4f} | {result['baseline']} | "
        f"{result['multilevel']} | {_fmt(s['time'])} | "
        f"{_fmt(s['time without compile'])} | {_fmt(s['work'])} | "
        f"{base_acc:.4f} / {multi_acc:.4f} | {reached[0]} / {reached[1]} |"
    )


_HEADER = (
    "| {first} | target | baseline (best) | multilevel (best) | "
    "speedup, wall time | speedup, no compile | speedup, work | "
    "final val acc (base / ML) | seeds at target (base / ML) |\n"
    "|---|---|---|---|---|---|---|---|---|"
)


def plot(task, result, directory):
    """Writes the validation curves of the median seed of both methods."""
    baseline, multilevel = result["curves"]
    seed = sorted(baseline)[len(baseline) // 2]
    runs = {}
    for name, run in (("single level", baseline[seed]),
                      ("multilevel", multilevel[seed])):
        runs[name] = {"history": run.history, "epoch_times": run.epoch_times}
    path = os.path.join(directory, f"{task}.png")
    reporting.plot_curves(runs, path, target=result["target"])
    return path


# Text after this line of a results file is the reader's analysis: a rerun
# rewrites the tables above it and keeps it.
NOTES_MARKER = (
    "<!-- Notes below this line are kept when the benchmark reruns. -->"
)


def kept_notes(path):
    """Returns the marker and the notes below it in `path`, or ""."""
    if not os.path.exists(path):
        return ""
    with open(path) as f:
        text = f.read()
    if NOTES_MARKER not in text:
        return ""
    return "\n" + NOTES_MARKER + text.split(NOTES_MARKER, 1)[1]


def _flags_without_reuse(argv):
    """The command-line flags, less `--reuse FILE` (which only re-reports)."""
    flags = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--reuse":
            skip = True
        elif not arg.startswith("--reuse="):
            flags.append(arg)
    return flags


def ablation(task, blocks, default_result, best, scheme, compare_task, args):
    """Runs each `ABLATION` variant; returns the section's lines."""
    lines = [
        "",
        "## Ablation (" + task + f", K = {blocks})",
        "",
        "Each variant changes the default scheme as named and runs with the "
        "default scheme's best configuration; the control (where run) is "
        "single-level training with that configuration's learning rate "
        "raised 8x for the first 3 epochs.",
        "",
        _HEADER.format(first="multilevel scheme"),
        _row("default scheme", default_result),
    ]
    for name, variant in ablation_variants(args.ablation, scheme).items():
        result = compare_task(
            task, blocks, variant, name,
            configurations=[best["multilevel"]],
        )
        lines.append(_row(name, result))
    return lines


def depth_scaling_and_ablation(task, blocks, result, scheme, method,
                               compare_task, args):
    """Runs the depth scaling and (unless skipped) the ablation of a task.

    Both run each method's best configuration of the task only (the full
    sweep of every variant would take hours).

    Args:
        task: The task (the benchmark's first).
        blocks: K of the task's fine network.
        result: The task's comparison at K = `blocks` (its tasks-table row).
        scheme: The multilevel scheme (the default, unless --scheme).
        method: The multilevel runs' method name (`multilevel_method`).
        compare_task: Trains and compares one method against the baseline.
        args: The parsed flags.

    Returns:
        The sections' lines.
    """
    best = result["configuration"]
    lines = [
        "## Scaling with depth (" + task + ")",
        "",
        "Each method with its best configuration on K = "
        f"{blocks}; the target is {TARGET_FRACTION:.0%} of that K's best "
        "single-level accuracy.",
        "",
        _HEADER.format(first="K"),
    ]
    for depth in args.depths or default_depths(blocks):
        if depth == blocks:
            depth_result = result
        else:
            depth_result = compare_task(
                task, depth, scheme, method,
                [best["baseline"]], [best["multilevel"]],
            )
        lines.append(_row(str(depth), depth_result))
    if not args.skip_ablation:
        lines += ablation(task, blocks, result, best, scheme, compare_task,
                          args)
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", default="peaks,spiral,ellipses,shapes")
    parser.add_argument("--seeds", type=int, default=3)
    # Point sets (vectors): a dense network.
    parser.add_argument("--blocks", type=int,
                        default=DENSE_NETWORK["num_blocks"],
                        help="K of the dense networks (point sets)")
    parser.add_argument("--depths", type=depth_list, default=None,
                        help="comma-separated K of the depth scaling (on the "
                        "first task); default: powers of 2 from 32 up to "
                        "that task's K, then its K")
    parser.add_argument("--width", type=int,
                        default=DENSE_NETWORK["width"],
                        help="width of the dense networks (point sets)")
    parser.add_argument("--epochs", type=int, default=10,
                        help="epochs of each point-set run")
    parser.add_argument("--train_examples", type=int, default=None,
                        help="train point sets on their first N examples")
    parser.add_argument("--no_xla", action="store_true",
                        help="train point sets without XLA (jit_compile)")
    # Images: a conv network, which costs far more per example on CPU, so
    # fewer epochs, and no XLA (slower for these conv networks on CPU).
    parser.add_argument("--image_blocks", type=int,
                        default=CONV_NETWORK["num_blocks"],
                        help="K of each stage of the image networks")
    parser.add_argument("--image_width", type=int,
                        default=CONV_NETWORK["width"],
                        help="filters of the first stage of image networks")
    parser.add_argument("--image_epochs", type=int, default=6,
                        help="epochs of each image run")
    parser.add_argument("--image_train_examples", type=int, default=None,
                        help="train images on their first N examples only")
    parser.add_argument("--image_xla", action="store_true",
                        help="train images with XLA (jit_compile)")
    parser.add_argument("--stages", type=int, default=2,
                        help="stages of image networks (filters double)")
    parser.add_argument("--batch_norm", action="store_true",
                        help="batch normalization in image networks' blocks")
    parser.add_argument("--time_horizon", type=float, default=4.0)
    parser.add_argument("--batch_size", type=int, default=100)
    parser.add_argument("--steps_per_execution", type=int, default=20,
                        help="Keras steps per compiled call, both methods")
    parser.add_argument("--optimizers", default="sgd,adam")
    parser.add_argument("--learning_rates", type=int, default=3,
                        help="how many rates of each optimizer's sweep")
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--output", default=os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "RESULTS.md"))
    parser.add_argument("--skip_ablation", action="store_true",
                        help="report the tasks and depth scaling only")
    parser.add_argument("--ablation", type=ablation_keys, default=None,
                        help="comma-separated ablation variants: "
                        + ",".join(list(ABLATION) + [CONTROL_KEY])
                        + " (default all; --quick: control only)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny settings that only check the script runs")
    parser.add_argument("--reuse", help="a runs.json whose runs are reported "
                        "instead of trained again (the same settings)")
    parser.add_argument("--continue", dest="continue_run",
                        action="store_true",
                        help="continue an interrupted run of the same "
                        "settings from the runs.json it wrote so far")
    parser.add_argument("--replicate", help="an earlier benchmark's "
                        "runs.json: train each task's best configuration of "
                        "each method in it again over --seeds seeds, "
                        "against its target; report the tasks table only")
    parser.add_argument("--scheme", type=scheme_overrides, default={},
                        help="a JSON object of MultilevelModel arguments "
                        "that change the default scheme of the multilevel "
                        """method, such as '{"num_levels": 4}' (no """
                        "ablation: its variants change the default)")
    args = parser.parse_args(argv)
    if args.scheme and args.ablation is not None and not args.skip_ablation:
        parser.error(
            "--ablation's variants change the default scheme, not --scheme's:"
            " run the ablation without --scheme, or pass --skip_ablation."
        )
    if args.quick:
        args.tasks, args.seeds = "spiral,shapes", 1
        args.blocks = args.image_blocks = 8
        args.epochs = args.image_epochs = 2
        args.learning_rates, args.optimizers = 1, "adam"
        args.image_width = 4
        args.train_examples = args.image_train_examples = 1000
    if args.scheme:
        args.skip_ablation = True
    method = multilevel_method(args.scheme)
    if args.ablation is None:
        # The control is the one ablation row no other quick run covers.
        args.ablation = [CONTROL_KEY] if args.quick else ablation_keys("all")
    args.optimizers = args.optimizers.split(",")
    tasks = args.tasks.split(",")
    image_tasks = [t for t in tasks if is_image_task(t, args.data_dir)]
    settings = {task: task_settings(task in image_tasks, args)
                for task in tasks}
    scheme = {**DEFAULT_SCHEME, **args.scheme}
    first_blocks = settings[tasks[0]].blocks
    checks = {(method, settings[task].blocks): scheme for task in tasks}
    if not args.replicate:
        checks.update({
            (method, depth): scheme
            for depth in args.depths or default_depths(first_blocks)
        })
        if not args.skip_ablation:
            checks.update({
                (name, first_blocks): variant for name, variant
                in ablation_variants(args.ablation, scheme).items()
                if name != CONTROL[0]
            })
    try:
        check_schemes(checks)
    except ValueError as error:
        parser.error(f"{error} Change --scheme, --ablation, or the depths "
                     "(--blocks, --image_blocks, --depths).")
    if args.replicate:
        # Every task's choices before anything is written or trained: a
        # task the file lacks stops the command at once.
        try:
            recorded = load_runs(args.replicate)
            replicated = {
                task: recorded_choices(
                    recorded, task, settings[task].blocks, args.replicate,
                    method,
                )
                for task in tasks
            }
        except (OSError, ValueError) as error:
            parser.error(f"--replicate: {error}")
    # RESULTS.md keeps its plots and runs in results/, RESULTS_x.md in
    # results_x/.
    stem = os.path.splitext(os.path.basename(args.output))[0].lower()
    directory = os.path.join(os.path.dirname(args.output), stem)
    os.makedirs(directory, exist_ok=True)
    args.progress = os.path.join(directory, "runs.json")
    # A continued benchmark keeps the runs its runs.json holds beyond this
    # command's (another task's ablation, say) when it rewrites the file.
    args.own_runs = load_runs(args.progress) if args.continue_run else {}
    args.reused_runs = load_runs(args.reuse) if args.reuse else {}
    # A restart to free compiled code (see `train`) keeps the start time;
    # a --continue by hand times only its own part.
    timed_from_start = not args.continue_run or _STARTED in os.environ
    # The runs this command trains: all of its own after a restart, only
    # the new ones after a --continue by hand.
    trained_before = set() if timed_from_start else set(args.own_runs)
    started = float(os.environ.setdefault(_STARTED, str(time.time())))
    flags = json.loads(os.environ.setdefault(
        _FLAGS, json.dumps(sys.argv[1:] if argv is None else argv)
    ))

    all_runs, lines, baselines = [], [], {}

    def compare_task(task, blocks, multilevel_scheme, method,
                     base_configurations=None, configurations=None,
                     target=None):
        methods = {method: (multilevel_scheme, configurations)}
        if (task, blocks) not in baselines:
            methods["single level"] = (BASELINE_SCHEME, base_configurations)
        runs = sweep(
            task, functools.partial(load_task, task, settings[task], args),
            methods, args, blocks,
        )
        baselines.setdefault((task, blocks), runs.get("single level"))
        for method_runs in runs.values():
            all_runs.extend(method_runs)
        base = baselines[task, blocks]
        return compare(
            base, runs[method], target_of(base) if target is None else target
        )

    print(f"Multilevel scheme: {scheme}", flush=True)
    main_results = {}
    for task in tasks:
        if args.replicate:
            chosen, target = replicated[task]
            main_results[task] = compare_task(
                task, settings[task].blocks, scheme, method,
                [chosen["baseline"]], [chosen["multilevel"]], target,
            )
        else:
            main_results[task] = compare_task(
                task, settings[task].blocks, scheme, method
            )
    if args.replicate:
        choices = (
            "Configurations and targets (both methods): each task's best "
            f"configuration of each method and its target in "
            f"`{args.replicate}`, trained again"
            + (
                " (for the multilevel method, the best configuration of "
                "that file's runs of this scheme, else of the default "
                "scheme's)." if args.scheme else "."
            )
        )
    else:
        choices = (
            "Sweep (both methods): " + ", ".join(
                f"{o} lr {LEARNING_RATES[o][: args.learning_rates]}"
                for o in args.optimizers
            )
            + f". Target: {TARGET_FRACTION:.0%} of the best single-level "
            "validation accuracy."
        )
    lines += [
        "# Time to accuracy: multilevel vs single-level training",
        "",
        "Command: `" + " ".join(
            ["python benchmarks/time_to_accuracy.py"]
            + [shlex.quote(flag) for flag in _flags_without_reuse(flags)]
        ) + "`",
        "",
        describe_settings(
            [t for t in tasks if t not in image_tasks], image_tasks, args
        ) + " " + choices + " " + describe_scheme(scheme, args.scheme),
        "",
        "Speedup = baseline / multilevel, per seed, best configuration of "
        "each method; the median over seeds is shown (a seed on which the "
        "multilevel method misses the target counts as speedup 0; n/a: "
        "neither method reached it). Wall time is from the start of "
        "`fit`, compile included; 'no compile' subtracts `WallClock`'s "
        "compile estimate; work is in fine-gradient equivalents.",
        "",
        "## Tasks",
        "",
        _HEADER.format(first="task"),
    ]
    lines += [_row(task, result) for task, result in main_results.items()]
    wall = {t: r["speedup"]["time"] for t, r in main_results.items()}
    met = all(v is not None and v >= 3.0 for v in wall.values())
    lines += [
        "",
        "Goal: a median wall-time speedup of at least 3x on every task (the "
        "published figure). "
        + ("Met." if met else "**Not met** by this run: ")
        + ("" if met else ", ".join(
            f"{task} {_fmt(value)}" for task, value in wall.items()
        ) + ".")
        + " Validation accuracy of the median seed against wall time and "
        "work:",
        "",
    ]
    for task, result in main_results.items():
        plot(task, result, directory)
        lines += [f"![{task}]({stem}/{task}.png)", ""]

    if not args.replicate:
        lines += depth_scaling_and_ablation(
            tasks[0], settings[tasks[0]].blocks, main_results[tasks[0]],
            scheme, method, compare_task, args,
        )

    run_keys = {run.key for run in all_runs}
    trained = len(run_keys & (set(args.own_runs) - trained_before))
    total_time = (f"{time.time() - started:.0f} s" + (
        "" if timed_from_start else " (of the continued part only)"))
    if args.reuse:
        reported = len(
            run_keys & (set(args.reused_runs) - set(args.own_runs))
        )
        lines += ["", f"{reported} runs reported from "
                  f"`{os.path.basename(args.reuse)}`, recorded by an earlier "
                  "run of the same settings" + (
                      f"; {trained} trained by this command in {total_time}."
                      if trained else "."), ""]
    else:
        lines += ["", f"Total benchmark time: {total_time}.", ""]
    notes = kept_notes(args.output)
    with open(args.output, "w") as f:
        f.write("\n".join(lines) + notes)
    kept_runs = {**args.own_runs, **{run.key: run for run in all_runs}}
    with open(args.progress, "w") as f:
        json.dump([dataclasses.asdict(r) for r in kept_runs.values()], f)
    print("\n".join(lines))
    return main_results


if __name__ == "__main__":
    main()

"""Trains an ODE-ResNet multilevel and with plain `fit`; reports time to accuracy.

Usage:

  python -m keras_mlres.train [--dataset=peaks] [--epochs=N] [--seeds=N]

Builds `keras_mlres.models.dense_ode_resnet` for a data set of vectors (the
point sets) or `keras_mlres.models.ode_resnet` for images (`shapes`,
`cluttered_shapes`, `mnist`, `fashion_mnist`, `cifar10`; see
`fine_network`) and trains it with the multilevel scheme
(`keras_mlres.DEFAULT_SCHEME`; --levels, --coarsening_factor, --cycle,
--nested_iteration, --level_patience, --max_level_epochs and
--coarse_learning_rate_scale override it) and, with --compare (the
default), the same network from the same initial weights with plain
`keras.Model.fit`, both with the same optimizer, learning-rate schedule
(--schedule: linear warm-up over 5% of the steps, then cosine decay to 0 at
the end of the budget, by default), data order and epoch budget, once per
seed (--seeds), the two methods alternating which trains first.

It measures as `benchmarks/time_to_accuracy.py` does (`keras_mlres.protocol`):
the target is --target, else plain `fit`'s median final validation accuracy
less 0.5 points; each run's time to the target is the wall time from the
call of `fit` (compile included) to the end of the first epoch that reaches
it. It prints, per method, the seeds at the target, the median (and range)
of the time, epochs and work (fine-gradient equivalents) to it, the final
accuracy and the per-seed speedups, and says when the seeds are too few or
disagree to rank the methods. Writes results.json, curves.png (the median
seed) and TensorBoard logs into --output_dir. Validation is on the data
set's "validation" split, or on "test" if it has none (mnist, cifar10, ...).
"""

import dataclasses
import datetime
import math
import os
import time

import keras
import tensorflow_datasets as tfds
from absl import app
from absl import flags
from absl import logging

from keras_mlres import cycles
from keras_mlres import datasets
from keras_mlres import models
from keras_mlres import protocol
from keras_mlres import reporting
from keras_mlres import schedules
from keras_mlres.model import DEFAULT_SCHEME
from keras_mlres.model import MultilevelModel
from keras_mlres.model import NonFiniteLossError

# The multilevel method's settings are `DEFAULT_SCHEME` (`MultilevelModel`
# keyword arguments); the scheme flags override their entries.
SINGLE_LEVEL = reporting.BASELINE
MULTILEVEL = "multilevel"
OPTIMIZERS = {
    "adam": lambda learning_rate: keras.optimizers.Adam(learning_rate),
    "sgd": lambda learning_rate: keras.optimizers.SGD(
        learning_rate, momentum=0.9
    ),
}
SCHEDULES = ("cosine", "constant")
# The fine network's size unless --width and --blocks are given, by kind of
# example; benchmarks/time_to_accuracy.py uses the same. Dense networks are
# deep enough that a coarse level's step saves time on CPU, not only work
# (at K = 64 and width 16 per-step overheads and compile time hide it).
DENSE_NETWORK = dict(width=64, num_blocks=512)
# A conv block costs far more per example on CPU: fewer, narrower blocks.
CONV_NETWORK = dict(width=8, num_blocks=32)

_DATASET = flags.DEFINE_string(
    "dataset",
    "peaks",
    "Data set: a local one (peaks, spiral, spiral/2, spiral/5, ellipses, "
    "shapes, cluttered_shapes) or a TFDS catalog data set (e.g. mnist, "
    "fashion_mnist, cifar10), prepared in --data_dir.",
)
_LEVELS = flags.DEFINE_integer(
    "levels",
    None,
    "Number of levels of the multilevel method. Default: DEFAULT_SCHEME.",
    lower_bound=1,
)
_COARSENING_FACTOR = flags.DEFINE_integer(
    "coarsening_factor",
    None,
    "Factor by which each level divides the blocks. Default: DEFAULT_SCHEME.",
    lower_bound=2,
)
_BLOCKS = flags.DEFINE_integer(
    "blocks",
    None,
    "K, the residual blocks of the fine network (of each stage for images). "
    f"Default: {DENSE_NETWORK['num_blocks']} for point sets, "
    f"{CONV_NETWORK['num_blocks']} for images.",
    lower_bound=1,
)
_WIDTH = flags.DEFINE_integer(
    "width",
    None,
    "Width of the residual stage (the first stage's filters for images). "
    f"Default: {DENSE_NETWORK['width']} for point sets, "
    f"{CONV_NETWORK['width']} for images.",
    lower_bound=1,
)
_STAGES = flags.DEFINE_integer(
    "stages",
    2,
    "Images only: number of stages; stage i has width * 2^i filters and "
    "--blocks blocks, at half the resolution of stage i-1.",
    lower_bound=1,
)
_BATCH_NORM = flags.DEFINE_boolean(
    "batch_norm", False, "Images only: batch normalization in the blocks."
)
_TIME_HORIZON = flags.DEFINE_float(
    "time_horizon", 4.0, "T, the time interval of the residual stage."
)
_CYCLE = flags.DEFINE_enum(
    "cycle",
    None,
    cycles.CYCLES,
    "MG/OPT cycle of the multilevel method. Default: DEFAULT_SCHEME.",
)
_NESTED_ITERATION = flags.DEFINE_boolean(
    "nested_iteration",
    None,
    "Whether the multilevel method trains from the coarsest level up. "
    "Default: DEFAULT_SCHEME.",
)
_LEVEL_PATIENCE = flags.DEFINE_integer(
    "level_patience",
    None,
    "Nested iteration: epochs without improvement of the validation loss "
    "before moving one level finer. Default: DEFAULT_SCHEME.",
    lower_bound=1,
)
_MAX_LEVEL_EPOCHS = flags.DEFINE_integer(
    "max_level_epochs",
    None,
    "Nested iteration: most epochs on each coarse level. Default: "
    "DEFAULT_SCHEME (no limit).",
    lower_bound=1,
)
_COARSE_LEARNING_RATE_SCALE = flags.DEFINE_string(
    "coarse_learning_rate_scale",
    None,
    "Coarse level l trains at --learning_rate x scale^l: a positive number, "
    "or 'dt' for the level's step size ratio (coarsening_factor^l). "
    "Default: DEFAULT_SCHEME (1, one rate on every level).",
)
_OPTIMIZER = flags.DEFINE_enum(
    "optimizer",
    "adam",
    sorted(OPTIMIZERS),
    "Optimizer of both methods: adam, or sgd (SGD with momentum 0.9).",
)
_LEARNING_RATE = flags.DEFINE_float(
    "learning_rate", 3e-3,
    "Learning rate of both methods (the peak of the cosine schedule).",
)
_SCHEDULE = flags.DEFINE_enum(
    "schedule",
    "cosine",
    SCHEDULES,
    "Learning-rate schedule of both methods: cosine (linear warm-up over "
    "the first 5% of the steps, then cosine decay to 0 at the end of the "
    "budget) or constant.",
)
_EPOCHS = flags.DEFINE_integer(
    "epochs", 10, "Epochs of each method (no early stopping).", lower_bound=1
)
_BATCH_SIZE = flags.DEFINE_integer(
    "batch_size", 100, "Batch size.", lower_bound=1
)
_SEED = flags.DEFINE_integer(
    "seed", 0, "Seed of the initial weights and of the data order (the "
    "first seed with --seeds > 1)."
)
_SEEDS = flags.DEFINE_integer(
    "seeds", 1, "How many seeds (--seed, --seed + 1, ...) each method "
    "trains: one seed is too noisy to rank the methods.", lower_bound=1,
)
_COMPARE = flags.DEFINE_boolean(
    "compare", True, "Whether to also train the single-level baseline."
)
_TARGET = flags.DEFINE_float(
    "target",
    None,
    "Target validation accuracy. Default: plain fit's median final "
    "validation accuracy over the seeds less 0.5 points (with --nocompare: "
    "the multilevel method's own).",
)
_OUTPUT_DIR = flags.DEFINE_string(
    "output_dir", None, "Output directory. Default: runs/<dataset>-<time>."
)
_DATA_DIR = flags.DEFINE_string(
    "data_dir", None, "TFDS data directory. Default: the TFDS default."
)
_JIT_COMPILE = flags.DEFINE_boolean(
    "jit_compile",
    None,
    "Whether training steps are XLA-compiled. Default: yes for point sets, "
    "no for images (conv networks train faster without XLA on CPU).",
)
_STEPS_PER_EXECUTION = flags.DEFINE_integer(
    "steps_per_execution",
    20,
    "Training steps per call of the compiled function (`compile`'s "
    "steps_per_execution): small networks spend most of a step in the "
    "host's per-call overhead otherwise, which hides what a cheaper coarse "
    "step saves.",
    lower_bound=1,
)
# Recorded in results.json.
_FLAGS = (
    _DATASET, _LEVELS, _COARSENING_FACTOR, _BLOCKS, _WIDTH, _STAGES,
    _BATCH_NORM, _TIME_HORIZON, _CYCLE, _NESTED_ITERATION, _LEVEL_PATIENCE,
    _MAX_LEVEL_EPOCHS, _COARSE_LEARNING_RATE_SCALE, _OPTIMIZER,
    _LEARNING_RATE, _SCHEDULE, _EPOCHS, _BATCH_SIZE, _SEED, _SEEDS,
    _COMPARE, _TARGET,
    _OUTPUT_DIR, _DATA_DIR, _JIT_COMPILE, _STEPS_PER_EXECUTION,
)


def multilevel_scheme(**overrides):
    """Returns the multilevel method's settings: `DEFAULT_SCHEME`, overridden.

    Args:
        **overrides: `MultilevelModel` keyword arguments (`num_levels`,
            `cycle`, `nested_iteration`, `coarsening_factor`,
            `level_patience`, `max_level_epochs`,
            `coarse_learning_rate_scale`, ...); None means "the default
            scheme's".

    Returns:
        A dict of `MultilevelModel` keyword arguments: `DEFAULT_SCHEME` with
        the overrides that are not None in place of its entries. Without
        nested iteration, the default scheme's limit of epochs per coarse
        level (`max_level_epochs`) is dropped, since it has no meaning
        there; a limit passed here is kept, and `MultilevelModel` rejects it.

    Example:

    >>> multilevel_scheme(num_levels=2, cycle=None)["num_levels"]
    2
    """
    given = {key: value for key, value in overrides.items() if value is not None}
    scheme = dict(DEFAULT_SCHEME, **given)
    if not scheme["nested_iteration"] and "max_level_epochs" not in given:
        scheme.pop("max_level_epochs", None)
    return scheme


def learning_rate_scale(text):
    """Parses --coarse_learning_rate_scale.

    `MultilevelModel` checks the value (`"dt"` or a positive number).

    Args:
        text: The flag's value: None (the default scheme's scale), `"dt"`,
            or a number as text.

    Returns:
        None, `"dt"`, or the number as a float.

    Raises:
        ValueError: If `text` is neither `"dt"` nor a number.

    Example:

    >>> learning_rate_scale("0.5")
    0.5
    """
    if text is None or text == "dt":
        return text
    try:
        return float(text)
    except ValueError:
        raise ValueError(
            f"--coarse_learning_rate_scale={text!r} is neither 'dt' nor a "
            "number. Pass 'dt' (each coarse level's rate scaled by its step "
            "size) or a positive number such as 0.5."
        ) from None


def _default_output_dir(dataset):
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return os.path.join("runs", f"{dataset.replace('/', '_')}-{stamp}")


def validation_split(name, data_dir=None):
    """Returns the split a data set is validated on.

    Args:
        name: The data set name, as for `datasets.load`.
        data_dir: The TFDS data directory.

    Returns:
        `"validation"`, or `"test"` for a data set without a validation split
        (`mnist`, `cifar10`, ...).
    """
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception:  # An unknown name: `datasets.load` explains it.
        return "validation"
    splits = builder.info.splits
    return "test" if splits and "validation" not in splits else "validation"


def _load(seed):
    """Returns fresh (train, validation) pipelines and the tfds info.

    Each run gets its own pipelines, shuffled by its seed, so both methods
    see the same sequence of shuffled epochs (a pipeline reshuffles on each
    pass).
    """
    return datasets.load(
        _DATASET.value,
        batch_size=_BATCH_SIZE.value,
        split=("train", validation_split(_DATASET.value, _DATA_DIR.value)),
        data_dir=_DATA_DIR.value,
        seed=seed,
        with_info=True,
    )


def _check_training_batches(train, info):
    """Raises ValueError if the training pipeline yields no batch."""
    # `load` drops the last, short training batch, so a batch size above
    # the split's size leaves nothing to train on.
    if int(train.cardinality()) == 0:
        raise ValueError(
            f"--batch_size={_BATCH_SIZE.value} is larger than the training "
            f"split of {_DATASET.value!r} "
            f"({info.splits['train'].num_examples} examples), so training "
            "would see no batch. Pass a smaller --batch_size."
        )


def _make_output_dir(path):
    """Creates the directory `path`; raises ValueError if it cannot."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as error:
        raise ValueError(
            f"Cannot create --output_dir={path!r}: {error.strerror}. Pass a "
            "path where a directory can be written (not a file, nor a path "
            "under a file)."
        ) from error


def network_size(input_shape, width=None, num_blocks=None):
    """Returns the fine network's width and blocks for a data set's examples.

    Args:
        input_shape: Shape of one example: `(features,)` or
            `(height, width, channels)`.
        width: Optional width of the (first) stage.
        num_blocks: Optional K, the blocks of each stage.

    Returns:
        A dict with `width` and `num_blocks`: the given ones, and for the
        others `DENSE_NETWORK`'s for vectors, `CONV_NETWORK`'s for images.

    Example:

    >>> network_size((2,), num_blocks=64)
    {'width': 64, 'num_blocks': 64}
    """
    size = dict(DENSE_NETWORK if len(input_shape) == 1 else CONV_NETWORK)
    if width is not None:
        size["width"] = width
    if num_blocks is not None:
        size["num_blocks"] = num_blocks
    return size


def uses_xla(input_shape, jit_compile=None):
    """Returns whether the job XLA-compiles training for a data set's examples.

    Args:
        input_shape: Shape of one example: `(features,)` or
            `(height, width, channels)`.
        jit_compile: Optional choice; returned as is if given.

    Returns:
        `jit_compile`, else True for vectors and False for images: on CPU an
        epoch of the default conv network on `shapes` took 94 s with XLA
        and 31 s without (see README's "Convolutions under XLA").

    Example:

    >>> uses_xla((28, 28, 1))
    False
    """
    return len(input_shape) == 1 if jit_compile is None else jit_compile


def fine_network(
    input_shape,
    num_classes,
    width=None,
    num_blocks=None,
    time_horizon=4.0,
    num_stages=2,
    batch_norm=False,
):
    """Builds the fine network the job trains for a data set's examples.

    Vectors get `models.dense_ode_resnet(width, num_blocks, time_horizon)`;
    images `(height, width, channels)` get `models.ode_resnet` with
    `num_stages` stages, stage i of `width * 2^i` filters and `num_blocks`
    blocks over `[0, time_horizon]` (with batch normalization in the blocks
    if `batch_norm`).

    Args:
        input_shape: Shape of one example.
        num_classes: Number of classes.
        width: Width of the (first) stage. Default: see `network_size`.
        num_blocks: K, the blocks of each stage. Default: see
            `network_size`.
        time_horizon: T of each stage.
        num_stages: Number of stages of an image network.
        batch_norm: Whether an image network's blocks use batch norm.

    Returns:
        A built `keras.Sequential` model.

    Raises:
        ValueError: If the examples are neither vectors nor images.

    Example:

    >>> fine_network((28, 28, 1), 6, width=8, num_blocks=4).name
    'ode_resnet'
    """
    input_shape = tuple(input_shape)
    if len(input_shape) not in (1, 3):
        raise ValueError(
            "The job trains ODE-ResNets on vectors (dense_ode_resnet) or "
            "images (height, width, channels) (ode_resnet); the data set's "
            f"examples have shape {input_shape}."
        )
    size = network_size(input_shape, width, num_blocks)
    if len(input_shape) == 1:
        return models.dense_ode_resnet(
            input_shape, num_classes, time_horizon=time_horizon, **size
        )
    return models.ode_resnet(
        input_shape,
        num_classes,
        stages=[
            (size["width"] * 2**index, size["num_blocks"], time_horizon)
            for index in range(num_stages)
        ],
        normalization="batch" if batch_norm else None,
    )


def _resolved_settings(info):
    """Returns the network size and XLA choice the flags give a data set.

    Flags left unset take the defaults of the data set's kind of example
    (`network_size`, `uses_xla`); results.json records these.
    """
    input_shape = info.features[info.supervised_keys[0]].shape
    return {
        "network": network_size(input_shape, _WIDTH.value, _BLOCKS.value),
        "jit_compile": uses_xla(input_shape, _JIT_COMPILE.value),
    }


def learning_rate(schedule, peak, total_steps):
    """The learning rate (or schedule) both methods' optimizers get.

    Args:
        schedule: `"cosine"` (`schedules.warmup_cosine` over `total_steps`)
            or `"constant"`.
        peak: The (peak) learning rate.
        total_steps: Optimizer steps of the whole budget.

    Returns:
        A float or a `keras.optimizers.schedules.LearningRateSchedule`.

    Example:

    >>> learning_rate("constant", 0.01, 1000)
    0.01
    """
    if schedule == "constant":
        return peak
    return schedules.warmup_cosine(peak, total_steps)


def _build(method, scheme, info, settings, seed, steps_per_epoch):
    """Builds and compiles one method's model from the seeded fine net.

    The single-level baseline is the fine network itself (plain `fit`);
    the multilevel method wraps it in a `MultilevelModel`.
    """
    features_key, label_key = info.supervised_keys
    keras.utils.set_random_seed(seed)
    fine = fine_network(
        info.features[features_key].shape,
        info.features[label_key].num_classes,
        time_horizon=_TIME_HORIZON.value,
        num_stages=_STAGES.value,
        batch_norm=_BATCH_NORM.value,
        **settings["network"],
    )
    model = fine if method == SINGLE_LEVEL else MultilevelModel(
        fine, **scheme
    )
    model.compile(
        optimizer=OPTIMIZERS[_OPTIMIZER.value](learning_rate(
            _SCHEDULE.value, _LEARNING_RATE.value,
            _EPOCHS.value * steps_per_epoch,
        )),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=settings["jit_compile"],
        steps_per_execution=_STEPS_PER_EXECUTION.value,
    )
    return model


def _prepare(schemes, seed):
    """Loads the data and builds every method's model for one seed.

    Everything that a bad flag makes fail runs here, before any training.
    """
    prepared = {}
    for method, scheme in schemes.items():
        data, info = _load(seed)
        _check_training_batches(data[0], info)
        settings = _resolved_settings(info)
        steps_per_epoch = int(data[0].cardinality())
        model = _build(method, scheme, info, settings, seed, steps_per_epoch)
        prepared[method] = (model, data, steps_per_epoch)
    return prepared, settings


def _fit(name, model, data, seed, output_dir):
    """Trains one method on one seed; returns its `protocol.Run`."""
    train, val = data
    steps_per_epoch = int(train.cardinality())
    print(f"\n=== {name}, seed {seed} ===")
    if getattr(model, "num_levels", 1) > 1:
        print(model.levels_table())
    board = keras.callbacks.TensorBoard(
        log_dir=os.path.join(output_dir, "tensorboard", name, f"seed_{seed}")
    )
    recorder = protocol.RunRecorder(time.perf_counter(), steps_per_epoch)
    try:
        model.fit(
            train,
            epochs=_EPOCHS.value,
            validation_data=val,
            callbacks=[recorder, board],
            shuffle=False,  # The training pipeline shuffles itself.
            verbose=2,
        )
    except NonFiniteLossError as error:
        recorder.diverged_epoch = error.epoch
    if recorder.diverged_epoch is not None:
        raise SystemExit(
            f"Error: the {name} run diverged: its loss is NaN or Inf in "
            f"epoch {recorder.diverged_epoch + 1}. This job's data are "
            "clean: pass a smaller --learning_rate (it was "
            f"{_LEARNING_RATE.value:g})."
        )
    config = dict(
        optimizer=_OPTIMIZER.value, learning_rate=_LEARNING_RATE.value,
        schedule=_SCHEDULE.value, epochs=_EPOCHS.value,
    )
    return recorder.run(_DATASET.value, name, config, seed)


def select_target(runs, target=None):
    """Returns the target validation accuracy and how it was chosen.

    Args:
        runs: Dict mapping a method name to its `protocol.Run`s; the
            baseline is `SINGLE_LEVEL`.
        target: Optional absolute target; returned as is if given.

    Returns:
        A tuple `(target, rule)`: `target`, or the baseline's median final
        validation accuracy less `protocol.MARGIN` (the multilevel
        method's if there is no baseline), and a description of the rule.
    """
    if target is not None:
        return target, "--target"
    reference = SINGLE_LEVEL if SINGLE_LEVEL in runs else MULTILEVEL
    return (
        protocol.target_accuracy([r.final_accuracy for r in runs[reference]]),
        f"median final {reference} val_accuracy - {protocol.MARGIN}",
    )


def verdict(runs, target):
    """Says whether the seeds rank the methods, in a sentence.

    Args:
        runs: Dict mapping a method name to its `protocol.Run`s.
        target: The target validation accuracy.

    Returns:
        The sentence, or "" without both methods.
    """
    if SINGLE_LEVEL not in runs or MULTILEVEL not in runs:
        return ""
    speedups = protocol.speedups(runs[SINGLE_LEVEL], runs[MULTILEVEL], target)
    time_speedup = speedups["time"]
    if time_speedup.count < 2:
        return (
            "One seed is too noisy to rank the methods (validation accuracy "
            "moves by a point or more from epoch to epoch): rerun with "
            "--seeds=5 for the median and the spread."
        )
    single = {r.seed: protocol.reach(r, target).time
              for r in runs[SINGLE_LEVEL]}
    faster = sum(
        protocol.reach(r, target).time < single[r.seed]
        for r in runs[MULTILEVEL]
    )
    seeds = len(runs[MULTILEVEL])
    ranking = (
        "the seeds disagree" if 0 < faster < seeds
        else "every seed agrees"
    )
    return (
        f"The multilevel method reached the target sooner on {faster} of "
        f"{seeds} seeds ({ranking}); median wall-time speedup "
        f"{time_speedup}."
    )


def _usage_error(message):
    """Exits with `message`, like absl's flag errors, without a traceback."""
    raise SystemExit(
        f"Error: {message}\nPass --helpshort or --helpfull to see help on "
        "flags."
    )


def main(argv):
    """Runs the comparison with the parsed flags (see the module docstring)."""
    if len(argv) > 1:
        _usage_error(f"Unexpected arguments: {' '.join(argv[1:])}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # Quiet tfds' INFO lines.
    # Everything that fails on a bad flag runs before any training; the
    # output directory comes last, so a bad flag leaves none behind.
    seeds = range(_SEED.value, _SEED.value + _SEEDS.value)
    try:
        if not (math.isfinite(_LEARNING_RATE.value)
                and _LEARNING_RATE.value > 0):
            raise ValueError(
                f"--learning_rate={_LEARNING_RATE.value} is not a positive "
                "number. Pass a learning rate such as 3e-3."
            )
        schemes = {
            MULTILEVEL: multilevel_scheme(
                num_levels=_LEVELS.value,
                cycle=_CYCLE.value,
                nested_iteration=_NESTED_ITERATION.value,
                coarsening_factor=_COARSENING_FACTOR.value,
                level_patience=_LEVEL_PATIENCE.value,
                max_level_epochs=_MAX_LEVEL_EPOCHS.value,
                coarse_learning_rate_scale=learning_rate_scale(
                    _COARSE_LEARNING_RATE_SCALE.value
                ),
            )
        }
        if _COMPARE.value:
            schemes = {SINGLE_LEVEL: None, **schemes}
        prepared, settings = _prepare(schemes, seeds[0])
        output_dir = _OUTPUT_DIR.value or _default_output_dir(_DATASET.value)
        _make_output_dir(output_dir)
    except (ValueError, datasets.DatasetNotAvailableError) as error:
        _usage_error(error)

    load_average = os.getloadavg()
    runs = {method: [] for method in schemes}
    for index, seed in enumerate(seeds):
        if index:
            prepared, _ = _prepare(schemes, seed)
        # Which method trains first alternates, so that neither a change of
        # load on the machine nor the order favours one.
        order = list(prepared.items())
        for method, (model, data, _) in order[::-1] if index % 2 else order:
            runs[method].append(_fit(method, model, data, seed, output_dir))
    target, rule = select_target(runs, _TARGET.value)
    table = reporting.summary_table(runs, target)
    conclusion = verdict(runs, target)
    reporting.write_json(
        os.path.join(output_dir, "results.json"),
        {
            "flags": {holder.name: holder.value for holder in _FLAGS},
            **settings,
            "machine": {
                "cpu_count": os.cpu_count(),
                "load_average_at_start": load_average,
            },
            "target": {"value": target, "rule": rule},
            "schemes": schemes,
            "runs": {
                method: [dataclasses.asdict(run) for run in method_runs]
                for method, method_runs in runs.items()
            },
            "summary_table": table,
            "verdict": conclusion,
        },
    )
    median_seed = seeds[len(seeds) // 2]
    reporting.plot_curves(
        {
            method: _curve(next(r for r in method_runs
                                if r.seed == median_seed))
            for method, method_runs in runs.items()
        },
        os.path.join(output_dir, "curves.png"),
        target=target,
        title=f"{_DATASET.value}, K = {settings['network']['num_blocks']}, "
        f"seed {median_seed}",
    )
    print(
        f"\nTarget val_accuracy >= {target:.4f} ({rule}). Times are wall "
        "seconds from the call of fit, compilation included; work is in "
        "fine-gradient equivalents; median (min-max) over the seeds."
    )
    print(table)
    if conclusion:
        print(conclusion)
    print(f"\nWrote results.json, curves.png and tensorboard/ to {output_dir}")


def _curve(run):
    """A run as `reporting.plot_curves` takes it."""
    return {
        "history": {"val_accuracy": run.accuracies, "work": run.work,
                    "level": run.levels},
        "epoch_times": run.epoch_times,
    }


if __name__ == "__main__":
    app.run(main)

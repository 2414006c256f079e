"""`MultilevelModel`: MG/OPT training of a residual network behind `fit`."""

import inspect
import math
import os
import warnings

import keras
import numpy as np
import tensorflow as tf
from keras.src.losses.loss import unscale_loss_for_distribution

from keras_mlres import _validation
from keras_mlres import cycles
from keras_mlres import export as export_lib
from keras_mlres import level_schedules
from keras_mlres import optimizer_state
from keras_mlres import schedules
from keras_mlres._checks import all_finite
from keras_mlres._checks import check_bool
from keras_mlres._checks import check_choice
from keras_mlres._checks import check_count
from keras_mlres._checks import check_finite_weights
from keras_mlres.hierarchy import Hierarchy
from keras_mlres.version import __version__
from keras_mlres.version import check_compatible

NESTED_OPTIMIZER_STATES = ("reset", "prolongate")

# The recommended scheme, `MultilevelModel(fine, **DEFAULT_SCHEME)` (its
# measurements: benchmarks/README.md). Full multigrid's nested
# iteration as a warm start: the K/4-block network, then K/2, then K, each
# trained (one optimizer step per batch) until its validation loss stops
# improving, and prolongated as the next one's initial weights. Injection
# starts the coarsest network from every c-th block of the fine network's
# initial weights: independent draws of the blocks' initializer, whose
# average over c blocks would shrink the kernels' scale by sqrt(c) and make
# the coarse network train more slowly.
DEFAULT_SCHEME = dict(
    num_levels=3,
    cycle="none",
    nested_iteration=True,
    pre_smoothing=1,
    post_smoothing=0,
    level_patience=1,
    restriction="injection",
)


def _unscaled(loss):
    """Undoes Keras's per-replica loss scaling (1 / num_replicas) for logs."""
    return None if loss is None else unscale_loss_for_distribution(loss)


def _parameter_count(model):
    return sum(int(np.prod(v.shape)) for v in model.trainable_variables)


def _spans_workers(strategy):
    """Whether `strategy` is a `MultiWorkerMirroredStrategy` of 2+ workers."""
    return isinstance(
        strategy, tf.distribute.MultiWorkerMirroredStrategy
    ) and strategy.extended._in_multi_worker_mode()


@keras.saving.register_keras_serializable(package="keras_mlres")
class MultilevelModel(keras.Model):
    """Trains a residual network by multilevel (MG/OPT) cycles over depth.

    Wraps a fine network that contains `ODEStack` stages. `fit` runs one
    MG/OPT cycle per batch across the hierarchy of coarser networks (see
    `keras_mlres.cycles`); `evaluate`, `predict` and `call` use the fine
    network only. Everything else is a normal `keras.Model`.

    The constructor's defaults are the classic MG/OPT V-cycle;
    `MultilevelModel(model, **keras_mlres.DEFAULT_SCHEME)` is the
    recommended scheme (a nested-iteration warm start; see
    benchmarks/README.md for its measurements).

    Each level has its own optimizer: the fine level uses the one given to
    `compile`, coarse levels fresh clones of it unless `level_optimizers` is
    given. A clone on level l runs the fine learning rate times
    `coarse_learning_rate_scale**l`: a schedule is scaled as a schedule, and
    a rate set on `model.optimizer` (by `LearningRateScheduler`,
    `ReduceLROnPlateau` or the user) reaches the clones at the next step,
    which sets their rates from the fine one's on the device (no host sync).
    Optimizers passed as `level_optimizers` keep their own learning rates.
    `optimizer.iterations` counts fine optimizer steps (smoothing
    steps), so learning-rate schedules and Adam's bias correction advance
    `pre_smoothing + post_smoothing` times per batch (under nested
    iteration, from 0 on each level unless `nested_optimizer_state` is
    `"prolongate"`).

    With `jit_compile=True` the whole cycle (every level's forward and
    backward passes, optimizer updates, transfers and line search) is one
    XLA-compiled step; all control flow on tensor values is `tf.while_loop`,
    so the step has no host synchronization.

    Under a `tf.distribute` strategy each replica runs the cycle on its share
    of the batch, with gradients all-reduced on every level. A coarse level
    whose loss or correction is not finite has its correction rejected and
    is counted in the `level_l_diverged` log; the fine weights stay finite.
    `compile` and `fit` check their arguments and the training and
    validation data before anything changes (see README.md, "Errors"); an
    epoch whose loss is NaN or Inf is undone and stops `fit` with an error.
    Mixed precision is supported with the "mixed_bfloat16" policy, not with
    "mixed_float16", whose loss scaling the cycle does not do.

    Args:
        model: A built Sequential or functional `keras.Model` with
            `ODEStack` layers: the fine network (level 0).
        num_levels: Number of levels L >= 1.
        cycle: `"V"`, `"W"`, `"F"`, or `"none"` (no coarse correction: each
            batch takes `pre_smoothing + post_smoothing` plain optimizer
            steps on the active level; with `nested_iteration` the hierarchy
            then only provides warm starts).
        pre_smoothing: Optimizer steps before the coarse correction.
        post_smoothing: Optimizer steps after the coarse correction.
        coarse_steps: Optimizer steps on the coarsest level.
        line_search: Whether the coarse correction step is found by
            backtracking (a correction that does not decrease the level's
            objective is rejected). If False, the correction is always taken.
        max_backtracking: Step sizes the line search tries (1, 1/2, ...).
        coarse_learning_rate_scale: Learning rate of the coarse levels'
            optimizers cloned from the fine one (not of `level_optimizers`
            passed to `compile`): level l runs the fine learning rate (or
            schedule) times `scale**l`, also after callbacks change the
            fine rate; `"dt"` scales by the step size,
            `coarsening_factor**l = dt_l / dt_0`. The default 1.0 keeps one
            learning rate on every level. With nested iteration a larger
            coarse rate acts like a learning-rate schedule (high, then
            low), and too large a rate can stall a conv network. A coarse
            network's larger steps also lower its stable learning rate: if
            the coarse levels stall at a rate the fine network takes, lower
            theirs, e.g. with `1 / coarsening_factor`, which for SGD makes
            a coarse step change the network's function about as much as a
            fine step does.
        coarse_optimizer_state: `"reset"` (coarse optimizer slots and
            iteration counts are zeroed at each visit; the default, which
            measured better in benchmarks/coarse_optimizer_state.py) or
            `"keep"` (they carry over from one visit to the next).
        coarsening_factor: Factor by which each level divides the blocks.
        interpolation: Prolongation in time, `"constant"` or `"linear"`.
        restriction: Weight restriction, `"average"`, `"injection"` or
            `"full_weighting"`. Under nested iteration without cycles it
            only gives the coarsest level its initial weights (and a
            resumed level its weights back); `"injection"` keeps the scale
            of freshly initialized blocks, which averaging shrinks.
        nested_iteration: If True, `fit` starts on the coarsest level and
            moves one level finer whenever the monitored loss (`val_loss` if
            there is validation data, else `loss`) has not improved for
            `level_patience` epochs (under `validation_freq`, epochs that
            are not validated leave that count alone) or the level has
            trained `max_level_epochs` epochs; each move prolongates the
            weights as the finer level's initial guess (full multigrid's
            nested iteration). On the active level each batch runs the
            cycle from that level down. The active level's weights are
            prolongated to the fine network before each validation pass, at
            each epoch end and whenever the model is saved, exported,
            evaluated or asked to predict (also from a callback mid-epoch),
            so validation, checkpoints and `predict` see the fine network;
            after loading, the coarse levels are restricted from the
            loaded fine network.
        level_patience: Epochs without improvement before moving finer.
        max_level_epochs: Optional limit of epochs per coarse level.
        level_budget: Optional level budget, which replaces patience and
            `max_level_epochs`: one share of `fit`'s epochs per level,
            coarsest first, summing to 1 (e.g. `[0.5, 0.25, 0.25]` for 3
            levels). Nested iteration then moves finer at the epochs the
            budget fixes (`keras_mlres.level_schedules.level_epochs`),
            whatever the losses do, so that a run resumed from a backup
            moves at the same epochs. Pair it with
            `nested_optimizer_state="prolongate"` to run one learning-rate
            schedule over the whole budget (a fresh optimizer restarts the
            schedule on each level).
        nested_optimizer_state: How the optimizer of a level that nested
            iteration moves to starts. `"reset"` (the default): fresh, as
            a new optimizer. `"prolongate"`: with the coarser level's state
            (moments, iteration count), stage slots prolongated like the
            weights and scaled to the finer level's smaller per-block
            gradients (see `keras_mlres.optimizer_state`), so training
            continues without the jump a fresh Adam makes; levels whose
            optimizers differ in type, or are of a type it does not know,
            start fresh (with a warning at `compile`). Carrying the
            iteration count also carries a learning-rate schedule across
            the levels.
        **kwargs: Base `keras.Model` keyword arguments (`name`, ...).

    Example:

    >>> model = MultilevelModel(fine, num_levels=3, cycle="V")
    >>> model.compile(
    ...     optimizer=keras.optimizers.Adam(1e-2),
    ...     loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    ...     metrics=["accuracy"],
    ...     jit_compile=True,
    ... )
    >>> history = model.fit(train_ds, epochs=20, validation_data=val_ds)
    """

    def __init__(
        self,
        model,
        num_levels=2,
        cycle="V",
        pre_smoothing=1,
        post_smoothing=1,
        coarse_steps=2,
        line_search=True,
        max_backtracking=4,
        coarse_learning_rate_scale=1.0,
        coarse_optimizer_state="reset",
        coarsening_factor=2,
        interpolation="constant",
        restriction="average",
        nested_iteration=False,
        level_patience=1,
        max_level_epochs=None,
        nested_optimizer_state="reset",
        level_budget=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if isinstance(model, dict):
            model = keras.saving.deserialize_keras_object(model)
        check_choice("cycle", cycle, cycles.CYCLES)
        line_search = check_bool("line_search", line_search)
        nested_iteration = check_bool("nested_iteration", nested_iteration)
        pre_smoothing = check_count("pre_smoothing", pre_smoothing)
        post_smoothing = check_count("post_smoothing", post_smoothing)
        coarse_steps = check_count("coarse_steps", coarse_steps)
        max_backtracking = check_count(
            "max_backtracking", max_backtracking, minimum=1
        )
        level_patience = check_count(
            "level_patience", level_patience, minimum=1
        )
        if max_level_epochs is not None:
            max_level_epochs = check_count(
                "max_level_epochs", max_level_epochs, minimum=1
            )
        _check_learning_rate_scale(coarse_learning_rate_scale)
        check_choice(
            "coarse_optimizer_state",
            coarse_optimizer_state,
            cycles.OPTIMIZER_STATES,
        )
        check_choice(
            "nested_optimizer_state",
            nested_optimizer_state,
            NESTED_OPTIMIZER_STATES,
        )
        if max_level_epochs is not None and not nested_iteration:
            raise ValueError(
                "`max_level_epochs` limits the epochs per coarse level of "
                "nested iteration, but nested_iteration=False. Set "
                "nested_iteration=True or drop max_level_epochs."
            )
        if level_budget is not None:
            if not nested_iteration:
                raise ValueError(
                    "`level_budget` shares the epochs among the levels of "
                    "nested iteration, but nested_iteration=False. Set "
                    "nested_iteration=True or drop level_budget."
                )
            if max_level_epochs is not None:
                raise ValueError(
                    "`level_budget` fixes the epochs of every level, so "
                    "`max_level_epochs` would never apply. Pass one of them."
                )
            level_budget = level_schedules.check_level_budget(
                level_budget, num_levels
            )
        if cycle == "none" and num_levels > 1 and not nested_iteration:
            raise ValueError(
                f"cycle='none' makes no coarse corrections, and without "
                f"nested_iteration the {num_levels - 1} coarse level(s) would "
                "never be used. Set nested_iteration=True, choose a cycle "
                "('V', 'W', 'F'), or use num_levels=1."
            )
        _check_cycle_takes_steps(
            num_levels, cycle, pre_smoothing, post_smoothing, coarse_steps,
            nested_iteration,
        )
        self.fine = model
        self.hierarchy = Hierarchy(
            model,
            num_levels,
            coarsening_factor=coarsening_factor,
            interpolation=interpolation,
            restriction=restriction,
        )
        self.num_levels = int(num_levels)  # Hierarchy checked it
        self.cycle = cycle
        self.pre_smoothing = pre_smoothing
        self.post_smoothing = post_smoothing
        self.coarse_steps = coarse_steps
        self.line_search = line_search
        self.max_backtracking = max_backtracking
        self.coarse_learning_rate_scale = coarse_learning_rate_scale
        self.coarse_optimizer_state = coarse_optimizer_state
        self.nested_iteration = nested_iteration
        self.level_patience = level_patience
        self.max_level_epochs = max_level_epochs
        self.nested_optimizer_state = nested_optimizer_state
        self.level_budget = level_budget
        self.active_level = num_levels - 1 if self.nested_iteration else 0
        # Nested iteration's schedule lives in variables, so that checkpoints
        # (BackupAndRestore, save_weights, .keras files) carry it: the active
        # level, its epochs so far, its epochs without improvement, and the
        # best monitored loss.
        self.nested_schedule = keras.Variable(
            [self.active_level, 0, 0], trainable=False, dtype="int32",
            name="nested_schedule",
        )
        self.nested_best = keras.Variable(
            np.inf, trainable=False, dtype="float64", name="nested_best"
        )
        self.level_optimizers = None
        self._level_optimizers_given = False
        # For each coarse level whose optimizer follows the fine one's
        # learning-rate variable, its factor (`_follow_fine_learning_rate`).
        self._followed_rate_factors = []
        self._mgopt = None
        # Where the weights of truth are, between syncs (see `_sync_levels`):
        # a coarse active level that trained since the last prolongation is
        # ahead of the fine network; a loaded fine network is ahead of the
        # coarse levels, which still hold what was restricted at __init__.
        self._fine_behind_active_level = False
        self._coarse_levels_behind_fine = False
        self._level_loss_trackers = [
            keras.metrics.Mean(name=f"level_{level}_loss")
            for level in range(1, num_levels)
        ]
        self._divergence_trackers = [
            keras.metrics.Sum(name=f"level_{level}_diverged")
            for level in range(1, num_levels)
        ]
        self._step_size_trackers = [
            keras.metrics.Mean(name="alpha" if level == 0 else f"level_{level}_alpha")
            for level in range(num_levels - 1)
        ]
        self.work = keras.Variable(
            0.0, trainable=False, dtype="float32", name="work"
        )
        self.built = True

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "model": keras.saving.serialize_keras_object(self.fine),
                "num_levels": self.num_levels,
                "cycle": self.cycle,
                "pre_smoothing": self.pre_smoothing,
                "post_smoothing": self.post_smoothing,
                "coarse_steps": self.coarse_steps,
                "line_search": self.line_search,
                "max_backtracking": self.max_backtracking,
                "coarse_learning_rate_scale": self.coarse_learning_rate_scale,
                "coarse_optimizer_state": self.coarse_optimizer_state,
                "coarsening_factor": self.hierarchy.coarsening_factor,
                "interpolation": self.hierarchy.interpolation,
                "restriction": self.hierarchy.restriction,
                "nested_iteration": self.nested_iteration,
                "level_patience": self.level_patience,
                "max_level_epochs": self.max_level_epochs,
                "nested_optimizer_state": self.nested_optimizer_state,
                "level_budget": (
                    None if self.level_budget is None
                    else list(self.level_budget)
                ),
                "keras_mlres_version": __version__,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        """Creates the model from `get_config()`; checks its version."""
        config = dict(config)
        check_compatible(
            config.pop("keras_mlres_version", None),
            f"The config of MultilevelModel '{config.get('name')}'",
        )
        return cls(**config)

    def call(self, inputs, training=None):
        return self.fine(inputs, training=training)

    def export(self, filepath, format="tf_saved_model", verbose=None,
               input_signature=None, level=0, **kwargs):
        """Exports the fine network (or a coarser level) for inference.

        The artifact holds one network (what a user serves); the other
        levels and the cycle are training machinery. SavedModels are
        written beside `filepath` and moved into place when complete; load
        them with `keras_mlres.export.load`. See
        `keras_mlres.export.export_model`.

        Args:
            filepath: Where to write the artifact.
            format: `"tf_saved_model"` (default, with a `serve` endpoint and
                a `serving_default` signature), `"hub"` (a reusable
                SavedModel that can be fine-tuned after loading, see
                `keras_mlres.export.export_hub_module`), or another
                `keras.Model.export` format.
            verbose: As in `keras.Model.export`.
            input_signature: As in `keras.Model.export`; defaults to the
                network's inputs.
            level: The level to export; 0 (default) is the fine network.
            **kwargs: Passed to `keras.Model.export`.
        """
        self._sync_levels()
        return export_lib.export_model(
            self, filepath, format=format, level=level, verbose=verbose,
            input_signature=input_signature, **kwargs,
        )

    def compile(self, optimizer="rmsprop", *args, level_optimizers=None, **kwargs):
        """Configures training, as `keras.Model.compile`.

        Everything that could fail is checked first: a `ValueError` (see
        README.md, "Errors") leaves the model as it was, compiled or not.
        Loss scaling is not supported: under the "mixed_float16" dtype
        policy use "mixed_bfloat16" instead.

        Args:
            optimizer: The fine level's optimizer.
            *args: Passed to `keras.Model.compile`.
            level_optimizers: Optional list of `num_levels - 1` optimizers
                (instances, names or configs) for levels 1 .. L-1, each a
                distinct instance. They keep their own learning rates:
                callbacks that set `model.optimizer.learning_rate` change the
                fine level's only (give them schedules, or set theirs in a
                callback). Defaults to fresh clones of `optimizer`, which
                follow its learning rate (see `coarse_learning_rate_scale`).
            **kwargs: Passed to `keras.Model.compile` (`loss`, `metrics`,
                `jit_compile`, ...).
        """
        try:
            arguments = inspect.signature(super().compile).bind(
                optimizer, *args, **kwargs
            )
        except TypeError as error:  # e.g. a misspelt keyword
            raise TypeError(f"compile() {error}") from None
        arguments.apply_defaults()
        arguments = arguments.arguments
        optimizer = _validation.check_optimizer(optimizer)
        if arguments["auto_scale_loss"]:
            _validation.check_dtype_policy(self)
        _validation.check_loss(arguments["loss"], arguments["loss_weights"])
        _validation.check_metrics(
            arguments["metrics"], arguments["weighted_metrics"]
        )
        self.hierarchy.follow_fine_trainable()
        given = level_optimizers is not None
        level_optimizers = self._coarse_optimizers(optimizer, level_optimizers)
        for level, (model, level_optimizer) in enumerate(
            zip(self.hierarchy.models, [optimizer] + level_optimizers)
        ):
            argument = f"level_optimizers[{level - 1}]" if level else "optimizer"
            _validation.check_optimizer_variables(
                level_optimizer, model.trainable_variables, argument
            )
            if self.num_levels > 1:
                _validation.check_no_gradient_accumulation(
                    level_optimizer, argument
                )
        _validation.warn_if_loss_expects_probabilities(
            arguments["loss"], self.fine
        )
        super().compile(optimizer, *args, **kwargs)
        self._level_optimizers_given = given
        self.level_optimizers = level_optimizers
        follows = not given and isinstance(
            optimizer.learning_rate, keras.Variable
        )
        self._followed_rate_factors = [
            self._learning_rate_factor(level)
            for level in range(1, self.num_levels)
            if follows
        ]
        self._mgopt = self._build_mgopt()
        self._warn_about_unpaired_optimizers()

    def get_compile_config(self):
        config = super().get_compile_config()
        # Clones are made again by `compile`, by the rule.
        if config and self._level_optimizers_given:
            config["level_optimizers"] = [
                keras.saving.serialize_keras_object(optimizer)
                for optimizer in self.level_optimizers
            ]
        return config

    def compile_from_config(self, config):
        self.compile(**keras.saving.deserialize_keras_object(config))

    @property
    def _optimizers(self):
        """Each level's optimizer, finest first."""
        return [self.optimizer] + self.level_optimizers

    @property
    def _prolongates_optimizer_state(self):
        """Whether the settings ask moves finer to carry optimizer state."""
        return (
            self.nested_iteration
            and self.nested_optimizer_state == "prolongate"
        )

    def _carries_optimizer_state(self, coarse_level):
        """Whether moving finer from `coarse_level` prolongates its state."""
        return self._prolongates_optimizer_state and (
            optimizer_state.can_prolongate(
                self._optimizers[coarse_level],
                self._optimizers[coarse_level - 1],
            )
        )

    def _warn_about_unpaired_optimizers(self):
        if not self._prolongates_optimizer_state:
            return
        for level in range(1, self.num_levels):
            if not self._carries_optimizer_state(level):
                fine, coarse = self._optimizers[level - 1 : level + 1]
                warnings.warn(
                    f"Moving finer from level {level}, nested iteration "
                    "cannot prolongate the optimizer state from "
                    f"{type(coarse).__name__} to {type(fine).__name__} (it "
                    "needs one optimizer type among "
                    f"{optimizer_state.SUPPORTED_OPTIMIZERS} or their "
                    f"subclasses), so level {level - 1}'s optimizer will "
                    "start fresh. Pass nested_optimizer_state='reset' to "
                    "MultilevelModel to start every level fresh silently.",
                    stacklevel=3,
                )

    def _coarse_optimizers(self, fine_optimizer, level_optimizers):
        num_coarse = self.num_levels - 1
        if level_optimizers is None:
            if not num_coarse:
                return []
            config = _validation.cloneable_config(fine_optimizer)
            return [
                type(fine_optimizer).from_config(
                    dict(
                        config,
                        learning_rate=schedules.scale_learning_rate(
                            config["learning_rate"],
                            self._learning_rate_factor(level),
                        ),
                    )
                )
                for level in range(1, num_coarse + 1)
            ]
        if not isinstance(level_optimizers, (list, tuple)) or (
            len(level_optimizers) != num_coarse
        ):
            raise ValueError(
                f"`level_optimizers` must be a list of num_levels - 1 = "
                f"{num_coarse} optimizers, one for each coarse level 1 .. "
                f"{num_coarse}; the fine level uses `optimizer`. Received: "
                f"level_optimizers={level_optimizers!r}"
            )
        optimizers = [
            _validation.check_optimizer(o, f"level_optimizers[{i}]")
            for i, o in enumerate(level_optimizers)
        ]
        seen = {id(fine_optimizer)}
        for level, optimizer in enumerate(optimizers, start=1):
            if id(optimizer) in seen:
                raise ValueError(
                    f"The optimizer for level {level} is also used by "
                    "another level. Each level needs its own optimizer "
                    "instance (its state belongs to that level's weights): "
                    "pass distinct instances in `level_optimizers`."
                )
            seen.add(id(optimizer))
        return optimizers

    def _learning_rate_factor(self, level):
        """A cloned optimizer's learning rate on `level`, over the fine's."""
        scale = self.coarse_learning_rate_scale
        if scale == "dt":
            scale = self.hierarchy.coarsening_factor
        return scale**level

    def _follow_fine_learning_rate(self):
        """Sets the following coarse optimizers' rates from the fine rate.

        Runs inside the step and reads the fine optimizer's learning-rate
        variable on the device, so a rate that callbacks set on
        `model.optimizer` between steps (`LearningRateScheduler`,
        `ReduceLROnPlateau`) reaches every level without a host sync.
        """
        for optimizer, factor in zip(
            self.level_optimizers, self._followed_rate_factors
        ):
            optimizer.learning_rate.assign(
                self.optimizer.learning_rate * factor
            )

    @property
    def _cycle_trackers(self):
        return (
            self._level_loss_trackers
            + self._step_size_trackers
            + self._divergence_trackers
        )

    def summary(self, *args, print_fn=None, **kwargs):
        """Prints the fine network's summary, then the levels of the cycle.

        Args:
            *args: Passed to `keras.Model.summary`.
            print_fn: As in `keras.Model.summary`; defaults to `print`.
            **kwargs: Passed to `keras.Model.summary`.
        """
        super().summary(*args, print_fn=print_fn, **kwargs)
        print_fn = print_fn or print
        print_fn(self.levels_table())

    def levels_table(self):
        """Returns a text table of the levels: blocks, dt, parameters, cost."""
        fine_params = _parameter_count(self.fine)
        rows = [("level", "blocks per stage", "dt per stage", "params", "cost")]
        for level in range(self.num_levels):
            stages = self.hierarchy.stages(level)
            params = _parameter_count(self.hierarchy.level(level))
            rows.append(
                (
                    str(level),
                    ", ".join(str(s.num_blocks) for s in stages),
                    ", ".join(f"{s.dt:.4g}" for s in stages),
                    f"{params:,}",
                    f"{params / fine_params:.3f}",
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines = [
            f"MG/OPT {self.cycle}-cycle over {self.num_levels} level(s): "
            f"pre_smoothing={self.pre_smoothing}, "
            f"post_smoothing={self.post_smoothing}, "
            f"coarse_steps={self.coarse_steps}, "
            f"line_search={self.line_search}"
        ]
        for row in rows:
            lines.append(
                "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip()
            )
        return "\n".join(lines)

    def test_step(self, data):
        logs = super().test_step(data)
        cycle_logs = {tracker.name for tracker in self._cycle_trackers}
        return self._reducible_logs(
            {k: v for k, v in logs.items() if k not in cycle_logs}
        )

    def _reducible_logs(self, logs):
        """Gives each log of a step a batch axis of length 1 across workers.

        Keras logs the mean of a step's logs over the replicas; across
        workers it takes that mean along the batch axis
        (`strategy.reduce("MEAN", log, axis=0)`), which a scalar lacks
        (tensorflow/tensorflow#72388).
        """
        if not _spans_workers(self.distribute_strategy):
            return logs
        return {name: tf.reshape(log, [1]) for name, log in logs.items()}

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras builds the metrics from the first batch, which it averages
        # over the replicas with one `strategy.reduce` of the whole (x, y)
        # structure: across workers that reduce takes single tensors only.
        # The build needs shapes and dtypes, which any replica's share has.
        strategy = self.distribute_strategy
        if iterator is not None and _spans_workers(strategy):
            for _, _, batches in iterator:
                data_batch = tf.nest.map_structure(
                    lambda v: strategy.experimental_local_results(v)[0],
                    next(batches),
                )
                break
            iterator = None
        super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def _level_loss(self, model, x, y, sample_weight):
        y_pred = model(x, training=True)
        losses = [self._compile_loss(y, y_pred, sample_weight)]
        losses += [self._aggregate_additional_loss(l) for l in model.losses]
        return tf.add_n(losses), y_pred

    def _build_mgopt(self):
        fine_params = _parameter_count(self.fine)
        levels = [
            cycles.Level(
                index,
                model,
                optimizer,
                self._level_loss,
                cost=_parameter_count(model) / fine_params,
                reset_optimizer=(
                    index > 0 and self.coarse_optimizer_state == "reset"
                ),
            )
            for index, (model, optimizer) in enumerate(
                zip(self.hierarchy.models, self._optimizers)
            )
        ]
        return cycles.MGOPT(
            self.hierarchy,
            levels,
            cycle=self.cycle,
            pre_smoothing=self.pre_smoothing,
            post_smoothing=self.post_smoothing,
            coarse_steps=self.coarse_steps,
            line_search=self.line_search,
            max_backtracking=self.max_backtracking,
        )

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        self._follow_fine_learning_rate()
        result = self._mgopt((x, y, sample_weight), top=self.active_level)
        self._loss_tracker.update_state(
            _unscaled(result.loss),
            sample_weight=tf.shape(tf.nest.flatten(x)[0])[0],
        )
        for trackers, values in (
            (self._level_loss_trackers, map(_unscaled, result.level_losses)),
            (self._step_size_trackers, result.step_sizes),
            (self._divergence_trackers, result.diverged),
        ):
            for tracker, value in zip(trackers, values):
                if value is not None:
                    tracker.update_state(value)
        self.work.assign_add(result.work)
        logs = self.compute_metrics(x, y, result.y_pred, sample_weight)
        # A snapshot: `Variable.value` is the variable itself on TensorFlow,
        # which the eager loop (run_eagerly=True) cannot hand on as a log.
        logs["work"] = keras.ops.copy(self.work)
        logs["level"] = tf.constant(self.active_level)
        return self._reducible_logs(logs)

    def fit(self, x=None, y=None, *args, callbacks=None, **kwargs):
        """Trains the model, as `keras.Model.fit`.

        With `nested_iteration=True` the first `fit` trains the levels from
        the coarsest up (see the class docstring); the `level` log says which
        level each epoch trained.

        Before anything changes, the training and validation data are
        checked against the fine network (input shapes and dtypes, an empty
        data set, NaN or Inf inputs, sparse labels that are not class indices
        of the classifier); a problem raises a `ValueError` that names it and
        the fix. A `tf.data.Dataset` is checked by its element spec and
        cardinality only: it is not read before Keras reads it.

        An epoch whose training or validation loss is NaN or Inf (NaN
        values in a dataset, labels outside the classes under XLA, a
        learning rate too high) stops `fit` with a `NonFiniteLossError` (a
        `ValueError`), after the weights and optimizer states are put back
        to where that epoch started: the model is never left with NaN
        weights, and callbacks after the check (a `ModelCheckpoint`) do not
        see that epoch's end. A checkpoint taken mid-epoch after the weights
        turned NaN (`ModelCheckpoint` with `save_freq` in batches) is refused
        by `save` with a `ValueError`; `fit` then undoes the epoch the same
        way and re-raises it.
        """
        if self.compiled:
            _validation.check_data(self.fine, self.loss, x, y)
            # Not positional: it comes after `callbacks`, a keyword here.
            validation_data = kwargs.get("validation_data")
            if validation_data is not None:
                val_x, val_y, _ = keras.utils.unpack_x_y_sample_weight(
                    validation_data
                )
                _validation.check_data(
                    self.fine, self.loss, val_x, val_y, purpose="validation"
                )
        # The guard first: its epoch end must run before a user's
        # ModelCheckpoint could save NaN weights, and before nested
        # iteration would read a NaN validation loss.
        guards = [_FiniteLosses(self)]
        if self.active_level > 0:
            validates = (
                kwargs.get("validation_data") is not None
                or kwargs.get("validation_split")
            )
            guards.append(
                _NestedIteration(self, "val_loss" if validates else "loss")
            )
        # Flattened as Keras does: a list (nested or not), one callback, or
        # a CallbackList (itself a callback).
        try:
            return super().fit(
                x, y, *args,
                callbacks=guards + keras.tree.flatten(callbacks or []),
                **kwargs,
            )
        except Exception:
            # Raised mid-epoch, e.g. by a ModelCheckpoint(save_freq=<batches>)
            # that refused NaN weights: no epoch end undoes the epoch.
            if not all_finite(self._network_weights()):
                guards[0].undo_epoch()
            raise

    def _network_weights(self):
        """Every level's network weights (not the model's bookkeeping, such
        as nested iteration's best loss, which starts at Inf)."""
        return [w for network in self.hierarchy.models for w in network.weights]

    def sync_fine_weights(self):
        """Prolongates the active level's weights up to the fine network."""
        for level in range(self.active_level, 0, -1):
            self.hierarchy.prolongate(level)
        self._fine_behind_active_level = False

    def _sync_levels(self):
        """Makes every level's weights follow from the latest trained ones.

        Called where the weights leave the model (saving, exporting) or
        training starts: after steps on a coarse active level (also from a
        callback mid-epoch, or after `fit` raised) the fine network is
        brought up to date; after the fine network was loaded, the coarse
        levels are restricted from it.
        """
        if self._fine_behind_active_level:
            self.sync_fine_weights()
        if self._coarse_levels_behind_fine:
            self.hierarchy.restrict_from_fine()
            self._coarse_levels_behind_fine = False

    def load_own_variables(self, store):
        """Loads the model's own variables (`keras.Model` loading calls it).

        Loading also overwrites the fine network, from which the coarse
        levels are then restricted before they are used or exported.
        """
        super().load_own_variables(store)
        self._fine_behind_active_level = False
        self._coarse_levels_behind_fine = True

    def predict(self, x, *args, **kwargs):
        """Predicts with the fine network, as `keras.Model.predict`.

        Also from a callback mid-epoch: the fine network is first brought up
        to date with a coarse level that nested iteration is training.
        """
        self._sync_levels()
        return super().predict(x, *args, **kwargs)

    def evaluate(self, x=None, *args, **kwargs):
        """Evaluates the fine network, as `keras.Model.evaluate` (see
        `predict`)."""
        self._sync_levels()
        return super().evaluate(x, *args, **kwargs)

    def save(self, filepath, *args, **kwargs):
        """Saves the model, as `keras.Model.save`.

        The file holds the fine network, so it is first brought up to date
        with a coarse level that nested iteration is training (a checkpoint
        taken mid-epoch, e.g. by `ModelCheckpoint(save_freq=...)`, would
        otherwise hold the stage weights of the epoch's start).

        Raises:
            ValueError: If `filepath` ends in `.h5` or `.hdf5` (Keras's legacy
                H5 format, which cannot hold the hierarchy; use `.keras`, or
                `save_weights` with `.weights.h5`), or if a weight is NaN or
                Inf (training diverged). Nothing is written: a file already
                at `filepath` is left as it was.
                Raised mid-epoch within `fit` (by a `ModelCheckpoint` with
                `save_freq` in batches), it stops `fit`, and the weights and
                optimizer states are put back to where the epoch started.
        """
        _check_not_legacy_h5(filepath)
        self._prepare_to_write(filepath)
        return super().save(filepath, *args, **kwargs)

    def save_weights(self, filepath, *args, **kwargs):
        """Saves the weights, as `keras.Model.save_weights` (see `save`)."""
        self._prepare_to_write(filepath)
        return super().save_weights(filepath, *args, **kwargs)

    def _prepare_to_write(self, filepath):
        """Brings every level up to date, then refuses NaN or Inf weights."""
        self._sync_levels()
        check_finite_weights(self._network_weights(), filepath)

    def resume_schedule(self):
        """Continues nested iteration where `nested_schedule` says it is.

        The fine network is the state that checkpoints hold; the active
        level's weights and batch-norm statistics are restricted from it
        (exactly the level's own when `R P = I`, as for the default
        operators). Called when
        `fit` starts, after callbacks such as `BackupAndRestore` restored the
        variables.
        """
        self._sync_levels()
        level = int(self.nested_schedule[0])
        self.hierarchy.restrict_from_fine(level)
        if level != self.active_level:
            self.active_level = level
            self.make_train_function(force=True)

    def move_finer(self):
        """Makes the next finer level the active one (nested iteration).

        The finer level starts from the prolongated weights, and its
        optimizer from the coarser one's prolongated state if
        `nested_optimizer_state="prolongate"`.
        """
        self.sync_fine_weights()
        coarse = self.active_level
        if self._carries_optimizer_state(coarse):
            optimizer_state.prolongate_optimizer_state(
                self._optimizers[coarse],
                self._optimizers[coarse - 1],
                self.hierarchy.stage_mask,
                self.hierarchy.coarsening_factor,
            )
        self.active_level -= 1
        self.nested_schedule.assign([self.active_level, 0, 0])
        self.make_train_function(force=True)


def _check_not_legacy_h5(filepath):
    """Refuses Keras's legacy H5 format for a whole model, before writing.

    Keras would write `.h5` and `.hdf5` files with its legacy saver, which
    fails part-way on a `MultilevelModel`.
    """
    stem, extension = os.path.splitext(str(filepath))
    if extension not in (".h5", ".hdf5"):
        return
    stem = stem.removesuffix(".weights")
    raise ValueError(
        f"MultilevelModel cannot be saved in Keras's legacy H5 format "
        f"({filepath!s}). Save the whole model with "
        f"model.save('{stem}.keras'), or only its weights with "
        f"model.save_weights('{stem}.weights.h5')."
    )


def _check_cycle_takes_steps(
    num_levels, cycle, pre_smoothing, post_smoothing, coarse_steps,
    nested_iteration,
):
    """Rejects settings under which a batch takes no optimizer step.

    Smoothing is the only step on a level that runs the cycle alone (one
    level, `cycle="none"`, or the coarsest level where nested iteration
    starts); otherwise a cycle also steps on the coarsest level, and without
    any step there its coarse correction is zero.
    """
    if pre_smoothing + post_smoothing:
        return
    only_smoothing = (
        "takes only the pre_smoothing + post_smoothing optimizer steps, and "
        "both are 0, so training"
    )
    if num_levels == 1 or cycle == "none":
        setting = "num_levels=1" if num_levels == 1 else "cycle='none'"
        problem = f"With {setting} each batch {only_smoothing} would do nothing"
    elif not coarse_steps:
        problem = (
            "pre_smoothing, post_smoothing and coarse_steps are all 0: no "
            "level of the cycle takes an optimizer step, so training would "
            "do nothing"
        )
    elif nested_iteration:
        problem = (
            "Nested iteration starts on the coarsest level, where each batch "
            f"{only_smoothing} there would do nothing"
        )
    else:
        return
    raise ValueError(f"{problem}. Set pre_smoothing=1.")


def _check_learning_rate_scale(scale):
    if scale == "dt":
        return
    if (
        isinstance(scale, bool)
        or not isinstance(scale, (int, float))
        or not 0 < scale < math.inf
    ):
        raise ValueError(
            "`coarse_learning_rate_scale` must be 'dt' (scale each coarse "
            "level's learning rate by its step size dt_l / dt_0) or a "
            f"positive number. Received: coarse_learning_rate_scale={scale!r}"
        )


class _NestedIteration(keras.callbacks.Callback):
    """Moves `fit` from the coarsest level up, keeping the fine net in sync.

    Its state is the model's `nested_schedule` and `nested_best` variables.

    Args:
        model: The `MultilevelModel`.
        monitor: The log that patience watches, `"val_loss"` or `"loss"`.
            An epoch whose logs lack it (not validated, under
            `validation_freq`) counts towards `max_level_epochs` only, so
            that losses of one kind are compared with each other.
    """

    def __init__(self, model, monitor):
        super().__init__()
        self._multilevel = model
        self._monitor = monitor
        self._started = False

    def on_epoch_begin(self, epoch, logs=None):
        # After every on_train_begin, so after BackupAndRestore restored.
        model = self._multilevel
        if not self._started:
            model.resume_schedule()
            self._started = True
        if model.level_budget is not None:
            level = level_schedules.level_at(
                model.level_budget, epoch, self.params["epochs"]
            )
            while model.active_level > level:
                model.move_finer()
        model._fine_behind_active_level = model.active_level > 0

    def on_test_begin(self, logs=None):
        self._multilevel._sync_levels()

    def on_train_end(self, logs=None):
        # Not a plain sync: a fit that ran no epoch trained no level.
        self._multilevel._sync_levels()

    def on_epoch_end(self, epoch, logs=None):
        model = self._multilevel
        if model.active_level == 0:
            return
        model._sync_levels()  # unless a validation pass did
        if model.level_budget is not None:
            return  # The next epoch's start moves by the budget.
        monitored = (logs or {}).get(self._monitor)
        level, epochs_on_level, stale_epochs = model.nested_schedule.numpy()
        epochs_on_level += 1
        if monitored is not None:
            if monitored < float(model.nested_best.numpy()):
                model.nested_best.assign(monitored)
                stale_epochs = 0
            else:
                stale_epochs += 1
        model.nested_schedule.assign([level, epochs_on_level, stale_epochs])
        if stale_epochs >= model.level_patience or (
            model.max_level_epochs is not None
            and epochs_on_level >= model.max_level_epochs
        ):
            model.move_finer()


class NonFiniteLossError(ValueError):
    """Raised by `MultilevelModel.fit` at an epoch whose loss is NaN or Inf.

    By the time it is raised the epoch is undone: every level's weights and
    optimizer state are back to where the epoch started. A learning-rate
    sweep can catch it to record the setting as diverged and go on.

    Args:
        message: The explanation, with the problem and its fix.
        monitor: `"loss"` (training) or `"val_loss"` (validation).
        value: The non-finite value of `monitor`.
        epoch: The index of the epoch, from 0 as in Keras's callbacks.

    Example:

    >>> try:
    ...     model.fit(train_ds, epochs=10, validation_data=val_ds)
    ... except keras_mlres.NonFiniteLossError as error:
    ...     print(f"{error.monitor} diverged in epoch {error.epoch + 1}")
    """

    def __init__(self, message, monitor, value, epoch):
        super().__init__(message)
        self.monitor = monitor
        self.value = value
        self.epoch = epoch


class _FiniteLosses(keras.callbacks.Callback):
    """Stops `fit` with a clear error at an epoch whose loss is not finite.

    Copies each epoch's starting state to the host (every level's weights,
    every level's optimizer state, nested iteration's schedule; 2 ms for a
    64-block dense network) and restores it before raising, so the step
    itself needs no check and no host sync.
    """

    def __init__(self, model):
        super().__init__()
        self._multilevel = model
        self._epoch_start = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = None

    def on_train_batch_begin(self, batch, logs=None):
        # Not in on_epoch_begin: this runs after every callback's
        # on_epoch_begin, which may restore or restrict weights.
        if self._epoch_start is None:
            model = self._multilevel
            # The model's own weights hold the fine network and the
            # bookkeeping (work, nested iteration's schedule); the coarse
            # levels' stages are the networks' own.
            variables = {
                id(v): v for v in model.weights + model._network_weights()
            }
            for optimizer in model._optimizers:
                variables.update((id(v), v) for v in optimizer.variables)
            self._epoch_start = [(v, v.numpy()) for v in variables.values()]

    def on_epoch_end(self, epoch, logs=None):
        error = _nonfinite_loss_error(logs or {}, epoch)
        if error is None:
            return
        self.undo_epoch()
        raise error

    def undo_epoch(self):
        """Puts the state back to where the current epoch started."""
        if self._epoch_start is None:
            return
        for variable, value in self._epoch_start:
            variable.assign(value)
        # Every epoch starts with the fine network up to date (nested
        # iteration syncs it at each epoch's end).
        self._multilevel._fine_behind_active_level = False


def _nonfinite_loss_error(logs, epoch):
    """The `NonFiniteLossError` for an epoch's logs, or None if finite."""
    undone = (
        " fit stopped, and the weights and optimizer states are back to "
        f"where epoch {epoch + 1} started."
    )
    loss = logs.get("loss")
    if loss is not None and not math.isfinite(loss):
        return NonFiniteLossError(
            f"The training loss is NaN or Inf ({loss}) in epoch {epoch + 1}. "
            "A tf.data.Dataset's values are not checked before training: "
            "look for NaN or Inf inputs and, under XLA (jit_compile), sparse "
            "labels outside the classifier's classes. If the data are "
            "clean, the learning rate is too high for the network: lower it "
            "or clip the gradients (e.g. Adam(clipnorm=1.0))." + undone,
            "loss", loss, epoch,
        )
    val_loss = logs.get("val_loss")
    if val_loss is not None and not math.isfinite(val_loss):
        return NonFiniteLossError(
            f"The validation loss is NaN or Inf ({val_loss}) after epoch "
            f"{epoch + 1} while the training loss is finite: the validation "
            "data hold NaN or Inf inputs or, under XLA (jit_compile), sparse "
            "labels outside the classifier's classes. Clean them (e.g. "
            "np.nan_to_num, or Dataset.filter) before fit." + undone,
            "val_loss", val_loss, epoch,
        )
    return None

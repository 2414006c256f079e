"""MG/OPT: nonlinear multigrid cycles over network depth.

On level l the cycle minimizes the corrected objective

    h_l(x) = f_l(x) - <v_l, x>,    v_0 = 0,

where f_l is the training loss of the level-l network on the current batch.
One cycle on level l (docs/algorithm.md, section 4):

1. smooth: `pre_smoothing` optimizer steps on h_l;
2. on the coarsest level, `coarse_steps` steps instead, and return;
3. restrict: x_{l+1}^0 = R x_l;
4. correct the coarse objective (first-order coherence):
   v_{l+1} = grad f_{l+1}(x_{l+1}^0) - R_g grad h_l(x_l);
5. recurse: once (V-cycle), twice (W-cycle), or an F-cycle followed by a
   V-cycle (F-cycle);
6. prolongate the coarse correction e = P(x_{l+1} - x_{l+1}^0) and step
   x_l <- x_l + alpha e, with alpha = 1 or found by a backtracking line search
   on h_l that rejects (alpha = 0) a correction that does not decrease h_l;
   the correction of a coarse level that diverged (non-finite loss or
   correction) is always rejected;
7. smooth: `post_smoothing` steps on h_l.

With a single level (or `cycle="none"`) the "cycle" is
`pre_smoothing + post_smoothing` plain optimizer steps.

Under a `tf.distribute` strategy every replica runs the cycle on its part of
the batch. Keras scales each replica's loss by 1 / num_replicas and the
optimizers all-reduce gradients, and restriction, coherence and prolongation
are linear, so the levels see the global batch's gradients; the line search
sums its values over the replicas so that all take the same step.

Gradients are restricted by `R_g = P^T` and weights by the hierarchy's `R`
(average by default). The coarse problem's first smoothing step at
x_{l+1}^0 reuses the gradient `R_g grad h_l(x_l)`, which coherence makes
exact, instead of evaluating it again.

The whole cycle is traced into the training step, so with
`jit_compile=True` it is one XLA computation. Each visit of a level traces its
network once more; that stays cheap because an `ODEStack` traces its blocks as
one loop whatever their number. (One XLA function per level operation, reused
by every visit, measured slower: see benchmarks/cycle_cost.py.)
"""

import dataclasses
import threading
from typing import List, Optional

import tensorflow as tf

from keras_mlres.hierarchy import read_values

CYCLES = ("V", "W", "F", "none")
OPTIMIZER_STATES = ("keep", "reset")

# Armijo sufficient-decrease constant of the line search.
_ARMIJO_C1 = 1e-4
# A forward pass costs about a third of a forward+backward pass.
_FORWARD_COST = 1.0 / 3.0


def inner_product(xs, ys):
    """Returns `sum_i <xs[i], ys[i]>` over two lists of tensors."""
    return tf.add_n([tf.reduce_sum(x * y) for x, y in zip(xs, ys)])


def linear_correction(value, v, xs):
    """Returns the corrected objective `value - <v, xs>` in value's dtype."""
    return value - tf.cast(inner_product(v, xs), value.dtype)


def add_scaled(xs, alpha, ys):
    """Returns the list `xs[i] + alpha * ys[i]`, in the dtype of each `xs[i]`.

    The cycle's step sizes are float32 whatever the network's dtype.
    """
    return [x + tf.cast(alpha, x.dtype) * y for x, y in zip(xs, ys)]


def subtract(xs, ys):
    """Returns the list `xs[i] - ys[i]`."""
    return [x - y for x, y in zip(xs, ys)]


def all_finite(tensors):
    """Returns whether every entry of a list of tensors is finite."""
    return tf.reduce_all([tf.reduce_all(tf.math.is_finite(t)) for t in tensors])


def sum_over_replicas(value):
    """Sums a per-replica scalar over the replicas of a tf.distribute strategy.

    Keras scales each replica's loss by 1 / num_replicas, so the sum is the
    global batch's value; outside a strategy the value is returned as is.
    """
    if not _replicated():
        return value
    return tf.distribute.get_replica_context().all_reduce(
        tf.distribute.ReduceOp.SUM, value
    )


def assign_values(variables, values):
    """Assigns a list of tensors to a list of variables."""
    for variable, value in zip(variables, values):
        variable.assign(value)


@dataclasses.dataclass
class Evaluation:
    """The corrected objective h and its gradient at one point of a level.

    Attributes:
        value: h_l(x), a scalar tensor.
        gradients: grad h_l(x), a list matching the level's variables.
        weights: The point x, where the caller has it at hand (else None).
    """

    value: tf.Tensor
    gradients: List[tf.Tensor]
    weights: Optional[List[tf.Tensor]] = None


class Level:
    """One level of the cycle: a network, its variables and its optimizer.

    Provides the level's numerical work as functions of the batch
    `data = (x, y, sample_weight)` and the coherence term `v` (a list of
    tensors matching `variables`, or None for v = 0), to be traced inside the
    training step.

    Args:
        index: The level number (0 is the finest).
        model: The level's `keras.Model`.
        optimizer: A Keras optimizer for `model.trainable_variables`; built
            here if it is not built yet.
        loss_fn: Callable `(model, x, y, sample_weight) -> (loss, y_pred)`
            evaluating the training loss f_l of `model` on a batch.
        cost: Modelled cost of one gradient evaluation in fine-gradient
            equivalents.
        reset_optimizer: Whether `reset_optimizer_state` zeroes the
            optimizer's slots and iteration count (else it does nothing).
    """

    def __init__(
        self,
        index,
        model,
        optimizer,
        loss_fn,
        cost=1.0,
        reset_optimizer=False,
    ):
        self.index = index
        self.model = model
        self.variables = model.trainable_variables
        self._state = model.non_trainable_variables
        self.optimizer = optimizer
        self.cost = cost
        self._loss_fn = loss_fn
        self._optimizer_state = build_optimizer(optimizer, self.variables)
        self._reset_optimizer = reset_optimizer

    def _objective(self, data, v):
        x, y, sample_weight = data
        loss, y_pred = self._loss_fn(self.model, x, y, sample_weight)
        if v is not None:
            loss = linear_correction(loss, v, self.variables)
        return loss, y_pred

    def value(self, data, v):
        """Returns h at the current weights (a forward pass).

        The pass is a probe (the line search evaluates trial weights with
        it): state that a training-mode pass updates, such as batch-norm
        moving statistics, is restored afterwards.
        """
        state = read_values(self._state)
        value = self._objective(data, v)[0]
        assign_values(self._state, state)
        return value

    def value_and_gradient(self, data, v):
        """Returns h, grad h and the predictions at the current weights."""
        with tf.GradientTape() as tape:
            value, y_pred = self._objective(data, v)
        return value, tape.gradient(value, self.variables), y_pred

    def step(self, data, v):
        """One optimizer step on h at the current weights; returns h."""
        value, gradients, _ = self.value_and_gradient(data, v)
        self.apply(gradients)
        return value

    def apply(self, gradients):
        """Applies one optimizer update with the given gradients of h."""
        self.optimizer.apply(gradients, self.variables)

    def reset_optimizer_state(self):
        """Zeroes the optimizer slots (momenta) if this level resets them."""
        if self._reset_optimizer:
            for variable in self._optimizer_state:
                variable.assign(tf.zeros_like(variable))

    def discard_optimizer_state(self, condition):
        """Zeroes the optimizer slots where the scalar bool `condition` holds.

        Used when the level diverged: its non-finite momenta would otherwise
        poison every later visit under `coarse_optimizer_state="keep"`.
        """
        for variable in self._optimizer_state:
            variable.assign(
                tf.where(condition, tf.zeros_like(variable), variable.value)
            )


def built_on_other_variables(optimizer, variables):
    """Whether `optimizer` is already built, on variables other than these.

    Args:
        optimizer: A Keras optimizer.
        variables: The variables it is meant to update.
    """
    if not optimizer.built:
        return False
    known = {id(v) for v in optimizer._trainable_variables}
    return known != {id(v) for v in variables}


def build_optimizer(optimizer, variables):
    """Builds an optimizer on `variables` and returns its resettable state.

    Args:
        optimizer: A Keras optimizer, unbuilt or built on `variables` (as
            the optimizers of a model compiled again are).
        variables: The variables it will update.

    Returns:
        Its variables (slots such as momenta) and the iteration counter; not
        the learning rate.

    Raises:
        ValueError: If the optimizer is already built on other variables.
    """
    if built_on_other_variables(optimizer, variables):
        raise ValueError(
            f"Optimizer '{optimizer.name}' is already built on other "
            "variables. Give each level a fresh optimizer instance."
        )
    if not optimizer.built:
        optimizer.build(variables)
    # A float learning rate is a variable of the optimizer too.
    learning_rate = getattr(optimizer, "_learning_rate", None)
    slots = [
        v
        for v in optimizer.variables
        if v is not optimizer.iterations and v is not learning_rate
    ]
    return slots + [optimizer.iterations]


@dataclasses.dataclass
class CycleResult:
    """What one cycle reports.

    Attributes:
        loss: The fine training loss f_0 at the start of the cycle.
        y_pred: The fine network's predictions at the start of the cycle.
        level_losses: For each coarse level l >= 1, f_l at its restricted
            starting point x_l^0 of its first visit (None if not visited).
        step_sizes: For each level with a coarser one (0 .. L-2), the
            coarse-correction step alpha of its last visit (None if the
            cycle made no coarse correction on that level).
        diverged: For each coarse level l >= 1, whether a correction it
            returned this cycle was non-finite and therefore rejected (None
            if not visited).
        work: Fine-gradient equivalents spent by the cycle (modelled).
    """

    loss: tf.Tensor
    y_pred: tf.Tensor
    level_losses: List[tf.Tensor]
    step_sizes: List[tf.Tensor]
    diverged: List[tf.Tensor]
    work: tf.Tensor


@dataclasses.dataclass
class _Tally:
    """What a cycle accumulates while it runs (see `CycleResult`)."""

    work: tf.Tensor
    level_losses: List[Optional[tf.Tensor]]
    diverged: List[Optional[tf.Tensor]]
    step_sizes: List[Optional[tf.Tensor]]


class MGOPT:
    """The MG/OPT cycle over the levels of a `Hierarchy`.

    Args:
        hierarchy: The `keras_mlres.Hierarchy` of networks.
        levels: One `Level` per hierarchy level, finest first.
        cycle: `"V"`, `"W"`, `"F"`, or `"none"` (no coarse correction: the
            top level takes `pre_smoothing + post_smoothing` plain steps).
        pre_smoothing: Optimizer steps on h_l before the coarse correction.
        post_smoothing: Optimizer steps on h_l after the coarse correction.
        coarse_steps: Optimizer steps on the coarsest level.
        line_search: If True, the coarse correction step alpha is found by
            backtracking (Armijo) on h_l from alpha = 1, halving at most
            `max_backtracking` times; a correction that does not decrease h_l
            is rejected (alpha = 0). If False, alpha = 1.
        max_backtracking: Number of step sizes the line search tries.
    """

    def __init__(
        self,
        hierarchy,
        levels,
        cycle="V",
        pre_smoothing=1,
        post_smoothing=1,
        coarse_steps=2,
        line_search=True,
        max_backtracking=4,
    ):
        self.hierarchy = hierarchy
        self.levels = levels
        self.cycle = cycle
        self.pre_smoothing = pre_smoothing
        self.post_smoothing = post_smoothing
        self.coarse_steps = coarse_steps
        self.line_search = line_search
        self.max_backtracking = max_backtracking
        self._replica = threading.local()
        self._start_tally()

    def _start_tally(self):
        """Resets what a cycle reports: work, level losses, step sizes.

        The tally is per thread: tf.distribute.MirroredStrategy traces each
        replica's step in its own thread, concurrently.
        """
        self._replica.tally = _Tally(
            work=tf.constant(0.0),
            level_losses=[None] * self.num_levels,
            diverged=[None] * self.num_levels,
            step_sizes=[None] * max(self.num_levels - 1, 0),
        )

    @property
    def _tally(self):
        return self._replica.tally

    @property
    def num_levels(self):
        """The number of levels of the cycle."""
        return len(self.levels)

    def __call__(self, data, top=0):
        """Runs one cycle on the batch `data = (x, y, sample_weight)`.

        Args:
            data: The batch.
            top: The level the cycle starts on (0, the finest, except during
                nested iteration). Its objective is uncorrected (v = 0).

        Returns:
            A `CycleResult`; `loss` and `y_pred` are those of level `top`.
        """
        self._start_tally()
        level = self.levels[top]
        value, gradients, y_pred = level.value_and_gradient(data, None)
        self._count(level)
        start = Evaluation(value, gradients)
        if top == self.num_levels - 1 or self.cycle == "none":
            steps = self.pre_smoothing + self.post_smoothing
            self.smooth(level, data, None, steps, start)
        else:
            self.run_cycle(top, data, None, start, self.cycle)
        return CycleResult(
            loss=value,
            y_pred=y_pred,
            level_losses=self._tally.level_losses[1:],
            step_sizes=self._tally.step_sizes,
            diverged=self._tally.diverged[1:],
            work=self._tally.work,
        )

    def _count(self, level):
        self._tally.work = self._tally.work + level.cost

    def run_cycle(self, index, data, v, start, cycle):
        """One cycle on level `index`, starting at the current weights.

        Args:
            index: The level.
            data: The batch.
            v: The coherence term of the level: None on the level the cycle
                starts on (`top`), which is the only level that is not a
                coarse visit.
            start: The `Evaluation` of h at the current weights, if already
                known (else None).
            cycle: `"V"`, `"W"` or `"F"`.
        """
        level = self.levels[index]
        if v is not None:
            # Under nested iteration the top may be a coarse level, whose
            # optimizer state must carry over from batch to batch.
            level.reset_optimizer_state()
        if index == self.num_levels - 1:
            self.smooth(level, data, v, self.coarse_steps, start)
            return
        if self.smooth(level, data, v, self.pre_smoothing, start):
            start = None
        current = start or self.evaluate(level, data, v)
        weights = read_values(level.variables)

        coarse = self.levels[index + 1]
        coarse_start, coarse_v = self.restrict(index, data, current)
        for visit, coarse_cycle in enumerate(self.coarse_cycles(cycle)):
            self.run_cycle(
                index + 1,
                data,
                coarse_v,
                coarse_start if visit == 0 else None,
                coarse_cycle,
            )
        correction = self.prolongate_correction(coarse, coarse_start.weights)
        # The replicas' sum, so that all replicas take the same decision.
        coarse_value = sum_over_replicas(coarse_start.value)
        diverged = tf.logical_not(
            tf.logical_and(
                tf.math.is_finite(coarse_value), all_finite(correction)
            )
        )
        coarse.discard_optimizer_state(diverged)
        self._report_divergence(index + 1, diverged)
        self._tally.step_sizes[index] = self.correct(
            level, data, v, weights, correction, current, diverged
        )
        self.smooth(level, data, v, self.post_smoothing)

    def _report_divergence(self, index, diverged):
        previous = self._tally.diverged[index]
        self._tally.diverged[index] = (
            diverged if previous is None else tf.logical_or(previous, diverged)
        )

    def coarse_cycles(self, cycle):
        """The cycles to run on the next coarser level for a `cycle` here."""
        return {"V": ["V"], "W": ["W", "W"], "F": ["F", "V"]}[cycle]

    def evaluate(self, level, data, v):
        """Evaluates h and its gradient at the current weights of a level."""
        value, gradients, _ = level.value_and_gradient(data, v)
        self._count(level)
        return Evaluation(value, gradients)

    def smooth(self, level, data, v, steps, start=None):
        """Takes `steps` optimizer steps on h; returns whether any was taken.

        A known `start` evaluation at the current weights is used for the
        first step instead of evaluating the gradient again.
        """
        for step in range(steps):
            if step == 0 and start is not None:
                level.apply(start.gradients)
            else:
                level.step(data, v)
                self._count(level)
        return steps > 0

    def restrict(self, index, data, current):
        """Restricts level `index` and builds the coarse corrected problem.

        Args:
            index: The finer level.
            data: The batch.
            current: `Evaluation` of h at the finer level's current weights.

        Returns:
            `(start, v)`: the `Evaluation` of the coarse corrected objective
            at x^0 = R x (whose gradient is `R_g grad h` by construction, and
            whose `weights` are x^0) and the coarse coherence term v.
        """
        coarse = self.levels[index + 1]
        restricted = self.hierarchy.restrict(index)
        value, gradients, _ = coarse.value_and_gradient(data, None)
        self._count(coarse)
        if self._tally.level_losses[index + 1] is None:  # the first visit
            self._tally.level_losses[index + 1] = value
        restricted_gradients = self.hierarchy.restrict_gradients(
            current.gradients
        )
        v = subtract(gradients, restricted_gradients)
        start = Evaluation(
            linear_correction(value, v, restricted),
            restricted_gradients,
            restricted,
        )
        return start, v

    def prolongate_correction(self, coarse, coarse_weights):
        """Returns e = P(x_H - x_H^0) for the level above `coarse`."""
        return self.hierarchy.prolongate_weights(
            subtract(read_values(coarse.variables), coarse_weights)
        )

    def correct(
        self, level, data, v, weights, correction, current, diverged=False
    ):
        """Sets the weights to `weights + alpha * correction`; returns alpha.

        The correction of a coarse level that `diverged` (a bool tensor: its
        loss or the correction is not finite) is rejected: alpha = 0 and the
        weights are restored exactly.
        """
        correction = [
            tf.where(diverged, tf.zeros_like(e), e) for e in correction
        ]
        if self.line_search:
            step_size = self.backtrack(
                level, data, v, weights, correction, current
            )
        else:
            step_size = tf.constant(1.0)
        step_size = tf.where(diverged, 0.0, step_size)
        assign_values(level.variables, add_scaled(weights, step_size, correction))
        return step_size

    def backtrack(self, level, data, v, weights, correction, current):
        """Armijo backtracking on h from alpha = 1; 0 if nothing decreases h.

        Tries alpha = 1, 1/2, ..., 2^(1 - max_backtracking) and accepts the
        first with `h(x + alpha e) <= h(x) + c1 alpha <grad h(x), e>` and
        `h(x + alpha e) < h(x)`. On one device the tries stop at the first
        accepted step (a `tf.while_loop`); under a tf.distribute strategy every
        step size is tried, because the replicas' sum of h cannot be taken
        inside a loop. Either way the work counts the tries up to the first
        accepted one (all of them if none is), so that it measures the same
        computation on any number of replicas.
        """
        # Under tf.distribute each replica holds its part of h and of the
        # gradient; all replicas must take the same decision on the global sum.
        current_value = sum_over_replicas(current.value)
        slope = tf.minimum(
            sum_over_replicas(inner_product(current.gradients, correction)), 0.0
        )

        def decreases(step_size):
            assign_values(
                level.variables, add_scaled(weights, step_size, correction)
            )
            value = sum_over_replicas(level.value(data, v))
            decrease = _ARMIJO_C1 * tf.cast(step_size, slope.dtype) * slope
            return tf.logical_and(
                tf.logical_and(
                    value <= current_value + decrease,
                    value < current_value,
                ),
                tf.math.is_finite(value),
            )

        if _replicated():
            step_sizes = [0.5**k for k in range(self.max_backtracking)]
            accepted = [decreases(step_size) for step_size in step_sizes]
            step_size = tf.constant(0.0)
            tries = tf.constant(self.max_backtracking)
            for k in reversed(range(self.max_backtracking)):
                step_size = tf.where(accepted[k], step_sizes[k], step_size)
                tries = tf.where(accepted[k], k + 1, tries)
        else:
            step_size, tries = self._first_decrease(decreases)
        self._tally.work = self._tally.work + (
            tf.cast(tries, tf.float32) * level.cost * _FORWARD_COST
        )
        return step_size

    def _first_decrease(self, decreases):
        """Halves alpha from 1 until `decreases(alpha)`; returns (alpha, tries)."""

        def try_step(step_size, accepted, tries):
            del accepted
            ok = decreases(step_size)
            return tf.where(ok, step_size, step_size / 2.0), ok, tries + 1

        step_size, accepted, tries = tf.while_loop(
            lambda step_size, accepted, tries: tf.logical_not(accepted),
            try_step,
            (tf.constant(1.0), tf.constant(False), tf.constant(0)),
            maximum_iterations=self.max_backtracking,
        )
        return tf.where(accepted, step_size, 0.0), tries


def _replicated():
    """Whether the cycle runs in a replica of a multi-replica strategy."""
    context = tf.distribute.get_replica_context()
    return context is not None and context.num_replicas_in_sync > 1

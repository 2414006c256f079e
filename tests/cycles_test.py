"""Tests of the MG/OPT cycle: coherence, globalization, structure, state."""

import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from keras_mlres import cycles
from keras_mlres import models as mlres_models
from keras_mlres.hierarchy import Hierarchy
from keras_mlres.layers import ODEStack
from keras_mlres.layers import ResidualODEBlock

_LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
_LOSS64 = keras.losses.SparseCategoricalCrossentropy(
    from_logits=True, dtype="float64"
)


class _CountForwardPasses(keras.layers.Layer):
    """Identity layer counting how often it is traced (= forward passes)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.calls = 0

    def call(self, inputs):
        self.calls += 1
        return inputs


def _fine_model(width=4, num_blocks=8, dtype=None, counter=None, seed=0):
    keras.utils.set_random_seed(seed)
    layers = [
        keras.Input((2,), dtype=dtype),
        keras.layers.Dense(width, activation="tanh", dtype=dtype),
    ]
    if counter is not None:
        layers.append(counter)
    layers += [
        ODEStack(
            ResidualODEBlock(width, activation="tanh"),
            num_blocks=num_blocks,
            time_horizon=2.0,
            dtype=dtype,
        ),
        keras.layers.Dense(3, dtype=dtype),
    ]
    return keras.Sequential(layers)


def _conv_fine_model(dtype=None, seed=0):
    keras.utils.set_random_seed(seed)
    return mlres_models.ode_resnet(
        (6, 6, 2), 3, stages=[(3, 4, 1.0), (4, 4, 1.0)],
        activation="tanh", normalization="batch", dtype=dtype,
    )


def _loss_fn(model, x, y, sample_weight):
    y_pred = model(x, training=True)
    loss = _LOSS64 if y_pred.dtype == tf.float64 else _LOSS
    return loss(y, y_pred, sample_weight), y_pred


def _mgopt(fine, num_levels, optimizer=None, interpolation="constant", **kw):
    hierarchy = Hierarchy(fine, num_levels, interpolation=interpolation)
    optimizer = optimizer or (lambda: keras.optimizers.SGD(0.1))
    levels = [
        cycles.Level(index, model, optimizer(), _loss_fn)
        for index, model in enumerate(hierarchy.models)
    ]
    return cycles.MGOPT(hierarchy, levels, **kw)


def _batch(seed=0, n=32, dtype="float32", shape=(2,)):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n,) + shape).astype(dtype)
    y = rng.integers(0, 3, size=(n,)).astype("int32")
    return tf.constant(x), tf.constant(y), None


def _relative_error(actual, expected):
    actual = np.concatenate([np.ravel(a) for a in actual])
    expected = np.concatenate([np.ravel(e) for e in expected])
    return np.linalg.norm(actual - expected) / np.linalg.norm(expected)


class VectorOpsTest(tf.test.TestCase):
    def test_inner_product_add_scaled_subtract(self):
        xs = [tf.constant([1.0, 2.0]), tf.constant([[3.0]])]
        ys = [tf.constant([4.0, 5.0]), tf.constant([[6.0]])]
        self.assertAllClose(cycles.inner_product(xs, ys), 32.0)
        self.assertAllClose(cycles.add_scaled(xs, 2.0, ys)[0], [9.0, 12.0])
        self.assertAllClose(cycles.subtract(xs, ys)[1], [[-3.0]])


class CoherenceTest(tf.test.TestCase, parameterized.TestCase):
    """grad h_{l+1}(R x_l) == R_g grad h_l(x_l) (docs/algorithm.md 4)."""

    @parameterized.named_parameters(
        ("constant", "constant", False),
        ("linear", "linear", False),
        # Two conv stages with batch normalization (training mode: the loss
        # is a deterministic function of the weights on a fixed batch).
        ("conv_constant", "constant", True),
        ("conv_linear", "linear", True),
    )
    def test_coarse_gradient_at_restricted_point(self, interpolation, conv):
        if conv:
            fine = _conv_fine_model(dtype="float64")
            data = _batch(dtype="float64", shape=(6, 6, 2))
        else:
            fine = _fine_model(dtype="float64")
            data = _batch(dtype="float64")
        mgopt = _mgopt(fine, 3, interpolation=interpolation)
        # Level 0 -> 1 with v_0 = 0, then level 1 -> 2 with the nonzero v_1.
        v = None
        for index in range(2):
            level, coarse = mgopt.levels[index], mgopt.levels[index + 1]
            current = mgopt.evaluate(level, data, v)
            start, coarse_v = mgopt.restrict(index, data, current)
            value, gradients, _ = coarse.value_and_gradient(data, coarse_v)
            expected = mgopt.hierarchy.restrict_gradients(current.gradients)
            self.assertLess(_relative_error(gradients, expected), 1e-5)
            self.assertAllClose(start.value, value, rtol=1e-12)
            v = coarse_v

    def test_first_coarse_step_equals_restricted_fine_gradient_step(self):
        # The cycle reuses R_g grad h as the coarse step's gradient; plain SGD
        # on the coarse corrected objective must move by the same amount.
        fine = _fine_model(dtype="float64")
        mgopt = _mgopt(fine, 2)
        data = _batch(dtype="float64")
        current = mgopt.evaluate(mgopt.levels[0], data, None)
        _, v = mgopt.restrict(0, data, current)
        coarse = mgopt.levels[1]
        before = cycles.read_values(coarse.variables)
        coarse.step(data, v)
        moved = cycles.subtract(cycles.read_values(coarse.variables), before)
        expected = [
            -0.1 * g
            for g in mgopt.hierarchy.restrict_gradients(current.gradients)
        ]
        self.assertLess(_relative_error(moved, expected), 1e-5)


class CorrectionTest(tf.test.TestCase, parameterized.TestCase):
    """x_0 <- x_0 + P(x_1 - x_1^0) on every weight (docs/algorithm.md 4)."""

    @parameterized.parameters(False, True)
    def test_cycle_matches_steps_taken_by_hand(self, traced):
        # Shared layers (opening Dense, classifier) are trained on the coarse
        # level too; P is the identity on them, so their coarse updates must
        # reach the fine network.
        options = dict(
            pre_smoothing=0, post_smoothing=0, coarse_steps=3,
            line_search=False,
        )
        data = _batch(dtype="float64")
        by_hand = _mgopt(_fine_model(dtype="float64"), 2, **options)
        fine, coarse = by_hand.levels
        fine_start = cycles.read_values(fine.variables)
        current = by_hand.evaluate(fine, data, None)
        start, v = by_hand.restrict(0, data, current)
        coarse_start = cycles.read_values(coarse.variables)
        by_hand.smooth(coarse, data, v, 3, start)
        correction = by_hand.hierarchy.prolongate_weights(
            cycles.subtract(cycles.read_values(coarse.variables), coarse_start)
        )
        expected = cycles.add_scaled(fine_start, 1.0, correction)

        mgopt = _mgopt(_fine_model(dtype="float64"), 2, **options)
        before = cycles.read_values(mgopt.levels[0].variables)
        run = tf.function(lambda data: mgopt(data).loss) if traced else mgopt
        run(data)
        after = [v.numpy() for v in mgopt.levels[0].variables]
        self.assertAllClose(after, expected, rtol=1e-12, atol=1e-12)
        for is_stage, old, new in zip(
            mgopt.hierarchy.stage_mask, before, after
        ):
            if not is_stage:
                self.assertNotAllClose(old.numpy(), new)

    @parameterized.parameters(False, True)
    def test_float64_cycle(self, line_search):
        mgopt = _mgopt(
            _fine_model(dtype="float64"), 3, line_search=line_search
        )
        data = _batch(dtype="float64")
        before = mgopt.levels[0].value(data, None)
        loss = tf.function(lambda data: mgopt(data).loss)(data)
        self.assertEqual(loss.dtype, tf.float64)
        self.assertLess(mgopt.levels[0].value(data, None), before)


class LineSearchTest(tf.test.TestCase):
    def _fine_loss_changes(self, line_search, starts=100):
        fine = _fine_model()
        mgopt = _mgopt(
            fine,
            3,
            optimizer=lambda: keras.optimizers.SGD(3.0),
            pre_smoothing=0,
            post_smoothing=0,
            coarse_steps=3,
            line_search=line_search,
        )
        fine_level = mgopt.levels[0]

        @tf.function
        def cycle(data):
            before = fine_level.value(data, None)
            mgopt(data)
            return before, fine_level.value(data, None)

        rng = np.random.default_rng(1)
        changes = []
        for start in range(starts):
            for variable in fine.trainable_variables:
                variable.assign(rng.normal(size=variable.shape))
            before, after = cycle(_batch(seed=start))
            changes.append(float(after - before))
        return np.array(changes)

    def test_cycle_never_increases_fine_loss(self):
        changes = self._fine_loss_changes(line_search=True)
        self.assertLessEqual(changes.max(), 0.0)
        self.assertLess(changes.min(), 0.0)  # it does make progress

    def test_without_line_search_the_same_cycles_can_increase_the_loss(self):
        # Shows that the check above is not vacuous.
        self.assertGreater(self._fine_loss_changes(line_search=False).max(), 0)


class CycleStructureTest(tf.test.TestCase, parameterized.TestCase):
    """Counts forward passes traced into one cycle (no redundant work)."""

    @parameterized.named_parameters(
        # initial eval (reused by the first pre-smoothing step), coherence
        # eval, coarse eval at R x (reused by the first coarse step), second
        # coarse step, line-search value, post-smoothing step.
        ("v2_line_search", "V", 2, 1, 1, 2, True, 6),
        ("v2", "V", 2, 1, 1, 2, False, 5),
        # Without pre-smoothing the initial eval serves coherence too.
        ("v2_no_pre", "V", 2, 0, 1, 2, False, 4),
        ("single_level", "V", 1, 1, 0, 2, True, 1),
        ("single_level_two_steps", "V", 1, 1, 1, 2, True, 2),
        # Level 1 is visited twice, level 2 four times (hand count: 3 at level
        # 0 before recursing, 6 and 7 for the two level-1 visits, 1 post).
        ("w3", "W", 3, 1, 1, 2, False, 17),
        # F-cycle: level 1 runs an F-cycle (6) then a V-cycle (5).
        ("f3", "F", 3, 1, 1, 2, False, 15),
    )
    def test_forward_pass_count(
        self, cycle, levels, pre, post, coarse, line_search, expected
    ):
        counter = _CountForwardPasses()
        mgopt = _mgopt(
            _fine_model(counter=counter),
            levels,
            cycle=cycle,
            pre_smoothing=pre,
            post_smoothing=post,
            coarse_steps=coarse,
            line_search=line_search,
        )
        counter.calls = 0
        tf.function(lambda data: mgopt(data).loss).get_concrete_function(
            _batch()
        )
        self.assertEqual(counter.calls, expected)

    @parameterized.named_parameters(
        # From level 1 of 3, a V-cycle is the two-level cycle of v2_line_search.
        ("v_from_level_1", "V", 1, 6),
        # On the coarsest level: pre + post plain steps, the first reusing the
        # initial evaluation.
        ("coarsest", "V", 2, 2),
        ("none", "none", 0, 2),
    )
    def test_forward_pass_count_from_top_level(self, cycle, top, expected):
        counter = _CountForwardPasses()
        mgopt = _mgopt(_fine_model(counter=counter), 3, cycle=cycle)
        counter.calls = 0
        tf.function(lambda data: mgopt(data, top=top).loss).get_concrete_function(
            _batch()
        )
        self.assertEqual(counter.calls, expected)

    def test_cycle_from_coarse_level_leaves_finer_levels_alone(self):
        mgopt = _mgopt(_fine_model(), 3)
        fine_before = cycles.read_values(mgopt.levels[0].variables)
        stage_before = cycles.read_values(mgopt.levels[1].variables)
        result = mgopt(_batch(), top=1)
        self.assertIsNone(result.level_losses[0])
        self.assertIsNone(result.step_sizes[0])
        self.assertIsNotNone(result.step_sizes[1])
        for is_stage, before, after in zip(
            mgopt.hierarchy.stage_mask, fine_before, mgopt.levels[0].variables
        ):
            if is_stage:  # shared weights are trained on every level
                self.assertAllEqual(before, after)
        self.assertNotAllClose(stage_before[2], mgopt.levels[1].variables[2])

    def test_work_counts_coarse_gradients_at_their_cost(self):
        mgopt = _mgopt(_fine_model(), 2, line_search=False)
        mgopt.levels[1].cost = 0.5
        result = mgopt(_batch())
        # 3 fine gradient evaluations, 2 coarse ones at half the cost.
        self.assertAllClose(result.work, 3 + 2 * 0.5)

    def test_level_losses_are_those_of_the_first_visit(self):
        # Up to the first visit of level 2 a W-cycle does what a V-cycle
        # does; its second visit starts from other weights.
        v_cycle = _mgopt(_fine_model(), 3, cycle="V")
        w_cycle = _mgopt(_fine_model(), 3, cycle="W")
        v_losses = v_cycle(_batch()).level_losses
        w_losses = w_cycle(_batch()).level_losses
        self.assertAllClose(w_losses, v_losses, rtol=1e-6)

    def test_cycle_reports_losses_and_step_sizes(self):
        mgopt = _mgopt(_fine_model(), 3)
        result = mgopt(_batch())
        self.assertLen(result.level_losses, 2)
        self.assertLen(result.step_sizes, 2)
        for alpha in result.step_sizes:
            self.assertBetween(float(alpha), 0.0, 1.0)
        self.assertEqual(result.y_pred.shape, (32, 3))


class ProbeTest(tf.test.TestCase, parameterized.TestCase):
    """`Level.value` probes: no trace in batch-norm statistics."""

    @parameterized.parameters(False, True)
    def test_value_restores_statistics_that_a_gradient_pass_updates(
        self, jit_compile
    ):
        model = _conv_fine_model()
        level = cycles.Level(0, model, keras.optimizers.SGD(0.1), _loss_fn)
        rng = np.random.default_rng(0)
        data = (
            tf.constant(rng.normal(size=(8, 6, 6, 2)).astype("float32")),
            tf.constant(rng.integers(0, 3, 8).astype("int32")),
            None,
        )
        statistics = model.non_trainable_variables
        self.assertNotEmpty(statistics)
        before = [np.array(s) for s in statistics]
        tf.function(level.value, jit_compile=jit_compile)(data, None)
        for variable, value in zip(statistics, before):
            self.assertAllEqual(variable, value)
        tf.function(level.value_and_gradient, jit_compile=jit_compile)(
            data, None
        )
        self.assertTrue(
            any(not np.array_equal(v, b) for v, b in zip(statistics, before))
        )


class OptimizerStateTest(tf.test.TestCase, parameterized.TestCase):
    def test_reset_zeroes_slots_and_iterations_but_not_learning_rate(self):
        model = _fine_model()
        optimizer = keras.optimizers.Adam(0.01)
        level = cycles.Level(1, model, optimizer, _loss_fn, reset_optimizer=True)
        level.step(_batch(), None)
        self.assertEqual(int(optimizer.iterations), 1)
        level.reset_optimizer_state()
        self.assertEqual(int(optimizer.iterations), 0)
        for variable in optimizer.variables:
            if variable is not optimizer.iterations and variable.shape.rank:
                self.assertAllEqual(variable, tf.zeros_like(variable))
        self.assertAllClose(optimizer.learning_rate, 0.01)

    @parameterized.parameters(0.01, "schedule")
    def test_reset_of_an_optimizer_built_before(self, learning_rate):
        # A recompiled model passes its built optimizers again.
        if learning_rate == "schedule":
            learning_rate = keras.optimizers.schedules.ExponentialDecay(
                0.01, 10, 0.5
            )
        model = _fine_model()
        optimizer = keras.optimizers.Adam(learning_rate)
        optimizer.build(model.trainable_variables)
        level = cycles.Level(1, model, optimizer, _loss_fn, reset_optimizer=True)
        level.step(_batch(), None)
        level.reset_optimizer_state()
        self.assertEqual(int(optimizer.iterations), 0)
        for variable in optimizer.variables:
            if variable.shape.rank:
                self.assertAllEqual(variable, tf.zeros_like(variable))
        self.assertAllClose(optimizer.learning_rate, 0.01)

    def test_keep_leaves_state_alone(self):
        optimizer = keras.optimizers.Adam(0.01)
        level = cycles.Level(1, _fine_model(), optimizer, _loss_fn)
        level.step(_batch(), None)
        level.reset_optimizer_state()
        self.assertEqual(int(optimizer.iterations), 1)

    @parameterized.parameters(1, 2)
    def test_top_level_of_a_cycle_keeps_its_state(self, top):
        # Nested iteration runs cycles from a coarse level: that level's
        # optimizer must accumulate its steps, the levels below it reset.
        hierarchy = Hierarchy(_fine_model(), 4)
        levels = [
            cycles.Level(
                index, model, keras.optimizers.Adam(0.01), _loss_fn,
                reset_optimizer=index > 0,
            )
            for index, model in enumerate(hierarchy.models)
        ]
        mgopt = cycles.MGOPT(hierarchy, levels, pre_smoothing=1, post_smoothing=1)
        for _ in range(3):
            mgopt(_batch(), top=top)
        self.assertEqual(int(levels[top].optimizer.iterations), 6)
        self.assertEqual(int(levels[top + 1].optimizer.iterations), 2)

    def test_optimizer_built_on_other_variables_is_rejected(self):
        optimizer = keras.optimizers.SGD()
        optimizer.build(_fine_model(seed=1).trainable_variables)
        with self.assertRaisesRegex(ValueError, "already built on other"):
            cycles.Level(1, _fine_model(), optimizer, _loss_fn)


def _faulty_loss_fn(fault):
    """A level loss made non-finite: `fault` is "nan", "inf" or "+inf"."""

    def loss_fn(model, x, y, sample_weight):
        loss, y_pred = _loss_fn(model, x, y, sample_weight)
        if fault == "+inf":  # an infinite value with finite gradients
            return loss + float("inf"), y_pred
        return loss * float(fault), y_pred

    return loss_fn


class NumericalFaultTest(tf.test.TestCase, parameterized.TestCase):
    """A coarse level whose loss is not finite must not reach the fine net."""

    def _cycle_with_fault(self, num_levels, faulty, fault, **kw):
        hierarchy = Hierarchy(_fine_model(), num_levels)
        optimizers = [keras.optimizers.SGD(0.1)] + [
            keras.optimizers.Adam(0.01) for _ in range(num_levels - 1)
        ]
        levels = [
            cycles.Level(
                index,
                model,
                optimizer,
                _faulty_loss_fn(fault) if index == faulty else _loss_fn,
            )
            for index, (model, optimizer) in enumerate(
                zip(hierarchy.models, optimizers)
            )
        ]
        mgopt = cycles.MGOPT(hierarchy, levels, **kw)
        return mgopt, mgopt(_batch())

    @parameterized.product(
        fault=["nan", "inf", "+inf"],
        line_search=[True, False],
        num_levels=[2, 3],
        cycle=["V", "W"],
    )
    def test_diverged_level_one_leaves_fine_weights_as_smoothing_left_them(
        self, fault, line_search, num_levels, cycle
    ):
        mgopt, result = self._cycle_with_fault(
            num_levels, 1, fault, cycle=cycle, line_search=line_search,
            pre_smoothing=1, post_smoothing=0,
        )
        # What the fine level's one smoothing step alone gives.
        reference = _fine_model()
        keras.optimizers.SGD(0.1).apply(
            _gradients(reference, _batch()),
            reference.trainable_variables,
        )
        self.assertAllClose(
            mgopt.levels[0].variables, reference.trainable_variables,
            rtol=1e-6, atol=1e-6,
        )
        self.assertTrue(result.diverged[0])
        self.assertEqual(float(result.step_sizes[0]), 0.0)
        for slot in mgopt.levels[1].optimizer.variables:
            self.assertTrue(np.all(np.isfinite(slot)))

    @parameterized.parameters(True, False)
    def test_diverged_level_two_is_rejected_by_level_one(self, line_search):
        mgopt, result = self._cycle_with_fault(
            3, 2, "nan", line_search=line_search
        )
        self.assertTrue(result.diverged[1])
        self.assertFalse(result.diverged[0])
        self.assertEqual(float(result.step_sizes[1]), 0.0)
        for level in mgopt.levels[:2]:
            for variable in level.variables:
                self.assertTrue(np.all(np.isfinite(variable)))

    def test_finite_cycle_reports_no_divergence(self):
        _, result = self._cycle_with_fault(3, None, "nan")
        self.assertEqual([bool(d) for d in result.diverged], [False, False])


def _gradients(model, data):
    with tf.GradientTape() as tape:
        loss, _ = _loss_fn(model, *data)
    return tape.gradient(loss, model.trainable_variables)


if __name__ == "__main__":
    tf.test.main()

"""Tests for keras_mlres.transfer: prolongation and restriction in time."""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized

import keras_mlres as mlres
from keras_mlres import transfer
from keras_mlres.layers import ODEStack
from keras_mlres.layers import ResidualODEBlock

_SHAPES = (("vector", ()), ("matrix", (3,)), ("tensor3", (2, 3)))


def _random(shape, seed, dtype="float64"):
    return np.random.default_rng(seed).normal(size=shape).astype(dtype)


def _dense(matrix, tensor):
    """Applies a (M, K) matrix along the leading axis of a (K, ...) array."""
    return np.tensordot(matrix, np.asarray(tensor, np.float64), axes=[[1], [0]])


def _cases(*axes):
    """Named parameter combinations: the product of (name, value) axes."""
    cases = [("", ())]
    for axis in axes:
        cases = [
            (f"{name}_{label}".strip("_"), values + (value,))
            for name, values in cases
            for label, value in axis
        ]
    return [(name,) + values for name, values in cases]


_FACTORS = (("c2", 2), ("c3", 3))
_COARSE_BLOCKS = (("kh1", 1), ("kh3", 3), ("kh4", 4))


class TransferTest(tf.test.TestCase, parameterized.TestCase):

    def setUp(self):
        super().setUp()
        keras.utils.set_random_seed(99)

    @parameterized.named_parameters(_cases(_COARSE_BLOCKS, _FACTORS, _SHAPES))
    def test_average_restriction_inverts_constant_prolongation(
        self, num_coarse, factor, trailing
    ):
        coarse = _random((num_coarse,) + trailing, seed=num_coarse)
        fine = transfer.prolongate(coarse, factor)
        self.assertEqual(tuple(fine.shape), (factor * num_coarse,) + trailing)
        self.assertAllClose(
            transfer.restrict(fine, factor), coarse, rtol=1e-14, atol=1e-14
        )
        self.assertAllClose(
            transfer.restriction_matrix(factor * num_coarse, factor)
            @ transfer.prolongation_matrix(num_coarse, factor),
            np.eye(num_coarse),
        )

    def test_constant_prolongation_repeats_blocks(self):
        coarse = tf.constant([[1.0, 2.0], [3.0, 4.0]])
        self.assertAllEqual(
            transfer.prolongate(coarse, 3),
            [[1.0, 2.0]] * 3 + [[3.0, 4.0]] * 3,
        )
        self.assertAllEqual(
            transfer.prolongate(tf.constant([1.0, 3.0])), [1.0, 1.0, 3.0, 3.0]
        )

    def test_average_restriction_by_hand(self):
        fine = tf.constant([1.0, 3.0, 5.0, 7.0, 9.0, 11.0])
        self.assertAllClose(transfer.restrict(fine, 2), [2.0, 6.0, 10.0])
        self.assertAllClose(transfer.restrict(fine, 3), [3.0, 9.0])
        self.assertAllClose(transfer.restrict(fine, 6), [6.0])

    def test_injection_by_hand(self):
        fine = tf.constant([[1.0], [3.0], [5.0], [7.0], [9.0], [11.0]])
        self.assertAllEqual(
            transfer.restrict(fine, 2, "injection"), [[1.0], [5.0], [9.0]]
        )
        self.assertAllEqual(transfer.restrict(fine, 3, "injection"), [[1.0], [7.0]])
        self.assertAllEqual(
            transfer.restriction_matrix(4, 2, "injection"),
            [[1, 0, 0, 0], [0, 0, 1, 0]],
        )

    def test_full_weighting_by_hand(self):
        # Stencil [1/4, 1/2, 1/4] around fine block c*j; at the first block the
        # left neighbour is missing and the weights are renormalized.
        expected_c2 = np.array(
            [
                [2 / 3, 1 / 3, 0, 0, 0, 0],
                [0, 1 / 4, 1 / 2, 1 / 4, 0, 0],
                [0, 0, 0, 1 / 4, 1 / 2, 1 / 4],
            ]
        )
        expected_c3 = np.array(
            [[2 / 3, 1 / 3, 0, 0, 0, 0], [0, 0, 1 / 4, 1 / 2, 1 / 4, 0]]
        )
        self.assertAllClose(
            transfer.restriction_matrix(6, 2, "full_weighting"), expected_c2
        )
        self.assertAllClose(
            transfer.restriction_matrix(6, 3, "full_weighting"), expected_c3
        )
        fine = tf.constant([1.0, 3.0, 5.0, 7.0, 9.0, 11.0], tf.float64)
        self.assertAllClose(
            transfer.restrict(fine, 2, "full_weighting"),
            [5.0 / 3.0, 5.0, 9.0],
        )
        self.assertAllClose(
            transfer.restrict(fine, 3, "full_weighting"), [5.0 / 3.0, 7.0]
        )

    def test_linear_prolongation_by_hand(self):
        # Fine centres in coarse units: -0.25, 0.25, 0.75, 1.25.
        self.assertAllClose(
            transfer.prolongation_matrix(2, 2, "linear"),
            [[1.25, -0.25], [0.75, 0.25], [0.25, 0.75], [-0.25, 1.25]],
        )
        self.assertAllClose(
            transfer.prolongate(tf.constant([0.0, 4.0]), 2, "linear"),
            [-1.0, 1.0, 3.0, 5.0],
        )

    def test_linear_prolongation_of_one_block_is_constant(self):
        self.assertAllClose(
            transfer.prolongate(tf.constant([[2.0, 5.0]]), 3, "linear"),
            [[2.0, 5.0]] * 3,
        )

    @parameterized.named_parameters(
        _cases((("kh2", 2), ("kh3", 3), ("kh5", 5)), _FACTORS, _SHAPES)
    )
    def test_linear_prolongation_exact_on_linear_weights(
        self, num_coarse, factor, trailing
    ):
        time_horizon = 2.0
        num_fine = factor * num_coarse
        a = _random(trailing, seed=1)
        b = _random(trailing, seed=2)

        def linear_in_t(num_blocks):
            dt = time_horizon / num_blocks
            centres = (np.arange(num_blocks) + 0.5) * dt
            return a[None] + centres.reshape((-1,) + (1,) * len(trailing)) * b

        fine = transfer.prolongate(linear_in_t(num_coarse), factor, "linear")
        self.assertAllClose(fine, linear_in_t(num_fine), rtol=1e-12, atol=1e-12)
        # The constant prolongation is not exact, so the check has teeth.
        self.assertNotAllClose(
            transfer.prolongate(linear_in_t(num_coarse), factor),
            linear_in_t(num_fine),
        )

    @parameterized.named_parameters(
        _cases(
            (("constant", "constant"), ("linear", "linear")),
            (("kh1", 1), ("kh4", 4)),
            _FACTORS,
            _SHAPES,
        )
    )
    def test_gradient_restriction_is_adjoint_of_prolongation(
        self, interpolation, num_coarse, factor, trailing
    ):
        x = _random((num_coarse,) + trailing, seed=3)
        y = _random((factor * num_coarse,) + trailing, seed=4)
        px = transfer.prolongate(x, factor, interpolation)
        rg_y = transfer.restrict_gradient(y, factor, interpolation)
        self.assertEqual(rg_y.shape, x.shape)
        self.assertAllClose(
            tf.reduce_sum(px * y), tf.reduce_sum(x * rg_y), rtol=1e-12
        )

    @parameterized.named_parameters(_cases(_FACTORS, _SHAPES))
    def test_average_is_scaled_gradient_restriction(self, factor, trailing):
        fine = _random((4 * factor,) + trailing, seed=5)
        self.assertAllClose(
            transfer.restrict(fine, factor),
            transfer.restrict_gradient(fine, factor) / factor,
        )

    @parameterized.named_parameters(
        _cases(
            (
                ("average", "average"),
                ("injection", "injection"),
                ("full_weighting", "full_weighting"),
            ),
            _FACTORS,
            _SHAPES,
        )
    )
    def test_restrict_matches_dense_matrix(self, method, factor, trailing):
        fine = _random((4 * factor,) + trailing, seed=6)
        matrix = transfer.restriction_matrix(4 * factor, factor, method)
        self.assertAllClose(np.sum(matrix, axis=1), np.ones(4))
        self.assertAllClose(
            transfer.restrict(fine, factor, method),
            _dense(matrix, fine),
            rtol=1e-12,
        )

    @parameterized.named_parameters(
        _cases(
            (("constant", "constant"), ("linear", "linear")),
            _FACTORS,
            _SHAPES,
        )
    )
    def test_prolongate_and_gradient_restriction_match_dense_matrix(
        self, interpolation, factor, trailing
    ):
        matrix = transfer.prolongation_matrix(4, factor, interpolation)
        self.assertEqual(matrix.shape, (4 * factor, 4))
        self.assertAllClose(np.sum(matrix, axis=1), np.ones(4 * factor))
        coarse = _random((4,) + trailing, seed=7)
        self.assertAllClose(
            transfer.prolongate(coarse, factor, interpolation),
            _dense(matrix, coarse),
            rtol=1e-12,
        )
        fine = _random((4 * factor,) + trailing, seed=8)
        self.assertAllClose(
            transfer.restrict_gradient(fine, factor, interpolation),
            _dense(matrix.T, fine),
            rtol=1e-12,
        )

    @parameterized.named_parameters(("float32", "float32"), ("float64", "float64"))
    def test_dtype_preserved(self, dtype):
        fine = _random((8, 2), seed=9, dtype=dtype)
        for method in transfer.RESTRICTIONS:
            self.assertEqual(transfer.restrict(fine, 2, method).dtype, dtype)
        for interpolation in transfer.INTERPOLATIONS:
            self.assertEqual(
                transfer.prolongate(fine, 2, interpolation).dtype, dtype
            )
            self.assertEqual(
                transfer.restrict_gradient(fine, 2, interpolation).dtype, dtype
            )

    def test_ops_under_xla(self):
        fine = tf.constant(_random((12, 3, 2), seed=10, dtype="float32"))
        coarse = tf.constant(_random((4, 3, 2), seed=11, dtype="float32"))

        def all_ops(fine, coarse):
            results = []
            for factor in (2, 3):
                for method in transfer.RESTRICTIONS:
                    results.append(transfer.restrict(fine, factor, method))
                for interpolation in transfer.INTERPOLATIONS:
                    results.append(
                        transfer.prolongate(coarse, factor, interpolation)
                    )
                    results.append(
                        transfer.restrict_gradient(fine, factor, interpolation)
                    )
            return results

        compiled = tf.function(all_ops, jit_compile=True)
        eager = all_ops(fine, coarse)
        xla = compiled(fine, coarse)
        self.assertLen(xla, 14)
        for got, expected in zip(xla, eager):
            self.assertAllClose(got, expected, rtol=1e-6, atol=1e-6)
        self.assertIn(
            "HloModule",
            compiled.experimental_get_compiler_ir(fine, coarse)(stage="hlo"),
        )

    def test_factor_must_divide_num_blocks(self):
        fine = tf.ones((5, 2))
        message = r"Cannot restrict 5 blocks by the coarsening factor 2.*multiple"
        for method in transfer.RESTRICTIONS:
            with self.assertRaisesRegex(ValueError, message):
                transfer.restrict(fine, 2, method)
        for interpolation in transfer.INTERPOLATIONS:
            with self.assertRaisesRegex(ValueError, message):
                transfer.restrict_gradient(fine, 2, interpolation)
        with self.assertRaisesRegex(ValueError, message):
            transfer.restriction_matrix(5, 2)

    @parameterized.named_parameters(
        ("one", 1), ("zero", 0), ("negative", -2), ("float", 2.0), ("bool", True)
    )
    def test_bad_factor_raises(self, factor):
        message = r"coarsening factor must be an integer >= 2.*factor="
        calls = [
            lambda: transfer.restrict(tf.ones((4,)), factor),
            lambda: transfer.restrict(tf.ones((4,)), factor, "injection"),
            lambda: transfer.restrict(tf.ones((4,)), factor, "full_weighting"),
            lambda: transfer.prolongate(tf.ones((4,)), factor),
            lambda: transfer.prolongate(tf.ones((4,)), factor, "linear"),
            lambda: transfer.restrict_gradient(tf.ones((4,)), factor),
            lambda: transfer.restrict_gradient(tf.ones((4,)), factor, "linear"),
            lambda: transfer.prolongation_matrix(2, factor),
            lambda: transfer.restriction_matrix(4, factor),
        ]
        for call in calls:
            with self.assertRaisesRegex(ValueError, message):
                call()

    def test_unknown_method_names_raise(self):
        x = tf.ones((4, 2))
        restriction = r"Unknown restriction='mean'.*'average', 'injection'"
        interpolation = r"Unknown interpolation='cubic'.*'constant', 'linear'"
        with self.assertRaisesRegex(ValueError, restriction):
            transfer.restrict(x, 2, "mean")
        with self.assertRaisesRegex(ValueError, restriction):
            transfer.restriction_matrix(4, 2, "mean")
        with self.assertRaisesRegex(ValueError, interpolation):
            transfer.prolongate(x, 2, "cubic")
        with self.assertRaisesRegex(ValueError, interpolation):
            transfer.restrict_gradient(x, 2, "cubic")
        with self.assertRaisesRegex(ValueError, interpolation):
            transfer.prolongation_matrix(2, 2, "cubic")


def _smooth_fine_model(num_blocks, width=4, time_horizon=1.0, scale=0.5):
    """Dense -> ODEStack with weights smooth in t -> Dense, fixed weights."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    stage = ODEStack(ResidualODEBlock(width), num_blocks, time_horizon)
    model = keras.Sequential(
        [
            keras.Input((2,)),
            keras.layers.Dense(
                width,
                activation="tanh",
                kernel_initializer=keras.initializers.GlorotUniform(seed=1),
            ),
            stage,
            keras.layers.Dense(
                1, kernel_initializer=keras.initializers.GlorotUniform(seed=2)
            ),
        ]
    )
    w0, w1 = scale * rng.normal(size=(2, width, width))
    b0, b1 = scale * rng.normal(size=(2, width))
    centres = (np.arange(num_blocks) + 0.5) * (time_horizon / num_blocks)
    stage.stacked_weights["kernel"].assign(
        w0[None] + np.sin(centres)[:, None, None] * w1[None]
    )
    stage.stacked_weights["bias"].assign(
        b0[None] + np.cos(centres)[:, None] * b1[None]
    )
    return model


class ConvergenceOrderTest(tf.test.TestCase):
    """A coarse twin approximates the fine net to first order in dt."""

    def test_coarse_twin_error_is_first_order_in_dt(self):
        x = np.random.default_rng(1).uniform(-1, 1, size=(64, 2))
        x = x.astype("float32")
        sizes = (16, 32, 64)
        errors = []
        for num_blocks in sizes:
            fine = _smooth_fine_model(num_blocks)
            hierarchy = mlres.Hierarchy(fine, 2)
            coarse = hierarchy.level(1)
            fine_stage, coarse_stage = fine.layers[1], coarse.layers[1]
            self.assertEqual(coarse_stage.num_blocks, num_blocks // 2)
            self.assertAllClose(
                coarse_stage.stacked_weights["kernel"],
                transfer.restrict(fine_stage.stacked_weights["kernel"], 2),
            )
            errors.append(np.max(np.abs(fine(x) - coarse(x))))
        errors = np.array(errors, dtype=np.float64)
        self.assertTrue(np.all(errors > 1e-5), errors)
        pairwise_orders = np.log2(errors[:-1] / errors[1:])
        fitted_order = -np.polyfit(np.log2(sizes), np.log2(errors), 1)[0]
        for order in list(pairwise_orders) + [fitted_order]:
            self.assertBetween(order, 0.7, 1.3)


if __name__ == "__main__":
    tf.test.main()

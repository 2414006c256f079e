"""Tests of optimizer-state prolongation between levels."""

import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from keras_mlres import optimizer_state
from keras_mlres import transfer

# The levels' variables in Hierarchy order: a stage weight (blocks first)
# and a shared one.
_STAGE_MASK = [True, False]
_SHARED_SHAPE = (3,)

_OPTIMIZERS = (
    ("sgd_momentum", lambda: keras.optimizers.SGD(0.1, momentum=0.9)),
    ("sgd_plain", lambda: keras.optimizers.SGD(0.1)),
    ("adam", lambda: keras.optimizers.Adam(0.01)),
    ("adam_amsgrad", lambda: keras.optimizers.Adam(0.01, amsgrad=True)),
    ("adamw", lambda: keras.optimizers.AdamW(0.01)),
    ("nadam", lambda: keras.optimizers.Nadam(0.01)),
    ("adamax", lambda: keras.optimizers.Adamax(0.01)),
    (
        # Its momentum (lr g / sqrt(v + epsilon)) is scale-free only up to
        # epsilon.
        "rmsprop",
        lambda: keras.optimizers.RMSprop(
            0.01, momentum=0.9, centered=True, epsilon=1e-12
        ),
    ),
    ("lion", lambda: keras.optimizers.Lion(0.01)),
    ("lamb", lambda: keras.optimizers.Lamb(0.01)),
)


def _variables(num_blocks):
    return [
        keras.Variable(np.ones((num_blocks, 2, 3), "float32")),
        keras.Variable(np.ones(_SHARED_SHAPE, "float32")),
    ]


def _built(make_optimizer, variables):
    optimizer = make_optimizer()
    optimizer.build(variables)
    return optimizer


def _state(optimizer):
    """The optimizer's variables but its learning rate, in creation order."""
    return [
        np.asarray(v)
        for v in optimizer.variables
        if "learning_rate" not in v.path
    ]


class ProlongateOptimizerStateTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(*_OPTIMIZERS)
    def test_state_is_what_the_fine_optimizer_would_have_accumulated(
        self, make_optimizer, factor=2, coarse_blocks=3, steps=4
    ):
        # The finer optimizer must end up exactly as if it had taken every
        # step the coarse one took, with the stage gradients prolongated and
        # divided by c (each of the c fine blocks carries dt / c).
        rng = np.random.default_rng(0)
        coarse_variables = _variables(coarse_blocks)
        fine_variables = _variables(coarse_blocks * factor)
        reference_variables = _variables(coarse_blocks * factor)
        coarse = _built(make_optimizer, coarse_variables)
        reference = _built(make_optimizer, reference_variables)
        fine = _built(make_optimizer, fine_variables)
        for _ in range(steps):
            stage_gradient = rng.normal(size=(coarse_blocks, 2, 3))
            shared_gradient = rng.normal(size=_SHARED_SHAPE)
            coarse.apply(
                [stage_gradient.astype("float32"),
                 shared_gradient.astype("float32")],
                coarse_variables,
            )
            reference.apply(
                [
                    transfer.prolongate(stage_gradient, factor) / factor,
                    shared_gradient.astype("float32"),
                ],
                reference_variables,
            )

        optimizer_state.prolongate_optimizer_state(
            coarse, fine, _STAGE_MASK, factor
        )

        want = _state(reference)
        got = _state(fine)
        self.assertLen(got, len(want))
        for index, (value, wanted) in enumerate(zip(got, want)):
            self.assertAllClose(value, wanted, rtol=1e-4, atol=1e-7,
                                msg=f"variable {index}")
        self.assertEqual(int(fine.iterations), steps)

    def test_stage_slots_are_piecewise_constant_and_scaled_by_degree(self):
        coarse_variables, fine_variables = _variables(2), _variables(6)
        coarse = _built(keras.optimizers.Adam, coarse_variables)
        fine = _built(keras.optimizers.Adam, fine_variables)
        momentum = np.arange(12, dtype="float32").reshape(2, 2, 3)
        coarse._momentums[0].assign(momentum)
        coarse._velocities[0].assign(momentum**2)
        coarse._velocities[1].assign([1.0, 2.0, 3.0])

        optimizer_state.prolongate_optimizer_state(
            coarse, fine, _STAGE_MASK, factor=3
        )

        self.assertAllClose(fine._momentums[0], np.repeat(momentum, 3, 0) / 3)
        self.assertAllClose(
            fine._velocities[0], np.repeat(momentum**2, 3, 0) / 9
        )
        self.assertAllClose(fine._velocities[1], [1.0, 2.0, 3.0])

    def test_loss_scale_optimizer_transfers_its_inner_state(self):
        coarse_variables, fine_variables = _variables(2), _variables(4)
        coarse = _built(keras.optimizers.Adam, coarse_variables)
        fine = keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam())
        fine.build(fine_variables)
        coarse._momentums[1].assign([1.0, 2.0, 3.0])
        coarse.iterations.assign(7)
        self.assertTrue(optimizer_state.can_prolongate(coarse, fine))

        optimizer_state.prolongate_optimizer_state(coarse, fine, _STAGE_MASK)

        self.assertAllClose(fine.inner_optimizer._momentums[1], [1, 2, 3])
        self.assertEqual(int(fine.inner_optimizer.iterations), 7)

    @parameterized.named_parameters(
        ("different_types", keras.optimizers.SGD, keras.optimizers.Adam),
        ("unknown_type", keras.optimizers.Adagrad, keras.optimizers.Adagrad),
    )
    def test_rejects_optimizers_it_cannot_pair(self, make_coarse, make_fine):
        coarse = _built(make_coarse, _variables(2))
        fine = _built(make_fine, _variables(4))
        before = _state(fine)
        self.assertFalse(optimizer_state.can_prolongate(coarse, fine))
        with self.assertRaisesRegex(ValueError, "one type among SGD, Adam"):
            optimizer_state.prolongate_optimizer_state(
                coarse, fine, _STAGE_MASK
            )
        for value, unchanged in zip(_state(fine), before):
            self.assertAllEqual(value, unchanged)

    def test_rejects_slots_that_do_not_match_the_levels(self):
        # The shared variable comes first here, and its slots would fit;
        # none may be assigned before the stage slot's mismatch is found.
        def shared_first(num_blocks):
            return _variables(num_blocks)[::-1]

        coarse = _built(keras.optimizers.Adam, shared_first(2))
        coarse._momentums[0].assign([1.0, 2.0, 3.0])
        coarse.iterations.assign(3)
        wrong_depth = _built(keras.optimizers.Adam, shared_first(5))
        before = _state(wrong_depth)
        with self.assertRaisesRegex(ValueError, "does not prolongate"):
            optimizer_state.prolongate_optimizer_state(
                coarse, wrong_depth, _STAGE_MASK[::-1]
            )
        for value, unchanged in zip(_state(wrong_depth), before):
            self.assertAllEqual(value, unchanged)
        coarse = _built(keras.optimizers.Adam, _variables(2))
        one_variable = _built(keras.optimizers.Adam, _variables(4)[:1])
        with self.assertRaisesRegex(ValueError, "2 trainable variables"):
            optimizer_state.prolongate_optimizer_state(
                coarse, one_variable, _STAGE_MASK
            )


if __name__ == "__main__":
    tf.test.main()

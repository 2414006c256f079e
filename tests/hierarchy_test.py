"""Tests for keras_mlres.Hierarchy."""

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


def _block(width, seed=0, **kwargs):
    # Seeded initializers: distinct blocks, reproducible values.
    return ResidualODEBlock(
        width,
        kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
        bias_initializer=keras.initializers.RandomNormal(seed=seed + 1),
        **kwargs,
    )


def _sequential(
    num_blocks=8, width=4, time_horizon=2.0, name="stage", dtype=None
):
    return keras.Sequential(
        [
            keras.Input((3,), dtype=dtype),
            keras.layers.Dense(
                width, activation="tanh", name="opening", dtype=dtype
            ),
            ODEStack(
                _block(width), num_blocks, time_horizon, name=name, dtype=dtype
            ),
            keras.layers.Dense(2, name="head", dtype=dtype),
        ],
        name="net",
    )


def _two_stage_functional(first_blocks=8, second_blocks=4):
    inputs = keras.Input((3,))
    x = keras.layers.Dense(4, activation="tanh", name="opening")(inputs)
    x = ODEStack(_block(4, seed=3), first_blocks, 1.0, name="stage_a")(x)
    x = keras.layers.Dense(5, activation="tanh", name="downsample")(x)
    x = ODEStack(
        _block(5, seed=5, double_layer=True), second_blocks, 2.0, name="stage_b"
    )(x)
    outputs = keras.layers.Dense(2, name="head")(x)
    return keras.Model(inputs, outputs, name="two_stage")


def _randomize_stages(model, seed):
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, ODEStack):
            for variable in layer.stacked_weights.values():
                variable.assign(rng.normal(size=variable.shape))


def _inputs(n=5):
    return np.random.default_rng(0).normal(size=(n, 3)).astype("float32")


class HierarchyTest(tf.test.TestCase, parameterized.TestCase):

    def setUp(self):
        super().setUp()
        keras.utils.set_random_seed(2024)

    def test_shared_layers_are_identical_objects(self):
        fine = _sequential()
        hierarchy = mlres.Hierarchy(fine, 3)
        self.assertIs(hierarchy.level(0), fine)
        self.assertLen(hierarchy.models, 3)
        for level in (1, 2):
            coarse = hierarchy.level(level)
            self.assertIsInstance(coarse, keras.Model)
            self.assertIsNot(coarse, fine)
            self.assertLen(coarse.layers, 3)
            self.assertIs(coarse.layers[0], fine.layers[0])
            self.assertIs(coarse.layers[2], fine.layers[2])
            for name in ("opening", "head"):
                fine_layer = fine.get_layer(name)
                coarse_layer = coarse.get_layer(name)
                self.assertIs(coarse_layer, fine_layer)
                for a, b in zip(coarse_layer.weights, fine_layer.weights):
                    self.assertIs(a, b)

    def test_stage_weights_differ_per_level(self):
        hierarchy = mlres.Hierarchy(_sequential(num_blocks=8), 3)
        stages = [hierarchy.stages(level)[0] for level in range(3)]
        self.assertIsNot(stages[0], stages[1])
        self.assertIsNot(stages[1], stages[2])
        for level, stage in enumerate(stages):
            self.assertIsInstance(stage, ODEStack)
            self.assertEqual(
                tuple(stage.stacked_weights["kernel"].shape),
                (8 // 2**level, 4, 4),
            )
        ids = [
            {id(v) for v in stage.trainable_variables} for stage in stages
        ]
        self.assertEmpty(ids[0] & ids[1])
        self.assertEmpty(ids[1] & ids[2])
        self.assertEqual(stages[1].name, "stage_level1")
        self.assertEqual(stages[2].name, "stage_level2")

    def test_trainable_variables_correspond_by_position(self):
        hierarchy = mlres.Hierarchy(_sequential(), 3)
        self.assertEqual(
            hierarchy.stage_mask, [False, False, True, True, False, False]
        )
        fine_variables = hierarchy.trainable_variables(0)
        for level in (1, 2):
            variables = hierarchy.trainable_variables(level)
            self.assertLen(variables, len(fine_variables))
            for is_stage, coarse, fine in zip(
                hierarchy.stage_mask, variables, fine_variables
            ):
                if is_stage:
                    self.assertIsNot(coarse, fine)
                    self.assertEqual(coarse.shape[1:], fine.shape[1:])
                    self.assertEqual(
                        coarse.shape[0] * 2**level, fine.shape[0]
                    )
                else:
                    self.assertIs(coarse, fine)

    @parameterized.named_parameters(
        ("c2", 16, 2, 3, [16, 8, 4]),
        ("c3", 9, 3, 3, [9, 3, 1]),
        ("c2_to_one", 4, 2, 3, [4, 2, 1]),
        ("c4", 16, 4, 2, [16, 4]),
        ("single_level", 6, 2, 1, [6]),
    )
    def test_levels_have_fewer_blocks_and_larger_dt(
        self, num_blocks, factor, num_levels, expected
    ):
        time_horizon = 3.0
        hierarchy = mlres.Hierarchy(
            _sequential(num_blocks, time_horizon=time_horizon),
            num_levels,
            coarsening_factor=factor,
        )
        self.assertEqual(hierarchy.num_levels, num_levels)
        self.assertEqual(hierarchy.coarsening_factor, factor)
        self.assertEqual(
            [hierarchy.num_blocks(level) for level in range(num_levels)],
            [[k] for k in expected],
        )
        for level, k in enumerate(expected):
            stage = hierarchy.stages(level)[0]
            self.assertEqual(stage.time_horizon, time_horizon)
            self.assertAllClose(stage.dt, time_horizon / k)
            self.assertAllClose(stage.block.dt, time_horizon / k)
            self.assertEqual(
                tuple(hierarchy.level(level)(_inputs()).shape), (5, 2)
            )

    @parameterized.named_parameters(
        ("average", "average"),
        ("injection", "injection"),
        ("full_weighting", "full_weighting"),
    )
    def test_coarse_levels_restricted_at_construction(self, restriction):
        fine = _sequential(num_blocks=8)
        hierarchy = mlres.Hierarchy(fine, 3, restriction=restriction)
        self.assertEqual(hierarchy.restriction, restriction)
        for name in ("kernel", "bias"):
            weights = [
                hierarchy.stages(level)[0].stacked_weights[name]
                for level in range(3)
            ]
            self.assertAllClose(
                weights[1], transfer.restrict(weights[0], 2, restriction)
            )
            self.assertAllClose(
                weights[2],
                transfer.restrict(
                    transfer.restrict(weights[0], 2, restriction),
                    2,
                    restriction,
                ),
            )

    def test_restriction_depends_on_method(self):
        fine = _sequential(num_blocks=8)
        average = mlres.Hierarchy(fine, 2, restriction="average")
        average_kernel = average.stages(1)[0].stacked_weights["kernel"].numpy()
        injection = mlres.Hierarchy(fine, 2, restriction="injection")
        self.assertNotAllClose(
            injection.stages(1)[0].stacked_weights["kernel"], average_kernel
        )

    def test_frozen_stage_restricted_at_construction(self):
        # A non-trainable stage is not in trainable_variables, but its coarse
        # copies must still start from the restricted fine weights, not from
        # a fresh random initialization.
        fine = _two_stage_functional()
        fine.get_layer("stage_a").trainable = False
        hierarchy = mlres.Hierarchy(fine, 2)
        coarse_stage = hierarchy.level(1).get_layer("stage_a_level1")
        for key, variable in fine.get_layer("stage_a").stacked_weights.items():
            self.assertAllClose(
                coarse_stage.stacked_weights[key], transfer.restrict(variable, 2)
            )

    def test_multi_stage_functional_model_coarsens_every_stage(self):
        fine = _two_stage_functional(8, 4)
        hierarchy = mlres.Hierarchy(fine, 3)
        self.assertEqual(
            [hierarchy.num_blocks(level) for level in range(3)],
            [[8, 4], [4, 2], [2, 1]],
        )
        self.assertEqual(
            [[s.dt for s in hierarchy.stages(level)] for level in range(3)],
            [[0.125, 0.5], [0.25, 1.0], [0.5, 2.0]],
        )
        self.assertEqual(
            hierarchy.stage_mask,
            [False, False, True, True, False, False]
            + [True] * 4
            + [False, False],
        )
        for level in (1, 2):
            coarse = hierarchy.level(level)
            for name in ("opening", "downsample", "head"):
                self.assertIs(coarse.get_layer(name), fine.get_layer(name))
            for name in ("stage_a", "stage_b"):
                fine_stage = fine.get_layer(name)
                coarse_stage = coarse.get_layer(f"{name}_level{level}")
                for key, variable in fine_stage.stacked_weights.items():
                    expected = variable
                    for _ in range(level):
                        expected = transfer.restrict(expected, 2)
                    self.assertAllClose(
                        coarse_stage.stacked_weights[key], expected
                    )
            self.assertEqual(tuple(coarse(_inputs()).shape), (5, 2))

    def test_restrict_from_fine_stops_at_the_given_level(self):
        fine = _two_stage_functional()
        hierarchy = mlres.Hierarchy(fine, 3)
        _randomize_stages(fine, seed=1)
        level_2 = [np.array(v) for v in hierarchy.trainable_variables(2)]
        hierarchy.restrict_from_fine(1)
        for is_stage, fine_v, coarse_v in zip(
            hierarchy.stage_mask, fine.trainable_variables,
            hierarchy.trainable_variables(1),
        ):
            if is_stage:
                self.assertAllClose(coarse_v, transfer.restrict(fine_v, 2))
        for is_stage, before, after in zip(
            hierarchy.stage_mask, level_2, hierarchy.trainable_variables(2)
        ):
            if is_stage:
                self.assertAllEqual(after, before)

    def test_restrict_assigns_stage_weights_only(self):
        fine = _two_stage_functional()
        hierarchy = mlres.Hierarchy(fine, 2)
        _randomize_stages(fine, seed=1)
        shared_before = [
            v.numpy() for v, s in zip(fine.trainable_variables, hierarchy.stage_mask)
            if not s
        ]
        returned = hierarchy.restrict(0)
        coarse_variables = hierarchy.trainable_variables(1)
        self.assertLen(returned, len(coarse_variables))
        # The returned values are a snapshot: later updates do not show.
        for v in fine.trainable_variables:
            v.assign(v + 1.0)
        shared_returned = []
        for is_stage, fine_v, coarse_v, value in zip(
            hierarchy.stage_mask, fine.trainable_variables, coarse_variables,
            returned,
        ):
            if is_stage:
                expected = transfer.restrict(fine_v - 1.0, 2)
                self.assertAllClose(coarse_v, expected)
                self.assertAllClose(value, expected)
            else:
                shared_returned.append(value)
        self.assertAllClose(shared_returned, shared_before)

    @parameterized.named_parameters(
        ("constant", "constant"), ("linear", "linear")
    )
    def test_prolongate_assigns_stage_weights_only(self, interpolation):
        fine = _two_stage_functional()
        hierarchy = mlres.Hierarchy(fine, 3, interpolation=interpolation)
        self.assertEqual(hierarchy.interpolation, interpolation)
        _randomize_stages(hierarchy.level(2), seed=2)
        shared_before = [v.numpy() for v in fine.trainable_variables]
        hierarchy.prolongate(2)
        for is_stage, middle, coarse, before in zip(
            hierarchy.stage_mask,
            hierarchy.trainable_variables(1),
            hierarchy.trainable_variables(2),
            shared_before,
        ):
            if is_stage:
                self.assertAllClose(
                    middle, transfer.prolongate(coarse, 2, interpolation)
                )
            else:
                self.assertAllClose(middle, before)
        # Level 0 was not touched by prolongating level 2 to level 1.
        self.assertAllClose(fine.trainable_variables, shared_before)

    def test_prolongate_after_restrict_round_trips(self):
        fine = _sequential(num_blocks=8)
        hierarchy = mlres.Hierarchy(fine, 2)
        stage = fine.get_layer("stage")
        # Weights piecewise constant over pairs of blocks survive R then P.
        rng = np.random.default_rng(3)
        for variable in stage.stacked_weights.values():
            coarse_values = rng.normal(size=(4,) + tuple(variable.shape[1:]))
            variable.assign(np.repeat(coarse_values, 2, axis=0))
        expected = [v.numpy() for v in fine.trainable_variables]
        hierarchy.restrict(0)
        for variable in stage.stacked_weights.values():
            variable.assign(tf.zeros_like(variable))
        hierarchy.prolongate(1)
        self.assertAllClose(fine.trainable_variables, expected)

    def test_weight_and_gradient_transfers_on_lists(self):
        fine = _two_stage_functional()
        hierarchy = mlres.Hierarchy(fine, 2, interpolation="linear")
        mask = hierarchy.stage_mask
        rng = np.random.default_rng(4)
        fine_values = [
            tf.constant(rng.normal(size=v.shape), v.dtype)
            for v in hierarchy.trainable_variables(0)
        ]
        coarse_values = [
            tf.constant(rng.normal(size=v.shape), v.dtype)
            for v in hierarchy.trainable_variables(1)
        ]
        restricted = hierarchy.restrict_weights(fine_values)
        gradients = hierarchy.restrict_gradients(fine_values)
        prolongated = hierarchy.prolongate_weights(coarse_values)
        for i, is_stage in enumerate(mask):
            if is_stage:
                self.assertAllClose(
                    restricted[i], transfer.restrict(fine_values[i], 2)
                )
                self.assertAllClose(
                    gradients[i],
                    transfer.restrict_gradient(fine_values[i], 2, "linear"),
                )
                self.assertAllClose(
                    prolongated[i],
                    transfer.prolongate(coarse_values[i], 2, "linear"),
                )
            else:
                # Identity on shared weights: passed through untouched.
                self.assertIs(restricted[i], fine_values[i])
                self.assertIs(gradients[i], fine_values[i])
                self.assertIs(prolongated[i], coarse_values[i])
        # R_g is the adjoint of P over the whole list of variables.
        lhs = sum(
            tf.reduce_sum(p * g) for p, g in zip(prolongated, fine_values)
        )
        rhs = sum(
            tf.reduce_sum(c * r) for c, r in zip(coarse_values, gradients)
        )
        self.assertAllClose(lhs, rhs, rtol=1e-5)

    def test_restrict_gradients_is_first_order_coherent(self):
        # The directional derivative of the fine loss along a prolongated
        # coarse correction P e is <R_g grad f, e>: the coarse problem starts
        # with the restricted fine gradient. (R = P^T / c would be off by c.)
        fine = _sequential(num_blocks=8, dtype="float64")
        hierarchy = mlres.Hierarchy(fine, 2)
        x = _inputs(16).astype("float64")
        y = np.ones((16, 2))

        def loss():
            return tf.reduce_mean(tf.square(fine(x) - y))

        with tf.GradientTape() as tape:
            value = loss()
        gradients = tape.gradient(value, fine.trainable_variables)
        restricted = hierarchy.restrict_gradients(gradients)

        rng = np.random.default_rng(5)
        mask = hierarchy.stage_mask
        base = [v.numpy() for v in fine.trainable_variables]
        for _ in range(2):
            direction = [
                rng.normal(size=v.shape) if is_stage else np.zeros(v.shape)
                for is_stage, v in zip(mask, hierarchy.trainable_variables(1))
            ]
            step = hierarchy.prolongate_weights(direction)
            eps = 1e-5
            values = []
            for sign in (1.0, -1.0):
                for variable, b, d in zip(fine.trainable_variables, base, step):
                    variable.assign(b + sign * eps * np.asarray(d))
                values.append(loss().numpy())
            for variable, b in zip(fine.trainable_variables, base):
                variable.assign(b)
            numeric = (values[0] - values[1]) / (2 * eps)
            predicted = sum(
                np.sum(np.asarray(r) * d)
                for r, d, is_stage in zip(restricted, direction, mask)
                if is_stage
            )
            self.assertGreater(abs(predicted), 1e-3)
            self.assertAllClose(numeric, predicted, rtol=1e-6)

    def test_training_a_coarse_level_updates_shared_weights_only(self):
        fine = _sequential(num_blocks=8)
        hierarchy = mlres.Hierarchy(fine, 2)
        coarse = hierarchy.level(1)
        fine_stage = [v.numpy() for v in fine.get_layer("stage").weights]
        opening = fine.get_layer("opening").kernel.numpy()
        coarse_stage = [v.numpy() for v in hierarchy.stages(1)[0].weights]
        coarse.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
        coarse.train_on_batch(_inputs(8), np.ones((8, 2), "float32"))
        self.assertAllClose(fine.get_layer("stage").weights, fine_stage)
        self.assertNotAllClose(fine.get_layer("opening").kernel, opening)
        self.assertNotAllClose(hierarchy.stages(1)[0].weights[0], coarse_stage[0])

    def test_single_level_hierarchy(self):
        fine = _sequential(num_blocks=6)
        hierarchy = mlres.Hierarchy(fine, 1)
        self.assertEqual(hierarchy.models, [fine])
        self.assertEqual(hierarchy.num_blocks(0), [6])

    def test_level_index_errors(self):
        hierarchy = mlres.Hierarchy(_sequential(), 2)
        with self.assertRaisesRegex(ValueError, r"Level 2 does not exist.*0 to 1"):
            hierarchy.level(2)
        with self.assertRaisesRegex(ValueError, r"Level -1 does not exist"):
            hierarchy.level(-1)
        with self.assertRaisesRegex(ValueError, r"levels 1 and 2.*0 to 1"):
            hierarchy.restrict(1)
        with self.assertRaisesRegex(ValueError, r"levels -1 and 0.*0 to 1"):
            hierarchy.prolongate(0)

    # Configuration errors.

    def test_num_blocks_not_divisible(self):
        model = _sequential(num_blocks=6, name="stage_six")
        with self.assertRaisesRegex(
            ValueError,
            r"ODEStack 'stage_six' has num_blocks=6, which is not divisible by "
            r"2\^2=4\. Use num_levels <= 2 or a num_blocks that is a multiple "
            r"of 4",
        ):
            mlres.Hierarchy(model, 3)
        with self.assertRaisesRegex(
            ValueError, r"'stage_six' has num_blocks=6.*4\^1=4.*num_levels <= 1"
        ):
            mlres.Hierarchy(model, 2, coarsening_factor=4)

    def test_too_many_levels(self):
        with self.assertRaisesRegex(
            ValueError,
            r"Cannot build 5 levels.*'stage' has num_blocks=8.*2\^4=16.*"
            r"num_levels <= 4",
        ):
            mlres.Hierarchy(_sequential(num_blocks=8), 5)

    def test_second_stage_not_divisible_is_named(self):
        with self.assertRaisesRegex(
            ValueError, r"'stage_b' has num_blocks=4.*num_levels <= 3"
        ):
            mlres.Hierarchy(_two_stage_functional(8, 4), 4)

    @parameterized.named_parameters(
        ("zero", 0, r"integer >= 1 \(1 means single-level"),
        ("negative", -1, r"integer >= 1"),
        ("float", 2.0, r"`num_levels` must be an integer >= 1.*2\.0"),
        ("bool", True, r"`num_levels` must be an integer >= 1.*True"),
        ("string", "2", r"`num_levels` must be an integer"),
    )
    def test_bad_num_levels(self, num_levels, message):
        with self.assertRaisesRegex(ValueError, message):
            mlres.Hierarchy(_sequential(), num_levels)

    @parameterized.named_parameters(("one", 1), ("zero", 0), ("float", 2.0))
    def test_bad_coarsening_factor(self, factor):
        with self.assertRaisesRegex(
            ValueError, r"coarsening factor must be an integer >= 2"
        ):
            mlres.Hierarchy(_sequential(), 2, coarsening_factor=factor)

    def test_unknown_operator_names(self):
        with self.assertRaisesRegex(
            ValueError, r"Unknown interpolation='cubic'.*'constant', 'linear'"
        ):
            mlres.Hierarchy(_sequential(), 2, interpolation="cubic")
        with self.assertRaisesRegex(
            ValueError, r"Unknown restriction='mean'.*'average'"
        ):
            mlres.Hierarchy(_sequential(), 2, restriction="mean")

    def test_model_without_stage(self):
        model = keras.Sequential(
            [keras.Input((3,)), keras.layers.Dense(4)], name="flat"
        )
        with self.assertRaisesRegex(
            ValueError, r"'flat' has no ODEStack layer.*ODEStack\(block"
        ):
            mlres.Hierarchy(model, 2)

    def test_unbuilt_model(self):
        model = keras.Sequential(
            [keras.layers.Dense(4), ODEStack(_block(4), 4)], name="unbuilt"
        )
        with self.assertRaisesRegex(
            ValueError, r"'unbuilt' is not built.*keras\.Input"
        ):
            mlres.Hierarchy(model, 2)

    def test_subclassed_model(self):
        class Subclassed(keras.Model):

            def __init__(self):
                super().__init__()
                self.opening = keras.layers.Dense(4)
                self.stage = ODEStack(_block(4), 4)

            def call(self, inputs):
                return self.stage(self.opening(inputs))

        model = Subclassed()
        model(_inputs())
        with self.assertRaisesRegex(
            ValueError, r"Sequential or functional.*received Subclassed"
        ):
            mlres.Hierarchy(model, 2)

    def test_stage_nested_in_sub_model(self):
        inner = keras.Sequential(
            [keras.Input((4,)), ODEStack(_block(4), 4, name="inner_stage")],
            name="inner_model",
        )
        model = keras.Sequential(
            [keras.Input((3,)), keras.layers.Dense(4), inner], name="outer"
        )
        with self.assertRaisesRegex(
            ValueError,
            r"'inner_stage' in 'inner_model' sit inside nested models.*Flatten",
        ):
            mlres.Hierarchy(model, 2)

    def test_stage_nested_in_sub_model_next_to_top_level_stage(self):
        # A nested stage would silently be shared, uncoarsened, across levels
        # even when the model also has a top-level stage: still an error.
        inner = keras.Sequential(
            [keras.Input((4,)), ODEStack(_block(4), 4, name="inner_stage")],
            name="inner_model",
        )
        model = keras.Sequential(
            [
                keras.Input((3,)),
                keras.layers.Dense(4),
                ODEStack(_block(4), 4, name="top_stage"),
                inner,
            ],
            name="outer",
        )
        with self.assertRaisesRegex(
            ValueError, r"'inner_stage' in 'inner_model'.*nested"
        ):
            mlres.Hierarchy(model, 2)



def _conv_resnet(normalization="batch"):
    keras.utils.set_random_seed(0)
    return mlres.models.ode_resnet(
        (8, 8, 1), 3, stages=[(4, 8, 1.0), (6, 4, 2.0)],
        normalization=normalization,
    )


def _randomize_state(model, seed=0):
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, ODEStack):
            for name, variable in layer.stacked_state.items():
                values = rng.normal(size=variable.shape)
                variable.assign(np.exp(values) if "variance" in name else values)


class StageStateTest(tf.test.TestCase):
    """Batch-norm moving statistics of conv stages across the levels."""

    def test_two_stage_conv_resnet_coarsens_each_stage(self):
        fine = _conv_resnet()
        hierarchy = mlres.Hierarchy(fine, 3)
        self.assertEqual(
            [hierarchy.num_blocks(level) for level in range(3)],
            [[8, 4], [4, 2], [2, 1]],
        )
        # Opening, downsampling and classifier are shared; gamma and beta of
        # each stage are stage weights (checked inside Hierarchy too).
        self.assertEqual(
            hierarchy.stage_mask,
            [False, False, True, True, True, False, False, True, True, True,
             False, False],
        )
        self.assertLen(hierarchy.level(2).non_trainable_variables, 4)

    def test_state_restricted_at_construction_then_per_level(self):
        fine = _conv_resnet()
        _randomize_state(fine)
        hierarchy = mlres.Hierarchy(fine, 3)
        for level in (1, 2):
            for fine_stage, stage in zip(
                hierarchy.stages(0), hierarchy.stages(level)
            ):
                for name, state in stage.stacked_state.items():
                    self.assertAllClose(
                        state,
                        transfer.restrict(
                            fine_stage.stacked_state[name], 2**level
                        ),
                    )
        # Training-mode passes of a coarse level move its statistics only,
        # and restrict (the cycle's transfer) leaves every level's alone.
        before = [v.numpy() for v in fine.non_trainable_variables]
        coarse = hierarchy.level(1)
        coarse_before = [v.numpy() for v in coarse.non_trainable_variables]
        coarse(np.ones((2, 8, 8, 1), "float32"), training=True)
        hierarchy.restrict(0)
        for variable, value in zip(fine.non_trainable_variables, before):
            self.assertAllEqual(variable, value)
        for variable, value in zip(coarse.non_trainable_variables, coarse_before):
            self.assertNotAllClose(variable, value)

    def test_prolongate_carries_state_to_the_finer_level(self):
        fine = _conv_resnet()
        hierarchy = mlres.Hierarchy(fine, 3, interpolation="linear")
        _randomize_state(hierarchy.level(2), seed=1)
        hierarchy.prolongate(2)
        hierarchy.prolongate(1)
        for fine_stage, coarse_stage in zip(
            hierarchy.stages(0), hierarchy.stages(2)
        ):
            for name, state in coarse_stage.stacked_state.items():
                # Piecewise constant whatever the weights' interpolation.
                self.assertAllClose(
                    fine_stage.stacked_state[name],
                    transfer.prolongate(state, 4, "constant"),
                )
        # The fine network then predicts as the coarse one's prolongation.
        x = np.random.default_rng(2).normal(size=(3, 8, 8, 1)).astype("float32")
        self.assertTrue(np.all(np.isfinite(fine.predict(x, verbose=0))))

    def test_frozen_stage_weights_and_state_restricted(self):
        fine = _conv_resnet()
        fine.get_layer("stage0").trainable = False
        _randomize_state(fine)
        hierarchy = mlres.Hierarchy(fine, 2)
        coarse_stage = hierarchy.level(1).get_layer("stage0_level1")
        fine_stage = fine.get_layer("stage0")
        for name in ("kernel", "gamma", "moving_mean", "moving_variance"):
            fine_variable = {**fine_stage.stacked_weights,
                             **fine_stage.stacked_state}[name]
            coarse_variable = {**coarse_stage.stacked_weights,
                               **coarse_stage.stacked_state}[name]
            self.assertAllClose(
                coarse_variable, transfer.restrict(fine_variable, 2)
            )


if __name__ == "__main__":
    tf.test.main()

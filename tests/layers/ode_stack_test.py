"""Tests for keras_mlres.layers.ODEStack."""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from keras_mlres.layers import ConvResidualODEBlock
from keras_mlres.layers import ODEStack
from keras_mlres.layers import ResidualODEBlock


def _standalone_blocks(stack, input_shape):
    """K standalone blocks holding the K weight slices of `stack`."""
    blocks = []
    for k in range(stack.num_blocks):
        block = stack.block.with_dt(stack.dt, name=f"standalone_{k}")
        block.build(input_shape)
        for name, variable in block.block_weights().items():
            variable.assign(stack.stacked_weights[name][k])
        for name, variable in block.block_state().items():
            variable.assign(stack.stacked_state[name][k])
        blocks.append(block)
    return blocks


def _graph_size(concrete_function):
    """Number of ops of a traced function, its function library included."""
    graph_def = concrete_function.graph.as_graph_def()
    library = graph_def.library.function
    return len(graph_def.node) + sum(len(f.node_def) for f in library), len(
        library
    )


def _central_difference(objective, variable, index, eps=1e-6):
    """d objective / d variable[index] by central differences; restores it."""
    base = variable.numpy()
    values = []
    for step in (eps, -eps):
        shifted = base.copy()
        shifted[index] += step
        variable.assign(shifted)
        values.append(objective().numpy())
    variable.assign(base)
    return (values[0] - values[1]) / (2 * eps)


def _seeded(seed=17):
    return keras.initializers.GlorotUniform(seed=seed)


def _regression_data(num_examples=128, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.0, 1.0, size=(num_examples, 2)).astype("float32")
    y = (np.sin(3.0 * x[:, :1]) + x[:, 1:] ** 2).astype("float32")
    return x, y


def _model(num_blocks, width=8, time_horizon=1.0, **stack_kwargs):
    return keras.Sequential(
        [
            keras.Input((2,)),
            keras.layers.Dense(width, activation="tanh"),
            ODEStack(
                # Seeded: distinct blocks whatever the unseeded default does.
                ResidualODEBlock(width, kernel_initializer=_seeded()),
                num_blocks,
                time_horizon,
                **stack_kwargs,
            ),
            keras.layers.Dense(1),
        ]
    )


class ODEStackTest(tf.test.TestCase, parameterized.TestCase):

    def setUp(self):
        super().setUp()
        keras.utils.set_random_seed(4321)

    @parameterized.named_parameters(
        ("single_k1", {}, 1, 1.0),
        ("single_k5", {}, 5, 2.0),
        ("double", {"double_layer": True, "hidden_units": 6}, 4, 1.5),
        ("no_bias", {"use_bias": False}, 3, 1.0),
        ("relu", {"activation": "relu"}, 4, 0.5),
    )
    def test_equals_standalone_blocks_in_sequence(
        self, block_kwargs, num_blocks, time_horizon
    ):
        stack = ODEStack(
            ResidualODEBlock(
                4,
                kernel_initializer=_seeded(),
                bias_initializer=keras.initializers.RandomNormal(seed=7),
                **block_kwargs,
            ),
            num_blocks=num_blocks,
            time_horizon=time_horizon,
        )
        inputs = np.random.default_rng(0).normal(size=(6, 4)).astype("float32")
        outputs = stack(inputs)

        expected = tf.constant(inputs)
        for block in _standalone_blocks(stack, (None, 4)):
            self.assertEqual(block.dt, time_horizon / num_blocks)
            expected = block(expected)
        self.assertAllClose(outputs, expected, rtol=1e-5, atol=1e-6)
        self.assertGreater(np.abs(outputs.numpy() - inputs).max(), 1e-2)

    def test_step_order_matters(self):
        # Reversing the weight slices changes the result: the stack applies
        # block 0 first, not some permutation.
        stack = ODEStack(
            ResidualODEBlock(3, kernel_initializer=_seeded()),
            num_blocks=3,
            time_horizon=3.0,
        )
        inputs = np.random.default_rng(1).normal(size=(4, 3)).astype("float32")
        outputs = stack(inputs)
        expected = tf.constant(inputs)
        for block in reversed(_standalone_blocks(stack, (None, 3))):
            expected = block(expected)
        self.assertNotAllClose(outputs, expected)

    @parameterized.named_parameters(
        ("k4", 4, 1.0), ("k8_t2", 8, 2.0), ("k3_t5", 3, 5.0), ("k1", 1, 0.5)
    )
    def test_properties(self, num_blocks, time_horizon):
        stack = ODEStack(ResidualODEBlock(4), num_blocks, time_horizon)
        self.assertEqual(stack.num_blocks, num_blocks)
        self.assertEqual(stack.time_horizon, time_horizon)
        self.assertAllClose(stack.dt, time_horizon / num_blocks)
        self.assertEqual(stack.block.dt, stack.dt)
        stack.build((None, 4))
        self.assertEqual(
            {name: tuple(w.shape) for name, w in stack.stacked_weights.items()},
            {"kernel": (num_blocks, 4, 4), "bias": (num_blocks, 4)},
        )
        self.assertLen(stack.trainable_variables, 2)

    def test_template_block_is_copied_with_stack_dt(self):
        template = ResidualODEBlock(4, dt=123.0, double_layer=True)
        template.build((None, 4))
        stack = ODEStack(template, num_blocks=4, time_horizon=2.0)
        self.assertIsNot(stack.block, template)
        self.assertEqual(stack.block.dt, 0.5)
        self.assertTrue(stack.block.double_layer)
        self.assertEqual(template.dt, 123.0)
        stack.build((None, 4))
        self.assertEqual(
            sorted(stack.stacked_weights), ["bias1", "bias2", "kernel1", "kernel2"]
        )
        self.assertLen(stack.weights, 4)

    @parameterized.named_parameters(("2d", (5, 4)), ("3d", (2, 3, 4)))
    def test_output_shape(self, shape):
        stack = ODEStack(ResidualODEBlock(4), num_blocks=3)
        self.assertEqual(tuple(stack(np.ones(shape, "float32")).shape), shape)
        self.assertEqual(stack.compute_output_shape(shape), shape)

    def test_width_mismatch_raises(self):
        stack = ODEStack(ResidualODEBlock(4), num_blocks=3)
        with self.assertRaisesRegex(ValueError, r"units=4 .*5 features"):
            stack(np.ones((2, 5), "float32"))

    @parameterized.named_parameters(
        ("block_not_ode_block", {"block": keras.layers.Dense(3)}, "ODEBlock"),
        ("zero_blocks", {"num_blocks": 0}, "num_blocks"),
        ("float_blocks", {"num_blocks": 2.0}, "num_blocks"),
        ("zero_horizon", {"time_horizon": 0.0}, "time_horizon"),
        ("negative_horizon", {"time_horizon": -1.0}, "time_horizon"),
        ("negative_penalty", {"smoothness_penalty": -0.1}, "smoothness_penalty"),
        ("bool_blocks", {"num_blocks": True}, "num_blocks"),
        ("infinite_horizon", {"time_horizon": float("inf")}, "time_horizon"),
        ("nan_penalty", {"smoothness_penalty": float("nan")}, "smoothness"),
        ("inf_penalty", {"smoothness_penalty": float("inf")}, "smoothness"),
        (
            "string_horizon",
            {"time_horizon": "abc"},
            "`time_horizon` must be a positive finite number. Received: "
            "time_horizon='abc'",
        ),
        (
            "no_horizon",
            {"time_horizon": None},
            "`time_horizon` must be .* Received: time_horizon=None",
        ),
        ("bool_horizon", {"time_horizon": True}, "time_horizon=True"),
        (
            "string_penalty",
            {"smoothness_penalty": "0.1"},
            "`smoothness_penalty` must be a finite number >= 0",
        ),
    )
    def test_bad_arguments_raise(self, overrides, message):
        kwargs = {"block": ResidualODEBlock(3), "num_blocks": 4}
        kwargs.update(overrides)
        with self.assertRaisesRegex(ValueError, message):
            ODEStack(**kwargs)

    def test_config_round_trip(self):
        stack = ODEStack(
            ResidualODEBlock(4, activation="relu", double_layer=True),
            num_blocks=6,
            time_horizon=3.0,
            smoothness_penalty=0.5,
            name="stage",
        )
        config = stack.get_config()
        self.assertEqual(config["num_blocks"], 6)
        self.assertEqual(config["time_horizon"], 3.0)
        self.assertEqual(config["smoothness_penalty"], 0.5)
        self.assertEqual(config["block"]["config"]["dt"], 0.5)
        restored = ODEStack.from_config(config)
        self.assertEqual(restored.get_config(), config)
        self.assertIsInstance(restored.block, ResidualODEBlock)

        serialized = keras.saving.serialize_keras_object(stack)
        self.assertEqual(serialized["registered_name"], "keras_mlres>ODEStack")
        deserialized = keras.saving.deserialize_keras_object(serialized)
        self.assertIsInstance(deserialized, ODEStack)
        self.assertEqual(deserialized.get_config(), config)

    def test_save_and_load_model(self):
        model = _model(6, width=5, time_horizon=2.0, smoothness_penalty=0.1)
        x, _ = _regression_data(16)
        expected = model.predict(x, verbose=0)
        path = os.path.join(self.get_temp_dir(), "stack_model.keras")
        model.save(path)
        loaded = keras.models.load_model(path)  # No custom_objects.
        stage = loaded.layers[1]
        self.assertIsInstance(stage, ODEStack)
        self.assertEqual(stage.num_blocks, 6)
        self.assertEqual(stage.time_horizon, 2.0)
        self.assertEqual(stage.smoothness_penalty, 0.1)
        self.assertAllClose(
            stage.stacked_weights["kernel"],
            model.layers[1].stacked_weights["kernel"],
        )
        self.assertAllClose(loaded.predict(x, verbose=0), expected)

    @parameterized.named_parameters(
        ("unseeded_object", keras.initializers.GlorotUniform),
        ("unseeded_name", lambda: "glorot_uniform"),
        ("int_seed", lambda: keras.initializers.GlorotUniform(seed=11)),
        (
            "seed_generator",
            lambda: keras.initializers.RandomNormal(
                seed=keras.random.SeedGenerator(5)
            ),
        ),
    )
    def test_blocks_initialized_independently(self, make_initializer):
        stack = ODEStack(
            ResidualODEBlock(4, kernel_initializer=make_initializer()),
            num_blocks=5,
        )
        stack.build((None, 4))
        kernels = stack.stacked_weights["kernel"].numpy()
        for k in range(1, 5):
            self.assertNotAllClose(
                kernels[0], kernels[k], msg=f"blocks 0 and {k} are identical"
            )

    def test_int_seeded_initializer_is_reproducible(self):
        def build():
            stack = ODEStack(
                ResidualODEBlock(
                    4, kernel_initializer=keras.initializers.HeNormal(seed=3)
                ),
                num_blocks=4,
            )
            stack.build((None, 4))
            return stack.stacked_weights["kernel"].numpy()

        first = build()
        self.assertAllEqual(first, build())
        # Block 0 is exactly what the block's own initializer draws.
        self.assertAllClose(
            first[0], keras.initializers.HeNormal(seed=3)((4, 4)), atol=0
        )

    def test_initializer_uses_block_fans(self):
        # Glorot uniform draws from [-l, l] with l = sqrt(6 / (fan_in +
        # fan_out)) of one block's kernel, not of the stacked (K, n, n) shape.
        stack = ODEStack(ResidualODEBlock(8), num_blocks=64)
        stack.build((None, 8))
        kernels = np.abs(stack.stacked_weights["kernel"].numpy())
        limit = np.sqrt(6.0 / 16.0)
        self.assertLessEqual(kernels.max(), limit)
        self.assertGreater(kernels.max(), 0.95 * limit)

    @parameterized.named_parameters(
        ("halve", 8, 2, 4.0), ("third", 6, 3, 3.0), ("to_one", 4, 4, 1.0)
    )
    def test_coarsened(self, num_blocks, factor, time_horizon):
        stack = ODEStack(
            ResidualODEBlock(4, double_layer=True),
            num_blocks,
            time_horizon,
            smoothness_penalty=0.2,
            name="stage",
        )
        stack.build((None, 4))
        coarse = stack.coarsened(factor)
        self.assertIsInstance(coarse, ODEStack)
        self.assertFalse(coarse.built)
        self.assertEqual(coarse.num_blocks, num_blocks // factor)
        self.assertEqual(coarse.time_horizon, time_horizon)
        self.assertAllClose(coarse.dt, factor * stack.dt)
        self.assertAllClose(coarse.block.dt, factor * stack.dt)
        self.assertEqual(coarse.smoothness_penalty, 0.2)
        self.assertTrue(coarse.block.double_layer)
        self.assertEqual(coarse.name, f"stage_coarse{factor}")
        self.assertEqual(stack.coarsened(factor, name="other").name, "other")
        self.assertEqual(stack.num_blocks, num_blocks)
        coarse.build((None, 4))
        self.assertEqual(
            tuple(coarse.stacked_weights["kernel1"].shape),
            (num_blocks // factor, 4, 4),
        )

    def test_numpy_integers_count_as_integers(self):
        stack = ODEStack(ResidualODEBlock(4), num_blocks=np.int32(8))
        coarse = stack.coarsened(np.int64(4))
        self.assertIs(type(stack.num_blocks), int)
        self.assertEqual((stack.num_blocks, coarse.num_blocks), (8, 2))

    def test_coarsened_default_factor_is_two(self):
        stack = ODEStack(ResidualODEBlock(4), 8, 2.0)
        coarse = stack.coarsened()
        self.assertEqual(coarse.num_blocks, 4)
        self.assertEqual(coarse.dt, 0.5)

    def test_coarsened_errors(self):
        stack = ODEStack(ResidualODEBlock(4), 6, name="six_blocks")
        with self.assertRaisesRegex(
            ValueError, r"'six_blocks' has num_blocks=6.*factor 4 does not"
        ):
            stack.coarsened(4)
        for factor in (1, 0, 2.0):
            with self.assertRaisesRegex(ValueError, r"integer >= 2"):
                stack.coarsened(factor)

    def test_block_regularizers_sum_over_blocks(self):
        stack = ODEStack(
            ResidualODEBlock(
                3,
                kernel_regularizer=keras.regularizers.L2(0.1),
                bias_regularizer=keras.regularizers.L1(0.3),
                bias_initializer=keras.initializers.RandomNormal(seed=2),
            ),
            num_blocks=5,
        )
        stack(np.ones((2, 3), "float32"))
        kernels = stack.stacked_weights["kernel"].numpy()
        biases = stack.stacked_weights["bias"].numpy()
        expected = sum(
            0.1 * np.sum(kernels[k] ** 2) + 0.3 * np.sum(np.abs(biases[k]))
            for k in range(5)
        )
        self.assertLen(stack.losses, 2)
        self.assertAllClose(sum(stack.losses), expected, rtol=1e-5)

    def test_block_constraint_applied_per_block(self):
        # UnitNorm(axis=0) normalizes each column of one block's (n, n) kernel.
        # Applied to the stacked (K, n, n) tensor as a whole, axis 0 would be
        # the block axis instead.
        model = keras.Sequential(
            [
                keras.Input((3,)),
                ODEStack(
                    ResidualODEBlock(
                        3, kernel_constraint=keras.constraints.UnitNorm(axis=0)
                    ),
                    num_blocks=4,
                ),
            ]
        )
        model.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
        x = np.random.default_rng(3).normal(size=(8, 3)).astype("float32")
        model.train_on_batch(x, 2.0 * x)
        kernels = model.layers[0].stacked_weights["kernel"].numpy()
        self.assertAllClose(
            np.linalg.norm(kernels, axis=1), np.ones((4, 3)), atol=1e-5
        )

    def test_smoothness_penalty_loss(self):
        penalty, num_blocks, time_horizon = 0.3, 6, 2.0
        stack = ODEStack(
            ResidualODEBlock(
                3,
                double_layer=True,
                kernel_initializer=_seeded(),
                bias_initializer=keras.initializers.RandomNormal(seed=2),
            ),
            num_blocks,
            time_horizon,
            smoothness_penalty=penalty,
        )
        stack(np.ones((2, 3), "float32"))
        dt = time_horizon / num_blocks
        total = 0.0
        for weight in stack.stacked_weights.values():
            theta = weight.numpy().astype(np.float64)
            for k in range(num_blocks - 1):
                total += np.sum((theta[k + 1] - theta[k]) ** 2)
        expected = penalty / dt * total
        self.assertGreater(expected, 0.0)
        self.assertLen(stack.losses, 1)
        self.assertAllClose(stack.losses[0], expected, rtol=1e-5)
        self.assertAllClose(stack.smoothness_loss(), expected, rtol=1e-5)

    def test_smoothness_penalty_zero_adds_no_loss(self):
        stack = ODEStack(ResidualODEBlock(3), 4)
        stack(np.ones((2, 3), "float32"))
        self.assertEmpty(stack.losses)

    def test_smoothness_penalty_enters_training_loss(self):
        x, y = _regression_data(32)
        model = _model(8, smoothness_penalty=0.5)
        model.compile(optimizer="sgd", loss="mse")
        mse = np.mean((model.predict(x, verbose=0) - y) ** 2)
        penalty = float(model.layers[1].smoothness_loss())
        self.assertGreater(penalty, 1.0)
        self.assertAllClose(
            model.evaluate(x, y, batch_size=32, verbose=0), mse + penalty,
            rtol=1e-4,
        )

    def test_smoothness_penalty_smooths_weights_in_training(self):
        x, y = _regression_data(64)

        def roughness(penalty):
            keras.utils.set_random_seed(0)
            model = _model(8, smoothness_penalty=penalty)
            model.compile(
                optimizer=keras.optimizers.Adam(0.05), loss="mse", jit_compile=False
            )
            model.fit(x, y, epochs=20, batch_size=64, verbose=0)
            return sum(
                float(np.sum(np.diff(w.numpy(), axis=0) ** 2))
                for w in model.layers[1].stacked_weights.values()
            )

        self.assertLess(roughness(1.0), 0.5 * roughness(0.0))

    @parameterized.named_parameters(("single", False), ("double", True))
    def test_gradient_matches_finite_differences(self, double_layer):
        stack = ODEStack(
            ResidualODEBlock(
                3,
                double_layer=double_layer,
                kernel_initializer=_seeded(),
                bias_initializer=keras.initializers.RandomNormal(seed=1),
            ),
            num_blocks=4,
            time_horizon=2.0,
            dtype="float64",
        )
        inputs = tf.constant(np.random.default_rng(4).normal(size=(5, 3)))
        stack(inputs)
        name = "kernel1" if double_layer else "kernel"
        kernel = stack.stacked_weights[name]
        self.assertEqual(kernel.dtype, "float64")
        weights = np.random.default_rng(5).normal(size=(5, 3))

        def objective():
            return tf.reduce_sum(tf.sin(stack(inputs)) * weights)

        with tf.GradientTape() as tape:
            value = objective()
        gradient = tape.gradient(value, kernel).numpy()

        numeric = np.zeros_like(gradient)
        for index in np.ndindex(gradient.shape):
            numeric[index] = _central_difference(objective, kernel, index)
        self.assertGreater(np.abs(gradient).min(), 0.0)
        self.assertAllClose(gradient, numeric, rtol=1e-6, atol=1e-8)

    def test_xla_matches_eager_with_gradients(self):
        stack = ODEStack(
            ResidualODEBlock(4, double_layer=True, kernel_initializer=_seeded()),
            num_blocks=8,
            time_horizon=2.0,
        )
        inputs = tf.constant(
            np.random.default_rng(6).normal(size=(5, 4)).astype("float32")
        )
        stack(inputs)

        def loss_and_gradients(x):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(tf.square(stack(x)))
            return loss, tape.gradient(loss, stack.trainable_variables)

        eager_loss, eager_gradients = loss_and_gradients(inputs)
        compiled = tf.function(loss_and_gradients, jit_compile=True)
        xla_loss, xla_gradients = compiled(inputs)
        self.assertAllClose(xla_loss, eager_loss, rtol=1e-5)
        self.assertLen(xla_gradients, 4)
        for xla, eager in zip(xla_gradients, eager_gradients):
            self.assertAllClose(xla, eager, rtol=1e-4, atol=1e-5)
        # It really went through XLA.
        self.assertIn(
            "HloModule",
            compiled.experimental_get_compiler_ir(inputs)(stage="hlo"),
        )

    def test_fit_with_xla_lowers_loss(self):
        x, y = _regression_data(128)
        model = _model(16, time_horizon=2.0)
        model.compile(
            optimizer=keras.optimizers.Adam(0.01), loss="mse", jit_compile=True
        )
        history = model.fit(x, y, epochs=15, batch_size=32, verbose=0)
        losses = history.history["loss"]
        self.assertLess(losses[-1], 0.5 * losses[0])

    def test_traced_graph_size_does_not_grow_with_num_blocks(self):
        def traced(num_blocks):
            keras.utils.set_random_seed(0)
            stack = ODEStack(
                ResidualODEBlock(4, double_layer=True), num_blocks, 1.0
            )
            inputs = tf.ones((2, 4))
            stack(inputs)

            @tf.function
            def loss_and_gradients(x):
                with tf.GradientTape() as tape:
                    loss = tf.reduce_sum(tf.square(stack(x)))
                return loss, tape.gradient(loss, stack.trainable_variables)

            return _graph_size(loss_and_gradients.get_concrete_function(inputs))

        small_ops, small_functions = traced(4)
        large_ops, large_functions = traced(64)
        self.assertGreater(small_functions, 0)  # The loop body lives there.
        self.assertEqual(small_functions, large_functions)
        self.assertEqual(small_ops, large_ops)



def _conv_stack(num_blocks=3, dtype=None, **block_kwargs):
    return ODEStack(
        ConvResidualODEBlock(
            3,
            kernel_initializer=_seeded(),
            bias_initializer=keras.initializers.RandomNormal(seed=7),
            **block_kwargs,
        ),
        num_blocks=num_blocks,
        time_horizon=1.5,
        dtype=dtype,
    )


def _conv_inputs(dtype="float32"):
    shape = (4, 5, 6, 3)
    return np.random.default_rng(8).normal(size=shape).astype(dtype)


def _randomize_stacked_state(stack):
    rng = np.random.default_rng(9)
    for name, variable in stack.stacked_state.items():
        values = rng.normal(size=variable.shape)
        variable.assign(np.exp(values) if "variance" in name else values)


class ConvODEStackTest(tf.test.TestCase, parameterized.TestCase):
    """ODEStack with convolutional blocks, batch normalization's state."""

    def setUp(self):
        super().setUp()
        keras.utils.set_random_seed(4321)

    @parameterized.named_parameters(
        ("plain", {}, False),
        ("plain_double", {"double_layer": True}, False),
        ("batch_norm_inference", {"normalization": "batch"}, False),
        ("batch_norm_training", {"normalization": "batch"}, True),
        (
            "batch_norm_double_training",
            {"normalization": "batch", "double_layer": True, "momentum": 0.5},
            True,
        ),
    )
    def test_equals_standalone_blocks_in_sequence(self, kwargs, training):
        # Each block of the stack has its own statistics: the stack equals K
        # standalone blocks in a row, outputs and updated statistics alike.
        stack = _conv_stack(**kwargs)
        inputs = _conv_inputs()
        stack.build(inputs.shape)
        _randomize_stacked_state(stack)
        blocks = _standalone_blocks(stack, inputs.shape)
        outputs = stack(inputs, training=training)
        expected = tf.constant(inputs)
        for block in blocks:
            expected = block(expected, training=training)
        self.assertAllClose(outputs, expected, rtol=1e-4, atol=1e-5)
        for name, stacked in stack.stacked_state.items():
            self.assertAllClose(
                stacked,
                np.stack([block.block_state()[name] for block in blocks]),
                rtol=1e-5,
                atol=1e-6,
            )

    def test_training_updates_state_inference_and_frozen_do_not(self):
        stack = _conv_stack(normalization="batch")
        inputs = _conv_inputs()
        stack(inputs, training=False)
        self.assertLen(stack.non_trainable_variables, 2)
        self.assertEqual(
            {n: tuple(v.shape) for n, v in stack.stacked_state.items()},
            {"moving_mean": (3, 3), "moving_variance": (3, 3)},
        )
        self.assertAllEqual(stack.stacked_state["moving_mean"], np.zeros((3, 3)))
        stack(inputs, training=True)
        means = stack.stacked_state["moving_mean"].numpy()
        self.assertTrue(np.all(means != 0.0))
        # Blocks see different states, so their statistics differ.
        self.assertNotAllClose(means[0], means[1])
        stack.trainable = False
        expected = stack(inputs, training=False)
        self.assertAllClose(stack(inputs, training=True), expected)
        self.assertAllEqual(stack.stacked_state["moving_mean"], means)

    def test_xla_matches_eager_with_gradients_and_state(self):
        results = []
        for jit_compile in (False, True):
            keras.utils.set_random_seed(0)
            stack = _conv_stack(
                num_blocks=4, normalization="batch", double_layer=True
            )
            inputs = tf.constant(_conv_inputs())
            stack.build(inputs.shape)

            def loss_and_gradients(x):
                with tf.GradientTape() as tape:
                    loss = tf.reduce_sum(tf.square(stack(x, training=True)))
                return loss, tape.gradient(loss, stack.trainable_variables)

            compiled = tf.function(loss_and_gradients, jit_compile=jit_compile)
            loss, gradients = compiled(inputs)
            state = [v.numpy() for v in stack.stacked_state.values()]
            results.append((loss, gradients, state))
            if jit_compile:
                self.assertIn(
                    "HloModule",
                    compiled.experimental_get_compiler_ir(inputs)(stage="hlo"),
                )
        (eager_loss, eager_grads, eager_state), (xla_loss, xla_grads, xla_state) = (
            results
        )
        self.assertAllClose(xla_loss, eager_loss, rtol=1e-5)
        for xla, eager in zip(xla_grads + xla_state, eager_grads + eager_state):
            self.assertAllClose(xla, eager, rtol=1e-4, atol=1e-5)

    @parameterized.named_parameters(
        ("plain", {}), ("batch_norm", {"normalization": "batch"})
    )
    def test_gradient_matches_finite_differences(self, kwargs):
        stack = _conv_stack(num_blocks=2, dtype="float64", activation="tanh",
                            **kwargs)
        inputs = tf.constant(_conv_inputs("float64"))
        stack.build(inputs.shape)
        kernel = stack.stacked_weights["kernel"]
        weights = np.random.default_rng(5).normal(size=inputs.shape)
        state = [v.numpy() for v in stack.stacked_state.values()]

        def objective():
            value = tf.reduce_sum(tf.sin(stack(inputs, training=True)) * weights)
            # Training calls move the statistics; keep the point fixed.
            for variable, values in zip(stack.stacked_state.values(), state):
                variable.assign(values)
            return value

        with tf.GradientTape() as tape:
            value = objective()
        gradient = tape.gradient(value, kernel).numpy()
        rng = np.random.default_rng(6)
        for _ in range(12):  # Random entries: the kernel has 162.
            index = tuple(rng.integers(0, n) for n in gradient.shape)
            self.assertAllClose(
                gradient[index], _central_difference(objective, kernel, index),
                rtol=1e-5, atol=1e-8,
            )

    def test_coarsened_stage_has_its_own_state(self):
        stack = _conv_stack(num_blocks=4, normalization="batch")
        stack.build((None, 5, 6, 3))
        coarse = stack.coarsened(2)
        coarse.build((None, 5, 6, 3))
        self.assertEqual(tuple(coarse.stacked_state["moving_mean"].shape), (2, 3))
        self.assertIsNot(
            coarse.stacked_state["moving_mean"], stack.stacked_state["moving_mean"]
        )

    def test_save_and_load_model_keeps_state(self):
        model = keras.Sequential([
            keras.Input((5, 6, 3)),
            _conv_stack(normalization="batch", double_layer=True),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2),
        ])
        inputs = _conv_inputs()
        model(inputs, training=True)
        expected = model.predict(inputs, verbose=0)
        path = os.path.join(self.get_temp_dir(), "conv_stack.keras")
        model.save(path)
        loaded = keras.models.load_model(path)
        stage = loaded.layers[0]
        self.assertIsInstance(stage.block, ConvResidualODEBlock)
        for name, variable in model.layers[0].stacked_state.items():
            self.assertAllClose(stage.stacked_state[name], variable)
        self.assertAllClose(loaded.predict(inputs, verbose=0), expected)

    def test_traced_graph_size_does_not_grow_with_num_blocks(self):
        def traced(num_blocks):
            stack = _conv_stack(num_blocks, normalization="batch")
            inputs = tf.constant(_conv_inputs())
            stack(inputs)

            @tf.function
            def step(x):
                with tf.GradientTape() as tape:
                    loss = tf.reduce_sum(tf.square(stack(x, training=True)))
                return loss, tape.gradient(loss, stack.trainable_variables)

            return _graph_size(step.get_concrete_function(inputs))

        self.assertEqual(traced(2), traced(16))


if __name__ == "__main__":
    tf.test.main()

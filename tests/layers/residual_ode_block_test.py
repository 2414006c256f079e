"""Tests for keras_mlres.layers.ResidualODEBlock."""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from keras_mlres.layers import ODEBlock
from keras_mlres.layers import ResidualODEBlock


def _numpy_forward(block, inputs):
    """`y + dt * F(y)` computed by hand from the block's weights."""
    weights = {name: w.numpy() for name, w in block.block_weights().items()}
    act = {"tanh": np.tanh, "relu": lambda z: np.maximum(z, 0.0)}[
        keras.activations.serialize(block.activation)
    ]

    def affine(y, suffix):
        out = y @ weights["kernel" + suffix]
        if block.use_bias:
            out = out + weights["bias" + suffix]
        return out

    if block.double_layer:
        step = affine(act(affine(inputs, "1")), "2")
    else:
        step = act(affine(inputs, ""))
    return inputs + block.dt * step


class ResidualODEBlockTest(tf.test.TestCase, parameterized.TestCase):

    def setUp(self):
        super().setUp()
        keras.utils.set_random_seed(1234)

    @parameterized.named_parameters(
        ("single_2d", {}, (5, 4)),
        ("single_3d", {}, (2, 3, 4)),
        ("double", {"double_layer": True}, (5, 4)),
        ("double_wide_hidden", {"double_layer": True, "hidden_units": 7}, (5, 4)),
        ("no_bias", {"use_bias": False}, (5, 4)),
    )
    def test_output_shape(self, kwargs, shape):
        block = ResidualODEBlock(4, dt=0.1, **kwargs)
        outputs = block(np.ones(shape, dtype="float32"))
        self.assertEqual(tuple(outputs.shape), shape)
        self.assertEqual(block.compute_output_shape(shape), shape)
        self.assertIsInstance(block, ODEBlock)

    @parameterized.named_parameters(
        ("double_wide_hidden", True, 7, [(4, 7), (7,), (7, 4), (4,)]),
        ("double_default_hidden", True, None, [(4, 4), (4,), (4, 4), (4,)]),
        ("single", False, None, [(4, 4), (4,)]),
    )
    def test_weight_shapes(self, double_layer, hidden_units, shapes):
        block = ResidualODEBlock(
            4, double_layer=double_layer, hidden_units=hidden_units
        )
        block.build((None, 4))
        self.assertEqual([tuple(w.shape) for w in block.weights], shapes)

    @parameterized.named_parameters(
        ("single_bias", False, True, "tanh", 0.3),
        ("single_no_bias", False, False, "tanh", 0.3),
        ("double_bias", True, True, "tanh", 0.05),
        ("double_no_bias", True, False, "tanh", 0.05),
        ("single_relu", False, True, "relu", 2.0),
        ("double_relu_hidden", True, True, "relu", 0.7),
    )
    def test_forward_matches_numpy(self, double_layer, use_bias, activation, dt):
        block = ResidualODEBlock(
            4,
            activation=activation,
            dt=dt,
            double_layer=double_layer,
            hidden_units=6 if activation == "relu" and double_layer else None,
            use_bias=use_bias,
            # Non-zero biases, so that a dropped bias would be noticed.
            bias_initializer=keras.initializers.RandomNormal(seed=3),
        )
        inputs = np.random.default_rng(0).normal(size=(8, 4)).astype("float32")
        outputs = block(inputs)
        self.assertEqual(block.dt, dt)
        self.assertAllClose(
            outputs, _numpy_forward(block, inputs), rtol=1e-5, atol=1e-6
        )
        # The step itself is not trivially small, so dt is really tested.
        self.assertGreater(np.abs(outputs.numpy() - inputs).max(), 1e-2)

    def test_step_is_linear_in_dt(self):
        inputs = np.random.default_rng(1).normal(size=(3, 4)).astype("float32")
        small = ResidualODEBlock(4, dt=0.1)
        small.build((None, 4))
        large = ResidualODEBlock(4, dt=0.4)
        large.build((None, 4))
        large.set_weights(small.get_weights())
        self.assertAllClose(
            large(inputs) - inputs, 4.0 * (small(inputs) - inputs), rtol=1e-5
        )

    @parameterized.named_parameters(
        ("single", {}),
        ("double", {"double_layer": True, "hidden_units": 6}),
        (
            "everything_set",
            {
                "activation": "relu",
                "dt": 0.25,
                "use_bias": False,
                "kernel_initializer": keras.initializers.RandomNormal(
                    stddev=0.3, seed=5
                ),
                "kernel_regularizer": keras.regularizers.L2(0.01),
                "bias_regularizer": keras.regularizers.L1(0.02),
                "kernel_constraint": keras.constraints.MaxNorm(2.0),
                "bias_constraint": keras.constraints.NonNeg(),
                "name": "my_block",
            },
        ),
    )
    def test_config_round_trip(self, kwargs):
        block = ResidualODEBlock(4, **kwargs)
        config = block.get_config()
        restored = ResidualODEBlock.from_config(config)
        self.assertEqual(restored.get_config(), config)
        self.assertEqual(config["dt"], kwargs.get("dt", 1.0))

        serialized = keras.saving.serialize_keras_object(block)
        self.assertEqual(
            serialized["registered_name"], "keras_mlres>ResidualODEBlock"
        )
        deserialized = keras.saving.deserialize_keras_object(serialized)
        self.assertIsInstance(deserialized, ResidualODEBlock)
        self.assertEqual(deserialized.get_config(), config)

    def test_deserialized_block_computes_the_same(self):
        block = ResidualODEBlock(4, dt=0.2, double_layer=True)
        inputs = np.random.default_rng(2).normal(size=(3, 4)).astype("float32")
        expected = block(inputs)
        copy = keras.saving.deserialize_keras_object(
            keras.saving.serialize_keras_object(block)
        )
        # The build config travels with the serialized layer.
        self.assertTrue(copy.built)
        copy.set_weights(block.get_weights())
        self.assertAllClose(copy(inputs), expected)

    def test_with_dt_returns_unbuilt_copy(self):
        block = ResidualODEBlock(4, dt=0.5, double_layer=True, name="blk")
        block.build((None, 4))
        copy = block.with_dt(0.125, name="copy")
        self.assertIsInstance(copy, ResidualODEBlock)
        self.assertEqual(copy.dt, 0.125)
        self.assertEqual(copy.name, "copy")
        self.assertFalse(copy.built)
        self.assertTrue(copy.double_layer)
        self.assertEqual(block.dt, 0.5)
        self.assertEqual(block.with_dt(2.0).name, "blk")

    def test_width_mismatch_raises(self):
        block = ResidualODEBlock(4, name="narrow_block")
        with self.assertRaisesRegex(
            ValueError, r"'narrow_block' has units=4 .*3 features.*Dense"
        ):
            block(np.ones((2, 3), dtype="float32"))

    @parameterized.named_parameters(
        ("zero", 0.0),
        ("negative", -0.1),
        ("nan", float("nan")),
        ("infinite", float("inf")),
    )
    def test_bad_dt_raises(self, dt):
        with self.assertRaisesRegex(ValueError, r"`dt` must be a positive"):
            ResidualODEBlock(4, dt=dt)

    @parameterized.named_parameters(
        ("string_dt", dict(dt="0.1"), "`dt` must be a positive.*dt='0.1'"),
        ("no_dt", dict(dt=None), "`dt` must be a positive.*dt=None"),
        (
            "string_double_layer",
            dict(double_layer="no"),
            "`double_layer` must be True or False. Received: "
            "double_layer='no'",
        ),
        (
            "string_use_bias",
            dict(use_bias="False"),
            "`use_bias` must be True or False",
        ),
    )
    def test_bad_options_raise(self, kwargs, message):
        with self.assertRaisesRegex(ValueError, message):
            ResidualODEBlock(4, **kwargs)

    @parameterized.named_parameters(
        ("zero", 0), ("float", 2.5), ("negative", -3), ("bool", True)
    )
    def test_bad_units_raise(self, units):
        with self.assertRaisesRegex(ValueError, r"`units` must be a positive"):
            ResidualODEBlock(units)

    @parameterized.named_parameters(
        ("zero", 0), ("float", 3.7), ("negative", -2), ("string", "8")
    )
    def test_bad_hidden_units_raise(self, hidden_units):
        with self.assertRaisesRegex(
            ValueError, r"`hidden_units` must be an integer >= 1"
        ):
            ResidualODEBlock(4, double_layer=True, hidden_units=hidden_units)

    def test_numpy_integer_units(self):
        block = ResidualODEBlock(np.int64(4))
        self.assertIs(type(block.units), int)
        self.assertEqual(block.get_config()["units"], 4)

    def test_hidden_units_without_double_layer(self):
        # `hidden_units` is documented as the hidden width of the double-layer
        # variant. A single-layer block must either ignore it (and keep the
        # width) or reject it clearly; it must not build a kernel that breaks
        # the residual sum.
        inputs = np.random.default_rng(3).normal(size=(2, 4)).astype("float32")
        try:
            block = ResidualODEBlock(4, hidden_units=8, dt=0.1)
        except ValueError as error:
            self.assertRegex(str(error), "hidden_units")
            return
        outputs = block(inputs)
        self.assertEqual(tuple(outputs.shape), (2, 4))
        self.assertAllClose(outputs, _numpy_forward(block, inputs), rtol=1e-5)

    def test_double_layer_kernels_differ_at_initialization(self):
        # With the default (unseeded) initializer the two kernels of the
        # double-layer block must be independent draws, not the same matrix.
        block = ResidualODEBlock(4, double_layer=True)
        block.build((None, 4))
        self.assertNotAllClose(block.kernel1, block.kernel2)

    def test_regularizers_produce_losses(self):
        block = ResidualODEBlock(
            3,
            double_layer=True,
            kernel_regularizer=keras.regularizers.L2(0.1),
            bias_regularizer=keras.regularizers.L1(0.2),
            bias_initializer=keras.initializers.RandomNormal(seed=4),
        )
        block(np.ones((2, 3), dtype="float32"))
        weights = {n: w.numpy() for n, w in block.block_weights().items()}
        expected = 0.1 * (
            np.sum(weights["kernel1"] ** 2) + np.sum(weights["kernel2"] ** 2)
        ) + 0.2 * (
            np.sum(np.abs(weights["bias1"])) + np.sum(np.abs(weights["bias2"]))
        )
        self.assertLen(block.losses, 4)
        self.assertAllClose(sum(block.losses), expected, rtol=1e-5)

    def test_no_regularizer_no_losses(self):
        block = ResidualODEBlock(3)
        block(np.ones((2, 3), dtype="float32"))
        self.assertEmpty(block.losses)

    def test_constraints_applied_after_update(self):
        block = ResidualODEBlock(
            3,
            kernel_constraint=keras.constraints.NonNeg(),
            bias_constraint=keras.constraints.NonNeg(),
        )
        model = keras.Sequential([keras.Input((3,)), block])
        model.compile(optimizer=keras.optimizers.SGD(1.0), loss="mse")
        self.assertLess(block.kernel.numpy().min(), 0.0)
        x = np.ones((4, 3), dtype="float32")
        model.train_on_batch(x, 10.0 * x)
        self.assertGreaterEqual(block.kernel.numpy().min(), 0.0)
        self.assertGreaterEqual(block.bias.numpy().min(), 0.0)

    def test_float64(self):
        block = ResidualODEBlock(3, dt=0.5, dtype="float64")
        inputs = np.random.default_rng(4).normal(size=(2, 3))
        outputs = block(inputs)
        self.assertEqual(outputs.dtype, tf.float64)
        self.assertAllClose(
            outputs, _numpy_forward(block, inputs), rtol=1e-12, atol=1e-12
        )

    @parameterized.named_parameters(
        ("single", False), ("double", True)
    )
    def test_training_lowers_loss(self, double_layer):
        rng = np.random.default_rng(5)
        x = rng.uniform(-1.0, 1.0, size=(64, 2)).astype("float32")
        y = np.sin(2.0 * x[:, :1]) * x[:, 1:]
        model = keras.Sequential(
            [
                keras.Input((2,)),
                keras.layers.Dense(8, activation="tanh"),
                ResidualODEBlock(8, dt=0.5, double_layer=double_layer),
                ResidualODEBlock(8, dt=0.5, double_layer=double_layer),
                keras.layers.Dense(1),
            ]
        )
        model.compile(optimizer=keras.optimizers.Adam(0.02), loss="mse")
        history = model.fit(x, y, epochs=30, batch_size=16, verbose=0)
        losses = history.history["loss"]
        self.assertLess(losses[-1], 0.5 * losses[0])


if __name__ == "__main__":
    tf.test.main()

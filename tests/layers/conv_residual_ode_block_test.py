"""Tests for keras_mlres.layers.ConvResidualODEBlock."""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from keras_mlres.layers import ConvResidualODEBlock
from keras_mlres.layers import ODEBlock
from keras_mlres.layers import ODEStack

_ACTIVATIONS = {"tanh": np.tanh, "relu": lambda z: np.maximum(z, 0.0)}


def _numpy_conv(images, kernel):
    """'same' stride-1 convolution (cross-correlation, as Keras) by hand."""
    kh, kw = kernel.shape[:2]
    padded = np.pad(
        images, [(0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)]
    )
    height, width = images.shape[1:3]
    out = np.zeros(images.shape[:3] + (kernel.shape[-1],))
    for i in range(kh):
        for j in range(kw):
            window = padded[:, i : i + height, j : j + width, :]
            out += window @ kernel[i, j]
    return out


def _numpy_forward(block, inputs, training=False):
    """`y + dt * F(y)` computed by hand from the block's variables.

    Returns the output and, in training mode with batch normalization, the
    expected new moving statistics.
    """
    variables = {**block.block_weights(), **block.block_state()}
    values = {name: v.numpy().astype(np.float64) for name, v in variables.items()}
    act = _ACTIVATIONS[keras.activations.serialize(block.activation)]
    suffixes = ("1", "2") if block.double_layer else ("",)
    outputs, state = inputs.astype(np.float64), {}
    for index, suffix in enumerate(suffixes):
        outputs = _numpy_conv(outputs, values["kernel" + suffix])
        if block.use_bias:
            outputs = outputs + values["bias" + suffix]
        if block.normalization == "batch":
            if training:
                mean = outputs.mean(axis=(0, 1, 2))
                variance = outputs.var(axis=(0, 1, 2))  # Biased, as Keras.
                for name, batch in (("moving_mean", mean),
                                    ("moving_variance", variance)):
                    state[name + suffix] = (
                        block.momentum * values[name + suffix]
                        + (1.0 - block.momentum) * batch
                    )
            else:
                mean = values["moving_mean" + suffix]
                variance = values["moving_variance" + suffix]
            outputs = (outputs - mean) / np.sqrt(variance + block.epsilon)
            outputs = outputs * values["gamma" + suffix] + values["beta" + suffix]
        if index == 0:
            outputs = act(outputs)
    return inputs + block.dt * outputs, state


def _images(shape=(3, 6, 5, 4), seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _randomize_state(block, seed=1):
    """Non-trivial moving statistics (variances positive)."""
    rng = np.random.default_rng(seed)
    for name, variable in block.block_state().items():
        values = rng.normal(size=variable.shape)
        if "variance" in name:
            values = np.exp(values)
        variable.assign(values)


class ConvResidualODEBlockTest(tf.test.TestCase, parameterized.TestCase):

    def setUp(self):
        super().setUp()
        keras.utils.set_random_seed(1234)

    @parameterized.named_parameters(
        ("single", {}),
        ("double", {"double_layer": True}),
        ("double_wide_hidden", {"double_layer": True, "hidden_filters": 7}),
        ("batch_norm", {"normalization": "batch"}),
        ("kernel_5x3", {"kernel_size": (5, 3)}),
        ("kernel_1", {"kernel_size": 1}),
    )
    def test_output_shape(self, kwargs):
        shape = (2, 7, 6, 4)
        block = ConvResidualODEBlock(4, dt=0.1, **kwargs)
        outputs = block(np.ones(shape, dtype="float32"))
        self.assertEqual(tuple(outputs.shape), shape)
        self.assertEqual(block.compute_output_shape(shape), shape)
        self.assertIsInstance(block, ODEBlock)

    @parameterized.named_parameters(
        ("single", {}, [(3, 3, 4, 4), (4,)], []),
        (
            "double_hidden",
            {"double_layer": True, "hidden_filters": 6, "kernel_size": (3, 5)},
            [(3, 5, 4, 6), (6,), (3, 5, 6, 4), (4,)],
            [],
        ),
        (
            "batch_norm",
            {"normalization": "batch"},
            [(3, 3, 4, 4), (4,), (4,)],
            [(4,), (4,)],
        ),
        (
            "batch_norm_double_with_bias",
            {"normalization": "batch", "double_layer": True, "use_bias": True},
            [(3, 3, 4, 4), (4,), (4,), (4,)] * 2,
            [(4,), (4,)] * 2,
        ),
    )
    def test_variable_shapes(self, kwargs, trainable, state):
        block = ConvResidualODEBlock(4, **kwargs)
        block.build((None, 8, 8, 4))
        self.assertEqual(
            [tuple(w.shape) for w in block.trainable_weights], trainable
        )
        self.assertEqual(
            [tuple(w.shape) for w in block.non_trainable_weights], state
        )

    @parameterized.named_parameters(
        ("single_bias", {}),
        ("single_no_bias", {"use_bias": False, "activation": "tanh"}),
        ("double", {"double_layer": True, "hidden_filters": 5, "dt": 0.3}),
        ("kernel_5x3", {"kernel_size": (5, 3), "activation": "tanh"}),
        ("batch_norm", {"normalization": "batch"}),
        ("batch_norm_double", {"normalization": "batch", "double_layer": True}),
    )
    def test_forward_matches_numpy(self, kwargs):
        block = ConvResidualODEBlock(
            4,
            **{"dt": 0.5, **kwargs},
            # Non-zero biases, so that a dropped bias would be noticed.
            bias_initializer=keras.initializers.RandomNormal(seed=3),
        )
        inputs = _images()
        block.build(inputs.shape)
        _randomize_state(block)
        for training in (False, True):
            expected, _ = _numpy_forward(block, inputs, training)
            outputs = block(inputs, training=training)
            self.assertAllClose(outputs, expected, rtol=1e-4, atol=1e-5)
            self.assertGreater(np.abs(outputs.numpy() - inputs).max(), 1e-2)

    @parameterized.named_parameters(("single", False), ("double", True))
    def test_batch_norm_matches_keras_layers(self, double_layer):
        # The block equals Conv2D -> BatchNormalization -> act (-> Conv2D ->
        # BatchNormalization) of Keras, in both modes, and updates its moving
        # statistics as keras.layers.BatchNormalization does.
        block = ConvResidualODEBlock(
            4, activation="relu", normalization="batch",
            double_layer=double_layer, dt=0.7, momentum=0.8, epsilon=1e-2,
        )
        inputs = _images()
        block.build(inputs.shape)
        suffixes = ("1", "2") if double_layer else ("",)
        convs, norms = [], []
        for suffix in suffixes:
            conv = keras.layers.Conv2D(4, 3, padding="same", use_bias=False)
            conv.build((None, 6, 5, 4))
            conv.kernel.assign(getattr(block, "kernel" + suffix))
            norm = keras.layers.BatchNormalization(momentum=0.8, epsilon=1e-2)
            norm.build((None, 6, 5, 4))
            rng = np.random.default_rng(len(convs))
            for name in ("gamma", "beta"):
                values = rng.normal(size=4)
                getattr(block, name + suffix).assign(values)
                getattr(norm, name).assign(values)
            convs.append(conv)
            norms.append(norm)

        def reference(training):
            outputs = inputs
            for index, (conv, norm) in enumerate(zip(convs, norms)):
                outputs = norm(conv(outputs), training=training)
                if index == 0:
                    outputs = keras.activations.relu(outputs)
            return inputs + 0.7 * outputs

        for step in range(3):
            training = step < 2
            self.assertAllClose(
                block(inputs, training=training), reference(training),
                rtol=1e-4, atol=1e-5,
            )
            for suffix, norm in zip(suffixes, norms):
                self.assertAllClose(
                    getattr(block, "moving_mean" + suffix), norm.moving_mean,
                    rtol=1e-5, atol=1e-6,
                )
                self.assertAllClose(
                    getattr(block, "moving_variance" + suffix),
                    norm.moving_variance, rtol=1e-5, atol=1e-6,
                )
        # Two training calls moved the statistics: the check is not vacuous.
        self.assertNotAllClose(
            getattr(block, "moving_mean" + suffixes[0]), np.zeros(4)
        )

    def test_inference_and_frozen_block_leave_statistics_alone(self):
        block = ConvResidualODEBlock(4, normalization="batch")
        inputs = _images()
        block(inputs, training=False)
        self.assertAllEqual(block.moving_mean, np.zeros(4))
        block.trainable = False
        expected, _ = _numpy_forward(block, inputs, training=False)
        # A frozen block runs in inference mode, as a frozen BN layer.
        self.assertAllClose(
            block(inputs, training=True), expected, rtol=1e-4, atol=1e-5
        )
        self.assertAllEqual(block.moving_variance, np.ones(4))

    def test_step_is_linear_in_dt(self):
        inputs = _images(seed=1)
        small = ConvResidualODEBlock(4, dt=0.1)
        small.build(inputs.shape)
        large = ConvResidualODEBlock(4, dt=0.4)
        large.build(inputs.shape)
        large.set_weights(small.get_weights())
        self.assertAllClose(
            large(inputs) - inputs, 4.0 * (small(inputs) - inputs),
            rtol=1e-5, atol=1e-6,
        )

    @parameterized.named_parameters(
        ("default", {}),
        ("double_bn", {"double_layer": True, "hidden_filters": 6,
                       "normalization": "batch", "momentum": 0.5}),
        (
            "everything_set",
            {
                "kernel_size": (5, 3),
                "activation": "tanh",
                "dt": 0.25,
                "use_bias": False,
                "epsilon": 0.01,
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
        block = ConvResidualODEBlock(4, **kwargs)
        config = block.get_config()
        restored = ConvResidualODEBlock.from_config(config)
        self.assertEqual(restored.get_config(), config)
        serialized = keras.saving.serialize_keras_object(block)
        self.assertEqual(
            serialized["registered_name"], "keras_mlres>ConvResidualODEBlock"
        )
        deserialized = keras.saving.deserialize_keras_object(serialized)
        self.assertIsInstance(deserialized, ConvResidualODEBlock)
        self.assertEqual(deserialized.get_config(), config)

    def test_numpy_integers_count_as_integers(self):
        block = ConvResidualODEBlock(np.int64(4), kernel_size=np.int32(3))
        self.assertIs(type(block.filters), int)
        self.assertEqual(block.kernel_size, (3, 3))
        self.assertIs(type(block.kernel_size[0]), int)

    def test_use_bias_defaults_to_no_bias_with_batch_norm(self):
        self.assertTrue(ConvResidualODEBlock(4).use_bias)
        self.assertFalse(ConvResidualODEBlock(4, normalization="batch").use_bias)

    def test_with_dt_returns_unbuilt_copy(self):
        block = ConvResidualODEBlock(
            4, kernel_size=5, normalization="batch", dt=0.5, name="blk"
        )
        block.build((None, 8, 8, 4))
        copy = block.with_dt(0.125, name="copy")
        self.assertIsInstance(copy, ConvResidualODEBlock)
        self.assertEqual((copy.dt, copy.name, copy.built), (0.125, "copy", False))
        self.assertEqual(copy.kernel_size, (5, 5))
        self.assertEqual(copy.normalization, "batch")

    def test_save_and_load_model_keeps_statistics(self):
        model = keras.Sequential([
            keras.Input((6, 5, 4)),
            ConvResidualODEBlock(4, normalization="batch", dt=0.5),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2),
        ])
        inputs = _images()
        model(inputs, training=True)  # Updates the moving statistics.
        expected = model.predict(inputs, verbose=0)
        path = os.path.join(self.get_temp_dir(), "conv_block.keras")
        model.save(path)
        loaded = keras.models.load_model(path)  # No custom_objects.
        self.assertAllClose(
            loaded.layers[0].moving_mean, model.layers[0].moving_mean
        )
        self.assertNotAllClose(loaded.layers[0].moving_mean, np.zeros(4))
        self.assertAllClose(loaded.predict(inputs, verbose=0), expected)

    @parameterized.named_parameters(
        ("even", 2), ("even_pair", (3, 4)), ("zero", 0), ("triple", (3, 3, 3)),
        ("float", 3.0), ("string", "3"),
    )
    def test_bad_kernel_size_raises(self, kernel_size):
        with self.assertRaisesRegex(ValueError, r"`kernel_size` must be an odd"):
            ConvResidualODEBlock(4, kernel_size=kernel_size)

    @parameterized.named_parameters(
        ("rank_2", (2, 4)), ("rank_3", (2, 5, 4)), ("rank_5", (2, 3, 3, 3, 4))
    )
    def test_input_not_rank_4_raises(self, shape):
        block = ConvResidualODEBlock(4, name="conv_block")
        with self.assertRaisesRegex(
            ValueError, r"'conv_block' needs images .*rank-4.*ResidualODEBlock"
        ):
            block(np.ones(shape, dtype="float32"))

    def test_channel_mismatch_raises(self):
        block = ConvResidualODEBlock(4, name="narrow")
        with self.assertRaisesRegex(
            ValueError, r"'narrow' has filters=4 .*3 channels.*Conv2D"
        ):
            block(np.ones((2, 5, 5, 3), dtype="float32"))

    @parameterized.named_parameters(
        ("zero_filters", dict(filters=0), "`filters` must be a positive"),
        ("float_filters", dict(filters=2.5), "`filters` must be a positive"),
        ("zero_hidden", dict(hidden_filters=0), "`hidden_filters` must be an"),
        ("float_hidden", dict(hidden_filters=2.5), "`hidden_filters` must be"),
        ("normalization", dict(normalization="layer"), "normalization='layer'"),
        ("momentum", dict(momentum=1.0), "`momentum` must be in"),
        ("epsilon", dict(epsilon=0.0), "`epsilon` must be positive"),
        ("dt", dict(dt=0.0), "`dt` must be a positive"),
    )
    def test_bad_arguments_raise(self, overrides, message):
        kwargs = {"filters": 4, **overrides}
        with self.assertRaisesRegex(ValueError, message):
            ConvResidualODEBlock(**kwargs)

    def test_double_layer_kernels_differ_at_initialization(self):
        block = ConvResidualODEBlock(4, double_layer=True)
        block.build((None, 5, 5, 4))
        self.assertNotAllClose(block.kernel1, block.kernel2)

    def test_regularizers_produce_losses(self):
        block = ConvResidualODEBlock(
            3,
            kernel_regularizer=keras.regularizers.L2(0.1),
            bias_regularizer=keras.regularizers.L1(0.2),
            bias_initializer=keras.initializers.RandomNormal(seed=4),
        )
        block(np.ones((2, 4, 4, 3), dtype="float32"))
        expected = 0.1 * np.sum(block.kernel.numpy() ** 2) + 0.2 * np.sum(
            np.abs(block.bias.numpy())
        )
        self.assertAllClose(sum(block.losses), expected, rtol=1e-5)

    def test_float64(self):
        block = ConvResidualODEBlock(
            3, normalization="batch", dt=0.5, dtype="float64"
        )
        inputs = np.random.default_rng(4).normal(size=(2, 5, 5, 3))
        outputs = block(inputs, training=True)
        self.assertEqual(outputs.dtype, tf.float64)
        expected, _ = _numpy_forward(block, inputs)  # Statistics now updated.
        self.assertAllClose(block(inputs), expected, rtol=1e-10, atol=1e-10)

    @parameterized.named_parameters(
        ("single", {}), ("double_bn", {"double_layer": True,
                                       "normalization": "batch"})
    )
    def test_stack_of_conv_blocks_trains_with_xla(self, kwargs):
        rng = np.random.default_rng(5)
        y = rng.integers(0, 2, size=64)
        # The class shifts the image's brightness by +-0.3.
        x = rng.normal(size=(64, 8, 8, 1)) + 0.3 * (2 * y - 1)[:, None, None, None]
        x = x.astype("float32")
        model = keras.Sequential([
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
            ODEStack(ConvResidualODEBlock(4, **kwargs), 4, 1.0),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2),
        ])
        model.compile(
            optimizer=keras.optimizers.Adam(0.02),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            jit_compile=True,
        )
        history = model.fit(x, y.astype("int32"), epochs=15, batch_size=16,
                            verbose=0)
        losses = history.history["loss"]
        self.assertLess(losses[-1], 0.7 * losses[0])


if __name__ == "__main__":
    tf.test.main()

"""Tests of the model builders `keras_mlres.models`."""

import os

import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized

import keras_mlres as mlres
from keras_mlres.layers import ConvResidualODEBlock
from keras_mlres.layers import ODEStack


class OdeResnetTest(parameterized.TestCase, tf.test.TestCase):

    @parameterized.named_parameters(("conv", "conv"), ("pool", "pool"))
    def test_structure_and_output(self, downsampling):
        model = mlres.models.ode_resnet(
            (12, 12, 3), 5, stages=[(4, 2, 1.0), (6, 4, 2.0), (8, 2, 0.5)],
            normalization="batch", double_layer=True, downsampling=downsampling,
        )
        stages = [l for l in model.layers if isinstance(l, ODEStack)]
        self.assertEqual([s.name for s in stages], ["stage0", "stage1", "stage2"])
        self.assertEqual(
            [(s.block.filters, s.num_blocks, s.time_horizon) for s in stages],
            [(4, 2, 1.0), (6, 4, 2.0), (8, 2, 0.5)],
        )
        for stage in stages:
            self.assertIsInstance(stage.block, ConvResidualODEBlock)
            self.assertTrue(stage.block.double_layer)
            self.assertEqual(stage.block.normalization, "batch")
        # Each stage runs at half the resolution of the one before.
        self.assertEqual(
            [tuple(s.output.shape) for s in stages],
            [(None, 12, 12, 4), (None, 6, 6, 6), (None, 3, 3, 8)],
        )
        x = np.random.default_rng(0).normal(size=(2, 12, 12, 3))
        self.assertEqual(model(x.astype("float32")).shape, (2, 5))

    @parameterized.named_parameters(
        ("float64", "float64", "float64", "float64"),
        ("mixed_bfloat16", "mixed_bfloat16", "float32", "bfloat16"),
    )
    def test_dtype_policy(self, dtype, input_dtype, compute_dtype):
        dense = mlres.models.dense_ode_resnet(
            (2,), 3, width=4, num_blocks=4, dtype=dtype
        )
        conv = mlres.models.ode_resnet(
            (8, 8, 1), 3, stages=[(4, 2, 1.0)], dtype=dtype
        )
        for model, shape in ((dense, (2, 2)), (conv, (2, 8, 8, 1))):
            self.assertEqual(model.inputs[0].dtype, input_dtype)
            for layer in model.layers:
                self.assertEqual(layer.dtype_policy.name, dtype)
            outputs = model(np.zeros(shape, input_dtype))
            self.assertEqual(outputs.dtype, compute_dtype)

    def test_two_stage_model_through_the_hierarchy(self):
        model = mlres.models.ode_resnet(
            (8, 8, 1), 3, stages=[(4, 4, 1.0), (8, 8, 1.0)]
        )
        multilevel = mlres.MultilevelModel(model, num_levels=3)
        self.assertEqual(
            [multilevel.hierarchy.num_blocks(l) for l in range(3)],
            [[4, 8], [2, 4], [1, 2]],
        )

    def test_save_and_load(self):
        model = mlres.models.ode_resnet(
            (8, 8, 1), 3, stages=[(4, 2, 1.0), (6, 2, 1.0)],
            normalization="batch",
        )
        x = np.random.default_rng(1).normal(size=(4, 8, 8, 1)).astype("float32")
        model(x, training=True)  # Moves the statistics.
        path = os.path.join(self.get_temp_dir(), "ode_resnet.keras")
        model.save(path)
        loaded = keras.models.load_model(path)
        self.assertAllClose(loaded.predict(x, verbose=0),
                            model.predict(x, verbose=0))
        restored = keras.Sequential.from_config(model.get_config())
        self.assertEqual(restored.get_config(), model.get_config())

    @parameterized.named_parameters(
        ("empty", dict(stages=[]), "`stages` is empty"),
        ("not_triple", dict(stages=[(4, 2)]), "Stage 0 is not a"),
        ("zero_filters", dict(stages=[(0, 2, 1.0)]), r"stages\[0\] filters"),
        ("zero_blocks", dict(stages=[(4, 2, 1.0), (4, 0, 1.0)]),
         r"stages\[1\] num_blocks"),
        ("negative_horizon", dict(stages=[(4, 2, -1.0)]), "time_horizon"),
        ("vector_input", dict(input_shape=(8,)), "dense_ode_resnet"),
        ("too_small", dict(input_shape=(3, 3, 1),
                           stages=[(4, 2, 1.0)] * 3), "height and width >= 4"),
        ("downsampling", dict(downsampling="stride"), "downsampling"),
        ("even_kernel", dict(kernel_size=2), "odd"),
        ("classes", dict(num_classes=0), "num_classes"),
    )
    def test_bad_arguments(self, overrides, message):
        kwargs = dict(input_shape=(8, 8, 1), num_classes=3,
                      stages=[(4, 2, 1.0)])
        kwargs.update(overrides)
        with self.assertRaisesRegex(ValueError, message):
            mlres.models.ode_resnet(**kwargs)


if __name__ == "__main__":
    tf.test.main()

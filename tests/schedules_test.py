"""Tests for keras_mlres.schedules."""

import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from keras_mlres import schedules


def _decay():
    return keras.optimizers.schedules.ExponentialDecay(
        0.01, decay_steps=10, decay_rate=0.5
    )


class ScaledLearningRateTest(tf.test.TestCase, parameterized.TestCase):

    @parameterized.parameters(0, 1, 7, 25)
    def test_is_the_schedule_times_the_factor(self, step):
        scaled = schedules.ScaledLearningRate(_decay(), 8.0)
        expected = 8.0 * 0.01 * 0.5 ** (step / 10)
        self.assertAllClose(scaled(step), expected, rtol=1e-6)

    def test_config_round_trip(self):
        scaled = schedules.ScaledLearningRate(_decay(), 4.0)
        restored = keras.saving.deserialize_keras_object(
            keras.saving.serialize_keras_object(scaled)
        )
        self.assertIsInstance(restored, schedules.ScaledLearningRate)
        self.assertEqual(restored.get_config(), scaled.get_config())
        for step in (0, 13):
            self.assertAllClose(restored(step), scaled(step))

    def test_optimizer_with_scaled_schedule_round_trips(self):
        optimizer = keras.optimizers.Adam(
            schedules.ScaledLearningRate(_decay(), 2.0)
        )
        clone = keras.optimizers.Adam.from_config(optimizer.get_config())
        self.assertAllClose(clone.learning_rate, 0.02)


class ScaleLearningRateTest(tf.test.TestCase, parameterized.TestCase):

    @parameterized.parameters((0.01, 8, 0.08), (1, 2, 2.0), (0.3, 0.5, 0.15))
    def test_numbers_are_multiplied(self, rate, factor, expected):
        scaled = schedules.scale_learning_rate(rate, factor)
        self.assertIsInstance(scaled, float)
        self.assertAlmostEqual(scaled, expected)

    def test_factor_one_returns_the_rate_itself(self):
        decay = _decay()
        self.assertIs(schedules.scale_learning_rate(decay, 1), decay)

    @parameterized.named_parameters(
        ("schedule", _decay), ("serialized_schedule", lambda: (
            keras.saving.serialize_keras_object(_decay())
        )),
    )
    def test_schedules_are_wrapped(self, make_rate):
        scaled = schedules.scale_learning_rate(make_rate(), 3)
        self.assertIsInstance(scaled, schedules.ScaledLearningRate)
        self.assertAllClose(scaled(10), 3 * 0.005)

    def test_plain_callable_is_rejected_with_the_fix(self):
        with self.assertRaisesRegex(ValueError, "Pass `level_optimizers`"):
            schedules.scale_learning_rate(lambda: np.float32(0.1), 2)


if __name__ == "__main__":
    tf.test.main()


class WarmupCosineTest(tf.test.TestCase, parameterized.TestCase):

    @parameterized.parameters(
        (0, 0.0), (25, 0.005), (50, 0.01), (525, 0.005), (1000, 0.0),
        (1500, 0.0),
    )
    def test_warms_up_linearly_then_decays_to_zero_at_the_end(
        self, step, expected
    ):
        schedule = schedules.warmup_cosine(0.01, total_steps=1000)
        self.assertAllClose(schedule(step), expected, atol=1e-7)

    def test_warms_up_over_at_least_one_step(self):
        schedule = schedules.warmup_cosine(0.01, total_steps=4)
        self.assertAllClose(schedule(1), 0.01)

    @parameterized.named_parameters(
        ("zero_rate", dict(learning_rate=0.0)),
        ("bool_rate", dict(learning_rate=True)),
        ("one_step", dict(total_steps=1)),
        ("float_steps", dict(total_steps=10.0)),
        ("full_warmup", dict(warmup_fraction=1.0)),
    )
    def test_rejects_out_of_range_arguments(self, change):
        arguments = dict(learning_rate=0.01, total_steps=100)
        arguments.update(change)
        with self.assertRaisesRegex(ValueError, next(iter(change))):
            schedules.warmup_cosine(**arguments)

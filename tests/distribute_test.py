"""Tests MultilevelModel under tf.distribute.MirroredStrategy.

Two logical CPU devices must be configured before TensorFlow starts, so the
comparison runs in a fresh Python process.
"""

import json
import os
import subprocess
import sys
import textwrap

from absl.testing import absltest

import distribute_util

_TESTS = os.path.dirname(os.path.abspath(__file__))

# Two CPU replicas, and the network, data and training of distribute_util.
_SETUP = f"import sys; sys.path.insert(0, {_TESTS!r})\n" + textwrap.dedent(
    """
    import json
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    import numpy as np
    import keras_mlres as mlres
    from distribute_util import arrays, fine, print_results, relative, train

    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    """
)

# Trains the same network on the same global batches under a 2-replica
# MirroredStrategy and on one device, for each configuration, and prints the
# largest relative differences of weights, optimizer states and logs.
_SCRIPT = _SETUP + textwrap.dedent(
    """
    results = {}
    for name, options, optimizer in json.loads(sys.argv[1]):
        got, got_logs = train(mirrored, options, optimizer)
        want, want_logs = train(tf.distribute.get_strategy(), options,
                                optimizer)
        results[name] = {
            "replicas": mirrored.num_replicas_in_sync,
            "states": max(relative(a, b) for a, b in zip(got, want)),
            "logs": {key: relative(got_logs[key], want_logs[key])
                     for key in want_logs if key != "work"},
            "work": [got_logs["work"][-1], want_logs["work"][-1]],
        }
    print_results(results)
    """
)

# Under the strategy: one clean epoch, then an epoch on NaN inputs, which
# must raise and put every replica's weights and optimizer state back.
_RESTORE_SCRIPT = _SETUP + textwrap.dedent(
    """
    x, y = arrays()
    with mirrored.scope():
        model = mlres.MultilevelModel(fine(), num_levels=2)
        model.compile(
            keras.optimizers.Adam(0.01),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    variables = list(model.weights)
    for opt in [model.optimizer] + model.level_optimizers:
        variables += opt.variables
    before = [[r.numpy() for r in v.value.values] for v in variables]
    nan = tf.data.Dataset.from_tensor_slices((x * np.nan, y)).batch(16)
    try:
        model.fit(nan, epochs=2, initial_epoch=1, verbose=0)
        raised = None
    except mlres.NonFiniteLossError as error:
        raised = error.monitor
    after = [[r.numpy() for r in v.value.values] for v in variables]
    print_results({
        "raised": raised,
        "replicas": len(before[0]),
        "restored": all(
            np.array_equal(a, b)
            for replicas_a, replicas_b in zip(after, before)
            for a, b in zip(replicas_a, replicas_b)),
    })
    """
)

_CASES = [
    ("v_cycle_3_levels_adam_line_search",
     {"num_levels": 3, "cycle": "V", "line_search": True},
     {"class_name": "Adam", "config": {"learning_rate": 0.01}}),
    ("w_cycle_2_levels_momentum",
     {"num_levels": 2, "cycle": "W", "line_search": False,
      "coarse_optimizer_state": "keep"},
     {"class_name": "SGD", "config": {"learning_rate": 0.1, "momentum": 0.9}}),
    ("nested_iteration",
     {"num_levels": 3, "cycle": "none", "nested_iteration": True,
      "max_level_epochs": 1},
     {"class_name": "SGD", "config": {"learning_rate": 0.1}}),
]


class MirroredStrategyTest(absltest.TestCase):

    def _run(self, script, *args):
        """Runs `script` in a fresh process; returns its RESULTS json."""
        completed = subprocess.run(
            [sys.executable, "-c", script, *args],
            capture_output=True, text=True, timeout=600,
        )
        self.assertEqual(completed.returncode, 0, completed.stderr[-3000:])
        return distribute_util.parse_results(completed.stdout)

    def test_a_nan_epoch_is_undone_on_every_replica(self):
        result = self._run(_RESTORE_SCRIPT)
        self.assertEqual(
            result, {"raised": "loss", "replicas": 2, "restored": True}
        )

    def test_two_replicas_match_one_device(self):
        results = self._run(_SCRIPT, json.dumps(_CASES))
        self.assertEqual(set(results), {name for name, _, _ in _CASES})
        for name, result in results.items():
            with self.subTest(name):
                self.assertEqual(result["replicas"], 2)
                self.assertLess(result["states"], 1e-5)
                self.assertIn("loss", result["logs"])
                for key, error in result["logs"].items():
                    self.assertLess(error, 1e-5, key)
                # Also with the line search, whose replicas try every step
                # size: work counts the tries up to the accepted one, as
                # on one device.
                replicated_work, work = result["work"]
                self.assertAlmostEqual(replicated_work, work, places=3)


if __name__ == "__main__":
    absltest.main()

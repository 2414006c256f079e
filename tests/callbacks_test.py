"""Tests of `keras_mlres.callbacks`: WallClock and BackupAndRestore."""

import json
import os
import subprocess
import sys
import tempfile
import textwrap
from unittest import mock

from absl.testing import parameterized

import keras
import numpy as np
import tensorflow as tf

import keras_mlres as mlres
from keras_mlres import callbacks

_LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _data(n=320, batch_size=32):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 2)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(
        batch_size, drop_remainder=True
    )


def _model(**kwargs):
    keras.utils.set_random_seed(0)
    fine = mlres.models.dense_ode_resnet(
        (2,), 2, width=4, num_blocks=4, time_horizon=1.0
    )
    model = mlres.MultilevelModel(fine, **kwargs)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=_LOSS,
        metrics=["accuracy"],
        jit_compile=True,
    )
    return model


class WallClockFitTest(tf.test.TestCase):
    """WallClock in real `fit` runs."""

    def test_records_increasing_epoch_times(self):
        clock = callbacks.WallClock()
        model = _model(num_levels=1, pre_smoothing=1, post_smoothing=0)
        model.fit(
            _data(), epochs=3, validation_data=_data(), callbacks=[clock],
            verbose=0,
        )
        self.assertLen(clock.epoch_times, 3)
        self.assertLen(clock.compile_times, 3)
        self.assertGreater(clock.epoch_times[0], 0.0)
        self.assertEqual(clock.epoch_times, sorted(clock.epoch_times))
        self.assertEqual(clock.first_epoch_time, clock.epoch_times[0])
        self.assertAllClose(clock.compile_time, sum(clock.compile_times))
        # The first epoch traces and XLA-compiles the train and test steps.
        self.assertGreater(clock.compile_times[0], 0.05)
        self.assertLess(clock.compile_time, clock.epoch_times[-1])
        without = clock.epoch_times_without_compile
        self.assertLen(without, 3)
        self.assertAllClose(
            without[-1], clock.epoch_times[-1] - clock.compile_time
        )

    def test_charges_a_level_change_recompile_to_its_epoch(self):
        clock = callbacks.WallClock()
        model = _model(
            num_levels=2,
            cycle="none",
            nested_iteration=True,
            max_level_epochs=1,
        )
        history = model.fit(
            _data(), epochs=3, callbacks=[clock], verbose=0
        )
        self.assertEqual(history.history["level"], [1, 0, 0])
        # Epoch 2 is the first on level 0: its training step is compiled.
        self.assertGreater(clock.compile_times[1], 0.05)
        self.assertLess(clock.compile_times[2], clock.compile_times[1])

    def test_second_fit_starts_a_new_record(self):
        clock = callbacks.WallClock()
        model = _model(num_levels=1, pre_smoothing=1, post_smoothing=0)
        model.fit(_data(), epochs=2, callbacks=[clock], verbose=0)
        model.fit(_data(), epochs=1, callbacks=[clock], verbose=0)
        self.assertLen(clock.epoch_times, 1)
        self.assertLen(clock.compile_times, 1)


# Trains a MultilevelModel with a BackupAndRestore callback and writes the
# final weights; argv: backup dir, output .npz, scheme (JSON), the callback's
# package ("mlres" or "keras"), and optionally where to SIGKILL itself: "batch:EPOCH:BATCH" (mid-epoch) or
# "backup:N" (while writing the N-th backup, after a partial weights file).
_TRAINING_SCRIPT = textwrap.dedent(
    """
    import json, os, signal, sys
    import keras
    import numpy as np
    import keras_mlres as mlres

    backup_dir, output, scheme, callbacks = sys.argv[1:5]
    scheme = json.loads(scheme)
    kill = sys.argv[5].split(":") if len(sys.argv) > 5 else [None]
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 2)).astype("float32")
    y = (x[:, 0] * x[:, 1] > 0).astype("int32")
    fine = mlres.models.dense_ode_resnet((2,), 2, width=4, num_blocks=8)
    model = mlres.MultilevelModel(fine, **scheme)
    model.compile(keras.optimizers.Adam(0.02),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))

    class Kill(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if kill[0] == "batch" and (self.epoch, batch) == (
                    int(kill[1]), int(kill[2])):
                os.kill(os.getpid(), signal.SIGKILL)

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

    if kill[0] == "backup":
        save_weights, backups = model.save_weights, []

        def dying_save_weights(path, **kwargs):
            save_weights(path, **kwargs)
            backups.append(path)
            if len(backups) == int(kill[1]):
                with open(path, "r+b") as f:
                    f.truncate(os.path.getsize(path) // 2)
                os.kill(os.getpid(), signal.SIGKILL)

        model.save_weights = dying_save_weights

    model.fit(x, y, batch_size=16, epochs=6, shuffle=False, verbose=0,
              callbacks=[{"keras": keras, "mlres": mlres}[callbacks]
                         .callbacks.BackupAndRestore(backup_dir), Kill()])
    arrays = [v.numpy() for v in model.weights]
    for optimizer in [model.optimizer] + model.level_optimizers:
        arrays += [v.numpy() for v in optimizer.variables]
    np.savez(output, *arrays)
    """
)

_SCHEMES = {
    "v_cycle_coarse_state_kept": dict(
        num_levels=3, cycle="V", coarse_optimizer_state="keep"
    ),
    "nested_iteration": dict(
        num_levels=3, cycle="V", nested_iteration=True, max_level_epochs=2
    ),
}


class BackupAndRestoreTest(tf.test.TestCase, parameterized.TestCase):
    def _train(self, name, scheme, kill=None, callbacks="mlres"):
        directory = tempfile.mkdtemp(dir=self.get_temp_dir())
        backup = os.path.join(directory, "backup")
        output = os.path.join(directory, f"{name}.npz")
        command = [sys.executable, "-c", _TRAINING_SCRIPT, backup, output,
                   json.dumps(scheme), callbacks]
        completed = subprocess.run(
            command + ([kill] if kill else []),
            capture_output=True, text=True, timeout=300,
        )
        return command, completed, backup, output

    @parameterized.product(
        scheme=list(_SCHEMES),
        kill=["batch:3:2", "backup:3"],
    )
    def test_killed_run_resumes_to_the_uninterrupted_weights(
        self, scheme, kill
    ):
        options = _SCHEMES[scheme]
        _, completed, _, expected = self._train("uninterrupted", options)
        self.assertEqual(completed.returncode, 0, completed.stderr[-2000:])
        command, killed, backup, output = self._train("resumed", options, kill)
        self.assertEqual(killed.returncode, -9, killed.stderr[-2000:])
        self.assertFalse(os.path.exists(output))
        checkpoint = os.path.join(backup, "checkpoint")
        with open(os.path.join(checkpoint, "training_metadata.json")) as f:
            # Epochs 0-2 were backed up; a kill while writing the third
            # backup leaves the second.
            epochs_done = 3 if kill.startswith("batch") else 2
            self.assertEqual(json.load(f)["epoch"], epochs_done)
        leftovers = sorted(set(os.listdir(backup)) - {"checkpoint"})
        if kill.startswith("backup"):  # the incomplete backup beside it
            self.assertLen(leftovers, 1)
            self.assertStartsWith(leftovers[0], "checkpoint.partial-")
        else:
            self.assertEmpty(leftovers)
        resumed = subprocess.run(command, capture_output=True, text=True,
                                 timeout=300)
        self.assertEqual(resumed.returncode, 0, resumed.stderr[-2000:])
        self.assertFalse(os.path.exists(backup))  # deleted when fit ends
        self._assert_same_arrays(output, expected)

    def _assert_same_arrays(self, output, expected):
        with np.load(expected) as want, np.load(output) as got:
            self.assertEqual(len(want.files), len(got.files))
            for key in want.files:
                self.assertAllEqual(got[key], want[key], msg=key)

    @parameterized.named_parameters(
        ("is_a_file", ()), ("is_under_a_file", ("backup",))
    )
    def test_backup_dir_at_a_file_fails_before_training(self, below):
        path = os.path.join(
            tempfile.mkdtemp(dir=self.get_temp_dir()), "notes.txt"
        )
        with open(path, "w") as file:
            file.write("keep me")
        model = _model(num_levels=2)
        before = [variable.numpy() for variable in model.fine.weights]
        backup = callbacks.BackupAndRestore(os.path.join(path, *below))
        with self.assertRaises(NotADirectoryError) as raised:
            model.fit(_data(), epochs=2, callbacks=[backup], verbose=0)
        self.assertIn(f"'{path}' is a file", str(raised.exception))
        for variable, value in zip(model.fine.weights, before):
            self.assertAllEqual(variable, value)
        with open(path) as file:
            self.assertEqual(file.read(), "keep me")

    def test_keras_callback_resumes_a_run_killed_mid_epoch(self):
        # Keras's own callback saves the same state (not atomically).
        options = _SCHEMES["nested_iteration"]
        _, completed, _, expected = self._train(
            "uninterrupted", options, callbacks="keras"
        )
        self.assertEqual(completed.returncode, 0, completed.stderr[-2000:])
        command, killed, _, output = self._train(
            "resumed", options, "batch:3:2", callbacks="keras"
        )
        self.assertEqual(killed.returncode, -9, killed.stderr[-2000:])
        resumed = subprocess.run(command, capture_output=True, text=True,
                                 timeout=300)
        self.assertEqual(resumed.returncode, 0, resumed.stderr[-2000:])
        self._assert_same_arrays(output, expected)


class WallClockEstimateTest(tf.test.TestCase):
    """The compile estimate on a scripted clock."""

    def _run(self, clock, epochs):
        """Drives `clock` through `fit`'s hooks; `epochs` lists passes.

        Each epoch is `(train_batch_starts, test_batch_starts, end)` in
        seconds of the scripted clock, which starts at 0.
        """
        times = [0.0]
        for train, test, end in epochs:
            times += list(train) + list(test) + [end]
        with mock.patch.object(
            callbacks.time, "perf_counter", side_effect=times
        ):
            clock.on_train_begin()
            for epoch, (train, test, _) in enumerate(epochs):
                clock.on_epoch_begin(epoch)
                for batch in range(len(train)):
                    clock.on_train_batch_begin(batch)
                if test:
                    clock.on_test_begin()
                    for batch in range(len(test)):
                        clock.on_test_batch_begin(batch)
                    clock.on_test_end()
                clock.on_epoch_end(epoch)

    def test_excess_of_first_interval_over_median_is_compile_time(self):
        clock = callbacks.WallClock()
        self._run(
            clock,
            [
                # Train: first interval 5 s, later ones 1 s (+4 s);
                # test: first 2.5 s, later 0.5 s (+2 s).
                ([0, 5, 6, 7, 8], [9, 11.5, 12, 12.5], 13),
                # Steady: no excess.
                ([14, 15, 16, 17, 18], [19, 19.5, 20, 20.5], 21),
                # A recompile in the first batch (+3 s), no validation.
                ([22, 26, 27, 28], [], 29),
            ],
        )
        self.assertEqual(clock.epoch_times, [13, 21, 29])
        self.assertAllClose(clock.compile_times, [6.0, 0.0, 3.0])
        self.assertAllClose(clock.compile_time, 9.0)
        self.assertEqual(clock.first_epoch_time, 13)
        self.assertAllClose(
            clock.epoch_times_without_compile, [7.0, 15.0, 20.0]
        )

    def test_routine_start_up_of_every_pass_is_not_compile_time(self):
        clock = callbacks.WallClock()
        self._run(
            clock,
            [
                # Train: +4.5 s; test: +2.25 s.
                ([0, 5.5, 6.5, 7.5, 8.5], [9, 11.75, 12.25, 12.75], 13),
                # Routine start-up: train +0.5 s, test +0.25 s.
                ([14, 15.5, 16.5, 17.5], [18, 18.75, 19.25, 19.75], 20),
                ([21, 22.5, 23.5, 24.5], [25, 25.75, 26.25, 26.75], 27),
                # A recompile: +3.5 s.
                ([28, 32.5, 33.5, 34.5], [35, 35.75, 36.25, 36.75], 37),
            ],
        )
        self.assertAllClose(clock.compile_times, [6.0, 0.0, 0.0, 3.0])

    def test_short_passes_and_fast_first_batches_count_nothing(self):
        clock = callbacks.WallClock()
        self._run(
            clock,
            [
                # Two batches: a single interval, no median to compare.
                ([0, 5], [], 6),
                # First interval shorter than the median: 0, not negative.
                ([7, 7.5, 8.5, 9.5], [], 10),
            ],
        )
        self.assertEqual(clock.compile_times, [0.0, 0.0])

    def test_empty_before_fit(self):
        clock = callbacks.WallClock()
        self.assertEqual(clock.epoch_times, [])
        self.assertIsNone(clock.first_epoch_time)
        self.assertEqual(clock.compile_time, 0)
        self.assertEqual(clock.epoch_times_without_compile, [])


if __name__ == "__main__":
    tf.test.main()

"""Tests of MultilevelModel: fit as a drop-in, equivalences, logs, errors."""

import io
import json
import os
import pathlib
import subprocess
import sys
import warnings

import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized

import keras_mlres as mlres

_LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _fine(num_blocks=8, width=8, seed=0):
    keras.utils.set_random_seed(seed)
    return mlres.models.dense_ode_resnet(
        (2,), 3, width=width, num_blocks=num_blocks, time_horizon=2.0
    )


def _conv_fine(seed=0, normalization="batch"):
    keras.utils.set_random_seed(seed)
    return mlres.models.ode_resnet(
        (8, 8, 1), 3, stages=[(4, 4, 1.0), (4, 4, 1.0)],
        normalization=normalization,
    )


def _images(n=256, seed=0, batch_size=32):
    """Images whose class shifts their brightness (learnable by a conv net)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n).astype("int32")
    x = rng.normal(size=(n, 8, 8, 1)) + 0.5 * (y - 1)[:, None, None, None]
    return tf.data.Dataset.from_tensor_slices((x.astype("float32"), y)).batch(
        batch_size, drop_remainder=True
    )



def _spiral(n, seed, arms=3, turns=1.5, noise=0.05):
    rng = np.random.default_rng(seed)
    label = rng.integers(0, arms, n)
    radius = rng.uniform(0.1, 1.0, n)
    angle = (
        2 * np.pi * turns * radius
        + 2 * np.pi * label / arms
        + rng.normal(0.0, noise, n)
    )
    x = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
    return x.astype("float32"), label.astype("int32")


def _dataset(n=256, seed=0, batch_size=32):
    x, y = _spiral(n, seed)
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(
        batch_size, drop_remainder=True
    )


_NETWORKS = {"dense": (_fine, _dataset), "conv": (_conv_fine, _images)}


def _compiled(model, optimizer=None, jit_compile=False, **compile_kwargs):
    model.compile(
        optimizer=optimizer or keras.optimizers.Adam(1e-2),
        loss=_LOSS,
        metrics=["accuracy"],
        jit_compile=jit_compile,
        **compile_kwargs,
    )
    return model


class SingleLevelEquivalenceTest(tf.test.TestCase, parameterized.TestCase):
    """With one level and one smoothing step, MG/OPT is plain training."""

    @parameterized.named_parameters(
        ("sgd_momentum", lambda: keras.optimizers.SGD(0.05, momentum=0.9), False,
         "dense"),
        ("adam", lambda: keras.optimizers.Adam(1e-2), False, "dense"),
        ("adam_xla", lambda: keras.optimizers.Adam(1e-2), True, "dense"),
        ("conv_sgd_momentum",
         lambda: keras.optimizers.SGD(0.05, momentum=0.9), False, "conv"),
        ("conv_adam_xla", lambda: keras.optimizers.Adam(1e-2), True, "conv"),
    )
    def test_weights_match_plain_fit(self, make_optimizer, jit_compile, network):
        make_fine, make_data = _NETWORKS[network]
        data = make_data()
        plain = _compiled(make_fine(), make_optimizer(), jit_compile)
        plain.fit(data, epochs=2, verbose=0)

        multilevel = mlres.MultilevelModel(
            make_fine(), num_levels=1, pre_smoothing=1, post_smoothing=0
        )
        _compiled(multilevel, make_optimizer(), jit_compile)
        multilevel.fit(data, epochs=2, verbose=0)

        self.assertEqual(int(multilevel.optimizer.iterations), 16)
        # Weights and the conv stages' batch-norm statistics alike.
        self.assertNotEmpty(plain.trainable_variables)
        for expected, actual in zip(
            plain.variables, multilevel.fine.variables
        ):
            self.assertAllClose(expected, actual, rtol=1e-5, atol=1e-6)


class MixedPrecisionTest(tf.test.TestCase, parameterized.TestCase):
    """"mixed_bfloat16" needs no loss scaling; its steps are float32's."""

    def _moves(self, policy, **scheme):
        keras.mixed_precision.set_global_policy(policy)
        try:
            model = _compiled(
                mlres.MultilevelModel(_fine(), **scheme),
                optimizer=keras.optimizers.SGD(0.1),
            )
            before = [np.array(v) for v in model.fine.trainable_variables]
            x, y = _spiral(32, seed=2)
            model.fit(x, y, batch_size=32, epochs=1, verbose=0)
            return np.concatenate([
                (np.array(v) - b).ravel()
                for v, b in zip(model.fine.trainable_variables, before)
            ])
        finally:
            keras.mixed_precision.set_global_policy("float32")

    @parameterized.named_parameters(
        ("one_level", dict(num_levels=1)),
        ("v_cycle", dict(num_levels=2, cycle="V", line_search=False)),
        ("nested", dict(num_levels=2, cycle="none", nested_iteration=True)),
    )
    def test_steps_match_float32(self, scheme):
        mixed = self._moves("mixed_bfloat16", **scheme)
        full = self._moves("float32", **scheme)
        self.assertGreater(np.linalg.norm(full), 1e-3)
        self.assertLess(
            np.linalg.norm(mixed - full) / np.linalg.norm(full), 0.05
        )


class FitTest(tf.test.TestCase, parameterized.TestCase):
    def test_metrics_list_each_tracker_once(self):
        model = _compiled(mlres.MultilevelModel(_fine(), num_levels=3))
        names = [metric.name for metric in model.metrics]
        self.assertLen(set(names), len(names))
        for name in ("level_1_loss", "level_2_diverged", "level_1_alpha"):
            self.assertIn(name, names)

    def test_three_levels_reach_accuracy_on_spiral(self):
        keras.utils.set_random_seed(1)
        x, y = _spiral(4000, seed=0)
        x_val, y_val = _spiral(1000, seed=1)
        train = (
            tf.data.Dataset.from_tensor_slices((x, y))
            .shuffle(4000, seed=0)
            .batch(50, drop_remainder=True)
        )
        fine = mlres.models.dense_ode_resnet(
            (2,), 3, width=16, num_blocks=32, time_horizon=4.0
        )
        model = mlres.MultilevelModel(fine, num_levels=3, cycle="V")
        _compiled(model, jit_compile=True)
        history = model.fit(
            train,
            epochs=10,  # the stated epoch budget
            validation_data=(x_val, y_val),
            callbacks=[
                keras.callbacks.EarlyStopping(
                    monitor="val_accuracy", baseline=None, patience=10
                )
            ],
            verbose=0,
        )
        self.assertGreaterEqual(max(history.history["val_accuracy"]), 0.95)

    def test_history_has_cycle_logs_and_callbacks_work(self):
        tmp = self.get_temp_dir()
        model = _compiled(mlres.MultilevelModel(_fine(), num_levels=3))
        checkpoint = os.path.join(tmp, "best.keras")
        history = model.fit(
            _dataset(),
            epochs=3,
            validation_data=_dataset(seed=1),
            callbacks=[
                keras.callbacks.EarlyStopping(patience=3),
                keras.callbacks.ModelCheckpoint(checkpoint),
                keras.callbacks.TensorBoard(os.path.join(tmp, "logs")),
                keras.callbacks.BackupAndRestore(os.path.join(tmp, "backup")),
            ],
            verbose=1,
        )
        logs = history.history
        for key in (
            "loss", "accuracy", "level_1_loss", "level_2_loss", "alpha",
            "level_1_alpha", "work", "val_loss", "val_accuracy",
        ):
            self.assertLen(logs[key], 3, msg=key)
        self.assertNotIn("val_alpha", logs)
        self.assertNotIn("val_level_1_loss", logs)
        for alpha in logs["alpha"]:
            self.assertBetween(alpha, 0.0, 1.0)
        self.assertLess(logs["work"][0], logs["work"][1])
        self.assertTrue(os.path.exists(checkpoint))
        self.assertNotEmpty(os.listdir(os.path.join(tmp, "logs")))
        reloaded = keras.models.load_model(checkpoint, compile=False)
        x = _spiral(8, seed=3)[0]
        self.assertAllClose(reloaded.predict(x, verbose=0), model.predict(x, verbose=0))

    def test_backup_and_restore_resumes_interrupted_fit(self):
        backup = os.path.join(self.get_temp_dir(), "backup")

        class InterruptAtEpoch(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                if epoch == 2:
                    raise RuntimeError("interrupted")

        model = _compiled(mlres.MultilevelModel(_fine(), num_levels=2))
        with self.assertRaisesRegex(RuntimeError, "interrupted"):
            model.fit(
                _dataset(),
                epochs=4,
                callbacks=[
                    keras.callbacks.BackupAndRestore(backup),
                    InterruptAtEpoch(),
                ],
                verbose=0,
            )
        history = model.fit(
            _dataset(),
            epochs=4,
            callbacks=[keras.callbacks.BackupAndRestore(backup)],
            verbose=0,
        )
        self.assertLen(history.history["loss"], 2)  # epochs 3 and 4 only

    @parameterized.named_parameters(("v", "V"), ("w", "W"), ("f", "F"))
    def test_cycles_lower_the_loss(self, cycle):
        model = _compiled(
            mlres.MultilevelModel(_fine(), num_levels=3, cycle=cycle)
        )
        history = model.fit(_dataset(), epochs=4, verbose=0)
        self.assertLess(history.history["loss"][-1], history.history["loss"][0])

    @parameterized.named_parameters(("keep", "keep"), ("reset", "reset"))
    def test_per_level_optimizers(self, state):
        model = mlres.MultilevelModel(
            _fine(), num_levels=3, coarse_optimizer_state=state
        )
        coarse = [
            keras.optimizers.SGD(0.1, momentum=0.9),
            keras.optimizers.SGD(0.2, momentum=0.9),
        ]
        _compiled(model, level_optimizers=coarse)
        self.assertIs(model.level_optimizers[0], coarse[0])
        history = model.fit(_dataset(), epochs=3, verbose=0)
        self.assertLess(history.history["loss"][-1], history.history["loss"][0])
        # Built eagerly on each level's own variables, before training.
        self.assertLen(
            coarse[1]._trainable_variables,
            len(model.hierarchy.trainable_variables(2)),
        )

    def test_optimizer_iterations_count_fine_smoothing_steps(self):
        model = _compiled(
            mlres.MultilevelModel(
                _fine(), num_levels=2, pre_smoothing=1, post_smoothing=2
            )
        )
        model.fit(_dataset(), epochs=1, verbose=0)
        self.assertEqual(int(model.optimizer.iterations), 8 * 3)

    def test_evaluate_and_predict_use_the_fine_network(self):
        model = _compiled(mlres.MultilevelModel(_fine(), num_levels=3))
        x, y = _spiral(64, seed=2)
        self.assertAllClose(model.predict(x, verbose=0), model.fine(x))
        loss, _ = model.evaluate(x, y, verbose=0)
        self.assertAllClose(loss, _LOSS(y, model.fine(x)), rtol=1e-5)

    def test_xla_matches_no_xla(self):
        weights = []
        for jit_compile in (False, True):
            model = _compiled(
                mlres.MultilevelModel(_fine(), num_levels=3, cycle="W"),
                jit_compile=jit_compile,
            )
            model.fit(_dataset().take(3), epochs=1, verbose=0)
            weights.append([v.numpy() for v in model.fine.trainable_variables])
        for eager, compiled in zip(*weights):
            self.assertAllClose(eager, compiled, atol=1e-4, rtol=1e-4)

    @parameterized.named_parameters(
        ("one_level", dict(num_levels=1)),
        ("v_cycle", dict(num_levels=3, cycle="V")),
        ("w_cycle", dict(num_levels=3, cycle="W")),
        ("f_cycle", dict(num_levels=3, cycle="F")),
        ("nested_iteration", mlres.DEFAULT_SCHEME),
    )
    def test_run_eagerly_matches_the_traced_step(self, scheme):
        results = []
        for run_eagerly in (True, False):
            # SGD: Adam would magnify the rounding differences of near-zero
            # gradients between the two.
            model = _compiled(
                mlres.MultilevelModel(_fine(), **scheme),
                optimizer=keras.optimizers.SGD(0.1),
                run_eagerly=run_eagerly,
            )
            history = model.fit(_dataset().take(3), epochs=2, verbose=0)
            results.append(
                (history.history, [v.numpy() for v in model.fine.weights])
            )
        (eager_logs, eager), (traced_logs, traced) = results
        self.assertAllClose(eager_logs["work"], traced_logs["work"])
        self.assertAllClose(eager_logs["loss"], traced_logs["loss"], rtol=1e-5)
        for got, want in zip(eager, traced):
            self.assertAllClose(got, want, atol=1e-5, rtol=1e-5)

    def test_train_step_is_traced_once(self):
        class CountTraces(keras.layers.Layer):
            traces = 0

            def call(self, inputs):
                CountTraces.traces += 1
                return inputs

        keras.utils.set_random_seed(0)
        fine = keras.Sequential([
            keras.Input((2,)),
            keras.layers.Dense(8, activation="tanh"),
            CountTraces(),
            mlres.layers.ODEStack(mlres.layers.ResidualODEBlock(8), 8, 2.0),
            keras.layers.Dense(3),
        ])
        model = _compiled(
            mlres.MultilevelModel(fine, num_levels=2), jit_compile=True
        )

        class RecordTraces(keras.callbacks.Callback):
            seen = []

            def on_epoch_end(self, epoch, logs=None):
                RecordTraces.seen.append(CountTraces.traces)

        model.fit(_dataset(), epochs=3, callbacks=[RecordTraces()], verbose=0)
        first, *later = RecordTraces.seen
        self.assertEqual(later, [first, first])

    def test_summary_shows_levels(self):
        model = _compiled(mlres.MultilevelModel(_fine(num_blocks=16), 3))
        out = io.StringIO()
        model.summary(print_fn=lambda line, **kw: out.write(line + "\n"))
        text = out.getvalue()
        self.assertIn("V-cycle over 3 level(s)", text)
        for blocks, dt in (("16", "0.125"), ("8", "0.25"), ("4", "0.5")):
            self.assertRegex(text, rf"\n\d\s+{blocks}\s+{dt}\s")

    def test_save_and_load_restores_compiled_model(self):
        path = os.path.join(self.get_temp_dir(), "model.keras")
        model = mlres.MultilevelModel(_fine(), num_levels=3, cycle="W")
        _compiled(
            model,
            level_optimizers=[
                keras.optimizers.SGD(0.1, momentum=0.9),
                keras.optimizers.SGD(0.2),
            ],
        )
        model.fit(_dataset(), epochs=1, verbose=0)
        model.save(path)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # e.g. "compile() was not called"
            loaded = keras.models.load_model(path, safe_mode=True)
        self.assertIsInstance(loaded, mlres.MultilevelModel)
        as_json = lambda config: json.loads(json.dumps(config))  # noqa: E731
        self.assertEqual(as_json(loaded.get_config()), as_json(model.get_config()))
        x = _spiral(16, seed=5)[0]
        self.assertAllClose(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
        self.assertEqual(int(loaded.optimizer.iterations), 16)
        self.assertAllClose(loaded.level_optimizers[1].learning_rate, 0.2)
        history = loaded.fit(_dataset(), epochs=2, verbose=0)
        self.assertLess(history.history["loss"][-1], history.history["loss"][0])

    @parameterized.named_parameters(
        ("h5", "model.h5", str),
        ("hdf5", "model.hdf5", str),
        ("weights_h5_as_a_model", "model.weights.h5", str),
        ("path_object", "model.h5", pathlib.Path),
    )
    def test_legacy_h5_is_refused_before_anything_is_written(
        self, name, as_path
    ):
        model = _compiled(mlres.MultilevelModel(_fine(), num_levels=2))
        path = as_path(os.path.join(self.get_temp_dir(), name))
        with self.assertRaisesRegex(
            ValueError,
            "legacy H5 format.*model.save\\('.*model.keras'\\).*"
            "model.save_weights\\('.*model.weights.h5'\\)",
        ):
            model.save(path)
        self.assertFalse(os.path.exists(path))

    def test_export_serves_the_fine_network_in_a_fresh_process(self):
        path = os.path.join(self.get_temp_dir(), "exported")
        model = _compiled(mlres.MultilevelModel(_fine(), num_levels=2))
        model.fit(_dataset(), epochs=1, verbose=0)
        model.export(path, verbose=False)
        x = _spiral(8, seed=6)[0]
        np.save(os.path.join(path, "..", "x.npy"), x)
        script = (
            "import sys, numpy as np, tensorflow as tf, keras\n"
            "path, x = sys.argv[1], np.load(sys.argv[2])\n"
            "loaded = tf.saved_model.load(path)\n"
            "signature = loaded.signatures['serving_default']\n"
            "by_signature = list(signature(tf.constant(x)).values())[0]\n"
            "by_layer = keras.layers.TFSMLayer(path, call_endpoint='serve')(x)\n"
            "np.save(sys.argv[3], np.stack([loaded.serve(x).numpy(),\n"
            "        by_signature.numpy(), np.asarray(by_layer)]))\n"
        )
        out = os.path.join(self.get_temp_dir(), "outputs.npy")
        subprocess.run(
            [sys.executable, "-c", script, path,
             os.path.join(path, "..", "x.npy"), out],
            check=True, timeout=300,
        )
        expected = model.predict(x, verbose=0)
        for outputs in np.load(out):
            self.assertAllClose(outputs, expected, atol=1e-5)

    def test_config_round_trip(self):
        model = mlres.MultilevelModel(
            _fine(), num_levels=2, cycle="W", coarse_steps=3, line_search=False
        )
        config = keras.saving.serialize_keras_object(model)
        restored = keras.saving.deserialize_keras_object(config)
        self.assertIsInstance(restored, mlres.MultilevelModel)
        self.assertEqual(restored.get_config(), model.get_config())


def _poison_level(model, index):
    """Makes level `index`'s loss NaN from the next traced step on."""
    level = model._mgopt.levels[index]
    loss_fn = level._loss_fn

    def nan_loss(*args):
        loss, y_pred = loss_fn(*args)
        return loss * float("nan"), y_pred

    level._loss_fn = nan_loss


class NumericalFaultTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.parameters(False, True)
    def test_nan_on_coarse_level_is_logged_and_kept_out(self, jit_compile):
        model = _compiled(
            mlres.MultilevelModel(_fine(), num_levels=3), jit_compile=jit_compile
        )
        _poison_level(model, 2)
        history = model.fit(
            _dataset(), epochs=2,
            callbacks=[keras.callbacks.TerminateOnNaN()], verbose=0,
        )
        logs = history.history
        self.assertLen(logs["loss"], 2)  # the fine loss stayed finite
        self.assertEqual(logs["level_2_diverged"], [8.0, 8.0])  # every batch
        self.assertEqual(logs["level_1_diverged"], [0.0, 0.0])
        self.assertTrue(all(np.isfinite(logs["loss"])))
        for variable in model.fine.weights:
            self.assertTrue(np.all(np.isfinite(variable)))


def _state(model):
    """Every level's weights and optimizer state, as arrays."""
    variables = list(model.weights)
    for network in model.hierarchy.models[1:]:
        variables += network.weights
    for optimizer in model._optimizers:
        variables += optimizer.variables
    return [v.numpy() for v in variables]


def _with_nan_inputs(dataset):
    return dataset.map(lambda x, y: (x * np.float32("nan"), y))


def _with_inf_inputs_at(dataset, batch):
    """The dataset with Inf inputs in one batch: weights turn NaN there."""
    return dataset.enumerate().map(
        lambda index, xy: (
            tf.where(index == batch, xy[0] + np.float32("inf"), xy[0]),
            xy[1],
        )
    )


def _contents(path):
    """A file's bytes, or a directory's files' bytes by relative path."""
    if os.path.isfile(path):
        with open(path, "rb") as f:
            return f.read()
    contents = {}
    for directory, _, files in os.walk(path):
        for name in files:
            with open(os.path.join(directory, name), "rb") as f:
                contents[os.path.relpath(f.name, path)] = f.read()
    return contents


_GUARDED_SCHEMES = (
    ("v_cycle", dict(num_levels=2)),
    ("nested_iteration", mlres.DEFAULT_SCHEME),
)


class FiniteLossTest(tf.test.TestCase, parameterized.TestCase):
    """A NaN loss stops `fit` with an error and leaves the epoch's start."""

    @parameterized.named_parameters(
        (f"{name}_{'xla' if jit else 'graph'}", scheme, jit)
        for name, scheme in _GUARDED_SCHEMES
        for jit in (False, True)
    )
    def test_nan_training_loss_restores_the_start_of_its_epoch(
        self, scheme, jit_compile
    ):
        model = _compiled(
            mlres.MultilevelModel(_fine(), **scheme), jit_compile=jit_compile
        )
        x, _ = _spiral(64, seed=1)
        model.fit(_dataset(), epochs=1, verbose=0)
        state, predictions = _state(model), model.predict(x, verbose=0)
        with self.assertRaisesRegex(
            mlres.NonFiniteLossError,
            "The training loss is NaN or Inf \\(nan\\) in epoch 2.*back to "
            "where epoch 2 started",
        ) as raised:
            model.fit(
                _with_nan_inputs(_dataset()), epochs=2, initial_epoch=1,
                verbose=0,
            )
        self.assertEqual(raised.exception.monitor, "loss")
        self.assertEqual(raised.exception.epoch, 1)
        self.assertTrue(np.isnan(raised.exception.value))
        for after, before in zip(_state(model), state):
            self.assertAllEqual(after, before)
        self.assertAllEqual(model.predict(x, verbose=0), predictions)
        # Training goes on from there once the data are clean.
        model.fit(_dataset(), epochs=1, verbose=0)
        self.assertTrue(np.isfinite(model.predict(x, verbose=0)).all())

    @parameterized.named_parameters(*_GUARDED_SCHEMES)
    def test_every_level_is_restored_so_the_model_saves(self, scheme):
        model = _compiled(mlres.MultilevelModel(_fine(), **scheme))
        model.fit(_dataset(), epochs=1, verbose=0)
        levels = [
            [v.numpy() for v in network.weights]
            for network in model.hierarchy.models
        ]
        with self.assertRaises(mlres.NonFiniteLossError):
            model.fit(
                _with_nan_inputs(_dataset()), epochs=2, initial_epoch=1,
                verbose=0,
            )
        for network, before in zip(model.hierarchy.models, levels):
            for variable, value in zip(network.weights, before):
                self.assertAllEqual(variable, value, msg=variable.path)
        model.save(os.path.join(self.get_temp_dir(), "restored.keras"))

    def test_out_of_range_labels_under_xla_raise(self):
        # Without XLA TensorFlow raises on them itself; under XLA the loss
        # is NaN, and the labels of a dataset are not read before training.
        model = _compiled(
            mlres.MultilevelModel(_fine(), num_levels=2), jit_compile=True
        )
        state = _state(model)
        with self.assertRaisesRegex(
            ValueError, "sparse labels outside the classifier's classes"
        ):
            model.fit(
                _dataset().map(lambda x, y: (x, y + 3)), epochs=2, verbose=0
            )
        for after, before in zip(_state(model), state):
            self.assertAllEqual(after, before)

    def test_nan_validation_loss_raises(self):
        model = _compiled(mlres.MultilevelModel(_fine(), **mlres.DEFAULT_SCHEME))
        state = _state(model)
        with self.assertRaisesRegex(
            mlres.NonFiniteLossError,
            "The validation loss is NaN or Inf \\(nan\\) after epoch 1 while "
            "the training loss is finite",
        ) as raised:
            model.fit(
                _dataset(), validation_data=_with_nan_inputs(_dataset(64)),
                epochs=3, verbose=0,
            )
        self.assertEqual(raised.exception.monitor, "val_loss")
        for after, before in zip(_state(model), state):
            self.assertAllEqual(after, before)
        self.assertEqual(model.active_level, 2)  # nested iteration did not move

    @parameterized.named_parameters(
        ("one_callback", lambda cb: cb),
        ("nested_list", lambda cb: [[cb]]),
        ("callback_list", lambda cb: keras.callbacks.CallbackList([cb])),
    )
    def test_callbacks_in_any_form_keras_takes(self, wrap):
        model = _compiled(mlres.MultilevelModel(_fine(), **mlres.DEFAULT_SCHEME))
        epochs = []
        callback = keras.callbacks.LambdaCallback(
            on_epoch_end=lambda epoch, logs: epochs.append(epoch)
        )
        model.fit(_dataset(), epochs=2, callbacks=wrap(callback), verbose=0)
        self.assertEqual(epochs, [0, 1])

    def test_checkpoint_callbacks_never_see_a_nan_epoch(self):
        model = _compiled(mlres.MultilevelModel(_fine(), num_levels=2))
        path = os.path.join(self.get_temp_dir(), "never.keras")
        with self.assertRaisesRegex(ValueError, "The training loss is NaN"):
            model.fit(
                _with_nan_inputs(_dataset()), epochs=1, verbose=0,
                callbacks=[keras.callbacks.ModelCheckpoint(path)],
            )
        self.assertFalse(os.path.exists(path))

    @parameterized.named_parameters(
        ("save", "model.keras", lambda model, path: model.save(path)),
        ("save_weights", "model.weights.h5",
         lambda model, path: model.save_weights(path)),
        ("export", "exported",
         lambda model, path: model.export(path, verbose=False)),
        ("export_hub", "hub",
         lambda model, path: model.export(path, format="hub", verbose=False)),
        # A plain Keras network, through the module's function.
        ("export_model", "network",
         lambda model, path: mlres.export.export_model(
             model.fine, path, verbose=False)),
    )
    def test_nan_weights_are_never_written(self, name, write):
        model = _compiled(mlres.MultilevelModel(_fine(), num_levels=2))
        model.fit(_dataset(), epochs=1, verbose=0)
        path = os.path.join(self.get_temp_dir(), name)
        write(model, path)
        written = _contents(path)
        kernel = model.fine.trainable_weights[2]
        diverged = kernel.numpy()
        diverged.flat[0] = np.inf
        kernel.assign(diverged)
        with self.assertRaisesRegex(
            ValueError,
            f"The weight {kernel.path} holds NaN or Inf values, so nothing "
            f"was written to {path} \\(a file already there is left as it "
            "was\\). Training diverged: lower the learning rate",
        ):
            write(model, path)
        self.assertEqual(_contents(path), written)

    @parameterized.named_parameters(*_GUARDED_SCHEMES)
    def test_a_checkpoint_refusing_nan_weights_mid_epoch_undoes_the_epoch(
        self, scheme
    ):
        # Inf inputs in batch 2 turn the weights NaN; the checkpoint after
        # batch 3 finds them so.
        model = _compiled(mlres.MultilevelModel(_fine(), **scheme))
        model.fit(_dataset(), epochs=1, verbose=0)
        path = os.path.join(self.get_temp_dir(), "checkpoint.keras")
        model.save(path)
        saved, state = _contents(path), _state(model)
        saves = []
        with self.assertRaisesRegex(ValueError, "so nothing was written to"):
            model.fit(
                _with_inf_inputs_at(_dataset(), 2), epochs=2, initial_epoch=1,
                verbose=0,
                callbacks=[
                    keras.callbacks.LambdaCallback(
                        on_train_batch_end=lambda batch, logs: saves.append(
                            np.isfinite(logs["loss"])
                        )
                    ),
                    keras.callbacks.ModelCheckpoint(path, save_freq=4),
                ],
            )
        self.assertEqual(saves, [True, True, False, False])
        self.assertEqual(_contents(path), saved)
        for after, before in zip(_state(model), state):
            self.assertAllEqual(after, before)
        model.save(path)
        # Training goes on from there once the data are clean.
        model.fit(_dataset(), epochs=1, verbose=0)
        self.assertTrue(
            np.isfinite(model.predict(_spiral(8, seed=1)[0], verbose=0)).all()
        )

    @parameterized.named_parameters(*_GUARDED_SCHEMES)
    def test_terminate_on_nan_stops_at_the_batch_then_the_epoch_is_undone(
        self, scheme
    ):
        model = _compiled(mlres.MultilevelModel(_fine(), **scheme))
        state = _state(model)
        stopped_at = []
        with self.assertRaisesRegex(ValueError, "in epoch 1"):
            model.fit(
                _with_inf_inputs_at(_dataset(), 2), epochs=3, verbose=0,
                callbacks=[
                    keras.callbacks.TerminateOnNaN(),
                    keras.callbacks.LambdaCallback(
                        on_train_batch_end=lambda b, logs: stopped_at.append(b)
                    ),
                ],
            )
        self.assertTrue(model.stop_training)
        self.assertEqual(stopped_at, [0, 1, 2])
        for after, before in zip(_state(model), state):
            self.assertAllEqual(after, before)
        model.save(os.path.join(self.get_temp_dir(), "restored.keras"))


# Trains twice in one process and prints whether the step ran under XLA and
# the largest difference of the two runs' weights. Without XLA op determinism
# is on (it is process-wide, hence a process); Keras turns `jit_compile` off
# under op determinism, so the XLA runs go without it.
_DETERMINISM_SCRIPT = """
import json, sys
import keras, numpy as np, tensorflow as tf
import keras_mlres as mlres
xla = sys.argv[1] == "xla"
if not xla:
    tf.config.experimental.enable_op_determinism()

def train():
    keras.utils.set_random_seed(7)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 2)).astype("float32")
    y = (x[:, 0] * x[:, 1] > 0).astype("int32")
    data = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(256).batch(32)
    fine = mlres.models.dense_ode_resnet((2,), 2, width=8, num_blocks=8)
    model = mlres.MultilevelModel(fine, num_levels=3, cycle="W")
    model.compile(keras.optimizers.Adam(0.01),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=xla)
    model.fit(data, epochs=3, verbose=0)
    return model.jit_compile, [v.numpy() for v in model.weights]

(first_xla, first), (second_xla, second) = train(), train()
print("RESULTS" + json.dumps({
    "jit_compile": [first_xla, second_xla],
    "difference": max(float(np.max(np.abs(a - b), initial=0.0))
                      for a, b in zip(first, second)),
}))
"""


class DeterminismTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(
        # Op determinism makes the runs bitwise equal.
        ("no_xla", "no_xla", 0.0),
        # XLA on the CPU: the same within float32 rounding.
        ("xla", "xla", 1e-6),
    )
    def test_seeded_runs_give_identical_weights(self, compiler, tolerance):
        completed = subprocess.run(
            [sys.executable, "-c", _DETERMINISM_SCRIPT, compiler],
            capture_output=True, text=True, timeout=300,
        )
        self.assertEqual(completed.returncode, 0, completed.stderr[-2000:])
        line = next(
            line for line in completed.stdout.splitlines()
            if line.startswith("RESULTS")
        )
        results = json.loads(line[len("RESULTS"):])
        self.assertEqual(results["jit_compile"], [compiler == "xla"] * 2)
        self.assertLessEqual(results["difference"], tolerance)


class ConvFitTest(tf.test.TestCase):
    """A tiny two-stage conv ODE-ResNet on `shapes`, trained by the cycle."""

    def test_fit_with_xla_on_shapes(self):
        data_dir = self.get_temp_dir()
        train, val = mlres.datasets.load(
            "shapes", batch_size=50, split=("train[:300]", "validation[:100]"),
            data_dir=data_dir,
        )
        keras.utils.set_random_seed(0)
        fine = mlres.models.ode_resnet(
            (28, 28, 1), 6, stages=[(8, 4, 1.0), (8, 4, 1.0)],
            normalization="batch",
        )
        model = _compiled(
            mlres.MultilevelModel(fine, num_levels=2, cycle="V"),
            jit_compile=True,
        )
        statistics = [v.numpy() for v in fine.non_trainable_variables]
        history = model.fit(train, epochs=2, validation_data=val, verbose=0)
        self.assertLess(history.history["loss"][-1], history.history["loss"][0])
        self.assertLen(history.history["level_1_loss"], 2)
        # The fine stages' statistics were updated by the cycle's fine passes.
        self.assertLen(statistics, 4)
        for variable, before in zip(fine.non_trainable_variables, statistics):
            self.assertNotAllClose(variable, before)
        loss, _ = model.evaluate(val, verbose=0)
        self.assertAllClose(loss, history.history["val_loss"][-1], rtol=1e-5)


def _prolongated_to_fine(model, level):
    """A level's trainable weights prolongated up to the fine network."""
    values = mlres.hierarchy.read_values(
        model.hierarchy.trainable_variables(level)
    )
    for _ in range(level):
        values = model.hierarchy.prolongate_weights(values)
    return values


class _AtBatch(keras.callbacks.Callback):
    """Calls `function()` at the end of one training batch of each epoch."""

    def __init__(self, batch, function):
        super().__init__()
        self._batch = batch
        self._function = function

    def on_train_batch_end(self, batch, logs=None):
        if batch == self._batch:
            self._function()


class LevelBudgetTest(tf.test.TestCase, parameterized.TestCase):

    def _model(self, budget, **kwargs):
        return mlres.MultilevelModel(
            _fine(), **dict(mlres.DEFAULT_SCHEME, level_budget=budget,
                            **kwargs)
        )

    @parameterized.named_parameters(
        ("half_quarter_quarter", [0.5, 0.25, 0.25], 4, [2, 2, 1, 0]),
        ("skips_a_level", [0.6, 0.1, 0.3], 6, [2, 2, 2, 2, 0, 0]),
        ("fine_only", [0.0, 0.0, 1.0], 2, [0, 0]),
    )
    def test_levels_move_at_the_budgets_epochs(self, budget, epochs, levels):
        model = _compiled(self._model(budget))
        history = model.fit(
            _dataset(), epochs=epochs, validation_data=_dataset(seed=1),
            verbose=0,
        )
        self.assertEqual(history.history["level"], levels)
        self.assertEqual(model.active_level, 0)

    def test_one_schedule_runs_over_every_level(self):
        # Carried iteration counts run the warm-up + cosine schedule over
        # the whole budget: the fine level ends where the schedule ends.
        dataset = _dataset()
        epochs, steps = 4, int(dataset.cardinality())
        schedule = mlres.schedules.warmup_cosine(1e-2, epochs * steps)
        model = _compiled(
            self._model([0.5, 0.25, 0.25],
                        nested_optimizer_state="prolongate"),
            optimizer=keras.optimizers.Adam(schedule),
        )
        model.fit(dataset, epochs=epochs, verbose=0)
        self.assertEqual(int(model.optimizer.iterations), epochs * steps)
        self.assertAllClose(model.optimizer.learning_rate, 0.0)

    def test_backup_and_restore_resumes_mid_level_to_the_same_weights(self):
        backup = os.path.join(self.get_temp_dir(), "budget_backup")

        class InterruptAtEpoch(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                if epoch == 1:  # The second of the coarsest level's epochs.
                    raise RuntimeError("interrupted")

        def model():
            return _compiled(self._model(
                [0.5, 0.25, 0.25], nested_optimizer_state="prolongate"
            ))

        uninterrupted = model()
        uninterrupted.fit(_dataset(), epochs=4, verbose=0)
        interrupted = model()
        with self.assertRaisesRegex(RuntimeError, "interrupted"):
            interrupted.fit(
                _dataset(), epochs=4, verbose=0,
                callbacks=[keras.callbacks.BackupAndRestore(backup),
                           InterruptAtEpoch()],
            )
        resumed = model()
        history = resumed.fit(
            _dataset(), epochs=4, verbose=0,
            callbacks=[keras.callbacks.BackupAndRestore(backup)],
        )
        self.assertEqual(history.history["level"], [2, 1, 0])
        for got, want in zip(resumed.fine.weights, uninterrupted.fine.weights):
            self.assertAllClose(got, want, rtol=1e-5, msg=got.path)

    def test_config_round_trip(self):
        model = self._model([0.5, 0.25, 0.25])
        config = model.get_config()
        self.assertEqual(config["level_budget"], [0.5, 0.25, 0.25])
        restored = mlres.MultilevelModel.from_config(config)
        self.assertEqual(restored.level_budget, (0.5, 0.25, 0.25))
        self.assertIsNone(
            mlres.MultilevelModel(_fine()).get_config()["level_budget"]
        )

    @parameterized.named_parameters(
        ("without_nested_iteration", dict(nested_iteration=False),
         "but nested_iteration=False"),
        ("with_max_level_epochs", dict(max_level_epochs=2),
         "Pass one of them"),
        ("bad_sum", dict(level_budget=[0.5, 0.5, 0.5]), "sums to 1.5"),
    )
    def test_bad_settings(self, change, message):
        arguments = dict(num_levels=3, nested_iteration=True,
                         level_budget=[0.5, 0.25, 0.25])
        arguments.update(change)
        with self.assertRaisesRegex(ValueError, message):
            mlres.MultilevelModel(_fine(), **arguments)


class NestedIterationTest(tf.test.TestCase, parameterized.TestCase):
    def test_conv_fine_network_gets_the_coarse_statistics(self):
        # While a coarse level trains, the fine network is only prolongated
        # into; its batch-norm statistics must come from the coarse level,
        # or validation would normalize with the initial statistics.
        model = _compiled(
            mlres.MultilevelModel(
                _conv_fine(), num_levels=2, nested_iteration=True,
                max_level_epochs=2,
            )
        )
        history = model.fit(
            _images(), epochs=1, validation_data=_images(seed=1), verbose=0
        )
        self.assertEqual(history.history["level"], [1])
        for fine_stage, coarse_stage in zip(
            model.hierarchy.stages(0), model.hierarchy.stages(1)
        ):
            for name, state in coarse_stage.stacked_state.items():
                self.assertNotAllClose(state, tf.zeros_like(state) + (
                    1.0 if "variance" in name else 0.0))
                self.assertAllClose(
                    fine_stage.stacked_state[name],
                    mlres.transfer.prolongate(state, 2),
                )
        loss, _ = model.evaluate(_images(seed=1), verbose=0)
        self.assertAllClose(loss, history.history["val_loss"][0], rtol=1e-5)

    def test_restored_model_resumes_on_the_active_level(self):
        # A checkpoint holds the fine network and the schedule; resuming
        # restricts the active level's weights and statistics from the fine
        # network, which gives back the level's own (R P = I).
        def nested():
            return _compiled(
                mlres.MultilevelModel(
                    _conv_fine(), num_levels=3, nested_iteration=True,
                    max_level_epochs=2, level_patience=5,
                )
            )

        model = nested()
        history = model.fit(_images(), epochs=3, verbose=0)
        self.assertEqual(history.history["level"], [2, 2, 1])
        path = os.path.join(self.get_temp_dir(), "nested.weights.h5")
        model.save_weights(path)
        restored = nested()
        restored.load_weights(path)
        restored.resume_schedule()
        self.assertEqual(restored.active_level, 1)
        self.assertAllEqual(restored.nested_schedule, [1, 1, 0])
        for level in (0, 1):
            for got, want in zip(
                restored.hierarchy.level(level).weights,
                model.hierarchy.level(level).weights,
            ):
                self.assertAllEqual(got, want, msg=f"level {level} {got.path}")

    def test_levels_move_finer_and_fine_network_holds_prolongated_weights(self):
        model = _compiled(
            mlres.MultilevelModel(
                _fine(), num_levels=3, nested_iteration=True, max_level_epochs=1
            )
        )
        self.assertEqual(model.active_level, 2)
        history = model.fit(
            _dataset(), epochs=4, validation_data=_dataset(seed=1), verbose=0
        )
        self.assertEqual(history.history["level"], [2, 1, 0, 0])
        self.assertEqual(model.active_level, 0)
        self.assertLess(history.history["loss"][-1], history.history["loss"][0])

    def test_validation_and_predict_see_the_prolongated_fine_network(self):
        model = _compiled(
            mlres.MultilevelModel(_fine(), num_levels=3, nested_iteration=True)
        )
        validation = _dataset(seed=1)
        history = model.fit(
            _dataset(), epochs=1, validation_data=validation, verbose=0
        )
        self.assertEqual(model.active_level, 2)  # still on the coarsest
        stage = model.hierarchy.stages(2)[0]
        fine_stage = model.hierarchy.stages(0)[0]
        for name, weight in stage.stacked_weights.items():
            self.assertAllClose(
                fine_stage.stacked_weights[name],
                mlres.transfer.prolongate(weight, 4),
            )
        loss, _ = model.evaluate(validation, verbose=0)
        self.assertAllClose(loss, history.history["val_loss"][0], rtol=1e-5)
        x = _spiral(16, seed=4)[0]
        self.assertAllClose(model.predict(x, verbose=0), model.fine(x))

    def _trained_on_a_coarse_level(self):
        model = _compiled(
            mlres.MultilevelModel(_fine(), num_levels=3, nested_iteration=True)
        )
        model.fit(_dataset(), epochs=1, verbose=0)
        self.assertEqual(model.active_level, 2)
        return model

    def test_fit_of_no_epochs_leaves_loaded_weights_alone(self):
        # A loaded model's coarse levels hold the restriction of the initial
        # weights of its construction; a fit that trains no epoch must not
        # prolongate them over the loaded fine network.
        path = os.path.join(self.get_temp_dir(), "model.keras")
        self._trained_on_a_coarse_level().save(path)
        loaded = mlres.load_model(path)
        before = [np.array(v) for v in loaded.fine.weights]
        loaded.fit(_dataset(), epochs=1, initial_epoch=1, verbose=0)
        for variable, value in zip(loaded.fine.weights, before):
            self.assertAllEqual(variable, value)

    def test_coarse_level_of_a_loaded_model_is_restricted_from_it(self):
        model = self._trained_on_a_coarse_level()
        path = os.path.join(self.get_temp_dir(), "model.keras")
        model.save(path)
        x = _spiral(16, seed=4)[0]
        expected = model.hierarchy.level(2)(x)  # the trained level itself
        loaded = mlres.load_model(path)
        served = os.path.join(self.get_temp_dir(), "served")
        loaded.export(served, level=2, verbose=False)
        restored = mlres.export.load(served)
        self.assertAllClose(restored.serve(x), expected)

    def test_checkpoint_mid_epoch_holds_the_active_level(self):
        # A ModelCheckpoint(save_freq=n) saves between the syncs of nested
        # iteration, which happen at epoch ends and validation.
        model = self._trained_on_a_coarse_level()
        path = os.path.join(self.get_temp_dir(), "mid_epoch.weights.h5")
        prolongated = []

        def save():
            prolongated.extend(_prolongated_to_fine(model, 2))
            model.save_weights(path)

        model.fit(_dataset(), epochs=1, verbose=0, callbacks=[_AtBatch(3, save)])
        saved = _compiled(
            mlres.MultilevelModel(_fine(seed=1), num_levels=3,
                                  nested_iteration=True)
        )
        saved.load_weights(path)
        self.assertAllClose(saved.fine.trainable_variables, prolongated)

    def test_predict_and_evaluate_mid_epoch_see_the_active_level(self):
        model = self._trained_on_a_coarse_level()
        x, y = _spiral(16, seed=4)
        seen = {}

        def predict_and_evaluate():
            expected = keras.models.clone_model(model.fine)
            expected.set_weights(
                [np.array(v) for v in _prolongated_to_fine(model, 2)]
            )
            seen["expected"] = expected(x)
            seen["expected_loss"] = float(_LOSS(y, seen["expected"]))
            seen["predict"] = model.predict(x, verbose=0)
            seen["evaluate"] = model.evaluate(x, y, verbose=0)[0]

        model.fit(
            _dataset(), epochs=1, verbose=0,
            callbacks=[_AtBatch(3, predict_and_evaluate)],
        )
        self.assertAllClose(seen["predict"], seen["expected"], atol=1e-5)
        self.assertAllClose(seen["evaluate"], seen["expected_loss"], rtol=1e-4)

    def test_default_scheme_starts_the_coarsest_level_at_the_initial_scale(
        self,
    ):
        # Averaging c independent initial kernels shrinks them by sqrt(c);
        # the default scheme's injection hands the coarsest network c-th
        # blocks of the fine initialization, so it starts as initialized.
        def coarsest_and_fine_kernels(**scheme):
            model = mlres.MultilevelModel(
                _fine(num_blocks=64, width=16), **scheme
            )
            hierarchy = model.hierarchy
            coarsest = hierarchy.stages(hierarchy.num_levels - 1)[0]
            fine = hierarchy.stages(0)[0]
            return (
                np.asarray(coarsest.stacked_weights["kernel"]),
                np.asarray(fine.stacked_weights["kernel"]),
            )

        coarse, fine = coarsest_and_fine_kernels(**mlres.DEFAULT_SCHEME)
        self.assertEqual(coarse.shape[0], 16)
        self.assertAllEqual(coarse, fine[::4])
        self.assertAllClose(coarse.std(), fine.std(), rtol=0.05)
        averaged, fine = coarsest_and_fine_kernels(
            **dict(mlres.DEFAULT_SCHEME, restriction="average")
        )
        self.assertAllClose(averaged.std(), fine.std() / 2, rtol=0.05)

    @parameterized.parameters(False, True)
    def test_finer_level_continues_the_coarser_optimizer(self, jit_compile):
        # A fresh Adam's first steps move every weight by about the learning
        # rate; the finer level instead takes the coarse moments, stage slots
        # prolongated and scaled by c^-degree, and the iteration count.
        model = _compiled(
            mlres.MultilevelModel(
                _fine(), num_levels=2, nested_iteration=True,
                max_level_epochs=1, nested_optimizer_state="prolongate",
            ),
            jit_compile=jit_compile,
        )
        # 8 batches of pre- and post-smoothing steps, then finer.
        model.fit(_dataset(), epochs=1, verbose=0)
        self.assertEqual(model.active_level, 0)
        coarse, fine = model.level_optimizers[0], model.optimizer
        self.assertEqual(int(coarse.iterations), 16)
        self.assertEqual(int(fine.iterations), 16)
        for is_stage, coarse_moments, fine_moments in zip(
            model.hierarchy.stage_mask,
            zip(coarse._momentums, coarse._velocities),
            zip(fine._momentums, fine._velocities),
        ):
            self.assertNotAllClose(coarse_moments[1], 0.0)
            for degree, (got, want) in enumerate(
                zip(fine_moments, coarse_moments), start=1
            ):
                if is_stage:
                    want = mlres.transfer.prolongate(want, 2) / 2**degree
                self.assertAllClose(got, want)
        model.fit(_dataset(), epochs=1, verbose=0)
        self.assertEqual(int(fine.iterations), 32)

    def test_default_starts_the_finer_optimizer_fresh(self):
        model = _compiled(
            mlres.MultilevelModel(
                _fine(), num_levels=2, nested_iteration=True,
                max_level_epochs=1,
            )
        )
        model.fit(_dataset(), epochs=1, verbose=0)
        self.assertEqual(model.active_level, 0)
        self.assertEqual(int(model.optimizer.iterations), 0)
        for slot in model.optimizer._momentums + model.optimizer._velocities:
            self.assertAllEqual(slot, tf.zeros_like(slot))

    def test_levels_of_different_optimizers_start_fresh_with_a_warning(self):
        model = mlres.MultilevelModel(
            _fine(), num_levels=2, nested_iteration=True, max_level_epochs=1,
            nested_optimizer_state="prolongate",
        )
        with self.assertWarnsRegex(UserWarning, "from SGD to Adam.*'reset'"):
            _compiled(model, level_optimizers=[keras.optimizers.SGD(0.1)])
        model.fit(_dataset(), epochs=1, verbose=0)
        self.assertEqual(model.active_level, 0)
        self.assertEqual(int(model.optimizer.iterations), 0)

    def test_patience_counts_only_validated_epochs(self):
        # With validation_freq=2 the odd epochs have no val_loss: their
        # training loss must not be compared with the best validation loss.
        model = _compiled(
            mlres.MultilevelModel(
                _fine(), num_levels=2, nested_iteration=True, level_patience=1
            ),
            optimizer=keras.optimizers.SGD(0.0),  # nothing improves
        )
        history = model.fit(
            _dataset(), epochs=5, validation_data=_dataset(seed=1),
            validation_freq=2, verbose=0,
        )
        # Epoch 2 sets the best validation loss, epoch 4 fails to improve.
        self.assertEqual(history.history["level"], [1, 1, 1, 1, 0])
        self.assertAllClose(model.nested_best, history.history["val_loss"][0])

    def test_patience_moves_on_when_the_loss_stops_improving(self):
        model = _compiled(
            mlres.MultilevelModel(
                _fine(), num_levels=2, nested_iteration=True, level_patience=1
            ),
            optimizer=keras.optimizers.SGD(0.0),  # nothing improves
        )
        history = model.fit(_dataset(), epochs=3, verbose=0)
        # Epoch 1 sets the best loss, epoch 2 fails to improve on it.
        self.assertEqual(history.history["level"], [1, 1, 0])


class FrozenLayerTest(tf.test.TestCase, parameterized.TestCase):
    """`trainable=False` set after wrapping takes effect at `compile`."""

    @parameterized.named_parameters(
        ("opening_dense", "dense", "opening", dict(num_levels=3)),
        ("ode_stack", "dense", "stage", dict(num_levels=3, cycle="W")),
        (
            "ode_stack_nested_iteration", "dense", "stage",
            dict(mlres.DEFAULT_SCHEME, max_level_epochs=1),
        ),
        # Batch-normalized blocks: the frozen stage's statistics stay too.
        (
            "conv_stage_nested_iteration", "conv", "stage1",
            dict(num_levels=2, cycle="V", nested_iteration=True,
                 max_level_epochs=1),
        ),
    )
    def test_frozen_layer_is_left_alone_on_every_level(
        self, network, layer, scheme
    ):
        make_fine, make_data = _NETWORKS[network]
        fine = make_fine()
        rng = np.random.default_rng(0)
        for variable in fine.non_trainable_variables:
            # Statistics that differ from block to block, as after training.
            variable.assign(rng.uniform(0.5, 1.5, variable.shape))
        model = mlres.MultilevelModel(fine, **scheme)
        fine.get_layer(layer).trainable = False
        _compiled(model)
        levels = [
            {v.path: v.numpy() for v in level.weights}
            for level in model.hierarchy.models
        ]
        frozen = {v.path: v.numpy() for v in fine.get_layer(layer).weights}
        history = model.fit(make_data(), epochs=3, verbose=0)
        self.assertLess(history.history["loss"][-1], history.history["loss"][0])
        self.assertEqual(model.active_level, 0)
        for variable in fine.get_layer(layer).weights:
            self.assertAllEqual(variable, frozen[variable.path])
        for level, before in zip(model.hierarchy.models, levels):
            self.assertLen(
                level.trainable_variables, len(fine.trainable_variables)
            )
            frozen_layers = [l for l in level.layers if not l.trainable]
            self.assertLen(frozen_layers, 1)
            for variable in frozen_layers[0].weights:
                self.assertAllEqual(variable, before[variable.path])
        # The frozen stage's coarse copies are frozen restrictions of it.
        for fine_stage, coarse_stage in zip(
            model.hierarchy.stages(0), model.hierarchy.stages(1)
        ):
            self.assertEqual(coarse_stage.trainable, fine_stage.trainable)
            if not fine_stage.trainable:
                for name, weight in fine_stage.stacked_weights.items():
                    self.assertAllClose(
                        coarse_stage.stacked_weights[name],
                        mlres.transfer.restrict(
                            weight, 2, model.hierarchy.restriction
                        ),
                    )

    def test_single_level_with_a_frozen_layer_trains_as_plain_keras(self):
        plain = _fine()
        plain.get_layer("stage").trainable = False
        _compiled(plain, keras.optimizers.SGD(0.1)).fit(
            _dataset(), epochs=2, verbose=0
        )
        fine = _fine()
        model = mlres.MultilevelModel(
            fine, num_levels=1, pre_smoothing=1, post_smoothing=0
        )
        fine.get_layer("stage").trainable = False
        _compiled(model, keras.optimizers.SGD(0.1))
        model.fit(_dataset(), epochs=2, verbose=0)
        for expected, actual in zip(plain.weights, fine.weights):
            self.assertAllClose(expected, actual, rtol=1e-5, atol=1e-6)


class CoarseLearningRateTest(tf.test.TestCase, parameterized.TestCase):
    """The coarse levels' cloned optimizers run a scaled learning rate."""

    @parameterized.named_parameters(
        ("same_rate", dict(num_levels=3), [0.1, 0.1, 0.1]),
        (
            "dt_factor_2",
            dict(num_levels=3, coarse_learning_rate_scale="dt"),
            [0.1, 0.2, 0.4],
        ),
        (
            "dt_factor_4",
            dict(num_levels=2, coarsening_factor=4,
                 coarse_learning_rate_scale="dt"),
            [0.1, 0.4],
        ),
        (
            "number",
            dict(num_levels=3, coarse_learning_rate_scale=0.5),
            [0.1, 0.05, 0.025],
        ),
    )
    def test_learning_rate_per_level(self, kwargs, expected):
        model = mlres.MultilevelModel(_fine(), **kwargs)
        _compiled(model, optimizer=keras.optimizers.Adam(0.1))
        rates = [model.optimizer.learning_rate] + [
            o.learning_rate for o in model.level_optimizers
        ]
        self.assertAllClose(rates, expected)
        for optimizer in model.level_optimizers:
            self.assertIsInstance(optimizer, keras.optimizers.Adam)

    def test_schedule_is_scaled_step_by_step(self):
        decay = keras.optimizers.schedules.ExponentialDecay(0.1, 4, 0.5)
        model = mlres.MultilevelModel(
            _fine(), num_levels=3, coarse_learning_rate_scale="dt"
        )
        _compiled(model, optimizer=keras.optimizers.SGD(decay))
        coarsest = model.level_optimizers[1]
        model.fit(_dataset(), epochs=1, verbose=0)
        # The coarse optimizer is reset at each visit, so its step is 0 or
        # a few; compare with the fine schedule at the coarse step.
        step = int(coarsest.iterations)
        self.assertAllClose(coarsest.learning_rate, 4 * decay(step))

    @parameterized.named_parameters(
        ("v_cycle", dict(num_levels=3, cycle="V")),
        ("w_cycle_dt", dict(num_levels=3, cycle="W",
                            coarse_learning_rate_scale="dt")),
        ("nested_iteration", mlres.DEFAULT_SCHEME),
    )
    def test_zero_learning_rate_from_a_callback_moves_no_level(self, scheme):
        model = _compiled(
            mlres.MultilevelModel(_fine(), **scheme),
            optimizer=keras.optimizers.SGD(0.1),
        )
        levels = [
            [v.numpy() for v in network.trainable_variables]
            for network in model.hierarchy.models
        ]
        model.fit(
            _dataset(), epochs=1, verbose=0,
            callbacks=[keras.callbacks.LearningRateScheduler(lambda _: 0.0)],
        )
        # Under nested iteration the finer levels hold the prolongation of
        # the level that trains, the coarsest.
        trained = model.active_level
        self.assertEqual(
            trained, model.num_levels - 1 if model.nested_iteration else 0
        )
        for network, before in list(
            zip(model.hierarchy.models, levels)
        )[trained:]:
            for variable, value in zip(network.trainable_variables, before):
                self.assertAllEqual(variable, value, msg=variable.path)

    @parameterized.named_parameters(
        ("scheduler", lambda: keras.callbacks.LearningRateScheduler(
            lambda epoch: 0.1 * 0.5**epoch)),
        # Never an improvement of 10: the rate halves after every epoch.
        ("plateau", lambda: keras.callbacks.ReduceLROnPlateau(
            monitor="loss", factor=0.5, patience=0, min_delta=10.0)),
    )
    def test_learning_rate_callbacks_reach_every_level(self, make_callback):
        model = _compiled(
            mlres.MultilevelModel(
                _fine(), num_levels=3, coarse_learning_rate_scale="dt"
            ),
            optimizer=keras.optimizers.SGD(0.1),
        )
        rates = []

        def record(batch, logs):
            rates.append(
                [float(o.learning_rate) for o in model._optimizers]
            )

        model.fit(
            _dataset(), epochs=3, verbose=0,
            callbacks=[
                make_callback(),
                keras.callbacks.LambdaCallback(on_train_batch_end=record),
            ],
        )
        self.assertLess(rates[-1][0], rates[0][0])
        for fine, *coarse in rates:
            self.assertAllClose(coarse, [2 * fine, 4 * fine])
        # A loaded model's clones follow the fine rate as well.
        path = os.path.join(self.get_temp_dir(), "followed.keras")
        model.save(path)
        loaded = keras.models.load_model(path)
        loaded.optimizer.learning_rate = 0.0
        before = [v.numpy() for v in loaded.fine.trainable_variables]
        loaded.fit(_dataset(), epochs=1, verbose=0)
        for variable, value in zip(loaded.fine.trainable_variables, before):
            self.assertAllEqual(variable, value, msg=variable.path)

    def test_level_optimizers_passed_to_compile_keep_their_rates(self):
        model = _compiled(
            mlres.MultilevelModel(_fine(), num_levels=2),
            optimizer=keras.optimizers.SGD(0.1),
            level_optimizers=[keras.optimizers.SGD(0.3)],
        )
        model.fit(
            _dataset(), epochs=1, verbose=0,
            callbacks=[keras.callbacks.LearningRateScheduler(lambda _: 0.01)],
        )
        self.assertAllClose(model.optimizer.learning_rate, 0.01)
        self.assertAllClose(model.level_optimizers[0].learning_rate, 0.3)

    def test_level_optimizers_passed_to_compile_are_not_scaled(self):
        model = mlres.MultilevelModel(
            _fine(), num_levels=2, coarse_learning_rate_scale="dt"
        )
        _compiled(
            model,
            optimizer=keras.optimizers.Adam(0.1),
            level_optimizers=[keras.optimizers.SGD(0.3)],
        )
        self.assertAllClose(model.level_optimizers[0].learning_rate, 0.3)

    @parameterized.named_parameters(
        ("single_level", 1, None),
        ("coarse_optimizers_given", 2, [keras.optimizers.SGD(0.05)]),
    )
    def test_lambda_learning_rate_trains(self, num_levels, level_optimizers):
        # A lambda cannot be cloned for the coarse levels (README, Errors);
        # without clones it is the fine level's rate, as in plain Keras.
        model = mlres.MultilevelModel(_fine(), num_levels=num_levels)
        _compiled(
            model,
            optimizer=keras.optimizers.SGD(learning_rate=lambda: 0.05),
            level_optimizers=level_optimizers,
        )
        history = model.fit(_dataset(), epochs=2, verbose=0)
        self.assertAllClose(model.optimizer.learning_rate, 0.05)
        self.assertLess(history.history["loss"][1], history.history["loss"][0])

    def test_scaled_rates_survive_saving(self):
        path = os.path.join(self.get_temp_dir(), "scaled.keras")
        model = mlres.MultilevelModel(
            _fine(), num_levels=2, coarsening_factor=8, cycle="none",
            nested_iteration=True, coarse_learning_rate_scale="dt",
        )
        _compiled(model, optimizer=keras.optimizers.Adam(0.01))
        model.save(path)
        loaded = keras.models.load_model(path)
        self.assertEqual(loaded.coarse_learning_rate_scale, "dt")
        self.assertAllClose(loaded.level_optimizers[0].learning_rate, 0.08)


class InvalidSettingsTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(
        ("too_many_levels", dict(num_levels=5), "num_levels <= 4"),
        ("zero_levels", dict(num_levels=0), "num_levels"),
        ("negative_pre", dict(pre_smoothing=-1), "pre_smoothing"),
        ("negative_post", dict(post_smoothing=-2), "post_smoothing"),
        ("negative_coarse", dict(coarse_steps=-1), "coarse_steps"),
        ("unknown_cycle", dict(cycle="X"), "cycle='X'.*'V', 'W', 'F', 'none'"),
        ("zero_patience", dict(level_patience=0), "level_patience"),
        ("zero_level_epochs", dict(max_level_epochs=0), "max_level_epochs"),
        ("unknown_state", dict(coarse_optimizer_state="zero"), "'keep', 'reset'"),
        (
            "unknown_nested_state",
            dict(nested_optimizer_state="keep"),
            "'reset', 'prolongate'",
        ),
        (
            "unknown_scale",
            dict(coarse_learning_rate_scale="dx"),
            "must be 'dt'.*or a positive number",
        ),
        ("zero_scale", dict(coarse_learning_rate_scale=0), "positive number"),
        ("bool_scale", dict(coarse_learning_rate_scale=True), "positive"),
        ("inf_scale", dict(coarse_learning_rate_scale=float("inf")), "positive"),
        (
            "string_line_search",
            dict(line_search="no"),
            "`line_search` must be True or False. Received: line_search='no'",
        ),
        (
            "string_nested_iteration",
            dict(nested_iteration="False"),
            "`nested_iteration` must be True or False. Received: "
            "nested_iteration='False'",
        ),
        (
            "number_nested_iteration",
            dict(nested_iteration=0),
            "`nested_iteration` must be True or False",
        ),
        (
            "single_level_without_steps",
            dict(num_levels=1, pre_smoothing=0, post_smoothing=0),
            "pre_smoothing",
        ),
        (
            "no_step_on_any_level",
            dict(pre_smoothing=0, post_smoothing=0, coarse_steps=0),
            "coarse_steps are all 0.*training would do nothing",
        ),
        (
            "nested_iteration_without_steps_on_the_coarsest_level",
            dict(pre_smoothing=0, post_smoothing=0, nested_iteration=True),
            "starts on the coarsest level.*would do nothing",
        ),
        (
            "warm_starts_without_steps",
            dict(
                cycle="none", nested_iteration=True, pre_smoothing=0,
                post_smoothing=0,
            ),
            "cycle='none'.*training would do nothing",
        ),
    )
    def test_constructor_rejects(self, kwargs, message):
        with self.assertRaisesRegex(ValueError, message):
            mlres.MultilevelModel(_fine(), **kwargs)

    def test_numpy_integers_count_as_integers(self):
        counts = dict(
            num_levels=np.int64(2), pre_smoothing=np.int64(1),
            coarse_steps=np.int32(2), level_patience=np.int64(1),
            coarsening_factor=np.int64(2),
        )
        config = mlres.MultilevelModel(_fine(), **counts).get_config()
        for name, value in counts.items():
            self.assertIs(type(config[name]), int, msg=name)
            self.assertEqual(config[name], value, msg=name)

    def test_gradient_accumulation_trains_one_level(self):
        # One level is plain Keras training: each smoothing step is an
        # apply, which accumulates as Keras does.
        model = _compiled(
            mlres.MultilevelModel(_fine(), num_levels=1, post_smoothing=0),
            optimizer=keras.optimizers.SGD(0.1, gradient_accumulation_steps=2),
        )
        before = [np.array(v) for v in model.fine.trainable_variables]
        x, y = _spiral(32, seed=2)
        model.fit(x, y, batch_size=32, epochs=1, verbose=0)
        for variable, value in zip(model.fine.trainable_variables, before):
            self.assertAllEqual(variable, value)  # accumulated, not applied
        model.fit(x, y, batch_size=32, epochs=1, verbose=0)
        self.assertNotAllClose(model.fine.trainable_variables[0], before[0])

    def test_level_optimizers_of_wrong_length(self):
        model = mlres.MultilevelModel(_fine(), num_levels=3)
        with self.assertRaisesRegex(ValueError, "level_optimizers.*2"):
            _compiled(model, level_optimizers=[keras.optimizers.SGD()])

    @parameterized.named_parameters(
        ("snake_case", "sparse_categorical_crossentropy",
         "'sparse_categorical_crossentropy'", "SparseCategoricalCrossentropy"),
        ("class_name", "SparseCategoricalCrossentropy",
         "'SparseCategoricalCrossentropy'", "SparseCategoricalCrossentropy"),
        ("binary", "binary_crossentropy", "'binary_crossentropy'",
         "BinaryCrossentropy"),
        # Keras picks the crossentropy for these names by the labels' shape.
        ("shape_dependent_name", "crossentropy", "'crossentropy'",
         "SparseCategoricalCrossentropy"),
        ("sparse_object", keras.losses.SparseCategoricalCrossentropy(),
         r"SparseCategoricalCrossentropy\(\.\.\.\)",
         "SparseCategoricalCrossentropy"),
        ("categorical_object", keras.losses.CategoricalCrossentropy(),
         r"CategoricalCrossentropy\(\.\.\.\)", "CategoricalCrossentropy"),
        ("binary_object", keras.losses.BinaryCrossentropy(from_logits=False),
         r"BinaryCrossentropy\(\.\.\.\)", "BinaryCrossentropy"),
        ("class", keras.losses.SparseCategoricalCrossentropy,
         "SparseCategoricalCrossentropy", "SparseCategoricalCrossentropy"),
        ("function", keras.losses.sparse_categorical_crossentropy,
         "sparse_categorical_crossentropy", "SparseCategoricalCrossentropy"),
    )
    def test_crossentropy_for_probabilities_on_logits_warns(
        self, loss, given, loss_class
    ):
        model = mlres.MultilevelModel(_fine(), num_levels=2)
        with self.assertWarnsRegex(
            UserWarning,
            f"loss={given} expects probabilities.*outputs logits.*"
            f"keras.losses.{loss_class}\\(from_logits=True\\)",
        ):
            model.compile("sgd", loss=loss)

    @parameterized.named_parameters(
        ("loss_object_from_logits", _fine, _LOSS),
        (
            "binary_object_from_logits",
            _fine,
            keras.losses.BinaryCrossentropy(from_logits=True),
        ),
        ("regression_loss", _fine, "mse"),
        (
            "softmax_output",
            lambda: keras.Sequential(
                [keras.Input((2,)), *_fine().layers, keras.layers.Softmax()]
            ),
            "sparse_categorical_crossentropy",
        ),
        (
            "softmax_output_shape_dependent_name",
            lambda: keras.Sequential(
                [keras.Input((2,)), *_fine().layers, keras.layers.Softmax()]
            ),
            "ce",
        ),
    )
    def test_matching_loss_does_not_warn(self, make_fine, loss):
        model = mlres.MultilevelModel(make_fine(), num_levels=2)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            model.compile("sgd", loss=loss)

    def test_shape_dependent_crossentropy_name_trains(self):
        # Keras resolves "crossentropy" by the labels at the first step.
        model = mlres.MultilevelModel(
            keras.Sequential(
                [keras.Input((2,)), *_fine().layers, keras.layers.Softmax()]
            ),
            num_levels=2,
        )
        model.compile("sgd", loss="crossentropy")
        history = model.fit(*_spiral(64, seed=1), batch_size=32, verbose=0)
        self.assertTrue(np.isfinite(history.history["loss"][0]))

    def test_optimizer_shared_between_levels(self):
        model = mlres.MultilevelModel(_fine(), num_levels=3)
        shared = keras.optimizers.SGD()
        with self.assertRaisesRegex(ValueError, "own optimizer instance"):
            _compiled(model, level_optimizers=[shared, shared])
        fine_optimizer = keras.optimizers.Adam()
        with self.assertRaisesRegex(ValueError, "own optimizer instance"):
            _compiled(
                model,
                optimizer=fine_optimizer,
                level_optimizers=[fine_optimizer, keras.optimizers.SGD()],
            )


def _built_optimizer(variables):
    optimizer = keras.optimizers.Adam()
    optimizer.build(variables)
    return optimizer


class FailedCompileTest(tf.test.TestCase, parameterized.TestCase):
    """A compile that raises leaves the model as it was (README, Errors)."""

    @parameterized.named_parameters(
        (
            "fine_optimizer_built_elsewhere",
            lambda: dict(
                optimizer=_built_optimizer(_fine(seed=1).trainable_variables)
            ),
            "`optimizer` is already built on other variables",
        ),
        (
            "coarse_optimizer_built_elsewhere",
            lambda: dict(
                level_optimizers=[
                    _built_optimizer(_fine(seed=1).trainable_variables)
                ]
            ),
            r"`level_optimizers\[0\]` is already built on other variables",
        ),
        (
            "no_optimizer",
            lambda: dict(optimizer=None),
            "Unknown optimizer None",
        ),
        ("no_loss", lambda: dict(loss=None), "received no loss"),
        ("loss_of_no_kind", lambda: dict(loss=42), "Unknown loss 42"),
        (
            "unknown_metric",
            lambda: dict(metrics=["acurracy"]),
            "Unknown metric 'acurracy' in `metrics`",
        ),
        (
            "coarse_loss_scale_optimizer",
            lambda: dict(
                level_optimizers=[
                    keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD())
                ]
            ),
            "does not support loss scaling.*level_optimizers.*mixed_bfloat16",
        ),
        (
            "loss_scale_factor",
            lambda: dict(optimizer=keras.optimizers.SGD(loss_scale_factor=8.0)),
            "does not support loss scaling.*loss_scale_factor=8.0",
        ),
    )
    def test_first_compile_raises_and_leaves_the_model_uncompiled(
        self, make_arguments, message
    ):
        # An optimizer built elsewhere used to fail after Keras's compile had
        # run: `compiled` was True, with no cycle for `fit` to call.
        model = mlres.MultilevelModel(_fine(), num_levels=2)
        arguments = dict(
            dict(optimizer=keras.optimizers.SGD(0.1), loss=_LOSS),
            **make_arguments(),
        )
        with self.assertRaisesRegex(ValueError, message):
            model.compile(**arguments)
        self.assertFalse(model.compiled)
        self.assertIsNone(model._mgopt)

    def test_positional_loss_is_checked(self):
        model = mlres.MultilevelModel(_fine(), num_levels=2)
        with self.assertRaisesRegex(ValueError, "Unknown loss 'crossentropyy'"):
            model.compile("sgd", "crossentropyy")
        self.assertFalse(model.compiled)

    def test_mixed_float16_is_refused_before_the_optimizer_is_wrapped(self):
        # Keras would wrap the optimizer in a LossScaleOptimizer, whose
        # steps the cycle's unscaled gradients would make 2**15 too small.
        previous = keras.mixed_precision.global_policy()
        keras.mixed_precision.set_global_policy("mixed_float16")
        self.addCleanup(keras.mixed_precision.set_global_policy, previous)
        model = mlres.MultilevelModel(_fine(), num_levels=2)
        with self.assertRaisesRegex(
            ValueError,
            "does not support loss scaling, but the dtype policy is "
            "'mixed_float16'.*set_global_policy\\('mixed_bfloat16'\\)",
        ):
            _compiled(model)
        self.assertFalse(model.compiled)


def _data_check_case(
    name, message, make_fit_arguments, jit_compile=False, **model_kwargs
):
    return dict(
        testcase_name=name,
        message=message,
        make_fit_arguments=make_fit_arguments,
        jit_compile=jit_compile,
        model_kwargs=model_kwargs,
    )


class DataCheckTest(tf.test.TestCase, parameterized.TestCase):
    """`fit` checks training and validation data before training."""

    @parameterized.named_parameters(
        _data_check_case(
            "validation_input_shape",
            "The validation inputs have shape \\(8, 3\\)",
            lambda x, y: dict(
                validation_data=(np.zeros((8, 3), "float32"), y[:8])
            ),
        ),
        _data_check_case(
            "validation_labels",
            "the validation labels range over \\[3, 3\\]",
            lambda x, y: dict(validation_data=(x[:8], np.full(8, 3))),
        ),
        # Under XLA the bad labels would give a NaN val_loss, found only at
        # the end of the first epoch.
        _data_check_case(
            "validation_labels_under_xla_and_nested_iteration",
            "the validation labels range over \\[7, 7\\]",
            lambda x, y: dict(
                validation_data=[x[:8], np.full(8, 7), np.ones(8)]
            ),
            nested_iteration=True, cycle="none", jit_compile=True,
        ),
        _data_check_case(
            "validation_dataset_input_shape",
            "The validation inputs have shape \\(None, 3\\)",
            lambda x, y: dict(
                validation_data=tf.data.Dataset.from_tensor_slices(
                    (np.zeros((8, 3), "float32"), y[:8])
                ).batch(4)
            ),
        ),
        _data_check_case(
            "empty_validation_dataset",
            "The validation data is empty",
            lambda x, y: dict(
                validation_data=tf.data.Dataset.from_tensor_slices(
                    (x[:8], y[:8])
                ).batch(16, drop_remainder=True)
            ),
        ),
        _data_check_case(
            "nan_validation_inputs",
            "The validation inputs contain NaN or Inf",
            lambda x, y: dict(
                validation_data=(np.full((8, 2), np.nan, "float32"), y[:8])
            ),
        ),
        _data_check_case(
            "nan_labels",
            "the training labels include nan, which is not a class index",
            lambda x, y: dict(y=np.where(y == 1, np.nan, y)),
        ),
        _data_check_case(
            "fractional_labels",
            "the training labels include [0-9]\\.5, which is not a class "
            "index",
            lambda x, y: dict(y=y + 0.5),
        ),
        _data_check_case(
            "inf_inputs",
            "The training inputs contain NaN or Inf",
            lambda x, y: dict(x=np.where(x > 0.5, np.inf, x)),
        ),
    )
    def test_fit_rejects_before_training(
        self, message, make_fit_arguments, jit_compile, model_kwargs
    ):
        model = _compiled(
            mlres.MultilevelModel(
                _fine(num_blocks=4, width=4), num_levels=2, **model_kwargs
            ),
            jit_compile=jit_compile,
        )
        x, y = _spiral(16, seed=0)
        before = [np.array(v) for v in model.weights]
        arguments = dict(x=x, y=y, batch_size=8)
        arguments.update(make_fit_arguments(x, y))
        with self.assertRaisesRegex(ValueError, message):
            model.fit(**arguments, epochs=2, verbose=0)
        for variable, expected in zip(model.weights, before):
            self.assertAllEqual(variable, expected)
        self.assertEqual(int(model.optimizer.iterations), 0)

    def test_datasets_are_read_by_keras_only(self):
        # A peek before training would end a pass early, which truncates a
        # memory cache upstream of a parallel reader for good.
        reads = {"training": 0, "validation": 0}

        def counted(x, y, purpose):
            def count(batch):
                reads[purpose] += len(batch)
                return batch

            y = tf.py_function(count, [y], y.dtype)
            return x, tf.ensure_shape(y, [None])

        x, y = _spiral(16, seed=0)
        datasets = {
            purpose: tf.data.Dataset.from_tensor_slices((x, y)).batch(8).map(
                lambda x, y, purpose=purpose: counted(x, y, purpose)
            )
            for purpose in reads
        }
        model = _compiled(
            mlres.MultilevelModel(_fine(num_blocks=4, width=4), num_levels=2)
        )
        model.fit(
            datasets["training"], validation_data=datasets["validation"],
            epochs=1, verbose=0,
        )
        self.assertEqual(reads, {"training": 16, "validation": 16})


if __name__ == "__main__":
    tf.test.main()

"""Tests of keras_mlres.export: hub and coarse-level exports, atomic writes,
checked loading of exports and `.keras` files."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import zipfile
from unittest import mock

import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized

import keras_mlres as mlres
from keras_mlres import export
from keras_mlres.version import IncompatibleVersionError

_LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

# Fine-tunes a reusable SavedModel with TensorFlow and Keras only; keras_mlres
# must not be imported. Writes what it saw as JSON.
_FINE_TUNE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import keras, numpy as np, tensorflow as tf
    path, data, out = sys.argv[1:]
    x, y = np.load(data)["x"], np.load(data)["y"]
    module = tf.saved_model.load(path)
    assert not [name for name in sys.modules if name.startswith("keras_mlres")]

    def loss_fn():
        logits = module(x, training=True)
        data_loss = tf.reduce_mean(
            tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))
        return data_loss + tf.add_n([l() for l in module.regularization_losses])

    result = {
        "default": module(x).numpy().tolist(),
        "inference": module(x, training=False).numpy().tolist(),
        "training": module(x, training=True).numpy().tolist(),
        "num_variables": len(module.variables),
        "num_trainable": len(module.trainable_variables),
        "regularization": [float(l()) for l in module.regularization_losses],
        "losses": [],
    }
    before = [v.numpy() for v in module.trainable_variables]
    optimizer = keras.optimizers.Adam(1e-2)
    for _ in range(5):
        with tf.GradientTape() as tape:
            loss = loss_fn()
        gradients = tape.gradient(loss, module.trainable_variables)
        optimizer.apply_gradients(zip(gradients, module.trainable_variables))
        result["losses"].append(float(loss))
    result["losses"].append(float(loss_fn()))
    result["changed"] = [
        bool(np.any(b != v.numpy()))
        for b, v in zip(before, module.trainable_variables)]
    with open(out, "w") as file:
        json.dump(result, file)
    """
)


def _points(n, seed):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.0, 1.0, (n, 2)).astype("float32")
    y = ((x[:, 0] > 0).astype("int32") + (x[:, 1] > 0)).astype("int32")
    return x, y


def _multilevel(num_levels=3, seed=0, **kwargs):
    keras.utils.set_random_seed(seed)
    fine = mlres.models.dense_ode_resnet(
        (2,), 3, width=8, num_blocks=8, time_horizon=2.0
    )
    model = mlres.MultilevelModel(fine, num_levels=num_levels, **kwargs)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=_LOSS)
    return model


def _regularized_fine():
    keras.utils.set_random_seed(1)
    regularizer = keras.regularizers.L2(1e-2)
    return keras.Sequential([
        keras.Input((2,)),
        keras.layers.Dense(8, activation="tanh"),
        mlres.layers.ODEStack(
            mlres.layers.ResidualODEBlock(8, kernel_regularizer=regularizer),
            num_blocks=8,
            time_horizon=2.0,
            smoothness_penalty=1e-2,
        ),
        keras.layers.Dense(3, kernel_regularizer=regularizer),
    ])


def _listing(directory):
    return sorted(os.listdir(directory))


class HubExportTest(tf.test.TestCase, parameterized.TestCase):

    def test_fine_tunes_after_loading_in_a_fresh_process(self):
        model = mlres.MultilevelModel(_regularized_fine(), num_levels=2)
        model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=_LOSS)
        x, y = _points(64, seed=0)
        model.fit(x, y, batch_size=16, epochs=1, verbose=0)
        path = os.path.join(self.get_temp_dir(), "hub")
        model.export(path, format="hub", verbose=False)
        data = os.path.join(self.get_temp_dir(), "data.npz")
        np.savez(data, x=x, y=y)
        out = os.path.join(self.get_temp_dir(), "result.json")
        subprocess.run(
            [sys.executable, "-c", _FINE_TUNE_SCRIPT, path, data, out],
            check=True, timeout=300,
        )
        with open(out) as file:
            result = json.load(file)

        expected = model.predict(x, verbose=0)
        for key in ("default", "inference", "training"):
            self.assertAllClose(result[key], expected, atol=1e-5, msg=key)
        self.assertEqual(result["num_variables"], len(model.fine.variables))
        self.assertEqual(
            result["num_trainable"], len(model.fine.trainable_variables)
        )
        model.fine(x)  # Keras's own account of the losses of the fine net
        self.assertLen(result["regularization"], 3)  # 2 kernels, smoothness
        self.assertAllClose(
            sum(result["regularization"]),
            float(sum(model.fine.losses)),
            rtol=1e-5,
        )
        losses = result["losses"]
        self.assertLess(losses[-1], losses[0] - 1e-3)
        self.assertTrue(all(result["changed"]), result["changed"])

    @parameterized.product(format=["hub", "tf_saved_model"], level=[1, 2])
    def test_coarse_level_matches_its_network_and_is_smaller(
        self, format, level
    ):
        model = _multilevel(num_levels=3)
        x, _ = _points(64, seed=1)
        path = os.path.join(self.get_temp_dir(), f"{format}_{level}")
        model.export(path, format=format, level=level, verbose=False)

        loaded = export.load(path)
        call = loaded if format == "hub" else loaded.serve
        self.assertAllClose(
            call(x), model.hierarchy.level(level).predict(x, verbose=0),
            atol=1e-5,
        )
        self.assertNotAllClose(call(x), model.predict(x, verbose=0))
        metadata = export.read_metadata(path)
        self.assertEqual(
            (metadata["format"], metadata["level"], metadata["num_blocks"]),
            (format, level, [8 // 2**level]),
        )
        exported = sum(int(np.prod(v.shape)) for v in loaded.variables)
        self.assertEqual(exported, metadata["parameters"])
        self.assertLess(exported, model.fine.count_params())

    def test_plain_model_and_hierarchy_are_accepted(self):
        fine = _multilevel().fine
        x, _ = _points(8, seed=2)
        path = os.path.join(self.get_temp_dir(), "plain")
        export.export_hub_module(fine, path, verbose=False)
        self.assertAllClose(export.load(path)(x), fine(x), atol=1e-6)

        hierarchy = mlres.Hierarchy(fine, num_levels=2)
        export.export_hub_module(hierarchy, path, level=1, verbose=False)
        self.assertAllClose(
            export.load(path)(x), hierarchy.level(1)(x), atol=1e-6
        )

    def test_coarse_level_of_a_plain_model_is_an_error(self):
        with self.assertRaisesRegex(ValueError, "needs a hierarchy.*Hierarchy"):
            export.export_hub_module(
                _multilevel().fine, self.get_temp_dir(), level=1
            )

    @parameterized.named_parameters(
        ("float", 1.0, "level=1.0"), ("string", "1", "level='1'"),
        ("bool", True, "level=True"),
    )
    def test_level_that_is_not_an_integer_is_an_error(self, level, received):
        with self.assertRaisesRegex(
            ValueError,
            f"The level must be an integer from 0 to 2.*Received: {received}",
        ):
            _multilevel().export(
                os.path.join(self.get_temp_dir(), "m"), level=level,
                verbose=False,
            )

    def test_level_out_of_range_is_an_error(self):
        with self.assertRaisesRegex(ValueError, "Level 3 does not exist"):
            _multilevel(num_levels=3).export(
                os.path.join(self.get_temp_dir(), "m"), format="hub", level=3
            )


class AtomicExportTest(tf.test.TestCase, parameterized.TestCase):

    def _export_then_change_weights(self, format):
        model = _multilevel(num_levels=2)
        parent = os.path.join(self.get_temp_dir(), f"exports_{format}")
        path = os.path.join(parent, "model")
        x, _ = _points(32, seed=3)
        model.export(path, format=format, verbose=False)
        before = model.predict(x, verbose=0)
        for variable in model.fine.trainable_variables:
            variable.assign(variable + 0.1)
        self.assertNotAllClose(model.predict(x, verbose=0), before)
        return model, parent, path, x, before

    def _assert_serves(self, path, format, x, expected):
        loaded = export.load(path)
        call = loaded if format == "hub" else loaded.serve
        self.assertAllClose(call(x), expected, atol=1e-5)

    @parameterized.parameters("hub", "tf_saved_model")
    def test_new_export_replaces_the_old_one(self, format):
        model, parent, path, x, _ = self._export_then_change_weights(format)
        model.export(path, format=format, verbose=False)
        self._assert_serves(path, format, x, model.predict(x, verbose=0))
        self.assertEqual(_listing(parent), ["model"])

    @parameterized.parameters("hub", "tf_saved_model")
    def test_failure_midway_keeps_the_old_export(self, format):
        model, parent, path, x, before = self._export_then_change_weights(
            format
        )
        save = tf.saved_model.save

        def save_then_fail(obj, directory, *args, **kwargs):
            save(obj, directory, *args, **kwargs)
            pb = os.path.join(directory, "saved_model.pb")
            with open(pb, "r+b") as file:
                file.truncate(os.path.getsize(pb) // 2)
            raise OSError("No space left on device")

        with mock.patch.object(tf.saved_model, "save", save_then_fail):
            with self.assertRaisesRegex(OSError, "No space left"):
                model.export(path, format=format, verbose=False)
        self.assertEqual(_listing(parent), ["model"])  # no partial directory
        self._assert_serves(path, format, x, before)

    def test_failure_to_move_into_place_restores_the_old_export(self):
        model, parent, path, x, before = self._export_then_change_weights(
            "hub"
        )
        rename = os.rename

        def fail_to_move_the_new_export(source, target):
            if ".partial-" in os.path.basename(source):
                raise OSError("Permission denied")
            rename(source, target)

        with mock.patch.object(os, "rename", fail_to_move_the_new_export):
            with self.assertRaisesRegex(OSError, "Permission denied"):
                model.export(path, format="hub", verbose=False)
        self.assertEqual(_listing(parent), ["model"])
        self._assert_serves(path, "hub", x, before)

    @parameterized.parameters("hub", "tf_saved_model")
    def test_export_has_the_mode_of_a_new_directory(self, format):
        # As os.makedirs would create it (plain keras.Model.export does), so
        # that a server running as another user can read it.
        umask = os.umask(0o022)
        try:
            path = os.path.join(self.get_temp_dir(), f"served_{format}")
            _multilevel().export(path, format=format, verbose=False)
        finally:
            os.umask(umask)
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o755)

    def test_a_file_at_the_target_is_not_replaced(self):
        path = os.path.join(self.get_temp_dir(), "model.keras")
        with open(path, "w") as file:
            file.write("keep me")
        with self.assertRaisesRegex(FileExistsError, "is a file"):
            _multilevel().export(path, verbose=False)
        with open(path) as file:
            self.assertEqual(file.read(), "keep me")

    @parameterized.parameters("hub", "tf_saved_model")
    def test_a_directory_with_other_files_is_not_replaced(self, format):
        parent = os.path.join(self.get_temp_dir(), f"project_{format}")
        path = os.path.join(parent, "model")
        os.makedirs(os.path.join(path, "src"))
        with open(os.path.join(path, "src", "train.py"), "w") as file:
            file.write("keep me")
        with self.assertRaisesRegex(
            FileExistsError, "non-empty directory.*new or empty directory"
        ):
            _multilevel().export(path, format=format, verbose=False)
        self.assertEqual(_listing(parent), ["model"])  # no partial directory
        self.assertEqual(_listing(path), ["src"])
        with open(os.path.join(path, "src", "train.py")) as file:
            self.assertEqual(file.read(), "keep me")

    @parameterized.named_parameters(
        ("empty", "", False),
        ("dot", ".", False),
        ("parent", "..", False),
        ("grandparent", "../..", False),
        ("dot_in_an_earlier_export", ".", True),
    )
    def test_the_working_directory_and_its_parents_are_refused(
        self, path, cwd_is_an_export
    ):
        model = _multilevel(num_levels=2)
        root = tempfile.mkdtemp(dir=self.get_temp_dir())
        cwd = os.path.join(root, "project", "run")
        if cwd_is_an_export:
            model.export(cwd, verbose=False)
        else:
            os.makedirs(cwd)
            with open(os.path.join(cwd, "notes.txt"), "w") as file:
                file.write("keep me")
        before = _listing(cwd)
        self.addCleanup(os.chdir, os.getcwd())
        os.chdir(cwd)
        with self.assertRaisesRegex(ValueError, "current working directory"):
            model.export(path, verbose=False)
        self.assertEqual(_listing(root), ["project"])
        self.assertEqual(_listing(os.path.join(root, "project")), ["run"])
        self.assertEqual(_listing(cwd), before)

    def test_remote_paths_are_rejected(self):
        with self.assertRaisesRegex(ValueError, "local directories"):
            _multilevel().export("gs://bucket/model", verbose=False)


def _truncate(path, relative):
    target = os.path.join(path, relative)
    with open(target, "r+b") as file:
        file.truncate(os.path.getsize(target) // 2)


def _flip_byte(path, relative):
    target = os.path.join(path, relative)
    with open(target, "r+b") as file:
        file.seek(os.path.getsize(target) // 2)
        byte = file.read(1)
        file.seek(-1, os.SEEK_CUR)
        file.write(bytes([byte[0] ^ 0xFF]))


def _rewrite_metadata(path, **changes):
    metadata_path = os.path.join(path, export.METADATA_FILE)
    with open(metadata_path) as file:
        metadata = json.load(file)
    metadata.update(changes)
    with open(metadata_path, "w") as file:
        json.dump(metadata, file)


def _corrupt_consistently(path):
    """A damaged SavedModel whose manifest matches (e.g. a TF mismatch)."""
    _truncate(path, "saved_model.pb")  # cuts into the one meta_graphs field
    with open(os.path.join(path, export.METADATA_FILE)) as file:
        metadata = json.load(file)
    del metadata["files"], metadata["keras_mlres_version"]
    os.remove(os.path.join(path, export.METADATA_FILE))
    export._write_metadata(path, metadata)


class LoadErrorsTest(tf.test.TestCase, parameterized.TestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.good = os.path.join(tf.compat.v1.test.get_temp_dir(), "good")
        _multilevel(num_levels=2).export(cls.good, format="hub", verbose=False)

    @parameterized.named_parameters(
        ("missing_path", lambda p: shutil.rmtree(p), FileNotFoundError,
         "does not exist"),
        ("a_file", lambda p: shutil.rmtree(p) or open(p, "w").close(),
         export.InvalidExportError, "is a file, not a SavedModel"),
        ("not_a_saved_model",
         lambda p: os.remove(os.path.join(p, "saved_model.pb")),
         export.InvalidExportError, "has no saved_model.pb"),
        ("foreign_saved_model",
         lambda p: os.remove(os.path.join(p, export.METADATA_FILE)),
         export.InvalidExportError,
         "not written by keras_mlres.*tf.saved_model.load"),
        ("truncated_graph", lambda p: _truncate(p, "saved_model.pb"),
         export.InvalidExportError,
         r"saved_model.pb has \d+ bytes instead of \d+ \(truncated"),
        ("truncated_variables",
         lambda p: _truncate(p, "variables/variables.data-00000-of-00001"),
         export.InvalidExportError,
         r"variables.data-00000-of-00001 has \d+ bytes.*Export the model again"),
        ("corrupt_variables",
         lambda p: _flip_byte(p, "variables/variables.data-00000-of-00001"),
         export.InvalidExportError,
         "variables.data-00000-of-00001 does not match its recorded SHA-256"),
        ("missing_variables",
         lambda p: shutil.rmtree(os.path.join(p, "variables")),
         export.InvalidExportError,
         "variables/variables.index is missing"),
        ("corrupt_metadata", lambda p: _truncate(p, export.METADATA_FILE),
         export.InvalidExportError, "metadata .* is corrupt"),
        ("incompatible_version",
         lambda p: _rewrite_metadata(p, keras_mlres_version="1.0.0"),
         IncompatibleVersionError,
         "keras_mlres 1.0.0, which is incompatible with the installed"),
        ("unreadable_by_tensorflow", _corrupt_consistently,
         export.InvalidExportError, "TensorFlow could not load"),
    )
    def test_load_names_the_problem(self, damage, error, message):
        path = os.path.join(self.get_temp_dir(), "export")
        shutil.copytree(self.good, path)
        damage(path)
        with self.assertRaisesRegex(error, message):
            export.load(path)

    def test_good_export_loads(self):
        self.assertEqual(export.read_metadata(self.good)["format"], "hub")
        self.assertLen(export.load(self.good).trainable_variables, 6)


def _flip_member_byte(path, member):
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(member)
    with open(path, "r+b") as file:
        file.seek(info.header_offset + 26)
        name_length, extra_length = np.frombuffer(file.read(4), "<u2")
        offset = (
            info.header_offset + 30 + name_length + extra_length
            + info.compress_size // 2
        )
        file.seek(offset)
        byte = file.read(1)
        file.seek(offset)
        file.write(bytes([byte[0] ^ 0xFF]))


def _set_config_version(path, version):
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(members["config.json"])
    config["config"]["keras_mlres_version"] = version
    members["config.json"] = json.dumps(config)
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def _truncate_file(path):
    with open(path, "r+b") as file:
        file.truncate(os.path.getsize(path) // 2)


def _zip_without_config(path):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes.txt", "not a model")


class KerasFileTest(tf.test.TestCase, parameterized.TestCase):

    def test_resumed_training_matches_uninterrupted_training(self):
        model = _multilevel(num_levels=2, coarse_optimizer_state="keep")
        model.compile(
            optimizer=keras.optimizers.Adam(1e-2),
            loss=_LOSS,
            level_optimizers=[keras.optimizers.SGD(0.1, momentum=0.9)],
        )
        x, y = _points(64, seed=4)
        model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
        path = os.path.join(self.get_temp_dir(), "model.keras")
        model.save(path)
        loaded = mlres.load_model(path)

        as_json = lambda config: json.loads(json.dumps(config))  # noqa: E731
        self.assertEqual(as_json(loaded.get_config()), as_json(model.get_config()))
        for level in range(2):
            self.assertEqual(
                loaded.hierarchy.num_blocks(level),
                model.hierarchy.num_blocks(level),
            )
        optimizers = [model.optimizer] + model.level_optimizers
        loaded_optimizers = [loaded.optimizer] + loaded.level_optimizers
        for original, restored in zip(optimizers, loaded_optimizers):
            self.assertIs(type(restored), type(original))
            self.assertAllClose(restored.variables, original.variables)
        self.assertAllClose(loaded.work, model.work)

        histories = [
            m.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0)
            for m in (model, loaded)
        ]
        self.assertAllClose(
            histories[1].history["loss"], histories[0].history["loss"],
            rtol=1e-5,
        )
        self.assertLess(
            histories[1].history["loss"][-1], histories[1].history["loss"][0]
        )
        self.assertAllClose(
            loaded.fine.trainable_variables,
            model.fine.trainable_variables,
            atol=1e-5,
        )

    @parameterized.named_parameters(
        ("missing", lambda p: os.remove(p), FileNotFoundError,
         "does not exist"),
        ("directory", lambda p: os.remove(p) or os.mkdir(p),
         export.InvalidExportError, "is a directory.*export.load"),
        ("truncated", _truncate_file, export.InvalidExportError,
         "not a zip archive: it is truncated"),
        ("corrupt_weights",
         lambda p: _flip_member_byte(p, "model.weights.h5"),
         export.InvalidExportError,
         "model.weights.h5 in the archive is corrupt"),
        ("not_a_model", _zip_without_config, export.InvalidExportError,
         "no config.json"),
        ("incompatible_version", lambda p: _set_config_version(p, "1.0.0"),
         IncompatibleVersionError, "keras_mlres 1.0.0, which is incompatible"),
    )
    def test_load_model_names_the_problem(self, damage, error, message):
        path = os.path.join(self.get_temp_dir(), "model.keras")
        _multilevel(num_levels=2).save(path)
        damage(path)
        with self.assertRaisesRegex(error, message):
            mlres.load_model(path)

    def test_keras_load_model_reports_an_incompatible_version(self):
        path = os.path.join(self.get_temp_dir(), "model.keras")
        _multilevel(num_levels=2).save(path)
        _set_config_version(path, "2.3.0")
        with self.assertRaisesRegex(IncompatibleVersionError, "2.3.0"):
            keras.models.load_model(path)

    def test_config_records_the_version(self):
        config = _multilevel().get_config()
        self.assertEqual(config["keras_mlres_version"], mlres.__version__)
        restored = mlres.MultilevelModel.from_config(
            dict(config, keras_mlres_version="0.0.1")
        )
        self.assertEqual(restored.get_config(), config)


if __name__ == "__main__":
    tf.test.main()

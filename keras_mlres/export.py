"""Exporting and loading: atomic SavedModel exports, checked before loading.

`export_model` writes a serving SavedModel (what `MultilevelModel.export`
writes) and `export_hub_module` a reusable SavedModel that follows the TF Hub
conventions and can be fine-tuned after `tf.saved_model.load`. Either holds
the fine network or, with `level=l`, the level-l network of the hierarchy: a
shallower network that is cheaper to serve.

Exports are written into a temporary directory beside the target and moved
into place only when complete, so a failed export never replaces a good one.
The target must be new, empty or an earlier export: an export replaces its
directory as a whole, so a directory holding other files is refused.
Each export records the keras_mlres version and the size and SHA-256 of
every file in `assets.extra/keras_mlres.json`; `load` checks them and names
the problem (missing path, not a SavedModel, truncated or corrupt files,
incompatible version) before TensorFlow reads anything. `load_model` does the
same for `.keras` files.
"""

import functools
import hashlib
import json
import os
import shutil
import tempfile
import zipfile

import keras
import tensorflow as tf

from keras_mlres._checks import check_finite_weights
from keras_mlres.hierarchy import Hierarchy
from keras_mlres.layers.ode_stack import ODEStack
from keras_mlres.version import __version__
from keras_mlres.version import check_compatible

METADATA_FILE = "assets.extra/keras_mlres.json"
"""Where an export keeps its keras_mlres metadata, relative to its root."""


class InvalidExportError(ValueError):
    """A path does not hold a complete, readable keras_mlres artifact."""


def export_model(
    model,
    filepath,
    format="tf_saved_model",
    level=0,
    verbose=None,
    input_signature=None,
    **kwargs,
):
    """Exports the fine network, or a coarser level, for inference.

    Args:
        model: A `MultilevelModel`, a `Hierarchy`, or a plain `keras.Model`
            (which is its own level 0).
        filepath: The directory to write (a local path): a new or empty
            directory, or an earlier export, which is replaced once the new
            one is complete. A directory with other files is refused
            (`FileExistsError`), so are the working directory and its
            parents (`ValueError`).
        format: `"tf_saved_model"` (Keras's serving SavedModel, with a
            `serve` endpoint and a `serving_default` signature), `"hub"`
            (a reusable SavedModel, see `export_hub_module`), or another
            `keras.Model.export` format (`"onnx"`, `"openvino"`, `"litert"`),
            which Keras writes as it does for any model.
        level: Which level of the hierarchy to export (0 is the fine
            network; level l has `1 / c^l` of its residual blocks).
        verbose: Whether to print where the export was written. Defaults to
            True.
        input_signature: As in `keras.Model.export`: a list with one
            `tf.TensorSpec` (or structure of them) for the inputs. Defaults
            to the network's inputs.
        **kwargs: Passed to `keras.Model.export`.

    Returns:
        None.

    Example:

    >>> export_model(model, "served/fine")
    >>> export_model(model, "served/coarse", level=2)
    >>> loaded = keras_mlres.export.load("served/coarse")
    >>> logits = loaded.serve(x)
    """
    if format == "hub":
        return export_hub_module(
            model, filepath, level=level, verbose=verbose,
            input_signature=input_signature, **kwargs,
        )
    network = level_network(model, level)
    check_finite_weights(network.weights, filepath)
    if format != "tf_saved_model":
        return network.export(
            filepath, format=format, verbose=verbose,
            input_signature=input_signature, **kwargs,
        )
    _write_atomically(
        filepath,
        lambda directory: network.export(
            directory, format=format, verbose=False,
            input_signature=input_signature, **kwargs,
        ),
        _describe(network, level, format),
        verbose,
    )


def export_hub_module(
    model, filepath, level=0, verbose=None, input_signature=None
):
    """Writes a reusable SavedModel (TF Hub conventions) of one level.

    The object that `tf.saved_model.load(filepath)` returns is callable as
    `obj(inputs, training=False)` (or `training=True`, e.g. for batch
    normalization while fine-tuning) and has the attributes `variables`,
    `trainable_variables`, `non_trainable_variables` and
    `regularization_losses`, a list of zero-argument `tf.function`s
    returning the input-independent losses (weight regularizers and the
    time-continuity penalty of `ODEStack`s). So it can be fine-tuned with a
    `tf.GradientTape` and any optimizer, without keras_mlres installed. It
    also has a `serving_default` signature (inference) for TF Serving.

    Args:
        model: A `MultilevelModel`, a `Hierarchy`, or a plain `keras.Model`
            (which is its own level 0).
        filepath: The directory to write (a local path): a new or empty
            directory, or an earlier export, which is replaced once the new
            one is complete. A directory with other files is refused
            (`FileExistsError`), so are the working directory and its
            parents (`ValueError`).
        level: Which level of the hierarchy to export (0 is the fine
            network). The level's current weights are exported; after
            training with cycles, `model.hierarchy.restrict(l - 1)` for
            l = 1 .. level first gives the restriction of the fine weights.
        verbose: Whether to print where the export was written. Defaults to
            True.
        input_signature: As in `keras.Model.export`: a list with one
            `tf.TensorSpec` (or structure of them) for the inputs. Defaults
            to the network's inputs.

    Returns:
        None.

    Example:

    >>> export_hub_module(model, "hub/fine")
    >>> module = tf.saved_model.load("hub/fine")
    >>> with tf.GradientTape() as tape:
    ...     loss = loss_fn(y, module(x, training=True))
    ...     loss += tf.add_n([l() for l in module.regularization_losses])
    >>> grads = tape.gradient(loss, module.trainable_variables)
    >>> optimizer.apply_gradients(zip(grads, module.trainable_variables))
    """
    network = level_network(model, level)
    check_finite_weights(network.weights, filepath)
    if input_signature is None:
        inputs_spec = tf.nest.map_structure(
            lambda tensor: tf.TensorSpec(tensor.shape, tensor.dtype),
            network.inputs[0] if len(network.inputs) == 1 else network.inputs,
        )
    else:
        (inputs_spec,) = input_signature

    def write(directory):
        module = _reusable_module(network, inputs_spec)
        tf.saved_model.save(
            module,
            directory,
            signatures={
                "serving_default": module.__call__.get_concrete_function(
                    inputs_spec, training=False
                )
            },
        )

    _write_atomically(
        filepath, write, _describe(network, level, "hub"), verbose
    )


def level_network(model, level=0):
    """Returns the network of one level of a model.

    Args:
        model: A `MultilevelModel`, a `Hierarchy`, or a plain `keras.Model`
            (which has only level 0).
        level: The level, 0 for the fine network.

    Returns:
        A `keras.Model`.

    Raises:
        ValueError: If the level does not exist.
        TypeError: If `model` is none of the above.
    """
    hierarchy = (
        model
        if isinstance(model, Hierarchy)
        else getattr(model, "hierarchy", None)
    )
    if isinstance(hierarchy, Hierarchy):
        return hierarchy.level(level)
    if not isinstance(model, keras.Model):
        raise TypeError(
            "Expected a MultilevelModel, a Hierarchy or a keras.Model. "
            f"Received: {type(model).__name__}"
        )
    if level != 0:
        raise ValueError(
            f"level={level} needs a hierarchy, but '{model.name}' is a plain "
            "keras.Model, which is its own level 0. Pass the MultilevelModel "
            "(or keras_mlres.Hierarchy(model, num_levels)) to export a "
            "coarse level."
        )
    return model


def read_metadata(filepath):
    """Checks an export and returns its keras_mlres metadata.

    Args:
        filepath: The directory that `export_model` or `export_hub_module`
            wrote.

    Returns:
        A dict: `keras_mlres_version`, `format` (`"tf_saved_model"` or
        `"hub"`), `level`, `num_blocks` (per stage), `parameters`, and
        `files` (size and SHA-256 of every file).

    Raises:
        FileNotFoundError: If the path does not exist.
        InvalidExportError: If the path is not a SavedModel directory, was
            not written by keras_mlres, or has missing, truncated or corrupt
            files.
        IncompatibleVersionError: If a keras_mlres of another major version
            wrote it.
    """
    path = os.fspath(filepath)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"No export at '{path}': the path does not exist. Check the "
            "path, or write an export with model.export(path)."
        )
    if not os.path.isdir(path):
        hint = (
            " It looks like a model file: load it with "
            "keras_mlres.load_model(path)."
            if path.endswith(".keras")
            else ""
        )
        raise InvalidExportError(
            f"'{path}' is a file, not a SavedModel directory.{hint}"
        )
    if not os.path.isfile(os.path.join(path, "saved_model.pb")):
        raise InvalidExportError(
            f"'{path}' is not a SavedModel: the directory has no "
            "saved_model.pb. Pass the directory that model.export(path) "
            "wrote, or export the model again."
        )
    metadata_path = os.path.join(path, METADATA_FILE)
    if not os.path.isfile(metadata_path):
        raise InvalidExportError(
            f"'{path}' is a SavedModel but was not written by keras_mlres "
            f"(it has no {METADATA_FILE}). Load it with "
            "tf.saved_model.load(path), or export the model with "
            "model.export(path)."
        )
    try:
        with open(metadata_path, encoding="utf-8") as file:
            metadata = json.load(file)
        files = metadata["files"]
    except (ValueError, KeyError, TypeError) as error:
        raise InvalidExportError(
            f"The keras_mlres metadata of the export at '{path}' "
            f"({METADATA_FILE}) is corrupt ({error!r}). Export the model "
            "again."
        ) from error
    check_compatible(
        metadata.get("keras_mlres_version"), f"The export at '{path}'"
    )
    problems = []
    for name, recorded in sorted(files.items()):
        problem = _file_problem(os.path.join(path, name), recorded)
        if problem:
            problems.append(f"{name} {problem}")
    if problems:
        raise InvalidExportError(
            f"The export at '{path}' is damaged: " + "; ".join(problems)
            + ". Export the model again (a new export replaces the old one "
            "only once it is complete)."
        )
    return metadata


def load(filepath):
    """Checks and loads an export written by keras_mlres.

    Args:
        filepath: The directory that `export_model` (`MultilevelModel.export`)
            or `export_hub_module` wrote.

    Returns:
        The object `tf.saved_model.load` returns: with `serve` and the
        `serving_default` signature for `"tf_saved_model"` exports; callable
        as `obj(inputs, training=...)` with `variables`,
        `trainable_variables` and `regularization_losses` for `"hub"` ones.

    Raises:
        FileNotFoundError, InvalidExportError, IncompatibleVersionError: As
            in `read_metadata`, or if TensorFlow cannot read the SavedModel.

    Example:

    >>> model.export("served")
    >>> loaded = keras_mlres.export.load("served")
    >>> logits = loaded.serve(x)
    """
    read_metadata(filepath)
    try:
        return tf.saved_model.load(os.fspath(filepath))
    except (OSError, tf.errors.OpError) as error:
        raise InvalidExportError(
            f"TensorFlow could not load the export at '{filepath}': {error}. "
            "Export the model again with this TensorFlow version."
        ) from error


def load_model(filepath, custom_objects=None, compile=True, safe_mode=True):
    """Loads a `.keras` model file, with clear errors for bad files.

    As `keras.models.load_model`, but a missing, truncated or corrupt file,
    or a directory, gets an error that says so (Keras reports all of these
    as "File not found"). A model written by an incompatible keras_mlres
    version raises `IncompatibleVersionError`.

    Args:
        filepath: Path of a `.keras` (or legacy `.h5`) file.
        custom_objects: As in `keras.models.load_model`.
        compile: As in `keras.models.load_model`.
        safe_mode: As in `keras.models.load_model`.

    Returns:
        The model, e.g. a compiled `MultilevelModel`.

    Raises:
        FileNotFoundError: If the file does not exist.
        InvalidExportError: If the path is a directory, or the file is not a
            complete `.keras` archive.

    Example:

    >>> model.save("model.keras")
    >>> model = keras_mlres.load_model("model.keras")
    """
    path = os.fspath(filepath)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"No model file at '{path}': the path does not exist. Check the "
            "path, or save the model with model.save(path)."
        )
    if os.path.isdir(path):
        raise InvalidExportError(
            f"'{path}' is a directory, not a .keras file. Load an export "
            "directory with keras_mlres.export.load(path)."
        )
    if path.endswith(".keras"):
        problem = _keras_archive_problem(path)
        if problem:
            raise InvalidExportError(
                f"Cannot load '{path}': {problem}. Save the model again with "
                "model.save(path)."
            )
    return keras.models.load_model(
        path, custom_objects=custom_objects, compile=compile,
        safe_mode=safe_mode,
    )


def _keras_archive_problem(path):
    """Describes what is wrong with a `.keras` zip archive, or None."""
    try:
        with zipfile.ZipFile(path) as archive:
            if "config.json" not in archive.namelist():
                return "the archive has no config.json, so it is not a .keras file"
            damaged = archive.testzip()
    except zipfile.BadZipFile:
        return "the file is not a zip archive: it is truncated or not a .keras file"
    if damaged:
        return f"{damaged} in the archive is corrupt (checksum mismatch)"
    return None


def _reusable_module(network, inputs_spec):
    """A trackable object with the attributes of a reusable SavedModel."""
    # Keras's ExportArchive roots its SavedModels in the same type; the
    # conventions need plain attributes named `variables` etc., which
    # tf.Module reserves for properties.
    module = tf.__internal__.tracking.AutoTrackable()
    module.variables = list(network.variables)
    module.trainable_variables = list(network.trainable_variables)
    module.non_trainable_variables = list(network.non_trainable_variables)

    @tf.function
    def call(inputs, training=False):
        return network(inputs, training=training)

    for training in (False, True):  # `training` is a Python bool: 2 traces
        call.get_concrete_function(inputs_spec, training=training)
    module.__call__ = call
    module.regularization_losses = [
        tf.function(loss, input_signature=[])
        for loss in _input_independent_losses(network)
    ]
    return module


def _input_independent_losses(network):
    """Zero-argument callables: weight regularizers and smoothness terms."""
    losses = [
        functools.partial(variable.regularizer, variable)
        for variable in network.trainable_variables
        if variable.regularizer is not None
    ]
    losses += [
        layer.smoothness_loss
        for layer in network._flatten_layers(include_self=False)
        if isinstance(layer, ODEStack) and layer.smoothness_penalty
    ]
    return losses


def _describe(network, level, format):
    return {
        "format": format,
        "level": level,
        "num_blocks": [
            layer.num_blocks
            for layer in network._flatten_layers(include_self=False)
            if isinstance(layer, ODEStack)
        ],
        "parameters": int(network.count_params()),
    }


def _write_atomically(filepath, write, metadata, verbose):
    """Writes an export beside `filepath`, then moves it into place.

    Args:
        filepath: The target directory.
        write: Function writing the SavedModel into a given empty directory.
        metadata: The `_describe` dict to record with the file manifest.
        verbose: Whether to print where the export was written.
    """
    if "://" in os.fspath(filepath):
        raise ValueError(
            f"Exports are written to local directories (atomically), but "
            f"received '{filepath}'. Export to a local path, then copy it."
        )
    target = os.path.abspath(os.fspath(filepath))
    _check_target(target)
    parent, name = os.path.split(target)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{name}.partial-", dir=parent)
    # mkdtemp makes the directory private (0700); an export is read by
    # serving processes that may run as other users, so it gets the mode
    # that os.makedirs would give it.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)
    try:
        write(staging)
        _write_metadata(staging, metadata)
        _replace_directory(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if verbose is None or verbose:
        print(
            f"Exported level {metadata['level']} ({metadata['format']}, "
            f"{metadata['parameters']:,} parameters) to '{target}'."
        )


def _check_target(target):
    """Raises if moving an export to `target` could delete other files.

    The export replaces the directory at `target` as a whole, so that
    directory must be new, empty or an earlier export (recognised by its
    `METADATA_FILE`), and must not hold the working directory. Runs before
    anything is written.

    Args:
        target: The absolute path of the export.

    Raises:
        FileExistsError: If `target` is a file, or a non-empty directory
            that is not an earlier export.
        ValueError: If `target` is the working directory or one of its
            parents.
    """
    if os.path.exists(target) and not os.path.isdir(target):
        raise FileExistsError(
            f"'{target}' is a file; an export is a directory. Choose another "
            "path or remove the file."
        )
    real_target = os.path.realpath(target)
    if os.path.commonpath([real_target, os.getcwd()]) == real_target:
        raise ValueError(
            f"Cannot export to '{target}': it is the current working "
            "directory or one of its parents, which the export would "
            "replace as a whole. Choose a new or empty directory, e.g. "
            "model.export('exported_model')."
        )
    if (
        os.path.isdir(target)
        and os.listdir(target)
        and not os.path.isfile(os.path.join(target, METADATA_FILE))
    ):
        raise FileExistsError(
            f"'{target}' is a non-empty directory that holds no keras_mlres "
            f"export (it has no {METADATA_FILE}). An export replaces its "
            "directory as a whole, which would delete these files. Choose a "
            "new or empty directory, or move the files away first."
        )


def _replace_directory(source, target):
    """Moves `source` to `target`, removing an old `target` only after."""
    if not os.path.exists(target):
        os.rename(source, target)
        return
    parent, name = os.path.split(target)
    retired_parent = tempfile.mkdtemp(prefix=f".{name}.old-", dir=parent)
    retired = os.path.join(retired_parent, name)
    os.rename(target, retired)
    try:
        os.rename(source, target)
    except BaseException:
        os.rename(retired, target)
        os.rmdir(retired_parent)
        raise
    shutil.rmtree(retired_parent)


def _write_metadata(directory, metadata):
    files = {}
    for root, _, names in os.walk(directory):
        for file_name in names:
            full = os.path.join(root, file_name)
            relative = os.path.relpath(full, directory).replace(os.sep, "/")
            files[relative] = {
                "size": os.path.getsize(full),
                "sha256": _sha256(full),
            }
    record = {"keras_mlres_version": __version__, **metadata, "files": files}
    path = os.path.join(directory, METADATA_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as file:
        json.dump(record, file, indent=1, sort_keys=True)


def _file_problem(path, recorded):
    """Describes how a file differs from its manifest entry, or None."""
    if not os.path.isfile(path):
        return "is missing"
    size = os.path.getsize(path)
    if size != recorded["size"]:
        return (
            f"has {size} bytes instead of {recorded['size']} (truncated or "
            "overwritten)"
        )
    if _sha256(path) != recorded["sha256"]:
        return "does not match its recorded SHA-256 checksum (corrupt)"
    return None


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()

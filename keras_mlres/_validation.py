"""Checks of what users pass to `compile` and `fit`, before any state changes.

Keras reports most of these problems from deep inside a traced step, or, under
XLA, not at all (an out-of-range label silently gives a NaN loss). The checks
here run on the host before training starts and name the problem and the fix.
"""

import warnings

import keras
import numpy as np
import tensorflow as tf

_SPARSE_CATEGORICAL = (
    "sparse_categorical_crossentropy",
    "SparseCategoricalCrossentropy",
)


def check_loss(loss):
    """Resolves every loss given by name now, instead of at the first step.

    Args:
        loss: What `compile` received as `loss` (a name, callable, list or
            dict of them, or None).

    Raises:
        ValueError: For a name Keras does not know.
    """
    for name in tf.nest.flatten(loss):
        if isinstance(name, str):
            try:
                keras.losses.get(name)
            except ValueError:
                raise ValueError(
                    f"Unknown loss {name!r}. Pass a keras.losses.Loss instance "
                    "or a name keras.losses.get knows, e.g. "
                    "'sparse_categorical_crossentropy' or 'mse'."
                ) from None


def warn_if_loss_expects_probabilities(loss, model):
    """Warns when a crossentropy given by name meets a network of logits.

    A crossentropy named by a string takes its `from_logits=False` default,
    while the networks of `keras_mlres.models` end in a linear layer; Keras
    would then train on a wrong loss without a word.

    Args:
        loss: What `compile` received as `loss`.
        model: The fine network.
    """
    if len(model.outputs) != 1 or not model.layers:
        return
    last = model.layers[-1]
    if getattr(last, "activation", None) is not keras.activations.linear:
        return
    for name in tf.nest.flatten(loss):
        if isinstance(name, str) and "crossentropy" in name.lower():
            loss_class = name
            if name.islower():
                loss_class = "".join(map(str.capitalize, name.split("_")))
            warnings.warn(
                f"loss={name!r} expects probabilities (from_logits=False), "
                f"but the network's last layer {last.name!r} has a linear "
                "activation, so it outputs logits. Pass "
                f"loss=keras.losses.{loss_class}(from_logits=True), or end "
                "the network with a softmax (sigmoid) activation.",
                stacklevel=3,
            )


def cloneable_config(optimizer):
    """Returns `optimizer.get_config()` once a clone from it is known to work.

    The coarse levels' default optimizers are rebuilt from this config; a
    learning rate Keras cannot serialize (a lambda or plain function) fails
    there, so the error names the two ways around it.

    Args:
        optimizer: The fine level's `keras.optimizers.Optimizer`.

    Returns:
        Its config dict.

    Raises:
        ValueError: If the optimizer cannot be rebuilt from its config.
    """
    try:
        config = optimizer.get_config()
        type(optimizer).from_config(config)
    except (OSError, TypeError, ValueError) as error:
        raise ValueError(
            f"The coarse levels' optimizers are clones of the fine "
            f"{type(optimizer).__name__}, but it cannot be cloned through "
            f"get_config()/from_config() ({error}). A learning rate given as "
            "a lambda or plain function is the usual cause. Pass a "
            "keras.optimizers.schedules.LearningRateSchedule (or a number) "
            "instead, or give each coarse level its own optimizer with "
            "compile(..., level_optimizers=[...])."
        ) from error
    return config


def check_optimizer(optimizer, argument="optimizer"):
    """Resolves an optimizer given by name or config; raises a clear error.

    Args:
        optimizer: An optimizer instance, name or config dict.
        argument: The argument it came from, for the message.

    Returns:
        The `keras.optimizers.Optimizer`.

    Raises:
        ValueError: For a name or config Keras does not know.
    """
    try:
        return keras.optimizers.get(optimizer)
    except ValueError:
        raise ValueError(
            f"Unknown optimizer {optimizer!r} in `{argument}`. Pass a "
            "keras.optimizers.Optimizer instance or a name keras.optimizers.get "
            "knows, e.g. 'adam', 'sgd' or 'rmsprop'."
        ) from None


def check_training_data(model, loss, x, y=None):
    """Checks training data against the fine network before `fit` starts.

    Checks the inputs' shapes and dtypes against `model.inputs`, that there is
    at least one batch, and, for sparse categorical crossentropy, that the
    labels are class indices of the model's output. Arrays are checked in
    full; a `tf.data.Dataset` by its element spec and its first batch.
    Generators and `PyDataset`s are left to Keras (peeking would consume
    them).

    Args:
        model: The fine network.
        loss: The compiled loss.
        x: What `fit` received as `x`.
        y: What `fit` received as `y`.

    Raises:
        ValueError: Naming the problem and the fix.
    """
    if isinstance(x, tf.data.Dataset):
        inputs, labels = _split(x.element_spec)
        _check_inputs(model, inputs)
        first = _first_batch(x)
        if labels is not None:
            _check_labels(model, loss, _split(first)[1])
    elif _is_array_like(x):
        arrays = tf.nest.map_structure(np.asarray, x)
        _check_inputs(model, arrays)
        if not len(tf.nest.flatten(arrays)[0]):
            raise _empty_error()
        if y is not None:
            _check_labels(model, loss, y)


def _split(element):
    if isinstance(element, tuple) and 1 < len(element) <= 3:
        return element[0], element[1]
    return element, None


def _is_array_like(x):
    arrays = tf.nest.flatten(x)
    return bool(arrays) and all(
        isinstance(a, (np.ndarray, tf.Tensor)) for a in arrays
    )


def _empty_error():
    return ValueError(
        "The training data is empty: it yields no batch, so `fit` would train "
        "nothing. Check the data source, its filters, and that batch() is not "
        "given drop_remainder=True with fewer examples than the batch size."
    )


def _first_batch(dataset):
    if dataset.cardinality() == 0:
        raise _empty_error()
    for batch in dataset.take(1):
        return batch
    raise _empty_error()


def _check_inputs(model, inputs):
    expected = model.inputs
    given = tf.nest.flatten(inputs)
    if len(given) != len(expected):
        raise ValueError(
            f"The fine network '{model.name}' takes {len(expected)} input(s), "
            f"but the training data has {len(given)}. Pass the inputs in the "
            "structure of the model's keras.Input layers."
        )
    for data, tensor in zip(given, expected):
        shape = tuple(data.shape)
        want = tuple(tensor.shape)
        compatible = len(shape) == len(want) and all(
            w is None or s is None or s == w for s, w in zip(shape[1:], want[1:])
        )
        if not compatible:
            raise ValueError(
                f"The training inputs have shape {shape}, but the fine "
                f"network '{model.name}' expects {want} (batch axis first). "
                "Reshape the data, batch the dataset, or build the network "
                "with keras.Input(shape) matching one example."
            )
        dtype = tf.as_dtype(data.dtype)
        if not (dtype.is_floating or dtype.is_integer or dtype.is_bool):
            raise ValueError(
                f"The training inputs have dtype {dtype.name}, but the fine "
                f"network '{model.name}' takes numbers ({tensor.dtype}). "
                "Convert the features to numbers (e.g. float32) first."
            )


def _is_sparse_categorical(loss):
    if isinstance(loss, keras.losses.SparseCategoricalCrossentropy):
        return True
    name = loss if isinstance(loss, str) else getattr(loss, "__name__", "")
    return name in _SPARSE_CATEGORICAL


def _check_labels(model, loss, labels):
    if labels is None or not _is_sparse_categorical(loss):
        return
    if len(model.outputs) != 1 or model.outputs[0].shape[-1] is None:
        return
    classes = int(model.outputs[0].shape[-1])
    labels = np.asarray(labels)
    if not labels.size or not np.issubdtype(labels.dtype, np.number):
        return
    low, high = labels.min(), labels.max()
    ignored = getattr(loss, "ignore_class", None)
    if ignored is not None:
        kept = labels[labels != ignored]
        low, high = (kept.min(), kept.max()) if kept.size else (0, 0)
    if low < 0 or high >= classes:
        raise ValueError(
            f"Sparse categorical labels must be class indices in [0, "
            f"{classes}) for the fine network's {classes} outputs, but the "
            f"training labels range over [{low}, {high}]. Fix the labels, or "
            "give the classifier one unit per class."
        )

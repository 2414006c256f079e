"""Checks of what users pass to `compile` and `fit`, before any state changes.

Keras reports most of these problems from deep inside a traced step, or, under
XLA, not at all (an out-of-range label silently gives a NaN loss). The checks
here run on the host before training starts and name the problem and the fix.
"""

import inspect
import warnings

import keras
import numpy as np
import tensorflow as tf

from keras_mlres import cycles

_SPARSE_CATEGORICAL = (
    "sparse_categorical_crossentropy",
    "SparseCategoricalCrossentropy",
)
_ACCURACY = ("accuracy", "acc")


# Names for which Keras picks the crossentropy by the labels' shape at the
# first step (keras.losses.get does not know them).
_CROSSENTROPY_NAMES = ("crossentropy", "ce")


def _resolve_loss(identifier):
    """`keras.losses.get`, with Keras's shape-dependent crossentropy names.

    Such a name stands here for the sparse categorical crossentropy, which
    has the same default `from_logits=False`.
    """
    if str(identifier).lower() in _CROSSENTROPY_NAMES:
        identifier = "sparse_categorical_crossentropy"
    return keras.losses.get(identifier)


def check_loss(loss, loss_weights=None):
    """Resolves every loss now, instead of at the first step.

    Args:
        loss: What `compile` received as `loss` (a name, callable, list or
            dict of them).
        loss_weights: What `compile` received as `loss_weights`.

    Raises:
        ValueError: For no loss at all (every level trains on the compiled
            loss), a name or object Keras cannot use as a loss, or loss
            weights of a type Keras refuses.
    """
    # Keras refuses these only after it has set the new optimizer.
    if loss_weights and not isinstance(
        loss_weights, (list, tuple, dict, float)
    ):
        raise ValueError(
            "`loss_weights` must be a float (one output), or a list or dict "
            f"of them by output. Received: loss_weights={loss_weights!r}"
        )
    if loss is None:
        raise ValueError(
            "MultilevelModel trains every level on the compiled loss, but "
            "compile() received no loss. Pass one, e.g. loss=keras.losses."
            "SparseCategoricalCrossentropy(from_logits=True)."
        )
    for identifier in tf.nest.flatten(loss):
        try:
            _resolve_loss(identifier)
        except ValueError:
            raise ValueError(
                f"Unknown loss {identifier!r}. Pass a keras.losses.Loss "
                "instance or a name keras.losses.get knows, e.g. "
                "'sparse_categorical_crossentropy' or 'mse'."
            ) from None


def check_metrics(metrics, weighted_metrics):
    """Resolves every metric given by name now, instead of at the first step.

    Args:
        metrics: What `compile` received as `metrics`.
        weighted_metrics: What `compile` received as `weighted_metrics`.

    Raises:
        ValueError: For metrics not in a list or dict, or a name Keras does
            not know.
    """
    for argument, value in (
        ("metrics", metrics), ("weighted_metrics", weighted_metrics)
    ):
        if not value:
            continue
        if not isinstance(value, (list, tuple, dict)):
            raise ValueError(
                f"`{argument}` must be a list of metrics (or a dict of them "
                f"by output name). Received: {argument}={value!r}; pass "
                f"{argument}=[{value!r}]."
            )
        for metric in tf.nest.flatten(value):
            if metric is None or callable(metric):
                continue
            # Keras resolves "accuracy" by the labels' shape at the first step.
            if isinstance(metric, str) and metric.lower() in _ACCURACY:
                continue
            try:
                keras.metrics.get(metric)
            except ValueError:
                raise ValueError(
                    f"Unknown metric {metric!r} in `{argument}`. Pass a "
                    "keras.metrics.Metric instance or a name keras.metrics.get "
                    "knows, e.g. 'accuracy' or 'mae'."
                ) from None


def warn_if_loss_expects_probabilities(loss, model):
    """Warns when a loss that expects probabilities meets a network of logits.

    A crossentropy given by name or class, or built without
    `from_logits=True`, expects probabilities, while the networks of
    `keras_mlres.models` end in a linear layer; Keras would then train on a
    wrong loss without a word.

    Args:
        loss: What `compile` received as `loss` (already checked by
            `check_loss`).
        model: The fine network.
    """
    if len(model.outputs) != 1 or not model.layers:
        return
    last = model.layers[-1]
    if getattr(last, "activation", None) is not keras.activations.linear:
        return
    for identifier in tf.nest.flatten(loss):
        resolved = _resolve_loss(identifier)
        if isinstance(resolved, keras.losses.Loss):
            from_logits = getattr(resolved, "from_logits", None)
            loss_class = type(resolved).__name__
            given = loss_class if inspect.isclass(identifier) else (
                f"{loss_class}(...)"
            )
        elif inspect.isfunction(resolved):
            # A loss function, such as the one a lowercase name stands for.
            parameter = inspect.signature(resolved).parameters.get(
                "from_logits"
            )
            from_logits = parameter.default if parameter else None
            given = resolved.__name__
            loss_class = "".join(map(str.capitalize, given.split("_")))
        else:
            continue
        if from_logits is not False:
            continue
        if isinstance(identifier, str):
            given = repr(identifier)
        fix = (
            f"keras.losses.{loss_class}(from_logits=True)"
            if hasattr(keras.losses, loss_class)
            else "a loss built with from_logits=True"
        )
        warnings.warn(
            f"loss={given} expects probabilities (from_logits=False), but "
            f"the network's last layer {last.name!r} has a linear "
            f"activation, so it outputs logits. Pass loss={fix}, or end the "
            "network with a softmax (sigmoid) activation.",
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
        ValueError: For a name or config Keras does not know, or an optimizer
            that scales the loss.
    """
    try:
        resolved = keras.optimizers.get(optimizer)
    except ValueError:
        resolved = None  # as keras.optimizers.get(None) returns
    if not isinstance(resolved, keras.optimizers.Optimizer):
        raise ValueError(
            f"Unknown optimizer {optimizer!r} in `{argument}`. Pass a "
            "keras.optimizers.Optimizer instance or a name keras.optimizers.get "
            "knows, e.g. 'adam', 'sgd' or 'rmsprop'."
        )
    optimizer = resolved
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        raise _loss_scaling_error(f"`{argument}` is a LossScaleOptimizer")
    if optimizer.loss_scale_factor is not None:
        raise _loss_scaling_error(
            f"`{argument}` has loss_scale_factor="
            f"{optimizer.loss_scale_factor!r}"
        )
    return optimizer


def check_dtype_policy(model):
    """Rejects the policy for which `compile` would add loss scaling.

    Under "mixed_float16" (and `compile(..., auto_scale_loss=True)`, the
    default) Keras wraps the optimizer in a `LossScaleOptimizer`.

    Args:
        model: The `MultilevelModel`.

    Raises:
        ValueError: If its dtype policy is "mixed_float16".
    """
    if model.dtype_policy.name == "mixed_float16":
        raise _loss_scaling_error(
            "the dtype policy is 'mixed_float16', for which Keras wraps the "
            "optimizer in a LossScaleOptimizer"
        )


def _loss_scaling_error(cause):
    return ValueError(
        f"MultilevelModel does not support loss scaling, but {cause}: the "
        "multilevel cycle does not scale the loss, so every step would be "
        "divided by the loss scale. For mixed precision, call "
        "keras.mixed_precision.set_global_policy('mixed_bfloat16') (which "
        "needs no loss scaling) before building the networks, or train in "
        "'float32', and pass a plain optimizer."
    )


def check_no_gradient_accumulation(optimizer, argument):
    """Rejects an optimizer that applies its updates every few batches only.

    With `gradient_accumulation_steps` a Keras optimizer's `apply` only
    accumulates most of the time, while the cycle restricts, corrects and
    line-searches at every batch as if each step had been taken.

    Args:
        optimizer: A level's `keras.optimizers.Optimizer`.
        argument: The argument it came from, for the message.

    Raises:
        ValueError: If it accumulates gradients.
    """
    steps = getattr(optimizer, "gradient_accumulation_steps", None)
    if steps:
        raise ValueError(
            f"The optimizer in `{argument}` has gradient_accumulation_steps="
            f"{steps}, which a multilevel cycle does not support: its "
            "corrections and line search act at every batch. Use a larger "
            "batch size instead, or num_levels=1."
        )


def check_optimizer_variables(optimizer, variables, argument):
    """Rejects an optimizer already built on variables other than a level's.

    Keras optimizers build once, on the variables of their first update;
    `cycles.Level` would refuse this one after `compile` changed the model.

    Args:
        optimizer: A level's `keras.optimizers.Optimizer`.
        variables: That level's trainable variables.
        argument: The argument the optimizer came from, for the message.

    Raises:
        ValueError: If `optimizer` is built on other variables.
    """
    if cycles.built_on_other_variables(optimizer, variables):
        raise ValueError(
            f"The optimizer {optimizer.name!r} in `{argument}` is already "
            "built on other variables than its level's trainable weights "
            "(by another model, or before layers were frozen or unfrozen). "
            "Each level needs an optimizer of its own: pass a fresh "
            "optimizer instance."
        )


def check_data(model, loss, x, y=None, purpose="training"):
    """Checks training or validation data against the fine network.

    Checks the inputs' shapes and dtypes against `model.inputs`, that there is
    at least one batch, that the inputs are finite, and, for sparse
    categorical crossentropy, that the labels are class indices of the
    model's output. Arrays are checked in full; a `tf.data.Dataset` by its
    element spec and its cardinality only, never by reading it: a pass that
    stops early (a peek at the first batch) can leave a memory cache in the
    pipeline holding part of the data for good (see `datasets.load`).
    Generators and `PyDataset`s are left to Keras (peeking would consume
    them).

    Args:
        model: The fine network.
        loss: The compiled loss.
        x: The inputs, or a dataset of (inputs, labels) batches.
        y: The labels, if `x` holds only the inputs.
        purpose: `"training"` or `"validation"`, for the messages.

    Raises:
        ValueError: Naming the problem and the fix.
    """
    if isinstance(x, tf.data.Dataset):
        inputs, _ = _split(x.element_spec)
        _check_inputs(model, inputs, purpose)
        if x.cardinality() == 0:
            raise _empty_error(purpose)
    elif _is_array_like(x):
        arrays = tf.nest.map_structure(np.asarray, x)
        _check_inputs(model, arrays, purpose)
        if not len(tf.nest.flatten(arrays)[0]):
            raise _empty_error(purpose)
        _check_finite(arrays, purpose)
        if y is not None:
            _check_labels(model, loss, y, purpose)


def _split(element):
    if isinstance(element, tuple) and 1 < len(element) <= 3:
        return element[0], element[1]
    return element, None


def _is_array_like(x):
    arrays = tf.nest.flatten(x)
    return bool(arrays) and all(
        isinstance(a, (np.ndarray, tf.Tensor)) for a in arrays
    )


def _empty_error(purpose):
    return ValueError(
        f"The {purpose} data is empty: it yields no batch, so `fit` would "
        f"have nothing to {'train' if purpose == 'training' else 'validate'} "
        "on. Check the data source, its filters, and that batch() is not "
        "given drop_remainder=True with fewer examples than the batch size."
    )


def _check_inputs(model, inputs, purpose):
    expected = model.inputs
    given = tf.nest.flatten(inputs)
    if len(given) != len(expected):
        raise ValueError(
            f"The fine network '{model.name}' takes {len(expected)} input(s), "
            f"but the {purpose} data has {len(given)}. Pass the inputs in the "
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
                f"The {purpose} inputs have shape {shape}, but the fine "
                f"network '{model.name}' expects {want} (batch axis first). "
                "Reshape the data, batch the dataset, or build the network "
                "with keras.Input(shape) matching one example."
            )
        dtype = tf.as_dtype(data.dtype)
        if not (dtype.is_floating or dtype.is_integer or dtype.is_bool):
            raise ValueError(
                f"The {purpose} inputs have dtype {dtype.name}, but the fine "
                f"network '{model.name}' takes numbers ({tensor.dtype}). "
                "Convert the features to numbers (e.g. float32) first."
            )


def _check_finite(inputs, purpose):
    # A NaN or Inf feature makes the fine weights NaN at its first batch.
    for data in tf.nest.flatten(inputs):
        data = np.asarray(data)
        if not tf.as_dtype(data.dtype).is_floating:
            continue
        if not np.isfinite(data).all():
            raise ValueError(
                f"The {purpose} inputs contain NaN or Inf values, which would "
                "make the weights NaN. Remove or impute them (e.g. with "
                "np.nan_to_num) before fit."
            )


def _is_sparse_categorical(loss):
    if isinstance(loss, keras.losses.SparseCategoricalCrossentropy):
        return True
    name = loss if isinstance(loss, str) else getattr(loss, "__name__", "")
    return name in _SPARSE_CATEGORICAL


def _check_labels(model, loss, labels, purpose):
    if labels is None or not _is_sparse_categorical(loss):
        return
    if len(model.outputs) != 1 or model.outputs[0].shape[-1] is None:
        return
    classes = int(model.outputs[0].shape[-1])
    labels = np.asarray(labels)
    if not labels.size or not np.issubdtype(labels.dtype, np.number):
        return
    ignored = getattr(loss, "ignore_class", None)
    if ignored is not None:
        labels = labels[labels != ignored]
    # NaN compares false with every bound, and a fraction passes them.
    bad = labels[~np.isfinite(labels) | (labels != np.round(labels))]
    if bad.size:
        received = f"include {bad.flat[0]}, which is not a class index"
    elif labels.size and (labels.min() < 0 or labels.max() >= classes):
        received = f"range over [{labels.min()}, {labels.max()}]"
    else:
        return
    raise ValueError(
        f"Sparse categorical labels must be class indices in [0, "
        f"{classes}) for the fine network's {classes} outputs, but the "
        f"{purpose} labels {received}. Fix the labels, or give the "
        "classifier one unit per class."
    )

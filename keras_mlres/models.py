"""Builders of ODE-ResNets ready for `MultilevelModel`."""

import numbers

import keras

from keras_mlres._checks import check_choice
from keras_mlres._checks import check_count
from keras_mlres.layers.conv_residual_ode_block import ConvResidualODEBlock
from keras_mlres.layers.ode_stack import ODEStack
from keras_mlres.layers.residual_ode_block import ResidualODEBlock

DOWNSAMPLINGS = ("conv", "pool")


def dense_ode_resnet(
    input_shape,
    num_classes,
    width=16,
    num_blocks=64,
    time_horizon=4.0,
    activation="tanh",
    double_layer=False,
    dtype=None,
    name="dense_ode_resnet",
):
    """Builds an ODE-ResNet for vector inputs.

    The network lifts the input to `width` features with a Dense layer, runs
    one `ODEStack` of `num_blocks` dense residual blocks over
    `[0, time_horizon]`, and classifies with a Dense layer returning logits.

    Args:
        input_shape: Shape of one example, e.g. `(2,)`.
        num_classes: Number of classes (width of the logits).
        width: Width of the residual stage.
        num_blocks: K, the number of residual blocks.
        time_horizon: T, the stage's time interval length.
        activation: Activation of the blocks and of the opening layer.
        double_layer: Whether the blocks use the two-layer right-hand side.
        dtype: Optional layer dtype or dtype policy, e.g. `"float64"` or
            `"mixed_bfloat16"`.
        name: Name of the model.

    Returns:
        A built `keras.Sequential` model.

    Example:

    >>> fine = dense_ode_resnet((2,), 3, width=16, num_blocks=64)
    >>> model = keras_mlres.MultilevelModel(fine, num_levels=3)
    """
    return keras.Sequential(
        [
            keras.Input(input_shape, dtype=_input_dtype(dtype)),
            keras.layers.Dense(
                width, activation=activation, dtype=dtype, name="opening"
            ),
            ODEStack(
                ResidualODEBlock(
                    width, activation=activation, double_layer=double_layer
                ),
                num_blocks=num_blocks,
                time_horizon=time_horizon,
                dtype=dtype,
                name="stage",
            ),
            keras.layers.Dense(num_classes, dtype=dtype, name="classifier"),
        ],
        name=name,
    )


def _input_dtype(dtype):
    """The dtype of the inputs for a layer dtype or policy (or None)."""
    # keras.Input takes a dtype, not a policy: a mixed policy's layers take
    # inputs of its variable dtype (float32) and cast them.
    if dtype is None:
        return None
    return keras.dtype_policies.get(dtype).variable_dtype


def _check_stages(stages):
    """Returns `stages` as a list of `(filters, num_blocks, time_horizon)`."""
    hint = (
        "Pass a non-empty list of (filters, num_blocks, time_horizon) "
        "triples with positive entries, e.g. [(16, 8, 2.0), (32, 8, 2.0)]."
    )
    if isinstance(stages, (str, bytes)) or not stages:
        raise ValueError(f"`stages` is empty or not a list. {hint} "
                         f"Received: stages={stages!r}")
    checked = []
    for index, stage in enumerate(stages):
        try:
            filters, num_blocks, time_horizon = stage
        except (TypeError, ValueError):
            raise ValueError(
                f"Stage {index} is not a (filters, num_blocks, time_horizon) "
                f"triple. {hint} Received: stages={stages!r}"
            ) from None
        for argument, value in (("filters", filters), ("num_blocks", num_blocks)):
            check_count(
                f"stages[{index}] {argument}", value, minimum=1, hint=hint
            )
        if (
            isinstance(time_horizon, bool)
            or not isinstance(time_horizon, numbers.Real)
            or not time_horizon > 0
        ):
            raise ValueError(
                f"The time_horizon of stage {index} must be a positive "
                f"number. {hint} Received: stages={stages!r}"
            )
        checked.append((filters, num_blocks, float(time_horizon)))
    return checked


def ode_resnet(
    input_shape,
    num_classes,
    stages=((16, 8, 2.0), (32, 8, 2.0)),
    kernel_size=3,
    activation="tanh",
    normalization=None,
    double_layer=False,
    downsampling="conv",
    dtype=None,
    name="ode_resnet",
):
    """Builds a convolutional multi-stage ODE-ResNet for images.

    The network is

    - an opening `Conv2D(filters_0, kernel_size)` with `activation`, lifting
      the image to the first stage's channels;
    - for each stage i, an `ODEStack` of `num_blocks_i`
      `ConvResidualODEBlock(filters_i)` over `[0, time_horizon_i]`, named
      `"stage{i}"`; between stages a downsampling layer halves the height and
      width and changes the channels to the next stage's: a stride-2
      `Conv2D(filters_{i+1}, kernel_size)` with `activation`
      (`downsampling="conv"`), or 2x2 average pooling followed by a 1x1
      `Conv2D(filters_{i+1})` with `activation` (`"pool"`);
    - global average pooling and a Dense classifier returning logits.

    Each stage coarsens on its own in a `keras_mlres.Hierarchy`; the other
    layers are shared by every level, which is why they hold no batch
    normalization (shared moving statistics would mix the levels).

    Args:
        input_shape: Shape of one image, `(height, width, channels)`.
        num_classes: Number of classes (width of the logits).
        stages: Sequence of `(filters, num_blocks, time_horizon)` triples,
            one per resolution.
        kernel_size: Odd kernel size of the blocks and the opening and
            downsampling convolutions.
        activation: Activation of the blocks and the other convolutions.
            Defaults to `"tanh"` (see `ConvResidualODEBlock`).
        normalization: Normalization of the blocks, `None` or `"batch"`.
        double_layer: Whether the blocks use the two-layer right-hand side.
        downsampling: `"conv"` or `"pool"`, see above.
        dtype: Optional layer dtype or dtype policy, e.g. `"float64"` or
            `"mixed_bfloat16"`.
        name: Name of the model.

    Returns:
        A built `keras.Sequential` model.

    Raises:
        ValueError: If `input_shape` is not an image shape, `stages` is
            empty or has a non-positive entry, the image is too small for
            the downsampling steps, or an option is unknown.

    Example:

    >>> fine = ode_resnet((28, 28, 1), 10, stages=[(8, 16, 2.0), (16, 16, 2.0)])
    >>> model = keras_mlres.MultilevelModel(fine, num_levels=3)
    """
    stages = _check_stages(stages)
    check_count("num_classes", num_classes, minimum=1)
    check_choice("downsampling", downsampling, DOWNSAMPLINGS)
    input_shape = tuple(input_shape)
    if len(input_shape) != 3:
        raise ValueError(
            "ode_resnet needs images: input_shape must be (height, width, "
            f"channels). Received: input_shape={input_shape}. Use "
            "dense_ode_resnet for vector inputs."
        )
    halvings = len(stages) - 1
    if any(size is not None and size < 2**halvings for size in input_shape[:2]):
        raise ValueError(
            f"{len(stages)} stages halve the image {halvings} times, which "
            f"needs height and width >= {2**halvings}; input_shape is "
            f"{input_shape}. Use fewer stages or larger images."
        )
    layers = [
        keras.Input(input_shape, dtype=_input_dtype(dtype)),
        keras.layers.Conv2D(
            stages[0][0], kernel_size, padding="same", activation=activation,
            dtype=dtype, name="opening",
        ),
    ]
    for index, (filters, num_blocks, time_horizon) in enumerate(stages):
        if index and downsampling == "conv":
            layers.append(
                keras.layers.Conv2D(
                    filters, kernel_size, strides=2, padding="same",
                    activation=activation, dtype=dtype,
                    name=f"downsampling{index}",
                )
            )
        elif index:
            layers += [
                keras.layers.AveragePooling2D(
                    2, dtype=dtype, name=f"pooling{index}"
                ),
                keras.layers.Conv2D(
                    filters, 1, activation=activation, dtype=dtype,
                    name=f"downsampling{index}",
                ),
            ]
        layers.append(
            ODEStack(
                ConvResidualODEBlock(
                    filters,
                    kernel_size,
                    activation=activation,
                    normalization=normalization,
                    double_layer=double_layer,
                ),
                num_blocks=num_blocks,
                time_horizon=time_horizon,
                dtype=dtype,
                name=f"stage{index}",
            )
        )
    layers += [
        keras.layers.GlobalAveragePooling2D(dtype=dtype, name="pooling"),
        keras.layers.Dense(num_classes, dtype=dtype, name="classifier"),
    ]
    return keras.Sequential(layers, name=name)

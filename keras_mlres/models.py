"""Builders of ODE-ResNets ready for `MultilevelModel`."""

import keras

from keras_mlres.layers.ode_stack import ODEStack
from keras_mlres.layers.residual_ode_block import ResidualODEBlock


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
        dtype: Optional layer dtype (policy), e.g. `"float64"`.
        name: Name of the model.

    Returns:
        A built `keras.Sequential` model.

    Example:

    >>> fine = dense_ode_resnet((2,), 3, width=16, num_blocks=64)
    >>> model = keras_mlres.MultilevelModel(fine, num_levels=3)
    """
    return keras.Sequential(
        [
            keras.Input(input_shape, dtype=dtype),
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

"""Dense residual ODE block: `y + dt * act(y W + b)`."""

import keras
from keras import ops

from keras_mlres._checks import check_count
from keras_mlres._checks import is_integer
from keras_mlres.layers.affine_ode_block import AffineODEBlock


@keras.saving.register_keras_serializable(package="keras_mlres")
class ResidualODEBlock(AffineODEBlock):
    """Dense residual block, one forward-Euler step of `y' = F(y)`.

    Computes `y + dt * F(y)` with

    - `F(y) = act(y W + b)` (the default, "single layer"), or
    - `F(y) = act(y W1 + b1) W2 + b2` with `double_layer=True`.

    The input's last axis must equal `units` (a residual block keeps the
    width). Use the block on its own as a layer, or as the template of an
    `ODEStack`, which applies `num_blocks` of them with stacked weights.

    Args:
        units: Width of the state y (last axis of the input).
        activation: Activation of F. Defaults to `"tanh"`.
        dt: Time step, a positive float. Defaults to 1.0.
        double_layer: If True, F is the two-layer map above.
        hidden_units: Width of the hidden layer of the double-layer variant.
            Defaults to `units`.
        use_bias: Whether F has bias vectors.
        kernel_initializer: Initializer of the kernels.
        bias_initializer: Initializer of the biases.
        kernel_regularizer: Optional regularizer of the kernels.
        bias_regularizer: Optional regularizer of the biases.
        kernel_constraint: Optional constraint of the kernels.
        bias_constraint: Optional constraint of the biases.
        **kwargs: Base layer keyword arguments (`name`, `dtype`, ...).

    Example:

    >>> block = ResidualODEBlock(4, activation="tanh", dt=0.1)
    >>> y = block(keras.ops.ones((2, 4)))
    >>> y.shape
    TensorShape([2, 4])
    """

    def __init__(
        self,
        units,
        activation="tanh",
        dt=1.0,
        double_layer=False,
        hidden_units=None,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        **kwargs,
    ):
        if not is_integer(units) or units < 1:
            raise ValueError(
                f"`units` must be a positive integer. Received: units={units!r}"
            )
        units = int(units)
        if hidden_units is not None:
            hidden_units = check_count("hidden_units", hidden_units, minimum=1)
        super().__init__(
            units,
            activation,
            dt,
            double_layer,
            hidden_units,
            use_bias,
            kernel_initializer,
            bias_initializer,
            kernel_regularizer,
            bias_regularizer,
            kernel_constraint,
            bias_constraint,
            **kwargs,
        )
        self.units = units
        self.hidden_units = self._hidden_width

    def get_config(self):
        config = super().get_config()
        config.update({"units": self.units, "hidden_units": self.hidden_units})
        return config

    def _kernel_shapes(self, input_shape):
        width = input_shape[-1]
        if width != self.units:
            raise ValueError(
                f"{type(self).__name__} '{self.name}' has units={self.units} "
                f"but its input has {width} features on the last axis. A "
                "residual block keeps the width: put a Dense(units) layer "
                "before it, or set units to the input width."
            )
        if self.double_layer:
            return [
                (self.units, self.hidden_units),
                (self.hidden_units, self.units),
            ]
        return [(self.units, self.units)]

    def _apply_kernel(self, inputs, kernel):
        return ops.matmul(inputs, kernel)

"""Dense residual ODE block: `y + dt * act(y W + b)`."""

import keras
from keras import activations
from keras import initializers
from keras import ops

from keras_mlres.layers.ode_block import ODEBlock
from keras_mlres.layers.ode_block import WeightSpec


def _fresh_if_unseeded(initializer):
    """A new instance of an unseeded initializer (so a new default seed)."""
    config = initializer.get_config()
    if "seed" in config and config["seed"] is None:
        return type(initializer).from_config(config)
    return initializer


@keras.saving.register_keras_serializable(package="keras_mlres")
class ResidualODEBlock(ODEBlock):
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
        super().__init__(dt=dt, **kwargs)
        if not isinstance(units, int) or units < 1:
            raise ValueError(
                f"`units` must be a positive integer. Received: units={units}"
            )
        self.units = units
        self.activation = activations.get(activation)
        self.double_layer = bool(double_layer)
        self.hidden_units = int(hidden_units or units)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "units": self.units,
                "activation": activations.serialize(self.activation),
                "double_layer": self.double_layer,
                "hidden_units": self.hidden_units,
                "use_bias": self.use_bias,
                "kernel_initializer": initializers.serialize(
                    self.kernel_initializer
                ),
                "bias_initializer": initializers.serialize(
                    self.bias_initializer
                ),
                "kernel_regularizer": keras.regularizers.serialize(
                    self.kernel_regularizer
                ),
                "bias_regularizer": keras.regularizers.serialize(
                    self.bias_regularizer
                ),
                "kernel_constraint": keras.constraints.serialize(
                    self.kernel_constraint
                ),
                "bias_constraint": keras.constraints.serialize(
                    self.bias_constraint
                ),
            }
        )
        return config

    def weight_specs(self, input_shape):
        width = input_shape[-1]
        if width != self.units:
            raise ValueError(
                f"{type(self).__name__} '{self.name}' has units={self.units} "
                f"but its input has {width} features on the last axis. A "
                "residual block keeps the width: put a Dense(units) layer "
                "before it, or set units to the input width."
            )
        layers = [
            (self.units, self.hidden_units if self.double_layer else self.units)
        ]
        if self.double_layer:
            layers.append((self.hidden_units, self.units))
        specs = []
        for index, (fan_in, fan_out) in enumerate(layers, start=1):
            suffix = str(index) if self.double_layer else ""
            specs.append(
                WeightSpec(
                    "kernel" + suffix,
                    (fan_in, fan_out),
                    _fresh_if_unseeded(self.kernel_initializer),
                    self.kernel_regularizer,
                    self.kernel_constraint,
                )
            )
            if self.use_bias:
                specs.append(
                    WeightSpec(
                        "bias" + suffix,
                        (fan_out,),
                        self.bias_initializer,
                        self.bias_regularizer,
                        self.bias_constraint,
                    )
                )
        return specs

    def residual(self, inputs, weights, training=None):
        if self.double_layer:
            hidden = self._affine(inputs, weights, "1")
            return self._affine(self.activation(hidden), weights, "2")
        return self.activation(self._affine(inputs, weights, ""))

    def _affine(self, inputs, weights, suffix):
        outputs = ops.matmul(inputs, weights["kernel" + suffix])
        if self.use_bias:
            outputs = outputs + weights["bias" + suffix]
        return outputs

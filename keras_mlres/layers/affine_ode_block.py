"""Base of the blocks whose F is one or two affine layers with an activation."""

import keras
from keras import activations
from keras import initializers

from keras_mlres._checks import check_bool
from keras_mlres.layers.ode_block import ODEBlock
from keras_mlres.layers.ode_block import WeightSpec


def _fresh_if_unseeded(initializer):
    """A new instance of an unseeded initializer (so a new default seed)."""
    config = initializer.get_config()
    if "seed" in config and config["seed"] is None:
        return type(initializer).from_config(config)
    return initializer


class AffineODEBlock(ODEBlock):
    """Abstract block with `F(y) = act(L(y))` or `L2(act(L1(y)))`.

    `L` is an affine layer `y -> K(y) + b`: a matrix product for
    `ResidualODEBlock`, a convolution for `ConvResidualODEBlock`. The
    "double layer" variant has a hidden layer of `hidden_width` features.
    Weights are named `kernel`, `bias` (single layer) or `kernel1`, `bias1`,
    `kernel2`, `bias2` (double layer).

    Subclasses implement `_kernel_shapes(input_shape)` (one kernel shape per
    layer, after checking the input) and `_apply_kernel(inputs, kernel)`, and
    may post-process each layer's output with `_normalize` (for instance batch
    normalization, whose per-layer weights and state they add to the specs).

    Args:
        width: Number of features of the state y (last axis).
        activation: Activation of F.
        dt: Time step, a positive float.
        double_layer: Whether F has two layers.
        hidden_width: Features of the hidden layer of the double-layer
            variant. Defaults to `width`.
        use_bias: Whether the layers add a bias.
        kernel_initializer: Initializer of the kernels.
        bias_initializer: Initializer of the biases.
        kernel_regularizer: Optional regularizer of the kernels.
        bias_regularizer: Optional regularizer of the biases.
        kernel_constraint: Optional constraint of the kernels.
        bias_constraint: Optional constraint of the biases.
        **kwargs: Base layer keyword arguments (`name`, `dtype`, ...).
    """

    def __init__(
        self,
        width,
        activation,
        dt,
        double_layer,
        hidden_width,
        use_bias,
        kernel_initializer,
        bias_initializer,
        kernel_regularizer,
        bias_regularizer,
        kernel_constraint,
        bias_constraint,
        **kwargs,
    ):
        super().__init__(dt=dt, **kwargs)
        self.activation = activations.get(activation)
        self.double_layer = check_bool("double_layer", double_layer)
        self._hidden_width = int(hidden_width or width)
        self.use_bias = check_bool("use_bias", use_bias)
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
                "activation": activations.serialize(self.activation),
                "double_layer": self.double_layer,
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

    def _suffixes(self):
        """The weight-name suffix of each layer."""
        return ("1", "2") if self.double_layer else ("",)

    def _kernel_shapes(self, input_shape):
        raise NotImplementedError

    def _apply_kernel(self, inputs, kernel):
        raise NotImplementedError

    def _layer_specs(self, suffix, kernel_shape):
        """The weights of one layer beyond kernel and bias (none here)."""
        del suffix, kernel_shape
        return []

    def _normalize(self, outputs, weights, suffix, training):
        """Post-processes a layer's output; returns it and the new state."""
        del weights, suffix, training
        return outputs, {}

    def weight_specs(self, input_shape):
        specs = []
        for suffix, shape in zip(
            self._suffixes(), self._kernel_shapes(input_shape)
        ):
            specs.append(
                WeightSpec(
                    "kernel" + suffix,
                    tuple(shape),
                    _fresh_if_unseeded(self.kernel_initializer),
                    self.kernel_regularizer,
                    self.kernel_constraint,
                )
            )
            if self.use_bias:
                specs.append(
                    WeightSpec(
                        "bias" + suffix,
                        (shape[-1],),
                        self.bias_initializer,
                        self.bias_regularizer,
                        self.bias_constraint,
                    )
                )
            specs += self._layer_specs(suffix, shape)
        return specs

    def residual_and_state(self, inputs, weights, training=None):
        outputs, state = inputs, {}
        for index, suffix in enumerate(self._suffixes()):
            outputs = self._apply_kernel(outputs, weights["kernel" + suffix])
            if self.use_bias:
                outputs = outputs + weights["bias" + suffix]
            outputs, layer_state = self._normalize(
                outputs, weights, suffix, training
            )
            state.update(layer_state)
            if index == 0:
                outputs = self.activation(outputs)
        return outputs, state

    def residual(self, inputs, weights, training=None):
        return self.residual_and_state(inputs, weights, training=training)[0]

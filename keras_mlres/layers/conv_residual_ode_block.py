"""Convolutional residual ODE block: `y + dt * act(BN(conv(y)))`."""

import keras
import tensorflow as tf
from keras import ops
from tensorflow.python.ops import control_flow_util

from keras_mlres._checks import check_choice
from keras_mlres._checks import check_count
from keras_mlres._checks import is_integer
from keras_mlres.layers.affine_ode_block import AffineODEBlock
from keras_mlres.layers.ode_block import WeightSpec

NORMALIZATIONS = (None, "batch")


def _kernel_size_pair(kernel_size):
    """Returns `kernel_size` as a pair of odd positive ints, or raises."""
    pair = (kernel_size, kernel_size) if is_integer(kernel_size) else (
        tuple(kernel_size) if isinstance(kernel_size, (list, tuple)) else ()
    )
    if len(pair) != 2 or not all(
        is_integer(k) and k > 0 and k % 2 for k in pair
    ):
        raise ValueError(
            "`kernel_size` must be an odd positive integer or a pair of them "
            "(a residual convolution keeps the image size with 'same' "
            "padding, which is symmetric only for odd sizes), e.g. 3 or "
            f"(3, 5). Received: kernel_size={kernel_size!r}"
        )
    return tuple(int(k) for k in pair)


def _in_xla_context():
    """Whether the op being built will be compiled by XLA (jit_compile)."""
    # TensorFlow's own ops use this (internal) check to pick XLA-friendly
    # implementations; there is no public equivalent.
    return control_flow_util.GraphOrParentsInXlaContext(
        tf.compat.v1.get_default_graph()
    )


def _shifted_matmul_conv(inputs, kernel):
    """A stride-1 'same' convolution as one matmul of shifted copies (im2col).

    Inside an XLA-compiled `tf.while_loop` (an `ODEStack`), XLA's CPU
    backward convolutions were about 5x slower than this formulation, whose
    gradients are matmuls and slices (measured: 8-filter 28x28 images, batch
    100, K=4). Outside XLA, TensorFlow's convolution is faster.
    """
    kernel_height, kernel_width, in_channels, out_channels = kernel.shape
    height, width = inputs.shape[1], inputs.shape[2]
    padded = ops.pad(
        inputs,
        [
            [0, 0],
            [kernel_height // 2, kernel_height // 2],
            [kernel_width // 2, kernel_width // 2],
            [0, 0],
        ],
    )
    # Channel order (i, j, c) matches the kernel's row-major (i, j, c) axes.
    patches = ops.concatenate(
        [
            padded[:, i : i + height, j : j + width, :]
            for i in range(kernel_height)
            for j in range(kernel_width)
        ],
        axis=-1,
    )
    patch_size = kernel_height * kernel_width * in_channels
    # A 2-D matmul: XLA turns a broadcast 4-D one into a slower batched one.
    outputs = ops.matmul(
        ops.reshape(patches, (-1, patch_size)),
        ops.reshape(kernel, (patch_size, out_channels)),
    )
    return ops.reshape(outputs, (-1, height, width, out_channels))


@keras.saving.register_keras_serializable(package="keras_mlres")
class ConvResidualODEBlock(AffineODEBlock):
    """Convolutional residual block, one forward-Euler step of `y' = F(y)`.

    Computes `y + dt * F(y)` for images `y` of shape
    `(batch, height, width, filters)` (channels last) with

    - `F(y) = act(N(conv(y)))` (the default, "single layer"), or
    - `F(y) = N2(conv2(act(N1(conv1(y)))))` with `double_layer=True`,

    where each convolution has stride 1 and "same" padding (so F keeps the
    shape of y) and `N` is batch normalization (`normalization="batch"`) or
    a bias (`normalization=None`).

    Batch normalization computes, per channel, `gamma (x - mean) /
    sqrt(var + epsilon) + beta` with the batch's mean and (biased) variance in
    training mode, and with the moving statistics in inference mode, exactly
    as `keras.layers.BatchNormalization`; a training call updates the moving
    statistics by `moving = momentum * moving + (1 - momentum) * batch`. In an
    `ODEStack` every block (and every level of a hierarchy) has its own
    moving statistics, stacked as non-trainable `(K, filters)` variables.

    Use the block on its own as a layer, or as the template of an `ODEStack`.

    Args:
        filters: Channels of the state y (last axis of the input).
        kernel_size: Odd positive int, or a pair of them, the size of the
            convolution windows. Defaults to 3.
        activation: Activation of F. Defaults to `"tanh"`, under which
            the coarse networks of a hierarchy stay close to the fine one
            (a single-layer F with `"relu"` is never negative, and trained
            coarse networks then lose their accuracy when prolongated:
            README.md, "Design decisions").
        dt: Time step, a positive float. Defaults to 1.0.
        normalization: `None` (the default) or `"batch"`.
        double_layer: If True, F is the two-layer map above.
        hidden_filters: Channels of the hidden layer of the double-layer
            variant. Defaults to `filters`.
        use_bias: Whether the convolutions add a bias. Defaults to True
            without normalization and to False with it (batch normalization's
            `beta` is the shift then).
        momentum: Momentum of the moving statistics of batch normalization.
        epsilon: Added to the variance by batch normalization.
        kernel_initializer: Initializer of the convolution kernels.
        bias_initializer: Initializer of the biases.
        kernel_regularizer: Optional regularizer of the kernels.
        bias_regularizer: Optional regularizer of the biases.
        kernel_constraint: Optional constraint of the kernels.
        bias_constraint: Optional constraint of the biases.
        **kwargs: Base layer keyword arguments (`name`, `dtype`, ...).

    Example:

    >>> block = ConvResidualODEBlock(8, 3, normalization="batch", dt=0.1)
    >>> block(keras.ops.ones((2, 16, 16, 8))).shape
    TensorShape([2, 16, 16, 8])
    >>> stage = ODEStack(block, num_blocks=16, time_horizon=2.0)
    """

    def __init__(
        self,
        filters,
        kernel_size=3,
        activation="tanh",
        dt=1.0,
        normalization=None,
        double_layer=False,
        hidden_filters=None,
        use_bias=None,
        momentum=0.99,
        epsilon=1e-3,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        **kwargs,
    ):
        if not is_integer(filters) or filters < 1:
            raise ValueError(
                "`filters` must be a positive integer. "
                f"Received: filters={filters!r}"
            )
        filters = int(filters)
        if hidden_filters is not None:
            hidden_filters = check_count(
                "hidden_filters", hidden_filters, minimum=1
            )
        check_choice("normalization", normalization, NORMALIZATIONS)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(
                f"`momentum` must be in [0, 1). Received: momentum={momentum}"
            )
        if not epsilon > 0.0:
            raise ValueError(
                f"`epsilon` must be positive. Received: epsilon={epsilon}"
            )
        super().__init__(
            filters,
            activation,
            dt,
            double_layer,
            hidden_filters,
            normalization is None if use_bias is None else use_bias,
            kernel_initializer,
            bias_initializer,
            kernel_regularizer,
            bias_regularizer,
            kernel_constraint,
            bias_constraint,
            **kwargs,
        )
        self.filters = filters
        self.kernel_size = _kernel_size_pair(kernel_size)
        self.hidden_filters = self._hidden_width
        self.normalization = normalization
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "kernel_size": self.kernel_size,
                "normalization": self.normalization,
                "hidden_filters": self.hidden_filters,
                "momentum": self.momentum,
                "epsilon": self.epsilon,
            }
        )
        return config

    def _kernel_shapes(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(
                f"{type(self).__name__} '{self.name}' needs images of shape "
                "(batch, height, width, channels), a rank-4 input; received "
                f"shape {tuple(input_shape)}. Reshape vector data to images, "
                "or use ResidualODEBlock for vectors."
            )
        channels = input_shape[-1]
        if channels != self.filters:
            raise ValueError(
                f"{type(self).__name__} '{self.name}' has filters="
                f"{self.filters} but its input has {channels} channels. A "
                "residual block keeps the channels: put a Conv2D(filters) "
                "layer before it, or set filters to the input's channels."
            )
        widths = (
            [self.filters, self.hidden_filters, self.filters]
            if self.double_layer
            else [self.filters, self.filters]
        )
        return [
            self.kernel_size + (fan_in, fan_out)
            for fan_in, fan_out in zip(widths[:-1], widths[1:])
        ]

    def _apply_kernel(self, inputs, kernel):
        if _in_xla_context():
            return _shifted_matmul_conv(inputs, kernel)
        return ops.conv(inputs, kernel, strides=1, padding="same")

    def _layer_specs(self, suffix, kernel_shape):
        if self.normalization is None:
            return []
        channels = (kernel_shape[-1],)
        return [
            WeightSpec("gamma" + suffix, channels, "ones"),
            WeightSpec("beta" + suffix, channels, "zeros"),
        ]

    def state_specs(self, input_shape):
        if self.normalization is None:
            return []
        specs = []
        for suffix, shape in zip(
            self._suffixes(), self._kernel_shapes(input_shape)
        ):
            channels = (shape[-1],)
            specs += [
                WeightSpec("moving_mean" + suffix, channels, "zeros"),
                WeightSpec("moving_variance" + suffix, channels, "ones"),
            ]
        return specs

    def _normalize(self, outputs, weights, suffix, training):
        if self.normalization is None:
            return outputs, {}
        mean_name = "moving_mean" + suffix
        variance_name = "moving_variance" + suffix
        if training:
            mean, variance = ops.moments(outputs, axes=[0, 1, 2])
            state = {
                name: weights[name] * self.momentum
                + batch * (1.0 - self.momentum)
                for name, batch in ((mean_name, mean), (variance_name, variance))
            }
        else:
            mean, variance = weights[mean_name], weights[variance_name]
            state = {}
        outputs = ops.batch_normalization(
            outputs,
            mean,
            variance,
            axis=-1,
            offset=weights["beta" + suffix],
            scale=weights["gamma" + suffix],
            epsilon=self.epsilon,
        )
        return outputs, state

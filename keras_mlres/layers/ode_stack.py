"""A residual stage: K forward-Euler blocks with weights stacked over time."""

import keras
import tensorflow as tf
from keras import ops

from keras_mlres._checks import check_coarsening_factor
from keras_mlres._checks import check_float
from keras_mlres._checks import is_integer
from keras_mlres.layers.ode_block import ODEBlock


class _PerBlockInitializer:
    """Initializes a `(K, ...)` stack with K independent per-block draws.

    Calling the block's initializer on the full stacked shape would compute
    fans from the block axis too (Glorot would see K times the fan-in), so each
    block is drawn on its own shape. An initializer with an integer seed would
    draw K identical blocks; block k gets seed + k instead.
    """

    def __init__(self, initializer):
        self.initializer = keras.initializers.get(initializer)

    def _block_initializers(self, num_blocks):
        config = self.initializer.get_config()
        seed = config.get("seed")
        if "seed" in config and seed is None:
            # Keras 3 gives an unseeded initializer a fixed int seed at
            # construction: calling it K times would draw K identical blocks.
            seed = getattr(self.initializer, "seed", None)
        if isinstance(seed, int):
            return [
                type(self.initializer).from_config({**config, "seed": seed + k})
                for k in range(num_blocks)
            ]
        return [self.initializer] * num_blocks

    def __call__(self, shape, dtype=None):
        num_blocks, block_shape = shape[0], tuple(shape[1:])
        return ops.stack(
            [
                initializer(block_shape, dtype=dtype)
                for initializer in self._block_initializers(num_blocks)
            ]
        )


class _PerBlockRegularizer:
    """Sums a block regularizer over the blocks of a stacked weight."""

    def __init__(self, regularizer):
        self.regularizer = regularizer

    def __call__(self, stacked):
        return ops.sum(ops.vectorized_map(self.regularizer, stacked))


class _PerBlockConstraint:
    """Applies a block constraint to each block of a stacked weight."""

    def __init__(self, constraint):
        self.constraint = constraint

    def __call__(self, stacked):
        return ops.vectorized_map(self.constraint, stacked)


def _per_block(wrapper, function):
    return None if function is None else wrapper(function)


@keras.saving.register_keras_serializable(package="keras_mlres")
class ODEStack(keras.layers.Layer):
    """A residual stage of `num_blocks` ODE blocks over the time `[0, T]`.

    Maps `y_0` to `y_K` by `y_{k+1} = y_k + dt * F(y_k; theta_k)` with
    `dt = time_horizon / num_blocks`, where F is the right-hand side of the
    template `block`. The stage holds each weight of the block once, stacked
    along a leading block axis (shape `(num_blocks,) + block_shape`), and steps
    through the blocks with one `tf.while_loop` whose trip count is fixed
    (`maximum_iterations`, so XLA can differentiate it). Tracing and XLA
    compile time therefore do not grow with `num_blocks`, and restriction and
    prolongation between depths are single tensor ops on the block axis.

    A block with per-block state (e.g. `ConvResidualODEBlock` with batch
    normalization) gets that state stacked too, as non-trainable `(K, ...)`
    variables in `stacked_state` (the weights are in `stacked_weights`). In
    training mode the loop collects each block's new state and assigns it
    after the loop; in inference mode each block reads its own state. A coarse
    stage made by `coarsened` has its own state.

    Args:
        block: An `ODEBlock` (e.g. `ResidualODEBlock`) used as the template of
            every block; its weights are not used, only its configuration. Its
            `dt` is replaced by the stage's.
        num_blocks: K, the number of blocks (time steps), a positive integer.
        time_horizon: T, the length of the time interval. Defaults to 1.0.
        smoothness_penalty: If positive, adds the time-continuity regularizer
            `smoothness_penalty / dt * sum_k ||theta_{k+1} - theta_k||^2`
            (summed over the block's weights) to the layer's losses, which
            keeps weights smooth in time. Defaults to 0.
        **kwargs: Base layer keyword arguments (`name`, `dtype`, ...).

    Example:

    >>> stage = ODEStack(ResidualODEBlock(16), num_blocks=64, time_horizon=5.0)
    >>> stage.dt
    0.078125
    >>> model = keras.Sequential([
    ...     keras.Input((2,)),
    ...     keras.layers.Dense(16, activation="tanh"),
    ...     stage,
    ...     keras.layers.Dense(3),
    ... ])
    """

    def __init__(
        self,
        block,
        num_blocks,
        time_horizon=1.0,
        smoothness_penalty=0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if isinstance(block, dict):
            block = keras.saving.deserialize_keras_object(block)
        if not isinstance(block, ODEBlock):
            raise ValueError(
                "`block` must be an ODEBlock such as ResidualODEBlock. "
                f"Received: block={block!r}"
            )
        if not is_integer(num_blocks) or num_blocks < 1:
            raise ValueError(
                "`num_blocks` must be a positive integer. "
                f"Received: num_blocks={num_blocks!r}"
            )
        self.num_blocks = int(num_blocks)
        self.time_horizon = check_float("time_horizon", time_horizon)
        self.smoothness_penalty = check_float(
            "smoothness_penalty", smoothness_penalty, allow_zero=True
        )
        self.block = block.with_dt(self.dt)

    @property
    def dt(self):
        """The time step `time_horizon / num_blocks` of every block."""
        return self.time_horizon / self.num_blocks

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "block": keras.saving.serialize_keras_object(self.block),
                "num_blocks": self.num_blocks,
                "time_horizon": self.time_horizon,
                "smoothness_penalty": self.smoothness_penalty,
            }
        )
        return config

    def build(self, input_shape):
        self.stacked_weights = self._add_stacked(
            self.block.weight_specs(input_shape), trainable=True
        )
        self.stacked_state = self._add_stacked(
            self.block.state_specs(input_shape), trainable=False
        )

    def _add_stacked(self, specs, trainable):
        return {
            spec.name: self.add_weight(
                name=spec.name,
                shape=(self.num_blocks,) + tuple(spec.shape),
                initializer=_PerBlockInitializer(spec.initializer),
                regularizer=_per_block(_PerBlockRegularizer, spec.regularizer),
                constraint=_per_block(_PerBlockConstraint, spec.constraint),
                trainable=trainable,
            )
            for spec in specs
        }

    def coarsened(self, factor=2, name=None):
        """Returns an unbuilt stage of `num_blocks / factor` blocks on [0, T].

        The coarse stage has the same template block and time horizon, so its
        time step is `factor` times larger.

        Args:
            factor: Coarsening factor c; must divide `num_blocks`.
            name: Name of the coarse stage. Defaults to
                `"{name}_coarse{factor}"`.

        Returns:
            A new `ODEStack`.

        Raises:
            ValueError: If `factor` does not divide `num_blocks`.
        """
        factor = check_coarsening_factor(factor)
        if self.num_blocks % factor:
            raise ValueError(
                f"ODEStack '{self.name}' has num_blocks={self.num_blocks}, "
                f"which the coarsening factor {factor} does not divide. Use a "
                f"num_blocks that is a multiple of {factor}, or fewer levels."
            )
        config = self.get_config()
        config.update(
            num_blocks=self.num_blocks // factor,
            name=name or f"{self.name}_coarse{factor}",
        )
        return type(self).from_config(config)

    def call(self, inputs, training=None):
        variables = {**self.stacked_weights, **self.stacked_state}
        names = list(variables)
        # TensorArray reads differentiate into a stacked gradient; indexing
        # the variable per step would build a dense (K, ...) gradient per step
        # without XLA.
        arrays = [
            tf.TensorArray(
                self.compute_dtype,
                size=self.num_blocks,
                element_shape=variables[name].shape[1:],
            ).unstack(ops.cast(variables[name], self.compute_dtype))
            for name in names
        ]
        if self.stacked_state and not self.trainable:
            # As keras.layers.BatchNormalization: a frozen stage runs in
            # inference mode on its stored state.
            training = False
        update_state = bool(training and self.stacked_state)
        state_names = list(self.stacked_state) if update_state else []
        new_state = [
            tf.TensorArray(
                self.stacked_state[name].dtype,
                size=self.num_blocks,
                element_shape=self.stacked_state[name].shape[1:],
            )
            for name in state_names
        ]
        dt = ops.cast(self.dt, inputs.dtype)

        def euler_step(k, state, new_state):
            weights = {name: array.read(k) for name, array in zip(names, arrays)}
            if not update_state:
                step = self.block.residual(state, weights, training=training)
                return k + 1, state + dt * step, new_state
            step, block_state = self.block.residual_and_state(
                state, weights, training=training
            )
            new_state = [
                array.write(
                    k,
                    tf.stop_gradient(
                        ops.cast(block_state[name], array.dtype)
                    ),
                )
                for name, array in zip(state_names, new_state)
            ]
            return k + 1, state + dt * step, new_state

        _, outputs, new_state = tf.while_loop(
            lambda k, *_: k < self.num_blocks,
            euler_step,
            (tf.constant(0), inputs, new_state),
            maximum_iterations=self.num_blocks,
        )
        # The moving statistics are assigned once, after all K blocks, from
        # values the pure residuals returned (no variable writes in the loop).
        for name, array in zip(state_names, new_state):
            self.stacked_state[name].assign(array.stack())
        if self.smoothness_penalty:
            self.add_loss(self.smoothness_loss())
        return outputs

    def smoothness_loss(self):
        """Returns `penalty / dt * sum_k ||theta_{k+1} - theta_k||^2`."""
        total = 0.0
        for weight in self.stacked_weights.values():
            total += ops.sum(ops.square(weight[1:] - weight[:-1]))
        return self.smoothness_penalty / self.dt * total

    def compute_output_shape(self, input_shape):
        return input_shape

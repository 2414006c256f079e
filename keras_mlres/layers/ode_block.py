"""Base class of residual ODE blocks: one forward-Euler step per block."""

import dataclasses
from typing import Any, Optional, Tuple

import keras
from keras import ops

from keras_mlres._checks import check_float


@dataclasses.dataclass(frozen=True)
class WeightSpec:
    """Describes one weight tensor of an ODE block.

    An `ODEBlock` lists its weights as `WeightSpec`s instead of creating them
    directly, so that the same description serves a standalone block (one
    variable per spec) and an `ODEStack` (one variable of shape
    `(num_blocks,) + shape` per spec).

    Args:
        name: Name of the weight, also the key under which `ODEBlock.residual`
            receives it.
        shape: Shape of the weight for a single block.
        initializer: A Keras initializer (object, name or config).
        regularizer: Optional Keras regularizer.
        constraint: Optional Keras constraint.
    """

    name: str
    shape: Tuple[int, ...]
    initializer: Any
    regularizer: Any = None
    constraint: Any = None


class ODEBlock(keras.layers.Layer):
    """Abstract forward-Euler residual block `y + dt * F(y; theta)`.

    Subclasses define the right-hand side F through two methods:

    - `weight_specs(input_shape)`: the weights theta of one block, as a list
      of `WeightSpec`.
    - `residual(inputs, weights, training)`: F evaluated with the given
      weights (a dict from spec name to tensor). It must be a pure function of
      its arguments, because `ODEStack` calls it once per time step with the
      slices of its stacked weights.

    A block with non-trainable per-block state (e.g. the moving statistics of
    batch normalization) also defines:

    - `state_specs(input_shape)`: the state variables of one block, as a list
      of `WeightSpec` (their values reach `residual` in `weights` too).
    - `residual_and_state(inputs, weights, training)`: F and the new values
      of the state (a dict from state name to tensor), again pure. The caller
      (the block itself, or `ODEStack` after its loop) assigns the new state
      in training mode.

    The block itself adds `dt * F(y)` to its input. `dt` is the time step of
    the forward-Euler discretization; inside an `ODEStack` it is
    `time_horizon / num_blocks`.

    Args:
        dt: Time step of the block, a positive float.
        **kwargs: Base layer keyword arguments (`name`, `dtype`, ...).
    """

    def __init__(self, dt=1.0, **kwargs):
        super().__init__(**kwargs)
        self.dt = check_float(
            "dt", dt,
            hint="Pass the time step of the block, e.g. time_horizon / "
            "num_blocks.",
        )

    def get_config(self):
        config = super().get_config()
        config.update({"dt": self.dt})
        return config

    def weight_specs(self, input_shape):
        """Lists the weights of one block.

        Args:
            input_shape: Shape tuple of the block's input, batch axis first.

        Returns:
            A list of `WeightSpec`.
        """
        raise NotImplementedError(
            f"{type(self).__name__} must implement `weight_specs`."
        )

    def residual(self, inputs, weights, training=None):
        """Evaluates the right-hand side F(y; theta).

        Args:
            inputs: The state y, a tensor.
            weights: Dict from `WeightSpec.name` to the weight tensor.
            training: Python bool or None, as in `Layer.call`.

        Returns:
            A tensor of the same shape as `inputs`.
        """
        raise NotImplementedError(
            f"{type(self).__name__} must implement `residual`."
        )

    def state_specs(self, input_shape):
        """Lists the non-trainable state variables of one block.

        Args:
            input_shape: Shape tuple of the block's input, batch axis first.

        Returns:
            A list of `WeightSpec` (empty for a stateless block, the default;
            regularizers and constraints are not used).
        """
        del input_shape  # Stateless by default.
        return []

    def residual_and_state(self, inputs, weights, training=None):
        """Evaluates F and the block's new state.

        Args:
            inputs: The state y of the ODE, a tensor.
            weights: Dict from `WeightSpec.name` to tensor, for the weights
                and the state variables.
            training: Python bool or None, as in `Layer.call`.

        Returns:
            A tuple `(F(y), new_state)`, `new_state` a dict from each state
            name to its updated value. The default (a stateless block)
            returns `residual` and an empty dict.
        """
        return self.residual(inputs, weights, training=training), {}

    def build(self, input_shape):
        weight_specs = self.weight_specs(input_shape)
        state_specs = self.state_specs(input_shape)
        self._weight_names = tuple(spec.name for spec in weight_specs)
        self._state_names = tuple(spec.name for spec in state_specs)
        for spec, trainable in [(s, True) for s in weight_specs] + [
            (s, False) for s in state_specs
        ]:
            variable = self.add_weight(
                name=spec.name,
                shape=spec.shape,
                initializer=spec.initializer,
                regularizer=spec.regularizer,
                constraint=spec.constraint,
                trainable=trainable,
            )
            setattr(self, spec.name, variable)

    def block_weights(self):
        """Returns this block's weights as the dict `residual` expects."""
        return {name: getattr(self, name) for name in self._weight_names}

    def block_state(self):
        """Returns this block's state variables by name (may be empty)."""
        return {name: getattr(self, name) for name in self._state_names}

    def call(self, inputs, training=None):
        variables = {**self.block_weights(), **self.block_state()}
        weights = {
            name: ops.cast(value, self.compute_dtype)
            for name, value in variables.items()
        }
        if self._state_names and not self.trainable:
            # As keras.layers.BatchNormalization: a frozen block runs in
            # inference mode on its stored state.
            training = False
        if training and self._state_names:
            step, new_state = self.residual_and_state(
                inputs, weights, training=training
            )
            for name, value in new_state.items():
                variable = getattr(self, name)
                variable.assign(ops.cast(value, variable.dtype))
        else:
            step = self.residual(inputs, weights, training=training)
        return inputs + ops.cast(self.dt, inputs.dtype) * step

    def compute_output_shape(self, input_shape):
        return input_shape

    def with_dt(self, dt, name: Optional[str] = None):
        """Returns an unbuilt copy of this block's configuration with a new dt.

        Args:
            dt: The new time step.
            name: Optional name of the copy (defaults to this block's name).

        Returns:
            A new, unbuilt block of the same class.
        """
        config = self.get_config()
        config["dt"] = dt
        if name is not None:
            config["name"] = name
        return type(self).from_config(config)

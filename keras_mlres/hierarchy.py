"""The hierarchy of networks over depth: one keras.Model per level."""

import keras
from keras.src.models.functional import Functional

from keras_mlres import transfer
from keras_mlres._checks import check_choice
from keras_mlres._checks import check_coarsening_factor
from keras_mlres._checks import check_count
from keras_mlres._checks import is_integer
from keras_mlres.layers.ode_stack import ODEStack


def _stages_of(model):
    return [layer for layer in model.layers if isinstance(layer, ODEStack)]


def _nested_stages(model):
    """Names the ODEStacks that sit inside a nested model (not supported)."""
    nested = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            nested += [
                f"'{inner.name}' in '{layer.name}'"
                for inner in layer._flatten_layers(include_self=False)
                if isinstance(inner, ODEStack)
            ]
    return nested


def read_values(variables):
    """Returns a snapshot of a list of variables, as tensors.

    On the TensorFlow backend `Variable.value` is the variable itself, which
    later reads see updated; a snapshot keeps the values of this moment.

    Args:
        variables: A list of Keras variables.

    Returns:
        A list of tensors holding their current values.
    """
    return [keras.ops.copy(variable) for variable in variables]


def _max_levels(num_blocks, factor):
    levels = 1
    while num_blocks % factor == 0:
        num_blocks //= factor
        levels += 1
    return levels


class Hierarchy:
    """The levels of a residual network, from the fine model to coarser ones.

    Level 0 is the given (fine) model. Level l replaces every `ODEStack` of K
    blocks by one of `K / c^l` blocks on the same time horizon (so its `dt` is
    `c^l` times larger); every other layer (the opening layer, downsampling,
    the classifier) is the very same object, with the same variables, on
    every level. Each stage coarsens on its own.

    The transfer operators act on the list of a level's trainable variables,
    position by position: stage weights are restricted and prolongated along
    their block axis (see `keras_mlres.transfer`), shared weights are passed
    through unchanged. Creating the hierarchy restricts the fine weights down
    to every coarse level.

    Non-trainable per-block stage state (the moving statistics of
    batch-normalized blocks) belongs to each level: creating the hierarchy
    restricts it once, after which every level updates its own in its
    training-mode forward passes; `prolongate` (nested iteration) carries it
    up to the finer level with the weights. `restrict` and the cycle's
    transfers leave it alone.

    A frozen layer (`trainable=False`) is left alone on every level: a shared
    layer is frozen on every level at once, and a frozen stage's coarse
    copies are frozen too (see `follow_fine_trainable`) and hold the
    restriction of its weights and state, which no transfer changes.

    Args:
        model: A built Sequential or functional `keras.Model` containing one
            or more `ODEStack` layers at its top level.
        num_levels: Number of levels L >= 1 (level 0 is `model` itself).
        coarsening_factor: c, the factor by which each level divides the
            number of blocks. Defaults to 2.
        interpolation: Prolongation P: `"constant"` or `"linear"` in time.
        restriction: Weight restriction R: `"average"`, `"injection"` or
            `"full_weighting"`. Gradients are always restricted by `P^T`.

    Raises:
        ValueError: If the hierarchy cannot be built (no `ODEStack`, a stage
            whose `num_blocks` is not divisible by `c^(L-1)`, `num_levels < 1`,
            an unbuilt or subclassed model, an unknown operator name).

    Example:

    >>> hierarchy = Hierarchy(fine, num_levels=3)    # K = 64, 32, 16
    >>> coarse = hierarchy.level(2)                  # a keras.Model
    >>> hierarchy.restrict(0)                        # level 1 <- R(level 0)
    """

    def __init__(
        self,
        model,
        num_levels,
        coarsening_factor=2,
        interpolation="constant",
        restriction="average",
    ):
        self._check_arguments(
            model, num_levels, coarsening_factor, interpolation, restriction
        )
        # Plain ints (numpy's are accepted) for configs and JSON.
        self.num_levels = int(num_levels)
        self.coarsening_factor = int(coarsening_factor)
        self.interpolation = interpolation
        self.restriction = restriction
        self._models = [model]
        self._stages = [_stages_of(model)]
        for level in range(1, num_levels):
            coarse = self._coarsen(model, level)
            self._models.append(coarse)
            self._stages.append(_stages_of(coarse))
        self._stage_mask = self._find_stage_variables()
        self.restrict_from_fine()

    @staticmethod
    def _check_arguments(
        model, num_levels, coarsening_factor, interpolation, restriction
    ):
        check_count(
            "num_levels", num_levels, minimum=1, hint="1 means single-level"
        )
        check_coarsening_factor(coarsening_factor)
        check_choice("interpolation", interpolation, transfer.INTERPOLATIONS)
        check_choice("restriction", restriction, transfer.RESTRICTIONS)
        if not isinstance(model, (keras.Sequential, Functional)):
            raise ValueError(
                "Hierarchy needs a Sequential or functional keras.Model; "
                f"received {type(model).__name__}. Build the network with "
                "keras.Sequential or keras.Model(inputs, outputs)."
            )
        if not model.built:
            raise ValueError(
                f"Model '{model.name}' is not built. Start it with "
                "keras.Input(shape) or call it on a batch before building the "
                "hierarchy."
            )
        nested = _nested_stages(model)
        if nested:
            raise ValueError(
                "Hierarchy coarsens ODEStack layers at the top level of "
                "the model, but the ODEStacks " + ", ".join(nested) + " sit "
                "inside nested models. Flatten the network into one "
                "Sequential or functional model."
            )
        stages = _stages_of(model)
        if not stages:
            raise ValueError(
                f"Model '{model.name}' has no ODEStack layer, so there is no "
                "depth to coarsen. Put the residual blocks in "
                "keras_mlres.layers.ODEStack(block, num_blocks, time_horizon)."
            )
        divisor = coarsening_factor ** (num_levels - 1)
        for stage in stages:
            if stage.num_blocks % divisor:
                raise ValueError(
                    f"Cannot build {num_levels} levels with coarsening factor "
                    f"{coarsening_factor}: ODEStack '{stage.name}' has "
                    f"num_blocks={stage.num_blocks}, which is not divisible "
                    f"by {coarsening_factor}^{num_levels - 1}={divisor}. Use "
                    f"num_levels <= "
                    f"{_max_levels(stage.num_blocks, coarsening_factor)} or "
                    f"a num_blocks that is a multiple of {divisor}."
                )

    def _coarsen(self, model, level):
        factor = self.coarsening_factor**level

        def share_or_coarsen(layer):
            if isinstance(layer, ODEStack):
                return layer.coarsened(factor, name=f"{layer.name}_level{level}")
            return layer

        coarse = keras.models.clone_model(model, clone_function=share_or_coarsen)
        coarse.name = f"{model.name}_level{level}"
        return coarse

    def _find_stage_variables(self):
        """Marks which positions of `trainable_variables` are stage weights."""
        fine_stage_ids = {
            id(variable)
            for stage in self._stages[0]
            for variable in stage.trainable_variables
        }
        mask = [id(v) in fine_stage_ids for v in self._models[0].trainable_variables]
        for level in range(1, self.num_levels):
            variables = self.trainable_variables(level)
            fine_variables = self.trainable_variables(0)
            assert len(variables) == len(fine_variables)
            for is_stage, coarse, fine in zip(mask, variables, fine_variables):
                assert (coarse is fine) != is_stage, (coarse.path, fine.path)
        return mask

    def follow_fine_trainable(self):
        """Makes each coarse stage trainable exactly when its fine stage is.

        Setting `trainable` on a shared layer of the fine network sets it on
        every level; a stage has a layer of its own on each level, whose flag
        this copies from the finer level's. A coarse stage frozen here gets
        the restriction of the finer stage's weights and state, which it
        then keeps. The stage positions of the trainable variables are found
        again. `MultilevelModel.compile` calls it: as in Keras, a change of
        `trainable` takes effect at the next `compile`.
        """
        for level in range(1, self.num_levels):
            for finer, coarse in zip(
                self._stages[level - 1], self._stages[level]
            ):
                if coarse.trainable != finer.trainable:
                    coarse.trainable = finer.trainable
                    if not coarse.trainable:
                        self._restrict_stage(finer, coarse)
        self._stage_mask = self._find_stage_variables()

    def level(self, index):
        """Returns the `keras.Model` of level `index` (0 is the finest)."""
        if not is_integer(index):
            raise ValueError(
                f"The level must be an integer from 0 to "
                f"{self.num_levels - 1}. Received: level={index!r}"
            )
        if not 0 <= index < self.num_levels:
            raise ValueError(
                f"Level {index} does not exist: the hierarchy has levels 0 to "
                f"{self.num_levels - 1}."
            )
        return self._models[index]

    @property
    def models(self):
        """The level models, finest first."""
        return list(self._models)

    def stages(self, level):
        """Returns the `ODEStack` layers of a level, in model order."""
        return list(self._stages[level])

    def num_blocks(self, level):
        """Returns the number of blocks of each stage on a level."""
        return [stage.num_blocks for stage in self._stages[level]]

    def trainable_variables(self, level):
        """Returns a level's trainable variables.

        Positions correspond across levels: position i is either the same
        shared variable on every level or the same stage weight at every depth.
        """
        return self.level(level).trainable_variables

    @property
    def stage_mask(self):
        """For each trainable-variable position, whether it is a stage weight."""
        return list(self._stage_mask)

    def _map_stage_positions(self, function, values):
        return [
            function(value) if is_stage else value
            for is_stage, value in zip(self._stage_mask, values)
        ]

    def restrict_weights(self, weights):
        """Restricts a level's weights R x (stage weights only), as tensors.

        Args:
            weights: Values of one level's trainable variables, in
                `trainable_variables` order.

        Returns:
            The values for the next coarser level.
        """
        return self._map_stage_positions(
            lambda w: transfer.restrict(
                w, self.coarsening_factor, self.restriction
            ),
            weights,
        )

    def restrict_gradients(self, gradients):
        """Restricts a level's gradients by `R_g = P^T` (stage weights only).

        Args:
            gradients: Gradients with respect to one level's trainable
                variables, in `trainable_variables` order.

        Returns:
            The restricted gradients for the next coarser level.
        """
        return self._map_stage_positions(
            lambda g: transfer.restrict_gradient(
                g, self.coarsening_factor, self.interpolation
            ),
            gradients,
        )

    def prolongate_weights(self, weights):
        """Prolongates a level's weights (or a correction) by P, as tensors.

        Args:
            weights: Values of one level's trainable variables (or of a
                difference of them), in `trainable_variables` order.

        Returns:
            The values for the next finer level.
        """
        return self._map_stage_positions(
            lambda w: transfer.prolongate(
                w, self.coarsening_factor, self.interpolation
            ),
            weights,
        )

    def restrict(self, level):
        """Assigns the restricted weights of `level` to level `level + 1`.

        Args:
            level: The finer of the two levels.

        Returns:
            The restricted values `R x_level` now held by level `level + 1`
            (shared variables included).
        """
        self._check_pair(level, level + 1)
        restricted = self.restrict_weights(
            read_values(self.trainable_variables(level))
        )
        _assign_stage_positions(
            self.trainable_variables(level + 1), restricted, self._stage_mask
        )
        return restricted

    def restrict_from_fine(self, coarsest=None):
        """Restricts weights and stage state from level 0 down, level by level.

        Args:
            coarsest: The last level to receive; defaults to the coarsest.
        """
        if coarsest is None:
            coarsest = self.num_levels - 1
        for level in range(coarsest):
            self.restrict(level)
            self.restrict_state(level)

    def restrict_state(self, level):
        """Restricts the stage variables the cycle does not transfer.

        These are the non-trainable per-block state of every stage (e.g.
        batch-norm moving statistics, which each level then updates on its
        own) and the weights of frozen stages (which never change). Done once
        when the hierarchy is built, and when training resumes from the fine
        network (`MultilevelModel.resume_schedule`).

        Args:
            level: The finer of the two levels; level `level + 1` receives.
        """
        self._check_pair(level, level + 1)
        for fine, coarse in zip(self._stages[level], self._stages[level + 1]):
            self._restrict_stage(fine, coarse)

    def _restrict_stage(self, fine, coarse):
        """Restricts a stage's state, and its weights if it is frozen."""
        pairs = [
            (fine.stacked_state[key], coarse.stacked_state[key])
            for key in fine.stacked_state
        ]
        if not fine.trainable:
            pairs += [
                (fine.stacked_weights[key], coarse.stacked_weights[key])
                for key in fine.stacked_weights
            ]
        for fine_variable, coarse_variable in pairs:
            coarse_variable.assign(
                transfer.restrict(
                    fine_variable, self.coarsening_factor, self.restriction
                )
            )

    def prolongate(self, level):
        """Assigns the prolongated weights of `level` to level `level - 1`.

        This is the nested-iteration (full multigrid) step: a trained coarse
        network becomes the initial guess of the finer one. The stages'
        non-trainable per-block state (batch-norm moving statistics) is
        prolongated too, piecewise constant in time whatever `interpolation`
        is (linear extrapolation could make a variance negative), so that the
        finer network is ready for inference. A frozen stage keeps its own
        weights and state.

        Args:
            level: The coarser of the two levels.
        """
        self._check_pair(level - 1, level)
        prolongated = self.prolongate_weights(
            read_values(self.trainable_variables(level))
        )
        _assign_stage_positions(
            self.trainable_variables(level - 1), prolongated, self._stage_mask
        )
        for fine, coarse in zip(self._stages[level - 1], self._stages[level]):
            if not fine.trainable:
                continue
            for key, state in coarse.stacked_state.items():
                fine.stacked_state[key].assign(
                    transfer.prolongate(state, self.coarsening_factor)
                )

    def _check_pair(self, fine, coarse):
        if not (0 <= fine and coarse < self.num_levels):
            raise ValueError(
                f"No transfer between levels {fine} and {coarse}: the "
                f"hierarchy has levels 0 to {self.num_levels - 1}."
            )


def _assign_stage_positions(variables, values, mask):
    for is_stage, variable, value in zip(mask, variables, values):
        if is_stage:
            variable.assign(value)

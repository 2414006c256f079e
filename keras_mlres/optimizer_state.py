"""Optimizer state across levels: a finer level continues the coarser one.

When nested iteration moves finer, the finer level's optimizer starts from
zero moments by default; Adam's first steps then move every weight by about
the learning rate at once, and a conv network's training loss can jump.
With `MultilevelModel(nested_optimizer_state="prolongate")` the finer
optimizer takes the coarser one's state instead, transferred like the
weights.

A stage weight's gradient on the finer level is about `1/c` of the coarse
one on each of the `c` blocks the coarse block became (`R_g = P^T` sums
them), since every block's effect is scaled by its `dt`. A slot that is
homogeneous of degree d in the gradients (Adam's first moment: 1, its second
moment: 2) is therefore prolongated and scaled by `c**-d`: the finer
optimizer then holds exactly the state it would have after seeing the
gradients `P g / c` at every step the coarse one took. Shared weights (the
same variable on every level) keep their slots as they are.
"""

import keras

from keras_mlres import transfer

# Per optimizer class: its per-variable slot lists (attribute names) and the
# degree of each in the gradients, and its scalar state besides `iterations`.
# Subclasses (AdamW of Adam) inherit their base's entry.
_SLOTS = (
    (keras.optimizers.SGD, {"momentums": 1}, ()),
    (
        keras.optimizers.Adam,
        {"_momentums": 1, "_velocities": 2, "_velocity_hats": 2},
        (),
    ),
    (
        keras.optimizers.Nadam,
        {"_momentums": 1, "_velocities": 2},
        ("_u_product",),
    ),
    (keras.optimizers.Adamax, {"_m": 1, "_u": 1}, ()),
    (
        keras.optimizers.RMSprop,
        {"_velocities": 2, "_momentums": 0, "_average_gradients": 1},
        (),
    ),
    (keras.optimizers.Lion, {"_momentums": 1}, ()),
    (keras.optimizers.Lamb, {"_momentums": 1, "_velocities": 2}, ()),
)
# For messages; AdamW and other subclasses are included.
SUPPORTED_OPTIMIZERS = ", ".join(
    optimizer_type.__name__ for optimizer_type, _, _ in _SLOTS
)


def _unwrapped(optimizer):
    # A LossScaleOptimizer (mixed precision) keeps the state in its inner one.
    return getattr(optimizer, "inner_optimizer", optimizer)


def _slot_spec(optimizer):
    for optimizer_type, slots, scalars in _SLOTS:
        if isinstance(optimizer, optimizer_type):
            return slots, scalars
    return None


def can_prolongate(coarse_optimizer, fine_optimizer):
    """Whether `prolongate_optimizer_state` can transfer between the two.

    Args:
        coarse_optimizer: A Keras optimizer (or a `LossScaleOptimizer`
            around one).
        fine_optimizer: Another.

    Returns:
        True if both are of one type, and that type is one of
        `SUPPORTED_OPTIMIZERS` (SGD, Adam, Nadam, Adamax, RMSprop, Lion, Lamb)
        or a subclass of one (AdamW).
    """
    coarse_optimizer = _unwrapped(coarse_optimizer)
    fine_optimizer = _unwrapped(fine_optimizer)
    return type(coarse_optimizer) is type(fine_optimizer) and (
        _slot_spec(fine_optimizer) is not None
    )


def prolongate_optimizer_state(
    coarse_optimizer, fine_optimizer, stage_mask, factor=2
):
    """Assigns a coarse level's optimizer state to the finer level's.

    Both optimizers are of the same type and built on their level's
    trainable variables, whose positions correspond (see
    `Hierarchy.trainable_variables`). Stage slots are prolongated piecewise
    constant in time (which keeps second moments non-negative) and scaled by
    `factor**-degree`; the slots of shared variables, the iteration count
    and scalar state are copied.

    Args:
        coarse_optimizer: The built optimizer of the coarser level.
        fine_optimizer: The built optimizer of the finer level.
        stage_mask: For each trainable-variable position, whether it is a
            stage weight (`Hierarchy.stage_mask`).
        factor: The coarsening factor c.

    Raises:
        ValueError: If `can_prolongate` is False for the two optimizers, or
            their slots do not correspond to the levels' variables.

    Example:

    >>> coarse, fine = keras.optimizers.Adam(), keras.optimizers.Adam()
    >>> coarse.build([keras.Variable(np.zeros((2, 3)))])
    >>> fine.build([keras.Variable(np.zeros((4, 3)))])
    >>> prolongate_optimizer_state(coarse, fine, stage_mask=[True])
    """
    if not can_prolongate(coarse_optimizer, fine_optimizer):
        raise ValueError(
            "Optimizer state can only be prolongated between optimizers of "
            f"one type among {SUPPORTED_OPTIMIZERS} (or their subclasses); "
            f"received {type(coarse_optimizer).__name__} (coarse) "
            f"and {type(fine_optimizer).__name__} (fine). Give the levels "
            "optimizers of one such type, or use "
            "nested_optimizer_state='reset'."
        )
    coarse_optimizer = _unwrapped(coarse_optimizer)
    fine_optimizer = _unwrapped(fine_optimizer)
    slots, scalars = _slot_spec(fine_optimizer)
    # Every value is computed and checked before any is assigned, so that a
    # mismatch leaves the finer optimizer as it was.
    assignments = []
    for attribute, degree in slots.items():
        coarse_slots = getattr(coarse_optimizer, attribute, None) or []
        fine_slots = getattr(fine_optimizer, attribute, None) or []
        if not len(coarse_slots) == len(fine_slots) == len(stage_mask):
            if coarse_slots or fine_slots:
                raise ValueError(
                    f"{type(fine_optimizer).__name__} has {len(coarse_slots)} "
                    f"'{attribute}' slots on the coarse level and "
                    f"{len(fine_slots)} on the fine one, for "
                    f"{len(stage_mask)} trainable variables. Build each "
                    "level's optimizer on its level's trainable variables."
                )
            continue  # the slot is off (SGD without momentum, no amsgrad)
        for is_stage, coarse_slot, fine_slot in zip(
            stage_mask, coarse_slots, fine_slots
        ):
            value = coarse_slot.value
            if is_stage:
                value = transfer.prolongate(value, factor) * factor**-degree
            if tuple(value.shape) != tuple(fine_slot.shape):
                raise ValueError(
                    f"The coarse '{attribute}' slot of shape "
                    f"{tuple(coarse_slot.shape)} does not prolongate to the "
                    f"fine slot of shape {tuple(fine_slot.shape)} by factor "
                    f"{factor}. Build each level's optimizer on its level's "
                    "trainable variables, in `Hierarchy` order."
                )
            assignments.append((fine_slot, value))
    for attribute in ("iterations",) + scalars:
        assignments.append(
            (
                getattr(fine_optimizer, attribute),
                getattr(coarse_optimizer, attribute).value,
            )
        )
    for variable, value in assignments:
        variable.assign(value)

"""Level budgets: which level nested iteration trains in each epoch.

Nested iteration trains the coarsest network first and moves one level
finer at a time. By patience it moves when the validation loss stops
improving, a noisy signal that costs `level_patience` stale epochs on every
level; by budget it moves at epochs fixed in advance: each level trains a
share of `fit`'s epochs, the coarsest first, so that most of the budget can
go to cheap coarse epochs and a short fine phase ends the run on one
continuous learning-rate schedule.
"""

import math
import numbers


def check_level_budget(budget, num_levels):
    """Checks a level budget and returns it as a tuple of floats.

    Args:
        budget: One share of the epochs per level, coarsest first: numbers
            >= 0 that sum to 1, the last (the fine level's) positive.
        num_levels: Levels of the hierarchy.

    Returns:
        The budget as a tuple of floats.

    Raises:
        ValueError: If the budget is not such a sequence.

    Example:

    >>> check_level_budget([0.75, 0.25], 2)
    (0.75, 0.25)
    """
    problem = None
    if isinstance(budget, (str, bytes)) or not hasattr(budget, "__len__"):
        problem = "is not a sequence of numbers"
    elif len(budget) != num_levels:
        problem = (
            f"has {len(budget)} entries for {num_levels} levels (one share "
            "per level, coarsest first)"
        )
    elif not all(
        isinstance(share, numbers.Real) and not isinstance(share, bool)
        and math.isfinite(share) and share >= 0 for share in budget
    ):
        problem = "has an entry that is not a number >= 0"
    elif not budget[-1] > 0:
        problem = "gives the fine level (the last entry) no epochs"
    elif not math.isclose(math.fsum(budget), 1.0, abs_tol=1e-6):
        problem = f"sums to {math.fsum(budget):g}, not 1"
    if problem:
        raise ValueError(
            f"`level_budget` {problem}. Pass the share of fit's epochs each "
            "level trains, coarsest first, summing to 1, such as "
            f"{_example(num_levels)}. Received: level_budget={budget!r}"
        )
    return tuple(float(share) for share in budget)


def _example(num_levels):
    """A budget that puts half of the epochs on the coarsest level."""
    if num_levels == 1:
        return "[1.0]"
    rest = 0.5 / (num_levels - 1)
    return repr([0.5] + [round(rest, 3)] * (num_levels - 1))


def level_epochs(budget, epochs):
    """The epochs each level trains: `budget` of `epochs`, rounded.

    Levels are rounded at their cumulative share, so that the counts add up
    to `epochs`; a level whose share rounds to nothing is skipped.

    Args:
        budget: A checked level budget (`check_level_budget`).
        epochs: `fit`'s epochs.

    Returns:
        A tuple of epoch counts, coarsest first, summing to `epochs`.

    Example:

    >>> level_epochs((0.5, 0.25, 0.25), 8)
    (4, 2, 2)
    """
    ends, total = [], 0.0
    for share in budget:
        total += share
        ends.append(round(total * epochs))
    ends[-1] = epochs
    starts = [0] + ends[:-1]
    return tuple(end - start for start, end in zip(starts, ends))


def level_at(budget, epoch, epochs):
    """The level that trains epoch `epoch` (from 0) of `epochs`.

    Args:
        budget: A checked level budget, coarsest first.
        epoch: The epoch's index, from 0 as in Keras's callbacks.
        epochs: `fit`'s epochs.

    Returns:
        The level, 0 being the fine network.

    Example:

    >>> [level_at((0.5, 0.25, 0.25), e, 4) for e in range(4)]
    [2, 2, 1, 0]
    """
    end = 0
    coarsest = len(budget) - 1
    for index, count in enumerate(level_epochs(budget, epochs)):
        end += count
        if epoch < end:
            return coarsest - index
    return 0

"""Transfer operators between depths: prolongation and restriction in time.

All functions act on one stacked weight tensor of an `ODEStack`, whose leading
axis is the block (time) axis, and return a tensor of the other level's
shape. They are TensorFlow ops with static shapes, usable inside a compiled
training step. Block k of a stage with K blocks covers the time interval
`[k dt, (k + 1) dt]`; coarse block j covers the fine blocks
`c j, ..., c j + c - 1` for the coarsening factor c.

- `prolongate` (P, coarse -> fine): piecewise constant in time
  (`theta_{c j + i} = theta^H_j`) or linear between the centres of the coarse
  intervals (exact for weights linear in t).
- `restrict` (R, fine -> coarse, for weights): the average over the c fine
  blocks of a coarse block (`R = P^T / c` for constant P, so `R P = I`),
  injection (`theta^H_j = theta_{c j}`) or full weighting (stencil
  `[1/4, 1/2, 1/4]` around fine block `c j`).
- `restrict_gradient` (R_g = P^T, fine -> coarse, for gradients): the adjoint
  of P, which makes the MG/OPT first-order coherence condition exact.

`prolongation_matrix` and `restriction_matrix` give the same operators as
dense matrices, for analysis and tests.
"""

import numpy as np
import tensorflow as tf

from keras_mlres._checks import check_choice
from keras_mlres._checks import check_coarsening_factor

INTERPOLATIONS = ("constant", "linear")
RESTRICTIONS = ("average", "injection", "full_weighting")


def _num_coarse_blocks(num_fine_blocks, factor):
    check_coarsening_factor(factor)
    if num_fine_blocks % factor:
        raise ValueError(
            f"Cannot restrict {num_fine_blocks} blocks by the coarsening "
            f"factor {factor}: the number of blocks must be a multiple of the "
            "factor."
        )
    return num_fine_blocks // factor


def prolongation_matrix(num_coarse_blocks, factor=2, interpolation="constant"):
    """Returns the prolongation P as a dense `(c K_H, K_H)` matrix.

    Args:
        num_coarse_blocks: K_H, the number of coarse blocks.
        factor: The coarsening factor c.
        interpolation: `"constant"` or `"linear"`.

    Returns:
        A float64 numpy array.
    """
    check_coarsening_factor(factor)
    check_choice("interpolation", interpolation, INTERPOLATIONS)
    num_fine_blocks = num_coarse_blocks * factor
    matrix = np.zeros((num_fine_blocks, num_coarse_blocks))
    for fine in range(num_fine_blocks):
        if interpolation == "constant" or num_coarse_blocks == 1:
            matrix[fine, fine // factor] = 1.0
            continue
        # Fine centre in units of coarse blocks, with coarse centres at 0, 1,..
        position = (fine + 0.5) / factor - 0.5
        left = min(max(int(np.floor(position)), 0), num_coarse_blocks - 2)
        weight = position - left
        matrix[fine, left] = 1.0 - weight
        matrix[fine, left + 1] = weight
    return matrix


def restriction_matrix(num_fine_blocks, factor=2, method="average"):
    """Returns the weight restriction R as a dense `(K_h / c, K_h)` matrix.

    Args:
        num_fine_blocks: K_h, the number of fine blocks.
        factor: The coarsening factor c.
        method: `"average"`, `"injection"` or `"full_weighting"`.

    Returns:
        A float64 numpy array whose rows sum to one.
    """
    num_coarse_blocks = _num_coarse_blocks(num_fine_blocks, factor)
    check_choice("restriction", method, RESTRICTIONS)
    matrix = np.zeros((num_coarse_blocks, num_fine_blocks))
    for coarse in range(num_coarse_blocks):
        first = coarse * factor
        if method == "average":
            matrix[coarse, first : first + factor] = 1.0 / factor
        elif method == "injection":
            matrix[coarse, first] = 1.0
        else:
            for offset, weight in ((-1, 0.25), (0, 0.5), (1, 0.25)):
                if 0 <= first + offset < num_fine_blocks:
                    matrix[coarse, first + offset] = weight
            matrix[coarse] /= matrix[coarse].sum()
    return matrix


def _apply_along_blocks(matrix, tensor):
    """Applies a `(M, K)` matrix to the leading axis of a `(K, ...)` tensor."""
    tensor = tf.convert_to_tensor(tensor)
    matrix = tf.constant(matrix, dtype=tensor.dtype)
    return tf.tensordot(matrix, tensor, axes=[[1], [0]])


def _blocks_by_coarse_block(tensor, factor):
    """Reshapes `(K, ...)` to `(K / c, c, ...)`."""
    tensor = tf.convert_to_tensor(tensor)
    _num_coarse_blocks(tensor.shape[0], factor)
    return tf.reshape(tensor, [-1, factor] + tensor.shape[1:].as_list())


def prolongate(coarse, factor=2, interpolation="constant"):
    """Prolongates stacked weights from K_H to c K_H blocks.

    Args:
        coarse: A `(K_H, ...)` tensor of per-block weights (or corrections).
        factor: The coarsening factor c.
        interpolation: `"constant"` (repeat each coarse block c times) or
            `"linear"` (linear in t between coarse interval centres, linearly
            extrapolated in the outer half intervals).

    Returns:
        A `(c K_H, ...)` tensor.

    Example:

    >>> prolongate(tf.constant([1.0, 3.0]))
    <tf.Tensor: shape=(4,), dtype=float32, numpy=array([1., 1., 3., 3.]...)>
    """
    check_coarsening_factor(factor)
    check_choice("interpolation", interpolation, INTERPOLATIONS)
    coarse = tf.convert_to_tensor(coarse)
    if interpolation == "constant":
        return tf.repeat(coarse, factor, axis=0)
    return _apply_along_blocks(
        prolongation_matrix(coarse.shape[0], factor, interpolation), coarse
    )


def restrict(fine, factor=2, method="average"):
    """Restricts stacked weights from K_h to K_h / c blocks.

    Args:
        fine: A `(K_h, ...)` tensor of per-block weights.
        factor: The coarsening factor c; must divide K_h.
        method: `"average"` (mean over the c fine blocks of each coarse block;
            `R = P^T / c` for the constant P, so `restrict(prolongate(x)) ==
            x`), `"injection"` (fine block `c j`) or `"full_weighting"`
            (stencil `[1/4, 1/2, 1/4]` around fine block `c j`, renormalized
            at the ends).

    Returns:
        A `(K_h / c, ...)` tensor.

    Raises:
        ValueError: If c does not divide K_h or the method is unknown.
    """
    check_choice("restriction", method, RESTRICTIONS)
    if method == "average":
        return tf.reduce_mean(_blocks_by_coarse_block(fine, factor), axis=1)
    if method == "injection":
        return _blocks_by_coarse_block(fine, factor)[:, 0]
    fine = tf.convert_to_tensor(fine)
    return _apply_along_blocks(
        restriction_matrix(fine.shape[0], factor, method), fine
    )


def restrict_gradient(fine_gradient, factor=2, interpolation="constant"):
    """Restricts a gradient by the adjoint of prolongation, `R_g = P^T`.

    With the constant P this sums the gradients of the c fine blocks of each
    coarse block. `R_g` satisfies `<P x, y> = <x, R_g y>`, which makes the
    coarse MG/OPT objective start with the restricted fine gradient.

    Args:
        fine_gradient: A `(K_h, ...)` tensor.
        factor: The coarsening factor c; must divide K_h.
        interpolation: The interpolation of the P whose adjoint is taken.

    Returns:
        A `(K_h / c, ...)` tensor.
    """
    check_choice("interpolation", interpolation, INTERPOLATIONS)
    if interpolation == "constant":
        return tf.reduce_sum(
            _blocks_by_coarse_block(fine_gradient, factor), axis=1
        )
    fine_gradient = tf.convert_to_tensor(fine_gradient)
    num_coarse_blocks = _num_coarse_blocks(fine_gradient.shape[0], factor)
    matrix = prolongation_matrix(num_coarse_blocks, factor, interpolation)
    return _apply_along_blocks(matrix.T, fine_gradient)

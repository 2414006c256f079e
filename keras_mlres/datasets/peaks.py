"""The `peaks` data set: level-set classes of MATLAB's peaks function.

Points are drawn uniformly in [-3, 3]^2 and labelled by which of 5 bands of
the peaks function `z(x, y)` they fall in. The 4 thresholds between the bands
are the 20/40/60/80 % quantiles of `z` over the square, so the 5 classes
cover about the same area and are about equally frequent. Class 0 is the
lowest band (the deep valley), class 4 the highest (the peaks).

This is the classic test problem of Haber & Ruthotto, "Stable architectures
for deep neural networks" (2017).
"""

import functools

import numpy as np

from keras_mlres.datasets import _points

DOMAIN = (-3.0, 3.0)
NUM_CLASSES = 5
# Points per side of the grid of cell centres used for the quantiles.
_GRID_SIZE = 1000


def peaks_function(x, y):
    """Evaluates MATLAB's peaks function.

    `z = 3 (1-x)^2 exp(-x^2 - (y+1)^2)
         - 10 (x/5 - x^3 - y^5) exp(-x^2 - y^2)
         - 1/3 exp(-(x+1)^2 - y^2)`

    Args:
        x: Array-like of x coordinates.
        y: Array-like of y coordinates, broadcastable with `x`.

    Returns:
        A float64 numpy array of `z(x, y)`.

    Example:

    >>> float(peaks_function(0.0, 0.0))
    0.9810118431238463
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    return (
        3.0 * (1.0 - x) ** 2 * np.exp(-(x**2) - (y + 1.0) ** 2)
        - 10.0 * (x / 5.0 - x**3 - y**5) * np.exp(-(x**2) - y**2)
        - np.exp(-((x + 1.0) ** 2) - y**2) / 3.0
    )


@functools.lru_cache(maxsize=None)
def peaks_thresholds():
    """Returns the 4 class thresholds: quantiles of `z` over the square.

    They are the 20, 40, 60 and 80 % quantiles of `z` on a 1000 x 1000 grid
    of cell centres of [-3, 3]^2, so each of the 5 classes covers about a
    fifth of the square.

    Returns:
        A float64 numpy array of 4 increasing thresholds.
    """
    low, high = DOMAIN
    step = (high - low) / _GRID_SIZE
    centres = low + step * (np.arange(_GRID_SIZE) + 0.5)
    x, y = np.meshgrid(centres, centres)
    z = peaks_function(x, y)
    levels = np.arange(1, NUM_CLASSES) / NUM_CLASSES
    thresholds = np.quantile(z, levels)
    thresholds.setflags(write=False)
    return thresholds


def peaks_labels(points):
    """Labels 2-D points by their band of the peaks function.

    Args:
        points: Array-like of shape `(n, 2)`, the `(x, y)` coordinates.

    Returns:
        An int64 numpy array of shape `(n,)` with values in `[0, 5)`: the
        number of thresholds (see `peaks_thresholds`) that `z` exceeds.
    """
    points = np.asarray(points, dtype=np.float64)
    z = peaks_function(points[:, 0], points[:, 1])
    return np.searchsorted(peaks_thresholds(), z, side="right").astype(
        np.int64
    )


def make_peaks(num_examples, seed=0):
    """Draws labelled points of the peaks problem, without tfds.

    Args:
        num_examples: Number of points.
        seed: Seed of the `numpy.random.Generator` (or a Generator).

    Returns:
        A tuple `(features, labels)`: float32 array of shape
        `(num_examples, 2)` uniform in [-3, 3]^2, and int64 labels in
        `[0, 5)`.

    Example:

    ```python
    x, y = make_peaks(2000, seed=1)
    plt.scatter(x[:, 0], x[:, 1], c=y, s=2)
    ```
    """
    rng = np.random.default_rng(seed)
    features = rng.uniform(*DOMAIN, size=(num_examples, 2)).astype(np.float32)
    # Label the float32 points that are stored, not the float64 draws.
    return features, peaks_labels(features)


class PeaksConfig(_points.PointsConfig):
    """`BuilderConfig` of `Peaks`: the split sizes (see `PointsConfig`)."""


class Peaks(_points.PointsBuilder):
    """tfds builder of the `peaks` data set (5 level-set classes in 2-D).

    Features are float32 points `(x, y)` uniform in [-3, 3]^2; the label in
    `[0, 5)` is the band of MATLAB's peaks function `z(x, y)` the point falls
    in, with thresholds at the 20/40/60/80 % quantiles of `z` over the square
    (see `peaks_thresholds`), so the classes are about balanced.

    Splits: 20000 train, 5000 validation, 5000 test points (change them with
    a `PeaksConfig`). Generated locally and deterministically (a fixed seed
    per split); nothing is downloaded.

    Example:

    ```python
    import keras_mlres.datasets  # Registers the builders.
    ds = tfds.load("peaks", split="train", as_supervised=True)
    ```
    """

    SEED = 5001
    BUILDER_CONFIGS = [
        PeaksConfig(
            name="default",
            description="20000/5000/5000 points uniform in [-3, 3]^2.",
        )
    ]
    DEFAULT_BUILDER_CONFIG_NAME = "default"
    DESCRIPTION = __doc__
    CITATION = """\
@article{haber2017stable,
  title={Stable architectures for deep neural networks},
  author={Haber, Eldad and Ruthotto, Lars},
  journal={Inverse Problems},
  volume={34},
  number={1},
  pages={014004},
  year={2017}
}"""

    def num_classes(self):
        """Returns 5, the number of level-set classes."""
        return NUM_CLASSES

    def sample(self, rng, num_examples):
        """Draws `num_examples` labelled points (see `make_peaks`)."""
        return make_peaks(num_examples, seed=rng)

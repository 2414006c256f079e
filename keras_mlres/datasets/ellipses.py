"""The `ellipses` data set: which of 4 overlapping ellipses holds a point.

Four ellipses are painted, in order, onto the square [-2, 2]^2: a large one
around the origin, two smaller tilted ones nested inside it that overlap each
other, and one that sticks out of the large one. A point's label is the
index + 1 of the last ellipse painted over it, 0 if none is (background):

    0  background (outside every ellipse)
    1  the large ellipse, where no other one lies on top
    2  the first nested ellipse, where the second does not cover it
    3  the second nested ellipse (covers part of the first)
    4  the ellipse crossing the boundary of the large one

The class regions are non-convex and meet at corners, a harder boundary than
the spiral or peaks ones. Sampling is balanced by class: each class has the
same number of points (up to one), drawn uniformly inside its region (by
rejection from uniform points in the square), so the density of points is
uniform within a class but differs between classes.
"""

import numpy as np

from keras_mlres.datasets import _points

DOMAIN = (-2.0, 2.0)
# (centre x, centre y, semi-axis a, semi-axis b, rotation in degrees), in
# painting order.
ELLIPSES = (
    (0.0, 0.0, 1.6, 1.0, 0.0),
    (-0.55, 0.1, 0.85, 0.45, 30.0),
    (0.35, -0.2, 0.8, 0.4, -40.0),
    (1.05, 0.55, 0.65, 0.35, 55.0),
)
NUM_CLASSES = len(ELLIPSES) + 1


def ellipses_labels(points, ellipses=ELLIPSES):
    """Labels 2-D points by the last ellipse painted over them.

    Args:
        points: Array-like of shape `(n, 2)`.
        ellipses: Sequence of `(cx, cy, a, b, degrees)` ellipses, in painting
            order. Defaults to the ellipses of the data set.

    Returns:
        An int64 numpy array of shape `(n,)`: `i + 1` for the last ellipse
        `i` containing the point (boundary included), 0 for none.
    """
    points = np.asarray(points, dtype=np.float64)
    labels = np.zeros(points.shape[0], dtype=np.int64)
    for index, (cx, cy, a, b, degrees) in enumerate(ellipses):
        angle = np.deg2rad(degrees)
        dx, dy = points[:, 0] - cx, points[:, 1] - cy
        # Coordinates in the frame of the ellipse's axes.
        u = np.cos(angle) * dx + np.sin(angle) * dy
        v = -np.sin(angle) * dx + np.cos(angle) * dy
        inside = (u / a) ** 2 + (v / b) ** 2 <= 1.0
        labels[inside] = index + 1
    return labels


def make_ellipses(num_examples, seed=0):
    """Draws class-balanced labelled points of the ellipses problem.

    Each class gets `num_examples // 5` points (or one more), uniform inside
    its region, found by rejection sampling of uniform points of [-2, 2]^2;
    the points are returned in random order.

    Args:
        num_examples: Number of points.
        seed: Seed of the `numpy.random.Generator` (or a Generator).

    Returns:
        A tuple `(features, labels)`: float32 array of shape
        `(num_examples, 2)` in [-2, 2]^2 and int64 labels in `[0, 5)`.

    Example:

    ```python
    x, y = make_ellipses(5000, seed=1)
    plt.scatter(x[:, 0], x[:, 1], c=y, s=2)
    ```
    """
    rng = np.random.default_rng(seed)
    labels = _points.balanced_labels(rng, num_examples, NUM_CLASSES)
    wanted = np.bincount(labels, minlength=NUM_CLASSES)
    found = [np.zeros((0, 2), dtype=np.float32)] * NUM_CLASSES
    while any(len(f) < w for f, w in zip(found, wanted)):
        # The smallest region covers about 4.4 % of the square, so one round
        # of 10 candidates per point almost always suffices.
        candidates = rng.uniform(
            *DOMAIN, size=(max(10 * num_examples, 1000), 2)
        ).astype(np.float32)
        candidate_labels = ellipses_labels(candidates)
        for c in range(NUM_CLASSES):
            missing = wanted[c] - len(found[c])
            if missing > 0:
                more = candidates[candidate_labels == c][:missing]
                found[c] = np.concatenate([found[c], more])
    features = np.empty((num_examples, 2), dtype=np.float32)
    for c in range(NUM_CLASSES):
        features[labels == c] = found[c]
    return features, labels


class EllipsesConfig(_points.PointsConfig):
    """`BuilderConfig` of `Ellipses`: the split sizes (see `PointsConfig`)."""


class Ellipses(_points.PointsBuilder):
    """tfds builder of the `ellipses` data set (5 classes in 2-D).

    Features are float32 points in [-2, 2]^2; the label in `[0, 5)` says
    which of 4 overlapping, partly nested ellipses was painted last over the
    point (0: none), see `ELLIPSES` and `ellipses_labels`. Classes are exactly
    balanced: each is sampled uniformly inside its own region.

    Splits: 20000 train, 5000 validation, 5000 test points (change them with
    an `EllipsesConfig`). Generated locally and deterministically (a fixed
    seed per split); nothing is downloaded.

    Example:

    ```python
    import keras_mlres.datasets  # Registers the builders.
    ds = tfds.load("ellipses", split="train", as_supervised=True)
    ```
    """

    SEED = 5003
    BUILDER_CONFIGS = [
        EllipsesConfig(
            name="default",
            description="20000/5000/5000 points, 5 balanced classes.",
        )
    ]
    DEFAULT_BUILDER_CONFIG_NAME = "default"
    DESCRIPTION = __doc__

    def num_classes(self):
        """Returns 5: the background and the 4 ellipses."""
        return NUM_CLASSES

    def sample(self, rng, num_examples):
        """Draws `num_examples` labelled points (see `make_ellipses`)."""
        return make_ellipses(num_examples, seed=rng)

"""The `shapes` data set: procedurally drawn shapes in noisy grayscale images.

Each image shows one filled shape of a random size, position, rotation and
brightness on a random background level, plus Gaussian pixel noise. The
label is the kind of shape, one of 6 (`CLASSES`):

    0  circle     a disk
    1  square     a rotated square
    2  triangle   a rotated equilateral triangle
    3  cross      a rotated plus sign of two bars
    4  ring       an annulus (a disk with a hole)
    5  star       a rotated five-pointed star

Images are uint8 grayscale, `(28, 28, 1)` (`shapes/28`, the default) or
`(32, 32, 1)` (`shapes/32`); classes are exactly balanced (up to one image).
It is a small, offline image task for convolutional ODE-ResNets: the classes
differ in their outlines; brightness, background, size and position are drawn
independently of the class (only the shapes' areas differ a little, a weak
cue), and every shape is rotated at random and drawn in pixel noise.
"""

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from keras_mlres.datasets import _points

CLASSES = ("circle", "square", "triangle", "cross", "ring", "star")
NUM_CLASSES = len(CLASSES)
# Circumradius of a shape, as a fraction of the image side.
_RADIUS_RANGE = (0.22, 0.36)
_NOISE_STDDEV = 0.1
# Images drawn per vectorized numpy batch (bounds the temporary memory).
_CHUNK = 1000


def _inside(label, u, v, radius):
    """Masks the pixels inside a shape of kind `label` (in its own frame).

    Args:
        label: The class index.
        u, v: Pixel coordinates relative to the shape's centre, rotated into
            the shape's frame, arrays of shape `(n, size, size)`.
        radius: Circumradius of the shapes, shape `(n, 1, 1)`.

    Returns:
        A boolean array of shape `(n, size, size)`.
    """
    rho = np.hypot(u, v)
    theta = np.arctan2(v, u)
    name = CLASSES[label]
    if name == "circle":
        return rho <= radius
    if name == "ring":
        return (rho <= radius) & (rho >= 0.55 * radius)
    if name == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= radius / np.sqrt(2.0)
    if name == "triangle":
        # Regular polygon: the distance to the centre along the direction of
        # the nearest edge's normal is at most the apothem, r cos(pi / 3).
        sector = 2.0 * np.pi / 3.0
        offset = np.mod(theta, sector) - sector / 2.0
        return rho * np.cos(offset) <= radius * np.cos(np.pi / 3.0)
    if name == "cross":
        arm = 0.3 * radius
        return ((np.abs(u) <= arm) & (np.abs(v) <= radius)) | (
            (np.abs(v) <= arm) & (np.abs(u) <= radius)
        )
    # Star: the boundary radius goes linearly from the tips (radius) to the
    # notches between them (0.45 radius) in the angle.
    phase = np.mod(theta, 2.0 * np.pi / 5.0) / (2.0 * np.pi / 5.0)
    tip = np.abs(2.0 * phase - 1.0)
    return rho <= radius * (0.45 + 0.55 * tip)


def _masks(inside, kinds, centre_x, centre_y, angle, radius, image_size):
    """Masks the pixels of one rotated shape per image.

    Args:
        inside: A function `(kind, u, v, radius)` masking the pixels inside
            a shape of kind `kind` in its own frame, as `_inside` does.
        kinds: Integer kinds of the shapes, shape `(n,)`.
        centre_x, centre_y: Centres of the shapes (pixels), shape `(n,)`.
        angle: Rotations of the shapes (radians), shape `(n,)`.
        radius: Circumradii of the shapes (pixels), shape `(n,)`.
        image_size: Side of the square images, in pixels.

    Returns:
        A boolean array of shape `(n, image_size, image_size)`.
    """
    pixels = np.arange(image_size) + 0.5
    expand = lambda a: a[:, None, None]  # noqa: E731
    dx = pixels[None, None, :] - expand(centre_x)
    dy = pixels[None, :, None] - expand(centre_y)
    cos, sin = expand(np.cos(angle)), expand(np.sin(angle))
    u = cos * dx + sin * dy
    v = -sin * dx + cos * dy
    mask = np.zeros((len(kinds), image_size, image_size), dtype=bool)
    for kind in np.unique(kinds):
        rows = kinds == kind
        mask[rows] = inside(kind, u[rows], v[rows], expand(radius[rows]))
    return mask


def _place(rng, n, image_size):
    """Draws the sizes, centres and rotations of `n` shapes.

    Args:
        rng: A `numpy.random.Generator`.
        n: Number of shapes.
        image_size: Side of the square images, in pixels.

    Returns:
        A tuple `(radius, centre_x, centre_y, angle)` of arrays of shape
        `(n,)`: circumradii in `_RADIUS_RANGE` (pixels), centres that keep
        the whole shape and a pixel of margin in the image, and angles in
        radians.
    """
    radius = rng.uniform(*_RADIUS_RANGE, size=n) * image_size
    margin = radius + 1.0
    centre_x = rng.uniform(margin, image_size - margin)
    centre_y = rng.uniform(margin, image_size - margin)
    angle = rng.uniform(0.0, 2.0 * np.pi, size=n)
    return radius, centre_x, centre_y, angle


def _draw(rng, labels, image_size):
    """Draws one chunk of images (float64 in [0, 1]) for `labels`."""
    n = len(labels)
    radius, centre_x, centre_y, angle = _place(rng, n, image_size)
    foreground = rng.uniform(0.6, 1.0, size=n)
    background = rng.uniform(0.0, 0.3, size=n)
    noise = rng.normal(0.0, _NOISE_STDDEV, size=(n, image_size, image_size))

    mask = _masks(
        _inside, labels, centre_x, centre_y, angle, radius, image_size
    )
    expand = lambda a: a[:, None, None]  # noqa: E731
    images = expand(background) + mask * expand(foreground - background)
    return np.clip(images + noise, 0.0, 1.0)


def make_shapes(num_examples, image_size=28, seed=0):
    """Draws labelled images of the shapes problem, without tfds.

    Args:
        num_examples: Number of images.
        image_size: Side of the square images, in pixels (at least 16).
        seed: Seed of the `numpy.random.Generator` (or a Generator).

    Returns:
        A tuple `(images, labels)`: uint8 array of shape
        `(num_examples, image_size, image_size, 1)` and int64 labels in
        `[0, 6)` (see `CLASSES`), each class appearing
        `num_examples // 6` or one more times.

    Example:

    ```python
    images, labels = make_shapes(36, seed=1)
    plt.imshow(images[0, ..., 0], cmap="gray"); plt.title(CLASSES[labels[0]])
    ```
    """
    if not isinstance(image_size, int) or image_size < 16:
        raise ValueError(
            "`image_size` must be an integer >= 16 (smaller shapes are not "
            f"recognizable). Received: image_size={image_size!r}"
        )
    return _points.draw_images(
        lambda rng, labels: _draw(rng, labels, image_size),
        num_examples,
        NUM_CLASSES,
        (image_size, image_size, 1),
        seed=seed,
        chunk=_CHUNK,
    )


@dataclasses.dataclass(eq=False)
class ShapesConfig(_points.PointsConfig):
    """`BuilderConfig` of `Shapes`: the image size and the split sizes.

    Args:
        name: Name of the config (`"28"` in `"shapes/28"`).
        image_size: Side of the square images, in pixels.
        num_train: Number of images of the `"train"` split.
        num_validation: Number of images of the `"validation"` split.
        num_test: Number of images of the `"test"` split.
        **kwargs: The other fields of `tfds.core.BuilderConfig`.

    Example:

    ```python
    small = ShapesConfig(name="small", image_size=28, num_train=600,
                         num_validation=120, num_test=120)
    ds = tfds.load("shapes", builder_kwargs={"config": small}, split="train")
    ```
    """

    image_size: int = 28
    num_train: int = 12_000
    num_validation: int = 3_000
    num_test: int = 3_000


def _size_config(image_size):
    return ShapesConfig(
        name=str(image_size),
        image_size=image_size,
        description=(
            f"{image_size}x{image_size} grayscale, 6 balanced classes, "
            "12000/3000/3000 images."
        ),
    )


class Shapes(_points.GeneratedBuilder):
    """tfds builder of the `shapes` data set (6 kinds of shapes in noise).

    Features `"image"` are uint8 grayscale images of shape
    `(image_size, image_size, 1)`; the label in `[0, 6)` names the shape
    (`CLASSES`: circle, square, triangle, cross, ring, star), drawn at a
    random size, position, rotation and brightness with pixel noise. Configs
    `shapes/28` (default) and `shapes/32` differ by the image size.

    Splits: 12000 train, 3000 validation, 3000 test images (change them with
    a `ShapesConfig`). Generated locally and deterministically (a fixed seed
    per split) in a few seconds; nothing is downloaded.

    Example:

    ```python
    import keras_mlres.datasets  # Registers the builders.
    ds = tfds.load("shapes", split="train", as_supervised=True)
    ```
    """

    SEED = 5004
    BUILDER_CONFIGS = [_size_config(28), _size_config(32)]
    DEFAULT_BUILDER_CONFIG_NAME = "28"
    DESCRIPTION = __doc__
    FEATURES_KEY = "image"
    FEATURES_DTYPE = np.uint8

    def features_feature(self):
        """Returns the image feature: uint8 `(size, size, 1)`."""
        size = self.builder_config.image_size
        return tfds.features.Image(shape=(size, size, 1))

    def num_classes(self):
        """Returns 6, the number of kinds of shapes."""
        return NUM_CLASSES

    def sample(self, rng, num_examples):
        """Draws `num_examples` labelled images (see `make_shapes`)."""
        return make_shapes(
            num_examples, image_size=self.builder_config.image_size, seed=rng
        )

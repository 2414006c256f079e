"""The `cluttered_shapes` data set: coloured shapes among clutter, occluded.

Each 32x32 colour image shows one filled shape of a random size, position,
rotation and colour on a darker background of another random colour.
Distractor fragments (small blobs and line segments of random colours) lie
scattered over the background, a patch of a random colour hides part of the
shape in 40% of the images, and every pixel gets Gaussian noise. The label
is the kind of shape, one of 10 (`CLASSES`): 0-5 are the shapes of the
`shapes` data set (circle, square, triangle, cross, ring, star), and

    6  semicircle  a rotated half disk
    7  crescent    a disk with a disk bitten out of one side
    8  ell         a rotated L of two bars
    9  arrow       a rotated arrow: a triangular head on a shaft

Images are uint8 RGB, `(32, 32, 3)`; classes are exactly balanced (up to one
image). It is a harder image task than `shapes`, one where the depth of a
convolutional ODE-ResNet matters: the outline is what tells the classes
apart, and finding it means telling it from the clutter, completing it where
the patch hides it and seeing it through the noise. The colours, size and
position are drawn independently of the class; only the shapes' areas differ
a little, so an image's mean brightness is a weak cue.
"""

import numpy as np
import tensorflow_datasets as tfds

from keras_mlres.datasets import _points
from keras_mlres.datasets import shapes

CLASSES = shapes.CLASSES + ("semicircle", "crescent", "ell", "arrow")
NUM_CLASSES = len(CLASSES)
IMAGE_SIZE = 32
# Brightness (mean of R, G and B in [0, 1]) of the shapes' colours and of
# the backgrounds', and the spread of a channel around it (the saturation).
# The shape is always the brighter, in any hue: with a contrast of either
# sign, the small conv ODE-ResNets of this project stay at chance for epochs.
_SHAPE_BRIGHTNESS_RANGE = (0.6, 1.0)
_BACKGROUND_BRIGHTNESS_RANGE = (0.0, 0.3)
_SATURATION = 0.25
_NOISE_STDDEV = 0.05
# Distractor fragments per image, and their kinds: blobs (disks) and line
# segments, `_SEGMENT_HALF_WIDTH` pixels wide on each side of their axis.
_FRAGMENTS_RANGE = (2, 5)
_SEGMENT_HALF_WIDTH = 0.6
# Circumradius of a blob and half length of a segment, fractions of the side.
_BLOB_RADIUS_RANGE = (0.04, 0.09)
_SEGMENT_LENGTH_RANGE = (0.1, 0.22)
# Share of the images with an occluding patch: a rotated square whose
# circumradius and distance from the shape's centre are fractions of the
# shape's circumradius.
_OCCLUSION_PROBABILITY = 0.4
_OCCLUDER_RADIUS_RANGE = (0.25, 0.45)
_OCCLUDER_OFFSET_RANGE = (0.4, 0.9)
# Kinds of `_fragment_inside`.
_FRAGMENT_KINDS = ("blob", "segment", "patch")
# Images drawn per vectorized numpy batch (bounds the temporary memory).
_CHUNK = 500


def _inside(label, u, v, radius):
    """Masks the pixels inside a shape, as `shapes._inside`, of `CLASSES`.

    The shapes of `shapes` are its own; the others also lie within their
    circumradius `radius` of the centre.
    """
    if label < shapes.NUM_CLASSES:
        return shapes._inside(label, u, v, radius)
    name = CLASSES[label]
    if name == "semicircle":
        # The half disk of radius 0.9 r above its diameter at v = -0.35 r,
        # so that its centre of area is near the shape's centre.
        return (np.hypot(u, v + 0.35 * radius) <= 0.9 * radius) & (
            v >= -0.35 * radius
        )
    if name == "crescent":
        return (np.hypot(u, v) <= radius) & (
            np.hypot(u - 0.5 * radius, v) > 0.8 * radius
        )
    if name == "ell":
        # Two bars 0.6 r thick along the left and the bottom of the square
        # [-0.7 r, 0.7 r]^2.
        side, arm = 0.7 * radius, 0.1 * radius
        within = (np.abs(u) <= side) & (np.abs(v) <= side)
        return within & ((u <= -arm) | (v <= -arm))
    # Arrow: a head from its base at u = 0 (half width 0.7 r) to its tip at
    # u = r, on a shaft 0.5 r thick from u = -r.
    head = (u >= 0.0) & (np.abs(v) <= 0.7 * (radius - u))
    shaft = (u >= -radius) & (u < 0.0) & (np.abs(v) <= 0.25 * radius)
    return head | shaft


def _fragment_inside(kind, u, v, radius):
    """Masks the pixels of a fragment, as `_inside` (see `_FRAGMENT_KINDS`).

    A blob is a disk of radius `radius`; a segment is `2 * radius` long and
    `2 * _SEGMENT_HALF_WIDTH` pixels wide; an occluding patch is a square of
    circumradius `radius`.
    """
    name = _FRAGMENT_KINDS[kind]
    if name == "blob":
        return u**2 + v**2 <= radius**2
    if name == "segment":
        return (np.abs(u) <= radius) & (np.abs(v) <= _SEGMENT_HALF_WIDTH)
    return shapes._inside(shapes.CLASSES.index("square"), u, v, radius)


def _random_colours(rng, n, brightness_range):
    """Draws `n` RGB colours of a random hue and saturation.

    Args:
        rng: A `numpy.random.Generator`.
        n: Number of colours.
        brightness_range: The range of their brightness (mean of R, G, B)
            before the channels are clipped to [0, 1].

    Returns:
        A float64 array of shape `(n, 3)` in [0, 1].
    """
    brightness = rng.uniform(*brightness_range, size=(n, 1))
    hue = rng.uniform(-_SATURATION, _SATURATION, size=(n, 3))
    hue -= hue.mean(axis=1, keepdims=True)
    return np.clip(brightness + hue, 0.0, 1.0)


def _fragments(rng, n, image_size):
    """Draws the distractor fragments of `n` images.

    Returns:
        A tuple `(masks, colours)`: a boolean array of shape
        `(n, most, size, size)` (`most` the largest number of fragments, all
        False for the fragments an image does not have) and their RGB
        colours, `(n, most, 3)`.
    """
    most = _FRAGMENTS_RANGE[1]
    count = rng.integers(_FRAGMENTS_RANGE[0], most, endpoint=True, size=n)
    slots = (n, most)
    kinds = rng.integers(0, 2, size=slots)  # Blobs and segments.
    size = np.where(
        kinds == 0,
        rng.uniform(*_BLOB_RADIUS_RANGE, size=slots),
        rng.uniform(*_SEGMENT_LENGTH_RANGE, size=slots),
    )
    centre_x = rng.uniform(0.0, image_size, size=slots)
    centre_y = rng.uniform(0.0, image_size, size=slots)
    angle = rng.uniform(0.0, 2.0 * np.pi, size=slots)
    present = np.arange(most)[None, :] < count[:, None]
    masks = np.zeros(slots + (image_size, image_size), dtype=bool)
    masks[present] = shapes._masks(
        _fragment_inside,
        kinds[present],
        centre_x[present],
        centre_y[present],
        angle[present],
        size[present] * image_size,
        image_size,
    )
    return masks, rng.uniform(size=slots + (3,))


def _occluders(rng, centre_x, centre_y, radius, image_size):
    """Draws the occluding patches (an empty mask for the unoccluded images).

    Returns:
        A tuple `(masks, colours)`: a boolean array of shape
        `(n, size, size)` and RGB colours of shape `(n, 3)`.
    """
    n = len(radius)
    occluded = rng.uniform(size=n) < _OCCLUSION_PROBABILITY
    offset = rng.uniform(*_OCCLUDER_OFFSET_RANGE, size=n) * radius
    direction = rng.uniform(0.0, 2.0 * np.pi, size=n)
    masks = shapes._masks(
        _fragment_inside,
        np.full(n, _FRAGMENT_KINDS.index("patch")),
        centre_x + offset * np.cos(direction),
        centre_y + offset * np.sin(direction),
        rng.uniform(0.0, 2.0 * np.pi, size=n),
        rng.uniform(*_OCCLUDER_RADIUS_RANGE, size=n) * radius,
        image_size,
    )
    masks &= occluded[:, None, None]
    return masks, rng.uniform(size=(n, 3))


def _draw(rng, labels, image_size):
    """Draws one chunk of RGB images (float64 in [0, 1]) for `labels`."""
    n = len(labels)
    # Sizes (as in `shapes`), centres keeping the shape in the image, angles.
    radius, centre_x, centre_y, angle = shapes._place(rng, n, image_size)
    foreground = _random_colours(rng, n, _SHAPE_BRIGHTNESS_RANGE)
    background = _random_colours(rng, n, _BACKGROUND_BRIGHTNESS_RANGE)
    fragments, fragment_colours = _fragments(rng, n, image_size)
    occluders, occluder_colours = _occluders(
        rng, centre_x, centre_y, radius, image_size
    )
    noise = rng.normal(
        0.0, _NOISE_STDDEV, size=(n, image_size, image_size, 3)
    )

    # Painted back to front: background, fragments, shape, occluding patch.
    # `top` is the index of the last layer painted over each pixel.
    mask = shapes._masks(
        _inside, labels, centre_x, centre_y, angle, radius, image_size
    )
    layers = [fragments[:, index] for index in range(fragments.shape[1])]
    layers += [mask, occluders]
    colours = np.concatenate(
        [
            background[:, None],
            fragment_colours,
            foreground[:, None],
            occluder_colours[:, None],
        ],
        axis=1,
    )
    top = np.zeros((n, image_size * image_size), dtype=np.intp)
    for index, layer in enumerate(layers, start=1):
        top[layer.reshape(n, -1)] = index
    images = np.take_along_axis(colours, top[..., None], axis=1)
    images = images.reshape(n, image_size, image_size, 3)
    return np.clip(images + noise, 0.0, 1.0)


def make_cluttered_shapes(num_examples, seed=0):
    """Draws labelled images of the cluttered shapes problem, without tfds.

    Args:
        num_examples: Number of images.
        seed: Seed of the `numpy.random.Generator` (or a Generator).

    Returns:
        A tuple `(images, labels)`: uint8 RGB array of shape
        `(num_examples, 32, 32, 3)` and int64 labels in `[0, 10)` (see
        `CLASSES`), each class appearing `num_examples // 10` or one more
        times.

    Example:

    ```python
    images, labels = make_cluttered_shapes(40, seed=1)
    plt.imshow(images[0]); plt.title(CLASSES[labels[0]])
    ```
    """
    return _points.draw_images(
        lambda rng, labels: _draw(rng, labels, IMAGE_SIZE),
        num_examples,
        NUM_CLASSES,
        (IMAGE_SIZE, IMAGE_SIZE, 3),
        seed=seed,
        chunk=_CHUNK,
    )


class ClutteredShapesConfig(_points.PointsConfig):
    """`BuilderConfig` of `ClutteredShapes`: the split sizes.

    Args:
        name: Name of the config (`"default"` in `"cluttered_shapes/default"`).
        num_train: Number of images of the `"train"` split.
        num_validation: Number of images of the `"validation"` split.
        num_test: Number of images of the `"test"` split.
        **kwargs: The other fields of `tfds.core.BuilderConfig`.

    Example:

    ```python
    small = ClutteredShapesConfig(name="small", num_train=1000,
                                  num_validation=200, num_test=200)
    ds = tfds.load("cluttered_shapes", builder_kwargs={"config": small},
                   split="train")
    ```
    """


class ClutteredShapes(_points.GeneratedBuilder):
    """tfds builder of `cluttered_shapes` (10 shapes in colour and clutter).

    Features `"image"` are uint8 RGB images of shape `(32, 32, 3)`; the label
    in `[0, 10)` names the shape (`CLASSES`), drawn at a random size,
    position, rotation and colour on a background of another random colour,
    among distractor fragments, partly hidden by a patch in 40% of the
    images, with pixel noise.

    Splits: 20000 train, 5000 validation, 5000 test images (change them with
    a `ClutteredShapesConfig`). Generated locally and deterministically (a
    fixed seed per split) in a few seconds; nothing is downloaded.

    Example:

    ```python
    import keras_mlres.datasets  # Registers the builders.
    ds = tfds.load("cluttered_shapes", split="train", as_supervised=True)
    ```
    """

    SEED = 5005
    BUILDER_CONFIGS = [
        ClutteredShapesConfig(
            name="default",
            description=(
                "32x32 RGB, 10 balanced classes, 20000/5000/5000 images."
            ),
        )
    ]
    DEFAULT_BUILDER_CONFIG_NAME = "default"
    DESCRIPTION = __doc__
    FEATURES_KEY = "image"
    FEATURES_DTYPE = np.uint8

    def features_feature(self):
        """Returns the image feature: uint8 `(32, 32, 3)`."""
        return tfds.features.Image(shape=(IMAGE_SIZE, IMAGE_SIZE, 3))

    def num_classes(self):
        """Returns 10, the number of kinds of shapes."""
        return NUM_CLASSES

    def sample(self, rng, num_examples):
        """Draws `num_examples` images and labels (`make_cluttered_shapes`)."""
        return make_cluttered_shapes(num_examples, seed=rng)

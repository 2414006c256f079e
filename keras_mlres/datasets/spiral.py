"""The `spiral` data set: k interleaved noisy spiral arms in 2-D.

Arm `j` of `k` is the curve `r(t) = t`, `theta(t) = 2 pi j / k + 2 pi turns t`
for `t` in `[t_min, 1]`; a point of class `j` is a point of that curve at a
uniform `t`, plus isotropic Gaussian noise of standard deviation `noise`.
The classes are exactly balanced (up to one point). Along a ray from the
origin, neighbouring arms are `1 / (k turns)` apart, so more arms, more
turns or more noise make the problem harder. Points lie in about
`[-1 - 4 noise, 1 + 4 noise]^2`.

Configs: `spiral/2`, `spiral/3` (the default) and `spiral/5`, with
`turns=1.5` and `noise=0.02`.
"""

import dataclasses

import numpy as np

from keras_mlres.datasets import _points


def make_spiral(
    num_examples, num_arms=3, turns=1.5, noise=0.02, t_min=0.05, seed=0
):
    """Draws labelled points of k interleaved spiral arms, without tfds.

    Args:
        num_examples: Number of points.
        num_arms: k, the number of arms (= classes).
        turns: Number of turns each arm makes around the origin.
        noise: Standard deviation of the Gaussian noise added to the points.
        t_min: Smallest curve parameter (radius): arms start at `t_min` so
            that they do not all meet at the origin.
        seed: Seed of the `numpy.random.Generator` (or a Generator).

    Returns:
        A tuple `(features, labels)`: float32 array of shape
        `(num_examples, 2)` and int64 labels in `[0, num_arms)`, each class
        appearing `num_examples // num_arms` or one more times.

    Example:

    ```python
    x, y = make_spiral(3000, num_arms=3, seed=1)
    plt.scatter(x[:, 0], x[:, 1], c=y, s=2)
    ```
    """
    rng = np.random.default_rng(seed)
    labels = _points.balanced_labels(rng, num_examples, num_arms)
    t = rng.uniform(t_min, 1.0, size=num_examples)
    theta = 2.0 * np.pi * (labels / num_arms + turns * t)
    points = np.stack([t * np.cos(theta), t * np.sin(theta)], axis=-1)
    points += noise * rng.standard_normal(size=points.shape)
    return points.astype(np.float32), labels


@dataclasses.dataclass(eq=False)
class SpiralConfig(_points.PointsConfig):
    """`BuilderConfig` of `Spiral`: the arms, the noise and the split sizes.

    Args:
        name: Name of the config (`"3"` in `"spiral/3"`).
        num_arms: k, the number of arms (= classes).
        turns: Number of turns each arm makes around the origin.
        noise: Standard deviation of the Gaussian noise on the points.
        t_min: Radius where the arms start.
        **kwargs: The split sizes and fields of `PointsConfig`.

    Example:

    ```python
    hard = SpiralConfig(name="4_noisy", num_arms=4, noise=0.05)
    ds = tfds.load("spiral", builder_kwargs={"config": hard}, split="train")
    ```
    """

    num_arms: int = 3
    turns: float = 1.5
    noise: float = 0.02
    t_min: float = 0.05


def _arms_config(num_arms):
    return SpiralConfig(
        name=str(num_arms),
        num_arms=num_arms,
        description=f"{num_arms} arms, 1.5 turns, noise 0.02.",
    )


class Spiral(_points.PointsBuilder):
    """tfds builder of the `spiral` data set (k interleaved spiral arms).

    Features are float32 points `(x, y)` on noisy spiral arms; the label in
    `[0, k)` is the arm. Configs `spiral/2`, `spiral/3` (default) and
    `spiral/5` differ by the number of arms k; pass a `SpiralConfig` for
    other arms, turns, noise or split sizes.

    Splits: 20000 train, 5000 validation, 5000 test points. Generated locally
    and deterministically (a fixed seed per split); nothing is downloaded.

    Example:

    ```python
    import keras_mlres.datasets  # Registers the builders.
    ds = tfds.load("spiral/5", split="train", as_supervised=True)
    ```
    """

    SEED = 5002
    BUILDER_CONFIGS = [_arms_config(2), _arms_config(3), _arms_config(5)]
    DEFAULT_BUILDER_CONFIG_NAME = "3"
    DESCRIPTION = __doc__

    def num_classes(self):
        """Returns k, the number of arms of the config."""
        return self.builder_config.num_arms

    def sample(self, rng, num_examples):
        """Draws `num_examples` labelled points (see `make_spiral`)."""
        config = self.builder_config
        return make_spiral(
            num_examples,
            num_arms=config.num_arms,
            turns=config.turns,
            noise=config.noise,
            t_min=config.t_min,
            seed=rng,
        )

"""The data sets of keras_mlres: the classic ODE-network test problems.

Three 2-D point classification problems and two image sets, generated
locally as tfds builders (deterministic, no download); importing this package
registers them, so `tfds.load("peaks")` works afterwards:

- `peaks`: 5 level-set classes of MATLAB's peaks function on [-3, 3]^2.
- `spiral`: k interleaved noisy spiral arms (`spiral/2`, `spiral/3` the
  default, `spiral/5`).
- `ellipses`: which of 4 overlapping, partly nested ellipses a point of
  [-2, 2]^2 is in (5 classes with the background).

- `shapes`: 6 kinds of procedurally drawn shapes (circle, square, triangle,
  cross, ring, star) in noisy uint8 grayscale images, `shapes/28` (28x28, the
  default) or `shapes/32`.
- `cluttered_shapes`: a harder image task where depth matters: 10 kinds of
  shapes (those of `shapes` and semicircle, crescent, ell, arrow) in random
  colours among distractor fragments, often partly occluded, in noisy uint8
  RGB images of 32x32.

The point sets have splits train/validation/test of 20000/5000/5000 points by
default (set by their `BuilderConfig`), features float32 of shape (2,) and an
int label; `shapes` has 12000/3000/3000 images and `cluttered_shapes`
20000/5000/5000, under the feature `"image"`.

`load(name, ...)` returns batched, cached, shuffled and optionally augmented
(train only), normalized and prefetched `tf.data.Dataset`s of
`(features, label)` for these and for TFDS catalog data sets (`"mnist"`,
`"fashion_mnist"`, `"cifar10"`, ...), which must be prepared in `data_dir` or
downloadable (`DatasetNotAvailableError` otherwise).

Example:

```python
import keras_mlres.datasets as mlres_datasets

train, val, test = mlres_datasets.load("peaks", batch_size=256)
```
"""

from keras_mlres.datasets.cluttered_shapes import (
    CLASSES as CLUTTERED_SHAPES_CLASSES,
)
from keras_mlres.datasets.cluttered_shapes import ClutteredShapes
from keras_mlres.datasets.cluttered_shapes import ClutteredShapesConfig
from keras_mlres.datasets.cluttered_shapes import make_cluttered_shapes
from keras_mlres.datasets.ellipses import ELLIPSES
from keras_mlres.datasets.ellipses import Ellipses
from keras_mlres.datasets.ellipses import EllipsesConfig
from keras_mlres.datasets.ellipses import ellipses_labels
from keras_mlres.datasets.ellipses import make_ellipses
from keras_mlres.datasets.loading import LOCAL_DATASETS
from keras_mlres.datasets.loading import DatasetNotAvailableError
from keras_mlres.datasets.loading import load
from keras_mlres.datasets.peaks import Peaks
from keras_mlres.datasets.peaks import PeaksConfig
from keras_mlres.datasets.peaks import make_peaks
from keras_mlres.datasets.peaks import peaks_function
from keras_mlres.datasets.peaks import peaks_labels
from keras_mlres.datasets.peaks import peaks_thresholds
from keras_mlres.datasets.shapes import CLASSES as SHAPES_CLASSES
from keras_mlres.datasets.shapes import Shapes
from keras_mlres.datasets.shapes import ShapesConfig
from keras_mlres.datasets.shapes import make_shapes
from keras_mlres.datasets.spiral import Spiral
from keras_mlres.datasets.spiral import SpiralConfig
from keras_mlres.datasets.spiral import make_spiral
from keras_mlres.datasets._points import GeneratedBuilder
from keras_mlres.datasets._points import PointsBuilder
from keras_mlres.datasets._points import PointsConfig

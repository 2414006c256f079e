"""keras_mlres: multilevel (multigrid-in-depth) training of residual networks.

A ResNet stage of K blocks `y <- y + dt * F(y; theta_k)` is the forward-Euler
discretization of an ODE on [0, T]. keras_mlres builds the hierarchy of
shallower networks (K/2, K/4, ... blocks) that discretize the same ODE and
trains the deep network with nonlinear multigrid (MG/OPT) cycles over depth.
"""

from keras_mlres import callbacks
from keras_mlres import cycles
from keras_mlres import datasets
from keras_mlres import export
from keras_mlres import layers
from keras_mlres import models
from keras_mlres import optimizer_state
from keras_mlres import protocol
from keras_mlres import schedules
from keras_mlres import transfer
from keras_mlres.export import load_model
from keras_mlres.hierarchy import Hierarchy
from keras_mlres.model import DEFAULT_SCHEME
from keras_mlres.model import MultilevelModel
from keras_mlres.model import NonFiniteLossError
from keras_mlres.version import __version__

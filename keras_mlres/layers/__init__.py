"""Keras layers for residual ODE networks."""

from keras_mlres.layers.conv_residual_ode_block import ConvResidualODEBlock
from keras_mlres.layers.ode_block import ODEBlock
from keras_mlres.layers.ode_block import WeightSpec
from keras_mlres.layers.ode_stack import ODEStack
from keras_mlres.layers.residual_ode_block import ResidualODEBlock

"""Installs keras_mlres: multilevel (multigrid-in-depth) training for Keras ResNets."""

import pathlib
import re

import setuptools

_HERE = pathlib.Path(__file__).parent
_VERSION = re.search(
    r'__version__ = "([^"]+)"',
    (_HERE / "keras_mlres" / "version.py").read_text(),
).group(1)

setuptools.setup(
    name="keras_mlres",
    version=_VERSION,
    license="Apache-2.0",
    description=(
        "Multilevel (MG/OPT) training of deep residual networks as ODEs, "
        "for Keras 3 on TensorFlow."
    ),
    long_description=(_HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    packages=setuptools.find_packages(include=["keras_mlres", "keras_mlres.*"]),
    python_requires=">=3.10",
    install_requires=[
        "tensorflow>=2.16",
        "keras>=3.3",
        "tensorflow-datasets>=4.9",
        "absl-py>=1.0",
        "matplotlib>=3.7",
        "tensorboard>=2.16",
        # tensorflow-datasets imports it but declares it only for Python < 3.9
        # (tensorflow/datasets#11212).
        "importlib_resources",
    ],
    extras_require={
        "test": [
            "pytest>=7",
            "pytest-xdist>=3",
            "dill",
            # tests/notebooks_test.py runs the Colab tutorials headless.
            "nbclient>=0.7",
            "nbformat>=5",
            "ipykernel>=6",
        ],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Framework :: Keras",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)

"""Checks docs/errors.md's table of bad inputs: each raises its documented error.

Every row is triggered on a fresh, compiled model; the error must be a
ValueError containing the documented text, and the model (weights, optimizer
state, compile settings) must be unchanged afterwards.
"""

import os
import pathlib
import re
import tempfile

import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized

import keras_mlres as mlres

_ERRORS_DOC = (
    pathlib.Path(__file__).resolve().parent.parent / "docs" / "errors.md"
)
_LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _documented_errors():
    """Returns {case: (raised by, message text)} from docs/errors.md's table."""
    rows = {}
    for line in _ERRORS_DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0] not in ("case", "---"):
            case, raised_by, message = cells
            rows[case] = (raised_by.strip("`"), message.strip("`"))
    return rows


def _fine(num_blocks=4):
    keras.utils.set_random_seed(0)
    return mlres.models.dense_ode_resnet(
        (2,), 3, width=4, num_blocks=num_blocks
    )


def _data(n=16):
    rng = np.random.default_rng(0)
    return (
        rng.normal(size=(n, 2)).astype("float32"),
        rng.integers(0, 3, n).astype("int32"),
    )


def _nan_dataset(n):
    """A dataset that its element spec cannot tell from a clean one."""
    return tf.data.Dataset.from_tensor_slices(
        (np.full((n, 2), np.nan, "float32"), _data(n)[1])
    ).batch(4)


def _nested_stage_model():
    inner = keras.Sequential(
        [
            keras.Input((4,)),
            mlres.layers.ODEStack(mlres.layers.ResidualODEBlock(4), 4),
        ]
    )
    return keras.Sequential(
        [keras.Input((2,)), keras.layers.Dense(4), inner, keras.layers.Dense(3)]
    )


def _mixed_float16_model():
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        return mlres.MultilevelModel(_fine(), num_levels=2)
    finally:
        keras.mixed_precision.set_global_policy(previous)


def _optimizer_built_elsewhere():
    optimizer = keras.optimizers.Adam()
    optimizer.build(_fine().trainable_variables)
    return optimizer


# Each trigger takes a compiled two-level model and performs the bad call,
# grouped by the call that must raise.
_FIT_TRIGGERS = {
    "input shape does not match the fine network": lambda m: m.fit(
        np.zeros((16, 3), "float32"), _data()[1], verbose=0
    ),
    "inputs that are not numbers": lambda m: m.fit(
        tf.data.Dataset.from_tensor_slices(
            (np.full((16, 2), "a"), _data()[1])
        ).batch(4),
        verbose=0,
    ),
    "sparse labels outside the classifier's classes": lambda m: m.fit(
        _data()[0], np.full(16, 5, "int32"), verbose=0
    ),
    "empty training data": lambda m: m.fit(
        tf.data.Dataset.from_tensor_slices(_data()).batch(
            32, drop_remainder=True
        ),
        verbose=0,
    ),
    "NaN or Inf inputs": lambda m: m.fit(
        np.full((16, 2), np.nan, "float32"), _data()[1], verbose=0
    ),
    "sparse labels that are not whole numbers (NaN, 1.5)": lambda m: m.fit(
        _data()[0], np.full(16, 1.5), verbose=0
    ),
    "validation data that does not match the fine network": lambda m: m.fit(
        *_data(), validation_data=(np.zeros((8, 3), "float32"), _data(8)[1]),
        verbose=0,
    ),
    "NaN or Inf in a dataset's inputs, or its sparse labels outside the "
    "classes under XLA (at the epoch's end)": lambda m: m.fit(
        _nan_dataset(16), verbose=0
    ),
    "the same in a validation dataset": lambda m: m.fit(
        *_data(), validation_data=_nan_dataset(8), verbose=0
    ),
    "NaN or Inf weights in a checkpoint taken mid-epoch (`ModelCheckpoint` "
    "with `save_freq` in batches)": lambda m: m.fit(
        _nan_dataset(16), verbose=0, callbacks=[
            keras.callbacks.ModelCheckpoint(
                os.path.join(tempfile.mkdtemp(), "never.keras"), save_freq=1
            )
        ],
    ),
}
_CONSTRUCTOR_TRIGGERS = {
    "a model without any `ODEStack`": lambda m: mlres.MultilevelModel(
        keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)])
    ),
    "a stage that cannot be coarsened that often": lambda m: (
        mlres.MultilevelModel(_fine(num_blocks=6), num_levels=3)
    ),
    "an `ODEStack` inside a nested model": lambda m: mlres.MultilevelModel(
        _nested_stage_model()
    ),
    '`cycle="none"` with coarse levels but no nested iteration': lambda m: (
        mlres.MultilevelModel(_fine(), num_levels=2, cycle="none")
    ),
    "`max_level_epochs` without nested iteration": lambda m: (
        mlres.MultilevelModel(_fine(), max_level_epochs=2)
    ),
    "one level and no smoothing steps": lambda m: mlres.MultilevelModel(
        _fine(), num_levels=1, pre_smoothing=0, post_smoothing=0
    ),
    "no smoothing steps and `coarse_steps=0`": lambda m: (
        mlres.MultilevelModel(
            _fine(), pre_smoothing=0, post_smoothing=0, coarse_steps=0
        )
    ),
    "nested iteration with a cycle but no smoothing steps": lambda m: (
        mlres.MultilevelModel(
            _fine(), pre_smoothing=0, post_smoothing=0, nested_iteration=True
        )
    ),
    "an unknown cycle": lambda m: mlres.MultilevelModel(_fine(), cycle="X"),
    "a coarse learning-rate scale other than `'dt'` or a positive number": (
        lambda m: mlres.MultilevelModel(
            _fine(), coarse_learning_rate_scale="dx"
        )
    ),
}
_COMPILE_TRIGGERS = {
    "a loss given by an unknown name": lambda m: m.compile(
        "sgd", loss="crossentropyy"
    ),
    "no loss": lambda m: m.compile("sgd"),
    "`loss_weights` of a type Keras refuses": lambda m: m.compile(
        "sgd", loss=_LOSS, loss_weights=2
    ),
    "a metric given by an unknown name": lambda m: m.compile(
        "sgd", loss=_LOSS, metrics=["acurracy"]
    ),
    "metrics not in a list or dict": lambda m: m.compile(
        "sgd", loss=_LOSS, metrics="accuracy"
    ),
    "an optimizer given by an unknown name": lambda m: m.compile(
        "adamm", loss=_LOSS
    ),
    "an unknown optimizer for a coarse level": lambda m: m.compile(
        "sgd", loss=_LOSS, level_optimizers=["sgdd"]
    ),
    "a wrong number of level optimizers": lambda m: m.compile(
        "sgd", loss=_LOSS, level_optimizers=["sgd", "sgd"]
    ),
    "one optimizer instance for two levels": lambda m: m.compile(
        m.optimizer, loss=_LOSS, level_optimizers=[m.optimizer]
    ),
    "a learning rate given as a lambda, with cloned coarse optimizers": (
        lambda m: m.compile(
            keras.optimizers.SGD(learning_rate=lambda: 0.01), loss=_LOSS
        )
    ),
    "an optimizer already built on other variables": lambda m: m.compile(
        _optimizer_built_elsewhere(), loss=_LOSS
    ),
    'the `"mixed_float16"` dtype policy (use `"mixed_bfloat16"`)': lambda m: (
        _mixed_float16_model().compile("sgd", loss=_LOSS)
    ),
    "an optimizer with `gradient_accumulation_steps` and `num_levels > 1`": (
        lambda m: m.compile(
            keras.optimizers.SGD(gradient_accumulation_steps=2), loss=_LOSS
        )
    ),
    "a `LossScaleOptimizer`, or an optimizer with `loss_scale_factor`": (
        lambda m: m.compile(
            keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD()),
            loss=_LOSS,
        )
    ),
}


def _export_to_the_working_directory(model):
    # From a temporary working directory, so that a regression cannot
    # replace the repository.
    previous = os.getcwd()
    with tempfile.TemporaryDirectory() as directory:
        os.chdir(directory)
        try:
            model.export(".", verbose=False)
        finally:
            os.chdir(previous)


_EXPORT_TRIGGERS = {
    "the working directory or one of its parents as the export path": (
        _export_to_the_working_directory
    ),
}
_DATASET_TRIGGERS = {
    "a config that a local data set does not have": (
        lambda m: mlres.datasets.load("spiral/7")
    ),
}
_TRIGGERS = {
    **_FIT_TRIGGERS,
    **_CONSTRUCTOR_TRIGGERS,
    **_COMPILE_TRIGGERS,
    **_EXPORT_TRIGGERS,
    **_DATASET_TRIGGERS,
}
_RAISED_BY = {
    **{case: "fit" for case in _FIT_TRIGGERS},
    **{case: "MultilevelModel" for case in _CONSTRUCTOR_TRIGGERS},
    **{case: "compile" for case in _COMPILE_TRIGGERS},
    **{case: "export" for case in _EXPORT_TRIGGERS},
    **{case: "datasets.load" for case in _DATASET_TRIGGERS},
}


def _state(model):
    variables = list(model.weights) + list(model.optimizer.variables)
    for optimizer in model.level_optimizers:
        variables += list(optimizer.variables)
    return [np.array(v) for v in variables]


class DocumentedErrorsTest(tf.test.TestCase, parameterized.TestCase):
    def test_table_and_triggers_list_the_same_cases(self):
        rows = _documented_errors()
        self.assertGreaterEqual(len(rows), 10)
        self.assertCountEqual(rows, _TRIGGERS)

    @parameterized.named_parameters(
        (re.sub(r"\W+", "_", case).strip("_"), case) for case in _TRIGGERS
    )
    def test_documented_error(self, case):
        raised_by, message = _documented_errors()[case]
        model = mlres.MultilevelModel(_fine(), num_levels=2)
        model.compile(keras.optimizers.Adam(0.01), loss=_LOSS)
        optimizer, before = model.optimizer, _state(model)
        with self.assertRaisesRegex(ValueError, re.escape(message)):
            _TRIGGERS[case](model)
        self.assertIs(model.optimizer, optimizer)
        self.assertIs(model.loss, _LOSS)
        for after, expected in zip(_state(model), before):
            self.assertAllEqual(after, expected)
        self.assertEqual(raised_by, _RAISED_BY[case])


if __name__ == "__main__":
    tf.test.main()

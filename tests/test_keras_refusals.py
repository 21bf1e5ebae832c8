"""A .keras that needs Python code Keras' safe_mode will not run or cannot find (a subclassed model, a Lambda layer,
an unregistered custom layer) exits 2 naming the class or layer and the way forward (model.export -> SavedModel,
which converts through ONNX), with nothing written at --out."""

from __future__ import annotations

import numpy as np
import pytest


def _models(root):
    import keras

    class MyModel(keras.Model):
        def __init__(self, **kw):
            super().__init__(**kw)
            self.d = keras.layers.Dense(4)

        def call(self, x):
            return self.d(x) * 2.0

    model = MyModel()
    model(np.zeros((1, 8), "float32"))
    model.save(root / "subclassed.keras")
    model.export(str(root / "subclassed_saved_model"), verbose=False)

    @keras.saving.register_keras_serializable(package="user_code")
    class Scale(keras.layers.Layer):
        def call(self, x):
            return x * 3.0

    x = keras.Input((8,), name="x")
    keras.Model(x, Scale(name="my_scale")(keras.layers.Dense(4)(x))).save(root / "custom_layer.keras")
    # registered in the user's code only: porter's process does not run that code
    from keras.src.saving import object_registration

    object_registration.GLOBAL_CUSTOM_OBJECTS.pop("user_code>Scale", None)
    object_registration.GLOBAL_CUSTOM_NAMES.pop(Scale, None)
    x = keras.Input((8,), name="x")
    keras.Model(x, keras.layers.Lambda(lambda t: t * 2.0, name="double")(keras.layers.Dense(4)(x))).save(
        root / "lambda.keras")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("keras_refusals")
    _models(root)
    return root


@pytest.mark.parametrize("name, needles", [
    ("subclassed", ["subclassed Keras model of class 'MyModel'"]),
    ("custom_layer", ["layer 'my_scale'", "class 'Scale'", "custom layer class"]),
    ("lambda", ["layer 'double' is a Lambda layer", "safe_mode"]),
])
def test_code_needing_keras_file_is_refused_with_the_way_forward(name, needles, models, cli, tmp_path):
    out = tmp_path / "out"
    code, text = cli("convert", models / f"{name}.keras", "--from", "tf", "--to", "torch", "--out", out)
    assert code == 2, text
    for needle in needles + ["model.export('DIR')", "SavedModel", "through ONNX"]:
        assert needle in " ".join(text.split()), f"{needle!r} not in {text}"
    assert "Traceback" not in text and "internal error" not in text
    assert not out.exists()


def test_the_way_forward_converts(models, cli, tmp_path):
    """What the refusal points at works: the subclassed model's model.export() folder converts and verifies."""
    code, text = cli("convert", models / "subclassed_saved_model", "--from", "tf", "--to", "torch",
                     "--out", tmp_path / "out")
    assert code == 0 and "PASSED" in text, text


# A Keras 3 .h5 whose mask_zero mask Keras writes as a NotEqual op layer (which its own .h5 loader does not know)
# now converts: tests/test_keras_writer_refusals.py::test_keras3_h5_with_a_mask_op_layer_converts

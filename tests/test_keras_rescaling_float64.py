"""Keras Rescaling in float64 (TensorFlow backend) multiplies by float32(scale): tf.cast of a Python float
goes through a float32 tensor, so Rescaling(1/255) in a float64 Keras model is 6e-8 (relative) off 1/255.
The written torch Rescaling rounds scale and offset the same way; without it a float64 EfficientNetB0 (96 px)
was 2.3e-5 away from Keras float64 on the logits (EfficientNetV2B0 3.9e-5), with it 1.9e-13 / 4.6e-14.
In float32 nothing changes: torch multiplies a float32 tensor by the scalar rounded to float32 anyway."""


import numpy as np
from porter.verifiers.training_float64 import keras_in_float64
from tests_support import load_written_model

import porter


def _model():
    from porter.process.frameworks import keras

    k = keras()
    k.utils.set_random_seed(0)
    image = k.Input((6, 6, 3), name="image")
    x = k.layers.Rescaling(1.0 / 255.0, offset=-0.3, name="rescale")(image)  # neither 1/255 nor 0.3 is a float32
    x = k.layers.Conv2D(4, 3, padding="same", name="conv")(x)
    x = k.layers.GlobalAveragePooling2D(name="pool")(x)
    return k.Model(image, k.layers.Dense(3, name="logits")(x), name="rescale_net")


def _converted(tmp_path):
    model = _model()
    src, out = tmp_path / "rescale_net.keras", tmp_path / "rescale_net-torch"
    model.save(str(src))
    result = porter.convert(str(src), source="tf", target="torch", out=out, atol=1e-6, rtol=0.0)
    assert result.route == "keras layers" and result.passed, result.verification.failures()
    return model, load_written_model(out)


def _pixels():
    return np.random.default_rng(0).uniform(0.0, 255.0, (2, 6, 6, 3)).astype("float32").astype("float64")


def _fp64_gap(model, torch_model) -> float:
    import torch

    wide, why = keras_in_float64(model)
    assert wide is not None, why
    x = _pixels()
    with torch.no_grad():
        got = torch_model.double()(torch.from_numpy(x)).numpy()
    return float(np.abs(got - np.asarray(wide(x))).max())


def test_float32_unchanged_and_float64_exact(tmp_path):
    import torch

    model, torch_model = _converted(tmp_path)
    x = _pixels().astype("float32")
    with torch.no_grad():
        got = torch_model(torch.from_numpy(x)).numpy()
    assert float(np.abs(got - np.asarray(model(x))).max()) <= 1e-6
    assert torch_model.rescale.scale == float(np.float32(1.0 / 255.0))
    assert _fp64_gap(model, torch_model) <= 1e-12


def test_keras_float64_rescaling_is_float32_rounded():
    # the Keras behaviour the fix follows: if a Keras release computes 1/255 exactly in float64, this fails
    wide, _ = keras_in_float64(_model())
    out = np.asarray(wide.get_layer("rescale")(np.full((1, 1, 1, 1), 200.0)))
    assert out.dtype == np.float64
    assert abs(out.item() - (200.0 / 255.0 - 0.3)) > 1e-9
    assert abs(out.item() - (200.0 * float(np.float32(1 / 255)) + float(np.float32(-0.3)))) <= 1e-15


def test_exact_python_scale_is_caught_in_float64(tmp_path):
    # negative: the previous translation (scale 1/255 exactly) is measurably off Keras float64
    model, torch_model = _converted(tmp_path)
    torch_model.rescale.scale, torch_model.rescale.offset = 1.0 / 255.0, -0.3
    assert _fp64_gap(model, torch_model) > 1e-9

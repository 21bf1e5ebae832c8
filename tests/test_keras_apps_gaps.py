"""Layers keras.applications needs beyond the common ones, on the keras layers writer: Cropping1D/2D/3D
(NASNet), Dropout with noise_shape (EfficientNet's per-sample drop), InceptionResNetV2's CustomScaleLayer,
and Normalization's int64 sample count (EfficientNet), which is bookkeeping and must not send the model to
the ONNX route. Tiny models, compared with Keras at 1e-5 (fp32)."""


import numpy as np
import pytest
from tests_support import convert_keras_strict, load_written_model

import porter


def _keras():
    from porter.process.frameworks import keras

    return keras()


def _load(out):
    return load_written_model(out), (out / "model.py").read_text()


def _gaps_model():
    from keras.src.applications.inception_resnet_v2 import CustomScaleLayer

    k = _keras()
    k.utils.set_random_seed(3)
    image = k.Input((9, 11, 3), name="image")
    x = k.layers.Normalization(axis=-1, mean=[0.1, -0.2, 0.3], variance=[1.5, 0.5, 2.0], name="norm")(image)
    x = k.layers.Conv2D(6, 3, padding="same", name="conv")(x)
    # asymmetric on both axes, a non-square input: a swapped or mirrored crop changes the numbers
    x = k.layers.Cropping2D(((1, 2), (0, 3)), name="crop2d")(x)  # (6, 8, 6)
    y = k.layers.Conv2D(6, 1, name="branch")(x)
    x = CustomScaleLayer(0.17, name="scaled_residual")([x, y])
    x = k.layers.Dropout(0.3, noise_shape=(None, 1, 1, 1), name="drop_path")(x)
    seq = k.layers.Reshape((6, 48), name="rows")(x)
    seq = k.layers.Cropping1D((2, 1), name="crop1d")(seq)  # (3, 48)
    vol = k.layers.Reshape((3, 4, 12, 1), name="vol")(seq)
    vol = k.layers.Cropping3D(((0, 1), (1, 1), (2, 3)), name="crop3d")(vol)  # (2, 2, 7, 1)
    flat = k.layers.Flatten(name="flat")(vol)
    return k.Model(image, k.layers.Dense(4, name="logits")(flat), name="gaps_net")


def test_cropping_dropout_noise_shape_custom_scale_and_normalization(tmp_path):
    out, result = convert_keras_strict(_gaps_model(), tmp_path)
    assert result.route == "keras layers", result.report.get("route_reason")
    assert result.passed, result.verification.failures()
    assert max(result.verification.worst().values()) <= 1e-5
    _, code = _load(out)
    assert "[:, :, 1:-2, 0:-3]" in code and "[:, :, 2:-1]" in code and "[:, :, 0:-1, 1:-1, 2:-3]" in code
    assert "scaled_residual = (crop2d + branch * 0.17)" in code
    assert "self.drop_path = KerasDropout(0.3, (None, 1, 1, 1))" in code


def test_wrong_crop_or_scale_would_be_caught(tmp_path):
    """The comparison above can fail: the same model with the crop mirrored (written by hand into model.py)
    differs from Keras by far more than 1e-5."""
    import torch

    model = _gaps_model()
    out, result = convert_keras_strict(model, tmp_path)
    assert result.passed
    torch_model, code = _load(out)
    x = np.random.default_rng(0).standard_normal((2, 9, 11, 3)).astype("float32")
    want = np.asarray(model(x))
    with torch.no_grad():
        got = torch_model(torch.from_numpy(x)).numpy()
    assert np.abs(got - want).max() <= 1e-5
    (out / "model.py").write_text(code.replace("[:, :, 1:-2, 0:-3]", "[:, :, 2:-1, 0:-3]"))
    mirrored, _ = _load(out)
    with torch.no_grad():
        bad = mirrored(torch.from_numpy(x)).numpy()
    assert np.abs(bad - want).max() > 1e-3


def test_keras_dropout_drops_whole_samples_in_train_only(tmp_path):
    import torch

    out, _ = convert_keras_strict(_gaps_model(), tmp_path)
    torch_model, _ = _load(out)
    drop = torch_model.drop_path
    assert isinstance(drop, torch.nn.Dropout) and drop.p == pytest.approx(0.3)  # verify --train zeroes it
    torch.manual_seed(0)
    x = torch.ones(400, 6, 5, 7)
    drop.train()
    y = drop(x)
    per_sample = y.flatten(1)
    # one mask value per sample (noise_shape (None, 1, 1, 1)): each sample all 0 or all 1 / 0.7
    assert torch.all(per_sample.amin(1) == per_sample.amax(1))
    kept = per_sample[:, 0][per_sample[:, 0] != 0]
    assert torch.allclose(kept, torch.full_like(kept, 1 / 0.7))
    assert 0.2 < float((per_sample[:, 0] == 0).float().mean()) < 0.4
    drop.eval()
    assert torch.equal(drop(x), x)


def test_dropout_noise_shape_axes_follow_channels_first():
    """A per-channel mask in Keras (None, 1, 1, C) is (None, C, 1, 1) on the channels-first tensor."""
    from porter.keras_to_torch.codegen import plan_model

    k = _keras()
    image = k.Input((5, 5, 3), name="image")
    x = k.layers.Conv2D(4, 3, name="conv")(image)
    x = k.layers.Dropout(0.5, noise_shape=(None, 1, 1, 4), name="channel_drop")(x)
    plan = plan_model(k.Model(image, x))
    assert not plan.unsupported
    assert plan.emits["channel_drop"].module == "KerasDropout(0.5, (None, 4, 1, 1))"


def test_refusals_are_named():
    """channels_first cropping and a float16 weight stay refused (the integer-count exemption is for integer
    variables only), so such models take the ONNX route with the reason."""
    from porter.keras_to_torch.codegen import plan_model

    k = _keras()
    image = k.Input((3, 6, 6), name="image")
    x = k.layers.Cropping2D(1, data_format="channels_first", name="crop_cf")(image)
    x = k.layers.Flatten(name="flat")(x)
    x = k.layers.Dense(2, dtype="float16", name="half")(x)
    text = "; ".join(plan_model(k.Model(image, x)).unsupported)
    assert "layer 'crop_cf' (Cropping2D): data_format='channels_first'" in text
    assert "weights of dtype ['float16']" in text


@pytest.mark.slow
def test_nasnet_mobile_converts_structurally(tmp_path):
    """keras.applications.NASNetMobile (64 px, weights=None, 10 classes): its Cropping2D layers and 188 batch
    norms on the keras layers route. Batch norms calibrated on inputs in its preprocess range [-1, 1] (random
    init otherwise leaves the logits barely depending on the input), then their statistics perturbed;
    verified on other inputs at 1e-4 (logits)."""
    k = _keras()
    k.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    model = k.applications.NASNetMobile(weights=None, input_shape=(64, 64, 3), classes=10, classifier_activation=None)
    norms = [layer for layer in model.layers if isinstance(layer, k.layers.BatchNormalization)]
    momentum = [layer.momentum for layer in norms]
    for layer in norms:
        layer.momentum = 0.0
    model(rng.uniform(-1, 1, (16, 64, 64, 3)).astype("float32"), training=True)
    for layer, value in zip(norms, momentum):
        layer.momentum = value
        mean, var = layer.moving_mean.numpy(), layer.moving_variance.numpy()
        layer.moving_mean.assign(mean + 0.1 * np.sqrt(var) * rng.standard_normal(mean.shape).astype("float32"))
        layer.moving_variance.assign(var * rng.uniform(0.8, 1.25, var.shape).astype("float32"))
    src, out, npz = tmp_path / "nasnet.keras", tmp_path / "nasnet-torch", tmp_path / "inputs.npz"
    model.save(str(src))
    np.savez(npz, **{model.layers[0].name: rng.uniform(-1, 1, (3, 64, 64, 3)).astype("float32")})
    result = porter.convert(str(src), source="tf", target="torch", out=out, inputs=str(npz), atol=1e-4, rtol=0.0)
    assert result.route == "keras layers" and result.passed, result.verification.failures()
    logits = np.asarray(model(np.load(npz)[model.layers[0].name]))
    assert np.std(logits - logits.mean(0)) > 1e-3  # the logits depend on the input: the check means something
    assert "KerasBatchNorm2d(" in (out / "model.py").read_text() and "[:, :, 1:" in (out / "model.py").read_text()

"""`porter verify --train` takes its step in float64 (verifiers/training_float64.py says why: in float32,
ReLU6 masks flipped by noise made MobileNetV2's gradients differ by 0.3 within Keras itself).

The model here is MobileNetV2's block in small: ZeroPadding + a stride-2 depthwise conv, BatchNorm with
Keras' momentum 0.999 / eps 1e-3 on 3x3 maps, ReLU(6), a 1x1 expand/project and an Add residual, global
average pooling. In float64 the step agrees to ~1e-13, so the 1e-4 tolerance has room for nothing but a
real difference: a BatchNorm normalising with the unbiased variance, or one weight moved by 1e-3, fails."""

import shutil

import numpy as np
import pytest

import porter
from test_keras_structure import _calibrate_and_perturb


def _mini_mobilenet():
    from porter.process.frameworks import keras

    k = keras()
    k.utils.set_random_seed(3)
    image = k.Input((12, 12, 3), name="image")
    x = k.layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False, name="stem")(image)
    x = k.layers.BatchNormalization(momentum=0.999, epsilon=1e-3, name="stem_bn")(x)
    x = k.layers.ReLU(6.0, name="stem_relu")(x)
    x = k.layers.ZeroPadding2D(((0, 1), (0, 1)), name="pad")(x)
    x = k.layers.DepthwiseConv2D(3, strides=2, padding="valid", use_bias=False, name="dw")(x)
    x = k.layers.BatchNormalization(momentum=0.999, epsilon=1e-3, name="dw_bn")(x)
    x = k.layers.ReLU(6.0, name="dw_relu")(x)
    skip = x
    x = k.layers.Conv2D(16, 1, use_bias=False, name="expand")(x)
    x = k.layers.BatchNormalization(momentum=0.999, epsilon=1e-3, name="expand_bn")(x)
    x = k.layers.ReLU(6.0, name="expand_relu")(x)
    x = k.layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw2")(x)
    x = k.layers.BatchNormalization(momentum=0.999, epsilon=1e-3, name="dw2_bn")(x)
    x = k.layers.ReLU(6.0, name="dw2_relu")(x)
    x = k.layers.Conv2D(8, 1, use_bias=False, name="project")(x)
    x = k.layers.BatchNormalization(momentum=0.999, epsilon=1e-3, name="project_bn")(x)
    x = k.layers.Add(name="add")([skip, x])
    x = k.layers.GlobalAveragePooling2D(name="gap")(x)
    logits = k.layers.Dense(5, name="logits")(x)
    return _calibrate_and_perturb(k.Model(image, logits, name="mini_mobilenet"), (12, 12, 3), seed=3)


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mini")
    path = folder / "mini.keras"
    _mini_mobilenet().save(str(path))
    out = folder / "mini-torch"
    result = porter.convert(str(path), source="tf", target="torch", out=out)
    assert result.route == "keras layers" and result.passed, result.verification.failures()
    return path, out


def test_the_step_is_float64_and_agrees_far_inside_the_tolerance(mini):
    from porter.verifiers.training import verify_training

    path, out = mini
    result = verify_training(path, out, lr=0.1)
    assert result.passed, result.to_dict()
    assert result.dtype == "float64" and result.to_dict()["tolerance"]["dtype"] == "float64"
    assert result.loss["abs_diff"] <= 1e-12 and result.loss["reference"] > 0.1
    assert result.outputs["logits"]["max_abs"] <= 1e-10
    grads = {g.layer: g.max_abs for g in result.groups if g.kind == "gradient"}
    assert set(grads) == {"stem", "stem_bn", "dw", "dw_bn", "expand", "expand_bn", "dw2", "dw2_bn", "project",
                          "project_bn", "logits"}
    assert max(grads.values()) <= 1e-10, grads
    assert max(g.max_abs for g in result.groups if g.kind == "running statistic") <= 1e-12
    assert any("in float64" in n for n in result.notes)
    assert result.forward["compared"] >= 15 and result.forward["max_abs"] <= 1e-12
    assert result.forward["first_diverging"] is None and result.first_diverging_layer is None


def _edited_copy(out, tmp_path, old, new):
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    code = (bad / "model.py").read_text()
    assert code.count(old) == 1, old
    (bad / "model.py").write_text(code.replace(old, new))
    return bad


def test_a_batch_norm_normalising_with_the_unbiased_variance_fails(mini, tmp_path):
    """torch's nn.BatchNorm keeps the unbiased variance for running_var; normalising with it (144/143 times
    the biased one on 4x6x6 elements) is the convention slip the check must catch."""
    from porter.verifiers.training import verify_training

    path, out = mini
    bad = _edited_copy(out, tmp_path, "var = torch.square(x - mean.detach().view(shape)).mean(dims)",
                       "var = x.var(dims, unbiased=True)")
    result = verify_training(path, bad, lr=0.1, trust_model_code=True)
    assert not result.passed
    assert result.first_diverging_layer == "stem_bn"  # every gradient differs; the training-mode forward localises
    assert result.forward["first_diverging"]["layer"] == "stem_bn" and result.forward["first_diverging"]["max_abs"] > 1e-3
    grads = {g.layer: g.max_abs for g in result.groups if g.kind == "gradient"}
    assert grads["stem_bn"] > 1e-3 and result.outputs["logits"]["max_abs"] > 1e-4
    stats = {g.layer: g.max_abs for g in result.groups if g.kind == "running statistic"}
    assert stats["stem_bn"] > 1e-6  # running_var took the unbiased variance too


def test_epsilon_outside_the_square_root_fails(mini, tmp_path):
    from porter.verifiers.training import verify_training

    path, out = mini
    bad = _edited_copy(out, tmp_path, "inv = torch.rsqrt(var + bn.eps)", "inv = 1.0 / (torch.sqrt(var) + bn.eps)")
    result = verify_training(path, bad, lr=0.1, trust_model_code=True)
    assert not result.passed and result.first_diverging_layer == "stem_bn"
    assert result.outputs["logits"]["max_abs"] > 1e-4


def test_a_depthwise_weight_moved_by_1e_3_fails(mini, tmp_path):
    from safetensors.numpy import load_file, save_file

    from porter.verifiers.training import verify_training

    path, out = mini
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    weights = load_file(str(bad / "model.safetensors"))
    weights["dw2.weight"] = weights["dw2.weight"].copy()
    weights["dw2.weight"].flat[4] += 1e-3
    save_file(weights, str(bad / "model.safetensors"))
    result = verify_training(path, bad, lr=0.1)
    assert not result.passed and result.first_diverging_layer == "dw2"
    failed = {(g.layer, g.kind) for g in result.groups if not g.passed}
    assert ("dw2", "weight before the step") in failed and ("stem", "gradient") in failed


def test_float32_on_request_and_when_float64_is_not_possible(mini, monkeypatch):
    from porter.errors import PorterError
    from porter.verifiers import training_float64
    from porter.verifiers.training import verify_training

    path, out = mini
    result = verify_training(path, out, lr=0.1, dtype="float32")
    assert result.dtype == "float32" and result.to_dict()["tolerance"]["dtype"] == "float32"
    assert result.passed and result.loss["abs_diff"] <= 1e-5  # a model this small has no ReLU6 input near a kink
    with pytest.raises(PorterError, match="neither float32 nor float64"):
        verify_training(path, out, dtype="float16")
    monkeypatch.setattr(training_float64, "keras_in_float64", lambda model: (None, "it cannot be rebuilt (test)"))
    result = verify_training(path, out, lr=0.1)
    assert result.dtype == "float32"
    assert any("taken in float32" in n and "cannot be rebuilt (test)" in n for n in result.notes), result.notes


def test_keras_in_float64_keeps_the_weights_and_the_outputs(mini):
    from porter.process.frameworks import keras
    from porter.verifiers.training_float64 import keras_in_float64

    path, _ = mini
    model = keras().models.load_model(str(path))
    wide, why = keras_in_float64(model)
    assert why is None and {str(v.dtype) for v in wide.weights} == {"float64"}
    for a, b in zip(model.weights, wide.weights):
        assert a.path == b.path and np.array_equal(np.asarray(a.numpy(), np.float64), b.numpy())
    x = np.random.default_rng(0).normal(size=(2, 12, 12, 3))
    narrow, wide_out = np.asarray(model(x.astype("float32"))), np.asarray(wide(x))
    assert wide_out.dtype == np.float64 and np.abs(narrow - wide_out).max() <= 1e-5
    assert not np.array_equal(narrow.astype(np.float64), wide_out)  # really computed in float64

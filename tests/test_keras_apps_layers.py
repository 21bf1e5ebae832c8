"""The keras layers writer on what keras.applications models are made of beyond plain layers: keras.ops
calls in the functional graph (MobileNetV3's hard sigmoid ``relu6(x + 3) * (1/6)``, ConvNeXt's residual
``x + y``), a Sequential nested in the model (ConvNeXt's stem) and ConvNeXt's LayerScale. Tiny models; each
converts on the keras layers route and matches Keras, and what cannot be written is named, not guessed."""

import numpy as np
import pytest
from tests_support import convert_keras_strict, load_written_model


def _keras():
    from porter.process.frameworks import keras

    return keras()


def _ops_model():
    k = _keras()
    k.utils.set_random_seed(0)
    image = k.Input((8, 8, 3), name="image")
    x = k.layers.Conv2D(6, 3, padding="same", name="conv")(image)  # channels-first inside the torch model
    gate = k.layers.ReLU(6.0, name="gate_relu6")(x + 3.0) * (1.0 / 6.0)  # keras.ops calls, not layers
    x = x * gate
    x = 2.0 - x  # a constant on the left: order kept (2 - x, not x - 2)
    x = x / 4.0
    x = k.layers.GlobalAveragePooling2D(name="pool")(x)
    return k.Model(image, k.layers.Dense(4, name="logits")(x), name="ops_net")


def _convnext_like():
    from keras.src.applications.convnext import LayerScale

    k = _keras()
    k.utils.set_random_seed(1)
    image = k.Input((16, 16, 3), name="image")
    stem = k.Sequential([k.layers.Conv2D(8, 4, strides=4, name="stem_conv"),
                         k.layers.LayerNormalization(epsilon=1e-6, name="stem_norm")], name="stem")
    x = stem(image)
    y = k.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    y = k.layers.Dense(16, name="pw1")(y)
    y = k.layers.Activation("gelu", name="gelu")(y)
    y = k.layers.Dense(8, name="pw2")(y)
    scale = LayerScale(1e-6, 8, name="layer_scale")
    y = scale(y)
    scale.set_weights([np.linspace(0.5, 1.5, 8).astype("float32")])  # not its init 1e-6: the scale must matter
    x = x + y  # keras.ops add of two graph tensors
    x = k.layers.GlobalAveragePooling2D(name="pool")(x)
    return k.Model(image, k.layers.Dense(3, name="logits")(x), name="convnext_like")


def test_keras_ops_with_constants_convert_structurally(tmp_path):
    out, result = convert_keras_strict(_ops_model(), tmp_path)
    assert result.route == "keras layers" and result.passed, result.verification.failures()
    assert max(result.verification.worst().values()) <= 1e-5
    code = (out / "model.py").read_text()
    assert "(conv + 3.0)" in code and "* 0.16666666666666666)" in code
    assert "(2.0 - " in code and "/ 4.0)" in code


def test_nested_sequential_and_layer_scale(tmp_path):
    import torch

    out, result = convert_keras_strict(_convnext_like(), tmp_path)
    assert result.route == "keras layers" and result.passed, result.verification.failures()
    assert max(result.verification.worst().values()) <= 1e-5
    code = (out / "model.py").read_text()
    assert "self.stem_conv = nn.Conv2d(3, 8" in code and "self.stem_norm = nn.LayerNorm(8" in code
    assert "self.layer_scale = LayerScale(8)" in code
    model = load_written_model(out)
    params = dict(model.named_parameters())
    assert params["layer_scale.gamma"].requires_grad  # trainable in Keras, a parameter here
    assert torch.allclose(params["layer_scale.gamma"], torch.linspace(0.5, 1.5, 8))


def test_unwritable_op_is_named_and_a_shared_sequential_is_not():
    """A keras.ops call with an array constant: the plan names it, so the model takes the ONNX route with the
    reason instead of a guessed translation; the Sequential called twice is written (a shared nested model)."""
    from porter.keras_to_torch.codegen import plan_model

    k = _keras()
    image = k.Input((4, 4, 2), name="image")
    x = image + np.ones((4, 4, 2), dtype="float32")
    block = k.Sequential([k.layers.Dense(2, name="inner")], name="shared_block")
    y = block(block(x))
    plan = plan_model(k.Model(image, y))
    text = "; ".join(plan.unsupported)
    assert "(op.Add): a constant operand that is no Python number" in text
    assert "shared_block" not in text


@pytest.mark.parametrize("cls", ["op.Add", "op.Subtract", "op.Multiply", "op.Divide", "op.TrueDivide"])
def test_binary_ops_registered_apart_from_merge_layers(cls):
    from porter.keras_to_torch import layers as L
    from porter.keras_to_torch.codegen import plan_model  # noqa: F401 (imports the ops translators)

    assert L.TRANSLATORS[cls] is not L.TRANSLATORS["Add"]

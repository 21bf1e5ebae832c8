"""porter.graph_to_tf on small torch models: MLP and CNN through a reloaded SavedModel at three
shapes, the registry's rules, the unsupported-op listing and the first-divergence helper."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
tf = pytest.importorskip("tensorflow")

from torch.export import Dim

from porter.errors import PorterError, UnsupportedModelError
from porter.graph_to_tf import convert_exported, first_divergence


class MLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = torch.nn.Linear(8, 16), torch.nn.Linear(16, 4)

    def forward(self, x):
        return torch.softmax(self.fc2(torch.nn.functional.gelu(self.fc1(x))), dim=-1)


class CNN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.conv2 = torch.nn.Conv2d(8, 8, 3, stride=2, groups=2)
        self.fc = torch.nn.Linear(8, 5)

    def forward(self, x):
        x = torch.nn.functional.max_pool2d(torch.relu(self.bn(self.conv(x))), 2)
        x = torch.nn.functional.adaptive_avg_pool2d(self.conv2(x), 1)
        return self.fc(x.flatten(1))


def _informative(model):
    torch.manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.3)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.normal_(1, 0.2)
                m.bias.normal_(0, 0.2)
    return model.eval()


def _max_errors(model, saved_dir, shapes):
    serve = tf.saved_model.load(str(saved_dir)).signatures["serving_default"]
    errors = []
    for shape in shapes:
        x = torch.randn(*shape)
        with torch.no_grad():
            want = model(x).numpy()
        errors.append(float(np.abs(serve(x=tf.constant(x.numpy()))["output"].numpy() - want).max()))
    return errors


def test_mlp_dynamic_batch(tmp_path):
    torch.manual_seed(0)
    model = MLP().eval()
    ep = torch.export.export(model, (torch.randn(3, 8),), dynamic_shapes={"x": {0: Dim("batch", max=1024)}})
    converted = convert_exported(ep, tmp_path / "mlp")
    assert converted.input_names == ["x"] and converted.output_names == ["output"]
    assert list(converted.dynamic_dims["x"]) == [0] and converted.static_dims["x"] == {1: 8}
    assert max(_max_errors(model, tmp_path / "mlp", [(3, 8), (1, 8), (7, 8)])) <= 1e-5


def test_cnn_dynamic_batch_and_spatial(tmp_path):
    torch.manual_seed(0)
    model = _informative(CNN())
    auto = {0: Dim.AUTO, 2: Dim.AUTO, 3: Dim.AUTO}
    ep = torch.export.export(model, (torch.randn(2, 3, 16, 16),), dynamic_shapes={"x": auto})
    converted = convert_exported(ep, tmp_path / "cnn")
    assert sorted(converted.dynamic_dims["x"]) == [0, 2, 3]
    signatures = tf.saved_model.load(str(tmp_path / "cnn")).signatures
    assert list(signatures) == ["serving_default"]  # no integer inputs: no serving_int64
    spec = signatures["serving_default"].structured_input_signature[1]["x"]
    assert spec.shape.as_list() == [None, 3, None, None] and spec.dtype == tf.float32
    assert max(_max_errors(model, tmp_path / "cnn", [(2, 3, 16, 16), (1, 3, 20, 24), (5, 3, 17, 13)])) <= 1e-5


def test_duplicate_registration_raises():
    from porter.graph_to_tf.registry import register, registered

    assert torch.ops.aten.add.Tensor in registered()
    with pytest.raises(PorterError, match="registered twice"):
        register(torch.ops.aten.add.Tensor)(lambda x, other, alpha=1: x)


class Spectral(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(8, 8)

    def forward(self, x):
        spectrum = torch.fft.rfft(self.proj(x), dim=-1).abs()
        again = torch.fft.rfft(x, dim=-1).abs()
        return spectrum + again + torch.special.bessel_j0(x[..., :5])


def test_unsupported_ops_are_listed_at_once():
    ep = torch.export.export(Spectral().eval(), (torch.randn(2, 8),))
    with pytest.raises(UnsupportedModelError) as info:
        convert_exported(ep)
    text = str(info.value)
    assert "aten._fft_r2c.default x2" in text, text
    assert "aten.special_bessel_j0.default x1" in text, text
    assert info.value.exit_code == 2 and info.value.hint


def test_first_divergence_names_the_node():
    torch.manual_seed(0)
    model = MLP().eval()
    x = torch.randn(3, 8)
    ep = torch.export.export(model, (x,))
    converted = convert_exported(ep)
    assert first_divergence(ep, converted, {"x": x.numpy()}) is None
    converted.module.weights["fc2.bias"].assign_add(tf.fill([4], 0.5))
    found = first_divergence(ep, converted, {"x": x.numpy()})
    assert found is not None and found.op == "aten.linear.default" and found.module_path == "fc2", found
    assert found.max_abs > 0.1


def test_names_can_be_given_for_a_positional_wrapper():
    torch.manual_seed(0)
    ep = torch.export.export(MLP().eval(), (torch.randn(3, 8),))
    converted = convert_exported(ep, input_names=["features"], output_names=["probabilities"])
    assert converted.input_names == ["features"]
    out = converted(features=np.ones((3, 8), np.float32))
    assert list(out) == ["probabilities"] and out["probabilities"].shape == (3, 4)


@pytest.mark.parametrize("additive", [False, True])
def test_attention_row_with_every_key_masked_gives_zeros_as_torch(additive):
    """torch's scaled_dot_product_attention gives a query whose every key is masked zeros (a padded row under a
    sliding window: Gemma3's right-padded prompts), not the NaN of a plain softmax; the other rows are exact."""

    class Attend(torch.nn.Module):
        def forward(self, q, k, v, mask):
            m = torch.where(mask, 0.0, float("-inf")) if additive else mask
            return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=m)

    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 2, 3, 4) for _ in range(3))
    mask = torch.tensor([[True, False, False], [False, False, False], [True, True, False]])
    ep = torch.export.export(Attend(), (q, k, v, mask))
    got = convert_exported(ep)(q=q.numpy(), k=k.numpy(), v=v.numpy(), mask=mask.numpy())["output"]
    want = Attend()(q, k, v, mask).numpy()
    assert np.isfinite(got).all() and not got[:, :, 1].any()
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)

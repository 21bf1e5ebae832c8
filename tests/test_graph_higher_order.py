"""Higher-order ops torch.export keeps (wrap_with_set_grad_enabled, wrap_with_autocast): their bodies convert
inline, so a model that uses them is converted as exported (no run_decompositions re-trace)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("tensorflow")

from torch.export import Dim  # noqa: E402

from porter.errors import UnsupportedModelError  # noqa: E402
from porter.graph_to_tf import convert_exported  # noqa: E402
from porter.graph_to_tf.decompositions import converts_as_exported  # noqa: E402


class Rotary(torch.nn.Module):
    """transformers' rotary embedding in miniature: cos/sin computed under no_grad from a buffer."""

    def __init__(self):
        super().__init__()
        self.register_buffer("inv_freq", torch.linspace(0.1, 1.3, 4), persistent=False)
        self.proj = torch.nn.Linear(8, 8)

    def forward(self, x, positions):
        with torch.no_grad():
            angles = positions[..., None].float() * self.inv_freq
            cos, sin = torch.cat([angles, angles], -1).cos(), torch.cat([angles, angles], -1).sin()
        return self.proj(x) * cos + x * sin


class Autocast(torch.nn.Module):
    def __init__(self, enabled: bool):
        super().__init__()
        self.enabled = enabled
        self.proj = torch.nn.Linear(8, 8)

    def forward(self, x):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.enabled):
            return self.proj(x).float() * 2


def _targets(program) -> set[str]:
    return {str(node.target) for node in program.graph.nodes if node.op == "call_function"}


def test_no_grad_region_converts_as_exported():
    torch.manual_seed(0)
    model = Rotary().eval()
    x, pos = torch.randn(2, 5, 8), torch.arange(5).repeat(2, 1)
    seq = Dim("seq", min=2, max=64)
    ep = torch.export.export(model, (x, pos), dynamic_shapes=({1: seq}, {1: seq}))
    assert any("wrap_with_set_grad_enabled" in t for t in _targets(ep)), "the test needs the higher-order op"
    assert converts_as_exported(ep)
    converted = convert_exported(ep, input_names=["x", "positions"])
    for length in (3, 11):  # a dynamic sequence the export did not see
        x, pos = torch.randn(2, length, 8), torch.arange(length).repeat(2, 1)
        want = model(x, pos).detach().numpy()
        got = next(iter(converted(x=x.numpy(), positions=pos.numpy()).values()))
        assert got.shape == want.shape
        assert np.abs(got - want).max() < 1e-5


def test_disabled_autocast_converts_and_enabled_is_refused():
    torch.manual_seed(0)
    x = torch.randn(3, 8)
    off = Autocast(enabled=False).eval()
    ep = torch.export.export(off, (x,))
    converted = convert_exported(ep, input_names=["x"])
    got = next(iter(converted(x=x.numpy()).values()))
    assert np.abs(got - off(x).detach().numpy()).max() < 1e-5

    on = torch.export.export(Autocast(enabled=True).eval(), (x,))
    if not any("wrap_with_autocast" in t for t in _targets(on)):
        pytest.skip("this torch inlines enabled autocast regions")
    assert not converts_as_exported(on)
    with pytest.raises(UnsupportedModelError) as info:
        from porter.graph_to_tf.check import check_supported

        check_supported(on.graph)
    assert "autocast" in " ".join(info.value.problems)

"""The composite ops torch.export keeps (linear, layer_norm, conv, flatten, matmul, transpose, to, ...): a graph
whose every op has a converter is converted as exported, without run_decompositions, and must give what the
decomposed graph gives; a graph that mutates a buffer, or holds an op without a converter, is still decomposed.
Transposed convolution (1-D, 2-D, groups, output_padding) is checked against torch at a batch and size never
traced."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")


class _Composite(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.conv1 = torch.nn.Conv1d(8, 8, 3, padding=2, dilation=2)
        self.norm = torch.nn.LayerNorm(8)
        self.lin = torch.nn.Linear(8, 5)
        self.drop = torch.nn.Dropout(0.3)

    def forward(self, x):
        h = torch.nn.functional.silu(self.conv(x))  # (b, 8, h, w)
        seq = torch.flatten(h, 2)  # (b, 8, h*w)
        seq = self.conv1(seq).transpose(1, 2)  # (b, h*w, 8)
        seq = self.drop(self.norm(seq))
        scores = torch.matmul(seq, seq.transpose(-1, -2)).softmax(-1)
        mixed = (scores @ seq).to(torch.float64).to(torch.float32)
        return self.lin(mixed)


def _export(module, x, dims):
    spec = {axis: torch.export.Dim(f"d{axis}", min=2, max=64) for axis in dims}
    return torch.export.export(module.eval(), (x,), dynamic_shapes=(spec,))


def _perturbed(module):
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.3)
    return module


def test_a_graph_of_composite_ops_converts_as_exported_and_matches_torch():
    from porter.graph_to_tf import convert_exported
    from porter.graph_to_tf.decompositions import converts_as_exported

    torch.manual_seed(0)
    module = _perturbed(_Composite())
    program = _export(module, torch.randn(2, 3, 6, 5), (0, 2, 3))
    assert converts_as_exported(program)
    ops = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert {"aten.linear.default", "aten.layer_norm.default", "aten.conv2d.default"} <= ops  # not decomposed
    converted = convert_exported(program)
    decomposed = convert_exported(program.run_decompositions())
    for shape in ((3, 3, 7, 4), (5, 3, 4, 9)):  # sizes torch.export never traced
        x = np.random.default_rng(shape[0]).standard_normal(shape).astype(np.float32)
        want = module(torch.from_numpy(x)).detach().numpy()
        got = next(iter(converted(**{converted.input_names[0]: x}).values()))
        again = next(iter(decomposed(**{decomposed.input_names[0]: x}).values()))
        assert np.abs(got - want).max() <= 1e-5 and np.abs(again - want).max() <= 1e-5


def test_a_program_that_mutates_a_buffer_is_decomposed():
    from porter.graph_to_tf.decompositions import converts_as_exported

    class Counter(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 4)
            self.register_buffer("calls", torch.zeros(()))

        def forward(self, x):
            self.calls.add_(1)
            return self.lin(x) + self.calls

    program = torch.export.export(Counter().eval(), (torch.randn(2, 4),))
    assert not converts_as_exported(program)
    plain = torch.export.export(torch.nn.Linear(4, 4).eval(), (torch.randn(2, 4),))
    assert converts_as_exported(plain)


def test_dropout_in_training_mode_is_not_converted_as_identity():
    from porter.graph_to_tf.decompositions import converts_as_exported

    program = torch.export.export(torch.nn.Dropout(0.5).train(), (torch.randn(2, 4),))
    assert not converts_as_exported(program)


@pytest.mark.parametrize("layer, shape", [
    (lambda: torch.nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1), (2, 4, 7, 9)),
    (lambda: torch.nn.ConvTranspose2d(4, 6, (2, 3), stride=(2, 1), padding=(0, 1), groups=2), (2, 4, 5, 6)),
    (lambda: torch.nn.ConvTranspose1d(4, 3, 4, stride=3, padding=2, output_padding=2), (2, 4, 11)),
], ids=["2d-output-padding", "2d-groups", "1d"])
def test_transposed_convolution_matches_torch(layer, shape):
    from porter.graph_to_tf import convert_exported

    torch.manual_seed(0)
    module = layer().eval()
    converted = convert_exported(_export(module, torch.randn(*shape), (0, 2)))
    for batch, grow in ((3, 3), (5, 1)):
        x = np.random.default_rng(batch).standard_normal((batch, shape[1], shape[2] + grow, *shape[3:])).astype(np.float32)
        want = module(torch.from_numpy(x)).detach().numpy()
        got = next(iter(converted(**{converted.input_names[0]: x}).values()))
        assert got.shape == want.shape and np.abs(got - want).max() <= 1e-5
    # the negative: a transposed kernel gives a different result (the check above can fail)
    with torch.no_grad():
        module.weight.copy_(module.weight.flip(-1))
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    assert np.abs(module(torch.from_numpy(x)).detach().numpy()
                  - next(iter(converted(**{converted.input_names[0]: x}).values()))).max() > 1e-3

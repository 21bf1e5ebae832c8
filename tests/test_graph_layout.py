"""Channels-last twins (porter/graph_to_tf/layout.py): a conv/BN/ReLU/residual/pool network keeps one transpose
into its NHWC stretch and one out of it, not a pair per op, and still gives torch's outputs at sizes never traced.
The negative: with the twins off, every conv and pool pays its own pair."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
tf = pytest.importorskip("tensorflow")


def _block(c):
    return torch.nn.Sequential(torch.nn.Conv2d(c, c, 3, padding=1), torch.nn.BatchNorm2d(c), torch.nn.ReLU(),
                               torch.nn.Conv2d(c, c, 3, padding=1, groups=2), torch.nn.BatchNorm2d(c))


class _ResNetish(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.pool = torch.nn.MaxPool2d(2)
        self.blocks = torch.nn.ModuleList([_block(8) for _ in range(3)])
        self.head = torch.nn.Linear(8, 5)

    def forward(self, x):
        h = self.pool(torch.relu(self.stem(x)))
        for block in self.blocks:
            h = torch.relu(h + block(h))
        return self.head(torch.nn.functional.adaptive_avg_pool2d(h, 1).flatten(1))


def _live_transposes_of_activations(converted) -> int:
    graph = converted.module.serve.get_concrete_function().graph
    live, stack = set(), [t.op for t in graph.outputs]
    while stack:
        op = stack.pop()
        if op.name not in live:
            live.add(op.name)
            stack.extend(i.op for i in op.inputs)
    return sum(op.type == "Transpose" and op.name in live and op.inputs[0].op.type != "ReadVariableOp"
               for op in graph.get_operations())


@pytest.fixture(scope="module")
def resnetish():
    torch.manual_seed(0)
    model = _ResNetish().eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
    dims = {0: torch.export.Dim("batch", min=1, max=32), 2: torch.export.Dim("h", min=8, max=128)}
    return model, torch.export.export(model, (torch.randn(2, 3, 32, 24),), dynamic_shapes=({**dims},))


def test_one_transpose_into_and_out_of_the_nhwc_stretch(resnetish):
    from porter.graph_to_tf import convert_exported

    model, program = resnetish
    converted = convert_exported(program)
    # in: the image; out: the pooled features read as NCHW by the head (7 convs and a pool in between)
    assert _live_transposes_of_activations(converted) <= 2
    for shape in ((3, 3, 40, 24), (1, 3, 64, 24)):
        x = np.random.default_rng(shape[0]).standard_normal(shape).astype(np.float32)
        want = model(torch.from_numpy(x)).detach().numpy()
        got = next(iter(converted(**{converted.input_names[0]: x}).values()))
        assert np.abs(got - want).max() <= 1e-5


def test_without_twins_every_nhwc_op_pays_a_pair(resnetish, monkeypatch):
    from porter.graph_to_tf import convert_exported, layout

    _, program = resnetish
    monkeypatch.setattr(layout, "twin", lambda x: None)
    assert _live_transposes_of_activations(convert_exported(program)) >= 2 * 8

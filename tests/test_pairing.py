"""Inputs and outputs whose names differ (issue 8): paired by position when the counts match and
said so, --map / map = {...} by hand, refused when counts differ or a pairing would cross names.

The pair: a .pt2 of a small MLP (torch.export names its input ``input``, its output ``linear_1``)
and the same weights as an ONNX graph written with onnx.helper (input ``x``, output ``y``).
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from porter.errors import PorterError
from porter.verifiers.pairing import pair
from tests_support import BATCH, save_pt2

BIAS_SHIFT = 1e-3  # the perturbed candidate's last bias: far outside fp32 tolerances, small enough to miss by eye


def _mlp():
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3)).eval()


def _onnx(path, mlp, *, input_name="x", output_name="y", bias_shift=0.0, extra_input=None):
    """The MLP as Gemm -> Tanh -> Gemm; ``extra_input``: a second input added to the result."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w1, b1 = mlp[0].weight.detach().numpy(), mlp[0].bias.detach().numpy()
    w2, b2 = mlp[2].weight.detach().numpy(), mlp[2].bias.detach().numpy() + np.float32(bias_shift)
    inits = [numpy_helper.from_array(a.astype(np.float32), n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"))]
    last = output_name if extra_input is None else "pre"
    nodes = [
        helper.make_node("Gemm", [input_name, "w1", "b1"], ["h"], transB=1),
        helper.make_node("Tanh", ["h"], ["t"]),
        helper.make_node("Gemm", ["t", "w2", "b2"], [last], transB=1),
    ]
    inputs = [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["batch", 6])]
    if extra_input is not None:
        nodes.append(helper.make_node("Add", ["pre", extra_input], [output_name]))
        inputs.append(helper.make_tensor_value_info(extra_input, TensorProto.FLOAT, ["batch", 3]))
    graph = helper.make_graph(nodes, "mlp", inputs, [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["batch", 3])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def pair_files(tmp_path_factory):
    import torch

    root = tmp_path_factory.mktemp("pairing")
    mlp = _mlp()
    files = {
        "pt2": save_pt2(mlp, torch.randn(2, 6), root / "model.pt2", BATCH),
        "onnx": _onnx(root / "model.onnx", mlp),
        "perturbed": _onnx(root / "perturbed.onnx", mlp, bias_shift=BIAS_SHIFT),
        "two_inputs": _onnx(root / "two.onnx", mlp, extra_input="z"),
        "root": root,
    }
    return files


def test_pt2_and_onnx_with_other_names_verify_by_position(cli, pair_files, tmp_path):
    report = tmp_path / "r.json"
    code, out = cli("verify", pair_files["pt2"], pair_files["onnx"], "--report", report)
    assert code == 0, out
    assert "inputs paired by position: input -> x" in out
    assert "outputs paired by position: linear_1 -> y" in out
    data = json.loads(report.read_text())
    assert "inputs paired by position: input -> x" in data["notes"]
    outputs = [o for s in data["shapes"] for o in s["outputs"]]
    assert len(outputs) == 2  # batch 2 and 4 (the .pt2's batch is dynamic)
    assert max(o["max_abs"] for o in outputs) < 1e-5


def test_perturbed_candidate_still_fails_when_paired_by_position(pair_files):
    import porter

    result = porter.verify(pair_files["pt2"], pair_files["perturbed"])
    assert not result
    assert "inputs paired by position: input -> x" in result.notes
    errors = [o.max_abs for s in result.shapes for o in s.outputs]
    assert all(abs(e - BIAS_SHIFT) < 1e-4 for e in errors), errors  # the shift itself, at every shape


def test_map_pairs_names_by_hand(cli, pair_files):
    code, out = cli("verify", pair_files["pt2"], pair_files["onnx"], "--map", "input=x", "--map", "linear_1=y")
    assert code == 0, out
    assert "inputs paired by --map: input -> x" in out and "outputs paired by --map: linear_1 -> y" in out
    assert "by position" not in out


def test_map_in_the_python_api_and_check_toml(cli, pair_files, tmp_path):
    import porter

    assert porter.verify(pair_files["pt2"], pair_files["onnx"], name_map={"input": "x", "linear_1": "y"})
    toml = tmp_path / "porter.toml"
    toml.write_text(f'[[verify]]\nreference = "{pair_files["pt2"]}"\ncandidate = "{pair_files["onnx"]}"\n'
                    'map = { input = "x", linear_1 = "y" }\n')
    code, out = cli("check", toml)
    assert code == 0, out
    assert "inputs paired by --map: input -> x" in out


@pytest.mark.parametrize("mapping, needles", [
    ("input=zz", ["no input or output 'zz'", "inputs ['x']", "outputs ['y']"]),
    ("nope=x", ["reference", "no input or output 'nope'", "inputs ['input']"]),
    ("input=y", ["pairs an input with an output"]),
    ("input", ["is not REF=CAND"]),
])
def test_bad_map_is_a_usage_error(cli, pair_files, mapping, needles, tmp_path):
    code, out = cli("verify", pair_files["pt2"], pair_files["onnx"], "--map", mapping, "--report", tmp_path / "r.json")
    assert code == 2, out
    for needle in needles:
        assert needle in out, out
    assert not (tmp_path / "r.json").exists()


def test_counts_that_differ_are_refused_with_both_lists(cli, pair_files):
    code, out = cli("verify", pair_files["pt2"], pair_files["two_inputs"])
    assert code == 2, out
    assert "different inputs (1 and 2)" in out
    assert "['input']" in out and "['x', 'z']" in out


def _runner(inputs, outputs, specs=None):
    return SimpleNamespace(name="m", input_names=inputs, output_names=outputs, input_specs=specs or {})


def test_same_names_pair_by_name_without_a_note():
    p = pair(_runner(["a", "b"], ["y"]), _runner(["b", "a", "optional"], ["y"]))
    assert p.inputs == {"a": "a", "b": "b"} and not p.notes and not p.renames


def test_a_name_both_have_at_other_positions_is_never_crossed():
    with pytest.raises(PorterError, match="cannot be paired by position"):
        pair(_runner(["a", "b"], ["y"]), _runner(["b", "c"], ["y"]))


def test_position_pairing_refuses_other_dtypes_or_ranks():
    ref = _runner(["ids", "mask"], ["y"], {"ids": ("int64", (None, None)), "mask": ("int64", (None, None))})
    cand = _runner(["pixels", "m"], ["y"], {"pixels": ("float32", (None, 3, 8, 8)), "m": ("int64", (None, None))})
    with pytest.raises(PorterError, match="another dtype or rank"):
        pair(ref, cand)

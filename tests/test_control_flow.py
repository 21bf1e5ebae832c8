"""ONNX control flow (Loop, Scan, If) -> torch: hand-built graphs against onnxruntime, and the
written model.py (bodies as classes of their own, runtime helpers copied in) run without porter."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from tests_support import run_onnx

from porter.errors import UnsupportedModelError
from porter.onnx_to_torch import onnx_to_torch, write_torch_package

ATOL = 1e-5
F, I64, B = TensorProto.FLOAT, TensorProto.INT64, TensorProto.BOOL


def _value(name, elem, shape):
    return helper.make_tensor_value_info(name, elem, shape)


def _model(graph, opset=17):
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    return model


def _ort(model, feeds):
    return run_onnx(model, feeds)


def _check(model, feeds, gm=None):
    gm = gm or onnx_to_torch(model)
    with torch.no_grad():
        got = gm(*[torch.from_numpy(v) for v in feeds.values()])
    got = got if isinstance(got, tuple) else (got,)
    want = _ort(model, feeds)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert tuple(g.shape) == w.shape
        np.testing.assert_allclose(g.numpy(), w, atol=ATOL, rtol=0)
    return gm


def _loop_model():
    """y = x; for i < M while sum(y) < limit: y = y * w + (i if i is even else -i) (an If inside the
    body that reads the outer x); the loop stacks y at each step. x, w, M and limit are graph inputs."""
    then_g = helper.make_graph([helper.make_node("Add", ["y_in", "i_f"], ["then_out"])], "then", [],
                               [_value("then_out", F, [2, 3])])
    else_g = helper.make_graph([helper.make_node("Sub", ["y_in", "i_f"], ["e0"]),
                                helper.make_node("Add", ["e0", "x"], ["e1"]),
                                helper.make_node("Sub", ["e1", "x"], ["else_out"])], "else", [],
                               [_value("else_out", F, [2, 3])])
    body = helper.make_graph(
        [
            helper.make_node("Cast", ["i"], ["i_f"], to=F),
            helper.make_node("Mul", ["y", "w"], ["y_in"]),
            helper.make_node("Mod", ["i", "two"], ["parity"]),
            helper.make_node("Equal", ["parity", "zero"], ["even"]),
            helper.make_node("If", ["even"], ["y_out"], then_branch=then_g, else_branch=else_g),
            helper.make_node("ReduceSum", ["y_out"], ["total"], keepdims=0),
            helper.make_node("Less", ["total", "limit"], ["cond_out"]),
            helper.make_node("Identity", ["y_out"], ["scan_out"]),
        ],
        "body",
        [_value("i", I64, []), _value("cond_in", B, []), _value("y", F, [2, 3])],
        [_value("cond_out", B, []), _value("y_out", F, [2, 3]), _value("scan_out", F, [2, 3])],
        initializer=[numpy_helper.from_array(np.array(2, np.int64), "two"),
                     numpy_helper.from_array(np.array(0, np.int64), "zero")],
    )
    graph = helper.make_graph(
        [helper.make_node("Loop", ["M", "", "x"], ["y_final", "ys"], body=body)],
        "loop",
        [_value("M", I64, []), _value("x", F, [2, 3]), _value("w", F, [2, 3]), _value("limit", F, [])],
        [_value("y_final", F, [2, 3]), _value("ys", F, [None, 2, 3])],
    )
    return _model(graph)


def _loop_feeds(trips, limit=1e6):
    rng = np.random.default_rng(0)
    return {"M": np.array(trips, np.int64), "x": rng.standard_normal((2, 3)).astype(np.float32),
            "w": (rng.standard_normal((2, 3)) * 0.5).astype(np.float32), "limit": np.array(limit, np.float32)}


def test_loop_with_a_run_time_trip_count_and_a_scan_output():
    model = _loop_model()
    gm = _check(model, _loop_feeds(5))
    _check(model, _loop_feeds(1), gm)
    _check(model, _loop_feeds(0), gm)  # never runs: the scan output is empty, shaped [0, 2, 3]
    _check(model, _loop_feeds(9, limit=3.0), gm)  # cond stops it early
    body = [m for m in gm.children() if isinstance(m, torch.fx.GraphModule)]
    assert len(body) == 1 and len([m for m in body[0].children() if isinstance(m, torch.fx.GraphModule)]) == 2


def test_if_on_a_run_time_condition_reads_outer_tensors():
    w = numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(2, 3), "w")
    then_g = helper.make_graph([helper.make_node("Add", ["x", "y"], ["t"])], "then", [], [_value("t", F, [2, 3])])
    else_g = helper.make_graph([helper.make_node("Mul", ["x", "w"], ["e0"]),
                                helper.make_node("Relu", ["e0"], ["e"])], "else", [], [_value("e", F, [2, 3])],
                               initializer=[])
    graph = helper.make_graph(
        [helper.make_node("If", ["c"], ["out"], then_branch=then_g, else_branch=else_g),
         helper.make_node("Tanh", ["out"], ["z"])],
        "if",
        [_value("c", B, []), _value("x", F, [2, 3]), _value("y", F, [2, 3])],
        [_value("z", F, [2, 3])],
        initializer=[w],
    )
    model = _model(graph)
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((2, 3)).astype(np.float32), rng.standard_normal((2, 3)).astype(np.float32)
    gm = _check(model, {"c": np.array(True), "x": x, "y": y})
    _check(model, {"c": np.array(False), "x": x, "y": y}, gm)
    # under torch.export the helper becomes torch.cond: both branches stay in the program
    args = (torch.tensor(True), torch.from_numpy(x), torch.from_numpy(y))
    exported = torch.export.export(gm, args).module()
    for c in (True, False):
        args = (torch.tensor(c),) + args[1:]
        torch.testing.assert_close(exported(*args), gm(*args), atol=ATOL, rtol=0)


def test_if_on_a_constant_condition_is_inlined():
    then_g = helper.make_graph([helper.make_node("Neg", ["x"], ["t"])], "then", [], [_value("t", F, [3])])
    else_g = helper.make_graph([helper.make_node("Abs", ["x"], ["e"])], "else", [], [_value("e", F, [3])])
    graph = helper.make_graph(
        [helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(np.array(False), "c")),
         helper.make_node("If", ["c"], ["out"], then_branch=then_g, else_branch=else_g)],
        "if_const", [_value("x", F, [3])], [_value("out", F, [3])])
    model = _model(graph)
    gm = _check(model, {"x": np.array([-1.0, 2.0, -3.0], np.float32)})
    assert not any(isinstance(m, torch.fx.GraphModule) for m in gm.children())
    assert "torch.abs" in gm.code or "abs" in gm.code


def _scan_model():
    """A running sum over axis 1 of x, scanned backwards, plus each step's state scaled by an outer s;
    the per-step outputs stack along axis 1."""
    body = helper.make_graph(
        [helper.make_node("Add", ["acc", "xt"], ["acc_out"]),
         helper.make_node("Mul", ["acc_out", "s"], ["step"])],
        "scan_body",
        [_value("acc", F, [2]), _value("xt", F, [2])],
        [_value("acc_out", F, [2]), _value("step", F, [2])],
    )
    graph = helper.make_graph(
        [helper.make_node("Scan", ["init", "x"], ["final", "steps"], body=body, num_scan_inputs=1,
                          scan_input_axes=[1], scan_input_directions=[1], scan_output_axes=[1])],
        "scan",
        [_value("init", F, [2]), _value("x", F, [2, None]), _value("s", F, [2])],
        [_value("final", F, [2]), _value("steps", F, [2, None])],
    )
    return _model(graph)


def test_scan():
    rng = np.random.default_rng(2)
    model = _scan_model()
    feeds = {"init": rng.standard_normal(2).astype(np.float32), "x": rng.standard_normal((2, 7)).astype(np.float32),
             "s": rng.standard_normal(2).astype(np.float32)}
    gm = _check(model, feeds)
    feeds["x"] = rng.standard_normal((2, 3)).astype(np.float32)
    _check(model, feeds, gm)


def test_an_unsupported_op_inside_a_body_is_reported():
    body = helper.make_graph([helper.make_node("NoSuchOp", ["y"], ["y_out"], domain="custom"),
                              helper.make_node("Identity", ["cond_in"], ["cond_out"])], "body",
                             [_value("i", I64, []), _value("cond_in", B, []), _value("y", F, [2])],
                             [_value("cond_out", B, []), _value("y_out", F, [2])])
    graph = helper.make_graph([helper.make_node("Loop", ["M", "", "x"], ["y"], body=body)], "g",
                              [_value("M", I64, []), _value("x", F, [2])], [_value("y", F, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("custom", 1)])
    with pytest.raises(UnsupportedModelError, match="custom.NoSuchOp"):
        onnx_to_torch(model)


def test_written_loop_model_runs_without_porter(tmp_path):
    model = _loop_model()
    gm = onnx_to_torch(model)
    folder = tmp_path / "pkg"
    write_torch_package(gm, folder)
    source = (folder / "model.py").read_text()
    assert "def onnx_loop(" in source and "def onnx_if(" in source
    assert "porter" not in source.replace("by porter", "")
    feeds = _loop_feeds(4)
    torch.save({k: torch.from_numpy(v) for k, v in feeds.items()}, tmp_path / "in.pt")
    np.save(tmp_path / "want.npy", _ort(model, feeds)[1])
    script = textwrap.dedent(f"""
        import sys, numpy, torch
        sys.path.insert(0, {str(folder)!r})
        import model
        m = model.load()
        feeds = torch.load({str(tmp_path / 'in.pt')!r})
        y_final, ys = m(*feeds.values())
        numpy.testing.assert_allclose(ys.numpy(), numpy.load({str(tmp_path / 'want.npy')!r}), atol={ATOL}, rtol=0)
        assert not any(name.startswith("porter") for name in sys.modules), "model.py imported porter"
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path,
                            env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr

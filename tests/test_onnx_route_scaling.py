"""What keeps the ONNX route to TF bounded on bert-base-sized graphs (benchmarks/onnx_route_scaling.py measures it):
onnx2tf first without its per-op layout search (and again with it when the result disagrees with onnxruntime),
no onnx-simplifier on porter's own optimized torch exports, shape probes without model copies, a SavedModel
that does not serialise the Keras model, and library temp files kept in a marked folder."""

import json
import os
import tempfile

import numpy as np
import pytest

from porter.errors import PorterError
from porter.routes import onnx_to_tf
from porter.routes.to_onnx import OPTIMIZED_MARK


def _linear_onnx(path, marked=False):
    """y = x @ W + b with a dynamic batch: [batch, 4] -> [batch, 3]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w, b = rng.standard_normal((4, 3)).astype(np.float32), rng.standard_normal(3).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["y"])], "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    if marked:
        helper.set_model_props(model, {OPTIMIZED_MARK: "test"})
    onnx.save(model, str(path))
    return w, b


def _attempts(monkeypatch) -> list[bool]:
    """The op_search flag of every onnx2tf call."""
    calls, real = [], onnx_to_tf._onnx2tf

    def spy(*args, op_search=True, **kwargs):
        calls.append(op_search)
        return real(*args, op_search=op_search, **kwargs)

    monkeypatch.setattr(onnx_to_tf, "_onnx2tf", spy)
    return calls


def _serve(folder, x):
    from porter.process.frameworks import tensorflow

    tf = tensorflow()
    return tf.saved_model.load(str(folder)).signatures["serving_default"](x=tf.constant(x))["y"].numpy()


def test_fast_attempt_is_checked_and_kept(tmp_path, monkeypatch):
    w, b = _linear_onnx(tmp_path / "m.onnx", marked=True)
    calls = _attempts(monkeypatch)
    info = onnx_to_tf.onnx_to_saved_model(tmp_path / "m.onnx", tmp_path / "sm")
    assert calls == [False]  # one onnx2tf run, without the layout search
    assert info["static_dims"] == []
    x = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
    np.testing.assert_allclose(_serve(tmp_path / "sm", x), x @ w + b, rtol=1e-6, atol=1e-6)
    import onnx2tf.onnx2tf as onnx2tf_main
    from onnx2tf.utils.common_functions import dummy_onnx_inference

    assert onnx2tf_main.dummy_onnx_inference is dummy_onnx_inference  # onnx2tf is left as it was


def test_disagreeing_fast_attempt_is_redone_with_the_search(tmp_path, monkeypatch):
    w, b = _linear_onnx(tmp_path / "m.onnx", marked=True)
    calls = _attempts(monkeypatch)
    real, checks = onnx_to_tf._agrees_at_other_sizes, []

    def first_disagrees(*args, **kwargs):
        checks.append(1)
        if len(checks) == 1:
            raise PorterError("the onnx2tf model disagrees with onnxruntime on y")
        return real(*args, **kwargs)

    monkeypatch.setattr(onnx_to_tf, "_agrees_at_other_sizes", first_disagrees)
    info = onnx_to_tf.onnx_to_saved_model(tmp_path / "m.onnx", tmp_path / "sm")
    assert calls == [False, True] and len(checks) == 2  # the second attempt is held to the same check
    assert info["static_dims"] == []
    import onnx2tf.onnx2tf as onnx2tf_main
    from onnx2tf.utils.common_functions import dummy_onnx_inference

    assert onnx2tf_main.dummy_onnx_inference is dummy_onnx_inference  # restored for the search attempt
    x = np.random.default_rng(2).standard_normal((2, 4)).astype(np.float32)
    np.testing.assert_allclose(_serve(tmp_path / "sm", x), x @ w + b, rtol=1e-6, atol=1e-6)


def test_both_attempts_disagreeing_fall_back_to_fixed_dims(tmp_path, monkeypatch):
    """Negative: a model that never agrees with onnxruntime at other sizes is not kept dynamic."""
    _linear_onnx(tmp_path / "m.onnx", marked=True)
    calls = _attempts(monkeypatch)

    def disagrees(*args, **kwargs):
        raise PorterError("the onnx2tf model disagrees with onnxruntime on y")

    monkeypatch.setattr(onnx_to_tf, "_agrees_at_other_sizes", disagrees)
    info = onnx_to_tf.onnx_to_saved_model(tmp_path / "m.onnx", tmp_path / "sm", example={"x": np.zeros((2, 4), np.float32)})
    assert calls == [False, True, True]  # fast, with the search, then the static retry (which has its search on)
    assert info["static_dims"] == [{"input": "x", "axis": 0, "size": 2}]


def test_saved_model_does_not_serialise_the_keras_model(tmp_path):
    """Tracking the onnx2tf Keras model made TF write its config, every weight as JSON (bert-base: > 9.5 GB)."""
    from tensorflow.core.protobuf import saved_model_pb2

    _linear_onnx(tmp_path / "m.onnx", marked=True)
    onnx_to_tf.onnx_to_saved_model(tmp_path / "m.onnx", tmp_path / "sm")
    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((tmp_path / "sm" / "saved_model.pb").read_bytes())
    nodes = saved.meta_graphs[0].object_graph_def.nodes
    identifiers = {n.user_object.identifier for n in nodes if n.WhichOneof("kind") == "user_object"}
    assert not any(i.startswith("_tf_keras") for i in identifiers), identifiers
    assert not (tmp_path / "sm" / "keras_metadata.pb").exists()


@pytest.mark.parametrize("marked", [True, False])
def test_onnxsim_runs_only_on_graphs_porter_did_not_optimise(tmp_path, monkeypatch, marked):
    import subprocess

    _linear_onnx(tmp_path / "m.onnx", marked=marked)
    ran, real = [], subprocess.run

    def spy(cmd, *args, **kwargs):
        ran.append(cmd)
        return real(cmd, *args, **kwargs)

    monkeypatch.setattr(subprocess, "run", spy)
    prepared, _ = onnx_to_tf._prepared_for_dynamic_dims(tmp_path / "m.onnx", {"x": ("float32", (None, 4))})
    assert prepared.is_file()
    simplifier = [c for c in ran if "onnxsim" in c]
    assert (simplifier == []) if marked else (len(simplifier) == 1)


def test_torch_export_is_marked_optimised(tmp_path):
    import onnx
    import torch

    from porter.routes.to_onnx import torch_to_onnx

    torch_to_onnx(torch.nn.Linear(4, 3).eval(), (torch.randn(2, 4),), ["x"], ["y"], tmp_path / "m.onnx")
    props = {p.key: p.value for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
    assert "optimize=True" in props[OPTIMIZED_MARK]


def test_shape_probes_share_a_session_and_leave_the_model_as_it_was(tmp_path):
    import onnx

    from porter.routes.onnx_fix_shapes import _run

    w, b = _linear_onnx(tmp_path / "m.onnx")
    model = onnx.load(str(tmp_path / "m.onnx"))
    before = model.SerializeToString()
    feeds = [{"x": np.ones((n, 4), np.float32)} for n in (2, 3)]
    first, second = _run(model, ["xw", "y"], *feeds)
    assert model.SerializeToString() == before  # the asked tensors were outputs only while serialised
    assert first["xw"].shape == (2, 3) and second["y"].shape == (3, 3)
    np.testing.assert_allclose(second["y"], np.ones((3, 4)) @ w + b, rtol=1e-6)


def test_library_temp_files_go_to_a_marked_folder_removed_after(tmp_path, monkeypatch):
    from porter.output import outdir

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with pytest.raises(RuntimeError):
        with outdir.temp_files_marked("porter-onnx2tf-") as work:
            assert tempfile.gettempdir() == str(work) and work.parent == tmp_path
            owner = json.loads((work / outdir.OWNER).read_text())
            assert owner["pid"] == os.getpid()  # swept by the next run if this one is killed
            with tempfile.NamedTemporaryFile(prefix="__autograph_generated_file", suffix=".py", delete=False) as f:
                assert os.path.dirname(f.name) == str(work)
            raise RuntimeError("interrupted")
    assert tempfile.gettempdir() == str(tmp_path) and not work.exists()
    assert os.listdir(tmp_path) == []

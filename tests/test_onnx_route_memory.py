"""What keeps the ONNX route's memory near the weights' size (benchmarks/onnx_route_scaling.py measures it on
bert-base): the torch model is freed after the export, the prepared graph is written without a second copy of
the weights, shape inference and probes work on a copy without them, and onnx2tf's weights end up as SavedModel
variables rather than graph constants."""

import gc
import weakref

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from tests_support import run_onnx

from porter.routes.onnx_graph import (
    big_initializers,
    save_with_weights,
    with_inferred_shapes,
    with_weights,
    without_weights,
)


def _mlp(hidden=64):
    """x [batch, 32] -> MatMul(W1) -> Relu -> MatMul(W2) -> Reshape to [batch, 2, 8] (a computed-free target)."""
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((32, hidden)).astype(np.float32)
    w2 = rng.standard_normal((hidden, 16)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("MatMul", ["r", "w2"], ["y2"]), helper.make_node("Reshape", ["y2", "shape"], ["y"])],
        "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2, 8])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2"),
         numpy_helper.from_array(np.array([-1, 2, 8], np.int64), "shape")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    return model


def _run(model, x):
    return run_onnx(model, {"x": x})[0]


def test_weights_leave_the_light_copy_and_come_back():
    model = _mlp()
    weights = big_initializers(model)
    assert sorted(t.name for t in weights) == ["w1", "w2"]  # the 3-element shape stays a constant
    helper.set_model_props(model, {"porter-mark": "kept"})
    light = without_weights(model)
    assert [t.name for t in light.graph.initializer] == ["shape"]
    assert {p.key: p.value for p in light.metadata_props} == {"porter-mark": "kept"}  # every other field comes along
    assert light.opset_import == model.opset_import and light.ir_version == model.ir_version
    assert {"w1", "w2"} <= {i.name for i in light.graph.input}
    x = np.random.default_rng(1).standard_normal((3, 32)).astype(np.float32)
    back = with_weights(light, weights)
    onnx.checker.check_model(back)
    assert [i.name for i in back.graph.input] == ["x"]
    np.testing.assert_array_equal(_run(back, x), _run(model, x))


def test_the_prepared_file_is_the_merged_model(tmp_path):
    """save_with_weights writes the graph and then each weight as a fragment; onnx reads back the same model."""
    model = _mlp()
    path = tmp_path / "m.onnx"
    save_with_weights(without_weights(model), big_initializers(model), path)
    read = onnx.load(str(path))
    onnx.checker.check_model(read)
    assert sorted(t.name for t in read.graph.initializer) == ["shape", "w1", "w2"]
    assert [i.name for i in read.graph.input] == ["x"]
    x = np.random.default_rng(2).standard_normal((5, 32)).astype(np.float32)
    np.testing.assert_array_equal(_run(read, x), _run(model, x))


def test_weights_past_the_inline_limit_go_to_external_data(tmp_path):
    """Protobuf cannot read a file over 2 GB: past the limit the weights are written beside the graph."""
    model = _mlp()
    path = tmp_path / "m.onnx"
    save_with_weights(without_weights(model), big_initializers(model), path, inline_limit=0)
    assert (tmp_path / "m.onnx.data").stat().st_size == sum(t.raw_data.__len__() for t in big_initializers(model))
    assert path.stat().st_size < 2048  # the graph only
    onnx.checker.check_model(str(path))
    read = onnx.load(str(path))  # loads the external data
    x = np.random.default_rng(4).standard_normal((2, 32)).astype(np.float32)
    np.testing.assert_array_equal(_run(read, x), _run(model, x))


def test_a_weight_the_graph_no_longer_uses_is_not_written(tmp_path):
    model = _mlp()
    light = without_weights(model)
    unused = numpy_helper.from_array(np.ones((64, 64), np.float32), "dead")
    save_with_weights(light, [*big_initializers(model), unused], tmp_path / "m.onnx")
    assert "dead" not in {t.name for t in onnx.load(str(tmp_path / "m.onnx")).graph.initializer}


def test_shape_inference_fills_unknown_dims_without_the_weights():
    model = _mlp()
    h = helper.make_tensor_value_info("h", TensorProto.FLOAT, [None, None])  # known rank, unknown dims
    model.graph.value_info.append(h)
    typed = with_inferred_shapes(model)
    shapes = {v.name: [d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim] for v in typed.graph.value_info}
    assert shapes["h"] == ["batch", 64] and shapes["y2"] == ["batch", 16]
    assert len(typed.graph.initializer) == 3  # the weights are still there, untouched


def test_torch_export_does_not_keep_the_torch_model_alive(tmp_path):
    """onnxscript's rewrite rules kept the last matched graph, whose initializers reference the torch
    parameters: bert-base's 440 MB outlived its export."""
    import torch

    from porter.routes.to_onnx import torch_to_onnx

    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 4)).eval()
    alive = weakref.ref(net[0].weight)
    torch_to_onnx(net, (torch.randn(2, 8),), ["x"], ["y"], tmp_path / "m.onnx")
    del net
    gc.collect()
    assert alive() is None


@pytest.mark.slow
def test_onnx2tf_weights_are_saved_model_variables(tmp_path):
    """onnx2tf hands its MatMul weights to op layers as constants; in the SavedModel they are variables (a graph
    with them inline grew by their size, and past 2 GB could not be written)."""
    from porter.process.frameworks import tensorflow
    from porter.routes.onnx_to_tf import onnx_to_saved_model

    tf = tensorflow()
    model = _mlp(hidden=256)
    onnx.save(model, str(tmp_path / "m.onnx"))
    onnx_to_saved_model(tmp_path / "m.onnx", tmp_path / "tf")
    weights_bytes = sum(t.raw_data.__len__() for t in big_initializers(model))
    assert (tmp_path / "tf" / "saved_model.pb").stat().st_size < weights_bytes / 2
    loaded = tf.saved_model.load(str(tmp_path / "tf"))
    stored = tf.train.list_variables(str(tmp_path / "tf" / "variables" / "variables"))
    assert sum(int(np.prod(shape)) for _, shape in stored) >= 32 * 256 + 256 * 16
    x = np.random.default_rng(3).standard_normal((4, 32)).astype(np.float32)
    got = loaded.signatures["serving_default"](x=tf.constant(x))["y"].numpy()
    np.testing.assert_allclose(got, _run(model, x), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_onnx2tf_reads_a_prepared_graph_with_external_weights(tmp_path, monkeypatch):
    """The prepared file onnx2tf reads, with its weights as external data (as a graph over 2 GB is written)."""
    import functools

    from porter.process.frameworks import tensorflow
    from porter.routes import onnx_to_tf

    tf = tensorflow()
    monkeypatch.setattr(onnx_to_tf, "save_with_weights", functools.partial(save_with_weights, inline_limit=0))
    model = _mlp(hidden=256)
    onnx.save(model, str(tmp_path / "m.onnx"))
    onnx_to_tf.onnx_to_saved_model(tmp_path / "m.onnx", tmp_path / "tf")
    assert (tmp_path / "m.for-onnx2tf.onnx.data").is_file()
    loaded = tf.saved_model.load(str(tmp_path / "tf"))
    x = np.random.default_rng(5).standard_normal((3, 32)).astype(np.float32)
    got = loaded.signatures["serving_default"](x=tf.constant(x))["y"].numpy()
    np.testing.assert_allclose(got, _run(model, x), rtol=1e-5, atol=1e-5)


def _external(model, folder):
    folder.mkdir()
    onnx.save(model, str(folder / "m.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="m.weights")  # onnx keeps tensors under 1 KB (the Reshape shape) inline
    return folder / "m.onnx"


def test_an_onnx_file_with_external_weights_converts_with_them(cli, tmp_path):
    """The weights of a model over 2 GB live beside its .onnx file; the route copies them with it."""
    src = _external(_mlp(), tmp_path / "src")
    out = tmp_path / "torch"
    code, output = cli("convert", str(src), "--from", "onnx", "--to", "torch", "--out", str(out))
    assert code == 0 and "verified" in output, output


def test_external_weights_that_are_not_there_are_named(cli, tmp_path):
    src = _external(_mlp(), tmp_path / "src")
    (tmp_path / "src" / "m.weights").unlink()
    code, output = cli("convert", str(src), "--from", "onnx", "--to", "torch", "--out", str(tmp_path / "torch"))
    text = " ".join(output.split())
    assert code == 2 and "m.onnx" in text and "Traceback" not in text, text
    assert not (tmp_path / "torch").exists()


def test_torch_export_keeps_weights_external_and_the_onnx_output_is_one_file(tmp_path):
    """torch_to_onnx writes the weights as external data (serialising them inline peaked at 5 copies of the
    weights: bert-base 0.5 -> 2.75 GB); `--to onnx` still writes one self-contained model.onnx below 2 GB."""
    import torch

    from porter.routes.onnx_graph import write_onnx_output
    from porter.routes.to_onnx import torch_to_onnx

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.GELU(), torch.nn.Linear(64, 8)).eval()
    x = torch.randn(3, 32)
    work = tmp_path / "work" / "model.onnx"
    work.parent.mkdir()
    torch_to_onnx(net, (x,), ["x"], ["y"], work)
    graph = onnx.load(str(work), load_external_data=False).graph
    assert any(t.data_location == TensorProto.EXTERNAL for t in graph.initializer)
    out = tmp_path / "out" / "model.onnx"
    out.parent.mkdir()
    write_onnx_output(work, out)
    assert [p.name for p in out.parent.iterdir()] == ["model.onnx"]
    single = onnx.load(str(out), load_external_data=False)
    assert not any(t.data_location == TensorProto.EXTERNAL for t in single.graph.initializer)
    expected = net(x).detach().numpy()
    np.testing.assert_allclose(run_onnx(single, {"x": x.numpy()})[0], expected, rtol=1e-5, atol=1e-6)


def test_the_batch_only_graph_is_written_without_a_merged_copy(tmp_path, monkeypatch):
    """_batch_kept (onnx2tf could not keep every dynamic dim) fixes the other dims in a copy of the graph; that copy
    is written by save_with_weights (onnx.save cannot write over 2 GB): the same weights, the same outputs."""
    from porter.errors import PorterError
    from porter.routes import onnx_to_tf

    rng = np.random.default_rng(1)
    w = rng.standard_normal((32, 64)).astype(np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", 64])],
                              [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    source = tmp_path / "m.onnx"
    onnx.save(model, str(source))
    written = []

    def stop(path, specs, handed=None):
        written.append((path, specs))
        raise PorterError("stopped here: the written file is what this test reads")

    monkeypatch.setattr(onnx_to_tf, "_prepared_for_dynamic_dims", stop)
    x = rng.standard_normal((2, 5, 32)).astype(np.float32)
    assert onnx_to_tf._batch_kept(source, {"x": ("float32", (None, None, 32))}, {"x": x}, [], "test") == (None, [])
    path, specs = written[0]
    assert specs == {"x": ("float32", (None, 5, 32))}
    batch_only = onnx.load(str(path))
    dims = [d.dim_param or d.dim_value for d in batch_only.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 5, 32]
    np.testing.assert_array_equal(numpy_helper.to_array(batch_only.graph.initializer[0]), w)
    np.testing.assert_allclose(run_onnx(batch_only, {"x": x})[0], x @ w, rtol=1e-5, atol=1e-5)

"""Weights kept in their external data file and mapped (porter.routes.onnx_mapped): what every step of the
ONNX route reads instead of its own copy. The values must be the file's, the rewrites and onnxruntime must
see the same model, and a file that is not what its graph says is an error naming the tensor."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from tests_support import run_onnx

from porter.errors import PorterError
from porter.routes.onnx_graph import big_initializers, save_with_weights, without_weights
from porter.routes.onnx_mapped import graphsurgeon_reads, load_mapped, ort_session


def _model():
    """x [batch, 32] -> MatMul(W1) -> Add(b) -> Relu -> MatMul(W2) -> Add(scale), scale a Constant node."""
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((32, 64)).astype(np.float32)
    w2 = rng.standard_normal((64, 48)).astype(np.float32)
    bias = rng.standard_normal(64).astype(np.float32)  # under 1024 elements: read into the graph
    scale = numpy_helper.from_array(rng.standard_normal(48).astype(np.float32), "scale_value")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Add", ["h", "b"], ["hb"]),
         helper.make_node("Relu", ["hb"], ["r"]), helper.make_node("MatMul", ["r", "w2"], ["y0"]),
         helper.make_node("Constant", [], ["scale"], value=scale), helper.make_node("Add", ["y0", "scale"], ["y"])],
        "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 48])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2"), numpy_helper.from_array(bias, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    return model


def _saved_external(model, path):
    copy = onnx.ModelProto()
    copy.CopyFrom(model)  # onnx.save turns the tensors of the model it is given into external references
    onnx.save(copy, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location=path.name + ".data", size_threshold=0)  # every tensor external, the Constant's too
    return path


def _x(seed=1):
    return np.random.default_rng(seed).standard_normal((3, 32)).astype(np.float32)


def test_large_weights_are_mapped_and_the_rest_read_into_the_graph(tmp_path):
    model = _model()
    graph, arrays = load_mapped(_saved_external(model, tmp_path / "m.onnx"))
    assert sorted(arrays) == ["w1", "w2"]
    originals = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for name, array in arrays.items():
        assert isinstance(array, np.memmap)
        np.testing.assert_array_equal(array, originals[name])
    stubs = {t.name: t for t in graph.graph.initializer}
    assert stubs["w1"].data_location == TensorProto.EXTERNAL and not stubs["w1"].raw_data
    assert stubs["b"].data_location == TensorProto.DEFAULT and not stubs["b"].external_data  # read in, as onnx.load does
    np.testing.assert_array_equal(numpy_helper.to_array(stubs["b"]), originals["b"])
    constant = next(n for n in graph.graph.node if n.op_type == "Constant").attribute[0].t
    assert constant.data_location == TensorProto.DEFAULT and constant.raw_data  # a node attribute's tensor too


def test_onnxruntime_reads_the_mapping_itself_not_a_copy(tmp_path):
    """Same outputs as onnxruntime on the file; and a weight changed in the mapping (copy-on-write, so only in
    this process) changes the session's output: the session holds the mapping, not its own copy."""
    model = _model()
    path = _saved_external(model, tmp_path / "m.onnx")
    graph, arrays = load_mapped(path)
    session = ort_session(graph, arrays)
    x = _x()
    want = run_onnx(model, {"x": x})[0]
    np.testing.assert_allclose(session.run(None, {"x": x})[0], want, rtol=1e-6, atol=1e-6)
    arrays["w2"][0, 0] += 1.0
    assert not np.allclose(session.run(None, {"x": x})[0], want, rtol=1e-6, atol=1e-6)
    graph_again, arrays_again = load_mapped(path)
    np.testing.assert_array_equal(arrays_again["w2"], numpy_helper.to_array(model.graph.initializer[1]))  # the file is unchanged


def test_a_rewritten_graph_names_the_same_external_data(tmp_path):
    """save_with_weights beside the data file writes each mapped weight as its reference: the new file holds
    the graph only, and onnx (and onnxruntime) read it as the original model."""
    model = _model()
    path = _saved_external(model, tmp_path / "m.onnx")
    graph, arrays = load_mapped(path)
    out = tmp_path / "m.rewritten.onnx"
    save_with_weights(without_weights(graph), big_initializers(graph), out)
    assert out.stat().st_size < 2048 and not (tmp_path / "m.rewritten.onnx.data").exists()
    read = onnx.load(str(out))
    x = _x(2)
    np.testing.assert_array_equal(run_onnx(read, {"x": x})[0], run_onnx(model, {"x": x})[0])


def test_graphsurgeon_reads_the_mapping(tmp_path):
    """onnx2tf's graph (onnx-graphsurgeon) gets the mapped array itself; outside the block its own loader is back."""
    import onnx_graphsurgeon as gs

    graph, arrays = load_mapped(_saved_external(_model(), tmp_path / "m.onnx"))
    with graphsurgeon_reads(arrays):
        constants = {t.name: t for t in gs.import_onnx(graph).tensors().values() if isinstance(t, gs.Constant)}
        assert constants["w1"].values is arrays["w1"]
    own = {t.name: t for t in gs.import_onnx(onnx.load(str(tmp_path / "m.onnx"))).tensors().values() if isinstance(t, gs.Constant)}
    assert own["w1"].values is not arrays["w1"] and np.array_equal(own["w1"].values, arrays["w1"])


def test_a_truncated_data_file_names_the_tensor(tmp_path):
    path = _saved_external(_model(), tmp_path / "m.onnx")
    data = tmp_path / "m.onnx.data"
    data.write_bytes(data.read_bytes()[:1000])
    with pytest.raises(PorterError, match=r"'w\d'.*m\.onnx\.data.*do not fit") as info:
        load_mapped(path)
    assert "export the model again" in info.value.hint


def test_external_data_outside_the_folder_is_refused(tmp_path):
    (tmp_path / "inner").mkdir()
    path = _saved_external(_model(), tmp_path / "inner" / "m.onnx")
    model = onnx.load(str(path), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../m.onnx.data"
    (tmp_path / "m.onnx.data").write_bytes((tmp_path / "inner" / "m.onnx.data").read_bytes())
    onnx.save(model, str(path))
    with pytest.raises(PorterError, match=r"not a file in"):
        load_mapped(path)

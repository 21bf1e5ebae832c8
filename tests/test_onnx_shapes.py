"""porter's ONNX rewrites before onnx2tf: shape arithmetic folded into constant Reshape targets,
multi-axis Unsqueezes split; each checked against onnxruntime at sizes the probes never used."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from tests_support import run_onnx

from porter.routes.onnx_fix_shapes import fold_shape_computations, prepare_for_onnx2tf
from porter.routes.onnx_graph import onnx_io


def _model(nodes, inputs, outputs, initializers=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, [numpy_helper.from_array(np.asarray(v), k) for k, v in initializers])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _run(model, feeds):
    return run_onnx(model, feeds)


def _flatten_tail():
    """y = x.reshape(batch, -1) written the way torch.onnx's dynamo exporter writes it:
    the target computed as Concat(Slice(Shape(x), 0, 1), [24])."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4, 6])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 24])
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Slice", ["shape", "zero", "one"], ["batch"]),
        helper.make_node("Concat", ["batch", "rest"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["y"], allowzero=1),
    ]
    inits = [("zero", np.array([0], np.int64)), ("one", np.array([1], np.int64)), ("rest", np.array([24], np.int64))]
    return _model(nodes, [x], [y], inits)


def test_computed_reshape_target_becomes_a_constant():
    model = _flatten_tail()
    folded, notes = fold_shape_computations(model, onnx_io(model)[2])
    assert folded is not model and "1 Reshape target" in notes[0]
    assert [n.op_type for n in folded.graph.node] == ["Reshape"]  # Shape, Slice and Concat are gone
    reshape = folded.graph.node[0]
    target = {i.name: numpy_helper.to_array(i) for i in folded.graph.initializer}[reshape.input[1]]
    assert target.tolist() == [0, 24]  # batch copied from the input, the rest static
    assert [a.i for a in reshape.attribute if a.name == "allowzero"] == [0]
    x = np.random.default_rng(0).standard_normal((7, 4, 6)).astype(np.float32)  # a batch the probes never used
    np.testing.assert_array_equal(_run(folded, {"x": x})[0], _run(model, {"x": x})[0])


def test_a_target_with_two_unknown_dims_is_left_alone():
    """[batch, seq, 4] -> [seq, batch * 4]: neither dim is a copy of the input's at its index,
    and a constant target can infer only one, so the computation must stay."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["s", "b4"])
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "i1"], ["seq"]),
        helper.make_node("Gather", ["shape", "i0"], ["batch"]),
        helper.make_node("Mul", ["batch", "four"], ["batch4"]),
        helper.make_node("Concat", ["seq", "batch4"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["y"]),
    ]
    inits = [("i0", np.array([0], np.int64)), ("i1", np.array([1], np.int64)), ("four", np.array([4], np.int64))]
    model = _model(nodes, [x], [y], inits)
    folded, notes = fold_shape_computations(model, onnx_io(model)[2])
    assert folded is model and notes == []


def test_static_models_are_not_touched():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4, 6])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 24])
    nodes = [helper.make_node("Shape", ["x"], ["shape"]), helper.make_node("Slice", ["shape", "zero", "one"], ["b"]),
             helper.make_node("Concat", ["b", "rest"], ["t"], axis=0), helper.make_node("Reshape", ["x", "t"], ["y"])]
    inits = [("zero", np.array([0], np.int64)), ("one", np.array([1], np.int64)), ("rest", np.array([24], np.int64))]
    model = _model(nodes, [x], [y], inits)
    assert fold_shape_computations(model, onnx_io(model)[2]) == (model, [])


@pytest.mark.parametrize("axes", [[1, 2], [0, 3], [2, 1]])
def test_multi_axis_unsqueeze_is_split_into_single_axes(axes):
    mask = helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["batch", "seq"])
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["a", "b", "c", "d"])
    model = _model([helper.make_node("Unsqueeze", ["mask", "axes"], ["out"])], [mask], [out],
                   [("axes", np.array(axes, np.int64))])
    split, notes = prepare_for_onnx2tf(model, onnx_io(model)[2])
    assert [n.op_type for n in split.graph.node] == ["Unsqueeze", "Unsqueeze"] and "split 1" in notes[0]
    inits = {i.name: numpy_helper.to_array(i).tolist() for i in split.graph.initializer}
    assert [inits[n.input[1]] for n in split.graph.node] == [[a] for a in sorted(axes)]
    m = np.random.default_rng(1).standard_normal((3, 5)).astype(np.float32)
    got, want = _run(split, {"mask": m})[0], _run(model, {"mask": m})[0]
    assert got.shape == want.shape and np.array_equal(got, want)


def test_index_bounds_follow_casts_into_embedding_tables():
    from porter.verifiers.inputs import from_specs

    from porter.routes.onnx_graph import index_bounds

    ids = helper.make_tensor_value_info("ids", TensorProto.INT32, ["batch", "seq"])
    kind = helper.make_tensor_value_info("kind", TensorProto.INT64, ["batch", "seq"])
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", "seq", 4])
    nodes = [helper.make_node("Cast", ["ids"], ["ids64"], to=TensorProto.INT64),
             helper.make_node("Gather", ["words", "ids64"], ["w"]),
             helper.make_node("Gather", ["kinds", "kind"], ["k"]),
             helper.make_node("Add", ["w", "k"], ["out"])]
    model = _model(nodes, [ids, kind], [out], [("words", np.ones((37, 4), np.float32)), ("kinds", np.ones((3, 4), np.float32))])
    bounds = index_bounds(model)
    assert bounds == {"ids": 37, "kind": 3}
    sets = from_specs(onnx_io(model)[2], index_bounds=bounds)
    assert len(sets.feeds) == 4  # batch and sequence at two sizes each
    for feed in sets.feeds:
        assert feed["ids"].max() < 37 and feed["kind"].max() < 3 and feed["ids"].dtype == np.int32
        np.testing.assert_array_equal(_run(model, feed)[0].shape, feed["ids"].shape + (4,))
    assert any("[0, 37)" in n for n in sets.notes)


def test_a_last_two_dims_swap_through_3d_becomes_one_transpose():
    """K^T as torch.onnx writes it for scaled_dot_product_attention: [b, h, s, d] -> [b*h, s, d]
    -> perm (0, 2, 1) -> [b, h, d, s], with both targets computed from Shape(x)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2, "seq", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2, 4, "seq"])
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Slice", ["shape", "m2", "m1"], ["s"]),
        helper.make_node("Slice", ["shape", "zero", "m2"], ["lead"]),
        helper.make_node("Concat", ["minus1", "s", "four"], ["flat_target"], axis=0),
        helper.make_node("Reshape", ["x", "flat_target"], ["flat"]),
        helper.make_node("Transpose", ["flat"], ["flat_t"], perm=[0, 2, 1]),
        helper.make_node("Concat", ["lead", "four", "s"], ["back_target"], axis=0),
        helper.make_node("Reshape", ["flat_t", "back_target"], ["y"]),
    ]
    inits = [(k, np.array([v], np.int64)) for k, v in (("m2", -2), ("m1", -1), ("zero", 0), ("minus1", -1), ("four", 4))]
    model = _model(nodes, [x], [y], inits)
    folded, notes = fold_shape_computations(model, onnx_io(model)[2])
    assert [n.op_type for n in folded.graph.node] == ["Transpose"] and "1 flattened transpose" in notes[0]
    assert list(folded.graph.node[0].attribute[0].ints) == [0, 1, 3, 2]
    v = np.random.default_rng(3).standard_normal((3, 2, 7, 4)).astype(np.float32)
    np.testing.assert_array_equal(_run(folded, {"x": v})[0], _run(model, {"x": v})[0])

"""Dilated Average/LpPool and the spec-sampled Resize modes, against onnx.reference on cases the node tests miss,
and through model.py (the runtime helpers they call must be copied there)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from porter.onnx_to_torch import onnx_to_torch, write_torch_package


def _model(node, x_shape, out_name="y", initializers=()):
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, None)],
                              initializer=list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])


def _compare(model, x, atol=1e-5):
    want = ReferenceEvaluator(model).run(None, {"x": x})[0]
    got = onnx_to_torch(model)(__import__("torch").from_numpy(x)).numpy()
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=atol)
    return got


@pytest.mark.parametrize("ceil_mode", [0, 1])
@pytest.mark.parametrize("count_include_pad", [0, 1])
def test_average_pool_dilated_uneven_pads(ceil_mode, count_include_pad):
    node = helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3, 2], dilations=[2, 3], strides=[2, 1],
                            pads=[1, 0, 2, 1], ceil_mode=ceil_mode, count_include_pad=count_include_pad)
    x = np.random.default_rng(0).standard_normal((1, 2, 9, 8)).astype(np.float32)
    got = _compare(_model(node, [1, 2, 9, 8]), x)
    assert np.abs(got).max() > 0.05  # not a zero output that would pass any comparison


def test_lp_pool_dilated_1d():
    node = helper.make_node("LpPool", ["x"], ["y"], kernel_shape=[3], dilations=[2], p=3, pads=[1, 1])
    _compare(_model(node, [2, 3, 11]), np.random.default_rng(1).standard_normal((2, 3, 11)).astype(np.float32))


def _resize(mode, coordinates, scales=None, sizes=None, **attrs):
    if scales is not None:
        inputs, init = ["x", "", "scales"], numpy_helper.from_array(np.array(scales, np.float32), "scales")
    else:
        inputs, init = ["x", "", "", "sizes"], numpy_helper.from_array(np.array(sizes, np.int64), "sizes")
    node = helper.make_node("Resize", inputs, ["y"], mode=mode, coordinate_transformation_mode=coordinates, **attrs)
    return _model(node, [1, 1, 5, 7], initializers=[init])


@pytest.mark.parametrize("mode,coordinates,scales,sizes,attrs", [
    ("linear", "half_pixel", [1, 1, 0.6, 0.4], None, {"antialias": 1}),
    ("cubic", "asymmetric", None, [1, 1, 8, 3], {"antialias": 1, "cubic_coeff_a": -0.5}),
    # 0.9, not 0.8: at 0.8 one output samples input position 3 exactly, where onnx.reference (float32 scales)
    # was seen to take the neighbour's value
    ("cubic", "half_pixel_symmetric", [1, 1, 1.7, 0.9], None, {"exclude_outside": 1}),
    ("linear", "align_corners", [1, 1, 0.5, 1.5], None, {}),
    ("nearest", "half_pixel", None, [1, 1, 9, 4], {"keep_aspect_ratio_policy": "not_smaller"}),
])
def test_resize_modes_follow_the_reference(mode, coordinates, scales, sizes, attrs):
    x = np.random.default_rng(2).standard_normal((1, 1, 5, 7)).astype(np.float32)
    _compare(_resize(mode, coordinates, scales, sizes, **attrs), x)


def test_antialias_differs_from_plain_linear():
    """Negative control: antialias must not silently fall back to plain interpolation."""
    x = np.random.default_rng(3).standard_normal((1, 1, 5, 7)).astype(np.float32)
    plain = _compare(_resize("linear", "half_pixel", [1, 1, 0.6, 0.4]), x)
    smooth = _compare(_resize("linear", "half_pixel", [1, 1, 0.6, 0.4], antialias=1), x)
    assert np.abs(plain - smooth).max() > 0.05


def test_model_py_carries_the_helpers(tmp_path):
    import torch

    model = _resize("cubic", "half_pixel", [1, 1, 0.6, 0.4], antialias=1)
    x = np.random.default_rng(4).standard_normal((1, 1, 5, 7)).astype(np.float32)
    folder = write_torch_package(onnx_to_torch(model), tmp_path / "m")
    namespace: dict = {}
    exec(compile((tmp_path / "m" / "model.py").read_text(), "model.py", "exec"), namespace)
    with torch.no_grad():
        got = namespace["load"](folder)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, ReferenceEvaluator(model).run(None, {"x": x})[0], rtol=1e-4, atol=1e-5)

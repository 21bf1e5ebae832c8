"""Run the ONNX backend node tests (shipped in the onnx wheel) through porter and onnxruntime.

Loaders, runners and the comparator are kept apart: a runner takes a model and
a list of numpy inputs and returns numpy outputs; ``check`` compares them with
the expected outputs exactly as onnx's own backend test runner does.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass

import numpy as np

# onnx/backend/test/loader/__init__.py: the defaults every node test uses (none ships a data.json).
RTOL = 1e-3
ATOL = 1e-7


def node_test_dir() -> str:
    import onnx

    return os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "node")


@dataclass(frozen=True)
class NodeTest:
    name: str
    folder: str

    def model(self):
        import onnx

        return onnx.load(os.path.join(self.folder, "model.onnx"))

    def _tensors(self, prefix: str) -> list[np.ndarray]:
        import onnx
        from onnx import numpy_helper

        files = glob.glob(os.path.join(self.folder, "test_data_set_0", f"{prefix}_*.pb"))
        arrays = []
        for path in sorted(files, key=lambda p: int(p.rsplit("_", 1)[1].split(".")[0])):
            proto = onnx.TensorProto()
            with open(path, "rb") as f:
                proto.ParseFromString(f.read())
            arrays.append(numpy_helper.to_array(proto))
        return arrays

    def inputs(self) -> list[np.ndarray]:
        return self._tensors("input")

    def expected(self) -> list[np.ndarray]:
        return self._tensors("output")


def node_tests() -> list[NodeTest]:
    root = node_test_dir()
    return [NodeTest(name, os.path.join(root, name)) for name in sorted(os.listdir(root))
            if os.path.isfile(os.path.join(root, name, "model.onnx"))]


def run_porter(model, inputs: list[np.ndarray]) -> list[np.ndarray]:
    import torch

    from porter.onnx_to_torch import onnx_to_torch
    from porter.onnx_to_torch.tensors import from_numpy

    module = onnx_to_torch(model)
    with torch.no_grad():
        out = module(*[from_numpy(np.asarray(a)) for a in inputs])
    outputs = out if isinstance(out, tuple) else (out,)
    return [o.numpy() if o.dtype != torch.bfloat16 else o.float().numpy() for o in outputs]


def run_onnxruntime(model, inputs: list[np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feeds = {i.name: a for i, a in zip(session.get_inputs(), inputs)}
    return session.run(None, feeds)


def compare(expected: list[np.ndarray], actual: list, rtol: float = RTOL, atol: float = ATOL) -> None:
    """onnx.backend.test.runner.Runner.assert_similar_outputs, minus its sequence support."""
    np.testing.assert_equal(len(actual), len(expected))
    for i, (want, got) in enumerate(zip(expected, actual)):
        got = np.asarray(got)
        np.testing.assert_array_equal(got.shape, want.shape, err_msg=f"Output {i} has incorrect shape")
        if want.dtype == object:
            np.testing.assert_array_equal(got, want)
            continue
        np.testing.assert_equal(got.dtype, want.dtype)
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


def check(test: NodeTest, runner) -> str | None:
    """None when ``runner`` reproduces the expected outputs, else a one-line reason."""
    try:
        compare(test.expected(), runner(test.model(), test.inputs()))
    except Exception as exc:  # a failure of any kind is a result here, reported by name
        text = " ".join(str(exc).split())
        return f"{type(exc).__name__}: {text[:300]}"
    return None

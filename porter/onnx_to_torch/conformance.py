"""Run the ONNX backend node tests (shipped in the onnx wheel) through a converter and onnxruntime.

The ONE harness: the conformance test (tests/test_onnx_conformance.py), porter's
benchmark and the peer comparison (benchmarks/onnx_peers.py) all load, run,
compare and count through this module. Loaders, runners and the comparator are
kept apart: a runner takes a model and a list of inputs (numpy arrays; lists of
them for sequence inputs; None for an empty optional) and returns its outputs
in any of torch's or numpy's forms; ``check`` compares them with the expected
outputs as onnx's own backend runner does, at the tolerances issue 12 fixed for
comparing converters (rtol 1e-3, atol 1e-5: onnx's runner default of atol 1e-7
rejects float32 round-off of a correct kernel on values near zero), with a
time limit per case.
"""

from __future__ import annotations

import glob
import os
import signal
import threading
from dataclasses import dataclass

import numpy as np

RTOL = 1e-3
ATOL = 1e-5
TIMEOUT_S = 10.0


def node_test_dir() -> str:
    import onnx

    return os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "node")


def _load_value(path: str, type_proto):
    """One input/output file, read as the model declares it (onnx.backend.test.runner._load_proto)."""
    import onnx
    from onnx import numpy_helper

    with open(path, "rb") as f:
        content = f.read()
    kind = type_proto.WhichOneof("value") if type_proto is not None else "tensor_type"
    if kind == "sequence_type":
        proto = onnx.SequenceProto()
        proto.ParseFromString(content)
        return numpy_helper.to_list(proto)
    if kind == "optional_type":
        proto = onnx.OptionalProto()
        proto.ParseFromString(content)
        return numpy_helper.to_optional(proto)
    proto = onnx.TensorProto()
    proto.ParseFromString(content)
    return numpy_helper.to_array(proto)


@dataclass(frozen=True)
class NodeTest:
    name: str
    folder: str

    def model(self):
        import onnx

        return onnx.load(os.path.join(self.folder, "model.onnx"))

    def _values(self, prefix: str, declared) -> list:
        files = glob.glob(os.path.join(self.folder, "test_data_set_0", f"{prefix}_*.pb"))
        files.sort(key=lambda p: int(p.rsplit("_", 1)[1].split(".")[0]))
        return [_load_value(p, declared[i].type if i < len(declared) else None) for i, p in enumerate(files)]

    def inputs(self) -> list:
        return self._values("input", self.model().graph.input)

    def expected(self) -> list:
        return self._values("output", self.model().graph.output)


def node_tests() -> list[NodeTest]:
    root = node_test_dir()
    return [NodeTest(name, os.path.join(root, name)) for name in sorted(os.listdir(root))
            if os.path.isfile(os.path.join(root, name, "model.onnx"))]


def to_torch(value):
    """A harness input as a converted torch module takes it."""
    from porter.onnx_to_torch.tensors import from_numpy

    if value is None:
        return None
    if isinstance(value, list):
        return [to_torch(v) for v in value]
    return from_numpy(np.asarray(value))


def to_numpy(value):
    """A module's output (tensor, sequence, None, python scalar) in the form the expected outputs have."""
    if value is None or isinstance(value, np.ndarray):
        return value
    if isinstance(value, (list, tuple)):
        return [to_numpy(v) for v in value]
    import torch

    if isinstance(value, torch.Tensor):
        value = value.detach()
        return value.float().numpy() if value.dtype == torch.bfloat16 else value.numpy()
    return np.asarray(value)


def run_porter(model, inputs: list) -> list:
    import torch

    from porter.onnx_to_torch import onnx_to_torch

    module = onnx_to_torch(model)
    with torch.no_grad():
        out = module(*[to_torch(a) for a in inputs])
    return list(out) if isinstance(out, tuple) else [out]


def run_onnxruntime(model, inputs: list) -> list:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feeds = {i.name: a for i, a in zip(session.get_inputs(), inputs)}
    return session.run(None, feeds)


def _compare_one(index, want, got, rtol: float, atol: float) -> None:
    if isinstance(want, list) or want is None:
        if want is None or got is None:
            assert want is None and got is None, f"Output {index}: expected {want!r}, got {type(got).__name__}"
            return
        assert isinstance(got, list), f"Output {index}: expected a sequence, got {type(got).__name__}"
        np.testing.assert_equal(len(got), len(want), err_msg=f"Output {index}: sequence length")
        for j, (w, g) in enumerate(zip(want, got)):
            _compare_one(f"{index}[{j}]", w, g, rtol, atol)
        return
    got = np.asarray(got)
    np.testing.assert_array_equal(got.shape, want.shape, err_msg=f"Output {index} has incorrect shape")
    if want.dtype == object:
        np.testing.assert_array_equal(got, want)
        return
    np.testing.assert_equal(got.dtype, want.dtype)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


def compare(expected: list, actual: list, rtol: float = RTOL, atol: float = ATOL) -> None:
    """onnx.backend.test.runner.Runner.assert_similar_outputs, with sequences and optionals compared element-wise."""
    actual = to_numpy(list(actual))
    np.testing.assert_equal(len(actual), len(expected))
    for i, (want, got) in enumerate(zip(expected, actual)):
        _compare_one(i, want, got, rtol, atol)


class CaseTimeout(Exception):
    pass


def _raise_timeout(signum, frame):
    raise CaseTimeout(f"no result within {TIMEOUT_S:g} s")


def check(test: NodeTest, runner, timeout: float = TIMEOUT_S) -> str | None:
    """None when ``runner`` reproduces the expected outputs within ``timeout`` seconds, else a one-line reason.

    The limit is a SIGALRM timer, so it holds only on the main thread (elsewhere a case runs unlimited)."""
    timed = threading.current_thread() is threading.main_thread() and timeout > 0
    if timed:
        previous = signal.signal(signal.SIGALRM, _raise_timeout)
        signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        compare(test.expected(), runner(test.model(), test.inputs()))
    except Exception as exc:  # a failure of any kind is a result here, reported by name
        text = " ".join(str(exc).split())
        return f"{type(exc).__name__}: {text[:300]}"
    finally:
        if timed:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
    return None


@dataclass(frozen=True)
class Coverage:
    """How many of the tests onnxruntime passes a converter passes: the one count test and benchmarks report."""
    reference_passes: frozenset
    passes: frozenset

    @property
    def passed_of_reference(self) -> int:
        return len(self.passes & self.reference_passes)

    @property
    def ratio(self) -> float:
        return self.passed_of_reference / len(self.reference_passes) if self.reference_passes else 1.0

    def missing(self) -> list[str]:
        return sorted(self.reference_passes - self.passes)


def coverage(failures: dict[str, str | None], reference_failures: dict[str, str | None]) -> Coverage:
    """Both dicts map every node test name to ``check``'s result; nothing is excluded from the count."""
    return Coverage(frozenset(n for n, f in reference_failures.items() if f is None),
                    frozenset(n for n, f in failures.items() if f is None))

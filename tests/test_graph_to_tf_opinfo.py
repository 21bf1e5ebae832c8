"""A small sample of benchmarks/opinfo_conformance.py: PyTorch's OpInfo samples for a few ops the
graph_to_tf registry claims, exported, converted and compared with torch at 1e-5."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("tensorflow")

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "opinfo_conformance.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("opinfo_conformance", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["add", "gelu", "_softmax", "native_layer_norm", "convolution", "index", "where"])
def test_opinfo_samples_convert(bench, name):
    infos = bench.opinfos_for(name)
    assert infos, f"no OpInfo entry found for {name}"
    outcomes = []
    for opinfo in infos[:1]:
        for sample in list(opinfo.sample_inputs("cpu", torch.float32))[:3]:
            outcomes.append(bench.run_sample(opinfo, sample))
    passed = [o for o in outcomes if o[0] == "pass"]
    assert passed and all(o[0] in ("pass", "skip") for o in outcomes), outcomes


def test_every_claimed_op_is_an_aten_overload(bench):
    ops = bench.claimed_ops()
    assert {"add", "convolution", "scaled_dot_product_attention", "gelu"} <= set(ops)

"""Representative Hugging Face architectures through porter.graph_to_tf end to end, built, exported
(dynamic batch and sequence / spatial / audio length) and compared with torch at the export shape and
two others exactly as benchmarks/graph_architectures.py does: max abs <= 1e-5 on hidden states and
<= 1e-4 on logits, every dynamic dim kept. The heavier ones are marked slow."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
tf = pytest.importorskip("tensorflow")
transformers = pytest.importorskip("transformers")


def _bench():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "graph_architectures.py"
    spec = importlib.util.spec_from_file_location("porter_bench_graph_architectures", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


BENCH = _bench()
FAST = ["phi3", "gpt_neox", "falcon", "mixtral", "t5"]
SLOW = ["qwen2_moe", "segformer", "wav2vec2", "bart", "deberta-v2"]
# dims each architecture must keep dynamic (input -> axes)
KEPT = {"segformer": {"pixel_values": [0, 2, 3]}, "wav2vec2": {"input_values": [0, 1]}}


@pytest.mark.parametrize("name", FAST + [pytest.param(n, marks=pytest.mark.slow) for n in SLOW])
def test_architecture_converts_at_three_shapes(name):
    from porter.graph_to_tf import convert_exported

    arch = BENCH.BY_NAME[name]
    model = BENCH.build(arch)
    sample = BENCH.feeds(arch, *BENCH._shapes(arch)[0])
    ep, _, _ = BENCH.export(arch, model, sample)
    converted = convert_exported(ep)
    worst, tried, failures = BENCH.compare(arch, model, ep, converted)
    assert not failures, f"{name}: {failures}"
    assert len(tried) == 3
    expected = KEPT.get(name) or {k: [0, 1] for k in sample}
    kept = BENCH._varying(converted)
    for input_name, axes in expected.items():
        assert kept[input_name] == axes, f"{name}: {input_name} keeps {kept[input_name]}, wanted {axes}"

"""Every decoder of graph_architectures.py as its *ForCausalLM through the graph route with a KV cache: prefill/decode
in the SavedModel and prefill_<n>/decode in the .tflite, verified by greedy generation (3 prompts x 32 tokens) in a
TensorFlow-only and a LiteRT-only process against transformers' generate (routes/graph_kv_cache.py).

    python benchmarks/graph_kv_generation.py [--only phi3,gemma2,...] [--cache 48] [--json out.json]

Weights: graph_architectures' informative tiny models with the attention projections scaled up 4x, so each token
depends on the context the cache holds (at init the next token hangs on the current one alone, and a wrong cache
would still give the same greedy tokens). Prints one line per model: tokens equal (SavedModel, .tflite), the worst
logits step, seconds.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj", "qkv_proj", "query_key_value", "c_attn", "dense.weight")


def _architectures():
    path = Path(__file__).with_name("graph_architectures.py")
    spec = importlib.util.spec_from_file_location("porter_bench_graph_architectures", path)
    module = sys.modules.get(spec.name)
    if module is None:
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # its dataclasses look their module up by name
        spec.loader.exec_module(module)
    return module


def decoders() -> list[str]:
    return [a.name for a in _architectures().ARCHS if a.kind == "decoder"]


def make_causal_lm(path: Path, name: str, scale: float = 4.0) -> Path:
    """graph_architectures' tiny decoder ``name`` as its *ForCausalLM, saved to ``path`` (informative weights,
    attention projections scaled by ``scale``)."""
    import torch

    bench = _architectures()
    arch = bench.BY_NAME[name]
    cls = arch.cls.replace("TextModel", "ForCausalLM").replace("Model", "ForCausalLM")
    model = bench.build(bench.Arch(name, cls, arch.model_type, arch.config, arch.kind, arch.extra))
    with torch.no_grad():
        for key, p in model.named_parameters():
            if any(a in key for a in ATTENTION) and key.endswith("weight") and "mlp" not in key:
                p.mul_(scale)
    model.config.architectures = [cls]
    model.save_pretrained(path)
    return path


def run(name: str, cache: int, work: Path) -> dict:
    from porter.conversion import convert

    src = make_causal_lm(work / f"{name}-hf", name)
    t0 = time.perf_counter()
    try:
        result = convert(str(src), source="torch", target="tf", out=work / f"{name}-tf", route="graph", force=True,
                         max_cache_len=cache, prefill_lengths=[8, 16])
    except Exception as exc:  # noqa: BLE001 - one model's failure is a row of the table
        return {"model": name, "error": f"{type(exc).__name__}: {getattr(exc, 'message', str(exc))[:200]}"}
    gen = result.report.get("generation") or {}
    lite = gen.get("tflite") or {}
    return {"model": name, "passed": bool(result.verification) and gen.get("passed", False),
            "saved_model": f"{gen.get('tokens_matched')}/{gen.get('tokens')}",
            "tflite": f"{lite.get('tokens_matched')}/{lite.get('tokens')}",
            "worst_logits": max((p["max_abs"] for p in gen.get("prompts", [])), default=None),
            "worst_logits_tflite": max((p["max_abs"] for p in lite.get("prompts", [])), default=None),
            "notes": [n for n in result.report.get("notes", []) if "prefill/decode" in n],
            "seconds": round(time.perf_counter() - t0, 1)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--only", default="")
    p.add_argument("--cache", type=int, default=48)
    p.add_argument("--json", type=Path)
    a = p.parse_args(argv)
    names = [n for n in a.only.split(",") if n] or decoders()
    rows = []
    with tempfile.TemporaryDirectory(prefix="porter-graph-kv-") as tmp:
        for name in names:
            row = run(name, a.cache, Path(tmp))
            rows.append(row)
            print(json.dumps(row), flush=True)
    ok = sum(r.get("passed", False) for r in rows)
    print(f"graph-route causal LMs generating as transformers (SavedModel and .tflite, 3 prompts x 32 tokens): {ok}/{len(rows)}")
    if a.json:
        a.json.write_text(json.dumps(rows, indent=2))
    return 0 if ok == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())

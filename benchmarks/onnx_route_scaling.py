"""The ONNX route against the direct route on one bert-base-shaped HF folder, in paired runs.

    python benchmarks/onnx_route_scaling.py [--folder DIR] [--reps 1] [--timeout 900] [--verify] [--routes direct,onnx]

Without --folder, a bert-base-shaped folder (transformers BertModel(BertConfig()), random weights,
biases and norms perturbed, model.safetensors) is written to a temporary folder first; nothing is downloaded. Each rep runs
``porter convert FOLDER --from torch --to tf --route direct`` and then ``--route onnx`` in their own
subprocesses (``--no-verify`` unless --verify), sampling the RSS of the whole process tree (porter
runs onnx-simplifier in a child) every 0.1 s. Printed per route: wall seconds, peak RSS (tree), and
per progress step its seconds and the peak RSS seen while it ran; then the ONNX / direct ratios
(targets: <= 3x wall, <= 2x peak RSS). A run past --timeout is killed and reported as such.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

WALL_RATIO, RSS_RATIO = 3.0, 2.0
STEP = re.compile(r"^\[\d\d:\d\d:\d\d\] (?P<text>.*?)(?:: (?P<end>done|failed) in (?P<s>[\d.]+)s)?$")


def build_folder(path: Path) -> None:
    # biases and LayerNorm parameters moved off their init (zeros, ones): the exporter shares equal
    # initializers and a simplifier drops Adds of zero, which a trained checkpoint never allows
    code = ("import sys, torch\nfrom transformers import BertConfig, BertModel\ntorch.manual_seed(0)\n"
            "m = BertModel(BertConfig())\n"
            "with torch.no_grad():\n"
            "    for n, p in m.named_parameters():\n"
            "        if p.ndim == 1: p.add_(0.02 * torch.randn_like(p))\n"
            "m.save_pretrained(sys.argv[1], safe_serialization=True)\n")
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, capture_output=True)


def _tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def run(cmd: list[str], timeout: float) -> dict:
    """Wall seconds, peak tree RSS (MB), exit code, and per progress step (seconds, peak MB while it ran)."""
    samples: list[tuple[float, int]] = []
    lines: list[tuple[float, str]] = []
    t0 = time.perf_counter()
    child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    proc = psutil.Process(child.pid)

    def read():
        for line in child.stderr:
            lines.append((time.perf_counter() - t0, line.rstrip("\n")))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    timed_out = False
    while child.poll() is None:
        try:
            samples.append((time.perf_counter() - t0, _tree_rss(proc)))
        except psutil.Error:
            pass
        if time.perf_counter() - t0 > timeout:
            timed_out = True
            for p in [*proc.children(recursive=True), proc]:
                try:
                    p.kill()
                except psutil.Error:
                    pass
        time.sleep(0.1)
    wall = time.perf_counter() - t0
    reader.join(timeout=5)
    peak = max((r for _, r in samples), default=0) / 2**20
    return {"wall_s": wall, "peak_mb": peak, "rc": child.returncode, "timed_out": timed_out,
            "steps": _steps(lines, samples), "tail": [text for _, text in lines[-5:]]}


def _steps(lines, samples) -> list[tuple[str, float, float]]:
    """(step, seconds, peak MB while it ran) from porter's plain progress lines (start, then 'done in')."""
    started: dict[str, float] = {}
    steps = []
    for t, line in lines:
        m = STEP.match(line)
        if not m:
            continue
        text = m["text"].strip()
        if m["end"] is None:
            started[text] = t
            continue
        begin = started.pop(text, t - float(m["s"]))
        peak = max((r for ts, r in samples if begin <= ts <= t), default=0) / 2**20
        steps.append((text, float(m["s"]), peak))
    return steps


def convert_cmd(folder: Path, out: Path, route: str, verify: bool) -> list[str]:
    cmd = [sys.executable, "-m", "porter.cli", "convert", str(folder), "--from", "torch", "--to", "tf",
           "--route", route, "--out", str(out), "--force"]
    return cmd + ([] if verify else ["--no-verify"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, help="a bert-base-shaped HF folder (default: built in a temp folder)")
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per conversion before it is killed")
    parser.add_argument("--verify", action="store_true", help="verify both conversions (default: --no-verify)")
    parser.add_argument("--routes", default="direct,onnx")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="onnx-route-scaling-"))
    try:
        folder = args.folder
        if folder is None:
            folder = scratch / "bert-base"
            print(f"building a bert-base-shaped folder in {folder}", flush=True)
            build_folder(folder)
        routes = args.routes.split(",")
        results: dict[str, list[dict]] = {r: [] for r in routes}
        for rep in range(args.reps):
            for route in routes:
                out = scratch / f"out-{route}"
                r = run(convert_cmd(folder, out, route, args.verify), args.timeout)
                shutil.rmtree(out, ignore_errors=True)
                results[route].append(r)
                status = "timeout" if r["timed_out"] else f"exit {r['rc']}"
                print(f"rep {rep + 1} {route:6s}: {r['wall_s']:7.1f} s  peak {r['peak_mb']:7.0f} MB  ({status})", flush=True)
                for text, s, peak in r["steps"]:
                    print(f"    {s:7.1f} s  {peak:7.0f} MB  {text}")
                if r["rc"] not in (0, 1):
                    print("    " + "\n    ".join(r["tail"]))
        if {"direct", "onnx"} <= set(routes):
            for rep, (d, o) in enumerate(zip(results["direct"], results["onnx"])):
                wall, rss = o["wall_s"] / d["wall_s"], o["peak_mb"] / d["peak_mb"]
                ok = o["rc"] == 0 and not o["timed_out"]
                print(f"rep {rep + 1} onnx/direct: wall {wall:.2f}x (target <= {WALL_RATIO}x), "
                      f"peak RSS {rss:.2f}x (target <= {RSS_RATIO}x)"
                      + ("" if ok else "  [the ONNX run did not finish: ratios are lower bounds]"))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()

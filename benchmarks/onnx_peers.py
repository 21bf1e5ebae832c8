"""porter's ONNX->torch converter against its peers on the ONNX backend node tests, through one harness.

Every converter (porter, onnx2pytorch, onnx2torch) and onnxruntime runs every node test through
``porter.onnx_to_torch.conformance.check`` (same loader, comparator, tolerances and time limit per
case); nothing is skipped. Each runs in its own subprocess, a peer with its install folder on
PYTHONPATH, never in porter's environment:

    pip install --target /work/peers/onnx2pytorch onnx2pytorch==0.6.0 --no-deps
    pip install --target /work/peers/onnx2torch onnx2torch==1.5.15 --no-deps

Both peers import torchvision at import time; the registry's torchvision wheels do not load next
to this torch, so ``--stubs`` names a folder holding an import-only ``torchvision`` package (ops that
need it then fail, and count as failures).

Usage: python benchmarks/onnx_peers.py [--peers /work/peers] [--stubs /work/peers/stubs] [--only REGEX]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import warnings

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

CONVERTERS = ("onnxruntime", "porter", "onnx2pytorch", "onnx2torch")


def _single_or_many(model, out) -> list:
    if len(model.graph.output) == 1:
        return [out]
    return list(out)


def run_onnx2pytorch(model, inputs):
    import torch
    from onnx2pytorch import ConvertModel

    from porter.onnx_to_torch.conformance import to_torch

    module = ConvertModel(model, experimental=True)
    with torch.no_grad():
        return _single_or_many(model, module(*[to_torch(a) for a in inputs]))


def run_onnx2torch(model, inputs):
    import torch
    from onnx2torch import convert

    from porter.onnx_to_torch.conformance import to_torch

    module = convert(model)
    with torch.no_grad():
        return _single_or_many(model, module(*[to_torch(a) for a in inputs]))


def _runner(name: str):
    from porter.onnx_to_torch import conformance

    return {"onnxruntime": conformance.run_onnxruntime, "porter": conformance.run_porter,
            "onnx2pytorch": run_onnx2pytorch, "onnx2torch": run_onnx2torch}[name]


def worker(name: str, only: str | None, out_path: str) -> None:
    """Run one converter over the node tests in this process and write {test: failure or None}."""
    import logging

    from porter.onnx_to_torch import conformance

    warnings.simplefilter("ignore")
    logging.disable(logging.CRITICAL)
    runner = _runner(name)
    tests = [t for t in conformance.node_tests() if not only or re.search(only, t.name)]
    start = time.perf_counter()
    results = {t.name: conformance.check(t, runner) for t in tests}
    with open(out_path, "w") as f:
        json.dump({"seconds": time.perf_counter() - start, "results": results}, f)


def _spawn(name: str, args, out_path: str) -> subprocess.Popen:
    paths = [REPO]
    if name in ("onnx2pytorch", "onnx2torch"):
        paths = [os.path.join(args.peers, name), args.stubs, REPO]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths + [os.environ.get("PYTHONPATH", "")]))
    command = [sys.executable, os.path.abspath(__file__), "--worker", name, "--out", out_path]
    if args.only:
        command += ["--only", args.only]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", default="/work/peers")
    parser.add_argument("--stubs", default="/work/peers/stubs")
    parser.add_argument("--only", help="regular expression: run only the node tests it finds in their names")
    parser.add_argument("--jobs", type=int, default=2, help="converters run at once")
    parser.add_argument("--save", help="write every converter's per-test results to this JSON file")
    parser.add_argument("--worker", choices=CONVERTERS, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.only, args.out)
        return 0

    from porter.onnx_to_torch import conformance

    data = {}
    with tempfile.TemporaryDirectory() as tmp:
        pending = list(CONVERTERS)
        running: dict[str, subprocess.Popen] = {}
        while pending or running:
            while pending and len(running) < args.jobs:
                name = pending.pop(0)
                running[name] = _spawn(name, args, os.path.join(tmp, f"{name}.json"))
            for name, process in list(running.items()):
                if process.poll() is not None:
                    del running[name]
                    path = os.path.join(tmp, f"{name}.json")
                    if process.returncode or not os.path.exists(path):
                        print(f"{name}: worker exited with {process.returncode}, no results", file=sys.stderr)
                        continue
                    with open(path) as f:
                        data[name] = json.load(f)
            time.sleep(0.5)
    if args.save:
        with open(args.save, "w") as f:
            json.dump(data, f, indent=1)
    report(data, conformance)
    return 0


def report(data: dict, conformance) -> None:
    ort = data["onnxruntime"]["results"]
    print(f"node tests: {len(ort)}   harness: rtol {conformance.RTOL:g}, atol {conformance.ATOL:g}, "
          f"{conformance.TIMEOUT_S:g} s per case, nothing skipped")
    print(f"onnxruntime passes: {sum(f is None for f in ort.values())}  ({data['onnxruntime']['seconds']:.0f} s)")
    cover = {name: conformance.coverage(d["results"], ort) for name, d in data.items() if name != "onnxruntime"}
    for name, c in cover.items():
        total = sum(f is None for f in data[name]["results"].values())
        print(f"{name:13s} passes {total:5d}; of onnxruntime's: {c.passed_of_reference}/{len(c.reference_passes)} "
              f"({c.ratio:.1%})  ({data[name]['seconds']:.0f} s)")
    if "porter" not in cover:
        return
    porter = cover["porter"].passes
    for name, c in cover.items():
        if name == "porter":
            continue
        extra = sorted(c.passes - porter)
        print(f"\n{name} passes {len(extra)} tests porter fails:")
        for test in extra:
            print(f"  {test}: porter: {data['porter']['results'][test]}")


if __name__ == "__main__":
    sys.exit(main())

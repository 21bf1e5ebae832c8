"""porter's direct torch -> tf conversion of a 1B-, 3B- or 7B-shaped Llama (LlamaForCausalLM -> keras-hub
LlamaCausalLM) from sharded safetensors, in bf16/fp16/fp32: seconds and peak RSS of the whole
`porter convert --no-verify` process, porter's own per-step timings and peak-RSS marks from
porter_report.json (load+map, SavedModel export, .keras save), and an import-only floor, to print
"peak RSS above the import floor / checkpoint size" (issue 11 asks for about <= 1.1x), and porter's
own memory estimate (memory_estimate_mb in the report: RSS when estimated + total) against the measured peak.

The checkpoint is random (std 0.02, norms 1), written tensor by tensor into <= --shard-gb shards with
model.safetensors.index.json; no torch model is built (names and shapes come from a meta-device
LlamaForCausalLM), so the generator holds about one tensor at a time. It is cached in --ckpt-root
(default $TMPDIR/porter-llama-SIZE) and rebuilt only when its config differs.

    python benchmarks/llama_sizes_convert.py [--size 1b|3b|7b] [--dtypes bfloat16,float32] [--reps 1] [--keep-out]
        [--verify-shape 1x16]   # also `porter verify CKPT OUT --shape 1x16` on the last conversion of each dtype
        [--convert-verify]      # `porter convert` with its own verification instead of --no-verify: one process;
                                # where a float32 reference does not fit, porter verifies against bf16 and block by
                                # block in float32, or, where bf16 does not fit either, streamed (reference_plan.py)
        [--verify-blocks]       # with --convert-verify: block-wise float32 verification asked for (verifiers/blockwise.py)

The shapes (vocab 32000, untied head throughout):
  1b: Llama 3.2 1B's body: hidden 2048, 16 layers, 32 heads, 8 kv heads, intermediate 8192 -> 1.10 B parameters, 2.2 GB bf16
  3b: Llama 3.2 3B's body: hidden 3072, 28 layers, 24 heads, 8 kv heads, intermediate 8192 -> 3.02 B parameters, 6.0 GB bf16
  7b: Llama 2 7B: hidden 4096, 32 layers, 32 heads, 32 kv heads, intermediate 11008 -> 6.74 B parameters, 13.5 GB bf16
Each run of a big size takes the machine's memory: run it under `flock /tmp/porter-heavy.lock` on a shared machine."""

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

COMMON = dict(vocab_size=32000, max_position_embeddings=2048, tie_word_embeddings=False)
SHAPES = {
    "1b": dict(COMMON, hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8, intermediate_size=8192),
    "3b": dict(COMMON, hidden_size=3072, num_hidden_layers=28, num_attention_heads=24, num_key_value_heads=8, intermediate_size=8192),
    "7b": dict(COMMON, hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32, intermediate_size=11008),
}
SHAPE = SHAPES["1b"]  # set from --size in main()

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

# the reference alone, in its own process: transformers' float32 model through porter's own runner (as `porter verify`
# runs it), on batch 1 x SEQ token ids (no padding); its outputs become `porter verify --expected`, so the float32
# reference and the written SavedModel are never in memory together
RECORD = r"""
import json, sys
from pathlib import Path
import numpy as np
from porter.readers.artifacts import detect
from porter.verifiers.runners import open_runner
from porter.zoo.keras_hub.entry import input_sets

ckpt, seq, folder = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
feed = input_sets(json.loads((ckpt / "config.json").read_text()), shapes=[(1, seq)])[0]
runner = open_runner(detect(ckpt), device="cpu")
runner.activate()
outputs = runner.infer(feed)
np.savez(folder / "inputs.npz", **feed)
np.savez(folder / "expected.npz", **{k: np.asarray(v, dtype=np.float32) for k, v in outputs.items()})
print(json.dumps({k: list(np.shape(v)) for k, v in outputs.items()}))
"""

SIZE = "1b"
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
    folder = root / f"llama-{SIZE}-{dtype}"
    stamp = {"shape": SHAPE, "dtype": dtype, "shard_gb": shard_gb}
    if not (folder / "stamp.json").is_file() or json.loads((folder / "stamp.json").read_text()) != stamp:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        wall, rss, out = run([sys.executable, "-c", MAKE, str(folder), dtype, str(int(shard_gb * 2**30)), json.dumps(SHAPE)])
        print(f"made {folder}: {out.strip()} in {wall:.0f} s, generator peak RSS {rss:.0f} MB", flush=True)
        (folder / "stamp.json").write_text(json.dumps(stamp))
    return folder, sum(p.stat().st_size for p in folder.glob("*.safetensors")) / 2**20


def convert(porter: str, ckpt: Path, out: Path, verify: bool = False, reference_dtype: str | None = None,
            verify_blocks: bool = False) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    wall, rss, stdout = run([porter, "-q", "convert", str(ckpt), "--from", "torch", "--to", "tf", "--out", str(out)]
                            + ([] if verify else ["--no-verify"]) + (["--verify-blocks"] if verify_blocks else [])
                            + (["--reference-dtype", reference_dtype] if reference_dtype else []), check=not verify)
    report = json.loads((out / "porter_report.json").read_text())
    written = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 2**20
    estimate = report.get("memory_estimate_mb", {})
    predicted = estimate.get("rss_at_estimate", 0) + estimate.get("total", float("nan"))
    return {"whole_s": wall, "whole_rss_mb": rss, "timings": report["timings"], "dtype": report.get("dtype"),
            "peak_rss_marks": report.get("peak_rss_mb", {}), "written_mb": written, "predicted_mb": predicted,
            "status": report.get("status"), "estimate": estimate, "reference": report.get("reference"),
            "compared": _compared(report.get("verification")), "blockwise": report.get("blockwise")}


def _compared(verification) -> list[str]:
    """What a verifying convert compared, one line per shape and output (reference dtype, max abs, tolerances)."""
    if not verification:
        return []
    return [f"{s['label']} {o['name']} {list(o['shape'])}: reference {o['dtype']}, candidate {o['candidate_dtype']}, "
            f"max abs {o['max_abs']:.4g}, atol {o['atol']:.4g} rtol {o['rtol']:.4g} ({o['tolerance_from']}), "
            f"{o['mismatched']} outside, {'pass' if o['passed'] else 'FAIL'}"
            for s in verification["shapes"] for o in s["outputs"]] + [f"note: {n}" for n in verification.get("notes", [])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SHAPES), default="1b", help="the Llama shape (default 1b)")
    parser.add_argument("--dtypes", default="bfloat16,float32", help="checkpoint dtypes, comma-separated (default bfloat16,float32)")
    parser.add_argument("--convert-verify", action="store_true", help="convert with porter's own verification (not --no-verify)")
    parser.add_argument("--reference-dtype", choices=("auto", "float32", "checkpoint"), default=None,
                        help="with --convert-verify: porter convert --reference-dtype (default: porter's own, auto)")
    parser.add_argument("--verify-blocks", action="store_true",
                        help="with --convert-verify: porter convert --verify-blocks (every block also verified in float32)")
    parser.add_argument("--reps", type=int, default=1, help="conversions per dtype, alternating dtypes (default 1)")
    parser.add_argument("--ckpt-root", type=Path, default=None, help="where the checkpoints are cached (default $TMPDIR/porter-llama-SIZE)")
    parser.add_argument("--shard-gb", type=float, default=1.0, help="largest shard (GiB, default 1)")
    parser.add_argument("--keep-out", action="store_true", help="keep the converted folders (beside the checkpoints)")
    parser.add_argument("--verify-shape", default=None, help="also run `porter verify CKPT OUT --shape S` once per dtype")
    parser.add_argument("--verify-recorded", type=int, default=None, metavar="SEQ",
                        help="verify in two processes that fit where reference + candidate do not: the float32 reference "
                             "records its outputs on 1xSEQ ids, then `porter verify --inputs --expected` runs the written model")
    args = parser.parse_args()
    global SHAPE, SIZE
    SHAPE, SIZE = SHAPES[args.size], args.size
    args.ckpt_root = args.ckpt_root or Path(tempfile.gettempdir()) / f"porter-llama-{args.size}"
    porter = shutil.which("porter") or sys.exit("the porter command is not on PATH (pip install -e .)")
    dtypes = args.dtypes.split(",")
    ckpts = {d: checkpoint(args.ckpt_root, d, args.shard_gb) for d in dtypes}
    run([sys.executable, "-c", FLOOR])  # warm the page cache before timing
    rows: dict[str, list[dict]] = {d: [] for d in dtypes}
    floors = []
    for rep in range(args.reps):
        floors.append(run([sys.executable, "-c", FLOOR])[:2])
        for d in (dtypes if rep % 2 == 0 else dtypes[::-1]):
            row = convert(porter, ckpts[d][0], args.ckpt_root / f"out-{d}", args.convert_verify, args.reference_dtype,
                          args.verify_blocks)
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
    if args.verify_recorded:
        for d in dtypes:
            work = args.ckpt_root / f"recorded-{d}"
            work.mkdir(exist_ok=True)
            rec = run([sys.executable, "-c", RECORD, str(ckpts[d][0]), str(args.verify_recorded), str(work)])
            wall, rss, stdout = run([porter, "verify", str(ckpts[d][0]), str(args.ckpt_root / f"out-{d}"),
                                     "--inputs", str(work / "inputs.npz"), "--expected", str(work / "expected.npz")], check=False)
            lines = stdout.strip().splitlines()
            verified[f"{d} recorded"] = (wall, rss, [f"reference (float32, own process): {rec[0]:.1f} s, peak RSS {rec[1]:.0f} MB, "
                                                    f"outputs {rec[2].strip()}"]
                                         + [ln for ln in lines if "│" in ln or ln.startswith(("dtype", "failed", "exit code"))])
    if not args.keep_out:
        for d in dtypes:
            shutil.rmtree(args.ckpt_root / f"out-{d}", ignore_errors=True)
    report(rows, ckpts, floors, verified, args.reps)


def report(rows: dict, ckpts: dict, floors: list, verified: dict, reps: int) -> None:
    floor_s = statistics.median(f[0] for f in floors)
    floor_mb = statistics.median(f[1] for f in floors)
    print(f"\n{SIZE.upper()}-shaped Llama ({', '.join(f'{k}={v}' for k, v in SHAPE.items())}), LlamaForCausalLM, random weights; "
          f"medians of {reps} run(s); machine load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cpus")
    print(f"import-only floor (torch+tensorflow+keras_hub+transformers): {floor_s:.1f} s, {floor_mb:.0f} MB")

    def med(d, get):
        return statistics.median(get(r) for r in rows[d])

    order = ["load_and_map_s", "export_s", "keras_save_s", "save_s"]  # save = export + keras_save
    steps = sorted({k for d in rows for r in rows[d] for k in r["timings"]}, key=lambda k: order.index(k) if k in order else 9)
    print(f"{'checkpoint':>10s}{'ckpt MB':>9s}{'out MB':>8s}" + "".join(f"{s.removesuffix('_s'):>13s}" for s in steps)
          + f"{'whole s':>9s}{'peak MB':>9s}{'above floor':>12s}{'/ ckpt':>8s}{'estimate MB':>12s}{'est/peak':>9s}")
    for d in rows:
        size = ckpts[d][1]
        peak = med(d, lambda r: r["whole_rss_mb"])
        cells = "".join(f"{med(d, lambda r: r['timings'].get(s, float('nan'))):>13.1f}" for s in steps)
        print(f"{d:>10s}{size:>9.0f}{med(d, lambda r: r['written_mb']):>8.0f}{cells}{med(d, lambda r: r['whole_s']):>9.1f}"
              f"{peak:>9.0f}{peak - floor_mb:>12.0f}{(peak - floor_mb) / size:>8.2f}"
              f"{med(d, lambda r: r['predicted_mb']):>12.0f}{med(d, lambda r: r['predicted_mb']) / peak:>9.2f}")
    for d in rows:
        marks = rows[d][-1]["peak_rss_marks"]
        if marks:
            print(f"{d}: porter's peak-RSS marks (MB, peak so far after each step): "
                  + ", ".join(f"{k} {v:.0f} (+{v - floor_mb:.0f} over floor)" for k, v in marks.items())
                  + f"; dtype {rows[d][-1]['dtype']}; status {rows[d][-1]['status']}")
            print(f"{d}: porter's estimate (MB): {rows[d][-1]['estimate']}")
        if rows[d][-1]["reference"]:
            print(f"{d}: reference {rows[d][-1]['reference']}")
            print("   " + "\n   ".join(rows[d][-1]["compared"]))
        blocks = rows[d][-1]["blockwise"]
        if blocks:  # verifiers/blockwise.py: per block max abs error and seconds
            print(f"{d}: {blocks['verified']}: {blocks['seconds']:.1f} s, {blocks['seconds_per_block']:.2f} s per block, "
                  f"worst {blocks['worst_block']} {blocks['worst_max_abs']:.3g}; failed {blocks['failed']}")
            print("   " + ", ".join(f"{b['name']} {b['max_abs']:.2g} ({b['seconds']:.1f} s)" for b in blocks["blocks"]))
    for d, (wall, rss, tail) in verified.items():
        print(f"verify {d}: {wall:.1f} s, peak RSS {rss:.0f} MB")
        print("   " + "\n   ".join(tail))


if __name__ == "__main__":
    main()

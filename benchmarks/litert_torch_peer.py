"""porter's `--to tflite` against litert-torch (Google's PyTorch -> LiteRT converter), model by model.

For each architecture of benchmarks/tflite_architectures.py (tiny configs of graph_architectures.py, informative
weights), saved once with save_pretrained from porter's venv; then, each in its own process:

    porter:        porter convert DIR --from torch --to tflite --no-verify        (timed as a whole process)
    litert-torch:  the peer venv's python loads DIR with from_pretrained and calls
                   litert_torch.convert(model, (), sample_kwargs, dynamic_shapes=...) with porter's own
                   dynamic dims (graph_architectures.dynamic_shapes: batch, sequence, height/width), falling
                   back to Dim.AUTO and then to static shapes where the export or the conversion refuses
                   (timed as a whole process and as the convert call alone)

The peer lives in its own venv (default /work/peers/litert-torch: torch 2.13.0, litert-torch 0.10,
transformers 5.23.0; porter's venv never imports it). Both .tflite files are then run in one process that imports
numpy and ai_edge_litert only, with the same inputs, at text 1x9 and 3x33 (right-padded mask in the last row),
images at batch 1 and 3 (32x32), compared with torch eager (max abs over every output), and timed in paired
rounds: per round each model runs a block of calls (the order alternating round by round), one thread each; the
latency columns are the median per-call time over the rounds, at the larger shape.

Columns: ok/err, worst max abs, seconds (whole process), per-call latency in ms (larger shape), builtin op
count / Flex ops, .tflite size; for litert-torch also the convert call alone and the dynamic dims the .tflite
kept (-1 in its shape_signature). "better": the one that passes, then the faster at run time (10% margin).

    python benchmarks/litert_torch_peer.py [--only bert,gpt2,...] [--peer /work/peers/litert-torch] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import graph_architectures as ga  # noqa: E402
import tflite_architectures as ta  # noqa: E402

ATOL = 1e-4  # the table's pass mark for both sides (porter's fp32 default is tighter on hidden states: 1e-5)

# run in the peer's venv: load the saved folder, convert with litert-torch, write model.tflite and a JSON line
PEER = r"""
import json, os, sys, time, warnings
t_start = time.perf_counter()
warnings.filterwarnings("ignore")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
bench, name, src, out = sys.argv[1:5]
sys.path.insert(0, bench)
import graph_architectures as ga, tflite_architectures as ta
import importlib, torch, transformers
import litert_torch
from transformers.models.auto.configuration_auto import model_type_to_module_name
arch = ta._arch(name)
cls = getattr(transformers, arch.cls, None)
if cls is None:
    module = model_type_to_module_name(arch.model_type)
    cls = getattr(importlib.import_module(f"transformers.models.{module}.modeling_{module}"), arch.cls)
try:
    model = cls.from_pretrained(src, attn_implementation=arch.attn).eval()
except (ValueError, ImportError):
    model = cls.from_pretrained(src, attn_implementation="eager").eval()


class Bound(torch.nn.Module):  # non-tensor arguments (use_cache=False) bound: signatures take tensors only
    def __init__(self, model, extra):
        super().__init__()
        self.model, self.extra = model, extra

    def forward(self, input_ids=None, attention_mask=None, pixel_values=None, input_values=None, input_features=None,
                decoder_input_ids=None):
        given = dict(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values,
                     input_values=input_values, input_features=input_features, decoder_input_ids=decoder_input_ids)
        return self.model(**{k: v for k, v in given.items() if v is not None}, **self.extra)


model = Bound(model, arch.extra).eval()
sample = ga.feeds(arch, *ga._shapes(arch)[0])
wanted = json.loads(sys.argv[5])  # label -> {input: shape} the runs will feed
result = {"errors": [], "litert_torch": litert_torch.__version__, "torch": torch.__version__}
t_ready = time.perf_counter()

def say(mode, error):
    text = str(error).strip()
    result["errors"].append(f"{mode}: {type(error).__name__}: {text.splitlines()[0][:300] if text else ''}")

def batch_only(dims):  # porter's dims with every axis but the batch made static
    return {k: ({0: v[0]} if v and 0 in v else None) for k, v in dims.items()}

def covers(path):  # the .tflite's signature takes every wanted shape (its -1 dims where they differ)
    from ai_edge_litert.interpreter import Interpreter
    it = Interpreter(model_path=path)
    details = it.get_signature_runner().get_input_details()
    result["signature"] = {n: [int(x) for x in d["shape_signature"]] for n, d in details.items()}
    return all(all(want == got or got == -1 for want, got in zip(shape, details[n]["shape_signature"]))
               for shapes in wanted.values() for n, shape in shapes.items() if n in details)

for mode in ("dims", "batch", "auto"):
    t0 = time.perf_counter()
    try:
        dims = ga.dynamic_shapes(arch, sample, "dims" if mode == "batch" else mode)
        dims = {k: v for k, v in dims.items() if k in sample} if dims else None
        edge = litert_torch.convert(model, (), sample, dynamic_shapes=batch_only(dims) if mode == "batch" else dims)
        edge.export(out)
        result.update(mode=mode, convert_s=time.perf_counter() - t0)
        break
    except Exception as error:
        say(mode, error)
        torch._dynamo.reset()
if "mode" not in result or not covers(out):
    # litert-torch's own way with static shapes: one signature per shape in one .tflite
    result["dynamic_mode"] = result.pop("mode", None)
    t0 = time.perf_counter()
    try:
        converter = None
        for label in wanted:
            feeds = ga.feeds(arch, *[int(x) for x in label.split("x")])
            add = litert_torch.signature if converter is None else converter.signature
            converter = add(label, model, (), feeds)
        converter.convert().export(out)
        result.update(mode="per-shape", convert_s=time.perf_counter() - t0)
    except Exception as error:
        say("per-shape", error)
result["load_s"] = t_ready - t_start
print("PEER-RESULT " + json.dumps(result))
"""

# run in porter's venv, importing numpy and ai_edge_litert only: both .tflite files at the same inputs
RUNNER = r"""
import json, statistics, sys, time
import numpy as np
from ai_edge_litert.interpreter import Interpreter
spec = json.loads(open(sys.argv[1]).read())

class Lite:
    # one .tflite; prepare(label, feeds) picks the signature named label where there is one (litert-torch's
    # per-shape signatures), else the default, resizes and allocates once; a call sets the inputs and invokes
    def __init__(self, path):
        self.it = Interpreter(model_path=path, num_threads=spec["threads"])
        self.signatures = self.it.get_signature_list()
    def prepare(self, label, feeds):
        key = label if label in self.signatures else (
            "serving_default" if "serving_default" in self.signatures else next(iter(self.signatures)))
        runner = self.it.get_signature_runner(key)
        self.w, self.sub = runner._interpreter_wrapper, runner._subgraph_index
        inputs, self.outputs = runner._inputs, dict(runner._outputs)
        details = runner.get_input_details()
        extra = {n: np.zeros_like(feeds["input_ids"]) for n in inputs if n == "token_type_ids" and n not in feeds}
        feeds = {**feeds, **extra}  # torch's default token_type_ids: zeros
        missing = sorted(set(inputs) - set(feeds))
        if missing:
            raise KeyError(f"inputs {missing} not fed (has {sorted(inputs)}, fed {sorted(feeds)})")
        for name, index in inputs.items():
            self.w.ResizeInputTensor(index, np.array(feeds[name].shape, dtype=np.int32), False, self.sub)
        self.w.AllocateTensors(self.sub)
        self.feeds = [(index, np.ascontiguousarray(feeds[name].astype(details[name]["dtype"])))
                      for name, index in inputs.items()]
    def __call__(self):
        for index, value in self.feeds:
            self.w.SetTensor(index, value, self.sub)
        self.w.Invoke(self.sub)
    def results(self):
        return {name: self.w.GetTensor(index, self.sub) for name, index in self.outputs.items()}

def match(expected, got):
    # torch leaves in order against the .tflite's outputs: by name where they agree, else by order of name
    names = sorted(got, key=lambda n: (len(n), n))
    worst, problems = 0.0, []
    for i, (key, want) in enumerate(expected.items()):
        name = key if key in got else (names[i] if i < len(names) else None)
        if name is None:
            problems.append(f"{key}: no output"); worst = float("inf"); continue
        value = got[name]
        if value.shape != want.shape:
            problems.append(f"{key}: shape {value.shape} != {want.shape}"); worst = float("inf"); continue
        error = float(np.abs(value.astype(np.float64) - want.astype(np.float64)).max()) if want.size else 0.0
        worst = max(worst, error if np.isfinite(error) else float("inf"))
    return worst, problems

report = {}
models = {}
for side, path in spec["models"].items():
    try:
        models[side] = Lite(path)
    except Exception as error:
        report[side] = {"error": f"load: {type(error).__name__}: {error}"[:300]}
for label, case in spec["cases"].items():
    data = np.load(case)
    feeds = {k[3:]: data[k] for k in data.files if k.startswith("in/")}
    expected = {k[4:]: data[k] for k in data.files if k.startswith("out/")}
    ready = {}
    for side, lite in models.items():
        entry = report.setdefault(side, {}).setdefault("shapes", {})
        try:
            lite.prepare(label, feeds); lite()
            worst, problems = match(expected, lite.results())
            entry[label] = {"max_abs": worst, "problems": problems}
            ready[side] = lite
        except Exception as error:
            entry[label] = {"max_abs": float("inf"), "problems": [f"{type(error).__name__}: {str(error)[:200]}"]}
    if len(ready) < 1:
        continue
    # paired rounds: a block of calls per model per round, the order alternating
    block = {}
    for side, lite in ready.items():
        t0, n = time.perf_counter(), 0
        while time.perf_counter() - t0 < 0.02 or n < 3:
            lite(); n += 1
        block[side] = n
    times = {side: [] for side in ready}
    order = list(ready)
    for r in range(spec["rounds"]):
        for side in (order if r % 2 == 0 else order[::-1]):
            lite, n = ready[side], block[side]
            t0 = time.perf_counter()
            for _ in range(n):
                lite()
            times[side].append((time.perf_counter() - t0) / n * 1e3)
    for side in ready:
        report[side]["shapes"][label]["ms"] = statistics.median(times[side])
    if len(ready) == 2:
        a, b = (times[s] for s in order)
        report.setdefault("ratio", {})[label] = {"sides": order,
                                                 "median": statistics.median(x / y for x, y in zip(a, b))}
print("RUNNER-RESULT " + json.dumps(report))
"""


def describe(path: Path) -> dict:
    """builtin / Flex / custom ops and input shape signatures, from the flatbuffer (porter's reader)."""
    from porter.routes.graph_tflite import describe as read

    found = read(path)
    return {"builtins": sum(c for op, c in found["ops"].items() if op not in found["flex_ops"] and op not in found["custom_ops"]),
            "distinct": len(found["ops"]), "flex": found["flex_ops"], "custom": found["custom_ops"],
            "inputs": {n: d["shape_signature"] for n, d in found["inputs"].items()}, "bytes": path.stat().st_size}


def _tail(text: str, n: int = 300) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[-3:])[-n:]


def porter_side(src: Path, out: Path, env: dict) -> dict:
    porter = str(Path(sys.executable).parent / "porter")
    porter = porter if Path(porter).exists() else shutil.which("porter")
    t0 = time.perf_counter()
    proc = subprocess.run([porter, "-q", "convert", str(src), "--from", "torch", "--to", "tflite", "--out", str(out),
                           "--no-verify", "--force"], capture_output=True, text=True, env=env)
    row = {"seconds": time.perf_counter() - t0}
    if proc.returncode != 0 or not (out / "model.tflite").exists():
        row["error"] = f"exit {proc.returncode}: {_tail(proc.stdout + proc.stderr)}"
    return row


def peer_side(name: str, src: Path, out: Path, peer: Path, env: dict, wanted: dict) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run([str(peer / "bin" / "python"), "-c", PEER, str(HERE), name, str(src), str(out), json.dumps(wanted)],
                          capture_output=True, text=True, env=env)
    row = {"seconds": time.perf_counter() - t0}
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("PEER-RESULT ")), None)
    if line is None:
        row["error"] = f"exit {proc.returncode}: {_tail(proc.stdout + proc.stderr)}"
        return row
    row.update(json.loads(line[len("PEER-RESULT "):]))
    if "mode" not in row:
        row["error"] = " || ".join(row["errors"])
    return row


def cases(arch, model, work: Path) -> dict:
    """label -> .npz with in/NAME (the inputs) and out/NAME (torch eager, leaves in order)."""
    import numpy as np
    import torch

    shapes = [(b, 32, 32) for (b,) in ta.IMAGE_SHAPES] if arch.kind == "vision" else ta.TEXT_SHAPES
    if arch.kind == "features":
        shapes = [(b, 32) for b, _ in ta.TEXT_SHAPES]  # whisper-encoder: mel frames fixed by max_source_positions
    found = {}
    for shape in shapes:
        sample = ga.feeds(arch, *shape)
        with torch.no_grad():
            output = model(**sample, **arch.extra)
        items = output.items() if hasattr(output, "items") else enumerate(ga._leaves(output))
        outs = {str(k): v.numpy() for k, v in items if hasattr(v, "shape")}
        label = "x".join(map(str, shape))
        path = work / f"{arch.name}-{label}.npz"
        np.savez(path, **{f"in/{k}": v.numpy() for k, v in sample.items()}, **{f"out/{k}": v for k, v in outs.items()})
        found[label] = str(path)
    return found


def run(name: str, work: Path, peer: Path, rounds: int, threads: int) -> dict:
    import numpy as np
    import torch

    arch = ta._arch(name)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    src = work / name
    model = ga.build(arch)
    model.save_pretrained(src)
    labels = cases(arch, model, work)
    del model
    torch._dynamo.reset()
    paths = {"porter": work / f"{name}-porter", "litert-torch": work / f"{name}-litert"}
    sides = {"porter": porter_side(src, paths["porter"], env)}
    paths["litert-torch"].mkdir(exist_ok=True)
    wanted = {label: {k[3:]: list(np.load(case)[k].shape) for k in np.load(case).files if k.startswith("in/")}
              for label, case in labels.items()}
    sides["litert-torch"] = peer_side(name, src, paths["litert-torch"] / "model.tflite", peer, env, wanted)
    models = {}
    for side, row in sides.items():
        file = paths[side] / "model.tflite"
        if "error" not in row and file.exists():
            row.update(describe(file))
            models[side] = str(file)
    spec = work / f"{name}-spec.json"
    spec.write_text(json.dumps({"models": models, "cases": labels, "rounds": rounds, "threads": threads}))
    if models:
        proc = subprocess.run([sys.executable, "-c", RUNNER, str(spec)], capture_output=True, text=True, env=env)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RUNNER-RESULT ")), None)
        if line is None:
            for side in models:
                sides[side]["error"] = f"runner exit {proc.returncode}: {_tail(proc.stdout + proc.stderr)}"
        else:
            ran = json.loads(line[len("RUNNER-RESULT "):])
            for side in models:
                sides[side].update(ran.get(side, {}))
            sides["ratio"] = ran.get("ratio", {})
    return {"arch": name, "labels": list(labels), **sides}


def _verdict(side: dict, labels: list[str]) -> tuple[bool, float, str]:
    if "error" in side:
        return False, float("inf"), "err"
    shapes = side.get("shapes", {})
    worst = max((shapes.get(l, {}).get("max_abs", float("inf")) for l in labels), default=float("inf"))
    ok = worst <= ATOL and all(not shapes.get(l, {}).get("problems") for l in labels)
    return ok, worst, "ok" if ok else ("err" if worst == float("inf") else "FAIL")


def _dims(side: dict) -> str:
    """The dynamic (-1) axes of the .tflite's inputs: "0,1 x3" when every input keeps the same ones."""
    if "inputs" not in side:
        return "-"
    kept = {n: ",".join(str(i) for i, d in enumerate(s) if d == -1) for n, s in side["inputs"].items()}
    if side.get("mode") == "per-shape":
        dynamic = side.get("dynamic_mode")
        return "static: a signature per shape" + (f" ({dynamic} converted, too few dims)" if dynamic else "")
    if not any(kept.values()):
        text = "static"
    elif len(set(kept.values())) == 1:
        text = f"{next(iter(kept.values()))} x{len(kept)}" if len(kept) > 1 else f"{next(iter(kept))}:{next(iter(kept.values()))}"
    else:
        text = " ".join(f"{n}:{v or '-'}" for n, v in kept.items())
    mode = side.get("mode", "")
    return text + (f" ({mode})" if mode and mode != "dims" else "")


def table(rows: list[dict]) -> str:
    head = (f"{'architecture':<16} | {'porter':<6} {'max abs':>8} {'s':>5} {'ms':>7} {'ops':>4} {'KiB':>5} | "
            f"{'litert':<6} {'max abs':>8} {'s':>5} {'conv s':>6} {'ms':>7} {'ops':>4} {'flex':>4} {'KiB':>5} "
            f"{'dims kept':<30} | {'lit/por':>7} | better")
    lines = [head, "-" * len(head)]
    for row in rows:
        labels, big = row["labels"], row["labels"][-1]
        cells, verdicts = [], {}
        for side in ("porter", "litert-torch"):
            s = row[side]
            ok, worst, status = _verdict(s, labels)
            verdicts[side] = ok
            ms = s.get("shapes", {}).get(big, {}).get("ms")
            common = (f"{status:<6} {worst:>8.1e} {s['seconds']:>5.1f} " if worst != float("inf") else
                      f"{status:<6} {'-':>8} {s['seconds']:>5.1f} ")
            if side == "litert-torch":
                common += f"{s.get('convert_s', float('nan')):>6.1f} "
            common += f"{ms:>7.3f} " if ms is not None else f"{'-':>7} "
            common += f"{s.get('builtins', '-'):>4} "
            if side == "litert-torch":
                common += f"{len(s.get('flex', [])) if 'flex' in s else '-':>4} "
            common += f"{s['bytes'] / 1024:>5.0f}" if "bytes" in s else f"{'-':>5}"
            common += f" {_dims(s):<30}" if side == "litert-torch" else f" {_dims(s):<18}"
            cells.append(common)
        ratio = row.get("ratio", {}).get(big)
        rel = None
        if ratio:
            rel = ratio["median"] if ratio["sides"][0] == "litert-torch" else 1 / ratio["median"]
        if verdicts["porter"] and not verdicts["litert-torch"]:
            better = "porter (litert-torch fails)"
        elif verdicts["litert-torch"] and not verdicts["porter"]:
            better = "litert-torch (porter fails)"
        elif not any(verdicts.values()):
            better = "neither"
        elif rel is not None and rel < 0.9:
            better = "litert-torch (faster)"
        elif rel is not None and rel > 1.1:
            better = "porter (faster)"
        else:
            better = "tie at run time"
        lines.append(f"{row['arch']:<16} | {cells[0]} | {cells[1]} | {f'{rel:.2f}' if rel else '-':>7} | {better}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="comma-separated architecture names (default: %s)" % ",".join(ta.DEFAULT))
    parser.add_argument("--peer", type=Path, default=Path("/work/peers/litert-torch"), help="litert-torch's venv")
    parser.add_argument("--rounds", type=int, default=15, help="paired latency rounds per shape")
    parser.add_argument("--threads", type=int, default=1, help="LiteRT threads, both sides")
    parser.add_argument("--keep", type=Path, help="keep the folders, .tflite files and a results.json here")
    args = parser.parse_args(argv)
    if not (args.peer / "bin" / "python").exists():
        parser.error(f"no peer venv at {args.peer}: python3.11 -m venv {args.peer} && {args.peer}/bin/pip install "
                     "torch==2.13.0 'litert-torch==0.10.*' transformers==5.23.0")
    names = args.only.split(",") if args.only else ta.DEFAULT
    for n in names:
        ta._arch(n)
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("torch").setLevel(logging.ERROR)
    rows = []
    with tempfile.TemporaryDirectory(prefix="porter-litert-peer-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for name in names:
            t0 = time.perf_counter()
            try:
                row = run(name, work, args.peer, args.rounds, args.threads)
            except Exception as error:  # noqa: BLE001 - one row per architecture, whatever happened
                row = {"arch": name, "labels": ["-"], "porter": {"error": repr(error)[:300], "seconds": 0.0},
                       "litert-torch": {"error": "not run", "seconds": 0.0}}
            rows.append(row)
            for side in ("porter", "litert-torch"):
                s = row[side]
                problems = [f"{l}: {'; '.join(v.get('problems', []))}" for l, v in s.get("shapes", {}).items() if v.get("problems")]
                if "error" in s or problems or s.get("errors"):
                    print(f"  {name} {side}: {s.get('error', '')} {' '.join(problems)} "
                          f"{'(fallbacks: ' + ' || '.join(s['errors']) + ')' if s.get('errors') else ''}"[:900], flush=True)
            print(f"  {name} done in {time.perf_counter() - t0:.0f}s", flush=True)
            if args.keep:
                (work / "results.json").write_text(json.dumps(rows, indent=1, default=str))
        print()
        print(table(rows))
    print(f"\nmax abs: worst over every output at {', '.join(rows[0]['labels'])} against torch eager (pass <= {ATOL:g}); "
          f"ms: median per-call LiteRT latency at the larger shape, {args.threads} thread(s), {args.rounds} paired rounds; "
          "lit/por: litert-torch's time over porter's (median of the per-round ratios)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

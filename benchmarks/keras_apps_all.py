"""Every model in keras.applications (weights=None, conditioned: residual branches damped, batch norms
calibrated then perturbed - see ``build``), converted TF -> torch by `porter convert --route auto` in a
subprocess per model; prints per model the route taken, the verified max abs on the logits (target <= 1e-4),
the seconds and the peak RSS of the conversion. Verified on the model's own inputs (``images``: random pixels
through its preprocess_input, batches 1 and 3). Every model written also gets, from one child process, the
floor proxy and the logits' std across inputs (``conditioning``), then two float64 numbers (``fp64``): the
written torch model in float64 (.double()) against Keras rebuilt in float64 (verifiers' keras_in_float64) -
the translation's own error, ~1e-13 when it is exact - and the float32 floor, Keras float32 against Keras
float64 on the same inputs: float32 rounding alone, which no converter can be expected to beat by much.

    python benchmarks/keras_apps_all.py [--size 96] [--models A,B] [--timeout 120] [--fp64-timeout S] [--out DIR]
                                        [--default-tolerances] [--calibrated-only] [--no-fp64]
    (giants: wrap in `flock /tmp/porter-heavy.lock` on a shared machine; the float64 child holds Keras in
    float32 and float64 and torch in float64 at once, ~3.5x the float32 weights)

Models run smallest first (parameter count), so a slow giant at the end costs only its own timeout.
A model past --timeout is killed and reported as such; its row says "timeout".

--default-tolerances: convert with porter's default verdict (no --atol/--rtol: each output judged against
    float32's own floor, |candidate - ref64| <= 8 x max|ref32 - ref64| + 4 ulps); a row passes when porter exits
    0 and its report says "passed", and shows the worst err/floor ratio over outputs and shapes from the
    report's ``noise_floor`` summary (the rule that judged, "fixed" where the floor could not be used).
--calibrated-only: build without the conditioning (``build`` with damp=1, beta=0: no residual damping, batch
    norms' beta at 0; only the calibration and the perturbation), the test models as they were before.
--no-fp64: skip the float64 child of a model that passed (it is slow; the default verdict already runs the
    reference in float64); a model that failed still gets it, to tell a false failure (the translation exact
    in float64) from a real one.
Every row is also appended to DIR/rows.jsonl when --out is given.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ATOL = 1e-4
DAMP = 0.2
BETA = 1.0
MIN_SIZE = {"InceptionV3": 75, "InceptionResNetV2": 75, "Xception": 71}


def app_names() -> list[str]:
    from porter.process.frameworks import keras

    apps = keras().applications
    return sorted(n for n in dir(apps) if n[:1].isupper() and callable(getattr(apps, n)))


def images(name: str, n: int, size: int, rng) -> np.ndarray:
    """What the model is fed in use: uniform random pixels (0..255) through its own module's preprocess_input.
    EfficientNet, EfficientNetV2, MobileNetV3 and ConvNeXt rescale inside the model (preprocess_input is the
    identity); fed N(0, 1) instead, their pixels are ~0 +- 0.004 after Rescaling(1/255), the first norms
    divide by that tiny spread, and float32 rounding alone then moved the logits by up to 3e-2 (EfficientNetV2B1:
    Keras float32 against Keras float64), far above what any converter can match."""
    import importlib

    from porter.process.frameworks import keras

    module = importlib.import_module(getattr(keras().applications, name).__module__)
    pixels = rng.uniform(0.0, 255.0, (n, size, size, 3)).astype("float32")
    return np.asarray(module.preprocess_input(pixels), dtype="float32")


def build(name: str, size: int, seed: int = 0, calib: int = 16, damp: float = DAMP, beta: float = BETA):
    """``keras.applications.<name>``, random weights, logits out (no softmax), **conditioned** so that
    float32 can test it. A reference whose own float32 rounding error (Keras float32 against Keras float64)
    exceeds the tolerance cannot test a converter; random-init nets are ill-conditioned two ways, each
    answered by one rule for every model (no per-model settings):

    - residual stacks add a unit-variance branch per block, so deep ones (ResNet152, EfficientNetB7) grow
      chaotic: EfficientNetB7's float32 floor was 0.45, V2L's 1.3. Every residual branch's output is
      scaled by ``damp`` (0.2) before calibration (``damp_residual_branches``: torchvision's
      zero_init_residual / Goyal et al.'s zero-gamma / Fixup, but not 0, so each branch still counts);
    - a BatchNormalization then ReLU amplifies a perturbation by sqrt(pi / (pi - 1)) ~ 1.21 per layer at
      beta = 0 (the norm removes the ReLU output's mean, the perturbation passes; Yang et al. 2019), so
      InceptionV3 (no residuals) had a floor of 1.8e-4. Every batch norm's beta starts at ``beta`` (1):
      84% of the units are on the linear side, ~1.06 per layer.

    Otherwise as before: gamma (x 1 + N(0, 0.2)) and beta (+ N(0, 0.2)) perturbed (before the damping, which
    scales them); one training-mode pass
    (momentum 0, dropout off: EfficientNet's stochastic depth would drop whole residual branches from the
    statistics) over ``calib`` images (``images``) sets every moving mean and variance, so activations stay
    in range and the logits depend on the input (a random-init EfficientNet/MobileNetV3 otherwise gives
    nearly the same logits for any input); then the moving statistics are perturbed (mean + 0.1 sd,
    variance x U(0.8, 1.25)) so they are no plain re-normalisation. Perturbing beta after calibrating
    instead revives channels a later norm measured as constant (~30x gain). The head is scaled so the
    logits' std is about 2."""
    from porter.process.frameworks import keras

    k = keras()
    k.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    model = getattr(k.applications, name)(weights=None, input_shape=(size, size, 3), classifier_activation=None)
    norms = [layer for layer in model.layers if isinstance(layer, k.layers.BatchNormalization)]
    for layer in norms:
        if layer.gamma is not None:
            layer.gamma.assign((layer.gamma.numpy() * (1 + 0.2 * rng.standard_normal(layer.gamma.shape))).astype("float32"))
        if layer.beta is not None:
            layer.beta.assign((layer.beta.numpy() + beta + 0.2 * rng.standard_normal(layer.beta.shape)).astype("float32"))
    damp_residual_branches(model, damp)
    momentum = [layer.momentum for layer in norms]
    for layer in norms:
        layer.momentum = 0.0
    drops = [layer for layer in model.layers if isinstance(layer, k.layers.Dropout)]
    rates = [layer.rate for layer in drops]
    for layer in drops:  # stochastic depth would drop whole residual branches from the statistics
        layer.rate = 0.0
    model(images(name, calib, size, rng), training=True)
    for layer, rate in zip(drops, rates):
        layer.rate = rate
    for layer, m in zip(norms, momentum):
        layer.momentum = m
        for w in layer.weights:
            key = w.path.split("/")[-1]
            if key == "moving_mean":
                var = next(v for v in layer.weights if v.path.endswith("moving_variance")).numpy()
                w.assign((w.numpy() + 0.1 * np.sqrt(var) * rng.standard_normal(w.shape)).astype("float32"))
            elif key == "moving_variance":
                w.assign((w.numpy() * rng.uniform(0.8, 1.25, w.shape)).astype("float32"))
    head = [layer for layer in model.layers if any(w.path.endswith("kernel") for w in layer.weights)][-1]
    spread = float(np.std(np.asarray(model(images(name, 4, size, rng)))))
    head.set_weights([w * (2.0 / spread) for w in head.get_weights()])
    return model


def _weighted(op) -> bool:
    return bool(getattr(op, "weights", None))


def damp_residual_branches(model, factor: float) -> list[str]:
    """Scale each residual branch's last scaling layer by ``factor``; the names of the layers scaled.
    A residual branch is the input of a two-input ``Add`` with more weighted layers that the other input
    does not share (x + f(x): f's layers; a projection block conv-bn + 3x(conv-bn): the three). Its last
    scaling layer is found walking back through weightless single-input layers (Activation, Dropout): a
    BatchNormalization's gamma or a Conv/Dense kernel and bias (ResNetV2's pre-activation blocks end in a
    conv). Equal counts (NASNet's sibling cells) are no residual and are left alone."""
    from porter.process.frameworks import keras

    k = keras()
    ancestors: dict[int, frozenset] = {}

    def above(op) -> frozenset:  # every operation op depends on, op included
        if id(op) not in ancestors:
            parents = [t._keras_history.operation for node in op._inbound_nodes[:1] for t in node.input_tensors]
            ancestors[id(op)] = frozenset({op}).union(*(above(p) for p in parents))
        return ancestors[id(op)]

    scaled = []
    for add in [layer for layer in model.layers if isinstance(layer, k.layers.Add)]:
        inputs = [t._keras_history.operation for t in add._inbound_nodes[0].input_tensors]
        if len(inputs) != 2:
            continue
        a, b = above(inputs[0]), above(inputs[1])
        own = [sum(map(_weighted, a - b)), sum(map(_weighted, b - a))]
        if own[0] == own[1]:
            continue
        op = inputs[int(own[1] > own[0])]
        while not _weighted(op) and len(op._inbound_nodes[0].input_tensors) == 1:
            op = op._inbound_nodes[0].input_tensors[0]._keras_history.operation
        if isinstance(op, k.layers.BatchNormalization) and op.gamma is not None:
            for w in (op.gamma, op.beta) if op.beta is not None else (op.gamma,):
                w.assign(w.numpy() * factor)
        elif getattr(op, "kernel", None) is not None:
            op.set_weights([w * factor for w in op.get_weights()])
        else:
            continue
        scaled.append(op.name)
    return scaled


def conditioning(model, sets: dict) -> tuple[float, float]:
    """(floor proxy, logits' std across inputs) of the Keras float32 model on the verification inputs. The
    proxy is Keras float32 against itself with every input element moved by a relative 1e-7: float32 rounding
    as the model amplifies it, a stand-in for the floor where the float64 copy is too slow (ConvNeXtLarge/
    XLarge). The std (per class over the inputs of the largest set, averaged) shows the logits depend on the
    input, so the damping left the model informative."""
    rng = np.random.default_rng(2)
    proxy, largest = 0.0, None
    for x in sets.values():
        y = np.asarray(model(x))
        moved = np.asarray(model((x * (1 + 1e-7 * rng.standard_normal(x.shape))).astype("float32")))
        proxy = max(proxy, float(np.abs(moved - y).max()))
        largest = y if largest is None or len(y) > len(largest) else largest
    return proxy, float(np.std(largest, axis=0).mean())


def fp64(name: str, work: Path):
    """Print ``CONDITIONING proxy std`` (``conditioning``), then ``FLOAT64 gap floor``: the written torch
    model in float64 against Keras in float64 (the translation's error with float32 rounding taken out) and
    Keras float32 against Keras float64 (the float32 floor), max abs on the logits over the verification
    inputs."""
    import importlib.util

    import torch

    from porter.process.frameworks import keras
    from porter.verifiers.training_float64 import keras_in_float64

    model = keras().saving.load_model(str(work / f"{name}.keras"))
    with np.load(work / f"{name}.npz") as npz:
        sets = {key: npz[key] for key in npz.files}
    print("CONDITIONING", *conditioning(model, sets), flush=True)
    wide, why = keras_in_float64(model)
    if wide is None:
        raise SystemExit(f"no float64 Keras copy: {why}")
    spec = importlib.util.spec_from_file_location(f"_{name}_written", work / f"{name}-torch" / "model.py")
    written = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(written)
    torch_model = written.load(str(work / f"{name}-torch")).double()
    gap, floor = 0.0, 0.0
    with torch.no_grad():
        for x in sets.values():
            reference = np.asarray(wide(x.astype("float64")))
            got = torch_model(torch.from_numpy(x.astype("float64"))).numpy()
            gap = max(gap, float(np.abs(got - reference).max()))
            floor = max(floor, float(np.abs(np.asarray(model(x)) - reference).max()))
    print("FLOAT64", gap, floor, flush=True)


def _max_abs(report: dict) -> float:
    outs = [o for s in report.get("verification", {}).get("shapes", []) for o in s.get("outputs", [])]
    return max((float(o["max_abs"]) for o in outs), default=float("nan"))


def _child(cmd: list[str], timeout: float, log: Path) -> tuple[int | str, float, float]:
    """Run ``cmd`` (own process group, killed at ``timeout``); its exit code, seconds and peak RSS (GB)."""
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = t0 + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                proc.returncode = os.waitstatus_to_exitcode(status)
                return proc.returncode, time.perf_counter() - t0, usage.ru_maxrss / 1e6
            if time.perf_counter() > deadline:
                os.killpg(proc.pid, signal.SIGKILL)
                _, _, usage = os.wait4(proc.pid, 0)
                return "timeout", time.perf_counter() - t0, usage.ru_maxrss / 1e6
            time.sleep(0.2)


def _floor_worst(report: dict) -> dict:
    """The worst err/floor ratio over every output and shape of the report's ``noise_floor`` summary: ratio,
    error against float64, floor, output, shape, the rules that judged, and why the floor was not used."""
    summary = report.get("verification", {}).get("noise_floor") or {}
    worst = {"ratio": float("nan"), "err64": float("nan"), "floor": float("nan"), "output": "-", "at": "-",
             "rules": [], "fixed_because": []}
    for name, entry in (summary.get("outputs") or {}).items():
        worst["rules"] += [r for r in entry.get("rules", []) if r not in worst["rules"]]
        worst["fixed_because"] += [w for w in entry.get("fixed_because", []) if w not in worst["fixed_because"]]
        ratio = entry.get("worst_ratio")
        if ratio is not None and not float(ratio) <= worst["ratio"]:  # nan compares False: the first one wins
            worst.update(ratio=float(ratio), err64=float(entry["error_vs_float64"]), floor=float(entry["floor"]),
                         output=name, at=str(entry.get("at", "-")))
    return worst


def run(name: str, size: int, work: Path, timeout: float, fp64_timeout: float, default_tolerances: bool = False,
        calibrated_only: bool = False, no_fp64: bool = False) -> dict:
    src, out = work / f"{name}.keras", work / f"{name}-torch"
    row = {"model": name, "size": size, "route": "-", "max_abs": float("nan"), "seconds": float("nan"),
           "rss_gb": float("nan"), "fp64": float("nan"), "floor": float("nan"), "proxy": float("nan"),
           "std": float("nan"), "ratio": float("nan"), "err64": float("nan"), "vfloor": float("nan"),
           "worst_output": "-", "rule": "-", "status": "", "build_s": float("nan")}
    build_cmd = [sys.executable, __file__, "--build", name, "--size", str(size), "--out", str(work)]
    rc, row["build_s"], _ = _child(build_cmd + (["--calibrated-only"] if calibrated_only else []), timeout,
                                   work / f"{name}.build.log")
    if rc != 0:
        row["status"] = f"build failed ({rc}): {_tail(work / f'{name}.build.log')}"
        return row
    cmd = [sys.executable, "-m", "porter.cli", "convert", str(src), "--from", "tf", "--to", "torch",
           "--out", str(out), "--force", "--inputs", str(work / f"{name}.npz")]
    if not default_tolerances:
        cmd += ["--atol", str(ATOL), "--rtol", "0"]
    rc, row["seconds"], row["rss_gb"] = _child(cmd, timeout, work / f"{name}.convert.log")
    report_path = out / "porter_report.json"
    verdict = None
    if report_path.exists():
        report = json.loads(report_path.read_text())
        row["route"], row["max_abs"] = report.get("route", "?"), _max_abs(report)
        verdict = report.get("verification", {}).get("status")
        worst = _floor_worst(report)
        row["ratio"], row["err64"], row["vfloor"] = worst["ratio"], worst["err64"], worst["floor"]
        row["worst_output"] = f"{worst['output']} at {worst['at']}"
        row["rule"] = "floor" if worst["rules"] == ["float64 floor"] else (
            ",".join(worst["rules"]) or "-") + "".join(f" (fixed: {w})" for w in worst["fixed_because"])
    if default_tolerances:
        ok = rc == 0 and verdict == "passed"
    else:
        ok = rc == 0 and row["max_abs"] <= ATOL
    row["status"] = ("pass" if ok else
                     "timeout" if rc == "timeout" else f"FAIL ({rc}, {verdict}): {_tail(work / f'{name}.convert.log')}")
    if (out / "model.py").exists() and not (no_fp64 and ok):
        fp64_log = work / f"{name}.fp64.log"
        _child([sys.executable, __file__, "--fp64", name, "--out", str(work)], fp64_timeout, fp64_log)
        for line in fp64_log.read_text(errors="replace").splitlines():  # what it printed before any timeout
            words = line.split()
            if words[:1] == ["CONDITIONING"]:
                row["proxy"], row["std"] = float(words[1]), float(words[2])
            elif words[:1] == ["FLOAT64"]:
                row["fp64"], row["floor"] = float(words[1]), float(words[2])
    shutil.rmtree(out, ignore_errors=True)
    src.unlink(missing_ok=True)
    (work / f"{name}.npz").unlink(missing_ok=True)
    return row


def _tail(log: Path) -> str:
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    return " | ".join(lines[-2:])[:300]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--models", default=None, help="comma-separated (default: all of keras.applications)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per model, build and convert each")
    parser.add_argument("--fp64-timeout", type=float, default=None,
                        help="seconds for the float64 child (default --timeout); past it the row keeps the proxy")
    parser.add_argument("--out", default=None, help="keep logs here (default: a temporary folder)")
    parser.add_argument("--default-tolerances", action="store_true",
                        help="no --atol/--rtol: porter's default float64-floor verdict; rows show the worst err/floor")
    parser.add_argument("--calibrated-only", action="store_true",
                        help="build without the conditioning (damp 1, beta 0): calibrated and perturbed only")
    parser.add_argument("--no-fp64", action="store_true",
                        help="skip the float64 child of a model that passed (a failed one still gets it)")
    parser.add_argument("--build", default=None, help=argparse.SUPPRESS)  # child: build and save one model
    parser.add_argument("--fp64", default=None, help=argparse.SUPPRESS)  # child: the float64 numbers of one model
    args = parser.parse_args(argv)
    if args.fp64:
        fp64(args.fp64, Path(args.out))
        return 0
    if args.build:
        model = build(args.build, args.size, **(dict(damp=1.0, beta=0.0) if args.calibrated_only else {}))
        model.save(str(Path(args.out) / f"{args.build}.keras"))
        rng, name = np.random.default_rng(1), model.layers[0].name  # its InputLayer; not the calibration images
        np.savez(Path(args.out) / f"{args.build}.npz", **{f"b{n}/{name}": images(args.build, n, args.size, rng)
                                                          for n in (1, 3)})
        return 0
    work = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="porter-keras-apps-all-"))
    work.mkdir(parents=True, exist_ok=True)
    names = args.models.split(",") if args.models else app_names()
    names = sorted(names, key=_size_rank)
    variant = ("calibrated only" if args.calibrated_only else "conditioned") + ", " + (
        "default verdict (float64 floor)" if args.default_tolerances else f"--atol {ATOL:g} --rtol 0")
    print(f"# {variant}; size {args.size}; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    print(f"{'model':18s} {'px':>4s} {'route':12s} {'max abs':>9s} {'vs fp64':>9s} {'floor':>9s} {'ratio':>6s} "
          f"{'fp64':>9s} {'fp32 floor':>10s} {'proxy':>9s} {'std':>6s} {'s':>7s} {'RSS GB':>6s}  status", flush=True)
    rows, t0 = [], time.perf_counter()
    for name in names:
        row = run(name, max(args.size, MIN_SIZE.get(name, 32)), work, args.timeout, args.fp64_timeout or args.timeout,
                  args.default_tolerances, args.calibrated_only, args.no_fp64)
        row["variant"], row["load"] = variant, os.getloadavg()[0]
        rows.append(row)
        if args.out:
            with open(work / "rows.jsonl", "a") as fh:
                fh.write(json.dumps(row) + "\n")
        print(f"{row['model']:18s} {row['size']:4d} {row['route']:12s} {row['max_abs']:9.2e} {row['err64']:9.2e} "
              f"{row['vfloor']:9.2e} {row['ratio']:6.2f} {row['fp64']:9.2e} {row['floor']:10.2e} {row['proxy']:9.2e} "
              f"{row['std']:6.3f} {row['seconds']:7.1f} {row['rss_gb']:6.2f}  {row['status']}"
              + (f" [{row['rule']}; worst {row['worst_output']}]" if args.default_tolerances else ""), flush=True)
    if not args.out:
        shutil.rmtree(work, ignore_errors=True)
    passed = sum(r["status"] == "pass" for r in rows)
    judged = [r for r in rows if r["ratio"] == r["ratio"]]
    worst = max(judged, key=lambda r: r["ratio"], default=None)
    rule = "by the default verdict" if args.default_tolerances else f"at max abs <= {ATOL:g}"
    print(f"{passed}/{len(rows)} {rule} ({variant}); "
          + (f"worst err/floor {worst['ratio']:.2f} ({worst['model']}, {worst['worst_output']}); " if worst else "")
          + f"{time.perf_counter() - t0:.0f} s; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0 if passed == len(rows) else 1


# rough parameter counts (millions) so the giants run last; unknown names go last
_PARAMS = {"MobileNetV3Small": 2.5, "MobileNetV2": 3.5, "MobileNet": 4.3, "NASNetMobile": 5.3, "EfficientNetB0": 5.3,
           "MobileNetV3Large": 5.4, "EfficientNetV2B0": 7.2, "EfficientNetB1": 7.9, "DenseNet121": 8.1,
           "EfficientNetV2B1": 8.2, "EfficientNetB2": 9.2, "EfficientNetV2B2": 10.2, "EfficientNetB3": 12.3,
           "DenseNet169": 14.3, "EfficientNetV2B3": 14.5, "EfficientNetB4": 19.5, "DenseNet201": 20.2,
           "Xception": 22.9, "InceptionV3": 23.9, "ResNet50V2": 25.6, "ResNet50": 25.6, "ConvNeXtTiny": 28.6,
           "EfficientNetB5": 30.6, "EfficientNetB6": 43.3, "ResNet101V2": 44.7, "ResNet101": 44.7,
           "ConvNeXtSmall": 50.2, "InceptionResNetV2": 55.9, "ResNet152V2": 60.4, "ResNet152": 60.4,
           "EfficientNetB7": 66.7, "EfficientNetV2S": 21.6, "EfficientNetV2M": 54.4, "ConvNeXtBase": 88.6,
           "NASNetLarge": 88.9, "EfficientNetV2L": 119.0, "VGG16": 138.4, "VGG19": 143.7, "ConvNeXtLarge": 197.8,
           "ConvNeXtXLarge": 350.0}


def _size_rank(name: str) -> float:
    return _PARAMS.get(name, 1e9)


if __name__ == "__main__":
    sys.exit(main())

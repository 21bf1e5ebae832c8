"""Every model in keras.applications (weights=None, batch norms calibrated then perturbed), converted
TF -> torch by `porter convert --route auto` in a subprocess per model; prints per model the route taken,
the verified max abs on the logits (target <= 1e-4), the seconds and the peak RSS of the conversion.
Verified on the model's own inputs (``images``: random pixels through its preprocess_input, batches 1 and 3).
Every model written also gets two float64 numbers (``fp64``, one child process): the written torch model in
float64 (.double()) against Keras rebuilt in float64 (verifiers' keras_in_float64) - the translation's own
error, ~1e-13 when it is exact - and the float32 floor, Keras float32 against Keras float64 on the same
inputs: float32 rounding alone, which no converter can be expected to beat by much.

    python benchmarks/keras_apps_all.py [--size 96] [--models A,B] [--timeout 120] [--out DIR]
    (giants: wrap in `flock /tmp/porter-heavy.lock` on a shared machine; the float64 child holds Keras in
    float32 and float64 and torch in float64 at once, ~3.5x the float32 weights)

Models run smallest first (parameter count), so a slow giant at the end costs only its own timeout.
A model past --timeout is killed and reported as such; its row says "timeout".
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
MIN_SIZE = {"InceptionV3": 75, "InceptionResNetV2": 75, "Xception": 71}


def app_names() -> list[str]:
    from porter.frameworks import keras

    apps = keras().applications
    return sorted(n for n in dir(apps) if n[:1].isupper() and callable(getattr(apps, n)))


def images(name: str, n: int, size: int, rng) -> np.ndarray:
    """What the model is fed in use: uniform random pixels (0..255) through its own module's preprocess_input.
    EfficientNet, EfficientNetV2, MobileNetV3 and ConvNeXt rescale inside the model (preprocess_input is the
    identity); fed N(0, 1) instead, their pixels are ~0 +- 0.004 after Rescaling(1/255), the first norms
    divide by that tiny spread, and float32 rounding alone then moved the logits by up to 3e-2 (EfficientNetV2B1:
    Keras float32 against Keras float64), far above what any converter can match."""
    import importlib

    from porter.frameworks import keras

    module = importlib.import_module(getattr(keras().applications, name).__module__)
    pixels = rng.uniform(0.0, 255.0, (n, size, size, 3)).astype("float32")
    return np.asarray(module.preprocess_input(pixels), dtype="float32")


def build(name: str, size: int, seed: int = 0, calib: int = 16):
    """``keras.applications.<name>``, random weights, logits out (no softmax). gamma/beta are perturbed
    first; then one training-mode pass (dropout off: EfficientNet's stochastic depth would drop whole residual
    branches from the statistics) over 16 images (``images``) sets every batch norm's moving statistics
    (momentum 0), so activations stay in range and the logits depend on the input (a random-init
    EfficientNet/MobileNetV3 otherwise gives nearly the same logits for any input); then the moving
    statistics are perturbed so they are no plain re-normalisation. Perturbing beta after calibrating
    instead revives channels a later norm measured as constant (~30x gain) and float32 rounding alone then
    moves EfficientNet's logits by ~0.04. The head is scaled so the logits' std is about 2."""
    from porter.frameworks import keras

    k = keras()
    k.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    model = getattr(k.applications, name)(weights=None, input_shape=(size, size, 3), classifier_activation=None)
    norms = [layer for layer in model.layers if isinstance(layer, k.layers.BatchNormalization)]
    for layer in norms:
        for w in layer.weights:
            key = w.path.split("/")[-1]
            if key == "gamma":
                w.assign((w.numpy() * (1 + 0.2 * rng.standard_normal(w.shape))).astype("float32"))
            elif key == "beta":
                w.assign((w.numpy() + 0.2 * rng.standard_normal(w.shape)).astype("float32"))
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


def fp64(name: str, work: Path) -> tuple[float, float]:
    """(written torch model in float64 vs Keras in float64, Keras float32 vs Keras float64): max abs on the
    logits over the verification inputs. The first is the translation's error with float32 rounding taken
    out; the second is the float32 floor."""
    import importlib.util

    import torch

    from porter.frameworks import keras
    from porter.verifiers.training_float64 import keras_in_float64

    model = keras().saving.load_model(str(work / f"{name}.keras"))
    wide, why = keras_in_float64(model)
    if wide is None:
        raise SystemExit(f"no float64 Keras copy: {why}")
    spec = importlib.util.spec_from_file_location(f"_{name}_written", work / f"{name}-torch" / "model.py")
    written = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(written)
    torch_model = written.load(str(work / f"{name}-torch")).double()
    gap, floor = 0.0, 0.0
    with np.load(work / f"{name}.npz") as sets, torch.no_grad():
        for key in sets.files:
            x = sets[key]
            reference = np.asarray(wide(x.astype("float64")))
            got = torch_model(torch.from_numpy(x.astype("float64"))).numpy()
            gap = max(gap, float(np.abs(got - reference).max()))
            floor = max(floor, float(np.abs(np.asarray(model(x)) - reference).max()))
    return gap, floor


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


def run(name: str, size: int, work: Path, timeout: float) -> dict:
    src, out = work / f"{name}.keras", work / f"{name}-torch"
    row = {"model": name, "size": size, "route": "-", "max_abs": float("nan"), "seconds": float("nan"),
           "rss_gb": float("nan"), "fp64": float("nan"), "floor": float("nan"), "status": ""}
    rc, _, _ = _child([sys.executable, __file__, "--build", name, "--size", str(size), "--out", str(work)],
                      timeout, work / f"{name}.build.log")
    if rc != 0:
        row["status"] = f"build failed ({rc}): {_tail(work / f'{name}.build.log')}"
        return row
    cmd = [sys.executable, "-m", "porter.cli", "convert", str(src), "--from", "tf", "--to", "torch",
           "--out", str(out), "--force", "--atol", str(ATOL), "--rtol", "0", "--inputs", str(work / f"{name}.npz")]
    rc, row["seconds"], row["rss_gb"] = _child(cmd, timeout, work / f"{name}.convert.log")
    report_path = out / "porter_report.json"
    if report_path.exists():
        report = json.loads(report_path.read_text())
        row["route"], row["max_abs"] = report.get("route", "?"), _max_abs(report)
    row["status"] = ("pass" if rc == 0 and row["max_abs"] <= ATOL else
                     "timeout" if rc == "timeout" else f"FAIL ({rc}): {_tail(work / f'{name}.convert.log')}")
    if (out / "model.py").exists():
        fp64_log = work / f"{name}.fp64.log"
        rc, _, _ = _child([sys.executable, __file__, "--fp64", name, "--out", str(work)], timeout, fp64_log)
        words = fp64_log.read_text(errors="replace").split()
        if rc == 0 and len(words) >= 2:
            row["fp64"], row["floor"] = float(words[-2]), float(words[-1])
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
    parser.add_argument("--out", default=None, help="keep logs here (default: a temporary folder)")
    parser.add_argument("--build", default=None, help=argparse.SUPPRESS)  # child: build and save one model
    parser.add_argument("--fp64", default=None, help=argparse.SUPPRESS)  # child: the float64 numbers of one model
    args = parser.parse_args(argv)
    if args.fp64:
        print(*fp64(args.fp64, Path(args.out)))
        return 0
    if args.build:
        model = build(args.build, args.size)
        model.save(str(Path(args.out) / f"{args.build}.keras"))
        rng, name = np.random.default_rng(1), model.layers[0].name  # its InputLayer; not the calibration images
        np.savez(Path(args.out) / f"{args.build}.npz", **{f"b{n}/{name}": images(args.build, n, args.size, rng)
                                                          for n in (1, 3)})
        return 0
    work = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="porter-keras-apps-all-"))
    work.mkdir(parents=True, exist_ok=True)
    names = args.models.split(",") if args.models else app_names()
    names = sorted(names, key=_size_rank)
    print(f"{'model':18s} {'px':>4s} {'route':12s} {'max abs':>9s} {'fp64':>9s} {'fp32 floor':>10s} {'s':>7s} "
          f"{'RSS GB':>6s}  status", flush=True)
    rows = []
    for name in names:
        row = run(name, max(args.size, MIN_SIZE.get(name, 32)), work, args.timeout)
        rows.append(row)
        print(f"{row['model']:18s} {row['size']:4d} {row['route']:12s} {row['max_abs']:9.2e} {row['fp64']:9.2e} "
              f"{row['floor']:10.2e} {row['seconds']:7.1f} {row['rss_gb']:6.2f}  {row['status']}", flush=True)
    if not args.out:
        shutil.rmtree(work, ignore_errors=True)
    passed = sum(r["status"] == "pass" for r in rows)
    print(f"{passed}/{len(rows)} at max abs <= {ATOL:g}")
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

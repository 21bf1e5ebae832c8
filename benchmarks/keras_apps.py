"""Keras applications (weights=None, conditioned as in keras_apps_all.build) converted TF -> torch on the
ONNX route; prints per model the max abs error on the logits, pass/fail at 1e-4 and the seconds.

    python benchmarks/keras_apps.py [--size 224] [--models ResNet50,MobileNetV2,...] [--out DIR]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ATOL = 1e-4
MODELS = ("ResNet50", "MobileNetV2", "EfficientNetB0", "DenseNet121", "InceptionV3", "VGG16")
MIN_SIZE = {"InceptionV3": 75}


def build(name: str, size: int, seed: int = 0):
    """``keras.applications.<name>`` conditioned and made informative by keras_apps_all.build (one rule for
    both benchmarks: residual branches damped, batch norms calibrated then perturbed; see its docstring)."""
    import importlib.util

    path = Path(__file__).resolve().with_name("keras_apps_all.py")
    spec = importlib.util.spec_from_file_location("porter_bench_keras_apps_all", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build(name, size, seed)


def run(name: str, size: int, work: Path, atol: float = ATOL, layout=None) -> dict:
    import porter

    src = work / f"{name}.keras"
    build(name, size).save(str(src))
    t0 = time.perf_counter()
    result = porter.convert(str(src), source="tf", target="torch", out=work / f"{name}-torch", force=True,
                            atol=atol, rtol=0.0, layout=layout, console=None)
    seconds = time.perf_counter() - t0
    worst = result.verification.worst() if result.verification is not None else {}
    return {"model": name, "size": size, "max_abs": max(worst.values()) if worst else float("nan"),
            "passed": bool(result.passed), "seconds": seconds, "failures": result.verification.failures(),
            "out": result.out}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--out", default=None, help="keep the conversions here (default: a temporary folder)")
    args = parser.parse_args(argv)
    work = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="porter-keras-apps-"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        for name in args.models.split(","):
            size = max(args.size, MIN_SIZE.get(name, 32))
            try:
                row = run(name, size, work)
            except Exception as exc:  # one model failing to convert is a row, not the end of the table
                row = {"model": name, "size": size, "max_abs": float("nan"), "passed": False, "seconds": float("nan"),
                       "failures": [f"{type(exc).__name__}: {str(exc).splitlines()[0]}"]}
            rows.append(row)
            print(f"{row['model']:15s} {row['size']:4d}px  max abs {row['max_abs']:.3g}  "
                  f"{'pass' if row['passed'] else 'FAIL'}  {row['seconds']:.1f}s"
                  + ("" if row["passed"] else f"  ({'; '.join(row['failures'])[:300]})"), flush=True)
    finally:
        if not args.out:
            shutil.rmtree(work, ignore_errors=True)
    import resource

    print(f"peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB")
    return 0 if all(r["passed"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

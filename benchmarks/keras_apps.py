"""Keras applications (weights=None, batch-norm statistics perturbed) converted TF -> torch on the
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

import numpy as np

ATOL = 1e-4
MODELS = ("ResNet50", "MobileNetV2", "EfficientNetB0", "DenseNet121", "InceptionV3", "VGG16")
MIN_SIZE = {"InceptionV3": 75}
# gamma/beta perturbed before the statistics are measured, not after: perturbing an upstream beta
# afterwards revives channels a later batch norm measured as constant (variance ~0, so ~30x gain);
# through EfficientNet's swish and squeeze-excite gates that compounds until float32 rounding alone
# moves the logits by ~0.04 (Keras against itself with the input perturbed by 1e-7), far above ATOL
AFFINE_FIRST = {"EfficientNetB0"}


def build(name: str, size: int, seed: int = 0):
    """``keras.applications.<name>`` with random weights and logits out (no softmax), its batch norms
    made informative (last Dense scaled so the logits' std is about 2): moving statistics set from one training-mode pass over random images (so every
    layer's activations stay in range and the logits depend on the input), then gamma/beta and the
    statistics perturbed away from the values a plain re-normalisation would give."""
    from porter.frameworks import keras

    k = keras()
    k.utils.set_random_seed(seed)
    model = getattr(k.applications, name)(weights=None, input_shape=(size, size, 3), classifier_activation=None)
    norms = [layer for layer in model.layers if isinstance(layer, k.layers.BatchNormalization)]
    rng = np.random.default_rng(seed)
    momentum = [layer.momentum for layer in norms]
    affine_first = name in AFFINE_FIRST
    if affine_first:
        for layer in norms:
            for w in layer.weights:
                key = w.path.split("/")[-1]
                if key == "gamma":
                    w.assign((w.numpy() * (1 + 0.2 * rng.standard_normal(w.shape))).astype("float32"))
                elif key == "beta":
                    w.assign((w.numpy() + 0.2 * rng.standard_normal(w.shape)).astype("float32"))
    for layer in norms:
        layer.momentum = 0.0  # one training-mode call sets moving stats = this batch's stats
    model(rng.standard_normal((4, size, size, 3)).astype("float32"), training=True)
    for layer, m in zip(norms, momentum):
        layer.momentum = m
        values = {w.path.split("/")[-1]: np.asarray(w.numpy()) for w in layer.weights}  # no gamma where scale=False
        var = values["moving_variance"]
        perturbed = {
            "gamma": lambda g: g * (1 + 0.2 * rng.standard_normal(g.shape)),
            "beta": lambda b: b + 0.2 * rng.standard_normal(b.shape),
            "moving_mean": lambda m: m + 0.1 * np.sqrt(var) * rng.standard_normal(m.shape),
            "moving_variance": lambda v: v * rng.uniform(0.8, 1.25, v.shape),
        }
        for w in layer.weights:
            key = w.path.split("/")[-1]
            if affine_first and key in ("gamma", "beta"):
                continue
            w.assign(perturbed[key](values[key]).astype("float32"))
    # logits at a trained classifier's scale (std ~2): divide the last Dense by the spread it gives
    head = model.get_layer("predictions")
    spread = float(np.std(np.asarray(model(rng.standard_normal((4, size, size, 3)).astype("float32")))))
    kernel, bias = head.get_weights()
    head.set_weights([kernel * (2.0 / spread), bias * (2.0 / spread)])
    return model


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

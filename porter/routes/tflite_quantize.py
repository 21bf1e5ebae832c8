"""`--to tflite --quantize MODE`: a quantized .tflite written beside the float one, from the same SavedModel, through
TensorFlow's own converter (tf.lite.TFLiteConverter; ai-edge-quantizer is not in porter's dependencies).

    fp16          weights stored as float16 (target_spec.supported_types = [tf.float16]); the kernels dequantize them
    dynamic-int8  Optimize.DEFAULT without a representative dataset: int8 weights, activations quantized on the fly
    int8          full integer: int8 weights and activations, ranges calibrated on a representative dataset
                  (--calibration inputs.npz, else porter's generated inputs); TFLITE_BUILTINS_INT8 only, and where
                  an op has no int8 kernel, int8 with float fallback for it (the report says which ran)

The quantized model keeps the float model's interface (float32 inputs and outputs, the same int ids), so the
verifier feeds both the same arrays. Its errors are measured apart from the conversion's (verifiers/quantization.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from porter.errors import PorterError

MODES = ("fp16", "dynamic-int8", "int8")
# The default cosine floor per mode (quantized vs the source, every output and shape). Measured (benchmarks/quantization.py,
# README "Quantization"): fp16 keeps cosine above 0.99999 on every model tried, dynamic-int8 above 0.999 and int8 above 0.99 on
# all-MiniLM-L6-v2; the floors leave a margin under those and are never the fp32 tolerances loosened.
DEFAULT_MIN_COSINE = {"fp16": 0.9999, "dynamic-int8": 0.99, "int8": 0.98}
CALIBRATION_REDRAWS = 2  # porter's generated calibration: the verification shapes, redrawn this many times


@dataclass
class Quantize:
    """What --quantize and its options asked for."""

    mode: str
    calibration: Path | None = None
    atol: float | None = None  # --quantized-atol: max abs error of the quantized model vs the source
    min_cosine: float | None = None  # --min-cosine (else DEFAULT_MIN_COSINE[mode])
    samples: list[dict] = field(default_factory=list)  # int8: the representative dataset (one dict per sample)
    calibration_text: str = ""

    @property
    def cosine_floor(self) -> float:
        return self.min_cosine if self.min_cosine is not None else DEFAULT_MIN_COSINE[self.mode]

    @property
    def file(self) -> str:
        return f"model_{self.mode.replace('-', '_')}.tflite"


def check_options(target: str, quantize: str | None, calibration, quantized_atol, min_cosine, verify: bool) -> Quantize | None:
    """The flags against each other, before anything is loaded; a Quantize or None."""
    given = [flag for flag, value in (("--calibration", calibration), ("--quantized-atol", quantized_atol),
                                      ("--min-cosine", min_cosine)) if value is not None]
    if quantize is None:
        if given:
            raise PorterError(f"{', '.join(given)} only apply to a quantized model", hint="add --quantize fp16|dynamic-int8|int8")
        return None
    if quantize not in MODES:
        raise PorterError(f"--quantize {quantize!r} is not one of {', '.join(MODES)}")
    if target != "tflite":
        raise PorterError(f"--quantize {quantize}: porter quantizes .tflite models only; --to {target} has no quantization",
                          hint="convert --to tflite --quantize MODE, or leave --quantize out")
    if calibration is not None and quantize != "int8":
        raise PorterError(f"--calibration calibrates int8 activations; --quantize {quantize} needs no calibration data",
                          hint="pass --quantize int8, or leave --calibration out")
    if quantized_atol is not None and not (np.isfinite(quantized_atol) and quantized_atol > 0):
        raise PorterError(f"--quantized-atol {quantized_atol} is not a positive number")
    if min_cosine is not None and not (np.isfinite(min_cosine) and -1 <= min_cosine <= 1):
        raise PorterError(f"--min-cosine {min_cosine} is not a cosine (between -1 and 1)")
    tolerances = [g for g in given if g != "--calibration"]
    if tolerances and not verify:
        raise PorterError(f"{', '.join(tolerances)}: tolerances of the verification that --no-verify skips",
                          hint="leave them out, or verify")
    if calibration is not None:
        from porter.checks.path_errors import require_file

        require_file(calibration, "--calibration", ".npz", hint="an .npz with one array per input name, samples along axis 0")
    return Quantize(quantize, Path(calibration) if calibration is not None else None, quantized_atol, min_cosine)


def prepare_calibration(q: Quantize, specs: dict, feeds: list[dict], channels_last=()) -> None:
    """int8: q.samples from --calibration (checked against ``specs``: name -> (dtype, shape with None)) or
    redrawn from porter's generated ``feeds``; every sample is batch 1, in the written signature's layout."""
    if q.mode != "int8":
        return
    if q.calibration is not None:
        arrays = _read_calibration(q.calibration, specs)
        count = len(next(iter(arrays.values())))
        q.samples = [{n: a[i:i + 1] for n, a in arrays.items()} for i in range(count)]
        q.calibration_text = f"--calibration {q.calibration}: {count} samples"
    else:
        q.samples = _redrawn(feeds)
        shapes = sorted({"x".join(map(str, np.shape(f[next(iter(f))])[1:])) for f in feeds})
        q.calibration_text = (f"porter's generated inputs: {len(q.samples)} batch-1 samples at {', '.join(shapes)} (the "
                              "verification shapes redrawn with other seeds: ids from the values those feeds use, masks all ones "
                              "(unpadded), floats with their mean and std); pass --calibration inputs.npz for real data")
    for sample in q.samples:
        for name in channels_last:
            if name in sample:
                sample[name] = np.ascontiguousarray(np.transpose(sample[name], (0, 2, 3, 1)))


def _read_calibration(path: Path, specs: dict) -> dict:
    from porter.checks.model_files import npz_arrays

    problems = []

    def check(headers):
        unknown = sorted(set(headers) - set(specs))
        missing = sorted(set(specs) - set(headers))
        for key in unknown:
            problems.append(f"{key} {tuple(headers[key].shape)}: no input of the model has this name "
                            f"(its inputs: {', '.join(specs)})")
        for key in missing:
            problems.append(f"{key}: missing (the model takes {key} {_shape_text(specs[key][1])} {specs[key][0]})")
        counts = set()
        for key, header in headers.items():
            if key not in specs:
                continue
            dtype, shape = specs[key]
            got = tuple(header.shape)
            if len(got) != len(shape):
                problems.append(f"{key}: shape {got} has rank {len(got)}; the model takes {_shape_text(shape)} (rank {len(shape)})")
                continue
            if np.dtype(header.dtype).kind != np.dtype(dtype).kind and not {np.dtype(header.dtype).kind, np.dtype(dtype).kind} <= {"i", "u"}:
                problems.append(f"{key}: dtype {header.dtype}; the model takes {dtype} {_shape_text(shape)}")
            for axis, (size, want) in enumerate(zip(got, shape)):
                if axis and want is not None and size != want:
                    problems.append(f"{key}: shape {got}, axis {axis} is {size}; the model takes {_shape_text(shape)}")
            if got and got[0] == 0:
                problems.append(f"{key}: shape {got} holds no samples")
            counts.add(got[0] if got else None)
        if len(counts) > 1:
            problems.append(f"the arrays hold different numbers of samples along axis 0: "
                            + ", ".join(f"{k} {tuple(h.shape)}" for k, h in headers.items()))

    arrays = npz_arrays(path, "--calibration", check=check)
    if problems:
        raise PorterError(f"--calibration {path} does not match the model's inputs", problems=problems,
                          hint="one array per input name, samples along axis 0, each as the model takes it")
    return {n: np.asarray(arrays[n]).astype(specs[n][0], copy=False) for n in specs}


def _shape_text(shape) -> str:
    return "(" + ", ".join("any" if d is None else str(d) for d in shape) + ")"


def _redrawn(feeds: list[dict]) -> list[dict]:
    """Batch-1 samples like ``feeds`` with other values: integer inputs drawn from the values they hold (ids stay in
    the vocabulary), masks all ones, floats normal with their mean and std."""
    values = {n: np.unique(np.concatenate([np.ravel(f[n]) for f in feeds])) for n in feeds[0]
              if np.asarray(feeds[0][n]).dtype.kind in "iub"}
    samples = []
    for seed in range(1, CALIBRATION_REDRAWS + 1):
        rng = np.random.default_rng(1000 + seed)
        for feed in feeds:
            batch = np.shape(next(iter(feed.values())))[0]
            for row in range(batch):
                sample = {}
                for name, arr in feed.items():
                    arr = np.asarray(arr)[row:row + 1]
                    if "mask" in name or arr.dtype.kind == "b":
                        # unpadded: a padded mask's additive bias (finfo.min) would set the int8 range of the
                        # attention scores it is added to, and every score would round to one value
                        sample[name] = np.ones_like(arr)
                    elif name in values:
                        sample[name] = rng.choice(values[name], size=arr.shape).astype(arr.dtype)
                    else:
                        sample[name] = (rng.standard_normal(arr.shape) * (arr.std() or 1) + arr.mean()).astype(arr.dtype)
                samples.append(sample)
    return samples


def convert(saved_model: Path, q: Quantize, allow_flex: bool, input_dtypes: dict) -> tuple[bytes, dict]:
    """The quantized .tflite's bytes and how it was made ({"mode", "how", "calibration"})."""
    from porter.process.frameworks import tensorflow

    tf = tensorflow()
    builtins = [tf.lite.OpsSet.TFLITE_BUILTINS] + ([tf.lite.OpsSet.SELECT_TF_OPS] if allow_flex else [])
    samples = [{n: np.asarray(v).astype(input_dtypes.get(n, np.asarray(v).dtype), copy=False) for n, v in s.items()}
               for s in q.samples]

    def make(ops, representative):
        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model), signature_keys=["serving_default"])
        converter.target_spec.supported_ops = ops
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if q.mode == "fp16":
            converter.target_spec.supported_types = [tf.float16]
        if representative:
            converter.representative_dataset = lambda: iter(samples)
        return _run(converter, q.mode)

    if q.mode == "fp16":
        return make(builtins, False), {"mode": q.mode, "how": "float16 weights (target_spec.supported_types=[tf.float16]); "
                                                              "float32 compute"}
    if q.mode == "dynamic-int8":
        return make(builtins, False), {"mode": q.mode, "how": "Optimize.DEFAULT without a representative dataset: int8 "
                                                              "weights, activations quantized per inference"}
    try:
        data = make([tf.lite.OpsSet.TFLITE_BUILTINS_INT8] + ([tf.lite.OpsSet.SELECT_TF_OPS] if allow_flex else []), True)
        how = "full integer (TFLITE_BUILTINS_INT8): int8 weights and activations; float32 inputs and outputs kept"
    except PorterError as strict:
        data = make(builtins, True)
        how = (f"int8 with float fallback: some ops have no int8 kernel ({strict.message[:200]}); int8 weights and "
               "calibrated activations elsewhere")
    return data, {"mode": q.mode, "how": how, "calibration": q.calibration_text, "samples": len(samples)}


def _run(converter, mode: str) -> bytes:
    from porter.routes.to_onnx import captured_output

    try:
        with captured_output(f"quantizing the TFLite model ({mode})"):
            return converter.convert()
    except PorterError as exc:
        cause = exc.__cause__ or exc.__context__
        raise PorterError(f"the TFLite converter could not quantize the model ({mode}): "
                          f"{_last_line(cause) if cause is not None else exc.message}") from None
    except Exception as exc:  # noqa: BLE001 - the converter's own error
        raise PorterError(f"the TFLite converter could not quantize the model ({mode}): {_last_line(exc)}") from None


def _last_line(exc) -> str:
    lines = [s for s in str(exc).strip().splitlines() if s.strip()]
    return (lines[-1] if lines else type(exc).__name__)[:400]


def measure_written(q: Quantize, prep, folder: Path, report: dict, verification, feeds: list[dict], inputs, flex: bool) -> None:
    """report["quantization"]: how the quantized model was made, the sizes, and (verified) its three errors per output
    and shape and where its error first jumps; a quantized model outside its tolerances adds to the verification's
    problems (the conversion then fails, exit 1)."""
    from porter.verifiers import quantization

    lite = (report.get("tflite") or {}).get("quantized") or {}
    float_path, quant_path = folder / "model.tflite", folder / q.file
    section = {"mode": q.mode, "file": q.file, "how": lite.get("how"), "calibration": lite.get("calibration"),
               "sizes": quantization.file_sizes(float_path, quant_path)}
    if verification is None:
        report["quantization"] = dict(section, status="not verified")
        return
    measured = quantization.measure(prep.reference, float_path, quant_path, Path(inputs) if inputs is not None else feeds,
                                    mode=q.mode, min_cosine=q.cosine_floor, atol=q.atol, flex=flex)
    feed = dict(feeds[0])
    for name in prep.channels_last:
        if name in feed:
            feed[name] = np.ascontiguousarray(np.transpose(feed[name], (0, 2, 3, 1)))
    section.update(measured, first_jump=quantization.first_jump(float_path, quant_path, feed))
    verification.problems.extend(measured["failures"])
    report["quantization"] = section

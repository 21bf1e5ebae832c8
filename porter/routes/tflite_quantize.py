"""`--to tflite --quantize MODE`: a quantized .tflite written beside the float one, from the same SavedModel, through
TensorFlow's own converter (tf.lite.TFLiteConverter; ai-edge-quantizer is not in porter's dependencies).

    fp16          weights stored as float16 (target_spec.supported_types = [tf.float16]); the kernels dequantize them
    dynamic-int8  Optimize.DEFAULT without a representative dataset: int8 weights, activations quantized on the fly
    int8          full integer: int8 weights and activations, ranges calibrated on a representative dataset
                  (--calibration inputs.npz, else porter's generated inputs); TFLITE_BUILTINS_INT8 only, and where
                  an op has no int8 kernel, int8 with float fallback for it (the report says which ran)
    int16x8       TFLite's "16x8" mode (EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8; ai-edge-quantizer's
                  a16w8): int8 weights, int16 activations, int64 biases, calibrated as int8 is; ops with no 16x8
                  kernel stay float (the report lists them); see _int16x8 for the three converter defects worked around

The quantized model keeps the float model's interface (float32 inputs and outputs, the same int ids), so the
verifier feeds both the same arrays. Its errors are measured apart from the conversion's (verifiers/quantization.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from porter.errors import PorterError

MODES = ("fp16", "dynamic-int8", "int8", "int16x8")
CALIBRATED = ("int8", "int16x8")  # the modes whose activation ranges come from a representative dataset
# The default cosine floor per mode (quantized vs the source, every output and shape). Measured (benchmarks/quantization.py,
# README "Quantization"): fp16 keeps cosine above 0.99999 on the BERT-family models (0.9993 on a random-weight
# MobileNetV2), dynamic-int8 0.992-0.9998 on them; int16x8 0.9966 (all-MiniLM-L6-v2), 0.9993 (bert-base shape) and 0.9995
# (tiny BERT), so 0.99 as for dynamic-int8; the floors leave a margin under those and are never the fp32 tolerances loosened.
DEFAULT_MIN_COSINE = {"fp16": 0.9999, "dynamic-int8": 0.99, "int8": 0.98, "int16x8": 0.99}
CALIBRATION_REDRAWS = 2  # porter's generated calibration: the verification shapes, redrawn this many times


@dataclass
class Quantize:
    """What --quantize and its options asked for."""

    mode: str
    calibration: Path | None = None
    atol: float | None = None  # --quantized-atol: max abs error of the quantized model vs the source
    min_cosine: float | None = None  # --min-cosine (else DEFAULT_MIN_COSINE[mode])
    samples: list[dict] = field(default_factory=list)  # int8, int16x8: the representative dataset (one dict per sample)
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
            raise PorterError(f"{', '.join(given)} only apply to a quantized model", hint="add --quantize " + "|".join(MODES))
        return None
    if quantize not in MODES:
        raise PorterError(f"--quantize {quantize!r} is not one of {', '.join(MODES)}")
    if target != "tflite":
        raise PorterError(f"--quantize {quantize}: porter quantizes .tflite models only; --to {target} has no quantization",
                          hint="convert --to tflite --quantize MODE, or leave --quantize out")
    if calibration is not None and quantize not in CALIBRATED:
        raise PorterError(f"--calibration calibrates int8/int16 activations; --quantize {quantize} needs no calibration data",
                          hint="pass --quantize int8 or int16x8, or leave --calibration out")
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
    if q.mode not in CALIBRATED:
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
    if q.mode == "int16x8":
        data, how = _int16x8(tf, saved_model, samples, allow_flex)
        return data, {"mode": q.mode, "how": how, "calibration": q.calibration_text, "samples": len(samples)}
    try:
        data = make([tf.lite.OpsSet.TFLITE_BUILTINS_INT8] + ([tf.lite.OpsSet.SELECT_TF_OPS] if allow_flex else []), True)
        how = "full integer (TFLITE_BUILTINS_INT8): int8 weights and activations; float32 inputs and outputs kept"
    except PorterError as strict:
        data = make(builtins, True)
        how = (f"int8 with float fallback: some ops have no int8 kernel ({strict.message[:200]}); int8 weights and "
               "calibrated activations elsewhere")
    return data, {"mode": q.mode, "how": how, "calibration": q.calibration_text, "samples": len(samples)}


# -- int16x8 --------------------------------------------------------------------------------------------------------
# TensorFlow's converter quantizes 16x8 with its older quantizer (tools/optimize/quantize_model.cc; the MLIR one is int8
# only: asked for int16 it writes a MUL of int16 and int8 operands that fails its own verifier). Three defects of that
# path are worked around on the calibrated float model, before it quantizes:
#  - an op the quantizer knows for int8 but not int16 (EQUAL ... GREATER_EQUAL) counts as a float op, so it asks
#    calibration ranges of its inputs even where they are integers, which calibration never records ("Empty min/max for
#    tensor ..."): transformers' attention masks compare int64 positions. Those integer inputs get a placeholder range
#    (unused: no integer tensor is quantized, and those ops stay as they are, on integers);
#  - SQUARED_DIFFERENCE (LayerNorm's variance) is quantized to int16, but LiteRT has no int16 kernel for it ("only
#    supports FLOAT32 and INT32"): it becomes SUB then MUL, which have one, before calibration;
#  - PADV2 (MobileNetV2's "same" padding) gets an int16 input but keeps its float pad value, which LiteRT refuses
#    ("INT16 != FLOAT32"): a zero pad value is PAD's own (it pads with the zero point), so PADV2(x, p, 0.0) is PAD(x, p).
# Ops with no 16x8 kernel stay float (allow_float, as [16x8, TFLITE_BUILTINS] asks); the report lists them. The
# quantized model is run once in LiteRT before it is written: an op LiteRT cannot run is exit 2, named.

_COMPARISONS = ("EQUAL", "NOT_EQUAL", "LESS", "LESS_EQUAL", "GREATER", "GREATER_EQUAL")


def _int16x8(tf, saved_model: Path, samples: list[dict], allow_flex: bool) -> tuple[bytes, str]:
    from tensorflow.lite.python.optimize import calibrator

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model), signature_keys=["serving_default"])
    a16w8 = tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
    converter.target_spec.supported_ops = [a16w8, tf.lite.OpsSet.TFLITE_BUILTINS] + (
        [tf.lite.OpsSet.SELECT_TF_OPS] if allow_flex else [])
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: iter(samples[:1])  # the model it writes is calibrated again below, on all
    converter._experimental_calibrate_only = True  # noqa: SLF001 - the float model the quantizer would be given
    ready = _run(converter, "int16x8")
    prepared, rewritten = _for_int16_quantizer(ready)
    data = bytes(_quantizing("int16x8", lambda: calibrator.Calibrator(prepared).calibrate_and_quantize(
        lambda: iter(samples), tf.float32, tf.float32, True, tf.int16, tf.int64)))  # TF's own 16x8 arguments
    kept_float = _run_once(data, samples[0], allow_flex)
    how = ("16x8 (TFLite's EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8): int8 weights, int16 activations, "
           "int64 biases; float32 inputs and outputs kept")
    if rewritten.get("integer_comparison_ranges"):
        how += (f"; {rewritten['integer_comparison_ranges']} integer inputs of comparisons given a placeholder range "
                "(TF's 16x8 quantizer asks one; they stay integers)")
    if rewritten.get("squared_difference"):
        how += f"; {rewritten['squared_difference']} SQUARED_DIFFERENCE as SUB + MUL (LiteRT has no int16 kernel for it)"
    if rewritten.get("zero_padv2"):
        how += f"; {rewritten['zero_padv2']} PADV2 with pad value 0 as PAD (LiteRT refuses PADV2's float pad value on int16)"
    if kept_float:
        how += "; float fallback (no 16x8 kernel): " + ", ".join(f"{op} x{n}" for op, n in sorted(kept_float.items()))
    return data, how


def _for_int16_quantizer(data: bytes) -> tuple[bytes, dict]:
    """The calibrated float model with INT16_REWRITES applied; {rewrite name: how many places}."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(data))
    counts = {name: rewrite(model, schema) for name, rewrite in INT16_REWRITES.items()}
    # the calibrator resolves every listed operator code, used or not: list only the used ones
    used = sorted({op.opcodeIndex for graph in model.subgraphs for op in graph.operators})
    renumber = {old: new for new, old in enumerate(used)}
    model.operatorCodes = [model.operatorCodes[i] for i in used]
    for graph in model.subgraphs:
        for op in graph.operators:
            op.opcodeIndex = renumber[op.opcodeIndex]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model)), counts


def _builtin(model, op) -> int:
    code = model.operatorCodes[op.opcodeIndex]
    return max(code.builtinCode, code.deprecatedBuiltinCode)


def _integer_comparison_ranges(model, schema) -> int:
    """A placeholder calibration range on the integer inputs of comparisons (see above); how many inputs."""
    comparisons = {getattr(schema.BuiltinOperator, name) for name in _COMPARISONS}
    count = 0
    for graph in model.subgraphs:
        for op in graph.operators:
            if _builtin(model, op) not in comparisons:
                continue
            for index in op.inputs:
                tensor = graph.tensors[index] if index >= 0 else None
                if tensor is None or tensor.type == schema.TensorType.FLOAT32:
                    continue
                if tensor.quantization is None:
                    tensor.quantization = schema.QuantizationParametersT()
                if tensor.quantization.min is None or len(tensor.quantization.min) == 0:
                    tensor.quantization.min, tensor.quantization.max = [0.0], [1.0]
                    count += 1
    return count


def _squared_difference_as_sub_mul(model, schema) -> int:
    """SQUARED_DIFFERENCE(a, b) as d = SUB(a, b); MUL(d, d) (see above); how many."""
    ops = schema.BuiltinOperator

    def opcode(builtin: int) -> int:
        for index, code in enumerate(model.operatorCodes):
            if max(code.builtinCode, code.deprecatedBuiltinCode) == builtin:
                return index
        code = schema.OperatorCodeT()
        code.builtinCode, code.deprecatedBuiltinCode, code.version = builtin, min(builtin, 127), 1
        model.operatorCodes.append(code)
        return len(model.operatorCodes) - 1

    def operator(builtin, options_type, options, inputs, outputs):
        op = schema.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = opcode(builtin), list(inputs), list(outputs)
        op.builtinOptionsType, op.builtinOptions = options_type, options
        return op

    count = 0
    for graph in model.subgraphs:
        rewritten = []
        for op in graph.operators:
            if _builtin(model, op) != ops.SQUARED_DIFFERENCE:
                rewritten.append(op)
                continue
            out = graph.tensors[op.outputs[0]]
            difference = schema.TensorT()
            difference.shape, difference.shapeSignature, difference.hasRank = out.shape, out.shapeSignature, out.hasRank
            difference.type, difference.buffer = out.type, 0
            difference.name = (out.name.decode() if isinstance(out.name, bytes) else str(out.name)) + "/difference"
            graph.tensors.append(difference)
            at = len(graph.tensors) - 1
            rewritten += [operator(ops.SUB, schema.BuiltinOptions.SubOptions, schema.SubOptionsT(), op.inputs, [at]),
                          operator(ops.MUL, schema.BuiltinOptions.MulOptions, schema.MulOptionsT(), [at, at], op.outputs)]
            count += 1
        graph.operators = rewritten
    return count


def _zero_padv2_as_pad(model, schema) -> int:
    """PADV2(x, paddings, 0.0) as PAD(x, paddings) (see above); how many. A non-zero pad value is left as it is."""
    ops = schema.BuiltinOperator
    pad = None
    count = 0
    for graph in model.subgraphs:
        for op in graph.operators:
            if _builtin(model, op) != ops.PADV2 or len(op.inputs) < 3 or op.inputs[2] < 0:
                continue
            value = graph.tensors[op.inputs[2]]
            data = model.buffers[value.buffer].data if 0 < value.buffer < len(model.buffers) else None
            if value.type != schema.TensorType.FLOAT32 or data is None or len(data) == 0:
                continue
            if np.any(np.frombuffer(np.asarray(data, np.uint8).tobytes(), np.float32) != 0):
                continue
            if pad is None:
                pad = next((i for i, c in enumerate(model.operatorCodes)
                            if max(c.builtinCode, c.deprecatedBuiltinCode) == ops.PAD), None)
                if pad is None:
                    code = schema.OperatorCodeT()
                    code.builtinCode, code.deprecatedBuiltinCode, code.version = ops.PAD, ops.PAD, 1
                    model.operatorCodes.append(code)
                    pad = len(model.operatorCodes) - 1
            op.opcodeIndex, op.inputs = pad, list(op.inputs[:2])
            op.builtinOptionsType, op.builtinOptions = schema.BuiltinOptions.PadOptions, schema.PadOptionsT()
            count += 1
    return count


INT16_REWRITES = {"integer_comparison_ranges": _integer_comparison_ranges,
                  "squared_difference": _squared_difference_as_sub_mul,
                  "zero_padv2": _zero_padv2_as_pad}


def _run_once(data: bytes, sample: dict, allow_flex: bool = False) -> dict:
    """Invoke the quantized model once in LiteRT; an op it cannot run is exit 2, named. Returns {op: count} of the
    ops left in float (a float32 output, not DEQUANTIZE, and no integer math)."""
    import re
    from collections import Counter

    from ai_edge_litert.interpreter import Interpreter

    try:
        interp = Interpreter(model_content=data)
        runner = interp.get_signature_runner()
        runner(**{n: np.asarray(v) for n, v in sample.items()})
    except (RuntimeError, ValueError) as exc:
        text = " ".join(str(exc).split())
        if allow_flex and ("Select TensorFlow op" in text or "Flex" in text):
            return {}  # Select-TF ops run only where the Flex delegate is linked: the verification runs it there
        node = re.search(r"Node number \d+ \((\w+)\)", text)
        op = node.group(1) if node else None
        raise PorterError(f"--quantize int16x8: LiteRT cannot run the 16x8 model" + (f" at {op}" if op else "")
                          + f" ({text[:300]})", hint="--quantize int8 or dynamic-int8 quantize this model; "
                          "or report the op to porter, which rewrites the ops it knows (SQUARED_DIFFERENCE, PADV2)") from None
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    kept = Counter()
    for op in interp._get_ops_details():  # noqa: SLF001 - LiteRT's only listing of ops
        outs = [tensors[i] for i in op["outputs"] if i in tensors]
        if op["op_name"] != "DEQUANTIZE" and outs and all(t["dtype"] == np.float32 for t in outs):
            kept[op["op_name"]] += 1
    return dict(kept)


def _run(converter, mode: str) -> bytes:
    return _quantizing(mode, converter.convert)


def _quantizing(mode: str, run):
    """``run()``'s result, its output captured; the converter's or quantizer's error as porter's, naming ``mode``."""
    from porter.routes.to_onnx import captured_output

    try:
        with captured_output(f"quantizing the TFLite model ({mode})"):
            return run()
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

"""A quantized .tflite's error kept apart from the conversion's: per output and input shape,

    conversion    the float .tflite vs the source (the reference the conversion is verified against)
    quantization  the quantized .tflite vs the float .tflite
    total         the quantized .tflite vs the source

each as max abs, mean abs, cosine and SNR (dB), over the positions the verifier compares (padding excluded where the
zoo says so). Both .tflite files run in LiteRT-only child processes (runners/litert_isolated.py). The quantized model
passes when its total error meets the explicit quantization tolerances (a cosine floor, --quantized-atol); the float
conversion is held to the fp32 tolerances by the ordinary verifier, not here.

``first_jump`` runs the float and the quantized model once more in this process with every intermediate tensor kept
(LiteRT's experimental_preserve_all_tensors), pairs their ops in execution order, and names the op whose output error
grows past JUMP_FLOOR and JUMP_FACTOR times its inputs' error: the first layer where quantization error jumps.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

JUMP_FLOOR, JUMP_FACTOR = 0.1, 2.0  # an op "jumps" when its output's relative error is >= 10% and >= 2x its inputs'
PAIRS = (("conversion", "float .tflite vs source"), ("quantization", "quantized vs float .tflite"),
         ("total", "quantized .tflite vs source"))


def metrics(reference, candidate, valid=None) -> dict:
    """max abs, mean abs, cosine and SNR (dB) of ``candidate`` against ``reference`` (float64), over ``valid``."""
    ref = np.asarray(reference, np.float64)
    cand = np.asarray(candidate, np.float64)
    if valid is not None:
        ref, cand = ref[valid], cand[valid]
    ref, cand = ref.ravel(), cand.ravel()
    if ref.size == 0:
        return {"max_abs": 0.0, "mean_abs": 0.0, "cosine": 1.0, "snr_db": math.inf, "elements": 0}
    diff = cand - ref
    signal, noise = float(np.dot(ref, ref)), float(np.dot(diff, diff))
    norms = math.sqrt(signal) * math.sqrt(float(np.dot(cand, cand)))
    cosine = float(np.dot(ref, cand) / norms) if norms > 0 else (1.0 if noise == 0 else 0.0)
    snr = math.inf if noise == 0 else (10 * math.log10(signal / noise) if signal > 0 else -math.inf)
    return {"max_abs": float(np.max(np.abs(diff))), "mean_abs": float(np.mean(np.abs(diff))), "cosine": cosine,
            "snr_db": snr, "elements": int(ref.size)}


def measure(reference, float_tflite, quant_tflite, feeds, *, mode: str, min_cosine: float,
            atol: float | None = None, flex: bool = False) -> dict:
    """Run the source, the float and the quantized .tflite on ``feeds`` (a list of feeds, or an --inputs .npz) and
    compare them three ways (module docstring); the layout the float model's porter_report.json declares applies.
    Returns the report section: {"mode", "tolerances", "rows": [...], "passed", "failures", "notes"}."""
    from porter.readers.artifacts import detect
    from porter.verifiers import layout as layouts
    from porter.verifiers.compare import expand_valid
    from porter.verifiers.equivalence import shape_label
    from porter.verifiers.inputs import load_npz, zoo_of
    from porter.verifiers.pairing import Renamed, pair
    from porter.verifiers.runners import open_runner

    ref = open_runner(detect(reference), device="cpu")
    runners = [ref]
    try:
        ref.activate()
        info = zoo_of(ref)
        if isinstance(feeds, (str, Path)):
            feeds = load_npz(feeds, ref, info).feeds
        declared = layouts.resolve(None, reference, float_tflite)
        sides = {}
        for key, path in (("float", float_tflite), ("quantized", quant_tflite)):
            runner = open_runner(detect(path), device="cpu", isolated=True, flex=flex)
            runners.append(runner)
            runner.activate()
            pairing = pair(ref, runner, None)
            sides[key] = Renamed(runner, pairing) if pairing.renames else runner
        defined = {}
        if info is not None:
            defined = {o: m for o, m in info.entry.defined_where.items() if o in ref.output_names and all(m in f for f in feeds)}
        rows = []
        for feed in feeds:
            moved = layouts.apply(feed, declared)
            src = ref.infer(feed)
            fl, qu = sides["float"].infer(moved), sides["quantized"].infer(moved)
            for name in ref.output_names:
                valid = expand_valid(feed[defined[name]], np.shape(src[name])) if name in defined else None
                errors = {"conversion": metrics(src[name], fl[name], valid), "quantization": metrics(fl[name], qu[name], valid),
                          "total": metrics(src[name], qu[name], valid)}
                rows.append({"shape": shape_label(feed), "output": name, **errors})
    finally:
        for runner in reversed(runners):
            runner.deactivate()
    finals = [getattr(r, "final", None) or {} for r in runners[1:]]
    failures = []
    for row in rows:
        total = row["total"]
        if not total["cosine"] >= min_cosine:
            failures.append(f"quantized ({mode}) {row['output']} at {row['shape']}: cosine {total['cosine']:.6f} vs the source, "
                            f"below the floor {min_cosine:g}")
        if atol is not None and not total["max_abs"] <= atol:
            failures.append(f"quantized ({mode}) {row['output']} at {row['shape']}: max abs error {total['max_abs']:.3g} vs the "
                            f"source, above --quantized-atol {atol:g}")
    if any(f.get("tensorflow_imported") for f in finals if not flex):
        failures.append("TensorFlow was imported in a LiteRT-only process")
    if defined:
        notes = [f"{o}: positions where {m} == 0 (padding) are not compared" for o, m in defined.items()]
    else:
        notes = []
    return {"mode": mode, "rows": rows, "failures": failures, "passed": not failures, "notes": notes,
            "tolerances": {"min_cosine": min_cosine, "quantized_atol": atol,
                           "applies_to": "total (quantized .tflite vs the source), every output and shape"}}


# -- where quantization error jumps ---------------------------------------------------------------------------------

def first_jump(float_tflite, quant_tflite, feed: dict, top: int = 3) -> dict:
    """Intermediate tensors of the float and the quantized .tflite on one feed, paired op by op in execution order
    (QUANTIZE/DEQUANTIZE ops, which exist only on the quantized side, skipped; pairing by op name and output shape, in
    order). For each paired op, error = ||q - f|| / ||f|| of its output (int8 tensors dequantized); its jump = that
    error minus the largest error among its paired inputs. Best effort: {"op": None, "note": why} when it cannot."""
    try:
        floats, quants = _intermediates(float_tflite, feed), _intermediates(quant_tflite, feed)
    except Exception as exc:  # noqa: BLE001 - an explanation of the error, never a failure of its own
        return {"op": None, "note": f"intermediate tensors could not be read: {type(exc).__name__}: {str(exc)[:200]}"}
    pairs = _align(floats["ops"], quants["ops"])
    if not pairs:
        return {"op": None, "note": "no op of the float model could be paired with one of the quantized model"}
    error_of: dict[int, float] = {}  # float-side tensor index -> relative error
    steps = []
    for position, (f_op, q_op) in enumerate(pairs):
        f = floats["values"].get(f_op["output"])
        q = quants["values"].get(q_op["output"])
        if f is None or q is None or np.shape(f) != np.shape(q) or np.asarray(f).dtype.kind != "f":
            continue
        f64, q64 = np.asarray(f, np.float64), np.asarray(q, np.float64)
        norm = float(np.linalg.norm(f64))
        rel = float(np.linalg.norm(q64 - f64) / norm) if norm > 0 else float(np.linalg.norm(q64))
        before = max((error_of.get(i, 0.0) for i in f_op["inputs"]), default=0.0)
        error_of[f_op["output"]] = rel
        steps.append({"position": position, "op": f_op["op"], "tensor": f_op["name"], "relative_error": rel,
                      "input_relative_error": before, "jump": rel - before, "shape": list(np.shape(f))})
    if not steps:
        return {"op": None, "note": "no paired op had a float output of one shape on both sides"}
    paired, total = len(pairs), len(floats["ops"])
    first = next((s for s in steps if s["relative_error"] >= JUMP_FLOOR and s["relative_error"] >= JUMP_FACTOR
                  * s["input_relative_error"]), None)
    found = first is not None
    if found:
        how = (f"the first op whose output's relative error is at least {JUMP_FLOOR:g} and {JUMP_FACTOR:g}x its inputs' "
               f"(relative error = ||quantized - float|| / ||float|| of the op's output)")
    else:
        first = max(steps, key=lambda s: s["jump"])
        how = (f"no op's relative error reached {JUMP_FLOOR:g} at {JUMP_FACTOR:g}x its inputs': the op whose error grows "
               f"most over its inputs' (relative error = ||quantized - float|| / ||float|| of the op's output)")
    saturated = next((s for s in steps if s["relative_error"] >= 0.9 and s["input_relative_error"] < 0.5), None)
    return {**first, "jumped": found, "note": f"{how}; {paired} of {total} float ops paired with the quantized model's in execution order",
            "largest": sorted(steps, key=lambda s: -s["jump"])[:top], "paired_ops": paired, "float_ops": total,
            **({"lost": saturated} if saturated is not None else {}),
            "inputs": {n: list(np.shape(v)) for n, v in feed.items()}}


def _intermediates(path, feed: dict) -> dict:
    """{"ops": [{"op", "output", "inputs", "name"}], "values": {tensor index: float array}} of one run."""
    import warnings

    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from porter.routes.to_onnx import captured_output

    with captured_output(f"keeping every tensor of {Path(path).name} on one feed"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "experimental_preserve_all_tensors ... for debugging purposes only"
        # no default delegate: XNNPACK would compute a delegated subgraph's tensors out of the interpreter's sight
        interp = Interpreter(model_path=str(path), experimental_preserve_all_tensors=True,
                             experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        return _run_kept(interp, feed)


def _run_kept(interp, feed: dict) -> dict:
    runner = interp.get_signature_runner()
    details = {n: (d["index"], d["dtype"]) for n, d in runner.get_input_details().items()}
    del runner
    for name, (index, _) in details.items():
        interp.resize_tensor_input(index, list(np.shape(feed[name])), strict=True)
    interp.allocate_tensors()
    for name, (index, dtype) in details.items():
        interp.set_tensor(index, np.asarray(feed[name]).astype(dtype, copy=False))
    interp.invoke()
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    ops, values = [], {}
    for op in interp._get_ops_details():  # noqa: SLF001 - LiteRT's only listing of ops in execution order
        if op["op_name"] in ("QUANTIZE", "DEQUANTIZE") or len(op["outputs"]) == 0:
            continue
        out = int(op["outputs"][0])
        if out < 0 or out not in tensors:
            continue
        try:
            value = interp.get_tensor(out)
        except ValueError:
            continue
        scale, zero = tensors[out]["quantization"]
        if value.dtype.kind in "iu" and scale:
            value = (value.astype(np.float64) - zero) * scale
        values[out] = value.copy()
        ops.append({"op": op["op_name"], "output": out, "inputs": [int(i) for i in op["inputs"] if i >= 0],
                    "name": tensors[out]["name"], "shape": tuple(np.shape(value))})
    return {"ops": ops, "values": values}


def _align(floats: list[dict], quants: list[dict]) -> list[tuple[dict, dict]]:
    """Ops paired in execution order by (op name, output shape): the longest common subsequence's matching blocks."""
    from difflib import SequenceMatcher

    key = lambda o: (o["op"], o["shape"])  # noqa: E731
    matcher = SequenceMatcher(a=[key(o) for o in floats], b=[key(o) for o in quants], autojunk=False)
    return [(floats[a + k], quants[b + k]) for a, b, n in matcher.get_matching_blocks() for k in range(n)]


# -- the console table ----------------------------------------------------------------------------------------------

def render(section: dict, console=None, failures: bool = True) -> None:
    """The quantization table; ``failures``: list them too (else the verification's own list holds them)."""
    from rich.console import Console
    from rich.table import Table

    from porter.verifiers.console import line, text

    console = console or Console(width=160)
    mode = section["mode"]
    if not section.get("rows"):
        console.print(line(f"quantized ({mode}): {section.get('file', '')} written, its error not measured "
                           f"({section.get('status', 'not verified')})"))
        return
    passed = section["passed"]
    table = Table(title=f"porter quantization ({mode}): {'PASSED' if passed else 'FAILED'}",
                  title_style="bold green" if passed else "bold red")
    table.add_column("shape")
    table.add_column("output")
    for key, _ in PAIRS:
        table.add_column(f"{key}\nmax abs / mean abs", justify="right")
        table.add_column(f"{key}\ncosine / SNR dB", justify="right")
    for row in section["rows"]:
        cells = []
        for key, _ in PAIRS:
            m = row[key]
            cells += [f"{m['max_abs']:.3g} / {m['mean_abs']:.3g}", f"{m['cosine']:.6f} / {_snr(m['snr_db'])}"]
        table.add_row(text(row["shape"]), text(row["output"]), *cells)
    console.print(table)
    console.print(line("conversion = float .tflite vs source (held to fp32 tolerances by the verifier above); quantization = "
                       "quantized vs float .tflite; total = quantized .tflite vs source"))
    tol = section["tolerances"]
    console.print(line(f"quantized tolerance (on total): cosine >= {tol['min_cosine']:g}"
                       + (f", max abs <= {tol['quantized_atol']:g}" if tol["quantized_atol"] is not None else "")))
    sizes = section.get("sizes")
    if sizes:
        console.print(line(f"size: float {sizes['float_bytes'] / 1e6:.2f} MB, {mode} {sizes['quantized_bytes'] / 1e6:.2f} MB "
                           f"({sizes['ratio']:.2f}x)"))
    if section.get("how"):
        console.print(line(f"{mode}: {section['how']}"))
    if section.get("calibration"):
        console.print(line(f"calibration: {section['calibration']}"))
    for note in section.get("notes", ()):
        console.print(line(f"note: {note}"))
    jump = section.get("first_jump")
    if jump:
        if jump.get("jumped", True):
            console.print(line(f"quantization error jumps first at: {jump_text(jump)}"))
        else:
            console.print(line(f"quantization error: no op's error reached {JUMP_FLOOR:g} at {JUMP_FACTOR:g}x its inputs'; "
                               f"it grows most at: {jump_text(jump)}"))
        if jump.get("largest") and jump["largest"][0]["position"] != jump.get("position"):
            console.print(line(f"  largest growth at: {jump_text(jump['largest'][0])}"))
        if jump.get("lost"):
            console.print(line(f"  signal lost (relative error >= 0.9 from inputs under 0.5) first at: {jump_text(jump['lost'])}"))
    for failure in section.get("failures", ()) if failures else ():
        console.print(line(("failed:", "red"), f" {failure}"))


def jump_text(jump: dict) -> str:
    if jump.get("op") is None:
        return f"unknown ({jump.get('note', '')})"
    return (f"{jump['op']} -> {jump['tensor'][:120]} {jump['shape']} (relative error {jump['input_relative_error']:.3g} "
            f"in, {jump['relative_error']:.3g} out)")


def _snr(value: float) -> str:
    return "inf" if value == math.inf else f"{value:.1f}"


def file_sizes(float_path: Path, quant_path: Path) -> dict:
    f, q = Path(float_path).stat().st_size, Path(quant_path).stat().st_size
    return {"float_bytes": f, "quantized_bytes": q, "ratio": f / q if q else math.inf}

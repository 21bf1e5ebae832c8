"""The noise-aware verdict: each float32 output judged against its reference's own float32 floor.

Where the reference can run in float64 (torch ``.double()``, Keras rebuilt with float64 dtype policies, an ONNX
graph made float64 where onnxruntime has the kernels), porter runs it again in float64 on the same inputs. Per output and shape:

    floor = max |ref32 - ref64|       the reference's own float32 error (summation order, rounding)
    err   = max |cand  - ref64|       the candidate's error against the float64 result
    pass  when  err <= FLOOR_K * floor + NEAR_ZERO_ULPS * eps32 * max|ref64|

The second term is a few float32 ulps at the output's largest magnitude: an output that is exact in float32
(a shallow model, a constant, a copy) has floor 0 and still lets the candidate round differently.

Why max-abs, and FLOOR_K = 8 (benchmarks/noise_floor.py, err/floor at the worst shape of each output):
    honest, 20 outputs: tiny BERT 2.3 / 1.4 (last_hidden_state / pooler), all-MiniLM-L6-v2 1.7 / 1.6, tiny HF
    ResNet (two builds) / ResNet-cls / ConvNeXt / EfficientNet through the graph route 0.8-1.5, keras.applications
    (TF -> torch, NCHW) MobileNetV3Small 0.7, and calibrated-only (not conditioned) MobileNetV3Small 1.6,
    MobileNetV2 1.0, EfficientNetB0 1.1, ResNet50 (64 px) 1.0 - those four fail today's fixed 1e-5 at 4.1e-5,
    4.4e-5, 1.4e-4 and 1.7e-4;
    perturbed (the defect in the source): one weight tensor x (1 + 1e-3 N(0,1)) 53-3e3, a BatchNorm variance
    x1.01 5e2-1.5e4, a LayerNorm weight x1.01 5e3-6e4, a transposed kernel 2e4-6e6, heads 0 and 1 swapped in a
    value projection 4e4-2e5, on every model where float64 shows the defect at all (its own float64 effect over
    8 floors; one did not: the middle weight of the tiny EfficientNet moves its outputs by 0.1 floor).
    FLOOR_K = 8 sits 3.5x above the worst honest ratio and 6.6x under the weakest perturbation (BERT's weight).
    Other forms, measured on the same arrays (bert, MiniLM, ResNet, MobileNetV3Small): rms(err) / rms(floor)
    honest <= 1.6, perturbed >= 66 - no better in practice, and a mean dilutes an error confined to a few
    elements (two swapped logit columns of a 32k vocabulary); elementwise max_i err_i / (floor_i + 4 ulps)
    honest up to 4.3, perturbed from 20: the floor of one element is a noisy estimate of its error.
    The error is taken against the float64 result, not against the reference's float32 output: the two float32
    errors are independent, so their difference would be up to twice the floor and noisier.

Where float64 is not possible (no float64 path in the runner: SavedModel, TFLite, recorded outputs; an ONNX op
onnxruntime has no float64 kernel for, Conv among them; a 16-bit reference; not enough memory for the float64
copy, per memory_estimate.available_bytes; a float64 run that fails), the output is judged by compare.py's
fixed tolerances as before and the report says which rule judged it and why. ``--atol``/``--rtol`` given by
the user keep a fixed tolerance: the floor is not measured at all.
"""

from __future__ import annotations

import contextlib

import numpy as np

FLOOR_K = 8.0
NEAR_ZERO_ULPS = 4
EPS32 = float(np.finfo(np.float32).eps)

ENABLED = True  # off only to time verification without the floor (benchmarks/noise_floor.py --overhead)

RULE_FLOOR = "float64 floor"
RULE_FIXED = "fixed tolerance"


class NoFloat64(Exception):
    """The reference has no float64 run here; the message says why."""


# a floor above this fraction of the output's largest magnitude: float32 itself cannot resolve the output (an
# ill-conditioned random-init net: keras.applications EfficientNetB6 calibrated only, floor 4.15 on logits of spread
# ~2), so a pass there cannot see a defect below the bound; the report says so for each such output
COARSE_FRACTION = 1e-2


def bound(floor: float, scale: float) -> float:
    """The largest error against float64 that passes: FLOOR_K floors plus a few ulps at the output's scale."""
    return FLOOR_K * floor + NEAR_ZERO_ULPS * EPS32 * scale


def _stats(ref32, ref64, cand, valid):
    r32, r64, c = (np.asarray(a, dtype=np.float64) for a in (ref32, ref64, cand))
    if valid is not None:
        r32, r64, c = r32[valid], r64[valid], c[valid]
    if r64.size == 0:
        return None
    floor = np.abs(r32 - r64)
    err = np.abs(c - r64)
    return floor, err, float(np.abs(r64).max())


def judge(o, ref32, ref64, cand, valid=None) -> None:
    """Re-judge the OutputComparison ``o`` (compare.py, float32 reference and candidate) by the floor."""
    from porter.verifiers.compare import expand_valid

    if o.reason.startswith(("shape differs", "non-finite", "degenerate")):
        return fixed(o, f"{o.reason.split(':')[0]}: judged as before")
    if np.shape(ref64) != np.shape(ref32):
        return fixed(o, f"the float64 reference gave shape {np.shape(ref64)}")
    if np.asarray(ref64).dtype != np.float64:
        return fixed(o, f"the float64 reference gave {np.asarray(ref64).dtype} for it")
    if not np.isfinite(np.asarray(ref64)).all():
        return fixed(o, "the float64 reference is not finite")
    mask = expand_valid(valid, np.shape(ref32))
    stats = _stats(ref32, ref64, cand, mask)
    if stats is None:
        return fixed(o, "no compared elements")
    floor, err, scale = stats
    o._fixed_verdict = (o.passed, o.reason, o.mismatched, o.mismatched_pct, o.tolerance_from)
    o.rule = RULE_FLOOR
    o.floor = float(floor.max())
    o.error_vs_float64 = float(err.max())
    o.floor_bound = bound(o.floor, scale)
    o.floor_ratio = o.error_vs_float64 / o.floor if o.floor > 0 else (0.0 if o.error_vs_float64 == 0 else float("inf"))
    o.floor_k = FLOOR_K
    o.floor_scale = scale
    over = err > o.floor_bound
    o.mismatched = int(over.sum())
    o.mismatched_pct = 100.0 * o.mismatched / max(1, err.size)
    o.passed = o.mismatched == 0
    o.tolerance_from = f"|cand - ref64| <= {FLOOR_K:g} x max|ref32 - ref64| + {NEAR_ZERO_ULPS} ulps at max|ref64|"
    times = f"{o.floor_ratio:.3g}x" if o.floor > 0 else "over a zero"
    o.reason = "" if o.passed else (
        f"error against float64 {o.error_vs_float64:.3g} is {times} the reference's own float32 floor {o.floor:.3g} "
        f"(allowed {FLOOR_K:g}x + {NEAR_ZERO_ULPS} ulps = {o.floor_bound:.3g}); {o.mismatched} of {err.size} elements over")


def _ratio_text(ratio: float, digits: int = 3) -> str:
    return "infinitely" if not np.isfinite(ratio) else f"{ratio:.{digits}g}x"


def fixed(o, why: str) -> None:
    """Say that ``o`` keeps compare.py's fixed-tolerance verdict, and why."""
    o.rule = RULE_FIXED
    o.floor_note = why


def applies(ref32, cand) -> str:
    """'' when the floor can judge this output, else why not."""
    ref_dtype, cand_dtype = str(np.asarray(ref32).dtype), str(np.asarray(cand).dtype)
    if ref_dtype != "float32":
        return f"reference output is {ref_dtype}" + ("" if ref_dtype.startswith("float") or ref_dtype.startswith("bfloat") else " (compared exactly)")
    if cand_dtype not in ("float32", "float64"):
        return f"candidate output is {cand_dtype}"
    return ""


# ----------------------------------------------------------------------------------------------------------
# the reference in float64


@contextlib.contextmanager
def float64_of(runner):
    """The reference ``runner`` in float64: yields a callable feed -> outputs, or raises NoFloat64(why).
    torch: the module is cast in place and cast back afterwards (float32 -> float64 -> float32 is exact), so
    the only extra memory is the float64 weights; Keras: a float64 copy (training_float64.keras_in_float64)."""
    kind = type(runner).__name__
    options = getattr(runner, "options", None) or {}
    if kind == "RecordedRunner":
        raise NoFloat64("the reference is recorded outputs (--expected): nothing to run in float64")
    if options.get("reference_dtype") not in (None, "float32"):
        raise NoFloat64(f"the reference is loaded in {options['reference_dtype']} (not float32)")
    if kind in ("HFTorchRunner", "TorchPyRunner", "ExportedProgramRunner"):
        with _torch_float64(runner) as call:
            yield call
    elif kind == "KerasRunner":
        with _keras_float64(runner) as call:
            yield call
    elif kind == "OnnxRuntimeRunner":
        with _onnx_float64(runner) as call:
            yield call
    else:
        raise NoFloat64(f"the reference's runner ({kind}) has no float64 path")


def _param_bytes_torch(module) -> int:
    return sum(t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers()) if t.is_floating_point())


def _check_memory(extra: int, what: str) -> None:
    from porter.resources.memory_estimate import available_bytes, size_text

    free = available_bytes()
    if free is not None and extra * 1.5 + (256 << 20) > free:
        raise NoFloat64(f"{what} needs about {size_text(extra)} more and {size_text(free)} is available")


@contextlib.contextmanager
def _torch_float64(runner):
    torch = runner.torch
    module = getattr(runner, "model", None) or getattr(runner, "module", None)
    if module is None:
        raise NoFloat64("the reference has no torch module")
    dtypes = {t.dtype for t in list(module.parameters()) + list(module.buffers()) if t.is_floating_point()}
    if dtypes - {torch.float32}:
        raise NoFloat64(f"the reference holds {', '.join(sorted(str(d).replace('torch.', '') for d in dtypes))} weights")
    _check_memory(_param_bytes_torch(module), "the float64 reference")
    outside_zoo = getattr(runner, "outside_zoo", False)
    kind = type(runner).__name__

    def call(feed):
        if kind == "HFTorchRunner" and not outside_zoo:
            args = {k: torch.as_tensor(np.asarray(v, dtype=np.float64 if k == "pixel_values" else np.int64), device=runner.device)
                    for k, v in feed.items()}
            with torch.inference_mode():
                out = module(**args)
            return {k: out[k].detach().cpu().numpy() for k in runner.output_names if out.get(k) is not None}
        if kind == "HFTorchRunner":
            args = {k: torch.as_tensor(_as64(v), device=runner.device) for k, v in feed.items()}
            with torch.inference_mode():
                out = module(**args, return_dict=True)
            return {k: out[k].detach().cpu().numpy() for k in runner.output_names if out.get(k) is not None}
        args = [torch.as_tensor(_as64(feed[n]), device=runner.device) for n in runner.input_names]
        with torch.no_grad():
            out = module(*args)
        if isinstance(out, dict):
            values = [out[n] for n in runner.output_names]
        else:
            values = list(out) if isinstance(out, (list, tuple)) else [out]
        return {n: v.detach().cpu().numpy() for n, v in zip(runner.output_names, values)}

    try:
        module.to(torch.float64)
    except Exception as exc:  # noqa: BLE001 - a module that cannot be cast keeps the fixed rule
        module.to(torch.float32)
        raise NoFloat64(f"the reference cannot be cast to float64 ({type(exc).__name__}: {exc})") from None
    try:
        yield call
    finally:
        if getattr(call, "restore", True):
            module.to(torch.float32)
        else:  # nothing runs the reference again (apply's caller said so): the cast back is not paid
            runner.left_in_float64 = True


def _as64(value):
    value = np.ascontiguousarray(value)
    return value.astype(np.float64) if value.dtype.kind == "f" else value


@contextlib.contextmanager
def _keras_float64(runner):
    from porter.verifiers.training_float64 import keras_in_float64

    model = runner.model
    size = sum(int(np.prod(w.shape)) * 4 for w in model.weights)
    _check_memory(2 * size, "the float64 copy of the reference")
    clone, why = keras_in_float64(model)
    if clone is None:
        raise NoFloat64(f"the reference {why}")
    keras_call = getattr(runner, "keras_call", None)

    def call(feed):
        if runner.zoo_model and keras_call is not None:
            out = keras_call(clone, feed)
        elif runner.zoo_model:
            out = clone({k: np.asarray(v, dtype=np.int32) for k, v in feed.items()})
        else:
            args = [_keras_arg(feed[n], runner.input_specs[n][0]) for n in runner.input_names]
            out = clone(args if len(args) > 1 else args[0], training=False)
            out = dict(zip(runner.output_names, out if isinstance(out, (list, tuple)) else [out]))
        return {k: np.asarray(v) for k, v in out.items()}

    try:
        yield call
    finally:
        del clone


def _keras_arg(value, dtype):
    """A float input in float64 (the float64 copy's inputs are float64); ids as the model takes them."""
    value = np.asarray(value)
    return value.astype(np.float64) if str(dtype).startswith("float") else value.astype(dtype)


@contextlib.contextmanager
def _onnx_float64(runner):
    """The ONNX graph with every float32 tensor made float64 (inputs, outputs, value_info, initializers, Constant and
    ConstantOfShape values, Cast targets), run by onnxruntime: refused where it has no float64 kernel for an op."""
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    path = runner.artifact.path
    if path.stat().st_size > (1 << 30):
        raise NoFloat64("the ONNX file is over 1 GB: its float64 copy is not attempted")
    model = onnx.load(str(path), load_external_data=True)
    _check_memory(2 * model.ByteSize(), "the float64 ONNX copy")
    FLOAT, DOUBLE = onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE

    def tensor64(t):
        return numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float64), t.name) if t.data_type == FLOAT else t

    graph = model.graph
    for vi in list(graph.input) + list(graph.output) + list(graph.value_info):
        if vi.type.tensor_type.elem_type == FLOAT:
            vi.type.tensor_type.elem_type = DOUBLE
    for i, t in enumerate(graph.initializer):
        if t.data_type == FLOAT:
            graph.initializer[i].CopyFrom(tensor64(t))
    for node in graph.node:
        for attr in node.attribute:
            if attr.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
                raise NoFloat64(f"the ONNX graph has a subgraph ({node.op_type}): its float64 copy is not attempted")
            if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == FLOAT:
                attr.t.CopyFrom(tensor64(attr.t))
            if node.op_type == "Cast" and attr.name == "to" and attr.i == FLOAT:
                attr.i = DOUBLE
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = runner.options.get("threads") or 0
    try:
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime's "Could not find an implementation for Conv(11)"
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise NoFloat64(f"onnxruntime cannot run this graph in float64 ({first[:200]})") from None
    types = {i.name: i.type for i in session.get_inputs()}

    def call(feed):
        args = {k: np.asarray(v).astype(np.float64 if types[k] == "tensor(double)" else runner.input_specs[k][0])
                for k, v in feed.items() if k in types}
        return dict(zip(runner.output_names, session.run(runner.output_names, args)))

    try:
        yield call
    finally:
        del session


# ----------------------------------------------------------------------------------------------------------


def _judge_all(feeds, outputs, wanted, ref64s, defined_where) -> None:
    for i, feed in enumerate(feeds):
        for o in wanted[i]:
            if o.name not in ref64s[i]:
                fixed(o, "the float64 reference did not give it")
                continue
            mask = feed.get(defined_where[o.name]) if o.name in defined_where else None
            judge(o, outputs[i][0][o.name], ref64s[i][o.name], outputs[i][1][o.name], mask)


def _unjudge(o) -> None:
    """Back to compare.py's verdict (a failure after judging: the cast back of the reference)."""
    if getattr(o, "_fixed_verdict", None) is not None:
        o.passed, o.reason, o.mismatched, o.mismatched_pct, o.tolerance_from = o._fixed_verdict
    o.error_vs_float64 = o.floor = o.floor_ratio = o.floor_bound = o.floor_k = o.floor_scale = None


def apply(reference, feeds, outputs, comparisons, defined_where, notes, given=(), restore=True) -> None:
    """Judge every float32 output of every shape by the floor where the reference runs in float64.
    ``outputs[i]``: (reference outputs, candidate outputs) of feeds[i]; ``comparisons[i]``: their
    OutputComparisons (updated in place). Never raises: where float64 cannot run, the fixed rule stays, said why.
    ``restore=False``: the caller runs the reference no more unless an output failed (localisation), so a torch
    reference is left in float64 when all passed (its cast back costs as much as the cast)."""
    from porter.process import progress
    from porter.verifiers.equivalence import shape_label

    runner = getattr(reference, "inner", reference)
    wanted: list[list] = []
    for (ref_out, cand_out), comps in zip(outputs, comparisons):
        wanted.append([])
        for o in comps:
            ref, cand = ref_out.get(o.name), cand_out.get(o.name)
            why = ("an output missing on one side" if ref is None or cand is None else
                   "--atol/--rtol given for it: a fixed tolerance, the float64 floor not used" if o.name in given else applies(ref, cand))
            if why:
                fixed(o, why)
            else:
                wanted[-1].append(o)
    if not ENABLED:
        for o in (o for comps in wanted for o in comps):
            fixed(o, "the float64 floor is switched off (noise_floor.ENABLED)")
        return
    if not any(wanted):
        return
    ref64s: list = [None] * len(feeds)
    try:
        with float64_of(runner) as call:
            for i, feed in enumerate(feeds):
                if wanted[i]:
                    with progress.step(f"running the reference in float64 at {shape_label(feed)}"):
                        ref64s[i] = call(feed)
            _judge_all(feeds, outputs, wanted, ref64s, defined_where)
            call.restore = restore or not all(o.passed for comps in comparisons for o in comps)
    except Exception as exc:  # noqa: BLE001 - no float64 path, an op without float64: never a crash
        why = str(exc) if isinstance(exc, NoFloat64) else \
            f"the reference failed in float64 ({type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:200]})"
        for o in (o for comps in wanted for o in comps):
            _unjudge(o)
            fixed(o, why)
        notes.append(f"float64 floor not used: {why}; fixed tolerances judged the outputs")
        return
    judged = sum(o.rule == RULE_FLOOR for comps in wanted for o in comps)
    notes.append(f"float64 floor: {judged} output comparison(s) judged against the reference run in float64 (pass: "
                 f"|candidate - float64| <= {FLOOR_K:g} x the reference's own float32 error + {NEAR_ZERO_ULPS} ulps)")
    notes.extend(coarse_notes(feeds, wanted))


def coarse(o) -> bool:
    """Whether ``o``'s floor is so large against the output that float32 cannot resolve it (COARSE_FRACTION)."""
    scale = getattr(o, "floor_scale", None)
    return getattr(o, "rule", "") == RULE_FLOOR and bool(scale) and o.floor > COARSE_FRACTION * scale


def coarse_notes(feeds, wanted) -> list[str]:
    """One note per output whose floor is coarse: the pass there says little, and by how much."""
    from porter.verifiers.equivalence import shape_label

    worst: dict = {}
    for feed, comps in zip(feeds, wanted):
        for o in comps:
            if coarse(o) and (o.name not in worst or o.floor / o.floor_scale > worst[o.name][0].floor / worst[o.name][0].floor_scale):
                worst[o.name] = (o, shape_label(feed))
    return [f"float64 floor: {name} at {label}: the reference's own float32 error {o.floor:.3g} is "
            f"{100 * o.floor / o.floor_scale:.3g}% of the output's largest magnitude {o.floor_scale:.3g}: float32 cannot "
            f"resolve this output, so its verdict cannot see a defect below {o.floor_bound:.3g} (the model is "
            f"ill-conditioned in float32; verify a conditioned or trained copy to check the mapping)"
            for name, (o, label) in worst.items()]


# ----------------------------------------------------------------------------------------------------------
# how reports say it


def judged_text(o) -> str:
    """One cell for the report tables: the floor's numbers, or the fixed tolerance (and why it was used)."""
    if getattr(o, "rule", "") == RULE_FLOOR:
        return f"vs fp64 {o.error_vs_float64:.2g} / floor {o.floor:.2g} = {_ratio_text(o.floor_ratio, 2)}"
    return f"atol {o.atol:g} / rtol {o.rtol:g}"


def summary(result) -> dict:
    """Per output across every shape: the rule(s) that judged it, the worst ratio, and why the floor was not used."""
    out: dict = {}
    for s in result.shapes:
        for o in s.outputs:
            entry = out.setdefault(o.name, {"rules": [], "worst_ratio": None, "error_vs_float64": None, "floor": None,
                                            "fixed_because": []})
            if o.rule and o.rule not in entry["rules"]:
                entry["rules"].append(o.rule)
            if o.rule == RULE_FLOOR:
                if entry["worst_ratio"] is None or o.floor_ratio > entry["worst_ratio"]:
                    entry.update(worst_ratio=o.floor_ratio, error_vs_float64=o.error_vs_float64, floor=o.floor, at=s.label)
                if coarse(o):  # float32 cannot resolve it here: the pass says little (coarse_notes)
                    entry["coarse_floor"] = max(entry.get("coarse_floor", 0.0), o.floor / o.floor_scale)
            elif o.floor_note and o.floor_note not in entry["fixed_because"]:
                entry["fixed_because"].append(o.floor_note)
    return {"k": FLOOR_K, "near_zero_ulps": NEAR_ZERO_ULPS, "outputs": out}

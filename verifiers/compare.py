"""Compare one output of two models, as Polygraphy and torch.testing do.

An element fails only when it is outside both atol and rtol * |reference|.
Defaults per dtype follow torch.testing.assert_close.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

# (atol, rtol) by dtype name; integers and bools compare exactly. fp64/fp32 as torch.testing.assert_close.
# fp16/bf16: the atol below is only a floor. Two honest 16-bit implementations of a deep model differ by
# ulps *of the output's largest values*, not of 1.0, so the atol also grows with the output's magnitude
# (HALF_ULPS ulps at max|reference|, see scaled_atol). Measured on all-MiniLM-L6-v2 (6 layers,
# last_hidden_state max|ref| 6.25, ulp there 3.9e-3 fp16 / 3.1e-2 bf16), max abs over porter's 6 input sets:
#   fp16: torch vs Keras conversion 0.039, noise floor (torch eager vs sdpa) 0.046 = 12 ulps;
#   bf16: conversion 0.25, noise floor 0.20, fp32-computed 16-bit weights vs torch 0.35 = 11 ulps;
#   a transposed 384x384 kernel: 1.5 (both dtypes). 24 ulps (fp16 0.094, bf16 0.75) passes the honest
#   ones 2x and fails the transposed kernel 2-16x. A 1% LayerNorm scale or a 1% bias shift moves that
#   output by at most 0.037 (fp16) / 0.11 (bf16): below the noise floor, so no elementwise tolerance can
#   see it in 16 bits; compare such models in fp32 (--dtype float32 on both sides).
DEFAULT_TOLERANCES = {
    "float64": (1e-7, 1e-7),
    "float32": (1e-5, 1.3e-6),
    "float16": (2e-3, 1e-3),
    "bfloat16": (2e-2, 1.6e-2),
}


# the atol of a 16-bit output: this many units in the last place at its reference's largest magnitude
HALF_ULPS = 24
HALF_EPS = {"float16": 2.0**-10, "bfloat16": 2.0**-7}


def scaled_atol(dtype: str, max_abs_reference: float) -> float:
    """HALF_ULPS ulps of ``dtype`` at ``max_abs_reference`` (0 for other dtypes). The magnitude is
    taken to its power of two (the ulp's own steps), so shapes with similar outputs share one atol."""
    if dtype not in HALF_EPS or not np.isfinite(max_abs_reference) or max_abs_reference <= 0:
        return 0.0
    return float(HALF_ULPS * HALF_EPS[dtype] * 2.0 ** np.floor(np.log2(max_abs_reference)))


def default_tolerance(dtype) -> tuple[float, float]:
    from porter.checks.numerics import dtype_name

    return DEFAULT_TOLERANCES.get(dtype if isinstance(dtype, str) else dtype_name(np.dtype(dtype)), (0.0, 0.0))


# A 16-bit side against a wider one: the 16-bit side's rounding at every op is not shared by the other
# (two 16-bit implementations round at the same points and mostly agree bit for bit), so the whole
# accumulated 16-bit error shows. Measured on a 2-layer BERT: bf16 vs fp32 up to 0.053, fp16 vs fp32 0.0087.
# The factor applies to the floor and rtol only; the ulp-scaled atol already covers it (MiniLM fp16 vs fp32:
# 0.030, under the same-dtype noise floor).
MIXED_16BIT_FACTOR = 4

# porter's fp32 standard: 1e-5 on hidden states, 1e-4 on logits. A logit is one more dot product over the
# whole hidden width (a vocabulary or class projection) on top of the hidden state: on a 1B-shaped Llama
# (hidden 2048, MLP 8192) an honest fp32 conversion differed by 1.78e-5 on logits, summation order alone.
FP32_LOGITS_ATOL = 1e-4


def _is_logits(name: str) -> bool:
    return str(name).lower().split("/")[-1].endswith("logits")


def default_pair_tolerance(ref_dtype: str, cand_dtype: str) -> tuple[float, float]:
    """Tolerances follow the lower-precision side: fp32 against a bf16 reference is held to bf16's
    (times MIXED_16BIT_FACTOR, as the sides round differently)."""
    ref_tol = default_tolerance(ref_dtype)
    if ref_dtype not in DEFAULT_TOLERANCES or cand_dtype not in DEFAULT_TOLERANCES:
        return ref_tol  # integer outputs compare exactly, as before
    cand_tol = default_tolerance(cand_dtype)
    atol, rtol = max(ref_tol[0], cand_tol[0]), max(ref_tol[1], cand_tol[1])
    if _mixed_16bit(ref_dtype, cand_dtype):
        atol, rtol = atol * MIXED_16BIT_FACTOR, rtol * MIXED_16BIT_FACTOR
    return atol, rtol


@dataclass
class OutputComparison:
    name: str
    shape: tuple
    dtype: str
    atol: float
    rtol: float
    passed: bool
    max_abs: float = 0.0
    max_rel: float = 0.0
    mean_abs: float = 0.0
    cosine: float = 1.0
    mismatched: int = 0
    mismatched_pct: float = 0.0
    required_atol: float = 0.0  # the smallest atol that would have passed, at this rtol
    worst_index: tuple = ()
    excluded: int = 0  # elements not compared: declared undefined (padded positions)
    reason: str = ""  # why it failed, in words, where the numbers do not say it alone
    # absolute errors binned by decade (HISTOGRAM_EDGES); counts add up across shapes
    histogram: dict = field(default_factory=dict)
    candidate_dtype: str = ""
    tolerance_from: str = ""  # "float16 defaults", "given", or which of the two came from where
    # NaN/Inf elements (compared elements only); any of them fails the output, and the error
    # statistics above then describe the elements finite on both sides
    nonfinite_reference: int = 0
    nonfinite_candidate: int = 0
    nan_mismatch: int = 0  # positions NaN on one side only
    # which rule judged it (noise_floor.py): "float64 floor" or "fixed tolerance" (floor_note says why the floor
    # was not used); under the floor: max |candidate - reference in float64|, the reference's own float32 error
    # max |ref32 - ref64|, their ratio and the largest error that passes (FLOOR_K floors + a few ulps)
    rule: str = ""
    floor_note: str = ""
    error_vs_float64: float | None = None
    floor: float | None = None
    floor_ratio: float | None = None
    floor_bound: float | None = None
    floor_k: float | None = None
    floor_scale: float | None = None  # max |ref64|: a floor above 1% of it is coarse (noise_floor.coarse)

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


# lower edges of the error histogram's bins: [0, 1e-12), then one bin per decade, the last one >= 10
HISTOGRAM_EDGES = [0.0] + [10.0**e for e in range(-12, 2)]


def error_histogram(diff: np.ndarray) -> dict:
    """Counts of absolute errors per bin; ``edges`` are the bins' lower edges (the last bin is open)."""
    index = np.searchsorted(np.asarray(HISTOGRAM_EDGES), np.asarray(diff, dtype=np.float64).ravel(), side="right") - 1
    counts = np.bincount(np.clip(index, 0, None), minlength=len(HISTOGRAM_EDGES))
    return {"edges": HISTOGRAM_EDGES, "counts": [int(c) for c in counts]}


def _degenerate(ref: np.ndarray, atol: float) -> str:
    """A reference a constant would match: any check on it passes by accident. One element (a Dense(1) head at
    batch 1) says nothing either way; the other input sets of the run judge it."""
    if ref.size <= 1:
        return ""
    if float(np.ptp(ref)) <= atol:
        return "reference output is constant (every element within atol of every other)"
    if ref.ndim >= 1 and ref.shape[0] > 1 and float(np.max(np.ptp(ref, axis=0))) <= atol:
        return "reference output does not depend on the input (every sample in the batch gives the same output)"
    return ""


def expand_valid(valid, shape) -> np.ndarray | None:
    """A (batch, seq) validity mask broadcast over an output's trailing dimensions."""
    if valid is None:
        return None
    valid = np.asarray(valid).astype(bool)
    valid = valid.reshape(valid.shape + (1,) * (len(shape) - valid.ndim))
    return np.broadcast_to(valid, shape)


def compare(name, reference, candidate, *, atol=None, rtol=None, allow_degenerate=False, valid=None) -> OutputComparison:
    """``valid``: where the output is defined (e.g. not at padded positions); elsewhere it is not compared."""
    from porter.checks.numerics import dtype_name

    ref, cand = np.asarray(reference), np.asarray(candidate)
    ref_dtype, cand_dtype = dtype_name(ref.dtype), dtype_name(cand.dtype)
    d_atol, d_rtol = default_pair_tolerance(ref_dtype, cand_dtype)
    given_atol, given_rtol = atol is not None, rtol is not None
    atol = d_atol if atol is None else float(atol)
    rtol = d_rtol if rtol is None else float(rtol)
    result = OutputComparison(name, tuple(ref.shape), ref_dtype, atol, rtol, passed=False, candidate_dtype=cand_dtype,
                              tolerance_from=_tolerance_from(given_atol, given_rtol, ref_dtype, cand_dtype))
    if not given_atol and _is_logits(name) and "float32" in (ref_dtype, cand_dtype) and atol < FP32_LOGITS_ATOL:
        atol = result.atol = FP32_LOGITS_ATOL
        result.tolerance_from += f"; logits: atol {FP32_LOGITS_ATOL:g}"
    if ref.shape != cand.shape:
        result.reason = f"shape differs: reference {ref.shape}, candidate {cand.shape}"
        return result
    ref, cand = _widened(ref), _widened(cand)
    valid = expand_valid(valid, ref.shape)
    if valid is not None:
        result.excluded = int(valid.size - valid.sum())
        ref, cand = np.where(valid, ref, 0), np.where(valid, cand, 0)
    if ref.size == 0:
        result.passed = True
        return result
    r64, c64 = ref.astype(np.float64), cand.astype(np.float64)
    finite = np.isfinite(r64) & np.isfinite(c64)
    half = _half_side(ref_dtype, cand_dtype)
    if half and not given_atol and finite.any():  # 16-bit: the floor, or HALF_ULPS ulps at the output's scale
        scale = float(np.abs(r64[finite]).max())
        if scaled_atol(half, scale) > atol:
            atol = result.atol = scaled_atol(half, scale)
            result.tolerance_from += f"; atol {HALF_ULPS} ulps of {half} at max|ref| >= {2.0 ** np.floor(np.log2(scale)):g}"
    if not finite.all():
        # counted before the statistics, which are then taken over the elements finite on both sides:
        # a NaN must never read as "max abs 0, cosine 1"
        result.nonfinite_reference = int((~np.isfinite(r64)).sum())
        result.nonfinite_candidate = int((~np.isfinite(c64)).sum())
        result.nan_mismatch = int((np.isnan(r64) != np.isnan(c64)).sum())
        r64, c64 = np.where(finite, r64, 0.0), np.where(finite, c64, 0.0)
    diff = np.abs(r64 - c64)
    result.histogram = error_histogram(diff if valid is None else diff[valid])
    rel = diff / np.maximum(np.abs(r64), np.finfo(np.float64).tiny)
    bad = (diff > atol) & (diff > rtol * np.abs(r64))
    worst = np.unravel_index(int(np.argmax(diff)), diff.shape)
    outside_rtol = diff[diff > rtol * np.abs(r64)]
    norms = np.linalg.norm(r64) * np.linalg.norm(c64)
    result.max_abs = float(diff.max())
    result.max_rel = float(rel.max())
    result.mean_abs = float(diff.sum() / max(1, diff.size - result.excluded))
    result.cosine = float(np.dot(r64.ravel(), c64.ravel()) / norms) if norms > 0 else float(np.array_equal(r64, c64))
    result.mismatched = int(bad.sum()) + int((~finite).sum())
    result.mismatched_pct = 100.0 * result.mismatched / max(1, bad.size - result.excluded)
    result.required_atol = float(outside_rtol.max()) if outside_rtol.size else 0.0
    result.worst_index = tuple(int(i) for i in worst)
    result.passed = result.mismatched == 0
    if not finite.all():
        result.reason = _nonfinite_reason(result, int(bad.sum()), int(finite.sum()) - result.excluded)
    elif result.passed and not allow_degenerate and ref.dtype.kind == "f":
        why = _degenerate(ref if valid is None else _widened(np.asarray(reference))[valid], atol)
        if why:
            result.passed, result.reason = False, f"degenerate: {why}; pass --allow-degenerate to accept it"
    elif not result.passed:
        result.reason = f"{result.mismatched} of {bad.size} elements outside atol={atol:g} and rtol={rtol:g}"
    return result


def _widened(array: np.ndarray) -> np.ndarray:
    """bfloat16 (ml_dtypes) as float32, exactly: numpy's ufuncs do not all take it."""
    return array.astype(np.float32) if array.dtype.name == "bfloat16" else array


def _nonfinite_reason(result: OutputComparison, bad_finite: int, finite: int) -> str:
    sides = "; ".join(f"{side} has {n} NaN/Inf" for side, n in
                      (("reference", result.nonfinite_reference), ("candidate", result.nonfinite_candidate)) if n)
    where = f"; NaN at different positions in {result.nan_mismatch} element(s)" if result.nan_mismatch else ""
    return (f"non-finite output: {sides}{where}; of the {finite} elements finite on both sides, {bad_finite} are "
            f"outside atol={result.atol:g} and rtol={result.rtol:g} (max abs {result.max_abs:.3g})")


def _tolerance_from(given_atol: bool, given_rtol: bool, ref_dtype: str, cand_dtype: str) -> str:
    if given_atol and given_rtol:
        return "given"
    loose = [d for d in (ref_dtype, cand_dtype) if d in DEFAULT_TOLERANCES]
    # the lower-precision side's defaults (the larger rtol)
    default = max(loose, key=lambda d: DEFAULT_TOLERANCES[d][1]) if loose and ref_dtype in DEFAULT_TOLERANCES else ref_dtype
    default = f"{default} defaults" + (f" x{MIXED_16BIT_FACTOR}: the sides round differently" if _mixed_16bit(ref_dtype, cand_dtype) else "")
    if given_atol or given_rtol:
        return f"{'atol' if given_atol else 'rtol'} given, {'rtol' if given_atol else 'atol'} {default}"
    return default


def _half_side(ref_dtype: str, cand_dtype: str) -> str:
    """The lower-precision 16-bit dtype of the pair ('' when neither side is 16-bit)."""
    return next((d for d in ("bfloat16", "float16") if d in (ref_dtype, cand_dtype)), "")


def _mixed_16bit(ref_dtype: str, cand_dtype: str) -> bool:
    both_float = ref_dtype in DEFAULT_TOLERANCES and cand_dtype in DEFAULT_TOLERANCES
    return both_float and ref_dtype != cand_dtype and bool({ref_dtype, cand_dtype} & {"float16", "bfloat16"})

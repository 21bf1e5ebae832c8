"""Compare one output of two models, as Polygraphy and torch.testing do.

An element fails only when it is outside both atol and rtol * |reference|.
Defaults per dtype follow torch.testing.assert_close.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

# (atol, rtol) by dtype name, as torch.testing.assert_close; integers and bools compare exactly
DEFAULT_TOLERANCES = {
    "float64": (1e-7, 1e-7),
    "float32": (1e-5, 1.3e-6),
    "float16": (1e-5, 1e-3),
    "bfloat16": (1e-5, 1.6e-2),
}


def default_tolerance(dtype) -> tuple[float, float]:
    return DEFAULT_TOLERANCES.get(np.dtype(dtype).name if not isinstance(dtype, str) else dtype, (0.0, 0.0))


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
    """A reference a constant would match: any check on it passes by accident."""
    if ref.size == 0:
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
    ref, cand = np.asarray(reference), np.asarray(candidate)
    d_atol, d_rtol = default_tolerance(ref.dtype)
    atol = d_atol if atol is None else float(atol)
    rtol = d_rtol if rtol is None else float(rtol)
    result = OutputComparison(name, tuple(ref.shape), ref.dtype.name, atol, rtol, passed=False)
    if ref.shape != cand.shape:
        result.reason = f"shape differs: reference {ref.shape}, candidate {cand.shape}"
        return result
    for side, arr in (("reference", ref), ("candidate", cand)):
        if arr.dtype.kind in "fc" and not np.all(np.isfinite(arr)):
            result.reason = f"{side} has {int(np.sum(~np.isfinite(arr)))} NaN/Inf values"
            return result
    valid = expand_valid(valid, ref.shape)
    if valid is not None:
        result.excluded = int(valid.size - valid.sum())
        ref, cand = np.where(valid, ref, 0), np.where(valid, cand, 0)
    if ref.size == 0:
        result.passed = True
        return result
    r64, c64 = ref.astype(np.float64), cand.astype(np.float64)
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
    result.mismatched = int(bad.sum())
    result.mismatched_pct = 100.0 * result.mismatched / max(1, bad.size - result.excluded)
    result.required_atol = float(outside_rtol.max()) if outside_rtol.size else 0.0
    result.worst_index = tuple(int(i) for i in worst)
    result.passed = result.mismatched == 0
    if result.passed and not allow_degenerate and ref.dtype.kind == "f":
        why = _degenerate(ref if valid is None else np.asarray(reference)[valid], atol)
        if why:
            result.passed, result.reason = False, f"degenerate: {why}; pass --allow-degenerate to accept it"
    elif not result.passed:
        result.reason = f"{result.mismatched} of {bad.size} elements outside atol={atol:g} and rtol={rtol:g}"
    return result

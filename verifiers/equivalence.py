"""Run two runners on identical inputs and compare every output at every input shape."""

from __future__ import annotations

import numpy as np

from porter.process import progress
from porter.errors import PorterError
from porter.verifiers.compare import compare
from porter.verifiers.result import ShapeResult, VerificationResult
from porter.verifiers.versions import versions


def shape_label(feed: dict) -> str:
    first = next(iter(feed.values()))
    return "x".join(str(d) for d in np.shape(first))


def _check_names(reference, candidate, feed_names):
    ref_out, cand_out = set(reference.output_names), set(candidate.output_names)
    if ref_out != cand_out:
        raise PorterError(
            "the two models have different outputs",
            problems=[f"reference ({reference.name}): {sorted(ref_out)}", f"candidate ({candidate.name}): {sorted(cand_out)}"],
        )
    for runner in (reference, candidate):
        unknown = set(feed_names) - set(runner.input_names)
        if runner.input_names and unknown:
            raise PorterError(
                f"inputs {sorted(unknown)} do not match the inputs of {runner.name}: {sorted(runner.input_names)}",
                hint="name the arrays in --inputs after the model's inputs",
            )


def run_equivalence(
    reference,
    candidate,
    feeds: list[dict],
    *,
    atol: float | None = None,
    rtol: float | None = None,
    per_output: dict | None = None,
    allow_degenerate: bool = False,
    route: str | None = None,
    defined_where: dict | None = None,
    reference_reused: bool = True,
) -> VerificationResult:
    """``per_output`` maps an output name to {"atol": ..., "rtol": ...} overriding the global values;
    ``defined_where`` maps an output name to the input mask outside which it is not compared;
    ``reference_reused=False``: the caller runs the reference no more after a pass (noise_floor.apply's restore)."""
    defined_where = defined_where or {}
    per_output = per_output or {}
    result = VerificationResult(reference.name, candidate.name, route=route, device=reference.device, versions=versions())
    _check_names(reference, candidate, feeds[0].keys() if feeds else ())
    # the float64 floor (noise_floor.py) judges float32 outputs unless the user fixed a tolerance
    floor = atol is None and rtol is None
    outputs, all_comparisons = [], []
    for feed in feeds:
        with progress.step(f"running both models at {shape_label(feed)}"):
            ref_out, cand_out = reference.infer(feed), candidate.infer(feed)
        if floor:
            outputs.append((ref_out, cand_out))
        comparisons = []
        all_comparisons.append(comparisons)
        for name in reference.output_names:
            tol = per_output.get(name, {})
            comparisons.append(
                compare(
                    name,
                    ref_out[name],
                    cand_out[name],
                    atol=tol.get("atol", atol),
                    rtol=tol.get("rtol", rtol),
                    allow_degenerate=allow_degenerate,
                    valid=feed.get(defined_where[name]) if name in defined_where else None,
                )
            )
        result.shapes.append(ShapeResult(shape_label(feed), {k: tuple(np.shape(v)) for k, v in feed.items()}, comparisons))
    if floor:
        from porter.verifiers import noise_floor

        noise_floor.apply(reference, feeds, outputs, all_comparisons, defined_where, result.notes, given=set(per_output),
                          restore=reference_reused)
    else:
        from porter.verifiers.noise_floor import fixed

        for o in (o for s in result.shapes for o in s.outputs):
            fixed(o, "--atol/--rtol given: a fixed tolerance, the float64 floor not used")
        result.notes.append("float64 floor not used: --atol/--rtol given, so every output keeps that fixed tolerance")
    for output, mask in defined_where.items():
        result.notes.append(f"{output}: positions where {mask} == 0 (padding) are not compared")
    if reference.device != "cpu":  # where each side's outputs were computed, as its runtime says where it can
        result.notes.append(f"device {reference.device}: reference on {getattr(reference, 'placed', None) or reference.device}, "
                            f"candidate on {getattr(candidate, 'placed', None) or candidate.device}")
    result.tolerances = {
        o.name: {"atol": o.atol, "rtol": o.rtol} for s in result.shapes for o in s.outputs
    }
    return result

"""What every route hands back: the ConversionResult, and the porter_report.json it writes into the staged folder.

Routes (porter/routes/*) import from here, not from porter.conversion, which only resolves, chooses the
route, stages, verifies and reports: so no route imports the module that calls it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

REPORT = "porter_report.json"


@dataclass
class ConversionResult:
    out: Path
    route: str
    verification: object | None = None  # VerificationResult
    report: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.verification is None or bool(self.verification)

    def __bool__(self) -> bool:
        return self.passed


def verify_written(reference_path, candidate_path, atol, rtol, route, inputs=None, allow_nonfinite=False, latency=False,
                   **extra):
    """The same verifier as `porter verify`: zoo inputs (or --inputs), padded positions skipped, localisation on failure.
    ``extra``: more of verify()'s keywords (shapes, reference_dtype: porter/resources/reference_plan.py)."""
    from porter.verifiers.api import verify

    return verify(reference_path, candidate_path, inputs=inputs, atol=atol, rtol=rtol, route=route,
                  allow_nonfinite=allow_nonfinite, latency=latency, **extra)


def finish(tmp: Path, out: Path, report: dict, verification, console) -> None:
    if verification is not None:
        name_final_path(verification, tmp, out)
        report["status"] = verification.status
        report["verification"] = verification.to_dict()
        if verification.latency is not None:  # the written model's latency next to the source's
            report["latency"] = verification.latency
        from porter.verifiers.console import render

        render(verification, console)
    else:
        report["status"] = "not verified"
    # the verifier ran on the staged folder, which is gone once it is moved to out
    (tmp / REPORT).write_text(json.dumps(report, indent=2, default=str).replace(str(tmp), str(out)))


def name_final_path(verification, tmp: Path, out: Path) -> None:
    def final(text):
        return text.replace(str(tmp), str(out)) if isinstance(text, str) else text

    verification.candidate = final(verification.candidate)
    verification.notes = [final(n) for n in verification.notes]

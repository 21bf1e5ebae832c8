"""The one result object every report is rendered from."""

from __future__ import annotations

from dataclasses import dataclass, field

from porter.verifiers.compare import OutputComparison


@dataclass
class ShapeResult:
    label: str  # e.g. "input_ids=2x8"
    input_shapes: dict
    outputs: list[OutputComparison]

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outputs)

    def to_dict(self) -> dict:
        return {
            "label": self.label,
            "input_shapes": {k: list(v) for k, v in self.input_shapes.items()},
            "passed": self.passed,
            "outputs": [o.to_dict() for o in self.outputs],
        }


@dataclass
class VerificationResult:
    reference: str
    candidate: str
    shapes: list[ShapeResult] = field(default_factory=list)
    route: str | None = None
    device: str = "cpu"
    tolerances: dict = field(default_factory=dict)
    latency: dict | None = None  # filled by the latency verifier
    localisation: dict | None = None  # the first diverging layer, when known
    versions: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # reasons the conversion fails whatever the numbers say (dims the written model fixed)
    problems: list[str] = field(default_factory=list)

    @property
    def equivalent(self) -> bool:
        return bool(self.shapes) and all(s.passed for s in self.shapes)

    @property
    def latency_passed(self) -> bool:
        return self.latency is None or self.latency.get("passed", True) is not False

    @property
    def latency_undecided(self) -> bool:
        """A latency gate was asked for and the timing was too noisy to decide it (latency.py)."""
        return bool(self.latency) and self.latency.get("status") == "unstable" and self.latency.get("max_ratio") is not None

    @property
    def passed(self) -> bool:
        return self.equivalent and self.latency_passed and not self.problems and not self.latency_undecided

    @property
    def status(self) -> str:
        """passed, failed, or unstable: equivalent, but the latency gate asked for could not decide."""
        if self.passed:
            return "passed"
        failed = not (self.equivalent and self.latency_passed and not self.problems)
        return "failed" if failed else "unstable"

    def __bool__(self) -> bool:
        return self.passed

    def failures(self) -> list[str]:
        out = [
            (f"{o.name} at {s.label}: {o.reason}" if _nonfinite(o) or o.rule == "float64 floor" else
             f"{o.name} at {s.label}: max abs error {o.max_abs:.3g}{_at(o.worst_index)} (atol {o.atol:g}, rtol {o.rtol:g}"
             + (f"; passes at atol {o.required_atol:.3g})" if o.mismatched else ")")
             + (f" - {o.reason}" if o.reason else ""))
            for s in self.shapes
            for o in s.outputs
            if not o.passed
        ]
        out += self.problems
        if not self.latency_passed:
            out.append(f"latency: {self.latency.get('reason', 'ratio above the gate')}")
        return out

    def dtype_lines(self) -> list[str]:
        """Which dtypes met and which tolerances held them, one line per distinct combination."""
        seen: dict = {}
        for s in self.shapes:
            for o in s.outputs:
                floor = o.rule == "float64 floor"  # noise_floor.py: no atol/rtol, the float64 floor judged
                key = (o.dtype, o.candidate_dtype or o.dtype, None if floor else o.atol, None if floor else o.rtol, o.tolerance_from)
                seen.setdefault(key, []).append(o.name)
        return [
            f"dtype: reference {ref}, candidate {cand}; " + (f"atol {atol:g}, rtol {rtol:g}" if atol is not None else "judged by the float64 floor")
            + (f" ({source})" if source else "") + (f" for {', '.join(dict.fromkeys(names))}" if len(seen) > 1 else "")
            for (ref, cand, atol, rtol, source), names in seen.items()
        ]

    def worst(self) -> dict[str, float]:
        """Max abs error per output across every shape."""
        worst: dict[str, float] = {}
        for s in self.shapes:
            for o in s.outputs:
                worst[o.name] = max(worst.get(o.name, 0.0), o.max_abs)
        return worst

    def to_dict(self) -> dict:
        return {
            "status": self.status,
            "reference": self.reference,
            "candidate": self.candidate,
            "route": self.route,
            "device": self.device,
            "tolerances": self.tolerances,
            "dtypes": self.dtype_lines(),
            "noise_floor": _floor_summary(self),
            "max_abs_error": self.worst(),
            "shapes": [s.to_dict() for s in self.shapes],
            "latency": self.latency,
            "localisation": self.localisation,
            "versions": self.versions,
            "notes": self.notes,
            "problems": self.problems,
        }


def _floor_summary(result) -> dict:
    from porter.verifiers.noise_floor import summary

    return summary(result)


def _nonfinite(o) -> bool:
    return bool(getattr(o, "nonfinite_reference", 0) or getattr(o, "nonfinite_candidate", 0))


def _at(index) -> str:
    return f" at {list(index)}" if index else ""

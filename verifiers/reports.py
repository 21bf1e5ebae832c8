"""Reports rendered from one VerificationResult: JSON, JUnit XML, Markdown (and HTML in html.py).

Paths, names, reasons and notes can come from the model folders: each goes through porter.checks.escape's
function for its report (JSON needs none)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from xml.etree import ElementTree as ET

from porter.checks import escape


def to_json(result) -> str:
    return json.dumps(result.to_dict(), indent=2, default=str)


def to_junit(result) -> str:
    """One test case per output per shape (and one for the latency gate), for CI systems."""
    suite = ET.Element("testsuite", name="porter.verify")
    props = ET.SubElement(suite, "properties")
    for key, value in (("reference", result.reference), ("candidate", result.candidate), ("route", result.route or ""), ("status", result.status)):
        ET.SubElement(props, "property", name=key, value=escape.xml(value))
    cases = failures = skipped = 0
    for s in result.shapes:
        for o in s.outputs:
            case = ET.SubElement(suite, "testcase", classname=escape.xml(f"porter.verify.{s.label}"),
                                 name=escape.xml(f"{o.name} [{s.label}]"), time="0")
            ET.SubElement(case, "system-out").text = (
                f"max_abs={o.max_abs:.6g} max_rel={o.max_rel:.6g} mean_abs={o.mean_abs:.6g} cosine={o.cosine:.9f} "
                f"mismatched={o.mismatched} ({o.mismatched_pct:.3f}%) required_atol={o.required_atol:.6g} atol={o.atol:g} rtol={o.rtol:g}"
                + (f" rule=float64_floor error_vs_float64={o.error_vs_float64:.6g} floor={o.floor:.6g} ratio={o.floor_ratio:.6g} k={o.floor_k:g}"
                   if o.rule == "float64 floor" else f" rule=fixed_tolerance ({o.floor_note})" if o.floor_note else "")
            )
            cases += 1
            if not o.passed:
                failures += 1
                ET.SubElement(case, "failure", message=escape.xml(o.reason or "outside tolerance"), type="Mismatch").text = _failure_text(o, result)
    if result.latency is not None:
        lat = result.latency
        case = ET.SubElement(suite, "testcase", classname="porter.verify.latency", name="latency median ratio", time=f"{_total_s(lat):.3f}")
        ET.SubElement(case, "system-out").text = escape.xml(_latency_line(lat))
        cases += 1
        if lat.get("passed") is False:
            failures += 1
            ET.SubElement(case, "failure", message=escape.xml(lat.get("reason", "latency gate")), type="Latency").text = escape.xml(_latency_line(lat))
        elif lat.get("status") == "unstable":  # neither pass nor fail: too noisy to decide
            skipped += 1
            ET.SubElement(case, "skipped", message=escape.xml(lat.get("reason", "unstable")))
    suite.set("tests", str(cases))
    suite.set("failures", str(failures))
    suite.set("errors", "0")
    suite.set("skipped", str(skipped))
    root = ET.Element("testsuites", name="porter", tests=str(cases), failures=str(failures))
    root.append(suite)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True)


def _failure_text(o, result) -> str:
    lines = [f"{o.name}: max abs error {o.max_abs:.6g} at {list(o.worst_index)}; {o.reason}"]
    loc = result.localisation
    if loc and loc.get("found"):
        lines.append(f"first diverging layer: {loc['torch_module']} <-> {loc['keras_layer']} (max abs {loc['max_abs']:.3g})")
    return "\n".join(map(escape.xml, lines))


def _total_s(lat) -> float:
    """Timed seconds, every shape, both sides (samples are seconds per run, each round ran runs_per_round)."""
    return sum(sum(m[side].get("samples_ms", [])) * m.get("runs_per_round", 1)
               for m in lat.get("shapes", []) for side in ("reference", "candidate")) / 1e3


def _latency_line(lat) -> str:
    """status; per shape: median paired ratio cand/ref with its 90% CI and IQR, p50 of each side; gate; threads; device."""
    shapes = "; ".join(
        f"{m['label']} ({m['role']}): ratio {m['ratio_median']:.3f} (90% CI {m['ratio_ci90'][0]:.3f}-{m['ratio_ci90'][1]:.3f}, "
        f"IQR {m['ratio_iqr'][0]:.3f}-{m['ratio_iqr'][1]:.3f}{'' if m['stable'] else ', too wide'}; "
        f"p50 {m['reference']['p50_ms']:.3f} vs {m['candidate']['p50_ms']:.3f} ms; {m['rounds']} rounds x {m['runs_per_round']})"
        for m in lat.get("shapes", []))
    gate = f"; gate {lat['max_ratio']:g}" if lat.get("max_ratio") is not None else ""
    threads = ", ".join(f"{k} {v}" for k, v in (lat.get("threads") or {}).items() if k != "requested")
    dev = lat.get("device") or {}
    device = f"; device {dev.get('name')} ({dev.get('cpus')} cpus" + (f", load {dev['load_avg_1m']}" if "load_avg_1m" in dev else "") + ")" if dev else ""
    return f"{lat.get('status', '?')}: {shapes}{gate}" + (f"; threads: {threads}" if threads else "") + device


def to_markdown(result) -> str:
    """A compact summary that fits a CI step summary ($GITHUB_STEP_SUMMARY)."""
    icon = "✅" if result else "⚠️" if result.status == "unstable" else "❌"
    code, text = escape.markdown_code, escape.markdown
    lines = [f"## {icon} porter verify: {result.status}", "", f"{code(result.reference)} → {code(result.candidate)}"]
    if result.route:
        lines[-1] += f" (route: {text(result.route)})"
    lines += ["", "| shape | output | max abs | max rel | cosine | mismatched | err vs fp64 / fp32 floor (ratio) | judged by | result |",
              "|---|---|---:|---:|---:|---:|---:|---|---|"]
    for s in result.shapes:
        for o in s.outputs:
            verdict = "pass" if o.passed else f"**FAIL** {text(o.reason)}"
            floor = o.rule == "float64 floor"  # noise_floor.py judged it; else the fixed atol/rtol, and why
            rule = (f"float64 floor (<= {o.floor_k:g}x)" if floor else
                    f"atol {o.atol:g} / rtol {o.rtol:g}, needed atol {o.required_atol:.3g}" + (f" ({text(o.floor_note)})" if o.floor_note else ""))
            lines.append(
                f"| {code(s.label)} | {code(o.name)} | {o.max_abs:.3g} | {o.max_rel:.3g} | {_num(o.cosine)} | {o.mismatched} ({o.mismatched_pct:.2f}%) "
                + (f"| {o.error_vs_float64:.3g} / {o.floor:.3g} ({o.floor_ratio:.3g}x) " if floor else "| ")
                + f"| {rule} | {verdict} |"
            )
    loc = result.localisation
    if loc:
        lines += ["", "**Localisation:** " + (f"first diverging layer {code(loc['torch_module'])} ↔ {code(loc['keras_layer'])} (max abs {loc['max_abs']:.3g})"
                                             if loc.get("found") else text(loc.get("note", "")))]
    if result.latency:
        verdict = {"failed": " — **FAILED**", "unstable": " — **UNSTABLE** (" + text(result.latency.get("reason", "")) + ")"}
        lines += ["", "**Latency:** " + text(_latency_line(result.latency)) + verdict.get(result.latency.get("status"), "")]
    if result.notes:
        lines += [""] + [f"- {text(n)}" for n in result.notes]
    return "\n".join(lines) + "\n"


def _num(x: float) -> str:
    return f"{x:.7f}" if math.isfinite(x) else str(x)


def write(result, *, report=None, junit=None, markdown=None, html=None) -> list[Path]:
    """Write every report asked for; returns the paths written."""
    from porter.output.outdir import check_report_path, write_failed

    written = []
    for flag, path, render in (("--report", report, to_json), ("--junit", junit, to_junit),
                               ("--markdown", markdown, to_markdown), ("--html", html, None)):
        if path is None:
            continue
        if render is None:
            from porter.verifiers.html import to_html as render
        path = Path(path)
        check_report_path(path, flag)  # checked at the start too; a folder may have changed since
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(render(result), encoding="utf-8")
        except OSError as exc:  # a full disk, or a folder that became read-only since the start
            raise write_failed(exc, path, flag, any_oserror=True) from None
        written.append(path)
    return written

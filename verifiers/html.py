"""A self-contained HTML report: the table, a histogram of absolute errors per output and the
latency distributions of both sides, as inline SVG (no scripts, fonts or links to fetch).
Every text goes through escape.html: names and paths come from the model folders."""

from __future__ import annotations

import numpy as np

from porter.checks import escape
from porter.verifiers.compare import HISTOGRAM_EDGES

CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;font-size:13px}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}td.l,th.l{text-align:left}.pass{color:#176f2c}.fail{color:#b00020;font-weight:bold}
figure{display:inline-block;margin:1em 2em 1em 0}figcaption{font-size:13px}svg text{font-size:10px;fill:#333}"""


def to_html(result) -> str:
    status = "pass" if result else "fail"
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>porter verify</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>porter verify: <span class='{status}'>{escape.html(result.status.upper())}</span></h1>",
        f"<p>reference <code>{escape.html(result.reference)}</code><br>candidate <code>{escape.html(result.candidate)}</code>"
        + (f"<br>route {escape.html(result.route)}" if result.route else "") + f"<br>device {escape.html(result.device)}</p>",
        _table(result),
    ]
    loc = result.localisation
    if loc:
        text = (f"first diverging layer: <code>{escape.html(loc['torch_module'])}</code> ↔ <code>{escape.html(loc['keras_layer'])}</code>, max abs {loc['max_abs']:.3g}"
                if loc.get("found") else escape.html(loc.get("note", "")))
        parts.append(f"<h2>Localisation</h2><p>{text}</p>")
    parts.append("<h2>Absolute errors</h2>")
    for name, counts in _histograms(result).items():
        parts.append(f"<figure>{_bars(counts, _edge_labels())}<figcaption>{escape.html(name)}: elements per error decade, every shape</figcaption></figure>")
    if result.latency:
        parts.append("<h2>Latency</h2>" + _latency(result.latency))
    if result.notes:
        parts.append("<ul>" + "".join(f"<li>{escape.html(n)}</li>" for n in result.notes) + "</ul>")
    parts.append("<h2>Versions</h2><p>" + ", ".join(f"{escape.html(k)} {escape.html(str(v))}" for k, v in result.versions.items()) + "</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _table(result) -> str:
    from porter.verifiers.noise_floor import judged_text

    head = ["shape", "output", "dtype", "max abs", "max rel", "mean abs", "cosine", "mismatched", "needed atol", "worst at", "judged by", "result"]
    rows = ["<table><tr>" + "".join(f"<th class='l'>{h}</th>" if h in ("shape", "output", "result") else f"<th>{h}</th>" for h in head) + "</tr>"]
    for s in result.shapes:
        for o in s.outputs:
            verdict = "<span class='pass'>pass</span>" if o.passed else f"<span class='fail'>FAIL</span> {escape.html(o.reason)}"
            cells = [s.label, o.name, o.dtype, f"{o.max_abs:.3g}", f"{o.max_rel:.3g}", f"{o.mean_abs:.3g}", f"{o.cosine:.7f}",
                     f"{o.mismatched} ({o.mismatched_pct:.2f}%)", f"{o.required_atol:.3g}", str(list(o.worst_index)), judged_text(o)]
            rows.append("<tr>" + "".join(f"<td class='l'>{escape.html(c)}</td>" if i < 2 else f"<td>{escape.html(c)}</td>" for i, c in enumerate(cells)) + f"<td class='l'>{verdict}</td></tr>")
    return "\n".join(rows) + "</table>"


def _histograms(result) -> dict[str, list[int]]:
    out: dict[str, np.ndarray] = {}
    for s in result.shapes:
        for o in s.outputs:
            counts = (o.histogram or {}).get("counts")
            if counts:
                out[o.name] = out.get(o.name, np.zeros(len(counts), dtype=np.int64)) + np.asarray(counts)
    return {k: [int(c) for c in v] for k, v in out.items()}


def _edge_labels() -> list[str]:
    return ["0"] + [f"1e{int(np.log10(e))}" for e in HISTOGRAM_EDGES[1:]]


def _bars(counts, labels, width=520, height=170, color="#3b6ea5") -> str:
    """A bar chart as inline SVG; bar heights on a log scale so single outliers stay visible."""
    n, pad, base = len(counts), 30, height - 30
    bw = (width - 2 * pad) / max(1, n)
    top = np.log10(max(counts) + 1) or 1.0
    svg = [f"<svg width='{width}' height='{height}' role='img'>",
           f"<line x1='{pad}' y1='{base}' x2='{width - pad}' y2='{base}' stroke='#999'/>"]
    for i, (c, label) in enumerate(zip(counts, labels)):
        h = (base - 15) * np.log10(c + 1) / top
        x = pad + i * bw
        svg.append(f"<rect x='{x + 1:.1f}' y='{base - h:.1f}' width='{bw - 2:.1f}' height='{h:.1f}' fill='{color}'><title>{escape.html(label)}: {c}</title></rect>")
        if c:
            svg.append(f"<text x='{x + bw / 2:.1f}' y='{base - h - 3:.1f}' text-anchor='middle'>{c}</text>")
        svg.append(f"<text x='{x + bw / 2:.1f}' y='{base + 12}' text-anchor='middle'>{escape.html(label)}</text>")
    svg.append("</svg>")
    return "".join(svg)


def _latency(lat) -> str:
    r, c = lat["reference"], lat["candidate"]
    samples = [np.asarray(r.get("samples_ms") or [0.0]), np.asarray(c.get("samples_ms") or [0.0])]
    lo, hi = min(s.min() for s in samples), max(s.max() for s in samples)
    edges = np.linspace(lo, hi if hi > lo else lo + 1e-3, 21)
    labels = [f"{e:.2f}" if i % 4 == 0 else "" for i, e in enumerate(edges[:-1])]
    figs = []
    for side, data, color in (("reference", samples[0], "#3b6ea5"), ("candidate", samples[1], "#c2692a")):
        counts, _ = np.histogram(data, bins=edges)
        s = lat[side]
        figs.append(f"<figure>{_bars([int(x) for x in counts], labels, color=color)}<figcaption>{side}: {s['runs']} runs, "
                    f"p50 {s['p50_ms']:.3f} ms, p90 {s['p90_ms']:.3f} ms, p99 {s['p99_ms']:.3f} ms (ms per run)</figcaption></figure>")
    verdict = {"passed": "passed", "measured": "measured", "failed": "<span class='fail'>FAILED</span>",
               "unstable": "<span class='fail'>UNSTABLE</span> (neither pass nor fail)"}.get(lat.get("status"), escape.html(str(lat.get("status"))))
    rows = "".join(
        f"<tr><td class='l'>{escape.html(m['label'])} ({escape.html(m['role'])})</td><td>{m['ratio_median']:.3f}</td>"
        f"<td>{m['ratio_ci90'][0]:.3f}-{m['ratio_ci90'][1]:.3f}</td><td>{m['ratio_iqr'][0]:.3f}-{m['ratio_iqr'][1]:.3f}</td>"
        f"<td>{m['rounds']} x {m['runs_per_round']}</td><td class='l'>{'tight' if m['stable'] else 'too wide'}</td></tr>"
        for m in lat.get("shapes", []))
    table = ("<table><tr><th class='l'>shape</th><th>median ratio cand/ref</th><th>90% CI</th><th>IQR</th><th>rounds x runs</th>"
             f"<th class='l'>spread</th></tr>{rows}</table>")
    gate = "" if lat.get("max_ratio") is None else f", gate {lat['max_ratio']:g}"
    return (f"<p>{escape.html(lat.get('shape', ''))}, per-run times of each side:</p>" + "".join(figs) + table
            + f"<p>status: {verdict}{gate}. {escape.html(lat.get('stability_rule', ''))}.</p>"
            + (f"<p>{escape.html(lat['reason'])}</p>" if lat.get("reason") else ""))

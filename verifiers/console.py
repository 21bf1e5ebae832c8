"""The console table (rich) for a verification result.

Names, paths, reasons and notes can come from the model folders: each goes in as a rich Text of
escape.console's form, so neither a control character nor rich markup (``[red]``, a stray ``[/]``)
inside one is acted on."""

from __future__ import annotations

from porter.checks import escape


def text(value, style: str = ""):
    """``value`` as a rich Text: control characters shown, no markup read."""
    from rich.text import Text

    return Text(escape.console(value), style=style)


def line(*parts):
    """One console line from (text, style) pairs and plain strings, every part escaped."""
    from rich.text import Text

    return Text.assemble(*((text(*p) if isinstance(p, tuple) else text(p)) for p in parts))


def render(result, console=None) -> str:
    from rich.console import Console
    from rich.table import Table

    console = console or Console(record=True, width=140)
    table = Table(title=f"porter verify: {result.status.upper()}", title_style="bold green" if result else "bold yellow" if result.status == "unstable" else "bold red")
    from porter.verifiers.noise_floor import judged_text

    for col in ("shape", "output", "max abs", "max rel", "cosine", "mismatch", "judged by", "result"):
        table.add_column(col, justify="right" if col not in ("output", "shape", "result") else "left")
    for s in result.shapes:
        for o in s.outputs:
            nonfinite = o.nonfinite_reference or o.nonfinite_candidate
            # with NaN/Inf in an output, error statistics over the rest would read as a near-pass
            table.add_row(
                text(s.label),
                text(o.name),
                f"NaN/Inf: ref {o.nonfinite_reference}, cand {o.nonfinite_candidate}" if nonfinite else f"{o.max_abs:.3g}",
                "n/a" if nonfinite else f"{o.max_rel:.3g}",
                "n/a" if nonfinite else f"{o.cosine:.7f}",
                f"{o.mismatched} ({o.mismatched_pct:.2f}%)",
                judged_text(o),
                line(("pass", "green")) if o.passed else line(("FAIL", "red"), f" {o.reason}"),
            )
    console.print(table)
    for dtypes in result.dtype_lines():
        console.print(line(dtypes))
    if result.route:
        console.print(line(f"route: {result.route}   reference: {result.reference}   candidate: {result.candidate}"))
    if result.latency:
        from porter.verifiers.reports import _latency_line

        console.print(line(f"latency: {_latency_line(result.latency)}"))
        if result.latency.get("status") == "unstable":  # neither a pass nor a fail
            console.print(line(f"warning: latency unstable: {result.latency.get('reason', '')}"))
    for failure in result.failures():
        console.print(line(("failed:", "red"), f" {failure}"))
    loc = result.localisation
    if loc and loc.get("found"):
        console.print(line(
            ("first diverging layer:", "red"), f" torch {loc['torch_module']} <-> keras {loc['keras_layer']} "
            f"(max abs {loc['max_abs']:.3g}, atol {loc['atol']:g}, on input {loc['input']})"
        ))
    elif loc:
        console.print(line(f"localisation: {loc.get('note', '')}"))
    for note in result.notes:
        console.print(line(f"note: {note}"))
    return console.export_text(clear=False) if console.record else ""

"""The console table (rich) for a verification result."""

from __future__ import annotations


def render(result, console=None) -> str:
    from rich.console import Console
    from rich.table import Table

    console = console or Console(record=True, width=140)
    table = Table(title=f"porter verify: {result.status.upper()}", title_style="bold green" if result else "bold yellow" if result.status == "unstable" else "bold red")
    for col in ("shape", "output", "max abs", "max rel", "cosine", "mismatch", "atol / rtol", "result"):
        table.add_column(col, justify="right" if col not in ("output", "shape", "result") else "left")
    for s in result.shapes:
        for o in s.outputs:
            nonfinite = o.nonfinite_reference or o.nonfinite_candidate
            # with NaN/Inf in an output, error statistics over the rest would read as a near-pass
            table.add_row(
                s.label,
                o.name,
                f"NaN/Inf: ref {o.nonfinite_reference}, cand {o.nonfinite_candidate}" if nonfinite else f"{o.max_abs:.3g}",
                "n/a" if nonfinite else f"{o.max_rel:.3g}",
                "n/a" if nonfinite else f"{o.cosine:.7f}",
                f"{o.mismatched} ({o.mismatched_pct:.2f}%)",
                f"{o.atol:g} / {o.rtol:g}",
                "[green]pass[/]" if o.passed else f"[red]FAIL[/] {o.reason}",
            )
    console.print(table)
    for line in result.dtype_lines():
        console.print(line, markup=False)
    if result.route:
        console.print(f"route: {result.route}   reference: {result.reference}   candidate: {result.candidate}")
    if result.latency:
        from porter.verifiers.reports import _latency_line

        console.print(f"latency: {_latency_line(result.latency)}", markup=False)
        if result.latency.get("status") == "unstable":  # neither a pass nor a fail
            console.print(f"warning: latency unstable: {result.latency.get('reason', '')}", markup=False)
    for failure in result.failures():
        console.print(f"[red]failed:[/] {failure}")
    loc = result.localisation
    if loc and loc.get("found"):
        console.print(
            f"[red]first diverging layer:[/] torch {loc['torch_module']} <-> keras {loc['keras_layer']} "
            f"(max abs {loc['max_abs']:.3g}, atol {loc['atol']:g}, on input {loc['input']})"
        )
    elif loc:
        console.print(f"localisation: {loc.get('note', '')}")
    for note in result.notes:
        console.print(f"note: {note}")
    return console.export_text(clear=False) if console.record else ""

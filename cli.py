"""The `porter` command (installed as porter.cli). Frameworks are imported inside commands only."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from porter.errors import PorterError

app = typer.Typer(
    name="porter",
    help="Move trained models between PyTorch and TensorFlow, and prove every move.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
zoo_app = typer.Typer(help="Architectures porter knows on both sides.", no_args_is_help=True)
app.add_typer(zoo_app, name="zoo")


def _fail(exc: PorterError) -> None:
    typer.echo(f"error: {exc.render()}", err=True)
    raise typer.Exit(exc.exit_code)


@app.command()
def convert(
    model: str = typer.Argument(..., help="a zoo name (bert, roberta) or a path"),
    source: str = typer.Option(..., "--from", help="torch | tf | onnx"),
    target: str = typer.Option(..., "--to", help="tf | torch | onnx | tflite"),
    checkpoint: Optional[Path] = typer.Option(None, help="weights for a zoo name (an HF folder)"),
    out: Optional[Path] = typer.Option(None, help="output folder (default: ./<model>-<to>)"),
    route: str = typer.Option("auto", help="auto | direct | onnx"),
    no_verify: bool = typer.Option(False, "--no-verify", help="skip the equivalence check"),
    force: bool = typer.Option(False, "--force", help="replace an existing --out"),
    atol: Optional[float] = typer.Option(None, help="absolute tolerance (default per dtype: fp32 1e-5)"),
    rtol: Optional[float] = typer.Option(None, help="relative tolerance (default per dtype: fp32 1.3e-6)"),
):
    """Convert MODEL from one framework to another, then verify the two side by side."""
    from porter.conversion import convert as run

    try:
        result = run(
            model, source=source, target=target, checkpoint=checkpoint, out=out, route=route,
            verify=not no_verify, force=force, atol=atol, rtol=rtol,
        )
    except PorterError as exc:
        _fail(exc)
    status = "verified" if result.verification is not None and result.passed else result.report.get("status")
    typer.echo(f"wrote {result.out} (route: {result.route}, {status})")
    if not result.passed:
        typer.echo(f"verification FAILED; the output is written and marked failed in {result.out}/porter_report.json", err=True)
        raise typer.Exit(1)


@zoo_app.command("list")
def zoo_list():
    """List the zoo's architectures."""
    from porter import zoo

    for entry in zoo.ENTRIES.values():
        typer.echo(f"{entry.name:10s} {entry.description}")


@zoo_app.command("show")
def zoo_show(name: str):
    """Show one zoo entry: inputs, outputs, mapping file."""
    from porter import zoo

    try:
        entry = zoo.get(name)
    except PorterError as exc:
        _fail(exc)
    typer.echo(f"{entry.name}: {entry.description}")
    typer.echo(f"  torch:   {entry.torch_class}")
    typer.echo(f"  tf:      porter's Keras 3 model ({entry.module})")
    typer.echo(f"  mapping: mappings/{entry.family}.toml {entry.mapping_params}")
    typer.echo(f"  inputs:  {', '.join(entry.inputs)}")
    typer.echo(f"  outputs: {', '.join(entry.outputs)}")


@app.command()
def inspect(path: Path):
    """Name what PATH is, and which zoo entry and mapping fit it."""
    from porter import zoo
    from porter.artifacts import detect

    try:
        artifact = detect(path)
        typer.echo(f"{path}: {artifact.description} [{artifact.framework}/{artifact.format}]")
        config = artifact.config
        if config is not None:
            entry = zoo.for_config(config, f"{path}/config.json")
            typer.echo(f"zoo entry: {entry.name}; mapping: mappings/{entry.family}.toml; route: direct")
        else:
            typer.echo("zoo entry: none; route: onnx")
    except PorterError as exc:
        _fail(exc)


def main() -> None:  # pragma: no cover - console entry for `python -m porter.cli`
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

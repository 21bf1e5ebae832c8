"""`porter ...` run in this process through typer's CliRunner: (exit code, output); a crash is raised."""

from __future__ import annotations


def make_cli():
    from typer.testing import CliRunner

    from porter.cli import app

    runner = CliRunner()

    def run(*args):
        res = runner.invoke(app, [str(a) for a in args])
        if res.exception and not isinstance(res.exception, SystemExit):
            raise res.exception
        return res.exit_code, res.output

    return run

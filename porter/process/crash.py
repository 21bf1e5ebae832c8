"""Runs the CLI so that exit codes tell a porter bug from bad input.

0 passed, 1 verification failed, 2 bad input or usage (a PorterError or a
click usage error), 3 an unexpected exception inside porter: one line on
stderr, the full traceback in a file. 130 interrupted.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import traceback

from porter.checks import escape

INTERNAL_ERROR = 3
INTERRUPTED = 130


def write_traceback(exc: BaseException) -> str:
    """Write exc's full traceback (and the command line) to a file in the temp dir; return its path."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = os.path.join(tempfile.gettempdir(), f"porter-crash-{stamp}-{os.getpid()}.txt")
    # argv and the exception messages can hold a model folder's names: no control characters reach the file
    text = "\n".join(map(escape.console, "".join(traceback.format_exception(exc)).split("\n")))
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(f"porter {' '.join(map(escape.console, sys.argv[1:]))}\n\n{text}")
    except OSError:  # an unwritable temp dir must not hide the bug: print the traceback instead
        sys.stderr.write(text)
        return "(stderr above; the temp dir is not writable)"
    return path


def write_text_log(prefix: str, text: str) -> str:
    """Keep a tool's long output in a file in the temp dir; return its path (or a note when unwritable)."""
    path = os.path.join(tempfile.gettempdir(), f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.txt")
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError:
        return "(not kept: the temp dir is not writable)"
    return path


def internal_error_line(exc: BaseException, where: str) -> str:
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return escape.console(f"porter: internal error: {type(exc).__name__}: {message} (a porter bug; full traceback in {where})")


def _usage_errors() -> tuple:
    """ClickException as typer raises it: typer 0.29 vendors click as typer._click."""
    import typer.core

    classes = [typer.core._click.exceptions.ClickException]
    try:
        import click

        classes.append(click.exceptions.ClickException)
    except ImportError:
        pass
    return tuple(classes)


def run_cli(app, args=None) -> int:
    """Run the Typer app without its standalone handling and return the exit code."""
    import typer

    from porter.errors import PorterError

    try:
        code = app(args=args, prog_name="porter", standalone_mode=False)
    except _usage_errors() as exc:  # usage errors: click's own message, exit 2
        exc.show()
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        code = INTERRUPTED
    except PorterError as exc:  # one that escaped a command's own handler is still bad input
        print(f"error: {exc.render()}", file=sys.stderr)
        return exc.exit_code
    except SystemExit:
        raise
    except Exception as exc:  # noqa: BLE001 - the one place that turns a bug into exit 3
        from porter.process import signals

        if signals.received() is not None:  # library code turned SIGTERM/SIGHUP into an error of its own
            print(signals.describe(), file=sys.stderr)
            return signals.exit_code(INTERRUPTED)
        print(internal_error_line(exc, write_traceback(exc)), file=sys.stderr)
        return INTERNAL_ERROR
    if code == INTERRUPTED:  # typer turns KeyboardInterrupt into Exit(130) silently
        from porter.process import signals  # SIGTERM/SIGHUP arrive as KeyboardInterrupt too: 128 + their number

        print(signals.describe(), file=sys.stderr)
        return signals.exit_code(INTERRUPTED)
    return code if isinstance(code, int) else 0

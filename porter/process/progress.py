"""What porter is doing right now, for steps that can take more than a second.

    with progress.step("mapping 199 tensors"):
        ...
    progress.note("inputs paired by position: input -> x")

On a terminal (stderr is a tty) a rich spinner shows the running steps and each finished
one stays as a line with its time; elsewhere (CI logs, pipes) every step writes plain
timestamped lines: ``[12:01:02] loading tiny-bert ...`` then ``[12:01:05] loading tiny-bert: done in 3.2s``.
Off unless ``enable()`` was called: the CLI enables it (``--quiet`` keeps it off), so
``porter.convert`` from Python stays quiet unless the caller asks.

The rich display writes to its own copy of fd 2, so it keeps running while a step holds
back fd 1/2 (the exporters' C++ logs) and none of its frames end up in those held logs.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time

from porter.checks import escape

_mode: str | None = None  # None (quiet), "plain" or "rich"
_stack: list[str] = []
_live = None  # the rich Live display while a step runs on a terminal
_console = None


def enable(quiet: bool = False, rich: bool | None = None) -> None:
    """Show progress from now on (``quiet``: don't). ``rich``: force the terminal display on or off
    (default: when stderr is a terminal)."""
    global _mode
    disable()
    if quiet:
        return
    if rich is None:
        rich = _is_tty(sys.stderr)
    _mode = "rich" if rich else "plain"


def disable() -> None:
    global _mode, _live, _console
    if _live is not None:
        _live.stop()
    _mode, _live = None, None
    _stack.clear()
    if _console is not None:
        with contextlib.suppress(OSError):
            _console.file.close()
    _console = None


def enabled() -> bool:
    return _mode is not None


@contextlib.contextmanager
def step(text: str):
    """Show ``text`` while the block runs, then how long it took (or that it failed)."""
    from porter.process import signals

    signals.check()  # each step is a point where a SIGTERM that library code swallowed stops the run
    if _mode is None:
        yield
        signals.check()
        return
    t0 = time.perf_counter()
    _started(text)
    ok = False
    try:
        yield
        ok = True
    finally:
        _finished(text, time.perf_counter() - t0, ok)
    signals.check()


def note(text: str) -> None:
    """One line about the run (not a step), shown when progress is on."""
    if _mode == "plain":
        _plain(f"{_indent()}{text}")
    elif _mode == "rich":
        _rich_console().print(f"{_indent()}[dim]{_escape(text)}[/dim]")


# -- plain lines ---------------------------------------------------------------------------------


def _plain(line: str) -> None:
    stream = sys.stderr  # looked up each time: pytest and click's runner swap it
    stream.write(f"[{time.strftime('%H:%M:%S')}] {escape.console(line)}\n")  # steps name model paths
    stream.flush()


def _indent() -> str:
    return "  " * len(_stack)


def _started(text: str) -> None:
    if _mode == "plain":
        _plain(f"{_indent()}{text} ...")
        _stack.append(text)
        return
    _stack.append(text)
    _show()


def _finished(text: str, seconds: float, ok: bool) -> None:
    if _stack and _stack[-1] == text:
        _stack.pop()
    outcome = f"done in {seconds:.1f}s" if ok else f"failed after {seconds:.1f}s"
    if _mode == "plain":
        _plain(f"{_indent()}{text}: {outcome}")
        return
    mark = "[green]✓[/green]" if ok else "[red]✗[/red]"
    _rich_console().print(f"{_indent()}{mark} {_escape(text)} [dim]({outcome})[/dim]")
    _show()


# -- the terminal display -------------------------------------------------------------------------


def _rich_console():
    global _console
    if _console is None:
        from rich.console import Console

        try:
            fd = sys.stderr.fileno()
        except (AttributeError, OSError, ValueError):  # a replaced sys.stderr: the process's own fd 2
            fd = 2
        stream = os.fdopen(os.dup(fd), "w", buffering=1)
        _console = Console(file=stream, force_terminal=True, highlight=False)
    return _console


def _show() -> None:
    """The spinner line names the innermost running step (with its parents), or goes away."""
    global _live
    if not _stack:
        if _live is not None:
            _live.stop()
            _live = None
        return
    from rich.spinner import Spinner

    spinner = Spinner("dots", text=_escape(" › ".join(_stack)))
    if _live is None:
        from rich.live import Live

        # stdout stays the caller's: the verification table is printed there, not through this display
        _live = Live(spinner, console=_rich_console(), transient=True, refresh_per_second=8,
                     redirect_stdout=False, redirect_stderr=False)
        _live.start()
    else:
        _live.update(spinner)


def _escape(text: str) -> str:
    """A step's text (it names model paths) for rich: control characters shown, markup taken literally."""
    from rich.markup import escape as markup

    return markup(escape.console(text))


def _is_tty(stream) -> bool:
    try:
        return stream.isatty() and stream.fileno() >= 0
    except (AttributeError, OSError, ValueError):
        return False

"""SIGINT, SIGTERM and SIGHUP stop a run the same way.

Each raises ``Terminated`` (a KeyboardInterrupt) in the main thread, so every ``finally`` and
``except BaseException`` on the way out runs: the staged output folder and the ONNX work
folders are removed, nothing appears at ``--out``. The CLI then exits 128 + the signal number
(130 SIGINT, 143 SIGTERM, 129 SIGHUP) with one line.

Library code (TensorFlow tracing a Keras layer, say) may swallow that exception or turn it into
an error of its own; so each progress step and the final move check again (``check``), and the
CLI reports the signal rather than the error it became. A second signal raises again, except
while porter removes what the run wrote, so that cleanup is not cut short. SIGKILL stops porter
at once: its leftovers carry an owner marker and the next run sweeps them (porter.output.outdir).
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading

_received: int | None = None


class Terminated(KeyboardInterrupt):
    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"{signal.Signals(signum).name} received")


def install() -> None:
    """Handle SIGINT, SIGTERM and SIGHUP in this process (from the main thread only, as Python requires).
    SIGINT too: Python's own KeyboardInterrupt can be swallowed by library code just like ours."""
    if threading.current_thread() is not threading.main_thread():
        return
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        signum = getattr(signal, name, None)  # no SIGHUP on Windows
        if signum is not None:
            signal.signal(signum, _handle)
    if not getattr(sys.unraisablehook, "_porter", False):
        sys.unraisablehook = _quiet_unraisable(sys.unraisablehook)


def _quiet_unraisable(hook):
    """A signal that lands inside a finalizer (TensorFlow flattens structures in some __del__) raises
    Terminated where it cannot propagate: Python would print it as a traceback. It is ours, and check()
    raises it again where it can, so it is dropped here; anything else goes to the usual hook."""
    def quiet(unraisable):
        if not isinstance(unraisable.exc_value, Terminated):
            hook(unraisable)

    quiet._porter = True
    return quiet


_cleaning = 0  # > 0 while porter removes what a stopped run wrote
_holding = 0  # > 0 while porter makes a folder it must register before a signal may stop it


def _handle(signum, frame) -> None:
    global _received
    if _cleaning:
        return  # already stopping: let the cleanup finish
    if _received is None:
        _received = signum
    if _holding:
        return  # recorded: the held block's owner raises it when the block ends (held)
    raise Terminated(_received)  # again on a second signal: the first may have been swallowed


@contextlib.contextmanager
def held():
    """A block a signal must not cut in two (a temp folder made but not yet marked and returned): a signal
    that comes meanwhile is recorded, and the caller checks ``received()`` (or ``check()``) after the block."""
    global _holding
    _holding += 1
    try:
        yield
    finally:
        _holding -= 1


@contextlib.contextmanager
def cleaning():
    """A block that a further signal must not cut short (removing a staged folder)."""
    global _cleaning
    _cleaning += 1
    try:
        yield
    finally:
        _cleaning -= 1


def check() -> None:
    """Raise Terminated again if a signal came: library code (a Keras layer being traced, say) may have
    caught the first one, or turned it into an error of its own."""
    if _received is not None:
        raise Terminated(_received)


def received() -> int | None:
    """The signal number that stopped this run, if one did (SIGINT is KeyboardInterrupt's own)."""
    return _received


def exit_code(default: int) -> int:
    return 128 + _received if _received is not None else default


def describe() -> str:
    if _received is None or _received == signal.SIGINT:
        return "porter: interrupted"
    return f"porter: terminated by {signal.Signals(_received).name}"

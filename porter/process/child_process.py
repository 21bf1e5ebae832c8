"""Work done in a child process of porter while this process does other work (an import), for steps whose
result is plain data: config_completion.py (a config completed by transformers). The child gets its request as JSON
on stdin and answers in JSON; a PorterError it meets comes back as that error (errors.as_fields / from_fields)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess

from porter import errors


def one_core() -> bool:
    """Whether this process may run on one core only: a child would only take turns with it."""
    return len(os.sched_getaffinity(0)) < 2


def run_beside(command: list[str], request: dict, work, waiting=contextlib.nullcontext, capture: bool = False) -> tuple[int, bytes]:
    """``command`` started with ``request`` on its stdin, ``work()`` run here meanwhile, then the child waited
    for inside ``waiting()`` (a progress step). (its exit status, its stdout when ``capture``, else b"").
    Interrupted (a signal, an error in ``work``), the child is killed: it never outlives the call."""
    child = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    answer = b""
    try:
        with contextlib.suppress(BrokenPipeError):  # a child gone already: its exit status says so
            with child.stdin:
                child.stdin.write(json.dumps(request).encode())
        work()
        with waiting():
            if capture:
                answer = child.stdout.read()
            child.wait()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    return child.returncode, answer


def answered(payload: dict) -> dict:
    """A child's JSON answer, or the PorterError it reported, raised here."""
    if "error" in payload:
        raise errors.from_fields(payload["error"])
    return payload

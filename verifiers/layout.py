"""Declared input layouts: the candidate gets the reference's arrays transposed, never guessed.

A declaration maps reference layout to candidate layout, for every input of rank >= 3
or per input:

    --layout nhwc-to-nchw                 every input of rank >= 3
    --layout pixel_values=nchw-to-nhwc    one input (repeat the flag for more)

Layouts are ``nchw`` (channels first) and ``nhwc`` (channels last); the same words
cover rank 3 (ncw/nwc) and rank 5 inputs.

A converted folder declares its layout in ``porter_report.json`` as

    "layout": {"inputs": {"input_1": "nchw"}, "candidate": "nhwc"}

meaning: input ``input_1`` of the *source* model of the conversion is NCHW, and the model in
this folder takes it NHWC. When that folder is the candidate of a verification the
declaration applies as written; when it is the reference, it applies backwards. An explicit
``--layout`` wins over a report; ``--layout none`` ignores the report.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from porter.errors import PorterError
from porter.checks.model_files import read_json_if_present

LAYOUTS = ("nchw", "nhwc")
ALL = "*"


def parse(specs) -> dict[str, tuple[str, str]]:
    """['nhwc-to-nchw', 'x=nchw-to-nhwc'] -> {'*': ('nhwc', 'nchw'), 'x': ('nchw', 'nhwc')}."""
    out = {}
    for spec in [specs] if isinstance(specs, str) else list(specs or []):
        name, _, pair = spec.rpartition("=")
        src, sep, dst = pair.lower().partition("-to-")
        if not sep or src not in LAYOUTS or dst not in LAYOUTS:
            raise PorterError(f"--layout {spec!r} is not understood", hint="write e.g. --layout nhwc-to-nchw or --layout input_1=nchw-to-nhwc")
        out[name or ALL] = (src, dst)
    return out


def from_report(path) -> dict | None:
    """The 'layout' block of a converted folder's porter_report.json, if it has one."""
    folder = Path(path) if Path(path).is_dir() else Path(path).parent
    report = folder / "porter_report.json"
    if not report.is_file():
        return None
    written = read_json_if_present(report, report.parent)
    block = written.get("layout") if isinstance(written, dict) else None
    return block or None


def resolve(explicit, reference_path, candidate_path) -> dict[str, tuple[str, str]]:
    """The layout declaration in force: --layout, else the candidate's report, else the reference's (reversed)."""
    if explicit in ("none", ["none"], ("none",)):
        return {}
    if explicit:
        return parse(explicit)
    for path, backwards in ((candidate_path, False), (reference_path, True)):
        block = from_report(path)
        if not block:
            continue
        target = str(block.get("candidate", "")).lower()
        declared = {}
        for name, source in (block.get("inputs") or {}).items():
            source = str(source).lower()
            if source not in LAYOUTS or target not in LAYOUTS:
                raise PorterError(f"{path}/porter_report.json: layout {block!r} is not understood (layouts: nchw, nhwc)")
            declared[name] = (target, source) if backwards else (source, target)
        return declared
    return {}


def permutation(src: str, dst: str, rank: int) -> tuple[int, ...] | None:
    if src == dst or rank < 3:
        return None
    if src == "nchw":  # channels first -> last
        return (0, *range(2, rank), 1)
    return (0, rank - 1, *range(1, rank - 1))


def apply(feed: dict, declared: dict) -> dict:
    """The candidate's copy of ``feed``; arrays keep their values, only axes move."""
    if not declared:
        return feed
    unknown = set(declared) - {ALL} - set(feed)
    if unknown:
        raise PorterError(f"--layout names {sorted(unknown)}, which are not inputs (inputs: {', '.join(feed)})")
    out = {}
    for name, arr in feed.items():
        pair = declared.get(name, declared.get(ALL))
        perm = permutation(*pair, np.ndim(arr)) if pair else None
        out[name] = np.ascontiguousarray(np.transpose(arr, perm)) if perm else arr
    return out


def describe(declared: dict) -> str:
    return ", ".join(f"{'every input of rank >= 3' if k == ALL else k}: {a} -> {b}" for k, (a, b) in declared.items())

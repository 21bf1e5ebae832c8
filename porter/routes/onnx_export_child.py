"""The torch side of an ONNX-route conversion to TensorFlow, run in a child process where that pays.

Everything before the ONNX file is torch and transformers: their imports, the config completed with transformers'
defaults, the checkpoint loaded, torch.onnx.export (bert-base: ~14 s). What comes after it is TensorFlow (onnx2tf),
whose import took another ~3.5 s after the export. So on a machine with a second core the export runs in a child
process (``python -m porter.routes.onnx_export_child KIND ONNX_PATH``: this module) while this process imports
TensorFlow, and this process never holds torch, transformers or the torch model (unless it verifies). The child
runs the same export as the in-process path (``run``) and hands back its PorterError; where it fails otherwise
(or cannot start), the export runs here again, so the errors and their handling are the in-process ones
(porter/readers/config_completion.py does the same for the direct route).

An export (``EXPORTS``) takes JSON-able arguments and ``onnx_path``, writes the ONNX file and returns a dict of
JSON-able values whose "feeds" are a list of {name: array}: the child writes those to an .npz (read back without
pickles), the rest as JSON.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import sys
from pathlib import Path

from porter import errors
from porter.process.child_process import answered, one_core, run_beside

EXPORTS = {  # kind -> (module, function)
    "zoo": ("porter.routes.zoo_onnx_export", "export"),  # a zoo entry's folder (porter's BERT/RoBERTa)
    "hf": ("porter.routes.hf_source", "exported"),  # an HF folder transformers builds
    "pt2": ("porter.routes.to_onnx", "exported_pt2"),  # a torch.export ExportedProgram
}


def run(kind: str, onnx_path: Path, **kwargs) -> dict:
    """The export ``kind`` in this process."""
    module, function = EXPORTS[kind]
    return getattr(importlib.import_module(module), function)(onnx_path=Path(onnx_path), **kwargs)


def export_beside(kind: str, onnx_path: Path, work, what: str, **kwargs) -> dict:
    """``run(kind, onnx_path, **kwargs)`` in a child process while ``work()`` runs here (``what``: the child's
    steps, for the progress line of the wait); both here when this process has one core (the child would only
    take turns with it)."""
    from porter.process import progress

    if in_process():
        work()
        return run(kind, onnx_path, **kwargs)
    status, _ = run_beside([sys.executable, "-m", __name__, kind, str(onnx_path)], kwargs, work,
                           waiting=lambda: progress.step(f"{what}, in a child process"))
    if status == 0 and _answer(onnx_path).is_file():
        return _with_feeds(answered(json.loads(_answer(onnx_path).read_text())), onnx_path)
    return run(kind, onnx_path, **kwargs)


def in_process() -> bool:
    return one_core()


def _answer(onnx_path: Path) -> Path:
    return onnx_path.with_name(onnx_path.name + ".export.json")


def _feeds_file(onnx_path: Path) -> Path:
    return onnx_path.with_name(onnx_path.name + ".export-feeds.npz")


def _with_feeds(payload: dict, onnx_path: Path) -> dict:
    import numpy as np

    if "feed_count" not in payload:
        return payload
    with np.load(_feeds_file(onnx_path), allow_pickle=False) as stored:
        feeds = [{} for _ in range(payload.pop("feed_count"))]
        for key in stored.files:
            index, name = key.split("/", 1)
            feeds[int(index)][name] = stored[key]
    return {**payload, "feeds": feeds}


def _write(payload: dict, onnx_path: Path) -> None:
    import numpy as np

    if "feeds" in payload:
        feeds = payload.pop("feeds")
        np.savez(_feeds_file(onnx_path), **{f"{i}/{name}": np.asarray(v) for i, feed in enumerate(feeds) for name, v in feed.items()})
        payload["feed_count"] = len(feeds)
    _answer(onnx_path).write_text(json.dumps(payload))


def _die_with_parent() -> None:
    """A child whose porter is killed stops too (Linux: PR_SET_PDEATHSIG), rather than export into a removed folder."""
    import ctypes
    import signal

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)


def _main(kind: str, onnx_path: str) -> None:
    _die_with_parent()
    from porter.process import frameworks

    frameworks.freeze_after_import = True  # as in the porter process: the collector skips the imports' objects
    kwargs = json.loads(sys.stdin.read())
    try:
        payload = run(kind, Path(onnx_path), release=False, **kwargs)
    except errors.PorterError as e:
        payload = {"error": errors.as_fields(e)}
    _write(payload, Path(onnx_path))
    # everything is written and closed: the interpreter's teardown of torch's modules would only cost time
    os._exit(0)


if __name__ == "__main__":
    _main(*sys.argv[1:])

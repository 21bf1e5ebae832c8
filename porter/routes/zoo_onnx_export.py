"""A zoo model's torch side exported to ONNX (transformers' own loader, dynamic batch and sequence), in a child
process where that pays.

All of that export is torch and transformers: their imports, the config completed with transformers' defaults,
the checkpoint loaded, torch.onnx.export (bert-base: ~14 s). What comes after it is TensorFlow (onnx2tf), whose
import took another ~3 s after the export. So on a machine with a second core the export runs in a child process
(``python -m porter.routes.zoo_onnx_export``: this module) while this process imports TensorFlow, and this process
never holds torch, transformers or the torch model. The child runs the same ``export`` as the in-process path
and hands back its PorterError; where it fails otherwise (or cannot start), the export runs here again, so the
errors and their handling are the in-process ones (porter/config_completion.py does the same for the direct route).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

from porter import errors, progress


def export(entry, folder: Path, config: dict, onnx_path: Path, completed: bool = True, release: bool = True) -> dict:
    """The zoo model in ``folder`` exported to ``onnx_path``: {"names", "outputs", "feeds" (its sample input
    sets, as lists), "note"}. ``completed``: whether ``config`` has transformers' defaults already;
    ``release``: hand the exporter's memory back afterwards (to_onnx.torch_to_onnx; not in a child about to exit)."""
    import numpy as np

    from porter import zoo
    from porter.frameworks import torch
    from porter.hf_load import load_zoo_torch
    from porter.routes import to_onnx

    if not completed:
        full = entry.impl.full_config(config)
        zoo.check_completed(entry, config, full, f"{folder}/config.json")
        config = full
    torch = torch()
    with progress.step(f"loading {folder}"):
        hf = load_zoo_torch(entry, folder)
    # eager attention exports as 4D MatMuls; sdpa's decomposition flattens [batch, heads] with a
    # computed-shape Reshape that onnx2tf can convert only with batch and sequence fixed
    hf.set_attn_implementation("eager")
    names, outputs = list(entry.inputs), list(entry.outputs)

    class Outputs(torch.nn.Module):  # named tensors in, a tuple in entry.outputs order out
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids):
            # the additive [batch, 1, 1, seq] mask, built here: transformers 5 builds it with vmap-style
            # index arithmetic (Range, GatherND over a dynamic Expand) that onnx2tf can only convert with
            # batch and sequence fixed; given a 4D mask it uses it as is (bit-identical outputs)
            additive = (1.0 - attention_mask[:, None, None, :].to(torch.float32)) * torch.finfo(torch.float32).min
            out = self.model(input_ids=input_ids, attention_mask=additive, token_type_ids=token_type_ids)
            return tuple(out[k] for k in outputs)

    feeds = entry.impl.input_sets(config, checkpoint=folder if folder.is_dir() else None)
    example = tuple(torch.as_tensor(np.asarray(feeds[-1][n], dtype=np.int64)) for n in names)
    batch, seq = torch.export.Dim("batch", min=1, max=1024), torch.export.Dim("sequence", min=2, max=512)
    dynamic = {n: {0: batch, 1: seq} for n in names}
    to_onnx.torch_to_onnx(Outputs(hf).eval(), example, names, outputs, onnx_path, dynamic_shapes=dynamic, release=release)
    # the example's shape first: onnx2tf fixes dynamic dims at the first feed's sizes when it must
    feeds = feeds[-1:] + feeds[:-1]
    return {"names": names, "outputs": outputs,
            "feeds": [{k: np.asarray(v, dtype=np.int64).tolist() for k, v in f.items()} for f in feeds],
            "note": f"inputs: {entry.name} sample inputs (real sentences where the checkpoint ships a tokenizer, padded masks)"}


def export_beside(entry, folder: Path, config: dict, onnx_path: Path, work, completed: bool = True) -> dict:
    """``export(...)``, run in a child process while ``work()`` runs here; both here when this process has one
    core (the child would only take turns with it)."""
    if len(os.sched_getaffinity(0)) < 2:
        work()
        return export(entry, folder, config, onnx_path, completed)
    answer = onnx_path.with_name(onnx_path.name + ".export.json")
    command = [sys.executable, "-m", __name__, entry.name, str(folder), str(onnx_path), str(answer), str(int(completed))]
    child = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with contextlib.suppress(BrokenPipeError):  # a child gone already: its exit status says so below
            with child.stdin:
                child.stdin.write(json.dumps(config).encode())
        work()
        with progress.step(f"loading {folder} and torch.onnx.export (dynamo=True), in a child process"):
            child.wait()
    finally:
        if child.poll() is None:  # interrupted: the child's files are in this run's work folder, removed with it
            child.kill()
            child.wait()
    if child.returncode == 0 and answer.is_file():
        payload = json.loads(answer.read_text())
        if "error" in payload:
            raise errors.from_fields(payload["error"])
        return payload
    return export(entry, folder, config, onnx_path, completed)


def _die_with_parent() -> None:
    """A child whose porter is killed stops too (Linux: PR_SET_PDEATHSIG), rather than export into a removed folder."""
    import ctypes
    import signal

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)


def _main(entry_name: str, folder: str, onnx_path: str, answer: str, completed: str) -> None:
    _die_with_parent()
    from porter import frameworks, zoo

    frameworks.freeze_after_import = True  # as in the porter process: the collector skips the imports' objects
    config = json.loads(sys.stdin.read())
    try:
        payload = export(zoo.get(entry_name), Path(folder), config, Path(onnx_path), completed == "1", release=False)
    except errors.PorterError as e:
        payload = {"error": errors.as_fields(e)}
    Path(answer).write_text(json.dumps(payload))
    # everything is written and closed: the interpreter's teardown of torch's modules would only cost time
    os._exit(0)


if __name__ == "__main__":
    _main(*sys.argv[1:])

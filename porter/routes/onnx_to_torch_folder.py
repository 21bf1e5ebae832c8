"""ONNX -> torch: porter's own converter, written as model.py + model.safetensors (+ model.pt2 where
torch.export takes the converted module)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from porter.process import progress
from porter.errors import PorterError
from porter.routes.onnx_graph import load_onnx, onnx_io
from porter.routes.to_onnx import captured_output

def onnx_to_torch_folder(onnx_path: Path, folder: Path, example: dict) -> dict:
    """model.py + model.safetensors (porter's codegen) and model.pt2 (dynamic batch where the
    graph allows; else static, and listed)."""
    from porter.process.frameworks import torch
    from porter.onnx_to_torch import onnx_to_torch, write_exported_program, write_torch_package

    torch = torch()
    model = load_onnx(onnx_path)
    inputs, outputs, specs = onnx_io(model)
    with progress.step(f"converting {onnx_path.name} to torch (model.py + model.safetensors)"):
        gm = onnx_to_torch(model)
        write_torch_package(gm, folder)
    args = tuple(torch.from_numpy(np.ascontiguousarray(example[n])) for n in inputs)
    static_dims, notes = [], []
    batch = torch.export.Dim("batch", min=1, max=4096)
    dynamic = tuple({0: batch} if specs[n][1] and specs[n][1][0] is None else None for n in inputs)
    try:
        with captured_output("torch.export of the converted module"):
            write_exported_program(gm, args, folder / "model.pt2", dynamic_shapes=dynamic if any(dynamic) else None)
    except PorterError as exc:
        try:
            with captured_output("torch.export of the converted module"):
                write_exported_program(gm, args, folder / "model.pt2")
        except PorterError as again:
            # model.py and model.safetensors are the conversion; model.pt2 is a convenience that
            # torch.export cannot always give (data-dependent control flow): say so, keep the rest
            (folder / "model.pt2").unlink(missing_ok=True)
            notes.append(f"model.pt2 not written: torch.export failed with a dynamic batch ({exc.message}) "
                         f"and with a static one ({again.message}); model.py runs the model")
            return {"static_dims": [], "notes": notes, "inputs": specs, "outputs": outputs, "exported_program": False}
        static_dims = [{"artifact": "model.pt2", "input": n, "axis": 0, "size": int(np.shape(example[n])[0])}
                       for n, d in zip(inputs, dynamic) if d]
        notes.append(f"model.pt2 has a static batch: torch.export with a dynamic batch failed ({exc.message})")
    return {"static_dims": static_dims, "notes": notes, "inputs": specs, "outputs": outputs}

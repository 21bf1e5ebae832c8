"""Small helpers shared by the tests."""

from pathlib import Path

import numpy as np

FIXTURES = Path(__file__).parent / "fixtures"


def hidden_state_error(a, b, attention_mask) -> float:
    """Max abs difference over the positions that are not padding."""
    valid = np.asarray(attention_mask).astype(bool)
    return float(np.abs(np.asarray(a) - np.asarray(b))[valid].max())


def save_pt2(module, example, path, dynamic: dict | None = None):
    """torch.export ``module`` on the one ``example`` input and save it as ``path`` (an ExportedProgram,
    the ONNX route's torch input). ``dynamic``: axis -> (name, min, max) for the input's dynamic dims."""
    import torch

    dims = {axis: torch.export.Dim(name, min=lo, max=hi) for axis, (name, lo, hi) in (dynamic or {}).items()}
    program = torch.export.export(module, (example,), dynamic_shapes=(dims,) if dims else None)
    torch.export.save(program, str(path))
    return path


BATCH = {0: ("batch", 1, 64)}
BATCH_AND_SEQ = {0: ("batch", 1, 64), 1: ("seq", 2, 64)}

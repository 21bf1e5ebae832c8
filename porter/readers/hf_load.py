"""A zoo model's torch side loaded by transformers, with a broken folder named as bad input.

Read first, before transformers builds anything: config.json (values and types), the checkpoint's
headers (a truncated file, a missing shard) and every tensor's shape against the one config.json
gives it. What transformers still raises on a bad folder becomes a PorterError naming the folder.
"""

from __future__ import annotations

from pathlib import Path

from porter.errors import PorterError


def load_zoo_torch(entry, folder, dtype: str | None = None):
    """entry.impl.load_torch(folder), checked (see the module doc); ``dtype``: the reference's float dtype
    where porter/resources/reference_plan.py chose one (the entry's loader then takes it), else the entry's own."""
    from porter.readers.artifacts import read_config_json
    from porter.readers.checkpoints import open_torch_checkpoint
    from porter.checks.hf_config import check_hf_config

    folder = Path(folder)
    config = read_config_json(folder / "config.json")
    check_hf_config(config, f"{folder}/config.json")
    found = open_torch_checkpoint(folder).shapes
    if hasattr(entry.impl, "torch_target_shapes"):
        check_shapes(found, entry.impl.torch_target_shapes(config), config, folder)
    try:
        return entry.impl.load_torch(folder, dtype=dtype) if dtype else entry.impl.load_torch(folder)
    except PorterError:
        raise
    except Exception as exc:  # noqa: BLE001 - what transformers raises on a bad folder varies by version
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PorterError(f"transformers could not load {folder}: {type(exc).__name__}: {first[:400]}",
                          hint="check that config.json and the weights belong to the same model") from None


def check_shapes(found: dict, expected: dict, config: dict, folder: Path) -> None:
    """Every checkpoint tensor the model has must have the shape config.json gives it (all listed)."""
    prefix = f"{config.get('model_type')}."  # checkpoints of task models carry the base model's prefix
    problems = []
    for key, shape in found.items():
        name = key if key in expected else key.removeprefix(prefix)
        if name in expected and tuple(shape) != tuple(expected[name]):
            problems.append(f"{key} is {tuple(shape)} in the checkpoint, {tuple(expected[name])} by config.json")
    if problems:
        raise PorterError(f"{folder}: the weights do not fit its config.json", problems=problems,
                          hint="check that config.json and the weights belong to the same model (e.g. vocab_size, hidden_size)")

"""Read PyTorch checkpoints as named numpy tensors, shapes first, data on demand.

Shapes come from the safetensors header without reading data, so a mapping plan
is checked before a single tensor moves. Pickled checkpoints are read only with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from porter.errors import PorterError
from porter.checks.model_files import model_file, read_json

SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
PICKLE_BIN = "pytorch_model.bin"


class TensorSource:
    """Named tensors: ``shapes`` (all of them) and ``get(key)`` (one at a time)."""

    def __init__(self, shapes: dict[str, tuple[int, ...]], getter, origin: str, dtypes=None, files=None):
        self.shapes = shapes
        self._get = getter
        self.origin = origin
        self.dtypes: dict[str, str] = dtypes or {}  # as stored: 'bfloat16' even where get() widens it (pytorch_model.bin)
        self._files: dict[str, str] = files or {}

    def file_of(self, key: str) -> str:
        """The file a tensor is stored in (to name it in messages)."""
        return self._files.get(key, self.origin)

    def keys(self):
        return self.shapes.keys()

    def get(self, key: str) -> np.ndarray:
        return self._get(key)

    def watched(self, check) -> "TensorSource":
        """The same tensors; ``check(key, array)`` sees each one as it is read (one read, not two)."""
        def get(key):
            array = self._get(key)
            check(key, array)
            return array

        return TensorSource(self.shapes, get, self.origin, self.dtypes, self._files)


def _open_safetensors(path: Path):
    from safetensors import SafetensorError, safe_open

    try:
        return safe_open(str(path), framework="np")
    except (SafetensorError, OSError, ValueError) as exc:
        raise PorterError(
            f"{path} is not a readable safetensors file ({exc})",
            hint="the file may be truncated or not a safetensors file; re-save it with safetensors.torch.save_file",
        ) from None


def read_safetensors(files: list[Path]) -> TensorSource:
    from porter.checks.numerics import SAFETENSORS_DTYPES
    from porter.readers.safetensors_raw import header as raw_header
    from porter.readers.safetensors_raw import read_tensor

    shapes, where, dtypes, raw = {}, {}, {}, {}
    for path in files:
        if not path.is_file():
            raise PorterError(f"checkpoint shard {path} is missing")
        with _open_safetensors(path) as handle:  # safetensors checks the header; porter reads the data itself
            raw[path] = raw_header(path)
            for key in handle.keys():
                header = handle.get_slice(key)
                shapes[key] = tuple(header.get_shape())
                dtypes[key] = SAFETENSORS_DTYPES.get(header.get_dtype(), header.get_dtype().lower())
                where[key] = path
    # one tensor at a time, in its stored dtype (bf16 as ml_dtypes' bfloat16, never widened)
    get = lambda k: read_tensor(where[k], raw[where[k]][0], raw[where[k]][1][k], k)  # noqa: E731
    return TensorSource(shapes, get, origin=str(files[0].parent), dtypes=dtypes,
                        files={k: str(p) for k, p in where.items()})


def read_pickle_bin(path: Path) -> TensorSource:
    torch = __import__("porter.process.frameworks", fromlist=["torch"]).torch()
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # weights_only refuses anything but tensors and plain containers
        raise PorterError(
            f"{path} could not be read safely with torch.load(weights_only=True): {exc}",
            hint="convert it to model.safetensors with a trusted copy of the code that wrote it",
        ) from None
    if not isinstance(state, dict):
        raise PorterError(f"{path} holds a {type(state).__name__}, not a state dict of tensors")
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    dtypes = {k: str(v.dtype).removeprefix("torch.") for k, v in state.items()}
    return TensorSource(shapes, lambda k: state[k].detach().float().numpy() if state[k].dtype == torch.bfloat16 else state[k].detach().numpy(), origin=str(path), dtypes=dtypes)


def shard_files(index: Path) -> list[Path]:
    """The shards a ``*.index.json`` names, each a file in the index's folder by model_files' rule: a name
    with ``..``, an absolute path or a link resolving elsewhere is refused (an HF hub cache snapshot's links
    into its own ``blobs/`` folder are allowed)."""
    index = Path(index)
    data = read_json(index, index.parent)
    try:
        names = sorted(set(data["weight_map"].values()))
    except (KeyError, TypeError, AttributeError) as exc:
        raise PorterError(f"{index} is not a valid shard index ({type(exc).__name__}: {exc})") from None
    shards = []
    for name in names:
        if not isinstance(name, str) or not name:
            raise PorterError(f"{index}: weight_map entry {name!r} is not a file name")
        where = Path(name)
        if where.is_absolute() or ".." in where.parts:
            raise PorterError(f"{index}: shard {name!r} is outside the model folder; porter reads only shards beside the index",
                              hint="shard names in weight_map are file names in the model folder, such as model-00001-of-00002.safetensors")
        if not os.path.lexists(index.parent / where):
            raise PorterError(f"checkpoint shard {index.parent / where} is missing (named by {index.name})")
        shards.append(model_file(index.parent / where, index.parent, f"{index}: shard"))
    return shards


def open_torch_checkpoint(path: Path) -> TensorSource:
    """An HF folder (single or sharded safetensors, or pytorch_model.bin) or a bare .safetensors file."""
    path = Path(path)
    if path.is_file() and path.suffix == ".safetensors":
        return read_safetensors([path])
    if not path.is_dir():
        raise PorterError(f"checkpoint {path} does not exist")
    if os.path.lexists(path / SAFETENSORS):
        return read_safetensors([model_file(path / SAFETENSORS, path)])
    if os.path.lexists(path / SAFETENSORS_INDEX):
        return read_safetensors(shard_files(path / SAFETENSORS_INDEX))
    if os.path.lexists(path / PICKLE_BIN):
        return read_pickle_bin(model_file(path / PICKLE_BIN, path))
    raise PorterError(
        f"{path} holds no PyTorch weights: expected {SAFETENSORS}, {SAFETENSORS_INDEX} or {PICKLE_BIN}",
        hint="pass the folder that transformers' save_pretrained wrote with --checkpoint",
    )


def read_config(folder: Path) -> dict:
    from porter.readers.artifacts import read_config_json

    cfg = Path(folder) / "config.json"
    if not os.path.lexists(cfg):
        raise PorterError(f"{folder} has no config.json", hint="porter needs the model's config.json beside its weights")
    return read_config_json(cfg)

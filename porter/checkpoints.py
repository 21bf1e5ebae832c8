"""Read PyTorch checkpoints as named numpy tensors, shapes first, data on demand.

Shapes come from the safetensors header without reading data, so a mapping plan
is checked before a single tensor moves. Pickled checkpoints are read only with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from porter.errors import PorterError

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
    from porter.numerics import SAFETENSORS_DTYPES
    from porter.safetensors_raw import header as raw_header
    from porter.safetensors_raw import read_tensor

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
    torch = __import__("porter.frameworks", fromlist=["torch"]).torch()
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
    """The shards a ``*.index.json`` names, each checked to lie inside the index's folder: a name
    with ``..``, an absolute path or a symlink resolving elsewhere is refused (an HF hub cache
    snapshot's links into its own ``blobs/`` folder are allowed)."""
    index = Path(index)
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
        names = sorted(set(weight_map.values()))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise PorterError(f"{index} is not a valid shard index ({type(exc).__name__}: {exc})") from None
    folder = index.parent.resolve()
    roots = [folder] + ([folder.parent.parent / "blobs"] if folder.parent.name == "snapshots" else [])
    shards = []
    for name in names:
        if not isinstance(name, str) or not name:
            raise PorterError(f"{index}: weight_map entry {name!r} is not a file name")
        where = Path(name)
        if where.is_absolute() or ".." in where.parts:
            raise PorterError(f"{index}: shard {name!r} is outside the model folder; porter reads only shards beside the index",
                              hint="shard names in weight_map are file names in the model folder, such as model-00001-of-00002.safetensors")
        resolved = (folder / where).resolve()
        if not any(resolved.is_relative_to(root) for root in roots):
            raise PorterError(f"{index}: shard {name!r} is a link to {resolved}, outside the model folder; porter does not follow it",
                              hint="copy the shard into the model folder")
        shards.append(index.parent / where)
    return shards


def open_torch_checkpoint(path: Path) -> TensorSource:
    """An HF folder (single or sharded safetensors, or pytorch_model.bin) or a bare .safetensors file."""
    path = Path(path)
    if path.is_file() and path.suffix == ".safetensors":
        return read_safetensors([path])
    if not path.is_dir():
        raise PorterError(f"checkpoint {path} does not exist")
    if (path / SAFETENSORS).is_file():
        return read_safetensors([path / SAFETENSORS])
    if (path / SAFETENSORS_INDEX).is_file():
        return read_safetensors(shard_files(path / SAFETENSORS_INDEX))
    if (path / PICKLE_BIN).is_file():
        return read_pickle_bin(path / PICKLE_BIN)
    raise PorterError(
        f"{path} holds no PyTorch weights: expected {SAFETENSORS}, {SAFETENSORS_INDEX} or {PICKLE_BIN}",
        hint="pass the folder that transformers' save_pretrained wrote with --checkpoint",
    )


def read_config(folder: Path) -> dict:
    cfg = Path(folder) / "config.json"
    if not cfg.is_file():
        raise PorterError(f"{folder} has no config.json", hint="porter needs the model's config.json beside its weights")
    try:
        return json.loads(cfg.read_text())
    except ValueError as exc:
        raise PorterError(f"{cfg} is not valid JSON ({exc})") from None

"""Read one safetensors tensor into one numpy array: no memory map, no torch, no widening.

safetensors' own numpy reader refuses bfloat16 (numpy has none), and reading through torch
widens a bf16 tensor to float32 (3x its size in flight). The format is simple: an 8-byte
little-endian header length, a JSON header (dtype, shape, data_offsets per tensor), then the
data. ``np.fromfile`` reads the bytes straight into the array that is returned, so a tensor
costs its own size once, and no mmap pages stay resident after it is read.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from porter.errors import PorterError

# safetensors dtype code -> numpy dtype (all little-endian on disk)
_NUMPY = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
          "U8": "u1", "BOOL": "?"}


def _dtype(code: str) -> np.dtype:
    if code == "BF16":
        import ml_dtypes  # a TensorFlow dependency; numpy has no bfloat16

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(_NUMPY[code])


def header(path: Path) -> tuple[int, dict]:
    """(offset of the data section, the JSON header without its ``__metadata__``)."""
    with open(path, "rb") as handle:
        (size,) = struct.unpack("<Q", handle.read(8))
        entries = json.loads(handle.read(size))
    entries.pop("__metadata__", None)
    return 8 + size, entries


def read_tensor(path: Path, data_start: int, entry: dict, key: str) -> np.ndarray:
    begin, end = entry["data_offsets"]
    code, shape = entry["dtype"], tuple(entry["shape"])
    if code not in _NUMPY and code != "BF16":
        raise PorterError(f"{path}: tensor {key!r} has dtype {code}, which porter does not read",
                          hint="porter converts float checkpoints; re-save the weights as float32, float16 or bfloat16")
    dtype = _dtype(code)
    count = int(np.prod(shape, dtype=np.int64))
    if end - begin != count * dtype.itemsize:
        raise PorterError(f"{path}: tensor {key!r} has {end - begin} bytes for shape {shape} in {code}",
                          hint="the file is damaged; re-save it with safetensors.torch.save_file")
    array = np.fromfile(path, dtype=dtype, count=count, offset=data_start + begin)
    if array.size != count:
        raise PorterError(f"{path}: tensor {key!r} is cut short (the file is truncated)",
                          hint="download or copy the checkpoint again")
    return array.reshape(shape)

"""Read a transformers 4.x TF checkpoint (tf_model.h5, or shards named by tf_model.h5.index.json)
with h5py alone: no TensorFlow, no Keras, nothing in the file is ever executed.

Two layouts exist. ``save_weights`` (one file): the root attribute ``layer_names`` lists groups,
each group's ``weight_names`` lists full variable names ('tf_bert_model/bert/.../kernel:0').
``save_pretrained(max_shard_size=...)`` (shards): each shard's root ``layer_names`` lists datasets
named without the model's own name ('bert/.../kernel:0'); names holding 'model.' or with a single
component were kept whole. Both are returned here by full variable name, so one naming scheme
serves both.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from porter.errors import PorterError

WEIGHTS = "tf_model.h5"
INDEX = "tf_model.h5.index.json"
_SHARD_LEVEL_ZERO = "_"  # what stands for the model's own name where a shard dropped it


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _open(path: Path):
    import h5py

    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise PorterError(f"{path} is not a readable HDF5 file ({exc})",
                          hint="pass the folder that save_pretrained wrote with transformers 4.x (TF)") from None


def _layer_names(f, path: Path) -> list[str]:
    names = [_text(n) for n in f.attrs.get("layer_names", [])]
    if not names:
        raise PorterError(f"{path} has no 'layer_names' attribute: not a transformers/Keras weights file",
                          hint="porter reads tf_model.h5 as transformers 4.x save_pretrained wrote it; "
                               "other Keras models go through ONNX: pass --route onnx")
    return names


class LegacyH5Checkpoint:
    """Tensor shapes by full variable name; ``get`` reads one tensor, opening only its file."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self.shapes: dict[str, tuple] = {}
        self.dtypes: dict[str, str] = {}
        self._where: dict[str, tuple[Path, str]] = {}  # full name -> (file, dataset path)
        index = self.folder / INDEX
        if (self.folder / WEIGHTS).is_file():
            self._scan_single(self.folder / WEIGHTS)
            self.origin = str(self.folder / WEIGHTS)
        elif index.is_file():
            self._scan_shards(index)
            self.origin = str(index)
        else:
            raise PorterError(f"{self.folder} has neither {WEIGHTS} nor {INDEX}")

    def _add(self, name: str, path: Path, dataset) -> None:
        if name in self._where:  # a variable shared by several layers (T5's embedding) is stored in each
            return
        self.shapes[name] = tuple(int(d) for d in dataset.shape)
        self.dtypes[name] = str(dataset.dtype)
        self._where[name] = (path, dataset.name)

    def _scan_single(self, path: Path) -> None:
        with _open(path) as f:
            for layer in _layer_names(f, path):
                if layer not in f:
                    raise PorterError(f"{path}: layer_names lists {layer!r}, which the file does not hold")
                group = f[layer]
                for wname in group.attrs.get("weight_names", []):
                    wname = _text(wname)
                    if wname not in group:
                        raise PorterError(f"{path}: layer {layer!r} names weight {wname!r}, which the file does not hold")
                    self._add(wname, path, group[wname])

    def _scan_shards(self, index: Path) -> None:
        from porter.readers.checkpoints import shard_files

        for shard in shard_files(index):
            if not shard.is_file():
                raise PorterError(f"{index} names shard {shard.name!r}, which is not in {self.folder}")
            with _open(shard) as f:
                for name in _layer_names(f, shard):
                    if name not in f:
                        raise PorterError(f"{shard}: layer_names lists {name!r}, which the file does not hold")
                    full = name if "model." in name or "/" not in name else f"{_SHARD_LEVEL_ZERO}/{name}"
                    self._add(full, shard, f[name])

    def get(self, name: str) -> np.ndarray:
        path, dataset = self._where[name]
        with _open(path) as f:
            return np.asarray(f[dataset])

    def file_of(self, name: str) -> str:
        return str(self._where[name][0])

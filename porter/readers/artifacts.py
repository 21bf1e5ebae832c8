"""Name what a path is: its framework and format (no framework is imported to decide)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from porter.errors import PorterError
from porter.checks.path_errors import require_path


@dataclass(frozen=True)
class Artifact:
    path: Path
    framework: str  # torch | tf | onnx | tflite
    format: str
    description: str

    @property
    def config(self) -> dict | None:
        if self.format == "keras_hub_preset":
            return None  # its config.json is keras-hub's own; the transformers config is derived from it
        cfg = (self.path if self.path.is_dir() else self.path.parent) / "config.json"
        return read_config_json(cfg) if os.path.lexists(cfg) else None


def read_config_json(cfg: Path) -> dict:
    """A config.json as a dict, read by model_files' rules (a file inside its folder, its size and depth
    bounded); invalid JSON or another JSON type is bad input naming the file."""
    from porter.checks.model_files import read_json

    config = read_json(cfg, cfg.parent)
    if not isinstance(config, dict):
        raise PorterError(f"{cfg} holds a JSON {type(config).__name__}, not an object of config keys",
                          hint="config.json must be one JSON object, as transformers' save_pretrained writes")
    return config


# Files porter, transformers or a tokenizer may open in an HF-style folder: each is held to model_files' rule.
_READ_SUFFIXES = (".json", ".safetensors", ".bin", ".txt", ".model", ".h5", ".msgpack", ".pt", ".pth", ".onnx", ".tiktoken", ".py")
# Formats whose loader reads the whole folder (TensorFlow's SavedModel loader, keras-hub presets).
_WHOLE_TREE = ("saved_model", "keras_hub_preset")


def check_folder(path: Path, fmt: str) -> None:
    """Every file the format's reader may open is a regular file inside the folder (model_files.model_file)."""
    from porter.checks.model_files import check_tree, model_file

    if fmt in _WHOLE_TREE:
        check_tree(path)
        return
    for entry in sorted(path.iterdir()):
        if entry.name.endswith(_READ_SUFFIXES) and not entry.is_dir():
            model_file(entry, path)


_TORCH_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


def _require_zip(path: Path, what: str, hint: str) -> None:
    """A zip archive by its own directory (not by its name): a garbage file is named as such, not 'not found'."""
    import zipfile

    try:
        ok = zipfile.is_zipfile(path)
    except OSError as exc:
        raise PorterError(f"{path} cannot be read: {exc.strerror}") from None
    if not ok:
        raise PorterError(f"{path} is not {what}", hint=hint)


def detect(path) -> Artifact:
    from porter.checks.model_files import regular_file

    path = regular_file(require_path(path), "")
    if path.is_file():
        by_suffix = {
            ".onnx": ("onnx", "onnx", "ONNX model"),
            ".tflite": ("tflite", "tflite", "TFLite flatbuffer"),
            ".keras": ("tf", "keras", "Keras 3 .keras file"),
            ".h5": ("tf", "h5", "Keras HDF5 file"),
            ".pt2": ("torch", "pt2", "torch.export ExportedProgram"),
            ".safetensors": ("torch", "safetensors", "bare safetensors weights (needs a zoo name and config)"),
        }
        if path.suffix in by_suffix:
            if path.suffix == ".keras":
                _require_zip(path, "a valid .keras (zip) file", "save it with model.save('model.keras') (Keras 3)")
            return Artifact(path, *by_suffix[path.suffix])
    else:
        try:
            names = {p.name for p in path.iterdir()}
        except OSError as exc:
            raise PorterError(f"{path} cannot be listed: {exc.strerror}") from None
        found = _folder_artifact(path, names)
        if found is not None:
            if found.format == "hf" and "model.safetensors.index.json" in names:
                from porter.readers.checkpoints import shard_files  # every reader (porter's, transformers') opens what it names

                shard_files(path / "model.safetensors.index.json")
            check_folder(path, found.format)
            return found
    raise PorterError(
        f"cannot tell what {path} is",
        hint="porter reads HF folders (config.json + model.safetensors), SavedModel folders, .keras, .h5, "
        ".onnx, .tflite, .pt2 and tf_model.h5 folders",
    )


def _folder_artifact(path: Path, names: set[str]) -> Artifact | None:
    has_config = "config.json" in names
    if "saved_model.pb" in names:
        kind = " (porter output)" if "model.keras" in names else \
            " (Keras 2, with keras_metadata.pb: its layers are read)" if "keras_metadata.pb" in names else ""
        return Artifact(path, "tf", "saved_model", "TensorFlow SavedModel" + kind)
    if "model.py" in names and "model.safetensors" in names:
        return Artifact(path, "torch", "torch_py", "porter-generated PyTorch code + safetensors")
    if has_config and names & set(_TORCH_WEIGHTS):
        return Artifact(path, "torch", "hf", "Hugging Face PyTorch folder")
    if has_config and ("tf_model.h5" in names or "tf_model.h5.index.json" in names):
        return Artifact(path, "tf", "hf_tf_h5", "transformers 4.x TF checkpoint (tf_model.h5)")
    if "model.json" in names and not has_config:  # tensorflowjs' converter writes model.json + weight shards
        return Artifact(path, "tfjs", "tfjs", "TF.js graph model (model.json)")
    from porter.zoo.keras_hub.to_hf import is_preset_folder

    if is_preset_folder(path, names):
        return Artifact(path, "tf", "keras_hub_preset", "keras-hub preset folder (save_to_preset)")
    return None

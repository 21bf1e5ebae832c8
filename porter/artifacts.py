"""Name what a path is: its framework and format (no framework is imported to decide)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from porter.errors import PorterError


@dataclass(frozen=True)
class Artifact:
    path: Path
    framework: str  # torch | tf | onnx | tflite
    format: str
    description: str

    @property
    def config(self) -> dict | None:
        cfg = (self.path if self.path.is_dir() else self.path.parent) / "config.json"
        try:
            return json.loads(cfg.read_text()) if cfg.is_file() else None
        except ValueError:
            return None


_TORCH_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


def detect(path) -> Artifact:
    path = Path(path)
    if not path.exists():
        raise PorterError(f"{path} does not exist")
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
            return Artifact(path, *by_suffix[path.suffix])
    else:
        names = {p.name for p in path.iterdir()}
        has_config = "config.json" in names
        if "saved_model.pb" in names:
            return Artifact(path, "tf", "saved_model", "TensorFlow SavedModel" + (" (porter output)" if "model.keras" in names else ""))
        if "model.py" in names and "model.safetensors" in names:
            return Artifact(path, "torch", "torch_py", "porter-generated PyTorch code + safetensors")
        if has_config and names & set(_TORCH_WEIGHTS):
            return Artifact(path, "torch", "hf", "Hugging Face PyTorch folder")
        if has_config and "tf_model.h5" in names:
            return Artifact(path, "tf", "hf_tf_h5", "transformers 4.x TF checkpoint (tf_model.h5)")
    raise PorterError(
        f"cannot tell what {path} is",
        hint="porter reads HF folders (config.json + model.safetensors), SavedModel folders, .keras, .h5, "
        ".onnx, .tflite, .pt2 and tf_model.h5 folders",
    )

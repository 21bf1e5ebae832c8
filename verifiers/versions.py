"""Versions of every framework in play, for reports (read from metadata: nothing is imported)."""

from __future__ import annotations

import platform
from importlib import metadata

PACKAGES = ("porter", "torch", "tensorflow", "keras", "transformers", "onnx", "onnxruntime", "tf2onnx", "ai-edge-litert", "numpy", "safetensors")


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out

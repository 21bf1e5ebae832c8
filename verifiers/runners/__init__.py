"""Runners: load one artifact, run named numpy inputs to named numpy outputs (as Polygraphy's)."""

from __future__ import annotations

import importlib

from porter.readers.artifacts import Artifact, detect
from porter.verifiers.runners.base import Runner

# format -> "module:Class"; modules import their framework only when a runner is opened
_BY_FORMAT = {
    "hf": "porter.verifiers.runners.torch_hf:HFTorchRunner",
    "saved_model": "porter.verifiers.runners.tf_saved_model:SavedModelRunner",
    "keras": "porter.verifiers.runners.tf_keras:KerasRunner",
    "h5": "porter.verifiers.runners.tf_keras:KerasRunner",
    "hf_tf_h5": "porter.verifiers.runners.tf_keras:KerasRunner",
    "keras_hub_preset": "porter.verifiers.runners.tf_keras:KerasRunner",
    "onnx": "porter.verifiers.runners.onnx_runtime:OnnxRuntimeRunner",
    "tflite": "porter.verifiers.runners.tflite:TFLiteRunner",
    "pt2": "porter.verifiers.runners.torch_export:ExportedProgramRunner",
    "torch_py": "porter.verifiers.runners.torch_py:TorchPyRunner",
    "tfjs": "porter.verifiers.runners.tfjs_node:TFJSRunner",  # @tensorflow/tfjs in Node, a child process
}


def register_format(fmt: str, target: str) -> None:
    _BY_FORMAT[fmt] = target


def open_runner(path_or_artifact, device: str = "cpu", **options) -> Runner:
    from porter.errors import PorterError

    artifact = path_or_artifact if isinstance(path_or_artifact, Artifact) else detect(path_or_artifact)
    if artifact.format not in _BY_FORMAT:
        raise PorterError(f"porter cannot run {artifact.path} ({artifact.description}) yet")
    target = _BY_FORMAT[artifact.format]
    if artifact.format == "tflite" and options.pop("isolated", False):  # LiteRT alone, in a fresh process
        target = "porter.verifiers.runners.litert_isolated:IsolatedTFLiteRunner"
    elif artifact.format == "saved_model" and options.pop("isolated", False):  # TensorFlow alone, in a fresh process
        target = "porter.verifiers.runners.runtime_isolated:IsolatedSavedModelRunner"
    elif artifact.format == "keras" and options.pop("isolated", False):  # keras + keras_hub alone, in a fresh process
        target = "porter.verifiers.runners.runtime_isolated:IsolatedKerasRunner"
    elif artifact.format in ("hf", "torch_py") and options.pop("isolated", False):  # torch alone, in a fresh process
        target = "porter.verifiers.runners.runtime_isolated:IsolatedTorchRunner"
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)(artifact, device=device, **options)


__all__ = ["Runner", "open_runner", "register_format"]

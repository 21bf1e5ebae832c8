"""porter: move trained models between PyTorch and TensorFlow, and prove the move.

The heavy frameworks are imported only inside the functions that need them,
so ``import porter`` and ``porter --help`` stay instant.
"""

from __future__ import annotations

__version__ = "0.1.0"

from porter.errors import MappingError, PorterError, UnsupportedModelError

__all__ = ["convert", "verify", "onnx_to_torch", "PorterError", "MappingError", "UnsupportedModelError"]


def convert(model, *, source: str, target: str, **options):
    """Convert MODEL (a zoo name or a path) from ``source`` to ``target``; see porter.convert."""
    from porter.conversion import convert as _convert

    return _convert(model, source=source, target=target, **options)


def verify(reference, candidate, **options):
    """Compare two artifacts; the result is truthy when they agree."""
    from porter.verifiers.api import verify as _verify

    return _verify(reference, candidate, **options)


def onnx_to_torch(model_or_path):
    """Turn an ONNX model (path or ModelProto) into a torch.fx.GraphModule."""
    from porter.onnx_to_torch import onnx_to_torch as _onnx_to_torch

    return _onnx_to_torch(model_or_path)

"""porter's own ONNX -> PyTorch converter.

``onnx_to_torch(path_or_model)`` returns a ``torch.fx.GraphModule`` built from
native torch modules and functions; ``codegen.write_torch_package`` turns it into
a standalone ``model.py`` + ``model.safetensors``.
"""

from porter.onnx_to_torch.converter import onnx_to_torch

__all__ = ["onnx_to_torch", "write_torch_package", "write_exported_program"]


def __getattr__(name):
    if name in ("write_torch_package", "write_exported_program"):
        from porter.onnx_to_torch import codegen

        return getattr(codegen, name)
    raise AttributeError(name)

"""porter's own ONNX -> PyTorch converter.

``onnx_to_torch(path_or_model)`` returns a ``torch.fx.GraphModule`` built from
native torch modules and functions; ``codegen.write_torch_package`` turns it into
a standalone ``model.py`` + ``model.safetensors``.
"""

import sys
import types

from porter.onnx_to_torch.converter import onnx_to_torch

__all__ = ["onnx_to_torch", "write_torch_package", "write_exported_program"]


def __getattr__(name):
    if name in ("write_torch_package", "write_exported_program"):
        from porter.onnx_to_torch import codegen

        return getattr(codegen, name)
    raise AttributeError(name)


class _CallableModule(types.ModuleType):
    """Importing this subpackage rebinds ``porter.onnx_to_torch`` from the function of that name
    (porter/__init__.py) to this module; calling the module keeps ``porter.onnx_to_torch(path)`` working."""

    def __call__(self, model_or_path):
        return onnx_to_torch(model_or_path)


sys.modules[__name__].__class__ = _CallableModule

"""ONNX element types and tensors as torch sees them."""

from __future__ import annotations

import numpy as np
import torch
from onnx import TensorProto, numpy_helper

ONNX_TO_TORCH = {
    TensorProto.FLOAT: torch.float32,
    TensorProto.DOUBLE: torch.float64,
    TensorProto.FLOAT16: torch.float16,
    TensorProto.BFLOAT16: torch.bfloat16,
    TensorProto.INT8: torch.int8,
    TensorProto.INT16: torch.int16,
    TensorProto.INT32: torch.int32,
    TensorProto.INT64: torch.int64,
    TensorProto.UINT8: torch.uint8,
    TensorProto.UINT16: torch.uint16,
    TensorProto.UINT32: torch.uint32,
    TensorProto.UINT64: torch.uint64,
    TensorProto.BOOL: torch.bool,
    TensorProto.COMPLEX64: torch.complex64,
    TensorProto.COMPLEX128: torch.complex128,
}

INTEGER_TYPES = (torch.int8, torch.int16, torch.int32, torch.int64,
                 torch.uint8, torch.uint16, torch.uint32, torch.uint64)


def torch_dtype(elem_type: int) -> torch.dtype | None:
    return ONNX_TO_TORCH.get(elem_type)


def is_integer(dtype: torch.dtype) -> bool:
    return dtype in INTEGER_TYPES


def from_numpy(array: np.ndarray) -> torch.Tensor:
    # numpy_helper returns bfloat16 as an ml_dtypes array torch cannot read; go via its bits.
    if array.dtype.name == "bfloat16":
        return torch.from_numpy(array.view(np.uint16).copy()).view(torch.bfloat16)
    return torch.from_numpy(np.array(array, copy=True))


def from_proto(proto: TensorProto) -> torch.Tensor:
    return from_numpy(numpy_helper.to_array(proto))

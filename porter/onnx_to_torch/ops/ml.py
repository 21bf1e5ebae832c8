"""The numeric ai.onnx.ml ops a tensor graph can hold (string- and tree-based ones are not converted)."""

from __future__ import annotations

import torch

from porter.onnx_to_torch import runtime
from porter.onnx_to_torch.context import emit
from porter.onnx_to_torch.registry import register

ML = "ai.onnx.ml"


@register("Binarizer", domain=ML)
def Binarizer(X, *, threshold=0.0):
    return (X > threshold).to(X.dtype)


@register("ArrayFeatureExtractor", domain=ML)
def ArrayFeatureExtractor(X, Y):
    return emit(runtime.array_feature_extractor, X, Y)

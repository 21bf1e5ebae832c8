"""Importing this package registers every converter (one module per op family)."""

from porter.onnx_to_torch.ops import (  # noqa: F401
    activation,
    attention,
    conv,
    elementwise,
    generator,
    indexing,
    loss,
    matmul,
    normalization,
    pooling,
    recurrent,
    reduce,
    resize,
    shape,
    symbolic,
)

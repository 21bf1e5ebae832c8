"""Importing this package registers every converter (one module per op family)."""

from porter.onnx_to_torch.ops import (  # noqa: F401
    activation,
    attention,
    control_flow,
    conv,
    elementwise,
    generator,
    indexing,
    loss,
    matmul,
    normalization,
    pooling,
    quantize,
    rearrange,
    recurrent,
    reduce,
    resize,
    sequence,
    shape,
    signal,
    symbolic,
)

"""One module per op family; importing them fills porter.graph_to_tf.registry.

These modules import tensorflow at the top: the registry imports them only when a
conversion (which needs TF anyway) looks a converter up.
"""

from porter.graph_to_tf.ops import (  # noqa: F401
    activation,
    attention,
    comparison,
    composite,
    creation,
    elementwise,
    higher_order,
    indexing,
    linalg,
    normalization,
    pooling,
    reduction,
    resize,
    shape,
    sorting,
    symbolic,
)

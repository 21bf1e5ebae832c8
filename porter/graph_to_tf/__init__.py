"""porter's torch.export -> TensorFlow converter: core ATen (plus gelu and SDPA) to TF ops, one
converter per op overload, dynamic dims kept dynamic.

    ep = torch.export.export(model, args, dynamic_shapes=...)
    converted = convert_exported(ep, out_dir)        # SavedModel with serving_default
    first_divergence(ep, converted, feeds)           # the first ATen node whose TF value differs

Importing this package imports neither torch nor tensorflow (the CLI imports it).
"""

from __future__ import annotations


def convert_exported(ep, out_dir=None, **kwargs):
    from porter.graph_to_tf.convert import convert_exported as convert

    return convert(ep, out_dir, **kwargs)


def first_divergence(ep, module, feeds, atol: float = 1e-5):
    from porter.graph_to_tf.localize import first_divergence as locate

    return locate(ep, module, feeds, atol)


__all__ = ["convert_exported", "first_divergence"]

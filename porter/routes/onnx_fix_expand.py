"""A constant broadcast to the batch and concatenated in front of a sequence (a transformer's class
token), rewritten so that onnx2tf keeps the batch dynamic.

ViT and CLIP's vision tower export ``cat(cls_token.expand(batch, -1, -1), patches)`` as
``Concat(Expand(C, Concat(Shape(x)[0], 1, 1)), X)``. onnx2tf loses the shape of an Expand whose
target is computed, and the ops after the Concat then fail ("Dimensions must be equal, but are 48
and 32", "Shape must be rank 5 but is rank 3"). The same tensor, written with shapes onnx2tf can
follow: ``C + 0 * X[..., :n, ...]`` (n = C's size on the Concat axis): X's slice carries the
batch, times 0 it is 0 for every finite value, and C broadcasts onto it.
"""

from __future__ import annotations

import numpy as np


def class_tokens_by_broadcast(model) -> tuple[object, list[str]]:
    """(model, notes); the model itself when no such Expand -> Concat is found."""
    import onnx
    from onnx import helper, numpy_helper

    from porter.routes.onnx_graph import big_initializers

    big = {t.name for t in big_initializers(model)}
    inits = {i.name: i for i in model.graph.initializer}
    # only the small ones: the target pieces are shape vectors, and the weights are the model's bulk
    constants = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer if t.name not in big}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    producers = {o: n for n in model.graph.node for o in n.output}
    consumers: dict = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    found = []
    for node in model.graph.node:
        if node.op_type != "Expand" or node.input[0] not in inits or node.input[1] in inits:
            continue
        users = consumers.get(node.output[0], [])
        if len(users) != 1 or users[0].op_type != "Concat" or len(users[0].input) != 2:
            continue
        concat = users[0]
        axis = next((a.i for a in concat.attribute if a.name == "axis"), 0)
        dims = list(inits[node.input[0]].dims)
        other = concat.input[1] if concat.input[0] == node.output[0] else concat.input[0]
        # C is 1 on every axis but the last (the features X also has; ranks align from the right),
        # and the target says 1 on the Concat axis: the Expand only broadcasts C over the batch
        if axis <= 0 or not dims or any(d != 1 for d in dims[:-1]) or _target_piece(node.input[1], axis, producers, constants) != 1:
            continue
        found.append((node, other, axis, 1))
    if not found:
        return model, []
    out = onnx.ModelProto()
    out.CopyFrom(model)
    taken = {o for n in model.graph.node for o in n.output} | set(inits)
    replaced = {node.output[0]: (node, other, axis, size) for node, other, axis, size in found}
    nodes = []
    for node in out.graph.node:
        if node.op_type != "Expand" or node.output[0] not in replaced:
            nodes.append(node)
            continue
        _, other, axis, size = replaced[node.output[0]]
        base = node.output[0]
        names = {k: _fresh(f"{base}__bcast_{k}", taken) for k in ("starts", "ends", "axes", "zero", "slice", "zeros")}
        out.graph.initializer.extend([
            numpy_helper.from_array(np.array([0], np.int64), names["starts"]),
            numpy_helper.from_array(np.array([size], np.int64), names["ends"]),
            numpy_helper.from_array(np.array([axis], np.int64), names["axes"]),
            numpy_helper.from_array(np.array(0, dtype=helper.tensor_dtype_to_np_dtype(inits[node.input[0]].data_type)), names["zero"]),
        ])
        nodes += [helper.make_node("Slice", [other, names["starts"], names["ends"], names["axes"]], [names["slice"]]),
                  helper.make_node("Mul", [names["slice"], names["zero"]], [names["zeros"]]),
                  helper.make_node("Add", [names["zeros"], node.input[0]], [node.output[0]], name=node.name or base)]
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    kept = [v for v in out.graph.value_info if v.name not in replaced]
    del out.graph.value_info[:]
    out.graph.value_info.extend(kept)
    return out, [f"wrote {len(found)} class-token Expand(s) before a Concat as a broadcast add for onnx2tf"]


def _target_piece(name: str, axis: int, producers: dict, constants: dict):
    """The Expand target's value at ``axis`` where it is a constant piece of a Concat (else None)."""
    if name in constants:
        value = constants[name].reshape(-1)
        return int(value[axis]) if axis < value.size else None
    node = producers.get(name)
    if node is None or node.op_type != "Concat":
        return None
    position = 0
    for piece in node.input:
        value = constants.get(piece)
        size = value.size if value is not None else 1  # a computed piece: one dim (Shape -> Gather/Slice)
        if position <= axis < position + size:
            return int(value.reshape(-1)[axis - position]) if value is not None else None
        position += size
    return None


def _fresh(name: str, taken: set) -> str:
    while name in taken:
        name += "_"
    taken.add(name)
    return name

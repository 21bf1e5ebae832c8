"""Fold an ONNX graph's shape arithmetic into constants before onnx2tf sees it, so dynamic
batch and sequence dimensions survive the conversion.

torch.onnx's dynamo exporter writes a reshape whose target depends on a dynamic dim as
``Shape -> Slice -> Concat -> Reshape``. onnx2tf loses the rank of such computed shapes (a
rank-4 attention score became ``(None, None, None, 4, None)`` and its Softmax failed), and
then porter had to fix every dim. onnx-simplifier cannot fold them either: the values really
depend on the input's shape. What does fold, exactly: ONNX's Reshape target may say "copy this
dim from the input" (0) and "infer this one" (-1), and that is all these computations need.

So: run the graph's shape-only subgraph under onnxruntime at two probe sizes for every
dynamic dim. A value that is the same in both probes is a constant. A Reshape target that
differs becomes a constant with 0 where a dim equals the input's dim at the same index in
both probes, and -1 at the one remaining dynamic dim. One pattern needs more than a constant
target: a swap of the last two dims written through 3D (scaled_dot_product_attention's K^T,
[b, h, s, d] -> [b*h, s, d] -> transposed -> [b, h, d, s]) becomes one Transpose. The rewritten
graph is checked against the original on a probe, and dropped (with the reason) if anything disagrees.
"""

from __future__ import annotations

import numpy as np

# ops whose output depends on their inputs' shapes only, never their values
_SHAPE_OF = {"Shape", "Size"}
_NONDETERMINISTIC = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"}


def prepare_for_onnx2tf(model, specs: dict) -> tuple[object, list[str]]:
    """The graph rewritten so that onnx2tf keeps dynamic dims: multi-axis Unsqueezes split, shape
    arithmetic folded. (a model, notes); the model itself when nothing needed rewriting."""
    from porter.routes.onnx_graph import with_weights

    light, weights, notes = prepared_without_weights(model, specs)
    return (with_weights(light, weights), notes) if notes else (model, notes)


def prepared_without_weights(model, specs: dict, arrays: dict | None = None) -> tuple[object, list, list[str]]:
    """prepare_for_onnx2tf's rewrites, returned as (the graph without its weights, the weights, notes); no notes
    when nothing was rewritten. The rewrites copy the graph (the caller's model stays as it was) without the
    weights, which onnx_graph.with_weights or save_with_weights put back once (bert-base: 440 MB a copy, and
    the process kept each one). ``arrays``: the mappings of weights that are external-data stubs (onnx_mapped)."""
    from porter.routes.onnx_fix_expand import class_tokens_by_broadcast
    from porter.routes.onnx_graph import big_initializers, without_weights

    model, tokens = class_tokens_by_broadcast(model)  # reads the class token, an initializer; copies only if found
    weights = big_initializers(model)
    light, notes = _split_unsqueezes(without_weights(model))
    light, more = fold_shape_computations(light, specs, weights=weights, arrays=arrays)
    return light, weights, tokens + notes + more


def _split_unsqueezes(model) -> tuple[object, list[str]]:
    """One Unsqueeze per axis: onnx2tf turns a multi-axis Unsqueeze into a tf.reshape with a -1
    for every dynamic dim ([batch, seq] -> [-1, 1, 1, -1]), which TF rejects at run time; single
    axes become tf.expand_dims. Axes in ascending order give the same result one at a time."""
    import onnx
    from onnx import helper, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    multi = [n for n in model.graph.node if n.op_type == "Unsqueeze" and n.domain in ("", "ai.onnx") and len(n.input) == 2
             and n.input[1] in inits and numpy_helper.to_array(inits[n.input[1]]).size > 1
             and (numpy_helper.to_array(inits[n.input[1]]) >= 0).all()]
    if not multi:
        return model, []
    out = onnx.ModelProto()
    out.CopyFrom(model)
    nodes = []
    targets = {id(n) for n in multi}
    names = {o for n in model.graph.node for o in n.output} | set(inits)
    for node, original in zip(out.graph.node, model.graph.node):
        if id(original) not in targets:
            nodes.append(node)
            continue
        axes = sorted(numpy_helper.to_array(inits[node.input[1]]).tolist())
        current = node.input[0]
        for k, axis in enumerate(axes):
            axis_name = _fresh(f"{node.output[0]}__axis{k}", names)
            out.graph.initializer.append(numpy_helper.from_array(np.asarray([axis], dtype=np.int64), axis_name))
            result = node.output[0] if k == len(axes) - 1 else _fresh(f"{node.output[0]}__step{k}", names)
            nodes.append(helper.make_node("Unsqueeze", [current, axis_name], [result], name=f"{node.name}__{k}"))
            current = result
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    _drop_dead_nodes(out.graph)
    return out, [f"split {len(multi)} multi-axis Unsqueeze(s) into single axes for onnx2tf"]


def _fresh(name: str, taken: set) -> str:
    while name in taken:
        name += "_"
    taken.add(name)
    return name


def fold_shape_computations(model, specs: dict, weights: list | None = None, arrays: dict | None = None) -> tuple[object, list[str]]:
    """(a rewritten copy of ``model``, notes). ``specs``: input name -> (dtype, shape, None = dynamic).
    Returns the model itself, unchanged, when it has no dynamic dims or no computed shapes. ``weights``: given
    when ``model`` comes without them (onnx_graph.without_weights): the probes get them as arrays, those
    in ``arrays`` (onnx_mapped's mappings) as they are."""
    import onnx

    symbols = dynamic_symbols(model, specs)
    if not symbols or any(a.type in (a.GRAPH, a.GRAPHS) for n in model.graph.node for a in n.attribute):
        return model, []  # control flow: subgraphs may read any outer tensor, so nothing is provably dead
    graph = model.graph
    frontier = _shape_only_frontier(graph)
    if not frontier:
        return model, []
    reshapes = [n for n in graph.node if n.op_type == "Reshape" and n.input[1] in frontier]
    outputs = [o.name for o in graph.output]  # probe 1's outputs are the reference the folded graph is checked against
    wanted = sorted(frontier | set(outputs) | {t for n in reshapes for t in (n.input[0], n.output[0])})
    try:
        probes = _run(model, wanted, *(probe_feeds(specs, symbols, which) for which in (0, 1)), weights=weights,
                      arrays=arrays)
    except Exception as exc:  # a graph onnxruntime cannot run at the probe sizes: leave it to onnx2tf
        return model, [f"shape arithmetic not folded: onnxruntime could not run the probes ({type(exc).__name__})"]

    folded = onnx.ModelProto()
    folded.CopyFrom(model)
    graph = folded.graph
    constants = {}
    for name in sorted(frontier):
        a, b = probes[0][name], probes[1][name]
        if a.shape == b.shape and np.array_equal(a, b):
            constants[name] = a
    swaps = _flattened_swaps(model.graph, reshapes, probes)
    swapped = {r.output[0] for first, _, second, _ in swaps for r in (first, second)}
    # a Reshape whose target varies gets its own constant target, read off the shapes it produced:
    # static dims as numbers, a dim copied from the same index of its input as 0, at most one -1
    targets = {}
    for index, node in enumerate(reshapes):
        if node.input[1] in constants or node.output[0] in swapped:
            continue
        shapes = [(p[node.input[0]].shape, p[node.output[0]].shape) for p in probes]
        target = _reshape_target(*shapes[0], *shapes[1])
        if target is not None:
            targets[index] = target
    if not constants and not targets and not swaps:
        return model, []
    graph_reshapes = [n for n in graph.node if n.op_type == "Reshape" and n.input[1] in frontier]
    new_targets = {}
    for index, target in targets.items():
        node = graph_reshapes[index]
        node.input[1] = f"{node.output[0]}__shape"
        new_targets[node.input[1]] = target
        for attr in node.attribute:  # 0 now means "copy the input's dim", which allowzero=1 forbids
            if attr.name == "allowzero":
                attr.i = 0
    _replace_swaps(graph, swaps)
    _replace_with_initializers(graph, constants)
    _add_initializers(graph, new_targets)
    _drop_dead_nodes(graph)
    before, after = probes[1], _run(folded, outputs, probe_feeds(specs, symbols, 1), weights=weights, arrays=arrays)[0]
    bad = [n for n in outputs if before[n].shape != after[n].shape or not np.allclose(before[n], after[n], rtol=0, atol=1e-6, equal_nan=True)]
    if bad:
        return model, [f"shape arithmetic not folded: the folded graph disagreed on {', '.join(bad)}"]
    return folded, [f"folded shape arithmetic into {len(constants)} constant(s) and {len(new_targets)} Reshape target(s)"
                    + (f", and {len(swaps)} flattened transpose(s) into one Transpose each" if swaps else "")
                    + " so that onnx2tf can keep dims dynamic"]


def _flattened_swaps(graph, reshapes, probes) -> list[tuple]:
    """(Reshape, Transpose, Reshape, perm) that swap the last two dims of a rank >= 3 tensor by
    way of 3D: [..., a, b] -> [prod(...), a, b] -> perm (0, 2, 1) -> [..., b, a]. torch.onnx writes
    scaled_dot_product_attention's K^T so; onnx2tf cannot keep [batch * heads] dynamic through it,
    while one Transpose of the last two dims is plain. Matched on the shapes of both probes."""
    consumers: dict = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}
    by_output = {n.output[0]: n for n in reshapes}
    found = []
    for first in reshapes:
        users = consumers.get(first.output[0], [])
        if len(users) != 1 or users[0].op_type != "Transpose" or first.output[0] in outputs:
            continue
        swap = users[0]
        perm = next((list(a.ints) for a in swap.attribute if a.name == "perm"), None)
        after = consumers.get(swap.output[0], [])
        if perm != [0, 2, 1] or len(after) != 1 or after[0].output[0] not in by_output or swap.output[0] in outputs:
            continue
        second = after[0]

        def swaps_last_two(p):
            x, flat, y = p[first.input[0]].shape, p[first.output[0]].shape, p[second.output[0]].shape
            return (len(x) >= 3 and flat == (int(np.prod(x[:-2])), x[-2], x[-1])
                    and y == (*x[:-2], x[-1], x[-2]))

        if all(swaps_last_two(p) for p in probes):
            rank = len(probes[0][first.input[0]].shape)
            found.append((first, swap, second, [*range(rank - 2), rank - 1, rank - 2]))
    return found


def _replace_swaps(graph, swaps) -> None:
    """Each (Reshape, Transpose, Reshape) swap becomes one Transpose at the first Reshape's place."""
    from onnx import helper

    firsts = {first.output[0]: (second, perm) for first, _, second, perm in swaps}
    gone = {n.output[0] for _, t, r, _ in swaps for n in (t, r)}
    nodes = []
    for node in graph.node:
        if node.output[0] in gone:
            continue
        if node.op_type == "Reshape" and node.output[0] in firsts:
            second, perm = firsts[node.output[0]]
            node = helper.make_node("Transpose", [node.input[0]], [second.output[0]], name=f"{node.name}__swap", perm=perm)
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)


def dynamic_symbols(model, specs: dict) -> list[tuple[str, int, str]]:
    """(input, axis, symbol) for every dynamic dim; dims sharing a dim_param share a symbol."""
    declared = {v.name: v.type.tensor_type.shape.dim for v in model.graph.input}
    out = []
    for name, (_, shape) in specs.items():
        for axis, d in enumerate(shape):
            if d is None:
                dim = declared.get(name, ())
                param = dim[axis].dim_param if axis < len(dim) and dim[axis].dim_param else f"{name}:{axis}"
                out.append((name, axis, param))
    return out


def probe_feeds(specs: dict, symbols, which: int) -> dict:
    """Inputs at probe sizes: every symbol its own size, different in the two probes
    (batch 2 or 3; the k-th other dim 16 + 8k or 20 + 8k), so no two dims are equal by accident."""
    sizes, others = {}, 0
    for _, axis, sym in symbols:
        if sym not in sizes:
            if axis == 0:
                sizes[sym] = 2 + which
            else:
                sizes[sym] = 16 + 8 * others + 4 * which
                others += 1
    sym_of = {(n, a): s for n, a, s in symbols}
    rng = np.random.default_rng(which)
    feeds = {}
    for name, (dtype, shape) in specs.items():
        dims = [sizes[sym_of[(name, a)]] if d is None else d for a, d in enumerate(shape)]
        kind = np.dtype(dtype).kind
        feeds[name] = rng.standard_normal(dims).astype(dtype) if kind == "f" else np.ones(dims, dtype=dtype)
    return feeds


def _shape_only_frontier(graph) -> set[str]:
    """Tensors computed from input shapes and constants alone, that feed a node which is not."""
    shape_only = {i.name for i in graph.initializer}
    computed = set()
    for node in graph.node:  # nodes are topologically sorted in a valid ONNX graph
        if node.op_type in _NONDETERMINISTIC:
            continue
        if node.op_type in _SHAPE_OF or node.op_type == "Constant" or (
                node.input and all(i == "" or i in shape_only for i in node.input)):
            shape_only.update(o for o in node.output if o)
            if node.op_type != "Constant":
                computed.update(o for o in node.output if o)
    frontier = set()
    for node in graph.node:
        outputs_shape_only = all(o in shape_only for o in node.output if o)
        if not outputs_shape_only:
            frontier.update(i for i in node.input if i in computed)
    return frontier


def _reshape_target(in_a, out_a, in_b, out_b):
    """A constant Reshape target that gives ``out_a`` from ``in_a`` and ``out_b`` from ``in_b``, or None."""
    if len(out_a) != len(out_b):
        return None
    target, inferred = [], 0
    for axis, (x, y) in enumerate(zip(out_a, out_b)):
        if x == y and x > 0:
            target.append(x)
        elif axis < len(in_a) and axis < len(in_b) and x == in_a[axis] and y == in_b[axis] and x > 0:
            target.append(0)
        else:
            target.append(-1)
            inferred += 1
    return np.asarray(target, dtype=np.int64) if inferred <= 1 else None


def _run(model, names, *feeds, weights: list | None = None, arrays: dict | None = None) -> list[dict]:
    """``names`` computed by onnxruntime for each of ``feeds``, in one session. The asked tensors become
    outputs of a copy of the graph without its weights (``model`` is not changed), and onnxruntime gets the
    weights as arrays it shares (``arrays``' mappings where given): a full copy, its serialised bytes and
    onnxruntime's own copy were each 440 MB on bert-base, all kept in the process's memory."""
    import onnx

    from porter.routes.onnx_graph import big_initializers, drop_weight_inputs, without_weights
    from porter.routes.onnx_mapped import ort_session, values

    if weights is None:  # else ``model`` is already without them (prepare_for_onnx2tf's copy)
        weights = big_initializers(model)
    light = without_weights(model)
    present = {o.name for o in light.graph.output}
    light.graph.output.extend(onnx.ValueInfoProto(name=n) for n in dict.fromkeys(names) if n not in present)
    drop_weight_inputs(light, weights)
    for t in weights:  # stand-ins marked external: onnxruntime replaces them with the arrays given
        stub = light.graph.initializer.add(name=t.name, data_type=t.data_type, dims=t.dims,
                                           data_location=onnx.TensorProto.EXTERNAL)
        stub.external_data.add(key="location", value="given-as-array")
    session = ort_session(light, {t.name: values(t, arrays or {}) for t in weights}, arena=False)
    return [dict(zip(names, session.run(list(names), f))) for f in feeds]


def _replace_with_initializers(graph, constants: dict) -> None:
    from onnx import numpy_helper

    renamed = {}
    existing = {i.name for i in graph.initializer} | {o for n in graph.node for o in n.output}
    for name, value in constants.items():
        new = _fresh(f"{name}__folded", existing)
        renamed[name] = new
        graph.initializer.append(numpy_helper.from_array(np.asarray(value), new))
    for node in graph.node:
        for i, inp in enumerate(node.input):
            if inp in renamed:
                node.input[i] = renamed[inp]


def _add_initializers(graph, constants: dict) -> None:
    from onnx import numpy_helper

    graph.initializer.extend(numpy_helper.from_array(np.asarray(v), k) for k, v in constants.items())


def _drop_dead_nodes(graph) -> None:
    needed = {o.name for o in graph.output}
    keep = []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(i for i in node.input if i)
    keep.reverse()
    del graph.node[:]
    graph.node.extend(keep)
    used = {i for n in graph.node for i in n.input}
    dead = [i for i in graph.initializer if i.name not in used and i.name not in needed]
    for init in dead:
        graph.initializer.remove(init)

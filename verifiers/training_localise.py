"""Which layer's *training-mode* output first differs, for `porter verify --train`.

A gradient cannot localise a forward mismatch: a BatchNorm that normalises with the wrong variance changes
the input of every later layer and, through the backward pass, the gradient of every earlier one, so
every gradient differs. The forward pass in training mode (batch statistics) differs from that layer on,
so the first layer whose output differs is the one at fault. Both models' state (BatchNorm's running
statistics) is restored afterwards: the step itself starts from the same state.
"""

from __future__ import annotations

import sys

import numpy as np


def training_outputs_keras(model, plan, feed) -> dict:
    """{variable: the Keras layer's output in training mode, Keras layout} for every layer of the model's
    own graph (layers of an inlined Sequential have no tensor of their own there and are left out)."""
    from porter.process.frameworks import keras

    from porter.keras_to_torch.graph import functional_of

    k = keras()
    model = functional_of(model)
    ops = {op.name: op for op in model.operations}
    picked = [(c.var, ops[c.name]) for c in plan.graph.calls if c.name in ops and len(ops[c.name]._inbound_nodes) == 1]
    if not picked:  # every top-level layer is a nested model or called twice: no single output to probe
        return {}
    inputs = model.inputs if len(model.inputs) > 1 else model.inputs[0]  # as the model is called
    probe = k.Model(inputs, [op._inbound_nodes[0].output_tensors[0] for _, op in picked])
    saved = [(v, v.numpy()) for v in model.weights]
    names = [n for n, _, _, _ in plan.graph.inputs]
    args = [feed[n] for n in names]
    try:
        outs = probe(args if len(args) > 1 else args[0], training=True)
    finally:
        for v, value in saved:  # the moving statistics this pass updated
            v.assign(value)
    outs = outs if isinstance(outs, (list, tuple)) else [outs]
    return {var: np.asarray(o) for (var, _), o in zip(picked, outs)}


def training_outputs_torch(model, plan, input_names, feed, declared) -> dict:
    """{variable: the local of that name in model.forward, in the Keras layout} after one training-mode
    forward pass: model.py writes each Keras layer's output to a variable named after it."""
    import torch

    from porter.verifiers import layout as layouts

    code, seen = type(model).forward.__code__, {}

    def grab(frame, event, _):
        if event == "return" and frame.f_code is code:
            seen.update(frame.f_locals)

    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    feed = layouts.apply(feed, declared)
    model.train()
    previous = sys.getprofile()
    sys.setprofile(grab)
    try:
        with torch.no_grad():
            model(*[torch.from_numpy(np.ascontiguousarray(feed[n])) for n in input_names])
    finally:
        sys.setprofile(previous)
        model.load_state_dict(state)
    outputs = {}
    for call in plan.graph.calls:
        value = seen.get(call.var)
        if isinstance(value, torch.Tensor):
            value = value.detach().numpy()
            if plan.emits[call.var].layout == "cf" and value.ndim >= 3:
                value = np.moveaxis(value, 1, -1)
            outputs[call.var] = value
    return outputs


def first_forward_divergence(keras_outputs: dict, torch_outputs: dict, plan, close) -> dict:
    """{"compared": n, "max_abs": worst, "first_diverging": (layer, max_abs) or None} over the layers both sides have."""
    compared, worst, first = 0, 0.0, None
    for call in plan.graph.calls:
        if call.var not in keras_outputs or call.var not in torch_outputs:
            continue
        diff, ok = close(keras_outputs[call.var], torch_outputs[call.var])
        compared, worst = compared + 1, max(worst, diff)
        if not ok and first is None:
            first = {"layer": call.name, "max_abs": diff}
    return {"compared": compared, "max_abs": worst, "first_diverging": first}

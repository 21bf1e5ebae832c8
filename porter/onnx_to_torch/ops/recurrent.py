"""Recurrent layers (RNN, GRU, LSTM; one layer per node).

Native nn.RNN / nn.GRU / nn.LSTM when the node is what torch computes: constant W, R, B;
the default activations; no clip; no (or all-zero) peepholes; GRU linear_before_reset=1;
LSTM input_forget=0; no sequence_lens, or constant ones that all equal the sequence length.
The weights are re-ordered from ONNX's gate order to torch's, direction="reverse" runs a
forward module on the time-flipped sequence, and layout=1 becomes batch_first.

Everything else (run-time weights, other activations, clip, peepholes, GRU
linear_before_reset=0, input_forget=1, sequence lengths that differ from the sequence's)
is an unrolled step loop written with torch ops; it needs the sequence length at
conversion time and says so where it is not known.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from porter.errors import UnsupportedModelError
from porter.onnx_to_torch.context import current, dtype, is_const, module, static_shape
from porter.onnx_to_torch.registry import register

_GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}
_DEFAULTS = {"RNN": ("tanh",), "GRU": ("sigmoid", "tanh"), "LSTM": ("sigmoid", "tanh", "tanh")}
# torch's gate order as indices into ONNX's: LSTM i,o,f,c -> i,f,g(=c),o; GRU z,r,h -> r,z,n.
_TORCH_ORDER = {"RNN": [0], "GRU": [1, 0, 2], "LSTM": [0, 2, 3, 1]}
_MODULES = {"RNN": nn.RNN, "GRU": nn.GRU, "LSTM": nn.LSTM}
_DIRECTIONS = ("forward", "reverse", "bidirectional")

# name -> (number of alphas it takes, number of betas, default alpha, default beta). As the ONNX spec
# says (and onnxruntime's LSTM and GRU do), activation_alpha/activation_beta are consumed in the
# order of the activations, each taking only as many as it uses, and a missing value is the default
# of the ONNX op of that name. None: no default porter can trust (Affine and ScaledTanh are no ONNX
# ops; for ThresholdedRelu onnxruntime uses 0, not the op's 1.0), so the value must be given.
# (onnxruntime's RNN kernel reads activation_alpha/beta[direction] instead, with 0 for defaults.)
_ACTIVATIONS = {
    "relu": (0, 0, None, None),
    "tanh": (0, 0, None, None),
    "sigmoid": (0, 0, None, None),
    "affine": (1, 1, None, None),
    "leakyrelu": (1, 0, 0.01, None),
    "thresholdedrelu": (1, 0, None, None),
    "scaledtanh": (1, 1, None, None),
    "hardsigmoid": (1, 1, 0.2, 0.5),
    "elu": (1, 0, 1.0, None),
    "softsign": (0, 0, None, None),
    "softplus": (0, 0, None, None),
}

_ALLOWED = {
    "activations": lambda names: all(str(n).lower() in _ACTIVATIONS for n in names),
    "direction": _DIRECTIONS,
    "layout": (0, 1),
}


def _refuse(why: str):
    node = current().node
    return UnsupportedModelError(f"node {current().node_label!r} ({node.op_type}): {why}")


def _activation(name: str, alpha, beta):
    if name == "relu":
        return torch.relu
    if name == "tanh":
        return torch.tanh
    if name == "sigmoid":
        return torch.sigmoid
    if name == "affine":
        return lambda x: alpha * x + beta
    if name == "leakyrelu":
        return lambda x: F.leaky_relu(x, alpha)
    if name == "thresholdedrelu":
        return lambda x: torch.where(x > alpha, x, 0.0)
    if name == "scaledtanh":
        return lambda x: alpha * torch.tanh(beta * x)
    if name == "hardsigmoid":
        return lambda x: torch.clamp(alpha * x + beta, 0.0, 1.0)
    if name == "elu":
        return lambda x: torch.where(x >= 0, x, alpha * (torch.exp(x) - 1))
    if name == "softsign":
        return lambda x: x / (1 + torch.abs(x))
    assert name == "softplus"
    return F.softplus


def _activations(kind: str, names, alphas, betas, num_directions: int):
    """Per direction, the activation functions (f, g, h as the kind uses them) and whether they are the defaults."""
    count = len(_DEFAULTS[kind])
    names = [str(n).lower() for n in (names or _DEFAULTS[kind] * num_directions)]
    if len(names) != count * num_directions:
        raise _refuse(f"{len(names)} activations given; a {num_directions}-direction {kind} takes "
                      f"{count * num_directions}")
    alphas, betas = list(alphas or []), list(betas or [])
    functions = []
    for name in names:
        n_alpha, n_beta, default_alpha, default_beta = _ACTIVATIONS[name]
        alpha = alphas.pop(0) if n_alpha and alphas else default_alpha
        beta = betas.pop(0) if n_beta and betas else default_beta
        if (n_alpha and alpha is None) or (n_beta and beta is None):
            raise _refuse(f"activation {name!r} needs activation_alpha/activation_beta values")
        functions.append(_activation(name, alpha, beta))
    per_direction = [functions[d * count:(d + 1) * count] for d in range(num_directions)]
    return per_direction, names == list(_DEFAULTS[kind]) * num_directions


def _torch_gates(kind: str, t: torch.Tensor, hidden: int) -> torch.Tensor:
    """Re-order the gate blocks of ``t`` (leading dim gates*hidden) from ONNX's order to torch's."""
    blocks = t.reshape(_GATES[kind], hidden, *t.shape[1:])
    return blocks[_TORCH_ORDER[kind]].reshape(t.shape).contiguous()


def _full_lengths(sequence_lens, seq_length) -> bool:
    return (sequence_lens is None or
            (is_const(sequence_lens) and seq_length is not None and bool((sequence_lens == seq_length).all())))


def _recurrent(kind, X, W, R, B, sequence_lens, initial_h, initial_c=None, P=None, *, activation_alpha,
               activation_beta, activations, clip, direction, hidden_size, layout, input_forget=0,
               linear_before_reset=0):
    num_directions = 2 if direction == "bidirectional" else 1
    hidden = hidden_size if hidden_size is not None else (R.shape[-1] if is_const(R) else static_shape(R)[-1])
    if hidden is None:
        raise _refuse("hidden_size is not given and R's shape is unknown")
    functions, default_activations = _activations(kind, activations, activation_alpha, activation_beta,
                                                  num_directions)
    seq_length = static_shape(X)[1 if layout else 0]
    full = _full_lengths(sequence_lens, seq_length)
    no_peepholes = P is None or (is_const(P) and not bool(P.any()))
    native = (is_const(W) and is_const(R) and (B is None or is_const(B)) and default_activations and clip is None
              and no_peepholes and full and not input_forget and (kind != "GRU" or linear_before_reset)
              and W.dtype in (torch.float32, torch.float64))
    if native:
        return _native(kind, X, W, R, B, initial_h, initial_c, direction, hidden, layout)
    if seq_length is None:
        reasons = [why for why, bad in [
            ("run-time weights", not (is_const(W) and is_const(R) and (B is None or is_const(B)))),
            ("non-default activations", not default_activations), ("clip", clip is not None),
            ("peepholes", not no_peepholes), ("input_forget=1", bool(input_forget)),
            ("linear_before_reset=0", kind == "GRU" and not linear_before_reset),
            ("sequence_lens that differ from the sequence length", not full),
            ("a dtype other than float32/float64", dtype(W) not in (torch.float32, torch.float64))] if bad]
        raise _refuse(f"no native nn.{kind} computes this node ({', '.join(reasons)}), and porter's unrolled "
                      "fallback needs the sequence length at conversion time, which is dynamic here")
    if full:
        sequence_lens = None
    return _unrolled(kind, X, W, R, B, sequence_lens, initial_h, initial_c, P, functions, clip, direction,
                     hidden, layout, input_forget, linear_before_reset, seq_length)


# -- native modules ----------------------------------------------------------------------------
def _native(kind, X, W, R, B, initial_h, initial_c, direction, hidden, layout):
    gates = _GATES[kind]
    num_directions = W.shape[0]
    kwargs = {"nonlinearity": "tanh"} if kind == "RNN" else {}
    layer = _MODULES[kind](W.shape[-1], hidden, num_layers=1, bias=B is not None, batch_first=bool(layout),
                           bidirectional=num_directions == 2, dtype=W.dtype, **kwargs)
    with torch.no_grad():
        for d in range(num_directions):
            suffix = "_l0_reverse" if d else "_l0"
            getattr(layer, "weight_ih" + suffix).copy_(_torch_gates(kind, W[d], hidden))
            getattr(layer, "weight_hh" + suffix).copy_(_torch_gates(kind, R[d], hidden))
            if B is not None:
                getattr(layer, "bias_ih" + suffix).copy_(_torch_gates(kind, B[d, :gates * hidden], hidden))
                getattr(layer, "bias_hh" + suffix).copy_(_torch_gates(kind, B[d, gates * hidden:], hidden))
    time_dim = 1 if layout else 0
    x = torch.flip(X, [time_dim]) if direction == "reverse" else X
    # torch's h0/c0 are [num_directions, batch, hidden] whatever batch_first says.
    states = [s if s is None or not layout else s.transpose(0, 1) for s in (initial_h, initial_c)]
    if kind == "LSTM":
        h0, c0 = states
        if (h0 is None) != (c0 is None):  # torch takes both or neither
            h0 = torch.zeros_like(c0) if h0 is None else h0
            c0 = torch.zeros_like(h0) if c0 is None else c0
        out = module(layer, x, (h0, c0), named_after=W) if h0 is not None else module(layer, x, named_after=W)
        y, h_n, c_n = out[0], out[1][0], out[1][1]
    else:
        out = module(layer, x, states[0], named_after=W) if states[0] is not None else module(layer, x, named_after=W)
        y, h_n, c_n = out[0], out[1], None
    if direction == "reverse":
        y = torch.flip(y, [time_dim])
    # torch: [seq, batch, dirs*hidden] (batch_first: [batch, seq, dirs*hidden]) -> ONNX Y.
    y = y.unflatten(-1, (num_directions, hidden))
    if not layout:
        y = y.transpose(1, 2)
    if layout:
        h_n = h_n.transpose(0, 1)
        c_n = c_n.transpose(0, 1) if c_n is not None else None
    return (y, h_n, c_n) if kind == "LSTM" else (y, h_n)


# -- unrolled fallback -------------------------------------------------------------------------
def _gate(t, k: int, hidden: int):
    return t[..., k * hidden:(k + 1) * hidden]


def _unrolled(kind, X, W, R, B, sequence_lens, initial_h, initial_c, P, functions, clip, direction, hidden,
              layout, input_forget, linear_before_reset, seq_length):
    gates = _GATES[kind]
    if layout:  # [batch, seq, input] -> [seq, batch, input]; states [batch, dirs, hidden] -> [dirs, batch, hidden]
        X = X.transpose(0, 1)
        initial_h = initial_h.transpose(0, 1) if initial_h is not None else None
        initial_c = initial_c.transpose(0, 1) if initial_c is not None else None

    def clipped(v):
        return torch.clamp(v, -clip, clip) if clip is not None else v

    reverse_flags = {"forward": [False], "reverse": [True], "bidirectional": [False, True]}[direction]
    ys, hs, cs = [], [], []
    for d, reverse in enumerate(reverse_flags):
        f, g, h_act = (functions[d] + [None, None])[:3]
        w, r = W[d], R[d]
        xw = torch.matmul(X, w.transpose(0, 1))  # [seq, batch, gates*hidden]
        wb = rb = None
        if B is not None:
            wb, rb = B[d, :gates * hidden], B[d, gates * hidden:]
            xw = xw + wb
        zeros = torch.zeros_like(_gate(xw[0], 0, hidden))
        h = initial_h[d] if initial_h is not None else zeros
        c = initial_c[d] if initial_c is not None else zeros
        if P is not None:
            p_i, p_o, p_f = (_gate(P[d], k, hidden) for k in range(3))
        outputs = [None] * seq_length
        for t in (reversed(range(seq_length)) if reverse else range(seq_length)):
            x_t = xw[t]
            if kind == "GRU" and not linear_before_reset:
                hr = torch.matmul(h, _gate(r.transpose(0, 1), 0, 2 * hidden))  # z and r blocks
                if rb is not None:
                    hr = hr + rb[:2 * hidden]
                z = f(clipped(_gate(x_t, 0, hidden) + _gate(hr, 0, hidden)))
                reset = f(clipped(_gate(x_t, 1, hidden) + _gate(hr, 1, hidden)))
                hh = torch.matmul(reset * h, r[2 * hidden:].transpose(0, 1))
                if rb is not None:
                    hh = hh + rb[2 * hidden:]
                candidate = g(clipped(_gate(x_t, 2, hidden) + hh))
                h_new, c_new = (1 - z) * candidate + z * h, None
            else:
                hr = torch.matmul(h, r.transpose(0, 1))
                if rb is not None:
                    hr = hr + rb
                if kind == "RNN":
                    h_new, c_new = f(clipped(x_t + hr)), None
                elif kind == "GRU":  # linear_before_reset=1
                    z = f(clipped(_gate(x_t, 0, hidden) + _gate(hr, 0, hidden)))
                    reset = f(clipped(_gate(x_t, 1, hidden) + _gate(hr, 1, hidden)))
                    candidate = g(clipped(_gate(x_t, 2, hidden) + reset * _gate(hr, 2, hidden)))
                    h_new, c_new = (1 - z) * candidate + z * h, None
                else:  # LSTM, ONNX gate order i, o, f, c
                    gi, go, gf, gc = (_gate(x_t, k, hidden) + _gate(hr, k, hidden) for k in range(4))
                    if P is not None:
                        gi, gf = gi + p_i * c, gf + p_f * c
                    i = f(clipped(gi))
                    forget = 1 - i if input_forget else f(clipped(gf))
                    c_new = forget * c + i * g(clipped(gc))
                    if P is not None:
                        go = go + p_o * c_new
                    h_new = f(clipped(go)) * h_act(c_new)
            if sequence_lens is not None:  # steps past a sequence's length keep its state and output zeros
                valid = (sequence_lens > t).unsqueeze(-1)
                outputs[t] = torch.where(valid, h_new, 0.0)
                h = torch.where(valid, h_new, h)
                c = torch.where(valid, c_new, c) if c_new is not None else None
            else:
                outputs[t], h, c = h_new, h_new, c_new
        ys.append(torch.stack(outputs, 0))
        hs.append(h)
        cs.append(c)
    y = torch.stack(ys, 1)  # [seq, dirs, batch, hidden]
    y_h = torch.stack(hs, 0)  # [dirs, batch, hidden]
    y_c = torch.stack(cs, 0) if kind == "LSTM" else None
    if layout:
        y = y.permute(2, 0, 1, 3)
        y_h = y_h.transpose(0, 1)
        y_c = y_c.transpose(0, 1) if y_c is not None else None
    return (y, y_h, y_c) if kind == "LSTM" else (y, y_h)


# -- converters ----------------------------------------------------------------------------------
@register("RNN", since=7, allowed=_ALLOWED)
def RNN(X, W, R, B=None, sequence_lens=None, initial_h=None, *, activation_alpha=None, activation_beta=None,
        activations=None, clip=None, direction="forward", hidden_size=None, layout=0):
    return _recurrent("RNN", X, W, R, B, sequence_lens, initial_h, activation_alpha=activation_alpha,
                      activation_beta=activation_beta, activations=activations, clip=clip, direction=direction,
                      hidden_size=hidden_size, layout=layout)


@register("GRU", since=7, allowed=_ALLOWED)
def GRU(X, W, R, B=None, sequence_lens=None, initial_h=None, *, activation_alpha=None, activation_beta=None,
        activations=None, clip=None, direction="forward", hidden_size=None, layout=0, linear_before_reset=0):
    return _recurrent("GRU", X, W, R, B, sequence_lens, initial_h, activation_alpha=activation_alpha,
                      activation_beta=activation_beta, activations=activations, clip=clip, direction=direction,
                      hidden_size=hidden_size, layout=layout, linear_before_reset=linear_before_reset)


@register("LSTM", since=7, allowed=_ALLOWED)
def LSTM(X, W, R, B=None, sequence_lens=None, initial_h=None, initial_c=None, P=None, *, activation_alpha=None,
         activation_beta=None, activations=None, clip=None, direction="forward", hidden_size=None, input_forget=0,
         layout=0):
    return _recurrent("LSTM", X, W, R, B, sequence_lens, initial_h, initial_c, P, activation_alpha=activation_alpha,
                      activation_beta=activation_beta, activations=activations, clip=clip, direction=direction,
                      hidden_size=hidden_size, layout=layout, input_forget=input_forget)

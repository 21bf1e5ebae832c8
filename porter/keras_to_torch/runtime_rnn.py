"""The recurrent classes a generated model.py carries (copied in as source where the model uses them).

torch's nn.LSTM / nn.GRU / nn.RNN compute Keras' LSTM, GRU(reset_after=True) and SimpleRNN exactly when the
activations are torch's fixed ones and no mask skips timesteps; KerasLSTM/KerasGRU/KerasSimpleRNN are those
modules, called as Keras calls its layer (go_backwards, return_sequences, return_state, initial_state: a list
of (batch, units) tensors in Keras' order, LSTM's h then c; zeros without one). Keras has one bias
where torch has two: torch's bias_hh is a frozen zero buffer, so a training step moves the same bias Keras does.
KerasRNN is the step loop itself, for what torch's modules cannot do: a mask (Keras skips masked timesteps:
the state carries over, the output repeats the last one, or is zero under Bidirectional), GRU's
reset_after=False, other activations.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn


def keras_recurrent_result(seq, states, return_sequences, return_state):
    """What a Keras RNN layer returns: the sequence or its last step, then the states if asked for."""
    out = seq if return_sequences else seq[:, -1]
    return (out, *states) if return_state else out


def one_bias(rnn):
    """Keras has one bias where torch has two: torch's bias_hh becomes a zero buffer, so a training step moves
    the bias Keras moves (two trained biases would move their sum twice as far)."""
    zeros = torch.zeros_like(rnn.bias_hh_l0.detach())
    del rnn.bias_hh_l0
    rnn.register_buffer("bias_hh_l0", zeros)
    rnn._init_flat_weights()  # torch's RNNs run from a list of their weights: rebuild it


class KerasLSTM(nn.LSTM):
    """Keras LSTM on nn.LSTM (batch first; Keras' gate order i, f, c, o is torch's i, f, g, o)."""

    def __init__(self, input_size, hidden_size, bias, return_sequences, return_state, go_backwards):
        super().__init__(input_size, hidden_size, bias=bias, batch_first=True)
        self.keras = (return_sequences, return_state, go_backwards)
        if bias:
            one_bias(self)

    def forward(self, x, initial_state=None):
        return_sequences, return_state, go_backwards = self.keras
        hx = None if initial_state is None else (initial_state[0][None], initial_state[1][None])  # Keras: [h, c]
        seq, (h, c) = super().forward(x.flip(1) if go_backwards else x, hx)
        return keras_recurrent_result(seq, (h[0], c[0]), return_sequences, return_state)


class KerasGRU(nn.GRU):
    """Keras GRU(reset_after=True) on nn.GRU (batch first; Keras' gates z, r, h are torch's r, z, n reordered)."""

    def __init__(self, input_size, hidden_size, bias, return_sequences, return_state, go_backwards):
        super().__init__(input_size, hidden_size, bias=bias, batch_first=True)
        self.keras = (return_sequences, return_state, go_backwards)

    def forward(self, x, initial_state=None):
        return_sequences, return_state, go_backwards = self.keras
        hx = None if initial_state is None else initial_state[0][None]
        seq, h = super().forward(x.flip(1) if go_backwards else x, hx)
        return keras_recurrent_result(seq, (h[0],), return_sequences, return_state)


class KerasSimpleRNN(nn.RNN):
    """Keras SimpleRNN (tanh or relu) on nn.RNN, batch first."""

    def __init__(self, input_size, hidden_size, nonlinearity, bias, return_sequences, return_state, go_backwards):
        super().__init__(input_size, hidden_size, nonlinearity=nonlinearity, bias=bias, batch_first=True)
        self.keras = (return_sequences, return_state, go_backwards)
        if bias:
            one_bias(self)

    def forward(self, x, initial_state=None):
        return_sequences, return_state, go_backwards = self.keras
        hx = None if initial_state is None else initial_state[0][None]
        seq, h = super().forward(x.flip(1) if go_backwards else x, hx)
        return keras_recurrent_result(seq, (h[0],), return_sequences, return_state)


class KerasRNN(nn.Module):
    """A Keras LSTM / GRU / SimpleRNN step by step, with Keras' own weights (kernel (in, gates * units),
    recurrent_kernel, bias; gate order as Keras) and its masking."""

    _ACT = {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "relu": torch.relu, "linear": lambda v: v,
            "hard_sigmoid": F.hardsigmoid, "softsign": F.softsign, "elu": F.elu, "selu": F.selu}

    def __init__(self, kind, input_size, units, bias, activation, recurrent_activation, reset_after,
                 return_sequences, return_state, go_backwards, zero_output_for_mask):
        super().__init__()
        gates = {"lstm": 4, "gru": 3, "simple": 1}[kind]
        self.kind, self.units, self.reset_after = kind, units, reset_after
        self.kernel = nn.Parameter(torch.zeros(input_size, gates * units))
        self.recurrent_kernel = nn.Parameter(torch.zeros(units, gates * units))
        bias_shape = (2, gates * units) if kind == "gru" and reset_after else (gates * units,)
        self.bias = nn.Parameter(torch.zeros(bias_shape)) if bias else None
        self.act, self.recurrent_act = self._ACT[activation], self._ACT[recurrent_activation]
        self.keras = (return_sequences, return_state, go_backwards, zero_output_for_mask)

    def step(self, x, states):
        h = states[0]
        if self.kind == "simple":
            z = x @ self.kernel + h @ self.recurrent_kernel
            h = self.act(z if self.bias is None else z + self.bias)
            return h, [h]
        if self.kind == "lstm":
            z = x @ self.kernel + h @ self.recurrent_kernel
            i, f, c, o = (z if self.bias is None else z + self.bias).chunk(4, dim=-1)
            c = self.recurrent_act(f) * states[1] + self.recurrent_act(i) * self.act(c)
            h = self.recurrent_act(o) * self.act(c)
            return h, [h, c]
        # GRU: reset_after applies the reset gate after the recurrent matmul (and has a recurrent bias)
        bias_x, bias_h = (None, None) if self.bias is None else (self.bias[0], self.bias[1]) if self.reset_after else (self.bias, None)
        xz = x @ self.kernel if bias_x is None else x @ self.kernel + bias_x
        x_z, x_r, x_h = xz.chunk(3, dim=-1)
        k_z, k_r, k_h = self.recurrent_kernel.chunk(3, dim=-1)
        if self.reset_after:
            hz = h @ self.recurrent_kernel if bias_h is None else h @ self.recurrent_kernel + bias_h
            h_z, h_r, h_h = hz.chunk(3, dim=-1)
            z, r = self.recurrent_act(x_z + h_z), self.recurrent_act(x_r + h_r)
            hh = self.act(x_h + r * h_h)
        else:
            z, r = self.recurrent_act(x_z + h @ k_z), self.recurrent_act(x_r + h @ k_r)
            hh = self.act(x_h + (r * h) @ k_h)
        h = z * h + (1 - z) * hh
        return h, [h]

    def forward(self, x, mask=None, initial_state=None):
        return_sequences, return_state, go_backwards, zero_output_for_mask = self.keras
        if go_backwards:
            x = x.flip(1)
            mask = None if mask is None else mask.flip(1)
        zeros = x.new_zeros(x.shape[0], self.units)
        if initial_state is not None:  # Keras' order: LSTM h, c; GRU / SimpleRNN h
            states = list(initial_state)
        else:
            states = [zeros, zeros] if self.kind == "lstm" else [zeros]
        last, outputs = zeros, []  # Keras: a masked first step outputs zeros, whatever the initial state
        for t in range(x.shape[1]):
            out, new = self.step(x[:, t], states)
            if mask is not None:  # a masked step leaves the state as it was
                keep = mask[:, t, None]
                states = [torch.where(keep, n, s) for n, s in zip(new, states)]
                out = torch.where(keep, out, zeros if zero_output_for_mask else last)
            else:
                states = new
            last = out
            outputs.append(out)
        return keras_recurrent_result(torch.stack(outputs, 1), states, return_sequences, return_state)


class Bidirectional(nn.Module):
    """Keras Bidirectional: a forward and a backward (go_backwards) layer, the backward sequence turned back to
    the input's order, merged by ``merge_mode`` (concat, sum, mul, ave, or None: both returned). An
    initial_state is Keras': the forward layer's states, then the backward layer's (its first half, its second)."""

    def __init__(self, forward_layer, backward_layer, merge_mode, return_sequences, return_state):
        super().__init__()
        self.forward_layer, self.backward_layer = forward_layer, backward_layer
        self.keras = (merge_mode, return_sequences, return_state)

    def forward(self, x, mask=None, initial_state=None):
        merge_mode, return_sequences, return_state = self.keras
        half = None if initial_state is None else len(initial_state) // 2
        parts = (None, None) if initial_state is None else (initial_state[:half], initial_state[half:])

        def run(layer, state):
            args = (x,) if mask is None else (x, mask)
            return layer(*args) if state is None else layer(*args, initial_state=state)

        y, y_rev = run(self.forward_layer, parts[0]), run(self.backward_layer, parts[1])
        states = []
        if return_state:
            states = [*y[1:], *y_rev[1:]]
            y, y_rev = y[0], y_rev[0]
        if return_sequences:
            y_rev = y_rev.flip(1)
        if merge_mode == "concat":
            out = torch.cat([y, y_rev], dim=-1)
        elif merge_mode == "sum":
            out = y + y_rev
        elif merge_mode == "mul":
            out = y * y_rev
        elif merge_mode == "ave":
            out = (y + y_rev) / 2
        else:
            return (y, y_rev, *states)
        return (out, *states) if return_state else out


# -- not recurrent, kept here so runtime.py stays small -------------------------------------------------


def time_distributed(x, fn, per_step=False):
    """Keras TimeDistributed: ``fn`` on every timestep, the time axis folded into the batch. Keras calls its
    layer once per timestep: where that differs (a BatchNormalization in train(): per-step batch statistics,
    its running statistics updated once per step), ``per_step`` loops over time as Keras does."""
    if per_step:
        return torch.stack([fn(x[:, t]) for t in range(x.shape[1])], 1)
    y = fn(x.reshape(-1, *x.shape[2:]))
    return y.reshape(x.shape[0], x.shape[1], *y.shape[1:])


class KerasMultiHeadAttention(nn.Module):
    """Keras MultiHeadAttention with its own weight shapes: query/key/value kernels (dim, heads, head_dim),
    the output kernel (heads, value_dim, out). Masked scores get a large negative logit, as Keras does; ``dropout``
    acts on the attention probabilities in train() only, as Keras' does."""

    def __init__(self, query_dim, key_dim_in, value_dim_in, heads, key_dim, value_dim, out_dim, bias, causal, dropout=0.0):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        shapes = {"query": (query_dim, heads, key_dim), "key": (key_dim_in, heads, key_dim),
                  "value": (value_dim_in, heads, value_dim)}
        for name, shape in shapes.items():
            setattr(self, f"{name}_kernel", nn.Parameter(torch.zeros(shape)))
            setattr(self, f"{name}_bias", nn.Parameter(torch.zeros(shape[1:])) if bias else None)
        self.output_kernel = nn.Parameter(torch.zeros(heads, value_dim, out_dim))
        self.output_bias = nn.Parameter(torch.zeros(out_dim)) if bias else None
        self.key_dim, self.causal = key_dim, causal

    def project(self, x, name):
        y = torch.einsum("btd,dhk->bthk", x, getattr(self, f"{name}_kernel"))
        b = getattr(self, f"{name}_bias")
        return y if b is None else y + b

    def forward(self, query, value, key=None, attention_mask=None):
        # Keras multiplies by 1 / sqrt(key_dim) cast through a float32 tensor, in every dtype (1e-8 in float64)
        q = self.project(query, "query") * torch.tensor(1.0 / math.sqrt(self.key_dim), dtype=torch.float32).item()
        k = self.project(value if key is None else key, "key")
        v = self.project(value, "value")
        scores = torch.einsum("bshk,bthk->bhts", k, q)
        mask = None if attention_mask is None else attention_mask.bool()[:, None]
        if self.causal:
            tril = torch.ones(scores.shape[-2:], dtype=torch.bool, device=scores.device).tril()
            mask = tril if mask is None else mask & tril
        if mask is not None:
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        out = torch.einsum("bhts,bshk->bthk", self.dropout(torch.softmax(scores, dim=-1)), v)
        out = torch.einsum("bthk,hko->bto", out, self.output_kernel)
        return out if self.output_bias is None else out + self.output_bias

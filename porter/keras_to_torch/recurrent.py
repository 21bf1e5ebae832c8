"""Translators for Keras' recurrent layers (SimpleRNN, LSTM, GRU, Bidirectional) and Masking.

torch's own nn.LSTM / nn.GRU / nn.RNN where they compute what Keras does (runtime_rnn.KerasLSTM...); the
porter-written step loop KerasRNN where they cannot: a Keras mask reaches the layer (Keras skips masked
timesteps, torch's modules cannot), GRU(reset_after=False), activations torch's modules fix otherwise.
An ``initial_state`` argument (an encoder-decoder's decoder started from the encoder's return_state outputs)
is passed on in Keras' order.
"""

from __future__ import annotations

import numpy as np

from porter.keras_to_torch.layers import TRANSFORMS, Emit, Inputs, Weight, _check, _weights, translator


def _gru_rows(a):  # Keras' gate blocks z, r, h -> torch's r, z, n (along the first axis)
    z, r, h = np.split(a, 3, axis=0)
    return np.concatenate([r, z, h], axis=0)


TRANSFORMS.update({
    "gru_dense": lambda a: _gru_rows(np.transpose(a)),
    "gru_bias_ih": lambda a: _gru_rows(a[0]),  # Keras' reset_after bias: (2, 3 * units), input row first
    "gru_bias_hh": lambda a: _gru_rows(a[1]),
})

_LOOP_ACTIVATIONS = {"tanh", "sigmoid", "relu", "linear", "hard_sigmoid", "softsign", "elu", "selu"}


def _native(kind, cfg, masked) -> bool:
    """Whether torch's own module computes this layer exactly."""
    act, rec = cfg.get("activation", "tanh"), cfg.get("recurrent_activation", "sigmoid")
    if masked:
        return False
    if kind == "simple":
        return act in ("tanh", "relu")
    if kind == "gru" and not cfg.get("reset_after", True):
        return False
    return act == "tanh" and rec == "sigmoid"


def recurrent_module(call, layer, cfg, attr: str, in_features: int, masked: bool):
    """(constructor source, weights, helpers) of one Keras RNN layer, its torch keys under ``attr``."""
    kind = {"LSTM": "lstm", "GRU": "gru", "SimpleRNN": "simple"}[type(layer).__name__]
    _check(call, not cfg.get("stateful"), "stateful=True")
    _check(call, not cfg.get("dropout") and not cfg.get("recurrent_dropout"),
           "dropout or recurrent_dropout (Keras' per-step masks have no torch counterpart)")
    for key in ("activation", "recurrent_activation"):
        _check(call, cfg.get(key, "tanh") in _LOOP_ACTIVATIONS, f"{key}={cfg.get(key)!r}")
    w = _weights(layer)
    units, bias = int(cfg["units"]), bool(cfg.get("use_bias", True))
    flags = (f"return_sequences={bool(cfg.get('return_sequences'))}, return_state={bool(cfg.get('return_state'))}, "
             f"go_backwards={bool(cfg.get('go_backwards'))}")
    key = lambda name: f"{call.var}.{attr}{name}"  # noqa: E731
    weight = lambda name, var, transform: Weight(key(name), var.path, transform, bool(var.trainable))  # noqa: E731
    if not _native(kind, cfg, masked):
        reset_after = bool(cfg.get("reset_after", True)) if kind == "gru" else False
        zero = bool(getattr(layer, "zero_output_for_mask", False))
        module = (f"KerasRNN({kind!r}, {in_features}, {units}, bias={bias}, activation={cfg.get('activation', 'tanh')!r}, "
                  f"recurrent_activation={cfg.get('recurrent_activation', 'sigmoid')!r}, reset_after={reset_after}, "
                  f"{flags}, zero_output_for_mask={zero})")
        weights = [weight("kernel", w["kernel"], "same"), weight("recurrent_kernel", w["recurrent_kernel"], "same")]
        if bias:
            weights.append(weight("bias", w["bias"], "same"))
        return module, weights, {"KerasRNN"}
    dense = "gru_dense" if kind == "gru" else "dense"
    weights = [weight("weight_ih_l0", w["kernel"], dense), weight("weight_hh_l0", w["recurrent_kernel"], dense)]
    if bias and kind == "gru":  # reset_after: Keras' input and recurrent biases are torch's two
        weights += [weight("bias_ih_l0", w["bias"], "gru_bias_ih"), weight("bias_hh_l0", w["bias"], "gru_bias_hh")]
    elif bias:  # one Keras bias: torch's second is a frozen zero, so a step moves the sum as Keras moves its bias
        gates = 4 if kind == "lstm" else 1
        weights += [weight("bias_ih_l0", w["bias"], "same"),
                    Weight(key("bias_hh_l0"), f"{w['bias'].path} (torch's second bias: zero)", "same", False,
                           np.zeros(gates * units, np.float32))]
    if kind == "simple":
        cls = f"KerasSimpleRNN({in_features}, {units}, nonlinearity={cfg.get('activation', 'tanh')!r}, bias={bias}, {flags})"
        return cls, weights, {"KerasSimpleRNN"}
    name = "KerasLSTM" if kind == "lstm" else "KerasGRU"
    return f"{name}({in_features}, {units}, bias={bias}, {flags})", weights, {name}


def _outputs(cfg, kind_states: int) -> int:
    return 1 + (kind_states if cfg.get("return_state") else 0)


_STATES = {"LSTM": 2, "GRU": 1, "SimpleRNN": 1}


def initial_state(call, x: Inputs, count: int) -> str:
    """The call's ``initial_state`` argument as model.py passes it (``, initial_state=[h, c]``; "" without one):
    its tensors in Keras' order (LSTM: h then c; Bidirectional: the forward layer's, then the backward's), each
    (batch, units). ``count``: how many states the layer takes."""
    node = call.node
    args = list(node.arguments.args) if node is not None else []
    kwargs = dict(node.arguments.kwargs) if node is not None else {}
    given = kwargs.get("initial_state", args[1] if len(args) > 1 else None)
    if given is None:
        _check(call, x.data() == [0], "inputs besides its sequence, its mask and an initial_state")
        return ""
    states = list(given) if isinstance(given, (list, tuple)) else [given]
    index = {id(t): i for i, t in enumerate(node.input_tensors)}
    _check(call, all(id(s) in index for s in states), "an initial_state that is not a tensor of the model")
    picks = [index[id(s)] for s in states]
    _check(call, 0 not in picks and set(x.data()) == {0, *picks},
           "inputs besides its sequence, its mask and an initial_state")
    _check(call, len(states) == count, f"{len(states)} initial states ({count} expected)")
    _check(call, all(len(x.shapes[i]) == 2 for i in picks), "an initial state that is not (batch, units)")
    return f", initial_state=[{', '.join(x.get(i, 'cl') for i in picks)}]"


def sequence_mask(call, x: Inputs, states: str) -> str | None:
    """The variable of the mask Keras hands the layer (None: none). Keras 3 fills a layer's mask argument from
    its input only when the call has one tensor argument: with an initial_state as well (a decoder after an
    Embedding(mask_zero=True)) the sequence's mask does not reach the layer, which then runs over every step
    (its output still carries the mask on), unless the call passes mask= itself."""
    kwargs = dict(call.node.arguments.kwargs) if call.node is not None else {}
    if states and call.in_masks and call.in_masks[0] == -1 and kwargs.get("mask") is None:
        return None
    return x.mask(0)


@translator("LSTM", "GRU", "SimpleRNN")
def rnn(call, x: Inputs, cfg):
    states = initial_state(call, x, _STATES[call.cls])
    mask = sequence_mask(call, x, states)
    module, weights, helpers = recurrent_module(call, call.layer, cfg, "", int(x.shapes[0][-1]), mask is not None)
    args = x.get(0, "cl") + (f", {mask}" if mask else "") + states
    return Emit(module, f"self.{call.var}({args})", "cl", weights, helpers, outputs=_outputs(cfg, _STATES[call.cls]))


rnn.uses_mask = True


@translator("Bidirectional")
def bidirectional(call, x: Inputs, cfg):
    layer = call.layer
    inner = type(layer.forward_layer).__name__
    _check(call, inner in _STATES and type(layer.backward_layer).__name__ == inner, f"a wrapped {inner}")
    states = initial_state(call, x, 2 * _STATES[inner])  # Keras: the first half the forward layer's, then backward's
    mask = sequence_mask(call, x, states)
    features, parts, weights, helpers = int(x.shapes[0][-1]), [], [], {"Bidirectional"}
    for attr, sub in (("forward_layer", layer.forward_layer), ("backward_layer", layer.backward_layer)):
        module, w, h = recurrent_module(call, sub, sub.get_config(), attr + ".", features, mask is not None)
        parts.append(module)
        weights += w
        helpers |= h
    merge, seqs, state = layer.merge_mode, bool(layer.return_sequences), bool(layer.return_state)
    _check(call, merge in ("concat", "sum", "mul", "ave", None), f"merge_mode={merge!r}")
    module = f"Bidirectional({parts[0]}, {parts[1]}, merge_mode={merge!r}, return_sequences={seqs}, return_state={state})"
    args = x.get(0, "cl") + (f", {mask}" if mask else "") + states
    # merge_mode=None: two outputs, the forward layer's and the backward layer's (in the input's order), then states
    outputs = (1 if merge else 2) + (2 * _STATES[inner] if state else 0)
    return Emit(module, f"self.{call.var}({args})", "cl", weights, helpers, outputs=outputs)


bidirectional.uses_mask = True


@translator("Masking")
def masking(call, x: Inputs, cfg):
    """Keras zeroes the masked timesteps (every feature equal to mask_value); the mask later layers read is
    written by Keras as ops of the graph (any(not_equal(x, mask_value), -1): ops.py)."""
    v, value = x.get(0, "cl"), float(cfg.get("mask_value", 0.0))
    return Emit(None, f"{v} * ({v} != {value!r}).any(-1, keepdim=True).to({v}.dtype)", "cl")

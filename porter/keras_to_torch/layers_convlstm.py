"""Translators for ConvLSTM1D / ConvLSTM2D / ConvLSTM3D (runtime_convlstm.KerasConvLSTM).

Keras' kernel (*k, in, 4 * filters) and recurrent_kernel (*k, filters, 4 * filters) become torch conv
weights (4 * filters, in, *k) with the gate order i, f, c, o kept along the output channels; the bias is
the input conv's. unit_forget_bias only changes Keras' initial bias, so it needs nothing here.
"""

from __future__ import annotations

from porter.keras_to_torch.layers import Emit, Inputs, _check, _conv_common, _w, _weights, translator

_ACTIVATIONS = {"tanh", "sigmoid", "relu", "linear", "hard_sigmoid", "softsign", "elu", "selu"}


@translator("ConvLSTM1D", "ConvLSTM2D", "ConvLSTM3D")
def conv_lstm(call, x: Inputs, cfg):
    _check(call, len(x.vars) == 1, "an initial_state input")
    _check(call, not cfg.get("stateful"), "stateful=True")
    _check(call, not cfg.get("dropout") and not cfg.get("recurrent_dropout"),
           "dropout or recurrent_dropout (Keras' per-step masks have no torch counterpart)")
    for key in ("activation", "recurrent_activation"):
        _check(call, cfg.get(key) in _ACTIVATIONS, f"{key}={cfg.get(key)!r}")
    _check(call, cfg["padding"] in ("valid", "same"), f"padding={cfg['padding']!r}")
    rank = len(x.shapes[0]) - 1  # (batch, time, *spatial, channels): a conv input once time is taken out
    kernel, stride, dilation = _conv_common(call, cfg, rank)  # refuses data_format='channels_first'
    w = _weights(call.layer)
    channels, filters, bias = int(x.shapes[0][-1]), int(cfg["filters"]), bool(cfg.get("use_bias", True))
    conv = f"nn.Conv{rank - 2}d"
    module = (f"KerasConvLSTM({conv}({channels}, {4 * filters}, kernel_size={kernel}, stride={stride}, "
              f"dilation={dilation}, bias={bias}), {conv}({filters}, {4 * filters}, kernel_size={kernel}, bias=False), "
              f"padding={cfg['padding']!r}, activation={cfg['activation']!r}, "
              f"recurrent_activation={cfg['recurrent_activation']!r}, "
              f"return_sequences={bool(cfg.get('return_sequences'))}, return_state={bool(cfg.get('return_state'))}, "
              f"go_backwards={bool(cfg.get('go_backwards'))})")
    weights = [_w(call, "input_conv.weight", w["kernel"], "conv"),  # (*k, in, 4f) -> (4f, in, *k)
               _w(call, "recurrent_conv.weight", w["recurrent_kernel"], "conv")]
    if bias:
        weights.append(_w(call, "input_conv.bias", w["bias"], "same"))
    outputs = 3 if cfg.get("return_state") else 1
    return Emit(module, f"self.{call.var}({x.get(0, 'cl')})", "cl", weights, {"KerasConvLSTM"}, outputs=outputs)

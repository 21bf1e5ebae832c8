"""The ConvLSTM class a generated model.py carries (copied in as source where the model uses it)."""

import torch
import torch.nn.functional as F
from torch import nn

from porter.keras_to_torch.runtime import tf_same_pad  # copied into model.py beside it (codegen._NEEDS)


class KerasConvLSTM(nn.Module):
    """Keras ConvLSTM1D/2D/3D: an LSTM whose input and recurrent transformations are convolutions.
    ``input_conv`` holds Keras' kernel and bias (its strides, dilation and padding), ``recurrent_conv`` the
    recurrent_kernel (stride 1, padding 'same'); both give the gates i, f, c, o along their output channels, in
    Keras' order. Padding 'same' is TensorFlow's (tf_same_pad: the extra element at the end). Tensors are in
    Keras' order: (batch, time, *spatial, channels) in, (batch, [time,] *spatial, filters) out, then the
    states h and c where return_state; go_backwards reads the time axis backwards (the sequence returned is
    in that order, as Keras returns it)."""

    _ACT = {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "relu": torch.relu, "linear": lambda v: v,
            "hard_sigmoid": F.hardsigmoid, "softsign": F.softsign, "elu": F.elu, "selu": F.selu}

    def __init__(self, input_conv, recurrent_conv, padding, activation, recurrent_activation,
                 return_sequences, return_state, go_backwards):
        super().__init__()
        self.input_conv, self.recurrent_conv = input_conv, recurrent_conv
        self.same = padding == "same"
        self.act, self.recurrent_act = self._ACT[activation], self._ACT[recurrent_activation]
        self.keras = (return_sequences, return_state, go_backwards)

    def forward(self, x):
        return_sequences, return_state, go_backwards = self.keras
        x = x.movedim(-1, 2)  # (batch, time, channels, *spatial): one torch conv input per step
        if go_backwards:
            x = x.flip(1)
        conv, rconv = self.input_conv, self.recurrent_conv
        ones = (1,) * len(conv.kernel_size)
        h = c = None
        outputs = []
        for t in range(x.shape[1]):
            xt = x[:, t]
            z = conv(tf_same_pad(xt, conv.kernel_size, conv.stride, conv.dilation) if self.same else xt)
            if h is None:  # Keras' initial states: zeros of the output's shape
                h = c = z.new_zeros(z.shape[0], z.shape[1] // 4, *z.shape[2:])
            z = z + rconv(tf_same_pad(h, rconv.kernel_size, ones, ones))
            i, f, g, o = z.chunk(4, dim=1)
            c = self.recurrent_act(f) * c + self.recurrent_act(i) * self.act(g)
            h = self.recurrent_act(o) * self.act(c)
            outputs.append(h)
        out = torch.stack(outputs, 1).movedim(2, -1) if return_sequences else h.movedim(1, -1)
        return (out, h.movedim(1, -1), c.movedim(1, -1)) if return_state else out

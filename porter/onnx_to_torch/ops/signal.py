"""Signal processing: the window functions, MelWeightMatrix, DFT and STFT (torch.fft, in float64).

The windows are torch's own (torch.hann_window etc. compute the same cosine sums), taken in float64
and cast to the requested type, as the ONNX reference does.
"""

from __future__ import annotations

import torch

from porter.onnx_to_torch import runtime
from porter.onnx_to_torch.context import emit, scalar
from porter.onnx_to_torch.registry import register
from porter.onnx_to_torch.tensors import torch_dtype

_OUTPUT_TYPE = {"output_datatype": lambda t: torch_dtype(t) is not None}


def _window(fn, size, output_datatype, periodic, **extra):
    window = emit(fn, scalar(size), periodic=bool(periodic), dtype=torch.float64, **extra)
    return window.to(torch_dtype(output_datatype))


@register("HannWindow", allowed=_OUTPUT_TYPE)
def HannWindow(size, *, output_datatype=1, periodic=1):
    return _window(torch.hann_window, size, output_datatype, periodic)


@register("HammingWindow", allowed=_OUTPUT_TYPE)
def HammingWindow(size, *, output_datatype=1, periodic=1):
    # ONNX's coefficients are 25/46 and 21/46, not torch's default 0.54 and 0.46.
    return _window(torch.hamming_window, size, output_datatype, periodic, alpha=25 / 46, beta=21 / 46)


@register("BlackmanWindow", allowed=_OUTPUT_TYPE)
def BlackmanWindow(size, *, output_datatype=1, periodic=1):
    return _window(torch.blackman_window, size, output_datatype, periodic)


@register("MelWeightMatrix", allowed=_OUTPUT_TYPE)
def MelWeightMatrix(num_mel_bins, dft_length, sample_rate, lower_edge_hertz, upper_edge_hertz, *,
                    output_datatype=1):
    matrix = emit(runtime.mel_weight_matrix, scalar(num_mel_bins), scalar(dft_length), scalar(sample_rate),
                  scalar(lower_edge_hertz), scalar(upper_edge_hertz))
    return matrix.to(torch_dtype(output_datatype))


def _dft(input, dft_length, axis, inverse, onesided):
    return emit(runtime.onnx_dft, input, scalar(dft_length), axis, bool(inverse), bool(onesided))


@register("DFT", since=20)
def DFT(input, dft_length=None, axis=None, *, inverse=0, onesided=0):
    return _dft(input, dft_length, -2 if axis is None else scalar(axis), inverse, onesided)


@register("DFT", until=19)
def DFT_17(input, dft_length=None, *, axis=1, inverse=0, onesided=0):
    return _dft(input, dft_length, axis, inverse, onesided)


@register("STFT")
def STFT(signal, frame_step, window=None, frame_length=None, *, onesided=1):
    return emit(runtime.onnx_stft, signal, scalar(frame_step), window, scalar(frame_length), bool(onesided))

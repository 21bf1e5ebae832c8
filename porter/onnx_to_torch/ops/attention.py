"""Fused ops from the transformer era: Attention and LinearAttention."""

from __future__ import annotations

from porter.errors import UnsupportedModelError
from porter.onnx_to_torch import runtime
from porter.onnx_to_torch.context import emit
from porter.onnx_to_torch.registry import register
from porter.onnx_to_torch.tensors import torch_dtype


@register("Attention", allowed={"qk_matmul_output_mode": (0, 1, 2, 3),
                                "softmax_precision": lambda t: torch_dtype(t) is not None})
def Attention(Q, K, V, attn_mask=None, past_key=None, past_value=None, nonpad_kv_seqlen=None, *,
              is_causal=0, kv_num_heads=None, q_num_heads=None, qk_matmul_output_mode=0, scale=None,
              softcap=0.0, softmax_precision=None):
    softmax_dtype = torch_dtype(softmax_precision) if softmax_precision is not None else None
    out = emit(runtime.onnx_attention, Q, K, V, attn_mask, past_key, past_value, nonpad_kv_seqlen, scale,
               bool(is_causal), q_num_heads, kv_num_heads, softcap, qk_matmul_output_mode, softmax_dtype)
    return tuple(out[i] for i in range(4))


@register("LinearAttention", allowed={"update_rule": ("linear", "gated", "delta", "gated_delta")})
def LinearAttention(query, key, value, past_state=None, decay=None, beta=None, *, chunk_size=64,
                    kv_num_heads, q_num_heads, scale=0.0, update_rule="gated_delta"):
    # chunk_size only tunes a chunk-parallel kernel; the token-by-token recurrence gives the same result.
    gated, delta = update_rule in ("gated", "gated_delta"), update_rule in ("delta", "gated_delta")
    if (decay is None) == gated or (beta is None) == delta:
        raise UnsupportedModelError(f"LinearAttention update_rule={update_rule!r} needs "
                                    f"{'a' if gated else 'no'} decay and {'a' if delta else 'no'} beta input")
    out = emit(runtime.linear_attention, query, key, value, past_state, decay, beta, q_num_heads, kv_num_heads,
               scale, update_rule)
    return out[0], out[1]

"""Fused ops from the transformer era: Attention and RotaryEmbedding."""

from __future__ import annotations

from porter.onnx_to_torch import runtime
from porter.onnx_to_torch.context import emit
from porter.onnx_to_torch.registry import register


@register("Attention")
def Attention(Q, K, V, attn_mask=None, past_key=None, past_value=None, nonpad_kv_seqlen=None, *,
              is_causal=0, kv_num_heads=None, q_num_heads=None, qk_matmul_output_mode=0, scale=None,
              softcap=0.0, softmax_precision=None):
    out = emit(runtime.onnx_attention, Q, K, V, attn_mask, past_key, past_value, nonpad_kv_seqlen, scale,
               bool(is_causal), q_num_heads, kv_num_heads, softcap, qk_matmul_output_mode)
    return tuple(out[i] for i in range(4))

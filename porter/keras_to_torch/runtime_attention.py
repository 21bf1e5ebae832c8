"""The attention classes a generated model.py carries (copied in as source where the model uses them).

Each holds Keras' own weights in Keras' shapes (keys named as Keras names them) and computes as Keras does:
KerasEinsumDense is EinsumDense (torch.einsum with Keras' equation, kernel and bias); KerasAttention is
Attention ('dot' / 'concat' scores) and AdditiveAttention ('additive'); KerasGroupedQueryAttention is
GroupedQueryAttention, built from KerasEinsumDense projections as Keras builds it.
"""

import math

import torch
from torch import nn


class KerasEinsumDense(nn.Module):
    """Keras EinsumDense: torch.einsum(equation, x, kernel) + bias, kernel and bias in Keras' shapes."""

    def __init__(self, equation, kernel_shape, bias_shape=None):
        super().__init__()
        self.equation = equation
        self.kernel = nn.Parameter(torch.zeros(kernel_shape))
        self.bias = nn.Parameter(torch.zeros(bias_shape)) if bias_shape is not None else None

    def forward(self, x):
        y = torch.einsum(self.equation, x, self.kernel)
        return y if self.bias is None else y + self.bias


class KerasAttention(nn.Module):
    """Keras Attention (score_mode 'dot': q @ k^T, or 'concat': sum(tanh(q + k))) and AdditiveAttention
    ('additive': sum(scale * tanh(q + k))): softmax over the keys, then @ value. Keras lowers masked scores
    by 1e9 (causal: a query sees the keys up to its own position); dropout acts on the attention weights in
    train() only, and the weights returned are those after it, as Keras returns them."""

    def __init__(self, score_mode, scale_shape=None, causal=False, dropout=0.0, return_scores=False):
        super().__init__()
        self.score_mode, self.causal, self.return_scores = score_mode, causal, return_scores
        self.scale = None if scale_shape is None else nn.Parameter(torch.ones(scale_shape))
        self.concat_score_weight = nn.Parameter(torch.ones(())) if score_mode == "concat" else None
        self.dropout = nn.Dropout(dropout)

    def scores(self, query, key):
        if self.score_mode == "dot":
            scores = query @ key.transpose(-2, -1)
            return scores if self.scale is None else scores * self.scale
        pairs = query.unsqueeze(-2) + key.unsqueeze(-3)  # (batch, Tq, Tv, dim)
        if self.score_mode == "concat":
            return self.concat_score_weight * torch.tanh(pairs if self.scale is None else self.scale * pairs).sum(-1)
        return (torch.tanh(pairs) if self.scale is None else self.scale * torch.tanh(pairs)).sum(-1)  # additive

    def forward(self, query, value, key=None):
        scores = self.scores(query, value if key is None else key)
        if self.causal:
            keep = torch.ones(scores.shape[-2:], dtype=torch.bool, device=scores.device).tril()
            scores = torch.where(keep, scores, scores - 1e9)
        weights = self.dropout(torch.softmax(scores, dim=-1))
        out = weights @ value
        return (out, weights) if self.return_scores else out


class KerasGroupedQueryAttention(nn.Module):
    """Keras GroupedQueryAttention: num_query_heads query heads share num_key_value_heads key/value heads (each
    repeated num_query_heads // num_key_value_heads times); the projections are Keras' EinsumDense layers with
    its kernels (query/key/value (dim, heads, head_dim), attention_output (heads, head_dim, dim)). Masked
    scores (attention_mask, causal, sliding window |i - j| < w) get a large negative logit, as Keras does."""

    def __init__(self, query_dim, key_dim, value_dim, query_heads, kv_heads, head_dim, bias, causal=False,
                 sliding_window=None, gate=False, dropout=0.0, return_scores=False):
        super().__init__()

        def dense(equation, kernel_shape, bias_shape):
            return KerasEinsumDense(equation, kernel_shape, bias_shape if bias else None)

        self.query = dense("bqm,muh->bquh", (query_dim, query_heads, head_dim), (query_heads, head_dim))
        self.key = dense("bkm,mvh->bkvh", (key_dim, kv_heads, head_dim), (kv_heads, head_dim))
        self.value = dense("bkm,mvh->bkvh", (value_dim, kv_heads, head_dim), (kv_heads, head_dim))
        self.gate = dense("bqm,muh->bquh", (query_dim, query_heads, head_dim), (query_heads, head_dim)) if gate else None
        self.attention_output = dense("bquh,uhm->bqm", (query_heads, head_dim, query_dim), (query_dim,))
        self.dropout = nn.Dropout(dropout)
        self.repeats, self.head_dim = query_heads // kv_heads, head_dim
        self.causal, self.sliding_window, self.return_scores = causal, sliding_window, return_scores

    def forward(self, query, value, key=None, attention_mask=None):
        # Keras multiplies by 1 / sqrt(head_dim) cast through a float32 tensor, in every dtype (1e-8 in float64)
        q = self.query(query) * torch.tensor(1.0 / math.sqrt(self.head_dim), dtype=torch.float32).item()
        k = self.key(value if key is None else key).repeat_interleave(self.repeats, dim=2)
        v = self.value(value).repeat_interleave(self.repeats, dim=2)
        scores = torch.einsum("bquh,bkuh->buqk", q, k)
        mask = None if attention_mask is None else attention_mask.bool()[:, None]
        rows = torch.arange(scores.shape[-2], device=scores.device)[:, None]
        cols = torch.arange(scores.shape[-1], device=scores.device)[None, :]
        if self.causal:
            mask = rows >= cols if mask is None else mask & (rows >= cols)
        if self.sliding_window is not None:
            band = (rows - cols).abs() < self.sliding_window
            mask = band if mask is None else mask & band
        if mask is not None:
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        probs = torch.softmax(scores, dim=-1)
        out = torch.einsum("buqk,bkuh->bquh", self.dropout(probs), v)
        if self.gate is not None:
            out = out * torch.sigmoid(self.gate(query))
        out = self.attention_output(out)
        return (out, probs) if self.return_scores else out

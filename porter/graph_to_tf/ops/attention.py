"""scaled_dot_product_attention, kept whole (see decompositions.py): softmax(q k^T * scale + mask) v, a fully
masked query row giving zeros as torch's does."""

from __future__ import annotations

import math

import tensorflow as tf
import torch

from porter.graph_to_tf.context import dim, rank
from porter.graph_to_tf.registry import register

aten = torch.ops.aten


def _sdpa_check(node):
    dropout = node.args[4] if len(node.args) > 4 else node.kwargs.get("dropout_p", 0.0)
    return None if not dropout else "dropout in attention (a training-mode export) is not converted"


@register(aten.scaled_dot_product_attention.default, check=_sdpa_check)
def scaled_dot_product_attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    depth = q.shape[-1]
    scale = scale if scale is not None else 1.0 / math.sqrt(depth)
    if enable_gqa and k.shape[-3] != q.shape[-3]:
        repeats = q.shape[-3] // k.shape[-3]
        k, v = (tf.repeat(t, repeats, axis=rank(t) - 3) for t in (k, v))
    scores = tf.matmul(q * tf.cast(math.sqrt(scale), q.dtype), k * tf.cast(math.sqrt(scale), k.dtype), transpose_b=True)
    if is_causal:
        rows, cols = dim(q, -2), dim(k, -2)
        causal = tf.linalg.band_part(tf.ones(tf.stack([rows, cols]) if not isinstance(rows, int) or not isinstance(cols, int)
                                             else [rows, cols], tf.bool), -1, 0)
        scores = tf.where(causal, scores, tf.constant(float("-inf"), scores.dtype))
    if attn_mask is not None:
        if attn_mask.dtype == tf.bool:
            scores = tf.where(attn_mask, scores, tf.constant(float("-inf"), scores.dtype))
        else:
            scores = scores + tf.cast(attn_mask, scores.dtype)
    probs = tf.nn.softmax(scores, axis=-1)
    if is_causal or attn_mask is not None:
        # a query whose every key is masked (a padded row under a sliding window) attends to nothing: torch's
        # softmax gives such a row zeros (its _safe_softmax), a plain softmax NaN
        dead = tf.equal(tf.reduce_max(scores, axis=-1, keepdims=True), tf.constant(float("-inf"), scores.dtype))
        probs = tf.where(dead, tf.zeros_like(probs), probs)
    return tf.matmul(probs, v)

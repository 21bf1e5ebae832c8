"""TfIdfVectorizer over integer token ids (string pools have no torch form)."""

from __future__ import annotations

from porter.onnx_to_torch import runtime
from porter.onnx_to_torch.context import emit
from porter.onnx_to_torch.registry import register


@register("TfIdfVectorizer", allowed={"pool_strings": lambda v: not v, "mode": ("TF", "IDF", "TFIDF")})
def TfIdfVectorizer(X, *, max_gram_length, max_skip_count, min_gram_length, mode, ngram_counts, ngram_indexes,
                    pool_int64s=None, pool_strings=None, weights=None):
    return emit(runtime.tfidf_vectorizer, X, list(pool_int64s or []), list(ngram_counts), list(ngram_indexes),
                min_gram_length, max_gram_length, max_skip_count, mode, list(weights or []))

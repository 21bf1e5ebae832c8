"""Realistic BERT inputs: token ids inside the vocabulary, ragged lengths with padded masks, segments."""

from __future__ import annotations

import numpy as np

DEMO_SENTENCES = [
    "porter moves trained models between PyTorch and TensorFlow.",
    "Every conversion is verified by running both models side by side.",
    "A short one.",
    "The quick brown fox jumps over the lazy dog while the cat watches from the warm windowsill.",
]


def random_batch(config: dict, batch: int, seq: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    pad = config.get("pad_token_id") or 0
    vocab = config["vocab_size"]
    low = pad + 1 if pad + 1 < vocab else 0
    ids = rng.integers(low, vocab, size=(batch, seq), dtype=np.int64)
    # the first row is full; the others are shorter, padded with pad_token_id and masked out
    lengths = [seq] + list(rng.integers(max(1, seq // 3), seq + 1, size=batch - 1))
    mask = (np.arange(seq)[None, :] < np.asarray(lengths)[:, None]).astype(np.int64)
    ids = np.where(mask == 1, ids, pad)
    types = np.zeros_like(ids)
    if config.get("type_vocab_size", 1) > 1:
        for row, length in enumerate(lengths):  # a sentence pair: second segment has type 1
            types[row, length // 2 : length] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def tokenized(folder, sentences=DEMO_SENTENCES) -> list[dict[str, np.ndarray]] | None:
    """Real sentences through the checkpoint's own tokenizer, as two batches of different shapes."""
    from pathlib import Path

    from porter.process.frameworks import transformers

    if not any((Path(folder) / f).is_file() for f in ("tokenizer.json", "vocab.txt", "vocab.json")):
        return None
    try:
        tok = transformers().AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception:  # no tokenizer files beside the weights: fall back to generated ids
        return None
    feeds = []
    for chunk in (sentences, sentences[:2]):
        enc = tok(list(chunk), padding=True, return_tensors="np")
        feed = {k: np.asarray(v, dtype=np.int64) for k, v in enc.items()}
        feed.setdefault("token_type_ids", np.zeros_like(feed["input_ids"]))
        feeds.append(feed)
    return feeds

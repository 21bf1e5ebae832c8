"""Which shapes latency is timed at: the served one first (batch 1 at the model's typical length),
then the largest input set equivalence ran. Verification shapes are small (5 and 41 tokens); a
gate on those alone would say little about the model as it is served."""

from __future__ import annotations

import numpy as np

TYPICAL_LENGTH = 128  # tokens; clipped to the position table


def latency_shapes(ref, info, feeds: list[dict], notes: list) -> list[tuple[str, str, dict]]:
    """[(label, role, reference feed)]: ("served", batch 1 at the typical length) and ("largest", the
    largest equivalence feed); one entry when they coincide."""
    from porter.verifiers.equivalence import shape_label

    largest = max(feeds, key=lambda f: sum(np.size(v) for v in f.values()))
    served = _served(ref, info, largest, notes)
    if served is None or _shapes(served) == _shapes(largest):
        return [(shape_label(largest), "served" if served is not None else "largest", largest)]
    return [(shape_label(served), "served", served), (shape_label(largest), "largest", largest)]


def typical_length(config: dict | None) -> int:
    """TYPICAL_LENGTH, inside the position table (2 rows kept spare: RoBERTa's positions start after the pad id)."""
    positions = (config or {}).get("max_position_embeddings")
    if isinstance(positions, int) and positions > 0:
        return max(1, min(TYPICAL_LENGTH, positions - 2))
    return TYPICAL_LENGTH


def _served(ref, info, largest: dict, notes: list) -> dict | None:
    """Batch 1 at the typical length for a text model with a dynamic sequence; batch 1 of the
    largest feed otherwise; None where the inputs have no common batch axis."""
    from porter.verifiers.inputs import generate, specs_of

    specs = specs_of(ref, info)
    text = bool(specs) and all(np.dtype(d).kind in "iu" and len(s) == 2 and s[1] is None for d, s in specs.values())
    if text:
        config = info.config if info is not None else getattr(getattr(ref, "artifact", None), "config", None)
        length = typical_length(config if isinstance(config, dict) else None)
        try:
            return generate(ref, info, shapes=[(1, length)]).feeds[0]
        except Exception as exc:  # noqa: BLE001 - fall back to the largest feed's first row
            notes.append(f"latency: no generated 1x{length} input ({type(exc).__name__}: {exc}); batch 1 of the largest set timed instead")
    batch = {np.shape(v)[0] for v in largest.values() if np.ndim(v)}
    if len(batch) != 1:
        return None
    return {k: np.asarray(v)[:1] for k, v in largest.items()}


def _shapes(feed: dict) -> dict:
    return {k: np.shape(v) for k, v in feed.items()}

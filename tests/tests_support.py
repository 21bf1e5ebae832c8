"""Small helpers shared by the tests."""

from pathlib import Path

import numpy as np

FIXTURES = Path(__file__).parent / "fixtures"


def hidden_state_error(a, b, attention_mask) -> float:
    """Max abs difference over the positions that are not padding."""
    valid = np.asarray(attention_mask).astype(bool)
    return float(np.abs(np.asarray(a) - np.asarray(b))[valid].max())

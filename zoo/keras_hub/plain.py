"""keras-hub's own classes where porter has a registered subclass of them (fixes.py): their variables read
under the subclass's names, and their config as the subclass would hold it, so the family's rules and config
inverse serve both.

- ViTBackbone / DeiTBackbone: keras-hub numbers the blocks from 1, the rules (and porter's older subclass) from 0
  (transformer_block_{n} is read as transformer_block_{n-1}); the config is the same. Both directions: the
  direct route builds keras-hub's own class (fixes.PLAIN_WHEN) and fills it through these names.
- XLMRobertaBackbone (keras-hub -> HF only): keras-hub counts positions from 0 over every token, has no token-type row and
  no pooler. transformers' XLMRobertaModel counts positions from padding_idx + 1 over non-pad tokens:
  for right-padded text without the pad id inside it, token i gets position padding_idx + 1 + i, so
  keras-hub's table written ``padding_idx + 1`` rows down reproduces keras-hub (rows 0..padding_idx,
  which such text never reads, are zeros). The token-type row is zeros (type_vocab_size=1) and the
  pooler is a zero placeholder: transformers' XLMRobertaModel always has one, keras-hub none, so
  pooler_output has no keras-hub counterpart and is not compared (the written config says so:
  ``porter_pooler_placeholder``).

Light: no framework is imported at module level.
"""

from __future__ import annotations

import re

import numpy as np

# XLM-RoBERTa's pad id (keras-hub's XLMRobertaTokenizer and transformers' config agree)
XLMR_PAD = 1
_BLOCK = re.compile(r"(?<=/)transformer_block_(\d+)/")


def plain_class(backbone) -> str | None:
    """The keras-hub class name when ``backbone`` is exactly keras-hub's own ViT / DeiT / XLM-R backbone."""
    from porter.zoo.keras_hub.entry import _keras_hub

    models = _keras_hub().models
    return next((n for n in ("ViTBackbone", "DeiTBackbone", "XLMRobertaBackbone") if type(backbone) is getattr(models, n, None)), None)


class _Computed:
    """A tensor standing where porter's subclass has a variable (shape and numpy(), as the plan reads it)."""

    def __init__(self, array):
        self.array, self.shape = array, array.shape

    def numpy(self):
        return self.array


def porter_names(model, variables: dict) -> dict:
    """``keras_variables`` of a plain keras-hub model, under the names porter's subclass gives them."""
    kind = plain_class(getattr(model, "backbone", model))
    if kind in ("ViTBackbone", "DeiTBackbone"):
        return {_BLOCK.sub(lambda m: f"transformer_block_{int(m.group(1)) - 1}/", k): v for k, v in variables.items()}
    if kind != "XLMRobertaBackbone":
        return variables
    out = {k: v for k, v in variables.items() if not k.startswith("embeddings/")}
    out["token_embedding/embeddings"] = variables["embeddings/token_embedding/embeddings"]
    table = np.asarray(variables["embeddings/position_embedding/embeddings"].numpy())
    hidden, dtype = table.shape[1], table.dtype
    out["position_embedding/embeddings"] = _Computed(np.concatenate([np.zeros((XLMR_PAD + 1, hidden), dtype), table]))
    out["token_type_embedding/embeddings"] = _Computed(np.zeros((1, hidden), dtype))
    out["pooled_dense/kernel"] = _Computed(np.zeros((hidden, hidden), dtype))
    out["pooled_dense/bias"] = _Computed(np.zeros((hidden,), dtype))
    return out


def porter_config(backbone, cfg: dict) -> tuple[dict, type]:
    """(the backbone's keras-hub config as porter's subclass would hold it, the class whose defaults apply)."""
    from porter.zoo.keras_hub.fixes import BACKBONES

    kind = plain_class(backbone)
    patch = cfg.get("patch_size")
    if kind in ("ViTBackbone", "DeiTBackbone") and isinstance(patch, (list, tuple)) and len(set(patch)) == 1:
        cfg = dict(cfg, patch_size=int(patch[0]))  # keras-hub's get_config writes (p, p); transformers one int
    if kind != "XLMRobertaBackbone":  # ViT/DeiT: porter's subclass takes keras-hub's arguments as they are
        return cfg, type(backbone)
    # keras-hub's RobertaBackbone fixes layer_norm_epsilon at 1e-5
    cfg = dict(cfg, max_sequence_length=cfg["max_sequence_length"] + XLMR_PAD + 1, pad_token_id=XLMR_PAD,
               type_vocab_size=1, layer_norm_epsilon=1e-5)
    return cfg, BACKBONES[kind]

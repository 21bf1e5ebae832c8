"""One block at a time of a keras-hub causal LM / decoder backbone, in float32, for block-wise verification
(verifiers/blockwise.py).

The pieces come from a float32 backbone of the same family with one decoder block, built without memory for
its variables; each piece is filled with the written weights upcast (bf16 -> float32 is exact) just before it
runs: one decoder block (and, at the ends, the token embedding) is held in float32 beside the written model. The glue between the layers is the backbone's own, per family:

- the embedding: token_embedding(ids); GPT-2 adds position_embedding; Gemma scales by sqrt(hidden_dim);
- a block: transformer_layer_i(x, decoder_padding_mask=mask) (Gemma: padding_mask=mask); each computes its
  causal mask and rotary positions itself;
- the head: layer_norm(x) (the backbone's sequence output), then token_embedding(x, reverse=True) (the logits
  of every keras-hub CausalLM here).
"""

from __future__ import annotations

import numpy as np


class Float32Blocks:
    """A float32 skeleton of the written model's backbone with one decoder block, built by the family's own
    constructor (porter's corrections in fixes.py included) without memory for its variables; each piece gets
    memory only when the written model's weights are copied into it, upcast (bf16 -> float32 is exact).
    keras-hub's own layer configs cannot rebuild a block (LlamaTransformerDecoder.get_config reads an attribute
    it never sets, and leaves the rope scaling out), so the backbone is built from porter's translated config."""

    def __init__(self, model, config: dict):
        from keras.src.backend.common.stateless_scope import StatelessScope

        from porter.zoo.keras_hub.entry import _keras_hub, backbone_of, family, head_class
        from porter.zoo.keras_hub.fixes import BACKBONES

        fam, head = family(config), head_class(config)
        self.written, self.family = backbone_of(model), fam.model_type
        self.has_head = self.written is not model
        one = dict(config, **({"n_layer": 1} if fam.model_type == "gpt2" else {"num_hidden_layers": 1}))
        kwargs = dict(fam.translate(one, head), dtype="float32")
        cls = BACKBONES.get(fam.backbone) or getattr(_keras_hub().models, fam.backbone)
        with StatelessScope(initialize_variables=False):
            self.skeleton = cls(**kwargs)

    def num_layers(self) -> int:
        return len(self.written.transformer_layers)

    def _filled(self, written_layer, skeleton_layer):
        """``skeleton_layer`` holding ``written_layer``'s weights in float32."""
        from porter.zoo.keras_hub.entry import initialize_variable

        source, target = written_layer.weights, skeleton_layer.weights
        if [tuple(v.shape) for v in source] != [tuple(v.shape) for v in target]:
            raise RuntimeError(f"{written_layer.name}: the written layer's weights are not a float32 block's "
                               f"({[tuple(v.shape) for v in source]} vs {[tuple(v.shape) for v in target]})")
        for src, dst in zip(source, target):
            initialize_variable(dst, np.asarray(src.numpy()).astype(np.float32))
        return skeleton_layer

    def embed(self, ids: np.ndarray) -> np.ndarray:
        """The input of the first block, in float32. The token rows are gathered from the written table itself (what
        the embedding layer does, exact in any dtype), so the table is not copied to float32 here."""
        from keras import ops

        x = ops.cast(ops.take(self.written.token_embedding.embeddings, np.asarray(ids, dtype=np.int32), axis=0), "float32")
        if self.family == "gpt2":
            x = x + self._filled(self.written.position_embedding, self.skeleton.position_embedding)(x)
        elif self.family == "gemma":
            x = x * ops.cast(ops.sqrt(self.skeleton.hidden_dim), "float32")
        return _numpy(x)

    def block(self, index: int, hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Decoder block ``index`` in float32 on ``hidden`` (batch, seq, dim), padded keys masked by ``mask``."""
        layer = self._filled(self.written.transformer_layers[index], self.skeleton.transformer_layers[0])
        mask = np.asarray(mask, dtype=np.int32)
        kwargs = {"padding_mask": mask} if self.family == "gemma" else {"decoder_padding_mask": mask}
        return _numpy(layer(np.asarray(hidden, dtype=np.float32), **kwargs))

    def head(self, hidden: np.ndarray) -> dict:
        """The final norm on the last block's output (last_hidden_state), and the logits where the model has a head."""
        norm = self._filled(self.written.layer_norm, self.skeleton.layer_norm)(np.asarray(hidden, dtype=np.float32))
        out = {"last_hidden_state": _numpy(norm)}
        if self.has_head:
            table = self._filled(self.written.token_embedding, self.skeleton.token_embedding)
            out["logits"] = _numpy(table(norm, reverse=True))
        return out

    def close(self) -> None:
        """Keras initializes every deferred variable still pending at its next symbolic call: the skeleton's unused
        ones are taken off that list, and the skeleton dropped."""
        from keras.src.backend.common import global_state

        mine = {id(v) for v in self.skeleton.weights}
        pending = global_state.get_global_attribute("uninitialized_variables")
        if pending:
            pending[:] = [v for v in pending if id(v) not in mine]
        self.skeleton = None


def _numpy(x) -> np.ndarray:
    from keras import ops

    return np.asarray(ops.convert_to_numpy(x), dtype=np.float32)

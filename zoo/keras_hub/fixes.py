"""porter's own corrections to keras-hub classes, where keras-hub 0.30 does not reproduce transformers.

Each is a registered subclass (``porter>Name``) of the keras-hub class, so ``model.keras`` still
holds a ``keras_hub`` backbone by isinstance, reloads with ``safe_mode=True`` once porter's zoo is
imported, and a keras-hub task model (``Qwen3CausalLM``) takes it as its backbone.
"""

from __future__ import annotations

from porter.zoo.keras_hub.entry import _keras_hub

hub = _keras_hub()
keras = __import__("keras")


@keras.saving.register_keras_serializable(package="porter")
class Qwen3Backbone(hub.models.Qwen3Backbone):
    """keras-hub 0.30's Qwen3Decoder builds its attention without ``layer_norm_epsilon``, so the
    per-head q/k RMSNorms use 1e-5 whatever the config says; transformers uses rms_norm_eps
    (1e-6 in Qwen3's configs), a 1e-3 difference in hidden states. The norms read their epsilon
    when called: set it from the backbone's own argument."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for layer in self.transformer_layers:
            attention = layer._self_attention_layer
            attention._query_dense_layer_norm.epsilon = self.layer_norm_epsilon
            attention._key_dense_layer_norm.epsilon = self.layer_norm_epsilon


@keras.saving.register_keras_serializable(package="porter")
class LlamaBackbone(hub.models.LlamaBackbone):
    """keras-hub 0.30's LlamaBackbone.get_config leaves out ``tie_word_embeddings``: a tied Llama's
    model.keras reloads untied and its weights no longer fit. Write it into the config."""

    def get_config(self):
        return {**super().get_config(), "tie_word_embeddings": self.tie_word_embeddings}


@keras.saving.register_keras_serializable(package="porter")
class ElectraBackbone(hub.models.ElectraBackbone):
    """keras-hub 0.30's ElectraBackbone hard-codes the tanh-approximate GELU in its feed-forward;
    transformers' ELECTRA configs say hidden_act="gelu" (exact erf GELU), a ~1e-3 difference in
    hidden states. ``feedforward_activation`` (the transformers name: "gelu" exact, "gelu_new" tanh)
    is set on each layer's intermediate Dense, which reads it when called, and kept in the config."""

    def __init__(self, *args, feedforward_activation="gelu_new", **kwargs):
        super().__init__(*args, **kwargs)
        self.feedforward_activation = feedforward_activation
        if feedforward_activation == "gelu":
            exact = keras.activations.get("gelu")  # approximate=False
            for layer in self.transformer_layers:
                layer.activation = exact
                layer._feedforward_intermediate_dense.activation = exact

    def get_config(self):
        return {**super().get_config(), "feedforward_activation": self.feedforward_activation}


def _blocks_from_zero(backbone) -> None:
    """keras-hub 0.30 names ViT's and DeiT's blocks from 1 (transformer_block_1 is transformers'
    layer.0), and porter's rules bind one layer index on both sides: the blocks are renamed from 0.
    Names only: the weights, the graph and the saved file's layout are keras-hub's."""
    encoder = next(layer for layer in backbone._layers if layer.name.endswith("encoder"))
    blocks = [layer for layer in encoder._layers if layer.name.startswith("transformer_block_")]
    for i, block in enumerate(blocks):
        block.name = f"transformer_block_{i}"


@keras.saving.register_keras_serializable(package="porter")
class ViTBackbone(hub.models.ViTBackbone):
    """keras-hub's ViTBackbone with its blocks numbered from 0 (_blocks_from_zero)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _blocks_from_zero(self)


@keras.saving.register_keras_serializable(package="porter")
class DeiTBackbone(hub.models.DeiTBackbone):
    """keras-hub's DeiTBackbone with its blocks numbered from 0 (_blocks_from_zero)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _blocks_from_zero(self)


BACKBONES = {"Qwen3Backbone": Qwen3Backbone, "LlamaBackbone": LlamaBackbone, "ElectraBackbone": ElectraBackbone,
             "ViTBackbone": ViTBackbone, "DeiTBackbone": DeiTBackbone}

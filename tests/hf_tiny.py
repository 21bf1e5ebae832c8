"""Tiny transformers models outside the zoo, saved with save_pretrained, with informative norms
(LayerNorm/BatchNorm weights, biases and running statistics moved away from their init)."""

from __future__ import annotations

TINY = {
    "resnet": ("ResNetModel", dict(num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic")),
    "resnet-cls": ("ResNetForImageClassification", dict(model_type="resnet", num_channels=3, embedding_size=8,
                                                        hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic", num_labels=5)),
    "convnext": ("ConvNextModel", dict(num_channels=3, num_stages=2, hidden_sizes=[8, 16], depths=[1, 1], image_size=32)),
    "mobilenet_v2": ("MobileNetV2Model", dict(num_channels=3, image_size=32, depth_multiplier=0.35)),
    "vit": ("ViTModel", dict(image_size=32, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=2,
                             num_attention_heads=4, intermediate_size=37)),
    "swin": ("SwinModel", dict(image_size=32, patch_size=4, num_channels=3, embed_dim=16, depths=[1, 1], num_heads=[2, 4],
                               window_size=4)),
    "distilbert": ("DistilBertModel", dict(vocab_size=99, dim=32, n_layers=2, n_heads=4, hidden_dim=37, max_position_embeddings=64)),
    "distilbert-cls": ("DistilBertForSequenceClassification", dict(model_type="distilbert", vocab_size=99, dim=32, n_layers=2,
                                                                   n_heads=4, hidden_dim=37, max_position_embeddings=64, num_labels=3)),
    "deberta-v2": ("DebertaV2Model", dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                          intermediate_size=37, max_position_embeddings=64, relative_attention=True,
                                          position_buckets=16, pos_att_type=["p2c", "c2p"], position_biased_input=False)),
    "whisper-encoder": ("WhisperEncoder", dict(model_type="whisper", vocab_size=99, num_mel_bins=8, d_model=32,
                                               encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=37,
                                               decoder_layers=1, decoder_attention_heads=4, decoder_ffn_dim=37,
                                               max_source_positions=16, max_target_positions=32)),
    "t5-encoder": ("T5EncoderModel", dict(model_type="t5", vocab_size=99, d_model=32, d_kv=8, d_ff=37, num_layers=2,
                                          num_heads=4, relative_attention_num_buckets=8)),
    "clip-vision": ("CLIPVisionModel", dict(model_type="clip_vision_model", image_size=32, patch_size=8, hidden_size=32,
                                            num_hidden_layers=2, num_attention_heads=4, intermediate_size=37)),
    "bert-cls": ("BertForSequenceClassification", dict(model_type="bert", vocab_size=99, hidden_size=32, num_hidden_layers=2,
                                                       num_attention_heads=4, intermediate_size=37, max_position_embeddings=64,
                                                       num_labels=3)),
    "gpt2": ("GPT2Model", dict(vocab_size=99, n_embd=32, n_layer=2, n_head=4, n_positions=64)),
}


def make_tiny(path, kind: str, seed: int = 0, **overrides):
    """save_pretrained of the tiny ``kind`` (a key of TINY) into ``path``; returns path."""
    import importlib

    import torch
    import transformers
    from transformers.models.auto.configuration_auto import model_type_to_module_name

    cls_name, kwargs = TINY[kind]
    kwargs = dict(kwargs, **overrides)
    model_type = kwargs.pop("model_type", kind)
    config = transformers.CONFIG_MAPPING[model_type](**kwargs)
    cls = getattr(transformers, cls_name, None)
    if cls is None:
        module = model_type_to_module_name(model_type)
        cls = getattr(importlib.import_module(f"transformers.models.{module}.modeling_{module}"), cls_name)
    torch.manual_seed(seed)
    model = cls(config).eval()
    perturb_norms(model)
    model.save_pretrained(path)
    return path


def perturb_norms(model, scale: float = 0.2) -> None:
    """Norm layers away from identity (weights 1, biases 0, running mean 0 / var 1), and every other
    bias non-zero, so that a dropped or misplaced norm shows in the outputs."""
    import torch

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                module.running_mean.add_(torch.randn_like(module.running_mean) * scale)
                module.running_var.mul_(torch.rand_like(module.running_var) + 0.5)
            for name, p in module.named_parameters(recurse=False):
                if "norm" in type(module).__name__.lower() or "Norm" in name or "ln" in name.lower():
                    p.add_(torch.randn_like(p) * scale)
                elif name == "bias":
                    p.add_(torch.randn_like(p) * 0.02)

"""Tiny Hugging Face architectures through porter.graph_to_tf (torch.export -> TF), compared with torch.

For each architecture: a tiny config (hidden ~32, 2 layers, 4 heads, small vocab / image / audio sizes),
random weights made informative (norm weights and biases perturbed, BatchNorm running statistics
calibrated on an input then perturbed), ``model.eval()``; exported with torch.export with one shared
Dim per meaning (batch, sequence, height/width, audio length), falling back to Dim.AUTO and then to
static shapes where torch.export refuses; converted with ``porter.graph_to_tf.convert_exported``;
compared with the eager torch model at the export shape and two others inside the exported ranges.
Pass: max abs <= 1e-5 on hidden states and <= 1e-4 on logits at all three shapes.

    python benchmarks/graph_architectures.py [--only phi3,gpt_neox,...] [--save DIR] [--diverge]

Columns: ops = distinct ATen ops in the decomposed program; dims = dynamic dims kept per input
(``input_ids:0,1``); peak RSS = the process's largest resident set while that architecture ran.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

HIDDEN_ATOL, LOGITS_ATOL = 1e-5, 1e-4
VOCAB = 99

DEC = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
           intermediate_size=37, max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=2)
ENC = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
           max_position_embeddings=64)
VIT = dict(image_size=32, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
           intermediate_size=37)
W2V = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
           conv_dim=(16, 16), conv_stride=(4, 4), conv_kernel=(8, 8), num_conv_pos_embeddings=16,
           num_conv_pos_embedding_groups=2, feat_extract_norm="layer", do_stable_layer_norm=True)
SEQ2SEQ = dict(vocab_size=VOCAB, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
               decoder_attention_heads=4, encoder_ffn_dim=37, decoder_ffn_dim=37, max_position_embeddings=64,
               pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=0)


@dataclass
class Arch:
    name: str
    cls: str
    model_type: str
    config: dict
    kind: str = "text"  # text | decoder | vision | audio | features | seq2seq
    extra: dict = field(default_factory=dict)  # non-tensor forward kwargs (use_cache=False)
    mask: bool = True  # feed an attention_mask
    ids_high: int = VOCAB
    attn: str = "sdpa"
    multiple: int | None = None  # spatial sizes as multiples of this (Dim * multiple), for windowed models
    static_spatial: bool = False  # keep height/width static (only batch dynamic)


def _dec(name, cls, model_type, **over):
    return Arch(name, cls, model_type, {**DEC, **over}, "decoder", {"use_cache": False})


ARCHS = [
    _dec("phi", "PhiModel", "phi", partial_rotary_factor=0.5),
    _dec("phi3", "Phi3Model", "phi3"),
    _dec("gpt_neox", "GPTNeoXModel", "gpt_neox", rotary_pct=0.5),
    _dec("falcon", "FalconModel", "falcon", num_kv_heads=2, new_decoder_architecture=True),
    _dec("bloom", "BloomModel", "bloom", n_layer=2, n_head=4),
    _dec("gptj", "GPTJModel", "gptj", n_embd=32, n_layer=2, n_head=4, n_positions=64, rotary_dim=4, n_inner=37),
    _dec("codegen", "CodeGenModel", "codegen", n_embd=32, n_layer=2, n_head=4, n_positions=64, n_ctx=64,
         rotary_dim=4, n_inner=37),
    _dec("stablelm", "StableLmModel", "stablelm", partial_rotary_factor=0.5),
    _dec("starcoder2", "Starcoder2Model", "starcoder2", sliding_window=None),
    _dec("olmo2", "Olmo2Model", "olmo2"),
    _dec("gemma2", "Gemma2Model", "gemma2", head_dim=8, sliding_window=4, query_pre_attn_scalar=8),
    _dec("gemma3", "Gemma3TextModel", "gemma3_text", head_dim=8, sliding_window=4, query_pre_attn_scalar=8,
         layer_types=["sliding_attention", "full_attention"]),
    _dec("granite", "GraniteModel", "granite", embedding_multiplier=2.0, residual_multiplier=0.5,
         attention_multiplier=0.2, logits_scaling=2.0),
    _dec("smollm3", "SmolLM3Model", "smollm3", no_rope_layer_interval=2),
    _dec("mixtral", "MixtralModel", "mixtral", num_local_experts=4, num_experts_per_tok=2, intermediate_size=32),
    _dec("qwen2_moe", "Qwen2MoeModel", "qwen2_moe", num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16,
         shared_expert_intermediate_size=24),
    _dec("olmoe", "OlmoeModel", "olmoe", num_experts=4, num_experts_per_tok=2, intermediate_size=32),
    _dec("opt", "OPTModel", "opt", ffn_dim=37, word_embed_proj_dim=32, pad_token_id=1, bos_token_id=2, eos_token_id=2),
    Arch("bert", "BertModel", "bert", ENC),
    Arch("bert-cls", "BertForSequenceClassification", "bert", {**ENC, "num_labels": 3}),
    Arch("roberta", "RobertaModel", "roberta", {**ENC, "pad_token_id": 1, "max_position_embeddings": 70}, ids_high=VOCAB),
    Arch("roberta-cls", "RobertaForSequenceClassification", "roberta",
         {**ENC, "pad_token_id": 1, "max_position_embeddings": 70, "num_labels": 3}),
    Arch("distilbert", "DistilBertModel", "distilbert",
         dict(vocab_size=VOCAB, dim=32, n_layers=2, n_heads=4, hidden_dim=37, max_position_embeddings=64)),
    Arch("albert", "AlbertModel", "albert", {**ENC, "embedding_size": 16, "num_hidden_groups": 1}),
    Arch("electra", "ElectraModel", "electra", {**ENC, "embedding_size": 16}),
    Arch("deberta-v2", "DebertaV2Model", "deberta-v2",
         {**ENC, "relative_attention": True, "position_buckets": 16, "pos_att_type": ["p2c", "c2p"],
          "position_biased_input": False}, attn="eager"),
    Arch("xlm-roberta", "XLMRobertaModel", "xlm-roberta", {**ENC, "pad_token_id": 1, "max_position_embeddings": 70}),
    Arch("mpnet", "MPNetModel", "mpnet", {**ENC, "pad_token_id": 1, "max_position_embeddings": 70,
                                          }),
    Arch("funnel", "FunnelModel", "funnel", dict(vocab_size=VOCAB, block_sizes=[1, 1], num_decoder_layers=1, d_model=32,
                                                 n_head=4, d_head=8, d_inner=37, max_position_embeddings=64),
         attn="eager"),
    Arch("mobilebert", "MobileBertModel", "mobilebert",
         {**ENC, "embedding_size": 16, "intra_bottleneck_size": 16, "true_hidden_size": 16,
          "num_feedforward_networks": 2, "normalization_type": "no_norm"}),
    Arch("canine", "CanineModel", "canine", dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                                 intermediate_size=37, max_position_embeddings=64, downsampling_rate=2,
                                                 num_hash_buckets=17, local_transformer_stride=4), attn="eager"),
    Arch("swin", "SwinModel", "swin", dict(image_size=32, patch_size=4, num_channels=3, embed_dim=16, depths=[1, 1],
                                           num_heads=[2, 4], window_size=4), "vision",
         static_spatial=True),
    Arch("segformer", "SegformerModel", "segformer",
         dict(num_channels=3, num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[16, 32],
              patch_sizes=[7, 3], strides=[4, 2], num_attention_heads=[1, 2], mlp_ratios=[2, 2]), "vision"),
    Arch("mobilevit", "MobileViTModel", "mobilevit",
         dict(image_size=32, patch_size=2, num_channels=3, hidden_sizes=[16, 24, 32], neck_hidden_sizes=[8, 8, 16, 16, 24, 24, 40],
              num_attention_heads=4, mlp_ratio=2.0, expand_ratio=2.0), "vision"),
    Arch("efficientnet", "EfficientNetModel", "efficientnet",
         dict(image_size=32, width_coefficient=0.25, depth_coefficient=0.25, hidden_dim=320,
              kernel_sizes=[3, 3, 5], in_channels=[32, 16, 24], out_channels=[16, 24, 40],
              depthwise_padding=[], strides=[1, 2, 2], num_block_repeats=[1, 1, 1], expand_ratios=[1, 6, 6]), "vision"),
    Arch("vit", "ViTModel", "vit", VIT, "vision"),
    Arch("deit", "DeiTModel", "deit", VIT, "vision"),
    Arch("convnext", "ConvNextModel", "convnext",
         dict(num_channels=3, num_stages=2, hidden_sizes=[8, 16], depths=[1, 1], image_size=32), "vision"),
    Arch("resnet", "ResNetModel", "resnet",
         dict(num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic"), "vision"),
    Arch("resnet-cls", "ResNetForImageClassification", "resnet",
         dict(num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="bottleneck",
              num_labels=5), "vision"),
    Arch("clip-vision", "CLIPVisionModel", "clip_vision_model", VIT, "vision"),
    Arch("clip-text", "CLIPTextModel", "clip_text_model",
         dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
              max_position_embeddings=64, pad_token_id=1, bos_token_id=0, eos_token_id=2)),
    Arch("siglip-vision", "SiglipVisionModel", "siglip_vision_model", VIT, "vision"),
    Arch("wav2vec2", "Wav2Vec2Model", "wav2vec2", W2V, "audio"),
    Arch("hubert", "HubertModel", "hubert", W2V, "audio"),
    Arch("whisper-encoder", "WhisperEncoder", "whisper",
         dict(vocab_size=VOCAB, num_mel_bins=8, d_model=32, encoder_layers=2, encoder_attention_heads=4,
              encoder_ffn_dim=37, decoder_layers=1, decoder_attention_heads=4, decoder_ffn_dim=37,
              max_source_positions=16, max_target_positions=32), "features"),
    Arch("t5", "T5Model", "t5", dict(vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
                                     relative_attention_num_buckets=8, decoder_start_token_id=0, pad_token_id=0),
         "seq2seq", {"use_cache": False}),
    Arch("bart", "BartModel", "bart", SEQ2SEQ, "seq2seq", {"use_cache": False}),
    Arch("marian", "MarianMTModel", "marian", {**SEQ2SEQ, "pad_token_id": 3, "decoder_start_token_id": 3},
         "seq2seq", {"use_cache": False}),
]
BY_NAME = {a.name: a for a in ARCHS}

# (batch, length) or (batch, height, width); the first is the export shape
SHAPES = {
    "text": [(2, 9), (1, 5), (3, 17), (1, 9), (3, 9)],
    "vision": [(2, 32, 32), (1, 64, 64), (3, 48, 48), (3, 64, 32), (1, 32, 32), (3, 36, 36), (3, 32, 32), (4, 32, 32)],
    "audio": [(2, 400), (1, 320), (3, 560), (1, 400), (3, 400)],
    "features": [(2, 32), (1, 32), (3, 32)],
}


def build(arch: Arch, seed: int = 0):
    import importlib

    import torch
    import transformers
    from transformers.models.auto.configuration_auto import model_type_to_module_name

    config = transformers.CONFIG_MAPPING[arch.model_type](**arch.config)
    cls = getattr(transformers, arch.cls, None)
    if cls is None:
        module = model_type_to_module_name(arch.model_type)
        cls = getattr(importlib.import_module(f"transformers.models.{module}.modeling_{module}"), arch.cls)
    torch.manual_seed(seed)
    try:
        model = cls._from_config(config, attn_implementation=arch.attn)
    except (ValueError, ImportError):
        model = cls._from_config(config, attn_implementation="eager")
    informative(model, feeds(arch, *_shapes(arch)[0]))
    return model.eval()


def informative(model, sample: dict, scale: float = 0.2) -> None:
    """Norms away from identity, every other bias non-zero, BatchNorm statistics calibrated on ``sample``
    (so deep conv stacks keep unit-scale activations) then perturbed."""
    import torch

    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        if bns:
            # conv stacks initialised at std 0.02 shrink activations to the BatchNorm eps: torch's own
            # fan-in init keeps them near unit scale before the statistics are calibrated
            for m in model.modules():
                if isinstance(m, torch.nn.Conv2d):
                    m.reset_parameters()
            for m in bns:
                m.reset_running_stats()
                m.momentum = None  # cumulative average over the calibration pass
            model.train()
            model(**sample)
            model.eval()
            for m in bns:
                # a near-dead channel (variance ~1e-20) would divide by sqrt(eps) and amplify rounding
                # 300x per layer: floor the variance so the model stays well conditioned
                m.running_var.clamp_(min=1e-2)
                # relative to each channel's spread: a near-constant channel must stay near its mean
                m.running_mean.add_(torch.randn_like(m.running_mean) * scale * (m.running_var + m.eps).sqrt())
                m.running_var.mul_(torch.rand_like(m.running_var) * 0.2 + 0.9)
        for module in model.modules():
            norm = "norm" in type(module).__name__.lower() or isinstance(module, torch.nn.modules.batchnorm._BatchNorm)
            for name, p in module.named_parameters(recurse=False):
                if norm or "norm" in name.lower() or name.startswith("ln"):
                    p.add_(torch.randn_like(p) * scale)
                elif name == "bias":
                    p.add_(torch.randn_like(p) * 0.02)


def _shapes(arch):
    return SHAPES["text" if arch.kind in ("text", "decoder", "seq2seq") else arch.kind]


def feeds(arch: Arch, *shape) -> dict:
    import torch

    g = torch.Generator().manual_seed(sum(s * 31 ** i for i, s in enumerate(shape)))
    if arch.kind == "vision":
        batch, h, w = shape
        return {"pixel_values": torch.randn(batch, 3, h, w, generator=g)}
    if arch.kind == "audio":
        return {"input_values": torch.randn(*shape, generator=g)}
    if arch.kind == "features":
        batch, frames = shape
        return {"input_features": torch.randn(batch, arch.config["num_mel_bins"], frames, generator=g)}
    batch, seq = shape
    high = arch.ids_high if arch.name != "canine" else 200
    out = {"input_ids": torch.randint(3, high, (batch, seq), generator=g)}
    if arch.mask:
        mask = torch.ones(batch, seq, dtype=torch.long)
        if batch > 1:
            mask[-1, seq - 2:] = 0  # right padding in one row
        out["attention_mask"] = mask
    if arch.kind == "seq2seq":
        out["decoder_input_ids"] = torch.randint(3, high, (batch, max(seq - 2, 2)), generator=g)
    return out


def dynamic_shapes(arch: Arch, sample: dict, mode: str):
    """One shared Dim per meaning (``mode='dims'``), Dim.AUTO for the same axes, or None (static)."""
    from torch.export import Dim

    if mode == "static":
        return None
    if mode == "auto":
        batch = seq = dseq = h = w = length = Dim.AUTO
    else:
        batch, seq, dseq = Dim("batch", max=1024), Dim("seq", min=2, max=64), Dim("dec_seq", min=2, max=64)
        h, w = Dim("height", min=16, max=256), Dim("width", min=16, max=256)
        if arch.multiple:
            h = Dim("height_blocks", min=1, max=256 // arch.multiple) * arch.multiple
            w = Dim("width_blocks", min=1, max=256 // arch.multiple) * arch.multiple
        length = Dim("length", min=64, max=16000)
    if arch.static_spatial:
        h = w = None
    axes = {"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq},
            "decoder_input_ids": {0: batch, 1: dseq}, "pixel_values": {0: batch, **({2: h, 3: w} if h is not None else {})},
            "input_values": {0: batch, 1: length}, "input_features": {0: batch}}
    return {k: axes[k] for k in sample} | {k: None for k in arch.extra}


def export(arch: Arch, model, sample: dict):
    """(ExportedProgram, mode) with the most dynamic mode torch.export accepts."""
    import torch

    errors = []
    for mode in ("dims", "auto", "static"):
        try:
            ep = torch.export.export(model, (), {**sample, **arch.extra}, strict=False,
                                     dynamic_shapes=dynamic_shapes(arch, sample, mode))
            return ep, mode, errors
        except Exception as error:  # noqa: BLE001 - the next mode is the fallback
            errors.append(f"{mode}: {type(error).__name__}: {str(error).splitlines()[0][:200]}")
    raise RuntimeError("export failed: " + " | ".join(errors))


class PeakRSS:
    """Largest resident set size seen while the block runs (sampled every 20 ms, in MiB)."""

    def __enter__(self):
        self.peak, self._stop = self._rss(), threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    def _sample(self):
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self._rss())

    @staticmethod
    def _rss() -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _leaves(output):
    import torch.utils._pytree as pytree

    return [x for x in pytree.tree_leaves(output) if hasattr(x, "shape")]


def compare(arch: Arch, model, ep, converted) -> tuple[float, list[str], list[str]]:
    """(max abs error over the shapes tried, the shapes tried, failures)."""
    import numpy as np
    import torch

    tried, failures, worst = [], [], 0.0
    check = ep.module()
    for shape in _shapes(arch):
        if len(tried) == 3:
            break
        sample = feeds(arch, *shape)
        try:
            with torch.no_grad():
                check(**sample, **arch.extra)  # inside the exported ranges and guards?
        except Exception:  # noqa: BLE001 - not a shape this program accepts
            continue
        with torch.no_grad():
            want = _leaves(model(**sample, **arch.extra))
        got = converted(**{k: v.numpy() for k, v in sample.items()})
        tried.append("x".join(map(str, shape)))
        for name, expected in zip(converted.output_names, want, strict=True):
            value = got[name]
            if value.shape != tuple(expected.shape):
                failures.append(f"{name} shape {value.shape} != {tuple(expected.shape)} at {tried[-1]}")
                worst = float("inf")
                continue
            error = float(np.abs(value.astype(np.float64) - expected.numpy().astype(np.float64)).max()) if value.size else 0.0
            error = error if np.isfinite(error) else float("inf")
            worst = max(worst, error)
            atol = LOGITS_ATOL if "logits" in name else HIDDEN_ATOL
            if not error <= atol:
                failures.append(f"{name} {error:.2e} at {tried[-1]}")
    if len(tried) < 3:
        failures.append(f"only {len(tried)} shape(s) inside the exported ranges")
    return worst, tried, failures


def _varying(converted) -> dict:
    """Per input the dynamic dims whose exported range holds more than one value."""
    import re

    out = {}
    for name, dims in converted.dynamic_dims.items():
        keep = []
        for i, text in dims.items():
            bounds = re.search(r"in \[(\d+), (\d+|int_oo|oo)\]", text)
            if not (bounds and bounds.group(1) == bounds.group(2)):
                keep.append(i)
        out[name] = keep
    return out


def run(arch: Arch, save: Path | None = None, diverge: bool = False) -> dict:
    import torch

    from porter.graph_to_tf import convert_exported, first_divergence
    from porter.graph_to_tf.decompositions import decompose
    from porter.graph_to_tf.registry import op_name

    row = {"arch": arch.name, "ops": "-", "max_abs": "-", "dims": "-", "seconds": 0.0, "rss": 0.0, "status": ""}
    t0 = time.perf_counter()
    with PeakRSS() as rss:
        try:
            model = build(arch)
            sample = feeds(arch, *_shapes(arch)[0])
            ep, mode, _ = export(arch, model, sample)
            program = decompose(ep)
            row["ops"] = len({op_name(n.target) for n in program.graph.nodes if n.op == "call_function"
                              and str(n.target).startswith("aten.")})
            converted = convert_exported(program, save / arch.name if save else None, decomposed=True)
            kept = [f"{name}:{','.join(map(str, sorted(d)))}" for name, d in _varying(converted).items() if d]
            row["dims"] = " ".join(kept) or "static"
            if mode != "dims":
                row["dims"] += f" ({mode})"
            worst, tried, failures = compare(arch, model, ep, converted)
            row["max_abs"] = f"{worst:.1e}"
            row["status"] = "ok" if not failures else "FAIL " + "; ".join(failures[:3])
            if failures and diverge:
                shape = _shapes(arch)[0]
                found = first_divergence(program, converted, {k: v.numpy() for k, v in feeds(arch, *shape).items()})
                row["status"] += f" [{found}]"
        except Exception as error:  # noqa: BLE001 - one row per architecture, whatever happened
            problems = getattr(error, "problems", None)
            message = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
            if problems:
                message += " :: " + "; ".join(problems)
            notes = getattr(error, "__notes__", None)
            if notes:
                message += " (" + "; ".join(notes) + ")"
            row["status"] = "ERROR " + message[:600]
            if os.environ.get("PORTER_BENCH_TRACEBACK"):
                traceback.print_exc()
        finally:
            torch._dynamo.reset()
    row["seconds"] = time.perf_counter() - t0
    row["rss"] = rss.peak
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="comma-separated architecture names (default: all)")
    parser.add_argument("--save", type=Path, help="also write each SavedModel under this folder")
    parser.add_argument("--diverge", action="store_true", help="name the first diverging ATen node of a failure")
    parser.add_argument("--list", action="store_true", help="list the architectures and exit")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(a.name for a in ARCHS))
        return 0
    names = args.only.split(",") if args.only else [a.name for a in ARCHS]
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        parser.error(f"unknown architecture(s): {', '.join(unknown)}")
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("torch").setLevel(logging.ERROR)
    import tensorflow as tf  # noqa: F401 - imported before the timings start

    rows = []
    header = f"{'architecture':<16} {'ops':>4} {'max abs':>8} {'dims kept':<44} {'s':>6} {'RSS MiB':>8}  status"
    print(header, flush=True)
    for name in names:
        row = run(BY_NAME[name], args.save, args.diverge)
        rows.append(row)
        print(f"{row['arch']:<16} {row['ops']:>4} {row['max_abs']:>8} {row['dims']:<44} {row['seconds']:>6.1f} "
              f"{row['rss']:>8.0f}  {row['status']}", flush=True)
    passed = sum(r["status"] == "ok" for r in rows)
    print(f"\n{passed}/{len(rows)} architectures pass (hidden <= {HIDDEN_ATOL:g}, logits <= {LOGITS_ATOL:g}, 3 shapes)")
    return 0 if passed == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())

"""The source reader for Hugging Face folders outside the zoo (graph and ONNX routes): config.json +
safetensors -> the transformers model the folder describes, with named inputs, realistic
example inputs, dynamic dims and the outputs as transformers names them.

transformers builds the model from its own classes only: local files, never remote code (a
config with ``auto_map`` is refused), weights from safetensors (``pytorch_model.bin`` only with
``weights_only``), and weights that do not fit the config are refused, naming the tensors.
"""

from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from porter.errors import PorterError
from porter.checks.hf_config import refuse_remote_code

TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
SHORT_SEQ, LONG_SEQ = 5, 41  # verification lengths; the long one is bounded by the model's positions
CHOICES = (2, 4)  # a multiple-choice head's answers per question, one per verification length
MAX_CHOICES = 64
BATCHES = (1, 3)
EXPORT_BATCH, EXPORT_SEQ = 2, 9  # the traced example: no dim at 0/1 (torch.export specialises those)
MAX_BATCH = 1024


@dataclass
class HFModel:
    """A transformers model read from a folder, and how to call it by name."""

    model: object  # torch.nn.Module (eval mode)
    config: object  # transformers PretrainedConfig
    architecture: str  # the class that was built
    input_names: list[str]
    output_names: list[str]
    specs: dict  # name -> (dtype, shape with None for dynamic dims)
    ranges: dict  # name -> {axis: (min, max)} for the dynamic dims
    feeds: list[dict]  # verification inputs: batch 1 and >= 3, a short and a long sequence
    notes: list[str] = field(default_factory=list)

    @property
    def input_text(self) -> str:
        """How the verification inputs were made, for the report."""
        if "input_ids" in self.specs:
            choices = f", {' and '.join(map(str, CHOICES))} choices" if len(self.specs["input_ids"][1]) == 3 else ""
            return (f"token ids inside the vocabulary of {getattr(self.config, 'vocab_size', None)}, right-padded "
                    f"attention masks; batch 1 and 3{choices}, sequence {SHORT_SEQ} and "
                    f"{min(LONG_SEQ, _max_positions(self.config))}")
        sizes = sorted({tuple(f[self.input_names[0]].shape) for f in self.feeds})
        return f"{self.input_names[0]} N(0, 1) at {', '.join('x'.join(map(str, s)) for s in sizes)}"


def route_reason(config: dict) -> str:
    return f"model_type {config.get('model_type')!r} has no direct-route family in porter's zoo"


# -- reading the folder -------------------------------------------------------------------------


def check_config(config: dict, where: Path) -> None:
    """What is refused before transformers is imported: remote code, an unknown model_type."""
    refuse_remote_code(config, f"{where}/config.json")
    import transformers

    model_type = config.get("model_type")
    if model_type not in transformers.CONFIG_MAPPING:
        raise PorterError(
            f"{where}/config.json: model_type {model_type!r} is not one that transformers {transformers.__version__} knows",
            hint="fix model_type, or export the model to a .pt2 (torch.export.save) and convert that")


def load(path: Path, attn_implementation: str | None = None):
    """(model in eval mode, its config, the class name) for an HF folder; every refusal is a PorterError."""
    from porter.readers.artifacts import read_config_json

    path = Path(path)
    config = read_config_json(path / "config.json")
    check_config(config, path)
    from porter.process.frameworks import torch
    from porter.checks.hf_config import check_hf_config

    check_hf_config(config, f"{path}/config.json")  # types and sizes named before transformers builds anything

    torch()  # quietened before transformers imports it
    cls, name = _model_class(config, path)
    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    safetensors = any(path.glob("*.safetensors")) or (path / "model.safetensors.index.json").is_file()
    try:
        model, info = cls.from_pretrained(
            str(path), local_files_only=True, trust_remote_code=False, use_safetensors=safetensors,
            output_loading_info=True, ignore_mismatched_sizes=True, **kwargs)
    except PorterError:
        raise
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise PorterError(f"transformers could not build {name} from {path}: {type(exc).__name__}: {first[:400]}") from None
    problems = [f"{k}: missing from the checkpoint" for k in sorted(info.get("missing_keys") or ())]
    problems += [f"{k}: in the checkpoint but not in {name}" for k in sorted(info.get("unexpected_keys") or ())]
    problems += [f"{m[0]}: checkpoint {tuple(m[1])} vs model {tuple(m[2])}" if isinstance(m, tuple) and len(m) == 3 else f"{m}: shape differs"
                 for m in sorted(info.get("mismatched_keys") or (), key=str)]
    problems += [str(e) for e in info.get("error_msgs") or ()]
    if problems:
        raise PorterError(f"the weights in {path} do not fit its config.json ({name})", problems=problems[:40],
                          hint="the checkpoint and config.json must come from the same save_pretrained")
    model.eval()
    if hasattr(model.config, "use_cache"):
        model.config.use_cache = False  # no past_key_values: the outputs are the forward's results only
    return model, model.config, name


def architecture_model_type(config: dict) -> str | None:
    """The model_type of the transformers class config.json's ``architectures`` names (None: none named, or
    not a transformers class)."""
    archs = config.get("architectures") if isinstance(config, dict) else None
    name = archs[0] if isinstance(archs, list) and archs and isinstance(archs[0], str) else None
    if name is None or not name.isidentifier():
        return None
    from porter.process.frameworks import torch

    torch()  # quietened before transformers imports it
    import transformers

    cls = getattr(transformers, name, None)
    return getattr(getattr(cls, "config_class", None), "model_type", None)


def _model_class(config: dict, path: Path):
    """The class in config.json's ``architectures`` (a task head), else transformers' AutoModel base."""
    import transformers

    archs = config.get("architectures") or []
    if not archs:
        auto_config = transformers.AutoConfig.for_model(**{k: v for k, v in config.items() if k != "transformers_version"})
        try:
            cls = transformers.AutoModel._model_mapping[type(auto_config)]
        except KeyError:
            raise PorterError(f"{path}/config.json: transformers has no base model for model_type {config.get('model_type')!r}",
                              hint="add the model class to config.json's architectures") from None
        return cls, cls.__name__
    name = str(archs[0])
    cls = getattr(transformers, name, None) if name.isidentifier() else None
    if cls is None:  # classes such as WhisperEncoder live in the model's own module only
        import importlib

        from transformers.models.auto.configuration_auto import model_type_to_module_name

        module_name = model_type_to_module_name(str(config.get("model_type")))
        try:
            module = importlib.import_module(f"transformers.models.{module_name}.modeling_{module_name}")
        except ImportError:
            module = None
        cls = getattr(module, name, None) if module is not None and name.isidentifier() else None
    if not (isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel)):
        raise PorterError(f"{path}/config.json: architectures names {name!r}, which is not a transformers model class",
                          hint="remove architectures to convert the base model, or name a transformers class")
    return cls, name


# -- naming inputs and outputs ------------------------------------------------------------------


def describe(model, config, name: str, seed: int = 0) -> HFModel:
    """Inputs (as transformers names them), their dynamic dims and ranges, the verification
    feeds, and the outputs (the ModelOutput's tensor fields, in order)."""
    params = inspect.signature(model.forward).parameters
    main = getattr(model, "main_input_name", "input_ids")
    notes: list[str] = []
    if main == "input_ids" and _multiple_choice(model):
        specs, ranges, feeds = _choices(config, params)
    elif main == "input_ids":
        specs, ranges, feeds = _text(config, params)
    elif main == "pixel_values":
        specs, ranges, feeds = _image(model, config, notes)
    elif main == "input_features":
        specs, ranges, feeds = _audio(config)
    else:
        raise PorterError(f"{name} takes {main!r}, an input porter cannot generate yet",
                          hint="export the model to a .pt2 (torch.export.save) and convert that")
    if getattr(config, "is_encoder_decoder", False) and "decoder_input_ids" in params:
        seq = _max_positions(config)
        specs["decoder_input_ids"] = ("int64", (None, None))
        ranges["decoder_input_ids"] = {0: (1, MAX_BATCH), 1: (2, seq)}
        rng = np.random.default_rng(seed + 1)
        for feed in feeds:
            b = next(iter(feed.values())).shape[0]
            feed["decoder_input_ids"] = rng.integers(0, _vocab(config), size=(b, 4 if b == 1 else 7)).astype(np.int64)
    names = list(specs)
    outputs = _output_names(model, _example(feeds, specs, ranges))
    return HFModel(model, config, name, names, outputs, specs, ranges, feeds, notes)


def _vocab(config) -> int:
    return int(getattr(config, "vocab_size", None) or 100)


def _max_positions(config) -> int:
    """The longest sequence the model takes (its position table), or LONG_SEQ when it has none."""
    for key in ("max_position_embeddings", "n_positions", "max_positions"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            # RoBERTa-style tables start at pad_token_id + 1
            offset = (getattr(config, "pad_token_id", None) or 0) + 1 if getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert") else 0
            return value - offset
    return 4096


def _text(config, params):
    names = ["input_ids"] + [n for n in ("attention_mask", "token_type_ids") if n in params]
    if "token_type_ids" in names and not (getattr(config, "type_vocab_size", 0) or 0) > 1:
        names.remove("token_type_ids")  # a single segment: nothing to vary
    longest = min(LONG_SEQ, _max_positions(config))
    specs = {n: ("int64", (None, None)) for n in names}
    ranges = {n: {0: (1, MAX_BATCH), 1: (2, _max_positions(config))} for n in names}
    rng = np.random.default_rng(0)
    feeds = []
    for batch in BATCHES:
        for seq in (SHORT_SEQ, longest):
            feeds.append(_text_feed(names, batch, seq, _vocab(config), getattr(config, "type_vocab_size", 0) or 0, rng))
    return specs, ranges, feeds


def _multiple_choice(model) -> bool:
    """A multiple-choice head (BertForMultipleChoice ...): transformers' own list of them."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_MULTIPLE_CHOICE_MAPPING_NAMES

    return type(model).__name__ in set(MODEL_FOR_MULTIPLE_CHOICE_MAPPING_NAMES.values())


def _choices(config, params):
    """A multiple-choice head's inputs: batch x choices x sequence (one row per question and answer, padded as
    a tokenizer pads each); its logits are batch x choices."""
    specs, ranges, feeds = _text(config, params)
    specs = {n: (dtype, (None, None, None)) for n, (dtype, _) in specs.items()}
    ranges = {n: {0: r[0], 1: (2, MAX_CHOICES), 2: r[1]} for n, r in ranges.items()}
    rng = np.random.default_rng(0)
    longest = min(LONG_SEQ, _max_positions(config))
    out = []
    for batch in BATCHES:
        for seq, choices in zip((SHORT_SEQ, longest), CHOICES):
            flat = _text_feed(list(specs), batch * choices, seq, _vocab(config), getattr(config, "type_vocab_size", 0) or 0, rng)
            out.append({n: a.reshape(batch, choices, seq) for n, a in flat.items()})
    return specs, ranges, out


def _text_feed(names, batch, seq, vocab, type_vocab, rng) -> dict:
    ids = rng.integers(0, vocab, size=(batch, seq)).astype(np.int64)
    # the first row is full; the others padded on the right to a random length, as a tokenizer pads
    lengths = [seq] + list(rng.integers(max(1, seq // 3), seq + 1, size=batch - 1))
    mask = (np.arange(seq)[None, :] < np.asarray(lengths)[:, None]).astype(np.int64)
    feed = {"input_ids": ids, "attention_mask": mask}
    if "token_type_ids" in names:
        feed["token_type_ids"] = (np.arange(seq)[None, :] >= np.asarray(lengths)[:, None] // 2).astype(np.int64) * min(1, type_vocab - 1)
    return {n: feed[n] for n in names}


def _image(model, config, notes):
    channels = int(getattr(config, "num_channels", 3) or 3)
    side = getattr(config, "image_size", None) or 64
    side = int(side[0] if isinstance(side, (list, tuple)) else side)
    other = side * 3 // 2 if side % 2 == 0 else side + 2
    dynamic_hw = _runs_at(model, channels, other) and _runs_at(model, channels, side)
    if not dynamic_hw:
        notes.append(f"pixel_values: height and width fixed at config.image_size {side} (the model takes no other size)")
    shape = (None, channels, None, None) if dynamic_hw else (None, channels, side, side)
    ranges = {0: (1, MAX_BATCH)}
    if dynamic_hw:
        ranges.update({2: (min(side, other), 4 * side), 3: (min(side, other), 4 * side)})
    rng = np.random.default_rng(0)
    # four batch sizes at config.image_size (what a written model with fixed height and width still
    # takes), and batch 1 and 3 at another size where the model takes any
    sizes = [(b, side) for b in (1, 2, 3, 5)] + ([(b, other) for b in BATCHES] if dynamic_hw else [])
    feeds = [{"pixel_values": rng.standard_normal((b, channels, s, s)).astype(np.float32)} for b, s in sizes]
    return {"pixel_values": ("float32", shape)}, {"pixel_values": ranges}, feeds


def _runs_at(model, channels: int, side: int) -> bool:
    """Whether the model computes on an image of another size (CNNs do; a ViT's position table does not)."""
    from porter.process.frameworks import torch

    torch = torch()
    try:
        with torch.no_grad():
            model(pixel_values=torch.randn(1, channels, side, side))
        return True
    except Exception:
        return False


def _audio(config):
    mels = int(getattr(config, "num_mel_bins", 80))
    frames = 2 * int(getattr(config, "max_source_positions", 1500))
    rng = np.random.default_rng(0)
    feeds = [{"input_features": rng.standard_normal((b, mels, frames)).astype(np.float32)} for b in (1, 2, 3, 5)]
    return {"input_features": ("float32", (None, mels, frames))}, {"input_features": {0: (1, MAX_BATCH)}}, feeds


def _example(feeds, specs, ranges) -> dict:
    """The traced example: batch 2, a mid-size sequence (sizes 0 and 1 get specialised by torch.export)."""
    longest = max(feeds, key=lambda f: sum(np.size(v) for v in f.values()))
    example = {}
    for name, arr in longest.items():
        index = [slice(None)] * arr.ndim
        arr = np.concatenate([arr, arr], axis=0)[:EXPORT_BATCH] if arr.shape[0] < EXPORT_BATCH else arr[:EXPORT_BATCH]
        if _sequence_axis(specs[name]) is not None:  # (batch, sequence) or (batch, choices, sequence)
            index[-1] = slice(0, min(arr.shape[-1], EXPORT_SEQ) if name != "decoder_input_ids" else min(arr.shape[-1], 6))
        example[name] = np.ascontiguousarray(arr[tuple(index)])
    if "attention_mask" in example:
        example["attention_mask"][...] = 1
        example["attention_mask"][-1, ..., -2:] = 0  # one padded row: the mask path is traced
    return example


def _sequence_axis(spec) -> int | None:
    """The dynamic sequence axis of a text input's (dtype, shape): the last of batch x sequence, or of a
    multiple-choice head's batch x choices x sequence; None for other inputs."""
    dtype, shape = spec
    if (len(shape) == 2 or (len(shape) == 3 and dtype == "int64")) and shape[-1] is None:
        return len(shape) - 1
    return None


def _output_names(model, example: dict) -> list[str]:
    from porter.process.frameworks import torch

    torch = torch()
    with torch.no_grad():
        out = model(**{k: torch.from_numpy(v) for k, v in example.items()}, return_dict=True)
    return [k for k, v in out.items() if isinstance(v, torch.Tensor)]


def run(model, feeds: dict, output_names) -> dict:
    """The model on numpy feeds: {output name: numpy array}."""
    from porter.process.frameworks import torch

    torch = torch()
    args = {k: torch.as_tensor(np.ascontiguousarray(v)) for k, v in feeds.items()}
    with torch.inference_mode():
        out = model(**args, return_dict=True)
    return {k: out[k].detach().cpu().numpy() for k in output_names if out.get(k) is not None}


# -- export ---------------------------------------------------------------------------------------


def exported(path, onnx_path: Path, release: bool = True) -> dict:
    """export_onnx as plain values (routes/onnx_pipeline.py EXPORTS, kind "hf"): {"names", "outputs", "specs",
    "feeds", "architecture", "input_text", "notes"}."""
    hf, export = export_onnx(Path(path), onnx_path, release)
    specs = {n: [dtype, list(shape)] for n, (dtype, shape) in export.input_specs.items()}  # as JSON gives them back
    return {"names": export.input_names, "outputs": export.output_names, "specs": specs, "feeds": hf.feeds,
            "architecture": hf.architecture, "input_text": hf.input_text, "notes": list(hf.notes)}


def export_onnx(path: Path, onnx_path: Path, release: bool = True):
    """The folder's model -> ONNX with dynamic batch and sequence (and image size where it allows).
    Returns (HFModel described on the loaded model, OnnxExport). ``release``: as to_onnx.torch_to_onnx's."""
    # eager attention exports as plain MatMuls (sdpa's decomposition reshapes through computed shapes)
    model, config, name = load(path, attn_implementation="eager")
    hf = describe(model, config, name)
    try:
        return hf, _export(model, hf, onnx_path, release)
    except PorterError as exc:
        if "pixel_values" not in hf.specs or hf.specs["pixel_values"][1][2] is not None:
            raise
        # the model computes with the image size as a Python number (e.g. "same" padding): it exports
        # only at one size, so height and width are fixed at config.image_size
        fix_image_size(hf, exc.message)
        return hf, _export(model, hf, onnx_path, release)


def fix_image_size(hf: HFModel, why: str) -> None:
    feed = hf.feeds[0]["pixel_values"]
    side = feed.shape[2]
    hf.specs["pixel_values"] = ("float32", (None, feed.shape[1], side, side))
    hf.ranges["pixel_values"] = {0: hf.ranges["pixel_values"][0]}
    rng = np.random.default_rng(0)
    hf.feeds = [{"pixel_values": rng.standard_normal((b, feed.shape[1], side, side)).astype(np.float32)} for b in (1, 2, 3, 5)]
    hf.notes.append(f"pixel_values: height and width fixed at {side}: torch.export could not keep them dynamic "
                    f"({why.splitlines()[0][:160]})")


def _export(model, hf: HFModel, onnx_path: Path, release: bool = True):
    from porter.process.frameworks import torch
    from porter.routes import to_onnx

    torch = torch()
    names, outputs = hf.input_names, hf.output_names
    args = example_args(hf)
    with plain_padding_masks(model):
        program = trace(named_module(model, names, outputs), args, (tuple(export_dims(hf)),), hf.architecture)
    to_onnx.torch_to_onnx(program, args, names, outputs, onnx_path, release=release)
    return to_onnx.OnnxExport(onnx_path, names, outputs, hf.specs, notes=list(hf.notes))


def named_module(model, names, outputs):
    """The model as positional named tensors in, a tuple in ``outputs`` order out (what torch.export traces)."""
    from porter.process.frameworks import torch

    torch = torch()

    class Named(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *args):
            out = self.inner(**dict(zip(names, args)), return_dict=True)
            return tuple(out[k] for k in outputs)

    return Named(model).eval()


def example_args(hf: HFModel) -> tuple:
    from porter.process.frameworks import torch

    example = _example(hf.feeds, hf.specs, hf.ranges)
    return tuple(torch().from_numpy(example[n]) for n in hf.input_names)


def export_dims(hf: HFModel, auto: bool = False) -> list[dict]:
    """torch.export dynamic_shapes, one dict per input. One Dim per meaning: input_ids and attention_mask
    share batch and sequence. ``auto``: torch decides each dim (Dim.AUTO), for a model that specialises one."""
    from porter.process.frameworks import torch

    torch = torch()
    dims, dynamic = {}, []
    for n in hf.input_names:
        spec = {}
        for axis, (lo, hi) in hf.ranges[n].items():
            if auto:
                spec[axis] = torch.export.Dim.AUTO
                continue
            sequence = _sequence_axis(hf.specs[n])
            if axis == 0:
                key = "batch"
            elif axis == sequence:
                key = "decoder_sequence" if n.startswith("decoder") else "sequence"
            else:
                key = "choices" if sequence == 2 else f"{n}_{axis}"
            dims.setdefault(key, torch.export.Dim(key, min=max(2, lo) if axis else 1, max=hi))
            spec[axis] = dims[key]
        dynamic.append(spec)
    return dynamic


@contextlib.contextmanager
def plain_padding_masks(model):
    """While tracing, transformers' bidirectional mask is built by broadcasting the 2D padding mask.

    transformers 5 builds it for eager attention as mask[b, 1, q, kv] = attention_mask[b, kv] through
    index arithmetic (Range, Expand, GatherND over a computed shape) or, with no padding mask, as an
    all-true mask expanded to the batch: graphs whose shape arithmetic converters could only keep with batch
    and sequence fixed. The additive
    [b, 1, 1, kv] mask built here holds the same values (0 / dtype min), broadcast by the attention's
    add; with no padding mask the model gets None, which eager attention skips. Anything else (extra
    mask functions, a 4D mask, another attention) goes to transformers' own function."""
    import sys

    from porter.process.frameworks import torch

    torch = torch()
    from transformers import masking_utils

    original = masking_utils.create_bidirectional_mask

    def bidirectional(config, inputs_embeds, attention_mask, encoder_hidden_states=None, past_key_values=None,
                      or_mask_function=None, and_mask_function=None, **kwargs):
        plain = (or_mask_function is None and and_mask_function is None and past_key_values is None
                 and getattr(config, "_attn_implementation", None) == "eager")
        if plain and attention_mask is None:
            return None
        if plain and attention_mask.dim() == 2:
            dtype = inputs_embeds.dtype
            return (1.0 - attention_mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min
        return original(config, inputs_embeds, attention_mask, encoder_hidden_states=encoder_hidden_states,
                        past_key_values=past_key_values, or_mask_function=or_mask_function,
                        and_mask_function=and_mask_function, **kwargs)

    patched = [m for m in {sys.modules.get(type(sub).__module__) for sub in model.modules()}
               if m is not None and getattr(m, "create_bidirectional_mask", None) is original]
    for module in patched:
        module.create_bidirectional_mask = bidirectional
    try:
        yield
    finally:
        for module in patched:
            module.create_bidirectional_mask = original


def trace(module, args: tuple, dynamic_shapes, name: str):
    """torch.export.export; a model it cannot trace is bad input, with torch's own reason."""
    from porter.process.frameworks import torch
    from porter.routes.to_onnx import captured_output

    torch = torch()
    try:
        with captured_output(f"torch.export of {name}"):
            return torch.export.export(module, args, dynamic_shapes=dynamic_shapes, strict=False)
    except PorterError as exc:
        cause = exc.__cause__
        text = str(cause).strip() if cause is not None else exc.message
        lines = [line for line in text.splitlines() if line.strip()]
        raise PorterError(f"torch.export cannot trace {name}: {type(cause).__name__ if cause else ''}: "
                          f"{lines[0][:400] if lines else ''}", problems=[line[:300] for line in lines[1:8]],
                          hint="porter converts transformers models through torch.export; a model with data-dependent "
                               "control flow needs a traceable variant") from None

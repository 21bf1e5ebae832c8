"""Block-wise verification of a direct-route decoder (Llama, Mistral, Qwen2, Qwen3, Gemma, GPT-2) that does not fit
beside a float32 reference: every transformer block checked in float32, one block of each model in memory at a time.

The reference is transformers' own model class, built on the meta device (no memory), its forward run as it is
(the causal mask, rotary cos/sin or position embeddings, Gemma's embedding scale: all transformers' own). Each
decoder layer, the token embedding and the LM head are streamed in from the checkpoint's safetensors shards
(``safe_open``, upcast to float32) just before they run and dropped after. A forward hook on each layer runs it again
in float64 on the same inputs (its own float32 floor), then hands its input hidden states to the same block of the
written Keras model (zoo/keras_hub/blocks.py: a float32 one-block skeleton of the family's backbone, filled with that
block's written weights). The Keras block's output is compared by porter's compare() (padded positions skipped) and
judged against the float64 result by verifiers/noise_floor.py's rule (<= FLOOR_K x the block's own float32 error;
``--atol``/``--rtol`` given: a fixed tolerance, no float64 run). The embedding is compared on the first block's
input, the final norm and the logits on the last block's output, at float32 tolerances. So each block is judged on
the same input, and an error cannot hide behind the bf16 noise of a whole model: a RMSNorm weight moved by 1% in one
block fails that block and names it.

Memory beside the written model's weights (held anyway): one decoder block in float32 (Keras) and in float64
(transformers), or at the ends transformers' LM head and the written token table(s) in float32; activations for one
3x16 batch.

``end_to_end``: the same streamed transformers forward in the checkpoint's own dtype against the written Keras
model's full forward: the end-to-end comparison where neither a float32 nor a 16-bit transformers reference fits
beside the written model (porter/resources/reference_plan.py).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# one batch: row 0 a full 16-token sequence, rows 1-2 right-padded (the mask path); every block is loaded once
SHAPE = (3, 16)


@dataclass
class BlockCheck:
    name: str  # "embedding", "block 0".., "final norm", "logits"
    comparison: object  # OutputComparison
    seconds: float = 0.0

    def to_dict(self) -> dict:
        c = self.comparison
        return {"name": self.name, "passed": c.passed, "max_abs": c.max_abs, "max_rel": c.max_rel, "atol": c.atol,
                "rtol": c.rtol, "mismatched": c.mismatched, "seconds": round(self.seconds, 3),
                **({"rule": c.rule} if c.rule else {}),
                **({"error_vs_float64": c.error_vs_float64, "floor": c.floor, "floor_ratio": c.floor_ratio,
                    "floor_bound": c.floor_bound} if c.floor is not None else {}),
                **({"floor_note": c.floor_note} if c.floor_note else {}),
                **({"reason": c.reason} if c.reason else {})}

    def judged(self) -> str:
        c = self.comparison
        if c.floor is not None:
            return (f"{c.error_vs_float64:.3g} against float64, {c.floor_ratio:.3g}x its float32 floor {c.floor:.3g} "
                    f"(allowed {c.floor_k:g}x + ulps)")
        return f"max abs {c.max_abs:.3g} (atol {c.atol:g}, rtol {c.rtol:g})"


@dataclass
class BlockwiseResult:
    checks: list[BlockCheck] = field(default_factory=list)
    input_shape: tuple = SHAPE
    weights_from: str = ""  # where the candidate's weights were read
    seconds: float = 0.0
    error: str = ""  # the block-wise run could not complete (a problem, exit 1)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and not self.error and all(c.comparison.passed for c in self.checks)

    def worst(self) -> BlockCheck | None:
        """The block nearest its bound: the largest ratio to its float32 floor (or max abs error, under a fixed tolerance)."""
        blocks = [c for c in self.checks if c.name.startswith("block ")] or self.checks
        def key(c):
            o = c.comparison
            return (o.floor_ratio if o.floor is not None and o.floor_ratio is not None else 0.0, o.max_abs)
        return max(blocks, key=key) if blocks else None

    def failed(self) -> list[BlockCheck]:
        return [c for c in self.checks if not c.comparison.passed]

    def block_seconds(self) -> float:
        blocks = [c.seconds for c in self.checks if c.name.startswith("block ")]
        return sum(blocks) / len(blocks) if blocks else 0.0

    def summary(self) -> str:
        n = sum(c.name.startswith("block ") for c in self.checks)
        worst = self.worst()
        head = (f"verified block by block in float32: embedding, {n} blocks, final norm"
                + (" and logits" if any(c.name == "logits" for c in self.checks) else "")
                + f", each on transformers' float32 input at {'x'.join(map(str, self.input_shape))} "
                  f"(candidate weights: {self.weights_from})")
        if worst is not None:
            head += (f"; worst block: {worst.name}, max abs {worst.comparison.max_abs:.3g} against transformers' float32, "
                     f"{worst.judged()}; {self.block_seconds():.2f} s per block")
        if self.error:
            return f"block-wise float32 verification NOT COMPLETED: {self.error}"
        if not self.passed:
            names = ", ".join(c.name for c in self.failed())
            return "block by block in float32: FAILED at " + names + head.removeprefix("verified block by block in float32")
        return head

    def problems(self) -> list[str]:
        out = [f"block-wise float32: {c.name} differs: {c.judged()}; {c.comparison.reason}" for c in self.failed()]
        if self.error:
            out.append(f"block-wise float32 verification did not complete: {self.error}")
        return out

    def to_dict(self) -> dict:
        worst = self.worst()
        return {"verified": "block by block in float32" if self.passed else "failed block by block in float32",
                "passed": self.passed, "input_shape": list(self.input_shape), "candidate_weights": self.weights_from,
                "worst_block": worst.name if worst else None,
                "worst_max_abs": worst.comparison.max_abs if worst else None,
                "worst_floor_ratio": worst.comparison.floor_ratio if worst else None,
                "failed": [c.name for c in self.failed()], "seconds": round(self.seconds, 2),
                "seconds_per_block": round(self.block_seconds(), 3),
                "blocks": [c.to_dict() for c in self.checks], **({"error": self.error} if self.error else {})}


# ------------------------------------------------------------------------------------------ the torch side
class _Checkpoint:
    """Tensors by name from the checkpoint's safetensors shards, as torch tensors in their stored dtype. Each read
    opens the shards it needs and closes them after (``safe_open`` maps a shard; the pages a mapping touched count in
    this process's RSS while it stays open, so no shard stays mapped across blocks)."""

    def __init__(self, folder: Path):
        from porter.readers.checkpoints import open_torch_checkpoint

        self.source = open_torch_checkpoint(Path(folder))

    def __contains__(self, key):
        return key in self.source.shapes

    def get(self, keys: list[str]) -> dict:
        import torch
        from safetensors import safe_open

        out, files = {}, {}
        for key in keys:
            files.setdefault(self.source.file_of(key), []).append(key)
        for path, names in files.items():
            if not path.endswith(".safetensors"):  # pytorch_model.bin: porter's own reader (memory-mapped)
                out.update((k, torch.from_numpy(np.ascontiguousarray(self.source.get(k)))) for k in names)
                continue
            with safe_open(path, framework="pt") as handle:
                out.update((k, handle.get_tensor(k)) for k in names)
        return out


class StreamedReference:
    """transformers' model for ``config``, built on the meta device. The decoder layers, the token embedding and the
    LM head are each loaded in ``dtype`` just before they run and dropped after (``on_block`` sees a layer's input
    and output first); the rest (final norm, position tables, rotary frequencies: small) is loaded once."""

    def __init__(self, folder: Path, config: dict, dtype: str = "float32"):
        import torch

        from porter.zoo.keras_hub.entry import torch_model_class

        self.torch, self.dtype = torch, getattr(torch, dtype)
        self.checkpoint = _Checkpoint(folder)
        cls = torch_model_class(config)
        hf_config = cls.config_class.from_dict({k: v for k, v in config.items() if not k.startswith("_porter")})
        hf_config._attn_implementation = "sdpa"  # as from_pretrained picks it for today's reference
        with torch.device("meta"):
            self.model = cls(hf_config).eval()
        self.base = self.model.base_model
        self.has_head = self.model is not self.base
        names = {id(m): n for n, m in self.model.named_modules()}
        layers_name, self.layers = self._layer_list(hf_config)
        self.streamed = {f"{layers_name}.{i}": layer for i, layer in enumerate(self.layers)}
        self.embedding = self.model.get_input_embeddings()
        self.streamed[names[id(self.embedding)]] = self.embedding
        self._embedding_key = f"{names[id(self.embedding)]}.weight"
        self.head = self.model.get_output_embeddings() if self.has_head else None
        if self.head is not None:
            self.streamed[names[id(self.head)]] = self.head
        self.on_block, self.started, self.float64 = None, time.perf_counter(), False
        self._load_rest()
        for i, layer in enumerate(self.layers):
            layer.register_forward_pre_hook(self._before(f"{layers_name}.{i}"), with_kwargs=True)
            layer.register_forward_hook(self._after(i, f"{layers_name}.{i}"), with_kwargs=True)
        self.embedding.register_forward_pre_hook(self._before(names[id(self.embedding)]), with_kwargs=True)
        self.embedding.register_forward_hook(lambda module, args, output: self._drop(module))

    def _layer_list(self, hf_config):
        n = hf_config.num_hidden_layers if hasattr(hf_config, "num_hidden_layers") else hf_config.n_layer
        for name, module in self.model.named_modules():
            if isinstance(module, self.torch.nn.ModuleList) and len(module) == n:
                return name, module
        raise RuntimeError(f"{type(self.model).__name__}: no list of {n} decoder layers")

    def _tensors(self, keys: dict, dtype=None) -> dict:
        """{name in the module: checkpoint tensor} for ``keys`` {name in the module: the model's own name}, in the
        reference's dtype, read one at a time. A tied LM head reads the embedding."""
        wanted = {}
        for name, key in keys.items():
            if key not in self.checkpoint and self.head is not None and key == self._head_key():
                key = self._embedding_key
            if key not in self.checkpoint:
                raise KeyError(f"the checkpoint has no tensor {key}")
            wanted[name] = key
        out = {}
        for name, key in wanted.items():
            t = self.checkpoint.get([key])[key]
            out[name] = t.to(dtype or self.dtype) if t.is_floating_point() else t
        return out

    def _head_key(self) -> str:
        return next(f"{n}.weight" for n, m in self.model.named_modules() if m is self.head)

    def _load_rest(self):
        """Everything outside the streamed modules, once."""
        skip = tuple(f"{name}." for name in self.streamed)
        keys = [k for k in self.model.state_dict() if not k.startswith(skip)]
        self._fill_nonpersistent(self.model, skip=skip)
        self.model.load_state_dict(self._tensors({k: k for k in keys}), assign=True, strict=False)

    def _fill_nonpersistent(self, root, skip: tuple = ()) -> None:
        """Buffers left on the meta device (rotary inverse frequencies, Gemma's embedding scale: in no checkpoint)
        computed as transformers computes them when it loads a model (its _init_weights). That also draws the
        module's parameters: the checkpoint's are loaded after it."""
        for name, module in root.named_modules():
            if skip and (name + ".").startswith(skip):
                continue
            if any(b.is_meta for b in module.buffers(recurse=False)):
                module.to_empty(device="cpu", recurse=False)
                self.model._init_weights(module)

    def _load(self, module, prefix: str, dtype=None) -> None:
        self._fill_nonpersistent(module)  # first: _init_weights also draws parameters
        module.load_state_dict(self._tensors({k: f"{prefix}.{k}" for k in module.state_dict()}, dtype), assign=True,
                               strict=True)

    @staticmethod
    def _drop(module) -> None:
        module.to_empty(device="meta")  # its weights dropped before the next module's are read

    def _before(self, prefix):
        def hook(module, args, kwargs):
            self.started = time.perf_counter()
            self._load(module, prefix)
        return hook

    def _after(self, index, prefix):
        def hook(layer, args, kwargs, output):
            hidden = args[0] if args else kwargs["hidden_states"]
            out = output[0] if isinstance(output, tuple) else output
            self._drop(layer)
            if self.on_block is None:
                return
            out64 = None
            if self.float64:  # the same layer again in float64, on the same inputs: its own float32 floor
                self._load(layer, prefix, self.torch.float64)
                with self.torch.no_grad():
                    out64 = layer.forward(*_float64(args), **_float64(dict(kwargs, use_cache=False)))
                out64 = (out64[0] if isinstance(out64, tuple) else out64).detach().numpy()
                self._drop(layer)
            self.on_block(index, hidden.detach().float().numpy(), out.detach().float().numpy(), out64)
        return hook

    def run(self, feed: dict) -> dict:
        """last_hidden_state (after the final norm) and, with a head, logits."""
        torch = self.torch
        ids = torch.from_numpy(np.asarray(feed["input_ids"], dtype=np.int64))
        mask = torch.from_numpy(np.asarray(feed["attention_mask"], dtype=np.int64))
        with torch.no_grad():
            hidden = self.base(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
            out = {"last_hidden_state": hidden}
            if self.head is not None:
                name = next(n for n, m in self.streamed.items() if m is self.head)
                self._load(self.head, name)
                out["logits"] = self.head(hidden)
                self._drop(self.head)
        return {k: v.detach().to(torch.float32).numpy() if v.dtype == torch.bfloat16 else v.detach().numpy()
                for k, v in out.items()}


def _float64(value):
    """Floating tensors (hidden states, rotary cos/sin, an additive mask) in float64, inside tuples and dicts too."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.double() if value.is_floating_point() else value
    if isinstance(value, (tuple, list)):
        return type(value)(_float64(v) for v in value)
    if isinstance(value, dict):
        return {k: _float64(v) for k, v in value.items()}
    return value


# ------------------------------------------------------------------------------------------ block-wise
def verify_blocks(folder, keras_model, config: dict, atol=None, rtol=None, weights_from: str = "", progress=None,
                  seed: int = 0) -> BlockwiseResult:
    """Every block of ``keras_model`` (the written keras-hub model) against transformers' float32 block on the same
    hidden states, then the final norm and head; the embedding against the first block's input."""
    from porter.verifiers import noise_floor
    from porter.verifiers.compare import compare
    from porter.zoo.keras_hub.blocks import Float32Blocks
    from porter.zoo.keras_hub.entry import input_sets

    t_all = time.perf_counter()
    config = config if config.get("model_type") else json.loads((Path(folder) / "config.json").read_text())
    feed = input_sets(config, shapes=[SHAPE], seed=seed)[0]
    valid = feed["attention_mask"].astype(bool)
    result = BlockwiseResult(input_shape=tuple(feed["input_ids"].shape), weights_from=weights_from)
    say = progress or (lambda text: None)

    def check(name, ref, cand, t0, ref64=None):
        o = compare(name, ref, cand, atol=atol, rtol=rtol, valid=valid)
        if ref64 is not None:  # judged against the block's own float32 floor (verifiers/noise_floor.py)
            noise_floor.judge(o, ref, ref64, cand, valid)
        elif name.startswith("block "):
            noise_floor.fixed(o, "--atol/--rtol given: a fixed tolerance" if given else "the float64 floor is off")
        result.checks.append(BlockCheck(name, o, time.perf_counter() - t0))

    given = atol is not None or rtol is not None
    reference = StreamedReference(folder, config, "float32")
    reference.float64 = noise_floor.ENABLED and not given
    blocks = Float32Blocks(keras_model, config)
    if blocks.num_layers() != len(reference.layers):
        result.error = f"the written model has {blocks.num_layers()} blocks, transformers' {len(reference.layers)}"
        blocks.close()
        return result

    def on_block(index, hidden, out, out64):
        say(f"block {index + 1}/{len(reference.layers)}")
        # the block's seconds: the torch layer's load and run (from its pre-hook, float64 too), then the Keras block's
        check(f"block {index}", out, blocks.block(index, hidden, feed["attention_mask"]), reference.started, out64)
        if index == 0:  # the first block's input is the embedding's output (listed first)
            check("embedding", hidden, blocks.embed(feed["input_ids"]), time.perf_counter())
            result.checks.insert(0, result.checks.pop())
        last["hidden"] = out

    last = {}
    reference.on_block = on_block
    try:
        ref_out = reference.run(feed)
        t0 = time.perf_counter()
        cand = blocks.head(last["hidden"])
    finally:
        reference.on_block = None
        blocks.close()
    check("final norm", ref_out["last_hidden_state"], cand["last_hidden_state"], t0)
    if "logits" in ref_out:
        result.checks.append(BlockCheck("logits", compare("logits", ref_out["logits"], cand["logits"], atol=atol,
                                                          rtol=rtol, valid=valid), 0.0))
    result.seconds = time.perf_counter() - t_all
    return result


def end_to_end(folder, keras_model, config: dict, dtype: str, shapes, atol=None, rtol=None):
    """The written Keras model's whole forward against transformers' forward in the checkpoint's own ``dtype``,
    streamed one decoder layer at a time: a VerificationResult as porter verify makes (its outputs compared at
    ``dtype`` tolerances, padded positions skipped)."""
    from porter.verifiers.compare import compare
    from porter.verifiers.result import ShapeResult, VerificationResult
    from porter.zoo.keras_hub.entry import input_sets, keras_call, output_names

    reference = StreamedReference(folder, config, dtype)
    names = output_names(config)
    result = VerificationResult(reference=str(folder), candidate="the written Keras model (in memory)", route="direct")
    for feed in input_sets(config, shapes=shapes):
        ref = reference.run(feed)
        cand = keras_call(keras_model, feed)
        valid = feed["attention_mask"].astype(bool)
        outputs = []
        for name in names:
            c = np.asarray(cand[name])
            c = c.astype(np.float32) if c.dtype.name == "bfloat16" else c
            outputs.append(compare(name, _as_dtype(ref[name], dtype), _as_dtype(c, dtype), atol=atol, rtol=rtol,
                                   valid=valid))
        label = "x".join(map(str, feed["input_ids"].shape))
        result.shapes.append(ShapeResult(label, {k: tuple(v.shape) for k, v in feed.items()}, outputs))
    return result


def _as_dtype(array, dtype: str):
    """A 16-bit output held as the 16-bit dtype it was computed in, so compare() applies that dtype's tolerances."""
    if dtype == "bfloat16":
        import ml_dtypes

        return np.asarray(array, dtype=np.float32).astype(ml_dtypes.bfloat16)
    return np.asarray(array, dtype=getattr(np, dtype))

"""``prefill`` and ``decode`` for the causal LMs of the graph route (any transformers ``*ForCausalLM`` whose cache is
plain per-layer K/V: phi3, gemma2, falcon, the MoE decoders ...), with the direct route's names and layout
(zoo/keras_hub/kv_cache.py) so one client loop serves both.

One torch program does both jobs: ``step(tokens (batch, n), input_pos (n,), kv_cache_k_{i}, kv_cache_v_{i})`` writes
the n tokens' K/V at ``input_pos`` into caches of ``max_cache_len`` slots and returns the logits and the caches. It is
transformers' own forward with a cache object of porter's (``_WriteAt``) whose update is functional -- the new K/V
placed by a one-hot (slot == position) selection instead of ``index_copy_`` -- so torch.export sees no mutation and
the converted graph needs only built-in TFLite ops (equal, matmul, select). The causal mask over the cache's slots
is transformers' own (``get_mask_sizes`` -> every slot, query positions from ``input_pos``), sliding windows
included; slots not written yet lie after the query and are masked.

The SavedModel's signatures wrap that one converted function:
- ``prefill(input_ids, attention_mask)``: every row from position 0 (right-padded prompts share positions), the K/V
  of padded positions zeroed; ``cache_position`` is each row's number of real tokens;
- ``decode(input_ids (batch, 1), cache_position, kv_cache_*)``: the step once per row at that row's own position
  (``tf.map_fn``), since transformers' cache takes one position per call; a position outside the cache fails the
  call (an assertion), never writes a clamped slot.
The ``.tflite`` (``--prefill-lengths``) holds ``prefill_<n>`` and ``decode`` at batch 1 with litert-torch's names.
"""

from __future__ import annotations

from porter.errors import PorterError
from porter.zoo.keras_hub.kv_cache import cache_names


def is_causal_lm(model) -> bool:
    """A decoder-only transformers LM (the class the folder's config.json names ends in ForCausalLM)."""
    config = getattr(model, "config", None)
    return (type(model).__name__.endswith("ForCausalLM") and not getattr(config, "is_encoder_decoder", False)
            and hasattr(model, "generate"))


def geometry(model) -> list[tuple[int, int, int]]:
    """(key/value heads, key head dim, value head dim) per layer, read from the cache transformers fills on one
    token (so any family's own head counts, GQA, MQA or per-layer differences are taken as they are). Raises
    PorterError where the model's cache is not plain per-layer K/V (recurrent or linear-attention state)."""
    from porter.process.frameworks import torch

    torch = torch()
    from transformers.cache_utils import DynamicLayer

    with torch.no_grad():
        out = model(input_ids=torch.zeros(1, 1, dtype=torch.long), use_cache=True, return_dict=True)
    cache = getattr(out, "past_key_values", None)
    layers = getattr(cache, "layers", None)
    if not layers or not all(isinstance(layer, DynamicLayer) for layer in layers):
        kinds = sorted({type(layer).__name__ for layer in layers or ()}) or [type(cache).__name__]
        raise PorterError(f"{type(model).__name__}'s cache is not per-layer keys and values ({', '.join(kinds)})",
                          hint="its prefill/decode signatures are not written; serving_default is")
    return [(int(layer.keys.shape[1]), int(layer.keys.shape[-1]), int(layer.values.shape[-1])) for layer in layers]


def layout(shapes, length: int, dtype: str) -> dict:
    """The cache layout, for the report (the direct route's keys)."""
    heads = sorted({h for h, _, _ in shapes})
    dims = sorted({d for _, d, e in shapes} | {e for _, d, e in shapes})
    return {"names": "kv_cache_k_{i}, kv_cache_v_{i}", "layers": len(shapes),
            "shape": ["batch", length, heads[0] if len(heads) == 1 else "kv_heads of layer i",
                      dims[0] if len(dims) == 1 else "head_dim of layer i"],
            "axes": ["batch", "cache_position", "kv_head", "head_dim"], "dtype": dtype, "max_cache_len": length,
            "position_input": "cache_position (batch,) int32"}


# ----------------------------------------------------------------------------------------------------- torch
def _write_at_class():
    from transformers.cache_utils import CacheLayerMixin

    class _WriteAt(CacheLayerMixin):
        """One layer's cache (batch, heads, max_cache_len, head_dim) written functionally at ``positions``."""

        is_compileable = True

        def __init__(self, keys, values, positions):
            super().__init__()
            self.keys, self.values, self.positions = keys, values, positions
            self.is_initialized = True

        def lazy_initialization(self, key_states, value_states) -> None:  # given whole at construction
            pass

        def update(self, key_states, value_states, *args, **kwargs):
            import torch

            slots = torch.arange(self.keys.shape[2], device=key_states.device)
            select = slots[:, None] == self.positions[None, :]  # (slots, n): slot s takes token j where s == pos[j]
            written = select.any(dim=1)[None, None, :, None]
            one_hot = select.to(key_states.dtype)  # a product with exactly one 1 per written slot: the value itself
            self.keys = torch.where(written, torch.matmul(one_hot, key_states), self.keys)
            self.values = torch.where(written, torch.matmul(one_hot, value_states), self.values)
            return self.keys, self.values

        def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
            return self.keys.shape[2], 0  # every slot, from position 0: the causal mask hides the unwritten ones

        def get_seq_length(self):
            return self.positions[0]  # the query offset transformers' mask starts the positions at

        def get_max_length(self) -> int:
            return self.keys.shape[2]

    return _WriteAt


def step_module(model, num_layers: int, slot_mask: bool = False):
    """nn.Module: (tokens, input_pos, caches (batch, slots, heads, head_dim) each) -> (logits, caches).
    ``slot_mask``: also pass an all-ones attention_mask over the cache's slots (same attention: the causal mask
    hides the unwritten slots), for a model that would otherwise build one from the cache's length as a Python int
    (OPT: torch.ones(batch, past + n), a data-dependent size torch.export cannot keep)."""
    from porter.process.frameworks import torch

    torch = torch()
    from transformers.cache_utils import Cache

    write_at = _write_at_class()

    class CachedStep(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner  # the attribute hf_source.named_module uses: the state-dict keys match serving_default's

        def forward(self, tokens, input_pos, caches):
            layers = [write_at(caches[2 * i].transpose(1, 2), caches[2 * i + 1].transpose(1, 2), input_pos)
                      for i in range(num_layers)]
            positions = input_pos[None].expand(tokens.shape[0], -1)
            extra = {"attention_mask": torch.ones(tokens.shape[0], caches[0].shape[1], dtype=torch.long)} if slot_mask else {}
            out = self.inner(input_ids=tokens, position_ids=positions, past_key_values=Cache(layers=layers),
                             use_cache=True, return_dict=True, **extra)
            result = [out.logits]
            for layer in layers:
                result += [layer.keys.transpose(1, 2), layer.values.transpose(1, 2)]
            return tuple(result)

    return CachedStep(model).eval()


def export_step(model, shapes, length: int, name: str, slot_mask: bool = False):
    """The step's ExportedProgram: batch and token count dynamic (1..length), the cache ``length`` slots."""
    from porter.process.frameworks import torch
    from porter.routes.hf_source import trace

    torch = torch()
    dtype = next(model.parameters()).dtype
    module = step_module(model, len(shapes), slot_mask)
    n = min(3, length)
    tokens = torch.randint(0, 2, (2, n))
    caches = tuple(torch.zeros(2, length, heads, dim, dtype=dtype) for heads, kd, vd in shapes for dim in (kd, vd))
    batch, count = torch.export.Dim("batch", min=1), torch.export.Dim("tokens", min=1, max=length)
    dims = ({0: batch, 1: count}, {0: count}, tuple({0: batch} for _ in caches))
    return trace(module, (tokens, torch.arange(n), caches), dims, f"{name} with a KV cache")


# ----------------------------------------------------------------------------------------------------- TF
def signatures(step, shapes, length: int) -> dict:
    """{"prefill", "decode"}: concrete functions over ``step`` (the converted step: ConvertedGraph), with the direct
    route's names, specs and bound checks (zoo/keras_hub/kv_cache.py)."""
    from porter.process.frameworks import tensorflow
    from porter.zoo.keras_hub.kv_cache import concrete_signatures, positions_within, prompt_within

    tf = tensorflow()
    serve = step.module.serve
    specs = step.input_specs
    ids_dtype, cache_specs = specs[0].dtype, specs[2:]
    names = cache_names(len(shapes))

    def prefill(input_ids, attention_mask):
        batch, seq = tf.shape(input_ids)[0], tf.shape(input_ids)[1]
        input_ids = prompt_within(input_ids, length)
        zeros = [tf.zeros([batch, length, *s.shape[2:]], s.dtype) for s in cache_specs]
        out = serve(tf.cast(input_ids, ids_dtype), tf.range(seq, dtype=specs[1].dtype), *zeros)
        keep = tf.pad(attention_mask, [[0, 0], [0, length - seq]])[:, :, None, None]
        caches = {n: out[n] * tf.cast(keep, out[n].dtype) for n in names}  # padded positions' K/V zeroed
        positions = tf.reduce_sum(tf.cast(attention_mask, tf.int32), axis=1)
        return {"logits": tf.cast(out["logits"], tf.float32), "cache_position": positions, **caches}

    def decode(input_ids, cache_position, *caches):
        cache_position = positions_within(cache_position, length)

        def row(args):
            ids, position, *rows = args
            out = serve(tf.cast(ids[None], ids_dtype), tf.cast(position[None], specs[1].dtype), *(r[None] for r in rows))
            return (tf.cast(out["logits"][0], tf.float32), *(out[n][0] for n in names))

        out = tf.map_fn(row, (input_ids, cache_position, *caches),
                        fn_output_signature=(tf.TensorSpec([1, None], tf.float32),
                                             *(tf.TensorSpec(s.shape[1:], s.dtype) for s in cache_specs)))
        return {"logits": out[0], "cache_position": cache_position + 1, **dict(zip(names, out[1:]))}

    return concrete_signatures(prefill, decode, [tf.TensorSpec(s.shape, s.dtype, name=n) for s, n in zip(cache_specs, names)])


def write_tflite(step, path, shapes, length: int, prefill_lengths) -> dict:
    """``path`` (model.tflite): ``prefill_<n>`` per prompt length and ``decode``, batch 1, litert-torch's names
    (``tokens``, ``input_pos``, ``kv_cache_*``), built-in ops only (zoo/keras_hub/kv_cache.tflite_of). Returns the
    report's description."""
    from porter.process.frameworks import tensorflow
    from porter.zoo.keras_hub.kv_cache import tflite_of

    tf = tensorflow()
    serve, specs = step.module.serve, step.input_specs
    names = cache_names(len(shapes))
    cache_specs = [tf.TensorSpec([1, *s.shape[1:]], s.dtype, name=n) for s, n in zip(specs[2:], names)]

    def signature(n):
        def run(tokens, input_pos, *caches):
            out = serve(tf.cast(tokens, specs[0].dtype), tf.cast(input_pos, specs[1].dtype), *caches)
            return {"logits": tf.cast(out["logits"], tf.float32), **{k: out[k] for k in names}}

        return tf.function(run, input_signature=[tf.TensorSpec([1, n], tf.int32, name="tokens"),
                                                 tf.TensorSpec([n], tf.int32, name="input_pos"), *cache_specs],
                           autograph=False).get_concrete_function()

    return tflite_of(signature, step.module.weights, path, prefill_lengths)

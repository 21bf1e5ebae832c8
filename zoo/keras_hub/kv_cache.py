"""``prefill`` and ``decode``: the SavedModel signatures that let a causal LM generate with a KV cache.

A causal LM of a keras-hub family (Llama, Mistral, Qwen2, Qwen3, Gemma, GPT-2) is served beside
``serving_default`` by two more signatures, both built on keras-hub's own ``call_with_cache`` (the path its
``generate()`` runs), so no family needs code of its own here:

    prefill(input_ids (batch, seq) int32, attention_mask (batch, seq) int32)
        -> logits (batch, seq, vocab) float32, cache_position (batch,) int32,
           kv_cache_k_{i}, kv_cache_v_{i} (batch, max_cache_len, kv_heads, head_dim) for every layer i
    decode(input_ids (batch, 1) int32, cache_position (batch,) int32, kv_cache_k_{i}, kv_cache_v_{i})
        -> logits (batch, 1, vocab) float32, cache_position (batch,) int32 (the input + 1), kv_cache_k_{i}, kv_cache_v_{i}

Layout: one K and one V tensor per layer, axes (batch, cache position, key/value head, head dim) -- litert-torch's
BTNH layout and its names -- in the model's compute dtype; K after the rotary embedding. ``max_cache_len`` is fixed
at export (``--max-cache-len``); batch and prompt length are dynamic. A client passes the outputs named
``kv_cache_*`` and ``cache_position`` back to ``decode`` by name.

Prompts are right-padded. keras-hub's cache has one update index for the whole batch; with prompts of different
lengths each row's next position differs (its length), so:
- prefill writes every row from position 0 (one index, 0, serves the batch); its K/V at padded positions are zeroed
  and each row's next position is its number of real tokens (``cache_position``);
- decode runs keras-hub's ``call_with_cache`` once per row (``tf.map_fn`` over the batch) with that row's own
  position: the rotary angle (or GPT-2's learned position row), the cache slot written and the causal mask over cache
  positions (slots <= position) are the row's. A padded slot of a short row lies beyond its position, so it is
  masked, and it is overwritten before the row reaches it. Rows cost one pass each: the decode step of a batch is
  the batch's rows in sequence, not one batched matmul.
A ``cache_position`` at or beyond ``max_cache_len`` fails the call (an assertion), never writes a clamped slot.
"""

from __future__ import annotations

DEFAULT_MAX_CACHE_LEN = 4096


def is_causal_lm(model) -> bool:
    return hasattr(model, "call_with_cache") and hasattr(model, "backbone")


def position_limit(config: dict) -> int | None:
    """The model's own position limit (transformers' name for it in this family)."""
    limit = config.get("n_positions") or config.get("max_position_embeddings")
    return int(limit) if limit else None


def max_cache_len(config: dict, asked: int | None) -> int:
    """``--max-cache-len``, checked against the model's positions; default min(position limit, 4096)."""
    from porter.errors import PorterError

    limit = position_limit(config)
    if asked is None:
        return min(limit, DEFAULT_MAX_CACHE_LEN) if limit else DEFAULT_MAX_CACHE_LEN
    if asked < 1:
        raise PorterError(f"--max-cache-len {asked} must be at least 1")
    if limit and asked > limit:
        key = "n_positions" if config.get("n_positions") else "max_position_embeddings"
        raise PorterError(f"--max-cache-len {asked} is beyond the model's positions (config.json {key}={limit})",
                          hint=f"pass --max-cache-len {limit} or less")
    return asked


def cache_geometry(model) -> tuple[int, int, int]:
    """(layers, key/value heads, head dim) of keras-hub's cache (batch, layers, 2, length, heads, head_dim)."""
    bb = model.backbone
    heads = getattr(bb, "num_key_value_heads", None) or bb.num_heads
    query_heads = getattr(bb, "num_query_heads", None) or bb.num_heads
    head_dim = getattr(bb, "head_dim", None) or bb.hidden_dim // query_heads
    return int(bb.num_layers), int(heads), int(head_dim)


def cache_names(num_layers: int) -> list[str]:
    return [f"kv_cache_{kv}_{i}" for i in range(num_layers) for kv in ("k", "v")]


def layout(model, length: int) -> dict:
    """The cache layout, for the report and the README."""
    layers, heads, head_dim = cache_geometry(model)
    return {"names": "kv_cache_k_{i}, kv_cache_v_{i}", "layers": layers,
            "shape": ["batch", length, heads, head_dim], "axes": ["batch", "cache_position", "kv_head", "head_dim"],
            "dtype": str(model.compute_dtype), "max_cache_len": length, "position_input": "cache_position (batch,) int32"}


def signatures(model, length: int, jit_compile: bool = False) -> dict:
    """{"prefill": ConcreteFunction, "decode": ConcreteFunction} for a keras-hub CausalLM."""
    from porter.process.frameworks import tensorflow

    tf = tensorflow()
    layers, heads, head_dim = cache_geometry(model)
    dtype = tf.as_dtype(model.compute_dtype)
    names = cache_names(layers)

    def split(cache):  # (batch, layers, 2, length, heads, head_dim) -> named per-layer tensors
        return {f"kv_cache_{kv}_{i}": cache[:, i, j] for i in range(layers) for j, kv in enumerate("kv")}

    def prefill(input_ids, attention_mask):
        batch, seq = tf.shape(input_ids)[0], tf.shape(input_ids)[1]
        input_ids = prompt_within(input_ids, length)
        cache = tf.zeros([batch, layers, 2, seq, heads, head_dim], dtype)
        logits, _, cache = model.call_with_cache(input_ids, cache, 0)  # every row from position 0
        keep = tf.cast(attention_mask, dtype)[:, None, None, :, None, None]
        cache = tf.pad(cache * keep, [[0, 0], [0, 0], [0, 0], [0, length - seq], [0, 0], [0, 0]])
        positions = tf.reduce_sum(tf.cast(attention_mask, tf.int32), axis=1)
        return {"logits": tf.cast(logits, tf.float32), "cache_position": positions, **split(cache)}

    def decode(input_ids, cache_position, *caches):
        cache_position = positions_within(cache_position, length)
        cache = tf.stack([tf.stack(caches[2 * i: 2 * i + 2], axis=1) for i in range(layers)], axis=1)

        def row(args):
            ids, rows_cache, position = args
            logits, _, updated = model.call_with_cache(ids[None], rows_cache[None], position)
            return tf.cast(logits[0], tf.float32), updated[0]

        logits, cache = tf.map_fn(row, (input_ids, cache, cache_position),
                                  fn_output_signature=(tf.TensorSpec([1, None], tf.float32),
                                                       tf.TensorSpec([layers, 2, length, heads, head_dim], dtype)))
        return {"logits": logits, "cache_position": cache_position + 1, **split(cache)}

    cache_specs = [tf.TensorSpec([None, length, heads, head_dim], dtype, name=n) for n in names]
    return concrete_signatures(prefill, decode, cache_specs, jit_compile)


def prompt_within(input_ids, length: int):
    """``input_ids`` once asserted to fit the cache: a longer prompt fails the call before any slot is written."""
    from porter.process.frameworks import tensorflow

    tf = tensorflow()
    check = tf.debugging.assert_less_equal(tf.shape(input_ids)[1], length, message=f"prompt longer than max_cache_len={length}")
    with tf.control_dependencies([check]):
        return tf.identity(input_ids)


def positions_within(cache_position, length: int):
    """``cache_position`` once asserted inside the cache: a position outside fails the call, never writes a clamped slot."""
    from porter.process.frameworks import tensorflow

    tf = tensorflow()
    checks = [tf.debugging.assert_less(cache_position, length, message=f"cache_position must be below max_cache_len={length}"),
              tf.debugging.assert_non_negative(cache_position, message="cache_position must be >= 0")]
    with tf.control_dependencies(checks):  # before a slot is written or a position row read
        return tf.identity(cache_position)


def concrete_signatures(prefill, decode, cache_specs, jit_compile: bool = False) -> dict:
    """{"prefill", "decode"} over the two functions, with the signatures' names and dtypes (module docstring)."""
    from porter.process.frameworks import tensorflow

    tf = tensorflow()
    ids = tf.TensorSpec([None, None], tf.int32, name="input_ids")
    mask = tf.TensorSpec([None, None], tf.int32, name="attention_mask")
    one = tf.TensorSpec([None, 1], tf.int32, name="input_ids")
    position = tf.TensorSpec([None], tf.int32, name="cache_position")
    jit = jit_compile or None
    return {"prefill": tf.function(prefill, input_signature=[ids, mask], jit_compile=jit).get_concrete_function(),
            "decode": tf.function(decode, input_signature=[one, position, *cache_specs], jit_compile=jit).get_concrete_function()}


def for_entry(entry, config: dict, asked: int | None) -> int | None:
    """The cache length the SavedModel of ``entry`` gets (None: no prefill/decode, not a keras-hub causal LM);
    ``--max-cache-len`` given for a model that is not one is refused (exit 2)."""
    from porter.errors import PorterError

    causal = False
    if getattr(entry, "module", None) == "porter.zoo.keras_hub.entry":
        from porter.zoo.keras_hub.entry import family, head_class

        head = head_class(config)
        causal = bool(head) and family(config).task[head].endswith("CausalLM")
    if not causal:
        if asked is not None:
            what = (config.get("architectures") or [entry.name])[0]
            raise PorterError(f"--max-cache-len {asked} sizes the KV cache of a causal LM's prefill/decode signatures; "
                              f"{what} is not a causal LM on the direct route",
                              hint="leave --max-cache-len out")
        return None
    return max_cache_len(config, asked)


# ----------------------------------------------------------------------------------------------------- .tflite
# litert-torch's convention (its Generative API): batch 1, one ``prefill_<len>`` per prompt length, ``decode``;
# ``tokens`` (1, len) int32, ``input_pos`` (len,) int32 (the positions written: input_pos[0] .. input_pos[0] + len - 1),
# ``kv_cache_k_{i}`` / ``kv_cache_v_{i}`` (1, max_cache_len, kv_heads, head_dim) in and out; porter's signatures
# also return ``logits`` (1, len, vocab). A prompt shorter than its prefill length is right-padded: the padded slots
# lie beyond the next position and decode overwrites them before they are read.
#
# keras-hub's call_with_cache stacks every layer's cache into one 6-D tensor, which TFLite's built-in ops do not
# take; the loop below is call_with_cache layer by layer on 5-D caches (1, 2, length, heads, head_dim), with each
# family's embedding as keras-hub's call_with_cache writes it (GPT-2 adds its position row, Gemma scales by
# sqrt(hidden)). Verified by generation like the SavedModel (verifiers/generation.py).
def _embed(model, token_ids, index):
    from porter.process.frameworks import tensorflow

    tf = tensorflow()
    bb = model.backbone
    x = bb.token_embedding(token_ids)
    if hasattr(bb, "position_embedding"):  # GPT2CausalLM.call_with_cache
        x = bb.embeddings_add((x, bb.position_embedding(x, start_index=index)))
    if type(bb).__name__ == "GemmaBackbone":  # GemmaCausalLM.call_with_cache
        x = x * tf.cast(tf.sqrt(float(bb.hidden_dim)), x.dtype)
    return x


def _layerwise(model, token_ids, caches, index):
    from porter.process.frameworks import tensorflow

    tf = tensorflow()
    bb = model.backbone
    gemma = type(bb).__name__ == "GemmaBackbone"
    x, out = _embed(model, token_ids, index), []
    for i, layer in enumerate(bb.transformer_layers):
        cache = tf.stack([caches[2 * i], caches[2 * i + 1]], axis=1)
        kwargs = (dict(cache=cache, cache_update_index=index) if gemma else
                  dict(self_attention_cache=cache, self_attention_cache_update_index=index))
        x, cache = layer(x, **kwargs)
        out += [cache[:, 0], cache[:, 1]]
    logits = bb.token_embedding(bb.layer_norm(x), reverse=True)
    return tf.cast(logits, tf.float32), out


def check_prefill_lengths(lengths, cache_len, name: str) -> None:
    """--prefill-lengths: a causal LM's, each within the cache (exit 2 naming the value and the limit)."""
    from porter.errors import PorterError

    if not lengths:
        return
    if not cache_len:
        raise PorterError(f"--prefill-lengths {','.join(map(str, lengths))} writes a causal LM's .tflite prefill/decode; "
                          f"{name} here is not a causal LM", hint="leave --prefill-lengths out")
    for n in lengths:
        if not 1 <= n <= cache_len:
            raise PorterError(f"--prefill-lengths {n} is outside 1..max_cache_len ({cache_len})",
                              hint=f"pass prefill lengths of 1 to {cache_len}")


def check_tflite_dtype(lengths, written: str) -> None:
    """TFLite's built-in ops take no bfloat16 (measured: Pack, Tile, Transpose, DynamicUpdateSlice refused): the
    .tflite is written for float32 models only."""
    from porter.errors import PorterError

    if lengths and written != "float32":
        raise PorterError(f"--prefill-lengths writes a .tflite of TFLite built-in ops, which take no {written} (the "
                          f"written dtype here)", hint="add --dtype float32, or leave --prefill-lengths out")


def write_tflite(model, path, length: int, prefill_lengths) -> dict:
    """``path`` (model.tflite): ``prefill_<n>`` for each n of ``prefill_lengths`` and ``decode``, built-in ops only.
    Returns the report's description."""
    from porter.process.frameworks import tensorflow

    tf = tensorflow()
    layers, heads, head_dim = cache_geometry(model)
    dtype = tf.as_dtype(model.compute_dtype)
    names = cache_names(layers)
    specs = [tf.TensorSpec([1, length, heads, head_dim], dtype, name=n) for n in names]

    def signature(n):
        def run(tokens, input_pos, *caches):
            logits, out = _layerwise(model, tokens, list(caches), input_pos[0])
            return {"logits": logits, **dict(zip(names, out))}

        return tf.function(run, input_signature=[tf.TensorSpec([1, n], tf.int32, name="tokens"),
                                                 tf.TensorSpec([n], tf.int32, name="input_pos"), *specs]).get_concrete_function()

    return tflite_of(signature, [v.value for v in model.weights], path, prefill_lengths)


def tflite_of(signature, weights, path, prefill_lengths) -> dict:
    """``path`` (model.tflite): ``prefill_<n>`` (``signature(n)``) per prompt length and ``decode`` (``signature(1)``),
    batch 1, built-in ops only, from a SavedModel of those signatures over ``weights``; the report's description.
    Ops TFLite has no built-in for exit 2, named."""
    import shutil
    import tempfile
    from pathlib import Path

    from porter.errors import PorterError
    from porter.process.frameworks import tensorflow

    tf = tensorflow()
    keys = [f"prefill_{n}" for n in prefill_lengths] + ["decode"]
    root = tf.Module()
    root.weights = weights
    work = Path(tempfile.mkdtemp(prefix="porter-kv-tflite-"))
    try:
        tf.saved_model.save(root, str(work), signatures=dict(zip(keys, [signature(n) for n in prefill_lengths] + [signature(1)])))
        converter = tf.lite.TFLiteConverter.from_saved_model(str(work), signature_keys=keys)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        try:
            Path(path).write_bytes(converter.convert())
        except Exception as exc:  # noqa: BLE001 - the converter's ConverterError: name the ops it refused
            lines = [line.strip() for line in str(exc).splitlines() if "op" in line.lower()][:8]
            raise PorterError("TFLite's converter could not write the prefill/decode .tflite with built-in ops only",
                              problems=lines, hint="leave --prefill-lengths out (the SavedModel's prefill/decode "
                                                   "signatures are written either way)") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"file": Path(path).name, "signatures": keys, "batch": 1, "prefill_lengths": list(prefill_lengths),
            "inputs": "tokens (1, len) int32, input_pos (len,) int32, kv_cache_k_{i}, kv_cache_v_{i}",
            "outputs": "logits (1, len, vocab) float32, kv_cache_k_{i}, kv_cache_v_{i}", "ops": "TFLite built-ins only"}

"""Causal LMs of the graph route serve with a KV cache (routes/graph_kv_cache.py): transformers' own forward with a
functional cache, exported once, converted by porter's ATen -> TF converter, wrapped as the direct route's
prefill/decode signatures and as a batch-1 .tflite (prefill_<n> + decode, built-in ops only); verified by greedy
generation in a TensorFlow-only and a LiteRT-only process against transformers' generate: Gemma2 (sliding-window
layers: 32 new tokens run past its window of 4); benchmarks/graph_kv_generation.py runs every graph-route decoder.
Falcon: a decode that puts every row at the batch's longest position fails the check; the KV flags on what cannot serve them
exit 2 with nothing written."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

CACHE = 48


def _bench():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "graph_kv_generation.py"
    spec = importlib.util.spec_from_file_location("porter_bench_graph_kv_generation", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_causal_lm = _bench().make_causal_lm  # graph_architectures' tiny decoder as its *ForCausalLM, attention scaled up


@pytest.fixture(scope="module")
def cli():
    from cli_runner import make_cli

    return make_cli()


@pytest.fixture(scope="module", params=["gemma2"])
def converted(request, tmp_path_factory, cli):
    root = tmp_path_factory.mktemp(f"graph-kv-{request.param}")
    src = make_causal_lm(root / "hf", request.param)
    code, output = cli("convert", src, "--from", "torch", "--to", "tf", "--route", "graph", "--out", root / "tf",
                       "--max-cache-len", CACHE, "--prefill-lengths", "8,16")
    assert code == 0, output
    return request.param, root / "tf", output


def test_saved_model_and_tflite_generate_as_transformers(converted):
    name, out, output = converted
    report = json.loads((out / "porter_report.json").read_text())
    assert report["route"] == "graph"
    gen = report["generation"]
    assert gen["passed"], gen
    assert gen["tokens_matched"] == gen["tokens"] == 96 and len(set(gen["prompt_lengths"])) == 3
    assert all(p["first_divergence"] is None and p["max_abs"] <= 1e-4 for p in gen["prompts"])
    assert not any(gen["child"]["imported"][m] for m in ("porter", "torch", "keras_hub"))  # TensorFlow alone
    lite = gen["tflite"]
    assert lite["passed"] and lite["tokens_matched"] == 96, lite
    assert "LiteRT-only" in lite["candidate"]
    layout = report["kv_cache"]
    assert layout["max_cache_len"] == CACHE and layout["layers"] == 2
    assert layout["tflite"]["signatures"] == ["prefill_8", "prefill_16", "decode"]
    assert "96/96 tokens" in output


def test_signatures_names_layout_and_bounds(converted):
    """prefill/decode beside serving_default, the cache passed back by name in (batch, slots, kv heads, head dim);
    a position at the cache's end fails the call instead of writing a clamped slot."""
    tf = pytest.importorskip("tensorflow")
    import numpy as np

    _, out, _ = converted
    model = tf.saved_model.load(str(out))
    assert {"serving_default", "prefill", "decode"} <= set(model.signatures)
    ids = tf.constant([[5, 6, 7, 0], [8, 9, 10, 11]], tf.int32)
    mask = tf.constant([[1, 1, 1, 0], [1, 1, 1, 1]], tf.int32)
    pre = model.signatures["prefill"](input_ids=ids, attention_mask=mask)
    assert pre["cache_position"].numpy().tolist() == [3, 4]
    assert pre["kv_cache_k_0"].shape[:2] == (2, CACHE)
    assert not np.any(pre["kv_cache_k_0"].numpy()[0, 3:])  # the padded position's K zeroed
    state = {k: v for k, v in pre.items() if k.startswith("kv_cache_")}
    with pytest.raises(tf.errors.InvalidArgumentError, match="max_cache_len"):
        model.signatures["decode"](input_ids=ids[:, :1], cache_position=tf.constant([CACHE, 3], tf.int32), **state)


def test_decode_at_one_position_for_the_batch_fails(tmp_path, cli, monkeypatch):
    """Every row decoded at the batch's longest position (the right-padded shorter prompts then skip slots and
    attend to padding): the greedy tokens of the shorter prompts differ, the conversion exits 1 and the report says
    where generation first diverged, while serving_default (no cache) still verifies."""
    import tensorflow as tf

    real = tf.map_fn

    def one_position(fn, elems, **kwargs):  # graph_kv_cache's decode maps over (ids, cache_position, *caches) per row
        ids, position, *caches = elems
        return real(fn, (ids, tf.fill(tf.shape(position), tf.reduce_max(position)), *caches), **kwargs)

    monkeypatch.setattr(tf, "map_fn", one_position)
    src = make_causal_lm(tmp_path / "hf", "falcon")
    code, output = cli("convert", src, "--from", "torch", "--to", "tf", "--route", "graph", "--out", tmp_path / "tf",
                       "--max-cache-len", CACHE)
    assert code == 1, output
    report = json.loads((tmp_path / "tf" / "porter_report.json").read_text())
    assert report["verification"]["status"] != "passed"
    assert max(report["verification"]["max_abs_error"].values()) <= 1e-4  # serving_default is right
    gen = report["generation"]
    shortest = min(gen["prompts"], key=lambda p: p["length"])
    assert not gen["passed"] and shortest["first_divergence"] is not None
    assert "generation (FAILED)" in output


def test_kv_flags_on_a_model_that_is_not_a_causal_lm_exit_2(tmp_path, cli):
    from hf_tiny import make_tiny

    src = make_tiny(tmp_path / "hf", "bert-cls")
    code, output = cli("convert", src, "--from", "torch", "--to", "tf", "--route", "graph", "--out", tmp_path / "tf",
                       "--prefill-lengths", "8")
    assert code == 2, output
    assert "--prefill-lengths 8" in output and "not a causal LM" in output
    assert not (tmp_path / "tf").exists()


def test_max_cache_len_beyond_positions_on_the_graph_route_exit_2(tmp_path, cli):
    src = make_causal_lm(tmp_path / "hf", "falcon")  # max_position_embeddings=64
    code, output = cli("convert", src, "--from", "torch", "--to", "tf", "--route", "graph", "--out", tmp_path / "tf",
                       "--max-cache-len", 500)
    assert code == 2, output
    assert "--max-cache-len 500" in output and "max_position_embeddings=64" in output
    assert not (tmp_path / "tf").exists()

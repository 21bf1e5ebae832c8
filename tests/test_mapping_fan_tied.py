"""The rule engine's split/concat, heads reshape and tied tensors: both directions, whole plan checked."""

import numpy as np
import pytest

from porter.errors import MappingError, PorterError
from porter.mapping import Concat, RuleSet, Split, run_ops

QKV = ["blk_{i}/query/kernel", "blk_{i}/key/kernel", "blk_{i}/value/kernel"]
RULES = {
    "torch": {"ignore": ["{prefix}h.{i}.attn.bias"]},
    "rules": [
        # a fused (in, 3*out) projection -> three (in, heads, head_dim) kernels
        {"torch": "{prefix}h.{i}.c_attn.weight", "tf": QKV, "ops": [{"op": "split", "axis": -1}, "reshape"]},
        # a torch Linear (out, in) -> heads-first (heads, in, head_dim), as keras-hub's Gemma
        {"torch": "{prefix}h.{i}.q.weight", "tf": "blk_{i}/q/kernel", "ops": ["reshape", {"op": "transpose", "perm": [0, 2, 1]}]},
        {"torch": "{prefix}wte.weight", "tf": "emb/embeddings"},
        {"torch": "lm_head.weight", "tf": "emb/reverse_embeddings", "ops": ["transpose"], "tied_to": "{prefix}wte.weight"},
    ],
}
HID, HEADS, HD, VOCAB = 8, 2, 4, 11


def _torch(rng, prefix="", head=True):
    out = {}
    for i in range(2):
        out[f"{prefix}h.{i}.c_attn.weight"] = rng.normal(size=(HID, 3 * HID)).astype(np.float32)
        out[f"{prefix}h.{i}.q.weight"] = rng.normal(size=(HEADS * HD, HID)).astype(np.float32)
        out[f"{prefix}h.{i}.attn.bias"] = np.ones((1, 1, 4, 4), np.float32)  # a mask buffer: ignored
    out[f"{prefix}wte.weight"] = rng.normal(size=(VOCAB, HID)).astype(np.float32)
    if head:
        out["lm_head.weight"] = rng.normal(size=(VOCAB, HID)).astype(np.float32)
    return out


def _tf_shapes(reverse=True):
    shapes = {f"blk_{i}/{n}/kernel": (HID, HEADS, HD) for i in range(2) for n in ("query", "key", "value")}
    shapes |= {f"blk_{i}/q/kernel": (HEADS, HID, HD) for i in range(2)}
    shapes["emb/embeddings"] = (VOCAB, HID)
    if reverse:
        shapes["emb/reverse_embeddings"] = (HID, VOCAB)
    return shapes


def _shapes(d):
    return {k: v.shape for k, v in d.items()}


def test_split_reshape_and_transpose_values():
    src = _torch(np.random.default_rng(0), "model.")
    fwd = RuleSet.from_toml(RULES, "t", source="torch", prefix="model.")
    tf = dict(fwd.plan(_shapes(src), _tf_shapes()).run(src.get))
    w = src["model.h.1.c_attn.weight"]
    np.testing.assert_array_equal(tf["blk_1/key/kernel"], w[:, HID : 2 * HID].reshape(HID, HEADS, HD))
    q = src["model.h.0.q.weight"]  # row h*HD+d of the Linear is head h, dim d
    np.testing.assert_array_equal(tf["blk_0/q/kernel"][1, :, 3], q[1 * HD + 3])
    np.testing.assert_array_equal(tf["emb/reverse_embeddings"], src["lm_head.weight"].T)  # untied: its own tensor


@pytest.mark.parametrize("tied", [False, True])
def test_round_trip_bit_exact(tied):
    src = _torch(np.random.default_rng(1), "model.", head=not tied)
    fwd = RuleSet.from_toml(RULES, "t", source="torch", prefix="model.", tied=tied)
    tf = dict(fwd.plan(_shapes(src), _tf_shapes()).run(src.get))
    if tied:  # the tf side's own copy of the tied table
        np.testing.assert_array_equal(tf["emb/reverse_embeddings"], src["model.wte.weight"].T)
    back_rules = RuleSet.from_toml(RULES, "t", source="tf", prefix="model.", tied=tied)
    torch_shapes = {k: v.shape for k, v in _torch(np.random.default_rng(1), "model.").items() if "attn.bias" not in k}
    back = dict(back_rules.plan(_shapes(tf), torch_shapes).run(tf.get))
    expect = {k: v for k, v in src.items() if "attn.bias" not in k}
    assert set(back) == set(expect)  # tied: lm_head.weight is not written (transformers 5 does not store it)
    for k, v in back.items():
        assert v.tobytes() == expect[k].tobytes(), k


def test_tied_model_without_reverse_variable_and_stale_head_ignored():
    src = _torch(np.random.default_rng(2), "")  # an older checkpoint that still stores the tied head
    plan = RuleSet.from_toml(RULES, "t", source="torch", prefix="", tied=True).plan(_shapes(src), _tf_shapes(reverse=False))
    assert "lm_head.weight" in plan.ignored
    assert "emb/reverse_embeddings" not in {s.target for s in plan.steps}


def test_untied_without_head_is_a_missing_tensor():
    src = _torch(np.random.default_rng(3), "", head=False)
    with pytest.raises(MappingError, match="nothing fills 'emb/reverse_embeddings'"):
        RuleSet.from_toml(RULES, "t", source="torch", prefix="").plan(_shapes(src), _tf_shapes())


def test_split_problems_reported_together():
    src = _torch(np.random.default_rng(4), "")
    src["h.0.c_attn.weight"] = np.zeros((HID, 3 * HID + 3), np.float32)  # not three equal heads' worth
    shapes = _tf_shapes()
    del shapes["blk_1/value/kernel"]
    with pytest.raises(MappingError) as err:
        RuleSet.from_toml(RULES, "t", source="torch", prefix="").plan(_shapes(src), shapes)
    text = str(err.value)
    assert "2 problem(s)" in text
    assert "shape mismatch: 'h.0.c_attn.weight' (8, 27) -> split -> reshape" in text
    assert "'blk_1/value/kernel', which the target model does not have" in text


def test_concat_needs_every_part():
    back = RuleSet.from_toml(RULES, "t", source="tf", prefix="", tied=True)
    tf = {k: np.zeros(s, np.float32) for k, s in _tf_shapes().items() if k != "blk_0/key/kernel"}
    torch_shapes = _shapes({k: v for k, v in _torch(np.random.default_rng(5), "").items() if "attn.bias" not in k})
    with pytest.raises(MappingError, match="missing 'blk_0/key/kernel'"):
        back.plan(_shapes(tf), torch_shapes)


def test_split_concat_inverse_and_sizes():
    x = np.arange(2 * 10, dtype=np.float32).reshape(2, 10)
    split = Split(axis=1, sizes=(2, 3, 5), parts=3)
    parts = run_ops((split,), [x], [(2, 2), (2, 3), (2, 5)])
    assert [p.shape for p in parts] == [(2, 2), (2, 3), (2, 5)]
    assert isinstance(split.inverse(), Concat)
    np.testing.assert_array_equal(run_ops((split.inverse(),), parts, [(2, 10)])[0], x)


def test_bad_fan_rules_are_errors():
    bad = {"rules": [{"torch": "a.weight", "tf": ["x", "y"], "ops": ["transpose"]}]}
    with pytest.raises(PorterError, match="need a 'split' op"):
        RuleSet.from_toml(bad, "t", source="torch")
    bad = {"rules": [{"torch": "a.{i}.weight", "tf": "x_{i}", "tied_to": "b.weight"}]}
    with pytest.raises(PorterError, match="tied tensor is one tensor"):
        RuleSet.from_toml(bad, "t", source="torch")

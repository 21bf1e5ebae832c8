"""The rule engine on its own: patterns, inverses, whole-plan checks."""

import numpy as np
import pytest

from porter.errors import MappingError, PorterError
from porter.mapping import RuleSet, Transpose

RULES = {
    "torch": {"ignore": ["buffers.{name}"], "optional_prefix": "{root}."},
    "rules": [
        {"torch": "layer.{i}.dense.weight", "tf": "{root}/layer_{i}/dense/kernel", "ops": ["transpose"]},
        {"torch": "layer.{i}.dense.bias", "tf": "{root}/layer_{i}/dense/bias"},
        {"torch": "conv.weight", "tf": "{root}/conv/kernel", "ops": [{"op": "transpose", "perm": [2, 3, 1, 0]}]},
        {"torch": "flat.weight", "tf": "{root}/flat/kernel", "ops": ["reshape"]},
    ],
}


def _shapes(d):
    return {k: v.shape for k, v in d.items()}


def _torch_side(rng):
    return {
        "m.layer.0.dense.weight": rng.normal(size=(4, 3)).astype(np.float32),
        "m.layer.0.dense.bias": rng.normal(size=(4,)).astype(np.float32),
        "m.layer.1.dense.weight": rng.normal(size=(4, 4)).astype(np.float32),
        "m.layer.1.dense.bias": rng.normal(size=(4,)).astype(np.float32),
        "m.conv.weight": rng.normal(size=(8, 3, 5, 5)).astype(np.float32),
        "m.flat.weight": rng.normal(size=(6, 2)).astype(np.float32),
        "m.buffers.position_ids": np.arange(5),
    }


TF_SHAPES = {
    "m/layer_0/dense/kernel": (3, 4), "m/layer_0/dense/bias": (4,),
    "m/layer_1/dense/kernel": (4, 4), "m/layer_1/dense/bias": (4,),
    "m/conv/kernel": (5, 5, 3, 8), "m/flat/kernel": (12,),
}


def test_round_trip_is_bit_exact():
    src = _torch_side(np.random.default_rng(0))
    fwd = RuleSet.from_toml(RULES, "t", source="torch", root="m")
    tf_side = dict(fwd.plan(_shapes(src), TF_SHAPES).run(src.get))
    assert tf_side["m/layer_0/dense/kernel"].shape == (3, 4)
    np.testing.assert_array_equal(tf_side["m/conv/kernel"], src["m.conv.weight"].transpose(2, 3, 1, 0))
    back_rules = RuleSet.from_toml(RULES, "t", source="tf", root="m")
    torch_shapes = {k.removeprefix("m."): v.shape for k, v in src.items() if "buffers" not in k}
    back = dict(back_rules.plan(_shapes(tf_side), torch_shapes).run(tf_side.get))
    for k, v in back.items():
        assert v.tobytes() == src["m." + k].tobytes(), k
    assert set(back) == set(torch_shapes)


def test_all_problems_reported_together():
    src = _torch_side(np.random.default_rng(0))
    del src["m.layer.1.dense.bias"]  # missing
    src["m.layer.0.extra.weight"] = np.zeros((2,), np.float32)  # unexpected
    src["m.layer.0.dense.weight"] = np.zeros((4, 5), np.float32)  # wrong shape
    rules = RuleSet.from_toml(RULES, "t", source="torch", root="m")
    with pytest.raises(MappingError) as err:
        rules.plan(_shapes(src), TF_SHAPES)
    text = str(err.value)
    assert "3 problem(s)" in text
    assert "m/layer_1/dense/bias" in text and "expected from 'm.layer.1.dense.bias'" in text
    assert "unexpected tensor 'm.layer.0.extra.weight'" in text
    assert "shape mismatch: 'm.layer.0.dense.weight' (4, 5)" in text


def test_transpose_inverse():
    perm = (2, 3, 1, 0)
    x = np.random.default_rng(1).normal(size=(2, 3, 4, 5))
    t = Transpose(perm)
    np.testing.assert_array_equal(t.inverse().apply(t.apply(x, None), None), x)


def test_bad_rule_files_are_errors():
    with pytest.raises(PorterError, match="unknown mapping operation 'flip'"):
        RuleSet.from_toml({"rules": [{"torch": "a", "tf": "b", "ops": ["flip"]}]}, "t", source="torch")
    with pytest.raises(PorterError, match="different placeholders"):
        RuleSet.from_toml({"rules": [{"torch": "a.{i}", "tf": "b"}]}, "t", source="torch")
    with pytest.raises(PorterError, match="no mapping rules for 'nope'"):
        RuleSet.load("nope", source="torch")


def test_bert_rules_cover_both_directions():
    fwd = RuleSet.load("bert", source="torch", root="bert")
    back = RuleSet.load("bert", source="tf", root="bert")
    assert len(fwd.rules) == len(back.rules) >= 16
    assert fwd.rules[0].target == "bert/embeddings/word_embeddings/weight"

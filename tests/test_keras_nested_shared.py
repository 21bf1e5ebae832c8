"""The keras layers writer on nested models and shared layers: a functional backbone inside a functional model,
a Sequential used twice, two levels of nesting, a siamese Dense tower and a shared Embedding(mask_zero)+LSTM.
A nested model's layers are written inline (named after them, their Keras variables mapped by path); a shared
layer (and every layer of a nested model used twice) is one torch module called at each call site, so its
weights are shared and their gradients add up as in Keras. Each model matches Keras at two input shapes (fp32,
abs 1e-5) and takes one float64 `--train` step as Keras does."""

import re

import numpy as np
import pytest
from keras_layers_support import check, informative, keras
from tests_support import convert_keras_strict, load_written_model

RNG = np.random.default_rng(0)


def _normal(*shape):
    return RNG.normal(size=shape).astype("float32")


def _ids(batch, steps, vocab=50, seed=0):
    """Ids with padding (0) at the end of one row and at the start of another: masked timesteps."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, vocab, size=(batch, steps)).astype("int32")
    ids[0, -2:] = 0
    ids[-1, :2] = 0
    return ids


def _backbone(k, name="backbone"):
    """A functional CNN: Conv/BN/ReLU/pool, the usual keras.applications pieces."""
    image = k.Input((None, None, 3), name=f"{name}_in")
    x = k.layers.Conv2D(6, 3, padding="same", use_bias=False, name=f"{name}_conv1")(image)
    x = k.layers.BatchNormalization(name=f"{name}_bn1")(x)
    x = k.layers.ReLU(name=f"{name}_relu1")(x)
    x = k.layers.MaxPooling2D(2, name=f"{name}_pool")(x)
    x = k.layers.Conv2D(8, 3, padding="same", name=f"{name}_conv2")(x)
    return k.Model(image, k.layers.GlobalAveragePooling2D(name=f"{name}_gap")(x), name=name)


def _module_lines(code: str, attr: str) -> list[str]:
    return [line for line in code.splitlines() if re.match(rf"\s+self\.{attr} = ", line)]


def test_functional_backbone_nested_in_functional_model(tmp_path):
    k = keras()
    k.utils.set_random_seed(0)
    backbone = _backbone(k)
    image = k.Input((None, None, 3), name="image")
    features = backbone(image)
    logits = k.layers.Dense(4, name="logits")(k.layers.Dense(8, activation="relu", name="fc")(features))
    model = informative(k.Model(image, logits, name="nested_backbone"))
    code = check(model, [[_normal(2, 8, 8, 3)], [_normal(3, 10, 6, 3)]], tmp_path)
    assert "self.backbone_conv1 = nn.Conv2d(3, 6" in code and "'backbone/backbone_conv1'" in code
    assert "self.logits = nn.Linear(8, 4" in code
    report = (tmp_path / "nested_backbone-torch" / "porter_report.json").read_text()
    assert '"layer": "backbone/backbone_bn1"' in report


def test_frozen_backbone_is_buffers(tmp_path):
    """Transfer learning: backbone.trainable = False; its weights are buffers, the head trains."""
    k = keras()
    k.utils.set_random_seed(1)
    backbone = _backbone(k)
    backbone.trainable = False
    image = k.Input((8, 8, 3), name="image")
    model = informative(k.Model(image, k.layers.Dense(3, name="head")(backbone(image)), name="frozen_backbone"))
    check(model, [[_normal(2, 8, 8, 3)], [_normal(1, 8, 8, 3)]], tmp_path)
    torch_model = load_written_model(tmp_path / "frozen_backbone-torch")
    trainable = {n for n, p in torch_model.named_parameters() if p.requires_grad}
    assert trainable == {"head.weight", "head.bias"}


def test_sequential_used_twice(tmp_path):
    """A Sequential block applied twice: its layers are shared (one module each, two calls)."""
    k = keras()
    k.utils.set_random_seed(2)
    block = k.Sequential([k.Input((6,)), k.layers.Dense(6, activation="tanh", name="blk_dense"),
                          k.layers.LayerNormalization(name="blk_norm")], name="block")
    x = k.Input((6,), name="x")
    y = block(block(x))
    model = informative(k.Model(x, k.layers.Dense(2, name="out")(y), name="seq_twice"))
    code = check(model, [[_normal(2, 6)], [_normal(5, 6)]], tmp_path)
    assert len(_module_lines(code, "blk_dense")) == 1 and len(_module_lines(code, "blk_norm")) == 1
    assert code.count("self.blk_dense(") == 2 and code.count("self.blk_norm(") == 2
    assert "blk_dense_call2 = torch.tanh(self.blk_dense(blk_norm))" in code


def test_two_levels_of_nesting_and_a_nested_multi_output_model(tmp_path):
    """A functional encoder holding a Sequential, inside the model; and a nested model with two outputs."""
    k = keras()
    k.utils.set_random_seed(3)
    inner = k.Sequential([k.Input((None, 4)), k.layers.Dense(5, name="inner_dense"),
                          k.layers.Activation("relu", name="inner_relu")], name="inner")
    e_in = k.Input((None, 4), name="enc_in")
    h = inner(e_in)
    h = k.layers.Dense(5, name="enc_dense")(h) + h  # a keras.ops add inside the nested model
    encoder = k.Model(e_in, h, name="encoder")
    s_in = k.Input((None, 5), name="split_in")
    split = k.Model(s_in, [k.layers.Dense(3, name="split_a")(s_in), k.layers.GlobalAveragePooling1D(name="split_b")(s_in)],
                    name="split")
    x = k.Input((None, 4), name="x")
    a, b = split(encoder(x))
    model = informative(k.Model(x, [a, k.layers.Dense(2, name="head")(b)], name="two_levels"))
    code = check(model, [[_normal(2, 5, 4)], [_normal(3, 7, 4)]], tmp_path)
    assert "'encoder/inner/inner_dense'" in code and "'split/split_a'" in code


def test_siamese_shared_dense_tower(tmp_path):
    k = keras()
    k.utils.set_random_seed(4)
    left, right = k.Input((10,), name="left"), k.Input((10,), name="right")
    tower = k.layers.Dense(8, activation="relu", name="tower")
    proj = k.layers.Dense(6, name="proj")
    ea, eb = proj(tower(left)), proj(tower(right))
    merged = k.layers.Concatenate(name="cat")([k.layers.Subtract(name="diff")([ea, eb]), k.layers.Multiply(name="prod")([ea, eb])])
    model = informative(k.Model([left, right], k.layers.Dense(1, name="same")(merged), name="siamese"))
    code = check(model, [[_normal(2, 10), _normal(2, 10)], [_normal(4, 10), _normal(4, 10)]], tmp_path)
    assert len(_module_lines(code, "tower")) == 1 and len(_module_lines(code, "proj")) == 1
    assert "(shared: called 2 times)" in code
    assert "tower = torch.relu(self.tower(left))" in code and "tower_call2 = torch.relu(self.tower(right))" in code
    assert "diff = proj - proj_call2" in code


def test_shared_embedding_mask_and_lstm(tmp_path):
    """Question pairs: one Embedding(mask_zero=True) and one LSTM on two inputs; each call's mask is its own."""
    k = keras()
    k.utils.set_random_seed(5)
    q1 = k.Input((None,), dtype="int32", name="q1")
    q2 = k.Input((None,), dtype="int32", name="q2")
    emb = k.layers.Embedding(50, 6, mask_zero=True, name="embed")
    enc = k.layers.LSTM(4, name="enc")
    v1, v2 = enc(emb(q1)), enc(emb(q2))
    out = k.layers.Dense(2, name="dup")(k.layers.Concatenate(name="cat")([v1, v2, k.layers.Multiply(name="prod")([v1, v2])]))
    model = informative(k.Model([q1, q2], out, name="shared_lstm"))
    code = check(model, [[_ids(3, 6), _ids(3, 4, seed=1)], [_ids(2, 9, seed=2), _ids(2, 7, seed=3)]], tmp_path)
    assert len(_module_lines(code, "embed")) == 1 and len(_module_lines(code, "enc")) == 1
    assert code.count("self.enc(") == 2


def test_shared_weight_is_one_parameter_in_both_branches(tmp_path):
    """Negative: the shared layer is one module; perturbing its weight in torch moves both branches (two
    modules with copied weights would leave one branch as it was)."""
    import torch

    k = keras()
    k.utils.set_random_seed(6)
    left, right = k.Input((5,), name="left"), k.Input((5,), name="right")
    tower = k.layers.Dense(3, name="tower")
    model = informative(k.Model([left, right], [tower(left), tower(right)], name="two_branches"))
    out, result = convert_keras_strict(model, tmp_path)
    assert result.route == "keras layers" and result.passed, result.verification.failures()
    code = (out / "model.py").read_text()
    assert len(_module_lines(code, "tower")) == 1 and not _module_lines(code, "tower_call2")
    torch_model = load_written_model(out)
    assert [n for n, _ in torch_model.named_parameters()] == ["tower.weight", "tower.bias"]
    a, b = torch.from_numpy(_normal(2, 5)), torch.from_numpy(_normal(2, 5))
    with torch.no_grad():
        before = [t.clone() for t in torch_model(a, b)]
        torch_model.tower.weight.add_(0.1)
        after = torch_model(a, b)
    assert all(float((x - y).abs().max()) > 1e-2 for x, y in zip(before, after))


def test_nested_layer_named_like_an_outer_layer_is_refused():
    """Two Keras variables on one path ('dense/kernel' inside the nested model and outside): the weights
    are mapped by path, so the plan names the clash rather than guessing."""
    from porter.keras_to_torch.codegen import plan_model

    k = keras()
    i = k.Input((4,))
    sub = k.Model(i, k.layers.Dense(4, name="dense")(i), name="sub")
    x = k.Input((4,), name="x")
    plan = plan_model(k.Model(x, k.layers.Dense(2, name="dense")(sub(x))))
    assert "share the path(s) 'dense/bias', 'dense/kernel'" in "; ".join(plan.unsupported)


def test_subclassed_nested_model_is_named():
    from porter.keras_to_torch.codegen import plan_model

    k = keras()

    class Block(k.Model):
        def __init__(self):
            super().__init__(name="block")
            self.d = k.layers.Dense(3)

        def call(self, x):
            return self.d(x)

    x = k.Input((4,), name="x")
    plan = plan_model(k.Model(x, Block()(x)))
    assert "'block' (Block) is a nested model that is not functional" in "; ".join(plan.unsupported)


def test_a_mask_crossing_a_nested_model_is_read():
    """Keras hands a mask across a nested model's boundary at run time (into it, or out of its Embedding) while
    neither graph shows it: the reader replays the graph, so the consumer gets it (numbers:
    tests/test_keras_writer_refusals.py)."""
    from porter.keras_to_torch.codegen import plan_model

    k = keras()
    i = k.Input((None, 6))
    encoder = k.Model(i, k.layers.LSTM(3, name="inner_lstm")(i), name="encoder")
    q = k.Input((None,), dtype="int32", name="q")
    plan = plan_model(k.Model(q, encoder(k.layers.Embedding(50, 6, mask_zero=True, name="emb")(q))))
    assert not plan.unsupported
    assert plan.graph.calls[-1].name == "encoder/inner_lstm" and plan.graph.calls[-1].in_masks[0] is not None

    i = k.Input((None,), dtype="int32")
    embedder = k.Model(i, k.layers.Embedding(50, 6, mask_zero=True, name="emb2")(i), name="embedder")
    e = embedder(q)
    plan = plan_model(k.Model(q, [e, k.layers.LSTM(3, name="outer_lstm")(e)]))
    assert not plan.unsupported
    lstm = next(c for c in plan.graph.calls if c.name == "outer_lstm")
    assert lstm.in_masks[0] is not None


# Written correctly (porter verify passes); verify --train needs two fixes outside the writer: training_localise's
# probe is built from the top-level layers called once (none here: k.Model(inputs, []) raises), and training.py
# zeroes Dropout rates in keras_model.layers only (not inside a nested model). Strict: drop the mark once fixed.

def test_nested_models_only_with_dropout_inside(tmp_path):
    """The corpus' 'nested': a Sequential backbone and a functional head holding Dropout, nothing else on top."""
    k = keras()
    k.utils.set_random_seed(7)
    L = k.layers
    backbone = k.Sequential([k.Input((None, None, 3)), L.Conv2D(6, 3, padding="same", use_bias=False, name="bb_conv"),
                             L.BatchNormalization(name="bb_bn"), L.ReLU(name="bb_relu"),
                             L.GlobalAveragePooling2D(name="bb_gap")], name="backbone")
    f_in = k.Input((6,))
    head = k.Model(f_in, L.Dense(3, name="head_out")(L.Dropout(0.2, name="head_drop")(L.Dense(8, name="head_fc")(f_in))),
                   name="head")
    image = k.Input((None, None, 3), name="image")
    model = informative(k.Model(image, head(backbone(image)), name="nested_only"))
    check(model, [[_normal(2, 8, 8, 3)], [_normal(3, 6, 10, 3)]], tmp_path)


def test_shared_lstm_with_states_on_two_inputs(tmp_path):
    """Every top-level layer shared (an LSTM with return_state on two sequences): multi-output shared calls."""
    k = keras()
    k.utils.set_random_seed(8)
    a, b = k.Input((None, 4), name="a"), k.Input((None, 4), name="b")
    lstm = k.layers.LSTM(3, return_state=True, name="lstm")
    o1, _, c1 = lstm(a)
    o2, h2, _ = lstm(b)
    model = informative(k.Model([a, b], [o1, c1, o2, h2], name="shared_state"))
    code = check(model, [[_normal(2, 5, 4), _normal(2, 3, 4)], [_normal(3, 4, 4), _normal(3, 6, 4)]], tmp_path)
    assert "lstm_call2, lstm_call2_1, lstm_call2_2 = self.lstm(b" in code

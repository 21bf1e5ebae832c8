"""torch and ONNX models outside the zoo: --to onnx and --from onnx on the ONNX route, --to tf on the graph route
(no onnx2tf: ONNX -> TF goes through porter's ONNX -> torch converter and torch.export), and their bad input."""

import json

import numpy as np
import pytest

import porter
from tests_support import BATCH, BATCH_AND_SEQ, save_pt2


def _custom_module():
    import torch
    from torch import nn

    class ConvAttention(nn.Module):  # not in porter's zoo: conv + multi-head attention + layer norm
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 16, 3, padding=1)
            self.attn = nn.MultiheadAttention(16, 4, batch_first=True)
            self.norm = nn.LayerNorm(16)
            self.head = nn.Linear(16, 5)

        def forward(self, image):
            h = torch.relu(self.conv(image))
            seq = h.flatten(2).transpose(1, 2)
            a, _ = self.attn(seq, seq, seq, need_weights=False)
            seq = self.norm(seq + a)
            return {"logits": self.head(seq.mean(1)), "tokens": seq}

    torch.manual_seed(0)
    model = ConvAttention().eval()
    with torch.no_grad():  # LayerNorm away from 1/0, so a dropped affine would show
        model.norm.weight.add_(torch.randn(16) * 0.3)
        model.norm.bias.add_(torch.randn(16) * 0.3)
    return model


@pytest.fixture(scope="module")
def custom_pt2(tmp_path_factory):
    import torch

    path = tmp_path_factory.mktemp("pt2") / "conv_attention.pt2"
    return save_pt2(_custom_module(), torch.randn(2, 3, 8, 8), path, {0: ("batch", 1, 1024)})


@pytest.fixture(scope="module")
def custom_onnx(custom_pt2, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx") / "conv_attention-onnx"
    result = porter.convert(str(custom_pt2), source="torch", target="onnx", out=out)
    assert result.passed and result.route == "onnx"
    return out / "model.onnx"


def _report(out):
    return json.loads((out / "porter_report.json").read_text())


def test_custom_module_torch_to_tf_keeps_names(cli, custom_pt2, tmp_path):
    out = tmp_path / "tf"
    code, output = cli("convert", custom_pt2, "--from", "torch", "--to", "tf", "--out", out)
    assert code == 0, output
    assert "route: graph" in output
    report = _report(out)
    assert report["route"] == "graph" and report["status"] == "passed"
    assert max(report["verification"]["max_abs_error"].values()) <= 1e-5
    assert report["static_dims"] == [] and report["dynamic_dims_kept"]
    assert len(report["verification"]["shapes"]) == 2  # verified at two batch sizes
    assert report["layout"]["candidate"] == "nchw"
    from porter.process.frameworks import tensorflow

    tf = tensorflow()
    fn = tf.saved_model.load(str(out)).signatures["serving_default"]
    _, specs = fn.structured_input_signature
    assert list(specs) == ["image"] and specs["image"].shape.as_list() == [None, 3, 8, 8]
    assert sorted(fn.structured_outputs) == ["logits", "tokens"]
    import torch

    x = np.random.default_rng(5).standard_normal((5, 3, 8, 8)).astype("float32")  # a batch never seen before
    want = _custom_module()(torch.from_numpy(x))
    got = fn(image=tf.constant(x))
    assert np.abs(got["logits"].numpy() - want["logits"].detach().numpy()).max() <= 1e-5
    assert np.abs(got["tokens"].numpy() - want["tokens"].detach().numpy()).max() <= 1e-5


def test_from_onnx_to_tf_without_onnx2tf(cli, custom_onnx, tmp_path):
    """ONNX -> TF: porter's ONNX -> torch converter, torch.export, the graph converter; onnxruntime is the
    reference, the names and the dynamic batch carry through, and a batch never verified matches."""
    out = tmp_path / "tf"
    code, output = cli("convert", custom_onnx, "--from", "onnx", "--to", "tf", "--out", out)
    assert code == 0, output
    report = _report(out)
    assert report["route"] == "graph" and report["from"] == "onnx" and report["static_dims"] == []
    assert "onnxruntime" in report["comparison"]["reference"]
    assert max(report["verification"]["max_abs_error"].values()) <= 1e-5
    import onnxruntime as ort

    from porter.process.frameworks import tensorflow

    tf = tensorflow()
    fn = tf.saved_model.load(str(out)).signatures["serving_default"]
    assert fn.structured_input_signature[1]["image"].shape.as_list() == [None, 3, 8, 8]
    x = np.random.default_rng(6).standard_normal((7, 3, 8, 8)).astype("float32")
    want = dict(zip(["logits", "tokens"], ort.InferenceSession(str(custom_onnx)).run(["logits", "tokens"], {"image": x})))
    got = fn(image=tf.constant(x))
    for name in ("logits", "tokens"):
        assert np.abs(got[name].numpy() - want[name]).max() <= 1e-5


def test_to_onnx_is_checked_against_onnxruntime(custom_onnx):
    report = _report(custom_onnx.parent)
    assert report["status"] == "passed" and report["to"] == "onnx"
    assert report["verification"]["candidate"].endswith("model.onnx")
    assert len(report["verification"]["shapes"]) == 2  # dynamic batch: two batch sizes
    import onnx

    model = onnx.load(str(custom_onnx))
    assert [i.name for i in model.graph.input] == ["image"]
    assert [o.name for o in model.graph.output] == ["logits", "tokens"]
    assert not model.graph.input[0].type.tensor_type.shape.dim[0].HasField("dim_value")


def test_from_onnx_to_torch(cli, custom_onnx, tmp_path):
    out = tmp_path / "torch"
    code, output = cli("convert", custom_onnx, "--from", "onnx", "--to", "torch", "--out", out)
    assert code == 0, output
    assert {"model.py", "model.safetensors", "model.pt2", "porter_report.json"} <= {p.name for p in out.iterdir()}
    report = _report(out)
    assert report["route"] == "onnx" and report["static_dims"] == []
    assert max(report["verification"]["max_abs_error"].values()) <= 1e-5
    assert "import porter" not in (out / "model.py").read_text()


@pytest.mark.slow
def test_zoo_bert_through_the_graph_route(cli, tiny_bert, tmp_path):
    out = tmp_path / "bert-tf"
    code, output = cli("convert", tiny_bert, "--from", "torch", "--to", "tf", "--route", "graph", "--out", out)
    assert code == 0, output
    report = _report(out)
    assert report["route"] == "graph" and report["architecture"] == "BertModel"
    worst = report["verification"]["max_abs_error"]
    assert worst["last_hidden_state"] <= 1e-5 and worst["pooler_output"] <= 1e-5
    from porter.process.frameworks import tensorflow

    fn = tensorflow().saved_model.load(str(out)).signatures["serving_default"]
    assert sorted(fn.structured_input_signature[1]) == ["attention_mask", "input_ids", "token_type_ids"]
    assert sorted(fn.structured_outputs) == ["last_hidden_state", "pooler_output"]
    # batch and sequence stay dynamic, and every verification shape was run
    assert report["static_dims"] == []
    assert all(s.shape.as_list() == [None, None] for s in fn.structured_input_signature[1].values())
    assert len(report["verification"]["shapes"]) >= 3


# -- bad input ----------------------------------------------------------------------------------


def _clean_failure(code, output, out, *needles):
    assert code == 2, output
    for needle in needles:
        assert needle in output, output
    assert not out.exists()
    assert not list(out.parent.glob(f".{out.name}.tmp-*"))


def _unsupported_onnx(path):
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])
    nodes = [
        helper.make_node("Relu", ["x"], ["a"]),
        helper.make_node("Frobnicate", ["a"], ["b"], domain="com.example", name="f1"),
        helper.make_node("Frobnicate", ["b"], ["c"], domain="com.example", name="f2"),
        helper.make_node("Twiddle", ["c"], ["y"], domain="com.example"),
    ]
    graph = helper.make_graph(nodes, "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("target", ["torch", "tf"])
def test_unsupported_ops_are_listed_with_counts(cli, tmp_path, target):
    src = _unsupported_onnx(tmp_path / "custom.onnx")
    out = tmp_path / "out"
    code, output = cli("convert", src, "--from", "onnx", "--to", target, "--out", out)
    _clean_failure(code, output, out, "com.example.Frobnicate x2", "com.example.Twiddle x1", "opset 17")


def test_corrupt_onnx(cli, custom_onnx, tmp_path):
    src = tmp_path / "broken.onnx"
    src.write_bytes(custom_onnx.read_bytes()[:300])
    out = tmp_path / "out"
    code, output = cli("convert", src, "--from", "onnx", "--to", "torch", "--out", out)
    _clean_failure(code, output, out, "broken.onnx", "corrupt")


def test_saved_model_without_serving_signature(cli, tmp_path):
    from porter.process.frameworks import tensorflow

    tf = tensorflow()
    module = tf.Module()
    module.w = tf.Variable(tf.ones([3]))
    module.f = tf.function(lambda x: x * module.w)
    module.f(tf.ones([3]))  # traced, but not a signature
    src = tmp_path / "no_signature"
    tf.saved_model.save(module, str(src), signatures={})
    out = tmp_path / "out"
    code, output = cli("convert", src, "--from", "tf", "--to", "torch", "--out", out)
    _clean_failure(code, output, out, "no 'serving_default' signature")


def test_direct_route_refuses_onnx_targets(cli, custom_pt2, tmp_path):
    out = tmp_path / "out"
    code, output = cli("convert", custom_pt2, "--from", "torch", "--to", "onnx", "--route", "direct", "--out", out)
    _clean_failure(code, output, out, "--route onnx")


def test_sdpa_attention_keeps_batch_and_sequence_dynamic(cli, tmp_path):
    """scaled_dot_product_attention (kept whole by the graph route's decompositions) with batch and sequence
    dynamic: both stay dynamic in the SavedModel."""
    import torch
    import torch.nn.functional as F

    class SelfAttention(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv = torch.nn.Linear(16, 48)

        def forward(self, tokens):
            b, s, _ = tokens.shape
            q, k, v = self.qkv(tokens).view(b, s, 3, 4, 4).permute(2, 0, 3, 1, 4)
            return {"mixed": F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, s, 16)}

    torch.manual_seed(0)
    path = save_pt2(SelfAttention().eval(), torch.randn(2, 5, 16), tmp_path / "attention.pt2", BATCH_AND_SEQ)
    out = tmp_path / "tf"
    code, output = cli("convert", path, "--from", "torch", "--to", "tf", "--out", out)
    assert code == 0, output
    report = _report(out)
    assert report["route"] == "graph"
    assert report["static_dims"] == [] and len(report["verification"]["shapes"]) == 4  # 2 batch sizes x 2 lengths
    assert max(report["verification"]["max_abs_error"].values()) <= 1e-5


def test_conv_transpose_keeps_the_batch_dynamic(cli, tmp_path):
    """ConvTranspose (onnx2tf could only convert it with the batch fixed): dynamic on the graph route, verified
    at two batch sizes, and --route onnx refuses a TensorFlow target."""
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.ConvTranspose2d(4, 2, 2, stride=2)).eval()
    path = save_pt2(model, torch.randn(2, 3, 8, 8), tmp_path / "upsample.pt2", BATCH)
    code, output = cli("convert", path, "--from", "torch", "--to", "tf", "--out", tmp_path / "refused", "--route", "onnx")
    assert code == 2 and "--route graph" in output and not (tmp_path / "refused").exists()
    out = tmp_path / "tf"
    code, output = cli("convert", path, "--from", "torch", "--to", "tf", "--out", out)
    assert code == 0, output
    report = _report(out)
    assert report["route"] == "graph" and report["static_dims"] == [] and report["dynamic_dims_kept"]
    assert max(report["verification"]["max_abs_error"].values()) <= 1e-5
    assert len({next(iter(s["input_shapes"].values()))[0] for s in report["verification"]["shapes"]}) == 2


def test_torch_cnn_to_tf_channels_last(cli, tmp_path):
    """--layout nhwc: the SavedModel takes images channels-last, as TF serving expects; the verifier
    transposes the torch model's NCHW inputs for it (declared in the report, never guessed)."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 3, padding=1)
            self.bn = nn.BatchNorm2d(8)
            self.conv = nn.Conv2d(8, 8, 3, padding=1, groups=2)
            self.head = nn.Linear(8, 3)

        def forward(self, pixels):
            h = torch.relu(self.bn(self.stem(pixels)))
            h = h + self.conv(h)
            return self.head(h.mean((2, 3)))

    torch.manual_seed(0)
    model = Block().eval()
    with torch.no_grad():  # statistics and affine away from their init values
        model.bn.running_mean.normal_(0, 0.5)
        model.bn.running_var.uniform_(0.5, 2.0)
        model.bn.weight.normal_(1, 0.3)
        model.bn.bias.normal_(0, 0.3)
    path = save_pt2(model, torch.randn(2, 3, 8, 8), tmp_path / "cnn.pt2", BATCH)
    out = tmp_path / "tf"
    code, output = cli("convert", path, "--from", "torch", "--to", "tf", "--layout", "nhwc", "--out", out)
    assert code == 0, output
    report = _report(out)
    assert report["layout"] == {"inputs": {"pixels": "nchw"}, "candidate": "nhwc"}
    assert report["static_dims"] == [] and max(report["verification"]["max_abs_error"].values()) <= 1e-5
    from porter.process.frameworks import tensorflow

    tf = tensorflow()
    fn = tf.saved_model.load(str(out)).signatures["serving_default"]
    assert fn.structured_input_signature[1]["pixels"].shape.as_list() == [None, 8, 8, 3]
    x = np.random.default_rng(4).standard_normal((5, 3, 8, 8)).astype("float32")
    got = next(iter(fn(pixels=tf.constant(x.transpose(0, 2, 3, 1))).values())).numpy()
    assert np.abs(got - model(torch.from_numpy(x)).detach().numpy()).max() <= 1e-5


def test_model_pt2_is_skipped_with_a_note_when_torch_export_cannot(cli, tmp_path):
    """A Loop whose trip count is an input is data-dependent control flow: torch.export fails, so
    the folder holds model.py + model.safetensors (verified) and the report says why no model.pt2."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Mul", ["v", "half"], ["scaled"]),
         helper.make_node("Add", ["scaled", "x"], ["v_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []), helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []), helper.make_tensor_value_info("v_out", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(np.array(0.5, np.float32), "half")],
    )
    graph = helper.make_graph(
        [helper.make_node("Loop", ["steps", "", "x"], ["y"], body=body)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3]), helper.make_tensor_value_info("steps", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    src = tmp_path / "loop.onnx"
    onnx.save(model, str(src))
    out = tmp_path / "torch"
    code, output = cli("convert", src, "--from", "onnx", "--to", "torch", "--out", out)
    assert code == 0, output
    report = _report(out)
    assert report["status"] == "passed" and max(report["verification"]["max_abs_error"].values()) <= 1e-5
    assert (out / "model.py").is_file() and not (out / "model.pt2").exists()
    assert any(n.startswith("model.pt2 not written") for n in report["notes"])

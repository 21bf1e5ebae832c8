"""porter.onnx_to_torch: hand-built ONNX graphs and torch-exported models converted back and compared."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from porter.errors import PorterError, UnsupportedModelError
from porter.onnx_to_torch import onnx_to_torch, write_exported_program, write_torch_package
from porter.onnx_to_torch.registry import register

ATOL = 1e-5


def _model(nodes, inputs, outputs, initializers=(), opset=17):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _value(name, shape, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def _init(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


# -- models exported from torch --------------------------------------------------------------
class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        return self.fc(self.pool(torch.relu(self.bn1(self.conv1(x)))).flatten(1))


class Attention(nn.Module):
    def __init__(self, dim=16, heads=2):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x):
        b, s, d = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, s, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        weights = torch.softmax(q @ k.transpose(-1, -2) / (d // self.heads) ** 0.5, dim=-1)
        return x + self.out((weights @ v).transpose(1, 2).reshape(b, s, d))


def _informative(module: nn.Module) -> nn.Module:
    """Move normalisation statistics and affine weights away from their initial values."""
    torch.manual_seed(0)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.BatchNorm2d, nn.LayerNorm)):
                m.weight.add_(torch.randn_like(m.weight) * 0.3)
                m.bias.add_(torch.randn_like(m.bias) * 0.3)
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn_like(m.running_mean))
                m.running_var.copy_(torch.rand_like(m.running_var) + 0.5)
    return module.eval()


def _export(module, example, dynamic_shapes, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), str(path), dynamo=True, dynamic_shapes=dynamic_shapes,
                          input_names=["images" if example.dim() == 4 else "tokens"], verbose=False)
    return str(path)


@pytest.fixture(scope="module")
def convnet(tmp_path_factory):
    module = _informative(ConvNet())
    batch = torch.export.Dim("batch", min=1, max=64)
    path = _export(module, torch.randn(2, 3, 8, 8), ({0: batch},), tmp_path_factory.mktemp("conv") / "conv.onnx")
    return module, path


@pytest.fixture(scope="module")
def attention(tmp_path_factory):
    module = _informative(Attention())
    batch, seq = torch.export.Dim("batch", min=1, max=64), torch.export.Dim("seq", min=2, max=64)
    path = _export(module, torch.randn(2, 5, 16), ({0: batch, 1: seq},),
                   tmp_path_factory.mktemp("attn") / "attn.onnx")
    return module, path


def test_convnet_round_trip_with_native_modules(convnet):
    module, path = convnet
    gm = onnx_to_torch(path)
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(gm(x), module(x), atol=ATOL, rtol=0)
    # The exporter folds the BatchNorm into the conv; the perturbed statistics still shape the result.
    assert {nn.Conv2d, nn.Linear} <= {type(m) for m in gm.children()}
    assert isinstance(gm.conv1, nn.Conv2d) and isinstance(gm.fc, nn.Linear)  # named after conv1.weight, fc.weight
    assert gm.onnx_input_names == ["images"]


def test_batchnorm_and_layernorm_become_native_modules_in_eval_mode():
    rng = np.random.RandomState(0)
    c = 4
    stats = {"bn.weight": rng.rand(c) + 0.5, "bn.bias": rng.randn(c), "bn.running_mean": rng.randn(c),
             "bn.running_var": rng.rand(c) + 0.5, "ln.weight": rng.randn(5) * 0.3 + 1, "ln.bias": rng.randn(5) * 0.3}
    inits = [_init(k, v.astype(np.float32)) for k, v in stats.items()]
    nodes = [helper.make_node("BatchNormalization", ["x", "bn.weight", "bn.bias", "bn.running_mean",
                                                     "bn.running_var"], ["b"], epsilon=1e-3),
             helper.make_node("LayerNormalization", ["b", "ln.weight", "ln.bias"], ["y"], axis=-1, epsilon=1e-5)]
    gm = onnx_to_torch(_model(nodes, [_value("x", ["N", c, 3, 5])], [_value("y", ["N", c, 3, 5])], inits))
    assert isinstance(gm.bn, nn.BatchNorm2d) and not gm.bn.training and isinstance(gm.ln, nn.LayerNorm)
    t = {k: torch.tensor(v, dtype=torch.float32) for k, v in stats.items()}
    x = torch.randn(2, c, 3, 5)
    b = nn.functional.batch_norm(x, t["bn.running_mean"], t["bn.running_var"], t["bn.weight"], t["bn.bias"],
                                 eps=1e-3)
    expected = nn.functional.layer_norm(b, (5,), t["ln.weight"], t["ln.bias"])
    torch.testing.assert_close(gm(x), expected, atol=ATOL, rtol=0)


def test_convnet_dynamic_batch(convnet):
    module, path = convnet
    gm = onnx_to_torch(path)
    for batch in (1, 5):
        x = torch.randn(batch, 3, 8, 8)
        torch.testing.assert_close(gm(x), module(x), atol=ATOL, rtol=0)


def test_attention_block_dynamic_batch_and_sequence(attention):
    module, path = attention
    gm = onnx_to_torch(path)
    assert any(isinstance(m, nn.LayerNorm) for m in gm.children())
    for shape in ((2, 5, 16), (3, 9, 16), (1, 2, 16)):
        x = torch.randn(*shape)
        torch.testing.assert_close(gm(x), module(x), atol=ATOL, rtol=0)


def test_torch_export_with_dynamic_batch_and_compile_without_graph_breaks(attention):
    module, path = attention
    gm = onnx_to_torch(path)
    batch, seq = torch.export.Dim("batch", min=1, max=64), torch.export.Dim("seq", min=2, max=64)
    program = torch.export.export(gm, (torch.randn(2, 5, 16),), dynamic_shapes=({0: batch, 1: seq},))
    x = torch.randn(4, 7, 16)
    torch.testing.assert_close(program.module()(x), module(x), atol=ATOL, rtol=0)
    torch._dynamo.reset()
    compiled = torch.compile(gm, backend="eager", fullgraph=True, dynamic=True)
    torch.testing.assert_close(compiled(x), module(x), atol=ATOL, rtol=0)


# -- hand-built graphs ---------------------------------------------------------------------------
def _shape_chain_model():
    """y = reshape(x, [batch, -1]) with batch read from Shape at run time, then Gelu."""
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "zero"], ["batch"], axis=0),
        helper.make_node("Unsqueeze", ["batch", "zero_axes"], ["batch_1d"]),
        helper.make_node("Concat", ["batch_1d", "minus_one"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["flat"]),
        helper.make_node("Gelu", ["flat"], ["y"]),
    ]
    inits = [_init("zero", np.array(0, np.int64)), _init("zero_axes", np.array([0], np.int64)),
             _init("minus_one", np.array([-1], np.int64))]
    return _model(nodes, [_value("x", ["N", 3, 4])], [_value("y", ["N", 12])], inits, opset=20)


def test_shape_chain_stays_symbolic():
    gm = onnx_to_torch(_shape_chain_model())
    for batch in (2, 7):
        x = torch.randn(batch, 3, 4)
        torch.testing.assert_close(gm(x), nn.functional.gelu(x.reshape(batch, -1)))
    assert "tolist" not in gm.code  # the size came from x.size(0), not a tensor round trip
    program = torch.export.export(gm, (torch.randn(2, 3, 4),),
                                  dynamic_shapes=({0: torch.export.Dim("n", min=2, max=32)},))
    assert program.module()(torch.randn(9, 3, 4)).shape == (9, 12)


def test_gemm_becomes_linear_and_initializer_names_are_kept():
    w = np.random.RandomState(0).randn(5, 4).astype(np.float32)
    b = np.random.RandomState(1).randn(5).astype(np.float32)
    scale = np.float32(0.5)
    nodes = [helper.make_node("Gemm", ["input.0", "head.weight", "head.bias"], ["h"], transB=1, alpha=2.0),
             helper.make_node("Mul", ["h", "scale"], ["out"])]
    model = _model(nodes, [_value("input.0", [3, 4])], [_value("out", [3, 5])],
                   [_init("head.weight", w), _init("head.bias", b), _init("scale", np.array([scale]))])
    gm = onnx_to_torch(model)
    x = torch.randn(3, 4)
    expected = (2 * x @ torch.from_numpy(w).T + torch.from_numpy(b)) * scale
    torch.testing.assert_close(gm(x), expected, atol=ATOL, rtol=0)
    assert isinstance(gm.head, nn.Linear)
    assert "scale" in dict(gm.named_parameters())
    assert gm.onnx_input_names == ["input.0"] and gm.onnx_output_names == ["out"]
    assert "input_0" in gm.code


@pytest.mark.parametrize("bias_shape, fused", [((5,), True), ((1, 1, 5), False)])
def test_matmul_then_bias_add_becomes_one_linear(bias_shape, fused):
    """Keras' Dense through tf2onnx: MatMul + Add. A 1-D bias joins the nn.Linear; a bias of
    higher rank stays a separate add (it broadcasts the output up a rank)."""
    rng = np.random.RandomState(2)
    w, b = rng.randn(4, 5).astype(np.float32), rng.randn(*bias_shape).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "dense.kernel"], ["h"]), helper.make_node("Add", ["h", "dense.bias"], ["y"])]
    out_shape = [3, 5] if fused else [1, 3, 5]
    model = _model(nodes, [_value("x", [3, 4])], [_value("y", out_shape)], [_init("dense.kernel", w), _init("dense.bias", b)])
    gm = onnx_to_torch(model)
    x = torch.randn(3, 4)
    expected = x @ torch.from_numpy(w) + torch.from_numpy(b)
    torch.testing.assert_close(gm(x), expected, atol=ATOL, rtol=0)
    linears = [m for m in gm.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 1 and (linears[0].bias is not None) == fused
    assert ("+" in gm.code) != fused


def test_porter_onnx_to_torch_stays_callable_after_the_subpackage_is_imported():
    import porter
    import porter.onnx_to_torch.codegen  # noqa: F401  (rebinds porter.onnx_to_torch to the subpackage)

    nodes = [helper.make_node("Relu", ["x"], ["y"])]
    gm = porter.onnx_to_torch(_model(nodes, [_value("x", [2, 3])], [_value("y", [2, 3])]))
    x = torch.randn(2, 3)
    torch.testing.assert_close(gm(x), torch.relu(x))


def test_multiple_outputs_in_onnx_order():
    nodes = [helper.make_node("TopK", ["x", "k"], ["values", "indices"], axis=-1),
             helper.make_node("Neg", ["x"], ["negated"])]
    model = _model(nodes, [_value("x", [2, 6])],
                   [_value("negated", [2, 6]), _value("indices", [2, 3], TensorProto.INT64), _value("values", [2, 3])],
                   [_init("k", np.array([3], np.int64))])
    gm = onnx_to_torch(model)
    x = torch.randn(2, 6)
    negated, indices, values = gm(x)
    torch.testing.assert_close(negated, -x)
    torch.testing.assert_close(values, x.topk(3).values)
    torch.testing.assert_close(indices, x.topk(3).indices)


def test_constant_subgraphs_are_folded():
    nodes = [helper.make_node("Transpose", ["w"], ["wt"], perm=[1, 0]),
             helper.make_node("MatMul", ["x", "wt"], ["y"])]
    w = np.arange(6, dtype=np.float32).reshape(2, 3)
    gm = onnx_to_torch(_model(nodes, [_value("x", [1, 3])], [_value("y", [1, 2])], [_init("w", w)]))
    assert "permute" not in gm.code and "transpose" not in gm.code
    torch.testing.assert_close(gm(torch.ones(1, 3)), torch.ones(1, 3) @ torch.from_numpy(w).T)


# -- errors ---------------------------------------------------------------------------------------
def test_every_unsupported_op_is_listed_at_once_with_counts_and_opset():
    nodes = [helper.make_node("DeformConv", ["x", "b", "s"], ["i1"]),
             helper.make_node("DeformConv", ["x", "b", "s"], ["i2"]),
             helper.make_node("RoiAlign", ["x", "r", "bi"], ["y"]),
             helper.make_node("Relu", ["x"], ["z"])]
    model = _model(nodes, [_value("b", [1, 4, 4]), _value("s", [1, 1, 4]), _value("x", [1, 1, 4, 4]),
                           _value("r", [1, 4]), _value("bi", [1], TensorProto.INT64)], [_value("y", None)])
    with pytest.raises(UnsupportedModelError) as info:
        onnx_to_torch(model)
    assert info.value.message == ("ops not supported by porter's ONNX->torch converter (opset 17): "
                                  "DeformConv x2, RoiAlign x1")


def test_unsupported_attribute_names_node_op_and_attribute():
    nodes = [helper.make_node("Cast", ["x"], ["y"], name="cast7", to=TensorProto.STRING),
             helper.make_node("Cast", ["x"], ["z"], name="cast8", to=TensorProto.FLOAT16, saturate=0)]
    model = _model(nodes, [_value("x", [1, 1, 4, 4])], [_value("y", None), _value("z", None)], opset=19)
    with pytest.raises(UnsupportedModelError) as info:
        onnx_to_torch(model)
    problems = info.value.problems
    assert f"node 'cast7' (Cast): attribute to={TensorProto.STRING} is not supported" in problems
    assert "node 'cast8' (Cast): attribute saturate=0 is not supported" in problems


def test_corrupt_file_names_the_file(tmp_path):
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"\x08\x07not really a protobuf \xff\xff\xff")
    with pytest.raises(PorterError, match="broken.onnx"):
        onnx_to_torch(path)
    with pytest.raises(PorterError, match="not found"):
        onnx_to_torch(tmp_path / "missing.onnx")


def test_duplicate_registration_raises():
    with pytest.raises(PorterError, match="registered twice"):
        register("Relu")(lambda x: x)


# -- code generation ----------------------------------------------------------------------------
def test_generated_package_runs_without_porter(convnet, tmp_path):
    module, path = convnet
    gm = onnx_to_torch(path)
    folder = tmp_path / "pkg"
    write_torch_package(gm, folder)
    source = (folder / "model.py").read_text()
    assert "nn.Conv2d(3, 8, kernel_size=(3, 3)" in source and "porter" not in source.replace("by porter", "")
    x = torch.randn(3, 3, 8, 8)
    torch.save({"x": x, "y": module(x).detach()}, tmp_path / "io.pt")
    script = textwrap.dedent(f"""
        import sys, torch
        sys.path.insert(0, {str(folder)!r})
        import model
        m = model.load()
        io = torch.load({str(tmp_path / 'io.pt')!r})
        torch.testing.assert_close(m(io["x"]), io["y"], atol={ATOL}, rtol=0)
        assert not any(name.startswith("porter") for name in sys.modules), "model.py imported porter"
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path,
                            env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr


def test_generated_package_copies_runtime_helpers(tmp_path):
    nodes = [helper.make_node("SpaceToDepth", ["x"], ["y"], blocksize=2)]
    gm = onnx_to_torch(_model(nodes, [_value("x", [1, 2, 4, 4])], [_value("y", [1, 8, 2, 2])]))
    write_torch_package(gm, tmp_path)
    namespace: dict = {}
    exec(compile((tmp_path / "model.py").read_text(), "model.py", "exec"), namespace)
    assert "def space_to_depth(" in (tmp_path / "model.py").read_text()
    x = torch.randn(1, 2, 4, 4)
    torch.testing.assert_close(namespace["load"](str(tmp_path))(x), gm(x))


def test_write_exported_program(attention, tmp_path):
    module, path = attention
    gm = onnx_to_torch(path)
    seq = torch.export.Dim("seq", min=2, max=64)
    write_exported_program(gm, (torch.randn(2, 5, 16),), tmp_path / "model.pt2", dynamic_shapes=({1: seq},))
    loaded = torch.export.load(str(tmp_path / "model.pt2")).module()
    x = torch.randn(2, 11, 16)
    torch.testing.assert_close(loaded(x), module(x), atol=ATOL, rtol=0)

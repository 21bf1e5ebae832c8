"""Model files are data: no .pt2 entry, foreign model.py or shard index makes porter run code or read
outside the model folder. Every malicious file is built here; each refusal is exit 2, names the entry,
file or flag, and leaves the payload's marker file unwritten. The payloads are shown to be live."""

from __future__ import annotations

import io
import json
import os
import shutil
import zipfile

import numpy as np
import pytest
import torch

from tests_support import save_pt2


class Linear(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 3)
        self.register_buffer("offset", torch.linspace(-1, 1, 3))
        self.scale = torch.tensor([0.5, 2.0, -1.5])  # a lifted tensor constant: data/constants/

    def forward(self, x):
        return self.lin(x) * self.scale + self.offset


class Payload:
    """Unpickling this runs os.system: the attack a pickled .pt2 entry carries."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _torch_pickle(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _rewrite(src, dst, edit):
    """Copy the zip ``src`` to ``dst``; ``edit(entry, data)`` returns the new bytes (or None to drop it)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = edit(info.filename.split("/", 1)[1], zin.read(info.filename))
            if data is not None:
                zout.writestr(info.filename, data)
        root = zin.namelist()[0].split("/", 1)[0]
        for extra, data in getattr(edit, "extra", {}).items():
            zout.writestr(f"{root}/{extra}", data)
    return dst


@pytest.fixture(scope="module")
def plain_pt2(tmp_path_factory):
    torch.manual_seed(0)
    return save_pt2(Linear().eval(), torch.randn(2, 4), tmp_path_factory.mktemp("pt2") / "plain.pt2", {0: ("batch", 1, 64)})


def _config_edit(config_name, key, **changes):
    def edit(entry, data):
        if entry.endswith(config_name):
            config = json.loads(data)
            config["config"][key].update(changes)
            return json.dumps(config).encode()
        return data
    return edit


def _crafted(kind, plain, tmp_path, marker):
    """A .pt2 whose ``kind`` entry carries a payload; returns (path, the entry the refusal must name)."""
    payload = _torch_pickle({"x": Payload(marker)})
    bad = tmp_path / f"{kind}.pt2"
    if kind == "pickled weight":
        config = _config_edit("model_weights_config.json", "lin.bias", use_pickle=True)
        edit = lambda e, d: payload if e == "data/weights/weight_1" else config(e, d)  # noqa: E731
        return _rewrite(plain, bad, edit), "lin.bias"
    if kind == "pickled constant":
        config = _config_edit("model_constants_config.json", "scale", use_pickle=True)
        edit = lambda e, d: payload if e == "data/constants/tensor_0" else config(e, d)  # noqa: E731
        return _rewrite(plain, bad, edit), "scale"
    if kind == "custom object":
        config = _config_edit("model_constants_config.json", "scale", path_name="opaque_obj_0", use_pickle=True)
        edit = lambda e, d: config(e, d)  # noqa: E731
        edit.extra = {"data/constants/opaque_obj_0": __import__("pickle").dumps(Payload(marker))}
        return _rewrite(plain, bad, edit), "opaque_obj_0"
    if kind == "sample inputs":
        edit = lambda e, d: payload if e.startswith("data/sample_inputs/") else d  # noqa: E731
        return _rewrite(plain, bad, edit), "data/sample_inputs/model.pt"
    if kind == "legacy weights":
        edit = lambda e, d: None if e.startswith("data/weights/") else d  # noqa: E731
        edit.extra = {"data/weights/model.pt": payload}
        return _rewrite(plain, bad, edit), "data/weights/model.pt"
    if kind == "shape expression":  # sympy.sympify is eval(): an attribute chain reaches os.system
        code = (f"(Symbol.__new__.__globals__['__builtins__']['__import__']('os').system('touch {marker}'), "
                "Symbol('s77', positive=True, integer=True))[1]")

        def edit(entry, data):
            if entry.startswith("models/"):
                text = data.decode()
                start = text.index('"expr_str": "') + len('"expr_str": ')
                end = text.index('", "hint"', start) + 1
                return (text[:start] + json.dumps(code) + text[end:]).encode()
            return data
        return _rewrite(plain, bad, edit), "models/model.json"
    if kind == "compiled library":
        edit = lambda e, d: d  # noqa: E731
        edit.extra = {"data/aotinductor/model/model.so": b"\x7fELF"}
        return _rewrite(plain, bad, edit), "data/aotinductor/model/model.so"
    raise AssertionError(kind)


LIVE = ["pickled weight", "pickled constant", "sample inputs", "legacy weights", "shape expression", "custom object"]
KINDS = LIVE + ["compiled library"]


@pytest.mark.parametrize("kind", KINDS)
def test_pt2_with_code_is_refused_before_loading(kind, plain_pt2, tmp_path, cli):
    marker = tmp_path / "PAYLOAD_RAN"
    bad, entry = _crafted(kind, plain_pt2, tmp_path, marker)
    code, out = cli("verify", bad, plain_pt2)
    assert code == 2, out
    assert entry in out and "refusing to load entry" in out, out
    assert not marker.exists()
    if kind == "pickled weight":  # the ONNX route's reader refuses it the same way
        code, out = cli("convert", bad, "--from", "torch", "--to", "onnx", "--out", tmp_path / "out")
        assert code == 2 and entry in out, out
        assert not marker.exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind", LIVE)
def test_the_payloads_are_live(kind, plain_pt2, tmp_path):
    """torch.export.load itself runs each payload: the refusals above are what stops them."""
    marker = tmp_path / "PAYLOAD_RAN"
    bad, _ = _crafted(kind, plain_pt2, tmp_path, marker)
    try:
        torch.export.load(str(bad))
    except Exception:
        pass  # the graph is broken after the payload ran; running it is what counts
    assert marker.exists()


def test_pt2_node_calling_os_system_is_refused(plain_pt2, tmp_path, cli):
    """A node target resolves by attribute path inside torch (torch.os.system): torch's verifier
    refuses any target that is not an op when it loads, so nothing is called."""
    marker = tmp_path / "PAYLOAD_RAN"

    def edit(entry, data):
        if entry.startswith("models/"):
            program = json.loads(data)
            node = program["graph_module"]["graph"]["nodes"][-1]
            node["target"] = "torch.os.system"
            node["inputs"] = [{"name": "command", "arg": {"as_string": f"touch {marker}"}, "kind": 1}]
            return json.dumps(program).encode()
        return data

    bad = _rewrite(plain_pt2, tmp_path / "target.pt2", edit)
    code, out = cli("verify", bad, plain_pt2)
    assert code == 2 and "not an allowed operator" in out, out
    assert not marker.exists()


def test_plain_pt2_still_verifies(plain_pt2, cli):
    code, out = cli("verify", plain_pt2, plain_pt2)
    assert code == 0, out


@pytest.mark.parametrize("family", [pytest.param("bert", marks=pytest.mark.slow), "gpt2"])  # bert also converts (~15 s)
def test_hf_model_pt2_loads_and_verifies(family, tmp_path, cli):
    """torch.export.save of an HF model records transformers' ModelOutput type; porter registers
    transformers.modeling_outputs (its own choice of module) so the archive loads, outputs named by its keys."""
    import transformers

    if family == "bert":
        model = transformers.BertModel(transformers.BertConfig(
            hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, vocab_size=50))
    else:
        model = transformers.GPT2Model(transformers.GPT2Config(
            n_embd=16, n_layer=1, n_head=2, vocab_size=50, n_positions=32, use_cache=False))
    ids = torch.randint(0, 50, (2, 8))
    torch.export.save(torch.export.export(model.eval(), (ids,)), str(tmp_path / "hf.pt2"))
    from porter.routes.to_onnx import exported_program_io, load_exported_program

    program = load_exported_program(tmp_path / "hf.pt2")
    _, outputs, _ = exported_program_io(program)
    assert outputs[0] == "last_hidden_state" and ("pooler_output" in outputs) == (family == "bert")
    with torch.no_grad():
        want = model(ids).last_hidden_state
    torch.testing.assert_close(program.module()(ids).last_hidden_state, want, atol=1e-6, rtol=0)
    np.savez(tmp_path / "ids.npz", input_ids=np.random.RandomState(0).randint(0, 50, (2, 8)))  # inside the tiny vocabulary
    code, out = cli("verify", tmp_path / "hf.pt2", tmp_path / "hf.pt2", "--inputs", tmp_path / "ids.npz")
    assert code == 0 and "last_hidden_state" in out, out
    if family == "bert":  # and the ONNX route takes it, outputs named by the ModelOutput's keys
        code, out = cli("convert", tmp_path / "hf.pt2", "--from", "torch", "--to", "onnx", "--out", tmp_path / "onnx")
        assert code == 0 and "pooler_output" in out, out


def test_pt2_returning_an_unknown_type_names_it(plain_pt2, tmp_path, cli):
    def edit(entry, data):
        if entry.startswith("models/"):
            return data.replace(b"builtins.tuple", b"evil.module.Thing", 1)
        return data

    bad = _rewrite(plain_pt2, tmp_path / "unknown.pt2", edit)
    code, out = cli("verify", bad, plain_pt2)
    assert code == 2 and "evil.module.Thing" in out, out
    assert "evil" not in __import__("sys").modules


# -- model.py --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    from onnx import TensorProto, helper, numpy_helper, save

    rng = np.random.RandomState(0)
    w = numpy_helper.from_array(rng.randn(4, 3).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.randn(3).astype(np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Add", ["h", "b"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])], [w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    save(model, str(path))
    return path


@pytest.fixture(scope="module")
def porter_written(tiny_onnx, tmp_path_factory):
    """model.py + model.safetensors as porter writes them (ONNX -> torch)."""
    import porter

    out = tmp_path_factory.mktemp("conv") / "tiny-pt"
    assert porter.convert(str(tiny_onnx), source="onnx", target="torch", out=out).passed
    return out


def _with_payload(folder, dest, marker, keep_report):
    shutil.copytree(folder, dest)
    if not keep_report:
        (dest / "porter_report.json").unlink()
    code = (dest / "model.py").read_text()
    (dest / "model.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n" + code)
    return dest


def test_porter_written_model_py_verifies(porter_written, tiny_onnx, cli):
    report = json.loads((porter_written / "porter_report.json").read_text())
    assert len(report["files"]["model.py"]["sha256"]) == 64
    code, out = cli("verify", tiny_onnx, porter_written)
    assert code == 0, out


@pytest.mark.parametrize("case", ["foreign", "edited"])
def test_model_py_porter_did_not_write_is_not_imported(case, porter_written, tiny_onnx, tmp_path, cli):
    marker = tmp_path / "MODEL_PY_RAN"
    folder = _with_payload(porter_written, tmp_path / case, marker, keep_report=case == "edited")
    code, out = cli("verify", tiny_onnx, folder)
    assert code == 2, out
    assert "model.py" in out and "--trust-model-code" in out, out
    assert ("changed after porter wrote it" in out) == (case == "edited"), out
    assert not marker.exists()
    # the user who trusts the code says so: it is imported (and its payload runs, harmlessly here)
    code, out = cli("verify", tiny_onnx, folder, "--trust-model-code")
    assert code == 0, out
    assert marker.exists()


def test_check_trust_model_code_key(porter_written, tiny_onnx, tmp_path, cli):
    marker = tmp_path / "MODEL_PY_RAN"
    folder = _with_payload(porter_written, tmp_path / "foreign", marker, keep_report=False)
    job = f'[[verify]]\nreference = "{tiny_onnx}"\ncandidate = "{folder}"\n'
    (tmp_path / "refuse.toml").write_text(job)
    code, out = cli("check", tmp_path / "refuse.toml")
    assert code == 2 and "--trust-model-code" in out, out
    assert not marker.exists()
    (tmp_path / "trust.toml").write_text(job + "trust_model_code = true\n")
    code, out = cli("check", tmp_path / "trust.toml")
    assert code == 0, out
    assert marker.exists()


# -- shard indexes ---------------------------------------------------------------------------------


def _sharded(tiny_bert, dest, shard_name, target=None):
    """tiny_bert as a sharded folder whose index names ``shard_name`` for every tensor."""
    from safetensors import safe_open

    dest.mkdir()
    shutil.copy(tiny_bert / "config.json", dest / "config.json")
    with safe_open(str(tiny_bert / "model.safetensors"), framework="np") as f:
        keys = list(f.keys())
    (dest / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": {k: shard_name for k in keys}}))
    if target is not None:
        os.symlink(target, dest / shard_name)
    return dest


@pytest.mark.parametrize("case", ["escaping", "absolute", "symlink"])
def test_shard_outside_the_folder_is_refused(case, tiny_bert, tmp_path, cli):
    outside = tmp_path / "secret" / "model.safetensors"
    outside.parent.mkdir()
    shutil.copy(tiny_bert / "model.safetensors", outside)  # a readable file outside: it must not be opened
    name = {"escaping": "../secret/model.safetensors", "absolute": str(outside), "symlink": "model-00001-of-00001.safetensors"}[case]
    folder = _sharded(tiny_bert, tmp_path / "model", name, target=outside if case == "symlink" else None)
    for args in (("verify", folder, folder), ("convert", folder, "--from", "torch", "--to", "tf", "--out", tmp_path / "out")):
        code, out = cli(*args)
        assert code == 2, out
        assert "model.safetensors.index.json" in out and name in out and "outside the model folder" in out, out
        assert not (tmp_path / "out").exists()


def test_shard_inside_the_folder_still_loads(tiny_bert, tmp_path):
    from porter.readers.checkpoints import open_torch_checkpoint

    folder = _sharded(tiny_bert, tmp_path / "model", "model-00001-of-00001.safetensors")
    shutil.copy(tiny_bert / "model.safetensors", folder / "model-00001-of-00001.safetensors")
    source = open_torch_checkpoint(folder)
    key = next(iter(source.keys()))
    from safetensors.numpy import load_file

    np.testing.assert_array_equal(source.get(key), load_file(str(tiny_bert / "model.safetensors"))[key])


class ShapeArithmetic(torch.nn.Module):
    """Outputs whose sizes are expressions of the input's (2*s, s//2 via reshape, s-1 via slicing)."""

    def forward(self, x):
        doubled = torch.cat([x, x], dim=1)
        halves = x.reshape(x.shape[0], -1, 2).sum(-1)
        return doubled, halves, x[:, 1:] * 2


def test_pt2_with_shape_expressions_still_loads(tmp_path):
    """Every sympy expression torch.export writes for dynamic dims passes porter's check."""
    from porter.routes.to_onnx import load_exported_program
    from porter.readers.safe_pt2 import _values_of

    path = tmp_path / "dyn.pt2"
    x = torch.randn(3, 8)
    batch, half = torch.export.Dim("batch", min=1, max=64), torch.export.Dim("half", min=2, max=32)
    torch.export.save(torch.export.export(ShapeArithmetic(), (x,), dynamic_shapes=({0: batch, 1: 2 * half},)), str(path))
    with zipfile.ZipFile(path) as zf:
        program = json.loads(zf.read(next(n for n in zf.namelist() if "/models/" in n)))
    exprs = set(_values_of(program, "expr_str"))
    assert any("Mul" in e or "*" in e for e in exprs), exprs  # compound expressions, not only symbols
    loaded = load_exported_program(path)
    y = torch.randn(5, 12)
    for got, want in zip(loaded.module()(y), ShapeArithmetic()(y)):
        torch.testing.assert_close(got, want, atol=0, rtol=0)

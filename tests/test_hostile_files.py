"""Hostile model folders and files, made here: no byte from outside the model's folder reaches an output,
declared sizes are checked before anything is unpacked, deep nesting is bad input, and a pipe is never
read as a file. Every refusal is exit 2 naming the file, with nothing written at --out."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from tests_support import porter_measured

SECRET = b"RUNNER-SECRET-7f3a9c"  # what a CI runner keeps outside the model folder


def _clone(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _link_out(folder: Path, name: str, tmp_path: Path) -> Path:
    """Replace ``folder/name`` by a link to a copy of it outside the folder that also holds SECRET."""
    outside = tmp_path / "runner-home" / name.replace("/", "_")
    outside.parent.mkdir(exist_ok=True)
    outside.write_bytes((folder / name).read_bytes() + SECRET)
    (folder / name).unlink()
    os.symlink(outside, folder / name)
    return outside


def _no_secret_written(tmp_path: Path) -> None:
    for path in tmp_path.rglob("*"):
        if path.is_file() and not path.is_symlink() and "runner-home" not in path.parts:
            assert SECRET not in path.read_bytes(), f"{path} holds bytes from outside the model folder"


def _onnx_with_external_data(folder: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    folder.mkdir(parents=True)
    onnx.save(model, str(folder / "m.onnx"), save_as_external_data=True, location="m.onnx.data", size_threshold=0)
    return folder / "m.onnx"


# -- 1. bytes from outside the model folder ---------------------------------------------------------


def test_onnx_external_data_linked_outside_is_refused(tmp_path, cli):
    model = _onnx_with_external_data(tmp_path / "model")
    code, out = cli("convert", model, "--from", "onnx", "--to", "torch", "--out", tmp_path / "ok")
    assert code == 0, out  # the model itself converts: the refusal below is the link's
    outside = _link_out(model.parent, "m.onnx.data", tmp_path)
    for args in (("convert", model, "--from", "onnx", "--to", "torch", "--out", tmp_path / "out"),
                 ("verify", model, tmp_path / "ok")):
        code, out = cli(*args)
        assert code == 2, out
        assert "m.onnx.data" in out and str(outside) in out and "outside the model folder" in out, out
    assert not (tmp_path / "out").exists()
    _no_secret_written(tmp_path)


def test_onnx_external_data_declaring_more_bytes_than_its_file_is_refused(tmp_path, cli):
    import onnx

    model = _onnx_with_external_data(tmp_path / "model")
    proto = onnx.load(str(model), load_external_data=False)
    proto.graph.initializer[0].dims[:] = [4, 3_000_000_000]  # 48 GB declared, 48 bytes on disk
    onnx.save(proto, str(model))
    code, out = cli("convert", model, "--from", "onnx", "--to", "torch", "--out", tmp_path / "out")
    assert code == 2 and "'w'" in out and "declares 48,000,000,000 bytes" in out and "holds 48 bytes" in out, out
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["config.json", "model.safetensors", "vocab.txt"])
def test_hf_folder_file_linked_outside_is_refused(name, tiny_bert, tmp_path, cli):
    folder = _clone(tiny_bert, tmp_path / "model")
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello"]))
    outside = _link_out(folder, name, tmp_path)
    for args in (("convert", folder, "--from", "torch", "--to", "tf", "--out", tmp_path / "out"), ("verify", folder, folder)):
        code, out = cli(*args)
        assert code == 2, out
        assert name in out and str(outside) in out and "outside the model folder" in out, out
    assert not (tmp_path / "out").exists()
    _no_secret_written(tmp_path)


def test_saved_model_variables_linked_outside_are_refused(tiny_bert, tiny_bert_tf, tmp_path, cli):
    folder = _clone(tiny_bert_tf, tmp_path / "model-tf")
    data = next((folder / "variables").glob("variables.data-*"))
    outside = _link_out(folder, f"variables/{data.name}", tmp_path)
    for args in (("verify", tiny_bert, folder), ("convert", folder, "--from", "tf", "--to", "torch", "--out", tmp_path / "out")):
        code, out = cli(*args)
        assert code == 2, out
        assert data.name in out and str(outside) in out, out
    assert not (tmp_path / "out").exists()


def test_hub_cache_snapshot_links_into_its_blobs_still_load(tiny_bert, tmp_path):
    """The HF hub cache keeps files in blobs/ and links to them from snapshots/<rev>/: that is inside."""
    from porter.readers.artifacts import detect
    from porter.readers.checkpoints import open_torch_checkpoint

    cache = tmp_path / "models--x--tiny"
    (cache / "blobs").mkdir(parents=True)
    snapshot = cache / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    for f in tiny_bert.iterdir():
        shutil.copy(f, cache / "blobs" / f.name)
        os.symlink(Path("..", "..", "blobs", f.name), snapshot / f.name)
    assert detect(snapshot).format == "hf"
    assert len(open_torch_checkpoint(snapshot).shapes) > 10


# -- 2. declared sizes --------------------------------------------------------------------------------


def _zeros_npz(path: Path, shapes: dict, dtype=np.int64) -> Path:
    """An .npz holding arrays of zeros, deflated while written (the file stays a few MB)."""
    chunk = bytes(64 << 20)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, shape in shapes.items():
            header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape}
            total = int(np.prod(shape)) * np.dtype(dtype).itemsize
            with zf.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array_header_2_0(member, header)
                while total > 0:
                    member.write(chunk[:min(total, len(chunk))])
                    total -= len(chunk)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("fits", [False, True], ids=["shape refused", "shape fits"])
def test_an_npz_bomb_is_refused_by_its_headers(fits, tiny_bert, tiny_bert_tf, tmp_path):
    names = ("input_ids", "attention_mask", "token_type_ids") if fits else ("input_ids",)
    seq = 100_000_000 if fits else 300_000_000
    bomb = _zeros_npz(tmp_path / "bomb.npz", {n: (1, seq) for n in names})  # 2.4 GB of int64 zeros
    assert bomb.stat().st_size < 20e6
    code, err, grown, _ = porter_measured(["verify", tiny_bert, tiny_bert_tf, "--inputs", bomb, "--report", tmp_path / "r.json"])
    assert code == 2 and "bomb.npz" in err, err[-2000:]
    assert ("unpacks to 2,400,000,000 bytes" in err and "limit of 536,870,912" in err) if fits else "'attention_mask' is missing" in err, err[-2000:]
    assert grown < 1.0, f"grew {grown} GB above the imports"
    assert not (tmp_path / "r.json").exists()


def test_npz_headers_are_checked_before_unpacking(tmp_path):
    """A shape the model cannot take is refused from the header; the data is never read (a forged header
    that declares more bytes than the entry holds is refused too)."""
    from porter.errors import PorterError
    from porter.checks.model_files import npz_arrays

    np.savez(tmp_path / "ok.npz", input_ids=np.arange(6).reshape(2, 3))
    seen = {}
    arrays = npz_arrays(tmp_path / "ok.npz", "--inputs", lambda headers: seen.update(headers))
    assert seen["input_ids"].shape == (2, 3) and arrays["input_ids"].tolist() == [[0, 1, 2], [3, 4, 5]]
    with zipfile.ZipFile(tmp_path / "forged.npz", "w") as zf, zf.open("input_ids.npy", "w") as member:
        np.lib.format.write_array_header_1_0(member, {"descr": "<i8", "fortran_order": False, "shape": (10**6,)})
        member.write(bytes(16))
    with pytest.raises(PorterError, match="declares shape .1000000,. of int64 .8,000,000 bytes., but its entry holds 16"):
        npz_arrays(tmp_path / "forged.npz", "--inputs")


def test_a_pt2_graph_json_of_whitespace_is_refused_unread(tmp_path, cli):
    import torch

    from tests_support import save_pt2

    plain = save_pt2(torch.nn.Linear(4, 3).eval(), torch.randn(2, 4), tmp_path / "plain.pt2")
    bomb = tmp_path / "bomb.pt2"
    with zipfile.ZipFile(plain) as zin, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            if "/models/" in info.filename and info.filename.endswith(".json"):
                with zout.open(info.filename, "w", force_zip64=True) as member:
                    member.write(zin.read(info))
                    for _ in range(5):
                        member.write(b" " * (64 << 20))  # 320 MB of whitespace after the JSON
            else:
                zout.writestr(info, zin.read(info))
    code, out = cli("convert", bomb, "--from", "torch", "--to", "onnx", "--out", tmp_path / "out")
    assert code == 2 and "models/" in out and "335,5" in out, out  # the declared size, named
    assert not (tmp_path / "out").exists()


# -- 3. deep nesting ----------------------------------------------------------------------------------


DEEP = "[" * 100_000 + "]" * 100_000


def test_deep_config_json_is_bad_input(tiny_bert, tmp_path, cli):
    folder = _clone(tiny_bert, tmp_path / "model")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config)[:-1] + ', "x": ' + DEEP + "}")
    for args in (("convert", folder, "--from", "torch", "--to", "tf", "--out", tmp_path / "out"), ("inspect", folder)):
        code, out = cli(*args)
        assert code == 2 and "config.json" in out and "nested" in out and "past porter's limit of 200" in out, out
    assert not (tmp_path / "out").exists()


def test_deep_shard_index_is_bad_input(tiny_bert, tmp_path, cli):
    folder = _clone(tiny_bert, tmp_path / "model")
    (folder / "model.safetensors").rename(folder / "model-00001-of-00001.safetensors")
    (folder / "model.safetensors.index.json").write_text('{"weight_map": {"a": "x"}, "metadata": ' + DEEP + "}")
    code, out = cli("verify", folder, folder)
    assert code == 2 and "model.safetensors.index.json" in out and "nested" in out, out


def test_deep_pt2_model_json_is_bad_input(tmp_path, cli):
    import torch

    from tests_support import save_pt2

    plain = save_pt2(torch.nn.Linear(4, 3).eval(), torch.randn(2, 4), tmp_path / "plain.pt2")
    deep = tmp_path / "deep.pt2"
    with zipfile.ZipFile(plain) as zin, zipfile.ZipFile(deep, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if "/models/" in info.filename and info.filename.endswith(".json"):
                data = data[:-1] + b', "x": ' + DEEP.encode() + b"}"
            zout.writestr(info, data)
    code, out = cli("convert", deep, "--from", "torch", "--to", "onnx", "--out", tmp_path / "out")
    assert code == 2 and "models/" in out and "nested" in out, out


def test_deep_toml_array_is_bad_input(tmp_path, cli):
    (tmp_path / "porter.toml").write_text("x = " + DEEP + "\n")
    code, out = cli("check", tmp_path / "porter.toml")
    assert code == 2 and "porter.toml" in out and "nested" in out, out


def test_nesting_depth_is_measured_without_recursion():
    """Measured before parsing: where a library has raised the recursion limit, json.loads of DEEP crashes
    the process (a segfault, seen in this suite) instead of raising RecursionError."""
    from porter.checks.model_files import _TOML_STRING, depth_of

    assert depth_of(DEEP) == 100_000
    assert depth_of('{"a": "[[[[\\"[", "b": [[1]]}') == 3  # brackets inside strings (escaped quotes too) do not count
    assert depth_of('x = "[[[["\ny = [[1]]', _TOML_STRING) == 2
    assert depth_of(b"[" * 40_000_000) == 40_000_000  # across numpy's chunks


# -- 5. pipes and devices -----------------------------------------------------------------------------


def test_inputs_from_a_pipe_are_refused_not_read(tiny_bert, tiny_bert_tf, tmp_path):
    fifo = tmp_path / "inputs.npz"
    os.mkfifo(fifo)
    for inputs in (fifo, "/dev/stdin"):
        run = subprocess.run([sys.executable, "-c", "import sys; from porter.cli import main; main(sys.argv[1:])",
                              "verify", str(tiny_bert), str(tiny_bert_tf), "--inputs", str(inputs)],
                             capture_output=True, text=True, timeout=300, stdin=subprocess.PIPE)
        assert run.returncode == 2, run.stderr
        assert str(inputs) in run.stderr and "not a regular file" in run.stderr, run.stderr

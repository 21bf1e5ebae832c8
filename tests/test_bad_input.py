"""Bad input: one clear message naming the file or keys, exit code 2, nothing written."""

import json
import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def _convert(cli, path, out, *extra):
    return cli("convert", path, "--from", "torch", "--to", "tf", "--out", out, *extra)


def _assert_clean_failure(code, output, out, *needles):
    assert code == 2, output
    for needle in needles:
        assert needle in output, output
    assert not out.exists()
    assert not list(out.parent.glob(f".{out.name}.tmp-*")), "a temporary folder was left behind"


def test_missing_path(cli, tmp_path):
    code, output = _convert(cli, tmp_path / "nope", tmp_path / "out")
    _assert_clean_failure(code, output, tmp_path / "out", "nope", "does not exist")


def test_unknown_model_type(cli, tiny_bert, tmp_path):
    ckpt = _copy(tiny_bert, tmp_path / "ckpt")
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["model_type"] = "not-a-model"
    (ckpt / "config.json").write_text(json.dumps(cfg))
    code, output = _convert(cli, ckpt, tmp_path / "out")
    _assert_clean_failure(code, output, tmp_path / "out", "config.json", "'not-a-model'")


def test_config_of_one_family_with_weights_of_another(cli, tiny_bert, tmp_path):
    ckpt = _copy(tiny_bert, tmp_path / "ckpt")
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["model_type"] = "gpt2"
    (ckpt / "config.json").write_text(json.dumps(cfg))
    code, output = _convert(cli, ckpt, tmp_path / "out")
    _assert_clean_failure(code, output, tmp_path / "out", "config.json", "gpt2", "--route onnx")


@pytest.mark.parametrize(
    "damage, needles",
    [
        ("missing", ["missing tensor", "encoder/layer_._1/output/dense/bias", "encoder.layer.1.output.dense.bias"]),
        ("extra", ["unexpected tensor 'cls.predictions.bias'"]),
        ("shape", ["shape mismatch", "pooler.dense.weight", "(32, 31)"]),
    ],
)
def test_damaged_checkpoint(cli, tiny_bert, tmp_path, damage, needles):
    ckpt = _copy(tiny_bert, tmp_path / "ckpt")
    tensors = load_file(str(ckpt / "model.safetensors"))
    if damage == "missing":
        del tensors["encoder.layer.1.output.dense.bias"]
    elif damage == "extra":
        tensors["cls.predictions.bias"] = np.zeros(99, np.float32)
    else:
        tensors["pooler.dense.weight"] = np.zeros((32, 31), np.float32)
    save_file(tensors, str(ckpt / "model.safetensors"), metadata={"format": "pt"})
    code, output = _convert(cli, ckpt, tmp_path / "out")
    _assert_clean_failure(code, output, tmp_path / "out", *needles)


def test_truncated_safetensors(cli, tiny_bert, tmp_path):
    ckpt = _copy(tiny_bert, tmp_path / "ckpt")
    data = (ckpt / "model.safetensors").read_bytes()
    (ckpt / "model.safetensors").write_bytes(data[: len(data) // 2])
    code, output = _convert(cli, ckpt, tmp_path / "out")
    _assert_clean_failure(code, output, tmp_path / "out", "model.safetensors", "truncated")


def test_existing_output_needs_force(cli, tiny_bert, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, output = _convert(cli, tiny_bert, out)
    assert code == 2 and "already exists" in output and "--force" in output
    assert (out / "keep.txt").read_text() == "mine"
    code, output = _convert(cli, tiny_bert, out, "--force")  # --force replaces only porter's own output
    assert code == 2 and "porter did not write" in output and (out / "keep.txt").read_text() == "mine"
    (out / "porter_report.json").write_text("{}")
    code, output = _convert(cli, tiny_bert, out, "--force")
    assert code == 0, output
    assert not (out / "keep.txt").exists() and (out / "saved_model.pb").is_file()


def test_bad_flags(cli, tmp_path):
    code, output = cli("convert", "bert", "--from", "jax", "--to", "tf", "--out", tmp_path / "o")
    assert code == 2 and "--from" in output and "'jax'" in output
    code, output = cli("convert", "nosuchmodel", "--from", "torch", "--to", "tf", "--out", tmp_path / "o")
    assert code == 2 and "nosuchmodel" in output


def test_help_does_not_import_frameworks():
    import subprocess
    import sys

    code = "import sys, porter.cli; assert not {'tensorflow', 'torch', 'keras'} & set(sys.modules), sorted(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)

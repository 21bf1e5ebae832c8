"""Every failure is a clean message: bad input exits 2 naming the file, key or flag;
a porter bug exits 3 with one line and the traceback in a file (issue 8, items 3 and 6)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest


def run_main(*args) -> int:
    """Run the real console entry (porter.cli:main) in this process; return its exit code."""
    from porter.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    return exit_info.value.code


# -- exit 3: an internal error ------------------------------------------------------------------

def test_internal_error_exits_3_with_one_line_and_a_traceback_file(monkeypatch, capsys, tmp_path):
    import porter.conversion
    import porter.crash

    def broken(*args, **kwargs):
        raise RuntimeError("boom inside the converter")

    monkeypatch.setattr(porter.conversion, "convert", broken)
    monkeypatch.setattr(porter.crash.tempfile, "gettempdir", lambda: str(tmp_path))
    code = run_main("convert", "bert", "--from", "torch", "--to", "tf", "--out", tmp_path / "out")
    err = capsys.readouterr().err
    assert code == 3
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    match = re.fullmatch(r"porter: internal error: RuntimeError: boom inside the converter "
                         r"\(a porter bug; full traceback in (.+)\)", lines[0])
    assert match, lines[0]
    crash_file = Path(match.group(1))
    assert crash_file.parent == tmp_path
    text = crash_file.read_text()
    assert "Traceback (most recent call last)" in text and "boom inside the converter" in text
    assert "in broken" in text  # the frame that raised, not just the message
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, code", [
    (["zoo", "show", "nope"], 2),           # a PorterError: bad input
    (["convert", "bert", "--bogus"], 2),    # a usage error from click
    (["zoo", "list"], 0),
])
def test_main_keeps_the_documented_exit_codes(args, code, capsys):
    assert run_main(*args) == code
    assert "internal error" not in capsys.readouterr().err


def test_keyboard_interrupt_exits_130_with_one_line(monkeypatch, capsys):
    import porter.zoo

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(porter.zoo, "get", interrupted)
    assert run_main("zoo", "show", "bert") == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "Traceback" not in err and "internal error" not in err


# -- helpers -------------------------------------------------------------------------------------

def assert_clean_exit_2(args, needles, capsys, out: Path | None = None) -> str:
    """porter ARGS exits 2 with one message holding every needle, no traceback, nothing at --out."""
    code = run_main(*args)
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert code == 2, text
    for needle in [needles] if isinstance(needles, str) else needles:
        assert needle in text, f"{needle!r} not in:\n{text}"
    assert "Traceback" not in text and "internal error" not in text, text
    if out is not None:
        assert not out.exists(), f"{out} was written"
    return text


def clone(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def edit_config(folder: Path, **changes) -> Path:
    import json

    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


# -- 1. broken HF folders and SavedModels under porter verify (5 breakages x 2 sides = 10 cases) ---

def _truncated(folder):
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    return "model.safetensors is not a readable safetensors file"


def _wrong_shape(folder):
    from safetensors.numpy import load_file, save_file

    import numpy as np

    tensors = load_file(folder / "model.safetensors")
    tensors["encoder.layer.0.attention.self.query.weight"] = np.zeros((32, 31), np.float32)
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    return "encoder.layer.0.attention.self.query.weight is (32, 31) in the checkpoint, (32, 32) by config.json"


def _missing_shard(folder):
    import json

    from safetensors.numpy import load_file, save_file

    tensors = load_file(folder / "model.safetensors")
    keys = sorted(tensors)
    first, second = keys[: len(keys) // 2], keys[len(keys) // 2:]
    save_file({k: tensors[k] for k in first}, folder / "model-00001-of-00002.safetensors", metadata={"format": "pt"})
    (folder / "model.safetensors").unlink()
    weight_map = {**{k: "model-00001-of-00002.safetensors" for k in first}, **{k: "model-00002-of-00002.safetensors" for k in second}}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return "model-00002-of-00002.safetensors is missing"


def _vocab_disagrees(folder):
    edit_config(folder, vocab_size=120)
    return "embeddings.word_embeddings.weight is (99, 32) in the checkpoint, (120, 32) by config.json"


BROKEN_HF = {"truncated safetensors": _truncated, "a tensor of the wrong shape": _wrong_shape,
             "a shard missing from the index": _missing_shard, "vocab_size disagrees with the weights": _vocab_disagrees}


@pytest.mark.parametrize("side", ["reference", "candidate"])
@pytest.mark.parametrize("breakage", sorted(BROKEN_HF))
def test_verify_on_a_broken_hf_folder_names_the_file_and_tensor(breakage, side, tiny_bert, tiny_bert_tf, tmp_path, capsys):
    broken = clone(tiny_bert, tmp_path / "broken")
    needle = BROKEN_HF[breakage](broken)
    args = ["verify", broken, tiny_bert_tf] if side == "reference" else ["verify", tiny_bert, broken]
    assert_clean_exit_2(args + ["--report", tmp_path / "r.json"], [needle, str(broken)], capsys, out=tmp_path / "r.json")


@pytest.mark.parametrize("side", ["reference", "candidate"])
def test_verify_on_a_saved_model_without_variables_says_so(side, tiny_bert_tf, tmp_path, capsys):
    import shutil

    broken = clone(tiny_bert_tf, tmp_path / "no-variables")
    shutil.rmtree(broken / "variables")
    other = clone(tiny_bert_tf, tmp_path / "whole")
    args = ["verify", broken, other] if side == "reference" else ["verify", other, broken]
    assert_clean_exit_2(args, [f"{broken} is a SavedModel without its variables/ folder"], capsys)


# -- 2. porter check TOML with wrong value types (9 cases) ------------------------------------------

JOB = 'name = "j"\nreference = "a"\ncandidate = "b"\n'


@pytest.mark.parametrize("toml, needle", [
    ('[[verify]]\nname = "j"\nreference = 5\ncandidate = "b"\n', "job 1 (j): reference must be a path string, not 5 (integer)"),
    ("[[verify]]\n" + JOB + 'threads = "two"\n', "job 1 (j): threads must be an integer >= 1, not 'two' (string)"),
    ("[[verify]]\n" + JOB + "threads = 0\n", "job 1 (j): threads must be an integer >= 1, not 0"),
    ("verify = 3\n", "verify must be an array of tables ([[verify]] blocks), not 3 (integer)"),
    ("[[verify]]\n" + JOB + 'atol = "x"\n', "job 1 (j): atol must be a number >= 0, or a table of OUTPUT = number, not 'x'"),
    ("[[verify]]\n" + JOB + "shapes = [2, 8]\n", "job 1 (j): shapes must be a list of [batch, sequence] pairs"),
    ("[[verify]]\n" + JOB + 'latency = "yes"\n', "job 1 (j): latency must be true or false, not 'yes' (string)"),
    ("[[verify]]\n" + JOB + "colour = 1\n", "job 1 (j): unknown key 'colour' (known: allow_degenerate"),
    ("defaults = 3\n[[verify]]\n" + JOB, "defaults must be a table ([defaults]), not 3 (integer)"),
])
def test_check_toml_with_a_wrong_value_type_names_job_key_and_type(toml, needle, tmp_path, capsys):
    (tmp_path / "porter.toml").write_text(toml)
    assert_clean_exit_2(["check", tmp_path / "porter.toml"], [needle, "porter.toml does not describe porter check jobs"], capsys)


def test_check_toml_lists_every_wrong_type_at_once(tmp_path, capsys):
    (tmp_path / "porter.toml").write_text("[[verify]]\n" + JOB + 'threads = "two"\n[[verify]]\nname = "k"\nreference = "a"\ncandidate = 3\n')
    text = assert_clean_exit_2(["check", tmp_path / "porter.toml"], ["job 1 (j): threads", "job 2 (k): candidate"], capsys)
    assert text.count("  - job") == 2


# -- 3. config.json with wrong types or values (8 configs x convert and verify = 16 cases) ----------

BAD_CONFIGS = {
    "a JSON list": ("[1, 2]", "config.json holds a JSON list, not an object of config keys"),
    "invalid JSON": ('{"model_type": "bert",, }', "config.json is not valid JSON: Expecting property name enclosed in double quotes at line 1 column 23"),
    "num_attention_heads 0": ({"num_attention_heads": 0}, "num_attention_heads must be a positive integer, not 0"),
    "hidden_size a string": ({"hidden_size": "32"}, "hidden_size must be a positive integer, not '32' (str)"),
    "hidden_size not divisible by heads": ({"num_attention_heads": 5}, "hidden_size 32 is not a multiple of num_attention_heads 5"),
    "a negative size": ({"intermediate_size": -4}, "intermediate_size must be a positive integer, not -4"),
    "a boolean layer count": ({"num_hidden_layers": True}, "num_hidden_layers must be a positive integer, not True"),
    "a field transformers rejects": ({"initializer_range": "x"}, "config.json is not a config transformers accepts: Validation error for field 'initializer_range'"),
}


@pytest.mark.parametrize("command", ["convert", "verify"])
@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_a_bad_config_json_is_named_with_its_key(case, command, tiny_bert, tiny_bert_tf, tmp_path, capsys):
    broken = clone(tiny_bert, tmp_path / "bad-config")
    change, needle = BAD_CONFIGS[case]
    if isinstance(change, str):
        (broken / "config.json").write_text(change)
    else:
        edit_config(broken, **change)
    out = tmp_path / "out"
    args = (["convert", broken, "--from", "torch", "--to", "tf", "--out", out] if command == "convert"
            else ["verify", broken, tiny_bert_tf, "--report", out])
    assert_clean_exit_2(args, [needle, "config.json"], capsys, out=out)


# -- 4. paths named for what they are (8 cases) ----------------------------------------------------

def test_inputs_that_is_a_directory_is_named_as_one(tiny_bert, tiny_bert_tf, tmp_path, capsys):
    (tmp_path / "arrays").mkdir()
    needle = f"--inputs {tmp_path / 'arrays'} is a directory, not a .npz file"
    assert_clean_exit_2(["verify", tiny_bert, tiny_bert_tf, "--inputs", tmp_path / "arrays"], needle, capsys)
    out = tmp_path / "out"
    assert_clean_exit_2(["convert", tiny_bert, "--from", "torch", "--to", "tf", "--out", out, "--inputs", tmp_path / "arrays"],
                        needle, capsys, out=out)


@pytest.mark.parametrize("command", ["convert", "verify"])
def test_a_symlink_loop_is_named_as_one(command, tiny_bert_tf, tmp_path, capsys):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    out = tmp_path / "out"
    args = (["convert", tmp_path / "a", "--from", "torch", "--to", "tf", "--out", out] if command == "convert"
            else ["verify", tmp_path / "a", tiny_bert_tf])
    assert_clean_exit_2(args, f"{tmp_path / 'a'} is a symlink loop", capsys, out=out)


def test_a_dangling_symlink_names_its_target(tiny_bert_tf, tmp_path, capsys):
    (tmp_path / "model").symlink_to(tmp_path / "gone")
    assert_clean_exit_2(["verify", tmp_path / "model", tiny_bert_tf], f"is a symlink to {tmp_path / 'gone'}, which does not exist", capsys)


def test_a_path_behind_a_denied_permission_says_so(monkeypatch, tiny_bert_tf, tmp_path, capsys):
    import errno
    import os

    import porter.path_errors

    denied = tmp_path / "locked" / "model"
    real_stat = os.stat

    def stat(path, *args, **kwargs):  # the tests run as root, for whom chmod 000 denies nothing
        if str(path) == str(denied):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(porter.path_errors.os, "stat", stat)
    assert_clean_exit_2(["verify", denied, tiny_bert_tf], f"{denied} cannot be reached: permission denied", capsys)


@pytest.mark.parametrize("command", ["convert", "verify"])
def test_a_garbage_keras_file_is_not_reported_as_missing(command, tiny_bert_tf, tmp_path, capsys):
    garbage = tmp_path / "model.keras"
    garbage.write_bytes(bytes(range(256)) * 4)
    out = tmp_path / "out"
    args = (["convert", garbage, "--from", "tf", "--to", "torch", "--out", out] if command == "convert"
            else ["verify", garbage, tiny_bert_tf])
    text = assert_clean_exit_2(args, f"{garbage} is not a valid .keras (zip) file", capsys, out=out)
    assert "not found" not in text.lower()

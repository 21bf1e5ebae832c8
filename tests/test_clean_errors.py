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
    import porter.process.crash

    def broken(*args, **kwargs):
        raise RuntimeError("boom inside the converter")

    monkeypatch.setattr(porter.conversion, "convert", broken)
    monkeypatch.setattr(porter.process.crash.tempfile, "gettempdir", lambda: str(tmp_path))
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


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory):
    from conftest import make_hf_checkpoint

    config = dict(model_type="gpt2", vocab_size=99, n_embd=32, n_layer=2, n_head=4, n_positions=64)
    return make_hf_checkpoint(tmp_path_factory.mktemp("hf") / "gpt2", config)


@pytest.mark.parametrize("breakage", ["n_head 0", "vocab_size disagrees", "truncated"])
def test_a_broken_folder_of_a_keras_hub_family_is_named_too(breakage, tiny_gpt2, tmp_path, capsys):
    broken = clone(tiny_gpt2, tmp_path / "broken")
    if breakage == "n_head 0":
        edit_config(broken, n_head=0)
        needle = "n_head must be a positive integer, not 0"
    elif breakage == "vocab_size disagrees":
        edit_config(broken, vocab_size=120)
        needle = "wte.weight is (99, 32) in the checkpoint, (120, 32) by config.json"
    else:
        needle = _truncated(broken)
    assert_clean_exit_2(["verify", broken, tiny_gpt2], [needle, str(broken)], capsys)


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


@pytest.fixture(scope="module")
def tiny_t5_encoder(tmp_path_factory):
    """An HF folder outside porter's zoo: the graph route builds it with transformers."""
    import torch
    import transformers

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("hf") / "t5-encoder"
    config = transformers.T5Config(vocab_size=50, d_model=16, d_kv=4, d_ff=32, num_layers=1, num_heads=2)
    transformers.T5EncoderModel(config).save_pretrained(path)
    return path


@pytest.mark.parametrize("change, needle", [
    ({"d_model": "16"}, "config.json is not a config transformers accepts: Validation error for field 'd_model': TypeError: Field 'd_model' expected int, got str"),
    ({"num_heads": 0}, "num_heads must be a positive integer, not 0"),
    ({"d_ff": -3}, "d_ff must be a positive integer, not -3"),
])
def test_a_bad_config_json_outside_the_zoo_is_named_with_its_key(change, needle, tiny_t5_encoder, tmp_path, capsys):
    broken = edit_config(clone(tiny_t5_encoder, tmp_path / "t5"), **change)
    out = tmp_path / "out"
    assert_clean_exit_2(["convert", broken, "--from", "torch", "--to", "tf", "--route", "graph", "--out", out],
                        [needle, f"{broken}/config.json"], capsys, out=out)


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

    import porter.checks.path_errors

    denied = tmp_path / "locked" / "model"
    real_stat = os.stat

    def stat(path, *args, **kwargs):  # the tests run as root, for whom chmod 000 denies nothing
        if str(path) == str(denied):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(porter.checks.path_errors.os, "stat", stat)
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


# -- 5. a tool's failure by its real cause, worded as porter's limit, not bad input (8 cases) -------

def _save_program(module, example, path):
    import torch

    torch.export.save(torch.export.export(module.eval(), (example,)), str(path))
    return path


def _t5_encoder(path):
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.T5Config(vocab_size=50, d_model=16, d_kv=4, d_ff=32, num_layers=1, num_heads=2)
    _save_program(transformers.T5EncoderModel(config), torch.randint(0, 50, (2, 7)), path)
    return "modeling_t5.py"


def _swin(path):
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.SwinConfig(image_size=32, patch_size=4, embed_dim=8, depths=[1, 1], num_heads=[1, 2], window_size=2)

    class LastHiddenState(torch.nn.Module):  # a .pt2 returns tensors: SwinModelOutput is no registered type
        def __init__(self):
            super().__init__()
            self.swin = transformers.SwinModel(config)

        def forward(self, x):
            return self.swin(x).last_hidden_state

    _save_program(LastHiddenState(), torch.randn(1, 3, 32, 32), path)
    return "modeling_swin.py"


def run_porter_process(*args) -> tuple[int, str]:
    """porter in its own process, as CI runs it: the tools' fd-level output is really held back there."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-m", "porter.cli", *map(str, args)], capture_output=True, text=True, env=env, timeout=600)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("build", [_t5_encoder, _swin], ids=["t5-encoder", "swin"])
def test_torch_onnx_export_failure_shows_the_real_exception(build, tmp_path):
    source = build(tmp_path / "model.pt2")
    out = tmp_path / "out"
    code, text = run_porter_process("convert", tmp_path / "model.pt2", "--from", "torch", "--to", "onnx", "--out", out)
    assert code == 2, text
    for needle in ["porter cannot convert this model yet: torch.onnx.export (dynamo=True) failed: ValueError: Cannot view a tensor",
                   "while executing %view", f"{source}:", "attn_output.reshape(", "hint: torch.onnx could not export"]:
        assert needle in text, f"{needle!r} not in:\n{text}"
    assert "Traceback" not in text and "Refer to the full stack trace" not in text
    assert "torchvision is not installed" not in text  # the exporter's log is kept aside, in a file
    log = Path(re.search(r"the tool's full output: (\S+)\)", text).group(1))
    assert "torchvision is not installed" in log.read_text()
    assert not out.exists()


def test_a_keras_call_error_is_shown_by_its_message_not_its_argument_dump():
    """Keras layers end their errors with the call's arguments (tensor values included): the last line was
    once porter's whole message."""
    import os

    import numpy as np

    from porter.errors import CannotConvertYet
    from porter.routes.to_onnx import captured_output

    dump = "\n".join(f"   [{' '.join(str(v) for v in row)}]" for row in np.arange(24).reshape(4, 6))
    inner = ValueError(
        "Exception encountered when calling layer 'tf.reshape_9' (type TFOpLambda).\n\n"
        "{{function_node __wrapped__Reshape_device_/job:localhost/replica:0/task:0/device:CPU:0}} "
        "Input to reshape is a tensor with 512 values, but the requested shape has 64 [Op:Reshape]\n\n"
        "Call arguments received by layer 'tf.reshape_9' (type TFOpLambda):\n"
        f"  • tensor=tf.Tensor(\n{dump}, shape=(4, 6), dtype=float32)\n  • name='node_view_9'")
    with pytest.raises(CannotConvertYet) as info:
        with captured_output("tf2onnx"):
            os.write(1, b"tf2onnx's own chatter\n")  # at the fd, as the tools' C++ logs write
            raise RuntimeError("tf2onnx gave up") from inner
    assert info.value.message == ("tf2onnx failed: ValueError: "
                                  "Input to reshape is a tensor with 512 values, but the requested shape has 64 [Op:Reshape]")
    assert info.value.problems == ["in layer 'tf.reshape_9'"]
    assert "tf2onnx's own chatter" in info.value.tool_output
    assert info.value.render().startswith("porter cannot convert this model yet: tf2onnx failed")
    assert "--from onnx" in info.value.hint


def _lgamma_saved_model(path):
    import tensorflow as tf

    module = tf.Module()
    module.f = tf.function(lambda x: {"y": tf.math.lgamma(tf.abs(x) + 0.5)},
                           input_signature=[tf.TensorSpec([None, 8], tf.float32, name="x")])
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.f})


@pytest.mark.parametrize("target", ["torch", "onnx"])
def test_tf2onnx_leftovers_are_named_as_tf2onnx_ops(target, tmp_path, capsys):
    # tf2onnx leaves Lgamma as a TF op, and ONNX has no exact equivalent to rewrite it into (Erfc, of the
    # exact gelu, is rewritten: tests/test_tf_leftover_ops.py)
    _lgamma_saved_model(tmp_path / "lgamma")
    out = tmp_path / "out"
    text = assert_clean_exit_2(
        ["convert", tmp_path / "lgamma", "--from", "tf", "--to", target, "--route", "onnx", "--out", out],
        ["porter cannot convert this model yet: tf2onnx could not convert the TF ops Lgamma x1",
         "Lgamma: node '", "hint: these are tf2onnx's limits"], capsys, out=out)
    assert "ONNX->torch" not in text  # not blamed on porter's converter


def _onnx_file(path, op_types):
    import onnx
    from onnx import TensorProto, helper

    nodes, prev = [], "x"
    for i, op in enumerate(op_types):
        nodes.append(helper.make_node(op, [prev], [f"t{i}"], name=f"{op.lower()}_{i}"))
        prev = f"t{i}"
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [1, 4])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


def test_ops_onnx_does_not_define_are_named_as_an_exporters_leftovers(tmp_path, capsys):
    _onnx_file(tmp_path / "m.onnx", ["Relu", "Erfc", "StatefulPartitionedCall", "Erfc"])
    out = tmp_path / "out"
    text = assert_clean_exit_2(["convert", tmp_path / "m.onnx", "--from", "onnx", "--to", "torch", "--out", out],
                               ["the graph holds ops that ONNX does not define: Erfc x2, StatefulPartitionedCall x1",
                                "the exporter that wrote this file left them unconverted"], capsys, out=out)
    assert "porter cannot convert this model yet" not in text  # the file is not valid ONNX: not porter's limit


def test_an_onnx_op_porter_cannot_convert_is_porters_limit_with_counts(tmp_path, capsys):
    _onnx_file(tmp_path / "m.onnx", ["Relu", "RoiAlign", "RoiAlign"])
    out = tmp_path / "out"
    assert_clean_exit_2(["convert", tmp_path / "m.onnx", "--from", "onnx", "--to", "torch", "--out", out],
                        ["porter cannot convert this model yet: ops not supported by porter's ONNX->torch converter (opset 18): RoiAlign x2"],
                        capsys, out=out)

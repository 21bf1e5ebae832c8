"""The CLI basics of issue 8: --version, -h, choices in help, check --help's TOML format,
porter inspect's signatures, progress lines (and --quiet), no cuInit line without a GPU."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib

import pytest

from test_pairing import _mlp, _onnx

STAMP = re.compile(r"^\[\d\d:\d\d:\d\d\] ", re.M)
COMMANDS = (["convert"], ["verify"], ["check"], ["inspect"], ["zoo"], ["zoo", "list"], ["zoo", "show"])


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    return _onnx(tmp_path_factory.mktemp("cli") / "mlp.onnx", _mlp())


def test_version_is_printed_without_importing_a_framework():
    code = ("import sys; from porter.cli import main\n"
            "try:\n    main(['--version'])\nexcept SystemExit as e:\n    assert e.code in (0, None), e.code\n"
            "heavy = [m for m in ('torch', 'tensorflow', 'onnx', 'transformers') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    from porter import __version__

    assert run.stdout.strip() == f"porter {__version__}"


@pytest.mark.parametrize("args", [[], *COMMANDS])
def test_h_is_help_everywhere_and_no_flag_shows_bool(cli, args):
    code, short = cli(*args, "-h")
    assert code == 0 and "Usage: " in short, short
    assert cli(*args, "--help")[1] == short
    assert "<bool>" not in short


def test_help_lists_the_choices(cli):
    _, out = cli("convert", "-h")
    for choices in ("--from <torch|tf|onnx>", "--to <tf|torch|onnx|tflite|tfjs>", "--route <auto|direct|graph|onnx>", "--layout <nhwc|nchw>"):
        assert choices in out, out
    _, top = cli("-h")
    assert "--version" in top and "--quiet" in top


@pytest.mark.parametrize("flag, value, choices", [
    ("--route", "fast", "'auto', 'direct', 'graph', 'onnx'"),
    ("--from", "jax", "'torch', 'tf', 'onnx'"),
    ("--to", "coreml", "'tf', 'torch', 'onnx', 'tflite', 'tfjs'"),
    ("--layout", "nwhc", "'nhwc', 'nchw'"),
])
def test_a_bad_choice_is_a_usage_error(flag, value, choices, capsys, tmp_path):
    from porter.cli import main

    args = ["convert", "bert", "--from", "torch", "--to", "tf", "--out", str(tmp_path / "out"), flag, value]
    with pytest.raises(SystemExit) as exit_:
        main(args)
    err = capsys.readouterr().err
    assert exit_.value.code == 2, err
    assert f"Invalid value for '{flag}'" in err and choices in err, err
    assert not (tmp_path / "out").exists()


def test_check_help_shows_every_toml_key(cli):
    from porter.verifiers import check

    _, out = cli("check", "-h")
    keys = [*check.PATH_KEYS, *check.OPTION_KEYS, "name"]
    missing = [k for k in keys if not re.search(rf"^\s+{k} = ", out, re.M)]
    assert not missing, out
    assert "[defaults]" in out and "[[verify]]" in out  # TOML tables, not swallowed as markup


def test_check_format_is_a_valid_check_file(tmp_path):
    """FORMAT, as shown by --help, is a file porter check loads, and it sets every option."""
    from porter.verifiers import check

    path = tmp_path / "porter.toml"
    path.write_text(check.FORMAT)
    tomllib.loads(check.FORMAT)
    (job,) = check.load(path)
    given = set(job.options) | set(job.reports) | {"reference", "candidate"}
    renamed = {"per_output_atol": "atol", "name_map": "map"}
    given = {renamed.get(k, k) for k in given}
    assert set(check.OPTION_KEYS) - given == set()
    assert set(check.REPORT_KEYS) <= given


def test_inspect_tiny_bert_names_shapes_and_dtypes(cli, tiny_bert):
    code, out = cli("-q", "inspect", tiny_bert)
    assert code == 0, out
    assert re.search(r"input_ids\s+int64\s+\(None, None\)", out), out
    assert re.search(r"attention_mask\s+int64\s+\(None, None\)", out), out
    assert re.search(r"last_hidden_state\s+float32\s+\(None, None, 32\)", out), out  # hidden_size 32
    assert re.search(r"pooler_output\s+float32\s+\(None, 32\)", out), out


def test_inspect_onnx(cli, tiny_onnx):
    code, out = cli("inspect", tiny_onnx)
    assert code == 0, out
    assert re.search(r"^  x\s+float32\s+\(None, 6\)$", out, re.M), out
    assert re.search(r"^  y\s+float32\s+\(None, 3\)$", out, re.M), out
    assert STAMP.search(out) and "loading" in out  # the load shows as progress


def test_progress_lines_in_a_log_and_none_with_quiet(cli, tiny_onnx):
    code, out = cli("verify", tiny_onnx, tiny_onnx)
    assert code == 0, out
    assert re.search(rf"{STAMP.pattern}loading the reference: \S+mlp.onnx \.\.\.$", out, re.M), out
    assert re.search(rf"{STAMP.pattern}loading the reference: \S+mlp.onnx: done in \d+\.\ds$", out, re.M), out
    assert len(re.findall(rf"{STAMP.pattern}running both models at \dx6: done in", out, re.M)) == 2, out
    for quiet in ("-q", "--quiet"):
        code, out = cli(quiet, "verify", tiny_onnx, tiny_onnx)
        assert code == 0 and "passed" in out.lower(), out
        assert not STAMP.search(out), out


def test_library_use_is_quiet(tiny_onnx, capfd):
    import porter

    assert porter.verify(tiny_onnx, tiny_onnx)
    captured = capfd.readouterr()
    assert not STAMP.search(captured.err + captured.out)


def test_progress_step_lines_nest_and_say_failure(capsys):
    from porter.process import progress

    progress.enable(rich=False)
    try:
        with progress.step("outer"):
            with progress.step("inner"):
                pass
            progress.note("a note")
        with pytest.raises(ValueError), progress.step("broken"):
            raise ValueError("x")
    finally:
        progress.disable()
    lines = [STAMP.sub("", line) for line in capsys.readouterr().err.splitlines()]
    assert lines[:5] == ["outer ...", "  inner ...", "  inner: done in 0.0s", "  a note", "outer: done in 0.0s"]
    assert lines[5] == "broken ..." and lines[6].startswith("broken: failed after ")


def test_rich_display_on_a_terminal_does_not_touch_stdout(capfd):
    """On a tty the spinner writes to its own copy of fd 2; stdout (the tables) stays clean."""
    from porter.process import progress

    progress.enable(rich=True)
    try:
        with progress.step("on a terminal"):
            pass
        assert progress.enabled()
    finally:
        progress.disable()
    captured = capfd.readouterr()
    assert captured.out == ""
    assert "on a terminal" in captured.err  # the finished step's line, on (a copy of) fd 2


@pytest.mark.slow
def test_no_cuinit_line_without_a_gpu(tiny_onnx, tmp_path):
    from porter.process.frameworks import _has_gpu

    if _has_gpu():
        pytest.skip("a GPU is present: TensorFlow's CUDA start-up is left alone")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="1")  # below 3, as many CI images set it: errors are shown
    control = subprocess.run([sys.executable, "-c", "import tensorflow as tf; tf.config.list_physical_devices()"],
                             capture_output=True, text=True, env=env, timeout=300)
    if "cuInit" not in control.stderr:
        pytest.skip("TensorFlow prints no cuInit line on this machine (no libcuda): nothing to hide")
    run = subprocess.run([sys.executable, "-m", "porter.cli", "convert", str(tiny_onnx), "--from", "onnx", "--to", "tf",
                          "--out", str(tmp_path / "out")], capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "cuInit" not in run.stderr, run.stderr
    assert "converting" in run.stderr  # the progress lines are there: stderr was not simply silenced

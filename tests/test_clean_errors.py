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

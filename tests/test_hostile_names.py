"""Names from a model folder are escaped for every medium porter prints them to (porter.checks.escape):
a newline cannot forge a line, an ESC cannot reach the terminal, a backtick cannot open raw HTML in
the Markdown summary, a control character cannot break the JUnit XML, rich markup is not read."""

from __future__ import annotations

import json
import unicodedata
from xml.etree import ElementTree as ET

import numpy as np
import pytest

from porter.checks import escape

FORGED = "model\nPASSED all 12 checks"
CLEAR = "\x1b[2J\x1b[31mred"
TICK = "`<img src=x onerror=alert(1)>`"
MARKUP = "[red]x[/]"
HOSTILE = [FORGED, CLEAR, TICK, MARKUP, "[/]", "a|b", "cr\rtab\t", "\u202eevil\u2028", "c1\x9b31m\x7f", "bad\udc80byte"]
BIDI = set("\u061c\u200e\u200f\u2028\u2029\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _invisible(text: str) -> list[str]:
    return [c for c in text if unicodedata.category(c) in ("Cc", "Cs") or c in BIDI]


# -- one function per medium ----------------------------------------------------------------------

@pytest.mark.parametrize("name", HOSTILE)
def test_console_shows_every_control_character(name):
    shown = escape.console(name)
    assert _invisible(shown) == [] and len(shown.splitlines()) == 1
    shown.encode("utf-8")  # a lone surrogate (an undecodable file name byte) would not even print


def test_console_names_the_characters_and_keeps_a_backslash():
    assert escape.console(FORGED) == "model\\nPASSED all 12 checks"
    assert escape.console(CLEAR) == "\\x1b[2J\\x1b[31mred"
    assert escape.console("\u202e\x9b\t\r") == "\\u202e\\x9b\\t\\r"
    assert escape.console("C:\\models\\bert") == "C:\\models\\bert"


@pytest.mark.parametrize("name", HOSTILE)
def test_markdown_cannot_open_code_html_or_a_table_cell(name):
    for text in (escape.markdown_code(name)[len("<code>"):-len("</code>")], escape.markdown(name)):
        assert not set("`<>|\n\r") & set(text) and _invisible(text) == []
        plain = text.replace("\\\\", "")
        assert all(plain[i - 1] == "\\" for i, c in enumerate(plain) if c in "[]*_~$()"), text


@pytest.mark.parametrize("name", HOSTILE)
def test_xml_is_well_formed_in_attributes_and_text(name):
    element = ET.Element("case", name=escape.xml(name))
    element.text = escape.xml(name)
    parsed = ET.fromstring(ET.tostring(element, encoding="unicode"))
    assert parsed.get("name") == parsed.text == escape.xml(name)


@pytest.mark.parametrize("name", HOSTILE)
def test_html_opens_no_tag(name):
    text = escape.html(name)
    assert not set("<>'\"") & set(text) and _invisible(text) == []


def test_each_attack_is_live_unescaped():
    """What the checks above guard against: the raw names do what the issue says."""
    from rich.console import Console
    from rich.errors import MarkupError

    assert len(f"error: {FORGED}".splitlines()) == 2 and "\x1b" in CLEAR
    assert "<img" in f"`{TICK}`"  # the backticks close the code span around it
    element = ET.Element("property", value=CLEAR)
    with pytest.raises(ET.ParseError):
        ET.fromstring(ET.tostring(element, encoding="unicode"))
    with pytest.raises(MarkupError):
        Console(record=True).print("note: [/]")


def test_an_error_prints_one_line_per_part():
    from porter.errors import CannotConvertYet, PorterError

    error = PorterError(f"{FORGED} is not a model", problems=[CLEAR, MARKUP], hint=f"rename {FORGED}")
    lines = error.render().splitlines()
    assert len(lines) == 4 and lines[1:3] == ["  - \\x1b[2J\\x1b[31mred", "  - [red]x[/]"]
    assert str(error) == error.render() and error.message.startswith(FORGED)  # the fields stay raw for callers
    assert len(CannotConvertYet(FORGED).render().splitlines()) == 1


def test_progress_lines_stay_one_line(capsys):
    from porter.process import progress

    progress.enable(rich=False)
    try:
        with progress.step(f"loading {FORGED}{CLEAR}"):
            progress.note(MARKUP)
    finally:
        progress.disable()
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 3 and "\x1b" not in err and "[red]x[/]" in err
    assert progress._escape(f"{MARKUP}{CLEAR}") == "\\[red]x\\[/]\\x1b[2J\\x1b[31mred"


# -- every report of one result ---------------------------------------------------------------------

def _result(reference, candidate, output, layer, note):
    from porter.verifiers.compare import compare
    from porter.verifiers.result import ShapeResult, VerificationResult

    x = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    outs = [compare(output, x, x), compare(output + "2", x, x + np.float32(1e-2))]
    result = VerificationResult(reference, candidate, [ShapeResult(f"{output}=3x4", {output: (3, 4)}, outs)],
                                route=f"onnx {MARKUP}", notes=[note, f"inputs paired by position: {output} -> x"])
    result.localisation = {"found": True, "torch_module": layer, "keras_layer": layer, "max_abs": 1e-2, "atol": 1e-5,
                           "input": output}
    return result


def _hostile():
    return _result(f"/m/{FORGED}{CLEAR}", f"/c/{TICK}{MARKUP}", f"[/]{TICK}|\n", f"layer{TICK}\x1b]8;;x\x07",
                   f"{TICK} | {MARKUP}\nPASSED")


def _benign():
    return _result("/m/ref", "/c/cand", "y", "layer", "a note")


def test_junit_parses_and_keeps_the_names_visible():
    from porter.verifiers.reports import to_junit

    suite = ET.fromstring(to_junit(_hostile())).find("testsuite")
    props = {p.get("name"): p.get("value") for p in suite.find("properties")}
    assert props["reference"] == escape.console(f"/m/{FORGED}{CLEAR}")
    failure = suite.find("testcase/failure")
    assert failure is not None and failure.text.count("\n") == 1  # porter's own line: the diverging layer


def test_markdown_has_no_raw_html_and_keeps_its_table():
    from porter.verifiers.reports import to_markdown

    hostile, benign = to_markdown(_hostile()), to_markdown(_benign())
    assert "<img" not in hostile and "`" not in hostile and "\x1b" not in hostile
    assert len(hostile.splitlines()) == len(benign.splitlines())
    rows = [line for line in hostile.splitlines() if line.startswith("|")]
    assert len(rows) == 4 and {row.count("|") for row in rows} == {10}  # no name opened a cell


def test_html_has_no_raw_tag_or_control_character():
    from porter.verifiers.html import to_html

    text = to_html(_hostile())
    assert "<img" not in text and "\x1b" not in text and "\x07" not in text and "&lt;img" in text


def test_json_round_trips_the_names_exactly():
    from porter.verifiers.reports import to_json

    result = _hostile()
    text = to_json(result)
    assert "\x1b" not in text and json.loads(text)["reference"] == result.reference


def test_console_table_keeps_its_lines_and_reads_no_markup():
    from rich.console import Console

    from porter.verifiers.console import render

    def shown(result):
        return render(result, Console(record=True, width=400))  # wide: no line wraps in either

    hostile, benign = shown(_hostile()), shown(_benign())
    assert "\x1b" not in hostile and not [line for line in hostile.splitlines() if line.startswith("PASSED")]
    assert len(hostile.splitlines()) == len(benign.splitlines())
    assert f"candidate: /c/{TICK}{MARKUP}" in hostile and "\\nPASSED" in hostile


# -- the CLI ----------------------------------------------------------------------------------------

def _run_main(*args) -> int:
    from porter.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    return exit_info.value.code


@pytest.mark.parametrize("exists", [True, False])
def test_inspect_on_a_hostile_file_name(exists, tmp_path, capsys):
    path = tmp_path / f"m{CLEAR}[red]x[" / f"]\n{FORGED}\n.onnx"  # the folder and file name spell {MARKUP}
    path.parent.mkdir()
    if exists:
        path.write_bytes(b"not an onnx model")
    assert _run_main("inspect", path) == 2
    captured = capsys.readouterr()
    lines = (captured.out + captured.err).splitlines()
    assert "\x1b" not in captured.out + captured.err
    assert not [line for line in lines if line.startswith("PASSED")], lines
    assert escape.console(path) in captured.err
    assert len([line for line in lines if line.startswith("error:")]) == 1


def test_a_crash_on_a_hostile_name_is_one_line_and_the_crash_file_is_escaped(monkeypatch, tmp_path, capsys):
    import porter.conversion
    import porter.process.crash

    def broken(model, **kwargs):
        raise RuntimeError(f"boom on {CLEAR}{model}")

    monkeypatch.setattr(porter.conversion, "convert", broken)
    monkeypatch.setattr(porter.process.crash.tempfile, "gettempdir", lambda: str(tmp_path))
    monkeypatch.setattr(porter.process.crash.sys, "argv", ["porter", "convert", FORGED + CLEAR])
    assert _run_main("convert", FORGED + CLEAR, "--from", "torch", "--to", "tf", "--out", tmp_path / "out") == 3
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "\x1b" not in err and "boom on \\x1b[2J" in err
    (crash,) = tmp_path.glob("porter-crash-*.txt")
    text = crash.read_text()
    assert "\x1b" not in text and text.startswith(f"porter convert {escape.console(FORGED + CLEAR)}\n")

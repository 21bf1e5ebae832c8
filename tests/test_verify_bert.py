"""`porter verify` on a tiny BERT and its porter TF conversion: sensitivity, localisation, tolerances,
reports, latency, NaN/Inf and degenerate references, the Python API and `porter check`."""

import json
from xml.etree import ElementTree as ET

import numpy as np
import pytest

import porter
from verify_support import LAYER1_KERNEL, edited_keras, perturb, set_value

SHAPES = {"1x5", "3x5", "1x41", "3x41"}


@pytest.fixture(scope="module")
def perturbed(tiny_bert_tf, tmp_path_factory):
    """The conversion's model.keras with one weight moved by 1e-3."""
    return edited_keras(tiny_bert_tf, tmp_path_factory.mktemp("perturbed") / "bad.keras", perturb)


def test_unperturbed_passes_every_shape_and_writes_every_report(cli, tiny_bert, tiny_bert_tf, tmp_path):
    paths = {k: tmp_path / f"r.{k}" for k in ("json", "xml", "md", "html")}
    code, output = cli("verify", tiny_bert, tiny_bert_tf, "--report", paths["json"], "--junit", paths["xml"],
                       "--markdown", paths["md"], "--html", paths["html"])
    assert code == 0, output
    report = json.loads(paths["json"].read_text())
    assert report["status"] == "passed" and report["route"] == "direct"
    assert {s["label"] for s in report["shapes"]} == SHAPES
    assert all(o["passed"] and o["max_abs"] <= 1e-5 for s in report["shapes"] for o in s["outputs"])
    assert {"torch", "tensorflow", "numpy", "python"} <= set(report["versions"])
    assert report["tolerances"]["last_hidden_state"] == {"atol": 1e-5, "rtol": 1.3e-6}
    assert "latency" in report and report["latency"] is None
    first = report["shapes"][0]["outputs"][0]
    for key in ("shape", "dtype", "max_abs", "max_rel", "mean_abs", "cosine", "mismatched", "mismatched_pct", "required_atol", "worst_index"):
        assert key in first, key
    assert sum(first["histogram"]["counts"]) > 0

    suite = ET.parse(paths["xml"]).getroot().find("testsuite")
    cases = suite.findall("testcase")
    assert len(cases) == 2 * len(SHAPES) and suite.get("failures") == "0"
    assert not suite.findall("testcase/failure")

    md = paths["md"].read_text()
    from porter.checks.escape import markdown_code

    # names are escaped for Markdown (a name from a model folder must not open markup): <code>last\_hidden\_state</code>
    assert "passed" in md and f"| {markdown_code('3x41')} | {markdown_code('last_hidden_state')} |" in md

    html = paths["html"].read_text()
    assert html.count("<svg") >= 2 and "last_hidden_state" in html
    assert "http://" not in html and "https://" not in html and "<script" not in html


def test_perturbed_weight_is_caught_and_localised(cli, tiny_bert, perturbed, tmp_path):
    code, output = cli("verify", tiny_bert, perturbed, "--report", tmp_path / "r.json", "--junit", tmp_path / "j.xml")
    assert code == 1, output
    assert "FAIL" in output and "encoder.layer.1.intermediate.dense" in output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["status"] == "failed"
    loc = report["localisation"]
    assert loc["found"] and loc["torch_module"] == "encoder.layer.1.intermediate.dense"
    assert loc["keras_layer"] == "bert/encoder/layer_._1/intermediate/dense"
    assert 1e-5 < loc["max_abs"] < 1e-1
    failures = ET.parse(tmp_path / "j.xml").getroot().findall("testsuite/testcase/failure")
    assert failures and "encoder.layer.1.intermediate.dense" in failures[0].text


def test_localisation_either_direction(tiny_bert, perturbed):
    """The Keras model as the reference, the HF torch folder as the candidate."""
    result = porter.verify(perturbed, tiny_bert, shapes=[(2, 8)])
    assert not result
    assert result.localisation["torch_module"] == "encoder.layer.1.intermediate.dense"


def test_per_output_tolerance(cli, tiny_bert, perturbed, tmp_path):
    code, output = cli("verify", tiny_bert, perturbed, "--atol", "pooler_output=1e-1", "--rtol", "pooler_output=0.5",
                       "--report", tmp_path / "r.json", "--shape", "2x8")
    assert code == 1, output
    report = json.loads((tmp_path / "r.json").read_text())
    outputs = {o["name"]: o for o in report["shapes"][0]["outputs"]}
    assert outputs["pooler_output"]["passed"] and (outputs["pooler_output"]["atol"], outputs["pooler_output"]["rtol"]) == (0.1, 0.5)
    assert not outputs["last_hidden_state"]["passed"] and outputs["last_hidden_state"]["atol"] == 1e-5
    assert report["tolerances"]["pooler_output"] == {"atol": 0.1, "rtol": 0.5}
    code, output = cli("verify", tiny_bert, perturbed, "--atol", "1e-1", "--shape", "2x8", "--shape", "4x21")
    assert code == 0, output
    code, output = cli("verify", tiny_bert, perturbed, "--atol", "no_such_output=1")
    assert code == 2 and "no_such_output" in output and "pooler_output" in output


def test_latency_block_and_gate(cli, tiny_bert, tiny_bert_tf, tmp_path, monkeypatch):
    from porter.verifiers import latency

    monkeypatch.setattr(latency, "MAX_HALF_WIDTH", float("inf"))  # every spread counts as tight: the gate decides (noise: test_latency_gate.py)
    code, output = cli("verify", tiny_bert, tiny_bert_tf, "--shape", "2x8", "--max-latency-ratio", "1e-6",
                       "--latency-budget", "0.1", "--threads", "1", "--report", tmp_path / "r.json", "--html", tmp_path / "r.html")
    assert code == 1, output
    report = json.loads((tmp_path / "r.json").read_text())
    lat = report["latency"]
    for side in ("reference", "candidate"):
        assert {"p50_ms", "p90_ms", "p99_ms", "runs"} <= set(lat[side]) and lat[side]["runs"] >= 10
    assert lat["ratio"] > 0 and lat["passed"] is False and lat["threads"]["requested"] == 1
    assert lat["threads"]["torch"] == 1
    assert all(o["passed"] for s in report["shapes"] for o in s["outputs"])  # only the gate failed
    assert "latency" in output and "max-latency-ratio" in output
    assert (tmp_path / "r.html").read_text().count("<svg") >= 4  # 2 error histograms + 2 latency plots


@pytest.mark.parametrize("side", ["candidate", "reference"])
def test_nan_on_one_side(tiny_bert, tiny_bert_tf, tmp_path, side):
    nan = edited_keras(tiny_bert_tf, tmp_path / "nan.keras", set_value(LAYER1_KERNEL, np.nan))
    pair = (tiny_bert, nan) if side == "candidate" else (nan, tiny_bert)
    result = porter.verify(*pair, shapes=[(2, 8)], localise=False, allow_nonfinite=True)
    assert not result
    assert all(f"{side} has" in o.reason and "NaN/Inf" in o.reason for s in result.shapes for o in s.outputs)


def test_degenerate_reference_fails_unless_allowed(cli, tiny_bert_tf, tmp_path):
    # a zero LayerNorm scale at the end: every position and sample gives the same output
    const = edited_keras(tiny_bert_tf, tmp_path / "const.keras", set_value("bert/encoder/layer_._1/output/LayerNorm/gamma", 0.0))
    code, output = cli("verify", const, const, "--shape", "2x8")
    assert code == 1 and "degenerate" in output and "--allow-degenerate" in output
    code, output = cli("verify", const, const, "--shape", "2x8", "--allow-degenerate")
    assert code == 0, output


def test_python_api_and_assert_equivalent(tiny_bert, tiny_bert_tf, perturbed):
    from porter.errors import VerificationFailed
    from porter.testing import assert_equivalent

    result = assert_equivalent(tiny_bert, tiny_bert_tf, shapes=[(2, 8)])
    assert result and result.passed and result.shapes[0].label == "2x8"
    with pytest.raises(VerificationFailed) as info:
        assert_equivalent(tiny_bert, perturbed, shapes=[(2, 8)])
    assert "last_hidden_state" in str(info.value) and "FAIL" in str(info.value)
    assert not info.value.result


def test_inputs_npz_with_several_sets(cli, tiny_bert, tiny_bert_tf, tmp_path):
    from verify_support import bert_feed

    sets = {f"{n}/{k}": v for n, (b, s) in enumerate([(1, 5), (3, 11)]) for k, v in bert_feed(b, s).items()}
    np.savez(tmp_path / "in.npz", **sets)
    code, output = cli("verify", tiny_bert, tiny_bert_tf, "--inputs", tmp_path / "in.npz", "--report", tmp_path / "r.json")
    assert code == 0, output
    assert [s["label"] for s in json.loads((tmp_path / "r.json").read_text())["shapes"]] == ["1x5", "3x11"]


def test_check_runs_a_list_of_jobs(cli, tiny_bert, tiny_bert_tf, perturbed, tmp_path):
    toml = tmp_path / "porter.toml"
    good = f'[defaults]\nshapes = [[2, 8]]\n\n[[verify]]\nname = "good"\nreference = "{tiny_bert}"\ncandidate = "{tiny_bert_tf}"\nreport = "out/good.json"\n'
    toml.write_text(good)
    code, output = cli("check", toml)
    assert code == 0, output
    assert json.loads((tmp_path / "out" / "good.json").read_text())["status"] == "passed"
    toml.write_text(good + f'\n[[verify]]\nname = "bad"\nreference = "{tiny_bert}"\ncandidate = "{perturbed}"\natol = {{ pooler_output = 1.0 }}\n')
    code, output = cli("check", toml)
    assert code == 1 and "failed   bad" in output and "passed   good" in output
    toml.write_text(good + "colour = 'red'\n")
    code, output = cli("check", toml)
    assert code == 2 and "colour" in output

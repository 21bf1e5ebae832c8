"""The verifier's pieces without models: comparison, histograms, reports, latency, the check file."""

import json
from xml.etree import ElementTree as ET

import numpy as np
import pytest

from porter.verifiers.compare import compare
from porter.verifiers.result import ShapeResult, VerificationResult


def _result(candidate_delta=0.0):
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((2, 4, 8)).astype(np.float32)
    outs = [compare("hidden", ref, ref + np.float32(candidate_delta)), compare("ids", np.arange(6), np.arange(6))]
    return VerificationResult("a", "b", shapes=[ShapeResult("2x4", {"x": (2, 4)}, outs)], versions={"numpy": np.__version__})


def test_compare_rule_and_histogram():
    ref = np.linspace(-1, 1, 100, dtype=np.float32).reshape(4, 25)
    cand = ref.copy()
    cand[2, 7] += 3e-5
    c = compare("y", ref, cand)
    assert not c.passed and c.mismatched == 1 and c.worst_index == (2, 7)
    assert c.required_atol == pytest.approx(3e-5, rel=1e-2)
    assert sum(c.histogram["counts"]) == ref.size and c.histogram["counts"][0] == ref.size - 1
    assert compare("y", ref, cand, atol=1e-4).passed
    assert compare("y", ref, cand, rtol=1.0).passed  # within rtol * |ref| everywhere: passes despite atol


def test_nan_inf_names_the_side():
    ref = np.ones((2, 3), np.float32) * np.arange(3)
    bad = ref.copy()
    bad[0, 1] = np.inf
    assert "candidate has 1 NaN/Inf" in compare("y", ref, bad).reason
    assert "reference has 1 NaN/Inf" in compare("y", bad, ref).reason


def test_degenerate_reference():
    const = np.full((3, 5), 0.25, np.float32)
    c = compare("y", const, const)
    assert not c.passed and "constant" in c.reason and "--allow-degenerate" in c.reason
    assert compare("y", const, const, allow_degenerate=True).passed
    same_rows = np.tile(np.linspace(0, 1, 5, dtype=np.float32), (3, 1))
    assert "does not depend on the input" in compare("y", same_rows, same_rows).reason
    # one element (a Dense(1) head at batch 1) is not evidence of a constant; a batch of equal scalars is
    one = np.array([[0.7]], np.float32)
    assert compare("score", one, one).passed
    assert "constant" in compare("score", np.full((3, 1), 0.7, np.float32), np.full((3, 1), 0.7, np.float32)).reason


def test_reports_from_a_failing_result(tmp_path):
    from porter.verifiers.reports import write

    result = _result(candidate_delta=1e-3)
    from porter.verifiers.latency import decide, ratio_stats, side_summary

    times = {"reference": [1e-3] * 3, "candidate": [3e-3] * 3}
    shape = {"label": "2x4", "role": "served", "input_shapes": {}, "rounds": 3, "runs_per_round": 1,
             **ratio_stats(times["reference"], times["candidate"]), **{k: side_summary(v) for k, v in times.items()}}
    result.latency = decide([shape], 2.0, threads=1)
    paths = write(result, report=tmp_path / "r.json", junit=tmp_path / "j.xml", markdown=tmp_path / "s.md", html=tmp_path / "r.html")
    assert len(paths) == 4 and not result
    assert json.loads((tmp_path / "r.json").read_text())["status"] == "failed"
    suite = ET.parse(tmp_path / "j.xml").getroot().find("testsuite")
    assert suite.get("tests") == "3" and suite.get("failures") == "2"  # hidden + latency; ids passed
    assert [c.get("name") for c in suite.findall("testcase") if c.find("failure") is not None] == ["hidden [2x4]", "latency median ratio"]
    assert "❌" in (tmp_path / "s.md").read_text()
    html = (tmp_path / "r.html").read_text()
    assert html.count("<svg") == 4 and "FAIL" in html and "http" not in html


def test_latency_percentiles_and_gate():
    from porter.verifiers.latency import latency_parity

    class Runner:
        def __init__(self):
            self.calls = self.syncs = 0

        def infer(self, feed):
            self.calls += 1

        def synchronize(self):
            self.syncs += 1

    ref, cand = Runner(), Runner()
    block = latency_parity(ref, cand, [("1x1", "served", {}, {})], max_rounds=20, min_rounds=20, budget_s=10, reps=1)
    assert block["reference"]["runs"] == 20 and ref.calls == 23 and ref.syncs == 21  # 3 warm-up, synced inside every timed block
    assert block["reference"]["p50_ms"] <= block["reference"]["p90_ms"] <= block["reference"]["p99_ms"]
    assert block["shapes"][0]["rounds"] == 20 and block["status"] in ("measured", "unstable")  # gates: test_latency_gate.py


def test_check_file_format(tmp_path):
    from porter.errors import PorterError
    from porter.verifiers.check import load

    (tmp_path / "porter.toml").write_text(
        '[defaults]\nthreads = 1\n[[verify]]\nreference = "a"\ncandidate = "b"\natol = { out = 2e-5 }\njunit = "r/j.xml"\n'
    )
    (job,) = load(tmp_path / "porter.toml")
    assert job.reference == str(tmp_path / "a") and job.options == {"threads": 1, "per_output_atol": {"out": 2e-5}}
    assert job.reports == {"junit": str(tmp_path / "r" / "j.xml")}
    (tmp_path / "porter.toml").write_text('[[verify]]\nreference = "a"\nspeed = 1\n')
    with pytest.raises(PorterError) as info:
        load(tmp_path / "porter.toml")
    assert "unknown key 'speed'" in str(info.value) and "missing 'candidate'" in str(info.value)


def test_fp32_logits_default_to_1e4_and_hidden_states_to_1e5():
    """porter's fp32 standard: 1e-5 on hidden states, 1e-4 on logits (stated in the comparison)."""
    from porter.verifiers.compare import compare

    ref = np.linspace(-3, 3, 64, dtype=np.float32).reshape(2, 32)
    small = ref + np.float32(5e-5)
    assert compare("logits", ref, small).passed
    assert not compare("last_hidden_state", ref, small).passed
    assert not compare("logits", ref, ref + np.float32(2e-4)).passed
    assert not compare("logits", ref, small, atol=1e-5).passed  # a given atol is never raised
    assert "logits: atol 0.0001" in compare("logits", ref, small).tolerance_from

"""The latency gate: interleaved paired rounds, median ratio with its spread, 'unstable' when too noisy.

Timing assertions use sleep-based fake runners (deterministic to well under the tolerances used);
real models are only checked for the report's fields, never for timing thresholds."""

from __future__ import annotations

import json
import time
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from porter.verifiers import latency as lat_mod
from porter.verifiers.latency import decide, latency_parity, ratio_stats


class Machine:
    """A shared clock of slowness: every runner on it sleeps its base time x the machine's factor."""

    def __init__(self, factor=1.0):
        self.factor = factor
        self.log: list[str] = []


class SleepRunner:
    def __init__(self, name, base_s, machine, jitter=None, seed=0):
        self.name, self.base_s, self.machine, self.jitter = name, base_s, machine, jitter
        self.rng = np.random.default_rng(seed)
        self.syncs = 0

    def infer(self, feed):
        self.machine.log.append(self.name)
        extra = self.jitter(self.rng) if self.jitter else 0.0
        time.sleep(self.base_s * self.machine.factor + extra)
        return {}

    def synchronize(self):
        self.syncs += 1


FEED = {"x": np.zeros((1, 4), np.float32)}
SHAPE = [("1x4", "served", FEED, FEED)]
QUICK = dict(min_rounds=15, max_rounds=15, budget_s=0.0, reps=1, warmup=2)


def _pair(ref_s=0.002, cand_s=0.003, **kw):
    machine = Machine()
    return SleepRunner("ref", ref_s, machine, **kw), SleepRunner("cand", cand_s, machine, **kw), machine


def test_same_pair_three_runs_within_15_percent():
    ratios = []
    for _ in range(3):
        ref, cand, _ = _pair()
        block = latency_parity(ref, cand, SHAPE, **QUICK)
        assert block["status"] == "measured" and block["passed"] is True, block.get("reason")
        ratios.append(block["ratio"])
    mid = float(np.median(ratios))
    assert all(abs(r / mid - 1) <= 0.15 for r in ratios), ratios
    assert 1.3 < mid < 1.6  # 3 ms / 2 ms, plus each sleep's overshoot


def test_rounds_interleave_after_warmup_in_random_order():
    ref, cand, machine = _pair(0.0005, 0.0005)
    block = latency_parity(ref, cand, SHAPE, min_rounds=20, max_rounds=20, budget_s=0.0, reps=2, warmup=3)
    log = machine.log
    assert log[:6] == ["ref", "cand"] * 3  # warm-up, untimed
    rounds = [log[6 + 4 * i: 10 + 4 * i] for i in range(20)]
    assert all(sorted(r) == ["cand", "cand", "ref", "ref"] and r[0] == r[1] and r[2] == r[3] for r in rounds)  # a block of each
    firsts = {r[0] for r in rounds}
    assert firsts == {"ref", "cand"}  # the order changes between rounds
    assert block["shapes"][0]["rounds"] == 20 and block["shapes"][0]["runs_per_round"] == 2
    assert ref.syncs >= 20  # synchronised inside every timed block


def test_drift_of_the_machine_cancels_in_paired_ratios():
    """The machine slows 3x halfway (a frequency step): timing all of one side first would put it in the ratio."""
    ref, cand, machine = _pair(0.001, 0.0015)
    calls = {"n": 0}
    original = ref.infer

    def drifting(feed):
        calls["n"] += 1
        if calls["n"] == 12:
            machine.factor = 3.0
        return original(feed)

    ref.infer = drifting
    block = latency_parity(ref, cand, SHAPE, min_rounds=20, max_rounds=20, budget_s=0.0, reps=1, warmup=1)
    assert machine.factor == 3.0
    assert 1.3 < block["ratio"] < 1.7 and block["status"] == "measured"


def test_noisy_machine_is_unstable_never_pass_or_fail():
    # each run sleeps 1 ms x a log-normal factor (sigma 1): per-round ratios spread over two decades
    noisy = dict(jitter=lambda rng: 0.001 * float(np.exp(rng.normal())))
    ref, cand, _ = _pair(0.0, 0.0, **noisy)
    cand.rng = np.random.default_rng(1)
    for gate in (None, 0.01, 100.0):
        block = latency_parity(ref, cand, SHAPE, max_ratio=gate, **QUICK)
        assert block["status"] == "unstable" and block["passed"] is None
        assert "too noisy" in block["reason"] and "--latency-budget" in block["reason"]
        assert block["shapes"][0]["ci_half_width_rel"] > lat_mod.MAX_HALF_WIDTH


def test_gate_decides_on_the_median_when_tight():
    ref, cand, _ = _pair()
    assert latency_parity(ref, cand, SHAPE, max_ratio=2.0, **QUICK)["status"] == "passed"
    failed = latency_parity(ref, cand, SHAPE, max_ratio=1.2, **QUICK)
    assert failed["status"] == "failed" and failed["passed"] is False
    assert "above --max-latency-ratio 1.2" in failed["reason"] and "1x4" in failed["reason"]


def test_ratio_statistics():
    ref = [1.0] * 9
    stats = ratio_stats(ref, [1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7, 1.8])
    assert stats["ratio_median"] == pytest.approx(1.4)
    assert stats["ratio_iqr"] == pytest.approx([1.2, 1.6])
    lo, hi = stats["ratio_ci90"]
    assert 1.1 <= lo < 1.4 < hi <= 1.7
    assert stats["ci_half_width_rel"] == pytest.approx((hi - lo) / 2 / 1.4) and stats["stable"] is False
    tight = ratio_stats(ref, [1.50, 1.51, 1.49, 1.50, 1.52, 1.48, 1.50, 1.51, 1.49])
    assert tight["stable"] is True and tight["ratio_median"] == pytest.approx(1.5)
    # the same seed gives the same interval: the report is reproducible from its samples
    assert ratio_stats(ref, [1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7, 1.8])["ratio_ci90"] == stats["ratio_ci90"]


def _shape(label, role, median, stable):
    side = {"runs": 3, "p50_ms": 1.0, "p90_ms": 1.0, "p99_ms": 1.0, "mean_ms": 1.0, "samples_ms": [1.0, 1.0, 1.0]}
    return {"label": label, "role": role, "input_shapes": {}, "rounds": 3, "runs_per_round": 1, "ratio_median": median,
            "ratio_iqr": [median, median], "ratio_ci90": [median * 0.9, median * 1.1] if stable else [0.1, 9.0],
            "ci_half_width_rel": 0.1 if stable else 3.0, "stable": stable, "reference": side, "candidate": dict(side)}


def test_decide_over_shapes():
    served, large = _shape("1x128", "served", 1.1, True), _shape("3x41", "largest", 3.0, True)
    assert decide([served, large], 2.0)["status"] == "failed"  # any tight shape above the gate fails
    block = decide([served, _shape("3x41", "largest", 3.0, False)], 2.0)
    assert block["status"] == "unstable" and "3x41" in block["reason"]  # a wide shape is not judged
    block = decide([large, served], None)
    assert block["status"] == "measured" and block["ratio"] == 1.1 and block["shape"] == "1x128"  # the served shape heads
    assert {"name", "cpus", "cpu"} <= set(block["device"]) and block["device"]["name"] == "cpu"
    assert "stable when" in block["stability_rule"]


def _result_with(latency):
    from porter.verifiers.compare import compare
    from porter.verifiers.result import ShapeResult, VerificationResult

    x = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    result = VerificationResult("ref", "cand", [ShapeResult("3x4", {"x": (3, 4)}, [compare("y", x, x)])])
    result.latency = latency
    return result


def test_unstable_gate_status_and_reports(tmp_path):
    from porter.verifiers.reports import to_junit, to_markdown, write

    unstable = _result_with(decide([_shape("1x4", "served", 1.0, False)], 1.5))
    assert unstable.status == "unstable" and not unstable and unstable.failures() == []
    assert _result_with(decide([_shape("1x4", "served", 1.0, False)], None)).status == "passed"  # no gate: a warning only
    assert _result_with(decide([_shape("1x4", "served", 3.0, True)], 1.5)).status == "failed"
    suite = ET.fromstring(to_junit(unstable)).find("testsuite")
    assert suite.get("failures") == "0" and suite.get("skipped") == "1"
    (case,) = [c for c in suite.findall("testcase") if c.get("classname") == "porter.verify.latency"]
    assert case.find("skipped") is not None and "too noisy" in case.find("skipped").get("message")
    assert "UNSTABLE" in to_markdown(unstable)
    write(unstable, report=tmp_path / "r.json", html=tmp_path / "r.html")
    assert json.loads((tmp_path / "r.json").read_text())["latency"]["status"] == "unstable"
    html = (tmp_path / "r.html").read_text()
    assert "UNSTABLE" in html and "90% CI" in html


def test_typical_length():
    from porter.verifiers.latency_shapes import typical_length

    assert typical_length({"max_position_embeddings": 512}) == 128
    assert typical_length({"max_position_embeddings": 64}) == 62  # RoBERTa's table starts after the pad id
    assert typical_length(None) == 128


# ---- real models: the fields exist; no timing threshold is asserted


def test_verify_latency_section_on_tiny_bert(cli, tiny_bert, tiny_bert_tf, tmp_path):
    code, output = cli("verify", tiny_bert, tiny_bert_tf, "--latency", "--latency-budget", "0.2", "--threads", "1",
                       "--report", tmp_path / "r.json", "--junit", tmp_path / "j.xml")
    assert code in (0,), output  # no gate: unstable would be a warning, never exit 1 or 4
    lat = json.loads((tmp_path / "r.json").read_text())["latency"]
    assert lat["status"] in ("measured", "unstable") and lat["passed"] in (True, None)
    assert [(s["label"], s["role"]) for s in lat["shapes"]] == [("1x62", "served"), ("3x41", "largest")]
    for shape in lat["shapes"]:
        assert {"ratio_median", "ratio_iqr", "ratio_ci90", "ci_half_width_rel", "stable", "rounds", "runs_per_round"} <= set(shape)
        assert shape["rounds"] >= lat_mod.MIN_ROUNDS and shape["ratio_ci90"][0] <= shape["ratio_median"] <= shape["ratio_ci90"][1]
        assert shape["reference"]["p50_ms"] > 0 and shape["candidate"]["p50_ms"] > 0
    assert lat["threads"]["requested"] == 1 and lat["threads"]["torch"] == 1
    assert {"torch_interop", "tensorflow", "tensorflow_interop"} <= set(lat["threads"])
    assert lat["device"]["name"] == "cpu" and lat["device"]["cpus"] >= 1
    assert "latency: " in output and "1x62 (served)" in output


@pytest.mark.parametrize(("width", "gate", "code", "status"), [(-1.0, "100", 4, "unstable"), (float("inf"), "1e-6", 1, "failed")])
def test_verify_gate_exit_codes(cli, tiny_bert, tiny_bert_tf, tmp_path, monkeypatch, width, gate, code, status):
    """Forced stability rule: nothing is tight (width -1) -> exit 4 whatever the gate; everything is (inf) -> the gate decides."""
    monkeypatch.setattr(lat_mod, "MAX_HALF_WIDTH", width)
    got, output = cli("verify", tiny_bert, tiny_bert_tf, "--shape", "2x8", "--max-latency-ratio", gate,
                      "--latency-budget", "0.05", "--threads", "1", "--report", tmp_path / "r.json")
    assert got == code, output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["status"] == status and report["latency"]["status"] == status
    assert all(o["passed"] for s in report["shapes"] for o in s["outputs"])  # only the latency decided


def test_convert_latency_in_report(cli, tiny_bert, tmp_path, monkeypatch):
    monkeypatch.setattr(lat_mod, "BUDGET_S", 0.2)  # convert has no --latency-budget; keep the test short
    out = tmp_path / "bert-tf"
    code, output = cli("convert", tiny_bert, "--from", "torch", "--to", "tf", "--out", out, "--latency")
    assert code == 0, output
    report = json.loads((out / "porter_report.json").read_text())
    assert report["status"] == "passed"  # no gate on convert: the figures are reported, never judged
    lat = report["latency"]
    assert lat["status"] in ("measured", "unstable") and lat["max_ratio"] is None
    assert [s["role"] for s in lat["shapes"]] == ["served", "largest"] and lat["ratio"] > 0
    assert report["verification"]["latency"]["ratio"] == lat["ratio"]
    assert "latency: " in output


def test_convert_latency_needs_verification(cli, tiny_bert, tmp_path):
    out = tmp_path / "bert-tf"
    code, output = cli("convert", tiny_bert, "--from", "torch", "--to", "tf", "--out", out, "--latency", "--no-verify")
    assert code == 2 and "--latency" in output and "--no-verify" in output
    assert not out.exists() and not list(tmp_path.glob(".bert-tf*"))


def test_assert_equivalent_warns_on_unstable_and_raises_on_failed(monkeypatch):
    from porter.errors import VerificationFailed
    from porter.testing import assert_equivalent
    from porter.verifiers import api

    unstable = _result_with(decide([_shape("1x4", "served", 1.0, False)], 1.5))
    monkeypatch.setattr(api, "verify", lambda *a, **k: unstable)
    with pytest.warns(UserWarning, match="latency unstable: too noisy"):
        assert assert_equivalent("ref", "cand", max_latency_ratio=1.5) is unstable
    failed = _result_with(decide([_shape("1x4", "served", 3.0, True)], 1.5))
    monkeypatch.setattr(api, "verify", lambda *a, **k: failed)
    with pytest.raises(VerificationFailed):
        assert_equivalent("ref", "cand", max_latency_ratio=1.5)

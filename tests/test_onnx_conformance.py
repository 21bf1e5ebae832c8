"""porter's ONNX->torch converter against the ONNX backend node tests shipped in the onnx wheel.

Each node test is one pytest case (SKIPPED ones are shown as skipped); the last test asserts the
share of onnxruntime's passes porter passes, counted by ``conformance.coverage`` over every node
test, skipped ones included, exactly as benchmarks/onnx_peers.py counts. Results are kept in
memory only, shared between the cases of one session.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import warnings

import pytest

from porter.onnx_to_torch import conformance

_spec = importlib.util.spec_from_file_location(
    "onnx_conformance_skips", os.path.join(os.path.dirname(__file__), "onnx_conformance_skips.py"))
skips = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(skips)

TESTS = conformance.node_tests()
# measured 1483/1519 (97.6%) with onnxruntime 1.32 and onnx 1.22;
# 1247/1276 (97.7%) with onnxruntime 1.23 on onnx 1.19.1's corpus
REQUIRED_RATIO = 0.976


@functools.lru_cache(maxsize=None)
def porter_failure(test: conformance.NodeTest) -> str | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return conformance.check(test, conformance.run_porter)


@functools.lru_cache(maxsize=None)
def onnxruntime_failure(test: conformance.NodeTest) -> str | None:
    return conformance.check(test, conformance.run_onnxruntime)


@pytest.mark.parametrize("test", TESTS, ids=[t.name for t in TESTS])
def test_node(test):
    reason = skips.skip_reason(test.name)
    if reason:
        pytest.skip(reason)
    failure = porter_failure(test)
    gap = skips.known_gap(test.name)
    if failure is None:
        assert gap is None, f"listed as a known gap ({gap}) but passes now: take it off KNOWN_GAPS"
        return
    if gap:
        pytest.xfail(gap)
    ort_failure = onnxruntime_failure(test)
    if ort_failure:
        pytest.xfail(f"onnxruntime fails this test too: {ort_failure}")
    pytest.fail(failure)


def test_porter_passes_97_percent_of_what_onnxruntime_passes():
    cover = conformance.coverage({t.name: porter_failure(t) for t in TESTS},
                                 {t.name: onnxruntime_failure(t) for t in TESTS})
    assert cover.ratio >= REQUIRED_RATIO, (
        f"porter passes {cover.passed_of_reference}/{len(cover.reference_passes)} ({cover.ratio:.1%}) of the tests "
        f"onnxruntime passes; failing: {', '.join(cover.missing())}")

"""Latency parity: warm-up, then timed runs (perf_counter, device synchronised inside the
timed region) until a run count or a time budget; percentiles per side and the ratio
candidate / reference at p50, optionally gated by a maximum ratio."""

from __future__ import annotations

import sys
import time

import numpy as np

WARMUP = 3
MAX_RUNS = 200
MIN_RUNS = 10
BUDGET_S = 2.0  # per side
KEEP_SAMPLES = 500  # timings kept for the report's distribution plot


def measure(runner, feed: dict, *, warmup: int = WARMUP, max_runs: int = MAX_RUNS, min_runs: int = MIN_RUNS, budget_s: float = BUDGET_S) -> list[float]:
    """Seconds per run: at least ``min_runs``, then until ``max_runs`` or ``budget_s`` seconds spent."""
    for _ in range(warmup):
        runner.infer(feed)
    runner.synchronize()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_runs and (len(times) < min_runs or time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        runner.infer(feed)
        runner.synchronize()
        times.append(time.perf_counter() - t0)
    return times


def summary(times: list[float]) -> dict:
    ms = np.asarray(times) * 1e3
    p50, p90, p99 = (float(np.percentile(ms, q)) for q in (50, 90, 99))
    return {"runs": len(times), "p50_ms": p50, "p90_ms": p90, "p99_ms": p99, "mean_ms": float(ms.mean()), "samples_ms": [float(t) for t in ms[:KEEP_SAMPLES]]}


def latency_parity(reference, candidate, ref_feed: dict, cand_feed: dict, *, max_ratio: float | None = None, threads: int | None = None, shape: str = "", **budget) -> dict:
    """Time both runners (reference first) on the same input; the block that goes into the result."""
    ref = summary(measure(reference, ref_feed, **budget))
    cand = summary(measure(candidate, cand_feed, **budget))
    ratio = cand["p50_ms"] / ref["p50_ms"] if ref["p50_ms"] > 0 else float("inf")
    block = {
        "shape": shape,
        "threads": {"requested": threads, **thread_counts()},
        "reference": ref,
        "candidate": cand,
        "ratio_p50": ratio,
        "max_ratio": max_ratio,
        "passed": max_ratio is None or ratio <= max_ratio,
    }
    if not block["passed"]:
        block["reason"] = f"candidate p50 is {ratio:.3g}x the reference's, above --max-latency-ratio {max_ratio:g}"
    return block


def thread_counts() -> dict:
    """The intra-op thread counts the loaded frameworks actually use (TensorFlow keeps the count it
    started with: 0 there means 'all cores'), so a report never claims a parity that did not hold."""
    out = {}
    if "torch" in sys.modules:
        out["torch"] = sys.modules["torch"].get_num_threads()
    if "tensorflow" in sys.modules:
        out["tensorflow"] = sys.modules["tensorflow"].config.threading.get_intra_op_parallelism_threads()
    return out

"""Latency parity that gives the same answer twice.

Per shape: warm-up, then rounds. Each round times a block of runs of the reference and a block
of the candidate, in a random order (seeded), so drift of the machine (a frequency step, a
neighbour process) hits both sides of a round alike. The round's ratio is candidate / reference;
the shape's figure is the median of those paired ratios, with its interquartile range and a
bootstrap 90% confidence interval of the median. The gate (``max_ratio``) decides on the median
only where that interval is tight (half-width <= ``MAX_HALF_WIDTH`` of the median); a wider one
makes the status "unstable", which is neither a pass nor a fail.

Statuses: "passed" / "failed" (a gate decided), "measured" (no gate, every shape tight),
"unstable" (some shape too noisy to decide; with a gate, the CLI exits 4).
"""

from __future__ import annotations

import math
import os
import sys
import time

import numpy as np

WARMUP = 3  # untimed runs per side per shape
MIN_ROUNDS = 10
MAX_ROUNDS = 200
BUDGET_S = 3.0  # timed seconds per shape, both sides together
BLOCK_S = 0.01  # a side's block in a round is at least this long: sub-ms runs are averaged over several
MAX_REPS = 100
MAX_HALF_WIDTH = 0.10  # the 90% CI of the median ratio, half-width relative to the median: tight below this
BOOTSTRAP = 2000
SEED = 0
KEEP_SAMPLES = 500  # per-run times kept for the report's distribution plot
STABILITY_RULE = f"a shape is stable when the bootstrap 90% CI of its median paired ratio has a half-width <= {MAX_HALF_WIDTH:.0%} of the median"


def time_block(runner, feed: dict, reps: int) -> float:
    """Seconds per run, averaged over ``reps`` runs; the device is synchronised inside the timed region."""
    t0 = time.perf_counter()
    for _ in range(reps):
        runner.infer(feed)
    runner.synchronize()
    return (time.perf_counter() - t0) / reps


def paired_rounds(reference, candidate, ref_feed: dict, cand_feed: dict, *, warmup: int = WARMUP, min_rounds: int = MIN_ROUNDS,
                  max_rounds: int = MAX_ROUNDS, budget_s: float | None = None, reps: int | None = None, seed: int = SEED) -> dict:
    """Interleaved timing of one shape: per-round seconds per run of each side, and the reps per block."""
    budget_s = BUDGET_S if budget_s is None else budget_s
    for _ in range(warmup):
        reference.infer(ref_feed)
        candidate.infer(cand_feed)
    reference.synchronize()
    candidate.synchronize()
    if reps is None:  # calibrated on one run each, so that the slower side's block lasts about BLOCK_S
        slowest = max(time_block(reference, ref_feed, 1), time_block(candidate, cand_feed, 1))
        reps = int(min(MAX_REPS, max(1, math.ceil(BLOCK_S / max(slowest, 1e-9)))))
    rng = np.random.default_rng(seed)
    ref_times: list[float] = []
    cand_times: list[float] = []
    start = time.perf_counter()
    while len(ref_times) < max_rounds and (len(ref_times) < min_rounds or time.perf_counter() - start < budget_s):
        if rng.random() < 0.5:
            r = time_block(reference, ref_feed, reps)
            c = time_block(candidate, cand_feed, reps)
        else:
            c = time_block(candidate, cand_feed, reps)
            r = time_block(reference, ref_feed, reps)
        ref_times.append(r)
        cand_times.append(c)
    return {"reference": ref_times, "candidate": cand_times, "reps": reps}


def ratio_stats(ref_times, cand_times, *, seed: int = SEED) -> dict:
    """Median of the per-round ratios cand/ref, its IQR and bootstrap 90% CI, and whether it is tight."""
    ratios = np.asarray(cand_times, dtype=np.float64) / np.maximum(np.asarray(ref_times, dtype=np.float64), 1e-12)
    median = float(np.median(ratios))
    rng = np.random.default_rng(seed)
    boot = np.median(ratios[rng.integers(0, len(ratios), size=(BOOTSTRAP, len(ratios)))], axis=1)
    lo, hi = (float(x) for x in np.percentile(boot, [5, 95]))
    q1, q3 = (float(x) for x in np.percentile(ratios, [25, 75]))
    half = (hi - lo) / 2 / median if median > 0 else math.inf
    return {"ratio_median": median, "ratio_iqr": [q1, q3], "ratio_ci90": [lo, hi], "ci_half_width_rel": half,
            "stable": bool(half <= MAX_HALF_WIDTH)}


def side_summary(times: list[float]) -> dict:
    ms = np.asarray(times) * 1e3
    p50, p90, p99 = (float(np.percentile(ms, q)) for q in (50, 90, 99))
    return {"runs": len(times), "p50_ms": p50, "p90_ms": p90, "p99_ms": p99, "mean_ms": float(ms.mean()),
            "samples_ms": [float(t) for t in ms[:KEEP_SAMPLES]]}


def measure_shape(reference, candidate, ref_feed: dict, cand_feed: dict, *, label: str, role: str, **timing) -> dict:
    """One shape's block in the report."""
    seed = timing.pop("seed", SEED)
    rounds = paired_rounds(reference, candidate, ref_feed, cand_feed, seed=seed, **timing)
    return {
        "label": label,
        "role": role,
        "input_shapes": {k: list(np.shape(v)) for k, v in ref_feed.items()},
        "rounds": len(rounds["reference"]),
        "runs_per_round": rounds["reps"],
        **ratio_stats(rounds["reference"], rounds["candidate"], seed=seed),
        "reference": side_summary(rounds["reference"]),
        "candidate": side_summary(rounds["candidate"]),
    }


def latency_parity(reference, candidate, shapes, *, max_ratio: float | None = None, threads: int | None = None,
                   device: str = "cpu", notes: list | None = None, **timing) -> dict:
    """Time ``shapes`` ([(label, role, ref_feed, cand_feed)], the served one first) and decide the gate.
    A shape that one side cannot run (a dim the candidate fixed) is left out and named in ``notes``."""
    measured, failed = [], None
    for label, role, ref_feed, cand_feed in shapes:
        try:
            measured.append(measure_shape(reference, candidate, ref_feed, cand_feed, label=label, role=role, **dict(timing)))
        except Exception as exc:  # noqa: BLE001 - a shape equivalence did not run may not fit (a dim the candidate fixed)
            failed = exc
            if notes is not None:
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                notes.append(f"latency: shape {label} ({role}) not timed: {first[:200]}")
    if not measured:
        raise failed
    return decide(measured, max_ratio, threads=threads, device=device)


def decide(measured: list[dict], max_ratio: float | None, *, threads=None, device: str = "cpu") -> dict:
    """The report block: per-shape figures, the headline (the served shape, else the first), the status."""
    head = next((m for m in measured if m["role"] == "served"), measured[0])
    unstable = [m for m in measured if not m["stable"]]
    over = [m for m in measured if m["stable"] and max_ratio is not None and m["ratio_median"] > max_ratio]
    if over:
        status = "failed"
    elif unstable:
        status = "unstable"
    else:
        status = "measured" if max_ratio is None else "passed"
    block = {
        "status": status,
        "passed": {"failed": False, "unstable": None}.get(status, True),
        "ratio": head["ratio_median"],
        "ratio_ci90": head["ratio_ci90"],
        "shape": head["label"],
        "max_ratio": max_ratio,
        "stability_rule": STABILITY_RULE,
        "shapes": measured,
        "threads": {"requested": threads, **thread_counts()},
        "device": device_info(device),
        # the headline shape's per-run times, for the distribution plot
        "reference": head["reference"],
        "candidate": head["candidate"],
    }
    if over:
        m = max(over, key=lambda m: m["ratio_median"])
        block["reason"] = (f"candidate / reference median ratio {m['ratio_median']:.3g} at {m['label']} "
                           f"(90% CI {m['ratio_ci90'][0]:.3g}-{m['ratio_ci90'][1]:.3g}) is above --max-latency-ratio {max_ratio:g}")
    elif unstable:
        m = max(unstable, key=lambda m: m["ci_half_width_rel"])
        block["reason"] = (f"too noisy to decide: at {m['label']} the 90% CI of the median ratio is {m['ratio_ci90'][0]:.3g}-"
                           f"{m['ratio_ci90'][1]:.3g} (half-width {m['ci_half_width_rel']:.0%} of the median, above {MAX_HALF_WIDTH:.0%}); "
                           "give it a quieter machine, --threads 1 or a longer --latency-budget")
    return block


def thread_counts() -> dict:
    """The thread counts the loaded frameworks actually use (TensorFlow keeps the counts it started
    with: 0 there means 'its default, all cores'), so a report never claims a parity that did not hold."""
    out = {}
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        out["torch"] = torch.get_num_threads()
        out["torch_interop"] = torch.get_num_interop_threads()
    if "tensorflow" in sys.modules:
        threading = sys.modules["tensorflow"].config.threading
        out["tensorflow"] = threading.get_intra_op_parallelism_threads()
        out["tensorflow_interop"] = threading.get_inter_op_parallelism_threads()
    return out


def device_info(device: str) -> dict:
    """The device timed on, the machine's CPU and its load when the timing ended (a busy machine explains 'unstable')."""
    info = {"name": device, "cpus": os.cpu_count(), "cpu": _cpu_model()}
    try:
        info["load_avg_1m"] = round(os.getloadavg()[0], 2)
    except OSError:
        pass
    if device.startswith("cuda") and "torch" in sys.modules:
        info["gpu"] = sys.modules["torch"].cuda.get_device_name(device)
    return info


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()

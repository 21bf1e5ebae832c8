"""Print porter's ONNX->torch pass count on the ONNX backend node tests next to onnxruntime's.

Usage: PYTHONPATH=. python benchmarks/onnx_conformance.py
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from porter.onnx_to_torch import conformance  # noqa: E402


def _skips():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "onnx_conformance_skips.py")
    spec = importlib.util.spec_from_file_location("onnx_conformance_skips", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> int:
    """Counts exactly as tests/test_onnx_conformance.py: conformance.coverage over every node test,
    skipped ones included (they run here too, and count as passes only where porter passes them)."""
    warnings.simplefilter("ignore")
    skips = _skips()
    tests = conformance.node_tests()
    start = time.perf_counter()
    ort = {t.name: conformance.check(t, conformance.run_onnxruntime) for t in tests}
    ort_seconds = time.perf_counter() - start
    start = time.perf_counter()
    porter = {t.name: conformance.check(t, conformance.run_porter) for t in tests}
    porter_seconds = time.perf_counter() - start
    cover = conformance.coverage(porter, ort)
    print(f"total node tests:                 {len(tests)}")
    print(f"listed as skipped (out of scope): {sum(1 for t in tests if skips.skip_reason(t.name))}")
    print(f"onnxruntime passes:               {len(cover.reference_passes)}  ({ort_seconds:.1f}s)")
    print(f"porter passes:                    {len(cover.passes)}  ({porter_seconds:.1f}s)")
    print(f"porter passes among ORT-passing:  {cover.passed_of_reference}")
    print(f"ratio:                            {cover.ratio:.1%}")
    print(f"porter passes where ORT fails:    {len(cover.passes - cover.reference_passes)}")
    print("\nporter failures on tests onnxruntime passes:")
    for name in cover.missing():
        label = "[skipped] " if skips.skip_reason(name) else "[known gap] " if skips.known_gap(name) else ""
        print(f"  {name}: {label}{porter[name]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

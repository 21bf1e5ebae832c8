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
    warnings.simplefilter("ignore")
    skips = _skips()
    tests = conformance.node_tests()
    runnable = [t for t in tests if not skips.skip_reason(t.name)]
    start = time.perf_counter()
    ort = {t.name: conformance.check(t, conformance.run_onnxruntime) for t in runnable}
    ort_seconds = time.perf_counter() - start
    start = time.perf_counter()
    porter = {t.name: conformance.check(t, conformance.run_porter) for t in runnable}
    porter_seconds = time.perf_counter() - start
    ort_passes = {n for n, f in ort.items() if f is None}
    porter_passes = {n for n, f in porter.items() if f is None}
    both = ort_passes & porter_passes
    print(f"total node tests:                 {len(tests)}")
    print(f"skipped (out of scope):           {len(tests) - len(runnable)}")
    print(f"onnxruntime passes:               {len(ort_passes)}  ({ort_seconds:.1f}s)")
    print(f"porter passes:                    {len(porter_passes)}  ({porter_seconds:.1f}s)")
    print(f"porter passes among ORT-passing:  {len(both)}")
    print(f"ratio:                            {len(both) / len(ort_passes):.1%}")
    print(f"porter passes where ORT fails:    {len(porter_passes - ort_passes)}")
    print("\nporter failures on tests onnxruntime passes:")
    for name in sorted(ort_passes - porter_passes):
        gap = skips.known_gap(name)
        print(f"  {name}: {'[known gap] ' if gap else ''}{porter[name]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Conformance of porter's torch.export -> TF converter against PyTorch's OpInfo samples.

For every ATen op the registry claims, the OpInfo entries of that op (matched by name / aten_name)
give float32 sample inputs; each sample is exported as a tiny module, converted, run by the traced
TF function and compared with torch: |tf - torch| <= atol + rtol * |torch|, atol = rtol = 1e-5.

    python benchmarks/opinfo_conformance.py [--limit 5] [--ops add,gelu] [--verbose]

A sample torch.export cannot export is skipped; one that lowers to an op the registry does not claim counts
as 'needs other ops' (a miss, in the overall percentage).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from collections import defaultdict

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ATOL = RTOL = 1e-5
# ops whose values torch leaves undefined: only shape and dtype are compared
UNDEFINED_VALUES = {"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "empty_permuted"}


def claimed_ops() -> dict[str, list]:
    """Registry ops by base name (``add`` -> [aten.add.Tensor, aten.add.Scalar]); Python operators left out."""
    from porter.graph_to_tf.registry import registered

    ops = defaultdict(list)
    for target in registered():
        schema = getattr(target, "_schema", None)
        if schema is not None and schema.name.startswith("aten::"):
            ops[schema.name.split("::")[1]].append(target)
    return dict(ops)


def _stub_expecttest() -> None:
    # torch's test helpers import expecttest (a PyPI test-only package) for TestCase alone
    try:
        import expecttest  # noqa: F401
    except ImportError:
        import types
        import unittest

        stub = types.ModuleType("expecttest")
        stub.TestCase = unittest.TestCase
        sys.modules["expecttest"] = stub


# ATen ops whose OpInfo entries carry the user-facing name
ALIASES = {
    "convolution": ("nn.functional.conv1d", "nn.functional.conv2d"),
    "max_pool2d_with_indices": ("nn.functional.max_pool2d",),
    "_adaptive_avg_pool2d": ("nn.functional.adaptive_avg_pool2d",),
    "_native_batch_norm_legit_no_training": ("nn.functional.batch_norm",),
    "native_group_norm": ("nn.functional.group_norm",),
    "native_layer_norm": ("nn.functional.layer_norm",),
    "index": ("__getitem__",),
    "_to_copy": ("to",),
    "constant_pad_nd": ("nn.functional.pad",),
    "_unsafe_view": ("view", "reshape"),
    "split_with_sizes": ("split_with_sizes",),
    "var": ("var",),
    "alias": (),
}


def opinfos_for(name: str) -> list:
    _stub_expecttest()
    from torch.testing._internal.common_methods_invocations import op_db

    base = name.lstrip("_")
    names = ALIASES.get(name, (name, base, f"nn.functional.{base}"))
    return [op for op in op_db if op.name in names or (name not in ALIASES and getattr(op, "aten_name", None) == name)]


class _Call:
    """A module that calls one OpInfo op with the sample's tensors as inputs (the rest baked in)."""

    def __new__(cls, opinfo, spec, constants):
        import torch
        from torch.utils._pytree import tree_unflatten

        class Call(torch.nn.Module):
            def forward(self, *tensors):
                it = iter(tensors)
                leaves = [next(it) if c is None else c[0] for c in constants]
                x, args, kwargs = tree_unflatten(leaves, spec)
                return opinfo.op(x, *args, **kwargs)

        return Call()


def run_sample(opinfo, sample) -> tuple[str, str]:
    """('pass' | 'fail' | 'skip', detail) for one sample."""
    import numpy as np
    import torch
    from torch.utils._pytree import tree_flatten

    from porter.errors import UnsupportedModelError
    from porter.graph_to_tf import convert_exported

    leaves, spec = tree_flatten((sample.input, list(sample.args), dict(sample.kwargs)))
    tensors = [leaf for leaf in leaves if isinstance(leaf, torch.Tensor)]
    if any(t.dtype not in (torch.float32, torch.int64, torch.int32, torch.bool) or t.is_sparse for t in tensors):
        return "skip", "dtype/layout"
    constants = [None if isinstance(leaf, torch.Tensor) else (leaf,) for leaf in leaves]
    module = _Call(opinfo, spec, constants).eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = module(*tensors)
            ep = torch.export.export(module, tuple(tensors), strict=False)
    except Exception as error:  # noqa: BLE001 - torch's own limits are not the converter's
        return "skip", f"export: {type(error).__name__}"
    expected_leaves = [t for t in tree_flatten(expected)[0] if isinstance(t, torch.Tensor)]
    try:
        converted = convert_exported(ep)
        import tensorflow as tf

        got = converted.module.serve(*[tf.constant(t.numpy()) for t in tensors])
    except UnsupportedModelError as error:  # the sample lowers to an op the registry does not claim
        return "unsupported", "; ".join(error.problems)[:160]
    except Exception as error:  # noqa: BLE001 - reported per op
        return "fail", f"{type(error).__name__}: {str(error).splitlines()[0][:160]}"
    got = [got[name].numpy() for name in converted.output_names]
    if len(got) != len(expected_leaves):
        return "fail", f"{len(got)} outputs, torch has {len(expected_leaves)}"
    for want, have in zip(expected_leaves, got):
        want = want.detach().numpy()
        if want.shape != have.shape:
            return "fail", f"shape {have.shape} != {want.shape}"
        if opinfo.name in UNDEFINED_VALUES:
            continue
        if want.dtype == np.bool_ or np.issubdtype(want.dtype, np.integer):
            if not np.array_equal(want, have):
                return "fail", "integer/bool values differ"
            continue
        w, h = want.astype(np.float64), have.astype(np.float64)
        if not np.allclose(h, w, atol=ATOL, rtol=RTOL, equal_nan=True):
            bad = np.abs(h - w)
            return "fail", f"max abs error {np.nanmax(np.where(np.isnan(bad), np.inf, bad)):.3g}"
    return "pass", ""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=5, help="samples per op (default 5)")
    parser.add_argument("--ops", default="", help="comma-separated op names (aten base names, e.g. add,gelu)")
    parser.add_argument("--verbose", action="store_true", help="print every failing sample")
    args = parser.parse_args(argv)

    import torch

    ops = claimed_ops()
    chosen = [o for o in args.ops.split(",") if o] or sorted(ops)
    totals = defaultdict(int)
    no_opinfo = []
    start = time.perf_counter()
    for name in chosen:
        infos = opinfos_for(name)
        if not infos:
            no_opinfo.append(name)
            continue
        counts, first_failure = defaultdict(int), ""
        for opinfo in infos:
            try:
                samples = list(opinfo.sample_inputs("cpu", torch.float32))
            except Exception:  # noqa: BLE001 - an OpInfo without float32 samples
                counts["skip"] += 1
                continue
            for sample in samples[: args.limit]:
                outcome, detail = run_sample(opinfo, sample)
                counts[outcome] += 1
                if outcome in ("fail", "unsupported"):
                    first_failure = first_failure or f"{opinfo.name}: {detail}"
                    if args.verbose:
                        print(f"    FAIL {opinfo.name}: {detail}", flush=True)
        for k, v in counts.items():
            totals[k] += v
        tried = counts["pass"] + counts["fail"] + counts["unsupported"]
        line = (f"{name:38s} {counts['pass']:3d}/{tried:<3d} passed  ({counts['unsupported']} need other ops, "
                f"{counts['skip']} skipped)")
        print(line + (f"  first failure: {first_failure}" if first_failure else ""), flush=True)
    tried = totals["pass"] + totals["fail"] + totals["unsupported"]
    percent = 100.0 * totals["pass"] / tried if tried else 0.0
    print(f"\nops without an OpInfo entry ({len(no_opinfo)}): {', '.join(no_opinfo)}")
    converted = totals["pass"] + totals["fail"]
    print(f"of the samples whose graph the registry covers: {totals['pass']}/{converted} = "
          f"{100.0 * totals['pass'] / max(converted, 1):.1f}%")
    print(f"overall: {totals['pass']}/{tried} samples passed = {percent:.1f}% "
          f"({totals['skip']} skipped: torch.export or dtype), {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

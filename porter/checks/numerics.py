"""Numbers a model must not carry silently, and numbers a user must not pass silently.

- non-finite weights (NaN/Inf): found as tensors are read, named with their file, refused
  unless the user allows them (``--allow-nonfinite``);
- integer-typed float weights: a ``...weight``/``bias``/``LayerNorm`` stored as integers is
  a broken or quantised checkpoint, never a float model to convert;
- the float dtype a checkpoint is stored in (the dtype a conversion keeps unless ``--dtype``);
- numeric flags (tolerances, latency gates, threads) that would make a check meaningless.

No framework is imported here: arrays are numpy (bfloat16 as ml_dtypes' type or widened).
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np

from porter.errors import PorterError

FLOAT_DTYPES = ("float32", "float16", "bfloat16")
ALLOW_FLAG = "--allow-nonfinite"
# integer tensors a checkpoint legitimately holds (index buffers and counters)
INTEGER_BUFFERS = ("position_ids", "token_type_ids", "num_batches_tracked")
# last name components (torch and TF spellings) whose role is a float parameter
FLOAT_ROLES = frozenset({
    "weight", "bias", "kernel", "gamma", "beta", "embeddings", "running_mean", "running_var",
    "moving_mean", "moving_variance", "scale",
})
# safetensors header dtype -> numpy-style name
SAFETENSORS_DTYPES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64", "I32": "int32",
    "I16": "int16", "I8": "int8", "U8": "uint8", "U16": "uint16", "U32": "uint32", "U64": "uint64", "BOOL": "bool",
}


def dtype_name(dtype) -> str:
    """'float16', 'bfloat16', 'int64' ... for numpy, ml_dtypes, torch and TF dtypes alike."""
    name = getattr(dtype, "name", None)
    if isinstance(name, str):
        return name
    return str(dtype).removeprefix("torch.").replace("<dtype: '", "").rstrip("'>")


def numpy_dtype(name: str):
    """A numpy dtype for a name; bfloat16 is ml_dtypes' (a TensorFlow dependency; numpy has none)."""
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def tensor_to_numpy(tensor) -> np.ndarray:
    """A torch tensor as numpy; bfloat16 as ml_dtypes' bfloat16 (exact), so comparisons still know
    its precision (numpy has no bfloat16, and ``.numpy()`` refuses it)."""
    tensor = tensor.detach().cpu()
    if str(tensor.dtype) == "torch.bfloat16":
        return tensor.float().numpy().astype(numpy_dtype("bfloat16"))
    return tensor.numpy()


def cast_floats(arrays: dict, dtype: str) -> dict:
    """Float arrays cast to ``dtype`` (round to nearest even, as torch's .to()); others kept."""
    target = numpy_dtype(dtype)
    return {k: (a.astype(target) if is_float_dtype(dtype_name(a.dtype)) and a.dtype != target else a) for k, a in arrays.items()}


def is_float_dtype(name: str) -> bool:
    return name in FLOAT_DTYPES or name == "float64"


def check_dtype_flag(dtype: str | None) -> None:
    if dtype is not None and dtype not in FLOAT_DTYPES:
        raise PorterError(f"--dtype {dtype!r} is not one of {', '.join(FLOAT_DTYPES)}",
                          hint="leave --dtype out to keep the checkpoint's own dtype")


# --------------------------------------------------------------- the checkpoint's dtype
def _is_float_role(key: str) -> bool:
    last = key.replace("/", ".").removesuffix(":0").rsplit(".", 1)[-1]
    return last in FLOAT_ROLES or "layernorm" in key.lower().replace("_", "")


def _is_integer_buffer(key: str) -> bool:
    return any(part in INTEGER_BUFFERS for part in key.replace("/", ".").removesuffix(":0").split("."))


def integer_typed_float_weights(dtypes: dict[str, str]) -> list[str]:
    """Keys named as float parameters but stored with an integer or bool dtype."""
    return [k for k, d in dtypes.items() if not is_float_dtype(d) and _is_float_role(k) and not _is_integer_buffer(k)]


def check_integer_weights(dtypes: dict[str, str], origin: str, where=None) -> None:
    bad = integer_typed_float_weights(dtypes)
    if bad:
        where = where or (lambda k: origin)
        raise PorterError(
            f"{origin}: {len(bad)} float weight(s) stored with an integer dtype (a quantised or broken checkpoint)",
            problems=[f"{k}: {dtypes[k]} in {where(k)}" for k in bad],
            hint="porter converts float checkpoints; re-save the weights as float32, float16 or bfloat16",
        )


def checkpoint_float_dtype(dtypes: dict[str, str], shapes: dict[str, tuple]) -> str:
    """The float dtype holding most of the checkpoint's float elements ('float32' when none)."""
    count: Counter = Counter()
    for key, dtype in dtypes.items():
        if is_float_dtype(dtype):  # float64 is kept as float32: porter's Keras models have no float64 policy
            count["float32" if dtype == "float64" else dtype] += int(np.prod(shapes.get(key, ()), dtype=np.int64))
    return count.most_common(1)[0][0] if count else "float32"


# ------------------------------------------------------------------ non-finite weights
def count_nonfinite(array) -> tuple[int, int]:
    """(NaN count, Inf count) of a float array; (0, 0) for any other dtype."""
    array = np.asarray(array)
    name = dtype_name(array.dtype)
    if name != "bfloat16" and array.dtype.kind not in "fc":  # isfinite/isnan take ml_dtypes' bfloat16 as it is (no fp32 copy)
        return 0, 0
    finite = np.isfinite(array)
    if finite.all():
        return 0, 0
    nan = int(np.isnan(array).sum())
    return nan, int(finite.size - finite.sum()) - nan


class NonFiniteScan:
    """Collects every tensor holding NaN/Inf while weights are read, then fails once, naming them all."""

    def __init__(self, origin: str, where=None):
        self.origin = origin
        self.where = where or (lambda key: origin)
        self.found: dict[str, tuple[int, int]] = {}

    def check(self, key: str, array) -> None:
        nan, inf = count_nonfinite(array)
        if nan or inf:
            self.found[key] = (nan, inf)

    def problems(self) -> list[str]:
        return [f"{k}: {nan} NaN, {inf} Inf in {self.where(k)}" for k, (nan, inf) in self.found.items()]

    def finish(self, allow: bool) -> dict:
        """Raise unless ``allow``; return the report's account of what was found."""
        if self.found and not allow:
            raise PorterError(
                f"{self.origin}: {len(self.found)} weight tensor(s) hold NaN or Inf",
                problems=self.problems(),
                hint=f"the checkpoint is damaged (or diverged in training); pass {ALLOW_FLAG} to convert and verify it anyway",
            )
        return {k: {"nan": nan, "inf": inf} for k, (nan, inf) in self.found.items()}


def scan_arrays(named_arrays, origin: str, allow: bool, where=None) -> dict:
    """Scan (key, array) pairs one at a time (nothing is held), then fail or report as NonFiniteScan."""
    scan = NonFiniteScan(origin, where)
    for key, array in named_arrays:
        scan.check(key, array)
    return scan.finish(allow)


def scan_checkpoint(source, allow: bool) -> dict:
    """A torch TensorSource (porter.readers.checkpoints): integer-typed float weights first (from the
    header), then every tensor, read one at a time, for NaN/Inf."""
    where = getattr(source, "file_of", None)
    check_integer_weights(getattr(source, "dtypes", {}), source.origin, where)
    return scan_arrays(((k, source.get(k)) for k in source.keys()), source.origin, allow, where)


# --------------------------------------------------------------------------- flags
def check_numeric_options(*, atol=None, rtol=None, per_output_atol=None, per_output_rtol=None, max_latency_ratio=None,
                          latency_budget_s=None, threads=None, names=None) -> None:
    """Usage errors for numbers that would make a check meaningless. ``names`` maps an option
    to the spelling the user wrote (``--atol`` on the command line, ``atol`` in porter.toml)."""
    names = {"atol": "--atol", "rtol": "--rtol", "max_latency_ratio": "--max-latency-ratio",
             "latency_budget_s": "--latency-budget", "threads": "--threads", **(names or {})}
    tolerances = [("atol", None, atol), ("rtol", None, rtol)]
    tolerances += [("atol", k, v) for k, v in (per_output_atol or {}).items()]
    tolerances += [("rtol", k, v) for k, v in (per_output_rtol or {}).items()]
    for option, output, value in tolerances:
        if value is None:
            continue
        shown = f"{names[option]} {output + '=' if output else ''}{value}"
        if not _is_number(value) or not math.isfinite(value) or value < 0:
            # a NaN tolerance would pass every element: NaN comparisons are all false
            raise PorterError(f"{shown}: a tolerance must be a finite number >= 0",
                              hint=f"e.g. {names[option]} 1e-5; leave it out for the dtype's default")
    if max_latency_ratio is not None and (not _is_number(max_latency_ratio) or not max_latency_ratio > 0
                                          or not math.isfinite(max_latency_ratio)):
        raise PorterError(f"{names['max_latency_ratio']} {max_latency_ratio}: the gate must be a finite ratio > 0",
                          hint=f"e.g. {names['max_latency_ratio']} 1.5 (candidate p50 at most 1.5x the reference's)")
    if latency_budget_s is not None and (not _is_number(latency_budget_s) or not latency_budget_s > 0
                                         or not math.isfinite(latency_budget_s)):
        raise PorterError(f"{names['latency_budget_s']} {latency_budget_s}: the budget must be a number of seconds > 0",
                          hint=f"e.g. {names['latency_budget_s']} 2")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise PorterError(f"{names['threads']} {threads}: the thread count must be an integer >= 1",
                          hint=f"e.g. {names['threads']} 1; leave it out for the default")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)

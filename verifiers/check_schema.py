"""The value types of porter check's TOML keys: every wrong type is named with its job, key and
the type expected, all at once (one PorterError from check.load)."""

from __future__ import annotations

from numbers import Real


def _number(v) -> bool:
    return isinstance(v, Real) and not isinstance(v, bool)


def _tolerance(v) -> bool:  # a number, or a table of output name -> number
    if isinstance(v, dict):
        return all(_number(x) and x >= 0 for x in v.values())
    return _number(v) and v >= 0


def _shapes(v) -> bool:
    return isinstance(v, list) and bool(v) and all(
        isinstance(s, list) and len(s) == 2 and all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in s)
        for s in v)


def _string(v) -> bool:
    return isinstance(v, str) and v != ""


# key -> (check, what the key expects, as the message says it)
EXPECTED = {
    "name": (_string, "a string"),
    "reference": (_string, "a path string"),
    "candidate": (_string, "a path string"),
    "inputs": (_string, "a path string (an .npz file)"),
    "report": (_string, "a path string"),
    "junit": (_string, "a path string"),
    "markdown": (_string, "a path string"),
    "html": (_string, "a path string"),
    "atol": (_tolerance, "a number >= 0, or a table of OUTPUT = number"),
    "rtol": (_tolerance, "a number >= 0, or a table of OUTPUT = number"),
    "allow_degenerate": (lambda v: isinstance(v, bool), "true or false"),
    "allow_nonfinite": (lambda v: isinstance(v, bool), "true or false"),
    "latency": (lambda v: isinstance(v, bool), "true or false"),
    "localise": (lambda v: isinstance(v, bool), "true or false"),
    "trust_model_code": (lambda v: isinstance(v, bool), "true or false"),
    "max_latency_ratio": (lambda v: _number(v) and v > 0, "a number > 0"),
    "device": (lambda v: v in ("cpu", "cuda") or (isinstance(v, str) and v.startswith("cuda:")), '"cpu" or "cuda"'),
    "threads": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "an integer >= 1"),
    "layout": (lambda v: _string(v) or (isinstance(v, list) and all(_string(x) for x in v)), 'a string such as "nhwc-to-nchw", or a list of them'),
    "shapes": (_shapes, "a list of [batch, sequence] pairs of positive integers, e.g. [[2, 8], [4, 21]]"),
    "route": (_string, "a string"),
    "map": (lambda v: isinstance(v, dict) and all(_string(x) for x in v.values()), 'a table of REFERENCE_INPUT = "CANDIDATE_INPUT"'),
}


def type_problems(spec: dict, where: str) -> list[str]:
    """One line per key of ``spec`` whose value has the wrong type (unknown keys are checked elsewhere)."""
    problems = []
    for key, value in spec.items():
        if key in EXPECTED and not EXPECTED[key][0](value):
            problems.append(f"{where}: {key} must be {EXPECTED[key][1]}, not {value!r} ({_toml_type(value)})")
    return problems


def _toml_type(value) -> str:
    names = {bool: "boolean", int: "integer", float: "float", str: "string", list: "array", dict: "table"}
    return names.get(type(value), type(value).__name__)


def table_problems(data: dict) -> list[str]:
    """[defaults] must be a table and verify an array of tables ([[verify]])."""
    problems = []
    if "defaults" in data and not isinstance(data["defaults"], dict):
        problems.append(f"defaults must be a table ([defaults]), not {data['defaults']!r} ({_toml_type(data['defaults'])})")
    jobs = data.get("verify", [])
    if not isinstance(jobs, list) or not all(isinstance(j, dict) for j in jobs):
        problems.append(f"verify must be an array of tables ([[verify]] blocks), not {jobs!r} ({_toml_type(jobs)})")
    return problems

"""``porter check``: a list of verify jobs from a TOML file, for CI. The format is FORMAT below
(shown verbatim by ``porter check --help``; tests hold it to every key ``load`` accepts)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from porter.errors import PorterError
from porter.checks.path_errors import require_file
from porter.verifiers.check_schema import table_problems, type_problems

FORMAT = """\
[defaults]                     # optional: any job key below, applied to every job
threads = 2
[[verify]]                     # one table per job
name = "bert to tf"            # optional, shown in the summary
reference = "models/bert"      # paths are relative to the TOML file
candidate = "out/bert-tf"
inputs = "inputs.npz"          # optional, as --inputs
atol = 1e-5                    # a number, or per output: atol = { last_hidden_state = 2e-5 }
rtol = 1.3e-6                  # likewise
allow_degenerate = false       # as --allow-degenerate
allow_nonfinite = false        # as --allow-nonfinite (run weights holding NaN/Inf)
latency = true                 # as --latency
max_latency_ratio = 1.5        # as --max-latency-ratio
device = "cpu"                 # cpu | cuda | cuda:N
threads = 2                    # intra-op threads for both sides
layout = "nhwc-to-nchw"        # or a list: ["x=nchw-to-nhwc"]
shapes = [[2, 8], [4, 21]]     # (batch, sequence) pairs for generated inputs
map = { input = "x" }          # reference name = candidate name, as --map
route = "onnx"                 # the route the report names (default: from porter_report.json)
localise = true                # false: as --no-localise
trust_model_code = false       # true: as --trust-model-code (import a model.py porter did not write)
report = "reports/bert.json"   # as --report
junit = "reports/bert.xml"     # as --junit
markdown = "reports/bert.md"   # as --markdown
html = "reports/bert.html"     # as --html
"""

PATH_KEYS = ("reference", "candidate", "inputs", "report", "junit", "markdown", "html")
REPORT_KEYS = ("report", "junit", "markdown", "html")
OPTION_KEYS = ("atol", "rtol", "allow_degenerate", "allow_nonfinite", "latency", "max_latency_ratio", "device", "threads", "layout", "shapes", "route", "localise", "map", "trust_model_code")


@dataclass
class Job:
    name: str
    reference: str
    candidate: str
    options: dict = field(default_factory=dict)
    reports: dict = field(default_factory=dict)


def load(path) -> list[Job]:
    path = require_file(path, "", "TOML", hint="pass the TOML file: porter check path/to/porter.toml (see porter check --help)")
    from porter.checks.model_files import JSON_LIMIT, parse_toml

    if path.stat().st_size > JSON_LIMIT:
        raise PorterError(f"{path} is {path.stat().st_size:,} bytes, past porter's limit of {JSON_LIMIT:,} for a porter.toml")
    try:
        data = parse_toml(path.read_text(), path)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise PorterError(f"{path} is not valid TOML: {exc}") from None
    unknown_top = set(data) - {"defaults", "verify"}
    problems = [f"unknown table {k!r} (expected [defaults] and [[verify]])" for k in sorted(unknown_top)]
    problems += table_problems(data)
    if problems:
        raise PorterError(f"{path} does not describe porter check jobs", problems=problems, hint="see porter check --help for the format")
    raw_jobs = data.get("verify", [])
    if not raw_jobs:
        problems.append("no [[verify]] jobs")
    jobs = []
    for n, raw in enumerate(raw_jobs, 1):
        spec = {**data.get("defaults", {}), **raw}
        where = f"job {n}" + (f" ({spec['name']})" if "name" in spec else "")
        bad = set(spec) - set(PATH_KEYS) - set(OPTION_KEYS) - {"name"}
        problems += [f"{where}: unknown key {k!r} (known: {', '.join(sorted({'name', *PATH_KEYS, *OPTION_KEYS}))})" for k in sorted(bad)]
        problems += [f"{where}: missing {k!r}" for k in ("reference", "candidate") if k not in spec]
        typed = type_problems(spec, where)
        problems += typed
        if bad or typed or "reference" not in spec or "candidate" not in spec:
            continue
        for k in PATH_KEYS:
            if k in spec:
                spec[k] = str((path.parent / spec[k]).resolve()) if not Path(spec[k]).is_absolute() else spec[k]
        options = {k: spec[k] for k in OPTION_KEYS if k in spec}
        for key in ("atol", "rtol"):
            if isinstance(options.get(key), dict):
                options[f"per_output_{key}"] = options.pop(key)
        if "map" in options:  # map = { input = "x" }: reference name = candidate name
            options["name_map"] = options.pop("map")
        if "inputs" in spec:
            options["inputs"] = spec["inputs"]
        jobs.append(Job(spec.get("name", f"job {n}"), spec["reference"], spec["candidate"], options, {k: spec[k] for k in REPORT_KEYS if k in spec}))
    if problems:
        raise PorterError(f"{path} does not describe porter check jobs", problems=problems, hint="see porter check --help for the format")
    return jobs

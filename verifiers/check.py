"""``porter check``: a list of verify jobs from a TOML file, for CI.

    [defaults]                       # optional: any job key below, applied to every job
    threads = 2

    [[verify]]
    name = "bert to tf"              # optional, shown in the summary
    reference = "models/bert"        # paths are relative to the TOML file
    candidate = "out/bert-tf"
    inputs = "inputs.npz"            # optional, as --inputs
    atol = 1e-5                      # a number, or per output: atol = { last_hidden_state = 2e-5 }
    rtol = 1.3e-6                    # likewise
    allow_degenerate = false
    latency = true
    max_latency_ratio = 1.5
    device = "cpu"
    layout = "nhwc-to-nchw"          # or a list: ["x=nchw-to-nhwc"]
    shapes = [[2, 8], [4, 21]]       # (batch, sequence) pairs for generated inputs
    report = "reports/bert.json"     # junit, markdown, html likewise
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from porter.errors import PorterError

PATH_KEYS = ("reference", "candidate", "inputs", "report", "junit", "markdown", "html")
REPORT_KEYS = ("report", "junit", "markdown", "html")
OPTION_KEYS = ("atol", "rtol", "allow_degenerate", "latency", "max_latency_ratio", "device", "threads", "layout", "shapes", "route", "localise")


@dataclass
class Job:
    name: str
    reference: str
    candidate: str
    options: dict = field(default_factory=dict)
    reports: dict = field(default_factory=dict)


def load(path) -> list[Job]:
    path = Path(path)
    if not path.is_file():
        raise PorterError(f"{path} does not exist", hint="pass the TOML file: porter check path/to/porter.toml (see porter check --help)")
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise PorterError(f"{path} is not valid TOML: {exc}") from None
    unknown_top = set(data) - {"defaults", "verify"}
    raw_jobs = data.get("verify", [])
    problems = [f"unknown table {k!r} (expected [defaults] and [[verify]])" for k in sorted(unknown_top)]
    if not raw_jobs:
        problems.append("no [[verify]] jobs")
    jobs = []
    for n, raw in enumerate(raw_jobs, 1):
        spec = {**data.get("defaults", {}), **raw}
        where = f"job {n}" + (f" ({spec['name']})" if "name" in spec else "")
        bad = set(spec) - set(PATH_KEYS) - set(OPTION_KEYS) - {"name"}
        problems += [f"{where}: unknown key {k!r}" for k in sorted(bad)]
        problems += [f"{where}: missing {k!r}" for k in ("reference", "candidate") if k not in spec]
        if bad or "reference" not in spec or "candidate" not in spec:
            continue
        for k in PATH_KEYS:
            if k in spec:
                spec[k] = str((path.parent / spec[k]).resolve()) if not Path(spec[k]).is_absolute() else spec[k]
        options = {k: spec[k] for k in OPTION_KEYS if k in spec}
        for key in ("atol", "rtol"):
            if isinstance(options.get(key), dict):
                options[f"per_output_{key}"] = options.pop(key)
        if "inputs" in spec:
            options["inputs"] = spec["inputs"]
        jobs.append(Job(spec.get("name", f"job {n}"), spec["reference"], spec["candidate"], options, {k: spec[k] for k in REPORT_KEYS if k in spec}))
    if problems:
        raise PorterError(f"{path} does not describe porter check jobs", problems=problems, hint="see porter check --help for the format")
    return jobs

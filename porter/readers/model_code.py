"""The one piece of Python porter ever imports from a model folder: a model.py that porter wrote.

When porter writes model.py it records the file's sha256 in the folder's porter_report.json
(``"files": {"model.py": {"sha256": ...}}``). The torch_py runner imports model.py only when the
hash still matches, or when the user says they trust that code (``--trust-model-code``).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from porter.errors import PorterError
from porter.checks.model_files import read_json

MODEL_CODE = "model.py"
REPORT = "porter_report.json"
TRUST_FLAG = "--trust-model-code"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_code_record(folder: Path) -> dict:
    """The report's ``files`` block for the model.py porter just wrote into ``folder`` (empty if none)."""
    code = Path(folder) / MODEL_CODE
    return {MODEL_CODE: {"sha256": sha256_of(code)}} if code.is_file() else {}


def verified_model_code(folder: Path, trust: bool = False) -> bytes:
    """The bytes of ``folder``/model.py when they are what porter wrote there (or ``trust``), else PorterError.
    The caller runs these bytes, not the file again, so the file cannot change between check and import."""
    folder = Path(folder)
    code, report = folder / MODEL_CODE, folder / REPORT
    source = code.read_bytes()
    if trust:
        return source
    hint = (f"porter imports only a model.py it wrote itself; if you trust the code in {code}, "
            f"pass {TRUST_FLAG} (trust_model_code = true in porter check)")
    if not os.path.lexists(report):
        raise PorterError(f"{code} was not written by porter (no {REPORT} beside it); it is not imported", hint=hint)
    try:
        recorded = read_json(report, folder)["files"][MODEL_CODE]["sha256"]
    except (KeyError, TypeError):
        raise PorterError(f"{code}: {report} records no sha256 for {MODEL_CODE}; it is not imported", hint=hint) from None
    if hashlib.sha256(source).hexdigest() != recorded:
        raise PorterError(f"{code} was changed after porter wrote it (its sha256 differs from the one in {report}); "
                          "it is not imported", hint=hint)
    return source

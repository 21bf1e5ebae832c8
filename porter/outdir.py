"""Write outputs all-or-nothing: into a temporary sibling folder, moved into place at the end."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path

from porter.errors import PorterError


def check_writable(out: Path, force: bool) -> None:
    if out.exists() and not force:
        raise PorterError(f"output {out} already exists", hint="pass --force to replace it, or choose another --out")


@contextlib.contextmanager
def staged_output(out: Path, force: bool):
    """Yield a temporary folder; on success it replaces ``out``, on any error it is removed."""
    out = Path(out)
    check_writable(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    tmp.rename(out)

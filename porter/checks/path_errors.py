"""Why a path the user gave cannot be used, named for what it is: missing, a symlink loop,
a dangling link, permission denied, or a directory where a file was expected."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from porter.errors import PorterError


def why_unusable(path: Path) -> str | None:
    """None when ``path`` can be stat'ed, else the reason in a few words (no exception escapes)."""
    try:
        os.stat(path)
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "is a symlink loop"
        if exc.errno in (errno.EACCES, errno.EPERM):
            return f"cannot be reached: permission denied ({exc.strerror})"
        if exc.errno == errno.ENAMETOOLONG:
            return "is a name too long for this file system"
        if exc.errno in (errno.ENOENT, errno.ENOTDIR) and os.path.islink(path):
            return f"is a symlink to {os.readlink(path)}, which does not exist"
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return "does not exist"
        return f"cannot be read ({exc.strerror})"


def require_path(path, label: str = "", hint: str | None = None) -> Path:
    """``path`` as a Path when it exists and can be read; else PorterError naming the real cause.
    ``label`` prefixes the message, e.g. "--inputs"."""
    path = Path(path)
    reason = why_unusable(path)
    if reason is None and not os.access(path, os.R_OK):
        reason = "cannot be read: permission denied"
    if reason is not None:
        raise PorterError(f"{label + ' ' if label else ''}{path} {reason}", hint=hint)
    return path


def require_file(path, label: str, suffix: str, hint: str | None = None) -> Path:
    """A readable regular file: a directory given where a file is expected is named as such."""
    from porter.checks.model_files import regular_file

    path = require_path(path, label, hint)
    if path.is_dir():
        raise PorterError(f"{label + ' ' if label else ''}{path} is a directory, not a {suffix} file", hint=hint)
    return regular_file(path, label)  # a pipe (/dev/stdin) or device would block or never end

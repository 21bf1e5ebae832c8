"""Write outputs all-or-nothing, and never lose a file porter did not write.

A run writes into a temporary sibling of ``--out`` (``.<name>.tmp-*``) and moves it into
place at the end with a rename that fails when something is already there. ``--force``
replaces only porter's own output: a folder holding ``porter_report.json`` (or an empty
one). Refused before any work, exit 2: an ``--out`` that is, or holds, the source model,
the working directory or one of its parents; a folder porter did not write; a file; a
symbolic link (replacing what a link points at, or only the link, both surprise someone:
pass the real folder as ``--out`` instead).

Every temporary folder porter makes comes from ``temp_dir``: it carries a ``.porter-owner``
marker (pid, process start time, host), and the next run removes those whose owner process
is gone (a run killed by SIGKILL cannot clean up after itself).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import socket
import stat
import sys
import tempfile
from pathlib import Path

from porter.checks import escape
from porter.process import signals
from porter.errors import PorterError
from porter.checks.model_files import read_json

REPORT = "porter_report.json"
OWNER = ".porter-owner"
# the names porter gives its temporary folders: only these are ever swept
STAGING_MARKS = (".tmp-", ".old-")
WORK_PREFIXES = ("porter-onnx-",)
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


# -- refusing before any work ---------------------------------------------------------------------


def check_out(out, force: bool, protected=()) -> None:
    """Raise a PorterError unless a run may write (with ``force``: replace) ``out``.

    ``protected``: paths the run reads (the source model, --inputs) that ``out`` must not hold."""
    out = Path(out)
    real = Path(os.path.realpath(out))
    cwd = Path(os.path.realpath(os.getcwd()))
    if cwd == real or cwd.is_relative_to(real):
        what = "the current directory" if cwd == real else f"a parent of the current directory ({cwd})"
        raise PorterError(f"--out {out} is {what}; porter will not write or replace it",
                          hint="pass a new folder as --out, e.g. --out converted")
    for path in protected:
        if path is None or not os.path.lexists(path):
            continue
        src = Path(os.path.realpath(path))
        if src == real or src.is_relative_to(real):
            what = "is" if src == real else "holds"
            raise PorterError(f"--out {out} {what} the source {path}; porter will not write or replace it",
                              hint="pass a new folder as --out")
    if os.path.islink(out):
        raise PorterError(f"--out {out} is a symbolic link (to {os.readlink(out)}); porter does not replace links",
                          hint="remove the link, or pass the folder it points to as --out")
    if os.path.lexists(out):
        if not out.is_dir():
            raise PorterError(f"--out {out} is a file; porter writes a folder there", hint="pass a new folder as --out")
        if not force:
            raise PorterError(f"output {out} already exists", hint="pass --force to replace it, or choose another --out")
        _check_porters(out)
    _check_parent(out)


def _check_porters(folder: Path) -> None:
    """--force replaces only an empty folder or porter's own output (it holds porter_report.json)."""
    try:
        entries = os.listdir(folder)
    except OSError as exc:
        raise PorterError(f"--out {folder} cannot be read ({exc.strerror})", hint="choose another --out") from None
    if entries and REPORT not in entries:
        shown = ", ".join(sorted(entries)[:5]) + (" ..." if len(entries) > 5 else "")
        raise PorterError(f"--out {folder} is a folder porter did not write (no {REPORT} in it: {shown}); "
                          "--force replaces only porter's own output",
                          hint="choose another --out, or move that folder away yourself")


def _check_parent(out: Path) -> None:
    """The nearest existing ancestor of --out must be a folder porter may create entries in."""
    parent = Path(os.path.abspath(out)).parent
    while not os.path.lexists(parent) and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise PorterError(f"--out {out} cannot be created: {parent} is a file, not a folder", hint="choose another --out")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PorterError(f"--out {out} cannot be created: {parent} is not writable", hint="choose another --out")


def check_report_path(path, flag: str) -> None:
    """A report file of `porter verify`: writable (or creatable) before the models load."""
    if path is None:
        return
    path = Path(path)
    if path.is_dir():
        raise PorterError(f"{flag} {path} is a folder; it takes a file path", hint=f"e.g. {flag} {path / 'report'}")
    if path.exists():
        if not os.access(path, os.W_OK):
            raise PorterError(f"{flag} {path} is not writable", hint=f"pass another {flag} path")
        return
    try:
        _check_parent(path)
    except PorterError as exc:
        raise PorterError(exc.message.replace("--out", flag, 1), hint=f"pass another {flag} path") from None


def write_failed(exc: BaseException, path, flag: str, any_oserror: bool = False) -> PorterError | None:
    """A full disk or a folder porter may not write, met while writing ``path``, as one message
    (None for any other error: that one is not about the path). ``any_oserror``: every OSError
    is about the path (a plain file write)."""
    if isinstance(exc, OSError) and (any_oserror or exc.errno in DISK_FULL + (errno.EROFS, errno.EACCES, errno.EPERM)):
        reason = exc.strerror or str(exc)
    elif isinstance(exc, Exception) and "No space left on device" in str(exc):
        reason = "No space left on device"  # safetensors and TensorFlow report it as their own errors
    else:
        return None
    fix = "free some space, or choose another " if isinstance(exc, OSError) and exc.errno in DISK_FULL or "space" in reason else "choose another "
    return PorterError(f"{flag} {path}: writing failed ({reason}); nothing was kept", hint=fix + flag)


# -- temporary folders ------------------------------------------------------------------------------


def temp_dir(prefix: str, dir=None) -> Path:
    """mkdtemp with porter's owner marker; stale ones in the same folder (owner gone) are removed first."""
    where = Path(dir) if dir is not None else Path(tempfile.gettempdir())
    sweep_stale(where)
    with signals.held():  # a SIGTERM between mkdtemp and the return would leave the folder behind
        path = Path(tempfile.mkdtemp(prefix=prefix, dir=dir))
        try:
            _mark(path)
        except BaseException:
            shutil.rmtree(path, ignore_errors=True)
            raise
    if signals.received() is not None:
        shutil.rmtree(path, ignore_errors=True)
        signals.check()
    return path


@contextlib.contextmanager
def temp_files_marked(prefix: str):
    """Temporary files that libraries make meanwhile (TensorFlow's autograph writes a .py per converted
    function, removed only at a clean exit) go into a marked ``temp_dir``, removed at the end, and swept
    by the next run when this one is killed."""
    work = temp_dir(prefix)
    saved = tempfile.tempdir
    tempfile.tempdir = str(work)
    try:
        yield work
    finally:
        tempfile.tempdir = saved
        shutil.rmtree(work, ignore_errors=True)


def _mark(path: Path) -> None:
    (path / OWNER).write_text(json.dumps({"pid": os.getpid(), "start": _start_time(os.getpid()), "host": socket.gethostname()}))


def _start_time(pid: int):
    """The process start time in clock ticks since boot (Linux), so a reused pid is not taken for the owner."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _owner_gone(owner: dict) -> bool:
    if owner.get("host") != socket.gethostname():
        return False  # another machine's run (a shared folder): cannot tell
    pid = owner.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    if pid == os.getpid():
        return owner.get("start") != _start_time(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, someone else's
    except OSError:
        return False
    start = _start_time(pid)
    return start is not None and owner.get("start") not in (None, start)


def _porters_name(name: str) -> bool:
    return name.startswith(WORK_PREFIXES) or (name.startswith(".") and any(m in name for m in STAGING_MARKS))


def sweep_stale(folder) -> list[Path]:
    """Remove porter's temporary folders in ``folder`` whose owner process is gone; say so in one line.

    Only a real folder (not a link) with porter's name pattern and a readable ``.porter-owner`` is touched."""
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        if not _porters_name(name):
            continue
        path = Path(folder) / name
        try:
            if not stat.S_ISDIR(os.lstat(path).st_mode):
                continue
            owner = read_json(path / OWNER, path)
        except (OSError, PorterError):  # unreadable, linked elsewhere, huge or deep: not a marker porter wrote
            continue
        if isinstance(owner, dict) and _owner_gone(owner):
            size = _size(path)
            shutil.rmtree(path, ignore_errors=True)
            if not os.path.lexists(path):
                removed.append(path)
                print(escape.console(f"porter: removed {path} ({size / 1e6:.1f} MB), left by a run that was killed "
                                     f"(pid {owner.get('pid')})"), file=sys.stderr)
    return removed


def _size(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, f)).st_size
    return total


# -- the final move ------------------------------------------------------------------------------


def _umask() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # no /proc: read it by setting it (and put it back at once)
    os.umask(mask)
    return mask


def apply_umask(folder: Path) -> None:
    """mkdtemp makes 0700 and tempfile's files are 0600: give the tree the modes the user's umask asks for."""
    mask = _umask()
    for root, dirs, files in os.walk(folder):
        os.chmod(root, 0o777 & ~mask)
        for f in files:
            path = os.path.join(root, f)
            mode = os.lstat(path).st_mode
            if stat.S_ISREG(mode):
                os.chmod(path, (0o777 if mode & 0o111 else 0o666) & ~mask)


_RENAME_NOREPLACE = 1
_AT_FDCWD = -100


def rename_noreplace(src, dst) -> None:
    """Rename ``src`` to ``dst``; FileExistsError when anything is at ``dst`` (nothing is replaced)."""
    if sys.platform.startswith("linux") and _renameat2(src, dst):
        return
    if sys.platform == "win32":
        os.rename(src, dst)  # never replaces on Windows
        return
    rename_guarded(src, dst)


def _renameat2(src, dst) -> bool:
    """Linux renameat2(RENAME_NOREPLACE); False where the libc or the filesystem lacks it."""
    import ctypes

    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), os.fsdecode(dst))


def rename_guarded(src, dst) -> None:
    """The fallback: POSIX rename replaces only an empty folder, so claim the name with mkdir (fails if
    taken) and rename over that placeholder; if something was put into it meanwhile, the rename fails."""
    os.mkdir(dst)
    try:
        os.rename(src, dst)
    except OSError:
        with contextlib.suppress(OSError):
            os.rmdir(dst)
        raise


def _publish(tmp: Path, out: Path, force: bool) -> None:
    """Move the staged folder to ``out``. With ``force``, porter's old output is first renamed
    aside (and checked again once it cannot change under us), then deleted after the move."""
    aside = None
    if force and os.path.lexists(out):
        aside = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.rmdir(aside)  # a fresh free name next to out
        try:
            rename_noreplace(out, aside)
        except FileNotFoundError:
            aside = None  # went away meanwhile: nothing to replace
        else:
            try:
                _check_replaceable(aside, out)
            except PorterError:
                with contextlib.suppress(OSError):
                    rename_noreplace(aside, out)
                raise
            with contextlib.suppress(OSError):
                _mark(aside)  # a kill before it is deleted leaves it sweepable
    try:
        rename_noreplace(tmp, out)
    except FileExistsError:
        kept = ""
        if aside is not None:  # porter's old output cannot go back: keep it, unmarked so no sweep removes it
            (aside / OWNER).unlink(missing_ok=True)
            kept = f"; porter's previous output there is kept at {aside}"
        raise PorterError(f"--out {out} appeared while porter was working; it was left as it is and nothing was written{kept}",
                          hint="remove it, or choose another --out") from None
    (out / OWNER).unlink(missing_ok=True)
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


def _check_replaceable(folder: Path, out: Path) -> None:
    if os.path.islink(folder) or not folder.is_dir():
        raise PorterError(f"--out {out} became a file or link while porter was working; it was left as it is",
                          hint="remove it, or choose another --out")
    try:
        _check_porters(folder)
    except PorterError as exc:
        raise PorterError(exc.message.replace(str(folder), str(out)) + " (it appeared while porter was working)",
                          hint=exc.hint) from None


_staged: dict[str, str] = {}  # staging folder -> the --out it becomes, while a run writes it


def shown(path) -> str:
    """``path`` as the user should read it: a staging folder is named by the --out it becomes."""
    text = str(path)
    for tmp, out in _staged.items():
        text = text.replace(tmp, out)
    return text


@contextlib.contextmanager
def staged_output(out, force: bool, protected=()):
    """Yield a temporary sibling folder of ``out``; on success it is moved to ``out``, on any error
    (or signal) it is removed. Nothing outside the temporary folder is changed before the move."""
    out = Path(out)
    check_out(out, force, protected)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_dir(prefix=f".{out.name}.tmp-", dir=out.parent)
    except OSError as exc:
        raise (write_failed(exc, out, "--out") or exc) from None
    try:
        _staged[str(tmp)] = str(out)
        yield tmp
        signals.check()  # a SIGTERM that library code swallowed still stops the move
        apply_umask(tmp)
        _publish(tmp, out, force)
    except BaseException as exc:
        with signals.cleaning():
            shutil.rmtree(tmp, ignore_errors=True)
        if signals.received() is not None and not isinstance(exc, KeyboardInterrupt):
            raise signals.Terminated(signals.received()) from None  # the error a signal turned into
        failure = write_failed(exc, out, "--out")
        if failure is not None:
            raise failure from None
        if isinstance(exc, PorterError):  # a message about the staged model names the --out it was for
            exc.message, exc.hint = shown(exc.message), exc.hint and shown(exc.hint)
            exc.problems = [shown(p) for p in exc.problems]
            exc.args = (exc.render(),)
        raise
    finally:
        _staged.pop(str(tmp), None)

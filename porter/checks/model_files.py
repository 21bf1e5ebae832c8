"""Reading files on behalf of a model that may come from anywhere (a pull request, a download).

One rule for every file porter reads for a model (weights, shards, external data, config and
tokenizer files, the files of a SavedModel or keras-hub preset folder): its real path lies inside the
model's folder and it is a regular file. A link inside the folder that points elsewhere would copy
the bytes it points at (a CI runner's secrets) into porter's output; a FIFO or device would hang.

JSON and TOML are parsed with their size checked before reading and their nesting depth measured
before parsing (depth_of): Python's parsers recurse, and Keras, torch and porter walk the parsed
trees recursively again. Members of zip archives (.keras,
.pt2, .npz) are read only after the size their central directory declares is checked; zipfile
stops at that size, so the declared size bounds what is unpacked.
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

from porter.errors import PorterError


def _read_array_header(member, version, max_header_size):
    """numpy's .npy header reader for every format version (private: numpy 2 moved it, the public readers skip 3.0)."""
    try:
        from numpy.lib._format_impl import _read_array_header as read  # numpy 2
    except ImportError:
        from numpy.lib.format import _read_array_header as read  # numpy 1
    return read(member, version, max_header_size=max_header_size)

MiB = 1 << 20
# A config.json, shard index, tokenizer or Keras config: the largest real ones are a few MB
# (a 250k-token tokenizer.json is about 35 MB, which porter does not parse itself).
JSON_LIMIT = 64 * MiB
# Real model configs nest 10-40 levels (a Keras config of models inside models a few more); torch's
# graph JSON about 20. Past this, Python's and Keras' recursive walks would fail.
DEPTH_LIMIT = 200
# Verification inputs (--inputs): a batch of images or a long context is a few MB to a few hundred.
INPUTS_LIMIT = 512 * MiB


def _inside(real: Path, folder) -> bool:
    """Whether the resolved ``real`` lies in the model folder or, for an HF hub cache snapshot (the folder as
    given or resolved sits in ``snapshots/``), in the cache's own ``blobs/`` that its links point into."""
    roots = []
    for f in {Path(os.path.abspath(folder)), Path(os.path.realpath(folder))}:
        roots.append(Path(os.path.realpath(f)))
        if f.parent.name == "snapshots":
            roots.append(Path(os.path.realpath(f.parent.parent / "blobs")))
    return any(real == root or real.is_relative_to(root) for root in roots)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def model_file(path, folder, what: str = "") -> Path:
    """``path`` when its real path lies inside ``folder`` (the model's) and it is a regular file; else
    PorterError naming the file and, for a link, where it points."""
    path = Path(path)
    label = f"{what} {path}" if what else str(path)
    real = Path(os.path.realpath(path))
    if not _inside(real, folder):
        raise PorterError(f"{label} is a link to {real}, outside the model folder {folder}; porter reads only files inside it",
                          hint="copy the file into the model folder instead of linking to it")
    try:
        mode = os.stat(real).st_mode
    except OSError as exc:
        raise PorterError(f"{label} cannot be read ({exc.strerror})") from None
    if not stat.S_ISREG(mode):
        raise PorterError(f"{label} is {_kind(mode)}, not a regular file; porter reads model files only from regular files")
    return path


def check_tree(folder, what: str = "") -> None:
    """``model_file`` for every file under ``folder`` (links to folders are followed only to be refused
    when they leave it): for formats whose loader reads the whole tree (a SavedModel's variables/ and
    assets/, a keras-hub preset)."""
    folder = Path(folder)
    for top, dirs, files in os.walk(folder):
        for name in dirs:
            sub = Path(top) / name
            if os.path.islink(sub):
                real = Path(os.path.realpath(sub))
                if not _inside(real, folder):
                    raise PorterError(f"{what + ' ' if what else ''}{sub} is a link to {real}, outside the model folder {folder}; "
                                      "porter reads only files inside it", hint="copy the folder into the model folder instead of linking to it")
        for name in files:
            model_file(Path(top) / name, folder, what)


def regular_file(path, label: str) -> Path:
    """A file given on the command line (``--inputs``, ``porter.toml``): a regular file, never a pipe or
    device that would block or never end."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return path  # the caller's existence check names the reason
    if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
        raise PorterError(f"{label + ' ' if label else ''}{path} is {_kind(mode)}, not a regular file",
                          hint="pass a file saved on disk")
    return path


_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_TOML_STRING = re.compile(rb'"(?:[^"\\\n]|\\.)*"|\'[^\'\n]*\'')


def depth_of(text: str | bytes, strings=_JSON_STRING) -> int:
    """The deepest bracket nesting of a JSON (or, with ``strings=_TOML_STRING``, TOML) text, its strings
    skipped. Measured before parsing, never by parsing: Python's parsers recurse in C, and where a
    library has raised the recursion limit a file nested 100,000 levels deep crashes the process
    instead of raising RecursionError. Linear, in chunks, with numpy."""
    import numpy as np

    data = strings.sub(b'""', text.encode("utf-8", "replace") if isinstance(text, str) else bytes(text))
    deepest = depth = 0
    for begin in range(0, len(data), 16 << 20):
        chunk = np.frombuffer(data, np.uint8, count=min(16 << 20, len(data) - begin), offset=begin)
        opening = (chunk == ord("[")) | (chunk == ord("{"))
        brackets = np.flatnonzero(opening | (chunk == ord("]")) | (chunk == ord("}")))
        if brackets.size:
            running = depth + np.cumsum(np.where(opening[brackets], 1, -1), dtype=np.int64)
            deepest, depth = max(deepest, int(running.max())), int(running[-1])
    return deepest


def _too_deep(source, depth, limit) -> PorterError:
    return PorterError(f"{source} is nested {depth} levels deep, past porter's limit of {limit}",
                       hint="a real model's JSON nests a few dozen levels; this file is damaged or hostile")


def parse_json(text: str | bytes, source, limit: int = DEPTH_LIMIT):
    """json.loads of a text whose nesting depth_of has checked first (past ``limit``: bad input naming
    ``source``); invalid JSON and non-UTF-8 bytes are bad input too."""
    depth = depth_of(text)
    if depth > limit:
        raise _too_deep(source, depth, limit)
    try:
        return json.loads(text)
    except UnicodeDecodeError as exc:
        raise PorterError(f"{source} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise PorterError(f"{source} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None


def read_json(path, folder=None, *, size_limit: int = JSON_LIMIT, what: str = ""):
    """A JSON file of a model: inside ``folder`` (when given) and regular, at most ``size_limit``
    bytes by its size on disk before a byte is read, nested at most DEPTH_LIMIT levels."""
    path = Path(path)
    if folder is not None:
        model_file(path, folder, what)
    else:
        regular_file(path, what)
    label = f"{what} {path}" if what else str(path)
    try:
        size = os.stat(path).st_size
        if size > size_limit:
            raise PorterError(f"{label} is {size:,} bytes, past porter's limit of {size_limit:,} for a JSON file",
                              hint="a real model's JSON file is a few MB at most; this one is damaged or hostile")
        with open(path, "rb") as f:
            data = f.read(size_limit + 1)
    except OSError as exc:
        raise PorterError(f"{label} cannot be read: {exc.strerror}") from None
    if len(data) > size_limit:  # it grew while we looked
        raise PorterError(f"{label} is more than {size_limit:,} bytes, past porter's limit for a JSON file")
    return parse_json(data, label)


def read_json_if_present(path, folder=None):
    """read_json, or None where ``path`` does not exist (porter_report.json beside a model is optional)."""
    return read_json(path, folder) if os.path.lexists(path) else None


def parse_toml(text: str, source, limit: int = DEPTH_LIMIT) -> dict:
    """tomllib.loads of a text whose nesting depth_of has checked first (tomllib recurses into arrays)."""
    import tomllib

    depth = depth_of(text, _TOML_STRING)
    if depth > limit:
        raise _too_deep(source, depth, limit)
    return tomllib.loads(text)


def duplicate_entry(zf) -> str | None:
    """A name an open zip archive holds twice (zipfile and the reader behind porter may pick different
    copies of it), or None."""
    seen = set()
    for name in zf.namelist():
        if name in seen:
            return name
        seen.add(name)
    return None


def zip_member(zf, name: str, source, *, size_limit: int, what: str = "") -> bytes:
    """One member of an open zip archive, refused by the size the central directory declares before it
    is unpacked (zipfile stops at that size, so a member that lies about it cannot unpack more)."""
    info = zf.getinfo(name)
    if info.file_size > size_limit:
        raise PorterError(f"{source}: entry {name!r}{' (' + what + ')' if what else ''} declares {info.file_size:,} bytes "
                          f"unpacked, past porter's limit of {size_limit:,}",
                          hint="the archive is damaged or hostile (a zip bomb); re-save the model")
    return zf.read(info)


def npz_arrays(path, label: str, check=None, size_limit: int | None = None) -> dict:
    """The arrays of an .npz, unpacked only after every member's npy header (dtype, shape) has been read
    from the archive and checked against the size the zip declares (a forged header); then ``check(headers)``
    (name -> an object with dtype, shape, ndim) may refuse, e.g. shapes the model cannot take; then all of them
    together against ``size_limit`` and the memory this process can take. Object arrays (pickles) are refused."""
    import types
    import zipfile

    import numpy as np

    from porter.resources.memory_estimate import available_bytes

    source = f"{label} {path}" if label else str(path)
    headers, total = {}, 0
    try:
        with zipfile.ZipFile(path) as zf:
            twice = duplicate_entry(zf)
            if twice is not None:
                raise PorterError(f"{source} holds two entries named {twice!r}")
            for info in zf.infolist():
                if not info.filename.endswith(".npy"):
                    raise PorterError(f"{source}: entry {info.filename!r} is not an .npy array")
                with zf.open(info) as member:
                    version = np.lib.format.read_magic(member)
                    shape, fortran, dtype = _read_array_header(member, version, max_header_size=10000)
                    start = member.tell()
                if dtype.hasobject:
                    raise PorterError(f"{source}: array {info.filename[:-4]!r} holds Python objects, which porter never unpickles")
                nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
                if nbytes + start != info.file_size:
                    raise PorterError(f"{source}: array {info.filename[:-4]!r} declares shape {shape} of {dtype} "
                                      f"({nbytes:,} bytes), but its entry holds {info.file_size - start:,}",
                                      hint="the file is damaged or forged; save it again with numpy.savez")
                headers[info.filename[:-4]] = types.SimpleNamespace(dtype=dtype, shape=tuple(shape), ndim=len(shape), nbytes=nbytes)
                total += nbytes
            if check is not None:
                check(headers)
            free = available_bytes()
            limits = [(size_limit, f"porter's limit of {size_limit:,} bytes for {label or 'this file'}")] if size_limit else []
            limits += [(free // 2, f"half the {free:,} bytes of memory available")] if free is not None else []
            for limit, what in limits:
                if total > limit:
                    raise PorterError(f"{source} unpacks to {total:,} bytes ({', '.join(f'{n} {h.shape} {h.dtype}' for n, h in headers.items())}), "
                                      f"past {what}", hint="pass fewer or smaller arrays")
            return {name: np.lib.format.read_array(zf.open(name + ".npy"), allow_pickle=False) for name in headers}
    except PorterError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise PorterError(f"{source} is not a readable .npz file ({type(exc).__name__}: {exc})") from None

"""The on-disk cache of compiled plans: where an entry lives, reading it, writing it.

An entry holds a plan as data (:mod:`gateflow.numeric._plan`), never code: whatever a file
in the cache folder holds, nothing in it is executed. Reading is careful only so that a run
never breaks: an entry is read only if it is a regular file (no link is followed, a FIFO or
a device is never read from) of at most :data:`MAX_ENTRY_BYTES`, its JSON holds no NaN or
infinity, and its SHA-256 (over its canonical content and its own file name) matches, which
catches corrupt, truncated, renamed and hand-edited entries. The plan is then checked as
data when it is built (:func:`gateflow.numeric._plan.check_plan`). An entry that fails
anything is rebuilt and replaced, with one ``gateflow: warning:`` line per folder and
process. The hash is not a signature: whoever can write the folder can re-sign an edited
formula, which gives other numbers but runs nothing. gateflow creates the folder 0700 and
its entries 0600 (whatever the umask) so that, by default, only you can.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import sys
from pathlib import Path

from gateflow._io import write_files
from gateflow.cells._record import Cell
from gateflow.numeric._plan import FORMAT

__all__ = ["MAX_ENTRY_BYTES", "cache_dir", "entry_path", "read", "warn", "write"]

#: Entries larger than this are not read (they are never this big: ~10 KiB).
MAX_ENTRY_BYTES = 8 << 20

#: The sources that generate the cached plans: editing any of them invalidates old entries.
_GENERATORS = ("cells/_record.py", "cells/_functions.py", "cells/_activations.py",
               "cells/_notation.py", "symbolic/_derive.py", "numeric/_codegen.py",
               "numeric/_plan.py")

_warned: set[str] = set()  # folders already warned about in this process


class _Unusable(Exception):
    """An entry that is not read; the message says why."""


def cache_dir() -> Path | None:
    """Where compiled plans are cached: ``$GATEFLOW_CACHE_DIR`` (set but empty: no cache),
    else the user's cache folder for gateflow as ``platformdirs`` gives it:
    ``$XDG_CACHE_HOME/gateflow`` or ``~/.cache/gateflow`` on Linux,
    ``~/Library/Caches/gateflow`` on macOS, ``%LOCALAPPDATA%\\gateflow\\Cache`` on Windows."""
    env = os.environ.get("GATEFLOW_CACHE_DIR")
    if env is not None:
        return Path(env) if env else None
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("gateflow", appauthor=False))


def entry_path(cell: Cell, backend: str, inputs: bool = False) -> Path | None:
    """The plan's file, or None without a usable cache folder: keyed by the equations, the
    versions, the generators' sources and which Jacobian (state or input), not by dtype (the
    plan is the same for float32 and float64)."""
    folder = cache_dir()
    if folder is None or not _folder(folder):
        return None
    from importlib.metadata import version

    from gateflow._version import __version__

    root = Path(__file__).parent.parent
    h = hashlib.sha256(json.dumps([FORMAT, __version__, version("sympy"), backend,
                                   cell.name, cell.state, cell.params,
                                   cell.equations, inputs]).encode())
    for source in _GENERATORS:
        h.update((root / source).read_bytes())
    name = re.sub(r"[^A-Za-z0-9_-]", "_", cell.name)[:64]  # never a path of its own
    kind = "-x" if inputs else ""
    return folder / f"{name}{kind}-{backend}-{h.hexdigest()[:24]}.json"


def _folder(folder: Path) -> bool:
    """Create the cache folder (and the missing folders above it) 0700 whatever the umask;
    True if it is a folder. One that cannot be created (a read-only home) only costs the
    cache; something else in its place is said once."""
    missing = []
    path = folder
    while not os.path.lexists(path) and path.parent != path:
        missing.append(path)
        path = path.parent
    try:
        for path in reversed(missing):
            try:
                os.mkdir(path, 0o700)
            except FileExistsError:
                continue  # made meanwhile by someone else
            os.chmod(path, 0o700)
    except OSError:
        return False
    if os.path.isdir(folder):
        return True
    warn(folder, f"ignoring compile cache {str(folder)!r}: it is not a folder; compiling in "
                 "memory")
    return False


def warn(folder: Path, message: str) -> None:
    """One line on stderr, at most once per process and folder (not ``warnings.warn``: the
    cache is gateflow's business, and a warning filter must not turn it into an error)."""
    from gateflow._text import one_line  # the folder's name may hold anything

    if str(folder) not in _warned:
        _warned.add(str(folder))
        print(f"gateflow: warning: {one_line(message)}", file=sys.stderr, flush=True)


def _digest(name: str, plan: dict) -> str:
    """SHA-256 of an entry's file name and canonical JSON (without its own hash)."""
    canonical = json.dumps(plan, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(f"{name}\n{canonical}".encode()).hexdigest()


def _no_constant(text: str):
    raise ValueError(f"{text} in JSON")


def _read_entry(path: Path) -> dict:
    """The plan stored in ``path`` (its digest checked, not yet its content). Raises
    FileNotFoundError for a miss, :class:`_Unusable` or another error otherwise."""
    if stat.S_ISLNK(os.lstat(path).st_mode):
        raise _Unusable("it is a symbolic link")
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    with open(os.open(path, flags), "rb") as fh:
        st = os.fstat(fh.fileno())  # the file actually opened, not the name
        if not stat.S_ISREG(st.st_mode):
            raise _Unusable("it is not a regular file")
        if st.st_size > MAX_ENTRY_BYTES:
            raise _Unusable(f"it is larger than {MAX_ENTRY_BYTES >> 20} MiB")
        data = fh.read(MAX_ENTRY_BYTES + 1)
    if len(data) > MAX_ENTRY_BYTES:
        raise _Unusable(f"it is larger than {MAX_ENTRY_BYTES >> 20} MiB")
    entry = json.loads(data.decode("utf-8"), parse_constant=_no_constant)
    if not (isinstance(entry, dict) and isinstance(entry.get("sha256"), str)):
        raise ValueError("no digest")
    plan = {k: v for k, v in entry.items() if k != "sha256"}
    if _digest(path.name, plan) != entry["sha256"]:
        raise _Unusable("it failed its integrity check")
    return plan


def read(path: Path) -> dict | None:
    """The plan data in ``path``, or None to rebuild it: a miss, or (with one warning line)
    an entry that cannot be read or fails its digest. Whatever the file holds, nothing
    raises and nothing is executed."""
    try:
        return _read_entry(path)
    except FileNotFoundError:
        return None
    except _Unusable as exc:
        reason = str(exc)
    except OSError as exc:
        reason = f"it cannot be read ({exc.strerror or exc})"
    except Exception:  # any shape of corrupt content, deep nesting, huge numbers
        reason = "it is not a valid gateflow plan"
    rejected(path, reason)
    return None


def rejected(path: Path, reason: str) -> None:
    """Say (once per folder) that the entry at ``path`` is rebuilt, and why."""
    warn(path.parent, f"ignoring compile cache entry {str(path)!r}: {reason}; rebuilding it")


def write(path: Path, plan: dict) -> None:
    """Store a fresh (built, so checked) plan, 0600, replacing whatever was at ``path``. Any
    failure only costs the cache."""
    try:
        data = json.dumps({**plan, "sha256": _digest(path.name, plan)},
                          allow_nan=False).encode()
        try:
            os.unlink(path)  # a rejected entry (a link is removed, not followed)
        except FileNotFoundError:
            pass
        write_files({path: data}, mode=0o600, output=False)
    except Exception:
        pass

"""Writing outputs safely: all-or-nothing files and folders, fresh folder names.

Every command that writes (``decay``, ``report``, ``sweep``, ``save_params``) goes through
here, so the guarantees hold everywhere: nothing is written when anything fails, a file
or folder appears complete or not at all (staged next to its target, then ``os.replace``),
an existing output is replaced only when asked, and permissions are what ``open`` and
``mkdir`` would give (``mkstemp``/``mkdtemp`` would leave 0600/0700).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ._errors import GateflowError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def file_mode(path: Path) -> int:
    """The mode ``open(path, "w")`` would leave: the existing file's, else 0666 & ~umask."""
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        return 0o666 & ~_umask()


def check_file(path, what: str = "output") -> Path:
    """An output file path whose folder exists and which is not a folder itself."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise GateflowError(f"cannot write {what} {str(path)!r}: folder {str(folder)!r} does not "
                            "exist; create it first")
    if path.is_dir():
        raise GateflowError(f"cannot write {what} {str(path)!r}: it is a folder; give a file name")
    return path


def write_files(payloads: dict[Path, bytes], mode: int | None = None) -> None:
    """Write every file or none: stage each next to its target, then move them into place.

    ``mode`` forces the files' permissions (e.g. 0o600 for private caches), whatever the
    umask; by default they get what ``open`` would give."""
    staged: list[tuple[str, Path]] = []
    try:
        for path, data in payloads.items():
            folder = path.parent if str(path.parent) else Path(".")
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
            staged.append((tmp, path))
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.chmod(tmp, file_mode(path) if mode is None else mode)
        for tmp, path in staged:
            os.replace(tmp, path)
    except BaseException as exc:
        for tmp, _ in staged:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        if isinstance(exc, OSError):
            raise GateflowError(f"cannot write {exc.filename or 'output'}: "
                                f"{exc.strerror or exc}") from None
        raise


def check_dir(out: Path, overwrite: bool) -> None:
    """Refuse an existing output folder unless ``overwrite`` (call before doing any work)."""
    if out.exists() or out.is_symlink():
        if not overwrite:
            raise GateflowError(f"output folder {str(out)!r} already exists; pass --overwrite "
                                "to replace it or choose another --out")
        if not out.is_dir() or out.is_symlink():
            raise GateflowError(f"{str(out)!r} exists and is not a folder; "
                                "remove it or choose another --out")


@contextmanager
def staged_dir(out, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty temporary sibling of ``out`` to fill; on success it replaces ``out``
    in one rename (the previous folder is put back if that fails); on failure it is
    removed and ``out`` is untouched."""
    out = Path(out)
    check_dir(out, overwrite)
    parent = out.parent if str(out.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GateflowError(f"cannot create {str(parent)!r}: {exc.strerror or exc}") from None
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=parent))
    old = None
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        check_dir(out, overwrite)  # again: it may have appeared meanwhile
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=parent))
            os.replace(out, old / out.name)
        os.replace(tmp, out)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not out.exists() and (old / out.name).exists():
            os.replace(old / out.name, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        if isinstance(exc, OSError):
            raise GateflowError(f"cannot write {str(out)!r}: {exc.strerror or exc}") from None
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def fresh_dir(root, name: str) -> Path:
    """``root/name``, or ``root/name-2``, ``-3``, … if taken: running twice just works."""
    root = Path(root)
    path, k = root / name, 2
    while path.exists():
        path, k = root / f"{name}-{k}", k + 1
    return path

"""What every reader shares: paths given by users, opening regular files only, telling a
file's real format from its leading bytes (formats gateflow does not read included, so
that a message can name them), and the memory check made before anything is allocated."""

from __future__ import annotations

import errno
import os
import stat
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, NamedTuple

from gateflow._errors import GateflowError
from gateflow._memory import check_fits
from gateflow.models._checks import clip, one_line

if TYPE_CHECKING:
    from collections.abc import Iterable

    from gateflow.models.formats import Reader

__all__ = ["NPY", "Kind", "as_path", "check_format", "fits", "label", "open_regular",
           "parsing", "recognise", "show"]


def show(path) -> str:
    """A path quoted for a one-line message (newlines and control characters escaped)."""
    return repr(str(path))


def label(path: Path) -> str:
    """A file's name as a message prefix: bare when printable, else quoted."""
    return path.name if path.name.isprintable() else repr(path.name)


def as_path(path, what: str) -> Path:
    """``path`` as a :class:`Path`, or a GateflowError for None, empty or non-path values."""
    if not isinstance(path, (str, os.PathLike)):
        raise GateflowError(f"the {what} path must be a str or os.PathLike, got "
                            f"{type(path).__name__}")
    if not os.fspath(path):
        raise GateflowError(f"the {what} path is empty; give a file name")
    try:
        return Path(path)
    except TypeError:  # a PathLike that returns bytes
        raise GateflowError(f"the {what} path must be text, not bytes; decode it first") from None


# -- opening regular files only -----------------------------------------------------------
_OS_REASONS = {errno.EACCES: "permission denied", errno.EPERM: "permission denied",
               errno.ENAMETOOLONG: "file name too long",
               errno.ENOTDIR: "a part of the path is not a folder",
               errno.ELOOP: "too many levels of symbolic links", errno.EISDIR: "it is a folder"}
_NODE_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
               (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
               (stat.S_ISSOCK, "a socket"))


def _os_reason(exc: OSError) -> str:
    return _OS_REASONS.get(exc.errno or 0) or clip(" ".join(str(exc.strerror or exc).split()), 80)


@contextmanager
def open_regular(path: Path, what: str) -> Iterator[tuple[BinaryIO, int]]:
    """Open an existing regular file for reading; yield ``(file, size)``.

    Checked with ``os.stat`` first, so a folder, FIFO, device or socket is refused without
    being opened (opening a FIFO would block, opening some devices has side effects). The
    open itself is non-blocking and re-checked with ``fstat`` in case the path changed.
    """
    def cannot(reason: str) -> GateflowError:
        return GateflowError(f"cannot read {what} file {show(path)} ({reason})")

    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise GateflowError(f"{what} file {show(path)} not found; check the path") from None
    except OSError as exc:
        raise cannot(_os_reason(exc)) from None
    except ValueError:  # an embedded NUL byte
        raise cannot("the path contains a NUL byte") from None
    kind = next((name for test, name in _NODE_KINDS if test(st.st_mode)), None)
    if kind is not None or not stat.S_ISREG(st.st_mode):
        raise cannot(f"it is {kind or 'not a regular file'}; give a regular file")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise cannot(_os_reason(exc)) from None
    with os.fdopen(fd, "rb") as fh:
        now = os.fstat(fd)
        if not stat.S_ISREG(now.st_mode) or (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            raise cannot("it changed while being opened; try again")
        yield fh, now.st_size


# -- recognising formats ------------------------------------------------------------------
class Kind(NamedTuple):
    """A recognised format: ``label`` (a reader's name, or one of the formats below),
    ``what`` it is in words, and the extension gateflow reads it under (None: none)."""

    label: str
    what: str
    ext: str | None


NPY = Kind("npy", "a .npy array", ".npy")  # read as inputs, not as params
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # the second: an empty zip (np.savez of nothing)
_OTHER_MAGIC = (  # formats no params reader takes, named in messages
    (b"\x93NUMPY", NPY),
    (b"\x89HDF\r\n\x1a\n", Kind("hdf5", "an HDF5 file (h5py, Keras)", None)),
    (b"\x1f\x8b", Kind("gzip", "gzip-compressed", None)),
    (b"BZh", Kind("bzip2", "bzip2-compressed", None)),
    (b"\xfd7zXZ\x00", Kind("xz", "xz-compressed", None)),
)
_ZIP = Kind("zip", "a zip archive whose members are not .npy arrays", None)
_BADZIP = Kind("badzip", "a damaged zip archive (its directory is unreadable)", None)
_EMPTY, _TEXT = Kind("empty", "empty", None), Kind("text", "a text file", None)
_UNKNOWN = Kind("unknown", "in a format gateflow does not recognise", None)


def _zip_members(fh: BinaryIO) -> tuple[str, ...] | None:
    """The member names of a zip archive, or None when its directory is unreadable."""
    try:
        with zipfile.ZipFile(fh) as zf:
            return tuple(zf.namelist())
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return None
    finally:
        fh.seek(0)


def recognise(fh: BinaryIO, readers: Iterable[Reader]) -> Kind:
    """The real format of an open file, from its leading bytes: the first of ``readers``
    whose sniff claims it, else a format gateflow knows but does not read as params."""
    head = fh.read(512)
    fh.seek(0)
    if not head:
        return _EMPTY
    members = None
    if head.startswith(_ZIP_MAGIC):
        members = _zip_members(fh)
        if members is None:
            return _BADZIP
    for reader in readers:
        what = reader.sniff(head, members)
        if what:
            return Kind(reader.name, what, reader.extensions[0])
    other = next((kind for magic, kind in _OTHER_MAGIC if head.startswith(magic)), None)
    if other is not None:
        return other
    if members is not None:
        return _ZIP
    text = head.decode("utf-8", "replace")
    if text.count("\ufffd") <= 1 and all(c.isprintable() or c.isspace() or c == "\ufffd"
                                         for c in text):
        return _TEXT
    return _UNKNOWN


def check_format(path: Path, found: Kind, want: Kind, readable: tuple[str, ...],
                 fix: str) -> None:
    """Refuse a file whose real format ``found`` is not the ``want`` its extension promises;
    say to rename it when gateflow reads that format under another extension in
    ``readable``."""
    if found.label == want.label:
        return
    if found.ext in readable:
        raise GateflowError(f"{show(path)} is {found.what}, not {want.what}; rename it to "
                            f"{path.stem}{found.ext}")
    raise GateflowError(f"cannot read {show(path)}: expected {want.what}, but the file is "
                        f"{found.what}; {fix}")


@contextmanager
def parsing(path: Path, ext: str, fix: str) -> Iterator[None]:
    """Turn a parser's own exceptions (BadZipFile, zlib.error, EOFError, ValueError, OSError,
    ...) into one GateflowError line; gateflow's own errors pass through."""
    try:
        yield
    except GateflowError:
        raise
    except Exception as exc:
        raise GateflowError(f"cannot read {show(path)} as {ext}: {one_line(exc, 160)}; "
                            f"{fix}") from None


def fits(path: Path, nbytes: int, count: int, per_element: int = 16) -> None:
    """Refuse reading arrays of ``nbytes`` raw bytes and ``count`` elements (plus
    ``per_element`` bytes each for the converted copies) that would not fit in memory."""
    check_fits(nbytes + per_element * count, f"reading {show(path)}",
               "free some memory or use a smaller file")

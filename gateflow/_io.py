"""Writing outputs safely: nothing lost, nothing half-written.

Every command that writes (``decay``, ``report``, ``sweep``, ``save_params``, the compile
cache) goes through here, so these promises hold everywhere:

* **Only regular files.** gateflow writes to a new path or to an existing *regular* file.
  An existing target that is a folder, a device, a FIFO, a socket or a symbolic link is
  refused (a temporary file renamed over ``/dev/null`` would replace the device node).
* **Nothing replaced unless asked.** An existing file is replaced only with
  ``overwrite=True`` (``--overwrite``); a new file is linked into place with ``os.link``,
  which fails if something appeared there meanwhile, so it never clobbers.
* **All or nothing.** Every payload is rendered first, staged next to its target, and moved
  into place only when all of them are staged; on any failure, or on SIGINT/SIGTERM, the
  staged files are removed and the files this call created are taken back.
* **Folders are replaced only if gateflow wrote them.** A folder gateflow writes carries a
  manifest (:data:`MANIFEST`: every file's name and SHA-256). ``--overwrite`` replaces an
  existing folder only when its content is exactly that manifest; a folder holding anything
  else, the working directory, the home directory, ``/``, any folder above those, and any
  folder holding ``.git`` are always refused.
* **Never over an input.** An output that is one of the run's input files (the same path
  once resolved, or the same inode: a hard or symbolic link, ``./w.pt`` and ``w.pt``) is
  refused, with or without ``--overwrite`` (:func:`refuse_inputs`, ``check_file(...,
  inputs=...)``).
* **stdout.** The path ``-`` (:data:`STDOUT`) writes to standard output.
* Permissions are what ``open`` and ``mkdir`` would give (``mkstemp``/``mkdtemp`` would
  leave 0600/0700), unless a caller forces a mode (the private compile cache).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from gateflow._errors import GateflowError, arg

__all__ = ["MANIFEST", "STDOUT", "check_dir", "check_file", "fresh_dir", "refuse_inputs",
           "staged_dir", "staged_files", "write_files"]

#: The output path that means standard output.
STDOUT = Path("-")
#: The file that marks a folder as gateflow's own and lists what gateflow put there.
MANIFEST = ".gateflow-manifest.json"
_KINDS = ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a folder"))


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


def _reason(exc: OSError) -> str:
    """A one-line, honest reason for an OS error."""
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if exc.errno == errno.ENAMETOOLONG:
        return "file name too long"
    if exc.errno == errno.ENOTDIR:
        return "a part of the path is not a folder"
    if exc.errno == errno.ENOSPC:
        return "no space left on the device"
    if exc.errno == errno.EROFS:
        return "read-only file system"
    return " ".join(str(exc.strerror or exc).split())


def _kind(mode: int) -> str | None:
    """What a non-regular file is ('a FIFO (named pipe)', ...), or None for a regular file."""
    for test, name in _KINDS:
        if test(mode):
            return name
    return None if stat.S_ISREG(mode) else "not a regular file"


def _folder(path: Path) -> Path:
    return path.parent if str(path.parent) else Path(".")


def _lstat(path: Path, what: str) -> os.stat_result | None:
    """``os.lstat(path)``, None if absent; a GateflowError for any other failure."""
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise GateflowError(f"cannot write {what} {str(path)!r}: {_reason(exc)}") from None


def _check_target(path: Path, what: str, overwrite: bool) -> None:
    """Refuse a target that is not new or an existing regular file we may replace."""
    st = _lstat(path, what)
    if st is None:
        return
    kind = _kind(st.st_mode)
    if kind is not None:
        raise GateflowError(f"cannot write {what} {str(path)!r}: it is {kind}; gateflow "
                            "writes only new paths or regular files")
    if not overwrite:
        raise GateflowError(f"{what} {str(path)!r} already exists; pass {arg('overwrite')} to "
                            "replace it or choose another path")


def _same_file(a, b) -> bool:
    """Whether the existing paths ``a`` and ``b`` are one file (device and inode, links
    followed); False when either does not exist or cannot be looked at."""
    try:
        sa, sb = os.stat(a), os.stat(b)
    except (OSError, ValueError):
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def refuse_inputs(path, what: str, inputs: Mapping[str, object] | None) -> None:
    """Refuse to write ``path`` when it is one of the run's input files.

    ``inputs`` maps how each input was given (its parameter, ``arg("weights")``, or words:
    ``"the model"``) to its path (None, empty and ``-`` are skipped). The same file is the
    same inode (links followed: ``./x.npy``, ``x.npy``, a symbolic or hard link to it);
    an output that does not exist yet can replace nothing. Raised whatever ``overwrite``
    says: an input is never an output of the same run."""
    if not inputs or path is None or not str(path).strip() or Path(path) == STDOUT:
        return
    for flag, given in inputs.items():
        if given is None or not str(given).strip() or Path(str(given)) == STDOUT:
            continue
        if _same_file(path, given):
            named = "" if str(given) == str(path) else f" ({str(given)!r})"
            raise GateflowError(f"cannot write {what} {str(path)!r}: it is the {flag} file of "
                                f"this run{named}, and gateflow never writes over its inputs; "
                                "choose another path")


def _unwritable(folder: Path) -> str:
    """Why ``os.access`` refused writing into ``folder``: a read-only file system, or
    permissions."""
    try:
        if os.statvfs(folder).f_flag & getattr(os, "ST_RDONLY", 1):
            return "read-only file system"
    except (OSError, AttributeError):
        pass
    return "permission denied"


def check_file(path, what: str = "output", *, overwrite: bool = False,
               inputs: Mapping[str, object] | None = None) -> Path:
    """An output path that may be written: ``-`` (stdout), a new file in an existing folder,
    or (only with ``overwrite``) an existing regular file that is none of the run's
    ``inputs`` (see :func:`refuse_inputs`). Checked before any work."""
    if path is None or (isinstance(path, str) and not path.strip()):
        raise GateflowError(f"the {what} path is empty; give a file name")
    try:
        raw = os.fspath(path)
        path = Path(path)
    except TypeError:
        raise GateflowError(f"the {what} path must be a string or a path, got "
                            f"{type(path).__name__}") from None
    if path == STDOUT:
        return STDOUT
    if isinstance(raw, str) and raw.endswith(("/", os.sep)):
        raise GateflowError(f"cannot write {what} {raw!r}: it names a folder (trailing "
                            "slash); give a file name")
    folder = _folder(path)
    try:
        st = os.stat(folder)
    except FileNotFoundError:
        raise GateflowError(f"cannot write {what} {str(path)!r}: folder {str(folder)!r} does "
                            "not exist; create it first") from None
    except OSError as exc:
        raise GateflowError(f"cannot write {what} {str(path)!r}: {_reason(exc)}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise GateflowError(f"cannot write {what} {str(path)!r}: {str(folder)!r} is not a folder")
    refuse_inputs(path, what, inputs)
    if not os.access(folder, os.W_OK | os.X_OK):
        raise GateflowError(f"cannot write {what} {str(path)!r}: {_unwritable(folder)} on "
                            f"folder {str(folder)!r}")
    _check_target(path, what, overwrite)
    return path


def write_files(payloads: dict[Path, bytes], *, overwrite: bool = False,
                mode: int | None = None, output: bool = True) -> None:
    """Write every file or none: stage each next to its target, then move them into place
    (:func:`staged_files` with nothing in between)."""
    with staged_files(payloads, overwrite=overwrite, mode=mode, output=output):
        pass


@contextmanager
def staged_files(payloads: dict[Path, bytes], *, overwrite: bool = False,
                 mode: int | None = None, output: bool = True) -> Iterator[None]:
    """Stage every file next to its target on entering (what a full disk or a folder
    without permission makes fail), run the block (a job prints its tables there: what
    is said to be written is written only once everything that can fail has run), then
    write the :data:`STDOUT` payload and move every file into place: all or none.

    A target must be new or, with ``overwrite``, an existing regular file (checked on
    entering and again right before the move). ``mode`` forces the files' permissions
    (0o600 for the private cache), whatever the umask; by default they get what ``open``
    would give. An error or a signal in the block or before the move removes the staged
    files. The moves run :func:`gateflow._interrupt.deferred` (a signal is raised once they
    are done) and, for an ``output`` of the command (not the cache), are recorded
    (:func:`gateflow._interrupt.committed`) so that an interrupted run says what it wrote.
    """
    from gateflow import _interrupt

    stdout = payloads.get(STDOUT)
    files = {Path(p): data for p, data in payloads.items() if Path(p) != STDOUT}
    staged: list[tuple[str, Path]] = []
    created: list[Path] = []
    in_block = False
    try:
        for path, data in files.items():
            _check_target(path, "output", overwrite)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:200]}.", suffix=".tmp",
                                       dir=_folder(path))
            staged.append((tmp, path))
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.chmod(tmp, file_mode(path) if mode is None else mode)
        in_block = True
        yield
        in_block = False
        for _, path in staged:  # every target once more, before the first move
            _check_target(path, "output", overwrite)
        if stdout is not None:  # data to stdout before the files: a closed pipe leaves none
            write_stdout(stdout)
        with _interrupt.deferred():
            for tmp, path in staged:
                if _place(tmp, path, overwrite):
                    created.append(path)
            if output:
                _interrupt.committed(*files)
    except BaseException as exc:
        for tmp, _ in staged:
            _unlink(tmp)
        for path in created:  # ours: created by this call a moment ago
            _unlink(path)
        if isinstance(exc, OSError) and not in_block:  # the block's own errors are its own
            name = exc.filename if isinstance(exc.filename, str) else "output"
            raise GateflowError(f"cannot write {name}: {_reason(exc)}") from None
        raise
    _interrupt.check()  # a signal that came during the moves, now that they are done


def write_stdout(data: bytes) -> None:
    """``data`` to standard output; a closed stdout or a closed pipe is a GateflowError."""
    if sys.stdout is None or getattr(sys.stdout, "closed", False):
        raise GateflowError("standard output is closed; redirect it to a file (or give "
                            f"{arg('json_path')}/{arg('csv_path')} a file name instead of -)")
    try:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    except (BrokenPipeError, ValueError, OSError) as exc:
        why = _reason(exc) if isinstance(exc, OSError) else str(exc)
        raise GateflowError(f"cannot write to standard output ({why})") from None


def _place(tmp: str, path: Path, overwrite: bool) -> bool:
    """Move a staged file to ``path``; True if ``path`` is new. A new path is taken with
    ``os.link`` (fails if it exists: no clobbering); an existing regular one is replaced."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        st = os.lstat(path)
        if not overwrite or _kind(st.st_mode) is not None:
            raise GateflowError(f"{str(path)!r} appeared while gateflow was writing it; "
                                "nothing was replaced") from None
        os.replace(tmp, path)
        return False
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EXDEV, errno.EMLINK, errno.ENOTSUP,
                             errno.EOPNOTSUPP):
            raise
        # a file system without hard links: check, then rename (a short race window)
        new = _lstat(path, "output") is None
        _check_target(path, "output", overwrite)
        os.replace(tmp, path)
        return new
    _unlink(tmp)
    return True


def _unlink(path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


# -- folders ------------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _listing(folder: Path) -> dict[str, str]:
    """Every regular file under ``folder`` (relative path -> SHA-256), manifest excluded."""
    out = {}
    for dirpath, _, filenames in os.walk(folder):
        for name in filenames:
            p = Path(dirpath) / name
            rel = p.relative_to(folder).as_posix()
            if rel != MANIFEST:
                out[rel] = _sha256(p)
    return out


def write_manifest(folder: Path) -> None:
    """Mark ``folder`` as gateflow's: the names and SHA-256 of every file in it."""
    doc = {"written_by": "gateflow", "files": _listing(folder)}
    (folder / MANIFEST).write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")


def _protected(out: Path) -> str | None:
    """Why ``out`` may never be replaced, or None."""
    real = out.resolve()
    here = Path.cwd().resolve()
    home = Path(os.path.expanduser("~")).resolve()
    if real == Path(real.anchor):
        return "it is the file system root"
    if real == here or real in here.parents:
        return "it is (or holds) the working directory"
    if real == home or real in home.parents:
        return "it is (or holds) the home directory"
    if (real / ".git").exists():
        return "it holds .git (a repository)"
    return None


def _foreign(out: Path) -> str | None:
    """Why the existing folder ``out`` is not exactly what gateflow wrote there, or None."""
    try:
        doc = json.loads((out / MANIFEST).read_text())
        files = doc["files"]
        if doc.get("written_by") != "gateflow" or not isinstance(files, dict):
            raise ValueError
    except FileNotFoundError:
        return f"it has no {MANIFEST}, so gateflow did not write it"
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return f"its {MANIFEST} is unreadable"
    folders = {Path(f).parent.as_posix() for f in files} - {"."}
    folders |= {p.as_posix() for f in folders for p in Path(f).parents} - {"."}
    for dirpath, dirnames, filenames in os.walk(out):
        for name in [*dirnames, *filenames]:
            p = Path(dirpath) / name
            rel = p.relative_to(out).as_posix()
            if p.is_symlink() or not (p.is_dir() or p.is_file()):
                return f"it holds {rel!r}, which is not a regular file"
            if p.is_dir() and rel not in folders:
                return f"it holds the folder {rel!r}, which gateflow did not write"
    try:
        have = _listing(out)
    except OSError as exc:
        return f"part of it cannot be read ({_reason(exc)})"
    extra = sorted(set(have) - set(files))
    if extra:
        return f"it holds {extra[0]!r}, which gateflow did not write"
    changed = sorted(k for k in have if have[k] != files[k])
    if changed:
        return f"{changed[0]!r} was changed after gateflow wrote it"
    return None


def out_path(out, what: str = arg("out")) -> Path:
    """An output folder argument as a Path: not empty, and its existing ancestors are
    folders (``f/r`` where ``f`` is a file is refused here, with that reason)."""
    if out is None or not str(out).strip():
        raise GateflowError(f"the {what} path is empty; give a folder name")
    out = Path(out)
    for parent in out.parents:
        try:
            st = os.stat(parent)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise GateflowError(f"cannot use {what} {str(out)!r}: {_reason(exc)}") from None
        if not stat.S_ISDIR(st.st_mode):
            raise GateflowError(f"cannot use {what} {str(out)!r}: {str(parent)!r} is not a "
                                "folder")
        break
    return out


def check_dir(out, overwrite: bool) -> None:
    """Refuse an output folder that may not be (re)written; call before doing any work."""
    out = out_path(out)
    try:
        exists = out.exists() or out.is_symlink()
    except OSError as exc:
        raise GateflowError(f"cannot use output folder {str(out)!r}: {_reason(exc)}") from None
    if not exists:
        return
    if out.is_symlink():
        raise GateflowError(f"refusing to write into {str(out)!r}: it is a symbolic link; "
                            f"choose a new {arg('out')}")
    why = _protected(out)
    if why is not None:
        raise GateflowError(f"refusing to write into {str(out)!r}: {why}; choose a new "
                            f"{arg('out')}")
    if not overwrite:
        raise GateflowError(f"output folder {str(out)!r} already exists; pass "
                            f"{arg('overwrite')} to replace it or choose another {arg('out')}")
    if out.is_symlink() or not out.is_dir():
        raise GateflowError(f"{str(out)!r} exists and is not a folder; "
                            f"remove it or choose another {arg('out')}")
    why = _foreign(out)
    if why is not None:
        raise GateflowError(f"{arg('overwrite')} refused for {str(out)!r}: {why}; gateflow "
                            "replaces only folders it wrote, unchanged; choose another "
                            f"{arg('out')}")


@contextmanager
def staged_dir(out, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty temporary sibling of ``out`` to fill; on success it gets a manifest
    and replaces ``out`` in one rename (a replaced folder is checked again, then removed);
    on failure or a signal it is removed and ``out`` is untouched."""
    out = Path(out)
    check_dir(out, overwrite)
    parent = _folder(out)
    made = [p for p in (parent, *parent.parents) if not p.exists()][::-1]  # outermost first
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name[:200]}.", suffix=".tmp", dir=parent))
    except OSError as exc:
        _remove_empty(made)
        raise GateflowError(f"cannot create {str(out)!r}: {_reason(exc)}") from None
    from gateflow import _interrupt

    old = None
    try:
        yield tmp
        write_manifest(tmp)
        os.chmod(tmp, 0o777 & ~_umask())
        check_dir(out, overwrite)  # again: it may have appeared or changed meanwhile
        with _interrupt.deferred():  # a signal waits for the swap; then it is said done
            if out.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{out.name[:200]}.", suffix=".old",
                                            dir=parent))
                os.replace(out, old / out.name)
                why = _foreign(old / out.name)
                if why is not None:  # changed in the last moment: put it back, untouched
                    os.replace(old / out.name, out)
                    raise GateflowError(f"{arg('overwrite')} refused for {str(out)!r}: {why}")
            os.replace(tmp, out)
            _interrupt.committed(out)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not out.exists() and (old / out.name).exists():
            os.replace(old / out.name, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        _remove_empty(made)
        if isinstance(exc, OSError):
            raise GateflowError(f"cannot write {str(out)!r}: {_reason(exc)}") from None
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)  # verified above: only gateflow's files
    _interrupt.check()  # a signal that came during the swap, now that it is done


def _remove_empty(folders: list[Path]) -> None:
    """Remove the folders this call created for its output (innermost first), if empty."""
    for folder in reversed(folders):
        try:
            folder.rmdir()
        except OSError:
            return


def fresh_dir(root, name: str) -> Path:
    """``root/name``, or ``root/name-2``, ``-3``, … if taken: running twice just works."""
    root = Path(root)
    path, k = root / name, 2
    while path.exists() or path.is_symlink():
        path, k = root / f"{name}-{k}", k + 1
    return path

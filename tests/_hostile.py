"""The harness of the hostile-input suite (``tests/test_hostile_*.py``).

Every case asserts the same four things: exit status 2 (or a ``GateflowError`` from the
API), exactly one line on stderr that starts with ``error:``, no traceback, and every file
that existed before the call byte-identical afterwards (same bytes, same mode, nothing
removed, and only the files the case allows added).

Tests never touch real system paths: device nodes, FIFOs and fake homes are made inside the
test's own temporary folder (:func:`make_node`, the ``sandbox`` fixture).
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from typer.testing import CliRunner

from gateflow.cli import app

_runner = CliRunner()


@dataclass(frozen=True)
class Outcome:
    exit_code: int
    stdout: str
    stderr: str
    exception: BaseException | None = None


def run_cli(*args) -> Outcome:
    """``gateflow ARGS`` in this process (stdout and stderr apart)."""
    r = _runner.invoke(app, [str(a) for a in args])
    exc = r.exception if not isinstance(r.exception, SystemExit) else None
    return Outcome(r.exit_code, r.stdout, r.stderr, exc)


#: Run as root without the capabilities that bypass file permissions (CAP_DAC_*), so that
#: chmod 000 stops the child as it would stop an ordinary user.
_NO_DAC = ["setpriv", "--inh-caps=-dac_override,-dac_read_search",
           "--bounding-set=-dac_override,-dac_read_search", "--"]


def run_subprocess(*args, cwd=None, env=None, user: str | None = None,
                   timeout: float = 120) -> Outcome:
    """``gateflow ARGS`` in a child process; ``user`` from :func:`unprivileged_user` makes
    file permissions bind it."""
    cmd = [sys.executable, "-c", "from gateflow.cli import app; app(prog_name='gateflow')",
           *map(str, args)]
    if user == "root-without-dac":
        cmd = _NO_DAC + cmd
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                       stdin=subprocess.DEVNULL)
    return Outcome(p.returncode, p.stdout, p.stderr)


def assert_clean_error(out: Outcome, match: str | None = None) -> str:
    """Exit 2, exactly one ``error:`` line on stderr, no traceback; return the message."""
    assert out.exception is None, f"raised {out.exception!r}"
    assert "Traceback" not in out.stderr + out.stdout, out.stderr
    lines = out.stderr.splitlines()
    assert out.exit_code == 2, (out.exit_code, out.stderr, out.stdout)
    assert len(lines) == 1, f"stderr has {len(lines)} lines: {out.stderr!r}"
    assert lines[0].startswith("error: "), lines[0]
    if match is not None:
        import re

        assert re.search(match, lines[0]), f"{match!r} not in {lines[0]!r}"
    return lines[0]


def snapshot(root) -> dict[str, tuple]:
    """Every entry under ``root`` (not following links): kind, mode and, for files, bytes."""
    root = Path(root)
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in [*dirnames, *filenames]:
            p = Path(dirpath) / name
            st = os.lstat(p)
            rel = str(p.relative_to(root))
            if stat.S_ISREG(st.st_mode):
                try:
                    data = p.read_bytes()
                except OSError:
                    data = None
                out[rel] = ("file", st.st_mode, data)
            elif stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", st.st_mode, os.readlink(p))
            else:
                out[rel] = ("other", st.st_mode, st.st_rdev)
    return out


def assert_unchanged(before: dict, after: dict, allow_new=()) -> None:
    """Nothing that existed changed or vanished; nothing new beyond ``allow_new``."""
    changed = [k for k in before if after.get(k) != before[k]]
    assert not changed, f"changed or removed: {changed}"
    new = sorted(set(after) - set(before) - set(allow_new))
    assert not new, f"unexpected new entries: {new}"


def make_node(path: Path, kind: str = "char") -> Path:
    """A device node (``char``: like /dev/null) where permitted, else a FIFO, at ``path``."""
    if kind == "fifo":
        os.mkfifo(path)
        return path
    try:
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    except (PermissionError, OSError):
        os.mkfifo(path)
    return path


def unprivileged_user() -> str | None:
    """How to run permission cases so that permissions bind: ``"self"`` when the suite is
    not root, ``"root-without-dac"`` as root where ``setpriv`` can drop CAP_DAC_OVERRIDE and
    CAP_DAC_READ_SEARCH, else None (skip)."""
    if os.geteuid() != 0:
        return "self"
    try:
        probe = subprocess.run([*_NO_DAC, sys.executable, "-c", "import gateflow.cli"],
                               capture_output=True, stdin=subprocess.DEVNULL, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return "root-without-dac" if probe.returncode == 0 else None

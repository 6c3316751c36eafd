"""The memory budget: the smallest of MemAvailable, the cgroup limit and RLIMIT_AS."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import pytest

import gateflow._memory as memory
from gateflow import GateflowError


def _cgroup(tmp_path: Path, v2: bool, limit: str, used: str) -> tuple[Path, Path]:
    root = tmp_path / "sys-fs-cgroup"
    proc = tmp_path / "proc-self-cgroup"
    if v2:
        folder = root / "user.slice" / "job"
        folder.mkdir(parents=True)
        (folder / "memory.max").write_text(limit + "\n")
        (folder / "memory.current").write_text(used + "\n")
        proc.write_text("0::/user.slice/job\n")
    else:
        folder = root / "memory" / "docker" / "abc"
        folder.mkdir(parents=True)
        (folder / "memory.limit_in_bytes").write_text(limit + "\n")
        (folder / "memory.usage_in_bytes").write_text(used + "\n")
        proc.write_text("12:cpu,cpuacct:/docker/abc\n4:memory:/docker/abc\n")
    return root, proc


@pytest.mark.parametrize("v2", [True, False])
def test_cgroup_limit_minus_usage(tmp_path, v2):
    root, proc = _cgroup(tmp_path, v2, str(3 << 30), str(1 << 30))
    assert memory._cgroup_left(root, proc) == 2 << 30


@pytest.mark.parametrize("v2", [True, False])
@pytest.mark.parametrize("limit", ["max", str(1 << 63), "", "garbage"])
def test_unlimited_or_unreadable_cgroup_is_no_limit(tmp_path, v2, limit):
    root, proc = _cgroup(tmp_path, v2, limit, "5")
    assert memory._cgroup_left(root, proc) is None


def test_no_cgroup_file(tmp_path):
    assert memory._cgroup_left(tmp_path, tmp_path / "absent") is None


def test_budget_is_the_smallest(monkeypatch):
    monkeypatch.setattr(memory, "_meminfo", lambda: 8 << 30)
    monkeypatch.setattr(memory, "_cgroup_left", lambda: 3 << 30)
    monkeypatch.setattr(memory, "_rlimit_left", lambda: 5 << 30)
    assert memory.host_available() == 3 << 30
    monkeypatch.setattr(memory, "_rlimit_left", lambda: 1 << 30)
    assert memory.host_available() == 1 << 30
    with pytest.raises(GateflowError, match=r"needs about 1\.0 GiB but only 1\.0 GiB is free"):
        memory.check_fits(1 << 30)
    memory.check_fits(int(0.79 * (1 << 30)))  # within FRACTION of the budget


def _limited(limit: int):
    def set_limit():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    return set_limit


def test_ulimit_v_is_honoured_by_the_cli(tmp_path):
    """Under ``ulimit -v`` 3 GiB, a run of about 5 GiB is refused up front (no MemoryError)."""
    code = ("from gateflow.cli import app; app(prog_name='gateflow')")
    p = subprocess.run([sys.executable, "-c", code, "decay", "--cell", "rnn", "--hidden", "2",
                        "--input-size", "1", "--steps", "20000000", "--batch", "4",
                        "--norms", "frobenius", "-q"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120,
                       stdin=subprocess.DEVNULL, preexec_fn=_limited(3 << 30))
    assert p.returncode == 2, p.stderr
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: this run needs about"), p.stderr
    free = float(lines[0].split("only ")[1].split(" GiB")[0])
    assert free <= 3.0
    assert list(tmp_path.iterdir()) == []

"""The memory budget: the smallest of psutil's available memory, the cgroup limit and
RLIMIT_AS. No test reads the real /sys or /proc/self/cgroup: cgroups are fake trees in
tmp_path, and psutil's figure is replaced."""

from __future__ import annotations

import resource
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import psutil
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
    monkeypatch.setattr(memory, "_host_free", lambda: 8 << 30)
    monkeypatch.setattr(memory, "_cgroup_left", lambda: 3 << 30)
    monkeypatch.setattr(memory, "_rlimit_left", lambda: 5 << 30)
    assert memory.host_available() == 3 << 30
    monkeypatch.setattr(memory, "_rlimit_left", lambda: 1 << 30)
    assert memory.host_available() == 1 << 30
    with pytest.raises(GateflowError, match=r"needs about 1\.0 GiB but only 1\.0 GiB is free"):
        memory.check_fits(1 << 30)
    memory.check_fits(int(0.79 * (1 << 30)))  # within FRACTION of the budget


#: psutil's answer with every field distinct, so that reading the wrong one shows.
_VM = namedtuple("_VM", "total available percent used free")


def _fake_host(monkeypatch, tmp_path, available: int, cgroup: tuple[str, str] | None):
    """psutil reporting ``available`` bytes (and other figures in its other fields), the
    cgroup a fake v2 tree in tmp_path (``(limit, used)``, or none at all), no RLIMIT_AS."""
    monkeypatch.setattr(psutil, "virtual_memory", lambda: _VM(
        total=64 << 30, available=available, percent=50.0, used=7 << 30, free=1 << 20))
    if cgroup is None:
        root, proc = tmp_path / "no-cgroup", tmp_path / "no-proc-self-cgroup"
    else:
        root, proc = _cgroup(tmp_path, True, *cgroup)
    monkeypatch.setattr(memory, "_CGROUP_ROOT", root)
    monkeypatch.setattr(memory, "_PROC_CGROUP", proc)
    monkeypatch.setattr(memory, "_rlimit_left", lambda: None)


def test_host_memory_is_psutils_available(monkeypatch, tmp_path):
    """The host's figure is psutil's ``available`` (not ``free``, ``total`` or ``used``)."""
    _fake_host(monkeypatch, tmp_path, 5 << 30, None)
    assert memory.host_available() == 5 << 30
    with pytest.raises(GateflowError, match=r"needs about 4\.5 GiB but only 5\.0 GiB is free"):
        memory.check_fits(int(4.5 * (1 << 30)))


def test_a_cgroup_smaller_than_the_host_is_the_budget(monkeypatch, tmp_path):
    """A container's limit (3 GiB, 1 GiB used) under a host with 20 GiB available: the
    budget is what the cgroup leaves, read from the (fake) cgroup files."""
    _fake_host(monkeypatch, tmp_path, 20 << 30, (str(3 << 30), str(1 << 30)))
    assert memory.host_available() == 2 << 30
    with pytest.raises(GateflowError, match=r"only 2\.0 GiB is free"):
        memory.check_fits(2 << 30)
    # and the other way round: the host has less than the cgroup allows
    _fake_host(monkeypatch, tmp_path / "b", 1 << 30, (str(8 << 30), "0"))
    assert memory.host_available() == 1 << 30


def test_psutil_failing_falls_back_to_sysconf(monkeypatch, tmp_path):
    _fake_host(monkeypatch, tmp_path, 0, None)

    def broken():
        raise FileNotFoundError("/proc/meminfo")

    monkeypatch.setattr(psutil, "virtual_memory", broken)
    monkeypatch.setattr(memory.os, "sysconf", {"SC_AVPHYS_PAGES": 1000,
                                               "SC_PAGE_SIZE": 4096}.__getitem__)
    assert memory.host_available() == 4096 * 1000


def test_rlimit_left_is_the_limit_minus_psutils_vms(monkeypatch):
    class Process:
        def memory_info(self):
            return namedtuple("M", "rss vms")(rss=1 << 20, vms=3 << 30)

    monkeypatch.setattr(psutil, "Process", Process)
    monkeypatch.setattr(memory.resource, "getrlimit", lambda which: (5 << 30, 5 << 30))
    assert memory._rlimit_left() == 2 << 30
    monkeypatch.setattr(memory.resource, "getrlimit",
                        lambda which: (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    assert memory._rlimit_left() is None


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

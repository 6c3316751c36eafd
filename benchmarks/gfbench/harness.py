"""How things are timed: fresh processes, their own peak memory, best of N, BLAS threads,
and the machine they ran on.

* :func:`run_child` runs one command and measures its wall time from outside; under
  :mod:`gfbench.peak` the child also reports its own peak memory (VmHWM). A child that
  runs past its timeout is killed.
* :func:`timed_best` runs a contender program up to ``repeats`` times (not again after a run
  slower than ``slow`` seconds) and keeps the best time and the largest peak.
* :func:`best_time` does the same for a function in this process, after a warm-up call.
* In-process timings use the BLAS library's default threads (all cores), as every
  contender does (:func:`default_blas_threads`, :func:`blas_threads`).
* On a shared machine timings are noisy: every time is a best of repeats, and the load
  average is recorded at the start and the end of the run (:func:`machine`,
  :func:`load_average`) so the report says how quiet the machine was.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import numpy as np

import gateflow as gf
from gfbench.results import ChildRun, Failed, Machine, PeerStatus, Timing

BENCH = Path(__file__).resolve().parent.parent  # benchmarks/
ROOT = BENCH.parent  # the checkout: children import this gateflow
PEAK = Path(__file__).resolve().parent / "peak.py"

R = TypeVar("R")


def log(msg: str) -> None:
    """Progress, on stderr (stdout carries the tables)."""
    print(msg, file=sys.stderr, flush=True)


def fmt_s(x: float | None) -> str:
    """Seconds as the report prints them (—: not measured)."""
    if x is None:
        return "—"
    return f"{x:.1f}" if x >= 10 else f"{x:.3f}" if x >= 0.01 else f"{x:.2e}"


# --------------------------------------------------------------------------- fresh processes


def run_child(cmd: list[str], timeout: float, hwm: Path | None = None) -> ChildRun:
    """Run ``cmd`` in the checkout; its wall time, exit code, peak memory (MiB), output.

    With ``hwm``, the child (run under :mod:`gfbench.peak`) writes its VmHWM (KiB) there at
    exit; that is its own peak. Otherwise, or if it did not, ``ru_maxrss`` from ``os.wait4``
    is used (an upper bound: on Linux it includes this harness's peak, see gfbench.peak)."""
    env = dict(os.environ)
    if hwm is not None:
        env["GATEFLOW_BENCH_HWM"] = str(hwm)
        hwm.unlink(missing_ok=True)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=str(ROOT), env=env)
        done, killed = threading.Event(), threading.Event()

        def _kill():
            if not done.is_set():
                killed.set()
                try:
                    os.kill(p.pid, 9)
                except ProcessLookupError:
                    pass

        timer = threading.Timer(timeout, _kill)
        timer.start()
        try:
            _, status, ru = os.wait4(p.pid, 0)
        finally:
            done.set()
            timer.cancel()
        wall = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
    rss = ru.ru_maxrss / (1024.0 * 1024.0) if sys.platform == "darwin" else ru.ru_maxrss / 1024.0
    rss_how = "ru_maxrss"
    if hwm is not None and hwm.exists():
        try:
            rss, rss_how = int(hwm.read_text()) / 1024.0, "VmHWM"
        except ValueError:
            pass
    return ChildRun(rc=p.returncode, wall=wall, rss_mib=rss, rss_how=rss_how, stdout=stdout,
                    stderr=stderr, timed_out=killed.is_set())


def check_import(module: str) -> PeerStatus:
    """Whether ``module`` imports in a fresh interpreter: its version, or why not."""
    r = run_child([sys.executable, "-c", f"import {module}; print({module}.__version__)"],
                  timeout=300)
    if r.rc == 0:
        return PeerStatus(module, r.stdout.strip().splitlines()[-1])
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    return PeerStatus(module, None, lines[-1][:120] if lines else "import failed")


def timed_best(cmd: list[str], out: Path, repeats: int, slow: float,
               timeout: float) -> Timing | Failed:
    """Best wall time of ``cmd`` (``[python, script, args...]``, run under gfbench.peak) over
    up to ``repeats`` runs, the largest peak memory, and the result it saved to ``out``."""
    cmd = [cmd[0], str(PEAK), *cmd[1:]]
    hwm = out.with_suffix(".hwm")
    best: ChildRun | None = None
    rss = 0.0
    runs = 0
    for _ in range(max(1, repeats)):
        out.unlink(missing_ok=True)
        r = run_child(cmd, timeout, hwm)
        runs += 1
        if r.rc != 0 or not out.exists():
            if best is None:
                return Failed(r.why)
            break
        if best is None or r.wall < best.wall:
            best = r
        rss = max(rss, r.rss_mib)
        if r.wall > slow:
            break
    return Timing(wall=best.wall, rss_mib=rss, rss_how=best.rss_how, runs=runs,
                  result=np.load(out))


# --------------------------------------------------------------------------- in process


def best_time(fn: Callable[[], R], repeats: int, warm_up: bool = True) -> tuple[float, R]:
    """Best wall time of ``fn()`` over ``repeats`` calls (after one untimed warm-up call:
    derivation and compilation are cached after it), and the last call's value."""
    value = fn() if warm_up else None
    best = float("inf")
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - t0)
    return best, value


def stopwatch(fn: Callable[[], R]) -> tuple[float, R]:
    """Wall time of one call of ``fn()`` and its value."""
    t0 = time.perf_counter()
    value = fn()
    return time.perf_counter() - t0, value


@contextmanager
def default_blas_threads() -> Iterator[None]:
    """The BLAS library's own threading (all cores): what every contender uses. The one
    place to pin threads (threadpoolctl) if a run ever should."""
    yield


def blas_threads() -> int:
    """Threads the BLAS library numpy uses will run with."""
    from threadpoolctl import threadpool_info

    return max((p.get("num_threads") or 1 for p in threadpool_info()
                if p.get("user_api") == "blas"), default=1)


# --------------------------------------------------------------------------- the machine


def load_average() -> tuple[float, float, float] | None:
    try:
        return os.getloadavg()
    except OSError:
        return None


def _proc_line(path: str, prefix: str) -> str | None:
    try:
        with open(path) as fh:
            return next((ln for ln in fh if ln.startswith(prefix)), None)
    except OSError:
        return None


def machine() -> Machine:
    """The machine, its BLAS, the versions, and the load average now."""
    model = _proc_line("/proc/cpuinfo", "model name")
    mem = _proc_line("/proc/meminfo", "MemTotal:")
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    try:
        from threadpoolctl import threadpool_info

        blas = "; ".join(
            f"{p.get('internal_api')} {p.get('version') or ''} ({p.get('architecture') or '?'}, "
            f"{p.get('threading_layer') or p.get('user_api')}, {p.get('num_threads')} threads)"
            for p in threadpool_info() if p.get("user_api") == "blas") or "none found"
        threads = blas_threads()
    except Exception as exc:  # threadpoolctl missing or broken: say so, do not fail
        blas, threads = f"unknown ({exc})", 1
    return Machine(
        python=platform.python_version(), platform=platform.platform(),
        cpu=model.split(":", 1)[1].strip() if model else (platform.processor() or "unknown"),
        cores=os.cpu_count(), cores_usable=usable,
        memory_gib=int(mem.split()[1]) / 2**20 if mem else None,
        blas=blas, blas_threads=threads, numpy=np.__version__, gateflow=gf.__version__,
        load=load_average())

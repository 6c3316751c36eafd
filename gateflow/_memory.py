"""How much memory a run may use, and the one check every job makes before allocating.

The budget is the smallest of what the host has free (psutil's ``available``: the kernel's
``MemAvailable``), what the process's cgroup still allows (``memory.max`` −
``memory.current`` in cgroup v2, ``memory.limit_in_bytes`` − ``memory.usage_in_bytes`` in
v1: read here, since psutil does not read cgroups) and what ``RLIMIT_AS`` leaves of the
address space. On a
GPU it is the device's free memory plus what CuPy's pool holds unused. A run is refused when
its estimate exceeds :data:`FRACTION` of that budget, with one line that says how to shrink it.
"""

from __future__ import annotations

import os
import resource
from pathlib import Path

from gateflow._errors import GateflowError

__all__ = ["FRACTION", "available_memory", "check_fits", "host_available"]

#: Share of the available memory a run may plan to use (the rest is headroom for the
#: interpreter, libraries and estimation error).
FRACTION = 0.8
_UNLIMITED = 1 << 62
#: Where the process's cgroup is found (module constants, so that tests point them at a
#: fake hierarchy).
_CGROUP_ROOT = Path("/sys/fs/cgroup")
_PROC_CGROUP = Path("/proc/self/cgroup")


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except (OSError, ValueError):
        return None
    if not text or text == "max":
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _host_free() -> int | None:
    """What the host can still give without swapping (psutil's ``available``); where psutil
    cannot tell (no ``/proc``), the free pages ``sysconf`` counts; None when neither can."""
    import psutil  # here, not at import: the command line's start-up stays light

    try:
        return int(psutil.virtual_memory().available)
    except (OSError, RuntimeError, ValueError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return None


def _cgroup_left(root: Path | None = None, proc: Path | None = None) -> int | None:
    """Bytes the process's memory cgroup still allows (v2 or v1), or None if unlimited.

    Read here by hand: psutil reports the host's memory, not a container's limit (a job
    under ``docker --memory 2g`` on a 64 GB host sees 64 GB there)."""
    root = _CGROUP_ROOT if root is None else root
    proc = _PROC_CGROUP if proc is None else proc
    try:
        lines = proc.read_text().splitlines()
    except OSError:
        return None
    best = None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, rel = parts
        rel = rel.lstrip("/")
        if controllers == "":  # v2 unified hierarchy
            limit = _read_int(root / rel / "memory.max")
            used = _read_int(root / rel / "memory.current") or 0
        elif "memory" in controllers.split(","):  # v1
            limit = _read_int(root / "memory" / rel / "memory.limit_in_bytes")
            if limit is None:
                limit = _read_int(root / "memory" / "memory.limit_in_bytes")
            used = _read_int(root / "memory" / rel / "memory.usage_in_bytes") or 0
        else:
            continue
        if limit is None or limit >= _UNLIMITED:
            continue
        left = max(0, limit - used)
        best = left if best is None else min(best, left)
    return best


def _rlimit_left() -> int | None:
    """Address space ``RLIMIT_AS`` still leaves this process, or None if unlimited: the
    limit from the standard library's :mod:`resource`, the space in use from psutil
    (``vms``)."""
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    except (ValueError, OSError):
        return None
    if soft == resource.RLIM_INFINITY or soft < 0:
        return None
    import psutil

    try:
        used = int(psutil.Process().memory_info().vms)
    except (OSError, psutil.Error):
        used = 0
    return max(0, soft - used)


def host_available() -> int:
    """Bytes this process may still allocate on the host: the smallest of what the host has
    available (psutil), what the cgroup still allows and what ``RLIMIT_AS`` leaves."""
    found = [v for v in (_host_free(), _cgroup_left(), _rlimit_left()) if v is not None]
    return min(found, default=_UNLIMITED)


def available_memory(backend: str = "numpy") -> int:
    """Bytes a run may use: :func:`host_available`, or the GPU's free memory for ``cupy``."""
    if backend == "cupy":
        import cupy

        # free on the device plus what CuPy's pool holds but does not use
        return int(cupy.cuda.runtime.memGetInfo()[0]) + cupy.get_default_memory_pool().free_bytes()
    return host_available()


def check_fits(need: int, what: str = "this run", fix: str = "use fewer steps (T), a smaller "
               "batch (B), fewer blocks, or float32", backend: str = "numpy") -> None:
    """Raise :class:`GateflowError` if ``need`` bytes exceed FRACTION of what is available."""
    have = available_memory(backend)
    if need > FRACTION * have:
        raise GateflowError(f"{what} needs about {_gib(need)} but only {_gib(have)} is free; {fix}")


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**28 else f"{n / 2**20:.0f} MiB"

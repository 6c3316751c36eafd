"""Run a Python script and record its own peak memory at exit.

    python peak.py SCRIPT [ARGS ...]    (with GATEFLOW_BENCH_HWM=FILE in the environment)

The harness runs every contender under this wrapper. At exit it writes the process's VmHWM
(KiB: the high-water mark of its own address space) to ``$GATEFLOW_BENCH_HWM``.
``ru_maxrss`` from ``wait4`` is not used where VmHWM is available: Linux carries the
parent's high-water mark over exec into the child's ru_maxrss (subprocess spawns with
vfork), so a child of a 300 MiB parent reports >= 300 MiB even if it uses 9.

Standard library only, and nothing imported before the script runs but what it needs:
whatever this wrapper loads counts in every contender's peak.
"""

import atexit
import os
import runpy
import sys


def _record_peak():
    path = os.environ.get("GATEFLOW_BENCH_HWM")
    if not path:
        return
    try:
        with open("/proc/self/status") as fh:
            kib = next(int(ln.split()[1]) for ln in fh if ln.startswith("VmHWM:"))
        # A scratch file in the harness's private temporary folder, read once by the
        # harness; written plainly (not through gateflow._io) so that this wrapper imports
        # nothing that would count in the contender's peak.
        with open(path, "w") as fh:
            fh.write(str(kib))
    except (OSError, StopIteration, ValueError):
        pass


if __name__ == "__main__":
    atexit.register(_record_peak)
    script = sys.argv[1]
    sys.argv = sys.argv[1:]
    sys.path[0] = os.path.dirname(os.path.abspath(script))
    runpy.run_path(script, run_name="__main__")

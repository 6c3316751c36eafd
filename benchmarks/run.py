"""Benchmark gateflow against JAX, PyTorch and the BLAS ceiling, in one command.

The job (issue 5): ``log10 ‖∂c_T/∂c_{T−k}‖_F`` for every lag k = 1..T of a single-layer
LSTM in float64 (block ``c/c``, Frobenius norm only, lag k at index k−1)::

    python benchmarks/run.py                       # full run, writes reports/benchmarks.md
    python benchmarks/run.py --quick --out /tmp/b.md   # tiny sizes, seconds
    python benchmarks/run.py --gpu-only --out reports/benchmarks-gpu.md

For every size n the weights (``init_params``, PyTorch init) and inputs (``make_inputs``)
are generated once and saved to a temporary folder (weights as ``.npz`` in PyTorch names,
inputs as ``.npy``); every contender reads the same two files.

* **End to end**: each contender is a fresh subprocess (interpreter start, imports, SymPy
  derivation / JAX tracing and compilation, file reading, the job, writing the (T, B)
  result to ``.npy``); wall time measured from outside, best of ``--repeats`` (a contender
  whose run takes longer than ``--slow`` seconds is not repeated). Peak memory is the
  child's own VmHWM, recorded at exit by a small wrapper the child runs under (not
  ``ru_maxrss``, which on Linux includes this harness's peak; see ``WRAPPER``; it is
  the fallback where /proc is missing). gateflow runs through a tiny runner script
  calling ``load_params``/``load_inputs``/``all_lags``; JAX and PyTorch through
  ``benchmarks/peers.py --peer jax|torch``.
* **Kernel**: gateflow's ``all_lags`` in this process after a warm-up call, best of
  ``--repeats`` (the BLAS library's default threads, as in every contender).
* **BLAS ceiling**: the GEMMs the kernel performs and nothing else: per LSTM step two
  batched GEMMs (B, n, n) @ (B, n, n), i.e. 4·B·n³ flops per step, T steps, the BLAS library's
  default threads, best of ``--repeats``. Also shown: the "stacked" alternative,
  one (B·n × 4n) @ (4n × n) GEMM per step (8·B·n³ flops), which a kernel that does not
  form K_t = Σ_j diag(coef_j) U_j would need.

All contenders must agree: max |Δ log10 norm| ≤ 1e−8. Peers that are not installed are
reported as skipped. The report is written atomically.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PEERS_PY = HERE / "peers.py"
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

CELL = "lstm"
TOL = 1e-8  # agreement of log10 norms between contenders
GPU_TOL = 1e-10  # numpy vs cupy, float64
DEFAULT_SIZES = "32,128,256,512"
# (B, T) per n: the two reference points of the issue are (128, 16, 100) and (256, 8, 200);
# n = 512 is kept small so that the whole run stays within minutes on a small machine.
SHAPES = {8: (4, 50), 16: (4, 50), 32: (32, 200), 64: (32, 200), 128: (16, 100),
          256: (8, 200), 512: (2, 50)}
MEM_ROW = (128, 4, 4000)  # n, B, T: target peak RSS < 400 MB
MEM_TARGET_MB = 400
GPU_SHAPE = (1024, 64, 256)
GPU_CPU_STEPS = 16  # the CPU reference at GPU_SHAPE runs this many steps, then is scaled

# Every child runs under this wrapper, which records the child's own peak RSS (VmHWM of its
# address space) at exit. ru_maxrss from wait4 is not used when VmHWM is available: Linux
# carries the parent's high-water mark over exec into the child's ru_maxrss (subprocess
# spawns with vfork), so a child of a 300 MiB parent reports >= 300 MiB even if it uses 9.
WRAPPER = r'''
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
        with open(path, "w") as fh:
            fh.write(str(kib))
    except (OSError, StopIteration, ValueError):
        pass


atexit.register(_record_peak)
script = sys.argv[1]
sys.argv = sys.argv[1:]
sys.path[0] = os.path.dirname(os.path.abspath(script))
runpy.run_path(script, run_name="__main__")
'''

RUNNER = r'''
import sys
import numpy as np
from gateflow.numeric._chain import all_lags
from gateflow.models._params import load_inputs, load_params

weights, inputs, out, dtype, backend = sys.argv[1:6]
params = load_params(weights, "lstm", dtype=dtype)
x = load_inputs(inputs, dtype=dtype)
res = all_lags("lstm", params, x, blocks=("c/c",), norms=("frobenius",), dtype=dtype,
               backend=backend)
np.save(out, res.blocks["c/c"]["log10_frobenius"])
'''


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- children


def run_child(cmd: list[str], timeout: float, hwm: Path | None = None) -> dict:
    """Run ``cmd``; wall time, exit code, peak RSS (MiB) of the child, its output.

    With ``hwm``, the child is expected to write its VmHWM (KiB) there at exit (see
    :data:`WRAPPER`); that is its peak RSS. Otherwise, or if it did not, ``ru_maxrss`` from
    ``os.wait4`` is used (an upper bound: it includes the parent's peak, see WRAPPER)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        env = dict(os.environ)
        if hwm is not None:
            env["GATEFLOW_BENCH_HWM"] = str(hwm)
            if hwm.exists():
                hwm.unlink()
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=str(ROOT), env=env)
        done = threading.Event()
        killed = threading.Event()

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
    return {"rc": p.returncode, "wall": wall, "rss_mb": rss, "rss_how": rss_how,
            "stdout": stdout, "stderr": stderr, "timed_out": killed.is_set()}


def _why(r: dict) -> str:
    if r["timed_out"]:
        return "timed out"
    lines = [ln for ln in r["stderr"].strip().splitlines() if ln.strip()]
    return f"failed (rc={r['rc']}): {lines[-1][:160] if lines else 'no message'}"


def check_import(module: str) -> tuple[str | None, str | None]:
    """(version, None) if ``module`` imports in a fresh interpreter, else (None, reason)."""
    code = f"import {module}; print({module}.__version__)"
    r = run_child([sys.executable, "-c", code], timeout=300)
    if r["rc"] == 0:
        return r["stdout"].strip().splitlines()[-1], None
    lines = [ln for ln in r["stderr"].strip().splitlines() if ln.strip()]
    return None, (lines[-1][:120] if lines else "import failed")


def timed_best(cmd: list[str], out: Path, repeats: int, slow: float, timeout: float) -> dict:
    """Best wall time of ``cmd`` (a script and its arguments, run under :data:`WRAPPER`)
    over up to ``repeats`` runs; the result read from ``out``; the largest peak RSS."""
    best = None
    runs = 0
    wrapper = out.parent / "gateflow_bench_wrapper.py"
    hwm = out.with_suffix(".hwm")
    cmd = [cmd[0], str(wrapper), *cmd[1:]]
    for _ in range(max(1, repeats)):
        if out.exists():
            out.unlink()
        r = run_child(cmd, timeout, hwm)
        runs += 1
        if r["rc"] != 0 or not out.exists():
            if best is None:
                return {"ok": False, "why": _why(r)}
            break
        if best is None or r["wall"] < best["wall"]:
            best = dict(r)
        best["rss_mb"] = max(best["rss_mb"], r["rss_mb"])
        if r["wall"] > slow:
            break
    best.update(ok=True, runs=runs, L=np.load(out))
    return best


# ----------------------------------------------------------------------------- in process


def _blas_default_threads():
    """The BLAS library's own threading (all cores): what every contender uses."""
    from contextlib import nullcontext

    return nullcontext()


def blas_threads() -> int:
    from threadpoolctl import threadpool_info

    return max((p.get("num_threads") or 1 for p in threadpool_info()
                if p.get("user_api") == "blas"), default=1)


def _gemm_buffers(n: int, B: int, dtype):
    rng = np.random.default_rng(0)
    dt = np.dtype(dtype)
    dense = [rng.standard_normal((B, n, n)).astype(dt) for _ in range(3)]
    dense += [np.empty((B, n, n), dt), np.empty((B, n, n), dt)]
    stacked = [rng.standard_normal((B * n, 4 * n)).astype(dt),
               rng.standard_normal((4 * n, n)).astype(dt), np.empty((B * n, n), dt)]
    return dense, stacked


def _time_dense(bufs, T: int) -> float:
    a1, a2, k, o1, o2 = bufs
    t0 = time.perf_counter()
    for _t in range(T):
        np.matmul(a1, k, out=o1)
        np.matmul(a2, k, out=o2)
    return time.perf_counter() - t0


def _time_stacked(bufs, T: int) -> float:
    a, w, o = bufs
    t0 = time.perf_counter()
    for _t in range(T):
        np.matmul(a, w, out=o)
    return time.perf_counter() - t0


def kernel_and_ceiling(params: dict, x: np.ndarray, repeats: int, dtype="float64"):
    """gateflow's ``all_lags`` in this process and the BLAS ceiling, interleaved.

    Each repeat times the kernel, then exactly the kernel's GEMMs (2 × (B, n, n) @ (B, n, n)
    per step, T steps), then the stacked alternative ((B·n × 4n) @ (4n × n) per step), all
    with the BLAS library's default threads, as the kernel uses; best of each.
    Interleaving makes kernel and ceiling see the same machine load, so their ratio is
    steadier than either time."""
    from gateflow.numeric._chain import all_lags

    T, B, _ = x.shape
    n = next(v for k, v in params.items() if k.startswith("U_")).shape[0]
    dense, stacked = _gemm_buffers(n, B, dtype)

    def once():
        r = all_lags(CELL, params, x, blocks=("c/c",), norms=("frobenius",), dtype=dtype)
        return r.blocks["c/c"]["log10_frobenius"]

    try:
        L = once()  # warm-up: derivation and compilation are cached after this
    except Exception as exc:  # report gateflow failing, keep measuring the rest
        L, once = None, None
        log(f"      gateflow failed in process: {type(exc).__name__}: {exc}")
    best_k = best_d = best_s = float("inf")
    with _blas_default_threads():
        _time_dense(dense, 1)
        _time_stacked(stacked, 1)
        for _ in range(max(1, repeats)):
            if once is not None:
                t0 = time.perf_counter()
                L = once()
                best_k = min(best_k, time.perf_counter() - t0)
            best_d = min(best_d, _time_dense(dense, T))
            best_s = min(best_s, _time_stacked(stacked, T))
    ceiling = {"dense": best_d, "stacked": best_s,
               "dense_flops": 4.0 * B * n**3 * T, "stacked_flops": 8.0 * B * n**3 * T}
    return (best_k if once is not None else None), ceiling, L


def kernel_time(params: dict, x: np.ndarray, repeats: int, dtype="float64",
                backend="numpy", threads=None) -> tuple[float, np.ndarray]:
    """Best-of time of ``all_lags`` in this process, after one warm-up call."""
    from gateflow.numeric._chain import all_lags

    def once():
        r = all_lags(CELL, params, x, blocks=("c/c",), norms=("frobenius",), dtype=dtype,
                     backend=backend, threads=threads)
        return r.blocks["c/c"]["log10_frobenius"]

    once()
    best, L = float("inf"), None
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        L = once()
        best = min(best, time.perf_counter() - t0)
    return best, L


def max_diff(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return float("inf")
    both_inf = np.isinf(a) & np.isinf(b) & (np.sign(a) == np.sign(b))
    d = np.where(both_inf, 0.0, np.abs(a - b))
    d = np.where(np.isnan(d), np.inf, d)
    return float(d.max()) if d.size else 0.0


# ----------------------------------------------------------------------------- machine


def machine_info() -> dict:
    info = {"python": platform.python_version(), "platform": platform.platform()}
    model = None
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info["cpu"] = model or platform.processor() or "unknown"
    info["cores"] = os.cpu_count()
    try:
        info["cores_usable"] = len(os.sched_getaffinity(0))
    except AttributeError:
        info["cores_usable"] = os.cpu_count()
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    info["memory_gib"] = int(line.split()[1]) / 2**20
    except OSError:
        pass
    try:
        info["load"] = os.getloadavg()
    except OSError:
        info["load"] = None
    info["numpy"] = np.__version__
    try:
        from threadpoolctl import threadpool_info

        pools = threadpool_info()
        info["blas"] = "; ".join(
            f"{p.get('internal_api')} {p.get('version') or ''} ({p.get('architecture') or '?'}, "
            f"{p.get('threading_layer') or p.get('user_api')}, {p.get('num_threads')} threads)"
            for p in pools if p.get("user_api") == "blas") or "none found"
    except Exception as exc:  # threadpoolctl missing or broken: say so, do not fail
        info["blas"] = f"unknown ({exc})"
    import gateflow

    info["gateflow"] = gateflow.__version__
    return info


def gpu_info() -> tuple[dict | None, str | None]:
    """(description, None) if CuPy and a CUDA device are usable, else (None, reason)."""
    try:
        import cupy
    except Exception as exc:
        return None, f"no CuPy ({type(exc).__name__})"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
        if count < 1:
            return None, "CuPy installed but no CUDA device"
        props = cupy.cuda.runtime.getDeviceProperties(0)
        name = props["name"]
        name = name.decode() if isinstance(name, bytes) else str(name)
        free, total = cupy.cuda.runtime.memGetInfo()
        return {"name": name, "count": count, "memory_gib": total / 2**30,
                "cupy": cupy.__version__,
                "cuda_runtime": cupy.cuda.runtime.runtimeGetVersion()}, None
    except Exception as exc:
        return None, f"CuPy cannot use a GPU ({type(exc).__name__}: {str(exc)[:80]})"


# ----------------------------------------------------------------------------- sections


def _fmt_s(x):
    if x is None:
        return "—"
    return f"{x:.1f}" if x >= 10 else f"{x:.3f}" if x >= 0.01 else f"{x:.2e}"


def _fmt_g(x):
    return f"{x:.1f}" if x >= 1 else f"{x:.3f}"


def _fmt_x(x):
    return "—" if x is None else f"{x:.1f}×"


def _fmt_mb(x):
    return "—" if x is None else f"{x:.0f}"


def _write_inputs(tmp: Path, n: int, B: int, T: int,
                  seed: int) -> tuple[Path, Path, dict, np.ndarray]:
    from gateflow.models._params import init_params, load_params, make_inputs, save_params

    params = init_params(CELL, n, n, seed=seed)
    x = make_inputs(T, B, n, seed=seed + 1)
    w = tmp / f"w_n{n}_B{B}_T{T}.npz"
    xi = tmp / f"x_n{n}_B{B}_T{T}.npy"
    save_params(w, CELL, params, overwrite=True)  # our own temp folder, same inputs
    np.save(xi, x)
    # read back exactly what the subprocesses will read
    return w, xi, load_params(w, CELL), x


def bench_size(tmp: Path, n: int, B: int, T: int, args, peers: dict) -> dict:
    log(f"== n={n} B={B} T={T}")
    w, xi, params, x = _write_inputs(tmp, n, B, T, args.seed)
    row = {"n": n, "B": B, "T": T, "e2e": {}, "rss": {}, "why": {}, "runs": {}}
    results = {}
    runner = tmp / "gateflow_runner.py"
    contenders = [("gateflow", [sys.executable, str(runner), str(w), str(xi), "{out}",
                                "float64", "numpy"])]
    for peer in ("jax", "torch"):
        if peers.get(peer, {}).get("version"):
            contenders.append((peer, [sys.executable, str(PEERS_PY), "--peer", peer,
                                      "--weights", str(w), "--inputs", str(xi),
                                      "--out", "{out}"]))
        elif peer in peers:
            row["why"][peer] = "skipped (not installed)"
        else:
            row["why"][peer] = "not run (--peers)"
    for name, cmd in contenders:
        out = tmp / f"L_{name}_n{n}.npy"
        cmd = [c.replace("{out}", str(out)) for c in cmd]
        log(f"   end to end: {name} ...")
        r = timed_best(cmd, out, args.repeats, args.slow, args.timeout)
        if r["ok"]:
            row["e2e"][name], row["rss"][name] = r["wall"], r["rss_mb"]
            row.setdefault("rss_how", set()).add(r["rss_how"])
            row["runs"][name] = r["runs"]
            results[name] = r["L"]
            log(f"      {r['wall']:.3f} s (best of {r['runs']}), peak {r['rss_mb']:.0f} MiB")
        else:
            row["why"][name] = r["why"]
            log(f"      {r['why']}")
    log("   kernel (gateflow all_lags in process) and BLAS ceiling, interleaved ...")
    row["kernel"], row["ceiling"], L_k = kernel_and_ceiling(params, x, args.repeats)
    if L_k is not None:
        results.setdefault("gateflow (kernel)", L_k)
    if not results:
        row.update(diff={}, L64=None)
        return row
    log(f"      kernel {_fmt_s(row['kernel'])} s, ceiling {row['ceiling']['dense']:.3f} s, "
        f"stacked {row['ceiling']['stacked']:.3f} s")
    # agreement: every pair against gateflow's end-to-end (or kernel) result
    ref_name = next(k for k in ("gateflow", "gateflow (kernel)", "jax", "torch") if k in results)
    ref = results[ref_name]
    row["diff"] = {k: max_diff(v, ref) for k, v in results.items() if k != ref_name}
    if "jax" in results and "torch" in results:
        row["diff"]["jax vs torch"] = max_diff(results["jax"], results["torch"])
    row["L64"] = ref
    return row


def bench_float32(tmp: Path, n: int, B: int, T: int, args, ref64: np.ndarray | None) -> dict:
    log(f"== float32: n={n} B={B} T={T}")
    from gateflow.models._params import load_params

    w, xi, params64, x = _write_inputs(tmp, n, B, T, args.seed)
    out = tmp / f"L_f32_n{n}.npy"
    runner = tmp / "gateflow_runner.py"
    cmd = [sys.executable, str(runner), str(w), str(xi), str(out), "float32", "numpy"]
    r = timed_best(cmd, out, args.repeats, args.slow, args.timeout)
    row = {"n": n, "B": B, "T": T}
    if r["ok"]:
        row.update(e2e=r["wall"], rss=r["rss_mb"], runs=r["runs"], rss_how={r["rss_how"]})
        L32 = r["L"]
    else:
        row["why"] = r["why"]
        L32 = None
    params32 = load_params(w, CELL, dtype="float32")
    row["kernel"], row["ceiling"], L32k = kernel_and_ceiling(
        params32, x.astype(np.float32), args.repeats, dtype="float32")
    if L32 is None:
        L32 = L32k
    if ref64 is None and params64 is not None:
        try:
            _, ref64 = kernel_time(params64, x, 0)
        except Exception:
            ref64 = None
    row["diff_vs_f64"] = (max_diff(L32, ref64) if L32 is not None and ref64 is not None
                          else float("nan"))
    log(f"   e2e {_fmt_s(row.get('e2e'))} s, kernel {_fmt_s(row['kernel'])} s, "
        f"max |Δ log10| vs float64 {row['diff_vs_f64']:.2e}")
    return row


def bench_memory(tmp: Path, n: int, B: int, T: int, args) -> dict:
    log(f"== memory: gateflow n={n} B={B} T={T}")
    w, xi, _, _ = _write_inputs(tmp, n, B, T, args.seed)
    out = tmp / f"L_mem_n{n}.npy"
    runner = tmp / "gateflow_runner.py"
    cmd = [sys.executable, str(runner), str(w), str(xi), str(out), "float64", "numpy"]
    r = timed_best(cmd, out, 1, args.slow, args.timeout)
    row = {"n": n, "B": B, "T": T}
    if r["ok"]:
        row.update(e2e=r["wall"], rss=r["rss_mb"], rss_how={r["rss_how"]},
                   finite=bool(np.isfinite(r["L"]).all()),
                   log10_range=(float(np.min(r["L"])), float(np.max(r["L"]))))
        log(f"   {r['wall']:.2f} s, peak {r['rss_mb']:.0f} MiB")
    else:
        row["why"] = r["why"]
        log(f"   {r['why']}")
    return row


def bench_gpu(tmp: Path, args, quick: bool) -> dict:
    """gateflow on CuPy vs NumPy: agreement at a small size, then the large shape."""
    info, why = gpu_info()
    if info is None:
        log(f"== GPU: skipped ({why})")
        return {"status": f"skipped ({why})"}
    from gateflow.models._params import init_params, make_inputs

    sec: dict = {"status": "ran", "info": info}
    # agreement, float64
    n, B, T = (16, 2, 20) if quick else (64, 4, 50)
    p = init_params(CELL, n, n, seed=args.seed)
    x = make_inputs(T, B, n, seed=args.seed + 1)
    _, L_np = kernel_time(p, x, 0, backend="numpy")
    _, L_cp = kernel_time(p, x, 0, backend="cupy")
    sec["agree"] = {"n": n, "B": B, "T": T, "diff": max_diff(L_np, L_cp)}
    log(f"== GPU agreement n={n} B={B} T={T}: max |Δ log10| = {sec['agree']['diff']:.2e}")

    n, B, T = (64, 4, 32) if quick else GPU_SHAPE
    T_cpu = T if quick else min(T, args.gpu_cpu_steps)
    w, xi, params, x = _write_inputs(tmp, n, B, T, args.seed)
    sec["shape"] = {"n": n, "B": B, "T": T, "T_cpu": T_cpu}
    flops = 4.0 * B * n**3 * T
    sec["flops"] = flops
    # end to end on the GPU: a fresh process, as a user runs it
    out = tmp / "L_gpu.npy"
    runner = tmp / "gateflow_runner.py"
    log(f"== GPU n={n} B={B} T={T}: end to end (cupy) ...")
    r = timed_best([sys.executable, str(runner), str(w), str(xi), str(out), "float64", "cupy"],
                   out, 1, args.slow, args.timeout)
    sec["e2e"] = r["wall"] if r["ok"] else None
    sec["e2e_why"] = None if r["ok"] else r["why"]
    log("   kernel float64 / float32 (cupy, warm) ...")
    sec["gpu64"], L_gpu = kernel_time(params, x, args.repeats, backend="cupy")
    p32 = {k: v.astype(np.float32) for k, v in params.items()}
    sec["gpu32"], L_gpu32 = kernel_time(p32, x.astype(np.float32), args.repeats,
                                        dtype="float32", backend="cupy")
    sec["gpu32_diff"] = max_diff(L_gpu32, L_gpu)
    log(f"   gpu float64 {sec['gpu64']:.3f} s, float32 {sec['gpu32']:.3f} s")
    log(f"   CPU numpy, T={T_cpu}, BLAS threads {args.gpu_cpu_threads or 'all'} ...")
    from gateflow.numeric._chain import all_lags

    threads = args.gpu_cpu_threads or None  # None: the BLAS library's own setting (all cores)
    all_lags(CELL, params, x[:2], blocks=("c/c",), norms=("frobenius",), threads=threads)
    t0 = time.perf_counter()
    L_cpu = all_lags(CELL, params, x[:T_cpu], blocks=("c/c",), norms=("frobenius",),
                     threads=threads).blocks["c/c"]["log10_frobenius"]
    t_cpu = time.perf_counter() - t0
    sec["cpu_measured"] = t_cpu
    sec["cpu_threads"] = args.gpu_cpu_threads or f"all ({os.cpu_count()})"
    sec["cpu64"] = t_cpu * T / T_cpu
    sec["cpu_extrapolated"] = T_cpu != T
    if T_cpu == T:
        sec["cpu_gpu_diff"] = max_diff(L_cpu, L_gpu)
    log(f"   cpu {t_cpu:.3f} s for T={T_cpu} -> {sec['cpu64']:.2f} s for T={T}")
    return sec


# ----------------------------------------------------------------------------- targets


def targets(rows, f32, mem, quick: bool) -> list[tuple[str, str, str]]:
    big = [r for r in rows if r["n"] >= 128]
    out = []

    def ratio_target(peer, want):
        who = "JAX" if peer == "jax" else "PyTorch"
        label = f"gateflow ≥ {want}× faster than {who} end to end, n ≥ 128"
        have = [(r["n"], r["e2e"][peer] / r["e2e"]["gateflow"]) for r in big
                if peer in r["e2e"] and "gateflow" in r["e2e"]]
        if not big:
            return (label, "n/a (no size with n ≥ 128 in this run)", "—")
        if not have:
            reason = next((r["why"].get(peer) or r["why"].get("gateflow") for r in big
                           if peer in r["why"] or "gateflow" in r["why"]), "not measured")
            return (label, reason, "—")
        worst = min(have, key=lambda t: t[1])
        text = ", ".join(f"n={n}: {v:.1f}×" for n, v in have)
        missing = len(have) < len(big)
        verdict = "PASS" if worst[1] >= want and not missing else "MISS"
        return (label, text + (" (some sizes not measured)" if missing else ""), verdict)

    out.append(ratio_target("jax", 2))
    out.append(ratio_target("torch", 10))
    label = "gateflow kernel ≥ 60% of the BLAS ceiling (its own GEMMs, same threads), n ≥ 128"
    if big:
        have = [(r["n"], 100 * r["ceiling"]["dense"] / r["kernel"] if r["kernel"] else 0.0)
                for r in big]
        text = ", ".join(f"n={n}: {v:.0f}%" if v else f"n={n}: failed" for n, v in have)
        out.append((label, text, "PASS" if min(v for _, v in have) >= 60 else "MISS"))
    else:
        out.append((label, "n/a (no size with n ≥ 128 in this run)", "—"))
    n, B, T = MEM_ROW
    label = f"peak memory, gateflow n={n} B={B} T={T} < {MEM_TARGET_MB} MB"
    if mem is None:
        out.append((label, "not measured", "—"))
    elif "rss" not in mem:
        out.append((label, mem.get("why", "failed"), "MISS"))
    elif (mem["n"], mem["B"], mem["T"]) != MEM_ROW:
        out.append((label, f"n/a (--quick measured n={mem['n']} B={mem['B']} T={mem['T']}: "
                           f"{mem['rss']:.0f} MiB)", "—"))
    else:
        mb = mem["rss"] * 1.048576  # MiB -> MB
        out.append((label, f"{mem['rss']:.0f} MiB = {mb:.0f} MB",
                    "PASS" if mb < MEM_TARGET_MB else "MISS"))
    diffs = [v for r in rows for v in r["diff"].values()]
    label = f"all contenders agree: max |Δ log10 ‖·‖_F| ≤ {TOL:g}"
    if diffs:
        worst = max(diffs)
        out.append((label, f"{worst:.1e}", "PASS" if worst <= TOL else "MISS"))
    else:
        out.append((label, "nothing to compare", "—"))
    return out


# ----------------------------------------------------------------------------- output


def e2e_table(rows, f32):
    head = ["n", "B", "T", "gateflow s", "JAX s", "PyTorch s", "JAX/gateflow",
            "PyTorch/gateflow", "peak MiB gateflow / JAX / PyTorch", "max |Δ log10|"]
    body = []
    for r in rows:
        g = r["e2e"].get("gateflow")

        def cell(name):
            if name in r["e2e"]:
                return _fmt_s(r["e2e"][name])
            return r["why"].get(name, "—")

        def ratio(name):
            return _fmt_x(r["e2e"][name] / g) if g and name in r["e2e"] else "—"

        mem = " / ".join(_fmt_mb(r["rss"].get(k)) for k in ("gateflow", "jax", "torch"))
        diff = max(r["diff"].values()) if r["diff"] else None
        body.append([str(r["n"]), str(r["B"]), str(r["T"]), cell("gateflow"), cell("jax"),
                     cell("torch"), ratio("jax"), ratio("torch"), mem,
                     "—" if diff is None else f"{diff:.1e}"])
    if f32 is not None:
        body.append([f"{f32['n']} (float32)", str(f32["B"]), str(f32["T"]),
                     _fmt_s(f32.get("e2e")) if "e2e" in f32 else f32.get("why", "—"),
                     "—", "—", "—", "—", f"{_fmt_mb(f32.get('rss'))} / — / —",
                     f"{f32['diff_vs_f64']:.1e} vs float64"])
    return head, body


def kernel_table(rows, f32):
    head = ["n", "B", "T", "dtype", "kernel s", "kernel GFLOP/s", "ceiling s (GFLOP/s)",
            "kernel % of ceiling", "stacked s (GFLOP/s)", "kernel % of stacked"]
    body = []
    items = [(r, "float64") for r in rows] + ([(f32, "float32")] if f32 is not None else [])
    for r, dt in items:
        c, k = r["ceiling"], r["kernel"]
        body.append([str(r["n"]), str(r["B"]), str(r["T"]), dt,
                     _fmt_s(k) if k else "failed",
                     _fmt_g(c["dense_flops"] / k / 1e9) if k else "—",
                     f"{_fmt_s(c['dense'])} ({_fmt_g(c['dense_flops'] / c['dense'] / 1e9)})",
                     f"{100 * c['dense'] / k:.0f}%" if k else "—",
                     f"{_fmt_s(c['stacked'])} ({_fmt_g(c['stacked_flops'] / c['stacked'] / 1e9)})",
                     f"{100 * c['stacked'] / k:.0f}%" if k else "—"])
    return head, body


def gpu_lines(sec) -> list[str]:
    if sec is None:
        return ["Not run here (`--no-gpu`). The GPU figures come from a separate run on a "
                "machine with a GPU, `python benchmarks/run.py --gpu-only`: see "
                "[benchmarks-gpu.md](benchmarks-gpu.md)."]
    if sec["status"] != "ran":
        return [f"GPU: {sec['status']}."]
    i, s = sec["info"], sec["shape"]
    lines = [f"Device: {i['name']} ×{i['count']}, {i['memory_gib']:.0f} GiB, CuPy {i['cupy']}, "
             f"CUDA runtime {i['cuda_runtime']}.", ""]
    a = sec["agree"]
    ok = "PASS" if a["diff"] <= GPU_TOL else "MISS"
    lines.append(f"- Agreement numpy vs cupy, float64, n={a['n']} B={a['B']} T={a['T']}: "
                 f"max |Δ log10 ‖·‖_F| = {a['diff']:.1e} (target ≤ {GPU_TOL:g}): **{ok}**")
    lines.append(f"- Shape n={s['n']} B={s['B']} T={s['T']}; GEMM flops 4·B·n³·T = "
                 f"{sec['flops'] / 1e9:,.0f} GFLOP.")
    e2e = (f"{sec['e2e']:.2f} s" if sec["e2e"] is not None else sec["e2e_why"])
    lines.append(f"- gateflow cupy end to end (fresh process, float64): {e2e}")
    lines.append(f"- gateflow cupy kernel (warm), float64: {sec['gpu64']:.3f} s "
                 f"({sec['flops'] / sec['gpu64'] / 1e9:.0f} GFLOP/s); float32: "
                 f"{sec['gpu32']:.3f} s ({sec['flops'] / sec['gpu32'] / 1e9:.0f} GFLOP/s), "
                 f"max |Δ log10| float32 vs float64 {sec['gpu32_diff']:.1e}")
    if sec["cpu_extrapolated"]:
        cpu = (f"{sec['cpu64']:.2f} s **extrapolated** linearly from a measured "
               f"{sec['cpu_measured']:.2f} s at T={s['T_cpu']} (the sweep costs the same per "
               "step)")
    else:
        cpu = f"{sec['cpu64']:.2f} s (measured)"
    lines.append(f"- gateflow numpy CPU (warm, float64, BLAS threads: "
                 f"{sec['cpu_threads']}): {cpu} ({sec['flops'] / sec['cpu64'] / 1e9:.0f} GFLOP/s)")
    lines.append(f"- speed-up GPU vs CPU (float64): {sec['cpu64'] / sec['gpu64']:.1f}×")
    return lines


def md_table(head, body) -> list[str]:
    esc = [[c.replace("|", "\\|") for c in row] for row in [head] + body]
    lines = ["| " + " | ".join(esc[0]) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in esc[1:]]
    return lines


def print_rich(title, head, body):
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(title)
        for r in [head] + body:
            print("  ".join(r))
        return
    t = Table(title=title)
    for h in head:
        t.add_column(h, justify="right")
    for r in body:
        t.add_row(*r)
    Console(width=max(160, len(head) * 14)).print(t)


def atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; a report is for everyone
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def machine_lines(info, peers) -> list[str]:
    versions = [f"python {info['python']}", f"numpy {info['numpy']}",
                f"gateflow {info['gateflow']}"]
    for name, label in (("jax", "jax"), ("torch", "torch")):
        p = peers.get(name)
        if p is None:
            continue
        versions.append(f"{label} {p['version']}" if p.get("version")
                        else f"{label} not installed ({p['why']})")
    def loads(key):
        v = info.get(key)
        return ", ".join(f"{x:.1f}" for x in v) if v else "unknown"

    load = f"- Load average (1, 5, 15 min) at the start: {loads('load')}"
    if info.get("load_end"):
        load += f"; at the end: {loads('load_end')}"
    load += " (on a shared machine timings are noisy; every time is a best of repeats)"
    return [
        f"- CPU: {info['cpu']}, {info['cores']} logical cores ({info['cores_usable']} usable), "
        f"{info.get('memory_gib', float('nan')):.1f} GiB memory; {info['platform']}",
        f"- BLAS (numpy): {info['blas']}",
        load,
        f"- Versions: {', '.join(versions)}",
    ]


# ----------------------------------------------------------------------------- main


def parse_sizes(text: str) -> list[int]:
    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise SystemExit(f"--sizes: expected comma-separated integers, got {text!r}") from None
    if not sizes or any(s < 1 for s in sizes):
        raise SystemExit(f"--sizes: need positive integers, got {text!r}")
    return sizes


def shape_for(n: int, args) -> tuple[int, int]:
    if args.quick:
        B, T = 2, 12
    elif n in SHAPES:
        B, T = SHAPES[n]
    else:  # keep 4·B·n³·T near that of the n=256 reference point
        B = max(1, min(32, 4096 // n))
        T = int(max(10, min(400, 256**3 * 8 * 200 / (B * n**3))))
    return (args.batch or B, args.steps or T)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description="Benchmark gateflow's all-lag LSTM Jacobian norms against JAX, PyTorch "
                    "and the BLAS ceiling; writes a Markdown report.")
    ap.add_argument("--sizes", default=None, help=f"hidden sizes n (default {DEFAULT_SIZES}; "
                    "with --quick 8,16)")
    ap.add_argument("--batch", type=int, default=None, help="batch B for every size "
                    "(default: per size, see SHAPES)")
    ap.add_argument("--steps", type=int, default=None, help="sequence length T for every size")
    ap.add_argument("--repeats", type=int, default=None,
                    help="best of this many runs (default 3; 1 with --quick)")
    ap.add_argument("--slow", type=float, default=20.0,
                    help="do not repeat a subprocess that took longer than this (s)")
    ap.add_argument("--timeout", type=float, default=900.0, help="per subprocess (s)")
    ap.add_argument("--peers", default="jax,torch", help="peers to run (jax, torch; '' none)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes, one repeat: a smoke run")
    ap.add_argument("--no-memory", action="store_true", help="skip the T=4000 memory row")
    ap.add_argument("--no-gpu", action="store_true", help="skip the GPU section")
    ap.add_argument("--gpu-only", action="store_true", help="only the GPU section")
    ap.add_argument("--gpu-cpu-steps", type=int, default=GPU_CPU_STEPS,
                    help="steps of the CPU reference at the GPU shape (then scaled to T)")
    ap.add_argument("--gpu-cpu-threads", type=int, default=0,
                    help="BLAS threads of that CPU reference (default 0: all cores)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="Markdown report (default "
                    "reports/benchmarks.md, or reports/benchmarks-gpu.md with --gpu-only)")
    args = ap.parse_args(argv)
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    sizes = parse_sizes(args.sizes or ("8,16" if args.quick else DEFAULT_SIZES))
    out_path = Path(args.out or ("reports/benchmarks-gpu.md" if args.gpu_only
                                 else "reports/benchmarks.md"))
    if not out_path.is_absolute():
        out_path = Path.cwd() / out_path
    argv_list = sys.argv[1:] if argv is None else list(argv)
    command = "python benchmarks/run.py" + (" " + shlex.join(argv_list) if argv_list else "")
    t_start = time.perf_counter()
    info = machine_info()

    wanted = [p.strip() for p in args.peers.split(",") if p.strip()]
    for p in wanted:
        if p not in ("jax", "torch"):
            raise SystemExit(f"--peers: unknown peer {p!r} (use jax, torch)")
    peers: dict = {}
    rows, f32, mem, gpu = [], None, None, None
    with tempfile.TemporaryDirectory(prefix="gateflow-bench-") as tmpd:
        tmp = Path(tmpd)
        (tmp / "gateflow_runner.py").write_text(RUNNER)
        (tmp / "gateflow_bench_wrapper.py").write_text(WRAPPER)
        if not args.gpu_only:
            for p in wanted:
                v, why = check_import(p)
                peers[p] = {"version": v, "why": why}
                log(f"peer {p}: {v or 'skipped: ' + str(why)}")
            for n in sizes:
                B, T = shape_for(n, args)
                rows.append(bench_size(tmp, n, B, T, args, peers))
            # float32: at the first reference point if present, else the first size >= 128
            ref = next((r for r in rows if (r["n"], r["B"], r["T"]) == (128, 16, 100)), None)
            ref = ref or next((r for r in rows if r["n"] >= 128), rows[0])
            f32 = bench_float32(tmp, ref["n"], ref["B"], ref["T"], args, ref["L64"])
            if not args.no_memory:
                mem = bench_memory(tmp, *((16, 2, 200) if args.quick else MEM_ROW), args)
        if not args.no_gpu or args.gpu_only:
            gpu = bench_gpu(tmp, args, args.quick)
    total = time.perf_counter() - t_start
    try:
        info["load_end"] = os.getloadavg()
    except OSError:
        pass

    md = [f"# gateflow benchmarks{' — GPU' if args.gpu_only else ''}", "",
          f"Generated {_dt.datetime.now().isoformat(timespec='seconds')} by `{command}` "
          f"in {total:.0f} s.", "", "## Machine", ""]
    md += machine_lines(info, peers)
    md += [""]
    if not args.gpu_only:
        hows = set().union(*(r.get("rss_how", set()) for r in rows + [f32 or {}, mem or {}]))
        rss_how = ("the child's own peak resident set (VmHWM of its address space, read at exit "
                   "by a wrapper; not `ru_maxrss`, which on Linux inherits the parent's peak)")
        if "ru_maxrss" in hows:
            rss_how += ("; where /proc was unavailable `ru_maxrss` from `os.wait4`, an upper "
                        "bound that includes this harness's own peak")
        md += ["## Job", "",
               "`log10 ‖∂c_T/∂c_{T−k}‖_F` for every lag k = 1..T of a single-layer LSTM, "
               "float64 (block `c/c`, Frobenius norm only; lag k at index k−1), PyTorch "
               "initialisation (`init_params`), inputs N(0, 1) (`make_inputs`). Every contender "
               "reads the same weights file (`.npz`, PyTorch names) and inputs file (`.npy`).",
               "",
               "## End to end (fresh process each)", "",
               f"Wall time of a whole subprocess — interpreter start, imports, loading the "
               f"compiled evaluators (gateflow; derived with SymPy and lambdified on the first "
               f"run, then cached on disk) or tracing + XLA compilation (JAX), reading the files, "
               f"the job, "
               f"writing the (T, B) result — best of up to {args.repeats} "
               f"(no repeat after a run over {args.slow:g} s). Peak memory: {rss_how}. "
               f"Every contender uses its default threading ({blas_threads()} BLAS threads for "
               "gateflow's backward sweep; its forward pass is single-threaded). "
               "Ratio > 1: gateflow is faster. "
               "max |Δ log10|: largest difference between any two contenders' log10 norms.", ""]
        head, body = e2e_table(rows, f32)
        md += md_table(head, body)
        print_rich("End to end (subprocess, best of repeats)", head, body)
        md += ["", f"## Kernel vs BLAS ceiling (in process, {blas_threads()} BLAS threads)", "",
               "kernel: gateflow `all_lags` (forward pass keeping each step's coefficients, "
               "backward sweep, norms) after a warm-up call, best of repeats. ceiling: only "
               "the GEMMs the kernel performs — per LSTM step two batched "
               "(B, n, n) @ (B, n, n) products "
               "(4·B·n³ flops; the GFLOP/s columns count these flops). stacked: the "
               "alternative of one (B·n × 4n) @ (4n × n) GEMM per step (8·B·n³ flops), "
               "what a "
               "sweep that does not form K_t would pay. kernel % = ceiling time / kernel "
               "time.", ""]
        head, body = kernel_table(rows, f32)
        md += md_table(head, body)
        print_rich(f"Kernel vs BLAS ceiling (in process, {blas_threads()} BLAS threads)",
                   head, body)

        agree = [f"{r['n']}: " + ", ".join(f"{k} {v:.1e}" for k, v in r["diff"].items())
                 for r in rows]
        worst = max((v for r in rows for v in r["diff"].values()), default=None)
        agree_line = ("Agreement: max |Δ log10 ‖∂c_T/∂c_{T−k}‖_F| = "
                      + ("— (nothing to compare)" if worst is None else f"{worst:.1e}")
                      + f" (tolerance {TOL:g}; vs gateflow, per n — " + "; ".join(agree) + ")")
        md += ["", "## Agreement and accuracy", "", "- " + agree_line]
        print(agree_line)
        if f32 is not None:
            f64_kernel = next(r["kernel"] for r in rows
                              if (r["n"], r["B"], r["T"]) == (f32["n"], f32["B"], f32["T"]))
            line = (f"float32 (gateflow, n={f32['n']} B={f32['B']} T={f32['T']}): max |Δ log10 "
                    f"‖·‖_F| vs float64 = {f32['diff_vs_f64']:.1e} (decades); kernel "
                    f"{_fmt_s(f32['kernel'])} s vs float64 {_fmt_s(f64_kernel)} s")
            md.append("- " + line)
            print(line)
        if mem is not None:
            if "rss" in mem:
                line = (f"Memory: gateflow n={mem['n']} B={mem['B']} T={mem['T']}: peak RSS "
                        f"{mem['rss']:.0f} MiB, end to end {mem['e2e']:.2f} s, all norms finite: "
                        f"{mem['finite']}, log10 norms {mem['log10_range'][0]:.1f}.."
                        f"{mem['log10_range'][1]:.1f}")
            else:
                line = f"Memory: gateflow n={mem['n']} B={mem['B']} T={mem['T']}: {mem['why']}"
            md.append("- " + line)
            print(line)
        md += ["", "## Targets (issue 5)", "", "| target | measured | verdict |",
               "|---|---|---|"]
        tg = targets(rows, f32, mem, args.quick)
        md += md_table(["target", "measured", "verdict"], [list(t) for t in tg])[2:]
        print_rich("Targets (issue 5)", ["target", "measured", "verdict"], [list(t) for t in tg])
    md += ["", "## GPU (gateflow `backend=\"cupy\"` vs NumPy CPU)", ""]
    gl = gpu_lines(gpu)
    md += gl
    print("GPU:\n  " + "\n  ".join(line for line in gl if line))
    md += ["", f"Total benchmark time: {total:.0f} s.", ""]
    atomic_write(out_path, "\n".join(md))
    print(f"wrote {out_path} ({total:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

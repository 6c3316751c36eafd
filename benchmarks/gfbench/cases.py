"""What is measured. The job (issue 5): ``log10 ‖∂c_T/∂c_{T−k}‖_F`` for every lag
k = 1..T of a single-layer LSTM (block ``c/c``, Frobenius norm only, lag k at index k−1).

* :func:`bench_size`: gateflow, JAX and PyTorch end to end, each in fresh processes
  (``benchmarks/gateflow_job.py``, ``benchmarks/peers.py --peer jax|torch``) on the same
  weight and input files; then gateflow's kernel in process against the BLAS ceiling
  (:func:`kernel_and_ceiling`); then agreement of every result with gateflow's.
* :func:`bench_float32`: gateflow in float32, and its error against float64.
* :func:`bench_memory`: gateflow's peak memory on a long sequence.
* :func:`bench_gpu`: gateflow on CuPy against NumPy.
"""

from __future__ import annotations

import io
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import gateflow as gf

# write_files is gateflow's all-or-nothing writer; it has no public name (gateflow._io is
# the package's base layer), and every file the benchmark writes goes through it.
from gateflow._io import write_files
from gfbench.harness import (
    BENCH,
    best_time,
    default_blas_threads,
    fmt_s,
    log,
    stopwatch,
    timed_best,
)
from gfbench.results import (
    Ceiling,
    Failed,
    Float32Row,
    GpuDevice,
    GpuRun,
    GpuSkipped,
    KernelRun,
    MemoryRow,
    PeerStatus,
    Settings,
    Shape,
    SizeRow,
    StackRow,
    Timing,
)

CELL = "lstm"
TOL = 1e-8  # agreement of log10 norms between contenders
GPU_TOL = 1e-10  # numpy vs cupy, float64
# (B, T) per n: the two reference points of the issue are (128, 16, 100) and (256, 8, 200);
# n = 512 is kept small so that the whole run stays within minutes on a small machine.
SHAPES = {8: (4, 50), 16: (4, 50), 32: (32, 200), 64: (32, 200), 128: (16, 100),
          256: (8, 200), 512: (2, 50)}
F32_AT = Shape(128, 16, 100)  # float32 at this row if present, else at the first n >= 128
MEM_ROW = Shape(128, 4, 4000)  # target peak RSS < 400 MB
MEM_QUICK = Shape(16, 2, 200)
MEM_TARGET_MB = 400
GPU_SHAPE = Shape(1024, 64, 256)
GPU_CPU_STEPS = 16  # the CPU reference at GPU_SHAPE runs this many steps, then is scaled

JOB = BENCH / "gateflow_job.py"  # gateflow's contender program
PEERS = BENCH / "peers.py"  # the JAX and PyTorch contender programs


def shape_for(n: int, quick: bool, batch: int | None, steps: int | None) -> Shape:
    """The (B, T) measured at hidden size n; ``batch``/``steps`` override them."""
    if quick:
        B, T = 2, 12
    elif n in SHAPES:
        B, T = SHAPES[n]
    else:  # keep 4·B·n³·T near that of the n=256 reference point
        B = max(1, min(32, 4096 // n))
        T = int(max(10, min(400, 256**3 * 8 * 200 / (B * n**3))))
    return Shape(n, batch or B, steps or T)


def max_diff(a, b) -> float:
    """Largest |a − b| of two log10-norm arrays (equal infinities agree; NaN is inf)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return float("inf")
    both_inf = np.isinf(a) & np.isinf(b) & (np.sign(a) == np.sign(b))
    d = np.where(both_inf, 0.0, np.abs(a - b))
    d = np.where(np.isnan(d), np.inf, d)
    return float(d.max()) if d.size else 0.0


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Inputs:
    """The weight and input files every contender reads, and what they hold."""

    weights: Path  # .npz, PyTorch names
    inputs: Path  # .npy, (T, B, n)
    params: dict = field(repr=False)  # read back from ``weights``
    x: np.ndarray = field(repr=False)

    @classmethod
    def write(cls, tmp: Path, shape: Shape, seed: int) -> Inputs:
        n, B, T = shape.n, shape.B, shape.T
        params = gf.init_params(CELL, n, n, seed=seed)
        x = gf.make_inputs(T, B, n, seed=seed + 1)
        weights = tmp / f"w_n{n}_B{B}_T{T}.npz"
        inputs = tmp / f"x_n{n}_B{B}_T{T}.npy"
        gf.save_params(weights, CELL, params, overwrite=True)  # our temp folder, same inputs
        buf = io.BytesIO()
        np.save(buf, x)
        write_files({inputs: buf.getvalue()}, overwrite=True)
        # read back exactly what the subprocesses will read
        return cls(weights, inputs, gf.load_params(weights, CELL), x)

    def gateflow_cmd(self, out: Path, dtype: str = "float64",
                     backend: str = "numpy") -> list[str]:
        return [sys.executable, str(JOB), str(self.weights), str(self.inputs), str(out),
                dtype, backend]

    def peer_cmd(self, peer: str, out: Path) -> list[str]:
        return [sys.executable, str(PEERS), "--peer", peer, "--weights", str(self.weights),
                "--inputs", str(self.inputs), "--out", str(out)]


# --------------------------------------------------------------------------- kernel, ceiling


def _lags(params: dict, x: np.ndarray, dtype: str = "float64", backend: str = "numpy",
          threads: int | None = None) -> np.ndarray:
    r = gf.all_lags(CELL, params, x, blocks=("c/c",), norms=("frobenius",), dtype=dtype,
                    backend=backend, threads=threads)
    return r.blocks["c/c"]["log10_frobenius"]


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


def kernel_and_ceiling(params: dict, x: np.ndarray, repeats: int,
                       dtype: str = "float64") -> KernelRun:
    """gateflow's ``all_lags`` in this process and the BLAS ceiling, interleaved.

    Each repeat times the kernel, then exactly the kernel's GEMMs (2 × (B, n, n) @ (B, n, n)
    per step, T steps), then the stacked alternative ((B·n × 4n) @ (4n × n) per step), all
    with the BLAS library's default threads, as the kernel uses; best of each.
    Interleaving makes kernel and ceiling see the same machine load, so their ratio is
    steadier than either time."""
    T, B, _ = x.shape
    n = next(v for k, v in params.items() if k.startswith("U_")).shape[0]
    dense, stacked = _gemm_buffers(n, B, dtype)

    def once():
        return _lags(params, x, dtype)

    try:
        L = once()  # warm-up: derivation and compilation are cached after this
    except Exception as exc:  # report gateflow failing, keep measuring the rest
        L, once = None, None
        log(f"      gateflow failed in process: {type(exc).__name__}: {exc}")
    best_k = best_d = best_s = float("inf")
    with default_blas_threads():
        _time_dense(dense, 1)
        _time_stacked(stacked, 1)
        for _ in range(max(1, repeats)):
            if once is not None:
                t, L = stopwatch(once)
                best_k = min(best_k, t)
            best_d = min(best_d, _time_dense(dense, T))
            best_s = min(best_s, _time_stacked(stacked, T))
    ceiling = Ceiling(dense=best_d, stacked=best_s, dense_flops=4.0 * B * n**3 * T,
                      stacked_flops=8.0 * B * n**3 * T)
    return KernelRun(best_k if once is not None else None, ceiling, L)


def kernel_time(params: dict, x: np.ndarray, repeats: int, dtype: str = "float64",
                backend: str = "numpy", threads=None) -> tuple[float, np.ndarray]:
    """Best-of time of ``all_lags`` in this process, after one warm-up call."""
    return best_time(lambda: _lags(params, x, dtype, backend, threads), repeats)


# --------------------------------------------------------------------------- CPU cases


def bench_size(tmp: Path, shape: Shape, s: Settings, peers: dict[str, PeerStatus]) -> SizeRow:
    """Every contender end to end at one size, the kernel and ceiling, and agreement."""
    log(f"== {shape.label}")
    files = Inputs.write(tmp, shape, s.seed)
    row = SizeRow(shape)
    results: dict[str, np.ndarray] = {}
    contenders = [("gateflow", files.gateflow_cmd)]
    for peer in ("jax", "torch"):
        if peer in peers and peers[peer].version:
            contenders.append((peer, lambda out, peer=peer: files.peer_cmd(peer, out)))
        else:
            row.why[peer] = "skipped (not installed)" if peer in peers else "not run (--peers)"
    for name, cmd in contenders:
        out = tmp / f"L_{name}_n{shape.n}.npy"
        log(f"   end to end: {name} ...")
        r = timed_best(cmd(out), out, s.repeats, s.slow, s.timeout)
        if isinstance(r, Failed):
            row.why[name] = r.why
            log(f"      {r.why}")
            continue
        row.e2e[name] = r
        results[name] = r.result
        log(f"      {r.wall:.3f} s (best of {r.runs}), peak {r.rss_mib:.0f} MiB")
    log("   kernel (gateflow all_lags in process) and BLAS ceiling, interleaved ...")
    k = kernel_and_ceiling(files.params, files.x, s.repeats)
    row.kernel, row.ceiling = k.kernel, k.ceiling
    if k.result is not None:
        results.setdefault("gateflow (kernel)", k.result)
    if not results:
        return row
    log(f"      kernel {fmt_s(k.kernel)} s, ceiling {k.ceiling.dense:.3f} s, "
        f"stacked {k.ceiling.stacked:.3f} s")
    # agreement: every result against gateflow's end-to-end (or kernel) result
    ref_name = next(c for c in ("gateflow", "gateflow (kernel)", "jax", "torch") if c in results)
    ref = results[ref_name]
    row.diff = {c: max_diff(v, ref) for c, v in results.items() if c != ref_name}
    if "jax" in results and "torch" in results:
        row.diff["jax vs torch"] = max_diff(results["jax"], results["torch"])
    row.reference = ref
    return row


def bench_float32(tmp: Path, shape: Shape, s: Settings, ref64: np.ndarray | None) -> Float32Row:
    """gateflow in float32, end to end and in process; its error against float64."""
    log(f"== float32: {shape.label}")
    files = Inputs.write(tmp, shape, s.seed)
    out = tmp / f"L_f32_n{shape.n}.npy"
    r = timed_best(files.gateflow_cmd(out, "float32"), out, s.repeats, s.slow, s.timeout)
    params32 = gf.load_params(files.weights, CELL, dtype="float32")
    k = kernel_and_ceiling(params32, files.x.astype(np.float32), s.repeats, dtype="float32")
    L32 = r.result if isinstance(r, Timing) else k.result
    if ref64 is None:
        try:
            _, ref64 = kernel_time(files.params, files.x, 0)
        except Exception:
            ref64 = None
    diff = max_diff(L32, ref64) if L32 is not None and ref64 is not None else float("nan")
    row = Float32Row(shape, e2e=r if isinstance(r, Timing) else None,
                     why=r.why if isinstance(r, Failed) else None,
                     kernel=k.kernel, ceiling=k.ceiling, diff_vs_f64=diff)
    log(f"   e2e {fmt_s(row.e2e.wall if row.e2e else None)} s, kernel {fmt_s(k.kernel)} s, "
        f"max |Δ log10| vs float64 {diff:.2e}")
    return row


def bench_memory(tmp: Path, shape: Shape, s: Settings) -> MemoryRow:
    """gateflow's own peak memory on a long sequence: one fresh process."""
    log(f"== memory: gateflow {shape.label}")
    files = Inputs.write(tmp, shape, s.seed)
    out = tmp / f"L_mem_n{shape.n}.npy"
    r = timed_best(files.gateflow_cmd(out), out, 1, s.slow, s.timeout)
    if isinstance(r, Failed):
        log(f"   {r.why}")
        return MemoryRow(shape, None, why=r.why)
    log(f"   {r.wall:.2f} s, peak {r.rss_mib:.0f} MiB")
    return MemoryRow(shape, r, finite=bool(np.isfinite(r.result).all()),
                     log10_range=(float(np.min(r.result)), float(np.max(r.result))))


# --------------------------------------------------------------------------- stacks

STACK_TARGET = 3.0  # issue 10: a 2-layer --layer all run costs at most 3x one layer


def bench_stack(shape: Shape, s: Settings, norms: tuple[str, ...]) -> StackRow:
    """One LSTM layer against a 2-layer LSTM stack (``gf.stack``), same n, B, T, in
    process: every nonzero block at every lag (what ``decay --layer all`` measures). Also
    checks that the stack's layer-0 blocks equal the single layer's numbers."""
    n, B, T = shape.n, shape.B, shape.T
    log(f"== 2-layer stack vs one layer: {shape.label}, norms {','.join(norms)}")
    one = gf.init_params(CELL, n, n, seed=s.seed)
    two = {f"{k}_l0": v for k, v in one.items()}
    two.update({f"{k}_l1": v for k, v in gf.init_params(CELL, n, n, seed=s.seed + 7).items()})
    cell2 = gf.stack(CELL, 2)
    x = gf.make_inputs(T, B, n, seed=s.seed + 1)
    t1, r1 = best_time(lambda: gf.all_lags(CELL, one, x, norms=norms), s.repeats)
    t2, r2 = best_time(lambda: gf.all_lags(cell2, two, x, norms=norms), s.repeats)
    agree = max(max_diff(r1.blocks[b]["log10_frobenius"],
                         r2.blocks["{}_l0/{}_l0".format(*b.split("/"))]["log10_frobenius"])
                for b in r1.blocks)
    row = StackRow(shape, norms, t1, t2, (len(r1.blocks), len(r2.blocks)), agree)
    log(f"   one layer {t1:.3f} s ({len(r1.blocks)} blocks), 2-layer stack {t2:.3f} s "
        f"({len(r2.blocks)} blocks): {row.ratio:.2f}x")
    return row


# --------------------------------------------------------------------------- GPU


def gpu_device() -> GpuDevice | GpuSkipped:
    """The first CUDA device if CuPy can use it, else why not."""
    try:
        import cupy
    except Exception as exc:
        return GpuSkipped(f"no CuPy ({type(exc).__name__})")
    try:
        count = cupy.cuda.runtime.getDeviceCount()
        if count < 1:
            return GpuSkipped("CuPy installed but no CUDA device")
        name = cupy.cuda.runtime.getDeviceProperties(0)["name"]
        name = name.decode() if isinstance(name, bytes) else str(name)
        _, total = cupy.cuda.runtime.memGetInfo()
        return GpuDevice(name=name, count=count, memory_gib=total / 2**30,
                         cupy=cupy.__version__,
                         cuda_runtime=cupy.cuda.runtime.runtimeGetVersion())
    except Exception as exc:
        return GpuSkipped(f"CuPy cannot use a GPU ({type(exc).__name__}: {str(exc)[:80]})")


def bench_gpu(tmp: Path, s: Settings) -> GpuRun | GpuSkipped:
    """gateflow on CuPy vs NumPy: agreement at a small size, then the large shape."""
    device = gpu_device()
    if isinstance(device, GpuSkipped):
        log(f"== GPU: skipped ({device.why})")
        return device
    # agreement, float64
    agree = Shape(16, 2, 20) if s.quick else Shape(64, 4, 50)
    p = gf.init_params(CELL, agree.n, agree.n, seed=s.seed)
    x = gf.make_inputs(agree.T, agree.B, agree.n, seed=s.seed + 1)
    _, L_np = kernel_time(p, x, 0, backend="numpy")
    _, L_cp = kernel_time(p, x, 0, backend="cupy")
    agree_diff = max_diff(L_np, L_cp)
    log(f"== GPU agreement {agree.label}: max |Δ log10| = {agree_diff:.2e}")

    shape = Shape(64, 4, 32) if s.quick else GPU_SHAPE
    T = shape.T
    T_cpu = T if s.quick else min(T, s.gpu_cpu_steps)
    files = Inputs.write(tmp, shape, s.seed)
    flops = 4.0 * shape.B * shape.n**3 * T
    # end to end on the GPU: a fresh process, as a user runs it
    out = tmp / "L_gpu.npy"
    log(f"== GPU {shape.label}: end to end (cupy) ...")
    r = timed_best(files.gateflow_cmd(out, "float64", "cupy"), out, 1, s.slow, s.timeout)
    log("   kernel float64 / float32 (cupy, warm) ...")
    gpu64, L_gpu = kernel_time(files.params, files.x, s.repeats, backend="cupy")
    p32 = {k: v.astype(np.float32) for k, v in files.params.items()}
    gpu32, L_gpu32 = kernel_time(p32, files.x.astype(np.float32), s.repeats, dtype="float32",
                                 backend="cupy")
    log(f"   gpu float64 {gpu64:.3f} s, float32 {gpu32:.3f} s")
    log(f"   CPU numpy, T={T_cpu}, BLAS threads {s.gpu_cpu_threads or 'all'} ...")
    threads = s.gpu_cpu_threads or None  # None: the BLAS library's own setting (all cores)
    _lags(files.params, files.x[:2], threads=threads)  # warm-up
    t_cpu, L_cpu = stopwatch(lambda: _lags(files.params, files.x[:T_cpu], threads=threads))
    cpu64 = t_cpu * T / T_cpu
    log(f"   cpu {t_cpu:.3f} s for T={T_cpu} -> {cpu64:.2f} s for T={T}")
    return GpuRun(
        device=device, agree_shape=agree, agree_diff=agree_diff, shape=shape, cpu_steps=T_cpu,
        flops=flops, e2e=r.wall if isinstance(r, Timing) else None,
        e2e_why=r.why if isinstance(r, Failed) else None,
        gpu64=gpu64, gpu32=gpu32, gpu32_diff=max_diff(L_gpu32, L_gpu),
        cpu_measured=t_cpu,
        cpu_threads=str(s.gpu_cpu_threads) if s.gpu_cpu_threads else f"all ({os.cpu_count()})",
        cpu64=cpu64, cpu_gpu_diff=max_diff(L_cpu, L_gpu) if T_cpu == T else None)

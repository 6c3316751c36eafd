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
  child's own VmHWM, recorded at exit by a small wrapper the child runs under
  (``gfbench/peak.py``; not ``ru_maxrss``, which on Linux includes this harness's peak;
  it is the fallback where /proc is missing). gateflow runs as ``gateflow_job.py``
  (``load_params``/``load_inputs``/``all_lags``); JAX and PyTorch as
  ``peers.py --peer jax|torch``.
* **Kernel**: gateflow's ``all_lags`` in this process after a warm-up call, best of
  ``--repeats`` (the BLAS library's default threads, as in every contender).
* **BLAS ceiling**: the GEMMs the kernel performs and nothing else: per LSTM step two
  batched GEMMs (B, n, n) @ (B, n, n), i.e. 4·B·n³ flops per step, T steps, the BLAS library's
  default threads, best of ``--repeats``. Also shown: the "stacked" alternative,
  one (B·n × 4n) @ (4n × n) GEMM per step (8·B·n³ flops), which a kernel that does not
  form K_t = Σ_j diag(coef_j) U_j would need.

All contenders must agree: max |Δ log10 norm| ≤ 1e−8. Peers that are not installed are
reported as skipped. The report is written all or nothing (``gateflow._io.write_files``).

The parts live in ``benchmarks/gfbench/``: ``harness`` (fresh processes, peak memory, best
of N, BLAS threads, the machine), ``cases`` (what is measured), ``results`` (dataclasses),
``report`` (the Markdown report).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# Run as a script from a checkout, without installing: gateflow from ROOT, gfbench from here.
for _path in (ROOT, HERE):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from gfbench import cases, harness, report  # noqa: E402
from gfbench.results import Results, Settings  # noqa: E402

import gateflow as gf  # noqa: E402

DEFAULT_SIZES = "32,128,256,512"
QUICK_SIZES = "8,16"


def parse_sizes(text: str) -> list[int]:
    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise SystemExit(f"--sizes: expected comma-separated integers, got {text!r}") from None
    if not sizes or any(s < 1 for s in sizes):
        raise SystemExit(f"--sizes: need positive integers, got {text!r}")
    return sizes


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        description="Benchmark gateflow's all-lag LSTM Jacobian norms against JAX, PyTorch "
                    "and the BLAS ceiling; writes a Markdown report.")
    ap.add_argument("--sizes", default=None, help=f"hidden sizes n (default {DEFAULT_SIZES}; "
                    f"with --quick {QUICK_SIZES})")
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
    ap.add_argument("--no-lyapunov", action="store_true",
                    help="skip the Lyapunov spectra section")
    ap.add_argument("--lyapunov-only", action="store_true",
                    help="only the Lyapunov spectra section (default report "
                         "reports/benchmarks-lyapunov.md)")
    ap.add_argument("--no-stack", action="store_true",
                    help="skip the 2-layer stack vs one layer section")
    ap.add_argument("--gpu-only", action="store_true", help="only the GPU section")
    ap.add_argument("--gpu-cpu-steps", type=int, default=cases.GPU_CPU_STEPS,
                    help="steps of the CPU reference at the GPU shape (then scaled to T)")
    ap.add_argument("--gpu-cpu-threads", type=int, default=0,
                    help="BLAS threads of that CPU reference (default 0: all cores)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="Markdown report (default "
                    "reports/benchmarks.md, or reports/benchmarks-gpu.md with --gpu-only)")
    return ap


def run_lyapunov(res: Results, args) -> None:
    """Lyapunov spectra: LSTM n = 128 and 256 (quick: 8, 16), K = 32 (quick: 4) and K = N,
    B = 4, T = 500 (quick: B = 2, T = 20); gateflow, the torch literature route, JAX."""
    from gfbench.lyapunov import bench_lyapunov

    s = res.settings
    have = {p: bool(res.peers[p].version) for p in res.peers}
    for n in (8, 16) if s.quick else (128, 256):
        for K in (4 if s.quick else 32, 2 * n):
            res.lyapunov.append(bench_lyapunov(n, K, 2 if s.quick else 4,
                                               20 if s.quick else 500, s.seed, s.repeats,
                                               have))


def run_cpu(res: Results, tmp: Path, sizes: list[int], peers: list[str], args) -> None:
    """Every size end to end and in process, then float32 and the memory row."""
    s = res.settings
    for p in peers:
        res.peers[p] = status = harness.check_import(p)
        harness.log(f"peer {p}: {status.version or 'skipped: ' + str(status.why)}")
    for n in sizes:
        shape = cases.shape_for(n, s.quick, args.batch, args.steps)
        res.rows.append(cases.bench_size(tmp, shape, s, res.peers))
    # float32: at the first reference point if present, else the first size >= 128
    ref = next((r for r in res.rows if r.shape == cases.F32_AT), None)
    ref = ref or next((r for r in res.rows if r.shape.n >= 128), res.rows[0])
    res.f32 = cases.bench_float32(tmp, ref.shape, s, ref.reference)
    if not args.no_memory:
        res.mem = cases.bench_memory(tmp, cases.MEM_QUICK if s.quick else cases.MEM_ROW, s)
    if not args.no_lyapunov:
        run_lyapunov(res, args)
    for n in sizes if not args.no_stack else ():
        shape = cases.shape_for(n, s.quick, args.batch, args.steps)
        for norms in (("frobenius",), tuple(gf.all_lags.__kwdefaults__["norms"])):
            res.stacks.append(cases.bench_stack(shape, s, norms))


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    repeats = (1 if args.quick else 3) if args.repeats is None else args.repeats
    settings = Settings(repeats=repeats, slow=args.slow, timeout=args.timeout, seed=args.seed,
                        quick=args.quick, gpu_cpu_steps=args.gpu_cpu_steps,
                        gpu_cpu_threads=args.gpu_cpu_threads)
    sizes = parse_sizes(args.sizes or (QUICK_SIZES if args.quick else DEFAULT_SIZES))
    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    for p in peers:
        if p not in ("jax", "torch"):
            raise SystemExit(f"--peers: unknown peer {p!r} (use jax, torch)")
    out_path = Path(args.out or ("reports/benchmarks-gpu.md" if args.gpu_only
                                 else "reports/benchmarks-lyapunov.md" if args.lyapunov_only
                                 else "reports/benchmarks.md"))
    if not out_path.is_absolute():
        out_path = Path.cwd() / out_path
    try:
        report.check_report_path(out_path)  # before minutes of work, not after
    except (gf.GateflowError, OSError) as exc:
        raise SystemExit(f"error: {exc}") from None
    argv_list = sys.argv[1:] if argv is None else list(argv)
    command = "python benchmarks/run.py" + (" " + shlex.join(argv_list) if argv_list else "")

    t_start = time.perf_counter()
    res = Results(command=command, settings=settings, gpu_only=args.gpu_only,
                  machine=harness.machine())
    with tempfile.TemporaryDirectory(prefix="gateflow-bench-") as tmpd:
        tmp = Path(tmpd)
        if args.lyapunov_only:
            for p in peers:
                res.peers[p] = harness.check_import(p)
            run_lyapunov(res, args)
        elif not args.gpu_only:
            run_cpu(res, tmp, sizes, peers, args)
        if (not args.no_gpu or args.gpu_only) and not args.lyapunov_only:
            res.gpu = cases.bench_gpu(tmp, settings)
    res.total = time.perf_counter() - t_start
    res.machine.load_end = harness.load_average()

    text = report.render(res, echo=True)
    try:
        report.write_report(out_path, text)
    except (gf.GateflowError, OSError) as exc:
        raise SystemExit(f"error: {exc}") from None
    print(f"wrote {out_path} ({res.total:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

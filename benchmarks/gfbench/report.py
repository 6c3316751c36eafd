"""The report: ``reports/benchmarks.md`` (or ``--out``) from a :class:`Results`, the same
tables on the console, and the targets of issue 5.

The Markdown format is what the README and the earlier reports show; change it only
together with them. The file is written all or nothing, through ``gateflow._io``.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

# check_file and write_files are gateflow's output checks and all-or-nothing writer; they
# have no public names (gateflow._io is the package's base layer).
from gateflow._io import check_file, write_files
from gfbench.cases import GPU_TOL, MEM_ROW, MEM_TARGET_MB, STACK_TARGET, TOL
from gfbench.harness import fmt_s
from gfbench.results import (
    Float32Row,
    GpuRun,
    GpuSkipped,
    Machine,
    MemoryRow,
    PeerStatus,
    Results,
    SizeRow,
    StackRow,
    Target,
)

PEER_LABELS = {"jax": "JAX", "torch": "PyTorch"}


def _fmt_g(x: float) -> str:
    return f"{x:.1f}" if x >= 1 else f"{x:.3f}"


def _fmt_x(x: float | None) -> str:
    return "—" if x is None else f"{x:.1f}×"


def _fmt_mb(x: float | None) -> str:
    return "—" if x is None else f"{x:.0f}"


# --------------------------------------------------------------------------- targets


def _ratio_target(rows: list[SizeRow], peer: str, want: float) -> Target:
    big = [r for r in rows if r.shape.n >= 128]
    label = f"gateflow ≥ {want}× faster than {PEER_LABELS[peer]} end to end, n ≥ 128"
    if not big:
        return Target(label, "n/a (no size with n ≥ 128 in this run)", "—")
    have = [(r.shape.n, r.e2e[peer].wall / r.e2e["gateflow"].wall) for r in big
            if peer in r.e2e and "gateflow" in r.e2e]
    if not have:
        reason = next((r.why.get(peer) or r.why.get("gateflow") for r in big
                       if peer in r.why or "gateflow" in r.why), "not measured")
        return Target(label, reason, "—")
    worst = min(v for _, v in have)
    text = ", ".join(f"n={n}: {v:.1f}×" for n, v in have)
    missing = len(have) < len(big)
    verdict = "PASS" if worst >= want and not missing else "MISS"
    return Target(label, text + (" (some sizes not measured)" if missing else ""), verdict)


def targets(rows: list[SizeRow], mem: MemoryRow | None,
            stacks: list[StackRow] = ()) -> list[Target]:
    """The targets of issues 5 and 10, measured against this run."""
    big = [r for r in rows if r.shape.n >= 128]
    out = [_ratio_target(rows, "jax", 2), _ratio_target(rows, "torch", 10)]
    label = "gateflow kernel ≥ 60% of the BLAS ceiling (its own GEMMs, same threads), n ≥ 128"
    if big:
        have = [(r.shape.n, 100 * r.ceiling.dense / r.kernel if r.kernel else 0.0) for r in big]
        text = ", ".join(f"n={n}: {v:.0f}%" if v else f"n={n}: failed" for n, v in have)
        out.append(Target(label, text, "PASS" if min(v for _, v in have) >= 60 else "MISS"))
    else:
        out.append(Target(label, "n/a (no size with n ≥ 128 in this run)", "—"))
    m = MEM_ROW
    label = f"peak memory, gateflow n={m.n} B={m.B} T={m.T} < {MEM_TARGET_MB} MB"
    if mem is None:
        out.append(Target(label, "not measured", "—"))
    elif mem.e2e is None:
        out.append(Target(label, mem.why or "failed", "MISS"))
    elif mem.shape != MEM_ROW:
        out.append(Target(label, f"n/a (--quick measured {mem.shape.label}: "
                                 f"{mem.e2e.rss_mib:.0f} MiB)", "—"))
    else:
        mb = mem.e2e.rss_mib * 1.048576  # MiB -> MB
        out.append(Target(label, f"{mem.e2e.rss_mib:.0f} MiB = {mb:.0f} MB",
                          "PASS" if mb < MEM_TARGET_MB else "MISS"))
    diffs = [v for r in rows for v in r.diff.values()]
    label = f"all contenders agree: max |Δ log10 ‖·‖_F| ≤ {TOL:g}"
    if diffs:
        worst = max(diffs)
        out.append(Target(label, f"{worst:.1e}", "PASS" if worst <= TOL else "MISS"))
    else:
        out.append(Target(label, "nothing to compare", "—"))
    label = f"2-layer stack (--layer all) ≤ {STACK_TARGET:g}× one layer of the same size"
    if stacks:
        text = "; ".join(f"n={r.shape.n} {','.join(r.norms)}: {r.ratio:.2f}×" for r in stacks)
        worst = max(r.ratio for r in stacks)
        out.append(Target(label, text, "PASS" if worst <= STACK_TARGET else "MISS"))
    else:
        out.append(Target(label, "not measured (--no-stack)", "—"))
    return out


# --------------------------------------------------------------------------- tables


def e2e_table(rows: list[SizeRow], f32: Float32Row | None) -> tuple[list[str], list[list[str]]]:
    head = ["n", "B", "T", "gateflow s", "JAX s", "PyTorch s", "JAX/gateflow",
            "PyTorch/gateflow", "peak MiB gateflow / JAX / PyTorch", "max |Δ log10|"]
    body = []
    for r in rows:
        g = r.e2e.get("gateflow")

        def cell(name, r=r):
            return fmt_s(r.e2e[name].wall) if name in r.e2e else r.why.get(name, "—")

        def ratio(name, r=r, g=g):
            return _fmt_x(r.e2e[name].wall / g.wall) if g and name in r.e2e else "—"

        mem = " / ".join(_fmt_mb(r.e2e[k].rss_mib if k in r.e2e else None)
                         for k in ("gateflow", "jax", "torch"))
        diff = max(r.diff.values()) if r.diff else None
        body.append([str(r.shape.n), str(r.shape.B), str(r.shape.T), cell("gateflow"),
                     cell("jax"), cell("torch"), ratio("jax"), ratio("torch"), mem,
                     "—" if diff is None else f"{diff:.1e}"])
    if f32 is not None:
        s = f32.shape
        body.append([f"{s.n} (float32)", str(s.B), str(s.T),
                     fmt_s(f32.e2e.wall) if f32.e2e else (f32.why or "—"),
                     "—", "—", "—", "—",
                     f"{_fmt_mb(f32.e2e.rss_mib if f32.e2e else None)} / — / —",
                     f"{f32.diff_vs_f64:.1e} vs float64"])
    return head, body


def kernel_table(rows: list[SizeRow],
                 f32: Float32Row | None) -> tuple[list[str], list[list[str]]]:
    head = ["n", "B", "T", "dtype", "kernel s", "kernel GFLOP/s", "ceiling s (GFLOP/s)",
            "kernel % of ceiling", "stacked s (GFLOP/s)", "kernel % of stacked"]
    body = []
    items = [(r, "float64") for r in rows] + ([(f32, "float32")] if f32 is not None else [])
    for r, dt in items:
        c, k, s = r.ceiling, r.kernel, r.shape
        body.append([str(s.n), str(s.B), str(s.T), dt,
                     fmt_s(k) if k else "failed",
                     _fmt_g(c.dense_flops / k / 1e9) if k else "—",
                     f"{fmt_s(c.dense)} ({_fmt_g(c.dense_flops / c.dense / 1e9)})",
                     f"{100 * c.dense / k:.0f}%" if k else "—",
                     f"{fmt_s(c.stacked)} ({_fmt_g(c.stacked_flops / c.stacked / 1e9)})",
                     f"{100 * c.stacked / k:.0f}%" if k else "—"])
    return head, body


def gpu_lines(gpu: GpuRun | GpuSkipped | None) -> list[str]:
    if gpu is None:
        return ["Not run here (`--no-gpu`). The GPU figures come from a separate run on a "
                "machine with a GPU, `python benchmarks/run.py --gpu-only`: see "
                "[benchmarks-gpu.md](benchmarks-gpu.md)."]
    if isinstance(gpu, GpuSkipped):
        return [f"GPU: skipped ({gpu.why})."]
    d, s = gpu.device, gpu.shape
    a = gpu.agree_shape
    ok = "PASS" if gpu.agree_diff <= GPU_TOL else "MISS"
    e2e = f"{gpu.e2e:.2f} s" if gpu.e2e is not None else gpu.e2e_why
    if gpu.cpu_extrapolated:
        cpu = (f"{gpu.cpu64:.2f} s **extrapolated** linearly from a measured "
               f"{gpu.cpu_measured:.2f} s at T={gpu.cpu_steps} (the sweep costs the same per "
               "step)")
    else:
        cpu = f"{gpu.cpu64:.2f} s (measured)"
    return [
        f"Device: {d.name} ×{d.count}, {d.memory_gib:.0f} GiB, CuPy {d.cupy}, "
        f"CUDA runtime {d.cuda_runtime}.", "",
        f"- Agreement numpy vs cupy, float64, n={a.n} B={a.B} T={a.T}: "
        f"max |Δ log10 ‖·‖_F| = {gpu.agree_diff:.1e} (target ≤ {GPU_TOL:g}): **{ok}**",
        f"- Shape n={s.n} B={s.B} T={s.T}; GEMM flops 4·B·n³·T = {gpu.flops / 1e9:,.0f} GFLOP.",
        f"- gateflow cupy end to end (fresh process, float64): {e2e}",
        f"- gateflow cupy kernel (warm), float64: {gpu.gpu64:.3f} s "
        f"({gpu.flops / gpu.gpu64 / 1e9:.0f} GFLOP/s); float32: "
        f"{gpu.gpu32:.3f} s ({gpu.flops / gpu.gpu32 / 1e9:.0f} GFLOP/s), "
        f"max |Δ log10| float32 vs float64 {gpu.gpu32_diff:.1e}",
        f"- gateflow numpy CPU (warm, float64, BLAS threads: "
        f"{gpu.cpu_threads}): {cpu} ({gpu.flops / gpu.cpu64 / 1e9:.0f} GFLOP/s)",
        f"- speed-up GPU vs CPU (float64): {gpu.cpu64 / gpu.gpu64:.1f}×",
    ]


def md_table(head: list[str], body: list[list[str]]) -> list[str]:
    esc = [[c.replace("|", "\\|") for c in row] for row in [head] + body]
    lines = ["| " + " | ".join(esc[0]) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in esc[1:]]
    return lines


def print_rich(title: str, head: list[str], body: list[list[str]]) -> None:
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


def machine_lines(m: Machine, peers: dict[str, PeerStatus]) -> list[str]:
    versions = [f"python {m.python}", f"numpy {m.numpy}", f"gateflow {m.gateflow}"]
    for name in ("jax", "torch"):
        p = peers.get(name)
        if p is not None:
            versions.append(f"{name} {p.version}" if p.version
                            else f"{name} not installed ({p.why})")

    def loads(v):
        return ", ".join(f"{x:.1f}" for x in v) if v else "unknown"

    load = f"- Load average (1, 5, 15 min) at the start: {loads(m.load)}"
    if m.load_end:
        load += f"; at the end: {loads(m.load_end)}"
    load += " (on a shared machine timings are noisy; every time is a best of repeats)"
    memory = m.memory_gib if m.memory_gib is not None else float("nan")
    return [
        f"- CPU: {m.cpu}, {m.cores} logical cores ({m.cores_usable} usable), "
        f"{memory:.1f} GiB memory; {m.platform}",
        f"- BLAS (numpy): {m.blas}",
        load,
        f"- Versions: {', '.join(versions)}",
    ]


# --------------------------------------------------------------------------- the report


def _cpu_sections(res: Results, echo: bool) -> list[str]:
    """The CPU part: job, end to end, kernel vs ceiling, agreement, targets."""
    rows, f32, mem, s = res.rows, res.f32, res.mem, res.settings
    threads = res.machine.blas_threads
    hows = set().union(*(r.rss_hows for r in [*rows, f32, mem] if r is not None))
    rss_how = ("the child's own peak resident set (VmHWM of its address space, read at exit "
               "by a wrapper; not `ru_maxrss`, which on Linux inherits the parent's peak)")
    if "ru_maxrss" in hows:
        rss_how += ("; where /proc was unavailable `ru_maxrss` from `os.wait4`, an upper "
                    "bound that includes this harness's own peak")
    md = ["## Job", "",
          "`log10 ‖∂c_T/∂c_{T−k}‖_F` for every lag k = 1..T of a single-layer LSTM, "
          "float64 (block `c/c`, Frobenius norm only; lag k at index k−1), PyTorch "
          "initialisation (`init_params`), inputs N(0, 1) (`make_inputs`). Every contender "
          "reads the same weights file (`.npz`, PyTorch names) and inputs file (`.npy`).",
          "",
          "## End to end (fresh process each)", "",
          "Wall time of a whole subprocess — interpreter start, imports, loading the "
          "compiled evaluators (gateflow; derived with SymPy and lambdified on the first "
          "run, then cached on disk) or tracing + XLA compilation (JAX), reading the files, "
          f"the job, writing the (T, B) result — best of up to {s.repeats} "
          f"(no repeat after a run over {s.slow:g} s). Peak memory: {rss_how}. "
          f"Every contender uses its default threading ({threads} BLAS threads for "
          "gateflow's backward sweep; its forward pass is single-threaded). "
          "Ratio > 1: gateflow is faster. "
          "max |Δ log10|: largest difference between any two contenders' log10 norms.", ""]
    head, body = e2e_table(rows, f32)
    md += md_table(head, body)
    if echo:
        print_rich("End to end (subprocess, best of repeats)", head, body)
    title = f"Kernel vs BLAS ceiling (in process, {threads} BLAS threads)"
    md += ["", f"## {title}", "",
           "kernel: gateflow `all_lags` (forward pass keeping each step's coefficients, "
           "backward sweep, norms) after a warm-up call, best of repeats. ceiling: only "
           "the GEMMs the kernel performs — per LSTM step two batched "
           "(B, n, n) @ (B, n, n) products "
           "(4·B·n³ flops; the GFLOP/s columns count these flops). stacked: the "
           "alternative of one (B·n × 4n) @ (4n × n) GEMM per step (8·B·n³ flops), "
           "what a sweep that does not form K_t would pay. kernel % = ceiling time / kernel "
           "time.", ""]
    head, body = kernel_table(rows, f32)
    md += md_table(head, body)
    if echo:
        print_rich(title, head, body)

    agree = [f"{r.shape.n}: " + ", ".join(f"{k} {v:.1e}" for k, v in r.diff.items())
             for r in rows]
    worst = max((v for r in rows for v in r.diff.values()), default=None)
    lines = ["Agreement: max |Δ log10 ‖∂c_T/∂c_{T−k}‖_F| = "
             + ("— (nothing to compare)" if worst is None else f"{worst:.1e}")
             + f" (tolerance {TOL:g}; vs gateflow, per n — " + "; ".join(agree) + ")"]
    if f32 is not None:
        f64_kernel = next((r.kernel for r in rows if r.shape == f32.shape), None)
        lines.append(f"float32 (gateflow, {f32.shape.label}): max |Δ log10 "
                     f"‖·‖_F| vs float64 = {f32.diff_vs_f64:.1e} (decades); kernel "
                     f"{fmt_s(f32.kernel)} s vs float64 {fmt_s(f64_kernel)} s")
    if mem is not None:
        if mem.e2e is not None:
            lo, hi = mem.log10_range
            lines.append(f"Memory: gateflow {mem.shape.label}: peak RSS "
                         f"{mem.e2e.rss_mib:.0f} MiB, end to end {mem.e2e.wall:.2f} s, all "
                         f"norms finite: {mem.finite}, log10 norms {lo:.1f}..{hi:.1f}")
        else:
            lines.append(f"Memory: gateflow {mem.shape.label}: {mem.why}")
    md += ["", "## Agreement and accuracy", ""] + ["- " + line for line in lines]
    if echo:
        print("\n".join(lines))
    if res.stacks:
        title = "2-layer stack (--layer all) vs one layer (in process)"
        md += ["", f"## {title}", "",
               "`all_lags` on one LSTM layer and on `gf.stack(\"lstm\", 2)` (the same "
               "n, B, T; layer 1 reads layer 0's h at the same step), every nonzero block "
               "at every lag: 4 blocks for one layer, 12 for the stack (the 4 blocks from "
               "layer 1 to layer 0 are exactly zero and not computed). The stack's rows of "
               "layer 0 are carried through layer 0 only, those of layer 1 through both. "
               "agree: max |Δ log10| between the stack's layer-0 blocks and the single "
               "layer's. In GEMM flops the stack needs 4 single-layer backward steps per "
               "step, not 3: layer 0's rows through layer 0 (1), and layer 1's rows through "
               "U of layer 1 (1), W of layer 1 into h of layer 0 (1) and layer 0 (1); the "
               "frobenius rows (GEMM-bound) show it, the spectral norm (12 blocks against "
               "4) is 3× by construction.", ""]
        head = ["shape", "norms", "one layer (s)", "2-layer stack (s)", "ratio", "agree"]
        body = [[r.shape.label, ",".join(r.norms), f"{r.one_layer:.3f}",
                 f"{r.two_layers:.3f}", f"{r.ratio:.2f}×", f"{r.agree:.1e}"]
                for r in res.stacks]
        md += md_table(head, body)
        if echo:
            print_rich(title, head, body)
    if res.lyapunov:
        from gfbench.lyapunov import lines as lyapunov_lines

        section = lyapunov_lines(res.lyapunov)
        md += [""] + section
        if echo:
            print("\n".join(section))
    head = ["target", "measured", "verdict"]
    body = [[t.label, t.measured, t.verdict] for t in targets(rows, mem, res.stacks)]
    md += ["", "## Targets (issues 5 and 10)", ""] + md_table(head, body)
    if echo:
        print_rich("Targets (issues 5 and 10)", head, body)
    return md


def render(res: Results, echo: bool = False) -> str:
    """The Markdown report; with ``echo``, its tables and lines on stdout too."""
    md = [f"# gateflow benchmarks{' — GPU' if res.gpu_only else ''}", "",
          f"Generated {_dt.datetime.now().isoformat(timespec='seconds')} by `{res.command}` "
          f"in {res.total:.0f} s.", "", "## Machine", ""]
    md += machine_lines(res.machine, res.peers)
    md += [""]
    if res.rows:
        md += _cpu_sections(res, echo)
    elif res.lyapunov:  # --lyapunov-only
        from gfbench.lyapunov import lines as lyapunov_lines

        section = lyapunov_lines(res.lyapunov)
        md += section
        if echo:
            print("\n".join(section))
        md += ["", f"Total benchmark time: {res.total:.0f} s.", ""]
        return "\n".join(md)
    md += ["", "## GPU (gateflow `backend=\"cupy\"` vs NumPy CPU)", ""]
    gl = gpu_lines(res.gpu)
    md += gl
    if echo:
        print("GPU:\n  " + "\n  ".join(line for line in gl if line))
    md += ["", f"Total benchmark time: {res.total:.0f} s.", ""]
    return "\n".join(md)


def check_report_path(path: Path) -> Path:
    """Refuse, before any work, a report path that cannot be written (its folders are
    created); an existing report is replaced."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return check_file(path, "report", overwrite=True)


def write_report(path: Path, text: str) -> None:
    """Write the report all or nothing (an existing report is replaced)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_files({path: text.encode("utf-8")}, overwrite=True)

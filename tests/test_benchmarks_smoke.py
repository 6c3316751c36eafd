"""Smoke test of the benchmark harness: ``benchmarks/run.py --quick`` at a tiny size.

Timings are not asserted (they live in the benchmark report, not in tests); only that the
harness runs, writes its Markdown report with the tables and the agreement line, and
reports peers that are not installed as skipped instead of crashing. The report writer is
also checked on its own (``benchmarks/gfbench``), with made-up results: the GPU section in
the committed format, which no CPU machine runs, and the all-or-nothing write.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / "benchmarks" / "run.py"
if str(ROOT / "benchmarks") not in sys.path:  # benchmarks/ is not a package: run.py's way
    sys.path.insert(0, str(ROOT / "benchmarks"))


def _run(tmp_path: Path, *args: str, env_extra: dict | None = None) -> tuple[str, str]:
    out = tmp_path / "reports" / "bench.md"
    env = dict(os.environ)
    env.update(env_extra or {})
    r = subprocess.run([sys.executable, str(RUN), "--quick", "--sizes", "8", "--no-gpu",
                        "--out", str(out), *args],
                       capture_output=True, text=True, cwd=str(tmp_path), env=env, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    assert out.is_file()
    assert not list(out.parent.glob(".*.tmp")), "atomic write left a temporary file"
    return out.read_text(encoding="utf-8"), r.stdout


def _row(md: str, first_cell: str) -> list[str]:
    for line in md.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no table row starting with {first_cell!r}")


@pytest.mark.slow
def test_quick_run_writes_report(tmp_path):
    md, stdout = _run(tmp_path, "--no-memory")
    assert "## Machine" in md and "BLAS (numpy)" in md
    assert "python benchmarks/run.py --quick" in md
    # end-to-end table with its header and a row for n=8
    assert "| n | B | T | gateflow s | JAX s | PyTorch s |" in md
    row = _row(md, "8")
    float(row[3])  # gateflow ran end to end
    for col, module in ((4, "jax"), (5, "torch")):
        if importlib.util.find_spec(module) is None:
            assert row[col].startswith("skipped"), row
        else:
            float(row[col])
    # kernel table and the float32 row
    assert "| n | B | T | dtype | kernel s |" in md
    assert "8 (float32)" in md
    # agreement line, and it passes
    assert "Agreement: max |Δ log10" in md
    assert "Agreement: max |Δ log10" in stdout
    agree = next(line for line in md.splitlines() if line.startswith("| all contenders agree"))
    assert "≤ 1e-08" in agree
    if "nothing to compare" not in agree:
        assert agree.endswith("| PASS |"), agree
    assert "## Targets (issues 5 and 10)" in md
    assert "## GPU" in md


def test_missing_peers_are_skipped(tmp_path):
    """With jax and torch unimportable the harness still runs and says "skipped"."""
    shadow = tmp_path / "shadow"
    for module in ("jax", "torch"):
        (shadow / module).mkdir(parents=True)
        (shadow / module / "__init__.py").write_text(
            f"raise ImportError('{module} hidden by the smoke test')\n")
    pythonpath = os.pathsep.join(filter(None, [str(shadow), os.environ.get("PYTHONPATH")]))
    md, _ = _run(tmp_path, "--steps", "5", env_extra={"PYTHONPATH": pythonpath})
    row = _row(md, "8")
    float(row[3])
    assert row[4].startswith("skipped") and row[5].startswith("skipped"), row
    assert "jax not installed" in md and "torch not installed" in md
    assert "Agreement: max |Δ log10" in md
    # the quick memory row ran, at its reduced size (the real target is not claimed)
    assert "Memory: gateflow n=16 B=2 T=200: peak RSS" in md


def test_contender_programs_are_files():
    """The harness runs real programs, not source strings; nothing writes on its own."""
    bench = ROOT / "benchmarks"
    for name in ("peers.py", "gateflow_job.py", "gfbench/peak.py"):
        assert (bench / name).is_file(), name
    from gfbench import cases, harness

    assert cases.JOB == bench / "gateflow_job.py" and cases.PEERS == bench / "peers.py"
    assert harness.PEAK == bench / "gfbench" / "peak.py"
    for path in bench.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "atomic_write" not in text and "r'''" not in text, path


def _gpu_results():
    from gfbench.results import GpuDevice, GpuRun, Machine, Results, Settings, Shape

    machine = Machine(python="3.12.3", platform="Linux", cpu="Xeon", cores=16,
                      cores_usable=16, memory_gib=125.9, blas="openblas (16 threads)",
                      blas_threads=16, numpy="2.5.2", gateflow="0.1.0", load=(0.3, 0.1, 0.0),
                      load_end=(4.0, 1.0, 0.3))
    gpu = GpuRun(device=GpuDevice("NVIDIA H200", 1, 139.8, "14.2.0", 13020),
                 agree_shape=Shape(64, 4, 50), agree_diff=1.8e-15, shape=Shape(1024, 64, 256),
                 cpu_steps=16, flops=4.0 * 64 * 1024**3 * 256, e2e=13.54, e2e_why=None,
                 gpu64=3.306, gpu32=3.460, gpu32_diff=2.5e-7, cpu_measured=10.53,
                 cpu_threads="all (16)", cpu64=10.53 * 16, cpu_gpu_diff=None)
    return Results(command="python benchmarks/run.py --gpu-only", gpu_only=True,
                   settings=Settings(repeats=3, slow=20.0, timeout=900.0, seed=0),
                   machine=machine, gpu=gpu, total=67.0)


def test_gpu_section_format():
    """The GPU section, rendered from a GpuRun, reads like the committed GPU report."""
    from gfbench import report

    md = report.render(_gpu_results())
    committed = (ROOT / "reports" / "benchmarks-gpu.md").read_text(encoding="utf-8")

    def section(text):
        lines = text.split("## GPU", 1)[1].splitlines()
        return [re.sub(r"[0-9][0-9.,e+-]*", "N", ln) for ln in lines]

    assert section(md) == section(committed)
    assert md.startswith("# gateflow benchmarks — GPU\n")
    assert "- speed-up GPU vs CPU (float64): 51.0×" in md
    assert "**extrapolated** linearly from a measured 10.53 s at T=16" in md
    assert "## Job" not in md and "## Targets" not in md


def test_report_written_all_or_nothing(tmp_path):
    """The report replaces an old one through gateflow's writer; a folder is refused."""
    from gfbench import report

    from gateflow import GateflowError

    out = tmp_path / "new" / "bench.md"
    report.check_report_path(out)
    report.write_report(out, "old\n")
    report.write_report(out, "new\n")
    assert out.read_text(encoding="utf-8") == "new\n"
    assert [p.name for p in out.parent.iterdir()] == ["bench.md"]
    with pytest.raises(GateflowError, match="folder"):
        report.check_report_path(tmp_path)
    with pytest.raises(GateflowError):
        report.write_report(tmp_path / "new", "x")


def test_out_folder_refused_before_work(tmp_path):
    """--out naming a folder fails at once, with one line, before anything is measured."""
    r = subprocess.run([sys.executable, str(RUN), "--quick", "--no-gpu", "--out",
                        str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert r.stderr.strip().startswith("error: cannot write report"), r.stderr
    assert "== n=" not in r.stderr


@pytest.mark.slow
def test_gpu_case_with_numpy_standing_in(tmp_path, monkeypatch):
    """The GPU case runs through (no GPU here): NumPy stands in for CuPy, and every field of
    the GpuRun it returns is filled and renders."""
    from gfbench import cases, report
    from gfbench.results import GpuDevice, GpuRun, Settings

    lags, cmd = cases._lags, cases.Inputs.gateflow_cmd
    monkeypatch.setattr(cases, "gpu_device", lambda: GpuDevice("stand-in", 1, 1.0, "0", 0))
    monkeypatch.setattr(cases, "_lags", lambda p, x, dtype="float64", backend="numpy",
                        threads=None: lags(p, x, dtype, "numpy", threads))
    monkeypatch.setattr(cases.Inputs, "gateflow_cmd", lambda self, out, dtype="float64",
                        backend="numpy": cmd(self, out, dtype, "numpy"))
    gpu = cases.bench_gpu(tmp_path, Settings(repeats=1, slow=20.0, timeout=300.0, seed=0,
                                             quick=True))
    assert isinstance(gpu, GpuRun), gpu
    assert gpu.e2e is not None and gpu.e2e_why is None
    assert gpu.agree_diff == 0.0 and gpu.cpu_gpu_diff == 0.0 and not gpu.cpu_extrapolated
    assert gpu.gpu32_diff < 1e-4
    lines = report.gpu_lines(gpu)
    assert lines[0].startswith("Device: stand-in ×1")
    assert lines[2].endswith("**PASS**") and lines[-2].endswith("GFLOP/s)")
    assert "(measured)" in lines[-2]

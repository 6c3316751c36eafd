"""Smoke test of the benchmark harness: ``benchmarks/run.py --quick`` at a tiny size.

Timings are not asserted (they live in the benchmark report, not in tests); only that the
harness runs, writes its Markdown report with the tables and the agreement line, and
reports peers that are not installed as skipped instead of crashing.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / "benchmarks" / "run.py"


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
    assert "## Targets (issue 5)" in md
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

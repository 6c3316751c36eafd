"""``gateflow sweep``: a real dask LocalCluster (worker processes on 127.0.0.1), a tiny grid.

The cluster is started here, once per module, and handed to the CLI with ``--scheduler``;
the horizons it computes must equal a serial computation of the same grid in this process.
"""

from __future__ import annotations

import csv
import json
import socket
from datetime import datetime

import dask
import numpy as np
import pytest
from typer.testing import CliRunner

import gateflow
from gateflow import GateflowError
from gateflow.analysis._analysis import fit_batch
from gateflow.cli import app
from gateflow.jobs._sweep import SweepGrid, default_out, run_serial

runner = CliRunner()
CELLS = ("rnn", "lstm", "gru")
TINY = ["--points", "2", "--hidden", "8", "--steps", "30", "--batch", "2"]


@pytest.fixture(scope="module")
def scheduler():
    from dask.distributed import Client, LocalCluster

    # dashboard off; the scheduler's remaining HTTP endpoint on a free port (not 8787, which
    # warns "already in use" when another cluster runs on this machine)
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                           host="127.0.0.1", dashboard_address=None,
                           scheduler_kwargs={"dashboard_address": "127.0.0.1:0"})
    try:
        with Client(cluster, set_as_default=False) as client:  # wait until both are up
            client.wait_for_workers(2, timeout=60)
        yield cluster.scheduler_address
    finally:
        cluster.close()


def invoke(*args: str):
    return runner.invoke(app, ["sweep", *args])


def test_sweep_on_cluster_matches_serial(scheduler, tmp_path):
    out = tmp_path / "sweep"
    result = invoke("--out", str(out), "--scheduler", scheduler, "--cells", ",".join(CELLS),
                    "--quiet", *TINY)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(out)
    files = sorted(p.name for p in out.iterdir())
    assert files == sorted([".gateflow-manifest.json", "sweep.json", "sweep.csv",
                            *(f"heatmap-{c}.png" for c in CELLS)])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders

    data = json.loads((out / "sweep.json").read_text())
    serial = run_serial([gateflow.get_cell(c) for c in CELLS], SweepGrid.make(2, n=8, T=30, B=2))
    for name in CELLS:
        assert data["cells"][name]["horizon"] == serial.cells[name].horizon
    assert data["cells"]["rnn"]["y"]["param"] == "sigma_b"
    assert data["cells"]["lstm"]["y"]["param"] == "gate_bias"
    assert data["cells"]["lstm"]["block"] == "c/c" and data["cells"]["gru"]["block"] == "h/h"
    # The grid spans both phases: small σ_w and a closed gate forget fast, b_f = 4 does not.
    lstm = data["cells"]["lstm"]["horizon"]
    assert lstm[0][0] is not None and lstm[1][0] is None

    rows = list(csv.DictReader((out / "sweep.csv").read_text().splitlines()))
    assert len(rows) == 3 * 4
    for row in rows:
        cs = serial.cells[row["cell"]]
        i = cs.y.values.index(float(row["y"]))
        j = cs.sigma_w.index(float(row["sigma_w"]))
        h = cs.horizon[i][j]
        assert row["horizon"] == ("" if h is None else str(h))
        assert row["reached"] == str(h is not None)


def test_overwrite_replaces_folder(scheduler, tmp_path):
    out = tmp_path / "old"
    result = invoke("--out", str(out), "--scheduler", scheduler, "--cells", "lstm", *TINY)
    assert result.exit_code == 0, result.output
    result = invoke("--out", str(out), "--scheduler", scheduler, "--cells", "gru",
                    "--overwrite", *TINY)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [".gateflow-manifest.json",
                                                      "heatmap-gru.png", "sweep.csv",
                                                      "sweep.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["old"]
    (out / "stale.txt").write_text("mine")  # not gateflow's: the folder is kept
    result = invoke("--out", str(out), "--scheduler", scheduler, "--cells", "gru",
                    "--overwrite", *TINY)
    assert result.exit_code == 2 and "'stale.txt', which gateflow did not write" in result.stderr
    assert (out / "stale.txt").read_text() == "mine"


def test_default_local_cluster(tmp_path):
    """Without --scheduler the command starts its own LocalCluster and closes it."""
    out = tmp_path / "local"
    result = invoke("--out", str(out), "--cells", "lstm", "--points", "1", "--hidden", "4",
                    "--steps", "10", "--batch", "1")
    assert result.exit_code == 0, result.output
    data = json.loads((out / "sweep.json").read_text())
    assert data["meta"]["scheduler"] == "LocalCluster" and data["meta"]["workers"] == 2
    assert "1/1" in result.stderr  # the progress bar (on stderr)


def test_refuses_existing_out(tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = invoke("--out", str(out), "--scheduler", "tcp://127.0.0.1:1", *TINY)
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and result.stderr.strip().count("\n") == 0
    assert "--overwrite" in result.stderr
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert (out / "keep.txt").read_text() == "mine"
    assert [p.name for p in tmp_path.iterdir()] == ["taken"]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


def test_bad_scheduler_exits_2_with_one_line(tmp_path):
    out = tmp_path / "never"
    address = f"tcp://127.0.0.1:{_closed_port()}"
    with dask.config.set({"distributed.comm.timeouts.connect": "3s"}):
        result = invoke("--out", str(out), "--scheduler", address, "--quiet", *TINY)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: cannot connect to a dask scheduler")
    assert address in result.stderr
    assert result.stderr.strip().count("\n") == 0
    assert "Traceback" not in result.output
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_unknown_cell_exits_2_before_any_work(tmp_path):
    result = invoke("--out", str(tmp_path / "x"), "--cells", "rnn,lstn", *TINY)
    assert result.exit_code == 2
    assert "lstn" in result.stderr and "did you mean" in result.stderr
    assert list(tmp_path.iterdir()) == []


def _memory_horizon(logs):
    return fit_batch(logs).horizon  # the one fit every job uses


def test_memory_horizon():
    T, B = 10, 3
    logs = np.zeros((T, B))
    logs[:, 0] = -np.arange(1, T + 1)  # 1e-1, 1e-2, ...: below 1e-6 from lag 7
    logs[:, 1] = -np.arange(1, T + 1) - 1.0  # below from lag 6
    logs[:, 2] = 0.0  # never
    assert _memory_horizon(logs) == 7  # the median follows the middle sequence
    assert _memory_horizon(np.zeros((T, B))) is None
    assert _memory_horizon(np.full((T, 2), -np.inf)) == 1  # exactly zero Jacobians
    assert _memory_horizon(np.full((T, 2), 400.0)) is None  # overflowing norms stay finite-safe


def test_default_out_is_fresh(tmp_path):
    now = datetime(2026, 1, 2, 3, 4, 5)
    first = default_out(tmp_path, now)
    assert first == tmp_path / "sweep-20260102-030405"
    first.mkdir()
    assert default_out(tmp_path, now) == tmp_path / "sweep-20260102-030405-2"


def test_grid_validation():
    with pytest.raises(GateflowError):
        SweepGrid.make(0)
    with pytest.raises(GateflowError):
        SweepGrid(sigma_w=(-1.0,))


def test_sweep_takes_variants_and_cells_resolved_once(tmp_path):
    """A variant name and a Cell object (a stack: no name resolves it) both sweep; the
    result is keyed by each cell's canonical name."""
    from gateflow.cells._library import cells_of

    stacked = gateflow.stack("gru", 2)
    chosen = cells_of(["lstm[gate=hard_sigmoid(0.2,0.5)]", stacked])
    assert [c.name for c in chosen] == ["lstm[gate=hard_sigmoid(0.2,0.5)]", "gru-stack2"]
    assert chosen[1] is stacked
    res = run_serial(chosen, SweepGrid.make(2, n=4, T=12, B=2))
    assert set(res.cells) == {"lstm[gate=hard_sigmoid(0.2,0.5)]", "gru-stack2"}
    assert res.cells["gru-stack2"].block == "h_l1/h_l1"
    with pytest.raises(GateflowError, match="unknown cell 'lstn'"):
        cells_of("rnn,lstn")

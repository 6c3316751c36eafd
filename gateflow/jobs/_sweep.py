"""Phase diagrams of memory: weight scale × gate bias → memory horizon, one task per point.

For every cell, a grid of Gaussian initialisations (recurrent weights ~ N(0, σ_w²/n), input
weights ~ N(0, σ_v²/d), other biases ~ N(0, σ_b²)) is swept against the bias of the gate on
the cell's memory path (:attr:`Cell.memory_bias`: the LSTM's ``b_f``, the GRU's ``b_z``).
Cells without such a gate (the Elman RNN) get σ_b, the scale of their bias, on the y axis
instead. Each point runs :func:`gateflow.all_lags` on the cell's memory block
(:attr:`Cell.memory_block`: ``c/c`` for the LSTM family, ``h/h`` otherwise) and reports the
*memory horizon* of the one fit (:func:`~gateflow.analysis._analysis.fit_batch`): the first
lag k at which the median over the batch of ‖∂s_T/∂s_{T−k}‖_F falls below 1e−6 (``None``
when it never does within T steps, shown as "≥ T").

Points are independent, so each is one task on a ``dask.distributed`` cluster:
:func:`point_task` is a top-level function of plain data (a Cell record, a config dict)
that the workers import themselves; :func:`run_sweep` maps it over the grid with whatever client it
is given (the CLI starts a local cluster or connects to ``--scheduler``). Every point uses
the same seeds (common random numbers), so neighbouring cells of a heatmap differ only by
the swept values, not by a fresh draw.

Outputs (:func:`write_sweep`) go to a new folder, written atomically: ``sweep.json`` (the
configuration and every horizon), ``sweep.csv`` (one row per point), both through the one
serializer (:mod:`gateflow.jobs._serialize`), and one heatmap per cell,
``heatmap-<cell>.png`` (:func:`gateflow.presentation._figures.sweep_heatmap`).
"""

from __future__ import annotations

import gc
import logging
import math
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from gateflow._errors import GateflowError, arg
from gateflow._interrupt import check as check_interrupt
from gateflow._io import check_dir, fresh_dir, out_path, staged_dir
from gateflow._validate import shown
from gateflow.cells._library import cells_of
from gateflow.cells._record import Cell
from gateflow.jobs._inputs import check_run, run_bytes
from gateflow.jobs._serialize import csv_cell, csv_text, json_text
from gateflow.numeric._observers import NORMS, OBSERVERS
from gateflow.presentation._numbers import given

#: A point's horizon is the first lag where the median Frobenius norm drops below this.
THRESHOLD = 1e-6
#: The norm of every point (the registry's first, cheap one: Frobenius).
NORM = NORMS[0]
DEFAULT_CELLS = ("rnn", "lstm", "gru")
#: Worker processes of the local cluster (one point each at a time).
LOCAL_WORKERS = 2
#: Seconds to wait for a scheduler given with ``--scheduler``.
CONNECT_TIMEOUT = 5
#: Most values per axis of a sweep grid (the grid has points² runs per cell).
MAX_POINTS = 100
#: Values per axis of a grid made without saying (:meth:`SweepGrid.make`).
POINTS = 6


@dataclass(frozen=True)
class SweepGrid:
    """The swept values and the fixed sizes. The defaults finish in well under a minute on
    one core (3 cells × 36 points of n = 32, T = 200, B = 4)."""

    sigma_w: tuple[float, ...] = tuple(np.round(np.linspace(0.5, 3.0, 6), 6).tolist())
    gate_bias: tuple[float, ...] = tuple(np.round(np.linspace(-2.0, 4.0, 6), 6).tolist())
    #: y axis for cells without a memory gate (the Elman RNN): the bias scale σ_b.
    sigma_b: tuple[float, ...] = tuple(np.round(np.linspace(0.0, 2.0, 6), 6).tolist())
    n: int = 32
    d: int = 8
    T: int = 200
    B: int = 4
    sigma_v: float = 1.0
    input_scale: float = 1.0
    seed: int = 0
    threshold: float = THRESHOLD

    def __post_init__(self):
        for name in ("sigma_w", "gate_bias", "sigma_b"):
            values = tuple(float(v) for v in getattr(self, name))
            if not values or not all(math.isfinite(v) for v in values):
                raise GateflowError(f"sweep grid {name} needs at least one finite value, "
                                    f"got {values!r}")
            object.__setattr__(self, name, values)
        if min(self.sigma_w) < 0 or min(self.sigma_b) < 0:
            raise GateflowError("sweep grid scales sigma_w and sigma_b must be >= 0")
        for name in ("n", "d", "T", "B"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise GateflowError(f"sweep grid {name} must be an integer >= 1, got {v!r}")
        if not 0 < self.threshold:
            raise GateflowError(f"sweep threshold must be > 0, got {self.threshold!r}")

    @classmethod
    def make(cls, points: int = POINTS, *, n: int | None = None, T: int | None = None,
             B: int | None = None) -> SweepGrid:
        """``points`` values per axis, evenly spaced over the default ranges
        (σ_w ∈ [0.5, 3], gate bias ∈ [−2, 4], σ_b ∈ [0, 2]); ``n``, ``T``, ``B`` (None:
        the grid's defaults)."""
        if isinstance(points, bool) or not isinstance(points, int) or points < 1:
            raise GateflowError(f"sweep grid needs at least 1 point per axis, got {points!r}")
        if points > MAX_POINTS:
            raise GateflowError(f"{arg('points')} {points} is too many: at most {MAX_POINTS} "
                                f"per axis ({MAX_POINTS}² = {MAX_POINTS**2} runs per cell)")

        def axis(lo: float, hi: float) -> tuple[float, ...]:
            return tuple(np.round(np.linspace(lo, hi, points), 6).tolist())

        sizes = {k: v for k, v in (("n", n), ("T", T), ("B", B)) if v is not None}
        return cls(sigma_w=axis(0.5, 3.0), gate_bias=axis(-2.0, 4.0), sigma_b=axis(0.0, 2.0),
                   **sizes)


@dataclass(frozen=True)
class Axis:
    """The y axis of one cell's diagram: which init argument it sets, and its label."""

    param: str  # "gate_bias" or "sigma_b"
    values: tuple[float, ...]
    label: str


@dataclass
class CellSweep:
    """One cell's diagram: ``horizon[i][j]`` at y = ``y.values[i]``, σ_w = ``sigma_w[j]``."""

    cell: str
    block: str
    sigma_w: tuple[float, ...]
    y: Axis
    horizon: list[list[int | None]]
    final_log10_median: list[list[float]]
    #: what the curve does at each point (vanishing, exploding, …; see analysis.classify)
    #: and its fitted per-step factor: an exploding point is never long memory
    regime: list[list[str | None]] = field(default_factory=list)
    factor: list[list[float]] = field(default_factory=list)


@dataclass
class SweepResult:
    grid: SweepGrid
    cells: dict[str, CellSweep] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)


# -- one point (runs on a worker) -----------------------------------------------------------
def point_task(cell: Cell, config: dict) -> dict:
    """One grid point: init, inputs, all lags of the memory block, horizon.

    A cell (a frozen record of equations) and plain data in, plain data out, so it can be
    pickled to and from dask workers (which import gateflow themselves). ``config`` holds
    the sizes (n, d, T, B), the init scales (sigma_w, sigma_v, sigma_b), ``gate_bias`` (or
    None), the input scale, the seed, the threshold and the grid indices (i, j), which are
    passed through.
    """
    from gateflow.analysis._analysis import fit_batch, summarize
    from gateflow.models._params import init_params, make_inputs
    from gateflow.numeric._chain import all_lags

    block = cell.memory_block
    params = init_params(cell, config["n"], config["d"], scheme="gaussian",
                         sigma_w=config["sigma_w"], sigma_v=config["sigma_v"],
                         sigma_b=config["sigma_b"], gate_bias=config["gate_bias"],
                         seed=config["seed"])
    x = make_inputs(config["T"], config["B"], config["d"], scale=config["input_scale"],
                    seed=config["seed"] + 1)
    res = all_lags(cell, params, x, blocks=(block,), norms=(NORM,))
    logs = res.blocks[block][OBSERVERS[NORM].key]
    fit = fit_batch(logs, threshold=config["threshold"])
    return {"cell": cell.name, "i": config["i"], "j": config["j"], "block": block,
            "horizon": fit.horizon, "regime": fit.regime, "factor": fit.factor,
            "final_log10_median": float(summarize(logs).median[-1])}


# -- the grid -------------------------------------------------------------------------------
def y_axis(cell, grid: SweepGrid) -> Axis:
    """Gate bias for cells with a memory gate; σ_b (bias scale) for those without."""
    if cell.memory_bias is None:
        return Axis("sigma_b", grid.sigma_b,
                    rf"bias scale $\sigma_b$ ({cell.name} has no gate: "
                    rf"$b \sim \mathcal{{N}}(0, \sigma_b^2)$)")
    name, sign = cell.memory_bias
    rel = "" if sign > 0 else "−"
    return Axis("gate_bias", grid.gate_bias, f"gate bias ({name} = {rel}value on every unit)")


def tasks(cells: Iterable[Cell], grid: SweepGrid) -> list[tuple[Cell, dict]]:
    """Every (cell, config) of the sweep, in row-major order per cell."""
    out = []
    for cell in cells:
        axis = y_axis(cell, grid)
        for i, y in enumerate(axis.values):
            for j, sw in enumerate(grid.sigma_w):
                out.append((cell, {
                    "i": i, "j": j, "n": grid.n, "d": grid.d, "T": grid.T, "B": grid.B,
                    "sigma_w": sw, "sigma_v": grid.sigma_v,
                    "sigma_b": y if axis.param == "sigma_b" else 0.0,
                    "gate_bias": y if axis.param == "gate_bias" else None,
                    "input_scale": grid.input_scale, "seed": grid.seed,
                    "threshold": grid.threshold,
                }))
    return out


def _assemble(cells: Sequence[Cell], grid: SweepGrid, points: Iterable[dict]) -> SweepResult:
    result = SweepResult(grid=grid)
    for cell in cells:
        axis = y_axis(cell, grid)
        shape = (len(axis.values), len(grid.sigma_w))
        result.cells[cell.name] = CellSweep(
            cell=cell.name, block=cell.memory_block, sigma_w=grid.sigma_w, y=axis,
            horizon=[[None] * shape[1] for _ in range(shape[0])],
            final_log10_median=[[math.nan] * shape[1] for _ in range(shape[0])],
            regime=[[None] * shape[1] for _ in range(shape[0])],
            factor=[[math.nan] * shape[1] for _ in range(shape[0])])
    for p in points:
        cs = result.cells[p["cell"]]
        cs.horizon[p["i"]][p["j"]] = p["horizon"]
        cs.final_log10_median[p["i"]][p["j"]] = p["final_log10_median"]
        cs.regime[p["i"]][p["j"]] = p["regime"]
        cs.factor[p["i"]][p["j"]] = p["factor"]
    return result


def run_serial(cells: Sequence[Cell], grid: SweepGrid) -> SweepResult:
    """The same sweep in this process, one point after another (the reference for tests)."""
    return _assemble(cells, grid, (point_task(c, cfg) for c, cfg in tasks(cells, grid)))


def run_sweep(client, cells: Sequence[Cell], grid: SweepGrid,
              progress: Callable[[int, int], None] | None = None) -> SweepResult:
    """Map :func:`point_task` over the grid on a ``dask.distributed`` client, collecting
    results as they complete; ``progress(done, total)`` is called after each point."""
    from dask.distributed import as_completed

    todo = tasks(cells, grid)
    futures = client.map(point_task, [c for c, _ in todo], [cfg for _, cfg in todo],
                         pure=False)
    points = []
    try:
        for fut in as_completed(futures, loop=client.loop):
            check_interrupt()  # a Ctrl-C Python swallowed stops here
            points.append(_result(fut))
            if progress is not None:
                progress(len(points), len(todo))
    except BaseException:
        client.cancel(futures)  # don't leave the rest running on a shared cluster
        raise
    return _assemble(cells, grid, points)


def _result(fut) -> dict:
    from distributed import KilledWorker

    try:
        return fut.result()
    except KilledWorker as exc:
        raise GateflowError(f"a dask worker died while computing a sweep point ({exc}); "
                            "check the workers' memory and logs") from None


# -- clients ------------------------------------------------------------------------------
def check_memory(cells: Sequence[Cell], grid: SweepGrid, concurrent: int) -> None:
    """Refuse a sweep whose points cannot fit: ``concurrent`` of the largest point at once
    on this machine (a remote scheduler's workers check their own points again)."""
    peak = max(run_bytes(c, grid.n, grid.d, grid.T, grid.B, blocks=(c.memory_block,),
                         norms=(NORM,)) for c in cells)
    check_run(concurrent * peak, "this sweep", f"use a smaller {arg('hidden')}, "
              f"{arg('steps')} or {arg('batch')}")


def _check_address(address: str) -> None:
    """A scheduler address must look like ``protocol://host:port`` (dask's form)."""
    import re

    if not re.fullmatch(r"(tcp|tls|inproc|ucx|ws|wss)://[^\s/]+(:\d{1,5})?/?", address):
        raise GateflowError(f"{arg('scheduler')} {address!r} is not a dask scheduler address; give "
                            "protocol://host:port, e.g. tcp://127.0.0.1:8786")


def connect(address: str):
    """A ``Client`` connected to an existing scheduler within :data:`CONNECT_TIMEOUT`
    seconds, or a GateflowError saying why not."""
    import dask
    from dask.distributed import Client

    _check_address(address)
    # A half-built Client complains from __del__ ("Exception ignored in ..."): collect it
    # here, quietly, so the user sees one line.
    previous = sys.unraisablehook
    sys.unraisablehook = lambda unraisable: None
    try:
        try:
            with dask.config.set({"distributed.comm.timeouts.connect": f"{CONNECT_TIMEOUT}s"}):
                return Client(address, set_as_default=False, timeout=CONNECT_TIMEOUT)
        except MemoryError:  # it answered, but not in dask's protocol (a huge "frame")
            text = "it does not speak dask's protocol"
        except Exception as exc:  # noqa: BLE001 - any failure means: not a usable scheduler
            text = " ".join(str(exc).split())[:160] or type(exc).__name__
        gc.collect()
    finally:
        sys.unraisablehook = previous
    raise GateflowError(f"cannot connect to a dask scheduler at {address!r} ({text}); check "
                        "the address (tcp://host:port of a running scheduler) or omit "
                        f"{arg('scheduler')} to start a local cluster")


def local_cluster(n_workers: int = LOCAL_WORKERS):
    """A cluster of worker processes on this machine, without a dashboard.

    The scheduler still serves a small HTTP endpoint (health, metrics) even without the
    dashboard, on port 8787 by default; it gets a free port on 127.0.0.1 instead, so a
    second cluster on the same machine neither collides nor warns "Port 8787 is in use".
    """
    from dask.distributed import LocalCluster

    return LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                        host="127.0.0.1", dashboard_address=None, silence_logs=logging.CRITICAL,
                        scheduler_kwargs={"dashboard_address": "127.0.0.1:0"})


# -- output -------------------------------------------------------------------------------
def default_out(root: Path | str = "reports", now: datetime | None = None) -> Path:
    """A fresh folder under ``root``: ``sweep-YYYYmmdd-HHMMSS`` (``-2``, ``-3``, … if taken)."""
    return fresh_dir(root, f"sweep-{(now or datetime.now()).strftime('%Y%m%d-%H%M%S')}")


check_out = check_dir


def to_json(result: SweepResult) -> dict:
    """sweep.json's object (non-finite numbers become null when written)."""
    grid = asdict(result.grid)
    return {
        "kind": "gateflow-sweep",
        "definition": ("memory horizon = first lag k where the median over the batch of "
                       f"||ds_T/ds_(T-k)||_F < {given(result.grid.threshold, style='plain')}; "
                       f"null = never within T = {result.grid.T} steps (>= T)"),
        "init": "gaussian: U ~ N(0, sigma_w^2/n), W ~ N(0, sigma_v^2/d), biases ~ N(0, sigma_b^2)",
        "grid": grid,
        "meta": result.meta,
        "cells": {
            name: {"block": cs.block, "x": {"param": "sigma_w", "values": list(cs.sigma_w)},
                   "y": {"param": cs.y.param, "values": list(cs.y.values), "label": cs.y.label},
                   "horizon": cs.horizon, "regime": cs.regime,
                   "per_step_factor": cs.factor,
                   "final_log10_median": cs.final_log10_median}
            for name, cs in result.cells.items()
        },
    }


def to_csv(result: SweepResult) -> str:
    """sweep.csv: one row per point."""
    rows = []
    for name, cs in result.cells.items():
        for i, y in enumerate(cs.y.values):
            for j, sw in enumerate(cs.sigma_w):
                h = cs.horizon[i][j]
                rows.append([name, cs.block, csv_cell(sw), cs.y.param, csv_cell(y),
                             csv_cell(h), str(h is not None), str(result.grid.T),
                             csv_cell(cs.final_log10_median[i][j], ".6g"),
                             cs.regime[i][j] or "", csv_cell(cs.factor[i][j], ".6g")])
    return csv_text(["cell", "block", "sigma_w", "y_param", "y", "horizon", "reached", "T",
                     "final_log10_median", "regime", "per_step_factor"], rows)


def write_sweep(result: SweepResult, out: Path, overwrite: bool = False) -> Path:
    """Write JSON, CSV and heatmaps into ``out`` all-or-nothing (see :func:`staged_dir`)."""
    from gateflow.presentation._figures import sweep_heatmap

    out = Path(out)
    with staged_dir(out, overwrite) as tmp:
        (tmp / "sweep.json").write_text(json_text(to_json(result), indent=2) + "\n",
                                        encoding="utf-8")
        (tmp / "sweep.csv").write_text(to_csv(result), encoding="utf-8")
        for name, cs in result.cells.items():
            sweep_heatmap(cs, result.grid).savefig(tmp / f"heatmap-{name}.png", dpi=110)
    return out


# -- the whole command --------------------------------------------------------------------
def sweep(out: Path | str | None = None, *, scheduler: str | None = None,
          cells: str | Sequence[str] = DEFAULT_CELLS, grid: SweepGrid | None = None,
          quiet: bool = False, overwrite: bool = False) -> tuple[Path, SweepResult]:
    """What ``gateflow sweep`` does: validate, compute every point on a dask cluster (a
    local one unless ``scheduler`` is given), write the folder. Returns (folder, result).

    Everything the user can get wrong (cell names, an existing ``out``, an unreachable
    scheduler) is checked before any point is computed, and nothing is written then.
    """
    import time

    from gateflow.presentation._console import progress

    chosen = cells_of(cells)  # names (variants too) or Cell objects: resolved here, once
    grid = SweepGrid() if grid is None else grid
    if not isinstance(grid, SweepGrid):
        raise GateflowError(f"the sweep grid must be a SweepGrid, got {shown(grid)}; e.g. "
                            "gateflow.SweepGrid.make(4)")
    out = default_out() if out is None else out_path(out)
    check_out(out, overwrite)
    check_memory(chosen, grid, LOCAL_WORKERS if scheduler is None else 1)

    start = time.perf_counter()
    total = len(tasks(chosen, grid))
    client = connect(scheduler) if scheduler is not None else None  # fails before the bar
    with progress(f"sweep {','.join(c.name for c in chosen)}", total, quiet=quiet) as bar:
        def step(done: int, _total: int) -> None:
            bar.set(done)

        if client is not None:
            try:
                workers = len(client.scheduler_info().get("workers", {}))
                result = run_sweep(client, chosen, grid, step)
            finally:
                client.close()
        else:
            from dask.distributed import Client

            with local_cluster() as cluster, Client(cluster, set_as_default=False) as client:
                workers = len(cluster.workers)
                result = run_sweep(client, chosen, grid, step)
    result.meta = {"scheduler": scheduler or "LocalCluster", "workers": workers,
                   "seconds": round(time.perf_counter() - start, 3),
                   "created": datetime.now().isoformat(timespec="seconds")}
    write_sweep(result, out, overwrite)
    return out, result

"""What the jobs print while they run: one progress bar, the decay tables, number formats.

All three jobs (``decay``, ``report``, ``sweep``) show progress with :func:`progress`, on
stderr, so stdout carries only data (``--json -``) or the path written.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np

from gateflow.analysis._analysis import EXPLODING, VANISHING
from gateflow.presentation._labels import direct_label

__all__ = ["Bar", "console", "fit_table", "fmt", "fmt_efold", "fmt_horizon", "fmt_r2",
           "lyapunov_table", "modules_table", "progress",
           "summary_table"]


def fmt(v, spec: str = ".3g", none: str = "never") -> str:
    """``format(v, spec)``, or ``none`` for a value that is not there (``None``)."""
    return none if v is None else format(v, spec)


def fmt_horizon(fit, T: int) -> str:
    """A memory horizon: the lag; ``"> T"`` when a *vanishing* curve has not reached the
    threshold yet; ``"not reached"`` for a curve that does not vanish (an exploding curve
    is never long memory)."""
    if fit.horizon is not None:
        return f"{fit.horizon}"
    return f"> {T}" if fit.regime == VANISHING else "not reached"


def fmt_efold(fit) -> str:
    """An e-folding lag, for a vanishing curve only; what the curve does otherwise."""
    return fmt(fit.efold, ".3g") if fit.efold is not None else f"— ({fit.regime})"


def fmt_r2(fit) -> str:
    return "—" if not np.isfinite(fit.r2) else f"{fit.r2:.3f}"


def console(*, stderr: bool = True, quiet: bool = False):
    """A rich Console (stderr by default); with ``NO_COLOR`` set (https://no-color.org), no
    colour and no other style either: plain text."""
    import os

    from rich.console import Console

    if os.environ.get("NO_COLOR"):
        return Console(stderr=stderr, quiet=quiet, color_system=None)
    return Console(stderr=stderr, quiet=quiet)


class Bar:
    """A handle on one progress bar: :meth:`set` the steps done, or :meth:`advance`; the
    screen is refreshed at most about 200 times over the whole bar. Quiet: does nothing."""

    def __init__(self, progress=None, task=None, total: int = 1):
        self._progress, self._task, self.total = progress, task, max(1, int(total))
        self._every = max(1, self.total // 200)
        self.done = 0
        self._shown = 0

    def set(self, done: int, description: str | None = None) -> None:
        self.done = int(done)
        if self._progress is None:
            return
        if description is not None or self.done >= self.total \
                or self.done - self._shown >= self._every:
            kw = {} if description is None else {"description": description}
            self._progress.update(self._task, completed=self.done, **kw)
            self._shown = self.done

    def advance(self, steps: int = 1, description: str | None = None) -> None:
        self.set(self.done + steps, description)


@contextmanager
def progress(description: str, total: int, *, quiet: bool = False,
             transient: bool = False) -> Iterator[Bar]:
    """One progress bar on stderr: description, bar, done/total, elapsed and remaining
    time. ``transient`` removes it when done; ``quiet`` shows nothing."""
    if quiet:
        yield Bar(total=total)
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=console(),
                  transient=transient) as bar:
        task = bar.add_task(description, total=total)
        yield Bar(bar, task, total)


# -- gateflow decay's tables ----------------------------------------------------------------
def summary_table(result: Any, max_lags: int = 6):
    """A rich Table: batch-mean log10 norms of every block of a DecayResult at a few lags."""
    from rich.table import Table

    T = result.shapes["T"]
    lags = sorted({k for k in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
                   if k <= T} | {T})
    if len(lags) > max_lags:
        lags = lags[:max_lags - 1] + [T]
    sizes = ", ".join(f"{k}={v}" for k, v in result.shapes.items() if k not in ("T", "B", "d"))
    inputs = set(result.chain.inputs)
    table = Table(title=f"{result.cell}: mean log10 norm over the batch "
                        f"(T={T}, B={result.shapes['B']}, {sizes})",
                  caption="k: ∂X_T/∂Y_{T−k}; for an input block X/x, ∂X_T/∂x_{T−k} (x_T is "
                          "k = 0, x_0 does not exist)" if inputs else None)
    table.add_column("block", style="bold cyan", no_wrap=True)
    table.add_column("norm", no_wrap=True)
    for k in lags:
        table.add_column(f"k={k}", justify="right")
    for name, norm, a in result.series():
        first = 0 if name in inputs else 1  # an input block's index is its lag
        cells = []
        for k in lags:
            if k - first >= len(a):
                cells.append("")
                continue
            row = a[k - first]
            cells.append("-inf" if np.isneginf(row).all() else
                         f"{np.mean(row[np.isfinite(row)]):.3f}")
        table.add_row(name, norm, *cells)
    return table


def fit_table(fits: Mapping, steps: Mapping[str, int], threshold: float):
    """A rich Table: per cell, its memory block's and direct product's regime, per-step
    factor, R², e-folding lag (vanishing curves only) and memory horizon, both in steps.
    ``fits``: cell -> :class:`ChainFits`; ``steps``: cell -> T."""
    from rich.table import Table

    norms = {f.norm for f in fits.values()}
    table = Table(title=f"fitted decay of the batch median ({'/'.join(sorted(norms))} norm; "
                        f"e-folding lag and memory horizon in steps; memory horizon: first "
                        f"lag below {threshold:g})")
    table.add_column("cell", style="bold cyan", no_wrap=True)
    table.add_column("block", no_wrap=True)
    for h in ("regime", "factor/step", "R²", "e-folding", "horizon"):
        table.add_column(h, justify="right", no_wrap=h in ("factor/step", "R²"))
    for cell, cf in fits.items():
        rows = [*cf.blocks.items(), *((direct_label(cell, s), f) for s, f in cf.direct.items())]
        if not cf.blocks:
            table.add_row(cell, "(memory block not measured)", "—", "—", "—", "—", "—")
        for name, f in rows:
            style = "bold red" if f.regime == EXPLODING else None
            table.add_row(cell, name, f.regime, f"×{f.factor:.4g}", fmt_r2(f), fmt_efold(f),
                          fmt_horizon(f, steps[cell]), style=style)
    table.caption = ("lines fitted over every lag with a finite norm; exploding, neutral and "
                     "non-monotone curves get no e-folding lag")
    return table


def modules_table(name: str, rows: list[dict]):
    """``gateflow inspect``'s table (one row per recurrent module of a file), followed by
    the ``gateflow decay`` command for each, one per line so that it can be copied."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"{name}: {len(rows)} recurrent module(s)")
    for col in ("module", "kind", "cell", "layers", "directions", "n", "d", "proj"):
        table.add_column(col, style="bold cyan" if col == "module" else None, overflow="fold",
                         justify="right" if col in ("layers", "n", "d", "proj") else "left")
    lines = []
    for r in rows:
        cell = r["cell"] or " or ".join(r["cells"]) + " (give --cell)"
        table.add_row(r["module"] or "''", f"{r['framework']} {r['kind']}", cell,
                      str(r["layers"]), ", ".join(r["directions"]), str(r["hidden"]),
                      str(r["input"]), str(r["proj"] or "-"))
        what = r["module"] or r["kind"]
        lines.append(Text(f"# {what}: " + (r["command"] or f"not analysed: {r['note']}"),
                          style="green" if r["command"] else "yellow"))
    if not rows:
        table.caption = "no nn.RNN/LSTM/GRU, *Cell, ONNX or Keras recurrent module found"
    notes = [Text(f"note ({r['module'] or r['kind']}): {r['note']}", style="dim")
             for r in rows if r["note"] and r["command"]]
    if any(r["framework"] == "PyTorch" for r in rows):
        notes.append(Text("note: a state_dict does not record batch_first; give --inputs "
                          "time-major (T, B, d), or add --batch-first for (B, T, d)",
                          style="dim"))
    return Group(table, *lines, *notes)


def lyapunov_table(res):
    """The largest Lyapunov exponents (median over the batch), the sum of the positive ones
    and the Kaplan–Yorke dimension."""
    from rich.table import Table

    table = Table(title=f"{res.cell}: Lyapunov exponents (natural log per step)")
    table.add_column("i", justify="right")
    table.add_column("λ_i", justify="right")
    table.add_column("e-folding (steps)", justify="right")
    med = np.median(res.exponents, axis=0)
    for i, v in enumerate(med[:8], start=1):
        efold = "—" if not np.isfinite(v) or v == 0 else (
            f"{-1 / v:.3g} (contracting)" if v < 0 else f"{1 / v:.3g} (growing)")
        table.add_row(str(i), "-inf" if v == -np.inf else f"{v:.5f}", efold)
    table.caption = (f"median over {res.exponents.shape[0]} sequences; T = {res.steps} steps, "
                     f"transient {res.transient}, K = {res.k} of N = {res.state_dim}; "
                     f"sum of positive exponents {np.median(res.positive_sum):.4g}; "
                     f"Kaplan–Yorke dimension {np.median(res.kaplan_yorke):.4g}"
                     + (f"; {res.k - 8} more in --json" if res.k > 8 else ""))
    return table

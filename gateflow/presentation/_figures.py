"""The jobs' figures, built from their results with the plots of :mod:`._plot_lags` and
:mod:`._plot_spectra` and the primitives of :mod:`._plot`.

* ``gateflow decay``: :func:`theory_overlays`, :func:`decay_figure` (each cell's memory
  block against lag) and :func:`spectra_figure` (its singular values at a few lags);
* ``gateflow report``: :func:`report_figures` (RNN vs LSTM vs GRU, the gate-bias panels,
  the spectra), written as SVG, PNG and/or PDF into the report's folder, and kept as SVG
  text for index.html to carry inline;
* ``gateflow sweep``: :func:`sweep_heatmap` (memory horizon over the grid, one per cell).

What a figure looks like (its frame, bands, legend, unresolved singular values, the bytes
written) is decided by the primitives, so the public functions draw the same figures;
here are only the jobs' choices (which curves, titles, captions) and panels composed from
them.

The jobs hand over typed records from the layers below: a :class:`~gateflow.ChainResult`
per cell (``gateflow decay``, with its provenance), the report's
:class:`~gateflow.analysis._records.Measured` runs, a
:class:`~gateflow.numeric._lyapunov.LyapunovResult`; the sweep's results are read through
the :class:`SweepCells`/:class:`SweepPoints` protocols. Which theory line applies to which
cell is :func:`~gateflow.analysis._theory.theory_for`'s decision, not this module's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from gateflow._errors import GateflowError
from gateflow.analysis._analysis import measured_norm
from gateflow.analysis._records import Measured
from gateflow.analysis._theory import theory_for
from gateflow.cells._block import Block
from gateflow.numeric._observers import NORMS, OBSERVERS
from gateflow.numeric._result import ChainResult
from gateflow.presentation._labels import run_label
from gateflow.presentation._numbers import factor, given, sig
from gateflow.presentation._plot import (
    FIGURE_FORMATS,
    PALETTE,
    Overlay,
    _new_figure,
    figure_bytes,
    house_style,
    legends_below,
    off_axis,
)
from gateflow.presentation._plot_lags import (
    gate_overlay,
    plot_decay,
    plot_input_sensitivity,
    rnn_overlays,
)
from gateflow.presentation._plot_spectra import NOISE_DECADES, plot_spectra, unresolved_counts

if TYPE_CHECKING:  # matplotlib and the Lyapunov spectra: imported where they are used
    from matplotlib.figure import Figure

    from gateflow.numeric._lyapunov import LyapunovResult

__all__ = ["FIGURE_FORMATS", "ReportFigure", "SweepCells", "SweepPoints", "decay_figure",
           "lyapunov_figure", "report_figures", "spectra_figure", "sweep_heatmap",
           "theory_overlays"]


#: The size (inches) of a two-panel decay figure: width, and height above the legends.
_PANELS = (14.0, 4.6)


# -- gateflow decay -------------------------------------------------------------------------
def _finite_input_var(params: Mapping, x_moment: float) -> bool:
    """Whether the mean-field input variance mean_i Σ_j W_ij² · E[x²] is finite; if not
    (huge inputs), the mean-field overlay is skipped rather than failing the run."""
    if not math.isfinite(x_moment):
        return False
    with np.errstate(over="ignore", invalid="ignore"):
        W = np.asarray(params["W"], dtype=np.float64)
        return bool(np.isfinite(float(np.mean(np.sum(np.square(W), axis=1))) * x_moment))


def second_moment(x) -> float:
    """E[x²] in float64; inf (not a warning) when it overflows (|x| beyond ~1e154)."""
    with np.errstate(over="ignore"):
        return float(np.mean(np.square(np.asarray(x, dtype=np.float64))))


def _plot_norm(results: Mapping[str, ChainResult]) -> str | None:
    norms = {measured_norm(r.norms) for r in results.values()}
    return norms.pop() if len(norms) == 1 else None


def theory_overlays(results: Mapping[str, ChainResult], params: Mapping[str, Mapping],
                    x_moments: Mapping[str, float], *, gate_bias: float | None = None
                    ) -> list[Overlay]:
    """The theory lines that apply to these runs (:func:`theory_for`; drawn by
    ``gate_overlay`` and ``rnn_overlays``): σ(b)^k for the memory gate when a gate bias was
    set, the Pascanu bound for an Elman RNN, and the mean-field rate for a tanh one whose
    weights were drawn i.i.d. Gaussian (its provenance). ``params``: cell -> its weights;
    ``x_moments``: cell -> E[x²] of its inputs."""
    out: list[Overlay] = []
    norm = _plot_norm(results)
    if norm is None:
        return out
    theory = {c: theory_for(r) for c, r in results.items()}
    gated = [c for c in results if theory[c].gate is not None]
    if gate_bias is not None and gated:
        r = results[gated[0]]
        out.append(gate_overlay(r.lags, gate_bias, r.shapes["n"], norm=norm,
                                prefix="memory gate, zero weights", timescale=True,
                                color="#000000", linestyle=(0, (5, 1.5, 1, 1.5, 1, 1.5))))
    for c, r in results.items():
        if theory[c].elman:
            w = r.provenance.weights
            gaussian = (theory[c].mean_field and w.get("source") == "init"
                        and w.get("scheme") == "gaussian"
                        and _finite_input_var(params[c], x_moments[c]))
            out += rnn_overlays(params[c], r.lags, norm=norm, mean_field=gaussian,
                                input_second_moment=x_moments[c], name=c)
    return out


def _config_text(results: Mapping[str, ChainResult]) -> str:
    first = next(iter(results.values()))
    sh = first.shapes
    w = first.provenance.weights
    init = f"{w['scheme']} init" if w.get("source") == "init" else "weights from file"
    same_n = all(r.shapes["n"] == sh["n"] for r in results.values())
    parts = [init] + ([f"n = {sh['n']}"] if same_n else []) + [f"T = {sh['T']} steps",
                                                               f"B = {sh['B']}"]
    return ", ".join(parts)


def decay_figure(results: Mapping[str, ChainResult], overlays: Sequence[Overlay] = (), *,
                 title: str | None = None) -> Figure:
    """Gradient norm of each cell's memory block against lag (median, IQR band), with the
    cell-path-only products dashed and the theory ``overlays`` (:func:`plot_decay`, legend
    below the axes); returns the Figure.

    When input blocks were measured (``--blocks h/x,c/x``), a second panel to the right
    shows the input sensitivity ‖∂X_T/∂x_{T−k}‖ against input lag k
    (:func:`plot_input_sensitivity`), each cell in the same colour as on the left, and
    each panel has its legend below it."""
    norms = {measured_norm(r.norms) for r in results.values()}
    norm = NORMS[0] if NORMS[0] in norms else sorted(norms)[0]
    for r in results.values():
        if norm not in r.norms:
            raise GateflowError(f"{r.cell.name} has no {norm} norms to plot next to the other "
                                "cells; measure the same norms for every cell")
    title = title or (f"Gradient decay over lag: {' vs '.join(results)}\n"
                      f"{_config_text(results)}; median over the batch, band = IQR")
    chains = dict(results)
    blocks: dict[str, str] = {c: r.cell.memory_block for c, r in results.items()}
    if not any(ch.inputs for ch in chains.values()):
        return plot_decay(chains, blocks, overlays, norm=norm, title=title)
    with house_style():
        fig = _new_figure(*_PANELS)
        memory, inputs = fig.subplots(1, 2)
    plot_decay(chains, blocks, overlays, norm=norm, title=title, legend=None, ax=memory)
    cells = [c for c, ch in chains.items() if ch.inputs]
    plot_input_sensitivity(chains, norm=norm, legend=None, ax=inputs,
                           title=f"Input sensitivity: {' vs '.join(cells)}\n"
                                 "median over the batch, band = IQR")
    legends_below(fig, [memory, inputs], height=_PANELS[1])
    return fig


def spectra_figure(results: Mapping[str, ChainResult], lags: Sequence[int], *,
                   title: str | None = None) -> Figure:
    """Singular values of each cell's memory block at ``lags`` (first sequence), with the
    values float64 cannot resolve marked at their floor (:func:`plot_spectra`)."""
    title = title or (r"Singular values of the memory block $\partial s_T/\partial s_{T-k}$, "
                      f"sequence 0\n{_config_text(results)}")
    return plot_spectra(dict(results), {c: r.cell.memory_block for c, r in results.items()},
                        lags=list(lags), title=title)


# -- gateflow report ------------------------------------------------------------------------
@dataclass(frozen=True)
class ReportFigure:
    """One figure of the report: written as ``<name>.<fmt>`` for each format asked, and
    always rendered as SVG in memory so that index.html can carry it inline.

    ``caption`` is inline markup: text with ``$…$`` LaTeX, as the report's templates take it.
    """

    name: str
    title: str  # the figure's own title, plain: the alt text
    caption: str
    svg: str
    files: tuple[str, ...]



def _iqr_decades(ms: Sequence[Measured]) -> float:
    """The widest interquartile band (decades) of these runs' shown curves: what the
    captions state, from the very quantiles the figures draw (and data.json holds)."""
    from gateflow.analysis._analysis import summarize

    key = OBSERVERS[NORMS[0]].key
    widths = [0.0]
    for m in ms:
        s = summarize(m.result.blocks[m.run.block][key], m.result.lags)
        w = s.q75 - s.q25
        widths += list(w[np.isfinite(w)])
    return float(max(widths))


def _batch(ms: Sequence[Measured]) -> int:
    m = ms[0]
    return int(np.shape(m.result.blocks[m.run.block][OBSERVERS[NORMS[0]].key])[1])


#: A band at most this fraction of the decades its curves span is "thin at this scale".
THIN = 0.1


def _chrono_text(ms: Sequence[Measured]) -> list[str]:
    """"chrono initialisation ($T_{\\max} = 200$)" for the chrono runs among ``ms``, with
    the T_max they were given."""
    ts = sorted({m.run.chrono for m in ms if m.run.chrono is not None})
    if not ts:
        return []
    return [f"chrono initialisation ($T_{{\\max}} = "
            f"{', '.join(given(t, style='latex') for t in ts)}$)"]


def _span_decades(ms: Sequence[Measured]) -> float:
    """How many decades the medians of these runs' shown curves span (finite values)."""
    from gateflow.analysis._analysis import summarize

    key = OBSERVERS[NORMS[0]].key
    meds = [summarize(m.result.blocks[m.run.block][key], m.result.lags).median for m in ms]
    values = np.concatenate([v[np.isfinite(v)] for v in meds])
    return float(values.max() - values.min()) if values.size else 0.0


def _band_text(ms: Sequence[Measured]) -> str:
    """What the solid line and the band are, with the band's widest width (and "thin at
    this scale" only when it is at most :data:`THIN` of the decades the curves span)."""
    B = _batch(ms)
    if B == 1:
        return "Solid: the one sequence measured (no band: one sequence has no spread)"
    w = _iqr_decades(ms)
    thin = ", thin at this scale" if w <= THIN * _span_decades(ms) else ""
    return (f"Solid: median over the {B} sequences; band: their interquartile range, at most "
            f"{sig(w)} decades wide{thin}")


def _write(fig: Figure, folder: Path, name: str, formats: Sequence[str]
           ) -> tuple[str, tuple[str, ...]]:
    svg = figure_bytes(fig, "svg")
    files = []
    for fmt in formats:
        payload = svg if fmt == "svg" else figure_bytes(fig, fmt)
        (folder / f"{name}.{fmt}").write_bytes(payload)
        files.append(f"{name}.{fmt}")
    return svg.decode("utf-8"), tuple(files)


def _off_axis_text(off: Mapping[str, tuple[str, int]], what: Mapping[str, str]) -> str:
    """"; the Pascanu bound leaves the top of the axis at $k = 15$" for each clipped line."""
    parts = [f"{what[label]} leaves the {side} of the axis at $k = {k}$"
             for label, (side, k) in off.items() if label in what]
    return ("; " + "; ".join(parts)) if parts else ""


def report_figures(measured: Sequence[Measured], *, n: int, steps: int, scheme: str,
                   folder: Path, formats: Sequence[str] = ("png", "svg")) -> list[ReportFigure]:
    """The report's figures, each written as ``<name>.<fmt>`` in ``folder`` for every
    format in ``formats`` (of :data:`FIGURE_FORMATS`); returns them with their captions and
    SVG renderings. ``measured``: the report's runs (:class:`Measured`: the run's label,
    cell, block, group and gate bias, its ChainResult and parameters)."""
    from gateflow._validate import choose_many
    from gateflow.presentation._labels import direct_label, lag_tex, norm_tex

    formats = choose_many(formats, FIGURE_FORMATS, "figure format", allow_empty=True)
    by_group: dict[str, list[Measured]] = {}
    for m in measured:
        by_group.setdefault(m.run.group, []).append(m)
    figs = []
    cells = by_group["cells"]
    lags = cells[0].result.lags
    rnn = next(m for m in cells if theory_for(m.result).mean_field)
    ovs = rnn_overlays(rnn.params, lags)
    title = f"RNN vs LSTM vs GRU, same init ({scheme}), n = {n}"
    fig = plot_decay({m.run.label: m.result for m in cells},
                     {m.run.label: m.run.block for m in cells}, ovs, title=title)
    off = off_axis(ovs, fig.axes[0].get_ylim())
    norm = norm_tex(NORMS[0], lag_tex())
    gates = " and ".join(f"${direct_label(m.run.cell, fmt='latex')}$" for m in cells
                         if m.result.direct)
    u = float(np.linalg.norm(np.asarray(rnn.params["U"], dtype=np.float64), 2))
    caption = (f"The gradient norm ${norm}$ against the lag $k$, for each cell's memory state: "
               f"the RNN's $h$, the LSTM's cell state $c$, the GRU's $h$, all at the same "
               f"initialisation. {_band_text(cells)}. "
               f"Dashed: the gate-only products {gates}. Dotted: the RNN's mean-field rate; "
               rf"dash-dotted: the Pascanu upper bound, $\sqrt{{n}}\,(\gamma \|U\|_2)^k$ "
               rf"with $\gamma = 1$ ($\tanh' \leq 1$) and $\|U\|_2 = {sig(u, style='latex')}$"
               + _off_axis_text(off, {o.label: "the bound" for o in ovs if "Pascanu" in o.label})
               + _off_axis_text(off, {o.label: "the mean-field line" for o in ovs
                                      if "mean field" in o.label}) + ".")
    figs.append(ReportFigure("decay_cells", title, caption,
                             *_write(fig, folder, "decay_cells", formats)))
    for group, gate, tex in (("lstm-bias", "forget", "b_f"), ("gru-bias", "update", "b_z")):
        ms = by_group.get(group, [])
        if not ms:
            continue
        shown = {m.run.label: run_label(m.run.label) for m in ms}
        colors = {shown[m.run.label]: PALETTE[i % len(PALETTE)] for i, m in enumerate(ms)}
        ovs = [gate_overlay(lags, m.run.gate_bias, n, tex=tex, color=colors[shown[m.run.label]])
               for m in ms if m.run.gate_bias is not None]
        cell = ms[0].run.cell.name.upper()
        name = f"decay_{group.replace('-', '_')}"
        title = f"{cell}: effect of the {gate}-gate bias ${tex}$, n = {n}"
        fig = plot_decay({shown[m.run.label]: m.result for m in ms},
                         {shown[m.run.label]: m.run.block for m in ms}, ovs, direct=False,
                         colors=colors, title=title)
        clipped = _off_axis_text(off_axis(ovs, fig.axes[0].get_ylim()), {
            o.label: f"the ${tex} = {given(m.run.gate_bias, style='latex')}$ line"
            for o, m in zip(ovs, [m for m in ms if m.run.gate_bias is not None])})
        values = ", ".join(given(m.run.gate_bias) for m in ms if m.run.gate_bias is not None)
        block = ms[0].run.block
        set_to = [f"the {gate}-gate bias ${tex}$ set to {values} on every unit"] if values \
            else []
        caption = (f"The {cell}'s ${norm_tex(NORMS[0], lag_tex(block))}$ with "
                   + ", or ".join(set_to + _chrono_text(ms)) + f". {_band_text(ms)}. "
                   rf"Dotted, same colour: $\sqrt{{n}}\,\sigma({tex})^k$, the exact norm when "
                   f"all weights are zero{clipped}.")
        figs.append(ReportFigure(name, title.replace("$", ""), caption,
                                 *_write(fig, folder, name, formats)))
    sv = {m.run.label: m.result for m in cells if m.result.singular_values}
    if sv:
        blocks = {m.run.label: m.run.block for m in cells}
        sv_lags = sorted(set.intersection(*(set(r.singular_values) for r in sv.values())))
        title = rf"Singular values of $\partial s_T/\partial s_{{T-k}}$, sequence 0, n = {n}"
        fig = plot_spectra(sv, blocks, lags=sv_lags, title=title)
        counts = unresolved_counts(sv, blocks, sv_lags)
        figs.append(ReportFigure("spectra", title.replace("$", ""),
                                 _spectra_caption(counts, sv, blocks, sv_lags),
                                 *_write(fig, folder, "spectra", formats)))
    return figs


def _spectra_caption(counts: Mapping[tuple[str, int], int], results: Mapping[str, ChainResult],
                     blocks: Mapping[str, Block], lags: Sequence[int]) -> str:
    from gateflow.presentation._labels import lag_tex
    dim = {label: int(np.shape(r.singular_values[lags[0]][blocks[label]])[1])
           for label, r in results.items()}
    text = (f"The singular values $\\sigma_1 \\geq \\sigma_2 \\geq \\dots$ of "
            f"${lag_tex()}$ (each cell's memory block) for the first sequence, at lags "
            f"{', '.join(str(k) for k in lags)}. ")
    cut = [(label, k, c) for (label, k), c in counts.items() if c]
    floor = f"${given(10.0 ** NOISE_DECADES, style='latex')}\\,\\sigma_1$"
    if not cut:
        return text + (f"Every value lies above {floor}, what float64 resolves, so every "
                       f"one is drawn.")
    said = "; ".join(f"{c} of the {label}'s {dim[label]} at $k = {k}$" for label, k, c in cut)
    return text + (f"Values below {floor} are not resolved in float64: rounding in the "
                   f"product and in the SVD (about $10^{{-16}}\\,\\sigma_1$) decides their "
                   f"digits. They are drawn as hollow triangles at that floor (their true "
                   f"value lies at or below it): {said}. That is why those curves stop "
                   f"before index {max(dim.values())}.")


# -- gateflow sweep -------------------------------------------------------------------------
class SweepAxis(Protocol):
    """The sweep's second axis: its values and its label."""

    @property
    def values(self) -> Sequence[float]: ...
    @property
    def label(self) -> str: ...


class SweepCells(Protocol):
    """One cell's memory horizons over a sweep's grid (``jobs._sweep.CellSweep``)."""

    @property
    def cell(self) -> str: ...
    @property
    def block(self) -> str: ...
    @property
    def sigma_w(self) -> Sequence[float]: ...
    @property
    def y(self) -> SweepAxis: ...
    @property
    def horizon(self) -> Sequence[Sequence[int | None]]: ...
    @property
    def regime(self) -> Sequence[Sequence[str | None]] | None: ...
    @property
    def factor(self) -> Sequence[Sequence[float]] | None: ...


class SweepPoints(Protocol):
    """The sweep's settings a heatmap states (``jobs._sweep.SweepGrid``)."""

    @property
    def T(self) -> int: ...
    @property
    def n(self) -> int: ...
    @property
    def B(self) -> int: ...
    @property
    def threshold(self) -> float: ...


def sweep_heatmap(cs: SweepCells, grid: SweepPoints) -> Figure:
    """A heatmap of one cell's memory horizons (a CellSweep) over the sweep grid. Points
    whose vanishing curve never reaches the threshold show "≥ T"; points whose curve grows
    (exploding) are never painted as memory: grey, hatched, labelled with their per-step
    factor ("↑×1.27"); neutral and non-monotone points are labelled as such."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch, Rectangle

    from gateflow.presentation._labels import norm_label

    T = grid.T
    regime = cs.regime or [[None] * len(row) for row in cs.horizon]
    memory = [[r in (None, "vanishing") for r in row] for row in regime]
    H = np.ma.masked_array(
        [[T if h is None else h for h in row] for row in cs.horizon], dtype=float,
        mask=[[not m for m in row] for row in memory])
    fig = Figure(figsize=(6.4, 5.0), layout="constrained")
    ax = fig.subplots()
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="0.85")
    im = ax.imshow(H, origin="lower", aspect="auto", cmap=cmap, vmin=0, vmax=T)
    cbar = fig.colorbar(im, ax=ax)
    cbar.set_label("memory horizon (steps), vanishing curves only")
    for i, row in enumerate(cs.horizon):
        for j, h in enumerate(row):
            r = regime[i][j]
            if memory[i][j]:
                text = f"≥ {T}" if h is None else str(h)
                color = "black" if H[i, j] > 0.6 * T else "white"
            else:
                per = cs.factor[i][j] if cs.factor else float("nan")
                text = {"exploding": f"↑×{factor(per)}", "neutral": "flat",
                        "non-monotone": "turns"}.get(str(r), str(r))
                color = "darkred" if r == "exploding" else "black"
                if r == "exploding":
                    ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="///",
                                           edgecolor="darkred", linewidth=0))
            box = None if memory[i][j] else {"boxstyle": "round,pad=0.15", "fc": "white",
                                             "ec": "none", "alpha": 0.85}
            ax.text(j, i, text, ha="center", va="center", fontsize=8, color=color, bbox=box)
    ax.set_xticks(range(len(cs.sigma_w)), [given(v) for v in cs.sigma_w])
    ax.set_yticks(range(len(cs.y.values)), [given(v) for v in cs.y.values])
    ax.set_xlabel(r"recurrent weight scale $\sigma_w$  ($U \sim \mathcal{N}(0,\ \sigma_w^2/n)$)")
    ax.set_ylabel(cs.y.label)
    shown = norm_label(NORMS[0], Block.parse(cs.block))
    ax.set_title(f"{cs.cell}: first lag $k$ (steps) with median {shown}"
                 f" $< {given(grid.threshold, style='latex')}$\n"
                 f"($n = {grid.n}$, $T = {T}$, $B = {grid.B}$; "
                 f"≥ {T}: never within $T$)", fontsize=10)
    ax.legend(handles=[Patch(facecolor="0.85", hatch="///", edgecolor="darkred",
                             label="exploding: the norm grows (↑ per-step factor)"),
                       Patch(facecolor="0.85", label="flat / turns: neither vanishing "
                             "nor exploding")],
              loc="upper center", bbox_to_anchor=(0.5, -0.12), fontsize=7, ncol=1,
              frameon=False)
    return fig


# -- gateflow lyapunov ----------------------------------------------------------------------
def lyapunov_figure(res: LyapunovResult) -> Figure:
    """The Lyapunov spectrum (exponent index i against λ_i, natural log per step): the
    batch median with the range over sequences, and the running estimate of λ₁…λ_min(K,8)
    against the number of steps (convergence)."""
    lam = np.where(np.isfinite(res.exponents), res.exponents, np.nan)
    idx = np.arange(1, res.k + 1)
    with house_style():
        fig = _new_figure(9.0, 4.0)
        ax, ax2 = fig.subplots(1, 2)
        med = np.nanmedian(lam, axis=0) if np.any(np.isfinite(lam)) else np.full(res.k, np.nan)
        ax.fill_between(idx, np.nanmin(lam, axis=0), np.nanmax(lam, axis=0), alpha=0.25,
                        label=f"range over {lam.shape[0]} sequences")
        ax.plot(idx, med, marker="o", markersize=3, label="median over sequences")
        ax.axhline(0.0, color="#555555", linestyle=":", linewidth=1, label=r"$\lambda = 0$")
        ax.set_xlabel("exponent index i")
        ax.set_ylabel(r"$\lambda_i$ (natural log per step)")
        ax.set_title(f"{res.cell.name}: Lyapunov spectrum (K = {res.k} of N = {res.state_dim})")
        ax.legend(fontsize=8)
        if len(res.running_steps):
            for j in range(res.running.shape[2]):
                ax2.plot(res.running_steps, np.median(res.running[:, :, j], axis=1),
                         label=rf"$\lambda_{{{j + 1}}}$")
        ax2.set_xlabel("step t (steps)")
        ax2.set_ylabel("running estimate (natural log per step)")
        ax2.set_title(f"convergence (transient T0 = {res.transient} steps)")
        ax2.legend(fontsize=7, ncol=2)
    return fig

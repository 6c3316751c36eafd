"""The jobs' figures, built from their results with the primitives of :mod:`._plot`.

* ``gateflow decay``: :func:`theory_overlays`, :func:`decay_figure` (each cell's memory
  block against lag) and :func:`spectra_figure` (its singular values at a few lags);
* ``gateflow report``: :func:`report_figures` (RNN vs LSTM vs GRU, the gate-bias panels,
  the spectra), written as SVG, PNG and/or PDF into the report's folder, and kept as SVG
  text for index.html to carry inline;
* ``gateflow sweep``: :func:`sweep_heatmap` (memory horizon over the grid, one per cell).

Results are duck-typed (a DecayResult has ``chain``, ``norms``, ``shapes``,
``weights_source``; a ChainResult ``blocks``, ``direct``, ``lags``), so nothing here imports
the jobs layer above.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gateflow._errors import GateflowError
from gateflow.analysis._analysis import FLOOR, measured_norm
from gateflow.cells._library import get_cell
from gateflow.numeric._observers import NORMS, OBSERVERS
from gateflow.presentation._plot import (
    PALETTE,
    Overlay,
    gate_overlay,
    plot_decay,
    plot_spectra,
    rnn_overlays,
)

__all__ = ["FIGURE_FORMATS", "ReportFigure", "decay_figure", "figure_payload",
           "lyapunov_figure", "report_figures", "spectra_figure", "sweep_heatmap",
           "theory_overlays"]


#: The file formats a figure can be written in; ``gateflow report`` inlines an SVG rendering
#: in index.html whichever of them it writes next to it.
FIGURE_FORMATS = ("svg", "png", "pdf")
#: The width (inches) of the decay figures: the legend goes below the axes, never beside.
_WIDTH = 8.0


def figure_payload(fig, fmt: str) -> bytes:
    """``fig`` rendered as ``fmt`` (one of :data:`FIGURE_FORMATS`) in the house style, with
    no creation date in SVG or PDF and fixed SVG ids: the same data give the same file."""
    import matplotlib as mpl

    from gateflow._validate import choose
    from gateflow.presentation._plot import house_style

    fmt = choose(fmt, FIGURE_FORMATS, "figure format")
    meta = {"svg": {"Date": None}, "pdf": {"CreationDate": None}}.get(fmt)
    buf = io.BytesIO()
    # a fixed salt: the SVG's ids are hashes of it, not random, so the file is the same
    with house_style(), mpl.rc_context({"svg.hashsalt": "gateflow"}):
        fig.savefig(buf, format=fmt, metadata=meta)
    return buf.getvalue()


# -- shared by the decay and report figures -------------------------------------------------
def _finite(log10) -> np.ndarray:
    """The log10 values that are drawn as numbers (not −inf, not parked at the floor)."""
    v = np.asarray(log10, dtype=np.float64).ravel()
    return v[np.isfinite(v) & (v > FLOOR + 1)]


def _log10_of(values) -> np.ndarray:
    """log10 of the positive values drawn (the plot draws 10**log10, −inf parked at 1e−300)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v) & (v > 0)]
    return _finite(np.log10(v))


def _legend_below(fig, ax, handles=None, labels=None, *, ncol: int = 2) -> None:
    """The axes' legend, under the axes in ``ncol`` columns, so it takes neither a quarter of
    the width nor any of the curves' space. It stays the legend of ``ax`` (what readers of
    the Figure look up) but sits at the bottom of the figure, and the constrained layout
    lays the axes out in the space above it."""
    from gateflow.presentation._plot import house_style

    if handles is None:
        handles, labels = ax.get_legend_handles_labels()
    with house_style():
        leg = ax.legend(handles, labels, loc="lower center", bbox_to_anchor=(0.5, 0.01),
                        bbox_transform=fig.transFigure, ncol=min(ncol, max(len(handles), 1)),
                        frameon=False, borderaxespad=0.0)
        leg.set_in_layout(False)
        fig.draw_without_rendering()
        frac = leg.get_window_extent().height / fig.bbox.height + 0.025
    fig.get_layout_engine().set(rect=(0.0, frac, 1.0, 1.0 - frac))


def _frame_decay(fig, overlays: Sequence[Overlay] = ()) -> dict[str, tuple[str, int]]:
    """Frame a :func:`plot_decay` figure on what it measures, with the legend below:

    * the y axis spans the measured curves and their bands, plus the decaying theory lines
      (the zero-weight σ(b)^k, the mean field) down to at most max(10, the measured span)
      decades below the lowest curve, with a small margin: never the 15 % of the whole
      span that the primitive adds on top (which stretched it to 10⁸ for a bound);
    * a theory line that leaves the axis (the Pascanu bound of an RNN with ‖U‖₂ > 1 grows
      without limit) is clipped there, and its legend entry says from which lag;
    * the interquartile bands get an edge, so a narrow band (few sequences, many decades
      on the axis) still shows.

    Returns overlay label -> ("top" or "bottom", first lag off the axis) for the lines
    that leave it."""
    from matplotlib.colors import to_rgba

    ax = fig.axes[0]
    theory = {ov.label for ov in overlays}
    lines = [ln for ln in ax.get_lines() if ln.get_label() not in theory]
    parts = [_log10_of(ln.get_ydata()) for ln in lines]
    parts += [_log10_of(c.get_paths()[0].vertices[:, 1]) for c in ax.collections
              if c.get_paths()]
    measured = np.concatenate([*parts, np.zeros(0)])
    if measured.size == 0:
        measured = np.zeros(1)
    m_lo, m_hi = float(measured.min()), float(measured.max())
    t_low = [float(v.min()) for v in (_finite(ov.log10) for ov in overlays) if v.size]
    lo = min([m_lo, *(max(t, m_lo - max(10.0, m_hi - m_lo)) for t in t_low)])
    pad = max(0.3, 0.03 * (m_hi - lo))
    bottom, top = lo - pad, m_hi + pad
    ax.set_ylim(10.0 ** bottom, 10.0 ** top)
    off: dict[str, tuple[str, int]] = {}
    for ln in ax.get_lines():
        label = ln.get_label()
        if label not in theory:
            continue
        y = np.log10(np.clip(np.asarray(ln.get_ydata(), dtype=np.float64), 1e-300, None))
        k = np.asarray(ln.get_xdata())
        for side, out in (("top", y > top), ("bottom", y < bottom)):
            if out.any():
                first = int(k[np.argmax(out)])
                off[label] = (side, first)
                where = "above" if side == "top" else "below"
                ln.set_label(f"{label} ({where} the axis from $k = {first}$)")
                break
    for band in ax.collections:
        rgba = band.get_facecolor()
        if len(rgba):
            band.set_alpha(None)
            band.set_facecolor(to_rgba(rgba[0][:3], 0.28))
            band.set_edgecolor(to_rgba(rgba[0][:3], 0.85))
            band.set_linewidth(0.6)
    fig.set_size_inches(_WIDTH, 6.2)
    _legend_below(fig, ax)
    return off


def _mark_unresolved(fig, results: Mapping, blocks: Mapping, lags: Sequence[int], *,
                     item: int = 0, colors: Mapping | None = None) -> dict[tuple[str, int], int]:
    """Show the singular values a :func:`plot_spectra` figure leaves out: those more than
    10^|NOISE_DECADES| below the largest, where float64 rounding (about 10⁻¹⁶ σ₁ in the
    product and the SVD) decides the digits. Each is drawn as a hollow ▽ at that floor,
    σ₁ · 10^NOISE_DECADES (its true value lies at or below it); a legend entry says so and
    the legend goes below the panels. Returns (label, lag) -> how many were marked."""
    from matplotlib.lines import Line2D

    from gateflow.presentation._plot import NOISE_DECADES

    counts: dict[tuple[str, int], int] = {}
    for ax, k in zip(fig.axes, lags):
        for i, (label, res) in enumerate(results.items()):
            color = (colors or {}).get(label, PALETTE[i % len(PALETTE)])
            s = np.sort(np.asarray(res.singular_values[k][blocks[label]])[item])[::-1]
            if not np.isfinite(s[0]):
                continue
            floor = s[0] + NOISE_DECADES
            idx = np.nonzero(s < floor)[0] + 1
            counts[(label, k)] = int(idx.size)
            if idx.size:
                ax.plot(idx, np.full(idx.size, 10.0 ** floor), linestyle="none", marker="v",
                        markersize=3.5, markerfacecolor="none", markeredgecolor=color,
                        markeredgewidth=0.8)
    last = fig.axes[len(lags) - 1]
    handles, labels = last.get_legend_handles_labels()
    if any(counts.values()):
        handles.append(Line2D([], [], linestyle="none", marker="v", markerfacecolor="none",
                              markeredgecolor="#555555"))
        labels.append(rf"below $10^{{{NOISE_DECADES:g}}}\,\sigma_1$ (float64 cannot resolve "
                      "them): drawn at that floor")
    width, height = fig.get_size_inches()
    fig.set_size_inches(max(width, _WIDTH), height + 0.6)
    _legend_below(fig, last, handles, labels)
    return counts


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


def _plot_norm(results: Mapping) -> str | None:
    norms = {measured_norm(r.norms) for r in results.values()}
    return norms.pop() if len(norms) == 1 else None


def theory_overlays(results: Mapping, params: Mapping, sources: Mapping, x_moments: Mapping,
                    *, gate_bias: float | None = None) -> list[Overlay]:
    """The theory lines that apply to these runs (``rnn_overlays`` and ``gate_overlay``):
    σ(b)^k for the memory gate when a gate bias was set, the mean-field rate for a tanh RNN
    with Gaussian init, the Pascanu bound for an RNN. ``sources``: cell -> provenance
    (``weights_source``); ``x_moments``: cell -> E[x²] of its inputs."""
    out: list[Overlay] = []
    norm = _plot_norm(results)
    if norm is None:
        return out
    gated = [c for c in results if get_cell(c).memory_bias is not None]
    if gate_bias is not None and gated:
        r = results[gated[0]]
        out.append(gate_overlay(r.chain.lags, gate_bias, r.shapes["n"], norm=norm,
                                prefix="memory gate, zero weights", timescale=True,
                                color="#000000", linestyle=(0, (5, 1.5, 1, 1.5, 1, 1.5))))
    for c in ("rnn", "rnn-relu"):
        if c in results:
            w = sources[c]["weights_source"]
            gaussian = (c == "rnn" and w.get("source") == "init"
                        and w.get("scheme") == "gaussian"
                        and _finite_input_var(params[c], x_moments[c]))
            out += rnn_overlays(params[c], results[c].chain.lags, norm=norm,
                                mean_field=gaussian, input_second_moment=x_moments[c], name=c)
    return out


def _config_text(results: Mapping) -> str:
    first = next(iter(results.values()))
    sh = first.shapes
    w = first.weights_source
    init = f"{w['scheme']} init" if w.get("source") == "init" else "weights from file"
    same_n = all(r.shapes["n"] == sh["n"] for r in results.values())
    parts = [init] + ([f"n = {sh['n']}"] if same_n else []) + [f"T = {sh['T']} steps",
                                                               f"B = {sh['B']}"]
    return ", ".join(parts)


def decay_figure(results: Mapping, overlays: Sequence[Overlay] = (), *,
                 title: str | None = None):
    """Gradient norm of each cell's memory block against lag (median, IQR band), with the
    cell-path-only products dashed and the theory ``overlays``, framed by
    :func:`_frame_decay` (legend below the axes); returns the Figure."""
    norms = {measured_norm(r.norms) for r in results.values()}
    norm = NORMS[0] if NORMS[0] in norms else sorted(norms)[0]
    for r in results.values():
        if norm not in r.norms:
            raise GateflowError(f"{r.cell} has no {norm} norms to plot next to the other cells; "
                                "measure the same --norms for every cell")
    title = title or (f"Gradient decay over lag: {' vs '.join(results)}\n"
                      f"{_config_text(results)}; median over the batch, band = IQR")
    fig = plot_decay({c: r.chain for c, r in results.items()},
                     {c: get_cell(c).memory_block for c in results}, overlays, norm=norm,
                     title=title)
    _frame_decay(fig, overlays)
    return fig


def spectra_figure(results: Mapping, lags, *, title: str | None = None):
    """Singular values of each cell's memory block at ``lags`` (first sequence), with the
    values float64 cannot resolve marked at their floor (:func:`_mark_unresolved`)."""
    title = title or (r"Singular values of the memory block $\partial s_T/\partial s_{T-k}$, "
                      f"sequence 0\n{_config_text(results)}")
    chains = {c: r.chain for c, r in results.items()}
    blocks = {c: get_cell(c).memory_block for c in results}
    fig = plot_spectra(chains, blocks, lags=list(lags), title=title)
    _mark_unresolved(fig, chains, blocks, list(lags))
    return fig


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


def _tex_label(label: str) -> str:
    """"LSTM b_f=1" -> "LSTM $b_f = 1$" for legends (mathtext)."""
    head, _, rest = label.partition(" ")
    if "=" in rest:
        name, _, value = rest.partition("=")
        return f"{head} ${name} = {value}$"
    return label


def _iqr_decades(ms: Sequence[Any]) -> float:
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


def _batch(ms: Sequence[Any]) -> int:
    m = ms[0]
    return int(np.shape(m.result.blocks[m.run.block][OBSERVERS[NORMS[0]].key])[1])


def _band_text(ms: Sequence[Any]) -> str:
    return (f"Solid: median over the {_batch(ms)} sequences; band: their interquartile range "
            f"(at most {_iqr_decades(ms):.2g} decade wide, so it is thin at this scale)")


def _write(fig, folder: Path, name: str, formats: Sequence[str]) -> tuple[str, tuple[str, ...]]:
    svg = figure_payload(fig, "svg")
    files = []
    for fmt in formats:
        payload = svg if fmt == "svg" else figure_payload(fig, fmt)
        (folder / f"{name}.{fmt}").write_bytes(payload)
        files.append(f"{name}.{fmt}")
    return svg.decode("utf-8"), tuple(files)


def _off_axis_text(off: Mapping[str, tuple[str, int]], what: Mapping[str, str]) -> str:
    """"; the Pascanu bound leaves the top of the axis at $k = 15$" for each clipped line."""
    parts = [f"{what[label]} leaves the {side} of the axis at $k = {k}$"
             for label, (side, k) in off.items() if label in what]
    return ("; " + "; ".join(parts)) if parts else ""


def report_figures(measured: Sequence[Any], *, n: int, steps: int, scheme: str,
                   folder: Path, formats: Sequence[str] = ("png", "svg")) -> list[ReportFigure]:
    """The report's figures, each written as ``<name>.<fmt>`` in ``folder`` for every
    format in ``formats`` (of :data:`FIGURE_FORMATS`); returns them with their captions and
    SVG renderings. ``measured``: the report's runs (``run.label``, ``.cell``, ``.block``,
    ``.group``, ``.gate_bias``, ``result``: ChainResult, ``params``)."""
    from gateflow._validate import choose_many
    from gateflow.presentation._labels import direct_label, lag_tex, norm_tex

    formats = choose_many(formats, FIGURE_FORMATS, "figure format", allow_empty=True)
    by_group: dict[str, list[Any]] = {}
    for m in measured:
        by_group.setdefault(m.run.group, []).append(m)
    figs = []
    cells = by_group["cells"]
    lags = cells[0].result.lags
    rnn = next(m for m in cells if m.run.cell == "rnn")
    ovs = rnn_overlays(rnn.params, lags)
    title = f"RNN vs LSTM vs GRU, same init ({scheme}), n = {n}"
    fig = plot_decay({m.run.label: m.result for m in cells},
                     {m.run.label: m.run.block for m in cells}, ovs, title=title)
    off = _frame_decay(fig, ovs)
    norm = norm_tex(NORMS[0], lag_tex())
    gates = " and ".join(f"${direct_label(m.run.cell, fmt='latex')}$" for m in cells
                         if m.result.direct)
    u = float(np.linalg.norm(np.asarray(rnn.params["U"], dtype=np.float64), 2))
    caption = (f"The gradient norm ${norm}$ against the lag $k$, for each cell's memory state: "
               f"the RNN's $h$, the LSTM's cell state $c$, the GRU's $h$, all at the same "
               f"initialisation. {_band_text(cells)}. "
               f"Dashed: the gate-only products {gates}. Dotted: the RNN's mean-field rate; "
               rf"dash-dotted: the Pascanu upper bound, $\sqrt{{n}}\,(\gamma \|U\|_2)^k$ "
               rf"with $\gamma = 1$ ($\tanh' \leq 1$) and $\|U\|_2 = {u:.2f}$"
               + _off_axis_text(off, {o.label: "the bound" for o in ovs if "Pascanu" in o.label})
               + _off_axis_text(off, {o.label: "the mean-field line" for o in ovs
                                      if "mean field" in o.label}) + ".")
    figs.append(ReportFigure("decay_cells", title, caption,
                             *_write(fig, folder, "decay_cells", formats)))
    for group, gate, tex in (("lstm-bias", "forget", "b_f"), ("gru-bias", "update", "b_z")):
        ms = by_group.get(group, [])
        if not ms:
            continue
        shown = {m.run.label: _tex_label(m.run.label) for m in ms}
        colors = {shown[m.run.label]: PALETTE[i % len(PALETTE)] for i, m in enumerate(ms)}
        ovs = [gate_overlay(lags, m.run.gate_bias, n, tex=tex, color=colors[shown[m.run.label]])
               for m in ms if m.run.gate_bias is not None]
        cell = ms[0].run.cell.upper()
        name = f"decay_{group.replace('-', '_')}"
        title = f"{cell}: effect of the {gate}-gate bias ${tex}$, n = {n}"
        fig = plot_decay({shown[m.run.label]: m.result for m in ms},
                         {shown[m.run.label]: m.run.block for m in ms}, ovs, direct=False,
                         colors=colors, title=title)
        clipped = _off_axis_text(_frame_decay(fig, ovs), {
            o.label: f"the ${tex} = {m.run.gate_bias:g}$ line"
            for o, m in zip(ovs, [m for m in ms if m.run.gate_bias is not None])})
        values = ", ".join(f"{m.run.gate_bias:g}" for m in ms if m.run.gate_bias is not None)
        block = ms[0].run.block
        caption = (f"The {cell}'s ${norm_tex(NORMS[0], lag_tex(block))}$ with the {gate}-gate "
                   f"bias ${tex}$ set to {values} on every unit, or chrono initialisation "
                   f"($T_{{\\max}} = {steps}$). {_band_text(ms)}. "
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
        counts = _mark_unresolved(fig, sv, blocks, sv_lags)
        figs.append(ReportFigure("spectra", title.replace("$", ""),
                                 _spectra_caption(counts, sv, blocks, sv_lags),
                                 *_write(fig, folder, "spectra", formats)))
    return figs


def _spectra_caption(counts: Mapping[tuple[str, int], int], results: Mapping,
                     blocks: Mapping[str, str], lags: Sequence[int]) -> str:
    from gateflow.presentation._labels import lag_tex
    from gateflow.presentation._plot import NOISE_DECADES

    dim = {label: int(np.shape(r.singular_values[lags[0]][blocks[label]])[1])
           for label, r in results.items()}
    text = (f"The singular values $\\sigma_1 \\geq \\sigma_2 \\geq \\dots$ of "
            f"${lag_tex()}$ (each cell's memory block) for the first sequence, at lags "
            f"{', '.join(str(k) for k in lags)}. ")
    cut = [(label, k, c) for (label, k), c in counts.items() if c]
    floor = f"$10^{{{NOISE_DECADES:g}}}\\,\\sigma_1$"
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
def sweep_heatmap(cs: Any, grid: Any):
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
                factor = cs.factor[i][j] if cs.factor else float("nan")
                text = {"exploding": f"↑×{factor:.3g}", "neutral": "flat",
                        "non-monotone": "turns"}.get(r, str(r))
                color = "darkred" if r == "exploding" else "black"
                if r == "exploding":
                    ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="///",
                                           edgecolor="darkred", linewidth=0))
            box = None if memory[i][j] else {"boxstyle": "round,pad=0.15", "fc": "white",
                                             "ec": "none", "alpha": 0.85}
            ax.text(j, i, text, ha="center", va="center", fontsize=8, color=color, bbox=box)
    ax.set_xticks(range(len(cs.sigma_w)), [f"{v:g}" for v in cs.sigma_w])
    ax.set_yticks(range(len(cs.y.values)), [f"{v:g}" for v in cs.y.values])
    ax.set_xlabel(r"recurrent weight scale $\sigma_w$  ($U \sim \mathcal{N}(0,\ \sigma_w^2/n)$)")
    ax.set_ylabel(cs.y.label)
    ax.set_title(f"{cs.cell}: first lag $k$ (steps) with median {norm_label(NORMS[0], cs.block)}"
                 f" < {grid.threshold:g}\n($n = {grid.n}$, $T = {T}$, $B = {grid.B}$; "
                 f"≥ {T}: never within $T$)", fontsize=10)
    ax.legend(handles=[Patch(facecolor="0.85", hatch="///", edgecolor="darkred",
                             label="exploding: the norm grows (↑ per-step factor)"),
                       Patch(facecolor="0.85", label="flat / turns: neither vanishing "
                             "nor exploding")],
              loc="upper center", bbox_to_anchor=(0.5, -0.12), fontsize=7, ncol=1,
              frameon=False)
    return fig


# -- gateflow lyapunov ----------------------------------------------------------------------
def lyapunov_figure(res: Any):
    """The Lyapunov spectrum (exponent index i against λ_i, natural log per step): the
    batch median with the range over sequences, and the running estimate of λ₁…λ_min(K,8)
    against the number of steps (convergence)."""
    from gateflow.presentation._plot import _new_figure, house_style

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
        ax.set_title(f"{res.cell}: Lyapunov spectrum (K = {res.k} of N = {res.state_dim})")
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

"""Figures of gradient flow: norms against lag, input sensitivity, singular-value spectra.
Headless (Agg).

Figures are built on :class:`matplotlib.figure.Figure` directly, never through pyplot, so
nothing global changes and no GUI backend is touched. The house style lives in one place,
:func:`house_style`, a context manager that sets rcParams for the duration of a plot only.
Colours are the Okabe–Ito palette (safe for the common colour-vision deficiencies, and
distinct in greyscale print together with the line styles).

What every caller gets (``gateflow decay``, ``gateflow report``, the notebooks, the public
API), because it is decided here, where the figure is drawn:

* the y axis frames what was measured, not the theory lines (:func:`plot_decay`); a theory
  line that leaves it says so in its legend entry (:func:`off_axis`);
* the interquartile bands have an edge, so a narrow band (few sequences, many decades on
  the axis) still shows;
* the legend goes below the axes on a figure 8 in wide (:func:`legends_below`), never over
  or beside the curves;
* singular values float64 cannot resolve are drawn at their floor, not dropped
  (:func:`unresolved`);
* the same figure gives the same SVG and PDF bytes (:func:`figure_bytes`).

Every ``plot_*`` function returns the Figure (tests inspect its axes) and, given ``path``,
writes ``path.png`` and ``path.svg``.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from gateflow._errors import GateflowError
from gateflow._validate import choose, choose_many
from gateflow.analysis._analysis import FROBENIUS, Summary, summarize
from gateflow.cells._block import Block
from gateflow.numeric._observers import NORMS, OBSERVERS
from gateflow.numeric._result import ChainResult
from gateflow.presentation._labels import block_tex, direct_label, norm_label
from gateflow.presentation._numbers import given, log_ticks, power, sig

if TYPE_CHECKING:  # matplotlib is imported when a figure is drawn
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: Okabe & Ito (2008), without yellow (too faint on white paper).
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000",
           "#F0E442")
_STYLE = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "legend.fontsize": 8,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "axes.grid": True,
    "grid.color": "#d9d9d9",
    "grid.linewidth": 0.6,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "lines.linewidth": 1.8,
    "legend.frameon": True,
    "legend.framealpha": 0.9,
    "legend.edgecolor": "#cccccc",
    "figure.dpi": 100,
    "savefig.dpi": 150,
    "svg.fonttype": "path",  # SVGs render the same without the fonts installed
    "mathtext.fontset": "dejavusans",
}
_LOG10_MIN = -300.0  # plotted values are 10**log10; keep them representable
#: The file formats a figure can be written in (:func:`figure_bytes`, :func:`save_figure`).
FIGURE_FORMATS = ("svg", "png", "pdf")
#: No creation date in SVG or PDF: the same data give the same file.
_METADATA = {"svg": {"Date": None}, "pdf": {"CreationDate": None}}
#: The width (inches) of a one-panel figure; its legend goes below the axes, never beside.
WIDTH = 8.0
_HEIGHT = 6.2  # a one-panel decay figure with its legend below
#: Where a legend goes: below the axes (default), inside them (lower left), or to their
#: right (on a wider figure); None: no legend (for panels of a figure composed elsewhere).
LEGENDS = ("below", "inside", "outside")
#: The interquartile band: a translucent face and a thin, more opaque edge, so that a
#: narrow band (B = 4 sequences, 50 decades on the axis) still shows.
_BAND_FACE_ALPHA, _BAND_EDGE_ALPHA, _BAND_EDGE_WIDTH = 0.28, 0.85, 0.6
#: Singular values more than this many decades below the largest are not resolved in
#: float64 (rounding in the product and the SVD is about 1e−16 σ₁): drawn at that floor.
NOISE_DECADES = -14.0


@contextmanager
def house_style():
    """gateflow's figure style, applied only inside the ``with`` block."""
    import matplotlib as mpl
    from cycler import cycler

    style = dict(_STYLE, **{"axes.prop_cycle": cycler(color=PALETTE)})  # cycler: a mpl dependency
    with mpl.rc_context(style):
        yield


@dataclass(frozen=True)
class Overlay:
    """A theory line: log10 norm per lag, with a mathtext label, e.g. ``r"$\\sqrt{n}\\,
    \\sigma(b_f)^k$"``."""

    label: str
    lags: np.ndarray
    log10: np.ndarray
    color: str = "#555555"
    linestyle: str = ":"


def _new_figure(width: float = 7.0, height: float = 4.3):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


# -- writing --------------------------------------------------------------------------------
def _render(fig, target, fmt: str) -> None:
    import matplotlib as mpl

    # a fixed salt: the SVG's ids are hashes of it, not random, so the file is the same
    with house_style(), mpl.rc_context({"svg.hashsalt": "gateflow"}):
        fig.savefig(target, format=fmt, metadata=_METADATA.get(fmt))


def save_figure(fig, path, formats: Iterable[str] | str = ("png", "svg")) -> list[Path]:
    """Write ``path`` with the suffix of each of ``formats`` (of :data:`FIGURE_FORMATS`,
    default .png and .svg), reproducibly as :func:`figure_bytes`; return the paths."""
    path = Path(path)
    out = []
    for fmt in choose_many(formats, FIGURE_FORMATS, "figure format"):
        p = path.with_suffix("." + fmt)
        _render(fig, p, fmt)
        out.append(p)
    return out


def figure_bytes(fig, fmt: str) -> bytes:
    """The figure rendered as ``fmt`` (one of :data:`FIGURE_FORMATS`: ``"svg"``, ``"png"``,
    ``"pdf"``) in the house style, in memory: for writers that stage every output first
    (:func:`gateflow._io.write_files`), so nothing is half-written. No creation date in SVG
    or PDF and fixed SVG ids: the same figure gives the same bytes."""
    fmt = choose(fmt, FIGURE_FORMATS, "figure format")
    buf = io.BytesIO()
    _render(fig, buf, fmt)
    return buf.getvalue()


# -- shared by the figures ------------------------------------------------------------------
def log_axis(ax) -> None:
    """A log y axis with gateflow's ticks (:func:`gateflow.presentation._numbers.log_ticks`):
    a labelled tick at every decade, or every 2, 5, 10, 20, … decades over a wide range,
    the decades between as minor ticks; 1, 2, 5 × 10^k under two decades. Labels are powers
    of ten. The ticks follow the limits, however they are set later."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ax.set_yscale("log")
    ax.yaxis.set_major_locator(_log_locator(False))
    ax.yaxis.set_minor_locator(_log_locator(True))
    ax.yaxis.set_major_formatter(FuncFormatter(
        lambda v, pos: f"$\\mathdefault{{{power(v)}}}$" if v > 0 else ""))
    ax.yaxis.set_minor_formatter(NullFormatter())


def _log_locator(minor: bool):
    from matplotlib.ticker import Locator

    class LogTicks(Locator):
        def __call__(self):
            return self.tick_values(*self.axis.get_view_interval())

        def tick_values(self, vmin, vmax):
            return log_ticks(vmin, vmax)[1 if minor else 0]

    return LogTicks()


def _pow10(v):
    v = np.asarray(v, dtype=np.float64)
    return np.power(10.0, np.clip(v, _LOG10_MIN, None))


def _shown(log10) -> np.ndarray:
    """The log10 values drawn as numbers (not ±inf, not parked at the 1e−300 floor)."""
    v = np.asarray(log10, dtype=np.float64).ravel()
    return v[np.isfinite(v) & (v > _LOG10_MIN + 1)]


def _median_band(ax, log10, lags, *, color: str, label: str, linestyle="-") -> Summary:
    """The median over the batch of a (T, B) array of log10 norms, as a line, and its
    interquartile range, as a band with an edge; returns the summary drawn."""
    from matplotlib.colors import to_rgba

    s = summarize(log10, lags)
    ax.plot(s.lags, _pow10(s.median), color=color, linestyle=linestyle, label=label)
    ax.fill_between(s.lags, _pow10(s.q25), _pow10(s.q75),
                    facecolor=to_rgba(color, _BAND_FACE_ALPHA),
                    edgecolor=to_rgba(color, _BAND_EDGE_ALPHA), linewidth=_BAND_EDGE_WIDTH)
    return s


def off_axis(overlays: Sequence[Overlay], ylim) -> dict[str, tuple[str, int]]:
    """The theory lines that leave a y axis spanning ``ylim`` (data units, as
    ``ax.get_ylim()``): overlay label -> ("top" or "bottom", the first lag off the axis).
    The Pascanu bound of an RNN with ‖U‖₂ > 1, for one, grows without limit."""
    bottom, top = np.log10(np.asarray(ylim, dtype=np.float64))
    off: dict[str, tuple[str, int]] = {}
    for ov in overlays:
        y = np.log10(_pow10(ov.log10))  # as drawn
        k = np.asarray(ov.lags)
        for side, out in (("top", y > top), ("bottom", y < bottom)):
            if out.any():
                off[ov.label] = (side, int(k[np.argmax(out)]))
                break
    return off


def _frame(ax, drawn: Sequence[np.ndarray], overlays: Sequence[Overlay] = (),
           lines: Sequence = ()) -> None:
    """Frame a log y axis on what was measured (``drawn``: the log10 curves and band
    edges), with the decaying theory lines (``overlays``, drawn as ``lines``) in view:

    * top: the measured maximum plus max(0.3, 3 % of the axis span) decades: a bound far
      above (the Pascanu bound) never stretches it;
    * bottom: the measured minimum, or lower to show a theory line's minimum, but at most
      max(10, the measured span) decades below the measured minimum; the same margin;
    * a theory line that leaves the axis is clipped there, and its legend entry says from
      which lag (:func:`off_axis`)."""
    measured = np.concatenate([*(_shown(np.log10(_pow10(v))) for v in drawn), np.zeros(0)])
    if measured.size == 0:
        measured = np.zeros(1)
    m_lo, m_hi = float(measured.min()), float(measured.max())
    t_low = [float(v.min()) for v in (_shown(ov.log10) for ov in overlays) if v.size]
    lo = min([m_lo, *(max(t, m_lo - max(10.0, m_hi - m_lo)) for t in t_low)])
    pad = max(0.3, 0.03 * (m_hi - lo))
    ax.set_ylim(10.0 ** (lo - pad), 10.0 ** (m_hi + pad))
    off = off_axis(overlays, ax.get_ylim())
    for ov, line in zip(overlays, lines):
        if ov.label in off:
            side, first = off[ov.label]
            where = "above" if side == "top" else "below"
            line.set_label(f"{ov.label} ({where} the axis from $k = {first}$)")


def legends_below(fig, panels: Sequence, *, height: float | None = None) -> None:
    """Each panel's legend under the figure's axes, so it takes neither a quarter of the
    width nor any of the curves' space. ``panels``: axes, or (axes, handles, labels) for a
    legend with entries of its own. A panel's legend stays the legend of its axes (what
    readers of the Figure look up) but sits at the bottom of the figure: centred on it (one
    legend, in two columns) or under its own axes (several, in one column each, their tops
    aligned); the figure's layout (constrained) lays the axes out in the space above.
    ``height`` (inches): the space to keep above the legends, the figure growing to fit
    them; by default the figure keeps its size."""
    from matplotlib.layout_engine import ConstrainedLayoutEngine, TightLayoutEngine
    from matplotlib.transforms import blended_transform_factory

    entries = [p if isinstance(p, tuple) else (p, *p.get_legend_handles_labels())
               for p in panels]
    one = len(entries) == 1
    with house_style():
        legends = []
        for ax, handles, labels in entries:
            where = fig.transFigure if one else blended_transform_factory(ax.transAxes,
                                                                           fig.transFigure)
            leg = ax.legend(handles, labels, loc="lower center" if one else "upper center",
                            bbox_to_anchor=(0.5, 0.01), bbox_transform=where,
                            ncol=min(2 if one else 1, max(len(handles), 1)), frameon=False,
                            borderaxespad=0.0)
            leg.set_in_layout(False)
            legends.append((leg, where))
        fig.draw_without_rendering()
        tallest = max(leg.get_window_extent().height for leg, _ in legends)  # pixels
    if height is not None:
        fig.set_size_inches(fig.get_size_inches()[0], (height + tallest / fig.dpi) / 0.975)
    frac = tallest / fig.bbox.height + 0.025
    if not one:  # their tops on one line, under the axes
        for leg, where in legends:
            leg.set_bbox_to_anchor((0.5, frac - 0.015), transform=where)
    engine = fig.get_layout_engine()
    if isinstance(engine, (ConstrainedLayoutEngine, TightLayoutEngine)):
        engine.set(rect=(0.0, frac, 1.0, 1.0 - frac))
    else:
        fig.subplots_adjust(bottom=frac + 0.08)


def _check_legend(legend: str | None) -> None:
    if legend is not None and legend not in LEGENDS:
        raise GateflowError(f"legend must be one of {', '.join(map(repr, LEGENDS))} or None, "
                            f"got {legend!r}")


def _place_legend(fig, ax, legend: str | None) -> None:
    if legend == "below":
        legends_below(fig, [ax])
    elif legend == "outside":
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    elif legend == "inside":
        ax.legend(loc="lower left", ncol=1 if len(ax.get_legend_handles_labels()[0]) < 7 else 2)


def _axes(ax, legend: str | None, height: float = 4.3):
    """The axes to draw into: ``ax``, or one on a new figure sized for the legend."""
    if ax is not None:
        return ax.figure, ax
    fig = _new_figure(10.5 if legend == "outside" else WIDTH,
                      _HEIGHT if legend == "below" else height)
    return fig, fig.add_subplot()


def _blocks_for(results: Mapping[str, ChainResult],
                block_for_each: Mapping[str, str] | str | None) -> dict[str, Block]:
    """The block to draw of each result, as the result's own :class:`Block` (a name given
    by a caller is matched against the blocks measured, once, here)."""
    out = {}
    for label, res in results.items():
        if isinstance(block_for_each, Mapping):
            b = block_for_each.get(label)
        else:
            b = block_for_each
        if b is None:  # the cell's memory block (Cell.memory_block: c/c for LSTMs, else h/h)
            b = res.cell.memory_block
        measured: dict[str, Block] = {k: k for k in res.blocks}
        if b not in measured:
            raise GateflowError(f"result {label!r} ({res.cell.name}) has no block {b!r}; "
                                f"it has {', '.join(res.blocks)}")
        out[label] = measured[b]
    return out


# -- theory overlays (shared by the report and ``gateflow decay``) -------------------------
def _sqrt_n(norm: str) -> str:
    return r"\sqrt{n}\," if norm == FROBENIUS else ""


def rnn_overlays(params: Mapping, lags, *, norm: str = NORMS[0], mean_field: bool = True,
                 pascanu: bool = True, input_second_moment: float = 1.0,
                 name: str = "RNN") -> list[Overlay]:
    """Theory lines of a tanh RNN (parameters U, W, b), each labelled with its formula:
    the mean-field rate √n χ₁^{k/2} (Frobenius norm only; drawn only if ``mean_field``) and
    the Pascanu bound (γ‖U‖₂)^k, γ = 1 (× √n for the Frobenius norm)."""
    from gateflow.analysis._analysis import mean_field_from_params, pascanu_bound

    lags = np.asarray(lags)
    n = int(np.shape(params["U"])[0])
    out = []
    if mean_field and norm == FROBENIUS:
        mf = mean_field_from_params(params, input_second_moment=input_second_moment)
        out.append(Overlay(rf"{name} mean field: $\sqrt{{n}}\,\chi_1^{{k/2}}$, "
                           rf"$\chi_1={sig(mf.chi1, style='latex')}$", lags,
                           mf.log10_norm(lags, n),
                           color="#444444", linestyle=":"))
    if pascanu:
        u = float(np.linalg.norm(np.asarray(params["U"], dtype=np.float64), 2))
        out.append(Overlay(rf"{name} Pascanu bound: ${_sqrt_n(norm)}(\gamma\|U\|_2)^k$, "
                           rf"$\gamma=1$, $\|U\|_2={sig(u, style='latex')}$", lags,
                           pascanu_bound(params["U"], lags, norm=norm), color="#888888",
                           linestyle="-."))
    return out


def gate_overlay(lags, bias: float, n: int, *, norm: str = NORMS[0], tex: str = "b",
                 color: str = "#555555", linestyle=":", prefix: str = "zero weights",
                 timescale: bool = False) -> Overlay:
    """The memory path with all weights zero, σ(b)^k (× √n for the Frobenius norm), exact
    there; with ``timescale`` the label adds the chrono timescale 1 + e^b steps."""
    from gateflow.analysis._analysis import chrono_timescale, gate_path

    label = rf"{prefix}: ${_sqrt_n(norm)}\sigma({tex}={given(bias, style='latex')})^k$"
    if timescale:
        ts = float(chrono_timescale(bias))
        value = sig(ts, style="latex")
        label += ",\n" + rf"timescale $1+e^{{{tex}}}={value}$ steps"
    return Overlay(label, np.asarray(lags), gate_path(lags, bias, n, norm), color=color,
                   linestyle=linestyle)


def _color(colors: Mapping | None, label: str, i: int) -> str:
    return (colors or {}).get(label, PALETTE[i % len(PALETTE)])


def plot_decay(results: Mapping[str, ChainResult],
               block_for_each: Mapping[str, str] | str | None = None,
               overlays: Sequence[Overlay] = (), path=None, *, norm: str = NORMS[0],
               direct: bool | Sequence[str] = True, title: str | None = None,
               colors: Mapping[str, str] | None = None, legend: str | None = "below",
               ax: Axes | None = None) -> Figure:
    """Gradient norm ‖∂s_T/∂s_{T−k}‖ against lag k, one colour per result.

    The y axis frames the measured curves and bands; the theory lines are drawn where they
    fall within max(10, the measured span) decades below them, and one that leaves the axis
    (a growing Pascanu bound) is clipped, its legend entry saying from which lag
    (``off_axis``).

    Args:
        results: label -> ChainResult.
        block_for_each: the block to draw per label (or one block for all); default the
            memory block (LSTM ``c/c``, else the first).
        overlays: theory lines (:class:`Overlay`), drawn dotted in grey unless told.
        path: if given, save PNG and SVG there (suffix replaced).
        norm: a registered norm (:data:`gateflow.numeric._observers.NORMS`).
        direct: draw the cell-path-only product dashed (∏ diag of the derived direct
            coefficient: LSTM ∏ diag(f_t), GRU ∏ diag(z_t), MGU ∏ diag(1 − f_t)), for every
            result that has one (True) or for these labels.
        colors: label -> colour (default: the palette in order).
        legend: ``"below"`` the axes (on a figure 8 in wide), ``"inside"`` (lower left of
            the axes), ``"outside"`` (right of the axes, on a wider figure), or None.
        ax: draw into these axes instead of a new figure (the figure keeps its size).

    Returns: the matplotlib Figure (median line and interquartile band per result).
    """
    if not results:
        raise GateflowError("plot_decay needs at least one result")
    key = OBSERVERS[choose(norm, NORMS, "norm")].key
    blocks = _blocks_for(results, block_for_each)
    _check_legend(legend)
    with house_style():
        fig, ax = _axes(ax, legend)
        log_axis(ax)
        drawn = []
        for i, (label, res) in enumerate(results.items()):
            color = _color(colors, label, i)
            b = blocks[label]
            if key not in res.blocks[b]:
                raise GateflowError(f"result {label!r} has no {norm} norms; "
                                    f"run all_lags with norms=({norm!r},)")
            s = _median_band(ax, res.blocks[b][key], res.lags, color=color,
                             label=f"{label}: " + block_tex(b))
            drawn += [s.median, s.q25, s.q75]
            want = direct if isinstance(direct, bool) else label in direct
            if want and res.direct:
                state = b.wrt if b.wrt in res.direct else next(iter(res.direct))
                path_tex = direct_label(res.cell, state, "latex")
                dd = summarize(res.direct[state][key], res.lags)
                ax.plot(dd.lags, _pow10(dd.median), color=color, linestyle="--", linewidth=1.4,
                        label=rf"{label}: $\|{path_tex}\|$ (gate path only)")
                drawn.append(dd.median)
        lines = [ax.plot(ov.lags, _pow10(ov.log10), color=ov.color, linestyle=ov.linestyle,
                         linewidth=1.4, label=ov.label)[0] for ov in overlays]
        _frame(ax, drawn, overlays, lines)
        _finish(fig, ax, [r.lags for r in results.values()], "lag k (steps)",
                f"gradient norm {norm_label(norm)}",
                title or "Gradient norm against lag (median, band: interquartile range)",
                legend, path)
    return fig


def _finish(fig, ax, lags, xlabel: str, ylabel: str, title: str, legend, path) -> None:
    """The last touches every lag plot shares: the x range over ``lags`` (one array per
    result), the axis labels and title, the legend, and the file if ``path`` is given."""
    top = max(float(np.max(np.asarray(k))) for k in lags)
    ax.set_xlim(0, top + 0.5)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    _place_legend(fig, ax, legend)
    if path is not None:
        save_figure(fig, path)


#: Line styles of the input blocks in :func:`plot_input_sensitivity` (colour: the result).
_INPUT_STYLES = ("-", "--", "-.", ":")


def plot_input_sensitivity(results: Mapping[str, ChainResult],
                           blocks: Sequence[str] | str | None = None,
                           path=None, *, norm: str = NORMS[0], title: str | None = None,
                           colors: Mapping[str, str] | None = None,
                           legend: str | None = "below", ax: Axes | None = None) -> Figure:
    """Input sensitivity ‖∂X_T/∂x_{T−k}‖ against input lag k = 0..T−1 (x_T, the last input,
    is lag 0): the median over the batch with its interquartile band, as
    :func:`plot_decay` draws it, one curve per result and input block (colour: the result,
    in the same order as :func:`plot_decay`'s; line style: the block).

    Args:
        results: label -> ChainResult; those with no input blocks measured
            (``all_lags(blocks=("h/x", ...))``) are skipped, keeping their colour.
        blocks: the input blocks to draw (``"h/x"``, ``"c/x"``; a comma string or names),
            default every one measured.
        path, norm, title, colors, legend, ax: as for :func:`plot_decay`.

    Returns: the matplotlib Figure.
    """
    measured = {label: res for label, res in results.items() if res.inputs}
    if not measured:
        raise GateflowError("plot_input_sensitivity needs a result with input blocks; run "
                            "all_lags with blocks=(..., 'h/x')")
    key = OBSERVERS[choose(norm, NORMS, "norm")].key
    _check_legend(legend)
    names: dict[str, Block] = {b: b for r in measured.values() for b in r.inputs}  # their own
    wanted: tuple[Block, ...] = (
        tuple(names.values()) if blocks is None
        else tuple(names[b] for b in choose_many(blocks, tuple(names), "input block")))
    with house_style():
        fig, ax = _axes(ax, legend)
        log_axis(ax)
        drawn = []
        for i, (label, res) in enumerate(results.items()):
            for b in (b for b in wanted if b in res.inputs):
                if key not in res.inputs[b]:
                    raise GateflowError(f"result {label!r} has no {norm} norms of {b}; "
                                        f"run all_lags with norms=({norm!r},)")
                s = _median_band(ax, res.inputs[b][key], res.input_lags,
                                 color=_color(colors, label, i),
                                 linestyle=_INPUT_STYLES[wanted.index(b) % len(_INPUT_STYLES)],
                                 label=f"{label}: " + norm_label(norm, b))
                drawn += [s.median, s.q25, s.q75]
        _frame(ax, drawn)
        # "X/y_lj" (a stack's layer output, what a hook sees) sits beside "X/x"
        source = {b.wrt[:1] for b in wanted}
        _finish(fig, ax, [r.input_lags for r in measured.values()], "input lag k (steps)",
                f"input sensitivity {norm_label(norm, Block.of('s', 'x'))}" if source == {"x"}
                else f"layer-output sensitivity {norm_label(norm, Block.of('s', 'y'))}"
                if source == {"y"} else
                "sensitivity to inputs and layer outputs",
                title or "Input sensitivity (median, band: interquartile range)", legend, path)
    return fig


def _spectrum(res: ChainResult, label: str, k: int, block: Block, item: int) -> np.ndarray:
    """The log10 singular values of one result's block at lag k, largest first."""
    sv = res.singular_values.get(k, {}).get(block)
    if sv is None:
        raise GateflowError(f"result {label!r} has no singular values at lag {k} "
                            f"for block {block!r}")
    return np.sort(np.asarray(sv)[item])[::-1]


def unresolved(log10_sv) -> np.ndarray:
    """The indices i (1-based, largest first) of the singular values float64 cannot
    resolve: more than |NOISE_DECADES| decades below the largest, where rounding in the
    product and the SVD (about 10⁻¹⁶ σ₁) decides their digits. None if the largest is not
    finite (an exactly zero Jacobian)."""
    s = np.sort(np.asarray(log10_sv, dtype=np.float64))[::-1]
    if s.size == 0 or not np.isfinite(s[0]):
        return np.zeros(0, dtype=int)
    return np.nonzero(s < s[0] + NOISE_DECADES)[0] + 1


def unresolved_counts(results: Mapping[str, ChainResult],
                      block_for_each: Mapping[str, str] | str | None,
                      lags: Sequence[int], *, item: int = 0) -> dict[tuple[str, int], int]:
    """(label, lag) -> how many singular values :func:`plot_spectra` draws at the floor
    (:func:`unresolved`), for the same arguments."""
    blocks = _blocks_for(results, block_for_each)
    return {(label, k): int(unresolved(_spectrum(res, label, k, blocks[label], item)).size)
            for k in lags for label, res in results.items()}


def plot_spectra(results: Mapping[str, ChainResult],
                 block_for_each: Mapping[str, str] | str | None = None,
                 lags: Sequence[int] | None = None, path=None, *, item: int = 0,
                 title: str | None = None, colors: Mapping[str, str] | None = None,
                 legend: str | None = "below") -> Figure:
    """Singular values of ∂s_T/∂s_{T−k}, sorted, for one batch element (``item``), one panel
    per lag, one colour per result. The results need ``all_lags(..., singular_lags=...)``.

    Values more than 10^|NOISE_DECADES| below the largest are not resolved in float64
    (:func:`unresolved`): each is drawn as a hollow ▽ at that floor, σ₁ · 10^NOISE_DECADES
    (its true value lies at or below it), and a legend entry says so.
    ``legend``: ``"below"`` the panels, ``"inside"`` the last one, ``"outside"`` to its
    right, or None."""
    if not results:
        raise GateflowError("plot_spectra needs at least one result")
    blocks = _blocks_for(results, block_for_each)
    if lags is None:
        common = set.intersection(*(set(r.singular_values) for r in results.values()))
        lags = sorted(common)
    if not lags:
        raise GateflowError("no singular values to plot; run all_lags with singular_lags=(...)")
    _check_legend(legend)
    with house_style():
        width = 3.0 * len(lags) + (3.0 if legend == "outside" else 1.0)
        fig = (_new_figure(max(width, WIDTH), 4.4) if legend == "below"
               else _new_figure(width, 3.8))
        axes = fig.subplots(1, len(lags), sharey=True, squeeze=False)[0]
        marked = False
        for ax, k in zip(axes, lags):
            log_axis(ax)
            floors = []
            for i, (label, res) in enumerate(results.items()):
                color = _color(colors, label, i)
                s = _spectrum(res, label, k, blocks[label], item)
                cut = unresolved(s)
                kept = s[: s.size - cut.size]  # the resolved ones, largest first
                ax.plot(np.arange(1, kept.size + 1), _pow10(kept), color=color, marker="o",
                        markersize=2.5, label=f"{label}: " + block_tex(blocks[label]))
                if cut.size:
                    floors.append((cut, s[0] + NOISE_DECADES, color))
            for cut, floor, color in floors:  # over the lines, as the legend shows them
                ax.plot(cut, np.full(cut.size, _pow10(floor)), linestyle="none", marker="v",
                        markersize=3.5, markerfacecolor="none", markeredgecolor=color,
                        markeredgewidth=0.8)
            marked = marked or bool(floors)
            ax.set_title(f"lag k = {k} step" + ("" if k == 1 else "s"))
            ax.set_xlabel("index i")
        axes[0].set_ylabel(r"singular value $\sigma_i(\partial s_T/\partial s_{T-k})$")
        fig.suptitle(title or "Singular-value spectra of the lag-k Jacobian")
        _spectra_legend(fig, axes[-1], legend, marked)
        if path is not None:
            save_figure(fig, path)
    return fig


def _spectra_legend(fig, ax, legend: str | None, marked: bool) -> None:
    from matplotlib.lines import Line2D

    if legend is None:
        return
    handles, labels = ax.get_legend_handles_labels()
    if marked:
        handles.append(Line2D([], [], linestyle="none", marker="v", markerfacecolor="none",
                              markeredgecolor="#555555"))
        labels.append(rf"below ${given(10.0 ** NOISE_DECADES, style='latex')}\,\sigma_1$ "
                      "(float64 cannot resolve "
                      "them): drawn at that floor")
    if legend == "below":
        legends_below(fig, [(ax, handles, labels)])
    elif legend == "outside":
        ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.04, 1.0),
                  borderaxespad=0.0)
    else:
        ax.legend(handles, labels, loc="lower left")

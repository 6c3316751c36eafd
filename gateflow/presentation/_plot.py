"""The figure primitives every plot shares: the house style, reproducible files, log axes,
interquartile bands, frames and legends. Headless (Agg).

Figures are built on :class:`matplotlib.figure.Figure` directly, never through pyplot, so
nothing global changes and no GUI backend is touched. The house style lives in one place,
:func:`house_style`, a context manager that sets rcParams for the duration of a plot only.
Colours are the Okabe–Ito palette (safe for the common colour-vision deficiencies, and
distinct in greyscale print together with the line styles).

What every caller gets (``gateflow decay``, ``gateflow report``, the notebooks, the public
API), because it is decided here, where the figure is drawn:

* the y axis frames what was measured, not the theory lines (:func:`_frame`, for
  :func:`~gateflow.presentation._plot_lags.plot_decay`); a theory line that leaves it says
  so in its legend entry (:func:`off_axis`);
* the interquartile bands have an edge, so a narrow band (few sequences, many decades on
  the axis) still shows;
* the legend goes below the axes on a figure 8 in wide (:func:`legends_below`), never over
  or beside the curves;
* the same figure gives the same SVG and PDF bytes (:func:`figure_bytes`).

The plots themselves: gradient norms and input sensitivity against lag, with their theory
lines (:mod:`._plot_lags`), and singular-value spectra (:mod:`._plot_spectra`). Every
``plot_*`` function returns the Figure (tests inspect its axes) and, given ``path``,
writes ``path.png`` and ``path.svg``.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gateflow._errors import GateflowError
from gateflow._validate import choose, choose_many
from gateflow.analysis._analysis import Summary, summarize
from gateflow.cells._block import Block
from gateflow.numeric._result import ChainResult
from gateflow.presentation._numbers import log_ticks, power

__all__ = ["FIGURE_FORMATS", "LEGENDS", "PALETTE", "WIDTH", "Overlay", "figure_bytes",
           "house_style", "legends_below", "log_axis", "off_axis", "save_figure"]

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
    """The block to draw of each result, as the result's own :class:`.Block` (a name given
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

def _color(colors: Mapping | None, label: str, i: int) -> str:
    return (colors or {}).get(label, PALETTE[i % len(PALETTE)])

"""Gradient flow against lag, drawn: the gradient norm ‖∂s_T/∂s_{T−k}‖
(:func:`plot_decay`) and the input sensitivity ‖∂X_T/∂x_{T−k}‖
(:func:`plot_input_sensitivity`), median and interquartile band per result, with the
theory lines drawn over them (:func:`rnn_overlays`, :func:`gate_overlay`). Frame, bands,
legend and files are the primitives' (:mod:`._plot`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from gateflow._errors import GateflowError
from gateflow._validate import choose, choose_many
from gateflow.analysis._analysis import FROBENIUS, summarize
from gateflow.cells._block import Block
from gateflow.numeric._observers import NORMS, OBSERVERS
from gateflow.numeric._result import ChainResult
from gateflow.presentation._labels import block_tex, direct_label, norm_label
from gateflow.presentation._numbers import given, sig
from gateflow.presentation._plot import (
    Overlay,
    _axes,
    _blocks_for,
    _check_legend,
    _color,
    _frame,
    _median_band,
    _place_legend,
    _pow10,
    house_style,
    log_axis,
    save_figure,
)

if TYPE_CHECKING:  # matplotlib is imported when a figure is drawn
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["gate_overlay", "plot_decay", "plot_input_sensitivity", "rnn_overlays"]


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

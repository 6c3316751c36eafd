"""Singular-value spectra of the lag-k Jacobian ∂s_T/∂s_{T−k}, drawn (:func:`plot_spectra`):
one panel per lag, one colour per result; the values float64 cannot resolve are drawn at
their floor, not dropped (:func:`unresolved`), and counted for the report's captions
(:func:`unresolved_counts`). Style, legends and files are the primitives' (:mod:`._plot`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from gateflow._errors import GateflowError
from gateflow.cells._block import Block
from gateflow.numeric._result import ChainResult
from gateflow.presentation._labels import block_tex
from gateflow.presentation._numbers import given
from gateflow.presentation._plot import (
    WIDTH,
    _blocks_for,
    _check_legend,
    _color,
    _new_figure,
    _pow10,
    house_style,
    legends_below,
    log_axis,
    save_figure,
)

if TYPE_CHECKING:  # matplotlib is imported when a figure is drawn
    from matplotlib.figure import Figure

__all__ = ["NOISE_DECADES", "plot_spectra", "unresolved", "unresolved_counts"]

#: Singular values more than this many decades below the largest are not resolved in
#: float64 (rounding in the product and the SVD is about 1e−16 σ₁): drawn at that floor.
NOISE_DECADES = -14.0


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

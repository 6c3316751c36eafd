"""Figures of gradient flow: norms against lag, singular-value spectra. Headless (Agg).

Figures are built on :class:`matplotlib.figure.Figure` directly, never through pyplot, so
nothing global changes and no GUI backend is touched. The house style lives in one place,
:func:`house_style`, a context manager that sets rcParams for the duration of a plot only.
Colours are the Okabe–Ito palette (safe for the common colour-vision deficiencies, and
distinct in greyscale print together with the line styles).

Every function returns the Figure (tests inspect its axes) and, given ``path``, writes
``path.png`` and ``path.svg``.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gateflow._errors import GateflowError
from gateflow._validate import choose
from gateflow.analysis._analysis import FROBENIUS, summarize
from gateflow.cells._library import get_cell
from gateflow.numeric._observers import NORMS, OBSERVERS
from gateflow.presentation._labels import block_tex, direct_label, norm_label

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


def save_figure(fig, path) -> list[Path]:
    """Write ``path`` with suffix .png and .svg; return both paths."""
    path = Path(path)
    out = []
    with house_style():
        for ext in (".png", ".svg"):
            p = path.with_suffix(ext)
            fig.savefig(p, format=ext[1:], metadata=_metadata(ext))
            out.append(p)
    return out


def figure_bytes(fig, fmt: str) -> bytes:
    """The figure rendered as ``fmt`` (``"png"`` or ``"svg"``), in memory: for writers that
    stage every output first (:func:`gateflow._io.write_files`), so nothing is half-written."""
    buf = io.BytesIO()
    with house_style():
        fig.savefig(buf, format=fmt, metadata=_metadata("." + fmt))
    return buf.getvalue()


def _metadata(ext):
    # No creation date in SVGs: the same data give the same file.
    return {"Date": None} if ext == ".svg" else None


def _pow10(v):
    v = np.asarray(v, dtype=np.float64)
    return np.power(10.0, np.clip(v, _LOG10_MIN, None))


def _blocks_for(results: Mapping, block_for_each) -> dict[str, str]:
    out = {}
    for label, res in results.items():
        if isinstance(block_for_each, Mapping):
            b = block_for_each.get(label)
        else:
            b = block_for_each
        if b is None:  # the cell's memory block (Cell.memory_block: c/c for LSTMs, else h/h)
            b = get_cell(res.cell).memory_block
        if b not in res.blocks:
            raise GateflowError(f"result {label!r} ({res.cell}) has no block {b!r}; "
                                f"it has {', '.join(res.blocks)}")
        out[label] = b
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
                           rf"$\chi_1={mf.chi1:.3f}$", lags, mf.log10_norm(lags, n),
                           color="#444444", linestyle=":"))
    if pascanu:
        u = float(np.linalg.norm(np.asarray(params["U"], dtype=np.float64), 2))
        out.append(Overlay(rf"{name} Pascanu bound: ${_sqrt_n(norm)}(\gamma\|U\|_2)^k$, "
                           rf"$\gamma=1$, $\|U\|_2={u:.2f}$", lags,
                           pascanu_bound(params["U"], lags, norm=norm), color="#888888",
                           linestyle="-."))
    return out


def gate_overlay(lags, bias: float, n: int, *, norm: str = NORMS[0], tex: str = "b",
                 color: str = "#555555", linestyle=":", prefix: str = "zero weights",
                 timescale: bool = False) -> Overlay:
    """The memory path with all weights zero, σ(b)^k (× √n for the Frobenius norm), exact
    there; with ``timescale`` the label adds the chrono timescale 1 + e^b steps."""
    from gateflow.analysis._analysis import chrono_timescale, gate_path

    label = rf"{prefix}: ${_sqrt_n(norm)}\sigma({tex}={bias:g})^k$"
    if timescale:
        ts = float(chrono_timescale(bias))
        value = f"{ts:.3g}" if math.isfinite(ts) else r"\infty"
        label += ",\n" + rf"timescale $1+e^{{{tex}}}={value}$ steps"
    return Overlay(label, np.asarray(lags), gate_path(lags, bias, n, norm), color=color,
                   linestyle=linestyle)


def _check_legend(legend: str) -> None:
    if legend not in ("inside", "outside"):
        raise GateflowError(f"legend must be 'inside' or 'outside', got {legend!r}")


def plot_decay(results: Mapping, block_for_each: Mapping | str | None = None,
               overlays: Sequence[Overlay] = (), path=None, *, norm: str = NORMS[0],
               direct: bool | Sequence[str] = True, title: str | None = None,
               colors: Mapping | None = None, legend: str = "inside"):
    """Gradient norm ‖∂s_T/∂s_{T−k}‖ against lag k, one colour per result.

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
        legend: ``"inside"`` (lower left of the axes) or ``"outside"`` (right of the axes,
            on a wider figure: never hides a curve).

    Returns: the matplotlib Figure (median line and interquartile band per result).
    """
    if not results:
        raise GateflowError("plot_decay needs at least one result")
    key = OBSERVERS[choose(norm, NORMS, "norm")].key
    blocks = _blocks_for(results, block_for_each)
    _check_legend(legend)
    with house_style():
        fig = _new_figure(10.5 if legend == "outside" else 7.0)
        ax = fig.add_subplot()
        ax.set_yscale("log")
        lows, highs = [], []
        for i, (label, res) in enumerate(results.items()):
            color = (colors or {}).get(label, PALETTE[i % len(PALETTE)])
            b = blocks[label]
            if key not in res.blocks[b]:
                raise GateflowError(f"result {label!r} has no {norm} norms; "
                                    f"run all_lags with norms=({norm!r},)")
            s = summarize(res.blocks[b][key], res.lags)
            name = f"{label}: " + block_tex(b)
            ax.plot(s.lags, _pow10(s.median), color=color, label=name)
            ax.fill_between(s.lags, _pow10(s.q25), _pow10(s.q75), color=color, alpha=0.2,
                            linewidth=0)
            lows.append(s.q25)
            highs.append(s.q75)
            want = direct if isinstance(direct, bool) else label in direct
            if want and res.direct:
                state = b.split("/")[1] if b.split("/")[1] in res.direct else next(iter(res.direct))
                path_tex = direct_label(res.cell, state, "latex")
                dd = summarize(res.direct[state][key], res.lags)
                ax.plot(dd.lags, _pow10(dd.median), color=color, linestyle="--", linewidth=1.4,
                        label=rf"{label}: $\|{path_tex}\|$ (gate path only)")
                lows.append(dd.median)
        finite = np.concatenate([v[np.isfinite(v)] for v in lows + highs] or [np.zeros(1)])
        lo = max(float(finite.min()) if finite.size else -1.0, _LOG10_MIN)
        hi = float(finite.max()) if finite.size else 1.0
        for ov in overlays:
            ax.plot(ov.lags, _pow10(ov.log10), color=ov.color, linestyle=ov.linestyle,
                    linewidth=1.4, label=ov.label)
        pad = 0.05 * max(hi - lo, 1.0)
        ax.set_ylim(10.0 ** (lo - pad), 10.0 ** (hi + 3 * pad))
        lags = np.concatenate([np.asarray(r.lags) for r in results.values()])
        ax.set_xlim(0, float(lags.max()) + 0.5)
        ax.set_xlabel("lag k (steps)")
        ax.set_ylabel(f"gradient norm {norm_label(norm)}")
        ax.set_title(title or "Gradient norm against lag (median, band: interquartile range)")
        if legend == "outside":
            ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
        else:
            ax.legend(loc="lower left", ncol=1 if len(results) + len(overlays) < 7 else 2)
        if path is not None:
            save_figure(fig, path)
    return fig


#: Singular values more than this many decades below the largest are not drawn.
NOISE_DECADES = -14.0


def plot_spectra(results: Mapping, block_for_each: Mapping | str | None = None,
                 lags: Sequence[int] | None = None, path=None, *, item: int = 0,
                 title: str | None = None, colors: Mapping | None = None,
                 legend: str = "inside"):
    """Singular values of ∂s_T/∂s_{T−k}, sorted, for one batch element (``item``), one panel
    per lag, one colour per result. The results need ``all_lags(..., singular_lags=...)``.
    Values below 10^NOISE_DECADES of the largest (float64 rounding) are not drawn.
    ``legend``: ``"inside"`` the last panel or ``"outside"`` to its right."""
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
        fig = _new_figure(3.0 * len(lags) + (3.0 if legend == "outside" else 1.0), 3.8)
        axes = fig.subplots(1, len(lags), sharey=True, squeeze=False)[0]
        for ax, k in zip(axes, lags):
            ax.set_yscale("log")
            for i, (label, res) in enumerate(results.items()):
                color = (colors or {}).get(label, PALETTE[i % len(PALETTE)])
                sv = res.singular_values.get(k, {}).get(blocks[label])
                if sv is None:
                    raise GateflowError(f"result {label!r} has no singular values at lag {k} "
                                        f"for block {blocks[label]!r}")
                s = np.sort(np.asarray(sv)[item])[::-1]
                # Below ~1e−14 of the largest, float64 singular values are rounding noise
                # (any backend gives different digits there): leave them out.
                s = s[s >= s[0] + NOISE_DECADES]
                idx = np.arange(1, s.size + 1)
                ax.plot(idx, _pow10(s), color=color, marker="o", markersize=2.5,
                        label=f"{label}: " + block_tex(blocks[label]))
            ax.set_title(f"lag k = {k} step" + ("" if k == 1 else "s"))
            ax.set_xlabel("index i")
        axes[0].set_ylabel(r"singular value $\sigma_i(\partial s_T/\partial s_{T-k})$")
        if legend == "outside":
            axes[-1].legend(loc="upper left", bbox_to_anchor=(1.04, 1.0), borderaxespad=0.0)
        else:
            axes[-1].legend(loc="lower left")
        fig.suptitle(title or "Singular-value spectra of the lag-k Jacobian")
        if path is not None:
            save_figure(fig, path)
    return fig

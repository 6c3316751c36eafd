"""What the report's pages show, built once from its data for both pages
(:func:`report_context`): the claim, the story and the verdict (words as inline markup,
text with ``$…$`` LaTeX), the tables (fits, Lyapunov exponents, theory, settings), the
figures and the formulas. Every number is a number of data.json.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from gateflow.cells._block import Block
from gateflow.presentation._labels import direct_label, lag_tex, run_label
from gateflow.presentation._numbers import factor, given, r2, sig, steps
from gateflow.presentation._report_math import _cell, cells_math
from gateflow.presentation._report_story import claim, narrative
from gateflow.presentation._report_verdict import verdict
from gateflow.presentation._report_words import (
    _norm,
    _r2,
    _runs,
    _thr,
    comparable,
    efold_text,
    horizon,
    shown_fit,
)

if TYPE_CHECKING:  # the figures are drawn by the job; here only their captions and SVG
    from gateflow.presentation._figures import ReportFigure

__all__ = ["report_context"]


def _table(headers: list[str], rows: list[list[str]]) -> dict[str, object]:
    return {"headers": headers, "rows": rows}


def _block_label(block: str) -> str:
    """``"c/c"`` (as data.json writes it) -> ``$\\partial c_T/\\partial c_{T-k}$``."""
    return f"${lag_tex(Block.parse(block))}$"


def _fit_rows(data: Mapping) -> list[list[str]]:
    rows = []
    for r in data["runs"]:
        shown = [(_block_label(r["block"]), shown_fit(r))]
        if r.get("direct_fit") is not None and r["group"] == "cells":
            state = Block.parse(r["block"]).wrt
            shown.append((f"${direct_label(_cell(r['cell']), state, 'latex')}$",
                           r["direct_fit"]))
        for b, f in shown:
            rows.append([run_label(r["label"]), b, f["regime"], factor(f["per_step_factor"]),
                         r2(f["r2"]), efold_text(f), horizon(f, data)])
    return rows


def _lyapunov_rows(data: Mapping) -> list[list[str]]:
    mf = data["theory"]["lyapunov_mean_field"]["lambda_1"]
    rows = [["RNN mean field $\\frac{1}{2} \\ln \\chi_1$", sig(mf), "—", "—", "—"]]
    for r in data["runs"]:
        if "lyapunov" in r:
            med = list(r["lyapunov"]["median"][:4])  # null in data.json: −inf
            cells = [sig(float("-inf") if v is None else v) for v in med]
            rows.append([run_label(r["label"]), *cells, *["—"] * (4 - len(cells))])
    return rows

def _measured(fit: Mapping) -> str:
    """A measured factor as the theory table shows it: only where the line describes the
    curve (:func:`comparable`); otherwise why it is not compared."""
    from gateflow.analysis._analysis import GOOD_R2

    if comparable(fit):
        return f"{factor(fit['per_step_factor'])} ({_r2(fit)})"
    if fit["regime"] in ("non-monotone", "zero"):
        return f"not compared: {fit['regime']}, not one exponential"
    return f"not compared: {_r2(fit)}, below {GOOD_R2} ({fit['regime']})"


def _theory_rows(data: Mapping) -> list[list[str]]:
    runs = _runs(data)
    mf = data["theory"]["mean_field"]
    rnn_factor = _measured(shown_fit(runs["RNN"]))
    rows = [
        ["RNN mean field $\\sqrt{\\chi_1}$", factor(mf["per_step_factor"]),
         steps(mf["efold_lag"], none="∞"), rnn_factor],
        ["RNN Pascanu $\\|U\\|_2$ (a bound per step)",
         sig(data["theory"]["pascanu"]["U_spectral_norm"]), "—", rnn_factor],
    ]
    for label, g in data["theory"]["gate_path"].items():
        rows.append([f"{run_label(label)}: $\\sigma(b)$ (zero weights)",
                     factor(g["zero_weight_factor"]), steps(g["zero_weight_efold"], none="∞"),
                     _measured(shown_fit(runs[label]))])
    return rows

def _figure(f: ReportFigure) -> dict[str, object]:
    image = next((x for x in f.files if x.endswith((".svg", ".png"))), None)
    return {"name": f.name, "title": f.title, "caption": f.caption, "svg": f.svg,
            "files": list(f.files), "image": image}


def _transient(lyap: Mapping | None) -> str:
    """"the first 20 steps discarded", in words that fit the count."""
    if lyap is None:
        return ""
    t = lyap["transient"]
    return ("no step discarded as transient" if t == 0 else "the first step discarded"
            if t == 1 else f"the first {t} steps discarded")


def report_context(data: Mapping, figures: Iterable[ReportFigure] = ()) -> dict[str, object]:
    """Everything the templates show, built once for both pages: words (inline markup),
    tables (header and rows of inline markup), figures and formulas (LaTeX)."""
    from gateflow.analysis._analysis import GOOD_R2, NEUTRAL_DECADES, TURN_DECADES

    cfg = data["config"]
    thr = _thr(data)
    lyap = next((r["lyapunov"] for r in data["runs"] if "lyapunov" in r), None)
    chrono = sorted({r["chrono"] for r in data["runs"] if r.get("chrono") is not None})
    return {
        "title": "Does gating keep gradients alive? RNN, LSTM and GRU, measured",
        "claim": claim(),
        "story": narrative(data),
        "verdict": verdict(data),
        "headline": _table(
            ["cell", "block", "regime", "e-folding lag (steps)",
             f"memory horizon (steps, $< {thr}$)"],
            [[r["label"], _block_label(r["block"]), shown_fit(r)["regime"],
              efold_text(shown_fit(r)), horizon(shown_fit(r), data)]
             for r in data["runs"] if r["group"] == "cells"]),
        "figures": [_figure(f) for f in figures],
        "fits": _table(["configuration", "block", "regime", "per-step factor", "$R^2$",
                        "e-folding lag (steps)", "memory horizon (steps)"], _fit_rows(data)),
        "lyapunov": _table(["configuration", *(f"$\\lambda_{j}$" for j in range(1, 5))],
                           _lyapunov_rows(data)),
        "theory": _table(["theory", "per-step factor", "e-folding lag (steps)",
                          "measured factor"], _theory_rows(data)),
        "cells": cells_math(),
        "config": _table(["setting", "value"], [[k, str(v)] for k, v in {
            "hidden size $n$": cfg["hidden"], "input size $d$": cfg["inputs"],
            "steps $T$": cfg["steps"], "batch $B$ (sequences)": cfg["batch"],
            "initialisation": cfg["scheme"], "weight seed": cfg["seed"],
            "input seed ($x \\sim \\mathcal{N}(0, 1)$)": cfg["input_seed"],
            "norm": cfg["norm"].capitalize(), "memory-horizon threshold": f"${thr}$",
            "gate biases $b_f$, $b_z$": ", ".join(given(b) for b in cfg["biases"]) or "—",
            "chrono $T_{\\max}$": ", ".join(given(c) for c in chrono) or "—",
            "wall time (s)": sig(data["seconds"])}.items()]),
        "versions": _table(["package", "version"],
                           [[k, str(v)] for k, v in data["versions"].items()]),
        "threshold": thr, "good_r2": GOOD_R2, "norm": _norm(),
        "neutral_decades": given(NEUTRAL_DECADES), "turn_decades": given(TURN_DECADES),
        "lyapunov_k": None if lyap is None else lyap["k"],
        "lyapunov_transient": _transient(lyap),
        "data_files": ["data.json", "fits.csv", "curves.csv"],
    }

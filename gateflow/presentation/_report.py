"""The pages of ``gateflow report``: index.md and one self-contained index.html, both
rendered from the same Jinja2 templates (``templates/``) and the same context, built once
here from the report's data — the very dict saved as ``data.json`` — so that every number
the pages state is a number of that file.

Text travels as *inline markup*: plain words with ``$…$`` LaTeX. The Markdown page keeps
it as it is (GitHub renders ``$…$`` and ``$$…$$``); the HTML page escapes the words and
typesets the LaTeX as MathML (latex2mathml; browsers render MathML natively, so the page
needs no script, no font and no network). Every formula about a cell is printed from
gateflow's own derivation (:func:`gateflow.symbolic._derive.derive`, the cell's notation in
:mod:`gateflow.cells._notation`), never typed here.

Layout of ``templates/``::

    report.j2          the content, once: sections, prose, tables, figures, formulas
    html/page.j2       the HTML shell (inline CSS from html/report.css)
    html/macros.j2     h, p, table, figure, equations, files: as HTML
    md/page.j2         the Markdown shell
    md/macros.j2       the same macros, as Markdown

:func:`narrative` tells the story with the numbers; :func:`report_context` builds what
the templates show; :func:`render_report` renders both pages.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Mapping
from functools import cache
from typing import Any

from gateflow.presentation._console import fmt
from gateflow.presentation._labels import (
    direct_coefficient,
    direct_label,
    lag_tex,
    norm_tex,
    run_label,
)

__all__ = ["narrative", "render_report", "report_context"]

#: The cells the report compares, by run label.
CELLS = {"RNN": "rnn", "LSTM": "lstm", "GRU": "gru"}
#: The pages :func:`render_report` writes, by template folder.
PAGES = ("md", "html")


def _runs(data: Mapping) -> dict[str, Mapping]:
    return {r["label"]: r for r in data["runs"]}


def shown_fit(run: Mapping) -> Mapping:
    """The fit of the block a run shows."""
    return run["fits"][run["block"]]


def tex_number(x: float) -> str:
    """A threshold as LaTeX: ``1e-06`` -> ``10^{-6}``, ``2.5e-07`` -> ``2.5 \\times
    10^{-7}``, ``0.01`` -> ``0.01``."""
    text = f"{x:g}"
    if "e" not in text:
        return text
    mant, _, exp = text.partition("e")
    power = f"10^{{{int(exp)}}}"
    return power if mant == "1" else rf"{mant} \times {power}"


def _norm(block: str | None = None) -> str:
    """``$\\|\\partial c_T/\\partial c_{T-k}\\|_F$`` for the report's norm."""
    return f"${norm_tex('frobenius', lag_tex(block))}$"


def horizon(fit: Mapping, T: int) -> str:
    """A fit's memory horizon; ``"> T"`` when a vanishing curve has not reached the
    threshold yet, ``"never within T"`` for a curve that does not vanish."""
    h = fit["memory_horizon"]
    if h is not None:
        return f"{h}"
    return f"> {T}" if fit.get("regime", "vanishing") == "vanishing" else "never within T"


def r2_text(fit: Mapping) -> str:
    return "—" if fit.get("r2") is None else f"{fit['r2']:.3f}"


def trend(fit: Mapping) -> str:
    """What a fitted curve does, in words, with its numbers: an e-folding lag only for a
    vanishing curve; an exploding, neutral or non-monotone curve is called so."""
    regime, factor = fit.get("regime", "vanishing"), fit["per_step_factor"]
    r2 = f"$R^2 = {r2_text(fit)}$"
    if regime == "vanishing":
        return (f"decays by a factor {factor:.3f} per step (e-folding lag "
                f"{fmt(fit['efold_lag'], '.2f')} steps, {r2})")
    if regime == "exploding":
        return (f"grows by a factor {factor:.3f} per step (exploding, {r2}: no e-folding lag, "
                "and no memory)")
    if regime == "neutral":
        return (f"stays within half a decade over the lags measured (factor {factor:.3f} per "
                f"step, {r2}: neutral, no e-folding lag)")
    if regime == "non-monotone":
        return (f"falls and then rises again (non-monotone: the best line, factor "
                f"{factor:.3f} per step, has {r2}, so no e-folding lag)")
    return "is exactly zero"


def efold_text(fit: Mapping) -> str:
    """The e-folding lag of a vanishing curve; the regime of any other."""
    if fit.get("regime", "vanishing") == "vanishing":
        return fmt(fit["efold_lag"], ".3g", "∞")
    return f"— ({fit['regime']})"


# -- the words ---------------------------------------------------------------------------------
@cache
def _derived(name: str):
    from gateflow.cells._library import get_cell
    from gateflow.symbolic._derive import derive

    return get_cell(name), derive(get_cell(name))


def _equation(name: str, node: str) -> str:
    """The cell's own equation for ``node``, in LaTeX: ``c_t = f_t \\odot c_{t-1} + …``."""
    from gateflow.cells._notation import equation_lines

    cell, _ = _derived(name)
    sys = cell.system
    nodes = [s.name for s, _ in sys.defs if s.name not in sys.composites]
    return dict(zip(nodes, equation_lines(cell, "latex")))[node]


def _jacobian(name: str, block: str) -> str:
    """``\\frac{\\partial c_t}{\\partial c_{t-1}} = \\operatorname{diag}(f_t)``, derived."""
    from gateflow.cells._notation import partial
    from gateflow.symbolic._derive import linop

    cell, s = _derived(name)
    return f"{partial(block, 'latex')} = {linop(s.block(block, chained=True), cell, 'latex')}"


def _sym(name: str, node: str) -> str:
    """How the cell's notation writes ``node`` at step t: ``"f"`` -> ``f_t``."""
    from gateflow.cells._notation import display_names

    return display_names(_derived(name)[0], "latex")[node]


def claim() -> list[str]:
    """The claim the report tests, stated for its reader, with the cells' own formulas."""
    from gateflow.cells._notation import partial

    f, i, o, g = (_sym("lstm", v) for v in "fiog")
    r, z = _sym("gru", "r"), _sym("gru", "z")
    return [
        "A plain recurrent network (RNN) updates its state from the previous state and the "
        f"input, ${_equation('rnn', 'h')}$. The gradient that carries an error back $k$ steps "
        f"is a product of $k$ one-step Jacobians $J_t = {partial('h/h', 'latex')}$, and it "
        "shrinks (or grows) geometrically with $k$: this vanishing gradient is why a plain "
        "RNN struggles to learn long-term dependencies.",
        "The LSTM is the classic fix. It adds a cell state $c$ that carries the long-term "
        f"memory, and three gates decide what is kept: the forget gate ${f}$ how much of the "
        f"old cell survives, the input gate ${i}$ how much new content ${g}$ is written, and "
        f"the output gate ${o}$ how much of the cell is read out into the state $h$: "
        f"${_equation('lstm', 'c')}$ and ${_equation('lstm', 'h')}$. Because the cell is "
        f"updated by addition, its one-step Jacobian is ${_jacobian('lstm', 'c/c')}$, so "
        f"along the cell the gradient is the product of the forget gates, "
        f"${direct_label('lstm', fmt='latex')}$: it stays close to 1 for as long as the "
        "forget gate stays open. That is how the LSTM is meant to fix the plain RNN's "
        "vanishing gradient.",
        "The GRU simplifies this to two gates and no separate cell: a reset gate "
        f"${r}$ and an update gate ${z}$, with ${_equation('gru', 'h')}$. One term of its "
        f"one-step Jacobian is $\\operatorname{{diag}}({direct_coefficient('gru', fmt='latex')})$"
        f", the path that copies $h_{{t-1}}$ forward; along it the gradient is "
        f"${direct_label('gru', fmt='latex')}$.",
        "This report tests the claim. It measures the exact Jacobians of the three cells "
        "(derived symbolically from their equations; every one is shown in the last "
        "sections) along random input sequences: how fast the gradient norm falls with the "
        "lag $k$, what the gates alone would give, and what the forget and update gates' "
        "biases change.",
    ]


def narrative(data: Mapping) -> list[str]:
    """The paragraphs that tell the story with the numbers of ``data`` (inline markup:
    text with ``$…$`` LaTeX). Every number is formatted from ``data`` here and nowhere else."""
    cfg = data["config"]
    T = cfg["steps"]
    runs = _runs(data)
    rnn, lstm, gru = (shown_fit(runs[k]) for k in ("RNN", "LSTM", "GRU"))
    lstm_d, gru_d = runs["LSTM"]["direct_fit"], runs["GRU"]["direct_fit"]
    mf = data["theory"]["mean_field"]
    u_norm = data["theory"]["pascanu"]["U_spectral_norm"]
    thr = tex_number(cfg["threshold"])
    paras = [
        f"Measured at the same initialisation ({cfg['scheme']}, $n = {cfg['hidden']}$, "
        f"$d = {cfg['inputs']}$, $T = {T}$, {cfg['batch']} sequences): the RNN's "
        f"{_norm(runs['RNN']['block'])} {trend(rnn)}; it first drops below ${thr}$ at lag "
        f"{horizon(rnn, T)}. Mean-field theory predicts $\\sqrt{{\\chi_1}} = "
        f"{mf['per_step_factor']:.3f}$ per step ($\\chi_1 = {mf['chi1']:.3f}$); the Pascanu "
        f"bound, with $\\|U\\|_2 = {u_norm:.2f}$, "
        + ("is above 1 per step and so says nothing here: the bound is loose, the "
           "vanishing comes from $\\tanh' < 1$ on typical pre-activations."
           if u_norm >= 1 else "is below 1 per step and guarantees vanishing."),
        f"The LSTM's cell path {_norm(runs['LSTM']['block'])} {trend(lstm)}, horizon "
        f"{horizon(lstm, T)}; the GRU's {_norm(runs['GRU']['block'])} {trend(gru)}, horizon "
        f"{horizon(gru, T)}. The gate-only products ${direct_label('lstm', fmt='latex')}$ "
        f"and ${direct_label('gru', fmt='latex')}$ (dashed in the first figure) decay at "
        f"{lstm_d['per_step_factor']:.3f} and {gru_d['per_step_factor']:.3f} per step: with "
        "default biases near 0 the gates sit near $\\sigma(0) = 0.5$, so gating alone barely "
        "helps.",
        lyapunov_paragraph(data),
    ]
    lstm_b = [r for r in data["runs"] if r["group"] == "lstm-bias"]
    gru_b = [r for r in data["runs"] if r["group"] == "gru-bias"]
    if lstm_b and gru_b:
        paras.append(bias_paragraph(data, lstm_b, gru_b))
    return paras


def bias_paragraph(data: Mapping, lstm_b: list, gru_b: list) -> str:
    """What the gate bias does, with each biased run's numbers, and the verdict those
    numbers give."""
    T = data["config"]["steps"]

    def line(rs):
        return "; ".join(f"{run_label(r['label']).split(' ', 1)[1]}: e-fold "
                         f"{efold_text(shown_fit(r))}, $R^2 = {r2_text(shown_fit(r))}$, "
                         f"horizon {horizon(shown_fit(r), T)}" for r in rs)

    kept = [r for r in lstm_b + gru_b if shown_fit(r)["memory_horizon"] is None]
    rnn_h = horizon(shown_fit(_runs(data)["RNN"]), T)
    text = ("What keeps the gradient alive is the gate's bias, which sets the timescale "
            "$1 + e^{b}$ steps of the memory path ($\\sigma(b)^k$ exactly when the weights "
            f"are zero). LSTM — {line(lstm_b)}. GRU — {line(gru_b)}. ")
    if kept:
        names = ", ".join(run_label(r["label"]) for r in kept)
        text += (f"So the claim holds in the form the theory gives it: the additive, gated "
                 f"path carries the gradient across all $T = {T}$ steps measured, without "
                 f"falling below ${tex_number(data['config']['threshold'])}$, for {names}; "
                 f"with the gates at their default bias it does not, and the plain RNN, "
                 f"which has no such knob, falls below it at lag {rnn_h}.")
    else:
        text += (f"So at these settings no gate bias carries the gradient across all "
                 f"$T = {T}$ steps: the claim holds only in part here (the plain RNN falls "
                 f"below the threshold at lag {rnn_h}).")
    return text


def lyapunov_paragraph(data: Mapping) -> str:
    """What the Lyapunov spectra say, with their numbers (median over the sequences)."""
    runs = _runs(data)
    lam = {k: runs[k]["lyapunov"]["median"][0] for k in ("RNN", "LSTM", "GRU")}
    mf = data["theory"]["lyapunov_mean_field"]["lambda_1"]
    biased = [r for r in data["runs"] if r["group"] != "cells" and "lyapunov" in r]
    best = max(biased, key=lambda r: r["lyapunov"]["median"][0]) if biased else None

    def timescale(v: float) -> str:
        return "no finite time" if v >= 0 else f"{-1 / v:.3g} steps"

    text = (f"The Lyapunov spectra say the same thing along the trajectory, with no fit: the "
            f"largest exponent $\\lambda_1$ (natural log per step) is the rate of the slowest "
            f"direction, $e^{{\\lambda_1 t}}$ what a generic perturbation of the state keeps "
            f"after $t$ steps. It is {lam['RNN']:.3f} for the RNN (mean-field theory: "
            f"$\\frac{{1}}{{2}} \\ln \\chi_1 = {mf:.3f}$), {lam['LSTM']:.3f} for the LSTM and "
            f"{lam['GRU']:.3f} for the GRU: their slowest direction forgets by a factor $e$ in "
            f"{timescale(lam['RNN'])}, {timescale(lam['LSTM'])} and {timescale(lam['GRU'])}.")
    if best is not None:
        v = best["lyapunov"]["median"][0]
        text += (f" Opening the gate moves $\\lambda_1$ towards 0: {run_label(best['label'])} "
                 f"has $\\lambda_1 = {v:.3f}$, "
                 + ("a direction that no longer contracts (no finite forgetting time)."
                    if v >= 0 else f"forgetting by $e$ in {timescale(v)}."))
    return text


# -- the tables ----------------------------------------------------------------------------
def _table(headers: list[str], rows: list[list[str]]) -> dict[str, Any]:
    return {"headers": headers, "rows": rows}


def _block_label(block: str) -> str:
    """``"c/c"`` -> ``$\\partial c_T/\\partial c_{T-k}$``."""
    return f"${lag_tex(block)}$"


def _fit_rows(data: Mapping) -> list[list[str]]:
    T = data["config"]["steps"]
    rows = []
    for r in data["runs"]:
        shown = [(_block_label(r["block"]), shown_fit(r))]
        if r.get("direct_fit") is not None and r["group"] == "cells":
            state = r["block"].split("/")[1]
            shown.append((f"${direct_label(r['cell'], state, 'latex')}$", r["direct_fit"]))
        for b, f in shown:
            rows.append([run_label(r["label"]), b, f.get("regime", "vanishing"),
                         f"{f['per_step_factor']:.4f}", r2_text(f), efold_text(f),
                         horizon(f, T)])
    return rows


def _lyapunov_rows(data: Mapping) -> list[list[str]]:
    mf = data["theory"]["lyapunov_mean_field"]["lambda_1"]
    rows = [["RNN mean field $\\frac{1}{2} \\ln \\chi_1$", f"{mf:.4f}", "—", "—", "—"]]
    for r in data["runs"]:
        if "lyapunov" in r:
            med = list(r["lyapunov"]["median"][:4])  # null in data.json: −inf
            cells = ["$-\\infty$" if v is None or v == float("-inf") else f"{v:.4f}"
                     for v in med]
            rows.append([run_label(r["label"]), *cells, *["—"] * (4 - len(cells))])
    return rows


def _measured(fit: Mapping) -> str:
    """A measured factor as the theory table shows it: only where the line describes the
    curve (R² ≥ 0.99); otherwise why it is not compared."""
    from gateflow.analysis._analysis import GOOD_R2

    r2 = fit.get("r2")
    if r2 is not None and r2 >= GOOD_R2 and fit.get("regime") != "non-monotone":
        return f"{fit['per_step_factor']:.4f} ($R^2 = {r2:.3f}$)"
    why = "undefined" if r2 is None else f"{r2:.3f}"
    return (f"not compared: $R^2 = {why} < {GOOD_R2}$ ({fit.get('regime')}), not one "
            "exponential")


def _theory_rows(data: Mapping) -> list[list[str]]:
    runs = _runs(data)
    mf = data["theory"]["mean_field"]
    rnn_factor = _measured(shown_fit(runs["RNN"]))
    rows = [
        ["RNN mean field $\\sqrt{\\chi_1}$", f"{mf['per_step_factor']:.4f}",
         fmt(mf["efold_lag"], ".3g", "∞"), rnn_factor],
        ["RNN Pascanu $\\|U\\|_2$ (a bound per step)",
         f"{data['theory']['pascanu']['U_spectral_norm']:.4f}", "—", rnn_factor],
    ]
    for label, g in data["theory"]["gate_path"].items():
        rows.append([f"{run_label(label)}: $\\sigma(b)$ (zero weights)",
                     f"{g['zero_weight_factor']:.4f}", fmt(g["zero_weight_efold"], ".3g", "∞"),
                     _measured(shown_fit(runs[label]))])
    return rows


# -- the formulas ---------------------------------------------------------------------------
#: The blocks the report measures, per cell; the blocks their formulas refer to follow.
SHOWN_BLOCKS = {"rnn": ("h/h",), "lstm": ("c/c", "h/h"), "gru": ("h/h",)}
#: A formula longer than this (in Unicode characters) is set one term per line.
_LINE = 64


def _referenced(op) -> Iterable[str]:
    for t in op.terms:
        if t.block is not None:
            yield t.block
        if t.inner is not None:
            yield from _referenced(t.inner)


def _blocks(name: str) -> list[str]:
    """The blocks to show: those measured, and every block their formulas refer to (the
    LSTM's ∂h_t/∂h_{t−1} refers to ∂c_t/∂h_{t−1}), in the cell's order."""
    cell, s = _derived(name)
    todo, seen = list(SHOWN_BLOCKS[name]), set()
    while todo:
        b = todo.pop()
        if b not in seen:
            seen.add(b)
            todo += list(_referenced(s.block(b, chained=True)))
    return [b for b in cell.blocks if b in seen]


def _rows(op, cell) -> list[tuple[str, str]]:
    """(sign, term) rows of a structured operator: one row if short, else one per term."""
    from dataclasses import replace

    from gateflow.symbolic._derive import linop

    if len(linop(op, cell, "text")) <= _LINE or len(op.terms) < 2:
        return [("=", linop(op, cell, "latex"))]
    out = []
    for j, t in enumerate(op.terms):
        tex = linop(replace(op, terms=(t,)), cell, "latex")
        neg = tex.startswith("-")
        body = tex[1:].lstrip() if neg else tex
        out.append(("=" if j == 0 else "-" if neg else "+", tex if j == 0 else body))
    return out


def aligned(rows: list[tuple[str, str]]) -> str:
    """(left side, right side) rows as one display, aligned on the relation: a LaTeX
    ``array`` (latex2mathml has no ``aligned``), each side in display style. One row is
    plain ``lhs rhs``."""
    if len(rows) == 1:
        return " ".join(x for x in rows[0] if x)
    body = r" \\ ".join(rf"{{\displaystyle {lhs}}} & {{\displaystyle {{}}{rhs}}}" if lhs
                         else rf"& {{\displaystyle {{}}{rhs}}}" for lhs, rhs in rows)
    return r"\begin{array}{rl} " + body + r" \end{array}"


def jacobian_tex(name: str, block: str) -> str:
    """The block's one-step Jacobian as derived, chained form first (it names the other
    blocks it goes through) and then, if different, expanded; long forms one term a line."""
    from gateflow.cells._notation import partial

    cell, s = _derived(name)
    chained, expanded = s.block(block, chained=True), s.block(block)
    rows = _rows(chained, cell) + (_rows(expanded, cell) if expanded != chained else [])
    lhs = partial(block, "latex")
    return aligned([(lhs if j == 0 else "", f"{op} {t}") for j, (op, t) in enumerate(rows)])


def equations_tex(name: str) -> str:
    """The cell's equations, as written in its declaration, aligned on "="."""
    from gateflow.cells._notation import equation_lines

    rows = [line.split(" = ", 1) for line in equation_lines(_derived(name)[0], "latex")]
    return aligned([(lhs, f"= {rhs}") for lhs, rhs in rows])


def cells_math() -> list[dict[str, Any]]:
    """Per cell: its name, summary, reference, equations and the one-step Jacobians of the
    blocks shown (LaTeX), all printed from the cell and its derivation."""
    out = []
    for name in SHOWN_BLOCKS:
        cell, _ = _derived(name)
        out.append({"name": cell.name, "summary": cell.summary, "reference": cell.reference,
                    "equations": [equations_tex(name)],
                    "jacobians": [jacobian_tex(name, b) for b in _blocks(name)]})
    return out


# -- the context and the pages ---------------------------------------------------------------
def _figure(f: Any) -> dict[str, Any]:
    image = next((x for x in f.files if x.endswith((".svg", ".png"))), None)
    return {"name": f.name, "title": f.title, "caption": f.caption, "svg": f.svg,
            "files": list(f.files), "image": image}


def report_context(data: Mapping[str, Any], figures: Iterable[Any] = ()) -> dict[str, Any]:
    """Everything the templates show, built once for both pages: words (inline markup),
    tables (header and rows of inline markup), figures and formulas (LaTeX)."""
    from gateflow.analysis._analysis import GOOD_R2

    cfg = data["config"]
    T = cfg["steps"]
    thr = tex_number(cfg["threshold"])
    lyap = next((r["lyapunov"] for r in data["runs"] if "lyapunov" in r), None)
    return {
        "title": "Does gating keep gradients alive? RNN, LSTM and GRU, measured",
        "claim": claim(),
        "story": narrative(data),
        "headline": _table(
            ["cell", "block", "regime", "e-folding lag (steps)",
             f"memory horizon (steps, $< {thr}$)"],
            [[r["label"], _block_label(r["block"]),
              shown_fit(r).get("regime", "vanishing"), efold_text(shown_fit(r)),
              horizon(shown_fit(r), T)] for r in data["runs"] if r["group"] == "cells"]),
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
            "steps $T$": T, "batch $B$ (sequences)": cfg["batch"],
            "initialisation": cfg["scheme"], "weight seed": cfg["seed"],
            "input seed ($x \\sim \\mathcal{N}(0, 1)$)": cfg["input_seed"],
            "norm": cfg["norm"].capitalize(), "memory-horizon threshold": f"${thr}$",
            "chrono $T_{\\max}$": T, "wall time (s)": f"{data['seconds']:.1f}"}.items()]),
        "versions": _table(["package", "version"],
                           [[k, str(v)] for k, v in data["versions"].items()]),
        "threshold": thr, "good_r2": GOOD_R2, "steps": T, "norm": _norm(),
        "lyapunov_k": None if lyap is None else lyap["k"],
        "lyapunov_transient": None if lyap is None else lyap["transient"],
        "data_files": ["data.json", "fits.csv", "curves.csv"],
    }


_MATH = re.compile(r"\$([^$]+)\$")


@cache
def mathml(tex: str, display: str = "inline") -> str:
    """LaTeX -> MathML (latex2mathml), checked: a construct it cannot typeset is an
    error here, not a red box on the page."""
    from latex2mathml.converter import convert

    out = convert(tex, display=display)
    if "<merror" in out or "<mi>&</mi>" in out:
        raise ValueError(f"latex2mathml cannot typeset {tex!r}")
    # HTML puts <math> in the MathML namespace by itself: no URL left in the page
    return out.replace(' xmlns="http://www.w3.org/1998/Math/MathML"', "", 1)


def _inline_html(value):
    """Inline markup -> HTML: words escaped (unless the template already did), ``$…$`` as
    MathML."""
    from markupsafe import Markup, escape

    text = " ".join(str(escape(value)).split())
    out, pos = [], 0
    for m in _MATH.finditer(text):
        out += [text[pos:m.start()], mathml(Markup(m.group(1)).unescape())]
        pos = m.end()
    return Markup("".join([*out, text[pos:]]))


def _display_html(tex: str):
    from markupsafe import Markup

    return Markup(mathml(str(tex), "block"))


def _inline_md(value) -> str:
    return " ".join(str(value).split())


def _cell_md(text: str) -> str:
    """A Markdown table cell: GFM splits cells at any "|" not escaped, and ``\\|`` reads as
    an escaped backslash then a split, so LaTeX's norm bars become ``\\Vert`` and a bare
    "|" is escaped."""
    return text.replace("\\|", "\\Vert ").replace("|", "\\|")


def _display_md(tex: str) -> str:
    return f"$$\n{tex}\n$$"


def _svg_data_uri(svg: str) -> str:
    """The figure's SVG as a data URI: the page carries it, and nothing it holds (ids,
    styles) can clash with the page or another figure."""
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode("utf-8")).decode("ascii")


@cache
def _environment(page: str):
    """The Jinja2 environment of one page kind: HTML autoescapes, Markdown does not; both
    load the same template tree."""
    from jinja2 import Environment, PackageLoader, StrictUndefined

    html = page == "html"
    env = Environment(loader=PackageLoader("gateflow.presentation", "templates"),
                      autoescape=html, undefined=StrictUndefined, trim_blocks=True,
                      lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["inline"] = _inline_html if html else _inline_md
    env.filters["display"] = _display_html if html else _display_md
    env.filters["data_uri"] = _svg_data_uri
    env.filters["cell"] = _cell_md
    return env


def render_page(context: Mapping[str, Any], page: str) -> str:
    """One page (``"md"`` or ``"html"``) of the report from its context."""
    text = _environment(page).get_template("report.j2").render(**context, page=page)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


def render_report(data: Mapping[str, Any], figures: Iterable[Any] = ()) -> tuple[str, str]:
    """(index.md, index.html) of the report from its ``data`` (as saved in data.json) and
    its figures (:class:`~gateflow.presentation._figures.ReportFigure`)."""
    context = report_context(data, figures)
    return render_page(context, "md"), render_page(context, "html")

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

:func:`narrative` tells the story with the numbers and :func:`verdict` gives the answer
(the headline): every number, comparison and verdict is computed from the fits and curves
of the data, none is asserted from a default; a curve that never crosses the threshold
"stays above 10⁻⁶ over all T lags measured", and nothing is said of the lags beyond.
``tests/test_report_claims.py`` checks every claim against data.json over a grid of
settings. Numbers are formatted by the one policy of :mod:`._numbers`.
:func:`report_context` builds what the templates show; :func:`render_report` renders both
pages.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Mapping
from functools import cache
from typing import TYPE_CHECKING

from gateflow.cells._block import Block
from gateflow.cells._library import read_cell
from gateflow.cells._record import Cell
from gateflow.presentation._labels import (
    direct_coefficient,
    direct_label,
    lag_tex,
    norm_tex,
    run_label,
)
from gateflow.presentation._numbers import factor, given, r2, sig, steps

if TYPE_CHECKING:  # the figures are drawn by the job; here only their captions and SVG
    from gateflow.presentation._figures import ReportFigure

__all__ = ["narrative", "render_report", "report_context", "verdict"]

#: The cells the report compares, by run label.
CELLS = {"RNN": "rnn", "LSTM": "lstm", "GRU": "gru"}
#: The pages :func:`render_report` writes, by template folder.
PAGES = ("md", "html")


def _runs(data: Mapping) -> dict[str, Mapping]:
    return {r["label"]: r for r in data["runs"]}


def shown_fit(run: Mapping) -> Mapping:
    """The fit of the block a run shows."""
    return run["fits"][run["block"]]


def _norm(block: str | None = None) -> str:
    """``$\\|\\partial c_T/\\partial c_{T-k}\\|_F$`` for the report's norm (``block``:
    as data.json writes it)."""
    return f"${norm_tex('frobenius', lag_tex(None if block is None else Block.parse(block)))}$"


def _thr(data: Mapping) -> str:
    """The memory-horizon threshold as LaTeX: ``10^{-6}``."""
    return given(data["config"]["threshold"], style="latex")


def _lags(data: Mapping) -> int:
    """How many lags were measured (k = 1, …, T: T of them)."""
    return len(data["lags"])


def _plural(count: int, one: str, many: str | None = None) -> str:
    return f"{count} {one if count == 1 else many or one + 's'}"


def _and(items: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    if len(items) < 2:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _r2(fit: Mapping) -> str:
    return "$R^2$ undefined" if fit["r2"] is None else f"$R^2 = {r2(fit['r2'])}$"


def horizon(fit: Mapping, data: Mapping) -> str:
    """A memory horizon for a table: the first lag below the threshold, or "not reached"
    with the lags it was not reached in (never "> T": nothing is said beyond them)."""
    h = fit["memory_horizon"]
    return str(h) if h is not None else f"not reached ($k \\leq {data['lags'][-1]}$)"


def fate(fit: Mapping, data: Mapping) -> str:
    """What a curve does against the threshold, over the lags measured."""
    h = fit["memory_horizon"]
    if h is not None:
        return f"first drops below ${_thr(data)}$ at lag {h}"
    return f"stays above ${_thr(data)}$ over all {_lags(data)} lags measured"


def trend(fit: Mapping) -> str:
    """What a fitted curve does, in words, with its numbers: an e-folding lag only for a
    vanishing curve; an exploding, neutral or non-monotone curve is called so."""
    from gateflow.analysis._analysis import NEUTRAL_DECADES, TURN_DECADES

    regime, per = fit["regime"], factor(fit["per_step_factor"])
    if regime == "vanishing":
        return (f"decays by ×{per} per step (e-folding lag {steps(fit['efold_lag'])} steps, "
                f"{_r2(fit)})")
    if regime == "exploding":
        return f"grows by ×{per} per step (exploding, {_r2(fit)}: no e-folding lag, no memory)"
    if regime == "neutral":
        return (f"is neutral: its fitted line, ×{per} per step ({_r2(fit)}), moves by less "
                f"than {given(NEUTRAL_DECADES)} decade over the lags measured, so it has no "
                "e-folding lag")
    if regime == "non-monotone":
        return (f"is non-monotone: it turns by at least {given(TURN_DECADES)} decade, so the "
                f"best line, ×{per} per step ({_r2(fit)}), gives no e-folding lag")
    return "is exactly zero at every lag"


def efold_text(fit: Mapping) -> str:
    """The e-folding lag of a vanishing curve; the regime of any other."""
    if fit["regime"] == "vanishing":
        return steps(fit["efold_lag"])
    return f"— ({fit['regime']})"


# -- the words ---------------------------------------------------------------------------------
@cache
def _derived(name: str):
    """The cell a name of the report stands for (as data.json names it: the one place the
    pages turn a name into a :class:`Cell`) and its derivation."""
    from gateflow.symbolic._derive import derive

    cell = read_cell(name)
    return cell, derive(cell)


def _cell(name: str) -> Cell:
    return _derived(name)[0]


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
        f"${direct_label(_cell('lstm'), fmt='latex')}$: it stays close to 1 for as long as the "
        "forget gate stays open. That is how the LSTM is meant to fix the plain RNN's "
        "vanishing gradient.",
        "The GRU simplifies this to two gates and no separate cell: a reset gate "
        f"${r}$ and an update gate ${z}$, with ${_equation('gru', 'h')}$. One term of its "
        f"one-step Jacobian is $\\operatorname{{diag}}("
        f"{direct_coefficient(_cell('gru'), fmt='latex')})$"
        f", the path that copies $h_{{t-1}}$ forward; along it the gradient is "
        f"${direct_label(_cell('gru'), fmt='latex')}$.",
        "This report tests the claim. It measures the exact Jacobians of the three cells "
        "(derived symbolically from their equations; every one is shown in the last "
        "sections) along random input sequences: how fast the gradient norm falls with the "
        "lag $k$, what the gates alone would give, and what the forget and update gates' "
        "biases change.",
    ]


#: Two e-folding lags within this fraction of each other are "about as long".
SAME = 0.05
#: A gate-only per-step factor within this of σ(0) = 1/2 is "close to" it.
NEAR_HALF = 0.05


def _versus(a: str, fa: Mapping, b: str, fb: Mapping) -> str:
    """How long ``a`` keeps the gradient against ``b``, by their e-folding lags (only
    two vanishing curves have them)."""
    if fa["regime"] != "vanishing" or fb["regime"] != "vanishing":
        return (f"{a} ({fa['regime']}) and {b} ({fb['regime']}) have no pair of e-folding "
                "lags to compare")
    ea, eb = fa["efold_lag"], fb["efold_lag"]
    said = f"(e-folding lag {steps(ea)} against {steps(eb)} steps)"
    if abs(ea / eb - 1) <= SAME:
        return f"{a} keeps the gradient about as long as {b} {said}"
    if ea > eb:
        return f"{a} keeps the gradient {sig(ea / eb, 2)} times as long as {b} {said}"
    return f"{a} loses the gradient {sig(eb / ea, 2)} times as fast as {b} {said}"


def _gates_alone(cell: str, fit: Mapping, rnn: Mapping) -> str:
    """The gate-only product of ``cell`` against σ(0) = 1/2 and the RNN's factor."""
    f, g = fit["per_step_factor"], rnn["per_step_factor"]
    level = ("close to" if abs(f - 0.5) <= NEAR_HALF else "above" if f > 0.5 else "below")
    return (f"${direct_label(_cell(cell), fmt='latex')}$ changes by ×{factor(f)} per step, {level} "
            f"$\\sigma(0) = 0.5$ and {'above' if f > g else 'below'} the RNN's ×{factor(g)}")


def _mean_field(rnn: Mapping, mf: Mapping) -> str:
    from gateflow.analysis._analysis import GOOD_R2

    text = (f"Mean-field theory predicts ×{factor(mf['per_step_factor'])} per step "
            f"($\\sqrt{{\\chi_1}}$, $\\chi_1 = {sig(mf['chi1'], style='latex')}$)")
    if comparable(rnn):
        rel = rnn["per_step_factor"] / mf["per_step_factor"] - 1
        return (text + f"; the measured factor is {sig(abs(rel) * 100, 2)}% "
                f"{'above' if rel > 0 else 'below'} it.")
    return (text + f"; the measured curve is {rnn['regime']} with {_r2(rnn)}, so the two are "
            f"not compared (only a curve that does not turn, with $R^2 \\geq {GOOD_R2}$, "
            "is).")


def _pascanu(rnn: Mapping, u: float) -> str:
    text = f"The Pascanu bound, $\\|U\\|_2 = {sig(u, style='latex')}$ per step, "
    if u < 1:
        return text + "is below 1, so it guarantees vanishing."
    text += "is not below 1, so it guarantees nothing here"
    if rnn["regime"] == "vanishing":
        return text + ": the measured vanishing comes from $\\tanh' < 1$ on typical " \
                      "pre-activations."
    return text + "."


def narrative(data: Mapping) -> list[str]:
    """The paragraphs that tell the story with the numbers of ``data`` (inline markup:
    text with ``$…$`` LaTeX). Every number, every comparison and every verdict is
    computed here from the fits and curves of ``data`` (as data.json holds them): nothing
    is said that the measurements do not show."""
    cfg = data["config"]
    runs = _runs(data)
    rnn, lstm, gru = (shown_fit(runs[k]) for k in ("RNN", "LSTM", "GRU"))
    paras = [
        f"Measured at the same initialisation ({cfg['scheme']}, $n = {cfg['hidden']}$, "
        f"$d = {cfg['inputs']}$, $T = {cfg['steps']}$, "
        f"{_plural(cfg['batch'], 'sequence')}): the RNN's {_norm(runs['RNN']['block'])} "
        f"{trend(rnn)}, and {fate(rnn, data)}. "
        + _mean_field(rnn, data["theory"]["mean_field"]) + " "
        + _pascanu(rnn, data["theory"]["pascanu"]["U_spectral_norm"]),
        f"At the same initialisation, the LSTM's cell path {_norm(runs['LSTM']['block'])} "
        f"{trend(lstm)}, and {fate(lstm, data)}; the GRU's {_norm(runs['GRU']['block'])} "
        f"{trend(gru)}, and {fate(gru, data)}. Against the plain RNN, at the default gate "
        f"bias: {_versus('the LSTM', lstm, 'the RNN', rnn)}, and "
        f"{_versus('the GRU', gru, 'the RNN', rnn)}. Along the gates alone (dashed in the "
        "first figure), "
        + "; ".join(_gates_alone(r["cell"], r["direct_fit"], rnn)
                    for r in (runs["LSTM"], runs["GRU"]) if r.get("direct_fit"))
        + "; $\\sigma(0)$ is the per-step factor of a gate with zero bias and zero weights.",
    ]
    if all("lyapunov" in runs[k] for k in ("RNN", "LSTM", "GRU")):
        paras.append(lyapunov_paragraph(data))
    paras.append(bias_paragraph(data))
    return paras


def _bias_groups(data: Mapping) -> list[tuple[str, str, list[Mapping]]]:
    """(cell label, the bias's LaTeX name, its runs) per biased group, e.g.
    ("LSTM", "b_f", [LSTM b_f=0, …, LSTM chrono])."""
    out = []
    for group, cell, name in (("lstm-bias", "LSTM", "b_f"), ("gru-bias", "GRU", "b_z")):
        rs = [r for r in data["runs"] if r["group"] == group]
        if rs:
            out.append((cell, name, rs))
    return out


def _item(r: Mapping, data: Mapping) -> str:
    """One biased run in the bias paragraph: its e-folding lag (or regime) and fate."""
    fit = shown_fit(r)
    name = run_label(r["label"]).split(" ", 1)[1]
    h = fit["memory_horizon"]
    where = (f"first below ${_thr(data)}$ at lag {h}" if h is not None
             else f"above ${_thr(data)}$ at all {_lags(data)} lags")
    if fit["regime"] == "vanishing":
        return f"{name}: e-folding lag {steps(fit['efold_lag'])} steps ({_r2(fit)}), {where}"
    return (f"{name}: {fit['regime']}, ×{factor(fit['per_step_factor'])} per step "
            f"({_r2(fit)}), {where}")


def _ordered(rs: list[Mapping]) -> list[Mapping]:
    """The runs with a gate bias set, by bias."""
    return sorted((r for r in rs if r["gate_bias"] is not None), key=lambda r: r["gate_bias"])


def bias_paragraph(data: Mapping) -> str:
    """What the gate bias does, with each biased run's numbers, and the verdict those
    numbers give (:func:`verdict`)."""
    groups = _bias_groups(data)
    if not groups:
        return verdict(data)
    text = ("The gate's bias $b$ sets the timescale $1 + e^{b}$ steps of the memory path "
            "($\\sigma(b)^k$ exactly when the weights are zero). "
            + " ".join(f"{cell} — " + "; ".join(_item(r, data) for r in rs) + "."
                       for cell, _, rs in groups))
    for cell, name, rs in groups:
        by_bias = _ordered(rs)
        if len(by_bias) < 2:
            continue
        fs = [shown_fit(r)["per_step_factor"] for r in by_bias]
        rising = all(b > a for a, b in zip(fs, fs[1:]))
        text += (f" Raising ${name}$ through {', '.join(given(r['gate_bias']) for r in by_bias)}"
                 f" {'raises' if rising else 'does not raise'} the {cell}'s per-step factor at "
                 "every step ("
                 + ", ".join(f"×{factor(f)}" for f in fs) + " per step).")
    return text + " " + verdict(data, "So ")


def _fates(subjects: list[tuple[str, Mapping]], too: bool) -> str:
    """Where each of ``subjects`` ((name, run)) crosses the threshold ("it"): those that
    drop below it, with their lags, then those that stay above it."""
    drops = [(s, shown_fit(r)["memory_horizon"]) for s, r in subjects
             if shown_fit(r)["memory_horizon"] is not None]
    stays = [s for s, r in subjects if shown_fit(r)["memory_horizon"] is None]
    parts = []
    if drops:
        parts.append(_and([f"{s} first drops below it at lag {h}" if j == 0
                           else f"{s} at lag {h}" for j, (s, h) in enumerate(drops)]))
    if stays:
        parts.append(f"{_and(stays)} {'stays' if len(stays) == 1 else 'stay'} above it"
                     + (" too" if too else ""))
    return "; ".join(parts)


def verdict(data: Mapping, lead: str = "") -> str:
    """The report's answer, from the fates of the curves over the lags measured: which
    biased runs keep the gradient above the threshold, what the default-bias LSTM and GRU
    and the plain RNN do, and which curve keeps the longest e-folding lag. ``lead``
    starts the first sentence ("So ")."""
    runs = _runs(data)
    thr, n = _thr(data), _lags(data)
    biased = [r for _, _, rs in _bias_groups(data) for r in rs]

    def above(r):
        return shown_fit(r)["memory_horizon"] is None

    kept = [r for r in biased if above(r) and shown_fit(r)["regime"] not in ("exploding",
                                                                              "zero")]
    grown = [r for r in biased if above(r) and shown_fit(r)["regime"] == "exploding"]
    subjects = [("the default-bias LSTM", runs["LSTM"]), ("the default-bias GRU", runs["GRU"]),
                ("the plain RNN", runs["RNN"])]
    kept_text = (f"with {_and([run_label(r['label']) for r in kept])} the gradient stays "
                 f"above ${thr}$ over all {n} lags measured" if kept else "")
    if not biased:
        text = f"against ${thr}$ over the {n} lags measured, {_fates(subjects, False)}."
    elif not kept:
        text = (f"at these settings no gate bias keeps the gradient above ${thr}$ over all "
                f"{n} lags measured: {_fates(subjects, False)}.")
    elif not any(above(runs[k]) for k in ("LSTM", "GRU")):
        text = (f"the claim holds in the form the theory gives it: {kept_text}, while "
                f"{_fates(subjects, True)}.")
    else:
        text = (f"{kept_text}, but the threshold does not single out the bias here: "
                f"{_fates(subjects, True)}.")
    text = lead + text if lead else text[0].upper() + text[1:]
    if grown:
        text += (f" ({_and([run_label(r['label']) for r in grown])} "
                 f"{'stays' if len(grown) == 1 else 'stay'} above it only because the "
                 "gradient grows: exploding is no memory.)")
    rnn = shown_fit(runs["RNN"])
    vanishing = [r for r in data["runs"] if shown_fit(r)["regime"] == "vanishing"]
    if vanishing:
        best = max(vanishing, key=lambda r: shown_fit(r)["efold_lag"])
        text += (f" Among the curves that vanish, the longest e-folding lag is "
                 f"{run_label(best['label'])}'s, "
                 f"{steps(shown_fit(best)['efold_lag'])} steps")
        text += (f"; the plain RNN's is {steps(rnn['efold_lag'])} steps."
                 if rnn["regime"] == "vanishing" and best is not runs["RNN"] else ".")
    return text


def lyapunov_paragraph(data: Mapping) -> str:
    """What the Lyapunov spectra say, with their numbers (median over the sequences), and
    whether they rank the cells as the fitted decay rates do."""
    runs = _runs(data)
    cells = ("RNN", "LSTM", "GRU")
    lam = {k: runs[k]["lyapunov"]["median"][0] for k in cells}
    mf = data["theory"]["lyapunov_mean_field"]["lambda_1"]

    def value(v):
        return sig(v, none="−∞")  # null in data.json: an exactly zero Jacobian, −∞

    def timescale(k):
        v = lam[k]
        if v is None:  # −∞: an exactly zero Jacobian
            return f"at once ({k})"
        return f"{steps(-1 / v)} steps ({k})" if v < 0 else f"no finite time ({k})"

    text = (f"The Lyapunov spectra measure the same decay along the trajectory, with no fit: "
            f"the largest exponent $\\lambda_1$ (natural log per step) is the rate of the "
            f"slowest direction, $e^{{\\lambda_1 t}}$ what a generic perturbation of the state "
            f"keeps after $t$ steps. It is {value(lam['RNN'])} for the RNN (mean-field theory: "
            f"$\\frac{{1}}{{2}} \\ln \\chi_1 = {sig(mf, style='latex')}$), "
            f"{value(lam['LSTM'])} for the LSTM and {value(lam['GRU'])} for the GRU, so a "
            f"perturbation along the slowest direction shrinks by a factor $e$ in "
            f"{_and([timescale(k) for k in cells])}.")
    neg = float("-inf")
    by_lyap = sorted(cells, key=lambda k: neg if lam[k] is None else lam[k], reverse=True)
    by_fit = sorted(cells, key=lambda k: shown_fit(runs[k])["per_step_factor"], reverse=True)
    text += (f" From the slowest to forget to the fastest, the exponents rank the cells "
             f"{', '.join(by_lyap)}, "
             + ("as the fitted decay rates do." if by_lyap == by_fit else
                f"while the fitted decay rates rank them {', '.join(by_fit)}."))
    for cell, name, rs in _bias_groups(data):
        by_bias = [r for r in _ordered(rs) if "lyapunov" in r]
        if len(by_bias) < 2:
            continue
        ls = [r["lyapunov"]["median"][0] for r in by_bias]
        ls = [neg if v is None else v for v in ls]
        rising = all(b > a for a, b in zip(ls, ls[1:]))
        text += (f" Raising ${name}$ through {', '.join(given(r['gate_bias']) for r in by_bias)}"
                 f" {'moves' if rising else 'does not move'} the {cell}'s $\\lambda_1$ up at "
                 f"every step ({', '.join(value(v) for v in ls)}).")
    return text


# -- the tables ----------------------------------------------------------------------------
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


def comparable(fit: Mapping) -> bool:
    """Whether a fitted factor is compared with theory: a line that describes the curve
    (R² ≥ 0.99) of a curve that does not turn."""
    from gateflow.analysis._analysis import GOOD_R2

    return (fit["r2"] is not None and fit["r2"] >= GOOD_R2
            and fit["regime"] in ("vanishing", "exploding", "neutral"))


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


def cells_math() -> list[dict[str, object]]:
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


def render_page(context: Mapping[str, object], page: str) -> str:
    """One page (``"md"`` or ``"html"``) of the report from its context."""
    text = _environment(page).get_template("report.j2").render(**context, page=page)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


def render_report(data: Mapping, figures: Iterable[ReportFigure] = ()) -> tuple[str, str]:
    """(index.md, index.html) of the report from its ``data`` (as saved in data.json) and
    its figures (:class:`~gateflow.presentation._figures.ReportFigure`)."""
    context = report_context(data, figures)
    return render_page(context, "md"), render_page(context, "html")

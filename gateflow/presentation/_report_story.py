"""The report's story: the claim it tests (:func:`claim`) and the paragraphs that tell it
with the numbers of its data (:func:`narrative`: the cells at the same initialisation, the
Lyapunov spectra, the gate biases), ending on the verdict (:mod:`._report_verdict`).

Every number, comparison and verdict is computed from the fits and curves of the data,
none is asserted from a default; a curve that never crosses the threshold "stays above
10⁻⁶ over all T lags measured", and nothing is said of the lags beyond.
``tests/test_report_claims.py`` checks every claim against data.json over a grid of
settings. Every formula about a cell is printed from gateflow's own derivation
(:mod:`._report_math`), never typed here.
"""

from __future__ import annotations

from collections.abc import Mapping

from gateflow.presentation._labels import direct_coefficient, direct_label, run_label
from gateflow.presentation._numbers import factor, given, sig, steps
from gateflow.presentation._report_math import _cell, _equation, _jacobian, _sym
from gateflow.presentation._report_verdict import verdict
from gateflow.presentation._report_words import (
    _and,
    _bias_groups,
    _lags,
    _norm,
    _plural,
    _r2,
    _runs,
    _thr,
    comparable,
    fate,
    shown_fit,
    trend,
)

__all__ = ["bias_paragraph", "claim", "lyapunov_paragraph", "narrative"]


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

"""How the report says a fit in words, read from data.json's dicts: its trend, its fate
against the threshold, its e-folding lag and memory horizon, whether it is compared with
theory, and which runs are biased. The story (:mod:`._report_story`), the verdict
(:mod:`._report_verdict`) and the tables (:mod:`._report_context`) all say a fit this one
way. Numbers are formatted by the one policy of :mod:`._numbers`.
"""

from __future__ import annotations

from collections.abc import Mapping

from gateflow.cells._block import Block
from gateflow.presentation._labels import lag_tex, norm_tex
from gateflow.presentation._numbers import factor, given, r2, steps

__all__ = ["comparable", "efold_text", "fate", "horizon", "shown_fit", "trend"]

#: The cells the report compares, by run label.
CELLS = {"RNN": "rnn", "LSTM": "lstm", "GRU": "gru"}


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

def comparable(fit: Mapping) -> bool:
    """Whether a fitted factor is compared with theory: a line that describes the curve
    (R² ≥ 0.99) of a curve that does not turn."""
    from gateflow.analysis._analysis import GOOD_R2

    return (fit["r2"] is not None and fit["r2"] >= GOOD_R2
            and fit["regime"] in ("vanishing", "exploding", "neutral"))

def _bias_groups(data: Mapping) -> list[tuple[str, str, list[Mapping]]]:
    """(cell label, the bias's LaTeX name, its runs) per biased group, e.g.
    ("LSTM", "b_f", [LSTM b_f=0, …, LSTM chrono])."""
    out = []
    for group, cell, name in (("lstm-bias", "LSTM", "b_f"), ("gru-bias", "GRU", "b_z")):
        rs = [r for r in data["runs"] if r["group"] == group]
        if rs:
            out.append((cell, name, rs))
    return out

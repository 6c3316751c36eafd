"""The report's answer, its headline: from the fates of the curves over the lags measured,
which biased runs keep the gradient above the threshold, what the default-bias LSTM and
GRU and the plain RNN do, and which curve keeps the longest e-folding lag
(:func:`verdict`). Computed from the data, never asserted from a default.
"""

from __future__ import annotations

from collections.abc import Mapping

from gateflow.presentation._labels import run_label
from gateflow.presentation._numbers import steps
from gateflow.presentation._report_words import (
    _and,
    _bias_groups,
    _lags,
    _runs,
    _thr,
    shown_fit,
)

__all__ = ["verdict"]


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

"""``gateflow.analyze``: gradient decay of every recurrent module of a live PyTorch model, on
the inputs it actually sees. Orchestration only.

:func:`analyze` captures the model (:func:`gateflow.capture`), then for every module, every
layer and direction (and the whole stack, ``layer="all"``, for a unidirectional stack) runs
:func:`gateflow.decay` on that layer's captured inputs and initial states, and fits the
memory block (``c/c`` for an LSTM, ``h/h`` otherwise; ``c_l1/c_l1`` for a 2-layer LSTM
stack) with the fit the ``decay`` job reports (:func:`~gateflow.analysis._analysis.fit_chain`
of the batch median). A per-step factor above 1 is a gradient that *grows* over the lags
measured: the table says "grows" there, not an e-folding lag.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any

from gateflow.analysis._analysis import ChainFits
from gateflow.jobs._decay import decay
from gateflow.jobs._inputs import tell
from gateflow.numeric._result import ChainResult
from gateflow.presentation import _numbers as num

__all__ = ["COLUMNS", "Analysis", "analyze"]

#: The table's columns, in order (the keys of every row).
COLUMNS = ("module", "kind", "layer", "direction", "cell", "T", "B", "memory block",
           "regime", "per-step factor", "R²", "e-folding lag (steps)",
           "memory horizon (steps)", "note")
_NUMBERS = {"T", "B", "per-step factor", "R²", "e-folding lag (steps)",
            "memory horizon (steps)"}
#: How each measured column is written (:mod:`gateflow.presentation._numbers`, ASCII).
_SHOWN = {"per-step factor": num.factor, "R²": num.r2, "e-folding lag (steps)": num.steps}


@dataclass
class Analysis:
    """What :func:`analyze` found: one table row per (module, layer, direction), the
    :class:`~gateflow.ChainResult` of each (``results[(module, layer, direction)]``) and the
    fits (``fits[...]``, ``ChainFits`` of the memory block
    and its direct product)."""

    table: list[dict[str, Any]]
    results: dict[tuple[str, int | str, str], ChainResult]
    fits: dict[tuple[str, int | str, str], ChainFits]
    captured: tuple = ()
    threshold: float = 1e-6
    norm: str = "frobenius"
    notes: dict[str, str] = field(default_factory=dict)

    def _cells(self) -> list[list[str]]:
        def show(v, row: dict, col: str) -> str:
            if v is None:  # a horizon not reached within T (or an R² that is undefined)
                return "> T" if row["regime"] == "vanishing" else "—"
            if isinstance(v, float):
                return _SHOWN.get(col, num.sig)(v, style="plain")
            return str(v) if v != "" else "''"
        cols = [c for c in COLUMNS if c != "note"]
        return [cols] + [[show(r[c], r, c) for c in cols] for r in self.table]

    def _title(self) -> str:
        return (f"memory of the batch median ({self.norm} norm; memory horizon: first lag "
                f"below {num.given(self.threshold, style='plain')})")

    def __str__(self) -> str:
        rows = self._cells()
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = [self._title()]
        for j, r in enumerate(rows):
            lines.append("  ".join(v.rjust(w) if j and rows[0][i] in _NUMBERS else v.ljust(w)
                                   for i, (v, w) in enumerate(zip(r, widths))).rstrip())
            if j == 0:
                lines.append("  ".join("-" * w for w in widths))
        lines += [f"note: {m!r}: {text}" for m, text in self.notes.items()]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"Analysis({len(self.table)} rows)\n{self}"

    def _repr_html_(self) -> str:
        rows = self._cells()
        head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
        body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in r) + "</tr>"
                       for r in rows[1:])
        notes = "".join(f"<p>note: {html.escape(repr(m))}: {html.escape(t)}</p>"
                        for m, t in self.notes.items())
        return (f"<table><caption>{html.escape(self._title())}</caption><thead><tr>{head}"
                f"</tr></thead><tbody>{body}</tbody></table>{notes}")


def analyze(model, *example_inputs, threshold: float = 1e-6, norms=("frobenius",),
            **kwargs) -> Analysis:
    """Capture ``model(*example_inputs, **kwargs)`` and measure the exact gradient decay of
    every recurrent module, layer and direction on the inputs each one saw.

    Returns an :class:`Analysis`: ``table`` (rows with the module, layer, direction, cell,
    T, B, the memory block, its fitted per-step factor, e-folding lag — ``"grows"`` when the
    factor is above 1 — and memory horizon, ``None`` when the norm stays above
    ``threshold`` for every lag up to T), ``results`` and ``fits``. What gateflow assumed
    that the model did not say (:attr:`Recurrent.assumed`) is printed on stderr first, one
    ``note:`` line each.
    """
    from gateflow.analysis._analysis import fit_chain
    from gateflow.models._capture import capture

    captured = capture(model, *example_inputs, **kwargs)
    said = []  # what gateflow assumed that the model did not say: one line each, once
    for cap in captured:
        assumed = getattr(cap, "assumed", None) or cap.record.assumed
        name = f"{cap.module!r}: " if cap.module and len(captured) > 1 else ""
        said += [f"note: {name}{line}" for line in assumed]
    tell(said)
    table: list[dict[str, Any]] = []
    results: dict[tuple[str, int | str, str], ChainResult] = {}
    fits: dict[tuple[str, int | str, str], ChainFits] = {}
    notes = {}
    for cap in captured:
        if cap.note:
            notes[cap.module] = cap.note
        for layer, direction in cap.keys():
            cell, params, x, s0 = cap.selection(layer, direction)
            where = {"source": "capture", "module": cap.module, "kind": cap.kind,
                     "layer": layer, "direction": direction}
            res = decay(cell, params, x, s0=s0, norms=norms, weights_source=where,
                        inputs_source=where)
            fit = fit_chain(res, blocks=[cell.memory_block], direct=[cell.memory_state],
                            threshold=threshold)
            key = (cap.module, layer, direction)
            results[key] = res
            fits[key] = fit
            f = fit.blocks[cell.memory_block]
            table.append({
                "module": cap.module, "kind": cap.kind, "layer": layer,
                "direction": direction, "cell": cell.name, "T": int(x.shape[0]),
                "B": int(x.shape[1]), "memory block": cell.memory_block,
                "per-step factor": f.factor, "regime": f.regime, "R²": f.r2,
                "e-folding lag (steps)": f.efold if f.is_memory else f.regime,
                "memory horizon (steps)": f.horizon, "note": cap.note})
    norm = next(iter(fits.values())).norm if fits else "frobenius"
    return Analysis(table=table, results=results, fits=fits, captured=captured,
                    threshold=threshold, norm=norm, notes=notes)

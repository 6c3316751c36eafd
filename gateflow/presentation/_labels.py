"""How figures, tables and reports name what they show, from the facts' owners.

* A cell's direct (cell-path-only) product ∏ diag(a_t): the coefficient a_t of
  ∂s_t/∂s_{t−1} along the cell path is derived by the symbolic layer
  (:meth:`Structure.direct <gateflow.Structure.direct>`) and printed with the cell's own
  notation (:mod:`gateflow.cells._notation`): ∏ diag(f_t) for the LSTM's c, ∏ diag(z_t) for
  the GRU, ∏ diag(1 − f_t) for the MGU, ∏ diag(u_t) for the minimalRNN. Never a table of
  gate letters. (Deriving imports SymPy: labels are made only when something is shown.)
* A norm's label comes from the observer registry (:data:`Observer.label`, mathtext with
  ``{J}`` for the block), never from a string literal.
"""

from __future__ import annotations

import re
from functools import cache

from gateflow._validate import choose
from gateflow.cells._library import get_cell
from gateflow.numeric._compile import compile_cell
from gateflow.numeric._observers import OBSERVERS

#: The formats of the direct-path labels: Unicode text, or LaTeX (also mathtext).
FORMATS = ("text", "latex")

__all__ = ["block_tex", "direct_coefficient", "direct_label", "direct_name", "lag_tex",
           "norm_label", "norm_tex", "run_label"]


@cache
def _coefficient(cell_name: str, state: str):
    from gateflow.symbolic._derive import derive

    return derive(get_cell(cell_name)).direct(state)


def _state(cell, state: str | None) -> tuple[str, str]:
    cell = get_cell(cell)
    return cell.name, cell.memory_state if state is None else choose(state, cell.state,
                                                                      "state block")


def direct_coefficient(cell, state: str | None = None, fmt: str = "text") -> str:
    """The derived coefficient of s_{t−1} → s_t through the cell path (default state: the
    cell's :attr:`~gateflow.Cell.memory_state`), printed in ``fmt`` ("text" or "latex")
    with the cell's notation: ``"f_t"``, ``"1 − f_t"``, ``"u_t"``."""
    name, s = _state(cell, state)
    fmt = choose(fmt, FORMATS, "format")
    kept = compile_cell(name).direct_labels  # printed when compiled: no SymPy on a cache hit
    if s in kept:
        return kept[s][fmt]
    from gateflow.cells._notation import printer

    return printer(get_cell(name), fmt).doprint(_coefficient(name, s))


def direct_label(cell, state: str | None = None, fmt: str = "text") -> str:
    """``"∏ diag(f_t)"`` (text) or ``r"\\prod\\,\\mathrm{diag}(f_t)"`` (mathtext/LaTeX)."""
    coef = direct_coefficient(cell, state, fmt)
    return f"∏ diag({coef})" if fmt == "text" else rf"\prod\,\mathrm{{diag}}({coef})"


def direct_name(cell, state: str | None = None) -> str:
    """A data-file name for the direct product: ``"prod_diag_f"``, ``"prod_diag_1_f"``."""
    name, s = _state(cell, state)
    body = re.sub(r"\W+", "_", str(_coefficient(name, s)).replace(" ", "")).strip("_")
    return f"prod_diag_{body}"


def norm_tex(norm: str, block: str) -> str:
    """Mathtext of a norm of a block's Jacobian, e.g. ``\\|\\partial c_T/\\partial
    c_{T-k}\\|_F`` (the observer's label with ``{J}`` filled in)."""
    return OBSERVERS[norm].label.replace("{J}", block)


def lag_tex(block: str | None = None) -> str:
    """LaTeX (and mathtext) of the lag-k Jacobian of ``block`` ("X/Y"), without dollars:
    ``"c/c"`` -> ``\\partial c_T/\\partial c_{T-k}``; the generic ∂s_T/∂s_{T−k} if None."""
    out, inp = block.split("/") if block is not None else ("s", "s")
    return rf"\partial {_at(out, 'T')}/\partial {_at(inp, 'T-k')}"


def _at(name: str, time: str) -> str:
    """``name`` at ``time`` in mathtext: ``c_T``, ``c_{T-k}``; a stack's layer stays in
    the subscript with the time, ``c_{l1,T}`` (not ``c_l1_T``, which sets "1_T" apart)."""
    layered = re.fullmatch(r"(.+)_(l\d+)", name)
    if layered:
        return f"{layered[1]}_{{{layered[2]},{time}}}"
    return f"{name}_{time}" if len(time) == 1 else f"{name}_{{{time}}}"


def norm_label(norm: str, block: str | None = None) -> str:
    """``$\\|∂s_T/∂s_{T−k}\\|_F$`` for figures: the norm of ``block`` ("X/Y") or of the
    generic ∂s_T/∂s_{T−k}."""
    return "$" + norm_tex(norm, lag_tex(block)) + "$"


def block_tex(block: str) -> str:
    """``"c/h"`` -> ``$\\partial c_T/\\partial h_{T-k}$``."""
    return "$" + lag_tex(block) + "$"


def run_label(label: str) -> str:
    """A report run's label as inline math markup, for its text and its figures' legends:
    ``"LSTM b_f=1"`` -> ``"LSTM $b_f = 1$"``."""
    head, _, rest = label.partition(" ")
    if "=" in rest:
        name, _, value = rest.partition("=")
        return f"{head} ${name} = {value}$"
    return label

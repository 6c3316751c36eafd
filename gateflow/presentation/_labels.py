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
from gateflow.cells._block import Block
from gateflow.cells._library import get_cell
from gateflow.cells._record import Cell
from gateflow.numeric._compile import compile_cell
from gateflow.numeric._observers import OBSERVERS

#: The formats of the direct-path labels: Unicode text, or LaTeX (also mathtext).
FORMATS = ("text", "latex")

#: The generic lag-k Jacobian ∂s_T/∂s_{T−k}, for labels about no block in particular.
GENERIC = Block.of("s", "s")

__all__ = ["GENERIC", "block_tex", "direct_coefficient", "direct_label", "direct_name", "lag_tex",
           "norm_label", "norm_tex", "run_label"]


@cache
def _coefficient(cell: Cell, state: str):
    from gateflow.symbolic._derive import derive

    return derive(cell).direct(state)


def _state(cell: Cell | str, state: str | None) -> tuple[Cell, str]:
    """The cell (a name is looked up here: these are public) and the state block, checked."""
    cell = get_cell(cell)
    return cell, cell.memory_state if state is None else choose(state, cell.state,
                                                                "state block")


def direct_coefficient(cell: Cell | str, state: str | None = None, fmt: str = "text") -> str:
    """The derived coefficient of s_{t−1} → s_t through the cell path (default state: the
    cell's :attr:`~gateflow.Cell.memory_state`), printed in ``fmt`` ("text" or "latex")
    with the cell's notation: ``"f_t"``, ``"1 − f_t"``, ``"u_t"``."""
    chosen, s = _state(cell, state)
    fmt = choose(fmt, FORMATS, "format")
    kept = compile_cell(chosen).direct_labels  # printed when compiled: no SymPy on a cache hit
    if s in kept:
        return kept[s][fmt]
    from gateflow.cells._notation import printer

    return printer(chosen, fmt).doprint(_coefficient(chosen, s))


def direct_label(cell: Cell | str, state: str | None = None, fmt: str = "text") -> str:
    """``"∏ diag(f_t)"`` (text) or ``r"\\prod\\,\\mathrm{diag}(f_t)"`` (mathtext/LaTeX)."""
    coef = direct_coefficient(cell, state, fmt)
    return f"∏ diag({coef})" if fmt == "text" else rf"\prod\,\mathrm{{diag}}({coef})"


def direct_name(cell: Cell | str, state: str | None = None) -> str:
    """A data-file name for the direct product: ``"prod_diag_f"``, ``"prod_diag_1_f"``."""
    chosen, s = _state(cell, state)
    body = re.sub(r"\W+", "_", str(_coefficient(chosen, s)).replace(" ", "")).strip("_")
    return f"prod_diag_{body}"


def norm_tex(norm: str, block: str) -> str:
    """Mathtext of a norm of a block's Jacobian, e.g. ``\\|\\partial c_T/\\partial
    c_{T-k}\\|_F`` (the observer's label with ``{J}`` filled in)."""
    return OBSERVERS[norm].label.replace("{J}", block)


def lag_tex(block: Block | None = None) -> str:
    """LaTeX (and mathtext) of the lag-k Jacobian of ``block`` (X/Y), without dollars:
    ``c/c`` -> ``\\partial c_T/\\partial c_{T-k}``; the generic ∂s_T/∂s_{T−k} if None."""
    b = GENERIC if block is None else block
    return rf"\partial {_at(b.out, 'T')}/\partial {_at(b.wrt, 'T-k')}"


def _at(name: str, time: str) -> str:
    """``name`` at ``time`` in mathtext: ``c_T``, ``c_{T-k}``; a stack's layer stays in
    the subscript with the time, ``c_{l1,T}`` (not ``c_l1_T``, which sets "1_T" apart)."""
    layered = re.fullmatch(r"(.+)_(l\d+)", name)
    if layered:
        return f"{layered[1]}_{{{layered[2]},{time}}}"
    return f"{name}_{time}" if len(time) == 1 else f"{name}_{{{time}}}"


def norm_label(norm: str, block: Block | None = None) -> str:
    """``$\\|∂s_T/∂s_{T−k}\\|_F$`` for figures: the norm of ``block`` ("X/Y") or of the
    generic ∂s_T/∂s_{T−k}."""
    return "$" + norm_tex(norm, lag_tex(block)) + "$"


def block_tex(block: Block) -> str:
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

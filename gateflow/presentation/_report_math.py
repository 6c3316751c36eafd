"""The report's formulas, printed from gateflow's own derivation of each cell, never typed
here: the equations and one-step Jacobians of the cells it compares (:func:`cells_math`),
and the pieces the claim quotes. A cell's formula comes from
:func:`gateflow.symbolic._derive.derive` and the cell's notation
(:mod:`gateflow.cells._notation`), as LaTeX the pages typeset (MathML in HTML).
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache

from gateflow.cells._library import read_cell
from gateflow.cells._record import Cell

__all__ = ["aligned", "cells_math", "equations_tex", "jacobian_tex"]


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

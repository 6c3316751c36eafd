"""What ``gateflow derive`` adds for a stack: both meanings of a cross-layer block, defined,
and the same-step Jacobians ∂Z_t/∂y⁽ʲ⁾_t that separate them.

A stack's state blocks (``h_l1/h_l0``) are *carried*: h⁽⁰⁾_{t−1} is perturbed as it is
carried into step t. The output layer j emits at step t, y⁽ʲ⁾_t (= h⁽ʲ⁾_t), is also read by
layer j + 1 at that step; a hook on that output sees both (see
:mod:`gateflow.cells._stack`). The same-step factor is the input Jacobian of the layers
above j with x standing for y⁽ʲ⁾ (:func:`gateflow.cells._stack.above`), derived by the one
engine (:func:`~gateflow.symbolic._derive.derive_input`) and printed with its x written
y_lj.
"""

from __future__ import annotations

import re

from gateflow.cells._block import Block
from gateflow.cells._notation import partial
from gateflow.cells._record import INPUT, Cell
from gateflow.cells._stack import above, emitted, output_blocks
from gateflow.symbolic._derive import Structure, derive_input, linop

__all__ = ["block_forms", "block_lines", "render_outputs"]

#: x at step t as the printers write it (x_t, x_{t}), not inside a longer name.
_X = re.compile(rf"(?<![A-Za-z0-9_\\]){INPUT}_(?=t\b|\{{t\}})")


def _definition(fmt: str) -> list[str]:
    """Both meanings, in words and as one formula."""
    if fmt == "text":
        return [
            "",
            "Layer outputs (what a hook on a layer's output sees)",
            "  y_lj_t is the output layer j emits at step t: layer j carries it (it is h_lj_t) "
            "and layer j+1 reads it at the same step.",
            "  X/h_lj is carried: ∂X_T/∂h_lj_{T−k} with h_lj_{T−k} perturbed as it is carried "
            "into step T−k+1 (what restarting the run from a perturbed state gives).",
            "  X/y_lj is what a hook on y_lj_{T−k} sees, layer j+1's same-step read included "
            "(k = 0..T−1):",
            "    ∂X_T/∂y_lj_{T−k} = ∂X_T/∂h_lj_{T−k} + Σ_Z ∂X_T/∂Z_{T−k} · ∂Z_{T−k}/∂y_lj_{T−k}"
            ",  Z: the state blocks above layer j",
            "  At lag 0 only the same step counts (∂h_lj_T/∂y_lj_T = I); at and below layer j "
            "the two agree for k ≥ 1. Same-step Jacobians ∂Z_t/∂y_lj_t:",
        ]
    formula = (r"\frac{\partial X_T}{\partial y^{(j)}_{T-k}} = "
               r"\frac{\partial X_T}{\partial h^{(j)}_{T-k}} + \sum_{Z \text{ above } j} "
               r"\frac{\partial X_T}{\partial Z_{T-k}}\,"
               r"\frac{\partial Z_{T-k}}{\partial y^{(j)}_{T-k}}")
    words = ("Layer outputs: $y^{(j)}_t = h^{(j)}_t$ is what layer $j$ emits at step $t$, "
             "carried by layer $j$ and read by layer $j+1$ at the same step. "
             "The block `X/h_lj` is carried: $h^{(j)}_{T-k}$ perturbed as it is carried into "
             "step $T-k+1$ (restarting the run from a perturbed state). `X/y_lj` is what a "
             "hook on $y^{(j)}_{T-k}$ sees, $k = 0..T-1$; at lag 0 only the same step "
             "counts, and at and below layer $j$ the two agree for $k \\ge 1$.")
    if fmt == "markdown":
        return ["", "### Layer outputs (what a hook sees)", "", words, "", f"$${formula}$$",
                "", "Same-step Jacobians:", ""]
    return ["% " + words.replace("`", ""), formula.replace(" = ", " &= ", 1) + r" \\"]


def render_outputs(cell: Cell, fmt: str, block: str | None = None) -> list[str]:
    """The layer-output section of :func:`~gateflow.symbolic._printing.render` for a stack
    (``[]`` for any other cell): the definition, then ∂X_t/∂y_lj_t for every X above layer
    j (or for ``block`` = ``"X/y_lj"`` alone: I for X = h_lj, 0 where nothing of step t
    reads y_lj)."""
    if not output_blocks(cell):
        return []
    out = _definition(fmt)
    wanted = output_blocks(cell) if block is None else (Block.parse(block),)
    for b in wanted:
        X, y = b.out, b.wrt
        up = above(cell, y)
        on_x = Block.of(X, INPUT)  # ∂X_t/∂y_t is the input Jacobian of the layers above
        lhs = _X.sub(f"{y}_", partial(on_x, fmt))
        if up is not None and X in up.state:
            forms = [_X.sub(f"{y}_", f) for f in block_forms(derive_input(up), on_x, fmt)]
        elif block is None:
            continue  # print the nonzero same-step Jacobians only
        else:
            forms = ["I" if emitted(cell)[y] == X else "0"]
        out += block_lines(lhs, forms, fmt)
    return out


def block_forms(s: Structure, block: str, fmt: str) -> list[str]:
    """Block ``block`` of ``s`` as printed: its chained form, then its expanded form when
    that differs."""
    chained, expanded = s.block(block, chained=True), s.block(block)
    forms = [linop(chained, s.cell, fmt)]
    if chained != expanded:
        forms.append(linop(expanded, s.cell, fmt))
    return forms


def block_lines(lhs: str, forms: list[str], fmt: str) -> list[str]:
    """``lhs = form = form …``, one line per form in text and LaTeX (aligned at ``=``), one
    line in Markdown."""
    if fmt == "text":
        return [f"  {lhs} = {forms[0]}", *(f"  {' ' * len(lhs)} = {f}" for f in forms[1:])]
    if fmt == "latex":
        return [f"{lhs} &= {f}" + r" \\" if i == 0 else f"&= {f}" + r" \\"
                for i, f in enumerate(forms)]
    return [f"- ${lhs} = " + " = ".join(forms) + "$"]

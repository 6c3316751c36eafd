"""Equations and Jacobians as a reader writes them: Unicode text, LaTeX and Markdown.

Symbols are shown at their time step (f → f_t, c_prev → c_{t−1}), products W v as "W_f x_t",
elementwise products as ⊙, σ' as f_t ⊙ (1 − f_t), relu' as 𝟙[h_t > 0].
"""

from __future__ import annotations

from gateflow._errors import GateflowError, arg
from gateflow._validate import choose
from gateflow.cells._notation import (
    TeXPrinter,
    TextPrinter,
    equation_lines,
    partial,
    tex_param,
    time_name,
)
from gateflow.cells._record import Cell
from gateflow.cells._stack import output_blocks
from gateflow.cells._symbols import INPUT
from gateflow.symbolic._derive import Structure, derive, derive_input
from gateflow.symbolic._layer_outputs import block_forms, block_lines, render_outputs

#: What :func:`render` can write.
FORMATS = ("text", "latex", "markdown")


def render(cell: Cell | str, fmt: str = "text", block: str | None = None, steps: int = 1) -> str:
    """What ``gateflow derive`` prints: the equations, the one-step Jacobians of ``cell`` (a
    Cell or its name) and its input Jacobians ∂X_t/∂x_t, in ``fmt`` (``FORMATS``: text,
    latex, markdown), for ``block`` only if given (``"c/c"``, or ``"h/x"``), and with
    ``steps`` > 1 also ∂s_t/∂s_{t−steps} (at most :attr:`Structure.max_steps`).

    Every argument is checked before any symbolic work; a wrong one is a GateflowError."""
    s = derive(cell)
    cell = s.cell
    choose(fmt, FORMATS, "format")
    blocks: list[str]
    if block is None:
        blocks = [*cell.blocks, *cell.input_blocks]
    else:
        hooks = output_blocks(cell)  # a stack's "X/y_lj": see render_outputs
        choose(block, (*cell.blocks, *cell.input_blocks, *hooks), "block")
        blocks = [] if block in hooks else [block]
    state_blocks = [b for b in blocks if b in cell.blocks]
    if block is not None and not state_blocks and steps != 1:
        raise GateflowError(f"{arg('steps')} expands state blocks (∂X_t/∂Y_{{t−k}}); {block} "
                            f"is an input block: drop {arg('steps')}, or use gateflow decay "
                            f"({arg('blocks')} {block}) for its numbers at every lag")
    steps = s.check_steps(steps)
    inputs = derive_input(cell) if any(b in cell.input_blocks for b in blocks) else None
    out: list[str] = []
    header = f"{cell.name} — {cell.summary}"
    kinks = kink_lines(cell)
    if fmt == "markdown":
        out += [f"## `{cell.name}`: {cell.summary}", "", f"*Reference:* {cell.reference}", ""]
        out += [f"> **Note.** {cell.notes}", ""] if cell.notes else []
        out += [f"> **Almost everywhere.** {kinks}", ""] if kinks else []
        out += ["Layout: rows = outputs, $(\\partial s_t/\\partial s_{t-1})[a,b] = "
                "\\partial s_t[a]/\\partial s_{t-1}[b]$; $\\odot$ is elementwise.", "",
                "### Equations", ""]
        out += [f"- ${line}$" for line in equation_lines(cell, "latex")]
        out += ["", "### Jacobians", ""] if state_blocks else []
    elif fmt == "latex":
        out += [f"% {header}", f"% Reference: {cell.reference}",
                *([f"% Note: {cell.notes}"] if cell.notes else []),
                *([f"% Almost everywhere: {kinks}"] if kinks else []), r"\begin{aligned}"]
        out += [line.replace(" = ", " &= ", 1) + r" \\" for line in equation_lines(cell, "latex")]
        out += [r"\end{aligned}", "", r"\begin{aligned}"]
    else:
        out += [header, f"Reference: {cell.reference}",
                *([f"Note: {cell.notes}"] if cell.notes else []),
                *([f"Almost everywhere: {kinks}"] if kinks else []),
                "Layout: rows = outputs, (∂s_t/∂s_{t−1})[a, b] = ∂s_t[a]/∂s_{t−1}[b]; "
                "⊙ is elementwise.",
                "", "Equations"]
        out += [f"  {line}" for line in equation_lines(cell, "text")]
        out += ["", "Jacobians (one step)"] if state_blocks else []
    for b in blocks:
        src = s
        if b in cell.input_blocks:
            assert inputs is not None  # derived above whenever an input block is asked for
            src = inputs
            if b == blocks[0] or blocks[blocks.index(b) - 1] not in cell.input_blocks:
                out += _input_heading(fmt)
        out += block_lines(partial(b, fmt), block_forms(src, b, fmt), fmt)
        if steps > 1 and src is s:
            out += _render_steps(s, b, steps, fmt)
    if block is None or block in output_blocks(cell):  # a stack: both meanings, defined
        out += render_outputs(cell, fmt, block)
    if fmt == "latex":
        out.append(r"\end{aligned}")
    return "\n".join(out)


def kink_lines(cell: Cell) -> str:
    """What the derivative is at the kinks of the cell's activations (relu, hard_sigmoid,
    …), one sentence; "" when every activation is differentiable. Derivatives there are
    one-sided values, the ones PyTorch's autograd uses: exact almost everywhere."""
    from fractions import Fraction

    import sympy as sp

    from gateflow.cells._activations import ACTIVATIONS, kink_notes

    specs = []
    for _, rhs in cell.system.defs:
        for call in sorted(rhs.atoms(sp.Function), key=sp.default_sort_key):
            name = type(call).__name__
            if name in ACTIVATIONS:
                params = tuple(Fraction(int(p.p), int(p.q)) for p in call.args[1:])
                specs.append((name, params))
    notes = kink_notes(specs)
    if not notes:
        return ""
    return ("at a kink the derivative is the one-sided value PyTorch's autograd uses: "
            + "; ".join(notes) + ".")


def _input_heading(fmt: str) -> list[str]:
    """The heading before the input Jacobians ∂X_t/∂x_t (n × d: rows = outputs too)."""
    if fmt == "text":
        return ["", "Input Jacobians (one step; x_t is read at step t)"]
    if fmt == "markdown":
        return ["", "### Input Jacobians", ""]
    return []


def _render_steps(s: Structure, b: str, k: int, fmt: str) -> list[str]:
    cell = s.cell
    paths = s.steps(b, k)
    def jt(block, j):
        t = "t" if j == 0 else f"t−{j}" if fmt == "text" else f"t-{j}"
        return f"J^{{{block}}}_{{{t}}}" if fmt != "text" else f"J[{block}]_{t}"
    prod = " + ".join(" ".join(jt(bl, j) for j, bl in enumerate(path)) for path in paths) or "0"
    scalar = s.scalar_steps(b, k)
    p = (TextPrinter(_time_display(cell, k, "text"), mul="·") if fmt == "text"
         else TeXPrinter(_time_display(cell, k, "latex"), mul="·"))
    one = p.doprint(scalar)
    lhs = partial(b, fmt, k)
    scalar_cell = ", ".join(f"{x} = 1" for x in cell.size_names)  # "n = 1" (and "p = 1")
    if fmt == "text":
        return [f"  {lhs} = {prod}", f"  {' ' * len(lhs)} = {one}   ({scalar_cell})"]
    if fmt == "latex":
        return [f"{lhs} &= {prod}" + r" \\", f"&= {one} \\quad ({scalar_cell})" + r" \\"]
    return [f"- ${lhs} = {prod}$", f"- ${scalar_cell}$: ${lhs} = {one}$"]


def _time_display(cell: Cell, k: int, fmt: str) -> dict[str, str]:
    names = {}
    sys = cell.system
    for node in [*(s.name for s, _ in sys.defs), *cell.prev, INPUT]:
        for j in range(k + 1):
            tn = time_name(node, j)
            names[tn] = tn.replace("-", "−") if fmt == "text" else tn
    for p in cell.params:
        names[p] = p if fmt == "text" else tex_param(p)
    return names

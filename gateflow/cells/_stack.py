"""New cells from old, as equations: a stack of L layers, and a cell cut down to the state
blocks some outputs depend on. Nothing here is differentiated: the results are ordinary
:class:`~gateflow.cells._record.Cell` records, derived by the one engine like any other.

**Stacks.** ``stack(cell, L)`` renames every symbol of layer l with PyTorch's suffix
(``h`` → ``h_l0``, ``W_f`` → ``W_f_l0``, the gate ``f`` → ``f_l0``) and feeds layer l + 1
the output of layer l *at the same step*: its ``x`` becomes ``h_l<l>``, the new value. The
state is ``(h_l0, c_l0, h_l1, c_l1, …)``, so the blocks of the stack's Jacobian are
``"h_l1/h_l0"`` = ∂h⁽¹⁾_t/∂h⁽⁰⁾_{t−1}, and so on. Layer l + 1's input weights act on
layer l's h, so they are (n, n) (n × p for a projected LSTM): every layer of a PyTorch
stack has the same sizes.

**Dependencies.** A state block X depends on Y when X's update reads ``Y_prev`` or the new
``Y``, directly or through gates (read from the equations, with :mod:`ast`). The closure of
that relation is what ∂X_T/∂Y_{T−k} can be nonzero for: in a stack, layer l never depends
on the layers above it, so ∂h⁽⁰⁾_T/∂h⁽¹⁾_{T−k} = 0 exactly, and the rows of layer 0's
outputs only ever need layer 0. :func:`restrict` keeps just the equations that a set of
blocks needs; the sweep uses it to run each layer's rows on the layers below it only (the
stack's Jacobian is block-triangular), which keeps an L-layer sweep at L(L+1)/2 layer-steps
per step instead of L².
"""

from __future__ import annotations

import ast
from functools import cache

from gateflow._errors import GateflowError
from gateflow._validate import shown, whole
from gateflow.cells._library import GENERATED, get_cell
from gateflow.cells._record import INPUT, Cell

__all__ = ["depends", "output_block", "restrict", "stack", "stack_name"]


def output_block(cell: Cell) -> str:
    """The state block a layer passes up to the next one: ``h`` when the cell has one (every
    PyTorch/Keras/ONNX cell), else its first state block."""
    return "h" if "h" in cell.state else cell.state[0]


def stack_name(cell: Cell, layers: int) -> str:
    return f"{cell.name}-stack{layers}"


def _lhs_rhs(line: str) -> tuple[str, ast.Expression]:
    lhs, _, rhs = line.partition("=")
    return lhs.strip(), ast.parse(rhs.strip(), mode="eval")


def _rename(tree: ast.Expression, names: dict[str, str]) -> str:
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id in names:
            node.id = names[node.id]
    return ast.unparse(tree)


def stack(cell: str | Cell, layers: int) -> Cell:
    """``cell`` stacked ``layers`` deep, as one cell: layer l + 1 reads layer l's output at
    the same step (see the module docstring for the names)."""
    cell = get_cell(cell)
    layers = whole(layers, "layers", 1, 64)
    up = output_block(cell)
    local = (*cell.state, *cell.params, *cell.prev, *(
        _lhs_rhs(line)[0] for line in cell.equations if _lhs_rhs(line)[0] not in cell.state))
    equations: list[str] = []
    for layer in range(layers):
        names = {}
        for s in cell.state:
            names[s] = f"{s}_l{layer}"
            names[f"{s}_prev"] = f"{s}_l{layer}_prev"
        names.update({v: f"{v}_l{layer}" for v in local if v not in names})
        if layer:
            names[INPUT] = f"{up}_l{layer - 1}"
        for line in cell.equations:
            lhs, tree = _lhs_rhs(line)
            equations.append(f"{names[lhs]} = {_rename(tree, names)}")
    mb = cell.memory_bias
    top = f"_l{layers - 1}"
    made = Cell(
        name=stack_name(cell, layers),
        summary=f"{layers}-layer stack of {cell.name} ({cell.summary})",
        reference=cell.reference,
        state=tuple(f"{s}_l{k}" for k in range(layers) for s in cell.state),
        params=tuple(f"{p}_l{k}" for k in range(layers) for p in cell.params),
        equations=tuple(equations),
        memory_bias=None if mb is None else (mb[0] + top, mb[1]),
        chrono_partner=None if cell.chrono_partner is None else cell.chrono_partner + top,
        notes=cell.notes,
        sizes=tuple((f"{s}_l{k}", size) for k in range(layers) for s, size in cell.sizes),
    )
    GENERATED[made.name] = made  # so that results naming it resolve (get_cell)
    return made


@cache
def depends(cell: Cell) -> dict[str, frozenset[str]]:
    """State block X -> every block Y such that ∂X_T/∂Y_{T−k} may be nonzero for some k
    (X itself included when X feeds back on itself), read from the equations."""
    reads: dict[str, set[str]] = {}  # node -> state blocks it reads (prev or new), via gates
    prev = {f"{s}_prev": s for s in cell.state}
    for line in cell.equations:
        lhs, tree = _lhs_rhs(line)
        found: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Name):
                if node.id in prev:
                    found.add(prev[node.id])
                elif node.id in cell.state:
                    found.add(node.id)
                elif node.id in reads:
                    found |= reads[node.id]
        reads[lhs] = found
    closure = {s: set(reads[s]) for s in cell.state}
    changed = True
    while changed:
        changed = False
        for s, deps in closure.items():
            more = set().union(*(closure[d] for d in deps)) - deps
            if more:
                deps |= more
                changed = True
    return {s: frozenset(d | {s} if s in d else d) for s, d in closure.items()}


def needed(cell: Cell, blocks) -> tuple[str, ...]:
    """The state blocks, in state order, that the given blocks depend on (themselves
    included): the smallest self-contained part of the recurrence that computes them."""
    dep = depends(cell)
    want = set(blocks)
    for b in blocks:
        want |= dep[b]
    return tuple(s for s in cell.state if s in want)


def restrict(cell: Cell, blocks) -> Cell:
    """The part of ``cell`` that computes the state ``blocks``: their equations and the
    gates, parameters and blocks those read. ``blocks`` must be closed under
    :func:`depends` (see :func:`needed`); then every Jacobian block between them is the
    same in both cells. The cell itself when nothing can be cut."""
    blocks = tuple(blocks)
    bad = [b for b in blocks if b not in cell.state]
    if bad:
        raise GateflowError(f"cell {cell.name!r} has no state block {shown(bad[0])}")
    if set(needed(cell, blocks)) != set(blocks):
        raise GateflowError(f"blocks {blocks} of cell {cell.name!r} read other blocks "
                            f"({', '.join(needed(cell, blocks))}); restrict to all of them")
    if set(blocks) == set(cell.state):
        return cell
    parsed = [_lhs_rhs(line) for line in cell.equations]
    keep: set[str] = set(blocks)
    for lhs, tree in reversed(parsed):  # every name an equation reads is defined above it
        if lhs in keep:
            keep |= {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    state = tuple(s for s in cell.state if s in blocks)
    return Cell(
        name=f"{cell.name}[{','.join(state)}]",
        summary=f"{cell.summary}, blocks {', '.join(state)}",
        reference=cell.reference,
        state=state,
        params=tuple(p for p in cell.params if p in keep),
        equations=tuple(line for line, (lhs, _) in zip(cell.equations, parsed) if lhs in keep),
        notes=cell.notes,
        sizes=tuple((s, size) for s, size in cell.sizes if s in state),
    )

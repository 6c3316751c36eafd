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
``Y``, directly or through gates (read from the equations, with ``ast``). The closure of
that relation is what ∂X_T/∂Y_{T−k} can be nonzero for: in a stack, layer l never depends
on the layers above it, so ∂h⁽⁰⁾_T/∂h⁽¹⁾_{T−k} = 0 exactly, and the rows of layer 0's
outputs only ever need layer 0. :func:`restrict` keeps just the equations that a set of
blocks needs; the sweep uses it to run each layer's rows on the layers below it only (the
stack's Jacobian is block-triangular), which keeps an L-layer sweep at L(L+1)/2 layer-steps
per step instead of L².

**Two meanings of a cross-layer block.** The stack's state blocks are *carried*:
``"h_l1/h_l0"`` at lag k is ∂h⁽¹⁾_T/∂h⁽⁰⁾_{T−k} with h⁽⁰⁾_{T−k} perturbed as it is carried
into step T−k+1 (what restarting the run from a perturbed state gives); layer 1 already
read h⁽⁰⁾_{T−k} at step T−k and does not see the change. A hook on layer j's output sees
another quantity: y⁽ʲ⁾_t, the output layer j *emits* at step t, is both carried (it is
h⁽ʲ⁾_t) and read by layer j + 1 at the same step t, so

    ∂X_T/∂y⁽ʲ⁾_t = ∂X_T/∂h⁽ʲ⁾_t + Σ_{Z above j} ∂X_T/∂Z_t · ∂Z_t/∂y⁽ʲ⁾_t     (t = T − k)

where ∂X_T/∂Z_t are carried blocks and ∂Z_t/∂y⁽ʲ⁾_t is the same-step Jacobian of the
layers above j with y⁽ʲ⁾_t as their input: the input Jacobian ∂s_t/∂x_t of the cell
:func:`above` writes (layers j+1.. with ``x`` standing for ``h_lj``), derived by the same
engine. These *output-gradient* blocks are named ``"X/y_lj"`` (:func:`output_blocks`),
at lags k = 0..T−1 like the input blocks ``"X/x"`` (y⁽ʲ⁾_T is lag 0: only the same-step
path, plus the identity for X = h_lj). For X in layer j or below (h_l0/y_l0, …) the two
meanings agree at every k ≥ 1; above j they differ.
"""

from __future__ import annotations

import ast
import re
from functools import cache

from gateflow._errors import GateflowError
from gateflow._validate import choose, items_of, shown, whole
from gateflow.cells._block import Block
from gateflow.cells._library import get_cell
from gateflow.cells._record import INPUT, Cell

__all__ = ["EMITTED", "above", "choose_blocks", "depends", "emitted", "input_lag_blocks",
           "output_block", "output_blocks", "restrict", "stack", "stack_name"]

#: The name of what layer j emits (its output, read by layer j + 1 and seen by a hook on
#: the layer's output) in output-gradient blocks: ``"h_l1/y_l0"`` = ∂h⁽¹⁾_T/∂y⁽⁰⁾_{T−k}.
EMITTED = "y"


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
    the same step (see the module docstring for the names). The stack is a value like any
    cell, registered nowhere: what it measures carries it, and a saved result records its
    equations (:meth:`Cell.to_record`)."""
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
    return Cell(
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


_LAYERED = re.compile(r"^(.+)_l(\d+)(_prev)?$")


def _layer_of(name: str) -> int:
    """The layer a stack's name belongs to (``W_f_l1``, ``h_l1_prev``: 1); −1 for none."""
    m = _LAYERED.match(name)
    return -1 if m is None else int(m.group(2))


def _names(tree: ast.Expression) -> set[str]:
    """The names an expression reads (function names left out)."""
    calls = {id(c.func) for c in ast.walk(tree) if isinstance(c, ast.Call)}
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and id(n) not in calls}


@cache
def emitted(cell: Cell) -> dict[str, str]:
    """Layer j's output ``"y_lj"`` -> the state block that carries it (``"h_lj"``), for
    every layer of a stack written by :func:`stack` (or a :func:`restrict` of one to its
    lower layers); ``{}`` for any other cell. Checked on the equations: the layers above
    j read nothing of layers 0..j but that block's new value (and never x)."""
    layers = [_layer_of(s) for s in cell.state]
    if not layers or sorted(set(layers)) != list(range(max(layers) + 1)):
        return {}
    base = [[s[:s.rindex("_l")] for s in cell.state if _layer_of(s) == k]
            for k in range(max(layers) + 1)]
    if any(b != base[0] for b in base):
        return {}
    parsed = [_lhs_rhs(line) for line in cell.equations]
    if any(_layer_of(lhs) < 0 for lhs, _ in parsed):
        return {}
    up = "h" if "h" in base[0] else base[0][0]
    out = {}
    for j in range(len(base)):
        carried = f"{up}_l{j}"
        for lhs, tree in parsed:
            if _layer_of(lhs) > j:
                for name in _names(tree) - {carried}:
                    if _layer_of(name) <= j:  # x, or a name of layers 0..j
                        return {}
        out[f"{EMITTED}_l{j}"] = carried
    return out


def output_blocks(cell: Cell) -> tuple[Block, ...]:
    """Output-gradient blocks ``"X/y_lj"`` = ∂X_T/∂y⁽ʲ⁾_{T−k} (what a hook on layer j's
    output sees; k = 0..T−1), outputs-major in state order; ``()`` for a cell that is not
    a stack. See the module docstring for how they differ from the carried ``"X/h_lj"``."""
    return tuple(Block(s, y) for s in cell.state for y in emitted(cell))


def input_lag_blocks(cell: Cell) -> tuple[Block, ...]:
    """Every block measured at input lags k = 0..T−1 (pulled back through a step onto what
    the step reads): the input blocks ``"X/x"``, then a stack's ``"X/y_lj"``."""
    return (*cell.input_blocks, *output_blocks(cell))


def choose_blocks(cell: Cell, blocks, *, allow_empty: bool = False) -> tuple[Block, ...]:
    """The one reader of a block list: ``blocks`` (names ``"X/Y"`` or :class:`.Block` s, or
    one comma-separated string) as the cell's own :class:`.Block` s, each checked against
    every block the cell can measure (its state blocks, input blocks and, in a stack,
    layer-output blocks), a wrong one named with the valid ones; duplicates dropped, order
    kept; at least one unless ``allow_empty``. Everything below reads ``.out``/``.wrt``."""
    valid: dict[str, Block] = {b: b for b in (*cell.blocks, *input_lag_blocks(cell))}
    names = tuple(valid)
    return tuple(dict.fromkeys(valid[choose(item, names, "block")] for item in
                               items_of(blocks, names, "block", allow_empty=allow_empty)))


@cache
def above(cell: Cell, y: str) -> Cell | None:
    """The layers of the stack ``cell`` above the one that emits ``y`` (``"y_lj"``), as a
    cell whose input ``x`` is y⁽ʲ⁾_t: its input Jacobian ∂s_t/∂x_t is the same-step
    Jacobian ∂(layers j+1..)_t/∂y⁽ʲ⁾_t. None for the top layer (nothing reads it within
    the step)."""
    out = emitted(cell)
    if y not in out:
        raise GateflowError(f"cell {cell.name!r} has no layer output {shown(y)}"
                            + (f"; it has {', '.join(out)}" if out else ": it is not a stack"))
    j = _layer_of(out[y])
    parsed = [_lhs_rhs(line) for line in cell.equations]
    upper = [(lhs, tree) for lhs, tree in parsed if _layer_of(lhs) > j]
    if not upper:
        return None
    state = tuple(s for s in cell.state if _layer_of(s) > j)
    used = set().union(*(_names(tree) for _, tree in upper))
    return Cell(
        name=f"{cell.name}>{y}",
        summary=f"the layers of {cell.name} above layer {j}, reading its output {y} as x",
        reference=cell.reference,
        state=state,
        params=tuple(p for p in cell.params if p in used),
        equations=tuple(f"{lhs} = {_rename(tree, {out[y]: INPUT})}" for lhs, tree in upper),
        notes=cell.notes,
        sizes=tuple((s, size) for s, size in cell.sizes if s in state),
    )

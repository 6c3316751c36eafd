"""Exact one-step Jacobians of any cell, structured, for symbolic hidden size n.

Layout (stated once for all of gateflow): numerator layout, rows = outputs,

    (∂s_t/∂s_{t−1})[a, b] = ∂s_t[a] / ∂s_{t−1}[b].

Every vector in a cell is elementwise in the unit index a except for products W v. So the
derivative of an elementwise node v with respect to a previous state block s is a sum of

    diag(coef) · W · (derivative of the argument of W)        (a product W v), or
    diag(coef)                                                (direct elementwise path),

with ``coef`` an elementwise scalar expression. :func:`derive` computes those coefficients
once, with SymPy, by the chain rule over *scalar* symbols: each product W v is an opaque
symbol ("matvec atom"), gates are eliminated by the total derivative and then written back
in gate values (σ(a) → f, so σ' reads f(1 − f)). The cost does not depend on n.

The result, :class:`Structure`, is the flat table the numeric engine runs on:

    sinks:    new state blocks, and the state-dependent arguments of products (r ⊙ h in gru-cho)
    sources:  previous state blocks, products W v, and new state blocks computed earlier
    coef[(sink, source)] = ∂sink/∂source through elementwise gates only.

The input Jacobian ∂s_t/∂x_t (:func:`derive_input`, blocks ``"X/x"``, n × d) is the same
derivation rooted at x instead of s_{t−1}: its sources are x-dependent products (W_i x, and
minimalRNN's U_z z), its sinks the state blocks and x-dependent arguments (r ⊙ h in gru-cho).

A block Jacobian is rebuilt from it as a :class:`LinOp`, either *chained* (∂h_t/∂h_{t−1}
refers to ∂c_t/∂h_{t−1}, as textbooks write the LSTM) or *expanded* (a sum of products of
diagonal matrices and weights, nested where the cell nests).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cache, cached_property
from itertools import islice, product

import sympy as sp

from gateflow._errors import GateflowError, arg
from gateflow._validate import closest, shown, whole
from gateflow.cells._block import Block
from gateflow.cells._library import get_cell
from gateflow.cells._notation import negative, partial, printer, time_name
from gateflow.cells._record import INPUT, Cell, MatVecAtom

#: Budget of the symbolic k-step expansion (:meth:`Structure.steps`), in expression nodes:
#: every factor of every block path, plus one renamed copy of the blocks per step (see
#: :meth:`Structure.expansion_cost`). SymPy builds and prints a node in about 10–80 µs, so
#: the largest expansion allowed takes under 2 s; :attr:`Structure.max_steps` is the
#: largest k within it (5 for the LSTM, whose paths double with every step; 1052 for rnn).
MAX_EXPANSION_NODES = 20_000

# --------------------------------------------------------------------------------------
# Structured linear operators
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Term:
    """diag(coef), then (optionally) a weight W and the operator ``inner`` after it, or a
    reference ``block`` to another block Jacobian of the same step (chained form)."""

    coef: sp.Expr
    weight: str | None = None
    inner: LinOp | None = None  # None: identity
    block: str | None = None

    @property
    def key(self):
        return (self.weight, self.inner, self.block)


@dataclass(frozen=True)
class LinOp:
    """A sum of :class:`Term` s: a structured n × n matrix for symbolic n."""

    terms: tuple[Term, ...] = ()
    #: (cell, "X/Y") when this is a cell's block: then it prints as ∂X_t/∂Y_{t−1} = …
    context: tuple | None = field(default=None, compare=False, repr=False)

    def __str__(self) -> str:
        if self.context is None:
            return repr(self)
        cell, block = self.context
        return f"{partial(block, 'text')} = {linop(self, cell, 'text')}"

    def _repr_latex_(self) -> str | None:
        if self.context is None:
            return None
        cell, block = self.context
        return f"$\\displaystyle {partial(block, 'latex')} = {linop(self, cell, 'latex')}$"

    @staticmethod
    def identity() -> LinOp:
        return LinOp((Term(sp.Integer(1)),))

    @property
    def is_zero(self) -> bool:
        return not self.terms

    @property
    def is_identity(self) -> bool:
        return self == LinOp.identity()

    def scaled(self, coef: sp.Expr) -> LinOp:
        """diag(coef) · self."""
        return LinOp(tuple(Term(coef * t.coef, t.weight, t.inner, t.block) for t in self.terms))

    def __add__(self, other: LinOp) -> LinOp:
        merged: dict = {}
        for t in (*self.terms, *other.terms):
            merged[t.key] = merged.get(t.key, 0) + t.coef
        return LinOp(tuple(Term(c, *k) for k, c in merged.items() if c != 0))

    def to_matrix(self, n: int, unit, weights, blocks=None, cols: int | None = None
                  ) -> sp.Matrix:
        """Explicit n × ``cols`` SymPy matrix, n the output's size (``cols`` = n by default;
        d for an input block, p for ∂c/∂h of a projected LSTM). ``unit(expr, a)`` gives a
        coefficient's value at unit a, ``weights[name]`` a weight's explicit matrix,
        ``blocks[name]`` a block's matrix."""
        out = sp.zeros(n, n if cols is None else cols)
        for t in self.terms:
            diag = sp.diag(*[unit(t.coef, a) for a in range(n)])
            if t.block is not None:
                rest = blocks[t.block]
            elif t.weight is not None:
                rest = weights[t.weight]
                if t.inner is not None:  # W's columns: the size of its argument
                    rest = rest * t.inner.to_matrix(rest.shape[1], unit, weights, blocks, cols)
            else:
                rest = sp.eye(n)
            out += diag * rest
        return out

    def scalar(self, weights=None, blocks=None) -> sp.Expr:
        """The n = 1 value: diag(c) → c, W → the scalar symbol W."""
        total = sp.Integer(0)
        for t in self.terms:
            rest = sp.Integer(1)
            if t.block is not None:
                rest = blocks[t.block]
            elif t.weight is not None:
                rest = (weights or {}).get(t.weight, sp.Symbol(t.weight))
                if t.inner is not None:
                    rest = rest * t.inner.scalar(weights, blocks)
            total += t.coef * rest
        return total


# --------------------------------------------------------------------------------------
# The derivation
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Structure:
    """The exact one-step Jacobian of ``cell``, as flat elementwise coefficients plus wiring."""

    cell: Cell
    sinks: tuple[str, ...]  # in evaluation order
    edges: dict[str, tuple[tuple[str, sp.Expr], ...]]  # sink -> ((source, coef), ...)
    products: tuple[MatVecAtom, ...]  # products W v that depend on ``wrt`` (sources)
    #: What is differentiated against: the previous state blocks (``h_prev``, ``c_prev``:
    #: the state Jacobian ∂s_t/∂s_{t−1}), or the input ``("x",)`` (∂s_t/∂x_t, see
    #: :func:`~gateflow.derive_input`).
    wrt: tuple[str, ...] = ()

    @cached_property
    def product_by_name(self) -> dict[str, MatVecAtom]:
        return {m.symbol.name: m for m in self.products}

    def coefficients(self) -> list[tuple[str, str, sp.Expr]]:
        """Every nonzero (sink, source, coef), in a fixed order (the evaluators' layout)."""
        return [(v, src, c) for v in self.sinks for src, c in self.edges[v]]

    def direct(self, s: str) -> sp.Expr:
        """Coefficient of the direct elementwise path s_{t−1} → s_t (f for the LSTM's c, z for
        the GRU's h, 0 for the Elman RNN): its product over time is the gradient through
        the state alone, the LSTM's constant-error carousel ∏ diag(f)."""
        return dict(self.edges.get(s, ())).get(f"{s}_prev", sp.Integer(0))

    @property
    def is_input(self) -> bool:
        """True for the input Jacobian ∂s_t/∂x_t (:func:`~gateflow.derive_input`)."""
        return self.wrt == (INPUT,)

    @property
    def blocks(self) -> tuple[str, ...]:
        """The blocks this structure holds: ``"X/Y"`` (∂X_t/∂Y_{t−1}) for the state
        Jacobian, ``"X/x"`` (∂X_t/∂x_t) for the input Jacobian."""
        return self.cell.input_blocks if self.is_input else self.cell.blocks

    def _check_block(self, block: str) -> tuple[str, str]:
        """``"X/Y"`` -> ``("X", "Y")`` for a block of this structure; a GateflowError
        otherwise."""
        if not isinstance(block, str) or block not in self.blocks:
            raise GateflowError(f"cell {self.cell.name!r} has no block {shown(block)}"
                                f"{closest(block, self.blocks)}")
        found = Block.parse(block)  # a block of this structure: its parts, parsed once
        return found.out, found.wrt

    def block(self, block: str, *, chained: bool = False) -> LinOp:
        """∂X_t/∂Y_{t−1} for ``block = "X/Y"`` (∂X_t/∂x_t for ``"X/x"`` of the input
        Jacobian) as a structured operator: n × n, or n × d on the input."""
        out, inp = self._check_block(block)
        wrt = inp if inp == INPUT else f"{inp}_prev"
        return replace(self._jac(out, wrt, chained), context=(self.cell, block))

    def _repr_latex_(self) -> str:
        rows = [f"{partial(b, 'latex')} &= {linop(self.block(b, chained=True), self.cell, 'latex')}"
                for b in self.blocks]
        return "$\\begin{aligned} " + r" \\ ".join(rows) + " \\end{aligned}$"

    @cached_property
    def _memo(self) -> dict:
        return {}

    def _jac(self, node: str, prev: str, chained: bool) -> LinOp:
        key = (node, prev, chained)
        if key not in self._memo:
            self._memo[key] = self._jac_uncached(node, prev, chained)
        return self._memo[key]

    def _jac_uncached(self, node: str, prev: str, chained: bool) -> LinOp:
        if node in self.cell.prev or node == INPUT:
            return LinOp.identity() if node == prev else LinOp()
        if node not in self.edges:  # a node that does not depend on the state
            return LinOp()
        total = LinOp()
        for src, coef in self.edges[node]:
            if src in self.wrt:
                part = LinOp.identity() if src == prev else LinOp()
                total = total + part.scaled(coef)
            elif src in self.product_by_name:
                atom = self.product_by_name[src]
                inner = self._jac(atom.arg, prev, chained)
                if not inner.is_zero:
                    total = total + LinOp((Term(coef, atom.weight,
                                                None if inner.is_identity else inner),))
            else:  # a state block computed earlier in the same step
                sub = self._jac(src, prev, chained)
                if sub.is_zero:
                    continue
                if chained:
                    name = prev if prev == INPUT else prev.removesuffix("_prev")
                    total = total + LinOp((Term(coef, block=f"{src}/{name}"),))
                else:
                    total = total + sub.scaled(coef)
        return total

    # -- k steps -----------------------------------------------------------------------
    def steps(self, block: str, k: int) -> list[tuple[str, ...]]:
        """∂X_t/∂Y_{t−k} = [J_t J_{t−1} ⋯ J_{t−k+1}]_{X,Y} as the list of nonzero block paths
        (X/S_1 at t, S_1/S_2 at t−1, …, S_{k−1}/Y at t−k+1). ``k`` is at most
        :attr:`max_steps` (checked by :meth:`check_steps`)."""
        out, inp = self._check_block(block)
        k = self.check_steps(k)
        nonzero = {b for b in self.cell.blocks if self._block_sizes[b]}
        paths = []
        for mid in product(self.cell.state, repeat=k - 1):
            chain = (out, *mid, inp)
            blocks = tuple(f"{a}/{b}" for a, b in zip(chain, chain[1:]))
            if all(b in nonzero for b in blocks):
                paths.append(blocks)
        return paths

    def check_steps(self, k) -> int:
        """``k`` as an int in 1 … :attr:`max_steps`; a one-line :class:`GateflowError` otherwise
        (before any symbolic work)."""
        k = whole(k, arg("steps"))
        self._state_only(arg("steps"))
        if k > self.max_steps:
            raise GateflowError(
                f"{arg('steps')} {k} is too many to expand symbolically (limit {self.max_steps} "
                f"for {self.cell.name}: at most {MAX_EXPANSION_NODES} expression nodes, a few "
                "seconds); use `gateflow decay` for numbers at long lags")
        return k

    def _state_only(self, what: str) -> None:
        """k-step expansions are of the state Jacobian; refuse them on the input one."""
        if self.is_input:
            raise GateflowError(f"{what} expands the state Jacobian ∂s_t/∂s_{{t−k}}; an input "
                                "block at lag k is ∂X_t/∂x_{t−k} = ∂X_t/∂s_{t−k} "
                                f"∂s_{{t−k}}/∂x_{{t−k}}: use gateflow decay ({arg('blocks')} X/x) "
                                "for its numbers")

    @cached_property
    def max_steps(self) -> int:
        """The largest k whose expansion fits ``MAX_EXPANSION_NODES`` (at least 1)."""
        self._state_only("max_steps")
        for k, cost in enumerate(self._expansion_costs(), start=1):
            if cost > MAX_EXPANSION_NODES:
                return max(1, k - 1)
        raise AssertionError("unreachable: the cost grows with k")

    def expansion_cost(self, k: int) -> int:
        """Expression nodes the k-step expansion of every block builds and prints: each factor
        of each nonzero block path, plus one for its ``J[X/Y]`` label, plus the blocks renamed
        once per step. Time is about proportional to it (see ``MAX_EXPANSION_NODES``).
        Counted for k up to ``max_steps + 1``, the first k refused (it grows with k)."""
        k = whole(k, "k", 1, self.max_steps + 1)
        return next(islice(self._expansion_costs(), k - 1, None))

    def _expansion_costs(self):
        """Yield :meth:`expansion_cost` for k = 1, 2, … by dynamic programming over block
        paths (|state|³ integer operations per k; nothing is enumerated)."""
        S = self.cell.state
        size = {(a, b): self._block_sizes[f"{a}/{b}"] for a in S for b in S}
        per_step = sum(size.values())
        count = {ab: int(v > 0) for ab, v in size.items()}  # nonzero paths a → b
        nodes = {ab: v + count[ab] for ab, v in size.items()}  # their factors' nodes + labels
        k = 1
        while True:
            yield sum(nodes.values()) + k * per_step
            count, nodes = (
                {(a, b): sum(count[a, m] for m in S if size[m, b]) for a in S for b in S},
                {(a, b): sum(nodes[a, m] + count[a, m] * (size[m, b] + 1)
                             for m in S if size[m, b]) for a in S for b in S})
            k += 1

    def scalar_steps(self, block: str, k: int) -> sp.Expr:
        """For n = 1: ∂X_t/∂Y_{t−k} as one explicit scalar expression in time-indexed gates."""
        paths = self.steps(block, k)
        shifted = [self._scalar_blocks(j) for j in range(k)]
        # One n-ary Mul per path and one Add over them: SymPy flattens each once (k
        # successive `*=` would re-sort a growing product, quadratic in k).
        return sp.Add(*(sp.Mul(*(shifted[j][b] for j, b in enumerate(path))) for path in paths))

    @cached_property
    def _scalar_blocks_now(self) -> dict[str, sp.Expr]:
        """Each block at n = 1, products W v written as W·v, in untimed names."""
        sys = self.cell.system
        sub = {}
        for m in sys.matvecs:
            arg = sys.rhs.get(m.arg) if m.arg in sys.composites else sp.Symbol(m.arg)
            sub[m.symbol] = sp.Symbol(m.weight) * arg
        out: dict[str, sp.Expr] = {}
        for b in self.cell.blocks:
            expr = self.block(b).scalar()
            for _ in range(3):  # composite arguments may contain products themselves
                expr = expr.xreplace(sub)
            out[b] = expr
        return out

    @cached_property
    def _block_sizes(self) -> dict[str, int]:
        """Expression nodes of each block at n = 1 (0 for a zero block)."""
        return {b: 0 if self.block(b).is_zero else sum(1 for _ in sp.preorder_traversal(e))
                for b, e in self._scalar_blocks_now.items()}

    def _scalar_blocks(self, j: int) -> dict[str, sp.Expr]:
        """Each block at n = 1 and time t − j, products W v written as W·v."""
        sys = self.cell.system
        names = [s.name for s, _ in sys.defs] + list(self.cell.prev) + [INPUT]
        rename = {sp.Symbol(v): sp.Symbol(time_name(v, j)) for v in names}
        return {b: e.xreplace(rename) for b, e in self._scalar_blocks_now.items()}


def diagonal_per_unit(structure: Structure) -> bool:
    """Is the state Jacobian ∂s_t/∂s_{t−1} of ``structure`` *diagonal per unit*?

    True when every state block ∂X_t/∂Y_{t−1} (expanded) is a sum of pure ``diag(coef)``
    terms, with no weight matrix anywhere (no product W v depends on the state), and every
    state block has the same size n. Every coefficient is elementwise in the unit index
    (the engine's invariant), so unit u of s_t then depends on unit u of s_{t−1} alone: with
    S state blocks, J_t is, per unit u, the S × S matrix J_t[u][X, Y] = coef_{X/Y}[u] (a
    scalar for one block: IndRNN, RG-LRU, the selective scan; LRU's realified 2 × 2
    rotation-scaling [[Re λ, −Im λ], [Im λ, Re λ]]; SRU's (h, c) pair), and products of
    such Jacobians stay per unit. The numeric layer then runs the all-lag sweep and the
    Lyapunov spectrum elementwise (:mod:`gateflow.numeric._diagonal`): O(T·B·n·S³)
    instead of O(T·B·N³).

    Decided from the derivation alone, never from a cell's name: a cell declared anywhere
    (or none) that derives this way qualifies. False for the input Jacobian (n × d)."""
    if structure.is_input:
        return False
    cell = structure.cell
    if structure.products or len(set(cell.block_size.values())) != 1:
        return False
    return all(t.weight is None and t.block is None and t.inner is None
               for b in cell.blocks for t in structure.block(b).terms)


def derive(cell: str | Cell) -> Structure:
    """Derive (once per process and cell) the structured one-step Jacobian of ``cell``,
    ∂s_t/∂s_{t−1}."""
    cell = get_cell(cell)
    return _derive(cell, cell.prev)


def derive_input(cell: str | Cell) -> Structure:
    """Derive (once per process and cell) the structured input Jacobian of ``cell``,
    ∂s_t/∂x_t (blocks ``"X/x"``, each n × d): the same engine with x as the root, so a
    product W v is a source when v depends on x (``W_i x``; minimalRNN's ``U_z z``)."""
    return _derive(get_cell(cell), (INPUT,))


@cache
def _derive(cell: Cell, wrt: tuple[str, ...]) -> Structure:
    sys = cell.system
    rhs = sys.rhs
    atoms = sys.matvec_by_symbol

    # Which nodes and products depend on what is differentiated against?
    dep: set[str] = set(wrt)
    for name in sys.order:
        if name in atoms:
            if atoms[name].arg in dep:
                dep.add(name)
        elif any(s.name in dep for s in rhs[name].free_symbols):
            dep.add(name)
    products = tuple(m for m in sys.matvecs if m.symbol.name in dep)

    # Gate values replace their defining expressions: sigmoid(a_f) -> f.
    back = {e: s for s, e in sys.defs if isinstance(e, sp.Function)}

    def is_source(name: str, sink: str) -> bool:
        if name in wrt or name in atoms:
            return True
        return name in cell.state and name != sink  # an earlier state block: chained

    @cache
    def total(sink: str, node: str, src: str) -> sp.Expr:
        """∂node/∂src through elementwise intermediates (stopping at sources)."""
        if node == src:
            return sp.Integer(1)
        if node not in dep or (node != sink and is_source(node, sink)):
            return sp.Integer(0)
        expr = rhs[node]
        acc = sp.Integer(0)
        for a in sorted(expr.free_symbols, key=sp.default_sort_key):
            if a.name in dep:
                d = total(sink, a.name, src)
                if d != 0:
                    acc += sp.diff(expr, a) * d
        return acc

    arg_sinks = {m.arg for m in products if m.arg not in wrt}
    sinks = tuple(n for n in sys.order
                  if n in cell.state or n in arg_sinks)
    candidates = [*wrt, *(m.symbol.name for m in products), *cell.state]
    edges = {}
    for v in sinks:
        row = []
        for src in candidates:
            if src == v or not is_source(src, v):
                continue  # (a later state block yields a zero coefficient below)
            coef = total(v, v, src).xreplace(back)
            if coef != 0:
                row.append((src, coef))
        edges[v] = tuple(row)
    return Structure(cell=cell, sinks=sinks, edges=edges, products=products, wrt=wrt)


def linop(op: LinOp, cell: Cell, fmt: str) -> str:
    """A structured operator: ``diag(f_t) + diag(…) U_f (diag(r_t) + …)``."""
    if op.is_zero:
        return "0"
    p = printer(cell, fmt)
    parts = []
    for t in op.terms:
        neg = negative(t.coef)
        coef = -t.coef if neg else t.coef
        if coef == 1 and (t.weight or t.block):
            head = ""
        elif fmt == "text":
            head = f"diag({p.doprint(coef)})"
        else:
            head = rf"\operatorname{{diag}}\left({p.doprint(coef)}\right)"
        if t.block is not None:
            tail = partial(t.block, fmt)
        elif t.weight is not None:
            tail = p.names[t.weight]
            if t.inner is not None:
                inner = linop(t.inner, cell, fmt)
                tail += f" [{inner}]" if fmt == "text" else rf" \left[{inner}\right]"
        else:
            tail = ""
        body = " ".join(x for x in (head, tail) if x) or "1"
        if fmt == "text" and not head and not tail:
            body = "I"
        sign = (" − " if fmt == "text" else " - ") if neg else " + "
        parts.append((sign, body))
    first_sign, first = parts[0]
    text = ("−" if fmt == "text" else "-") + first if first_sign.strip() in "−-" else first
    return text + "".join(s + b for s, b in parts[1:])

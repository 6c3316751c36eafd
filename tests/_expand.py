"""An independent route to a cell's Jacobians: explicit per-unit expansion at small n.

Every parameter becomes a SymPy matrix (or vector) of scalar symbols, x becomes d symbols,
every previous state block n symbols. The cell's parsed equations (``cell.system.defs``) are
evaluated unit by unit, with every product symbol ``W__v`` replaced by the explicit dot
product ``sum_b W[a, b] v[b]``. The new state is then an explicit SymPy expression of all
those scalars, and ``Matrix.jacobian`` gives the exact Jacobian by brute force.

This module deliberately does not import :mod:`gateflow.symbolic._derive`: it is the oracle the
structured derivation is checked against.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import sympy as sp

from gateflow.cells._record import INPUT, Cell


@dataclass
class Expansion:
    """Explicit per-unit values of one step of ``cell`` at hidden size n, input size d."""

    cell: Cell
    n: int
    d: int
    x: list[sp.Expr]  # d entries
    prev: dict[str, list[sp.Expr]]  # state block -> n entries of s_{t-1}
    weights: dict[str, sp.Matrix]  # matrix parameter -> (n, d) or (n, n)
    vectors: dict[str, list[sp.Symbol]]  # vector parameter -> n symbols
    values: dict[str, list[sp.Expr]] = field(default_factory=dict)  # name -> n entries

    @property
    def new(self) -> dict[str, list[sp.Expr]]:
        """State block -> its n explicit new values s_t."""
        return {s: self.values[s] for s in self.cell.state}

    def new_vector(self, s: str) -> sp.Matrix:
        return sp.Matrix(self.values[s])

    def prev_vector(self, s: str) -> sp.Matrix:
        return sp.Matrix(self.prev[s])

    def jacobian(self, block: str) -> sp.Matrix:
        """Brute-force ∂X_t/∂Y_{t−1} for ``block = "X/Y"`` (rows = outputs), or ∂X_t/∂x_t
        (n × d) for ``"X/x"``."""
        out, inp = block.split("/")
        wrt = sp.Matrix(self.x) if inp == INPUT else self.prev_vector(inp)
        return self.new_vector(out).jacobian(wrt)

    def unit(self, expr: sp.Expr, a: int) -> sp.Expr:
        """``expr`` (an elementwise expression in node, product, parameter and previous-state
        names) at unit a, every symbol replaced by its explicit value there."""
        expr = sp.sympify(expr)
        sub = {}
        for s in expr.free_symbols:
            if s.name not in self.values:
                raise KeyError(f"no per-unit value for symbol {s.name!r}")
            sub[s] = self.values[s.name][a]
        return expr.xreplace(sub)

    def symbols(self) -> list[sp.Symbol]:
        """Every free scalar: weights, vectors, x, previous states (a fixed order)."""
        out: list[sp.Symbol] = []
        for w in sorted(self.weights):
            out += list(self.weights[w])
        for v in sorted(self.vectors):
            out += self.vectors[v]
        out += list(self.x)
        for s in self.cell.state:
            out += list(self.prev[s])
        return out


def sizes_of(cell: Cell, n: int, d: int) -> dict[str, int]:
    """Every size of ``cell`` by name: n, d, and n + 1 for any other (the projected LSTM's
    p), so that mixing two sizes up cannot go unnoticed; at n = 1 every size is 1 (the
    scalar cell of ``Structure.scalar_steps``)."""
    return {"n": n, "d": d, **{x: 1 if n == 1 else n + 1 for x in cell.size_names if x != "n"}}


def weight_symbols(cell: Cell, n: int, d: int) -> tuple[dict, dict]:
    """Fully symbolic parameters: matrices ``W[a,b]``, vectors ``b[a]``, shaped by the
    cell's declared dimensions (:attr:`Cell.param_dims`)."""
    sys = cell.system
    size = sizes_of(cell, n, d)
    weights, vectors = {}, {}
    for p in cell.params:
        dims = [size[x] for x in cell.param_dims[p]]
        if p in sys.matrices:
            weights[p] = sp.Matrix(*dims, lambda a, b, p=p: sp.Symbol(f"{p}[{a},{b}]"))
        else:
            vectors[p] = [sp.Symbol(f"{p}[{a}]") for a in range(dims[0])]
    return weights, vectors


def expand(cell: Cell, n: int, d: int = 2, *, weights=None, vectors=None, x=None, prev=None,
           tag: str = "") -> Expansion:
    """Explicit one-step expansion. Pass ``weights``/``vectors`` to share parameters between
    steps, ``x``/``prev`` to chain steps; ``tag`` distinguishes fresh x/prev symbols."""
    sys = cell.system
    if weights is None or vectors is None:
        weights, vectors = weight_symbols(cell, n, d)
    if x is None:
        x = [sp.Symbol(f"x{tag}[{k}]") for k in range(d)]
    size = sizes_of(cell, n, d)
    if prev is None:
        prev = {s: [sp.Symbol(f"{s}_prev{tag}[{a}]") for a in range(size[cell.block_size[s]])]
                for s in cell.state}
    e = Expansion(cell, n, d, list(x), {s: list(v) for s, v in prev.items()},
                  weights, vectors)
    values = e.values
    for s in cell.state:
        values[f"{s}_prev"] = e.prev[s]
    values.update(vectors)
    products = {m.symbol.name: m for m in sys.matvecs}

    def arg_vector(arg: str) -> sp.Matrix:
        if arg == INPUT:
            return sp.Matrix(e.x)
        if arg not in values:
            raise AssertionError(f"product argument {arg!r} used before it is defined")
        return sp.Matrix(values[arg])

    for node, rhs in sys.defs:
        for s in rhs.free_symbols:
            if s.name in products and s.name not in values:
                m = products[s.name]
                W = weights[m.weight]
                v = arg_vector(m.arg)
                assert W.shape[1] == v.shape[0], (m, W.shape, v.shape)
                values[s.name] = list(W * v)
            elif s.name == INPUT:
                raise AssertionError("x used elementwise: not expandable")
        if node.name in cell.node_sizes:
            units = size[cell.node_sizes[node.name]]
        else:  # a composite product argument: the size of its elementwise operands
            units = min(len(values[s.name]) for s in rhs.free_symbols if s.name in values)
        values[node.name] = [e.unit(rhs, a) for a in range(units)]
    return e


# --------------------------------------------------------------------------------------
# Numeric helpers
# --------------------------------------------------------------------------------------


def np_sigmoid(a):
    """Overflow-free logistic function."""
    a = np.asarray(a, dtype=float)
    e = np.exp(-np.abs(a))
    return np.where(a >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


NUMPY_MODULES = [{"sigmoid": np_sigmoid, "relu": lambda a: np.maximum(a, 0.0)}, "numpy"]


def lambdify_nodes(e: Expansion, names) -> callable:
    """``f(*e.symbols()) -> {name: np.array(n)}`` for the given node names."""
    names = list(names)
    flat = [v for nm in names for v in e.values[nm]]
    fn = sp.lambdify(e.symbols(), flat, modules=NUMPY_MODULES)

    ends = np.cumsum([0, *(len(e.values[nm]) for nm in names)])  # nodes of any size

    def call(*args):
        out = np.asarray(fn(*args), dtype=float)
        return {nm: out[ends[k]:ends[k + 1]] for k, nm in enumerate(names)}

    return call

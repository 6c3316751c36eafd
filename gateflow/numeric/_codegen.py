"""Code generation: a cell's derived expressions, printed by SymPy, as a plan of plain data.

From a cell's equations and its :class:`~gateflow.symbolic._derive.Structure`,
:func:`generate` writes, once per (cell, backend):

* a forward *plan*: each group of products W v that share their vector v becomes one GEMM
  against the stacked weights; each node (gate, state, composite) one function;
* one function (``cse=True``) that returns every Jacobian coefficient of the step as a flat
  list, in the order of ``Structure.coefficients()`` (a flat list, because SymPy returns
  ragged arrays for matrices with constant entries: sympy#27632, #19259);
* a reverse *plan*: the same wiring, walked backwards (see :mod:`gateflow.numeric._chain`);
* whether the state Jacobian is diagonal per unit
  (:func:`~gateflow.symbolic._derive.diagonal_per_unit`), which the loader checks against
  the wiring.

Each function is printed by :func:`_source` with SymPy's public code printers and
``sympy.cse``, in the form ``lambdify`` would write it, then kept as data: the expression
DAG of that source (:func:`gateflow.numeric._plan.function_data`), over a fixed vocabulary.
The callables are built from the data (:func:`gateflow.numeric._plan.build`), fresh or
cached alike. This is the only module of the numeric layer that imports SymPy (lazily).
"""

from __future__ import annotations

from gateflow._errors import GateflowError
from gateflow.cells._record import Cell
from gateflow.numeric._backend import get_backend
from gateflow.numeric._plan import FORMAT, LABEL_FORMATS, OWN_ARITY, PlanError, function_data

__all__ = ["generate"]


def _source(args: list[str], expr, backend: str, cse: bool = False) -> str:
    """Python source of ``def _lambdifygenerated(args): ... return expr``, written with
    SymPy's public printers only (what ``lambdify`` generates): ``expr`` is one expression
    or a list of them; with ``cse``, common subexpressions become ``x0 = ...`` assignments
    first (``sympy.cse``).

    The printer is NumPy's (or CuPy's) with lambdify's settings: unqualified array
    functions (``tanh(x)``) and gateflow's functions (:data:`~gateflow.numeric._plan.
    OWN_ARITY`) printed by name."""
    import sympy as sp
    import sympy.printing.numpy as printers

    if not all(isinstance(a, str) and a.isidentifier() for a in args) \
            or len(set(args)) != len(args):
        raise ValueError(f"cannot generate code for arguments {args!r}")
    printer_class = getattr(printers, get_backend(backend).printer)
    printer = printer_class({"fully_qualified_modules": False, "inline": True,
                             "allow_unknown_functions": True,
                             "user_functions": {f: f for f in OWN_ARITY}})
    body: list[str] = []
    if cse:
        assignments, reduced = sp.cse(expr, list=False)
        body += [f"{printer.doprint(v)} = {printer.doprint(e)}" for v, e in assignments]
        expr = reduced
    if isinstance(expr, list):
        out = "[" + ", ".join(printer.doprint(e) for e in expr) + "]"
    else:
        out = printer.doprint(expr)
    if "\n" in out:
        out = f"({out})"
    body.append(f"return {out}")
    return "\n".join([f"def _lambdifygenerated({', '.join(args)}):",
                      *("    " + line for line in body)]) + "\n"


def _complements(sys) -> tuple[dict, list]:
    """Accurate complements of saturating gates, for the numerics only.

    In floating point σ(50) is exactly 1, so 1 − f is 0 and f(1 − f) would report a
    saturated-but-alive path as exactly zero (the true value is e^{−50}). Each node
    v = F(a) whose activation has complements (``complements`` in
    :mod:`gateflow.cells._functions`: v = σ(a) gets v̄ = σ(−a) for 1 − v, tanh gets
    sech²(a) for 1 − v², elu's v + α is α e^{min(a, 0)}, …) gets one forward node per
    complement, computed from a, and :func:`_accurate` writes every occurrence of the
    expression (up to a numeric factor) in the equations and coefficients as that node.
    Returns the table for :func:`_accurate` and the extra forward nodes (name,
    pre-activation node, function, parameters, complement nodes)."""
    import sympy as sp

    from gateflow.cells._functions import complements

    table: dict = {}
    extra: list = []
    for node, rhs in sys.defs:
        if not isinstance(rhs, sp.Function):
            continue
        pre = sp.Symbol(f"{node.name}__pre")
        params = rhs.args[1:]
        comps = []
        for k, (pattern, value) in enumerate(complements(rhs.func, node, pre, *params)):
            sym = sp.Symbol(f"{node.name}__bar" + (str(k + 1) if k else ""))
            _enter(table, pattern, sym)
            comps.append((sym, value))
        if comps:
            extra.append((node.name, pre, rhs.func, params, comps))
    return table, extra


def _enter(table: dict, pattern, replacement) -> None:
    """Record ``pattern`` (a sum) -> ``replacement`` by its primitive part: a sum equal to
    c·pattern for a number c is then found whatever SymPy distributed c into."""
    content, prim = pattern.primitive()
    table[prim] = replacement / content


def _accurate(expr, table):
    """``expr`` with every sum that is a numeric multiple of a complement's expression
    (:func:`_complements`; and, for an activation called inside an equation, such as the
    LSTM's tanh(c), the same expressions in the call's value) replaced by its accurate
    form."""
    import sympy as sp

    from gateflow.cells._functions import complements

    table = dict(table)
    for call in expr.atoms(sp.Function):
        for pattern, value in complements(call.func, call, *call.args):
            _enter(table, pattern, value)
    if not table:
        return expr

    def match(e) -> bool:
        if not e.is_Add:
            return False
        prim = e.primitive()[1]
        return prim in table or -prim in table

    def fix(e):
        content, prim = e.primitive()
        return content * table[prim] if prim in table else -content * table[-prim]

    return expr.replace(match, fix)


def generate(cell: Cell, backend: str, inputs: bool = False) -> dict:
    """Derive ``cell`` and generate its plan for ``backend``: plain data (JSON), every
    function an expression DAG (:mod:`gateflow.numeric._plan`). With ``inputs``, the plan
    of the input Jacobian ∂s_t/∂x_t (same forward pass, its own coefficients and reverse
    plan). An expression outside the plan vocabulary is refused here, loudly."""
    try:
        return _generate(cell, backend, inputs)
    except PlanError as exc:
        raise GateflowError(f"cannot compile cell {cell.name!r}: {exc}") from None


def _generate(cell: Cell, backend: str, inputs: bool) -> dict:
    from gateflow.cells._notation import printer
    from gateflow.symbolic._derive import derive, derive_input, diagonal_per_unit

    s = derive_input(cell) if inputs else derive(cell)
    sys = cell.system
    atoms = sys.matvec_by_symbol
    reverse_products = {m.symbol.name for m in s.products}
    subs, extra = _complements(sys)
    gated = {name: (pre, func, params, comps) for name, pre, func, params, comps in extra}

    def function(args, expr, cse=False) -> dict:
        return function_data(_source(list(args), expr, backend, cse=cse), list(args))

    def node(name, args, expr) -> dict:
        return {"node": name, "args": list(args), "fn": function(args, expr)}

    forward: list = []
    i, order = 0, sys.order
    while i < len(order):
        name = order[i]
        if name in atoms:
            arg, names = atoms[name].arg, []
            while i < len(order) and order[i] in atoms and atoms[order[i]].arg == arg:
                names.append(order[i])
                i += 1
            forward.append({"group": arg, "atoms": names,
                            "weights": [atoms[a].weight for a in names],
                            "reverse": any(a in reverse_products for a in names)})
            continue
        rhs = _accurate(sys.rhs[name], subs)
        if name in gated:
            # v = F(a): evaluate a once, then v and its accurate complements from a.
            pre, func, params, comps = gated[name]
            arg = rhs.args[0]
            forward.append(node(pre.name, sorted(x.name for x in arg.free_symbols), arg))
            forward.append(node(name, [pre.name], func(pre, *params)))
            for comp_sym, comp_expr in comps:
                forward.append(node(comp_sym.name, [pre.name], comp_expr))
        else:
            forward.append(node(name, sorted(x.name for x in rhs.free_symbols), rhs))
        i += 1

    coefs = s.coefficients()
    layout = [[v, src] for v, src, _ in coefs]
    exprs = [_accurate(c, subs) for _, _, c in coefs]
    coef_args = sorted({x.name for e in exprs for x in e.free_symbols})

    index = {(v, src): k for k, (v, src) in enumerate(layout)}
    groups = [g for g in forward if "group" in g]
    reverse: list = []
    for name in reversed(order):
        if name in s.edges:
            reverse.append(["scatter", name, [[src, index[(name, src)]] for src, _ in s.edges[name]
                                              if src not in atoms]])
        elif name in atoms and name in reverse_products:
            group = next(g for g in groups if name in g["atoms"])
            if group["atoms"][-1] == name:  # first met walking backwards: the whole group
                terms = [[v, [[j, index[(v, a)]] for j, a in enumerate(group["atoms"])
                              if (v, a) in index]] for v in s.sinks]
                reverse.append(["group", group["atoms"], [t for t in terms if t[1]]])
    direct = {b: index[(b, f"{b}_prev")] for b in cell.state if (b, f"{b}_prev") in index}
    labels = {b: {fmt: printer(cell, fmt).doprint(s.direct(b)) for fmt in LABEL_FORMATS}
              for b in direct}
    return {"format": FORMAT, "wrt": list(s.wrt), "forward": forward,
            "coef_args": coef_args, "coef": function(coef_args, exprs, cse=True),
            "layout": layout, "reverse": reverse, "direct": direct, "direct_labels": labels,
            "diagonal": diagonal_per_unit(s)}

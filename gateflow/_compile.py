"""Compiled evaluators: the derived expressions, lambdified into vectorized array code.

Nothing here knows any particular cell. From a cell's equations and its
:class:`~gateflow._derive.Structure` it builds, once per (cell, backend, dtype):

* a forward *plan*: each group of products W v that share their vector v becomes one GEMM
  against the stacked weights; each node (gate, state, composite) one lambdified function;
* one lambdified function (``cse=True``) that returns every Jacobian coefficient of the step
  as a flat list, in the order of ``Structure.coefficients()`` (a flat list, because SymPy
  returns ragged arrays for matrices with constant entries: sympy#27632, #19259);
* a reverse *plan*: the same wiring, walked backwards (see :mod:`gateflow._chain`).

Backends are found lazily: CuPy is imported only when asked for (einops-style).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from ._cell import INPUT, Cell
from ._errors import GateflowError
from ._io import write_files
from .cells import get_cell

BACKENDS = ("numpy", "cupy")
DTYPES = {"float64": np.float64, "float32": np.float32}


def get_xp(backend: str):
    """The array module for ``backend``; a clear error if it cannot be used."""
    if backend == "numpy":
        return np
    if backend == "cupy":
        try:
            import cupy
        except ImportError:
            raise GateflowError(
                "backend 'cupy' needs CuPy: pip install 'gateflow[gpu]' (and a CUDA GPU)"
            ) from None
        try:
            if cupy.cuda.runtime.getDeviceCount() < 1:
                raise GateflowError("backend 'cupy': no CUDA device is visible")
        except cupy.cuda.runtime.CUDARuntimeError as exc:
            raise GateflowError(f"backend 'cupy': CUDA is not usable ({exc})") from None
        return cupy
    raise GateflowError(f"unknown backend {backend!r} (valid: {', '.join(BACKENDS)})")


def get_dtype(dtype) -> np.dtype:
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise GateflowError(f"unknown dtype {dtype!r} (valid: {', '.join(DTYPES)})")
        dtype = DTYPES[dtype]
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise GateflowError(f"dtype must be float32 or float64, got {dtype}")
    return dtype


def _namespace(xp) -> dict:
    """Implementations of gateflow's functions for ``xp``, numerically stable."""

    def sigmoid(a):
        # e = e^{−|a|} never overflows; 1/(1+e) for a ≥ 0 and e/(1+e) for a < 0 keep full
        # relative accuracy in both tails (σ(−50) = 1.9e−22, not 0).
        e = xp.exp(-xp.abs(a))
        r = 1 / (1 + e)
        return xp.where(a >= 0, r, e * r)

    def relu(a):
        return xp.maximum(a, 0)

    def sech2(a):
        # 1 − tanh²(a) = 4 e^{−2|a|} / (1 + e^{−2|a|})²: no cancellation, no overflow.
        e = xp.exp(-2 * xp.abs(a))
        return 4 * e / (1 + e) ** 2

    def heaviside(a, h0):
        return (a > 0).astype(a.dtype) if h0 == 0 else xp.heaviside(a, h0)

    return {"sigmoid": sigmoid, "relu": relu, "sech2": sech2, "Heaviside": heaviside}


def _lambdify(args, expr, xp, cse=False):
    import sympy as sp

    module = "cupy" if xp.__name__ == "cupy" else "numpy"
    return sp.lambdify(args, expr, modules=[_namespace(xp), module], cse=cse, docstring_limit=0)


@dataclass(frozen=True)
class Group:
    """Products that share their argument: ``W_1 v, …, W_G v`` as one GEMM."""

    arg: str
    atoms: tuple[str, ...]  # matvec symbol names, in stacking order
    weights: tuple[str, ...]
    reverse: bool  # does the state's Jacobian flow through it?


@dataclass(frozen=True)
class Node:
    name: str
    args: tuple[str, ...]
    fn: object


@dataclass(frozen=True)
class Compiled:
    """Evaluators of one cell for one backend and dtype (independent of the weights)."""

    cell: Cell
    backend: str
    dtype: np.dtype
    forward: tuple[Group | Node, ...]
    coef_args: tuple[str, ...]
    coef_fn: object
    layout: tuple[tuple[str, str], ...]  # (sink, source) of each coefficient
    #: Backward plan: ("scatter", sink, ((source, k), ...)) applies elementwise coefficient k;
    #: ("group", Group, ((sink, ((j, k), ...)), ...)) applies Σ_j diag(coef k) W_j of a group.
    reverse: tuple[tuple, ...]
    direct: dict[str, int]  # state block -> index of its direct-path coefficient

    @property
    def xp(self):
        return get_xp(self.backend)


def _complements(sys) -> tuple[dict, list]:
    """Accurate complements of saturating gates, for the numerics only.

    In floating point σ(50) is exactly 1, so 1 − f is 0 and f(1 − f) would report a
    saturated-but-alive path as exactly zero (the true value is e^{−50}). Each gate
    v = σ(a) therefore also gets v̄ = σ(−a), each v = tanh(a) gets sech²(a), and every
    1 − v, 1 − v², 1 − tanh²(u) in the equations and coefficients is replaced by them.
    Returns the substitution and the extra forward nodes (name, pre-activation node, fn).
    """
    import sympy as sp

    from ._functions import sech2, sigmoid

    subs: dict = {}
    extra: list = []
    for node, rhs in sys.defs:
        pre = sp.Symbol(f"{node.name}__pre")
        if isinstance(rhs, sigmoid):
            bar = sp.Symbol(f"{node.name}__bar")
            subs[1 - node], subs[node - 1] = bar, -bar
            extra.append((node.name, pre, rhs.func, (bar, sigmoid(-pre))))
        elif isinstance(rhs, sp.tanh):
            sq = sp.Symbol(f"{node.name}__sech2")
            subs[1 - node**2], subs[node**2 - 1] = sq, -sq
            extra.append((node.name, pre, rhs.func, (sq, sech2(pre))))
    return subs, extra


def _accurate(expr, subs):
    import sympy as sp

    from ._functions import sech2

    w = sp.Wild("w")
    return expr.xreplace(subs).replace(1 - sp.tanh(w) ** 2, sech2(w))


#: Bump when the layout of a cached plan changes (the cache key also hashes the sources
#: of the modules that generate code, so editing them invalidates old entries).
CACHE_FORMAT = 1


def _spec(cell: Cell, xp) -> dict:
    """Derive and lambdify ``cell``: the whole compiled plan as plain data and sources."""
    import sympy as sp

    from ._derive import derive

    s = derive(cell)
    sys = cell.system
    atoms = sys.matvec_by_symbol
    reverse_products = {m.symbol.name for m in s.products}
    subs, extra = _complements(sys)
    gated = {name: (pre, func, comp) for name, pre, func, comp in extra}

    def source(args, expr, cse=False) -> str:
        return inspect.getsource(_lambdify([sp.Symbol(a) for a in args], expr, xp, cse=cse))

    def node(name, args, expr) -> dict:
        return {"node": name, "args": list(args), "src": source(args, expr)}

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
            # v = F(a): evaluate a once, then v and its accurate complement from a.
            pre, func, (comp_sym, comp_expr) = gated[name]
            arg = rhs.args[0]
            forward.append(node(pre.name, sorted(x.name for x in arg.free_symbols), arg))
            forward.append(node(name, [pre.name], func(pre)))
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
    return {"format": CACHE_FORMAT, "forward": forward, "coef_args": coef_args,
            "coef_src": source(coef_args, exprs, cse=True), "layout": layout,
            "reverse": reverse, "direct": direct}


@cache
def _namespace_of(backend: str) -> dict:
    """Globals for generated code, as lambdify builds them: the array module's public names
    (the printers write ``tanh(x)``), the module itself, and gateflow's functions."""
    xp = get_xp(backend)
    ns = {k: v for k, v in vars(xp).items() if not k.startswith("_")}
    return {**ns, xp.__name__: xp, **_namespace(xp)}


def _load(cell: Cell, backend: str, dtype: np.dtype, spec: dict) -> Compiled:
    """Build the evaluators from a plan (fresh or cached: the same path either way)."""
    ns = _namespace_of(backend)

    def function(src: str):
        scope = dict(ns)
        exec(compile(src, f"<gateflow {cell.name}>", "exec"), scope)  # noqa: S102 - our own code
        return scope["_lambdifygenerated"]

    forward, groups = [], {}
    for item in spec["forward"]:
        if "group" in item:
            g = Group(item["group"], tuple(item["atoms"]), tuple(item["weights"]), item["reverse"])
            groups[g.atoms] = g
            forward.append(g)
        else:
            forward.append(Node(item["node"], tuple(item["args"]), function(item["src"])))
    reverse = []
    for op in spec["reverse"]:
        if op[0] == "scatter":
            reverse.append(("scatter", op[1], tuple((src, k) for src, k in op[2])))
        else:
            terms = tuple((v, tuple((j, k) for j, k in pairs)) for v, pairs in op[2])
            reverse.append(("group", groups[tuple(op[1])], terms))
    return Compiled(cell, backend, dtype, tuple(forward), tuple(spec["coef_args"]),
                    function(spec["coef_src"]), tuple(tuple(x) for x in spec["layout"]),
                    tuple(reverse), dict(spec["direct"]))


def cache_dir() -> Path | None:
    """Where compiled plans are cached: $GATEFLOW_CACHE_DIR (empty: off), else
    $XDG_CACHE_HOME/gateflow or ~/.cache/gateflow."""
    env = os.environ.get("GATEFLOW_CACHE_DIR")
    if env is not None:
        return Path(env) if env else None
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "gateflow"


def _cache_path(cell: Cell, backend: str) -> Path | None:
    """The plan's file: keyed by the equations, the versions and the code generators'
    sources (not by dtype: the generated code is the same for float32 and float64)."""
    folder = cache_dir()
    if folder is None:
        return None
    from importlib.metadata import version

    from . import __version__

    here = Path(__file__).parent
    h = hashlib.sha256(json.dumps([CACHE_FORMAT, __version__, version("sympy"), backend,
                                   cell.name, cell.state, cell.params,
                                   cell.equations]).encode())
    for source in ("_cell.py", "_derive.py", "_functions.py", "_compile.py"):
        h.update((here / source).read_bytes())
    return folder / f"{cell.name}-{backend}-{h.hexdigest()[:24]}.json"


def compile_cell(cell: str | Cell, backend: str = "numpy", dtype="float64") -> Compiled:
    """Evaluators of ``cell`` for (backend, dtype): derived and lambdified once per process,
    and cached on disk (see :func:`cache_dir`), so a new process skips both."""
    return _compile(get_cell(cell), backend, get_dtype(dtype))


@cache
def _compile(cell: Cell, backend: str, dtype: np.dtype) -> Compiled:
    xp = get_xp(backend)
    path = _cache_path(cell, backend)
    if path is not None and path.is_file():
        try:
            spec = json.loads(path.read_text())
            if spec.get("format") == CACHE_FORMAT:
                return _load(cell, backend, dtype, spec)
        except (OSError, ValueError, KeyError, TypeError, SyntaxError):
            pass  # an unreadable entry is rebuilt below
    spec = _spec(cell, xp)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_files({path: json.dumps(spec).encode()})
        except (OSError, GateflowError):
            pass  # a read-only home only costs the cache
    return _load(cell, backend, dtype, spec)


class Bound:
    """A compiled cell with its weights on the device, stacked for the GEMMs."""

    def __init__(self, compiled: Compiled, params: dict, n: int):
        xp, dt = compiled.xp, compiled.dtype
        self.c, self.xp, self.n = compiled, xp, n
        self.params = {k: xp.asarray(v, dtype=dt) for k, v in params.items()}
        self.stacked = {}  # arg group -> (W_stack (G n × m), its transpose, contiguous)
        for g in compiled.forward:
            if isinstance(g, Group):
                w = xp.concatenate([self.params[w] for w in g.weights], axis=0)
                self.stacked[g.atoms] = (xp.ascontiguousarray(w), xp.ascontiguousarray(w.T))

    def step(self, x, prev: dict) -> dict:
        """One forward step: every node's value, from x_t (B, d) and s_{t−1}."""
        vals = {INPUT: x, **{f"{b}_prev": v for b, v in prev.items()}, **self.params}
        n = self.n
        for item in self.c.forward:
            if isinstance(item, Group):
                out = vals[item.arg] @ self.stacked[item.atoms][1]
                for k, a in enumerate(item.atoms):
                    vals[a] = out[:, k * n:(k + 1) * n]
            else:
                vals[item.name] = item.fn(*(vals[a] for a in item.args))
        return vals

    def coefficients(self, vals: dict) -> list:
        out = self.c.coef_fn(*(vals[a] for a in self.c.coef_args))
        dt = self.c.dtype
        return [c if hasattr(c, "shape") and c.ndim else dt.type(c) for c in out]

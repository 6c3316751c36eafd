"""Compiled evaluators: the derived expressions, printed as vectorized array code.

Nothing here knows any particular cell. From a cell's equations and its
:class:`~gateflow.symbolic._derive.Structure` it builds, once per (cell, backend, dtype):

* a forward *plan*: each group of products W v that share their vector v becomes one GEMM
  against the stacked weights; each node (gate, state, composite) one generated function;
* one generated function (``cse=True``) that returns every Jacobian coefficient of the step
  as a flat list, in the order of ``Structure.coefficients()`` (a flat list, because SymPy
  returns ragged arrays for matrices with constant entries: sympy#27632, #19259);
* a reverse *plan*: the same wiring, walked backwards (see :mod:`gateflow.numeric._chain`),
  as typed steps (:class:`Scatter`, :class:`GroupStep`).

The functions are written by :func:`_source` with SymPy's public code printers and
``sympy.cse``, in the form ``lambdify`` would write them (``def _lambdifygenerated(...)``),
and run in the namespace of :func:`_namespace_of`.

Plans are cached on disk, in a private folder, and executed from there only after they are
verified (see the trust boundary note above :func:`cache_dir`).

Backends are found lazily: CuPy is imported only when asked for (einops-style).
"""

from __future__ import annotations

import ast
import hashlib
import json
import keyword
import os
import re
import stat
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from gateflow._io import write_files
from gateflow.cells._library import get_cell
from gateflow.cells._record import INPUT, Cell
from gateflow.numeric._backend import (  # noqa: F401 - get_xp, DTYPES: for the layers above
    BACKENDS,
    DTYPES,
    Backend,
    get_backend,
    get_dtype,
    get_xp,
)


def _namespace(xp) -> dict:
    """Implementations of gateflow's functions for ``xp``, numerically stable. Parameters
    arrive as Python numbers (the exact rationals of the equations, printed ``1/5``)."""

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
        # 1[a > 0] (h0 = 0) or 1[a ≥ 0] (h0 = 1), in a's dtype
        if h0 == 0:
            return (a > 0).astype(a.dtype)
        return (a >= 0).astype(a.dtype) if h0 == 1 else xp.heaviside(a, h0)

    def linear(a):
        return +a

    def softsign(a):
        return a / (1 + xp.abs(a))

    def softplus(a):
        # log(1 + e^a) = max(a, 0) + log1p(e^{−|a|}): no overflow, full accuracy for a ≪ 0
        return xp.maximum(a, 0) + xp.log1p(xp.exp(-xp.abs(a)))

    def elu(a, alpha):
        return xp.where(a > 0, a, alpha * xp.expm1(xp.minimum(a, 0)))

    def leaky_relu(a, alpha):
        return xp.where(a > 0, a, alpha * a)

    def thresholded_relu(a, alpha):
        return a * (a > alpha)

    def hard_sigmoid(a, alpha, beta):
        return xp.clip(alpha * a + beta, 0, 1)

    def affine(a, alpha, beta):
        return alpha * a + beta

    def scaled_tanh(a, alpha, beta):
        return alpha * xp.tanh(beta * a)

    return {"sigmoid": sigmoid, "relu": relu, "sech2": sech2, "Heaviside": heaviside,
            "linear": linear, "softsign": softsign, "softplus": softplus, "elu": elu,
            "leaky_relu": leaky_relu, "thresholded_relu": thresholded_relu,
            "hard_sigmoid": hard_sigmoid, "affine": affine, "scaled_tanh": scaled_tanh}


#: Names of gateflow's own functions in generated code (see :func:`_namespace`), with
#: how many arguments each takes.
_OWN_ARITY = {"sigmoid": 1, "relu": 1, "sech2": 1, "Heaviside": 2, "linear": 1,
              "softsign": 1, "softplus": 1, "elu": 2, "leaky_relu": 2, "thresholded_relu": 2,
              "hard_sigmoid": 3, "affine": 3, "scaled_tanh": 3}
_OWN_FUNCTIONS = tuple(_OWN_ARITY)


def _source(args: list[str], expr, backend: str, cse: bool = False) -> str:
    """Python source of ``def _lambdifygenerated(args): ... return expr``, written with
    SymPy's public printers only (what ``lambdify`` generates, and what
    :func:`_check_source` accepts): ``expr`` is one expression or a list of them; with
    ``cse``, common subexpressions become ``x0 = ...`` assignments first (``sympy.cse``).

    The printer is NumPy's (or CuPy's) with lambdify's settings: unqualified array
    functions (``tanh(x)``; the namespace of :func:`_namespace_of` provides them) and
    gateflow's functions (:data:`_OWN_FUNCTIONS`) printed by name."""
    import sympy as sp
    import sympy.printing.numpy as printers

    if not all(_plain(a) for a in args) or len(set(args)) != len(args):
        raise ValueError(f"cannot generate code for arguments {args!r}")
    printer_class = getattr(printers, get_backend(backend).printer)
    printer = printer_class({"fully_qualified_modules": False, "inline": True,
                             "allow_unknown_functions": True,
                             "user_functions": {f: f for f in _OWN_FUNCTIONS}})
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


@dataclass(frozen=True)
class Group:
    """Products that share their argument: ``W_1 v, …, W_G v`` as one GEMM."""

    arg: str
    atoms: tuple[str, ...]  # matvec symbol names, in stacking order
    weights: tuple[str, ...]
    reverse: bool  # does the state's Jacobian flow through it?


@dataclass(frozen=True)
class Node:
    """One generated function: ``name = fn(*args)`` in the forward pass."""

    name: str
    args: tuple[str, ...]
    fn: Callable[..., Any]


# -- the backward plan: typed steps (stored as plain JSON lists, converted at load) --------

#: Coefficient pairs of one sink in a group: (j, k) applies diag(coef k) W_j, W_j the j-th
#: weight of the group.
Pairs = tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class Scatter:
    """Elementwise edges out of one sink: A[source] += A[sink] ⊙ coef k, for each
    (source, k) in ``sources``. JSON: ``["scatter", sink, [[source, k], ...]]``."""

    sink: str
    sources: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class GroupStep:
    """The products of one group, backwards: A[group.arg] += Σ_sink A[sink] K_sink with
    K_sink = Σ_(j, k) diag(coef k) W_j over the sink's pairs. ``terms`` holds
    (sink, pairs) per sink that feeds the group. JSON: ``["group", atoms, [[sink,
    [[j, k], ...]], ...]]`` (the group named by its atoms)."""

    group: Group
    terms: tuple[tuple[str, Pairs], ...]


PlanStep = Scatter | GroupStep


def _plan_step(op: list, groups: dict[tuple[str, ...], Group]) -> PlanStep:
    """One stored (JSON) reverse step as its typed record; ``op`` is already checked
    (:func:`_check_spec`)."""
    if op[0] == "scatter":
        return Scatter(op[1], tuple((src, k) for src, k in op[2]))
    terms = tuple((v, tuple((j, k) for j, k in pairs)) for v, pairs in op[2])
    return GroupStep(groups[tuple(op[1])], terms)


@dataclass(frozen=True)
class Compiled:
    """Evaluators of one cell for one backend and dtype (independent of the weights)."""

    cell: Cell
    backend: str
    dtype: np.dtype
    forward: tuple[Group | Node, ...]
    coef_args: tuple[str, ...]
    coef_fn: Callable[..., Any]
    layout: tuple[tuple[str, str], ...]  # (sink, source) of each coefficient
    #: Backward plan, in order: :class:`Scatter` and :class:`GroupStep` records.
    reverse: tuple[PlanStep, ...]
    direct: dict[str, int]  # state block -> index of its direct-path coefficient
    #: state block -> {"text": …, "latex": …}: its direct-path coefficient as the cell's
    #: notation prints it ("f_t", "1 − f_t"), so labels need no SymPy on a cache hit.
    direct_labels: dict[str, dict[str, str]]
    #: What the reverse plan differentiates against: the previous state (``h_prev``, …:
    #: the plan applies G ← G ∂s_t/∂s_{t−1}) or the input ``("x",)`` (G_x = G ∂s_t/∂x_t).
    wrt: tuple[str, ...] = ()

    @property
    def be(self) -> Backend:
        """The backend record (array module, host transfer, threading)."""
        return get_backend(self.backend)

    @property
    def xp(self):
        return self.be.xp


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


#: Bump when the layout of a cached plan changes (the cache key also hashes the sources
#: of the modules that generate code, so editing them invalidates old entries).
CACHE_FORMAT = 4


def _spec(cell: Cell, backend: str, inputs: bool = False) -> dict:
    """Derive ``cell`` and generate its code for ``backend``: the whole compiled plan as
    plain data (JSON) and sources. With ``inputs``, the plan of the input Jacobian
    ∂s_t/∂x_t (same forward pass, its own coefficients and reverse plan)."""
    from gateflow.cells._notation import printer
    from gateflow.symbolic._derive import derive, derive_input

    s = derive_input(cell) if inputs else derive(cell)
    sys = cell.system
    atoms = sys.matvec_by_symbol
    reverse_products = {m.symbol.name for m in s.products}
    subs, extra = _complements(sys)
    gated = {name: (pre, func, params, comps) for name, pre, func, params, comps in extra}

    def source(args, expr, cse=False) -> str:
        return _source(list(args), expr, backend, cse=cse)

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
    return {"format": CACHE_FORMAT, "wrt": list(s.wrt), "forward": forward,
            "coef_args": coef_args, "coef_src": source(coef_args, exprs, cse=True),
            "layout": layout, "reverse": reverse, "direct": direct, "direct_labels": labels}


@cache
def _namespace_of(backend: str) -> dict:
    """Globals for generated code, as lambdify builds them: the array module's public names
    (the printers write ``tanh(x)``), the module itself, and gateflow's functions."""
    xp = get_backend(backend).xp
    ns = {k: v for k, v in vars(xp).items() if not k.startswith("_")}
    return {**ns, xp.__name__: xp, **_namespace(xp)}


def _load(cell: Cell, backend: str, dtype: np.dtype, spec: dict) -> Compiled:
    """Build the evaluators from a plan (fresh or cached: the same path either way)."""
    ns = _namespace_of(backend)

    def function(src: str):
        scope = dict(ns)
        code = compile(src, f"<gateflow {cell.name}>", "exec")
        exec(code, scope)  # noqa: S102 - fresh, or cached and checked
        return scope["_lambdifygenerated"]

    forward: list[Group | Node] = []
    groups: dict[tuple[str, ...], Group] = {}
    for item in spec["forward"]:
        if "group" in item:
            g = Group(item["group"], tuple(item["atoms"]), tuple(item["weights"]), item["reverse"])
            groups[g.atoms] = g
            forward.append(g)
        else:
            forward.append(Node(item["node"], tuple(item["args"]), function(item["src"])))
    reverse = tuple(_plan_step(op, groups) for op in spec["reverse"])
    return Compiled(cell, backend, dtype, tuple(forward), tuple(spec["coef_args"]),
                    function(spec["coef_src"]), tuple(tuple(x) for x in spec["layout"]),
                    reverse, dict(spec["direct"]),
                    {b: dict(v) for b, v in spec["direct_labels"].items()}, tuple(spec["wrt"]))


# -- the on-disk cache ---------------------------------------------------------------------
#
# Trust boundary. A cache entry holds Python source that gateflow executes, so the cache is
# only as trustworthy as its folder. gateflow creates the folder 0700 and its entries 0600
# (whatever the umask) and uses a folder or entry only if it is the current user's, is not a
# symbolic link, and is writable by nobody else (nor are the folders above it, unless
# sticky); anything else is ignored with a one-line warning and the cell is compiled in
# memory. Every entry carries a SHA-256 of its canonical content and its own file name, so a
# corrupt, truncated, foreign or hand-edited (not re-signed) entry is rebuilt; then its JSON
# must have exactly the shape :func:`_spec` writes, and every source must parse to what
# :func:`_source` generates (:func:`_check_source`) before anything is executed. The hash
# is not a signature: whoever can write the folder can also recompute it, so a formula
# edited by hand within the whitelist would give wrong numbers. That is why the folder must
# be the user's alone.

#: Entries larger than this are not read (they are never this big: ~10 KiB).
MAX_ENTRY_BYTES = 8 << 20
#: What a cached source may call, bare or as ``numpy.f``/``cupy.f``: gateflow's functions and
#: the array functions SymPy prints for the equations' operations (name -> argument count).
_CALLS = {**_OWN_ARITY, "tanh": 1, "sqrt": 1, "log": 1, "exp": 1, "abs": 1}
_MODULES = frozenset(BACKENDS)
#: Every other kind of syntax node a cached source may contain.
_SYNTAX = (ast.BinOp, ast.UnaryOp, ast.Compare, ast.List, ast.Tuple, ast.Load, ast.Add,
           ast.Sub, ast.Mult, ast.Div, ast.Pow, ast.USub, ast.UAdd, ast.Lt, ast.LtE, ast.Gt,
           ast.GtE, ast.Eq, ast.NotEq)
_ENTRY_KEYS = frozenset({"format", "wrt", "forward", "coef_args", "coef_src", "layout",
                         "reverse", "direct", "direct_labels", "sha256"})
#: The formats of the printed direct-path labels kept with a plan.
LABEL_FORMATS = ("text", "latex")
_warned: set[str] = set()  # folders already warned about in this process


#: The sources that generate the cached code: editing any of them invalidates old entries.
_GENERATORS = ("cells/_record.py", "cells/_functions.py", "cells/_activations.py",
               "symbolic/_derive.py", "numeric/_compile.py")


class _Refused(Exception):
    """A cache folder or entry that gateflow will not use; the message says why."""


def cache_dir() -> Path | None:
    """Where compiled plans are cached: ``$GATEFLOW_CACHE_DIR`` (set but empty: no cache),
    else the user's cache folder for gateflow as ``platformdirs`` gives it:
    ``$XDG_CACHE_HOME/gateflow`` or ``~/.cache/gateflow`` on Linux,
    ``~/Library/Caches/gateflow`` on macOS, ``%LOCALAPPDATA%\\gateflow\\Cache`` on Windows."""
    env = os.environ.get("GATEFLOW_CACHE_DIR")
    if env is not None:
        return Path(env) if env else None
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("gateflow", appauthor=False))


def _cache_path(cell: Cell, backend: str, inputs: bool = False) -> Path | None:
    """The plan's file: keyed by the equations, the versions, the code generators'
    sources and which Jacobian (state or input), not by dtype (the generated code is the
    same for float32 and float64)."""
    folder = cache_dir()
    if folder is None:
        return None
    from importlib.metadata import version

    from gateflow._version import __version__

    root = Path(__file__).parent.parent
    h = hashlib.sha256(json.dumps([CACHE_FORMAT, __version__, version("sympy"), backend,
                                   cell.name, cell.state, cell.params,
                                   cell.equations, inputs]).encode())
    for source in _GENERATORS:
        h.update((root / source).read_bytes())
    name = re.sub(r"[^A-Za-z0-9_-]", "_", cell.name)[:64]  # never a path of its own
    kind = "-x" if inputs else ""
    return folder / f"{name}{kind}-{backend}-{h.hexdigest()[:24]}.json"


def _warn(folder: Path, message: str) -> None:
    """One line on stderr, at most once per process and folder (not ``warnings.warn``: the
    cache is gateflow's business, and a warning filter must not turn it into an error)."""
    from gateflow._text import one_line  # the folder's name may hold anything

    if str(folder) not in _warned:
        _warned.add(str(folder))
        print(f"gateflow: warning: {one_line(message)}", file=sys.stderr, flush=True)


def _check_owner(st: os.stat_result) -> None:
    """Refuse a symbolic link, or anything not the current user's or writable by others."""
    if stat.S_ISLNK(st.st_mode):
        raise _Refused("it is a symbolic link")
    if st.st_uid != os.geteuid():
        raise _Refused(f"it is owned by uid {st.st_uid}, not you")
    if st.st_mode & 0o022:
        raise _Refused(f"it is writable by group or others (mode {st.st_mode & 0o7777:04o})")


def _make_private(folder: Path) -> None:
    """Create ``folder`` and the missing folders above it, 0700 whatever the umask; only
    the folders created here are chmod-ed."""
    missing = []
    while not os.path.lexists(folder) and folder.parent != folder:
        missing.append(folder)
        folder = folder.parent
    for path in reversed(missing):
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            continue  # made meanwhile by someone else: checked like any existing folder
        os.chmod(path, 0o700)


def _trusted_folder(folder: Path) -> bool:
    """Create the cache folder if needed; True if only the current user can change it.

    It must be a real folder (no link), the user's, not writable by group or others; the
    folders above it must be the user's or root's and not writable by others unless sticky
    (like /tmp). Otherwise warn once and return False: nothing is read from or written
    there. A folder that cannot be created or read (a read-only home) only costs the cache."""
    try:
        _make_private(folder)
        st = os.lstat(folder)
        if not (stat.S_ISDIR(st.st_mode) or stat.S_ISLNK(st.st_mode)):
            raise _Refused("it is not a folder")
        _check_owner(st)
        above = Path(os.path.realpath(folder.parent))
        for path in (above, *above.parents):
            st = os.stat(path)
            if st.st_uid not in (os.geteuid(), 0):
                raise _Refused(f"{str(path)!r} above it is owned by uid {st.st_uid}")
            if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
                raise _Refused(f"{str(path)!r} above it is writable by group or others")
    except _Refused as exc:
        _warn(folder, f"ignoring compile cache {str(folder)!r}: {exc}; compiling in memory")
        return False
    except OSError:
        return False
    return True


def _digest(name: str, spec: dict) -> str:
    """SHA-256 of an entry's file name and canonical JSON (without its own hash)."""
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(f"{name}\n{canonical}".encode()).hexdigest()


def _require(ok: bool) -> None:
    if not ok:
        raise ValueError("not a gateflow plan")


def _plain(name) -> bool:
    """A variable name lambdify writes: an identifier, no leading underscore, no builtin of
    the generated code (so no dunder, and no shadowing of a callable)."""
    return (isinstance(name, str) and name.isidentifier() and not name.startswith("_")
            and not keyword.iskeyword(name) and name not in _CALLS and name not in _MODULES)


def _check_expr(expr: ast.AST, names: set[str]) -> None:
    """Raise ValueError unless ``expr`` is arithmetic over ``names``, int/float constants,
    lists and tuples, comparisons, and whitelisted calls (:data:`_CALLS`)."""
    callees: set[int] = set()
    for node in ast.walk(expr):  # breadth first: a call is seen before its callee
        if isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Attribute):
                _require(isinstance(f.value, ast.Name) and f.value.id in _MODULES)
                callees.add(id(f.value))
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", None)
            _require(name in _CALLS and not node.keywords and len(node.args) == _CALLS[name])
            callees.add(id(f))
        elif isinstance(node, (ast.Name, ast.Attribute)):
            _require(id(node) in callees or getattr(node, "id", None) in names)
            _require(isinstance(node.ctx, ast.Load))
        elif isinstance(node, ast.Constant):
            _require(type(node.value) in (int, float))
        else:
            _require(isinstance(node, _SYNTAX))
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):  # no 9**9**9**9
                _require(any(isinstance(n, ast.Name) for n in ast.walk(node)))


def _check_source(src, args: list, outputs: int | None = None) -> None:
    """Raise ValueError (or SyntaxError, RecursionError, …) unless ``src`` is what lambdify
    generates: one ``def _lambdifygenerated(args):`` with plain positional arguments, a body
    of assignments to plain names, then ``return`` of an expression (:func:`_check_expr`) —
    a list of ``outputs`` of them for the coefficients. No import, decorator, default, lambda,
    comprehension, attribute (but ``numpy.f``), subscript or string can pass."""
    _require(isinstance(src, str) and all(_plain(a) for a in args) and len(set(args)) == len(args))
    tree = ast.parse(src)
    _require(len(tree.body) == 1)
    fn = tree.body[0]
    _require(isinstance(fn, ast.FunctionDef) and fn.name == "_lambdifygenerated"
             and not fn.decorator_list and fn.returns is None)
    a = fn.args
    _require(not (a.posonlyargs or a.vararg or a.kwonlyargs or a.kw_defaults or a.kwarg
                  or a.defaults) and [x.arg for x in a.args] == list(args)
             and all(x.annotation is None for x in a.args))
    names = set(args)
    *assignments, ret = fn.body
    for st in assignments:
        _require(isinstance(st, ast.Assign) and len(st.targets) == 1
                 and isinstance(st.targets[0], ast.Name) and _plain(st.targets[0].id))
        _check_expr(st.value, names)
        names.add(st.targets[0].id)
    _require(isinstance(ret, ast.Return) and ret.value is not None)
    _check_expr(ret.value, names)
    _require(outputs is None or (isinstance(ret.value, ast.List)
                                 and len(ret.value.elts) == outputs))


def _check_spec(spec) -> None:
    """Raise ValueError (or another error) unless ``spec`` has exactly the shape and types
    :func:`_spec` writes, its indices are in range and every source passes
    :func:`_check_source`."""

    def names(v) -> bool:
        return isinstance(v, list) and all(isinstance(s, str) for s in v)

    def index(v, n: int) -> bool:
        return type(v) is int and 0 <= v < n

    def pairs(v, check) -> bool:
        return isinstance(v, list) and all(isinstance(p, list) and len(p) == 2 and check(*p)
                                           for p in v)

    _require(isinstance(spec, dict) and set(spec) == _ENTRY_KEYS - {"sha256"}
             and spec["format"] == CACHE_FORMAT and type(spec["format"]) is int
             and names(spec["wrt"]))
    layout = spec["layout"]
    _require(pairs(layout, lambda a, b: isinstance(a, str) and isinstance(b, str)))
    n = len(layout)
    groups = []
    _require(isinstance(spec["forward"], list))
    for item in spec["forward"]:
        _require(isinstance(item, dict))
        if set(item) == {"group", "atoms", "weights", "reverse"}:
            _require(isinstance(item["group"], str) and names(item["atoms"])
                     and names(item["weights"]) and len(item["atoms"]) == len(item["weights"])
                     and type(item["reverse"]) is bool)
            groups.append(item["atoms"])
        else:
            _require(set(item) == {"node", "args", "src"} and isinstance(item["node"], str)
                     and names(item["args"]))
            _check_source(item["src"], item["args"])
    _require(names(spec["coef_args"]))
    _check_source(spec["coef_src"], spec["coef_args"], outputs=n)
    _require(isinstance(spec["reverse"], list))
    for op in spec["reverse"]:
        _require(isinstance(op, list) and len(op) == 3 and isinstance(op[0], str))
        if op[0] == "scatter":
            _require(isinstance(op[1], str)
                     and pairs(op[2], lambda src, k: isinstance(src, str) and index(k, n)))
        else:
            _require(op[0] == "group" and op[1] in groups)
            m = len(op[1])
            _require(pairs(op[2], lambda sink, terms: isinstance(sink, str) and pairs(
                terms, lambda j, k: index(j, m) and index(k, n))))
    direct = spec["direct"]
    _require(isinstance(direct, dict) and all(index(k, n) for k in direct.values()))
    labels = spec["direct_labels"]  # text shown to the user, never executed
    _require(isinstance(labels, dict) and set(labels) == set(direct) and all(
        isinstance(v, dict) and set(v) == set(LABEL_FORMATS)
        and all(isinstance(t, str) and 0 < len(t) <= 200 and t.isprintable()
                for t in v.values()) for v in labels.values()))


def _read_entry(path: Path) -> dict:
    """The verified plan in ``path``: the user's own regular file, at most
    :data:`MAX_ENTRY_BYTES`, with a matching hash and a valid shape. Raises otherwise."""
    _check_owner(os.lstat(path))  # FileNotFoundError: a plain miss
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    with open(os.open(path, flags), "rb") as fh:
        st = os.fstat(fh.fileno())  # the file actually opened, not the name
        if not stat.S_ISREG(st.st_mode):
            raise _Refused("it is not a regular file")
        _check_owner(st)
        if st.st_size > MAX_ENTRY_BYTES:
            raise _Refused(f"it is larger than {MAX_ENTRY_BYTES >> 20} MiB")
        data = fh.read(MAX_ENTRY_BYTES + 1)
    _require(len(data) <= MAX_ENTRY_BYTES)
    entry = json.loads(data.decode("utf-8"))
    _require(isinstance(entry, dict) and isinstance(entry.get("sha256"), str))
    spec = {k: v for k, v in entry.items() if k != "sha256"}
    if _digest(path.name, spec) != entry["sha256"]:
        raise _Refused("it failed its integrity check")
    _check_spec(spec)
    return spec


def _cached(cell: Cell, backend: str, dtype: np.dtype, path: Path) -> Compiled | None:
    """The evaluators from a cache entry, or None to rebuild: whatever the file holds,
    nothing raises, and only verified code is executed. A rejected entry warns once."""
    try:
        return _load(cell, backend, dtype, _read_entry(path))
    except FileNotFoundError:
        return None
    except _Refused as exc:
        reason = str(exc)
    except OSError as exc:
        reason = f"it cannot be read ({exc.strerror or exc})"
    except Exception:  # any shape of corrupt or hostile content, deep nesting, huge numbers
        reason = "it is not a valid gateflow plan"
    _warn(path.parent, f"ignoring compile cache entry {str(path)!r}: {reason}; rebuilding it")
    return None


def _write_entry(path: Path, spec: dict) -> None:
    """Store a fresh plan, 0600, replacing whatever was at ``path``; only a plan that a later
    read would accept is written. Any failure only costs the cache."""
    try:
        _check_spec(spec)
        data = json.dumps({**spec, "sha256": _digest(path.name, spec)}).encode()
        try:
            os.unlink(path)  # a rejected entry (a link is removed, not followed)
        except FileNotFoundError:
            pass
        write_files({path: data}, mode=0o600, output=False)
    except Exception:
        pass


def compile_cell(cell: str | Cell, backend: str = "numpy", dtype="float64", *,
                 inputs: bool = False) -> Compiled:
    """Evaluators of ``cell`` for (backend, dtype): derived and lambdified once per process,
    and cached on disk (see :func:`cache_dir` and the trust boundary above), so a new
    process skips both. With ``inputs``, those of the input Jacobian ∂s_t/∂x_t."""
    return _compile(get_cell(cell), backend, get_dtype(dtype), bool(inputs))


@cache
def _compile(cell: Cell, backend: str, dtype: np.dtype, inputs: bool = False) -> Compiled:
    path = _cache_path(cell, backend, inputs)
    if path is not None and not _trusted_folder(path.parent):
        path = None
    if path is not None:
        compiled = _cached(cell, backend, dtype, path)
        if compiled is not None:
            return compiled
    spec = _spec(cell, backend, inputs)
    if path is not None:
        _write_entry(path, spec)
    return _load(cell, backend, dtype, spec)


class Bound:
    """A compiled cell with its weights on the device, stacked for the GEMMs.

    Sizes come from the weights' shapes (:attr:`Cell.param_dims`): ``sizes`` by name
    (``n``, ``d``, and e.g. ``p``), ``dim`` per state block, and per group of products the
    row offsets of each weight in the stack (a projected LSTM's group on ``o ⊙ tanh(c)``
    has p rows, its gates n)."""

    def __init__(self, compiled: Compiled, params: dict):
        xp, dt = compiled.xp, compiled.dtype
        cell = compiled.cell
        self.c, self.xp = compiled, xp
        self.params = {k: xp.asarray(v, dtype=dt) for k, v in params.items()}
        self.sizes: dict[str, int] = {}
        for p, dims in cell.param_dims.items():
            for name, length in zip(dims, np.shape(params[p])):
                self.sizes.setdefault(name, int(length))
        self.n = self.sizes["n"]
        self.dim = {s: self.sizes[cell.block_size[s]] for s in cell.state}
        self.stacked = {}  # arg group -> (W_stack (Σ rows × m), its transpose, contiguous)
        self.offsets: dict[tuple[str, ...], list[int]] = {}  # group -> row offsets, 0..Σ rows
        for g in compiled.forward:
            if isinstance(g, Group):
                w = xp.concatenate([self.params[w] for w in g.weights], axis=0)
                self.stacked[g.atoms] = (xp.ascontiguousarray(w), xp.ascontiguousarray(w.T))
                self.offsets[g.atoms] = [0, *np.cumsum([np.shape(params[w])[0]
                                                        for w in g.weights]).tolist()]

    def step(self, x, prev: dict) -> dict:
        """One forward step: every node's value, from x_t (B, d) and s_{t−1}."""
        vals = {INPUT: x, **{f"{b}_prev": v for b, v in prev.items()}, **self.params}
        for item in self.c.forward:
            if isinstance(item, Group):
                out = vals[item.arg] @ self.stacked[item.atoms][1]
                off = self.offsets[item.atoms]
                for k, a in enumerate(item.atoms):
                    vals[a] = out[:, off[k]:off[k + 1]]
            else:
                vals[item.name] = item.fn(*(vals[a] for a in item.args))
        return vals

    def coefficients(self, vals: dict, plan: Compiled | None = None) -> list:
        """One step's Jacobian coefficients (the compiled layout) from its forward values:
        the state Jacobian's, or those of ``plan`` (the input Jacobian's, whose forward
        pass is the same)."""
        plan = self.c if plan is None else plan
        out = plan.coef_fn(*(vals[a] for a in plan.coef_args))
        dt = self.c.dtype
        return [c if hasattr(c, "shape") and c.ndim else dt.type(c) for c in out]

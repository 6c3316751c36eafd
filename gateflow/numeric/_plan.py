"""Compiled plans as data: the vocabulary of their functions, its checks, and the one builder.

A compiled plan (written by :mod:`gateflow.numeric._codegen`, stored by
:mod:`gateflow.numeric._cache`) is plain JSON. Each of its functions (a forward node, or the
step's Jacobian coefficients) is an expression DAG over a fixed vocabulary::

    function  {"let": [[temporary, expr], ...], "ret": expr}    arguments listed beside it
    expr      "name"                         an argument, or a temporary assigned before
              int | float                    a finite number (an int at most 2**53)
              ["neg" | "pos", e]
              ["add" | "sub" | "mul" | "div" | "pow", e1, e2]
              ["lt" | "le" | "gt" | "ge" | "eq" | "ne", e1, e2]
              ["call", f, e1, ...]           f in :data:`CALLS`, with its number of arguments
              ["list", e1, ...]              the coefficients' value only, one per coefficient

:func:`function_data` turns the source that SymPy's printer writes into that form (at
generation, fresh, in memory). :func:`build` is the only way back: it checks a whole plan
(:func:`check_plan`: the shape of the JSON, every name in scope, every call in the
vocabulary with its arity, numbers finite and bounded, depth and size bounded, the wiring
consistent with the cell), then builds the Python ``ast`` of each function from the data and
compiles it. The operations and their order are those of the printed source, so the numbers
are bit for bit those of the source itself. This module is the only place in gateflow that
calls ``compile`` or ``exec``, and only on an AST it built from checked data: nothing read
from disk is ever run as code.
"""

from __future__ import annotations

import ast
import keyword
import math
import re
import unicodedata
from collections.abc import Callable
from functools import cache
from typing import Any

from gateflow.cells._record import INPUT, Cell
from gateflow.numeric._backend import get_backend


def namespace(xp) -> dict:
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


#: gateflow's own functions (:func:`namespace`) with how many arguments each takes: the
#: array first, then its parameters (numbers).
OWN_ARITY = {"sigmoid": 1, "relu": 1, "sech2": 1, "Heaviside": 2, "linear": 1,
             "softsign": 1, "softplus": 1, "elu": 2, "leaky_relu": 2, "thresholded_relu": 2,
             "hard_sigmoid": 3, "affine": 3, "scaled_tanh": 3}
#: Every function a plan may call: gateflow's own, and the array functions SymPy's NumPy
#: (and CuPy) printer writes for the equations' operations; name -> number of arguments.
CALLS = {**OWN_ARITY, "tanh": 1, "sqrt": 1, "log": 1, "exp": 1, "abs": 1}

#: The layout version of a plan (bump it when the data changes meaning or shape).
FORMAT = 6
#: The formats of the printed direct-path labels kept with a plan (text, never executed).
LABEL_FORMATS = ("text", "latex")

_UNARY = {"neg": ast.USub, "pos": ast.UAdd}
_BINARY = {"add": ast.Add, "sub": ast.Sub, "mul": ast.Mult, "div": ast.Div, "pow": ast.Pow}
_COMPARE = {"lt": ast.Lt, "le": ast.LtE, "gt": ast.Gt, "ge": ast.GtE, "eq": ast.Eq,
            "ne": ast.NotEq}
_NAMES = {cls: name for table in (_UNARY, _BINARY, _COMPARE) for name, cls in table.items()}

MAX_DEPTH = 400  # nesting of one expression (a sum of k terms nests k deep)
MAX_OPS = 500_000  # operations in one plan (an 8 MiB entry holds at most about this many)
MAX_INT = 2**53  # the largest integer a plan may hold (or compute from its numbers)
MAX_LABEL = 2000  # characters of one printed label
_PLAN_KEYS = frozenset({"format", "wrt", "forward", "coef_args", "coef", "layout", "reverse",
                        "direct", "direct_labels", "diagonal"})
#: Characters no printed label holds (quotes, statement separators, …); "." only in numbers.
_NOT_IN_LABELS = re.compile(r"[\"'`:;#$@&%~?!]|\.(?![0-9])|(?<![0-9])\.")


class PlanError(ValueError):
    """Plan data that gateflow will not build; the message says why."""


def _require(ok: bool, why: str = "not a gateflow plan") -> None:
    if not ok:
        raise PlanError(why)


# -- from printed source to data (generation: fresh, in memory) --------------------------------

def function_data(src: str, args: list[str]) -> dict:
    """The data form of ``src``, one ``def f(args): x0 = …; return …`` as SymPy's printer
    writes it with ``sympy.cse``; raises :class:`PlanError` naming what falls outside the
    vocabulary (the generator then fails loudly rather than compile something else)."""
    (fn,) = ast.parse(src).body
    assert isinstance(fn, ast.FunctionDef) and [a.arg for a in fn.args.args] == list(args)
    *assignments, ret = fn.body
    let = []
    for st in assignments:
        if not (isinstance(st, ast.Assign) and len(st.targets) == 1
                and isinstance(st.targets[0], ast.Name)):
            raise PlanError(f"a statement outside the plan vocabulary: {ast.unparse(st)[:80]}")
        let.append([st.targets[0].id, _data(st.value, top=False)])
    if not (isinstance(ret, ast.Return) and ret.value is not None):
        raise PlanError("a function without its return value")
    return {"let": let, "ret": _data(ret.value, top=True)}


def _data(node: ast.AST, top: bool) -> Any:
    """One expression as data (:mod:`module docstring <gateflow.numeric._plan>`)."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.UnaryOp) and type(node.op) in _NAMES:
        return [_NAMES[type(node.op)], _data(node.operand, False)]
    if isinstance(node, ast.BinOp) and type(node.op) in _NAMES:
        return [_NAMES[type(node.op)], _data(node.left, False), _data(node.right, False)]
    if isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _NAMES:
        return [_NAMES[type(node.ops[0])], _data(node.left, False),
                _data(node.comparators[0], False)]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords \
            and node.func.id in CALLS and not any(isinstance(a, ast.Starred) for a in node.args):
        return ["call", node.func.id, *(_data(a, False) for a in node.args)]
    if isinstance(node, ast.List) and top:
        return ["list", *(_data(e, False) for e in node.elts)]
    raise PlanError(f"an expression outside the plan vocabulary: {ast.unparse(node)[:80]}")


# -- checking data ---------------------------------------------------------------------------

def _local(name) -> bool:
    """A variable of a function: an identifier as Python's parser would keep it (no
    keyword, no dunder, NFKC-normal), that shadows no function of the vocabulary."""
    return (isinstance(name, str) and name.isidentifier() and not keyword.iskeyword(name)
            and not name.startswith("__") and name not in CALLS
            and unicodedata.normalize("NFKC", name) == name)


def _locals(names) -> bool:
    return isinstance(names, list) and all(_local(a) for a in names) \
        and len(set(names)) == len(names)


def _number(v):
    """``v`` if it is a number a plan may hold (bool from a comparison, int at most
    :data:`MAX_INT`, finite float); raises otherwise (complex, huge, inf, nan)."""
    if type(v) in (int, bool):
        _require(abs(v) <= MAX_INT, "a number out of range")
    else:
        _require(type(v) is float and math.isfinite(v), "a number that is not finite")
    return v


def _fold(op: str, a, b):
    """What Python computes for ``a op b`` on two numbers, as the compiled function would
    at run time: checked here so that no plan raises, hangs or overflows there."""
    if op == "pow" and type(a) is int and type(b) is int and b > 0 and abs(a) > 1:
        _require(b * (abs(a).bit_length() - 1) <= 53, "a number out of range")
    try:
        if op in _BINARY:
            v = {"add": lambda: a + b, "sub": lambda: a - b, "mul": lambda: a * b,
                 "div": lambda: a / b, "pow": lambda: a ** b}[op]()
        else:
            v = {"lt": a < b, "le": a <= b, "gt": a > b, "ge": a >= b, "eq": a == b,
                 "ne": a != b}[op]
    except (ArithmeticError, ValueError):
        raise PlanError("arithmetic on numbers that fails") from None
    return _number(v)


class _Budget:
    ops = 0


def _expr(e, scope: dict, depth: int, budget: _Budget):
    """Check one expression; its value if it is a number (computed from numbers only), else
    None (an array at run time)."""
    _require(depth <= MAX_DEPTH, "an expression nested too deep")
    budget.ops += 1
    _require(budget.ops <= MAX_OPS, "a plan too large")
    if type(e) is str:
        _require(e in scope, "a name that is not an argument or an earlier temporary")
        return scope[e]
    if type(e) in (int, float):
        return _number(e)
    _require(type(e) is list and len(e) >= 2 and type(e[0]) is str, "not an expression")
    op, *args = e
    if op in _UNARY:
        _require(len(args) == 1, "an operation with the wrong number of operands")
        v = _expr(args[0], scope, depth + 1, budget)
        return None if v is None else _number(-v if op == "neg" else +v)
    if op in _BINARY or op in _COMPARE:
        _require(len(args) == 2, "an operation with the wrong number of operands")
        a, b = (_expr(x, scope, depth + 1, budget) for x in args)
        return None if a is None or b is None else _fold(op, a, b)
    _require(op == "call", "an operation outside the plan vocabulary")
    f, *fargs = args
    _require(type(f) is str and f in CALLS, "a call outside the plan vocabulary")
    _require(len(fargs) == CALLS[f], "a call with the wrong number of arguments")
    vals = [_expr(x, scope, depth + 1, budget) for x in fargs]
    # an array or a number first (sqrt(2): SymPy prints a constant's root as a call), then
    # the function's parameters, which are numbers
    _require(all(v is not None for v in vals[1:]),
             "a call whose parameters are not numbers")
    return None


def check_function(fn, args: list[str], budget: _Budget | None = None,
                   outputs: int | None = None) -> None:
    """Raise :class:`PlanError` unless ``fn`` is a function over ``args`` in the
    vocabulary: temporaries assigned once each, before use; a value that is an array (a
    node), or a list of ``outputs`` values (the coefficients)."""
    budget = _Budget() if budget is None else budget
    _require(isinstance(fn, dict) and set(fn) == {"let", "ret"} and _locals(args)
             and isinstance(fn["let"], list))
    scope: dict[str, Any] = dict.fromkeys(args)
    for item in fn["let"]:
        _require(isinstance(item, list) and len(item) == 2 and _local(item[0])
                 and item[0] not in scope, "a temporary that is not a new variable")
        scope[item[0]] = _expr(item[1], scope, 1, budget)
    ret = fn["ret"]
    if outputs is None:
        _require(_expr(ret, scope, 1, budget) is None, "a node whose value is a number")
        return
    _require(type(ret) is list and len(ret) == outputs + 1 and ret[0] == "list",
             "not one value per coefficient")
    for e in ret[1:]:
        _expr(e, scope, 2, budget)


def _label(text) -> bool:
    """A printed label: one line of text (never executed), as the notation prints it."""
    return (isinstance(text, str) and 0 < len(text) <= MAX_LABEL and text.isprintable()
            and not _NOT_IN_LABELS.search(text))


def _node_name(name, lhs: set[str]) -> bool:
    """A forward node's name as the generator writes it: an equation's left-hand side,
    its pre-activation ``v__pre`` or complement ``v__bar``/``v__bar2``…, or a composite
    ``_a1``… (the argument of a product W (…))."""
    if not isinstance(name, str):
        return False
    base = re.sub(r"__(?:pre|bar[0-9]*)\Z", "", name)
    return base in lhs or re.fullmatch(r"_a[0-9]+", name) is not None


def check_plan(plan, cell: Cell, inputs: bool) -> None:
    """Raise :class:`PlanError` unless ``plan`` is a plan of ``cell`` (its state Jacobian's,
    or with ``inputs`` its input Jacobian's) exactly as the generator writes one: the JSON
    shape, every function in the vocabulary (:func:`check_function`), and the wiring
    consistent (every name defined before it is read, products named after their weight and
    vector, every state computed, each reverse step's coefficient the one of its edge)."""
    _require(isinstance(plan, dict) and set(plan) == _PLAN_KEYS
             and type(plan["format"]) is int and plan["format"] == FORMAT)
    _require(plan["wrt"] == ([INPUT] if inputs else list(cell.prev)))
    budget = _Budget()
    dims = cell.param_dims
    matrices = {p for p, d in dims.items() if len(d) == 2}
    lhs = {line.partition("=")[0].strip() for line in cell.equations}
    scope = {INPUT, *cell.prev, *(p for p in dims if p not in matrices)}  # what a node reads
    nodes: set[str] = set()
    groups: dict[tuple[str, ...], int] = {}
    position: dict[object, int] = {}  # node name or group atoms -> index in the forward plan
    _require(isinstance(plan["forward"], list))
    for item in plan["forward"]:
        _require(isinstance(item, dict))
        if set(item) == {"group", "atoms", "weights", "reverse"}:
            arg, atoms, weights = item["group"], item["atoms"], item["weights"]
            _require(isinstance(arg, str) and arg in scope and arg not in dims
                     and type(item["reverse"]) is bool)
            _require(isinstance(weights, list) and len(weights) > 0
                     and all(isinstance(w, str) and w in matrices for w in weights)
                     and atoms == [f"{w}__{arg}" for w in weights]
                     and len(set(atoms)) == len(atoms) and not scope & set(atoms),
                     "a product not named after its weight and vector")
            scope.update(atoms)
            groups[tuple(atoms)] = position[tuple(atoms)] = len(position)
        else:
            _require(set(item) == {"node", "args", "fn"}
                     and _node_name(item["node"], lhs) and item["node"] not in scope
                     and _locals(item["args"]) and set(item["args"]) <= scope,
                     "a node that reads what is not defined before it")
            check_function(item["fn"], item["args"], budget)
            scope.add(item["node"])
            nodes.add(item["node"])
            position[item["node"]] = len(position)
    _require(lhs <= nodes, "an equation that no node computes")
    _require(_locals(plan["coef_args"]) and set(plan["coef_args"]) <= scope)
    layout = plan["layout"]
    sources = nodes | {a for atoms in groups for a in atoms} | set(plan["wrt"])
    _require(isinstance(layout, list) and all(
        isinstance(p, list) and len(p) == 2 and all(isinstance(v, str) for v in p)
        and p[0] in nodes and p[1] in sources for p in layout)
        and len({tuple(p) for p in layout}) == len(layout))
    n = len(layout)
    check_function(plan["coef"], plan["coef_args"], budget, outputs=n)
    # Diagonal per unit (:func:`gateflow.symbolic._derive.diagonal_per_unit`) exactly when
    # the wiring says so: a state plan whose every edge runs between state blocks (no
    # product W v depends on the state), all of one size.
    wiring = not inputs and len(set(cell.block_size.values())) == 1 and all(
        p[0] in cell.state and (p[1] in cell.prev or p[1] in cell.state) for p in layout)
    _require(type(plan["diagonal"]) is bool and plan["diagonal"] == wiring,
             "a diagonal flag that the wiring contradicts")

    def index(v) -> bool:
        return type(v) is int and 0 <= v < n

    # The reverse plan walks the forward plan backwards (each step after the steps of what
    # it feeds) and applies every coefficient exactly once, on its own edge.
    _require(isinstance(plan["reverse"], list))
    used: list[int] = []
    last = len(position)
    for op in plan["reverse"]:
        _require(isinstance(op, list) and len(op) == 3 and isinstance(op[2], list))
        kind, head, body = op
        if kind == "scatter":
            _require(isinstance(head, str) and head in nodes and all(
                isinstance(p, list) and len(p) == 2 and index(p[1])
                and layout[p[1]] == [head, p[0]] for p in body))
            used += [p[1] for p in body]
            at = position[head]
        else:
            _require(kind == "group" and isinstance(head, list)
                     and all(isinstance(a, str) for a in head) and tuple(head) in groups)
            for term in body:
                _require(isinstance(term, list) and len(term) == 2
                         and isinstance(term[1], list))
                sink, pairs = term
                _require(all(isinstance(p, list) and len(p) == 2 and type(p[0]) is int
                             and 0 <= p[0] < len(head) and index(p[1])
                             and layout[p[1]] == [sink, head[p[0]]] for p in pairs))
                used += [p[1] for p in pairs]
            at = position[tuple(head)]
        _require(at < last, "a reverse plan out of order")
        last = at
    _require(sorted(used) == list(range(n)), "a coefficient not applied exactly once")
    direct, labels = plan["direct"], plan["direct_labels"]
    _require(isinstance(direct, dict) and all(type(k) is int for k in direct.values())
             and direct == {b: layout.index([b, f"{b}_prev"]) for b in cell.state
                            if [b, f"{b}_prev"] in layout}, "not the direct path of the cell")
    _require(isinstance(labels, dict) and set(labels) == set(direct) and all(
        isinstance(v, dict) and set(v) == set(LABEL_FORMATS) and all(map(_label, v.values()))
        for v in labels.values()), "a label that is not one line of printed math")


# -- building callables from checked data ------------------------------------------------------

def _ast(e) -> ast.expr:
    """The Python expression of checked data (the inverse of :func:`_data`)."""
    if type(e) is str:
        return ast.Name(e, ast.Load())
    if type(e) in (int, float):
        return ast.Constant(e)
    op, *args = e
    if op in _UNARY:
        return ast.UnaryOp(_UNARY[op](), _ast(args[0]))
    if op in _BINARY:
        return ast.BinOp(_ast(args[0]), _BINARY[op](), _ast(args[1]))
    if op in _COMPARE:
        return ast.Compare(_ast(args[0]), [_COMPARE[op]()], [_ast(args[1])])
    if op == "call":
        return ast.Call(ast.Name(args[0], ast.Load()), [_ast(a) for a in args[1:]], [])
    return ast.List([_ast(a) for a in args], ast.Load())  # "list": checked, nothing else left


def _function_def(name: str, args: list[str], fn: dict) -> ast.FunctionDef:
    body: list[ast.stmt] = [ast.Assign([ast.Name(t, ast.Store())], _ast(v))
                            for t, v in fn["let"]]
    body.append(ast.Return(_ast(fn["ret"])))
    signature = ast.arguments(posonlyargs=[], args=[ast.arg(a) for a in args], vararg=None,
                              kwonlyargs=[], kw_defaults=[], kwarg=None, defaults=[])
    made = ast.FunctionDef(name=name, args=signature, body=body, decorator_list=[],
                           returns=None)
    if "type_params" in ast.FunctionDef._fields:  # Python 3.12 on
        setattr(made, "type_params", [])  # noqa: B010 - not in older typeshed stubs
    return made


@cache
def _globals(backend: str) -> dict:
    """What a built function can reach: the vocabulary's functions for ``backend``, no
    builtins."""
    xp = get_backend(backend).xp
    own = namespace(xp)
    return {"__builtins__": {}, **{f: own[f] if f in own else getattr(xp, f) for f in CALLS}}


def build(plan, cell: Cell, inputs: bool, backend: str) -> tuple[list[Callable[..., Any]],
                                                                    Callable[..., Any]]:
    """The forward nodes' functions (in the order of ``plan["forward"]``'s nodes) and the
    coefficient function of ``plan``, after :func:`check_plan`: each is the Python function
    whose AST is built here from the data, called with its arguments in order."""
    check_plan(plan, cell, inputs)
    node_items = [item for item in plan["forward"] if "node" in item]
    defs: list[ast.stmt] = [_function_def(f"_node{i}", item["args"], item["fn"])
                            for i, item in enumerate(node_items)]
    defs.append(_function_def("_coefficients", plan["coef_args"], plan["coef"]))
    module = ast.fix_missing_locations(ast.Module(body=defs, type_ignores=[]))
    code = compile(module, f"<gateflow plan {cell.name[:64]}>", "exec", dont_inherit=True)
    scope = dict(_globals(backend))
    exec(code, scope)  # noqa: S102 - an AST built above from checked data: defines functions
    return [scope[f"_node{i}"] for i in range(len(node_items))], scope["_coefficients"]

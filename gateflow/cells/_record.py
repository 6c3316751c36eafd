"""A recurrent cell as data: its equations, parsed once and validated on construction.

Notation (shared by every module of gateflow):

* ``x`` is the input x_t; a state block ``s`` (``h``, and ``c`` for the LSTM family) is the
  new value s_t and ``s_prev`` the previous value s_{t−1}. Every other left-hand side is a
  gate or intermediate at time t (``i, f, g, o`` for the LSTM, ``r, z, n`` for the GRU).
* ``W @ v`` is a matrix–vector product with a weight matrix; ``*``, ``+``, ``-`` are
  elementwise. Other parameters are vectors (biases, peepholes, IndRNN's recurrent weights).
* Weights applied to ``x`` are (n, d); every other weight is (n, n); vectors are (n,).

A cell is a frozen record in the spirit of a Butcher tableau: declare it once, the
constructor checks it (every free symbol declared, every state block updated, every
parameter and intermediate used), and :mod:`gateflow.symbolic._derive` does the calculus.
"""

from __future__ import annotations

import ast
import keyword
from dataclasses import dataclass, field
from functools import cache, cached_property
from typing import TYPE_CHECKING

from gateflow._errors import GateflowError
from gateflow.cells._activations import ACTIVATIONS
from gateflow.cells._block import Block
from gateflow.cells._symbols import INPUT

if TYPE_CHECKING:  # SymPy is imported on first use only (see Cell.system)
    import sympy as sp


@dataclass(frozen=True)
class MatVecAtom:
    """One product ``weight @ arg`` of a cell, an opaque scalar ``symbol`` in expressions."""

    symbol: sp.Symbol
    weight: str
    arg: str  # "x", "<s>_prev", a defined node, or a composite node "_a<k>"


@dataclass(frozen=True)
class System:
    """The parsed equations: everything the derivation and the evaluators need."""

    defs: tuple[tuple[sp.Symbol, sp.Expr], ...]  # (node, rhs) in evaluation order
    composites: frozenset[str]  # nodes introduced for a non-symbol matvec argument
    matvecs: tuple[MatVecAtom, ...]
    # matrices/vectors fall out of lowering and agree with Cell.matrices/Cell.vectors
    # (computed by _validate), which are the source of truth; these are kept for tests.
    matrices: dict[str, str]  # weight name -> "input" (n × d) or "recurrent" (n × n)
    vectors: tuple[str, ...]
    order: tuple[str, ...]  # defined nodes and matvec symbols, in a valid evaluation order
    pretty: dict[str, sp.Expr]  # node -> rhs as written, with MatVec(W, v) kept (for display)

    @cached_property
    def rhs(self) -> dict[str, sp.Expr]:
        return {s.name: e for s, e in self.defs}

    @cached_property
    def matvec_by_symbol(self) -> dict[str, MatVecAtom]:
        return {m.symbol.name: m for m in self.matvecs}


@cache
def _weight_class():
    import sympy as sp

    from gateflow.cells._functions import MatVec

    class _Weight(sp.Symbol):
        """Parameter symbol during parsing only: ``W @ v`` builds ``MatVec(W, v)``."""

        def __matmul__(self, other):
            return MatVec(sp.Symbol(self.name), sp.sympify(other))

    return _Weight


_FUNCTIONS = frozenset(ACTIVATIONS)
_FUNCTIONS_SPELLED = tuple(a.spelled for a in ACTIVATIONS.values())


def _constant(node: ast.AST) -> bool:
    """A number written in an equation: ``2``, ``-1/6``, ``0.5`` (an activation's
    parameter)."""
    if isinstance(node, ast.Constant):
        return type(node.value) in (int, float)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        return _constant(node.operand)
    return (isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Div, ast.Mult, ast.Add,
                                                                 ast.Sub))
            and _constant(node.left) and _constant(node.right))


def _validate(cell: Cell) -> tuple[dict[str, str], tuple[str, ...]]:
    """Check a cell's declaration with ``ast``; return (matrices, vectors).

    Every equation is ``name = expression`` over x, previous states, parameters and names
    defined above; ``W @ v`` needs a declared W and is the only use of W; functions are
    the activations of :mod:`gateflow.cells._activations`, their parameters numbers after
    the argument (``hard_sigmoid(a, 1/5, 1/2)``); every state block is updated; every
    parameter and intermediate is used."""
    where = f"cell {cell.name!r}"
    for p in (*cell.state, *cell.params):
        if not p.isidentifier() or keyword.iskeyword(p):
            raise GateflowError(f"{where}: {p!r} is not a valid name for a state block or "
                                "parameter; use letters, digits and _")
        if p in _FUNCTIONS:
            raise GateflowError(f"{where}: {p!r} is the name of an activation; choose another "
                                "name for the state block or parameter")
    if len(set(cell.params)) != len(cell.params):
        raise GateflowError(f"{where}: a parameter is declared twice in {cell.params}")
    if not cell.state or len(set(cell.state)) != len(cell.state):
        raise GateflowError(f"{where}: state blocks {cell.state} must be distinct and non-empty")
    known = {INPUT, *cell.prev}
    params = set(cell.params)
    defined: list[str] = []
    matrices: dict[str, str] = {}
    used: set[str] = set()
    elementwise: set[str] = set()  # parameters used other than left of '@
    for line in cell.equations:
        lhs, sep, rhs = line.partition("=")
        lhs = lhs.strip()
        if not sep or not lhs.isidentifier() or keyword.iskeyword(lhs):
            raise GateflowError(f"{where}: equation {line!r} is not of the form "
                                "'name = expression'")
        if lhs in known or lhs in params or lhs in defined or lhs in _FUNCTIONS:
            raise GateflowError(f"{where}: {lhs!r} is defined twice or shadows an input, "
                             "previous state, parameter or activation")
        try:
            tree = ast.parse(rhs.strip(), mode="eval")
        except SyntaxError as exc:
            raise GateflowError(f"{where}: cannot parse {line!r}: {exc.msg}") from None
        scope = known | params | set(defined)
        matmul_lefts = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.MatMult):
                w = node.left
                if not isinstance(w, ast.Name) or w.id not in params:
                    raise GateflowError(f"{where}: {line!r}: the left of '@' must be a declared "
                                     "parameter (a matrix)")
                if any(isinstance(m, ast.BinOp) and isinstance(m.op, ast.MatMult)
                       for m in ast.walk(node.right)):
                    raise GateflowError(f"{where}: nested products such as W @ (U @ h) are not "
                                     "supported")
                arg = node.right
                if isinstance(arg, ast.Name) and arg.id in params:
                    raise GateflowError(f"{where}: {w.id} @ {arg.id} multiplies a parameter")
                kind = "input" if isinstance(arg, ast.Name) and arg.id == INPUT else "recurrent"
                if matrices.setdefault(w.id, kind) != kind:
                    raise GateflowError(f"{where}: {w.id} multiplies both x and a "
                                        "state-sized vector")
                matmul_lefts.add(id(w))
            elif isinstance(node, ast.Call):
                f = node.func
                name = f.id if isinstance(f, ast.Name) else ast.unparse(f)
                if not isinstance(f, ast.Name) or f.id not in _FUNCTIONS or node.keywords:
                    raise GateflowError(f"{where}: {line!r} uses unsupported functions "
                                        f"[{name!r}]; known: {', '.join(_FUNCTIONS_SPELLED)}")
                takes = len(ACTIVATIONS[f.id].params)
                if len(node.args) != 1 + takes or not all(_constant(a) for a in node.args[1:]):
                    raise GateflowError(f"{where}: {line!r}: {name} takes its argument then "
                                        f"{takes} number(s), {ACTIVATIONS[f.id].spelled}")
            elif not isinstance(node, (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Name,
                                       ast.Constant, ast.Load, ast.operator, ast.unaryop)):
                raise GateflowError(f"{where}: cannot parse {line!r}: {type(node).__name__} "
                                 "is not allowed in an equation")
            elif isinstance(node, ast.BinOp) and not isinstance(
                    node.op, (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Pow)):
                raise GateflowError(f"{where}: cannot parse {line!r}: operator "
                                 f"{type(node.op).__name__} is not allowed")
        names = [n for n in ast.walk(tree) if isinstance(n, ast.Name)
                 and not (isinstance(n.ctx, ast.Load) and n.id in _FUNCTIONS
                          and n.id not in scope)]
        calls = {id(c.func) for c in ast.walk(tree) if isinstance(c, ast.Call)}
        names = [n for n in names if id(n) not in calls]
        unknown = sorted({n.id for n in names} - scope)
        if unknown:
            raise GateflowError(f"{where}: {line!r} uses undeclared symbols {unknown}")
        elementwise |= {n.id for n in names if n.id in params and id(n) not in matmul_lefts}
        used |= {n.id for n in names}
        defined.append(lhs)
    missing = [b for b in cell.state if b not in defined]
    if missing:
        raise GateflowError(f"{where}: state blocks {missing} have no update equation")
    both = sorted(elementwise & set(matrices))  # in either order across equations
    if both:
        raise GateflowError(f"{where}: {both[0]} is used as a matrix and elementwise")
    vectors = tuple(p for p in cell.params if p not in matrices)
    unused = [p for p in cell.params if p not in used]
    if unused:
        raise GateflowError(f"{where}: parameters {unused} are declared but never used")
    idle = [d for d in defined if d not in cell.state and d not in used]
    if idle:
        raise GateflowError(f"{where}: {idle[0]!r} is computed but never used")
    return matrices, vectors


#: The size of x, and the default size of a state block: d and n.
INPUT_SIZE, HIDDEN_SIZE = "d", "n"


def _infer_sizes(cell: Cell, matrices: dict[str, str]) -> tuple[dict[str, str],
                                                                dict[str, tuple[str, ...]]]:
    """The size of every node and the dimensions of every parameter, by unification.

    x has size d, each state block the size :attr:`Cell.sizes` gives it (n by default), and
    its previous value the same. Elementwise operations make their operands one size;
    ``W @ v`` makes W's columns v's size and the result W's rows. A size that nothing fixes
    is n. Two different named sizes meeting is an error. Returns (node -> size name,
    parameter -> its dimension names: (rows, cols) for a matrix, (rows,) for a vector)."""
    where = f"cell {cell.name!r}"
    parent: dict[str, str] = {}

    def find(a: str) -> str:
        parent.setdefault(a, a)
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    def union(a: str | None, b: str | None, line: str) -> str | None:
        if a is None or b is None:
            return a if b is None else b
        ra, rb = find(a), find(b)
        if ra == rb:
            return ra
        if ra.startswith("=") and rb.startswith("="):
            raise GateflowError(f"{where}: {line!r} mixes sizes {ra[1:]} and {rb[1:]}")
        if ra.startswith("="):
            ra, rb = rb, ra
        parent[ra] = rb  # a named size stays the root
        return rb

    def size(node: ast.AST, line: str) -> str | None:
        if isinstance(node, ast.Constant):
            return None
        if isinstance(node, ast.Name):
            return f"node:{node.id}"
        if isinstance(node, ast.UnaryOp):
            return size(node.operand, line)
        if isinstance(node, ast.Call):
            return size(node.args[0], line)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.MatMult):
            assert isinstance(node.left, ast.Name)  # validated: a parameter name
            w = node.left.id
            union(f"cols:{w}", size(node.right, line), line)
            return f"rows:{w}"
        if isinstance(node, ast.BinOp):
            return union(size(node.left, line), size(node.right, line), line)
        raise AssertionError(f"unvalidated syntax {type(node).__name__}")

    block_size = dict(cell.sizes)
    union(f"node:{INPUT}", f"={INPUT_SIZE}", INPUT)
    for s in cell.state:
        union(f"node:{s}", f"={block_size.get(s, HIDDEN_SIZE)}", s)
        union(f"node:{s}_prev", f"node:{s}", s)
    for line in cell.equations:
        lhs, _, rhs = line.partition("=")
        union(f"node:{lhs.strip()}", size(ast.parse(rhs.strip(), mode="eval").body, line), line)

    def name(var: str) -> str:
        root = find(var)
        return root[1:] if root.startswith("=") else HIDDEN_SIZE

    nodes = {v[5:]: name(v) for v in list(parent) if v.startswith("node:")}
    if HIDDEN_SIZE not in nodes.values():
        raise GateflowError(f"{where}: every node has a named size; at least one state block "
                            f"or gate must keep the hidden size {HIDDEN_SIZE!r}")
    dims: dict[str, tuple[str, ...]] = {
        p: (name(f"rows:{p}"), name(f"cols:{p}")) if p in matrices else (name(f"node:{p}"),)
        for p in cell.params}
    return nodes, dims


def _check_fields(cell: Cell) -> None:
    """Types of a Cell's fields: strings, and tuples of strings (a list becomes a tuple, so
    that the frozen cell stays hashable); memory_bias and chrono_partner name parameters."""
    def shown(v) -> str:  # a short, one-line account of a wrong value
        text = " ".join(repr(v).split())
        return text if len(text) <= 60 else f"a {type(v).__name__}"

    for f in ("name", "summary", "reference", "notes"):
        if not isinstance(getattr(cell, f), str):
            raise GateflowError(f"Cell {f} must be a string, got {shown(getattr(cell, f))}")
    if not cell.name:
        raise GateflowError("Cell name must not be empty; give e.g. name='my-rnn'")
    where = f"cell {cell.name!r}"
    for f, example in (("state", "('h',)"), ("params", "('W', 'U', 'b')"),
                       ("equations", "('h = tanh(W @ x + U @ h_prev + b)',)")):
        value = getattr(cell, f)
        if not isinstance(value, (tuple, list)) or not all(isinstance(v, str) for v in value):
            raise GateflowError(f"{where}: {f} must be a tuple of strings, e.g. {example}; "
                                f"got {shown(value)}")
        object.__setattr__(cell, f, tuple(value))
    mb = cell.memory_bias
    if mb is not None and not (isinstance(mb, tuple) and len(mb) == 2 and mb[0] in cell.params
                               and mb[1] in (1, -1) and not isinstance(mb[1], bool)):
        raise GateflowError(f"{where}: memory_bias must be (a parameter, +1 or -1) or None, "
                            f"got {shown(mb)}")
    if cell.chrono_partner is not None and cell.chrono_partner not in cell.params:
        raise GateflowError(f"{where}: chrono_partner must be one of its parameters or None, "
                            f"got {shown(cell.chrono_partner)}")
    sizes = cell.sizes
    if isinstance(sizes, dict):
        sizes = tuple(sizes.items())
    if not isinstance(sizes, (tuple, list)) or not all(
            isinstance(p, (tuple, list)) and len(p) == 2 and p[0] in cell.state
            and isinstance(p[1], str) and p[1].isidentifier() and p[1] != INPUT_SIZE
            for p in sizes) or len({p[0] for p in sizes}) != len(sizes):
        raise GateflowError(f"{where}: sizes must map state blocks to size names other than "
                            f"{INPUT_SIZE!r}, e.g. {{'h': 'p'}}; got {shown(cell.sizes)}")
    # a canonical form (state order, the default n left out), so equal cells compare equal
    given = dict(sizes)
    object.__setattr__(cell, "sizes", tuple(
        (s, given[s]) for s in cell.state if given.get(s, HIDDEN_SIZE) != HIDDEN_SIZE))


@dataclass(frozen=True)
class Cell:
    """A recurrent cell: equations over named symbols, checked on construction.

    Example (the Elman RNN)::

        Cell(name="rnn", summary="Elman RNN, tanh", reference="Elman 1990",
             state=("h",), params=("W", "U", "b"),
             equations=("h = tanh(W @ x + U @ h_prev + b)",))
    """

    name: str
    summary: str
    reference: str
    state: tuple[str, ...]
    params: tuple[str, ...]
    equations: tuple[str, ...]
    #: The bias that opens the memory path, and the sign with which it does (for
    #: ``--gate-bias`` and chrono initialisation): ("b_f", +1) for the LSTM.
    memory_bias: tuple[str, int] | None = None
    #: Bias set to minus the memory bias under chrono initialisation (LSTM's b_i).
    chrono_partner: str | None = None
    notes: str = field(default="", compare=False)
    #: State blocks whose size is not the hidden size n, with their size's name: PyTorch's
    #: projected LSTM has ``(("h", "p"),)`` (h has proj_size units, c has n). Every other
    #: size (gates, weights) follows from the equations (:attr:`param_dims`).
    sizes: tuple[tuple[str, str], ...] = ()

    def __post_init__(self):
        # Check the fields' types, then the equations now (a malformed cell fails where it is
        # declared), with Python's own parser: cheap, and SymPy is only imported once
        # something is derived.
        _check_fields(self)
        matrices, vectors = _validate(self)
        object.__setattr__(self, "_shapes", (matrices, vectors, *_infer_sizes(self, matrices)))

    @property
    def matrices(self) -> dict[str, str]:
        """Weight matrices: ``"input"`` (applied to x, shape (n, d)) or ``"recurrent"`` (n, n)."""
        return self.__dict__["_shapes"][0]

    @property
    def vectors(self) -> tuple[str, ...]:
        """Parameters used elementwise (biases, peepholes), shape (n,)."""
        return self.__dict__["_shapes"][1]

    @property
    def node_sizes(self) -> dict[str, str]:
        """Size name of every node (x, states, their previous values, gates): ``"d"`` for
        x, ``"n"`` for most, whatever :attr:`sizes` names for a state block."""
        return self.__dict__["_shapes"][2]

    @property
    def param_dims(self) -> dict[str, tuple[str, ...]]:
        """Each parameter's dimensions by size name: ``("n", "d")`` for W_i, ``("n", "n")``
        for U_i, ``("n",)`` for b_i; the projected LSTM's ``P`` is ``("p", "n")``."""
        return self.__dict__["_shapes"][3]

    @property
    def block_size(self) -> dict[str, str]:
        """State block -> its size name (``"n"`` unless :attr:`sizes` says otherwise)."""
        return {s: self.node_sizes[s] for s in self.state}

    @property
    def size_names(self) -> tuple[str, ...]:
        """The size names of the cell other than d: ``("n",)``, or ``("n", "p")``."""
        names = {x for dims in self.param_dims.values() for x in dims} | set(
            self.block_size.values())
        return (HIDDEN_SIZE, *sorted(names - {HIDDEN_SIZE, INPUT_SIZE}))

    # -- names ---------------------------------------------------------------------------
    @property
    def prev(self) -> tuple[str, ...]:
        """Names of the previous-state symbols, in state order (``h_prev``, ``c_prev``)."""
        return tuple(f"{s}_prev" for s in self.state)

    @property
    def blocks(self) -> tuple[Block, ...]:
        """Jacobian blocks ``"X/Y"`` = ∂X_t/∂Y_{t−k}, outputs-major in state order."""
        return tuple(Block(a, b) for a in self.state for b in self.state)

    @property
    def input_blocks(self) -> tuple[Block, ...]:
        """Input-sensitivity blocks ``"X/x"``, in state order: ∂X_T/∂x_{T−k} at input lag
        k = 0..T−1 (x_T, the last input, is read by step T: lag 0)."""
        return tuple(Block(s, INPUT) for s in self.state)

    @property
    def memory_state(self) -> str:
        """The state block that carries the cell's memory, whose direct path s_{t−1} → s_t
        is the gated cell path: the cell state ``c`` if the cell has one, else its last
        state block (``h``). The one rule every job, figure and notebook uses."""
        return "c" if "c" in self.state else self.state[-1]

    @property
    def memory_block(self) -> Block:
        """The Jacobian block of the memory, ``"s/s"`` for :attr:`memory_state` (``c/c``
        for the LSTM family, ``h/h`` otherwise)."""
        return Block(self.memory_state, self.memory_state)

    @cached_property
    def gates(self) -> tuple[str, ...]:
        """Defined nodes that are not state blocks (gates and intermediates), in order."""
        return tuple(
            s.name for s, _ in self.system.defs
            if s.name not in self.state and s.name not in self.system.composites
        )

    # -- parsing -------------------------------------------------------------------------
    @cached_property
    def system(self) -> System:
        """The equations as SymPy expressions (parsed on first use, for the derivation).

        Translation only: ``_validate`` has already checked the declaration (it runs in
        ``__post_init__``), so nothing here re-checks it."""
        import sympy as sp
        from sympy.parsing.sympy_parser import (
            parse_expr,
            rationalize,
            standard_transformations,
        )

        from gateflow.cells._functions import ACTIVATIONS

        # numbers are exact: 0.2 in an equation is 1/5
        transformations = (*standard_transformations, rationalize)
        _Weight = _weight_class()
        where = f"cell {self.name!r}"
        params = {p: _Weight(p) for p in self.params}
        local: dict[str, sp.Basic] = {n: sp.Symbol(n) for n in (INPUT, *self.prev)}
        local.update(params)
        global_dict = {"Integer": sp.Integer, "Float": sp.Float, "Rational": sp.Rational,
                       "Add": sp.Add, "Mul": sp.Mul, "Pow": sp.Pow,
                       "Symbol": sp.Symbol, **ACTIVATIONS}
        plain = {w: sp.Symbol(p) for p, w in params.items()}

        pretty: dict[str, sp.Expr] = {}
        parsed: list[tuple[sp.Symbol, sp.Expr]] = []
        for line in self.equations:
            lhs, _, rhs_text = line.partition("=")
            lhs = lhs.strip()
            try:
                rhs = parse_expr(rhs_text, local_dict=dict(local), global_dict=global_dict,
                                 transformations=transformations)
            except Exception as exc:  # e.g. a string constant, which ast lets through
                raise GateflowError(f"{where}: cannot parse {line!r}: "
                                    f"{' '.join(str(exc).split())[:120]}") from None
            pretty[lhs] = parse_expr(rhs_text, local_dict=dict(local), global_dict=global_dict,
                                     transformations=transformations,
                                     evaluate=False).xreplace(plain)
            parsed.append((sp.Symbol(lhs), rhs.xreplace(plain)))
            local[lhs] = sp.Symbol(lhs)
        return _lower(self, parsed, pretty)

    # -- as data ---------------------------------------------------------------------------
    def to_record(self) -> dict[str, object]:
        """The cell as plain JSON data: every field that defines it (``RECORD_FIELDS``),
        so that a saved result names its equations, not only its name, and
        :meth:`from_record` rebuilds the same cell in any process (a stack or a cell
        declared in a script included: nothing needs to be registered first)."""
        return {
            "name": self.name, "summary": self.summary, "reference": self.reference,
            "state": list(self.state), "params": list(self.params),
            "equations": list(self.equations),
            "memory_bias": None if self.memory_bias is None else list(self.memory_bias),
            "chrono_partner": self.chrono_partner, "notes": self.notes,
            "sizes": [list(p) for p in self.sizes],
        }

    @classmethod
    def from_record(cls, record: object) -> Cell:
        """The cell :meth:`to_record` wrote (read back from a file: every field is checked
        as a declared cell's is, equations by ``ast``, never executed); a
        :class:`GateflowError` for anything else."""
        if not isinstance(record, dict) or not all(isinstance(k, str) for k in record):
            raise GateflowError(f"a cell record must be a JSON object of the fields "
                                f"{', '.join(RECORD_FIELDS)}; got a {type(record).__name__}")
        unknown = sorted(set(record) - set(RECORD_FIELDS))
        missing = [f for f in ("name", "state", "params", "equations") if f not in record]
        if unknown or missing:
            what = (f"unknown field {unknown[0]!r}" if unknown
                    else f"no field {missing[0]!r}")
            raise GateflowError(f"a cell record has {what}; its fields are "
                                f"{', '.join(RECORD_FIELDS)}")
        fields = dict(record)
        mb = fields.get("memory_bias")
        if isinstance(mb, list):  # JSON has no tuples; Cell checks the parts
            fields["memory_bias"] = tuple(mb)
        sizes = fields.get("sizes", ())
        if isinstance(sizes, list):
            fields["sizes"] = tuple(tuple(p) if isinstance(p, list) else p for p in sizes)
        fields.setdefault("summary", "")
        fields.setdefault("reference", "")
        return cls(**fields)

    def __repr__(self) -> str:
        return f"Cell({self.name!r}: {self.summary})"

    def _repr_latex_(self) -> str:
        from gateflow.cells._notation import equations_latex

        return "$\\displaystyle " + equations_latex(self) + "$"


#: The fields of :meth:`Cell.to_record`: everything that makes a cell (its equations, the
#: names they use, the memory gate and the block sizes), in declaration order.
RECORD_FIELDS = ("name", "summary", "reference", "state", "params", "equations",
                 "memory_bias", "chrono_partner", "notes", "sizes")


def _lower(cell: Cell, parsed, pretty) -> System:
    """Replace every ``MatVec(W, v)`` by an opaque symbol, giving composite ``v`` a node.

    Translation only (the cell was validated by :func:`_validate` on construction)."""
    import sympy as sp

    from gateflow.cells._functions import MatVec

    matrices: dict[str, str] = {}
    atoms: dict[tuple[str, str], MatVecAtom] = {}
    composites: dict[sp.Expr, str] = {}
    defs: list[tuple[sp.Symbol, sp.Expr]] = []
    def lower(expr: sp.Expr) -> sp.Expr:
        subs = {}
        for mv in sorted(expr.atoms(MatVec), key=sp.default_sort_key):
            weight, arg = mv.args
            if isinstance(arg, sp.Symbol):
                arg_name = arg.name
            else:
                arg_name = composites.get(arg)
                if arg_name is None:
                    arg_name = f"_a{len(composites) + 1}"
                    composites[arg] = arg_name
                    inner = lower(arg)
                    defs.append((sp.Symbol(arg_name), inner))
                    pretty[arg_name] = arg
            matrices.setdefault(weight.name, "input" if arg_name == INPUT else "recurrent")
            key = (weight.name, arg_name)
            if key not in atoms:
                atoms[key] = MatVecAtom(sp.Symbol(f"{weight.name}__{arg_name}"), weight.name,
                                        arg_name)
            subs[mv] = atoms[key].symbol
        return expr.xreplace(subs)

    for node, rhs in parsed:
        defs.append((node, lower(rhs)))

    # Evaluation order: each product W @ v right after v exists, grouped by v, so that the
    # evaluators can stack every weight applied to the same vector into one GEMM.
    order: list[str] = []
    def emit_products(arg: str):
        order.extend(a.symbol.name for a in atoms.values() if a.arg == arg)
    for arg in (INPUT, *cell.prev):
        emit_products(arg)
    for node, _ in defs:
        order.append(node.name)
        emit_products(node.name)

    return System(
        defs=tuple(defs),
        composites=frozenset(composites.values()),
        matvecs=tuple(atoms.values()),
        matrices=matrices,
        vectors=tuple(p for p in cell.params if p not in matrices),
        order=tuple(order),
        pretty=pretty,
    )

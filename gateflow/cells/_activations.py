"""Activations as declared parameters of a cell: their names, their parameters, and the
names of cell variants that carry them (``lstm[gate=hard_sigmoid(0.2,0.5)]``).

A cell family's equations call a function in each of its *roles*:

* ``gate``: σ of the LSTM's i, f, o (the CIFG LSTM's i, o), the GRU's r, z, the MGU's f and
  minimalRNN's u;
* ``candidate``: the LSTM's g, the GRU's and MGU's n, the Elman RNN's and IndRNN's h,
  minimalRNN's z;
* ``output``: the LSTM's tanh in h = o ⊙ tanh(c).

A *variant* is the family's equations with the function of some roles replaced
(:func:`rewrite_equations`: the function name in the role's equations, nothing else), so the
one derivation engine differentiates it like any declared cell. Its canonical name lists
the roles that differ from the family's default, in the order gate, candidate, output::

    lstm[gate=hard_sigmoid(0.2,0.5)]
    gru[gate=hard_sigmoid(0.2,0.5),candidate=relu]
    rnn[candidate=elu(1)]

``rnn[candidate=relu]`` is the declared ``rnn-relu`` (and ``rnn-relu[candidate=tanh]`` is
``rnn``); a name whose roles are all the defaults is the family's own name.

**Parameters** are exact rationals. A decimal written in a name (``0.2``) is the decimal
(1/5); ``1/6`` is one sixth. A parameter given as a float (a reader's attribute) is snapped
to the simplest number that rounds to it: its shortest decimal when that has at most 12
significant digits, else a fraction with denominator at most 1000 that rounds to the same
float (``1/6`` from 0.16666666666666666), else, for a float32 value, a fraction with
denominator at most 100 or its shortest float32 decimal (0.2 from 0.20000000298023224).
The canonical spelling is a decimal with at most six places (``0.2``, ``0.01``, ``1``),
else ``p/q`` (``1/6``): stable, and read back to the same number.

Nothing here imports SymPy: the functions themselves (with their derivatives in their own
values) are :mod:`gateflow.cells._functions`, their array code
:mod:`gateflow.numeric._plan` (``namespace``).
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from numbers import Integral, Real

from gateflow._errors import GateflowError
from gateflow._validate import closest, shown

__all__ = ["ACTIVATIONS", "FAMILIES", "ROLES", "Activation", "activation_text", "canonical",
           "exact", "kink_notes", "number_text", "parse_activation", "parse_name",
           "rewrite_equations", "split_top", "variant_name"]

#: The roles a family's activations play, in the order names list them.
ROLES = ("gate", "candidate", "output")

Params = tuple[Fraction, ...]


def _positive(name: str) -> Callable[[Params], str | None]:
    return lambda p: None if p[0] > 0 else f"{name}'s alpha must be > 0"


def _nonnegative(name: str) -> Callable[[Params], str | None]:
    return lambda p: None if p[0] >= 0 else f"{name}'s alpha must be >= 0"


def _nonzero_alpha(p: Params) -> str | None:
    return None if p[0] != 0 else "scaled_tanh's alpha must not be 0"


@dataclass(frozen=True)
class Activation:
    """One activation function: ``name(a, *params)``.

    Attributes:
        name: how names and equations spell it.
        params: its parameters' names, in order (``("alpha", "beta")``).
        formula: what it computes, for messages and help.
        default: the parameters used when a name gives none (``elu`` is ``elu(1)``); None
            when they must be given (``hard_sigmoid``: Keras 2 and PyTorch differ).
        check: a parameter set -> what is wrong with it, or None.
        kink: parameters -> the convention at its kinks ("" where it is differentiable).
    """

    name: str
    params: tuple[str, ...] = ()
    formula: str = ""
    default: Params | None = None
    check: Callable[[Params], str | None] | None = None
    kink: Callable[[Params], str] | None = None

    @property
    def spelled(self) -> str:
        """``hard_sigmoid(alpha,beta)``, or ``tanh``."""
        return f"{self.name}({','.join(self.params)})" if self.params else self.name


def _hs_kink(p: Params) -> str:
    alpha, beta = p
    if alpha == 0:
        return ""
    lo, hi = sorted((-beta / alpha, (1 - beta) / alpha))
    a, lo_t, hi_t = number_text(alpha), number_text(lo), number_text(hi)
    return (f"hard_sigmoid({a},{number_text(beta)})′(a) = {a} for {lo_t} < a < {hi_t} and 0 "
            f"at a = {lo_t} and a = {hi_t} (as PyTorch's hardsigmoid; TensorFlow's clip "
            f"gives {a} there)")


#: Every activation gateflow knows, by name.
ACTIVATIONS: dict[str, Activation] = {a.name: a for a in (
    Activation("sigmoid", formula="1/(1 + e^(−a))"),
    Activation("tanh", formula="tanh(a)"),
    Activation("relu", formula="max(a, 0)", kink=lambda p: "relu′(0) = 0"),
    Activation("linear", formula="a"),
    Activation("softsign", formula="a/(1 + |a|)"),
    Activation("softplus", formula="log(1 + e^a)"),
    Activation("elu", ("alpha",), "a if a > 0 else alpha·(e^a − 1)", (Fraction(1),),
               _positive("elu"),
               lambda p: "" if p[0] == 1 else
               f"elu({number_text(p[0])})′(0) = {number_text(p[0])}, the negative side's"),
    Activation("leaky_relu", ("alpha",), "a if a > 0 else alpha·a", None,
               _nonnegative("leaky_relu"),
               lambda p: f"leaky_relu({number_text(p[0])})′(0) = {number_text(p[0])}, the "
                         "negative side's"),
    Activation("thresholded_relu", ("alpha",), "a if a > alpha else 0", None,
               _nonnegative("thresholded_relu"),
               lambda p: f"thresholded_relu({number_text(p[0])})′({number_text(p[0])}) = 0, "
                         "the zero side's"),
    Activation("hard_sigmoid", ("alpha", "beta"), "clip(alpha·a + beta, 0, 1)", None, None,
               _hs_kink),
    Activation("affine", ("alpha", "beta"), "alpha·a + beta"),
    Activation("scaled_tanh", ("alpha", "beta"), "alpha·tanh(beta·a)", None, _nonzero_alpha),
    Activation("exp", formula="e^a"),
)}

#: Other spellings of the same functions (ONNX's operator names, PyTorch's), lowercased.
#: ``HardSigmoid``/``hardsigmoid`` still need their parameters: the frameworks differ.
_ALIASES = {"identity": "linear", "leakyrelu": "leaky_relu", "thresholdedrelu":
            "thresholded_relu", "scaledtanh": "scaled_tanh", "hardsigmoid": "hard_sigmoid",
            "hard_sigmoid": "hard_sigmoid", "logistic": "sigmoid"}

#: Parameters that make one function another (the canonical name is the simpler one).
_SAME = {("leaky_relu", (Fraction(0),)): ("relu", ()),
         ("leaky_relu", (Fraction(1),)): ("linear", ()),
         ("thresholded_relu", (Fraction(0),)): ("relu", ()),
         ("affine", (Fraction(1), Fraction(0))): ("linear", ()),
         ("scaled_tanh", (Fraction(1), Fraction(1))): ("tanh", ())}


def _known() -> str:
    return ", ".join(a.spelled for a in ACTIVATIONS.values())


# --------------------------------------------------------------------------------------
# Numbers: exact, and spelled one way
# --------------------------------------------------------------------------------------


def _significant(text: str) -> int:
    mantissa = text.lower().split("e")[0].lstrip("-+").replace(".", "").lstrip("0")
    return len(mantissa.rstrip("0")) or 1


def _snap(value: float, single: bool) -> Fraction:
    """The simplest exact number that ``value`` (a float; a float32 one if ``single``)
    stands for (see the module docstring)."""
    import numpy as np

    if not single:
        text = repr(value)
        if _significant(text) <= 12:
            return Fraction(text)
        r = Fraction(value).limit_denominator(1000)
        if float(r) == value:
            return r
        single = float(np.float32(value)) == value
        if not single:
            return Fraction(text)
    f32 = np.float32(value)
    r = Fraction(float(f32)).limit_denominator(100)
    if np.float32(float(r)) == f32:
        return r
    return Fraction(np.format_float_positional(f32, unique=True, trim="-"))


def exact(value, what: str = "parameter") -> Fraction:
    """``value`` (an int, a fraction, a decimal or ``p/q`` string, a float) as an exact
    :class:`~fractions.Fraction`; a :class:`GateflowError` for anything else."""
    if isinstance(value, bool):
        raise GateflowError(f"{what} must be a number, got {shown(value)}")
    if isinstance(value, Fraction):
        return value
    if isinstance(value, Integral):
        return Fraction(int(value))
    if isinstance(value, str):
        try:
            return Fraction(value.strip())
        except (ValueError, ZeroDivisionError):
            raise GateflowError(f"{what} must be a number such as 0.2 or 1/6, got "
                                f"{shown(value)}") from None
    p, q = getattr(value, "p", None), getattr(value, "q", None)  # a SymPy Rational
    if isinstance(p, int) and isinstance(q, int):
        return Fraction(p, q)
    if isinstance(value, Real):
        f = float(value)
        if f != f or f in (float("inf"), float("-inf")):
            raise GateflowError(f"{what} must be finite, got {shown(value)}")
        return _snap(f, type(value).__name__ == "float32")
    raise GateflowError(f"{what} must be a number such as 0.2 or 1/6, got {shown(value)}")


def number_text(q: Fraction) -> str:
    """The canonical spelling of ``q``: a decimal with at most six places, else ``p/q``."""
    den, twos, fives = q.denominator, 0, 0
    while den % 2 == 0:
        den, twos = den // 2, twos + 1
    while den % 5 == 0:
        den, fives = den // 5, fives + 1
    if den == 1 and max(twos, fives) <= 6:
        d = Decimal(q.numerator) / Decimal(q.denominator)  # exact: at most 6 places
        return format(d.normalize(), "f") if d != 0 else "0"
    return f"{q.numerator}/{q.denominator}"


def number_code(q: Fraction) -> str:
    """``q`` as an exact Python/SymPy expression for an equation: ``1/5``, ``-1/6``, ``2``."""
    return str(q.numerator) if q.denominator == 1 else f"{q.numerator}/{q.denominator}"


# --------------------------------------------------------------------------------------
# Activations by name
# --------------------------------------------------------------------------------------

Spec = tuple[str, Params]  # (activation name, its exact parameters)


def split_top(text: str, sep: str = ",") -> list[str]:
    """``text`` split at ``sep`` outside parentheses and brackets."""
    parts, depth, start = [], 0, 0
    for k, ch in enumerate(text):
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append(text[start:k])
            start = k + 1
    parts.append(text[start:])
    return parts


def parse_activation(value, where: str = "activation") -> Spec:
    """An activation as (name, exact parameters), canonical (``leaky_relu(0)`` is relu).

    ``value`` is a string (``"hard_sigmoid(0.2,0.5)"``, ``"elu"``, ONNX's ``"HardSigmoid"``
    spellings included) or a tuple ``(name, *parameters)`` whose parameters may be floats
    (snapped, see the module docstring). ``where`` says what it is for, in messages."""
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], str):
        head, raw = value[0].strip(), list(value[1:])
    elif isinstance(value, str):
        text = value.strip()
        head, paren, rest = text.partition("(")
        head = head.strip()
        if paren:
            if not rest.endswith(")"):
                raise GateflowError(f"{where}: {value!r} is missing its closing ')'; write e.g. "
                                    "hard_sigmoid(0.2,0.5)")
            inner = rest[:-1].strip()
            raw = [t.strip() for t in inner.split(",")] if inner else []
        else:
            raw = []
    else:
        raise GateflowError(f"{where} must be an activation name such as 'tanh' or "
                            f"'hard_sigmoid(0.2,0.5)', got {shown(value)}; known: {_known()}")
    name = head if head in ACTIVATIONS else _ALIASES.get(head.lower(), head.lower())
    act = ACTIVATIONS.get(name)
    if act is None:
        raise GateflowError(f"{where}: unknown activation {head!r}; known: {_known()}")
    if not raw:
        if act.params and act.default is None:
            hint = (" (Keras 2 and ONNX HardSigmoid: hard_sigmoid(0.2,0.5); Keras 3 and "
                    "PyTorch hardsigmoid: hard_sigmoid(1/6,0.5))" if name == "hard_sigmoid"
                    else "")
            raise GateflowError(f"{where}: {name} needs its parameters, {act.spelled}{hint}")
        params = act.default or ()
    else:
        if len(raw) != len(act.params):
            takes = (f"takes {len(act.params)} parameter(s): {act.spelled}" if act.params
                     else "takes no parameters")
            raise GateflowError(f"{where}: {name} {takes}; got {len(raw)}")
        params = tuple(exact(v, f"{where}: {name}'s {p}") for v, p in zip(raw, act.params))
    if act.check is not None:
        bad = act.check(params)
        if bad:
            raise GateflowError(f"{where}: {bad}, got {activation_text((name, params))}")
    return _SAME.get((name, params), (name, params))


def activation_text(spec: Spec) -> str:
    """The canonical spelling: ``hard_sigmoid(0.2,0.5)``, ``hard_sigmoid(1/6,0.5)``, ``tanh``."""
    name, params = spec
    return f"{name}({','.join(number_text(p) for p in params)})" if params else name


def kink_notes(functions: Mapping[str, set[Params]] | list[Spec]) -> list[str]:
    """One line per kinked function among ``functions`` (name -> parameter sets, or a list
    of specs): its derivative at the kinks, the almost-everywhere convention used."""
    if isinstance(functions, Mapping):
        specs = [(n, p) for n, ps in functions.items() for p in sorted(ps)]
    else:
        specs = list(functions)
    out: list[str] = []
    for name, params in specs:
        act = ACTIVATIONS.get(name)
        text = act.kink(params) if act is not None and act.kink is not None else ""
        if text and text not in out:
            out.append(text)
    return out


# --------------------------------------------------------------------------------------
# Families, their roles, and variant names
# --------------------------------------------------------------------------------------

_LSTM = {"gate": ("sigmoid", ("i", "f", "o")), "candidate": ("tanh", ("g",)),
         "output": ("tanh", ("h",))}
_GRU = {"gate": ("sigmoid", ("r", "z")), "candidate": ("tanh", ("n",))}

#: Family -> role -> (its default function, the equations (by left-hand side) that call it).
FAMILIES: dict[str, dict[str, tuple[str, tuple[str, ...]]]] = {
    "rnn": {"candidate": ("tanh", ("h",))},
    "rnn-relu": {"candidate": ("relu", ("h",))},
    "lstm": _LSTM,
    "gru": _GRU,
    "gru-cho": _GRU,
    "lstm-peephole": _LSTM,
    "lstm-cifg": {**_LSTM, "gate": ("sigmoid", ("i", "o"))},
    "lstm-proj": _LSTM,
    "mgu": {"gate": ("sigmoid", ("f",)), "candidate": ("tanh", ("n",))},
    "minimalrnn": {"gate": ("sigmoid", ("u",)), "candidate": ("tanh", ("z",))},
    "indrnn": {"candidate": ("relu", ("h",))},
}

#: Declared cells that are another family's equations with other defaults: rnn-relu is rnn
#: with candidate relu. A variant of either is written from the primary one.
_PRIMARY = {"rnn-relu": "rnn"}


def _roles_text(family: str) -> str:
    return ", ".join(f"{r} ({fn} of {', '.join(nodes)})"
                     for r, (fn, nodes) in FAMILIES[family].items())


def _defaults(family: str) -> dict[str, Spec]:
    return {r: (fn, ()) for r, (fn, _) in FAMILIES[family].items()}


def _family(base: str) -> str:
    if not isinstance(base, str) or base not in FAMILIES:
        raise GateflowError(f"unknown cell family {shown(base)}"
                            f"{closest(base, FAMILIES) if isinstance(base, str) else ''}; "
                            f"activations can be declared for {', '.join(FAMILIES)}")
    return base


def canonical(base: str, roles: Mapping[str, object]) -> tuple[str, str, dict[str, Spec]]:
    """(canonical name, the declared cell to rewrite, the roles that differ from its
    defaults) for family ``base`` with the activations ``roles`` (role -> activation, in any
    form :func:`parse_activation` takes; None means the default)."""
    base = _family(base)
    unknown = [r for r in roles if r not in FAMILIES[base]]
    if unknown:
        raise GateflowError(f"cell {base!r} has no role {shown(unknown[0])}; its roles are "
                            f"{_roles_text(base)}")
    chosen = _defaults(base)
    for role, value in roles.items():
        if value is not None:
            chosen[role] = parse_activation(value, f"{base} {role}")
    primary = _PRIMARY.get(base, base)
    for name in (primary, *(b for b, p in _PRIMARY.items() if p == primary)):
        if _defaults(name) == chosen:
            return name, name, {}
    default = _defaults(primary)
    differ = {r: s for r, s in chosen.items() if s != default[r]}
    inner = ",".join(f"{r}={activation_text(s)}" for r, s in differ.items())
    return f"{primary}[{inner}]", primary, differ


def parse_name(name: str) -> tuple[str, str, dict[str, Spec]]:
    """A cell name with activations, ``"lstm[gate=hard_sigmoid(0.2,0.5)]"``, as
    :func:`canonical` gives it. Spaces are allowed; roles may come in any order."""
    if not isinstance(name, str):
        raise GateflowError(f"cell must be a name such as 'lstm[gate=hard_sigmoid(0.2,0.5)]', "
                            f"got {shown(name)}")
    text = name.strip()
    base, bracket, rest = text.partition("[")
    base = base.strip().lower()  # cell names are case-insensitive, as choose() reads them
    if not bracket:
        return canonical(base, {})
    if not rest.endswith("]") or "[" in rest or "]" in rest[:-1]:
        raise GateflowError(f"cell {name!r}: write activations as family[role=function,...], "
                            "e.g. lstm[gate=hard_sigmoid(0.2,0.5)]")
    _family(base)
    roles: dict[str, object] = {}
    for item in split_top(rest[:-1]):
        if not item.strip():
            continue
        role, eq, fn = item.partition("=")
        role = role.strip()
        if not eq or not fn.strip():
            raise GateflowError(f"cell {name!r}: {item.strip()!r} is not role=function; the "
                                f"roles of {base} are {_roles_text(base)}")
        if role in roles:
            raise GateflowError(f"cell {name!r}: role {role!r} is given twice")
        roles[role] = fn.strip()
    return canonical(base, roles)


def variant_name(base: str, *, gate=None, candidate=None, output=None) -> str:
    """The canonical name of family ``base`` with these activations (None: the default).

    ``variant_name("lstm", gate="hard_sigmoid(0.2,0.5)", candidate="tanh")`` is
    ``"lstm[gate=hard_sigmoid(0.2,0.5)]"``; every role at its default gives ``"lstm"``;
    ``variant_name("rnn", candidate="relu")`` is ``"rnn-relu"``. ``base`` may itself be a
    variant name (its roles are kept unless given here). An activation is a string or a
    tuple ``(name, *parameters)`` (see :func:`parse_activation`)."""
    given = {r: v for r, v in (("gate", gate), ("candidate", candidate), ("output", output))
             if v is not None}
    if isinstance(base, str) and "[" in base:
        _, family, roles = parse_name(base)
        merged: dict[str, object] = {r: activation_text(s) for r, s in roles.items()}
        merged.update(given)
        return canonical(family, merged)[0]
    return canonical(base, given)[0]


def rewrite_equations(equations: tuple[str, ...], family: str,
                      roles: Mapping[str, Spec]) -> tuple[str, ...]:
    """``family``'s equations with each role's function replaced: in the equations the role
    names (by left-hand side), every call of the role's default function becomes a call of
    the new one, its parameters appended as exact numbers (``hard_sigmoid(a, 1/5, 1/2)``)."""
    out = []
    for line in equations:
        lhs, _, rhs = line.partition("=")
        lhs = lhs.strip()
        swap = {FAMILIES[family][r][0]: spec for r, spec in roles.items()
                if lhs in FAMILIES[family][r][1]}
        if not swap:
            out.append(line)
            continue
        tree = ast.parse(rhs.strip(), mode="eval")
        hits = 0
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                    and node.func.id in swap:
                name, params = swap[node.func.id]
                node.func = ast.Name(id=name, ctx=ast.Load())
                node.args = [node.args[0], *(ast.parse(number_code(p), mode="eval").body
                                             for p in params)]
                hits += 1
        if not hits:  # the role table and the declared equations disagree
            raise AssertionError(f"{family}: equation {line!r} calls none of {sorted(swap)}")
        out.append(f"{lhs} = {ast.unparse(tree)}")
    return tuple(out)

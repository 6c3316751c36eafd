"""Activations as declared parameters of the cell families (``lstm[gate=hard_sigmoid(0.2,0.5)]``).

Independent routes, never a value produced by the code under test:

* each derivative rule (written in the function's own value) against SymPy's derivative of
  the function written with SymPy's own Max/Min/Piecewise/exp, and against mpmath at 40
  digits from the textbook formula;
* every block of every variant against SymPy's Jacobian of the explicitly expanded cell
  (``tests/_expand.py``), exactly, at n = 2;
* every lag of ``all_lags`` against float64 PyTorch autograd through a step written here
  with torch's own functions (``F.hardsigmoid``, ``F.elu``, ``F.softsign``, …), and against
  central finite differences;
* the kinks: PyTorch's autograd at the exact kink, against the compiled coefficient there.
"""

from __future__ import annotations

import json
import math
from fractions import Fraction
from functools import cache

import mpmath
import numpy as np
import pytest
import sympy as sp
from _expand import expand
from hypothesis import given, settings
from hypothesis import strategies as st

from gateflow import CELLS, GateflowError, derive, get_cell
from gateflow.cells._activations import (
    ACTIVATIONS,
    FAMILIES,
    exact,
    number_text,
    parse_activation,
    parse_name,
    rewrite_equations,
    variant_name,
)
from gateflow.cells._functions import ACTIVATIONS as FUNCTIONS
from gateflow.cells._functions import explicit
from gateflow.cells._library import VARIANTS
from gateflow.cells._stack import stack
from gateflow.models._params import init_params, make_inputs
from gateflow.numeric._chain import all_lags
from gateflow.numeric._compile import Bound, compile_cell
from gateflow.symbolic._derive import derive_input
from gateflow.symbolic._printing import render

#: One spelling of each activation, parameters included (both hard_sigmoids).
ACTS = ["sigmoid", "tanh", "relu", "linear", "softsign", "softplus", "elu(1)", "elu(0.5)",
        "leaky_relu(0.01)", "thresholded_relu(0.5)", "hard_sigmoid(0.2,0.5)",
        "hard_sigmoid(1/6,0.5)", "affine(0.5,0.25)", "scaled_tanh(1.5,0.75)"]
#: Families whose variants every test covers; the others get a few activations (all with
#: ``-m slow``).
CORE = ["rnn", "lstm", "gru", "gru-cho"]
OTHERS = [f for f in FAMILIES if f not in CORE and f != "rnn-relu"]
SOME = ["relu", "hard_sigmoid(0.2,0.5)", "elu(0.5)", "softsign", "scaled_tanh(1.5,0.75)"]


def every_role(family: str, act: str) -> str:
    """The variant of ``family`` with ``act`` in every one of its roles."""
    return variant_name(family, **{r: act for r in FAMILIES[family]})


def cases(slow_rest: bool = True):
    out = [pytest.param(f, a, id=f"{f}-{a}") for f in CORE for a in ACTS]
    for f in OTHERS:
        for a in ACTS:
            marks = () if a in SOME or not slow_rest else (pytest.mark.slow,)
            out.append(pytest.param(f, a, id=f"{f}-{a}", marks=marks))
    return out


# --------------------------------------------------------------------------------------
# Names: canonical, round trip, one Cell per name, errors
# --------------------------------------------------------------------------------------


def test_canonical_names():
    assert variant_name("lstm") == "lstm"
    assert variant_name("lstm", gate="sigmoid", candidate="tanh", output="tanh") == "lstm"
    assert variant_name("lstm", gate="hard_sigmoid(0.2,0.5)", candidate="tanh",
                        output="tanh") == "lstm[gate=hard_sigmoid(0.2,0.5)]"
    assert variant_name("gru", gate="hard_sigmoid(0.2,0.5)", candidate="relu") \
        == "gru[gate=hard_sigmoid(0.2,0.5),candidate=relu]"
    assert variant_name("rnn", candidate="elu") == "rnn[candidate=elu(1)]"
    # the same number however it is written
    for spelled in ("hard_sigmoid(1/5,1/2)", "hard_sigmoid( 0.20 , 0.5 )",
                    ("hard_sigmoid", 0.2, 0.5), ("HardSigmoid", np.float32(0.2), np.float32(0.5)),
                    ("hard_sigmoid", 0.20000000298023224, 0.5), ("hard_sigmoid", "2e-1", 0.5)):
        assert variant_name("lstm", gate=spelled) == "lstm[gate=hard_sigmoid(0.2,0.5)]", spelled
    for spelled in ("hard_sigmoid(1/6,1/2)", ("hard_sigmoid", 1 / 6, 0.5),
                    ("hard_sigmoid", np.float32(1 / 6), 0.5),
                    ("hard_sigmoid", Fraction(2, 12), 0.5)):
        assert variant_name("lstm", gate=spelled) == "lstm[gate=hard_sigmoid(1/6,0.5)]", spelled
    # a decimal written in a name is that decimal, not a nearby fraction
    assert variant_name("lstm", gate="hard_sigmoid(0.16666667,0.5)") \
        == "lstm[gate=hard_sigmoid(16666667/100000000,0.5)]"
    # roles in the canonical order whatever the order given; defaults dropped
    assert get_cell("lstm[output=relu,gate=hard_sigmoid(0.2,0.5),candidate=tanh]").name \
        == "lstm[gate=hard_sigmoid(0.2,0.5),output=relu]"
    # ONNX and Keras spellings
    assert variant_name("rnn", candidate="Relu") == "rnn-relu"
    assert variant_name("rnn", candidate=("LeakyRelu", 0.01)) == "rnn[candidate=leaky_relu(0.01)]"
    assert variant_name("rnn", candidate=("ScaledTanh", 1.7159, 2 / 3)) \
        == "rnn[candidate=scaled_tanh(1.7159,2/3)]"


def test_parameters_that_make_another_function_take_its_name():
    assert variant_name("rnn", candidate="leaky_relu(0)") == "rnn-relu"
    assert variant_name("rnn", candidate="affine(1,0)") == "rnn[candidate=linear]"
    assert variant_name("rnn", candidate="scaled_tanh(1,1)") == "rnn"
    assert variant_name("rnn", candidate="leaky_relu(1)") == "rnn[candidate=linear]"


def test_rnn_and_rnn_relu_are_one_family():
    assert get_cell("rnn[candidate=relu]") is CELLS["rnn-relu"]
    assert get_cell("rnn-relu[candidate=tanh]") is CELLS["rnn"]
    assert get_cell("rnn-relu[candidate=relu]") is CELLS["rnn-relu"]
    assert variant_name("rnn-relu", candidate="elu") == "rnn[candidate=elu(1)]"
    assert get_cell("rnn-relu[candidate=elu(1)]") is get_cell("rnn[candidate=elu]")
    assert variant_name("indrnn", candidate="relu") == "indrnn"
    assert variant_name("rnn", candidate="tanh") == "rnn"


def test_a_variant_name_as_base_keeps_its_roles():
    base = "lstm[gate=hard_sigmoid(0.2,0.5)]"
    assert variant_name(base) == base
    assert variant_name(base, candidate="relu", output="relu") \
        == "lstm[gate=hard_sigmoid(0.2,0.5),candidate=relu,output=relu]"
    assert variant_name(base, gate="sigmoid") == "lstm"


@pytest.mark.parametrize("family", [f for f in FAMILIES if f != "rnn-relu"])
@pytest.mark.parametrize("act", ACTS)
def test_name_round_trip(family, act):
    name = every_role(family, act)
    cell = get_cell(name)
    assert cell.name == name
    assert parse_name(name)[0] == name  # canonical is a fixed point
    assert get_cell(name) is cell  # made once
    spaced = name.replace(",", " , ").replace("[", " [ ").replace("=", " = ")
    assert get_cell(spaced) is cell
    if name in CELLS:
        assert cell is CELLS[name]
    else:
        assert VARIANTS[name] is cell
    assert cell.state == CELLS[family].state and cell.params == CELLS[family].params
    assert cell.memory_bias == CELLS[family].memory_bias


@pytest.mark.parametrize("family", list(FAMILIES))
def test_rewriting_touches_only_the_roles_equations(family):
    """Each role's equations call the new function, with its parameters, and nothing
    else changes: the rewrite is of names, never of derivatives."""
    base = CELLS[family]
    for role, (default, nodes) in FAMILIES[family].items():
        new = ("hard_sigmoid", (Fraction(1, 5), Fraction(1, 2)))
        eqs = rewrite_equations(base.equations, family, {role: new})
        for old, line in zip(base.equations, eqs):
            lhs = old.partition("=")[0].strip()
            if lhs in nodes:
                assert "hard_sigmoid(" in line and "1 / 5, 1 / 2)" in line, line
                assert line.count("hard_sigmoid(") == old.count(f"{default}("), (old, line)
            else:
                assert line == old


def _one_line_error(fn, *match):
    with pytest.raises(GateflowError) as info:
        fn()
    text = str(info.value)
    assert "\n" not in text
    for m in match:
        assert m in text, text
    return text


def test_errors_say_what_is_allowed():
    _one_line_error(lambda: get_cell("lstm[gate=swish]"), "unknown activation 'swish'",
                    "hard_sigmoid(alpha,beta)", "elu(alpha)", "softsign")
    _one_line_error(lambda: get_cell("gru[output=tanh]"), "no role 'output'",
                    "gate (sigmoid of r, z)", "candidate (tanh of n)")
    _one_line_error(lambda: get_cell("rnn[gate=relu]"), "no role 'gate'", "candidate")
    _one_line_error(lambda: get_cell("lstm[gate=hard_sigmoid]"), "needs its parameters",
                    "hard_sigmoid(0.2,0.5)", "hard_sigmoid(1/6,0.5)")
    _one_line_error(lambda: get_cell("lstm[gate=hard_sigmoid(0.2)]"), "takes 2 parameter(s)")
    _one_line_error(lambda: get_cell("lstm[gate=tanh(2)]"), "takes no parameters")
    _one_line_error(lambda: get_cell("lstm[gate=elu(-1)]"), "alpha must be > 0")
    _one_line_error(lambda: get_cell("lstm[gate=leaky_relu(-0.1)]"), "alpha must be >= 0")
    _one_line_error(lambda: get_cell("lstm[gate=scaled_tanh(0,1)]"), "must not be 0")
    _one_line_error(lambda: get_cell("lstm[gate=elu(nan)]"), "must be a number")
    _one_line_error(lambda: get_cell("lstm[gate=elu(x)]"), "must be a number")
    _one_line_error(lambda: variant_name("lstm", gate=("elu", float("inf"))), "finite")
    _one_line_error(lambda: get_cell("lstm[gate=relu"), "family[role=function")
    _one_line_error(lambda: get_cell("lstm[gate]"), "not role=function", "gate (sigmoid")
    _one_line_error(lambda: get_cell("lstm[gate=relu,gate=tanh]"), "given twice")
    _one_line_error(lambda: get_cell("lstn[gate=relu]"), "did you mean 'lstm'")
    _one_line_error(lambda: get_cell("lstm[gate=elu(1]"), "closing ')'")
    _one_line_error(lambda: variant_name("lstm", gate=3), "activation name")
    _one_line_error(lambda: variant_name("lstm", gate=("elu", True)), "must be a number")
    _one_line_error(lambda: variant_name("foo"), "unknown cell family 'foo'")


def test_declared_cells_refuse_bad_calls():
    from gateflow import Cell

    def cell(eq):
        return Cell(name="t", summary="", reference="", state=("h",), params=("W", "U", "b"),
                    equations=(eq,))

    cell("h = hard_sigmoid(W @ x + U @ h_prev + b, 1/5, 0.5)")  # a user cell may use them
    _one_line_error(lambda: cell("h = hard_sigmoid(W @ x + U @ h_prev + b)"),
                    "takes its argument then 2 number(s)")
    _one_line_error(lambda: cell("h = elu(W @ x + U @ h_prev + b, b)"), "1 number(s)")
    _one_line_error(lambda: cell("h = swish(W @ x + U @ h_prev + b)"), "unsupported functions",
                    "scaled_tanh(alpha,beta)")
    _one_line_error(lambda: Cell(name="t", summary="", reference="", state=("h",),
                                 params=("W", "U", "elu"),
                                 equations=("h = tanh(W @ x + U @ h_prev + elu)",)),
                    "'elu' is the name of an activation")
    _one_line_error(lambda: Cell(name="t", summary="", reference="", state=("h",),
                                 params=("W", "U", "b"),
                                 equations=("linear = W @ x + b", "h = tanh(linear + U @ h_prev)")),
                    "shadows", "activation")


def test_decimals_in_equations_are_exact():
    from gateflow import Cell

    c = Cell(name="t-dec", summary="", reference="", state=("h",), params=("W", "U", "b"),
             equations=("h = hard_sigmoid(W @ x + U @ h_prev + b, 0.2, 0.5)",))
    rhs = c.system.defs[0][1]
    assert rhs.args[1:] == (sp.Rational(1, 5), sp.Rational(1, 2))


_floats = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e6, max_value=1e6)


@settings(max_examples=200, deadline=None)
@given(x=_floats)
def test_float_parameters_snap_to_a_number_that_rounds_to_them(x):
    """Never another float than the one given: the same float64, or, for a float64 that
    is a float32 value (a float32 attribute read into Python), the same float32."""
    q = exact(x)
    if float(np.float32(x)) == x and float(q) != x:
        assert np.float32(float(q)) == np.float32(x)
    else:
        assert float(q) == x
    assert exact(number_text(q)) == q  # the canonical spelling reads back exactly


@settings(max_examples=200, deadline=None)
@given(x=_floats)
def test_float32_parameters_snap_within_float32(x):
    f32 = np.float32(x)
    q = exact(f32)
    assert np.float32(float(q)) == f32
    assert exact(number_text(q)) == q


@settings(max_examples=200, deadline=None)
@given(p=st.integers(-10**6, 10**6), q=st.integers(1, 10**6))
def test_exact_numbers_round_trip(p, q):
    x = Fraction(p, q)
    assert exact(number_text(x)) == x
    text = number_text(x)
    assert "/" in text or "." in text or text.lstrip("-").isdigit()
    name = variant_name("rnn", candidate=("hard_sigmoid", x, Fraction(1, 2)))
    assert parse_name(name)[0] == name
    assert get_cell(name).name == name


# --------------------------------------------------------------------------------------
# Derivative rules, independently
# --------------------------------------------------------------------------------------


def _spec(act: str):
    name, params = parse_activation(act)
    return name, params, [sp.Rational(p.numerator, p.denominator) for p in params]


def mp_value(act: str, a):
    """The textbook function, in mpmath."""
    name, params, _ = _spec(act)
    al, be = ([mpmath.mpf(p.numerator) / p.denominator for p in params] + [None, None])[:2]
    a = mpmath.mpf(a)
    return {
        "sigmoid": lambda: 1 / (1 + mpmath.exp(-a)), "tanh": lambda: mpmath.tanh(a),
        "relu": lambda: max(a, 0), "linear": lambda: a,
        "softsign": lambda: a / (1 + abs(a)), "softplus": lambda: mpmath.log1p(mpmath.exp(a)),
        "elu": lambda: a if a > 0 else al * mpmath.expm1(a),
        "leaky_relu": lambda: a if a > 0 else al * a,
        "thresholded_relu": lambda: a if a > al else mpmath.mpf(0),
        "hard_sigmoid": lambda: min(max(al * a + be, 0), 1),
        "affine": lambda: al * a + be, "scaled_tanh": lambda: al * mpmath.tanh(be * a),
    }[name]()


def mp_slope(act: str, a):
    """The textbook derivative, in mpmath (at a kink: PyTorch's one-sided value)."""
    name, params, _ = _spec(act)
    al, be = ([mpmath.mpf(p.numerator) / p.denominator for p in params] + [None, None])[:2]
    a = mpmath.mpf(a)
    return {
        "sigmoid": lambda: 1 / (1 + mpmath.exp(-a)) / (1 + mpmath.exp(a)),
        "tanh": lambda: mpmath.sech(a) ** 2, "relu": lambda: mpmath.mpf(a > 0),
        "linear": lambda: mpmath.mpf(1), "softsign": lambda: 1 / (1 + abs(a)) ** 2,
        "softplus": lambda: 1 / (1 + mpmath.exp(-a)),
        "elu": lambda: mpmath.mpf(1) if a > 0 else al * mpmath.exp(a),
        "leaky_relu": lambda: mpmath.mpf(1) if a > 0 else al,
        "thresholded_relu": lambda: mpmath.mpf(a > al),
        "hard_sigmoid": lambda: al if 0 < al * a + be < 1 else mpmath.mpf(0),
        "affine": lambda: al, "scaled_tanh": lambda: al * be * mpmath.sech(be * a) ** 2,
    }[name]()


_POINTS = [sp.Rational(k, 4) for k in range(-30, 31, 3)] + [sp.Rational(-19, 2), sp.Rational(21, 2)]


def _kinks(act: str) -> list:
    """Where ``act`` is not differentiable (thresholded_relu: where it jumps)."""
    name, _, p = _spec(act)
    if name in ("relu", "leaky_relu", "elu"):
        return [sp.Integer(0)]
    if name == "thresholded_relu":
        return [p[0]]
    if name == "hard_sigmoid":
        return [-p[1] / p[0], (1 - p[1]) / p[0]]
    return []


@pytest.mark.parametrize("act", ACTS)
def test_derivative_rule_in_own_value(act):
    """fdiff (in the value v) = SymPy's derivative of the explicit function = the textbook
    derivative, at points on both sides of every kink; the explicit function is the
    textbook function."""
    mpmath.mp.dps = 40
    name, _, params = _spec(act)
    a = sp.Symbol("a", real=True)
    f = FUNCTIONS[name](a, *params)
    mine = f.diff(a)
    ref = sp.diff(explicit(f) if name != "tanh" else sp.tanh(a), a)
    free = mine.free_symbols
    assert free <= {a}
    for point in _POINTS:
        if any(abs(point - k) < sp.Rational(1, 100) for k in _kinks(act)):
            continue
        got = sp.N(mine.subs(a, point), 40)
        want = sp.N(ref.subs(a, point), 40)
        assert abs(got - want) < 1e-35, (act, point, got, want)
        assert abs(got - sp.Float(mp_slope(act, point), 40)) < 1e-35, (act, point)
        value = sp.N(explicit(f).subs(a, point) if name != "tanh" else f.subs(a, point), 40)
        assert abs(value - sp.Float(mp_value(act, point), 40)) < 1e-35, (act, point)


@pytest.mark.parametrize("act", ACTS)
def test_derivative_is_written_in_the_value(act):
    """After the derivation writes g = F(a) back as the gate g, the derivative reads in g
    alone: no exponential of a pre-activation, no product symbol."""
    name = every_role("rnn", act)
    coef = dict(derive(name).edges["h"])["U__h_prev"]
    assert {s.name for s in coef.free_symbols} <= {"h"}, coef


# --------------------------------------------------------------------------------------
# Exactness: every block of every variant against SymPy's Jacobian of the expanded cell
# --------------------------------------------------------------------------------------


def assert_zero(diff: sp.Matrix):
    """Exactly zero: first at a random point (fast, certain failure), then expanded."""
    rng = np.random.default_rng(0)
    for k, entry in enumerate(diff):
        point = {s: sp.Float(rng.uniform(-1, 1), 30) for s in entry.free_symbols}
        value = complex(entry.xreplace(point).evalf(30))
        assert abs(value) < 1e-20, f"entry {k} differs by {value:.3g}: {str(entry)[:300]}"
        r = sp.expand(entry)
        if r != 0:
            r = sp.simplify(r)
        assert r == 0, f"entry {k} differs by {str(r)[:300]}"


@cache
def _expansion(name: str, n: int = 2, d: int = 2):
    return expand(get_cell(name), n, d)


def _exact_cases():
    """Every activation in every role of rnn, gru and lstm; the rest with ``-m slow``."""
    fast = ("rnn", "gru", "lstm")
    return [pytest.param(f, a, id=f"{f}-{a}", marks=() if f in fast else (pytest.mark.slow,))
            for f in (*CORE, *OTHERS) for a in ACTS]


@pytest.mark.parametrize("family,act", _exact_cases())
def test_blocks_exact_against_expanded_jacobian(family, act):
    """Every block, expanded and chained, equals SymPy's Jacobian of the cell expanded at
    n = 2 (d = 1), exactly."""
    name = every_role(family, act)
    e = _expansion(name, 2, 1)
    explicit_blocks = {b: e.jacobian(b) for b in e.cell.blocks}
    s = derive(name)
    for b in e.cell.blocks:
        out, inp = b.split("/")
        rows, cols = len(e.values[out]), len(e.prev[inp])
        for chained in (False, True):
            op = s.block(b, chained=chained)
            got = op.to_matrix(rows, e.unit, e.weights, explicit_blocks, cols=cols)
            assert_zero(got - explicit_blocks[b])


@pytest.mark.parametrize("family,act", [
    pytest.param(f, a, id=f"{f}-{a}", marks=() if (f, a) in (
        ("gru", "hard_sigmoid(0.2,0.5)"), ("lstm", "elu(0.5)"), ("minimalrnn", "softsign"))
        else (pytest.mark.slow,)) for f in (*CORE, *OTHERS) for a in ACTS])
def test_input_blocks_exact_against_expanded_jacobian(family, act):
    """∂X_t/∂x_t (n × d, d = 3) equals SymPy's Jacobian of the expanded step in x."""
    name = every_role(family, act)
    e = _expansion(name, 2, 3)
    si = derive_input(name)
    for b in si.blocks:
        rows = len(e.values[b.split("/")[0]])
        got = si.block(b).to_matrix(rows, e.unit, e.weights, cols=e.d)
        assert_zero(got - e.jacobian(b))


# --------------------------------------------------------------------------------------
# Numbers: PyTorch autograd through a hand-written step, finite differences
# --------------------------------------------------------------------------------------


def torch_act(act: str):
    """The activation as PyTorch writes it (float64)."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    name, params = parse_activation(act)
    p = [float(x) for x in params]
    if name == "hard_sigmoid" and params == (Fraction(1, 6), Fraction(1, 2)):
        # PyTorch's definition, relu6(x + 3)/6: F.hardsigmoid's float64 backward multiplies
        # by float32's 1/6 (0.16666667163…), 3e−8 off (test_torch_hardsigmoid_quirk)
        return lambda a: F.relu6(a + 3) / 6
    return {
        "sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": F.relu, "linear": lambda a: a,
        "softsign": F.softsign, "softplus": lambda a: F.softplus(a, beta=1, threshold=50),
        "elu": lambda a: F.elu(a, alpha=p[0]) if p else F.elu(a),
        "leaky_relu": lambda a: F.leaky_relu(a, negative_slope=p[0]),
        "thresholded_relu": lambda a: F.threshold(a, p[0], 0.0),
        "hard_sigmoid": lambda a: torch.clamp(p[0] * a + p[1], 0, 1),
        "affine": lambda a: p[0] * a + p[1],
        "scaled_tanh": lambda a: p[0] * torch.tanh(p[1] * a),
    }[name]


def torch_step(family: str, act: str, p: dict, x, s: dict) -> dict:
    """One step of ``family`` as its paper writes it, with ``act`` in every role."""
    F = torch_act(act)
    gate = cand = out = F
    h = s["h"]

    def lin(w, u, b, hh=h):
        return x @ p[w].T + hh @ p[u].T + p[b]

    if family == "rnn":
        return {"h": cand(lin("W", "U", "b"))}
    if family == "indrnn":
        return {"h": cand(x @ p["W"].T + p["u"] * h + p["b"])}
    if family.startswith("lstm"):
        c = s["c"]
        pi = p["p_i"] * c if family == "lstm-peephole" else 0
        pf = p["p_f"] * c if family == "lstm-peephole" else 0
        i = gate(lin("W_i", "U_i", "b_i") + pi)
        f = 1 - i if family == "lstm-cifg" else gate(lin("W_f", "U_f", "b_f") + pf)
        g = cand(lin("W_g", "U_g", "b_g"))
        c2 = f * c + i * g
        po = p["p_o"] * c2 if family == "lstm-peephole" else 0
        o = gate(lin("W_o", "U_o", "b_o") + po)
        h2 = o * out(c2)
        return {"h": h2 @ p["P"].T if family == "lstm-proj" else h2, "c": c2}
    if family in ("gru", "gru-cho"):
        r = gate(lin("W_r", "U_r", "b_r"))
        z = gate(lin("W_z", "U_z", "b_z"))
        if family == "gru":
            n = cand(x @ p["W_n"].T + p["b_in"] + r * (h @ p["U_n"].T + p["b_hn"]))
        else:
            n = cand(x @ p["W_n"].T + p["b_in"] + (r * h) @ p["U_n"].T + p["b_hn"])
        return {"h": (1 - z) * n + z * h}
    if family == "mgu":
        f = gate(lin("W_f", "U_f", "b_f"))
        n = cand(x @ p["W_n"].T + (f * h) @ p["U_n"].T + p["b_n"])
        return {"h": (1 - f) * h + f * n}
    if family == "minimalrnn":
        z = cand(x @ p["W_x"].T + p["b_z"])
        u = gate(h @ p["U_h"].T + z @ p["U_z"].T + p["b_u"])
        return {"h": u * h + (1 - u) * z}
    raise AssertionError(family)


T, N, D, B = 4, 3, 2, 2


def _problem(name: str, seed: int = 3, sigma_w: float = 1.2):
    params = init_params(name, N, D, scheme="gaussian", sigma_w=sigma_w, sigma_b=0.8, seed=seed)
    x = make_inputs(T, B, D, seed=seed + 1)
    return params, x


def _torch_dense(family, act, cell, params, x):
    """s_0..s_T and the dense ∂s_T/∂s_{T−k} (B, N, N) for every k, by autograd through the
    hand-written step, chained k steps."""
    torch = pytest.importorskip("torch")
    p = {k: torch.from_numpy(np.asarray(v, dtype=np.float64)) for k, v in params.items()}
    xt = torch.from_numpy(x)
    dims = {"h": p["P"].shape[0] if "P" in p else N, "c": N}
    order = list(cell.state)
    cuts = np.cumsum([0, *(dims[b] for b in order)])

    def step(t, vec):
        s = {b: vec[:, cuts[j]:cuts[j + 1]] for j, b in enumerate(order)}
        new = torch_step(family, act, p, xt[t], s)
        return torch.cat([new[b] for b in order], dim=1)

    s = torch.zeros(B, int(cuts[-1]), dtype=torch.float64)
    traj = [s]
    with torch.no_grad():
        for t in range(T):
            s = step(t, s)
            traj.append(s)
    dense = {}
    for k in range(1, T + 1):
        def flow(s0, k=k):
            v = s0
            for t in range(T - k, T):
                v = step(t, v)
            return v

        J = torch.autograd.functional.jacobian(flow, traj[T - k])
        dense[k] = torch.stack([J[b, :, b, :] for b in range(B)]).numpy()
    states = [{b: v[:, cuts[j]:cuts[j + 1]].numpy() for j, b in enumerate(order)} for v in traj]
    return states, dense, dims, cuts


def _close(log10_value, ref, atol, rtol, what):
    got = np.where(np.isneginf(log10_value), 0.0, 10.0 ** np.asarray(log10_value, dtype=float))
    bad = np.abs(got - ref) > atol + rtol * np.abs(ref)
    assert not bad.any(), f"{what}: got {got[bad]}, expected {np.broadcast_to(ref, got.shape)[bad]}"


def check_every_lag(name, params, x, dense, dims, atol=1e-12, rtol=1e-10):
    """Frobenius, spectral and every singular value of every block at every lag."""
    cell = get_cell(name)
    order = list(cell.state)
    first = dict(zip(order, np.cumsum([0, *(dims[b] for b in order)])))
    res = all_lags(name, params, x, singular_lags=tuple(range(1, T + 1)))
    assert set(res.blocks) <= set(cell.blocks) and res.blocks
    for b in cell.blocks:
        if b not in res.blocks:  # a block that is zero by construction (a stack's h_l0/h_l1)
            out, inp = b.split("/")
            assert not np.any(dense[T][:, first[out]:first[out] + dims[out],
                                       first[inp]:first[inp] + dims[inp]])
            continue
        out, inp = b.split("/")
        for k in range(1, T + 1):
            J = dense[k][:, first[out]:first[out] + dims[out], first[inp]:first[inp] + dims[inp]]
            sv = np.linalg.svd(J, compute_uv=False)
            scale = max(1.0, float(np.abs(sv).max()))
            _close(res.blocks[b]["log10_frobenius"][k - 1], np.linalg.norm(J, axis=(1, 2)),
                   atol * scale, rtol, f"{name} {b} lag {k} frobenius")
            _close(res.blocks[b]["log10_spectral"][k - 1], sv[:, 0], atol * scale, rtol,
                   f"{name} {b} lag {k} spectral")
            _close(res.singular_values[k][b], sv, atol * scale + rtol * sv[:, :1], 0,
                   f"{name} {b} lag {k} singular values")


@pytest.mark.parametrize("family,act", cases())
def test_every_lag_against_torch_autograd(family, act):
    pytest.importorskip("torch")
    name = every_role(family, act)
    cell = get_cell(name)
    params, x = _problem(name)
    states, dense, dims, _ = _torch_dense(family, act, cell, params, x)
    # the compiled forward pass is the hand-written one
    bound = Bound(compile_cell(cell), params)
    s = {b: np.zeros((B, dims[b])) for b in cell.state}
    for t in range(T):
        vals = bound.step(x[t], s)
        s = {b: np.asarray(vals[b]) for b in cell.state}
        for b in cell.state:
            np.testing.assert_allclose(s[b], states[t + 1][b], rtol=1e-12, atol=1e-13,
                                       err_msg=f"{name} {b} at t = {t + 1}")
    check_every_lag(name, params, x, dense, {b: dims[b] for b in cell.state})


def _kink_distance(cell, params, x, act) -> float:
    """How close any argument of ``act`` comes to one of its kinks (or, for
    thresholded_relu, its jump) over the run."""
    kinks = [float(k) for k in _kinks(act)]
    if not kinks:
        return math.inf
    name = parse_activation(act)[0]
    calls = [call.args[0] for _, rhs in cell.system.defs for call in rhs.atoms(sp.Function)
             if type(call).__name__ == name]
    fns = [(sorted(e.free_symbols, key=str), e) for e in calls]
    fns = [(syms, sp.lambdify(syms, e, "numpy")) for syms, e in fns]
    bound = Bound(compile_cell(cell), params)
    s = {b: np.zeros((B, bound.dim[b])) for b in cell.state}
    args = []
    for t in range(T):
        vals = bound.step(x[t], s)
        args += [np.asarray(fn(*(vals[v.name] for v in syms))) for syms, fn in fns]
        s = {b: np.asarray(vals[b]) for b in cell.state}
    return min(float(np.abs(a - k).min()) for a in args for k in kinks)


def _fd_dense(cell, params, x, eps=1e-6):
    bound = Bound(compile_cell(cell), params)
    order = list(cell.state)
    dims = dict(bound.dim)
    cuts = np.cumsum([0, *(dims[b] for b in order)])
    s = {b: np.zeros((B, dims[b])) for b in order}
    traj = [s]
    for t in range(T):
        vals = bound.step(x[t], s)
        s = {b: np.asarray(vals[b], dtype=float) for b in order}
        traj.append(s)

    def flow(vec, t0):
        s = {b: vec[:, cuts[j]:cuts[j + 1]] for j, b in enumerate(order)}
        for t in range(t0, T):
            vals = bound.step(x[t], s)
            s = {b: np.asarray(vals[b], dtype=float) for b in order}
        return np.concatenate([s[b] for b in order], axis=1)

    dense = {}
    for k in range(1, T + 1):
        base = np.concatenate([traj[T - k][b] for b in order], axis=1)
        J = np.empty((B, cuts[-1], cuts[-1]))
        for j in range(cuts[-1]):
            e = np.zeros(cuts[-1])
            e[j] = eps
            J[:, :, j] = (flow(base + e, T - k) - flow(base - e, T - k)) / (2 * eps)
        dense[k] = J
    return dense, dims


def fd_cases():
    """:func:`cases` less the LSTM family with relu in every role: its relu gates start at
    exactly 0, so c = 0 sits on the kink of the relu output at every sample and central
    differences cannot see a derivative there (autograd, same convention, covers them:
    ``test_every_lag_against_torch_autograd``)."""
    return [c for c in cases() if not (c.values[1] == "relu" and c.values[0].startswith("lstm"))]


@pytest.mark.parametrize("family,act", fd_cases())
def test_every_lag_against_finite_differences(family, act):
    """Central differences of the step (step 1e−7) at a sample whose activations' arguments
    all stay 1e−5 or more away from a kink. Where a kink is hit *exactly* by construction
    (an LSTM whose relu gates are exactly 0 has c = 0, the kink of its relu output) finite
    differences cannot see a derivative: autograd (same convention) covers those."""
    name = every_role(family, act)
    cell = get_cell(name)
    distances = []
    for seed in range(3, 30):
        params, x = _problem(name, seed, sigma_w=0.7)  # linear gates: moderate states
        distances.append(_kink_distance(cell, params, x, act))
        if distances[-1] > 1e-5:
            break
    else:
        pytest.fail(f"no sample away from the kinks: {distances}")
    dense, dims = _fd_dense(cell, params, x, eps=1e-7)
    check_every_lag(name, params, x, dense, dims, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("spec", [
    dict(gate="hard_sigmoid(0.2,0.5)", candidate="relu", output="relu"),  # Keras 2, relu
    dict(gate="hard_sigmoid(1/6,0.5)", candidate="tanh", output="softsign"),
    dict(gate="sigmoid", candidate="elu(0.5)", output="scaled_tanh(1.5,0.75)"),
])
def test_mixed_roles_against_torch(spec):
    torch = pytest.importorskip("torch")
    name = variant_name("lstm", **spec)
    params, x = _problem(name)
    p = {k: torch.from_numpy(np.asarray(v, dtype=np.float64)) for k, v in params.items()}
    gate, cand, out = (torch_act(spec[r]) for r in ("gate", "candidate", "output"))

    def step(t, v):
        h, c = v[:, :N], v[:, N:]
        xt = torch.from_numpy(x[t])

        def lin(k):
            return xt @ p[f"W_{k}"].T + h @ p[f"U_{k}"].T + p[f"b_{k}"]

        i, f, g, o = gate(lin("i")), gate(lin("f")), cand(lin("g")), gate(lin("o"))
        c2 = f * c + i * g
        return torch.cat([o * out(c2), c2], dim=1)

    s = torch.zeros(B, 2 * N, dtype=torch.float64)
    traj = [s]
    with torch.no_grad():
        for t in range(T):
            s = step(t, s)
            traj.append(s)
    dense = {}
    for k in range(1, T + 1):
        def flow(s0, k=k):
            v = s0
            for t in range(T - k, T):
                v = step(t, v)
            return v

        J = torch.autograd.functional.jacobian(flow, traj[T - k])
        dense[k] = torch.stack([J[b, :, b, :] for b in range(B)]).numpy()
    check_every_lag(name, params, x, dense, {"h": N, "c": N})


# --------------------------------------------------------------------------------------
# Kinks and saturation: the compiled coefficient, exactly where it is delicate
# --------------------------------------------------------------------------------------


def _rnn_slope(act: str, a: np.ndarray) -> np.ndarray:
    """The compiled ∂h_t/∂h_{t−1} coefficient of rnn[candidate=act] at pre-activations a
    (W = U = 0, b = a: h_t = F(a)), i.e. F'(a) as gateflow evaluates it."""
    cell = get_cell(every_role("rnn", act))
    n = len(a)
    params = {"W": np.zeros((n, 1)), "U": np.zeros((n, n)), "b": np.asarray(a, dtype=float)}
    comp = compile_cell(cell)
    bound = Bound(comp, params)
    vals = bound.step(np.zeros((1, 1)), {"h": np.zeros((1, n))})
    coefs = bound.coefficients(vals)
    assert comp.layout == (("h", "U__h_prev"),)
    np.testing.assert_allclose(np.asarray(vals["h"])[0],
                               [float(mp_value(act, v)) for v in a], rtol=1e-15, atol=1e-16)
    return np.broadcast_to(np.asarray(coefs[0], dtype=float), (1, n))[0]


@pytest.mark.parametrize("act", ACTS)
def test_compiled_slopes_are_accurate_in_saturation(act):
    """F'(a) to full float64 relative accuracy far into saturation (e^{−80} is not 0):
    the complements of the numerics (σ(−a), sech², α e^a, 1/(1 + |a|), …)."""
    mpmath.mp.dps = 40
    a = np.array([-40.0, -30.0, -8.0, -0.7, 0.3, 2.0, 8.0, 30.0, 40.0, 1e8, -1e8])
    kinks = [float(k) for k in _kinks(act)]
    a = np.array([v for v in a if all(abs(v - k) > 1e-3 for k in kinks)])
    got = _rnn_slope(act, a)
    want = np.array([float(mp_slope(act, v)) for v in a])
    np.testing.assert_allclose(got, want, rtol=4e-15, atol=0, err_msg=act)


def test_torch_hardsigmoid_quirk():
    """F.hardsigmoid is hard_sigmoid(1/6,0.5) forward, but its float64 gradient is float32's
    1/6: gateflow's exact 1/6 differs from it by 3e−8 relative, and agrees with PyTorch's
    documented definition relu6(x + 3)/6 differentiated by autograd."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    a = np.array([-2.9, -0.3, 0.7, 2.2])
    t = torch.tensor(a, requires_grad=True)
    y = F.hardsigmoid(t)
    (grad,) = torch.autograd.grad(y.sum(), t)
    ours = _rnn_slope("hard_sigmoid(1/6,0.5)", a)
    np.testing.assert_allclose(ours, 1 / 6, rtol=0)
    np.testing.assert_allclose(grad.numpy(), np.float32(1 / 6), rtol=0)
    np.testing.assert_allclose(ours, grad.numpy(), rtol=4e-8)
    t2 = torch.tensor(a, requires_grad=True)
    (grad2,) = torch.autograd.grad((F.relu6(t2 + 3) / 6).sum(), t2)
    np.testing.assert_allclose(ours, grad2.numpy(), rtol=1e-15)
    np.testing.assert_allclose(y.detach().numpy(), [float(mp_value("hard_sigmoid(1/6,0.5)", v))
                                                    for v in a], rtol=1e-15)


@settings(max_examples=150, deadline=None)
@given(act=st.sampled_from(ACTS), a=st.floats(-60, 60, allow_nan=False))
def test_hypothesis_compiled_slope_and_value(act, a):
    """Anywhere (but on a kink), the compiled F(a) and F'(a) are the textbook ones to
    float64 accuracy: a few ulps, plus the problem's own conditioning (F' ~ e^{−2|a|} far
    out, so an ulp of a is 2|a| ulps of F'(a))."""
    mpmath.mp.dps = 40
    if any(abs(a - float(k)) < 1e-9 for k in _kinks(act)):
        return
    got = _rnn_slope(act, np.array([a]))  # also checks the value F(a)
    want = float(mp_slope(act, a))
    rel = 4e-15 + 2 * abs(a) * 2.0**-53
    assert got[0] == pytest.approx(want, rel=rel, abs=0), (act, a)


@pytest.mark.parametrize("act,points", [
    ("relu", [0.0]), ("leaky_relu(0.01)", [0.0]), ("elu(0.5)", [0.0]), ("elu(1)", [0.0]),
    ("thresholded_relu(0.5)", [0.5]), ("hard_sigmoid(1/6,0.5)", [-3.0, 3.0]),
    ("hard_sigmoid(0.2,0.5)", [-2.5, 2.5]),
])
def test_kinks_follow_torch_autograd(act, points):
    """At the exact kink, gateflow's compiled derivative is PyTorch autograd's: relu′(0) =
    0, leaky_relu′(0) = α, elu′(0) = α, hardsigmoid′(±3) = 0 (F.hardsigmoid itself; the
    Keras 2 slope 0.2 through F.hardsigmoid of 6(0.2a) so that its kinks are PyTorch's)."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    name, params = parse_activation(act)
    a = torch.tensor(points, dtype=torch.float64, requires_grad=True)
    if name == "hard_sigmoid" and params == (Fraction(1, 5), Fraction(1, 2)):
        y = F.hardsigmoid(6 * (a / 5))  # clip(a/5 + 1/2): kinks at a = ±2.5 exactly
    elif name == "hard_sigmoid":
        y = F.hardsigmoid(a)  # at the kinks its float32 1/6 does not matter: 0
    else:
        y = torch_act(act)(a)
    (grad,) = torch.autograd.grad(y.sum(), a)
    got = _rnn_slope(act, np.array(points))
    np.testing.assert_array_equal(got, grad.numpy())
    # and the derivation's rule, symbolically at the kink
    _, _, sparams = _spec(act)
    s = sp.Symbol("a")
    rule = FUNCTIONS[name](s, *sparams).diff(s)
    for point, g in zip(points, grad.numpy()):
        assert float(rule.subs(s, sp.nsimplify(point))) == g


@pytest.mark.parametrize("act", ["softsign", "scaled_tanh(1.5,0.75)", "elu(0.5)", "softplus",
                                 "sigmoid", "hard_sigmoid(0.2,0.5)"])
def test_nested_output_activation_is_accurate(act):
    """The LSTM's output activation is called inside h = o ⊙ F(c), not as a node of its
    own: its derivative's coefficient o F'(c) is still accurate where F saturates."""
    mpmath.mp.dps = 40
    cell = get_cell(variant_name("lstm", output=act))
    n = 6
    c_prev = np.array([-40.0, -12.0, -0.4, 0.9, 12.0, 40.0])
    params = {p: np.zeros((n, 1) if p.startswith("W") else (n, n)) for p in cell.params
              if p[0] in "WU"}
    params.update({"b_i": np.full(n, -60.0), "b_f": np.full(n, 60.0), "b_g": np.zeros(n),
                   "b_o": np.full(n, 0.5)})
    comp = compile_cell(cell)
    bound = Bound(comp, params)
    vals = bound.step(np.zeros((1, 1)), {"h": np.zeros((1, n)), "c": c_prev[None]})
    coefs = bound.coefficients(vals)
    k = comp.layout.index(("h", "c"))
    c, o = np.asarray(vals["c"])[0], np.asarray(vals["o"])[0]
    want = np.array([float(mp_slope(act, v)) for v in c]) * o
    if act.startswith("hard_sigmoid"):
        want = np.where(np.abs(c) > 2.5, 0.0, want)
    np.testing.assert_allclose(np.broadcast_to(coefs[k], (1, n))[0], want, rtol=4e-15, atol=0)


# --------------------------------------------------------------------------------------
# Compile cache, stacks, printing
# --------------------------------------------------------------------------------------


def test_activation_is_part_of_the_compile_cache_key(tmp_path, monkeypatch):
    """Two variants never share a cached plan; each plan passes the checks of the plan as
    data (its functions are in the vocabulary) and is read back, giving the same numbers."""
    from gateflow.numeric import _cache
    from gateflow.numeric import _compile as comp
    from gateflow.numeric._plan import check_plan

    monkeypatch.setenv("GATEFLOW_CACHE_DIR", str(tmp_path / "cache"))
    names = [every_role("gru", a) for a in ("sigmoid", "hard_sigmoid(0.2,0.5)",
                                             "hard_sigmoid(1/6,0.5)", "elu(0.5)", "elu(1)",
                                             "scaled_tanh(1.5,0.75)", "softsign")]
    paths = [_cache.entry_path(get_cell(n), "numpy") for n in names]
    assert len(set(paths)) == len(paths)
    params, x = _problem(names[1])
    fresh = {}
    comp._compile.cache_clear()
    for n, path in zip(names, paths):
        fresh[n] = all_lags(n, params, x).blocks["h/h"]["log10_frobenius"]
        assert path.exists()
        check_plan(_cache._read_entry(path), get_cell(n), False)  # raises if refused
    comp._compile.cache_clear()
    for n, path in zip(names, paths):
        plan = _cache.read(path)
        assert plan is not None
        comp._load(get_cell(n), "numpy", np.dtype("float64"), False, plan)
        again = all_lags(n, params, x).blocks["h/h"]["log10_frobenius"]
        np.testing.assert_array_equal(again, fresh[n])
    # and different activations give different numbers
    assert np.abs(fresh[names[1]] - fresh[names[2]]).max() > 1e-3
    comp._compile.cache_clear()


@pytest.mark.parametrize("name,acts", [
    ("lstm[gate=hard_sigmoid(0.2,0.5),candidate=relu]", ("hard_sigmoid(0.2,0.5)", "relu")),
    ("gru[gate=hard_sigmoid(1/6,0.5),candidate=elu(0.5)]", ("hard_sigmoid(1/6,0.5)", "elu(0.5)")),
])
def test_stack_of_a_variant(name, acts):
    """stack(variant, 2) keeps the activations in every layer; every nonzero block of the
    stack at every lag against finite differences, the zero ones exactly zero."""
    s = stack(name, 2)
    assert s.name == f"{name}-stack2" and s == stack(get_cell(name), 2)
    assert sum(e.count(f"{acts[0].partition('(')[0]}(") for e in s.equations) == \
        2 * len(FAMILIES[name.partition("[")[0]]["gate"][1])
    x = make_inputs(T, B, D, seed=6)
    for seed in range(5, 40):
        params = init_params(s, N, D, scheme="gaussian", sigma_w=1.2, sigma_b=0.8, seed=seed)
        if min(_kink_distance(s, params, x, a) for a in acts) > 1e-5:
            break
    else:
        pytest.fail("no sample away from the kinks")
    dense, dims = _fd_dense(s, params, x, eps=1e-7)
    check_every_lag(s, params, x, dense, dims, atol=1e-7, rtol=1e-5)  # the Cell: no registry


def test_derive_prints_the_functions_and_the_kinks():
    out = render("lstm[gate=hard_sigmoid(0.2,0.5)]", "text")
    assert "i_t = hard_sigmoid(W_i x_t + U_i h_{t−1} + b_i; 0.2, 0.5)" in out
    assert "g_t = tanh(W_g x_t + U_g h_{t−1} + b_g)" in out
    # the blocks in gate terms: α 1[0 < f < 1] in place of f(1 − f)
    assert "diag(0.2 ⊙ c_{t−1} ⊙ 𝟙[f_t > 0] ⊙ 𝟙[f_t < 1]) U_f" in out
    assert "σ" not in out and "f_t ⊙ (1 − f_t)" not in out
    assert ("hard_sigmoid(0.2,0.5)′(a) = 0.2 for -2.5 < a < 2.5 and 0 at a = -2.5 and "
            "a = 2.5") in out
    out = render("gru[gate=hard_sigmoid(1/6,0.5),candidate=elu(0.5)]", "text")
    assert "hard_sigmoid(1/6,0.5)′(a) = 1/6 for -3 < a < 3" in out
    assert "elu(0.5)′(0) = 0.5" in out
    assert "𝟙[n_t ≤ 0]" in out and "Heaviside" not in out
    assert "almost everywhere" not in render("lstm", "text").lower()
    assert "relu′(0) = 0" in render("rnn-relu", "text")
    tex = render("lstm[gate=hard_sigmoid(1/6,0.5),output=softsign]", "latex")
    assert r"\operatorname{hard\_sigmoid}\left(" in tex and r";\ 1/6, 0.5\right)" in tex
    assert tex.count("{") == tex.count("}") and tex.count(r"\left") == tex.count(r"\right")
    md = render("rnn[candidate=leaky_relu(0.01)]", "markdown")
    assert "**Almost everywhere.**" in md and "leaky_relu(0.01)′(0) = 0.01" in md


def test_summary_says_what_changed():
    cell = get_cell("rnn[candidate=softsign]")
    assert "candidate softsign (not tanh)" in cell.summary


def test_cli_derive_takes_a_variant():
    typer_testing = pytest.importorskip("typer.testing")
    from gateflow.cli import app

    r = typer_testing.CliRunner().invoke(app, ["derive", "lstm[gate=hard_sigmoid(0.2,0.5)]",
                                               "--block", "c/h"])
    assert r.exit_code == 0, r.output
    assert "hard_sigmoid(W_f x_t + U_f h_{t−1} + b_f; 0.2, 0.5)" in r.output
    assert "Almost everywhere" in r.output
    r = typer_testing.CliRunner().invoke(app, ["derive", "gru[output=tanh]"])
    assert r.exit_code == 2
    assert "no role 'output'" in r.output and "Traceback" not in r.output
    assert ALL_ROLES_HELP in typer_testing.CliRunner().invoke(app, ["derive", "--help"],
                                                              terminal_width=200).output


ALL_ROLES_HELP = "lstm[gate=hard_sigmoid(0.2,0.5)]"


def test_every_activation_has_a_function_and_code():
    """The registry, the SymPy functions and the array code know the same names."""
    from gateflow.numeric._plan import CALLS, namespace

    assert set(ACTIVATIONS) == set(FUNCTIONS)
    ns = namespace(np)
    for name in ACTIVATIONS:
        assert name in CALLS, name  # the plan vocabulary may call it
        # gateflow's own array code, or the array module's function SymPy prints (tanh, exp)
        assert name in ns or (name in ("tanh", "exp") and callable(getattr(np, name))), name
    # every family's role table matches its declared equations
    for family, roles in FAMILIES.items():
        for role, (default, nodes) in roles.items():
            for node in nodes:
                line = next(e for e in CELLS[family].equations
                            if e.partition("=")[0].strip() == node)
                assert f"{default}(" in line, (family, role, line)


@pytest.mark.parametrize("name", [
    "lstm[gate=hard_sigmoid(0.2,0.5),candidate=elu(0.5),output=softsign]",
    "gru[gate=hard_sigmoid(1/6,0.5),candidate=scaled_tanh(1.5,0.75)]",
    "minimalrnn[gate=leaky_relu(0.01),candidate=softplus]"])
def test_float32_agrees_with_float64(name):
    """The array code keeps float32 (parameters are Python numbers, never float64 arrays)."""
    params = init_params(name, 6, 3, seed=1)
    x = make_inputs(12, 2, 3, seed=2)
    a = all_lags(name, params, x, dtype="float64")
    b = all_lags(name, params, x, dtype="float32")
    bound = Bound(compile_cell(name, dtype="float32"), params)
    vals = bound.step(x[0].astype(np.float32), {s: np.zeros((2, 6), np.float32)
                                                for s in get_cell(name).state})
    assert all(np.asarray(v).dtype == np.float32 for k, v in vals.items() if k not in params
               and hasattr(v, "dtype"))
    for blk in a.blocks:
        fa, fb = a.blocks[blk]["log10_frobenius"], b.blocks[blk]["log10_frobenius"]
        assert np.array_equal(np.isneginf(fa), np.isneginf(fb))
        np.testing.assert_allclose(fb[np.isfinite(fa)], fa[np.isfinite(fa)], atol=1e-4)


def test_cupy_printer_writes_the_same_calls(monkeypatch):
    """The CuPy backend's printer (SymPy's CuPyPrinter, with the settings gateflow gives
    it) writes every activation and complement as the NumPy one does: the plan, data, is
    the same for both backends (CuPy itself is not needed to check it)."""
    import sympy.printing.numpy as printers

    import gateflow.numeric._codegen as codegen
    from gateflow.numeric._backend import Backend
    from gateflow.numeric._plan import OWN_ARITY, check_plan

    settings = {"fully_qualified_modules": False, "inline": True,
                "allow_unknown_functions": True,
                "user_functions": {f: f for f in OWN_ARITY}}
    cupy = printers.CuPyPrinter(settings)
    numpy_ = printers.NumPyPrinter(settings)
    name = "lstm[gate=hard_sigmoid(0.2,0.5),candidate=elu(0.5),output=scaled_tanh(1.5,0.75)]"
    plan = codegen.generate(get_cell(name), "numpy")
    assert '"hard_sigmoid"' in json.dumps(plan["forward"])
    for _, _, c in derive(name).coefficients():
        assert cupy.doprint(c) == numpy_.doprint(c)
    monkeypatch.setattr(codegen, "get_backend", lambda b: Backend(
        "cupy", np, threaded=False, printer="CuPyPrinter"))
    for inputs in (False, True):
        on_cupy = codegen.generate(get_cell(name), "cupy", inputs)
        assert on_cupy == codegen.generate(get_cell(name), "numpy", inputs)
        check_plan(on_cupy, get_cell(name), inputs)


def test_variant_names_are_case_insensitive_in_the_family():
    """``LSTM[...]`` is ``lstm[...]``, as plain cell names are read case-insensitively."""
    from gateflow.cells._library import get_cell

    assert get_cell("LSTM[gate=hard_sigmoid(0.2,0.5)]") is \
        get_cell("lstm[gate=hard_sigmoid(0.2,0.5)]")

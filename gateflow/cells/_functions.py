"""Scalar activation functions with derivatives written in their own values.

SymPy's ``1/(1 + exp(-x))`` differentiates to ``exp(-x)/(1 + exp(-x))**2``, which is NaN at
x = -1000 in floating point and unreadable on paper. Here σ'(a) = σ(a)(1 − σ(a)) and
relu'(a) = 1[relu(a) > 0], so that after the derivation replaces σ(a) by the gate it
defines, derivatives read f(1 − f), 1 − g², 1[h > 0]: gate values, never exponentials.
tanh is SymPy's own; its derivative is already 1 − tanh².

Every activation of :mod:`gateflow.cells._activations` is one class here, its parameters
exact numbers after the argument (``hard_sigmoid(a, 1/5, 1/2)``), with

* ``fdiff``: the derivative in the function's own value v (almost everywhere; at a kink
  the one-sided value PyTorch's autograd uses, stated in ``_activations``);
* ``explicit(a, *params)``: the function as SymPy's own expressions (Max, Min, Piecewise,
  exp), which the tests differentiate as an independent route;
* ``complements(v, a, *params)``: pairs (expression in v, the same value computed from the
  argument a without cancellation), for the numerics only: 1 − f is σ(−a), not 1 − σ(a),
  which is 0 in floating point at a = 50 (see :mod:`gateflow.numeric._plan` (``namespace``)).

=============================  ======================================  ==========================
function                       value v                                 derivative, in v
=============================  ======================================  ==========================
sigmoid(a)                     1/(1 + e^(−a))                          v (1 − v)
tanh(a)                        tanh a                                  1 − v²
relu(a)                        max(a, 0)                               1[v > 0]
linear(a)                      a                                       1
softsign(a)                    a/(1 + |a|)                             (1 − |v|)²
softplus(a)                    log(1 + e^a)                            1 − e^(−v)
elu(a, α), α > 0               a if a > 0 else α(e^a − 1)              1[v > 0] + 1[v ≤ 0] (v + α)
leaky_relu(a, α), α ≥ 0        a if a > 0 else α a                     1[v > 0] + α 1[v ≤ 0]
thresholded_relu(a, α), α ≥ 0  a if a > α else 0                       1[v > 0]
hard_sigmoid(a, α, β)          clip(α a + β, 0, 1)                     α 1[v > 0] 1[v < 1]
affine(a, α, β)                α a + β                                 α
scaled_tanh(a, α, β), α ≠ 0    α tanh(β a)                             (β/α)(α − v)(α + v)
exp(a)                         e^a                                     v
=============================  ======================================  ==========================

``exp`` is SymPy's own, like tanh (its derivative is its value already; NumPy and CuPy
provide ``exp`` under that name): the exponential gates of the gated linear recurrences
(sLSTM's i = e^(ĩ − m), the selective scan's e^(Δ A), RG-LRU's a = e^(−c r softplus(−Λ))).
"""

from __future__ import annotations

import sympy as sp


def _H(x, at_zero=0):
    return sp.Heaviside(x, at_zero)


class Activation(sp.Function):
    """Base of gateflow's activations: argument first, then exact parameters."""

    nargs = 1

    @classmethod
    def explicit(cls, a, *params):  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    @classmethod
    def complements(cls, v, a, *params) -> list:
        return []

    @classmethod
    def dvalue(cls, v, *params):
        """The derivative at the point where the function's value is ``v``."""
        raise NotImplementedError  # pragma: no cover

    def fdiff(self, argindex=1):
        if argindex != 1:  # parameters are numbers: never differentiated
            raise sp.ArgumentIndexError(self, argindex)
        return self.dvalue(self, *self.args[1:])

    @classmethod
    def eval(cls, *args):
        if all(isinstance(a, sp.Number) for a in args):  # relu(-1/2) is 0
            return cls.explicit(*args)
        return None

    def _eval_evalf(self, prec):
        if not all(a.is_number for a in self.args):
            return None
        from mpmath.libmp import prec_to_dps

        return sp.sympify(self.explicit(*self.args)).evalf(prec_to_dps(prec))



class sigmoid(Activation):  # noqa: N801 - named after the math
    """Logistic sigmoid σ(a) = 1 / (1 + e^{−a}), with σ' = σ(1 − σ)."""

    @classmethod
    def dvalue(cls, v):
        return v * (1 - v)

    @classmethod
    def explicit(cls, a):
        return 1 / (1 + sp.exp(-a))

    @classmethod
    def complements(cls, v, a):
        return [(1 - v, sigmoid(-a))]

    def _eval_rewrite_as_exp(self, arg, **kwargs):
        return 1 / (1 + sp.exp(-arg))

    def _latex(self, printer, exp=None):
        arg = printer._print(self.args[0])
        head = r"\sigma" if exp is None else rf"\sigma^{{{exp}}}"
        return rf"{head}\left({arg}\right)"


class relu(Activation):  # noqa: N801 - named after the math
    """Rectifier relu(a) = max(0, a), with relu'(a) = 1[relu(a) > 0] (0 at a = 0, as PyTorch)."""

    @classmethod
    def dvalue(cls, v):
        return _H(v)

    @classmethod
    def explicit(cls, a):
        return sp.Max(0, a)

    def _eval_rewrite_as_Max(self, arg, **kwargs):
        return sp.Max(0, arg)

    def _latex(self, printer, exp=None):
        return rf"\operatorname{{relu}}\left({printer._print(self.args[0])}\right)"


class linear(Activation):  # noqa: N801 - named after the math
    """The identity, linear(a) = a (Keras ``linear``, ONNX ``Affine(1, 0)``)."""

    @classmethod
    def dvalue(cls, v):
        return sp.Integer(1)

    @classmethod
    def explicit(cls, a):
        return a


class softsign(Activation):  # noqa: N801 - named after the math
    """softsign(a) = a / (1 + |a|); softsign' = 1/(1 + |a|)² = (1 − |v|)²."""

    @classmethod
    def dvalue(cls, v):
        return (1 - sp.Abs(v)) ** 2

    @classmethod
    def explicit(cls, a):
        return a / (1 + sp.Abs(a))

    @classmethod
    def complements(cls, v, a):
        return [(1 - sp.Abs(v), 1 / (1 + sp.Abs(a)))]


class softplus(Activation):  # noqa: N801 - named after the math
    """softplus(a) = log(1 + e^a); softplus' = σ(a) = 1 − e^{−v} (the exact function, not
    PyTorch's, which is a itself above a = 20)."""

    @classmethod
    def dvalue(cls, v):
        return 1 - sp.exp(-v)

    @classmethod
    def explicit(cls, a):
        return sp.log(1 + sp.exp(a))

    @classmethod
    def complements(cls, v, a):
        return [(1 - sp.exp(-v), sigmoid(a))]


class elu(Activation):  # noqa: N801 - named after the math
    """elu(a, α) = a for a > 0, α(e^a − 1) otherwise (α > 0); elu' = 1 for v > 0 and
    v + α = α e^a for v ≤ 0 (α at a = 0, as PyTorch)."""

    nargs = 2

    @classmethod
    def dvalue(cls, v, alpha):
        return _H(v) + _H(-v, 1) * (v + alpha)

    @classmethod
    def explicit(cls, a, alpha):
        return sp.Piecewise((a, a > 0), (alpha * (sp.exp(a) - 1), True))

    @classmethod
    def complements(cls, v, a, alpha):
        return [(v + alpha, alpha * sp.exp(-relu(-a)))]


class leaky_relu(Activation):  # noqa: N801 - named after the math
    """leaky_relu(a, α) = a for a > 0, α a otherwise (α ≥ 0); derivative 1 or α (α at
    a = 0, as PyTorch)."""

    nargs = 2

    @classmethod
    def dvalue(cls, v, alpha):
        return _H(v) + alpha * _H(-v, 1)

    @classmethod
    def explicit(cls, a, alpha):
        return sp.Piecewise((a, a > 0), (alpha * a, True))


class thresholded_relu(Activation):  # noqa: N801 - named after the math
    """thresholded_relu(a, α) = a for a > α, 0 otherwise (α ≥ 0, ONNX ThresholdedRelu);
    derivative 1[v > 0] (0 at a = α)."""

    nargs = 2

    @classmethod
    def dvalue(cls, v, alpha):
        return _H(v)

    @classmethod
    def explicit(cls, a, alpha):
        return sp.Piecewise((a, a > alpha), (0, True))


class hard_sigmoid(Activation):  # noqa: N801 - named after the math
    """hard_sigmoid(a, α, β) = clip(α a + β, 0, 1): Keras 2 and ONNX (0.2, 0.5), Keras 3 and
    PyTorch (1/6, 1/2). Derivative α inside the open interval 0 < v < 1, 0 at both kinks
    (PyTorch's hardsigmoid)."""

    nargs = 3

    @classmethod
    def dvalue(cls, v, alpha, beta):
        return alpha * _H(v) * _H(1 - v)

    @classmethod
    def explicit(cls, a, alpha, beta):
        return sp.Min(sp.Max(alpha * a + beta, 0), 1)

    @classmethod
    def complements(cls, v, a, alpha, beta):
        return [(1 - v, hard_sigmoid(-a, alpha, 1 - beta))]


class affine(Activation):  # noqa: N801 - named after the math
    """affine(a, α, β) = α a + β (ONNX Affine); derivative α."""

    nargs = 3

    @classmethod
    def dvalue(cls, v, alpha, beta):
        return alpha

    @classmethod
    def explicit(cls, a, alpha, beta):
        return alpha * a + beta


class scaled_tanh(Activation):  # noqa: N801 - named after the math
    """scaled_tanh(a, α, β) = α tanh(β a) (ONNX ScaledTanh), α ≠ 0; derivative
    α β (1 − tanh²(β a)) = (β/α)(α − v)(α + v)."""

    nargs = 3

    @classmethod
    def dvalue(cls, v, alpha, beta):
        return beta / alpha * (alpha - v) * (alpha + v)

    @classmethod
    def explicit(cls, a, alpha, beta):
        return alpha * sp.tanh(beta * a)

    @classmethod
    def complements(cls, v, a, alpha, beta):
        # α − α tanh(y) = 2α σ(−2y), α + α tanh(y) = 2α σ(2y): no cancellation
        return [(alpha - v, 2 * alpha * sigmoid(-2 * beta * a)),
                (alpha + v, 2 * alpha * sigmoid(2 * beta * a))]


class sech2(sp.Function):  # noqa: N801 - named after the math
    """sech²(a) = 1 − tanh²(a), evaluated without cancellation (numerics only)."""

    nargs = 1


class MatVec(sp.Function):
    """``MatVec(W, v)`` is the matrix–vector product W v inside an elementwise expression.

    It only lives in parsed equations; the derivation replaces each one by an opaque
    symbol (see :class:`gateflow.cells._record.MatVecAtom`) and tracks W separately.
    """

    nargs = 2


#: Every activation by the name equations use (see :mod:`gateflow.cells._activations`).
ACTIVATIONS: dict[str, type[sp.Function]] = {
    "sigmoid": sigmoid, "tanh": sp.tanh, "relu": relu, "linear": linear,
    "softsign": softsign, "softplus": softplus, "elu": elu, "leaky_relu": leaky_relu,
    "thresholded_relu": thresholded_relu, "hard_sigmoid": hard_sigmoid, "affine": affine,
    "scaled_tanh": scaled_tanh, "exp": sp.exp}


def explicit(expr):
    """``expr`` with every activation written as SymPy's own functions (tanh stays)."""
    return expr.replace(lambda e: isinstance(e, Activation),
                        lambda e: type(e).explicit(*e.args))


def complements(func, v, a, *params) -> list:
    """(expression in the value v, its accurate form from the argument a) pairs of the
    activation ``func`` (see the module docstring); tanh's 1 − v² is sech²(a)."""
    if func is sp.tanh:
        return [(1 - v**2, sech2(a))]
    if isinstance(func, type) and issubclass(func, Activation):
        return func.complements(v, a, *params)
    return []

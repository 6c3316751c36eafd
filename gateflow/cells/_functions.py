"""Scalar activation functions with derivatives written in their own values.

SymPy's ``1/(1 + exp(-x))`` differentiates to ``exp(-x)/(1 + exp(-x))**2``, which is NaN at
x = -1000 in floating point and unreadable on paper. Here σ'(a) = σ(a)(1 − σ(a)) and
relu'(a) = 1[relu(a) > 0], so that after the derivation replaces σ(a) by the gate it
defines, derivatives read f(1 − f), 1 − g², 1[h > 0]: gate values, never exponentials.
tanh is SymPy's own; its derivative is already 1 − tanh².
"""

from __future__ import annotations

import sympy as sp


class sigmoid(sp.Function):  # noqa: N801 - named after the math
    """Logistic sigmoid σ(a) = 1 / (1 + e^{−a}), with σ' = σ(1 − σ)."""

    nargs = 1

    def fdiff(self, argindex=1):
        return self * (1 - self)

    def _eval_rewrite_as_exp(self, arg, **kwargs):
        return 1 / (1 + sp.exp(-arg))

    def _latex(self, printer, exp=None):
        arg = printer._print(self.args[0])
        head = r"\sigma" if exp is None else rf"\sigma^{{{exp}}}"
        return rf"{head}\left({arg}\right)"


class relu(sp.Function):  # noqa: N801 - named after the math
    """Rectifier relu(a) = max(0, a), with relu'(a) = 1[relu(a) > 0] (0 at a = 0, as PyTorch)."""

    nargs = 1

    def fdiff(self, argindex=1):
        return sp.Heaviside(self, 0)

    def _eval_rewrite_as_Max(self, arg, **kwargs):
        return sp.Max(0, arg)

    def _latex(self, printer, exp=None):
        return rf"\operatorname{{relu}}\left({printer._print(self.args[0])}\right)"


class sech2(sp.Function):  # noqa: N801 - named after the math
    """sech²(a) = 1 − tanh²(a), evaluated without cancellation (numerics only)."""

    nargs = 1


class MatVec(sp.Function):
    """``MatVec(W, v)`` is the matrix–vector product W v inside an elementwise expression.

    It only lives in parsed equations; the derivation replaces each one by an opaque
    symbol (see :class:`gateflow.cells._record.MatVecAtom`) and tracks W separately.
    """

    nargs = 2


ACTIVATIONS = {"sigmoid": sigmoid, "tanh": sp.tanh, "relu": relu}

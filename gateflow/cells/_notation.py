"""How a cell's equations are written: symbols at their time step (f → f_t, c_prev →
c_{t−1}), products W v as "W_f x_t", elementwise products as ⊙, σ' as f_t ⊙ (1 − f_t),
relu' as 𝟙[h_t > 0], in Unicode text or LaTeX. The symbolic layer prints Jacobians with
the same printers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import sympy as sp
from sympy.printing.latex import LatexPrinter
from sympy.printing.precedence import precedence
from sympy.printing.str import StrPrinter

from gateflow.cells._activations import number_text
from gateflow.cells._block import Block
from gateflow.cells._functions import Activation, MatVec, sigmoid
from gateflow.cells._symbols import INPUT

if TYPE_CHECKING:
    from gateflow.cells._record import Cell

_SUPERSCRIPT = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")


def _add_order(expr):
    """Terms of a sum as a textbook orders them: numbers, then W x, then U h, then the rest
    (stable, so equations parsed unevaluated keep the order they were written in)."""
    def rank(term):
        if term.is_Number:
            return 0
        names = {s.name for s in term.free_symbols}
        mvs = [a for a in sp.preorder_traversal(term) if isinstance(a, MatVec)]
        if any(n.endswith(f"__{INPUT}") for n in names) or any(
                a.args[1] == sp.Symbol(INPUT) for a in mvs):
            return 1
        if mvs or any("__" in n for n in names):
            return 2
        return 3
    return sorted(sp.Add.make_args(expr), key=rank)


def negative(term: sp.Expr) -> bool:
    return term.as_coeff_Mul()[0].is_negative


def _number(x) -> str:
    """An activation's parameter as names spell it: 0.2, 1/6, 1 (exact)."""
    from fractions import Fraction

    x = sp.nsimplify(x.doit()) if isinstance(x, sp.Basic) else sp.Rational(x)
    if not x.is_Rational:  # not reached by declared cells; printed as SymPy writes it
        return str(x)
    return number_text(Fraction(int(x.p), int(x.q)))


def _indicator(printer, expr, ge: str, le: str) -> tuple[str, str, str]:
    """(left, relation, right) of 1[x > 0] (Heaviside(x, 0)) or 1[x ≥ 0] (Heaviside(x, 1)),
    written the way a reader would: 1 − o > 0 as o < 1, −n ≥ 0 as n ≤ 0."""
    arg, at_zero = expr.args[0], expr.args[1] if len(expr.args) > 1 else sp.Integer(0)
    strict = at_zero == 0
    const, rest = arg.as_coeff_Add()
    if negative(rest):
        return printer._print(-rest), "<" if strict else le, printer._print(const)
    return printer._print(rest), ">" if strict else ge, printer._print(-const)


def _join_terms(printer, terms) -> str:
    minus = printer.minus
    out = ""
    for t in terms:
        neg = negative(t)
        body = printer._print(-t if neg else t)
        if not out:
            out = f"{minus}{body}" if neg else body
        else:
            out += f" {minus} {body}" if neg else f" + {body}"
    return out


class _Display:
    """Mixin: names at their time step; ``symbol_names`` maps symbol name -> display."""

    minus = "-"

    def __init__(self, names: dict[str, str], **settings):
        super().__init__(settings)  # type: ignore[call-arg]  # the printer after this mixin
        self.names = names

    def _print_Add(self, expr, order=None):
        return _join_terms(self, _add_order(expr))


class TextPrinter(_Display, StrPrinter):
    minus = "−"

    def __init__(self, names, mul="⊙", order=None):
        super().__init__(names, order=order)
        self.mul = mul

    def _print_Symbol(self, expr):
        return self.names.get(expr.name, expr.name)

    def _print_Mul(self, expr):
        coef, rest = expr.as_coeff_Mul()
        if coef.is_Rational and coef.q != 1 and rest != 1:  # 0.2 ⊙ 𝟙[i_t > 0], not …/5
            body = self.parenthesize(rest, precedence(expr), strict=True)
            return f"{'-' if coef < 0 else ''}{_number(abs(coef))} {self.mul} {body}"
        return super()._print_Mul(expr).replace("*", f" {self.mul} ")

    def _print_Pow(self, expr, rational=False):
        base, exp = expr.args
        if exp.is_Integer and exp > 1:
            if isinstance(base, sp.Function):
                head = "σ" if isinstance(base, sigmoid) else type(base).__name__
                return f"{head}{str(exp).translate(_SUPERSCRIPT)}({self._print(base.args[0])})"
            return self.parenthesize(base, 999) + str(exp).translate(_SUPERSCRIPT)
        return super()._print_Pow(expr, rational)

    def _print_sigmoid(self, expr):
        return f"σ({self._print(expr.args[0])})"

    def _print_Function(self, expr):
        if isinstance(expr, Activation) and len(expr.args) > 1:  # hard_sigmoid(a; 0.2, 0.5)
            params = ", ".join(_number(p) for p in expr.args[1:])
            return f"{type(expr).__name__}({self._print(expr.args[0])}; {params})"
        return super()._print_Function(expr)

    def _print_Heaviside(self, expr):
        left, rel, right = _indicator(self, expr, "≥", "≤")
        return f"𝟙[{left} {rel} {right}]"

    def _print_Abs(self, expr):
        return f"|{self._print(expr.args[0])}|"

    def _print_Rational(self, expr):
        return _number(expr) if expr.q != 1 else str(expr.p)

    def _print_MatVec(self, expr):
        w, v = expr.args
        arg = self._print(v)
        return f"{w.name} {arg}" if v.is_Symbol else f"{w.name} ({arg})"

    def doprint(self, expr):
        text = super().doprint(expr).replace(" - ", " − ").replace("(-", "(−")
        return "−" + text[1:] if text.startswith("-") else text


class TeXPrinter(_Display, LatexPrinter):
    def __init__(self, names, mul="⊙", order=None):
        super().__init__(names, mul_symbol=r" \odot " if mul == "⊙" else r" \cdot ", order=order)

    def _print_Symbol(self, expr, style="plain"):
        return self.names.get(expr.name, expr.name)

    def _print_Heaviside(self, expr, exp=None):
        left, rel, right = _indicator(self, expr, r"\geq", r"\leq")
        return rf"\mathbb{{1}}\left[{left} {rel} {right}\right]"

    def _print_Function(self, expr, exp=None):
        if isinstance(expr, Activation) and len(expr.args) > 1:  # exact parameters
            name = type(expr).__name__.replace("_", r"\_")
            params = ", ".join(_number(p) for p in expr.args[1:])
            return rf"\operatorname{{{name}}}\left({self._print(expr.args[0])};\ {params}\right)"
        return super()._print_Function(expr, exp)

    def _print_MatVec(self, expr, exp=None):
        w, v = expr.args
        arg = self._print(v)
        w = tex_param(w.name)
        return f"{w} {arg}" if v.is_Symbol else rf"{w} \left({arg}\right)"

    def _print_Add(self, expr, order=None):
        return _join_terms(self, _add_order(expr))


def tex_param(name: str) -> str:
    head, _, sub = name.partition("_")
    return f"{head}_{{{sub}}}" if sub else head


def display_names(cell: Cell, fmt: str) -> dict[str, str]:
    """Symbol name -> how it prints in ``fmt`` ("text" or "latex")."""
    sys = cell.system
    names: dict[str, str] = {}
    nodes = [s.name for s, _ in sys.defs if s.name not in sys.composites]
    for node in [*nodes, *cell.prev, INPUT]:
        tn = time_name(node)
        names[node] = tn.replace("-", "−") if fmt == "text" else tn
    for p in cell.params:
        names[p] = p if fmt == "text" else tex_param(p)
    printer = TextPrinter(names) if fmt == "text" else TeXPrinter(names)
    for c in sys.composites:
        body = printer.doprint(sys.pretty[c])
        names[c] = f"({body})" if fmt == "text" else rf"\left({body}\right)"
    for m in sys.matvecs:
        names[m.symbol.name] = f"{names[m.weight]} {names[m.arg]}"
    return names


def printer(cell: Cell, fmt: str, mul: str = "⊙", order=None):
    """``order="none"`` prints factors as written (equations parsed unevaluated)."""
    names = display_names(cell, fmt)
    return TextPrinter(names, mul, order) if fmt == "text" else TeXPrinter(names, mul, order)




def equation_lines(cell: Cell, fmt: str = "text") -> list[str]:
    p = printer(cell, fmt, order="none")
    sys = cell.system
    return [f"{p.names[s.name]} = {p.doprint(sys.pretty[s.name])}"
            for s, _ in sys.defs if s.name not in sys.composites]


def equations_latex(cell: Cell) -> str:
    rows = r" \\ ".join(line.replace(" = ", " &= ", 1) for line in equation_lines(cell, "latex"))
    return r"\begin{aligned} " + rows + r" \end{aligned}"


def partial(block: Block | str, fmt: str, lag: int = 1) -> str:
    """∂X_t/∂Y_{t−lag} for the block X/Y (a :class:`.Block`, or its name, parsed here); an
    input block ``X/x`` is ∂X_t/∂x_t (x_t is read at step t: its lag is one less than a
    state's)."""
    b = Block.parse(block)
    out, inp = b.out, b.wrt
    if inp == INPUT:
        lag -= 1
    prev = "t" if lag == 0 else f"t-{lag}"
    if fmt == "text":
        sub = "t" if lag == 0 else f"{{{prev.replace('-', '−')}}}"
        return f"∂{out}_t/∂{inp}_{sub}"
    return rf"\frac{{\partial {out}_t}}{{\partial {inp}_{{{prev}}}}}"


def time_name(node: str, j: int = 0) -> str:
    """Display name of a node at time t − j: ``c_prev`` → ``c_{t-1}``, ``f`` → ``f_t``."""
    base, lag = (node[:-5], j + 1) if node.endswith("_prev") else (node, j)
    return f"{base}_t" if lag == 0 else f"{base}_{{t-{lag}}}"

"""Equations and Jacobians as a reader writes them: Unicode text, LaTeX and Markdown.

Symbols are shown at their time step (f → f_t, c_prev → c_{t−1}), products W v as "W_f x_t",
elementwise products as ⊙, σ' as f_t ⊙ (1 − f_t), relu' as 𝟙[h_t > 0].
"""

from __future__ import annotations

import sympy as sp
from sympy.printing.latex import LatexPrinter
from sympy.printing.str import StrPrinter

from ._cell import INPUT, Cell
from ._derive import LinOp, Structure, derive, time_name
from ._functions import MatVec, sigmoid
from .cells import choose

#: What :func:`render` can write.
FORMATS = ("text", "latex", "markdown")

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


def _negative(term: sp.Expr) -> bool:
    return term.as_coeff_Mul()[0].is_negative


def _join_terms(printer, terms) -> str:
    minus = printer.minus
    out = ""
    for t in terms:
        neg = _negative(t)
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
        super().__init__(settings)
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

    def _print_Heaviside(self, expr):
        return f"𝟙[{self._print(expr.args[0])} > 0]"

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
        return rf"\mathbb{{1}}\left[{self._print(expr.args[0])} > 0\right]"

    def _print_MatVec(self, expr, exp=None):
        w, v = expr.args
        arg = self._print(v)
        w = _tex_param(w.name)
        return f"{w} {arg}" if v.is_Symbol else rf"{w} \left({arg}\right)"

    def _print_Add(self, expr, order=None):
        return _join_terms(self, _add_order(expr))


def _tex_param(name: str) -> str:
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
        names[p] = p if fmt == "text" else _tex_param(p)
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


# --------------------------------------------------------------------------------------
# Equations and Jacobians
# --------------------------------------------------------------------------------------


def equation_lines(cell: Cell, fmt: str = "text") -> list[str]:
    p = printer(cell, fmt, order="none")
    sys = cell.system
    return [f"{p.names[s.name]} = {p.doprint(sys.pretty[s.name])}"
            for s, _ in sys.defs if s.name not in sys.composites]


def equations_latex(cell: Cell) -> str:
    rows = r" \\ ".join(line.replace(" = ", " &= ", 1) for line in equation_lines(cell, "latex"))
    return r"\begin{aligned} " + rows + r" \end{aligned}"


def partial(block: str, fmt: str, lag: int = 1) -> str:
    out, inp = block.split("/")
    prev = f"t-{lag}"
    if fmt == "text":
        return f"∂{out}_t/∂{inp}_{{{prev.replace('-', '−')}}}"
    return rf"\frac{{\partial {out}_t}}{{\partial {inp}_{{{prev}}}}}"


def linop(op: LinOp, cell: Cell, fmt: str) -> str:
    """A structured operator: ``diag(f_t) + diag(…) U_f (diag(r_t) + …)``."""
    if op.is_zero:
        return "0"
    p = printer(cell, fmt)
    parts = []
    for t in op.terms:
        neg = _negative(t.coef)
        coef = -t.coef if neg else t.coef
        if coef == 1 and (t.weight or t.block):
            head = ""
        elif fmt == "text":
            head = f"diag({p.doprint(coef)})"
        else:
            head = rf"\operatorname{{diag}}\left({p.doprint(coef)}\right)"
        if t.block is not None:
            tail = partial(t.block, fmt)
        elif t.weight is not None:
            tail = p.names[t.weight]
            if t.inner is not None:
                inner = linop(t.inner, cell, fmt)
                tail += f" [{inner}]" if fmt == "text" else rf" \left[{inner}\right]"
        else:
            tail = ""
        body = " ".join(x for x in (head, tail) if x) or "1"
        if fmt == "text" and not head and not tail:
            body = "I"
        sign = (" − " if fmt == "text" else " - ") if neg else " + "
        parts.append((sign, body))
    first_sign, first = parts[0]
    text = ("−" if fmt == "text" else "-") + first if first_sign.strip() in "−-" else first
    return text + "".join(s + b for s, b in parts[1:])


def render(cell: Cell | str, fmt: str = "text", block: str | None = None, steps: int = 1) -> str:
    """What ``gateflow derive`` prints: the equations and one-step Jacobians of ``cell`` (a
    Cell or its name) in ``fmt`` (one of :data:`FORMATS`), for ``block`` only if given, and
    with ``steps`` > 1 also ∂s_t/∂s_{t−steps} (at most :attr:`Structure.max_steps`).

    Every argument is checked before any symbolic work; a wrong one is a GateflowError."""
    s = derive(cell)
    cell = s.cell
    choose(fmt, FORMATS, "format")
    blocks = list(cell.blocks) if block is None else [block]
    for b in blocks:
        s._check_block(b)
    steps = s.check_steps(steps)
    out: list[str] = []
    header = f"{cell.name} — {cell.summary}"
    if fmt == "markdown":
        out += [f"## `{cell.name}`: {cell.summary}", "", f"*Reference:* {cell.reference}", ""]
        out += [f"> **Note.** {cell.notes}", ""] if cell.notes else []
        out += ["Layout: rows = outputs, $(\\partial s_t/\\partial s_{t-1})[a,b] = "
                "\\partial s_t[a]/\\partial s_{t-1}[b]$; $\\odot$ is elementwise.", "",
                "### Equations", ""]
        out += [f"- ${line}$" for line in equation_lines(cell, "latex")]
        out += ["", "### Jacobians", ""]
    elif fmt == "latex":
        out += [f"% {header}", f"% Reference: {cell.reference}",
                *([f"% Note: {cell.notes}"] if cell.notes else []), r"\begin{aligned}"]
        out += [line.replace(" = ", " &= ", 1) + r" \\" for line in equation_lines(cell, "latex")]
        out += [r"\end{aligned}", "", r"\begin{aligned}"]
    else:
        out += [header, f"Reference: {cell.reference}",
                *([f"Note: {cell.notes}"] if cell.notes else []),
                "Layout: rows = outputs, (∂s_t/∂s_{t−1})[a, b] = ∂s_t[a]/∂s_{t−1}[b]; "
                "⊙ is elementwise.",
                "", "Equations"]
        out += [f"  {line}" for line in equation_lines(cell, "text")]
        out += ["", "Jacobians (one step)"]
    for b in blocks:
        chained, expanded = s.block(b, chained=True), s.block(b)
        forms = [linop(chained, cell, fmt)]
        if chained != expanded:
            forms.append(linop(expanded, cell, fmt))
        lhs = partial(b, fmt)
        if fmt == "text":
            out.append(f"  {lhs} = {forms[0]}")
            out += [f"  {' ' * len(lhs)} = {f}" for f in forms[1:]]
        elif fmt == "latex":
            out.append(f"{lhs} &= {forms[0]}" + r" \\")
            out += [f"&= {f}" + r" \\" for f in forms[1:]]
        else:
            out.append(f"- ${lhs} = " + " = ".join(forms) + "$")
        if steps > 1:
            out += _render_steps(s, b, steps, fmt)
    if fmt == "latex":
        out.append(r"\end{aligned}")
    return "\n".join(out)


def _render_steps(s: Structure, b: str, k: int, fmt: str) -> list[str]:
    cell = s.cell
    paths = s.steps(b, k)
    def jt(block, j):
        t = "t" if j == 0 else f"t−{j}" if fmt == "text" else f"t-{j}"
        return f"J^{{{block}}}_{{{t}}}" if fmt != "text" else f"J[{block}]_{t}"
    prod = " + ".join(" ".join(jt(bl, j) for j, bl in enumerate(path)) for path in paths) or "0"
    scalar = s.scalar_steps(b, k)
    p = (TextPrinter(_time_display(cell, k, "text"), mul="·") if fmt == "text"
         else TeXPrinter(_time_display(cell, k, "latex"), mul="·"))
    one = p.doprint(scalar)
    lhs = partial(b, fmt, k)
    if fmt == "text":
        return [f"  {lhs} = {prod}", f"  {' ' * len(lhs)} = {one}   (n = 1)"]
    if fmt == "latex":
        return [f"{lhs} &= {prod}" + r" \\", f"&= {one} \\quad (n = 1)" + r" \\"]
    return [f"- ${lhs} = {prod}$", f"- $n = 1$: ${lhs} = {one}$"]


def _time_display(cell: Cell, k: int, fmt: str) -> dict[str, str]:
    names = {}
    sys = cell.system
    for node in [*(s.name for s, _ in sys.defs), *cell.prev, INPUT]:
        for j in range(k + 1):
            tn = time_name(node, j)
            names[tn] = tn.replace("-", "−") if fmt == "text" else tn
    for p in cell.params:
        names[p] = p if fmt == "text" else _tex_param(p)
    return names

"""THE number formats of gateflow's pages, tables and figures: one policy, used by the
report's text and tables (:mod:`._report`), the console tables (:mod:`._console`), the
figures' labels and log-axis ticks (:mod:`._plot`, :mod:`._figures`) and the lines the jobs
print or write as text (``Analysis``'s table, sweep.json's definition). Messages of the
layers below presentation write a user's own value back as they got it and do not use it.

The policy:

* A **measured** number (a per-step factor, an e-folding lag, a Lyapunov exponent, a band
  width) shows :data:`DIGITS` significant digits, trailing zeros kept (they are digits:
  ``1.40`` steps is known to three), never more: no ``1.33333``. Whole digits are never
  rounded away (``1235`` steps, not ``1.24e+03``), and a value that rounds to ±1 but is not
  ±1 gets up to :data:`EXTRA` more digits, so that a factor of 0.9996 per step never reads
  as ``1.00`` (a flat curve). :func:`sig`, and by kind :func:`factor`, :func:`steps`.
* An **R²** shows three decimals (:func:`r2`), with the same rule near 1.
* A **logarithm** (a mean log10 norm, a Lyapunov exponent in nats per step) shows a fixed
  number of decimals (:func:`fixed`): its decimals are the relative precision of the
  number it is the logarithm of, the same at every size (``-12.345``, ``-0.634``).
* A **given** number (a setting: a gate bias, a threshold, a grid value) is written exactly
  and as short as it reads back: ``0``, ``3``, ``0.2``, ``10⁻⁶`` (:func:`given`).
* Outside ``[10⁻⁴, 10⁶)`` a number is a power of ten: ``2.50 × 10⁻⁷`` in text,
  ``2.50 \\times 10^{-7}`` in LaTeX (``$…$`` in the report's pages and matplotlib's
  mathtext); never ``2.5e-07``.
* Negative numbers use the minus sign ``−`` in text, ``-`` in LaTeX.
* **Log axes** put a labelled tick at every decade, or, over a wider range, every 2, 5,
  10, 20, 50, … decades (:func:`decade_step`: at most :data:`MAX_TICKS` labels); a range
  under two decades gets ticks at 1, 2 and 5 × 10^k (:func:`log_ticks`). Labels are
  powers of ten (:func:`power`).

Styles: ``"text"`` (Unicode, for the report's words), ``"latex"`` (inside ``$…$``: the
report's math and matplotlib's mathtext) and ``"plain"`` (ASCII, for the console, where a
number copied must read back: ``-0.634``, ``2.50e-07``). Nothing here imports matplotlib;
:mod:`._plot` applies the ticks.
"""

from __future__ import annotations

import math
from typing import SupportsFloat

__all__ = ["DIGITS", "EXTRA", "MAX_TICKS", "STYLES", "decade_step", "factor", "fixed",
           "given", "log_ticks", "power", "r2", "sig", "steps"]

#: What a formatter takes: a number (Python's, NumPy's), or None for one that is missing.
Number = SupportsFloat | None
#: Significant digits of a measured number.
DIGITS = 3
#: At most this many more digits for a value that would otherwise round to ±1.
EXTRA = 3
#: The most labelled ticks a log axis gets.
MAX_TICKS = 8
#: Positional notation for |x| in [LOW, HIGH); a power of ten outside.
LOW, HIGH = 1e-4, 1e6
#: The number styles: Unicode words, LaTeX inside ``$…$``, ASCII for the console.
STYLES = ("text", "latex", "plain")
_MINUS = {"text": "\u2212", "latex": "-", "plain": "-"}
_SUPERSCRIPT = str.maketrans("-0123456789", "\u207b\u2070\u00b9\u00b2\u00b3\u2074\u2075"
                                            "\u2076\u2077\u2078\u2079")
#: Readable strides between labelled decades: 1, 2, 5, 10, 20, 50, …
_STRIDES = (1, 2, 5)


def _style(style: str) -> str:
    if style not in STYLES:
        raise ValueError(f"unknown number style {style!r}; use one of {STYLES}")
    return style


def _finite(x: Number, style: str, none: str) -> tuple[str | None, float]:
    """``(text, nan)`` for a value that is not a finite number (``none`` for None or NaN, ``∞``
    for an infinity), ``(None, float(x))`` for a finite one; ``style`` checked first."""
    _style(style)
    if x is None:
        return none, math.nan
    v = float(x)
    if math.isnan(v):
        return none, v
    if math.isinf(v):
        inf = {"latex": r"\infty", "text": "∞", "plain": "inf"}[style]
        return (inf if v > 0 else _MINUS[style] + inf), v
    return None, v


def _signed(text: str, style: str) -> str:
    return _MINUS[style] + text[1:] if text.startswith("-") else text


def _pow10(exponent: int, style: str) -> str:
    if style == "latex":
        return f"10^{{{exponent}}}"
    if style == "plain":
        return f"1e{exponent:+03d}"
    return "10" + str(exponent).translate(_SUPERSCRIPT)


def _scientific(mantissa: str, exponent: int, style: str) -> str:
    """``mantissa × 10^exponent``, ``10^exponent`` alone for a mantissa of 1."""
    sign = ""
    if mantissa.startswith("-"):
        sign, mantissa = _MINUS[style], mantissa[1:]
    if style == "plain":
        return f"{sign}{mantissa}e{exponent:+03d}"
    if mantissa == "1":
        return sign + _pow10(exponent, style)
    times = r" \times " if style == "latex" else " × "
    return f"{sign}{mantissa}{times}{_pow10(exponent, style)}"


def _round_sig(v: float, digits: int) -> str:
    """``v`` to ``digits`` significant digits, positional, trailing zeros kept; whole
    digits never dropped."""
    mag = math.floor(math.log10(abs(v)))
    decimals = max(digits - 1 - mag, 0)
    text = f"{v:.{decimals}f}"
    # rounding may carry into a new digit (9.996 -> 10.00): one digit fewer after the point
    new = math.floor(math.log10(abs(float(text)))) if float(text) else mag
    if new > mag and decimals > 0:
        text = f"{v:.{decimals - 1}f}"
    return text


def sig(x: Number, digits: int = DIGITS, *, style: str = "text", none: str = "—") -> str:
    """A measured number to ``digits`` significant digits (the module's policy): ``none``
    for None or NaN, ``∞`` for an infinity."""
    missing, v = _finite(x, style, none)
    if missing is not None:
        return missing
    if v == 0:
        return "0"
    if LOW <= abs(v) < HIGH:
        text = _round_sig(v, digits)
        extra = 0
        while abs(float(text)) == 1.0 and abs(v) != 1.0 and extra < EXTRA:
            extra += 1
            text = _round_sig(v, digits + extra)
        return _signed(text, style)
    mant, _, exp = f"{v:.{digits - 1}e}".partition("e")
    return _scientific(mant, int(exp), style)


def factor(x: Number, *, style: str = "text", none: str = "—") -> str:
    """A per-step factor (10^slope): :func:`sig`; distinct from 1 unless it is 1."""
    return sig(x, style=style, none=none)


def steps(x: Number, *, style: str = "text", none: str = "—") -> str:
    """A number of steps that was measured or fitted (an e-folding lag): :func:`sig`."""
    return sig(x, style=style, none=none)


def r2(x: Number, *, style: str = "text", none: str = "—") -> str:
    """A coefficient of determination: three decimals (``0.963``), more if that would
    read 1.000 for a value that is not 1; ``none`` when it is undefined."""
    missing, v = _finite(x, style, none)
    if missing is not None:
        return missing
    decimals = 3
    text = f"{v:.{decimals}f}"
    while abs(float(text)) == 1.0 and abs(v) != 1.0 and decimals < 3 + EXTRA:
        decimals += 1
        text = f"{v:.{decimals}f}"
    return _signed(text, style)


def fixed(x: Number, places: int = 3, *, style: str = "text", none: str = "—") -> str:
    """A logarithm (a log10 norm, an exponent in nats per step) to ``places`` decimals,
    never in powers of ten: ``-12.345``, ``-0.634``; ``−∞`` (``-inf`` plain) where the
    number it is the logarithm of is 0; ``none`` for None or NaN."""
    missing, v = _finite(x, style, none)
    if missing is not None:
        return missing
    return _signed(f"{v:.{places}f}", style)


def given(x: Number, *, style: str = "text", none: str = "—") -> str:
    """A number that was given, not measured (a bias, a threshold, a grid value): exact,
    as short as it reads back: ``0``, ``-2`` (``−2``), ``0.2``, ``10⁻⁶``,
    ``2.5 × 10⁻⁷``."""
    missing, v = _finite(x, style, none)
    if missing is not None:
        return missing
    if v == 0:
        return "0"
    if v == int(v) and abs(v) < HIGH:
        return _signed(str(int(v)), style)
    if LOW <= abs(v) < HIGH:
        return _signed(repr(v), style)
    for p in range(17):  # the shortest mantissa that reads back as v
        text = f"{v:.{p}e}"
        if float(text) == v:
            break
    mant, _, exp = text.partition("e")
    return _scientific(mant, int(exp), style)


def power(v: float, *, style: str = "latex") -> str:
    """A log-axis tick label: ``10^{-6}``, ``2 \\times 10^{-6}`` (mantissa as given)."""
    style = _style(style)
    exp = math.floor(math.log10(v) + 1e-9)
    mant = v / 10.0 ** exp
    m = given(round(mant, 6), style=style)
    return _scientific("1" if m == "1" else m, exp, style)


def decade_step(lo: float, hi: float) -> int:
    """The stride (in decades) between labelled ticks of a log axis spanning 10^lo …
    10^hi: 1, 2, 5, 10, 20, 50, … — the first with at most :data:`MAX_TICKS` labels."""
    span = max(hi - lo, 0.0)
    scale = 1
    while True:
        for s in _STRIDES:
            stride = s * scale
            first, last = math.ceil(lo / stride - 1e-9), math.floor(hi / stride + 1e-9)
            if last - first + 1 <= MAX_TICKS or stride > span:
                return stride
        scale *= 10


def log_ticks(vmin: float, vmax: float) -> tuple[list[float], list[float]]:
    """(major, minor) tick values of a log axis showing ``vmin`` … ``vmax`` (> 0): major at
    every :func:`decade_step`-th decade, minor at the decades between; a range with fewer
    than two decades in it gets major ticks at 1, 2 and 5 × 10^k and minor ones at the
    other whole multiples (all of them labelled if that leaves fewer than two)."""
    if not (vmin > 0 and vmax > 0 and math.isfinite(vmin) and math.isfinite(vmax)):
        return [], []
    lo, hi = sorted((math.log10(vmin), math.log10(vmax)))
    first, last = math.ceil(lo - 1e-9), math.floor(hi + 1e-9)
    if last - first + 1 >= 2:
        stride = decade_step(lo, hi)
        major = [10.0 ** k for k in range(first, last + 1) if k % stride == 0]
        minor = [10.0 ** k for k in range(first, last + 1) if k % stride != 0]
        if len(major) < 2:  # a stride wider than the range: every decade in it
            major, minor = [10.0 ** k for k in range(first, last + 1)], []
        return major, minor
    major, minor = [], []
    for k in range(math.floor(lo) - 1, math.ceil(hi) + 1):
        for m in range(1, 10):
            v = m * 10.0 ** k
            if lo - 1e-9 <= math.log10(v) <= hi + 1e-9:
                (major if m in (1, 2, 5) else minor).append(v)
    if len(major) < 2:  # under half a decade: every whole multiple is labelled
        major, minor = sorted(major + minor), []
    return major, minor

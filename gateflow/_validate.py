"""Checking what a user passes: one validator per kind of argument, shared by every layer.

Each returns the value in its canonical form or raises :class:`GateflowError` with one line
that says what is wrong and what would be right.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Iterable
from numbers import Integral, Real

from gateflow._errors import GateflowError

__all__ = ["MAX_DIGITS", "choose", "choose_many", "closest", "integer_text", "is_integer_text",
           "items_of", "real", "real_array", "shown", "whole"]

#: The most digits a number written by a user may have (every 18-digit number fits an
#: int64; Python's own limit, 4300, gives a traceback-shaped message).
MAX_DIGITS = 18
_ASCII_DIGITS = frozenset("0123456789")


def shown(value, limit: int = 60) -> str:
    """``repr(value)`` for an error message: one line, at most ``limit`` characters; arrays
    are described by dtype and shape."""
    try:
        shape, ndim = getattr(value, "shape", None), getattr(value, "ndim", None)
        if isinstance(shape, tuple) and isinstance(ndim, int) and ndim > 0:
            kind = f"{type(value).__name__} of dtype {getattr(value, 'dtype', '?')}"
            return f"a {kind}, shape {shape}"
        text = " ".join(repr(value).split())
    except Exception:  # a hostile __getattr__ or __repr__
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def closest(word: str, choices) -> str:
    """``" (did you mean 'lstm'?)"`` or, without a close match, the list of valid names."""
    choices = list(choices)
    folded = {str(c).casefold(): c for c in choices}  # 'LSTN' is as close to 'lstm' as 'lstn'
    near = ([folded[m] for m in difflib.get_close_matches(word.casefold(), list(folded), n=3,
                                                           cutoff=0.5)]
            if isinstance(word, str) else [])
    if near:
        return " (did you mean " + " or ".join(repr(n) for n in near) + "?)"
    return " (valid: " + ", ".join(choices) + ")"


def choose(value, valid, what: str) -> str:
    """``value`` if it is one of the names ``valid``; else a :class:`GateflowError` naming the
    closest valid ones (``what`` names the argument: "cell", "format", "norm", ...)."""
    if not isinstance(value, str):
        raise GateflowError(f"{what} must be a name, one of {', '.join(valid)}; got {shown(value)}")
    if value not in valid:
        raise GateflowError(f"unknown {what} {shown(value)}{closest(value, valid)}")
    return value


def choose_many(value, valid, what: str, *, allow_empty: bool = False) -> tuple[str, ...]:
    """Names from ``valid``: a comma-separated string or an iterable of names, at least one
    unless ``allow_empty``; duplicates are dropped (order kept)."""
    return tuple(dict.fromkeys(choose(v, valid, what)
                               for v in items_of(value, valid, what, allow_empty=allow_empty)))


def items_of(value, valid, what: str, *, split: Callable[[str], Iterable[str]] | None = None,
             allow_empty: bool = False) -> list:
    """The items of ``value``, not yet checked: a string split by ``split`` (at commas by
    default), blanks dropped, or an iterable of names (a 1-d array too); at least one
    unless ``allow_empty`` (``valid``, the names, only for the messages)."""
    if isinstance(value, str):
        items = [v.strip() for v in (split or _commas)(value) if v.strip()]
    elif isinstance(value, (list, tuple, set, frozenset, dict)) or (
            hasattr(value, "__iter__") and getattr(value, "ndim", 1) == 1):
        items = list(value)
    else:
        raise GateflowError(f"{what}s must be a tuple of names or a comma-separated string, "
                            f"from {', '.join(valid)}; got {shown(value)}")
    if not items and not allow_empty:
        raise GateflowError(f"no {what} chosen; choose at least one of {', '.join(valid)}")
    return items


def _commas(text: str) -> list[str]:
    return text.split(",")


def is_integer_text(text) -> bool:
    """Whether ``text`` is a whole number as gateflow reads one: ASCII digits 0-9 only (an
    optional leading ``-`` or ``+``), at most :data:`MAX_DIGITS` of them. ``int`` accepts
    more (fullwidth ``１``, Arabic-Indic digits, ``1_000``, surrounding spaces) and fails
    past 4300 digits; none of those is a number a user means here."""
    if not isinstance(text, str):
        return False
    body = text[1:] if text[:1] in ("-", "+") else text
    return 0 < len(body) <= MAX_DIGITS and set(body) <= _ASCII_DIGITS


def integer_text(text, what: str, fix: str = "") -> int:
    """``text`` (see :func:`is_integer_text`) as an int, or a GateflowError
    ``"{what}: '…' is not an integer (why); {fix}"`` whose quote is bounded."""
    if is_integer_text(text):
        return int(text)
    body = str(text)[1:] if str(text)[:1] in ("-", "+") else str(text)
    why = (f" (more than {MAX_DIGITS} digits)" if len(body) > MAX_DIGITS
           and set(body) <= _ASCII_DIGITS
           else " (digits 0-9 only)" if any(c.isdigit() for c in body) else "")
    raise GateflowError(f"{what}: {shown(text)} is not an integer{why}"
                        + (f"; {fix}" if fix else ""))


def whole(value, what: str, lo: int = 1, hi: int | None = None) -> int:
    """``value`` as an int in ``lo..hi`` (Python or NumPy integers; not bool, float or str)."""
    span = (f"in {lo}..{hi}" if hi is not None else "a positive integer" if lo == 1
            else f">= {lo}")
    need = span if hi is None and lo == 1 else f"an integer {span}"
    if isinstance(value, bool) or not isinstance(value, Integral) or int(value) < lo \
            or (hi is not None and int(value) > hi):
        raise GateflowError(f"{what} must be {need}, got {shown(value)}")
    return int(value)


def real(value, what: str, *, lo: float | None = None, positive: bool = False,
         allow_inf: bool = False) -> float:
    """``value`` as a float: a real number (not bool, str or array), not NaN, finite unless
    ``allow_inf``, and ``>= lo`` or ``> 0`` when asked."""
    if isinstance(value, (bool, str, bytes)) or not isinstance(value, Real):
        raise GateflowError(f"{what} must be a real number, got {shown(value)}")
    try:
        v = float(value)
    except OverflowError:  # an int (or Fraction) beyond the float range: 10**400
        raise GateflowError(f"{what} must be a finite number, got one beyond the float range "
                            f"({shown(value, 30)})") from None
    if math.isnan(v) or (math.isinf(v) and not allow_inf):
        raise GateflowError(f"{what} must be a finite number, got {v}")
    if (positive and not v > 0) or (lo is not None and v < lo):
        raise GateflowError(f"{what} must be {'> 0' if positive else f'>= {lo}'}, got {v}")
    return v


def real_array(value, what: str):
    """``value`` as a host NumPy array (CuPy arrays are copied over) of real numbers: float
    or int, not bool, complex, object, strings or ragged nested lists. Shapes and values are
    the caller's to check."""
    import numpy as np

    if hasattr(value, "__cuda_array_interface__"):
        import cupy

        value = cupy.asnumpy(value)
    try:
        a = np.asarray(value)
    except (ValueError, TypeError):  # ragged nested lists, hostile objects
        raise GateflowError(f"{what} is not a rectangular array of numbers (a ragged nested "
                            f"list?), got {shown(value)}; pass a NumPy array of real numbers"
                            ) from None
    if a.dtype.kind not in "fiu":
        raise GateflowError(f"{what} must hold real numbers; got dtype {a.dtype} "
                            f"(from {shown(value)})")
    return a

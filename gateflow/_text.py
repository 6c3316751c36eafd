"""Text from outside gateflow, made safe to print: the one helper every printed line uses.

Names read from a file (ONNX node names, Keras layer names, PyTorch keys), paths (a file
name need not be UTF-8) and what a user typed may hold anything. Printed as they are, an
escape sequence would drive the terminal (``ESC [2J`` clears it, OSC 52 writes the
clipboard), a bidi override would reorder what is read, a newline would make one message
two, and a 200,000-character name would make a 200 KB line. So:

* :func:`safe` writes every character a terminal could act on as a visible escape: the C0
  and C1 controls, DEL, line and paragraph separators, format characters (bidi overrides
  and isolates, zero-width and invisible "tag" characters) and the lone surrogates Python
  uses for the bytes of a file name that are not UTF-8 (``\\xff``, the byte itself).
  ``\\n``, ``\\r`` and ``\\t`` are written so, the rest as ``\\x1b``, ``\\u202e``,
  ``\\U000e0041``. Everything else, accents and CJK included, is kept as it is.
* :func:`elide` shortens a text in the middle (``abc…xyz``), so both ends stay readable.
* :func:`one_line` is a message: whitespace runs (newlines included) become one space, the
  rest is :func:`safe`, a word longer than :data:`WORD_LIMIT` characters is elided, and the
  line is at most :data:`LINE_LIMIT` characters.

Rich markup is the printing side's business: whatever prints through rich prints these
strings as ``rich.text.Text`` (never parsed as markup), see
:mod:`gateflow.presentation._console`.

This module is the lowest layer: it imports nothing of gateflow.
"""

from __future__ import annotations

import os
import re
import unicodedata

__all__ = ["LINE_LIMIT", "WORD_LIMIT", "elide", "has_unsafe", "one_line", "safe"]

#: The longest word (a run of non-spaces: a name, a path) a message shows whole.
WORD_LIMIT = 160
#: The longest message line.
LINE_LIMIT = 1000
#: What stands for the characters an elided text leaves out.
ELLIPSIS = "…"

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
#: Unicode categories a terminal may act on or that hide or reorder text: controls (C0, DEL,
#: C1), format characters (bidi overrides and isolates, zero-width, tags), surrogates (the
#: undecodable bytes of a file name), line and paragraph separators.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
#: Fast path: text made only of these needs no look at each character.
_PLAIN = re.compile(r"[\x20-\x7e]*")
_WHITESPACE = re.compile(r"\s+")


def _unsafe(ch: str) -> bool:
    return unicodedata.category(ch) in _UNSAFE_CATEGORIES


def _escape(ch: str) -> str:
    if ch in _NAMED:
        return _NAMED[ch]
    code = ord(ch)
    if 0xDC80 <= code <= 0xDCFF:  # a byte of a file name that is not UTF-8 (surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _text(value) -> str:
    """``value`` as a str: a str as it is, bytes or a path of bytes decoded as file names
    are (undecodable bytes kept as surrogates, escaped by :func:`safe`), anything else by
    ``str`` (a failing ``__str__`` gives its type's name)."""
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):
        return os.fsdecode(bytes(value))
    try:
        return str(value)
    except Exception:  # a hostile __str__
        return f"<{type(value).__name__}>"


def has_unsafe(text) -> bool:
    """Whether :func:`safe` would change ``text``."""
    text = _text(text)
    return _PLAIN.fullmatch(text) is None and any(_unsafe(ch) for ch in text)


def safe(text) -> str:
    """``text`` with every character a terminal could act on written as a visible escape
    (``\\x1b``, ``\\n``, ``\\u202e``; an undecodable file-name byte as ``\\xff``)."""
    text = _text(text)
    if _PLAIN.fullmatch(text) is not None:
        return text
    return "".join(_escape(ch) if _unsafe(ch) else ch for ch in text)


def elide(text, limit: int = WORD_LIMIT) -> str:
    """``text`` if it has at most ``limit`` characters, else its two ends around ``…``
    (``limit`` characters in all)."""
    text = _text(text)
    if len(text) <= limit:
        return text
    keep = max(limit - len(ELLIPSIS), 2)
    head = (keep + 1) // 2
    return text[:head] + ELLIPSIS + text[len(text) - (keep - head):]


def one_line(text, limit: int = LINE_LIMIT, word: int = WORD_LIMIT) -> str:
    """``text`` as one printable line: whitespace runs (newlines, tabs) as one space,
    :func:`safe`, every word longer than ``word`` characters and then the line elided to
    at most ``limit`` characters. Applying it twice changes nothing more."""
    text = _text(text)
    if len(text) > 8 * limit:  # a huge text: only its two ends can be shown anyway
        text = text[:4 * limit] + ELLIPSIS + text[-4 * limit:]
    parts = [elide(safe(w), word) for w in _WHITESPACE.split(text.strip())]
    return elide(" ".join(p for p in parts if p), limit)

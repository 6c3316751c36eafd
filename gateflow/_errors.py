"""The one exception type gateflow raises for anything a user can get wrong.

A message names the *parameter* that was wrong the way the caller spelled it: a Python
caller passed ``layer=5`` and reads "layer 5 is out of range"; the command line's user typed
``--layer 5`` and reads ``--layer 5 is out of range``. The layers below the command line
never write a flag: they mark a parameter's name with ``arg`` (``f"{arg('layer')} 5 is
out of range"``), ``str(err)`` shows it as the name, and the command line renders the same
error with its own flags (:meth:`GateflowError.render`, given the one table that maps each
parameter to its flag). No text is searched for words: the mark is a structured token.

The same marks serve text that is not an error: a ``note:`` line says ``--batch-first if
not`` on the command line and ``batch_first if not`` to a Python caller. :func:`spell` writes
a marked text in the current caller's words; the command line sets them for the length of
a command with :func:`spelling` (a context variable: nothing global is changed).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from gateflow._text import LINE_LIMIT, one_line

__all__ = ["GateflowError", "arg", "as_given", "spell", "spelling"]

#: What brackets a parameter's name inside a message: two control characters no message
#: text carries (text from outside is escaped by :func:`gateflow._text.one_line` when the
#: message is rendered, so a stray one prints as ``\x1e``, never as a parameter).
_OPEN, _CLOSE = "\x1e", "\x1f"
_MARK = re.compile(f"{_OPEN}([A-Za-z_][A-Za-z0-9_]*){_CLOSE}")


def arg(name: str) -> str:
    """The parameter ``name`` inside a :class:`GateflowError` message: shown as ``name``
    to a Python caller, as its flag (``--name``) on the command line."""
    if not name.isidentifier():
        raise ValueError(f"a parameter name is an identifier, got {name!r}")
    return f"{_OPEN}{name}{_CLOSE}"


def _as_is(name: str) -> str:
    return name


#: How the current caller spells a parameter (the command line: its flag).
_SPELLING: ContextVar[Callable[[str], str]] = ContextVar("gateflow_spelling", default=_as_is)


@contextmanager
def spelling(name_of: Callable[[str], str]) -> Iterator[None]:
    """Within the block, :func:`spell` and ``str(err)`` write each marked parameter as
    ``name_of(parameter)`` (the command line: ``--layer``)."""
    token = _SPELLING.set(name_of)
    try:
        yield
    finally:
        _SPELLING.reset(token)


def as_given(name: str) -> str:
    """The parameter ``name`` as the current caller spells it (``--cell`` on the command
    line, ``cell`` to a Python caller), for text that is data rather than an error (a
    ``note:`` line, what a file's reader assumed): spelled when it is made."""
    return spell(arg(name))


def spell(text: str) -> str:
    """``text`` with each parameter marked by ``arg`` written in the current caller's
    words (:func:`spelling`; a Python caller: the parameter's name)."""
    name_of = _SPELLING.get()
    return _MARK.sub(lambda m: name_of(m.group(1)), text)


class GateflowError(ValueError):
    """Bad input: an unknown cell or block, a malformed weight file, wrong shapes, ...

    The message is one line that says what is wrong and how to fix it. The CLI prints it
    and exits with status 2; library users can catch it like any ``ValueError``.

    Whatever a message quotes (a name read from a file, a path, a value) it stays one
    printable line of bounded length (:func:`gateflow._text.one_line`): control
    characters are escaped, a name of 200,000 characters is elided in the middle.

    ``param`` is the parameter the error is about (the Python name: ``"layer"``,
    ``"blocks"``), given or else the first one the message names with ``arg``;
    ``params`` every parameter it names. :meth:`render` writes the message with each
    parameter spelled as the caller knows it (the command line: its flag).
    """

    def __init__(self, *args: object, param: str | None = None) -> None:
        template = args[0] if len(args) == 1 and isinstance(args[0], str) else None
        if template is not None:
            if len(template) > 8 * LINE_LIMIT:  # only its two ends can be shown anyway
                template = template[:4 * LINE_LIMIT] + " … " + template[-4 * LINE_LIMIT:]
            args = (one_line(_MARK.sub(r"\1", template)),)
        self.template = template
        self.params: tuple[str, ...] = tuple(dict.fromkeys(
            _MARK.findall(template or "")))
        self.param = param if param is not None else next(iter(self.params), None)
        super().__init__(*args)

    def render(self, name_of: Callable[[str], str] | None = None) -> str:
        """The message with every parameter it names written ``name_of(parameter)``
        (default: the current caller's words, :func:`spelling`); ``str(err)`` is
        ``render()``."""
        if self.template is None or not self.params:
            return super().__str__()
        name_of = _SPELLING.get() if name_of is None else name_of
        return one_line(_MARK.sub(lambda m: name_of(m.group(1)), self.template))

    def __str__(self) -> str:
        return self.render()

    def marked(self) -> str:
        """The message with its parameters still marked, to quote inside another
        error's message (``GateflowError(f"{path}: {err.marked()}")``) without losing
        them."""
        return self.template if self.template is not None else str(self)

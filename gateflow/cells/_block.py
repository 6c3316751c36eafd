"""The one typed name of a Jacobian block: ``Block("c", "c")`` is ∂c_T/∂c_{T−k}.

A block is written ``"X/Y"`` wherever a person or a file spells it (``--blocks c/c``, the
JSON contract's keys, ``blocks=["h/h"]``). It is parsed once, where it enters gateflow
(the CLI, the public API, a result read back from disk: :meth:`Block.parse`); every layer
below reads its parts as attributes, never by splitting text.

``Block`` *is* that string (a ``str`` subclass), so a result's ``blocks["c/c"]`` and a
saved file's keys are unchanged; its parts are fixed when it is made:

* ``out`` — X, the state block whose rows are measured (an output, at time T);
* ``wrt`` — Y, what it is differentiated against, at time T − k: a state block of the
  cell (``c``, or a stack's ``h_l0``), the input ``x``, or a stack's emitted output
  ``y_lj`` (what a hook on layer j sees).

Which blocks a cell has is the cell's fact (:attr:`Cell.blocks`, :attr:`Cell.input_blocks`,
:func:`gateflow.cells._stack.output_blocks`); this module only names them.
"""

from __future__ import annotations

from gateflow._errors import GateflowError
from gateflow._text import safe

__all__ = ["Block"]

SEPARATOR = "/"


class Block(str):
    """∂out_T/∂wrt_{T−k}, spelled ``"out/wrt"``. Build one with ``Block.of(out, wrt)`` or
    ``Block.parse(text)``; both check that each part is one non-empty name."""

    __slots__ = ("out", "wrt")
    out: str
    wrt: str

    def __new__(cls, out: str, wrt: str) -> Block:
        for part in (out, wrt):
            if not isinstance(part, str) or not part or SEPARATOR in part or part != part.strip():
                raise GateflowError(f"a block is two names X/Y (∂X_T/∂Y_(T−k)); got the part "
                                    f"{safe(repr(part))}")
        self = super().__new__(cls, f"{out}{SEPARATOR}{wrt}")
        object.__setattr__(self, "out", out)  # set once, here (__setattr__ refuses later)
        object.__setattr__(self, "wrt", wrt)
        return self

    @classmethod
    def of(cls, out: str, wrt: str) -> Block:
        """The block ∂out_T/∂wrt_{T−k}."""
        return cls(out, wrt)

    @classmethod
    def parse(cls, text) -> Block:
        """``"X/Y"`` (or a ``Block``) as a ``Block``; anything else is a ``GateflowError``."""
        if isinstance(text, Block):
            return text
        if not isinstance(text, str) or text.count(SEPARATOR) != 1:
            raise GateflowError(f"a block is written X/Y (∂X_T/∂Y_(T−k)), e.g. c/c or h/x; "
                                f"got {safe(repr(text))}")
        out, wrt = text.split(SEPARATOR)
        return cls(out, wrt)

    def __setattr__(self, name, value):
        raise AttributeError("a Block is immutable; make another (Block.of(out, wrt))")

    # repr is str's ('c/c'): messages quote a block as the user writes it.

    def __reduce__(self):  # pickles (multiprocessing, dask) as the record it is
        return (Block, (self.out, self.wrt))

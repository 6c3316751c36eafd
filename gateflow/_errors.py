"""The one exception type gateflow raises for anything a user can get wrong."""

from __future__ import annotations

from gateflow._text import one_line


class GateflowError(ValueError):
    """Bad input: an unknown cell or block, a malformed weight file, wrong shapes, ...

    The message is one line that says what is wrong and how to fix it. The CLI prints it
    and exits with status 2; library users can catch it like any ``ValueError``.

    Whatever a message quotes (a name read from a file, a path, a value) it stays one
    printable line of bounded length (:func:`gateflow._text.one_line`): control
    characters are escaped, a name of 200,000 characters is elided in the middle.
    """

    def __init__(self, *args: object) -> None:
        if len(args) == 1 and isinstance(args[0], str):
            args = (one_line(args[0]),)
        super().__init__(*args)

"""The one exception type gateflow raises for anything a user can get wrong."""

from __future__ import annotations


class GateflowError(ValueError):
    """Bad input: an unknown cell or block, a malformed weight file, wrong shapes, ...

    The message is one line that says what is wrong and how to fix it. The CLI prints it
    and exits with status 2; library users can catch it like any ``ValueError``.
    """

"""Interrupts that cannot be lost.

The CLI turns SIGINT and SIGTERM into exceptions in the main thread. Python drops an
exception raised where it cannot propagate (inside an import lock's or a weakref's
callback: "Exception ignored in ..."), so a Ctrl-C at such a moment would be lost and the
run would go on. The signal handlers therefore also *record* the request here, and every
long loop calls :func:`check` once per step: a recorded interrupt is raised again at the
next step, in the main thread or a worker thread (whose exception reaches the main thread
through its future).
"""

from __future__ import annotations

import signal
import threading

__all__ = ["Terminated", "check", "request", "requested", "reset"]

_requested = threading.Event()
_signum: list[int] = []


class Terminated(BaseException):
    """A SIGTERM, raised like KeyboardInterrupt so that cleanup runs on the way out."""


def request(signum: int) -> None:
    """Record that the process was asked to stop by ``signum``."""
    _signum[:] = [signum]
    _requested.set()


def requested() -> int | None:
    """The signal that asked the process to stop, or None."""
    return _signum[0] if _requested.is_set() and _signum else None


def reset() -> None:
    """Forget a recorded request (a new command starts)."""
    _requested.clear()
    _signum.clear()


def check() -> None:
    """Raise the recorded interrupt, if any: KeyboardInterrupt or :class:`Terminated`."""
    if _requested.is_set():
        raise Terminated if _signum and _signum[0] == signal.SIGTERM else KeyboardInterrupt

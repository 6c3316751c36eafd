"""Interrupts that cannot be lost, and that never lie about what was written.

The command line turns SIGINT and SIGTERM into exceptions in the main thread while a
command runs (:func:`on_signal`), so that the command unwinds: staged files and folders are
removed, nothing partial is left. Around that:

* **Lost interrupts.** Python drops an exception raised where it cannot propagate (inside
  an import lock's or a weakref's callback: "Exception ignored in ..."), so a Ctrl-C at
  such a moment would be lost and the run would go on. The handlers therefore also
  *record* the request here, and every long loop calls :func:`check` once per step: a
  recorded interrupt is raised again at the next step, in the main thread or a worker
  thread (whose exception reaches the main thread through its future).
* **Before and after a command** (start-up, typer's parsing, the interpreter's exit) the
  handlers :func:`install` puts first thing in ``python -m gateflow`` and the ``gateflow``
  script end the process at once with one line and 130 (SIGINT) or 143 (SIGTERM): no
  ``KeyboardInterrupt`` traceback from an import half-way.
* **A second signal while the first unwinds** the command is counted, not raised: the
  cleanup finishes and the exit status stays the first signal's (never -2, the default
  handler's). A third ends the process at once.
* **The interpreter's last steps.** After the exit handlers ran, CPython puts every signal
  with a Python handler back to its default action (``_PySignal_Fini``) and then tears the
  modules down (long after torch, dask or matplotlib): a signal there would kill the
  process with -2/-15 instead of its status. The last exit handler (:func:`_at_exit`,
  registered by :func:`install`, so run after every library's) sets SIGINT and SIGTERM to
  ``SIG_IGN``, which CPython keeps: by then the command has said its last line, every
  output is committed and the streams are flushed once more by CPython itself.
* **Commits.** The few statements that move finished outputs into place run
  :func:`deferred`: a signal there is raised when they are done (:func:`check`), and
  :func:`committed`
  records what they placed, so the interrupted line says what was written
  (:func:`line`), never "nothing was written" when something was.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from gateflow._text import one_line, safe

__all__ = ["Terminated", "check", "committed", "deferred", "finish", "install", "line",
           "lost", "on_signal", "request", "requested", "reset", "written"]

_requested = threading.Event()
_signum: list[int] = []
#: Outputs this command moved into place (paths, escaped), for the interrupted line.
_written: list[str] = []


class _State:
    """Where the command stands: whether an interrupt is unwinding it, how many signals
    came, how deep in :func:`deferred` blocks it is, and its exit status once it said it."""

    raising: bool = False
    count: int = 0
    deferring: int = 0
    finished: int | None = None
    #: Whether :func:`_at_exit` is registered (once per process).
    at_exit: bool = False


_state = _State()
#: How many signals end the process at once while the first one unwinds the command.
_FORCE = 3


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
    """Forget a recorded request and what was written (a new command starts)."""
    _requested.clear()
    _signum.clear()
    _written.clear()
    _state.raising, _state.count, _state.deferring, _state.finished = False, 0, 0, None


def _exception() -> BaseException:
    return Terminated() if _signum and _signum[0] == signal.SIGTERM else KeyboardInterrupt()


def check() -> None:
    """Raise the recorded interrupt, if any: KeyboardInterrupt or :class:`Terminated`."""
    if _requested.is_set():
        _state.raising = True
        raise _exception()


def lost() -> None:
    """An interrupt raised by :func:`on_signal` was dropped by Python (reported as
    unraisable): the next signal raises again (and :func:`check` raises it anyway)."""
    _state.raising = False


def committed(*paths) -> None:
    """Record outputs this command has moved into place (call it inside :func:`deferred`)."""
    _written.extend(safe(p) for p in paths)
    del _written[:-20]


def written() -> tuple[str, ...]:
    """The outputs recorded by :func:`committed` since the command started."""
    return tuple(_written)


def line(signum: int | None = None) -> str:
    """What an interrupted command says: ``interrupted (Ctrl-C); nothing was written``, or
    ``... after writing r.json, p.png; nothing else was written``."""
    signum = signum if signum is not None else (requested() or signal.SIGINT)
    what = "terminated (SIGTERM)" if signum == signal.SIGTERM else "interrupted (Ctrl-C)"
    if _written:
        return one_line(f"{what} after writing {', '.join(_written)}; nothing else was "
                        "written")
    return f"{what}; nothing was written"


@contextmanager
def deferred() -> Iterator[None]:
    """A block a signal does not cut in two (a commit): a signal while it runs is only
    recorded; the caller raises it with :func:`check` once the block's work is complete
    (outside its own cleanup). Only while the command line's handlers are installed."""
    _state.deferring += 1
    try:
        yield
    finally:
        _state.deferring -= 1


def finish(code: int) -> None:
    """The command line has printed its last line and exits with ``code``."""
    _state.finished = code


def on_signal(signum: int, frame) -> None:
    """The handler while a command runs: the first signal is recorded and raised in the
    main thread (KeyboardInterrupt, or :class:`Terminated` for SIGTERM), or at the end of
    a :func:`deferred` block; later ones let the first one's cleanup finish."""
    if not _requested.is_set():
        request(signum)
    _state.count += 1
    if _state.deferring:
        return
    if _state.raising:
        if _state.count >= _FORCE:
            _exit_now()
        return
    _state.raising = True
    raise _exception()


def _outside(signum: int, frame) -> None:
    """The handler outside a command: end the process now with one line (nothing of a
    command is under way), unless a command is cleaning up after a first signal or has
    already said why it failed."""
    if _requested.is_set():
        _state.count += 1
        if _state.count >= _FORCE:
            _exit_now()
        return
    if _state.finished not in (None, 0):
        return
    request(signum)
    _exit_now()


def _exit_now() -> None:
    """Flush what was printed, say the one line (unless the command line has said its
    last one already), and end the process with 128 + signal."""
    signum = requested() or signal.SIGINT
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except BaseException:  # a broken pipe, a flush this signal interrupted
            pass
    if _state.finished is None:
        try:
            os.write(2, f"error: {line(signum)}\n".encode("utf-8", "backslashreplace"))
        except OSError:
            pass
    os._exit(128 + signum)


def install() -> None:
    """Handle SIGINT and SIGTERM for the whole process (the command line's entry points,
    first thing): outside a command, a signal ends it with one line and 130/143."""
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, _outside)
        if not _state.at_exit:
            _state.at_exit = True
            atexit.register(_at_exit)  # registered first thing, so it runs last


def _at_exit() -> None:
    """The interpreter's last exit handler: SIGINT and SIGTERM are ignored from here on
    (CPython keeps ``SIG_IGN`` where it would reset :func:`_outside` to the default action,
    which kills with -2/-15), so the exit status stays the one the command chose. Only
    where the handlers are still gateflow's."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            if signal.getsignal(sig) is _outside:
                signal.signal(sig, signal.SIG_IGN)
        except (ValueError, OSError):  # not the main thread: nothing to change
            pass

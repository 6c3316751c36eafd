"""The command line's shell: the app, every command's class, and how errors, usage
mistakes, signals and a broken standard output end a command (one ``error:`` line, the
exit status). See :mod:`gateflow.cli` for the conventions; no math lives here.
"""

from __future__ import annotations

import errno
import math
import os
import re
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup

from gateflow import _interrupt
from gateflow._errors import GateflowError, spelling
from gateflow._interrupt import Terminated
from gateflow._text import one_line, safe
from gateflow._validate import closest, integer_text, is_integer_text, shown
from gateflow._version import __version__
from gateflow.cli._options import flag_namer

#: Exit status for anything the user got wrong (matches click's usage errors).
USAGE_EXIT = 2
#: Exit statuses after SIGINT and SIGTERM (128 + the signal number, as shells report).
INTERRUPT_EXIT = 128 + signal.SIGINT
TERMINATE_EXIT = 128 + signal.SIGTERM


def fail(message: object, code: int = USAGE_EXIT) -> typer.Exit:
    """Print ``error: <message>`` as one line on stderr (escaped and bounded:
    :func:`gateflow._text.one_line`); return the Exit to raise."""
    line = one_line(message) or type(message).__name__
    try:
        typer.echo(f"error: {line}", err=True)
    except (OSError, ValueError):  # stderr is gone too: the exit status still says it
        pass
    _interrupt.finish(code)
    return typer.Exit(code)


def _after_commit(message: str) -> str:
    """``message``, and what the command had already written when it failed (an error
    after an output was committed must not read as if nothing was)."""
    done = _interrupt.written()
    return f"{message}; already written: {', '.join(done)}" if done else message


def _stdout_problem() -> str | None:
    """Why standard output cannot take what a command prints, or None: closed (``>&-``),
    or a pipe whose reader has exited (``poll`` reports POLLERR on its writing end)."""
    out = sys.stdout
    if out is None or getattr(out, "closed", False):
        return "standard output is closed"
    try:
        fd = out.fileno()
    except (AttributeError, OSError, ValueError):
        return None  # not a file (a test's capture): nothing to look at
    try:
        os.fstat(fd)
    except OSError:
        return "standard output is closed"
    try:
        import select

        poller = select.poll()
        poller.register(fd, 0)  # POLLERR, POLLHUP and POLLNVAL are always reported
        if any(ev & (select.POLLERR | select.POLLNVAL) for _, ev in poller.poll(0)):
            return "standard output is a pipe whose reader has exited (broken pipe)"
    except (AttributeError, OSError, ValueError):
        pass
    return None


def _silence_broken_stdout() -> None:
    """After standard output broke, point it at the null device: the interpreter's last
    flush of what is still buffered would otherwise add an "Exception ignored" traceback
    to the one error line (https://docs.python.org/3/library/signal.html#note-on-sigpipe)."""
    try:
        if _stdout_problem() is None or sys.stdout is None:
            return
        fd = sys.stdout.fileno()
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, fd)
        os.close(null)
    except (AttributeError, OSError, ValueError):
        pass


@contextmanager
def _signals() -> Iterator[None]:
    """While a command runs, SIGTERM raises :class:`Terminated` and SIGINT KeyboardInterrupt
    in the main thread; both are also recorded (:mod:`gateflow._interrupt`), so a signal
    that lands where Python cannot raise is raised again at the next step of the run."""
    _interrupt.reset()
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    hook = sys.unraisablehook

    def unraisable(info) -> None:
        # Python drops an exception raised in a callback ("Exception ignored in ..."); an
        # interrupt dropped that way is recorded and raised again at the next step, so it
        # needs no traceback of its own.
        if isinstance(info.exc_value, (KeyboardInterrupt, Terminated)):
            _interrupt.lost()
        else:
            hook(info)

    previous = {sig: signal.signal(sig, _interrupt.on_signal)
                for sig in (signal.SIGTERM, signal.SIGINT)}
    sys.unraisablehook = unraisable
    try:
        yield
        _interrupt.check()  # one recorded but never raised: the command ends as interrupted
    finally:
        sys.unraisablehook = hook
        for sig, old in previous.items():
            signal.signal(sig, old)


def _quiet_shutdown() -> None:
    """After an interrupt the user has their one line: libraries interrupted half-way (a
    dask cluster still starting) must not add tracebacks from their exit handlers."""
    import logging

    sys.unraisablehook = lambda unraisable: None
    logging.disable(logging.CRITICAL)


def _os_reason(exc: OSError) -> str:
    from gateflow._io import _reason

    where = f"{safe(exc.filename)}: " if isinstance(exc.filename, (str, bytes)) else ""
    return f"{where}{_reason(exc)}"


#: click's UsageError (and its no-arguments-means-help subclass) as this typer raises them:
#: typer >= 0.20 vendors click, older versions use click itself.
UsageError: Any = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")
_NoArgsIsHelp: Any = getattr(sys.modules[UsageError.__module__], "NoArgsIsHelpError", ())

#: What an unknown choice is called in its error line, by parameter: the job layer's words,
#: so that the command line and the API refuse a value in the same terms.
_NOUNS = {"cell": "cell", "fmt": "format", "scheme": "init scheme", "dist":
          "input distribution", "dtype": "dtype", "backend": "backend", "direction": "direction"}


def _param_choices(param: Any) -> tuple[str, ...]:
    """The values an Enum parameter accepts (typer's own choice type, or click's Choice)."""
    raw = getattr(getattr(param, "type_descriptor", None), "choices", None) \
        or getattr(getattr(param, "type", None), "choices", None) or ()
    return tuple(str(getattr(c, "value", c)) for c in raw)


def _refused_value(err: Any) -> tuple[Any] | None:
    """``(value,)``: the value a parameter's type refused, from the exception's data, not
    its words. Typer checks a choice with a pydantic validator and chains its
    ``ValidationError``, whose first error holds the ``input``. None where the exception
    holds no value (click's own ``Choice``, as older typer uses, raises a ``BadParameter``
    with only the parameter and a message): typer's own line is shown then, which names
    the value and the choices too."""
    errors = getattr(err.__cause__, "errors", None)
    if not callable(errors):
        return None
    try:
        first = errors()[0]
    except (IndexError, TypeError, ValueError):
        return None
    return (first["input"],) if isinstance(first, dict) and "input" in first else None


def _unknown_choice(err: Any) -> str | None:
    """``unknown cell 'lstn' (did you mean 'lstm'?)`` for a value outside a parameter's
    choices; None for any other usage error."""
    param = getattr(err, "param", None)
    choices = _param_choices(param)
    refused = _refused_value(err)
    if param is None or not choices or refused is None:
        return None
    value = refused[0]
    noun = _NOUNS.get(param.name) or param.human_readable_name
    return f"unknown {noun} {value!r}{closest(str(value).casefold(), choices)}"


def _usage(err) -> typer.Exit:
    """A bad option or argument, as one line with where to look for help."""
    ctx = err.ctx
    where = f" (see {ctx.command_path} --help)" if ctx is not None else ""
    return fail(f"{_unknown_choice(err) or err.format_message()}{where}")


def _plain_flags(params: list[Any]) -> list[Any]:
    """A flag takes no value, so its help row shows no type (typer would write ``<bool>``)."""
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    return params


def _no_color() -> bool:
    """Whether ``NO_COLOR`` asks for plain text (set and not empty, as no-color.org says)."""
    return os.environ.get("NO_COLOR", "") != ""


@contextmanager
def _plain_help() -> Iterator[None]:
    """Under ``NO_COLOR``, typer's help and usage have no colour and no other style either
    (rich alone would keep bold and dim)."""
    if not _no_color():
        yield
        return
    import typer.rich_utils as rich_utils

    saved = rich_utils.COLOR_SYSTEM
    rich_utils.COLOR_SYSTEM = None
    try:
        yield
    finally:
        rich_utils.COLOR_SYSTEM = saved


def _console(**options: Any) -> Any:
    """A rich Console for the command line's own tables: plain under ``NO_COLOR``."""
    from rich.console import Console

    return Console(color_system=None if _no_color() else "auto", **options)


#: A real number as the command line reads one: ASCII digits, an optional leading ``-``, a
#: decimal point, an exponent (``0.5``, ``-2``, ``1e-6``); never ``1_0``, `` 1``, ``+1``,
#: ``inf``, ``nan``, ``0x10`` or ``１``, all of which Python's ``float`` would take.
_REAL_TEXT = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")
#: The most characters a real number written on the command line may have.
_MAX_REAL_CHARS = 64


def _number_problem(text: str, kind: type, name: str) -> str | None:
    """Why ``text`` is not what option ``name`` takes, or None: for ``int``, ASCII digits
    with an optional leading ``-`` (the command's own check says whether a negative makes
    sense), at most :data:`gateflow._validate.MAX_DIGITS` of them; for ``float``, a finite
    real number (see :data:`_REAL_TEXT`) that float64 does not round to zero."""
    if kind is int:
        if is_integer_text(text):
            return (f"{name}: {shown(text)} is not an integer (digits 0-9 only, no '+')"
                    if text[:1] == "+" else None)
        try:
            integer_text(text, name)  # says why: not digits 0-9, or too many of them
        except GateflowError as exc:
            return str(exc)
        return None
    if len(text) > _MAX_REAL_CHARS:
        return f"{name}: {shown(text)} is not a number (more than {_MAX_REAL_CHARS} characters)"
    if not _REAL_TEXT.fullmatch(text):
        return (f"{name}: {shown(text)} is not a finite number (digits 0-9, an optional '-', "
                "'.' and exponent: 0.5, -2, 1e-6)")
    value = float(text)
    if not math.isfinite(value):
        return f"{name}: {shown(text)} is beyond the float range (about 1.8e308)"
    if value == 0 and any(c in "123456789" for c in text.lower().partition("e")[0]):
        return f"{name}: {shown(text)} is too small for a float (it rounds to 0)"
    return None


def _strict_numbers(command: Any, ctx: Any, args: list[str]) -> None:
    """A usage error for a number option whose value is not plain digits (Python's ``int``
    and ``float``, typer's parsing, take ``1_0``, `` 10``, ``+10``, ``inf``, ``nan`` and
    any size): the values as the user typed them, before typer converts them."""
    numbers = {p.name: p for p in command.get_params(ctx)
               if getattr(getattr(p, "type_descriptor", None), "annotation", None)
               in (int, float)}
    if not numbers:
        return
    opts, _, _ = command.make_parser(ctx).parse_args(args=list(args))
    for key, given in opts.items():
        param = numbers.get(key)
        if param is None:
            continue
        name = next((o for o in param.opts if o.startswith("--")), param.opts[0])
        for text in given if isinstance(given, (list, tuple)) else (given,):
            problem = (_number_problem(text, param.type_descriptor.annotation, name)
                       if isinstance(text, str) else None)
            if problem is not None:
                raise UsageError(problem, ctx=ctx)


class GateflowCommand(TyperCommand):
    """Every command's class (see :class:`_App`): flags without a type in help, a usage
    line that writes a required argument as ``CELL`` (not typer's ``{CELL}``) and numbers
    read strictly (:func:`_strict_numbers`)."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _plain_flags(super().get_params(ctx))

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if not ctx.resilient_parsing:
            _strict_numbers(self, ctx, args)
        return super().parse_args(ctx, args)

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return [p[1:-1] if p.startswith("{") and p.endswith("}") else p
                for p in super().collect_usage_pieces(ctx)]


class GateflowGroup(TyperGroup):
    """The root command group: one ``error:`` line and exit status 2 for any user error,
    usage errors included, 130/143 after Ctrl-C/SIGTERM, with nothing partial left behind;
    plain help under ``NO_COLOR``."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        with _plain_help():
            return super().main(*args, **kwargs)

    def get_params(self, ctx: Any) -> list[Any]:
        return _plain_flags(super().get_params(ctx))

    def make_context(self, info_name, args, parent=None, **extra) -> Any:
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except _NoArgsIsHelp:
            raise
        except UsageError as err:
            raise _usage(err) from None

    def invoke(self, ctx: Any) -> Any:
        try:
            return self._invoke(ctx)
        finally:
            _silence_broken_stdout()

    def _invoke(self, ctx: Any) -> Any:
        problem = _stdout_problem()
        if problem is not None:  # before any work: nothing is computed or written
            raise fail(f"{problem}; nothing was run; redirect it to a file")
        flag_of = flag_namer(self, ctx)  # the parameters of every message, as our flags
        try:
            with _signals(), spelling(flag_of):
                return super().invoke(ctx)
        except _NoArgsIsHelp:
            raise
        except UsageError as err:
            raise _usage(err) from None
        except GateflowError as err:
            raise fail(_after_commit(err.render(flag_of))) from None
        except KeyboardInterrupt:
            _quiet_shutdown()
            raise fail(_interrupt.line(signal.SIGINT), INTERRUPT_EXIT) from None
        except Terminated:
            _quiet_shutdown()
            raise fail(_interrupt.line(signal.SIGTERM), TERMINATE_EXIT) from None
        except MemoryError:
            raise fail(_after_commit("out of memory; use fewer steps (T), a smaller batch (B) "
                                     "or a smaller hidden size")) from None
        except OSError as err:
            if err.errno == errno.EPIPE:
                raise fail(_after_commit("cannot write to standard output: its reader has "
                                         "exited (broken pipe)")) from None
            raise fail(_after_commit(f"cannot complete: {_os_reason(err)}")) from None


class _App(typer.Typer):
    """``typer.Typer`` whose commands are :class:`GateflowCommand` s, so that
    ``@app.command()`` is all a new command needs."""

    def command(self, *args: Any, cls: Any = None, **kwargs: Any) -> Any:
        return super().command(*args, cls=cls or GateflowCommand, **kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run as a program (the entry points; tests' runners call the command directly):
        the process-wide signal handlers first (already there from ``gateflow.__main__``)."""
        _interrupt.install()
        return super().__call__(*args, **kwargs)


app = _App(
    name="gateflow",
    cls=GateflowGroup,
    help="Exact, fast gradient flow through RNN, LSTM and GRU cells: why gating keeps "
    "gradients alive.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    add_completion=True,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _show_version(value: bool) -> None:
    if value:
        from gateflow._io import write_stdout

        try:
            write_stdout(f"gateflow {__version__}\n".encode())
        except GateflowError as err:  # a closed stdout: one line, exit 2, here too
            raise fail(err) from None
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option(
        "--version", help="Print the version and exit.", callback=_show_version,
        is_eager=True)] = False,
) -> None:
    """Exact, fast gradient flow through RNN, LSTM and GRU cells.

    Jacobian layout everywhere: rows = outputs,
    (∂s_t/∂s_{t−1})[a, b] = ∂s_t[a]/∂s_{t−1}[b].
    """


def main() -> None:
    """Run the command line (``python -m gateflow`` and the ``gateflow`` script, through
    :func:`gateflow.__main__.main`, which installs the signal handlers first)."""
    app(prog_name="gateflow")

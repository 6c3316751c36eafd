"""The ``gateflow`` command line: a thin Typer shell over the library. No math lives here.

Every command parses its options and calls one library function. Heavy modules (SymPy
printing, plotting, CuPy, torch) are imported inside the command that needs them, so
``gateflow --help`` stays fast. ``python -m gateflow`` runs the same app (``__main__.py``).

Conventions, for every command:

* data (``--json -``, ``--csv -``, derivations, the listings of ``cells`` and ``inspect``,
  the path of a written report) goes to stdout; progress bars, tables of results and
  messages go to stderr;
* a fixed set of values is an Enum built from the registry that owns it (init schemes,
  input distributions, dtypes, backends, directions), so ``--help`` lists the choices and
  shell completion (``--install-completion``) offers them; names are case-insensitive
  (``derive LSTM``); comma-separated lists (``--cell rnn,lstm``, ``--norms``) complete item
  by item;
* ``--help`` groups options into panels (model, inputs, generated weights, outputs, run),
  one line per option where it fits; an option that several commands take is defined once
  (``_Weights``, ``_Inputs``, ``_Json``, ...), so it has one type and one wording;
* how an ``--inputs`` file's axes are read follows the model unless ``--batch-first`` or
  ``--time-major`` says it, and the run says so in one ``note:`` line;
* ``NO_COLOR`` (set and not empty) turns off colour everywhere (rich honours it), and in
  help and the command line's own tables every other text style too.

Errors and signals are handled once, for every command, by :class:`GateflowGroup` (the
app's ``cls``):

* a :class:`gateflow.GateflowError` raised anywhere below a command becomes one line
  ``error: <message>`` on stderr and exit status 2, with no traceback; so does an
  ``OSError`` or ``MemoryError`` from the machine (a full disk, a memory cap). Usage errors
  (a bad option value such as ``--format foo``) are one such line too, exit 2, and an
  unknown choice names the closest ones;
* Ctrl-C (SIGINT) and SIGTERM unwind the command like an exception, so staged files and
  folders are removed and nothing partial is left: one line ``error: interrupted`` and exit
  status 130 (SIGINT) or 143 (SIGTERM). The line says what was written when the signal
  came after an output was committed. Before and after a command (start-up, the
  interpreter's exit) the handlers of :mod:`gateflow._interrupt`, installed first thing,
  end the process with the same line and status; a second signal while the first one
  cleans up is not raised again (see :mod:`gateflow._interrupt`);
* a closed standard output, or a pipe whose reader has gone, is an error before any work
  (one line, exit 2), and a pipe that breaks during the run is one too;
* every line printed is one line of bounded length with every name, path and value that
  came from outside escaped (:mod:`gateflow._text`): a file's names cannot drive the
  terminal, and rich never reads them as markup.

A new command needs nothing special: ``@app.command()`` is enough.
"""

from __future__ import annotations

import ast
import errno
import math
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup

from gateflow import _interrupt
from gateflow._errors import GateflowError
from gateflow._interrupt import Terminated
from gateflow._text import one_line, safe
from gateflow._validate import closest, integer_text, is_integer_text, shown
from gateflow._version import __version__
from gateflow.cells._library import CELLS
from gateflow.jobs._contract import CSV_HEADER, DEFAULT_NORMS
from gateflow.jobs._spec import SPECTRA_LAGS
from gateflow.models._inputs import DISTS
from gateflow.models._params import _SCHEMES as SCHEMES
from gateflow.models.formats._recurrent import DIRECTIONS
from gateflow.numeric._backend import BACKENDS, DTYPES
from gateflow.numeric._observers import NORMS, OBSERVERS

#: ``decay --csv``'s columns for the default norms (each a registered observer's key).
_CSV_COLUMNS = ",".join((*CSV_HEADER, *(OBSERVERS[nm].key for nm in DEFAULT_NORMS)))

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
_NOUNS = {"cell": "cell", "fmt": "format", "init": "init scheme", "input_dist":
          "input distribution", "dtype": "dtype", "backend": "backend", "direction": "direction"}
#: How typer and click word a value outside the choices: ``'lstn' is not one of 'rnn', ...``.
_NOT_ONE_OF = re.compile(r"""('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*") is not one of""")


def _param_choices(param: Any) -> tuple[str, ...]:
    """The values an Enum parameter accepts (typer's own choice type, or click's Choice)."""
    raw = getattr(getattr(param, "type_descriptor", None), "choices", None) \
        or getattr(getattr(param, "type", None), "choices", None) or ()
    return tuple(str(getattr(c, "value", c)) for c in raw)


def _unknown_choice(err: Any) -> str | None:
    """``unknown cell 'lstn' (did you mean 'lstm'?)`` for a value outside a parameter's
    choices; None for any other usage error."""
    param = getattr(err, "param", None)
    choices = _param_choices(param)
    found = _NOT_ONE_OF.search(err.format_message())
    if param is None or not choices or found is None:
        return None
    try:
        value = ast.literal_eval(found.group(1))
    except (ValueError, SyntaxError):
        return None
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
        try:
            with _signals():
                return super().invoke(ctx)
        except _NoArgsIsHelp:
            raise
        except UsageError as err:
            raise _usage(err) from None
        except GateflowError as err:
            raise fail(_after_commit(str(err))) from None
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


# -- choices: Enums built from the registries that own them -----------------------------------
def _choices(name: str, values: Iterable[str]) -> Any:
    """A ``str`` Enum whose members are ``values`` (each member named as its value). As a
    parameter's type, typer lists the values in ``--help``, completes them in the shell
    and refuses any other; with ``case_sensitive=False``, ``LSTM`` is ``lstm``."""
    return Enum(name, [(v, v) for v in values], type=str)


class Format(str, Enum):
    text = "text"
    latex = "latex"
    markdown = "markdown"


if TYPE_CHECKING:  # to a type checker, each choice is the string it holds
    CellName = str
    Init = str
    InputDist = str
    DType = str
    BackendName = str
    Direction = str
else:
    CellName = _choices("CellName", CELLS)
    Init = _choices("Init", SCHEMES)
    InputDist = _choices("InputDist", DISTS)
    DType = _choices("DType", DTYPES)
    BackendName = _choices("BackendName", BACKENDS)
    Direction = _choices("Direction", DIRECTIONS)


def _value(choice: Any) -> Any:
    """The string a choice holds (None, for an option not given, stays None)."""
    return getattr(choice, "value", choice)


def _canonical(text: str, names: Iterable[str]) -> str:
    """A comma-separated list with each item spelled as in ``names``, matched
    case-insensitively (``LSTM,gru`` -> ``lstm,gru``); an item that matches none is left
    as it is, for the job to refuse with the closest names."""
    lookup = {n.casefold(): n for n in names}
    return ",".join(lookup.get(item.strip().casefold(), item) for item in text.split(","))


def _complete_list(names: Iterable[str]) -> Callable[[str], list[str]]:
    """Shell completion of a comma-separated list (``--cell rnn,ls<TAB>``): the names that
    fit the last item, after the items already chosen."""
    names = tuple(names)

    def complete(incomplete: str) -> list[str]:
        done, comma, last = incomplete.rpartition(",")
        chosen = {item.strip().casefold() for item in done.split(",")}
        return [f"{done}{comma}{n}" for n in names
                if n.casefold().startswith(last.casefold()) and n.casefold() not in chosen]

    return complete


def _complete_blocks(ctx: typer.Context, incomplete: str) -> list[str]:
    """Shell completion of ``--blocks``: the blocks of the ``--cell`` cells given so far."""
    cells = _canonical(ctx.params.get("cell") or "", CELLS).split(",")
    blocks = dict.fromkeys(b for c in cells if c in CELLS
                           for b in (*CELLS[c].blocks, *CELLS[c].input_blocks))
    return _complete_list(blocks)(incomplete)


def _default(text: object) -> str:
    """`` [default: n]`` for the help of an option whose default is not a value but a rule
    (a value typer shows by itself); escaped, or rich markup would take it for a tag."""
    return f" \\[default: {text}]"


def _given(ctx: typer.Context, **values: Any) -> dict[str, Any]:
    """``values``, with None for each option the user did not give: the job fills in the
    same defaults (the ones ``--help`` shows, checked by the tests) and refuses an option
    of generated data next to a file only when it was given."""
    def left_default(name: str) -> bool:
        source = ctx.get_parameter_source(name)
        return source is not None and source.name in ("DEFAULT", "DEFAULT_MAP")

    return {name: None if left_default(name) else value for name, value in values.items()}


def _listed(names: Iterable[str]) -> str:
    return ", ".join(names)


# -- help panels, and the options several commands share (one definition each) ---------------
#: ``--help`` groups a command's options into these panels, in this order.
MODEL, INPUTS, GENERATED, OUTPUTS, RUN = "Model", "Inputs", "Generated weights", "Outputs", \
    "Run"


def _or(names: Iterable[str]) -> str:
    """``a, b or c``."""
    names = list(names)
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


#: ``decay --norms``: the registered norms, and what the default costs (each norm's own
#: description is in ``decay --help``'s closing paragraph, :data:`_NORMS_EPILOG`).
_NORMS_HELP = f"Norms at every lag: {_listed(NORMS)} (spectral: ~6× slower)."
_NORMS_EPILOG = ("Norms: " + "; ".join(
    f"[bold]{o.name}[/], {o.description.replace('[', chr(92) + '[')}"
    for o in OBSERVERS.values())
    + ". The default includes the spectral norm, which makes a run about 6× slower than "
    "Frobenius alone (36.6 s against 5.8 s at n = 128, T = 500).")

_Cell = Annotated[str | None, typer.Option(
    "--cell", "-c", metavar="NAME", help="Cell name, any case (see [bold]gateflow cells[/]); "
    "optional with a model file.", rich_help_panel=MODEL,
    autocompletion=_complete_list(CELLS), show_default=False)]
_Weights = Annotated[str | None, typer.Option(
    "--weights", "-w", metavar="FILE", help="Weights or model file (see [bold]gateflow "
    "inspect[/])."
    + _default("generated"), rich_help_panel=MODEL, show_default=False)]
_Module = Annotated[str | None, typer.Option(
    "--module", metavar="NAME", help="Module of --weights (see [bold]gateflow inspect[/]).",
    rich_help_panel=MODEL, show_default=False)]
_Layer = Annotated[str | None, typer.Option(
    "--layer", metavar="L", help="Layer index of a stack, or [bold]all[/] (one "
    "recurrence).", rich_help_panel=MODEL, show_default=False)]
_Direction = Annotated[Direction | None, typer.Option(
    "--direction", metavar="DIR", help=f"{_or(DIRECTIONS)}, of a bidirectional module.",
    case_sensitive=False, rich_help_panel=MODEL, show_default=False)]
_Map = Annotated[list[str] | None, typer.Option(
    "--map", metavar="OLD=NEW", help="Rename an array (repeatable); [bold]'enc_*=rnn.*'[/] "
    "renames many.", rich_help_panel=MODEL,
    show_default=False)]
_Inputs = Annotated[str | None, typer.Option(
    "--inputs", "-x", metavar="FILE", help="Inputs .npy, axes as the model reads them."
    + _default("generated"), rich_help_panel=INPUTS, show_default=False)]
_BatchFirst = Annotated[bool, typer.Option(
    "--batch-first", help="--inputs is (B, T, d), batch-major.", rich_help_panel=INPUTS)]
_TimeMajor = Annotated[bool, typer.Option(
    "--time-major", help="--inputs is (T, B, d), time-major.", rich_help_panel=INPUTS)]
_S0 = Annotated[str | None, typer.Option(
    "--s0", metavar="FILE", help="Initial state .npz, an array per state block."
    + _default("the model file's, or zeros"), rich_help_panel=INPUTS, show_default=False)]
_Steps = Annotated[int, typer.Option(
    "--steps", metavar="T", help="Time steps T of generated inputs.",
    rich_help_panel=INPUTS)]
_Batch = Annotated[int, typer.Option(
    "--batch", metavar="B", help="Sequences B of generated inputs.", rich_help_panel=INPUTS)]
_Hidden = Annotated[int, typer.Option(
    "--hidden", metavar="N", help="Hidden size n.", rich_help_panel=GENERATED)]
_InputSize = Annotated[int | None, typer.Option(
    "--input-size", metavar="D", help="Input size d." + _default("n, or the inputs' d"),
    rich_help_panel=GENERATED, show_default=False)]
_Sizes = Annotated[str | None, typer.Option(
    "--sizes", metavar="K=V", help="Other sizes of the cell, e.g. [bold]p=16[/] (lstm-proj)."
    + _default("n // 2"), rich_help_panel=GENERATED, show_default=False)]
_InitOption = Annotated[Init, typer.Option(
    "--init", metavar="SCHEME", help=f"Initialisation: {_listed(SCHEMES)}.",
    case_sensitive=False, rich_help_panel=GENERATED)]
_SigmaW = Annotated[float, typer.Option(
    "--sigma-w", metavar="X", help="Recurrent weight scale (gaussian, orthogonal).",
    rich_help_panel=GENERATED)]
_GateBias = Annotated[float | None, typer.Option(
    "--gate-bias", metavar="X", help="The memory gate's bias (LSTM b_f, GRU b_z, ...).",
    rich_help_panel=GENERATED, show_default=False)]
_Seed = Annotated[int, typer.Option(
    "--seed", metavar="S", help="Seed of generated weights (inputs: seed + 1).",
    rich_help_panel=GENERATED)]
_Json = Annotated[str | None, typer.Option(
    "--json", metavar="FILE", help="Write the results as JSON; [bold]-[/] writes to stdout.",
    rich_help_panel=OUTPUTS, show_default=False)]
_Plot = Annotated[str | None, typer.Option(
    "--plot", metavar="FILE", help="Write the figure (.svg, .png or .pdf).",
    rich_help_panel=OUTPUTS, show_default=False)]
_Overwrite = Annotated[bool, typer.Option(
    "--overwrite", help="Replace existing output files or --out folders.",
    rich_help_panel=OUTPUTS)]
_Quiet = Annotated[bool, typer.Option(
    "--quiet", "-q", help="No progress bar, no tables; notes still print.",
    rich_help_panel=RUN)]
_Out = Annotated[str | None, typer.Option(
    "--out", "-o", metavar="DIR", help="Folder to write (refused if it exists, unless "
    "--overwrite).", rich_help_panel=OUTPUTS, show_default=False)]


def _add_order(options: dict[str, Any], batch_first: bool, time_major: bool) -> None:
    """Put the inputs' axis order the user gave in ``options`` as ``batch_first``: True
    (--batch-first), False (--time-major); nothing when neither is given (the job follows
    the model and says so)."""
    if batch_first and time_major:
        raise GateflowError("--batch-first and --time-major contradict each other; give one")
    if batch_first or time_major:
        options["batch_first"] = batch_first


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


@app.command()
def cells() -> None:
    """List every cell gateflow knows: name, summary, reference."""
    from rich.table import Table

    from gateflow._io import write_stdout

    write_stdout(b"")  # refuses a closed stdout before drawing anything
    table = Table(title="gateflow cells", show_lines=False, caption=(
        "A family may carry its activations: lstm\\[gate=hard_sigmoid(0.2,0.5)], "
        "gru\\[gate=hard_sigmoid(1/6,0.5),candidate=relu], rnn\\[candidate=elu(1)]; roles gate, "
        "candidate, output (see gateflow derive --help)."))
    table.add_column("name", style="bold cyan", no_wrap=True)
    table.add_column("summary", overflow="fold")
    table.add_column("reference", overflow="fold", style="dim")
    for cell in CELLS.values():
        table.add_row(cell.name, cell.summary, cell.reference)
    _console().print(table)


@app.command()
def inspect(
    path: Annotated[str, typer.Argument(
        help="A model file: PyTorch, TorchScript, ONNX, Keras, .npz.", metavar="FILE",
        show_default=False)],
    map_: _Map = None,
    json_out: _Json = None,
    overwrite: _Overwrite = False,
) -> None:
    """List every recurrent module, node or layer of a model file: its --module name, kind,
    gateflow cell, layers, directions, sizes, where it sits, what gateflow assumes about
    it, and the gateflow decay command for it (one line each, shell-quoted)."""
    from gateflow.jobs._inspect import inspect_model
    from gateflow.models.formats._foreign import parse_map

    inspect_model(path, json_path=json_out, overwrite=overwrite, rename=parse_map(map_))


def _cell_name(ctx: typer.Context, value: str) -> str:
    """derive's CELL: a declared cell (any case), or a family with its activations
    (``lstm[gate=hard_sigmoid(0.2,0.5)]``); a wrong name is a usage error."""
    if ctx.resilient_parsing or value is None:
        return value
    from gateflow.cells._library import get_cell

    head, bracket, rest = value.partition("[")
    name = _canonical(head, CELLS) + bracket + rest
    try:
        get_cell(name)
    except GateflowError as exc:
        raise UsageError(str(exc), ctx=ctx) from None
    return name


@app.command()
def derive(
    cell: Annotated[str, typer.Argument(
        help=f"Cell name (any case), one of <{'|'.join(CELLS)}>, or a family with its "
        "activations, e.g. [bold]lstm\\[gate=hard_sigmoid(0.2,0.5)][/] or "
        "[bold]gru\\[gate=hard_sigmoid(1/6,0.5),candidate=relu][/]; see [bold]gateflow "
        "cells[/].", metavar="CELL", show_default=False, callback=_cell_name,
        autocompletion=_complete_list(CELLS))],
    fmt: Annotated[Format, typer.Option("--format", "-f", help="Output format.",
                                        case_sensitive=False)] = Format.text,
    block: Annotated[str | None, typer.Option(
        "--block", "-b", help="Only this Jacobian block [bold]out/in[/], e.g. [bold]c/c[/] "
        "for ∂c_t/∂c_{t−1}." + _default("all blocks"), show_default=False)] = None,
    steps: Annotated[int, typer.Option(
        "--steps", "-k", min=1, help="Also chain K steps: ∂s_t/∂s_{t−K} as a sum of products "
        "of one-step blocks, plus its n = 1 closed form (shown when K > 1).")] = 1,
    layers: Annotated[int, typer.Option(
        "--layers", "-L", min=1, max=64, help="The cell stacked L deep as one recurrence, as "
        "--layer all analyses it: carried blocks [bold]h_l1/h_l0[/] and what a hook on a "
        "layer's output sees, [bold]h_l1/y_l0[/], both defined.")] = 1,
) -> None:
    """Print the cell's equations and its exact one-step Jacobians, derived with SymPy."""
    from gateflow._io import write_stdout
    from gateflow.cells._library import get_cell
    from gateflow.cells._stack import stack
    from gateflow.symbolic._printing import render

    chosen = get_cell(_value(cell))
    chosen = stack(chosen, layers) if layers > 1 else chosen
    write_stdout((render(chosen, fmt.value, block, steps) + "\n").encode())


@app.command()
def sweep(
    cells: Annotated[str, typer.Option(
        "--cells", metavar="NAME,...", help="Cell names, any case, comma-separated "
        "([bold]gateflow cells[/] lists them).", autocompletion=_complete_list(CELLS),
        rich_help_panel=MODEL)] = "rnn,lstm,gru",
    steps: Annotated[int, typer.Option(
        "--steps", metavar="T", min=1, help="Time steps T of generated inputs.",
        rich_help_panel=INPUTS)] = 200,
    batch: Annotated[int, typer.Option(
        "--batch", metavar="B", min=1, help="Sequences B of generated inputs.",
        rich_help_panel=INPUTS)] = 4,
    points: Annotated[int, typer.Option(
        "--points", metavar="P", min=1, help="Values per axis: σ_w in [0.5, 3], gate bias in "
        "[−2, 4] (σ_b in [0, 2] without a gate).", rich_help_panel=GENERATED)] = 6,
    hidden: Annotated[int, typer.Option(
        "--hidden", metavar="N", min=1, help="Hidden size n.",
        rich_help_panel=GENERATED)] = 32,
    out: _Out = None,
    overwrite: _Overwrite = False,
    scheduler: Annotated[str | None, typer.Option(
        "--scheduler", metavar="URL", help="A running dask scheduler, e.g. "
        "[bold]tcp://127.0.0.1:8786[/]." + _default("a local cluster of 2 workers, closed "
        "afterwards"), rich_help_panel=RUN, show_default=False)] = None,
    quiet: _Quiet = False,
) -> None:
    """Phase diagram per cell: weight scale σ_w × gate bias → memory horizon (first lag
    where the median ‖∂s_T/∂s_{T−k}‖_F < 1e−6), one dask task per grid point (B sequences
    each); writes heatmaps, JSON and CSV in a new folder reports/sweep-<date>-<time> unless
    --out says where. Cells without a gate (rnn) use the bias scale σ_b instead."""
    from gateflow._io import write_stdout
    from gateflow.jobs._sweep import SweepGrid
    from gateflow.jobs._sweep import sweep as run_sweep

    grid = SweepGrid.make(points, n=hidden, T=steps, B=batch)
    folder, _ = run_sweep(out, scheduler=scheduler, cells=_canonical(cells, CELLS), grid=grid,
                          quiet=quiet, overwrite=overwrite)
    write_stdout(f"{safe(folder)}\n".encode())


@app.command(epilog=_NORMS_EPILOG)
def decay(
    ctx: typer.Context,
    cell: Annotated[str | None, typer.Option(
        "--cell", "-c", metavar="NAME", help="Cell name, any case (see [bold]gateflow "
        "cells[/]), or several: [bold]rnn,lstm,gru[/]; optional with a model file.",
        rich_help_panel=MODEL, autocompletion=_complete_list(CELLS), show_default=False)
    ] = None,
    weights: _Weights = None,
    module: _Module = None,
    layer: _Layer = None,
    direction: _Direction = None,
    map_: _Map = None,
    inputs: _Inputs = None,
    batch_first: _BatchFirst = False,
    time_major: _TimeMajor = False,
    s0: _S0 = None,
    steps: _Steps = 100,
    batch: _Batch = 4,
    input_dist: Annotated[InputDist, typer.Option(
        "--input-dist", metavar="DIST", help=f"Generated inputs: {_or(DISTS)}.",
        case_sensitive=False, rich_help_panel=INPUTS)] = DISTS[0],
    input_scale: Annotated[float, typer.Option(
        "--input-scale", metavar="X", help="Generated inputs' scale.",
        rich_help_panel=INPUTS)] = 1.0,
    hidden: _Hidden = 64,
    input_size: _InputSize = None,
    sizes: _Sizes = None,
    init: _InitOption = SCHEMES[0],
    sigma_w: _SigmaW = 1.0,
    sigma_v: Annotated[float, typer.Option(
        "--sigma-v", metavar="X", help="Input weight scale (gaussian, orthogonal).",
        rich_help_panel=GENERATED)] = 1.0,
    sigma_b: Annotated[float, typer.Option(
        "--sigma-b", metavar="X", help="Bias scale (gaussian, orthogonal).",
        rich_help_panel=GENERATED)] = 0.0,
    gate_bias: _GateBias = None,
    chrono: Annotated[float | None, typer.Option(
        "--chrono", metavar="T_MAX", help="Chrono init of the memory gate.",
        rich_help_panel=GENERATED, show_default=False)] = None,
    seed: _Seed = 0,
    json_out: _Json = None,
    csv_out: Annotated[str | None, typer.Option(
        "--csv", metavar="FILE", help="Write one row per block, norm, lag (CSV); [bold]-[/] "
        "writes to stdout.", rich_help_panel=OUTPUTS, show_default=False)] = None,
    plot: _Plot = None,
    spectra: Annotated[str | None, typer.Option(
        "--spectra", metavar="FILE", help="Write singular values at --spectra-lags "
        "(.svg, .png or .pdf).", rich_help_panel=OUTPUTS,
        show_default=False)] = None,
    spectra_lags: Annotated[str, typer.Option(
        "--spectra-lags", metavar="K,...", help="Lags for --spectra, clipped to T.",
        rich_help_panel=OUTPUTS)] = ",".join(map(str, SPECTRA_LAGS)),
    overwrite: _Overwrite = False,
    blocks: Annotated[str | None, typer.Option(
        "--blocks", metavar="X/Y,...", help="Blocks X/Y = ∂X_T/∂Y_{T−k}: "
        "[bold]c/c[/], [bold]h/x[/], [bold]h_l1/y_l0[/], …" + _default("all"),
        autocompletion=_complete_blocks,
        rich_help_panel=RUN, show_default=False)] = None,
    norms: Annotated[str, typer.Option(
        "--norms", metavar="NAME,...", help=_NORMS_HELP, autocompletion=_complete_list(NORMS),
        rich_help_panel=RUN)] = ",".join(DEFAULT_NORMS),
    threshold: Annotated[float, typer.Option(
        "--threshold", metavar="X", help="Memory horizon: first lag with median norm below "
        "it.", rich_help_panel=RUN)] = 1e-6,
    dtype: Annotated[DType, typer.Option(
        "--dtype", metavar="DTYPE", help=f"Floating-point type: {_or(DTYPES)}.",
        case_sensitive=False, rich_help_panel=RUN)] = "float64",
    backend: Annotated[BackendName, typer.Option(
        "--backend", metavar="NAME", help=f"Arrays: {_or(BACKENDS)} (NVIDIA GPU: the "
        "[bold]gpu[/] extra).", case_sensitive=False, rich_help_panel=RUN)] = "numpy",
    quiet: _Quiet = False,
) -> None:
    """Gradient decay over lag: log10 norms of every block ∂X_T/∂Y_{T−k}, k = 1..T, per
    sequence, exact, in one backward sweep; for one cell or several, with fitted decay
    (per-step factor, e-folding lag, memory horizon) and optional figures (--plot: the
    memory block against lag, median and interquartile band, its cell-path-only product
    dashed, theory overlays; an exactly zero Jacobian is null in JSON, -inf in CSV).

    Several cells share one generated config or --inputs file; then --weights,
    --json and --csv name one file per cell with [bold]{cell}[/]: [bold]w-{cell}.npz[/].
    Progress and notes go to stderr; the tables go to stdout, or to stderr
    when data does ([bold]--json -[/], [bold]--csv -[/])."""
    from gateflow.jobs._decay import run_decays
    from gateflow.models.formats._foreign import parse_map

    options = _given(ctx, spectra_lags=spectra_lags, norms=_canonical(norms, NORMS),
                     hidden=hidden, steps=steps, batch=batch, init=_value(init),
                     sigma_w=sigma_w, sigma_v=sigma_v, sigma_b=sigma_b, seed=seed,
                     input_dist=_value(input_dist), input_scale=input_scale)
    _add_order(options, batch_first, time_major)
    run_decays(cell and _canonical(cell, CELLS), json_path=json_out, csv_path=csv_out,
               plot_path=plot, spectra_path=spectra, threshold=threshold, blocks=blocks,
               dtype=_value(dtype), backend=_value(backend), quiet=quiet, weights=weights,
               inputs=inputs, input_size=input_size, gate_bias=gate_bias, chrono=chrono,
               overwrite=overwrite, module=module, layer=layer, direction=_value(direction),
               s0=s0, sizes=sizes, rename=parse_map(map_), **options)


@app.command()
def lyapunov(
    ctx: typer.Context,
    cell: _Cell = None,
    weights: _Weights = None,
    module: _Module = None,
    layer: _Layer = None,
    direction: _Direction = None,
    map_: _Map = None,
    inputs: _Inputs = None,
    batch_first: _BatchFirst = False,
    time_major: _TimeMajor = False,
    s0: _S0 = None,
    steps: _Steps = 100,
    batch: _Batch = 4,
    hidden: _Hidden = 64,
    input_size: _InputSize = None,
    sizes: _Sizes = None,
    init: _InitOption = SCHEMES[0],
    sigma_w: _SigmaW = 1.0,
    gate_bias: _GateBias = None,
    seed: _Seed = 0,
    json_out: _Json = None,
    plot: _Plot = None,
    overwrite: _Overwrite = False,
    k: Annotated[int | None, typer.Option(
        "--k", metavar="K", help="How many exponents." + _default("all N"),
        rich_help_panel=RUN, show_default=False)] = None,
    transient: Annotated[int | None, typer.Option(
        "--transient", metavar="T0", help="Steps not accumulated." + _default("T/10"),
        rich_help_panel=RUN, show_default=False)] = None,
    quiet: _Quiet = False,
) -> None:
    """Lyapunov spectrum of the driven state dynamics: exact structured Jacobians applied to
    K tangent vectors, re-orthonormalised by QR every step; λ_i in natural log per step,
    the sum of the positive ones and the Kaplan–Yorke dimension (--plot: the spectrum and
    its convergence)."""
    from gateflow.jobs._lyapunov import run_lyapunov
    from gateflow.models.formats._foreign import parse_map

    options = _given(ctx, hidden=hidden, steps=steps, batch=batch, init=_value(init),
                     sigma_w=sigma_w, seed=seed)
    _add_order(options, batch_first, time_major)
    run_lyapunov(cell and _canonical(cell, CELLS), weights=weights, inputs=inputs,
                 module=module, layer=layer, direction=_value(direction),
                 rename=parse_map(map_), k=k,
                 transient=transient, json_path=json_out, plot_path=plot, overwrite=overwrite,
                 quiet=quiet, input_size=input_size, gate_bias=gate_bias, sizes=sizes,
                 s0=s0, **options)


@app.command()
def report(
    steps: Annotated[int, typer.Option(
        "--steps", metavar="T", min=2, help="Time steps T of generated inputs.",
        rich_help_panel=INPUTS)] = 200,
    batch: Annotated[int, typer.Option(
        "--batch", metavar="B", min=1, help="Sequences B of generated inputs.",
        rich_help_panel=INPUTS)] = 16,
    hidden: Annotated[int, typer.Option(
        "--hidden", metavar="N", min=1, help="Hidden size n.",
        rich_help_panel=GENERATED)] = 64,
    input_size: Annotated[int, typer.Option(
        "--input-size", metavar="D", min=1, help="Input size d.",
        rich_help_panel=GENERATED)] = 16,
    init: _InitOption = SCHEMES[0],
    seed: Annotated[int, typer.Option(
        "--seed", metavar="S", min=0, help="Seed of generated weights (inputs: seed + 1).",
        rich_help_panel=GENERATED)] = 0,
    out: _Out = None,
    overwrite: _Overwrite = False,
    fmt: Annotated[str, typer.Option(
        "--format", "-f", metavar="FMT,...", help="Figure files next to the pages: svg, png "
        "and/or pdf (index.html carries SVG inline whatever is chosen, so it works sent "
        "alone).", rich_help_panel=OUTPUTS)] = "png,svg",
    quiet: _Quiet = False,
) -> None:
    """RNN vs LSTM vs GRU, and the forget/update-gate bias: figures, fitted decay rates,
    theory overlays and data, as index.md and a self-contained index.html, in a new folder
    reports/<date>_n<N>-T<T>-seed<S> unless --out says where.

    The path of index.html goes to stdout, the progress bar to stderr."""
    from gateflow._io import write_stdout
    from gateflow.jobs._report import ReportConfig, write_report

    cfg = ReportConfig(hidden=hidden, inputs=input_size, steps=steps, batch=batch, seed=seed,
                       scheme=_value(init))
    folder = write_report(cfg, out, overwrite=overwrite, quiet=quiet, formats=fmt)
    write_stdout(f"{safe(folder / 'index.html')}\n".encode())


def main() -> None:
    """Run the command line (``python -m gateflow`` and the ``gateflow`` script, through
    :func:`gateflow.__main__.main`, which installs the signal handlers first)."""
    app(prog_name="gateflow")


if __name__ == "__main__":
    main()

"""The command line's options, defined once: the choices (Enums built from the registries
that own them), the help panels, the ``Annotated`` declarations several commands share,
their defaults (read from the records that own them: :class:`~gateflow.models._specs.InitSpec`,
:class:`~gateflow.models._specs.InputSpec`, …), and the one table from a parameter's name
to its flag.

Where a new option goes: one ``Annotated`` declaration here (its flag, metavar, help and
panel), its default read from the record that owns the fact, and a command parameter named
as the job's parameter (``json_path`` for ``--json``, ``rename`` for ``--map``): the table
(:func:`flags`) is read from the declarations, so an error a job raises about ``json_path``
reads ``--json`` here, with no other list to keep.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import fields
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any

import typer

from gateflow._errors import GateflowError, arg
from gateflow.cells._library import CELLS
from gateflow.models._specs import DISTS, SCHEMES, InitSpec, InputSpec, ModelRef
from gateflow.models.formats._recurrent import DIRECTIONS
from gateflow.numeric._backend import BACKENDS, DTYPES
from gateflow.numeric._observers import NORMS, OBSERVERS


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
_Scheme = Annotated[Init, typer.Option(
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


# -- the one table: a parameter's name -> its flag -------------------------------------------
def flags(command: Any) -> dict[str, str]:
    """``{parameter: flag}`` of ``command``'s options, read from their declarations
    (click's ``Parameter.name`` → its first long option): ``json_path`` → ``--json``."""
    out = {}
    for p in getattr(command, "params", ()):
        if getattr(p, "param_type_name", None) == "option" and p.name and p.opts:
            out[p.name] = next((o for o in p.opts if o.startswith("--")), p.opts[0])
    return out


def command_flags(ctx: typer.Context, name: str) -> Callable[[str], str]:
    """How command ``name`` spells a parameter (its flag; the name itself when it has
    none): what a command line printed for the user to run (``inspect``'s) is written in."""
    root: Any = ctx.find_root()
    table = flags(root.command.get_command(root, name))
    return lambda param: table.get(param, param)


def flag_namer(group: Any, ctx: Any) -> Callable[[str], str]:
    """How the command line spells a parameter that a message names
    (:func:`gateflow._errors.arg`): the flag of the command that runs, else of any command
    (a message may point to another one: "use gateflow decay --blocks X/x"), else the name
    itself. Read when a message is written, from the commands' own declarations."""
    tables: dict[str, dict[str, str]] = {}

    def table(name: str | None) -> dict[str, str]:
        if name not in tables:
            command = group.get_command(ctx, name) if name else None
            tables[name or ""] = flags(command)
        return tables[name or ""]

    def flag_of(param: str) -> str:
        found = table(ctx.invoked_subcommand).get(param)
        if found is None:
            found = next((t[param] for t in map(table, group.list_commands(ctx))
                          if param in t), None)
        return found or flags(group).get(param, param)

    return flag_of


# -- the records, from what the user typed ---------------------------------------------------
def given(ctx: typer.Context, names: Iterable[str]) -> frozenset[str]:
    """Which of the parameters ``names`` the user typed (not left at their default)."""
    def typed(name: str) -> bool:
        source = ctx.get_parameter_source(name)
        return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")

    return frozenset(n for n in names if typed(n))


def _record_values(ctx: typer.Context, kind: type) -> dict[str, Any]:
    """The command's parameters named as ``kind``'s fields, with their values."""
    names = [f.name for f in fields(kind) if f.name in ctx.params]
    return {n: _value(ctx.params[n]) for n in names}


def init_spec(ctx: typer.Context) -> InitSpec:
    """The generated weights the command's options describe (its defaults are the
    record's own: the options read them)."""
    values = _record_values(ctx, InitSpec)
    return InitSpec(**values, given=given(ctx, values))


def input_spec(ctx: typer.Context) -> InputSpec:
    """The inputs the command's options describe: ``--inputs FILE`` and its axis order, or
    generated (``--steps``, ``--batch``, …)."""
    values = {k: v for k, v in _record_values(ctx, InputSpec).items()
              if k not in ("path", "batch_first")}  # the file and its order: below
    p = ctx.params
    if p["batch_first"] and p["time_major"]:
        raise GateflowError(f"{arg('batch_first')} and {arg('time_major')} contradict each "
                            "other; give one")
    order = True if p["batch_first"] else False if p["time_major"] else None
    if order is not None and p["inputs"] is None:
        said = arg("batch_first" if order else "time_major")
        raise GateflowError(f"{said} applies to an {arg('inputs')} file; drop it or give "
                            f"{arg('inputs')}")
    return InputSpec(**values, path=p["inputs"], batch_first=order, given=given(ctx, values))


def model_ref(ctx: typer.Context) -> ModelRef | None:
    """The model file the command's options name (``--weights`` and what picks a module of
    it), or None."""
    from gateflow.models.formats._foreign import parse_map

    p = ctx.params
    return ModelRef.from_options(p["weights"], module=p["module"], layer=p["layer"],
                                 direction=_value(p["direction"]),
                                 rename=parse_map(p["rename"]))

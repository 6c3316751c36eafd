"""The ``gateflow`` command line: a thin Typer shell over the library. No math lives here.

Every command parses its options and calls one library function. Heavy modules (SymPy
printing, NumPy, plotting, CuPy, torch) are imported inside the command that needs them, so
``gateflow --help`` stays fast.

Errors are handled once, for every command, by :class:`GateflowGroup` (the app's ``cls``):
a :class:`gateflow.GateflowError` raised anywhere below a command becomes one line
``error: <message>`` on stderr and exit status 2, with no traceback. Usage errors (a bad
option value such as ``--format foo``) also exit with 2, as click does. A new command needs
nothing special: ``@app.command()`` is enough.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from ._errors import GateflowError

#: Exit status for anything the user got wrong (matches click's usage errors).
USAGE_EXIT = 2


def fail(message: object) -> typer.Exit:
    """Print ``error: <message>`` as one line on stderr; return the Exit to raise."""
    line = " ".join(str(message).split()) or type(message).__name__
    typer.echo(f"error: {line}", err=True)
    return typer.Exit(USAGE_EXIT)


class GateflowGroup(TyperGroup):
    """The root command group: turns a :class:`GateflowError` from any subcommand into
    one ``error:`` line and exit status 2."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except GateflowError as err:
            raise fail(err) from None


app = typer.Typer(
    name="gateflow",
    cls=GateflowGroup,
    help="Exact, fast gradient flow through RNN, LSTM and GRU cells: why gating keeps "
    "gradients alive.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    add_completion=False,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


class Format(str, Enum):
    text = "text"
    latex = "latex"
    markdown = "markdown"


@app.callback()
def _root() -> None:
    """Exact, fast gradient flow through RNN, LSTM and GRU cells.

    Jacobian layout everywhere: rows = outputs,
    (∂s_t/∂s_{t−1})[a, b] = ∂s_t[a]/∂s_{t−1}[b].
    """


@app.command()
def cells() -> None:
    """List every cell gateflow knows: name, summary, reference."""
    from rich.console import Console
    from rich.table import Table

    from .cells import CELLS

    table = Table(title="gateflow cells", show_lines=False)
    table.add_column("name", style="bold cyan", no_wrap=True)
    table.add_column("summary", overflow="fold")
    table.add_column("reference", overflow="fold", style="dim")
    for cell in CELLS.values():
        table.add_row(cell.name, cell.summary, cell.reference)
    Console().print(table)


@app.command()
def derive(
    cell: Annotated[str, typer.Argument(
        help="Cell name, e.g. [bold]lstm[/]; see [bold]gateflow cells[/].",
        metavar="CELL", show_default=False)],
    fmt: Annotated[Format, typer.Option("--format", "-f", help="Output format.",
                                        case_sensitive=False)] = Format.text,
    block: Annotated[str | None, typer.Option(
        "--block", "-b", help="Only this Jacobian block [bold]out/in[/], e.g. [bold]c/c[/] "
        "for ∂c_t/∂c_{t−1}. Default: all blocks.", show_default=False)] = None,
    steps: Annotated[int, typer.Option(
        "--steps", "-k", min=1, help="Also chain K steps: ∂s_t/∂s_{t−K} as a sum of products "
        "of one-step blocks, plus its n = 1 closed form (shown when K > 1).")] = 1,
) -> None:
    """Print the cell's equations and its exact one-step Jacobians, derived with SymPy."""
    from ._printing import render
    from .cells import get_cell

    typer.echo(render(get_cell(cell), fmt.value, block, steps))


if __name__ == "__main__":
    app(prog_name="gateflow")

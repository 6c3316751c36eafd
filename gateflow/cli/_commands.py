"""The commands that list, inspect, derive and sweep: ``cells``, ``inspect``, ``derive``,
``sweep``. Each parses its options and calls one library function; no math here."""

from __future__ import annotations

from typing import Annotated

import typer

from gateflow._errors import GateflowError
from gateflow._text import safe
from gateflow.cells._library import CELLS
from gateflow.cli._app import UsageError, _console, app
from gateflow.cli._options import (
    GENERATED,
    INPUTS,
    MODEL,
    RUN,
    Format,
    _canonical,
    _complete_list,
    _default,
    _Json,
    _Map,
    _Out,
    _Overwrite,
    _Quiet,
    _value,
    command_flags,
)
from gateflow.jobs._sweep import DEFAULT_CELLS, POINTS, SweepGrid


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
    ctx: typer.Context,
    path: Annotated[str, typer.Argument(
        help="A model file: PyTorch, TorchScript, ONNX, Keras, .npz.", metavar="FILE",
        show_default=False)],
    rename: _Map = None,
    json_path: _Json = None,
    overwrite: _Overwrite = False,
) -> None:
    """List every recurrent module, node or layer of a model file: its --module name, kind,
    gateflow cell, layers, directions, sizes, where it sits, what gateflow assumes about
    it, and the gateflow decay command for it (one line each, shell-quoted)."""
    from gateflow.jobs._inspect import inspect_model
    from gateflow.models.formats._foreign import parse_map

    inspect_model(path, json_path=json_path, overwrite=overwrite, rename=parse_map(rename),
                  flag_of=command_flags(ctx, "decay"))


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
        rich_help_panel=MODEL)] = ",".join(DEFAULT_CELLS),
    steps: Annotated[int, typer.Option(
        "--steps", metavar="T", min=1, help="Time steps T of generated inputs.",
        rich_help_panel=INPUTS)] = SweepGrid.T,
    batch: Annotated[int, typer.Option(
        "--batch", metavar="B", min=1, help="Sequences B of generated inputs.",
        rich_help_panel=INPUTS)] = SweepGrid.B,
    points: Annotated[int, typer.Option(
        "--points", metavar="P", min=1, help="Values per axis: σ_w in [0.5, 3], gate bias in "
        "[−2, 4] (σ_b in [0, 2] without a gate).", rich_help_panel=GENERATED)] = POINTS,
    hidden: Annotated[int, typer.Option(
        "--hidden", metavar="N", min=1, help="Hidden size n.",
        rich_help_panel=GENERATED)] = SweepGrid.n,
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
    from gateflow.jobs._sweep import sweep as run_sweep

    grid = SweepGrid.make(points, n=hidden, T=steps, B=batch)
    folder, _ = run_sweep(out, scheduler=scheduler, cells=_canonical(cells, CELLS), grid=grid,
                          quiet=quiet, overwrite=overwrite)
    write_stdout(f"{safe(folder)}\n".encode())

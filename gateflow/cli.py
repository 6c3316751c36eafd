"""The ``gateflow`` command line: a thin Typer shell over the library. No math lives here.

Every command parses its options and calls one library function. Heavy modules (SymPy
printing, NumPy, plotting, CuPy, torch) are imported inside the command that needs them, so
``gateflow --help`` stays fast.

Errors and signals are handled once, for every command, by :class:`GateflowGroup` (the
app's ``cls``):

* a :class:`gateflow.GateflowError` raised anywhere below a command becomes one line
  ``error: <message>`` on stderr and exit status 2, with no traceback; so does an
  ``OSError`` or ``MemoryError`` from the machine (a full disk, a memory cap). Usage errors
  (a bad option value such as ``--format foo``) are one such line too, exit 2;
* Ctrl-C (SIGINT) and SIGTERM unwind the command like an exception, so staged files and
  folders are removed and nothing partial is left: one line ``error: interrupted`` and exit
  status 130 (SIGINT) or 143 (SIGTERM).

A new command needs nothing special: ``@app.command()`` is enough.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from gateflow import _interrupt
from gateflow._errors import GateflowError
from gateflow._interrupt import Terminated
from gateflow.jobs._contract import CSV_HEADER, DEFAULT_NORMS
from gateflow.numeric._observers import NORMS, OBSERVERS

#: ``decay --csv``'s columns for the default norms (each a registered observer's key).
_CSV_COLUMNS = ",".join((*CSV_HEADER, *(OBSERVERS[nm].key for nm in DEFAULT_NORMS)))

#: Exit status for anything the user got wrong (matches click's usage errors).
USAGE_EXIT = 2
#: Exit statuses after SIGINT and SIGTERM (128 + the signal number, as shells report).
INTERRUPT_EXIT = 128 + signal.SIGINT
TERMINATE_EXIT = 128 + signal.SIGTERM


def fail(message: object, code: int = USAGE_EXIT) -> typer.Exit:
    """Print ``error: <message>`` as one line on stderr; return the Exit to raise."""
    line = " ".join(str(message).split()) or type(message).__name__
    typer.echo(f"error: {line}", err=True)
    return typer.Exit(code)


@contextmanager
def _signals() -> Iterator[None]:
    """While a command runs, SIGTERM raises :class:`Terminated` and SIGINT KeyboardInterrupt
    in the main thread; both are also recorded (:mod:`gateflow._interrupt`), so a signal
    that lands where Python cannot raise is raised again at the next step of the run."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        _interrupt.request(signum)
        raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt

    hook = sys.unraisablehook

    def unraisable(info) -> None:
        # Python drops an exception raised in a callback ("Exception ignored in ..."); an
        # interrupt dropped that way is recorded and raised again at the next step, so it
        # needs no traceback of its own.
        if not isinstance(info.exc_value, (KeyboardInterrupt, Terminated)):
            hook(info)

    _interrupt.reset()
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    sys.unraisablehook = unraisable
    try:
        yield
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

    where = f"{exc.filename}: " if isinstance(exc.filename, str) else ""
    return f"{where}{_reason(exc)}"


#: click's UsageError (and its no-arguments-means-help subclass) as this typer raises them:
#: typer >= 0.20 vendors click, older versions use click itself.
UsageError: Any = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")
_NoArgsIsHelp: Any = getattr(sys.modules[UsageError.__module__], "NoArgsIsHelpError", ())


def _usage(err) -> typer.Exit:
    """A bad option or argument, as one line with where to look for help."""
    ctx = err.ctx
    where = f" (see {ctx.command_path} --help)" if ctx is not None else ""
    return fail(f"{err.format_message()}{where}")


class GateflowGroup(TyperGroup):
    """The root command group: one ``error:`` line and exit status 2 for any user error,
    usage errors included, 130/143 after Ctrl-C/SIGTERM, with nothing partial left behind."""

    def make_context(self, info_name, args, parent=None, **extra) -> Any:
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except _NoArgsIsHelp:
            raise
        except UsageError as err:
            raise _usage(err) from None

    def invoke(self, ctx: Any) -> Any:
        try:
            with _signals():
                return super().invoke(ctx)
        except _NoArgsIsHelp:
            raise
        except UsageError as err:
            raise _usage(err) from None
        except GateflowError as err:
            raise fail(err) from None
        except KeyboardInterrupt:
            _quiet_shutdown()
            raise fail("interrupted (Ctrl-C); nothing was written", INTERRUPT_EXIT) from None
        except Terminated:
            _quiet_shutdown()
            raise fail("terminated (SIGTERM); nothing was written", TERMINATE_EXIT) from None
        except MemoryError:
            raise fail("out of memory; use fewer steps (T), a smaller batch (B) or a smaller "
                       "hidden size") from None
        except OSError as err:
            raise fail(f"cannot complete: {_os_reason(err)}") from None


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

    from gateflow._io import write_stdout
    from gateflow.cells._library import CELLS

    write_stdout(b"")  # refuses a closed stdout before drawing anything
    table = Table(title="gateflow cells", show_lines=False)
    table.add_column("name", style="bold cyan", no_wrap=True)
    table.add_column("summary", overflow="fold")
    table.add_column("reference", overflow="fold", style="dim")
    for cell in CELLS.values():
        table.add_row(cell.name, cell.summary, cell.reference)
    Console().print(table)


@app.command()
def inspect(
    path: Annotated[str, typer.Argument(
        help="A model file: PyTorch (.pt/.pth/.ckpt, .safetensors, .npz), ONNX (.onnx) or "
        "Keras (.keras, .weights.h5, .h5).", metavar="FILE", show_default=False)],
    json_out: Annotated[str | None, typer.Option(
        "--json", help="Also write the list as JSON; [bold]-[/] writes to stdout.",
        show_default=False)] = None,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace an existing --json file.")] = False,
) -> None:
    """List every recurrent module, node or layer of a model file: its --module name, kind,
    gateflow cell, layers, directions, sizes, and the gateflow decay command for it."""
    from gateflow.jobs._inspect import inspect_model

    inspect_model(path, json_path=json_out, overwrite=overwrite)


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
    from gateflow._io import write_stdout
    from gateflow.cells._library import get_cell
    from gateflow.symbolic._printing import render

    write_stdout((render(get_cell(cell), fmt.value, block, steps) + "\n").encode())


@app.command()
def sweep(
    out: Annotated[str | None, typer.Option(
        "--out", "-o", help="Folder to write (must not exist unless [bold]--overwrite[/]). "
        "Default: a new reports/sweep-<date>-<time>.", show_default=False)] = None,
    scheduler: Annotated[str | None, typer.Option(
        "--scheduler", help="Address of a running dask scheduler, e.g. "
        "[bold]tcp://127.0.0.1:8786[/]. Default: start a local cluster of 2 worker "
        "processes and close it afterwards.", show_default=False)] = None,
    cells: Annotated[str, typer.Option(
        "--cells", help="Comma-separated cell names.")] = "rnn,lstm,gru",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace an existing --out folder.")] = False,
    points: Annotated[int, typer.Option(
        "--points", min=1, help="Values per axis: σ_w in [0.5, 3], gate bias in [−2, 4] "
        "(σ_b in [0, 2] for cells without a gate).")] = 6,
    hidden: Annotated[int, typer.Option("--hidden", min=1, help="Hidden size n.")] = 32,
    steps: Annotated[int, typer.Option("--steps", min=1, help="Sequence length T.")] = 200,
    batch: Annotated[int, typer.Option("--batch", min=1, help="Sequences per point.")] = 4,
) -> None:
    """Phase diagram per cell: weight scale σ_w × gate bias → memory horizon (first lag
    where the median ‖∂s_T/∂s_{T−k}‖_F < 1e−6), one dask task per grid point; writes
    heatmaps, JSON and CSV. Cells without a gate (rnn) use the bias scale σ_b instead."""
    from gateflow.jobs._sweep import SweepGrid
    from gateflow.jobs._sweep import sweep as run_sweep

    grid = SweepGrid.make(points, n=hidden, T=steps, B=batch)
    folder, _ = run_sweep(out, scheduler=scheduler, cells=cells, grid=grid, quiet=quiet,
                          overwrite=overwrite)
    typer.echo(str(folder))


@app.command()
def decay(
    cell: Annotated[str | None, typer.Option(
        "--cell", "-c", help="Cell name, e.g. [bold]lstm[/], or several, e.g. "
        "[bold]rnn,lstm,gru[/] (all on the same generated config or --inputs file); see "
        "[bold]gateflow cells[/]. Optional with a --weights model file that says its cell.",
        show_default=False)] = None,
    weights: Annotated[str | None, typer.Option(
        "--weights", "-w", help="Weights or model file: PyTorch (.pt/.pth/.ckpt, "
        ".safetensors, .npz; nn.RNN/LSTM/GRU and *Cell keys, or gateflow names), ONNX "
        "(.onnx), Keras (.keras, .weights.h5, .h5); see [bold]gateflow inspect FILE[/]. With "
        "several cells a pattern with [bold]{cell}[/], e.g. [bold]w-{cell}.safetensors[/]. "
        "Default: generated from the init options.", show_default=False)] = None,
    module: Annotated[str | None, typer.Option(
        "--module", help="Which recurrent module of --weights (a PyTorch key prefix such as "
        "[bold]encoder.rnn[/], an ONNX node or Keras layer name).",
        show_default=False)] = None,
    layer: Annotated[str | None, typer.Option(
        "--layer", help="Layer of a stacked module: an index, or [bold]all[/] for the whole "
        "stack as one recurrence (blocks h_l1/h_l0, ...).", show_default=False)] = None,
    direction: Annotated[str | None, typer.Option(
        "--direction", help="forward | reverse, for a bidirectional module (reverse runs over "
        "the time-reversed inputs).", show_default=False)] = None,
    inputs: Annotated[str | None, typer.Option(
        "--inputs", "-x", help="Inputs .npy of shape (T, B, d), time-major (see "
        "--batch-first). Default: generated from the input options.",
        show_default=False)] = None,
    batch_first: Annotated[bool, typer.Option(
        "--batch-first", help="--inputs is (B, T, d), as batch_first=True modules take it.")
    ] = False,
    s0: Annotated[str | None, typer.Option(
        "--s0", help="Initial state (.npz or .safetensors), one (n,) or (B, n) array per state "
        "block (h, c; h_l0, ... for --layer all). Default: zeros.", show_default=False)] = None,
    json_out: Annotated[str | None, typer.Option(
        "--json", help="Write the log10 norms (JSON; an exactly zero Jacobian is null); "
        "[bold]-[/] writes to stdout. With several cells the path must contain "
        "[bold]{cell}[/] (one file per cell).",
        show_default=False)] = None,
    csv_out: Annotated[str | None, typer.Option(
        "--csv", help=f"Write {_CSV_COLUMNS} rows (and a column per other norm measured; direct "
        "products as block [bold]<s>|direct[/]; exact zero = -inf); [bold]-[/] writes to "
        "stdout. With several cells the path must contain [bold]{cell}[/].",
        show_default=False)] = None,
    plot: Annotated[str | None, typer.Option(
        "--plot", help="Write a figure (.png or .svg): each cell's memory block (c/c for "
        "LSTMs, else h/h) against lag k, median and interquartile band, its cell-path-only "
        "product (∏ diag(f_t) for the LSTM, ∏ diag(z_t) for the GRU, ...) dashed, theory "
        "overlays where they apply.", show_default=False)] = None,
    spectra: Annotated[str | None, typer.Option(
        "--spectra", help="Write a figure (.png or .svg) of the singular values of each "
        "cell's memory block at --spectra-lags.", show_default=False)] = None,
    spectra_lags: Annotated[str | None, typer.Option(
        "--spectra-lags", help="Comma-separated lags for --spectra, clipped to T "
        "[default: 1,10,100].", show_default=False)] = None,
    threshold: Annotated[float, typer.Option(
        "--threshold", help="Memory horizon: first lag where the median norm of the memory "
        "block falls below this.")] = 1e-6,
    norms: Annotated[str | None, typer.Option(
        "--norms", help=f"Comma-separated, from: {', '.join(NORMS)}. Default: "
        f"{','.join(DEFAULT_NORMS)}.",
        show_default=False)] = None,
    blocks: Annotated[str | None, typer.Option(
        "--blocks", help="Comma-separated blocks X/Y (∂X_T/∂Y_{T−k}), e.g. [bold]h/h,c/c[/]. "
        "Default: all.", show_default=False)] = None,
    hidden: Annotated[int | None, typer.Option(
        "--hidden", help="Generated weights: hidden size n [default: 64].",
        show_default=False)] = None,
    input_size: Annotated[int | None, typer.Option(
        "--input-size", help="Generated weights: input size d [default: n, or the inputs' d].",
        show_default=False)] = None,
    steps: Annotated[int | None, typer.Option(
        "--steps", help="Generated inputs: T [default: 100].", show_default=False)] = None,
    batch: Annotated[int | None, typer.Option(
        "--batch", help="Generated inputs: B [default: 4].", show_default=False)] = None,
    init: Annotated[str | None, typer.Option(
        "--init", help="Generated weights: pytorch | gaussian | orthogonal [default: pytorch].",
        show_default=False)] = None,
    sigma_w: Annotated[float | None, typer.Option(
        "--sigma-w", help="Recurrent weight scale (gaussian/orthogonal) [default: 1].",
        show_default=False)] = None,
    sigma_v: Annotated[float | None, typer.Option(
        "--sigma-v", help="Input weight scale (gaussian/orthogonal) [default: 1].",
        show_default=False)] = None,
    sigma_b: Annotated[float | None, typer.Option(
        "--sigma-b", help="Bias scale (gaussian/orthogonal) [default: 0].",
        show_default=False)] = None,
    gate_bias: Annotated[float | None, typer.Option(
        "--gate-bias", help="Set the memory gate's bias (LSTM b_f, GRU b_z, ...); with several "
        "cells, of those that have one. --plot then overlays σ(b)^k.",
        show_default=False)] = None,
    chrono: Annotated[float | None, typer.Option(
        "--chrono", help="Chrono init of the memory gate with this T_max.",
        show_default=False)] = None,
    seed: Annotated[int | None, typer.Option(
        "--seed", help="Seed of generated weights (inputs use seed + 1) [default: 0].",
        show_default=False)] = None,
    input_dist: Annotated[str | None, typer.Option(
        "--input-dist", help="Generated inputs: normal | uniform | zeros [default: normal].",
        show_default=False)] = None,
    input_scale: Annotated[float | None, typer.Option(
        "--input-scale", help="Generated inputs: scale [default: 1].",
        show_default=False)] = None,
    dtype: Annotated[str, typer.Option("--dtype", help="float64 | float32.")] = "float64",
    backend: Annotated[str, typer.Option("--backend", help="numpy | cupy.")] = "numpy",
    quiet: Annotated[bool, typer.Option(
        "--quiet", "-q", help="No progress bar and no summary table.")] = False,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace existing output files (regular files only).")] = False,
) -> None:
    """Gradient decay over lag: log10 norms of every block ∂X_T/∂Y_{T−k}, k = 1..T, per
    sequence, exact, in one backward sweep; for one cell or several, with fitted decay
    (per-step factor, e-folding lag, memory horizon) and optional figures."""
    from gateflow.jobs._decay import run_decays

    run_decays(cell, json_path=json_out, csv_path=csv_out, plot_path=plot,
               spectra_path=spectra, spectra_lags=spectra_lags, threshold=threshold,
               blocks=blocks, norms=norms, dtype=dtype, backend=backend, quiet=quiet,
               weights=weights, inputs=inputs, hidden=hidden, input_size=input_size,
               steps=steps, batch=batch, init=init, sigma_w=sigma_w, sigma_v=sigma_v,
               sigma_b=sigma_b, gate_bias=gate_bias, chrono=chrono, seed=seed,
               input_dist=input_dist, input_scale=input_scale, overwrite=overwrite,
               module=module, layer=layer, direction=direction, s0=s0,
               **({"batch_first": True} if batch_first else {}))


@app.command()
def lyapunov(
    cell: Annotated[str | None, typer.Option(
        "--cell", "-c", help="Cell name; optional with a --weights model file that says it.",
        show_default=False)] = None,
    weights: Annotated[str | None, typer.Option(
        "--weights", "-w", help="Weights or model file, as for [bold]gateflow decay[/].",
        show_default=False)] = None,
    module: Annotated[str | None, typer.Option(
        "--module", help="Which recurrent module of --weights.", show_default=False)] = None,
    layer: Annotated[str | None, typer.Option(
        "--layer", help="Layer index, or [bold]all[/] for the stack.",
        show_default=False)] = None,
    direction: Annotated[str | None, typer.Option(
        "--direction", help="forward | reverse.", show_default=False)] = None,
    inputs: Annotated[str | None, typer.Option(
        "--inputs", "-x", help="Inputs .npy (T, B, d), time-major. Default: generated.",
        show_default=False)] = None,
    batch_first: Annotated[bool, typer.Option(
        "--batch-first", help="--inputs is (B, T, d).")] = False,
    k: Annotated[int | None, typer.Option(
        "--k", help="How many exponents [default: all, the state dimension N].",
        show_default=False)] = None,
    transient: Annotated[int | None, typer.Option(
        "--transient", help="Steps T0 not accumulated [default: T/10].",
        show_default=False)] = None,
    json_out: Annotated[str | None, typer.Option(
        "--json", help="Write the spectrum (JSON); [bold]-[/] writes to stdout.",
        show_default=False)] = None,
    plot: Annotated[str | None, typer.Option(
        "--plot", help="Write the spectrum and its convergence (.png or .svg).",
        show_default=False)] = None,
    hidden: Annotated[int | None, typer.Option(
        "--hidden", help="Generated weights: n [default: 64].", show_default=False)] = None,
    input_size: Annotated[int | None, typer.Option(
        "--input-size", help="Generated weights: d [default: n].", show_default=False)] = None,
    steps: Annotated[int | None, typer.Option(
        "--steps", help="Generated inputs: T [default: 100].", show_default=False)] = None,
    batch: Annotated[int | None, typer.Option(
        "--batch", help="Generated inputs: B [default: 4].", show_default=False)] = None,
    init: Annotated[str | None, typer.Option(
        "--init", help="pytorch | gaussian | orthogonal [default: pytorch].",
        show_default=False)] = None,
    sigma_w: Annotated[float | None, typer.Option(
        "--sigma-w", help="Recurrent weight scale [default: 1].", show_default=False)] = None,
    gate_bias: Annotated[float | None, typer.Option(
        "--gate-bias", help="Set the memory gate's bias.", show_default=False)] = None,
    seed: Annotated[int | None, typer.Option(
        "--seed", help="Seed of generated weights (inputs: seed + 1) [default: 0].",
        show_default=False)] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress, no table.")] = False,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace existing output files.")] = False,
) -> None:
    """Lyapunov spectrum of the driven state dynamics: exact structured Jacobians applied to
    K tangent vectors, re-orthonormalised by QR every step; λ_i in natural log per step,
    the sum of the positive ones and the Kaplan–Yorke dimension."""
    from gateflow.jobs._lyapunov import run_lyapunov

    run_lyapunov(cell, weights=weights, inputs=inputs, module=module, layer=layer,
                 direction=direction, k=k, transient=transient, json_path=json_out,
                 plot_path=plot, overwrite=overwrite, quiet=quiet, hidden=hidden,
                 input_size=input_size, steps=steps, batch=batch, init=init, sigma_w=sigma_w,
                 gate_bias=gate_bias, seed=seed,
                 **({"batch_first": True} if batch_first else {}))


@app.command()
def report(
    out: Annotated[str | None, typer.Option(
        "--out", "-o", help="Folder to write (refused if it exists, unless "
        "[bold]--overwrite[/]). Default: a new reports/<date>_n<N>-T<T>-seed<S>.",
        show_default=False)] = None,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace an existing --out folder.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    seed: Annotated[int, typer.Option(
        "--seed", min=0, help="Weight seed (inputs use seed + 1).")] = 0,
    hidden: Annotated[int, typer.Option("--hidden", min=1, help="Hidden size n.")] = 64,
    steps: Annotated[int, typer.Option("--steps", min=2, help="Sequence length T.")] = 200,
    batch: Annotated[int, typer.Option("--batch", min=1, help="Sequences B.")] = 16,
    input_size: Annotated[int, typer.Option("--input-size", min=1, help="Input size d.")] = 16,
    init: Annotated[str, typer.Option(
        "--init", help="Initialisation of every cell: pytorch | gaussian | orthogonal.")
    ] = "pytorch",
) -> None:
    """RNN vs LSTM vs GRU, and the forget/update-gate bias: figures, fitted decay rates,
    theory overlays and data, as index.md and an offline index.html."""
    from gateflow.jobs._report import ReportConfig, write_report

    cfg = ReportConfig(hidden=hidden, inputs=input_size, steps=steps, batch=batch, seed=seed,
                       scheme=init)
    folder = write_report(cfg, out, overwrite=overwrite, quiet=quiet)
    typer.echo(str(folder / "index.html"))


if __name__ == "__main__":
    app(prog_name="gateflow")

"""The commands that measure: ``decay``, ``lyapunov``, ``report``. Each turns its options
into the records the job takes (:func:`~gateflow.cli._options.init_spec`,
:func:`~gateflow.cli._options.input_spec`, :func:`~gateflow.cli._options.model_ref`; the
norms as observers, read once) and calls the job; no math here. Every default is read from
the record or job that owns it."""

from __future__ import annotations

from typing import Annotated

import typer

from gateflow._text import safe
from gateflow.cells._library import CELLS
from gateflow.cli._app import app
from gateflow.cli._options import (
    _NORMS_EPILOG,
    _NORMS_HELP,
    _S0,
    GENERATED,
    INPUTS,
    MODEL,
    OUTPUTS,
    RUN,
    BackendName,
    DType,
    InputDist,
    _Batch,
    _BatchFirst,
    _canonical,
    _Cell,
    _complete_blocks,
    _complete_list,
    _default,
    _Direction,
    _GateBias,
    _Hidden,
    _Inputs,
    _InputSize,
    _Json,
    _Layer,
    _Map,
    _Module,
    _or,
    _Out,
    _Overwrite,
    _Plot,
    _Quiet,
    _Scheme,
    _Seed,
    _SigmaW,
    _Sizes,
    _Steps,
    _TimeMajor,
    _value,
    _Weights,
    init_spec,
    input_spec,
    model_ref,
)
from gateflow.jobs._contract import DEFAULT_NORMS
from gateflow.jobs._report import DEFAULT_FORMATS, ReportConfig
from gateflow.jobs._spec import SPECTRA_LAGS, DecaySpec
from gateflow.models._specs import DISTS, InitSpec, InputSpec
from gateflow.numeric._backend import BACKENDS, DTYPES
from gateflow.numeric._observers import NORMS, choose_norms


def _cells(cell: str | None) -> str | None:
    """``--cell``'s names as the registry spells them (any case: ``LSTM,gru``)."""
    return None if cell is None else _canonical(cell, CELLS)


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
    rename: _Map = None,
    inputs: _Inputs = None,
    batch_first: _BatchFirst = False,
    time_major: _TimeMajor = False,
    s0: _S0 = None,
    steps: _Steps = InputSpec.steps,
    batch: _Batch = InputSpec.batch,
    dist: Annotated[InputDist, typer.Option(
        "--input-dist", metavar="DIST", help=f"Generated inputs: {_or(DISTS)}.",
        case_sensitive=False, rich_help_panel=INPUTS)] = InputSpec.dist,
    scale: Annotated[float, typer.Option(
        "--input-scale", metavar="X", help="Generated inputs' scale.",
        rich_help_panel=INPUTS)] = InputSpec.scale,
    hidden: _Hidden = InitSpec.hidden,
    input_size: _InputSize = InitSpec.input_size,
    sizes: _Sizes = None,
    scheme: _Scheme = InitSpec.scheme,
    sigma_w: _SigmaW = InitSpec.sigma_w,
    sigma_v: Annotated[float, typer.Option(
        "--sigma-v", metavar="X", help="Input weight scale (gaussian, orthogonal).",
        rich_help_panel=GENERATED)] = InitSpec.sigma_v,
    sigma_b: Annotated[float, typer.Option(
        "--sigma-b", metavar="X", help="Bias scale (gaussian, orthogonal).",
        rich_help_panel=GENERATED)] = InitSpec.sigma_b,
    gate_bias: _GateBias = InitSpec.gate_bias,
    chrono: Annotated[float | None, typer.Option(
        "--chrono", metavar="T_MAX", help="Chrono init of the memory gate.",
        rich_help_panel=GENERATED, show_default=False)] = InitSpec.chrono,
    seed: _Seed = InitSpec.seed,
    json_path: _Json = None,
    csv_path: Annotated[str | None, typer.Option(
        "--csv", metavar="FILE", help="Write one row per block, norm, lag (CSV); [bold]-[/] "
        "writes to stdout.", rich_help_panel=OUTPUTS, show_default=False)] = None,
    plot_path: _Plot = None,
    spectra_path: Annotated[str | None, typer.Option(
        "--spectra", metavar="FILE", help="Write singular values at --spectra-lags "
        "(.svg, .png or .pdf).", rich_help_panel=OUTPUTS,
        show_default=False)] = None,
    spectra_lags: Annotated[str | None, typer.Option(
        "--spectra-lags", metavar="K,...", help="Lags for --spectra, clipped to T."
        + _default(",".join(map(str, SPECTRA_LAGS))), rich_help_panel=OUTPUTS,
        show_default=False)] = None,
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
        "it.", rich_help_panel=RUN)] = DecaySpec.threshold,
    dtype: Annotated[DType, typer.Option(
        "--dtype", metavar="DTYPE", help=f"Floating-point type: {_or(DTYPES)}.",
        case_sensitive=False, rich_help_panel=RUN)] = DecaySpec.dtype,
    backend: Annotated[BackendName, typer.Option(
        "--backend", metavar="NAME", help=f"Arrays: {_or(BACKENDS)} (NVIDIA GPU: the "
        "[bold]gpu[/] extra).", case_sensitive=False, rich_help_panel=RUN
    )] = DecaySpec.backend,
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

    run_decays(_cells(cell), model=model_ref(ctx), init=init_spec(ctx),
               inputs=input_spec(ctx), s0=s0, json_path=json_path, csv_path=csv_path,
               plot_path=plot_path, spectra_path=spectra_path, spectra_lags=spectra_lags,
               threshold=threshold, blocks=blocks,
               norms=choose_norms(_canonical(norms, NORMS)),  # observers, read once here
               dtype=_value(dtype), backend=_value(backend), quiet=quiet,
               overwrite=overwrite)


@app.command()
def lyapunov(
    ctx: typer.Context,
    cell: _Cell = None,
    weights: _Weights = None,
    module: _Module = None,
    layer: _Layer = None,
    direction: _Direction = None,
    rename: _Map = None,
    inputs: _Inputs = None,
    batch_first: _BatchFirst = False,
    time_major: _TimeMajor = False,
    s0: _S0 = None,
    steps: _Steps = InputSpec.steps,
    batch: _Batch = InputSpec.batch,
    hidden: _Hidden = InitSpec.hidden,
    input_size: _InputSize = InitSpec.input_size,
    sizes: _Sizes = None,
    scheme: _Scheme = InitSpec.scheme,
    sigma_w: _SigmaW = InitSpec.sigma_w,
    gate_bias: _GateBias = InitSpec.gate_bias,
    seed: _Seed = InitSpec.seed,
    json_path: _Json = None,
    plot_path: _Plot = None,
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

    run_lyapunov(_cells(cell), model=model_ref(ctx), init=init_spec(ctx),
                 inputs=input_spec(ctx), s0=s0, k=k, transient=transient,
                 json_path=json_path, plot_path=plot_path, overwrite=overwrite, quiet=quiet)


@app.command()
def report(
    steps: Annotated[int, typer.Option(
        "--steps", metavar="T", min=2, help="Time steps T of generated inputs.",
        rich_help_panel=INPUTS)] = ReportConfig.steps,
    batch: Annotated[int, typer.Option(
        "--batch", metavar="B", min=1, help="Sequences B of generated inputs.",
        rich_help_panel=INPUTS)] = ReportConfig.batch,
    hidden: Annotated[int, typer.Option(
        "--hidden", metavar="N", min=1, help="Hidden size n.",
        rich_help_panel=GENERATED)] = ReportConfig.hidden,
    input_size: Annotated[int, typer.Option(
        "--input-size", metavar="D", min=1, help="Input size d.",
        rich_help_panel=GENERATED)] = ReportConfig.inputs,
    scheme: _Scheme = ReportConfig.scheme,
    seed: Annotated[int, typer.Option(
        "--seed", metavar="S", min=0, help="Seed of generated weights (inputs: seed + 1).",
        rich_help_panel=GENERATED)] = ReportConfig.seed,
    out: _Out = None,
    overwrite: _Overwrite = False,
    fmt: Annotated[str, typer.Option(
        "--format", "-f", metavar="FMT,...", help="Figure files next to the pages: svg, png "
        "and/or pdf (index.html carries SVG inline whatever is chosen, so it works sent "
        "alone).", rich_help_panel=OUTPUTS)] = ",".join(DEFAULT_FORMATS),
    quiet: _Quiet = False,
) -> None:
    """RNN vs LSTM vs GRU, and the forget/update-gate bias: figures, fitted decay rates,
    theory overlays and data, as index.md and a self-contained index.html, in a new folder
    reports/<date>_n<N>-T<T>-seed<S> unless --out says where.

    The path of index.html goes to stdout, the progress bar to stderr."""
    from gateflow._io import write_stdout
    from gateflow.jobs._report import write_report

    cfg = ReportConfig(hidden=hidden, inputs=input_size, steps=steps, batch=batch, seed=seed,
                       scheme=_value(scheme))
    folder = write_report(cfg, out, overwrite=overwrite, quiet=quiet, formats=fmt)
    write_stdout(f"{safe(folder / 'index.html')}\n".encode())

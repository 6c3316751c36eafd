"""``gateflow report``: does gating keep gradients alive? RNN vs LSTM vs GRU, and the gate bias.

Orchestration only. :func:`write_report` runs the pipeline, one small function per stage::

    runs     = default_runs(cfg)              # the spec: every configuration
    check_memory(cfg, runs)                   # before any work
    measured = measure(cfg, runs)             # all_lags + the one fit (analysis)
    theory   = theory(cfg, measured)          # analysis: mean field, Pascanu, gate path
    figures  = draw(cfg, measured, folder, formats)          # presentation._figures
    data     = report_data(cfg, measured, theory, seconds)   # what data.json holds
    write_data(data, folder)                  # data.json, fits.csv, curves.csv (_serialize)
    write_pages(data, figures, folder)        # index.md, index.html (presentation._report)

and writes a folder::

    index.html                      the report, self-contained: figures inline (SVG data
                                    URIs), formulas as MathML, style inline, no script and
                                    no network, so the file works when sent alone
    index.md                        the same report in Markdown ($…$ LaTeX), for a repository
    decay_cells.<fmt>               RNN vs LSTM vs GRU, with theory overlays
    decay_lstm_bias.<fmt>           LSTM for b_f ∈ {0, 1, 3} and chrono
    decay_gru_bias.<fmt>            GRU for b_z likewise
    spectra.<fmt>                   singular values at a few lags
    data.json fits.csv curves.csv   every number the report shows

where ``<fmt>`` is each of ``formats`` (svg, png, pdf; default png and svg). index.html
inlines an SVG rendering of every figure whatever formats are written; index.md shows the
SVG or PNG file (a PDF only is linked).

The folder is built in a hidden temporary folder next to the target and renamed into place
at the end, so a failure leaves nothing half-written; an existing target is refused unless
``overwrite`` is set.
"""

from __future__ import annotations

import datetime as _dt
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gateflow._errors import GateflowError, arg
from gateflow._interrupt import check as check_interrupt
from gateflow._io import check_dir, fresh_dir, out_path, staged_dir
from gateflow._validate import choose_many, shown
from gateflow.analysis._records import Measured, Run
from gateflow.analysis._theory import theory_for
from gateflow.cells._block import Block
from gateflow.cells._library import GRU, LSTM, RNN
from gateflow.jobs._inputs import check_run, run_bytes
from gateflow.jobs._serialize import csv_cell, csv_text, json_text
from gateflow.numeric._observers import NORMS

__all__ = ["Measured", "ReportConfig", "Run", "check_formats", "check_memory", "default_runs",
           "draw", "measure", "report_data", "theory", "write_data", "write_pages",
           "write_report"]

#: The norm the report measures, fits and draws (the registry's first, cheap one).
NORM = NORMS[0]
#: How many Lyapunov exponents the report measures per run (the leading ones).
LYAPUNOV_K = 8
#: The figure files a report writes unless told otherwise.
DEFAULT_FORMATS = ("png", "svg")


@dataclass(frozen=True)
class ReportConfig:
    """What the report measures. Every cell gets the same n, d, T, B, scheme and seed."""

    hidden: int = 64
    inputs: int = 16
    steps: int = 200
    batch: int = 16
    seed: int = 0
    scheme: str = "pytorch"
    threshold: float = 1e-6
    spectra_lags: tuple[int, ...] = (1, 10, 50)
    biases: tuple[float, ...] = (0.0, 1.0, 3.0)

    def __post_init__(self):
        for name in ("hidden", "inputs", "steps", "batch"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise GateflowError(f"{name} must be an integer >= 1, got {v!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise GateflowError(f"seed must be an integer >= 0, got {self.seed!r}")
        if self.steps < 2:
            raise GateflowError("steps must be >= 2 to fit a decay rate")
        from gateflow.models._params import _SCHEMES as SCHEMES

        if self.scheme not in SCHEMES:
            raise GateflowError(f"unknown init scheme {self.scheme!r}; use one of "
                                f"{', '.join(SCHEMES)}")

    @property
    def input_seed(self) -> int:
        # Not the weights' seed: the same generator stream would correlate x with W.
        return self.seed + 1

    @property
    def name(self) -> str:
        return f"n{self.hidden}-T{self.steps}-seed{self.seed}"


def default_runs(cfg: ReportConfig) -> list[Run]:
    """RNN, LSTM, GRU at the same init; then LSTM b_f and GRU b_z ∈ biases ∪ {chrono}."""
    from gateflow.presentation._numbers import given

    hh = Block.of("h", "h")
    runs = [
        Run("RNN", RNN, RNN.memory_block, "cells", blocks=(RNN.memory_block,), spectra=True),
        Run("LSTM", LSTM, LSTM.memory_block, "cells",
            blocks=tuple(dict.fromkeys((LSTM.memory_block, hh))), spectra=True),
        Run("GRU", GRU, GRU.memory_block, "cells", blocks=(GRU.memory_block,), spectra=True),
    ]
    for cell, label, bname in ((LSTM, "LSTM", "b_f"), (GRU, "GRU", "b_z")):
        block = cell.memory_block
        for b in cfg.biases:
            runs.append(Run(f"{label} {bname}={given(b, style='latex')}", cell, block,
                            f"{cell.name}-bias", gate_bias=b, blocks=(block,)))
        runs.append(Run(f"{label} chrono", cell, block, f"{cell.name}-bias",
                        chrono=float(max(cfg.steps, 2)), blocks=(block,)))
    return runs


# -- the stages -------------------------------------------------------------------------------
def check_memory(cfg: ReportConfig, runs: list[Run]) -> None:
    """Refuse a report that cannot fit, before any work: every run's results are kept (one
    log10 norm per lag, sequence and block) while the largest run computes."""
    from gateflow.cells._params import param_shapes

    kept = sum(8 * cfg.steps * cfg.batch * (len(r.blocks) + 2)
               + 8 * sum(int(np.prod(s)) for s in param_shapes(r.cell, cfg.hidden,
                                                              cfg.inputs).values())
               for r in runs)
    peak = max(run_bytes(r.cell, cfg.hidden, cfg.inputs, cfg.steps, cfg.batch, blocks=r.blocks,
                         norms=(NORM,), singular=r.spectra) for r in runs)
    check_run(peak + kept, "this report",
              f"use a smaller {arg('hidden')}, {arg('steps')} or {arg('batch')}")


def measure(cfg: ReportConfig, runs: list[Run], *, quiet: bool = True) -> list[Measured]:
    """Every run through ``all_lags`` (one progress bar over all lags of all runs) and
    :func:`~gateflow.analysis._analysis.fit_chain` (the one fit)."""
    from gateflow.analysis._analysis import fit_chain
    from gateflow.models._params import init_params, make_inputs
    from gateflow.numeric._chain import all_lags
    from gateflow.numeric._lyapunov import lyapunov
    from gateflow.presentation._console import progress

    x = make_inputs(cfg.steps, cfg.batch, cfg.inputs, seed=cfg.input_seed)
    sv_lags = tuple(k for k in cfg.spectra_lags if 1 <= k <= cfg.steps)
    out = []
    with progress("measuring", len(runs) * cfg.steps, quiet=quiet) as bar:
        for run in runs:
            check_interrupt()  # a Ctrl-C Python swallowed stops here
            bar.set(bar.done, description=run.label)
            t0 = time.perf_counter()
            params = init_params(run.cell, cfg.hidden, cfg.inputs, scheme=cfg.scheme,
                                 gate_bias=run.gate_bias, chrono=run.chrono, seed=cfg.seed)
            res = all_lags(run.cell, params, x, blocks=run.blocks, norms=(NORM,),
                           singular_lags=sv_lags if run.spectra else (),
                           progress=lambda k: bar.advance())
            fits = fit_chain(res, NORM, blocks=run.blocks, direct=[run.state],
                             threshold=cfg.threshold)
            N = cfg.hidden * len(run.cell.state)
            spec = lyapunov(run.cell, params, x, k=min(LYAPUNOV_K, N),
                            transient=cfg.steps // 10)
            out.append(Measured(run, res, params, fits, time.perf_counter() - t0, spec))
        bar.set(bar.done, description="measured")
    return out


def theory(cfg: ReportConfig, measured: list[Measured]) -> dict:
    """The theory the report compares with (numbers from the analysis layer): mean field
    and the Pascanu bound of the RNN, the zero-weight gate path of every biased run."""
    from gateflow.analysis._analysis import gate_theory, mean_field_from_params

    rnn = next(m for m in measured if theory_for(m.result).mean_field)
    mf = mean_field_from_params(rnn.params, input_second_moment=1.0)
    return {
        "mean_field": {"sigma_w2": mf.sigma_w2, "input_var": mf.input_var,
                       "bias_var": mf.bias_var, "q_star": mf.q_star, "chi1": mf.chi1,
                       "per_step_factor": mf.factor, "efold_lag": mf.efold_lag},
        "pascanu": {"U_spectral_norm": float(np.linalg.norm(rnn.params["U"], 2)), "gamma": 1.0,
                    "norm": NORM, "bound": "sqrt(n) * (gamma * ||U||_2)^k", "n": cfg.hidden},
        "gate_path": {m.run.label: gate_theory(m.run.gate_bias).as_dict()
                      for m in measured if m.run.gate_bias is not None},
        # mean field: a perturbation's squared norm grows by χ₁ per step, so the largest
        # Lyapunov exponent of a large random tanh RNN is ½ ln χ₁ (Molgedey et al. 1992;
        # Poole et al. 2016)
        "lyapunov_mean_field": {"lambda_1": 0.5 * float(np.log(mf.chi1))},
    }


def draw(cfg: ReportConfig, measured: list[Measured], folder: Path,
         formats: tuple[str, ...] = DEFAULT_FORMATS) -> list:
    """The figures, written in ``folder`` in each of ``formats`` (presentation); returns
    them (:class:`~gateflow.presentation._figures.ReportFigure`: caption, SVG, files)."""
    from gateflow.presentation._figures import report_figures

    return report_figures(measured, n=cfg.hidden, steps=cfg.steps, scheme=cfg.scheme,
                          folder=folder, formats=formats)


def _versions() -> dict:
    import matplotlib
    import sympy

    from gateflow._version import __version__

    return {"gateflow": __version__, "numpy": np.__version__, "sympy": sympy.__version__,
            "matplotlib": matplotlib.__version__, "python": platform.python_version(),
            "platform": platform.platform()}


def report_data(cfg: ReportConfig, measured: list[Measured], theory: dict,
                seconds: float) -> dict:
    """Everything the report states, as data.json holds it (NumPy values inside): the
    configuration, versions, wall time, theory, and per run its fits and curves (median and
    quartiles over the batch per lag) and singular values."""
    from gateflow.analysis._analysis import summarize
    from gateflow.numeric._observers import OBSERVERS
    from gateflow.presentation._labels import direct_name

    key = OBSERVERS[NORM].key
    runs = []
    for m in measured:
        entry: dict[str, Any] = {
            "label": m.run.label, "cell": m.run.cell.name, "group": m.run.group,
            "block": m.run.block, "gate_bias": m.run.gate_bias, "chrono": m.run.chrono,
            "seconds": m.seconds, "fits": {b: f.as_dict() for b, f in m.fits.blocks.items()},
            "curves": {}}
        res = m.result
        series: dict[str, np.ndarray] = {b: res.blocks[b][key] for b in m.run.blocks}
        if m.direct_fit is not None:
            series[direct_name(m.run.cell, m.state)] = res.direct[m.state][key]
            entry["direct_fit"] = m.direct_fit.as_dict()
        for b, arr in series.items():
            s = summarize(arr, res.lags)
            entry["curves"][b] = {"log10_median": s.median, "log10_q25": s.q25,
                                  "log10_q75": s.q75}
        if m.lyapunov is not None:
            ly = m.lyapunov
            entry["lyapunov"] = {"k": ly.k, "state_dim": ly.state_dim,
                                 "transient": ly.transient,
                                 "units": "natural log per step",
                                 "median": np.median(ly.exponents, axis=0),
                                 "exponents": ly.exponents}
        if res.singular_values:
            entry["singular_values_log10"] = {
                str(k): dict(d) for k, d in res.singular_values.items()}
        runs.append(entry)
    return {"config": {**asdict(cfg), "input_seed": cfg.input_seed,
                       "inputs_distribution": "normal(0, 1)", "norm": NORM,
                       "dtype": "float64"},
            "versions": _versions(), "seconds": seconds, "theory": theory, "runs": runs,
            "lags": measured[0].result.lags}


def write_data(data: dict, folder: Path) -> None:
    """data.json (strict JSON, non-finite -> null), curves.csv and fits.csv, through the one
    serializer (:mod:`gateflow.jobs._serialize`)."""
    (folder / "data.json").write_text(json_text(data, indent=1), encoding="utf-8")
    curves = []
    fits = []
    for r in data["runs"]:
        for b, c in r["curves"].items():
            for i, k in enumerate(data["lags"]):
                curves.append([r["label"], r["cell"], b, str(int(k)),
                               *(csv_cell(c[q][i]) for q in ("log10_median", "log10_q25",
                                                             "log10_q75"))])
        shown = list(r["fits"].items())
        if "direct_fit" in r:  # its curve is the one that is not a block's (report_data)
            (name,) = (b for b in r["curves"] if b not in r["fits"])
            shown.append((name, r["direct_fit"]))
        for b, f in shown:
            fits.append([r["label"], r["cell"], b, csv_cell(f["slope_log10_per_step"]),
                         csv_cell(f["per_step_factor"]), f["regime"], csv_cell(f["r2"]),
                         csv_cell(f["efold_lag"]), csv_cell(f["memory_horizon"]),
                         csv_cell(f["threshold"])])
    (folder / "curves.csv").write_text(csv_text(
        ["config", "cell", "block", "lag", "log10_median", "log10_q25", "log10_q75"], curves),
        encoding="utf-8")
    (folder / "fits.csv").write_text(csv_text(
        ["config", "cell", "block", "slope_log10_per_step", "per_step_factor", "regime", "r2",
         "efold_lag", "memory_horizon", "threshold"], fits), encoding="utf-8")


def write_pages(data: dict, figures, folder: Path) -> None:
    """index.md and index.html, rendered (presentation) from the data as data.json holds
    it, and the figures :func:`draw` made: the narrative states only numbers of that file."""
    import json

    from gateflow.presentation._report import render_report

    md, page = render_report(json.loads(json_text(data)), figures)
    (folder / "index.md").write_text(md, encoding="utf-8")
    (folder / "index.html").write_text(page, encoding="utf-8")


# -- the folder -------------------------------------------------------------------------------
def default_out(cfg: ReportConfig, root: Path = Path("reports")) -> Path:
    """``reports/<date>_n64-T200-seed0``, with ``-2``, ``-3``, … if that exists."""
    return fresh_dir(root, f"{_dt.date.today().isoformat()}_{cfg.name}")


def check_formats(formats) -> tuple[str, ...]:
    """The figure formats asked for (a comma-separated string or names), checked."""
    from gateflow.presentation._figures import FIGURE_FORMATS

    return choose_many(formats, FIGURE_FORMATS, "figure format")


def write_report(cfg: ReportConfig | None = None, out=None, *, overwrite: bool = False,
                 quiet: bool = False, runs: list[Run] | None = None,
                 formats=DEFAULT_FORMATS) -> Path:
    """Measure, draw and write the report; return its folder (built in a hidden staging
    folder and renamed into place: all or nothing). ``formats``: the figure files to write
    next to the pages, any of svg, png, pdf (names or a comma-separated string);
    index.html carries SVG renderings inline whatever they are."""
    cfg = ReportConfig() if cfg is None else cfg
    if not isinstance(cfg, ReportConfig):
        raise GateflowError(f"the report's configuration must be a ReportConfig, got "
                            f"{shown(cfg)}; e.g. gateflow.ReportConfig(hidden=32)")
    formats = check_formats(formats)
    out = default_out(cfg) if out is None else out_path(out)
    check_dir(out, overwrite)  # before any work
    runs = default_runs(cfg) if runs is None else runs
    check_memory(cfg, runs)
    t0 = time.perf_counter()
    with staged_dir(out, overwrite) as tmp:
        measured = measure(cfg, runs, quiet=quiet)
        figures = draw(cfg, measured, tmp, formats)
        data = report_data(cfg, measured, theory(cfg, measured), time.perf_counter() - t0)
        write_data(data, tmp)
        write_pages(data, figures, tmp)
    return out

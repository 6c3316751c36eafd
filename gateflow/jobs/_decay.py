"""``gateflow decay``: gradient decay over lag, for one cell or several. Orchestration only.

The pipeline, one small function per stage (the CLI runs them all with
:func:`run_decays`; a notebook can call any of them)::

    spec     = decay_spec(cells, **options)        # jobs._spec: every option checked
    data     = load(spec)                          # jobs._inputs: weights and inputs
    results  = measure(spec, data)                 # decay() per cell: all_lags + provenance
    fits, overlays = analyze(spec, results, data)  # analysis: fits; presentation: theory
    figures  = draw(spec, results, overlays)       # presentation._figures
    written  = write(spec, results, figures)       # jobs._contract, all or nothing
    show(spec, results, fits, written)             # presentation._console

Files, formats and the JSON contract: :mod:`gateflow.jobs._contract`. Several cells
(``--cell rnn,lstm,gru``) share one generated config or one ``--inputs`` file; per-cell
files then name the cell with ``{cell}``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gateflow._io import STDOUT, staged_files, write_files
from gateflow.jobs._contract import (
    DEFAULT_NORMS,
    check_finite,
    csv_bytes,
    json_bytes,
    save_result,
    with_provenance,
    write_csv,
    write_outputs,
)
from gateflow.jobs._inputs import assumed_notes, file_source, generate, run_bytes, tell
from gateflow.jobs._spec import (
    PLOT,
    SPECTRA,
    THRESHOLD,
    DecaySpec,
    decay_spec,
    keyword_records,
    per_cell,
)
from gateflow.models._specs import InitSpec, InputSpec, ModelRef
from gateflow.numeric._result import ChainResult

if TYPE_CHECKING:  # the figures and fits are imported where they are made
    from matplotlib.figure import Figure

    from gateflow.analysis._analysis import ChainFits
    from gateflow.presentation._plot import Overlay

__all__ = [
    "DecayRun",
    "analyze",
    "decay",
    "decay_spec",
    "draw",
    "file_source",
    "generate",
    "load",
    "measure",
    "outputs",
    "per_cell",
    "run_bytes",
    "run_decays",
    "show",
    "write",
    "write_csv",
    "save_result",
    "write_outputs",
]


def decay(cell, params: dict, x, *, blocks=None, norms=DEFAULT_NORMS, dtype: str = "float64",
          backend: str = "numpy", progress=None, seed: int | None = None,
          weights_source: dict | None = None, inputs_source: dict | None = None,
          **chain_opts) -> ChainResult:
    """log10 norms of ∂X_T/∂Y_{T−k} for every block and lag, with their provenance: the
    :class:`~gateflow.ChainResult` of :func:`gateflow.all_lags`, its ``provenance`` filled
    in (``seed``, where the weights and the inputs came from), as the decay JSON records it
    (:func:`gateflow.save_result`).

    ``chain_opts`` go to :func:`gateflow.all_lags` (``probe``, ``singular_lags``,
    ``s0``, ``threads``, ...). Raises :class:`GateflowError` for anything wrong with the
    inputs, before computing, and for a result that overflowed (NaN or +inf).
    """
    from gateflow.numeric._chain import all_lags

    res = all_lags(cell, params, x, blocks=blocks, norms=norms, dtype=dtype,
                   backend=backend, progress=progress, **chain_opts)
    out = with_provenance(res, seed=seed, weights_source=weights_source,
                          inputs_source=inputs_source)
    check_finite(out)
    return out


@dataclass
class DecayRun:
    """What ``gateflow decay`` made: results and fits per cell, the figures, the files."""

    results: dict[str, ChainResult]  # by cell name
    fits: dict[str, ChainFits]  # by cell name: the memory block and its direct product
    overlays: list[Overlay]
    figure: Figure | None = None
    spectra: Figure | None = None
    written: list = field(default_factory=list)


# -- the stages -------------------------------------------------------------------------------
def load(spec: DecaySpec, notes: list[str] | None = None
         ) -> dict[str, tuple[dict, np.ndarray, dict]]:
    """Every cell's (params, inputs, provenance) before any computing: a bad file for the
    last cell costs nothing. What the run assumed — how an inputs file's axes were read
    (unless given), what the model file did not say (:attr:`Recurrent.assumed`) — is added
    to ``notes``, one line each; without a list it is said on stderr at once."""
    said: list[str] = []
    data = {c: generate(spec.cell(c), notes=said, **spec.data_options(c)) for c in spec.cells}
    if spec.selection is not None:
        said += assumed_notes(spec.selection)
    if spec.s0_source is not None:  # the initial state: --s0's, or the model file's
        from gateflow.models._model import batch_of

        for c in spec.cells:
            _, x, prov = data[c]
            if spec.s0_source["source"] == "model file":
                batch_of(spec.s0 or {}, x.shape[1], spec.s0_source["from"])
            prov["inputs_source"]["s0"] = spec.s0_source
        said += spec.s0_notes
    if notes is None:
        tell(said)
    else:
        notes += said
    return data


def measure(spec: DecaySpec, data: dict) -> dict[str, ChainResult]:
    """:func:`decay` for every cell, with a progress bar unless quiet."""
    from gateflow.presentation._console import progress

    results = {}
    for c in spec.cells:
        params, x, prov = data[c]
        T = x.shape[0]
        chain_opts: dict[str, Any] = {}
        if spec.spectra_lags:
            chain_opts["singular_lags"] = tuple(sorted({min(k, T) for k in spec.spectra_lags}))
        if spec.s0 is not None:
            chain_opts["s0"] = spec.s0
        label = f"{c}: backward sweep" if spec.multi else "backward sweep"
        with progress(label, T, quiet=spec.quiet, transient=True) as bar:
            results[c] = decay(spec.cell(c), params, x, blocks=spec.blocks[c], norms=spec.norms,
                               dtype=spec.dtype, backend=spec.backend, progress=bar.set,
                               **prov, **chain_opts)
    return results


def analyze(spec: DecaySpec, results: dict[str, ChainResult], data: dict
            ) -> tuple[dict[str, ChainFits], list[Overlay]]:
    """Fits of each cell's memory block and its direct product (analysis), and the
    theory overlays that apply (:func:`~gateflow.analysis._theory.theory_for`, drawn by
    presentation)."""
    from gateflow.analysis._analysis import fit_chain
    from gateflow.presentation._figures import second_moment, theory_overlays

    fits = {}
    for c, r in results.items():
        fits[c] = fit_chain(r, blocks=[r.cell.memory_block], direct=[r.cell.memory_state],
                            threshold=spec.threshold)
    overlays = theory_overlays(results, {c: data[c][0] for c in results},
                               {c: second_moment(data[c][1]) for c in results},
                               gate_bias=spec.init.gate_bias)
    return fits, overlays


def draw(spec: DecaySpec, results: dict[str, ChainResult], overlays: list[Overlay]
         ) -> dict[str, Figure]:
    """The figures asked for (``--plot``, ``--spectra``), as Figures by role. The
    ``--plot`` figure gains an input-sensitivity panel when input blocks (``h/x``, ``c/x``)
    were measured (:func:`~gateflow.presentation._figures.decay_figure`)."""
    from gateflow.presentation._figures import decay_figure, spectra_figure

    figs = {}
    if PLOT in spec.figures:
        figs[PLOT] = decay_figure(results, overlays)
    if SPECTRA in spec.figures:
        T_min = min(r.shapes["T"] for r in results.values())
        figs[SPECTRA] = spectra_figure(results, sorted({min(k, T_min)
                                                        for k in spec.spectra_lags}))
    return figs


def outputs(spec: DecaySpec, results: dict[str, ChainResult], figures: dict[str, Figure]
            ) -> dict[Path, bytes]:
    """Every output rendered in memory: path -> bytes (``-`` for stdout)."""
    from gateflow.presentation._plot import figure_bytes

    payloads = {}
    for c, d in spec.files.items():
        if "JSON" in d:
            payloads[d["JSON"]] = json_bytes(results[c])
        if "CSV" in d:
            payloads[d["CSV"]] = csv_bytes(results[c])
    for role, fig in figures.items():
        path, fmt = spec.figures[role]
        payloads[path] = figure_bytes(fig, fmt)
    return payloads


def write(spec: DecaySpec, results: dict[str, ChainResult], figures: dict[str, Figure]
          ) -> list[Path]:
    """Render every output in memory, then write them all or none; returns the files
    written (not stdout)."""
    payloads = outputs(spec, results, figures)
    write_files(payloads, overwrite=spec.overwrite)
    return [p for p in payloads if p != STDOUT]


def show(spec: DecaySpec, results: dict[str, ChainResult], fits: dict[str, ChainFits],
         written: list[Path], *,
         tables: bool = True) -> None:
    """The tables (unless ``tables`` is False) and the files written, unless quiet (on
    stderr when data went to stdout)."""
    if spec.quiet:
        return
    from gateflow.presentation._console import console, fit_table, summary_table, wrote

    to_stdout = any(STDOUT in d.values() for d in spec.files.values())
    out = console(stderr=to_stdout)
    if tables:
        for r in results.values():  # never cut a number: wider than the screen if need be
            out.print(summary_table(r, width=out.width), crop=False)
        out.print(fit_table(fits, {c: r.shapes["T"] for c, r in results.items()},
                            spec.threshold, width=out.width), crop=False)
    wrote(out, written)


def run_decays(cells=None, *, model: ModelRef | None = None, init: InitSpec | None = None,
               inputs: InputSpec | None = None, s0=None, json_path=None, csv_path=None,
               plot_path=None, spectra_path=None, spectra_lags=None,
               threshold: float = THRESHOLD, blocks=None, norms=DEFAULT_NORMS,
               dtype: str = "float64", backend: str = "numpy", quiet: bool = False,
               overwrite: bool = False, **options) -> DecayRun:
    """``gateflow decay`` for one cell or several (``"rnn,lstm,gru"``), all on the same
    generated config or the same inputs file: spec → load → measure → analyze → draw →
    write → show. What the run assumed (how it read the inputs' axes, what the model file
    did not say) is said on stderr, one ``note:`` line each, once it succeeded.

    The weights come from ``model`` (:class:`~gateflow.models._specs.ModelRef`: a model
    file, or a parameter file per cell with ``{cell}``) or are generated (``init``), the
    inputs from ``inputs`` (a file, or generated); a Python caller may pass their fields
    as keywords instead (``weights=``, ``layer=``, ``hidden=``, ``steps=``, ``inputs=``
    a path, …: :func:`~gateflow.jobs._spec.keyword_records`). With several cells
    ``json_path``, ``csv_path`` and the weights must contain ``{cell}``. ``gate_bias``/
    ``chrono`` apply to the cells with a memory gate and are refused if none has one.
    Nothing is written unless everything succeeds.
    """
    if options or (inputs is not None and not isinstance(inputs, InputSpec)):
        if (model, init) != (None, None) or isinstance(inputs, InputSpec):
            raise TypeError(f"run_decays() takes records or their fields as keywords, not "
                            f"both; got {', '.join(sorted(options))}")
        if inputs is not None:
            options["inputs"] = inputs
        model, init, inputs = keyword_records(options)
        if options:
            raise TypeError(f"run_decays() got unexpected keyword arguments "
                            f"{', '.join(sorted(options))}")
    spec = decay_spec(cells, model=model, init=InitSpec() if init is None else init,
                      inputs=InputSpec() if inputs is None else inputs, s0=s0,
                      json_path=json_path, csv_path=csv_path, plot_path=plot_path,
                      spectra_path=spectra_path, spectra_lags=spectra_lags,
                      threshold=threshold, blocks=blocks, norms=norms, dtype=dtype,
                      backend=backend, quiet=quiet, overwrite=overwrite)
    notes: list[str] = []
    data = load(spec, notes)
    results = measure(spec, data)
    fits, overlays = analyze(spec, results, data)
    figures = draw(spec, results, overlays)
    payloads = outputs(spec, results, figures)
    # what is said was done: the files are staged, the notes and tables printed, and only
    # then the files moved into place (a closed pipe or Ctrl-C while printing leaves none)
    with staged_files(payloads, overwrite=spec.overwrite):
        tell(notes)  # once it worked: a refused run says one error line and nothing else
        show(spec, results, fits, [])
    written = [p for p in payloads if p != STDOUT]
    show(spec, results, fits, written, tables=False)
    return DecayRun(results=results, fits=fits, overlays=overlays, figure=figures.get(PLOT),
                    spectra=figures.get(SPECTRA), written=written)


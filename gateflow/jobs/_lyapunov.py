"""``gateflow lyapunov``: the Lyapunov spectrum of a cell (or of one module of a model file)
along trajectories driven by generated or given inputs. Orchestration only: the weights and
inputs come as for ``decay`` (:func:`gateflow.jobs._inputs.generate`, model files included),
the spectrum from :func:`gateflow.numeric._lyapunov.lyapunov`, the figure from
:mod:`gateflow.presentation._figures`.

The JSON contract (``"format": "gateflow-lyapunov"``): ``cell``, ``k``, ``steps``,
``transient``, ``state_dim``, ``blocks`` (the tangent space's order), ``units`` ("natural log
per step"), ``exponents`` (a list over the batch of K descending values; null = −inf, a
direction the dynamics annihilate), ``running`` (``steps`` and, per step, per sequence, the
estimate of λ_1..λ_min(K,8)), ``positive_sum`` and ``kaplan_yorke`` per sequence, and the
provenance of weights and inputs as in ``decay``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gateflow._errors import GateflowError, arg
from gateflow._io import STDOUT, check_file, staged_files
from gateflow._version import __version__
from gateflow.cells._library import get_cell
from gateflow.jobs._serialize import json_text
from gateflow.jobs._spec import check_figure_path, check_model_options
from gateflow.models._specs import InitSpec, InputSpec, ModelRef

__all__ = ["lyapunov_json", "run_lyapunov"]

FORMAT = "gateflow-lyapunov"


def lyapunov_json(res, provenance: dict) -> dict[str, Any]:
    """The JSON document of a :class:`~gateflow.numeric._lyapunov.LyapunovResult`."""
    return {
        "format": FORMAT, "format_version": 2, "gateflow_version": __version__,
        "cell": res.cell.name, "k": res.k, "steps": res.steps, "transient": res.transient,
        "state_dim": res.state_dim, "blocks": list(res.blocks),
        "units": "natural log per step",
        "exponents": res.exponents,  # −inf (an annihilated direction) is written as null
        "running": {"steps": res.running_steps, "exponents": res.running},
        "positive_sum": res.positive_sum,
        "kaplan_yorke": res.kaplan_yorke,
        "seed": provenance.get("seed"),
        "weights": provenance.get("weights_source"),
        "input_data": provenance.get("inputs_source"),
    }


def run_lyapunov(cell=None, *, model: ModelRef | None = None, init: InitSpec | None = None,
                 inputs: InputSpec | None = None, s0=None, k: int | None = None,
                 transient: int | None = None, json_path=None, plot_path=None,
                 overwrite: bool = False, quiet: bool = False, **options):
    """``gateflow lyapunov``: every option checked and every output path planned before
    anything is computed; outputs written all or nothing. Returns the result.

    The weights come from ``model`` (:class:`~gateflow.models._specs.ModelRef`) or are
    generated (``init``), the inputs from ``inputs`` (a file, or generated); a Python
    caller may pass their fields as keywords instead (``weights=``, ``layer=``,
    ``hidden=``, ``steps=``, … : :func:`~gateflow.jobs._spec.keyword_records`). ``k``
    exponents (None: all N), ``transient`` steps not accumulated (None: T // 10).

    The trajectories start from ``s0`` (a ``.npz`` of one array per state block) when
    given, else from the initial state the model file fixes (an ONNX node's
    ``initial_h``/``initial_c`` constants), else from zeros; the JSON's ``input_data``
    records which (``"s0"``)."""
    from gateflow.jobs._inputs import assumed_notes, generate, tell
    from gateflow.jobs._spec import keyword_records, load_start, run_start, select
    from gateflow.models._model import batch_of
    from gateflow.numeric._lyapunov import lyapunov

    if options:
        if (model, init, inputs) != (None, None, None):
            raise TypeError(f"run_lyapunov() takes records or their fields as keywords, not "
                            f"both; got {', '.join(sorted(options))}")
        model, init, inputs = keyword_records(options)
        if options:
            raise TypeError(f"run_lyapunov() got unexpected keyword arguments "
                            f"{', '.join(sorted(options))}")
    init = InitSpec() if init is None else init
    inputs = InputSpec() if inputs is None else inputs
    check_model_options(cell, model)
    weights = None if model is None else model.path
    given = {arg("weights"): weights, arg("inputs"): inputs.path, arg("s0"): s0}  # never output
    out = None if json_path is None else check_file(json_path, "JSON", overwrite=overwrite,
                                                    inputs=given)
    fig = None if plot_path is None else check_figure_path(
        plot_path, f"{arg('plot_path')} figure", overwrite=overwrite, inputs=given)
    if fig is not None and fig[0] == STDOUT:
        raise GateflowError(f"figures are not written to stdout; give {arg('plot_path')} a "
                            ".png or .svg path")
    if out is not None and fig is not None and Path(out).resolve() == fig[0].resolve():
        raise GateflowError(f"{arg('json_path')} and {arg('plot_path')} name the same file; "
                            "give two different paths")
    selection = None
    if model is not None and str(model.path).strip():
        selection = select(model, cell)
        chosen = selection.cell
    elif model is not None:
        raise GateflowError(f"the {arg('weights')} path is empty; give a file name")
    else:
        chosen = get_cell(cell)  # a declared cell, or a variant: gru[gate=...]
    state = load_start(s0, chosen)
    notes: list[str] = []
    params, x, prov = generate(chosen, init, inputs, weights=weights, selection=selection,
                               notes=notes)
    notes += assumed_notes(selection) if selection is not None else []
    start, start_source, start_notes = run_start(selection, state, s0, chosen.state)
    if start_source is not None:  # s0's, or the model file's: said and recorded
        if start_source["source"] == "model file":
            batch_of(start or {}, x.shape[1], start_source["from"])
        prov["inputs_source"]["s0"] = start_source
        notes += start_notes
    T = x.shape[0]
    if transient is None:
        transient = T // 10
    from gateflow.presentation._console import progress

    with progress("Lyapunov spectrum (QR)", T, quiet=quiet, transient=True) as bar:
        res = lyapunov(chosen, params, x, k=k, transient=transient, s0=start,
                       progress=bar.set)
    payloads: dict[Path, bytes] = {}
    if out is not None:
        payloads[out] = (json_text(lyapunov_json(res, prov)) + "\n").encode()
    if fig is not None:
        from gateflow.presentation._figures import lyapunov_figure
        from gateflow.presentation._plot import figure_bytes

        payloads[fig[0]] = figure_bytes(lyapunov_figure(res), fig[1])
    # what is said was done: the files are staged, the notes and table printed, and only
    # then the files moved into place (a closed pipe or Ctrl-C while printing leaves none)
    with staged_files(payloads, overwrite=overwrite):
        tell(notes)  # once it worked: a refused run says one error line and nothing else
        if not quiet:
            from gateflow.presentation._console import console, lyapunov_table

            c = console(stderr=out == STDOUT)
            c.print(lyapunov_table(res, width=c.width), crop=False)
    if not quiet:
        from gateflow.presentation._console import wrote

        wrote(c, [p for p in payloads if p != STDOUT])
    return res

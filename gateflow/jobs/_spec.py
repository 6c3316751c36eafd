"""``gateflow decay``'s options, checked and turned into a :class:`DecaySpec` before any work.

Everything a user can get wrong — cell, block and norm names (one list parser:
:func:`gateflow._validate.choose_many`), output paths (:func:`plan_outputs`), the
threshold, the spectra lags, options that apply to no cell — is refused here, so a mistake
costs no computing and writes nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateflow._errors import GateflowError
from gateflow._io import STDOUT, check_file
from gateflow._validate import choose_many, integer_text
from gateflow.cells._library import cell_names, get_cell
from gateflow.cells._stack import input_lag_blocks
from gateflow.jobs._contract import DEFAULT_NORMS
from gateflow.numeric._observers import NORMS
from gateflow.presentation._plot import FIGURE_FORMATS

__all__ = ["CELL_FIELD", "DecaySpec", "check_figure_path", "check_model_options",
           "decay_spec", "parse_lags", "per_cell", "plan_outputs", "run_start"]

CELL_FIELD = "{cell}"
SPECTRA_LAGS = (1, 10, 100)
#: Output figures by role: the --plot figure and the --spectra figure.
PLOT, SPECTRA = "--plot figure", "--spectra figure"


@dataclass
class DecaySpec:
    """A checked ``gateflow decay``: what to measure, for which cells, and where to write."""

    cells: tuple[str, ...]
    norms: tuple[str, ...]
    blocks: dict[str, tuple[str, ...] | None]  # per cell; None: all
    dtype: str = "float64"
    backend: str = "numpy"
    threshold: float = 1e-6
    spectra_lags: tuple[int, ...] = ()
    files: dict[str, dict[str, Path]] = field(default_factory=dict)  # cell -> JSON/CSV path
    figures: dict[str, tuple[Path, str]] = field(default_factory=dict)  # PLOT/SPECTRA
    weights: Any = None  # a path, with {cell} for several cells
    #: the module of a model file (--weights with one cell, or none): its cell and params
    selection: Any = None
    #: the initial state per block the run starts from: --s0's, else the one the model file
    #: fixes (:attr:`Selection.s0`), else None (zeros); see :func:`run_start`
    s0: dict | None = None
    s0_source: dict | None = None  # where s0 comes from, for input_data["s0"]; None: zeros
    s0_notes: list = field(default_factory=list)  # the note: line that says it
    data_opts: dict = field(default_factory=dict)  # generate()'s options shared by all cells
    gate_opts: dict = field(default_factory=dict)  # gate_bias, chrono: cells with a gate
    overwrite: bool = False
    quiet: bool = False

    @property
    def multi(self) -> bool:
        return len(self.cells) > 1

    def data_options(self, cell: str) -> dict:
        """:func:`~gateflow.jobs._inputs.generate`'s keyword arguments for ``cell``."""
        opts = dict(self.data_opts)
        if get_cell(cell).memory_bias is not None or not self.multi:
            opts.update(self.gate_opts)
        return {**opts, "weights": per_cell(self.weights, cell), "dtype": self.dtype,
                "backend": self.backend, "blocks": self.blocks[cell], "norms": self.norms,
                "selection": self.selection}


def parse_lags(text: str | None, default=SPECTRA_LAGS) -> tuple[int, ...]:
    """``"1,10,100"`` -> ``(1, 10, 100)`` (integers >= 1, sorted, repeats dropped)."""
    if text is None:
        return tuple(default)
    out = set()
    for s in str(text).split(","):
        s = s.strip()
        if not s:
            continue
        k = integer_text(s, "--spectra-lags", "give e.g. 1,10,100")
        if k < 1:
            raise GateflowError(f"--spectra-lags: lag {k} must be >= 1")
        out.add(k)
    if not out:
        raise GateflowError(f"empty --spectra-lags {text!r}; give e.g. 1,10,100")
    return tuple(sorted(out))


def per_cell(path, cell: str) -> str | None:
    """``path`` with ``{cell}`` replaced by the cell name (None stays None); a string, so a
    trailing slash survives for the output checks."""
    return None if path is None else str(path).replace(CELL_FIELD, cell)


def check_figure_path(path, what: str, *, overwrite: bool = False,
                      inputs=None) -> tuple[Path, str]:
    """An output figure path with a known extension (.svg, .png or .pdf) in an existing
    folder, none of the run's ``inputs`` (flag -> path, see :func:`gateflow._io.check_file`)."""
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in FIGURE_FORMATS:
        raise GateflowError(f"cannot write {what} {str(path)!r}: unknown extension "
                            f"{path.suffix or '(none)'!r}; use "
                            + ", ".join(f".{f}" for f in FIGURE_FORMATS[:-1])
                            + f" or .{FIGURE_FORMATS[-1]}")
    return check_file(path, what, overwrite=overwrite, inputs=inputs), fmt


def plan_outputs(cells: tuple[str, ...], json_path, csv_path, plot_path, spectra_path,
                 overwrite: bool = False, weights=None, inputs=None, s0=None
                 ) -> tuple[dict[str, dict[str, Path]], dict[str, tuple[Path, str]]]:
    """Check every output path (and that no input path is empty, and that no output is an
    input file: ``--weights``, ``--inputs``, ``--s0``) before any work; return (per-cell
    files, figure files)."""
    multi = len(cells) > 1

    def _inputs(c: str) -> dict:  # the run's input files: never an output
        return {f"--weights ({c})" if multi else "--weights": per_cell(weights, c),
                "--inputs": inputs, "--s0": s0}

    for path, flag in ((json_path, "--json"), (csv_path, "--csv"), (plot_path, "--plot"),
                       (spectra_path, "--spectra"), (weights, "--weights"),
                       (inputs, "--inputs")):
        if path is not None and not str(path).strip():
            raise GateflowError(f"the {flag} path is empty; give a file name")
    for path, flag in ((json_path, "--json"), (csv_path, "--csv")):
        if multi and path is not None and Path(str(path)) == STDOUT:
            raise GateflowError(f"{flag} - writes one cell to stdout; with several cells give "
                                f"a path with {CELL_FIELD}, e.g. decay-{CELL_FIELD}.{flag[2:]}")
        if multi and path is not None and CELL_FIELD not in str(path):
            raise GateflowError(f"{flag} {str(path)!r} must contain {CELL_FIELD} with several "
                                f"cells (one file per cell), e.g. decay-{CELL_FIELD}"
                                f"{Path(str(path)).suffix or '.' + flag[2:]}")
    files: dict[str, dict[str, Path]] = {}
    for c in cells:
        files[c] = {}
        for path, what in ((json_path, "JSON"), (csv_path, "CSV")):
            if path is not None:
                files[c][what] = check_file(per_cell(path, c), what, overwrite=overwrite,
                                            inputs=_inputs(c))
    figs: dict[str, tuple[Path, str]] = {}
    for path, what in ((plot_path, PLOT), (spectra_path, SPECTRA)):
        if path is not None:
            figs[what] = check_figure_path(path, what, overwrite=overwrite, inputs={
                k: v for c in cells for k, v in _inputs(c).items()})
    if any(p == STDOUT for p, _ in figs.values()):
        raise GateflowError("figures are not written to stdout; give --plot/--spectra a .svg, "
                            ".png or .pdf path")
    if json_path is not None and csv_path is not None \
            and Path(str(json_path)) == Path(str(csv_path)) == STDOUT:
        raise GateflowError("--json - and --csv - both write to stdout; send one to a file")
    seen: dict[Path, list[str]] = {}
    for c, d in files.items():
        for what, p in d.items():
            flag = f"--{what.lower()}"
            seen.setdefault(p.resolve(), []).append(f"{flag} of {c}" if multi else flag)
    for what, (p, _) in figs.items():
        seen.setdefault(p.resolve(), []).append(what.split()[0])
    for p, whats in seen.items():
        if whats == ["--json", "--csv"]:
            raise GateflowError("--json and --csv name the same file; give two different paths")
        if len(whats) > 1:
            both = "both" if len(whats) == 2 else "all"
            raise GateflowError(f"{' and '.join(whats)} would {both} write {str(p)!r}; "
                                "give different paths")
    return files, figs


def _picks(given: list[str]) -> str:
    return f"{', '.join(given)} {'picks' if len(given) == 1 else 'pick'} a module"


def check_model_options(cells, weights, module, layer, direction) -> list[str]:
    """The checks every job reading a model file shares (``decay``, ``lyapunov``): a cell
    or a weights file is needed, and ``--module/--layer/--direction`` need the file.
    Returns the model options given."""
    given = [k for k, v in (("--module", module), ("--layer", layer),
                            ("--direction", direction)) if v is not None]
    if cells is None and weights is None:
        raise GateflowError("give --cell NAME, or --weights FILE of a model that says its cell "
                            "(see gateflow inspect FILE)")
    if given and weights is None:
        raise GateflowError(f"{_picks(given)} of a model file; give the file with "
                            "--weights FILE")
    return given


def _partial(s0: dict, blocks, s0_path) -> list[str]:
    """The ``note:`` line for an ``--s0`` that leaves some of the cell's state ``blocks``
    out (those start at zeros, as :func:`gateflow.all_lags` starts them); none otherwise."""
    missing = [b for b in blocks if b not in s0]
    if not missing:
        return []
    from gateflow.models.formats._files import label

    name = "--s0" if s0_path is None else label(Path(str(s0_path)))
    given = [b for b in blocks if b in s0]
    return [f"note: {name} gives {', '.join(given)} only: {', '.join(missing)} "
            f"start{'s' if len(missing) == 1 else ''} at zeros"]


def run_start(selection, s0: dict | None, s0_path=None, blocks=None
              ) -> tuple[dict | None, dict | None, list[str]]:
    """The state a run starts from: ``s0`` (``--s0``, read from ``s0_path``) when given,
    else the initial state the model file fixes (``selection.s0``, an ONNX node's
    ``initial_h``/``initial_c`` constants), else zeros (None). Returns it, where it comes
    from (the JSON's ``input_data["s0"]``; None for zeros) and the ``note:`` lines that say
    it (when the file fixes one, and when ``s0`` leaves some of the cell's state ``blocks``
    out: those start at zeros; the record's ``"blocks"`` and ``"zeros"`` name both)."""
    from gateflow.jobs._inputs import file_source

    fixed = None if selection is None else selection.s0
    if s0 is not None:
        source: dict[str, Any] = {"source": "--s0"}
        if s0_path is not None:
            source.update({k: v for k, v in file_source(s0_path).items() if k != "source"})
        if blocks is None and selection is not None:
            blocks = selection.cell.state
        notes: list[str] = []
        if blocks is not None:
            source["blocks"] = [b for b in blocks if b in s0]
            source["zeros"] = [b for b in blocks if b not in s0]
            notes = _partial(s0, blocks, s0_path)
        if fixed is None:
            return s0, source, notes
        source["replaces"] = selection.s0_from
        return s0, source, [f"note: --s0 replaces the initial state the model file fixes "
                            f"({selection.s0_from})", *notes]
    if fixed is None:
        return None, None, []
    return fixed, {"source": "model file", "from": selection.s0_from,
                   "blocks": sorted(fixed)}, [
        f"note: the run starts from the initial state the model file fixes "
        f"({selection.s0_from}), not zeros; --s0 FILE gives another"]


def _threshold(value) -> float:
    try:
        threshold = float(value)
    except (TypeError, ValueError):
        raise GateflowError(f"--threshold must be a number, got {value!r}") from None
    if not (math.isfinite(threshold) and threshold > 0):
        raise GateflowError(f"--threshold must be a finite number > 0, got {value!r}")
    return threshold


def decay_spec(cells, *, json_path=None, csv_path=None, plot_path=None, spectra_path=None,
               spectra_lags=None, threshold: float = 1e-6, blocks=None, norms=None,
               dtype: str = "float64", backend: str = "numpy", quiet: bool = False,
               weights=None, overwrite: bool = False, module=None, layer=None,
               direction=None, s0=None, rename=None, **data_opts) -> DecaySpec:
    """Check every option of ``gateflow decay`` (see :func:`~gateflow.jobs._decay.run_decays`)
    and return the :class:`DecaySpec`; nothing is computed or written.

    With ``weights`` and at most one cell, the weights file is a model: ``module``,
    ``layer`` and ``direction`` pick what to analyse
    (:func:`gateflow.models._model.select_model`), and the cell may be left out when the
    file says what it is."""
    from gateflow.models._inputs import load_state
    from gateflow.models._model import select_model
    from gateflow.numeric._backend import get_dtype, get_xp

    given = check_model_options(cells, weights, module, layer, direction)
    if rename is not None and weights is None:
        raise GateflowError("--map renames the arrays of a model file; give it with --weights")
    named = None if cells is None else cell_names(cells)  # variants: lstm[gate=...]
    selection = None
    if weights is not None and str(weights).strip() and (named is None or len(named) == 1) \
            and CELL_FIELD not in str(weights):
        selection = select_model(weights, module=module, layer=layer, direction=direction,
                                 cell=None if named is None else named[0], rename=rename)
        cells = (selection.cell.name,)
    elif given:
        raise GateflowError(f"{_picks(given)} of one model file, with one --cell or none")
    elif named is None:
        raise GateflowError(f"--weights {str(weights)!r} names one file per cell with "
                            f"{CELL_FIELD}; give the cells with --cell NAME[,NAME...]")
    else:
        cells = named
    multi = len(cells) > 1
    if multi and weights is not None and CELL_FIELD not in str(weights):
        raise GateflowError(f"--weights {str(weights)!r} is one cell's file; with several cells "
                            f"give a pattern with {CELL_FIELD}, e.g. w-{CELL_FIELD}.safetensors")
    files, figs = plan_outputs(cells, json_path, csv_path, plot_path, spectra_path, overwrite,
                               weights, data_opts.get("inputs"), s0)
    threshold = _threshold(threshold)
    if spectra_lags is not None and spectra_path is None:
        raise GateflowError("--spectra-lags applies only with --spectra FILE")
    sv_lags = parse_lags(spectra_lags) if spectra_path is not None else ()
    norm_t = DEFAULT_NORMS if norms is None else choose_many(norms, NORMS, "norm")
    get_dtype(dtype)
    get_xp(backend)
    block_t: dict[str, tuple[str, ...] | None] = {}
    for c in cells:
        cell = get_cell(c)
        chosen = None if blocks is None else choose_many(
            blocks, (*cell.blocks, *input_lag_blocks(cell)), "block")
        block_t[c] = chosen
        mb = cell.memory_block
        if figs and chosen is not None and mb not in chosen:
            raise GateflowError(f"--plot/--spectra draw each cell's memory block; add {mb} to "
                                f"--blocks (cell {c})")
    gate_opts = {k: data_opts.pop(k, None) for k in ("gate_bias", "chrono")}
    gated = [c for c in cells if get_cell(c).memory_bias is not None]
    if multi and any(v is not None for v in gate_opts.values()) and not gated:
        flag = "--gate-bias" if gate_opts["gate_bias"] is not None else "--chrono"
        raise GateflowError(f"{flag} does not apply to any of {', '.join(cells)}: none has a "
                            "gate on its memory path")
    state = None
    if s0 is not None:
        if not str(s0).strip():
            raise GateflowError("the --s0 path is empty; give a file name")
        if multi:
            raise GateflowError("--s0 gives one cell's initial state; use it with one cell")
        state = load_state(s0, get_cell(cells[0]).state)
    start, start_source, start_notes = run_start(selection, state, s0,
                                                 get_cell(cells[0]).state)
    return DecaySpec(cells=cells, norms=norm_t, blocks=block_t, dtype=dtype, backend=backend,
                     threshold=threshold, spectra_lags=sv_lags, files=files, figures=figs,
                     weights=weights, data_opts=data_opts, gate_opts=gate_opts,
                     overwrite=overwrite, quiet=quiet, selection=selection, s0=start,
                     s0_source=start_source, s0_notes=start_notes)

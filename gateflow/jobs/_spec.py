"""``gateflow decay``'s options, checked and turned into a :class:`DecaySpec` before any work.

The weights, the inputs and the model file come as typed records, each checked where it
was made (:mod:`gateflow.models._specs`: :class:`InitSpec`, :class:`InputSpec`,
:class:`ModelRef`); the norms as observers and the blocks as each cell's :class:`.Block` s,
read once (:func:`~gateflow.numeric._observers.choose_norms`,
:func:`~gateflow.cells._stack.choose_blocks`). What is left to check here is how they go
together — output paths (:func:`plan_outputs`), the threshold, the spectra lags, options
that apply to no cell — so a mistake costs no computing and writes nothing. Messages name
parameters (:func:`gateflow._errors.arg`); the command line writes them as its flags.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from gateflow._errors import GateflowError, arg, as_given
from gateflow._io import STDOUT, check_file
from gateflow._validate import integer_text
from gateflow.cells._block import Block
from gateflow.cells._library import cell_names, get_cell
from gateflow.cells._record import Cell
from gateflow.cells._stack import choose_blocks
from gateflow.jobs._contract import DEFAULT_NORMS
from gateflow.models._specs import InitSpec, InputSpec, ModelRef, take
from gateflow.numeric._measure import Observer
from gateflow.numeric._observers import choose_norms
from gateflow.presentation._plot import FIGURE_FORMATS

__all__ = ["CELL_FIELD", "DecaySpec", "SPECTRA_LAGS", "check_figure_path",
           "check_model_options", "decay_spec", "keyword_records", "parse_lags", "per_cell",
           "plan_outputs", "run_start"]

CELL_FIELD = "{cell}"
#: The lags ``spectra_lags`` takes when not given.
SPECTRA_LAGS = (1, 10, 100)
#: Output figures by role: the plot_path figure and the spectra_path figure.
PLOT, SPECTRA = f"{arg('plot_path')} figure", f"{arg('spectra_path')} figure"
#: The decay threshold of the memory horizon (the first lag whose median norm is below it).
THRESHOLD = 1e-6


@dataclass
class DecaySpec:
    """A checked ``gateflow decay``: what to measure, for which cells, and where to write."""

    cells: tuple[str, ...]
    norms: tuple[Observer, ...]
    blocks: dict[str, tuple[Block, ...] | None]  # per cell; None: all
    init: InitSpec = field(default_factory=InitSpec)  # generated weights (and the seed)
    inputs: InputSpec = field(default_factory=InputSpec)  # generated, or a file
    dtype: str = "float64"
    backend: str = "numpy"
    threshold: float = THRESHOLD
    spectra_lags: tuple[int, ...] = ()
    files: dict[str, dict[str, Path]] = field(default_factory=dict)  # cell -> JSON/CSV path
    figures: dict[str, tuple[Path, str]] = field(default_factory=dict)  # PLOT/SPECTRA
    weights: str | None = None  # a file, or a path with {cell} for several cells
    #: the module of a model file (weights with one cell, or none): its cell and params
    selection: Any = None
    #: the initial state per block the run starts from: s0's, else the one the model file
    #: fixes (:attr:`Selection.s0`), else None (zeros); see :func:`run_start`
    s0: dict | None = None
    s0_source: dict | None = None  # where s0 comes from, for input_data["s0"]; None: zeros
    s0_notes: list = field(default_factory=list)  # the note: line that says it
    overwrite: bool = False
    quiet: bool = False
    #: name -> the Cell it stands for (a model file's stack included: a value, never a
    #: name to look up again)
    cell_of: dict[str, Cell] = field(default_factory=dict)

    @property
    def multi(self) -> bool:
        return len(self.cells) > 1

    def cell(self, name: str) -> Cell:
        """The :class:`Cell` of one of :attr:`cells`: the model file's (a stack, a variant)
        or the declared cell, as :func:`decay_spec` resolved it once."""
        return self.cell_of[name]

    @property
    def norm_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.norms)

    def data_options(self, cell: str) -> dict:
        """:func:`~gateflow.jobs._inputs.generate`'s arguments for ``cell``: in a run of
        several cells, a cell without a memory gate gets no gate bias."""
        init = self.init
        if self.multi and self.cell(cell).memory_bias is None:
            init = init.without_gate()
        return {"init": init, "inputs": self.inputs, "weights": per_cell(self.weights, cell),
                "dtype": self.dtype, "backend": self.backend, "blocks": self.blocks[cell],
                "norms": self.norms, "selection": self.selection}


def parse_lags(text: str | None, default=SPECTRA_LAGS) -> tuple[int, ...]:
    """``"1,10,100"`` -> ``(1, 10, 100)`` (integers >= 1, sorted, repeats dropped)."""
    if text is None:
        return tuple(default)
    out = set()
    for s in str(text).split(","):
        s = s.strip()
        if not s:
            continue
        k = integer_text(s, arg("spectra_lags"), "give e.g. 1,10,100")
        if k < 1:
            raise GateflowError(f"{arg('spectra_lags')}: lag {k} must be >= 1")
        out.add(k)
    if not out:
        raise GateflowError(f"empty {arg('spectra_lags')} {text!r}; give e.g. 1,10,100")
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
    input file: ``weights``, ``inputs``, ``s0``) before any work; return (per-cell files,
    figure files)."""
    multi = len(cells) > 1

    def _inputs(c: str) -> dict:  # the run's input files: never an output
        return {f"{arg('weights')} ({c})" if multi else arg("weights"): per_cell(weights, c),
                arg("inputs"): inputs, arg("s0"): s0}

    for path, param in ((json_path, "json_path"), (csv_path, "csv_path"),
                        (plot_path, "plot_path"), (spectra_path, "spectra_path"),
                        (weights, "weights"), (inputs, "inputs")):
        if path is not None and not str(path).strip():
            raise GateflowError(f"the {arg(param)} path is empty; give a file name")
    for path, param, ext in ((json_path, "json_path", "json"), (csv_path, "csv_path", "csv")):
        if multi and path is not None and Path(str(path)) == STDOUT:
            raise GateflowError(f"{arg(param)} - writes one cell to stdout; with several cells "
                                f"give a path with {CELL_FIELD}, e.g. decay-{CELL_FIELD}.{ext}")
        if multi and path is not None and CELL_FIELD not in str(path):
            raise GateflowError(f"{arg(param)} {str(path)!r} must contain {CELL_FIELD} with "
                                f"several cells (one file per cell), e.g. decay-{CELL_FIELD}"
                                f"{Path(str(path)).suffix or '.' + ext}")
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
        raise GateflowError(f"figures are not written to stdout; give {arg('plot_path')}/"
                            f"{arg('spectra_path')} a .svg, .png or .pdf path")
    if json_path is not None and csv_path is not None \
            and Path(str(json_path)) == Path(str(csv_path)) == STDOUT:
        raise GateflowError(f"{arg('json_path')} - and {arg('csv_path')} - both write to "
                            "stdout; send one to a file")
    seen: dict[Path, list[str]] = {}
    for c, d in files.items():
        for what, p in d.items():
            name = arg("json_path" if what == "JSON" else "csv_path")
            seen.setdefault(p.resolve(), []).append(f"{name} of {c}" if multi else name)
    for what, (p, _) in figs.items():
        seen.setdefault(p.resolve(), []).append(what.split()[0])
    for p, whats in seen.items():
        if whats == [arg("json_path"), arg("csv_path")]:
            raise GateflowError(f"{arg('json_path')} and {arg('csv_path')} name the same file; "
                                "give two different paths")
        if len(whats) > 1:
            both = "both" if len(whats) == 2 else "all"
            raise GateflowError(f"{' and '.join(whats)} would {both} write {str(p)!r}; "
                                "give different paths")
    return files, figs


def _picks(given) -> str:
    return (f"{', '.join(arg(k) for k in given)} {'picks' if len(given) == 1 else 'pick'} "
            "a module")


def check_model_options(cells, model: ModelRef | None) -> None:
    """The checks every job reading a model file shares (``decay``, ``lyapunov``): a cell
    or a model file is needed."""
    if cells is None and model is None:
        raise GateflowError(f"give {arg('cell')} NAME, or {arg('weights')} FILE of a model "
                            "that says its cell (see gateflow inspect FILE)")


def _partial(s0: dict, blocks, s0_path) -> list[str]:
    """The ``note:`` line for an ``s0`` that leaves some of the cell's state ``blocks``
    out (those start at zeros, as :func:`gateflow.all_lags` starts them); none otherwise."""
    missing = [b for b in blocks if b not in s0]
    if not missing:
        return []
    from gateflow.models.formats._files import label

    name = as_given("s0") if s0_path is None else label(Path(str(s0_path)))
    given = [b for b in blocks if b in s0]
    return [f"note: {name} gives {', '.join(given)} only: {', '.join(missing)} "
            f"start{'s' if len(missing) == 1 else ''} at zeros"]


def run_start(selection, s0: dict | None, s0_path=None, blocks=None
              ) -> tuple[dict | None, dict | None, list[str]]:
    """The state a run starts from: ``s0`` (read from ``s0_path``) when given, else the
    initial state the model file fixes (``selection.s0``, an ONNX node's
    ``initial_h``/``initial_c`` constants), else zeros (None). Returns it, where it comes
    from (the JSON's ``input_data["s0"]``; None for zeros) and the ``note:`` lines that say
    it (when the file fixes one, and when ``s0`` leaves some of the cell's state ``blocks``
    out: those start at zeros; the record's ``"blocks"`` and ``"zeros"`` name both)."""
    from gateflow.jobs._inputs import file_source

    fixed = None if selection is None else selection.s0
    if s0 is not None:
        source: dict[str, Any] = {"source": "s0"}  # the same word in every file, whoever ran it
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
        return s0, source, [f"note: {as_given('s0')} replaces the initial state the model "
                            f"file fixes ({selection.s0_from})", *notes]
    if fixed is None:
        return None, None, []
    return fixed, {"source": "model file", "from": selection.s0_from,
                   "blocks": sorted(fixed)}, [
        f"note: the run starts from the initial state the model file fixes "
        f"({selection.s0_from}), not zeros; {as_given('s0')} FILE gives another"]


def _threshold(value) -> float:
    try:
        threshold = float(value)
    except (TypeError, ValueError):
        raise GateflowError(f"{arg('threshold')} must be a number, got {value!r}") from None
    if not (math.isfinite(threshold) and threshold > 0):
        raise GateflowError(f"{arg('threshold')} must be a finite number > 0, got {value!r}")
    return threshold


def load_start(s0, cell) -> dict | None:
    """The initial state in the file ``s0`` (None: not given), by ``cell``'s state blocks."""
    if s0 is None:
        return None
    from gateflow.models._inputs import load_state

    if not str(s0).strip():
        raise GateflowError(f"the {arg('s0')} path is empty; give a file name")
    return load_state(s0, cell.state)


def select(model: ModelRef, cell=None):
    """The module of ``model``'s file to analyse (:func:`gateflow.models._model.select`),
    ``cell`` the one the user named (None: the file says)."""
    from gateflow.models._model import select

    return select(model if cell is None else replace(model, cell=cell))


def decay_spec(cells=None, *, model: ModelRef | None = None, init: InitSpec = InitSpec(),
               inputs: InputSpec = InputSpec(), s0=None, json_path=None, csv_path=None,
               plot_path=None, spectra_path=None, spectra_lags=None,
               threshold: float = THRESHOLD, blocks=None, norms=DEFAULT_NORMS,
               dtype: str = "float64", backend: str = "numpy", quiet: bool = False,
               overwrite: bool = False) -> DecaySpec:
    """Check every option of ``gateflow decay`` (see :func:`~gateflow.jobs._decay.run_decays`)
    and return the :class:`DecaySpec`; nothing is computed or written.

    ``model`` with at most one cell is a model file: its ``module``, ``layer`` and
    ``direction`` pick what to analyse (:func:`gateflow.models._model.select`), and the
    cell may be left out when the file says what it is; a ``model.path`` with ``{cell}``
    is one parameter file per cell. ``spectra_lags`` (None: :data:`SPECTRA_LAGS`) only
    with ``spectra_path``."""
    from gateflow.numeric._backend import get_dtype, get_xp

    check_model_options(cells, model)
    named = None if cells is None else cell_names(cells)  # variants: lstm[gate=...]
    weights = None if model is None else model.path
    selection = None
    if model is not None and str(weights).strip() and (named is None or len(named) == 1) \
            and CELL_FIELD not in str(weights):
        selection = select(model, None if named is None else named[0])
        cells = (selection.cell.name,)
        cell_of = {selection.cell.name: selection.cell}
    elif model is not None and model.picks:
        raise GateflowError(f"{_picks(model.picks)} of one model file, with one {arg('cell')} "
                            "or none")
    elif named is None:
        raise GateflowError(f"{arg('weights')} {str(weights)!r} names one file per cell with "
                            f"{CELL_FIELD}; give the cells with {arg('cell')} NAME[,NAME...]")
    else:
        cells = named
        cell_of = {c: get_cell(c) for c in named}  # where the names enter
    multi = len(cells) > 1
    if multi and weights is not None and CELL_FIELD not in str(weights):
        raise GateflowError(f"{arg('weights')} {str(weights)!r} is one cell's file; with "
                            f"several cells give a pattern with {CELL_FIELD}, e.g. "
                            f"w-{CELL_FIELD}.safetensors")
    files, figs = plan_outputs(cells, json_path, csv_path, plot_path, spectra_path, overwrite,
                               weights, inputs.path, s0)
    threshold = _threshold(threshold)
    if spectra_lags is not None and spectra_path is None:
        raise GateflowError(f"{arg('spectra_lags')} applies only with {arg('spectra_path')} "
                            "FILE")
    sv_lags = parse_lags(spectra_lags) if spectra_path is not None else ()
    chosen_norms = choose_norms(norms)  # names from a script; observers pass as they are
    get_dtype(dtype)
    get_xp(backend)
    block_t: dict[str, tuple[Block, ...] | None] = {}
    for c in cells:
        cell = cell_of[c]
        chosen = None if blocks is None else choose_blocks(cell, blocks)
        block_t[c] = chosen
        mb = cell.memory_block
        if figs and chosen is not None and mb not in chosen:
            raise GateflowError(f"{arg('plot_path')}/{arg('spectra_path')} draw each cell's "
                                f"memory block; add {mb} to {arg('blocks')} (cell {c})")
    gate = [k for k, v in init.memory_gate.items() if v is not None]
    if multi and gate and not any(cell_of[c].memory_bias is not None for c in cells):
        raise GateflowError(f"{arg(gate[0])} does not apply to any of {', '.join(cells)}: none "
                            "has a gate on its memory path")
    if s0 is not None and multi:
        raise GateflowError(f"{arg('s0')} gives one cell's initial state; use it with one cell")
    state = load_start(s0, cell_of[cells[0]])
    start, start_source, start_notes = run_start(selection, state, s0,
                                                 cell_of[cells[0]].state)
    return DecaySpec(cells=cells, norms=chosen_norms, blocks=block_t, init=init, inputs=inputs,
                     dtype=dtype, backend=backend, threshold=threshold, spectra_lags=sv_lags,
                     files=files, figures=figs, weights=weights, overwrite=overwrite,
                     quiet=quiet, selection=selection, s0=start, s0_source=start_source,
                     s0_notes=start_notes, cell_of=cell_of)


def keyword_records(options: dict[str, Any]) -> tuple[ModelRef | None, InitSpec, InputSpec]:
    """The records of a Python caller's keyword arguments (the friendly edge of
    ``run_decays`` and ``run_lyapunov``): ``weights`` with ``module``, ``layer``,
    ``direction`` and ``rename`` (a :class:`ModelRef`), the generated weights' options
    (``hidden``, ``scheme``, … : :class:`InitSpec`), the inputs' (``inputs``, a file, or
    ``steps``, ``batch``, ``dist``, ``scale``; ``batch_first``: :class:`InputSpec`) and
    ``seed`` (both). Each is popped from ``options``; what is left is the caller's."""
    model = ModelRef.from_options(
        options.pop("weights", None), module=options.pop("module", None),
        layer=options.pop("layer", None), direction=options.pop("direction", None),
        rename=options.pop("rename", None))
    path = options.pop("inputs", None)
    if path is not None:
        options["path"] = path
    init = take(InitSpec, options, keep=("seed",))
    return model, init, take(InputSpec, options)

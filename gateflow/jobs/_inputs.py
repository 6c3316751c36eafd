"""What a run measures: its weights and inputs (from files or generated), where they came
from, and whether it fits in memory before anything is allocated.

:func:`run_bytes` is the one memory estimate of a generated run, used by ``decay``,
``report`` and ``sweep`` with :func:`gateflow._memory.check_fits` (:func:`check_run`).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np

from gateflow._errors import GateflowError, arg, as_given
from gateflow._memory import check_fits
from gateflow.cells._block import Block
from gateflow.cells._library import get_cell
from gateflow.cells._params import param_shapes, sizes_for
from gateflow.cells._stack import input_lag_blocks
from gateflow.models._specs import InitSpec, InputSpec
from gateflow.numeric._observers import NORMS

__all__ = ["assumed_notes", "axes_notes", "check_run", "file_source", "generate",
           "input_layout", "run_bytes", "tell"]

#: A shape read as (T, B, d) looks transposed when B > TRANSPOSED·T and T <= SHORT: a few
#: "steps" of many "sequences" is more often a batch-first file read time-major.
TRANSPOSED, SHORT = 4, 32


def file_source(path) -> dict:
    """``{"source": "file", "path": ..., "sha256": ...}`` of an input file."""
    path = Path(path)
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    except OSError as exc:
        raise GateflowError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from None
    return {"source": "file", "path": str(path), "sha256": h.hexdigest()}


def run_bytes(cell, n: int, d: int, T: int, B: int, dtype: str = "float64", blocks=None,
              norms=NORMS[:1], *, singular: bool = False, sizes=None) -> int:
    """Peak bytes of one generated run: float64 params and inputs, then ``all_lags``.

    Every norm beyond the first (cheap, row-wise) one, and ``singular`` values, are
    counted with the n × n workspace of an iterative norm. ``sizes``: the cell's other
    sizes (:func:`~gateflow.cells._params.sizes_for`); n stands for the largest."""
    from gateflow.numeric._backend import get_dtype
    from gateflow.numeric._chain import estimate_bytes

    cell_ = get_cell(cell)
    blocks = tuple(cell_.blocks) if blocks is None else tuple(map(Block.parse, blocks))
    names = [getattr(o, "name", o) for o in norms]  # observers, or their names
    outs = {b.out for b in blocks}
    big = max(v for k, v in sizes_for(cell_, n, d, sizes).items() if k != "d")
    workspace = singular or bool(set(names) - set(NORMS[:1]))
    need = estimate_bytes(cell_, big, d, T, B, big * len(outs), len(blocks) * len(names) + 4,
                          get_dtype(dtype).itemsize, workspace,
                          inputs=len({b.wrt for b in blocks if b in input_lag_blocks(cell_)}))
    shapes = param_shapes(cell_, n, d, sizes)
    return need + 8 * T * B * d + 8 * sum(math.prod(s) for s in shapes.values())


def check_run(need: int, what: str = "this run", fix: str | None = None,
              backend: str = "numpy") -> None:
    """Refuse ``need`` bytes (from :func:`run_bytes`) before any work, with how to shrink."""
    if fix is None:
        check_fits(need, what, backend=backend)
    else:
        check_fits(need, what, fix, backend=backend)


def input_layout(batch_first: bool | None, model=None) -> tuple[bool, str]:
    """How an inputs file's axes are read: ``(batch_first, why)``.

    ``batch_first`` True or False is the user's word (``batch_first``; the command line's
    ``--batch-first``, ``--time-major``); None follows the model's framework
    (:attr:`Recurrent.layout`: a Keras layer is batch-major, an ONNX node says it with
    ``layout``, a captured module with ``batch_first``), and time-major when the model does
    not say (a PyTorch state dict, a file of gateflow parameters, generated weights).
    ``why`` is that choice in words, with the option that says the other order (as the
    caller spells it: :func:`gateflow._errors.as_given`)."""
    if batch_first is not None and not isinstance(batch_first, (bool, np.bool_)):
        raise GateflowError(f"{arg('batch_first')} must be True, False or None, got "
                            f"{batch_first!r}")
    if batch_first is not None:
        return bool(batch_first), as_given("batch_first" if batch_first else "time_major")
    layout = getattr(model, "layout", "unknown")
    if layout in ("time-major", "batch-major"):
        name = f" {model.module!r}" if model.module else ""
        other = as_given("time_major" if layout == "batch-major" else "batch_first")
        return layout == "batch-major", (f"{layout}, as the {model.framework} {model.kind}"
                                         f"{name} reads them; {other} if not")
    return False, f"time-major: the file does not say; {as_given('batch_first')} if not"


def axes_notes(inputs, x: np.ndarray, batch_first: bool | None, model=None) -> list[str]:
    """What a run says about how it read an inputs file (``x`` as read, time-major): one
    ``note:`` line when the axis order was not given, and a ``warning:`` line when the
    shape looks transposed (B > 4·T with T <= 32) or the order given contradicts the
    model's."""
    read_bf, why = input_layout(batch_first, model)
    T, B, d = x.shape
    name = Path(str(inputs)).name
    out = []
    if batch_first is None:
        out.append(f"note: inputs {name} read as T={T} steps × B={B} sequences × d={d} "
                   f"({why})")
        if B > TRANSPOSED * T and T <= SHORT:
            flip = as_given("time_major" if read_bf else "batch_first")
            out.append(f"warning: inputs {name}: B={B} sequences of T={T} steps looks "
                       f"transposed; if the file is {'(T, B, d)' if read_bf else '(B, T, d)'}"
                       f", add {flip}")
    else:
        layout = getattr(model, "layout", "unknown")
        said = "batch-major" if batch_first else "time-major"
        if layout in ("time-major", "batch-major") and layout != said:
            out.append(f"warning: {why} reads inputs {name} {said}, but "
                       f"{input_layout(None, model)[1].split(';')[0]}")
    return out


def assumed_notes(model, prefix: str = "") -> list[str]:
    """``note:`` lines for what gateflow assumed about ``model`` that its file did not say
    (:attr:`Recurrent.assumed`), one each; ``prefix`` names the module when a run reads
    several."""
    return [f"note: {prefix}{line}" for line in getattr(model, "assumed", ())]


def tell(lines) -> None:
    """Print each line once, in order, on stderr (one line each, however narrow the
    terminal)."""
    from gateflow.presentation._console import say

    for line in dict.fromkeys(lines):
        say(line)


def _apply_only(names, what: str) -> GateflowError:
    """Options of generated data given next to a file."""
    verb, it = ("applies", "it") if len(names) == 1 else ("apply", "them")
    return GateflowError(f"{', '.join(arg(k) for k in names)} {verb} only to generated data; "
                         f"drop {it} or drop {arg(what)}")


def _set(record, skip: tuple[str, ...] = ()) -> list[str]:
    """The fields of ``record`` its maker set (:attr:`InitSpec.given`), in field order."""
    return [f.name for f in fields(record) if f.name in record.given and f.name not in skip]


def generate(cell, init: InitSpec = InitSpec(), inputs: InputSpec = InputSpec(), *,
             weights=None, selection=None, dtype: str = "float64", backend: str = "numpy",
             blocks=None, norms=NORMS[:2], notes: list[str] | None = None
             ) -> tuple[dict, np.ndarray, dict]:
    """Weights and inputs of a run: read from files, or generated from ``init`` and
    ``inputs`` (:class:`~gateflow.models._specs.InitSpec`, :class:`InputSpec`, whose
    defaults are the run's: n = 64, d = n, T = 100, B = 4, PyTorch init, seed 0;
    generated inputs use seed + 1).

    Returns ``(params, x, provenance)`` with provenance keys ``seed``, ``weights_source`` and
    ``inputs_source`` (keyword arguments of :func:`~gateflow.jobs._decay.decay`). Options
    of generated data given next to a file are refused, naming them (``seed`` when both are
    files). A generated run that cannot fit is refused before anything is made.

    ``weights`` is a parameter file for ``cell``; ``selection`` a module of a model file,
    already read (:func:`gateflow.models._model.select_model`, ``weights`` its path): its
    params are used, and the inputs (from the file or generated) are the *model's*: for
    layer L > 0 they are run through layers 0..L−1 first
    (:meth:`~gateflow.models._model.Selection.layer_inputs`), so that the layer sees what
    it sees in the model; its reverse direction gets them time-reversed. Both are
    recorded in the provenance (``"layer_inputs"``, ``"time_reversed"``). An inputs file's
    axes are read as ``inputs.batch_first`` says, or as the model reads them
    (:func:`input_layout`); the provenance records the order used (``"layout"``,
    ``"layout_from"``), and ``notes`` (a list) gets the lines that say it
    (:func:`axes_notes`). ``init.sizes`` gives generated weights a cell's other sizes (the
    projected LSTM's p; default n // 2); they are recorded with the weights' provenance.
    """
    from gateflow.models._params import init_params, load_inputs, load_params, make_inputs

    cell = get_cell(cell)
    generated_weights = weights is None and selection is None
    generated_inputs = inputs.generated
    if not generated_weights and _set(init, ("seed",)):
        raise _apply_only(_set(init, ("seed",)), "weights")
    if not generated_inputs and _set(inputs, ("seed", "path", "batch_first")):
        raise _apply_only(_set(inputs, ("seed", "path", "batch_first")), "inputs")
    if not generated_weights and not generated_inputs \
            and "seed" in init.given | inputs.given:
        raise GateflowError(f"{arg('seed')} applies only to generated data; drop it or drop "
                            f"{arg('weights')} or {arg('inputs')}")
    sizes = init.size_map
    model = None if selection is None else selection.model
    x = None
    read_bf, why = input_layout(inputs.batch_first, model)
    if not generated_inputs and generated_weights and init.input_size is None:
        x = load_inputs(inputs.path, batch_first=read_bf)  # d comes from the file
    if generated_weights:
        n = init.hidden
        d = init.input_size if init.input_size is not None \
            else x.shape[2] if x is not None else n
    elif selection is not None:
        params = selection.params
        w_src = {**file_source(weights), "module": selection.model.module,
                 "kind": selection.model.kind, "framework": selection.model.framework,
                 "layer": selection.layer, "direction": selection.direction}
        n, d = selection.model.hidden, selection.model.input  # layer 0 reads the inputs
    else:
        params = load_params(weights, cell)
        w_src = file_source(weights)
        n = next(iter(params.values())).shape[0]
        d = next(params[p].shape[1] for p, k in cell.matrices.items() if k == "input")
    if generated_inputs:
        T, B = inputs.steps, inputs.batch
        if generated_weights:
            param_shapes(cell, n, d, sizes)  # validates n, d and the other sizes
        check_run(run_bytes(cell, n, d, T, B, dtype, blocks, norms, sizes=sizes),
                  backend=backend)
    if generated_weights:
        cfg: dict[str, Any] = init.config()
        params = init_params(cell, n, d, seed=init.seed, sizes=sizes, **cfg)
        other = {k: v for k, v in sizes_for(cell, n, d, sizes).items() if k not in ("n", "d")}
        w_src = {"source": "init", "n": n, "d": d, **other, "seed": init.seed, **cfg}
    if generated_inputs:
        x = make_inputs(T, B, d, dist=inputs.dist, scale=inputs.scale, seed=inputs.input_seed)
        x_src = {"source": "init", "T": T, "B": B, "d": d, "dist": inputs.dist,
                 "scale": inputs.scale, "seed": inputs.input_seed}
    else:
        x = load_inputs(inputs.path, d, batch_first=read_bf) if x is None else x
        x_src = {**file_source(inputs.path), "batch_first": read_bf,
                 "layout": "batch-major" if read_bf else "time-major",
                 "layout_from": why.split(";")[0]}
        if notes is not None:
            notes += axes_notes(inputs.path, x, inputs.batch_first, model)
    used_seed = init.seed if generated_weights else inputs.seed if generated_inputs else None
    if selection is not None and selection.layer not in (0, "all"):
        x = selection.layer_inputs(x)
        x_src["layer_inputs"] = f"h of layers 0..{int(selection.layer) - 1}, run on these inputs"
    if selection is not None and selection.reverse:
        x = np.ascontiguousarray(x[::-1])
        x_src["time_reversed"] = True
    return params, x, {"seed": used_seed, "weights_source": w_src, "inputs_source": x_src}

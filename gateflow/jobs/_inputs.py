"""What a run measures: its weights and inputs (from files or generated), where they came
from, and whether it fits in memory before anything is allocated.

:func:`run_bytes` is the one memory estimate of a generated run, used by ``decay``,
``report`` and ``sweep`` with :func:`gateflow._memory.check_fits` (:func:`check_run`).
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

import numpy as np

from gateflow._errors import GateflowError
from gateflow._memory import check_fits
from gateflow._validate import is_integer_text, shown, whole
from gateflow.cells._library import get_cell
from gateflow.cells._params import param_shapes, sizes_for
from gateflow.cells._stack import input_lag_blocks
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
    blocks = tuple(cell_.blocks) if blocks is None else tuple(blocks)
    outs = {b.split("/")[0] for b in blocks}
    big = max(v for k, v in sizes_for(cell_, n, d, sizes).items() if k != "d")
    workspace = singular or bool(set(norms) - set(NORMS[:1]))
    need = estimate_bytes(cell_, big, d, T, B, big * len(outs), len(blocks) * len(norms) + 4,
                          get_dtype(dtype).itemsize, workspace,
                          inputs=len({b.split("/")[1] for b in blocks
                                      if b in input_lag_blocks(cell_)}))
    shapes = param_shapes(cell_, n, d, sizes)
    return need + 8 * T * B * d + 8 * sum(math.prod(s) for s in shapes.values())


def check_run(need: int, what: str = "this run", fix: str | None = None,
              backend: str = "numpy") -> None:
    """Refuse ``need`` bytes (from :func:`run_bytes`) before any work, with how to shrink."""
    if fix is None:
        check_fits(need, what, backend=backend)
    else:
        check_fits(need, what, fix, backend=backend)


def parse_sizes(text) -> dict[str, int] | None:
    """``--sizes p=16`` (comma-separated ``name=value``) as a dict; None stays None."""
    if text is None or isinstance(text, dict):
        return text
    out: dict[str, int] = {}
    for item in str(text).split(","):
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name.isidentifier() or name in out:
            raise GateflowError(f"--sizes takes name=value pairs, e.g. p=16; got {item!r}")
        if not is_integer_text(value.strip()):
            raise GateflowError(f"--sizes {name} must be a positive integer (digits 0-9), got "
                                f"{shown(value.strip())}")
        number = int(value.strip())
        out[name] = whole(number, f"--sizes {name}")
    return out


def _count(value, what: str, why: str) -> int:
    try:
        return whole(value, what)
    except GateflowError as exc:
        raise GateflowError(f"{exc}{why}") from None


def input_layout(batch_first: bool | None, model=None) -> tuple[bool, str]:
    """How an inputs file's axes are read: ``(batch_first, why)``.

    ``batch_first`` True or False is the user's word (``--batch-first``, ``--time-major``);
    None follows the model's framework (:attr:`Recurrent.layout`: a Keras layer is
    batch-major, an ONNX node says it with ``layout``, a captured module with
    ``batch_first``), and time-major when the model does not say (a PyTorch state dict, a
    file of gateflow parameters, generated weights). ``why`` is that choice in words, with
    the flag that says the other order."""
    if batch_first is not None and not isinstance(batch_first, (bool, np.bool_)):
        raise GateflowError(f"batch_first must be True, False or None, got {batch_first!r}")
    if batch_first is not None:
        return bool(batch_first), "--batch-first" if batch_first else "--time-major"
    layout = getattr(model, "layout", "unknown")
    if layout in ("time-major", "batch-major"):
        name = f" {model.module!r}" if model.module else ""
        other = "--time-major" if layout == "batch-major" else "--batch-first"
        return layout == "batch-major", (f"{layout}, as the {model.framework} {model.kind}"
                                         f"{name} reads them; {other} if not")
    return False, "time-major: the file does not say; --batch-first if not"


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
            flip = "--time-major" if read_bf else "--batch-first"
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


def generate(cell, *, weights=None, inputs=None, hidden: int | None = None,
             input_size: int | None = None, steps: int | None = None, batch: int | None = None,
             init: str | None = None, sigma_w: float | None = None, sigma_v: float | None = None,
             sigma_b: float | None = None, gate_bias: float | None = None,
             chrono: float | None = None, seed: int | None = None,
             input_dist: str | None = None, input_scale: float | None = None,
             dtype: str = "float64", backend: str = "numpy", blocks=None,
             norms=NORMS[:2], selection=None,
             batch_first: bool | None = None, sizes=None,
             notes: list[str] | None = None) -> tuple[dict, np.ndarray, dict]:
    """Weights and inputs of a run: read from files, or generated from the options.

    Returns ``(params, x, provenance)`` with provenance keys ``seed``, ``weights_source`` and
    ``inputs_source`` (keyword arguments of :func:`~gateflow.jobs._decay.decay`). Options
    that only apply to generated data are refused next to a file (``seed`` when both are
    files). Defaults: n = 64, d = n, T = 100, B = 4, PyTorch init, seed 0; generated inputs
    use seed + 1. A generated run that cannot fit is refused before anything is made.

    ``selection`` is a module of a model file, already read
    (:func:`gateflow.models._model.select_model`): its params are used, and the inputs
    (from the file or generated) are the *model's*: for layer L > 0 they are run through
    layers 0..L−1 first (:meth:`~gateflow.models._model.Selection.layer_inputs`), so that
    the layer sees what it sees in the model; its reverse direction gets them
    time-reversed. Both are recorded in the provenance (``"layer_inputs"``,
    ``"time_reversed"``). ``batch_first``: True reads ``inputs`` as (B, T, d), False as
    (T, B, d), None as the model reads them (:func:`input_layout`); the provenance records
    the order used (``"layout"``, ``"layout_from"``), and ``notes`` (a list) gets the lines
    that say it (:func:`axes_notes`). ``sizes`` (a
    dict, or ``"p=16"``) gives generated weights a cell's other sizes (the projected
    LSTM's p; default n // 2); they are recorded with the weights' provenance.
    """
    from gateflow.models._params import init_params, load_inputs, load_params, make_inputs

    cell = get_cell(cell)
    init_opts = {"--hidden": hidden, "--input-size": input_size, "--init": init,
                 "--sigma-w": sigma_w, "--sigma-v": sigma_v, "--sigma-b": sigma_b,
                 "--gate-bias": gate_bias, "--chrono": chrono, "--sizes": sizes}
    sizes = parse_sizes(sizes)
    input_opts = {"--steps": steps, "--batch": batch, "--input-dist": input_dist,
                  "--input-scale": input_scale}
    for given, opts, what in ((weights, init_opts, "--weights"), (inputs, input_opts, "--inputs")):
        clash = [k for k, v in opts.items() if v is not None]
        if given is not None and clash:
            verb, it = ("applies", "it") if len(clash) == 1 else ("apply", "them")
            raise GateflowError(f"{', '.join(clash)} {verb} only to generated data; drop {it} "
                                f"or drop {what}")
    if weights is not None and inputs is not None and seed is not None:
        raise GateflowError("--seed applies only to generated data; drop it or drop --weights "
                            "or --inputs")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))
                             or seed < 0):
        raise GateflowError(f"seed must be an integer >= 0, got {seed!r}")
    used_seed = None
    generated_weights = weights is None
    generated_inputs = inputs is None
    seed0 = 0 if seed is None else int(seed)

    x = None
    if batch_first is not None and generated_inputs:
        flag = "--batch-first" if batch_first else "--time-major"
        raise GateflowError(f"{flag} applies to an --inputs file; drop it or give --inputs")
    read_bf, why = input_layout(batch_first, None if selection is None else selection.model)
    if not generated_inputs and generated_weights and input_size is None:
        x = load_inputs(inputs, batch_first=read_bf)  # d comes from the file
    if generated_weights:
        n = 64 if hidden is None else hidden
        d = input_size if input_size is not None else x.shape[2] if x is not None else n
    elif selection is not None:
        params = selection.params
        model = selection.model
        w_src = {**file_source(weights), "module": model.module, "kind": model.kind,
                 "framework": model.framework, "layer": selection.layer,
                 "direction": selection.direction}
        n, d = model.hidden, model.input  # inputs are the model's: layer 0 reads them
    else:
        params = load_params(weights, cell)
        w_src = file_source(weights)
        n = next(iter(params.values())).shape[0]
        d = next(params[p].shape[1] for p, k in cell.matrices.items() if k == "input")
    if generated_inputs:
        T = _count(100 if steps is None else steps, "--steps (T)",
                   "; inputs need at least one time step")
        B = _count(4 if batch is None else batch, "--batch (B)",
                   "; inputs need at least one sequence")
        if generated_weights:
            param_shapes(cell, n, d, sizes)  # validates n, d and the other sizes
        check_run(run_bytes(cell, n, d, T, B, dtype, blocks, norms, sizes=sizes),
                  backend=backend)
    if generated_weights:
        scheme = "pytorch" if init is None else init
        cfg: dict[str, Any] = {"scheme": scheme, "sigma_w": 1.0 if sigma_w is None else sigma_w,
               "sigma_v": 1.0 if sigma_v is None else sigma_v,
               "sigma_b": 0.0 if sigma_b is None else sigma_b,
               "gate_bias": gate_bias, "chrono": chrono}
        params = init_params(cell, n, d, seed=seed0, sizes=sizes, **cfg)
        other = {k: v for k, v in sizes_for(cell, n, d, sizes).items() if k not in ("n", "d")}
        w_src = {"source": "init", "n": n, "d": d, **other, "seed": seed0, **cfg}
        used_seed = seed0
    if generated_inputs:
        dist = "normal" if input_dist is None else input_dist
        scale = 1.0 if input_scale is None else input_scale
        x = make_inputs(T, B, d, dist=dist, scale=scale, seed=seed0 + 1)
        x_src = {"source": "init", "T": T, "B": B, "d": d, "dist": dist, "scale": scale,
                 "seed": seed0 + 1}
        used_seed = seed0
    else:
        x = load_inputs(inputs, d, batch_first=read_bf) if x is None else x
        x_src = {**file_source(inputs), "batch_first": read_bf,
                 "layout": "batch-major" if read_bf else "time-major",
                 "layout_from": why.split(";")[0]}
        if notes is not None:
            notes += axes_notes(inputs, x, batch_first,
                                None if selection is None else selection.model)
    if selection is not None and selection.layer not in (0, "all"):
        x = selection.layer_inputs(x)
        x_src["layer_inputs"] = f"h of layers 0..{int(selection.layer) - 1}, run on these inputs"
    if selection is not None and selection.reverse:
        x = np.ascontiguousarray(x[::-1])
        x_src["time_reversed"] = True
    return params, x, {"seed": used_seed, "weights_source": w_src, "inputs_source": x_src}

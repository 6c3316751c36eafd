"""All-lag Jacobian chains: ∂s_T/∂s_{T−k} for every k = 1..T in one backward sweep.

Forward: run the cell over x (T, B, d), time-major as in PyTorch, from s_0 (zeros by
default), keeping only the states s_0..s_T, O(T·B·n). Backward: hold the rows that are asked
for, G = ∂(rows of s_T)/∂s_t, shape (B, R, n) per state block, and multiply by one step's
Jacobian from the right, G ← G J_t, walking the cell's wiring backwards:

    A[source] += A[sink] ⊙ coef(sink, source)      elementwise, broadcast over rows
    A[v]      += [A[W_1 v] … A[W_G v]] · [W_1; …; W_G]   one GEMM per shared vector v

Each step's Jacobian coefficients (a few (B, n) arrays) are kept from the forward pass
while they fit in 128 MiB; beyond that they are recomputed from s_{t−1} (a B × n × Gn
GEMM, n times cheaper than the backward step). Either way memory stays O(T·B·n), like the
trajectory. No per-step Jacobian is ever formed. Each row carries its own log-scale: when
its norm leaves a dtype-dependent safe range it is renormalised and the factor moves to
the log (:class:`~gateflow.numeric._renorm.RowScale`, a pluggable renormaliser), so
T = 10 000 neither underflows nor overflows in the vanishing or the exploding regime.

Input sensitivity ∂X_T/∂x_{T−k} (blocks ``"X/x"``, k = 0..T−1) comes from the same sweep:
before step k multiplies by J_t (t = T−k+1), the rows G = ∂X_T/∂s_t are pulled back once
more through the input Jacobian ∂s_t/∂x_t (:func:`~gateflow.symbolic._derive.derive_input`,
its own compiled plan), one GEMM per group of products on x:

    G_x = G · ∂s_t/∂x_t = ∂X_T/∂x_t        (lag T − t = k − 1)

In a stack, the output each layer emits is pulled back the same way (blocks ``"X/y_lj"``,
what a hook on layer j's output sees: the carried rows plus layer j + 1's same-step read;
:mod:`gateflow.numeric._pullback`, :mod:`gateflow.cells._stack`).

A cell whose state Jacobian is diagonal per unit (the derivation says so:
:func:`~gateflow.symbolic._derive.diagonal_per_unit`, carried as ``Compiled.diagonal``;
IndRNN, RG-LRU, LRU, the selective scan, minGRU, SRU, any cell declared anywhere that
derives that way) is swept elementwise instead, carrying only the nonzero entries of G:
O(T·B·n·S²) for S state blocks instead of O(T·B·N³) (:mod:`gateflow.numeric._diagonal`,
the same numbers to rounding; ``ChainResult.meta["path"]`` says which ran).

The sweep itself measures nothing: after each step it hands G and its log scales to
observers (:mod:`gateflow.numeric._measure`): the registered norms
(:mod:`gateflow.numeric._observers`: Frobenius, spectral, …), the singular values at
chosen lags, the direct path and the probe.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext

import numpy as np

from gateflow._errors import GateflowError
from gateflow._interrupt import check as check_interrupt
from gateflow._memory import check_fits
from gateflow._validate import real_array, shown, whole
from gateflow.cells._block import Block
from gateflow.cells._record import Cell
from gateflow.cells._stack import (
    choose_blocks,
    depends,
    emitted,
    input_lag_blocks,
    needed,
    restrict,
)
from gateflow.numeric import _diagonal
from gateflow.numeric._backward import Sweep, check_rows
from gateflow.numeric._compile import Bound, Compiled, check_products, check_trajectory
from gateflow.numeric._measure import BlockNorm, Context, Measure, Observer, Renormaliser, Step
from gateflow.numeric._norms import DirectPath, Probe, SingularValues
from gateflow.numeric._observers import NORMS, choose_norms, resolve
from gateflow.numeric._prepare import prepare
from gateflow.numeric._pullback import Plan, Pulling
from gateflow.numeric._pullback import plan as plan_pullbacks
from gateflow.numeric._renorm import RowScale
from gateflow.numeric._result import ChainResult

__all__ = ["DEFAULT_NORMS", "NORMS", "ChainResult", "all_lags", "check_products",
           "estimate_bytes", "nonzero_blocks", "run", "states"]

#: The norms ``all_lags`` measures unless told otherwise.
DEFAULT_NORMS = ("frobenius", "spectral")

_KEEP_BYTES = 128 * 2**20  # keep forward coefficients for the backward sweep up to this size


def estimate_bytes(cell: Cell, n: int, d: int, T: int, B: int, rows: int, n_outputs: int,
                   itemsize: int, spectral: bool, inputs: bool | int = False) -> int:
    """Peak memory of :func:`all_lags`, from the shapes alone (checked before allocating);
    ``inputs``: input-sensitivity blocks asked for (a second pull-back onto x each step), or
    the number of pull-backs (onto x and onto each layer output ``y_lj`` of a stack)."""
    S = len(cell.state)
    G = max(1, len(cell.matrices))
    trajectory = (T + 1) * B * S * n + T * B * d
    working = B * rows * S * n * 4 + B * rows * G * n + B * n * (3 * len(cell.equations) + G) * 2
    if inputs:  # True, or how many pull-backs (onto x and each layer output y_lj)
        working += int(inputs) * B * rows * (S * n * 2 + G * n + 2 * d)
    gram = 3 * B * n * n if spectral else 0
    return itemsize * (trajectory + working + gram) + 8 * T * B * n_outputs


def _check_probe(cell: Cell, probe, dims: Mapping[str, int], B: int):
    """A finite probe vector over the full state, (S,) or (B, S); None stays None."""
    if probe is None:
        return None
    probe = real_array(probe, "probe").astype(np.float64)
    S = sum(dims.values())
    if probe.shape not in ((S,), (B, S)) or not np.all(np.isfinite(probe)):
        raise GateflowError(f"probe must be finite, of shape ({S},) or ({B}, {S}): one "
                            f"value per state unit ({', '.join(cell.state)} in that "
                            f"order); got shape {probe.shape}")
    return probe


def _check_lags(lags, T: int) -> tuple[int, ...]:
    """Lags at which to keep every singular value: whole numbers in 1..T."""
    if isinstance(lags, (str, bytes, Mapping)) or not hasattr(lags, "__iter__") \
            or getattr(lags, "ndim", 1) != 1:
        raise GateflowError(f"singular_lags must be a tuple of lags in 1..{T}, got {shown(lags)}")
    return tuple(dict.fromkeys(whole(k, "singular-value lag", 1, T) for k in lags))


class _Stopped(Exception):
    """Raised in a worker thread once the run was abandoned (see :func:`all_lags`)."""


def _check(stop) -> None:
    """Once per step: a recorded Ctrl-C/SIGTERM is raised here; an abandoned run stops."""
    check_interrupt()
    if stop is not None and stop.is_set():
        raise _Stopped


def run(bound: Bound, x, s0=None, coefs: list | None = None, stop=None,
        inputs: Compiled | None = None) -> dict:
    """Forward pass: the states s_0..s_T, per block, (T+1, B, n), on the backend. With a
    list ``coefs``, also append each step's Jacobian coefficients to it (index t−1): with
    ``inputs`` (the input Jacobian's plan), the pair (state coefficients, input
    coefficients). With a ``threading.Event`` ``stop``, give up at the next step once it
    is set."""
    xp, dt = bound.xp, bound.c.dtype
    T, B, _ = x.shape
    states = {b: xp.empty((T + 1, B, bound.dim[b]), dtype=dt) for b in bound.c.cell.state}
    for b in states:
        states[b][0] = 0 if s0 is None or b not in s0 else xp.asarray(s0[b], dtype=dt)
    with np.errstate(over="ignore", invalid="ignore"):
        for t in range(1, T + 1):
            _check(stop)
            vals = bound.step(x[t - 1], {b: states[b][t - 1] for b in states})
            check_products(bound, vals, t)
            for b in states:
                states[b][t] = vals[b]
            if coefs is not None:
                coefs.append(bound.coefficients(vals) if inputs is None else
                             (bound.coefficients(vals), bound.coefficients(vals, inputs)))
    check_trajectory(xp, states)
    return states


def states(cell: str | Cell, params: dict, x, s0: dict | None = None) -> dict[str, np.ndarray]:
    """The forward pass alone, on the CPU in float64: every state block s_0..s_T, (T+1, B,
    n), from inputs x (T, B, d) and initial states ``s0`` (zeros by default). What a layer
    of a stack emits, for the layer above it."""
    prep = prepare(cell, params, x, s0)  # NumPy, float64
    check_fits(8 * (prep.T + 1) * prep.B * sum(prep.dims.values()) + 8 * prep.x_host.size,
               backend="numpy")
    return run(prep.bound, prep.x, prep.s0)


@contextmanager
def _blas_threads(threads: int | None):
    if threads is None:
        yield
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=threads, user_api="blas"):
        yield


def all_lags(
    cell: str | Cell,
    params: dict,
    x,
    *,
    blocks: Iterable[str] | str | None = None,
    norms: Iterable[str | Observer] | str = DEFAULT_NORMS,
    singular_lags: tuple[int, ...] = (),
    probe=None,
    s0: dict | None = None,
    backend: str = "numpy",
    dtype="float64",
    progress=None,
    keep_states: bool = False,
    threads: int | None = None,
) -> ChainResult:
    """Exact ∂s_T/∂s_{T−k} for every lag k = 1..T, for a batch of sequences.

    Args:
        cell: a cell or its name.
        params: the cell's parameters (gateflow names), e.g. from ``init_params``/``load_params``.
        x: inputs (T, B, d), time-major.
        blocks: which blocks X/Y (∂X_T/∂Y_{T−k}) to measure, by name (``["h/h"]``, or
            ``"h/h,c/x"``) or as the cell's :class:`.Block` s; default every block
            that can be nonzero (``nonzero_blocks``: all of a single cell's). Only the
            rows of the output blocks asked for are carried, each through the part of the
            recurrence it depends on (a stack's layer l through layers 0..l only). Input
            blocks ``"X/x"`` (``cell.input_blocks``: ∂X_T/∂x_{T−k}, k = 0..T−1) are measured
            in the same sweep when asked for, into :attr:`ChainResult.inputs`; so are a
            stack's output-gradient blocks ``"X/y_lj"`` (∂X_T/∂y⁽ʲ⁾_{T−k}, the output layer
            j emits at T−k, read by layer j + 1 at that step and carried: what a hook on it
            sees; ``"X/h_lj"`` is the carried part alone. See
            :func:`gateflow.cells._stack.output_blocks`).
        norms: registered norms, by name (or their ``Observer`` records; ``NORMS``, see
            ``gateflow.numeric._observers``): ``"frobenius"``, ``"spectral"`` (largest
            singular value), ``"stable_rank"``, …; each lands under its ``Observer.key``.
        singular_lags: lags at which to keep every singular value of each state block.
        probe: a vector over the full state (concatenated in ``cell.state`` order), or
            (B, N): also report ‖∂⟨v, s_T⟩/∂s_{T−k}‖₂, the gradient a loss would see.
        s0: initial state per block (zeros by default).
        backend, dtype: ``"numpy"``/``"cupy"``, ``"float64"``/``"float32"``.
        progress: called with the lag k after each backward step.
        threads: CPU threads (default: every core this process may use). The batch is
            split over min(threads, B) worker threads, each with one BLAS thread; cores
            left over (B < threads) go to BLAS. With a single worker the forward pass's tiny
            GEMMs run single-threaded (threading them costs more than it saves, and under
            contention a threaded tiny GEMM can stall for milliseconds; see
            ``benchmarks/``). Repeat runs with the same value are bit-identical; different
            values agree to rounding (≈1e−14 in log10: BLAS rounds a GEMM's rows
            differently for different row counts).
    """
    prep = prepare(cell, params, x, s0, backend, dtype)
    cell, sizes, dims, be, dt = prep.cell, prep.sizes, prep.dims, prep.backend, prep.dtype
    x_host, s0, T, B = prep.x_host, prep.s0, prep.T, prep.B
    n, d = max(dims.values()), sizes["d"]  # n: the largest block (for the memory estimate)
    pulled = input_lag_blocks(cell)  # "X/x" and, in a stack, "X/y_lj": pulled back each step
    blocks = nonzero_blocks(cell) if blocks is None else choose_blocks(
        cell, blocks, allow_empty=True)
    if not blocks and probe is None:
        raise GateflowError(f"nothing to compute: choose at least one block of "
                            f"{', '.join((*cell.blocks, *pulled))}, or give a probe")
    in_blocks = tuple(b for b in blocks if b in pulled)
    state_blocks = tuple(b for b in blocks if b not in pulled)
    norms = tuple(o.name for o in choose_norms(norms))  # the registry, as it is now
    singular_lags = _check_lags(singular_lags, T)
    if singular_lags and not state_blocks:
        raise GateflowError("singular values are measured for state blocks X/Y; the blocks "
                            f"asked for ({', '.join(blocks)}) are input blocks: add a state "
                            "block or drop singular_lags")
    if threads is not None:
        threads = whole(threads, "threads")
    if progress is not None and not callable(progress):
        raise GateflowError(f"progress must be a function of the lag k, or None; "
                            f"got {shown(progress)}")
    if not isinstance(keep_states, (bool, np.bool_)):
        raise GateflowError(f"keep_states must be True or False, got {shown(keep_states)}")
    probe = _check_probe(cell, probe, dims, B)
    out_blocks = [s for s in cell.state if any(b.out == s for b in blocks)]
    rows = sum(dims[s] for s in out_blocks) + (0 if probe is None else 1)
    observers = resolve(norms)  # what was asked for, and what it builds on
    direct_norms = resolve((*DEFAULT_NORMS, *norms))  # the direct path: always the defaults

    need = estimate_bytes(cell, n, d, T, B, rows, len(blocks) * len(norms) + 4, dt.itemsize,
                          any(o.name == "spectral" for o in observers) or bool(singular_lags),
                          inputs=len({b.wrt for b in in_blocks}))
    have = be.available_memory()
    check_fits(need, backend=be.name)
    if not np.all(np.isfinite(x_host)):
        raise GateflowError("inputs contain NaN or Inf; clean them before analysis")
    big = float(np.finfo(dt).max)
    for what, a in (("inputs", x_host), *((f"param {k!r}", v) for k, v in params.items())):
        if np.size(a) and float(np.max(np.abs(a))) > big:
            raise GateflowError(f"{what} exceed the {dt} range (|value| > {big:.3g}); use "
                                "float64 or rescale them")

    groups = _row_groups(cell, blocks) if probe is None else {cell.state: list(blocks)}
    if tuple(groups) != (cell.state,):
        return _by_groups(cell, groups, params, x_host, norms=norms,
                          singular_lags=singular_lags, s0=s0, backend=be.name, dtype=dt,
                          progress=progress, keep_states=keep_states, threads=threads,
                          need=need)

    comp = prep.compiled
    pull = plan_pullbacks(cell, in_blocks, params, be.name, dt.name)
    # A cell whose state Jacobian is diagonal per unit (the derivation's verdict, carried by
    # its plan) is swept elementwise when what is asked for allows it
    # (gateflow.numeric._diagonal: it needs less memory than the estimate checked above).
    diagonal = _diagonal.supported(comp, pull, observers)
    comp_in = None if pull is None else pull.inputs
    bound = prep.bound
    xp = be.xp
    xd = prep.x
    s0 = prep.s0_device
    if probe is not None:
        probe = xp.broadcast_to(be.asarray(probe, dtype=dt), (B, sum(dims.values())))

    def measures() -> dict[str, Measure]:
        """Fresh observers for one batch slice: the norms (and what they build on), the
        direct path, and the singular values and probe if asked for."""
        out: dict[str, Measure] = {}
        for o in observers:
            out[o.name] = o.measure()
        diagonal = [(o.name, o.key, o.measure()) for o in direct_norms]
        out[_DIRECT] = DirectPath(diagonal)
        if singular_lags:
            out[_SVALS] = SingularValues(singular_lags)
        if probe is not None:
            out[_PROBE] = Probe()
        return out

    # Sequences are independent: split the batch over worker threads, each with one BLAS
    # thread (NumPy releases the GIL in matmul and ufuncs), so the elementwise work runs in
    # parallel too; cores left over (B < threads) go to BLAS. Every row carries its own
    # scale and every spectral iteration stops per sequence, so a sequence's numbers do not
    # depend on the others' (up to BLAS rounding, which varies with a GEMM's row count).
    cores = threads or _cpu_count()
    workers = max(1, min(cores, B)) if be.threaded else 1
    blas = max(1, cores // workers) if be.threaded else None
    kept = (len(comp.layout) + (len(comp_in.layout) if comp_in else 0)) * T * B * n * dt.itemsize
    keep = kept <= min(_KEEP_BYTES, 0.1 * have)
    stop = threading.Event()  # set to abandon the run: worker threads check it every step
    cuts = [B * i // workers for i in range(workers + 1)]
    parts = [slice(a, b) for a, b in zip(cuts, cuts[1:])]

    def job(i: int, part: slice) -> dict:
        inputs = None if pull is None else (pull, {o.name: o.measure() for o in observers})
        if diagonal:
            return _diagonal_chunk(
                comp, bound, xd[:, part], None if s0 is None else
                {b: v[part] for b, v in s0.items()}, None if probe is None else probe[part],
                state_blocks, observers, direct_norms, singular_lags, out_blocks,
                progress if i == 0 else None, stop, inputs, keep_states)
        return _sweep_chunk(
            comp, bound, xd[:, part], None if s0 is None else {b: v[part] for b, v in s0.items()},
            None if probe is None else probe[part], state_blocks, measures(), RowScale(),
            out_blocks, keep, progress if i == 0 else None, workers == 1, stop, inputs)

    with _blas_threads(blas):  # process-wide (np.errstate, by contrast, is per thread)
        if workers == 1:
            chunks = [job(0, parts[0])]
        else:
            # On Ctrl-C (or any error) in this thread, the workers stop at their next step
            # instead of finishing the run while the pool waits for them.
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gateflow") as pool:
                try:
                    futures = [pool.submit(job, i, p) for i, p in enumerate(parts)]
                    chunks = [f.result() for f in futures]
                except BaseException:
                    stop.set()
                    raise

    res = _concat([c["measures"] for c in chunks], chunks[0]["axes"])
    res_in = _concat([c["inputs"] for c in chunks], 1) if in_blocks else {}
    return ChainResult(
        cell=cell,
        lags=np.arange(1, T + 1),
        blocks={b: {o.key: res[o.name][b] for o in observers if o.name in norms}
                for b in state_blocks},
        inputs={b: {o.key: res_in[o.name][b] for o in observers if o.name in norms}
                for b in in_blocks},
        direct=res[_DIRECT],
        singular_values=res.get(_SVALS, {}),
        probe=res.get(_PROBE),
        states=_concat([c["states"] for c in chunks], 1) if keep_states else None,
        meta={"n": sizes["n"], "d": d, "T": T, "B": B, **(
                  {"sizes": {s: sizes[s] for s in cell.size_names}}
                  if len(cell.size_names) > 1 else {}),
              "dtype": dt.name, "backend": be.name,
              "estimated_bytes": need, "workers": workers, "blas_threads": blas,
              "path": "diagonal" if diagonal else "dense"},
        norms=norms,
    )


def nonzero_blocks(cell: Cell) -> tuple[Block, ...]:
    """The blocks X/Y that can be nonzero: Y reaches X through the recurrence (see
    :func:`gateflow.cells._stack.depends`). Every block of a single cell; in a stack, none
    from a higher layer to a lower one (those are exactly zero at every lag)."""
    dep = depends(cell)
    return tuple(b for b in cell.blocks if b.wrt in dep[b.out])


def _row_groups(cell: Cell, blocks: tuple[Block, ...]) -> dict[tuple[str, ...], list[Block]]:
    """The blocks asked for, grouped by the part of the recurrence they need (their output
    block, their input block and everything those read): each group's rows are carried
    through that part only. A single cell needs all of itself: one group."""
    groups: dict[tuple[str, ...], list[Block]] = {}
    carried = emitted(cell)  # y_lj -> h_lj: "X/y_lj" needs X's part and layer j's
    for b in blocks:  # an input block "X/x" needs X's part (x feeds the bottom layer)
        ends = [carried.get(s, s) for s in (b.out, b.wrt) if carried.get(s, s) in cell.state]
        groups.setdefault(needed(cell, ends), []).append(b)
    return groups


def _by_groups(cell: Cell, groups, params, x, *, progress, keep_states, s0, need,
               singular_lags, **options) -> ChainResult:
    """:func:`all_lags` once per row group, each on its restricted cell, merged into one
    result. Used for block-triangular recurrences (stacks): layer l's rows never enter the
    layers above l, so an L-layer sweep costs L(L+1)/2 layer sweeps, not L² (and a
    2-layer stack at most 3 single-layer sweeps)."""
    T = x.shape[0]
    pulled = input_lag_blocks(cell)
    parts = []
    for i, (state, blocks) in enumerate(groups.items()):
        sub = restrict(cell, state)
        tick = None if progress is None else (
            lambda k, i=i: progress(round((i * T + k) / len(groups))))
        # singular values are of state blocks: a group of input blocks alone has none
        sv = singular_lags if any(b not in pulled for b in blocks) else ()
        parts.append(all_lags(sub, {p: params[p] for p in sub.params}, x, blocks=tuple(blocks),
                              s0=None if s0 is None else
                              {b: v for b, v in s0.items() if b in sub.state},
                              progress=tick, keep_states=keep_states, singular_lags=sv,
                              **options))
    merged: dict = {"blocks": {}, "direct": {}, "singular_values": {}, "states": {}}
    for part in parts:
        merged["blocks"].update(part.blocks)
        merged["blocks"].update(part.inputs)
        for b, norms in part.direct.items():
            merged["direct"].setdefault(b, norms)
        for k, svs in part.singular_values.items():
            merged["singular_values"].setdefault(k, {}).update(svs)
        merged["states"].update(part.states or {})
    order = [b for bs in groups.values() for b in bs]
    return ChainResult(
        cell=cell, lags=parts[0].lags,
        blocks={b: merged["blocks"][b] for b in order if b not in input_lag_blocks(cell)},
        inputs={b: merged["blocks"][b] for b in order if b in input_lag_blocks(cell)},
        direct={s: merged["direct"][s] for s in cell.state if s in merged["direct"]},
        singular_values=merged["singular_values"], probe=None,
        states={s: merged["states"][s] for s in cell.state if s in merged["states"]}
        if keep_states else None,
        meta={**parts[-1].meta, "estimated_bytes": need,
              "row_groups": [list(state) for state in groups]},
        norms=parts[0].norms,
    )


# Names of the measures that are not registered norms (a norm's name cannot clash: "/").
_DIRECT, _SVALS, _PROBE = "/direct", "/singular_values", "/probe"


def _concat(parts: list, axis):
    """The batch slices' results (nested dicts of host arrays) joined along the batch axis:
    ``axis`` is an int, or a dict giving it per top-level key."""
    if len(parts) == 1:
        return parts[0]
    if isinstance(parts[0], dict):
        return {k: _concat([p[k] for p in parts], axis[k] if isinstance(axis, dict) else axis)
                for k in parts[0]}
    return np.concatenate(parts, axis=axis)


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _diagonal_chunk(comp: Compiled, bound: Bound, xd, s0, probe, blocks, observers,
                    direct_norms, singular_lags, out_blocks, progress, stop,
                    inputs: tuple[Plan, dict] | None, keep_states: bool) -> dict:
    """:func:`gateflow.numeric._diagonal.sweep` for one slice of the batch, its results
    under the names :func:`_sweep_chunk` gives them."""
    out = _diagonal.sweep(comp, bound, xd, s0, probe, blocks, observers, direct_norms,
                          singular_lags, out_blocks, progress, lambda: _check(stop), inputs,
                          keep_states)
    measures = {**out["norms"], _DIRECT: out["direct"]}
    axes = {**dict.fromkeys(out["norms"], 1), _DIRECT: 1}
    if singular_lags:
        measures[_SVALS], axes[_SVALS] = out["singular_values"], 0
    if probe is not None:
        measures[_PROBE], axes[_PROBE] = out["probe"], 1
    return {"measures": measures, "axes": axes, "inputs": out["inputs"],
            "states": out["states"]}


def _sweep_chunk(comp: Compiled, bound: Bound, xd, s0, probe, blocks, measures: dict,
                 renorm: Renormaliser, out_blocks, keep: bool, progress, single: bool,
                 stop=None, inputs: tuple[Plan, dict] | None = None) -> dict:
    """Forward pass and backward sweep for one slice of the batch; host arrays out."""
    # log 0 = −inf is an exact zero; overflow is checked explicitly (check_products,
    # check_rows), so NumPy's own warnings would only repeat it, once per array
    with np.errstate(divide="ignore", under="ignore", over="ignore", invalid="ignore"):
        return _sweep_chunk_body(comp, bound, xd, s0, probe, blocks, measures, renorm,
                                 out_blocks, keep, progress, single, stop, inputs)


def _sweep_chunk_body(comp: Compiled, bound: Bound, xd, s0, probe, blocks, measures: dict,
                      renorm: Renormaliser, out_blocks, keep: bool, progress, single: bool,
                      stop=None, inputs: tuple[Plan, dict] | None = None) -> dict:
    """Run the slice forward, then backwards k = 1..T, handing every step to ``measures``
    (name -> :class:`~gateflow.numeric._measure.Measure`, observed in that order) and
    renormalising with ``renorm`` after they have looked. With ``inputs`` (a pull-back plan
    and fresh norms for it), each step first pulls the rows back onto x_t and the layers'
    outputs (:mod:`gateflow.numeric._pullback`) and hands that to those norms. Returns
    ``{"measures": name -> finish(), "axes": name -> batch axis, "inputs": name ->
    finish(), "states": block -> (T+1, B, n)}``."""
    xp, dt, n, dims = bound.xp, comp.dtype, bound.n, bound.dim
    cell = comp.cell
    T, B, _ = xd.shape
    rows = sum(dims[s] for s in out_blocks) + (0 if probe is None else 1)
    stored: list | None = [] if keep else None
    # The forward's GEMMs are tiny: with one worker, run them single-threaded. (BLAS limits
    # are process-wide, so with several workers they all share the outer setting, 1 thread
    # each whenever B ≥ threads.)
    with _blas_threads(1) if single else nullcontext():
        states = run(bound, xd, s0, stored, stop, None if inputs is None else inputs[0].inputs)

    # Seed: the identity on the rows of each output block, plus the probe row.
    A = {s: xp.zeros((B, rows, dims[s]), dtype=dt) for s in cell.state}
    row_of, first = {}, 0
    for s in out_blocks:
        row_of[s] = slice(first, first + dims[s])
        A[s][:, row_of[s], :] = xp.eye(dims[s], dtype=dt)
        first += dims[s]
    if probe is not None:
        first = 0
        for s in cell.state:
            A[s][:, -1, :] = probe[:, first:first + dims[s]]
            first += dims[s]

    ctx = Context(comp.be, dt, T, B, n, tuple(cell.state), tuple(blocks), row_of,
                  None if probe is None else rows - 1, comp.direct, dims)
    renorm.init(ctx, rows)
    needs_rows = [name for name, m in measures.items() if isinstance(m, BlockNorm)
                  or name in (_SVALS, _PROBE)]
    if not renorm.row_scales and needs_rows:
        raise GateflowError(f"{', '.join(needs_rows)} need a renormaliser that keeps rows "
                            "apart (per-row scales)")
    for m in measures.values():
        m.init(ctx)
    sweep = Sweep(comp, bound, B, rows)
    # The rows pulled back onto x_t and the layers' outputs y_lj,t (Pulling reads them at
    # G[source][:, rows of X, :] for a block "X/source"), input lag k − 1.
    pulling = None if inputs is None else Pulling(*inputs, ctx, bound, rows, xd.shape[2])
    in_plan = None if inputs is None else inputs[0].inputs

    for k in range(1, T + 1):
        _check(stop)
        t = T - k + 1  # multiply by J_t = ∂s_t/∂s_{t−1}
        if stored is not None:
            coefs, stored[t - 1] = stored[t - 1], None  # free as we go
        else:
            vals = bound.step(xd[t - 1], {s: states[s][t - 1] for s in cell.state})
            coefs = bound.coefficients(vals)
            if in_plan is not None:
                coefs = (coefs, bound.coefficients(vals, in_plan))
        in_coefs = None
        if in_plan is not None:
            coefs, in_coefs = coefs
        if pulling is not None:
            pulling.observe(k, t, A, in_coefs, states, renorm.logscale)
        adj = sweep.backward(A, coefs)
        A = {s: adj[f"{s}_prev"] if f"{s}_prev" in adj else xp.zeros((B, rows, dims[s]),
                                                                      dtype=dt)
             for s in cell.state}
        step = Step(ctx, k, A, renorm.logscale, coefs)
        check_rows(step, "the state")
        for m in measures.values():
            m.observe(step)
        renorm.renormalise(step)  # in place: step.G is A
        if progress is not None:
            progress(k)

    return {"measures": {name: m.finish() for name, m in measures.items()},
            "axes": {name: m.batch_axis for name, m in measures.items()},
            "inputs": {} if pulling is None else pulling.finish(),
            "states": {s: comp.be.to_host(v) for s, v in states.items()}}

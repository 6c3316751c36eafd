"""Compiled evaluators: the runtime of a cell's plan (records, the weights bound, one step).

:func:`compile_cell` gives, once per (cell, backend, dtype), a :class:`Compiled`: the
forward plan (:class:`Group` of products W v sharing their vector v, one GEMM each;
:class:`Node` functions), the coefficient function, and the reverse plan as typed steps
(:class:`Scatter`, :class:`GroupStep`); :class:`Bound` holds it with the weights on the
device and runs one step. A plan is generated as data (:mod:`gateflow.numeric._codegen`),
kept in the on-disk cache (:mod:`gateflow.numeric._cache`), and its functions are built
from the data, checked, in memory (:mod:`gateflow.numeric._plan`): fresh or cached, the
same path.

Backends are found lazily: CuPy is imported only when asked for (einops-style).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

from gateflow._errors import GateflowError
from gateflow.cells._library import get_cell
from gateflow.cells._record import INPUT, Cell
from gateflow.numeric import _cache
from gateflow.numeric._backend import (  # noqa: F401 - get_xp, DTYPES: for the layers above
    BACKENDS,
    DTYPES,
    Backend,
    get_backend,
    get_dtype,
    get_xp,
)
from gateflow.numeric._cache import cache_dir  # noqa: F401 - where plans are kept
from gateflow.numeric._plan import build

__all__ = ["Bound", "Compiled", "Group", "GroupStep", "Node", "Scatter", "check_products",
           "check_trajectory", "compile_cell", "diverged", "first_nonfinite"]


@dataclass(frozen=True)
class Group:
    """Products that share their argument: ``W_1 v, …, W_G v`` as one GEMM."""

    arg: str
    atoms: tuple[str, ...]  # matvec symbol names, in stacking order
    weights: tuple[str, ...]
    reverse: bool  # does the state's Jacobian flow through it?


@dataclass(frozen=True)
class Node:
    """One generated function: ``name = fn(*args)`` in the forward pass."""

    name: str
    args: tuple[str, ...]
    fn: Callable[..., Any]


# -- the backward plan: typed steps (stored as plain JSON lists, converted at load) --------

#: Coefficient pairs of one sink in a group: (j, k) applies diag(coef k) W_j, W_j the j-th
#: weight of the group.
Pairs = tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class Scatter:
    """Elementwise edges out of one sink: A[source] += A[sink] ⊙ coef k, for each
    (source, k) in ``sources``. JSON: ``["scatter", sink, [[source, k], ...]]``."""

    sink: str
    sources: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class GroupStep:
    """The products of one group, backwards: A[group.arg] += Σ_sink A[sink] K_sink with
    K_sink = Σ_(j, k) diag(coef k) W_j over the sink's pairs. ``terms`` holds
    (sink, pairs) per sink that feeds the group. JSON: ``["group", atoms, [[sink,
    [[j, k], ...]], ...]]`` (the group named by its atoms)."""

    group: Group
    terms: tuple[tuple[str, Pairs], ...]


PlanStep = Scatter | GroupStep


def _plan_step(op: list, groups: dict[tuple[str, ...], Group]) -> PlanStep:
    """One stored (JSON) reverse step as its typed record; ``op`` is already checked
    (:func:`gateflow.numeric._plan.check_plan`)."""
    if op[0] == "scatter":
        return Scatter(op[1], tuple((src, k) for src, k in op[2]))
    terms = tuple((v, tuple((j, k) for j, k in pairs)) for v, pairs in op[2])
    return GroupStep(groups[tuple(op[1])], terms)


@dataclass(frozen=True)
class Compiled:
    """Evaluators of one cell for one backend and dtype (independent of the weights)."""

    cell: Cell
    backend: str
    dtype: np.dtype
    forward: tuple[Group | Node, ...]
    coef_args: tuple[str, ...]
    coef_fn: Callable[..., Any]
    layout: tuple[tuple[str, str], ...]  # (sink, source) of each coefficient
    #: Backward plan, in order: :class:`Scatter` and :class:`GroupStep` records.
    reverse: tuple[PlanStep, ...]
    direct: dict[str, int]  # state block -> index of its direct-path coefficient
    #: state block -> {"text": …, "latex": …}: its direct-path coefficient as the cell's
    #: notation prints it ("f_t", "1 − f_t"), so labels need no SymPy on a cache hit.
    direct_labels: dict[str, dict[str, str]]
    #: What the reverse plan differentiates against: the previous state (``h_prev``, …:
    #: the plan applies G ← G ∂s_t/∂s_{t−1}) or the input ``("x",)`` (G_x = G ∂s_t/∂x_t).
    wrt: tuple[str, ...] = ()
    #: The state Jacobian is diagonal per unit (:func:`gateflow.symbolic._derive.
    #: diagonal_per_unit`, decided when the plan was generated and checked against its
    #: wiring when it is loaded): the sweep and the Lyapunov spectrum then run elementwise
    #: (:mod:`gateflow.numeric._diagonal`). Always False for the input Jacobian's plan.
    diagonal: bool = False

    @property
    def be(self) -> Backend:
        """The backend record (array module, host transfer, threading)."""
        return get_backend(self.backend)

    @property
    def xp(self):
        return self.be.xp


def _load(cell: Cell, backend: str, dtype: np.dtype, inputs: bool, plan: dict) -> Compiled:
    """The evaluators of a plan (fresh or cached: the same path either way). The plan is
    checked as data and its functions built from it (:func:`gateflow.numeric._plan.build`);
    raises :class:`~gateflow.numeric._plan.PlanError` (or another error) otherwise."""
    node_fns, coef_fn = build(plan, cell, inputs, backend)
    fns = iter(node_fns)
    forward: list[Group | Node] = []
    groups: dict[tuple[str, ...], Group] = {}
    for item in plan["forward"]:
        if "group" in item:
            g = Group(item["group"], tuple(item["atoms"]), tuple(item["weights"]), item["reverse"])
            groups[g.atoms] = g
            forward.append(g)
        else:
            forward.append(Node(item["node"], tuple(item["args"]), next(fns)))
    reverse = tuple(_plan_step(op, groups) for op in plan["reverse"])
    return Compiled(cell, backend, dtype, tuple(forward), tuple(plan["coef_args"]), coef_fn,
                    tuple(tuple(x) for x in plan["layout"]), reverse, dict(plan["direct"]),
                    {b: dict(v) for b, v in plan["direct_labels"].items()}, tuple(plan["wrt"]),
                    plan["diagonal"])


def compile_cell(cell: str | Cell, backend: str = "numpy", dtype="float64", *,
                 inputs: bool = False) -> Compiled:
    """Evaluators of ``cell`` for (backend, dtype): derived and built once per process, and
    cached on disk as data (:mod:`gateflow.numeric._cache`), so a new process skips SymPy.
    With ``inputs``, those of the input Jacobian ∂s_t/∂x_t."""
    return _compile(get_cell(cell), backend, get_dtype(dtype), bool(inputs))


@cache
def _compile(cell: Cell, backend: str, dtype: np.dtype, inputs: bool = False) -> Compiled:
    path = _cache.entry_path(cell, backend, inputs)
    if path is not None:
        plan = _cache.read(path)
        if plan is not None:
            try:
                return _load(cell, backend, dtype, inputs, plan)
            except Exception:  # any data that is not a plan of this cell: rebuilt
                _cache.rejected(path, "it is not a valid gateflow plan")
    from gateflow.numeric._codegen import generate  # a cache miss only: SymPy's side

    plan = generate(cell, backend, inputs)
    compiled = _load(cell, backend, dtype, inputs, plan)  # a fresh plan that fails: a bug
    if path is not None:
        _cache.write(path, plan)
    return compiled


class Bound:
    """A compiled cell with its weights on the device, stacked for the GEMMs.

    Sizes come from the weights' shapes (:attr:`Cell.param_dims`): ``sizes`` by name
    (``n``, ``d``, and e.g. ``p``), ``dim`` per state block, and per group of products the
    row offsets of each weight in the stack (a projected LSTM's group on ``o ⊙ tanh(c)``
    has p rows, its gates n)."""

    def __init__(self, compiled: Compiled, params: dict):
        xp, dt = compiled.xp, compiled.dtype
        cell = compiled.cell
        self.c, self.xp = compiled, xp
        self.params = {k: xp.asarray(v, dtype=dt) for k, v in params.items()}
        self.sizes: dict[str, int] = {}
        for p, dims in cell.param_dims.items():
            for name, length in zip(dims, np.shape(params[p])):
                self.sizes.setdefault(name, int(length))
        self.n = self.sizes["n"]
        self.dim = {s: self.sizes[cell.block_size[s]] for s in cell.state}
        self.stacked = {}  # arg group -> (W_stack (Σ rows × m), its transpose, contiguous)
        self.offsets: dict[tuple[str, ...], list[int]] = {}  # group -> row offsets, 0..Σ rows
        for g in compiled.forward:
            if isinstance(g, Group):
                w = xp.concatenate([self.params[w] for w in g.weights], axis=0)
                self.stacked[g.atoms] = (xp.ascontiguousarray(w), xp.ascontiguousarray(w.T))
                self.offsets[g.atoms] = [0, *np.cumsum([np.shape(params[w])[0]
                                                        for w in g.weights]).tolist()]

    def step(self, x, prev: dict) -> dict:
        """One forward step: every node's value, from x_t (B, d) and s_{t−1}."""
        vals = {INPUT: x, **{f"{b}_prev": v for b, v in prev.items()}, **self.params}
        for item in self.c.forward:
            if isinstance(item, Group):
                out = vals[item.arg] @ self.stacked[item.atoms][1]
                off = self.offsets[item.atoms]
                for k, a in enumerate(item.atoms):
                    vals[a] = out[:, off[k]:off[k + 1]]
            else:
                vals[item.name] = item.fn(*(vals[a] for a in item.args))
        return vals

    def coefficients(self, vals: dict, plan: Compiled | None = None) -> list:
        """One step's Jacobian coefficients (the compiled layout) from its forward values:
        the state Jacobian's, or those of ``plan`` (the input Jacobian's, whose forward
        pass is the same)."""
        plan = self.c if plan is None else plan
        out = plan.coef_fn(*(vals[a] for a in plan.coef_args))
        dt = self.c.dtype
        return [c if hasattr(c, "shape") and c.ndim else dt.type(c) for c in out]


def _arg_text(arg: str, t: int) -> str:
    """A product's argument as the message names it: x_t, a state at t − 1, a layer's
    output at t, or an intermediate of the step."""
    if arg == "x":
        return f"the inputs x_{t}"
    if arg.endswith("_prev"):
        return f"the state {arg.removesuffix('_prev')}_{t - 1}" + (" (s0)" if t == 1 else "")
    if arg.startswith("_"):
        return f"an intermediate of step {t}"
    return f"{arg}_{t}"


def check_products(bound: Bound, vals: dict, t: int) -> None:
    """Refuse a step whose products W v overflow although W and v are finite.

    A GEMM of finite factors can still give ±inf or NaN: ``[10, −10] · [1e308, 1e308]`` is
    inf − inf = NaN in floating point (or −inf, with a fused multiply-add), though its true
    value is 0. Saturating activations then hide it (tanh(−inf) = −1, whose derivative is
    exactly 0), so every Jacobian would be silently wrong. One finiteness test per product
    and step; a product of a non-finite argument is left to the divergence check."""
    xp = bound.xp
    for g in bound.c.forward:
        if not isinstance(g, Group):
            continue
        parts = [vals[a] for a in g.atoms]
        whole = parts[0].base  # the group's one GEMM output, when the atoms are its columns
        if whole is None or any(p.base is not whole for p in parts) \
                or whole.size != sum(p.size for p in parts):
            whole = None
        # a finite sum means every term is finite (an inf or NaN would carry into it); only
        # a sum that is not (an overflow, or a sum of huge finite values) is looked at closely
        total = xp.sum(whole) if whole is not None else sum(xp.sum(p) for p in parts)
        if bool(xp.isfinite(total)):
            continue
        bad = [j for j, p in enumerate(parts) if not bool(xp.all(xp.isfinite(p)))]
        arg = vals[g.arg]
        if not bad or not bool(xp.all(xp.isfinite(arg))):
            continue  # fine, or the state itself diverged: the divergence check says so
        w = g.weights[bad[0]]
        top_w = float(xp.max(xp.abs(bound.params[w])))
        top_v = float(xp.max(xp.abs(arg))) if arg.size else 0.0
        raise GateflowError(
            f"the product {w}·{g.arg.removesuffix('_prev')} overflows {bound.c.dtype} at step "
            f"{t}: the weights {w} (|value| up to {top_w:.3g}) times {_arg_text(g.arg, t)} "
            f"(up to {top_v:.3g}) give ±inf or NaN although both are finite, so every "
            "Jacobian would be wrong; rescale the weights or the inputs (or s0)")


def first_nonfinite(xp, traj) -> int | None:
    """The first index along axis 0 of ``traj`` holding a value that is not finite, or
    None."""
    finite = xp.all(xp.isfinite(traj.reshape(traj.shape[0], -1)), axis=1)
    return None if bool(xp.all(finite)) else int(xp.argmin(finite))


def diverged(block: str, step: int) -> GateflowError:
    """The error of a forward pass whose state ``block`` is not finite from ``step`` on."""
    return GateflowError(
        f"the forward pass diverged: state {block} is not finite from step {step} on, so its "
        "Jacobians are undefined; use smaller weights or inputs, or fewer steps")


def check_trajectory(xp, states: dict) -> None:
    """Refuse a forward pass whose states (block -> (T+1, B, n), s_0 first) are not finite,
    naming the first block (in order) that is not and its first step."""
    for b, traj in states.items():
        first = first_nonfinite(xp, traj)
        if first is not None:
            raise diverged(b, first)

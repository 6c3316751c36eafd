"""The diagonal fast path (gateflow.numeric._diagonal), found by the engine.

* **chosen by structure**: the derivation decides (``diagonal_per_unit``), carried by the
  compiled plan and checked against the plan's wiring when a cached plan is read; a cell
  declared nowhere takes it, the LSTM, the sLSTM and stacks do not;
* **equal to the dense sweep**: the same cell, the same inputs, the dense path forced (the
  plan's flag turned off), every state block, input block, norm, singular value, the
  direct path, the probe and the states, to 1e−13 in log10 (float64); the Lyapunov
  spectrum to 1e−10;
* **closed forms**: ∏ of a constant diagonal at T = 4000 (1e±1200, no under- or overflow)
  and the LRU, whose realified state gives ‖∂h_T/∂h_{T−k}‖_F = (2 Σ_j |λ_j|^{2k})^{1/2},
  computed here from λ in complex NumPy, and Lyapunov exponents log|λ_j| twice.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

import gateflow.numeric._prepare as prepare_module
from gateflow import CELLS, Cell, GateflowError, init_params, make_inputs, stack
from gateflow.cells._linear import LINEAR_CELLS
from gateflow.cells._stack import input_lag_blocks
from gateflow.numeric import _diagonal
from gateflow.numeric._cache import _digest, entry_path
from gateflow.numeric._chain import all_lags, nonzero_blocks
from gateflow.numeric._codegen import generate
from gateflow.numeric._compile import _compile, compile_cell
from gateflow.numeric._lyapunov import lyapunov
from gateflow.numeric._measure import BlockNorm, Observer
from gateflow.numeric._norms import Frobenius
from gateflow.numeric._plan import FORMAT, PlanError, check_plan
from gateflow.symbolic._derive import derive, derive_input, diagonal_per_unit

#: A leaky integrator declared here, in no list: diagonal by its equations alone.
LEAKY = Cell(name="leaky-test", summary="t", reference="t", state=("h",),
             params=("W", "u", "b"), equations=("h = u*h_prev + tanh(W @ x + b)",))
#: Two blocks, diagonal per unit (a 2 × 2 per unit), with a chained block: c feeds h.
PAIR = Cell(name="pair-test", summary="t", reference="t", state=("h", "c"),
            params=("W", "V", "u", "v", "b"),
            equations=("c = u*c_prev + sigmoid(W @ x + b)*h_prev",
                       "h = tanh(c)*v + (V @ x)*h_prev"))
#: Diagonal, but its input reaches the state through a product of an intermediate (U z):
#: its input blocks are pulled back densely.
NESTED = Cell(name="nested-test", summary="t", reference="t", state=("h",),
              params=("W", "U", "u"), equations=("z = tanh(W @ x)", "h = u*h_prev + U @ z"))

DIAGONAL = {**{k: c for k, c in LINEAR_CELLS.items() if not k.startswith("slstm")},
            "indrnn": CELLS["indrnn"], "leaky-test": LEAKY, "pair-test": PAIR}
NORMS = ("frobenius", "spectral", "stable_rank")
N, D, T, B = 4, 3, 40, 3


@pytest.fixture
def dense(monkeypatch):
    """Within the test, every plan says "not diagonal": the dense sweep and the dense QR
    run on the same cells (what the fast path must equal)."""
    original = prepare_module.compile_cell

    def flag_off(*args, **kwargs):
        return dataclasses.replace(original(*args, **kwargs), diagonal=False)

    def switch(on: bool) -> None:
        monkeypatch.setattr(prepare_module, "compile_cell", flag_off if on else original)

    return switch


def _params(cell, seed=3):
    p = init_params(cell, N, D, seed=seed)
    if cell is PAIR:  # keep the 2 × 2 products away from 0 and ∞ over 40 steps
        p = {**p, "u": np.full(N, 0.9), "v": np.linspace(0.5, 1.0, N)}
    return p


def _flat(r) -> dict[str, np.ndarray]:
    out = {}
    for where in ("blocks", "inputs", "direct"):
        for b, per in getattr(r, where).items():
            for key, v in per.items():
                out[f"{where} {b} {key}"] = v
    for k, per in r.singular_values.items():
        for b, v in per.items():
            out[f"sv{k} {b}"] = v
    if r.probe is not None:
        out["probe"] = r.probe
    for s, v in (r.states or {}).items():
        out[f"state {s}"] = v
    return out


def assert_same(fast: dict, slow: dict, tol: float) -> None:
    """Equal keys and shapes, the same exact zeros (−inf) and signs of infinity, the rest
    within ``tol`` (absolute, on log10 values; relative on stable ranks and states)."""
    assert fast.keys() == slow.keys()
    for key in fast:
        a, b = np.asarray(fast[key]), np.asarray(slow[key])
        assert a.shape == b.shape, key
        np.testing.assert_array_equal(np.isfinite(a), np.isfinite(b), err_msg=key)
        np.testing.assert_array_equal(a[~np.isfinite(a)], b[~np.isfinite(b)], err_msg=key)
        fin = np.isfinite(a)
        scale = np.maximum(1.0, np.abs(b[fin])) if ("stable_rank" in key
                                                    or key.startswith("state")) else 1.0
        assert np.all(np.abs(a[fin] - b[fin]) <= tol * scale), \
            (key, float(np.max(np.abs(a[fin] - b[fin]), initial=0)))


# --------------------------------------------------------------------------------------
# Chosen by structure
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [*LINEAR_CELLS, *CELLS])
def test_the_predicate_reads_the_derivation(name):
    cell = LINEAR_CELLS.get(name) or CELLS[name]
    s = derive(cell)
    # the definition, spelled out: no product of the state, every term a pure diag
    pure = not s.products and all(t.weight is None and t.block is None and t.inner is None
                                  for b in cell.blocks for t in s.block(b).terms)
    assert diagonal_per_unit(s) == pure == (name in DIAGONAL)
    assert compile_cell(cell).diagonal == pure
    assert not diagonal_per_unit(derive_input(cell))
    assert not compile_cell(cell, inputs=True).diagonal


def test_cells_declared_nowhere_qualify_by_their_equations():
    for cell in (LEAKY, PAIR, NESTED):
        assert diagonal_per_unit(derive(cell)) and compile_cell(cell).diagonal
    recurrent = Cell(name="matrix-test", summary="t", reference="t", state=("h",),
                     params=("W", "U", "u"), equations=("h = u*h_prev + U @ h_prev + W @ x",))
    assert not diagonal_per_unit(derive(recurrent))
    assert not diagonal_per_unit(derive(stack("indrnn", 2)))  # layer 1 reads W h_l0


@pytest.mark.parametrize("name", ["lstm", "rglru", "lru", "sru", "indrnn"])
def test_the_plan_flag_is_checked_against_the_wiring(name):
    cell = LINEAR_CELLS.get(name) or CELLS[name]
    plan = generate(cell, "numpy")
    assert plan["format"] == FORMAT == 6
    assert plan["diagonal"] is (name != "lstm")
    check_plan(plan, cell, False)
    for lie in (not plan["diagonal"], 1 if plan["diagonal"] else 0, None, "true"):
        with pytest.raises(PlanError, match="not a gateflow plan|diagonal flag"):
            check_plan({**plan, "diagonal": lie}, cell, False)
    missing = {k: v for k, v in plan.items() if k != "diagonal"}
    with pytest.raises(PlanError):
        check_plan(missing, cell, False)
    inputs = generate(cell, "numpy", inputs=True)
    assert inputs["diagonal"] is False
    with pytest.raises(PlanError, match="diagonal flag"):
        check_plan({**inputs, "diagonal": True}, cell, True)


def test_a_cached_plan_that_lies_about_the_flag_is_rebuilt(tmp_path, monkeypatch, capsys):
    """A signed (so integrity-checked) cache entry whose flag says "diagonal" for the LSTM
    is refused as data and rebuilt: the dense path runs, with one warning."""
    monkeypatch.setenv("GATEFLOW_CACHE_DIR", str(tmp_path))
    cell = CELLS["lstm"]
    path = entry_path(cell, "numpy")
    plan = {**generate(cell, "numpy"), "diagonal": True}
    path.write_text(json.dumps({**plan, "sha256": _digest(path.name, plan)}))
    _compile.cache_clear()
    try:
        assert compile_cell(cell).diagonal is False
        assert "ignoring compile cache entry" in capsys.readouterr().err
        assert json.loads(path.read_text())["diagonal"] is False  # rewritten
        _compile.cache_clear()
        assert compile_cell(cell).diagonal is False  # read back, silently
        assert capsys.readouterr().err == ""
    finally:
        _compile.cache_clear()


def _path(cell, **kw) -> str:
    p = init_params(cell, N, D, seed=1)
    return all_lags(cell, p, make_inputs(6, 2, D, seed=2), **kw).meta["path"]


def test_the_choice_is_by_structure():
    assert _path(CELLS["lstm"]) == "dense" and _path(LINEAR_CELLS["slstm"]) == "dense"
    assert _path(stack("indrnn", 2)) == "dense"
    assert _path(CELLS["indrnn"]) == "diagonal" and _path(LEAKY) == "diagonal"
    assert _path(LINEAR_CELLS["lru"], blocks="h_re/h_im,h_im/x") == "diagonal"
    # a product of an intermediate on the input side: state blocks elementwise, input
    # blocks densely
    assert _path(NESTED, blocks="h/h,h/x") == "dense"
    assert _path(NESTED, blocks="h/h") == "diagonal"


def test_a_norm_without_a_diagonal_form_falls_back():
    class Trace(BlockNorm):  # no diagonal form
        name = "trace-test"

    plain = Observer("trace-test", "trace", "t", "t", Trace)
    comp = compile_cell(LEAKY)
    frob = Observer("frobenius", "log10_frobenius", "t", "t", Frobenius)
    assert _diagonal.supported(comp, None, (frob,))
    assert not _diagonal.supported(comp, None, (frob, plain))
    assert not _diagonal.supported(compile_cell(CELLS["lstm"]), None, (frob,))


# --------------------------------------------------------------------------------------
# Equal to the dense sweep
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("recompute", [False, True], ids=["kept", "recomputed"])
@pytest.mark.parametrize("name", list(DIAGONAL))
def test_equals_the_dense_sweep(name, recompute, dense, monkeypatch):
    """Every state and input block, every norm, singular values at three lags, the direct
    path and the states; coefficients kept from the forward pass or recomputed per chunk
    (chunks of 7 steps, the last one short), over two worker threads."""
    cell = DIAGONAL[name]
    monkeypatch.setattr(_diagonal, "keeps", lambda *args: not recompute)
    monkeypatch.setattr(_diagonal, "chunk_length", lambda *args: 7)
    calls = []
    recomputed = _diagonal.chunk_coefficients
    monkeypatch.setattr(_diagonal, "chunk_coefficients",
                        lambda *args: calls.append(args[3]) or recomputed(*args))
    p, x = _params(cell), make_inputs(T, B, D, seed=4)
    blocks = (*nonzero_blocks(cell), *input_lag_blocks(cell))
    rng = np.random.default_rng(0)
    s0 = {s: 0.3 * rng.standard_normal((B, N)) for s in cell.state}
    kw = dict(blocks=blocks, norms=NORMS, singular_lags=(1, 7, T), keep_states=True,
              threads=2, s0=s0)
    fast = all_lags(cell, p, x, **kw)
    assert fast.meta["path"] == "diagonal"
    # each chunk of 7 once per worker (2) and row group (SRU's c needs no h: 2 groups)
    assert sorted(set(calls)) == ([1, 6, 13, 20, 27, 34] if recompute else [])
    assert all(calls.count(t) == len(calls) // 6 for t in calls)
    dense(True)
    slow = all_lags(cell, p, x, **kw)
    assert slow.meta["path"] == "dense"
    assert_same(_flat(fast), _flat(slow), 1e-13)


@pytest.mark.parametrize("name", ["rglru", "lru", "sru", "indrnn", "pair-test"])
def test_the_probe_equals_the_dense_sweeps(name, dense):
    cell = DIAGONAL[name]
    p, x = _params(cell), make_inputs(T, B, D, seed=5)
    probe = np.linspace(-1.0, 1.5, N * len(cell.state))
    fast = all_lags(cell, p, x, blocks=nonzero_blocks(cell)[-1:], probe=probe)
    dense(True)
    slow = all_lags(cell, p, x, blocks=nonzero_blocks(cell)[-1:], probe=probe)
    assert (fast.meta["path"], slow.meta["path"]) == ("diagonal", "dense")
    assert_same(_flat(fast), _flat(slow), 1e-13)


@pytest.mark.parametrize("name", ["mingru", "rglru", "mamba", "indrnn"])
def test_one_block_is_its_direct_path(name):
    """With one state block, ∂h_T/∂h_{T−k} is the direct path ∏ diag(a_t), which
    gateflow also accumulates from the coefficients alone (log|a_t| summed): the sweep's
    norms equal it, the spectral norm (max |entry|) included, at n = 64 where the dense
    sweep's warm-started subspace iteration (8 vectors) can lose the largest entry."""
    cell = DIAGONAL[name]
    r = all_lags(cell, init_params(cell, 64, 5, seed=1), make_inputs(400, 2, 5, seed=2))
    for key in ("log10_frobenius", "log10_spectral"):
        np.testing.assert_allclose(r.blocks["h/h"][key], r.direct["h"][key], rtol=0,
                                   atol=1e-11)


def test_float32_agrees_with_the_dense_float32_sweep(dense):
    cell = LINEAR_CELLS["rglru"]
    p, x = _params(cell), make_inputs(T, B, D, seed=6)
    fast = all_lags(cell, p, x, norms=NORMS, dtype="float32")
    dense(True)
    slow = all_lags(cell, p, x, norms=NORMS, dtype="float32")
    assert_same(_flat(fast), _flat(slow), 1e-5)


def test_progress_and_order_of_lags():
    seen: list[int] = []
    all_lags(LEAKY, _params(LEAKY), make_inputs(23, 2, D, seed=1), progress=seen.append)
    assert seen == list(range(1, 24))


# --------------------------------------------------------------------------------------
# Closed forms at long T, and the same refusals as the dense path
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("u", [0.5, 2.0])
def test_a_constant_diagonal_over_4000_steps(u):
    """h = u ⊙ h_{t−1} + tanh(W x + b): ∂h_T/∂h_{T−k} = u^k I exactly, 1e∓1204 at k = 4000
    (beyond float64 without the row scales): log10 ‖·‖_F = k log10 u + ½ log10 n, ‖·‖₂ =
    u^k, stable rank n."""
    Tl = 4000
    p = {**_params(LEAKY), "u": np.full(N, u), "b": np.zeros(N)}
    x = np.zeros((Tl, 2, D))  # h stays 0, even for u = 2
    r = all_lags(LEAKY, p, x, norms=NORMS, singular_lags=(Tl,))
    k = np.arange(1, Tl + 1)[:, None]
    want = np.broadcast_to(k * np.log10(u), (Tl, 2))
    h = r.blocks["h/h"]
    assert abs(want[-1, 0]) > 1200  # far beyond float64 (1e±308)
    np.testing.assert_allclose(h["log10_frobenius"], want + 0.5 * np.log10(N), rtol=0,
                               atol=1e-10)
    np.testing.assert_allclose(h["log10_spectral"], want, rtol=0, atol=1e-10)
    np.testing.assert_allclose(h["stable_rank"], N, rtol=1e-12)
    np.testing.assert_allclose(r.singular_values[Tl]["h/h"], np.full((2, N), Tl * np.log10(u)),
                               rtol=0, atol=1e-9)
    np.testing.assert_allclose(r.direct["h"]["log10_frobenius"], h["log10_frobenius"],
                               rtol=0, atol=1e-10)


def test_the_same_refusals_as_the_dense_path(dense):
    """A diverging state and an overflowing product are refused with the dense path's
    words."""
    p = {**_params(LEAKY), "u": np.full(N, 1e200)}
    x = make_inputs(9, 2, D, seed=1)
    messages = []
    for on in (False, True):
        dense(on)
        with pytest.raises(GateflowError, match="forward pass diverged: state h") as err:
            all_lags(LEAKY, p, x)
        messages.append(str(err.value))
    assert messages[0] == messages[1]
    p = {**_params(LEAKY), "W": np.full((N, D), 1e300)}
    x = np.full((5, 2, D), 1e10) * np.array([1.0, -1.0, 1.0])
    messages = []
    for on in (False, True):
        dense(on)
        with pytest.raises(GateflowError, match="the product W·x overflows") as err:
            all_lags(LEAKY, p, x)
        messages.append(str(err.value))
    assert messages[0] == messages[1]
    # h stays 0, so the states are fine, but ∂h_T/∂h_{T−1} = 1e300 I: its rows' squares
    # overflow at once
    p = {**_params(LEAKY), "u": np.full(N, 1e300), "b": np.zeros(N)}
    messages = []
    for on in (False, True):
        dense(on)
        with pytest.raises(GateflowError, match="the backward sweep overflows float64 at "
                                                "lag 1") as err:
            all_lags(LEAKY, p, np.zeros((5, 2, D)))
        messages.append(str(err.value))
    assert messages[0] == messages[1]


def _lru(n: int, seed: int = 0):
    """LRU parameters from ν, θ (lru-pytorch's nu_log, theta_log), and λ as complex."""
    rng = np.random.default_rng(seed)
    r = rng.uniform(0.8, 0.99, n)
    phase = rng.uniform(0, 2 * np.pi, n)
    lam = np.exp(-np.exp(np.log(-np.log(r))) + 1j * np.exp(np.log(phase)))
    d = 3
    return lam, {"lam_re": lam.real.copy(), "lam_im": lam.imag.copy(),
                 "gamma": np.sqrt(1 - np.abs(lam) ** 2),
                 "B_re": rng.standard_normal((n, d)), "B_im": rng.standard_normal((n, d))}


def test_lru_frobenius_is_the_closed_form():
    """The realified state [h_re; h_im] of 2n units: ∂h_T/∂h_{T−k} per unit is the 2 × 2
    [[Re λ^k, −Im λ^k], [Im λ^k, Re λ^k]], whose squared Frobenius norm is 2|λ|^{2k}; so
    over the state ‖·‖_F = (2 Σ_j |λ_j|^{2k})^{1/2}, and against h_re alone (one column
    pair, the complex derivative's) (Σ_j |λ_j|^{2k})^{1/2}. Theory from λ^k in complex
    NumPy; gateflow's blocks combined in log space."""
    n, Tl = 6, 300
    lam, p = _lru(n)
    cell = LINEAR_CELLS["lru"]
    r = all_lags(cell, p, make_inputs(Tl, 2, 3, seed=8), norms=("frobenius",))
    k = np.arange(1, Tl + 1)
    powers = lam[None, :] ** k[:, None]  # λ_j^k, complex
    sq = np.sum(np.abs(powers) ** 2, axis=1)
    full = 0.5 * np.log10(2 * sq)
    column = 0.5 * np.log10(sq)
    F = {b: v["log10_frobenius"] for b, v in r.blocks.items()}

    def combine(*blocks):
        return 0.5 * np.log10(sum(10.0 ** (2 * F[b]) for b in blocks))

    measured = combine("h_re/h_re", "h_re/h_im", "h_im/h_re", "h_im/h_im")
    np.testing.assert_allclose(measured, np.tile(full[:, None], (1, 2)), rtol=0, atol=1e-12)
    np.testing.assert_allclose(combine("h_re/h_re", "h_im/h_re"),
                               np.tile(column[:, None], (1, 2)), rtol=0, atol=1e-12)
    # each block alone: diag(Re λ^k), diag(∓Im λ^k)
    np.testing.assert_allclose(F["h_re/h_re"][:, 0],
                               0.5 * np.log10(np.sum(powers.real ** 2, axis=1)), atol=1e-12)
    np.testing.assert_allclose(F["h_im/h_re"][:, 0],
                               0.5 * np.log10(np.sum(powers.imag ** 2, axis=1)), atol=1e-12)


def test_lru_lyapunov_is_log_modulus_twice(dense):
    n = 5
    lam, p = _lru(n, seed=2)
    cell = LINEAR_CELLS["lru"]
    x = make_inputs(200, 2, 3, seed=9)
    res = lyapunov(cell, p, x)
    assert res.meta["path"] == "diagonal"
    want = np.sort(np.repeat(np.log(np.abs(lam)), 2))[::-1]
    np.testing.assert_allclose(res.exponents, np.tile(want, (2, 1)), rtol=0, atol=1e-12)
    dense(True)
    slow = lyapunov(cell, p, x)
    assert slow.meta["path"] == "dense"
    np.testing.assert_allclose(res.exponents, slow.exponents, rtol=0, atol=1e-10)


@pytest.mark.parametrize("name", list(DIAGONAL))
def test_lyapunov_equals_the_dense_qr(name, dense, monkeypatch):
    """Every exponent (−inf where a direction is annihilated, as SRU's h) and every
    running estimate, for K = N and for a K that splits a unit's blocks."""
    cell = DIAGONAL[name]
    monkeypatch.setattr(_diagonal, "chunk_length", lambda *args: 7)
    p, x = _params(cell), make_inputs(60, 2, D, seed=10)
    S = len(cell.state)
    s0 = {cell.state[-1]: np.linspace(-0.5, 0.5, N)}
    results = {}
    for on in (False, True):
        dense(on)
        results[on] = [lyapunov(cell, p, x, k=k, transient=5, s0=s0) for k in (None, N + 1, 2)
                       if k is None or k <= S * N]
    for fast, slow in zip(results[False], results[True]):
        assert (fast.meta["path"], slow.meta["path"]) == ("diagonal", "dense")
        assert_same({"lam": fast.exponents, "run": fast.running},
                    {"lam": slow.exponents, "run": slow.running}, 1e-10)
        np.testing.assert_array_equal(fast.running_steps, slow.running_steps)

"""The observer registry and protocol of the backward sweep (gateflow.numeric._observers,
_measure, _renorm): the registry drives validation and result keys, an observer plugged in
without touching the sweep is measured, and the renormaliser is a separate, swappable
object."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateflow import GateflowError, all_lags, init_params, make_inputs
from gateflow.cells._block import Block
from gateflow.numeric import _chain, _observers
from gateflow.numeric._measure import BlockNorm, Observer, Step
from gateflow.numeric._observers import NORMS, OBSERVERS, register, resolve
from gateflow.numeric._renorm import RowScale, renorm_range


def test_registry_fields():
    assert NORMS == tuple(OBSERVERS)
    assert NORMS[:2] == ("frobenius", "spectral")
    assert len({o.key for o in OBSERVERS.values()}) == len(OBSERVERS)
    for name, o in OBSERVERS.items():
        assert o.name == name and o.description and "{J}" in o.label
        assert o.key.startswith("log10_") == o.log10
        assert issubclass(o.measure, BlockNorm) and o.measure.name == name
        assert list(resolve([name]))[-1] is o  # what it requires comes first


def test_register_refuses_duplicates_and_unknown_requirements(monkeypatch):
    monkeypatch.setattr(_observers, "OBSERVERS", dict(OBSERVERS))
    with pytest.raises(ValueError, match="already registered"):
        register(OBSERVERS["frobenius"])
    with pytest.raises(ValueError, match="unregistered"):
        register(Observer("x", "x", "{J}", "x", BlockNorm, requires=("nope",)))


def test_unknown_norm_is_refused_with_the_registered_names():
    p = init_params("rnn", 3, 2)
    with pytest.raises(GateflowError, match="frobenius"):
        all_lags("rnn", p, make_inputs(4, 1, 2), norms=("nuclear",))


class _MaxRow(BlockNorm):
    """ln of the largest row norm, built on nothing but the Step: a test plug-in."""

    name = "max_row"

    def value(self, step: Step, block: Block):
        r = self.ctx.rows[block.out]  # a Block: its parts are attributes
        return self.ctx.xp.max(0.5 * self.ctx.xp.log(step.sq(block.wrt)[:, r])
                               + step.logscale[:, r], axis=1)


def test_a_plugged_in_observer_is_measured(monkeypatch):
    """Registering an observer is all it takes: all_lags accepts its name and returns it
    under its key, and it agrees with the dense Jacobian product (central differences)."""
    monkeypatch.setattr(_observers, "OBSERVERS", dict(OBSERVERS))
    register(Observer("max_row", "log10_max_row", r"\max_i \|{J}_i\|", "test", _MaxRow))
    p = init_params("gru", 4, 2, seed=1)
    x = make_inputs(30, 2, 2, seed=2)
    res = all_lags("gru", p, x, norms=("max_row", "frobenius"), threads=1)
    assert set(res.blocks["h/h"]) == {"log10_max_row", "log10_frobenius"}
    J = _dense_chain("gru", p, x)
    for k in (1, 7, 30):
        want = np.log10(np.linalg.norm(J[k - 1], axis=2).max(axis=1))
        np.testing.assert_allclose(res.blocks["h/h"]["log10_max_row"][k - 1], want, atol=1e-8)


def test_only_the_asked_for_norms_are_reported_and_direct_always_has_the_defaults():
    p = init_params("lstm", 3, 2)
    res = all_lags("lstm", p, make_inputs(5, 2, 2), norms=("frobenius",))
    assert all(set(dd) == {"log10_frobenius"} for dd in res.blocks.values())
    assert set(res.direct["c"]) == {"log10_frobenius", "log10_spectral"}


def test_row_scale_renormaliser_keeps_the_numbers_of_a_long_chain():
    """T = 3000 vanishing: far below float64's range without the row scales."""
    lo, hi = renorm_range(np.float64)
    assert 1e-80 < lo < 1e-70 and 1e70 < hi < 1e80
    assert RowScale.row_scales
    p = init_params("rnn", 4, 2, sigma_w=0.3, seed=0)
    res = all_lags("rnn", p, make_inputs(3000, 1, 2, seed=1), norms=("frobenius",))
    v = res.blocks["h/h"]["log10_frobenius"][:, 0]
    assert np.isfinite(v).all() and v[-1] < -400 and np.all(np.diff(v[100:]) < 0)


def test_a_renormaliser_that_mixes_rows_is_refused_for_norms():
    class Mixing(RowScale):
        row_scales = False

    from gateflow.numeric._compile import Bound, compile_cell
    from gateflow.numeric._norms import Frobenius

    comp = compile_cell("rnn")
    p = init_params("rnn", 3, 2)
    x = make_inputs(4, 1, 2)
    with pytest.raises(GateflowError, match="per-row"):
        _chain._sweep_chunk(comp, Bound(comp, p), x, None, None, ("h/h",),
                            {"frobenius": Frobenius()}, Mixing(), ["h"], True, None, True)


# -- an independent reference: the dense Jacobian product in numpy -----------------------
def _dense_chain(name, params, x):
    """(T, B, N, N) ∂s_T/∂s_{T−k}, index k−1, by central differences of a numpy step
    (tests/test_chain.numpy_step), multiplied out densely."""
    from test_chain import numpy_step

    from gateflow import get_cell

    cell = get_cell(name)
    n = params[cell.params[0]].shape[0]
    T, B, _ = x.shape
    s = {b: np.zeros((B, n)) for b in cell.state}
    steps = []
    for t in range(T):
        steps.append(_step_jacobian(name, params, x[t], s, cell.state, n))
        s = numpy_step(name, params, x[t], s)
    out, acc = [], None
    for J in reversed(steps):
        acc = J if acc is None else acc @ J
        out.append(acc)
    return np.array(out)


def _step_jacobian(name, params, xt, s, state, n, eps=1e-6):
    from test_chain import numpy_step

    B = xt.shape[0]
    flat = np.concatenate([s[b] for b in state], axis=1)
    N = flat.shape[1]
    J = np.empty((B, N, N))

    def f(v):
        parts = {b: v[:, i * n:(i + 1) * n] for i, b in enumerate(state)}
        out = numpy_step(name, params, xt, parts)
        return np.concatenate([out[b] for b in state], axis=1)

    for j in range(N):
        e = np.zeros(N)
        e[j] = eps
        J[:, :, j] = (f(flat + e) - f(flat - e)) / (2 * eps)
    return J


def test_dense_reference_matches_frobenius():
    """The dense reference above is itself right: it reproduces the Frobenius norms."""
    p = init_params("lstm", 3, 2, seed=3)
    x = make_inputs(12, 2, 2, seed=3)
    J = _dense_chain("lstm", p, x)
    res = all_lags("lstm", p, x, norms=("frobenius",))
    # state order h, c: rows/cols 0..2 are h, 3..5 c
    got = res.blocks["c/h"]["log10_frobenius"]
    want = np.log10(np.linalg.norm(J[:, :, 3:, :3], axis=(2, 3)))
    np.testing.assert_allclose(got, want, atol=1e-7)
    assert math.isfinite(got.sum())


# -- the stable rank, a plug-in: its module plus one line in _observers._PLUGINS ------------
def _rnn_chain(params, x):
    """(T, B, n, n) ∂h_T/∂h_{T−k} of the tanh RNN, exactly: J_t = diag(1 − h_t²) U."""
    T, B, _ = x.shape
    h = np.zeros((B, params["U"].shape[0]))
    steps = []
    for t in range(T):
        h = np.tanh(x[t] @ params["W"].T + h @ params["U"].T + params["b"])
        steps.append((1 - h**2)[:, :, None] * params["U"])
    out, acc = [], None
    for J in reversed(steps):
        acc = J if acc is None else acc @ J
        out.append(acc)
    return np.array(out)


def _stable_rank(J):
    return np.linalg.norm(J, "fro", axis=(-2, -1)) ** 2 / np.linalg.norm(J, 2, axis=(-2, -1)) ** 2


def test_stable_rank_is_registered_with_a_plain_key():
    o = OBSERVERS["stable_rank"]
    assert "stable_rank" in NORMS and o.key == "stable_rank" and not o.log10
    assert [r.name for r in resolve(["stable_rank"])] == ["frobenius", "spectral", "stable_rank"]


def test_stable_rank_against_numpy_rnn():
    n, T, B = 7, 60, 3
    p = init_params("rnn", n, 2, sigma_w=1.2, seed=7)
    x = make_inputs(T, B, 2, seed=8)
    res = all_lags("rnn", p, x, norms=("stable_rank",))
    assert set(res.blocks["h/h"]) == {"stable_rank"}  # what it builds on is not reported
    got = res.blocks["h/h"]["stable_rank"]
    J = _rnn_chain(p, x)
    for k in (1, 2, 5, 20, 60):
        np.testing.assert_allclose(got[k - 1], _stable_rank(J[k - 1]), rtol=1e-9)
    assert np.all(got >= 1 - 1e-12) and np.all(got <= n + 1e-12)
    assert got[0].max() > 2 and got[-1].min() < got[0].min()  # directions die out with k


def test_stable_rank_against_numpy_lstm_blocks():
    """Every block of the LSTM, against the dense product of central-difference steps."""
    n, T, B = 4, 15, 2
    p = init_params("lstm", n, 2, seed=5)
    x = make_inputs(T, B, 2, seed=6)
    res = all_lags("lstm", p, x, norms=("stable_rank", "frobenius"))
    J = _dense_chain("lstm", p, x)  # state order h, c
    part = {"h": slice(0, n), "c": slice(n, 2 * n)}
    for b, dd in res.blocks.items():
        out, inp = b.split("/")
        want = _stable_rank(J[:, :, part[out], part[inp]])
        np.testing.assert_allclose(dd["stable_rank"], want, rtol=1e-6)
        assert np.all(dd["stable_rank"] >= 1 - 1e-12) and np.all(dd["stable_rank"] <= n + 1e-12)


def test_stable_rank_of_a_zero_jacobian_is_zero_and_of_the_direct_path_diagonal():
    p = init_params("rnn", 3, 2)
    p["U"] = np.zeros_like(p["U"])
    res = all_lags("rnn", p, make_inputs(6, 2, 2), norms=("stable_rank",))
    assert np.all(res.blocks["h/h"]["stable_rank"] == 0)

    p = init_params("lstm", 5, 2, sigma_w=1.5, seed=4)
    x = make_inputs(30, 2, 2, seed=5)
    res = all_lags("lstm", p, x, norms=("stable_rank",), keep_states=True)
    # the direct path of c is ∏ diag(f): stable rank Σ d² / max d², d = ∏ f
    h = res.states["h"]
    f = 1 / (1 + np.exp(-(x @ p["W_f"].T + h[:-1] @ p["U_f"].T + p["b_f"])))  # (T, B, n)
    d2 = np.exp(2 * np.cumsum(np.log(f[::-1]), axis=0))
    np.testing.assert_allclose(res.direct["c"]["stable_rank"], d2.sum(2) / d2.max(2), rtol=1e-10)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(9, 40), lags=st.integers(2, 6))
def test_spectral_norm_never_misses_a_top_direction_outside_its_warm_subspace(seed, n, lags):
    """Chained over lags like the sweep, on diagonal blocks whose largest entry jumps to a
    unit the warm subspace (p = 8 vectors) does not hold: the top direction is exactly
    orthogonal to it, so the iteration alone converges to a smaller value. The result must
    still be the exact ‖m‖₂ = max |entry| at every lag (the largest column norm bounds it
    from below; the sweep falls back to a dense solve and re-aims its warm start)."""
    from gateflow.numeric._norms import spectral_norm

    rng = np.random.default_rng(seed)
    V = None
    for _ in range(lags):
        d = rng.uniform(0.1, 1.0, (2, n))
        d[np.arange(2), rng.integers(0, n, 2)] = rng.uniform(2.0, 50.0, 2)  # a new top unit
        m = np.stack([np.diag(x) for x in d])
        sigma, V = spectral_norm(np, m, V)
        np.testing.assert_allclose(sigma, d.max(axis=1), rtol=1e-12)

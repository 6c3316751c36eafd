"""Analysis: batch statistics, decay fits and theory, each against an independent computation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gateflow import GateflowError
from gateflow.analysis._analysis import (
    chrono_timescale,
    fit_decay,
    gate_path,
    mean_field_from_params,
    mean_field_tanh,
    pascanu_bound,
    summarize,
)
from gateflow.models._params import init_params, make_inputs
from gateflow.numeric._chain import all_lags


def test_summarize_median_and_quartiles():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(5, 9))
    s = summarize(a)
    np.testing.assert_allclose(s.median, np.median(a, axis=1))
    np.testing.assert_allclose(s.q25, np.quantile(a, 0.25, axis=1))
    np.testing.assert_allclose(s.q75, np.quantile(a, 0.75, axis=1))
    np.testing.assert_array_equal(s.lags, np.arange(1, 6))


def test_summarize_keeps_exact_zeros_without_nan():
    a = np.array([[0.0, -1.0, -np.inf, -2.0], [-np.inf] * 4])
    s = summarize(a)
    assert not np.any(np.isnan(s.median))
    assert s.median[0] == pytest.approx(np.median([0.0, -1.0, -2.0, -1e9]))
    assert s.q25[0] == -np.inf or s.q25[0] < -1.5
    assert s.median[1] == -np.inf and s.q75[1] == -np.inf


@pytest.mark.parametrize("factor", [0.3, 0.9, 0.99])
def test_fit_recovers_exact_exponential(factor):
    k = np.arange(1, 301)
    y = math.log10(7.0) + k * math.log10(factor)
    f = fit_decay(k, y)
    assert f.factor == pytest.approx(factor, rel=1e-10)
    assert f.intercept == pytest.approx(math.log10(7.0), abs=1e-9)
    assert f.regime == "vanishing" and f.is_memory and f.r2 == pytest.approx(1, abs=1e-12)
    assert f.window == (1, 300)
    # e-folding lag: norm falls by e over it
    assert factor ** f.efold == pytest.approx(1 / math.e, rel=1e-9)
    expected = next((int(j) for j, v in zip(k, y) if v < -6), None)
    assert f.horizon == expected
    assert f.used == 300


@pytest.mark.parametrize(("factor", "regime"), [
    (1.23, "exploding"), (1.001, "neutral"), (0.999, "neutral"), (1.0, "neutral")])
def test_fits_never_flatter(factor, regime):
    """A growing curve is exploding (no e-folding lag, no horizon), never memory; a curve
    that moves by less than half a decade over the lags measured is neutral: an e-folding
    lag of 1000 steps measured over 300 would be an extrapolation."""
    k = np.arange(1, 301)
    f = fit_decay(k, k * math.log10(factor))
    assert f.regime == regime and f.efold is None and not f.is_memory
    assert f.factor == pytest.approx(factor, rel=1e-10)
    if regime == "exploding":
        assert f.horizon is None and f.describe() == "exploding ×1.23/step"


def test_a_short_window_does_not_make_a_fast_decay_neutral():
    f = fit_decay(np.arange(1, 4), np.arange(1, 4) * math.log10(0.63))
    assert f.regime == "vanishing" and f.efold == pytest.approx(-1 / math.log(0.63))


def test_non_monotone_curve_is_named():
    """The report's LSTM b_f = 3 curve: 0.88 -> 0.38 (lag 121) -> 0.99 (lag 200)."""
    k = np.arange(1, 201)
    y = np.where(k <= 121, 0.88 - 0.5 * (k - 1) / 120, 0.38 + 0.61 * (k - 121) / 79)
    f = fit_decay(k, y)
    assert f.regime == "non-monotone" and f.efold is None and f.r2 < 0.5
    noisy = -0.02 * k + 0.05 * np.sin(k)  # wiggles of 0.1 decade do not make a turn
    assert fit_decay(k, noisy).regime == "vanishing"


def test_fit_skips_zeros_and_floor():
    k = np.arange(1, 11, dtype=float)
    y = -0.5 * k
    y[6:] = -np.inf
    y[5] = -400.0
    f = fit_decay(k, y)
    assert f.used == 5 and f.slope == pytest.approx(-0.5)
    assert f.horizon == 6  # −inf and −400 are below 1e-6 (first at lag 6)


def test_fit_growth_has_no_efold_and_no_horizon():
    k = np.arange(1, 50)
    f = fit_decay(k, 0.01 * k)
    assert f.efold is None and f.horizon is None and f.factor > 1


def test_fit_threshold_must_be_positive():
    with pytest.raises(GateflowError):
        fit_decay(np.arange(1, 4), np.zeros(3), threshold=0)


@pytest.mark.parametrize("cell,bias", [("lstm", 0.0), ("lstm", 2.5), ("gru", 1.0), ("gru", -1.0)])
def test_gate_path_matches_all_lags_with_zero_weights(cell, bias):
    n, d, T = 5, 3, 40
    p = init_params(cell, n, d, gate_bias=bias, seed=0)
    name = "b_f" if cell == "lstm" else "b_z"
    p = {k: (v if k == name else np.zeros_like(v)) for k, v in p.items()}
    x = make_inputs(T, 2, d, seed=1)
    block = "c/c" if cell == "lstm" else "h/h"
    res = all_lags(cell, p, x, blocks=(block,))
    for norm in ("frobenius", "spectral"):
        want = gate_path(res.lags, bias, n, norm)
        got = res.blocks[block][f"log10_{norm}"]
        np.testing.assert_allclose(got, np.repeat(want[:, None], 2, axis=1), atol=1e-9)
    fit = fit_decay(res.lags, summarize(res.blocks[block]["log10_frobenius"]).median)
    sig = 1 / (1 + math.exp(-bias))
    assert fit.factor == pytest.approx(sig, rel=1e-9)
    # e-folding lag in steps = −1/ln σ(b) ≈ 1 + e^b (the chrono timescale) for large b
    assert fit.efold == pytest.approx(-1 / math.log(sig), rel=1e-9)


def test_chrono_timescale_is_inverse_of_one_minus_sigma():
    b = np.array([-2.0, 0.0, 3.0])
    np.testing.assert_allclose(chrono_timescale(b), 1 / (1 - 1 / (1 + np.exp(-b))))


def test_mean_field_fixed_point_by_monte_carlo():
    """q* and χ₁ from quadrature against plain Monte Carlo expectations."""
    sw2, iv, bv = 1.7, 0.4, 0.05
    mf = mean_field_tanh(sw2, iv, bv)
    z = np.random.default_rng(0).standard_normal(2_000_000)
    a = math.sqrt(mf.q_star) * z
    assert sw2 * np.mean(np.tanh(a) ** 2) + iv + bv == pytest.approx(mf.q_star, rel=2e-3)
    assert sw2 * np.mean((1 - np.tanh(a) ** 2) ** 2) == pytest.approx(mf.chi1, rel=2e-3)


def test_mean_field_zero_input_is_linear():
    # below σ_w² = 1 with no input the fixed point is q* = 0, so χ₁ = σ_w²
    mf = mean_field_tanh(0.5)
    assert mf.q_star == pytest.approx(0.0, abs=1e-12) and mf.chi1 == pytest.approx(0.5)


def test_mean_field_chi1_matches_large_random_rnn():
    """χ₁ against a simulated Gaussian tanh RNN: ‖∂h_T/∂h_{T−k}‖_F²/n per step."""
    n, d, T, B = 400, 20, 60, 4
    sw, sv, sb = 1.5, 1.0, 0.3
    p = init_params("rnn", n, d, scheme="gaussian", sigma_w=sw, sigma_v=sv, sigma_b=sb, seed=3)
    mf_nominal = mean_field_tanh(sw ** 2, sv ** 2, sb ** 2)
    mf = mean_field_from_params(p)
    assert mf.chi1 == pytest.approx(mf_nominal.chi1, rel=0.05)
    x = make_inputs(T, B, d, seed=4)
    res = all_lags("rnn", p, x, norms=("frobenius",))
    med = summarize(res.blocks["h/h"]["log10_frobenius"]).median
    fit = fit_decay(res.lags, med, start=5)  # skip the transient from h_0 = 0
    measured_chi1 = 10 ** (2 * fit.slope)
    assert measured_chi1 == pytest.approx(mf.chi1, rel=0.1)
    np.testing.assert_allclose(med[10:50], mf.log10_norm(res.lags, n)[10:50], atol=0.5)


def test_pascanu_bound_holds_and_matches_norm_of_U():
    n, d, T = 8, 3, 30
    p = init_params("rnn", n, d, scheme="gaussian", sigma_w=2.0, seed=0)
    res = all_lags("rnn", p, make_inputs(T, 3, d, seed=1))
    for norm in ("frobenius", "spectral"):
        bound = pascanu_bound(p["U"], res.lags, norm=norm)
        assert np.all(res.blocks["h/h"][f"log10_{norm}"] <= bound[:, None] + 1e-9)
    s = np.linalg.svd(p["U"], compute_uv=False)[0]
    np.testing.assert_allclose(pascanu_bound(p["U"], [1, 2], norm="spectral"),
                               [math.log10(s), 2 * math.log10(s)])
    # with U = 0 the RNN's Jacobian is exactly zero and the bound is −inf
    assert np.all(np.isneginf(pascanu_bound(np.zeros((3, 3)), [1, 2])))


# -- theory e-folding lags agree with a fit of the theory's own curve -------------------------
@pytest.mark.parametrize("sigma_w2", [0.3, 0.8, 1.5])
def test_mean_field_efold_is_the_fit_of_its_curve(sigma_w2):
    from gateflow.analysis._analysis import fit_decay

    mf = mean_field_tanh(sigma_w2, input_var=0.5)
    lags = np.arange(1, 60)
    fit = fit_decay(lags, mf.log10_norm(lags, 16))
    assert mf.factor == pytest.approx(fit.factor)
    if mf.chi1 < 1:
        assert mf.efold_lag > 0
        assert mf.efold_lag == pytest.approx(fit.efold)
        # after one e-folding lag the predicted norm has fallen by exactly e
        drop = mf.log10_norm([mf.efold_lag], 16)[0] - mf.log10_norm([0.0], 16)[0]
        assert drop == pytest.approx(-1 / math.log(10))
    else:
        assert mf.efold_lag is None


@pytest.mark.parametrize("bias", [-2.0, 0.0, 1.0, 3.0, 8.0])
def test_gate_theory_efold_is_the_fit_of_the_gate_path(bias):
    from gateflow.analysis._analysis import fit_decay, gate_theory

    g = gate_theory(bias)
    lags = np.arange(1, int(10 * g.efold) + 2)  # long enough to fall by ~4 decades
    fit = fit_decay(lags, gate_path(lags, bias, 4))
    assert fit.regime == "vanishing"
    assert g.factor == pytest.approx(1 / (1 + math.exp(-bias)))
    assert g.factor == pytest.approx(fit.factor)
    assert g.efold > 0 and g.efold == pytest.approx(fit.efold, rel=1e-6)
    assert g.timescale == pytest.approx(1 + math.exp(bias))


def test_fit_batch_is_the_fit_of_the_median():
    from gateflow.analysis._analysis import fit_batch, fit_decay

    rng = np.random.default_rng(0)
    logs = -0.3 * np.arange(1, 21)[:, None] + rng.normal(size=(20, 5))
    assert fit_batch(logs) == fit_decay(np.arange(1, 21), np.median(logs, axis=1))

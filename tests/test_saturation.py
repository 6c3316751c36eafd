"""Saturated gates: tiny Jacobian entries stay accurate (no rounding to an exact zero)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gateflow import all_lags, init_params, make_inputs


def _zero_params(cell: str, n: int, d: int) -> dict:
    return {k: np.zeros_like(v) for k, v in init_params(cell, n, d).items()}


@pytest.mark.parametrize("b_f", [30.0, 50.0, 200.0])
def test_saturated_forget_gate_keeps_its_derivative(b_f):
    """Only U_f is nonzero, so ∂c_T/∂h_{T−1} = diag(c_{T−1} f (1 − f)) U_f exactly.

    With b_f = 50, f = σ(50) rounds to 1.0 and a naive 1 − f would be 0; the true
    f(1 − f) = σ(50)σ(−50) ≈ 1.9e−22 (and ≈ 1e−87 for b_f = 200)."""
    n, d, T = 3, 2, 5
    p = _zero_params("lstm", n, d)
    p["b_f"][:] = b_f
    p["b_i"][:], p["b_g"][:] = 0.0, 0.4  # i = 1/2, g = tanh(0.4): c grows by i g per step
    p["b_o"][:] = -800.0  # o = σ(−800) = 0 exactly, so h ≡ 0 and f = σ(b_f) exactly
    rng = np.random.default_rng(0)
    p["U_f"][:] = rng.normal(size=(n, n))
    x = make_inputs(T, 1, d, seed=1)
    res = all_lags("lstm", p, x, blocks=("c/h",), norms=("frobenius",))
    # independent closed form: c_{T−1} = (T − 1) i g with f = 1 to double precision
    c_prev = (T - 1) * 0.5 * math.tanh(0.4)
    f_one_minus_f = 1.0 / (2.0 + 2.0 * math.cosh(b_f))  # σ(b)σ(−b), no cancellation
    expected = math.log10(c_prev * f_one_minus_f * np.linalg.norm(p["U_f"]))
    got = res.blocks["c/h"]["log10_frobenius"][0, 0]
    assert np.isfinite(got)
    assert got == pytest.approx(expected, abs=1e-12)


def test_saturated_output_gate_and_tanh():
    """∂h_T/∂c_{T−1} = diag(o (1 − tanh² c_T) f) with o = σ(−60) ≈ 8.8e−27 and c_T large."""
    n, d, T = 2, 1, 3
    p = _zero_params("lstm", n, d)
    p["b_o"][:], p["b_f"][:], p["b_i"][:], p["b_g"][:] = -60.0, 0.0, 40.0, 20.0
    x = make_inputs(T, 1, d, seed=2)
    res = all_lags("lstm", p, x, blocks=("h/c",), norms=("frobenius",))
    f = 0.5
    c = [0.0]
    for _ in range(T):
        c.append(f * c[-1] + 1.0 * 1.0)  # i = σ(40) = 1, g = tanh(20) = 1 to double precision
    o = math.exp(-60.0) / (1 + math.exp(-60.0))
    sech2 = 1.0 / math.cosh(c[T]) ** 2
    expected = math.log10(math.sqrt(n) * o * sech2 * f)
    assert res.blocks["h/c"]["log10_frobenius"][0, 0] == pytest.approx(expected, abs=1e-12)


def test_diverging_forward_pass_is_a_clear_error():
    import gateflow

    n, d = 2, 1
    p = _zero_params("indrnn", n, d)
    p["u"][:], p["b"][:] = 1.5, 1.0  # h_t = 1.5 h_{t−1} + 1 overflows near t ≈ 1750
    x = make_inputs(2000, 1, d, dist="zeros")
    with pytest.raises(gateflow.GateflowError, match="diverged"):
        all_lags("indrnn", p, x)

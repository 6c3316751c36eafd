"""CuPy backend: the same numbers as NumPy (1e−10 in float64). Skips cleanly without a GPU."""

from __future__ import annotations

import numpy as np
import pytest

import gateflow
from gateflow.models._params import init_params, make_inputs
from gateflow.numeric._chain import all_lags

cupy = pytest.importorskip("cupy", reason="CuPy is not installed (extra 'gpu')")
try:
    _DEVICES = cupy.cuda.runtime.getDeviceCount()
except Exception:  # noqa: BLE001 - any CUDA failure means: no usable GPU here
    _DEVICES = 0
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(_DEVICES < 1, reason="no CUDA device visible")]


@pytest.mark.parametrize("cell", sorted(gateflow.CELLS))
def test_cupy_matches_numpy(cell):
    n, d, T, B = 6, 3, 12, 3
    params = init_params(cell, n, d, scheme="gaussian", sigma_w=1.3, sigma_b=0.4, seed=3)
    x = make_inputs(T, B, d, seed=4)
    ref = all_lags(cell, params, x, singular_lags=(1, T))
    gpu = all_lags(cell, params, x, singular_lags=(1, T), backend="cupy")
    for block, norms in ref.blocks.items():
        for key, value in norms.items():
            np.testing.assert_allclose(gpu.blocks[block][key], value, rtol=1e-10, atol=1e-12,
                                       err_msg=f"{cell} {block} {key}")
    for s, norms in ref.direct.items():
        for key, value in norms.items():
            np.testing.assert_allclose(gpu.direct[s][key], value, rtol=1e-10, atol=1e-12)
    for k, per_block in ref.singular_values.items():
        for block, sv in per_block.items():
            # Singular values below rounding relative to the largest are noise on any
            # backend: compare them on a linear scale, relative to the largest.
            top = 10.0 ** sv.max(axis=1, keepdims=True)
            zero = top[:, 0] == 0  # an exactly zero Jacobian (dead ReLU units): all −inf
            np.testing.assert_array_equal(gpu.singular_values[k][block][zero], sv[zero])
            np.testing.assert_allclose(10.0 ** gpu.singular_values[k][block][~zero] / top[~zero],
                                       10.0 ** sv[~zero] / top[~zero], rtol=0, atol=1e-10)


def test_cupy_float32_close_to_float64():
    params = init_params("lstm", 32, 8, seed=0)
    x = make_inputs(40, 4, 8, seed=1)
    ref = all_lags("lstm", params, x, blocks=("c/c",), norms=("frobenius",), backend="cupy")
    f32 = all_lags("lstm", params, x, blocks=("c/c",), norms=("frobenius",), backend="cupy",
                   dtype="float32")
    err = np.abs(f32.blocks["c/c"]["log10_frobenius"] - ref.blocks["c/c"]["log10_frobenius"])
    assert err.max() < 1e-4


def test_cupy_accepts_device_arrays_and_matches_numpy_with_s0_probe_and_spectral():
    n, d, T, B = 8, 3, 30, 4
    params = init_params("lstm", n, d, scheme="gaussian", sigma_w=1.2, seed=5)
    x = make_inputs(T, B, d, seed=6)
    rng = np.random.default_rng(7)
    s0 = {"h": rng.normal(size=(B, n)), "c": rng.normal(size=n)}
    probe = rng.normal(size=2 * n)
    ref = all_lags("lstm", params, x, s0=s0, probe=probe)
    gpu = all_lags("lstm", params, cupy.asarray(x), backend="cupy", probe=cupy.asarray(probe),
                   s0={k: cupy.asarray(v) for k, v in s0.items()})
    np.testing.assert_allclose(gpu.probe, ref.probe, rtol=1e-10, atol=1e-12)
    for block, norms in ref.blocks.items():
        for key, value in norms.items():
            np.testing.assert_allclose(gpu.blocks[block][key], value, rtol=1e-10, atol=1e-12)
    f32 = all_lags("lstm", params, x, backend="cupy", dtype="float32", s0=s0)
    ref0 = all_lags("lstm", params, x, s0=s0)
    np.testing.assert_allclose(f32.blocks["c/c"]["log10_spectral"],
                               ref0.blocks["c/c"]["log10_spectral"], rtol=0, atol=1e-4)

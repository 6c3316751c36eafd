"""References for the Keras tests: Keras itself, and a float64 PyTorch step from raw arrays.

* Keras 3 on the torch backend, in float64 (the ``keras`` fixture): its layers' outputs, and
  its cells stepped under torch.autograd.
* :func:`keras_step`: a layer's step written from its raw variables (kernel (d, G·n),
  recurrent kernel (n, G·n), bias, in Keras's layout and gate order, never as gateflow maps
  them) with Keras's equations and the declared activations (:func:`activation`, written
  here from their definitions: Keras 2's hard_sigmoid is clip(0.2x + 0.5, 0, 1), Keras 3's
  relu6(x + 3)/6).

:func:`autograd_blocks` gives ∂X_T/∂Y_{T−k} for every lag and block from either: the
recurrence restarted from the state at T − k with that state as the leaf, row by row.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

RTOL = 1e-10  # relative error allowed on every Frobenius norm (float64 on both sides)
#: NumPy 2 warns when Keras converts its torch-backed variables (``get_weights`` etc.).
KERAS_WARNINGS = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")


@pytest.fixture(name="keras")
def keras_fixture(monkeypatch):
    """Keras on the torch backend, in float64 throughout.

    Keras 3 follows JAX's default promotion, which demotes 64-bit results to 32 bits
    (``keras.backend.result_type("float64", "float64") == "float32"``): ``keras.ops.matmul``
    of two float64 tensors is computed in float32, so Keras's own cells (SimpleRNN, GRU
    with reset_after=False, every cell called step by step) agree with a float64
    reference only to about 1e-7, while its fused torch LSTM/GRU paths are float64. The
    demotion table is emptied for the test, so that Keras computes its own equations in
    float64.
    """
    os.environ.setdefault("KERAS_BACKEND", "torch")
    pytest.importorskip("torch")
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "torch":
        pytest.skip("these checks call Keras cells on torch tensors: KERAS_BACKEND=torch")
    from keras.src.backend.common import dtypes

    if hasattr(dtypes, "BIT64_TO_BIT32_DTYPE"):
        monkeypatch.setattr(dtypes, "BIT64_TO_BIT32_DTYPE", {})
    if keras.backend.result_type("float64", "float64") != "float64":
        pytest.skip("this Keras computes float64 ops in float32; no float64 reference")
    floatx = keras.config.floatx()
    keras.config.set_floatx("float64")
    yield keras
    keras.config.set_floatx(floatx)


def keras_cells(layer) -> dict:
    """Direction -> the Keras cell that runs it."""
    if hasattr(layer, "forward_layer"):
        return {"forward": layer.forward_layer.cell, "reverse": layer.backward_layer.cell}
    return {"reverse" if layer.go_backwards else "forward": layer.cell}


def keras_outputs(layer, x: np.ndarray, direction: str, n: int) -> np.ndarray:
    """The layer's output for ``direction`` as gateflow's states s_1..s_T, (T, B, n): Keras
    returns a Bidirectional layer's backward half re-reversed to input order, and a plain
    go_backwards layer's outputs in the order it ran."""
    import torch

    y = layer(torch.from_numpy(x)).detach().numpy()  # (B, T, n·directions)
    if hasattr(layer, "forward_layer"):
        half = y[..., :n] if direction == "forward" else y[:, ::-1, n:]
    else:
        half = y
    return half.transpose(1, 0, 2)


def cell_step(cell):
    """A Keras cell as ``step(x_t, state tuple) -> state tuple``."""
    def step(x, s):
        _, new = cell(x, list(s), training=False)
        return tuple(new) if isinstance(new, (list, tuple)) else (new,)
    return step


def activation(spelling: str):
    """A Keras activation in gateflow's spelling, on torch tensors, from its definition."""
    import torch
    import torch.nn.functional as F

    table = {
        "sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu,
        "linear": lambda a: a,
        "softsign": lambda a: a / (1 + torch.abs(a)),
        "softplus": lambda a: torch.log1p(torch.exp(a)),
        "elu(1)": lambda a: torch.where(a > 0, a, torch.expm1(a)),
        "hard_sigmoid(0.2,0.5)": lambda a: torch.clamp(0.2 * a + 0.5, 0.0, 1.0),  # Keras 2
        "hard_sigmoid(1/6,0.5)": lambda a: F.relu6(a + 3.0) / 6.0,  # Keras 3
    }
    return table[spelling]


def keras_step(family: str, kernel, recurrent, bias, gate: str = "sigmoid",
               act: str = "tanh", reset_after: bool = True):
    """One Keras layer's step from its raw variables: ``step(x_t, state) -> state`` with
    state ``(h, c)`` for an LSTM and ``(h,)`` else. ``family`` is ``LSTM``, ``GRU`` or
    ``SimpleRNN``; ``bias`` is (G·n,), (2, G·n) for a reset-after GRU (input row, recurrent
    row), (2·G·n,) for a cuDNN layer (the same two rows end to end), or None."""
    import torch

    def t(a):
        return torch.as_tensor(np.asarray(a, dtype=np.float64))

    K, R = t(kernel), t(recurrent)
    n = R.shape[0]
    g = R.shape[1] // n
    rows = torch.zeros(1, g * n, dtype=torch.float64) if bias is None else \
        t(bias).reshape(-1, g * n)
    fg, fa = activation(gate), activation(act)

    if family == "LSTM":
        b = rows.sum(0)

        def lstm(x, s):
            h, c = s
            z = x @ K + h @ R + b
            i, f, cc, o = z.split(n, dim=-1)  # Keras: i, f, c, o
            c_new = fg(f) * c + fg(i) * fa(cc)
            return fg(o) * fa(c_new), c_new
        return lstm
    if family == "GRU":
        b_in, b_rec = rows[0], rows[1] if len(rows) == 2 else torch.zeros_like(rows[0])

        def gru(x, s):
            (h,) = s
            xz, xr, xh = (x @ K + b_in).split(n, dim=-1)  # Keras: z, r, h
            Rz, Rr, Rh = R.split(n, dim=-1)
            bz, br, bh = b_rec.split(n)
            z = fg(xz + h @ Rz + bz)
            r = fg(xr + h @ Rr + br)
            if reset_after:  # cuDNN's form: r on the recurrent term, its bias included
                hh = fa(xh + r * (h @ Rh + bh))
            else:  # Cho et al.: r on h before the recurrent kernel
                hh = fa(xh + (r * h) @ Rh)
            return (z * h + (1 - z) * hh,)
        return gru
    b = rows.sum(0)

    def simple(x, s):
        return (fa(x @ K + s[0] @ R + b),)
    return simple


def autograd_blocks(step, x: np.ndarray, n: int, names: tuple[str, ...]) -> dict:
    """∂X_T/∂Y_{T−k} by torch.autograd through ``step``: block ``"X/Y"`` -> (T, B)
    Frobenius norms, index k − 1 for lag k; ``x`` is (T, B, d) in the order the cell
    consumes it, and the state starts at zero."""
    import torch

    T, B = x.shape[:2]
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))
    trajectory = [tuple(torch.zeros(B, n, dtype=torch.float64) for _ in names)]
    with torch.no_grad():
        for t in range(T):
            trajectory.append(tuple(step(xt[t], trajectory[-1])))
    out = {f"{a}/{b}": np.zeros((T, B)) for a in names for b in names}
    for k in range(1, T + 1):
        start = tuple(s.detach().clone().requires_grad_(True) for s in trajectory[T - k])
        s = start
        for t in range(T - k, T):
            s = tuple(step(xt[t], s))
        for i, a in enumerate(names):
            rows: dict[str, list] = {b: [] for b in names}
            for unit in range(n):
                grads = torch.autograd.grad(s[i][:, unit].sum(), start, retain_graph=True,
                                            allow_unused=True)
                for j, b in enumerate(names):
                    g = grads[j]
                    rows[b].append(np.zeros((B, n)) if g is None else g.numpy())
            for b in names:
                out[f"{a}/{b}"][k - 1] = np.linalg.norm(np.stack(rows[b], axis=1), axis=(1, 2))
    return out


def states_of(family: str) -> tuple[str, ...]:
    return ("h", "c") if family.upper() == "LSTM" else ("h",)


def gateflow_run(cell: str, params: dict, x: np.ndarray, direction: str):
    """gateflow over x (B, T, d) in ``direction``: the reverse one reads x backwards.
    Returns (x as the cell consumes it, (T, B, d); the all-lags result with states)."""
    import gateflow

    xs = x.transpose(1, 0, 2)
    xs = np.ascontiguousarray(xs[::-1] if direction == "reverse" else xs)
    return xs, gateflow.all_lags(cell, params, xs, keep_states=True)


def worst_error(res, ref: dict) -> float:
    """The largest relative error of gateflow's Frobenius norms against ``ref`` over every
    block and lag; exact zeros must be exact zeros (-inf in log10) on both sides."""
    assert set(res.blocks) == set(ref)
    worst = 0.0
    for block, norms in ref.items():
        lg = res.blocks[block]["log10_frobenius"]
        zero = norms == 0
        assert np.all(np.isneginf(lg[zero])), (block, lg)
        assert zero.mean() < 0.5, (block, "mostly zero: a weak check")
        rel = np.abs(10.0 ** (lg[~zero] - np.log10(norms[~zero])) - 1.0)
        worst = max(worst, float(rel.max()))
    return worst


def max_decades(res, ref: dict, block: str) -> float:
    """max |Δlog10| of one block over every lag and sequence."""
    lg = res.blocks[block]["log10_frobenius"]
    return float(np.max(np.abs(lg - np.log10(ref[block]))))

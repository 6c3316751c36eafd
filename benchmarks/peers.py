"""Peer implementations of the all-lag LSTM Jacobian job, for benchmarking gateflow.

Written independently of gateflow's code. Every peer performs the *reference job*:

* LSTM in PyTorch convention, float64. Weights are numpy arrays in PyTorch layout:
  ``weight_ih`` (4n x d), ``weight_hh`` (4n x n), ``bias_ih`` (4n), ``bias_hh`` (4n),
  gate order i, f, g, o; i, f, o = sigmoid(.), g = tanh(.),
  c' = f*c + i*g, h' = o*tanh(c').
* Inputs ``x`` of shape (T, B, d), time-major; h0 = c0 = 0.
* Output ``L`` of shape (T, B): ``L[k-1, b] = log10 ||dc_T / dc_{T-k}||_F`` for k = 1..T,
  where d is the TOTAL derivative through the full state (h, c) and s_t is the state
  after t inputs (lag k = T is with respect to c_0).

Peers
-----
``jax_all_lags``      JAX: lax.scan forward with per-step additive perturbations of c,
                      one jitted ``vmap`` over the n rows of c_T of the ``vjp``.
``torch_all_lags``    PyTorch autograd, ``torch.autograd.grad(..., is_grads_batched=True)``
                      with a batched identity as grad_outputs.
``numpy_reference_all_lags``  slow dense reference: products of 2n x 2n one-step Jacobians.
``blas_ceiling``      time of the plain GEMMs a structured chain needs (T GEMMs of
                      (B*n x 4n) @ (4n x n)); ``chain_flops`` counts their flops.

Command line (one peer per process, so that peak RSS is the peer's own)::

    python benchmarks/peers.py --peer jax|torch --weights W.npz --inputs X.npy --out L.npy

``W.npz`` holds the PyTorch names ``weight_ih_l0, weight_hh_l0, bias_ih_l0, bias_hh_l0``.
It prints one JSON line ``{"peer", "seconds_compute", "peak_rss_mb", ...}``.
``seconds_compute`` is the wall time of the peer call, JAX tracing/compilation
included (that is what a user pays for one job) but the framework import excluded
(reported as ``seconds_import``); ``--warm`` adds a second call and reports it as
``seconds_warm``.

``python benchmarks/peers.py`` (no arguments) runs the self-check: agreement of the
peers with the dense reference at n=8, B=3, T=12, then timings in fresh subprocesses.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

__all__ = [
    "jax_all_lags",
    "torch_all_lags",
    "numpy_reference_all_lags",
    "blas_ceiling",
    "chain_flops",
    "random_weights",
    "load_weights",
    "save_weights",
    "peak_rss_mb",
    "main",
]

_KEYS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
_TORCH_NAMES = {k: k + "_l0" for k in _KEYS}


# ----------------------------------------------------------------------------- helpers


def _unpack(weights):
    """Return (W_ih, W_hh, b) as float64 arrays; b = bias_ih + bias_hh.

    Accepts a mapping with keys ``weight_ih, weight_hh, bias_ih, bias_hh`` (the
    ``_l0``-suffixed PyTorch names are accepted too) or a 4-tuple in that order.
    """
    if isinstance(weights, (tuple, list)):
        w_ih, w_hh, b_ih, b_hh = weights
    else:
        def get(k):
            if k in weights:
                return weights[k]
            if _TORCH_NAMES[k] in weights:
                return weights[_TORCH_NAMES[k]]
            raise KeyError(f"weights lack {k!r} (or {_TORCH_NAMES[k]!r})")

        w_ih, w_hh, b_ih, b_hh = (get(k) for k in _KEYS)
    w_ih = np.asarray(w_ih, dtype=np.float64)
    w_hh = np.asarray(w_hh, dtype=np.float64)
    b = np.asarray(b_ih, dtype=np.float64) + np.asarray(b_hh, dtype=np.float64)
    four_n, n = w_hh.shape
    if four_n != 4 * n:
        raise ValueError(f"weight_hh must be (4n, n), got {w_hh.shape}")
    if w_ih.shape[0] != 4 * n or b.shape != (4 * n,):
        raise ValueError("weight_ih / biases do not match weight_hh")
    return w_ih, w_hh, b


def _check_x(x, d):
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 3 or x.shape[2] != d:
        raise ValueError(f"x must be (T, B, {d}), got {x.shape}")
    return x


def random_weights(n, d, seed=0, scale=None):
    """PyTorch-like init: U(-1/sqrt(n), 1/sqrt(n)) (or U(-scale, scale))."""
    rng = np.random.default_rng(seed)
    s = 1.0 / np.sqrt(n) if scale is None else scale
    return {
        "weight_ih": rng.uniform(-s, s, (4 * n, d)),
        "weight_hh": rng.uniform(-s, s, (4 * n, n)),
        "bias_ih": rng.uniform(-s, s, 4 * n),
        "bias_hh": rng.uniform(-s, s, 4 * n),
    }


def save_weights(path, weights):
    np.savez(path, **{_TORCH_NAMES[k]: np.asarray(weights[k], np.float64) for k in _KEYS})


def load_weights(path):
    with np.load(path) as z:
        return {k: np.array(z[_TORCH_NAMES[k]], dtype=np.float64) for k in _KEYS}


def peak_rss_mb():
    """Peak resident set size of this process in MiB (ru_maxrss is KiB on Linux)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / (1024.0 * 1024.0) if sys.platform == "darwin" else r / 1024.0


def _sigmoid(a):
    return 0.5 * (1.0 + np.tanh(0.5 * a))


# ----------------------------------------------------------------------------- JAX

_JAX_FN = None


def _jax_fn():
    global _JAX_FN
    if _JAX_FN is not None:
        return _JAX_FN
    try:
        import jax
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "jax_all_lags needs JAX: pip install 'jax[cpu]' (or a CUDA build)"
        ) from e
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    from jax import lax

    def all_lags(w_ih, w_hh, b, x):
        T, B, _ = x.shape
        n = w_hh.shape[1]
        xp = jnp.einsum("tbd,gd->tbg", x, w_ih) + b  # input projections, (T, B, 4n)
        w_hh_t = w_hh.T

        def c_T(eps):  # eps: (T, B, n), eps[t] perturbs c_t (state after t inputs)
            def step(carry, inp):
                h, c = carry
                xp_t, e_t = inp
                c = c + e_t
                a = xp_t + h @ w_hh_t
                i = jax.nn.sigmoid(a[:, :n])
                f = jax.nn.sigmoid(a[:, n:2 * n])
                g = jnp.tanh(a[:, 2 * n:3 * n])
                o = jax.nn.sigmoid(a[:, 3 * n:])
                c = f * c + i * g
                h = o * jnp.tanh(c)
                return (h, c), None

            z = jnp.zeros((B, n), x.dtype)
            (_, c), _ = lax.scan(step, (z, z), (xp, eps))
            return c

        eps0 = jnp.zeros((T, B, n), x.dtype)
        _, vjp_fn = jax.vjp(c_T, eps0)  # one forward pass, shared by all rows
        # cotangent for row a: e_a in every sequence b (sequences are independent)
        cts = jnp.broadcast_to(jnp.eye(n, dtype=x.dtype)[:, None, :], (n, B, n))
        (grads,) = jax.vmap(vjp_fn)(cts)  # (n, T, B, n): d c_T[b, a] / d c_t[b, j]
        fro = jnp.sqrt(jnp.sum(grads * grads, axis=(0, 3)))  # (T, B), index t
        return jnp.log10(fro[::-1])  # L[k-1] = lag k = t = T-k

    _JAX_FN = jax.jit(all_lags)
    return _JAX_FN


def jax_all_lags(weights, x):
    """All-lag log10 Frobenius norms ``L`` (T, B) with JAX (jit + scan + vmap(vjp))."""
    fn = _jax_fn()
    w_ih, w_hh, b = _unpack(weights)
    x = _check_x(x, w_ih.shape[1])
    out = fn(w_ih, w_hh, b, x)
    return np.asarray(out.block_until_ready(), dtype=np.float64)


# ----------------------------------------------------------------------------- PyTorch


def torch_all_lags(weights, x):
    """All-lag log10 Frobenius norms ``L`` (T, B) with PyTorch batched autograd."""
    try:
        import torch
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("torch_all_lags needs PyTorch: pip install torch") from e
    w_ih, w_hh, b = _unpack(weights)
    x = _check_x(x, w_ih.shape[1])
    T, B, _ = x.shape
    n = w_hh.shape[1]
    dt = torch.float64
    W_ih = torch.from_numpy(w_ih)
    W_hh_t = torch.from_numpy(w_hh).t()
    bias = torch.from_numpy(b)
    X = torch.from_numpy(x)
    with torch.no_grad():
        xp = torch.einsum("tbd,gd->tbg", X, W_ih) + bias  # (T, B, 4n), constant
    # one leaf per step (a separate tensor each, so the backward pass does not
    # scatter into a shared (T, B, n) buffer at every step)
    eps = [torch.zeros(B, n, dtype=dt, requires_grad=True) for _ in range(T)]
    h = torch.zeros(B, n, dtype=dt)
    c = torch.zeros(B, n, dtype=dt)
    for t in range(T):
        c = c + eps[t]  # c_t made differentiable
        a = torch.addmm(xp[t], h, W_hh_t)
        i, f, g, o = a.chunk(4, dim=1)
        i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
        c = f * c + i * g
        h = o * torch.tanh(c)
    cts = torch.eye(n, dtype=dt)[:, None, :].expand(n, B, n).contiguous()
    grads = torch.autograd.grad(c, eps, grad_outputs=cts, is_grads_batched=True)
    # grads[t]: (n, B, n) = d c_T[b, a] / d c_t[b, j]
    fro = torch.stack([gr.square().sum(dim=(0, 2)) for gr in grads]).sqrt()  # (T, B)
    return torch.log10(fro).flip(0).numpy()


# ----------------------------------------------------------------------------- numpy reference


def numpy_reference_all_lags(weights, x):
    """Slow, dense reference: products of full 2n x 2n one-step Jacobians.

    State ordering s = (h, c). One-step blocks (REFERENCES.md, LSTM):
      dc'/dc = D(f)
      dc'/dh = D(c f (1-f)) U_f + D(g i (1-i)) U_i + D(i (1-g^2)) U_g
      dh'/dc = D(o (1 - tanh^2 c')) D(f)
      dh'/dh = D(tanh(c') o (1-o)) U_o + D(o (1 - tanh^2 c')) dc'/dh
    """
    w_ih, w_hh, b = _unpack(weights)
    x = _check_x(x, w_ih.shape[1])
    T, B, _ = x.shape
    n = w_hh.shape[1]
    U_i, U_f, U_g, U_o = (w_hh[k * n:(k + 1) * n] for k in range(4))
    L = np.empty((T, B))
    for bb in range(B):
        h = np.zeros(n)
        c = np.zeros(n)
        jacs = []  # jacs[t] = d s_{t+1} / d s_t
        for t in range(T):
            a = w_ih @ x[t, bb] + b + w_hh @ h
            i = _sigmoid(a[:n])
            f = _sigmoid(a[n:2 * n])
            g = np.tanh(a[2 * n:3 * n])
            o = _sigmoid(a[3 * n:])
            c_new = f * c + i * g
            tc = np.tanh(c_new)
            dc_dc = np.diag(f)
            dc_dh = ((c * f * (1 - f))[:, None] * U_f
                     + (g * i * (1 - i))[:, None] * U_i
                     + (i * (1 - g * g))[:, None] * U_g)
            k_ = o * (1 - tc * tc)
            dh_dc = k_[:, None] * dc_dc
            dh_dh = (tc * o * (1 - o))[:, None] * U_o + k_[:, None] * dc_dh
            J = np.block([[dh_dh, dh_dc], [dc_dh, dc_dc]])
            jacs.append(J)
            h, c = o * tc, c_new
        # R = d c_T / d s_t, rows of c only; walk back from t = T
        R = np.hstack([np.zeros((n, n)), np.eye(n)])
        for k in range(1, T + 1):
            R = R @ jacs[T - k]  # now d c_T / d s_{T-k}
            L[k - 1, bb] = np.log10(np.linalg.norm(R[:, n:]))
    return L


# ----------------------------------------------------------------------------- BLAS ceiling


def chain_flops(n, B, T):
    """Flops of the structured chain: per step one (B*n x 4n) @ (4n x n) GEMM."""
    return 2 * B * n * 4 * n * n * T


def blas_ceiling(n, B, T, dtype=np.float64):
    """Best-of-3 wall time (s) of T plain GEMMs (B*n x 4n) @ (4n x n) in numpy."""
    rng = np.random.default_rng(0)
    A = rng.standard_normal((B * n, 4 * n)).astype(dtype)
    W = rng.standard_normal((4 * n, n)).astype(dtype)
    out = np.empty((B * n, n), dtype=dtype)
    np.matmul(A, W, out=out)  # warm-up
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _t in range(T):
            np.matmul(A, W, out=out)
        best = min(best, time.perf_counter() - t0)
    return best


# ----------------------------------------------------------------------------- CLI

PEERS = {"jax": jax_all_lags, "torch": torch_all_lags, "numpy": numpy_reference_all_lags}


def main(argv=None):
    p = argparse.ArgumentParser(description="Run one all-lag LSTM Jacobian peer.")
    p.add_argument("--peer", required=True, choices=sorted(PEERS))
    p.add_argument("--weights", required=True, help=".npz with weight_ih_l0, weight_hh_l0, "
                   "bias_ih_l0, bias_hh_l0")
    p.add_argument("--inputs", required=True, help=".npy of shape (T, B, d)")
    p.add_argument("--out", required=True, help="where to save L (T, B) as .npy")
    p.add_argument("--warm", action="store_true",
                   help="run a second time and report it as seconds_warm")
    a = p.parse_args(argv)
    weights = load_weights(a.weights)
    x = np.load(a.inputs)
    fn = PEERS[a.peer]
    # import the framework before the clock starts (reported separately)
    t0 = time.perf_counter()
    if a.peer == "jax":
        _jax_fn()
    elif a.peer == "torch":
        import torch  # noqa: F401
    secs_import = time.perf_counter() - t0
    t0 = time.perf_counter()
    L = fn(weights, x)
    secs = time.perf_counter() - t0
    rec = {"peer": a.peer, "seconds_compute": secs, "seconds_import": secs_import}
    if a.warm:
        t0 = time.perf_counter()
        L = fn(weights, x)
        rec["seconds_warm"] = time.perf_counter() - t0
    np.save(a.out, L)
    rec["peak_rss_mb"] = peak_rss_mb()
    T, B, _ = x.shape
    rec.update(n=int(weights["weight_hh"].shape[1]), B=int(B), T=int(T))
    print(json.dumps(rec), flush=True)
    return 0


def _run_subprocess(peer, weights, x, warm=True):
    with tempfile.TemporaryDirectory() as tmp:
        wp, xp, op = (os.path.join(tmp, f) for f in ("w.npz", "x.npy", "L.npy"))
        save_weights(wp, weights)
        np.save(xp, x)
        cmd = [sys.executable, os.path.abspath(__file__), "--peer", peer,
               "--weights", wp, "--inputs", xp, "--out", op]
        if warm:
            cmd.append("--warm")
        r = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rec = json.loads(r.stdout.strip().splitlines()[-1])
        return rec, np.load(op)


def _self_check():
    # 1) agreement at n=8, B=3, T=12
    n, B, T, d = 8, 3, 12, 5
    rng = np.random.default_rng(1)
    w = random_weights(n, d, seed=2, scale=0.8)
    x = rng.standard_normal((T, B, d))
    ref = numpy_reference_all_lags(w, x)
    Lj = jax_all_lags(w, x)
    Lt = torch_all_lags(w, x)
    nref = 10.0 ** ref
    err_j = float(np.max(np.abs(10.0 ** Lj - nref) / nref))
    err_t = float(np.max(np.abs(10.0 ** Lt - nref) / nref))
    print(f"agreement n={n} B={B} T={T}: max rel err of norms  jax={err_j:.2e}  "
          f"torch={err_t:.2e}  (log10 norms span {ref.min():.2f}..{ref.max():.2f})")
    assert err_j < 1e-10 and err_t < 1e-10, (err_j, err_t)
    # closed form: zero weights -> dc_T/dc_{T-k} = sigmoid(b_f)^k I
    w0 = {k: np.zeros_like(v) for k, v in w.items()}
    w0["bias_hh"][n:2 * n] = 0.7
    sf = 1.0 / (1.0 + np.exp(-0.7))
    closed = np.log10(np.sqrt(n) * sf ** np.arange(1, T + 1))[:, None] * np.ones(B)
    for name, f in PEERS.items():
        e = np.max(np.abs(f(w0, x) - closed))
        assert e < 1e-12, (name, e)
    print("closed form (zero weights, sigmoid(b_f)^k I): all peers agree")

    # 2) timings, each peer in a fresh process (clean peak RSS)
    sizes = [(128, 16, 100)]
    if "--big" in sys.argv:
        sizes.append((256, 8, 200))
    for n, B, T in sizes:
        d = n
        w = random_weights(n, d, seed=3)
        x = np.random.default_rng(4).standard_normal((T, B, d))
        ceil = blas_ceiling(n, B, T)
        print(f"n={n} B={B} T={T}: chain GEMM ceiling {ceil:.3f} s "
              f"({chain_flops(n, B, T) / ceil / 1e9:.1f} GFLOP/s)")
        outs = {}
        for peer in ("jax", "torch"):
            rec, L = _run_subprocess(peer, w, x)
            outs[peer] = L
            print(f"  {peer:5s}: import {rec['seconds_import']:.2f} s, "
                  f"first call {rec['seconds_compute']:.3f} s, "
                  f"warm {rec['seconds_warm']:.3f} s, peak RSS {rec['peak_rss_mb']:.0f} MiB")
        rel = np.max(np.abs(10.0 ** outs["jax"] / 10.0 ** outs["torch"] - 1.0))
        print(f"  jax vs torch max rel diff of norms: {rel:.2e}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] != "--big":
        sys.exit(main())
    _self_check()

"""An independent float64 reference for trained recurrent models as they ship.

Nothing here imports gateflow. The raw arrays are read from the file without running any
code from it (h5py for Keras files, ``torch.load(weights_only=True)`` for ``torch.save``
files, NumPy for ``.npz``, ``onnx.numpy_helper`` for ONNX initializers, and a restricted
unpickler of our own for TorchScript archives: every class it meets is a stub, no class of
the archive is imported); each cell's step is written here from the framework's documented
semantics, in the framework's own layout and gate order:

* Keras 2 ``LSTM``: kernel (d, 4n), recurrent kernel (n, 4n), bias (4n,), gates i, f, c, o;
  Keras 2's ``hard_sigmoid`` is clip(0.2 x + 0.5, 0, 1) (its default
  ``recurrent_activation``). ``CuDNNLSTM``: the same layout with a bias of 8n, the input
  biases then the recurrent ones, which cuDNN adds; sigmoid gates, tanh (fixed).
* PyTorch ``nn.LSTM``/``nn.LSTMCell``: weight_ih (4n, d), weight_hh (4n, n), gates i, f, g,
  o, bias = bias_ih + bias_hh. ``nn.GRU``: (3n, ·), gates r, z, n, the reset applied after
  the recurrent product: n = tanh(W_n x + b_in + r ⊙ (U_n h + b_hn)), h' = (1 − z) n + z h.
* ONNX ``LSTM``: W (D, 4n, d), R (D, 4n, n), B (D, 8n), gates i, o, f, c.
  ``com.microsoft`` ``DynamicQuantizeLSTM``: W (D, d, 4n) and R (D, n, 4n) as 8-bit integers
  (transposed against ``LSTM``), each dequantized as (q − zero_point) · scale with one scale
  per direction or per output channel.

:func:`reference` gives ∂S_T/∂S_{T−k} = J_T ⋯ J_{T−k+1} for every lag k = 1..T, where
J_t = ∂S_t/∂S_{t−1} comes from ``torch.autograd.functional.jacobian`` of the step, one
sequence at a time: {block "X/Y": (T, B) log10 Frobenius norm}, row k − 1 for lag k,
``-inf`` where the block is exactly zero (gateflow's ``all_lags`` layout).
"""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path

import numpy as np


def _torch():
    import torch

    return torch


def _t(a):
    return _torch().as_tensor(np.asarray(a, dtype=np.float64))


# -- activations -------------------------------------------------------------------------
def sigmoid(a):
    return _torch().sigmoid(a)


def tanh(a):
    return _torch().tanh(a)


def hard_sigmoid_keras2(a):
    """Keras 2's ``hard_sigmoid`` (backend ``K.hard_sigmoid``): clip(0.2 x + 0.5, 0, 1)."""
    return _torch().clamp(0.2 * a + 0.5, 0.0, 1.0)


# -- cells -------------------------------------------------------------------------------
class LSTM:
    """c' = f ⊙ c + i ⊙ g, h' = o ⊙ out(c'); per-gate W (n, d), U (n, n), b (n,), gates
    'ifgo'; ``gate`` for i, f, o, ``cand`` for g, ``out`` for h. State [h, c]."""

    def __init__(self, W, U, b, gate=sigmoid, cand=tanh, out=tanh):
        self.W = {k: _t(v) for k, v in W.items()}
        self.U = {k: _t(v) for k, v in U.items()}
        self.b = {k: _t(v) for k, v in b.items()}
        self.n = self.U["i"].shape[0]
        self.gate, self.cand, self.out = gate, cand, out
        self.blocks = (("h", self.n), ("c", self.n))

    @property
    def size(self) -> int:
        return 2 * self.n

    def step(self, S, x):
        n = self.n
        h, c = S[:n], S[n:]
        pre = {k: self.W[k] @ x + self.U[k] @ h + self.b[k] for k in "ifgo"}
        i, f, o = (self.gate(pre[k]) for k in "ifo")
        c2 = f * c + i * self.cand(pre["g"])
        return _torch().cat([o * self.out(c2), c2])

    def output(self, S):
        return S[: self.n]


class GRU:
    """PyTorch's GRU (reset after the recurrent product); per-gate W, U, input and
    recurrent biases, gates 'rzn'. State [h]."""

    def __init__(self, W, U, bi, bh):
        self.W = {k: _t(v) for k, v in W.items()}
        self.U = {k: _t(v) for k, v in U.items()}
        self.bi = {k: _t(v) for k, v in bi.items()}
        self.bh = {k: _t(v) for k, v in bh.items()}
        self.n = self.U["r"].shape[0]
        self.blocks = (("h", self.n),)

    @property
    def size(self) -> int:
        return self.n

    def step(self, h, x):
        torch = _torch()
        r = torch.sigmoid(self.W["r"] @ x + self.bi["r"] + self.U["r"] @ h + self.bh["r"])
        z = torch.sigmoid(self.W["z"] @ x + self.bi["z"] + self.U["z"] @ h + self.bh["z"])
        cand = torch.tanh(self.W["n"] @ x + self.bi["n"] + r * (self.U["n"] @ h + self.bh["n"]))
        return (1 - z) * cand + z * h

    def output(self, S):
        return S


class Stack:
    """Layers in order within one step, layer l + 1 reading layer l's new h (the stack as
    one recurrence); state blocks '<block>_l<l>'."""

    def __init__(self, cells):
        self.cells = cells
        self.blocks = tuple((f"{b}_l{k}", m) for k, c in enumerate(cells) for b, m in c.blocks)
        self.offsets = np.cumsum([0] + [c.size for c in cells])

    @property
    def size(self) -> int:
        return int(self.offsets[-1])

    def step(self, S, x):
        out, inp = [], x
        for k, c in enumerate(self.cells):
            s2 = c.step(S[self.offsets[k]: self.offsets[k + 1]], inp)
            out.append(s2)
            inp = c.output(s2)
        return _torch().cat(out)


# -- the sweep ---------------------------------------------------------------------------
def reference(cell, x) -> dict[str, np.ndarray]:
    """{"X/Y": (T, B) log10 ‖∂X_T/∂Y_{T−k}‖_F} for k = 1..T over time-major ``x`` (T, B, d),
    from zero states; ``-inf`` where the block is exactly zero."""
    torch = _torch()
    x = np.asarray(x, dtype=np.float64)
    T, B, _ = x.shape
    names = [b for b, _ in cell.blocks]
    ends = np.cumsum([0] + [m for _, m in cell.blocks])
    rows = {b: slice(int(ends[j]), int(ends[j + 1])) for j, b in enumerate(names)}
    out = {f"{a}/{b}": np.empty((T, B)) for a in names for b in names}
    for j in range(B):
        S = torch.zeros(cell.size, dtype=torch.float64)
        jacobians = []
        for t in range(T):
            xt = torch.as_tensor(x[t, j].copy())
            jacobians.append(torch.autograd.functional.jacobian(
                lambda s, xt=xt: cell.step(s, xt), S, vectorize=True))
            with torch.no_grad():
                S = cell.step(S, xt)
        G = torch.eye(cell.size, dtype=torch.float64)
        for k in range(1, T + 1):
            G = G @ jacobians[T - k]
            for a in names:
                for b in names:
                    v = torch.linalg.norm(G[rows[a], rows[b]]).item()
                    out[f"{a}/{b}"][k - 1, j] = np.log10(v) if v > 0 else -np.inf
    return out


def outputs(cell, x) -> np.ndarray:
    """The outputs h_t (T, B, n) of ``cell`` over time-major ``x`` from zero states (what
    the layer above reads)."""
    torch = _torch()
    x = np.asarray(x, dtype=np.float64)
    T, B, _ = x.shape
    out = []
    with torch.no_grad():
        for j in range(B):
            S = torch.zeros(cell.size, dtype=torch.float64)
            hs = []
            for t in range(T):
                S = cell.step(S, torch.as_tensor(x[t, j].copy()))
                hs.append(cell.output(S).numpy().copy())
            out.append(np.stack(hs))
    return np.stack(out, axis=1)


def max_log10_error(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> float:
    """max |Δlog10| over every block, lag and sequence; asserts the same blocks (a block
    gateflow leaves out must be exactly zero in the reference) and the same exact zeros."""
    assert set(got) <= set(want), sorted(set(got) - set(want))
    for block in set(want) - set(got):
        assert np.all(np.isneginf(want[block])), f"block {block} missing, not zero"
    worst = 0.0
    for block, w in want.items():
        if block not in got:
            continue
        g = np.asarray(got[block], dtype=np.float64)
        assert g.shape == w.shape, (block, g.shape, w.shape)
        assert np.array_equal(np.isneginf(g), np.isneginf(w)), f"zeros differ in {block}"
        ok = np.isfinite(w)
        assert np.all(np.isfinite(g[ok])), block
        if ok.any():
            worst = max(worst, float(np.max(np.abs(g[ok] - w[ok]))))
    return worst


# -- cells from raw arrays ---------------------------------------------------------------
def keras_lstm(kernel, recurrent_kernel, bias, gate=sigmoid) -> LSTM:
    """Keras LSTM (i, f, c, o); a CuDNNLSTM's bias of 8n is the sum of its halves."""
    K = np.asarray(kernel, np.float64)
    R = np.asarray(recurrent_kernel, np.float64)
    b = np.asarray(bias, np.float64)
    n = R.shape[0]
    if b.shape[0] == 8 * n:
        b = b[: 4 * n] + b[4 * n:]
    cols = {k: slice(j * n, (j + 1) * n) for j, k in enumerate("ifgo")}
    return LSTM({k: K[:, s].T for k, s in cols.items()}, {k: R[:, s].T for k, s in cols.items()},
                {k: b[s] for k, s in cols.items()}, gate=gate)


def torch_lstm(w_ih, w_hh, b_ih, b_hh) -> LSTM:
    """PyTorch LSTM (i, f, g, o), bias_ih + bias_hh."""
    Wi, Wh = np.asarray(w_ih, np.float64), np.asarray(w_hh, np.float64)
    n = Wh.shape[1]
    b = np.asarray(b_ih, np.float64) + np.asarray(b_hh, np.float64)
    rows = {k: slice(j * n, (j + 1) * n) for j, k in enumerate("ifgo")}
    return LSTM({k: Wi[s] for k, s in rows.items()}, {k: Wh[s] for k, s in rows.items()},
                {k: b[s] for k, s in rows.items()})


def torch_gru(w_ih, w_hh, b_ih, b_hh) -> GRU:
    """PyTorch GRU (r, z, n)."""
    Wi, Wh = np.asarray(w_ih, np.float64), np.asarray(w_hh, np.float64)
    bi, bh = np.asarray(b_ih, np.float64), np.asarray(b_hh, np.float64)
    n = Wh.shape[1]
    rows = {k: slice(j * n, (j + 1) * n) for j, k in enumerate("rzn")}
    return GRU({k: Wi[s] for k, s in rows.items()}, {k: Wh[s] for k, s in rows.items()},
               {k: bi[s] for k, s in rows.items()}, {k: bh[s] for k, s in rows.items()})


def onnx_lstm(W, R, B, direction: int) -> LSTM:
    """ONNX LSTM direction ``direction`` (0 forward, 1 reverse): gates i, o, f, c."""
    W, R = np.asarray(W, np.float64)[direction], np.asarray(R, np.float64)[direction]
    n = R.shape[1]
    b = np.asarray(B, np.float64)[direction]
    b = b[: 4 * n] + b[4 * n:]
    rows = {k: slice(j * n, (j + 1) * n) for j, k in enumerate("iofg")}
    return LSTM({k: W[s] for k, s in rows.items()}, {k: R[s] for k, s in rows.items()},
                {k: b[s] for k, s in rows.items()})


def dequantize(q, scale, zero_point) -> np.ndarray:
    """A ``DynamicQuantizeLSTM`` weight (D, columns, 4n) of 8-bit integers → the float
    (D, 4n, columns) of an ONNX ``LSTM``: (q − zero_point) · scale, with scale and zero
    point (D,) per direction or (D, 4n) per output channel."""
    q = np.asarray(q, np.float64)
    D = q.shape[0]
    s = np.asarray(scale, np.float64).reshape(D, 1, -1)
    z = np.asarray(zero_point, np.float64).reshape(D, 1, -1)
    return np.ascontiguousarray(((q - z) * s).transpose(0, 2, 1))


# -- raw readers -------------------------------------------------------------------------
def keras_h5_weights(path, layer: str) -> dict[str, np.ndarray]:
    """A Keras 2 ``save_weights`` file's variables of ``layer`` by their short names
    (``kernel``, ``recurrent_kernel``, ``bias``), in the order its ``weight_names`` says."""
    import h5py

    with h5py.File(path, "r") as f:
        g = f[layer]
        names = [v.decode() if isinstance(v, bytes) else str(v) for v in g.attrs["weight_names"]]
        return {n.split("/")[-1].split(":")[0]: np.asarray(g[n], dtype=np.float64)
                for n in names}


def torch_state(path) -> dict:
    """A ``torch.save`` file, tensors only (``weights_only=True``): nothing of it runs."""
    return _torch().load(path, weights_only=True, map_location="cpu")


def onnx_initializers(path) -> tuple[object, dict[str, np.ndarray]]:
    """An ONNX model and its top-level initializers as arrays."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    return model, {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


_STORAGES = {"FloatStorage": np.float32, "DoubleStorage": np.float64,
             "HalfStorage": np.float16, "LongStorage": np.int64, "IntStorage": np.int32,
             "ByteStorage": np.uint8, "CharStorage": np.int8, "BoolStorage": np.bool_}


class _Stub:
    """Stands for every class a TorchScript pickle names; keeps its state only."""

    qualname = ""

    def __init__(self, *args, **kwargs):
        self.state = None

    def __setstate__(self, state):
        self.state = state


def torchscript_tensors(path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """({dotted.name: array} of every tensor attribute, {dotted.name: class}) of a
    ``torch.jit.save`` archive, read from its ``data.pkl`` by a restricted unpickler: every
    global is a stub or a storage reader of ours, nothing of the archive is run."""
    z = zipfile.ZipFile(path)
    pkl = next(n for n in z.namelist() if n.endswith("/data.pkl") and n.count("/") == 1)
    root = pkl[: -len("data.pkl")]

    def rebuild(storage, offset, size, stride, *_):
        return np.lib.stride_tricks.as_strided(
            storage[offset:], shape=tuple(size),
            strides=tuple(s * storage.itemsize for s in stride)).copy()

    class Restricted(pickle.Unpickler):
        def find_class(self, module, name):
            if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
                return rebuild
            if module == "torch" and name in _STORAGES:
                return name
            if (module, name) == ("collections", "OrderedDict"):
                return dict
            return type(name, (_Stub,), {"qualname": f"{module}.{name}"})

        def persistent_load(self, pid):
            _, kind, key, _location, _numel = pid
            return np.frombuffer(z.read(f"{root}data/{key}"), dtype=_STORAGES[kind])

    obj = Restricted(io.BytesIO(z.read(pkl))).load()
    tensors: dict[str, np.ndarray] = {}
    classes: dict[str, str] = {}

    def walk(o, prefix):
        if isinstance(o, _Stub):
            classes[prefix] = o.qualname
            for k, v in (o.state or {}).items():
                walk(v, f"{prefix}.{k}" if prefix else k)
        elif isinstance(o, np.ndarray):
            tensors[prefix] = o

    walk(obj, "")
    return tensors, classes


def fold_onnx_weights(model, node_name: str) -> dict[str, np.ndarray]:
    """W, R, B of the ``LSTM`` node ``node_name`` (in any subgraph), computed by ONNX's
    reference evaluator from the constant nodes and initializers that feed them."""
    import onnx

    def find(graph, chain):
        for node in graph.node:
            if node.name == node_name:
                return node, (*chain, graph)
            for a in node.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    hit = find(a.g, (*chain, graph))
                    if hit:
                        return hit
        return None

    node, chain = find(model.graph, ())
    return weights_from_constants(model, node, chain)


def weights_from_constants(model, node, chain) -> dict[str, np.ndarray]:
    """The node's W, R, B as ONNX's reference evaluator computes them from the nodes and
    initializers that produce them (looked up innermost graph first); ``chain``: the graphs
    that enclose the node, outermost first."""
    import onnx
    from onnx import helper
    from onnx.reference import ReferenceEvaluator

    wanted = [n for n in node.input[1:4] if n]
    nodes, inits, seen = [], {}, set()

    def need(name):
        if not name or name in seen:
            return
        seen.add(name)
        for g in reversed(chain):
            init = next((t for t in g.initializer if t.name == name), None)
            if init is not None:
                inits[name] = init
                return
            producer = next((p for p in g.node if name in p.output), None)
            if producer is not None:
                for i in producer.input:
                    need(i)
                if producer not in nodes:
                    nodes.append(producer)
                return
        raise AssertionError(f"{name!r} is not a constant of the model")

    for name in wanted:
        need(name)
    order = {id(p): j for g in chain for j, p in enumerate(g.node)}
    nodes.sort(key=lambda p: order[id(p)])
    graph = helper.make_graph(nodes, "weights", [], [
        helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in wanted],
        list(inits.values()))
    sub = helper.make_model(graph, opset_imports=list(model.opset_import))
    values = ReferenceEvaluator(sub).run(None, {})
    return dict(zip(("W", "R", "B"), (np.asarray(v, np.float64) for v in values)))


def data_path(*parts: str) -> Path:
    return Path(__file__).parent.joinpath("data", *parts)

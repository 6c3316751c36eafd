"""Quantized ONNX recurrent nodes: onnxruntime's ``com.microsoft`` ``DynamicQuantizeLSTM``
(what ``onnxruntime.quantization.quantize_dynamic`` makes of an LSTM), read as the
dequantized float LSTM and said so.

``tests/data/lstm_int8.onnx`` is a real one (``tests/data/make_lstm_int8.py``: a 2-layer
bidirectional ``nn.LSTM`` exported by ``torch.onnx.export`` and quantized per channel), with
the float weights it was made from in ``lstm_int8.npz``; it needs neither torch nor
onnxruntime to be read. The dequantized weights are checked against the file's integers
dequantized here, and against the original float weights (within half a quantization step:
the transposed layout and the gate order both have to be right for that); the decay against
float64 autograd through ``nn.LSTM`` loaded with the dequantized weights, every block at
every lag. With onnxruntime installed the same runs on models quantized here, per channel
and per direction (onnxruntime quantizes an LSTM to int8 whatever ``weight_type`` says);
nodes built with ``onnx.helper`` cover uint8 weights, nonzero zero points, and what is
refused.
"""

from __future__ import annotations

import re
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import gateflow  # noqa: E402
from gateflow.models.formats import _onnx  # noqa: E402

DATA = Path(__file__).parent / "data"
N = 4
INT8_LINE = "int8 weights dequantized: the analysis is of the dequantized float model"


def scan(path: Path):
    with open(path, "rb") as fh:
        return _onnx.scan(fh, path.stat().st_size, path)


def quantized_inputs(path: Path) -> list[dict[str, np.ndarray]]:
    """Each DynamicQuantizeLSTM node's W, R, B and scales and zero points, as stored."""
    m = onnx.load(str(path))
    stored = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    roles = ("X", "W", "R", "B", "seq", "h0", "c0", "P", "W_scale", "W_zero_point",
             "R_scale", "R_zero_point")
    return [{role: stored[name] for role, name in zip(roles, n.input) if name in stored}
            for n in m.graph.node if n.op_type == "DynamicQuantizeLSTM"]


def dequantize(q: np.ndarray, scale: np.ndarray, zero: np.ndarray) -> np.ndarray:
    """[nd, columns, 4n] integers -> [nd, 4n, columns] floats, per direction or channel."""
    out = np.empty((q.shape[0], q.shape[2], q.shape[1]))
    for k in range(q.shape[0]):
        s = np.broadcast_to(np.asarray(scale[k], np.float64), (q.shape[2],))
        z = np.broadcast_to(np.asarray(zero[k], np.float64), (q.shape[2],))
        for row in range(q.shape[2]):
            out[k, row] = (q[k, :, row].astype(np.float64) - z[row]) * s[row]
    return out


def onnx_arrays(raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The float LSTM (ONNX layout, gates i, o, f, c) the node dequantizes to."""
    return {"W": dequantize(raw["W"], raw["W_scale"], raw["W_zero_point"]),
            "R": dequantize(raw["R"], raw["R_scale"], raw["R_zero_point"]),
            "B": raw["B"].astype(np.float64)}


def check_weights(rec, arrays: dict[str, np.ndarray]) -> None:
    """The reader's weights are the dequantized arrays, each gate in its place."""
    for k, direction in enumerate(rec.directions):
        got = rec.weights(rec.cell, 0, direction)
        for j, g in enumerate("iofg"):
            rows = slice(j * N, (j + 1) * N)
            np.testing.assert_array_equal(got[f"W_{g}"], arrays["W"][k, rows])
            np.testing.assert_array_equal(got[f"U_{g}"], arrays["R"][k, rows])
            b = arrays["B"][k]
            np.testing.assert_array_equal(got[f"b_{g}"], b[rows] + b[4 * N:][rows])


def check_against_float(rec, raw, state: dict[str, np.ndarray], layer: int) -> None:
    """Within half a quantization step of the float weights the model was made from
    (PyTorch's gate order i, f, g, o)."""
    for k, direction in enumerate(rec.directions):
        got = rec.weights(rec.cell, 0, direction)
        suffix = f"_l{layer}" + ("_reverse" if direction == "reverse" else "")
        for m, ours, scale in (("ih", "W", raw["W_scale"][k]), ("hh", "U", raw["R_scale"][k])):
            full = state[f"weight_{m}{suffix}"]
            steps = np.broadcast_to(np.asarray(scale, np.float64), (4 * N,))
            for j, g in enumerate("ifgo"):  # PyTorch's order
                rows = slice(j * N, (j + 1) * N)
                err = np.abs(got[f"{ours}_{g}"] - full[rows])
                assert np.all(err <= steps[_onnx_rows(g)][:, None] / 2 + 1e-7), (m, g)


def _onnx_rows(g: str) -> slice:
    j = "iofg".index(g)
    return slice(j * N, (j + 1) * N)


def check_decay(rec, arrays: dict[str, np.ndarray], d: int) -> None:
    """Every block at every lag against autograd through nn.LSTM holding the dequantized
    weights (ONNX's i, o, f, c rows put back in PyTorch's i, f, g, o order)."""
    torch = pytest.importorskip("torch")
    from tests._onnx_ref import autograd_norms

    order = np.r_[0:N, 2 * N:3 * N, 3 * N:4 * N, N:2 * N]  # i, f, c(g), o from i, o, f, c
    x = np.random.default_rng(zlib.crc32(rec.module.encode())).normal(size=(6, 2, d))
    for k, direction in enumerate(rec.directions):
        one = torch.nn.LSTM(d, N).double()
        b = arrays["B"][k]
        with torch.no_grad():
            one.weight_ih_l0.copy_(torch.from_numpy(arrays["W"][k][order]))
            one.weight_hh_l0.copy_(torch.from_numpy(arrays["R"][k][order]))
            one.bias_ih_l0.copy_(torch.from_numpy(b[:4 * N][order]))
            one.bias_hh_l0.copy_(torch.from_numpy(b[4 * N:][order]))

        def step(xt, s, one=one):
            _, (h, c) = one(xt[None], (s["h"][None], s["c"][None]))
            return {"h": h[0], "c": c[0]}

        xs = np.ascontiguousarray(x if direction == "forward" else x[::-1])
        want = autograd_norms(step, ("h", "c"), xs, N)
        res = gateflow.all_lags(rec.cell, rec.weights(rec.cell, 0, direction), xs)
        for block, ref in want.items():
            got = 10.0 ** np.asarray(res.blocks[block]["log10_frobenius"])
            assert np.all(ref > 0)
            assert (np.abs(got - ref) / ref).max() < 1e-10, (rec.module, direction, block)


# -- the committed file -----------------------------------------------------------------------
def test_committed_int8_model_is_read_as_the_dequantized_lstm():
    path = DATA / "lstm_int8.onnx"
    found = scan(path)
    assert found.skipped == ()
    assert [(r.module, r.kind, r.cell, r.directions, r.hidden, r.input, r.layout)
            for r in found] == [
        ("/LSTM_quant", "DynamicQuantizeLSTM node", "lstm", ("forward", "reverse"), N, 3,
         "time-major"),
        ("/LSTM_1_quant", "DynamicQuantizeLSTM node", "lstm", ("forward", "reverse"), N, 2 * N,
         "time-major")]
    state = dict(np.load(DATA / "lstm_int8.npz"))
    for layer, (rec, raw) in enumerate(zip(found, quantized_inputs(path))):
        assert rec.assumed == (INT8_LINE,)
        assert "dequantized as (q - zero_point)*scale, per channel" in rec.note
        assert raw["W"].dtype == np.int8 and raw["W_scale"].shape == (2, 4 * N)
        check_weights(rec, onnx_arrays(raw))
        check_against_float(rec, raw, state, layer)


def test_committed_int8_model_decay_matches_autograd():
    path = DATA / "lstm_int8.onnx"
    for rec, raw in zip(scan(path), quantized_inputs(path)):
        check_decay(rec, onnx_arrays(raw), rec.input)


# -- made with onnx.helper: the layouts and what is refused ------------------------------------
def qlstm_model(raw: dict[str, np.ndarray], nd: int, **attrs) -> onnx.ModelProto:
    names = ["X", "W", "R", "B", "", "", "", "", "W_scale", "W_zero_point", "R_scale",
             "R_zero_point"]
    node = helper.make_node("DynamicQuantizeLSTM", names, ["Y"], domain="com.microsoft",
                            name="q", hidden_size=N,
                            direction="bidirectional" if nd == 2 else "forward", **attrs)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT,
                                                                      [5, 1, 3])],
                          [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(v, k) for k, v in raw.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17),
                                               helper.make_opsetid("com.microsoft", 1)])


def synthetic(nd: int, dtype, per_channel: bool, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    info = np.iinfo(dtype)
    shape = (nd, 4 * N) if per_channel else (nd,)
    return {"W": rng.integers(info.min, info.max + 1, (nd, 3, 4 * N)).astype(dtype),
            "R": rng.integers(info.min, info.max + 1, (nd, N, 4 * N)).astype(dtype),
            "B": rng.normal(0, 0.5, (nd, 8 * N)).astype(np.float32),
            "W_scale": rng.uniform(0.002, 0.01, shape).astype(np.float32),
            "W_zero_point": rng.integers(info.min // 8, info.max // 8, shape).astype(dtype),
            "R_scale": rng.uniform(0.002, 0.01, shape).astype(np.float32),
            "R_zero_point": rng.integers(info.min // 8, info.max // 8, shape).astype(dtype)}


@pytest.mark.parametrize(("nd", "dtype", "per_channel"),
                         [(1, np.uint8, False), (2, np.int8, False), (2, np.uint8, True)])
def test_layouts_and_zero_points(tmp_path, nd, dtype, per_channel):
    raw = synthetic(nd, dtype, per_channel, seed=nd)
    path = tmp_path / "q.onnx"
    onnx.save_model(qlstm_model(raw, nd), str(path))
    (rec,) = scan(path)
    name = np.dtype(dtype).name
    assert rec.assumed == (f"{name} weights dequantized: the analysis is of the dequantized "
                           "float model",)
    assert f"per {'channel' if per_channel else 'direction'}" in rec.note
    check_weights(rec, onnx_arrays(raw))
    if nd == 2:
        check_decay(rec, onnx_arrays(raw), 3)


def test_quantized_nodes_that_cannot_be_read_are_skipped(tmp_path):
    raw = synthetic(1, np.int8, True)
    cases = [
        ({**raw, "W_scale": raw["W_scale"][:, :3]}, {},
         r"has W_scale of shape \[1, 3\] and W_zero_point of shape \[1, 16\]; expected both "
         r"\[1\] \(per direction\) or \[1, 16\] \(per channel\)"),
        ({**raw, "R_zero_point": raw["R_zero_point"].astype(np.uint8)}, {},
         r"has R of type int8 but R_zero_point of type uint8"),
        ({**raw, "W": raw["W"].astype(np.int32)}, {}, r"has weight W of ONNX data type 6"),
        (raw, {"clip": 5.0}, r"has clip=5"),
        (raw, {"activations": ["HardSigmoid", "Tanh", "Tanh"], "activation_alpha": [0.2],
               "activation_beta": [0.5], "layout": 1},
         r"has attribute 'layout', which the DynamicQuantizeLSTM operator does not define"),
    ]
    for i, (arrays, attrs, pattern) in enumerate(cases):
        path = tmp_path / f"q{i}.onnx"
        onnx.save_model(qlstm_model(arrays, 1, **attrs), str(path))
        found = scan(path)
        assert found.modules == () and len(found.skipped) == 1, (i, found)
        assert found.skipped[0].startswith("DynamicQuantizeLSTM node 'q' "), found.skipped
        assert re.search(pattern, found.skipped[0]), (i, found.skipped[0])


def test_quantized_activations_are_read(tmp_path):
    raw = synthetic(1, np.int8, False)
    path = tmp_path / "q.onnx"
    onnx.save_model(qlstm_model(raw, 1, activations=["HardSigmoid", "Tanh", "Tanh"],
                                activation_alpha=[0.25], activation_beta=[0.5]), str(path))
    (rec,) = scan(path)
    assert rec.cell == "lstm[gate=hard_sigmoid(0.25,0.5)]"


# -- made here with onnxruntime's quantizer -----------------------------------------------------
@pytest.mark.parametrize(("weight_type", "per_channel"),
                         [("QInt8", False), ("QUInt8", True)])
def test_quantize_dynamic_of_an_exported_lstm(tmp_path, weight_type, per_channel):
    torch = pytest.importorskip("torch")
    quantization = pytest.importorskip("onnxruntime.quantization")
    torch.manual_seed(3)
    m = torch.nn.LSTM(3, N, bidirectional=True).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(2.0)
    float_path, path = tmp_path / "f.onnx", tmp_path / "q.onnx"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(m, (torch.zeros(5, 1, 3),), str(float_path), dynamo=False,
                              opset_version=17)
    except Exception as exc:  # the TorchScript-based exporter is gone from this torch
        pytest.skip(f"torch.onnx.export(dynamo=False) failed: {exc}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantization.quantize_dynamic(str(float_path), str(path),
                                      weight_type=getattr(quantization.QuantType, weight_type),
                                      per_channel=per_channel)
    found = scan(path)
    assert found.skipped == () and len(found.modules) == 1
    rec = found.modules[0]
    (raw,) = quantized_inputs(path)
    name = raw["W"].dtype.name  # onnxruntime quantizes LSTMs to int8 whatever weight_type
    assert name in ("int8", "uint8")
    assert rec.assumed == (f"{name} weights dequantized: the analysis is of the dequantized "
                           "float model",)
    check_weights(rec, onnx_arrays(raw))
    check_against_float(rec, raw, {k: v.numpy() for k, v in m.state_dict().items()}, 0)
    check_decay(rec, onnx_arrays(raw), 3)

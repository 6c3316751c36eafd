"""The ONNX reader against ONNX's own reference implementation.

Each recurrent operator is built with ``onnx.helper`` in float64 and run by
``onnx.reference.ReferenceEvaluator``: gateflow's cell with the weights the reader maps must
reproduce the node's outputs, and gateflow's exact Jacobian norms must match finite
differences of the node's map from (initial_h, initial_c) to (Y_h, Y_c). The reference RNN
knows Tanh only; the test adds Relu to it (one line) for ``rnn-relu``.
"""

from __future__ import annotations

import re
import sys
import zlib

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402
from onnx.reference.ops.op_rnn import CommonRNN  # noqa: E402

import gateflow  # noqa: E402
from gateflow._errors import GateflowError  # noqa: E402
from gateflow.models.formats import _onnx  # noqa: E402

T, N, D = 6, 3, 2
GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
NUM_DIRECTIONS = {"forward": 1, "reverse": 1, "bidirectional": 2}
# Worst relative error of the Jacobian norms measured over all 18 cases (onnx 1.23, NumPy
# float64): 1.3e-10 (rnn-relu, reverse); the tolerance leaves a margin of about 100x.
JACOBIAN_RTOL = 1e-8
FORWARD_ATOL = 1e-12
STEP = 1e-3  # finite-difference step; Richardson combines STEP and STEP / 2


class RNN(CommonRNN):
    """ONNX's reference RNN, which knows Tanh and Affine only, with Relu added."""

    op_domain = ""

    def choose_act(self, name, alpha, beta):
        if name in ("Relu", "relu"):
            return lambda x: np.maximum(x, 0)
        return super().choose_act(name, alpha, beta)


# -- building models ----------------------------------------------------------------------
def make_weights(op: str, nd: int, rng, *, peepholes: bool = False, bias: bool = True,
                 scale: float = 0.6) -> dict[str, np.ndarray]:
    g = GATES[op]
    w = {"W": rng.normal(0, scale, (nd, g * N, D)), "R": rng.normal(0, scale, (nd, g * N, N))}
    if bias:
        w["B"] = rng.normal(0, scale, (nd, 2 * g * N))
    if peepholes:
        w["P"] = rng.normal(0, scale, (nd, 3 * N))
    return w


def node_inputs(op: str, names: dict[str, str]) -> list[str]:
    """The node's input list, optional inputs left empty, trailing empties dropped."""
    slots = ["X", "W", "R", "B", "sequence_lens", "initial_h"]
    if op == "LSTM":
        slots += ["initial_c", "P"]
    out = [names.get(s, "") for s in slots]
    while out and not out[-1]:
        out.pop()
    return out


def build(op: str, w: dict[str, np.ndarray], *, direction: str = "forward",
          name: str = "rnn", constants: bool = False, inputs_from: dict | None = None,
          before=(), check: bool = True, **attrs) -> onnx.ModelProto:
    """A model with one ``op`` node: graph inputs X, initial_h (, initial_c), weights as
    initializers (or Constant nodes); ``inputs_from`` overrides a weight's source name."""
    nd = NUM_DIRECTIONS[direction]
    n, d = w["R"].shape[2], w["W"].shape[2]
    names = {"X": "X", "initial_h": "initial_h", **{k: k for k in w}}
    if op == "LSTM":
        names["initial_c"] = "initial_c"
    names.update(inputs_from or {})
    outputs = ["Y", "Y_h"] + (["Y_c"] if op == "LSTM" else [])
    node = helper.make_node(op, node_inputs(op, names), outputs, name=name, direction=direction,
                            **attrs)
    dbl = TensorProto.DOUBLE
    states = ["initial_h"] + (["initial_c"] if op == "LSTM" else [])
    graph_inputs = [helper.make_tensor_value_info("X", dbl, ["T", "B", d])]
    graph_inputs += [helper.make_tensor_value_info(s, dbl, [nd, "B", n]) for s in states]
    graph_outputs = [helper.make_tensor_value_info("Y", dbl, ["T", nd, "B", n])]
    graph_outputs += [helper.make_tensor_value_info(o, dbl, [nd, "B", n]) for o in outputs[1:]]
    tensors = [numpy_helper.from_array(a, name=k) for k, a in w.items()]
    nodes = list(before)
    if constants:
        nodes += [helper.make_node("Constant", [], [t.name], value=t) for t in tensors]
        tensors = []
    graph = helper.make_graph([*nodes, node], "g", graph_inputs, graph_outputs, tensors)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 22)])
    if check:
        onnx.checker.check_model(model)
    return model


def save(model, tmp_path, name: str = "model.onnx"):
    path = tmp_path / name
    onnx.save_model(model, str(path))
    return path


def scan(path):
    with open(path, "rb") as fh:
        return _onnx.scan(fh, path.stat().st_size, path)


def fed(op: str) -> tuple[str, ...]:
    """What a record assumes about build()'s initial states, graph inputs fed at run time:
    the analysis starts from zeros (to a Python caller, who gives ``s0``)."""
    states = ["initial_h"] + (["initial_c"] if op == "LSTM" else [])
    return tuple(f"{s} is not a constant of the file ('{s}' is a graph input, fed at run "
                 "time): the analysis starts from zeros unless s0 gives the initial state"
                 for s in states)


# -- the reference's Jacobian by finite differences ---------------------------------------
def reference_jacobian(ref, op: str, nd: int, k: int, x, start: dict[str, np.ndarray]):
    """∂(Y_h, Y_c)[k]/∂(initial_h, initial_c)[k] of the node run over ``x`` (t, 1, d) from
    ``start`` (state -> (1, n)): central differences at STEP and STEP / 2, Richardson
    combined. Every perturbation is one lane of the batch, so one run does them all."""
    blocks = ("h", "c") if op == "LSTM" else ("h",)
    s = np.concatenate([start[b][0] for b in blocks])
    m = s.size
    steps = (STEP, -STEP, STEP / 2, -STEP / 2)
    lanes = np.repeat(s[None], 4 * m, axis=0)
    for j in range(m):
        for q, h in enumerate(steps):
            lanes[4 * j + q, j] += h
    feeds = {"X": np.repeat(x, 4 * m, axis=1)}
    for i, b in enumerate(blocks):
        init = np.zeros((nd, 4 * m, N))
        init[k] = lanes[:, i * N:(i + 1) * N]
        feeds[f"initial_{b}"] = init
    out = ref.run(None, feeds)
    final = np.concatenate([o[k] for o in out[1:]], axis=1).reshape(m, 4, -1)
    d_h = (final[:, 0] - final[:, 1]) / (2 * STEP)
    d_h2 = (final[:, 2] - final[:, 3]) / STEP
    jac = ((4 * d_h2 - d_h) / 3).T  # rows: outputs, columns: the state perturbed
    return {f"{a}/{b}": jac[i * N:(i + 1) * N, j * N:(j + 1) * N]
            for i, a in enumerate(blocks) for j, b in enumerate(blocks)}


CASES = [  # op, cell, attributes, peepholes
    ("LSTM", "lstm", {}, False),
    ("LSTM", "lstm-peephole", {}, True),
    ("GRU", "gru-cho", {"linear_before_reset": 0}, False),
    ("GRU", "gru", {"linear_before_reset": 1}, False),
    ("RNN", "rnn", {}, False),
    ("RNN", "rnn-relu", {"activations": ["Relu"]}, False),
]
WORST: list[float] = []  # every error measured, for re-deriving the tolerance


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize(("op", "cell", "attrs", "peepholes"), CASES,
                         ids=[c[1] for c in CASES])
def test_matches_the_onnx_reference(tmp_path, op, cell, attrs, peepholes, direction):
    rng = np.random.default_rng(zlib.crc32(f"{cell} {direction}".encode()))
    nd = NUM_DIRECTIONS[direction]
    attrs = dict(attrs)
    if "activations" in attrs:
        attrs["activations"] = attrs["activations"] * nd
    w = make_weights(op, nd, rng, peepholes=peepholes)
    if cell == "rnn-relu":  # positive biases keep units alive, so the Jacobians are not 0
        w["B"] = np.abs(w["B"]) + 0.5
    model = build(op, w, direction=direction, hidden_size=N, **attrs)
    (rec,) = scan(save(model, tmp_path))
    assert (rec.module, rec.framework, rec.kind, rec.cell, rec.cells, rec.layers) == (
        "rnn", "ONNX", f"{op} node", cell, (cell,), 1)
    assert rec.directions == (("forward", "reverse") if nd == 2 else (direction,))
    assert (rec.hidden, rec.input) == (N, D)
    assert (rec.layout, rec.where, rec.assumed) == ("time-major", "", fed(op))

    states = ("h", "c") if op == "LSTM" else ("h",)
    x = rng.normal(size=(T, 1, D))
    s0 = {b: rng.normal(0, 0.5, (nd, 1, N)) for b in states}
    ref = ReferenceEvaluator(model, new_ops=[RNN])
    y, *finals = ref.run(None, {"X": x, **{f"initial_{b}": s0[b] for b in states}})
    for k, name in enumerate(rec.directions):
        params = rec.weights(cell, 0, name)
        assert all(a.dtype == np.float64 and a.flags.c_contiguous for a in params.values())
        seq = x if name == "forward" else x[::-1]
        res = gateflow.all_lags(cell, params, seq, s0={b: s0[b][k] for b in states},
                                keep_states=True)
        hs = res.states["h"][1:]
        np.testing.assert_allclose(hs if name == "forward" else hs[::-1], y[:, k],
                                   rtol=0, atol=FORWARD_ATOL)
        for b, final in zip(states, finals):
            np.testing.assert_allclose(res.states[b][T], final[k], rtol=0, atol=FORWARD_ATOL)
        for lag in range(1, T + 1):
            sub = x[T - lag:] if name == "forward" else x[:lag]
            start = {b: res.states[b][T - lag] for b in states}
            jac = reference_jacobian(ref, op, nd, k, sub, start)
            for block, fd in jac.items():
                want = np.linalg.norm(fd)
                got = 10.0 ** res.blocks[block]["log10_frobenius"][lag - 1, 0]
                assert want > 0, (name, block, lag)  # a zero Jacobian would test nothing
                err = abs(got - want) / want
                WORST.append(err)
                assert err <= JACOBIAN_RTOL, (name, block, lag, got, want)


def test_constant_nodes_and_missing_bias_are_read(tmp_path):
    rng = np.random.default_rng(1)
    w = make_weights("GRU", 1, rng, bias=False)
    (rec,) = scan(save(build("GRU", w, constants=True, linear_before_reset=1), tmp_path))
    params = rec.weights("gru", 0, "forward")
    np.testing.assert_array_equal(params["W_z"], w["W"][0, :N])
    np.testing.assert_array_equal(params["U_n"], w["R"][0, 2 * N:])
    assert all(not params[b].any() for b in ("b_r", "b_z", "b_in", "b_hn"))
    assert rec.cell == "gru" and "linear_before_reset=1" in rec.note


def test_bias_mapping_and_gate_order(tmp_path):
    rng = np.random.default_rng(2)
    w = make_weights("LSTM", 1, rng, peepholes=True)
    (rec,) = scan(save(build("LSTM", w), tmp_path))
    p = rec.weights("lstm-peephole", 0, "forward")
    b = w["B"][0]
    for j, g in enumerate("iofg"):  # ONNX's order i, o, f, c
        np.testing.assert_array_equal(p[f"W_{g}"], w["W"][0, j * N:(j + 1) * N])
        np.testing.assert_array_equal(p[f"b_{g}"], b[j * N:(j + 1) * N]
                                      + b[(4 + j) * N:(5 + j) * N])
    for j, g in enumerate("iof"):
        np.testing.assert_array_equal(p[f"p_{g}"], w["P"][0, j * N:(j + 1) * N])


def test_names_layout_and_several_nodes(tmp_path):
    rng = np.random.default_rng(3)
    w1, w2, w3 = (make_weights(op, 1, rng) for op in ("RNN", "GRU", "LSTM"))
    relu = helper.make_node("Relu", ["X"], ["X2"], name="pre")
    a = helper.make_node("RNN", ["X2", "W1", "R1", "B1"], ["Ya"], name="twin")
    b = helper.make_node("GRU", ["X", "W2", "R2", "B2"], ["Yb"], name="twin", layout=0)
    c = helper.make_node("LSTM", ["X", "W3", "R3", "B3"], ["Yc"], layout=1)
    dbl = TensorProto.DOUBLE
    inits = [numpy_helper.from_array(arr, name=f"{k}{i}")
             for i, ws in enumerate((w1, w2, w3), 1) for k, arr in ws.items()]
    graph = helper.make_graph(
        [relu, a, b, c], "g", [helper.make_tensor_value_info("X", dbl, [T, 1, D])],
        [helper.make_tensor_value_info(y, dbl, [T, 1, 1, N]) for y in ("Ya", "Yb", "Yc")],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 22)])
    onnx.checker.check_model(model)
    recs = scan(save(model, tmp_path))
    assert [r.module for r in recs] == ["twin_1", "twin_2", "LSTM_3"]
    assert [r.cell for r in recs] == ["rnn", "gru-cho", "lstm"]
    assert "layout=1" in recs[2].note and "layout" not in recs[1].note
    assert [r.layout for r in recs] == ["time-major", "time-major", "batch-major"]


def test_weights_arguments_are_checked(tmp_path):
    w = make_weights("LSTM", 2, np.random.default_rng(4))
    (rec,) = scan(save(build("LSTM", w, direction="bidirectional"), tmp_path))
    rev = rec.weights(gateflow.get_cell("lstm"), 0, "reverse")
    np.testing.assert_array_equal(rev["U_o"], w["R"][1, N:2 * N])
    for args, what in ((("gru", 0, "forward"), "cannot be read as 'gru'"),
                       (("lstm", 1, "forward"), "layer must be 0"),
                       (("lstm", True, "forward"), "layer must be 0"),
                       (("lstm", 0, "up"), "direction must be")):
        with pytest.raises(GateflowError, match=what):
            rec.weights(*args)


def test_reverse_node_reads_index_zero(tmp_path):
    w = make_weights("RNN", 1, np.random.default_rng(5))
    (rec,) = scan(save(build("RNN", w, direction="reverse"), tmp_path))
    assert rec.directions == ("reverse",) and "reverse" in rec.note
    np.testing.assert_array_equal(rec.weights("rnn", 0, "reverse")["U"], w["R"][0])
    with pytest.raises(GateflowError, match="direction must be 'reverse'"):
        rec.weights("rnn", 0, "forward")


# -- activations from the node ------------------------------------------------------------
ACTIVATION_CASES = [  # op, direction, attributes, gateflow cell, ONNX functions (name, params)
    ("LSTM", "forward", {"activations": ["HardSigmoid", "Tanh", "Tanh"]},
     "lstm[gate=hard_sigmoid(0.2,0.5)]", [("HardSigmoid", 0.2, 0.5), ("Tanh",), ("Tanh",)]),
    ("LSTM", "reverse", {"activations": ["HardSigmoid", "Elu", "Softsign"],
                         "activation_alpha": [0.3, 0.9], "activation_beta": [0.6]},
     "lstm[gate=hard_sigmoid(0.3,0.6),candidate=elu(0.9),output=softsign]",
     [("HardSigmoid", 0.3, 0.6), ("Elu", 0.9), ("Softsign",)]),
    ("LSTM", "bidirectional", {"activations": ["Sigmoid", "Relu", "Softplus"] * 2},
     "lstm[candidate=relu,output=softplus]", [("Sigmoid",), ("Relu",), ("Softplus",)]),
    ("GRU", "forward", {"activations": ["Sigmoid", "LeakyRelu"], "linear_before_reset": 1,
                        "activation_alpha": [0.1, 0.1]},  # both readings give 0.1
     "gru[candidate=leaky_relu(0.1)]", [("Sigmoid",), ("LeakyRelu", 0.1)]),
    ("GRU", "bidirectional", {"activations": ["Softsign", "ScaledTanh"] * 2,
                              "activation_alpha": [1.5] * 2, "activation_beta": [0.7] * 2},
     "gru-cho[gate=softsign,candidate=scaled_tanh(1.5,0.7)]",
     [("Softsign",), ("ScaledTanh", 1.5, 0.7)]),
    ("RNN", "forward", {"activations": ["Affine"], "activation_alpha": [0.5],
                        "activation_beta": [0.1]}, "rnn[candidate=affine(0.5,0.1)]",
     [("Affine", 0.5, 0.1)]),
    ("RNN", "forward", {"activations": ["ThresholdedRelu"], "activation_alpha": [0.05]},
     "rnn[candidate=thresholded_relu(0.05)]", [("ThresholdedRelu", 0.05)]),
    ("RNN", "reverse", {"activations": ["Sigmoid"]}, "rnn[candidate=sigmoid]", [("Sigmoid",)]),
]


@pytest.mark.parametrize(("op", "direction", "attrs", "cell", "functions"), ACTIVATION_CASES,
                         ids=[c[3] for c in ACTIVATION_CASES])
def test_activations_are_read_from_the_node(tmp_path, op, direction, attrs, cell, functions):
    """The cell variant the node declares, its decay against a float64 autograd reference
    built from the raw arrays with the ONNX functions (every block, every lag), and (with
    onnxruntime) the forward pass of the runtime itself, which settles how activation_alpha
    and activation_beta are consumed."""
    from tests._onnx_ref import activation, assert_decay_matches

    pytest.importorskip("torch")
    rng = np.random.default_rng(zlib.crc32(cell.encode()))
    nd = NUM_DIRECTIONS[direction]
    w = make_weights(op, nd, rng, scale=0.8)
    if "ThresholdedRelu" in str(attrs) or "Relu" in attrs.get("activations", []):
        w["B"] = np.abs(w["B"]) + 0.3  # units above the threshold: Jacobians not all 0
    model = build(op, w, direction=direction, hidden_size=N, **attrs)
    (rec,) = scan(save(model, tmp_path))
    assert rec.cell == cell
    defaults = [a for a in rec.assumed if "ONNX defaults" in a]
    assert defaults == (["activation HardSigmoid without activation_alpha/activation_beta: "
                         "the ONNX defaults (0.2, 0.5)"] if "activation_alpha" not in attrs
                        and "HardSigmoid" in attrs["activations"] else [])
    acts = [activation(*f) for f in functions]
    x = rng.normal(size=(T, 2, D))
    compared = assert_decay_matches(rec, op, w, x, acts=acts,
                                    linear_before_reset=attrs.get("linear_before_reset", 0))
    assert compared >= T * nd  # most norms are nonzero

    ort = pytest.importorskip("onnxruntime")
    f32 = save(build(op, {k: v.astype(np.float32) for k, v in w.items()}, direction=direction,
                     hidden_size=N, check=False, **attrs), tmp_path, "f32.onnx")
    f32_model = onnx.load(str(f32))
    for v in [*f32_model.graph.input, *f32_model.graph.output]:
        v.type.tensor_type.elem_type = TensorProto.FLOAT
    onnx.save_model(f32_model, str(f32))
    session = ort.InferenceSession(str(f32), providers=["CPUExecutionProvider"])
    states = ("h", "c") if op == "LSTM" else ("h",)
    feeds = {"X": x.astype(np.float32),
             **{f"initial_{b}": np.zeros((nd, 2, N), np.float32) for b in states}}
    y = session.run(["Y"], feeds)[0]
    for k, name in enumerate(rec.directions):
        params = rec.weights(rec.cell, 0, name)
        seq = x if name == "forward" else x[::-1]
        hs = gateflow.all_lags(rec.cell, params, seq, keep_states=True).states["h"][1:]
        np.testing.assert_allclose(hs if name == "forward" else hs[::-1], y[:, k],
                                   rtol=0, atol=2e-5)


# -- what is skipped, and why ----------------------------------------------------------------
def one_line_error(excinfo) -> str:
    text = str(excinfo.value)
    assert "\n" not in text
    return text


def skipped(path, pattern: str) -> str:
    """The file's one skipped line, which must match ``pattern``; nothing was read."""
    found = scan(path)
    assert found.modules == () and len(found.skipped) == 1, found
    (line,) = found.skipped
    assert "\n" not in line and re.search(pattern, line), line
    return line


def test_skips_attributes_that_change_the_cell(tmp_path):
    rng = np.random.default_rng(6)
    lstm, gru, rnn = (make_weights(op, 1, rng) for op in ("LSTM", "GRU", "RNN"))
    lstm2 = make_weights("LSTM", 2, rng)
    cases = [
        ("LSTM", lstm, {"clip": 3.0}, r"^LSTM node 'rnn' has clip=3: .*pre-activations are "
                                      r"clipped to \[-3, 3\], which changes the cell"),
        ("LSTM", lstm, {"input_forget": 1}, r"^LSTM node 'rnn' has input_forget=1"),
        ("RNN", rnn, {"activations": ["Tanh", "Tanh"]},
         r"^RNN node 'rnn' has 2 activations \(Tanh, Tanh\); the operator expects 1 per "
         r"direction, 1 in all"),
        ("LSTM", lstm2, {"direction": "bidirectional", "activations": ["Sigmoid", "Tanh", "Tanh"]},
         r"has 3 activations \(Sigmoid, Tanh, Tanh\); the operator expects 3 per direction, "
         r"6 in all"),
        ("RNN", rnn, {"activations": ["Swish"]}, r"has activation 'Swish', which the ONNX "),
        ("GRU", gru, {"linear_before_reset": 2}, r"^GRU node .rnn. has linear_before_reset=2"),
        ("GRU", gru, {"hidden_size": N + 2}, r"^GRU node 'rnn' has hidden_size=5 but R has "
                                             r"shape \[1, 9, 3\]"),
        ("RNN", rnn, {"activations": ["Affine"]},
         r"has activation Affine without its parameters .*give them explicitly"),
        ("RNN", rnn, {"activations": ["ThresholdedRelu"]},
         r"has activation ThresholdedRelu without its parameters"),
        # one value per activation: 0.3 is HardSigmoid's to onnxruntime, the Sigmoid's
        # by position (and HardSigmoid's alpha would be 0.4)
        ("GRU", gru, {"activations": ["Sigmoid", "HardSigmoid"], "activation_alpha": [0.3, 0.4],
                      "activation_beta": [0.6, 0.6]}, r"read two ways .*does not guess"),
        ("LSTM", lstm2, {"direction": "bidirectional",
                         "activations": ["Sigmoid", "Tanh", "Tanh", "Sigmoid", "Relu", "Tanh"]},
         r"different in its two directions"),
        ("LSTM", lstm, {"layout": 2}, r"has layout=2; the ONNX operator defines 0 and 1"),
    ]
    for i, (op, w, attrs, pattern) in enumerate(cases):
        attrs = dict(attrs)
        direction = attrs.pop("direction", "forward")
        path = save(build(op, w, direction=direction, check=False, **attrs), tmp_path,
                    f"m{i}.onnx")
        skipped(path, pattern)


def test_clip_that_never_binds_is_read(tmp_path):
    w = make_weights("LSTM", 1, np.random.default_rng(14))
    (rec,) = scan(save(build("LSTM", w, clip=float("inf")), tmp_path))
    assert rec.cell == "lstm"


def test_skips_weights_that_are_not_constants(tmp_path):
    w = make_weights("LSTM", 1, np.random.default_rng(7))
    fed = build("LSTM", w, check=False, inputs_from={"W": "W_in"})
    fed.graph.input.append(helper.make_tensor_value_info("W_in", TensorProto.DOUBLE,
                                                         list(w["W"].shape)))
    skipped(save(fed, tmp_path, "fed.onnx"),
            r"^LSTM node 'rnn' takes its weight W from 'W_in', which is not a constant "
            r"gateflow can fold: 'W_in' is a graph input, fed at run time$")
    mm = helper.make_node("MatMul", ["R", "X"], ["R_mm"], name="mm")
    made = build("LSTM", w, inputs_from={"R": "R_mm"}, before=[mm], check=False)
    skipped(save(made, tmp_path, "made.onnx"),
            r"takes its weight R from 'R_mm', which is not a constant gateflow can fold: "
            r"'R_mm' is the output of node 'mm' \(MatMul\), which gateflow does not fold "
            r"\(it folds .*Slice.*\)")
    nowhere = build("LSTM", w, inputs_from={"B": "B_lost"}, check=False)
    skipped(save(nowhere, tmp_path, "nowhere.onnx"), r"'B_lost' is not defined in the graph")
    text = helper.make_node("Constant", [], ["B_s"], value_strings=[b"x"], name="words")
    odd = build("LSTM", w, inputs_from={"B": "B_s"}, before=[text], check=False)
    skipped(save(odd, tmp_path, "odd.onnx"), r"Constant node 'words' without a numeric value "
                                             r"\(attributes: value_strings\)")


def test_identity_and_constant_lists_are_folded(tmp_path):
    w = make_weights("LSTM", 1, np.random.default_rng(7))
    ident = helper.make_node("Identity", ["R"], ["R_copy"], name="copy")
    (rec,) = scan(save(build("LSTM", w, inputs_from={"R": "R_copy"}, before=[ident]),
                       tmp_path, "ident.onnx"))
    np.testing.assert_array_equal(rec.weights("lstm", 0, "forward")["U_f"], w["R"][0, 2 * N:3 * N])
    assert "weights folded from constants (Identity)" in rec.note
    bias = np.arange(8 * N, dtype=np.float32) / 7
    value = helper.make_node("Constant", [], ["B_c"], value_floats=bias.tolist())
    shape = helper.make_node("Constant", [], ["B_shape"], value_ints=[1, 8 * N])
    reshape = helper.make_node("Reshape", ["B_c", "B_shape"], ["B_r"], name="reshape")
    cast = helper.make_node("Cast", ["B_r"], ["B_d"], to=TensorProto.DOUBLE, name="cast")
    (rec,) = scan(save(build("LSTM", w, inputs_from={"B": "B_d"},
                             before=[value, shape, reshape, cast]), tmp_path, "odd.onnx"))
    got = rec.weights("lstm", 0, "forward")
    b = bias.astype(np.float64)
    np.testing.assert_array_equal(got["b_o"], b[N:2 * N] + b[5 * N:6 * N])
    assert rec.assumed == fed("LSTM")


@pytest.mark.parametrize(("dtype", "code", "line"), [
    ("float16", TensorProto.FLOAT16, "float16 weights (11 significant bits)"),
    ("bfloat16", TensorProto.BFLOAT16, "bfloat16 weights (8 significant bits)")])
def test_narrow_float_weights_are_read_and_said(tmp_path, dtype, code, line):
    """float16 and bfloat16 initializers: read exactly (every stored value is a float64),
    and said once."""
    w = make_weights("GRU", 1, np.random.default_rng(15))
    tensors = {k: helper.make_tensor(k, code, v.shape, v.astype(np.float32).ravel().tolist())
               for k, v in w.items()}
    model = build("GRU", w, check=False, linear_before_reset=1)
    del model.graph.initializer[:]
    model.graph.initializer.extend(tensors.values())
    (rec,) = scan(save(model, tmp_path))
    assert rec.assumed == (f"{line}: the analysis is of these values, in float64",
                           *fed("GRU"))
    got = rec.weights("gru", 0, "forward")
    want = numpy_helper.to_array(tensors["R"]).astype(np.float64)
    np.testing.assert_array_equal(got["U_r"], want[0, N:2 * N])
    assert not np.array_equal(got["U_r"], w["R"][0, N:2 * N])  # rounded: really narrow


def test_a_learned_initial_state_is_said(tmp_path):
    """A constant initial state is the run's s0 (tests/test_onnx_initial.py checks the
    numbers), said in the note; zeros for c, which the file fixes to zeros."""
    w = make_weights("LSTM", 1, np.random.default_rng(16))
    h0 = numpy_helper.from_array(np.full((1, 1, N), 0.5), "h0")
    c0 = numpy_helper.from_array(np.zeros((1, 1, N)), "c0")
    model = build("LSTM", w, inputs_from={"initial_h": "h0", "initial_c": "c0"}, check=False)
    model.graph.initializer.extend([h0, c0])
    (rec,) = scan(save(model, tmp_path))
    assert rec.assumed == ()
    assert rec.initial_from == "ONNX LSTM node 'rnn': initial_h 'h0'"
    assert "initial state fixed by the file (initial_h 'h0'): runs start from it unless " \
           "s0 gives another" in rec.note
    s0 = rec.initial("lstm", 0, "forward")
    np.testing.assert_array_equal(s0["h"], np.full(N, 0.5))
    np.testing.assert_array_equal(s0["c"], np.zeros(N))


def test_skips_external_data(tmp_path):
    model = build("GRU", make_weights("GRU", 1, np.random.default_rng(8)))
    path = tmp_path / "ext.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    assert (tmp_path / "weights.bin").exists()
    skipped(path, r"^GRU node 'rnn' takes its weight W from 'W', .*'W' is kept in an external "
                  r"file \('weights\.bin'\); re-export with the weights inside")


def refused(path, pattern: str) -> str:
    with pytest.raises(GateflowError) as excinfo:
        scan(path)
    text = one_line_error(excinfo)
    assert re.search(pattern, text), text
    return text


def test_refuses_damaged_files(tmp_path):
    data = save(build("LSTM", make_weights("LSTM", 1, np.random.default_rng(9))),
                tmp_path).read_bytes()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(data[:len(data) // 2])
    refused(cut, r"^cannot read '.*cut\.onnx': not a valid ONNX model \(.+\)")
    junk = tmp_path / "junk.onnx"
    for seed in range(5):
        junk.write_bytes(np.random.default_rng(seed).bytes(300))
        refused(junk, r"^cannot read '.*junk\.onnx': not a valid ONNX model \(.+\)")
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    refused(empty, r"not a valid ONNX model \(it holds no graph\)")


def _cut_raw(t):
    t.raw_data = t.raw_data[:-8]


def _short_typed(t):
    values = numpy_helper.to_array(t).ravel().tolist()
    t.ClearField("raw_data")
    t.double_data.extend(values[:-1])


def _inflated(t):
    del t.dims[:]
    t.dims.extend([1, N, 10**6])  # the data holds N * N doubles


@pytest.mark.parametrize(("name", "damage", "match"), [
    ("R", _cut_raw, r"has a damaged weight R: 'R' is a damaged tensor \(its data holds 64 bytes "
                    r"where its dims \[1, 3, 3\] need 72\); re-export the model$"),
    ("R", _short_typed, r"has a damaged weight R: 'R' is a damaged tensor \(its data holds 8 "
                        r"values where its dims \[1, 3, 3\] need 9\)"),
    ("W", _inflated, r"has a damaged weight W: 'W' is a damaged tensor \(its data holds 48 bytes "
                     r"where its dims \[1, 3, 1000000\] need 24000000\)"),
])
def test_a_damaged_tensor_skips_the_node_when_scanned(name, damage, match, tmp_path, sandbox):
    """A stored weight whose data does not hold what its dims say is found by the scan
    (sizes only, nothing decoded): ``inspect`` and ``decay`` say the same skipped line,
    never the dims' sizes."""
    from tests._hostile import assert_clean_error, run_cli

    model = build("RNN", make_weights("RNN", 1, np.random.default_rng(10)))
    damage(next(t for t in model.graph.initializer if t.name == name))
    path = save(model, tmp_path)
    line = skipped(path, r"^RNN node 'rnn' " + match)
    out = run_cli("inspect", str(path))
    assert out.stdout.splitlines() == [f"skipped: {line}"], out.stdout
    assert_clean_error(out, r"found no recurrent module gateflow can read; skipped RNN node "
                            r"'rnn' " + match)
    assert_clean_error(run_cli("decay", "-w", str(path), "--steps", "3", "-q"),
                       r"found no recurrent module gateflow can read; skipped RNN node 'rnn' "
                       + match)


def test_a_damaged_initial_state_skips_the_node(tmp_path):
    w = make_weights("GRU", 1, np.random.default_rng(12))
    model = build("GRU", w, inputs_from={"initial_h": "h0"}, check=False)
    h0 = numpy_helper.from_array(np.full((1, 1, N), 0.5), "h0")
    h0.raw_data = h0.raw_data[:-8]
    model.graph.initializer.append(h0)
    skipped(save(model, tmp_path), r"^GRU node 'rnn' has a damaged initial_h: 'h0' is a damaged "
                                   r"tensor \(its data holds 16 bytes where its dims \[1, 1, 3\] "
                                   r"need 24\); re-export the model$")


def test_skips_non_float_weights(tmp_path):
    w = make_weights("RNN", 1, np.random.default_rng(11))
    w["R"] = np.ones_like(w["R"], dtype=np.int32)
    skipped(save(build("RNN", w, check=False), tmp_path),
            r"has weight R of ONNX data type 6 \(INT32\)")


def test_no_recurrent_node_is_empty(tmp_path):
    dbl = TensorProto.DOUBLE
    graph = helper.make_graph([helper.make_node("Relu", ["X"], ["Y"])], "g",
                              [helper.make_tensor_value_info("X", dbl, [2])],
                              [helper.make_tensor_value_info("Y", dbl, [2])])
    path = save(helper.make_model(graph), tmp_path)
    found = scan(path)
    assert found.modules == () and found.skipped == () and tuple(found) == ()


def test_needs_the_onnx_package(tmp_path, monkeypatch):
    path = save(build("RNN", make_weights("RNN", 1, np.random.default_rng(12))), tmp_path)
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(GateflowError, match=r"needs the onnx package; install it with pip "
                                            r"install 'gateflow\[onnx\]'"):
        scan(path)


# -- sniffing -------------------------------------------------------------------------------
def test_sniff(tmp_path):
    path = save(build("GRU", make_weights("GRU", 1, np.random.default_rng(13))), tmp_path)
    assert _onnx.sniff(path.read_bytes()[:512], None) == _onnx.WHAT
    bare = helper.make_model(helper.make_graph([], "g", [], []))
    assert _onnx.sniff(bare.SerializeToString()[:512], None) == _onnx.WHAT
    assert _onnx.sniff(b"PK\x03\x04" + bytes(60), ("a.npy",)) is None
    assert _onnx.sniff(b"PK\x03\x04" + bytes(60), None) is None
    assert _onnx.sniff(path.read_bytes()[:512], ("model.onnx",)) is None
    for seed in range(20):
        junk = np.random.default_rng(seed).bytes(512)
        assert _onnx.sniff(junk, None) is None
    assert _onnx.sniff(b"\x08\x01\x00" + bytes(100), None) is None  # a safetensors-like head
    assert _onnx.sniff(b"", None) is None and _onnx.sniff(b"\x08", None) is None


# -- through the command line -------------------------------------------------------------
def test_cli_inspect_and_decay_on_an_onnx_file(tmp_path, sandbox):
    """``gateflow inspect`` lists both nodes; ``decay --module`` picks one, its cell read
    from the file (no --cell); a file whose one node is skipped (clip) is one error line
    naming it, nothing written."""
    import json
    from pathlib import Path

    from gateflow import all_lags, load_model
    from tests._hostile import assert_clean_error, assert_unchanged, run_cli, snapshot

    rng = np.random.default_rng(11)
    gru = build("GRU", make_weights("GRU", 2, rng), direction="bidirectional", name="enc",
                linear_before_reset=1)
    save(gru, Path("."), "m.onnx")
    out = run_cli("inspect", "m.onnx")
    assert out.exit_code == 0, out.stderr
    assert "ONNX GRU node" in out.stdout and "gateflow decay --weights m.onnx --direction " \
        "forward" in out.stdout
    x = rng.normal(size=(5, 2, D))
    np.save("x.npy", x)
    out = run_cli("decay", "-w", "m.onnx", "--direction", "reverse", "--inputs", "x.npy",
                  "--json", "r.json", "-q")
    assert out.exit_code == 0, out.stderr
    doc = json.loads(Path("r.json").read_text())
    assert doc["cell"] == "gru" and doc["weights"]["kind"] == "GRU node"
    cell, params = load_model("m.onnx", direction="reverse")
    want = all_lags(cell, params, x[::-1])
    np.testing.assert_allclose(doc["blocks"]["h/h"]["log10_frobenius"],
                               want.blocks["h/h"]["log10_frobenius"], rtol=0, atol=1e-13)
    bad = build("LSTM", make_weights("LSTM", 1, rng), clip=2.5)
    save(bad, Path("."), "bad.onnx")
    before = snapshot(".")
    assert_clean_error(run_cli("decay", "-w", "bad.onnx", "--json", "o.json"),
                       r"found no recurrent module gateflow can read; skipped LSTM node 'rnn' "
                       r"has clip=2\.5")
    assert_unchanged(before, snapshot("."))
    assert_clean_error(run_cli("decay", "-w", "m.onnx", "--module", "dense", "--direction",
                               "forward"), r"has no recurrent module 'dense'; it holds 'enc'")


def test_sequence_lens_is_said_not_applied(tmp_path):
    """A node fed ``sequence_lens`` may stop some sequences early; gateflow runs every
    sequence for all T steps, and says so (never a silent assumption)."""
    w = make_weights("GRU", 1, np.random.default_rng(5))
    model = build("GRU", w, inputs_from={"sequence_lens": "lens"}, check=False)
    model.graph.input.append(helper.make_tensor_value_info("lens", TensorProto.INT32, ["B"]))
    (rec,) = scan(save(model, tmp_path))
    assert ("sequence_lens ('lens') is not applied: every sequence runs all T steps of the "
            "inputs (give sequences of one length, or analyse each length apart)") in rec.assumed
    (plain,) = scan(save(build("GRU", w), tmp_path, "plain.onnx"))
    assert not any("sequence_lens" in a for a in plain.assumed)

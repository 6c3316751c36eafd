"""The ONNX reader inside graphs: recurrent nodes in ``If``/``Loop``/``Scan`` subgraphs and
model-local functions, weights folded from constants, names ``--module`` can pick, and
one line for everything skipped.

Folded weights are checked against ONNX's own reference evaluator running the same weight
computation (an independent implementation of every operator); models exported by
``torch.onnx.export`` from scripted modules with control flow are checked against float64
autograd through PyTorch modules built from the original weights, every block at every lag.
"""

from __future__ import annotations

import json
import re
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

from onnx import AttributeProto, TensorProto, helper, numpy_helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

import gateflow  # noqa: E402
from gateflow._errors import GateflowError  # noqa: E402
from gateflow.models.formats import _onnx, _onnx_fold  # noqa: E402

T, N, D = 6, 3, 2
FLT = TensorProto.FLOAT


def scan(path: Path):
    with open(path, "rb") as fh:
        return _onnx.scan(fh, path.stat().st_size, path)


def save(model, tmp_path: Path, name: str = "model.onnx") -> Path:
    path = tmp_path / name
    onnx.save_model(model, str(path))
    return path


def info(name, shape=None, elem=FLT):
    return helper.make_tensor_value_info(name, elem, shape)


def lstm(name: str, w: str, r: str, b: str = "", out: str = "Y", x: str = "X", **attrs):
    inputs = [x, w, r, b] if b else [x, w, r]
    return helper.make_node("LSTM", inputs, [out], name=name, hidden_size=N, **attrs)


def graph(nodes, name="g", inputs=(), outputs=("Y",), inits=()):
    return helper.make_graph(list(nodes), name, list(inputs), [info(o) for o in outputs],
                             list(inits))


def model(g, opset: int = 18, functions=(), domains=()):
    imports = [helper.make_opsetid("", opset), *(helper.make_opsetid(d, 1) for d in domains)]
    return helper.make_model(g, opset_imports=imports, functions=list(functions))


def weights(seed: int, g: int = 4, nd: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"W": rng.normal(0, 0.6, (nd, g * N, D)).astype(np.float32),
            "R": rng.normal(0, 0.6, (nd, g * N, N)).astype(np.float32),
            "B": rng.normal(0, 0.6, (nd, 2 * g * N)).astype(np.float32)}


def inits(w: dict[str, np.ndarray], suffix: str = ""):
    return [numpy_helper.from_array(a, name=f"{k}{suffix}") for k, a in w.items()]


def mapped(w: dict[str, np.ndarray], k: int = 0) -> dict[str, np.ndarray]:
    """ONNX LSTM arrays (gates i, o, f, c) in gateflow's names, written out here."""
    out = {}
    for j, g in enumerate("iofg"):
        rows = slice(j * N, (j + 1) * N)
        out[f"W_{g}"] = w["W"][k, rows].astype(np.float64)
        out[f"U_{g}"] = w["R"][k, rows].astype(np.float64)
        b = w["B"][k].astype(np.float64)
        out[f"b_{g}"] = b[rows] + b[4 * N:][rows]
    return out


def assert_weights(rec, w, k: int = 0, direction: str = "forward"):
    got = rec.weights(rec.cell, 0, direction)
    for name, want in mapped(w, k).items():
        np.testing.assert_array_equal(got[name], want, err_msg=name)


# -- subgraphs and names ------------------------------------------------------------------------
def if_model(then_nodes, else_nodes, top=(), top_inits=(), opset=18) -> onnx.ModelProto:
    cond = helper.make_node("If", ["cond"], ["Y"], name="cond",
                            then_branch=graph(then_nodes, "then"),
                            else_branch=graph(else_nodes, "else"))
    g = graph([*top, cond], inputs=[info("X", [T, 1, D]),
                                    info("cond", [], TensorProto.BOOL)], inits=top_inits)
    return model(g, opset)


def test_lstms_in_both_branches_of_an_if(tmp_path):
    """Weights from outer-scope initializers; the same node name in both branches (and at the
    top) makes every one of them qualified by its path; ``where`` says the branch; the
    names pick the modules in load_model."""
    wa, wb, wt = weights(1), weights(2), weights(3)
    m = if_model([lstm("enc", "Wa", "Ra", "Ba")], [lstm("enc", "Wb", "Rb", "Bb")],
                 top=[lstm("enc", "Wt", "Rt", "Bt", out="Yt")],
                 top_inits=[*inits(wa, "a"), *inits(wb, "b"), *inits(wt, "t")])
    m.graph.output.append(info("Yt"))
    path = save(m, tmp_path)
    found = scan(path)
    assert found.skipped == ()
    assert [r.module for r in found] == ["enc", "cond:then_branch:enc", "cond:else_branch:enc"]
    assert [r.where for r in found] == ["", "If node 'cond', then-branch",
                                        "If node 'cond', else-branch"]
    for rec, w in zip(found, (wt, wa, wb)):
        assert (rec.cell, rec.hidden, rec.input, rec.layout) == ("lstm", N, D, "time-major")
        assert_weights(rec, w)
    cell, params = gateflow.load_model(path, module="cond:else_branch:enc")
    np.testing.assert_array_equal(params["U_f"], mapped(wb)["U_f"])
    with pytest.raises(GateflowError, match=r"holds 3 recurrent modules \('enc', "
                                            r"'cond:then_branch:enc', 'cond:else_branch:enc'\)"):
        gateflow.load_model(path)


def test_unique_names_stay_plain_and_loop_scan_bodies_are_searched(tmp_path):
    wl, ws = weights(4), weights(5)
    body = helper.make_graph(
        [lstm("in_loop", "Wl", "Rl", "Bl", out="Yl", x="xs"),
         helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Identity", ["xs"], ["xs_out"])], "body",
        [info("i", [], TensorProto.INT64), info("cond_in", [], TensorProto.BOOL), info("xs")],
        [info("cond_out", [], TensorProto.BOOL), info("xs_out"), info("Yl")])
    loop = helper.make_node("Loop", ["trips", "", "X"], ["X_out", "Y_scan"], name="loop",
                            body=body)
    scan_body = helper.make_graph(
        [lstm("in_scan", "Ws", "Rs", "Bs", out="Ys", x="x3"),
         helper.make_node("Identity", ["x3"], ["x3_out"])],
        "scan_body", [info("x3", [T, 1, D])], [info("x3_out"), info("Ys")])
    scan_node = helper.make_node("Scan", ["Xs"], ["Xs_out", "Y2"], name="scan",
                                 body=scan_body, num_scan_inputs=1)
    g = graph([loop, scan_node], inputs=[info("X", [T, 1, D]), info("Xs", [2, T, 1, D]),
                                         info("trips", [], TensorProto.INT64)],
              outputs=("X_out", "Y2"), inits=[*inits(wl, "l"), *inits(ws, "s")])
    found = scan(save(model(g), tmp_path))
    assert [(r.module, r.where) for r in found] == [
        ("in_loop", "Loop node 'loop', body"), ("in_scan", "Scan node 'scan', body")]
    assert found.skipped == ()  # the Loop carries X, but through a node gateflow reads
    assert_weights(found.modules[0], wl)
    assert_weights(found.modules[1], ws)


def test_function_bodies_are_searched_with_their_inputs_bound(tmp_path):
    """A model-local function: its formal inputs are the caller's weights; an attribute given
    by reference (hidden_size) takes the caller's value."""
    w = weights(6)
    node = helper.make_node("LSTM", ["x", "w", "r"], ["y"], name="lstm")
    ref = helper.make_attribute_ref("hidden_size", AttributeProto.INT)
    ref.ref_attr_name = "units"
    node.attribute.append(ref)
    fn = helper.make_function("local", "Encoder", ["x", "w", "r"], ["y"], [node],
                              [helper.make_opsetid("", 18)], attributes=["units"])
    call = helper.make_node("Encoder", ["X", "W", "R"], ["Y"], name="call", domain="local",
                            units=N)
    g = graph([call], inputs=[info("X", [T, 1, D])], inits=inits({"W": w["W"], "R": w["R"]}))
    (rec,) = scan(save(model(g, functions=[fn], domains=["local"]), tmp_path))
    assert (rec.module, rec.where, rec.hidden) == ("lstm", "Encoder node 'call', function "
                                                           "'Encoder'", N)
    got = rec.weights("lstm", 0, "forward")
    np.testing.assert_array_equal(got["U_o"], w["R"][0, N:2 * N].astype(np.float64))
    assert not got["b_f"].any()
    call2 = helper.make_node("Encoder", ["X", "W"], ["Y"], name="short", domain="local", units=N)
    g2 = graph([call2], inputs=[info("X", [T, 1, D])], inits=inits({"W": w["W"]}))
    found = scan(save(model(g2, functions=[fn], domains=["local"]), tmp_path, "short.onnx"))
    assert found.modules == ()
    assert found.skipped == ("LSTM node 'lstm' (Encoder node 'short', function 'Encoder') "
                             "takes its weight R from 'r', which is not a constant gateflow "
                             "can fold: 'r' is a function input the caller leaves out",)


# -- folding ------------------------------------------------------------------------------------
def folding_nodes(rng) -> tuple[list, list, dict]:
    """Nodes computing an LSTM's W, R, B, P from constants the way exporters and quantizers
    do (opset 21), with the raw tensors they start from."""
    w_ih = rng.normal(0, 0.6, (4 * N, D)).astype(np.float32)  # PyTorch order i, f, g, o
    r_t = rng.normal(0, 0.6, (N, 4 * N)).astype(np.float16)  # stored transposed, float16
    b_q = rng.integers(-128, 128, 8 * N).astype(np.int8)
    b_scale = rng.uniform(0.01, 0.02, 8 * N).astype(np.float32)
    b_zero = rng.integers(-3, 4, 8 * N).astype(np.int8)
    p_base = rng.normal(0, 0.6, (1, 3 * N)).astype(np.float32)
    tensors = {"w_ih": w_ih, "r_t": r_t, "b_q": b_q, "b_scale": b_scale, "b_zero": b_zero,
               "p_base": p_base, "sizes": np.full(4, N, np.int64),
               "zero": np.zeros(1, np.int64), "rows": np.asarray(
                   [*range(0, N), *range(3 * N, 4 * N), *range(N, 3 * N)], np.int64),
               "rshape": np.asarray([1, -1, N], np.int64), "two": np.asarray([2], np.float32),
               "start": np.asarray([-1], np.int64), "stop": np.asarray([-10 ** 9], np.int64),
               "step": np.asarray([-1], np.int64), "axis0": np.asarray([0], np.int64),
               "pshape": np.asarray([1, 3 * N], np.int64)}
    c = helper.make_node
    nodes = [
        c("Split", ["w_ih", "sizes"], ["wi", "wf", "wg", "wo"], axis=0, name="split"),
        c("Concat", ["wi", "wo", "wf", "wg"], ["w_iofc"], axis=0, name="concat"),
        c("Unsqueeze", ["w_iofc", "zero"], ["W"], name="unsqueeze"),
        c("Transpose", ["r_t"], ["r_16"], perm=[1, 0], name="transpose"),
        c("Cast", ["r_16"], ["r_32"], to=FLT, name="cast"),
        c("Gather", ["r_32", "rows"], ["r_rows"], axis=0, name="gather"),
        c("Reshape", ["r_rows", "rshape"], ["R"], name="reshape"),
        c("DequantizeLinear", ["b_q", "b_scale", "b_zero"], ["b_deq"], axis=0, name="deq"),
        c("Slice", ["b_deq", "start", "stop", "axis0", "step"], ["b_rev"], name="reverse"),
        c("Unsqueeze", ["b_rev", "zero"], ["B"], name="unsqueeze_b"),
        c("Shape", ["p_base"], ["p_dims"], name="shape"),
        c("ConstantOfShape", ["p_dims"], ["p_zeros"], name="zeros",
          value=numpy_helper.from_array(np.asarray([0.5], np.float32))),
        c("Mul", ["p_base", "two"], ["p_2"], name="mul"),
        c("Add", ["p_2", "p_zeros"], ["p_sum"], name="add"),
        c("Neg", ["p_sum"], ["p_neg"], name="neg"),
        c("Expand", ["p_neg", "pshape"], ["P"], name="expand"),
    ]
    return nodes, [numpy_helper.from_array(v, name=k) for k, v in tensors.items()], tensors


def reference_values(nodes, initializers, names, opset=21) -> dict[str, np.ndarray]:
    """The values ONNX's reference evaluator computes for ``names``."""
    g = helper.make_graph(nodes, "weights", [], [info(n) for n in names], initializers)
    ref = ReferenceEvaluator(helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)]))
    return dict(zip(names, ref.run(None, {})))


def test_weights_folded_from_constants_match_onnx_reference(tmp_path):
    """W, R, B and P computed through Split, Concat, Unsqueeze, Transpose, Cast (from float16),
    Gather, Reshape, per-channel DequantizeLinear, a reversing Slice, Shape, ConstantOfShape,
    Mul, Add, Neg and Expand inside an If branch; the reader's weights are the reference
    evaluator's values, mapped; float16 and int8 sources are said once each."""
    nodes, initializers, _ = folding_nodes(np.random.default_rng(7))
    want = reference_values(nodes, initializers, ["W", "R", "B", "P"])
    node = helper.make_node("LSTM", ["X", "W", "R", "B", "", "", "", "P"], ["Y"], name="enc",
                            hidden_size=N)
    m = if_model([*nodes, node], [lstm("other", "W", "R")], top_inits=initializers, opset=21)
    found = scan(save(m, tmp_path))
    # the then-branch's values are not in the else-branch's scope
    assert found.skipped == ("LSTM node 'other' (If node 'cond', else-branch) takes its "
                             "weight W from 'W', which is not a constant gateflow can fold: "
                             "'W' is not defined in the graph",)
    (rec,) = found.modules
    assert (rec.module, rec.cell, rec.where) == ("enc", "lstm-peephole",
                                                 "If node 'cond', then-branch")
    assert rec.assumed == ("float16 weights (11 significant bits): the analysis is of these "
                           "values, in float64",
                           "int8 weights dequantized: the analysis is of the dequantized "
                           "float model")
    assert "weights folded from constants (Add, Cast, Concat, ConstantOfShape, " \
           "DequantizeLinear, Expand, Gather, Mul, Neg, Reshape, Shape, Slice, Split, " \
           "Transpose, Unsqueeze)" in rec.note
    got = rec.weights("lstm-peephole", 0, "forward")
    assert_weights(rec, {k: want[k] for k in ("W", "R", "B")})
    for j, g in enumerate("iof"):
        np.testing.assert_array_equal(got[f"p_{g}"], want["P"][0, j * N:(j + 1) * N])


def test_old_opsets_attribute_forms_are_folded(tmp_path):
    """Opset 9: Slice, Unsqueeze, Squeeze and Split take attributes, not inputs."""
    rng = np.random.default_rng(8)
    big = rng.normal(0, 0.6, (2, 4 * N, D + 2)).astype(np.float32)
    r2 = rng.normal(0, 0.6, (1, 1, 4 * N * N)).astype(np.float32)
    c = helper.make_node
    nodes = [
        c("Slice", ["big"], ["w_sl"], starts=[1, 0], ends=[2, D], axes=[0, 2], name="slice"),
        c("Split", ["w_sl"], ["w_a", "w_b"], axis=1, split=[N, 3 * N], name="split"),
        c("Concat", ["w_a", "w_b"], ["W"], axis=1, name="concat"),
        c("Squeeze", ["r2"], ["r_flat"], axes=[0], name="squeeze"),
        c("Reshape", ["r_flat", "rshape"], ["r_3"], name="reshape"),
        c("Flatten", ["r_3"], ["r_2"], axis=1, name="flatten"),
        c("Unsqueeze", ["r_2"], ["R"], axes=[0], name="unsqueeze"),
    ]
    tensors = [numpy_helper.from_array(big, "big"), numpy_helper.from_array(r2, "r2"),
               numpy_helper.from_array(np.asarray([4 * N, N, 1], np.int64), "rshape")]
    want = reference_values(nodes, tensors, ["W", "R"], opset=9)
    g = graph([*nodes, lstm("enc", "W", "R")], inputs=[info("X", [T, 1, D])], inits=tensors)
    (rec,) = scan(save(model(g, opset=9), tmp_path))
    assert (rec.hidden, rec.input) == (N, D)
    assert_weights(rec, {**want, "B": np.zeros((1, 8 * N), np.float32)})


def chain(n: int) -> list:
    return [helper.make_node("Identity", [f"v{k}"], [f"v{k + 1}"], name=f"id{k}")
            for k in range(n)]


def test_weights_that_cannot_be_folded_are_skipped_with_the_reason(tmp_path):
    w = weights(9)
    stored = inits({"W": w["W"]})
    deep = _onnx_fold.MAX_DEPTH + 2
    cases = {
        "deep": ([*chain(deep), lstm("enc", "W", f"v{deep}")],
                 [*stored, numpy_helper.from_array(w["R"], "v0")], [],
                 r"is computed through more than 64 nodes"),
        "cycle": ([helper.make_node("Identity", ["R2"], ["R1"], name="a"),
                   helper.make_node("Identity", ["R1"], ["R2"], name="b"),
                   lstm("enc", "W", "R1")], stored, [], r"'R1' depends on itself"),
        "sparse": ([lstm("enc", "W", "Rs")], stored, [],
                   r"'Rs' is a sparse initializer, which gateflow does not read"),
        "blocked": ([helper.make_node("DequantizeLinear", ["rq", "rs"], ["R"], name="dq",
                                      axis=1, block_size=N), lstm("enc", "W", "R")],
                    [*stored, numpy_helper.from_array(np.ones((1, 4 * N, N), np.int8), "rq"),
                     numpy_helper.from_array(np.ones((1, 4 * N, 1), np.float32), "rs")], [],
                    r"node 'dq' \(DequantizeLinear\) cannot be folded: blocked quantization"),
        "bad_concat": ([helper.make_node("Concat", ["W", "W"], ["R"], axis=7, name="cat"),
                        lstm("enc", "W", "R")], stored, [],
                       r"node 'cat' \(Concat\) cannot be folded: axis 7 is out of range"),
    }
    for name, (nodes, tensors, _, pattern) in cases.items():
        g = graph(nodes, inputs=[info("X", [T, 1, D])], inits=tensors)
        if name == "sparse":
            sp = helper.make_sparse_tensor(numpy_helper.from_array(w["R"].ravel()[:2], "Rs"),
                                           numpy_helper.from_array(np.asarray([0, 1],
                                                                              np.int64)),
                                           list(w["R"].shape))
            g.sparse_initializer.append(sp)
        found = scan(save(model(g, opset=21 if name == "blocked" else 18), tmp_path,
                          f"{name}.onnx"))
        assert found.modules == () and len(found.skipped) == 1, (name, found)
        line = found.skipped[0]
        assert line.startswith("LSTM node 'enc' takes its weight R from "), line
        assert re.search(pattern, line), (name, line)


def test_memory_budget_is_checked_before_folding(tmp_path):
    """An Expand to 10¹² elements, and a Mul broadcasting two 10⁶-element vectors to 10¹², are
    refused before anything is allocated (the node is skipped with the memory message)."""
    w = weights(10)
    c = helper.make_node
    cases = {
        "expand": [c("Expand", ["one", "huge"], ["R"], name="expand")],
        "mul": [c("Expand", ["one", "column"], ["a"], name="ea"),
                c("Expand", ["one", "row"], ["b"], name="eb"),
                c("Mul", ["a", "b"], ["R"], name="mul")],
    }
    shapes = {"huge": [1, 10 ** 6, 10 ** 6], "column": [1, 10 ** 6, 1], "row": [1, 1, 10 ** 6]}
    for name, nodes in cases.items():
        g = graph([*nodes, lstm("enc", "W", "R")], inputs=[info("X", [T, 1, D])],
                  inits=[*inits({"W": w["W"]}),
                         numpy_helper.from_array(np.ones(1, np.float32), "one"),
                         *(numpy_helper.from_array(np.asarray(v, np.int64), k)
                           for k, v in shapes.items())])
        found = scan(save(model(g), tmp_path, f"{name}.onnx"))
        assert found.modules == ()
        assert re.search(rf"^LSTM node 'enc' takes its weight R from 'R', .*node '{name}' "
                         rf"\({name.title()}\) cannot be folded: reading '.*{name}\.onnx' "
                         r"needs about .* GiB", found.skipped[0]), found.skipped


def test_loop_carried_weight_and_unread_recurrences_are_skipped(tmp_path):
    """A weight carried by a Loop changes each iteration: skipped with the reason. A Loop
    that carries state through plain operators, an unknown domain's op, a PyTorch ATen
    fallback of an LSTM, onnxruntime's AttnLSTM and a branch nested too deep each leave one
    line, so that an empty result is never silent."""
    w = weights(11)
    body = helper.make_graph(
        [lstm("dec", "W", "w_carried", out="Yl", x="X"),
         helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Identity", ["w_carried"], ["w_next"])], "body",
        [info("i", [], TensorProto.INT64), info("cond_in", [], TensorProto.BOOL),
         info("w_carried")], [info("cond_out", [], TensorProto.BOOL), info("w_next"),
                              info("Yl")])
    loop = helper.make_node("Loop", ["trips", "", "R"], ["R_out", "Y"], name="loop", body=body)
    plain = helper.make_graph(
        [helper.make_node("MatMul", ["h_in", "R2"], ["pre"]),
         helper.make_node("Tanh", ["pre"], ["h_out"]),
         helper.make_node("Identity", ["cond_in"], ["cond_out"])], "plain",
        [info("i", [], TensorProto.INT64), info("cond_in", [], TensorProto.BOOL),
         info("h_in")], [info("cond_out", [], TensorProto.BOOL), info("h_out")])
    rnn_loop = helper.make_node("Loop", ["trips", "", "X"], ["H"], name="hand_rnn", body=plain)
    custom = [helper.make_node("MyLSTM", ["X"], [f"c{k}"], domain="acme", name=f"my{k}")
              for k in range(2)]
    aten = helper.make_node("ATen", ["X"], ["A"], domain="org.pytorch.aten", operator="lstm",
                            name="aten_lstm")
    attn = helper.make_node("AttnLSTM", ["X"], ["AY"], domain="com.microsoft", name="attn")
    deep = lstm("too_deep", "W", "R", out="Yd")
    for level in range(_onnx.MAX_NESTING + 1):
        deep = helper.make_node("If", ["cond"], ["Yd"], name=f"if{level}",
                                then_branch=graph([deep], f"t{level}", outputs=("Yd",)),
                                else_branch=graph([], f"e{level}", outputs=()))
    g = graph([loop, rnn_loop, *custom, aten, attn, deep],
              inputs=[info("X", [T, 1, D]), info("trips", [], TensorProto.INT64),
                      info("cond", [], TensorProto.BOOL)],
              inits=inits({"W": w["W"], "R": w["R"], "R2": w["R"][0, :N]}))
    found = scan(save(model(g, domains=["acme", "org.pytorch.aten", "com.microsoft"]),
                      tmp_path))
    assert found.modules == ()
    assert found.skipped == (
        "LSTM node 'dec' (Loop node 'loop', body) takes its weight R from 'w_carried', which "
        "is not a constant gateflow can fold: 'w_carried' is an input of the body of Loop "
        "node 'loop', which changes with each iteration",
        "Loop node 'hand_rnn': its body carries 1 value(s) from one step to the next through "
        "operators that are not an LSTM, GRU or RNN node (a recurrence gateflow does not "
        "read)",
        "ATen node 'aten_lstm': a PyTorch ATen fallback of aten::lstm, which gateflow does "
        "not read; export with operator_export_type=ONNX",
        "AttnLSTM node 'attn': onnxruntime's AttnLSTM operator holds a recurrence gateflow "
        "does not read",
        f"If node 'if0': its then-branch lies deeper than {_onnx.MAX_NESTING} levels of "
        "subgraphs and was not searched",
        "2 node(s) of operator 'MyLSTM' (domain 'acme'), which gateflow does not know: it "
        "could hold a recurrence",
    )
    assert all("\n" not in line and len(line) < 400 for line in found.skipped)


def test_a_state_passed_between_calls_is_said_when_nothing_is_read(tmp_path):
    """h_next = tanh(x W + h U) as plain operators, h in and h_next out: no recurrent node,
    so the same-shaped input and output are named; with an LSTM node in the file they are
    not (the state is the node's)."""
    w = weights(13)
    c = helper.make_node
    cell = [c("MatMul", ["x", "Wx"], ["a"]), c("MatMul", ["h", "Uh"], ["b"]),
            c("Add", ["a", "b"], ["pre"]), c("Tanh", ["pre"], ["h_next"])]
    tensors = [numpy_helper.from_array(w["W"][0, :N].T.copy(), "Wx"),
               numpy_helper.from_array(w["R"][0, :N].T.copy(), "Uh")]
    g = helper.make_graph(cell, "g", [info("x", ["batch", D]), info("h", ["batch", N])],
                          [info("h_next", ["batch", N])], tensors)
    found = scan(save(model(g), tmp_path))
    assert found.modules == ()
    assert found.skipped == (
        "graph input 'h' and output 'h_next' have the same shape [batch, 3]: the model may "
        "carry a state from one call to the next (a recurrence written as plain operators, "
        "with MatMul, Tanh), which gateflow does not read as a cell",)
    g.node.append(lstm("enc", "W", "R", x="X3"))
    g.initializer.extend(inits({"W": w["W"], "R": w["R"]}))
    g.input.append(info("X3", [T, 1, D]))
    g.output.append(info("Y"))
    found = scan(save(model(g), tmp_path, "with_lstm.onnx"))
    assert [r.module for r in found] == ["enc"] and found.skipped == ()


def test_functions_calling_functions_are_bounded(tmp_path, monkeypatch):
    """Each function calls the next one twice: 2^k walks of the innermost body. The walk
    stops at the node budget with one line instead of running away."""
    from gateflow.models.formats import _onnx_walk

    monkeypatch.setattr(_onnx_walk, "MAX_NODES", 500)
    w = weights(14)
    inner = helper.make_node("LSTM", ["x", "w", "r"], ["y"], name="lstm", hidden_size=N)
    fns = [helper.make_function("local", "F0", ["x", "w", "r"], ["y"], [inner],
                                [helper.make_opsetid("", 18)])]
    for k in range(1, 12):
        calls = [helper.make_node(f"F{k - 1}", ["x", "w", "r"], [f"y{j}"], domain="local",
                                  name=f"c{j}") for j in range(2)]
        fns.append(helper.make_function("local", f"F{k}", ["x", "w", "r"], ["y0"], calls,
                                        [helper.make_opsetid("", 18),
                                         helper.make_opsetid("local", 1)]))
    call = helper.make_node("F11", ["X", "W", "R"], ["Y"], name="top", domain="local")
    g = graph([call], inputs=[info("X", [T, 1, D])], inits=inits({"W": w["W"], "R": w["R"]}))
    found = scan(save(model(g, functions=fns, domains=["local"]), tmp_path))
    assert found.skipped == ("the model's graphs and function calls hold more than 500 nodes "
                             "in all; the rest was not searched",)
    assert 0 < len(found.modules) < 500
    assert found.modules[0].module == "top:F11:c0:F10:c0:F9:c0:F8:c0:F7:c0:F6:c0:F5:c0:F4:c0:" \
                                      "F3:c0:F2:c0:F1:c0:F0:lstm"


def test_decay_names_what_was_skipped(tmp_path, sandbox):
    """A file whose only LSTM cannot be read: ``decay`` exits 2 naming it; ``inspect``
    lists it (nothing found is never said silently)."""
    from tests._hostile import assert_clean_error, run_cli

    g = graph([lstm("enc", "W", "W_in")], inputs=[info("X", [T, 1, D]), info("W_in")],
              inits=inits({"W": weights(12)["W"]}))
    onnx.save_model(model(g), "m.onnx")
    assert_clean_error(run_cli("decay", "-w", "m.onnx"),
                       r"found no recurrent module gateflow can read; skipped LSTM node 'enc' "
                       r"takes its weight R from 'W_in'.*'W_in' is a graph input, fed at run "
                       r"time")


# -- torch.onnx.export of scripted control flow ---------------------------------------------------
def exported(tmp_path: Path):
    """A scripted module with an ``if`` (a 2-layer bidirectional LSTM in one branch, a GRU
    in the other) and a ``for`` loop around an RNN, exported by the TorchScript-based
    exporter: the weights are Slice/Concat/Unsqueeze of top-level Constants, used inside the
    subgraphs."""
    torch = pytest.importorskip("torch")

    class Branchy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = torch.nn.LSTM(D, N, num_layers=2, bidirectional=True)
            self.gru = torch.nn.GRU(D, N)
            self.rnn = torch.nn.RNN(D, N, nonlinearity="relu")

        def forward(self, x, flag):
            d = x.shape[2]
            if bool(flag.sum() > 0):
                y = self.lstm(x)[0][:, :, :d]
            else:
                y = self.gru(x)[0][:, :, :d]
            for _ in range(int(flag.sum())):
                y = self.rnn(y)[0][:, :, :d]
            return y

    torch.manual_seed(0)
    m = Branchy()
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(2.0)
    path = tmp_path / "branchy.onnx"
    try:
        with warnings.catch_warnings():  # torch.jit.script and this exporter are deprecated
            warnings.simplefilter("ignore")
            torch.onnx.export(torch.jit.script(m), (torch.zeros(T, 1, D), torch.ones(1)),
                              str(path), dynamo=False, opset_version=17)
    except Exception as exc:  # the TorchScript-based exporter is gone from this torch
        pytest.skip(f"torch.onnx.export(dynamo=False) of a ScriptModule failed: {exc}")
    return m, path


def torch_layer(m, layer: int, direction: str):
    """One layer and direction of PyTorch module ``m`` as a single-layer float64 module."""
    import torch

    kind = type(m)
    d = m.input_size if layer == 0 else m.hidden_size * (2 if m.bidirectional else 1)
    kw = {"nonlinearity": m.nonlinearity} if kind is torch.nn.RNN else {}
    one = kind(d, m.hidden_size, **kw).double()
    suffix = f"_l{layer}" + ("_reverse" if direction == "reverse" else "")
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(one, f"{name}_l0").copy_(getattr(m, f"{name}{suffix}").double())
    return one


def module_step(one, blocks):
    """A single-layer PyTorch module as ``step(x_t, state) -> state``."""
    def step(x, s):
        if "c" in blocks:
            _, (h, c) = one(x[None], (s["h"][None], s["c"][None]))
            return {"h": h[0], "c": c[0]}
        _, h = one(x[None], s["h"][None])
        return {"h": h[0]}
    return step


def test_torch_export_of_scripted_control_flow_matches_autograd(tmp_path):
    """Every LSTM, GRU and RNN of the exported model is found in its branch or loop body,
    read from the folded constants, and its decay (every block, every lag, both directions)
    matches float64 autograd through the PyTorch layer itself."""
    import torch

    from tests._onnx_ref import autograd_norms

    m, path = exported(tmp_path)
    found = scan(path)
    assert found.skipped == ()
    summary = [(r.module, r.kind, r.cell, r.directions, r.input, r.where) for r in found]
    lstm_where = "If node '/If', then-branch"
    assert summary == [
        ("/LSTM", "LSTM node", "lstm", ("forward", "reverse"), D, lstm_where),
        ("/LSTM_1", "LSTM node", "lstm", ("forward", "reverse"), 2 * N, lstm_where),
        ("/GRU", "GRU node", "gru", ("forward",), D, "If node '/If', else-branch"),
        ("/RNN", "RNN node", "rnn-relu", ("forward",), D, "Loop node '/Loop', body"),
    ]
    assert all("weights folded from constants" in r.note for r in found)
    rng = np.random.default_rng(zlib.crc32(b"branchy"))
    x0 = rng.normal(size=(T, 2, D))
    with torch.no_grad():  # layer 1 reads both directions of layer 0
        below = torch.nn.LSTM(D, N, bidirectional=True).double()
        below.load_state_dict({k: v.double() for k, v in m.lstm.state_dict().items()
                               if k.endswith(("_l0", "_l0_reverse"))})
        x1 = below(torch.from_numpy(x0))[0].numpy()
    cases = [(found.modules[0], m.lstm, 0, x0), (found.modules[1], m.lstm, 1, x1),
             (found.modules[2], m.gru, 0, x0), (found.modules[3], m.rnn, 0, np.abs(x0))]
    for rec, torch_module, layer, x in cases:
        blocks = ("h", "c") if rec.cell == "lstm" else ("h",)
        for direction in rec.directions:
            xs = np.ascontiguousarray(x if direction == "forward" else x[::-1])
            want = autograd_norms(module_step(torch_layer(torch_module, layer, direction),
                                              blocks), blocks, xs, N)
            res = gateflow.all_lags(rec.cell, rec.weights(rec.cell, 0, direction), xs)
            for block, ref in want.items():
                got = 10.0 ** np.asarray(res.blocks[block]["log10_frobenius"])
                live = ref > 0  # a relu RNN's lane can die: then both are exactly 0
                assert live.mean() > 0.5 and np.all(got[~live] == 0), (rec.module, block)
                rel = np.abs(got[live] - ref[live]) / ref[live]
                assert rel.max() < 1e-10, (rec.module, direction, block, rel.max())


def test_cli_decay_picks_a_module_in_a_branch(tmp_path, sandbox):
    from tests._hostile import run_cli

    m, path = exported(tmp_path)
    x = np.random.default_rng(5).normal(size=(T, 2, D))
    np.save("x.npy", x)
    out = run_cli("inspect", str(path))
    assert out.exit_code == 0, out.stderr
    assert "/LSTM_1" in out.stdout and "then-branch" in out.stdout
    out = run_cli("decay", "-w", str(path), "--module", "/GRU", "--inputs", "x.npy",
                  "--json", "r.json", "-q")
    assert out.exit_code == 0, out.stderr
    doc = json.loads(Path("r.json").read_text())
    cell, params = gateflow.load_model(path, module="/GRU")
    want = gateflow.all_lags(cell, params, x)
    np.testing.assert_allclose(doc["blocks"]["h/h"]["log10_frobenius"],
                               want.blocks["h/h"]["log10_frobenius"], rtol=0, atol=1e-13)

"""Hostile calls to the public API: every user error is one-line GateflowError, never a raw
exception, a MemoryError or a silent wrong result; and ``derive --steps`` is capped up front.

Each API case calls one function exported by :mod:`gateflow` (or the ``decay`` job) with one
wrong argument and checks the message with a specific pattern. The CLI cases use the
hostile-input harness (``tests/_hostile.py``) in the ``sandbox`` fixture.
"""

from __future__ import annotations

import re
import time

import numpy as np
import pytest
from _hostile import assert_clean_error, assert_unchanged, run_cli, run_subprocess, snapshot

import gateflow as g
from gateflow.cells import param_shapes
from gateflow.jobs._decay import decay

P = g.init_params("lstm", 4, 2, seed=0)
X = g.make_inputs(5, 2, 2, seed=1)
P_RNN = g.init_params("rnn", 3, 2, seed=0)
LAGS = np.arange(1, 6.0)
LOGS = -0.5 * LAGS
LSTM = g.get_cell("lstm")


# finite weights and inputs whose product is not: [10, −10]·[1e308, 1e308] is inf − inf
OVERFLOW_W = {"W": np.array([[10.0, -10.0]]), "U": np.array([[2.0]]), "b": np.zeros(1)}
X_HUGE = np.full((5, 1, 2), 1e308)
HUGE_U = {"W": np.ones((2, 2)), "U": np.diag([1e200, 1e200]), "b": np.zeros(2)}
LYAP_HUGE = {"W": np.ones((2, 2)), "U": np.full((2, 2), 1.7e308), "b": np.zeros(2)}
STACK_P = {"W_l0": np.ones((2, 1)), "U_l0": np.zeros((2, 2)), "b_l0": np.zeros(2),
           "W_l1": np.ones((2, 2)), "U_l1": np.zeros((2, 2)), "b_l1": np.zeros(2)}


def chain(**kw):
    """all_lags on a tiny LSTM with one argument replaced."""
    args = {"cell": "lstm", "params": P, "x": X, **kw}
    return g.all_lags(args.pop("cell"), args.pop("params"), args.pop("x"), **args)


def cell(**kw):
    """A one-state cell declaration with one field replaced."""
    fields = dict(name="t", summary="s", reference="r", state=("h",), params=("W", "U"),
                  equations=("h = tanh(W @ x + U @ h_prev)",))
    return g.Cell(**{**fields, **kw})


CASES = {
    # -- all_lags: inputs x
    "x ragged": (lambda: chain(x=[[1, 2], [3]]), r"inputs is not a rectangular array.*ragged"),
    "x None": (lambda: chain(x=None), r"inputs must hold real numbers; got dtype object"),
    "x str": (lambda: chain(x="abc"), r"inputs must hold real numbers; got dtype <U3"),
    "x 0-d": (lambda: chain(x=np.float64(1.0)), r"inputs must have shape \(T, B, d\); got shape"),
    "x complex": (lambda: chain(x=X.astype(complex)), r"inputs must hold real numbers.*complex128"),
    "x object": (lambda: chain(x=X.astype(object)), r"inputs must hold real numbers.*object"),
    "x bool": (lambda: chain(x=X > 0), r"inputs must hold real numbers; got dtype bool"),
    "x NaN": (lambda: chain(x=np.full((5, 2, 2), np.nan)), r"inputs contain NaN or Inf"),
    "x inf": (lambda: chain(x=np.full((5, 2, 2), np.inf)), r"inputs contain NaN or Inf"),
    "x T = 0": (lambda: chain(x=np.zeros((0, 2, 2))), r"need T >= 1 steps.*T=0"),
    "x wrong d": (lambda: chain(x=np.zeros((5, 2, 3))), r"d=3 features but the weights expect d=2"),
    "x huge (memory estimate)": (
        lambda: chain(x=np.broadcast_to(np.float64(0), (10**9, 10, 2))),
        r"needs about [\d.]+ GiB but only .* is free; use fewer steps"),
    # -- all_lags: params
    "params ragged": (lambda: g.all_lags("rnn", {**P_RNN, "U": [[1, 2], [3]]}, X),
                      r"param 'U' is not array-like"),
    "params None": (lambda: g.all_lags("rnn", None, X), r"params must be a dict of arrays"),
    "params complex": (lambda: g.all_lags("rnn", {**P_RNN, "U": P_RNN["U"] + 0j}, X),
                       r"param 'U' has dtype complex128"),
    "params NaN": (lambda: g.all_lags("rnn", {**P_RNN, "b": np.full(3, np.nan)}, X),
                   r"param 'b' has 3 non-finite"),
    # a broadcast (stride-0) view is checked on the values it holds, counted in full
    "params broadcast NaN": (lambda: g.all_lags("rnn", {**P_RNN, "U": np.broadcast_to(
        np.array([[0.1, np.nan, np.inf]]), (3, 3))}, X), r"param 'U' has 6 non-finite"),
    # -- all_lags: names
    "norms None": (lambda: chain(norms=None), r"norms must be a tuple of names.*got None"),
    "norms ()": (lambda: chain(norms=()), r"choose at least one of frobenius, spectral"),
    "norms ''": (lambda: chain(norms=""), r"choose at least one of frobenius, spectral"),
    "norms 5": (lambda: chain(norms=5), r"norms must be a tuple of names.*got 5"),
    "norms [5]": (lambda: chain(norms=[5]), r"norm must be a name, one of frobenius, spectral"),
    "norms unknown": (lambda: chain(norms=("nuclear",)), r"unknown norm 'nuclear'"),
    "blocks 5": (lambda: chain(blocks=5), r"blocks must be a tuple of names.*got 5"),
    "blocks unknown": (lambda: chain(blocks=("c/y",)), r"unknown block 'c/y' \(did you mean"),
    "blocks [None]": (lambda: chain(blocks=[None]), r"block must be a name, one of h/h"),
    "blocks 2-D array": (lambda: chain(blocks=np.array([["h/h"]])), r"shape \(1, 1\)"),
    "blocks () no probe": (lambda: chain(blocks=()), r"nothing to compute: choose at least one"),
    "cell None": (lambda: chain(cell=None), r"cell must be a cell name such as 'lstm'"),
    "cell list": (lambda: chain(cell=["lstm"]), r"cell must be a cell name.*\['lstm'\]"),
    "cell unknown": (lambda: chain(cell="lstn"), r"unknown cell 'lstn' \(did you mean 'lstm'"),
    "dtype None": (lambda: chain(dtype=None), r"dtype must be 'float64' or 'float32', got None"),
    "dtype int32": (lambda: chain(dtype=np.int32), r"dtype must be 'float64' or 'float32'"),
    "dtype float16": (lambda: chain(dtype="float16"), r"unknown dtype 'float16'"),
    "backend None": (lambda: chain(backend=None), r"backend must be a name, one of numpy, cupy"),
    # -- all_lags: s0, probe, lags, threads, flags
    "s0 5": (lambda: chain(s0=5), r"s0 must be a dict of initial states by block \(h, c\)"),
    "s0 ragged": (lambda: chain(s0={"h": [[1, 2], [3]]}), r"s0\['h'\] is not a rectangular"),
    "s0 complex": (lambda: chain(s0={"h": np.zeros(4, complex)}), r"s0\['h'\] must hold real"),
    "s0 unknown block": (lambda: chain(s0={5: np.zeros(4)}), r"s0 has no state block 5"),
    "probe ragged": (lambda: chain(probe=[[1], [2, 3]]), r"probe is not a rectangular array"),
    "probe complex": (lambda: chain(probe=np.ones(8, complex)), r"probe must hold real numbers"),
    "probe wrong shape": (lambda: chain(probe=np.ones(3)), r"probe must be finite, of shape"),
    "singular_lags 5": (lambda: chain(singular_lags=5), r"singular_lags must be a tuple of lags"),
    "singular lag 0": (lambda: chain(singular_lags=(0,)), r"lag must be an integer in 1\.\.5"),
    "singular lag 99": (lambda: chain(singular_lags=(99,)), r"lag must be an integer in 1\.\.5"),
    "singular lag True": (lambda: chain(singular_lags=(True,)), r"got True"),
    "threads 1.5": (lambda: chain(threads=1.5), r"threads must be a positive integer, got 1\.5"),
    "threads '2'": (lambda: chain(threads="2"), r"threads must be a positive integer, got '2'"),
    "progress 5": (lambda: chain(progress=5), r"progress must be a function"),
    "keep_states 'yes'": (lambda: chain(keep_states="yes"), r"keep_states must be True or False"),
    # -- decay (the job behind `gateflow decay`)
    "decay norms None": (lambda: decay("lstm", P, X, norms=None), r"norms must be a tuple"),
    "decay norms ()": (lambda: decay("lstm", P, X, norms=()),
                       r"choose at least one of frobenius, spectral"),
    "decay blocks 5": (lambda: decay("lstm", P, X, blocks=5), r"blocks must be a tuple"),
    "decay s0 5": (lambda: decay("lstm", P, X, s0=5), r"s0 must be a dict"),
    # -- render, derive, get_cell, Structure
    "render fmt pdf": (lambda: g.render(LSTM, "pdf"),
                       r"unknown format 'pdf' \(valid: text, latex, markdown\)"),
    "render fmt None": (lambda: g.render(LSTM, None), r"format must be a name, one of text"),
    "render steps '3'": (lambda: g.render(LSTM, steps="3"), r"^steps must be a positive .*'3'"),
    "render steps 2.0": (lambda: g.render(LSTM, steps=2.0), r"positive integer, got 2\.0"),
    "render steps True": (lambda: g.render(LSTM, steps=True), r"positive integer, got True"),
    "render steps 0": (lambda: g.render(LSTM, steps=0), r"^steps must be a positive .*0"),
    "render steps 100000": (lambda: g.render("rnn", steps=100000),
                            r"^steps 100000 is too many to expand symbolically \(limit \d+ "
                            r"for rnn.*use `gateflow decay`"),
    "render steps 10**30": (lambda: g.render("gru", steps=10**30), r"limit \d+ for gru"),
    "render block 5": (lambda: g.render(LSTM, block=5), r"block must be a name, one of h/h"),
    "render block ''": (lambda: g.render(LSTM, block=""), r"unknown block '' \(valid: h/h"),
    "render steps on an input block": (lambda: g.render(LSTM, block="h/x", steps=2),
                                       r"^steps expands state blocks.*h/x is an input block"),
    "derive_input 5": (lambda: g.derive_input(5), r"cell must be a cell name.*got 5"),
    "derive_input typo": (lambda: g.derive_input("lstn"), r"unknown cell 'lstn' \(did you mean"),
    "derive_input state block": (lambda: g.derive_input("lstm").block("h/h"),
                                 r"cell 'lstm' has no block 'h/h' \(did you mean 'h/x'"),
    "derive_input steps": (lambda: g.derive_input("lstm").steps("h/x", 2),
                           r"^steps expands the state Jacobian"),
    "render cell None": (lambda: g.render(None), r"cell must be a cell name"),
    "derive dict": (lambda: g.derive({}), r"cell must be a cell name.*got \{\}"),
    "get_cell 5": (lambda: g.get_cell(5), r"cell must be a cell name.*got 5"),
    "get_cell ''": (lambda: g.get_cell(""), r"unknown cell '' \(valid: rnn,"),
    "steps numpy huge": (lambda: g.derive("lstm").steps("c/c", np.int64(10**6)),
                         r"^steps 1000000 is too many.*limit \d+ for lstm"),
    "scalar_steps 0": (lambda: g.derive("gru").scalar_steps("h/h", 0),
                       r"^steps must be a positive integer, got 0"),
    "block list": (lambda: g.derive("lstm").block(["c/c"]), r"has no block \['c/c'\]"),
    # -- fit_decay, memory_horizon, summarize
    "fit all NaN": (lambda: g.fit_decay(LAGS, np.full(5, np.nan)), r"contain NaN \(no finite"),
    "fit all +inf": (lambda: g.fit_decay(LAGS, np.full(5, np.inf)), r"contain \+inf"),
    "fit one NaN": (lambda: g.fit_decay(LAGS, np.where(LAGS == 3, np.nan, LOGS)), r"NaN"),
    "fit empty": (lambda: g.fit_decay([], []), r"lags must be a non-empty 1-D array"),
    "fit ragged": (lambda: g.fit_decay([[1, 2], [3]], LOGS), r"lags is not a rectangular"),
    "fit complex": (lambda: g.fit_decay(LAGS, LOGS + 1j), r"log10 norms must hold real"),
    "fit lengths": (lambda: g.fit_decay(LAGS, LOGS[:3]), r"equal length; got shapes \(5,\)"),
    "fit unsorted lags": (lambda: g.fit_decay(LAGS[::-1], LOGS), r"strictly increasing"),
    "fit threshold 0": (lambda: g.fit_decay(LAGS, LOGS, threshold=0), r"threshold must be > 0"),
    "fit threshold str": (lambda: g.fit_decay(LAGS, LOGS, threshold="1e-6"),
                          r"threshold must be a real number, got '1e-6'"),
    "fit start beyond": (lambda: g.fit_decay(LAGS, LOGS, start=100), r"beyond the last lag"),
    "horizon threshold 0": (lambda: g.memory_horizon(LAGS, LOGS, 0), r"threshold must be > 0"),
    "horizon None": (lambda: g.memory_horizon(None, None), r"lags must hold real numbers"),
    "summarize 1-D": (lambda: g.summarize(LOGS), r"shape \(T, B\).*got shape \(5,\)"),
    "summarize empty": (lambda: g.summarize(np.zeros((3, 0))), r"got shape \(3, 0\)"),
    "summarize NaN": (lambda: g.summarize(np.full((3, 2), np.nan)), r"contain NaN"),
    "summarize lags": (lambda: g.summarize(np.zeros((3, 2)), lags=[1, 2]), r"one entry per row"),
    # -- theory
    "gate_path norm": (lambda: g.gate_path(LAGS, 1.0, 4, "nuclear"), r"unknown norm 'nuclear'"),
    "gate_path n 0": (lambda: g.gate_path(LAGS, 1.0, 0), r"hidden size n must be a positive"),
    "gate_path n 2.5": (lambda: g.gate_path(LAGS, 1.0, 2.5), r"positive integer, got 2\.5"),
    "gate_path bias NaN": (lambda: g.gate_path(LAGS, np.nan), r"bias must be a finite number"),
    "gate_path bias None": (lambda: g.gate_path(LAGS, None), r"bias must be a real number"),
    "mean_field str": (lambda: g.mean_field_tanh("1"), r"sigma_w2 must be a real number"),
    "mean_field negative": (lambda: g.mean_field_tanh(-1), r"sigma_w2 must be >= 0"),
    "mean_field array": (lambda: g.mean_field_tanh(np.ones(3)), r"got a ndarray of dtype"),
    "mean_field degree huge": (lambda: g.mean_field_tanh(1.0, degree=10**9),
                               r"degree must be an integer in 1\.\.1000"),
    "mean_field max_iter huge": (lambda: g.mean_field_tanh(1.0, max_iter=10**12),
                                 r"max_iter must be an integer in 1\.\.1000000"),
    "mean_field tol 0": (lambda: g.mean_field_tanh(1.0, tol=0), r"tol must be > 0"),
    "pascanu U ragged": (lambda: g.pascanu_bound([[1, 2], [3]], LAGS), r"U is not a rectangular"),
    "pascanu U not square": (lambda: g.pascanu_bound(np.ones((2, 3)), LAGS), r"square"),
    "pascanu U NaN": (lambda: g.pascanu_bound(np.full((2, 2), np.nan), LAGS), r"NaN or inf"),
    "pascanu gamma < 0": (lambda: g.pascanu_bound(np.eye(2), LAGS, gamma=-1), r"gamma must be"),
    "pascanu norm None": (lambda: g.pascanu_bound(np.eye(2), LAGS, norm=None), r"norm must be a"),
    # -- Cell declarations
    "Cell state None": (lambda: cell(state=None), r"state must be a tuple of strings"),
    "Cell state str": (lambda: cell(state="h"), r"state must be a tuple of strings.*got 'h'"),
    "Cell equations str": (lambda: cell(equations="h = W @ x"), r"equations must be a tuple"),
    "Cell name None": (lambda: cell(name=None), r"Cell name must be a string, got None"),
    "Cell bad syntax": (lambda: cell(equations=("h = W @@ x",)), r"cannot parse 'h = W @@ x'"),
    "Cell bad name": (lambda: cell(params=("W x", "U")), r"'W x' is not a valid name"),
    "Cell memory_bias": (lambda: cell(memory_bias="W"), r"memory_bias must be \(a parameter"),
    "Cell undeclared": (lambda: cell(equations=("h = tanh(W @ x + U @ h_prev + q)",)),
                        r"undeclared symbols \['q'\]"),
    # -- parameters and inputs (sizes refused by an estimate before allocating)
    "init_params huge": (lambda: g.init_params("lstm", 10**6, 10**6), r"needs about .* GiB"),
    "make_inputs huge": (lambda: g.make_inputs(10**6, 10**6, 10**3), r"needs about .* GiB"),
    "init_params n '4'": (lambda: g.init_params("lstm", "4", 2), r"hidden size n must be"),
    "make_inputs dist": (lambda: g.make_inputs(5, 2, 2, dist="cauchy"), r"unknown input dist"),
    "to_torch ragged": (lambda: g.to_torch_state_dict("rnn", {**P_RNN, "U": [[1, 2], [3]]}),
                        r"param 'U' is not array-like"),
    "from_torch None": (lambda: g.from_torch_state_dict("lstm", None),
                        r"state_dict must be a dict of arrays"),
    "from_torch missing": (lambda: g.from_torch_state_dict(
        "lstm", {"weight_hh_l0": np.zeros((12, 3))}), r"misses 'weight_ih_l0'"),
    "from_torch no layout": (lambda: g.from_torch_state_dict(
        "mgu", {"weight_hh_l0": np.zeros((3, 3)), "weight_ih_l0": np.zeros((3, 3))}),
        r"cell 'mgu' has no PyTorch layout"),
    # -- models: stacks, model files
    "stack depth 0": (lambda: g.stack("lstm", 0), r"layers must be an integer in 1\.\.64"),
    "stack depth huge": (lambda: g.stack("gru", 10**6), r"layers must be an integer in 1\.\.64"),
    "stack cell None": (lambda: g.stack(None, 2), r"cell must be a cell name"),
    "find_models None": (lambda: g.find_models(None), r"model path must be a str"),
    "find_models empty": (lambda: g.find_models(""), r"model path is empty"),
    "load_model bytes": (lambda: g.load_model(b"m.pt"), r"model path must be a str"),
    "load_model unknown ext": (lambda: g.load_model("m.tflite"), r"unknown extension '.tflite'"),
    "load_initial_state bytes": (lambda: g.load_initial_state(b"m.onnx"),
                                 r"model path must be a str"),
    "load_initial_state folder": (lambda: g.load_initial_state("."), r"it is a folder"),
    "capture not a model": (lambda: g.capture(object()), r"capture needs"),
    "lyapunov k 0": (lambda: g.lyapunov("rnn", P_RNN, np.zeros((4, 1, P_RNN["W"].shape[1])),
                                        k=0), r"k \(number of exponents\) must be"),
    "lyapunov x 2-D": (lambda: g.lyapunov("rnn", P_RNN, np.zeros((4, 2))),
                       r"inputs must have shape \(T, B, d\)"),
    "kaplan_yorke text": (lambda: g.kaplan_yorke("abc"), r"exponents must hold real numbers"),
    "analyze not a model": (lambda: g.analyze(object()), r"capture needs"),
    # -- no silent wrong numbers: finite factors whose products overflow
    "all_lags W x overflows": (lambda: g.all_lags("rnn", OVERFLOW_W, X_HUGE),
                               r"^the product W·x overflows float64 at step 1: the weights W "
                               r"\(\|value\| up to 10\) times the inputs x_1 \(up to 1e\+308\)"),
    "decay W x overflows": (lambda: decay("rnn", OVERFLOW_W, X_HUGE),
                            r"the product W·x overflows float64 at step 1"),
    "all_lags W x overflows float32": (
        lambda: g.all_lags("rnn", OVERFLOW_W, np.full((3, 1, 2), 1e38), dtype="float32"),
        r"the product W·x overflows float32 at step 1"),
    "all_lags U h overflows (s0)": (
        lambda: g.all_lags("rnn", {**OVERFLOW_W, "W": np.zeros((1, 2))}, np.zeros((3, 1, 2)),
                           s0={"h": np.array([1e308])}), r"the product U·h overflows float64 at "
        r"step 1: the weights U \(\|value\| up to 2\) times the state h_0 \(s0\)"),
    "all_lags stack layer output overflows": (
        lambda: g.all_lags(g.stack("rnn", 2), {**STACK_P, "W_l1": np.full((2, 2), 1.7e308)},
                           np.ones((3, 1, 1))), r"the product W_l1·h_l0 overflows float64"),
    "all_lags backward overflows": (
        lambda: g.all_lags("rnn", HUGE_U, np.full((2, 1, 2), 1e-300)),
        r"^the backward sweep overflows float64 at lag 1 \(rows on the state\)"),
    "all_lags spectral on a huge s0": (
        lambda: g.all_lags("lstm", P, X, s0={"c": np.full(4, 1.7e308)}, norms=("spectral",)),
        r"the backward sweep overflows float64 at lag 1 .*a huge s0"),
    "all_lags pull-back onto x overflows": (
        lambda: g.all_lags("rnn", {**P_RNN, "W": np.full((3, 2), 1e200)},
                           np.full((2, 1, 2), 1e-300), blocks=("h/x",)),
        r"the backward sweep overflows float64 at lag 1 \(rows on x\)"),
    "lyapunov U h overflows": (
        lambda: g.lyapunov("rnn", LYAP_HUGE, np.ones((5, 1, 2))),
        r"the product U·h overflows float64 at step 2"),
    "lyapunov tangents overflow": (
        lambda: g.lyapunov("rnn", LYAP_HUGE, np.full((5, 1, 2), 1e-300)),
        r"the tangent map J_t Q overflows float64 at step 2"),
    "fit_decay threshold 10**400": (lambda: g.fit_decay(LAGS, LOGS, threshold=10**400),
                                    r"threshold must be a finite number, got one beyond"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_api_user_error_is_one_line_gateflow_error(name):
    call, pattern = CASES[name]
    with pytest.raises(g.GateflowError, match=pattern) as info:
        call()
    message = str(info.value)
    assert "\n" not in message and "\r" not in message, message
    assert len(message) < 400, message


# -- memory from the real size: broadcast views are sized by their shapes ------------------
BIG = 3000  # a (4n, n) float64 matrix is 288 MB; its broadcast view is 8 bytes


def _view(*shape) -> np.ndarray:
    return np.broadcast_to(np.float64(0.1), shape)


RNN_VIEW = {"W": _view(BIG, 2), "U": _view(BIG, BIG), "b": _view(BIG)}
LSTM_VIEW = {p: _view(*shape) for p, shape in param_shapes("lstm", BIG, 2).items()}
SD_VIEW = {"weight_ih_l0": _view(4 * BIG, 2), "weight_hh_l0": _view(4 * BIG, BIG),
           "bias_ih_l0": _view(4 * BIG), "bias_hh_l0": _view(4 * BIG)}
X_SMALL = np.zeros((3, 1, 2))
BROADCAST = {
    "all_lags": (lambda tmp: g.all_lags("rnn", RNN_VIEW, X_SMALL), r"this run needs about"),
    "decay": (lambda tmp: g.decay("rnn", RNN_VIEW, X_SMALL), r"this run needs about"),
    "lyapunov": (lambda tmp: g.lyapunov("rnn", RNN_VIEW, X_SMALL),
                 r"this Lyapunov spectrum needs about"),
    "save_params": (lambda tmp: g.save_params(tmp / "w.safetensors", "lstm", LSTM_VIEW),
                    r"saving params to '.*w.safetensors' needs about"),
    "from_torch_state_dict": (lambda tmp: g.from_torch_state_dict("lstm", SD_VIEW),
                              r"converting the state_dict to params of cell 'lstm' needs "
                              r"about"),
    "to_torch_state_dict": (lambda tmp: g.to_torch_state_dict("lstm", LSTM_VIEW),
                            r"converting the params of cell 'lstm' to a PyTorch state_dict "
                            r"needs about"),
}


@pytest.mark.parametrize("name", list(BROADCAST))
def test_broadcast_views_are_sized_from_their_shapes(name, tmp_path, monkeypatch):
    """``np.broadcast_to`` weights (8 bytes held, hundreds of MB once copied) are measured
    by their shapes against the budget before anything is copied or checked element by
    element: gateflow's one line, and NumPy never allocates more than a few MB."""
    import tracemalloc

    import gateflow._memory

    monkeypatch.setattr(gateflow._memory, "available_memory", lambda backend="numpy": 16 << 20)
    call, pattern = BROADCAST[name]
    tracemalloc.start()
    try:
        with pytest.raises(g.GateflowError, match=pattern + r" [\d.]+ [GM]iB but only 16 MiB "
                                                            r"is free") as info:
            call(tmp_path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "\n" not in str(info.value) and len(str(info.value)) < 300
    assert peak < 4 << 20, f"{peak / 2**20:.0f} MiB allocated before the check"
    assert list(tmp_path.iterdir()) == []


def test_every_exported_function_is_covered():
    """Each public function of gateflow has at least one hostile case above."""
    import inspect

    from test_hostile_jobs_api import CASES as JOB_CASES  # the jobs' own hostile cases

    functions = {n for n in g.__all__ if inspect.isfunction(getattr(g, n))}
    covered = {n for n in functions
               if any(re.search(rf"\b{n}\b|g\.{n}\(", inspect.getsource(call))
                      for call, _ in (*CASES.values(), *JOB_CASES.values()))}
    # the I/O functions have their own hostile suite (test_hostile_files / test_params)
    assert functions - covered <= {"load_params", "load_inputs", "save_params"}, \
        functions - covered


# -- what stays allowed -------------------------------------------------------------------
def test_allowed_unusual_but_valid_arguments():
    """Non-contiguous arrays, NumPy integer scalars, lists and comma strings are fine."""
    ref = chain(norms=("frobenius",), threads=1)
    x = np.zeros((5, 2, 4))
    x[:, :, ::2] = X
    got = chain(x=x[:, :, ::2], norms="frobenius", blocks=list(LSTM.blocks),
                singular_lags=np.array([1, 5]), threads=np.int64(1))
    for b in LSTM.blocks:
        np.testing.assert_array_equal(got.blocks[b]["log10_frobenius"],
                                      ref.blocks[b]["log10_frobenius"])
    assert g.render("gru", steps=np.int64(2)) == g.render(g.get_cell("gru"), steps=2)


def test_fit_decay_of_an_exactly_zero_gradient_says_zero():
    """-inf (an exactly zero norm) is data, not a failure: factor 0, horizon at lag 1."""
    fit = g.fit_decay(LAGS, np.full(5, -np.inf))
    assert fit.factor == 0.0 and fit.slope == -np.inf and fit.used == 0 and fit.horizon == 1


# -- the symbolic k-step expansion is capped by its cost ----------------------------------
@pytest.mark.parametrize("name", list(g.CELLS))
def test_expansion_limit_follows_the_cost_model(name):
    from gateflow.symbolic._derive import MAX_EXPANSION_NODES

    s = g.derive(name)
    k = s.max_steps
    assert k >= 5  # every cell shows a few steps
    assert s.expansion_cost(k) <= MAX_EXPANSION_NODES < s.expansion_cost(k + 1)
    with pytest.raises(g.GateflowError, match=rf"limit {k} for {re.escape(name)}\b"):
        s.check_steps(k + 1)


@pytest.mark.parametrize("steps", ["100000", str(10**30)])
@pytest.mark.parametrize("name", ["rnn", "lstm", "gru"])
def test_cli_derive_refuses_runaway_steps_up_front(sandbox, name, steps):
    before = snapshot(sandbox)
    start = time.perf_counter()
    out = run_cli("derive", name, "--steps", steps)
    assert time.perf_counter() - start < 5  # refused by the estimate, nothing expanded
    limit = g.derive(name).max_steps
    if len(steps) > 18:  # past what any option takes: refused as it is parsed
        assert_clean_error(out, rf"--steps: '{steps}' is not an integer \(more than 18 "
                                r"digits\)")
    else:
        assert_clean_error(out, rf"--steps {steps} is too many to expand symbolically "
                                rf"\(limit {limit} for {name}\b.*use `gateflow decay`")
    assert out.stdout == ""
    assert_unchanged(before, snapshot(sandbox))


@pytest.mark.parametrize("name", ["lstm", "rnn"])
def test_cli_derive_at_and_beyond_the_limit(sandbox, name):
    limit = g.derive(name).max_steps
    start = time.perf_counter()
    ok = run_cli("derive", name, "--steps", limit)
    assert ok.exit_code == 0, ok.stderr
    assert time.perf_counter() - start < 30  # a few seconds; generous for slow machines
    assert f"_{{t−{limit}}} = " in ok.stdout
    assert_clean_error(run_cli("derive", name, "--steps", limit + 1, "--block",
                               g.get_cell(name).blocks[0]), rf"limit {limit} for {name}")


@pytest.mark.parametrize("fmt", ["latex", "markdown"])
def test_cli_derive_limit_holds_in_every_format(sandbox, fmt):
    out = run_cli("derive", "gru", "--steps", g.derive("gru").max_steps + 1, "--format", fmt)
    assert_clean_error(out, r"too many to expand symbolically \(limit \d+ for gru")


# -- no silent wrong numbers: what overflows is refused, what does not is exact --------------
def test_large_but_representable_jacobians_are_exact():
    """U = 1e100·I, W = 0: h stays 0, so tanh' = 1 and ∂h_T/∂h_{T−k} = U^k, whose
    Frobenius norm √2·10^(100k) is far beyond float64 from k = 4; the renormalised sweep
    gets it, and no overflow check refuses it."""
    params = {"W": np.zeros((2, 2)), "U": np.diag([1e100, 1e100]), "b": np.zeros(2)}
    res = g.all_lags("rnn", params, np.ones((6, 1, 2)))
    k = np.arange(1, 7)
    np.testing.assert_allclose(res.blocks["h/h"]["log10_frobenius"][:, 0],
                               100 * k + np.log10(2) / 2, rtol=1e-13)
    np.testing.assert_allclose(res.blocks["h/h"]["log10_spectral"][:, 0], 100 * k, rtol=1e-13)


@pytest.mark.parametrize(("dtype", "scale"), [("float64", 2.0**1019), ("float32", 2.0**123)])
def test_cancelling_products_within_range_are_exact(dtype, scale):
    """[10, −10]·[s, s] = 0 when 10·s is finite (and exact: s a power of two, so that a
    fused multiply-add leaves no rounding residue): h stays 0, tanh' = 1 and
    ∂h_T/∂h_{T−k} = 2^k; nothing is refused just for being large."""
    res = g.all_lags("rnn", OVERFLOW_W, np.full((4, 1, 2), scale), dtype=dtype)
    np.testing.assert_allclose(res.blocks["h/h"]["log10_frobenius"][:, 0],
                               np.arange(1, 5) * np.log10(2), rtol=1e-6)


def _overflow_files():
    np.savez("w.npz", **OVERFLOW_W)
    np.save("x.npy", X_HUGE)
    np.savez("big.npz", **LYAP_HUGE)


@pytest.mark.parametrize(("args", "pattern"), [
    (("decay", "--cell", "rnn", "--weights", "w.npz", "-x", "x.npy", "--json", "out.json"),
     r"the product W·x overflows float64 at step 1"),
    (("decay", "--cell", "rnn", "--weights", "w.npz", "-x", "x.npy", "--csv", "-"),
     r"the product W·x overflows float64 at step 1"),
    (("lyapunov", "--cell", "rnn", "--weights", "w.npz", "-x", "x.npy", "--json", "out.json"),
     r"the product W·x overflows float64 at step 1"),
    (("lyapunov", "--cell", "rnn", "--weights", "big.npz", "--json", "out.json"),
     r"the product U·h overflows float64"),
    (("decay", "--cell", "rnn", "--weights", "big.npz", "--input-scale", "1e-300",
      "--json", "out.json"), r"overflows float64 at (step|lag)"),
], ids=["decay-json", "decay-csv-stdout", "lyapunov-inputs", "lyapunov-weights",
        "decay-huge-weights"])
def test_cli_overflow_is_one_line_and_writes_nothing(sandbox, args, pattern):
    """The overflow is an error (never null, "exactly zero", or NaN exponents), said in one
    line, and no output is written."""
    _overflow_files()
    before = snapshot(sandbox)
    out = run_cli(*args, "-q")
    assert_clean_error(out, pattern)
    assert out.stdout == ""
    assert_unchanged(before, snapshot(sandbox))


def test_cli_overflow_prints_no_numpy_warnings(sandbox):
    """With Python's default warning filters (not the suite's "error"), the spectral norm
    of overflowing rows is one error line, not a storm of RuntimeWarnings and a
    LinAlgError."""
    np.savez("s0.npz", c=np.full(3, 1.7e308))
    np.savez("big.npz", **LYAP_HUGE)
    for args in (("--cell", "lstm", "--hidden", "3", "--s0", "s0.npz"),
                 ("--cell", "rnn", "--weights", "big.npz", "--input-scale", "1e-300")):
        out = run_subprocess("decay", *args, "--steps", "5", "--batch", "1", "--norms",
                             "frobenius,spectral", "-q", cwd=sandbox)
        assert_clean_error(out, r"overflows float64")
        assert "Warning" not in out.stderr

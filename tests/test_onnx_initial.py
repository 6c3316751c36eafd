"""ONNX initial states: an ``initial_h``/``initial_c`` the file fixes to constants is where a
run starts, said in a ``note:`` line and recorded in the JSON (``input_data.s0``); ``--s0``
replaces it; one fed at run time (a graph input) is not the file's: the run starts from
zeros and the record's ``assumed`` says so.

The numbers are checked against a float64 PyTorch autograd reference written from the
node's raw arrays (W, R, B and the initial state as the file holds them, in ONNX's layout
and gate order: :mod:`tests._onnx_ref`), started from that state, every block at every lag;
the same reference started from zeros differs, so a run that ignored the state would fail.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

from _hostile import assert_clean_error, assert_unchanged, run_cli, snapshot  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import gateflow as gf  # noqa: E402
from gateflow.models.formats import _onnx  # noqa: E402
from tests._onnx_ref import RTOL, autograd_norms, onnx_step  # noqa: E402

N, D, T = 3, 2, 7
GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
CELLS = {"LSTM": "lstm", "GRU": "gru", "RNN": "rnn"}


# -- models -------------------------------------------------------------------------------
def weights(op: str, nd: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    g = GATES[op]
    return {"W": rng.normal(0, 0.6, (nd, g * N, D)), "R": rng.normal(0, 0.6, (nd, g * N, N)),
            "B": rng.normal(0, 0.4, (nd, 2 * g * N))}


def model(op: str, w: dict, states: dict, *, direction: str = "forward", layout: int = 0,
          nodes=(), inits=(), **attrs) -> onnx.ModelProto:
    """One ``op`` node over graph input X with weights ``w`` as initializers; ``states``
    maps ``initial_h``/``initial_c`` to an array (an initializer of that name's value), to
    ``"input"`` (a graph input) or to the name of a value ``nodes`` compute."""
    dbl = TensorProto.DOUBLE
    tensors = [numpy_helper.from_array(a, k) for k, a in w.items()] + list(inits)
    graph_inputs = [helper.make_tensor_value_info("X", dbl, None)]
    names = {}
    for state, value in states.items():
        if isinstance(value, np.ndarray):
            names[state] = f"{state}_value"
            tensors.append(numpy_helper.from_array(value, names[state]))
        elif value == "input":
            names[state] = state
            graph_inputs.append(helper.make_tensor_value_info(state, dbl, None))
        else:
            names[state] = value
    slots = ["X", "W", "R", "B", "", names.get("initial_h", ""), names.get("initial_c", "")]
    while not slots[-1]:
        slots.pop()
    node = helper.make_node(op, slots, ["Y", "Y_h"], name="rnn", direction=direction,
                            hidden_size=N, layout=layout, **attrs)
    graph = helper.make_graph([*nodes, node], "g", graph_inputs,
                              [helper.make_tensor_value_info("Y_h", dbl, None)], tensors)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 22)])


def save(m, name: str = "m.onnx") -> Path:
    path = Path(name).resolve()
    onnx.save_model(m, str(path))
    return path


def scan(path: Path):
    with open(path, "rb") as fh:
        return _onnx.scan(fh, path.stat().st_size, path)


def inputs(B: int, seed: int = 5) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 1.0, (T, B, D))  # time-major


def raw_start(states: dict, k: int, layout: int, B: int) -> dict[str, np.ndarray]:
    """Direction k's initial state from the file's raw arrays (ONNX layout), (B, n)."""
    out = {}
    for state, value in states.items():
        if isinstance(value, np.ndarray):
            v = value[:, k] if layout == 1 else value[k]
            out[state.removeprefix("initial_")] = np.broadcast_to(v, (B, N))
    return out


def reference(op: str, w: dict, k: int, x: np.ndarray, start: dict | None, **kw) -> dict:
    torch = pytest.importorskip("torch")  # noqa: F841
    blocks = ("h", "c") if op == "LSTM" else ("h",)
    return autograd_norms(onnx_step(op, w, k, **kw), blocks, x, N, start)


def assert_matches(got: dict, want: dict, zeros: dict) -> int:
    """gateflow's log10 Frobenius norms (block -> (T, B)) against the reference from the
    file's state; the reference from zeros must differ (the state matters)."""
    compared = 0
    apart = 0.0
    for block, ref in want.items():
        g = 10.0 ** np.asarray(got[block], dtype=float)
        nz = ref != 0
        assert np.all(g[~nz] == 0), block
        rel = np.abs(g[nz] - ref[nz]) / ref[nz]
        assert rel.max() < RTOL, (block, rel.max())
        compared += rel.size
        apart = max(apart, float(np.max(np.abs(zeros[block][nz] - ref[nz]) / ref[nz])))
    assert apart > 1e-3, apart  # started from zeros, the numbers are not these
    return compared


CASES = {
    # op, direction, layout, the file's states, batch, GRU's linear_before_reset
    "lstm-h-and-c": ("LSTM", "forward", 0, {
        "initial_h": np.array([[[0.9, -0.4, 0.3]]]),
        "initial_c": np.array([[[1.5, 0.2, -2.0]]])}, 2, None),
    "lstm-h-only": ("LSTM", "forward", 0, {"initial_h": np.full((1, 1, N), 0.9)}, 2, None),
    "gru-bidirectional": ("GRU", "bidirectional", 0, {
        "initial_h": np.array([[[0.7, -0.8, 0.1]], [[-0.5, 0.6, 0.9]]])}, 2, 1),
    "gru-cho-reverse": ("GRU", "reverse", 0, {"initial_h": np.array([[[0.9, 0.9, -0.9]]])},
                        3, 0),
    "rnn-batch-major-per-sequence": ("RNN", "forward", 1, {
        "initial_h": np.array([[[0.8, -0.6, 0.2]], [[-0.9, 0.4, 0.7]]])}, 2, None),
    # layout=1: [batch, num_directions, hidden]
    "gru-bidirectional-batch-major-per-sequence": ("GRU", "bidirectional", 1, {
        "initial_h": np.array([[[0.8, -0.6, 0.2], [0.5, 0.5, -0.1]],
                               [[-0.9, 0.4, 0.7], [0.1, -0.7, 0.3]]])}, 2, 1),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_file_initial_state_is_where_decay_starts(case, sandbox):
    """API: load_initial_state gives the file's state; all_lags from it matches autograd
    from the raw state, every block, every lag, every direction."""
    op, direction, layout, states, B, lbr = CASES[case]
    nd = 2 if direction == "bidirectional" else 1
    w = weights(op, nd, seed=len(case))
    extra = {} if lbr is None else {"linear_before_reset": lbr}
    path = save(model(op, w, states, direction=direction, layout=layout, **extra))
    (rec,) = scan(path)
    assert rec.assumed == ()
    names = ", ".join(f"{s} '{s}_value'" for s in states)
    assert rec.initial_from == f"ONNX {op} node 'rnn': {names}"
    assert f"initial state fixed by the file ({names}): runs start from it" in rec.note
    x = inputs(B)
    cell = CELLS[op] if lbr != 0 else "gru-cho"
    compared = 0
    for k, d in enumerate(rec.directions):
        s0 = gf.load_initial_state(path, direction=d)
        start = raw_start(states, k, layout, B)
        for block, v in s0.items():  # (n,) when the same for every sequence, else (B, n)
            want = start.get(block, np.zeros((B, N)))
            np.testing.assert_array_equal(np.broadcast_to(v, (B, N)), want)
            assert v.shape == ((B, N) if case.endswith("per-sequence") else (N,))
        assert set(s0) == ({"h", "c"} if op == "LSTM" else {"h"})
        c, params = gf.load_model(path, direction=d)
        assert c.name == cell
        xs = np.ascontiguousarray(x if d == "forward" else x[::-1])
        res = gf.all_lags(c, params, xs, s0=s0, norms=("frobenius",))
        kw = {"linear_before_reset": lbr or 0}
        want = reference(op, w, k, xs, start, **kw)
        zeros = reference(op, w, k, xs, None, **kw)
        got = {b: res.blocks[b]["log10_frobenius"] for b in want}
        compared += assert_matches(got, want, zeros)
    assert compared >= T * B * nd


@pytest.mark.parametrize("case", ["lstm-h-and-c", "gru-cho-reverse",
                                  "rnn-batch-major-per-sequence"])
def test_decay_cli_starts_from_it_says_so_and_records_it(case, sandbox):
    op, direction, layout, states, B, lbr = CASES[case]
    w = weights(op, 1, seed=len(case))
    extra = {} if lbr is None else {"linear_before_reset": lbr}
    path = save(model(op, w, states, direction=direction, layout=layout, **extra))
    x = inputs(B)
    np.save("x.npy", x.transpose(1, 0, 2) if layout == 1 else x)  # as the node reads X
    out = run_cli("decay", "-w", path, "-x", "x.npy", "--json", "d.json", "--norms",
                  "frobenius", "--quiet")
    assert out.exit_code == 0, out.stderr
    names = ", ".join(f"{s} '{s}_value'" for s in states)
    source = f"ONNX {op} node 'rnn': {names}"
    said = [line for line in out.stderr.splitlines() if "initial state" in line]
    assert said == [f"note: the run starts from the initial state the model file fixes "
                    f"({source}), not zeros; --s0 FILE gives another"]
    doc = json.loads(Path("d.json").read_text())
    blocks = ["c", "h"] if op == "LSTM" else ["h"]
    assert doc["input_data"]["s0"] == {"source": "model file", "from": source,
                                       "blocks": blocks}
    xs = np.ascontiguousarray(x if direction == "forward" else x[::-1])
    kw = {"linear_before_reset": lbr or 0}
    start = raw_start(states, 0, layout, B)
    want = reference(op, w, 0, xs, start, **kw)
    zeros = reference(op, w, 0, xs, None, **kw)
    got = {b: np.array([[np.nan if v is None else v for v in row]
                        for row in doc["blocks"][b]["log10_frobenius"]]) for b in want}
    assert assert_matches(got, want, zeros) >= T * B


def test_s0_replaces_the_file_state_and_says_so(sandbox):
    op, direction, layout, states, B, _ = CASES["lstm-h-and-c"]
    w = weights(op, 1, seed=3)
    path = save(model(op, w, states))
    x = inputs(B)
    np.save("x.npy", x)
    mine = {"h": np.array([-0.3, 0.5, 0.8]), "c": np.array([[0.1, -1.0, 2.0],
                                                             [0.4, 0.4, -0.6]])}
    np.savez("s0.npz", **mine)
    out = run_cli("decay", "-w", path, "-x", "x.npy", "--s0", "s0.npz", "--json", "d.json",
                  "--norms", "frobenius", "--quiet")
    assert out.exit_code == 0, out.stderr
    source = "ONNX LSTM node 'rnn': initial_h 'initial_h_value', initial_c 'initial_c_value'"
    said = [line for line in out.stderr.splitlines() if "initial state" in line]
    assert said == [f"note: --s0 replaces the initial state the model file fixes ({source})"]
    doc = json.loads(Path("d.json").read_text())
    s0 = doc["input_data"]["s0"]
    assert (s0["source"], s0["replaces"], Path(s0["path"]).name) == ("s0", source, "s0.npz")
    assert re.fullmatch(r"[0-9a-f]{64}", s0["sha256"])
    want = reference(op, w, 0, x, {b: np.broadcast_to(v, (B, N)) for b, v in mine.items()})
    file_start = reference(op, w, 0, x, raw_start(states, 0, 0, B))
    got = {b: np.array(doc["blocks"][b]["log10_frobenius"], dtype=float) for b in want}
    assert_matches(got, want, file_start)  # the user's state, not the file's


def test_lyapunov_starts_from_it(sandbox):
    """``gateflow lyapunov``: the same spectrum as lyapunov() from the file's state, not
    the one from zeros; said and recorded."""
    op, direction, layout, states, B, _ = CASES["lstm-h-and-c"]
    path = save(model(op, weights(op, 1, seed=4), states))
    x = inputs(B, seed=9)
    np.save("x.npy", x)
    out = run_cli("lyapunov", "-w", path, "-x", "x.npy", "--json", "l.json", "--quiet")
    assert out.exit_code == 0, out.stderr
    assert "note: the run starts from the initial state the model file fixes" in out.stderr
    doc = json.loads(Path("l.json").read_text())
    assert doc["input_data"]["s0"]["source"] == "model file"
    cell, params = gf.load_model(path)
    s0 = gf.load_initial_state(path)
    from_file = gf.lyapunov(cell, params, x, transient=T // 10, s0=s0)
    from_zeros = gf.lyapunov(cell, params, x, transient=T // 10)
    got = np.array(doc["exponents"], dtype=float)
    np.testing.assert_allclose(got, from_file.exponents, rtol=1e-12, atol=0)
    assert np.max(np.abs(got - from_zeros.exponents)) > 1e-6
    np.savez("s0.npz", h=np.zeros(N), c=np.zeros(N))  # --s0 replaces it here too
    out = run_cli("lyapunov", "-w", path, "-x", "x.npy", "--s0", "s0.npz", "--json",
                  "l2.json", "--quiet")
    assert out.exit_code == 0, out.stderr
    np.testing.assert_allclose(np.array(json.loads(Path("l2.json").read_text())["exponents"],
                                        dtype=float), from_zeros.exponents, rtol=1e-12, atol=0)


def test_a_state_fed_at_run_time_starts_from_zeros_and_is_said(sandbox):
    w = weights("LSTM", 1, seed=6)
    path = save(model("LSTM", w, {"initial_h": "input",
                                  "initial_c": np.full((1, 1, N), 0.5)}))
    (rec,) = scan(path)
    assert rec.assumed == ("initial_h is not a constant of the file ('initial_h' is a graph "
                           "input, fed at run time): the analysis starts from zeros unless "
                           "s0 gives the initial state",)  # a Python caller's word: s0
    s0 = gf.load_initial_state(path)  # c from the file, h zeros
    np.testing.assert_array_equal(s0["c"], np.full(N, 0.5))
    np.testing.assert_array_equal(s0["h"], np.zeros(N))
    path = save(model("GRU", weights("GRU", 1, seed=6), {"initial_h": "input"}), "g.onnx")
    (rec,) = scan(path)
    assert rec.initial is None and rec.initial_from == "" and len(rec.assumed) == 1
    assert gf.load_initial_state(path) is None
    out = run_cli("decay", "-w", path, "--steps", 3, "--batch", 1, "--quiet")
    assert out.exit_code == 0, out.stderr
    assert out.stderr.splitlines() == [  # the command line's word: --s0
        f"note: {rec.assumed[0]}".replace("unless s0 gives", "unless --s0 gives")]
    assert "unless --s0 gives the initial state" in out.stderr


def _batch_shape(value: float | None) -> list:
    """Nodes that make a (1, B, n) tensor from X's batch, as torch.onnx.export writes a
    zero initial state: ConstantOfShape(Concat(1, Shape(X)[1], n))."""
    one = numpy_helper.from_array(np.array([1], np.int64), "one")
    n = numpy_helper.from_array(np.array([N], np.int64), "n")
    index = numpy_helper.from_array(np.array([1], np.int64), "at1")
    nodes = [helper.make_node("Shape", ["X"], ["shape"]),
             helper.make_node("Gather", ["shape", "at1"], ["batch"], axis=0),
             helper.make_node("Concat", ["one", "batch", "n"], ["dims"], axis=0)]
    kw = {} if value is None else {"value": numpy_helper.from_array(np.array([value]))}
    nodes.append(helper.make_node("ConstantOfShape", ["dims"], ["full"], **kw))
    return [one, n, index], nodes


def test_zeros_of_the_batch_size_are_zeros_and_a_fill_is_a_state(sandbox):
    inits, nodes = _batch_shape(None)
    path = save(model("GRU", weights("GRU", 1, 7), {"initial_h": "full"}, nodes=nodes,
                      inits=inits))
    (rec,) = scan(path)
    assert (rec.assumed, rec.initial) == ((), None)  # zeros, proved: nothing to say
    inits, nodes = _batch_shape(0.25)
    w = weights("GRU", 1, 8)
    path = save(model("GRU", w, {"initial_h": "full"}, nodes=nodes, inits=inits), "f.onnx")
    (rec,) = scan(path)
    assert rec.assumed == ()
    assert rec.initial_from == "ONNX GRU node 'rnn': initial_h 'full' broadcast over the batch"
    s0 = gf.load_initial_state(path)
    np.testing.assert_array_equal(s0["h"], np.full(N, 0.25))
    x = inputs(2)
    cell, params = gf.load_model(path)
    res = gf.all_lags(cell, params, x, s0=s0, norms=("frobenius",))
    want = reference("GRU", w, 0, x, {"h": np.full((2, N), 0.25)})
    zeros = reference("GRU", w, 0, x, None)
    assert_matches({"h/h": res.blocks["h/h"]["log10_frobenius"]}, want, zeros)


def test_torch_export_of_a_learned_initial_state(sandbox):
    """torch.onnx.export (TorchScript exporter) writes a learned h0 as Expand of the
    parameter to X's batch, and no h0 as ConstantOfShape zeros: the first is the run's s0
    (the parameter's values), the second says nothing."""
    torch = pytest.importorskip("torch")

    class Net(torch.nn.Module):
        def __init__(self, learned: bool):
            super().__init__()
            torch.manual_seed(0)
            self.rnn = torch.nn.LSTM(D, N)
            self.h0 = torch.nn.Parameter(torch.tensor([[[0.9, -0.3, 0.4]]]))
            self.learned = learned

        def forward(self, x):
            if not self.learned:
                return self.rnn(x)[0]
            h0 = self.h0.expand(1, x.shape[1], N).contiguous()
            return self.rnn(x, (h0, torch.zeros(1, x.shape[1], N)))[0]

    for learned in (False, True):
        name = f"t{int(learned)}.onnx"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(Net(learned), (torch.zeros(5, 2, D),), name, dynamo=False,
                                  input_names=["x"], dynamic_axes={"x": {1: "B"}})
        except Exception as exc:  # an exporter that is not installed or not supported
            pytest.skip(f"torch.onnx.export(dynamo=False) failed: {exc}")
        (rec,) = scan(Path(name))
        assert rec.assumed == ()
        s0 = gf.load_initial_state(name)
        if not learned:
            assert s0 is None and rec.initial is None
            continue
        np.testing.assert_array_equal(s0["h"], np.array([0.9, -0.3, 0.4], np.float32))
        np.testing.assert_array_equal(s0["c"], np.zeros(N))
        assert "broadcast over the batch" in rec.initial_from


@pytest.mark.parametrize(("states", "match"), [
    ({"initial_h": np.zeros((1, N)) + 0.5},
     r"has initial_h 'initial_h_value' of shape \[1, 3\]; the operator expects "
     r"\[num_directions=1, batch, hidden=3\]"),
    ({"initial_h": np.full((2, 1, N), 0.5)},
     r"of shape \[2, 1, 3\]; the operator expects \[num_directions=1, batch, hidden=3\]"),
    ({"initial_h": np.full((1, 1, N), 3, np.int64)},
     r"has initial_h 'initial_h_value' of ONNX data type 7 \(INT64\); it must be of X's "
     "float type"),
    ({"initial_h": np.array([[[0.5, np.nan, 0.0]]])},
     "has initial_h 'initial_h_value' with values that are not finite"),
])
def test_an_unusable_initial_state_skips_the_node(states, match, sandbox):
    path = save(model("GRU", weights("GRU", 1, 9), states))
    found = scan(path)
    assert found.modules == ()
    (line,) = found.skipped
    assert line.startswith("GRU node 'rnn' ") and re.search(match, line), line


def test_a_batch_the_file_state_does_not_have_is_refused(sandbox):
    states = {"initial_h": np.array([[[0.5, 0.1, 0.2], [0.3, 0.3, 0.3], [0.0, 0.0, 1.0]]])}
    path = save(model("GRU", weights("GRU", 1, 10), states))
    before = snapshot(".")
    out = run_cli("decay", "-w", path, "--steps", 3, "--batch", 2, "--json", "d.json", "-q")
    assert_clean_error(out, r"the initial state the model file fixes \(ONNX GRU node 'rnn': "
                            r"initial_h 'initial_h_value'\) holds 3 sequences \(block 'h'\) "
                            r"but the run has 2; give 3 sequences")
    assert_unchanged(before, snapshot("."))
    out = run_cli("decay", "-w", path, "--steps", 3, "--batch", 3, "-q")
    assert out.exit_code == 0, out.stderr


def test_a_batch_the_file_state_does_not_have_is_refused_everywhere(sandbox):
    """Per-sequence states of 3 sequences and a run of 2: ``lyapunov`` and the API refuse
    it as ``decay`` does (one line each), also when only ``c`` differs by sequence."""
    row = np.array([0.5, 0.1, 0.2])
    states = {"initial_h": np.broadcast_to(row, (1, 3, N)).copy(),  # the same for all three
              "initial_c": np.array([[[0.5, 0.1, 0.2], [0.3, 0.3, 0.3], [0.0, 0.0, 1.0]]])}
    path = save(model("LSTM", weights("LSTM", 1, 11), states))
    np.save("x.npy", inputs(2))
    before = snapshot(".")
    for job in ("decay", "lyapunov"):
        out = run_cli(job, "-w", path, "-x", "x.npy", "--json", "o.json", "-q")
        assert_clean_error(out, r"the initial state the model file fixes \(ONNX LSTM node "
                                r"'rnn': initial_h 'initial_h_value' \(the same for its 3 "
                                r"sequences: used for any batch\), initial_c "
                                r"'initial_c_value'\) holds 3 sequences \(block 'c'\) but the "
                                r"run has 2; give 3 sequences \(--batch 3, or --inputs with 3 "
                                r"sequences\), or another initial state with --s0 FILE$")
    assert_unchanged(before, snapshot("."))
    s0 = gf.load_initial_state(path)
    assert s0["h"].shape == (N,) and s0["c"].shape == (3, N)
    cell, params = gf.load_model(path)
    with pytest.raises(gf.GateflowError, match=r"s0\['c'\] must be finite, of shape \(3,\) or "
                                               r"\(2, 3\); got shape \(3, 3\)"):
        gf.all_lags(cell, params, inputs(2), s0=s0)


def test_a_state_the_same_for_its_sequences_serves_any_batch(sandbox):
    """An initial_h of 3 equal sequences is one state: a run of 2 sequences starts each
    from it, and the note says so; the numbers are autograd's from that state."""
    row = np.array([0.9, -0.4, 0.3])
    states = {"initial_h": np.broadcast_to(row, (1, 3, N)).copy()}
    w = weights("GRU", 1, 12)
    path = save(model("GRU", w, states, linear_before_reset=1))
    x = inputs(2)
    np.save("x.npy", x)
    out = run_cli("decay", "-w", path, "-x", "x.npy", "--json", "d.json", "--norms",
                  "frobenius", "-q")
    assert out.exit_code == 0, out.stderr
    source = ("ONNX GRU node 'rnn': initial_h 'initial_h_value' (the same for its 3 "
              "sequences: used for any batch)")
    assert [line for line in out.stderr.splitlines() if "initial state" in line] == [
        f"note: the run starts from the initial state the model file fixes ({source}), not "
        "zeros; --s0 FILE gives another"]
    doc = json.loads(Path("d.json").read_text())
    assert doc["input_data"]["s0"] == {"source": "model file", "from": source,
                                       "blocks": ["h"]}
    kw = {"linear_before_reset": 1}
    want = reference("GRU", w, 0, x, {"h": np.broadcast_to(row, (2, N))}, **kw)
    zeros = reference("GRU", w, 0, x, None, **kw)
    got = {b: np.array(doc["blocks"][b]["log10_frobenius"], dtype=float) for b in want}
    assert assert_matches(got, want, zeros) >= T * 2

"""``gateflow decay``: the JSON/CSV contract, provenance, determinism, and bad inputs
(exit 2, one ``error:`` line, no file written, existing files untouched)."""

from __future__ import annotations

import csv
import hashlib
import json
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import gateflow
from gateflow import CELLS, get_cell
from gateflow.cli import app
from gateflow.jobs._decay import decay, write_outputs
from gateflow.models._params import init_params, make_inputs, save_params
from gateflow.numeric._chain import all_lags

runner = CliRunner()
ALL = sorted(CELLS)
META_KEYS = {"format", "format_version", "gateflow_version", "cell", "lags", "norms", "layout",
             "blocks", "direct", "direct_means", "null_means", "seed", "dtype", "backend",
             "shapes", "weights", "input_data", "input_lags", "inputs", "cell_record"}


def invoke(*args):
    return runner.invoke(app, ["decay", *map(str, args)])


def small(cell="lstm", n=3, d=2, T=5, B=2):
    return ("--cell", cell, "--hidden", n, "--input-size", d, "--steps", T, "--batch", B)


def _ok(result):
    assert result.exit_code == 0, result.output
    return result


# -- the contract -------------------------------------------------------------------------
def check_contract(doc, cell, T, B, n, d, norms=("frobenius", "spectral"), blocks=None):
    cell = get_cell(cell)
    keys = [f"log10_{nm}" for nm in norms]
    assert set(doc) == META_KEYS
    assert doc["cell"] == cell.name
    assert doc["cell_record"] == cell.to_record()  # the equations, not only the name
    assert doc["lags"] == list(range(1, T + 1))
    assert doc["null_means"] == "exactly zero"
    assert doc["norms"] == list(norms)
    assert doc["gateflow_version"] == gateflow.__version__
    other = {"p": max(1, n // 2)} if cell.name == "lstm-proj" else {}  # its default size p
    assert doc["shapes"] == {"T": T, "B": B, "n": n, "d": d, **other}
    assert doc["dtype"] == "float64" and doc["backend"] == "numpy"
    assert list(doc["blocks"]) == list(blocks or cell.blocks)
    want_direct = {"lstm": ["c"], "lstm-peephole": ["c"], "lstm-cifg": ["c"],
                   "lstm-proj": ["c"], "rnn": [], "rnn-relu": []}.get(cell.name, ["h"])
    assert list(doc["direct"]) == want_direct
    for group in (doc["blocks"], doc["direct"]):
        for dd in group.values():
            assert list(dd) == keys
            for series in dd.values():
                assert len(series) == T
                assert all(len(row) == B for row in series)
                assert all(v is None or isinstance(v, float) for row in series for v in row)


def test_lstm_blocks_and_values(tmp_path):
    out = tmp_path / "lstm.json"
    _ok(invoke(*small(), "--json", out, "--quiet"))
    text = out.read_text()
    assert "NaN" not in text and "Infinity" not in text
    doc = json.loads(text)
    check_contract(doc, "lstm", 5, 2, 3, 2)
    assert set(doc["blocks"]) == {"h/h", "c/c", "c/h", "h/c"}
    assert doc["seed"] == 0
    assert doc["weights"] == {"source": "init", "n": 3, "d": 2, "seed": 0, "scheme": "pytorch",
                              "sigma_w": 1.0, "sigma_v": 1.0, "sigma_b": 0.0, "gate_bias": None,
                              "chrono": None}
    assert doc["input_data"] == {"source": "init", "T": 5, "B": 2, "d": 2, "dist": "normal",
                             "scale": 1.0, "seed": 1}
    # the numbers are all_lags' on the same generated data
    res = all_lags("lstm", init_params("lstm", 3, 2, seed=0), make_inputs(5, 2, 2, seed=1))
    for b, dd in res.blocks.items():
        for k, a in dd.items():
            np.testing.assert_array_equal(np.array(doc["blocks"][b][k]), a)
    np.testing.assert_array_equal(np.array(doc["direct"]["c"]["log10_frobenius"]),
                                  res.direct["c"]["log10_frobenius"])


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cell=st.sampled_from(ALL), n=st.integers(1, 4), d=st.integers(1, 3),
       T=st.integers(1, 6), B=st.integers(1, 3),
       norms=st.sampled_from([("frobenius",), ("spectral",), ("frobenius", "spectral")]),
       data=st.data())
def test_contract_random_shapes(tmp_path, cell, n, d, T, B, norms, data):
    c = get_cell(cell)
    blocks = data.draw(st.lists(st.sampled_from(c.blocks), min_size=1, unique=True)
                       .map(lambda bs: tuple(b for b in c.blocks if b in bs)))
    out, out_csv = tmp_path / "r.json", tmp_path / "r.csv"
    _ok(invoke(*small(cell, n, d, T, B), "--norms", ",".join(norms), "--blocks",
               ",".join(blocks), "--json", out, "--csv", out_csv, "--quiet", "--overwrite"))
    doc = json.loads(out.read_text())
    check_contract(doc, cell, T, B, n, d, norms, blocks)
    with open(out_csv, newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["block", "lag", "batch", "log10_frobenius", "log10_spectral"]
    assert len(rows) - 1 == (len(blocks) + len(doc["direct"])) * T * B
    names = {r[0] for r in rows[1:]}
    assert names == set(blocks) | {f"{s}|direct" for s in doc["direct"]}
    for r in rows[1:]:
        for col, nm in ((3, "frobenius"), (4, "spectral")):
            if nm not in norms:
                assert r[col] == ""
            else:
                series = (doc["blocks"][r[0]] if "|" not in r[0]
                          else doc["direct"][r[0].split("|")[0]])[f"log10_{nm}"]
                v = series[int(r[1]) - 1][int(r[2])]
                assert (r[col] == "-inf") if v is None else float(r[col]) == v


def test_csv_row_count_lstm(tmp_path):
    out = tmp_path / "r.csv"
    _ok(invoke(*small(T=7, B=3), "--csv", out, "--quiet"))
    rows = out.read_text().splitlines()
    assert rows[0] == "block,lag,batch,log10_frobenius,log10_spectral"
    assert len(rows) - 1 == (4 + 1) * 7 * 3  # 4 blocks + c|direct
    assert sum(r.startswith("c|direct,") for r in rows) == 7 * 3


def test_files_as_sources_and_zero_jacobian_is_null(tmp_path):
    params = init_params("rnn", 4, 3, seed=2)
    params["U"][:] = 0
    w, x = tmp_path / "w.safetensors", tmp_path / "x.npy"
    save_params(w, "rnn", params)
    np.save(x, make_inputs(6, 2, 3, seed=3))
    out, out_csv = tmp_path / "o.json", tmp_path / "o.csv"
    _ok(invoke("--cell", "rnn", "--weights", w, "--inputs", x, "--json", out, "--csv", out_csv,
               "-q"))
    text = out.read_text()
    assert "Infinity" not in text and "NaN" not in text
    doc = json.loads(text)
    check_contract(doc, "rnn", 6, 2, 4, 3)
    assert doc["blocks"]["h/h"]["log10_frobenius"] == [[None, None]] * 6
    assert doc["blocks"]["h/h"]["log10_spectral"] == [[None, None]] * 6
    assert doc["seed"] is None
    for key, path in (("weights", w), ("input_data", x)):
        model = {"module": "", "kind": "nn.RNN", "framework": "PyTorch", "layer": 0,
                 "direction": "forward"} if key == "weights" else {
            "batch_first": False, "layout": "time-major",
            "layout_from": "time-major: the file does not say"}
        assert doc[key] == {"source": "file", "path": str(path),
                            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), **model}
    assert all(r.endswith(",-inf,-inf") for r in out_csv.read_text().splitlines()[1:])


def test_generated_inputs_take_d_from_weight_file(tmp_path):
    w = tmp_path / "w.npz"
    save_params(w, "gru", init_params("gru", 3, 5, seed=0))
    out = tmp_path / "o.json"
    _ok(invoke("--cell", "gru", "--weights", w, "--steps", 4, "--batch", 1, "--json", out, "-q"))
    doc = json.loads(out.read_text())
    assert doc["shapes"] == {"T": 4, "B": 1, "n": 3, "d": 5}
    assert doc["weights"]["source"] == "file" and doc["input_data"]["source"] == "init"


def test_same_seed_bit_identical_other_seed_differs(tmp_path):
    paths = [tmp_path / f"{i}.json" for i in range(3)]
    args = (*small("gru", 4, 3, 8, 2), "--init", "gaussian", "--sigma-w", "1.3")
    for p, seed in zip(paths, (7, 7, 8)):
        _ok(invoke(*args, "--seed", seed, "--json", p, "-q"))
    assert paths[0].read_bytes() == paths[1].read_bytes()
    assert paths[0].read_bytes() != paths[2].read_bytes()


def test_summary_table_and_quiet(tmp_path):
    result = _ok(invoke(*small(), "--json", tmp_path / "a.json"))
    assert "h/h" in result.stdout and "c|direct" in result.stdout and "k=5" in result.stdout
    quiet = _ok(invoke(*small(), "--json", tmp_path / "b.json", "--quiet"))
    assert quiet.stdout == "" and quiet.stderr == ""


def test_library_write_outputs_is_all_or_nothing(tmp_path):
    res = decay("rnn", init_params("rnn", 3, 2), make_inputs(4, 1, 2))
    ok, bad = tmp_path / "ok.json", tmp_path / "missing" / "x.csv"
    with pytest.raises(gateflow.GateflowError):
        write_outputs(res, ok, bad)
    assert not ok.exists() and os.listdir(tmp_path) == []


def test_written_files_get_normal_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        _ok(invoke(*small(), "--json", tmp_path / "a.json", "-q"))
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "a.json").st_mode & 0o777 == 0o644
    os.chmod(tmp_path / "a.json", 0o640)  # an existing file keeps its mode
    _ok(invoke(*small(), "--json", tmp_path / "a.json", "-q", "--overwrite"))
    assert os.stat(tmp_path / "a.json").st_mode & 0o777 == 0o640


# -- bad inputs ---------------------------------------------------------------------------
def _npz(path, **arrays):
    np.savez(path, **arrays)
    return path


@pytest.fixture
def files(tmp_path):
    """Weight and input files, good and bad, named by what is wrong with them."""
    torch = pytest.importorskip("torch")
    d = tmp_path / "in"
    d.mkdir()
    good = init_params("lstm", 3, 2, seed=0)
    f = {}
    save_params(d / "lstm.safetensors", "lstm", good)
    f["good"] = d / "lstm.safetensors"
    np.save(d / "x.npy", make_inputs(5, 2, 2))
    f["x"] = d / "x.npy"
    f["wrong_shape"] = _npz(d / "shape.npz", **{**good, "U_f": np.zeros((3, 4))})
    f["missing_key"] = _npz(d / "missing.npz", **{k: v for k, v in good.items() if k != "U_f"})
    f["extra_key"] = _npz(d / "extra.npz", **good, junk=np.zeros(3))
    save_params(d / "gru.safetensors", "gru", init_params("gru", 3, 2))
    f["other_cell_torch"] = d / "gru.safetensors"
    f["other_cell_names"] = _npz(d / "mgu.npz", **init_params("mgu", 3, 2))
    f["nan_weights"] = _npz(d / "nan.npz", **{**good, "b_f": np.array([0.0, np.nan, 0.0])})
    x_inf = make_inputs(5, 2, 2)
    x_inf[2, 1, 0] = np.inf
    np.save(d / "xinf.npy", x_inf)
    f["inf_inputs"] = d / "xinf.npy"
    np.save(d / "xd.npy", make_inputs(5, 2, 3))
    f["wrong_d_inputs"] = d / "xd.npy"
    np.save(d / "t0.npy", np.zeros((0, 2, 2)))
    f["T0_inputs"] = d / "t0.npy"
    np.save(d / "b0.npy", np.zeros((5, 0, 2)))
    f["B0_inputs"] = d / "b0.npy"
    np.save(d / "x2d.npy", np.zeros((5, 2)))
    f["2d_inputs"] = d / "x2d.npy"
    torch.save(torch.nn.LSTM(2, 3), d / "module.pt")
    f["pt_module"] = d / "module.pt"
    torch.save([torch.zeros(3)], d / "list.pt")
    f["pt_list"] = d / "list.pt"
    torch.save({"weight_ih_l0": torch.zeros(12, 2), "step": 5}, d / "ckpt.pt")
    f["pt_checkpoint"] = d / "ckpt.pt"
    return f


BAD = {
    "wrong shape": lambda f: ("--cell", "lstm", "--weights", f["wrong_shape"], "--inputs", f["x"]),
    "missing key": lambda f: ("--cell", "lstm", "--weights", f["missing_key"], "--inputs", f["x"]),
    "extra key": lambda f: ("--cell", "lstm", "--weights", f["extra_key"], "--inputs", f["x"]),
    "weights of a GRU": lambda f: ("--cell", "lstm", "--weights", f["other_cell_torch"],
                                   "--inputs", f["x"]),
    "weights of an MGU": lambda f: ("--cell", "lstm", "--weights", f["other_cell_names"],
                                    "--inputs", f["x"]),
    "NaN in weights": lambda f: ("--cell", "lstm", "--weights", f["nan_weights"],
                                 "--inputs", f["x"]),
    "Inf in inputs": lambda f: ("--cell", "lstm", "--weights", f["good"], "--inputs",
                                f["inf_inputs"]),
    "inputs of wrong d": lambda f: ("--cell", "lstm", "--weights", f["good"], "--inputs",
                                    f["wrong_d_inputs"]),
    "2-D inputs": lambda f: ("--cell", "lstm", "--weights", f["good"], "--inputs",
                             f["2d_inputs"]),
    "T=0 file": lambda f: ("--cell", "lstm", "--weights", f["good"], "--inputs", f["T0_inputs"]),
    "B=0 file": lambda f: ("--cell", "lstm", "--weights", f["good"], "--inputs", f["B0_inputs"]),
    "T=0": lambda f: (*small(T=0),),
    "B=0": lambda f: (*small(B=0),),
    "n=0": lambda f: (*small(n=0),),
    "pickled module": lambda f: ("--cell", "lstm", "--weights", f["pt_module"], "--inputs",
                                 f["x"]),
    "pt list": lambda f: ("--cell", "lstm", "--weights", f["pt_list"], "--inputs", f["x"]),
    "pt checkpoint": lambda f: ("--cell", "lstm", "--weights", f["pt_checkpoint"], "--inputs",
                                f["x"]),
    "missing weights file": lambda f: ("--cell", "lstm", "--weights", "nope.safetensors",
                                       "--inputs", f["x"]),
    "unknown block": lambda f: (*small(), "--blocks", "h/h,c/y"),
    "block of another cell": lambda f: (*small("gru"), "--blocks", "c/c"),
    "unknown norm": lambda f: (*small(), "--norms", "frobenius,nuclear"),
    "empty norm list": lambda f: (*small(), "--norms", ","),
    "unknown cell": lambda f: (*small("lstn"),),
    "unknown dtype": lambda f: (*small(), "--dtype", "float16"),
    "unknown backend": lambda f: (*small(), "--backend", "jax"),
    "unknown init": lambda f: (*small(), "--init", "xavier"),
    "unknown input dist": lambda f: (*small(), "--input-dist", "cauchy"),
    "gate bias on rnn": lambda f: (*small("rnn"), "--gate-bias", "2"),
    "init option next to a file": lambda f: ("--cell", "lstm", "--weights", f["good"],
                                             "--hidden", 3, "--inputs", f["x"]),
    "input option next to a file": lambda f: ("--cell", "lstm", "--weights", f["good"],
                                              "--inputs", f["x"], "--steps", 9),
    "negative seed": lambda f: (*small(), "--seed", "-1"),
    "seed next to both files": lambda f: ("--cell", "lstm", "--weights", f["good"],
                                          "--inputs", f["x"], "--seed", 3),
}


#: What each refusal's one ``error:`` line must say (the cause, in the user's terms).
BAD_MESSAGE = {
    "wrong shape": "'U_f' (recurrent) has shape (3, 4); expected (3, 3)",
    "missing key": "miss 'U_f'",
    "extra key": "unexpected keys 'junk'",
    "weights of a GRU": "--cell lstm contradicts the file: nn.GRU is cell 'gru'",
    "weights of an MGU": "look like cell 'mgu'",
    "NaN in weights": "'b_f' has 1 non-finite value",
    "Inf in inputs": "xinf.npy have 1 non-finite value",
    "inputs of wrong d": "have d=3 features",
    "2-D inputs": "expected 3-D (T, B, d)",
    "T=0 file": "T (time steps) is 0",
    "B=0 file": "B (batch) is 0",
    "T=0": "--steps (T) must be a positive integer, got 0",
    "B=0": "--batch (B) must be a positive integer, got 0",
    "n=0": "--hidden (n) must be a positive integer, got 0",
    "pickled module": "pickles torch.nn.modules.rnn.LSTM",
    "pt list": "holds a list, not a state_dict",
    "pt checkpoint": "the state_dict misses 'weight_hh_l0'",
    "missing weights file": "'nope.safetensors' not found",
    "unknown block": "unknown block 'c/y' (did you mean",
    "block of another cell": "unknown block 'c/c' (valid: h/h, h/x)",
    "unknown norm": "unknown norm 'nuclear'",
    "empty norm list": "no norm chosen",
    "unknown cell": "unknown cell 'lstn' (did you mean 'lstm'?)",
    "unknown dtype": "unknown dtype 'float16'",
    "unknown backend": "unknown backend 'jax'",
    "unknown init": "unknown init scheme 'xavier'",
    "unknown input dist": "unknown input distribution 'cauchy'",
    "gate bias on rnn": "does not apply to cell 'rnn'",
    "init option next to a file": "--hidden applies only to generated data",
    "input option next to a file": "--steps applies only to generated data",
    "negative seed": "seed must be an integer >= 0, got -1",
    "seed next to both files": "--seed applies only to generated data",
}


def test_every_bad_case_names_its_message():
    assert set(BAD_MESSAGE) == set(BAD)


def test_norm_choices_and_columns_come_from_the_registry(tmp_path):
    """--norms accepts exactly the registered observers (an unknown one lists them); each
    lands under its observer's key in the JSON and as a CSV column, next to the default
    norms' columns; a newly registered observer needs no edit in the jobs."""
    from gateflow.jobs._contract import DEFAULT_NORMS
    from gateflow.numeric._observers import NORMS, OBSERVERS

    bad = invoke(*small(), "--norms", "nuclear", "-q")
    assert bad.exit_code == 2 and all(nm in bad.stderr for nm in NORMS)
    for nm in NORMS:
        j, c = tmp_path / f"{nm}.json", tmp_path / f"{nm}.csv"
        _ok(invoke(*small(), "--norms", nm, "--json", j, "--csv", c, "-q"))
        doc = json.loads(j.read_text())
        assert doc["norms"] == [nm] and list(doc["blocks"]["h/h"]) == [OBSERVERS[nm].key]
        header = c.read_text().splitlines()[0].split(",")
        assert header == ["block", "lag", "batch", *(
            OBSERVERS[o].key for o in NORMS if o in DEFAULT_NORMS or o == nm)]


def _check_refused(result, tmp_path, before):
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    assert sorted(os.listdir(tmp_path / "out")) == sorted(before)
    leftovers = [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    assert not leftovers


@pytest.mark.parametrize("what", BAD)
@pytest.mark.parametrize("existing", [False, True])
def test_bad_input_exits_2_and_writes_nothing(what, existing, files, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    j, c = out / "r.json", out / "r.csv"
    if existing:
        j.write_text("old json")
        c.write_text("old csv")
        os.utime(j, (1_000_000, 1_000_000))
    before = os.listdir(out)
    result = invoke(*BAD[what](files), "--json", j, "--csv", c)
    _check_refused(result, tmp_path, before)
    # the cause, or (checked first, before any work) the existing output file
    want = ("already exists",) if existing else ()
    assert any(m in result.stderr for m in (BAD_MESSAGE[what], *want)), result.stderr
    if existing:
        assert j.read_text() == "old json" and c.read_text() == "old csv"
        assert os.stat(j).st_mtime == 1_000_000


def test_seed_next_to_both_files_is_refused(tmp_path):
    """--seed only seeds generated data: with --weights and --inputs both given it would be
    ignored (and the JSON say "seed": null), so it is refused like the other options."""
    (tmp_path / "out").mkdir()
    w, x = tmp_path / "w.npz", tmp_path / "x.npy"
    save_params(w, "rnn", init_params("rnn", 3, 2, seed=0))
    np.save(x, make_inputs(4, 1, 2))
    result = invoke("--cell", "rnn", "--weights", w, "--inputs", x, "--seed", 5,
                    "--json", tmp_path / "out" / "r.json", "--plot", tmp_path / "out" / "p.png")
    _check_refused(result, tmp_path, [])
    assert "--seed" in result.stderr and "generated" in result.stderr
    # either file alone leaves the seed something to seed
    _ok(invoke("--cell", "rnn", "--weights", w, "--steps", 3, "--batch", 1, "--seed", 5,
               "--json", tmp_path / "out" / "a.json", "-q"))
    _ok(invoke("--cell", "rnn", "--hidden", 3, "--inputs", x, "--seed", 5,
               "--json", tmp_path / "out" / "b.json", "-q"))


@pytest.mark.parametrize("flag", ["--json", "--csv"])
def test_output_in_missing_folder(flag, tmp_path):
    (tmp_path / "out").mkdir()
    other = "--csv" if flag == "--json" else "--json"
    result = invoke(*small(), flag, tmp_path / "nowhere" / "r.out", other,
                    tmp_path / "out" / "ok.out")
    _check_refused(result, tmp_path, [])
    assert "does not exist" in result.stderr


def test_json_and_csv_same_path(tmp_path):
    (tmp_path / "out").mkdir()
    p = tmp_path / "out" / "same"
    result = invoke(*small(), "--json", p, "--csv", p)
    _check_refused(result, tmp_path, [])
    assert "--json and --csv name the same file" in result.stderr


@pytest.mark.parametrize("source", ["generated", "files"])
def test_out_of_memory_is_refused_before_computing(source, monkeypatch, tmp_path, files):
    import gateflow._memory as memory

    calls = []

    def tiny(backend):
        calls.append(backend)
        return 10_000  # bytes

    monkeypatch.setattr(memory, "available_memory", tiny)
    (tmp_path / "out").mkdir()
    args = small() if source == "generated" else ("--cell", "lstm", "--weights", files["good"],
                                                   "--inputs", files["x"])
    result = invoke(*args, "--json", tmp_path / "out" / "r.json")
    _check_refused(result, tmp_path, [])
    assert "needs about" in result.stderr and calls


def test_library_decay_refuses_memory(monkeypatch):
    import gateflow._memory as memory

    monkeypatch.setattr(memory, "available_memory", lambda backend: 1)
    with pytest.raises(gateflow.GateflowError, match="needs about"):
        decay("lstm", init_params("lstm", 3, 2), make_inputs(4, 1, 2))


# -- assumptions said: the inputs' axis order, what a model file did not say ------------------
def _notes(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith(("note:", "warning:"))]


def test_inputs_axis_order_is_said_and_recorded(tmp_path):
    """A (B=50, T=4, d) file given without an order is read time-major, as T=4 × B=50, and
    the run says so in one line, with a warning that it looks transposed; --batch-first
    reads it as 4 sequences of 50 steps (the JSON equals all_lags on the transposed array)
    and says nothing; --time-major says the time-major order, and nothing either."""
    w, x = tmp_path / "w.npz", tmp_path / "x b.npy"
    params = init_params("rnn", 3, 2, seed=1)
    save_params(w, "rnn", params)
    xb = make_inputs(50, 4, 2, seed=2).swapaxes(0, 1)  # (B=4, T=50, d=2), batch-first
    np.save(x, xb)
    common = ("--cell", "rnn", "--weights", w, "--inputs", x, "--norms", "frobenius", "-q")

    said = _ok(invoke(*common, "--json", tmp_path / "a.json"))
    assert _notes(said.stderr) == [
        "note: inputs x b.npy read as T=4 steps × B=50 sequences × d=2 (time-major: the file "
        "does not say; --batch-first if not)",
        "warning: inputs x b.npy: B=50 sequences of T=4 steps looks transposed; if the file is "
        "(B, T, d), add --batch-first"]
    assert said.stderr.count("\n") == 2  # nothing else
    doc = json.loads((tmp_path / "a.json").read_text())
    assert doc["shapes"]["T"] == 4 and doc["shapes"]["B"] == 50
    assert {k: doc["input_data"][k] for k in ("batch_first", "layout", "layout_from")} == {
        "batch_first": False, "layout": "time-major",
        "layout_from": "time-major: the file does not say"}

    quiet = _ok(invoke(*common, "--batch-first", "--json", tmp_path / "b.json"))
    assert quiet.stderr == ""
    doc = json.loads((tmp_path / "b.json").read_text())
    assert doc["shapes"]["T"] == 50 and doc["shapes"]["B"] == 4
    assert {k: doc["input_data"][k] for k in ("batch_first", "layout", "layout_from")} == {
        "batch_first": True, "layout": "batch-major", "layout_from": "--batch-first"}
    ref = all_lags("rnn", params, np.ascontiguousarray(xb.swapaxes(0, 1)), norms=("frobenius",))
    got = np.array(doc["blocks"]["h/h"]["log10_frobenius"], dtype=float)
    np.testing.assert_allclose(got, ref.blocks["h/h"]["log10_frobenius"], rtol=0, atol=1e-12)

    tm = _ok(invoke(*common, "--time-major", "--json", tmp_path / "c.json"))
    assert tm.stderr == ""
    assert json.loads((tmp_path / "c.json").read_text())["input_data"]["layout_from"] == \
        "--time-major"


def test_an_ordinary_shape_gets_the_note_and_no_warning(tmp_path):
    x = tmp_path / "x.npy"
    np.save(x, make_inputs(12, 3, 2, seed=0))
    r = _ok(invoke("--cell", "gru", "--hidden", 3, "--inputs", x, "--norms", "frobenius",
                   "-q"))
    assert _notes(r.stderr) == [
        "note: inputs x.npy read as T=12 steps × B=3 sequences × d=2 (time-major: the file "
        "does not say; --batch-first if not)"]
    several = _ok(invoke("--cell", "rnn,gru,lstm", "--hidden", 3, "--inputs", x, "--norms",
                         "frobenius", "-q"))
    assert several.stderr == r.stderr  # said once, not once per cell


def _onnx_gru(path, layout: int, n: int = 3, d: int = 2, seed: int = 0):
    """One ONNX GRU node (linear_before_reset=1: gateflow's gru) with the given layout."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = {"W": rng.normal(0, 0.6, (1, 3 * n, d)), "R": rng.normal(0, 0.6, (1, 3 * n, n)),
         "B": rng.normal(0, 0.3, (1, 6 * n))}
    node = helper.make_node("GRU", ["X", "W", "R", "B"], ["Y"], name="enc", hidden_size=n,
                            linear_before_reset=1, layout=layout)
    shape = ["B", "T", d] if layout else ["T", "B", d]
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("X", TensorProto.DOUBLE, shape)],
        [helper.make_tensor_value_info("Y", TensorProto.DOUBLE, None)],
        [numpy_helper.from_array(a, name=k) for k, a in w.items()])
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 22)]),
                    str(path))
    return w


def test_inputs_follow_the_models_layout(tmp_path):
    """An ONNX node with layout=1 reads (B, T, d): a file given without an order is read so,
    and the note says why; --time-major, which contradicts the model, is obeyed with a
    warning; --batch-first, which agrees, is silent."""
    model = tmp_path / "m.onnx"
    _onnx_gru(model, layout=1)
    x = tmp_path / "x.npy"
    xb = make_inputs(7, 2, 2, seed=4).swapaxes(0, 1)  # (B=2, T=7, d=2)
    np.save(x, xb)
    args = ("--weights", model, "--inputs", x, "--norms", "frobenius", "-q")

    r = _ok(invoke(*args, "--json", tmp_path / "a.json"))
    assert _notes(r.stderr) == [
        "note: inputs x.npy read as T=7 steps × B=2 sequences × d=2 (batch-major, as the ONNX "
        "GRU node 'enc' reads them; --time-major if not)"]
    doc = json.loads((tmp_path / "a.json").read_text())
    assert doc["shapes"]["T"] == 7 and doc["input_data"]["layout"] == "batch-major"
    assert doc["input_data"]["layout_from"] == "batch-major, as the ONNX GRU node 'enc' reads them"

    agree = _ok(invoke(*args, "--batch-first", "--json", tmp_path / "b.json"))
    assert agree.stderr == ""
    assert json.loads((tmp_path / "b.json").read_text())["blocks"] == doc["blocks"]

    against = _ok(invoke(*args, "--time-major", "--json", tmp_path / "c.json"))
    assert _notes(against.stderr) == [
        "warning: --time-major reads inputs x.npy time-major, but batch-major, as the ONNX GRU "
        "node 'enc' reads them"]
    assert json.loads((tmp_path / "c.json").read_text())["shapes"]["T"] == 2


def _fake_model(monkeypatch, **fields):
    """``select_model`` and ``inspect`` see one LSTM module with these Recurrent fields."""
    from gateflow.models import _model
    from gateflow.models.formats._recurrent import Found, Recurrent

    params = init_params("lstm", 3, 2, seed=5)
    rec = Recurrent(module="enc", framework="Keras", kind="LSTM", cell="lstm", cells=("lstm",),
                    layers=1, directions=("forward",), hidden=3, input=2,
                    weights=lambda cell, layer, direction: params, **fields)
    monkeypatch.setattr(_model, "read_models", lambda path, *args, **kwargs: Found((rec,)))
    return params


def test_each_assumption_is_said_once(tmp_path, monkeypatch):
    """What a model file did not say (Recurrent.assumed) is one note: line each, once, in
    decay and lyapunov, after the run worked; quiet or not."""
    _fake_model(monkeypatch, layout="batch-major", assumed=(
        "recurrent_activation: hard_sigmoid, the default of Keras 2.2.0 that wrote the file",
        "float16 weights: 11 significant bits"))
    f = tmp_path / "m.h5"
    f.write_bytes(b"not read: the reader is replaced")
    want = ["note: recurrent_activation: hard_sigmoid, the default of Keras 2.2.0 that wrote "
            "the file", "note: float16 weights: 11 significant bits"]
    for command, extra in (("decay", ("--norms", "frobenius")), ("lyapunov", ())):
        r = runner.invoke(app, [command, "--weights", str(f), "--steps", "5", "--batch", "1",
                                "-q", *extra])
        assert r.exit_code == 0, r.output
        assert _notes(r.stderr) == want, (command, r.stderr)
    # a refused run says its one error line and nothing else
    r = runner.invoke(app, ["decay", "--weights", str(f), "--steps", "5", "--json",
                            str(tmp_path / "no" / "o.json")])
    assert r.exit_code == 2 and r.stderr.count("\n") == 1 and r.stderr.startswith("error:")


def test_analyze_says_each_assumption_once(monkeypatch, capsys):
    """gf.analyze on a live model: each assumed line of each module, once, on stderr."""
    torch = pytest.importorskip("torch")
    from dataclasses import replace

    from gateflow.jobs._analyze import analyze
    from gateflow.models._captured import Captured

    plain = Captured.record
    monkeypatch.setattr(Captured, "record", property(
        lambda self: replace(plain.fget(self), assumed=("weights dequantized",) * 2)))
    lstm = torch.nn.LSTM(2, 3, num_layers=2).double()
    table = analyze(lstm, torch.zeros(4, 1, 2, dtype=torch.float64))
    assert len(table.table) == 3  # layers 0, 1 and the stack: said once all the same
    assert capsys.readouterr().err.splitlines() == ["note: weights dequantized"]

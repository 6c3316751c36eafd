"""Results carry their Cell, are keyed by Blocks, and reload anywhere.

* one result type for the decay measurement (:class:`gateflow.ChainResult`, its provenance
  filled in by ``gf.decay``);
* a saved result records its cell's equations (``"cell_record"``), so a *stacked* result
  written in one process reloads in a fresh one, with no registry, and is derived, labelled,
  fitted, drawn and re-measured from there;
* the one rule of which theory applies to which cell (``theory_for``), read from the
  equations, never the name;
* no ``Any`` in a presentation function's signature.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import gateflow as gf
from gateflow import CELLS, Cell, GateflowError, get_cell, init_params, make_inputs, stack
from gateflow.analysis._analysis import fit_chain
from gateflow.analysis._theory import theory_for, theory_of_cell
from gateflow.cells._block import Block
from gateflow.cells._library import read_cell
from gateflow.jobs._contract import (
    from_json_dict,
    json_bytes,
    load_result,
    save_result,
    to_json_dict,
)
from gateflow.numeric._result import ChainResult, Provenance

ROOT = Path(__file__).resolve().parents[1]


# -- one result type ------------------------------------------------------------------------
def test_decay_returns_the_chain_result_with_its_provenance():
    p = init_params("lstm", 3, 2, seed=0)
    x = make_inputs(5, 2, 2, seed=1)
    res = gf.decay("lstm", p, x, seed=7, weights_source={"source": "init", "n": 3},
                   blocks="c/c,h/x", norms="frobenius")
    assert type(res) is ChainResult and res.cell is get_cell("lstm")
    assert res.provenance == Provenance(seed=7, weights={"source": "init", "n": 3},
                                        inputs={"source": "array"})
    assert res.norms == ("frobenius",)
    plain = gf.all_lags("lstm", p, x, blocks=["c/c", "h/x"], norms=["frobenius"])
    assert plain.provenance == Provenance() and plain.norms == ("frobenius",)
    for b in ("c/c",):  # the same numbers, bit for bit
        np.testing.assert_array_equal(res.blocks[b]["log10_frobenius"],
                                      plain.blocks[b]["log10_frobenius"])
    assert "DecayResult" not in gf.__all__ and not hasattr(gf, "DecayResult")


def test_results_are_keyed_by_the_cells_own_blocks():
    s = stack("gru", 2)
    p = init_params(s, 3, 2, seed=0)
    x = make_inputs(4, 2, 2, seed=1)
    res = gf.all_lags(s, p, x, blocks="h_l1/h_l0,h_l1/y_l0,h_l0/x", singular_lags=(2,))
    for key in (*res.blocks, *res.inputs, *res.singular_values[2]):
        assert type(key) is Block
    b = next(iter(res.blocks))
    assert (b.out, b.wrt) == ("h_l1", "h_l0")
    assert [(k.out, k.wrt) for k in res.inputs] == [("h_l1", "y_l0"), ("h_l0", "x")]
    fits = fit_chain(res, blocks=["h_l1/h_l0"])
    assert [type(k) for k in fits.blocks] == [Block] and fits.cell is s
    with pytest.raises(GateflowError, match=r"unknown block 'c/c' \(valid: h_l0/h_l0, "):
        gf.all_lags(s, p, x, blocks="c/c")  # a block of another cell, named as such


def test_lyapunov_result_carries_its_cell():
    s = stack("rnn", 2)
    res = gf.lyapunov(s, init_params(s, 3, 2, seed=0), make_inputs(8, 2, 2, seed=1), k=2)
    assert res.cell is s


# -- the cell as a record ------------------------------------------------------------------
@pytest.mark.parametrize("cell", [*CELLS.values(), stack("lstm-proj", 2), stack("mgu", 3),
                                  get_cell("gru[gate=hard_sigmoid(1/6,0.5),candidate=relu]")],
                         ids=lambda c: c.name)
def test_a_cell_survives_its_record(cell):
    record = json.loads(json.dumps(cell.to_record()))  # through JSON, as a file holds it
    again = Cell.from_record(record)
    assert again == cell and again.notes == cell.notes
    assert (again.matrices, again.vectors, again.param_dims, again.blocks) == (
        cell.matrices, cell.vectors, cell.param_dims, cell.blocks)


@pytest.mark.parametrize("change, match", [
    (lambda r: {**r, "colour": "red"}, "unknown field 'colour'"),
    (lambda r: {k: v for k, v in r.items() if k != "equations"}, "no field 'equations'"),
    (lambda r: [r], "must be a JSON object"),
    (lambda r: {**r, "equations": ["h = __import__('os').system('touch pwned')"]},
     "not allowed in an equation|unsupported functions|undeclared"),
    (lambda r: {**r, "memory_bias": ["b_f", 7]}, "memory_bias"),
    (lambda r: {**r, "state": "h"}, "tuple of strings"),
])
def test_a_bad_record_is_refused_never_run(change, match, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(GateflowError, match=match):
        Cell.from_record(change(get_cell("lstm").to_record()))
    assert not (tmp_path / "pwned").exists()


def test_read_cell_prefers_the_record_and_checks_its_name():
    s = stack("lstm", 2)
    assert read_cell(s.name, s.to_record()) == s
    assert read_cell("lstm", get_cell("lstm").to_record()) is get_cell("lstm")  # the library's
    assert read_cell("gru") is get_cell("gru")  # an old file: the name of a declared cell
    with pytest.raises(GateflowError, match="names the cell 'gru' but records"):
        read_cell("gru", s.to_record())
    with pytest.raises(GateflowError, match="unknown cell 'lstm-stack2'"):
        read_cell("lstm-stack2")  # no registry: without its record a stack is unknown


# -- saved and read back ----------------------------------------------------------------------
def _stack_result(norms=("frobenius", "spectral")):
    s = stack("lstm", 2)
    p = init_params(s, 3, 2, seed=0)
    x = make_inputs(6, 2, 2, seed=1)
    return gf.decay(s, p, x, blocks="c_l1/c_l1,h_l1/h_l0,h_l1/y_l0,c_l0/x", norms=norms,
                    seed=0, weights_source={"source": "init", "scheme": "pytorch"})


def test_json_round_trip_is_byte_identical(tmp_path):
    res = _stack_result(("frobenius", "stable_rank"))
    doc = to_json_dict(res)
    assert doc["cell_record"] == res.cell.to_record() and doc["cell"] == "lstm-stack2"
    path = save_result(res, tmp_path / "r.json")
    back = load_result(path)
    assert back.cell == res.cell and back.norms == res.norms
    assert back.provenance == res.provenance and back.shapes == res.shapes
    assert all(type(b) is Block for b in (*back.blocks, *back.inputs))
    assert json_bytes(back) == path.read_bytes() == json_bytes(res)
    for b in res.blocks:  # −inf (null in the file) comes back as −inf
        for k, a in res.blocks[b].items():
            np.testing.assert_array_equal(back.blocks[b][k], a)


def test_an_old_file_without_the_record_still_loads_for_a_declared_cell(tmp_path):
    res = gf.decay("gru", init_params("gru", 3, 2, seed=0), make_inputs(4, 1, 2, seed=1))
    doc = to_json_dict(res)
    del doc["cell_record"]
    back = from_json_dict(json.loads(json.dumps(doc)))
    assert back.cell is get_cell("gru")
    assert to_json_dict(back) == to_json_dict(res)
    stacked = to_json_dict(_stack_result())
    del stacked["cell_record"]
    with pytest.raises(GateflowError, match="unknown cell 'lstm-stack2'"):
        from_json_dict(stacked)


@pytest.mark.parametrize("change, match", [
    (lambda d: {**d, "format": "other"}, "not a gateflow decay result"),
    (lambda d: {**d, "format_version": 9}, "format version 9"),
    (lambda d: {**d, "blocks": {"c_l1/x_l9": d["blocks"]["c_l1/c_l1"]}}, "unknown block"),
    (lambda d: {**d, "norms": ["nuclear"]}, "are not registered norms"),
    (lambda d: {**d, "shapes": {**d["shapes"], "T": 5}}, "has shape"),
    (lambda d: {k: v for k, v in d.items() if k != "lags"}, "no 'lags'"),
    (lambda d: {**d, "cell_record": {**d["cell_record"], "name": "x"}}, "names the cell"),
])
def test_a_bad_file_is_one_error(change, match):
    with pytest.raises(GateflowError, match=match):
        from_json_dict(change(to_json_dict(_stack_result())))


def test_a_stacked_result_reloads_in_a_fresh_process(tmp_path):
    """Saved by one process, read by another: the stack is rebuilt from the file's record
    (nothing registers it: get_cell does not know it there), derived, labelled, fitted,
    drawn, and measured again to the same numbers."""
    write = textwrap.dedent("""
        import sys
        import numpy as np
        import gateflow as gf
        from gateflow.jobs._contract import save_result
        s = gf.stack("lstm", 2)
        p = gf.init_params(s, 3, 2, seed=0)
        x = gf.make_inputs(6, 2, 2, seed=1)
        np.savez(sys.argv[1] + "/data.npz", x=x, **p)
        res = gf.decay(s, p, x, blocks="c_l1/c_l1,h_l1/h_l0,h_l1/y_l0", seed=0)
        save_result(res, sys.argv[1] + "/r.json")
    """)
    read = textwrap.dedent("""
        import sys
        import numpy as np
        import gateflow as gf
        from gateflow.analysis._analysis import fit_chain
        from gateflow.jobs._contract import json_bytes, load_result
        from gateflow.presentation._console import summary_table
        from gateflow.presentation._figures import decay_figure
        from gateflow.presentation._labels import direct_label, lag_tex
        folder = sys.argv[1]
        try:
            gf.get_cell("lstm-stack2")
        except gf.GateflowError:
            pass
        else:
            raise SystemExit("a stack resolved by name in a fresh process")
        res = load_result(folder + "/r.json")
        cell = res.cell
        assert cell == gf.stack("lstm", 2) and cell.name == "lstm-stack2"
        assert json_bytes(res) == open(folder + "/r.json", "rb").read()
        s = gf.derive(cell)
        assert str(s.block("c_l1/c_l1")) == "∂c_l1_t/∂c_l1_{t−1} = diag(f_l1_t)"
        assert direct_label(cell) == "∏ diag(f_l1_t)"  # derived from the record
        b = next(iter(res.blocks))
        assert lag_tex(b) == r"\\partial c_{l1,T}/\\partial c_{l1,T-k}"
        fits = fit_chain(res, blocks=[cell.memory_block], direct=[cell.memory_state])
        assert fits.blocks[cell.memory_block].regime
        fig = decay_figure({cell.name: res})
        assert any("c_{l1" in t.get_text() for t in fig.axes[0].get_legend().get_texts())
        summary_table(res, width=200)
        data = np.load(folder + "/data.npz")
        again = gf.all_lags(cell, {k: data[k] for k in cell.params}, data["x"],
                            blocks=list(res.blocks) + list(res.inputs))
        for group, back in ((again.blocks, res.blocks), (again.inputs, res.inputs)):
            for blk, norms in back.items():
                for key, a in norms.items():
                    np.testing.assert_array_equal(group[blk][key], a)
        print("reloaded", cell.name, len(res.blocks), len(res.inputs))
    """)
    for script in (write, read):
        done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=ROOT,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "reloaded lstm-stack2 2 1"


# -- the one theory rule --------------------------------------------------------------------
def test_theory_is_read_from_the_equations():
    rnn, relu = theory_of_cell(get_cell("rnn")), theory_of_cell(get_cell("rnn-relu"))
    assert (rnn.mean_field, rnn.pascanu_gamma, rnn.gate) == (True, 1.0, None)
    assert (relu.mean_field, relu.pascanu_gamma, relu.gate) == (False, 1.0, None)
    assert theory_of_cell(get_cell("lstm")).gate == "b_f"
    assert theory_of_cell(get_cell("gru")).gate == "b_z"
    assert not theory_of_cell(get_cell("indrnn")).elman  # relu, but u ⊙ h is not U h
    assert not theory_of_cell(get_cell("rnn[candidate=softsign]")).elman
    assert not theory_of_cell(stack("rnn", 2)).elman
    mine = Cell(name="my-rnn", summary="", reference="", state=("h",), params=("W", "U", "b"),
                equations=("h = tanh(W @ x + U @ h_prev + b)",))
    assert theory_of_cell(mine) == rnn  # the equations decide, not the name
    res = gf.all_lags(mine, init_params(mine, 3, 2, seed=0), make_inputs(4, 1, 2, seed=1))
    assert theory_for(res) == rnn


def test_decay_overlays_follow_the_rule():
    from gateflow.presentation._figures import theory_overlays

    mine = Cell(name="my-rnn", summary="", reference="", state=("h",), params=("W", "U", "b"),
                equations=("h = tanh(W @ x + U @ h_prev + b)",))
    p = init_params(mine, 4, 2, scheme="gaussian", seed=0)
    x = make_inputs(6, 2, 2, seed=1)
    res = gf.decay(mine, p, x, weights_source={"source": "init", "scheme": "gaussian"})
    labels = [o.label for o in theory_overlays({"my-rnn": res}, {"my-rnn": p}, {"my-rnn": 1.0})]
    assert any("mean field" in t for t in labels) and any("Pascanu" in t for t in labels)
    relu = gf.decay("rnn-relu", init_params("rnn-relu", 4, 2, seed=0), x)
    labels = [o.label for o in theory_overlays({"r": relu}, {"r": init_params("rnn-relu", 4, 2)},
                                               {"r": 1.0})]
    assert len(labels) == 1 and "Pascanu" in labels[0]
    gru = gf.decay("gru", init_params("gru", 4, 2, seed=0), x)
    assert theory_overlays({"gru": gru}, {"gru": {}}, {"gru": 1.0}) == []
    (gate,) = theory_overlays({"gru": gru}, {"gru": {}}, {"gru": 1.0}, gate_bias=2.0)
    assert r"\sigma(b=2)^k" in gate.label


# -- presentation names its types -------------------------------------------------------------
def test_no_any_in_presentation_signatures():
    """Every presentation function names what it takes and returns: results, records,
    Figures, Tables; never ``Any``."""
    found = []
    for path in sorted((ROOT / "gateflow" / "presentation").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                args = node.args
                notes = [a.annotation for a in (*args.posonlyargs, *args.args, *args.kwonlyargs,
                                                args.vararg, args.kwarg) if a is not None]
                for note in (*notes, node.returns):
                    if note is not None and any(isinstance(n, ast.Name) and n.id == "Any"
                                                or isinstance(n, ast.Attribute)
                                                and n.attr == "Any" for n in ast.walk(note)):
                        found.append(f"{path.name}:{node.lineno} {node.name}")
    assert not found, found

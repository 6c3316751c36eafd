"""A Cell checks its own declaration: every malformed equation set fails, with its reason."""

from __future__ import annotations

import sys
from dataclasses import replace

import pytest

import gateflow
from gateflow import CELLS, Cell, GateflowError, derive, get_cell


def _rnn(**changes) -> Cell:
    base = dict(name="t", summary="test", reference="-", state=("h",), params=("W", "U", "b"),
                equations=("h = tanh(W @ x + U @ h_prev + b)",))
    return Cell(**{**base, **changes})


@pytest.mark.parametrize("changes, message", [
    (dict(equations=("h = tanh(W @ x + U @ h_prev + b + q)",)), r"undeclared symbols \['q'\]"),
    (dict(equations=("g = tanh(b)", "h = tanh(W @ x + U @ h_prev + b)")),
     "'g' is computed but never used"),
    (dict(state=("h", "c"), equations=("h = tanh(W @ x + U @ h_prev + b + c_prev)",)),
     r"state blocks \['c'\] have no update equation"),
    (dict(params=("W", "U", "b", "p")), r"parameters \['p'\] are declared but never used"),
    (dict(equations=("a = W @ x", "a = U @ h_prev", "h = tanh(a + b)")), "defined twice"),
    (dict(equations=("x = U @ h_prev", "h = tanh(W @ x + b)")), "shadows an input"),
    (dict(equations=("h = tanh(W @ x + W @ h_prev + U @ h_prev + b)",)),
     "W multiplies both x and a state-sized vector"),
    (dict(equations=("h = tanh(W @ x + 2*U @ h_prev + b)",)),
     "left of '@' must be a declared parameter"),
    (dict(equations=("h tanh(W @ x + U @ h_prev + b)",)), "not of the form"),
    (dict(equations=("h = tanh(W @ x + U @ h_prev + b",)), "cannot parse"),
    (dict(equations=("h = tanh(V @ x + U @ h_prev + b)",), params=("U", "b")),
     "left of '@' must be a declared parameter"),
    (dict(equations=("h = exp(W @ x + U @ h_prev + b)",)), "unsupported functions"),
    (dict(equations=("h = tanh(W @ (U @ h_prev) + b)",), params=("W", "U", "b")),
     "nested products"),
    (dict(equations=("h = tanh(W @ x + U @ h_prev + b + W)",)), "used as a matrix and elementwise"),
    (dict(equations=("h = tanh(W @ x + U @ b)",)), "multiplies a parameter"),
    (dict(params=("W", "W", "U", "b")), "declared twice"),
    (dict(state=()), "must be distinct and non-empty"),
    (dict(equations=("h = tanh(W @ x + U @ h_prev + b) if b else b",)), "not allowed"),
])
def test_malformed_cells_are_refused_with_the_reason(changes, message):
    with pytest.raises(ValueError, match=message):
        _rnn(**changes)


def test_a_valid_cell_derives_like_the_builtin_one():
    mine = _rnn(name="my-rnn")
    assert mine.matrices == {"W": "input", "U": "recurrent"} and mine.vectors == ("b",)
    assert derive(mine).block("h/h") == derive("rnn").block("h/h")


@pytest.mark.parametrize("name", sorted(CELLS))
def test_ast_validation_agrees_with_the_sympy_parse(name):
    cell = CELLS[name]
    assert cell.matrices == cell.system.matrices
    assert cell.vectors == cell.system.vectors


def test_declaring_cells_does_not_import_sympy():
    """Validation uses Python's own parser; SymPy loads on the first derivation."""
    import subprocess

    code = ("import sys, gateflow.cells as c; assert c.CELLS['lstm'].matrices;"
            "print('sympy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_unknown_names_suggest_the_closest():
    with pytest.raises(GateflowError, match="did you mean 'lstm'"):
        get_cell("lstn")
    with pytest.raises(GateflowError, match="no block 'c/x'.*'c/h'|'c/c'"):
        derive("lstm").block("c/x")


def test_replace_revalidates():
    with pytest.raises(ValueError, match="undeclared"):
        replace(CELLS["lstm"], equations=(*CELLS["lstm"].equations[:-1], "h = o*tanh(q)"))


def test_public_api_is_explicit():
    assert set(gateflow.__all__) >= {"Cell", "derive", "all_lags", "GateflowError", "CELLS"}
    for name in gateflow.__all__:
        assert getattr(gateflow, name) is not None
    with pytest.raises(AttributeError):
        gateflow.no_such_thing  # noqa: B018

"""A cell validates itself on construction; bad names fail with a helpful GateflowError."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import pytest

import gateflow
from gateflow import CELLS, Cell, GateflowError, derive, get_cell


def make(equations, params=("W", "U", "b"), state=("h",)):
    return Cell(name="t", summary="test", reference="none", state=state, params=params,
                equations=tuple(equations))


def test_a_valid_cell_builds():
    c = make(["h = tanh(W @ x + U @ h_prev + b)"])
    assert c.prev == ("h_prev",) and c.blocks == ("h/h",)
    assert c.system.matrices == {"W": "input", "U": "recurrent"}
    assert c.system.vectors == ("b",)


@pytest.mark.parametrize("equations,params,state,match", [
    # undeclared symbol
    (["h = tanh(W @ x + U @ h_prev + b + q)"], ("W", "U", "b"), ("h",),
     r"undeclared symbols \['q'\]"),
    # a state block with no update
    (["h = tanh(W @ x + U @ h_prev + b + c_prev)"], ("W", "U", "b"), ("h", "c"),
     r"state blocks \['c'\] have no update equation"),
    # an unused parameter
    (["h = tanh(W @ x + U @ h_prev)"], ("W", "U", "b"), ("h",),
     r"parameters \['b'\] are declared but never used"),
    # an unused intermediate
    (["a = sigmoid(U @ h_prev)", "h = tanh(W @ x + U @ h_prev + b)"], ("W", "U", "b"), ("h",),
     r"'a' is computed but never used"),
    # redefinition
    (["a = tanh(W @ x)", "a = tanh(U @ h_prev + b)", "h = a"], ("W", "U", "b"), ("h",),
     r"'a' is defined twice"),
    # shadowing a parameter
    (["b = tanh(W @ x)", "h = tanh(U @ h_prev + b)"], ("W", "U", "b"), ("h",),
     r"'b' is defined twice or shadows"),
    # one matrix on both x and h
    (["h = tanh(W @ x + W @ h_prev + b)"], ("W", "b"), ("h",),
     r"W multiplies both x and a state-sized vector"),
    # malformed equations
    (["h := tanh(W @ x + U @ h_prev + b)"], ("W", "U", "b"), ("h",),
     r"is not of the form 'name = expression'"),
    (["tanh(W @ x + U @ h_prev + b)"], ("W", "U", "b"), ("h",),
     r"is not of the form 'name = expression'"),
    (["h = tanh(W @ x + U @ h_prev + b"], ("W", "U", "b"), ("h",), r"cannot parse"),
    (["class = tanh(W @ x)", "h = tanh(U @ h_prev + b)"], ("W", "U", "b"), ("h",),
     r"is not of the form"),
    # unsupported function, nested products, duplicate parameter, a matrix times a parameter
    (["h = sin(W @ x + U @ h_prev + b)"], ("W", "U", "b"), ("h",),
     r"unsupported functions \['sin'\]"),
    (["h = tanh(W @ (U @ h_prev) + b)"], ("W", "U", "b"), ("h",), r"nested products"),
    (["h = tanh(W @ x + U @ h_prev + b)"], ("W", "U", "U", "b"), ("h",),
     r"declared twice"),
    (["h = tanh(W @ x + U @ b)"], ("W", "U", "b"), ("h",), r"U @ b multiplies a parameter"),
    (["h = tanh(W @ x + U @ h_prev + b)"], ("W", "U", "b"), ("h", "h"), r"must be distinct"),
    # the left of @ must be a matrix parameter; a matrix is not also used elementwise;
    # only arithmetic and the three activations are allowed
    (["h = tanh(W @ x + 2*U @ h_prev + b)"], ("W", "U", "b"), ("h",),
     r"left of '@' must be a declared parameter"),
    (["h = tanh(W @ x + U @ h_prev + b + W)"], ("W", "U", "b"), ("h",),
     r"used as a matrix and elementwise"),
    (["a = b * x", "h = tanh(W @ x + b @ h_prev + a + U @ a)"], ("W", "U", "b"), ("h",),
     r"b is used as a matrix and elementwise"),  # elementwise first, matrix later
    (["h = tanh(W @ x + U @ h_prev + b) if b else b"], ("W", "U", "b"), ("h",), r"not allowed"),
])
def test_invalid_cells_raise(equations, params, state, match):
    with pytest.raises(ValueError, match=match) as info:
        make(equations, params, state)
    assert "cell 't'" in str(info.value)  # the message names the cell


@pytest.mark.parametrize("name", sorted(CELLS))
def test_ast_validation_agrees_with_the_sympy_parse(name):
    """Declaration-time checks use Python's parser; the derivation's SymPy parse agrees."""
    cell = CELLS[name]
    assert cell.matrices == cell.system.matrices
    assert cell.vectors == cell.system.vectors


def test_declaring_cells_does_not_import_sympy():
    code = ("import sys, gateflow.cells as c; assert c.CELLS['lstm'].matrices;"
            "print('sympy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_user_cell_derives_like_the_builtin_one_and_replace_revalidates():
    mine = make(["h = tanh(W @ x + U @ h_prev + b)"])
    assert derive(mine).block("h/h") == derive("rnn").block("h/h")
    with pytest.raises(ValueError, match="undeclared"):
        replace(CELLS["lstm"], equations=(*CELLS["lstm"].equations[:-1], "h = o*tanh(q)"))


def test_public_api_is_explicit():
    assert set(gateflow.__all__) >= {"Cell", "derive", "all_lags", "GateflowError", "CELLS"}
    for name in gateflow.__all__:
        assert getattr(gateflow, name) is not None
    with pytest.raises(AttributeError):
        gateflow.no_such_thing  # noqa: B018


def test_every_library_cell_is_valid_and_named():
    for name, cell in CELLS.items():
        assert cell.name == name
        assert get_cell(name) is cell
        assert get_cell(cell) is cell
        assert set(cell.blocks) == {f"{a}/{b}" for a in cell.state for b in cell.state}


def test_unknown_cell_suggests_the_closest():
    with pytest.raises(GateflowError, match=r"unknown cell 'lstn'.*'lstm'"):
        get_cell("lstn")
    with pytest.raises(ValueError):  # GateflowError is a ValueError
        get_cell("gruu")


def test_unknown_cell_without_close_match_lists_all():
    with pytest.raises(GateflowError, match=r"valid: rnn, .*indrnn") as info:
        get_cell("qqqqqqq")
    for name in CELLS:
        assert name in str(info.value)


def test_unknown_block_names_valid_blocks():
    with pytest.raises(GateflowError, match=r"no block 'c/x'") as info:
        derive("lstm").block("c/x")
    assert "'c/c'" in str(info.value) or "'c/h'" in str(info.value)
    with pytest.raises(GateflowError, match=r"valid: h/h"):
        derive("gru").block("zzzz")

"""What `derive` prints: equations and Jacobians in gate values, in three formats."""

from __future__ import annotations

import re

import pytest

from gateflow import CELLS, derive, render
from gateflow._printing import equation_lines

FORMATS = ("text", "latex", "markdown")


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", sorted(CELLS))
def test_every_cell_renders_in_gate_values(name, fmt):
    cell = CELLS[name]
    out = render(cell, fmt, steps=2)
    for line in equation_lines(cell, "latex" if fmt != "text" else "text"):
        assert line.split(" = ")[0] in out
    # derivatives are written in gate values, never in exponentials or raw SymPy names
    assert not re.search(r"\b(exp|cosh|sech|Heaviside|sigmoid|MatVec|__)\b|\w\*\*\w", out)
    assert out.count(r"\frac{\partial" if fmt != "text" else "∂") >= len(cell.blocks)


def test_lstm_reads_like_the_textbook():
    out = render(CELLS["lstm"], "text")
    assert "c_t = f_t ⊙ c_{t−1} + i_t ⊙ g_t" in out
    assert "∂c_t/∂c_{t−1} = diag(f_t)" in out
    assert "diag(c_{t−1} ⊙ f_t ⊙ (1 − f_t)) U_f" in out  # σ' = f(1 − f)
    assert "diag(i_t ⊙ (1 − g_t²)) U_g" in out  # tanh' = 1 − g²
    assert "∂h_t/∂h_{t−1} = diag(o_t ⊙ (1 − o_t) ⊙ tanh(c_t)) U_o + diag(o_t ⊙ (1 − tanh²(c_t))) ∂c_t/∂h_{t−1}" in out


def test_gru_forms_differ_where_the_reset_gate_sits():
    after = render(CELLS["gru"], "text", block="h/h")
    before = render(CELLS["gru-cho"], "text", block="h/h")
    assert "(U_n h_{t−1} + b_hn)" in after  # reset after the matmul: the product shows up
    assert "U_n [diag(r_t) + diag(h_{t−1} ⊙ r_t ⊙ (1 − r_t)) U_r]" in before  # nested
    assert "Two GRUs share the name" in after


def test_relu_derivative_is_an_indicator():
    assert "𝟙[h_t > 0]" in render(CELLS["rnn-relu"], "text")
    assert r"\mathbb{1}\left[h_t > 0\right]" in render(CELLS["indrnn"], "latex")


def test_k_steps_and_scalar_closed_form():
    out = render(CELLS["rnn"], "text", block="h/h", steps=3)
    assert "∂h_t/∂h_{t−3} = J[h/h]_t J[h/h]_t−1 J[h/h]_t−2" in out
    assert "U³ · (1 − h_t²) · (1 − h_{t−1}²) · (1 − h_{t−2}²)" in out  # n = 1


def test_notebook_rendering():
    assert CELLS["gru"]._repr_latex_().startswith("$")
    block = derive("lstm").block("c/c")
    assert str(block) == "∂c_t/∂c_{t−1} = diag(f_t)"
    assert block._repr_latex_() == (r"$\displaystyle \frac{\partial c_t}{\partial c_{t-1}} = "
                                    r"\operatorname{diag}\left(f_t\right)$")
    assert derive("gru")._repr_latex_().count(r"\frac{\partial") == 1

"""Rendering: every cell, every format; derivatives read in gate values."""

from __future__ import annotations

import re

import pytest

from gateflow import CELLS, GateflowError, derive, get_cell
from gateflow.symbolic._printing import equation_lines, render

FORMATS = ["text", "latex", "markdown"]
EXP = re.compile(r"(?<![A-Za-z])exp(?![A-Za-z])")  # exp(…) or \exp, not "expanded"


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", list(CELLS))
def test_render_every_cell(name, fmt):
    cell = get_cell(name)
    out = render(cell, fmt)
    assert isinstance(out, str) and out
    lines = equation_lines(cell, "text" if fmt == "text" else "latex")
    assert len(lines) == len([d for d in cell.system.defs
                              if d[0].name not in cell.system.composites])
    for line in lines:
        # LaTeX output aligns the equations at their "=" (an aligned environment)
        assert (line.replace(" = ", " &= ", 1) if fmt == "latex" else line) in out
    assert not EXP.search(out), out
    assert "cosh" not in out, out


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", list(CELLS))
def test_render_steps_in_gate_values(name, fmt):
    cell = get_cell(name)
    out = render(cell, fmt, steps=2)
    assert not EXP.search(out) and "cosh" not in out, out
    if fmt == "text":
        assert f"({', '.join(f'{x} = 1' for x in cell.size_names)})" in out  # (n = 1, p = 1)
        for b in cell.blocks:
            o, i = b.split("/")
            assert f"∂{o}_t/∂{i}_{{t−2}}" in out


def test_lstm_text_shows_constant_error_carousel():
    out = render(get_cell("lstm"), "text")
    assert "∂c_t/∂c_{t−1} = diag(f_t)" in out
    # σ' and tanh' appear in gate values
    assert "f_t ⊙ (1 − f_t)" in out
    assert "(1 − g_t²)" in out


def test_single_block_render():
    out = render(get_cell("lstm"), "text", block="c/c")
    assert "∂c_t/∂c_{t−1} = diag(f_t)" in out
    assert "∂h_t/∂h_{t−1}" not in out
    with pytest.raises(GateflowError, match=r"unknown block 'c/y' \(did you mean"):
        render(get_cell("lstm"), "text", block="c/y")


def test_input_jacobians_rendered():
    """∂X_t/∂x_t after the state blocks, in every format; one alone with --block h/x."""
    out = render(get_cell("rnn"), "text")
    assert out.index("∂h_t/∂h_{t−1}") < out.index("Input Jacobians") < out.index(
        "∂h_t/∂x_t = diag(1 − h_t²) W")
    alone = render(get_cell("lstm"), "text", block="c/x")
    assert "Jacobians (one step)\n" not in alone and "∂h_t/∂x_t" not in alone
    assert "∂c_t/∂x_t = diag(g_t ⊙ i_t ⊙ (1 − i_t)) W_i" in alone
    tex = render(get_cell("gru"), "latex", block="h/x")
    assert r"\frac{\partial h_t}{\partial x_{t}} &=" in tex
    md = render(get_cell("gru"), "markdown")
    assert "### Input Jacobians" in md


def test_gru_text_shows_update_gate_path():
    out = render(get_cell("gru"), "text", block="h/h")
    assert re.search(r"∂h_t/∂h_\{t−1\} = diag\(z_t\) \+", out), out


def test_rnn_relu_uses_indicator_not_heaviside():
    out = render(get_cell("rnn-relu"), "text")
    assert "𝟙[h_t > 0]" in out and "Heaviside" not in out


def test_latex_is_balanced():
    for name in CELLS:
        out = render(get_cell(name), "latex")
        assert out.count(r"\begin{aligned}") == out.count(r"\end{aligned}") >= 1
        assert out.count("{") == out.count("}")
        assert out.count(r"\left") == out.count(r"\right")


@pytest.mark.parametrize("name", list(CELLS))
def test_repr_latex(name):
    s = get_cell(name)._repr_latex_()
    assert s.startswith("$") and s.endswith("$") and s.count("$") == 2
    assert r"\begin{aligned}" in s
    for line in equation_lines(get_cell(name), "latex"):
        assert line.replace(" = ", " &= ", 1) in s


def test_lstm_reads_like_the_textbook():
    out = render(CELLS["lstm"], "text")
    assert "c_t = f_t ⊙ c_{t−1} + i_t ⊙ g_t" in out
    assert "∂c_t/∂c_{t−1} = diag(f_t)" in out
    assert "diag(c_{t−1} ⊙ f_t ⊙ (1 − f_t)) U_f" in out  # σ' = f(1 − f)
    assert "diag(i_t ⊙ (1 − g_t²)) U_g" in out  # tanh' = 1 − g²
    assert ("∂h_t/∂h_{t−1} = diag(o_t ⊙ (1 − o_t) ⊙ tanh(c_t)) U_o "
            "+ diag(o_t ⊙ (1 − tanh²(c_t))) ∂c_t/∂h_{t−1}") in out


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

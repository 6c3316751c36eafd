"""Plots and the ``gateflow report`` command: files, refusal of existing folders, figures."""

from __future__ import annotations

import base64
import json
import math
import os
import re
from types import SimpleNamespace

import numpy as np
import pytest
from typer.testing import CliRunner

from gateflow import GateflowError
from gateflow.analysis._analysis import gate_path
from gateflow.cli import app
from gateflow.jobs._report import ReportConfig, write_report
from gateflow.models._params import init_params, make_inputs
from gateflow.numeric._chain import all_lags
from gateflow.presentation._plot import Overlay
from gateflow.presentation._plot_lags import plot_decay
from gateflow.presentation._plot_spectra import plot_spectra

runner = CliRunner()
TINY = ["--hidden", "4", "--steps", "12", "--batch", "2", "--input-size", "3", "--quiet"]


def _results():
    x = make_inputs(15, 3, 2, seed=1)
    out = {}
    for cell in ("rnn", "lstm", "gru"):
        p = init_params(cell, 4, 2, seed=0)
        out[cell.upper()] = all_lags(cell, p, x, singular_lags=(1, 5))
    return out


def test_plot_decay_figure_has_labels_legend_title(tmp_path):
    res = _results()
    ov = Overlay(r"$\sqrt{n}\,\sigma(0)^k$", res["RNN"].lags, gate_path(res["RNN"].lags, 0.0, 4))
    fig = plot_decay(res, None, [ov], tmp_path / "decay")
    ax = fig.axes[0]
    assert ax.get_xlabel() == "lag k (steps)"
    assert "gradient norm" in ax.get_ylabel()
    assert ax.get_title()
    assert ax.get_yscale() == "log"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("LSTM" in t and "c_T" in t for t in labels)  # LSTM defaults to c/c
    assert any("diag}(f_t)" in t for t in labels)  # and its ∏ diag(f), dashed
    assert any("sigma(0)" in t for t in labels)
    assert (tmp_path / "decay.png").stat().st_size > 0
    assert (tmp_path / "decay.svg").read_text().startswith("<?xml")


def test_plot_spectra_figure(tmp_path):
    fig = plot_spectra(_results(), "h/h", path=tmp_path / "sv")
    axes = fig.axes
    assert len(axes) == 2
    for ax in axes:
        assert ax.get_xlabel() == "index i" and ax.get_title().startswith("lag k =")
        assert ax.get_yscale() == "log"
    assert "singular value" in axes[0].get_ylabel()
    assert axes[-1].get_legend() is not None
    assert fig.get_suptitle()
    assert (tmp_path / "sv.png").exists() and (tmp_path / "sv.svg").exists()


def test_plot_errors_are_gateflow_errors():
    res = _results()
    with pytest.raises(GateflowError):
        plot_decay(res, "x/y")
    with pytest.raises(GateflowError):
        plot_decay({})
    with pytest.raises(GateflowError):
        plot_spectra(res, "h/h", lags=[3])


@pytest.mark.slow
def test_report_cli_tiny(tmp_path):
    out = tmp_path / "r"
    result = runner.invoke(app, ["report", "--out", str(out), *TINY])
    assert result.exit_code == 0, result.output
    names = {p.name for p in out.iterdir()}
    for f in ("index.md", "index.html", "data.json", "fits.csv", "curves.csv"):
        assert f in names
    for fig in FIGURES:
        assert f"{fig}.png" in names and f"{fig}.svg" in names
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left
    md = (out / "index.md").read_text()
    assert "$" in md and "e-folding lag" in md and "memory horizon" in md
    assert "![" in md and "decay_cells.png" in md
    page = (out / "index.html").read_text()
    _self_contained(page, out)
    data = json.loads((out / "data.json").read_text())  # strict JSON (no NaN/Infinity)
    assert data["config"]["hidden"] == 4 and data["config"]["steps"] == 12
    assert {r["label"] for r in data["runs"]} >= {"RNN", "LSTM", "GRU"}
    assert "numpy" in data["versions"]


FIGURES = ("decay_cells", "decay_lstm_bias", "decay_gru_bias", "spectra")


def _self_contained(page: str, folder) -> None:
    """index.html needs nothing but itself: every figure is an inline SVG data URI, math is
    MathML (no MathJax, no script), styles are inline, no URL points anywhere; its links
    are only to the files next to it, which exist."""
    assert page.startswith("<!DOCTYPE html>")
    assert "mathjax" not in page.lower() and "<script" not in page and "http" not in page
    assert "<link" not in page and "@import" not in page and "url(" not in page
    srcs = re.findall(r"""\ssrc=["']([^"']*)["']""", page)
    assert len(srcs) == len(FIGURES)
    assert all(s.startswith("data:image/svg+xml;base64,") for s in srcs)
    for s in srcs:  # each decodes to the SVG of a figure
        assert base64.b64decode(s.split(",", 1)[1]).lstrip().startswith(b"<?xml")
    for href in re.findall(r"""href=["']([^"']*)["']""", page):
        assert "/" not in href and (folder / href).is_file(), href
    assert page.count("<math") > 20 and "<merror" not in page
    for f in FIGURES:  # one caption per figure, in words and math
        assert f'<figure id="{f}">' in page


@pytest.mark.slow
def test_report_refuses_existing_out(tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = runner.invoke(app, ["report", "--out", str(out), *TINY])
    assert result.exit_code == 2
    assert "already exists" in result.output and "--overwrite" in result.output
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert (out / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]
    # --overwrite never deletes what gateflow did not write
    result = runner.invoke(app, ["report", "--out", str(out), "--overwrite", *TINY])
    assert result.exit_code == 2
    assert "has no .gateflow-manifest.json, so gateflow did not write it" in result.stderr
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]
    # a folder gateflow wrote, unchanged, is replaced
    mine = tmp_path / "mine"
    assert runner.invoke(app, ["report", "--out", str(mine), *TINY]).exit_code == 0
    (mine / "index.html").write_text("stale")
    result = runner.invoke(app, ["report", "--out", str(mine), "--overwrite", *TINY])
    assert result.exit_code == 2 and "'index.html' was changed" in result.stderr
    assert (mine / "index.html").read_text() == "stale"
    (mine / "index.html").unlink()
    manifest = mine / ".gateflow-manifest.json"
    doc = json.loads(manifest.read_text())
    del doc["files"]["index.html"]
    manifest.write_text(json.dumps(doc))
    result = runner.invoke(app, ["report", "--out", str(mine), "--overwrite", *TINY])
    assert result.exit_code == 0, result.output
    assert (mine / "index.html").read_text() != "stale"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "r"]


def _no_figures(monkeypatch):
    import gateflow.jobs._report as rep

    monkeypatch.setattr(rep, "draw", lambda *args: {})  # folder mechanics only: fast


def test_report_default_folder_gets_a_suffix(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _no_figures(monkeypatch)
    cfg = ReportConfig(hidden=3, inputs=2, steps=6, batch=1, spectra_lags=(1,), biases=(1.0,))
    a = write_report(cfg, quiet=True)
    b = write_report(cfg, quiet=True)
    assert a.exists() and b.exists() and a.name.endswith("n3-T6-seed0")
    assert b.name == a.name + "-2"
    assert os.path.relpath(a.parent, tmp_path) == "reports"


@pytest.mark.slow
def test_report_failure_leaves_nothing(tmp_path, monkeypatch):
    import gateflow.jobs._report as rep

    def boom(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(rep, "write_data", boom)
    cfg = ReportConfig(hidden=3, inputs=2, steps=6, batch=1, spectra_lags=(1,), biases=(1.0,))
    with pytest.raises(RuntimeError):
        write_report(cfg, tmp_path / "r", quiet=True)
    assert list(tmp_path.iterdir()) == []


def test_report_headline_numbers_are_consistent(tmp_path, monkeypatch):
    _no_figures(monkeypatch)
    cfg = ReportConfig(hidden=6, inputs=3, steps=30, batch=2, spectra_lags=(1, 5))
    out = write_report(cfg, tmp_path / "r", quiet=True)
    data = json.loads((out / "data.json").read_text())
    runs = {r["label"]: r for r in data["runs"]}
    for label in ("RNN", "LSTM", "GRU"):
        fit = runs[label]["fits"][runs[label]["block"]]
        med = np.array([np.nan if v is None else v
                        for v in runs[label]["curves"][runs[label]["block"]]["log10_median"]])
        slope = np.polyfit(np.arange(1, 31)[np.isfinite(med)], med[np.isfinite(med)], 1)[0]
        assert fit["slope_log10_per_step"] == pytest.approx(slope)
    assert "LSTM b_f=3" in runs and "GRU chrono" in runs


# -- the narrative states the numbers of data.json --------------------------------------------
# Every claim of the text is checked against data.json by tests/test_report_claims.py (a
# checker that re-fits the curves itself), over a grid of settings; here: the tiny report.
@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory):
    import gateflow.jobs._report as rep

    out = tmp_path_factory.mktemp("story") / "r"
    draw, rep.draw = rep.draw, lambda *args: {}  # no figures: fast
    try:
        write_report(ReportConfig(hidden=6, inputs=3, steps=40, batch=3, biases=(0.0, 3.0)),
                     out, quiet=True)
    finally:
        rep.draw = draw
    data = json.loads((out / "data.json").read_text())
    md = (out / "index.md").read_text()
    story = md.split("## What the measurements say")[1].split("## Headline")[0].split("\n\n")
    return data, [p.strip() for p in story if p.strip()], md


def test_narrative_claims_are_true_of_data_json(tiny_report):
    from test_report_claims import check_text

    data, _, md = tiny_report
    c = check_text(md, data)
    assert not c.bad, c.bad
    assert c.checked > 150 and c.kinds["trend and fate"] == 3


def test_narrative_is_written_from_the_data(tiny_report):
    """Change a number in the data and the narrative changes with it."""
    import copy

    from gateflow.presentation._report_story import narrative

    data, story, _ = tiny_report
    assert narrative(data) == story
    edited = copy.deepcopy(data)
    edited["runs"][0]["fits"][edited["runs"][0]["block"]]["per_step_factor"] = 0.123456
    assert "×0.123 per step" in " ".join(narrative(edited))


def test_no_verdict_is_taken_on_trust(tiny_report):
    """The sentences of issue 17 are gone: no horizon "> T", nothing said of the default
    bias that the data do not show; what a curve does over the lags measured is said so."""
    import copy

    from gateflow.presentation._report_story import narrative
    from gateflow.presentation._report_verdict import verdict

    data, story, md = tiny_report
    text = " ".join(story)
    for old in ("at lag >", "> 40", "never within T", "with the gates at their default bias it "
                "does not", "gating alone barely helps", "Opening the gate moves"):
        assert old not in md, old
    # every curve above the threshold: the verdict says so, for every configuration
    high = copy.deepcopy(data)
    for r in high["runs"]:
        r["fits"][r["block"]]["memory_horizon"] = None
    said = verdict(high)
    assert "the threshold does not single out the bias here" in said
    assert "the default-bias LSTM, the default-bias GRU and the plain RNN stay above it too" \
        in said
    assert "stays above $10^{-6}$ over all 40 lags measured" in " ".join(narrative(high))
    assert "claim holds" not in said and "claim holds" not in " ".join(narrative(high))
    # the default-bias runs drop: only then does the verdict say the claim holds
    low = copy.deepcopy(high)
    for label, h in (("LSTM", 31), ("GRU", 33), ("RNN", 20)):
        run = next(r for r in low["runs"] if r["label"] == label)
        run["fits"][run["block"]]["memory_horizon"] = h
    said = verdict(low)
    assert said.startswith("The claim holds in the form the theory gives it: with LSTM")
    assert ("the default-bias LSTM first drops below it at lag 31, the default-bias GRU at "
            "lag 33 and the plain RNN at lag 20") in said
    # each cell's fate is said once, the way its curve goes
    assert text.count(", and first drops below $10^{-6}$ at lag") + text.count(
        ", and stays above $10^{-6}$ over all 40 lags measured") == 3


def test_lyapunov_paragraph_states_the_data(tiny_report):
    """The Lyapunov paragraph's numbers are data.json's (λ₁ medians re-derived from the
    per-sequence exponents), and the mean-field line is ½ ln χ₁ of the theory's χ₁."""
    from test_report_claims import agrees

    data, story, _ = tiny_report
    text = " ".join(story)
    m = re.search(r"It is (\S+) for the RNN \(mean-field theory: "
                  r"\$\\frac\{1\}\{2\} \\ln \\chi_1 = (\S+)\$\), (\S+) for the LSTM and "
                  r"(\S+) for the GRU", text)
    assert m, text
    runs = {r["label"]: r for r in data["runs"]}
    for said, label in zip((m[1], m[3], m[4]), ("RNN", "LSTM", "GRU")):
        lam = np.median(np.array(runs[label]["lyapunov"]["exponents"], dtype=float), axis=0)
        assert agrees(said, float(np.sort(lam)[::-1][0]))
    assert agrees(m[2], 0.5 * math.log(data["theory"]["mean_field"]["chi1"]))
    for r in data["runs"]:
        ly = r["lyapunov"]
        assert len(ly["exponents"]) == data["config"]["batch"] and ly["k"] == len(ly["median"])


# -- the words speak to the reader, the formulas come from the derivation ---------------------
def test_the_claim_is_stated_not_referred_to(tiny_report):
    from gateflow.presentation._report_story import claim

    data, _, _ = tiny_report
    md = _pages(data)[0]
    words = " ".join(claim())
    for said in ("cell state $c$", "long-term memory", "forget gate $f_t$", "input gate $i_t$",
                 "output gate $o_t$", "vanishing gradient", "reset gate $r_t$",
                 "update gate $z_t$"):
        assert said in words, said
    assert "chapter" not in md.lower() and "seed" not in md.split("## Configuration")[0]
    # the formulas the claim uses are the cells' own, as derived and printed by gateflow
    from gateflow.cells._library import get_cell
    from gateflow.cells._notation import equation_lines, partial
    from gateflow.symbolic._derive import derive, linop

    lstm = get_cell("lstm")
    c_line = next(x for x in equation_lines(lstm, "latex") if x.startswith("c_t ="))
    cc = linop(derive(lstm).block("c/c", chained=True), lstm, "latex")
    assert f"${c_line}$" in words and f"${partial('c/c', 'latex')} = {cc}$" in words
    assert "\\operatorname{diag}\\left(f_t\\right)" in words


def _pages(data, figures=()):
    from gateflow.presentation._report import render_report

    return render_report(data, figures)


def test_every_jacobian_a_formula_refers_to_is_shown(tiny_report):
    """The LSTM's ∂h_t/∂h_{t−1} goes through ∂c_t/∂h_{t−1}: that block is shown too; so is
    every block any shown formula names, each exactly as the derivation prints it."""
    from gateflow.cells._notation import partial
    from gateflow.presentation._report_math import cells_math

    data, _, _ = tiny_report
    md = _pages(data)[0]
    cells = {c["name"]: c for c in cells_math()}
    for name, c in cells.items():
        text = " ".join(c["jacobians"])
        lhs = re.findall(r"\\frac\{\\partial (\w)_t\}\{\\partial (\w)_\{t-1\}\}", text)
        blocks = {f"{a}/{b}" for a, b in lhs}
        for tex in c["jacobians"]:  # each display starts with its own left-hand side
            first = re.search(r"\\frac\{\\partial (\w)_t\}\{\\partial (\w)_\{t-1\}\}", tex)
            assert first is not None
        shown = {re.search(r"\\frac\{\\partial (\w)_t\}\{\\partial (\w)_\{t-1\}\}",
                           tex).groups() for tex in c["jacobians"]}
        assert {f"{a}/{b}" for a, b in shown} == blocks, (name, blocks)
        for tex in c["jacobians"]:
            assert tex in md
    assert {"c/c", "h/h", "c/h"} <= {
        "/".join(re.search(r"\\partial (\w)_t\}\{\\partial (\w)_", t).groups())
        for t in cells["lstm"]["jacobians"]}
    assert partial("c/h", "latex") in md


def test_html_typesets_math_as_mathml(tiny_report):
    data, _, _ = tiny_report
    md, page = _pages(data)
    assert "<math" in page and "<mfrac>" in page and "∂h_(T−k)" not in page
    assert "$" not in re.sub(r"<[^>]+>", "", page)  # no LaTeX left untypeset
    # the Markdown keeps the very same LaTeX
    assert "\\|\\partial h_T/\\partial h_{T-k}\\|_F" in md
    # a Markdown table cell holds no "|" that GFM would split at, math included
    theory = md.split("## Theory against measurement")[1].split("##")[0]
    assert "$\\Vert U\\Vert _2$" in theory
    for row in theory.strip().splitlines()[2:]:
        assert row.count("|") == 5, row


def test_pages_share_one_context(tiny_report):
    """Both pages come from one context: each narrative paragraph is in both, the HTML one
    typeset."""
    from gateflow.presentation._report_context import report_context
    from gateflow.presentation._report_story import narrative

    data, _, _ = tiny_report
    ctx = report_context(data)
    assert ctx["story"] == narrative(data)
    md, page = _pages(data)
    for para in narrative(data):
        assert para in md
        words = re.split(r"\$[^$]+\$", para)
        longest = max(words, key=len).strip()
        assert longest.replace("'", "&#39;") in page, longest


def test_templates_ship_with_the_package():
    """The templates live inside the package (hatch's wheel takes every file under
    gateflow/), found by Jinja's PackageLoader."""
    from importlib.resources import files

    root = files("gateflow.presentation") / "templates"
    for name in ("report.j2", "html/page.j2", "html/macros.j2", "html/report.css",
                 "md/page.j2", "md/macros.j2"):
        assert (root / name).is_file(), name


# -- figure formats -----------------------------------------------------------------------------
@pytest.mark.slow
def test_report_figure_formats(tmp_path):
    cfg = ReportConfig(hidden=3, inputs=2, steps=8, batch=2, spectra_lags=(1, 8), biases=(0.0,))
    out = write_report(cfg, tmp_path / "r", quiet=True, formats="pdf")
    names = {p.name for p in out.iterdir()}
    for fig in FIGURES:
        assert f"{fig}.pdf" in names and f"{fig}.svg" not in names and f"{fig}.png" not in names
        assert (out / f"{fig}.pdf").read_bytes().startswith(b"%PDF")
    page = (out / "index.html").read_text()
    _self_contained(page, out)  # the page inlines SVG renderings all the same
    md = (out / "index.md").read_text()
    assert "[decay_cells.pdf](decay_cells.pdf)" in md and "![" not in md
    with pytest.raises(GateflowError, match="figure format"):
        write_report(cfg, tmp_path / "bad", quiet=True, formats="jpg")
    assert not (tmp_path / "bad").exists()


# -- figure defects, fixed --------------------------------------------------------------------
# The axis frame, the bands, the unresolved singular values and the reproducible bytes are
# fixed in the plotting functions themselves: tests/test_decay_plot.py tests them there.


def test_heatmap_title_is_mathtext():
    from gateflow.presentation._figures import sweep_heatmap

    cs = SimpleNamespace(cell="lstm", block="c/c", sigma_w=(0.5, 1.0), regime=None,
                         horizon=[[3, None], [5, 7]], factor=[],
                         y=SimpleNamespace(values=(0.0, 1.0), label="gate bias"))
    grid = SimpleNamespace(T=10, n=4, B=2, threshold=1e-6)
    ax = sweep_heatmap(cs, grid).axes[0]
    title = ax.get_title()
    assert r"\partial c_T/\partial c_{T-k}" in title and "∂" not in title and "(T−k)" not in title
    assert "$" in ax.get_xlabel() and "σ" not in ax.get_xlabel()


def test_single_cell_decay_legend_is_below(tmp_path):
    from gateflow.jobs._decay import run_decays

    run = run_decays("rnn", hidden=3, input_size=2, steps=12, batch=2, quiet=True,
                     plot_path=tmp_path / "d.svg")
    fig = run.figure
    ax = fig.axes[0]
    fig.draw_without_rendering()
    leg, box = ax.get_legend().get_window_extent(), ax.get_window_extent()
    assert leg.y1 < box.y0  # under the axes
    assert box.width / fig.bbox.width > 0.8  # the axes keep the width


# -- one number policy for tables, text and figures ---------------------------------------------
def test_number_policy():
    from gateflow.presentation._numbers import decade_step, given, log_ticks, power, r2, sig

    assert [sig(v) for v in (1 / 3, 1.4, 19.24, 130.4, 1234.5, 0.000123, 0)] == [
        "0.333", "1.40", "19.2", "130", "1234", "0.000123", "0"]
    assert sig(0.99951) == "0.9995" and sig(1.0004) == "1.0004" and sig(1.0) == "1.00"
    assert sig(-0.634) == "−0.634" and sig(-0.634, style="latex") == "-0.634"
    assert sig(2.5e-7) == "2.50 × 10⁻⁷" and sig(2.5e-7, style="latex") == r"2.50 \times 10^{-7}"
    assert sig(2.5e-7, style="plain") == "2.50e-07" and sig(-np.inf) == "−∞" and sig(None) == "—"
    assert sig(9.996) == "10.0" and sig(float("nan"), none="n/a") == "n/a"
    assert [given(v) for v in (0.0, 3.0, -2.0, 0.2, 1e-6, 2.5e-7, 200.0)] == [
        "0", "3", "−2", "0.2", "10⁻⁶", "2.5 × 10⁻⁷", "200"]
    assert given(1e-6, style="latex") == "10^{-6}" and given(1e-6, style="plain") == "1e-06"
    assert r2(0.9634) == "0.963" and r2(0.99996) == "0.99996" and r2(1.0) == "1.000"
    assert r2(None) == "—"
    assert power(1e-6) == "10^{-6}" and power(2e-3) == r"2 \times 10^{-3}"
    # log ticks: every decade, or a readable stride, never more than 8 labels
    for lo, hi, stride in ((-6, 0, 1), (-12, 0, 2), (-60, 1, 10), (-300, 2, 50), (-35, 0, 5)):
        assert decade_step(lo, hi) == stride, (lo, hi)
        major, minor = log_ticks(10.0 ** lo, 10.0 ** hi)
        exps = [round(math.log10(v)) for v in major]
        assert all(e % stride == 0 for e in exps) and 2 <= len(major) <= 8
        assert len(major) + len(minor) == hi - lo + 1  # every decade is a tick
    major, _ = log_ticks(0.03, 0.9)  # under two decades: 1, 2, 5 × 10^k
    assert [round(v, 6) for v in major] == [0.05, 0.1, 0.2, 0.5]


def test_log_axes_label_every_decade_or_a_readable_step(tmp_path):
    from matplotlib.ticker import FuncFormatter

    fig = plot_decay(_results(), None)
    ax = fig.axes[0]
    fig.canvas.draw()
    lo, hi = np.log10(ax.get_ylim())
    ticks = [t for t in ax.get_yticks() if 10 ** lo <= t <= 10 ** hi]
    exps = np.log10(ticks)
    assert np.allclose(exps, np.round(exps)) and len(ticks) >= 2
    steps = set(np.diff(np.round(exps)).astype(int))
    assert len(steps) == 1 and steps.pop() in (1, 2, 5, 10, 20, 50, 100)
    assert isinstance(ax.yaxis.get_major_formatter(), FuncFormatter)
    labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    assert labels and all(re.fullmatch(r"\$\\mathdefault\{10\^\{-?\d+\}\}\$", t) for t in labels)


def test_report_numbers_have_significant_digits_only(tiny_report):
    """No ``1.33333``: the pages' words and tables show at most four significant digits
    (five or six only for an R² or a factor that would otherwise read as 1)."""
    _, _, md = tiny_report
    body = md.split("## The cells")[0]
    assert not re.search(r"\d\.\d{6,}", body)
    for token in re.findall(r"[−-]?\d+\.\d{5}", body):
        assert token.startswith(("0.9999", "1.0000")), token
    assert "e-0" not in body and "e+0" not in body  # powers of ten, never 1e-06

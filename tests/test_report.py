"""Plots and the ``gateflow report`` command: files, refusal of existing folders, figures."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from typer.testing import CliRunner

from gateflow import GateflowError
from gateflow.analysis._analysis import gate_path
from gateflow.cli import app
from gateflow.jobs._report import ReportConfig, write_report
from gateflow.models._params import init_params, make_inputs
from gateflow.numeric._chain import all_lags
from gateflow.presentation._plot import Overlay, plot_decay, plot_spectra

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


def test_report_cli_tiny(tmp_path):
    out = tmp_path / "r"
    result = runner.invoke(app, ["report", "--out", str(out), *TINY])
    assert result.exit_code == 0, result.output
    names = {p.name for p in out.iterdir()}
    for f in ("index.md", "index.html", "data.json", "fits.csv", "curves.csv"):
        assert f in names
    for fig in ("decay_cells", "decay_lstm_bias", "decay_gru_bias", "spectra"):
        assert f"{fig}.png" in names and f"{fig}.svg" in names
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left
    md = (out / "index.md").read_text()
    assert "$" in md and "e-folding lag" in md and "memory horizon" in md
    page = (out / "index.html").read_text()
    assert "mathjax" not in page.lower() and "http" not in page
    assert "decay_cells.svg" in page and "∂c_t/∂c_{t−1} = diag(f_t)" in page
    data = json.loads((out / "data.json").read_text())  # strict JSON (no NaN/Infinity)
    assert data["config"]["hidden"] == 4 and data["config"]["steps"] == 12
    assert {r["label"] for r in data["runs"]} >= {"RNN", "LSTM", "GRU"}
    assert "numpy" in data["versions"]


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

    monkeypatch.setattr(rep, "_figures", lambda *args: {})  # folder mechanics only: fast


def test_report_default_folder_gets_a_suffix(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _no_figures(monkeypatch)
    cfg = ReportConfig(hidden=3, inputs=2, steps=6, batch=1, spectra_lags=(1,), biases=(1.0,))
    a = write_report(cfg, quiet=True)
    b = write_report(cfg, quiet=True)
    assert a.exists() and b.exists() and a.name.endswith("n3-T6-seed0")
    assert b.name == a.name + "-2"
    assert os.path.relpath(a.parent, tmp_path) == "reports"


def test_report_failure_leaves_nothing(tmp_path, monkeypatch):
    import gateflow.jobs._report as rep

    def boom(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(rep, "_write_data", boom)
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

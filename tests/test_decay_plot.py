"""``gateflow decay`` with several cells: figures (--plot, --spectra), theory overlays, the
fit table, per-cell ``{cell}`` files, and refusal of bad input (exit 2, nothing written)."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
from typer.testing import CliRunner

from gateflow.cli import app
from gateflow.jobs._decay import run_decays
from gateflow.models._params import init_params, make_inputs, save_params

runner = CliRunner()
TINY = ("--hidden", "3", "--input-size", "2", "--steps", "12", "--batch", "2")


def invoke(*args):
    return runner.invoke(app, ["decay", *map(str, args)])


def _ok(result):
    assert result.exit_code == 0, result.output
    return result


def _legend(fig):
    return [t.get_text() for t in fig.axes[0].get_legend().get_texts()]


# -- figures --------------------------------------------------------------------------------
@pytest.mark.parametrize("ext", ["png", "svg"])
def test_multi_cell_plot_file(ext, tmp_path):
    out = tmp_path / f"decay.{ext}"
    _ok(invoke("--cell", "rnn,lstm,gru", *TINY, "--plot", out, "-q"))
    data = out.read_bytes()
    if ext == "png":
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
    else:
        assert data.startswith(b"<?xml") and b"<svg" in data
    assert sorted(os.listdir(tmp_path)) == [out.name]  # no temporary files left


def test_figure_axes_legend_and_overlays(tmp_path):
    run = run_decays("rnn,lstm,gru", hidden=3, input_size=2, steps=12, batch=2,
                     scheme="gaussian", gate_bias=2.0, plot_path=tmp_path / "d.png", quiet=True)
    fig = run.figure
    ax = fig.axes[0]
    assert "steps" in ax.get_xlabel() and "gradient norm" in ax.get_ylabel()
    assert ax.get_title() and ax.get_yscale() == "log"
    labels = _legend(fig)
    for cell, block in (("rnn", "h_T"), ("lstm", "c_T"), ("gru", "h_T")):
        assert any(t.startswith(f"{cell}:") and block in t for t in labels), labels
    assert any(t.startswith("lstm:") and "diag}(f_t)" in t for t in labels)  # ∏ diag(f)
    assert any(t.startswith("gru:") and "diag}(z_t)" in t for t in labels)  # ∏ diag(z)
    gate = [t for t in labels if "sigma(b=2)^k" in t]
    assert gate and "1+e^{b}" in gate[0] and "8.39" in gate[0]  # chrono timescale 1 + e^2
    assert any("mean field" in t and "chi_1" in t for t in labels)  # gaussian tanh RNN
    assert any("Pascanu" in t and r"\|U\|_2" in t for t in labels)
    # each overlay is the formula it names, on the same lags
    ov = {o.label.split(":")[0]: o for o in run.overlays}
    k, root_n = np.arange(1, 13), 0.5 * np.log10(3)
    np.testing.assert_allclose(ov["memory gate, zero weights"].log10,
                               root_n + k * np.log10(1 / (1 + np.exp(-2))))
    U = init_params("rnn", 3, 2, scheme="gaussian", seed=0)["U"]
    np.testing.assert_allclose(ov["rnn Pascanu bound"].log10,
                               root_n + k * np.log10(np.linalg.norm(U, 2)))


def test_overlays_only_where_they_apply(tmp_path):
    run = run_decays("lstm,gru", hidden=3, input_size=2, steps=6, batch=1,
                     plot_path=tmp_path / "d.svg", quiet=True)
    labels = _legend(run.figure)
    assert not [t for t in labels if "mean field" in t or "Pascanu" in t or "sigma(" in t]
    run = run_decays("rnn", hidden=3, input_size=2, steps=6, batch=1,  # pytorch init
                     plot_path=tmp_path / "r.svg", quiet=True)
    labels = _legend(run.figure)
    assert any("Pascanu" in t for t in labels) and not any("mean field" in t for t in labels)


def test_spectra_figure_lags_clipped_to_T(tmp_path):
    out = tmp_path / "sv.png"
    run = run_decays("rnn,lstm", hidden=3, input_size=2, steps=12, batch=2, spectra_path=out,
                     spectra_lags="1,5,100", quiet=True)
    titles = [ax.get_title() for ax in run.spectra.axes]
    assert titles == ["lag k = 1 step", "lag k = 5 steps", "lag k = 12 steps"]
    assert run.spectra.get_suptitle()
    labels = [t.get_text() for t in run.spectra.axes[-1].get_legend().get_texts()]
    assert any(t.startswith("lstm:") and "c_T" in t for t in labels)
    assert out.read_bytes().startswith(b"\x89PNG")



@pytest.mark.parametrize("value", [1e200, -1e307])
def test_huge_inputs_skip_the_mean_field_overlay(value, tmp_path):
    """E[x²] overflows float64 for |x| > ~1e154: the mean-field overlay (which needs it) is
    left out, with no RuntimeWarning and no misleading 'input_var' error."""
    x = tmp_path / "huge.npy"
    np.save(x, np.full((4, 1, 2), value))
    out = tmp_path / "p.png"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a RuntimeWarning would fail the run
        result = invoke("--cell", "rnn", "--init", "gaussian", "--hidden", 3, "--inputs", x,
                        "--plot", out, "-q")
        run = run_decays("rnn", scheme="gaussian", hidden=3, inputs=str(x), quiet=True)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output and "Warning" not in result.output
    assert out.read_bytes().startswith(b"\x89PNG")
    labels = [o.label for o in run.overlays]
    assert any("Pascanu" in t for t in labels) and not any("mean field" in t for t in labels)
    # ordinary inputs keep it
    run = run_decays("rnn", scheme="gaussian", hidden=3, input_size=2, steps=4, batch=1,
                     quiet=True)
    assert any("mean field" in o.label for o in run.overlays)


# -- the fit table --------------------------------------------------------------------------
def test_fit_table_has_every_cell(tmp_path):
    result = _ok(invoke("--cell", "rnn,lstm,gru", *TINY, "--threshold", "1e-3"))
    text = result.stdout
    assert all(w in text for w in ("factor", "per", "step", "e-folding", "horizon"))
    assert "regime" in text and "R²" in text and "vanishing" in text
    assert "1e-03" in text or "0.001" in text
    rows = [line for line in text.splitlines() if line.startswith("│")]
    for cell in ("rnn", "lstm", "gru"):
        assert any(line.split("│")[1].strip() == cell for line in rows), text
    assert "∏ diag(f_t)" in text and "∏ diag(z_t)" in text
    quiet = _ok(invoke("--cell", "rnn,lstm", *TINY, "--quiet"))
    assert quiet.stdout == ""


def test_fits_are_the_analysis_fits():
    from gateflow.analysis._analysis import fit_decay, summarize

    run = run_decays("lstm,gru", hidden=3, input_size=2, steps=12, batch=2, threshold=0.5,
                     quiet=True)
    for cell, res in run.results.items():
        b = res.cell.memory_block
        s = summarize(res.blocks[b]["log10_frobenius"])
        assert run.fits[cell].blocks[b] == fit_decay(res.lags, s.median, threshold=0.5)
        d = summarize(res.direct[b.wrt]["log10_frobenius"])
        assert run.fits[cell].direct[b.wrt] == fit_decay(res.lags, d.median, threshold=0.5)
        assert run.fits[cell].cell is res.cell
    assert set(run.fits["lstm"].blocks) == {"c/c"} and set(run.fits["lstm"].direct) == {"c"}
    assert set(run.fits["gru"].blocks) == {"h/h"} and set(run.fits["gru"].direct) == {"h"}


def test_direct_path_labels_come_from_the_derivation(tmp_path):
    """The dashed cell-path product is labelled with the derived coefficient of
    ∂s_t/∂s_{t−1} along the cell path (MGU: 1 − f, minimalRNN: u), not a gate-letter map."""
    run = run_decays("mgu,minimalrnn,lstm,gru", hidden=3, input_size=2, steps=6, batch=1,
                     plot_path=tmp_path / "d.svg", quiet=True)
    labels = _legend(run.figure)
    assert any(t.startswith("mgu:") and r"\mathrm{diag}(1 - f_t)" in t for t in labels), labels
    assert any(t.startswith("minimalrnn:") and r"\mathrm{diag}(u_t)" in t for t in labels)
    assert not any(t.startswith(("mgu:", "minimalrnn:")) and "diag}(z_t)" in t for t in labels)
    result = _ok(invoke("--cell", "mgu,minimalrnn", *TINY))
    assert "∏ diag(1 − f_t)" in result.stdout and "∏ diag(u_t)" in result.stdout


def test_plot_draws_the_batch_median_and_quartiles():
    """Each solid line is the median over the batch of the measured norms, the dashed one
    the median of the direct product, the band the 25–75 % quantiles (computed here
    independently with NumPy)."""
    from gateflow.presentation._plot_lags import plot_decay

    run = run_decays("rnn,lstm", hidden=3, input_size=2, steps=9, batch=5, quiet=True)
    chains = dict(run.results)
    fig = plot_decay(chains)
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    for cell, res in chains.items():
        b = res.cell.memory_block
        logs = res.blocks[b]["log10_frobenius"]
        (solid,) = [ln for lb, ln in lines.items() if lb.startswith(f"{cell}:")
                    and "partial" in lb]
        np.testing.assert_allclose(solid.get_ydata(), 10 ** np.median(logs, axis=1))
        assert not np.allclose(solid.get_ydata(), 10 ** np.quantile(logs, 0.75, axis=1))
        if res.direct:
            (dashed,) = [ln for lb, ln in lines.items() if lb.startswith(f"{cell}:")
                         and "diag" in lb]
            np.testing.assert_allclose(dashed.get_ydata(),
                                       10 ** np.median(res.direct[b[0]]["log10_frobenius"],
                                                       axis=1))
    bands = ax.collections
    assert len(bands) == len(chains)
    for band, (cell, res) in zip(bands, chains.items()):
        logs = res.blocks[res.cell.memory_block]["log10_frobenius"]
        ys = band.get_paths()[0].vertices[:, 1]
        lo, hi = 10 ** np.quantile(logs, 0.25, axis=1), 10 ** np.quantile(logs, 0.75, axis=1)
        assert np.isclose(ys.min(), lo.min()) and np.isclose(ys.max(), hi.max())
        for v in (lo, hi):
            assert all(np.isclose(ys, y).any() for y in v)


# -- the input-sensitivity panel ------------------------------------------------------------
def _panel_lines(ax):
    return {ln.get_label(): ln for ln in ax.get_lines()}


def test_input_panel_only_when_input_blocks_are_measured(tmp_path):
    """--blocks with h/x, c/x: a second panel, ‖∂X_T/∂x_{T−k}‖ against input lag k, each
    curve the batch median of ChainResult.inputs; the memory panel is unchanged."""
    opts = {"hidden": 3, "input_size": 2, "steps": 9, "batch": 5, "quiet": True}
    plain = run_decays("lstm", plot_path=tmp_path / "p.svg", **opts).figure
    assert len(plain.axes) == 1
    run = run_decays("lstm", blocks="c/c,h/x,c/x", plot_path=tmp_path / "i.svg", **opts)
    fig = run.figure
    assert len(fig.axes) == 2
    memory, inputs = fig.axes
    # the memory panel is the one drawn without input blocks
    assert memory.get_title() == plain.axes[0].get_title()
    assert _legend(fig) == _legend(plain)
    for (a, la), (b, lb) in zip(_panel_lines(memory).items(), _panel_lines(plain.axes[0]).items()):
        assert a == b
        np.testing.assert_array_equal(la.get_ydata(), lb.get_ydata())
    # the input panel
    assert inputs.get_xlabel() == "input lag k (steps)"
    assert r"\|\partial s_T/\partial x_{T-k}\|_F" in inputs.get_ylabel()
    assert inputs.get_title().startswith("Input sensitivity")
    assert inputs.get_yscale() == "log"
    chain = run.results["lstm"]
    labels = [t.get_text() for t in inputs.get_legend().get_texts()]
    lines = _panel_lines(inputs)
    for b, out in (("h/x", "h"), ("c/x", "c")):
        label = rf"lstm: $\|\partial {out}_T/\partial x_{{T-k}}\|_F$"
        assert label in labels and label in lines
        line = lines[label]
        np.testing.assert_array_equal(line.get_xdata(), np.arange(9))
        np.testing.assert_allclose(line.get_ydata(),
                                   10 ** np.median(chain.inputs[b]["log10_frobenius"], axis=1))
    assert len(inputs.collections) == 2  # an IQR band per curve
    # both legends under their own axes
    fig.draw_without_rendering()
    for ax in fig.axes:
        leg, box = ax.get_legend().get_window_extent(), ax.get_window_extent()
        assert leg.y1 < box.y0 and box.x0 <= (leg.x0 + leg.x1) / 2 <= box.x1


def test_input_panel_colours_follow_the_cells(tmp_path):
    """Several cells: one input curve per cell and input block, in the cell's colour on the
    memory panel; a cell measured without input blocks keeps its colour and adds none."""
    run = run_decays("rnn,gru", blocks="h/h,h/x", hidden=3, input_size=2, steps=7, batch=3,
                     plot_path=tmp_path / "d.png", quiet=True)
    memory, inputs = run.figure.axes
    colour = {lb.split(":")[0]: ln.get_color() for lb, ln in _panel_lines(memory).items()
              if "partial" in lb}
    for cell in ("rnn", "gru"):
        (line,) = [ln for lb, ln in _panel_lines(inputs).items() if lb.startswith(f"{cell}:")]
        assert line.get_color() == colour[cell]
        np.testing.assert_allclose(
            line.get_ydata(),
            10 ** np.median(run.results[cell].inputs["h/x"]["log10_frobenius"], axis=1))
    from gateflow.presentation._plot import PALETTE
    from gateflow.presentation._plot_lags import plot_input_sensitivity

    chains = dict(run.results)
    only_gru = {"rnn": run_decays("rnn", hidden=3, input_size=2, steps=7, batch=3,
                                  quiet=True).results["rnn"], "gru": chains["gru"]}
    (line,) = plot_input_sensitivity(only_gru).axes[0].get_lines()
    assert line.get_color() == PALETTE[1]


def test_input_panel_cli(tmp_path):
    out = tmp_path / "d.svg"
    _ok(invoke("--cell", "lstm", *TINY, "--blocks", "c/c,h/x,c/x", "--plot", out, "-q"))
    assert out.read_bytes().startswith(b"<?xml")
    bad = invoke("--cell", "lstm", *TINY, "--blocks", "h/x", "--plot", tmp_path / "e.svg")
    assert bad.exit_code == 2 and "add c/c to --blocks" in bad.stderr


def test_input_sensitivity_needs_input_blocks():
    from gateflow import GateflowError
    from gateflow.numeric._chain import all_lags
    from gateflow.presentation._plot_lags import plot_input_sensitivity

    res = all_lags("lstm", init_params("lstm", 3, 2), make_inputs(4, 1, 2))
    with pytest.raises(GateflowError, match="input blocks"):
        plot_input_sensitivity({"lstm": res})


# -- the figure fixes, in the plotting functions ---------------------------------------------
def test_decay_axis_frames_the_data_not_a_growing_bound():
    """An RNN with ‖U‖₂ > 1: the Pascanu bound grows; it no longer stretches the y axis (its
    legend entry says where it leaves), the zero-weight σ(b)^k lines stay in view, the IQR
    bands have an edge, and the legend is under the axes of a figure 8 in wide: from the
    public plot_decay itself, with nothing done to the figure afterwards."""
    from gateflow.numeric._chain import all_lags
    from gateflow.presentation._plot import off_axis
    from gateflow.presentation._plot_lags import gate_overlay, plot_decay, rnn_overlays

    x = make_inputs(40, 4, 2, seed=1)
    p = init_params("rnn", 6, 2, seed=0)
    p["U"] = p["U"] * 3.0 / np.linalg.norm(p["U"], 2)
    rnn = all_lags("rnn", p, x)
    lstm = all_lags("lstm", init_params("lstm", 6, 2, seed=0, gate_bias=0.0), x)
    ovs = [*rnn_overlays(p, rnn.lags), gate_overlay(rnn.lags, 0.0, 6, tex="b_f")]
    fig = plot_decay({"RNN": rnn, "LSTM": lstm}, None, ovs)
    ax = fig.axes[0]
    lo, hi = np.log10(ax.get_ylim())
    measured = np.concatenate([np.log10(c.get_paths()[0].vertices[:, 1]) for c in ax.collections])
    pascanu = next(o for o in ovs if "Pascanu" in o.label)
    assert pascanu.log10.max() > hi + 10  # the bound is far above the data ...
    assert 0.3 <= hi - measured.max() < 1.0  # ... and stretches nothing
    off = off_axis(ovs, ax.get_ylim())
    assert off[pascanu.label][0] == "top"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    first = off[pascanu.label][1]
    assert any("Pascanu" in t and f"above the axis from $k = {first}$" in t for t in labels)
    gate = ovs[-1]
    assert gate.label not in off and gate.log10.min() >= lo  # the whole σ(0)^k line is shown
    for band in ax.collections:
        assert band.get_linewidth()[0] == pytest.approx(0.6)
        assert band.get_facecolor()[0][3] == pytest.approx(0.28)
        assert band.get_edgecolor()[0][3] == pytest.approx(0.85)
    fig.draw_without_rendering()
    leg, box = ax.get_legend().get_window_extent(), ax.get_window_extent()
    assert leg.y1 < box.y0 and fig.get_size_inches()[0] == 8.0


def test_decay_axis_keeps_theory_minima_within_reach():
    """A theory line far below the data pulls the bottom down by at most
    max(10 decades, the measured span), not to its own minimum."""
    from gateflow.numeric._chain import all_lags
    from gateflow.presentation._plot import Overlay
    from gateflow.presentation._plot_lags import plot_decay

    res = all_lags("lstm", init_params("lstm", 4, 2, seed=0), make_inputs(12, 2, 2, seed=1))
    low = Overlay("far below", res.lags, np.linspace(-1.0, -80.0, res.lags.size))
    ax = plot_decay({"LSTM": res}, None, [low]).axes[0]
    lo, hi = np.log10(ax.get_ylim())
    drawn = np.concatenate([np.log10(ln.get_ydata()) for ln in ax.get_lines()
                            if ln.get_label().startswith("LSTM")]
                           + [np.log10(c.get_paths()[0].vertices[:, 1]) for c in ax.collections])
    reach = drawn.min() - max(10.0, drawn.max() - drawn.min())  # the theory line's floor
    pad = max(0.3, 0.03 * (drawn.max() - reach))
    assert low.log10.min() < reach
    assert lo == pytest.approx(reach - pad) and hi == pytest.approx(drawn.max() + pad)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(t.startswith("far below (below the axis from $k = ") for t in labels)


def test_spectra_draw_unresolved_values_as_markers_at_the_floor():
    """At a long lag an RNN's smallest singular values fall more than 14 decades below the
    largest: plot_spectra draws them as hollow triangles at that floor (not dropped), the
    legend says why, and unresolved_counts (the report's captions) counts the same ones."""
    from gateflow.numeric._chain import all_lags
    from gateflow.presentation._plot_spectra import NOISE_DECADES, plot_spectra, unresolved_counts

    x = make_inputs(60, 1, 2, seed=1)
    res = {"RNN": all_lags("rnn", init_params("rnn", 8, 2, seed=0), x, singular_lags=(1, 60))}
    fig = plot_spectra(res, "h/h", lags=[1, 60])
    s = np.sort(np.asarray(res["RNN"].singular_values[60]["h/h"])[0])[::-1]
    below = int(np.sum(s < s[0] + NOISE_DECADES))
    assert below > 0
    assert unresolved_counts(res, "h/h", [1, 60]) == {("RNN", 1): 0, ("RNN", 60): below}
    marks = [ln for ln in fig.axes[1].get_lines() if ln.get_marker() == "v"]
    assert len(marks) == 1 and len(marks[0].get_xdata()) == below
    assert marks[0].get_markerfacecolor() == "none"
    np.testing.assert_allclose(marks[0].get_ydata(), 10 ** (s[0] + NOISE_DECADES))
    assert not [ln for ln in fig.axes[0].get_lines() if ln.get_marker() == "v"]
    # every index 1..n is drawn, resolved or marked
    drawn = {int(i) for ln in fig.axes[1].get_lines() for i in ln.get_xdata()}
    assert drawn == set(range(1, 9))
    labels = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    assert any("float64" in t for t in labels)
    fig.draw_without_rendering()
    leg = fig.axes[1].get_legend().get_window_extent()
    assert leg.y1 < fig.axes[1].get_window_extent().y0  # below the panels


def test_figure_bytes_are_reproducible(tmp_path):
    """The same figure gives the same SVG and PDF bytes (fixed SVG ids, no creation date),
    through figure_bytes, save_figure and ``gateflow decay --plot``."""
    from gateflow.presentation._plot import figure_bytes, save_figure
    from gateflow.presentation._plot_lags import plot_decay

    run = run_decays("rnn,lstm", hidden=3, input_size=2, steps=8, batch=2, quiet=True)
    fig = plot_decay(dict(run.results))
    for fmt in ("svg", "pdf"):
        assert figure_bytes(fig, fmt) == figure_bytes(fig, fmt)
    assert figure_bytes(fig, "pdf").startswith(b"%PDF")
    first = save_figure(fig, tmp_path / "a", formats=("svg", "pdf"))
    assert [p.name for p in first] == ["a.svg", "a.pdf"]
    saved = {p.suffix: p.read_bytes() for p in first}
    save_figure(fig, tmp_path / "a", formats="svg,pdf")
    assert saved == {p.suffix: p.read_bytes() for p in first}
    assert saved[".pdf"].startswith(b"%PDF") and saved[".svg"] == figure_bytes(fig, "svg")
    for name in ("x.svg", "y.svg"):
        _ok(invoke("--cell", "rnn", *TINY, "--plot", tmp_path / name, "-q"))
    assert (tmp_path / "x.svg").read_bytes() == (tmp_path / "y.svg").read_bytes()


# -- per-cell files -------------------------------------------------------------------------
def test_cell_json_equals_single_cell_json(tmp_path):
    cfg = (*TINY, "--init", "gaussian", "--sigma-w", "1.4", "--seed", "3")
    _ok(invoke("--cell", "rnn,lstm,gru", *cfg, "--json", tmp_path / "m-{cell}.json",
               "--csv", tmp_path / "m-{cell}.csv", "--plot", tmp_path / "m.png", "-q"))
    for cell in ("rnn", "lstm", "gru"):
        _ok(invoke("--cell", cell, *cfg, "--json", tmp_path / f"s-{cell}.json",
                   "--csv", tmp_path / f"s-{cell}.csv", "-q"))
        for ext in ("json", "csv"):
            assert (tmp_path / f"m-{cell}.{ext}").read_bytes() == \
                (tmp_path / f"s-{cell}.{ext}").read_bytes()


def test_shared_inputs_and_weight_pattern(tmp_path):
    np.save(tmp_path / "x.npy", make_inputs(7, 2, 2, seed=5))
    for cell in ("lstm", "gru"):
        save_params(tmp_path / f"w-{cell}.npz", cell, init_params(cell, 3, 2, seed=1))
    run = run_decays("lstm,gru", weights=str(tmp_path / "w-{cell}.npz"),
                     inputs=tmp_path / "x.npy", json_path=tmp_path / "{cell}.json", quiet=True)
    for cell in ("lstm", "gru"):
        assert run.results[cell].provenance.weights["path"] == str(tmp_path / f"w-{cell}.npz")
        assert run.results[cell].provenance.inputs["path"] == str(tmp_path / "x.npy")
        assert run.results[cell].shapes == {"T": 7, "B": 2, "n": 3, "d": 2}
        assert (tmp_path / f"{cell}.json").exists()


# -- refusals -------------------------------------------------------------------------------
BAD = {
    "unknown cell in list": ("--cell", "rnn,lstn,gru", *TINY),
    "no cell in list": ("--cell", ",", *TINY),
    "plot unknown extension": ("--cell", "rnn,lstm", *TINY, "--plot", "{out}/d.jpg"),
    "plot without extension": ("--cell", "rnn,lstm", *TINY, "--plot", "{out}/d"),
    "plot in missing folder": ("--cell", "rnn,lstm", *TINY, "--plot", "{out}/no/d.png"),
    "spectra unknown extension": ("--cell", "lstm", *TINY, "--spectra", "{out}/s.jpg"),
    "json without {cell}": ("--cell", "rnn,lstm", *TINY, "--json", "{out}/r.json"),
    "csv without {cell}": ("--cell", "rnn,lstm", *TINY, "--csv", "{out}/r.csv"),
    "weights without {cell}": ("--cell", "rnn,lstm", "--weights", "w.safetensors",
                               "--plot", "{out}/d.png"),
    "plot and spectra same file": ("--cell", "rnn,lstm", *TINY, "--plot", "{out}/d.png",
                                   "--spectra", "{out}/d.png"),
    "plot over a json": ("--cell", "lstm", *TINY, "--plot", "{out}/d.svg", "--json",
                         "{out}/d.svg"),
    "bad threshold": ("--cell", "rnn,lstm", *TINY, "--threshold", "0", "--plot", "{out}/d.png"),
    "bad spectra lags": ("--cell", "rnn", *TINY, "--spectra", "{out}/s.png",
                         "--spectra-lags", "1,x"),
    "spectra lags without spectra": ("--cell", "rnn", *TINY, "--spectra-lags", "1,2",
                                     "--plot", "{out}/d.png"),
    "memory block not measured": ("--cell", "lstm,gru", *TINY, "--blocks", "h/h",
                                  "--plot", "{out}/d.png"),
    "gate bias on no gated cell": ("--cell", "rnn,rnn-relu", *TINY, "--gate-bias", "1",
                                   "--plot", "{out}/d.png"),
    "bad weights file for one cell": ("--cell", "lstm,gru", "--weights", "{out}/w-{cell}.npz",
                                      "--plot", "{out}/d.png"),
}


#: What each refusal's one line must say.
BAD_MESSAGE = {
    "unknown cell in list": "unknown cell 'lstn' (did you mean 'lstm'",
    "no cell in list": "no cell chosen",
    "plot unknown extension": "unknown extension '.jpg'; use .svg, .png or .pdf",
    "plot without extension": "unknown extension '(none)'",
    "plot in missing folder": "does not exist",
    "spectra unknown extension": "unknown extension '.jpg'",
    "json without {cell}": "must contain {cell} with several cells",
    "csv without {cell}": "must contain {cell} with several cells",
    "weights without {cell}": "is one cell's file",
    "plot and spectra same file": "would both write",
    "plot over a json": "would both write",
    "bad threshold": "--threshold must be a finite number > 0",
    "bad spectra lags": "--spectra-lags: 'x' is not an integer",
    "spectra lags without spectra": "--spectra-lags applies only with --spectra",
    "memory block not measured": "add c/c to --blocks (cell lstm)",
    "gate bias on no gated cell": "--gate-bias does not apply to any of rnn, rnn-relu",
    "bad weights file for one cell": "w-gru.npz",
}


def test_list_parser_drops_repeats_and_empty_names():
    """The one list parser (choose_many): repeats and empty items are dropped."""
    run = run_decays("rnn,,lstm,rnn", hidden=3, input_size=2, steps=3, batch=1, quiet=True)
    assert list(run.results) == ["rnn", "lstm"]


@pytest.mark.parametrize("what", BAD)
def test_bad_input_exits_2_and_writes_nothing(what, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    np.savez(out / "w-lstm.npz", **init_params("lstm", 3, 2))  # the gru's file is missing
    before = sorted(os.listdir(out))
    args = [str(a).replace("{out}", str(out)) for a in BAD[what]]
    result = invoke(*args, "--json" if "--json" not in args else "--csv",
                    str(out / "keep-{cell}.x"))
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert BAD_MESSAGE[what] in lines[0], lines[0]
    assert "Traceback" not in result.output
    assert sorted(os.listdir(out)) == before
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]


def test_failure_while_drawing_writes_nothing(tmp_path, monkeypatch):
    import gateflow.presentation._plot as plot

    def boom(*args, **kwargs):
        raise RuntimeError("renderer on fire")

    monkeypatch.setattr(plot, "figure_bytes", boom)
    with pytest.raises(RuntimeError):
        run_decays("rnn,lstm", hidden=3, input_size=2, steps=4, batch=1,
                   json_path=tmp_path / "{cell}.json", plot_path=tmp_path / "d.png", quiet=True)
    assert os.listdir(tmp_path) == []

"""``gateflow decay`` with several cells: figures (--plot, --spectra), theory overlays, the
fit table, per-cell ``{cell}`` files, and refusal of bad input (exit 2, nothing written)."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
from typer.testing import CliRunner

from gateflow.cli import app
from gateflow.jobs._decay import memory_block, run_decays
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
                     init="gaussian", gate_bias=2.0, plot_path=tmp_path / "d.png", quiet=True)
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
        run = run_decays("rnn", init="gaussian", hidden=3, inputs=str(x), quiet=True)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output and "Warning" not in result.output
    assert out.read_bytes().startswith(b"\x89PNG")
    labels = [o.label for o in run.overlays]
    assert any("Pascanu" in t for t in labels) and not any("mean field" in t for t in labels)
    # ordinary inputs keep it
    run = run_decays("rnn", init="gaussian", hidden=3, input_size=2, steps=4, batch=1,
                     quiet=True)
    assert any("mean field" in o.label for o in run.overlays)


# -- the fit table --------------------------------------------------------------------------
def test_fit_table_has_every_cell(tmp_path):
    result = _ok(invoke("--cell", "rnn,lstm,gru", *TINY, "--threshold", "1e-3"))
    text = result.stdout
    assert "per-step factor" in text and "e-folding" in text and "memory horizon" in text
    assert "1e-03" in text or "0.001" in text
    rows = [line for line in text.splitlines() if line.startswith("│")]
    for cell in ("rnn", "lstm", "gru"):
        assert any(line.split("│")[1].strip() == cell for line in rows), text
    assert "∏ diag(f)" in text and "∏ diag(z)" in text
    quiet = _ok(invoke("--cell", "rnn,lstm", *TINY, "--quiet"))
    assert quiet.stdout == ""


def test_fits_are_the_analysis_fits():
    from gateflow.analysis._analysis import fit_decay, summarize

    run = run_decays("lstm,gru", hidden=3, input_size=2, steps=12, batch=2, threshold=0.5,
                     quiet=True)
    for cell, res in run.results.items():
        b = memory_block(cell)
        s = summarize(res.chain.blocks[b]["log10_frobenius"])
        assert run.fits[cell][b] == fit_decay(res.chain.lags, s.median, threshold=0.5)
    assert set(run.fits["lstm"]) == {"c/c", "∏ diag(f)"}
    assert set(run.fits["gru"]) == {"h/h", "∏ diag(z)"}


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
        assert run.results[cell].weights_source["path"] == str(tmp_path / f"w-{cell}.npz")
        assert run.results[cell].inputs_source["path"] == str(tmp_path / "x.npy")
        assert run.results[cell].shapes == {"T": 7, "B": 2, "n": 3, "d": 2}
        assert (tmp_path / f"{cell}.json").exists()


# -- refusals -------------------------------------------------------------------------------
BAD = {
    "unknown cell in list": ("--cell", "rnn,lstn,gru", *TINY),
    "duplicate cell": ("--cell", "rnn,lstm,rnn", *TINY),
    "empty cell in list": ("--cell", "rnn,,gru", *TINY),
    "plot unknown extension": ("--cell", "rnn,lstm", *TINY, "--plot", "{out}/d.pdf"),
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

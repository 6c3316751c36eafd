"""The text of ``gateflow report``: index.md (Markdown, $…$ LaTeX) and index.html (Unicode,
renders offline, no MathJax), written from the report's data — the very dict saved as
``data.json`` — so that every number the narrative states is a number of that file.

:func:`narrative` tells the story with the numbers; :func:`render_report` lays out both
pages: narrative, headline, figures, fits, theory against measurement, the cells'
equations and Jacobians, configuration and versions.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

from gateflow.presentation._console import fmt
from gateflow.presentation._labels import direct_coefficient, direct_label

__all__ = ["narrative", "render_report"]

#: The cells the report compares, by run label.
CELLS = {"RNN": "rnn", "LSTM": "lstm", "GRU": "gru"}


def _runs(data: Mapping) -> dict[str, Mapping]:
    return {r["label"]: r for r in data["runs"]}


def shown_fit(run: Mapping) -> Mapping:
    """The fit of the block a run shows."""
    return run["fits"][run["block"]]


def horizon(fit: Mapping, T: int) -> str:
    """A fit's memory horizon; ``"> T"`` when a vanishing curve has not reached the
    threshold yet, ``"never within T"`` for a curve that does not vanish."""
    h = fit["memory_horizon"]
    if h is not None:
        return f"{h}"
    return f"> {T}" if fit.get("regime", "vanishing") == "vanishing" else "never within T"


def r2_text(fit: Mapping) -> str:
    return "—" if fit.get("r2") is None else f"{fit['r2']:.3f}"


def trend(fit: Mapping) -> str:
    """What a fitted curve does, in words, with its numbers: an e-folding lag only for a
    vanishing curve; an exploding, neutral or non-monotone curve is called so."""
    regime, factor = fit.get("regime", "vanishing"), fit["per_step_factor"]
    if regime == "vanishing":
        return (f"decays by a factor {factor:.3f} per step (e-folding lag "
                f"{fmt(fit['efold_lag'], '.2f')} steps, R² {r2_text(fit)})")
    if regime == "exploding":
        return (f"grows by a factor {factor:.3f} per step (exploding, R² {r2_text(fit)}: no "
                "e-folding lag, and no memory)")
    if regime == "neutral":
        return (f"stays within half a decade over the lags measured (factor {factor:.3f} per "
                f"step, R² {r2_text(fit)}: neutral, no e-folding lag)")
    if regime == "non-monotone":
        return (f"falls and then rises again (non-monotone: the best line, factor "
                f"{factor:.3f} per step, has R² {r2_text(fit)}, so no e-folding lag)")
    return "is exactly zero"


def efold_text(fit: Mapping) -> str:
    """The e-folding lag of a vanishing curve; the regime of any other."""
    if fit.get("regime", "vanishing") == "vanishing":
        return fmt(fit["efold_lag"], ".3g", "∞")
    return f"— ({fit['regime']})"


def narrative(data: Mapping) -> list[str]:
    """The paragraphs that tell the story with the numbers of ``data`` (plain text with
    Unicode). Every number is formatted from ``data`` here and nowhere else."""
    cfg = data["config"]
    T = cfg["steps"]
    runs = _runs(data)
    rnn, lstm, gru = (shown_fit(runs[k]) for k in ("RNN", "LSTM", "GRU"))
    lstm_d, gru_d = runs["LSTM"]["direct_fit"], runs["GRU"]["direct_fit"]
    mf = data["theory"]["mean_field"]
    u_norm = data["theory"]["pascanu"]["U_spectral_norm"]
    thr = f"{cfg['threshold']:g}"
    f_c, z_h = direct_coefficient("lstm"), direct_coefficient("gru")
    paras = [
        "The seed chapter (an NLP text on LSTM and GRU) claims that a plain RNN cannot hold "
        "long-term dependencies because its gradients vanish (or explode) through many steps; "
        "the LSTM adds a cell state c, updated additively as c_t = f_t ⊙ c_{t−1} + i_t ⊙ g_t, "
        f"whose gradient path ∂c_t/∂c_{{t−1}} = diag({f_c}) the forget gate controls, and the "
        f"GRU simplifies this to an update gate z (∂h_t/∂h_{{t−1}} ⊇ diag({z_h})) and a reset "
        "gate r.",
        f"Measured at the same initialisation ({cfg['scheme']}, n = {cfg['hidden']}, d = "
        f"{cfg['inputs']}, T = {T}, {cfg['batch']} sequences): the RNN's ‖∂h_T/∂h_(T−k)‖_F "
        f"{trend(rnn)}; it first drops below {thr} at lag {horizon(rnn, T)}. Mean-field "
        f"theory predicts √χ₁ = {mf['per_step_factor']:.3f} per "
        f"step (χ₁ = {mf['chi1']:.3f}); the Pascanu bound, with ‖U‖₂ = {u_norm:.2f}, "
        + ("is above 1 per step and so says nothing here: the bound is loose, the "
           "vanishing comes from tanh' < 1 on typical pre-activations."
           if u_norm >= 1 else "is below 1 per step and guarantees vanishing."),
        f"The LSTM's cell path ∂c_T/∂c_(T−k) {trend(lstm)}, horizon {horizon(lstm, T)}; the "
        f"GRU's ∂h_T/∂h_(T−k) {trend(gru)}, horizon {horizon(gru, T)}. The gate-only products "
        f"{direct_label('lstm')} and {direct_label('gru')} (dashed) decay at "
        f"{lstm_d['per_step_factor']:.3f} and {gru_d['per_step_factor']:.3f} per step: with "
        "default biases near 0 the gates sit near σ(0) = 0.5, so gating alone barely helps.",
    ]
    lstm_b = [r for r in data["runs"] if r["group"] == "lstm-bias"]
    gru_b = [r for r in data["runs"] if r["group"] == "gru-bias"]

    def line(rs):
        return "; ".join(f"{r['label'].split(' ', 1)[1]}: e-fold "
                         f"{efold_text(shown_fit(r))}, R² {r2_text(shown_fit(r))}, horizon "
                         f"{horizon(shown_fit(r), T)}" for r in rs)

    paras.append(lyapunov_paragraph(data))
    if lstm_b and gru_b:
        paras.append(
            "What keeps the gradient alive is the gate's bias, which sets the timescale "
            "1 + e^b of the memory path (σ(b)^k exactly when the weights are zero). LSTM — "
            f"{line(lstm_b)}. GRU — {line(gru_b)}. So the chapter's claim holds in the form "
            "the theory gives it: the additive, gated path can carry gradients across "
            "hundreds of steps, but only when the forget/update gate is biased open (b ≳ 3, "
            "or chrono initialisation); the plain RNN has no such knob.")
    return paras


def lyapunov_paragraph(data: Mapping) -> str:
    """What the Lyapunov spectra say, with their numbers (median over the sequences)."""
    runs = _runs(data)
    lam = {k: runs[k]["lyapunov"]["median"][0] for k in ("RNN", "LSTM", "GRU")}
    mf = data["theory"]["lyapunov_mean_field"]["lambda_1"]
    biased = [r for r in data["runs"] if r["group"] != "cells" and "lyapunov" in r]
    best = max(biased, key=lambda r: r["lyapunov"]["median"][0]) if biased else None

    def timescale(v: float) -> str:
        return "no finite time" if v >= 0 else f"{-1 / v:.3g} steps"

    text = (f"The Lyapunov spectra say the same thing along the trajectory, with no fit: the "
            f"largest exponent λ₁ (natural log per step) is the rate of the slowest "
            f"direction, e^(λ₁ t) what a generic perturbation of the state keeps after t "
            f"steps. It is {lam['RNN']:.3f} for the RNN (mean-field theory: ½ ln χ₁ = "
            f"{mf:.3f}), {lam['LSTM']:.3f} for the LSTM and {lam['GRU']:.3f} for the GRU: "
            f"their slowest direction forgets by a factor e in {timescale(lam['RNN'])}, "
            f"{timescale(lam['LSTM'])} and {timescale(lam['GRU'])}.")
    if best is not None:
        v = best["lyapunov"]["median"][0]
        text += (f" Opening the gate moves λ₁ towards 0: {best['label']} has "
                 f"λ₁ = {v:.3f}, "
                 + ("a direction that no longer contracts (no finite forgetting time)."
                    if v >= 0 else f"forgetting by e in {timescale(v)}."))
    return text


def _lyapunov_rows(data: Mapping) -> list[list[str]]:
    mf = data["theory"]["lyapunov_mean_field"]["lambda_1"]
    rows = [["RNN mean field ½ ln χ₁", f"{mf:.4f}", "—", "—", "—"]]
    for r in data["runs"]:
        if "lyapunov" in r:
            med = list(r["lyapunov"]["median"][:4])  # null in data.json: −inf
            cells = ["−∞" if v is None or v == float("-inf") else f"{v:.4f}" for v in med]
            rows.append([r["label"], *cells, *["—"] * (4 - len(cells))])
    return rows


_LYAPUNOV_HEADERS = ["configuration", "λ₁", "λ₂", "λ₃", "λ₄"]


def _fit_rows(data: Mapping) -> list[list[str]]:
    T = data["config"]["steps"]
    rows = []
    for r in data["runs"]:
        shown = [(r["block"], shown_fit(r))]
        if r.get("direct_fit") is not None and r["group"] == "cells":
            shown.append((direct_label(r["cell"], r["block"].split("/")[1]), r["direct_fit"]))
        for b, f in shown:
            rows.append([r["label"], b, f.get("regime", "vanishing"),
                         f"{f['per_step_factor']:.4f}", r2_text(f), efold_text(f),
                         horizon(f, T)])
    return rows


_HEADERS = ["configuration", "block", "regime", "per-step factor", "R²",
            "e-folding lag (steps)", "memory horizon (steps)"]


def _measured(fit: Mapping) -> str:
    """A measured factor as the theory table shows it: only where the line describes the
    curve (R² ≥ 0.99); otherwise why it is not compared."""
    from gateflow.analysis._analysis import GOOD_R2

    r2 = fit.get("r2")
    if r2 is not None and r2 >= GOOD_R2 and fit.get("regime") != "non-monotone":
        return f"{fit['per_step_factor']:.4f} (R² {r2:.3f})"
    why = "undefined" if r2 is None else f"{r2:.3f}"
    return f"not compared: R² {why} < {GOOD_R2} ({fit.get('regime')}), not one exponential"


def _md_table(headers, rows) -> list[str]:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return out


def _html_table(headers, rows) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>"
                   for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _equations():
    from gateflow.cells._library import get_cell
    from gateflow.cells._notation import equation_lines, partial
    from gateflow.symbolic._derive import derive, linop

    out = []
    for name, blocks in (("rnn", ("h/h",)), ("lstm", ("c/c", "h/h")), ("gru", ("h/h",))):
        cell = get_cell(name)
        s = derive(cell)
        jac = [(partial(b, "latex"), linop(s.block(b, chained=True), cell, "latex"),
                partial(b, "text"), linop(s.block(b, chained=True), cell, "text")) for b in blocks]
        out.append((cell, equation_lines(cell, "latex"), equation_lines(cell, "text"), jac))
    return out


_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:60rem;margin:2rem auto;
padding:0 1rem;line-height:1.5;color:#222}
h1,h2,h3{line-height:1.2} code,pre,.eq{font-family:'DejaVu Sans Mono',Menlo,Consolas,monospace}
.eq{background:#f6f8fa;padding:.6rem .9rem;border-radius:4px;white-space:pre-wrap;font-size:.9rem}
table{border-collapse:collapse;margin:1rem 0;font-size:.9rem}
th,td{border:1px solid #ccc;padding:.25rem .6rem;text-align:right}
th:first-child,td:first-child{text-align:left} thead{background:#f0f0f0}
figure{margin:1.5rem 0} figure img{max-width:100%;height:auto}
figcaption{font-size:.9rem;color:#555} .small{font-size:.85rem;color:#555}
"""


def render_report(data: Mapping[str, Any], figs: Mapping[str, str]) -> tuple[str, str]:
    """(index.md, index.html) of the report from its ``data`` (as saved in data.json) and
    its figures (name -> caption)."""
    cfg = data["config"]
    T = cfg["steps"]
    title = "gateflow report: does gating keep gradients alive?"
    story = narrative(data)
    runs = _runs(data)
    headline = [[r["label"], r["block"], shown_fit(r).get("regime", "vanishing"),
                 efold_text(shown_fit(r)), horizon(shown_fit(r), T)]
                for r in data["runs"] if r["group"] == "cells"]
    head_h = ["cell", "block", "regime", "e-folding lag (steps)",
              f"memory horizon (steps, < {cfg['threshold']:g})"]
    rows = _fit_rows(data)
    mf = data["theory"]["mean_field"]
    rnn_factor = _measured(shown_fit(runs["RNN"]))
    theory_rows = [
        ["RNN mean field √χ₁", f"{mf['per_step_factor']:.4f}",
         fmt(mf["efold_lag"], ".3g", "∞"), rnn_factor],
        ["RNN Pascanu ‖U‖₂ (bound per step)",
         f"{data['theory']['pascanu']['U_spectral_norm']:.4f}", "—", rnn_factor],
    ]
    for label, g in data["theory"]["gate_path"].items():
        theory_rows.append([f"{label}: σ(b) (zero weights)", f"{g['zero_weight_factor']:.4f}",
                            fmt(g["zero_weight_efold"], ".3g", "∞"),
                            _measured(shown_fit(runs[label]))])
    theory_h = ["theory", "per-step factor", "e-folding lag (steps)", "measured factor"]
    config_rows = [[k, str(v)] for k, v in {
        "hidden size n": cfg["hidden"], "input size d": cfg["inputs"], "steps T": T,
        "batch B": cfg["batch"], "initialisation": cfg["scheme"], "weight seed": cfg["seed"],
        "input seed (x ~ N(0, 1))": cfg["input_seed"], "norm": cfg["norm"].capitalize(),
        "memory-horizon threshold": f"{cfg['threshold']:g}", "chrono T_max": T,
        "wall time (s)": f"{data['seconds']:.1f}"}.items()]
    version_rows = [[k, v] for k, v in data["versions"].items()]
    eqs = _equations()

    # Markdown
    md = [f"# {title}", "", *sum(([p, ""] for p in story), []), "## Headline", "",
          *_md_table(head_h, headline), ""]
    md += ["## Figures", ""]
    for name, caption in figs.items():
        md += [f"![{caption}]({name}.png)", "", f"*{caption}* ([SVG]({name}.svg))", ""]
    md += ["## Fitted decay", "",
           "Least-squares fit of log10 of the median norm against lag k over all lags; "
           "per-step factor = 10^slope, R² of that line; regime: vanishing, exploding, "
           "neutral (within half a decade over the lags) or non-monotone (falls and rises "
           "by ≥ 0.3 decade); e-folding lag = −1/(slope · ln 10) for a vanishing curve only; "
           f"memory horizon = first lag whose median is below {cfg['threshold']:g}. "
           "Theory is compared with a fit only where R² ≥ 0.99.", "",
           *_md_table(_HEADERS, rows), "", "## Lyapunov spectra", "",
           "The leading Lyapunov exponents (natural log per step, median over the "
           "sequences) of the driven dynamics, on the same inputs: QR on K tangent vectors "
           "pushed through the exact Jacobians, the first tenth of the steps discarded.", "",
           *_md_table(_LYAPUNOV_HEADERS, _lyapunov_rows(data)), "",
           "## Theory against measurement", "",
           *_md_table(theory_h, theory_rows), "", "## Cells", ""]
    for cell, tex, _, jac in eqs:
        md += [f"### {cell.name}: {cell.summary}", ""]
        md += [f"- ${line}$" for line in tex]
        md += [f"- ${lhs} = {rhs}$" for lhs, rhs, _, _ in jac]
        md.append("")
    md += ["## Configuration", "", *_md_table(["setting", "value"], config_rows), "",
           "## Versions", "", *_md_table(["package", "version"], version_rows), "",
           "Data: [data.json](data.json), [fits.csv](fits.csv), [curves.csv](curves.csv).", ""]

    # HTML
    e = html.escape
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{e(title)}"
             f"</title><style>{_CSS}</style></head><body><h1>{e(title)}</h1>"]
    parts += [f"<p>{e(p)}</p>" for p in story]
    parts += ["<h2>Headline</h2>", _html_table(head_h, headline), "<h2>Figures</h2>"]
    for name, caption in figs.items():
        parts.append(f"<figure><img src='{name}.svg' alt='{e(caption)}'><figcaption>{e(caption)} "
                     f"(<a href='{name}.png'>PNG</a>, <a href='{name}.svg'>SVG</a>)"
                     "</figcaption></figure>")
    parts += ["<h2>Fitted decay</h2>",
              f"<p class='small'>Least-squares fit of log10 of the median norm against lag k; "
              f"per-step factor = 10<sup>slope</sup>, R² of that line; regime: vanishing, "
              f"exploding, neutral (within half a decade over the lags) or non-monotone "
              f"(falls and rises by ≥ 0.3 decade); e-folding lag = −1/(slope · ln 10) for a "
              f"vanishing curve only; memory horizon = first lag whose median is below "
              f"{e(format(cfg['threshold'], 'g'))}. Theory is compared with a fit only "
              f"where R² ≥ 0.99.</p>",
              _html_table(_HEADERS, rows), "<h2>Lyapunov spectra</h2>",
              "<p class='small'>The leading Lyapunov exponents (natural log per step, median "
              "over the sequences) of the driven dynamics, on the same inputs: QR on K "
              "tangent vectors pushed through the exact Jacobians, the first tenth of the "
              "steps discarded.</p>",
              _html_table(_LYAPUNOV_HEADERS, _lyapunov_rows(data)),
              "<h2>Theory against measurement</h2>",
              _html_table(theory_h, theory_rows), "<h2>Cells</h2>"]
    for cell, _, text, jac in eqs:
        lines = text + [f"{lhs} = {rhs}" for _, _, lhs, rhs in jac]
        parts += [f"<h3>{e(cell.name)}: {e(cell.summary)}</h3>",
                  f"<div class='eq'>{e(chr(10).join(lines))}</div>"]
    parts += ["<h2>Configuration</h2>", _html_table(["setting", "value"], config_rows),
              "<h2>Versions</h2>", _html_table(["package", "version"], version_rows),
              "<p>Data: <a href='data.json'>data.json</a>, <a href='fits.csv'>fits.csv</a>, "
              "<a href='curves.csv'>curves.csv</a>.</p></body></html>"]
    return "\n".join(md), "\n".join(parts)

"""Readers of the gated linear RNNs' PyTorch packages (mingru-pytorch, xlstm, sru): a
module's state dict to its cell's parameters.

* mingru-pytorch: ``minGRU`` (``to_hidden_and_gate.weight``) → ``mingru-log``, ``minLSTM``
  (``to_hidden_and_f_i_gate.weight``) → ``minlstm-log``;
* xlstm: ``sLSTMLayer`` (``slstm_cell._recurrent_kernel_``, ``slstm_cell._bias_``,
  ``fgate/igate/zgate/ogate.weight``) or a bare ``sLSTMCell`` (``_recurrent_kernel_``,
  ``_bias_``) → ``slstm``;
* sru: ``SRUCell`` (``weight``, ``weight_c``, ``bias``, ``scale_x``; ``weight_proj``) →
  ``sru``.

Each ``params_from_<package>(arrays, prefix="")`` returns a
:class:`~gateflow.models.formats._linear_record.LinearModule`; ``scan_<package>(arrays)``
reads every such module of a flat state dict (see :mod:`._linear` for all packages at once).
"""

from __future__ import annotations

import numpy as np

from gateflow._errors import GateflowError
from gateflow.cells._linear import LINEAR_CELLS
from gateflow.models._checks import clip
from gateflow.models.formats._linear_record import (
    Arrays,
    LinearModule,
    _block_diagonal,
    _order,
    _prefixes,
    _Reader,
    _record,
)

__all__ = ["params_from_mingru_pytorch", "params_from_sru", "params_from_xlstm",
           "scan_mingru_pytorch", "scan_sru", "scan_xlstm"]


# -- mingru-pytorch: minGRU, minLSTM -------------------------------------------------------

_MINGRU_STEP = ("{kind} read as its sequential step (seq_len 1: h = {step}, h̃ = g(W_h x) with "
                "g(a) = a + 1/2 for a ≥ 0, σ(a) for a < 0); its parallel mode computes the "
                "same recurrence in log space, from h_0 > 0")


def params_from_mingru_pytorch(arrays: Arrays, prefix: str = "") -> LinearModule:
    """mingru-pytorch's ``minGRU`` (``to_hidden_and_gate``: rows h̃ then z) or ``minLSTM``
    (``to_hidden_and_f_i_gate``: rows h̃, f, i), both ``Linear(bias=False)``, as the
    log-space cells ``mingru-log``/``minlstm-log`` (the package's step applies g to h̃)."""
    gru = _Reader(arrays, prefix, "mingru-pytorch", "minGRU")
    lstm = _Reader(arrays, prefix, "mingru-pytorch", "minLSTM")
    if gru.has("to_hidden_and_gate.weight") and lstm.has("to_hidden_and_f_i_gate.weight"):
        raise gru.fail("to_hidden_and_f_i_gate.weight",
                       "sits next to to_hidden_and_gate.weight: one module is minGRU or "
                       "minLSTM, not both")
    is_lstm = lstm.has("to_hidden_and_f_i_gate.weight")
    r = lstm if is_lstm else gru
    name, k = ("to_hidden_and_f_i_gate", 3) if is_lstm else ("to_hidden_and_gate", 2)
    w = r.get(f"{name}.weight", (None, None))
    if w.shape[0] % k or w.shape[0] == 0:
        raise r.fail(f"{name}.weight", f"has {w.shape[0]} rows, not {k} equal blocks "
                     f"({'h̃, f, i' if is_lstm else 'h̃, z'})")
    m, d = w.shape[0] // k, w.shape[1]
    bias = (r.get(f"{name}.bias", (k * m,)) if r.has(f"{name}.bias") else np.zeros(k * m))
    if r.has("to_out.weight"):
        r.get("to_out.weight", (d, m))
    rows = [w[j * m:(j + 1) * m].copy() for j in range(k)]
    b = [bias[j * m:(j + 1) * m].copy() for j in range(k)]
    if is_lstm:  # hidden, f_gate, i_gate = (...).chunk(3, dim=-1)
        params = {"W_f": rows[1], "b_f": b[1], "W_i": rows[2], "b_i": b[2],
                  "W_h": rows[0], "b_h": b[0]}
        step = "f′ ⊙ h_{t−1} + i′ ⊙ h̃, f′ = f/(f + i), i′ = i/(f + i)"
    else:  # hidden, gate = (...).chunk(2, dim=-1)
        params = {"W_z": rows[1], "b_z": b[1], "W_h": rows[0], "b_h": b[0]}
        step = "lerp(h_{t−1}, h̃, z)"
    kind = "minLSTM" if is_lstm else "minGRU"
    assumed = [_MINGRU_STEP.format(kind=kind, step=step)]
    if not r.has(f"{name}.bias"):
        assumed.append(f"no {name}.bias (mingru-pytorch's Linear(bias=False)): the biases "
                       "are 0")
    if is_lstm:
        assumed.append("minLSTM's parallel mode started from prev_hidden begins from "
                       "g(prev_hidden) (log_h_0 = log_g(prev_hidden)), unlike its sequential "
                       "step, which this reading follows")
    return _record(r, "mingru-pytorch", kind, "minlstm-log" if is_lstm else "mingru-log",
                   params, assumed, f"the module's input (d = {d}); to_out, the output "
                   "projection, is not part of the recurrence", n=m, d=d)


def _find_mingru(arrays: Arrays) -> list[str]:
    prefixes = _prefixes(arrays, "to_hidden_and_gate.weight")
    prefixes += [p for p in _prefixes(arrays, "to_hidden_and_f_i_gate.weight")
                 if p not in prefixes]
    return _order(arrays, prefixes)


def scan_mingru_pytorch(arrays: Arrays) -> list[LinearModule]:
    """Every minGRU/minLSTM module of a state dict (minLM: one per layer)."""
    return [params_from_mingru_pytorch(arrays, p) for p in _find_mingru(arrays)]


# -- xlstm: sLSTM ---------------------------------------------------------------------------

_GATES = "ifzo"  # xlstm's gate order in the recurrent kernel, the bias and the cell's input


def _slstm_core(r: _Reader, cell: str) -> tuple[dict[str, np.ndarray], int, str]:
    """R_g (block-diagonal, per head) and b_g from an sLSTMCell's ``_recurrent_kernel_`` and
    ``_bias_``, in the vanilla backend's layout (NH, 4·DH, DH) or the CUDA backend's
    (NH, DH, 4·DH); the layout follows from the kernel's shape."""
    R = r.get(f"{cell}_recurrent_kernel_", (None, None, None))
    NH = R.shape[0]
    if R.shape[1] == 4 * R.shape[2]:
        DH, backend = R.shape[2], "vanilla"
        per_gate = R.reshape(NH, 4, DH, DH)  # [h, g, o, e]
    elif R.shape[2] == 4 * R.shape[1]:
        DH, backend = R.shape[1], "CUDA"
        per_gate = R.reshape(NH, DH, 4, DH).transpose(0, 2, 3, 1)  # [h, e, g, o] -> [h, g, o, e]
    else:
        raise r.fail(f"{cell}_recurrent_kernel_", f"has shape {R.shape}; (heads, 4·DH, DH) "
                     "(vanilla backend) or (heads, DH, 4·DH) (CUDA backend) expected")
    H = NH * DH
    bias = r.get(f"{cell}_bias_", (4 * H,))
    if backend == "vanilla":  # [g, h, o]
        b = bias.reshape(4, H)
    else:  # [h, g, o]
        b = bias.reshape(NH, 4, DH).transpose(1, 0, 2).reshape(4, H)
    out = {}
    for g, k in enumerate(_GATES):
        out[f"R_{k}"] = _block_diagonal(per_gate[:, g], transpose=False)  # [o, e] per head
        out[f"b_{k}"] = b[g].copy()
    return out, H, f"{backend} backend's layout, {NH} heads of {DH}"


_SLSTM_FUNCTION = ("function 'slstm' (sigmoid forget gate, xlstm's default; the state dict "
                   "does not record it, and function 'lstm' weighs the same)")
_SLSTM_START = ("xlstm's first step from n_0 = 0 sets m_1 = ĩ_1; gateflow's stabiliser is "
                "max(log f_1 + m_0, ĩ_1) from the given m_0 (the two agree from n_0 > 0)")


def params_from_xlstm(arrays: Arrays, prefix: str = "") -> LinearModule:
    """xlstm's ``sLSTMLayer`` (``slstm_cell.`` with ``fgate``/``igate``/``zgate``/``ogate``,
    prefix ``blocks.<l>.xlstm.`` in an ``xLSTMBlockStack``) or a bare ``sLSTMCell``, as the
    ``slstm`` cell (R per head: zeros off its diagonal blocks).

    A layer's cell reads x = [SiLU(conv1d(u)); u] (only u without a conv): the i and f gates
    from the conv's output through ``fgate`` and ``igate`` (block-diagonal per head; the
    layer feeds ``fgate``'s output to the *input* gate and ``igate``'s to the forget gate),
    z and o from u. A bare cell's x is its 4·H gate pre-activations [ĩ; f̃; z̃; õ]."""
    r = _Reader(arrays, prefix, "xlstm", "sLSTMLayer")
    if not r.has("slstm_cell._recurrent_kernel_"):
        r = _Reader(arrays, prefix, "xlstm", "sLSTMCell")
        p, H, layout = _slstm_core(r, "")
        eye = np.eye(4 * H)
        for g, k in enumerate(_GATES):
            p[f"W_{k}"] = eye[g * H:(g + 1) * H].copy()
        return _record(r, "xlstm", "sLSTMCell", "slstm", _slstm_order(p),
                       [f"R and the bias in xlstm's {layout}", _SLSTM_FUNCTION, _SLSTM_START],
                       f"the cell's 4·H = {4 * H} gate pre-activations [ĩ; f̃; z̃; õ] "
                       "(gate-major, as sLSTMCell takes them)", n=H, d=4 * H)
    p, H, layout = _slstm_core(r, "slstm_cell.")
    W: dict[str, np.ndarray] = {}
    E: int | None = None
    for gate in "fizo":
        w = r.get(f"{gate}gate.weight", (None, None, None))  # (heads, out/head, in/head)
        if w.shape[0] * w.shape[1] != H or (E is not None and w.shape[0] * w.shape[2] != E):
            raise r.fail(f"{gate}gate.weight", f"has shape {w.shape}; heads × out × in with "
                         f"heads·out = {H}" + ("" if E is None else f", heads·in = {E}"))
        E = w.shape[0] * w.shape[2]
        W[gate] = _block_diagonal(w, transpose=False)  # y[h·o + j] = Σ_e w[h, j, e] x[h·i + e]
        if r.has(f"{gate}gate.bias"):
            W[gate + "_bias"] = r.get(f"{gate}gate.bias", (H,))
    assert E is not None
    conv = r.has("conv1d.conv.weight")
    if conv:
        r.get("conv1d.conv.weight", (E, 1, None))
    if r.has("group_norm.weight"):
        r.get("group_norm.weight", (H,))
    # sLSTMLayer.forward: i, f, z, o = fgate(x_conv), igate(x_conv), zgate(x), ogate(x)
    source = {"i": "f", "f": "i", "z": "z", "o": "o"}
    for k in _GATES:
        w = W[source[k]]
        zero = np.zeros_like(w)
        if conv:
            w = np.concatenate([w, zero] if k in "if" else [zero, w], axis=1)
        p[f"W_{k}"] = w
        if source[k] + "_bias" in W:
            p[f"b_{k}"] = p[f"b_{k}"] + W[source[k] + "_bias"]
    assumed = [
        "xlstm's sLSTMLayer feeds fgate's output to the input gate and igate's to the forget "
        "gate (i, f, z, o = fgate(x_conv), igate(x_conv), zgate(x), ogate(x)): read as the "
        "code computes",
        f"R and the bias in xlstm's {layout}", _SLSTM_FUNCTION, _SLSTM_START,
        "group_norm acts on the layer's output, after the recurrence",
    ]
    x = (f"[SiLU(conv1d(u)); u] (d = 2·{E} = {2 * E}): the i and f gates read the causal "
         "conv's SiLU output, z and o the layer's input u; the conv is not part of the "
         "recurrence") if conv else f"the layer's input u (d = {E}; no conv)"
    return _record(r, "xlstm", "sLSTMLayer", "slstm", _slstm_order(p), assumed, x, n=H,
                   d=2 * E if conv else E)


def _slstm_order(p: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: p[k] for k in LINEAR_CELLS["slstm"].params}


def _find_xlstm(arrays: Arrays) -> list[str]:
    layers = [p for p in _prefixes(arrays, "slstm_cell._recurrent_kernel_")
              if p + "fgate.weight" in arrays]
    inside = {p + "slstm_cell." for p in layers}
    cells = [p for p in _prefixes(arrays, "_recurrent_kernel_")
             if p not in inside and p + "_bias_" in arrays]
    return _order(arrays, layers + cells)


def scan_xlstm(arrays: Arrays) -> list[LinearModule]:
    """Every sLSTM layer of a state dict (``xLSTMBlockStack``: one per sLSTM block), and
    every bare sLSTMCell that is not part of one."""
    return [params_from_xlstm(arrays, p) for p in _find_xlstm(arrays)]


# -- sru ------------------------------------------------------------------------------------


def params_from_sru(arrays: Arrays, prefix: str = "", *, bidirectional: bool = False,
                    direction: str = "forward", has_skip_term: bool | None = None
                    ) -> LinearModule:
    """sru's ``SRUCell`` (prefix ``rnn_lst.<l>.`` in an ``SRU``), as the ``sru`` cell: the
    k = 3 or 4 matrices of ``weight`` (input × output·k, column j·k + m for unit j, matrix
    m: W, W_f, W_r, and the highway's E when k = 4), ``weight_proj @ weight`` with
    ``n_proj``; ``weight_c`` = [v_f; v_r], ``bias`` = [b_f; b_r]; E = ``scale_x``·I when
    k = 3. The state dict does not say ``bidirectional`` (its arrays are those of a
    unidirectional cell of twice the hidden size) nor, when input and output sizes agree,
    ``has_skip_term``: both are arguments."""
    r = _Reader(arrays, prefix, "sru", "SRUCell")
    if direction not in ("forward", "reverse") or (direction == "reverse" and not bidirectional):
        raise GateflowError(f"direction must be 'forward' or, for a bidirectional SRUCell, "
                            f"'reverse'; got {direction!r}")
    r.absent("layer_norm.weight", "is an SRUCell layer norm: not read (a pre-norm feeds W the "
             "normalised input and the highway the raw one; the state dict does not say pre "
             "or post)")
    if not r.has("weight"):
        raise GateflowError(f"{r.what}: no array {clip(repr(r.prefix + 'weight'), 80)} (an "
                            "SRUCell with custom_m is not read)")
    wc = r.get("weight_c", (None,))
    if wc.shape[0] % 2 or wc.shape[0] == 0:
        raise r.fail("weight_c", f"has {wc.shape[0]} entries; 2 × output size expected")
    O = wc.shape[0] // 2
    bias = r.get("bias", (2 * O,))
    bidir = 2 if bidirectional else 1
    if O % bidir:
        raise r.fail("weight_c", f"has {2 * O} entries: not 2 × 2 × hidden for a "
                     "bidirectional cell")
    n = O // bidir
    if r.has("weight_proj"):
        proj = r.get("weight_proj", (None, None))
        w = r.get("weight", (proj.shape[1], None))
        full = proj @ w
        kind = f"SRUCell (n_proj = {proj.shape[1]})"
    else:
        full = r.get("weight", (None, None))
        kind = "SRUCell"
    d = full.shape[0]
    k, rest = divmod(full.shape[1], O)
    if rest or k not in (3, 4):
        raise r.fail("weight", f"has {full.shape[1]} columns; 3 or 4 matrices of the output "
                     f"size {O} expected")
    if k == 4 and d == O:
        raise r.fail("weight", "holds 4 matrices although input and output sizes agree (sru "
                     "adds the highway's matrix only when they differ)")
    if k == 3 and d != O and has_skip_term:
        raise r.fail("weight", f"holds 3 matrices with input size {d} ≠ output size {O}: an "
                     "SRUCell without has_skip_term")
    di = 1 if direction == "reverse" else 0
    U = full.reshape(d, bidir, n, k)[:, di]  # (d, n, k): U[..., m] = x @ U[:, :, m]
    v = wc.reshape(2, bidir, n)[:, di]
    b = bias.reshape(2, bidir, n)[:, di]
    assumed = ["use_tanh=False (sru's default; the deprecated use_tanh=True applies tanh to "
               "c in h, and the state dict does not say)"]
    if k == 4:
        E = U[:, :, 3].T.copy()
        highway = "E is weight's fourth matrix (input size ≠ output size)"
    elif d != O:
        E = np.zeros((n, d))
        highway = "no highway (3 matrices with input size ≠ output size: has_skip_term=False)"
    elif has_skip_term is False:
        E = np.zeros((n, d))
        highway = "no highway (has_skip_term=False, as given)"
    else:
        if not r.has("scale_x"):
            raise GateflowError(f"{r.what}: no array {clip(repr(r.prefix + 'scale_x'), 80)} "
                                "(the highway's scale, 3 matrices)")
        scale = float(r.get("scale_x", (1,))[0])
        E = np.zeros((n, d))
        E[np.arange(n), di * n + np.arange(n)] = scale
        highway = f"E = scale_x·I = {scale:.17g}·I (the rescale buffer; 1 when rescale=False)"
        if has_skip_term is None:
            assumed.append("has_skip_term=True (sru's default; with input size = output size "
                           "the state dict does not say: give has_skip_term=False if not)")
    assumed.append(highway)
    if bidirectional:
        assumed.append(f"bidirectional (as given): direction {direction!r}"
                       + (", over the time-reversed sequence" if di else ""))
    else:
        assumed.append("unidirectional (bidirectional=False, sru's default; a bidirectional "
                       "SRUCell's arrays are those of one of twice the hidden size)")
    params = {"W": U[:, :, 0].T.copy(), "W_f": U[:, :, 1].T.copy(), "W_r": U[:, :, 2].T.copy(),
              "v_f": v[0].copy(), "v_r": v[1].copy(), "b_f": b[0].copy(), "b_r": b[1].copy(),
              "E": E}
    return _record(r, "sru", kind, "sru", params, assumed,
                   f"the cell's input u (d = {d}; eval mode: no dropout)", n=n, d=d,
                   direction=direction, layout="time-major")


def _find_sru(arrays: Arrays) -> list[str]:
    return _order(arrays, [p for p in _prefixes(arrays, "weight_c") if p + "bias" in arrays])


def scan_sru(arrays: Arrays) -> list[LinearModule]:
    """Every SRUCell of a state dict (an ``SRU``: one per layer), read as unidirectional."""
    return [params_from_sru(arrays, p) for p in _find_sru(arrays)]

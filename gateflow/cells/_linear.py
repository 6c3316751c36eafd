"""The gated linear recurrences (2018–2024), declared as equations like every other cell.

minGRU and minLSTM (Feng et al. 2024), RG-LRU (De et al. 2024), LRU (Orvieto et al. 2023),
Mamba's selective scan S6 (Gu & Dao 2023), sLSTM (Beck et al. 2024) and SRU (Lei et al.
2018). Nothing here is differentiated by hand: :func:`gateflow.derive` and
:func:`gateflow.derive_input` derive them like the LSTM, and ``tests/test_linear_cells.py``
proves every state and input block against SymPy's Jacobian of the expanded step.

Their recurrence is *diagonal*: ∂s_t/∂s_{t−1} is made of diag(coef) blocks with no weight
matrix (the derivation says so, see :attr:`Structure.edges`), except the sLSTM's, whose
per-head R is a dense recurrent matrix. For example ∂h_t/∂h_{t−1} = diag(a_t) for RG-LRU,
diag(exp(A ⊙ Δ_t)) for the selective scan, diag(1 − z_t) for minGRU.

How each paper's cell is written in gateflow's equation language (elementwise ``+ - * /
**``, the activations of :mod:`gateflow.cells._activations`, ``W @ v`` for a matrix),
where the language is narrower than the paper:

* **x used elementwise.** x_t has its own size d and enters only through ``W @ x`` (the
  language unifies sizes, and d is never n). Where a paper multiplies x_t elementwise
  (RG-LRU's i_t ⊙ x_t, SRU's highway (1 − r_t) ⊙ x_t, the selective scan's Δ_t B_t x_t),
  the cell writes ``E @ x`` with a matrix parameter E: the identity for RG-LRU, SRU's
  scale·I when d = n (the ``sru`` package's ``scale_x``) or its fourth weight matrix when
  d ≠ n, and the copy matrix that sends channel d to its N state units for the selective
  scan. The Jacobians are exact for any E; E = I gives the paper's.
* **complex numbers.** The LRU's diagonal λ is complex; the cell is *realified*: two state
  blocks h_re, h_im of n units each, λ given by its real and imaginary parts (vector
  parameters ``lam_re``, ``lam_im``; the language has no cos or sin to write them from ν, θ).
* **a matrix-valued state.** The selective scan's state is D channels × N states; the cell
  flattens it to one block of n = D·N units (unit d·N + j, row-major, as
  ``h.flatten(-2)``), with its per-channel and per-state parameters repeated to n rows.
* **max.** The sLSTM's stabiliser m_t = max(a, b) is written b + relu(a − b): its
  derivative is 1[a > b] for a and 1[a ≤ b] for b (at a tie, relu′(0) = 0 sends it to b).
* **sqrt.** ``(1 - a**2)**(1/2)``; **exp**: the ``exp`` function (SymPy's own).

These cells are not in :data:`gateflow.cells.CELLS` yet (:data:`LINEAR_CELLS` holds them);
readers of the packages that implement them come separately.
"""

from __future__ import annotations

from gateflow.cells._record import Cell

# -- minGRU, minLSTM ------------------------------------------------------------------------

_FENG = ("Feng, Tung, Ahmed, Bengio & Hajimirsadeghi (2024), Were RNNs all we needed? "
         "arXiv:2410.01201")

#: The log-space version's g (Feng et al., Appendix B.3): g(a) = a + 1/2 for a ≥ 0 and σ(a)
#: for a < 0, keeps h̃ positive. Written g(a) = relu(a) + σ(−relu(−a)): the same function
#: everywhere; its derivative is 1 for a > 0 and σ(a)(1 − σ(a)) for a < 0, and 0 at a = 0
#: (relu′(0) = 0; mingru-pytorch's torch.where takes the a ≥ 0 branch there: 1).
_G = ("p = relu(a)", "q = relu(-a)", "s = sigmoid(-q)", "g = p + s")

MINGRU = Cell(
    name="mingru",
    summary="minGRU, sequential mode: z = σ(W_z x + b_z) from x only, h̃ = W_h x + b_h, "
            "h = (1 − z) ⊙ h_{t−1} + z ⊙ h̃ (diagonal recurrence)",
    reference=_FENG + ", Section 3.1 (minGRU, sequential mode)",
    state=("h",), params=("W_z", "b_z", "W_h", "b_h"),
    equations=(
        "z = sigmoid(W_z @ x + b_z)",
        "g = W_h @ x + b_h",
        "h = (1 - z)*h_prev + z*g",
    ),
    memory_bias=("b_z", -1),
)
MINGRU_LOG = Cell(
    name="mingru-log",
    summary="minGRU of the log-space version, sequential mode: h̃ = g(W_h x + b_h) with "
            "g(a) = a + 1/2 (a ≥ 0), σ(a) (a < 0), as mingru-pytorch computes it",
    reference=_FENG + ", Appendix B.3 (minGRU in log-space, sequential mode); "
              "PyPI mingru-pytorch (no biases: b_z = b_h = 0)",
    state=("h",), params=("W_z", "b_z", "W_h", "b_h"),
    equations=(
        "z = sigmoid(W_z @ x + b_z)",
        "a = W_h @ x + b_h",
        *_G,
        "h = (1 - z)*h_prev + z*g",
    ),
    memory_bias=("b_z", -1),
    notes="g(a) = relu(a) + σ(−relu(−a)) is the paper's g; at a = 0 its derivative is taken "
          "as 0 (mingru-pytorch's autograd gives 1 there).",
)

_MINLSTM_GATES = ("f = sigmoid(W_f @ x + b_f)", "i = sigmoid(W_i @ x + b_i)")
_MINLSTM_NOTE = ("The sequential mode's f/(f + i), as the paper writes it; the parallel "
                 "(log-space) mode computes the same f′ = σ(softplus(−ĩ) − softplus(−f̃)). "
                 "No single bias sets f′, so the cell declares no memory bias.")
MINLSTM = Cell(
    name="minlstm",
    summary="minLSTM, sequential mode: f, i = σ(W x + b) from x only, normalised "
            "f′ = f/(f + i), i′ = i/(f + i), h = f′ ⊙ h_{t−1} + i′ ⊙ h̃, h̃ = W_h x + b_h",
    reference=_FENG + ", Section 3.2 (minLSTM, sequential mode)",
    state=("h",), params=("W_f", "b_f", "W_i", "b_i", "W_h", "b_h"),
    equations=(
        *_MINLSTM_GATES,
        "g = W_h @ x + b_h",
        "h = f/(f + i)*h_prev + i/(f + i)*g",
    ),
    notes=_MINLSTM_NOTE,
)
MINLSTM_LOG = Cell(
    name="minlstm-log",
    summary="minLSTM of the log-space version, sequential mode: h̃ = g(W_h x + b_h) with "
            "g(a) = a + 1/2 (a ≥ 0), σ(a) (a < 0), as mingru-pytorch computes it",
    reference=_FENG + ", Appendix B.3 (minLSTM in log-space, sequential mode); "
              "PyPI mingru-pytorch (no biases)",
    state=("h",), params=("W_f", "b_f", "W_i", "b_i", "W_h", "b_h"),
    equations=(
        *_MINLSTM_GATES,
        "a = W_h @ x + b_h",
        *_G,
        "h = f/(f + i)*h_prev + i/(f + i)*g",
    ),
    notes=_MINLSTM_NOTE + " g(a) = relu(a) + σ(−relu(−a)); its derivative at a = 0 is "
          "taken as 0 (mingru-pytorch's autograd gives 1).",
)

# -- RG-LRU ---------------------------------------------------------------------------------

RGLRU = Cell(
    name="rglru",
    summary="RG-LRU (Griffin, RecurrentGemma): a = σ(Λ)^(8 r) = exp(−8 r softplus(−Λ)), "
            "h = a ⊙ h_{t−1} + √(1 − a²) ⊙ (i ⊙ E x); r, i = σ(W x + b) from x only",
    reference="De et al. (2024), Griffin: mixing gated linear recurrences with local attention "
              "for efficient language models, arXiv:2402.19427; RecurrentGemma's RGLRU",
    state=("h",), params=("W_a", "b_a", "W_x", "b_x", "Lambda", "E"),
    equations=(
        "r = sigmoid(W_a @ x + b_a)",
        "i = sigmoid(W_x @ x + b_x)",
        "a = exp(-8*r*softplus(-Lambda))",
        "h = a*h_prev + (1 - a**2)**(1/2)*(i*(E @ x))",
    ),
    notes="x is the RG-LRU's input (the temporal conv's output); E = I (the language has no "
          "elementwise x). RecurrentGemma's a_param is −Λ; its gate matrices are "
          "block-diagonal per head (zeros off the blocks here). It skips √(1 − a²) at a "
          "segment's first token and clips that square root's gradient at 1000.",
)

# -- LRU ------------------------------------------------------------------------------------

LRU = Cell(
    name="lru",
    summary="LRU, realified: h = λ ⊙ h_{t−1} + γ ⊙ (B x) with complex diagonal λ as two "
            "real blocks, [h_re; h_im] ← [[Re λ, −Im λ], [Im λ, Re λ]] [h_re; h_im] + γ B x",
    reference="Orvieto et al. (2023), Resurrecting recurrent neural networks for long "
              "sequences, arXiv:2303.06349; PyPI lru-pytorch",
    state=("h_re", "h_im"), params=("lam_re", "lam_im", "gamma", "B_re", "B_im"),
    equations=(
        "h_re = lam_re*h_re_prev - lam_im*h_im_prev + gamma*(B_re @ x)",
        "h_im = lam_im*h_re_prev + lam_re*h_im_prev + gamma*(B_im @ x)",
    ),
    notes="λ = exp(−exp(ν) + i exp(θ)) = r e^{iφ}: lam_re = r cos φ, lam_im = r sin φ with "
          "r = exp(−exp(ν)), φ = exp(θ) (lru-pytorch's nu_log, theta_log); gamma = "
          "exp(gamma_log), learned (initialised to √(1 − |λ|²)). The output y = Re(C h) + D x "
          "is read from the state, not part of it.",
)

# -- Mamba's selective scan (S6) ------------------------------------------------------------

MAMBA = Cell(
    name="mamba",
    summary="Mamba's selective scan S6, one unit per (channel, state): "
            "h = exp(Δ ⊙ A) ⊙ h_{t−1} + Δ ⊙ (W_B x) ⊙ (E x), Δ = softplus(W_Δ x + b_Δ)",
    reference="Gu & Dao (2023), Mamba: linear-time sequence modeling with selective state "
              "spaces, arXiv:2312.00752; PyPI mambapy (selective_scan_seq, ssm_step)",
    state=("h",), params=("W_dt", "b_dt", "A", "W_B", "E"),
    equations=(
        "delta = softplus(W_dt @ x + b_dt)",
        "h = exp(delta*A)*h_prev + delta*(W_B @ x)*(E @ x)",
    ),
    notes="x is the block's SSM input, SiLU of the causal depthwise conv of the input "
          "projection (D channels). The state h[d, j] (D × N) is one block of n = D·N units "
          "d·N + j: row d·N + j of W_dt is row d of dt_proj.weight @ x_proj's Δ rows (so "
          "W_dt has rank dt_rank), b_dt[d·N + j] = dt_proj.bias[d], A[d·N + j] = "
          "−exp(A_log[d, j]), row d·N + j of W_B is x_proj's B row j, E copies x[d] to the "
          "N units of channel d. The output y = C h + D ⊙ x is read from the state.",
)

# -- sLSTM ----------------------------------------------------------------------------------

_XLSTM = ("Beck et al. (2024), xLSTM: extended long short-term memory, arXiv:2405.04517; "
          "PyPI xlstm (sLSTM, vanilla PyTorch backend)")
_SLSTM_PARAMS = tuple(f"{m}_{k}" for m in "WRb" for k in "ifzo")


def _slstm(name: str, forget: str, summary: str, memory_bias, note: str) -> Cell:
    """The sLSTM with stabiliser m (Beck et al., eqs. 8–17): ``forget`` is −log f_t."""
    return Cell(
        name=name, summary=summary, reference=_XLSTM,
        state=("h", "c", "n", "m"), params=_SLSTM_PARAMS,
        equations=(
            "li = W_i @ x + R_i @ h_prev + b_i",  # log i_t = ĩ_t (exponential input gate)
            f"u = {forget}",  # −log f_t
            "z = tanh(W_z @ x + R_z @ h_prev + b_z)",
            "o = sigmoid(W_o @ x + R_o @ h_prev + b_o)",
            "q = relu(m_prev - u - li)",  # m_t − log i_t
            "m = li + q",  # max(log f_t + m_{t−1}, log i_t)
            "i = exp(-q)",  # exp(log i_t − m_t)
            "f = exp(m_prev - u - m)",  # exp(log f_t + m_{t−1} − m_t)
            "c = f*c_prev + i*z",
            "n = f*n_prev + i",
            "h = o*c/n",
        ),
        memory_bias=memory_bias,
        notes=("m_t = max(log f_t + m_{t−1}, log i_t) is written log i_t + relu(log f_t + "
               "m_{t−1} − log i_t): at a tie its derivative follows log i_t (PyTorch's max "
               "splits it in halves). R is dense: per-head R is R with zeros off its "
               "diagonal blocks. " + note),
    )


SLSTM = _slstm(
    "slstm", "softplus(-(W_f @ x + R_f @ h_prev + b_f))",
    "sLSTM, sigmoid forget gate: exponential input gate i = exp(ĩ − m), f = σ(f̃) "
    "stabilised, m = max(log f + m_{t−1}, ĩ), normaliser n, h = o ⊙ c/n",
    ("b_f", 1),
    "The forget gate is σ(f̃), log f = −softplus(−f̃) (xlstm's pointwise 'slstm'); xlstm "
    "starts from m_1 = ĩ_1 when n_0 = 0 (this cell's max with m_0 = −∞).")
SLSTM_EXP = _slstm(
    "slstm-exp", "-(W_f @ x + R_f @ h_prev + b_f)",
    "sLSTM, exponential forget gate: f = exp(f̃), i = exp(ĩ), stabilised by "
    "m = max(f̃ + m_{t−1}, ĩ), normaliser n, h = o ⊙ c/n",
    None,
    "The forget gate is exp(f̃), log f = f̃ (the paper's alternative to σ).")

# -- SRU ------------------------------------------------------------------------------------

SRU = Cell(
    name="sru",
    summary="SRU (2018): f, r = σ(W x + v ⊙ c_{t−1} + b), c = f ⊙ c_{t−1} + (1 − f) ⊙ (W x), "
            "highway h = r ⊙ c + (1 − r) ⊙ (E x); h is not fed back",
    reference="Lei, Zhang, Wang, Dai & Artzi (2018), Simple recurrent units for highly "
              "parallelizable recurrence, EMNLP; PyPI sru 2.x (SRUCell, use_tanh=False)",
    state=("h", "c"), params=("W", "W_f", "W_r", "v_f", "v_r", "b_f", "b_r", "E"),
    equations=(
        "f = sigmoid(W_f @ x + v_f*c_prev + b_f)",
        "r = sigmoid(W_r @ x + v_r*c_prev + b_r)",
        "c = f*c_prev + (1 - f)*(W @ x)",
        "h = r*c + (1 - r)*(E @ x)",
    ),
    memory_bias=("b_f", 1),
    notes="The EMNLP 2018 SRU (not SRU++), as the sru package computes it with "
          "use_tanh=False: E = scale_x·I when d = n (1 without rescale), its fourth weight "
          "matrix when d ≠ n, 0 without the skip term; a low-rank W (n_proj) is its product. "
          "h_{t−1} is not an input of the step.",
)

#: The gated linear recurrences by name (registered in ``CELLS`` separately).
LINEAR_CELLS: dict[str, Cell] = {c.name: c for c in (
    MINGRU, MINGRU_LOG, MINLSTM, MINLSTM_LOG, RGLRU, LRU, MAMBA, SLSTM, SLSTM_EXP, SRU)}

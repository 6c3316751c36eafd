"""Numbers from a :class:`~gateflow.ChainResult`: batch statistics, decay fits, theory.

Everything here works on log10 norms, as :func:`~gateflow.all_lags` returns them, so
nothing underflows however fast a gradient vanishes. ``-inf`` marks an exactly zero Jacobian.

Measured:

* :func:`summarize` — per lag, the median and interquartile range over the batch.
* :func:`fit_decay` — a least-squares line through log10 ‖∂s_T/∂s_{T−k}‖ against k: the
  per-step factor 10^slope, the e-folding lag −1/(slope · ln 10) (steps for a factor e),
  and the memory horizon (first lag whose median falls below a threshold, 1e−6 by default).
* :func:`fit_batch` — THE fit every job uses: :func:`fit_decay` of the batch median of a
  (T, B) array; :func:`fit_chain` applies it to the blocks and direct products of a
  :class:`~gateflow.ChainResult`.

Theory (each is a log10 norm per lag, for overlays and tests):

* :func:`gate_path` — the memory path with all weights zero: LSTM ∂c_T/∂c_{T−k} = σ(b_f)^k I,
  GRU ∂h_T/∂h_{T−k} = σ(b_z)^k I; exact when W = U = 0. Frobenius norm √n·σ(b)^k.
  :func:`chrono_timescale` gives the matching timescale 1/(1 − σ(b)) = 1 + e^b steps;
  :func:`gate_theory` the per-step factor σ(b) and e-folding lag −1/ln σ(b) of that path.
* :func:`mean_field_tanh` — mean-field theory of a random tanh RNN (Poole et al. 2016;
  Chen, Pennington & Schoenholz 2018): the fixed point q* of the pre-activation variance
  and χ₁ = σ_w² E[tanh'(√q* z)²], so that ‖∂h_T/∂h_{T−k}‖_F ≈ √n · χ₁^{k/2} for large n
  (per-step factor √χ₁, e-folding lag −2/ln χ₁: :attr:`MeanField.efold_lag`).
* :func:`pascanu_bound` — Pascanu, Mikolov & Bengio (2013): ‖∂h_T/∂h_{T−k}‖₂ ≤ (γ‖U‖₂)^k
  with γ = sup|φ'| (1 for tanh); the Frobenius version multiplies by √n.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from gateflow._errors import GateflowError
from gateflow._validate import choose, real, real_array, whole
from gateflow.cells._block import Block
from gateflow.cells._record import Cell
from gateflow.numeric._observers import NORMS as MEASURED
from gateflow.numeric._observers import OBSERVERS
from gateflow.numeric._result import ChainResult

_LN10 = math.log(10.0)
#: Below this log10 norm a value counts as "zero" and is left out of fits.
FLOOR = -300.0
#: Default threshold for the memory horizon.
HORIZON = 1e-6
#: The norms the theory curves know: the registry's first two, the Frobenius norm
#: (‖σ^k I_n‖ = √n σ^k) and the spectral norm (‖σ^k I_n‖ = σ^k). The first is the default
#: of every fit and figure (cheap, always measured unless the user asks otherwise).
NORMS = MEASURED[:2]
FROBENIUS = NORMS[0]
#: Most Gauss–Hermite points and fixed-point iterations :func:`mean_field_tanh` accepts.
MAX_DEGREE, MAX_ITER = 1000, 1_000_000

__all__ = [
    "EXPLODING",
    "GOOD_R2",
    "NEUTRAL",
    "NON_MONOTONE",
    "REGIMES",
    "VANISHING",
    "ZERO",
    "ChainFits",
    "DecayFit",
    "GateTheory",
    "MeanField",
    "Summary",
    "chrono_timescale",
    "classify",
    "fit_batch",
    "fit_chain",
    "fit_decay",
    "gate_theory",
    "gate_path",
    "mean_field_from_params",
    "mean_field_tanh",
    "measured_norm",
    "pascanu_bound",
    "summarize",
]


# -- checking arguments -------------------------------------------------------------------
def _lags(lags, what: str = "lags") -> np.ndarray:
    """Lags as a non-empty 1-D float array of finite numbers."""
    k = real_array(lags, what).astype(np.float64)
    if k.ndim != 1 or k.size == 0:
        raise GateflowError(f"{what} must be a non-empty 1-D array, got shape {k.shape}")
    if not np.all(np.isfinite(k)):
        raise GateflowError(f"{what} contain NaN or inf; pass finite lags such as 1..T")
    return k


def _series(lags, log10) -> tuple[np.ndarray, np.ndarray]:
    """Strictly increasing lags and their log10 norms (1-D, equal length, non-empty).

    ``-inf`` (an exactly zero norm) is a value; NaN and ``+inf`` are not: they mean a
    corrupt or overflowed measurement, so they are refused rather than skipped."""
    k = _lags(lags)
    y = real_array(log10, "log10 norms").astype(np.float64)
    if y.shape != k.shape:
        raise GateflowError(f"lags and log10 norms must be 1-D of equal length; "
                            f"got shapes {k.shape} and {y.shape}")
    if np.any(np.diff(k) <= 0):
        raise GateflowError("lags must be strictly increasing, e.g. 1, 2, ..., T")
    if np.any(np.isnan(y)) or np.any(y == np.inf):
        bad = "NaN" if np.any(np.isnan(y)) else "+inf"
        raise GateflowError(f"log10 norms contain {bad} (no finite data there); only finite "
                            "values and -inf (an exactly zero norm) can be fitted")
    return k, y


# -- batch statistics ---------------------------------------------------------------------
@dataclass(frozen=True)
class Summary:
    """log10 norms per lag over a batch: median and the quartiles (arrays of length T)."""

    lags: np.ndarray
    median: np.ndarray
    q25: np.ndarray
    q75: np.ndarray


def summarize(log10: np.ndarray, lags: np.ndarray | None = None) -> Summary:
    """Median and interquartile range over the batch of a (T, B) array of log10 norms.

    ``-inf`` (an exactly zero Jacobian) is kept: a quantile that falls on it is ``-inf``.
    """
    a = real_array(log10, "log10 norms").astype(np.float64)
    if a.ndim != 2 or a.size == 0:
        raise GateflowError(f"expected log10 norms of shape (T, B) with T, B >= 1, got shape "
                            f"{a.shape}")
    if np.any(np.isnan(a)):
        raise GateflowError("log10 norms contain NaN; the chain result is corrupt")
    if lags is not None and _lags(lags).shape != (a.shape[0],):
        raise GateflowError(f"lags must have one entry per row of the norms ({a.shape[0]}), "
                            f"got shape {np.shape(lags)}")
    # Quantiles interpolate; −inf next to a finite value would give NaN, so park −inf far
    # below anything finite and map it back afterwards.
    low = 2 * min(FLOOR, float(np.min(a[np.isfinite(a)], initial=0.0))) - 1
    b = np.where(np.isneginf(a), low, a)
    q25, med, q75 = np.quantile(b, [0.25, 0.5, 0.75], axis=1)
    back = [np.where(q <= low / 2, -np.inf, q) for q in (med, q25, q75)]
    lags = np.arange(1, a.shape[0] + 1) if lags is None else np.asarray(lags)
    return Summary(lags=lags, median=back[0], q25=back[1], q75=back[2])


# -- fits ---------------------------------------------------------------------------------
#: What a fitted curve does over the lags measured (:func:`classify`).
VANISHING, EXPLODING, NEUTRAL, NON_MONOTONE, ZERO = (
    "vanishing", "exploding", "neutral", "non-monotone", "zero")
REGIMES = (VANISHING, EXPLODING, NEUTRAL, NON_MONOTONE, ZERO)
#: A curve whose line stays within this many decades over the fitted window, and moves by
#: less than NEUTRAL_STEP decades per step, is neutral (a short window alone does not make a
#: fast decay neutral).
NEUTRAL_DECADES = 0.5
NEUTRAL_STEP = 0.005  # 10^0.005: 1.2% per step
#: A curve that falls and then rises (or rises and falls) by at least this many decades on
#: both sides of its turning point is non-monotone: no single exponential describes it.
TURN_DECADES = 0.3
#: Fits are compared with theory only from this R² on.
GOOD_R2 = 0.99


@dataclass(frozen=True)
class DecayFit:
    """A straight line through log10 norm against lag, and what the curve does.

    slope: decades per step; factor: per-step factor 10^slope; regime: ``"vanishing"``,
    ``"exploding"``, ``"neutral"``, ``"non-monotone"`` or ``"zero"`` (``classify``);
    efold: steps for the norm to fall by a factor e, **only** for a vanishing curve
    (``None`` otherwise: an exploding curve has no e-folding lag); horizon: first lag whose
    median is below ``threshold`` (``None`` if none within the lags measured); r2: the
    coefficient of determination of the line over the fitted lags (NaN with fewer than 3
    lags or a constant curve); window: the first and last lag fitted; used: how many lags
    entered the fit.
    """

    slope: float
    intercept: float
    factor: float
    efold: float | None
    horizon: int | None
    threshold: float
    used: int
    regime: str = VANISHING
    r2: float = float("nan")
    window: tuple[int, int] | None = None

    @property
    def is_memory(self) -> bool:
        """Only a vanishing curve has an e-folding lag to call memory; a curve that grows
        is never memory, however long its "horizon"."""
        return self.regime == VANISHING

    @property
    def good(self) -> bool:
        """R² ≥ ``GOOD_R2`` (0.99): the line describes the curve well enough to compare."""
        return bool(np.isfinite(self.r2) and self.r2 >= GOOD_R2)

    def describe(self) -> str:
        """One phrase for tables: ``"vanishing ×0.95/step"``, ``"exploding ×1.23/step"``."""
        if self.regime == ZERO:
            return "exactly zero"
        return f"{self.regime} ×{self.factor:.4g}/step"

    def as_dict(self) -> dict:
        return {"slope_log10_per_step": self.slope, "intercept_log10": self.intercept,
                "per_step_factor": self.factor, "efold_lag": self.efold,
                "memory_horizon": self.horizon, "threshold": self.threshold,
                "lags_fitted": self.used, "regime": self.regime,
                "r2": self.r2 if np.isfinite(self.r2) else None,
                "window": list(self.window) if self.window else None}


def classify(lags, log10, slope: float) -> str:
    """What a curve of log10 norms does over ``lags`` (finite values only):

    * ``"non-monotone"``: it turns — its moving average over a tenth of the lags falls by
      ≥ :data:`TURN_DECADES` to an interior minimum and rises again by as much (or the
      reverse), as a transient near s₀ does;
    * ``"neutral"``: the fitted line moves by less than :data:`NEUTRAL_DECADES` over the
      window and by less than :data:`NEUTRAL_STEP` decades per step (neither vanishing nor
      exploding within the lags measured: an e-folding lag would be an extrapolation);
    * else ``"vanishing"`` (slope < 0) or ``"exploding"`` (slope > 0).
    """
    k = np.asarray(lags, dtype=float)
    y = np.asarray(log10, dtype=float)
    if y.size >= 3:
        # Turns are read off a moving average over a tenth of the lags (at least 3), so that
        # the fluctuations of a chaotic or noisy curve are not taken for a turn.
        w = max(3, y.size // 10)
        if y.size > w:
            y = np.convolve(y, np.ones(w) / w, mode="valid")
        lo, hi = int(np.argmin(y)), int(np.argmax(y))
        valley = min(y[:lo + 1].max() - y[lo], y[lo:].max() - y[lo]) if 0 < lo < y.size - 1 \
            else 0.0
        peak = min(y[hi] - y[:hi + 1].min(), y[hi] - y[hi:].min()) if 0 < hi < y.size - 1 \
            else 0.0
        if max(valley, peak) >= TURN_DECADES:
            return NON_MONOTONE
    span = k[-1] - k[0] if k.size > 1 else 0.0
    if abs(slope) * span < NEUTRAL_DECADES and abs(slope) < NEUTRAL_STEP:
        return NEUTRAL
    return VANISHING if slope < 0 else EXPLODING


def fit_decay(lags, log10_median, *, threshold: float = HORIZON, floor: float = FLOOR,
              start: float = 1) -> DecayFit:
    """Fit log10 ‖∂s_T/∂s_{T−k}‖ = intercept + slope · k by least squares.

    Only lags ``>= start`` whose value is finite and above ``floor`` enter the fit. The
    e-folding lag is −1/(slope · ln 10); the memory horizon uses every lag, not only the
    fitted ones.

    Values may be ``-inf`` (an exactly zero norm): if every value from ``start`` on is
    ``-inf`` or below ``floor``, the gradient is (numerically) exactly zero and the fit says
    so: slope −inf, factor 0. Input with no finite data is refused with a
    :class:`GateflowError`: empty arrays, any NaN or ``+inf`` (a corrupt or overflowed
    measurement, never skipped silently), and a ``start`` beyond the last lag.
    """
    k, y = _series(lags, log10_median)
    threshold = real(threshold, "threshold", positive=True)
    floor = real(floor, "floor")
    start = real(start, "start")
    if not np.any(k >= start):
        raise GateflowError(f"start={start:g} is beyond the last lag ({k[-1]:g}); nothing to fit")
    ok = np.isfinite(y) & (y > floor) & (k >= start)
    used = int(np.count_nonzero(ok))
    r2 = float("nan")
    if used >= 2:
        slope, intercept = np.polyfit(k[ok], y[ok], 1)
        resid = y[ok] - (intercept + slope * k[ok])
        total = float(np.sum((y[ok] - y[ok].mean()) ** 2))
        if used >= 3 and total > 0:
            r2 = 1.0 - float(np.sum(resid ** 2)) / total
    elif used == 1:
        slope, intercept = 0.0, float(y[ok][0])
    else:
        slope, intercept = -np.inf, -np.inf
    slope, intercept = float(slope), float(intercept)
    factor = 10.0 ** slope if np.isfinite(slope) else 0.0
    regime = classify(k[ok], y[ok], slope) if used else ZERO
    efold = -1.0 / (slope * _LN10) if regime == VANISHING else None
    window = (int(k[ok][0]), int(k[ok][-1])) if used else None
    return DecayFit(slope=slope, intercept=intercept, factor=factor, efold=efold,
                    horizon=memory_horizon(k, y, threshold), threshold=float(threshold),
                    used=used, regime=regime, r2=r2, window=window)


def memory_horizon(lags, log10_median, threshold: float = HORIZON) -> int | None:
    """The first lag whose (median) norm is below ``threshold``; ``None`` if none is. An
    exactly zero norm (log10 = −inf) counts as below."""
    k, y = _series(lags, log10_median)
    threshold = real(threshold, "threshold", positive=True)
    below = np.nonzero(y < math.log10(threshold))[0]
    return int(k[below[0]]) if below.size else None


def fit_batch(log10, lags=None, *, threshold: float = HORIZON) -> DecayFit:
    """The fit every job reports: :func:`fit_decay` of the batch median (:func:`summarize`)
    of a (T, B) array of log10 norms, at lags 1..T unless ``lags`` is given."""
    s = summarize(log10, lags)
    return fit_decay(s.lags, s.median, threshold=threshold)


@dataclass(frozen=True)
class ChainFits:
    """:func:`fit_batch` of a ChainResult's blocks (``"X/Y"``) and direct products
    (state ``"s"``: ∏ diag(direct coefficient of ∂s_t/∂s_{t−1})), in one norm, and the
    cell they are of (for the labels of its direct products)."""

    norm: str
    blocks: dict[Block, DecayFit]
    direct: dict[str, DecayFit]
    cell: Cell


def measured_norm(norms) -> str:
    """The norm fits and figures use: the first registered norm when it was measured,
    else the first one measured."""
    norms = tuple(norms)
    return NORMS[0] if NORMS[0] in norms or not norms else norms[0]


def fit_chain(result: ChainResult, norm: str | None = None, *, blocks=None, direct=None,
              threshold: float = HORIZON) -> ChainFits:
    """Fit the batch median of ``blocks`` (default: every block measured) and of the direct
    products of the states ``direct`` (default: all) of a ChainResult in ``norm``
    (default: :func:`measured_norm`); names not measured are left out. The fits are keyed
    by the result's own :class:`.Block` s."""
    norm = choose(norm, tuple(OBSERVERS), "norm") if norm is not None else measured_norm(
        nm for nm in OBSERVERS if any(OBSERVERS[nm].key in d for d in result.blocks.values()))
    key = OBSERVERS[norm].key
    measured: dict[str, Block] = {b: b for b in result.blocks}
    want_b = result.blocks if blocks is None else [measured[b] for b in blocks
                                                    if b in measured]
    want_d = result.direct if direct is None else [s for s in direct if s in result.direct]
    return ChainFits(
        cell=result.cell,
        norm=norm,
        blocks={b: fit_batch(result.blocks[b][key], result.lags, threshold=threshold)
                for b in want_b},
        direct={s: fit_batch(result.direct[s][key], result.lags, threshold=threshold)
                for s in want_d})


# -- theory: the memory gate ----------------------------------------------------------------
def _log10_sigmoid(b: float) -> float:
    # log σ(b) = −log(1 + e^{−b}), stable for either sign
    return -float(np.logaddexp(0.0, -b)) / _LN10


def gate_path(lags, bias: float, n: int = 1, norm: str = FROBENIUS) -> np.ndarray:
    """log10 ‖σ(b)^k I_n‖: the memory path of an LSTM (b = b_f) or GRU (b = b_z) whose
    weights are all zero, where it is exact. Frobenius: √n σ(b)^k; spectral: σ(b)^k."""
    k = _lags(lags)
    bias = real(bias, "bias")
    n = whole(n, "hidden size n")
    extra = 0.5 * math.log10(n) if choose(norm, NORMS, "norm") == FROBENIUS else 0.0
    return k * _log10_sigmoid(bias) + extra


def chrono_timescale(bias):
    """Timescale of a gate with bias b: 1/(1 − σ(b)) = 1 + e^b steps (Tallec & Ollivier)."""
    return 1.0 + np.exp(bias)


@dataclass(frozen=True)
class GateTheory:
    """The memory path of a gate with bias b when every weight is zero: σ(b)^k I.

    factor: per-step factor σ(b); efold: steps for the norm to fall by e, −1/ln σ(b);
    timescale: 1/(1 − σ(b)) = 1 + e^b steps."""

    bias: float
    factor: float
    efold: float
    timescale: float

    def as_dict(self) -> dict:
        return {"bias": self.bias, "sigma_b": self.factor, "timescale": self.timescale,
                "zero_weight_factor": self.factor, "zero_weight_efold": self.efold}


def gate_theory(bias: float) -> GateTheory:
    """:class:`GateTheory` of a gate with bias ``bias``."""
    b = real(bias, "bias")
    log_sigma = -float(np.logaddexp(0.0, -b))  # ln σ(b) < 0
    return GateTheory(bias=b, factor=math.exp(log_sigma),
                      efold=-1.0 / log_sigma if log_sigma < 0 else math.inf,
                      timescale=float(chrono_timescale(b)))


# -- theory: mean field ---------------------------------------------------------------------
@dataclass(frozen=True)
class MeanField:
    """Mean-field fixed point of h_t = tanh(U h_{t−1} + W x_t + b), U_ij ~ (0, σ_w²/n).

    q_star: pre-activation variance at the fixed point; chi1: σ_w² E[tanh'(√q* z)²], the
    per-step factor of ‖∂h_T/∂h_{T−k}‖_F²/n; timescale: −1/ln χ₁ (steps, for the squared
    norm; the norm itself falls by e every 2·timescale steps).
    """

    sigma_w2: float
    input_var: float
    bias_var: float
    q_star: float
    chi1: float

    @property
    def timescale(self) -> float:
        return -1.0 / math.log(self.chi1) if 0 < self.chi1 < 1 else math.inf

    @property
    def factor(self) -> float:
        """Predicted per-step factor of the norm, √χ₁."""
        return math.sqrt(self.chi1)

    @property
    def efold_lag(self) -> float | None:
        """Predicted e-folding lag of the norm, −2/ln χ₁ steps (``None`` unless χ₁ < 1)."""
        return -2.0 / math.log(self.chi1) if 0 < self.chi1 < 1 else None

    def log10_norm(self, lags, n: int) -> np.ndarray:
        """Predicted log10 ‖∂h_T/∂h_{T−k}‖_F ≈ log10(√n χ₁^{k/2})."""
        k = np.asarray(lags, dtype=np.float64)
        return 0.5 * math.log10(n) + 0.5 * k * math.log10(self.chi1)


def mean_field_tanh(sigma_w2: float, input_var: float = 0.0, bias_var: float = 0.0, *,
                    degree: int = 101, tol: float = 1e-13, max_iter: int = 10_000) -> MeanField:
    """Solve q* = σ_w² E[tanh(√q* z)²] + input_var + bias_var (z ~ N(0, 1)) by fixed-point
    iteration, with Gauss–Hermite quadrature (probabilists' weights), then
    χ₁ = σ_w² E[tanh'(√q* z)²].

    ``input_var`` is the variance the inputs add to each pre-activation, Σ_j Var(W_ij) E[x_j²]
    (σ_v² E[x²] in the Gaussian convention W_ij ~ N(0, σ_v²/d)); ``bias_var`` is σ_b².
    """
    sigma_w2, input_var, bias_var = (real(v, name, lo=0) for v, name in (
        (sigma_w2, "sigma_w2"), (input_var, "input_var"), (bias_var, "bias_var")))
    degree = whole(degree, "degree", 1, MAX_DEGREE)
    tol = real(tol, "tol", positive=True)
    max_iter = whole(max_iter, "max_iter", 1, MAX_ITER)
    z, w = np.polynomial.hermite_e.hermegauss(degree)
    w = w / math.sqrt(2 * math.pi)  # Σ w = 1: E[f(z)] ≈ Σ w f(z)

    def expect(f, q):
        return float(np.dot(w, f(math.sqrt(q) * z)))

    base = input_var + bias_var
    q = max(sigma_w2 + base, 1e-3)  # start high; the map is increasing and concave
    for _ in range(max_iter):
        new = sigma_w2 * expect(lambda a: np.tanh(a) ** 2, q) + base
        if abs(new - q) <= tol * max(1.0, q):
            q = new
            break
        q = new
    chi1 = sigma_w2 * expect(lambda a: (1 - np.tanh(a) ** 2) ** 2, q)
    return MeanField(sigma_w2=float(sigma_w2), input_var=float(input_var),
                     bias_var=float(bias_var), q_star=float(q), chi1=float(chi1))


def mean_field_from_params(params: Mapping, input_second_moment: float = 1.0) -> MeanField:
    """:func:`mean_field_tanh` with the variances read off a tanh RNN's parameters:
    σ_w² = n · mean(U²), input_var = mean_i Σ_j W_ij² · E[x²], bias_var = mean(b²).

    Mean-field theory needs only these second moments (any i.i.d. initialisation with them,
    PyTorch's uniform one included, behaves alike for large n)."""
    try:
        U, W, b = (np.asarray(params[k], dtype=np.float64) for k in ("U", "W", "b"))
    except KeyError as exc:
        raise GateflowError(f"mean-field theory needs a tanh RNN's U, W, b; "
                            f"missing {exc}") from None
    n = U.shape[0]
    return mean_field_tanh(n * float(np.mean(U ** 2)),
                           float(np.mean(np.sum(W ** 2, axis=1))) * input_second_moment,
                           float(np.mean(b ** 2)))


# -- theory: Pascanu bound ------------------------------------------------------------------
def pascanu_bound(U, lags, gamma: float = 1.0, norm: str = FROBENIUS) -> np.ndarray:
    """log10 of the upper bound on ‖∂h_T/∂h_{T−k}‖ for h' = φ(U h + …), |φ'| ≤ γ:
    spectral (γ‖U‖₂)^k; Frobenius √n (γ‖U‖₂)^k (as ‖A‖_F ≤ √n ‖A‖₂)."""
    U = real_array(U, "U").astype(np.float64)
    if U.ndim != 2 or U.shape[0] != U.shape[1] or U.size == 0:
        raise GateflowError(f"U must be a square recurrent matrix (n, n) with n >= 1, "
                            f"got shape {U.shape}")
    if not np.all(np.isfinite(U)):
        raise GateflowError("U contains NaN or inf; pass the finite recurrent weights")
    gamma = real(gamma, "gamma", lo=0)
    choose(norm, NORMS, "norm")
    k = _lags(lags)
    s = float(np.linalg.norm(U, 2)) * gamma
    with np.errstate(divide="ignore"):
        per = math.log10(s) if s > 0 else -math.inf
    extra = 0.5 * math.log10(U.shape[0]) if norm == FROBENIUS else 0.0
    return k * per + extra

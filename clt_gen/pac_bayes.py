"""PAC-Bayes bound arithmetic (THEORY §6.5): arrays and numbers in, bounds out.

No models here: the stochastic network, its sampling and its optimization live in
:mod:`clt_gen.gibbs`. Everything in this module is exact arithmetic on the terms:

- :func:`kl_bernoulli` and its upper inverse :func:`kl_inverse` (vectorized bisection on
  a fixed interval, so the result is monotone in both arguments and never below the true
  inverse);
- :func:`pac_bayes_kl_bound`: Maurer's form of the Langford–Seeger bound,
  ``kl(R̂ ‖ R) ≤ (KL + ln(2√n/δ)) / n``;
- :func:`monte_carlo_upper`: the Chernoff (kl) upper confidence bound on the mean of
  ``N`` independent terms in ``[0, 1]``, which turns a sampled empirical Gibbs risk
  into a certified one;
- :func:`gaussian_kl`: ``KL(N(μ_Q, diag σ_Q²) ‖ N(μ_P, σ_P² I))``;
- :func:`prior_grid` and :func:`certificate_value`: a grid of prior scales fixed in
  advance, paid for by a union bound, and the two-step certificate
  ``kl⁻¹(kl⁻¹(R̄, ln(1/δ′)/N), B)`` with every ``δ`` share recorded.

Examples
--------
>>> round(float(kl_inverse(0.0, math.log(2))), 12)  # kl(0 || p) = -ln(1 - p)
0.5
>>> b = pac_bayes_kl_bound(0.05, kl=1000.0, n_samples=60_000, delta=0.05)
>>> 0.05 < b.value < 0.2
True
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from clt_gen.errors import ValidationError

__all__ = [
    "kl_bernoulli",
    "kl_inverse",
    "pac_bayes_kl_bound",
    "monte_carlo_upper",
    "gaussian_kl",
    "prior_grid",
    "certificate_value",
    "PacBayesBound",
    "f_classic",
    "f_quad",
    "OBJECTIVES",
]

OBJECTIVES = ("f_quad", "f_classic")
_BISECTION_STEPS = 64  # 2**-64 < 1e-19: far below the 1e-10 the inverse promises


def _check_delta(name: str, delta: Any) -> float:
    if isinstance(delta, bool) or not isinstance(delta, (int, float, np.floating)):
        raise ValidationError(f"{name} must be a float in (0, 1) (got {delta!r}); 0.05 is usual")
    if not 0.0 < float(delta) < 1.0:
        raise ValidationError(f"{name} must be in (0, 1) (got {delta!r}); 0.05 is usual")
    return float(delta)


def _check_n(name: str, n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValidationError(f"{name} must be an int >= 1 (got {n!r})")
    return int(n)


def _check_unit(name: str, q: Any) -> np.ndarray:
    arr = np.asarray(q, dtype=np.float64)
    if not np.all(np.isfinite(arr)) or np.any(arr < 0) or np.any(arr > 1):
        bad = arr[~(np.isfinite(arr) & (arr >= 0) & (arr <= 1))]
        raise ValidationError(
            f"{name} must lie in [0, 1] (got {bad.ravel()[0]!r}); it is a mean of losses "
            "bounded in [0, 1]: clip or rescale the loss first"
        )
    return arr


def kl_bernoulli(q: Any, p: Any) -> np.ndarray:
    """Bernoulli relative entropy ``kl(q ‖ p) = q ln(q/p) + (1−q) ln((1−q)/(1−p))``.

    Vectorized over broadcastable ``q`` and ``p`` in ``[0, 1]``; ``0 ln 0 = 0`` and
    ``kl = inf`` where ``p`` is 0 or 1 and ``q`` differs from it. Computed as two
    non-negative terms (no cancellation), to about 1e-15 relative error.

    Parameters
    ----------
    q, p : float or array
        Bernoulli means in ``[0, 1]``.

    Returns
    -------
    ndarray
        ``kl(q ‖ p) >= 0`` in nats, of the broadcast shape.

    Examples
    --------
    >>> float(kl_bernoulli(0.5, 0.5))
    0.0
    >>> round(float(kl_bernoulli(0.0, 0.5)), 6)
    0.693147
    """
    q = np.asarray(q, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    q, p = np.broadcast_arrays(q, p)
    d = p - q
    # kl = q φ(d/q) + (1−q) φ(−d/(1−q)) with φ(x) = x − ln(1+x) >= 0: two non-negative
    # terms, no cancellation between them; φ by its series where |x| is small, else
    # q φ(d/q) = d + q ln(q/p) (and likewise for the other term), which keeps p's own
    # precision when p is far from q
    with np.errstate(all="ignore"):
        safe_q = np.where(q > 0, q, 1.0)
        x = d / safe_q
        a_direct = d + q * (np.log(safe_q) - np.log(p))
        a = np.where(np.abs(x) < 1e-2, q * _phi(x), a_direct)
        a = np.where(q > 0, a, d)  # the limit q -> 0
        safe_r = np.where(q < 1, 1 - q, 1.0)
        r = -d / safe_r
        b_direct = -d + (1 - q) * (np.log1p(-q) - np.log1p(-p))
        b = np.where(np.abs(r) < 1e-2, (1 - q) * _phi(r), b_direct)
        b = np.where(q < 1, b, -d)  # the limit q -> 1
        out = a + b
    out = np.where((q > 0) & (p <= 0), np.inf, out)
    out = np.where((q < 1) & (p >= 1), np.inf, out)
    return np.maximum(out, 0.0)


def _phi(x: np.ndarray) -> np.ndarray:
    """``x − ln(1 + x)`` by its series (used where ``|x| < 0.01``: error below 1e-18 x²)."""
    xs = np.where(np.abs(x) < 1e-2, x, 0.0)
    return xs * xs * (0.5 - xs * (1 / 3 - xs * (0.25 - xs * (0.2 - xs * (1 / 6 - xs / 7)))))


def kl_inverse(q: Any, c: Any) -> Any:
    """Upper inverse of the Bernoulli kl: ``sup {p ∈ [q, 1] : kl(q ‖ p) ≤ c}``.

    Bisection on the fixed interval ``[0, 1]`` with the predicate
    ``p ≤ q or kl(q ‖ p) ≤ c``, which is monotone in ``p``, ``q`` and ``c``; the upper
    end of the final bracket is returned. So the result is never below the exact inverse,
    exceeds it by less than ``1e-15`` plus the rounding of ``kl``, and is monotone
    (non-decreasing) in ``q`` and in ``c``, also between neighbouring floats.

    Parameters
    ----------
    q : float or array
        Empirical risk(s) in ``[0, 1]``.
    c : float or array
        The budget(s), ``>= 0`` (``inf`` allowed: the answer is 1).

    Returns
    -------
    float or ndarray
        A float for scalar arguments, else an array of the broadcast shape.

    Examples
    --------
    >>> round(float(kl_inverse(0.1, 0.0)), 12)
    0.1
    >>> float(kl_inverse(0.3, 1e6))
    1.0
    >>> kl_inverse([0.0, 0.1], 0.01).round(4)
    array([0.01  , 0.1477])
    """
    qa = _check_unit("q", q)
    ca = np.asarray(c, dtype=np.float64)
    if np.any(np.isnan(ca)) or np.any(ca < 0):
        raise ValidationError(f"c must be >= 0 (got {c!r}); it is (KL + log term) / n")
    qa, ca = np.broadcast_arrays(qa, ca)
    lo = np.zeros(qa.shape)
    hi = np.ones(qa.shape)
    for _ in range(_BISECTION_STEPS):
        mid = 0.5 * (lo + hi)
        ok = (mid <= qa) | (kl_bernoulli(qa, mid) <= ca)
        lo = np.where(ok, mid, lo)
        hi = np.where(ok, hi, mid)
    out = np.where(ca == 0, qa, hi)  # c = 0: the inverse is q itself
    out = np.where(qa >= 1, 1.0, out)
    out = np.maximum(out, qa)
    if np.ndim(q) == 0 and np.ndim(c) == 0:
        return float(out)
    return out


@dataclass(frozen=True)
class PacBayesBound:
    """A PAC-Bayes-kl bound on the risk of a Gibbs classifier.

    Attributes
    ----------
    value : float
        ``kl⁻¹(empirical_risk, budget)``: the certified risk.
    empirical_risk : float
        The (upper bound on the) empirical Gibbs risk that entered the inversion.
    kl : float
        ``KL(Q ‖ P)`` in nats.
    n_samples : int
        Rows of the bound's sample.
    delta : float
        Failure probability of this step.
    budget : float
        ``(KL + ln(2√n/δ)) / n``.
    terms : dict
        ``log_term`` = ``ln(2√n/δ)``.
    """

    value: float
    empirical_risk: float
    kl: float
    n_samples: int
    delta: float
    budget: float
    terms: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return the bound as plain JSON types."""
        return asdict(self)


def _check_kl(kl: Any) -> float:
    if isinstance(kl, bool) or not isinstance(kl, (int, float, np.floating)):
        raise ValidationError(f"kl must be a float >= 0 (got {kl!r})")
    if math.isnan(kl) or kl < 0:
        raise ValidationError(
            f"kl must be a float >= 0 (got {kl!r}); KL(Q||P) is a divergence and cannot be "
            "negative or NaN: check the posterior's standard deviations"
        )
    return float(kl)


def pac_bayes_kl_bound(
    empirical_risk: float, *, kl: float, n_samples: int, delta: float
) -> PacBayesBound:
    """Maurer's PAC-Bayes-kl bound: ``R(Q) ≤ kl⁻¹(R̂_S(Q), (KL(Q‖P) + ln(2√n/δ))/n)``.

    Holds with probability ``≥ 1 − δ`` over the sample ``S`` of ``n`` i.i.d. rows,
    simultaneously for every posterior ``Q``, for a loss in ``[0, 1]`` and a prior ``P``
    chosen without ``S`` (Maurer 2004; Langford & Seeger 2001). ``n >= 8`` is the
    condition of Maurer's lemma.

    Parameters
    ----------
    empirical_risk : float
        ``R̂_S(Q)`` in ``[0, 1]`` (or an upper confidence bound on it).
    kl : float
        ``KL(Q ‖ P)`` in nats.
    n_samples : int
    delta : float

    Returns
    -------
    PacBayesBound
        The certified risk ``value``, the ``budget`` and the inputs.

    Examples
    --------
    >>> b = pac_bayes_kl_bound(0.0, kl=0.0, n_samples=10_000, delta=0.05)
    >>> round(b.budget, 6)  # ln(2 * 100 / 0.05) / 10_000
    0.000829
    """
    q = float(_check_unit("empirical_risk", empirical_risk))
    kl = _check_kl(kl)
    n = _check_n("n_samples", n_samples)
    if n < 8:
        raise ValidationError(
            f"n_samples must be >= 8 for the PAC-Bayes-kl bound (Maurer's lemma; got {n}): "
            "use more training rows"
        )
    delta = _check_delta("delta", delta)
    log_term = math.log(2.0 * math.sqrt(n) / delta)
    budget = (kl + log_term) / n
    value = float(kl_inverse(q, budget))
    return PacBayesBound(value, q, kl, n, delta, budget, {"log_term": log_term})


def monte_carlo_upper(mean: float, n_terms: int, delta: float) -> float:
    """Upper confidence bound on the expectation of a mean of independent ``[0, 1]`` terms.

    ``kl⁻¹(R̄, ln(1/δ)/N)``: Chernoff's bound in kl form, valid for independent (not
    necessarily identically distributed) terms, with probability ``≥ 1 − δ``.

    Parameters
    ----------
    mean : float
        ``R̄``, the mean of the ``N`` terms.
    n_terms : int
        ``N``.
    delta : float

    Returns
    -------
    float
        The upper confidence bound on the terms' expected mean.

    Examples
    --------
    >>> 0.1 < monte_carlo_upper(0.1, 10_000, 0.01) < 0.11
    True
    """
    q = float(_check_unit("mean", mean))
    n = _check_n("n_terms", n_terms)
    delta = _check_delta("delta", delta)
    return float(kl_inverse(q, math.log(1.0 / delta) / n))


def gaussian_kl(mu_q: Any, sigma_q: Any, mu_p: Any, sigma_p: Any) -> Any:
    """``KL(N(μ_Q, diag σ_Q²) ‖ N(μ_P, diag σ_P²))`` summed over coordinates, in nats.

    ``½ Σ_k [ (σ_Qk² + (μ_Qk − μ_Pk)²)/σ_Pk² − 1 + ln(σ_Pk²/σ_Qk²) ]``. Works on NumPy
    arrays (float64 result) and on torch tensors (a differentiable tensor); ``sigma_p``
    may be a scalar (an isotropic prior).

    Parameters
    ----------
    mu_q, sigma_q : array or Tensor
        The posterior's means and standard deviations (``> 0``).
    mu_p, sigma_p : array, Tensor or float
        The prior's.

    Returns
    -------
    float or Tensor
        The KL in nats (a float for arrays, a scalar tensor for tensors).

    Examples
    --------
    >>> import numpy as np
    >>> float(gaussian_kl(np.zeros(3), np.ones(3), np.zeros(3), 1.0))
    0.0
    >>> round(float(gaussian_kl(np.ones(1), np.ones(1), np.zeros(1), 1.0)), 6)
    0.5
    """
    try:
        import torch

        if isinstance(mu_q, torch.Tensor) or isinstance(sigma_q, torch.Tensor):
            sp2 = torch.as_tensor(sigma_p, dtype=sigma_q.dtype, device=sigma_q.device) ** 2
            ratio = sigma_q**2 / sp2
            return 0.5 * torch.sum(ratio + (mu_q - mu_p) ** 2 / sp2 - 1.0 - torch.log(ratio))
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    mq, sq = np.asarray(mu_q, np.float64), np.asarray(sigma_q, np.float64)
    mp, sp = np.asarray(mu_p, np.float64), np.asarray(sigma_p, np.float64)
    if np.any(sq <= 0) or np.any(sp <= 0):
        raise ValidationError("standard deviations must be > 0 in gaussian_kl")
    ratio = (sq / sp) ** 2
    return float(0.5 * np.sum(ratio + ((mq - mp) / sp) ** 2 - 1.0 - np.log(ratio)))


def prior_grid(low: float = 1e-4, high: float = 1.0, size: int = 4096) -> np.ndarray:
    """Return ``size`` prior standard deviations, geometric in ``[low, high]``, fixed in advance.

    Choosing one of them after seeing the data costs ``ln(size)`` nats through the union
    bound (``δ/size`` each). A fine grid is cheap: the cost grows like ``ln(size)`` while
    the KL lost by rounding the best scale to the grid falls like ``size⁻²``.

    Parameters
    ----------
    low, high : float
        The smallest and largest standard deviation, ``0 < low < high``.
    size : int
        ``J``, the number of values.

    Returns
    -------
    ndarray
        ``J`` values, increasing.

    Examples
    --------
    >>> g = prior_grid(0.01, 1.0, 3)
    >>> g.round(3).tolist()
    [0.01, 0.1, 1.0]
    """
    if not (0 < low < high and math.isfinite(high)):
        raise ValidationError(f"prior grid needs 0 < low < high < inf (got low={low}, high={high})")
    size = _check_n("size", size)
    if size == 1:
        return np.array([float(low)])
    return np.geomspace(low, high, size)


def certificate_value(
    mc_mean: float,
    *,
    n_mc_terms: int,
    kl: float,
    n_samples: int,
    delta: float,
    delta_mc: float,
    n_priors: int = 1,
    ratio: float = 1.0,
) -> dict[str, Any]:
    """Return the whole certificate ``kl⁻¹(kl⁻¹(R̄, ln(1/δ_mc)/N), (KL + ln(2√n J/δ_pb))/n)``.

    ``δ = δ_pb + δ_mc``: the Monte-Carlo step spends ``δ_mc``, the PAC-Bayes step the
    rest, shared by the ``J = n_priors`` priors of a grid (``δ_pb/J`` each). With
    probability ``≥ 1 − δ`` the Gibbs risk is at most the returned ``value``.

    Parameters
    ----------
    mc_mean : float
        ``R̄``: the mean of ``n_mc_terms`` independent sampled losses in ``[0, 1]``.
    n_mc_terms : int
    kl : float
        ``KL(Q ‖ P)`` in nats.
    n_samples : int
        Rows of the bound's sample.
    delta, delta_mc : float
        The total failure probability and the Monte-Carlo step's share.
    n_priors : int
        ``J``.
    ratio : float
        ``R̂ = ratio × E[R̄]`` when the terms are not the per-row losses themselves (one
        term per mini-batch: its loss sum over the largest batch, ``ratio = b N/(passes n)``);
        the upper confidence bound is taken on the terms, then scaled.

    Returns
    -------
    dict
        ``value``, ``empirical_upper`` (the certified empirical Gibbs risk), the
        ``kl``, ``budget`` and every ``δ`` share.

    Examples
    --------
    >>> out = certificate_value(0.05, n_mc_terms=60_000, kl=2000.0, n_samples=60_000,
    ...                         delta=0.05, delta_mc=0.01, n_priors=4096)
    >>> out["delta_shares"]["pac_bayes_per_prior"] == 0.04 / 4096
    True
    """
    delta = _check_delta("delta", delta)
    delta_mc = _check_delta("delta_mc", delta_mc)
    if delta_mc >= delta:
        raise ValidationError(
            f"delta_mc must be smaller than delta (got delta_mc={delta_mc}, delta={delta}); "
            "the PAC-Bayes step needs the rest (delta / 5 is usual)"
        )
    n_priors = _check_n("n_priors", n_priors)
    delta_pb = delta - delta_mc
    upper = min(1.0, ratio * monte_carlo_upper(min(1.0, mc_mean / ratio), n_mc_terms, delta_mc))
    pb = pac_bayes_kl_bound(upper, kl=kl, n_samples=n_samples, delta=delta_pb / n_priors)
    return {
        "value": pb.value,
        "empirical_mean": float(mc_mean),
        "empirical_upper": upper,
        "kl": pb.kl,
        "budget": pb.budget,
        "log_term": pb.terms["log_term"],
        "n_samples": pb.n_samples,
        "n_mc_terms": int(n_mc_terms),
        "delta": delta,
        "delta_shares": {
            "monte_carlo": delta_mc,
            "pac_bayes": delta_pb,
            "pac_bayes_per_prior": delta_pb / n_priors,
            "n_priors": n_priors,
        },
    }


def f_classic(risk: Any, kl: Any, n_samples: int, log_term: float) -> Any:
    """Training objective ``R̂ + √(B/2)`` with ``B = (KL + log_term)/n`` (works on tensors)."""
    b = (kl + log_term) / n_samples
    return risk + (b / 2) ** 0.5


def f_quad(risk: Any, kl: Any, n_samples: int, log_term: float) -> Any:
    """Training objective ``(√(R̂ + B/2) + √(B/2))²`` (Pérez-Ortiz et al., JMLR 2021)."""
    b = (kl + log_term) / n_samples
    return ((risk + b / 2) ** 0.5 + (b / 2) ** 0.5) ** 2


def objective_function(name: str) -> Any:
    """Return ``f_quad`` or ``f_classic`` by name."""
    table: Mapping[str, Any] = {"f_quad": f_quad, "f_classic": f_classic}
    if name not in table:
        from clt_gen.errors import unknown_name_error

        raise unknown_name_error("objective", name, OBJECTIVES)
    return table[name]

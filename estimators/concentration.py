"""One-sided upper confidence bounds on the mean of bounded i.i.d. terms.

Both hold for **any** distribution on ``[0, B]``:

``betting``
    Waudby-Smith & Ramdas (JRSS-B 2024), fixed-sample form: the capital process
    ``K(m) = Π_i (1 − λ_i (x_i/B − m/B))`` with predictable bets
    ``λ_i = min(√(2 ln(1/δ) / (n σ̂²_{i−1})), c)`` is a non-negative supermartingale
    when the mean is ``m`` or more (each factor has expectation ``1 − λ_i (μ − m)/B``), so
    by Ville's inequality ``P(K(μ) ≥ 1/δ) ≤ δ``. The bound is the smallest ``m`` with
    ``K(m) ≥ 1/δ``; ``K`` increases with ``m``, so a bisection finds it. The bets use
    only past terms, so the order of the terms is part of the method: it is a random
    permutation drawn from ``random_state``.
``bernstein``
    Empirical Bernstein (Maurer & Pontil 2009, Thm 4):
    ``mean + √(2 V ln(2/δ)/n) + 7 B ln(2/δ) / (3(n−1))``.

Examples
--------
>>> import numpy as np
>>> x = np.random.default_rng(0).uniform(0, 1, 2000)
>>> ub = upper_confidence_bound(x, bound=1.0, delta=0.05, method="betting", random_state=0)
>>> bool(x.mean() < ub < x.mean() + 0.05)
True
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np

__all__ = ["upper_confidence_bound", "CONCENTRATIONS"]

CONCENTRATIONS: tuple[str, ...] = ("betting", "bernstein")
Concentration = Literal["betting", "bernstein"]


def _bernstein(x: np.ndarray, bound: float, delta: float) -> float:
    n = len(x)
    var = float(x.var(ddof=1)) if n > 1 else bound * bound / 4.0
    log_term = math.log(2.0 / delta)
    return float(
        x.mean() + math.sqrt(2.0 * var * log_term / n) + 7.0 * bound * log_term / (3.0 * (n - 1))
    )


def _bets(u: np.ndarray, delta: float, cap: float) -> np.ndarray:
    """Predictable bets from the past terms (scaled to [0, 1])."""
    n = len(u)
    t = np.arange(1, n + 1)
    mu = (0.5 + np.cumsum(u)) / (t + 1)
    # sigma^2_t = (1/4 + sum_{i<=t} (u_i - mu_i)^2) / (t + 1); the bet at i uses t = i - 1
    sig2 = (0.25 + np.cumsum((u - mu) ** 2)) / (t + 1)
    prev = np.concatenate([[0.25], sig2[:-1]])
    return np.minimum(np.sqrt(2.0 * math.log(1.0 / delta) / (n * prev)), cap)


def _betting(x: np.ndarray, bound: float, delta: float, gen: np.random.Generator) -> float:
    u = gen.permutation(x) / bound
    lam = _bets(u, delta, cap=0.75)
    target = math.log(1.0 / delta)

    def log_capital(m: float) -> float:
        return float(np.sum(np.log1p(-lam * (u - m))))

    lo, hi = float(u.mean()), 1.0
    if log_capital(hi) < target:  # not even the range's top end is rejected
        return bound
    if log_capital(lo) >= target:
        return lo * bound
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if log_capital(mid) >= target:
            hi = mid
        else:
            lo = mid
    return hi * bound


def upper_confidence_bound(
    x: np.ndarray,
    *,
    bound: float,
    delta: float,
    method: Concentration = "betting",
    random_state: Any = None,
) -> float:
    """Return an upper confidence bound at level ``1 − delta`` on a mean of terms in ``[0, bound]``.

    Parameters
    ----------
    x : ndarray of shape (n_samples,)
        i.i.d. terms, each in ``[0, bound]``.
    bound : float
        Upper end ``B`` of the range.
    delta : float
        Failure probability.
    method : {"betting", "bernstein"}
    random_state : None, int or Generator
        Order of the terms for the betting bound.

    Returns
    -------
    float
        ``U`` with ``P(E x > U) <= delta``; never below the sample mean, never above ``B``.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).uniform(0, 1, 1000)
    >>> u = upper_confidence_bound(x, bound=1.0, delta=0.05, random_state=0)
    >>> bool(x.mean() < u < x.mean() + 0.06)
    True
    """
    x = np.asarray(x, dtype=np.float64)
    if method == "bernstein":
        value = _bernstein(x, bound, delta)
    else:
        value = _betting(x, bound, delta, np.random.default_rng(random_state))
    return float(min(max(value, float(x.mean())), bound))

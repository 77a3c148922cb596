"""Certified upper confidence bounds on ``H_Ω(Y|Z)`` and the data-processing profile.

For any predictor ``q(·|z)`` fitted without the evaluation sample,
``E S_Ω(q(Z), Y) = H_Ω(Y|Z) + E D(p(·|Z), q(·|Z)) >= H_Ω(Y|Z)`` (THEORY §5.0). So the
held-out scores of a fitted head, made bounded and passed through a concentration
inequality, give an upper confidence bound that holds **whatever the distribution**.
No estimator can certify ``H_Ω(Y|Z)`` from below (McAllester & Stratos 2020): this
module only ever certifies from above.

Construction (THEORY §5.1): split the sample into ``n_folds`` random folds (independent
of the data, so each evaluation fold is i.i.d. given its head's fitting data); for each
fold select a head on the other folds (inner validation inside the fitting folds, never
on the evaluation fold), score it on the fold, and bound the fold's mean score at level
``delta / n_folds``. The mean of the fold bounds then holds with probability at least
``1 − delta`` (union bound; each fold's expected score is ``>= H_Ω(Y|Z)``).

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> y = rng.integers(0, 2, 2000)
>>> z = rng.normal(size=(2000, 2)) + 2.0 * y[:, None]
>>> ub = conditional_entropy_upper_bound(z, y, delta=0.05, random_state=0)
>>> ub.value >= ub.heldout_mean
True
>>> ub.kind
'certified_upper_bound'
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from estimators._validation import check_features, check_float, check_folds, check_labels, rng
from estimators.concentration import CONCENTRATIONS, upper_confidence_bound
from estimators.entropies import check_omega, max_entropy, units
from estimators.errors import ValidationError, unknown_name_error
from estimators.heads import (
    DEFAULT_HEADS,
    HEADS,
    CrossFit,
    cross_fit,
    score_range,
)

__all__ = [
    "UpperBound",
    "conditional_entropy_upper_bound",
    "dpi_profile",
    "check_folds",
    "estimate_and_bound",
]


@dataclass(frozen=True)
class UpperBound:
    """A certified upper confidence bound on ``H_Ω(Y|Z)``.

    Attributes
    ----------
    value : float
        ``U`` such that ``P(H_Ω(Y|Z) > U) <= delta`` for every distribution.
    delta : float
        Failure probability (all folds together).
    heldout_mean : float
        Mean held-out score over all samples (an upper *estimate*, no guarantee).
    fold_bounds : tuple of float
        Bound of each fold at level ``delta / n_folds``.
    fold_means : tuple of float
        Mean held-out score of each fold.
    m : tuple of int
        Number of held-out terms in each fold.
    heads : tuple of dict
        The head chosen in each fold (name and hyper-parameters, temperature included).
    score_range : float
        Terms lie in ``[0, score_range]`` (after mixing with ``eps`` for ``shannon``).
    n_samples, omega, concentration, eps, units
        As used.
    kind : str
        Always ``"certified_upper_bound"``.
    """

    value: float
    delta: float
    heldout_mean: float
    fold_bounds: tuple[float, ...]
    fold_means: tuple[float, ...]
    m: tuple[int, ...]
    heads: tuple[dict[str, Any], ...]
    score_range: float
    n_samples: int
    omega: str
    concentration: str
    eps: float
    params: dict[str, Any] = field(default_factory=dict)
    units: str = "nats"
    kind: str = "certified_upper_bound"

    @property
    def slack_terms(self) -> float:
        """Concentration part of the bound: ``value − heldout_mean``."""
        return self.value - self.heldout_mean

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary."""
        return {
            "kind": self.kind,
            "value": self.value,
            "delta": self.delta,
            "heldout_mean": self.heldout_mean,
            "fold_bounds": list(self.fold_bounds),
            "fold_means": list(self.fold_means),
            "m": list(self.m),
            "heads": [dict(h) for h in self.heads],
            "score_range": self.score_range,
            "n_samples": self.n_samples,
            "omega": self.omega,
            "concentration": self.concentration,
            "eps": self.eps,
            "params": dict(self.params),
            "units": self.units,
        }


def _check_heads(heads: Sequence[str]) -> tuple[str, ...]:
    if isinstance(heads, str):
        heads = (heads,)
    out = tuple(heads)
    if not out:
        raise ValidationError("heads must name at least one head family, e.g. heads=('logistic',)")
    for h in out:
        if h not in HEADS:
            raise unknown_name_error("heads", h, HEADS)
    return out


def prepare(
    z: Any,
    y: Any,
    *,
    omega: str,
    alpha: float,
    n_classes: int | None,
    eps: float,
) -> tuple[np.ndarray, np.ndarray, int, float]:
    """Validate features, labels, omega and eps; continuous features as float64."""
    check_omega(omega, alpha)
    arr, discrete = check_features(z)
    labels, k = check_labels(y, arr.shape[0], n_classes)
    if discrete:
        arr = arr.astype(np.float64)[:, None]
    eps = check_float("eps", eps, low=0.0, high=1.0)
    return arr, labels, k, eps


def conditional_entropy_upper_bound(
    z: Any,
    y: Any,
    *,
    omega: str = "shannon",
    delta: float = 0.05,
    random_state: Any = None,
    n_folds: int = 2,
    heads: Sequence[str] = DEFAULT_HEADS,
    concentration: str = "betting",
    eps: float = 1e-3,
    alpha: float = 1.5,
    n_classes: int | None = None,
) -> UpperBound:
    """Certified upper confidence bound on ``H_Ω(Y|Z)``, valid for any distribution.

    Parameters
    ----------
    z : array of shape (n_samples, n_features), or integer codes (n_samples,)
        Features; i.i.d. draws with ``y``.
    y : array of shape (n_samples,)
        Labels in ``0..n_classes-1``.
    omega : {"shannon", "squared", "sparsemax", "tsallis", "zero_one"}
        Which entropy; ``zero_one`` certifies the Bayes error.
    delta : float
        Failure probability in ``(0, 1)``.
    random_state : None, int or Generator
        Seeds the folds, the inner splits, the heads and the betting order.
    n_folds : int
        Cross-fitting folds (each bounded at ``delta / n_folds``).
    heads : sequence of str
        Head families tried in each fold (see :mod:`estimators.heads`).
    concentration : {"betting", "bernstein"}
        Concentration inequality for each fold's mean score.
    eps : float
        ``shannon`` only: predictions are mixed with the uniform distribution at weight
        ``eps`` so every term lies in ``[0, log(K/eps)]``.
    alpha : float
        Tsallis order (``omega="tsallis"``).
    n_classes : int, optional
        Number of classes when some are absent from ``y``.

    Returns
    -------
    UpperBound

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> y = rng.integers(0, 3, 3000)
    >>> z = rng.normal(size=(3000, 4))               # features independent of the labels
    >>> ub = conditional_entropy_upper_bound(z, y, random_state=0)
    >>> round(ub.value, 4)   # capped at H(uniform) = log 3: nothing to certify here
    1.0986
    """
    fit, k, eps, delta, gen = _checked_cross_fit(
        z,
        y,
        omega=omega,
        alpha=alpha,
        n_classes=n_classes,
        eps=eps,
        delta=delta,
        concentration=concentration,
        heads=heads,
        n_folds=n_folds,
        learning_curve=False,
        random_state=random_state,
    )
    return _bound_from_crossfit(
        fit,
        omega=omega,
        alpha=alpha,
        eps=eps,
        delta=delta,
        n_classes=k,
        concentration=concentration,
        gen=gen,
    )


def _checked_cross_fit(
    z: Any,
    y: Any,
    *,
    omega: str,
    alpha: float,
    n_classes: int | None,
    eps: float,
    delta: float,
    concentration: str,
    heads: Sequence[str],
    n_folds: int,
    learning_curve: bool,
    random_state: Any,
) -> tuple[CrossFit, int, float, float, np.random.Generator]:
    """Validate every argument, then cross-fit: ``(fit, n_classes, eps, delta, generator)``."""
    delta = check_float("delta", delta, low=0.0, high=1.0)
    if concentration not in CONCENTRATIONS:
        raise unknown_name_error("concentration", concentration, CONCENTRATIONS)
    heads = _check_heads(heads)
    arr, labels, k, eps = prepare(z, y, omega=omega, alpha=alpha, n_classes=n_classes, eps=eps)
    n_folds = check_folds(n_folds, labels, k)
    gen = rng(random_state)
    fit = cross_fit(
        arr,
        labels,
        n_classes=k,
        omega=omega,
        alpha=alpha,
        eps=eps,
        n_folds=n_folds,
        heads=heads,
        learning_curve=learning_curve,
        random_state=gen,
    )
    return fit, k, eps, delta, gen


def _bound_from_crossfit(
    fit: CrossFit,
    *,
    omega: str,
    alpha: float,
    eps: float,
    delta: float,
    n_classes: int,
    concentration: str,
    gen: np.random.Generator,
) -> UpperBound:
    b = score_range(omega, n_classes, alpha=alpha, eps=eps)
    n_folds = len(fit.heads)
    bounds, means, ms = [], [], []
    for f in range(n_folds):
        terms = fit.scores[fit.fold == f]
        bounds.append(
            upper_confidence_bound(
                terms,
                bound=b,
                delta=delta / n_folds,
                method=concentration,  # type: ignore[arg-type]
                random_state=gen,
            )
        )
        means.append(float(terms.mean()))
        ms.append(int(len(terms)))
    value = float(np.mean(bounds))
    # H_Ω(Y|Z) <= H_Ω(uniform) for every distribution: a free cap
    value = min(value, max_entropy(n_classes, omega=omega, alpha=alpha))
    return UpperBound(
        value=value,
        delta=delta,
        heldout_mean=float(fit.scores.mean()),
        fold_bounds=tuple(bounds),
        fold_means=tuple(means),
        m=tuple(ms),
        heads=tuple({"name": h.name, **h.params} for h in fit.heads),
        score_range=b,
        n_samples=len(fit.scores),
        omega=omega,
        concentration=concentration,
        eps=eps,
        params={"n_folds": n_folds, **({"alpha": alpha} if omega == "tsallis" else {})},
        units=units(omega),
    )


def dpi_profile(bounds: Sequence[float]) -> list[float]:
    """Data-processing-tightened profile ``U*_l = min_{l' >= l} U_{l'}`` (THEORY §5.2).

    ``bounds`` are certified upper bounds of successive layers of one network (each at
    level ``delta / L``). Since a later layer is a function of an earlier one,
    ``H(Y|Z_l) <= H(Y|Z_{l'})`` for ``l' >= l``, so every later bound also bounds layer
    ``l``. The profile never decreases with depth and is never above any single bound.

    Parameters
    ----------
    bounds : sequence of float
        ``U_l`` for layers in forward order.

    Returns
    -------
    list of float
        ``U*_l``, same length and order.

    Examples
    --------
    >>> dpi_profile([0.5, 0.3, 0.4, 0.6])
    [0.3, 0.3, 0.4, 0.6]
    """
    out: list[float] = []
    running = np.inf
    for u in reversed(list(bounds)):
        running = min(running, float(u))
        out.append(running)
    return out[::-1]


def estimate_and_bound(
    z: Any,
    y: Any,
    *,
    omega: str = "shannon",
    delta: float = 0.05,
    random_state: Any = None,
    heads: Sequence[str] = DEFAULT_HEADS,
    concentration: str = "betting",
    eps: float = 1e-3,
    alpha: float = 1.5,
    n_classes: int | None = None,
    confidence: float = 0.95,
    n_bootstrap: int = 200,
) -> tuple[Any, UpperBound, np.ndarray]:
    """Return the ``auto`` point estimate and the certified bound from **one** cross-fit.

    Same folds, same selected heads: the estimate is the debiased held-out score (see
    ``method="auto"`` of :func:`estimators.conditional_entropy`), the bound is
    :func:`conditional_entropy_upper_bound` on the undebiased terms. Also returns the
    estimate's per-sample terms, so information losses between layers scored on the
    same samples and folds can be paired.

    Returns
    -------
    estimate : Estimate
    bound : UpperBound
    terms : ndarray of shape (n_samples,)

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 2, 1000)
    >>> z = rng.normal(size=(1000, 2)) + 2.0 * y[:, None]
    >>> est, ub, _ = estimate_and_bound(z, y, random_state=0)
    >>> bool(est.value <= ub.value)
    True
    """
    from estimators.core import _common_checks, _finish
    from estimators.methods import auto_statistic

    confidence, n_bootstrap = _common_checks(confidence, n_bootstrap)
    fit, k, eps, delta, gen = _checked_cross_fit(
        z,
        y,
        omega=omega,
        alpha=alpha,
        n_classes=n_classes,
        eps=eps,
        delta=delta,
        concentration=concentration,
        heads=heads,
        n_folds=2,
        learning_curve=True,
        random_state=random_state,
    )
    stat = auto_statistic(fit, eps=eps)
    est = _finish(stat, len(fit.scores), k, omega, "auto", alpha, gen, confidence, n_bootstrap)
    bound = _bound_from_crossfit(
        fit,
        omega=omega,
        alpha=alpha,
        eps=eps,
        delta=delta,
        n_classes=k,
        concentration=concentration,
        gen=gen,
    )
    assert stat.terms is not None
    terms = stat.terms
    return est, bound, terms

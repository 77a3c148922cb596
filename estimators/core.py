"""Public estimators of generalized (conditional) entropy, with bootstrap uncertainty."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np

from estimators._validation import check_features, check_float, check_int, check_labels, rng
from estimators.entropies import check_omega, generalized_entropy, max_entropy, units
from estimators.errors import ValidationError, unknown_name_error
from estimators.methods import ASSUMPTIONS, METHODS, Statistic

__all__ = [
    "Estimate",
    "conditional_entropy",
    "entropy",
    "mutual_information",
    "information_loss",
    "paired_difference",
    "DEFAULT_METHOD",
]

DEFAULT_METHOD = "auto"


@dataclass(frozen=True)
class Estimate:
    """An estimate with its uncertainty.

    Attributes
    ----------
    value : float
        The point estimate (units: ``units``; nats for ``shannon``).
    stderr : float or None
        Standard error (None when ``n_bootstrap=0``): the bootstrap's, or for ``auto`` the
        exact one of the mean of its terms; with the heads' own variance added for a
        debiased ``auto`` estimate (``params["head_variance"]``).
    ci : tuple of float or None
        Confidence interval at level ``confidence``: the percentile bootstrap interval,
        or for ``auto`` the normal interval ``value ± z · stderr`` (a mean of many bounded
        terms: the bootstrap's limit, without the Monte Carlo noise of 200 resamples in
        its endpoints, which cost up to 13 points of coverage in
        ``benchmarks/auto_variance.py``).
    n_samples : int
    omega : str
    method : str
    params : dict
        Resolved method parameters (``alpha`` included for ``tsallis``).
    flags : tuple of str
        ``out_of_range`` (outside ``[0, H_Ω(uniform)]``; ``auto`` then projects the value
        onto that range and keeps the raw one in ``params["unclipped_value"]``),
        ``small_sample``,
        ``dpi_violation`` (an information loss significantly below zero),
        ``upper_estimate`` (the probe), ``no_bootstrap``.
    confidence : float
    units : str
    assumption : str
        What the estimate and its interval rest on (a model, never a guarantee; for a
        certificate use :func:`estimators.conditional_entropy_upper_bound`).
    """

    value: float
    stderr: float | None
    ci: tuple[float, float] | None
    n_samples: int
    omega: str
    method: str
    params: dict[str, Any] = field(default_factory=dict)
    flags: tuple[str, ...] = ()
    confidence: float = 0.95
    units: str = "nats"
    assumption: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary."""
        d = asdict(self)
        d["ci"] = list(self.ci) if self.ci is not None else None
        d["flags"] = list(self.flags)
        return d


def _resolve_method(method: str) -> Any:
    if method not in METHODS:
        raise unknown_name_error("method", method, METHODS)
    return METHODS[method]


def _bootstrap_weights(n: int, n_bootstrap: int, gen: np.random.Generator) -> np.ndarray:
    """Multiplicities of ``n_bootstrap`` resamples of ``n`` points, shape (B, n)."""
    return gen.multinomial(n, np.full(n, 1.0 / n), size=n_bootstrap).astype(np.float64)


def _interval(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    lo = float(np.quantile(samples, (1 - confidence) / 2))
    hi = float(np.quantile(samples, 1 - (1 - confidence) / 2))
    return lo, hi


def _widened(
    value: float,
    stderr: float,
    ci: tuple[float, float],
    extra_variance: float,
    confidence: float,
) -> tuple[float, tuple[float, float]]:
    """Add a variance ``v`` that the bootstrap does not see.

    The standard error becomes ``√(se² + v)``; each side of the interval is lengthened in
    quadrature by ``z·√v``, with ``z`` the normal quantile at ``confidence``.
    """
    half = NormalDist().inv_cdf(0.5 + confidence / 2) * math.sqrt(extra_variance)
    lo = value - math.hypot(max(value - ci[0], 0.0), half)
    hi = value + math.hypot(max(ci[1] - value, 0.0), half)
    return math.sqrt(stderr**2 + extra_variance), (lo, hi)


def _common_checks(confidence: float, n_bootstrap: int) -> tuple[float, int]:
    confidence = check_float("confidence", confidence, low=0.0, high=1.0)
    n_bootstrap = check_int(
        "n_bootstrap", n_bootstrap, low=0, hint="use 0 to skip the bootstrap, 200 or more for a CI"
    )
    return confidence, n_bootstrap


def _statistic(
    z: Any,
    y: Any,
    omega: str,
    method: str,
    alpha: float,
    n_classes: int | None,
    gen: np.random.Generator,
    method_params: dict[str, Any],
) -> tuple[Statistic, int, int]:
    check_omega(omega, alpha)
    func = _resolve_method(method)
    arr, discrete = check_features(z)
    labels, k = check_labels(y, arr.shape[0], n_classes)
    if arr.shape[0] < 4:
        raise ValidationError(
            f"n_samples must be >= 4 to cross-fit and bootstrap (got {arr.shape[0]})"
        )
    fitted = method in ("auto", "probe")
    if fitted and arr.shape[0] < max(20, 4 * k):
        raise ValidationError(
            f"method={method!r} fits heads on half of the rows and scores them on the other "
            f"half: n_samples must be >= max(20, 4 * n_classes) = {max(20, 4 * k)} (got "
            f"{arr.shape[0]}); use more rows, or method='plugin' on discrete codes"
        )
    if discrete and method != "plugin":
        arr = arr.astype(np.float64)[:, None]
    try:
        stat = func(
            arr,
            labels,
            discrete=discrete,
            n_classes=k,
            omega=omega,
            alpha=alpha,
            rng=gen,
            **method_params,
        )
    except TypeError as exc:
        if "unexpected keyword" in str(exc):
            raise ValidationError(
                f"method={method!r} does not take parameters {sorted(method_params)} ({exc})"
            ) from None
        raise
    return stat, len(labels), k


def _finish(
    stat: Statistic,
    n: int,
    n_classes: int,
    omega: str,
    method: str,
    alpha: float,
    gen: np.random.Generator,
    confidence: float,
    n_bootstrap: int,
    clip: bool = True,
) -> Estimate:
    value = stat(np.ones(n))
    flags = list(stat.flags)
    stderr: float | None = None
    ci: tuple[float, float] | None = None
    hmax = max_entropy(n_classes, omega=omega, alpha=alpha)
    if n_bootstrap > 0:
        if stat.normal and stat.terms is not None:  # a mean: its exact standard error
            se = float(np.std(stat.terms, ddof=1)) / math.sqrt(n)
            stderr = math.sqrt(se**2 + stat.extra_variance)
            half = NormalDist().inv_cdf(0.5 + confidence / 2) * stderr
            ci = (value - half, value + half)
        else:
            boot = stat.batch(_bootstrap_weights(n, n_bootstrap, gen))
            stderr = float(np.std(boot, ddof=1)) if n_bootstrap > 1 else 0.0
            ci = _interval(boot, confidence)
            if stat.extra_variance > 0.0:
                stderr, ci = _widened(value, stderr, ci, stat.extra_variance, confidence)
        if clip:  # the estimand lies in [0, H_max]: intersecting keeps coverage
            # hmax is rounded up (a cap on upper ends); a lower end capped there would sit a
            # few ulps above a truth of exactly H_max, so cap it a little below instead
            ci = (min(max(ci[0], 0.0), hmax * (1.0 - 4e-15)), max(min(ci[1], hmax), 0.0))
    else:
        flags.append("no_bootstrap")
    if not math.isfinite(value):  # never hand back a silent NaN
        raise ValidationError(
            f"method={method!r} produced a non-finite estimate on this input; "
            "check for constant features or use method='knn'"
        )
    params = dict(stat.params)
    if not (-1e-12 <= value <= hmax + 1e-12):
        flags.append("out_of_range")
        if clip:  # the estimand lies in [0, H_max]: project onto it, keep the raw value
            params["unclipped_value"] = value
            value = min(max(value, 0.0), hmax)
    if omega == "tsallis":
        params["alpha"] = alpha
    return Estimate(
        value=value,
        stderr=stderr,
        ci=ci,
        n_samples=n,
        omega=omega,
        method=method,
        params=params,
        flags=tuple(dict.fromkeys(flags)),
        confidence=confidence,
        units=units(omega),
        assumption=ASSUMPTIONS.get(method.split(":")[0], ""),
    )


def conditional_entropy(
    z: Any,
    y: Any,
    *,
    omega: str = "shannon",
    method: str = DEFAULT_METHOD,
    random_state: Any = None,
    confidence: float = 0.95,
    n_bootstrap: int = 200,
    alpha: float = 1.5,
    n_classes: int | None = None,
    **method_params: Any,
) -> Estimate:
    """Estimate the generalized conditional entropy ``H_Ω(Y|Z) = E_z H_Ω(q(·|z))``.

    Parameters
    ----------
    z : array of shape (n_samples, n_features), or integer codes of shape (n_samples,)
        Features (float) or discrete codes.
    y : array of shape (n_samples,)
        Integer labels in ``0..n_classes-1``.
    omega : {"shannon", "squared", "sparsemax", "tsallis", "zero_one"}
        Which entropy: Shannon (nats), half the Gini impurity, Tsallis (``alpha``),
        or the Bayes error.
    method : {"auto", "gaussian", "knn", "plugin", "quantized", "ksg", "probe"}
        Estimator; see ``docs/estimators.md`` for each one's assumption, bias and cost.
        ``auto`` (default): held-out score of a cross-fitted head selected inside the
        fitting folds, debiased by a two-point learning curve.
    random_state : None, int or numpy Generator
        Seeds the cross-fitting split and the bootstrap.
    confidence : float
        Level of the interval (percentile bootstrap; normal for ``auto``, see
        :class:`Estimate`).
    n_bootstrap : int
        Bootstrap resamples (0: no interval; ``auto`` needs none, any positive value
        gives its interval).
    alpha : float
        Tsallis order (``omega="tsallis"`` only), > 1.
    n_classes : int, optional
        Number of classes when some classes are absent from ``y``.
    **method_params
        ``heads``/``n_folds``/``debias``/``eps`` (auto),
        ``k`` (knn, ksg), ``n_cells`` (quantized), ``miller_madow`` (plugin, quantized),
        ``covariance``/``shrinkage`` (gaussian), ``C`` (probe), ``correction`` (knn),
        ``device`` (knn, ksg).

    Returns
    -------
    Estimate

    Examples
    --------
    >>> import numpy as np
    >>> codes = np.array([0, 0, 1, 1] * 50)
    >>> labels = np.array([0, 1, 1, 1] * 50)
    >>> est = conditional_entropy(codes, labels, method="plugin", random_state=0)
    >>> round(est.value, 4)  # half the cells are fair coins: 0.5 * log 2
    0.3466
    >>> est.units
    'nats'
    """
    confidence, n_bootstrap = _common_checks(confidence, n_bootstrap)
    gen = rng(random_state)
    stat, n, k = _statistic(z, y, omega, method, alpha, n_classes, gen, method_params)
    return _finish(stat, n, k, omega, method, alpha, gen, confidence, n_bootstrap)


def entropy(
    y: Any,
    *,
    omega: str = "shannon",
    alpha: float = 1.5,
    n_classes: int | None = None,
    random_state: Any = None,
    confidence: float = 0.95,
    n_bootstrap: int = 200,
) -> Estimate:
    """Plug-in generalized entropy ``H_Ω(Y)`` of the label marginal.

    Parameters
    ----------
    y : array-like of shape (n_samples,)
        Integer labels.
    omega : str
        A registered regularizer name (:data:`estimators.OMEGAS`).
    alpha : float
        ``tsallis`` only: the entropic index.
    n_classes : int, optional
        ``K`` (by default ``max(y) + 1``).
    random_state : None, int or Generator
        Seeds the bootstrap.
    confidence : float
        Level of the bootstrap interval.
    n_bootstrap : int
        Resamples (0: no interval).

    Returns
    -------
    Estimate
        Method ``plugin``, in nats for ``shannon``.

    Examples
    --------
    >>> import numpy as np
    >>> round(entropy(np.array([0, 1] * 10), n_bootstrap=0).value, 6)
    0.693147
    """
    labels = np.asarray(y)
    return conditional_entropy(
        np.zeros(len(labels), dtype=np.int64),
        labels,
        omega=omega,
        method="plugin",
        alpha=alpha,
        n_classes=n_classes,
        random_state=random_state,
        confidence=confidence,
        n_bootstrap=n_bootstrap,
    )


def mutual_information(
    z: Any,
    y: Any,
    *,
    omega: str = "shannon",
    method: str = DEFAULT_METHOD,
    random_state: Any = None,
    confidence: float = 0.95,
    n_bootstrap: int = 200,
    alpha: float = 1.5,
    n_classes: int | None = None,
    **method_params: Any,
) -> Estimate:
    """``I_Ω(Z;Y) = H_Ω(Y) − H_Ω(Y|Z)`` (Shannon mutual information for ``shannon``).

    The bootstrap resamples ``H_Ω(Y)`` and ``H_Ω(Y|Z)`` together.

    Parameters
    ----------
    z : array-like of shape (n_samples, n_features)
        Features or discrete codes.
    y : array-like of shape (n_samples,)
        Integer labels.
    omega, alpha, n_classes
        The regularizer (``alpha`` for ``tsallis``) and ``K`` (default ``max(y) + 1``).
    method, **method_params
        Estimator and its options (``auto`` by default; see :func:`conditional_entropy`).
    random_state, confidence, n_bootstrap
        Seed of the cross-fitting split and bootstrap, interval level, resamples (0: none).

    Returns
    -------
    Estimate
        ``I_Ω(Z;Y)``, in nats for ``shannon``.

    Examples
    --------
    >>> import numpy as np
    >>> codes = np.array([0, 1] * 100)
    >>> est = mutual_information(codes, codes, method="plugin", n_bootstrap=0)
    >>> round(est.value, 6)  # Y = Z: all of H(Y) = log 2
    0.693147
    """
    confidence, n_bootstrap = _common_checks(confidence, n_bootstrap)
    gen = rng(random_state)
    stat, n, k = _statistic(z, y, omega, method, alpha, n_classes, gen, method_params)
    labels = check_labels(y, n, n_classes)[0]

    def h_y(w: np.ndarray) -> float:
        p = np.bincount(labels, weights=w, minlength=k) / w.sum()
        return float(generalized_entropy(p, omega=omega, alpha=alpha))

    mi = Statistic(
        func=lambda w: h_y(w) - stat(w),
        params=stat.params,
        flags=stat.flags,
        extra_variance=stat.extra_variance,
    )
    est = _finish(mi, n, k, omega, method, alpha, gen, confidence, n_bootstrap, clip=False)
    flags = tuple(f for f in est.flags if f != "out_of_range")
    if est.value < -1e-12 or est.value > max_entropy(k, omega=omega, alpha=alpha) + 1e-12:
        flags += ("out_of_range",)
    return Estimate(**{**est.__dict__, "flags": flags})


def information_loss(
    z_before: Any,
    z_after: Any,
    y: Any,
    *,
    omega: str = "shannon",
    method: str = DEFAULT_METHOD,
    random_state: Any = None,
    confidence: float = 0.95,
    n_bootstrap: int = 200,
    alpha: float = 1.5,
    n_classes: int | None = None,
    **method_params: Any,
) -> Estimate:
    """``Δ = H_Ω(Y|Z_after) − H_Ω(Y|Z_before)`` with a **paired** bootstrap interval.

    Both layers are estimated on the same samples with the same cross-fitting split, and
    every bootstrap resample is applied to both, so the interval is that of the
    difference. ``Δ >= 0`` in truth when ``Z_after`` is a function of ``Z_before``; the
    flag ``dpi_violation`` is set when the whole interval lies below zero.

    Parameters
    ----------
    z_before : array-like of shape (n_samples, n_features_before)
        Features (or codes) of the earlier layer.
    z_after : array-like of shape (n_samples, n_features_after)
        Features of the later layer, same samples.
    y : array-like of shape (n_samples,)
        Integer labels.
    omega, alpha, n_classes
        The regularizer (``alpha`` for ``tsallis``) and ``K`` (default ``max(y) + 1``).
    method, **method_params
        Estimator and its options (``auto`` by default; see :func:`conditional_entropy`).
    random_state, confidence, n_bootstrap
        Seed of the cross-fitting split and bootstrap, interval level, resamples (0: none).

    Returns
    -------
    Estimate
        ``Δ`` with its paired interval; flag ``dpi_violation`` when it lies below zero.

    Examples
    --------
    >>> import numpy as np
    >>> z0 = np.array([0, 1, 2, 3] * 50)
    >>> y = np.array([0, 1, 1, 0] * 50)
    >>> loss = information_loss(z0, z0 // 2, y, method="plugin", random_state=0)
    >>> round(loss.value, 6)  # merging the cells makes every cell a fair coin
    0.693147
    """
    confidence, n_bootstrap = _common_checks(confidence, n_bootstrap)
    seed = int(rng(random_state).integers(2**63 - 1))
    before, n, k = _statistic(
        z_before, y, omega, method, alpha, n_classes, np.random.default_rng(seed), method_params
    )
    after, n2, _ = _statistic(
        z_after, y, omega, method, alpha, k, np.random.default_rng(seed), method_params
    )
    if n2 != n:
        raise ValidationError(
            f"z_before and z_after must have the same n_samples (got {n} and {n2})"
        )
    diff = Statistic(
        func=lambda w: after(w) - before(w),
        terms=(after.terms - before.terms)
        if after.terms is not None and before.terms is not None
        else None,
        params=after.params,
        flags=tuple(dict.fromkeys(before.flags + after.flags)),
        # the two layers' heads differ: their fluctuations add (ignoring their covariance
        # widens the interval, so dpi_violation stays a conservative flag)
        extra_variance=before.extra_variance + after.extra_variance,
        normal=before.normal and after.normal,
    )
    gen = np.random.default_rng(seed + 1)
    est = _finish(diff, n, k, omega, method, alpha, gen, confidence, n_bootstrap, clip=False)
    return _loss_flags(est, max_entropy(k, omega=omega, alpha=alpha))


def paired_difference(
    terms_after: Any,
    terms_before: Any,
    *,
    omega: str = "shannon",
    n_classes: int,
    alpha: float = 1.5,
    random_state: Any = None,
    confidence: float = 0.95,
    n_bootstrap: int = 200,
    extra_variance: float = 0.0,
) -> Estimate:
    """Information loss from per-sample terms of two layers scored on the same samples.

    ``terms_after`` and ``terms_before`` are the per-sample terms of an estimator whose
    value is their mean (e.g. the ``auto`` terms returned by
    :func:`estimators.certified.estimate_and_bound`, computed with the same
    ``random_state`` so that samples and folds coincide). The estimate is the mean
    difference, with a paired bootstrap interval; ``dpi_violation`` is set when the whole
    interval lies below zero.

    Parameters
    ----------
    terms_after, terms_before : array-like of shape (n_samples,)
        Per-sample terms of the later and the earlier layer.
    omega : str
    n_classes : int
        ``K``; the interval is clipped to ``[−H_max, H_max]``.
    alpha : float
        ``tsallis`` only.
    random_state : None, int or Generator
        Seeds the bootstrap.
    confidence : float
        Level of the bootstrap interval.
    n_bootstrap : int
        Resamples (0: no interval).
    extra_variance : float
        Variance of the difference that resampling the terms does not see, added to the
        interval: for ``auto`` terms, the sum of both estimates'
        ``params["head_variance"]``.

    Returns
    -------
    Estimate
        Method ``paired``; flag ``dpi_violation`` when the interval lies below zero.

    Examples
    --------
    >>> import numpy as np
    >>> d = paired_difference(np.array([0.5, 0.7, 0.6]), np.array([0.4, 0.5, 0.6]),
    ...                       n_classes=2, n_bootstrap=0)
    >>> round(d.value, 6)
    0.1
    """
    confidence, n_bootstrap = _common_checks(confidence, n_bootstrap)
    after = np.asarray(terms_after, dtype=np.float64)
    before = np.asarray(terms_before, dtype=np.float64)
    if after.shape != before.shape or after.ndim != 1:
        raise ValidationError(
            "terms_after and terms_before must be 1-D with the same length (one term per "
            f"sample; got shapes {after.shape} and {before.shape})"
        )
    check_omega(omega, alpha)
    extra_variance = check_float(
        "extra_variance", extra_variance, low=0.0, high=math.inf, inclusive=True
    )
    stat = Statistic(
        terms=after - before,
        params={"paired": True, "head_variance": extra_variance},
        extra_variance=extra_variance,
    )
    gen = rng(random_state)
    est = _finish(stat, len(after), n_classes, omega, "paired", alpha, gen, confidence,
                  n_bootstrap, clip=False)  # fmt: skip
    return _loss_flags(est, math.inf)


def _loss_flags(est: Estimate, hmax: float) -> Estimate:
    """Set an information loss's flags.

    ``out_of_range`` past ``±hmax``; ``dpi_violation`` when the whole interval lies below 0.
    """
    flags = [f for f in est.flags if f != "out_of_range"]
    if abs(est.value) > hmax + 1e-12:
        flags.append("out_of_range")
    if est.ci is not None and est.ci[1] < 0:
        flags.append("dpi_violation")
    return Estimate(**{**est.__dict__, "flags": tuple(flags)})

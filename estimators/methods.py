"""The estimation methods.

Each returns a :class:`Statistic`: a function of bootstrap weights (one non-negative
weight per sample) whose value at unit weights is the estimate.

Methods whose estimate is a mean of per-sample terms (``knn``, ``ksg``, ``gaussian``,
``probe``) give those terms; count-based methods (``plugin``, ``quantized``) recompute
weighted counts. Nuisance fits (neighbours, k-means, Gaussians, probes) are made once,
so the bootstrap reflects sampling noise given the fitted nuisance.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.special import digamma

from estimators._validation import check_float, check_int
from estimators.cells import cell_counts, kmeans_cells
from estimators.entropies import generalized_entropy, scoring_rule
from estimators.errors import ValidationError
from estimators.neighbors import count_within, knn_search

__all__ = ["Statistic", "METHODS", "ASSUMPTIONS", "auto_statistic", "two_folds"]


@dataclass(frozen=True)
class Statistic:
    """``terms`` (per-sample) or ``func`` (weights -> value); ``params`` as resolved.

    ``extra_variance``: variance of the value that resampling the samples does not see
    (the ``auto`` heads' own fluctuation, :func:`estimators.heads.head_variance`); the
    interval adds it to the bootstrap's.

    ``normal``: the value is the plain mean of ``terms``, and the interval is the normal
    one with that mean's exact standard error (the bootstrap's limit, without its Monte
    Carlo noise) plus ``extra_variance``.
    """

    terms: np.ndarray | None = None
    func: Callable[[np.ndarray], float] | None = None
    ci_terms: np.ndarray | None = None
    params: dict[str, Any] = field(default_factory=dict)
    flags: tuple[str, ...] = ()
    extra_variance: float = 0.0
    normal: bool = False

    def __call__(self, weights: np.ndarray) -> float:
        """Return the statistic's value at the bootstrap ``weights``."""
        if self.terms is not None:
            return float(np.dot(weights, self.terms) / weights.sum())
        assert self.func is not None
        return self.func(weights)

    def batch(self, weights: np.ndarray) -> np.ndarray:
        """Values for a ``(n_bootstrap, n_samples)`` matrix of weights.

        With ``ci_terms`` (influence-function terms), the bootstrap distribution is that of
        their weighted mean, recentred on the point estimate.
        """
        if self.ci_terms is not None:
            shift = (weights @ self.ci_terms) / weights.sum(1) - self.ci_terms.mean()
            return self(np.ones(weights.shape[1])) + shift
        if self.terms is not None:
            return (weights @ self.terms) / weights.sum(1)
        return np.array([self(w) for w in weights])


def two_folds(n_samples: int, rng: np.random.Generator) -> np.ndarray:
    """Return a random split into two halves: fold index (0 or 1) per sample."""
    fold = np.zeros(n_samples, dtype=np.int64)
    fold[rng.permutation(n_samples)[n_samples // 2 :]] = 1
    return fold


def _counts(codes: np.ndarray, y: np.ndarray, w: np.ndarray, n_cells: int, n_classes: int):
    return cell_counts(codes, y, n_cells, n_classes, w)


def _plugin_value(counts: np.ndarray, omega: str, alpha: float, miller_madow: bool) -> float:
    n_c = counts.sum(1)
    keep = n_c > 0
    c, n_c = counts[keep], n_c[keep]
    total = n_c.sum()
    h = generalized_entropy(c / n_c[:, None], omega=omega, alpha=alpha)
    value = float(np.sum(n_c * h) / total)
    if miller_madow:
        m_c = (c > 0).sum(1)
        value += float(np.sum((m_c - 1) / 2.0) / total)
    return value


def _encode(z: np.ndarray, discrete: bool) -> np.ndarray:
    if discrete:
        return np.unique(z, return_inverse=True)[1].ravel()
    return np.unique(z, axis=0, return_inverse=True)[1].ravel()


# ---------------------------------------------------------------------------


def plugin(
    z: np.ndarray,
    y: np.ndarray,
    *,
    discrete: bool,
    n_classes: int,
    omega: str,
    alpha: float,
    rng: np.random.Generator,
    miller_madow: bool = False,
) -> Statistic:
    """Plug-in on discrete codes (2-D features: identical rows form a cell)."""
    if miller_madow and omega != "shannon":
        raise ValidationError(
            f"miller_madow applies to omega='shannon' only (got omega={omega!r}); "
            "drop miller_madow=True"
        )
    if not discrete and not np.all(z == np.round(z)):
        raise ValidationError(
            "method='plugin' needs discrete codes, but z holds continuous (non-integer) "
            f"features of shape {z.shape}: every point would be its own cell and the estimate "
            "would be 0. Quantize first (method='quantized', or integer codes of shape "
            "(n_samples,)), or use method='auto'"
        )
    codes = _encode(z, discrete)
    n_cells = int(codes.max()) + 1
    flags = ("small_sample",) if len(y) < 5 * n_cells else ()

    def func(w: np.ndarray) -> float:
        return _plugin_value(_counts(codes, y, w, n_cells, n_classes), omega, alpha, miller_madow)

    return Statistic(
        func=func, params={"miller_madow": miller_madow, "n_cells": n_cells}, flags=flags
    )


def quantized(
    z: np.ndarray,
    y: np.ndarray,
    *,
    discrete: bool,
    n_classes: int,
    omega: str,
    alpha: float,
    rng: np.random.Generator,
    n_cells: int = 32,
    miller_madow: bool = False,
) -> Statistic:
    """Plug-in on k-means codes; each half is coded by k-means fitted on the other half."""
    n = len(y)
    n_cells = check_int(
        "n_cells", n_cells, low=1, high=n // 2 + 1, hint="k-means is fitted on half of the samples"
    )
    fold = two_folds(n, rng)
    codes = np.empty(n, dtype=np.int64)
    for f in (0, 1):
        km = kmeans_cells(z[fold != f], n_cells, rng)
        codes[fold == f] = km.predict(z[fold == f])

    def func(w: np.ndarray) -> float:
        vals, wts = [], []
        for f in (0, 1):
            m = fold == f
            counts = _counts(codes[m], y[m], w[m], n_cells, n_classes)
            vals.append(_plugin_value(counts, omega, alpha, miller_madow))
            wts.append(w[m].sum())
        return float(np.dot(vals, wts) / np.sum(wts))

    flags = ("small_sample",) if n < 10 * n_cells else ()
    return Statistic(
        func=func, params={"n_cells": n_cells, "miller_madow": miller_madow}, flags=flags
    )


def _local_entropy(freq_counts: np.ndarray, k: int, omega: str, alpha: float, correct: bool):
    """Entropy of neighbour label frequencies, with the local finite-sample correction."""
    p = freq_counts / k
    h = generalized_entropy(p, omega=omega, alpha=alpha)
    if not correct or k < 2:
        return h
    if omega in ("squared", "sparsemax"):
        return h * k / (k - 1.0)  # unbiased Gini for a multinomial sample of size k
    if omega == "tsallis" and alpha == 2.0:
        return h * k / (k - 1.0)
    if omega == "shannon":
        return h + ((freq_counts > 0).sum(1) - 1) / (2.0 * k)  # Miller–Madow
    return h


def knn(
    z: np.ndarray,
    y: np.ndarray,
    *,
    discrete: bool,
    n_classes: int,
    omega: str,
    alpha: float,
    rng: np.random.Generator,
    k: int = 20,
    correction: bool = True,
    device: Any = None,
) -> Statistic:
    """Cross-fitted kNN posterior: neighbours of each point are taken in the other half."""
    n = len(y)
    half = n // 2
    k = check_int(
        "k",
        k,
        low=1,
        high=half + 1,
        hint=f"neighbours come from the other half of the n_samples={n} points",
    )
    fold = two_folds(n, rng)
    terms, score = np.empty(n), np.empty(n)
    for f in (0, 1):
        q_idx, d_idx = np.flatnonzero(fold == f), np.flatnonzero(fold != f)
        _, nbr = knn_search(z[q_idx], z[d_idx], k, device=device)
        labels = y[d_idx][nbr]  # (n_q, k)
        counts = np.zeros((len(q_idx), n_classes))
        np.add.at(counts, (np.repeat(np.arange(len(q_idx)), k), labels.ravel()), 1.0)
        terms[q_idx] = _local_entropy(counts, k, omega, alpha, correction)
        # influence terms: scoring rule of the (Krichevsky–Trofimov smoothed) neighbour posterior
        smooth = (counts + 0.5) / (k + 0.5 * n_classes)
        score[q_idx] = scoring_rule(smooth, y[q_idx], omega=omega, alpha=alpha)
    return Statistic(terms=terms, ci_terms=score, params={"k": k, "correction": correction})


def ksg(
    z: np.ndarray,
    y: np.ndarray,
    *,
    discrete: bool,
    n_classes: int,
    omega: str,
    alpha: float,
    rng: np.random.Generator,
    k: int = 5,
    device: Any = None,
) -> Statistic:
    """Ross (2014) mixed discrete/continuous MI; ``H(Y|Z) = H(Y) − I(Z;Y)``."""
    if omega != "shannon":
        raise ValidationError(
            f"method='ksg' estimates Shannon mutual information only (got omega={omega!r}); "
            "use method='knn' or 'gaussian' for other omegas"
        )
    n = len(y)
    class_counts = np.bincount(y, minlength=n_classes)
    small = int(class_counts[class_counts > 0].min())
    k = check_int(
        "k",
        k,
        low=1,
        high=small,
        hint=f"each class needs more than k samples (smallest class has {small})",
    )
    radius2 = np.empty(n)
    z = z - z.mean(0)  # distances are translation invariant; centred, they round less
    for c in np.flatnonzero(class_counts):
        idx = np.flatnonzero(y == c)
        d2, _ = knn_search(z[idx], z[idx], k, exclude_self=True, device=device)
        radius2[idx] = d2[:, -1]
    # the k-th neighbour lies *on* the radius: widen it by the rounding error of the
    # |q|² − 2q·x + |x|² distances count_within uses, so that neighbour is always counted
    sq = (z * z).sum(1)
    slack = 64 * np.finfo(np.float64).eps * (sq + sq.max())
    m = count_within(z, z, radius2 + slack, device=device) - 1  # exclude the point itself
    m = np.maximum(m, k)
    prior = class_counts / n
    terms_i = digamma(n) + digamma(k) - digamma(class_counts[y]) - digamma(m)
    terms = -np.log(prior[y]) - terms_i
    return Statistic(terms=terms, params={"k": k})


def _gaussian_posterior(
    z_fit: np.ndarray,
    y_fit: np.ndarray,
    z_eval: np.ndarray,
    n_classes: int,
    covariance: str,
    shrinkage: float | None,
) -> np.ndarray:
    from scipy.special import logsumexp
    from sklearn.covariance import ledoit_wolf

    from estimators.heads import jittered

    d = z_fit.shape[1]
    log_lik = np.full((len(z_eval), n_classes), -np.inf)
    counts = np.bincount(y_fit, minlength=n_classes)
    means = {c: z_fit[y_fit == c].mean(0) for c in np.flatnonzero(counts)}

    def shrunk(x: np.ndarray) -> np.ndarray:
        if shrinkage is None:
            cov, _ = ledoit_wolf(x, assume_centered=True)
        else:
            emp = x.T @ x / max(1, len(x))
            mu = np.trace(emp) / d
            cov = (1 - shrinkage) * emp + shrinkage * mu * np.eye(d)
        return jittered(cov)

    if covariance == "shared":
        resid = np.concatenate([z_fit[y_fit == c] - means[c] for c in means])
        covs = dict.fromkeys(means, shrunk(resid))
    else:
        covs = {c: shrunk(z_fit[y_fit == c] - means[c]) for c in means}
    for c in means:
        chol = np.linalg.cholesky(covs[c])
        sol = np.linalg.solve(chol, (z_eval - means[c]).T)
        logdet = 2 * np.sum(np.log(np.diag(chol)))
        log_lik[:, c] = -0.5 * np.sum(sol * sol, 0) - 0.5 * logdet + np.log(counts[c] / len(y_fit))
    return np.exp(log_lik - logsumexp(log_lik, axis=1, keepdims=True))


def gaussian(
    z: np.ndarray,
    y: np.ndarray,
    *,
    discrete: bool,
    n_classes: int,
    omega: str,
    alpha: float,
    rng: np.random.Generator,
    covariance: str = "shared",
    shrinkage: float | None = None,
    debias: bool = False,
) -> Statistic:
    """Class-conditional Gaussians (Ledoit–Wolf shrinkage by default), cross-fitted.

    The point estimate is the plug-in mean of ``H(q̂(·|z_i))`` over held-out points. The
    interval comes from the influence-function terms ``S(q̂(·|z_i), y_i) =
    H(q̂) + <∇H(q̂), e_{y_i} − q̂>`` (the proper scoring rule of ``H``), which carry the
    label noise and the error of the fitted posterior. ``debias=True`` uses their mean
    as the point estimate instead (first-order debiased, slightly upward in high dimension).
    """
    if covariance not in ("shared", "per_class"):
        raise ValidationError(f"covariance must be 'shared' or 'per_class' (got {covariance!r})")
    if shrinkage is not None:
        shrinkage = check_float("shrinkage", shrinkage, low=0.0, high=1.0, inclusive=True)
    fold = two_folds(len(y), rng)
    plug, score = np.empty(len(y)), np.empty(len(y))
    for f in (0, 1):
        post = _gaussian_posterior(
            z[fold != f], y[fold != f], z[fold == f], n_classes, covariance, shrinkage
        )
        plug[fold == f] = generalized_entropy(post, omega=omega, alpha=alpha)
        score[fold == f] = scoring_rule(post, y[fold == f], omega=omega, alpha=alpha)
    return Statistic(
        terms=score if debias else plug,
        ci_terms=None if debias else score,
        params={"covariance": covariance, "shrinkage": shrinkage, "debias": debias},
    )


def probe(
    z: np.ndarray,
    y: np.ndarray,
    *,
    discrete: bool,
    n_classes: int,
    omega: str,
    alpha: float,
    rng: np.random.Generator,
    C: float = 1.0,
    max_iter: int = 500,
) -> Statistic:
    """Cross-fitted multinomial logistic probe; held-out loss is an *upper* estimate."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    C = check_float("C", C, low=0.0, high=np.inf)
    fold = two_folds(len(y), rng)
    terms = np.empty(len(y))
    for f in (0, 1):
        fit, ev = fold != f, fold == f
        seen = np.unique(y[fit])
        if len(seen) < 2:
            raise ValidationError(
                f"method='probe': a fitting fold holds only class {int(seen[0])} "
                f"({int(fit.sum())} rows), and a logistic probe needs two classes to fit; use "
                "more rows of the rare classes, or method='auto' (which handles it)"
            )
        scaler = StandardScaler().fit(z[fit])
        clf = LogisticRegression(C=C, max_iter=max_iter)
        clf.fit(scaler.transform(z[fit]), y[fit])
        proba = np.zeros((int(ev.sum()), n_classes))
        proba[:, clf.classes_] = clf.predict_proba(scaler.transform(z[ev]))
        terms[ev] = scoring_rule(proba, y[ev], omega=omega, alpha=alpha)
    return Statistic(terms=terms, params={"C": C}, flags=("upper_estimate",))


def auto(
    z: np.ndarray,
    y: np.ndarray,
    *,
    discrete: bool,
    n_classes: int,
    omega: str,
    alpha: float,
    rng: np.random.Generator,
    heads: Any = None,
    n_folds: int = 2,
    debias: bool = True,
    eps: float = 1e-3,
) -> Statistic:
    """Held-out score of a head selected inside the fitting folds (THEORY §5.3).

    Two folds; in each, heads from :mod:`estimators.heads` are fitted on the other fold,
    one is selected (and temperature-calibrated) on an inner split, and it scores the
    held-out fold with the proper scoring rule of ``H_Ω``. The mean held-out score is an
    upper estimate: it exceeds ``H_Ω(Y|Z)`` by the head's excess risk. With
    ``debias=True`` (default) that excess is removed to first order by a two-point
    learning curve: the chosen head is refitted on half of its fitting data, and the
    per-sample terms are ``2 S_n − S_{n/2}`` (Richardson extrapolation of an excess risk
    that falls as ``1/n``, as it does for parametric heads). When a fold chose a kNN head
    (whose excess risk does not fall as ``1/n``), or the half-size head is much worse
    (correction above half the debiased value: too few samples per parameter for the
    ``1/n`` regime), the plain held-out score is kept and flagged ``upper_estimate``.
    The debiased estimate's interval also carries the heads' own fluctuation under the
    same model (:func:`estimators.heads.head_variance`,
    ``params["head_variance"]``), which the bootstrap of the terms does not see.
    """
    from estimators._validation import check_folds
    from estimators.heads import DEFAULT_HEADS, cross_fit

    n_folds = check_folds(n_folds, y, n_classes)
    eps = check_float("eps", eps, low=0.0, high=1.0)
    fit = cross_fit(
        z,
        y,
        n_classes=n_classes,
        omega=omega,
        alpha=alpha,
        eps=eps,
        n_folds=n_folds,
        heads=tuple(heads) if heads is not None else DEFAULT_HEADS,
        learning_curve=debias,
        random_state=rng,
    )
    return auto_statistic(fit, eps=eps)


def auto_statistic(fit: Any, *, eps: float) -> Statistic:
    """Return the ``auto`` terms of a :class:`~estimators.heads.CrossFit`.

    Debiased when the learning curve applies, otherwise the plain held-out scores flagged
    ``upper_estimate``.
    """
    from estimators.heads import debiased_terms, head_variance

    terms, applied = debiased_terms(fit)
    chosen = [{"name": h.name, **h.params} for h in fit.heads]
    var = head_variance(fit, applied)
    return Statistic(
        terms=terms,
        params={
            "heads": chosen,
            "n_folds": len(fit.heads),
            "debias": applied,
            "eps": eps,
            "head_variance": var,
        },
        flags=() if applied else ("upper_estimate",),
        extra_variance=var,
        normal=True,
    )


METHODS: dict[str, Callable[..., Statistic]] = {
    "auto": auto,
    "plugin": plugin,
    "quantized": quantized,
    "knn": knn,
    "ksg": ksg,
    "gaussian": gaussian,
    "probe": probe,
}


ASSUMPTIONS: dict[str, str] = {
    "auto": (
        "the selected head's excess risk falls as 1/n (parametric heads), so the two-point "
        "learning curve removes it; otherwise the estimate stays above H by the remaining "
        "excess risk. The interval covers the sampling noise of the held-out terms and, "
        "under the same 1/n model, the fluctuation of the fitted heads; not the heads' "
        "approximation error"
    ),
    "plugin": "discrete codes with many samples per cell (empirical frequencies near the truth)",
    "quantized": (
        "the k-means cells lose little information (biased up when cells merge classes, "
        "down when cells are sparsely filled)"
    ),
    "knn": (
        "the posterior is smooth at the scale of the k-th neighbour; biased upward from "
        "n_features >= 8"
    ),
    "ksg": "densities smooth at the scale of the k-th neighbour (Ross 2014); shannon only",
    "gaussian": (
        "class-conditional Gaussian features (shared or per-class covariance); biased when "
        "classes are not Gaussian (warped or real features)"
    ),
    "probe": "a logistic posterior; the held-out log loss exceeds H by the probe's excess risk",
}

"""Bounds: the data floor, the deterministic range, validation and frozen-feature bounds.

Bounds take arrays, estimates and risks, never models. Every bound is a frozen
:class:`Bound` recording its value, terms, ``delta`` (probabilistic bounds), assumptions
and the data it used; :meth:`Bound.check` compares it with a risk measured on data it did
not use (THEORY §6.4).

Examples
--------
>>> b = validation_bound(0.0, 10_000, delta=0.1, n_candidates=10**9, method="bernstein",
...                      variance=1.0)
>>> round(b.terms["slack"], 4)
0.0694
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np
from scipy import stats

from clt_gen.errors import ValidationError, unknown_name_error
from clt_gen.pac_bayes import kl_inverse
from estimators import generalized_entropy
from estimators.cells import cell_counts, kmeans_cells

__all__ = [
    "Bound",
    "data_floor",
    "group_duplicates",
    "deterministic_range",
    "shannon_loss_cap",
    "validation_bound",
    "kl_inverse",
    "frozen_feature_bound",
    "mark_vacuous",
    "trivial_risks",
    "VALIDATION_METHODS",
]

VALIDATION_METHODS = ("hoeffding", "bernstein", "binomial", "kl", "empirical_bernstein")


@dataclass(frozen=True)
class Bound:
    """A bound on a quantity, with everything needed to judge it.

    Attributes
    ----------
    name : str
    kind : {"deterministic", "probabilistic", "estimate"}
        ``estimate``: built from a model-based estimate (no guarantee; say so when shown).
    quantity : str
        What is bounded, e.g. ``"risk"``, ``"error"``, ``"train_risk"``.
    side : {"upper", "lower"}
    value : float
    delta : float or None
        Failure probability (probabilistic bounds).
    terms : dict
        The pieces the value is made of.
    assumptions : tuple of str
    data_used : str
        Which split(s) the bound was computed from.
    checked_value, held : optional
        Filled by :meth:`check` with a value measured on disjoint data.
    vacuous : bool or None
        Filled by :func:`mark_vacuous`: the bound says nothing a trivial predictor's
        risk does not already say (e.g. an error bound ``>= 1 − 1/K``).
    """

    name: str
    kind: Literal["deterministic", "probabilistic", "estimate"]
    quantity: str
    side: Literal["upper", "lower"]
    value: float
    delta: float | None = None
    terms: dict[str, Any] = field(default_factory=dict)
    assumptions: tuple[str, ...] = ()
    data_used: str = ""
    checked_value: float | None = None
    checked_on: str | None = None
    held: bool | None = None
    vacuous: bool | None = None

    def check(self, measured: float, *, on: str) -> Bound:
        """Return a copy with the measured value and whether the bound held on it."""
        ok = (
            measured <= self.value + 1e-12
            if self.side == "upper"
            else measured >= self.value - 1e-12
        )
        return replace(self, checked_value=float(measured), checked_on=on, held=bool(ok))

    def to_dict(self) -> dict[str, Any]:
        """Return the bound as plain JSON types (the report's bound row)."""
        d = asdict(self)
        d["assumptions"] = list(self.assumptions)
        return d


def _check_delta(delta: float) -> float:
    if not (isinstance(delta, (int, float)) and 0.0 < delta < 1.0):
        raise ValidationError(f"delta must be a float in (0, 1) (got {delta!r}); 0.05 is usual")
    return float(delta)


def _check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValidationError(f"{name} must be an int >= 1 (got {value!r})")
    return int(value)


def trivial_risks(
    label_counts: np.ndarray, *, omega: str = "shannon", alpha: float = 1.5, p_min: float = 1e-4
) -> dict[str, float]:
    """Risks of the best constant predictor (the class frequencies), per bounded quantity.

    An upper bound at or above these says nothing the label frequencies alone do not:
    ``error`` ``1 − max_k p_k`` (at most ``1 − 1/K``), the ``risk`` of the loss ``omega``
    ``H_Ω(p)``, the Brier risk ``½(1 − Σ p_k²)``, and the bounded cross-entropy
    ``H(p)/ln(1/p_min)``.

    Examples
    --------
    >>> r = trivial_risks(np.array([50, 50]))
    >>> r["error"], round(r["risk"], 4), r["brier_risk"]
    (0.5, 0.6931, 0.25)
    """
    c = np.asarray(label_counts, dtype=np.float64)
    p = c / c.sum()
    h = float(generalized_entropy(p[None, :], omega=omega, alpha=alpha)[0])
    h_shannon = float(-(p[p > 0] * np.log(p[p > 0])).sum())
    err = float(1.0 - p.max())
    return {
        "error": err,
        "gibbs_error": err,
        "cell_head_error": err,
        "risk": h,
        "brier_risk": float(0.5 * (1.0 - (p**2).sum())),
        "cell_head_brier_risk": float(0.5 * (1.0 - (p**2).sum())),
        "gibbs_bounded_ce": h_shannon / math.log(1.0 / p_min),
    }


def mark_vacuous(bounds: Sequence[Bound], trivial: dict[str, float]) -> list[Bound]:
    """Return the bounds with ``vacuous`` set (THEORY §6: a bound must beat a constant).

    An upper bound is vacuous when its value is at least the best constant predictor's
    risk of the same quantity (:func:`trivial_risks`); a lower bound when it is at most 0.
    Quantities without a trivial reference are left ``None``.

    Examples
    --------
    >>> b = Bound("x", "probabilistic", "error", "upper", 0.95, 0.05)
    >>> mark_vacuous([b], {"error": 0.9})[0].vacuous
    True
    """
    out = []
    for b in bounds:
        if b.side == "lower":
            out.append(replace(b, vacuous=bool(b.value <= 0.0)))
        elif b.quantity in trivial:
            ref = trivial[b.quantity]
            out.append(
                replace(b, vacuous=bool(b.value >= ref), terms={**b.terms, "trivial_risk": ref})
            )
        else:
            out.append(b)
    return out


# ---------------------------------------------------------------------------
# §3 the data floor
# ---------------------------------------------------------------------------


def group_duplicates(inputs: np.ndarray) -> tuple[np.ndarray, int]:
    """Group identical rows by their exact bytes.

    Returns the group index of each row and the number of distinct rows.

    Examples
    --------
    >>> import numpy as np
    >>> group_duplicates(np.array([[1.0, 2.0], [0.0, 0.0], [1.0, 2.0]]))
    (array([1, 0, 1]), 2)
    """
    arr = np.ascontiguousarray(np.asarray(inputs).reshape(len(inputs), -1))
    rows = arr.view(np.dtype((np.void, arr.dtype.itemsize * arr.shape[1]))).ravel()
    _, inverse = np.unique(rows, return_inverse=True)
    inverse = inverse.ravel()
    return inverse, int(inverse.max()) + 1 if len(inverse) else 0


def _group_label_counts(
    inputs: np.ndarray, y: np.ndarray, n_classes: int, omega: str, alpha: float, eps: float
) -> tuple[np.ndarray, np.ndarray]:
    """Check the floor's arguments; the labels and the label counts per distinct input."""
    generalized_entropy(np.full((1, 2), 0.5), omega=omega, alpha=alpha)  # checks omega first
    y = np.asarray(y, dtype=np.int64)
    if len(y) != len(inputs) or len(y) == 0:
        raise ValidationError(
            f"inputs and y must be non-empty with one label per input (got {len(inputs)} "
            f"inputs and {len(y)} labels)"
        )
    if not 0.0 <= eps < 1.0:
        raise ValidationError(f"label_smoothing must be in [0, 1) (got {eps})")
    groups, n_groups = group_duplicates(inputs)
    counts = np.zeros((n_groups, n_classes))
    np.add.at(counts, (groups, y), 1.0)
    return y, counts


def data_floor(
    inputs: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    *,
    omega: str = "shannon",
    alpha: float = 1.5,
    label_smoothing: float = 0.0,
    train_risk: float | None = None,
    data_used: str = "train",
) -> Bound:
    """Model-agnostic lower bound on the empirical risk (THEORY §3).

    ``FLOOR = Σ_x (n_x/n) H_Ω(q̃(·|x))`` where ``q̃(·|x)`` is the mean smoothed target of the
    copies of input ``x`` (grouped by exact bytes). Every model's training risk under the
    same targets is ``>= FLOOR``. With ``train_risk`` the fitting error
    ``train_risk − FLOOR >= 0`` is recorded in ``terms``.

    Parameters
    ----------
    inputs : array of shape (n_samples, ...)
        The preprocessed training inputs (or frozen features).
    y : array of shape (n_samples,)
        Integer labels.
    n_classes : int
    omega : str
        A registered Fenchel–Young regularizer (the training loss).
    label_smoothing : float
        ``ε`` of the targets ``(1 − ε) e_y + ε/K``.
    alpha : float
        ``tsallis`` only: the entropic index.
    train_risk : float, optional
        The model's training risk under the same targets, for the fitting error.
    data_used : str
        Recorded in the bound (which data it was computed on).

    Returns
    -------
    Bound
        Kind ``"deterministic"``, side ``"lower"``, quantity ``"train_risk"``; ``terms``
        hold the group counts (and the fitting error with ``train_risk``).

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([[0.0], [0.0], [1.0]])
    >>> b = data_floor(x, np.array([0, 1, 1]), 2)
    >>> round(b.value, 6)  # two of three points share an input with opposite labels
    0.462098
    """
    y, counts = _group_label_counts(inputs, y, n_classes, omega, alpha, label_smoothing)
    n_groups = len(counts)
    n_x = counts.sum(1)
    cond = counts / n_x[:, None]
    cond = (1.0 - label_smoothing) * cond + label_smoothing / n_classes
    h = generalized_entropy(cond, omega=omega, alpha=alpha)
    value = float(np.sum(n_x * h) / len(y))
    dup_groups = int(np.sum(n_x > 1))
    conflicting = int(np.sum((counts > 0).sum(1) > 1))
    terms: dict[str, Any] = {
        "n_samples": int(len(y)),
        "n_distinct_inputs": n_groups,
        "n_duplicate_groups": dup_groups,
        "n_conflicting_groups": conflicting,
        "label_smoothing": label_smoothing,
    }
    if train_risk is not None:
        terms["train_risk"] = float(train_risk)
        terms["fitting_error"] = float(train_risk) - value
    return Bound(
        name="data_floor",
        kind="deterministic",
        quantity="train_risk",
        side="lower",
        value=value,
        terms=terms,
        assumptions=("exact: holds for every model trained with these targets",),
        data_used=data_used,
    )


# ---------------------------------------------------------------------------
# §6.1 deterministic range
# ---------------------------------------------------------------------------


def shannon_loss_cap(scores: np.ndarray) -> float:
    """Return the largest cross-entropy the scores allow over the given inputs.

    That is ``log K + max_x (max_j ν_j(x) − min_j ν_j(x))``.
    """
    s = np.asarray(scores, dtype=np.float64)
    return float(np.log(s.shape[1]) + np.max(s.max(1) - s.min(1)))


def deterministic_range(
    *,
    train_risk: float,
    layer_entropies: dict[str, tuple[float, float]],
    loss_max: float,
    loss_cap: float | None = None,
    data_used: str = "",
) -> list[Bound]:
    """Return the range of THEORY §6.1 for the population risk, hence for the gap.

    ``max_l H_Ω(Y|Z_l) <= R_q(f) <= ℓ_max(f)``, so
    ``max_l H_Ω(Y|Z_l) − R_train <= gen(f) <= ℓ_max(f) − R_train``.

    Parameters
    ----------
    train_risk : float
    layer_entropies : dict
        Layer name -> ``(estimate, lower confidence limit)`` of ``H_Ω(Y|Z_l)`` on held-out
        data. The lower bound uses the largest lower confidence limit (conservative).
    loss_max : float
        Largest loss observed on the evaluated data.
    loss_cap : float, optional
        An analytic cap on the loss (``shannon``: :func:`shannon_loss_cap`); the upper
        bound uses ``max(loss_max, loss_cap)``.
    data_used : str
        Recorded in the bounds (which data they were computed on).

    Returns
    -------
    list of Bound
        ``risk_lower_entropy`` (an *estimated* lower limit of the test risk, kind
        ``"estimate"``) and ``risk_upper_lmax``.

    Examples
    --------
    >>> lo, hi = deterministic_range(train_risk=0.1, layer_entropies={"fc": (0.3, 0.25)},
    ...                              loss_max=2.0)
    >>> lo.name, lo.kind, lo.value  # the largest lower confidence limit (an estimate)
    ('risk_lower_entropy', 'estimate', 0.25)
    >>> hi.name, hi.value  # the largest observed loss
    ('risk_upper_lmax', 2.0)
    """
    if not layer_entropies:
        raise ValidationError("layer_entropies must hold at least one layer")
    best = max(layer_entropies, key=lambda k: layer_entropies[k][1])
    est, low = layer_entropies[best]
    lower = Bound(
        name="risk_lower_entropy",
        kind="estimate",
        quantity="risk",
        side="lower",
        value=float(low),
        terms={
            "layer": best,
            "H_estimate": float(est),
            "H_lower_ci": float(low),
            "train_risk": float(train_risk),
            "gap_lower": float(low) - float(train_risk),
        },
        assumptions=(
            "R_q(f) >= H_Ω(Y|Z) for every layer Z (exact)",
            "H_Ω(Y|Z) is estimated: the lower limit of its interval is used; H_Ω(Y|Z) cannot "
            "be certified from below (THEORY §5.0), so this is an estimate, not a certificate",
        ),
        data_used=data_used,
    )
    return [lower, _lmax_bound(train_risk, loss_max, loss_cap, data_used)]


def _lmax_bound(
    train_risk: float, loss_max: float, loss_cap: float | None, data_used: str
) -> Bound:
    """``R_q(f) <= ℓ_max(f)``: the largest observed loss, or the analytic cap if larger."""
    ceiling = max(loss_max, loss_cap) if loss_cap is not None else loss_max
    return Bound(
        name="risk_upper_lmax",
        kind="deterministic",
        quantity="risk",
        side="upper",
        value=float(ceiling),
        terms={
            "loss_max_observed": float(loss_max),
            "loss_cap": None if loss_cap is None else float(loss_cap),
            "train_risk": float(train_risk),
            "gap_upper": float(ceiling) - float(train_risk),
        },
        assumptions=(
            "R_q(f) <= sup loss (exact for the sup over all inputs)",
            "the sup is taken over the evaluated inputs; the shannon cap uses their score ranges",
        ),
        data_used=data_used,
    )


# ---------------------------------------------------------------------------
# §6.2 validation bounds
# ---------------------------------------------------------------------------


def _check_validation_args(
    risk: float, n_samples: int, delta: float, n_candidates: int, loss_range: float, method: str
) -> tuple[float, int, int, float]:
    if method not in VALIDATION_METHODS:
        raise unknown_name_error("method", method, VALIDATION_METHODS)
    delta = _check_delta(delta)
    m = _check_positive_int("n_samples", n_samples)
    n_f = _check_positive_int("n_candidates", n_candidates)
    if not (loss_range > 0 and math.isfinite(loss_range)):
        raise ValidationError(f"loss_range must be a float > 0 (got {loss_range!r})")
    if not (0.0 <= risk <= loss_range + 1e-12):
        raise ValidationError(
            f"risk must lie in [0, loss_range] = [0, {loss_range}] (got {risk!r}); clip the "
            "loss at loss_range or certify the 0-1 error instead"
        )
    if method in ("binomial", "kl") and loss_range != 1.0:
        raise ValidationError(
            f"method={method!r} certifies the 0-1 error: loss_range must be 1 (got {loss_range})"
        )
    return delta, m, n_f, float(loss_range)


def _slack(
    method: str,
    m: int,
    n_f: int,
    delta: float,
    c: float,
    variance: float | None,
    terms: dict[str, Any],
    assumptions: list[str],
) -> float:
    """Slack of the Hoeffding, Bernstein or empirical Bernstein bound."""
    log_term = math.log(n_f / delta)
    if method == "hoeffding":
        return c * math.sqrt(log_term / (2 * m))
    if method == "bernstein":
        var = c * c / 4.0 if variance is None else float(variance)
        terms["variance_bound"] = var
        assumptions.append(f"loss variance <= {var}")
        return 2 * c * log_term / (3 * m) + math.sqrt(2 * var * log_term / m)
    if variance is None:
        raise ValidationError(
            "method='empirical_bernstein' needs variance= the sample variance of the "
            "held-out losses"
        )
    if m < 2:
        raise ValidationError("empirical_bernstein needs n_samples >= 2")
    lt = math.log(2 * n_f / delta)
    terms["sample_variance"] = float(variance)
    return math.sqrt(2 * float(variance) * lt / m) + 7 * c * lt / (3 * (m - 1))


def _binary_value(
    method: str, risk: float, m: int, n_f: int, delta: float, terms: dict[str, Any]
) -> float:
    """Exact binomial (Clopper-Pearson) or KL upper confidence bound on a 0-1 error."""
    k = int(round(risk * m))
    if method == "binomial":
        terms["n_errors"] = k
        # upper-tail form: beta.ppf(1 - d) rounds 1 - d to 1 once d < 1e-16
        return 1.0 if k >= m else float(stats.beta.isf(delta / n_f, k + 1, m - k))
    return kl_inverse(k / m, math.log(n_f / delta) / m)


def validation_bound(
    risk: float,
    n_samples: int,
    *,
    delta: float = 0.05,
    n_candidates: int = 1,
    loss_range: float = 1.0,
    variance: float | None = None,
    method: str = "hoeffding",
    data_used: str = "held-out",
    quantity: str = "risk",
) -> Bound:
    """Upper bound on the population risk from a held-out sample (THEORY §6.2).

    Parameters
    ----------
    risk : float
        Mean loss on ``n_samples`` held-out examples independent of the model.
    n_samples : int
        ``m``.
    delta : float
        The bound fails with probability at most ``delta``.
    n_candidates : int
        ``|F|``: models compared on the same held-out sample (union bound).
    loss_range : float
        ``C``: losses lie in ``[0, C]``.
    variance : float, optional
        ``bernstein``: a bound ``γ²`` on the loss variance (default ``C²/4``);
        ``empirical_bernstein``: the sample variance of the losses (required).
    method : {"hoeffding", "bernstein", "binomial", "kl", "empirical_bernstein"}
        ``binomial`` (exact Clopper–Pearson tail) and ``kl`` need the 0-1 loss
        (``loss_range=1`` and ``risk`` a fraction of errors).
    data_used : str
        Recorded in the bound (which data it was computed on).
    quantity : str
        What is bounded (``"risk"``, ``"error"``, ...), recorded in the bound.

    Returns
    -------
    Bound
        Kind ``"probabilistic"``, side ``"upper"``: holds with probability ``>= 1 − delta``.

    Examples
    --------
    >>> b = validation_bound(0.1, 1000, delta=0.05, method="hoeffding")
    >>> round(b.value, 4)  # 0.1 + sqrt(log(1/0.05) / 2000)
    0.1387
    """
    delta, m, n_f, c = _check_validation_args(
        risk, n_samples, delta, n_candidates, loss_range, method
    )
    terms: dict[str, Any] = {"empirical_risk": float(risk), "n_samples": m}
    terms.update(n_candidates=n_f, loss_range=c)
    assumptions = [
        f"held-out sample of size {m} independent of the model(s)",
        f"loss in [0, {c}]",
        f"union bound over {n_f} candidate model(s)",
    ]
    if method in ("binomial", "kl"):
        value = _binary_value(method, risk, m, n_f, delta, terms)
        slack = value - risk
        assumptions.append("0-1 loss (errors are Bernoulli)")
    else:
        slack = _slack(method, m, n_f, delta, c, variance, terms, assumptions)
        value = risk + slack
    terms["slack"] = float(slack)
    return Bound(
        name=f"validation_{method}",
        kind="probabilistic",
        quantity=quantity,
        side="upper",
        value=float(min(value, c)) if method not in ("binomial", "kl") else float(value),
        delta=delta,
        terms=terms,
        assumptions=tuple(assumptions),
        data_used=data_used,
    )


# ---------------------------------------------------------------------------
# §6.3 frozen-representation bound
# ---------------------------------------------------------------------------


def _cell_entry(
    z_fit: np.ndarray,
    z_s2: np.ndarray,
    y_s2: np.ndarray,
    n_cells: int,
    n_classes: int,
    omega: str,
    gen: np.random.Generator,
    check: tuple[np.ndarray, np.ndarray] | None,
) -> dict[str, Any]:
    """Quantizer on ``z_fit``; plug-in head and its empirical risk on ``S₂``; checked risk."""
    km = kmeans_cells(z_fit, n_cells, gen)
    counts = cell_counts(km.predict(z_s2), y_s2, n_cells, n_classes)
    n_c = counts.sum(1, keepdims=True)
    prior = np.bincount(y_s2, minlength=n_classes) / len(y_s2)
    head = np.where(n_c > 0, counts / np.maximum(n_c, 1), prior)  # per-cell posterior
    emp = float(np.sum(n_c.ravel() * generalized_entropy(head, omega=omega)) / len(y_s2))
    entry: dict[str, Any] = {"n_cells": n_cells, "empirical_risk": emp}
    if check is not None:
        pred, yc = head[km.predict(check[0])], check[1]
        if omega == "zero_one":
            entry["checked"] = float(np.mean(pred.argmax(1) != yc))
        else:
            e = pred.copy()
            e[np.arange(len(yc)), yc] -= 1.0
            entry["checked"] = float(np.mean(0.5 * (e * e).sum(1)))
    return entry


def _frozen_split(
    z_certify: np.ndarray,
    y_certify: np.ndarray,
    omega: str,
    cells: tuple[int, ...],
    fit_fraction: float,
    gen: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple[int, ...]]:
    """Return the checked arrays, the seeded quantizer/S₂ split of the certify part, the grid."""
    if omega not in ("zero_one", "squared"):
        raise ValidationError(
            f"omega must be 'zero_one' or 'squared' (bounded losses; got {omega!r})"
        )
    z = np.asarray(z_certify, dtype=np.float64).reshape(len(z_certify), -1)
    y = np.asarray(y_certify, dtype=np.int64)
    perm = gen.permutation(len(y))
    n_fit = int(round(fit_fraction * len(y)))
    fit_idx, s2_idx = perm[:n_fit], perm[n_fit:]
    grid = tuple(int(c) for c in cells if 1 <= c <= n_fit)
    if len(s2_idx) < 2 or not grid:
        raise ValidationError(
            f"certify split too small for the frozen-feature bound "
            f"(fit {n_fit}, S₂ {len(s2_idx)}, cells {cells})"
        )
    return z, y, fit_idx, s2_idx, grid


def frozen_feature_bound(
    z_certify: np.ndarray,
    y_certify: np.ndarray,
    n_classes: int,
    *,
    z_check: np.ndarray | None = None,
    y_check: np.ndarray | None = None,
    cells: tuple[int, ...] = (2, 4, 8, 16, 32, 64),
    delta: float = 0.05,
    omega: Literal["zero_one", "squared"] = "zero_one",
    fit_fraction: float = 0.5,
    random_state: int | None = 0,
    layer: str = "",
) -> dict[str, Any]:
    """Uniform bound over heads on a quantized frozen representation (THEORY §6.3).

    A k-means quantizer ``φ`` with ``M`` cells is fitted on a ``fit_fraction`` part of the
    certify split; on the other part (``S₂``, size ``m``) the plug-in Bayes head on the cells
    is fitted and its empirical risk measured. With probability ``1 − δ``, simultaneously
    for every ``M`` of the grid (union bound, ``δ/|grid|`` each) and every head,
    ``R_q(g) <= R_{S₂}(g) + C_ℓ (½√((MK − 1)/m) + √(ln(|grid|/δ)/(2m)))``, and the same
    slack bounds ``|H^q(Y|C) − H^{S₂}(Y|C)|``.

    Parameters
    ----------
    z_certify, y_certify : arrays of shape (n_samples, n_features) and (n_samples,)
        Frozen features of the certify split and their labels.
    n_classes : int
    z_check, y_check : arrays, optional
        The check split, on which the best certificate is checked.
    cells : tuple of int
        The grid of cell counts ``M`` (union bound over it).
    delta : float
        Failure probability of the whole curve.
    omega : {"zero_one", "squared"}
        The bounded loss of the cell head.
    fit_fraction, random_state
        Part of the certify split that fits the quantizer; seed of the split and k-means.
    layer : str
        Recorded in the bound.

    Returns
    -------
    dict
        ``curve`` (one entry per ``M``: empirical risk, TV bound, certified risk, checked
        risk), ``best`` (:class:`Bound` for the ``M`` with the smallest certificate, checked
        on ``z_check`` when given).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 2, 2000)
    >>> z = y[:, None] + 0.3 * rng.normal(size=(2000, 2))
    >>> out = frozen_feature_bound(z, y, 2, cells=(2, 4), random_state=0)
    >>> out["best"].value < 0.2
    True
    """
    delta = _check_delta(delta)
    gen = np.random.default_rng(random_state)
    z, y, fit, s2, grid = _frozen_split(z_certify, y_certify, omega, cells, fit_fraction, gen)
    m = len(s2)
    c_loss = 1.0 if omega == "zero_one" else 1.0  # squared on the simplex: ½||e_y − p||² <= 1
    conf = math.sqrt(math.log(len(grid) / delta) / (2 * m))
    check = None
    if z_check is not None and y_check is not None:
        zc = np.asarray(z_check, dtype=np.float64)
        check = (zc.reshape(len(zc), -1), np.asarray(y_check, dtype=np.int64))
    curve = [
        _cell_entry(z[fit], z[s2], y[s2], n_cells, n_classes, omega, gen, check) for n_cells in grid
    ]
    for entry in curve:
        entry["tv_bound"] = 0.5 * math.sqrt((entry["n_cells"] * n_classes - 1) / m) + conf
        entry["certified"] = entry["empirical_risk"] + c_loss * entry["tv_bound"]
    best = min(curve, key=lambda e: e["certified"])
    bound = _frozen_best_bound(best, omega, delta, layer, m, grid, c_loss)
    if "checked" in best:
        bound = bound.check(best["checked"], on="check")
    return {"curve": curve, "best": bound}


def _frozen_best_bound(
    best: dict[str, Any],
    omega: str,
    delta: float,
    layer: str,
    m: int,
    grid: Sequence[int],
    c_loss: float,
) -> Bound:
    """Return the frozen-feature certificate at the cell count with the smallest one."""
    return Bound(
        name="frozen_feature",
        kind="probabilistic",
        quantity="cell_head_error" if omega == "zero_one" else "cell_head_brier_risk",
        side="upper",
        value=float(best["certified"]),
        delta=delta,
        terms={
            "layer": layer,
            "n_cells": best["n_cells"],
            "empirical_risk": best["empirical_risk"],
            "tv_bound": best["tv_bound"],
            "m": m,
            "grid": list(grid),
            "loss_range": c_loss,
        },
        assumptions=(
            "features and quantizer independent of the certify part S₂",
            f"union bound over the {len(grid)} cell counts",
            "holds for every head on the cells (here: the plug-in Bayes head)",
        ),
        data_used="certify (quantizer on one part, head and bound on the other)",
    )

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
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np
from scipy import optimize, stats

from clt_gen.duality import get_regularizer
from clt_gen.errors import ValidationError
from estimators import generalized_entropy

__all__ = [
    "Bound",
    "data_floor",
    "group_duplicates",
    "deterministic_range",
    "shannon_loss_cap",
    "validation_bound",
    "kl_inverse",
    "frozen_feature_bound",
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

    def check(self, measured: float, *, on: str) -> Bound:
        """A copy with the measured value and whether the bound held on it."""
        ok = (
            measured <= self.value + 1e-12
            if self.side == "upper"
            else measured >= self.value - 1e-12
        )
        return replace(self, checked_value=float(measured), checked_on=on, held=bool(ok))

    def to_dict(self) -> dict[str, Any]:
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

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([[0.0], [0.0], [1.0]])
    >>> b = data_floor(x, np.array([0, 1, 1]), 2)
    >>> round(b.value, 6)  # two of three points share an input with opposite labels
    0.462098
    """
    reg = get_regularizer(omega, **({"alpha": alpha} if omega == "tsallis" else {}))
    y = np.asarray(y, dtype=np.int64)
    if len(y) != len(inputs) or len(y) == 0:
        raise ValidationError(
            f"inputs and y must be non-empty with one label per input (got {len(inputs)} "
            f"inputs and {len(y)} labels)"
        )
    if not 0.0 <= label_smoothing < 1.0:
        raise ValidationError(f"label_smoothing must be in [0, 1) (got {label_smoothing})")
    groups, n_groups = group_duplicates(inputs)
    counts = np.zeros((n_groups, n_classes))
    np.add.at(counts, (groups, y), 1.0)
    n_x = counts.sum(1)
    cond = counts / n_x[:, None]
    cond = (1.0 - label_smoothing) * cond + label_smoothing / n_classes
    h = np.asarray(reg.entropy(cond))
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
    """``log K + max_x (max_j ν_j(x) − min_j ν_j(x))``: the largest cross-entropy the scores
    allow (over the given inputs)."""
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
    """The range of THEORY §6.1 for the population risk, hence for the gap.

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

    Returns
    -------
    list of Bound
        ``risk_lower_entropy`` (an *estimated* lower limit of the test risk, kind
        ``"estimate"``) and ``risk_upper_lmax``.
    """
    if not layer_entropies:
        raise ValidationError("layer_entropies must hold at least one layer")
    best = max(layer_entropies, key=lambda k: layer_entropies[k][1])
    est, low = layer_entropies[best]
    ceiling = max(loss_max, loss_cap) if loss_cap is not None else loss_max
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
    upper = Bound(
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
    return [lower, upper]


# ---------------------------------------------------------------------------
# §6.2 validation bounds
# ---------------------------------------------------------------------------


def _kl_bernoulli(q: float, p: float) -> float:
    eps = 1e-300
    p = min(max(p, eps), 1 - 1e-16)
    out = 0.0
    if q > 0:
        out += q * math.log(q / p)
    if q < 1:
        out += (1 - q) * math.log((1 - q) / (1 - p))
    return out


def kl_inverse(q: float, budget: float) -> float:
    """``max {p in [q, 1] : kl(q || p) <= budget}`` (Bernoulli KL).

    Examples
    --------
    >>> round(kl_inverse(0.0, math.log(2)), 6)  # kl(0||p) = -log(1-p)
    0.5
    """
    if budget <= 0:
        return q
    if _kl_bernoulli(q, 1.0 - 1e-16) <= budget:
        return 1.0
    return float(
        optimize.brentq(lambda p: _kl_bernoulli(q, p) - budget, q, 1.0 - 1e-16, xtol=1e-14)
    )


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
    """
    if method not in VALIDATION_METHODS:
        from clt_gen.errors import unknown_name_error

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
    c = float(loss_range)
    log_term = math.log(n_f / delta)
    terms: dict[str, Any] = {
        "empirical_risk": float(risk),
        "n_samples": m,
        "n_candidates": n_f,
        "loss_range": c,
    }
    assumptions = [
        f"held-out sample of size {m} independent of the model(s)",
        f"loss in [0, {c}]",
        f"union bound over {n_f} candidate model(s)",
    ]
    if method == "hoeffding":
        slack = c * math.sqrt(log_term / (2 * m))
        value = risk + slack
    elif method == "bernstein":
        var = c * c / 4.0 if variance is None else float(variance)
        terms["variance_bound"] = var
        slack = 2 * c * log_term / (3 * m) + math.sqrt(2 * var * log_term / m)
        value = risk + slack
        assumptions.append(f"loss variance <= {var}")
    elif method == "empirical_bernstein":
        if variance is None:
            raise ValidationError(
                "method='empirical_bernstein' needs variance= the sample variance of the "
                "held-out losses"
            )
        lt = math.log(2 * n_f / delta)
        if m < 2:
            raise ValidationError("empirical_bernstein needs n_samples >= 2")
        slack = math.sqrt(2 * float(variance) * lt / m) + 7 * c * lt / (3 * (m - 1))
        terms["sample_variance"] = float(variance)
        value = risk + slack
    else:
        if c != 1.0:
            raise ValidationError(
                f"method={method!r} certifies the 0-1 error: loss_range must be 1 (got {c})"
            )
        k = int(round(risk * m))
        if method == "binomial":
            d_eff = delta / n_f
            # upper-tail form: beta.ppf(1 - d) rounds 1 - d to 1 once d < 1e-16
            value = 1.0 if k >= m else float(stats.beta.isf(d_eff, k + 1, m - k))
            terms["n_errors"] = k
        else:
            value = kl_inverse(k / m, log_term / m)
        slack = value - risk
        assumptions.append("0-1 loss (errors are Bernoulli)")
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

    Returns
    -------
    dict
        ``curve`` (one entry per ``M``: empirical risk, TV bound, certified risk, checked
        risk), ``best`` (:class:`Bound` for the ``M`` with the smallest certificate, checked
        on ``z_check`` when given).
    """
    from sklearn.cluster import KMeans

    delta = _check_delta(delta)
    if omega not in ("zero_one", "squared"):
        raise ValidationError(
            f"omega must be 'zero_one' or 'squared' (bounded losses; got {omega!r})"
        )
    z = np.asarray(z_certify, dtype=np.float64).reshape(len(z_certify), -1)
    y = np.asarray(y_certify, dtype=np.int64)
    gen = np.random.default_rng(random_state)
    perm = gen.permutation(len(y))
    n_fit = int(round(fit_fraction * len(y)))
    fit_idx, s2_idx = perm[:n_fit], perm[n_fit:]
    m = len(s2_idx)
    grid = tuple(int(c) for c in cells if 1 <= c <= n_fit)
    if m < 2 or not grid:
        raise ValidationError(
            f"certify split too small for the frozen-feature bound "
            f"(fit {n_fit}, S₂ {m}, cells {cells})"
        )
    c_loss = 1.0 if omega == "zero_one" else 1.0  # squared on the simplex: ½||e_y − p||² <= 1
    conf = math.sqrt(math.log(len(grid) / delta) / (2 * m))
    curve = []
    for n_cells in grid:
        km = KMeans(n_clusters=n_cells, n_init=3, random_state=int(gen.integers(2**31)))
        km.fit(z[fit_idx])
        codes = km.predict(z[s2_idx])
        counts = np.zeros((n_cells, n_classes))
        np.add.at(counts, (codes, y[s2_idx]), 1.0)
        n_c = counts.sum(1, keepdims=True)
        global_prior = np.bincount(y[s2_idx], minlength=n_classes) / m
        head = np.where(n_c > 0, counts / np.maximum(n_c, 1), global_prior)  # per-cell posterior
        emp = float(np.sum(n_c.ravel() * generalized_entropy(head, omega=omega)) / m)
        tv = 0.5 * math.sqrt((n_cells * n_classes - 1) / m) + conf
        entry: dict[str, Any] = {
            "n_cells": n_cells,
            "empirical_risk": emp,
            "tv_bound": tv,
            "certified": emp + c_loss * tv,
        }
        if z_check is not None and y_check is not None:
            zc = np.asarray(z_check, dtype=np.float64).reshape(len(z_check), -1)
            pred = head[km.predict(zc)]
            yc = np.asarray(y_check, dtype=np.int64)
            if omega == "zero_one":
                entry["checked"] = float(np.mean(pred.argmax(1) != yc))
            else:
                e = pred.copy()
                e[np.arange(len(yc)), yc] -= 1.0
                entry["checked"] = float(np.mean(0.5 * (e * e).sum(1)))
        curve.append(entry)
    best = min(curve, key=lambda e: e["certified"])
    bound = Bound(
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
    if "checked" in best:
        bound = bound.check(best["checked"], on="check")
    return {"curve": curve, "best": bound}

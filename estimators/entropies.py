"""Generalized entropies ``H_Ω`` on probability arrays (NumPy), and their scoring rules.

``H_Ω(p) = Σ_y p_y Ω(e_y) − Ω(p)`` is the Bayes risk of predicting a label drawn from
``p`` under the Fenchel–Young loss of ``Ω``; ``zero_one`` gives the Bayes error.

Examples
--------
>>> import numpy as np
>>> round(float(generalized_entropy(np.array([0.5, 0.5]), omega="shannon")), 6)
0.693147
>>> float(generalized_entropy(np.array([0.5, 0.5]), omega="squared"))
0.25
>>> float(generalized_entropy(np.array([0.7, 0.3]), omega="zero_one"))
0.3
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

from estimators._validation import check_float
from estimators.errors import unknown_name_error

__all__ = ["OMEGAS", "Omega", "generalized_entropy", "max_entropy", "scoring_rule", "units"]

Omega = Literal["shannon", "squared", "sparsemax", "tsallis", "zero_one"]
OMEGAS: tuple[str, ...] = ("shannon", "squared", "sparsemax", "tsallis", "zero_one")


def check_omega(omega: str, alpha: float) -> None:
    if omega not in OMEGAS:
        raise unknown_name_error("omega", omega, OMEGAS)
    if omega == "tsallis":
        check_float("alpha", alpha, low=1.0, high=np.inf)


def generalized_entropy(p: np.ndarray, *, omega: str = "shannon", alpha: float = 1.5) -> np.ndarray:
    """``H_Ω(p)`` along the last axis of ``p`` (shape ``(..., n_classes)``).

    Parameters
    ----------
    p : ndarray of shape (..., n_classes)
        Probability vectors.
    omega : {"shannon", "squared", "sparsemax", "tsallis", "zero_one"}
    alpha : float
        ``tsallis`` only: the entropic index.

    Returns
    -------
    ndarray of shape (...)
        Nats for ``shannon``; ``½(1 − ‖p‖²)`` for ``squared``/``sparsemax``;
        ``1 − max_j p_j`` for ``zero_one``.

    Examples
    --------
    >>> import numpy as np
    >>> generalized_entropy(np.array([[0.5, 0.5], [1.0, 0.0]]), omega="squared")
    array([0.25, 0.  ])
    """
    check_omega(omega, alpha)
    p = np.asarray(p, dtype=np.float64)
    if omega == "shannon":
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(p > 0, -p * np.log(np.where(p > 0, p, 1.0)), 0.0)
        return terms.sum(-1)
    if omega in ("squared", "sparsemax"):
        return 0.5 * (1.0 - np.sum(p * p, axis=-1))
    if omega == "tsallis":
        return (1.0 - np.sum(np.clip(p, 0, None) ** alpha, axis=-1)) / (alpha * (alpha - 1.0))
    return 1.0 - np.max(p, axis=-1)  # zero_one


def max_entropy(n_classes: int, *, omega: str = "shannon", alpha: float = 1.5) -> float:
    """``H_Ω`` of the uniform distribution: the largest value ``H_Ω(Y|Z)`` can take.

    Parameters
    ----------
    n_classes : int
    omega : str
    alpha : float
        ``tsallis`` only.

    Returns
    -------
    float

    Examples
    --------
    >>> round(max_entropy(4), 6)  # log 4
    1.386294

    Closed forms, not a sum over the uniform distribution, whose rounding lands a few ulps
    below ``log K`` (1.8e-15 at ``K = 100``), and rounded *up*: a cap applied to a
    certified upper bound must not sit below the largest possible truth, and the nearest
    float to a closed form can (``math.log(5)`` is 3.7e-17 below ``ln 5``). The result is
    the closed form plus 8 units in its last place, more than the rounding of its few
    operations (tested against 40-digit arithmetic), so 2e-15 relative at most above it.
    """
    check_omega(omega, alpha)
    k = float(n_classes)
    if omega == "shannon":
        value = math.log(k)
    elif omega in ("squared", "sparsemax"):
        value = 0.5 * (1.0 - 1.0 / k)
    elif omega == "tsallis":
        value = (1.0 - k ** (1.0 - alpha)) / (alpha * (alpha - 1.0))
    else:
        value = 1.0 - 1.0 / k
    return value + 8.0 * math.ulp(value) if value > 0 else value


def scoring_rule(
    p: np.ndarray, y: np.ndarray, *, omega: str = "shannon", alpha: float = 1.5
) -> np.ndarray:
    """Loss of predicting distribution ``p`` when the label is ``y``.

    The proper scoring rule whose expected value under ``q`` is
    ``H_Ω(q) + D_Ω(q, p) >= H_Ω(q)``: log loss (``shannon``), half the Brier score
    (``squared``/``sparsemax``), the Bregman form for ``tsallis``, and the error of the
    arg-max for ``zero_one``.

    Parameters
    ----------
    p : ndarray of shape (n_samples, n_classes)
        Predicted distributions.
    y : ndarray of shape (n_samples,)
        Integer labels.
    omega : str
    alpha : float
        ``tsallis`` only.

    Returns
    -------
    ndarray of shape (n_samples,)
        One term per sample.

    Examples
    --------
    >>> import numpy as np
    >>> p = np.array([[0.8, 0.2]])
    >>> round(float(scoring_rule(p, np.array([0]))[0]), 6)  # -log 0.8
    0.223144
    """
    check_omega(omega, alpha)
    p = np.asarray(p, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    rows = np.arange(len(y))
    if omega == "shannon":
        return -np.log(np.clip(p[rows, y], 1e-300, None))
    if omega in ("squared", "sparsemax"):
        e = p.copy()
        e[rows, y] -= 1.0
        return 0.5 * np.sum(e * e, axis=-1)
    if omega == "tsallis":
        a = alpha
        q = np.clip(p, 0, None)
        grad = q ** (a - 1.0) / (a - 1.0)
        omega_p = (np.sum(q**a, axis=-1) - 1.0) / (a * (a - 1.0))
        inner = grad[rows, y] - np.sum(grad * q, axis=-1)
        return -omega_p - inner  # Ω(e_y) = 0
    return (np.argmax(p, axis=-1) != y).astype(np.float64)


def units(omega: str) -> str:
    """Units of ``H_Ω``: nats for ``shannon``, error probability for ``zero_one``."""
    return {"shannon": "nats", "zero_one": "probability"}.get(omega, "loss units")

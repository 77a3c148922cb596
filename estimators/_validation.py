"""Input checks at the public boundary.

Each message names the parameter, the rule, the value received and the fix.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from estimators.errors import ValidationError


def check_features(z: Any, name: str = "z") -> tuple[np.ndarray, bool]:
    """Return ``(array, is_discrete)``.

    ``(n_samples,)`` integer arrays are discrete codes; ``(n_samples, n_features)``
    arrays (or 1-D floats, read as one feature) are continuous features.
    """
    arr = np.asarray(z)
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.bool_)
    ):
        raise ValidationError(
            f"{name} must be a numeric array of shape (n_samples, n_features) or integer codes "
            f"of shape (n_samples,) (got dtype {arr.dtype})"
        )
    if arr.ndim not in (1, 2):
        raise ValidationError(
            f"{name} must have shape (n_samples, n_features) or (n_samples,) (got shape "
            f"{arr.shape}); flatten feature maps first, e.g. z.reshape(len(z), -1)"
        )
    if arr.shape[0] == 0 or (arr.ndim == 2 and arr.shape[1] == 0):
        raise ValidationError(f"{name} must be non-empty (got shape {arr.shape})")
    discrete = arr.ndim == 1 and (
        np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.bool_)
    )
    if discrete:
        return arr.astype(np.int64, copy=False), True
    arr = arr.astype(np.float64, copy=False)
    if not np.all(np.isfinite(arr)):
        bad = int(np.sum(~np.isfinite(arr)))
        raise ValidationError(
            f"{name} must be finite (got {bad} NaN or inf entries); drop or impute those "
            "samples before estimating"
        )
    return power_of_two_rescale(arr[:, None] if arr.ndim == 1 else arr), False


def power_of_two_rescale(arr: np.ndarray) -> np.ndarray:
    """Bring features of an extreme scale near 1 by a power of two (exact, no rounding).

    Every estimator is invariant to one global scale of the features in principle; in
    floating point, squared distances of ``1e154``-sized features overflow and those of
    ``1e-200``-sized ones underflow. Scaling by ``2**k`` changes no mantissa, so the
    estimate equals the one at scale 1 exactly. Features within ``[2**-60, 2**60]`` are
    returned as they are.
    """
    top = float(np.max(np.abs(arr))) if arr.size else 0.0
    if top == 0.0 or 2.0**-60 <= top <= 2.0**60:
        return arr
    return np.ldexp(arr, -int(np.round(np.log2(top))))


def check_labels(y: Any, n_samples: int, n_classes: int | None = None) -> tuple[np.ndarray, int]:
    """Return integer labels and the number of classes."""
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValidationError(f"y must have shape (n_samples,) (got shape {arr.shape})")
    if arr.shape[0] != n_samples:
        raise ValidationError(
            f"y must have one label per sample: len(y) must equal n_samples={n_samples} "
            f"(got {arr.shape[0]})"
        )
    if arr.size == 0:
        raise ValidationError("y must be non-empty (got 0 labels)")
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise ValidationError(
                "y must hold integer class labels 0..n_classes-1 (got non-integer values); "
                "encode labels with np.unique(y, return_inverse=True)[1]"
            )
        arr = arr.astype(np.int64)
    elif not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.bool_)):
        raise ValidationError(
            f"y must hold integer class labels (got dtype {arr.dtype}); encode them with "
            "np.unique(y, return_inverse=True)[1]"
        )
    arr = arr.astype(np.int64, copy=False)
    lo, hi = int(arr.min()), int(arr.max())
    k = hi + 1 if n_classes is None else int(n_classes)
    if lo < 0 or hi >= k:
        raise ValidationError(
            f"y must hold labels in [0, n_classes-1] = [0, {k - 1}] (got values in [{lo}, {hi}])"
        )
    if k < 2:
        raise ValidationError(
            f"n_classes must be >= 2 (got {k}); conditional entropy of a constant label is 0"
        )
    return arr, k


def check_int(name: str, value: Any, *, low: int, high: int | None = None, hint: str = "") -> int:
    """Return an integer in ``[low, high)``."""
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if ok and value >= low and (high is None or value < high):
        return int(value)
    rule = f"an int >= {low}" + (f" and < {high}" if high is not None else "")
    raise ValidationError(f"{name} must be {rule} (got {value!r}){'; ' + hint if hint else ''}")


def check_float(
    name: str, value: Any, *, low: float, high: float, inclusive: bool = False
) -> float:
    """Return a float in ``(low, high)`` (or ``[low, high]`` when ``inclusive``)."""
    ok = isinstance(value, (int, float, np.floating)) and not isinstance(value, bool)
    if ok and np.isfinite(value):
        inside = low <= value <= high if inclusive else low < value < high
        if inside:
            return float(value)
    brackets = "[]" if inclusive else "()"
    raise ValidationError(
        f"{name} must be a float in {brackets[0]}{low}, {high}{brackets[1]} (got {value!r})"
    )


def rng(random_state: Any) -> np.random.Generator:
    """Return a NumPy generator from ``None``, an int, or a generator."""
    if isinstance(random_state, np.random.Generator):
        return random_state
    if random_state is None or (
        isinstance(random_state, (int, np.integer)) and not isinstance(random_state, bool)
    ):
        return np.random.default_rng(random_state)
    raise ValidationError(
        f"random_state must be None, an int or a numpy Generator (got {random_state!r})"
    )


def check_folds(n_folds: Any, y: np.ndarray, n_classes: int) -> int:
    """``n_folds`` must leave at least 2 samples per fold and 2 classes to fit on."""
    n_folds = check_int("n_folds", n_folds, low=2, hint="use n_folds=2 (the default)")
    if len(y) < 2 * n_folds or len(y) // n_folds < 2:
        raise ValidationError(
            f"n_samples must be >= 2 per fold (got n_samples={len(y)} for n_folds={n_folds}); "
            "use fewer folds or more samples"
        )
    if len(np.unique(y)) < 2:
        raise ValidationError(
            f"y must contain at least 2 distinct classes to fit a head (got only class "
            f"{int(y[0])}); H_Ω(Y|Z) of a constant label is 0"
        )
    return n_folds

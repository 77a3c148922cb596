"""Regularizers, convex conjugates, links and Fenchel–Young losses.

A *regularizer* ``Ω`` is a convex function on label distributions. From it follow
its conjugate ``Ω*(ν) = sup_μ <μ, ν> - Ω(μ)``, the *link* ``∇Ω*`` that maps scores to a
predicted distribution, the Fenchel–Young loss

    d_Ω(μ, ν) = Ω(μ) + Ω*(ν) - <μ, ν>  >= 0,

and the generalized entropy ``H_Ω(p) = Σ_y p_y Ω(e_y) - Ω(p)`` (the Bayes risk of
predicting a label drawn from ``p``). See ``docs/theory.md`` for the proofs.

Every method works on batched arrays along the last axis (shape ``(..., n_classes)``),
for NumPy arrays (computed in float64, returned as NumPy) and torch tensors
(autograd-friendly, float32 or float64, any device). Units: nats.

Examples
--------
>>> import numpy as np
>>> reg = get_regularizer("shannon")
>>> nu = np.array([2.0, 0.0, -1.0])
>>> float(reg.label_loss(np.array(0), nu))  # cross-entropy of class 0
0.1698...
>>> float(reg.entropy(np.full(4, 0.25)))  # log 4
1.3862...
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch

from estimators.entropies import generalized_entropy, max_entropy
from estimators.errors import ValidationError, unknown_name_error

__all__ = [
    "objective",
    "smoothed_targets",
    "Regularizer",
    "Shannon",
    "Squared",
    "Sparsemax",
    "Tsallis",
    "REGULARIZERS",
    "get_regularizer",
    "sparsemax",
    "entmax_bisect",
    "conditional_entropy_from_joint",
    "risk_from_joint",
]

RegularizerName = Literal["shannon", "squared", "sparsemax", "tsallis"]
ArrayLike = Any  # np.ndarray | torch.Tensor | nested sequences


# ---------------------------------------------------------------------------
# Backend handling: NumPy in -> NumPy out (float64 inside); torch stays torch.
# ---------------------------------------------------------------------------


def _as_tensors(*arrays: ArrayLike) -> tuple[list[torch.Tensor], bool]:
    """Convert inputs to tensors of a common float dtype; report if they were NumPy."""
    ref = next((a for a in arrays if isinstance(a, torch.Tensor)), None)
    if ref is None:
        out = [torch.as_tensor(np.asarray(a, dtype=np.float64)) for a in arrays]
        return out, True
    dtype = ref.dtype if ref.is_floating_point() else torch.float64
    out = [
        (a if isinstance(a, torch.Tensor) else torch.as_tensor(np.asarray(a))).to(
            device=ref.device, dtype=dtype
        )
        for a in arrays
    ]
    return out, False


def _finish(t: torch.Tensor, was_numpy: bool) -> ArrayLike:
    if was_numpy:
        return t.detach().cpu().numpy()
    return t


def _check_last_dim(name: str, t: torch.Tensor) -> None:
    if t.ndim == 0 or t.shape[-1] < 2:
        raise ValidationError(
            f"{name} must have shape (..., n_classes) with n_classes >= 2 "
            f"(got shape {tuple(t.shape)}); pass one score or probability per class "
            "along the last axis"
        )


def _check_same_shape(a_name: str, a: torch.Tensor, b_name: str, b: torch.Tensor) -> None:
    if a.shape[-1] != b.shape[-1]:
        raise ValidationError(
            f"{a_name} and {b_name} must have the same number of classes on the last axis "
            f"(got {a.shape[-1]} and {b.shape[-1]})"
        )


# ---------------------------------------------------------------------------
# Links on the simplex: sparsemax (exact, by sorting) and alpha-entmax (bisection)
# ---------------------------------------------------------------------------


def _sparsemax_forward(nu: torch.Tensor) -> torch.Tensor:
    # shift invariance, made exact in finite precision: work on nu - max(nu), so the
    # cumulative sums stay O(1) whatever the offset of the scores (float32 included)
    nu = nu - nu.max(dim=-1, keepdim=True).values
    z, _ = torch.sort(nu, dim=-1, descending=True)
    k = torch.arange(1, nu.shape[-1] + 1, device=nu.device, dtype=nu.dtype)
    cumsum = z.cumsum(-1)
    support = (1 + k * z) > cumsum
    k_z = support.to(nu.dtype).sum(-1, keepdim=True)
    tau = (cumsum.gather(-1, k_z.long() - 1) - 1) / k_z
    return torch.clamp(nu - tau, min=0)


def _entmax_forward(nu: torch.Tensor, alpha: float, n_iter: int = 100) -> torch.Tensor:
    if alpha == 2.0:
        return _sparsemax_forward(nu)
    work = nu.to(torch.float64)
    work = work - work.max(dim=-1, keepdim=True).values  # float32 -> float64 is exact
    x = (alpha - 1.0) * work
    k = x.shape[-1]
    x_max = x.max(dim=-1, keepdim=True).values
    lo = x_max - 1.0  # p_max <= 1  =>  tau >= x_max - 1
    hi = x_max - (1.0 / k) ** (alpha - 1.0)  # p_max >= 1/K
    inv = 1.0 / (alpha - 1.0)
    for _ in range(n_iter):
        mid = 0.5 * (lo + hi)
        mass = torch.clamp(x - mid, min=0).pow(inv).sum(-1, keepdim=True)
        above = mass >= 1.0
        lo = torch.where(above, mid, lo)
        hi = torch.where(above, hi, mid)
    p = torch.clamp(x - lo, min=0).pow(inv)
    p = p / p.sum(-1, keepdim=True)
    return p.to(nu.dtype)


class _EntmaxFunction(torch.autograd.Function):
    """alpha-entmax with its closed-form Jacobian-vector product.

    On the support, with ``s = p^(2 - alpha)``, the Jacobian is
    ``diag(s) - s s^T / sum(s)`` (sparsemax: ``s`` is the support indicator).
    """

    @staticmethod
    def forward(ctx: Any, nu: torch.Tensor, alpha: float) -> torch.Tensor:
        p = _entmax_forward(nu, alpha)
        ctx.save_for_backward(p)
        ctx.alpha = alpha
        return p

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (p,) = ctx.saved_tensors
        s = torch.where(p > 0, p.pow(2.0 - ctx.alpha), torch.zeros_like(p))
        g = s * grad
        out = g - s * g.sum(-1, keepdim=True) / s.sum(-1, keepdim=True)
        return out, None


class _ConjugateFunction(torch.autograd.Function):
    """``Ω*(ν) = <p, ν> - Ω(p)`` at ``p = ∇Ω*(ν)``, whose gradient is ``p`` (Danskin)."""

    @staticmethod
    def forward(ctx: Any, nu: torch.Tensor, reg: Regularizer) -> torch.Tensor:
        with torch.no_grad():
            shift = nu.max(dim=-1).values if reg.simplex else torch.zeros_like(nu[..., 0])
            centred = nu - shift.unsqueeze(-1) if reg.simplex else nu
            p = reg._link_value(centred)
            # Ω*(ν + c1) = Ω*(ν) + c on the simplex: the O(1) part is computed on centred
            # scores and the offset added once
            value = (p * centred).sum(-1) - reg._omega_value(p) + shift
        ctx.save_for_backward(p)
        return value

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (p,) = ctx.saved_tensors
        return grad.unsqueeze(-1) * p, None


def sparsemax(nu: ArrayLike) -> ArrayLike:
    """Euclidean projection of scores onto the simplex (Martins & Astudillo, 2016).

    Parameters
    ----------
    nu : array of shape (..., n_classes)
        Scores.

    Returns
    -------
    p : array of shape (..., n_classes)
        A point of the simplex; sparse when scores are spread out.

    Examples
    --------
    >>> import numpy as np
    >>> sparsemax(np.array([1.0, 0.8, -3.0]))
    array([0.6, 0.4, 0. ])
    """
    (t,), was_numpy = _as_tensors(nu)
    _check_last_dim("nu", t)
    return _finish(_EntmaxFunction.apply(t, 2.0), was_numpy)


def entmax_bisect(nu: ArrayLike, alpha: float = 1.5) -> ArrayLike:
    """alpha-entmax (Peters et al., 2019) by bisection on the threshold.

    ``p_i = [(alpha - 1) nu_i - tau]_+ ^ (1 / (alpha - 1))`` with ``tau`` chosen so that
    ``p`` sums to one; 100 bisection steps in float64.

    Examples
    --------
    >>> import numpy as np
    >>> p = entmax_bisect(np.array([1.0, 0.5, -2.0]), alpha=1.5)
    >>> np.round(p, 4)
    array([0.674, 0.326, 0.   ])
    """
    _check_alpha(alpha)
    (t,), was_numpy = _as_tensors(nu)
    _check_last_dim("nu", t)
    return _finish(_EntmaxFunction.apply(t, float(alpha)), was_numpy)


def _check_alpha(alpha: object) -> None:
    if (
        isinstance(alpha, bool)
        or not isinstance(alpha, (int, float))
        or not math.isfinite(alpha)
        or alpha <= 1
    ):
        raise ValidationError(
            f"alpha must be a finite float > 1 (got {alpha!r}); use omega='shannon' for "
            "the alpha -> 1 limit, alpha=1.5 for 1.5-entmax, alpha=2 for sparsemax"
        )


# ---------------------------------------------------------------------------
# Regularizers
# ---------------------------------------------------------------------------


class Regularizer(ABC):
    """A convex regularizer ``Ω`` on label distributions and everything derived from it.

    Subclasses implement the value methods on tensors; the public methods handle
    NumPy/torch conversion and shape checks.

    Attributes
    ----------
    name : str
        Registry name.
    simplex : bool
        True when ``dom Ω`` is the probability simplex (scores are then shift invariant
        and the link maps into the simplex).
    """

    name: str = ""
    simplex: bool = True

    @property
    def params(self) -> dict[str, float]:
        """Constructor parameters (recorded in reports)."""
        return {}

    def __repr__(self) -> str:
        """Return ``name`` or ``name(alpha=...)``."""
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        """Regularizers are equal when their names and parameters are."""
        return (
            isinstance(other, Regularizer)
            and type(self) is type(other)
            and (self.params == other.params)
        )

    def __hash__(self) -> int:
        """Hash by name and parameters, consistent with ``__eq__``."""
        return hash((type(self).__name__, tuple(sorted(self.params.items()))))

    # -- value methods (tensors in, tensors out) --------------------------------
    @abstractmethod
    def _omega_value(self, p: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def _link_value(self, nu: torch.Tensor) -> torch.Tensor: ...

    def _conjugate_value(self, nu: torch.Tensor) -> torch.Tensor:
        return _ConjugateFunction.apply(nu, self)

    def _centred(self, nu: torch.Tensor) -> torch.Tensor:
        """Scores minus their (detached) maximum when ``dom Ω`` is the simplex.

        Losses are shift invariant there; computing them on centred scores keeps every
        term O(1), so float32 losses and gradients stay exact at any score offset.
        """
        if not self.simplex:
            return nu
        centred = nu - nu.detach().max(dim=-1, keepdim=True).values
        # finite scores ~2e308 apart overflow to -inf here; those coordinates get zero
        # probability either way, and a large finite value keeps 0 * (-inf) = NaN out
        big = torch.finfo(centred.dtype).max / 4
        return torch.where(torch.isneginf(centred) & torch.isfinite(nu), -big, centred)

    def _loss_value(self, mu: torch.Tensor, nu: torch.Tensor) -> torch.Tensor:
        nu = self._centred(nu)
        return self._omega_value(mu) + self._conjugate_value(nu) - (mu * nu).sum(-1)

    def _target_loss_value(self, t: torch.Tensor, nu: torch.Tensor) -> torch.Tensor:
        nu = self._centred(nu)
        return self.vertex_value() + self._conjugate_value(nu) - (t * nu).sum(-1)

    @abstractmethod
    def vertex_value(self) -> float:
        """``Ω(e_y)``, the same for every class ``y`` in all registered regularizers."""

    # -- public methods -----------------------------------------------------------
    def omega(self, p: ArrayLike) -> ArrayLike:
        """``Ω(p)`` for distributions ``p`` of shape ``(..., n_classes)``."""
        (t,), was_numpy = _as_tensors(p)
        _check_last_dim("p", t)
        return _finish(self._omega_value(t), was_numpy)

    def conjugate(self, nu: ArrayLike) -> ArrayLike:
        """``Ω*(ν) = sup_μ <μ, ν> - Ω(μ)`` for scores of shape ``(..., n_classes)``."""
        (t,), was_numpy = _as_tensors(nu)
        _check_last_dim("nu", t)
        return _finish(self._conjugate_value(t), was_numpy)

    def link(self, nu: ArrayLike) -> ArrayLike:
        """``∇Ω*(ν)``: the predicted distribution for scores ``ν``."""
        (t,), was_numpy = _as_tensors(nu)
        _check_last_dim("nu", t)
        return _finish(self._link_value(t), was_numpy)

    def loss(self, mu: ArrayLike, nu: ArrayLike) -> ArrayLike:
        """Fenchel–Young loss ``d_Ω(μ, ν) >= 0`` of scores ``ν`` against target ``μ``."""
        (m, n), was_numpy = _as_tensors(mu, nu)
        _check_last_dim("mu", m)
        _check_last_dim("nu", n)
        _check_same_shape("mu", m, "nu", n)
        return _finish(torch.clamp(self._loss_value(m, n), min=0.0), was_numpy)

    def label_loss(self, y: ArrayLike, nu: ArrayLike) -> ArrayLike:
        """``d_Ω(e_y, ν)`` for integer labels ``y`` of shape ``(...)``.

        Cheaper than :meth:`loss` with one-hot targets: ``Ω(e_y) + Ω*(ν) - ν_y``.
        """
        (n,), was_numpy = _as_tensors(nu)
        _check_last_dim("nu", n)
        yt = y if isinstance(y, torch.Tensor) else torch.as_tensor(np.asarray(y))
        yt = yt.to(device=n.device, dtype=torch.long)
        if yt.shape != n.shape[:-1]:
            raise ValidationError(
                f"y must have shape {tuple(n.shape[:-1])} to match nu (got {tuple(yt.shape)})"
            )
        if yt.numel() and (int(yt.min()) < 0 or int(yt.max()) >= n.shape[-1]):
            raise ValidationError(
                f"y must hold integer labels in [0, {n.shape[-1] - 1}] "
                f"(got values in [{int(yt.min())}, {int(yt.max())}])"
            )
        n = self._centred(n)
        picked = n.gather(-1, yt.unsqueeze(-1)).squeeze(-1)
        value = self.vertex_value() + self._conjugate_value(n) - picked
        return _finish(torch.clamp(value, min=0.0), was_numpy)

    def target_loss(self, t: ArrayLike, nu: ArrayLike) -> ArrayLike:
        """``Σ_y t_y d_Ω(e_y, ν) = Ω(e_y) + Ω*(ν) − ⟨t, ν⟩`` for label distributions ``t``.

        The training risk under soft (e.g. label-smoothed) targets: the expected loss of
        a label drawn from ``t``. Differs from :meth:`loss` (``d_Ω(t, ν)``) by ``H_Ω(t)``.

        Examples
        --------
        >>> import numpy as np
        >>> reg = get_regularizer("sparsemax")
        >>> t = np.array([0.9, 0.05, 0.05])
        >>> nu = np.array([2.0, 0.0, -1.0])
        >>> bool(np.isclose(reg.target_loss(t, nu), reg.loss(t, nu) + reg.entropy(t)))
        True
        """
        (m, n), was_numpy = _as_tensors(t, nu)
        _check_last_dim("t", m)
        _check_last_dim("nu", n)
        _check_same_shape("t", m, "nu", n)
        return _finish(torch.clamp(self._target_loss_value(m, n), min=0.0), was_numpy)

    def entropy(self, p: ArrayLike) -> ArrayLike:
        """Generalized entropy ``H_Ω(p) = Σ_y p_y Ω(e_y) - Ω(p)`` (Bayes risk of ``p``).

        Computed by :func:`estimators.generalized_entropy`, the project's one ``H_Ω``
        (NumPy, float64); a tensor comes back as a tensor of its dtype and device, without
        gradient (no loss or training step differentiates ``H_Ω``).
        """
        (t,), was_numpy = _as_tensors(p)
        _check_last_dim("p", t)
        h = generalized_entropy(t.detach().cpu().double().numpy(), omega=self.name, **self.params)
        return h if was_numpy else torch.as_tensor(h, dtype=t.dtype, device=t.device)

    def max_entropy(self, n_classes: int) -> float:
        """``H_Ω`` of the uniform distribution on ``n_classes`` labels (its maximum)."""
        return max_entropy(n_classes, omega=self.name, **self.params)


class Shannon(Regularizer):
    """Negative Shannon entropy on the simplex; the link is softmax, the loss cross-entropy.

    ``Ω(p) = Σ p log p``, ``Ω*(ν) = logsumexp(ν)``, ``d_Ω(μ, ν) = KL(μ || softmax ν)``,
    ``H_Ω(p) = -Σ p log p``.

    Examples
    --------
    >>> import numpy as np
    >>> reg = Shannon()
    >>> reg.link(np.zeros(2))
    array([0.5, 0.5])
    """

    name = "shannon"
    simplex = True

    def _omega_value(self, p: torch.Tensor) -> torch.Tensor:
        return torch.special.xlogy(p, p).sum(-1)

    def _link_value(self, nu: torch.Tensor) -> torch.Tensor:
        return torch.softmax(nu, dim=-1)

    def _conjugate_value(self, nu: torch.Tensor) -> torch.Tensor:
        return torch.logsumexp(nu, dim=-1)

    def _loss_value(self, mu: torch.Tensor, nu: torch.Tensor) -> torch.Tensor:
        # KL(mu || softmax nu) written with log_softmax for stability.
        return (torch.special.xlogy(mu, mu) - mu * torch.log_softmax(nu, dim=-1)).sum(-1)

    def vertex_value(self) -> float:
        """Return ``Ω`` at a vertex of the simplex (its maximum over ``Δ_K``)."""
        return 0.0


class Squared(Regularizer):
    """``Ω(μ) = ½||μ||²`` on all of ``R^K``: identity link, loss ``½||μ - ν||²``.

    ``H_Ω(p) = ½(1 - ||p||²)`` (half the Gini impurity) for ``p`` on the simplex.

    Examples
    --------
    >>> import numpy as np
    >>> float(Squared().loss(np.array([1.0, 0.0]), np.array([0.5, 0.5])))
    0.25
    """

    name = "squared"
    simplex = False

    def _omega_value(self, p: torch.Tensor) -> torch.Tensor:
        return 0.5 * (p * p).sum(-1)

    def _link_value(self, nu: torch.Tensor) -> torch.Tensor:
        return nu

    def _conjugate_value(self, nu: torch.Tensor) -> torch.Tensor:
        return 0.5 * (nu * nu).sum(-1)

    def _loss_value(self, mu: torch.Tensor, nu: torch.Tensor) -> torch.Tensor:
        d = mu - nu
        return 0.5 * (d * d).sum(-1)

    def vertex_value(self) -> float:
        """Return ``Ω`` at a vertex of the simplex (its maximum over ``Δ_K``)."""
        return 0.5


class Sparsemax(Regularizer):
    """``Ω(p) = ½||p||²`` restricted to the simplex: sparsemax link and loss.

    ``H_Ω(p) = ½(1 - ||p||²)``.

    Examples
    --------
    >>> import numpy as np
    >>> float(Sparsemax().label_loss(np.array(0), np.array([3.0, 0.0, 0.0])))
    0.0
    """

    name = "sparsemax"
    simplex = True

    def _omega_value(self, p: torch.Tensor) -> torch.Tensor:
        return 0.5 * (p * p).sum(-1)

    def _link_value(self, nu: torch.Tensor) -> torch.Tensor:
        return _EntmaxFunction.apply(nu, 2.0)

    def vertex_value(self) -> float:
        """Return ``Ω`` at a vertex of the simplex (its maximum over ``Δ_K``)."""
        return 0.5


class Tsallis(Regularizer):
    """Tsallis negentropy ``Ω(p) = (Σ p^α - 1)/(α(α-1))`` on the simplex, ``α > 1``.

    The link is α-entmax (bisection); ``α = 1.5`` gives 1.5-entmax and ``α = 2``
    sparsemax (up to the constant ``-½`` in ``Ω``, which changes no loss or entropy).
    ``H_Ω(p) = (1 - Σ p^α)/(α(α-1))``.

    Examples
    --------
    >>> import numpy as np
    >>> round(Tsallis(alpha=1.5).max_entropy(2), 6)  # (1 - 2 * 0.5**1.5) / 0.75
    0.390524
    """

    name = "tsallis"
    simplex = True

    def __init__(self, alpha: float = 1.5) -> None:
        _check_alpha(alpha)
        self.alpha = float(alpha)

    @property
    def params(self) -> dict[str, float]:
        """Return the regularizer's parameters (``alpha``)."""
        return {"alpha": self.alpha}

    def _power_sum(self, p: torch.Tensor) -> torch.Tensor:
        return torch.clamp(p, min=0).pow(self.alpha).sum(-1)

    def _omega_value(self, p: torch.Tensor) -> torch.Tensor:
        a = self.alpha
        return (self._power_sum(p) - 1.0) / (a * (a - 1.0))

    def _link_value(self, nu: torch.Tensor) -> torch.Tensor:
        return _EntmaxFunction.apply(nu, self.alpha)

    def vertex_value(self) -> float:
        """Return ``Ω`` at a vertex of the simplex (its maximum over ``Δ_K``)."""
        return 0.0


REGULARIZERS: dict[str, Callable[..., Regularizer]] = {
    "shannon": Shannon,
    "squared": Squared,
    "sparsemax": Sparsemax,
    "tsallis": Tsallis,
}


def get_regularizer(omega: str | Regularizer, **params: float) -> Regularizer:
    """Look up a regularizer by name.

    Parameters
    ----------
    omega : {"shannon", "squared", "sparsemax", "tsallis"} or Regularizer
        Registry name (an instance is returned unchanged).
    **params
        Constructor parameters, e.g. ``alpha=1.5`` for ``"tsallis"``.

    Returns
    -------
    Regularizer
        The registered regularizer with ``params``.

    Raises
    ------
    ValidationError
        Unknown name (the message lists the valid names and the closest match) or
        parameters the regularizer does not take.

    Examples
    --------
    >>> get_regularizer("tsallis", alpha=1.5)
    Tsallis(alpha=1.5)
    >>> get_regularizer("shanon")
    Traceback (most recent call last):
    ...
    estimators.errors.ValidationError: omega must be one of [...] (got 'shanon'); did you ...
    """
    if isinstance(omega, Regularizer):
        return omega
    if omega == "zero_one":
        raise ValidationError(
            "omega='zero_one' names the 0-1 scoring rule (its entropy is the Bayes error), "
            "which has no Fenchel–Young loss to train or evaluate a network with; use it in "
            f"estimators and bounds, and one of {sorted(REGULARIZERS)} here"
        )
    if omega not in REGULARIZERS:
        raise unknown_name_error("omega", omega, REGULARIZERS)
    try:
        return REGULARIZERS[omega](**params)
    except TypeError as exc:
        raise ValidationError(
            f"omega={omega!r} does not take parameters {sorted(params)} ({exc}); "
            "only 'tsallis' takes alpha"
        ) from None


# ---------------------------------------------------------------------------
# Finite joint distributions (exact quantities for tests and small problems)
# ---------------------------------------------------------------------------


def _check_joint(joint: np.ndarray) -> np.ndarray:
    p = np.asarray(joint, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValidationError(
            f"joint must be a 2-D array p[z, y] with n_classes >= 2 columns (got shape {p.shape})"
        )
    if not np.all(np.isfinite(p)) or np.any(p < 0) or not np.isclose(p.sum(), 1.0, atol=1e-9):
        raise ValidationError(
            f"joint must be finite, non-negative and sum to 1 (got sum {p.sum()!r}); "
            "normalise it with joint / joint.sum()"
        )
    return p


def conditional_entropy_from_joint(joint: ArrayLike, omega: str | Regularizer = "shannon") -> float:
    """Exact ``H_Ω(Y|Z) = Σ_z p(z) H_Ω(p(·|z))`` for a finite joint ``p[z, y]``.

    Examples
    --------
    >>> import numpy as np
    >>> joint = np.array([[0.25, 0.25], [0.5, 0.0]])
    >>> round(conditional_entropy_from_joint(joint), 6)  # 0.5 * log 2
    0.346574
    """
    reg = get_regularizer(omega)
    p = _check_joint(joint)
    pz = p.sum(1)
    keep = pz > 0
    cond = p[keep] / pz[keep, None]
    return float(np.sum(pz[keep] * reg.entropy(cond)))


def risk_from_joint(
    joint: ArrayLike, scores: ArrayLike, omega: str | Regularizer = "shannon"
) -> float:
    """Exact risk ``E_{(z,y)~p} d_Ω(e_y, scores[z])`` of per-cell scores on a finite joint.

    Examples
    --------
    >>> import numpy as np
    >>> joint = np.array([[0.25, 0.25], [0.5, 0.0]])
    >>> round(risk_from_joint(joint, np.zeros((2, 2))), 6)  # log 2
    0.693147
    """
    reg = get_regularizer(omega)
    p = _check_joint(joint)
    s = np.asarray(scores, dtype=np.float64)
    if s.shape != p.shape:
        raise ValidationError(
            f"scores must have the joint's shape {p.shape} (one score vector per z; got {s.shape})"
        )
    n_classes = p.shape[1]
    losses = np.stack([reg.label_loss(np.full(len(s), y), s) for y in range(n_classes)], axis=1)
    return float(np.sum(p * losses))


def smoothed_targets(
    y: torch.Tensor, n_classes: int, label_smoothing: float, dtype: torch.dtype
) -> torch.Tensor:
    """Return the targets ``(1 − ε) e_y + ε/K`` with ``ε = label_smoothing``.

    Parameters
    ----------
    y : tensor of shape (n_samples,)
        Integer labels.
    n_classes : int
    label_smoothing : float
        ``ε`` in ``[0, 1)``.
    dtype : torch.dtype

    Returns
    -------
    tensor of shape (n_samples, n_classes)

    Examples
    --------
    >>> smoothed_targets(torch.tensor([1]), 2, 0.2, torch.float64)
    tensor([[0.1000, 0.9000]], dtype=torch.float64)
    """
    t = torch.nn.functional.one_hot(y, n_classes).to(dtype)
    eps = label_smoothing
    return t * (1.0 - eps) + eps / n_classes if eps else t


def objective(
    reg: Any, scores: torch.Tensor, y: torch.Tensor, label_smoothing: float
) -> torch.Tensor:
    """Return the per-example risk under smoothed targets, ``Ω(e_y) + Ω*(ν) − ⟨t, ν⟩``.

    Parameters
    ----------
    reg : Regularizer
    scores : tensor of shape (n_samples, n_classes)
    y : tensor of shape (n_samples,)
    label_smoothing : float
        ``ε`` of the targets ``(1 − ε) e_y + ε/K``.

    Returns
    -------
    tensor of shape (n_samples,)

    Examples
    --------
    >>> reg = get_regularizer("shannon")
    >>> round(float(objective(reg, torch.zeros(1, 2), torch.tensor([0]), 0.0)[0]), 6)  # log 2
    0.693147
    """
    scores = scores.float() if scores.dtype in (torch.float16, torch.bfloat16) else scores
    if reg.name == "shannon":
        return torch.nn.functional.cross_entropy(
            scores, y, label_smoothing=label_smoothing, reduction="none"
        )
    t = smoothed_targets(y, scores.shape[-1], label_smoothing, scores.dtype)
    return reg.target_loss(t, scores)

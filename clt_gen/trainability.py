"""Trainability diagnostics (THEORY §4).

Gradient energy, structure matrices ``A_x = J_x J_xᵀ``, their extreme eigenvalues, the
structural error and the loss sandwich.

``J_x = ∂f(x)/∂θ`` over all trainable parameters. With ``p = ∇Ω*(f(x))`` and a target
``μ``, the residual ``e = p − μ`` gives ``∇_θ ℓ = J_xᵀ e`` and ``‖∇_θ ℓ‖² = eᵀ A_x e``, so
``λ_min ‖e‖² ≤ ‖∇_θ ℓ‖² ≤ λ_max ‖e‖²``.

Fast path: one forward pass and ``K`` batched backward passes record, at every
``nn.Linear`` and ``nn.Conv2d``, each example's input activations and output gradients;
per-example parameter gradients of those layers follow from outer products (unfolded
patches for convolutions) and enter ``A_x`` as Gram matrices, without ever forming
``J_x``. Parameters outside such layers (normalization affines, class tokens, attention
projections called functionally) and modules called more than once use an exact
per-example Jacobian from ``torch.func``. Models must be in eval mode semantics (the
functions switch to eval and restore the previous mode).

Examples
--------
>>> import torch
>>> torch.manual_seed(0)  # doctest: +ELLIPSIS
<torch._C.Generator object at ...>
>>> net = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2))
>>> A = structure_matrices(net, torch.randn(4, 3))
>>> A.shape
torch.Size([4, 2, 2])
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from clt_gen._modes import eval_mode
from clt_gen.callbacks import Callback
from clt_gen.duality import Regularizer, get_regularizer
from clt_gen.errors import ValidationError

__all__ = [
    "structure_matrices",
    "structure_matrices_naive",
    "StructureSpectrum",
    "structure_spectrum",
    "per_example_gradient_norms",
    "gradient_energy",
    "LossSandwich",
    "loss_sandwich",
    "trainability_summary",
    "local_pearson",
    "TrainabilityProbe",
]

_CHUNK_BYTES = 256 * 2**20


_eval_mode = eval_mode


def _params(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def structure_matrices_naive(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Compute by ``K`` backward passes per example (slow, obviously correct)."""
    params = [p for _, p in _params(model)]
    out_rows = []
    with _eval_mode(model):
        for i in range(len(x)):
            f = model(x[i : i + 1])[0]
            rows = []
            for k in range(f.shape[0]):
                grads = torch.autograd.grad(f[k], params, retain_graph=True, allow_unused=True)
                rows.append(
                    torch.cat(
                        [
                            (g if g is not None else torch.zeros_like(p)).reshape(-1)
                            for g, p in zip(grads, params, strict=True)
                        ]
                    )
                )
            jac = torch.stack(rows)
            out_rows.append(jac @ jac.T)
    return torch.stack(out_rows).detach()


_NORMS = (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)


def _supported(m: nn.Module) -> bool:
    """Layers whose per-example parameter gradients have a closed form here."""
    if type(m) in (nn.Linear, nn.Conv2d):
        return True
    if isinstance(m, nn.BatchNorm2d):  # eval mode with running statistics only
        return m.affine and m.running_mean is not None
    if isinstance(m, nn.GroupNorm):
        return m.affine
    if isinstance(m, nn.LayerNorm):
        return m.elementwise_affine
    return False


class _Recorder:
    """Forward hooks on Linear/Conv2d: inputs, outputs (for gradients) and call counts."""

    def __init__(self, model: nn.Module) -> None:
        self.inputs: dict[nn.Module, torch.Tensor] = {}
        self.outputs: dict[nn.Module, torch.Tensor] = {}
        self.calls: dict[nn.Module, int] = {}
        self.handles = []
        for m in model.modules():
            if _supported(m) and any(p.requires_grad for p in m.parameters()):
                self.handles.append(m.register_forward_hook(self._hook))

    def _hook(self, m: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> torch.Tensor:
        self.calls[m] = self.calls.get(m, 0) + 1
        self.inputs[m] = inp[0].detach()
        self.outputs[m] = out
        # the network continues on a copy, so in-place ops downstream (ReLU(inplace=True),
        # residual +=) cannot overwrite the tensor we differentiate with respect to
        return out.clone()

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def _shared_parameter_ids(model: nn.Module) -> set[int]:
    """Parameters owned by more than one module (tied weights)."""
    owners: dict[int, int] = {}
    for m in model.modules():
        for p in m.parameters(recurse=False):
            owners[id(p)] = owners.get(id(p), 0) + 1
    return {i for i, c in owners.items() if c > 1}


def _fast_ok(m: nn.Module, calls: int, shared: set[int]) -> bool:
    """Whether the closed-form Gram of ``m`` is exact for this model.

    It is when the module ran once, every one of its parameters is trainable (a partly
    frozen layer would count the frozen ones) and owned by it alone (a tied weight gets
    gradient from elsewhere too), and, for convolutions, when the unfolded-patch form
    matches its padding (numeric zero padding, one group).
    """
    params = list(m.parameters(recurse=False))
    if calls != 1 or not params or not all(p.requires_grad for p in params):
        return False
    if any(id(p) in shared for p in params):
        return False
    if isinstance(m, nn.Conv2d):
        return m.groups == 1 and not isinstance(m.padding, str) and m.padding_mode == "zeros"
    return True


def _warn_general_path(model: nn.Module, fast_ids: set[int], slow_ids: set[int]) -> None:
    """Name, once, each layer whose parameters take the (exact, slower) torch.func path."""
    import warnings

    for name, m in model.named_modules():
        own = [p for p in m.parameters(recurse=False) if p.requires_grad]
        if own and any(id(p) in slow_ids for p in own) and not _supported(m):
            warnings.warn(
                f"structure matrices: layer {name or '<root>'!r} ({type(m).__name__}) has no "
                "closed form here; its parameters take the exact torch.func path (slower)",
                UserWarning,
                stacklevel=3,
            )


def _layer_gram(m: nn.Module, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Per-example Gram ``(n, J, J)`` of one Linear/Conv2d layer's parameter gradients.

    ``a``: the layer's input; ``g``: output gradients of the ``J`` functionals
    ``(n, J, *output_shape)``. A Linear layer on vectors needs no per-example gradient:
    ``<g_j a^T, g_l a^T> + <g_j, g_l> = (‖a‖² + 1) g_j·g_l``.
    """
    n, J = g.shape[:2]
    if isinstance(m, _NORMS):
        return _norm_gram(m, a, g)
    if isinstance(m, nn.Linear) and a.ndim == 2:
        gg = g @ g.transpose(1, 2)  # (n, J, J)
        scale = (a * a).sum(1) + (1.0 if m.bias is not None else 0.0)
        return gg * scale[:, None, None]
    out = torch.zeros(n, J, J, dtype=g.dtype, device=g.device)
    per_example = sum(p.numel() for p in m.parameters()) * J * g.element_size()
    step = max(1, _CHUNK_BYTES // max(per_example, 1))
    for s in range(0, n, step):
        sl = slice(s, s + step)
        if isinstance(m, nn.Conv2d):
            padding = m.padding
            assert not isinstance(padding, str)  # string padding takes the torch.func path
            u = nn.functional.unfold(
                a[sl], m.kernel_size, dilation=m.dilation, padding=padding, stride=m.stride
            )  # (b, C*kh*kw, T)
            b, ckk, t = u.shape
            n_out = g.shape[2]
            gg = g[sl].reshape(b, J * n_out, t)  # (b, J*out, T)
            cost_materialize = J * n_out * t * ckk + J * J * n_out * ckk
            cost_positions = t * t * ckk + (J * t) ** 2 * n_out + J * J * t * t
            if cost_positions < cost_materialize:
                # A_jl = Σ_{t,s} (G_j G_lᵀ)_{ts} (UᵀU + 1)_{ts}: cheap when T is small
                uu = torch.bmm(u.transpose(1, 2), u)  # (b, T, T)
                if m.bias is not None:
                    uu = uu + 1.0
                gt = g[sl].reshape(b, J, n_out, t).transpose(2, 3).reshape(b, J * t, n_out)
                gram_pos = torch.bmm(gt, gt.transpose(1, 2)).reshape(b, J, t, J, t)
                out[sl] = torch.einsum("bjtls,bts->bjl", gram_pos, uu)
                continue
            w = torch.bmm(gg, u.transpose(1, 2)).reshape(b, J, -1)  # (b, J, out*C*kh*kw)
            parts = [w]
            if m.bias is not None:
                parts.append(gg.sum(-1).reshape(b, J, -1))
        else:
            a2 = a[sl].reshape(a[sl].shape[0], -1, a.shape[-1])  # (b, T, in)
            b = a2.shape[0]
            g2 = g[sl].reshape(b, J, -1, g.shape[-1])  # (b, J, T, out)
            w = torch.einsum("bjto,bti->bjoi", g2, a2).reshape(b, J, -1)
            parts = [w]
            if m.bias is not None:
                parts.append(g2.sum(2))
        full = torch.cat(parts, 2)
        out[sl] = torch.bmm(full, full.transpose(1, 2))
    return out


def _norm_gram(m: nn.Module, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Affine normalization ``y = γ x̂ + β``: per-example ``dγ = Σ g x̂``, ``dβ = Σ g``."""
    n, J = g.shape[:2]
    if isinstance(m, nn.BatchNorm2d):
        assert m.running_mean is not None and m.running_var is not None
        xhat = (a - m.running_mean[None, :, None, None]) / torch.sqrt(
            m.running_var[None, :, None, None] + m.eps
        )
        reduce_dims: tuple[int, ...] = (3, 4)
    elif isinstance(m, nn.GroupNorm):
        xhat = nn.functional.group_norm(a, m.num_groups, eps=m.eps)
        reduce_dims = tuple(range(3, a.ndim + 1))
    else:
        assert isinstance(m, nn.LayerNorm)
        xhat = nn.functional.layer_norm(a, m.normalized_shape, eps=m.eps)
        k = len(m.normalized_shape)
        reduce_dims = tuple(range(2, a.ndim + 1 - k))
    parts = []
    if getattr(m, "weight", None) is not None:
        gx = g * xhat.unsqueeze(1)
        parts.append((gx.sum(reduce_dims) if reduce_dims else gx).reshape(n, J, -1))
    if getattr(m, "bias", None) is not None:  # LayerNorm(bias=False) has none
        parts.append((g.sum(reduce_dims) if reduce_dims else g).reshape(n, J, -1))
    full = torch.cat(parts, 2)
    return torch.bmm(full, full.transpose(1, 2))


def _functional_grams(
    model: nn.Module,
    x: torch.Tensor,
    names: list[str],
    functionals: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor],
    extra: torch.Tensor | None,
) -> torch.Tensor:
    """Exact per-example Gram over the named parameters, via torch.func."""
    from torch.func import functional_call, jacrev, vmap

    all_params = dict(model.named_parameters())
    buffers = dict(model.named_buffers())
    chosen = {n: all_params[n].detach() for n in names}
    fixed = {n: p.detach() for n, p in all_params.items() if n not in chosen}

    def single(p: dict[str, torch.Tensor], xi: torch.Tensor, ei: Any) -> torch.Tensor:
        out = functional_call(model, ({**fixed, **p}, buffers), (xi.unsqueeze(0),))
        return functionals(out, ei.unsqueeze(0) if ei is not None else None)[0]

    in_dims = (None, 0, 0 if extra is not None else None)
    jac = vmap(jacrev(single), in_dims=in_dims)(chosen, x, extra)  # name -> (n, J, *shape)
    flat = torch.cat([jac[n].reshape(len(x), jac[n].shape[1], -1) for n in names], -1)
    return flat @ flat.transpose(1, 2)


def _grams(
    model: nn.Module,
    x: torch.Tensor,
    functionals: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor],
    extra: torch.Tensor | None = None,
) -> torch.Tensor:
    """``M[i, j, j'] = <∇_θ F_j(x_i), ∇_θ F_j'(x_i)>`` for per-example functionals ``F``.

    ``functionals(scores, extra) -> (n, J)``; ``extra`` holds per-example data (targets).
    """
    named = _params(model)
    if not named:
        raise ValidationError("model has no trainable parameters")
    with _eval_mode(model):
        rec = _Recorder(model)
        try:
            with torch.enable_grad():
                out = model(x)
                F = functionals(out, extra)  # (n, J)
        finally:
            rec.remove()
        shared = _shared_parameter_ids(model)
        fast = [
            m
            for m in rec.outputs
            if rec.outputs[m].requires_grad and _fast_ok(m, rec.calls[m], shared)
        ]
        fast_ids = {id(p) for m in fast for p in m.parameters() if p.requires_grad}
        slow_names = [n for n, p in named if id(p) not in fast_ids]
        _warn_general_path(model, fast_ids, {id(p) for n, p in named if n in slow_names})
        n, J = F.shape
        gram = torch.zeros(n, J, J, dtype=F.dtype, device=F.device)
        if fast:
            outs = [rec.outputs[m] for m in fast]
            per_j: list[list[torch.Tensor]] = []
            for j in range(J):
                grads = torch.autograd.grad(
                    F[:, j].sum(), outs, retain_graph=j < J - 1, allow_unused=True
                )
                per_j.append(
                    [
                        g if g is not None else torch.zeros_like(o)
                        for g, o in zip(grads, outs, strict=True)
                    ]
                )
            for li, m in enumerate(fast):
                a = rec.inputs[m]
                g_all = torch.stack([per_j[j][li] for j in range(J)], 1)  # (n, J, *out)
                gram += _layer_gram(m, a, g_all)
        if slow_names:
            gram += _functional_grams(model, x, slow_names, functionals, extra).to(gram.dtype)
    return gram.detach()


def _scores_functional(out: torch.Tensor, _extra: torch.Tensor | None) -> torch.Tensor:
    return out


def structure_matrices(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``A_x = J_x J_xᵀ`` for every example: shape ``(n_samples, n_classes, n_classes)``.

    Computed in the dtype of the model (use float64 for exact comparisons).
    """
    return _grams(model, x, _scores_functional)


@dataclass(frozen=True)
class StructureSpectrum:
    """Extreme eigenvalues of ``A_x`` per example, and the structural error.

    Eigenvalues on ``R^K`` and restricted to ``1^⊥``; the structural error is
    ``U = −log λ_min``, ``L = −log λ_max``, ``G = U − L`` (computed from the restricted
    eigenvalues for simplex-valued links).
    """

    lam_min: torch.Tensor
    lam_max: torch.Tensor
    lam_min_perp: torch.Tensor
    lam_max_perp: torch.Tensor
    U: torch.Tensor
    L: torch.Tensor
    G: torch.Tensor

    def summary(self) -> dict[str, float]:
        """Return the means and extremes of the per-example values as floats."""
        return {k: float(v.mean()) for k, v in asdict(self).items()} | {
            "lam_min_min": float(self.lam_min.min()),
            "lam_max_max": float(self.lam_max.max()),
        }


def _perp_basis(k: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Orthonormal basis ``U`` (K × K−1) of the complement of the all-ones vector."""
    ones = torch.ones(k, 1, dtype=dtype, device=device) / math.sqrt(k)
    q, _ = torch.linalg.qr(torch.cat([ones, torch.eye(k, dtype=dtype, device=device)[:, :-1]], 1))
    return q[:, 1:]


def structure_spectrum(
    model: nn.Module, x: torch.Tensor, *, simplex: bool = True, matrices: torch.Tensor | None = None
) -> StructureSpectrum:
    """Extreme eigenvalues of the structure matrices and the structural error.

    Parameters
    ----------
    model : nn.Module
    x : tensor of shape (n_samples, ...)
    simplex : bool
        Also the eigenvalues restricted to ``1^⊥`` (for simplex-valued links).
    matrices : tensor of shape (n_samples, K, K), optional
        Precomputed :func:`structure_matrices` (computed when absent).

    Returns
    -------
    StructureSpectrum

    Examples
    --------
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    >>> spec = structure_spectrum(net, torch.randn(5, 4, dtype=torch.float64))
    >>> bool((spec.lam_min <= spec.lam_max).all())
    True
    """
    A = structure_matrices(model, x) if matrices is None else matrices
    ev = torch.linalg.eigvalsh(A)
    k = A.shape[-1]
    basis = _perp_basis(k, A.dtype, A.device)
    evp = torch.linalg.eigvalsh(basis.T @ A @ basis)
    lo, hi = (evp[:, 0], evp[:, -1]) if simplex else (ev[:, 0], ev[:, -1])
    tiny = torch.finfo(A.dtype).tiny
    U = -torch.log(torch.clamp(lo, min=tiny))
    L = -torch.log(torch.clamp(hi, min=tiny))
    return StructureSpectrum(ev[:, 0], ev[:, -1], evp[:, 0], evp[:, -1], U, L, U - L)


def _targets(y: torch.Tensor, k: int, eps: float, dtype: torch.dtype) -> torch.Tensor:
    t = nn.functional.one_hot(y.long(), k).to(dtype)
    return t * (1 - eps) + eps / k if eps else t


def per_example_gradient_norms(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    omega: str | Regularizer = "shannon",
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """``‖∇_θ d_Ω(μ_i, f(x_i))‖`` for every example (computed directly, not from ``A``)."""
    reg = get_regularizer(omega)

    def loss_functional(out: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        assert target is not None
        return reg.loss(target, out).unsqueeze(1)

    param = next(model.parameters())
    target = _targets(y, _n_out(model, x), label_smoothing, param.dtype).to(param.device)
    g = _grams(model, x, loss_functional, target)
    return torch.sqrt(torch.clamp(g[:, 0, 0], min=0))


def _n_out(model: nn.Module, x: torch.Tensor) -> int:
    with torch.no_grad(), _eval_mode(model):
        return int(model(x[:1]).shape[-1])


def gradient_energy(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    omega: str | Regularizer = "shannon",
    label_smoothing: float = 0.0,
) -> float:
    """Mean of per-example squared gradient norms (not the norm of the batch gradient).

    Parameters
    ----------
    model : nn.Module
    x : tensor of shape (n_samples, ...)
    y : tensor of shape (n_samples,)
    omega : str or Regularizer
        The Fenchel–Young loss.
    label_smoothing : float
        ``ε`` of the targets.

    Returns
    -------
    float
        ``(1/n) Σ_i ‖∇_θ ℓ(x_i, y_i)‖²``.

    Examples
    --------
    >>> from torch import nn
    >>> net = nn.Linear(3, 2)
    >>> gradient_energy(net, torch.zeros(4, 3), torch.tensor([0, 1, 0, 1])) > 0
    True
    """
    norms = per_example_gradient_norms(model, x, y, omega=omega, label_smoothing=label_smoothing)
    return float((norms**2).mean())


@dataclass(frozen=True)
class LossSandwich:
    """Per-example ``lower <= loss <= upper`` from gradient norms and spectra (THEORY §4)."""

    lower: torch.Tensor
    loss: torch.Tensor
    upper: torch.Tensor
    grad_sq: torch.Tensor
    residual_sq: torch.Tensor
    p_min: torch.Tensor
    spectrum: StructureSpectrum

    def holds(self, rtol: float = 1e-6) -> torch.Tensor:
        """Return, per example, whether the sandwich holds up to relative tolerance ``rtol``."""
        tol = rtol * torch.clamp(self.loss.abs(), min=1e-12) + 1e-12
        return (self.lower <= self.loss + tol) & (self.loss <= self.upper + tol)


def loss_sandwich(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    omega: str | Regularizer = "shannon",
    label_smoothing: float = 0.0,
) -> LossSandwich:
    """Return the loss sandwiched by gradient energy and extreme eigenvalues.

    ``shannon``: ``‖∇ℓ‖²/(2λ_max) ≤ ℓ ≤ ‖∇ℓ‖²/(λ_min p_min)``; ``squared``:
    ``‖∇ℓ‖²/(2λ_max) ≤ ℓ ≤ ‖∇ℓ‖²/(2λ_min)``, with the eigenvalues of ``A_x`` on ``1^⊥``
    for ``shannon`` (the residual sums to zero) and on ``R^K`` for ``squared``.

    Parameters
    ----------
    model : nn.Module
    x : tensor of shape (n_samples, ...)
    y : tensor of shape (n_samples,)
    omega : {"shannon", "squared"} or Regularizer
    label_smoothing : float
        ``ε`` of the targets.

    Returns
    -------
    LossSandwich
        Per-example ``lower``, ``loss``, ``upper`` and the spectra used.

    Examples
    --------
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    >>> x = torch.randn(6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    >>> bool(loss_sandwich(net, x, torch.arange(6) % 3).holds().all())
    True
    """
    reg = get_regularizer(omega)
    if reg.name not in ("shannon", "squared"):
        raise ValidationError(
            f"loss_sandwich has curvature constants for omega 'shannon' and 'squared' only "
            f"(got {reg.name!r})"
        )
    A = structure_matrices(model, x)
    spec = structure_spectrum(model, x, simplex=reg.simplex, matrices=A)
    with torch.no_grad(), _eval_mode(model):
        out = model(x).to(A.dtype)
    target = _targets(y, out.shape[-1], label_smoothing, A.dtype).to(A.device)
    p = reg.link(out)
    e = p - target
    loss = reg.loss(target, out)
    grad_sq = torch.einsum("nk,nkl,nl->n", e, A, e)
    lam_lo = spec.lam_min_perp if reg.simplex else spec.lam_min
    lam_hi = spec.lam_max_perp if reg.simplex else spec.lam_max
    lower = grad_sq / (2 * lam_hi)
    if reg.name == "shannon":
        p_min = p.min(-1).values
        upper = grad_sq / (lam_lo * p_min)
    else:
        p_min = torch.full_like(loss, float("nan"))
        upper = grad_sq / (2 * lam_lo)
    upper = torch.where(lam_lo > 0, upper, torch.full_like(upper, float("inf")))
    return LossSandwich(
        lower.detach(),
        loss.detach(),
        upper.detach(),
        grad_sq.detach(),
        (e * e).sum(-1).detach(),
        p_min.detach(),
        spec,
    )


def trainability_summary(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, reg: Any, *, label_smoothing: float = 0.0
) -> dict[str, Any]:
    """Report section: gradient energy, spectra summary, sandwich coverage.

    Parameters
    ----------
    model : nn.Module
    x : tensor of shape (n_samples, ...)
        A probe batch of inputs.
    y : tensor of shape (n_samples,)
        Its labels.
    reg : Regularizer
        ``shannon`` or ``squared``.
    label_smoothing : float
        ``ε`` of the targets.

    Returns
    -------
    dict
        ``gradient_energy``, ``mean_loss``, ``fitting_error``, sandwich means and the
        fraction of examples where it held, eigenvalue medians and ``U``, ``L``, ``G``.

    Examples
    --------
    >>> from torch import nn
    >>> from clt_gen.duality import get_regularizer
    >>> net = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    >>> x = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
    >>> out = trainability_summary(net, x, torch.arange(8) % 3, get_regularizer("shannon"))
    >>> out["sandwich_fraction_held"]
    1.0
    """
    if reg.name not in ("shannon", "squared"):
        raise ValidationError("--trainability supports omega 'shannon' and 'squared'")
    dtype = next(model.parameters()).dtype
    sw = loss_sandwich(model, x.to(dtype), y, omega=reg, label_smoothing=label_smoothing)
    holds = sw.holds()
    spec = sw.spectrum
    return {
        "n_samples": int(len(x)),
        "gradient_energy": float(sw.grad_sq.mean()),
        "mean_loss": float(sw.loss.mean()),
        "fitting_error": float(sw.residual_sq.mean()),
        "sandwich_lower_mean": float(sw.lower.mean()),
        "sandwich_upper_mean": float(sw.upper[torch.isfinite(sw.upper)].mean())
        if torch.isfinite(sw.upper).any()
        else None,
        "sandwich_fraction_held": float(holds.float().mean()),
        "lam_min_perp_median": float(spec.lam_min_perp.median()),
        "lam_max_perp_median": float(spec.lam_max_perp.median()),
        "lam_min_median": float(spec.lam_min.median()),
        "lam_max_median": float(spec.lam_max.median()),
        "U_mean": float(spec.U.mean()),
        "L_mean": float(spec.L.mean()),
        "G_mean": float(spec.G.mean()),
    }


def local_pearson(a: Any, b: Any, window: int = 50) -> list[float | None]:
    """Pearson correlation of ``a`` and ``b`` over a trailing window (None until full).

    Examples
    --------
    >>> local_pearson([1, 2, 3, 4], [2, 4, 6, 9], window=3)
    [None, None, 1.0, 0.9933992677987828]
    """
    import numpy as np

    xa, xb = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if xa.shape != xb.shape:
        raise ValidationError(f"a and b must have the same length (got {xa.shape}, {xb.shape})")
    if window < 2:
        raise ValidationError(f"window must be an int >= 2 (got {window})")
    out: list[float | None] = []
    for i in range(len(xa)):
        if i + 1 < window:
            out.append(None)
            continue
        sa, sb = xa[i + 1 - window : i + 1], xb[i + 1 - window : i + 1]
        if sa.std() == 0 or sb.std() == 0:
            out.append(None)
        else:
            out.append(float(np.corrcoef(sa, sb)[0, 1]))
    return out


class TrainabilityProbe(Callback):
    """Training callback recording trainability on a fixed probe batch.

    Every ``every`` steps, record the gradient energy, fitting error, sandwich bounds and
    structural error into ``metrics.jsonl``.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        every: int = 50,
        omega: str = "shannon",
        label_smoothing: float = 0.0,
    ) -> None:
        if every < 1:
            raise ValidationError(f"every must be an int >= 1 (got {every})")
        self.x, self.y, self.every = x, y, every
        self.omega, self.eps = omega, label_smoothing
        self.records: list[dict[str, float]] = []

    def on_step(self, state: Any) -> None:
        """Record the probe's diagnostics every ``every`` steps."""
        if state.step % self.every:
            return
        model = state.model
        dev = next(model.parameters()).device
        sw = loss_sandwich(
            model, self.x.to(dev), self.y.to(dev), omega=self.omega, label_smoothing=self.eps
        )
        spec = sw.spectrum
        rec = {
            "probe_step": state.step,
            "gradient_energy": float(sw.grad_sq.mean()),
            "fitting_error": float(sw.residual_sq.mean()),
            "loss": float(sw.loss.mean()),
            "log_fitting_error": float(torch.log(sw.residual_sq.mean())),
            "log_upper": float(torch.log(sw.grad_sq.mean()) + spec.U.mean()),
            "log_lower": float(torch.log(sw.grad_sq.mean()) + spec.L.mean()),
            "U": float(spec.U.mean()),
            "L": float(spec.L.mean()),
            "G": float(spec.G.mean()),
            "sandwich_fraction_held": float(sw.holds().float().mean()),
        }
        self.records.append(rec)
        state.log(rec)

    def on_epoch_end(self, state: Any) -> None:
        """Do nothing at epoch ends (records are per step)."""
        pass

    def dumps(self) -> str:
        """Return the records as JSON lines."""
        return "\n".join(json.dumps(r) for r in self.records)

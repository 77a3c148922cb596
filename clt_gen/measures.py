"""Classic generalization measures of a trained network, to compare with the CLT terms.

Sources: Jiang et al. 2020, "Fantastic generalization measures"; WeightWatcher.

Every function takes a model (and data where needed) and returns a float; larger is meant
to predict a larger generalization gap, except ``margin`` (reported as is).

Examples
--------
>>> import torch
>>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
>>> parameter_norm(net) > 0
True
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch
from torch import nn

from clt_gen._modes import eval_mode
from clt_gen.errors import ValidationError

__all__ = [
    "parameter_norm",
    "distance_from_init",
    "path_norm",
    "spectral_norms",
    "spectral_product",
    "spectral_sum",
    "margin",
    "pacbayes_flatness",
    "powerlaw_alpha",
    "weightwatcher_summary",
    "all_measures",
]


def _weights(model: nn.Module) -> list[torch.Tensor]:
    return [m.weight.detach() for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def parameter_norm(model: nn.Module) -> float:
    """Frobenius norm of all parameters."""
    return float(math.sqrt(sum(float((p.detach() ** 2).sum()) for p in model.parameters())))


def distance_from_init(model: nn.Module, init: nn.Module) -> float:
    """``‖θ − θ_0‖``; ``init`` is the same architecture at its initialization."""
    pairs = zip(model.parameters(), init.parameters(), strict=True)
    return float(math.sqrt(sum(float(((p.detach() - q.detach()) ** 2).sum()) for p, q in pairs)))


@torch.no_grad()
def path_norm(model: nn.Module, input_shape: tuple[int, ...]) -> float:
    """ℓ2 path norm: square every weight, zero the biases, feed ones, sum the outputs, sqrt.

    Exact for ReLU networks without normalization (for others it is the usual proxy).
    """
    sq = copy.deepcopy(model).eval()
    for m in sq.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            m.weight.pow_(2)
            if m.bias is not None:
                m.bias.zero_()
    param = next(sq.parameters())
    out = sq(torch.ones(1, *input_shape, dtype=param.dtype, device=param.device))
    return float(math.sqrt(max(float(out.sum()), 0.0)))


@torch.no_grad()
def spectral_norms(model: nn.Module, n_iter: int = 30) -> list[float]:
    """Largest singular value of each Linear/Conv2d weight (reshaped to out × rest)."""
    out = []
    for w in _weights(model):
        mat = w.reshape(w.shape[0], -1).double()
        out.append(float(torch.linalg.matrix_norm(mat, ord=2)))
    return out


def spectral_product(model: nn.Module) -> float:
    """``Σ log σ_max(W_l)``: log of the product of spectral norms."""
    return float(np.sum(np.log(spectral_norms(model))))


def spectral_sum(model: nn.Module) -> float:
    """``Σ σ_max(W_l)²``."""
    return float(np.sum(np.square(spectral_norms(model))))


@torch.no_grad()
def margin(model: nn.Module, x: torch.Tensor, y: torch.Tensor, q: float = 0.1) -> float:
    """Return the ``q``-quantile of the output margin ``f_y(x) − max_{j≠y} f_j(x)``."""
    with eval_mode(model):
        out = model(x)
    true = out.gather(1, y.view(-1, 1)).squeeze(1)
    others = out.clone()
    others.scatter_(1, y.view(-1, 1), float("-inf"))
    return float(torch.quantile((true - others.max(1).values).double(), q))


@torch.no_grad()
def pacbayes_flatness(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    target_increase: float = 0.1,
    n_draws: int = 5,
    random_state: int = 0,
) -> float:
    """Return the PAC-Bayes flatness ``1/σ'²`` of a trained model.

    ``σ'`` is the largest Gaussian weight perturbation whose mean training-error increase
    stays below ``target_increase`` (bisection; Jiang et al. eq. 53).
    """
    gen = torch.Generator().manual_seed(random_state)
    with eval_mode(model):
        return _flatness(model, x, y, gen, target_increase, n_draws)


def _flatness(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    gen: torch.Generator,
    target_increase: float,
    n_draws: int,
) -> float:
    base = float((model(x).argmax(1) != y).float().mean())
    params = [p for p in model.parameters()]
    saved = [p.detach().clone() for p in params]

    def increase(sigma: float) -> float:
        errs = []
        for _ in range(n_draws):
            for p, s in zip(params, saved, strict=True):
                p.copy_(s + sigma * torch.randn(s.shape, generator=gen).to(s))
            errs.append(float((model(x).argmax(1) != y).float().mean()))
        for p, s in zip(params, saved, strict=True):
            p.copy_(s)
        return float(np.mean(errs)) - base

    lo, hi = 0.0, 1.0
    while increase(hi) < target_increase and hi < 1e3:
        lo, hi = hi, hi * 2
    for _ in range(12):
        mid = 0.5 * (lo + hi)
        if increase(mid) < target_increase:
            lo = mid
        else:
            hi = mid
    sigma = max(lo, 1e-6)
    return float(1.0 / sigma**2)


def powerlaw_alpha(model: nn.Module, min_tail: int = 5) -> float:
    """Return the mean WeightWatcher-style power-law exponent of the layers' spectra.

    Empirical spectral densities: eigenvalues of ``WᵀW/N``, tail fitted by the Hill/Clauset MLE
    ``α = 1 + n / Σ log(λ_i/λ_min)`` with ``λ_min`` chosen by the KS distance.
    """
    alphas = []
    for w in _weights(model):
        mat = w.reshape(w.shape[0], -1).double()
        ev = torch.linalg.svdvals(mat).numpy() ** 2 / max(mat.shape)
        ev = np.sort(ev[ev > 1e-12])
        if len(ev) < 2 * min_tail:
            continue
        best = (np.inf, np.nan)
        for start in range(0, len(ev) - min_tail):
            tail = ev[start:]
            xmin = tail[0]
            logs = np.log(tail / xmin)
            if logs.sum() <= 0:
                continue
            a = 1 + len(tail) / logs.sum()
            emp = np.arange(len(tail)) / len(tail)
            model_cdf = 1 - (tail / xmin) ** (1 - a)
            ks = np.max(np.abs(emp - model_cdf))
            if ks < best[0]:
                best = (ks, a)
        if np.isfinite(best[1]):
            alphas.append(best[1])
    if not alphas:
        raise ValidationError("no layer is large enough for a power-law fit")
    return float(np.mean(alphas))


def weightwatcher_summary(model: nn.Module) -> dict[str, Any]:
    """WeightWatcher's own layer analysis of ``model``, as its users run it.

    Calls ``weightwatcher.WeightWatcher(model=model).analyze()`` with the package's
    defaults (layers with too few eigenvalues, e.g. a 10-way head, are skipped by it) and
    returns its summary averages. This is the data-free tool users compare clt_gen with;
    :func:`powerlaw_alpha` is this project's own simpler fit and is not the same number.

    Parameters
    ----------
    model : nn.Module

    Returns
    -------
    dict
        ``ww_alpha`` and ``ww_alpha_weighted`` (means over analysed layers; NaN when no
        layer is large enough), ``ww_layers`` (how many were analysed), ``ww_alphas``
        (per layer) and ``ww_version``.

    Raises
    ------
    ValidationError
        When the ``weightwatcher`` package is not installed (with the install command).
    """
    try:
        import weightwatcher as ww
    except ImportError:
        raise ValidationError(
            "weightwatcher_summary needs the weightwatcher package: "
            "pip install 'clt-gen[weightwatcher]'"
        ) from None
    import contextlib
    import io
    import logging
    import warnings

    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    net = copy.deepcopy(model).cpu().eval()
    # the package prints fit notes to stdout; keep a report's output clean
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        watcher = ww.WeightWatcher(model=net)
        details = watcher.analyze()
        summary = watcher.get_summary(details) if len(details) else {}
    alphas = details["alpha"].to_numpy(dtype=float) if len(details) else np.array([])
    return {
        "ww_alpha": float(summary.get("alpha", float("nan"))),
        "ww_alpha_weighted": float(summary.get("alpha_weighted", float("nan"))),
        "ww_layers": int(len(details)),
        "ww_alphas": [float(a) for a in alphas],
        "ww_version": str(getattr(ww, "__version__", "unknown")),
    }


def all_measures(
    model: nn.Module,
    init: nn.Module | None,
    x: torch.Tensor,
    y: torch.Tensor,
    input_shape: tuple[int, ...],
) -> dict[str, Any]:
    """Every baseline measure (``None`` where it cannot be computed).

    Parameters
    ----------
    model : nn.Module
        The trained network.
    init : nn.Module or None
        The same network at initialization (for the distance from init).
    x : tensor of shape (n_samples, ...)
        Training inputs for the data-dependent measures (margin, flatness).
    y : tensor of shape (n_samples,)
        Their labels.
    input_shape : tuple of int
        Shape of one input (for the path norm).

    Returns
    -------
    dict
        Measure name -> value (``None`` where it does not apply).

    Examples
    --------
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    >>> gen = torch.Generator().manual_seed(0)
    >>> out = all_measures(net, None, torch.randn(20, 4, generator=gen), torch.arange(20) % 3, (4,))
    >>> out["distance_from_init"] is None and out["param_norm"] > 0
    True
    """
    out: dict[str, Any] = {
        "param_norm": parameter_norm(model),
        "path_norm": path_norm(model, input_shape),
        "log_spectral_product": spectral_product(model),
        "spectral_sum": spectral_sum(model),
        "neg_margin": -margin(model, x, y),
        "pacbayes_flatness": pacbayes_flatness(model, x, y),
    }
    out["distance_from_init"] = distance_from_init(model, init) if init is not None else None
    try:
        out["powerlaw_alpha"] = powerlaw_alpha(model)
    except ValidationError:
        out["powerlaw_alpha"] = None
    return out

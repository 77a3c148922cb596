"""PAC-Bayes certificates from the training data for any trained network (THEORY §6.5).

The certified object is a *Gibbs* (stochastic) network: a diagonal Gaussian posterior
``Q = N(μ_Q, diag σ_Q²)`` over the model's trainable parameters, which draws fresh
weights for every prediction. :func:`pac_bayes_certificate` takes a user's module and its
training data and

1. builds the prior ``P = N(μ_P, σ_P² I)``: ``μ_P`` the recorded initialization
   (``"init"``), zero, or weights passed in; ``σ_P`` from a grid fixed in advance and paid
   for by a union bound;
2. optimizes ``σ_Q`` (and, with ``optimize_mean=True``, ``μ_Q``) on the training rows by
   the ``f_quad`` or ``f_classic`` objective on the clamped, rescaled cross-entropy;
3. samples the empirical Gibbs risk with one independent weight draw *per example* where
   every sampled layer allows it (``Linear`` by local reparameterization; convolutions
   by per-example kernels in a grouped convolution; normalization layers by per-example
   affine parameters), else one draw per mini-batch;
4. certifies the 0-1 error and the bounded cross-entropy with
   ``kl⁻¹( kl⁻¹(R̄, ln(1/δ_mc)/N), (KL + ln(2√n J/δ_pb))/n )``.

The user's module is never touched: a private copy is sampled. Buffers (BatchNorm running
statistics) are not sampled; parameters with ``requires_grad=False`` are held fixed (a
point mass in both ``P`` and ``Q``, so they must not have been fitted on the bound's rows).

Examples
--------
>>> import torch
>>> from torch import nn
>>> g = torch.Generator().manual_seed(0)
>>> x = torch.randn(400, 5, generator=g); y = (x[:, 0] > 0).long()
>>> net = nn.Sequential(nn.Linear(5, 2))
>>> w0 = {k: v.clone() for k, v in net.state_dict().items()}
>>> _ = torch.optim.SGD(net.parameters(), lr=0.5).zero_grad()
>>> cert = pac_bayes_certificate(net, (x, y), prior=w0, epochs=2, progress=False)
>>> 0.0 <= cert.gibbs_risk["error"] <= cert.values["error"] <= 1.0
True
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import pathlib
import time
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812
from tqdm.auto import tqdm

from clt_gen._io import atomic_write_text
from clt_gen._modes import eval_mode, resolve_device
from clt_gen.errors import DataError, ValidationError, unknown_name_error
from clt_gen.pac_bayes import (
    OBJECTIVES,
    certificate_value,
    kl_inverse,
    objective_function,
    prior_grid,
)
from clt_gen.sources import Source, as_source
from clt_gen.streaming import Output, select_scores

__all__ = [
    "PacBayesCertificate",
    "PacBayesConfig",
    "GaussianPosterior",
    "pac_bayes_certificate",
    "bounded_cross_entropy",
    "sampling_mode",
    "LOSSES",
]

LOSSES = ("error", "ce")
SAMPLINGS = ("auto", "example", "batch")
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm, nn.GroupNorm)
_PER_EXAMPLE = (nn.Linear, *_CONV, *_NORM)


# ---------------------------------------------------------------------------------------
# losses
# ---------------------------------------------------------------------------------------


def bounded_cross_entropy(scores: torch.Tensor, y: torch.Tensor, p_min: float) -> torch.Tensor:
    """Per-example ``−ln max(p_y, p_min) / ln(1/p_min)``: cross-entropy clamped into ``[0, 1]``.

    Examples
    --------
    >>> import torch
    >>> s = torch.tensor([[0.0, 0.0], [100.0, -100.0]])
    >>> bounded_cross_entropy(s, torch.tensor([0, 1]), 1e-4).tolist()
    [0.0752574..., 1.0]
    """
    logp = torch.log_softmax(scores.float(), dim=1).gather(1, y.view(-1, 1)).squeeze(1)
    return (-logp.clamp(min=math.log(p_min))) / math.log(1.0 / p_min)


def _losses(scores: torch.Tensor, y: torch.Tensor, p_min: float) -> dict[str, torch.Tensor]:
    return {
        "error": (scores.argmax(1) != y).to(torch.float64),
        "ce": bounded_cross_entropy(scores, y, p_min).to(torch.float64),
    }


# ---------------------------------------------------------------------------------------
# the posterior and its sampled forward pass
# ---------------------------------------------------------------------------------------


@dataclass
class GaussianPosterior:
    """``N(μ, diag σ²)`` over named parameters; ``σ = exp(log_sigma)``.

    ``fixed`` holds the parameters that are not sampled (``requires_grad=False``).
    """

    mean: dict[str, torch.Tensor]
    log_sigma: dict[str, torch.Tensor]
    fixed: dict[str, torch.Tensor] = field(default_factory=dict)

    def sigma(self, name: str) -> torch.Tensor:
        """Return ``σ`` of parameter ``name``."""
        return self.log_sigma[name].exp()

    def names(self) -> list[str]:
        """Return the sampled parameters' names."""
        return list(self.mean)

    def n_params(self) -> int:
        """Return the number of sampled scalars."""
        return int(sum(t.numel() for t in self.mean.values()))

    def kl(self, prior_mean: Mapping[str, torch.Tensor], prior_sigma: torch.Tensor) -> torch.Tensor:
        """``KL(Q ‖ N(prior_mean, prior_sigma² I))`` (a differentiable float64 scalar)."""
        sp2 = (prior_sigma.to(torch.float64)) ** 2
        total = torch.zeros((), dtype=torch.float64, device=prior_sigma.device)
        for name, mu in self.mean.items():
            ls = self.log_sigma[name].to(torch.float64)
            d = mu.to(torch.float64) - prior_mean[name].to(torch.float64)
            total = total + 0.5 * torch.sum(
                torch.exp(2 * ls) / sp2 + d * d / sp2 - 1.0 + torch.log(sp2) - 2 * ls
            )
        return total

    def draw(self, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """One weight draw for every sampled parameter (and the fixed ones as they are)."""
        out = dict(self.fixed)
        for name, mu in self.mean.items():
            eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
            out[name] = mu + self.sigma(name) * eps
        return out


def sampling_mode(model: nn.Module) -> Literal["example", "batch"]:
    """Return ``example`` when every trainable parameter's layer can be drawn per example.

    Those layers are ``Linear``, ``Conv1d/2d/3d`` and the affine parameters of
    ``BatchNorm``, ``LayerNorm`` and ``GroupNorm``; any other module owning a trainable
    parameter (an attention block's packed projection, an embedding, a bare
    ``nn.Parameter``) makes the network ``batch``: one draw per mini-batch.

    Examples
    --------
    >>> from torch import nn
    >>> sampling_mode(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.LazyLinear(3)))
    'example'
    >>> sampling_mode(nn.Embedding(4, 2))
    'batch'
    """
    for mod in model.modules():
        own = [p for p in mod.parameters(recurse=False) if p.requires_grad]
        if own and not isinstance(mod, _PER_EXAMPLE):
            return "batch"
    return "example"


class _Sampler:
    """Draws per-example weights inside the forward passes of a private model copy."""

    def __init__(self, model: nn.Module, post: GaussianPosterior) -> None:
        self.model = model
        self.post = post
        self.gen: torch.Generator | None = None
        self.mode: Literal["example", "batch"] = "example"
        self.batch_weights: dict[str, torch.Tensor] = {}
        for prefix, mod in model.named_modules():
            if isinstance(mod, _PER_EXAMPLE):
                mod.forward = types.MethodType(self._wrap(mod, prefix), mod)  # type: ignore

    def _param(self, prefix: str, mod: nn.Module, name: str) -> tuple[Any, Any]:
        """``(mean, std)`` of a module's parameter; ``std`` None when it is not sampled."""
        key = f"{prefix}.{name}" if prefix else name
        if key in self.post.mean:
            return self.post.mean[key], self.post.sigma(key)
        t = getattr(mod, name, None)
        return t, None

    def _noise(self, shape: Sequence[int], like: torch.Tensor) -> torch.Tensor:
        return torch.randn(
            tuple(shape), generator=self.gen, device=like.device, dtype=like.dtype
        )

    def _per_example(self, mean: Any, std: Any, batch: int) -> Any:
        """``(batch, *shape)`` draws (or the fixed tensor broadcast)."""
        if mean is None:
            return None
        if std is None:
            return mean.unsqueeze(0).expand(batch, *mean.shape)
        return mean + std * self._noise((batch, *mean.shape), mean)

    def _wrap(self, mod: nn.Module, prefix: str) -> Callable[..., torch.Tensor]:
        sampler = self

        def forward(self_mod: nn.Module, x: torch.Tensor) -> torch.Tensor:
            if sampler.mode == "batch":
                return sampler._batch_forward(self_mod, prefix, x)
            if isinstance(self_mod, nn.Linear):
                return sampler._linear(self_mod, prefix, x)
            if isinstance(self_mod, _CONV):
                return sampler._conv(self_mod, prefix, x)
            return sampler._norm(self_mod, prefix, x)

        return forward

    def _batch_forward(self, mod: nn.Module, prefix: str, x: torch.Tensor) -> torch.Tensor:
        # functional_call has put this batch's draw into the module: its own forward applies
        out: torch.Tensor = type(mod).forward(mod, x)
        return out

    def _linear(self, mod: nn.Linear, prefix: str, x: torch.Tensor) -> torch.Tensor:
        mw, sw = self._param(prefix, mod, "weight")
        mb, sb = self._param(prefix, mod, "bias")
        if x.dim() == 2:
            # local reparameterization: exact per example (each output unit has its own row)
            mean = F.linear(x, mw, mb)
            var = F.linear(x * x, sw * sw, None) if sw is not None else torch.zeros_like(mean)
            if sb is not None:
                var = var + sb * sb
            return mean + var.clamp_min(0).sqrt() * self._noise(mean.shape, mean)
        w = self._per_example(mw, sw, x.shape[0])  # (B, out, in): tokens share their draw
        out = torch.einsum("b...i,boi->b...o", x, w)
        if mb is not None:
            b = self._per_example(mb, sb, x.shape[0])
            out = out + b.view(x.shape[0], *([1] * (x.dim() - 2)), -1)
        return out

    def _conv(self, mod: nn.Module, prefix: str, x: torch.Tensor) -> torch.Tensor:
        # one kernel per example: a grouped convolution with groups = batch * groups
        conv: Any = mod
        mw, sw = self._param(prefix, mod, "weight")
        mb, sb = self._param(prefix, mod, "bias")
        n = x.shape[0]
        w = self._per_example(mw, sw, n).reshape(n * mw.shape[0], *mw.shape[1:])
        b = self._per_example(mb, sb, n)
        b = b.reshape(-1) if b is not None else None
        fn = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[mw.dim() - 2]
        if conv.padding_mode != "zeros":
            raise ValidationError(
                f"layer {prefix!r}: padding_mode={conv.padding_mode!r} is not supported by "
                "per-example sampling; pass sampling='batch'"
            )
        xr = x.reshape(1, n * x.shape[1], *x.shape[2:])
        out = fn(xr, w, b, conv.stride, conv.padding, conv.dilation, conv.groups * n)
        return out.reshape(n, mw.shape[0], *out.shape[2:])

    def _norm(self, mod: nn.Module, prefix: str, x: torch.Tensor) -> torch.Tensor:
        norm: Any = mod
        mw, sw = self._param(prefix, mod, "weight")
        mb, sb = self._param(prefix, mod, "bias")
        n = x.shape[0]
        if isinstance(mod, nn.LayerNorm):
            z = F.layer_norm(x, norm.normalized_shape, None, None, norm.eps)
            shape = (n, *([1] * (x.dim() - 1 - len(norm.normalized_shape))), *norm.normalized_shape)
        elif isinstance(mod, nn.GroupNorm):
            z = F.group_norm(x, norm.num_groups, None, None, norm.eps)
            shape = (n, x.shape[1], *([1] * (x.dim() - 2)))
        else:
            z = F.batch_norm(
                x,
                norm.running_mean,
                norm.running_var,
                None,
                None,
                norm.training or norm.running_mean is None,
                0.0,
                norm.eps,
            )
            shape = (n, x.shape[1], *([1] * (x.dim() - 2)))
        if mw is not None:
            z = z * self._per_example(mw, sw, n).reshape(shape)
        if mb is not None:
            z = z + self._per_example(mb, sb, n).reshape(shape)
        return z

    def __call__(
        self, x: torch.Tensor, gen: torch.Generator, mode: Literal["example", "batch"]
    ) -> Any:
        self.gen, self.mode = gen, mode
        if mode == "batch":
            self.batch_weights = self.post.draw(gen)
            return torch.func.functional_call(
                self.model, self.batch_weights, (x,), strict=False
            )
        return self.model(x)


# ---------------------------------------------------------------------------------------
# the result
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PacBayesCertificate:
    """A PAC-Bayes certificate on the Gibbs network ``Q`` built around a trained model.

    Attributes
    ----------
    values : dict
        ``{"error": ..., "ce": ...}``: each holds with probability ``≥ 1 − delta`` on its
        own (0-1 error; cross-entropy clamped at ``p_min`` and divided by ``ln(1/p_min)``).
    kl : float
        ``KL(Q ‖ P)`` in nats.
    n_samples : int
        Rows of the bound's sample (those the prior never saw).
    delta : float
        Total failure probability of each certificate.
    delta_shares : dict
        ``monte_carlo`` (``δ_mc``), ``pac_bayes`` (``δ − δ_mc``), ``n_priors`` (``J``) and
        ``pac_bayes_per_prior`` (``(δ − δ_mc)/J``).
    n_mc_terms : int
        Independent Monte-Carlo terms behind the empirical Gibbs risk.
    gibbs_risk, gibbs_risk_upper : dict
        The sampled empirical Gibbs risk per loss, and its upper confidence bound.
    prior : dict
        ``kind`` (``init``, ``zero``, ``weights``, ``data_dependent``), ``sigma`` (``σ_P``),
        the grid (``grid_low``, ``grid_high``, ``grid_size``) and the chosen index.
    posterior_mean, posterior_std : dict of str to Tensor
        ``μ_Q`` and ``σ_Q`` per sampled parameter (CPU): enough to sample the certified net.
    sampled_parameters, fixed_parameters, not_sampled_buffers : tuple of str
    optimize_mean : bool
        ``False``: ``μ_Q`` is the user's trained weights, so the certified network is a
        noisy copy of it; ``True``: the means moved, the certified network is a different one.
    objective, p_min, sampling : str, float, str
    check : dict
        When check data was given: the Gibbs network's error and bounded cross-entropy
        there (fresh draws) and the deterministic network's error.
    history : list of dict
        Per optimization epoch: objective, sampled risk, KL, ``σ_P``.
    wall_time : float
        Seconds, optimization and sampling together (``timings`` splits them).
    """

    values: dict[str, float]
    kl: float
    n_samples: int
    delta: float
    delta_shares: dict[str, float]
    n_mc_terms: int
    gibbs_risk: dict[str, float]
    gibbs_risk_upper: dict[str, float]
    prior: dict[str, Any]
    posterior_mean: dict[str, torch.Tensor]
    posterior_std: dict[str, torch.Tensor]
    sampled_parameters: tuple[str, ...]
    fixed_parameters: tuple[str, ...]
    not_sampled_buffers: tuple[str, ...]
    optimize_mean: bool
    objective: str
    p_min: float
    sampling: str
    check: dict[str, float]
    history: tuple[dict[str, float], ...]
    wall_time: float
    timings: dict[str, float]
    rows: dict[str, Any] = field(default_factory=dict)

    @property
    def certified_network(self) -> str:
        """What the certificate is about, in words."""
        if self.optimize_mean:
            return (
                "a Gibbs network whose means were optimized: a different network from the "
                "checkpoint"
            )
        return "a Gibbs network centred at the checkpoint's weights (a noisy copy of it)"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types; the posterior is summarized (its tensors are in ``save``)."""
        stds = torch.cat([s.reshape(-1).double() for s in self.posterior_std.values()])
        return {
            "values": dict(self.values),
            "kl": self.kl,
            "n_samples": self.n_samples,
            "delta": self.delta,
            "delta_shares": dict(self.delta_shares),
            "n_mc_terms": self.n_mc_terms,
            "gibbs_risk": dict(self.gibbs_risk),
            "gibbs_risk_upper": dict(self.gibbs_risk_upper),
            "prior": dict(self.prior),
            "posterior_std_summary": {
                "min": float(stds.min()),
                "median": float(stds.median()),
                "max": float(stds.max()),
                "n": int(stds.numel()),
            },
            "sampled_parameters": list(self.sampled_parameters),
            "fixed_parameters": list(self.fixed_parameters),
            "not_sampled_buffers": list(self.not_sampled_buffers),
            "optimize_mean": self.optimize_mean,
            "certified_network": self.certified_network,
            "objective": self.objective,
            "p_min": self.p_min,
            "sampling": self.sampling,
            "check": dict(self.check),
            "history": [dict(h) for h in self.history],
            "wall_time": self.wall_time,
            "timings": dict(self.timings),
            "rows": dict(self.rows),
        }

    def save_posterior(self, path: str | os.PathLike[str]) -> None:
        """Write ``μ_Q`` and ``σ_Q`` to a safetensors file (keys ``mean/…`` and ``std/…``)."""
        from safetensors.torch import save_file

        tensors = {f"mean/{k}": v.contiguous() for k, v in self.posterior_mean.items()}
        tensors.update({f"std/{k}": v.contiguous() for k, v in self.posterior_std.items()})
        p = pathlib.Path(path)
        tmp = p.with_name(f".{p.name}.tmp")
        save_file(tensors, str(tmp))
        os.replace(tmp, p)

    def sample_network(self, model: nn.Module, random_state: int = 0) -> nn.Module:
        """Return a copy of ``model`` with one weight draw from ``Q`` (``model`` unchanged)."""
        net = copy.deepcopy(model)
        gen = torch.Generator().manual_seed(random_state)
        with torch.no_grad():
            params = dict(net.named_parameters())
            for k, mu in self.posterior_mean.items():
                eps = torch.randn(mu.shape, generator=gen, dtype=mu.dtype)
                params[k].copy_((mu + self.posterior_std[k] * eps).to(params[k].device))
        return net


# ---------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------


def _check_model(model: Any) -> list[tuple[str, nn.Parameter]]:
    if not isinstance(model, nn.Module):
        raise ValidationError(
            f"model must be a torch nn.Module (got {type(model).__name__}); load a checkpoint "
            "with clt_gen.load_checkpoint(path).model"
        )
    trainable = [(k, p) for k, p in model.named_parameters() if p.requires_grad]
    if not trainable:
        raise ValidationError(
            "model has no trainable parameters (every requires_grad is False): the posterior "
            "is over the trainable parameters; set requires_grad=True on those to certify"
        )
    for k, t in list(model.named_parameters()) + list(model.named_buffers()):
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ValidationError(
                f"model tensor {k!r} holds NaN or inf values: a network with non-finite "
                "weights cannot be certified; reload the checkpoint or retrain"
            )
    return trainable


def _check_prior(
    prior: Any, trainable: list[tuple[str, nn.Parameter]], init_state: Any
) -> tuple[str, dict[str, torch.Tensor]]:
    """Return the prior's kind and its means for every trainable parameter."""
    if isinstance(prior, str):
        if prior == "zero":
            return "zero", {k: torch.zeros_like(p.detach()) for k, p in trainable}
        if prior == "init":
            if init_state is None:
                raise ValidationError(
                    "prior='init' needs the network's recorded initialization w_0, which this "
                    "model does not carry: pass init_state= (the state_dict saved before "
                    "training), use a clt_gen checkpoint (clt-gen train records w_0), or "
                    "prior='zero'"
                )
            return "init", _prior_means(init_state, trainable, "init_state")
        raise unknown_name_error("prior", prior, ("init", "zero"))
    if isinstance(prior, Mapping):
        return "weights", _prior_means(prior, trainable, "prior")
    raise ValidationError(
        f"prior must be 'init', 'zero' or a state_dict of weights (got {type(prior).__name__})"
    )


def _prior_means(
    state: Mapping[str, Any], trainable: list[tuple[str, nn.Parameter]], what: str
) -> dict[str, torch.Tensor]:
    missing = [k for k, _ in trainable if k not in state]
    if missing:
        raise ValidationError(
            f"{what} lacks {len(missing)} of the model's trainable parameters (e.g. "
            f"{missing[:3]}); pass a state_dict of the same architecture (model.state_dict() "
            "taken before training)"
        )
    out = {}
    for k, p in trainable:
        t = torch.as_tensor(state[k])
        if tuple(t.shape) != tuple(p.shape):
            raise ValidationError(
                f"{what}[{k!r}] has shape {tuple(t.shape)} but the model's parameter has "
                f"{tuple(p.shape)}; the prior must come from the same architecture"
            )
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ValidationError(f"{what}[{k!r}] holds NaN or inf values")
        out[k] = t.detach().to(dtype=p.dtype)
    return out


def _check_options(
    delta: float, delta_mc: float | None, p_min: float, objective: str, sampling: str
) -> float:
    for name, v in (("delta", delta), ("p_min", p_min)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 < v < 1.0:
            raise ValidationError(
                f"{name} must be a float in (0, 1) (got {v!r}); "
                + ("0.05 is usual" if name == "delta" else "1e-4 is usual")
            )
    if delta_mc is None:
        delta_mc = delta / 5
    if not (isinstance(delta_mc, (int, float)) and 0.0 < delta_mc < delta):
        raise ValidationError(
            f"delta_mc must be in (0, delta) = (0, {delta}) (got {delta_mc!r}); it is the "
            "Monte-Carlo step's share of delta (delta / 5 by default)"
        )
    if objective not in OBJECTIVES:
        raise unknown_name_error("objective", objective, OBJECTIVES)
    if sampling not in SAMPLINGS:
        raise unknown_name_error("sampling", sampling, SAMPLINGS)
    return float(delta_mc)


def _as_grid(prior_sigma: Any) -> np.ndarray:
    if prior_sigma is None:
        return prior_grid()
    grid = np.atleast_1d(np.asarray(prior_sigma, dtype=np.float64))
    if grid.ndim != 1 or not np.all(np.isfinite(grid)) or np.any(grid <= 0):
        raise ValidationError(
            f"prior_sigma must be a float > 0 or a 1-D grid of them (got {prior_sigma!r})"
        )
    return np.sort(grid)


# ---------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------


def _materialize(data: Any, name: str, rows: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """All rows of ``data`` as CPU tensors (a subset when ``rows`` is given)."""
    src = data if isinstance(data, Source) else as_source(data, name=name, batch_size=4096)
    xs, ys = [], []
    for x, y in src.batches():
        xs.append(x.detach().cpu())
        ys.append(y.detach().cpu().long().reshape(-1))
    x, y = torch.cat(xs), torch.cat(ys)
    if rows is not None:
        idx = torch.as_tensor(np.asarray(rows, dtype=np.int64))
        if len(idx) and (int(idx.min()) < 0 or int(idx.max()) >= len(y)):
            raise ValidationError(
                f"rows must index the {len(y)} {name} rows (got indices "
                f"{int(idx.min())}..{int(idx.max())})"
            )
        x, y = x[idx], y[idx]
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise DataError(f"{name} inputs hold NaN or inf values; drop or impute those rows")
    return x, y


# ---------------------------------------------------------------------------------------
# the certificate
# ---------------------------------------------------------------------------------------


def _batches(n: int, batch_size: int, gen: torch.Generator | None) -> Iterator[torch.Tensor]:
    order = torch.randperm(n, generator=gen) if gen is not None else torch.arange(n)
    for i in range(0, n, batch_size):
        yield order[i : i + batch_size]


@dataclass
class _State:
    """What the optimization carries from epoch to epoch (and the cache stores)."""

    post: GaussianPosterior
    log_prior_sigma: torch.Tensor
    prior_index: int | None
    epoch: int
    history: list[dict[str, float]]


def _init_state(
    trainable: list[tuple[str, nn.Parameter]],
    prior_mean: dict[str, torch.Tensor],
    fixed: dict[str, torch.Tensor],
    device: torch.device,
    sigma_init: float | None,
    posterior_std: Mapping[str, torch.Tensor] | None,
    grid: np.ndarray,
) -> _State:
    mean = {k: p.detach().clone().to(device) for k, p in trainable}
    prior = {k: v.to(device) for k, v in prior_mean.items()}
    d = sum(v.numel() for v in mean.values())
    dist2 = float(sum(float(((mean[k] - prior[k]) ** 2).sum()) for k in mean))
    if posterior_std is not None:
        log_sigma = {k: posterior_std[k].detach().to(device).log().clone() for k in mean}
    else:
        s0 = sigma_init if sigma_init is not None else 1e-3
        log_sigma = {k: torch.full_like(v, math.log(s0)) for k, v in mean.items()}
    s_q2 = float(sum(float(torch.exp(2 * v).sum()) for v in log_sigma.values()))
    # the prior scale that minimizes the KL for this start, inside the grid
    sp = math.sqrt(max((s_q2 + dist2) / d, 1e-30))
    sp = float(np.clip(sp, grid[0], grid[-1]))
    lps = torch.tensor(math.log(sp), dtype=torch.float64, device=device)
    return _State(GaussianPosterior(mean, log_sigma, fixed), lps, None, 0, [])


def _snap(state: _State, grid: np.ndarray) -> None:
    """Fix ``σ_P`` at the grid point nearest (in log) to its current value."""
    j = int(np.argmin(np.abs(np.log(grid) - float(state.log_prior_sigma.detach()))))
    state.prior_index = j
    state.log_prior_sigma = torch.tensor(
        math.log(grid[j]), dtype=torch.float64, device=state.log_prior_sigma.device
    )


@torch.no_grad()
def _initial_scale(su: _Setup, opts: dict[str, Any]) -> None:
    """Start from ``σ_Q = σ_P = s`` with ``s`` the best of 25 scales on a few sampled rows.

    Scanning the objective along this one-parameter family (where the KL is just the
    squared distance to the prior mean over ``2s²``) puts the optimizer near the right
    noise level at once, instead of spending its steps crawling there.
    """
    sampler, state, prior_mean, x, y = su.sampler, su.state, su.prior_mean, su.x, su.y
    grid, log_term_const, device = su.grid, su.log_term, su.device
    n = len(y)
    objective = objective_function(opts["objective"])
    gen = torch.Generator(device=device).manual_seed(opts["random_state"] + 31)
    sub = torch.randperm(n, generator=torch.Generator().manual_seed(opts["random_state"]))
    sub = sub[: min(n, 2048)]
    xs, ys = x[sub].to(device), y[sub].to(device)
    best, best_s = math.inf, float(grid[0])
    for s in np.geomspace(grid[0], grid[-1], 25):
        for k in state.post.log_sigma:
            state.post.log_sigma[k].fill_(math.log(s))
        sig = torch.tensor(float(s), dtype=torch.float64, device=device)
        kl = state.post.kl(prior_mean, sig)
        risk = 0.0
        for i in range(0, len(ys), 512):
            scores = select_scores(sampler(xs[i : i + 512], gen, opts["mode"]), opts["output"])
            risk += float(bounded_cross_entropy(scores, ys[i : i + 512], opts["p_min"]).sum())
        value = float(objective(risk / len(ys), kl, n, log_term_const))
        if value < best:
            best, best_s = value, float(s)
    for k in state.post.log_sigma:
        state.post.log_sigma[k].fill_(math.log(best_s))
    state.log_prior_sigma.fill_(math.log(best_s))


def _cache_key(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[
        :24
    ]


def _save_state(path: pathlib.Path, state: _State, opt: torch.optim.Optimizer) -> None:
    from safetensors import SafetensorError

    try:
        _write_state(path, state, opt)
    except (OSError, SafetensorError) as exc:
        import errno
        import shutil

        full = "No space left" in str(exc) or "Disk quota" in str(exc)
        if not full and getattr(exc, "errno", None) not in (errno.ENOSPC, errno.EDQUOT):
            raise
        need = sum(t.numel() * t.element_size() for t in state.post.mean.values()) * 4
        shutil.rmtree(path, ignore_errors=True)
        raise DataError(
            f"no space left for the PAC-Bayes cache at {path.parent} ({exc}): an "
            f"epoch's state needs about {need / 2**20:.1f} MiB (means, scales and Adam's "
            "moments). The half-written entry was removed: free space, or pass another "
            "cache_dir (--cache-dir)"
        ) from None


def _write_state(path: pathlib.Path, state: _State, opt: torch.optim.Optimizer) -> None:
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    for k in state.post.mean:
        tensors[f"mean/{k}"] = state.post.mean[k].detach().cpu().contiguous()
        tensors[f"log_sigma/{k}"] = state.post.log_sigma[k].detach().cpu().contiguous()
    tensors["log_prior_sigma"] = state.log_prior_sigma.detach().cpu().reshape(1)
    opt_state = opt.state_dict()
    for i, st in opt_state["state"].items():
        for name, t in st.items():
            if isinstance(t, torch.Tensor):
                tensors[f"opt/{i}/{name}"] = t.detach().cpu().contiguous().reshape(t.shape)
    path.mkdir(parents=True, exist_ok=True)
    tmp = path / ".state.safetensors.tmp"
    save_file(tensors, str(tmp))
    os.replace(tmp, path / "state.safetensors")
    atomic_write_text(
        path / "state.json",
        json.dumps(
            {"epoch": state.epoch, "prior_index": state.prior_index, "history": state.history}
        ),
    )


def _load_state(path: pathlib.Path, state: _State, opt: torch.optim.Optimizer) -> bool:
    """Restore a cached epoch; False (and a clean start) when the cache is unusable."""
    from safetensors.torch import load_file

    try:
        meta = json.loads((path / "state.json").read_text())
        tensors = load_file(str(path / "state.safetensors"))
    except (OSError, ValueError, json.JSONDecodeError):
        return False
    dev = state.log_prior_sigma.device
    with torch.no_grad():
        for k in state.post.mean:
            state.post.mean[k].copy_(tensors[f"mean/{k}"].to(dev))
            state.post.log_sigma[k].copy_(tensors[f"log_sigma/{k}"].to(dev))
        state.log_prior_sigma.copy_(tensors["log_prior_sigma"].reshape(()).to(dev))
    opt_state = opt.state_dict()
    for i in [i for g in opt_state["param_groups"] for i in g["params"]]:
        st = {}
        for key, t in tensors.items():
            if key.startswith(f"opt/{i}/"):
                st[key.split("/", 2)[2]] = t.to(dev) if key.split("/")[-1] != "step" else t
        if st:
            opt_state["state"][i] = st
    opt.load_state_dict(opt_state)
    state.epoch = int(meta["epoch"])
    state.prior_index = meta["prior_index"]
    state.history = list(meta["history"])
    return True


def _make_optimizer(state: _State, opts: dict[str, Any]) -> tuple[Any, list[torch.Tensor]]:
    """Adam on ``ln σ_Q`` and ``ln σ_P`` (and ``μ_Q`` at its own step); the tensors it moves."""
    params: list[torch.Tensor] = list(state.post.log_sigma.values())
    groups: list[dict[str, Any]] = [
        {"params": list(state.post.log_sigma.values()), "lr": opts["lr"]},
        {"params": [state.log_prior_sigma], "lr": opts["lr"]},
    ]
    if opts["optimize_mean"]:
        params += list(state.post.mean.values())
        groups.append({"params": list(state.post.mean.values()), "lr": opts["lr_mean"]})
    for t in [*params, state.log_prior_sigma]:
        t.requires_grad_(True)
    return torch.optim.Adam(groups), params


def _run_epoch(
    sampler: _Sampler,
    state: _State,
    opt: Any,
    batches: Iterator[torch.Tensor],
    data: tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]],
    *,
    opts: dict[str, Any],
    grid: np.ndarray,
    log_term_const: float,
    gen: torch.Generator,
) -> dict[str, float]:
    """One pass of Adam steps over the batches; returns the epoch's record."""
    x, y, prior_mean = data
    n, dev = len(y), state.log_prior_sigma.device
    objective = objective_function(opts["objective"])
    frozen_prior = state.prior_index is not None
    tot_obj, tot_risk, n_b = 0.0, 0.0, 0
    kl = torch.zeros(())
    for idx in batches:
        xb, yb = x[idx].to(dev, non_blocking=True), y[idx].to(dev, non_blocking=True)
        scores = select_scores(sampler(xb, gen, opts["mode"]), opts["output"])
        risk = bounded_cross_entropy(scores, yb, opts["p_min"]).mean()
        kl = state.post.kl(prior_mean, state.log_prior_sigma.exp())
        loss = objective(risk.double(), kl, n, log_term_const)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if frozen_prior:
            state.log_prior_sigma.grad = None
        opt.step()
        with torch.no_grad():
            state.log_prior_sigma.clamp_(math.log(grid[0]), math.log(grid[-1]))
            for ls in state.post.log_sigma.values():
                ls.clamp_(max=math.log(10.0))
        tot_obj += float(loss.detach())
        tot_risk += float(risk.detach())
        n_b += 1
    return {
        "objective": tot_obj / max(n_b, 1),
        "risk_ce": tot_risk / max(n_b, 1),
        "kl": float(kl.detach()),
        "prior_sigma": float(state.log_prior_sigma.detach().exp()),
    }


def _optimize(su: _Setup, opts: dict[str, Any], cache: pathlib.Path | None) -> None:
    """Minimize the PAC-Bayes objective over ``σ_Q`` (and ``μ_Q``) with Adam, epoch by epoch.

    ``σ_P`` is learned for the first half of the epochs, then fixed at the nearest grid
    point. Each epoch is saved to ``cache``; a rerun resumes from the last one with the
    same generators, so the result does not depend on where it was interrupted.
    """
    sampler, state, prior_mean, x, y = su.sampler, su.state, su.prior_mean, su.x, su.y
    grid, log_term_const, device = su.grid, su.log_term, su.device
    n, epochs, seed = len(y), opts["epochs"], opts["random_state"]
    opt, params = _make_optimizer(state, opts)
    if cache is not None and (cache / "state.json").exists():
        _load_state(cache, state, opt)
    switch = epochs // 2 if state.prior_index is None and len(grid) > 1 else 0
    if len(grid) == 1:
        state.prior_index = 0
        with torch.no_grad():
            state.log_prior_sigma.fill_(math.log(grid[0]))
    gen = torch.Generator(device=device)
    order_gen = torch.Generator().manual_seed(seed + 1)
    for _ in range(state.epoch):  # replay the batch order to the epoch the cache holds
        torch.randperm(n, generator=order_gen)
    bar = tqdm(range(state.epoch, epochs), desc="PAC-Bayes posterior", disable=not opts["progress"])
    for epoch in bar:
        gen.manual_seed(seed + 7919 * epoch)
        if epoch >= switch and state.prior_index is None:
            _snap(state, grid)
        rec = _run_epoch(
            sampler,
            state,
            opt,
            _batches(n, opts["batch_size"], order_gen),
            (x, y, prior_mean),
            opts=opts,
            grid=grid,
            log_term_const=log_term_const,
            gen=gen,
        )
        state.epoch = epoch + 1
        state.history.append({"epoch": epoch + 1, **rec})
        bar.set_postfix(obj=f"{rec['objective']:.4f}", kl=f"{rec['kl']:.0f}")
        if cache is not None:
            _save_state(cache, state, opt)
    if state.prior_index is None:
        _snap(state, grid)
    for t in [*params, state.log_prior_sigma]:
        t.requires_grad_(False)


@torch.no_grad()
def _sample_risks(
    sampler: _Sampler,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    passes: int,
    batch_size: int,
    mode: Literal["example", "batch"],
    seed: int,
    device: torch.device,
    output: Output,
    p_min: float,
    desc: str,
    progress: bool,
) -> tuple[dict[str, float], int]:
    """Empirical Gibbs risks by fresh draws, and the number of independent terms.

    ``example``: one draw per row and pass, ``N = passes · n`` terms. ``batch``: one draw
    per mini-batch; the term of a batch is its loss sum divided by the largest batch size,
    which keeps it in ``[0, 1]`` and makes the mean of the terms ``n/(b N)`` times the
    empirical risk (undone after the upper confidence step by the caller).
    """
    n = len(y)
    gen = torch.Generator(device=device).manual_seed(seed)
    sums = {k: 0.0 for k in LOSSES}
    n_terms = 0
    total = passes * math.ceil(n / batch_size)
    with tqdm(total=total, desc=desc, disable=not progress) as bar:
        for _ in range(passes):
            for idx in _batches(n, batch_size, None):
                xb, yb = x[idx].to(device), y[idx].to(device)
                scores = select_scores(sampler(xb, gen, mode), output)
                for k, v in _losses(scores, yb, p_min).items():
                    sums[k] += float(v.sum())
                n_terms += len(idx) if mode == "example" else 1
                bar.update(1)
    return {k: s / (passes * n) for k, s in sums.items()}, n_terms


@torch.no_grad()
def _deterministic_error(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, output: Output
) -> float:
    """0-1 error of the user's own network (eval mode, restored after; weights untouched)."""
    dev = next(model.parameters()).device
    wrong = 0
    with eval_mode(model):
        for idx in _batches(len(y), 1024, None):
            scores = select_scores(model(x[idx].to(dev)), output)
            wrong += int((scores.argmax(1).cpu() != y[idx]).sum())
    return wrong / max(1, len(y))


def _digest_tensors(tensors: Mapping[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str((tuple(t.shape), str(t.dtype))).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _guard_rows(n: int, n_classes: int, delta_pb: float, n_priors: int) -> None:
    """Refuse samples too small for even a perfect posterior to beat guessing."""
    if n < 8:
        raise DataError(
            f"the bound's sample has {n} rows; the PAC-Bayes-kl bound needs at least 8 "
            "(use more training rows, or a smaller pac-bayes prior fraction)"
        )
    best = float(kl_inverse(0.0, math.log(2 * math.sqrt(n) * n_priors / delta_pb) / n))
    chance = 1.0 - 1.0 / max(n_classes, 2)
    if best >= chance:
        raise DataError(
            f"with {n} rows, delta={delta_pb:g} and a grid of {n_priors} prior scales, even a "
            f"posterior equal to the prior with no training error would be certified only at "
            f"{best:.3f} >= {chance:.3f} (chance for {n_classes} classes): use more rows, a "
            "larger delta, or fewer prior scales (prior_sigma=one value)"
        )


@dataclass(frozen=True)
class PacBayesConfig:
    """Options of :func:`pac_bayes_certificate` (each checked when the config is built).

    Attributes
    ----------
    delta : float
        Failure probability of each certificate (the 0-1 error one, the cross-entropy one).
    delta_mc : float or None
        The Monte-Carlo step's share of ``delta`` (default ``delta / 5``).
    prior_sigma : float, sequence of float, or None
        ``σ_P``, or a grid fixed in advance (default: 4,096 values geometric in
        ``[1e-4, 1]``); choosing from it costs ``δ/J`` each.
    objective : {"f_quad", "f_classic"}
    p_min : float
        Probability floor of the bounded cross-entropy.
    optimize_mean : bool
        Let ``μ_Q`` move (then the certified network is a different one, and says so).
    sigma_init : float or None
        Starting ``σ_Q`` for every parameter (default: the best ``σ_Q = σ_P = s`` of 25
        scales spanning the grid, scored on 2,048 sampled rows).
    epochs, batch_size, lr, lr_mean : int, int, float, float
        Adam on ``ln σ_Q`` and ``ln σ_P`` (step ``lr``) and on ``μ_Q`` (``lr_mean``);
        ``epochs=0`` keeps the start.
    mc_passes : int or None
        Passes of fresh draws over the rows (default: enough for 100,000 terms, at most 50).
    sampling : {"auto", "example", "batch"}
        One weight draw per example (where every sampled layer supports it) or per batch.
    device : str or None
    cache_dir : path or None
        Each optimization epoch is saved there; a killed run resumes from the last one.
    random_state : int
    progress : bool
    """

    delta: float = 0.05
    delta_mc: float | None = None
    prior_sigma: float | Sequence[float] | None = None
    objective: str = "f_quad"
    p_min: float = 1e-4
    optimize_mean: bool = False
    sigma_init: float | None = None
    epochs: int = 10
    batch_size: int = 256
    lr: float = 0.01
    lr_mean: float = 1e-4
    mc_passes: int | None = None
    sampling: str = "auto"
    device: str | None = "auto"
    cache_dir: str | os.PathLike[str] | None = None
    random_state: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        """Check every option; raise :class:`ValidationError` naming the bad one."""
        mc = _check_options(self.delta, self.delta_mc, self.p_min, self.objective, self.sampling)
        object.__setattr__(self, "delta_mc", mc)
        _check_loop_options(self.epochs, self.batch_size, self.lr, self.lr_mean, self.mc_passes)
        _as_grid(self.prior_sigma)


@dataclass
class _Setup:
    """A certificate's inputs once checked: data, private model copy, prior, posterior."""

    x: torch.Tensor
    y: torch.Tensor
    sampler: _Sampler
    state: _State
    prior_mean: dict[str, torch.Tensor]
    prior_kind: str
    grid: np.ndarray
    device: torch.device
    names: list[str]
    fixed: list[str]
    log_term: float


def _prepare(
    model: nn.Module,
    train: Any,
    cfg: PacBayesConfig,
    *,
    prior: Any,
    init_state: Any,
    rows: Any,
    output: Output,
    posterior_std: Mapping[str, torch.Tensor] | None,
) -> _Setup:
    """Check everything, copy the model, load the rows, and start the posterior."""
    trainable = _check_model(model)
    kind, prior_mean = _check_prior(prior, trainable, init_state)
    grid = _as_grid(cfg.prior_sigma)
    dev = resolve_device(cfg.device)
    x, y = _materialize(train, "train", rows)
    net = copy.deepcopy(model).to(dev).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    n_classes = _check_labels(net, x, y, dev, output)
    assert cfg.delta_mc is not None
    delta_pb = cfg.delta - cfg.delta_mc
    _guard_rows(len(y), n_classes, delta_pb, len(grid))
    _resolve_sampling(net, cfg.sampling)
    names = [k for k, _ in trainable]
    fixed = {k: p.detach() for k, p in net.named_parameters() if k not in set(names)}
    state = _init_state(
        [(k, net.get_parameter(k)) for k in names],
        prior_mean,
        fixed,
        dev,
        cfg.sigma_init,
        posterior_std,
        grid,
    )
    return _Setup(
        x,
        y,
        _Sampler(net, state.post),
        state,
        {k: v.to(dev) for k, v in prior_mean.items()},
        kind,
        grid,
        dev,
        names,
        list(fixed),
        math.log(2 * math.sqrt(len(y)) * len(grid) / delta_pb),
    )


def _options(cfg: PacBayesConfig, mode: str, output: Output) -> dict[str, Any]:
    return {
        "epochs": cfg.epochs,
        "lr": cfg.lr,
        "lr_mean": cfg.lr_mean,
        "objective": cfg.objective,
        "optimize_mean": cfg.optimize_mean,
        "batch_size": cfg.batch_size,
        "random_state": cfg.random_state,
        "mode": mode,
        "output": output,
        "p_min": cfg.p_min,
        "progress": cfg.progress,
    }


def _cache_path(
    su: _Setup, model: nn.Module, cfg: PacBayesConfig, opts: dict[str, Any], posterior_std: Any
) -> pathlib.Path | None:
    if cfg.cache_dir is None:
        return None
    key = {
        "model": _digest_tensors(model.state_dict()),
        "prior": _digest_tensors(su.prior_mean),
        "data": _digest_tensors({"x": su.x, "y": su.y}),
        "grid": [float(su.grid[0]), float(su.grid[-1]), len(su.grid)],
        **{k: v for k, v in opts.items() if k not in ("progress", "output")},
        "delta": cfg.delta,
        "delta_mc": cfg.delta_mc,
        "sigma_init": cfg.sigma_init,
        "posterior_std": None if posterior_std is None else _digest_tensors(posterior_std),
    }
    return pathlib.Path(cfg.cache_dir) / f"pac_bayes-{_cache_key(key)}"


def _fit_posterior(
    su: _Setup, opts: dict[str, Any], cache: pathlib.Path | None, start_given: bool
) -> float:
    """Scan the start (unless given or resumed), then optimize; return the prior's σ_P."""
    resuming = cache is not None and (cache / "state.json").exists()
    if not start_given and not resuming:
        _initial_scale(su, opts)
    _optimize(su, opts, cache)
    assert su.state.prior_index is not None
    return float(su.grid[su.state.prior_index])


def _gibbs_check(
    su: _Setup, model: nn.Module, check: Any, sample: dict[str, Any], seed: int
) -> dict[str, float]:
    """Return the Gibbs network's check error (fresh draws) and the model's own error."""
    if check is None:
        return {}
    xc, yc = _materialize(check, "check", None)
    risks, _ = _sample_risks(su.sampler, xc, yc, passes=1, seed=seed, desc="Gibbs check", **sample)
    return {
        "gibbs_error": risks["error"],
        "gibbs_ce": risks["ce"],
        "deterministic_error": _deterministic_error(model, xc, yc, sample["output"]),
        "n_rows": float(len(yc)),
    }


def pac_bayes_certificate(
    model: nn.Module,
    train: Any,
    *,
    prior: str | Mapping[str, Any] = "init",
    init_state: Mapping[str, Any] | None = None,
    check: Any = None,
    rows: Sequence[int] | np.ndarray | None = None,
    posterior_std: Mapping[str, torch.Tensor] | None = None,
    output: Output = None,
    prior_kind: str | None = None,
    config: PacBayesConfig | None = None,
    **options: Any,
) -> PacBayesCertificate:
    """Certify the Gibbs network around ``model`` from its training data (THEORY §6.5).

    Parameters
    ----------
    model : nn.Module
        Any module returning class scores ``(batch, K)``; left exactly as it was
        (parameters, buffers, train/eval mode): a private copy is sampled.
    train : Dataset, DataLoader or (inputs, labels)
        The training sample ``S``, held in memory for the passes.
    prior : {"init", "zero"} or state_dict
        ``μ_P``: ``w_0`` (``init_state``), zero, or weights that do not depend on ``S``.
    init_state : state_dict, optional
        ``w_0`` for ``prior="init"`` (``clt-gen train`` saves it as ``init.safetensors``).
    check : Dataset, DataLoader or (inputs, labels), optional
        Held-out data: the Gibbs network's error there (fresh draws) and the model's own.
    rows : sequence of int, optional
        The rows of ``train`` the bound uses (e.g. those a data-dependent prior never saw).
    posterior_std, output, prior_kind : optional
        Starting ``σ_Q`` per parameter; the scores' selector for tuple/dict outputs; the
        recorded prior kind (``data_dependent`` for a prior trained on other rows).
    config : PacBayesConfig, optional
    **options
        Any :class:`PacBayesConfig` field (``delta``, ``prior_sigma``, ``epochs``...).

    Returns
    -------
    PacBayesCertificate

    Raises
    ------
    ValidationError
        Options out of range, a prior that does not match the model, a model without
        trainable parameters or with non-finite weights, too few rows to say anything.

    Examples
    --------
    >>> import copy, torch
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.randn(2000, 5, generator=g); y = (x[:, 0] > 0).long()
    >>> net = torch.nn.Linear(5, 2); w0 = copy.deepcopy(net.state_dict())
    >>> opt = torch.optim.SGD(net.parameters(), lr=0.5)
    >>> for _ in range(100):
    ...     opt.zero_grad(); torch.nn.functional.cross_entropy(net(x), y).backward(); opt.step()
    >>> cert = pac_bayes_certificate(net, (x, y), prior="init", init_state=w0, epochs=2,
    ...                              progress=False)
    >>> cert.values["error"] < 0.25, cert.sampling
    (True, 'example')
    """
    t_start = time.perf_counter()
    cfg = _config(config, options)
    su = _prepare(model, train, cfg, prior=prior, init_state=init_state, rows=rows,
                  output=output, posterior_std=posterior_std)
    mode = _resolve_sampling(su.sampler.model, cfg.sampling)
    opts = _options(cfg, mode, output)
    start_given = cfg.sigma_init is not None or posterior_std is not None
    cache = _cache_path(su, model, cfg, opts, posterior_std)
    t0 = time.perf_counter()
    sigma_p = _fit_posterior(su, opts, cache, start_given)
    t_opt = time.perf_counter() - t0
    risks, terms, t_mc = _sample_train(su, cfg, mode, output)
    return _result(su, model, cfg, (risks, terms, sigma_p), mode, check, output,
                   prior_kind=prior_kind, rows=rows,
                   timings={"optimize": t_opt, "sample": t_mc, "t_start": t_start})


def _config(config: PacBayesConfig | None, options: dict[str, Any]) -> PacBayesConfig:
    """Return ``config`` with ``options`` applied (each checked)."""
    if config is None:
        return PacBayesConfig(**options)
    merged = {**config.__dict__, **options}
    if "delta" in options and "delta_mc" not in options:
        merged["delta_mc"] = None  # the default share of the new delta
    return PacBayesConfig(**merged)


def _sample_train(
    su: _Setup, cfg: PacBayesConfig, mode: str, output: Output
) -> tuple[dict[str, float], dict[str, Any], float]:
    """Sample the empirical Gibbs risks on the bound's rows; return them and the terms."""
    n = len(su.y)
    passes = cfg.mc_passes or int(min(50, max(1, math.ceil(100_000 / n))))
    mc_batch = 256 if mode == "example" else cfg.batch_size
    sample: dict[str, Any] = {"batch_size": mc_batch, "mode": mode, "device": su.device,
                              "output": output, "p_min": cfg.p_min, "progress": cfg.progress}
    t0 = time.perf_counter()
    risks, n_terms = _sample_risks(su.sampler, su.x, su.y, passes=passes,
                                   seed=cfg.random_state + 104729, desc="PAC-Bayes sampling",
                                   **sample)
    # terms: one per row and pass ("example"), or a batch's loss sum over the largest
    # batch ("batch"); ratio turns the terms' mean into the empirical Gibbs risk
    ratio = (1 if mode == "example" else mc_batch) * n_terms / (passes * n)
    terms = {"n_terms": n_terms, "ratio": ratio, "passes": passes, "sample": sample}
    return risks, terms, time.perf_counter() - t0


def _result(
    su: _Setup,
    model: nn.Module,
    cfg: PacBayesConfig,
    sampled: tuple[dict[str, float], dict[str, Any], float],
    mode: str,
    check: Any,
    output: Output,
    *,
    prior_kind: str | None,
    rows: Any,
    timings: dict[str, float],
) -> PacBayesCertificate:
    """Certify both losses and assemble the result."""
    risks, terms, sigma_p = sampled
    n, post = len(su.y), su.state.post
    sig = torch.tensor(sigma_p, dtype=torch.float64, device=su.device)
    kl = float(post.kl(su.prior_mean, sig))
    assert cfg.delta_mc is not None
    values, uppers, shares = _certify(
        risks, terms["ratio"], n_terms=terms["n_terms"], kl=kl, n=n, delta=cfg.delta,
        delta_mc=cfg.delta_mc, n_priors=len(su.grid),
    )
    check_stats = _gibbs_check(su, model, check, terms["sample"], cfg.random_state + 7_368_787)
    return PacBayesCertificate(
        values=values,
        kl=kl,
        n_samples=n,
        delta=cfg.delta,
        delta_shares=shares,
        n_mc_terms=terms["n_terms"],
        gibbs_risk={k: float(v) for k, v in risks.items()},
        gibbs_risk_upper=uppers,
        prior={
            "kind": prior_kind or su.prior_kind,
            "sigma": sigma_p,
            "grid_low": float(su.grid[0]),
            "grid_high": float(su.grid[-1]),
            "grid_size": len(su.grid),
            "index": su.state.prior_index,
        },
        posterior_mean={k: v.detach().cpu().clone() for k, v in post.mean.items()},
        posterior_std={k: post.sigma(k).detach().cpu().clone() for k in post.mean},
        sampled_parameters=tuple(su.names),
        fixed_parameters=tuple(su.fixed),
        not_sampled_buffers=tuple(k for k, _ in model.named_buffers()),
        optimize_mean=cfg.optimize_mean,
        objective=cfg.objective,
        p_min=cfg.p_min,
        sampling=mode,
        check=check_stats,
        history=tuple(su.state.history),
        wall_time=time.perf_counter() - timings["t_start"],
        timings={"optimize": timings["optimize"], "sample": timings["sample"],
                 "mc_passes": float(terms["passes"])},
        rows={"n_rows": n, "subset": rows is not None},
    )


def _check_loop_options(
    epochs: Any, batch_size: Any, lr: Any, lr_mean: Any, mc_passes: Any
) -> None:
    for name, v, low in (("epochs", epochs, 0), ("batch_size", batch_size, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise ValidationError(f"{name} must be an int >= {low} (got {v!r})")
    for name, v in (("lr", lr), ("lr_mean", lr_mean)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (
            v > 0 and math.isfinite(v)
        ):
            raise ValidationError(f"{name} must be a float > 0 (got {v!r})")
    if mc_passes is not None and (
        isinstance(mc_passes, bool) or not isinstance(mc_passes, int) or mc_passes < 1
    ):
        raise ValidationError(f"mc_passes must be an int >= 1 (got {mc_passes!r})")


def _check_labels(
    net: nn.Module, x: torch.Tensor, y: torch.Tensor, dev: torch.device, output: Output
) -> int:
    """Return the model's number of classes, after checking the labels against it."""
    with torch.no_grad():
        probe = select_scores(net(x[:2].to(dev)), output)
    k = int(probe.shape[1])
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= k):
        raise DataError(
            f"train labels must be class indices in 0..{k - 1} for a model with {k} outputs "
            f"(got {int(y.min())}..{int(y.max())})"
        )
    return k


def _resolve_sampling(net: nn.Module, sampling: str) -> Literal["example", "batch"]:
    possible = sampling_mode(net)
    if sampling == "auto":
        return possible
    if sampling == "example" and possible == "batch":
        raise ValidationError(
            "sampling='example' needs every trainable parameter in a Linear, Conv or "
            "normalization layer; this model has others: pass sampling='batch' or 'auto'"
        )
    return "example" if sampling == "example" else "batch"


def _certify(
    risks: dict[str, float],
    ratio: float,
    *,
    n_terms: int,
    kl: float,
    n: int,
    delta: float,
    delta_mc: float,
    n_priors: int,
) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
    """Both certificates: the Monte-Carlo step, then the PAC-Bayes step, per loss."""
    values, uppers = {}, {}
    for loss in LOSSES:
        out = certificate_value(
            risks[loss], n_mc_terms=n_terms, kl=kl, n_samples=n, delta=delta,
            delta_mc=delta_mc, n_priors=n_priors, ratio=ratio,
        )
        values[loss], uppers[loss] = out["value"], out["empirical_upper"]
    shares = {k: float(v) for k, v in out["delta_shares"].items()}
    return values, uppers, shares

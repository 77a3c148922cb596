"""Training with any registered Fenchel–Young loss.

SGD or AdamW, cosine schedule, label smoothing, dropout, augmentation, early stopping,
KKB's two-phase option; CUDA with mixed precision when present, seeded and deterministic
on CPU.

The training objective is the risk under the (smoothed) target distribution
``q̃(·|x_i) = t_i``: ``E_{y~t_i} d_Ω(e_y, f(x_i)) = Ω(e_y) + Ω*(f(x_i)) − ⟨t_i, f(x_i)⟩``,
which for ``shannon`` is cross-entropy with label smoothing. The data floor of
``clt_gen.bounds`` lower-bounds exactly this quantity.

Examples
--------
>>> import tempfile
>>> cfg = TrainConfig(arch="mlp", arch_kwargs={"width": 64, "depth": 1}, dataset="digits",
...                   epochs=3, optimizer="adamw", lr=3e-3, progress=False)
>>> result = train(cfg, tempfile.mkdtemp() + "/run")
>>> result.metrics["check_accuracy"] > 0.5
True
"""

from __future__ import annotations

import copy
import json
import math
import os
import pathlib
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
from torch import nn
from tqdm.auto import tqdm

from clt_gen._modes import eval_mode, resolve_device
from clt_gen.callbacks import Callback, TrainState
from clt_gen.checkpoints import INIT_FILE, save_checkpoint, save_tensors
from clt_gen.data import DataConfig, Splits, augment_batch, load_dataset, make_splits
from clt_gen.duality import get_regularizer, objective, smoothed_targets
from clt_gen.errors import ValidationError, check_field_types
from clt_gen.models import build_model

__all__ = [
    "TrainConfig",
    "TrainResult",
    "TrainState",
    "Callback",
    "TrainingDivergedError",
    "train",
    "resolve_device",
    "evaluate_split",
    "smoothed_targets",
    "objective",
]


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run (recorded in ``meta.json``).

    Attributes
    ----------
    arch, arch_kwargs
        Registered architecture (:func:`~clt_gen.models.build_model`) and its options.
    dataset, data_dir, dataset_params
        Registered dataset (:func:`~clt_gen.data.load_dataset`), where its files are, and
        its options.
    data : DataConfig
        Subset, label corruption and split fractions.
    omega, alpha
        The Fenchel–Young loss (``alpha`` for ``tsallis``).
    epochs, batch_size, lr, optimizer, momentum, weight_decay, schedule
        The optimizer and its cosine or constant schedule.
    dropout, label_smoothing, augment
        Regularizers of the run.
    early_stopping : int or None
        Stop after this many epochs without a better validation risk.
    two_phase : float or None
        Train only the last layer after this fraction of the epochs (KKB's option).
    random_state : int
        Seeds the initialization, the batch order and the augmentation.
    device : {"auto", "cpu", "cuda"}
    probe_every : int
        Record trainability diagnostics every this many steps (0: never).
    progress : bool
        Show progress bars.
    pac_bayes_prior : float or None
        PAC-Bayes training with a data-dependent prior (Pérez-Ortiz et al. 2021): the
        network is first trained by ERM on this seeded fraction of the training rows (the
        prior means), then a Gaussian posterior started at the prior is trained on the other
        rows by ``pac_bayes_objective``; the checkpoint holds the posterior means as its
        weights, the prior, the posterior's standard deviations, which rows each phase used,
        and a certificate on the rows the prior never saw (THEORY §6.5).
    pac_bayes_sigma, pac_bayes_epochs, pac_bayes_objective, pac_bayes_lr, pac_bayes_delta
        The prior's standard deviation ``σ_P`` (fixed, no grid), the posterior's epochs
        (default ``epochs``), objective (``f_quad`` or ``f_classic``), Adam step on the
        means, and the certificate's ``δ``.

    Examples
    --------
    >>> cfg = TrainConfig(arch="mlp", epochs=1, random_state=3)
    >>> cfg.to_dict()["random_state"]
    3
    """

    arch: str = "lenet"
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    dataset: str = "digits"
    data_dir: str | None = None
    data: DataConfig = field(default_factory=DataConfig)
    dataset_params: dict[str, Any] = field(default_factory=dict)
    omega: str = "shannon"
    alpha: float = 1.5
    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.01
    optimizer: Literal["sgd", "adamw"] = "sgd"
    momentum: float = 0.9
    weight_decay: float = 0.0
    dropout: float = 0.0
    label_smoothing: float = 0.0
    augment: bool = False
    schedule: Literal["cosine", "constant"] = "cosine"
    early_stopping: int | None = None
    two_phase: float | None = None
    random_state: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    probe_every: int = 0
    progress: bool = True
    pac_bayes_prior: float | None = None
    pac_bayes_sigma: float = 0.03
    pac_bayes_epochs: int | None = None
    pac_bayes_objective: str = "f_quad"
    pac_bayes_lr: float = 1e-3
    pac_bayes_delta: float = 0.05

    def __post_init__(self) -> None:
        """Check every field; raise :class:`ValidationError` naming the bad one."""
        check_field_types(self)
        if self.epochs < 1:
            raise ValidationError(f"epochs must be an int >= 1 (got {self.epochs})")
        if self.batch_size < 1:
            raise ValidationError(f"batch_size must be an int >= 1 (got {self.batch_size})")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValidationError(f"lr must be a float > 0 (got {self.lr})")
        if self.optimizer not in ("sgd", "adamw"):
            raise ValidationError(f"optimizer must be 'sgd' or 'adamw' (got {self.optimizer!r})")
        if self.schedule not in ("cosine", "constant"):
            raise ValidationError(
                f"schedule must be 'cosine' or 'constant' (got {self.schedule!r})"
            )
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValidationError(f"label_smoothing must be in [0, 1) (got {self.label_smoothing})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValidationError(f"dropout must be in [0, 1) (got {self.dropout})")
        if self.two_phase is not None and not 0.0 < self.two_phase <= 1.0:
            raise ValidationError(
                "two_phase must be a fraction in (0, 1] of the training data "
                f"(got {self.two_phase})"
            )
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValidationError(f"device must be 'auto', 'cpu' or 'cuda' (got {self.device!r})")
        if self.pac_bayes_prior is not None:
            self._check_pac_bayes()
        get_regularizer(self.omega, **({"alpha": self.alpha} if self.omega == "tsallis" else {}))

    def _check_pac_bayes(self) -> None:
        from clt_gen.pac_bayes import OBJECTIVES

        f = self.pac_bayes_prior
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0.0 < f < 1.0:
            raise ValidationError(
                f"pac_bayes_prior must be a fraction in (0, 1) of the training rows that "
                f"train the prior (got {f!r}); 0.5 is usual"
            )
        if self.omega != "shannon":
            raise ValidationError(
                f"pac_bayes_prior trains the posterior on the bounded cross-entropy: omega "
                f"must be 'shannon' (got {self.omega!r})"
            )
        for name in ("pac_bayes_sigma", "pac_bayes_lr"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and v > 0 and math.isfinite(v)):
                raise ValidationError(f"{name} must be a float > 0 (got {v!r})")
        if not 0.0 < self.pac_bayes_delta < 1.0:
            raise ValidationError(
                f"pac_bayes_delta must be in (0, 1) (got {self.pac_bayes_delta}); 0.05 is usual"
            )
        if self.pac_bayes_epochs is not None and self.pac_bayes_epochs < 0:
            raise ValidationError(
                f"pac_bayes_epochs must be an int >= 0 (got {self.pac_bayes_epochs})"
            )
        if self.pac_bayes_objective not in OBJECTIVES:
            from clt_gen.errors import unknown_name_error

            raise unknown_name_error("pac_bayes_objective", self.pac_bayes_objective, OBJECTIVES)
        if self.two_phase is not None:
            raise ValidationError(
                "pac_bayes_prior and two_phase both split the training rows: use one"
            )

    def to_dict(self) -> dict[str, Any]:
        """Return the configuration as plain JSON types."""
        d = asdict(self)
        d["data"] = self.data.to_dict()
        return d

    def regularizer(self) -> Any:
        """Return the :class:`~clt_gen.duality.Regularizer` of ``loss``."""
        return get_regularizer(
            self.omega, **({"alpha": self.alpha} if self.omega == "tsallis" else {})
        )


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint was kept."""


@dataclass
class TrainResult:
    """What :func:`train` returns: the checkpoint directory, final metrics and metadata."""

    path: pathlib.Path
    metrics: dict[str, float]
    meta: dict[str, Any]


@torch.no_grad()
def evaluate_split(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    reg: Any,
    label_smoothing: float,
    device: torch.device,
    batch_size: int = 1024,
) -> dict[str, float]:
    """Mean objective and accuracy of ``model`` (eval mode) on a split."""
    total_loss, correct = 0.0, 0
    with eval_mode(model):
        for i in range(0, len(y), batch_size):
            xb, yb = x[i : i + batch_size].to(device), y[i : i + batch_size].to(device)
            out = model(xb)
            total_loss += float(objective(reg, out, yb, label_smoothing).sum())
            correct += int((out.argmax(1) == yb).sum())
    n = max(1, len(y))
    return {"loss": total_loss / n, "accuracy": correct / n}


def _last_linear(model: nn.Module) -> nn.Module:
    last = None
    for m in model.modules():
        if isinstance(m, nn.Linear):
            last = m
    if last is None:
        raise ValidationError("two_phase needs a model whose last layer is nn.Linear")
    return last


def _make_optimizer(cfg: TrainConfig, params: Any) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _arch_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    kw = dict(cfg.arch_kwargs)
    if cfg.dropout:
        kw["dropout"] = cfg.dropout
    return kw


@dataclass
class _Run:
    """What every stage of one training run shares."""

    cfg: TrainConfig
    out: pathlib.Path
    splits: Splits
    model: nn.Module
    reg: Any
    device: torch.device
    amp_dtype: torch.dtype
    scaler: Any
    gen: torch.Generator
    meta_base: dict[str, Any]
    callbacks: list[Callback]
    step: int = 0
    n_seen: int = 0
    last_good: dict[str, Any] = field(default_factory=dict)

    @property
    def use_amp(self) -> bool:
        return self.device.type == "cuda"

    def log(self, record: dict[str, Any]) -> None:
        with open(self.out / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps(record, default=float) + "\n")


def _meta_base(cfg: TrainConfig, splits: Splits, device: torch.device) -> dict[str, Any]:
    return {
        "arch": cfg.arch,
        "arch_kwargs": _arch_kwargs(cfg),
        "input_shape": list(splits.x["train"].shape[1:]),
        "n_classes": splits.n_classes,
        "dataset": splits.dataset,
        "data_config": splits.config.to_dict(),
        "data_fingerprint": splits.fingerprint(),
        "split_sizes": splits.sizes(),
        "train_config": cfg.to_dict(),
        "omega": cfg.omega,
        "device": str(device),
    }


def _setup(
    cfg: TrainConfig, out: pathlib.Path, splits: Splits | None, callbacks: Sequence[Callback]
) -> _Run:
    """Return the data, model (seeded), mixed precision and callbacks of a run."""
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    if splits is None:
        ds = load_dataset(cfg.dataset, data_dir=cfg.data_dir, **cfg.dataset_params)
        splits = make_splits(ds, cfg.data)
    (out / "metrics.jsonl").unlink(missing_ok=True)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(cfg.random_state)
        model = build_model(
            cfg.arch, tuple(splits.x["train"].shape[1:]), splits.n_classes, **_arch_kwargs(cfg)
        )
    # w_0, drawn before any data is seen: the mean of a data-free PAC-Bayes prior
    init_sha = save_tensors(out / INIT_FILE, dict(model.state_dict()))
    model.to(device)
    use_amp = device.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    run = _Run(
        cfg=cfg,
        out=out,
        splits=splits,
        model=model,
        reg=cfg.regularizer(),
        device=device,
        amp_dtype=amp_dtype,
        scaler=torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16),
        gen=torch.Generator().manual_seed(cfg.random_state + 1),
        meta_base={**_meta_base(cfg, splits, device), "init_sha256": init_sha},
        callbacks=list(callbacks),
    )
    run.callbacks += _probe_callbacks(run)
    run.last_good = copy.deepcopy(model.state_dict())
    return run


def _probe_callbacks(run: _Run) -> list[Callback]:
    cfg = run.cfg
    if cfg.probe_every <= 0:
        return []
    from clt_gen.trainability import TrainabilityProbe

    if run.reg.name not in ("shannon", "squared"):
        raise ValidationError(
            f"probe_every needs omega 'shannon' or 'squared' (got {run.reg.name!r})"
        )
    n_probe = min(64, len(run.splits.y["train"]))
    x = run.splits.x["train"][:n_probe].to(run.device)
    y = run.splits.y["train"][:n_probe].to(run.device)
    probe = TrainabilityProbe(
        x, y, every=cfg.probe_every, omega=run.reg.name, label_smoothing=cfg.label_smoothing
    )
    return [probe]


def _phases(run: _Run) -> list[tuple[str, torch.Tensor, torch.Tensor, list[nn.Parameter]]]:
    """``(name, inputs, labels, trained parameters)``: one phase, or two with ``two_phase``."""
    x_all = run.splits.x["train"].to(run.device)
    y_all = run.splits.y["train"].to(run.device)
    if run.cfg.two_phase is None:
        return [("train", x_all, y_all, list(run.model.parameters()))]
    n1 = max(1, int(round(run.cfg.two_phase * len(y_all))))
    return [
        ("phase1", x_all[:n1], y_all[:n1], list(run.model.parameters())),
        ("phase2", x_all, y_all, list(_last_linear(run.model).parameters())),
    ]


def _diverged(run: _Run, loss: torch.Tensor, epoch: int, last_finite: float | None) -> None:
    """Save the last good weights and raise :class:`TrainingDivergedError`."""
    run.model.load_state_dict(run.last_good)
    save_checkpoint(
        run.out, run.model, {**run.meta_base, "status": "diverged", "diverged_at_step": run.step}
    )
    raise TrainingDivergedError(
        f"loss became {float(loss.detach())} at step {run.step} (epoch {epoch + 1}); "
        f"the last finite loss was {last_finite} at step {run.step - 1}. The last "
        f"good weights (end of the previous epoch) are saved in {run.out}. Lower lr "
        f"(got {run.cfg.lr}) or add weight_decay"
    )


def _train_epoch(
    run: _Run, phase: str, epoch: int, xp: torch.Tensor, yp: torch.Tensor, opt: Any, sched: Any
) -> float:
    """One pass over ``(xp, yp)`` in seeded random order; returns the mean training loss."""
    cfg = run.cfg
    run.model.train()
    steps = math.ceil(len(yp) / cfg.batch_size)
    perm = torch.randperm(len(yp), generator=run.gen).to(run.device)
    flip = run.splits.dataset in ("cifar10", "cifar100")
    bar = tqdm(
        range(steps),
        desc=f"{phase} epoch {epoch + 1}/{cfg.epochs}",
        disable=not cfg.progress,
        leave=False,
    )
    running, last_finite = 0.0, None
    for b in bar:
        idx = perm[b * cfg.batch_size : (b + 1) * cfg.batch_size]
        xb, yb = xp[idx], yp[idx]
        if cfg.augment:
            xb = augment_batch(xb, run.gen, flip=flip)
        with torch.autocast(run.device.type, dtype=run.amp_dtype, enabled=run.use_amp):
            out_scores = run.model(xb)
        loss = objective(run.reg, out_scores, yb, cfg.label_smoothing).mean()
        if not torch.isfinite(loss):
            _diverged(run, loss, epoch, last_finite)
        last_finite = float(loss.detach())
        opt.zero_grad(set_to_none=True)
        run.scaler.scale(loss).backward()
        run.scaler.step(opt)
        run.scaler.update()
        if sched is not None:
            sched.step()
        run.step += 1
        run.n_seen += len(yb)
        running += last_finite
        if run.callbacks:
            state = TrainState(run.model, run.step, epoch, last_finite, xb, yb, cfg, run.log)
            for cb in run.callbacks:
                cb.on_step(state)
        if b % 20 == 0:
            bar.set_postfix(loss=f"{running / (b + 1):.4f}")
    return running / steps


def _val_metrics(run: _Run) -> dict[str, float]:
    sp = run.splits
    if not len(sp.y["val"]):
        return {"loss": math.nan, "accuracy": math.nan}
    return evaluate_split(
        run.model, sp.x["val"], sp.y["val"], run.reg, run.cfg.label_smoothing, run.device
    )


def _train_phase(
    run: _Run, phase: str, xp: torch.Tensor, yp: torch.Tensor, params: list[nn.Parameter]
) -> None:
    """Train ``params`` for ``epochs`` (with early stopping) and log every epoch."""
    cfg = run.cfg
    for prm in run.model.parameters():
        prm.requires_grad_(any(prm is q for q in params))
    opt = _make_optimizer(cfg, [q for q in params if q.requires_grad])
    total = math.ceil(len(yp) / cfg.batch_size) * cfg.epochs
    sched = (
        torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
        if cfg.schedule == "cosine"
        else None
    )
    best_val, best_state, bad_epochs = math.inf, None, 0
    for epoch in range(cfg.epochs):
        t_epoch = time.perf_counter()
        train_loss = _train_epoch(run, phase, epoch, xp, yp, opt, sched)
        val = _val_metrics(run)
        secs = time.perf_counter() - t_epoch
        run.log(
            {
                "phase": phase,
                "epoch": epoch + 1,
                "step": run.step,
                "train_loss": train_loss,
                "val_loss": val["loss"],
                "val_accuracy": val["accuracy"],
                "lr": opt.param_groups[0]["lr"],
                "seconds": secs,
                "images_per_s": len(yp) / secs,
            }
        )
        run.last_good = copy.deepcopy(run.model.state_dict())
        end = TrainState(run.model, run.step, epoch, train_loss, xp[:0], yp[:0], cfg, run.log)
        for cb in run.callbacks:
            cb.on_epoch_end(end)
        if cfg.early_stopping and phase != "phase2":
            if val["loss"] < best_val - 1e-6:
                best_val, best_state, bad_epochs = val["loss"], run.last_good, 0
            else:
                bad_epochs += 1
                if bad_epochs >= cfg.early_stopping:
                    run.log({"phase": phase, "early_stopped_at_epoch": epoch + 1})
                    break
    if best_state is not None:
        run.model.load_state_dict(best_state)


PRIOR_FILE = "prior.safetensors"
POSTERIOR_STD_FILE = "posterior_std.safetensors"
ROWS_FILE = "pac_bayes_rows.safetensors"


def _train_pac_bayes(run: _Run) -> dict[str, Any]:
    """Prior by ERM on a seeded fraction of the rows, then the posterior on the rest.

    Returns the ``pac_bayes`` entry of ``meta.json``; writes the prior, the posterior's
    standard deviations and both row sets next to the weights (each hash in the entry).
    """
    from clt_gen.gibbs import pac_bayes_certificate

    cfg = run.cfg
    assert cfg.pac_bayes_prior is not None
    x_all, y_all = run.splits.x["train"], run.splits.y["train"]
    n = len(y_all)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.random_state + 2))
    n_prior = int(round(cfg.pac_bayes_prior * n))
    prior_rows, bound_rows = perm[:n_prior].sort().values, perm[n_prior:].sort().values
    if n_prior < 1 or len(bound_rows) < 8:
        raise ValidationError(
            f"pac_bayes_prior={cfg.pac_bayes_prior} leaves {n_prior} rows for the prior and "
            f"{len(bound_rows)} for the bound out of {n}; each needs rows (the bound at least "
            "8): pick a fraction nearer 0.5 or use more data"
        )
    xp, yp = x_all[prior_rows].to(run.device), y_all[prior_rows].to(run.device)
    _train_phase(run, "prior", xp, yp, list(run.model.parameters()))
    run.model.eval()
    prior = {k: v.detach().cpu().clone() for k, v in run.model.state_dict().items()}
    sigma = cfg.pac_bayes_sigma
    cert = pac_bayes_certificate(
        run.model,
        (x_all, y_all),
        rows=bound_rows.numpy(),
        prior=prior,
        prior_kind="data_dependent",
        check=(run.splits.x["check"], run.splits.y["check"]),
        delta=cfg.pac_bayes_delta,
        prior_sigma=sigma,
        sigma_init=sigma,
        objective=cfg.pac_bayes_objective,
        optimize_mean=True,
        epochs=cfg.epochs if cfg.pac_bayes_epochs is None else cfg.pac_bayes_epochs,
        batch_size=cfg.batch_size,
        lr_mean=cfg.pac_bayes_lr,
        device=str(run.device),
        random_state=cfg.random_state,
        progress=cfg.progress,
    )
    with torch.no_grad():
        params = dict(run.model.named_parameters())
        for k, mu in cert.posterior_mean.items():
            params[k].copy_(mu.to(params[k].device))
    rows = {"prior_rows": prior_rows, "bound_rows": bound_rows}
    entry = cert.to_dict()
    entry.update(
        prior_fraction=cfg.pac_bayes_prior,
        rows_seed=cfg.random_state + 2,
        n_prior_rows=int(n_prior),
        n_bound_rows=int(len(bound_rows)),
        prior_sha256=save_tensors(run.out / PRIOR_FILE, prior),
        posterior_std_sha256=save_tensors(run.out / POSTERIOR_STD_FILE, cert.posterior_std),
        rows_sha256=save_tensors(run.out / ROWS_FILE, rows),
        rows_split="train",
    )
    return {"pac_bayes": entry}


def _final_metrics(run: _Run, seconds: float) -> dict[str, float]:
    metrics: dict[str, float] = {
        "train_seconds": seconds,
        "steps": float(run.step),
        "images_seen": float(run.n_seen),
    }
    sp = run.splits
    for split in ("train", "val", "certify", "check"):
        if len(sp.y[split]):
            smooth = run.cfg.label_smoothing if split == "train" else 0.0
            r = evaluate_split(run.model, sp.x[split], sp.y[split], run.reg, smooth, run.device)
            metrics[f"{split}_loss"] = r["loss"]
            metrics[f"{split}_accuracy"] = r["accuracy"]
    return metrics


def train(
    config: TrainConfig,
    out_dir: str | os.PathLike[str],
    *,
    callbacks: Sequence[Callback] = (),
    splits: Splits | None = None,
) -> TrainResult:
    """Train a model and save it as a checkpoint directory ``out_dir``.

    Writes ``out_dir/model.safetensors``, ``out_dir/meta.json`` (with final metrics on the
    train, val, certify and check splits) and appends per-epoch metrics to
    ``out_dir/metrics.jsonl``.

    Parameters
    ----------
    config : TrainConfig
    out_dir : path
    callbacks : sequence of Callback
        Called after every step and epoch.
    splits : Splits, optional
        Data already split (by default the dataset of ``config``, split by ``config.data``).

    Returns
    -------
    TrainResult

    Raises
    ------
    TrainingDivergedError
        When the loss becomes NaN/inf; the last good weights are saved first.

    Examples
    --------
    >>> import tempfile
    >>> res = train(TrainConfig(arch="mlp", arch_kwargs={"width": 16, "depth": 1}, epochs=1,
    ...                         progress=False), tempfile.mkdtemp() + "/ckpt")
    >>> 0.0 <= res.metrics["check_accuracy"] <= 1.0
    True
    """
    run = _setup(config, pathlib.Path(out_dir), splits, callbacks)
    t_start = time.perf_counter()
    extra: dict[str, Any] = {}
    if config.pac_bayes_prior is not None:
        extra = _train_pac_bayes(run)
    else:
        for phase, xp, yp, params in _phases(run):
            _train_phase(run, phase, xp, yp, params)
    for prm in run.model.parameters():
        prm.requires_grad_(True)
    run.model.eval()
    metrics = _final_metrics(run, time.perf_counter() - t_start)
    meta = {**run.meta_base, **extra, "status": "complete", "metrics": metrics}
    meta["weights_sha256"] = save_checkpoint(run.out, run.model.cpu(), meta)
    return TrainResult(run.out, metrics, meta)

"""The main job: a trained classifier and its data in, one typed report out.

Risks, data floor, layer entropies, information loss, bounds computed on ``certify`` and
checked on ``check``, all in one :class:`~clt_gen.report.Report`.

Two ways in, one pipeline:

- ``evaluate(model, train, test)``: any ``nn.Module`` (or a checkpoint path) and data as a
  ``Dataset``, a ``DataLoader`` or ``(inputs, labels)``; the held-out data is split into
  certify/check parts (seeded, stratified) unless ``check=`` gives the check part.
- ``evaluate(EvaluateConfig(checkpoint=..., out=...))``: a saved checkpoint on the data it
  records (what ``clt-gen evaluate`` runs); writes ``report.json`` and ``report.html``.

The stages (each a function below): load -> passes (one streaming pass per split: scores,
labels, input digests, reduced features) -> risks -> floor -> entropies -> bounds ->
trainability -> report.

Examples
--------
>>> import torch
>>> from torch import nn
>>> g = torch.Generator().manual_seed(0)
>>> x, y = torch.randn(600, 6, generator=g), torch.randint(0, 3, (600,), generator=g)
>>> x[:, 0] += y
>>> net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
>>> report = evaluate(net, (x[:400], y[:400]), (x[400:], y[400:]), n_bootstrap=20,
...                   heads=("logistic",), cells=(2, 4), progress=False)
>>> [row.name for row in report.layers]
['input', '0', '1', '2']
>>> report.floor.value <= report.risks.train
True
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import pathlib
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parameter import UninitializedTensorMixin  # type: ignore[attr-defined]

from clt_gen._modes import eval_mode, resolve_device
from clt_gen._parallel import check_jobs, prestart, resolve_jobs, run_array_calls
from clt_gen._version import __version__
from clt_gen.bounds import (
    Bound,
    data_floor,
    deterministic_range,
    frozen_feature_bound,
    mark_vacuous,
    shannon_loss_cap,
    trivial_risks,
    validation_bound,
)
from clt_gen.checkpoints import INIT_FILE, load_checkpoint, load_tensors
from clt_gen.data import DataConfig, Splits, load_dataset, make_splits
from clt_gen.duality import get_regularizer, objective
from clt_gen.errors import DataError, ValidationError, check_field_types, unknown_name_error
from clt_gen.features import INPUT_LAYER, default_layers
from clt_gen.profiles import layer_entropies
from clt_gen.report import SCHEMA_VERSION, Floor, Report, Risks, load_report
from clt_gen.sources import Source, as_source, split_rows
from clt_gen.streaming import (
    Output,
    PassResult,
    forward_checked,
    layer_kinds,
    select_scores,
    stream_pass,
)
from estimators import DEFAULT_HEADS, DEFAULT_METHOD, scoring_rule

__all__ = ["EvaluateConfig", "evaluate", "SCHEMA_VERSION", "load_report", "ENTROPY_OMEGAS"]

log = logging.getLogger("clt_gen")

ENTROPY_OMEGAS = ("shannon", "squared", "sparsemax", "tsallis")
ERROR_BOUNDS = ("binomial", "kl", "hoeffding", "bernstein")


@dataclass(frozen=True)
class EvaluateConfig:
    """Options of an evaluation (all recorded in the report's ``config``).

    Attributes
    ----------
    checkpoint : str or None
        Checkpoint directory or model file (the ``clt-gen evaluate`` path).
    out : str or None
        Output directory for ``report.json`` and ``report.html`` (None: write nothing).
    data, data_dir : str, optional
        Built-in dataset (by default the one the checkpoint records).
    layers : tuple of str, optional
        Module or graph node names; by default ``input``, the top-level blocks and the
        logits.
    omega : str, optional
        Regularizer of the risks and entropies; by default the training loss.
    method : str
        Entropy estimator (``auto``: held-out scores of selected heads, debiased).
    delta : float
        Failure probability of each probabilistic bound.
    reduce, max_features
        Feature reduction (``project``: random projection of the full map, which keeps
        the layers comparable for the data-processing inequality).
    max_train_samples : int
        Training rows whose features enter ``H_train`` (a seeded subset when larger).
    heads : tuple of str
        Head families of the ``auto`` estimates and of the certified bounds.
    cells : tuple of int
        Numbers of k-means cells tried by the frozen-feature bound.
    error_bounds : tuple of str
        Validation bounds on the 0-1 error.
    min_heldout : int
        Fewest examples each held-out part (certify, check) may have.
    check_fraction : float
        Part of the held-out data used to check (when it is split here).
    batch_size : int
        Rows per forward pass.
    label_smoothing : float, optional
        Of the training targets (default: the checkpoint's, else 0).
    output_kind : {"logits", "probs"}
        What the model's class scores are: logits (any real scores), or probabilities
        (rows in [0, 1] summing to 1, e.g. a model ending in ``nn.Softmax``), which are
        then read as ``log p``. A model that returns probabilities while ``logits`` is
        declared is refused with an error saying so.
    allow_unverified : bool
        Evaluate a checkpoint directory whose ``meta.json`` records no weights hash (the
        report's ``checkpoint.weights_verified`` is then false); refused otherwise.
    n_jobs : int, optional
        Processes for the per-layer entropy fits and frozen-feature bounds (default: all
        available cores). The numbers do not depend on it.
    pac_bayes : bool
        Add PAC-Bayes certificates from the training data (``pac_bayes[error]``,
        ``pac_bayes[ce]``) on the Gibbs network around the model, checked against that
        network's error on the check split (:func:`clt_gen.pac_bayes_certificate`).
    pac_bayes_prior : {"init", "zero"}
        The prior's mean: the recorded initialization ``w_0`` (a clt_gen checkpoint, or
        ``init_state=`` in :func:`evaluate`) or zero. A checkpoint trained with
        ``--pac-bayes-prior`` uses its own data-dependent prior instead.
    pac_bayes_epochs, pac_bayes_optimize_mean, pac_bayes_objective, pac_bayes_p_min
        Optimization epochs of the posterior, whether its means move, the objective and
        the bounded cross-entropy's probability floor.

    Examples
    --------
    >>> EvaluateConfig(checkpoint="runs/lenet", delta=0.01).delta
    0.01
    >>> EvaluateConfig(method="knnn")
    Traceback (most recent call last):
    ...
    estimators.errors.ValidationError: method must be one of [...]...
    """

    checkpoint: str | None = None
    out: str | None = None
    data: str | None = None
    data_dir: str | None = None
    layers: tuple[str, ...] | None = None
    omega: str | None = None
    method: str = DEFAULT_METHOD
    delta: float = 0.05
    reduce: str = "project"
    max_features: int = 128
    n_bootstrap: int = 200
    max_train_samples: int = 5_000
    heads: tuple[str, ...] = DEFAULT_HEADS
    cells: tuple[int, ...] = (2, 4, 8, 16, 32, 64, 128)
    error_bounds: tuple[str, ...] = ERROR_BOUNDS
    trainability: bool = False
    trainability_samples: int = 256
    min_heldout: int = 20
    check_fraction: float = 0.5
    batch_size: int = 1024
    label_smoothing: float | None = None
    cache_dir: str | None = None
    arch_spec: dict[str, Any] | None = None
    trust_pickle: bool = False
    allow_unverified: bool = False
    output_kind: str = "logits"
    device: str = "auto"
    random_state: int = 0
    progress: bool = True
    n_jobs: int | None = None
    pac_bayes: bool = False
    pac_bayes_prior: str = "init"
    pac_bayes_epochs: int = 10
    pac_bayes_optimize_mean: bool = False
    pac_bayes_objective: str = "f_quad"
    pac_bayes_p_min: float = 1e-4

    def __post_init__(self) -> None:
        """Check every field before any work, with close matches for unknown names."""
        from estimators import HEADS, METHODS

        check_field_types(self)
        check_jobs(self.n_jobs)
        if not 0.0 < self.delta < 1.0:
            raise ValidationError(f"delta must be in (0, 1) (got {self.delta}); 0.05 is usual")
        for name in ("max_features", "batch_size", "max_train_samples", "min_heldout"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValidationError(f"{name} must be an int >= 1 (got {v!r})")
        if not 0.0 < self.check_fraction < 1.0:
            raise ValidationError(f"check_fraction must be in (0, 1) (got {self.check_fraction})")
        for name, low in (("n_bootstrap", 0), ("trainability_samples", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValidationError(
                    f"{name} must be an int >= {low} (got {v!r})"
                    + ("; 0 skips the bootstrap, 200 is usual" if name == "n_bootstrap" else "")
                )
        bad_cells = [
            c for c in self.cells if isinstance(c, bool) or not isinstance(c, int) or c < 2
        ]
        if not self.cells or bad_cells:
            raise ValidationError(
                f"cells must be ints >= 2, the numbers of k-means cells the frozen-feature bound "
                f"tries (got {list(self.cells)!r}); e.g. (2, 4, 8, 16)"
            )
        if self.output_kind not in ("logits", "probs"):
            raise unknown_name_error("output_kind", self.output_kind, ("logits", "probs"))
        if self.output_kind == "probs" and self.trainability:
            raise ValidationError(
                "trainability differentiates the loss of the model's own output, which needs "
                "logits: drop the final softmax, or evaluate without trainability"
            )
        ls = self.label_smoothing
        if ls is not None and not (isinstance(ls, (int, float)) and 0.0 <= ls < 1.0):
            raise ValidationError(f"label_smoothing must be in [0, 1) (got {ls!r})")

        if self.method not in METHODS:
            raise unknown_name_error("method", self.method, METHODS)
        if self.omega is not None and self.omega not in ENTROPY_OMEGAS:
            raise unknown_name_error("omega", self.omega, ENTROPY_OMEGAS)
        if self.reduce not in ("project", "avgpool", "flatten"):
            raise unknown_name_error("reduce", self.reduce, ("project", "avgpool", "flatten"))
        if not self.heads:
            raise ValidationError("heads must name at least one head family (e.g. 'logistic')")
        for head in self.heads:
            if head not in HEADS:
                raise unknown_name_error("heads", head, HEADS)
        for b in self.error_bounds:
            if b not in ERROR_BOUNDS:
                raise unknown_name_error("error_bounds", b, ERROR_BOUNDS)
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise unknown_name_error("device", self.device, ("auto", "cpu", "cuda"))
        self._check_pac_bayes()

    def _check_pac_bayes(self) -> None:
        from clt_gen.pac_bayes import OBJECTIVES

        if self.pac_bayes_prior not in ("init", "zero"):
            raise unknown_name_error("pac_bayes_prior", self.pac_bayes_prior, ("init", "zero"))
        e = self.pac_bayes_epochs
        if isinstance(e, bool) or not isinstance(e, int) or e < 0:
            raise ValidationError(f"pac_bayes_epochs must be an int >= 0 (got {e!r})")
        if self.pac_bayes_objective not in OBJECTIVES:
            raise unknown_name_error("pac_bayes_objective", self.pac_bayes_objective, OBJECTIVES)
        if not 0.0 < self.pac_bayes_p_min < 1.0:
            raise ValidationError(
                f"pac_bayes_p_min must be in (0, 1) (got {self.pac_bayes_p_min}); 1e-4 is usual"
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary."""
        return dataclasses.asdict(self)


def _save(report: Report, out: str) -> None:
    """Write the report; if even report.json cannot be written, print it before failing."""
    import sys

    try:
        report.save(out)
    except OSError as exc:
        print(report.table(), file=sys.stderr)
        print("\n".join(report.summary_lines), file=sys.stderr)
        raise ValidationError(
            f"report.json could not be written to {out} ({exc.strerror or exc}); the table "
            "and summary above are the report's numbers. Free space or pick another --out, "
            "then rerun: the cached features make it fast"
        ) from None


def check_outputs(cfg: EvaluateConfig) -> None:
    """Refuse ``out`` and ``cache_dir`` that cannot be written, before any pass."""
    if cfg.out is not None:
        _check_writable("out", cfg.out)
    if cfg.cache_dir is not None:
        _check_writable("cache_dir", cfg.cache_dir)


def _check_writable(name: str, path: str) -> None:
    """Refuse an output directory that cannot be written, before any work is done."""
    p = pathlib.Path(path)
    if p.exists() and not p.is_dir():
        raise ValidationError(
            f"{name} must be a directory (got {str(p)!r}, which is a file); pick another path "
            "or remove the file"
        )
    try:
        p.mkdir(parents=True, exist_ok=True)
        import tempfile

        with tempfile.NamedTemporaryFile(dir=p, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise ValidationError(
            f"{name} {str(p)!r} cannot be written ({exc.strerror or exc}); choose a directory "
            "you can write to"
        ) from None


# ---------------------------------------------------------------------------------------
# stage 1: load
# ---------------------------------------------------------------------------------------


@dataclass
class Subject:
    """What is evaluated: the model, its loss, and where it came from."""

    model: nn.Module
    omega: str
    alpha: float
    label_smoothing: float
    provenance: dict[str, Any]
    model_hash: str
    meta: dict[str, Any] = field(default_factory=dict)
    init_state: Any = None
    directory: pathlib.Path | None = None

    @property
    def reg(self) -> Any:
        return get_regularizer(
            self.omega, **({"alpha": self.alpha} if self.omega == "tsallis" else {})
        )


@dataclass
class Inputs:
    """The data of one evaluation: train, held-out (and check, when given apart)."""

    train: Source
    heldout: Source
    check: Source | None
    provenance: dict[str, Any]


def state_hash(model: nn.Module) -> str:
    """sha256 over a model's parameter and buffer names, shapes and bytes."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        if isinstance(t, UninitializedTensorMixin):
            continue  # a lazy module before its first forward: no values yet
        h.update(str((tuple(t.shape), str(t.dtype))).encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _subject_from_checkpoint(path: str, cfg: EvaluateConfig, device: torch.device) -> Subject:
    ck = load_checkpoint(
        path,
        arch=cfg.arch_spec,
        trust_pickle=cfg.trust_pickle,
        map_location=device,
        allow_unverified=cfg.allow_unverified,
    )
    train_cfg = ck.meta.get("train_config", {})
    omega = cfg.omega or ck.meta.get("omega", "shannon")
    smooth = cfg.label_smoothing
    if smooth is None:
        same_loss = omega == ck.meta.get("omega")
        smooth = float(train_cfg.get("label_smoothing", 0.0)) if same_loss else 0.0
    provenance = {
        "path": str(ck.path),
        "sha256": ck.sha256,
        "weights_verified": ck.verified,
        "arch": ck.meta.get("arch"),
        "arch_kwargs": ck.meta.get("arch_kwargs", {}),
        "train_config": train_cfg,
    }
    init = None
    if ck.path.is_dir() and ck.meta.get("init_sha256"):
        init = load_tensors(ck.path / INIT_FILE, ck.meta["init_sha256"])
    return Subject(
        ck.model,
        omega,
        float(train_cfg.get("alpha", 1.5)),
        smooth,
        provenance,
        ck.sha256,
        ck.meta,
        init,
        ck.path if ck.path.is_dir() else None,
    )


def _subject_from_module(model: nn.Module, cfg: EvaluateConfig, device: torch.device) -> Subject:
    if not isinstance(model, nn.Module):
        raise ValidationError(
            f"model must be a torch nn.Module or a checkpoint path (got {type(model).__name__})"
        )
    digest = state_hash(model)
    provenance = {
        "path": None,
        "sha256": digest,
        "arch": type(model).__name__,
        "module": type(model).__module__,
        "n_params": int(sum(p.numel() for p in model.parameters())),
    }
    return Subject(
        model.to(device),
        cfg.omega or "shannon",
        1.5,
        cfg.label_smoothing or 0.0,
        provenance,
        digest,
    )


def _checkpoint_inputs(subject: Subject, cfg: EvaluateConfig) -> tuple[Inputs, Splits]:
    """Return the built-in dataset a checkpoint records, split as it was at training time."""
    meta = subject.meta
    name = cfg.data or meta.get("dataset")
    if name is None:
        raise DataError("the checkpoint records no dataset: pass --data")
    train_cfg = meta.get("train_config", {})
    params = train_cfg.get("dataset_params", {}) if name == meta.get("dataset") else {}
    ds = load_dataset(name, data_dir=cfg.data_dir or train_cfg.get("data_dir"), **params)
    recorded = meta.get("data_config")
    splits = make_splits(ds, DataConfig.from_dict(recorded) if recorded is not None else None)
    _check_checkpoint_shapes(subject, splits, name)
    bs = cfg.batch_size
    sources = {s: as_source((splits.x[s], splits.y[s]), name=s, batch_size=bs) for s in splits.x}
    fp = splits.fingerprint()
    provenance = {
        "name": splits.dataset,
        "sha256": fp,
        "matches_checkpoint": fp == meta.get("data_fingerprint", fp),
        "split": {"how": "checkpoint", "data_config": splits.config.to_dict()},
    }
    return Inputs(sources["train"], sources["certify"], sources["check"], provenance), splits


def _check_checkpoint_shapes(subject: Subject, splits: Splits, name: str) -> None:
    meta = subject.meta
    if "n_classes" not in meta or "input_shape" not in meta:
        # a bare model file: take the shapes from the data, then check the model's output
        meta.setdefault("input_shape", list(splits.x["train"].shape[1:]))
        param = next(subject.model.parameters())
        with torch.no_grad():
            out = subject.model(splits.x["train"][:2].to(param.device))
        meta.setdefault("n_classes", int(out.shape[-1]))
    if splits.n_classes != meta["n_classes"]:
        raise DataError(
            f"the checkpoint predicts {meta['n_classes']} classes but dataset {name!r} has "
            f"{splits.n_classes}; evaluate it on the data it was trained for"
        )
    shape = list(splits.x["train"].shape[1:])
    if shape != list(meta["input_shape"]):
        raise DataError(
            f"the checkpoint expects inputs of shape {meta['input_shape']} but dataset {name!r} "
            f"gives {shape}"
        )


def _example_input(source: Source) -> torch.Tensor:
    for x, _ in source.batches():
        return x[:2]
    raise DataError(f"{source.name} data is empty: it must hold at least one example")


def _probe_model(model: nn.Module, x: torch.Tensor, output: Output, device: torch.device) -> int:
    """Run two examples through the model and return its number of classes.

    Its input shape and its scores are checked before any pass over the data.
    """
    with eval_mode(model), torch.no_grad():
        out, _ = forward_checked(model, x.to(device))
    return int(select_scores(out, output).shape[1])


def _resolve_layers(
    model: nn.Module, requested: tuple[str, ...] | None, example: torch.Tensor
) -> tuple[list[str], bool]:
    """Return the layers to read (checked against the model) and whether they are the default."""
    if requested:
        layer_kinds(model, list(requested))
        return list(requested), False
    layers = [INPUT_LAYER] + default_layers(model, tuple(example.shape[1:]))
    log.info("clt_gen.evaluate: layers not given; using %s", layers)
    return layers, True


def _check_sizes(inputs: Inputs, cfg: EvaluateConfig) -> None:
    """Held-out parts large enough for certificates, before any forward pass."""
    parts: dict[str, int | None] = {}
    if inputs.check is not None:
        parts = {"certify": inputs.heldout.n_rows, "check": inputs.check.n_rows}
    elif inputs.heldout.n_rows is not None:
        n_check = int(round(cfg.check_fraction * inputs.heldout.n_rows))
        parts = {"certify": inputs.heldout.n_rows - n_check, "check": n_check}
    for split, n in parts.items():
        if n is not None and n < cfg.min_heldout:
            raise DataError(
                f"held-out split {split!r} has {n} examples; at least {cfg.min_heldout} "
                "are needed for certificates and checks (use more held-out data, or lower "
                "min_heldout)"
            )


# ---------------------------------------------------------------------------------------
# stage 2: streaming passes
# ---------------------------------------------------------------------------------------


@dataclass
class Passes:
    """Per-row results of every split; ``train`` features only for ``train_rows``."""

    train: PassResult
    certify: PassResult
    check: PassResult
    split: dict[str, Any]
    check_rows: np.ndarray | None = None


def _train_rows(n: int | None, cfg: EvaluateConfig) -> np.ndarray | None:
    if n is None or n <= cfg.max_train_samples:
        return None if n is None else np.arange(n)
    gen = np.random.default_rng(cfg.random_state)
    return np.sort(gen.choice(n, size=cfg.max_train_samples, replace=False))


def run_passes(
    subject: Subject,
    inputs: Inputs,
    layers: list[str],
    cfg: EvaluateConfig,
    *,
    output: Output,
    device: torch.device,
) -> Passes:
    """One streaming pass per split; splits held-out rows into certify/check when needed."""
    common: dict[str, Any] = {
        "layers": layers,
        "output": output,
        "reduce": cfg.reduce,
        "max_features": cfg.max_features,
        "device": device,
        "cache_dir": _cache_dir(cfg),
        "random_state": cfg.random_state,
        "progress": cfg.progress,
    }
    # probabilities read as logits are another output: never share their cache
    kind = {"output_kind": "probs"} if cfg.output_kind == "probs" else {}
    keep = _train_rows(inputs.train.n_rows, cfg)
    if keep is None and inputs.train.n_rows is None:
        keep = np.arange(cfg.max_train_samples)  # unknown length: the first rows
    train = stream_pass(
        subject.model,
        inputs.train,
        keep=keep,
        digests=True,
        probe_rows=cfg.trainability_samples if cfg.trainability else 0,
        cache_parts={"model": subject.model_hash, "split": "train", **kind},
        **common,
    )
    held = stream_pass(
        subject.model,
        inputs.heldout,
        cache_parts={"model": subject.model_hash, "split": "heldout", **kind},
        **common,
    )
    if inputs.check is not None:
        check = stream_pass(
            subject.model,
            inputs.check,
            cache_parts={"model": subject.model_hash, "split": "check", **kind},
            **common,
        )
        return Passes(train, held, check, {"how": "given"})
    cert_idx, check_idx = split_rows(
        held.n_rows, held.labels, check_fraction=cfg.check_fraction, random_state=cfg.random_state
    )
    split = {
        "how": "stratified",
        "check_fraction": cfg.check_fraction,
        "random_state": cfg.random_state,
        "check_rows_sha256": hashlib.sha256(check_idx.astype(np.int64).tobytes()).hexdigest(),
    }
    return Passes(train, held.take(cert_idx), held.take(check_idx), split, check_idx)


def _cache_dir(cfg: EvaluateConfig) -> str | None:
    if cfg.cache_dir is not None:
        return cfg.cache_dir
    return str(pathlib.Path(cfg.out) / ".cache") if cfg.out is not None else None


# ---------------------------------------------------------------------------------------
# stage 3: risks and the floor
# ---------------------------------------------------------------------------------------


def _risk_terms(
    reg: Any, scores: np.ndarray, y: np.ndarray, smooth: float
) -> dict[str, np.ndarray]:
    losses = objective(reg, torch.from_numpy(scores), torch.from_numpy(y), smooth).numpy()
    probs = np.asarray(reg.link(scores))
    if not reg.simplex:
        probs = np.clip(probs, 0, None)
        probs = probs / np.maximum(probs.sum(1, keepdims=True), 1e-12)
    brier = scoring_rule(probs, y, omega="squared")  # ½‖p − e_y‖², in [0, 1] on the simplex
    errors = (scores.argmax(1) != y).astype(np.float64)
    return {"losses": losses, "brier": brier, "errors": errors}


def measure_risks(
    subject: Subject, passes: Passes
) -> tuple[Risks, dict[str, dict[str, np.ndarray]]]:
    """Risks of the network on each split, and the per-example terms behind them."""
    reg, smooth = subject.reg, subject.label_smoothing
    terms = {
        s: _risk_terms(reg, p.scores, p.labels, smooth if s == "train" else 0.0)
        for s, p in (("train", passes.train), ("certify", passes.certify), ("check", passes.check))
    }

    def mean(split: str, key: str) -> float:
        return float(terms[split][key].mean())

    risks = Risks(
        train=mean("train", "losses"),
        certify=mean("certify", "losses"),
        check=mean("check", "losses"),
        train_error=mean("train", "errors"),
        certify_error=mean("certify", "errors"),
        check_error=mean("check", "errors"),
        train_brier=mean("train", "brier"),
        check_brier=mean("check", "brier"),
        label_smoothing=smooth,
        train_loss_max=float(np.max(terms["train"]["losses"])),
        gap=mean("check", "losses") - mean("train", "losses"),
        error_gap=mean("check", "errors") - mean("train", "errors"),
    )
    return risks, terms


def floor_bound(subject: Subject, passes: Passes, risks: Risks) -> Bound:
    """Return the data floor from the training inputs' digests (identical inputs share one)."""
    assert passes.train.digests is not None
    floor = data_floor(
        passes.train.digests,
        passes.train.labels,
        passes.train.scores.shape[1],
        omega=subject.omega,
        alpha=subject.alpha,
        label_smoothing=subject.label_smoothing,
        train_risk=risks.train,
    )
    return floor.check(risks.train, on="train")


# ---------------------------------------------------------------------------------------
# stage 4: entropies, stage 5: bounds
# ---------------------------------------------------------------------------------------


def _entropy_rows(
    subject: Subject, passes: Passes, layers: list[str], cfg: EvaluateConfig
) -> list[Any]:
    feats = {"train": passes.train.features, "certify": passes.certify.features}
    return layer_entropies(
        layers,
        feats,
        passes.train.labels[passes.train.kept],
        passes.certify.labels,
        n_classes=passes.train.scores.shape[1],
        omega=subject.omega,
        alpha=subject.alpha,
        method=cfg.method,
        delta=cfg.delta,
        n_bootstrap=cfg.n_bootstrap,
        random_state=cfg.random_state,
        heads=cfg.heads,
        n_jobs=cfg.n_jobs,
    )


def _with_module_types(rows: list[Any], model: nn.Module) -> list[Any]:
    """Record each layer's module type (``Conv2d``...), so numeric names read as layers."""
    modules = dict(model.named_modules())
    return [
        dataclasses.replace(r, module=type(modules[r.name]).__name__)
        if r.name in modules and r.name
        else r
        for r in rows
    ]


def _range_bounds(
    subject: Subject, passes: Passes, risks: Risks, rows: list[Any], terms: dict[str, Any]
) -> tuple[list[Bound], dict[str, Any]]:
    all_scores = np.concatenate([passes.train.scores, passes.certify.scores, passes.check.scores])
    loss_max = float(max(np.max(terms[s]["losses"]) for s in terms))
    cap = shannon_loss_cap(all_scores) if subject.omega == "shannon" else None
    # max_l H(Y|Z_l) is attained at the last layer (data processing): taking the max of
    # noisy, upward-biased estimates over layers would only add bias, so use the last one
    last = rows[-1]
    layer_h = {last.name: (last.H_heldout.value, last.H_heldout.lower)}
    bounds = [
        b.check(risks.check, on="check")
        for b in deterministic_range(
            train_risk=risks.train,
            layer_entropies=layer_h,
            loss_max=loss_max,
            loss_cap=cap,
            data_used="certify (entropies); all splits (loss max)",
        )
    ]
    return bounds, {"observed": loss_max, "shannon_cap": cap}


def _validation_bounds(risks: Risks, terms: dict[str, Any], cfg: EvaluateConfig) -> list[Bound]:
    m = len(terms["certify"]["errors"])
    bounds = [
        validation_bound(
            risks.certify_error,
            m,
            delta=cfg.delta,
            method=method,
            quantity="error",
            data_used="certify",
        ).check(risks.check_error, on="check")
        for method in cfg.error_bounds
    ]
    brier = terms["certify"]["brier"]
    b = validation_bound(
        float(brier.mean()),
        m,
        delta=cfg.delta,
        method="empirical_bernstein",
        variance=float(brier.var(ddof=1)),
        quantity="brier_risk",
        data_used="certify",
    )
    bounds.append(
        dataclasses.replace(b, name="validation_empirical_bernstein_brier").check(
            risks.check_brier, on="check"
        )
    )
    return bounds


def _frozen_bounds(
    passes: Passes, layers: list[str], cfg: EvaluateConfig
) -> tuple[list[Bound], dict[str, Any]]:
    calls = [
        (
            frozen_feature_bound,
            (
                np.asarray(passes.certify.features[name]),
                passes.certify.labels,
                passes.train.scores.shape[1],
            ),
            {
                "z_check": np.asarray(passes.check.features[name]),
                "y_check": passes.check.labels,
                "cells": cfg.cells,
                "delta": cfg.delta,
                "omega": "zero_one",
                "random_state": cfg.random_state,
                "layer": name,
            },
        )
        for name in layers[1:]
    ]
    bounds, curves = [], {}
    for name, res in zip(layers[1:], run_array_calls(calls, cfg.n_jobs), strict=True):
        curves[name] = res["curve"]
        bounds.append(dataclasses.replace(res["best"], name=f"frozen_feature[{name}]"))
    return bounds, curves


def _pac_bayes_inputs(
    subject: Subject, cfg: EvaluateConfig
) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """Return the prior, the rows and the posterior start of the certificate.

    A checkpoint trained with a data-dependent prior brings its own (prior weights, the
    rows the prior never saw, the trained standard deviations); otherwise the prior is
    centred at ``w_0`` or zero and the bound uses every training row.
    """
    meta_pb = subject.meta.get("pac_bayes") if subject.meta else None
    if meta_pb:
        d = subject.directory
        if d is None:
            raise ValidationError("a PAC-Bayes checkpoint must be a checkpoint directory")
        prior = load_tensors(d / "prior.safetensors", meta_pb.get("prior_sha256"))
        rows = load_tensors(d / "pac_bayes_rows.safetensors", meta_pb.get("rows_sha256"))
        std = load_tensors(d / "posterior_std.safetensors", meta_pb.get("posterior_std_sha256"))
        return (
            prior,
            {"rows": rows["bound_rows"].numpy(), "prior_kind": "data_dependent"},
            {"posterior_std": std, "prior_sigma": float(meta_pb["prior"]["sigma"])},
        )
    if cfg.pac_bayes_prior == "zero":
        return "zero", {}, {}
    if subject.init_state is None:
        raise ValidationError(
            "pac_bayes with pac_bayes_prior='init' needs the network's initialization w_0: "
            "checkpoints written by `clt-gen train` record it (init.safetensors); for your own "
            "module pass init_state=<state_dict saved before training> to evaluate, or use "
            "pac_bayes_prior='zero'"
        )
    return "init", {}, {}


def _pac_bayes_bounds(
    subject: Subject,
    inputs: Inputs,
    passes: Passes,
    cfg: EvaluateConfig,
    output: Output,
    device: torch.device,
) -> tuple[list[Bound], dict[str, Any]]:
    """PAC-Bayes certificates from the training data, checked on the check split."""
    from clt_gen.gibbs import pac_bayes_certificate

    prior, where, start = _pac_bayes_inputs(subject, cfg)
    if "rows" in where and not inputs.provenance.get("matches_checkpoint", False):
        raise ValidationError(
            "this checkpoint's PAC-Bayes prior was trained on some of its recorded training "
            "rows: certify it on the data it records (`clt-gen evaluate CKPT --pac-bayes`), "
            "so that the bound uses only the rows the prior never saw"
        )
    check: Any = inputs.check
    if check is None:
        check = _rows_of(inputs.heldout, passes.check_rows)
    cert = pac_bayes_certificate(
        subject.model,
        inputs.train,
        prior=prior,
        init_state=subject.init_state,
        check=check,
        delta=cfg.delta,
        objective=cfg.pac_bayes_objective,
        p_min=cfg.pac_bayes_p_min,
        optimize_mean=cfg.pac_bayes_optimize_mean,
        epochs=cfg.pac_bayes_epochs,
        output=output,
        device=str(device),
        cache_dir=None if _cache_dir(cfg) is None else str(_cache_dir(cfg)),
        random_state=cfg.random_state,
        progress=cfg.progress,
        **where,
        **start,
    )
    d = cert.to_dict()
    assumptions = (
        "training rows i.i.d. from the test distribution",
        f"prior ({cert.prior['kind']}) fixed without the bound's rows",
        "certifies the Gibbs network (fresh weights per prediction), not the checkpoint",
    )
    terms = {
        "kl": cert.kl,
        "n_samples": cert.n_samples,
        "n_mc_terms": cert.n_mc_terms,
        "prior_sigma": cert.prior["sigma"],
        "prior_kind": cert.prior["kind"],
        "delta_shares": d["delta_shares"],
        "deterministic_check_error": cert.check.get("deterministic_error"),
        "certified_network": cert.certified_network,
    }
    bounds = []
    for loss, quantity, checked in (
        ("error", "gibbs_error", "gibbs_error"),
        ("ce", "gibbs_bounded_ce", "gibbs_ce"),
    ):
        b = Bound(
            name=f"pac_bayes[{loss}]",
            kind="probabilistic",
            quantity=quantity,
            side="upper",
            value=cert.values[loss],
            delta=cert.delta,
            terms={
                **terms,
                "gibbs_train_risk": cert.gibbs_risk[loss],
                "gibbs_train_risk_upper": cert.gibbs_risk_upper[loss],
            },
            assumptions=assumptions,
            data_used="train" + (" (rows the prior never saw)" if "rows" in where else ""),
        )
        bounds.append(b.check(cert.check[checked], on="check"))
    return bounds, d


def _rows_of(source: Source, rows: np.ndarray | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the rows ``rows`` of a source as tensors (the check part of held-out data)."""
    xs, ys = zip(*source.batches(), strict=True)
    x, y = torch.cat(xs), torch.cat(ys)
    if rows is None:
        return x, y
    idx = torch.as_tensor(rows, dtype=torch.long)
    return x[idx], y[idx]


# ---------------------------------------------------------------------------------------
# stage 6: trainability
# ---------------------------------------------------------------------------------------


def _trainability(subject: Subject, passes: Passes, device: torch.device) -> dict[str, Any]:
    from clt_gen.trainability import trainability_summary

    if passes.train.probe is None:
        raise DataError("trainability needs training rows; the training data yielded none")
    x, y = passes.train.probe
    return trainability_summary(
        subject.model,
        x.to(device),
        y.to(device),
        subject.reg,
        label_smoothing=subject.label_smoothing,
    )


# ---------------------------------------------------------------------------------------
# the pipeline
# ---------------------------------------------------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.t0 = self.t = time.perf_counter()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(now - self.t, 3)
        self.t = now

    def total(self) -> dict[str, float]:
        return {**self.laps, "total": round(time.perf_counter() - self.t0, 3)}


def _pipeline(
    subject: Subject,
    inputs: Inputs,
    cfg: EvaluateConfig,
    *,
    output: Output,
    device: torch.device,
    clock: _Clock,
) -> Report:
    """Stages 2-7 on a loaded subject and its data."""
    if cfg.output_kind == "probs":
        output = LogProbabilities(output)
    example = _example_input(inputs.heldout)
    _probe_model(subject.model, example, output, device)
    layers, default = _resolve_layers(subject.model, cfg.layers, example)
    _check_sizes(inputs, cfg)
    _prestart_workers(inputs, layers, cfg)
    passes = run_passes(subject, inputs, layers, cfg, output=output, device=device)
    _check_sizes_after(passes, cfg)
    _check_scores(passes, cfg)
    clock.lap("features")
    risks, terms = measure_risks(subject, passes)
    floor = floor_bound(subject, passes, risks)
    clock.lap("risks")
    rows = _with_module_types(_entropy_rows(subject, passes, layers, cfg), subject.model)
    clock.lap("entropies")
    bounds, extras = _all_bounds(
        subject, inputs, passes, (risks, floor, terms, rows), cfg, output, device, clock
    )
    train_stats = _trainability(subject, passes, device) if cfg.trainability else None
    if cfg.trainability:
        clock.lap("trainability")
    config = {
        **cfg.to_dict(),
        "layers": list(layers),
        "layers_default": default,
        "omega": subject.omega,
    }
    data = {
        **inputs.provenance,
        "n_train": passes.train.n_rows,
        "n_certify": passes.certify.n_rows,
        "n_check": passes.check.n_rows,
        "n_classes": int(passes.train.scores.shape[1]),
        "trivial_risks": extras["trivial"],
        "n_train_features": len(passes.train.kept),
        "split": {**inputs.provenance.get("split", {}), **passes.split},
    }
    report = Report(
        risks=risks,
        floor=Floor(
            floor.value,
            floor.terms["fitting_error"],
            floor.terms["n_duplicate_groups"],
            floor.terms["n_conflicting_groups"],
        ),
        layers=tuple(rows),
        bounds=tuple(bounds),
        omega=subject.omega,
        loss_max=extras["loss_max"],
        model=subject.provenance,
        data=data,
        config=config,
        estimator={
            "method": cfg.method,
            "n_bootstrap": cfg.n_bootstrap,
            "reduce": cfg.reduce,
            "max_features": cfg.max_features,
        },
        frozen_feature_curves=extras["curves"],
        trainability=train_stats,
        pac_bayes=extras["pac_bayes"],
        timings=clock.total(),
        version=__version__,
    )
    return report.with_summary()


def _all_bounds(
    subject: Subject,
    inputs: Inputs,
    passes: Passes,
    measured: tuple[Risks, Bound, dict[str, Any], list[Any]],
    cfg: EvaluateConfig,
    output: Output,
    device: torch.device,
    clock: _Clock,
) -> tuple[list[Bound], dict[str, Any]]:
    """Every bound of the report, each checked and marked vacuous or not."""
    risks, floor, terms, rows = measured
    range_bounds, loss_max = _range_bounds(subject, passes, risks, rows, terms)
    frozen, curves = _frozen_bounds(passes, _layer_names(rows), cfg)
    bounds = [floor, *range_bounds, *_validation_bounds(risks, terms, cfg), *frozen]
    clock.lap("bounds")
    pac_bayes = None
    if cfg.pac_bayes:
        pb_bounds, pac_bayes = _pac_bayes_bounds(subject, inputs, passes, cfg, output, device)
        bounds.extend(pb_bounds)
        clock.lap("pac_bayes")
    counts = np.bincount(passes.train.labels, minlength=passes.train.scores.shape[1])
    trivial = trivial_risks(
        counts, omega=subject.omega, alpha=subject.alpha, p_min=cfg.pac_bayes_p_min
    )
    extras = {"loss_max": loss_max, "curves": curves, "pac_bayes": pac_bayes, "trivial": trivial}
    return mark_vacuous(bounds, trivial), extras


def _layer_names(rows: list[Any]) -> list[str]:
    """Return the layer names of the report's rows, in order."""
    return [r.name for r in rows]


@dataclass(frozen=True)
class LogProbabilities:
    """An ``output`` selector that turns probabilities into log-probabilities (logits).

    ``softmax(log p) = p``, so every loss, entropy and bound reads the model as it meant.
    """

    inner: Any = None

    def __call__(self, out: Any) -> torch.Tensor:
        """Return ``log max(p, tiny)`` of the selected scores."""
        p = select_scores(out, self.inner)
        tiny = torch.finfo(p.dtype).tiny if p.is_floating_point() else 1e-38
        return torch.log(p.clamp_min(tiny))


def _check_scores(passes: Passes, cfg: EvaluateConfig) -> None:
    """Name non-finite model outputs, and outputs that are probabilities read as logits."""
    for split in ("train", "certify", "check"):
        s = getattr(passes, split).scores
        finite = np.isfinite(s)
        if cfg.output_kind == "probs":
            finite |= np.isneginf(s)  # log 0 of a probability that underflowed
        if not finite.all():
            rows = np.flatnonzero(~finite.all(axis=1))
            raise DataError(
                f"the model's output (its class scores) holds NaN or inf on {len(rows)} "
                f"{split} rows (first: row {int(rows[0])}, scores {s[rows[0]][:5].tolist()}); "
                "a classifier's logits must be finite: check the model for overflow (e.g. "
                "a missing normalization, or half precision) or for NaN inputs"
            )
    s = passes.train.scores
    sums_to_one = np.abs(s.sum(axis=1) - 1.0) < 1e-4
    in_unit = (s >= 0).all(axis=1) & (s <= 1).all(axis=1)
    if cfg.output_kind == "logits" and s.shape[1] >= 2 and bool((sums_to_one & in_unit).all()):
        raise DataError(
            "the model's outputs look like probabilities (every training row lies in [0, 1] "
            "and sums to 1, e.g. a model ending in nn.Softmax), but they would be read as "
            "logits, which gives wrong risks and entropies: pass output_kind='probs' "
            "(--output-kind probs), or remove the final softmax"
        )


def _prestart_workers(inputs: Inputs, layers: list[str], cfg: EvaluateConfig) -> None:
    """Start the entropy stage's workers now, so they import while features are extracted."""
    rows = [inputs.heldout.n_rows, inputs.train.n_rows]
    if None in rows:
        return
    n_train = min(int(rows[1] or 0), cfg.max_train_samples)
    work = (int(rows[0] or 0) + n_train) * cfg.max_features * len(layers)
    prestart(resolve_jobs(cfg.n_jobs, 2 * len(layers), work))


def _check_sizes_after(passes: Passes, cfg: EvaluateConfig) -> None:
    """Refuse held-out splits too small to certify; warn about classes no label uses."""
    k = passes.train.scores.shape[1]
    used = max(int(p.labels.max()) for p in (passes.train, passes.certify, passes.check)) + 1
    if used < k:
        warnings.warn(
            f"the model has {k} outputs but the labels use only classes 0..{used - 1}; "
            f"entropies and risks are over all {k} classes (is this the model trained on "
            "this data? if so, ignore this warning)",
            UserWarning,
            stacklevel=3,
        )
    for split in ("certify", "check"):
        n = getattr(passes, split).n_rows
        if n < cfg.min_heldout:
            raise DataError(
                f"held-out split {split!r} has {n} examples; at least {cfg.min_heldout} are "
                "needed for certificates and checks (use more held-out data)"
            )


def evaluate(
    model: nn.Module | str | os.PathLike[str] | EvaluateConfig,
    train: Any = None,
    test: Any = None,
    *,
    check: Any = None,
    layers: list[str] | tuple[str, ...] | None = None,
    output: Output = None,
    omega: str | None = None,
    delta: float = 0.05,
    random_state: int = 0,
    device: str | None = None,
    data_name: str = "user data",
    init_state: Any = None,
    **options: Any,
) -> Report:
    """Evaluate a trained classifier: risks, floor, layer entropies, checked bounds.

    Parameters
    ----------
    model : nn.Module, checkpoint path, or EvaluateConfig
        Any module returning class scores ``(batch, K)`` (see ``output``); a checkpoint
        directory/file; or an :class:`EvaluateConfig` naming a checkpoint (then the data
        it records is used, and ``train``/``test`` must be None).
    train, test : Dataset, DataLoader or (inputs, labels)
        Training data (for the training risk, the floor and ``H_train``) and held-out data.
        ``test`` is split into certify/check parts (seeded, stratified; recorded in
        ``report.data["split"]``) unless ``check`` is given.
    check : Dataset, DataLoader or (inputs, labels), optional
        A held-out part kept apart for checking; ``test`` then certifies.
    layers : list of str, optional
        Module names or torchvision graph node names (:func:`clt_gen.list_layers`). By
        default the input, the top-level blocks and the logits (recorded in the report).
    output : None, str, int or callable
        Selects the scores when the model returns a tuple, dict or dataclass.
    omega : str, optional
        Regularizer of the risks and entropies (default ``shannon``, i.e. cross-entropy).
    delta : float
        Failure probability of each certificate.
    random_state : int
    device : str, optional
        ``cuda``, ``cpu`` or ``auto`` (default: CUDA when available).
    data_name : str
        What to call the data in the report.
    init_state : state_dict, optional
        The model's weights before training (``w_0``), the mean of the data-free prior of
        ``pac_bayes=True`` (checkpoints written by ``clt-gen train`` carry their own).
    **options
        Any other :class:`EvaluateConfig` field (``method``, ``heads``, ``cells``,
        ``max_features``, ``reduce``, ``batch_size``, ``cache_dir``, ``out``, ...).

    Returns
    -------
    Report
        ``report.save(dir)`` writes ``report.json`` and ``report.html``; with ``out=`` this
        happens here.

    Examples
    --------
    See the module docstring and ``docs/your-model.md``.
    """
    if isinstance(model, EvaluateConfig) or train is None or test is None:
        common = {"omega": omega, "delta": delta, "random_state": random_state}
        return _evaluate_without_data(
            model, train, test, layers=layers, output=output, device=device, **common, **options
        )
    cfg = EvaluateConfig(
        checkpoint=str(model) if isinstance(model, (str, os.PathLike)) else None,
        layers=_tuple(layers),
        omega=omega,
        delta=delta,
        random_state=random_state,
        device=device or "auto",
        **options,
    )
    return _evaluate_user(
        model, (train, test, check), cfg, output=output, data_name=data_name, init_state=init_state
    )


def _user_inputs(data: tuple[Any, Any, Any], cfg: EvaluateConfig, data_name: str) -> Inputs:
    train, test, check = data
    bs = cfg.batch_size
    inputs = Inputs(
        as_source(train, name="train", batch_size=bs),
        as_source(test, name="test", batch_size=bs, heldout=True),
        None if check is None else as_source(check, name="check", batch_size=bs, heldout=True),
        {"name": data_name},
    )
    named = (("train", inputs.train), ("test", inputs.heldout), ("check", inputs.check))
    sources = {k: src for k, src in named if src is not None}
    inputs.provenance.update(
        sources={k: src.describe() for k, src in sources.items()},
        sha256=hashlib.sha256(
            "".join(v.fingerprint for v in sources.values()).encode()
        ).hexdigest(),
    )
    return inputs


def _evaluate_user(
    model: Any,
    data: tuple[Any, Any, Any],
    cfg: EvaluateConfig,
    *,
    output: Output,
    data_name: str,
    init_state: Any = None,
) -> Report:
    """Evaluate a user's model (or checkpoint path) on the user's data."""
    check_outputs(cfg)
    clock, dev = _Clock(), resolve_device(cfg.device)
    if isinstance(model, (str, os.PathLike)):
        subject = _subject_from_checkpoint(str(model), cfg, dev)
    else:
        subject = _subject_from_module(model, cfg, dev)
    if init_state is not None:
        subject.init_state = init_state
    inputs = _user_inputs(data, cfg, data_name)
    clock.lap("load")
    report = _pipeline(subject, inputs, cfg, output=output, device=dev, clock=clock)
    if cfg.out is not None:
        _save(report, cfg.out)
    return report


def _evaluate_without_data(
    model: Any, train: Any, test: Any, *, output: Output, **kw: Any
) -> Report:
    """``evaluate(EvaluateConfig)`` or ``evaluate(checkpoint_path)``: the recorded data."""
    if isinstance(model, EvaluateConfig):
        if train is not None or test is not None:
            raise ValidationError(
                "evaluate(EvaluateConfig) uses the checkpoint's data: pass no train/test"
            )
        return _evaluate_config(model, output=output)
    if isinstance(model, (str, os.PathLike)) and train is None and test is None:
        layers, device = kw.pop("layers"), kw.pop("device")
        cfg = EvaluateConfig(
            checkpoint=str(model), layers=_tuple(layers), device=device or "auto", **kw
        )
        return _evaluate_config(cfg, output=output)
    raise ValidationError(
        "evaluate needs train and test data: evaluate(model, train, test) with each a "
        "Dataset, a DataLoader or a pair (inputs, labels)"
    )


def _tuple(v: Any) -> tuple[str, ...] | None:
    return tuple(v) if v is not None else None


def _evaluate_config(cfg: EvaluateConfig, *, output: Output = None) -> Report:
    """Evaluate a checkpoint on its recorded data and splits; write the report when ``out``."""
    if cfg.checkpoint is None:
        raise ValidationError("EvaluateConfig.checkpoint must name a checkpoint directory or file")
    check_outputs(cfg)
    clock, dev = _Clock(), resolve_device(cfg.device)
    subject = _subject_from_checkpoint(cfg.checkpoint, cfg, dev)
    inputs, _ = _checkpoint_inputs(subject, cfg)
    clock.lap("load")
    report = _pipeline(subject, inputs, cfg, output=output, device=dev, clock=clock)
    if cfg.out is not None:
        _save(report, cfg.out)
    return report

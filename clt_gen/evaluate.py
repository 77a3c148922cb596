"""The main job: checkpoint + data -> risks, data floor, layer entropies, information
loss, bounds computed on ``certify`` and checked on ``check``, in one report.

Examples
--------
>>> import tempfile
>>> from clt_gen.training import TrainConfig, train
>>> run = tempfile.mkdtemp()
>>> _ = train(TrainConfig(arch="mlp", arch_kwargs={"width": 32, "depth": 1}, epochs=2,
...                       optimizer="adamw", lr=3e-3, progress=False), run + "/ckpt")
>>> report = evaluate(EvaluateConfig(checkpoint=run + "/ckpt", out=run + "/eval",
...                                  n_bootstrap=50, progress=False))
>>> report["floor"]["value"] <= report["risks"]["train"]
True
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from clt_gen._version import __version__
from clt_gen.bounds import (
    Bound,
    data_floor,
    deterministic_range,
    frozen_feature_bound,
    shannon_loss_cap,
    validation_bound,
)
from clt_gen.checkpoints import atomic_write_text, load_checkpoint
from clt_gen.data import DataConfig, Splits, load_dataset, make_splits
from clt_gen.duality import get_regularizer
from clt_gen.errors import DataError, ValidationError, unknown_name_error
from clt_gen.features import INPUT_LAYER, default_layers, extract_features
from clt_gen.training import objective, resolve_device
from estimators import (
    DEFAULT_HEADS,
    DEFAULT_METHOD,
    conditional_entropy,
    dpi_profile,
    information_loss,
    paired_difference,
)

__all__ = ["EvaluateConfig", "evaluate", "SCHEMA_VERSION", "load_report"]

SCHEMA_VERSION = "1.1"
ENTROPY_OMEGAS = {
    "shannon": "shannon",
    "squared": "squared",
    "sparsemax": "sparsemax",
    "tsallis": "tsallis",
}


@dataclass(frozen=True)
class EvaluateConfig:
    """Options of ``clt-gen evaluate`` (recorded in the report).

    Attributes
    ----------
    checkpoint : str
        Checkpoint directory.
    out : str
        Output directory for ``report.json`` and ``report.html``.
    data : str, optional
        Dataset name; by default the one recorded in the checkpoint.
    data_dir : str, optional
    layers : tuple of str, optional
        Layer names; by default ``input``, every top-level block and the logits.
    omega : str, optional
        Regularizer of the risks and entropies; by default the training loss.
    method : str
        Entropy estimator (default: the most accurate in the benchmark).
    delta : float
        Failure probability of each probabilistic bound.
    reduce, max_features
        Feature reduction (``project``: random projection of the full map, which keeps
        the layers comparable for the data-processing inequality).
    max_train_samples : int
        Training features used for ``H_train`` (a seeded subset when larger).
    heads : tuple of str
        Head families of the ``auto`` estimates and of the certified bounds
        (:mod:`estimators.heads`; all of them by default).
    """

    checkpoint: str
    out: str
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
    trainability: bool = False
    trainability_samples: int = 256
    cache_dir: str | None = None
    arch_spec: dict[str, Any] | None = None
    trust_pickle: bool = False
    device: str = "auto"
    random_state: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        if not 0.0 < self.delta < 1.0:
            raise ValidationError(f"delta must be in (0, 1) (got {self.delta})")
        if self.max_features < 1:
            raise ValidationError(f"max_features must be >= 1 (got {self.max_features})")
        # names are checked here, before any checkpoint is loaded or feature extracted
        from estimators import HEADS, METHODS

        if self.method not in METHODS:
            raise unknown_name_error("method", self.method, METHODS)
        if self.omega is not None and self.omega not in ENTROPY_OMEGAS:
            raise unknown_name_error("omega", self.omega, ENTROPY_OMEGAS)
        for head in self.heads:
            if head not in HEADS:
                raise unknown_name_error("heads", head, HEADS)
        if not self.heads:
            raise ValidationError("heads must name at least one head family (e.g. 'logistic')")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_report(path: str | pathlib.Path) -> dict[str, Any]:
    """Read a ``report.json`` (a directory holding one is accepted)."""
    p = pathlib.Path(path)
    if p.is_dir():
        p = p / "report.json"
    return json.loads(p.read_text())


def _splits_for(ck: Any, cfg: EvaluateConfig) -> tuple[Splits, bool]:
    meta = ck.meta
    name = cfg.data or meta.get("dataset")
    if name is None:
        raise DataError("the checkpoint records no dataset: pass --data")
    data_dir = cfg.data_dir or meta.get("train_config", {}).get("data_dir")
    params = (
        meta.get("train_config", {}).get("dataset_params", {})
        if name == meta.get("dataset")
        else {}
    )
    ds = load_dataset(name, data_dir=data_dir, **params)
    dcfg = DataConfig(**meta["data_config"]) if "data_config" in meta else DataConfig()
    splits = make_splits(ds, dcfg)
    if "n_classes" not in meta or "input_shape" not in meta:
        # a bare model file: take the shapes from the data, then check the model's output
        meta.setdefault("input_shape", list(splits.x["train"].shape[1:]))
        param = next(ck.model.parameters())
        with torch.no_grad():
            out = ck.model(splits.x["train"][:2].to(param.device))
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
    for split in ("certify", "check"):
        if len(splits.y[split]) < 20:
            raise DataError(
                f"held-out split {split!r} has {len(splits.y[split])} examples; at least 20 "
                "are needed for certificates and checks (use more held-out data)"
            )
    matches = splits.fingerprint() == meta.get("data_fingerprint", splits.fingerprint())
    return splits, matches


@torch.no_grad()
def _scores(model: torch.nn.Module, x: torch.Tensor, device: torch.device) -> np.ndarray:
    out = []
    for i in range(0, len(x), 1024):
        out.append(model(x[i : i + 1024].to(device)).float().cpu())
    return torch.cat(out).double().numpy()


def _risk_terms(reg: Any, scores: np.ndarray, y: np.ndarray, eps: float) -> dict[str, Any]:
    s, yt = torch.from_numpy(scores), torch.from_numpy(y)
    losses = objective(reg, s, yt, eps).numpy()
    probs = np.asarray(reg.link(scores))
    if not reg.simplex:
        probs = np.clip(probs, 0, None)
        probs = probs / np.maximum(probs.sum(1, keepdims=True), 1e-12)
    e = probs.copy()
    e[np.arange(len(y)), y] -= 1.0
    brier = np.minimum(0.5 * (e * e).sum(1), 1.0)
    errors = (scores.argmax(1) != y).astype(np.float64)
    return {"losses": losses, "brier": brier, "errors": errors}


def _estimate_row(est: Any) -> dict[str, Any]:
    return {
        "value": est.value,
        "ci": list(est.ci or []),
        "stderr": est.stderr,
        "method": est.method,
        "assumption": est.assumption,
    }


def _tightest_later(values: list[float]) -> list[int]:
    """For each layer, the index of the smallest value among it and the later layers."""
    out, best = [0] * len(values), len(values) - 1
    for i in range(len(values) - 1, -1, -1):
        if values[i] <= values[best]:
            best = i
        out[i] = best
    return out


def _profile_rows(ests: list[Any], names: list[str], tighten: bool) -> list[dict[str, Any]]:
    """Estimate rows; with ``tighten``, layer ``l`` reports the best head among layers
    ``l' >= l`` (a head on ``Z_l'`` composed with the network's layers is a head on
    ``Z_l``), so the reported profile never decreases with depth."""
    idx = _tightest_later([e.value for e in ests]) if tighten else list(range(len(ests)))
    rows = []
    for i, j in enumerate(idx):
        row = _estimate_row(ests[j])
        if tighten:
            row.update(raw=ests[i].value, raw_ci=list(ests[i].ci or []), from_layer=names[j])
        rows.append(row)
    return rows


def _fit_layers(
    layers: list[str],
    feats: dict[str, dict[str, Any]],
    y_train: np.ndarray,
    y_heldout: np.ndarray,
    *,
    method: str,
    delta: float,
    n_bootstrap: int,
    heads: tuple[str, ...] | None,
    kw: dict[str, Any],
) -> dict[str, list[Any]]:
    """Per layer: train estimate, held-out estimate, certified bound (at delta / L) and the
    held-out per-sample terms, each list in layer order."""
    from estimators.certified import estimate_and_bound

    head_kw: dict[str, Any] = {"heads": tuple(heads)} if heads else {}
    fits: dict[str, list[Any]] = {"train": [], "heldout": [], "bound": [], "terms": []}
    for name in layers:
        z_tr, z_ho = np.asarray(feats["train"][name]), np.asarray(feats["certify"][name])
        est, ub, terms = estimate_and_bound(
            z_ho, y_heldout, delta=delta / len(layers), n_bootstrap=n_bootstrap, **kw, **head_kw
        )
        if method == "auto":
            h_tr = estimate_and_bound(z_tr, y_train, n_bootstrap=n_bootstrap, **kw, **head_kw)[0]
        else:
            h_tr = conditional_entropy(z_tr, y_train, method=method, n_bootstrap=n_bootstrap, **kw)
            est = conditional_entropy(z_ho, y_heldout, method=method, n_bootstrap=n_bootstrap, **kw)
        for key, value in zip(fits, (h_tr, est, ub, terms), strict=True):
            fits[key].append(value)
    return fits


def layer_entropies(
    layers: list[str],
    feats: dict[str, dict[str, Any]],
    y_train: np.ndarray,
    y_heldout: np.ndarray,
    *,
    n_classes: int,
    omega: str,
    alpha: float,
    method: str,
    delta: float,
    n_bootstrap: int,
    random_state: int,
    heads: tuple[str, ...] | None = None,
) -> list[dict[str, Any]]:
    """Per layer: ``H_Ω(Y|Z)`` estimates (train, held-out), the certified upper bound on
    held-out features at ``delta / L`` with its data-processing profile, and the
    information loss from the previous layer.

    With ``method="auto"`` one cross-fit per layer and split gives the estimate, the
    certificate and per-sample terms on shared samples and folds. The reported estimates
    are data-processing-consistent: layer ``l`` takes the best held-out head among layers
    ``l' >= l`` (the raw per-layer value is kept as ``raw``); information losses are paired
    differences of those terms. Other methods report raw estimates, flagged
    ``order_violation``/``dpi_violation`` where they break the order beyond their intervals.
    """
    kw: dict[str, Any] = {"omega": omega, "n_classes": n_classes, "random_state": random_state}
    if omega == "tsallis":
        kw["alpha"] = alpha
    auto = method == "auto"
    fits = _fit_layers(
        layers,
        feats,
        y_train,
        y_heldout,
        method=method,
        delta=delta,
        n_bootstrap=n_bootstrap,
        heads=heads,
        kw=kw,
    )
    train_rows = _profile_rows(fits["train"], layers, auto)
    held_rows = _profile_rows(fits["heldout"], layers, auto)
    chosen = _tightest_later([e.value for e in fits["heldout"]]) if auto else None
    profile = dpi_profile([u.value for u in fits["bound"]])
    rows: list[dict[str, Any]] = []
    for i, name in enumerate(layers):
        h_tr, est = fits["train"][i], fits["heldout"][i]
        row: dict[str, Any] = {
            "name": name,
            "n_features": int(np.asarray(feats["certify"][name]).shape[1]),
            "H_train": train_rows[i],
            "H_heldout": held_rows[i],
            "H_upper": {**fits["bound"][i].to_dict(), "delta_total": delta, "profile": profile[i]},
            "information_loss": None,
            "flags": sorted(set(h_tr.flags) | set(est.flags)),
        }
        if i > 0:
            if chosen is not None:
                a, b = fits["terms"][chosen[i]], fits["terms"][chosen[i - 1]]
                loss = paired_difference(a, b, n_bootstrap=n_bootstrap, **kw)
            else:
                loss = information_loss(
                    np.asarray(feats["certify"][layers[i - 1]]),
                    np.asarray(feats["certify"][name]),
                    y_heldout,
                    method=method,
                    n_bootstrap=n_bootstrap,
                    **kw,
                )
            row["information_loss"] = {
                "value": loss.value,
                "ci": list(loss.ci or []),
                "from": layers[i - 1],
            }
            if "dpi_violation" in loss.flags:
                row["flags"].append("dpi_violation")
        rows.append(row)
    _order_flags(rows, key="raw_ci" if auto else "ci")
    return rows


def _order_flags(rows: list[dict[str, Any]], key: str = "ci") -> None:
    """A later layer's held-out interval wholly below an earlier layer's, which the true
    quantity cannot do (data processing): ``order_violation`` for reported estimates,
    ``raw_order_violation`` for the raw per-layer values behind a tightened profile
    (a diagnostic of the heads' excess risk, not of the reported numbers)."""
    flag = "order_violation" if key == "ci" else "raw_order_violation"
    for i, row in enumerate(rows):
        ci = row["H_heldout"].get(key)
        if not ci:
            continue
        for later in rows[i + 1 :]:
            lci = later["H_heldout"].get(key)
            if lci and lci[1] < ci[0] and flag not in later["flags"]:
                later["flags"].append(flag)


def evaluate(config: EvaluateConfig) -> dict[str, Any]:
    """Run the full evaluation and write ``report.json`` and ``report.html`` atomically.

    Returns the report dictionary (see ``docs/report.md`` for the schema).
    """
    cfg = config
    t0 = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(name: str, since: float) -> float:
        now = time.perf_counter()
        timings[name] = round(now - since, 3)
        return now

    device = resolve_device(cfg.device)
    ck = load_checkpoint(
        cfg.checkpoint, arch=cfg.arch_spec, trust_pickle=cfg.trust_pickle, map_location=device
    )
    model = ck.model
    train_cfg = ck.meta.get("train_config", {})
    omega = cfg.omega or ck.meta.get("omega", "shannon")
    alpha = float(train_cfg.get("alpha", 1.5))
    reg = get_regularizer(omega, **({"alpha": alpha} if omega == "tsallis" else {}))
    eps = float(train_cfg.get("label_smoothing", 0.0)) if omega == ck.meta.get("omega") else 0.0
    splits, data_matches = _splits_for(ck, cfg)
    t = lap("load", t0)

    # risks ---------------------------------------------------------------------------
    terms: dict[str, dict[str, Any]] = {}
    scores: dict[str, np.ndarray] = {}
    for split in ("train", "certify", "check"):
        y = splits.y[split].numpy()
        scores[split] = _scores(model, splits.x[split], device)
        terms[split] = _risk_terms(reg, scores[split], y, eps if split == "train" else 0.0)
    risks = {
        "train": float(terms["train"]["losses"].mean()),
        "certify": float(terms["certify"]["losses"].mean()),
        "check": float(terms["check"]["losses"].mean()),
        "train_error": float(terms["train"]["errors"].mean()),
        "certify_error": float(terms["certify"]["errors"].mean()),
        "check_error": float(terms["check"]["errors"].mean()),
        "train_brier": float(terms["train"]["brier"].mean()),
        "check_brier": float(terms["check"]["brier"].mean()),
        "label_smoothing": eps,
    }
    risks["train_loss_max"] = float(np.max(terms["train"]["losses"]))
    risks["gap"] = risks["check"] - risks["train"]
    risks["error_gap"] = risks["check_error"] - risks["train_error"]
    t = lap("risks", t)

    # data floor ---------------------------------------------------------------------------
    floor = data_floor(
        splits.x["train"].numpy(),
        splits.y["train"].numpy(),
        splits.n_classes,
        omega=omega,
        alpha=alpha,
        label_smoothing=eps,
        train_risk=risks["train"],
    )
    floor = floor.check(risks["train"], on="train")
    t = lap("floor", t)

    # features and entropies ------------------------------------------------------------------
    layers = (
        list(cfg.layers)
        if cfg.layers
        else [INPUT_LAYER] + default_layers(model, ck.meta["input_shape"])
    )
    gen = np.random.default_rng(cfg.random_state)
    n_train = len(splits.y["train"])
    train_idx = np.sort(
        gen.choice(n_train, size=min(n_train, cfg.max_train_samples), replace=False)
    )
    feats: dict[str, dict[str, np.ndarray]] = {}
    for split, idx in (("train", train_idx), ("certify", None), ("check", None)):
        x = splits.x[split] if idx is None else splits.x[split][torch.from_numpy(idx)]
        feats[split] = extract_features(
            model,
            x,
            layers=layers,
            reduce=cfg.reduce,  # type: ignore[arg-type]
            max_features=cfg.max_features,
            device=device,
            cache_dir=cfg.cache_dir or str(pathlib.Path(cfg.out) / ".cache"),
            cache_parts={
                "checkpoint": ck.sha256,
                "data": splits.fingerprint(),
                "split": split,
                "rows": "all" if idx is None else f"seed{cfg.random_state}:{len(idx)}",
            },
            random_state=cfg.random_state,
            progress=cfg.progress,
        )
    t = lap("features", t)
    y_train_sub = splits.y["train"].numpy()[train_idx]
    y_cert, y_check = splits.y["certify"].numpy(), splits.y["check"].numpy()
    layer_rows = layer_entropies(
        layers,
        feats,
        y_train_sub,
        y_cert,
        n_classes=splits.n_classes,
        omega=ENTROPY_OMEGAS[omega],
        alpha=alpha,
        method=cfg.method,
        delta=cfg.delta,
        n_bootstrap=cfg.n_bootstrap,
        random_state=cfg.random_state,
        heads=cfg.heads,
    )
    t = lap("entropies", t)

    # bounds ---------------------------------------------------------------------------------
    bounds: list[Bound] = [floor]
    all_scores = np.concatenate([scores["train"], scores["certify"], scores["check"]])
    loss_max = float(max(np.max(terms[s]["losses"]) for s in terms))
    cap = shannon_loss_cap(all_scores) if omega == "shannon" else None
    # max_l H(Y|Z_l) is attained at the last layer (data processing): taking the max of
    # noisy, upward-biased estimates over layers would only add bias, so use the last one
    last = layer_rows[-1]
    layer_h = {
        last["name"]: (
            last["H_heldout"]["value"],
            last["H_heldout"]["ci"][0] if last["H_heldout"]["ci"] else last["H_heldout"]["value"],
        )
    }
    for b in deterministic_range(
        train_risk=risks["train"],
        layer_entropies=layer_h,
        loss_max=loss_max,
        loss_cap=cap,
        data_used="certify (entropies); all splits (loss max)",
    ):
        bounds.append(b.check(risks["check"], on="check"))
    m = len(y_cert)
    cert_err = float(terms["certify"]["errors"].mean())
    for method in ("binomial", "kl", "hoeffding", "bernstein"):
        b = validation_bound(
            cert_err, m, delta=cfg.delta, method=method, quantity="error", data_used="certify"
        )
        bounds.append(b.check(risks["check_error"], on="check"))
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
            risks["check_brier"], on="check"
        )
    )
    frozen_curves: dict[str, list[dict[str, Any]]] = {}
    for name in layers[1:]:
        res = frozen_feature_bound(
            np.asarray(feats["certify"][name]),
            y_cert,
            splits.n_classes,
            z_check=np.asarray(feats["check"][name]),
            y_check=y_check,
            cells=cfg.cells,
            delta=cfg.delta,
            omega="zero_one",
            random_state=cfg.random_state,
            layer=name,
        )
        frozen_curves[name] = res["curve"]
        bounds.append(dataclasses.replace(res["best"], name=f"frozen_feature[{name}]"))
    t = lap("bounds", t)

    trainability: dict[str, Any] | None = None
    if cfg.trainability:
        from clt_gen.trainability import trainability_summary

        n_probe = min(cfg.trainability_samples, len(splits.y["train"]))
        trainability = trainability_summary(
            model,
            splits.x["train"][:n_probe].to(device),
            splits.y["train"][:n_probe].to(device),
            reg,
            label_smoothing=eps,
        )
        t = lap("trainability", t)

    report: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "version": __version__,
        "config": cfg.to_dict(),
        "checkpoint": {
            "path": str(ck.path),
            "sha256": ck.sha256,
            "arch": ck.meta.get("arch"),
            "arch_kwargs": ck.meta.get("arch_kwargs", {}),
            "train_config": train_cfg,
        },
        "data": {
            "name": splits.dataset,
            "n_train": len(splits.y["train"]),
            "n_certify": len(y_cert),
            "n_check": len(y_check),
            "n_classes": splits.n_classes,
            "sha256": splits.fingerprint(),
            "matches_checkpoint": data_matches,
            "n_train_features": len(train_idx),
        },
        "omega": omega,
        "estimator": {
            "method": cfg.method,
            "n_bootstrap": cfg.n_bootstrap,
            "reduce": cfg.reduce,
            "max_features": cfg.max_features,
        },
        "risks": risks,
        "floor": {
            "value": floor.value,
            "fitting_error": floor.terms["fitting_error"],
            "n_duplicate_groups": floor.terms["n_duplicate_groups"],
            "n_conflicting_groups": floor.terms["n_conflicting_groups"],
        },
        "loss_max": {"observed": loss_max, "shannon_cap": cap},
        "layers": layer_rows,
        "bounds": [_bound_row(b) for b in bounds],
        "frozen_feature_curves": frozen_curves,
        "trainability": trainability,
        "timings": timings,
    }
    report["summary"] = summarize(report)
    timings["total"] = round(time.perf_counter() - t0, 3)
    out = pathlib.Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "report.json", json.dumps(_jsonable(report), indent=2))
    from clt_gen.report import render_html

    atomic_write_text(out / "report.html", render_html(report))
    return report


def _bound_row(b: Bound) -> dict[str, Any]:
    d = b.to_dict()
    return {
        k: d[k]
        for k in (
            "name",
            "kind",
            "quantity",
            "side",
            "value",
            "delta",
            "terms",
            "assumptions",
            "data_used",
            "checked_value",
            "checked_on",
            "held",
        )
    }


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def summarize(report: dict[str, Any]) -> list[str]:
    """Plain-language sentences for the top of the report."""
    r, f = report["risks"], report["floor"]
    units = "nats" if report["omega"] == "shannon" else "loss units"
    lines = [
        f"Training risk {r['train']:.4f} {units}; held-out (check) risk {r['check']:.4f}: "
        f"the measured gap is {r['gap']:+.4f}. Error: train {r['train_error']:.2%}, "
        f"check {r['check_error']:.2%}.",
        f"Data floor {f['value']:.4f}: no model can reach a training risk below it with these "
        f"targets ({f['n_conflicting_groups']} groups of identical inputs with conflicting "
        f"labels). The fitting error (train risk minus floor) is {f['fitting_error']:.4f}.",
    ]
    bounds = report["bounds"]
    held = [b for b in bounds if b["held"] is not None]
    certs = [b for b in held if b["kind"] != "estimate"]
    n_held = sum(bool(b["held"]) for b in certs)
    lines.append(
        f"{n_held} of {len(certs)} certificates held when checked on data they did not use"
        + "".join(
            f"; the estimated limit {b['name']} {'held' if b['held'] else 'failed'}"
            for b in held
            if b["kind"] == "estimate"
        )
        + "."
    )
    # certificates on the network's own error (frozen-feature bounds certify a cell head)
    errs = [b for b in bounds if b["quantity"] == "error" and b["name"].startswith("validation")]
    if errs:
        best = min(errs, key=lambda b: b["value"])
        lines.append(
            f"Tightest certificate on the test error: {best['value']:.2%} ({best['name']}, "
            f"δ={best['delta']}); the error measured on the check split is "
            f"{best['checked_value']:.2%}."
        )
    rows = report["layers"]
    if len(rows) > 1:
        losses = [
            (row["name"], row["information_loss"]["value"])
            for row in rows[1:]
            if row["information_loss"]
        ]
        name, val = max(losses, key=lambda t: t[1])
        last = rows[-1]
        lines.append(
            f"The largest estimated information loss, {val:.4f} {units}, happens at layer "
            f"'{name}'. H(Y|{last['name']}) on held-out data is estimated at "
            f"{last['H_heldout']['value']:.4f} (an estimate: {last['H_heldout']['method']}, "
            "no guarantee)."
        )
        up = last.get("H_upper")
        if up:
            lines.append(
                f"Certified: H(Y|{last['name']}) <= {up['profile']:.4f} with probability >= "
                f"{1 - up['delta_total']:.2f} (held-out heads, any distribution). No "
                "certificate can bound it from below, so no held-out risk floor is claimed."
            )
        low = last["H_heldout"]["ci"][0] if last["H_heldout"]["ci"] else None
        if low is not None and r["train"] < low:
            lines.append(
                f"The training risk sits below the lower end ({low:.4f}) of the interval of the "
                "estimated held-out conditional entropy of the network's own output: by the "
                f"estimate, a generalization gap of about {low - r['train']:.4f} or more is "
                "unavoidable (memorization signature; an estimate, not a certificate)."
            )
    if any("dpi_violation" in row["flags"] or "order_violation" in row["flags"] for row in rows):
        lines.append(
            "Some layers show an entropy decrease larger than estimation noise "
            "(flag dpi_violation): treat those estimates with care."
        )
    return lines

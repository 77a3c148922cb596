"""Typed, frozen evaluation results: :class:`Report`, :class:`LayerRow` and their parts.

A report is what :func:`clt_gen.evaluate` returns and what ``report.json`` holds. Every
number in it is typed as what it is: an *estimate* (:class:`EntropyEstimate`,
:class:`InformationLoss`: model-based, with an interval), a *certificate*
(:class:`CertifiedUpper`, and the probabilistic/deterministic :class:`~clt_gen.bounds.Bound`)
or a measurement (:class:`Risks`). ``to_dict``/``from_dict`` round-trip the JSON schema of
``docs/report.md``; reports written by older versions (schema 1.0, 1.1) still load.

Examples
--------
>>> rep = Report.from_dict(example_report_dict())
>>> rep.risks.gap == rep.risks.check - rep.risks.train
True
>>> Report.from_dict(rep.to_dict()) == rep
True
>>> [row.name for row in rep.layers]
['input', 'logits']
"""

from __future__ import annotations

import json
import math
import os
import pathlib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from clt_gen._io import atomic_write_text
from clt_gen.bounds import Bound
from clt_gen.errors import ValidationError, unknown_name_error

__all__ = [
    "SCHEMA_VERSION",
    "READABLE_SCHEMAS",
    "EntropyEstimate",
    "CertifiedUpper",
    "InformationLoss",
    "LayerRow",
    "layer_label",
    "Risks",
    "Floor",
    "Report",
    "load_report",
    "jsonable",
    "example_report_dict",
]

SCHEMA_VERSION = "1.4"
READABLE_SCHEMAS = ("1.0", "1.1", "1.2", "1.3", "1.4")


def jsonable(obj: Any) -> Any:
    """``obj`` with tuples as lists, NumPy scalars as Python numbers, non-finite as None."""
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return obj
    if hasattr(obj, "dtype") and getattr(obj, "shape", None) == ():
        obj = obj.item()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    return obj


def _pair(v: Any) -> tuple[float, float] | None:
    return (float(v[0]), float(v[1])) if v else None


def _opt_float(v: Any) -> float | None:
    return None if v is None else float(v)


@dataclass(frozen=True)
class EntropyEstimate:
    """An *estimate* of ``H_Ω(Y|Z)`` (no guarantee; ``assumption`` says what it rests on).

    Attributes
    ----------
    value : float
    ci : (float, float) or None
        Interval of the estimate (what it covers is stated in ``assumption``).
    stderr : float or None
    method : str
        Estimator name (:mod:`estimators.methods`).
    assumption : str
    raw, raw_ci, from_layer : optional
        With data-processing-consistent profiles: the layer's own value and interval, and
        the layer whose head gave ``value``.
    """

    value: float
    ci: tuple[float, float] | None
    stderr: float | None
    method: str
    assumption: str = ""
    raw: float | None = None
    raw_ci: tuple[float, float] | None = None
    from_layer: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (``raw``/``raw_ci``/``from_layer`` only when set)."""
        d: dict[str, Any] = {
            "value": self.value,
            "ci": list(self.ci or []),
            "stderr": self.stderr,
            "method": self.method,
            "assumption": self.assumption,
        }
        if self.from_layer is not None:
            d.update(raw=self.raw, raw_ci=list(self.raw_ci or []), from_layer=self.from_layer)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EntropyEstimate:
        """Inverse of :meth:`to_dict`."""
        return cls(
            value=float(d["value"]) if d["value"] is not None else math.nan,
            ci=_pair(d.get("ci")),
            stderr=_opt_float(d.get("stderr")),
            method=str(d.get("method", "")),
            assumption=str(d.get("assumption", "")),
            raw=_opt_float(d.get("raw")),
            raw_ci=_pair(d.get("raw_ci")),
            from_layer=d.get("from_layer"),
        )

    @property
    def lower(self) -> float:
        """Lower end of the interval (the value when there is none)."""
        return self.ci[0] if self.ci else self.value


@dataclass(frozen=True)
class CertifiedUpper:
    """A *certified* upper bound on ``H_Ω(Y|Z)`` from held-out scores of fitted heads.

    Attributes
    ----------
    value : float
        ``U``: holds with probability >= 1 − ``delta`` for any distribution.
    delta : float
        This layer's share (``delta_total / L``).
    delta_total : float
        All layers' certificates hold together with probability >= 1 − ``delta_total``.
    profile : float
        ``U* = min`` of ``U`` over this and later layers (data processing).
    details : dict
        Everything else of :class:`estimators.UpperBound` (heads, folds, concentration).
    """

    value: float
    delta: float
    delta_total: float
    profile: float
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (the details are merged in)."""
        return {
            **dict(self.details),
            "value": self.value,
            "delta": self.delta,
            "delta_total": self.delta_total,
            "profile": self.profile,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CertifiedUpper:
        """Inverse of :meth:`to_dict`."""
        core = ("value", "delta", "delta_total", "profile")
        return cls(
            value=float(d["value"]),
            delta=float(d["delta"]),
            delta_total=float(d["delta_total"]),
            profile=float(d["profile"]),
            details={k: v for k, v in d.items() if k not in core},
        )


@dataclass(frozen=True)
class InformationLoss:
    """Estimated ``H(Y|Z_l) − H(Y|Z_{l−1})`` (paired), with its interval.

    Attributes
    ----------
    value : float
        The paired estimate, in nats for ``shannon``.
    ci : (float, float) or None
        Its paired bootstrap interval.
    from_layer : str
        The previous layer ``l − 1``.
    resolution : float or None
        The smallest loss this sample can resolve here (THEORY §5.5): the half-width of the
        paired interval between the two layers' own held-out terms. A loss below it reads
        "< resolution", not "none".
    """

    value: float
    ci: tuple[float, float] | None
    from_layer: str
    resolution: float | None = None

    @property
    def resolved(self) -> bool:
        """Whether the loss is at least its resolution (a loss the sample can see)."""
        return self.resolution is not None and self.value >= self.resolution > 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (``from`` names the previous layer)."""
        return {
            "value": self.value,
            "ci": list(self.ci or []),
            "from": self.from_layer,
            "resolution": self.resolution,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> InformationLoss:
        """Inverse of :meth:`to_dict` (reports before 1.4 have no resolution)."""
        return cls(
            float(d["value"]), _pair(d.get("ci")), str(d["from"]), _opt_float(d.get("resolution"))
        )


@dataclass(frozen=True)
class LayerRow:
    """One layer of the report: its estimates, certificate and flags.

    Attributes
    ----------
    name : str
    n_features : int
        Dimension after reduction.
    H_train, H_heldout : EntropyEstimate
    H_upper : CertifiedUpper or None
    information_loss : InformationLoss or None
        From the previous layer (None for the first).
    flags : tuple of str
        The held-out estimate's flags, the train estimate's prefixed ``train:``, and the
        data-processing checks (``raw_order_violation``, ``order_violation``, ``dpi_violation``).
    probe : EntropyEstimate or None
        The *probe* profile (THEORY §5.5): the held-out score of this layer's own selected
        head (``probe_head``), with its interval: how accessible the label information is
        here to a head of the family at this sample size. It can fall with depth; a gap
        between two layers' probes is not an information loss.
    probe_head : str or None
        The head family (per fold) behind ``probe``.
    bound_from : str or None
        The layer whose head sets ``U*`` here (this one or a later one).
    module : str or None
        The module's type (``Conv2d``, ``Sequential``...), shown beside numeric names.
    """

    name: str
    n_features: int
    H_train: EntropyEstimate
    H_heldout: EntropyEstimate
    H_upper: CertifiedUpper | None = None
    information_loss: InformationLoss | None = None
    flags: tuple[str, ...] = ()
    probe: EntropyEstimate | None = None
    probe_head: str | None = None
    bound_from: str | None = None
    module: str | None = None

    @property
    def label(self) -> str:
        """The name people recognize: ``0 · Conv2d`` for a module with a bare index."""
        return layer_label(self.name, self.module)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary."""
        return {
            "name": self.name,
            "label": self.label,
            "module": self.module,
            "n_features": self.n_features,
            "H_train": self.H_train.to_dict(),
            "H_heldout": self.H_heldout.to_dict(),
            "probe": self.probe.to_dict() if self.probe else None,
            "probe_head": self.probe_head,
            "H_upper": self.H_upper.to_dict() if self.H_upper else None,
            "bound_from": self.bound_from,
            "information_loss": (
                self.information_loss.to_dict() if self.information_loss else None
            ),
            "flags": list(self.flags),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LayerRow:
        """Inverse of :meth:`to_dict` (schema 1.0 rows have no ``H_upper``).

        Rows before schema 1.4 have no ``probe``: it is read from ``H_heldout.raw`` when
        the profile was tightened (``auto``), else from ``H_heldout`` itself.
        """
        up, loss, pr = d.get("H_upper"), d.get("information_loss"), d.get("probe")
        held = EntropyEstimate.from_dict(d["H_heldout"])
        if pr:
            probe: EntropyEstimate | None = EntropyEstimate.from_dict(pr)
        elif held.from_layer is not None and held.raw is not None:
            probe = EntropyEstimate(held.raw, held.raw_ci, None, held.method, held.assumption)
        else:
            probe = held
        return cls(
            name=str(d["name"]),
            n_features=int(d["n_features"]),
            H_train=EntropyEstimate.from_dict(d["H_train"]),
            H_heldout=held,
            H_upper=CertifiedUpper.from_dict(up) if up else None,
            information_loss=InformationLoss.from_dict(loss) if loss else None,
            flags=tuple(d.get("flags", ())),
            probe=probe,
            probe_head=d.get("probe_head"),
            bound_from=d.get("bound_from"),
            module=d.get("module"),
        )


def layer_label(name: str, module: str | None) -> str:
    """``name · Type`` where the name alone does not say what the layer is.

    Examples
    --------
    >>> layer_label("0", "Conv2d"), layer_label("conv1", "Sequential"), layer_label("input", None)
    ('0 · Conv2d', 'conv1', 'input')
    """
    if module is None:
        return name
    return f"{name} · {module}" if name.rsplit(".", 1)[-1].isdigit() else name


def _from_fields(cls: Any, d: Mapping[str, Any]) -> Any:
    names = {f.name for f in fields(cls)}
    return cls(**{k: (math.nan if v is None else v) for k, v in d.items() if k in names})


@dataclass(frozen=True)
class Risks:
    """Risks measured by the network on each split (``train`` with the training targets).

    Attributes
    ----------
    train, certify, check : float
        Mean loss under Ω.
    train_error, certify_error, check_error : float
        0-1 error of the argmax.
    train_brier, check_brier : float
        Brier risk of the link's probabilities (in [0, 1]).
    label_smoothing : float
    train_loss_max : float
    gap, error_gap : float
        ``check − train`` of the risk and of the error.
    """

    train: float
    certify: float
    check: float
    train_error: float
    certify_error: float
    check_error: float
    train_brier: float
    check_brier: float
    label_smoothing: float
    train_loss_max: float
    gap: float
    error_gap: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Risks:
        """Inverse of :meth:`to_dict`."""
        return _from_fields(cls, d)


@dataclass(frozen=True)
class Floor:
    """The data floor (a deterministic lower bound on every model's training risk).

    Attributes
    ----------
    value : float
        ``Σ_x (n_x/n) H_Ω(q̃(·|x))`` over groups of identical training inputs.
    fitting_error : float
        The model's training risk minus the floor (``>= 0``).
    n_duplicate_groups : int
        Inputs that occur more than once.
    n_conflicting_groups : int
        Of those, the ones whose copies carry different labels.
    """

    value: float
    fitting_error: float
    n_duplicate_groups: int
    n_conflicting_groups: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Floor:
        """Inverse of :meth:`to_dict`."""
        return _from_fields(cls, d)


def _bound_from_dict(d: Mapping[str, Any]) -> Bound:
    names = {f.name for f in fields(Bound)}
    kw = {k: v for k, v in d.items() if k in names}
    kw["assumptions"] = tuple(kw.get("assumptions", ()))
    kw["terms"] = dict(kw.get("terms") or {})
    return Bound(**kw)


_BOUND_KEYS = (
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
    "vacuous",
)


@dataclass(frozen=True)
class Report:
    """Everything one evaluation found, typed; what ``report.json`` holds.

    Attributes
    ----------
    risks : Risks
    floor : Floor
    layers : tuple of LayerRow
        In forward order.
    bounds : tuple of Bound
        Certificates (``kind`` deterministic/probabilistic) and estimated limits
        (``kind="estimate"``), each checked on data it did not use.
    omega : str
    loss_max : dict
        ``observed`` maximal loss and the ``shannon_cap``.
    model, data : dict
        Provenance: what was evaluated (``model`` is the JSON key ``checkpoint``) and on
        which data (sizes, fingerprint, how held-out data was split).
    config : dict
        The resolved options, policy included.
    estimator : dict
    frozen_feature_curves : dict
    trainability : dict or None
    pac_bayes : dict or None
        The PAC-Bayes certificate's details (schema 1.3; ``evaluate(pac_bayes=True)``):
        KL, rows, ``δ`` shares, the prior, the posterior's summary, the Gibbs network's
        check error. Its two certificates are rows of ``bounds`` (``pac_bayes[error]``,
        ``pac_bayes[ce]``).
    timings : dict
    summary_lines : tuple of str
    schema_version, version : str

    Examples
    --------
    >>> rep = Report.from_dict(example_report_dict())
    >>> rep.best_error_certificate().name
    'validation_kl'
    >>> print(rep.summary().splitlines()[0][:30])
    Training risk 0.1000 nats; hel
    """

    risks: Risks
    floor: Floor
    layers: tuple[LayerRow, ...]
    bounds: tuple[Bound, ...]
    omega: str = "shannon"
    loss_max: Mapping[str, Any] = field(default_factory=dict)
    model: Mapping[str, Any] = field(default_factory=dict)
    data: Mapping[str, Any] = field(default_factory=dict)
    config: Mapping[str, Any] = field(default_factory=dict)
    estimator: Mapping[str, Any] = field(default_factory=dict)
    frozen_feature_curves: Mapping[str, Any] = field(default_factory=dict)
    trainability: Mapping[str, Any] | None = None
    pac_bayes: Mapping[str, Any] | None = None
    timings: Mapping[str, float] = field(default_factory=dict)
    summary_lines: tuple[str, ...] = ()
    schema_version: str = SCHEMA_VERSION
    version: str = ""

    # -- access ---------------------------------------------------------------------------
    def layer(self, name: str) -> LayerRow:
        """Return the row of layer ``name``."""
        for row in self.layers:
            if row.name == name:
                return row
        raise unknown_name_error("layer", name, [r.name for r in self.layers])

    def certificates(self) -> tuple[Bound, ...]:
        """Bounds that hold with a guarantee (deterministic or probabilistic)."""
        return tuple(b for b in self.bounds if b.kind != "estimate")

    def estimated_limits(self) -> tuple[Bound, ...]:
        """Limits built from estimates (no guarantee)."""
        return tuple(b for b in self.bounds if b.kind == "estimate")

    def best_error_certificate(self) -> Bound | None:
        """Return the tightest held-out certificate on the network's own 0-1 test error."""
        errs = [b for b in self.certificates() if b.quantity == "error"]
        return min(errs, key=lambda b: b.value) if errs else None

    def best_train_certificate(self) -> Bound | None:
        """Return the tightest certificate computed from the training data alone.

        Today these are the PAC-Bayes certificates on the Gibbs network's 0-1 error.
        """
        errs = [b for b in self.certificates() if b.quantity == "gibbs_error"]
        return min(errs, key=lambda b: b.value) if errs else None

    # -- serialization ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Return the JSON schema of ``docs/report.md`` (plain Python types)."""
        d: dict[str, Any] = {
            "schema_version": self.schema_version,
            "version": self.version,
            "config": dict(self.config),
            "checkpoint": dict(self.model),
            "data": dict(self.data),
            "omega": self.omega,
            "estimator": dict(self.estimator),
            "risks": self.risks.to_dict(),
            "floor": self.floor.to_dict(),
            "loss_max": dict(self.loss_max),
            "layers": [row.to_dict() for row in self.layers],
            "bounds": [{k: b.to_dict()[k] for k in _BOUND_KEYS} for b in self.bounds],
            "frozen_feature_curves": dict(self.frozen_feature_curves),
            "trainability": dict(self.trainability) if self.trainability is not None else None,
            "pac_bayes": dict(self.pac_bayes) if self.pac_bayes is not None else None,
            "timings": dict(self.timings),
            "summary": list(self.summary_lines),
        }
        return jsonable(d)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Report:
        """Read a report dictionary of any readable schema version."""
        version = str(d.get("schema_version", "1.0"))
        if version not in READABLE_SCHEMAS:
            raise ValidationError(
                f"report schema_version must be one of {READABLE_SCHEMAS} (got {version!r}); "
                "upgrade clt_gen to read it"
            )
        missing = [k for k in ("risks", "floor", "layers", "bounds") if k not in d]
        if missing:
            raise ValidationError(f"a report needs the sections {missing} (got {sorted(d)})")
        return cls(
            risks=Risks.from_dict(d["risks"]),
            floor=Floor.from_dict(d["floor"]),
            layers=tuple(LayerRow.from_dict(r) for r in d["layers"]),
            bounds=tuple(_bound_from_dict(b) for b in d["bounds"]),
            omega=str(d.get("omega", "shannon")),
            loss_max=dict(d.get("loss_max") or {}),
            model=dict(d.get("checkpoint") or {}),
            data=dict(d.get("data") or {}),
            config=dict(d.get("config") or {}),
            estimator=dict(d.get("estimator") or {}),
            frozen_feature_curves=dict(d.get("frozen_feature_curves") or {}),
            trainability=d.get("trainability"),
            pac_bayes=d.get("pac_bayes"),
            timings=dict(d.get("timings") or {}),
            summary_lines=tuple(d.get("summary", ())),
            schema_version=version,
            version=str(d.get("version", "")),
        )

    def to_json(self) -> str:
        """``report.json``'s text."""
        return json.dumps(self.to_dict(), indent=2)

    def save(self, directory: str | os.PathLike[str]) -> pathlib.Path:
        """Write ``report.json`` and ``report.html`` into ``directory`` (each atomically).

        Returns the directory.
        """
        from clt_gen.render import render_html

        out = pathlib.Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "report.json", self.to_json())
        try:  # the page is a view of report.json: failing to write it loses nothing
            atomic_write_text(out / "report.html", render_html(self.to_dict()))
        except OSError as exc:
            import warnings

            warnings.warn(
                f"report.html could not be written to {out} ({exc.strerror or exc}); "
                "report.json is complete and `clt_gen.load_report` reads it",
                UserWarning,
                stacklevel=2,
            )
        return out

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Report:
        """Read ``report.json`` (a directory holding one is accepted)."""
        return load_report(path)

    def with_summary(self) -> Report:
        """Return a copy whose ``summary_lines`` are written from its numbers."""
        return replace(self, summary_lines=tuple(summary_sentences(self)))

    # -- display ------------------------------------------------------------------------------
    def summary(self) -> str:
        """Plain-language sentences, one per line."""
        return "\n".join(self.summary_lines or summary_sentences(self))

    def table(self) -> str:
        """Return a short terminal table: risks, floor, per-layer entropies, bounds."""
        from clt_gen.render import summary_table

        return summary_table(self.to_dict())

    def _repr_html_(self) -> str:
        from clt_gen.render import render_html

        return render_html(self.to_dict())

    def layers_frame(self) -> Any:
        """Return the layer table as a pandas DataFrame (needs pandas)."""
        pd = _pandas()
        rows = []
        for r in self.layers:
            rows.append(
                {
                    "layer": r.name,
                    "label": r.label,
                    "module": r.module,
                    "n_features": r.n_features,
                    "H_train": r.H_train.value,
                    "H_heldout": r.H_heldout.value,
                    "H_heldout_low": r.H_heldout.ci[0] if r.H_heldout.ci else None,
                    "H_heldout_high": r.H_heldout.ci[1] if r.H_heldout.ci else None,
                    "probe": r.probe.value if r.probe else None,
                    "probe_low": r.probe.ci[0] if r.probe and r.probe.ci else None,
                    "probe_high": r.probe.ci[1] if r.probe and r.probe.ci else None,
                    "probe_head": r.probe_head,
                    "U_certified": r.H_upper.value if r.H_upper else None,
                    "U_star_certified": r.H_upper.profile if r.H_upper else None,
                    "U_star_from": r.bound_from,
                    "information_loss": (r.information_loss.value if r.information_loss else None),
                    "information_loss_resolution": (
                        r.information_loss.resolution if r.information_loss else None
                    ),
                    "flags": ",".join(r.flags),
                }
            )
        return pd.DataFrame(rows).set_index("layer")

    def bounds_frame(self) -> Any:
        """Return the bound table as a pandas DataFrame (needs pandas)."""
        pd = _pandas()
        cols = ("name", "kind", "quantity", "side", "value", "delta", "checked_value", "held")
        return pd.DataFrame([{c: getattr(b, c) for c in cols} for b in self.bounds]).set_index(
            "name"
        )


def _pandas() -> Any:
    try:
        import pandas as pd
    except ImportError as exc:  # pragma: no cover - pandas is a test dependency
        raise ImportError(
            "tables as DataFrames need pandas: pip install pandas (or clt_gen[pandas])"
        ) from exc
    return pd


def load_report(path: str | os.PathLike[str]) -> Report:
    """Read a ``report.json`` (a directory holding one is accepted) as a :class:`Report`.

    Parameters
    ----------
    path : path
        A ``report.json`` file or the directory holding it.

    Returns
    -------
    Report
        Reports of older schema versions are upgraded on load.

    Examples
    --------
    >>> import tempfile
    >>> d = Report.from_dict(example_report_dict()).save(tempfile.mkdtemp())
    >>> load_report(d).floor.value
    0.0
    """
    p = pathlib.Path(path)
    if p.is_dir():
        p = p / "report.json"
    if not p.exists():
        raise ValidationError(
            f"path must be a report.json or a directory holding one (got {str(path)!r}); "
            "run `clt-gen evaluate` first"
        )
    try:
        d = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValidationError(
            f"{p} is not a valid report.json ({exc}); it may be truncated: rerun "
            "`clt-gen evaluate` for it"
        ) from None
    if not isinstance(d, dict):
        raise ValidationError(
            f"{p} is not a clt_gen report: it holds a JSON {type(d).__name__}, not an object"
        )
    try:
        return Report.from_dict(d)
    except ValidationError as exc:
        raise ValidationError(f"{p}: {exc}") from None
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise ValidationError(
            f"{p} is not a readable clt_gen report ({type(exc).__name__}: {exc}); rerun "
            "`clt-gen evaluate` for it"
        ) from None


def summary_sentences(report: Report) -> list[str]:
    """Plain-language sentences for the top of the report (estimates named as such)."""
    r, f = report.risks, report.floor
    units = "nats" if report.omega == "shannon" else "loss units"
    lines = [
        f"Training risk {r.train:.4f} {units}; held-out (check) risk {r.check:.4f}: "
        f"the measured gap is {r.gap:+.4f}. Error: train {r.train_error:.2%}, "
        f"check {r.check_error:.2%}.",
        f"Data floor {f.value:.4f}: no model can reach a training risk below it with these "
        f"targets ({f.n_conflicting_groups} groups of identical inputs with conflicting "
        f"labels). The fitting error (train risk minus floor) is {f.fitting_error:.4f}.",
    ]
    certs = [b for b in report.certificates() if b.held is not None]
    limits = [b for b in report.estimated_limits() if b.held is not None]
    informative = [b for b in certs if not b.vacuous]
    n_vacuous = len(certs) - len(informative)
    lines.append(
        f"{sum(bool(b.held) for b in informative)} of {len(informative)} informative "
        "certificates held when checked on data they did not use"
        + (
            f"; {n_vacuous} more are vacuous (no better than predicting the label "
            f"frequencies: {', '.join(b.name for b in certs if b.vacuous)})"
            if n_vacuous
            else ""
        )
        + "".join(
            f"; the estimated limit {b.name} {'held' if b.held else 'failed'}" for b in limits
        )
        + "."
    )
    best_train = report.best_train_certificate()
    if best_train is not None and best_train.checked_value is not None:
        det = best_train.terms.get("deterministic_check_error")
        lines.append(
            f"Tightest certificate from the training data alone: {best_train.value:.2%} on the "
            f"Gibbs network's test error ({best_train.name}, δ={best_train.delta}, "
            f"KL {best_train.terms.get('kl', float('nan')):.0f} nats over "
            f"{best_train.terms.get('n_samples')} rows); that network's check error is "
            f"{best_train.checked_value:.2%}"
            + (f", the checkpoint's own {det:.2%}." if det is not None else ".")
            + (
                " It is vacuous: these rows cannot pay for a posterior that keeps the "
                "network's accuracy; more rows, or a data-dependent prior (`clt-gen train "
                "--pac-bayes-prior 0.5`), can make it informative."
                if best_train.vacuous
                else ""
            )
        )
    best = report.best_error_certificate()
    if best is not None and best.checked_value is not None:
        lines.append(
            f"Tightest held-out certificate on the test error: {best.value:.2%} ({best.name}, "
            f"δ={best.delta}); the error measured on the check split is "
            f"{best.checked_value:.2%}."
        )
    lines.extend(_layer_sentences(report, units))
    return lines


def _layer_sentences(report: Report, units: str) -> list[str]:
    rows, lines = report.layers, []
    if len(rows) > 1:
        last = rows[-1]
        lines.append(_loss_sentence(rows, units))
        probes = [r for r in rows if r.probe is not None]
        if len(probes) > 1:
            path = " -> ".join(f"{r.probe.value:.3f}" for r in probes if r.probe)
            setters = sorted({r.bound_from for r in rows if r.bound_from})
            lines.append(
                f"Probe profile (each layer's own head on held-out data; an estimate of the "
                f"label information a head of the family extracts at this sample size): {path} "
                f"from '{probes[0].label}' to '{probes[-1].label}'. The certified profile U* "
                f"is set by the head of {', '.join(repr(s) for s in setters)}"
                + (
                    " for every layer (a later layer's head bounds every earlier layer)."
                    if len(setters) == 1
                    else "."
                )
            )
        lines.append(
            f"H(Y|{last.label}) on held-out data is estimated at {last.H_heldout.value:.4f} "
            f"(an estimate: {last.H_heldout.method}, no guarantee)."
        )
        if last.H_upper:
            lines.append(
                f"Certified: H(Y|{last.label}) <= {last.H_upper.profile:.4f} with probability "
                f">= {1 - last.H_upper.delta_total:.2f} (held-out heads, any distribution). No "
                "certificate can bound it from below, so no held-out risk floor is claimed."
            )
        low = last.H_heldout.ci[0] if last.H_heldout.ci else None
        if low is not None and report.risks.train < low:
            lines.append(
                f"The training risk sits below the lower end ({low:.4f}) of the interval of the "
                "estimated held-out conditional entropy of the network's own output: by the "
                f"estimate, a generalization gap of about {low - report.risks.train:.4f} or "
                "more is unavoidable (memorization signature; an estimate, not a certificate)."
            )
    if any({"dpi_violation", "order_violation"} & set(row.flags) for row in rows):
        lines.append(
            "Some layers show an entropy decrease larger than estimation noise "
            "(flag dpi_violation): treat those estimates with care."
        )
    return lines


def _loss_sentence(rows: tuple[LayerRow, ...], units: str) -> str:
    """Name the largest resolvable information loss, or say that none is resolvable."""
    losses = [r for r in rows if r.information_loss is not None]
    resolved = [r for r in losses if r.information_loss and r.information_loss.resolved]
    if resolved:
        top = max(resolved, key=lambda r: r.information_loss.value if r.information_loss else 0)
        info = top.information_loss
        assert info is not None
        return (
            f"The largest resolvable information loss, {info.value:.4f} {units} (resolution "
            f"±{info.resolution:.4f}), happens at layer '{top.label}' (an estimate)."
        )
    widths = [
        r.information_loss.resolution
        for r in losses
        if r.information_loss and r.information_loss.resolution is not None
    ]
    if widths:
        return (
            "No information loss is resolvable at this sample size (every layer's loss is "
            f"below its resolution, at most ±{max(widths):.4f} {units})."
        )
    top = max(losses, key=lambda r: r.information_loss.value if r.information_loss else 0)
    assert top.information_loss is not None
    return (
        f"The largest estimated information loss, {top.information_loss.value:.4f} {units}, "
        f"happens at layer '{top.label}' (an estimate)."
    )


def example_report_dict() -> dict[str, Any]:
    """Return a small, complete report dictionary (the current schema), for examples and tests."""
    est = {"value": 0.5, "ci": [0.4, 0.6], "stderr": 0.05, "method": "auto", "assumption": "x"}
    return {
        "schema_version": SCHEMA_VERSION,
        "version": "0",
        "risks": {
            "train": 0.1,
            "certify": 0.3,
            "check": 0.32,
            "train_error": 0.02,
            "certify_error": 0.08,
            "check_error": 0.09,
            "train_brier": 0.02,
            "check_brier": 0.07,
            "label_smoothing": 0.0,
            "train_loss_max": 2.0,
            "gap": 0.32 - 0.1,
            "error_gap": 0.09 - 0.02,
        },
        "floor": {
            "value": 0.0,
            "fitting_error": 0.1,
            "n_duplicate_groups": 0,
            "n_conflicting_groups": 0,
        },
        "layers": [
            {"name": "input", "n_features": 4, "H_train": est, "H_heldout": est, "flags": []},
            {
                "name": "logits",
                "n_features": 3,
                "H_train": est,
                "H_heldout": est,
                "H_upper": {"value": 0.7, "delta": 0.025, "delta_total": 0.05, "profile": 0.7},
                "information_loss": {"value": 0.0, "ci": [-0.01, 0.01], "from": "input"},
                "flags": [],
            },
        ],
        "bounds": [
            {
                "name": name,
                "kind": "probabilistic",
                "quantity": "error",
                "side": "upper",
                "value": value,
                "delta": 0.05,
                "checked_value": 0.09,
                "checked_on": "check",
                "held": True,
            }
            for name, value in (("validation_kl", 0.12), ("validation_hoeffding", 0.15))
        ],
    }

"""Per-layer conditional-entropy profiles: estimates, certificates and information loss.

Takes feature arrays and labels (NumPy), never models, and returns typed
:class:`~clt_gen.report.LayerRow` objects.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> y = rng.integers(0, 2, 400)
>>> z = y[:, None] + rng.normal(size=(400, 2))
>>> feats = {"train": {"a": z[:200], "b": z[:200, :1]}, "certify": {"a": z[200:], "b": z[200:, :1]}}
>>> rows = layer_entropies(["a", "b"], feats, y[:200], y[200:], n_classes=2, omega="shannon",
...                        alpha=1.5, method="gaussian", delta=0.05, n_bootstrap=20,
...                        random_state=0, heads=("logistic",))
>>> [r.name for r in rows], rows[1].information_loss.from_layer
(['a', 'b'], 'a')
"""

from __future__ import annotations

from typing import Any

import numpy as np

from clt_gen.report import CertifiedUpper, EntropyEstimate, InformationLoss, LayerRow
from estimators import conditional_entropy, dpi_profile, information_loss, paired_difference

__all__ = ["layer_entropies", "tightest_later"]


def _estimate(est: Any, raw: Any = None, from_layer: str | None = None) -> EntropyEstimate:
    ci = tuple(est.ci) if est.ci else None
    return EntropyEstimate(
        value=float(est.value),
        ci=ci,
        stderr=None if est.stderr is None else float(est.stderr),
        method=est.method,
        assumption=est.assumption,
        raw=None if raw is None else float(raw.value),
        raw_ci=tuple(raw.ci) if raw is not None and raw.ci else None,
        from_layer=from_layer,
    )


def tightest_later(values: list[float]) -> list[int]:
    """For each layer, the index of the smallest value among it and the later layers.

    Examples
    --------
    >>> tightest_later([0.5, 0.7, 0.6])
    [0, 2, 2]
    """
    out, best = [0] * len(values), len(values) - 1
    for i in range(len(values) - 1, -1, -1):
        if values[i] <= values[best]:
            best = i
        out[i] = best
    return out


def _profile(ests: list[Any], names: list[str], tighten: bool) -> list[EntropyEstimate]:
    """Return the reported profile, which never decreases with depth.

    Layer ``l`` reports, with ``tighten``, the best head among layers ``l' >= l`` (a head on
    ``Z_l'`` composed with the network's layers is a head on ``Z_l``).
    """
    if not tighten:
        return [_estimate(e) for e in ests]
    idx = tightest_later([e.value for e in ests])
    return [_estimate(ests[j], raw=ests[i], from_layer=names[j]) for i, j in enumerate(idx)]


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
    n_jobs: int | None = 1,
) -> dict[str, list[Any]]:
    """Fit every layer: estimates, certified bounds and held-out per-sample terms.

    Per layer: train estimate, held-out estimate, certified bound (at delta / L) and the
    held-out per-sample terms, each list in layer order. The fits are independent and
    run on ``n_jobs`` processes (:func:`clt_gen._parallel.run_array_calls`), same numbers.
    """
    from clt_gen._parallel import run_array_calls
    from estimators.certified import estimate_and_bound

    head_kw: dict[str, Any] = {"heads": tuple(heads)} if heads else {}
    calls: list[Any] = []
    for name in layers:
        z_tr, z_ho = np.asarray(feats["train"][name]), np.asarray(feats["certify"][name])
        ho_kw = {"delta": delta / len(layers), "n_bootstrap": n_bootstrap, **kw, **head_kw}
        calls.append((estimate_and_bound, (z_ho, y_heldout), ho_kw))
        if method == "auto":
            calls.append(
                (estimate_and_bound, (z_tr, y_train), {"n_bootstrap": n_bootstrap, **kw, **head_kw})
            )
        else:
            other = {"method": method, "n_bootstrap": n_bootstrap, **kw}
            calls.append((conditional_entropy, (z_tr, y_train), other))
            calls.append((conditional_entropy, (z_ho, y_heldout), other))
    out = run_array_calls(calls, n_jobs)
    step = 2 if method == "auto" else 3
    fits: dict[str, list[Any]] = {"train": [], "heldout": [], "bound": [], "terms": []}
    for i in range(len(layers)):
        (est, ub, terms), h_tr = out[step * i], out[step * i + 1]
        h_tr = h_tr[0] if method == "auto" else h_tr
        est = est if method == "auto" else out[step * i + 2]
        for key, value in zip(fits, (h_tr, est, ub, terms), strict=True):
            fits[key].append(value)
    return fits


def _losses(
    layers: list[str],
    fits: dict[str, list[Any]],
    feats: dict[str, dict[str, Any]],
    y_heldout: np.ndarray,
    *,
    method: str,
    n_bootstrap: int,
    kw: dict[str, Any],
) -> list[Any]:
    """Information loss of each layer from the previous one (None for the first)."""
    chosen = tightest_later([e.value for e in fits["heldout"]]) if method == "auto" else None
    out: list[Any] = [None]
    for i in range(1, len(layers)):
        if chosen is not None:
            a, b = fits["terms"][chosen[i]], fits["terms"][chosen[i - 1]]
            pair = {chosen[i], chosen[i - 1]}  # one layer when both read the same terms
            var = sum(fits["heldout"][j].params.get("head_variance", 0.0) for j in pair)
            var = var if len(pair) == 2 else 0.0
            out.append(paired_difference(a, b, n_bootstrap=n_bootstrap, extra_variance=var, **kw))
        else:
            prev, cur = feats["certify"][layers[i - 1]], feats["certify"][layers[i]]
            out.append(
                information_loss(
                    np.asarray(prev),
                    np.asarray(cur),
                    y_heldout,
                    method=method,
                    n_bootstrap=n_bootstrap,
                    **kw,
                )
            )
    return out


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
    n_jobs: int | None = 1,
) -> list[LayerRow]:
    """Return the layer rows of a report.

    Per layer: ``H_Ω(Y|Z)`` estimates (train, held-out), the certified upper bound on
    held-out features at ``delta / L`` with its data-processing profile, and the
    information loss from the previous layer.

    Parameters
    ----------
    layers : list of str
    feats : dict
        ``feats[split][layer]``: arrays ``(n, d)`` for splits ``train`` and ``certify``.
    y_train, y_heldout : arrays of int
    n_classes, omega, alpha : the label space and the regularizer
    method : str
        Estimator of :mod:`estimators.methods`. With ``"auto"`` one cross-fit per layer and
        split gives the estimate, the certificate and per-sample terms on shared samples and
        folds; reported estimates are data-processing-consistent (the layer's own value is
        kept as ``raw``) and information losses are paired differences of those terms.
        Other methods report raw estimates, flagged ``order_violation``/``dpi_violation``
        where they break the order beyond their intervals.
    delta : float
        Shared by all layers' certificates.
    n_bootstrap, random_state, heads : estimator options
    n_jobs : int or None
        Processes for the layers' fits (``None``: all available cores); same numbers.

    Returns
    -------
    list of LayerRow
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
        n_jobs=n_jobs,
    )
    train_rows, held_rows = (
        _profile(fits["train"], layers, auto),
        _profile(fits["heldout"], layers, auto),
    )
    losses = _losses(layers, fits, feats, y_heldout, method=method, n_bootstrap=n_bootstrap, kw=kw)
    res = _resolutions(fits, losses, auto=auto, n_bootstrap=n_bootstrap, kw=kw)
    rows = _rows(layers, fits, losses, (train_rows, held_rows), feats, delta, res)
    return _order_flags(rows, raw=auto)


def _half_width(est: Any) -> float | None:
    if est is None or not est.ci:
        return None
    return float(est.ci[1] - est.ci[0]) / 2.0


def _resolutions(
    fits: dict[str, list[Any]],
    losses: list[Any],
    *,
    auto: bool,
    n_bootstrap: int,
    kw: dict[str, Any],
) -> list[float | None]:
    """Return the smallest information loss each layer can resolve (THEORY §5.5).

    The half-width of the paired interval between the layer's *own* held-out terms and the
    previous layer's. With ``auto`` the reported loss compares the data-processing
    profile, whose two layers often read the same head (a loss of exactly 0 with a
    zero-width interval); the resolution still says how large a loss the two layers' own
    heads could have told apart at this sample size.
    """
    out: list[float | None] = [None]
    for i in range(1, len(losses)):
        if not auto:
            out.append(_half_width(losses[i]))
            continue
        var = sum(fits["heldout"][j].params.get("head_variance", 0.0) for j in (i, i - 1))
        own = paired_difference(
            fits["terms"][i],
            fits["terms"][i - 1],
            n_bootstrap=max(n_bootstrap, 50),
            extra_variance=var,
            **kw,
        )
        out.append(_half_width(own))
    return out


def _probe_head(est: Any) -> str | None:
    heads = est.params.get("heads") if hasattr(est, "params") else None
    if not heads:
        return None
    names = []
    for h in heads:
        label = h.get("name", "?") if isinstance(h, dict) else str(h)
        if isinstance(h, dict) and h.get("covariance"):
            label += f" ({h['covariance']})"
        names.append(label)
    return " / ".join(names)


def _rows(
    layers: list[str],
    fits: dict[str, list[Any]],
    losses: list[Any],
    profiles: tuple[list[EntropyEstimate], list[EntropyEstimate]],
    feats: dict[str, dict[str, Any]],
    delta: float,
    resolutions: list[float | None] | None = None,
) -> list[LayerRow]:
    """Assemble one :class:`LayerRow` per layer from the fits."""
    profile = dpi_profile([u.value for u in fits["bound"]])
    setter = tightest_later([u.value for u in fits["bound"]])
    res = resolutions or [None] * len(layers)
    rows: list[LayerRow] = []
    for i, name in enumerate(layers):
        ub, loss = fits["bound"][i], losses[i]
        # the held-out estimate's flags as they are, the train estimate's marked as such
        train_flags = {f"train:{f}" for f in fits["train"][i].flags}
        flags = sorted(set(fits["heldout"][i].flags) | train_flags)
        if loss is not None and "dpi_violation" in loss.flags:
            flags.append("dpi_violation")
        details = {k: v for k, v in ub.to_dict().items() if k not in ("value", "delta")}
        info = None
        if loss is not None:
            ci = (float(loss.ci[0]), float(loss.ci[1])) if loss.ci else None
            info = InformationLoss(float(loss.value), ci, layers[i - 1], res[i])
        rows.append(
            LayerRow(
                name=name,
                n_features=int(np.asarray(feats["certify"][name]).shape[1]),
                H_train=profiles[0][i],
                H_heldout=profiles[1][i],
                H_upper=CertifiedUpper(ub.value, ub.delta, delta, profile[i], details),
                information_loss=info,
                flags=tuple(flags),
                probe=_estimate(fits["heldout"][i]),
                probe_head=_probe_head(fits["heldout"][i]),
                bound_from=layers[setter[i]],
            )
        )
    return rows


def _order_flags(rows: list[LayerRow], *, raw: bool) -> list[LayerRow]:
    """Flag a later layer whose held-out interval lies wholly below an earlier layer's.

    The true quantity cannot do that (data processing): ``order_violation`` for reported estimates,
    ``raw_order_violation`` for the raw per-layer values behind a tightened profile
    (a diagnostic of the heads' excess risk, not of the reported numbers).
    An earlier layer whose held-out value is only an upper estimate (flag ``upper_estimate``:
    the learning-curve debiasing did not apply, so its bias is >= 0 of unknown size) is not
    compared: a later layer below it is what such a bias produces, not evidence against
    either estimate. It is still compared as the later layer.
    """
    from dataclasses import replace

    flag = "raw_order_violation" if raw else "order_violation"

    def interval(row: LayerRow) -> tuple[float, float] | None:
        return row.H_heldout.raw_ci if raw else row.H_heldout.ci

    out = list(rows)
    for i, row in enumerate(rows):
        ci = interval(row)
        if not ci or "upper_estimate" in row.flags:
            continue
        for j in range(i + 1, len(rows)):
            lci = interval(out[j])
            if lci and lci[1] < ci[0] and flag not in out[j].flags:
                out[j] = replace(out[j], flags=(*out[j].flags, flag))
    return out

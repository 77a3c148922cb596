"""A population of Fashion-MNIST checkpoints: every predictor and certificate side by side.

Trains and evaluates the grid of ``experiments/manifests/population_fmnist.toml`` (six
hyperparameters × 3 seeds = 192 checkpoints, each with its own seeded certify/check split)
and the label-noise stratum of ``population_fmnist_noise.toml`` (reported apart), then:

* writes one row per checkpoint to ``docs/results/population-fmnist.jsonl``:
  hyperparameters, seed, split seed, measured gap, every predictor (CLT terms, classic
  measures, WeightWatcher's ``alpha`` and ``alpha_weighted`` from the ``weightwatcher``
  package, the PAC-Bayes certificate) and every certificate with its checked value; a
  checkpoint whose evaluation failed gets a row too (``status: failed``);
* computes every number of the page *from that file alone* (:func:`page_numbers`):
  Kendall τ with bootstrap intervals, granulated Ψ, the PGDL score (competition
  convention), Dziugaite et al.'s robust per-hyperparameter view, coverage with
  Clopper–Pearson intervals and tightness per certificate;
* runs ``clt_gen.compare`` on the weight-decay, dropout and augmentation series of one
  architecture;
* writes ``docs/results/population-fmnist.md`` and its figures.

    python experiments/population_fmnist.py --workers 2

The sweep is resumable: run the same command again after an interruption.
Needs the Debian package ``dataset-fashion-mnist`` and ``pip install 'clt-gen[weightwatcher]'``.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from clt_gen._io import atomic_write_bytes, atomic_write_text
from clt_gen.compare import compare_reports
from clt_gen.population import (
    clopper_pearson,
    coverage_interval,
    granulated_kendall,
    kendall_tau_interval,
    pgdl_score,
    robust_sign_agreement,
)
from clt_gen.sweep import (
    check_population_grid,
    collect,
    collect_failures,
    expand_grid,
    job_id,
    load_manifest,
    run_sweep,
)

ROOT = pathlib.Path(__file__).resolve().parents[1]
MANIFESTS = {
    "main": ROOT / "experiments" / "manifests" / "population_fmnist.toml",
    "label-noise": ROOT / "experiments" / "manifests" / "population_fmnist_noise.toml",
}
SEED_KEY = "random_state"
SERIES = ("weight_decay", "dropout", "augment")  # the regularizers compared on one architecture

# Where each predictor's inputs come from (the PGDL rule: checkpoint + training data only).
SOURCES = {
    "clt": "CLT term (checkpoint + training data)",
    "clt-heldout": "CLT term that reads the certify split (not PGDL-legal; shown for reference)",
    "classic": "classic measure (clt_gen.measures; checkpoint + training data)",
    "ww": "WeightWatcher package (weights only)",
    "pac-bayes": "PAC-Bayes certificate, data-free prior at w_0 (checkpoint + training data)",
}


# --- one row per checkpoint -------------------------------------------------------------


def weightwatcher_cached(jdir: pathlib.Path) -> dict[str, Any]:
    """WeightWatcher's summary of the job's checkpoint, cached in the job directory."""
    from clt_gen.checkpoints import load_checkpoint
    from clt_gen.measures import weightwatcher_summary

    path = jdir / "weightwatcher.json"
    if path.exists():
        return json.loads(path.read_text())
    out = weightwatcher_summary(load_checkpoint(jdir / "checkpoint").model)
    atomic_write_text(path, json.dumps(out))
    return out


def family(name: str) -> str:
    """The bound family a certificate belongs to."""
    if name.startswith("validation"):
        return "validation"
    if name.startswith("frozen_feature"):
        return "frozen-feature"
    if name.startswith("pac_bayes"):
        return "PAC-Bayes"
    return "CLT"


def predictors(record: dict[str, Any], ww: dict[str, Any] | None) -> dict[str, float | None]:
    """Every predictor of one checkpoint, named ``source:name``."""
    rep = record["report"]
    layers = rep["layers"]
    h_train = [row["H_train"]["value"] for row in layers]
    risks, tr = rep["risks"], rep.get("trainability") or {}
    u_star = [row["H_upper"]["value"] for row in layers if row.get("H_upper")]
    out: dict[str, float | None] = {
        "clt:train_risk": risks["train"],
        "clt:train_error": risks["train_error"],
        "clt:fitting_error": rep["floor"]["fitting_error"],
        "clt:H_logits_train": h_train[-1],
        "clt:H_logits_train_minus_risk": h_train[-1] - risks["train"],
        "clt:info_loss_train": float(
            sum(max(b - a, 0.0) for a, b in zip(h_train[:-1], h_train[1:], strict=True))
        ),
        "clt:loss_max_train": risks["train_loss_max"],
        "clt:gradient_energy": tr.get("gradient_energy"),
        "clt:lam_min_median": tr.get("lam_min_median"),
        "clt:lam_max_median": tr.get("lam_max_median"),
        "clt-heldout:U_star_logits": u_star[-1] if u_star else None,
        "clt-heldout:U_star_min": min(u_star) if u_star else None,
    }
    for key, val in (record.get("measures") or {}).items():
        out[f"classic:{key}"] = val
    if ww is not None:
        for key in ("ww_alpha", "ww_alpha_weighted"):
            v = ww.get(key)
            out[f"ww:{key[3:]}"] = v if v is not None and np.isfinite(v) else None
    pb = rep.get("pac_bayes")
    if pb:
        out["pac-bayes:certificate_error"] = pb["values"]["error"]
        out["pac-bayes:kl_over_n"] = pb["kl"] / pb["n_samples"]
    return out


def checkpoint_row(record: dict[str, Any], stratum: str, ww: dict[str, Any] | None) -> dict:
    """The page's row for one evaluated checkpoint."""
    rep = record["report"]
    risks = rep["risks"]
    gp = dict(record["grid_point"])
    seed = gp.pop(SEED_KEY, record["train"].get(SEED_KEY))
    certificates = [
        {
            "name": b["name"],
            "family": family(b["name"]),
            "quantity": b.get("quantity"),
            "kind": b["kind"],
            "side": b["side"],
            "delta": b["delta"],
            "value": b["value"],
            "checked": b["checked_value"],
            "held": b["held"],
            "vacuous": b.get("vacuous"),
        }
        for b in rep["bounds"]
    ]
    return {
        "job_id": record["job_id"],
        "stratum": stratum,
        "status": "ok",
        "hyperparameters": gp,
        "seed": seed,
        "split_seed": record["train"].get("data", {}).get("split_random_state"),
        "n_train": rep["data"].get("n_train") if isinstance(rep.get("data"), dict) else None,
        "trivial_error": (rep.get("data") or {}).get("trivial_risks", {}).get("error"),
        "n_check": (rep.get("data") or {}).get("n_check"),
        "train_error": risks["train_error"],
        "check_error": risks["check_error"],
        "gap": risks["check_error"] - risks["train_error"],
        "risk_gap": risks["gap"],
        "predictors": predictors(record, ww),
        "certificates": certificates,
        "seconds": record.get("seconds"),
    }


def failed_row(failure: dict[str, Any], stratum: str) -> dict:
    gp = dict(failure["grid_point"])
    seed = gp.pop(SEED_KEY, None)
    return {
        "job_id": failure["job_id"],
        "stratum": stratum,
        "status": "failed",
        "hyperparameters": gp,
        "seed": seed,
        "stage": failure["stage"],
        "error": failure["error"],
    }


# --- every number of the page, from the rows alone --------------------------------------


def _ok(rows: list[dict], stratum: str) -> list[dict]:
    return [r for r in rows if r["stratum"] == stratum and r["status"] == "ok"]


def predictor_table(rows: list[dict], *, n_bootstrap: int = 1000) -> list[dict]:
    """Rank agreement of every predictor with the gap over one stratum's rows."""
    gap = np.array([r["gap"] for r in rows])
    hp_names = sorted(rows[0]["hyperparameters"])
    hp = {h: [r["hyperparameters"][h] for r in rows] for h in hp_names}
    seeds = {"seed": [r["seed"] for r in rows]}
    names = sorted({k for r in rows for k in r["predictors"]})
    table = []
    for name in names:
        vals = [r["predictors"].get(name) for r in rows]
        ok = [i for i, v in enumerate(vals) if v is not None and np.isfinite(v)]
        if len(ok) < max(3, len(rows) // 2):
            continue
        v = np.array([vals[i] for i in ok], dtype=float)
        g = gap[ok]
        sub = {h: [hp[h][i] for i in ok] for h in hp_names}
        tau, lo, hi = kendall_tau_interval(v, g, n_bootstrap=n_bootstrap)
        sign = 1.0 if tau >= 0 else -1.0  # oriented by the pooled sign, for the robust view
        robust = robust_sign_agreement(
            sign * v, g, sub, match_on={"seed": [seeds["seed"][i] for i in ok]}
        )
        table.append(
            {
                "predictor": name,
                "source": name.split(":")[0],
                "n": len(ok),
                "tau": tau,
                "tau_low": lo,
                "tau_high": hi,
                "psi": granulated_kendall(v, g, sub).value,
                "pgdl": 100 * pgdl_score(v, g, sub, convention="pgdl")["value"],
                "robust_mean": float(np.mean(list(robust.per_hyperparameter.values()))),
                "robust_worst": robust.value,
                "robust_worst_hp": robust.worst,
                "robust": robust.per_hyperparameter,
            }
        )
    table.sort(key=lambda r: -abs(r["tau"]))
    return table


#: Error-like quantities: each check row contributes a 0/1 loss, so the check error is a
#: binomial proportion and has an exact lower confidence bound.
BINARY_QUANTITIES = ("error", "cell_head_error", "gibbs_error")
REFUTE_ALPHA = 0.025  # one-sided level of the check split's lower bound on the truth


def _with_rows(rows: list[dict], name: str) -> list[tuple[dict, dict]]:
    return [(r, c) for r in rows for c in r["certificates"] if c["name"] == name]


def refuted_by_check(cert: dict, row: dict) -> bool | None:
    """Does the check split prove this upper certificate wrong?

    The check error is itself a sample: a certificate that is exact at ``δ`` (it covers
    the true error with probability exactly ``1 − δ``) lies below the check error of an
    equally large independent split far more often than ``δ`` (``1 − Φ(z_{1−δ}/√2)`` ≈
    0.12 at ``δ = 0.05``). A certificate is *refuted* only when it lies below the exact
    (Clopper–Pearson) one-sided ``1 − REFUTE_ALPHA`` lower bound of the true error that
    the check split gives; a valid certificate is refuted with probability at most
    ``δ + REFUTE_ALPHA``. ``None`` where this does not apply (not a probabilistic upper
    bound on a 0/1 loss, or no check size recorded).
    """
    n = row.get("n_check")
    if (
        cert["kind"] != "probabilistic"
        or cert["side"] != "upper"
        or cert.get("quantity") not in BINARY_QUANTITIES
        or not n
        or cert["checked"] is None
    ):
        return None
    low, _ = clopper_pearson(round(cert["checked"] * n), n, level=1 - 2 * REFUTE_ALPHA)
    return bool(cert["value"] < low)


def certificate_table(rows: list[dict]) -> list[dict]:
    """Coverage (Clopper–Pearson) and tightness of every certificate over the rows."""
    by_name: dict[str, list[dict]] = {}
    for r in rows:
        for c in r["certificates"]:
            by_name.setdefault(c["name"], []).append(c)
    out = []
    for name, cs in sorted(by_name.items(), key=lambda kv: (family(kv[0]), kv[0])):
        held = [bool(c["held"]) for c in cs if c["held"] is not None]
        slack = [
            (c["value"] - c["checked"]) * (1 if c["side"] == "upper" else -1)
            for c in cs
            if c["checked"] is not None
        ]
        cov = coverage_interval(held) if held else None
        refuted = [refuted_by_check(c, r) for r, c in _with_rows(rows, name)]
        refuted = [v for v in refuted if v is not None]
        out.append(
            {
                "name": name,
                "family": family(name),
                "kind": cs[0]["kind"],
                "delta": cs[0]["delta"],
                "coverage": cov,
                "refuted": coverage_interval(refuted) if refuted else None,
                "tightness": float(np.mean(slack)) if slack else None,
                "vacuous": sum(bool(c["vacuous"]) for c in cs),
                "n": len(cs),
            }
        )
    return out


def family_table(rows: list[dict]) -> list[dict]:
    """Per bound family: the best (smallest) error certificate of the family per checkpoint."""
    out = []
    for fam in ("validation", "frozen-feature", "PAC-Bayes"):
        best: list[dict] = []
        refuted: list[bool | None] = []
        for r in rows:
            cs = [
                c
                for c in r["certificates"]
                if c["family"] == fam and c["kind"] == "probabilistic" and c["side"] == "upper"
            ]
            if fam == "frozen-feature":
                cs = [c for c in cs if c["name"].startswith("frozen_feature[")]
            if fam == "PAC-Bayes":
                cs = [c for c in cs if c["name"] == "pac_bayes[error]"]
            if fam == "validation":
                cs = [c for c in cs if "brier" not in c["name"]]
            if cs:
                best.append(min(cs, key=lambda c: c["value"]))
                refuted.append(refuted_by_check(best[-1], r))
        if not best:
            continue
        held = [bool(c["held"]) for c in best]
        ref = [v for v in refuted if v is not None]
        out.append(
            {
                "family": fam,
                "n": len(best),
                "coverage": coverage_interval(held),
                "refuted": coverage_interval(ref) if ref else None,
                "mean_value": float(np.mean([c["value"] for c in best])),
                "mean_checked": float(np.mean([c["checked"] for c in best])),
                "tightness": float(np.mean([c["value"] - c["checked"] for c in best])),
                "vacuous": sum(bool(c["vacuous"]) for c in best),
            }
        )
    return out


def page_numbers(rows: list[dict], *, n_bootstrap: int = 1000) -> dict[str, Any]:
    """Every number the page prints, computed from the per-checkpoint rows only."""
    numbers: dict[str, Any] = {"strata": {}}
    for stratum in sorted({r["stratum"] for r in rows}, key=lambda s: (s != "main", s)):
        ok = _ok(rows, stratum)
        failed = [r for r in rows if r["stratum"] == stratum and r["status"] == "failed"]
        if len(ok) < 3:
            numbers["strata"][stratum] = {"n": len(ok), "failed": failed}
            continue
        gaps = np.array([r["gap"] for r in ok])
        numbers["strata"][stratum] = {
            "n": len(ok),
            "failed": failed,
            "gap_mean": float(gaps.mean()),
            "gap_min": float(gaps.min()),
            "gap_max": float(gaps.max()),
            "predictors": predictor_table(ok, n_bootstrap=n_bootstrap),
            "certificates": certificate_table(ok),
            "families": family_table(ok),
        }
    return numbers


# --- the page -----------------------------------------------------------------------------


def _f(v: float | None, fmt: str) -> str:
    return "—" if v is None or not np.isfinite(v) else format(v, fmt)


def _predictor_lines(table: list[dict]) -> list[str]:
    lines = [
        "| predictor | source | τ [95% bootstrap] | Ψ | PGDL ×100 | robust: mean / worst "
        "(hyperparameter) |",
        "|---|---|---|---|---|---|",
    ]
    for r in table:
        lines.append(
            f"| `{r['predictor']}` | {r['source']} | {r['tau']:+.3f} [{r['tau_low']:+.2f}, "
            f"{r['tau_high']:+.2f}] | {r['psi']:+.3f} | {r['pgdl']:.2f} | "
            f"{r['robust_mean']:.3f} / {r['robust_worst']:.3f} (`{r['robust_worst_hp']}`) |"
        )
    return lines


def _robust_lines(table: list[dict], hps: Sequence[str], top: int) -> list[str]:
    lines = [
        "| predictor | " + " | ".join(f"`{h}`" for h in hps) + " |",
        "|---|" + "---|" * len(hps),
    ]
    for r in table[:top]:
        cells = [_f(r["robust"].get(h), ".3f") for h in hps]
        lines.append(f"| `{r['predictor']}` | " + " | ".join(cells) + " |")
    return lines


def _rate_cell(rate: dict | None, brackets: str, *, interval: bool) -> str:
    """``rate (k/n) [low, high]`` of a :func:`coverage_interval` result, or a dash."""
    if rate is None:
        return "—"
    o, c = brackets
    out = f"{rate['rate']:.3f} {o}{rate['held']}/{rate['n']}{c}"
    return out + (f" [{rate['low']:.3f}, {rate['high']:.3f}]" if interval else "")


def _certificate_lines(certs: list[dict]) -> list[str]:
    lines = [
        "| certificate | family | kind | δ | held on the check split (held/n) "
        "[Clopper–Pearson 95%] | refuted by the check split (refuted/n) [95%] | "
        "mean tightness (certified − checked) | vacuous |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in certs:
        cov_s = _rate_cell(c["coverage"], "()", interval=True)
        ref_s = _rate_cell(c.get("refuted"), "[]", interval=True)
        lines.append(
            f"| `{c['name']}` | {c['family']} | {c['kind']} | {c['delta'] or '—'} | {cov_s} | "
            f"{ref_s} | {_f(c['tightness'], '.4f')} | {c['vacuous']}/{c['n']} |"
        )
    return lines


def _family_lines(fams: list[dict]) -> list[str]:
    lines = [
        "| family (tightest error certificate per checkpoint) | checkpoints | held on the "
        "check split [Clopper–Pearson 95%] | refuted by the check split | mean certified | "
        "mean checked | mean tightness | vacuous |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for f in fams:
        cov_s = _rate_cell(f["coverage"], "()", interval=True)
        ref_s = _rate_cell(f.get("refuted"), "[]", interval=False)
        lines.append(
            f"| {f['family']} | {f['n']} | {cov_s} | {ref_s} | {f['mean_value']:.4f} | "
            f"{f['mean_checked']:.4f} | {f['tightness']:+.4f} | {f['vacuous']}/{f['n']} |"
        )
    return lines


def reading(table: list[dict]) -> list[str]:
    """Plain statements of which predictor wins, computed from the table."""
    table = [r for r in table if r["source"] != "clt-heldout"]  # the PGDL rule
    if not table:
        return []
    best = table[0]
    best_clt = next((r for r in table if r["source"] == "clt"), None)
    robust = max(table, key=lambda r: r["robust_worst"])
    pgdl = max(table, key=lambda r: r["pgdl"])
    out = [
        f"- **Highest |τ|**: `{best['predictor']}` (τ = {best['tau']:+.3f}, "
        f"{SOURCES[best['source']].split(' (')[0]})"
        + ("." if best["source"] == "clt" else "; it is not a CLT term.")
    ]
    if best_clt is not None and best_clt is not best:
        out.append(
            f"- **Best CLT term** (PGDL-legal): `{best_clt['predictor']}` (τ = "
            f"{best_clt['tau']:+.3f}, Ψ = {best_clt['psi']:+.3f})."
        )
    psi = max(table, key=lambda r: abs(r["psi"]))
    out.append(f"- **Highest |Ψ|**: `{psi['predictor']}` (Ψ = {psi['psi']:+.3f}).")
    out.append(f"- **Highest PGDL score**: `{pgdl['predictor']}` ({pgdl['pgdl']:.2f} ×100).")
    names = [r["predictor"] for r in table]
    if "classic:pacbayes_flatness" in names:
        i = names.index("classic:pacbayes_flatness")
        out.append(
            f"- Jiang et al.'s strongest family, PAC-Bayes flatness "
            f"(`classic:pacbayes_flatness`), ranks {i + 1} of {len(names)} by |τ| here "
            f"(τ = {table[i]['tau']:+.3f})."
        )
    out.append(
        f"- **Most robust** (best worst-case fraction of one-hyperparameter pairs ordered "
        f"right): `{robust['predictor']}` ({robust['robust_worst']:.3f}, worst on "
        f"`{robust['robust_worst_hp']}`)."
    )
    return out


def pac_bayes_lines(rows: list[dict]) -> list[str]:
    """Why the data-free PAC-Bayes certificate is (or is not) vacuous here, in numbers.

    With the posterior's mean at the checkpoint ``w`` and the prior ``N(w_0, σ_P² I)``,
    ``KL ≥ ‖w − w_0‖² / (2 σ_P²)``; and ``kl(ĝ ‖ B) ≤ KL/n + …`` with ``ĝ ≥ 0`` gives
    ``B ≥ 1 − exp(−KL/n)``. A certificate below the trivial error ``e`` therefore needs
    ``σ_P > ‖w − w_0‖ / sqrt(2 n ln(1/(1 − e)))``: noise of at least that scale on every
    weight the posterior does not pay extra KL for.
    """
    pts = []
    for r in rows:
        cert = next((c for c in r["certificates"] if c["name"] == "pac_bayes[error]"), None)
        d = r["predictors"].get("classic:distance_from_init")
        if cert is None or d is None or not r.get("n_train") or not r.get("trivial_error"):
            continue
        e = r["trivial_error"]
        pts.append(
            {
                "value": cert["value"],
                "checked": cert["checked"],
                "vacuous": bool(cert["vacuous"]),
                "sigma_min": d / np.sqrt(2 * r["n_train"] * np.log(1 / (1 - e))),
                "check_error": r["check_error"],
            }
        )
    if not pts:
        return []
    vac = sum(p["vacuous"] for p in pts)
    sig = np.array([p["sigma_min"] for p in pts])
    return [
        "### The PAC-Bayes column",
        "",
        f"The certificate from the training data alone (data-free prior centred at the "
        f"initialization, posterior mean at the checkpoint, σ_Q and σ_P optimized) is "
        f"vacuous on {vac} of {len(pts)} checkpoints: mean certified Gibbs error "
        f"{np.mean([p['value'] for p in pts]):.4f}, mean checked Gibbs error "
        f"{np.mean([p['checked'] for p in pts]):.4f}, while the checkpoints themselves err "
        f"at {np.mean([p['check_error'] for p in pts]):.4f} on average. Part of this is "
        "forced: with the mean fixed at the checkpoint, KL ≥ ‖w − w₀‖²/(2σ_P²) and the "
        "bound is at least 1 − exp(−KL/n), so a certificate below the trivial error e needs "
        "σ_P > ‖w − w₀‖/√(2n ln(1/(1 − e))) (‖w − w₀‖ from `classic:distance_from_init`, "
        "a lower bound on the full distance). Over this population that minimum prior "
        f"scale is {np.min(sig):.3f} to {np.max(sig):.3f} (median {np.median(sig):.3f}): "
        "the size of the weights themselves (He initialization gives 0.050 in the first "
        "layer). Shrinking the posterior's noise below σ_P costs KL on every weight it is "
        "done for, so most weights carry noise of that scale; the rest is measured: the "
        "optimized Gibbs networks err at the rate above on their check splits. "
        "Informative certificates from training data need more rows per parameter or a "
        "data-dependent prior (`clt-gen train --pac-bayes-prior`; docs/pac-bayes.md), as "
        "the full-data "
        "benchmarks show.",
        "",
    ]


def compare_series(
    out_dir: pathlib.Path, records: list[dict], hps: Sequence[str], page_dir: pathlib.Path
) -> list[dict]:
    """``clt_gen.compare`` on each regularizer series of one architecture."""
    if not records:
        return []
    levels = {h: sorted({json.dumps(r["grid_point"][h]) for r in records}) for h in hps}
    base = {h: json.loads(v[-1]) for h, v in levels.items()}  # the largest capacity/data
    for h in SERIES:
        if h in base:
            base[h] = json.loads(levels[h][0])  # regularizers off
    series_out = []
    for h in SERIES:
        if h not in base or len(levels[h]) < 2:
            continue
        runs, names, rows = [], [], []
        for r in sorted(
            records, key=lambda r: (json.dumps(r["grid_point"][h]), r["grid_point"][SEED_KEY])
        ):
            gp = r["grid_point"]
            if any(gp[o] != base[o] for o in base if o != h):
                continue
            runs.append(str(out_dir / "jobs" / r["job_id"] / "eval"))
            names.append(f"{h}={gp[h]} s{gp[SEED_KEY]}")
            rows.append(r)
        if len(runs) < 2:
            continue
        fig_dir = page_dir / f"compare-{h}"
        text = compare_reports(runs, out=str(fig_dir), names=names)
        cmp_rows = json.loads((fig_dir / "compare.json").read_text())
        series_out.append(
            {"hyperparameter": h, "base": base, "table": text, "rows": cmp_rows, "dir": fig_dir}
        )
    return series_out


def series_summary(series: dict) -> list[str]:
    """Per level: means over seeds of the gaps and CLT terms, and what THEORY §6.1 says."""
    h = series["hyperparameter"]
    by_level: dict[str, list[dict]] = {}
    for row in series["rows"]:
        by_level.setdefault(row["run"].rsplit(" s", 1)[0], []).append(row)
    keys = (
        "error_gap",
        "gap",
        "train_risk",
        "fitting_error",
        "H_logits_train",
        "H_logits_heldout",
        "info_loss_total",
    )
    means = {
        lv: {k: float(np.mean([r[k] for r in rs])) for k in keys} for lv, rs in by_level.items()
    }
    for m in means.values():
        m["lower_end"] = m["H_logits_heldout"] - m["train_risk"]
    lines = [
        "| " + h + " | seeds | error gap | risk gap | train risk (fitting error) | "
        "H(Y|logits) train | H(Y|logits) held-out | §6.1 lower end: H held-out − train risk "
        "| information loss |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for lv, m in means.items():
        lines.append(
            f"| {lv.split('=', 1)[1]} | {len(by_level[lv])} | {m['error_gap']:+.4f} | "
            f"{m['gap']:+.4f} | {m['train_risk']:.4f} ({m['fitting_error']:.4f}) | "
            f"{m['H_logits_train']:.4f} | {m['H_logits_heldout']:.4f} | "
            f"{m['lower_end']:+.4f} | {m['info_loss_total']:.4f} |"
        )
    lv = list(means)
    if len(lv) >= 2:
        a, b = means[lv[0]], means[lv[-1]]
        d = {
            k: b[k] - a[k]
            for k in ("error_gap", "gap", "fitting_error", "lower_end", "H_logits_heldout")
        }
        agree = np.sign(d["lower_end"]) == np.sign(d["gap"])
        lines += [
            "",
            f"From `{lv[0]}` to `{lv[-1]}`: measured risk gap {d['gap']:+.4f} nats (error gap "
            f"{d['error_gap']:+.4f}); fitting error {d['fitting_error']:+.4f}; held-out "
            f"H(Y|logits) {d['H_logits_heldout']:+.4f}; so the lower end of the gap that "
            f"THEORY §6.1 gives, H(Y|logits) − training risk, moved by {d['lower_end']:+.4f}. "
            + (
                "It moved the same way as the measured gap: the CLT terms account for the "
                "direction of this regularizer's effect (through "
                + (
                    "the training fit"
                    if abs(d["fitting_error"]) >= abs(d["H_logits_heldout"])
                    else "the label information left in the logits"
                )
                + ")."
                if agree
                else "It moved against the measured gap: the CLT lower end does not account for "
                "this regularizer's effect here."
            ),
        ]
    return lines


def figures(numbers: dict, rows: list[dict], page_dir: pathlib.Path) -> list[str]:
    """Best predictors against the gap; coverage per certificate. Returns file names."""
    from clt_gen.render import new_figure, png_bytes

    main = numbers["strata"].get("main")
    if not main or "predictors" not in main:
        return []
    ok = _ok(rows, "main")
    gap = np.array([r["gap"] for r in ok])
    top = main["predictors"][:4]
    fig, axes = new_figure((4 * len(top), 3.6), ncols=len(top))
    axes = np.atleast_1d(axes)
    for ax, r in zip(axes, top, strict=False):
        v = np.array([row["predictors"].get(r["predictor"]) or np.nan for row in ok], float)
        ax.scatter(v, gap, s=9, alpha=0.7)
        ax.set_xlabel(r["predictor"], fontsize=8)
        ax.set_title(f"τ = {r['tau']:+.3f}", fontsize=9)
    axes[0].set_ylabel("error gap (check − train)")
    fig.tight_layout()
    atomic_write_bytes(page_dir / "predictors.png", png_bytes(fig))
    certs = [c for c in main["certificates"] if c["coverage"] and c["kind"] == "probabilistic"]
    fig, ax = new_figure((max(6, 0.55 * len(certs)), 3.8))
    x = np.arange(len(certs))
    rate = np.array([c["coverage"]["rate"] for c in certs])
    low = np.array([c["coverage"]["low"] for c in certs])
    high = np.array([c["coverage"]["high"] for c in certs])
    ax.errorbar(x, rate, yerr=[rate - low, high - rate], fmt="o", capsize=3)
    from scipy.stats import norm

    deltas = {c["delta"] for c in certs}
    for d in deltas:
        ax.axhline(1 - d, ls="--", color="grey", lw=0.8, label=f"1 − δ = {1 - d:g}")
        exact = float(norm.cdf(norm.ppf(1 - d) / np.sqrt(2)))
        ax.axhline(
            exact,
            ls=":",
            color="tab:red",
            lw=0.8,
            label=f"an exact certificate at δ = {d:g}, checked on an equal split ({exact:.3f})",
        )
    ax.set_xticks(x, [c["name"] for c in certs], rotation=40, ha="right", fontsize=7)
    ax.set_ylabel("held on the check split")
    ax.set_ylim(min(0.8, float(low.min()) - 0.02), 1.005)
    ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write_bytes(page_dir / "coverage.png", png_bytes(fig))
    return ["predictors.png", "coverage.png"]


def write_page(
    path: pathlib.Path,
    numbers: dict,
    rows: list[dict],
    series: list[dict],
    meta: dict[str, Any],
) -> None:
    page_dir = path.with_suffix("")
    page_dir.mkdir(parents=True, exist_ok=True)
    figs = figures(numbers, rows, page_dir)
    rel = page_dir.name
    lines = [
        "# Fashion-MNIST population: every predictor and certificate side by side",
        "",
        f"Produced by `{meta['command']}` (seeds {meta['seeds']} per grid cell; "
        f"{meta['n_rows']} checkpoints in {len(numbers['strata'])} strata; sweep wall time "
        f"{meta['wall_minutes']:.1f} min on {meta['machine']}; trained and evaluated with "
        f"clt_gen at commit `{meta['commit']}`). Every number below is "
        f"recomputed from [`{path.with_suffix('.jsonl').name}`]"
        f"({path.with_suffix('.jsonl').name}) by `page_numbers` in the script, and a test "
        "checks that the page and the file agree.",
        "",
        f"Manifests: {', '.join(f'`{m}`' for m in meta['manifests'])}. Each checkpoint draws "
        "its own seeded certify/check split of the 10,000 test images (`split_seed` in the "
        "file), so the coverage of a certificate over a stratum counts independent trials. "
        "The gap is the check error minus the training error. Predictors use the checkpoint "
        "and its training data only (the PGDL rule), except the two `clt-heldout` rows, "
        "which read the certify split and are shown for reference.",
        "",
    ]
    for stratum, s in numbers["strata"].items():
        title = "Main population" if stratum == "main" else f"Stratum: {stratum}"
        lines += [f"## {title}", ""]
        if s["failed"]:
            lines += [
                f"**{len(s['failed'])} checkpoints failed** and are not in the statistics:",
                "",
            ]
            for f in s["failed"]:
                lines.append(
                    f"- `{f['job_id']}` {f['hyperparameters']} seed {f['seed']}: failed in "
                    f"{f['stage']}: {f['error']}"
                )
            lines.append("")
        else:
            lines += ["No checkpoint failed.", ""]
        if "predictors" not in s:
            lines += [f"{s['n']} evaluated checkpoints: too few for statistics.", ""]
            continue
        hps = sorted({h for r in _ok(rows, stratum) for h in r["hyperparameters"]})
        lines += [
            f"{s['n']} evaluated checkpoints; hyperparameters {', '.join(f'`{h}`' for h in hps)}"
            f"; error gap from {s['gap_min']:+.4f} to {s['gap_max']:+.4f} (mean "
            f"{s['gap_mean']:+.4f}).",
            "",
        ]
        if stratum == "main":
            lines += ["### Which predictor wins", "", *reading(s["predictors"]), ""]
        lines += [
            "### Predictors against the gap",
            "",
            "τ: Kendall τ-a over checkpoints, with a 1,000-resample percentile bootstrap "
            "interval. Ψ: granulated Kendall (mean over hyperparameters of τ within groups "
            "differing in that one). PGDL: the competition's conditional-mutual-information "
            'score (`pgdl_score(..., convention="pgdl")`, ×100; the 2020 winner scored '
            "22.92 on the competition's tasks). Robust (Dziugaite et al. 2020): for each "
            "hyperparameter, the fraction of pairs of checkpoints that differ in it alone "
            "(same seed, all else equal) whose gap order the measure gets right, the measure "
            "oriented by the sign of its pooled τ; the mean over hyperparameters, and the "
            "worst one.",
            "",
            *_predictor_lines(s["predictors"]),
            "",
            "#### Robust view per hyperparameter (top 8 by |τ|)",
            "",
            *_robust_lines(s["predictors"], hps, 8),
            "",
        ]
        if stratum == "main" and figs:
            lines += [f"![best predictors against the gap]({rel}/{figs[0]})", ""]
        lines += [
            "### Certificates",
            "",
            "Held: the fraction of checkpoints whose certificate was at or above the value "
            "measured on its own check split, with an exact (Clopper–Pearson) 95% interval. "
            "This is not the coverage of the truth: the check value is itself a sample. A "
            "certificate that is exact at δ (it covers the true error with probability "
            "exactly 1 − δ) computed on a certify split as large as the check split is at "
            "or above the check value only about Φ(z₀.₉₅/√2) ≈ 0.878 of the time at "
            "δ = 0.05, so a tight certificate shows a held fraction below 1 − δ without "
            "failing. Refuted: the check split's exact one-sided 97.5% lower bound on the "
            "true error lies above the certificate, which proves it wrong on that "
            "checkpoint; a valid certificate is refuted with probability at most "
            "δ + 0.025 = 0.075 (0/1 losses only). Tightness: certified minus checked "
            "value (upper bounds), checked minus certified (lower bounds). Vacuous: no "
            "better than predicting the label frequencies.",
            "",
            *_family_lines(s["families"]),
            "",
            *_certificate_lines(s["certificates"]),
            "",
        ]
        if stratum == "main" and len(figs) > 1:
            lines += [f"![coverage per certificate]({rel}/{figs[1]})", ""]
        if stratum == "main":
            lines += pac_bayes_lines(_ok(rows, stratum))
    if series:
        lines += [
            "## Comparing regularizers (`clt-gen compare`)",
            "",
            "One architecture, each regularizer switched on alone from the same base "
            f"({', '.join(f'`{k}`={v}' for k, v in series[0]['base'].items())}), three "
            "seeds per level. The tables are the per-level means of `clt-gen compare`'s "
            "columns; its full table and figure are in the linked folders.",
            "",
        ]
        for sr in series:
            lines += [
                f"### `{sr['hyperparameter']}`",
                "",
                *series_summary(sr),
                "",
                f"![compare {sr['hyperparameter']}]({rel}/{sr['dir'].name}/compare.png)",
                "",
            ]
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "\n".join(lines) + "\n")


# --- driver -------------------------------------------------------------------------------


def run(
    manifests: dict[str, pathlib.Path],
    *,
    workers: int,
    min_seeds: int,
    out_root: pathlib.Path | None = None,
    weightwatcher: bool = True,
    train: bool = True,
) -> tuple[list[dict], dict[str, list[dict]], dict[str, str], float]:
    """Check every manifest, then sweep each stratum; return rows and sweep records."""
    loaded = {}
    for stratum, path in manifests.items():
        m = load_manifest(path)
        if out_root is not None:
            m["sweep"]["out"] = str(out_root / stratum)
        check_population_grid(m, min_seeds=min_seeds, seed_key=SEED_KEY)
        loaded[stratum] = m
    t0 = time.perf_counter()
    rows: list[dict] = []
    records: dict[str, list[dict]] = {}
    outs = {}
    for stratum, m in loaded.items():
        out = m["sweep"]["out"]
        if train:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # failures become rows below
                run_sweep(m, workers=workers)
        wanted = {job_id(j) for j in expand_grid(m)}
        recs = [r for r in collect(out) if r["job_id"] in wanted]
        records[stratum], outs[stratum] = recs, out
        for rec in recs:
            jdir = pathlib.Path(out) / "jobs" / rec["job_id"]
            ww = weightwatcher_cached(jdir) if weightwatcher else None
            rows.append(checkpoint_row(rec, stratum, ww))
        rows += [failed_row(f, stratum) for f in collect_failures(out) if f["job_id"] in wanted]
    return rows, records, outs, time.perf_counter() - t0


def _head_commit() -> str:
    import subprocess

    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
        )
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def write_jsonl(path: pathlib.Path, rows: list[dict]) -> None:
    rows = sorted(
        rows,
        key=lambda r: (r["stratum"], json.dumps(r["hyperparameters"], sort_keys=True), r["seed"]),
    )
    atomic_write_text(
        path, "".join(json.dumps(r, sort_keys=True, default=float) + "\n" for r in rows)
    )


def read_jsonl(path: pathlib.Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument(
        "--manifest",
        action="append",
        default=None,
        metavar="STRATUM=PATH",
        help="a stratum and its manifest (repeatable; default: the Fashion-MNIST pair)",
    )
    ap.add_argument("--min-seeds", type=int, default=3)
    ap.add_argument("--out", default=None, help="sweep directories (default: the manifests')")
    ap.add_argument("--write", default=str(ROOT / "docs" / "results" / "population-fmnist.md"))
    ap.add_argument("--n-bootstrap", type=int, default=1000)
    ap.add_argument("--wall-minutes", type=float, default=None, help="record this wall time")
    ap.add_argument("--no-weightwatcher", action="store_true")
    ap.add_argument(
        "--code-commit",
        default=None,
        help="the commit the sweep ran at, for the page (default: the current HEAD)",
    )
    ap.add_argument(
        "--no-train",
        action="store_true",
        help="only read the finished jobs (e.g. while another process runs the sweep)",
    )
    args = ap.parse_args(argv)
    if args.manifest:
        manifests = {}
        for spec in args.manifest:
            stratum, _, path = spec.partition("=")
            if not path:
                ap.error(f"--manifest must be STRATUM=PATH (got {spec!r})")
            manifests[stratum] = pathlib.Path(path)
    else:
        manifests = MANIFESTS
    rows, records, outs, secs = run(
        manifests,
        workers=args.workers,
        min_seeds=args.min_seeds,
        out_root=pathlib.Path(args.out) if args.out else None,
        weightwatcher=not args.no_weightwatcher,
        train=not args.no_train,
    )
    page = pathlib.Path(args.write)
    jsonl = page.with_suffix(".jsonl")
    page.parent.mkdir(parents=True, exist_ok=True)
    write_jsonl(jsonl, rows)
    rows = read_jsonl(jsonl)  # the page is computed from the file, nothing else
    numbers = page_numbers(rows, n_bootstrap=args.n_bootstrap)
    first = next(iter(manifests))
    hps = sorted({h for r in rows if r["stratum"] == first for h in r["hyperparameters"]})
    series = compare_series(pathlib.Path(outs[first]), records[first], hps, page.with_suffix(""))
    job_minutes = sum(r.get("seconds") or 0 for recs in records.values() for r in recs) / 60
    seeds = sorted({r["seed"] for r in rows if r["seed"] is not None})
    cmd = "python experiments/population_fmnist.py --workers " + str(args.workers)
    if args.manifest:
        cmd += "".join(f" --manifest {m}" for m in args.manifest)
    commit = args.code_commit or _head_commit()
    meta = {
        "commit": commit,
        "command": cmd,
        "seeds": ", ".join(map(str, seeds)),
        "n_rows": len(rows),
        "wall_minutes": args.wall_minutes
        if args.wall_minutes
        else max(secs / 60, job_minutes / max(args.workers, 1)),
        "machine": f"a {os.cpu_count()}-core CPU, {args.workers} local workers",
        "manifests": [
            str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p)
            for p in manifests.values()
        ],
    }
    write_page(page, numbers, rows, series, meta)
    print(f"{len(rows)} checkpoints; wrote {page} and {jsonl}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

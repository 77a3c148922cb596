"""The Fashion-MNIST population pipeline (issue 34): end to end on a tiny digits population,
and the published page recomputed from its per-checkpoint file."""

from __future__ import annotations

import importlib.util
import json
import pathlib

import numpy as np
import pytest

from clt_gen.population import kendall_tau

ROOT = pathlib.Path(__file__).resolve().parents[1]

TINY = """
[sweep]
out = "{out}"
evaluate = true
measures = true
measure_samples = 200
independent_splits = true

[train]
arch = "mlp"
dataset = "digits"
epochs = 2
batch_size = 64
lr = 0.05

[train.data]
subset = 600

[grid]
"arch_kwargs.width" = [8, 32]
{extra}
random_state = {seeds}

[evaluate]
n_bootstrap = 5
cells = [2]
heads = ["logistic"]
max_features = 8
max_train_samples = 300
trainability = true
trainability_samples = 8
pac_bayes = true
pac_bayes_epochs = 1
{evaluate}
"""


def _script():
    spec = importlib.util.spec_from_file_location(
        "population_fmnist", ROOT / "experiments" / "population_fmnist.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _sections(page: str) -> dict[str, str]:
    out = {}
    for part in page.split("\n## ")[1:]:
        title, _, body = part.partition("\n")
        key = "main" if title == "Main population" else title.removeprefix("Stratum: ")
        out[key] = body
    return out


SOURCES = ("clt", "clt-heldout", "classic", "ww", "pac-bayes")
FAMILIES = ("CLT", "validation", "frozen-feature", "PAC-Bayes")


def _line(body: str, name: str) -> str:
    """The line of ``name`` in the predictor table or the certificate table."""
    hits = [
        ln
        for ln in body.splitlines()
        if ln.startswith(f"| `{name}` |") and ln.split("|")[2].strip() in SOURCES + FAMILIES
    ]
    assert len(hits) == 1, f"{name}: {len(hits)} table lines"
    return hits[0]


def assert_page_matches_rows(page: str, rows: list[dict]) -> None:
    """Recompute the page's numbers from the per-checkpoint rows, independently of the
    script: Kendall τ of every predictor, coverage counts of every certificate."""
    sections = _sections(page)
    for stratum in sorted({r["stratum"] for r in rows}):
        body = sections[stratum]
        for r in rows:
            if r["stratum"] == stratum and r["status"] == "failed":
                assert f"`{r['job_id']}`" in body and r["stage"] in body  # listed, not dropped
        ok = [r for r in rows if r["stratum"] == stratum and r["status"] == "ok"]
        if len(ok) < 3:
            continue
        gap = np.array([r["check_error"] - r["train_error"] for r in ok])
        assert np.allclose(gap, [r["gap"] for r in ok])
        names = {k for r in ok for k in r["predictors"]}
        checked = 0
        for name in names:
            v = [r["predictors"].get(name) for r in ok]
            if any(x is None or not np.isfinite(x) for x in v):
                continue
            tau = kendall_tau(np.array(v, float), gap)
            assert f"| {tau:+.3f} [" in _line(body, name), name
            checked += 1
        assert checked >= 10
        for name in {c["name"] for r in ok for c in r["certificates"]}:
            cs = [c for r in ok for c in r["certificates"] if c["name"] == name]
            held = [c["held"] for c in cs if c["held"] is not None]
            if held:
                assert f"({sum(held)}/{len(held)})" in _line(body, name), name


def test_tiny_population_end_to_end(tmp_path):
    mod = _script()
    main = tmp_path / "main.toml"
    main.write_text(
        TINY.format(out=tmp_path / "s", extra="weight_decay = [0.0, 0.01]", seeds=[0], evaluate="")
    )
    broken = tmp_path / "broken.toml"  # every evaluation fails: a layer the MLP lacks
    broken.write_text(
        TINY.format(out=tmp_path / "b", extra="", seeds=[0], evaluate='layers = ["nope"]')
    )
    page = tmp_path / "page" / "pop.md"
    argv = [
        "--workers",
        "1",
        "--min-seeds",
        "1",
        "--n-bootstrap",
        "50",
        "--manifest",
        f"main={main}",
        "--manifest",
        f"broken={broken}",
        "--write",
        str(page),
    ]
    assert mod.main(argv) == 0
    rows = [json.loads(x) for x in page.with_suffix(".jsonl").read_text().splitlines()]
    ok = [r for r in rows if r["status"] == "ok"]
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(ok) == 4 and {r["stratum"] for r in ok} == {"main"}
    assert len(failed) == 2 and {r["stage"] for r in failed} == {"evaluate"}
    assert all("nope" in r["error"] for r in failed)
    # independent certify/check draws, one per checkpoint
    assert len({r["split_seed"] for r in ok}) == 4
    for r in ok:
        assert set(r["hyperparameters"]) == {"arch_kwargs.width", "weight_decay"}
        families = {c["family"] for c in r["certificates"]}
        assert {"validation", "frozen-feature", "PAC-Bayes"} <= families
        assert {"clt:fitting_error", "classic:path_norm", "pac-bayes:certificate_error"} <= set(
            r["predictors"]
        )
        assert "ww:alpha" in r["predictors"]  # NaN for layers too small is stored as None
    text = page.read_text()
    assert_page_matches_rows(text, rows)
    assert "2 checkpoints failed" in text and "too few for statistics" in text
    assert "### `weight_decay`" in text  # the regularizer series through clt_gen.compare
    assert (page.with_suffix("") / "compare-weight_decay" / "compare.png").exists()
    assert (page.with_suffix("") / "predictors.png").exists()
    assert (page.with_suffix("") / "coverage.png").exists()
    # a stale number on the page is caught: the largest gap made the smallest
    bad = [dict(r) for r in rows]
    top = max((r for r in bad if r["status"] == "ok"), key=lambda r: r["gap"])
    top["check_error"] = top["train_error"] - 1.0
    top["gap"] = -1.0
    with pytest.raises(AssertionError):
        assert_page_matches_rows(text, bad)


def test_population_manifest_refused_before_training(tmp_path):
    from clt_gen.errors import ValidationError

    mod = _script()
    one = tmp_path / "one.toml"
    one.write_text(
        TINY.format(out=tmp_path / "s", extra="weight_decay = [0.0]", seeds=[0, 1], evaluate="")
    )
    page = str(tmp_path / "p.md")
    with pytest.raises(ValidationError, match="'weight_decay' takes one value"):
        mod.main(["--manifest", f"main={one}", "--min-seeds", "2", "--write", page])
    with pytest.raises(ValidationError, match="each grid cell has 2 seed"):
        mod.main(["--manifest", f"main={one}", "--write", page])
    assert not (tmp_path / "s").exists()


def test_the_shipped_manifests_pass_the_population_checks():
    from clt_gen.sweep import check_population_grid, expand_grid, load_manifest, validate_jobs

    mod = _script()
    sizes = {}
    for stratum, path in mod.MANIFESTS.items():
        m = load_manifest(path)
        check_population_grid(m, min_seeds=3)
        jobs = expand_grid(m)
        validate_jobs(jobs)
        sizes[stratum] = len(jobs)
        n_hp = len([k for k in m["grid"] if k != "random_state"])
        assert n_hp >= (6 if stratum == "main" else 2)
    assert sizes["main"] >= 192 and sizes["label-noise"] >= 12


def test_published_page_matches_its_jsonl():
    """docs/results/population-fmnist.md and the per-checkpoint file it was computed from
    cannot drift: every τ and every coverage count is recomputed here."""
    page = ROOT / "docs" / "results" / "population-fmnist.md"
    rows = [json.loads(x) for x in page.with_suffix(".jsonl").read_text().splitlines()]
    main = [r for r in rows if r["stratum"] == "main"]
    assert len(main) >= 192  # the population the issue asks for, failures included
    assert len(
        {(json.dumps(r["hyperparameters"], sort_keys=True), r["seed"]) for r in main}
    ) == len(main)
    ok = [r for r in main if r["status"] == "ok"]
    assert len({r["split_seed"] for r in ok}) == len(ok)  # independent certify/check draws
    pb = [r for r in ok if any(c["family"] == "PAC-Bayes" for c in r["certificates"])]
    assert len(pb) >= 48
    assert all("ww:alpha" in r["predictors"] for r in ok)
    assert_page_matches_rows(page.read_text(), rows)


def test_refuted_by_check_is_rare_for_valid_certificates_and_catches_wrong_ones():
    from scipy.stats import beta

    mod = _script()
    gen = np.random.default_rng(0)
    n, truth, delta = 2000, 0.2, 0.05
    held = refuted = refuted_wrong = 0
    trials = 400
    for _ in range(trials):
        k_cert = gen.binomial(n, truth)
        upper = float(beta.ppf(1 - delta, k_cert + 1, n - k_cert))  # exact (CP) certificate
        checked = gen.binomial(n, truth) / n
        row = {"n_check": n}
        cert = {"kind": "probabilistic", "side": "upper", "quantity": "error"}
        held += upper >= checked
        refuted += mod.refuted_by_check({**cert, "value": upper, "checked": checked}, row)
        # a certificate 0.05 below the truth is wrong, and the check split says so
        refuted_wrong += mod.refuted_by_check(
            {**cert, "value": truth - 0.05, "checked": checked}, row
        )
    # held on the check split: near Phi(1.645 / sqrt 2) = 0.878, well below 1 - delta
    assert 0.82 < held / trials < 0.93
    assert refuted / trials <= delta + 0.025  # a valid certificate is rarely refuted
    assert refuted_wrong == trials
    brier = {"kind": "probabilistic", "side": "upper", "quantity": "brier_risk", "value": 0.1}
    assert mod.refuted_by_check({**brier, "checked": 0.5}, {"n_check": n}) is None

"""Sweeps (local and Ray), resume after a kill, compare, and the classic measures."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from clt_gen.cli import main
from clt_gen.errors import ValidationError
from clt_gen.measures import (
    distance_from_init,
    margin,
    pacbayes_flatness,
    path_norm,
    powerlaw_alpha,
)
from clt_gen.sweep import expand_grid, job_id, load_manifest, run_sweep

MANIFEST = """
[sweep]
out = "{out}"
evaluate = true
measures = true

[train]
arch = "mlp"
dataset = "mixture"
epochs = 1
batch_size = 64
lr = 0.05
dataset_params = {{ n_samples = 300, n_features = 4, n_classes = 3 }}

[grid]
"arch_kwargs.width" = [8, 16]
seed = [0, 1]

[evaluate]
n_bootstrap = 10
cells = [2, 4]
max_features = 8
"""


def _manifest(tmp_path, name="sweep"):
    path = tmp_path / f"{name}.toml"
    path.write_text(MANIFEST.format(out=tmp_path / name))
    return path


def test_grid_expansion_and_stable_ids(tmp_path):
    manifest = load_manifest(_manifest(tmp_path))
    jobs = expand_grid(manifest)
    assert len(jobs) == 4
    assert {j["train"]["arch_kwargs"]["width"] for j in jobs} == {8, 16}
    assert len({job_id(j) for j in jobs}) == 4
    assert job_id(jobs[0]) == job_id(expand_grid(manifest)[0])
    bad = tmp_path / "bad.toml"
    bad.write_text("[grids]\nx = [1]\n")
    with pytest.raises(ValidationError, match="unknown"):
        load_manifest(bad)


def test_local_sweep_runs_every_job_once_and_resumes(tmp_path):
    manifest = load_manifest(_manifest(tmp_path))
    records = run_sweep(manifest, progress=False)
    assert len(records) == 4
    for rec in records:
        assert rec["report"]["floor"]["value"] <= rec["report"]["risks"]["train"]
        assert rec["measures"]["param_norm"] > 0
    results = sorted((tmp_path / "sweep" / "jobs").glob("*/result.json"))
    mtimes = [p.stat().st_mtime_ns for p in results]
    again = run_sweep(manifest, progress=False)
    assert len(again) == 4
    assert [p.stat().st_mtime_ns for p in results] == mtimes  # nothing recomputed


def test_killed_sweep_resumes_without_loss_or_duplicates(tmp_path):
    path = _manifest(tmp_path, "killed")
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "clt_gen.cli", "sweep", str(path), "--no-progress"]
    proc = subprocess.Popen(cmd, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and not list(out.glob("jobs/*/result.json")):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    first = list(out.glob("jobs/*/result.json"))
    assert 1 <= len(first) < 4, "the sweep must be killed mid-run"
    before = {p: p.read_text() for p in first}
    assert subprocess.run(cmd, check=False).returncode == 0
    results = list(out.glob("jobs/*/result.json"))
    assert len(results) == 4 and len(list(out.glob("jobs/*"))) == 4
    assert all(p.read_text() == text for p, text in before.items())


def test_ray_backend_on_a_local_cluster(tmp_path):
    pytest.importorskip("ray")
    manifest = load_manifest(_manifest(tmp_path, "ray"))
    manifest["sweep"]["measures"] = False
    records = run_sweep(manifest, backend="ray", workers=2, progress=False)
    assert len(records) == 4
    assert {r["job_id"] for r in records} == {job_id(j) for j in expand_grid(manifest)}


def test_compare_cli(tmp_path, capsys):
    manifest = load_manifest(_manifest(tmp_path, "cmp"))
    manifest["grid"] = {"seed": [0, 1]}
    manifest["sweep"]["measures"] = False
    run_sweep(manifest, progress=False)
    runs = [str(p.parent / "eval") for p in (tmp_path / "cmp" / "jobs").glob("*/result.json")]
    assert main(["compare", *runs, "--out", str(tmp_path / "cmpout")]) == 0
    out = capsys.readouterr().out
    assert "floor" in out and "bounds_held" in out and len(out.strip().splitlines()) == 3
    rows = json.loads((tmp_path / "cmpout" / "compare.json").read_text())
    assert len(rows) == 2 and (tmp_path / "cmpout" / "compare.png").exists()
    # the best error certificate is about the network, never a frozen-feature cell head
    for run, row in zip(runs, rows, strict=True):
        report = json.loads((pathlib.Path(run) / "report.json").read_text())
        validation = [
            b["value"]
            for b in report["bounds"]
            if b["name"].startswith("validation") and b["quantity"] == "error"
        ]
        assert row["best_error_bound"] == min(validation)
        assert any(b["quantity"] == "cell_head_error" for b in report["bounds"])
    # labels name the runs in the table and the JSON; a count mismatch is refused
    assert main(["compare", *runs, "--names", "seed 0,seed 1", "--out", str(tmp_path / "c2")]) == 0
    assert "seed 0" in capsys.readouterr().out
    assert [r["run"] for r in json.loads((tmp_path / "c2" / "compare.json").read_text())] == [
        "seed 0",
        "seed 1",
    ]
    assert main(["compare", *runs, "--names", "only-one"]) != 0
    assert "one label per run (2 runs, 1 names)" in capsys.readouterr().err


# --- measures --------------------------------------------------------------------------------
def test_path_norm_of_a_linear_map_is_its_frobenius_norm():
    lin = torch.nn.Linear(5, 3)
    np.testing.assert_allclose(path_norm(lin, (5,)), float(lin.weight.detach().norm()), rtol=1e-6)


def test_path_norm_two_layers_matches_sum_over_paths():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    w1, w2 = net[0].weight.detach(), net[2].weight.detach()
    brute = sum(
        float(w2[o, h] ** 2 * w1[h, i] ** 2) for o in range(2) for h in range(4) for i in range(3)
    )
    np.testing.assert_allclose(path_norm(net, (3,)), brute**0.5, rtol=1e-6)


def test_distance_margin_flatness_alpha():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(20, 64), torch.nn.ReLU(), torch.nn.Linear(64, 3))
    assert distance_from_init(net, net) == 0.0
    x = torch.randn(200, 20)
    y = net(x).argmax(1)
    assert margin(net, x, y) >= 0  # labels are the predictions: non-negative margins
    flat = pacbayes_flatness(net, x, y)
    assert flat > 0 and np.isfinite(flat)
    alpha = powerlaw_alpha(net)
    assert 1.0 < alpha < 20.0


def test_manifests_and_checkpoints_written_with_seed_still_load():
    from clt_gen.data import DataConfig
    from clt_gen.sweep import _train_config

    cfg = _train_config({"arch": "mlp", "seed": 5, "data": {"seed": 7, "subset": 100}})
    assert cfg.random_state == 5 and cfg.data.random_state == 7 and cfg.data.subset == 100
    assert DataConfig.from_dict({"seed": 2}) == DataConfig(random_state=2)
    assert DataConfig.from_dict(DataConfig(random_state=4).to_dict()) == DataConfig(random_state=4)


def test_sweep_section_is_checked_and_measure_rows_recorded(tmp_path):
    path = tmp_path / "m.toml"
    path.write_text('[sweep]\nmeasure_sample = 10\n[train]\narch = "mlp"\n')
    with pytest.raises(ValidationError, match="did you mean 'measure_samples'"):
        load_manifest(path)
    path.write_text('[sweep]\nmeasure_samples = 0\n[train]\narch = "mlp"\n')
    with pytest.raises(ValidationError, match="measure_samples must be an int >= 1"):
        load_manifest(path)
    path.write_text(
        "[sweep]\nevaluate = false\nmeasures = true\nmeasure_samples = 64\n"
        '[train]\narch = "mlp"\nepochs = 1\n'
    )
    (record,) = run_sweep(load_manifest(path), progress=False)
    assert record["measures_data"] == {"split": "train", "rows": "first", "max_samples": 64}
    assert record["measures"]["param_norm"] > 0


def test_independent_splits_give_each_grid_point_its_own_certify_check_draw():
    from clt_gen.data import DataConfig, load_dataset, make_splits
    from clt_gen.sweep import expand_grid, job_id

    manifest = {
        "sweep": {"independent_splits": True},
        "train": {"arch": "mlp"},
        "grid": {"random_state": [0, 1, 2]},
    }
    jobs = expand_grid(manifest)
    seeds = [j["train"]["data"]["split_random_state"] for j in jobs]
    assert len(set(seeds)) == 3
    assert seeds == [j["train"]["data"]["split_random_state"] for j in expand_grid(manifest)]
    ds = load_dataset("digits")
    checks = [make_splits(ds, DataConfig(split_random_state=s)).y["check"] for s in seeds]
    assert not all(bool((c == checks[0]).all()) for c in checks[1:])
    # the training rows do not depend on the split seed
    a = make_splits(ds, DataConfig(split_random_state=seeds[0]))
    b = make_splits(ds, DataConfig(split_random_state=seeds[1]))
    assert bool((a.y["train"] == b.y["train"]).all())
    # without the option no job sets a split seed (recorded checkpoints reproduce)
    assert "data" not in expand_grid({"train": {"arch": "mlp"}})[0]["train"]
    assert len({job_id(j) for j in jobs}) == 3


FAILING = MANIFEST.replace(
    '"arch_kwargs.width" = [8, 16]\nseed = [0, 1]', 'arch = ["mlp", "model-a"]'
).replace("max_features = 8", 'max_features = 8\nlayers = ["body.1"]')


def test_a_failed_job_is_recorded_listed_and_does_not_stop_the_sweep(tmp_path, capsys):
    from clt_gen.sweep import collect_failures

    path = tmp_path / "f.toml"
    path.write_text(FAILING.format(out=tmp_path / "f"))
    manifest = load_manifest(path)
    with pytest.warns(RuntimeWarning, match="1 of 2 sweep jobs failed"):
        records = run_sweep(manifest, progress=False)
    assert [r["grid_point"]["arch"] for r in records] == ["mlp"]
    failures = collect_failures(tmp_path / "f")
    assert len(failures) == 1
    f = failures[0]
    assert f["grid_point"] == {"arch": "model-a"} and f["stage"] == "evaluate"
    assert "body.1" in f["error"] and "Traceback" in f["traceback"]
    jdir = tmp_path / "f" / "jobs" / f["job_id"]
    assert (jdir / "checkpoint" / "meta.json").exists()  # training kept for the retry
    assert not (jdir / "result.json").exists()
    # the CLI lists the failure and exits non-zero; the finished job is not rerun
    mtime = next((tmp_path / "f").glob("jobs/*/result.json")).stat().st_mtime
    assert main(["sweep", str(path), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert f"FAILED {f['job_id']} in evaluate" in err and "error.json" in err
    assert next((tmp_path / "f").glob("jobs/*/result.json")).stat().st_mtime == mtime


def test_population_grid_checked_before_anything_trains(tmp_path):
    from clt_gen.sweep import check_population_grid

    check_population_grid({"grid": {"lr": [0.1, 0.2], "random_state": [0, 1, 2]}})
    with pytest.raises(
        ValidationError, match=r"'lr' takes one value \(\[0.1\]\).*move it to \[train\]"
    ):
        check_population_grid({"grid": {"lr": [0.1], "wd": [0, 1], "random_state": [0, 1, 2]}})
    with pytest.raises(ValidationError, match=r"each grid cell has 2 seed\(s\).*3 are requested"):
        check_population_grid({"grid": {"lr": [0.1, 0.2], "random_state": [0, 1]}})
    with pytest.raises(ValidationError, match="has 0 seed"):
        check_population_grid({"grid": {"lr": [0.1, 0.2]}})
    manifest = load_manifest(_manifest(tmp_path))  # width x seed: 2 seeds only
    with pytest.raises(ValidationError, match="2 seed"):
        run_sweep(manifest, progress=False, min_seeds=3)
    assert not (tmp_path / "sweep").exists()  # nothing trained, nothing written
    assert main(["sweep", str(_manifest(tmp_path)), "--min-seeds", "3", "--no-progress"]) != 0


def test_weightwatcher_summary_is_the_packages_own_analysis():
    import weightwatcher as ww

    from clt_gen.measures import weightwatcher_summary

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(200, 120), torch.nn.ReLU(), torch.nn.Linear(120, 3)
    )
    before = [p.detach().clone() for p in net.parameters()]
    out = weightwatcher_summary(net)
    # the same numbers as the package's documented call, run independently here
    watcher = ww.WeightWatcher(model=net)
    details = watcher.analyze()
    summary = watcher.get_summary(details)
    assert out["ww_layers"] == len(details) >= 1
    assert out["ww_alpha"] == pytest.approx(summary["alpha"], rel=1e-9)
    assert out["ww_alpha_weighted"] == pytest.approx(summary["alpha_weighted"], rel=1e-9)
    assert out["ww_alphas"] == pytest.approx(list(details["alpha"]), rel=1e-9)
    assert np.isfinite(out["ww_alpha"]) and out["ww_alpha"] > 1  # a power-law exponent
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))


def test_weightwatcher_summary_names_the_install_when_missing(monkeypatch):
    from clt_gen.measures import weightwatcher_summary

    monkeypatch.setitem(sys.modules, "weightwatcher", None)
    with pytest.raises(ValidationError, match=r"pip install 'clt-gen\[weightwatcher\]'"):
        weightwatcher_summary(torch.nn.Linear(3, 2))

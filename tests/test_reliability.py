"""Faults and bad inputs a new user hits (issue 33): each fails early, with a named error."""

from __future__ import annotations

import json
import os

import pytest

from clt_gen.cli import main
from clt_gen.errors import ValidationError
from clt_gen.evaluation import EvaluateConfig, evaluate
from clt_gen.report import Report, example_report_dict, load_report
from clt_gen.training import TrainConfig, train


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    d = tmp_path_factory.mktemp("rel") / "ck"
    train(
        TrainConfig(
            arch="mlp",
            arch_kwargs={"width": 16, "depth": 1},
            epochs=1,
            optimizer="adamw",
            lr=3e-3,
            progress=False,
        ),
        d,
    )
    return d


def test_out_that_is_a_file_is_refused_before_any_pass(ckpt, tmp_path, monkeypatch):
    import clt_gen.evaluation as ev

    target = tmp_path / "report-here"
    target.write_text("not a directory")
    called = []
    monkeypatch.setattr(ev, "run_passes", lambda *a, **k: called.append(1))
    with pytest.raises(ValidationError, match="out must be a directory"):
        evaluate(EvaluateConfig(checkpoint=str(ckpt), out=str(target), progress=False))
    assert not called


def test_out_that_cannot_be_created_is_refused(ckpt, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ValidationError, match="cannot be written"):
        evaluate(EvaluateConfig(checkpoint=str(ckpt), out=str(blocker / "sub"), progress=False))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only directories")
def test_read_only_out_is_refused(ckpt, tmp_path):  # pragma: no cover - non-root runs
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    with pytest.raises(ValidationError, match="cannot be written"):
        evaluate(EvaluateConfig(checkpoint=str(ckpt), out=str(ro), progress=False))


def test_cli_bad_out_exits_2_with_the_reason(ckpt, tmp_path, capsys):
    target = tmp_path / "f"
    target.write_text("x")
    assert main(["evaluate", str(ckpt), "--out", str(target), "--no-progress"]) == 2
    assert "out must be a directory" in capsys.readouterr().err


@pytest.mark.parametrize(
    "field,value,match",
    [
        ("n_bootstrap", -1, "n_bootstrap must be an int >= 0"),
        ("trainability_samples", 0, "trainability_samples must be"),
        ("cells", (1, 4), "cells must be ints >= 2"),
        ("label_smoothing", 1.5, "label_smoothing must be in"),
    ],
)
def test_config_values_are_rejected_before_any_pass(field, value, match):
    with pytest.raises(ValidationError, match=match):
        EvaluateConfig(checkpoint="x", **{field: value})


def test_cli_negative_bootstrap_is_rejected_at_once(ckpt, tmp_path, capsys):
    code = main(["evaluate", str(ckpt), "--out", str(tmp_path / "o"), "--n-bootstrap", "-1"])
    assert code == 2
    assert "n_bootstrap must be an int >= 0" in capsys.readouterr().err
    assert not (tmp_path / "o" / ".cache").exists()  # no feature pass ran


@pytest.mark.parametrize(
    "text,match",
    [
        ('{"schema_version": "1.3", "risks": {', "not a valid report.json"),
        ("[1, 2, 3]", "holds a JSON list"),
        (
            '{"schema_version": "1.3", "risks": 3, "floor": {}, "layers": [], "bounds": []}',
            "not a readable clt_gen report",
        ),
    ],
)
def test_broken_report_files_name_the_file(tmp_path, text, match):
    p = tmp_path / "run" / "report.json"
    p.parent.mkdir()
    p.write_text(text)
    with pytest.raises(ValidationError, match=match) as info:
        load_report(p.parent)
    assert str(p) in str(info.value)


def test_compare_on_a_truncated_report_names_it(tmp_path, capsys):
    good = Report.from_dict(example_report_dict()).save(tmp_path / "a")
    bad = tmp_path / "b"
    bad.mkdir()
    (bad / "report.json").write_text(json.dumps(example_report_dict())[:50])
    assert main(["compare", str(good), str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad / "report.json") in err and "truncated" in err


def _softmax_task():
    import torch
    from torch import nn

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(600, 6, generator=g), torch.randint(0, 3, (600,), generator=g)
    x[:, 0] += 2 * y
    net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(200):
        loss = nn.functional.cross_entropy(net(x[:400]), y[:400])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net, nn.Sequential(net, nn.Softmax(dim=1)), (x[:400], y[:400]), (x[400:], y[400:])


FAST = {"n_bootstrap": 10, "heads": ("logistic",), "cells": (2, 4), "progress": False}


def test_probability_outputs_are_refused_or_read_as_probabilities():
    logits_net, probs_net, train_data, test_data = _softmax_task()
    with pytest.raises(ValidationError, match="look like probabilities"):
        evaluate(probs_net, train_data, test_data, **FAST)
    rep_p = evaluate(probs_net, train_data, test_data, output_kind="probs", layers=["1"], **FAST)
    rep_l = evaluate(logits_net, train_data, test_data, layers=["1"], **FAST)
    # log p are logits of the same distribution: the same risks to float precision
    assert rep_p.risks.train == pytest.approx(rep_l.risks.train, rel=1e-4, abs=1e-6)
    assert rep_p.risks.check_error == rep_l.risks.check_error


def test_nonfinite_model_output_is_named():
    import torch
    from torch import nn

    class Overflow(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(6, 3)

        def forward(self, x):
            out = self.lin(x)
            return torch.where(x[:, :1] > 1.5, torch.full_like(out, float("inf")), out)

    _, _, train_data, test_data = _softmax_task()
    with pytest.raises(ValidationError, match="holds NaN or inf on"):
        evaluate(Overflow(), train_data, test_data, **FAST)


@pytest.mark.parametrize(
    "manifest,match",
    [
        (
            {"train": {"arch": "mlp"}, "evaluate": {"n_bootsrap": 5}},
            r"\[evaluate\] key must be one of .*did you mean 'n_bootstrap'",
        ),
        ({"train": {"arch": "mlp", "data": {"subsett": 10}}}, r"data key .*did you mean 'subset'"),
        ({"train": {"arch": "mlp", "epochs": "two"}}, r"\[train\] epochs must be an int"),
        (
            {"train": {"arch": "mlp"}, "evaluate": {"n_bootstrap": -1}},
            r"\[evaluate\] n_bootstrap must be an int >= 0",
        ),
        (
            {"train": {"arch": "mlp"}, "grid": {"lr": [0.1, -1.0]}},
            r"\[train\] lr must be a float > 0 .*grid point \{'lr': -1.0\}",
        ),
        (
            {"train": {"arch": "mlp"}, "grid": {"wieght_decay": [0.0]}},
            r"\[train\] key .*did you mean 'weight_decay'",
        ),
    ],
)
def test_sweep_manifest_is_validated_whole_before_any_job_trains(
    tmp_path, monkeypatch, manifest, match
):
    import clt_gen.sweep as sweep

    trained = []
    monkeypatch.setattr(sweep, "train", lambda *a, **k: trained.append(a))
    manifest = {"sweep": {"out": str(tmp_path / "s")}, **manifest}
    with pytest.raises(ValidationError, match=match):
        sweep.run_sweep(manifest, progress=False)
    assert not trained
    assert not (tmp_path / "s").exists()


def test_feature_cache_overwritten_at_the_same_size_is_detected_and_recomputed(tmp_path):
    import numpy as np
    import torch
    from torch import nn

    from clt_gen.sources import as_source
    from clt_gen.streaming import stream_pass

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(300, 5, generator=g), torch.randint(0, 3, (300,), generator=g)
    net = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))
    kw = {
        "layers": ["0", "2"],
        "cache_dir": str(tmp_path),
        "cache_parts": {"m": "a"},
        "progress": False,
    }
    src = as_source((x, y), name="train")
    first = stream_pass(net, src, **kw)
    bins = sorted(tmp_path.rglob("*.bin"))
    assert bins
    for b in bins:  # a disk fault: the same sizes, all zeros
        b.write_bytes(b"\0" * b.stat().st_size)
    with pytest.warns(UserWarning, match="checksum"):
        again = stream_pass(net, src, **kw)
    assert not again.from_cache
    np.testing.assert_array_equal(again.scores, first.scores)
    np.testing.assert_array_equal(again.features["2"], first.features["2"])
    assert stream_pass(net, src, **kw).from_cache  # the recomputed pass is reused


def test_nonfinite_held_out_pixel_is_named_before_any_fit(monkeypatch):
    import clt_gen.evaluation as ev

    _, _, train_data, (xt, yt) = _softmax_task()
    xt = xt.clone()
    xt[17, 2] = float("nan")
    fits = []
    monkeypatch.setattr(ev, "_entropy_rows", lambda *a, **k: fits.append(1))
    logits_net = _softmax_task()[0]
    with pytest.raises(ValidationError, match=r"test inputs hold NaN or inf .*row 17"):
        evaluate(logits_net, train_data, (xt, yt), **FAST)
    assert not fits


def test_label_shapes_dtypes_and_single_logit_models_get_working_advice():
    import numpy as np
    import torch
    from torch import nn

    logits_net, _, (x, y), test = _softmax_task()
    col = evaluate(logits_net, (x, y.reshape(-1, 1)), test, layers=["2"], **FAST)
    flat = evaluate(logits_net, (x, y), test, layers=["2"], **FAST)
    assert col.risks.train == flat.risks.train  # a column of indices is read as indices
    with pytest.raises(ValidationError, match=r"reshape\(-1\)\.long\(\)"):
        evaluate(logits_net, (x, y.reshape(-1, 1).float()), test, **FAST)
    names = np.array(["cat", "dog", "owl"])[y.numpy()]
    with pytest.raises(ValidationError, match="LabelEncoder"):
        evaluate(logits_net, (x, names), test, **FAST)
    with pytest.raises(ValidationError, match="single output"):
        evaluate(nn.Linear(6, 1), (x, (y > 0).long()), (test[0], (test[1] > 0).long()), **FAST)
    conv = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(72, 3))
    imgs = torch.randint(0, 255, (400, 1, 8, 8), dtype=torch.uint8)
    with pytest.raises(ValidationError, match=r"dtype torch.uint8 .*x.float\(\) / 255"):
        evaluate(conv, (imgs[:300], y[:300]), (imgs[300:], y[300:400]), **FAST)


def test_estimator_misuse_gets_named_errors():
    import numpy as np

    from estimators import conditional_entropy

    rng = np.random.default_rng(0)
    z, y = rng.normal(size=(300, 5)), rng.integers(0, 3, 300)
    with pytest.raises(ValidationError, match="heads=\\('scores',\\) has no candidate"):
        conditional_entropy(z, y, heads=("scores",))
    with pytest.raises(ValidationError, match=r"n_samples must be >= max\(20"):
        conditional_entropy(z[:4], y[:4], method="probe", n_classes=3)
    one = np.zeros(40, int)
    one[0] = 1
    with pytest.raises(ValidationError, match="a fitting fold holds only class 0"):
        conditional_entropy(z[:40], one, method="probe")


@pytest.mark.parametrize("method", ["auto", "ksg", "gaussian", "knn"])
def test_estimates_do_not_depend_on_an_extreme_feature_scale(method):
    import numpy as np

    from estimators import conditional_entropy
    from estimators.certified import estimate_and_bound

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 1000)
    z = y[:, None] + rng.normal(size=(1000, 4))
    ref = conditional_entropy(z, y, method=method, n_bootstrap=0, random_state=0).value
    for scale in (1e154, 1e-200):
        got = conditional_entropy(z * scale, y, method=method, n_bootstrap=0, random_state=0)
        assert got.value == pytest.approx(ref, rel=1e-9)  # z * scale itself rounds
        assert 0.0 <= got.value <= np.log(3) + 1e-12
    _, ub, _ = estimate_and_bound(z * 1e154, y, n_classes=3, random_state=0, n_bootstrap=0)
    _, ub1, _ = estimate_and_bound(z, y, n_classes=3, random_state=0, n_bootstrap=0)
    assert ub.value == pytest.approx(ub1.value, rel=1e-9)


def test_no_estimate_is_reported_above_the_uniform_entropy():
    import numpy as np

    from estimators import conditional_entropy

    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 60)
    z = rng.normal(size=(60, 40))  # independent labels, many features: ksg's MI goes < 0
    est = conditional_entropy(z, y, method="ksg", n_bootstrap=0, random_state=0)
    assert est.params["unclipped_value"] > np.log(3)  # the raw estimate is above H(uniform)
    assert est.value == pytest.approx(np.log(3)) and "out_of_range" in est.flags


@pytest.mark.parametrize("omega", ["sparsemax", "tsallis"])
def test_extreme_finite_logits_give_the_exact_loss(omega):
    import torch

    from clt_gen.duality import get_regularizer, objective

    reg = get_regularizer(omega)
    y = torch.tensor([0, 0])
    huge = torch.tensor([[1e308, 1e308, -1e308], [1e308, -1e308, -1e308]], dtype=torch.float64)
    tame = torch.tensor([[50.0, 50.0, -50.0], [50.0, -50.0, -50.0]], dtype=torch.float64)
    got, ref = objective(reg, huge, y, 0.0), objective(reg, tame, y, 0.0)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, ref)  # the same supports: the same losses
    if omega == "sparsemax":
        assert float(got[0]) == pytest.approx(0.25)


@pytest.fixture
def tiny_disk(tmp_path):
    """A 2 MB tmpfs (needs root, as CI and this machine have; skipped elsewhere)."""
    import subprocess

    mnt = tmp_path / "tiny"
    mnt.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def test_full_disk_names_the_path_and_space_and_leaves_no_debris(tiny_disk, tmp_path):
    import torch
    from torch import nn

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(4000, 64, generator=g), torch.randint(0, 3, (4000,), generator=g)
    net = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 3))
    kw = dict(
        layers=["0", "2"],
        max_features=256,
        n_bootstrap=10,
        heads=("logistic",),
        cells=(2,),
        progress=False,
    )
    with pytest.raises(ValidationError, match=r"no space left .*needs about [0-9.]+ MiB"):
        evaluate(net, (x[:3000], y[:3000]), (x[3000:], y[3000:]), cache_dir=str(tiny_disk), **kw)
    assert not list(tiny_disk.glob("pass-*/*.bin"))  # the half-written entry is gone
    rep = evaluate(
        net, (x[:3000], y[:3000]), (x[3000:], y[3000:]), cache_dir=str(tmp_path / "roomy"), **kw
    )
    assert rep.risks.train > 0


def test_failing_html_keeps_report_json(tmp_path, monkeypatch):
    import clt_gen.render as render

    def boom(_):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(render, "render_html", boom)
    rep = Report.from_dict(example_report_dict())
    with pytest.warns(UserWarning, match="report.json is complete"):
        rep.save(tmp_path / "r")
    assert load_report(tmp_path / "r").risks.train == rep.risks.train


def _children(pid: int) -> list[int]:
    import pathlib

    out = []
    for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    import pathlib

    try:
        state = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _kill_and_check_no_child_survives(cmd, children, start_within: float, what: str) -> None:
    """Start ``cmd``; once it has two child processes, SIGKILL it; none may outlive it."""
    import signal
    import subprocess
    import time

    parent = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kids: list[int] = []
    deadline = time.monotonic() + start_within
    while time.monotonic() < deadline and len(kids) < 2 and parent.poll() is None:
        time.sleep(0.1)
        kids = children(parent.pid)
    assert len(kids) >= 2, f"{what} never started"
    time.sleep(1.0)
    kids = children(parent.pid)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(p) for p in kids):
        time.sleep(0.2)
    assert not [p for p in kids if _alive(p)], f"{what} outlived the killed parent"


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs Linux /proc")
def test_killed_sweep_leaves_no_worker_and_resumes_losing_nothing(tmp_path):
    import subprocess
    import sys

    manifest = tmp_path / "m.toml"
    manifest.write_text(
        "\n".join(
            [
                "[sweep]",
                f'out = "{tmp_path / "s"}"',
                "evaluate = true",
                "[train]",
                'arch = "mlp"',
                "epochs = 3",
                'optimizer = "adamw"',
                "lr = 0.003",
                "[grid]",
                "random_state = [0, 1]",
                "[evaluate]",
                "n_bootstrap = 20",
                'heads = ["logistic"]',
                "cells = [2, 4]",
            ]
        )
    )
    cmd = [
        sys.executable,
        "-m",
        "clt_gen.cli",
        "sweep",
        str(manifest),
        "--workers",
        "2",
        "--no-progress",
    ]
    _kill_and_check_no_child_survives(cmd, _children, 120, "the sweep's workers")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    results = sorted((tmp_path / "s" / "jobs").glob("*/result.json"))
    assert len(results) == 2


def test_full_disk_under_a_checkpoint_or_the_pac_bayes_cache_is_named(tiny_disk):
    import copy

    import torch
    from torch import nn

    from clt_gen.checkpoints import save_checkpoint
    from clt_gen.gibbs import pac_bayes_certificate

    big = nn.Linear(1000, 1000)  # 4 MB of weights on a 2 MB disk
    meta = {"arch": "x", "input_shape": [1000], "n_classes": 1000}
    with pytest.raises(ValidationError, match=r"cannot write the checkpoint's weights .*MiB"):
        save_checkpoint(tiny_disk / "ck", big, meta)
    assert not [p for p in (tiny_disk / "ck").iterdir() if p.name.endswith(".tmp")]
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(400, 300, generator=g), torch.randint(0, 3, (400,), generator=g)
    net = nn.Sequential(nn.Linear(300, 600), nn.ReLU(), nn.Linear(600, 3))
    w0 = copy.deepcopy(net.state_dict())
    with pytest.raises(ValidationError, match="no space left for the PAC-Bayes cache"):
        pac_bayes_certificate(
            net, (x, y), prior=w0, epochs=1, cache_dir=tiny_disk / "pb", progress=False
        )
    assert not list((tiny_disk / "pb").glob("pac_bayes-*"))


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        kids = _children(todo.pop())
        out += kids
        todo += kids
    return out


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs Linux /proc")
def test_killed_evaluate_leaves_no_worker_behind(tmp_path):
    """SIGKILL on an evaluation with worker processes: its loky workers and resource
    tracker end with it (issue 33, item 3)."""
    import sys

    from clt_gen.data import DataConfig
    from clt_gen.training import TrainConfig, train

    ckpt = tmp_path / "ck"
    cfg = TrainConfig(
        arch="mlp",
        dataset="mixture",
        dataset_params={"n_samples": 12_000, "n_features": 64, "n_classes": 4},
        data=DataConfig(random_state=0),
        epochs=1,
        progress=False,
    )
    train(cfg, ckpt)
    cmd = [
        sys.executable,
        "-m",
        "clt_gen.cli",
        "evaluate",
        str(ckpt),
        "--out",
        str(tmp_path / "ev"),
        "--jobs",
        "2",
        "--max-features",
        "64",
        "--n-bootstrap",
        "50",
        "--no-progress",
    ]
    _kill_and_check_no_child_survives(
        cmd, _descendants, 180, "the evaluation's loky worker and resource trackers"
    )

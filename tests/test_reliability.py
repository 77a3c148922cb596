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
    train(TrainConfig(arch="mlp", arch_kwargs={"width": 16, "depth": 1}, epochs=1,
                      optimizer="adamw", lr=3e-3, progress=False), d)
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
        ('{"schema_version": "1.3", "risks": 3, "floor": {}, "layers": [], "bounds": []}',
         "not a readable clt_gen report"),
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

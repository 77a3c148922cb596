"""PAC-Bayes certificates through training, evaluate, the report and the CLI (issue 31)."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from torch import nn

from clt_gen.checkpoints import INIT_FILE, load_checkpoint, load_tensors
from clt_gen.cli import main
from clt_gen.errors import ValidationError
from clt_gen.evaluation import EvaluateConfig, evaluate
from clt_gen.models import build_model
from clt_gen.report import Report, load_report
from clt_gen.training import TrainConfig, train

FAST = {"n_bootstrap": 20, "heads": ("logistic",), "cells": (2, 4), "progress": False}


@pytest.fixture(scope="module")
def digits_ckpt(tmp_path_factory):
    d = tmp_path_factory.mktemp("pb") / "ck"
    cfg = TrainConfig(arch="mlp", arch_kwargs={"width": 32, "depth": 1}, epochs=4,
                      optimizer="adamw", lr=3e-3, progress=False, random_state=1)
    train(cfg, d)
    return d


def test_training_records_the_initialization(digits_ckpt):
    ck = load_checkpoint(digits_ckpt)
    w0 = load_tensors(digits_ckpt / INIT_FILE, ck.meta["init_sha256"])
    # w_0 is the seeded initialization: the same architecture built with the same seed
    torch.manual_seed(1)
    fresh = build_model("mlp", (8, 8), 10, width=32, depth=1)
    for k, v in fresh.state_dict().items():
        assert torch.equal(w0[k], v), k
    assert not torch.equal(w0["head.weight"], ck.model.state_dict()["head.weight"])


def test_evaluate_adds_checked_pac_bayes_certificates(digits_ckpt, tmp_path):
    out = tmp_path / "ev"
    rep = evaluate(EvaluateConfig(checkpoint=str(digits_ckpt), out=str(out), pac_bayes=True,
                                  pac_bayes_epochs=1, **FAST))
    rows = {b.name: b for b in rep.bounds if b.name.startswith("pac_bayes")}
    assert set(rows) == {"pac_bayes[error]", "pac_bayes[ce]"}
    err = rows["pac_bayes[error]"]
    assert err.kind == "probabilistic" and err.quantity == "gibbs_error"
    assert err.checked_on == "check" and err.held == (err.checked_value <= err.value)
    assert err.checked_value == rep.pac_bayes["check"]["gibbs_error"]
    assert err.terms["deterministic_check_error"] == pytest.approx(rep.risks.check_error)
    assert err.value >= err.terms["gibbs_train_risk_upper"] >= err.terms["gibbs_train_risk"]
    assert rep.pac_bayes["n_samples"] == rep.data["n_train"]
    assert rep.pac_bayes["prior"]["kind"] == "init"
    text = "\n".join(rep.summary_lines)
    assert "from the training data alone" in text and "Tightest held-out certificate" in text
    assert rep.best_train_certificate() is err
    assert rep.best_error_certificate().quantity == "error"  # held-out ones stay apart
    again = load_report(out)
    assert again.pac_bayes == json.loads(json.dumps(rep.pac_bayes))
    html = (out / "report.html").read_text()
    assert "PAC-Bayes certificate from the training data" in html
    assert json.loads((out / "report.json").read_text())["schema_version"] == "1.4"


def test_old_reports_without_pac_bayes_still_load():
    from clt_gen.report import example_report_dict

    d = example_report_dict()
    d["schema_version"] = "1.2"
    d.pop("pac_bayes", None)
    rep = Report.from_dict(d)
    assert rep.pac_bayes is None and rep.best_train_certificate() is None


def test_data_dependent_prior_training_and_its_certificate(tmp_path):
    d = tmp_path / "ck"
    cfg = TrainConfig(arch="mlp", arch_kwargs={"width": 32, "depth": 1}, epochs=3,
                      optimizer="adamw", lr=3e-3, progress=False, pac_bayes_prior=0.5,
                      pac_bayes_epochs=2)
    res = train(cfg, d)
    pb = res.meta["pac_bayes"]
    rows = load_tensors(d / "pac_bayes_rows.safetensors", pb["rows_sha256"])
    prior_rows, bound_rows = rows["prior_rows"].numpy(), rows["bound_rows"].numpy()
    n_train = res.meta["split_sizes"]["train"]
    assert len(np.intersect1d(prior_rows, bound_rows)) == 0
    assert len(prior_rows) + len(bound_rows) == n_train
    assert pb["n_samples"] == len(bound_rows) == pb["n_bound_rows"]
    assert pb["prior"]["kind"] == "data_dependent" and pb["optimize_mean"] is True
    # the checkpoint's weights are the posterior means
    ck = load_checkpoint(d)
    prior = load_tensors(d / "prior.safetensors", pb["prior_sha256"])
    assert not torch.equal(prior["head.weight"], ck.model.state_dict()["head.weight"])
    rep = evaluate(EvaluateConfig(checkpoint=str(d), pac_bayes=True, pac_bayes_epochs=1, **FAST))
    assert rep.pac_bayes["n_samples"] == len(bound_rows)
    assert rep.pac_bayes["prior"]["kind"] == "data_dependent"
    row = [b for b in rep.bounds if b.name == "pac_bayes[error]"][0]
    assert "never saw" in row.data_used


def test_users_module_needs_its_initialization_for_the_init_prior():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(600, 6, generator=g), torch.randint(0, 3, (600,), generator=g)
    x[:, 0] += y
    net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    w0 = copy.deepcopy(net.state_dict())
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(100):
        loss = nn.functional.cross_entropy(net(x[:400]), y[:400])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with pytest.raises(ValidationError, match="init_state"):
        evaluate(net, (x[:400], y[:400]), (x[400:], y[400:]), pac_bayes=True, **FAST)
    rep = evaluate(net, (x[:400], y[:400]), (x[400:], y[400:]), pac_bayes=True,
                   pac_bayes_epochs=1, init_state=w0, **FAST)
    err = [b for b in rep.bounds if b.name == "pac_bayes[error]"][0]
    assert 0 < err.value <= 1 and err.checked_value is not None
    assert rep.pac_bayes["check"]["n_rows"] == rep.data["n_check"]


def test_pac_bayes_config_is_validated_before_any_work():
    with pytest.raises(ValidationError, match="pac_bayes_prior must be one of"):
        EvaluateConfig(checkpoint="x", pac_bayes=True, pac_bayes_prior="w0")
    with pytest.raises(ValidationError, match="pac_bayes_epochs"):
        EvaluateConfig(checkpoint="x", pac_bayes_epochs=-1)
    with pytest.raises(ValidationError, match="pac_bayes_prior must be a fraction"):
        TrainConfig(pac_bayes_prior=1.5)


def test_cli_train_and_evaluate_with_pac_bayes(tmp_path, capsys):
    ck = tmp_path / "ck"
    assert main(["train", "--arch", "mlp", "--arch-kwargs", '{"width": 16, "depth": 1}',
                 "--epochs", "2", "--optimizer", "adamw", "--lr", "0.003", "--out", str(ck),
                 "--pac-bayes-prior", "0.5", "--pac-bayes-epochs", "1", "--no-progress"]) == 0
    assert "PAC-Bayes (prior on" in capsys.readouterr().out
    out = tmp_path / "ev"
    assert main(["evaluate", str(ck), "--out", str(out), "--pac-bayes", "--pac-bayes-epochs",
                 "1", "--n-bootstrap", "20", "--heads", "logistic", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "pac_bayes[error]" in printed
    assert load_report(out).pac_bayes["prior"]["kind"] == "data_dependent"

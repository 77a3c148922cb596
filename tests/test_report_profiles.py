"""The report reads true at a glance (issue 32): two profiles, resolution, vacuous bounds."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from clt_gen.bounds import Bound, mark_vacuous, trivial_risks
from clt_gen.evaluation import evaluate
from clt_gen.render import loss_text, render_html, summary_table
from clt_gen.report import Report, example_report_dict, layer_label
from estimators.certified import estimate_and_bound

OPTS = {"n_bootstrap": 50, "heads": ("logistic",), "cells": (2, 4), "progress": False}


def _task(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    x = torch.randn(n, 6, generator=g)
    x[:, 0] += 2.5 * (y == 1).float()
    x[:, 1] += 2.5 * (y == 2).float()
    return x, y


class Bottleneck(nn.Module):
    """Keeps 1 of 16 channels: the label information in the other direction is lost."""

    def __init__(self) -> None:
        super().__init__()
        mask = torch.zeros(16)
        mask[0] = 1.0
        self.register_buffer("mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.mask


def _network() -> nn.Sequential:
    torch.manual_seed(0)
    wide = nn.Linear(6, 16)
    with torch.no_grad():  # channel 0 carries feature 0 only; the others carry everything
        wide.weight.zero_()
        wide.bias.zero_()
        wide.weight[0, 0] = 1.0
        wide.weight[1:7, :6] = torch.eye(6)
        wide.weight[7:] = torch.randn(9, 6)
    return nn.Sequential(wide, Bottleneck(), nn.Linear(16, 3))


@pytest.fixture(scope="module")
def bottleneck_report():
    net = _network()
    x_tr, y_tr = _task(1500, 1)
    x_te, y_te = _task(3000, 2)
    x_ch, y_ch = _task(500, 3)
    rep = evaluate(net, (x_tr, y_tr), (x_te, y_te), check=(x_ch, y_ch),
                   layers=["input", "0", "1", "2"], **OPTS)
    return rep, net, (x_te, y_te)


def test_bottleneck_loss_is_resolved_and_the_rest_reads_below_resolution(bottleneck_report):
    rep, _, _ = bottleneck_report
    loss = {r.name: r.information_loss for r in rep.layers if r.information_loss}
    assert loss["1"].resolved and loss["1"].value > 0.2  # the channel mask loses label 2
    for name in ("0", "2"):  # an injective map and a head on the kept channel lose nothing
        assert not loss[name].resolved
        assert loss_text(loss[name].to_dict()).startswith("<")
    assert loss_text(loss["1"].to_dict()) == f"{loss['1'].value:.4f}"
    text = "\n".join(rep.summary_lines)
    assert "largest resolvable information loss" in text and "'1 · Bottleneck'" in text
    table = summary_table(rep.to_dict())
    assert "< " in table and "1 · Bottleneck" in table and "0 · Linear" in table


def test_two_profiles_match_an_independent_recomputation(bottleneck_report):
    rep, net, (x_te, y_te) = bottleneck_report
    with torch.no_grad():
        a0 = net[0](x_te)
        feats = {"input": x_te, "0": a0, "1": net[1](a0), "2": net[2](net[1](a0))}
    layers = ["input", "0", "1", "2"]
    uppers = []
    for name in layers:
        est, ub, _ = estimate_and_bound(
            feats[name].numpy(), y_te.numpy(), omega="shannon", n_classes=3, random_state=0,
            delta=0.05 / len(layers), n_bootstrap=OPTS["n_bootstrap"], heads=OPTS["heads"],
        )
        row = rep.layer(name)
        assert row.probe is not None
        assert row.probe.value == pytest.approx(est.value, rel=1e-9)
        assert row.H_upper is not None and row.H_upper.value == pytest.approx(ub.value, rel=1e-9)
        uppers.append(ub.value)
    for i, name in enumerate(layers):
        later = uppers[i:]
        j = i + int(np.argmin(later))
        assert rep.layer(name).H_upper.profile == pytest.approx(min(later))
        assert rep.layer(name).bound_from == layers[j]
    # the probe and the consistent estimate differ where a later head is better
    assert any(r.probe.value != r.H_heldout.value for r in rep.layers if r.probe)


def test_profiles_are_in_every_view(bottleneck_report, tmp_path):
    rep, _, _ = bottleneck_report
    d = rep.to_dict()
    assert {"probe", "probe_head", "bound_from", "label", "module"} <= set(d["layers"][1])
    assert d["layers"][2]["information_loss"]["resolution"] > 0
    html = render_html(d)
    assert "probe (est.)" in html and "U* from" in html and "Two profiles" not in html[:200]
    assert "table class='glance'" in html and "How well?" in html
    assert html.index("How well?") < html.index("<h2>Summary</h2>")
    pytest.importorskip("pandas")
    frame = rep.layers_frame()
    assert {"probe", "U_star_from", "information_loss_resolution"} <= set(frame.columns)
    again = Report.from_dict(json.loads(json.dumps(d)))
    assert again.layer("1").information_loss.resolution == d["layers"][2]["information_loss"][
        "resolution"
    ]


def test_vacuous_bounds_are_marked_and_counted_apart():
    trivial = trivial_risks(np.array([10, 10, 20]))
    assert trivial["error"] == 0.5
    rows = mark_vacuous(
        [
            Bound("tight", "probabilistic", "error", "upper", 0.2, 0.05).check(0.1, on="check"),
            Bound("useless", "probabilistic", "error", "upper", 0.7, 0.05).check(0.1, on="check"),
            Bound("lmax", "deterministic", "risk", "upper", 33.8).check(0.3, on="check"),
            Bound("floor0", "deterministic", "train_risk", "lower", 0.0).check(0.1, on="train"),
        ],
        trivial,
    )
    assert [b.vacuous for b in rows] == [False, True, True, True]
    assert rows[1].terms["trivial_risk"] == 0.5
    d = example_report_dict()
    d["bounds"] = [{**b.to_dict()} for b in rows]
    rep = Report.from_dict(d).with_summary()
    text = "\n".join(rep.summary_lines)
    assert "1 of 1 informative certificates held" in text and "3 more are vacuous" in text
    html = render_html(rep.to_dict())
    assert html.count(">vacuous<") == 3
    assert "Vacuous bounds" in html


def test_schema_went_up_and_older_reports_load():
    d = example_report_dict()
    assert d["schema_version"] == "1.4"
    old = json.loads(json.dumps(d))
    old["schema_version"] = "1.2"
    for row in old["layers"]:
        row.pop("probe", None)
    rep = Report.from_dict(old)
    assert rep.layers[0].probe is not None  # read from the held-out estimate
    assert rep.layers[1].information_loss.resolution is None
    assert loss_text(rep.layers[1].information_loss.to_dict()) == "0.0000"


def test_layer_labels():
    assert layer_label("3", "ReLU") == "3 · ReLU"
    assert layer_label("features.4", "Conv2d") == "features.4 · Conv2d"
    assert layer_label("layer1", "Sequential") == "layer1"

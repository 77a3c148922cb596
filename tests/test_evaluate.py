"""Feature extraction, the evaluate pipeline, its report and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import clt_gen.evaluation as evaluate_mod
from clt_gen.checkpoints import load_checkpoint
from clt_gen.cli import main
from clt_gen.duality import get_regularizer
from clt_gen.errors import DataError, ValidationError
from clt_gen.evaluation import EvaluateConfig, evaluate
from clt_gen.features import hooked, list_layers
from clt_gen.models import build_model
from clt_gen.streaming import extract_features
from clt_gen.training import TrainConfig, train


@pytest.fixture(scope="module")
def mixture_ckpt(tmp_path_factory):
    root = tmp_path_factory.mktemp("ev")
    cfg = TrainConfig(
        arch="model-a",
        arch_kwargs={"k": 2, "w": 16},
        dataset="mixture",
        dataset_params={"n_samples": 600, "n_features": 6, "n_classes": 3},
        epochs=5,
        optimizer="adamw",
        lr=1e-2,
        progress=False,
    )
    train(cfg, root / "ckpt")
    return root / "ckpt"


# --- features ----------------------------------------------------------------------------
def test_hooks_are_removed_and_modes_restored_even_on_error():
    net = build_model("model-c", (1, 8, 8), 3, k=1, w=4).train()
    torch.set_grad_enabled(True)
    with pytest.raises(RuntimeError, match="boom"), hooked(net, ["stem", "head"]):
        assert not net.training and not torch.is_grad_enabled()
        raise RuntimeError("boom")
    assert net.training and torch.is_grad_enabled()
    assert all(not m._forward_hooks for m in net.modules())


@pytest.mark.parametrize(("reduce", "dim"), [("avgpool", 4), ("flatten", 64), ("project", 10)])
def test_reductions(reduce, dim):
    net = build_model("model-c", (1, 8, 8), 3, k=1, w=4)
    x = torch.rand(7, 1, 8, 8)
    feats = extract_features(
        net,
        x,
        layers=["blocks.0", "input"],
        reduce=reduce,
        max_features=10 if reduce == "project" else None,
        progress=False,
    )
    assert feats["blocks.0"].shape == (7, dim)
    assert feats["input"].shape[0] == 7
    if reduce == "avgpool":  # equals the spatial mean of the hooked map
        with torch.no_grad():
            ref = net.blocks(net.stem(x)).mean((2, 3)).numpy()
        np.testing.assert_allclose(feats["blocks.0"], ref, rtol=1e-5, atol=1e-6)


def test_unknown_layer_lists_closest():
    net = build_model("model-c", (1, 8, 8), 3, k=1, w=4)
    with pytest.raises(ValidationError, match="did you mean 'stem'"):
        extract_features(net, torch.rand(2, 1, 8, 8), layers=["stm"], progress=False)


class _Counting(torch.nn.Module):
    def __init__(self, fail_after=None):
        super().__init__()
        self.net = build_model("model-a", (5,), 3, k=1, w=6)
        self.calls, self.fail_after = 0, fail_after

    def forward(self, x):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise KeyboardInterrupt("simulated interruption")
        return self.net(x)


def test_cache_reuse_key_isolation_and_resume(tmp_path):
    torch.manual_seed(0)
    x = torch.rand(50, 5)
    ref_model = _Counting()
    state = ref_model.state_dict()
    kw = dict(layers=["net.stem", "net.head"], batch_size=8, cache_dir=tmp_path, progress=False)
    ref = extract_features(ref_model, x, cache_parts={"checkpoint": "A", "data": "d"}, **kw)
    assert ref_model.calls == 7
    again = extract_features(ref_model, x, cache_parts={"checkpoint": "A", "data": "d"}, **kw)
    assert ref_model.calls == 7  # served from the cache
    np.testing.assert_array_equal(again["net.head"], ref["net.head"])
    other = _Counting()
    other.load_state_dict(state)
    extract_features(other, x, cache_parts={"checkpoint": "B", "data": "d"}, **kw)
    assert other.calls == 7  # another checkpoint hash never reuses A's features
    # interrupted after 3 batches, then resumed: only the missing batches are computed
    flaky = _Counting(fail_after=3)
    flaky.load_state_dict(state)
    with pytest.raises(KeyboardInterrupt):
        extract_features(flaky, x, cache_parts={"checkpoint": "C", "data": "d"}, **kw)
    resumed = _Counting()
    resumed.load_state_dict(state)
    out = extract_features(resumed, x, cache_parts={"checkpoint": "C", "data": "d"}, **kw)
    assert resumed.calls == 4
    np.testing.assert_array_equal(out["net.head"], ref["net.head"])
    np.testing.assert_array_equal(out["net.stem"], ref["net.stem"])


# --- evaluate ----------------------------------------------------------------------------
def test_report_schema_and_checked_bounds(mixture_ckpt, tmp_path):
    out = tmp_path / "eval"
    rep = evaluate(
        EvaluateConfig(checkpoint=str(mixture_ckpt), out=str(out), n_bootstrap=50, progress=False)
    )
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["schema_version"] == "1.4"
    for key in (
        "version",
        "config",
        "checkpoint",
        "data",
        "omega",
        "risks",
        "floor",
        "layers",
        "bounds",
        "timings",
    ):
        assert key in on_disk
    assert on_disk["checkpoint"]["sha256"] == load_checkpoint(mixture_ckpt).sha256
    assert set(on_disk["risks"]) >= {
        "train",
        "certify",
        "check",
        "train_error",
        "certify_error",
        "check_error",
    }
    assert rep.floor.value <= rep.risks.train
    names = [r.name for r in rep.layers]
    assert names[0] == "input" and names[-1] == "head"
    for row in rep.layers[1:]:
        assert row.information_loss.from_layer == names[names.index(row.name) - 1]
        lo, hi = row.information_loss.ci
        assert lo <= row.information_loss.value <= hi
    kinds = {b.kind for b in rep.bounds}
    assert kinds == {"deterministic", "probabilistic", "estimate"}
    for b in rep.bounds:
        assert b.checked_value is not None and isinstance(b.held, bool)
    held = {b.name: b.held for b in rep.bounds}
    assert held["data_floor"] and held["validation_binomial"] and held["risk_upper_lmax"]
    assert (out / "report.html").read_text().count("data:image/png;base64") >= 3
    assert not list(out.glob(".*.tmp"))


def test_data_mismatch_errors(mixture_ckpt, tmp_path):
    with pytest.raises(DataError, match="predicts 3 classes but dataset 'digits' has 10"):
        evaluate(
            EvaluateConfig(
                checkpoint=str(mixture_ckpt), out=str(tmp_path), data="digits", progress=False
            )
        )


def test_input_shape_mismatch(tmp_path):
    cfg = TrainConfig(
        arch="mlp",
        arch_kwargs={"width": 8, "depth": 1},
        dataset="mixture",
        dataset_params={"n_samples": 300, "n_features": 4, "n_classes": 10},
        epochs=1,
        progress=False,
    )
    train(cfg, tmp_path / "ck")
    with pytest.raises(DataError, match=r"expects inputs of shape \[4\]"):
        evaluate(
            EvaluateConfig(
                checkpoint=str(tmp_path / "ck"),
                out=str(tmp_path / "o"),
                data="digits",
                progress=False,
            )
        )


def test_heldout_too_small(tmp_path):
    cfg = TrainConfig(
        arch="mlp",
        arch_kwargs={"width": 8, "depth": 1},
        dataset="mixture",
        dataset_params={"n_samples": 30, "n_features": 4, "n_classes": 2},
        epochs=1,
        progress=False,
    )
    train(cfg, tmp_path / "ck")
    with pytest.raises(DataError, match="at least 20"):
        evaluate(
            EvaluateConfig(checkpoint=str(tmp_path / "ck"), out=str(tmp_path / "o"), progress=False)
        )


def test_unknown_layer_in_evaluate(mixture_ckpt, tmp_path):
    with pytest.raises(ValidationError, match="did you mean 'stem'"):
        evaluate(
            EvaluateConfig(
                checkpoint=str(mixture_ckpt), out=str(tmp_path), layers=("stemm",), progress=False
            )
        )


def test_interrupted_run_leaves_no_partial_report_and_resumes(mixture_ckpt, tmp_path, monkeypatch):
    out = tmp_path / "ev"
    real = evaluate_mod.frozen_feature_bound

    def crash(*a, **k):
        raise KeyboardInterrupt("simulated kill during the bounds")

    monkeypatch.setattr(evaluate_mod, "frozen_feature_bound", crash)
    cfg = EvaluateConfig(checkpoint=str(mixture_ckpt), out=str(out), n_bootstrap=20, progress=False)
    with pytest.raises(KeyboardInterrupt):
        evaluate(cfg)
    assert not (out / "report.json").exists() and not (out / "report.html").exists()
    cached = list((out / ".cache").rglob("*.bin"))
    assert cached  # features survived
    monkeypatch.setattr(evaluate_mod, "frozen_feature_bound", real)
    mtimes = {p: p.stat().st_mtime_ns for p in cached}
    rep = evaluate(cfg)
    assert (out / "report.json").exists() and rep.layers
    # the rerun reused the cached features instead of recomputing them
    assert {p: p.stat().st_mtime_ns for p in cached} == mtimes


def test_list_layers_shapes():
    net = build_model("lenet", (1, 8, 8), 10)
    info = {i.name: i for i in list_layers(net, (1, 8, 8))}
    assert info["conv1"].output_shape == (6, 4, 4)
    assert info["head"].output_shape == (10,) and info["head"].n_params == 850


# --- CLI -----------------------------------------------------------------------------------
def test_cli_version_and_bad_input(capsys, mixture_ckpt, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and "clt-gen" in capsys.readouterr().out
    code = main(
        [
            "evaluate",
            str(mixture_ckpt),
            "--out",
            str(tmp_path),
            "--layers",
            "stemm",
            "--no-progress",
        ]
    )
    assert code == 2
    assert "did you mean 'stem'" in capsys.readouterr().err


def test_cli_evaluate_prints_table(capsys, mixture_ckpt, tmp_path):
    code = main(
        [
            "evaluate",
            str(mixture_ckpt),
            "--out",
            str(tmp_path / "o"),
            "--n-bootstrap",
            "20",
            "--no-progress",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "floor" in out and "validation_binomial" in out
    assert json.loads((tmp_path / "o" / "report.json").read_text())["config"]["n_bootstrap"] == 20


def test_cli_evaluates_bare_model_files(tmp_path, capsys):
    res = train(
        TrainConfig(arch="mlp", arch_kwargs={"width": 16, "depth": 1}, epochs=1, progress=False),
        tmp_path / "ck",
    )
    model = load_checkpoint(tmp_path / "ck").model
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    spec = json.dumps(
        {
            "arch": "mlp",
            "arch_kwargs": {"width": 16, "depth": 1},
            "input_shape": [1, 8, 8],
            "n_classes": 10,
        }
    )
    common = ["--data", "digits", "--n-bootstrap", "10", "--no-progress"]
    assert (
        main(
            [
                "evaluate",
                str(tmp_path / "weights.pt"),
                "--arch-spec",
                spec,
                "--out",
                str(tmp_path / "e1"),
                *common,
            ]
        )
        == 0
    )
    rep = json.loads((tmp_path / "e1" / "report.json").read_text())
    assert rep["risks"]["check_error"] == pytest.approx(1 - res.metrics["check_accuracy"])
    # a fully pickled model: refused by default, evaluated with the explicit opt-in
    torch.save(model, tmp_path / "full.pt")
    capsys.readouterr()
    assert (
        main(["evaluate", str(tmp_path / "full.pt"), "--out", str(tmp_path / "e2"), *common]) == 2
    )
    assert "--trust-pickle" in capsys.readouterr().err
    assert not (tmp_path / "e2" / "report.json").exists()
    assert (
        main(
            [
                "evaluate",
                str(tmp_path / "full.pt"),
                "--trust-pickle",
                "--out",
                str(tmp_path / "e2"),
                *common,
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "e2" / "report.json").read_text())["data"]["n_classes"] == 10
    assert (
        main(
            ["layers", str(tmp_path / "full.pt"), "--trust-pickle", "--input-shape", "1", "8", "8"]
        )
        == 0
    )
    assert "body.1" in capsys.readouterr().out


def test_config_names_are_checked_before_any_work(tmp_path):
    with pytest.raises(ValidationError, match="did you mean 'knn'"):
        EvaluateConfig(checkpoint=str(tmp_path / "missing"), out=str(tmp_path), method="knnn")
    with pytest.raises(ValidationError, match="did you mean 'shannon'"):
        EvaluateConfig(checkpoint=str(tmp_path / "missing"), out=str(tmp_path), omega="shanon")
    with pytest.raises(ValidationError, match="did you mean 'logistic'"):
        EvaluateConfig(checkpoint="x", out=str(tmp_path), heads=("logistc",))


def test_measures_and_evaluation_restore_each_module_mode():
    from clt_gen.measures import margin, pacbayes_flatness
    from clt_gen.training import evaluate_split

    net = torch.nn.Sequential(
        torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(), torch.nn.Linear(8, 3)
    )
    net.train()
    net[1].eval()  # a frozen BatchNorm inside a training model
    x, y = torch.randn(32, 4), torch.randint(0, 3, (32,))
    before = [m.training for m in net.modules()]
    margin(net, x, y)
    pacbayes_flatness(net, x, y, n_draws=1)
    evaluate_split(net, x, y, get_regularizer("shannon"), 0.0, torch.device("cpu"))
    assert [m.training for m in net.modules()] == before


def test_terminal_and_plot_tables_say_which_numbers_are_estimates():
    from clt_gen.render import summary_table
    from clt_gen.report import Report, example_report_dict

    d = Report.from_dict(example_report_dict()).to_dict()
    d["bounds"] = [
        {**d["bounds"][0], "name": "risk_lower_entropy", "kind": "estimate", "delta": None},
        {**d["bounds"][0], "name": "validation_binomial", "kind": "probabilistic", "delta": 0.05},
    ]
    rows = {line.split()[0]: line for line in summary_table(d).splitlines()}
    assert rows["bound"].split()[1] == "kind"
    assert rows["risk_lower_entropy"].split()[1] == "estimate"
    assert "cert δ=0.05" in rows["validation_binomial"]


def _row(name: str, raw_ci: tuple[float, float], flags: tuple[str, ...] = ()) -> object:
    from clt_gen.report import EntropyEstimate, LayerRow

    mid = sum(raw_ci) / 2
    est = EntropyEstimate(mid, raw_ci, 0.1, "auto", raw=mid, raw_ci=raw_ci, from_layer=name)
    return LayerRow(name=name, n_features=4, H_train=est, H_heldout=est, flags=flags)


def test_raw_order_flag_skips_earlier_upper_estimates() -> None:
    """A later layer below an earlier *upper* estimate is what that estimate's bias makes.

    It is flagged against an earlier debiased estimate, and an upper estimate is still
    checked as the later layer.
    """
    from clt_gen.profiles import _order_flags

    a, b = (0.6, 0.9), (0.1, 0.3)
    up = ("upper_estimate",)
    flagged = _order_flags([_row("a", a), _row("b", b)], raw=True)  # type: ignore[list-item]
    assert "raw_order_violation" in flagged[1].flags
    skipped = _order_flags([_row("a", a, up), _row("b", b)], raw=True)  # type: ignore[list-item]
    assert "raw_order_violation" not in skipped[1].flags
    later = _order_flags([_row("a", a), _row("b", b, up)], raw=True)  # type: ignore[list-item]
    assert "raw_order_violation" in later[1].flags

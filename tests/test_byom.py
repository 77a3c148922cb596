"""Bring your own model: evaluate(model, train, test), streaming passes, layers, the CLI."""

from __future__ import annotations

import dataclasses
import json
import sys
import textwrap
import time
import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

import clt_gen
from clt_gen.cli import main
from clt_gen.errors import DataError, ValidationError
from clt_gen.report import Report, load_report
from clt_gen.sources import as_source, split_rows
from clt_gen.streaming import stream_pass

FAST = {"n_bootstrap": 20, "heads": ("logistic",), "cells": (2, 4), "progress": False}


class ResidualCNN(nn.Module):
    """A small CNN with BatchNorm and a functional residual add (not a module output)."""

    def __init__(self, n_classes: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.head = nn.Linear(8, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        h = torch.relu(h + self.bn(self.conv(h)))
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(h, 1), 1))


class DictOut(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        s = self.body(x)
        return {"logits": s, "aux": s.sum(1)}


def _images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    x = torch.rand(n, 1, 8, 8, generator=g) * 0.5
    x[:, 0, :, :3] += (y == 0)[:, None, None] * 0.6
    x[:, 0, :3, :] += (y == 1)[:, None, None] * 0.6
    return x, y


def _vectors(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    x = torch.randn(n, 6, generator=g)
    x[:, 0] += 2 * y
    return x, y


@pytest.fixture(scope="module")
def cnn():
    torch.manual_seed(0)
    net = ResidualCNN()
    x, y = _images(400, 0)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(30):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    return net.eval()


def test_evaluate_custom_cnn_returns_typed_report(cnn, tmp_path):
    rep = clt_gen.evaluate(cnn, _images(400, 0), _images(200, 1), **FAST)
    assert isinstance(rep, Report)
    assert [r.name for r in rep.layers] == ["input", "stem", "conv", "bn", "head"]
    assert rep.config["layers_default"] is True
    assert rep.data["n_certify"] + rep.data["n_check"] == 200
    assert rep.data["split"]["how"] == "stratified"
    assert rep.floor.value <= rep.risks.train
    assert rep.risks.check_error < 0.5  # the network learned the task
    # round trip through JSON and the files
    assert Report.from_dict(json.loads(rep.to_json())) == Report.from_dict(rep.to_dict())
    rep.save(tmp_path / "r")
    assert load_report(tmp_path / "r").risks == rep.risks
    assert (tmp_path / "r" / "report.html").read_text().startswith("<!DOCTYPE html>")
    assert "<table>" in rep._repr_html_()
    frame = rep.layers_frame()
    assert list(frame.index) == [r.name for r in rep.layers]
    assert frame.loc["head", "H_heldout"] == pytest.approx(rep.layers[-1].H_heldout.value)
    assert set(rep.bounds_frame()["kind"]) == {"deterministic", "probabilistic", "estimate"}


def test_graph_node_layers_read_the_residual_add(cnn):
    layers = clt_gen.list_layers(cnn, torch.zeros(2, 1, 8, 8), graph=True)
    nodes = {i.name: i for i in layers if i.kind == "graph node"}
    assert "add" in nodes and nodes["add"].output_shape == (8, 8, 8)
    rep = clt_gen.evaluate(
        cnn, _images(300, 0), _images(200, 1), layers=["add", "flatten", "head"], **FAST
    )
    assert [r.name for r in rep.layers] == ["add", "flatten", "head"]
    assert rep.layers[1].n_features == 8
    # graph features equal what a hand-written forward computes
    src = as_source(_images(50, 2), name="test", batch_size=16)
    res = stream_pass(cnn, src, layers=["flatten"], reduce="flatten", progress=False)
    x = _images(50, 2)[0]
    with torch.no_grad():
        h = cnn.stem(x)
        h = torch.relu(h + cnn.bn(cnn.conv(h)))
        ref = torch.flatten(nn.functional.adaptive_avg_pool2d(h, 1), 1)
    np.testing.assert_allclose(res.features["flatten"], ref.numpy(), rtol=1e-5, atol=1e-6)


def test_mixed_and_unknown_layer_names(cnn):
    with pytest.raises(ValidationError, match="mix module names"):
        clt_gen.evaluate(cnn, _images(100, 0), _images(100, 1), layers=["stem", "add"], **FAST)
    with pytest.raises(ValidationError, match="did you mean 'stem'"):
        clt_gen.evaluate(cnn, _images(100, 0), _images(100, 1), layers=["stemm"], **FAST)


def test_same_numbers_from_tensors_dataset_and_dataloader(cnn):
    train, test = _images(300, 0), _images(200, 1)
    a = clt_gen.evaluate(cnn, train, test, **FAST)
    b = clt_gen.evaluate(cnn, TensorDataset(*train), TensorDataset(*test), batch_size=7, **FAST)
    c = clt_gen.evaluate(
        cnn,
        DataLoader(TensorDataset(*train), batch_size=33),
        DataLoader(TensorDataset(*test), batch_size=64),
        **FAST,
    )
    for other in (b, c):
        np.testing.assert_allclose(
            list(dataclasses.asdict(other.risks).values()),
            list(dataclasses.asdict(a.risks).values()),
            rtol=1e-6,
        )
        assert [r.H_heldout.value for r in other.layers] == pytest.approx(
            [r.H_heldout.value for r in a.layers], rel=1e-5
        )
        assert [x.value for x in other.bounds] == pytest.approx(
            [x.value for x in a.bounds], rel=1e-5
        )


def test_output_selection():
    torch.manual_seed(0)
    net = DictOut()
    train, test = _vectors(200, 0), _vectors(200, 1)
    with pytest.raises(ValidationError, match="pass output="):
        clt_gen.evaluate(net, train, test, **FAST)
    by_key = clt_gen.evaluate(net, train, test, output="logits", **FAST)
    by_fn = clt_gen.evaluate(net, train, test, output=lambda o: o["logits"], **FAST)
    assert by_key.risks == by_fn.risks
    with pytest.raises(ValidationError, match="does not select anything"):
        clt_gen.evaluate(net, train, test, output="scores", **FAST)


def test_bad_input_is_named_before_any_pass(cnn):
    train, test = _images(100, 0), _images(100, 1)
    with pytest.raises(DataError, match=r"labels must be class indices in 0\.\.2"):
        clt_gen.evaluate(cnn, train, (test[0], test[1] + 5), **FAST)
    with pytest.raises(DataError, match=r"shape \(1, 9, 9\).*1 input channels|rejected"):
        clt_gen.evaluate(cnn, train, (torch.rand(100, 3, 9, 9), test[1]), **FAST)
    with pytest.raises(DataError, match="empty"):
        clt_gen.evaluate(cnn, train, (torch.zeros(0, 1, 8, 8), torch.zeros(0).long()), **FAST)
    with pytest.raises(DataError, match="1-d integer tensor"):
        clt_gen.evaluate(cnn, train, (test[0], test[1].float()), **FAST)
    with pytest.raises(DataError, match="at least 20"):
        clt_gen.evaluate(cnn, train, _images(30, 1), **FAST)
    with pytest.raises(ValidationError, match="Dataset, a DataLoader or a pair"):
        clt_gen.evaluate(cnn, train, "test.npz", **FAST)
    with pytest.raises(ValidationError, match="method"):
        clt_gen.evaluate(cnn, train, test, method="knnn", **FAST)


def test_more_outputs_than_label_classes_warns():
    net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 5))
    with pytest.warns(UserWarning, match=r"5 outputs but the labels use only classes 0\.\.2"):
        rep = clt_gen.evaluate(net, _vectors(200, 0), _vectors(100, 1), **FAST)
    assert rep.risks.check_error is not None


def test_bad_input_shape_message_names_shapes():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(144, 3))
    with pytest.raises(DataError) as exc:
        clt_gen.evaluate(net, _images(100, 0), _images(100, 1), **FAST)
    assert "(1, 8, 8)" in str(exc.value) and "3 input channels" in str(exc.value)


def test_heldout_loader_that_shuffles_or_drops_warns():
    x, y = _vectors(100, 0)
    with pytest.warns(UserWarning, match="fixed split"):
        as_source(DataLoader(TensorDataset(x, y), shuffle=True), name="test", heldout=True)
    with pytest.warns(UserWarning, match="fixed split"):
        as_source(
            DataLoader(TensorDataset(x, y), batch_size=30, drop_last=True),
            name="test",
            heldout=True,
        )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        src = as_source(DataLoader(TensorDataset(x, y), batch_size=30), name="t", heldout=True)
    assert src.ordered and src.n_rows == 100


class _DictDataset(Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {"image": self.x[i], "label": self.y[i]}


def test_dict_batches_and_explicit_check_part():
    net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    train, test, check = _vectors(200, 0), _vectors(100, 1), _vectors(100, 2)
    rep = clt_gen.evaluate(net, _DictDataset(*train), test, check=check, **FAST)
    assert rep.data["split"]["how"] == "given"
    assert rep.data["n_certify"] == 100 and rep.data["n_check"] == 100


def test_split_rows_is_stratified_seeded_and_exact():
    y = np.repeat([0, 1, 2], [50, 30, 20])
    cert, check = split_rows(100, y, check_fraction=0.5, random_state=3)
    assert len(check) == 50 and len(np.intersect1d(cert, check)) == 0
    assert np.bincount(y[check]).tolist() == [25, 15, 10]
    again = split_rows(100, y, check_fraction=0.5, random_state=3)
    assert np.array_equal(again[1], check)
    assert not np.array_equal(split_rows(100, y, check_fraction=0.5, random_state=4)[1], check)


def test_stream_pass_cache_resumes_after_interruption(tmp_path):
    net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    x, y = _vectors(100, 0)
    src = as_source((x, y), name="train", batch_size=10)
    kw = {"layers": ["0", "2"], "progress": False, "cache_dir": tmp_path, "digests": True}
    ref = stream_pass(net, src, **kw, cache_parts={"model": "ref"})

    calls = {"n": 0}

    class Flaky(nn.Module):
        def __init__(self, fail_at):
            super().__init__()
            self.inner, self.fail_at = net, fail_at

        def forward(self, t):
            calls["n"] += 1
            if calls["n"] == self.fail_at:
                raise KeyboardInterrupt
            return self.inner(t)

    import clt_gen.streaming as streaming

    kw2 = {**kw, "layers": ["inner.0", "inner.2"]}
    old = streaming.time.monotonic
    ticks = iter(range(0, 10**6, 10))  # every batch looks 10 s later: commit each batch
    streaming.time.monotonic = lambda: next(ticks)
    try:
        with pytest.raises(KeyboardInterrupt):
            stream_pass(Flaky(7), src, **kw2, cache_parts={"model": "x"})
        calls["n"] = 0
        out = stream_pass(Flaky(-1), src, **kw2, cache_parts={"model": "x"})
    finally:
        streaming.time.monotonic = old
    assert calls["n"] == 4  # only batches 7-10 ran again
    np.testing.assert_array_equal(out.scores, ref.scores)
    np.testing.assert_array_equal(out.features["inner.2"], ref.features["2"])
    np.testing.assert_array_equal(out.digests, ref.digests)


def _write_module(tmp_path, monkeypatch) -> str:
    (tmp_path / "my_models.py").write_text(
        textwrap.dedent(
            """
            import torch
            from torch import nn

            def small_cnn(n_classes=3):
                return nn.Sequential(
                    nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                    nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, n_classes))
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("my_models", None)
    return "my_models:small_cnn"


def test_cli_model_factory_weights_and_npz_match_python(tmp_path, monkeypatch, capsys):
    spec = _write_module(tmp_path, monkeypatch)
    from my_models import small_cnn  # type: ignore[import-not-found]

    torch.manual_seed(0)
    net = small_cnn()
    from safetensors.torch import save_file

    save_file(net.state_dict(), str(tmp_path / "w.safetensors"))
    train, test = _images(200, 0), _images(120, 1)
    np.savez(
        tmp_path / "d.npz",
        x_train=train[0].numpy(),
        y_train=train[1].numpy(),
        x_test=test[0].numpy(),
        y_test=test[1].numpy(),
    )
    args = ["evaluate", "--model", spec, "--weights", str(tmp_path / "w.safetensors")]
    args += ["--data", f"npz:{tmp_path / 'd.npz'}", "--out", str(tmp_path / "o")]
    args += ["--n-bootstrap", "20", "--heads", "logistic", "--no-progress"]
    assert main(args) == 0
    cli = load_report(tmp_path / "o")
    py = clt_gen.evaluate(net, train, test, n_bootstrap=20, heads=("logistic",), progress=False)
    assert cli.risks == py.risks
    assert [r.H_heldout.value for r in cli.layers] == [r.H_heldout.value for r in py.layers]
    assert [b.value for b in cli.bounds] == [b.value for b in py.bounds]
    # a factory string that does not import, and weights that do not fit
    assert main([*args[:2], "nope_pkg.models:f", *args[3:]]) == 2
    assert "does not import" in capsys.readouterr().err
    torch.save(nn.Linear(2, 2).state_dict(), tmp_path / "bad.pt")
    assert main([*args[:4], str(tmp_path / "bad.pt"), *args[5:]]) == 2
    assert "missing keys" in capsys.readouterr().err


def test_cli_torchvision_model_and_imagefolder(tmp_path, capsys):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 30), ("test", 24)):
        for c in range(2):
            d = tmp_path / "imgs" / split / f"class{c}"
            d.mkdir(parents=True)
            for i in range(n):
                arr = (rng.random((32, 32, 3)) * 120 + 100 * c).astype(np.uint8)
                Image.fromarray(arr).save(d / f"{i}.png")
    args = ["evaluate", "--model", "torchvision:resnet18", "--model-kwargs", '{"num_classes": 2}']
    args += ["--data", f"imagefolder:{tmp_path / 'imgs'}", "--transform", "normalize"]
    args += ["--layers", "layer1", "layer4", "fc", "--out", str(tmp_path / "o")]
    args += ["--n-bootstrap", "10", "--heads", "logistic", "--no-progress"]
    assert main(args) == 0, capsys.readouterr().err
    rep = load_report(tmp_path / "o")
    assert [r.name for r in rep.layers] == ["layer1", "layer4", "fc"]
    assert rep.data["n_train"] == 60 and rep.data["n_certify"] + rep.data["n_check"] == 48
    assert rep.model["arch"] == "ResNet"


def test_checkpoint_cli_and_python_agree(tmp_path):
    """The CLI on a saved checkpoint and evaluate(model, pairs) on the same split agree."""
    from clt_gen.checkpoints import load_checkpoint
    from clt_gen.data import DataConfig, load_dataset, make_splits
    from clt_gen.training import TrainConfig, train

    cfg = TrainConfig(
        arch="lenet",
        dataset="fashion-mnist",
        data_dir=str(_fake_fashion(tmp_path)),
        epochs=2,
        progress=False,
    )
    train(cfg, tmp_path / "ck")
    assert (
        main(
            [
                "evaluate",
                str(tmp_path / "ck"),
                "--out",
                str(tmp_path / "o"),
                "--n-bootstrap",
                "20",
                "--heads",
                "logistic",
                "--no-progress",
            ]
        )
        == 0
    )
    cli = load_report(tmp_path / "o")
    ck = load_checkpoint(tmp_path / "ck")
    splits = make_splits(
        load_dataset("fashion-mnist", data_dir=cfg.data_dir), DataConfig(**ck.meta["data_config"])
    )
    py = clt_gen.evaluate(
        ck.model,
        (splits.x["train"], splits.y["train"]),
        (splits.x["certify"], splits.y["certify"]),
        check=(splits.x["check"], splits.y["check"]),
        n_bootstrap=20,
        heads=("logistic",),
        progress=False,
    )
    assert py.risks == cli.risks
    assert py.floor == cli.floor
    assert [r.to_dict() for r in py.layers] == [r.to_dict() for r in cli.layers]
    assert [b.value for b in py.bounds] == [b.value for b in cli.bounds]


def _fake_fashion(tmp_path):
    """Fashion-MNIST's IDX files (gzip), with few generated images."""
    import gzip
    import struct

    root = tmp_path / "fmnist"
    root.mkdir()
    rng = np.random.default_rng(0)
    for stem, n in (("train", 500), ("t10k", 200)):
        y = rng.integers(0, 10, n).astype(np.uint8)
        x = (rng.random((n, 28, 28)) * 80).astype(np.uint8)
        for c in range(10):
            x[y == c, c * 2 : c * 2 + 4, :] = 250
        with gzip.open(root / f"{stem}-images-idx3-ubyte.gz", "wb") as f:
            f.write(struct.pack(">IIII", 2051, n, 28, 28) + x.tobytes())
        with gzip.open(root / f"{stem}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(struct.pack(">II", 2049, n) + y.tobytes())
    return root


@pytest.mark.parametrize("commit_every", [0.0, 1e9])
def test_killed_pass_resumes_from_committed_rows_only(tmp_path, commit_every):
    """A kill leaves rows written after the last commit (or before any): a rerun drops them."""
    net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    x, y = _vectors(100, 0)
    src = as_source((x, y), name="train", batch_size=10)
    keep = np.arange(0, 100, 3)
    kw = {"layers": ["0"], "progress": False, "keep": keep, "digests": True, "probe_rows": 5}
    ref = stream_pass(net, src, **kw)
    calls = {"n": 0}

    class Flaky(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = net

        def forward(self, t):
            calls["n"] += 1
            if calls["n"] == 7:
                raise KeyboardInterrupt
            return self.inner(t)

    kw2 = {**kw, "layers": ["inner.0"], "cache_dir": tmp_path, "cache_parts": {"m": 1}}
    with pytest.raises(KeyboardInterrupt):
        stream_pass(Flaky(), src, **kw2, commit_every=commit_every)
    (root,) = tmp_path.glob("pass-*")
    for path in root.glob("*.bin"):  # what a writer killed mid-batch leaves behind
        with open(path, "ab") as fh:
            fh.write(b"\x07" * 24)
    calls["n"] = -100
    out = stream_pass(Flaky(), src, **kw2, commit_every=commit_every)
    np.testing.assert_array_equal(out.labels, ref.labels)
    np.testing.assert_array_equal(out.scores, ref.scores)
    np.testing.assert_array_equal(out.kept, ref.kept)
    np.testing.assert_array_equal(out.features["inner.0"], ref.features["0"])
    np.testing.assert_array_equal(out.digests, ref.digests)
    again = stream_pass(Flaky(), src, **kw2)
    assert again.from_cache and torch.equal(again.probe[0], ref.probe[0])
    np.testing.assert_array_equal(again.kept, ref.kept)


def test_damaged_cache_of_a_finished_pass_is_recomputed(tmp_path):
    net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    x, y = _vectors(100, 0)
    src = as_source((x, y), name="train", batch_size=10)
    kw = {"layers": ["0"], "progress": False, "cache_dir": tmp_path, "cache_parts": {"m": 1}}
    ref = stream_pass(net, src, **kw)
    (root,) = tmp_path.glob("pass-*")
    feats = next(p for p in root.glob("*.bin") if "f:0" in p.name)
    with open(feats, "r+b") as fh:  # a file cut short (disk full, an edit)
        fh.truncate(feats.stat().st_size // 2)
    with pytest.warns(UserWarning, match="recomputing this pass"):
        out = stream_pass(net, src, **kw)
    assert not out.from_cache
    np.testing.assert_array_equal(out.features["0"], ref.features["0"])
    np.testing.assert_array_equal(out.labels, ref.labels)
    assert stream_pass(net, src, **kw).from_cache


def test_two_passes_on_one_cache_do_not_interleave(tmp_path):
    import threading

    net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    x, y = _vectors(100, 0)
    src = as_source((x, y), name="train", batch_size=10)
    ref = stream_pass(net, src, layers=["0"], progress=False)
    started = threading.Event()

    class Slow(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = net

        def forward(self, t):
            started.set()
            time.sleep(0.02)
            return self.inner(t)

    kw = {"layers": ["inner.0"], "progress": False, "cache_dir": tmp_path, "cache_parts": {"m": 1}}
    out = {}
    first = threading.Thread(target=lambda: out.setdefault("a", stream_pass(Slow(), src, **kw)))
    first.start()
    started.wait(10)
    second = stream_pass(Slow(), src, **kw)  # starts while the first pass is writing
    first.join()
    assert second.from_cache and not out["a"].from_cache
    for res in (out["a"], second):
        np.testing.assert_array_equal(res.features["inner.0"], ref.features["0"])
        np.testing.assert_array_equal(res.labels, ref.labels)

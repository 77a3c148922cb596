"""Data, architectures, safe checkpoints and the trainer."""

from __future__ import annotations

import gzip
import json
import pickle
import struct

import numpy as np
import pytest
import torch

from clt_gen.checkpoints import load_checkpoint, save_checkpoint
from clt_gen.data import DataConfig, augment_batch, load_dataset, make_splits
from clt_gen.errors import CheckpointError, DataError, ValidationError
from clt_gen.models import architecture_names, build_model
from clt_gen.training import TrainConfig, TrainingDivergedError, train

TINY = {
    "mlp": {"width": 8, "depth": 1},
    "lenet": {},
    "model-a": {"k": 2, "w": 8},
    "model-b": {"k": 2, "w": 8},
    "model-c": {"k": 1, "w": 4},
    "model-d": {"k": 1, "w": 4},
    "resnet18": {"norm": "layernorm"},
    "vit": {"hidden_dim": 16, "num_layers": 1, "num_heads": 2, "mlp_dim": 16},
}


@pytest.mark.parametrize("arch", architecture_names())
def test_every_architecture_trains_a_step_on_cpu(arch):
    torch.manual_seed(0)
    shape = (1, 8, 8)
    net = build_model(arch, shape, 4, **TINY[arch])
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    x, y = torch.rand(4, *shape), torch.tensor([0, 1, 2, 3])
    before = [p.detach().clone() for p in net.parameters()]
    loss = torch.nn.functional.cross_entropy(net(x), y)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))


def test_resnet18_batchnorm_and_unknown_arch():
    net = build_model("resnet18", (3, 8, 8), 5, norm="batchnorm")
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    with pytest.raises(ValidationError, match="did you mean 'lenet'"):
        build_model("lenett", (1, 8, 8), 3)
    with pytest.raises(ValidationError, match=r"needs image inputs of shape \(C, H, W\)"):
        build_model("lenet", (64,), 3)


# --- checkpoints -------------------------------------------------------------------------
def _meta():
    return {
        "arch": "model-b",
        "arch_kwargs": {"k": 1, "w": 8},
        "input_shape": [1, 8, 8],
        "n_classes": 3,
    }


def test_save_load_gives_identical_outputs(tmp_path):
    torch.manual_seed(0)
    net = build_model("model-b", (1, 8, 8), 3, k=1, w=8).eval()
    digest = save_checkpoint(tmp_path / "ck", net, _meta())
    ck = load_checkpoint(tmp_path / "ck")
    x = torch.rand(5, 1, 8, 8)
    assert torch.equal(ck.model(x), net(x))
    assert ck.sha256 == digest == ck.meta["weights_sha256"]
    assert not ck.model.training


def test_hash_mismatch_and_truncation_are_detected(tmp_path):
    net = build_model("model-b", (1, 8, 8), 3, k=1, w=8)
    save_checkpoint(tmp_path / "ck", net, _meta())
    w = tmp_path / "ck" / "model.safetensors"
    data = w.read_bytes()
    w.write_bytes(data[:-7] + b"\x00" * 7)
    with pytest.raises(CheckpointError, match="does not match meta.json"):
        load_checkpoint(tmp_path / "ck")
    w.write_bytes(data[: len(data) // 2])
    meta = json.loads((tmp_path / "ck" / "meta.json").read_text())
    meta.pop("weights_sha256")
    (tmp_path / "ck" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="records no weights_sha256"):
        load_checkpoint(tmp_path / "ck")
    with pytest.raises(CheckpointError, match="corrupted or truncated"):
        load_checkpoint(tmp_path / "ck", allow_unverified=True)


def test_unverified_weights_are_refused_unless_opted_in(tmp_path):
    net = build_model("model-b", (1, 8, 8), 3, k=1, w=8)
    save_checkpoint(tmp_path / "ck", net, _meta())
    meta_path = tmp_path / "ck" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta.pop("weights_sha256")
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="allow_unverified"):
        load_checkpoint(tmp_path / "ck")
    ck = load_checkpoint(tmp_path / "ck", allow_unverified=True)
    assert ck.verified is False
    save_checkpoint(tmp_path / "ok", net, _meta())
    assert load_checkpoint(tmp_path / "ok").verified is True


@pytest.mark.parametrize("bad", ["[1, 2]", '"text"', "null"])
def test_meta_json_that_is_not_an_object_is_named(tmp_path, bad):
    net = build_model("model-b", (1, 8, 8), 3, k=1, w=8)
    save_checkpoint(tmp_path / "ck", net, _meta())
    (tmp_path / "ck" / "meta.json").write_text(bad)
    with pytest.raises(CheckpointError, match="must hold a JSON object"):
        load_checkpoint(tmp_path / "ck")


def test_nonfinite_weights_are_caught_at_load_naming_the_tensor(tmp_path):
    net = build_model("model-b", (1, 8, 8), 3, k=1, w=8)
    with torch.no_grad():
        next(iter(net.parameters()))[0].fill_(float("nan"))
    save_checkpoint(tmp_path / "ck", net, _meta())
    name = next(iter(net.state_dict()))
    with pytest.raises(CheckpointError, match=f"tensor '{name}' holds"):
        load_checkpoint(tmp_path / "ck")


def test_state_dict_file_needs_arch_and_matching_names(tmp_path):
    net = build_model("model-b", (1, 8, 8), 3, k=1, w=8)
    torch.save(net.state_dict(), tmp_path / "w.pt")
    with pytest.raises(CheckpointError, match="pass arch="):
        load_checkpoint(tmp_path / "w.pt")
    ck = load_checkpoint(tmp_path / "w.pt", arch=_meta())
    x = torch.rand(2, 1, 8, 8)
    assert torch.equal(ck.model(x), net.eval()(x))
    wrong = {**_meta(), "arch_kwargs": {"k": 2, "w": 8}}
    with pytest.raises(CheckpointError, match=r"missing \['blocks.1"):
        load_checkpoint(tmp_path / "w.pt", arch=wrong)


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_does_nothing_by_default(tmp_path):
    marker = tmp_path / "pwned"
    with open(tmp_path / "evil.pt", "wb") as fh:
        pickle.dump({"weight": _Exploit(marker)}, fh)
    with pytest.raises(CheckpointError, match="trust_pickle=True"):
        load_checkpoint(tmp_path / "evil.pt", arch=_meta())
    assert not marker.exists()


def test_trusted_pickled_model_loads_only_with_opt_in(tmp_path):
    net = build_model("mlp", (4,), 2, width=4, depth=1)
    torch.save(net, tmp_path / "full.pt")
    with pytest.raises(CheckpointError, match="trust_pickle"):
        load_checkpoint(tmp_path / "full.pt")
    ck = load_checkpoint(tmp_path / "full.pt", trust_pickle=True)
    assert torch.equal(ck.model(torch.ones(1, 4)), net.eval()(torch.ones(1, 4)))


# --- data ----------------------------------------------------------------------------------
def _write_idx(path, arr):
    header = struct.pack(">BBBB", 0, 0, 0x08, arr.ndim) + struct.pack(
        ">" + "I" * arr.ndim, *arr.shape
    )
    with gzip.open(path, "wb") as fh:
        fh.write(header + arr.astype(np.uint8).tobytes())


def _fake_idx_dir(root, n=40):
    gen = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    _write_idx(root / "train-images-idx3-ubyte.gz", gen.integers(0, 256, (n, 28, 28)))
    _write_idx(root / "train-labels-idx1-ubyte.gz", gen.integers(0, 10, n))
    _write_idx(root / "t10k-images-idx3-ubyte.gz", gen.integers(0, 256, (n // 2, 28, 28)))
    _write_idx(root / "t10k-labels-idx1-ubyte.gz", gen.integers(0, 10, n // 2))


def test_idx_datasets_from_a_directory(tmp_path):
    _fake_idx_dir(tmp_path / "MNIST" / "raw")
    ds = load_dataset("mnist", data_dir=tmp_path)
    assert ds.x_train.shape == (40, 1, 28, 28) and ds.x_test.shape == (20, 1, 28, 28)
    assert 0 <= ds.x_train.min() and ds.x_train.max() <= 1
    _fake_idx_dir(tmp_path / "fm")
    assert load_dataset("fashion-mnist", data_dir=tmp_path / "fm").y_train.shape == (40,)


def test_missing_data_errors_say_how_to_get_it(tmp_path):
    with pytest.raises(DataError, match="apt-get install -y dataset-fashion-mnist"):
        load_dataset("fashion-mnist", data_dir=tmp_path)
    with pytest.raises(DataError, match="needs --data-dir"):
        load_dataset("cifar10")
    with pytest.raises(ValidationError, match="did you mean 'digits'"):
        load_dataset("digit")


def test_truncated_idx_file_is_reported(tmp_path):
    _fake_idx_dir(tmp_path)
    p = tmp_path / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(p.read_bytes())
    p.write_bytes(gzip.compress(raw[:-100]))
    with pytest.raises(DataError, match="truncated"):
        load_dataset("fashion-mnist", data_dir=tmp_path)


def test_cifar_batches_load_without_running_code(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    gen = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(root / name, "wb") as fh:
            pickle.dump(
                {
                    "data": gen.integers(0, 256, (4, 3072), dtype=np.uint8),
                    "labels": list(gen.integers(0, 10, 4)),
                },
                fh,
            )
    ds = load_dataset("cifar10", data_dir=tmp_path)
    assert ds.x_train.shape == (20, 3, 32, 32) and ds.n_classes == 10
    marker = tmp_path / "pwned"
    with open(root / "test_batch", "wb") as fh:
        pickle.dump({"data": _Exploit(marker), "labels": []}, fh)
    with pytest.raises(DataError, match="refusing to unpickle"):
        load_dataset("cifar10", data_dir=tmp_path)
    assert not marker.exists()


def test_transforms_are_seeded_and_duplicates_conflict():
    ds = load_dataset("mixture", n_samples=300, n_features=4, n_classes=3)
    cfg = DataConfig(duplicate_fraction=0.2, label_noise=0.1, random_state=3, val_fraction=0.0)
    a, b = make_splits(ds, cfg), make_splits(ds, cfg)
    assert a.fingerprint() == b.fingerprint()
    assert make_splits(ds, DataConfig(random_state=4)).fingerprint() != a.fingerprint()
    x, y = a.x["train"].numpy(), a.y["train"].numpy()
    assert len(y) == 360
    _, inv, counts = np.unique(x, axis=0, return_inverse=True, return_counts=True)
    dup_groups = np.flatnonzero(counts > 1)
    assert len(dup_groups) >= 50
    conflicting = sum(len(set(y[inv.ravel() == g])) > 1 for g in dup_groups)
    assert conflicting >= 0.8 * len(dup_groups)


def test_augmentation_keeps_shape_and_moves_pixels():
    x = torch.zeros(6, 1, 8, 8)
    x[:, :, 3:5, 3:5] = 1.0
    out = augment_batch(x, torch.Generator().manual_seed(0), flip=True)
    assert out.shape == x.shape
    assert torch.allclose(out.sum((1, 2, 3)), x.sum((1, 2, 3)))
    assert not torch.equal(out, x)


# --- trainer ----------------------------------------------------------------------------------
def _cfg(**kw):
    base = dict(
        arch="mlp",
        arch_kwargs={"width": 16, "depth": 1},
        dataset="mixture",
        dataset_params={"n_samples": 400, "n_features": 6, "n_classes": 3},
        epochs=2,
        batch_size=32,
        lr=0.05,
        progress=False,
    )
    return TrainConfig(**{**base, **kw})


def test_training_is_deterministic_on_cpu_and_records_metrics(tmp_path):
    r1 = train(_cfg(), tmp_path / "a")
    r2 = train(_cfg(), tmp_path / "b")
    assert r1.meta["weights_sha256"] == r2.meta["weights_sha256"]
    lines = (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(s)["epoch"] for s in lines] == [1, 2]
    assert "check_accuracy" in r1.metrics and r1.metrics["check_accuracy"] > 0.6
    ck = load_checkpoint(tmp_path / "a")
    assert ck.meta["metrics"]["check_accuracy"] == r1.metrics["check_accuracy"]


@pytest.mark.parametrize("omega", ["squared", "sparsemax", "tsallis"])
def test_training_with_other_fenchel_young_losses(tmp_path, omega):
    r = train(_cfg(omega=omega, epochs=3), tmp_path / omega)
    assert r.metrics["check_accuracy"] > 0.5


def test_two_phase_freezes_all_but_last_layer(tmp_path):
    class Snap:
        first = None

        def on_epoch_end(self, state):
            self.first = state.model.body[1].weight.detach().clone()

        def on_step(self, state):
            pass

    snap = Snap()
    train(_cfg(two_phase=0.5), tmp_path / "tp", callbacks=[snap])
    text = (tmp_path / "tp" / "metrics.jsonl").read_text()
    phases = [json.loads(s)["phase"] for s in text.splitlines()]
    assert phases == ["phase1", "phase1", "phase2", "phase2"]
    final = load_checkpoint(tmp_path / "tp").model
    assert torch.equal(final.body[1].weight, snap.first)  # unchanged during phase 2


def test_divergence_keeps_last_good_checkpoint(tmp_path):
    with pytest.raises(TrainingDivergedError, match="last good weights") as info:
        train(_cfg(lr=1e30, omega="squared", epochs=3, schedule="constant"), tmp_path / "nan")
    assert "at step" in str(info.value) and "last finite loss" in str(info.value)
    # a training failure, not a bad argument
    assert not isinstance(info.value, ValidationError)
    ck = load_checkpoint(tmp_path / "nan")
    assert ck.meta["status"] == "diverged"
    assert all(torch.isfinite(p).all() for p in ck.model.parameters())


def test_bad_config_values_are_named():
    with pytest.raises(ValidationError, match="epochs must be an int >= 1"):
        TrainConfig(epochs=0)
    with pytest.raises(ValidationError, match="label_smoothing must be in"):
        TrainConfig(label_smoothing=1.5)
    with pytest.raises(ValidationError, match="did you mean 'shannon'"):
        TrainConfig(omega="shanon")

"""The trainer's images/s against a bare PyTorch loop over the same model and data.

Both train LeNet for one epoch on the same in-memory tensors (Fashion-MNIST when the
Debian package is installed, else a synthetic 28×28 set of the same size), batch 64,
SGD with momentum, in the same process.

    python benchmarks/train_speed.py [--n-samples 20000]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch
from _common import save

from clt_gen.data import DataConfig, Dataset, load_dataset, make_splits
from clt_gen.errors import DataError
from clt_gen.models import build_model
from clt_gen.training import TrainConfig, train


def bare_loop(x: torch.Tensor, y: torch.Tensor, batch: int, seed: int) -> float:
    torch.manual_seed(seed)
    model = build_model("lenet", tuple(x.shape[1:]), 10)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(y), generator=gen)
    t0 = time.perf_counter()
    model.train()
    for i in range(0, len(y), batch):
        idx = perm[i : i + batch]
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return len(y) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-samples", type=int, default=20_000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    try:
        ds = load_dataset("fashion-mnist")
        source = "fashion-mnist"
    except DataError:
        gen = torch.Generator().manual_seed(0)
        x = torch.rand(args.n_samples + 2000, 1, 28, 28, generator=gen)
        y = torch.randint(0, 10, (len(x),), generator=gen)
        ds = Dataset(
            "synthetic", x[: args.n_samples], y[: args.n_samples], x[-2000:], y[-2000:], 10
        )
        source = "synthetic"
    splits = make_splits(ds, DataConfig(subset=args.n_samples, val_fraction=0.0, random_state=0))
    x, y = splits.x["train"], splits.y["train"]
    cfg = TrainConfig(
        arch="lenet",
        epochs=1,
        batch_size=64,
        lr=0.01,
        schedule="constant",
        progress=False,
        device="cpu" if not torch.cuda.is_available() else "auto",
    )
    rows = []
    for r in range(args.repeats):
        bare = bare_loop(x, y, 64, seed=r)
        with tempfile.TemporaryDirectory() as d:
            train(cfg, d + "/run", splits=splits)
            rec = json.loads(open(d + "/run/metrics.jsonl").readline())
        ours = rec["images_per_s"]
        row = {
            "repeat": r,
            "data": source,
            "n_samples": len(y),
            "trainer_images_per_s": ours,
            "bare_images_per_s": bare,
            "ratio": ours / bare,
        }
        rows.append(row)
        print(json.dumps(row))
    save("train_speed", rows)


if __name__ == "__main__":
    main()

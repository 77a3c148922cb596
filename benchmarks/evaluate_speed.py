"""Feature extraction against a plain inference pass, and a full ``clt-gen evaluate``.

(1) ``extract_features`` over all default layers (``project`` and ``avgpool``) against a
    plain no-grad forward pass over the same data and batch size, same process.
(2) ``evaluate`` of a LeNet checkpoint on Fashion-MNIST (trained here for one epoch when
    none is given): wall time and peak memory, on all cores (the default) and then in
    one process (``n_jobs=1``), same command; the two reports must agree.

    python benchmarks/evaluate_speed.py [--checkpoint DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from functools import partial

import torch
from _common import best_of, peak_rss_mb, save

from clt_gen.checkpoints import load_checkpoint
from clt_gen.data import DataConfig, load_dataset, make_splits
from clt_gen.evaluation import EvaluateConfig, evaluate
from clt_gen.features import INPUT_LAYER, default_layers
from clt_gen.streaming import extract_features
from clt_gen.training import TrainConfig, train


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", default=None)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp()
    ckpt = args.checkpoint
    if ckpt is None:
        ckpt = tmp + "/lenet"
        train(TrainConfig(arch="lenet", dataset="fashion-mnist", epochs=1, progress=False), ckpt)
    model = load_checkpoint(ckpt).model
    ds = load_dataset("fashion-mnist")
    x = make_splits(ds, DataConfig()).x["train"]
    blocks = default_layers(model, (1, 28, 28))
    batch = 1024

    def plain() -> None:
        with torch.no_grad():
            for i in range(0, len(x), batch):
                model(x[i : i + batch])

    rows = []
    for layers in ([INPUT_LAYER, *blocks], blocks):
        for reduce in ("project", "avgpool"):
            t_plain = best_of(plain)
            t_feat = best_of(
                partial(
                    extract_features,
                    model,
                    x,
                    layers=layers,
                    reduce=reduce,
                    max_features=128,
                    batch_size=batch,
                    progress=False,
                )
            )
            row = {
                "what": f"extract_features[{reduce}]",
                "n_samples": len(x),
                "layers": layers,
                "batch_size": batch,
                "plain_s": t_plain,
                "features_s": t_feat,
                "ratio": t_feat / t_plain,
            }
            rows.append(row)
            print(json.dumps(row))
    # all cores first (it pays the workers' start and this process's first-run costs),
    # then one process; separate outputs, so neither reuses the other's feature cache
    reports = {}
    for n_jobs in (None, 1):
        t0 = time.perf_counter()
        out = f"{tmp}/eval-jobs{n_jobs}"
        rep = evaluate(EvaluateConfig(checkpoint=ckpt, out=out, progress=False, n_jobs=n_jobs))
        total = time.perf_counter() - t0
        reports[n_jobs] = rep
        row = {
            "what": "evaluate lenet fashion-mnist",
            "n_jobs": n_jobs or "all cores",
            "seconds": total,
            "timings": dict(rep.timings),
            "n_train": rep.data["n_train"],
            "n_heldout": rep.data["n_certify"] + rep.data["n_check"],
            "peak_rss_mb": peak_rss_mb(),
        }
        rows.append(row)
        print(json.dumps(row))
    same = [r.to_dict() for r in reports[None].layers] == [r.to_dict() for r in reports[1].layers]
    rows.append({"what": "same layers for n_jobs=all and 1", "equal": same})
    print(json.dumps(rows[-1]))
    save("evaluate_speed", rows)


if __name__ == "__main__":
    main()

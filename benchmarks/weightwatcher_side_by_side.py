"""What WeightWatcher (weights only) and clt_gen (weights + data) report for the same models.

Two LeNets trained on Fashion-MNIST (10k training examples, seed 0): one on clean labels,
one with half the training labels replaced at random (a memorizing network). WeightWatcher
analyses each model's weight matrices; clt_gen evaluates each on its data. Writes
``docs/results/weightwatcher_side_by_side.md``.

    pip install weightwatcher          # not a clt_gen dependency
    python benchmarks/weightwatcher_side_by_side.py [--subset 10000] [--epochs 8]
"""

from __future__ import annotations

import argparse
import logging
import pathlib
import time

import numpy as np

import clt_gen
from clt_gen.checkpoints import atomic_write_text
from clt_gen.data import DataConfig, load_dataset, make_splits
from clt_gen.training import TrainConfig, train

ROOT = pathlib.Path(__file__).resolve().parents[1]


def weightwatcher_row(model) -> dict[str, float]:
    import weightwatcher as ww

    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    watcher = ww.WeightWatcher(model=model)
    details = watcher.analyze()
    alphas = details["alpha"].to_numpy(dtype=float)
    return {
        "ww_alpha_mean": float(np.nanmean(alphas)),
        "ww_alphas": [round(float(a), 2) for a in alphas],
        "ww_layers": int(len(details)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subset", type=int, default=10_000)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--out", default="runs/ww_side_by_side")
    args = ap.parse_args()
    rows = []
    for name, noise in (("clean labels", 0.0), ("50% random labels", 0.5)):
        cfg = TrainConfig(
            arch="lenet",
            dataset="fashion-mnist",
            data=DataConfig(subset=args.subset, random_labels=noise, random_state=0),
            epochs=args.epochs,
            optimizer="adamw",
            lr=2e-3,
            random_state=0,
            progress=False,
        )
        ck_dir = pathlib.Path(args.out) / name.split()[0].replace("%", "pct")
        if not (ck_dir / "ckpt" / "meta.json").exists():
            train(cfg, ck_dir / "ckpt")
        ck = clt_gen.load_checkpoint(ck_dir / "ckpt")
        t0 = time.perf_counter()
        w = weightwatcher_row(ck.model)
        t_ww = time.perf_counter() - t0
        splits = make_splits(load_dataset("fashion-mnist"), DataConfig(**ck.meta["data_config"]))
        t0 = time.perf_counter()
        rep = clt_gen.evaluate(
            ck.model,
            (splits.x["train"], splits.y["train"]),
            (splits.x["certify"], splits.y["certify"]),
            check=(splits.x["check"], splits.y["check"]),
            progress=False,
        )
        t_clt = time.perf_counter() - t0
        best = rep.best_error_certificate()
        last = rep.layers[-1]
        rows.append(
            {
                "model": name,
                **w,
                "ww_seconds": t_ww,
                "train_error": rep.risks.train_error,
                "check_error": rep.risks.check_error,
                "gap": rep.risks.gap,
                "floor": rep.floor.value,
                "H_logits_est": last.H_heldout.value,
                "U_star": last.H_upper.profile if last.H_upper else float("nan"),
                "best_error_cert": best.value if best else float("nan"),
                "best_error_cert_name": best.name if best else "",
                "certs_held": f"{sum(bool(b.held) for b in rep.certificates())}/"
                f"{len(rep.certificates())}",
                "clt_seconds": t_clt,
            }
        )
        print(rows[-1])
    write(rows, args)


def write(rows: list[dict], args: argparse.Namespace) -> None:
    lines = [
        f"Produced by `python benchmarks/weightwatcher_side_by_side.py --subset {args.subset} "
        f"--epochs {args.epochs}` (seed 0; LeNet, AdamW lr 2e-3, Fashion-MNIST; 2-core CPU).",
        "",
        "| | clean labels | 50% random labels |",
        "|---|---|---|",
    ]
    spec = [
        ("WeightWatcher: mean layer alpha (data-free)", "ww_alpha_mean", "{:.2f}"),
        ("WeightWatcher: per-layer alpha", "ww_alphas", "{}"),
        ("clt_gen: train error (measured)", "train_error", "{:.2%}"),
        ("clt_gen: check error (measured, held out)", "check_error", "{:.2%}"),
        ("clt_gen: risk gap check − train (nats)", "gap", "{:+.3f}"),
        ("clt_gen: data floor (certificate, exact)", "floor", "{:.3f}"),
        ("clt_gen: H(Y|logits) on held-out data (estimate)", "H_logits_est", "{:.3f}"),
        ("clt_gen: certified upper bound U* on H(Y|logits)", "U_star", "{:.3f}"),
        ("clt_gen: tightest certificate on the test error (δ=0.05)", "best_error_cert", "{:.2%}"),
        ("clt_gen: certificates that held on the check split", "certs_held", "{}"),
        ("seconds: WeightWatcher / clt_gen", None, None),
    ]
    for label, key, fmt in spec:
        if key is None:
            cells = [f"{r['ww_seconds']:.1f} / {r['clt_seconds']:.1f}" for r in rows]
        else:
            cells = [fmt.format(r[key]) for r in rows]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "WeightWatcher's exponents describe the weights and need no data; they do not say "
        "what error to expect on held-out data, or how sure to be. clt_gen's certificates "
        "are checked against error measured on examples they did not use.",
    ]
    out = ROOT / "docs" / "results" / "weightwatcher_side_by_side.md"
    atomic_write_text(out, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

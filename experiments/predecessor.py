"""Reproduce the experiments of Qi–Gong–Li (predecessor paper, Sec. 5) with clt_gen.

1. Training dynamics: log fitting error ``log ‖e‖²`` against its bounds
   ``log ‖∇ℓ‖² + U`` (upper) and ``log ‖∇ℓ‖² + L`` (lower) over steps, and their local
   Pearson correlation (window 50), for models a–d with depth k.
2. At initialization: ``U``, ``L``, ``G`` against depth, with and without skips.
3. Shannon (cross-entropy) against squared (MSE) loss for LeNet.

Protocol (paper): 1 epoch, batch 64, SGD lr 0.01 momentum 0.9, He initialization.
On a CPU the default trains on a seeded subset of the training set; ``--subset 0`` uses
all of it. Writes ``OUT/predecessor.json`` and PNG plots.

    python experiments/predecessor.py --data fashion-mnist --out docs/results --seed 0
    python experiments/predecessor.py --data mnist --data-dir /path/to/torchvision/root
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import numpy as np
import torch

from clt_gen._io import atomic_write_bytes, atomic_write_text
from clt_gen.data import DataConfig, load_dataset, make_splits
from clt_gen.models import build_model
from clt_gen.render import png_bytes
from clt_gen.trainability import TrainabilityProbe, local_pearson, structure_spectrum
from clt_gen.training import TrainConfig, train

MODELS = ("model-a", "model-b", "model-c", "model-d")
WIDTH = {"model-a": 64, "model-b": 64, "model-c": 16, "model-d": 16}


def init_structure(splits, depths, n_probe: int, seed: int) -> list[dict]:
    x = splits.x["train"][:n_probe]
    rows = []
    for arch in MODELS:
        for k in depths:
            torch.manual_seed(seed)
            net = build_model(arch, tuple(x.shape[1:]), splits.n_classes, k=k, w=WIDTH[arch])
            spec = structure_spectrum(net, x)
            rows.append(
                {
                    "arch": arch,
                    "k": k,
                    "n_params": sum(p.numel() for p in net.parameters()),
                    "U": float(spec.U.mean()),
                    "L": float(spec.L.mean()),
                    "G": float(spec.G.mean()),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def dynamics(
    splits,
    arch: str,
    k: int | None,
    omega: str,
    probe_every: int,
    n_probe: int,
    seed: int,
    out: pathlib.Path,
) -> dict:
    x_p, y_p = splits.x["train"][:n_probe], splits.y["train"][:n_probe]
    probe = TrainabilityProbe(x_p, y_p, every=probe_every, omega=omega)
    kw = {"k": k, "w": WIDTH[arch]} if k is not None else {}
    cfg = TrainConfig(
        arch=arch,
        arch_kwargs=kw,
        dataset=splits.dataset,
        omega=omega,
        epochs=1,
        batch_size=64,
        lr=0.01,
        momentum=0.9,
        optimizer="sgd",
        schedule="constant",
        seed=seed,
        progress=False,
    )
    t0 = time.perf_counter()
    res = train(cfg, out / f"ckpt-{arch}-k{k}-{omega}", callbacks=[probe], splits=splits)
    recs = probe.records
    fe = [r["log_fitting_error"] for r in recs]
    up = [r["log_upper"] for r in recs]
    lo = [r["log_lower"] for r in recs]
    win = min(50, max(2, len(recs) // 2))
    return {
        "arch": arch,
        "k": k,
        "omega": omega,
        "steps": [r["probe_step"] for r in recs],
        "log_fitting_error": fe,
        "log_upper": up,
        "log_lower": lo,
        "U": [r["U"] for r in recs],
        "L": [r["L"] for r in recs],
        "G": [r["G"] for r in recs],
        "pearson_upper": local_pearson(fe, up, window=win),
        "pearson_lower": local_pearson(fe, lo, window=win),
        "window": win,
        "sandwich_fraction_held": float(np.mean([r["sandwich_fraction_held"] for r in recs])),
        "check_accuracy": res.metrics["check_accuracy"],
        "seconds": time.perf_counter() - t0,
    }


def plots(result: dict, out: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    init = result["init"]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    for ax, key in zip(axes, ("U", "L", "G"), strict=True):
        for arch in MODELS:
            rows = [r for r in init if r["arch"] == arch]
            ax.plot([r["k"] for r in rows], [r[key] for r in rows], "o-", label=arch)
        ax.set_xlabel("depth k")
        ax.set_title(f"{key} at initialization")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    atomic_write_bytes(out / "predecessor_init_ULG.png", png_bytes(fig, dpi=110))
    plt.close(fig)

    dyn = result["dynamics"]
    for arch in MODELS:
        runs = [d for d in dyn if d["arch"] == arch]
        if not runs:
            continue
        fig, axes = plt.subplots(2, len(runs), figsize=(3.2 * len(runs), 5.2), squeeze=False)
        for j, d in enumerate(runs):
            ax = axes[0, j]
            ax.plot(d["steps"], d["log_fitting_error"], label="log ‖e‖²", color="k")
            ax.plot(d["steps"], d["log_upper"], label="upper", color="#d62728", lw=0.8)
            ax.plot(d["steps"], d["log_lower"], label="lower", color="#1f77b4", lw=0.8)
            ax.set_title(f"{arch} k={d['k']}", fontsize=9)
            ax2 = axes[1, j]
            pu = [np.nan if v is None else v for v in d["pearson_upper"]]
            pl = [np.nan if v is None else v for v in d["pearson_lower"]]
            ax2.plot(d["steps"], pu, color="#d62728", label="with upper")
            ax2.plot(d["steps"], pl, color="#1f77b4", label="with lower")
            ax2.set_ylim(-1.05, 1.05)
            ax2.set_xlabel("step")
        axes[0, 0].legend(fontsize=7)
        axes[1, 0].legend(fontsize=7)
        axes[1, 0].set_ylabel(f"local Pearson (window {runs[0]['window']})")
        fig.tight_layout()
        atomic_write_bytes(out / f"predecessor_dynamics_{arch}.png", png_bytes(fig, dpi=100))
        plt.close(fig)

    losses = result["losses"]
    if losses:
        fig, axes = plt.subplots(1, len(losses), figsize=(4.5 * len(losses), 3.2), squeeze=False)
        for ax, d in zip(axes[0], losses, strict=True):
            ax.plot(d["steps"], d["log_fitting_error"], color="k", label="log ‖e‖²")
            ax.plot(d["steps"], d["log_upper"], color="#d62728", lw=0.8, label="upper")
            ax.plot(d["steps"], d["log_lower"], color="#1f77b4", lw=0.8, label="lower")
            ax.set_title(f"LeNet, {d['omega']} (check acc {d['check_accuracy']:.3f})", fontsize=9)
            ax.set_xlabel("step")
        axes[0, 0].legend(fontsize=7)
        fig.tight_layout()
        atomic_write_bytes(out / "predecessor_lenet_losses.png", png_bytes(fig, dpi=110))
        plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default="docs/results")
    ap.add_argument("--subset", type=int, default=12_800, help="training examples (0: all)")
    ap.add_argument("--depths", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5])
    ap.add_argument("--probe-every", type=int, default=2)
    ap.add_argument("--n-probe", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--runs-dir", default="runs/predecessor", help="checkpoints of the runs")
    args = ap.parse_args()
    runs = pathlib.Path(args.runs_dir)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ds = load_dataset(args.data, data_dir=args.data_dir)
    splits = make_splits(
        ds, DataConfig(subset=args.subset or None, val_fraction=0.0, random_state=args.seed)
    )
    result = {
        "config": vars(args),
        "init": init_structure(splits, args.depths, 64, args.seed),
        "dynamics": [],
        "losses": [],
    }
    for arch in MODELS:
        for k in args.depths:
            d = dynamics(
                splits, arch, k, "shannon", args.probe_every, args.n_probe, args.seed, runs
            )
            result["dynamics"].append(d)
            print(
                json.dumps(
                    {
                        key: d[key]
                        for key in (
                            "arch",
                            "k",
                            "check_accuracy",
                            "seconds",
                            "sandwich_fraction_held",
                        )
                    }
                ),
                flush=True,
            )
    for omega in ("shannon", "squared"):
        result["losses"].append(
            dynamics(splits, "lenet", None, omega, args.probe_every, args.n_probe, args.seed, runs)
        )
    atomic_write_text((out / "predecessor.json"), json.dumps(result))
    plots(result, out)
    print(f"wrote {out}/predecessor.json and plots")


if __name__ == "__main__":
    main()

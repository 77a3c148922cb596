"""Learning curves of the head family on the battery's hardest tasks (issue 11's open targets).

The certified bound's slack and the ``auto`` estimate's bias are the selected head's excess
risk ``E D(p, q)`` (THEORY §5.1). This script measures that excess directly, for each head
family and for two cheap combinations (an average of three MLPs with different seeds, and
the equal mixture of the logistic and MLP heads), as the number of fitting examples grows.
Each head is fitted on ``0.8 n`` rows, early-stopped / selected on the other ``0.2 n``, and
scored (log loss, nats) on 10,000 further rows of the same task; the truth is the task's
exact ``H(Y|Z)``, so every number is ``E[−log q_Y] − H(Y|Z) >= 0`` up to sampling noise.

Tasks: the two with the largest bias in the battery (``fmnist-pca32 mlp K=10`` and
``GM K=10 d=32 invnet``) and a control where the heads are well specified
(``fmnist-pca32 linear K=10``). They are built exactly as in
``benchmarks/estimators_accuracy.py`` (Fashion-MNIST from Debian's
``dataset-fashion-mnist``).

    python benchmarks/head_learning_curves.py                   # seeds 0 and 1, ~4 min
    python benchmarks/head_learning_curves.py --seeds 0 1 2 --sizes 2000 8000 32000
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import numpy as np

from clt_gen._io import atomic_write_text

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import estimators_accuracy as battery  # noqa: E402

from estimators.heads import HEADS  # noqa: E402

OUT = pathlib.Path(__file__).parent / "results" / "head_learning_curves.json"
TASKS = ("fmnist-pca32 mlp K=10", "GM K=10 d=32 invnet", "fmnist-pca32 linear K=10")


def _heads(z, y, zv, yv, k):
    """Every head of interest fitted on (z, y), early-stopped or selected on (zv, yv)."""
    mlps = [HEADS["mlp"](z, y, k, random_state=s, z_val=zv, y_val=yv, record={}) for s in range(3)]
    logistic = HEADS["logistic"](z, y, k, random_state=0, C=1.0)
    out = {
        "logistic": logistic,
        "gaussian (shared, quantile)": HEADS["gaussian"](
            z, y, k, random_state=0, covariance="shared", features="quantile"
        ),
        "knn (k=30)": HEADS["knn"](z, y, k, random_state=0, n_neighbors=30),
        "mlp": mlps[0],
        "mlp tanh, wd 1e-3": HEADS["mlp"](
            z, y, k, random_state=0, z_val=zv, y_val=yv, activation="tanh", weight_decay=1e-3
        ),
    }

    def average(preds):
        return lambda a: np.log(np.mean([np.exp(p(a)) for p in preds], axis=0))

    out["3 mlps averaged"] = average(mlps)
    out["logistic + mlp mixed"] = average([logistic, mlps[0]])
    return out


def curve(task, seed: int, sizes: list[int]) -> list[dict]:
    truth = task.truth("shannon")
    z, y = task.draw(max(sizes) + 10_000, np.random.default_rng(seed))
    test = np.arange(len(y) - 10_000, len(y))
    rows = []
    for n in sizes:
        fit, val = np.arange(int(0.8 * n)), np.arange(int(0.8 * n), n)
        t0 = time.perf_counter()
        heads = _heads(z[fit], y[fit], z[val], y[val], task.n_classes)
        for name, predict in heads.items():
            logq = predict(z[test])
            excess = float(-logq[np.arange(len(test)), y[test]].mean()) - truth
            rows.append({"task": task.name, "seed": seed, "n": n, "head": name, "excess": excess})
        print(f"{task.name}  seed {seed}  n {n}: {time.perf_counter() - t0:.1f} s", flush=True)
    return rows


def table(rows: list[dict]) -> str:
    """Mean excess over seeds, one block per task: heads down, sizes across."""
    lines = []
    for task in dict.fromkeys(r["task"] for r in rows):
        sub = [r for r in rows if r["task"] == task]
        sizes = sorted({r["n"] for r in sub})
        lines += [f"\n**{task}** (excess log loss, nats; mean over seeds)\n"]
        lines += ["| head | " + " | ".join(f"n = {n:,}" for n in sizes) + " |"]
        lines += ["|---|" + "---|" * len(sizes)]
        for head in dict.fromkeys(r["head"] for r in sub):
            vals = [
                np.mean([r["excess"] for r in sub if r["head"] == head and r["n"] == n])
                for n in sizes
            ]
            lines += [f"| {head} | " + " | ".join(f"{v:.3f}" for v in vals) + " |"]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--sizes", type=int, nargs="+", default=[2000, 5000, 10_000, 20_000])
    args = ap.parse_args()
    pixels = battery._fashion_pixels()
    pools = {"fmnist-pca32": battery._pca(pixels, 32)}
    tasks = {t.name: t for t in battery.mixture_tasks() + battery.teacher_tasks(pools)}
    rows = [r for name in TASKS for s in args.seeds for r in curve(tasks[name], s, args.sizes)]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(
        OUT, json.dumps({"seeds": args.seeds, "sizes": args.sizes, "rows": rows}, indent=1)
    )
    print(table(rows))


if __name__ == "__main__":
    main()

"""``auto`` and the certified bound on tasks of issue 11's families that the battery lacks.

The battery (``estimators_accuracy.py``) has fixed ``(K, d)`` pairs, one warp per kind,
tanh teachers and PCA-32 features; the head family and its gates were developed on it.
This script is the check against tuning to those tasks: the same four families with
other class counts, dimensions, warps, teacher nonlinearities and feature pools, none of
which any change was tuned on:

* ``mixture``: Gaussian mixtures ``K=5 d=16`` and ``K=3 d=48`` (``battery._means``,
  task seeds 7 and 8);
* ``warped``: the ``K=5 d=16`` mixture through the cubic warp, through a compressive
  bijection ``sign(u) log(1 + 2|u|)`` of rotated coordinates ``u`` (``log1p``), and
  through ``sinh`` mixed (``battery._mixed_sinh``, seed 5); the ``K=3 d=48`` mixture
  through a random invertible leaky-ReLU network (slope 0.3, ``default_rng(911)``);
* ``teacher``: Fashion-MNIST PCA-16 and PCA-64 features with a linear teacher
  (``K = 5``), PCA-32 features with a ReLU-MLP teacher (``K = 5``, 48 units), and the
  network's penultimate features with a linear teacher (``K = 4``), all with teacher
  seeds the battery does not use;
* ``independent``: labels independent of 128-d PCA features (``K = 5``, ``n = 1000``,
  ``d = n/8``) and of 1,000-d Gaussian noise (``K = 2``, ``n = 2000``, ``d = n/2``).

Runs: ``n = 10k`` (``independent``: as above), seeds 0-29 on the tasks with a coverage
target in issue 11 (mixtures, warped mixtures, linear teachers) and 0-9 on the others
(sample ``default_rng(seed)``, ``random_state=seed``), ``omega`` in shannon and
squared; each run records the ``auto`` estimate, its 95% interval and the certified bound
at ``delta = 0.05`` from one cross-fit (``estimate_and_bound``). Rows are cached one per line in
``benchmarks/results/heldout_family.jsonl`` (a rerun resumes), then a table is printed.

    python benchmarks/heldout_family.py                   # ~50 min on one core
    python benchmarks/heldout_family.py --shard 0/2 &     # two processes share the cache
    python benchmarks/heldout_family.py --report          # the table from the cache
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time
from collections import defaultdict

import numpy as np
from scipy.special import logsumexp
from tqdm import tqdm

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import estimators_accuracy as battery  # noqa: E402
from _common import load_jsonl, my_share  # noqa: E402

from estimators import generalized_entropy  # noqa: E402
from estimators.certified import estimate_and_bound  # noqa: E402

OUT = pathlib.Path(__file__).parent / "results" / "heldout_family.jsonl"
N = 10_000
SEEDS = range(10)
# 30 seeds where issue 11 sets a coverage target (10 seeds measure a 95% coverage only to
# about +-7%): mixtures, warped mixtures and linear teachers
COVERAGE_SEEDS = range(30)
DELTA = 0.05


def _log1p_warp(d: int, seed: int):
    rot = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))[0]
    return lambda z: np.sign(z @ rot) * np.log1p(np.abs(z @ rot) * 2.0)


def _mixture(k: int, d: int, task_seed: int, warp=None, name: str = ""):
    means = battery._means(k, d, task_seed)
    memo: dict[str, float] = {}

    def truth(omega: str) -> float:
        if omega not in memo:
            memo[omega] = battery._mixture_truth(means, omega)
        return memo[omega]

    def draw(n: int, gen: np.random.Generator):
        y = gen.integers(0, k, n)
        z = means[y] + gen.normal(size=(n, d))
        return (warp(z) if warp is not None else z), y

    family = "warped" if warp is not None else "mixture"
    label = f"GM K={k} d={d}" + (f" {name}" if name else "")
    return battery.Task(family, label, k, d, draw, truth)


def _teacher_task(pool: np.ndarray, pool_name: str, k: int, kind: str, seed: int):
    gen = np.random.default_rng(3_000 + seed)
    d = pool.shape[1]
    if kind == "linear":
        logits = pool @ gen.normal(size=(d, k)) * (2.0 / np.sqrt(d))
    else:  # a ReLU teacher: 48 units, biases, a different nonlinearity from the battery's
        h = np.maximum(pool @ gen.normal(size=(d, 48)) / np.sqrt(d) + gen.normal(size=48), 0)
        logits = h @ gen.normal(size=(48, k)) * (2.5 / np.sqrt(48))
    post = np.exp(logits - logsumexp(logits, 1, keepdims=True))

    def draw(n: int, g: np.random.Generator):
        idx = g.integers(0, len(pool), n)
        return pool[idx], battery._sample_labels(post[idx], g)

    def truth(omega: str) -> float:
        return float(generalized_entropy(post, omega=omega).mean())

    return battery.Task("teacher", f"{pool_name} {kind} K={k}", k, d, draw, truth)


def _independent(pool: np.ndarray | None, name: str, k: int, d: int, n: int):
    def draw(m: int, g: np.random.Generator):
        z = pool[g.integers(0, len(pool), m)] if pool is not None else g.normal(size=(m, d))
        return z.astype(np.float64), g.integers(0, k, m)

    def truth(omega: str) -> float:
        return float(generalized_entropy(np.full(k, 1.0 / k), omega=omega))

    return battery.Task("independent", f"{name} K={k}", k, d, draw, truth), n


def tasks() -> list[tuple[battery.Task, int]]:
    pixels = battery._fashion_pixels()
    pca = {d: battery._pca(pixels, d) for d in (16, 32, 64, 128)}
    net = battery._penultimate(pixels)
    cubic = lambda z: z + 0.4 * z**3  # noqa: E731
    out = [
        (_mixture(5, 16, 7), N),
        (_mixture(3, 48, 8), N),
        (_mixture(5, 16, 7, cubic, "cubic"), N),
        (_mixture(5, 16, 7, _log1p_warp(16, 913), "log1p"), N),
        (_mixture(5, 16, 7, battery._mixed_sinh(16, 5), "mixsinh"), N),
        (_mixture(3, 48, 8, battery._invertible_net(48, 411, slope=0.3), "invnet"), N),
        (_teacher_task(pca[16], "fmnist-pca16", 5, "linear", 1), N),
        (_teacher_task(pca[64], "fmnist-pca64", 5, "linear", 2), N),
        (_teacher_task(pca[32], "fmnist-pca32", 5, "relu", 3), N),
        (_teacher_task(net, "fmnist-net", 4, "linear", 4), N),
        _independent(pca[128], "pca128", 5, 128, 1000),
        _independent(None, "gauss1000", 2, 1000, 2000),
    ]
    return out


def _coverage_target(task: battery.Task) -> bool:
    return task.family in ("mixture", "warped") or " linear " in task.name


def run_one(task: battery.Task, n: int, omega: str, seed: int) -> dict:
    z, y = task.draw(n, np.random.default_rng(seed))
    truth = task.truth(omega)
    t0 = time.perf_counter()
    est, ub, _ = estimate_and_bound(
        z, y, omega=omega, delta=DELTA, random_state=seed, n_classes=task.n_classes
    )
    return {
        "family": task.family, "task": task.name, "n_samples": n, "n_features": z.shape[1],
        "omega": omega, "seed": seed, "truth": truth, "value": est.value,
        "ci": list(est.ci),
        "bound": ub.value, "bound_missed": bool(ub.value < truth),
        "heads": [h["name"] + ("/" + str(h.get("features")) if "features" in h else "")
                  for h in ub.heads],
        "seconds": time.perf_counter() - t0,
    }  # fmt: skip


TIE = 1e-12  # float rounding: an interval clipped to the cap H(uniform) meets that truth


def covered(r: dict) -> bool:
    """The 95% interval contains the truth (to float rounding at the boundary)."""
    return bool(r["ci"][0] - TIE <= r["truth"] <= r["ci"][1] + TIE)


def report(rows: list[dict]) -> str:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["family"], r["task"], r["n_samples"], r["omega"])].append(r)
    lines = [
        "| family | task | n | omega | seeds | truth | auto bias | RMSE | 95% coverage "
        "| certified misses | mean slack | heads |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (fam, task, n, omega), rs in sorted(groups.items()):
        e = np.array([r["value"] - r["truth"] for r in rs])
        heads = sorted({h for r in rs for h in r["heads"]})
        lines.append(
            f"| {fam} | {task} | {n:,} | {omega} | {len(rs)} | {rs[0]['truth']:.3f} "
            f"| {e.mean():+.3f} | {np.sqrt((e**2).mean()):.3f} "
            f"| {100 * np.mean([covered(r) for r in rs]):.0f}% "
            f"| {sum(r['bound_missed'] for r in rs)} of {len(rs)} "
            f"| {np.mean([r['bound'] - r['truth'] for r in rs]):.3f} | {', '.join(heads)} |"
        )
    miss = sum(r["bound_missed"] for r in rows)
    low = min((r["value"] - r["truth"] for r in rows if r["family"] == "independent"),
              default=float("nan"))  # fmt: skip
    lines.append(
        f"\nCertified bound: {miss} misses in {len(rows)} runs. Independent labels: lowest "
        f"`auto` reading {low:+.3f} relative to the truth."
    )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shard", default="0/1", help="I/N: every N-th run from the I-th")
    ap.add_argument("--report", action="store_true", help="print the table from the cache")
    args = ap.parse_args()
    if not args.report:
        done = {(r["task"], r["n_samples"], r["omega"], r["seed"]) for r in load_jsonl(OUT)}
        jobs = [
            (task, n, omega, seed)
            for task, n in tasks()
            for omega in ("shannon", "squared")
            for seed in (COVERAGE_SEEDS if _coverage_target(task) else SEEDS)
        ]
        todo = my_share(jobs, args.shard, done, lambda j: (j[0].name, *j[1:]))
        OUT.parent.mkdir(parents=True, exist_ok=True)
        for task, n, omega, seed in tqdm(todo, desc="held-out family"):
            row = run_one(task, n, omega, seed)
            with open(OUT, "a") as fh:  # one complete line per run: a kill loses one row
                fh.write(json.dumps(row) + "\n")
    print(report(load_jsonl(OUT)))


if __name__ == "__main__":
    main()

"""Does a longer learning curve, or a fold-level variance, fix ``auto`` where it misses?

For each task and seed (``n = 10k``, the battery's tasks) this runs the ``auto`` cross-fit
by hand and, in each fold, refits the selected head on both halves (``A``, ``B``) and on the
four quarters of its fitting data. From the per-sample held-out terms it reports:

* ``plain``: the held-out score (what the certificate bounds);
* ``richardson``: ``2 S_n − S_A`` (what ``auto`` ships), and ``2 S_n − (S_A + S_B) / 2``;
* ``aitken``: three-point extrapolation ``S_n − Δ₁ r / (1 − r)`` with
  ``Δ₁ = S_{n/2} − S_n``, ``r = Δ₁ / (S_{n/4} − S_{n/2})`` (Aitken's Δ²: a power-law learning
  curve ``a + b n^{-c}`` with ``c`` estimated), falling back to Richardson when ``r ∉ (0, 1)``;
* the local ratio ``r`` itself (0.5 means an excess falling as ``1/n``);
* coverage of the bootstrap-free normal interval ``± 1.96 sd/√n`` with and without a
  random-effects widening estimated from the two folds' disagreement.

    python benchmarks/learning_curve_extrapolation.py            # 13 tasks x 10 seeds x 2 omegas
    python benchmarks/learning_curve_extrapolation.py --shard 0/2 & \
        python benchmarks/learning_curve_extrapolation.py --shard 1/2; wait
    python benchmarks/learning_curve_extrapolation.py --report   # the table from the cache

Per-run arrays are cached under ``$CLT_BENCH_CACHE/learning_curves`` (resumable).
"""

from __future__ import annotations

import argparse
import pathlib
import sys
from collections import defaultdict

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import estimators_accuracy as battery  # noqa: E402

from estimators.heads import make_folds, mixed_scores, select_head  # noqa: E402

CACHE = battery.CACHE / "learning_curves"
TASKS = (
    "GM K=2 d=8", "GM K=10 d=8", "GM K=2 d=32", "GM K=10 d=32", "GM K=2 d=8 cubic",
    "GM K=10 d=32 cubic", "GM K=10 d=32 invnet", "GM K=10 d=8 invnet",
    "fmnist-pca32 linear K=10", "fmnist-pca32 linear K=2", "fmnist-pca32 mlp K=10",
    "fmnist-net32 mlp K=10", "fmnist-pca32 mlp K=3",
)  # fmt: skip
PARTS = ("S", "A", "B", "A1", "A2", "B1", "B2")


def run(task, omega: str, seed: int, n: int = 10_000) -> dict[str, np.ndarray]:
    """Held-out terms of the full, half and quarter refits of each fold's selected head."""
    z, y = task.draw(n, np.random.default_rng(seed))
    gen = np.random.default_rng(1000 + seed)
    fold = make_folds(len(y), 2, gen)
    out = {p: np.empty(n) for p in PARTS}
    for f in range(2):
        ev, fit = fold == f, fold != f
        head = select_head(z[fit], y[fit], n_classes=task.n_classes, omega=omega, random_state=gen)

        def score(proba, _ev=ev):
            return mixed_scores(proba, y[_ev], omega=omega, alpha=1.5, eps=1e-3)

        out["S"][ev] = score(head.predict(z[ev]))
        idx = np.flatnonzero(fit)
        half = make_folds(len(idx), 2, gen)
        for name, sub in (("A", idx[half == 0]), ("B", idx[half == 1])):
            out[name][ev] = score(np.exp(head.refit(z[sub], y[sub])(z[ev])))
            quarter = make_folds(len(sub), 2, gen)
            for j in (0, 1):
                s2 = sub[quarter == j]
                out[f"{name}{j + 1}"][ev] = score(np.exp(head.refit(z[s2], y[s2])(z[ev])))
    out["fold"] = fold
    return out


def summarize(d: dict[str, np.ndarray], truth: float) -> dict[str, float]:
    s_terms, fold = d["S"], d["fold"]
    half = (d["A"] + d["B"]) / 2
    quarter = (d["A1"] + d["A2"] + d["B1"] + d["B2"]) / 4
    rich = 2 * s_terms - d["A"]
    s, h, q = s_terms.mean(), half.mean(), quarter.mean()
    d1, d2 = h - s, q - h
    r = d1 / d2 if d2 > 0 else np.nan
    aitken = s - d1 * r / (1 - r) if d1 > 0 and 0 < r < 1 else float((2 * s_terms - half).mean())
    n = len(rich)
    se2 = rich.var(ddof=1) / n
    t = [rich[fold == f].mean() for f in (0, 1)]
    v = [rich[fold == f].var(ddof=1) / (fold == f).sum() for f in (0, 1)]
    tau2 = max(0.0, ((t[0] - t[1]) ** 2 - v[0] - v[1]) / 2)
    err = rich.mean() - truth
    return {
        "plain": s - truth,
        "richardson": err,
        "richardson_both_halves": (2 * s_terms - half).mean() - truth,
        "aitken": aitken - truth,
        "r": r,
        "covered": float(abs(err) <= 1.96 * np.sqrt(se2)),
        "covered_widened": float(abs(err) <= 1.96 * np.sqrt(se2 + tau2 / 2)),
    }


def report() -> None:
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for fn in sorted(CACHE.glob("*.npz")):
        task, omega, _ = fn.stem.split("__")
        d = dict(np.load(fn))
        groups[(task.replace("_", " "), omega)].append(summarize(d, float(d["truth"])))
    print("| task | omega | seeds | plain | Richardson (shipped) | both halves | Aitken | "
          "median r | coverage | widened |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for (task, omega), rows in sorted(groups.items()):
        col = {k: np.array([r[k] for r in rows]) for k in rows[0]}

        def ms(k, _c=col):
            return f"{_c[k].mean():+.3f} ± {_c[k].std(ddof=1):.3f}"

        print(
            f"| {task} | {omega} | {len(rows)} | {col['plain'].mean():+.3f} | {ms('richardson')} "
            f"| {ms('richardson_both_halves')} | {ms('aitken')} | {np.nanmedian(col['r']):.2f} "
            f"| {100 * col['covered'].mean():.0f}% | {100 * col['covered_widened'].mean():.0f}% |"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shard", default="0/1", help="I/N: every N-th run from the I-th")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--report", action="store_true", help="only print the table")
    args = ap.parse_args()
    if not args.report:
        pixels = battery._fashion_pixels()
        pools = {
            "fmnist-pca32": battery._pca(pixels, 32),
            "fmnist-net32": battery._penultimate(pixels),
        }
        tasks = {t.name: t for t in battery.mixture_tasks() + battery.teacher_tasks(pools)}
        jobs = [(t, o, s) for t in TASKS for o in ("shannon", "squared") for s in range(args.seeds)]
        shard, n_shards = (int(v) for v in args.shard.split("/"))
        CACHE.mkdir(parents=True, exist_ok=True)
        with threadpool_limits(limits=1, user_api="blas"):
            for name, omega, seed in jobs[shard::n_shards]:
                path = CACHE / f"{name.replace(' ', '_')}__{omega}__{seed}.npz"
                if not path.exists():
                    out = run(tasks[name], omega, seed)
                    tmp = path.with_suffix(".tmp.npz")
                    np.savez(tmp, truth=tasks[name].truth(omega), **out)
                    tmp.replace(path)
                    print(name, omega, seed, flush=True)
    report()


if __name__ == "__main__":
    main()

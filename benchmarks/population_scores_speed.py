"""Speed of the population statistics at the size of the Fashion-MNIST population.

192 checkpoints, six two-valued hyperparameters, 24 predictors (the page's size). Times,
in one process on the same random data: the PGDL competition scorer as vectorized in
``clt_gen.population`` against the pair-by-pair loop it replaced (the baseline, written
out below; the two agree to 1e-12, ``tests/test_population.py``), and the other
statistics the page computes per predictor.

    python benchmarks/population_scores_speed.py
"""

from __future__ import annotations

import itertools
import platform
import time

import numpy as np

from clt_gen.population import (
    _entropy,
    _mutual_information,
    granulated_kendall,
    kendall_tau_interval,
    pgdl_score,
    robust_sign_agreement,
)


def pgdl_loop(m: np.ndarray, g: np.ndarray, hp: dict[str, list]) -> float:
    """The competition scorer, one ordered pair of checkpoints at a time (the baseline)."""
    n, best = len(m), None
    for h1, h2 in itertools.permutations(sorted(hp), 2):
        cells: dict[tuple, np.ndarray] = {}
        for i in range(n):
            for j in range(n):
                key = (hp[h1][i], hp[h2][i], hp[h1][j], hp[h2][j])
                cells.setdefault(key, np.zeros((2, 2)))[int(m[i] > m[j]), int(g[i] > g[j])] += 1
        cmi = np.mean([_mutual_information(t) for t in cells.values()])
        h = np.mean([_entropy(t.sum(0)) for t in cells.values()])
        v = cmi / h if h > 0 else 0.0
        best = v if best is None else min(best, v)
    return float(best)


def main() -> None:
    rng = np.random.default_rng(0)
    n, n_pred = 192, 24
    hp = {f"h{i}": rng.integers(0, 2, n).tolist() for i in range(6)}
    seed = {"seed": rng.integers(0, 3, n).tolist()}
    gap = rng.normal(size=n)
    preds = [gap + rng.normal(scale=s, size=n) for s in np.linspace(0.2, 3, n_pred)]
    t0 = time.perf_counter()
    loop = pgdl_loop(preds[0], gap, hp)
    t_loop = time.perf_counter() - t0
    t0 = time.perf_counter()
    fast = [pgdl_score(p, gap, hp)["value"] for p in preds]
    t_fast = (time.perf_counter() - t0) / n_pred
    assert abs(fast[0] - loop) < 1e-12
    t0 = time.perf_counter()
    for p in preds:
        kendall_tau_interval(p, gap, n_bootstrap=1000)
    t_tau = (time.perf_counter() - t0) / n_pred
    t0 = time.perf_counter()
    for p in preds:
        robust_sign_agreement(p, gap, hp, match_on=seed)
        granulated_kendall(p, gap, hp)
    t_rest = (time.perf_counter() - t0) / n_pred
    print(f"machine: {platform.machine()}, {platform.python_version()}")
    print(
        f"PGDL scorer per predictor: pair loop {t_loop:.2f} s, vectorized {t_fast:.3f} s "
        f"({t_loop / t_fast:.0f}x)"
    )
    print(f"tau + 1000-resample bootstrap per predictor: {t_tau:.3f} s")
    print(f"robust view + granulated Psi per predictor: {t_rest:.3f} s")


if __name__ == "__main__":
    main()

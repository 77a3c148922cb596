"""``auto`` on leaky-ReLU warps that the battery does not have (a check against tuning).

The battery's invertible-network tasks are ``K in {2, 10}``, ``d in {8, 32}``, two layers
of slope 0.2. This script draws Gaussian mixtures (``battery._means(k, d, 7)``) through
other random invertible leaky-ReLU networks: ``(K, d, slope, layers)`` in
``(5, 16, 0.2, 2)``, ``(5, 16, 0.5, 3)``, ``(3, 24, 0.1, 1)``, each layer an orthogonal
matrix times 1.5 (``default_rng(907)``), and prints the error of ``auto`` and of the
certified bound (``estimate_and_bound``, ``delta = 0.05``, shannon) against the exact
``H(Y|Z)`` at ``n = 10k``, seeds 0-2 (sample ``default_rng(seed)``,
``random_state=seed``). Run it with ``PYTHONPATH`` on an older commit's worktree to
compare code versions.

    python benchmarks/warp_variants.py          # about 1 min
"""

from __future__ import annotations

import pathlib
import sys
import warnings

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import estimators_accuracy as battery  # noqa: E402

from estimators.certified import estimate_and_bound  # noqa: E402

VARIANTS = ((5, 16, 0.2, 2), (5, 16, 0.5, 3), (3, 24, 0.1, 1))


def _draw(k: int, d: int, slope: float, layers: int):
    means = battery._means(k, d, 7)
    gen = np.random.default_rng(907)
    mats = [np.linalg.qr(gen.normal(size=(d, d)))[0] * 1.5 for _ in range(layers)]

    def draw(n: int, g: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        y = g.integers(0, k, n)
        z = means[y] + g.normal(size=(n, d))
        for m in mats:
            z = z @ m
            z = np.where(z > 0, z, slope * z)
        return z, y

    return means, draw


def main() -> None:
    warnings.simplefilter("ignore")
    print("| K | d | slope | layers | auto error, seeds 0-2 | certified slack, seeds 0-2 |")
    print("|---|---|---|---|---|---|")
    for k, d, slope, layers in VARIANTS:
        means, draw = _draw(k, d, slope, layers)
        truth = battery._mixture_truth(means, "shannon")
        est_err, slack = [], []
        for seed in range(3):
            z, y = draw(10_000, np.random.default_rng(seed))
            est, bound, _ = estimate_and_bound(
                z, y, omega="shannon", delta=0.05, random_state=seed, n_classes=k
            )
            est_err.append(f"{est.value - truth:+.3f}")
            slack.append(f"{bound.value - truth:.3f}")
        print(f"| {k} | {d} | {slope} | {layers} | {', '.join(est_err)} | {', '.join(slack)} |")


if __name__ == "__main__":
    main()

"""How much of the ``ica_linear`` head's excess risk is unmixing error (issue 11).

On the battery's mixed-sinh tasks (``x = sinh(1.5 z R) M``, ``z`` a Gaussian mixture) the
posterior is linear in the sources ``z R``, so a logistic head on the true sources has
only its sampling excess. The ``ica_linear`` map has to recover them from ``x``. This
script fits the logistic head (``C = 1``) on 5,000 rows after three unmixings and scores
it (log loss minus the task's exact ``H(Y|Z)``, nats) on 50,000 fresh rows:

* ``fastica``: FastICA only (``estimators.heads._fast_ica``), the map before 2026-12-03;
* ``ml``: FastICA refined by maximum likelihood (``_ml_unmixing``: Picard, Cauchy source
  density, no whiteness constraint), the shipped ``ica_linear`` map;
* ``true``: the true sources (the inverse of the task's own warp).

Rows are drawn with ``default_rng(seed)``, the test rows with ``default_rng(123)``.

    python benchmarks/ica_unmixing.py                 # seeds 0-2, about 1 min
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import warnings

import numpy as np

from clt_gen._io import atomic_write_text

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import estimators_accuracy as battery  # noqa: E402

from estimators.heads import HEADS, _fast_ica, _feature_map, _ml_unmixing  # noqa: E402

OUT = pathlib.Path(__file__).parent / "results" / "ica_unmixing.json"
TASKS = ("GM K=2 d=8", "GM K=10 d=8", "GM K=2 d=32", "GM K=10 d=32")


def _true_sources(k: int, d: int):
    """The inverse of ``battery._mixed_sinh(d, k)`` (same generator, same draws)."""
    gen = np.random.default_rng(600 + k)
    rot = np.linalg.qr(gen.normal(size=(d, d)))[0]
    mix = gen.normal(size=(d, d)) / np.sqrt(d)
    unmix = np.linalg.inv(mix)
    return lambda x: np.arcsinh(x @ unmix) / 1.5 @ rot.T


def _excess(task, unmixings, seed: int) -> dict[str, float]:
    z, y = task.draw(5000, np.random.default_rng(seed))
    zt, yt = task.draw(50_000, np.random.default_rng(123))
    truth = task.truth("shannon")
    out = {}
    for name, make in unmixings.items():
        fmap = make(z)
        head = HEADS["logistic"](fmap(z), y, task.n_classes, random_state=0, C=1.0)
        out[name] = float(-head(fmap(zt))[np.arange(len(yt)), yt].mean() - truth)
    return out


def _unmixings(task) -> dict:
    def linear(refine: bool):
        def make(x):
            pre = _feature_map(x, "standard")
            a = pre(x)
            ica, converged = _fast_ica(a)
            w = _ml_unmixing(a - ica.mean_, ica.components_) if refine else ica.components_
            post = _feature_map((a - ica.mean_) @ w.T, "quantile")
            return lambda v: post((pre(v) - ica.mean_) @ w.T)

        return make

    src = _true_sources(task.n_classes, task.n_features)
    return {"fastica": linear(False), "ml": linear(True), "true": lambda x: src}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    tasks = {t.name: t for t in battery.mixture_tasks()}
    rows = []
    print("| task | seed | FastICA | + maximum likelihood | true sources |")
    print("|---|---|---|---|---|")
    for base in TASKS:
        task = tasks[f"{base} mixsinh"]
        for seed in args.seeds:
            ex = _excess(task, _unmixings(task), seed)
            rows.append({"task": task.name, "seed": seed, **ex})
            cells = " | ".join(f"{ex[k]:.3f}" for k in ("fastica", "ml", "true"))
            print(f"| `{task.name}` | {seed} | {cells} |")
    atomic_write_text(OUT, json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()

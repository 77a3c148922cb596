"""Unmixing fitted on class-centred rows vs on the pooled rows, for the ``ica*`` maps.

Under a class-conditional model (a Gaussian mixture pushed through a warp, as in the
battery's warped tasks) the sources are independent *within* each class; the class
shift makes them dependent in the pooled data, so pooled ICA converges to other
directions, however many rows it sees. Since 2026-12-03 (afternoon) the ``ica`` and
``ica_linear`` maps of the logistic candidates fit their unmixing on rows centred per
class (``estimators.heads._class_centred``; the labels are the fitting folds' own).

For each task this fits the logistic head (``C = 1``) on 5,000 rows after the map,
fitted without labels (``pooled``) and with them (``centred``), and scores it (log loss
minus the task's exact ``H(Y|Z)``, nats) on 20,000 fresh rows. Tasks: the battery's
warped mixtures (``invnet`` with the ``ica`` map, ``mixsinh`` with ``ica_linear``, the
cubic warp with both) and its real-feature teachers on Fashion-MNIST PCA features (no
class-conditional independence there: a check that centring does no harm). Rows drawn
with ``default_rng(seed)``, test rows with ``default_rng(123)``.

    python benchmarks/class_centred_ica.py                 # seeds 0-2, about 4 min
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

from estimators.heads import HEADS, _feature_map  # noqa: E402

OUT = pathlib.Path(__file__).parent / "results" / "class_centred_ica.json"


def _tasks() -> list[tuple[object, str]]:
    out = []
    for task in battery.mixture_tasks():
        warp = task.name.split()[-1]
        if warp in ("invnet", "cubic"):
            out.append((task, "ica"))
        if warp in ("mixsinh", "cubic"):
            out.append((task, "ica_linear"))
    pools = {"fmnist-pca32": battery._pca(battery._fashion_pixels(), 32)}
    for task in battery.teacher_tasks(pools):
        out += [(task, "ica"), (task, "ica_linear")]
    return out


def _excess(task, features: str, seed: int) -> dict[str, float]:
    x, y = task.draw(5000, np.random.default_rng(seed))
    xt, yt = task.draw(20_000, np.random.default_rng(123))
    truth = task.truth("shannon")
    out = {}
    for name, labels in (("pooled", None), ("centred", y)):
        fmap = _feature_map(x, features, labels)
        head = HEADS["logistic"](fmap(x), y, task.n_classes, random_state=0, C=1.0, features="none")
        out[name] = float(-head(fmap(xt))[np.arange(len(yt)), yt].mean() - truth)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    rows = []
    print("| task | map | pooled (seeds) | centred (seeds) |")
    print("|---|---|---|---|")
    for task, features in _tasks():
        ex = [_excess(task, features, seed) for seed in args.seeds]
        rows += [
            {"task": task.name, "map": features, "seed": s, **e}
            for s, e in zip(args.seeds, ex, strict=True)
        ]
        cells = [", ".join(f"{e[k]:.3f}" for e in ex) for k in ("pooled", "centred")]
        print(f"| `{task.name}` | `{features}` | {cells[0]} | {cells[1]} |", flush=True)
    atomic_write_text(OUT, json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()

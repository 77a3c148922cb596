"""The ``flow`` feature map against one step of iterative Gaussianization (``ica``).

Since 2026-12-03 (evening) the logistic candidates of ``auto`` include, up to 16
features, logistic regression after a two-layer monotone flow fitted by maximum
likelihood under class-conditional Gaussians (``estimators/_flow.py``). This measures
why and where: for each Gaussian-mixture task of the battery (plain and warped, d = 8
and 32) the logistic head (``C = 1``) is fitted on 4,000 rows after each map (the size
of an inner fit in a fold of the n = 10k battery) and scored on 20,000 fresh rows;
numbers are the log loss minus the task's exact ``H(Y|Z)`` (nats), and the seconds the
map took to fit (``OMP_NUM_THREADS=1``: one core). Rows drawn with ``default_rng(seed)``,
test rows with ``default_rng(123)``.

    OMP_NUM_THREADS=1 python benchmarks/flow_map.py        # seeds 0-2, about 6 min
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time
import warnings

import numpy as np

from clt_gen._io import atomic_write_text

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import estimators_accuracy as battery  # noqa: E402

from estimators.heads import HEADS, _feature_map  # noqa: E402

OUT = pathlib.Path(__file__).parent / "results" / "flow_map.json"
MAPS = ("quantile", "ica", "ica_linear", "flow")


def _excess(task, seed: int) -> dict[str, float]:
    x, y = task.draw(4000, np.random.default_rng(seed))
    xt, yt = task.draw(20_000, np.random.default_rng(123))
    truth = task.truth("shannon")
    out: dict[str, float] = {}
    for features in MAPS:
        t0 = time.perf_counter()
        fmap = _feature_map(x, features, y)
        out[f"{features}_seconds"] = time.perf_counter() - t0
        head = HEADS["logistic"](fmap(x), y, task.n_classes, random_state=0, C=1.0, features="none")
        out[features] = float(-head(fmap(xt))[np.arange(len(yt)), yt].mean() - truth)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    rows = []
    print("| task | " + " | ".join(f"`{m}`" for m in MAPS) + " | flow fit (s) |")
    print("|---|" + "---|" * (len(MAPS) + 1))
    for task in battery.mixture_tasks():
        ex = [_excess(task, seed) for seed in args.seeds]
        rows += [{"task": task.name, "seed": s, **e} for s, e in zip(args.seeds, ex, strict=True)]
        cells = [f"{min(e[m] for e in ex):.3f}–{max(e[m] for e in ex):.3f}" for m in MAPS]
        secs = np.mean([e["flow_seconds"] for e in ex])
        print(f"| `{task.name}` | " + " | ".join(cells) + f" | {secs:.1f} |", flush=True)
    atomic_write_text(OUT, json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()

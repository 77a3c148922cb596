"""How far an oracle head gets on the random-MLP-teacher tasks (issue 11's open targets).

The certified bound's slack and the ``auto`` estimate's bias are the selected head's
excess risk (THEORY §5.1). On ``fmnist-* mlp K=10`` that excess stays near 0.17 nats at
5,000 fitting rows for every head we have (``head_learning_curves.py``). This script asks
how much of it any head could remove at that sample size: it gives one head the
teacher's hidden layer exactly (``tanh(z W)``, 64 units, as built in
``estimators_accuracy.teacher_layers``) and fits only the output layer, a multinomial
logistic regression with ``C`` chosen on a 20% inner split and refitted on all rows. Next
to it, the head the toolkit selects inside one fold (``estimators.heads.select_head``,
default candidates). For both it reports

* ``test``: the expected excess log loss over the exact posterior on 20,000 further rows
  of the task, ``E_z KL(p(.|z) || q(.|z))`` in nats (no label noise in this number);
* ``train``: the mean log loss on the fitting rows' own labels minus their exact
  entropy: how far below the truth the head can fit what it was trained on.

Between the two, a kernel head that knows the teacher's *kind* of layer but not its
weights: logistic regression on the standardized features together with 1,024 random
features of the teacher's own form, ``tanh(z G · 1.5/√d)`` with ``G`` a fresh Gaussian
matrix (``default_rng(1)``), each standardized, ``C`` chosen from a grid on the same 20%
inner split and refitted. As the number of random features grows this is kernel
logistic regression with the infinite-width kernel of the teacher's layer, the kernel
method best matched to these posteriors; ``kernel_test`` says how much of the gap a
non-parametric head closes without learning the hidden weights.

A well-specified parametric head sits about as far below the truth on ``train`` as above
it on ``test``; a head whose ``train`` is itself above the truth has not captured the
posterior (approximation, not sampling, error).

    python benchmarks/teacher_oracle.py                    # seeds 0-2, n = 5,000; ~6 min
    python benchmarks/teacher_oracle.py --seeds 0 1 2 --sizes 5000 20000

Rows are kept in ``results/teacher_oracle.json`` by (task, seed, n): a rerun computes
only the rows, or the parts of rows (``--kernel``), that are missing.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time
from collections.abc import Callable

import numpy as np
from sklearn.linear_model import LogisticRegression

from clt_gen._io import atomic_write_text

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import estimators_accuracy as battery  # noqa: E402

from estimators.heads import select_head  # noqa: E402

OUT = pathlib.Path(__file__).parent / "results" / "teacher_oracle.json"
TASKS = (("pca32", "mlp", 10), ("net32", "mlp", 10), ("pca32", "linear", 10))
N_TEST = 20_000
C_GRID = (0.01, 0.1, 1.0, 10.0, 100.0)
KERNEL_C_GRID = (0.001, 0.003, 0.01, 0.03)
N_RANDOM = 1024


def _oracle(h: np.ndarray, y: np.ndarray, seed: int) -> LogisticRegression:
    """Logistic regression on the teacher's hidden layer, ``C`` chosen on a 20% split."""
    cut = int(0.8 * len(y))

    def fit(c: float, rows: slice) -> LogisticRegression:
        return LogisticRegression(C=c, max_iter=3000, random_state=seed).fit(h[rows], y[rows])

    def val_loss(c: float) -> float:
        q = fit(c, slice(0, cut)).predict_log_proba(h[cut:])
        return float(-q[np.arange(len(y) - cut), y[cut:]].mean())

    return fit(min(C_GRID, key=val_loss), slice(None))


def _kernel(z_fit: np.ndarray, y_fit: np.ndarray, k: int) -> Callable[[np.ndarray], np.ndarray]:
    """Logistic on ``[z, tanh(z G · 1.5/√d)]`` (standardized), ``C`` by a 20% split."""
    from estimators.heads import _fit_logistic_all

    d = z_fit.shape[1]
    g = np.random.default_rng(1).normal(size=(d, N_RANDOM)) * (1.5 / np.sqrt(d))
    mu, sd = z_fit.mean(0), z_fit.std(0)
    raw = np.tanh((z_fit - mu) / sd @ g)
    mu_h, sd_h = raw.mean(0), raw.std(0) + 1e-12

    def feats(z: np.ndarray) -> np.ndarray:
        zs = (z - mu) / sd
        return np.hstack([zs, (np.tanh(zs @ g) - mu_h) / sd_h])

    x = feats(z_fit)
    cut = int(0.8 * len(y_fit))

    def fit(c: float, rows: slice) -> Callable[[np.ndarray], np.ndarray]:
        return _fit_logistic_all(
            x[rows], y_fit[rows], k, C=c, random_state=0, features="none", max_iter=300
        )

    def val_loss(c: float) -> float:
        return float(
            -fit(c, slice(0, cut))(x[cut:])[np.arange(len(y_fit) - cut), y_fit[cut:]].mean()
        )

    head = fit(min(KERNEL_C_GRID, key=val_loss), slice(None))
    return lambda z: head(feats(z))


def run(
    pool_name: str, pool: np.ndarray, kind: str, k: int, seed: int, n: int, row: dict | None
) -> dict:
    """One (task, seed, n) row; the parts already in ``row`` (from the cache) are kept."""
    row = dict(row or {})
    hidden, v, scale = battery.teacher_layers(pool.shape[1], k, kind, seed=k)
    post = battery._teacher(pool, k, kind, seed=k)
    gen = np.random.default_rng(seed)
    idx = gen.integers(0, len(pool), n + N_TEST)
    z, p = pool[idx], post[idx]
    y = battery._sample_labels(p, gen)
    fit, test = slice(0, n), slice(n, None)
    entropy = -(p * np.log(p)).sum(1)

    def excesses(predict: Callable[[np.ndarray], np.ndarray]) -> tuple[float, float]:
        kl = (p[test] * (np.log(p[test]) - predict(z[test]))).sum(1).mean()
        train = -predict(z[fit])[np.arange(n), y[fit]].mean() - entropy[fit].mean()
        return float(kl), float(train)

    t0 = time.perf_counter()
    task = f"fmnist-{pool_name} {kind} K={k}"
    row.update(task=task, seed=seed, n=n)
    if "oracle_test" not in row:
        oracle = _oracle(hidden(z[fit]), y[fit], seed)
        row["oracle_C"] = float(oracle.C)
        row["oracle_test"], row["oracle_train"] = excesses(
            lambda a: oracle.predict_log_proba(hidden(a))
        )
    if "selected_test" not in row:
        head = select_head(z[fit], y[fit], n_classes=k, random_state=seed)
        row["selected"] = head.name
        row["selected_test"], row["selected_train"] = excesses(head.log_predict)
    if "kernel_test" not in row:
        row["kernel_test"], row["kernel_train"] = excesses(_kernel(z[fit], y[fit], k))
    print(f"{task}  seed {seed}  n {n}: {time.perf_counter() - t0:.1f} s", flush=True)
    return row


COLUMNS = (
    ("oracle_test", "oracle: test"),
    ("oracle_train", "oracle: train"),
    ("kernel_test", "kernel: test"),
    ("kernel_train", "kernel: train"),
    ("selected_test", "selected: test"),
    ("selected_train", "selected: train"),
)


def table(rows: list[dict]) -> str:
    heads = " | ".join(title for _, title in COLUMNS)
    lines = [f"| task | n | selected head | {heads} |", "|---" * (len(COLUMNS) + 3) + "|"]
    for task, n in sorted(dict.fromkeys((r["task"], r["n"]) for r in rows)):
        sub = [r for r in rows if r["task"] == task and r["n"] == n]

        def cell(key: str, _sub=sub) -> str:
            vals = [r[key] for r in _sub if key in r]
            if not vals:
                return "—"
            return f"{np.mean(vals):+.3f} ({min(vals):+.3f} to {max(vals):+.3f})"

        names = "/".join(sorted({r["selected"] for r in sub}))
        cells = " | ".join(cell(key) for key, _ in COLUMNS)
        lines.append(f"| {task} | {n:,} | {names} | {cells} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--sizes", type=int, nargs="+", default=[5000])
    ap.add_argument("--report", action="store_true", help="print the table from the cache")
    args = ap.parse_args()
    cached = json.loads(OUT.read_text())["rows"] if OUT.exists() else []
    rows = {(r["task"], r["seed"], r["n"]): r for r in cached}
    if not args.report:
        pixels = battery._fashion_pixels()
        pools = {"pca32": battery._pca(pixels, 32), "net32": battery._penultimate(pixels)}
        for name, kind, k in TASKS:
            for n in args.sizes:
                for s in args.seeds:
                    key = (f"fmnist-{name} {kind} K={k}", s, n)
                    rows[key] = run(name, pools[name], kind, k, s, n, rows.get(key))
                    OUT.parent.mkdir(parents=True, exist_ok=True)  # saved after every row
                    payload = {
                        "rows": sorted(rows.values(), key=lambda r: (r["task"], r["n"], r["seed"]))
                    }
                    atomic_write_text(OUT, json.dumps(payload, indent=1))
    print(table(list(rows.values())))


if __name__ == "__main__":
    main()

"""Speed of the exact kNN search used by the ``knn`` and ``ksg`` estimators.

For ``n_samples`` points in ``n_features`` dimensions (k=20 neighbours, self excluded),
compare in one process:

(a) the floor: the ``n × n`` matrix product of the same features (float64), computed in
    the same row blocks and discarded (a dense 50k × 50k float64 result would need 20 GB);
(b) scipy's ``cKDTree`` (``workers=-1``), as used by common MI packages. Its query time is
    linear in the number of queries, so it is timed on ``--kd-queries`` queries and scaled
    to all ``n_samples`` (the tree is built on all points).

(c) faiss-cpu's exact ``IndexFlatL2`` (float32) side by side with our default float32
    search (the ``tiles`` backend, whose returned neighbours' distances are recomputed in
    float64), our other backends and our float64 search, for the self-search and for
    half the points queried against the other half; best of 3 with the searches taking
    turns in this process, with the neighbour sets compared.

Peak memory of the search is measured in a fresh subprocess (ru_maxrss).

    python benchmarks/estimators_speed.py                 # n_samples=50000, d in 32 64 256
    python benchmarks/estimators_speed.py --n-samples 20000 --features 32 256   # vs faiss
    python benchmarks/estimators_speed.py --ties --n-samples 20000 --features 4 16 --k 10
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import subprocess
import sys
import time

import numpy as np
import torch
from scipy.spatial import cKDTree

from clt_gen._io import atomic_write_text
from estimators import neighbors
from estimators.neighbors import _block_rows, knn_search

OUT = pathlib.Path(__file__).parent / "results" / "estimators_speed.json"


def blocked_product(x: np.ndarray) -> float:
    t = torch.from_numpy(x)
    rows = _block_rows(len(t), t.element_size(), None)
    t0 = time.perf_counter()
    for s in range(0, len(t), rows):
        _ = t[s : s + rows] @ t.T
    return time.perf_counter() - t0


def peak_memory_mb(n: int, d: int, k: int) -> float:
    code = (
        "import numpy as np, resource;"
        "from estimators.neighbors import knn_search;"
        f"x=np.random.default_rng(0).standard_normal(({n},{d}));"
        "base=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss;"
        f"knn_search(x,x,{k},exclude_self=True);"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def _best_of(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def _interleaved(fns: dict, repeats: int = 3) -> dict:
    """Best of ``repeats`` per function, the functions taking turns (one after another in
    each round), so a slow spell of the machine hits all of them alike."""
    times: dict = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: min(t) for name, t in times.items()}


def _faiss_side_by_side(x: np.ndarray, k: int) -> dict:
    try:
        import faiss
    except ImportError:
        return {"faiss": "not installed"}
    x32 = np.ascontiguousarray(x.astype(np.float32))
    half = len(x) // 2
    q32, d32 = x32[:half], np.ascontiguousarray(x32[half:])

    def run_faiss(queries: np.ndarray, data: np.ndarray, kk: int) -> np.ndarray:
        index = faiss.IndexFlatL2(data.shape[1])
        index.add(data)
        return index.search(queries, kk)[1]

    knn_search(x[:2000], x[:2000], k, exclude_self=True, backend="tiles")  # load the kernels
    t = _interleaved(
        {
            "faiss_s": lambda: run_faiss(x32, x32, k + 1),
            "knn_default_s": lambda: knn_search(x, x, k, exclude_self=True),  # auto: tiles
            "knn_faiss_backend_s": lambda: knn_search(x, x, k, exclude_self=True, backend="faiss"),
            "knn_float32_torch_s": lambda: knn_search(x, x, k, exclude_self=True, backend="torch"),
            "knn_float64_s": lambda: knn_search(x, x, k, exclude_self=True, dtype="float64"),
            "faiss_queries_s": lambda: run_faiss(q32, d32, k),
            "knn_queries_s": lambda: knn_search(x[:half], x[half:], k),
        }
    )
    xc = x - x.mean(0)  # what the search sees: the rows the certificate sends back, by margin
    again = {}
    for r in (2, 4):
        cand = neighbors._faiss_candidates(xc, xc, k + r, True)
        d2 = neighbors._refine(x, x, cand)[0]
        again[f"searched_again_refine{r}"] = float(
            neighbors.uncertified_rows(xc, xc, d2, k, 2.0**-24).mean()
        )
    ours = knn_search(x, x, k, exclude_self=True, backend="torch")[1]
    found = {
        name: knn_search(x, x, k, exclude_self=True, backend=name)[1] for name in ("tiles", "faiss")
    }
    exact = knn_search(x, x, k, exclude_self=True, dtype="float64")[1]
    return {
        **t,
        "default_over_faiss": t["knn_default_s"] / t["faiss_s"],
        "faiss_backend_over_faiss": t["knn_faiss_backend_s"] / t["faiss_s"],
        "float32_torch_over_faiss": t["knn_float32_torch_s"] / t["faiss_s"],
        "float64_over_faiss": t["knn_float64_s"] / t["faiss_s"],
        "queries_over_faiss": t["knn_queries_s"] / t["faiss_queries_s"],
        **again,
        "tiles_backend_agrees": bool(np.array_equal(ours, found["tiles"])),
        "faiss_backend_agrees": bool(np.array_equal(ours, found["faiss"])),
        "float32_agrees_with_float64": bool(np.array_equal(ours, exact)),
    }


def tied_features(n: int, d: int, k: int) -> dict:
    """Integer features (``0..4`` per coordinate, seed 0): exact distance ties everywhere.

    Every query whose ``k``-th distance is tied beyond the margin goes through the float64
    pass of the certificate; timed against faiss's float32 search (which breaks ties
    arbitrarily) in the same process, best of 3.
    """
    x = np.random.default_rng(0).integers(0, 5, size=(n, d)).astype(np.float64)
    xc = x - x.mean(0)
    cand = neighbors._faiss_candidates(xc, xc, k + 4, True)
    d2 = neighbors._refine(x, x, cand)[0]
    again = float(neighbors.uncertified_rows(xc, xc, d2, k, 2.0**-24).mean())
    x32 = np.ascontiguousarray(x.astype(np.float32))

    def run_faiss() -> None:
        import faiss

        index = faiss.IndexFlatL2(d)
        index.add(x32)
        index.search(x32, k + 1)

    t_faiss = _best_of(run_faiss)
    t_ours = _best_of(lambda: knn_search(x, x, k, exclude_self=True))
    return {
        "tied_n": n,
        "tied_d": d,
        "faiss_s": t_faiss,
        "knn_default_s": t_ours,
        "ratio": t_ours / t_faiss,
        "searched_again": again,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-samples", type=int, default=50_000)
    ap.add_argument("--features", type=int, nargs="+", default=[32, 64, 256])
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--kd-queries", type=int, default=2000)
    ap.add_argument(
        "--ties", action="store_true", help="only the integer-feature (tied) rows, printed"
    )
    args = ap.parse_args()
    if args.ties:
        for d in args.features:
            print(json.dumps(tied_features(args.n_samples, d, args.k)))
        return
    n, k = args.n_samples, args.k
    rows = []
    for d in args.features:
        x = np.random.default_rng(0).standard_normal((n, d))
        t0 = time.perf_counter()
        knn_search(x, x, k, exclude_self=True)
        t_knn = time.perf_counter() - t0
        t_mm = blocked_product(x)
        tree_t0 = time.perf_counter()
        tree = cKDTree(x)
        t_build = time.perf_counter() - tree_t0
        q = x[: args.kd_queries]
        t0 = time.perf_counter()
        tree.query(q, k=k + 1, workers=-1)
        t_kd = t_build + (time.perf_counter() - t0) * n / len(q)
        mem = peak_memory_mb(n, d, k)
        faiss_row = _faiss_side_by_side(x, k)
        row = {
            "n_samples": n,
            "n_features": d,
            "knn_s": t_knn,
            "matmul_s": t_mm,
            "kdtree_s": t_kd,
            "knn_over_matmul": t_knn / t_mm,
            "kdtree_over_knn": t_kd / t_knn,
            "peak_rss_mb": mem,
            **faiss_row,
        }
        rows.append(row)
        print(json.dumps(row))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(
        OUT,
        json.dumps(
            {
                "machine": f"{platform.machine()} {os.cpu_count()} cores",
                "torch_threads": torch.get_num_threads(),
                "date": time.strftime("%Y-%m-%d"),
                "rows": rows,
            },
            indent=1,
        ),
    )


if __name__ == "__main__":
    main()

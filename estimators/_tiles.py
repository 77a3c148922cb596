"""Tiled nearest-neighbour candidate search: BLAS tiles and compiled bounded heaps.

The search behind ``knn_search(backend="tiles")``. Products of row blocks come from
BLAS (one thread per worker); each tile is then scanned by a compiled kernel (numba)
that keeps, for every query, a max-heap of its ``m`` smallest ranking values
``|x|² − 2 q·x``. Almost every value is rejected by one comparison with the heap's
root, and a first, vectorized pass counts a tile row's values below it so that rows
with nothing to insert are skipped.

When the queries are the data (self-search), a tile of rows ``I`` and columns ``J``
serves both blocks: row ``i`` ranks column ``j`` by ``|x_j|² − 2 x_i·x_j`` and
column ``j`` ranks row ``i`` by ``|x_i|² − 2 x_i·x_j``, so only the tiles on and above
the diagonal are computed (half the products of a search that treats queries and data
as unrelated, which is what faiss's ``IndexFlatL2`` does). Worker threads take pairs of
blocks that no other worker holds, so no heap is ever written by two threads.

This module imports numba at import time; :mod:`estimators.neighbors` imports it only
when this backend runs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numba
import numpy as np

TILE = 512  # rows per block: a 512 x 512 float32 tile (1 MiB) stays in a core's L2 cache


@numba.njit(inline="always", nogil=True, cache=True)
def _push(vals: Any, idxs: Any, v: Any, j: int) -> None:  # pragma: no cover - compiled
    """Replace the root of the max-heap ``vals`` (size ``m``) by ``v`` and sift it down."""
    m = vals.shape[0]
    pos = 0
    while True:
        c = 2 * pos + 1
        if c >= m:
            break
        if c + 1 < m and vals[c + 1] > vals[c]:
            c += 1
        if vals[c] <= v:
            break
        vals[pos] = vals[c]
        idxs[pos] = idxs[c]
        pos = c
    vals[pos] = v
    idxs[pos] = j


@numba.njit(nogil=True, fastmath=True, cache=True)
def _row_hits(row: Any, base: Any, thr: Any) -> int:  # pragma: no cover - compiled
    """Count ``j`` with ``base[j] − 2 row[j] < thr`` (a scalar threshold; vectorized)."""
    two = row.dtype.type(2.0)
    cnt = 0
    for j in range(row.shape[0]):
        cnt += (base[j] - two * row[j]) < thr
    return cnt


@numba.njit(nogil=True, fastmath=True, cache=True)
def _col_hits(row: Any, base: Any, thr: Any) -> int:  # pragma: no cover - compiled
    """Count ``j`` with ``base − 2 row[j] < thr[j]`` (a scalar base; vectorized)."""
    two = row.dtype.type(2.0)
    cnt = 0
    for j in range(row.shape[0]):
        cnt += (base - two * row[j]) < thr[j]
    return cnt


@numba.njit(nogil=True, cache=True)
def _rows_pass(p: Any, norms: Any, r0: int, c0: int, hv: Any, hi: Any) -> None:  # pragma: no cover
    """Offer tile ``p`` (rows ``r0 + i``, columns ``c0 + j``) to the rows' heaps."""
    b, w = p.shape
    two = p.dtype.type(2.0)
    base = norms[c0 : c0 + w]
    for i in range(b):
        vals = hv[r0 + i]
        idxs = hi[r0 + i]
        row = p[i]
        t = vals[0]
        if _row_hits(row, base, t) == 0:
            continue
        for j in range(w):
            v = base[j] - two * row[j]
            if v < t:
                _push(vals, idxs, v, c0 + j)
                t = vals[0]


@numba.njit(nogil=True, cache=True)
def _cols_pass(p: Any, norms: Any, r0: int, c0: int, hv: Any, hi: Any) -> None:  # pragma: no cover
    """Offer tile ``p`` to the heaps of its columns (the transposed tile's rows)."""
    b, w = p.shape
    two = p.dtype.type(2.0)
    thr = np.empty(w, dtype=p.dtype)
    for j in range(w):
        thr[j] = hv[c0 + j, 0]
    for i in range(b):
        row = p[i]
        base = norms[r0 + i]
        if _col_hits(row, base, thr) == 0:
            continue
        for j in range(w):
            v = base - two * row[j]
            if v < thr[j]:
                _push(hv[c0 + j], hi[c0 + j], v, r0 + i)
                thr[j] = hv[c0 + j, 0]


def _round_robin(n_blocks: int) -> list[tuple[int, int]]:
    """Pairs ``a < b`` of blocks in rounds of disjoint pairs (circle method), then ``(a, a)``.

    In this order the next pair a free worker can take (neither block held by another
    worker) is almost always at the front of the queue.
    """
    slots = list(range(n_blocks + n_blocks % 2))
    order: list[tuple[int, int]] = []
    for _ in range(len(slots) - 1):
        half = len(slots) // 2
        for a, b in zip(slots[:half], slots[::-1][:half], strict=True):
            if max(a, b) < n_blocks:
                order.append((min(a, b), max(a, b)))
        slots = [slots[0], slots[-1], *slots[1:-1]]
    return order + [(a, a) for a in range(n_blocks)]


def _run_exclusive(
    pairs: list[tuple[int, int]], work: Callable[[int, int, int], None], n_workers: int
) -> None:
    """Run ``work(worker, a, b)`` for every pair on ``n_workers`` threads.

    Never two pairs that share a block at the same time: each block's heaps have one
    writer.
    """
    pending = list(pairs)
    busy: set[int] = set()
    cond = threading.Condition()

    def take() -> tuple[int, int] | None:
        with cond:
            while pending:
                for pos, (a, b) in enumerate(pending):
                    if a not in busy and b not in busy:
                        busy.update((a, b))
                        return pending.pop(pos)
                cond.wait()
            return None

    def loop(worker: int) -> None:
        while (pair := take()) is not None:
            try:
                work(worker, *pair)
            finally:
                with cond:
                    busy.difference_update(pair)
                    cond.notify_all()

    with ThreadPoolExecutor(n_workers) as pool:
        for fut in [pool.submit(loop, w) for w in range(n_workers)]:
            fut.result()


def candidates(
    queries: np.ndarray,
    data: np.ndarray,
    m: int,
    *,
    exclude_self: bool,
    same: bool,
    dtype: Any,
    n_workers: int,
) -> np.ndarray:
    """Return the indices of the ``m`` smallest ``|x|² − 2 q·x`` per query (in ``dtype``).

    ``same``: ``queries`` are ``data`` (self-search: each tile serves both of its
    blocks). ``exclude_self``: row ``i`` of ``queries`` is row ``i`` of ``data`` and is
    never its own candidate. Order within a row is unspecified.
    """
    from threadpoolctl import threadpool_limits

    x = np.ascontiguousarray(data, dtype=dtype)
    q = x if same else np.ascontiguousarray(queries, dtype=dtype)
    x64 = x.astype(np.float64, copy=False)
    x_norms = np.einsum("ij,ij->i", x64, x64).astype(dtype)
    hv = np.full((len(q), m), np.inf, dtype=dtype)
    hi = np.full((len(q), m), -1, dtype=np.int64)
    bufs = [np.empty((TILE, TILE), dtype=dtype) for _ in range(n_workers)]

    def tile(worker: int, r0: int, c0: int) -> np.ndarray:
        qa, xb = q[r0 : r0 + TILE], x[c0 : c0 + TILE]
        p = bufs[worker][: len(qa), : len(xb)]
        np.matmul(qa, xb.T, out=p)
        if exclude_self and r0 < c0 + len(xb) and c0 < r0 + len(qa):
            i = np.arange(max(r0, c0), min(r0 + len(qa), c0 + len(xb)))
            p[i - r0, i - c0] = -np.inf  # ranks as +inf: never a candidate
        return p

    def pair(worker: int, a: int, b: int) -> None:
        p = tile(worker, a * TILE, b * TILE)
        _rows_pass(p, x_norms, a * TILE, b * TILE, hv, hi)
        if a != b:
            _cols_pass(p, x_norms, a * TILE, b * TILE, hv, hi)

    def query_block(worker: int, a: int, _: int) -> None:
        for c0 in range(0, len(x), TILE):
            _rows_pass(tile(worker, a * TILE, c0), x_norms, a * TILE, c0, hv, hi)

    n_q = -(-len(q) // TILE)
    with threadpool_limits(1):  # one BLAS thread per worker
        if same:
            _run_exclusive(_round_robin(n_q), pair, n_workers)
        else:
            _run_exclusive([(a, a) for a in range(n_q)], query_block, n_workers)
    if (hi < 0).any():
        raise ValueError("tiled search left a heap slot empty: non-finite features?")
    return hi

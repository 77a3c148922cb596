"""Exact brute-force nearest neighbours in memory-bounded blocks of matrix products.

Squared Euclidean distances ``|q|² − 2 q·x + |x|²`` are computed a block of queries at a
time with BLAS matrix products, followed by a selection of each query's nearest.

By default the search runs in float32 (half the memory traffic of float64) for a few
more candidates than asked, then the candidates' distances are recomputed exactly in
float64 and re-sorted. The extra candidates also certify the result: with a bound on
the search's rounding error, a query whose ``k``-th exact distance sits clear of the
last candidate's cannot have missed a nearer point. The few queries that are not clear
(near-ties at float32 precision, exact ties) get every data row within their ``k``-th
exact distance plus float64's error bound, found with a float64 pass, so both the distances
and the neighbour sets handed back are the float64-exact ones (ties by index).

Three backends find the candidates, and all return the same neighbours:

- ``tiles`` (the CPU default for searches of ``2**23`` query-data pairs or more):
  512-row tiles from BLAS, scanned by compiled bounded heaps (:mod:`estimators._tiles`,
  numba); a self-search computes only the tiles on and above the diagonal, each serving
  both of its blocks. At n = 20,000 it is 0.6-0.8 times faiss's ``IndexFlatL2`` time,
  float64 refinement included (``benchmarks/RESULTS.md``).
- ``faiss``: faiss-cpu's ``IndexFlatL2`` (the ``faiss`` extra), for smaller float32 CPU
  searches when installed.
- ``torch``: blocked ``addmm`` and ``topk``; the only one on a GPU (and for torch
  tensors), and the fallback.

torch and numba are imported only when a search runs, so ``import estimators`` stays light.

Examples
--------
>>> import numpy as np
>>> x = np.array([[0.0], [1.0], [3.0], [7.0]])
>>> d2, idx = knn_search(x, x, k=1, exclude_self=True)
>>> idx.ravel().tolist()
[1, 0, 1, 2]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from estimators.errors import ValidationError, unknown_name_error

__all__ = ["knn_search", "count_within", "default_device", "uncertified_rows", "BACKENDS"]

_BLOCK_BYTES = 256 * 2**20  # distance block budget
_CANDIDATE_BYTES = 32 * 2**20  # candidate-search block: fewer cache misses in topk
_REFINE_BYTES = 4 * 2**20  # gathered-candidates block: small enough to stay in cache
_TILES_MIN_PAIRS = 2**23  # (query, data) pairs from which ``auto`` takes the tiled search
BACKENDS: tuple[str, ...] = ("auto", "tiles", "torch", "faiss")


def default_device() -> Any:
    """CUDA when available, else CPU."""
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _torch_dtype(dtype: Any) -> Any:
    import torch

    if dtype in ("float32", torch.float32, np.float32):
        return torch.float32
    if dtype in ("float64", torch.float64, np.float64, None):
        return torch.float64
    raise ValidationError(f"dtype must be 'float32' or 'float64' (got {dtype!r})")


def _prepare(a: Any, device: Any, dtype: Any) -> Any:
    import torch

    t = a if isinstance(a, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(a))
    return t.to(device=device, dtype=dtype)


def _block_rows(
    n_data: int, itemsize: int, block_size: int | None, block_bytes: int = _BLOCK_BYTES
) -> int:
    if block_size is not None:
        return max(1, int(block_size))
    return max(1, min(8192, block_bytes // max(1, n_data * itemsize)))


def _blocks(
    queries: Any,
    data: Any,
    device: Any,
    dtype: Any,
    block_size: int | None,
    rank_only: bool = False,
    block_bytes: int = _BLOCK_BYTES,
) -> Any:
    """Yield ``(start, d2)`` for blocks of queries: squared distances to every data row.

    With ``rank_only`` the rows are ``|x|² − 2 q·x``: each row is the distance minus the
    query's own ``|q|²``, which orders the data rows the same way and saves two passes.
    """
    import torch

    dev = torch.device(device) if device is not None else default_device()
    q = _prepare(queries, dev, dtype)
    x = _prepare(data, dev, dtype)
    x_sq = (x * x).sum(1)
    rows = _block_rows(len(x), x.element_size(), block_size, block_bytes)
    for start in range(0, len(q), rows):
        qb = q[start : start + rows]
        d2 = torch.addmm(x_sq.unsqueeze(0), qb, x.T, beta=1.0, alpha=-2.0)
        if not rank_only:
            d2.add_((qb * qb).sum(1, keepdim=True)).clamp_(min=0.0)
        yield start, d2


def _torch_candidates(
    queries: Any,
    data: Any,
    k: int,
    own: np.ndarray | None,
    block_size: int | None,
    device: Any,
    dtype: Any,
) -> np.ndarray:
    """Return the ``k`` nearest data rows per query; ``own[i]`` (if given) is excluded."""
    import torch

    out = np.empty((len(queries), k), dtype=np.int64)
    blocks = _blocks(queries, data, device, dtype, block_size, True, _CANDIDATE_BYTES)
    for start, d2 in blocks:
        if own is not None:
            rows = torch.arange(d2.shape[0], device=d2.device)
            cols = torch.from_numpy(own[start : start + d2.shape[0]]).to(d2.device)
            d2[rows, cols] = float("inf")
        _, idx = torch.topk(d2, k, dim=1, largest=False, sorted=True)
        out[start : start + len(idx)] = idx.cpu().numpy()
    return out


def _faiss_candidates(queries: Any, data: Any, k: int, exclude_self: bool) -> np.ndarray:
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ValidationError(
            "backend='faiss' needs faiss-cpu: pip install 'clt-gen[faiss]' (or use "
            "backend='torch', the default)"
        ) from exc
    x = np.ascontiguousarray(np.asarray(data, dtype=np.float32))
    q = np.ascontiguousarray(np.asarray(queries, dtype=np.float32))
    index = faiss.IndexFlatL2(x.shape[1])
    index.add(x)
    _, idx = index.search(q, k + (1 if exclude_self else 0))
    if exclude_self:
        own = np.arange(len(q))[:, None]
        keep = idx != own
        # drop the query itself where it came back; otherwise the last (farthest) one
        keep[keep.all(1), -1] = False
        idx = idx[keep].reshape(len(q), k)
    return idx.astype(np.int64)


def _tiled_candidates(
    q: np.ndarray,
    x: np.ndarray,
    q_s: np.ndarray,
    x_s: np.ndarray,
    kc: int,
    exclude_self: bool,
    tdtype: Any,
) -> np.ndarray:
    """Candidates from :mod:`estimators._tiles`, on every torch thread."""
    import torch

    from estimators import _tiles

    same = q is x or (q.shape == x.shape and np.array_equal(q, x))
    dtype = np.float32 if tdtype == torch.float32 else np.float64
    workers = max(1, torch.get_num_threads())
    return _tiles.candidates(
        q_s, x_s, kc, exclude_self=exclude_self, same=same, dtype=dtype, n_workers=workers
    )


def _refine(
    queries: np.ndarray, data: np.ndarray, cand: np.ndarray, valid: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Exact float64 distances of the candidates, sorted ascending (ties by index).

    Entries where ``valid`` is False (padding) get distance ``inf`` and sort last.

    Each distance is the float64 sum of squared coordinate differences (no ``|q|² + |x|²
    − 2q·x`` cancellation). The gather and the sums run in torch, whose indexing and
    reductions use every core, a cache-sized block of queries at a time.
    """
    import torch

    q = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float64))
    x = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float64))
    c = torch.from_numpy(np.ascontiguousarray(cand, dtype=np.int64))
    out = torch.empty(cand.shape, dtype=torch.float64)
    step = max(1, _REFINE_BYTES // max(1, cand.shape[1] * x.shape[1] * 8))
    for s in range(0, len(q), step):
        diff = x[c[s : s + step]]
        diff -= q[s : s + step, None, :]
        out[s : s + step] = torch.einsum("ijk,ijk->ij", diff, diff)
    d2 = out.numpy()
    if valid is not None:
        d2[~valid] = np.inf
    order = np.lexsort((cand, d2), axis=1)
    return np.take_along_axis(d2, order, 1), np.take_along_axis(cand, order, 1)


def _unit_roundoff(backend: str, tdtype: Any) -> float:
    """Return the unit roundoff of the search's products (TF32/bf16 when torch allows them)."""
    import torch

    if tdtype == torch.float64:
        return 2.0**-53
    if backend in ("faiss", "tiles"):  # plain IEEE products on the CPU
        return 2.0**-24
    lowered = torch.get_float32_matmul_precision() != "highest"
    return 2.0**-8 if lowered or torch.backends.cuda.matmul.allow_tf32 else 2.0**-24


def _error_bound(q: np.ndarray, data: np.ndarray, unit: float) -> np.ndarray:
    """``2 (d + 8) u (|q| + max|x|)²`` per query: see :func:`uncertified_rows`."""
    x_max = float(np.sqrt(np.max(np.einsum("ij,ij->i", data, data))))
    q_norm = np.sqrt(np.einsum("ij,ij->i", q, q))
    return 2.0 * (q.shape[1] + 8) * unit * (q_norm + x_max) ** 2


def uncertified_rows(
    queries: np.ndarray, data: np.ndarray, d2: np.ndarray, k: int, unit: float
) -> np.ndarray:
    """Rows whose ``k`` nearest candidates might not be the ``k`` nearest data rows.

    ``d2`` holds the exact distances of each query's ``k + r`` candidates, ascending; the
    candidates were the ``k + r`` smallest distances as computed in a precision of unit
    roundoff ``unit`` on ``queries`` and ``data`` (the arrays the search saw). Computed as
    ``|q|² + |x|² − 2q·x`` after rounding the inputs, a distance is off by at most
    ``e_q = (d + 6) u (|q| + |x|)²``; we use ``2 (d + 8) u (|q| + max|x|)²``. A row is
    certified when its ``k``-th exact distance is below the largest candidate's minus
    ``2 e_q``: every other data row then lies farther than all ``k`` (ties included).
    """
    e_q = _error_bound(np.asarray(queries, dtype=np.float64), data, unit)
    return np.asarray(d2[:, k - 1] >= d2[:, -1] - 2.0 * e_q)


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _resolve_backend(backend: str, tdtype: Any, device: Any, queries: Any, n_pairs: int) -> str:
    """Pick the candidate search; ``auto`` chooses for CPU searches on arrays.

    ``tiles`` (numba) from ``2**23`` (query, data) pairs, below which compiling or loading
    its kernels would cost more than it saves; faiss for smaller float32 searches when
    installed; torch otherwise, and always on a GPU or for torch tensors.
    """
    import torch

    if backend not in BACKENDS:
        raise unknown_name_error("backend", backend, BACKENDS)
    if backend == "tiles" and not _importable("numba"):
        raise ValidationError(
            "backend='tiles' needs numba (a dependency of clt-gen: pip install numba), or "
            "use backend='torch'"
        )
    if backend != "auto":
        return backend
    on_cpu = device is None and not torch.cuda.is_available() or str(device) == "cpu"
    if not on_cpu or isinstance(queries, torch.Tensor):
        return "torch"
    if n_pairs >= _TILES_MIN_PAIRS and _importable("numba"):
        return "tiles"
    if tdtype == torch.float32 and _importable("faiss"):
        return "faiss"
    return "torch"


def knn_search(
    queries: Any,
    data: Any,
    k: int,
    *,
    exclude_self: bool = False,
    block_size: int | None = None,
    device: Any = None,
    dtype: Any = "float32",
    refine: int = 4,
    backend: str = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """Return the ``k`` nearest rows of ``data`` for each row of ``queries``.

    Parameters
    ----------
    queries : array of shape (n_queries, n_features)
    data : array of shape (n_data, n_features)
    k : int
        Number of neighbours, ``1 <= k <= n_data`` (``< n_data`` with ``exclude_self``).
    exclude_self : bool
        ``queries`` and ``data`` are the same points: a point is never its own neighbour
        (excluded by index, so exact duplicates still count as neighbours).
    block_size : int, optional
        Queries per block; by default the distance block stays under 256 MiB.
    device : optional
        Torch device; CUDA when available by default.
    dtype : {"float32", "float64"}
        Precision of the candidate search. Returned neighbours and distances are always
        the float64-exact ones.
    refine : int
        Extra candidates beyond ``k``, re-ranked by their exact float64 distances. They
        certify the neighbour set: a query whose ``k``-th exact distance is not below
        the last candidate's by twice the search's rounding-error bound (see
        :func:`uncertified_rows`) is searched again: a float64 pass gathers every data
        row within its ``k``-th exact distance (plus float64's error bound), exact ties
        included, so the neighbours are always the exact ones, ties broken by index.
    backend : {"auto", "tiles", "torch", "faiss"}
        Candidate search: BLAS tiles scanned by compiled heaps (numba), blocked matrix
        products and ``topk`` in torch, or faiss ``IndexFlatL2``. ``auto``, on the CPU:
        ``tiles`` from ``2**23`` query-data pairs, faiss for smaller float32 searches
        when faiss-cpu is installed (the ``faiss`` extra), torch otherwise; torch on a
        GPU and for torch tensors. All return the same neighbours after the float64
        refinement.

    Returns
    -------
    dist2 : ndarray of shape (n_queries, k)
        Squared Euclidean distances (float64), ascending; ties by index.
    indices : ndarray of shape (n_queries, k)
        Row indices into ``data``.

    Examples
    --------
    >>> import numpy as np
    >>> data = np.array([[0.0], [1.0], [3.0]])
    >>> d2, idx = knn_search(np.array([[0.9]]), data, 2)
    >>> idx.tolist(), np.round(d2, 6).tolist()
    ([[1, 0]], [[0.01, 0.81]])
    """
    limit = len(data) - 1 if exclude_self else len(data)
    if not (isinstance(k, (int, np.integer)) and 1 <= k <= limit):
        raise ValidationError(
            f"k must be an int >= 1 and <= {limit} (the number of candidate neighbours; got {k!r})"
        )
    if not (isinstance(refine, (int, np.integer)) and refine >= 1):
        raise ValidationError(
            f"refine must be an int >= 1 (extra candidates that certify the neighbour set; "
            f"got {refine!r}); the default is 4"
        )
    tdtype = _torch_dtype(dtype)

    backend = _resolve_backend(backend, tdtype, device, queries, len(queries) * len(data))
    kc = min(limit, int(k) + int(refine))
    return _search(queries, data, int(k), kc, exclude_self, backend, tdtype, block_size, device)


def _search(
    queries: Any,
    data: Any,
    k: int,
    kc: int,
    exclude_self: bool,
    backend: str,
    tdtype: Any,
    block_size: int | None,
    device: Any,
) -> tuple[np.ndarray, np.ndarray]:
    """``kc`` candidates per query, refined in float64, checked; the ``k`` nearest."""
    import torch

    limit = len(data) - 1 if exclude_self else len(data)
    q = queries.cpu().numpy() if isinstance(queries, torch.Tensor) else np.asarray(queries)
    x = data.cpu().numpy() if isinstance(data, torch.Tensor) else np.asarray(data)
    for name, arr in (("queries", q), ("data", x)):
        if not np.isfinite(arr).all():
            raise ValidationError(
                f"{name} must be finite (found NaN or inf in an array of shape {arr.shape}); "
                "drop or impute those rows first"
            )
    # distances are translation invariant: centring keeps |q|² + |x|² − 2q·x from
    # cancelling catastrophically on features far from the origin
    centre = x.mean(0, dtype=np.float64)
    q_s, x_s = q.astype(np.float64) - centre, x.astype(np.float64) - centre
    own = np.arange(len(q)) if exclude_self else None
    if backend == "faiss":
        cand = _faiss_candidates(q_s, x_s, kc, exclude_self)
    elif backend == "tiles":
        cand = _tiled_candidates(q, x, q_s, x_s, kc, exclude_self, tdtype)
    else:
        on = queries.device if isinstance(queries, torch.Tensor) else device
        cand = _torch_candidates(q_s, x_s, kc, own, block_size, on, tdtype)
    d2, idx = _refine(q, x, cand)
    if kc < limit:
        unit = _unit_roundoff(backend, tdtype)
        _recheck(q, x, q_s, x_s, d2, idx, k, own, unit, block_size)
    return d2[:, :k], idx[:, :k]


def _recheck(
    q: np.ndarray,
    x: np.ndarray,
    q_s: np.ndarray,
    x_s: np.ndarray,
    d2: np.ndarray,
    idx: np.ndarray,
    k: int,
    own: np.ndarray | None,
    unit: float,
    block_size: int | None,
) -> None:
    """Search again, in place, the rows whose candidates do not certify their neighbours.

    Each such row's ``k``-th exact candidate distance bounds its true ``k``-th distance
    from above, so every data row at computed float64 distance within that plus float64's
    error bound is gathered (a superset of the true ``k`` nearest, exact ties included),
    refined exactly and sorted by distance, then index.
    """
    import torch

    bad = np.flatnonzero(uncertified_rows(q_s, x_s, d2, k, unit))
    if not len(bad):
        return
    radius = d2[bad, k - 1] + 2.0 * _error_bound(q_s[bad], x_s, 2.0**-53)
    for start, block in _blocks(q_s[bad], x_s, "cpu", torch.float64, block_size):
        rows = bad[start : start + block.shape[0]]
        near = block <= torch.from_numpy(radius[start : start + len(rows)]).unsqueeze(1)
        if own is not None:
            near[torch.arange(len(rows)), torch.from_numpy(own[rows])] = False
        r, c = (t.numpy() for t in torch.nonzero(near, as_tuple=True))
        counts = np.bincount(r, minlength=len(rows))
        slot = np.arange(len(r)) - np.repeat(np.cumsum(counts) - counts, counts)
        cand = np.zeros((len(rows), max(counts.max(), d2.shape[1])), dtype=np.int64)
        cand[r, slot] = c
        valid = np.zeros(cand.shape, dtype=bool)
        valid[r, slot] = True
        row_d2, row_idx = _refine(q[rows], x, cand, valid)
        d2[rows], idx[rows] = row_d2[:, : d2.shape[1]], row_idx[:, : d2.shape[1]]


def count_within(
    queries: Any,
    data: Any,
    radius2: np.ndarray,
    *,
    block_size: int | None = None,
    device: Any = None,
    dtype: Any = "float64",
) -> np.ndarray:
    """For each query, the number of ``data`` rows at squared distance ``<= radius2``."""
    import torch

    tdtype = _torch_dtype(dtype)
    counts = np.empty(len(queries), dtype=np.int64)
    r_all = torch.as_tensor(np.asarray(radius2, dtype=np.float64))
    for start, d2 in _blocks(queries, data, device, tdtype, block_size):
        r = r_all[start : start + d2.shape[0]].to(device=d2.device, dtype=d2.dtype)
        counts[start : start + d2.shape[0]] = (d2 <= r.unsqueeze(1)).sum(1).cpu().numpy()
    return counts

"""Exact brute-force nearest neighbours in memory-bounded blocks of matrix products.

Squared Euclidean distances ``|q|² − 2 q·x + |x|²`` are computed a block of queries at a
time with one BLAS matrix product (on the GPU when one is present), followed by a
partial sort (``topk``). Peak memory is the block of distances, not ``n × n``.

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
import torch

__all__ = ["knn_search", "count_within", "default_device"]

_BLOCK_BYTES = 256 * 2**20  # distance block budget


def default_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _prepare(
    a: np.ndarray | torch.Tensor, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    t = a if isinstance(a, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(a))
    return t.to(device=device, dtype=dtype)


def _block_rows(n_data: int, itemsize: int, block_size: int | None) -> int:
    if block_size is not None:
        return max(1, int(block_size))
    return max(1, min(8192, _BLOCK_BYTES // max(1, n_data * itemsize)))


def _blocks(
    queries: Any, data: Any, device: Any, dtype: torch.dtype, block_size: int | None
) -> Any:
    dev = torch.device(device) if device is not None else default_device()
    q = _prepare(queries, dev, dtype)
    x = _prepare(data, dev, dtype)
    x_sq = (x * x).sum(1)
    rows = _block_rows(len(x), x.element_size(), block_size)
    for start in range(0, len(q), rows):
        qb = q[start : start + rows]
        d2 = torch.addmm(x_sq.unsqueeze(0), qb, x.T, beta=1.0, alpha=-2.0)
        d2.add_((qb * qb).sum(1, keepdim=True)).clamp_(min=0.0)
        yield start, d2


def knn_search(
    queries: np.ndarray | torch.Tensor,
    data: np.ndarray | torch.Tensor,
    k: int,
    *,
    exclude_self: bool = False,
    block_size: int | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float64,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest rows of ``data`` for each row of ``queries`` (exact).

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
    dtype : torch dtype
        float64 (default, exact ordering) or float32 (faster, ties may reorder).

    Returns
    -------
    dist2 : ndarray of shape (n_queries, k)
        Squared Euclidean distances, ascending.
    indices : ndarray of shape (n_queries, k)
        Row indices into ``data``.
    """
    n_data = len(data)
    limit = n_data - 1 if exclude_self else n_data
    if not 1 <= k <= limit:
        from estimators.errors import ValidationError

        raise ValidationError(
            f"k must be an int >= 1 and <= {limit} (the number of candidate neighbours; got {k})"
        )
    out_d = np.empty((len(queries), k))
    out_i = np.empty((len(queries), k), dtype=np.int64)
    for start, d2 in _blocks(queries, data, device, dtype, block_size):
        if exclude_self:
            rows = torch.arange(d2.shape[0], device=d2.device)
            d2[rows, rows + start] = float("inf")
        vals, idx = torch.topk(d2, k, dim=1, largest=False, sorted=True)
        out_d[start : start + len(vals)] = vals.cpu().numpy()
        out_i[start : start + len(vals)] = idx.cpu().numpy()
    return out_d, out_i


def count_within(
    queries: np.ndarray | torch.Tensor,
    data: np.ndarray | torch.Tensor,
    radius2: np.ndarray,
    *,
    block_size: int | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float64,
) -> np.ndarray:
    """For each query, the number of ``data`` rows at squared distance ``<= radius2``."""
    counts = np.empty(len(queries), dtype=np.int64)
    r_all = torch.as_tensor(np.asarray(radius2, dtype=np.float64))
    for start, d2 in _blocks(queries, data, device, dtype, block_size):
        r = r_all[start : start + d2.shape[0]].to(device=d2.device, dtype=d2.dtype)
        counts[start : start + d2.shape[0]] = (d2 <= r.unsqueeze(1)).sum(1).cpu().numpy()
    return counts

"""Quantization of features into k-means cells, and label counts per cell.

Shared by the plug-in-on-cells estimator (:mod:`estimators.methods`) and the
frozen-feature bound (:func:`clt_gen.bounds.frozen_feature_bound`).

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> z = np.r_[rng.normal(size=(50, 2)), rng.normal(size=(50, 2)) + 8]
>>> km = kmeans_cells(z, 2, rng)
>>> counts = cell_counts(km.predict(z), np.r_[np.zeros(50, int), np.ones(50, int)], 2, 2)
>>> sorted(counts.max(1).tolist())
[50.0, 50.0]
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["kmeans_cells", "cell_counts"]


def kmeans_cells(z: np.ndarray, n_cells: int, rng: np.random.Generator) -> Any:
    """Return a k-means quantizer with ``n_cells`` cells fitted on ``z`` (3 seeded restarts).

    Parameters
    ----------
    z : array (n_samples, d)
    n_cells : int
    rng : numpy Generator
        Draws the k-means seed (one integer).

    Returns
    -------
    sklearn.cluster.KMeans
        Fitted; ``predict`` gives the cell of new rows.
    """
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=n_cells, n_init=3, random_state=int(rng.integers(2**31)))
    return km.fit(z)


def cell_counts(
    codes: np.ndarray,
    y: np.ndarray,
    n_cells: int,
    n_classes: int,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """``(n_cells, n_classes)`` (weighted) label counts per cell.

    Parameters
    ----------
    codes, y : arrays of int
        Cell and label of each row.
    n_cells, n_classes : int
    weights : array, optional
        Row weights (bootstrap); 1 by default.

    Returns
    -------
    array of float
    """
    flat = np.asarray(codes) * n_classes + np.asarray(y)
    counts = np.bincount(flat, weights=weights, minlength=n_cells * n_classes)
    return counts.reshape(n_cells, n_classes).astype(np.float64)

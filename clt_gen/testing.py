"""Public Hypothesis strategies for property-testing Fenchel–Young losses.

Users can test their own losses and estimators with the same generators the project
uses for its own identities (THEORY §1–§2).

Examples
--------
>>> from hypothesis import given, settings
>>> from clt_gen.testing import probability_vectors
>>> @settings(max_examples=20, deadline=None)
... @given(probability_vectors(n_classes=3))
... def check_sums_to_one(p):
...     assert abs(p.sum() - 1.0) < 1e-12
>>> check_sums_to_one()
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from hypothesis import strategies as st

from clt_gen.duality import REGULARIZERS, Regularizer, get_regularizer

__all__ = [
    "n_classes",
    "probability_vectors",
    "score_vectors",
    "regularizers",
    "joint_distributions",
    "non_injective_maps",
    "bijections",
    "small_networks",
    "merge_cells",
]


def n_classes(min_value: int = 2, max_value: int = 8) -> st.SearchStrategy[int]:
    """Numbers of classes ``K`` in ``[min_value, max_value]``."""
    return st.integers(min_value=min_value, max_value=max_value)


@st.composite
def probability_vectors(
    draw: Any,
    n_classes: int | None = None,
    *,
    kind: str = "any",
    max_classes: int = 8,
) -> np.ndarray:
    """Points of the simplex ``Δ_K`` (float64, summing to one).

    Parameters
    ----------
    n_classes : int, optional
        ``K``; drawn from ``[2, max_classes]`` when omitted.
    kind : {"any", "interior", "sparse", "vertex"}
        ``interior``: every entry > 0; ``sparse``: some exact zeros;
        ``vertex``: a one-hot vector; ``any``: a mix of all three.
    """
    k = n_classes if n_classes is not None else draw(st.integers(2, max_classes))
    if kind == "any":
        kind = draw(st.sampled_from(["interior", "interior", "sparse", "vertex"]))
    if kind == "vertex":
        p = np.zeros(k)
        p[draw(st.integers(0, k - 1))] = 1.0
        return p
    weights = draw(st.lists(st.floats(1e-3, 1.0, allow_nan=False), min_size=k, max_size=k))
    w = np.asarray(weights, dtype=np.float64)
    if kind == "sparse":
        mask = draw(st.lists(st.booleans(), min_size=k, max_size=k))
        mask[draw(st.integers(0, k - 1))] = True  # keep at least one entry
        w = w * np.asarray(mask, dtype=np.float64)
    return w / w.sum()


@st.composite
def score_vectors(
    draw: Any, n_classes: int | None = None, *, scale: float = 10.0, max_classes: int = 8
) -> np.ndarray:
    """Score vectors ``ν ∈ R^K`` with entries in ``[-scale, scale]`` (float64)."""
    k = n_classes if n_classes is not None else draw(st.integers(2, max_classes))
    vals = draw(
        st.lists(
            st.floats(-scale, scale, allow_nan=False, allow_infinity=False),
            min_size=k,
            max_size=k,
        )
    )
    return np.asarray(vals, dtype=np.float64)


def regularizers(
    names: list[str] | None = None, alphas: tuple[float, float] = (1.1, 3.0)
) -> st.SearchStrategy[Regularizer]:
    """Return the registered regularizers; ``tsallis`` with ``alpha`` drawn from ``alphas``."""
    chosen = names if names is not None else sorted(REGULARIZERS)

    def build(name: str) -> st.SearchStrategy[Regularizer]:
        if name == "tsallis":
            return st.floats(*alphas).map(lambda a: get_regularizer("tsallis", alpha=a))
        return st.just(get_regularizer(name))

    return st.one_of([build(n) for n in chosen])


@st.composite
def joint_distributions(
    draw: Any, n_cells: int | None = None, n_classes: int | None = None, max_size: int = 8
) -> np.ndarray:
    """Finite joint distributions ``p[z, y]`` (rows: cells ``z``; columns: labels ``y``).

    Some cells may be empty and some conditionals deterministic.
    """
    nz = n_cells if n_cells is not None else draw(st.integers(1, max_size))
    k = n_classes if n_classes is not None else draw(st.integers(2, max_size))
    cells = draw(
        st.lists(
            st.lists(st.sampled_from([0.0, 0.0, 0.1, 0.5, 1.0, 2.0, 3.0]), min_size=k, max_size=k),
            min_size=nz,
            max_size=nz,
        )
    )
    p = np.asarray(cells, dtype=np.float64)
    if p.sum() == 0:
        p[0, 0] = 1.0
    return p / p.sum()


@st.composite
def non_injective_maps(draw: Any, n_cells: int) -> np.ndarray:
    """Return a map ``φ: {0..n-1} -> {0..m-1}`` as an index array, with ``m <= n`` cells."""
    m = draw(st.integers(1, max(1, n_cells)))
    return np.asarray(
        draw(st.lists(st.integers(0, m - 1), min_size=n_cells, max_size=n_cells)), dtype=np.int64
    )


@st.composite
def bijections(draw: Any, n_cells: int) -> np.ndarray:
    """Return a permutation of ``{0..n-1}`` as an index array."""
    return np.asarray(draw(st.permutations(list(range(n_cells)))), dtype=np.int64)


def merge_cells(joint: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """Return the joint of ``(φ(Z), Y)``: rows of ``joint`` summed by their image under ``phi``."""
    out = np.zeros((int(phi.max()) + 1, joint.shape[1]))
    np.add.at(out, phi, joint)
    return out


@st.composite
def small_networks(
    draw: Any, n_features: int = 4, n_classes: int = 3, dtype: torch.dtype = torch.float64
) -> torch.nn.Module:
    """Small seeded MLPs (depth 1–3, width 2–8, tanh/ReLU) for trainability tests."""
    depth = draw(st.integers(1, 3))
    width = draw(st.integers(2, 8))
    act = draw(st.sampled_from([torch.nn.Tanh, torch.nn.ReLU]))
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    layers: list[torch.nn.Module] = []
    d = n_features
    for _ in range(depth):
        layers += [torch.nn.Linear(d, width), act()]
        d = width
    layers.append(torch.nn.Linear(d, n_classes))
    net = torch.nn.Sequential(*layers).to(dtype)
    with torch.no_grad():
        for prm in net.parameters():
            prm.copy_(torch.randn(prm.shape, generator=gen, dtype=dtype) * 0.7)
    return net

"""Rank agreement between a measure and the generalization gap over checkpoints.

Kendall τ (with a bootstrap interval over checkpoints), granulated Kendall Ψ (Jiang et
al. 2020), the PGDL conditional-mutual-information score, the robust per-hyperparameter
view of Dziugaite et al. (2020), and Clopper–Pearson intervals for the coverage of
certificates over a population.

All three are exact, work on ordered pairs ``i ≠ j`` (no self-pairs) and are tie-aware:
a tie contributes 0 to τ and is its own category (sign 0) in the mutual information.
All are invariant to strictly increasing transforms of the measure.

Examples
--------
>>> gap = [0.1, 0.2, 0.3, 0.4]
>>> kendall_tau([1, 2, 3, 4], gap)
1.0
>>> kendall_tau([4, 3, 2, 1], gap)
-1.0
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from clt_gen.errors import ValidationError

__all__ = [
    "kendall_tau",
    "granulated_kendall",
    "GranulatedKendall",
    "pgdl_score",
    "PGDL_CONVENTIONS",
    "by_stratum",
    "kendall_tau_interval",
    "robust_sign_agreement",
    "RobustAgreement",
    "coverage_interval",
    "clopper_pearson",
]


def _vectors(measure: Any, gap: Any) -> tuple[np.ndarray, np.ndarray]:
    m = np.asarray(measure, dtype=np.float64)
    g = np.asarray(gap, dtype=np.float64)
    if m.ndim != 1 or m.shape != g.shape:
        raise ValidationError(
            f"measure and gap must be 1-D arrays of the same length (got shapes {m.shape} and "
            f"{g.shape})"
        )
    if len(m) < 2:
        raise ValidationError(f"need at least 2 checkpoints (got {len(m)})")
    if not (np.all(np.isfinite(m)) and np.all(np.isfinite(g))):
        raise ValidationError("measure and gap must be finite; drop checkpoints with NaN values")
    return m, g


def kendall_tau(measure: Any, gap: Any) -> float:
    """``τ = (1/(n(n−1))) Σ_{i≠j} sign(μ_i − μ_j) sign(g_i − g_j)`` (τ-a; ties count 0).

    Parameters
    ----------
    measure : array-like of shape (n_models,)
        The predictor, one value per checkpoint.
    gap : array-like of shape (n_models,)
        The generalization gaps.

    Returns
    -------
    float
        In ``[−1, 1]``.

    Examples
    --------
    >>> kendall_tau([1, 2, 3], [0.1, 0.2, 0.3])
    1.0
    """
    m, g = _vectors(measure, gap)
    sm = np.sign(m[:, None] - m[None, :])
    sg = np.sign(g[:, None] - g[None, :])
    n = len(m)
    return float((sm * sg).sum() / (n * (n - 1)))


@dataclass(frozen=True)
class GranulatedKendall:
    """The granulated Kendall coefficient Ψ and its per-hyperparameter parts.

    ``psi``: per hyperparameter, the mean τ over groups where only it varies;
    ``value``: their mean (Ψ).
    """

    value: float
    psi: dict[str, float]
    n_groups: dict[str, int]


def _hp_columns(hyperparams: Mapping[str, Sequence[Any]], n: int) -> dict[str, list[Any]]:
    if not hyperparams:
        raise ValidationError("hyperparams must name at least one hyperparameter")
    cols = {}
    for name, vals in hyperparams.items():
        v = list(vals)
        if len(v) != n:
            raise ValidationError(
                f"hyperparams[{name!r}] must have one value per checkpoint ({n}; got {len(v)})"
            )
        cols[name] = [repr(x) for x in v]
    return cols


def granulated_kendall(
    measure: Any, gap: Any, hyperparams: Mapping[str, Sequence[Any]]
) -> GranulatedKendall:
    """Granulated Kendall Ψ: τ within groups that differ in one hyperparameter only.

    Parameters
    ----------
    measure : array-like of shape (n_models,)
    gap : array-like of shape (n_models,)
    hyperparams : mapping
        Hyperparameter name -> its value for each checkpoint.

    Returns
    -------
    GranulatedKendall

    Examples
    --------
    >>> hps = {"lr": [1, 2, 1, 2], "wd": [0, 0, 1, 1]}
    >>> out = granulated_kendall([1, 2, 3, 4], [1, 2, 3, 4], hps)
    >>> out.value
    1.0
    """
    m, g = _vectors(measure, gap)
    cols = _hp_columns(hyperparams, len(m))
    psi, counts = {}, {}
    for name in cols:
        others = [c for c in cols if c != name]
        groups: dict[tuple[str, ...], list[int]] = {}
        for i in range(len(m)):
            groups.setdefault(tuple(cols[o][i] for o in others), []).append(i)
        taus = [
            kendall_tau(m[idx], g[idx])
            for idx in groups.values()
            if len(idx) >= 2 and len({cols[name][i] for i in idx}) >= 2
        ]
        if taus:
            psi[name] = float(np.mean(taus))
            counts[name] = len(taus)
    if not psi:
        raise ValidationError(
            "no group varies in a single hyperparameter: the grid is too "
            "sparse for granulated Kendall"
        )
    return GranulatedKendall(float(np.mean(list(psi.values()))), psi, counts)


def _entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def _mutual_information(table: np.ndarray) -> float:
    return _entropy(table.sum(1)) + _entropy(table.sum(0)) - _entropy(table.ravel())


PGDL_CONVENTIONS: tuple[str, ...] = ("pgdl", "clt_gen")


def pgdl_score(
    measure: Any,
    gap: Any,
    hyperparams: Mapping[str, Sequence[Any]],
    *,
    convention: str = "pgdl",
    max_conditioning: int = 2,
) -> dict[str, Any]:
    """PGDL / Jiang et al. conditional mutual information score.

    ``convention="pgdl"`` (default) follows the competition's scoring program, so the
    value can be set next to published PGDL scores: all ordered pairs *including*
    ``i = j``; ``V_g = 1[g_i > g_j]`` and ``V_μ = 1[μ_i > μ_j]`` (a tie counts as "−");
    conditioning on every ordered pair of distinct hyperparameters ``(h1, h2)``, a cell per
    joint value of ``(h1, h2)`` for both models; mutual information and the entropy of
    ``V_g`` averaged uniformly over cells; the score is the minimum over pairs of their
    ratio. With a single hyperparameter it conditions on that one.

    ``convention="clt_gen"`` is this project's reading of the definition below. For
    ordered pairs ``i ≠ j``, ``V_g = sign(g_i − g_j)``, ``V_μ = sign(μ_i − μ_j)``. For
    each set ``S`` of ``max_conditioning`` hyperparameters (at most all but one, so that
    something varies within a cell; the empty set when there is one hyperparameter),
    ``Î(V_μ; V_g | U_S) / Ĥ(V_g | U_S)`` with ``U_S`` the joint values of ``S`` for both
    checkpoints of the pair (cells weighted by their frequency). The score is the minimum
    over ``S``, in ``[0, 1]`` (PGDL reports it ×100).

    Parameters
    ----------
    measure : array-like of shape (n_models,)
    gap : array-like of shape (n_models,)
    hyperparams : mapping
        Hyperparameter name -> its value for each checkpoint.
    convention : {"pgdl", "clt_gen"}
        See above.
    max_conditioning : int
        ``clt_gen`` only: the size of the conditioning sets.

    Returns
    -------
    dict
        ``value`` (the minimum), ``per_set`` (each conditioning set's value) and
        ``argmin``.

    Examples
    --------
    >>> out = pgdl_score([1, 2, 3, 4], [1, 2, 3, 4], {"lr": [1, 2, 1, 2], "wd": [0, 0, 1, 1]})
    >>> 0 <= out["value"] <= 1
    True
    """
    m, g = _vectors(measure, gap)
    cols = _hp_columns(hyperparams, len(m))
    if convention not in PGDL_CONVENTIONS:
        from estimators.errors import unknown_name_error

        raise unknown_name_error("convention", convention, PGDL_CONVENTIONS)
    if convention == "pgdl":
        return _pgdl_competition(m, g, cols)
    names = sorted(cols)
    # conditioning on every hyperparameter would pin both checkpoints down: leave one free
    size = min(max_conditioning, len(names) - 1)
    n = len(m)
    ii, jj = np.where(~np.eye(n, dtype=bool))
    vm = np.sign(m[ii] - m[jj]).astype(int) + 1
    vg = np.sign(g[ii] - g[jj]).astype(int) + 1
    per_set: dict[str, float] = {}
    for subset in itertools.combinations(names, size):
        keys = [
            tuple(cols[s][i] for s in subset) + tuple(cols[s][j] for s in subset)
            for i, j in zip(ii, jj, strict=True)
        ]
        cells: dict[tuple[str, ...], np.ndarray] = {}
        for key, a, b in zip(keys, vm, vg, strict=True):
            cells.setdefault(key, np.zeros((3, 3)))[a, b] += 1
        total = len(keys)
        cmi = sum(t.sum() / total * _mutual_information(t) for t in cells.values())
        h = sum(t.sum() / total * _entropy(t.sum(0)) for t in cells.values())
        per_set[",".join(subset)] = float(cmi / h) if h > 0 else 0.0
    arg = min(per_set, key=lambda k: per_set[k])
    return {"value": per_set[arg], "per_set": per_set, "argmin": arg, "convention": "clt_gen"}


def _pgdl_competition(m: np.ndarray, g: np.ndarray, cols: dict[str, list[str]]) -> dict[str, Any]:
    """Return the competition scorer's conventions (see :func:`pgdl_score`).

    Vectorized: each cell is a joint value of ``(h1, h2)`` for both models, coded as one
    integer, and its 2×2 table of ``(V_μ, V_g)`` is counted with one ``bincount``.
    """
    names = sorted(cols)
    n = len(m)
    codes = {}
    for name in names:
        _, inv = np.unique(np.asarray(cols[name], dtype=object).astype(str), return_inverse=True)
        codes[name] = inv.astype(np.int64)
    vm = (m[:, None] > m[None, :]).astype(np.int64).ravel()
    vg = (g[:, None] > g[None, :]).astype(np.int64).ravel()
    pairs = list(itertools.permutations(names, 2)) if len(names) >= 2 else [tuple(names)]
    per_set: dict[str, float] = {}
    for subset in pairs:
        key = np.zeros(n, dtype=np.int64)
        for s in subset:
            key = key * (codes[s].max() + 1) + codes[s]
        k = int(key.max()) + 1
        cell = (key[:, None] * k + key[None, :]).ravel()
        _, cell = np.unique(cell, return_inverse=True)
        tables = np.bincount(cell * 4 + vm * 2 + vg, minlength=4 * (cell.max() + 1))
        tables = tables.reshape(-1, 2, 2).astype(np.float64)
        cmi = float(np.mean([_mutual_information(t) for t in tables]))
        h = float(np.mean([_entropy(t.sum(0)) for t in tables]))
        per_set[",".join(subset)] = cmi / h if h > 0 else 0.0
    arg = min(per_set, key=lambda k: per_set[k])
    return {"value": per_set[arg], "per_set": per_set, "argmin": arg, "convention": "pgdl"}


def by_stratum(measure: Any, gap: Any, strata: Sequence[Any]) -> dict[str, float]:
    """Kendall τ pooled (key ``"all"``) and within each stratum (depth, width, dataset...)."""
    m, g = _vectors(measure, gap)
    s = [repr(v) for v in strata]
    if len(s) != len(m):
        raise ValidationError(f"strata must have one value per checkpoint ({len(m)}; got {len(s)})")
    out = {"all": kendall_tau(m, g)}
    for level in sorted(set(s)):
        idx = [i for i, v in enumerate(s) if v == level]
        if len(idx) >= 2:
            out[level] = kendall_tau(m[idx], g[idx])
    return out


def kendall_tau_interval(
    measure: Any,
    gap: Any,
    *,
    n_bootstrap: int = 1000,
    level: float = 0.95,
    random_state: int = 0,
) -> tuple[float, float, float]:
    """Kendall τ with a percentile bootstrap interval over checkpoints.

    Checkpoints are resampled with replacement; a checkpoint drawn twice forms a tied
    pair with itself (counted 0, as τ-a counts every tie).

    Parameters
    ----------
    measure, gap : array-like of shape (n_models,)
    n_bootstrap : int
        Resamples.
    level : float
        Two-sided level of the interval.
    random_state : int
        Seeds the resampling.

    Returns
    -------
    (tau, low, high) : tuple of float

    Examples
    --------
    >>> tau, lo, hi = kendall_tau_interval(range(30), range(30), n_bootstrap=200)
    >>> tau, lo <= hi <= 1.0
    (1.0, True)
    """
    m, g = _vectors(measure, gap)
    if not (isinstance(n_bootstrap, int) and n_bootstrap >= 2):
        raise ValidationError(f"n_bootstrap must be an int >= 2 (got {n_bootstrap!r})")
    if not 0.0 < level < 1.0:
        raise ValidationError(f"level must be in (0, 1) (got {level!r}); 0.95 is usual")
    n = len(m)
    sm = np.sign(m[:, None] - m[None, :])
    sg = np.sign(g[:, None] - g[None, :])
    prod = sm * sg
    rng = np.random.default_rng(random_state)
    taus = np.empty(n_bootstrap)
    for b in range(n_bootstrap):
        idx = rng.integers(0, n, n)
        taus[b] = prod[np.ix_(idx, idx)].sum() / (n * (n - 1))
    lo, hi = np.quantile(taus, [(1 - level) / 2, (1 + level) / 2])
    return float(prod.sum() / (n * (n - 1))), float(lo), float(hi)


@dataclass(frozen=True)
class RobustAgreement:
    """How often a measure orders the gaps of pairs that differ in one hyperparameter.

    ``per_hyperparameter[h]``: over pairs of checkpoints equal in every other
    hyperparameter (and in ``match_on``, e.g. the seed) but differing in ``h``, with
    different gaps, the fraction whose gap order the measure gets right (a tie in the
    measure is not right). ``n_pairs[h]``: how many such pairs. ``worst``: the
    hyperparameter with the lowest fraction, and ``value`` that fraction (Dziugaite et
    al. 2020: an average over hyperparameters hides the change a measure gets wrong).
    ``worst_cell[h]``: the lowest fraction over the groups of pairs sharing all other
    values (at least ``min_cell`` pairs), the worst environment within ``h``.
    """

    value: float
    worst: str
    per_hyperparameter: dict[str, float]
    n_pairs: dict[str, int]
    worst_cell: dict[str, float]


def robust_sign_agreement(
    measure: Any,
    gap: Any,
    hyperparams: Mapping[str, Sequence[Any]],
    *,
    match_on: Mapping[str, Sequence[Any]] | None = None,
    min_cell: int = 1,
) -> RobustAgreement:
    """Dziugaite et al.'s robust view: per hyperparameter, pairs differing only in it.

    Parameters
    ----------
    measure, gap : array-like of shape (n_models,)
    hyperparams : mapping
        Hyperparameter name -> its value for each checkpoint; each is scored.
    match_on : mapping, optional
        Columns a pair must share but which are not scored themselves (the seed: pairs
        then differ in exactly one hyperparameter and nothing else).
    min_cell : int
        Smallest group counted in ``worst_cell``.

    Returns
    -------
    RobustAgreement

    Examples
    --------
    >>> hps = {"lr": [1, 2, 1, 2], "wd": [0, 0, 1, 1]}
    >>> out = robust_sign_agreement([1, 2, 4, 3], [1, 2, 3, 4], hps)
    >>> out.per_hyperparameter, out.worst
    ({'lr': 0.5, 'wd': 1.0}, 'lr')
    """
    m, g = _vectors(measure, gap)
    cols = _hp_columns(hyperparams, len(m))
    fixed = _hp_columns(match_on, len(m)) if match_on else {}
    per, counts, worst_cell = {}, {}, {}
    n = len(m)
    for name in cols:
        others = [c for c in cols if c != name]
        groups: dict[tuple[str, ...], list[int]] = {}
        for i in range(n):
            key = tuple(cols[o][i] for o in others) + tuple(fixed[f][i] for f in fixed)
            groups.setdefault(key, []).append(i)
        right = total = 0
        cell_rates = []
        for idx in groups.values():
            r = t = 0
            for a, b in itertools.combinations(idx, 2):
                if cols[name][a] == cols[name][b] or g[a] == g[b]:
                    continue
                t += 1
                r += int(np.sign(m[a] - m[b]) == np.sign(g[a] - g[b]))
            right, total = right + r, total + t
            if t >= min_cell and t > 0:
                cell_rates.append(r / t)
        if total:
            per[name], counts[name] = right / total, total
            worst_cell[name] = float(min(cell_rates)) if cell_rates else float("nan")
    if not per:
        raise ValidationError(
            "no pair of checkpoints differs in a single hyperparameter (with the match_on "
            "columns equal): the grid is too sparse for the robust view"
        )
    worst = min(per, key=lambda k: per[k])
    return RobustAgreement(per[worst], worst, per, counts, worst_cell)


def clopper_pearson(k: int, n: int, *, level: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper–Pearson) two-sided interval for a binomial proportion ``k / n``.

    Each end is also the exact one-sided bound at ``(1 − level) / 2``.

    Examples
    --------
    >>> [round(v, 3) for v in clopper_pearson(19, 20)]
    [0.751, 0.999]
    """
    from scipy.stats import beta

    if not 0.0 < level < 1.0:
        raise ValidationError(f"level must be in (0, 1) (got {level!r}); 0.95 is usual")
    a = (1 - level) / 2
    low = 0.0 if k == 0 else float(beta.ppf(a, k, n - k + 1))
    high = 1.0 if k == n else float(beta.ppf(1 - a, k + 1, n - k))
    return low, high


def coverage_interval(held: Sequence[bool], *, level: float = 0.95) -> dict[str, float]:
    """Coverage of a certificate over independent trials, with a Clopper–Pearson interval.

    Parameters
    ----------
    held : sequence of bool
        One entry per trial: did the certificate hold on its check data?
    level : float
        Two-sided level of the exact binomial interval.

    Returns
    -------
    dict
        ``held``, ``n``, ``rate``, ``low``, ``high``.

    Examples
    --------
    >>> out = coverage_interval([True] * 19 + [False])
    >>> out["rate"], round(out["low"], 3), round(out["high"], 3)
    (0.95, 0.751, 0.999)
    """
    h = [bool(v) for v in held]
    n, k = len(h), sum(h)
    if n == 0:
        raise ValidationError("held must list at least one trial")
    low, high = clopper_pearson(k, n, level=level)
    return {"held": k, "n": n, "rate": k / n, "low": low, "high": high}

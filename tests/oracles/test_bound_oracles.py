"""Validation bounds against mpmath at 50 digits; Kendall τ against scipy; granulated Ψ
and the PGDL score against slow references written from the definitions (Jiang et al.
2019/2020 and the competition's scoring conventions); the data floor against brute-force
grouping on a binarized real dataset."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from clt_gen.bounds import data_floor, validation_bound
from clt_gen.population import granulated_kendall, kendall_tau, pgdl_score

mpmath = pytest.importorskip("mpmath", reason="mpmath is the high-precision oracle (test extra)")
mpmath.mp.dps = 50


def mp_binomial_upper(k: int, m: int, level: float) -> float:
    """Largest p with P(Bin(m, p) <= k) >= level, by bisection at 50 digits."""
    level_mp = mpmath.mpf(level)

    def tail(p):  # P(Bin(m, p) <= k), decreasing in p
        return mpmath.fsum(mpmath.binomial(m, i) * p**i * (1 - p) ** (m - i) for i in range(k + 1))

    lo, hi = mpmath.mpf(k) / m, mpmath.mpf(1)
    for _ in range(200):
        mid = (lo + hi) / 2
        if tail(mid) > level_mp:
            lo = mid
        else:
            hi = mid
    return float(hi)


def mp_kl_inverse(q: float, budget: float) -> float:
    qm, b = mpmath.mpf(q), mpmath.mpf(budget)

    def kl(p):
        out = mpmath.mpf(0)
        if qm > 0:
            out += qm * mpmath.log(qm / p)
        if qm < 1:
            out += (1 - qm) * mpmath.log((1 - qm) / (1 - p))
        return out

    lo, hi = qm, mpmath.mpf(1) - mpmath.mpf(10) ** -40
    if kl(hi) <= b:
        return 1.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if kl(mid) <= b:
            lo = mid
        else:
            hi = mid
    return float(lo)


CASES = [
    (0, 100, 1e-6, 10**11),
    (0, 100, 0.05, 1),
    (3, 1000, 1e-10, 10**20),
    (50, 200, 0.05, 1),
    (10, 10_000, 1e-3, 10**17),
    (7, 40, 1e-12, 10**18),
    (0, 30, 1e-2, 10**28),
]


@pytest.mark.parametrize(("k", "m", "delta", "n_candidates"), CASES)
def test_binomial_bound_matches_mpmath(k, m, delta, n_candidates):
    ours = validation_bound(k / m, m, delta=delta, n_candidates=n_candidates, method="binomial")
    ref = mp_binomial_upper(k, m, delta / n_candidates)
    assert abs(ours.value - ref) <= 1e-9
    assert ours.value >= ref - 1e-12  # never below the exact bound


@pytest.mark.parametrize(("k", "m", "delta", "n_candidates"), CASES)
def test_kl_bound_matches_mpmath(k, m, delta, n_candidates):
    ours = validation_bound(k / m, m, delta=delta, n_candidates=n_candidates, method="kl")
    ref = mp_kl_inverse(k / m, math.log(n_candidates / delta) / m)
    assert abs(ours.value - ref) <= 1e-9


def test_hoeffding_and_bernstein_closed_forms_at_50_digits():
    m, delta, nf = 10_000, 0.1, 10**9
    lt = mpmath.log(mpmath.mpf(nf) / mpmath.mpf(delta))
    hoef = validation_bound(0.0, m, delta=delta, n_candidates=nf, method="hoeffding")
    assert abs(hoef.value - float(mpmath.sqrt(lt / (2 * m)))) <= 1e-12
    bern = validation_bound(0.0, m, delta=delta, n_candidates=nf, variance=1.0, method="bernstein")
    ref = 2 * lt / (3 * m) + mpmath.sqrt(2 * lt / m)
    assert abs(bern.value - float(ref)) <= 1e-12
    assert round(bern.value, 4) == 0.0694  # KKB's example


@settings(max_examples=100)
@given(st.lists(st.integers(0, 4), min_size=3, max_size=25), st.integers(0, 2**31 - 1))
def test_kendall_tau_matches_scipy_tau_a_when_gap_has_no_ties(measure, seed):
    gap = np.random.default_rng(seed).permutation(len(measure)).astype(float)
    n = len(measure)
    # scipy's tau-b with no ties in gap: tau_a = tau_b * sqrt(n0 - n1) * sqrt(n0) / n0
    res = stats.kendalltau(measure, gap, variant="b")
    n0 = n * (n - 1) / 2
    ties = sum(c * (c - 1) / 2 for c in np.unique(measure, return_counts=True)[1])
    expected = 0.0 if ties == n0 else res.statistic * math.sqrt((n0 - ties) * n0) / n0
    assert kendall_tau(measure, gap) == pytest.approx(expected, abs=1e-12)


def slow_tau(m, g):
    n = len(m)
    s = sum(
        np.sign(m[i] - m[j]) * np.sign(g[i] - g[j]) for i in range(n) for j in range(n) if i != j
    )
    return s / (n * (n - 1))


def slow_psi(m, g, hp):
    names = list(hp)
    psis = []
    for h in names:
        others = [o for o in names if o != h]
        taus = []
        keys = {tuple(hp[o][i] for o in others) for i in range(len(m))}
        for key in keys:
            idx = [i for i in range(len(m)) if tuple(hp[o][i] for o in others) == key]
            if len(idx) >= 2 and len({hp[h][i] for i in idx}) >= 2:
                taus.append(slow_tau(m[idx], g[idx]))
        if taus:
            psis.append(np.mean(taus))
    return float(np.mean(psis))


def _h(counts):
    c = np.asarray([v for v in counts if v > 0], dtype=float)
    p = c / c.sum()
    return float(-(p * np.log(p)).sum())


def slow_pgdl(m, g, hp, convention):
    """From the definitions, with loops and dictionaries."""
    n, names = len(m), sorted(hp)
    if convention == "pgdl":
        pairs = [(i, j) for i in range(n) for j in range(n)]
        sign = lambda a, b: int(a > b)  # noqa: E731
        sets = list(itertools.permutations(names, 2))
    else:
        pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
        sign = lambda a, b: int(np.sign(a - b))  # noqa: E731
        sets = list(itertools.combinations(names, min(2, len(names) - 1)))
    scores = []
    for subset in sets:
        cells: dict = {}
        for i, j in pairs:
            key = tuple(hp[s][i] for s in subset) + tuple(hp[s][j] for s in subset)
            cells.setdefault(key, []).append((sign(m[i], m[j]), sign(g[i], g[j])))
        mis, hs, ws = [], [], []
        for obs in cells.values():
            joint: dict = {}
            for o in obs:
                joint[o] = joint.get(o, 0) + 1
            a = {}
            b = {}
            for (u, v), c in joint.items():
                a[u] = a.get(u, 0) + c
                b[v] = b.get(v, 0) + c
            mis.append(_h(a.values()) + _h(b.values()) - _h(joint.values()))
            hs.append(_h(b.values()))
            ws.append(len(obs))
        if convention == "pgdl":
            cmi, hh = np.mean(mis), np.mean(hs)
        else:
            w = np.asarray(ws) / sum(ws)
            cmi, hh = float(np.dot(w, mis)), float(np.dot(w, hs))
        scores.append(cmi / hh if hh > 0 else 0.0)
    return min(scores)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1), st.booleans())
def test_psi_and_pgdl_match_slow_references_on_a_2x2x2_grid(seed, ties):
    gen = np.random.default_rng(seed)
    grid = list(itertools.product([1, 2], [8, 16], [0.0, 0.5]))
    hp = {
        "depth": [a for a, _, _ in grid],
        "width": [b for _, b, _ in grid],
        "dropout": [c for _, _, c in grid],
    }
    g = gen.normal(size=8)
    m = gen.integers(0, 3, 8).astype(float) if ties else gen.normal(size=8)
    assert kendall_tau(m, g) == pytest.approx(slow_tau(m, g), abs=1e-12)
    assert granulated_kendall(m, g, hp).value == pytest.approx(slow_psi(m, g, hp), abs=1e-12)
    for conv in ("pgdl", "clt_gen"):
        ours = pgdl_score(m, g, hp, convention=conv)["value"]
        assert ours == pytest.approx(slow_pgdl(m, g, hp, conv), abs=1e-12)


def test_pgdl_conventions_differ_on_a_2x2x2_example():
    grid = list(itertools.product([1, 2], [8, 16], [0.0, 0.5]))
    hp = {
        "depth": [a for a, _, _ in grid],
        "width": [b for _, b, _ in grid],
        "dropout": [c for _, _, c in grid],
    }
    g = np.array([0.10, 0.12, 0.08, 0.15, 0.20, 0.18, 0.25, 0.22])
    m = np.array([1.0, 1.0, 0.5, 2.0, 2.0, 1.5, 3.0, 2.5])  # with ties
    a = pgdl_score(m, g, hp, convention="pgdl")["value"]
    b = pgdl_score(m, g, hp, convention="clt_gen")["value"]
    assert a != pytest.approx(b)
    assert a == pytest.approx(slow_pgdl(m, g, hp, "pgdl"))


def test_data_floor_matches_brute_force_on_binarized_digits():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    xb = (x[:, ::4] > 8).astype(np.uint8)  # 16 binary pixels: many duplicates, conflicts
    for omega, eps in (("shannon", 0.0), ("shannon", 0.1), ("squared", 0.0)):
        floor = data_floor(xb, y, 10, omega=omega, label_smoothing=eps)
        groups: dict = {}
        for row, label in zip(map(bytes, xb), y, strict=True):
            groups.setdefault(row, []).append(label)
        total = 0.0
        for labels in groups.values():
            t = np.zeros(10)
            for lab in labels:
                t += (1 - eps) * np.eye(10)[lab] + eps / 10
            q = t / len(labels)
            if omega == "shannon":
                h = -sum(v * math.log(v) for v in q if v > 0)
            else:
                h = 0.5 * (1 - float(q @ q))
            total += len(labels) / len(y) * h
        assert floor.value == pytest.approx(total, abs=1e-12)
        assert floor.terms["n_conflicting_groups"] > 0

"""Rank-agreement scores: property tests and small exact cases."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.stats import kendalltau

from clt_gen.errors import ValidationError
from clt_gen.population import by_stratum, granulated_kendall, kendall_tau, pgdl_score

values = st.lists(st.integers(-5, 5), min_size=2, max_size=12)


@given(
    values.flatmap(
        lambda v: st.tuples(
            st.just(v), st.lists(st.integers(-5, 5), min_size=len(v), max_size=len(v))
        )
    )
)
def test_tau_matches_definition_and_is_bounded(args):
    m, g = (np.asarray(a, dtype=float) for a in args)
    n = len(m)
    brute = sum(
        np.sign(m[i] - m[j]) * np.sign(g[i] - g[j]) for i in range(n) for j in range(n) if i != j
    ) / (n * (n - 1))
    assert kendall_tau(m, g) == pytest.approx(brute, abs=1e-12)
    assert -1 <= kendall_tau(m, g) <= 1


def test_tau_without_ties_agrees_with_scipy():
    gen = np.random.default_rng(0)
    m, g = gen.permutation(30), gen.permutation(30)  # no ties: tau-a = tau-b
    assert kendall_tau(m, g) == pytest.approx(kendalltau(m, g).statistic, abs=1e-12)


def _grid():
    depth, width = np.meshgrid([1, 2, 3], [8, 16, 32], indexing="ij")
    hp = {"depth": depth.ravel().tolist(), "width": width.ravel().tolist()}
    gap = 0.1 * depth.ravel() - 0.01 * width.ravel() + 0.001 * np.arange(9)
    return hp, gap


@given(st.sampled_from([np.exp, np.arctan, lambda x: x**3 + 2 * x, lambda x: 5 * x - 1]))
def test_invariance_to_monotone_transforms(f):
    hp, gap = _grid()
    gen = np.random.default_rng(1)
    m = gen.normal(size=9)
    assert kendall_tau(f(m), gap) == pytest.approx(kendall_tau(m, gap))
    assert granulated_kendall(f(m), gap, hp).value == pytest.approx(
        granulated_kendall(m, gap, hp).value
    )
    for conv in ("clt_gen", "pgdl"):
        assert pgdl_score(f(m), gap, hp, convention=conv)["value"] == pytest.approx(
            pgdl_score(m, gap, hp, convention=conv)["value"]
        )


def test_perfect_and_reversed_predictors():
    hp, gap = _grid()
    assert granulated_kendall(gap, gap, hp).value == pytest.approx(1.0)
    assert granulated_kendall(-gap, gap, hp).value == pytest.approx(-1.0)
    assert pgdl_score(gap, gap, hp, convention="clt_gen")["value"] == pytest.approx(1.0)
    # reversing the order carries the same information
    assert pgdl_score(-gap, gap, hp, convention="clt_gen")["value"] == pytest.approx(1.0)
    const = pgdl_score(np.zeros(9), gap, hp, convention="clt_gen")["value"]
    assert const == pytest.approx(0.0)
    # the competition's conventions condition on two hyperparameters: with only two, every
    # cell holds one pair and nothing is left to predict
    assert pgdl_score(gap, gap, hp)["value"] == 0.0
    assert pgdl_score(gap, gap, hp)["convention"] == "pgdl"


def test_granulated_groups_vary_one_hyperparameter():
    hp, gap = _grid()
    res = granulated_kendall(gap, gap, hp)
    assert res.n_groups == {"depth": 3, "width": 3}
    # a measure that only tracks depth: perfect within depth groups, blind within width groups
    depth_only = np.asarray(hp["depth"], dtype=float)
    res = granulated_kendall(depth_only, gap, hp)
    assert res.psi["depth"] == pytest.approx(1.0) and res.psi["width"] == pytest.approx(0.0)


def test_strata_and_errors():
    hp, gap = _grid()
    out = by_stratum(gap, gap, hp["depth"])
    assert out["all"] == pytest.approx(1.0) and set(out) == {"all", "1", "2", "3"}
    with pytest.raises(ValidationError, match="same length"):
        kendall_tau([1, 2, 3], [1, 2])
    with pytest.raises(ValidationError, match="finite"):
        kendall_tau([1, np.nan], [1, 2])
    with pytest.raises(ValidationError, match="one value per checkpoint"):
        granulated_kendall(gap, gap, {"depth": [1, 2]})

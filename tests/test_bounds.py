"""Bounds: closed forms, orderings, monotonicity, simulated coverage, the data floor."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from clt_gen.bounds import (
    VALIDATION_METHODS,
    data_floor,
    deterministic_range,
    frozen_feature_bound,
    kl_inverse,
    shannon_loss_cap,
    validation_bound,
)
from clt_gen.duality import get_regularizer
from clt_gen.errors import ValidationError


def test_kkb_bernstein_example():
    b = validation_bound(
        0.0, 10_000, delta=0.1, n_candidates=10**9, loss_range=1.0, variance=1.0, method="bernstein"
    )
    assert round(b.terms["slack"], 4) == 0.0694
    assert b.kind == "probabilistic" and b.delta == 0.1


def _val(method, risk=0.1, m=1000, delta=0.05, nf=1):
    kw = {"variance": 0.09} if method == "empirical_bernstein" else {}
    return validation_bound(risk, m, delta=delta, n_candidates=nf, method=method, **kw).value


@pytest.mark.parametrize("method", VALIDATION_METHODS)
def test_monotone_in_delta_samples_and_candidates(method):
    assert _val(method, delta=0.01) > _val(method, delta=0.1)
    assert _val(method, m=500) > _val(method, m=5000)
    assert _val(method, nf=100) > _val(method, nf=1)
    assert _val(method) > 0.1


@given(st.integers(0, 200), st.integers(200, 3000), st.floats(0.001, 0.5))
def test_binomial_below_kl_below_hoeffding(k, m, delta):
    risk = k / m
    binom = validation_bound(risk, m, delta=delta, method="binomial").value
    kl = validation_bound(risk, m, delta=delta, method="kl").value
    hoeff = validation_bound(risk, m, delta=delta, method="hoeffding").value
    assert binom <= kl + 1e-9
    assert kl <= hoeff + 1e-9


def test_kl_inverse_solves_the_equation():
    p = kl_inverse(0.1, 0.05)
    assert p > 0.1
    np.testing.assert_allclose(0.1 * np.log(0.1 / p) + 0.9 * np.log(0.9 / (1 - p)), 0.05, rtol=1e-9)


@pytest.mark.parametrize("method", ["hoeffding", "bernstein", "binomial", "kl"])
def test_violation_rate_at_most_delta_on_bernoulli_losses(method):
    gen = np.random.default_rng(0)
    p_true, m, delta, trials = 0.2, 200, 0.1, 2000
    errors = gen.binomial(m, p_true, size=trials) / m
    var = p_true * (1 - p_true) if method == "bernstein" else None
    violations = sum(
        validation_bound(r, m, delta=delta, method=method, variance=var).value < p_true
        for r in errors
    )
    assert violations / trials <= delta
    # and the bound is not vacuous
    assert validation_bound(p_true, m, delta=delta, method=method, variance=var).value < 0.4


def test_validation_bound_input_errors():
    with pytest.raises(ValidationError, match=r"delta must be a float in \(0, 1\)"):
        validation_bound(0.1, 100, delta=0.0)
    with pytest.raises(ValidationError, match="risk must lie in"):
        validation_bound(2.0, 100)
    with pytest.raises(ValidationError, match="n_samples must be an int >= 1"):
        validation_bound(0.1, 0)
    with pytest.raises(ValidationError, match="did you mean 'hoeffding'"):
        validation_bound(0.1, 100, method="hoefding")
    with pytest.raises(ValidationError, match="needs variance="):
        validation_bound(0.1, 100, method="empirical_bernstein")


def test_check_records_measured_value_and_outcome():
    b = validation_bound(0.1, 1000, delta=0.05)
    assert b.check(0.12, on="check").held is True
    assert b.check(0.5, on="check").held is False
    d = b.check(0.12, on="check").to_dict()
    assert d["checked_value"] == 0.12 and d["checked_on"] == "check"


# --- data floor ------------------------------------------------------------------------------
@pytest.mark.parametrize("omega", ["shannon", "squared", "sparsemax", "tsallis"])
def test_floor_is_below_every_model_and_tight_at_the_conditional(omega):
    reg = get_regularizer(omega)
    gen = np.random.default_rng(0)
    x = gen.integers(0, 5, (300, 1)).astype(np.float32)  # 5 distinct inputs, many conflicts
    y = gen.integers(0, 3, 300)
    b = data_floor(x, y, 3, omega=omega)
    assert b.value > 0.1 and b.terms["n_conflicting_groups"] == 5
    for _ in range(20):  # arbitrary score tables never beat the floor
        scores = gen.normal(size=(5, 3)) * 3
        risk = np.mean(reg.label_loss(y, scores[x[:, 0].astype(int)]))
        assert risk >= b.value - 1e-12
    # scores whose link is the per-input label frequency attain it (shannon: log-frequencies)
    if omega == "shannon":
        freq = np.stack([np.bincount(y[x[:, 0] == v], minlength=3) for v in range(5)]) + 0.0
        freq /= freq.sum(1, keepdims=True)
        risk = np.mean(reg.label_loss(y, np.log(freq)[x[:, 0].astype(int)]))
        np.testing.assert_allclose(risk, b.value, rtol=1e-10)


def test_floor_without_duplicates_is_entropy_of_smoothed_target():
    x = np.arange(50, dtype=np.float64)[:, None]
    y = np.arange(50) % 4
    b = data_floor(x, y, 4, label_smoothing=0.1, train_risk=0.5)
    expected = get_regularizer("shannon").entropy(np.array([0.925, 0.025, 0.025, 0.025]))
    np.testing.assert_allclose(b.value, expected, rtol=1e-12)
    assert b.terms["n_duplicate_groups"] == 0
    np.testing.assert_allclose(b.terms["fitting_error"], 0.5 - expected)
    assert data_floor(x, y, 4).value == 0.0


# --- deterministic range and frozen features --------------------------------------------------
def test_shannon_cap_dominates_every_loss():
    gen = np.random.default_rng(1)
    s = gen.normal(size=(100, 5)) * 4
    reg = get_regularizer("shannon")
    losses = np.stack([reg.label_loss(np.full(100, c), s) for c in range(5)])
    assert losses.max() <= shannon_loss_cap(s) + 1e-12


def test_deterministic_range_uses_largest_lower_limit():
    lo, up = deterministic_range(
        train_risk=0.1,
        layer_entropies={"a": (0.3, 0.25), "b": (0.35, 0.2)},
        loss_max=3.0,
        loss_cap=5.0,
    )
    assert lo.value == 0.25 and lo.terms["layer"] == "a" and lo.side == "lower"
    assert up.value == 5.0 and up.terms["gap_upper"] == pytest.approx(4.9)
    assert lo.check(0.3, on="check").held and not lo.check(0.2, on="check").held


def test_frozen_feature_bound_holds_on_a_mixture():
    gen = np.random.default_rng(0)
    means = gen.normal(size=(3, 2)) * 2

    def draw(n):
        y = gen.integers(0, 3, n)
        return means[y] + gen.normal(size=(n, 2)), y

    zc, yc = draw(4000)
    zk, yk = draw(4000)
    out = frozen_feature_bound(zc, yc, 3, z_check=zk, y_check=yk, cells=(2, 8, 32), delta=0.05)
    best = out["best"]
    assert best.held is True and best.value < 1.0
    assert [e["n_cells"] for e in out["curve"]] == [2, 8, 32]
    tvs = [e["tv_bound"] for e in out["curve"]]
    assert tvs == sorted(tvs)  # more cells, looser concentration

"""Estimators: oracle tests, the contract suite over every method, and fuzzing."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import logsumexp
from sklearn.neighbors import NearestNeighbors

import estimators
from estimators import (
    METHODS,
    OMEGAS,
    ValidationError,
    conditional_entropy,
    generalized_entropy,
    information_loss,
    knn_search,
    max_entropy,
    mutual_information,
)


def mixture(n, d=3, k=3, sep=1.5, seed=0):
    gen = np.random.default_rng(seed)
    means = gen.normal(size=(k, d)) * sep
    y = gen.integers(0, k, n)
    z = means[y] + gen.normal(size=(n, d))
    ll = -0.5 * ((z[:, None, :] - means[None]) ** 2).sum(-1)
    post = np.exp(ll - logsumexp(ll, 1, keepdims=True))
    return z, y, post


# --- oracle tests -------------------------------------------------------------------
def test_knn_search_matches_sklearn_exactly():
    gen = np.random.default_rng(0)
    x, q = gen.normal(size=(500, 7)), gen.normal(size=(120, 7))
    d2, idx = knn_search(q, x, 5, block_size=17)
    ref_d, ref_i = NearestNeighbors(n_neighbors=5, algorithm="brute").fit(x).kneighbors(q)
    np.testing.assert_array_equal(idx, ref_i)
    np.testing.assert_allclose(np.sqrt(d2), ref_d, rtol=1e-10)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_knn_torch_backend_matches_sklearn_exactly(dtype):
    # the torch candidate search ranks by |x|^2 - 2 q.x (no |q|^2): same neighbours, and the
    # returned distances are the float64 ones
    gen = np.random.default_rng(3)
    x, q = gen.normal(size=(700, 9)) + 5.0, gen.normal(size=(150, 9)) + 5.0
    d2, idx = knn_search(q, x, 6, block_size=23, backend="torch", dtype=dtype)
    ref_d, ref_i = NearestNeighbors(n_neighbors=6, algorithm="brute").fit(x).kneighbors(q)
    np.testing.assert_array_equal(idx, ref_i)
    np.testing.assert_allclose(np.sqrt(d2), ref_d, rtol=1e-10)
    _, own = knn_search(x, x, 4, exclude_self=True, block_size=31, backend="torch", dtype=dtype)
    ref = NearestNeighbors(n_neighbors=5, algorithm="brute").fit(x).kneighbors(x)[1][:, 1:]
    np.testing.assert_array_equal(own, ref)


def test_knn_search_never_returns_self():
    gen = np.random.default_rng(1)
    x = gen.normal(size=(300, 4))
    _, idx = knn_search(x, x, 3, exclude_self=True, block_size=64)
    assert not np.any(idx == np.arange(300)[:, None])
    ref = NearestNeighbors(n_neighbors=4, algorithm="brute").fit(x).kneighbors(x)[1][:, 1:]
    np.testing.assert_array_equal(idx, ref)


@pytest.mark.parametrize("omega", ["shannon", "squared", "zero_one", "tsallis"])
def test_plugin_is_exact_on_empirical_joint(omega):
    gen = np.random.default_rng(2)
    codes, y = gen.integers(0, 6, 3000), gen.integers(0, 4, 3000)
    est = conditional_entropy(codes, y, omega=omega, method="plugin", n_bootstrap=0)
    counts = np.zeros((6, 4))
    np.add.at(counts, (codes, y), 1)
    nz = counts.sum(1)
    expected = np.sum(nz / 3000 * generalized_entropy(counts / nz[:, None], omega=omega))
    np.testing.assert_allclose(est.value, expected, rtol=1e-12)


def test_miller_madow_adds_the_documented_correction():
    codes = np.array([0, 0, 0, 1, 1, 1, 1, 2])
    y = np.array([0, 1, 1, 0, 0, 0, 0, 1])
    plain = conditional_entropy(codes, y, method="plugin", n_bootstrap=0).value
    mm = conditional_entropy(codes, y, method="plugin", n_bootstrap=0, miller_madow=True).value
    # cells: {0: 2 labels, 3 pts}, {1: 1 label}, {2: 1 label} -> + (1/2) / 8
    np.testing.assert_allclose(mm - plain, 0.5 / 8, rtol=1e-12)


@pytest.mark.parametrize(
    ("method", "omega", "tol"),
    [
        ("gaussian", "shannon", 0.02),
        ("gaussian", "squared", 0.01),
        ("knn", "shannon", 0.05),
        ("knn", "squared", 0.015),
        ("ksg", "shannon", 0.05),
        ("probe", "shannon", 0.03),
    ],
)
def test_methods_recover_mixture_truth(method, omega, tol):
    z, y, post = mixture(6000, seed=3)
    truth = generalized_entropy(post, omega=omega).mean()
    est = conditional_entropy(z, y, omega=omega, method=method, random_state=0, n_bootstrap=50)
    assert abs(est.value - truth) < tol, (est.value, truth)


def test_probe_is_an_upper_estimate_in_expectation():
    z, y, post = mixture(4000, d=2, k=2, sep=1.0, seed=4)
    truth = generalized_entropy(post).mean()
    vals = [
        conditional_entropy(z, y, method="probe", random_state=s, n_bootstrap=0).value
        for s in range(3)
    ]
    assert np.mean(vals) >= truth - 0.01
    assert "upper_estimate" in conditional_entropy(z, y, method="probe", n_bootstrap=0).flags


def test_information_loss_of_projection_is_positive_and_paired():
    z, y, _ = mixture(4000, d=4, k=3, sep=1.5, seed=5)
    loss = information_loss(z, z[:, :1], y, method="gaussian", random_state=0)
    assert loss.value > 0.05 and loss.ci[0] > 0
    # a rotation is a bijection; Ledoit-Wolf shrinkage to a scaled identity and Euclidean
    # kNN are rotation-equivariant, so every paired resample gives exactly zero loss
    rot = np.linalg.qr(np.random.default_rng(0).normal(size=(4, 4)))[0]
    for method in ("gaussian", "knn"):
        same = information_loss(z, z @ rot, y, method=method, random_state=0)
        np.testing.assert_allclose([same.value, *same.ci], 0.0, atol=1e-9)
        assert "dpi_violation" not in same.flags


def test_mutual_information_plus_conditional_is_marginal():
    z, y, _ = mixture(2000, seed=6)
    h = conditional_entropy(z, y, method="knn", random_state=1, n_bootstrap=0).value
    mi = mutual_information(z, y, method="knn", random_state=1, n_bootstrap=0).value
    hy = estimators.entropy(y, n_bootstrap=0).value
    np.testing.assert_allclose(mi + h, hy, rtol=1e-12)


# --- contract suite over every method -------------------------------------------------
def _data(method, n=400):
    z, y, _ = mixture(n, d=3, k=3, seed=7)
    if method == "plugin":
        return (z[:, 0] > 0).astype(np.int64) * 2 + (z[:, 1] > 0), y
    return z, y


METHOD_PARAMS = {"quantized": {"n_cells": 8}, "knn": {"k": 10}}


@pytest.mark.parametrize("method", sorted(METHODS))
def test_contract_same_seed_same_result_and_inputs_unchanged(method):
    z, y = _data(method)
    z0, y0 = z.copy(), y.copy()
    kw = dict(method=method, random_state=3, n_bootstrap=30, **METHOD_PARAMS.get(method, {}))
    a, b = conditional_entropy(z, y, **kw), conditional_entropy(z, y, **kw)
    assert a == b
    np.testing.assert_array_equal(z, z0)
    np.testing.assert_array_equal(y, y0)
    assert isinstance(a, estimators.Estimate) and a.units == "nats" and a.n_samples == len(y)
    assert a.ci[0] <= a.ci[1] and a.stderr >= 0
    d = a.to_dict()
    assert d["method"] == method and isinstance(d["ci"], list)


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda z, y: (z[:0], y[:0]), "non-empty"),
        (lambda z, y: (z, y[:-1]), "one label per sample"),
        (lambda z, y: (z, y - 1), r"labels in \[0, n_classes-1\]"),
        (lambda z, y: (z, y * 0.5), "integer class labels"),
        (lambda z, y: (z, np.zeros_like(y)), "n_classes must be >= 2"),
    ],
)
def test_contract_bad_input_raises_validation_error(method, mutate, match):
    z, y = _data(method)
    bz, by = mutate(z, y)
    with pytest.raises(ValidationError, match=match):
        conditional_entropy(bz, by, method=method, n_bootstrap=0)


@pytest.mark.parametrize("method", ["knn", "ksg", "gaussian", "probe", "quantized"])
def test_contract_nan_features_rejected(method):
    z, y = _data(method)
    z[5, 1] = np.nan
    with pytest.raises(ValidationError, match=r"z must be finite \(got 1 NaN or inf"):
        conditional_entropy(z, y, method=method)


def test_contract_unknown_names_and_bad_k():
    z, y = _data("knn")
    with pytest.raises(ValidationError, match="did you mean 'knn'"):
        conditional_entropy(z, y, method="kn")
    with pytest.raises(ValidationError, match="did you mean 'shannon'"):
        conditional_entropy(z, y, omega="shanon")
    with pytest.raises(ValidationError, match=r"k must be an int >= 1 and < 201 \(got 400\)"):
        conditional_entropy(z, y, method="knn", k=400)
    with pytest.raises(ValidationError, match=r"k must be an int >= 1 .*got 0"):
        conditional_entropy(z, y, method="knn", k=0)
    with pytest.raises(ValidationError, match="ksg.*Shannon"):
        conditional_entropy(z, y, method="ksg", omega="squared")
    with pytest.raises(ValidationError, match="does not take parameters"):
        conditional_entropy(z, y, method="gaussian", k=3)


@pytest.mark.parametrize("omega", OMEGAS)
def test_every_omega_runs_and_stays_in_range(omega):
    z, y = _data("knn")
    est = conditional_entropy(z, y, omega=omega, method="knn", random_state=0, k=10)
    assert 0 <= est.value <= max_entropy(3, omega=omega)
    assert "out_of_range" not in est.flags


# --- fuzzing: a finite in-range estimate (or a flag), or the project error --------------
@settings(max_examples=60)
@given(
    n=st.integers(0, 60),
    d=st.integers(1, 4),
    n_classes=st.integers(1, 4),
    dtype=st.sampled_from([np.float64, np.float32, np.int64]),
    nan=st.booleans(),
    method=st.sampled_from(sorted(METHODS)),
    omega=st.sampled_from(list(OMEGAS)),
    seed=st.integers(0, 1000),
)
def test_fuzz_estimate_or_clear_error(n, d, n_classes, dtype, nan, method, omega, seed):
    gen = np.random.default_rng(seed)
    z = (gen.normal(size=(n, d)) * 3).astype(dtype)
    if nan and n and np.issubdtype(dtype, np.floating):
        z[gen.integers(n), 0] = np.nan
    y = gen.integers(0, n_classes, n)
    try:
        est = (
            conditional_entropy(
                z, y, method=method, omega=omega, random_state=seed, n_bootstrap=5, k=1
            )
            if method in ("knn", "ksg")
            else conditional_entropy(
                z,
                y,
                method=method,
                omega=omega,
                random_state=seed,
                n_bootstrap=5,
                **({"n_cells": 2} if method == "quantized" else {}),
            )
        )
    except ValidationError as exc:
        assert str(exc)
        return
    assert np.isfinite(est.value)
    hmax = max_entropy(int(y.max()) + 1, omega=omega)
    assert (0 - 1e-9 <= est.value <= hmax + 1e-9) or "out_of_range" in est.flags


def _ksg_reference(z, y, k=5):
    """Ross (2014) with exact float64 pairwise distances."""
    from scipy.spatial.distance import cdist
    from scipy.special import digamma

    d2 = cdist(z, z, "sqeuclidean")
    n, counts = len(y), np.bincount(y)
    terms = []
    for i in range(n):
        same = np.flatnonzero((y == y[i]) & (np.arange(n) != i))
        radius = np.sort(d2[i, same])[k - 1]
        m = max(int(np.sum(d2[i] <= radius)) - 1, k)  # the k-th neighbour included
        mi = digamma(n) + digamma(k) - digamma(counts[y[i]]) - digamma(m)
        terms.append(-np.log(counts[y[i]] / n) - mi)
    return float(np.mean(terms))


def test_ksg_matches_a_brute_force_reference():
    # the k-th neighbour lies exactly on the radius: rounding in the counting pass used to
    # drop it for about half the points (0.036 nats too low on this kind of data)
    gen = np.random.default_rng(3)
    y = gen.integers(0, 3, 300)
    z = gen.normal(size=(300, 4)) + 0.8 * y[:, None]
    est = conditional_entropy(z, y, method="ksg", random_state=0, n_bootstrap=0)
    assert est.value == pytest.approx(_ksg_reference(z, y), abs=1e-12)


@pytest.mark.parametrize("method", ["auto", "probe"])
def test_head_estimates_do_not_depend_on_feature_units(method):
    """Rescaling a coordinate is a bijection: H(Y|Z) stays the same, and so do the
    head-based estimates, which standardize each column. Columns of scale 1e-8 used to
    lose all their information (an absolute tolerance in the quantile map, an absolute
    jitter in the Gaussians), and the Gaussian head was refitted on raw features after
    being chosen on standardized ones."""
    gen = np.random.default_rng(0)
    y = gen.integers(0, 3, 2000)
    z = gen.normal(size=(2000, 5)) + y[:, None]
    scales = np.array([1e6, 1.0, 1e-3, 1e-8, 3.0])
    values = [
        conditional_entropy(x, y, method=method, random_state=0, n_bootstrap=0).value
        for x in (z, z * scales, z * 1e-9)
    ]
    np.testing.assert_allclose(values, values[0], rtol=1e-7)
    assert values[0] < 0.5  # the features carry most of H(Y) = 1.10


@pytest.mark.parametrize("method", ["gaussian", "knn", "ksg", "quantized"])
def test_euclidean_estimates_do_not_depend_on_the_unit_or_origin(method):
    """The distance- and Gaussian-based methods work in the Euclidean geometry of the
    features as given (rotation-equivariant, see the information-loss test): a common
    unit and a shift of the origin must not matter. The Gaussians' absolute jitter made
    features of scale 1e-9 read H(Y)."""
    gen = np.random.default_rng(0)
    y = gen.integers(0, 3, 2000)
    z = gen.normal(size=(2000, 5)) + y[:, None]
    kw = {"n_cells": 16} if method == "quantized" else {}
    values = [
        conditional_entropy(x, y, method=method, random_state=0, n_bootstrap=0, **kw).value
        for x in (z, z * 1e-9, z * 1e6, z + 100.0)
    ]
    np.testing.assert_allclose(values, values[0], rtol=1e-6)
    assert values[0] < 0.7


@pytest.mark.parametrize("omega", ["shannon", "squared", "sparsemax", "tsallis", "zero_one"])
def test_max_entropy_is_the_uniform_entropy_and_never_below_it(omega):
    """The cap of every certified bound: closed forms (the sum over the uniform
    distribution rounds up to 1.8e-15 below ``log K``), never below ``H_Ω(uniform)``."""
    import math

    for k in (2, 3, 5, 7, 10, 100, 1000):
        cap = max_entropy(k, omega=omega, alpha=1.7)
        uniform = float(generalized_entropy(np.full(k, 1.0 / k), omega=omega, alpha=1.7))
        assert abs(cap - uniform) < 1e-13
        assert cap >= uniform
        if omega == "shannon":
            assert math.log(k) < cap <= math.log(k) * (1 + 4e-15)


@pytest.mark.parametrize("omega", ["shannon", "squared", "sparsemax", "tsallis", "zero_one"])
def test_max_entropy_is_never_below_the_real_value(omega):
    """Against 40-digit arithmetic: the nearest float to ``ln 5`` is below ``ln 5``, so a
    cap at ``math.log(K)`` would let a certified bound sit (by 4e-17) below a truth of
    ``H(uniform)``, found by labels independent of 128-d features with ``K = 5``."""
    import mpmath

    mpmath.mp.dps = 40
    for alpha in (1.1, 1.5, 1.7, 2.0, 3.0):
        for k in list(range(2, 130)) + [1000, 4096, 10**6]:
            cap = max_entropy(k, omega=omega, alpha=alpha)
            kk = mpmath.mpf(k)
            real = {
                "shannon": mpmath.log(kk),
                "squared": (1 - 1 / kk) / 2,
                "sparsemax": (1 - 1 / kk) / 2,
                "tsallis": (1 - kk ** (1 - mpmath.mpf(alpha))) / (alpha * (alpha - 1)),
                "zero_one": 1 - 1 / kk,
            }[omega]
            assert mpmath.mpf(cap) >= real, (k, alpha)
            assert mpmath.mpf(cap) - real <= 1e-14 * real, (k, alpha)

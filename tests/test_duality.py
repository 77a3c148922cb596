"""Property tests of the Fenchel–Young identities (THEORY §1) for every regularizer."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.optimize
import scipy.special
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from clt_gen.duality import (
    REGULARIZERS,
    ValidationError,
    entmax_bisect,
    get_regularizer,
    sparsemax,
)
from clt_gen.testing import probability_vectors, regularizers, score_vectors

K = st.integers(2, 7)


@st.composite
def reg_mu_nu(draw, kind="any", scale=10.0):
    reg = draw(regularizers())
    k = draw(K)
    return reg, draw(probability_vectors(k, kind=kind)), draw(score_vectors(k, scale=scale))


def _grad_point(reg, p):
    """A score vector whose link is p (a point of ∂Ω(p))."""
    if reg.name == "shannon":
        return np.log(p)
    if reg.name in ("squared", "sparsemax"):
        return p.copy()
    a = reg.alpha
    return p ** (a - 1) / (a - 1)


# 1. non-negativity, zero at the link --------------------------------------------------
@given(reg_mu_nu())
def test_loss_nonnegative_and_zero_at_link(args):
    reg, mu, nu = args
    assert reg.loss(mu, nu) >= 0.0
    np.testing.assert_allclose(reg.loss(reg.link(nu), nu), 0.0, atol=1e-9)


@given(regularizers(), K.flatmap(lambda k: probability_vectors(k, kind="interior")))
def test_loss_positive_away_from_link(reg, p):
    nu = _grad_point(reg, p)
    shifted = nu.copy()
    shifted[0] += 0.5  # moves the predicted distribution away from p
    assert reg.loss(p, shifted) > 1e-6


# 2. Fenchel–Young inequality and the conjugate as a numerical supremum ------------------
@given(reg_mu_nu())
def test_fenchel_young_inequality(args):
    reg, mu, nu = args
    assert reg.omega(mu) + reg.conjugate(nu) >= float(mu @ nu) - 1e-9


def _numerical_conjugate(reg, nu):
    k = len(nu)

    def neg(mu):
        return -(mu @ nu - float(reg.omega(np.clip(mu, 0, None) if reg.simplex else mu)))

    if not reg.simplex:
        res = scipy.optimize.minimize(neg, np.zeros(k), method="BFGS", options={"gtol": 1e-10})
        return -res.fun
    best = -np.inf
    for start in (np.full(k, 1.0 / k), np.asarray(reg.link(nu))):
        res = scipy.optimize.minimize(
            neg,
            start,
            method="SLSQP",
            bounds=[(0.0, 1.0)] * k,
            constraints=[{"type": "eq", "fun": lambda m: m.sum() - 1.0}],
            options={"ftol": 1e-14, "maxiter": 500},
        )
        best = max(best, -res.fun)
    return best


@settings(max_examples=60)
@given(regularizers(), st.integers(2, 5).flatmap(lambda k: score_vectors(k, scale=4.0)))
def test_conjugate_matches_numerical_supremum(reg, nu):
    closed = float(reg.conjugate(nu))
    numeric = _numerical_conjugate(reg, nu)
    # the numerical sup can never exceed the true sup; it must come within 1e-6
    assert numeric <= closed + 1e-9
    np.testing.assert_allclose(numeric, closed, atol=1e-6)


# 3. gradient identity -------------------------------------------------------------------
@given(reg_mu_nu(scale=5.0))
def test_loss_gradient_is_link_minus_target(args):
    reg, mu, nu = args
    t = torch.tensor(nu, requires_grad=True)
    reg.loss(torch.tensor(mu), t).backward()
    expected = reg.link(nu) - mu
    np.testing.assert_allclose(t.grad.numpy(), expected, atol=1e-9)
    # central finite differences of the loss itself
    h = 1e-6
    fd = np.array(
        [(reg.loss(mu, nu + h * e) - reg.loss(mu, nu - h * e)) / (2 * h) for e in np.eye(len(nu))]
    )
    np.testing.assert_allclose(fd, expected, atol=2e-5)


# 4. shannon: cross-entropy and KL ---------------------------------------------------------
@given(K.flatmap(lambda k: st.tuples(probability_vectors(k), score_vectors(k, scale=30.0))))
def test_shannon_is_kl_and_cross_entropy(args):
    mu, nu = args
    reg = get_regularizer("shannon")
    logp = scipy.special.log_softmax(nu)
    kl = float(np.sum(scipy.special.rel_entr(mu, np.exp(logp))))
    np.testing.assert_allclose(reg.loss(mu, nu), kl, atol=1e-9, rtol=1e-9)
    y = np.arange(len(nu))
    ce = torch.nn.functional.cross_entropy(
        torch.tensor(np.tile(nu, (len(nu), 1))), torch.tensor(y), reduction="none"
    )
    np.testing.assert_allclose(reg.label_loss(y, np.tile(nu, (len(nu), 1))), ce.numpy(), atol=1e-10)


# 5. squared: half the summed MSE -----------------------------------------------------------
@given(K.flatmap(lambda k: st.tuples(st.integers(0, k - 1), score_vectors(k))))
def test_squared_is_half_summed_mse(args):
    y, nu = args
    reg = get_regularizer("squared")
    onehot = torch.nn.functional.one_hot(torch.tensor(y), len(nu)).double()
    mse = 0.5 * torch.nn.functional.mse_loss(torch.tensor(nu), onehot, reduction="sum")
    np.testing.assert_allclose(reg.label_loss(np.array(y), nu), float(mse), rtol=1e-12)


# 6. Bayes-risk identity, entropy range and concavity ---------------------------------------
@given(reg_mu_nu())
def test_bayes_risk_identity(args):
    reg, p, nu = args
    k = len(p)
    expected = sum(p[y] * reg.label_loss(np.array(y), nu) for y in range(k))
    np.testing.assert_allclose(expected, reg.entropy(p) + reg.loss(p, nu), atol=1e-9)


@given(regularizers(), K.flatmap(lambda k: probability_vectors(k, kind="interior")))
def test_bayes_risk_attained_at_link_preimage(reg, p):
    nu = _grad_point(reg, p)
    np.testing.assert_allclose(reg.link(nu), p, atol=1e-9)
    risk = sum(p[y] * reg.label_loss(np.array(y), nu) for y in range(len(p)))
    np.testing.assert_allclose(risk, reg.entropy(p), atol=1e-9)


@given(regularizers(), K.flatmap(probability_vectors))
def test_entropy_definition_and_range(reg, p):
    k = len(p)
    generic = sum(p[y] * reg.vertex_value() for y in range(k)) - reg.omega(p)
    np.testing.assert_allclose(reg.entropy(p), generic, atol=1e-12)
    for y in range(k):  # Ω(e_y) is the same for every class
        np.testing.assert_allclose(reg.omega(np.eye(k)[y]), reg.vertex_value(), atol=1e-15)
    assert -1e-12 <= reg.entropy(p) <= reg.max_entropy(k) + 1e-12


@given(
    regularizers(),
    K.flatmap(lambda k: st.tuples(probability_vectors(k), probability_vectors(k))),
    st.floats(0.0, 1.0),
)
def test_entropy_concave(reg, pq, lam):
    p, q = pq
    mix = lam * p + (1 - lam) * q
    assert reg.entropy(mix) >= lam * reg.entropy(p) + (1 - lam) * reg.entropy(q) - 1e-12


# 7. shift invariance for simplex-restricted Ω ------------------------------------------------
@st.composite
def simplex_reg_mu_nu(draw):
    reg = draw(regularizers(names=["shannon", "sparsemax", "tsallis"]))
    k = draw(K)
    return reg, draw(probability_vectors(k)), draw(score_vectors(k))


@given(simplex_reg_mu_nu(), st.floats(-50, 50))
def test_shift_invariance(args, c):
    reg, mu, nu = args
    assert reg.simplex
    np.testing.assert_allclose(reg.loss(mu, nu + c), reg.loss(mu, nu), atol=1e-8)


def test_squared_is_not_shift_invariant():
    reg = get_regularizer("squared")
    mu, nu = np.array([1.0, 0.0]), np.array([0.2, 0.1])
    assert abs(reg.loss(mu, nu + 1.0) - reg.loss(mu, nu)) > 0.1


# 8. link maps into the simplex and is the gradient of the conjugate ------------------------
@given(regularizers(), K.flatmap(lambda k: score_vectors(k, scale=50.0)))
def test_link_in_simplex_and_gradient_of_conjugate(reg, nu):
    p = reg.link(nu)
    if reg.simplex:
        assert np.all(p >= 0)
        np.testing.assert_allclose(p.sum(), 1.0, atol=1e-12)
    t = torch.tensor(nu, requires_grad=True)
    reg.conjugate(t).backward()
    np.testing.assert_allclose(t.grad.numpy(), p, atol=1e-12)
    h = 1e-6
    fd = np.array(
        [(reg.conjugate(nu + h * e) - reg.conjugate(nu - h * e)) / (2 * h) for e in np.eye(len(nu))]
    )
    np.testing.assert_allclose(fd, p, atol=2e-5)


# numerics, dtypes and the custom backward ------------------------------------------------------
@pytest.mark.parametrize("name", sorted(REGULARIZERS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_batched_torch_dtypes_and_extremes(name, dtype):
    reg = get_regularizer(name)
    gen = torch.Generator().manual_seed(0)
    nu = (torch.randn(64, 5, generator=gen) * 1e4).to(dtype).requires_grad_(True)
    mu = torch.zeros(64, 5, dtype=dtype)
    mu[:, 0] = 1.0
    loss = reg.loss(mu, nu)
    assert loss.dtype == dtype and loss.shape == (64,)
    assert torch.isfinite(loss).all()
    loss.sum().backward()
    assert torch.isfinite(nu.grad).all()
    ent = reg.entropy(mu)  # zero probabilities
    assert torch.isfinite(ent).all()
    np.testing.assert_allclose(ent.detach().numpy(), 0.0, atol=1e-6)


@pytest.mark.parametrize("alpha", [1.2, 1.5, 2.0, 2.7])
def test_entmax_custom_backward_matches_gradcheck(alpha):
    gen = torch.Generator().manual_seed(1)
    nu = torch.randn(4, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x: entmax_bisect(x, alpha=alpha), (nu,), eps=1e-6, atol=1e-5
    )


def test_entmax_two_is_sparsemax_and_one_point_five_known_value():
    nu = np.array([[0.3, -1.0, 2.0, 1.9], [0.0, 0.0, 0.0, 0.0]])
    np.testing.assert_allclose(entmax_bisect(nu, alpha=2.0), sparsemax(nu), atol=1e-14)
    # alpha=1.5, nu=(1, 0): p = ((0.5 - tau)^2, tau^2) sums to 1 at tau = (1/2 - sqrt(7)/2)/2
    tau = (0.5 - np.sqrt(7) / 2) / 2
    expected = np.array([(0.5 - tau) ** 2, tau**2])
    np.testing.assert_allclose(entmax_bisect(np.array([1.0, 0.0]), alpha=1.5), expected, atol=1e-12)


def test_unknown_regularizer_lists_names_and_closest_match():
    with pytest.raises(ValidationError, match=r"omega must be one of .*did you mean 'sparsemax'"):
        get_regularizer("sparsmax")
    with pytest.raises(ValidationError, match="alpha must be a finite float > 1"):
        get_regularizer("tsallis", alpha=1.0)
    with pytest.raises(ValidationError, match="does not take parameters"):
        get_regularizer("shannon", alpha=2.0)


def test_shape_errors_name_the_parameter():
    reg = get_regularizer("shannon")
    with pytest.raises(ValidationError, match="mu and nu must have the same number of classes"):
        reg.loss(np.ones(3) / 3, np.zeros(4))
    with pytest.raises(ValidationError, match="n_classes >= 2"):
        reg.link(np.zeros(1))
    with pytest.raises(ValidationError, match=r"y must hold integer labels in \[0, 2\]"):
        reg.label_loss(np.array([3]), np.zeros((1, 3)))


def test_numpy_float32_roundtrip_and_input_not_mutated():
    reg = get_regularizer("tsallis", alpha=1.5)
    nu = np.array([[1.0, 2.0, 3.0]], dtype=np.float32)
    before = nu.copy()
    p = reg.link(nu)
    assert isinstance(p, np.ndarray)
    np.testing.assert_array_equal(nu, before)


def test_one_registry_of_names_with_zero_one_explicit():
    from estimators.entropies import OMEGAS

    # every trainable regularizer is an entropy name; zero_one is the one that is not trainable
    assert set(OMEGAS) - set(REGULARIZERS) == {"zero_one"}
    assert set(REGULARIZERS) <= set(OMEGAS)
    with pytest.raises(ValidationError, match="zero_one.*no Fenchel–Young loss"):
        get_regularizer("zero_one")

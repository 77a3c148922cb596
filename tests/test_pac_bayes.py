"""PAC-Bayes arithmetic (clt_gen.pac_bayes) and certificates (clt_gen.gibbs), THEORY §6.5."""

from __future__ import annotations

import copy
import math

import mpmath as mp
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from torch import nn

import clt_gen
from clt_gen.errors import ValidationError
from clt_gen.gibbs import _Sampler, pac_bayes_certificate, sampling_mode
from clt_gen.pac_bayes import (
    certificate_value,
    f_classic,
    f_quad,
    gaussian_kl,
    kl_bernoulli,
    kl_inverse,
    monte_carlo_upper,
    pac_bayes_kl_bound,
    prior_grid,
)

# ---------------------------------------------------------------------------------------
# slow, obviously correct references (arbitrary precision)
# ---------------------------------------------------------------------------------------


def mp_kl(q: mp.mpf, p: mp.mpf) -> mp.mpf:
    if (p >= 1 and q < 1) or (p <= 0 and q > 0):
        return mp.inf
    out = mp.mpf(0)
    if q > 0:
        out += q * mp.log(q / p)
    if q < 1:
        out += (1 - q) * mp.log((1 - q) / (1 - p))
    return out


def mp_kl_inverse(q: float, c: float) -> float:
    """Bisection at 120 digits for sup{p in [q, 1] : kl(q||p) <= c}."""
    with mp.workdps(120):
        qm, cm = mp.mpf(q), mp.mpf(c)
        if cm == 0 or qm == 1:
            return float(qm)
        lo, hi = qm, mp.mpf(1)
        for _ in range(400):
            mid = (lo + hi) / 2
            if mp_kl(qm, mid) <= cm:
                lo = mid
            else:
                hi = mid
        return float(lo)


def slow_pac_bayes(risk: float, kl: float, n: int, delta: float) -> float:
    """Maurer's bound written out independently, inverted at arbitrary precision."""
    with mp.workdps(60):
        budget = (mp.mpf(kl) + mp.log(2 * mp.sqrt(n) / mp.mpf(delta))) / n
    return mp_kl_inverse(risk, float(budget))


GRID_Q = [0.0, 1e-12, 1e-6, 1e-3, 0.05, 0.3, 0.5, 0.9, 0.999, 1 - 1e-9, 1.0]
GRID_C = [0.0, 1e-20, 1e-12, 1e-6, 1e-3, 0.05, 0.7, 3.0, 40.0, 1e6]


@pytest.mark.parametrize("q", GRID_Q)
def test_kl_inverse_matches_arbitrary_precision_root(q):
    for c in GRID_C:
        got = kl_inverse(q, c)
        ref = mp_kl_inverse(q, c)
        assert abs(got - ref) <= 1e-10, (q, c, got, ref)
        assert got >= ref - 1e-15  # never below the true inverse: an upper bound stays valid


def test_kl_inverse_edges_in_closed_form():
    for c in (1e-9, 0.1, 2.0):
        # kl(0 || p) = -ln(1 - p)
        assert kl_inverse(0.0, c) == pytest.approx(-math.expm1(-c), abs=1e-12)
    assert kl_inverse(0.37, 0.0) == 0.37
    assert kl_inverse(1.0, 0.5) == 1.0
    assert kl_inverse(0.2, math.inf) == 1.0
    assert kl_inverse(0.2, 1e300) == 1.0


def test_kl_inverse_is_vectorized_and_equals_the_scalar_calls():
    q = np.array([[0.0, 0.1, 0.5], [0.9, 0.99, 1.0]])
    c = np.array([0.01, 0.2, 1.5])
    got = kl_inverse(q, c)
    assert got.shape == (2, 3)
    for i in range(2):
        for j in range(3):
            assert got[i, j] == kl_inverse(float(q[i, j]), float(c[j]))


def test_kl_inverse_solves_its_equation_inside_the_interval():
    q = np.linspace(0.0, 0.95, 40)
    c = np.full_like(q, 0.03)
    p = kl_inverse(q, c)
    np.testing.assert_allclose(kl_bernoulli(q, p), c, rtol=1e-8)


@settings(max_examples=200, deadline=None)
@given(
    st.floats(0, 1),
    st.floats(0, 1),
    st.floats(0, 50),
    st.floats(0, 50),
)
def test_kl_inverse_is_monotone_in_both_arguments(q1, q2, c1, c2):
    (qa, qb), (ca, cb) = sorted((q1, q2)), sorted((c1, c2))
    assert kl_inverse(qa, ca) <= kl_inverse(qb, ca)
    assert kl_inverse(qa, ca) <= kl_inverse(qa, cb)
    assert qa <= kl_inverse(qa, ca) <= 1.0


def test_kl_inverse_is_monotone_between_neighbouring_floats():
    q = np.nextafter(0.3, 1.0)
    c = np.nextafter(0.01, 1.0)
    assert kl_inverse(0.3, 0.01) <= kl_inverse(q, 0.01)
    assert kl_inverse(0.3, 0.01) <= kl_inverse(0.3, c)


def test_kl_bernoulli_matches_mpmath():
    for q in (0.0, 0.01, 0.5, 0.999, 1.0):
        for p in (1e-9, 0.02, 0.5, 0.7, 1 - 1e-9):
            with mp.workdps(60):
                ref = float(mp_kl(mp.mpf(q), mp.mpf(p)))
            assert float(kl_bernoulli(q, p)) == pytest.approx(ref, rel=1e-9, abs=1e-15)


@pytest.mark.parametrize(
    "risk,kl,n,delta",
    [(0.0, 0.0, 100, 0.05), (0.03, 5000.0, 55_000, 0.05), (0.2, 12.0, 1000, 0.01),
     (0.5, 1e5, 60_000, 0.1), (0.999, 3.0, 50, 0.5)],
)
def test_pac_bayes_kl_bound_matches_a_slow_implementation(risk, kl, n, delta):
    b = pac_bayes_kl_bound(risk, kl=kl, n_samples=n, delta=delta)
    assert b.value == pytest.approx(slow_pac_bayes(risk, kl, n, delta), abs=1e-10)
    assert b.budget == pytest.approx((kl + math.log(2 * math.sqrt(n) / delta)) / n, rel=1e-14)


@settings(max_examples=100, deadline=None)
@given(
    st.floats(0, 0.9),
    st.floats(0, 1e4),
    st.integers(8, 10**6),
    st.floats(1e-6, 0.5),
    st.floats(1.01, 100),
)
def test_certificate_properties(risk, kl, n, delta, factor):
    b = pac_bayes_kl_bound(risk, kl=kl, n_samples=n, delta=delta)
    assert b.value >= risk
    # more room to fail, a weaker claim: the bound falls as delta grows
    looser = pac_bayes_kl_bound(risk, kl=kl, n_samples=n, delta=min(0.999, delta * factor))
    assert looser.value <= b.value
    # more rows at the same KL: the bound falls
    more = pac_bayes_kl_bound(risk, kl=kl, n_samples=int(n * factor) + 1, delta=delta)
    assert more.value <= b.value


def test_posterior_equal_to_prior_reduces_to_the_test_set_kl_bound():
    # KL = 0: the bound is the Chernoff (test-set) bound with ln(2 sqrt(n)/delta)
    n, delta, risk = 10_000, 0.05, 0.12
    b = pac_bayes_kl_bound(risk, kl=0.0, n_samples=n, delta=delta)
    assert b.value == kl_inverse(risk, math.log(2 * math.sqrt(n) / delta) / n)


def test_monte_carlo_upper_is_a_valid_chernoff_bound():
    rng = np.random.default_rng(0)
    p, n_terms, delta, reps = 0.2, 400, 0.1, 2000
    means = rng.binomial(n_terms, p, size=reps) / n_terms
    misses = sum(monte_carlo_upper(m, n_terms, delta) < p for m in means)
    # valid: misses ~ Binomial(reps, <= delta); fails this with probability < 1e-6
    assert misses <= stats.binom.isf(1e-6, reps, delta)
    assert misses > 0 or delta < 0.01  # not vacuous: it does get close to the truth


def test_gaussian_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mu_q = torch.randn(50, generator=g, dtype=torch.float64)
    mu_p = torch.randn(50, generator=g, dtype=torch.float64)
    s_q = torch.rand(50, generator=g, dtype=torch.float64) + 0.1
    s_p = 0.7
    q = torch.distributions.Independent(torch.distributions.Normal(mu_q, s_q), 1)
    p = torch.distributions.Independent(
        torch.distributions.Normal(mu_p, torch.full_like(mu_p, s_p)), 1
    )
    ref = float(torch.distributions.kl_divergence(q, p))
    assert float(gaussian_kl(mu_q, s_q, mu_p, s_p)) == pytest.approx(ref, rel=1e-12)
    assert gaussian_kl(mu_q.numpy(), s_q.numpy(), mu_p.numpy(), s_p) == pytest.approx(
        ref, rel=1e-12
    )


def test_objectives_are_the_published_formulas():
    r, kl, n, lt = 0.1, 300.0, 5000, 7.0
    b = (kl + lt) / n
    assert f_classic(r, kl, n, lt) == pytest.approx(r + math.sqrt(b / 2))
    assert f_quad(r, kl, n, lt) == pytest.approx((math.sqrt(r + b / 2) + math.sqrt(b / 2)) ** 2)


def test_certificate_value_states_every_delta_share():
    out = certificate_value(
        0.05, n_mc_terms=1000, kl=10.0, n_samples=1000, delta=0.05, delta_mc=0.01, n_priors=8
    )
    s = out["delta_shares"]
    assert s["monte_carlo"] + s["pac_bayes"] == pytest.approx(0.05)
    assert s["pac_bayes_per_prior"] == pytest.approx(0.04 / 8)
    inner = monte_carlo_upper(0.05, 1000, 0.01)
    assert out["value"] == pac_bayes_kl_bound(inner, kl=10.0, n_samples=1000, delta=0.005).value


def test_prior_grid_is_geometric():
    g = prior_grid(1e-3, 1.0, 4)
    np.testing.assert_allclose(g, [1e-3, 1e-2, 1e-1, 1.0])


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: kl_inverse(1.2, 0.1), "q must lie in"),
        (lambda: kl_inverse(0.1, -1.0), "c must be >= 0"),
        (lambda: pac_bayes_kl_bound(0.1, kl=-1.0, n_samples=100, delta=0.05), "kl must be"),
        (lambda: pac_bayes_kl_bound(0.1, kl=1.0, n_samples=100, delta=1.0), "delta must be"),
        (lambda: pac_bayes_kl_bound(0.1, kl=1.0, n_samples=5, delta=0.05), ">= 8"),
        (lambda: certificate_value(0.1, n_mc_terms=10, kl=1.0, n_samples=100, delta=0.05,
                                   delta_mc=0.05), "delta_mc must be smaller"),
    ],
)
def test_bad_arithmetic_input_is_named(call, match):
    with pytest.raises(ValidationError, match=match):
        call()


# ---------------------------------------------------------------------------------------
# the Gibbs network and its certificate
# ---------------------------------------------------------------------------------------


def _blobs(n: int, d: int = 2, seed: int = 0, sep: float = 1.5):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.randn(n, d, generator=g)
    x[:, 0] += sep * (2 * y.float() - 1)
    return x, y


def _fit_linear(x, y, seed=0, steps=200):
    torch.manual_seed(seed)
    net = nn.Linear(x.shape[1], 2)
    w0 = copy.deepcopy(net.state_dict())
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    for _ in range(steps):
        loss = nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net, w0


def test_certificate_end_to_end_and_model_untouched():
    x, y = _blobs(2000)
    net = nn.Sequential(nn.Linear(2, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 2))
    w0 = copy.deepcopy(net.state_dict())
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(50):
        loss = nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.train()  # left in train mode on purpose: the call must not change it
    before = {k: v.clone() for k, v in net.state_dict().items()}
    flags = [m.training for m in net.modules()]
    xc, yc = _blobs(1000, seed=1)
    cert = pac_bayes_certificate(net, (x, y), prior=w0, check=(xc, yc), epochs=2,
                                 progress=False, device="cpu")
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # bit-identical
    assert [m.training for m in net.modules()] == flags
    assert cert.sampling == "example"
    assert 0 <= cert.gibbs_risk["error"] <= cert.gibbs_risk_upper["error"] <= cert.values["error"]
    assert cert.values["error"] < 0.5  # informative on an easy task
    assert set(cert.not_sampled_buffers) >= {"1.running_mean", "1.running_var"}
    assert cert.n_mc_terms == cert.n_samples * int(cert.timings["mc_passes"])
    assert cert.check["gibbs_error"] <= cert.values["error"]
    d = cert.to_dict()
    assert d["delta_shares"]["monte_carlo"] + d["delta_shares"]["pac_bayes"] == pytest.approx(0.05)
    assert "noisy copy" in d["certified_network"]
    # the posterior is enough to sample the certified network
    sample = cert.sample_network(net, random_state=3)
    assert not torch.equal(sample[0].weight, net[0].weight)
    assert set(cert.posterior_std) == set(cert.sampled_parameters)


def test_prior_equal_to_posterior_gives_zero_kl_and_the_test_set_bound():
    x, y = _blobs(600)
    net, _ = _fit_linear(x, y)
    prior = copy.deepcopy(net.state_dict())
    sigma = 0.05
    cert = pac_bayes_certificate(net, (x, y), prior=prior, prior_sigma=sigma, sigma_init=sigma,
                                 epochs=0, progress=False, device="cpu")
    assert cert.kl == pytest.approx(0.0, abs=1e-9)
    n, shares = cert.n_samples, cert.delta_shares
    inner = monte_carlo_upper(cert.gibbs_risk["error"], cert.n_mc_terms, shares["monte_carlo"])
    expect = kl_inverse(inner, (cert.kl + math.log(2 * math.sqrt(n) / shares["pac_bayes"])) / n)
    assert cert.values["error"] == pytest.approx(expect, abs=1e-12)


def test_linear_layer_draws_have_the_exact_per_example_law():
    net = nn.Linear(3, 2)
    x = torch.tensor([[1.0, -2.0, 0.5]]).repeat(20_000, 1)
    from clt_gen.gibbs import GaussianPosterior

    mean = {k: v.detach().clone() for k, v in net.named_parameters()}
    log_sigma = {k: torch.full_like(v, math.log(0.3)) for k, v in mean.items()}
    sampler = _Sampler(copy.deepcopy(net), GaussianPosterior(mean, log_sigma))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        out = sampler(x, gen, "example")
    expect_mean = net(x[:1]).detach()[0]
    expect_var = 0.09 * (x[0] ** 2).sum() + 0.09
    torch.testing.assert_close(out.mean(0), expect_mean, atol=0.02, rtol=0)
    torch.testing.assert_close(out.var(0), expect_var.repeat(2), atol=0.03, rtol=0.03)


def test_conv_draws_share_one_kernel_across_positions_of_an_example():
    # per-example kernels, not independent noise per position (which local
    # reparameterization would give and which is not the law of a weight draw)
    net = nn.Conv2d(1, 1, 1, bias=False)
    from clt_gen.gibbs import GaussianPosterior

    mean = {"weight": net.weight.detach().clone()}
    post = GaussianPosterior(mean, {"weight": torch.zeros(1, 1, 1, 1)})
    sampler = _Sampler(copy.deepcopy(net), post)
    x = torch.ones(64, 1, 4, 4)
    with torch.no_grad():
        out = sampler(x, torch.Generator().manual_seed(0), "example")
    per_example = out.reshape(64, -1)
    assert torch.allclose(per_example, per_example[:, :1].expand_as(per_example))
    assert per_example[:, 0].std() > 0.5  # the examples' draws differ


def test_batch_mode_draws_one_network_per_batch_and_matches_at_zero_noise():
    x, y = _blobs(300)
    net, w0 = _fit_linear(x, y)
    emb = nn.Sequential(net)
    assert sampling_mode(emb) == "example"
    assert sampling_mode(nn.Embedding(3, 2)) == "batch"
    cert_b = pac_bayes_certificate(net, (x, y), prior=w0, sampling="batch", epochs=1,
                                   prior_sigma=[1e-6], sigma_init=1e-9, progress=False)
    det_err = int((net(x).argmax(1) != y).sum()) / len(y)
    assert cert_b.sampling == "batch"
    assert cert_b.gibbs_risk["error"] == pytest.approx(det_err, abs=1e-12)


def test_gibbs_risk_coverage_on_a_task_with_known_gibbs_risk():
    """The certificate falls below the true Gibbs risk in at most delta of 200 samples.

    Binary Gaussian classes and a linear model: the Gibbs network's error on one point
    has the closed form Phi(-y m / sqrt(v)) (its score difference is Gaussian), so the
    true Gibbs risk is E_x of it, computed on 10^6 fresh points (to about 1e-3).
    Misses ~ Binomial(200, <= delta): the test fails a valid bound with probability < 1e-3.
    """
    delta, reps, n = 0.2, 200, 200
    xs, ys = _blobs(1_000_000, seed=12345)
    xs, sign = xs.double(), 2 * ys.double() - 1
    misses, values = 0, []
    for rep in range(reps):
        x, y = _blobs(n, seed=rep)
        net, w0 = _fit_linear(x, y, seed=rep, steps=30)
        cert = pac_bayes_certificate(
            net, (x, y), prior=w0, delta=delta, prior_sigma=[0.3, 1.0, 3.0], epochs=1,
            batch_size=100, mc_passes=5, progress=False, random_state=rep, device="cpu",
        )
        mu, sd = cert.posterior_mean, cert.posterior_std
        dw = mu["weight"][1] - mu["weight"][0]
        db = mu["bias"][1] - mu["bias"][0]
        vw = sd["weight"][1] ** 2 + sd["weight"][0] ** 2
        vb = sd["bias"][1] ** 2 + sd["bias"][0] ** 2
        m = xs @ dw.double() + db.double()
        v = (xs**2) @ vw.double() + vb.double()
        true_risk = float(torch.special.ndtr(-sign * m / v.sqrt()).mean())
        misses += cert.values["error"] < true_risk
        values.append(cert.values["error"] - true_risk)
    assert misses <= stats.binom.isf(1e-3, reps, delta)
    assert np.mean(values) < 0.5  # the bound says something: it is not stuck at 1


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"delta": 1.5}, "delta must be"),
        ({"delta": 0.0}, "delta must be"),
        ({"p_min": 0.0}, "p_min must be"),
        ({"p_min": 1.0}, "p_min must be"),
        ({"prior": {"weight": torch.zeros(2, 2)}}, "lacks"),
        ({"prior": {"weight": torch.zeros(3, 2), "bias": torch.zeros(2)}}, "shape"),
        ({"prior": "init"}, "init_state"),
        ({"prior": "nope"}, "prior must be one of"),
        ({"objective": "f_cubic"}, "objective must be one of"),
        ({"delta_mc": 0.07}, "delta_mc must be"),
    ],
)
def test_bad_certificate_input_is_named(kwargs, match):
    x, y = _blobs(100)
    net = nn.Linear(2, 2)
    args = {"prior": "zero", "epochs": 0, "progress": False, **kwargs}
    with pytest.raises(ValidationError, match=match):
        pac_bayes_certificate(net, (x, y), **args)


def test_no_trainable_parameters_and_nonfinite_weights_are_refused():
    x, y = _blobs(100)
    net = nn.Linear(2, 2)
    for p in net.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValidationError, match="no trainable parameters"):
        pac_bayes_certificate(net, (x, y), prior="zero", progress=False)
    net = nn.Linear(2, 2)
    with torch.no_grad():
        net.weight[0, 0] = float("nan")
    with pytest.raises(ValidationError, match="'weight' holds NaN"):
        pac_bayes_certificate(net, (x, y), prior="zero", progress=False)


def test_too_few_rows_for_the_union_bound_is_refused():
    x, y = _blobs(12)
    with pytest.raises(ValidationError, match="chance"):
        pac_bayes_certificate(nn.Linear(2, 2), (x, y), prior="zero", progress=False)


def test_killed_optimization_resumes_to_the_same_certificate(tmp_path, monkeypatch):
    import clt_gen.gibbs as gibbs

    x, y = _blobs(400)
    net, w0 = _fit_linear(x, y)
    kw = dict(prior=w0, epochs=3, progress=False, prior_sigma=[0.1, 0.3, 1.0], device="cpu")
    whole = pac_bayes_certificate(net, (x, y), **kw)
    real_save = gibbs._save_state
    calls = []

    def save_then_die(*a, **k):
        real_save(*a, **k)
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(gibbs, "_save_state", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        pac_bayes_certificate(net, (x, y), cache_dir=tmp_path, **kw)
    monkeypatch.setattr(gibbs, "_save_state", real_save)
    resumed = pac_bayes_certificate(net, (x, y), cache_dir=tmp_path, **kw)
    assert resumed.values == whole.values
    assert resumed.kl == whole.kl
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]


def test_public_names():
    assert clt_gen.kl_inverse is kl_inverse
    assert callable(clt_gen.pac_bayes_certificate)
    assert clt_gen.pac_bayes_kl_bound is pac_bayes_kl_bound


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_certificate_runs_on_cuda():  # pragma: no cover - exercised on GPU machines
    x, y = _blobs(400)
    net, w0 = _fit_linear(x, y)
    cert = pac_bayes_certificate(net, (x, y), prior=w0, epochs=1, progress=False, device="cuda")
    assert 0 <= cert.values["error"] <= 1
    assert next(net.parameters()).device.type == "cpu"

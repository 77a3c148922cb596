"""Losses, links and gradients of every regularizer against independent references.

References: the ``entmax`` package (sparsemax, 1.5-entmax, alpha-entmax by bisection and
their Fenchel–Young losses) and ``torch.nn.functional.cross_entropy`` / ``softmax``;
never this project's code. Scores come at scales 1, 1e3, 1e4, with offsets up to 1e4,
with ties, for K = 2 .. 1000. float64 must agree to 1e-9; float32 must agree within 1e-4
relative (of an O(1) value: ``1e-4 * max(1, |value|)``) with the float64 result on the
same float32-rounded scores.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

entmax = pytest.importorskip("entmax", reason="the entmax package is the oracle (test extra)")

from clt_gen.duality import get_regularizer  # noqa: E402

REGS = [
    ("sparsemax", {}),
    ("tsallis", {"alpha": 1.5}),
    ("tsallis", {"alpha": 2.0}),
    ("tsallis", {"alpha": 1.25}),
    ("shannon", {}),
]


def _oracle_link(name: str, kw: dict, s: torch.Tensor) -> torch.Tensor:
    if name == "shannon":
        return torch.softmax(s, -1)
    if name == "sparsemax":
        return entmax.sparsemax(s, dim=-1)
    alpha = kw["alpha"]
    if alpha == 1.5:
        return entmax.entmax15(s, dim=-1)
    return entmax.entmax_bisect(s, alpha=alpha, dim=-1, n_iter=80)


def _oracle_loss(name: str, kw: dict, s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if name == "shannon":
        return torch.nn.functional.cross_entropy(s, y, reduction="none")
    if name == "sparsemax":
        return entmax.sparsemax_loss(s, y)
    if kw["alpha"] == 1.5:
        return entmax.entmax15_loss(s, y)
    return entmax.entmax_bisect_loss(s, y, alpha=kw["alpha"], n_iter=80)


@st.composite
def score_batches(draw):
    k = draw(st.sampled_from([2, 3, 7, 50, 1000]))
    n = draw(st.integers(1, 6))
    scale = draw(st.sampled_from([1.0, 1e3, 1e4]))
    offset = draw(st.sampled_from([0.0, -37.5, 1e3, 1e4, -1e4]))
    seed = draw(st.integers(0, 2**31 - 1))
    ties = draw(st.booleans())
    gen = np.random.default_rng(seed)
    s = gen.normal(size=(n, k)) * scale / np.sqrt(max(1.0, np.log(k)))
    if ties:  # repeat the row maximum and another value
        s[:, -1] = s.max(1)
        s[:, 0] = s[:, 1]
    s = s + offset
    y = gen.integers(0, k, n)
    return s, y


def _row_close(a: np.ndarray, b: np.ndarray, tol: float) -> None:
    np.testing.assert_array_less(np.abs(a - b), tol * np.maximum(1.0, np.abs(b)) + 1e-300)


@pytest.mark.parametrize(("name", "kw"), REGS, ids=lambda v: str(v))
@settings(max_examples=40, deadline=None)
@given(batch=score_batches())
def test_float64_loss_link_gradient_match_oracle(name, kw, batch):
    s_np, y_np = batch
    reg = get_regularizer(name, **kw)
    s = torch.tensor(s_np, dtype=torch.float64, requires_grad=True)
    y = torch.tensor(y_np)
    ours = reg.label_loss(y, s)
    ours.sum().backward()
    g_ours = s.grad.clone()
    s_ref = torch.tensor(s_np, dtype=torch.float64, requires_grad=True)
    ref = _oracle_loss(name, kw, s_ref, y)
    ref.sum().backward()
    _row_close(ours.detach().numpy(), ref.detach().numpy(), 1e-9)
    np.testing.assert_allclose(g_ours.numpy(), s_ref.grad.numpy(), atol=1e-9, rtol=0)
    p = reg.link(s.detach())
    np.testing.assert_allclose(p.numpy(), _oracle_link(name, kw, s.detach()).numpy(), atol=1e-9)
    # the gradient of the loss is link − one-hot (THEORY §1 item 3)
    onehot = torch.nn.functional.one_hot(y, s.shape[-1]).double()
    np.testing.assert_allclose(g_ours.numpy(), (p - onehot).numpy(), atol=1e-9)


@pytest.mark.parametrize(("name", "kw"), REGS, ids=lambda v: str(v))
@settings(max_examples=40, deadline=None)
@given(batch=score_batches())
def test_float32_matches_float64_on_the_same_rounded_scores(name, kw, batch):
    s_np, y_np = batch
    reg = get_regularizer(name, **kw)
    s32 = torch.tensor(s_np, dtype=torch.float32, requires_grad=True)
    y = torch.tensor(y_np)
    l32 = reg.label_loss(y, s32)
    l32.sum().backward()
    s64 = s32.detach().double().requires_grad_()  # the same float32-rounded scores
    ref = _oracle_loss(name, kw, s64, y)
    ref.sum().backward()
    _row_close(l32.detach().double().numpy(), ref.detach().numpy(), 1e-4)
    np.testing.assert_allclose(s32.grad.double().numpy(), s64.grad.numpy(), atol=1e-4, rtol=0)
    # a positive loss always comes with a non-zero gradient (no silently frozen example)
    live = l32.detach() > 1e-3
    assert bool((s32.grad.abs().sum(-1)[live] > 0).all())


@pytest.mark.parametrize(("name", "kw"), REGS, ids=lambda v: str(v))
def test_shift_by_large_offsets_changes_nothing_in_float32(name, kw):
    reg = get_regularizer(name, **kw)
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(256, 10, generator=gen) * 3
    y = torch.randint(0, 10, (256,), generator=gen)
    ref = reg.label_loss(y, base.double())
    for off in (1e3, 1e4):
        s = (base + off).float().requires_grad_()
        loss = reg.label_loss(y, s)
        loss.sum().backward()
        s64 = s.detach().double() - off
        np.testing.assert_allclose(
            loss.detach().double().numpy(), reg.label_loss(y, s64).numpy(), atol=1e-4
        )
        np.testing.assert_allclose(loss.detach().double().numpy(), ref.numpy(), atol=5e-3)
        assert int(((s.grad.abs().sum(1) == 0) & (loss.detach() > 1e-6)).sum()) == 0


def test_target_loss_equals_expected_label_loss():
    gen = torch.Generator().manual_seed(1)
    s = torch.randn(20, 5, generator=gen, dtype=torch.float64) + 1e4
    t = torch.softmax(torch.randn(20, 5, generator=gen, dtype=torch.float64), -1)
    for name, kw in REGS:
        reg = get_regularizer(name, **kw)
        by_label = sum(t[:, c] * reg.label_loss(torch.full((20,), c), s) for c in range(5))
        np.testing.assert_allclose(reg.target_loss(t, s).numpy(), by_label.numpy(), atol=1e-9)

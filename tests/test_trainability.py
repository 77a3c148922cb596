"""Structure matrices, spectra, gradient energy and the loss sandwich (THEORY §4)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from clt_gen.models import build_model
from clt_gen.testing import small_networks
from clt_gen.trainability import (
    gradient_energy,
    local_pearson,
    loss_sandwich,
    per_example_gradient_norms,
    structure_matrices,
    structure_matrices_naive,
    structure_spectrum,
)

CASES = {
    "mlp": ((6,), {"width": 7, "depth": 2}),
    "lenet": ((1, 8, 8), {}),
    "model-b": ((6,), {"k": 2, "w": 5}),
    "model-d": ((1, 8, 8), {"k": 2, "w": 3}),
    "resnet18-ln": ((3, 8, 8), {"norm": "layernorm"}),
    "resnet18-bn": ((3, 8, 8), {"norm": "batchnorm"}),
    "vit": (
        (1, 8, 8),
        {
            "hidden_dim": 8,
            "num_layers": 1,
            "num_heads": 2,
            "mlp_dim": 8,
            "patch_size": 4,
            "dropout": 0.1,
        },
    ),
}


def _model(name):
    torch.manual_seed(0)
    shape, kw = CASES[name]
    arch = "resnet18" if name.startswith("resnet18") else name
    net = build_model(arch, shape, 4, **kw).double()
    if name == "resnet18-bn":  # non-trivial running statistics
        net.train()
        with torch.no_grad():
            net(torch.randn(8, *shape, dtype=torch.float64))
    return net.train(), shape  # left in train mode: the functions must switch to eval


@pytest.mark.parametrize("name", sorted(CASES))
def test_fast_path_matches_naive_loop(name):
    net, shape = _model(name)
    x = torch.randn(3, *shape, dtype=torch.float64)
    if name.startswith("resnet18"):
        # the naive loop over 11M parameters is slow: restrict both to the last stage
        for pname, p in net.named_parameters():
            p.requires_grad_(pname.startswith(("layer4.1", "fc")))
    fast = structure_matrices(net, x)
    naive = structure_matrices_naive(net, x)
    np.testing.assert_allclose(
        fast.numpy(), naive.numpy(), rtol=1e-6, atol=1e-9 * float(naive.abs().max())
    )
    assert net.training  # mode restored


def test_eigenvalues_agree_with_singular_values_of_jacobian():
    net, shape = _model("mlp")
    x = torch.randn(4, *shape, dtype=torch.float64)
    spec = structure_spectrum(net, x, simplex=False)
    params = [p for p in net.parameters()]
    for i in range(4):
        rows = []
        out = net.eval()(x[i : i + 1])[0]
        for k in range(4):
            g = torch.autograd.grad(out[k], params, retain_graph=True)
            rows.append(torch.cat([t.reshape(-1) for t in g]))
        sv = torch.linalg.svdvals(torch.stack(rows)) ** 2
        np.testing.assert_allclose(spec.lam_max[i].item(), sv.max().item(), rtol=1e-9)
        np.testing.assert_allclose(spec.lam_min[i].item(), sv.min().item(), rtol=1e-9)
    # the restricted spectrum lies inside the full one (Cauchy interlacing)
    assert torch.all(spec.lam_min_perp >= spec.lam_min - 1e-12)
    assert torch.all(spec.lam_max_perp <= spec.lam_max + 1e-12)


@pytest.mark.parametrize("omega", ["shannon", "squared"])
@settings(max_examples=25, deadline=None)
@given(
    net=small_networks(n_features=4, n_classes=3),
    seed=st.integers(0, 10_000),
    eps=st.sampled_from([0.0, 0.1]),
)
def test_sandwich_holds_on_every_example(omega, net, seed, eps):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(6, 4, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (6,), generator=gen)
    sw = loss_sandwich(net, x, y, omega=omega, label_smoothing=eps)
    assert bool(sw.holds().all()), (sw.lower, sw.loss, sw.upper)
    # ||∇ℓ||² = eᵀ A e agrees with directly computed per-example gradients
    direct = per_example_gradient_norms(net, x, y, omega=omega, label_smoothing=eps) ** 2
    np.testing.assert_allclose(direct.numpy(), sw.grad_sq.numpy(), rtol=1e-8, atol=1e-14)


def test_gradient_energy_is_mean_of_per_example_norms_not_batch_norm():
    net, shape = _model("mlp")
    x = torch.randn(8, *shape, dtype=torch.float64)
    y = torch.randint(0, 4, (8,))
    energy = gradient_energy(net, x, y)
    net.eval()
    per = []
    for i in range(8):
        loss = torch.nn.functional.cross_entropy(net(x[i : i + 1]), y[i : i + 1])
        g = torch.autograd.grad(loss, list(net.parameters()))
        per.append(sum(float((t**2).sum()) for t in g))
    np.testing.assert_allclose(energy, np.mean(per), rtol=1e-9)
    loss = torch.nn.functional.cross_entropy(net(x), y, reduction="sum") / 8
    batch = sum(float((t**2).sum()) for t in torch.autograd.grad(loss, list(net.parameters())))
    assert batch < energy  # Jensen: the batch gradient averages per-example gradients


def test_local_pearson_window_and_errors():
    vals = local_pearson(np.arange(10.0), np.arange(10.0) ** 2, window=5)
    assert vals[:4] == [None] * 4 and all(v > 0.9 for v in vals[4:])
    with pytest.raises(ValueError, match="window must be an int >= 2"):
        local_pearson([1, 2], [1, 2], window=1)


def test_inplace_activations_and_residual_adds_do_not_corrupt_the_fast_path():
    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(5, 5)
            self.norm = torch.nn.LayerNorm(5)
            self.act = torch.nn.ReLU(inplace=True)
            self.head = torch.nn.Linear(5, 3)

        def forward(self, x):
            h = self.act(self.lin(x))  # in-place on the Linear output
            h = self.norm(h)
            h += x  # in-place residual on the LayerNorm output
            return self.head(h)

    torch.manual_seed(0)
    net = Block().double()
    x = torch.randn(4, 5, dtype=torch.float64)
    np.testing.assert_allclose(
        structure_matrices(net, x).numpy(),
        structure_matrices_naive(net, x).numpy(),
        rtol=1e-9,
        atol=1e-12,
    )

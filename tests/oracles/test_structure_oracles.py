"""Structure matrices ``A_x = J_x J_xᵀ`` and per-example gradient norms on a layer zoo,
against a naive loop written here from the definition (``K`` backward passes per example
over the trainable parameters). float64, relative tolerance 1e-9.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from clt_gen.trainability import per_example_gradient_norms, structure_matrices

K = 3


def naive_structure(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    params = [p for p in model.parameters() if p.requires_grad]
    was = model.training
    model.eval()
    mats = []
    for i in range(len(x)):
        f = model(x[i : i + 1])[0]
        rows = []
        for k in range(f.shape[0]):
            gs = torch.autograd.grad(f[k], params, retain_graph=True, allow_unused=True)
            rows.append(
                torch.cat(
                    [
                        (g if g is not None else torch.zeros_like(p)).reshape(-1)
                        for g, p in zip(gs, params, strict=True)
                    ]
                )
            )
        jac = torch.stack(rows)
        mats.append(jac @ jac.T)
    model.train(was)
    return torch.stack(mats).detach()


def naive_grad_norms(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    params = [p for p in model.parameters() if p.requires_grad]
    model.eval()
    out = []
    for i in range(len(x)):
        loss = nn.functional.cross_entropy(model(x[i : i + 1]), y[i : i + 1])
        gs = torch.autograd.grad(loss, params, allow_unused=True)
        out.append(torch.sqrt(sum((g * g).sum() for g in gs if g is not None)))
    return torch.stack(out).detach()


class Head(nn.Module):
    """body -> flatten -> Linear(K)."""

    def __init__(self, body: nn.Module, n_flat: int) -> None:
        super().__init__()
        self.body = body
        self.out = nn.Linear(n_flat, K)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.body(x)).flatten(1))


def conv_zoo() -> dict[str, tuple[nn.Module, tuple[int, ...]]]:
    zoo: dict[str, tuple[nn.Module, tuple[int, ...]]] = {}
    for mode in ("zeros", "reflect", "replicate", "circular"):
        zoo[f"conv2d-{mode}"] = (
            Head(nn.Conv2d(2, 3, 3, padding=1, padding_mode=mode), 3 * 5 * 5),
            (2, 5, 5),
        )
        zoo[f"conv1d-{mode}"] = (
            Head(nn.Conv1d(2, 3, 3, padding=1, padding_mode=mode), 3 * 6),
            (2, 6),
        )
    zoo["conv2d-same"] = (Head(nn.Conv2d(2, 3, 3, padding="same"), 3 * 5 * 5), (2, 5, 5))
    zoo["conv2d-same-dilated"] = (
        Head(nn.Conv2d(2, 3, 3, padding="same", dilation=2), 3 * 6 * 6),
        (2, 6, 6),
    )
    zoo["conv2d-stride-dilation"] = (
        Head(nn.Conv2d(2, 3, 3, stride=2, dilation=2, padding=2), 3 * 3 * 3),
        (2, 6, 6),
    )
    zoo["conv2d-groups"] = (Head(nn.Conv2d(4, 6, 3, groups=2), 6 * 3 * 3), (4, 5, 5))
    zoo["conv2d-depthwise"] = (Head(nn.Conv2d(3, 3, 3, groups=3), 3 * 3 * 3), (3, 5, 5))
    zoo["conv2d-nobias"] = (Head(nn.Conv2d(2, 3, 3, bias=False), 3 * 3 * 3), (2, 5, 5))
    for mode in ("zeros", "reflect", "replicate", "circular"):
        zoo[f"conv3d-{mode}"] = (
            Head(nn.Conv3d(1, 2, 3, padding=1, padding_mode=mode), 2 * 4 * 4 * 4),
            (1, 4, 4, 4),
        )
    zoo["conv1d-same"] = (Head(nn.Conv1d(2, 3, 3, padding="same"), 3 * 6), (2, 6))
    zoo["conv3d-same"] = (Head(nn.Conv3d(1, 2, 3, padding="same"), 2 * 4 * 4 * 4), (1, 4, 4, 4))
    zoo["convtranspose2d"] = (Head(nn.ConvTranspose2d(2, 2, 3, stride=2), 2 * 9 * 9), (2, 4, 4))
    return zoo


class Norms(nn.Module):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.norm: nn.Module
        if kind == "batchnorm":
            self.norm = nn.BatchNorm2d(4)
            self.norm.running_mean.uniform_(-0.5, 0.5)
            self.norm.running_var.uniform_(0.5, 2.0)
        elif kind == "groupnorm":
            self.norm = nn.GroupNorm(2, 4)
        elif kind == "layernorm":
            self.norm = nn.LayerNorm([4, 4, 4])
        else:
            self.norm = nn.LayerNorm([4, 4, 4], bias=False)
        with torch.no_grad():
            for p in self.norm.parameters():
                p.uniform_(0.5, 1.5)
        self.out = nn.Linear(64, K)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.norm(self.conv(x)).relu().flatten(1))


class TwoLinearsOneWeight(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(5, 5)
        self.b = nn.Linear(5, 5)
        self.b.weight = self.a.weight  # one Parameter, two modules
        self.out = nn.Linear(5, K)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.b(torch.tanh(self.a(x)))))


class SameModuleTwice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(5, 5)
        self.out = nn.Linear(5, K)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.a(torch.tanh(self.a(x)))))


class TiedEmbedding(nn.Module):
    """A language-model style head: the output layer reuses the embedding matrix."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(K, 6)
        self.mix = nn.Linear(6, 6)
        self.out = nn.Linear(6, K, bias=False)
        self.out.weight = self.emb.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.emb(tokens).mean(1)
        return self.out(torch.tanh(self.mix(h)))


class Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(6, 2, batch_first=True)
        self.out = nn.Linear(6, K)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.attn(x, x, x, need_weights=False)
        return self.out(h.mean(1))


class TinyViTBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.patch = nn.Conv2d(1, 8, 2, stride=2)
        self.cls = nn.Parameter(torch.randn(1, 1, 8) * 0.1)
        self.ln1 = nn.LayerNorm(8)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.ln2 = nn.LayerNorm(8)
        self.mlp = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 8))
        self.out = nn.Linear(8, K)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.patch(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls.expand(len(t), -1, -1), t], 1)
        h = self.ln1(t)
        t = t + self.attn(h, h, h, need_weights=False)[0]
        t = t + self.mlp(self.ln2(t))
        return self.out(t[:, 0])


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(5, 5)
        self.b = nn.Linear(5, 5)
        self.relu = nn.ReLU(inplace=True)
        self.out = nn.Linear(5, K)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu(self.a(x))
        r = self.b(h)
        r += h  # residual add, in place, as in ResNet blocks
        return self.out(self.relu(r))


def frozen(kind: str) -> nn.Module:
    net = nn.Sequential(
        nn.Linear(5, 6),
        nn.Tanh(),
        nn.Unflatten(1, (1, 6)),
        nn.Conv1d(1, 2, 3),
        nn.Flatten(),
        nn.Tanh(),
        nn.Linear(8, K),
    )
    if kind == "full":
        for p in net[0].parameters():
            p.requires_grad_(False)
    else:
        net[0].weight.requires_grad_(False)  # bias stays trainable
        net[-1].bias.requires_grad_(False)
    return net


def zoo() -> dict[str, tuple[nn.Module, torch.Tensor]]:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    out: dict[str, tuple[nn.Module, torch.Tensor]] = {}
    for name, (m, shape) in conv_zoo().items():
        out[name] = (m, torch.randn(4, *shape, generator=gen))
    for kind in ("batchnorm", "groupnorm", "layernorm", "layernorm-nobias"):
        out[kind] = (Norms(kind), torch.randn(4, 2, 4, 4, generator=gen))
    out["linear"] = (
        nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, K)),
        torch.randn(4, 5, generator=gen),
    )
    out["shared-parameter"] = (TwoLinearsOneWeight(), torch.randn(4, 5, generator=gen))
    out["module-twice"] = (SameModuleTwice(), torch.randn(4, 5, generator=gen))
    out["embedding-tied"] = (TiedEmbedding(), torch.randint(0, K, (4, 5), generator=gen))
    out["embedding"] = (
        nn.Sequential(nn.Embedding(10, 4), nn.Flatten(), nn.Linear(12, K)),
        torch.randint(0, 10, (4, 3), generator=gen),
    )
    out["attention"] = (Attention(), torch.randn(4, 3, 6, generator=gen))
    out["vit-block"] = (TinyViTBlock(), torch.randn(4, 1, 4, 4, generator=gen))
    out["residual-inplace"] = (Residual(), torch.randn(4, 5, generator=gen))
    out["frozen-full"] = (frozen("full"), torch.randn(4, 5, generator=gen))
    out["frozen-partial"] = (frozen("partial"), torch.randn(4, 5, generator=gen))
    return out


ZOO = zoo()


@pytest.mark.parametrize("name", sorted(ZOO))
def test_structure_matrices_match_naive_loop(name):
    model, x = ZOO[name]
    model = model.double()
    x = x.double() if x.is_floating_point() else x
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        fast = structure_matrices(model, x)
    ref = naive_structure(model, x)
    scale = float(ref.abs().max())
    np.testing.assert_allclose(fast.numpy(), ref.numpy(), rtol=1e-9, atol=1e-9 * scale)


@pytest.mark.parametrize(
    "name",
    [
        "shared-parameter",
        "embedding-tied",
        "frozen-partial",
        "conv2d-reflect",
        "layernorm-nobias",
        "linear",
    ],
)
def test_per_example_gradient_norms_match_naive_loop(name):
    model, x = ZOO[name]
    model = model.double()
    x = x.double() if x.is_floating_point() else x
    y = torch.arange(len(x)) % K
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        fast = per_example_gradient_norms(model, x, y)
    np.testing.assert_allclose(fast.numpy(), naive_grad_norms(model, x, y).numpy(), rtol=1e-9)


def test_unknown_layers_take_the_general_path_with_a_named_warning():
    model, x = ZOO["embedding"]
    with pytest.warns(UserWarning, match=r"layer '0' \(Embedding\) has no closed form"):
        structure_matrices(model.double(), x)

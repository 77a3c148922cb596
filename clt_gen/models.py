"""Architecture zoo, looked up by name; constructor kwargs are recorded in checkpoints.

Every builder takes ``input_shape`` (without the batch axis), ``n_classes`` and its own
keyword options, and returns an ``nn.Module`` mapping a batch to scores of shape
``(n_samples, n_classes)``.

``model-a``..``model-d`` follow the prose of Qi–Gong–Li (their Figure 1 was not
available): ``model-a`` is a fully connected network with ``k`` hidden blocks of width
``w``; ``model-b`` adds identity skips around each block; ``model-c`` is a convolutional
network with ``k`` 3×3 blocks of ``w`` channels; ``model-d`` adds identity skips to it.
He (Kaiming) initialization throughout.

Examples
--------
>>> import torch
>>> net = build_model("model-b", (1, 8, 8), 10, k=2, w=16)
>>> net(torch.zeros(3, 1, 8, 8)).shape
torch.Size([3, 10])
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from clt_gen.errors import ValidationError, unknown_name_error

__all__ = ["ARCHITECTURES", "build_model", "architecture_names"]


def _he_init(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _flat_dim(shape: tuple[int, ...]) -> int:
    return int(math.prod(shape))


class MLP(nn.Module):
    def __init__(
        self,
        input_shape: tuple[int, ...],
        n_classes: int,
        width: int = 256,
        depth: int = 2,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        d = _flat_dim(input_shape)
        for _ in range(depth):
            layers += [nn.Linear(d, width), nn.ReLU()]
            if dropout:
                layers.append(nn.Dropout(dropout))
            d = width
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(d, n_classes)
        _he_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class LeNet(nn.Module):
    """LeNet-5 style: two 5×5 conv + max-pool stages, then 120-84-K fully connected."""

    def __init__(self, input_shape: tuple[int, ...], n_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        c = input_shape[0]
        self.conv1 = nn.Sequential(nn.Conv2d(c, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2))
        self.conv2 = nn.Sequential(nn.Conv2d(6, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2))
        with torch.no_grad():
            d = self.conv2(self.conv1(torch.zeros(1, *input_shape))).numel()
        drop: list[nn.Module] = [nn.Dropout(dropout)] if dropout else []
        self.fc1 = nn.Sequential(nn.Flatten(), nn.Linear(d, 120), nn.ReLU(), *drop)
        self.fc2 = nn.Sequential(nn.Linear(120, 84), nn.ReLU(), *drop)
        self.head = nn.Linear(84, n_classes)
        _he_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.fc2(self.fc1(self.conv2(self.conv1(x)))))


class _Block(nn.Module):
    def __init__(self, inner: nn.Module, skip: bool) -> None:
        super().__init__()
        self.inner = inner
        self.skip = skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(x)
        return x + out if self.skip else out


class BlockNet(nn.Module):
    """Models a–d: a stem, ``k`` blocks (optionally with identity skips), a linear head."""

    def __init__(
        self,
        input_shape: tuple[int, ...],
        n_classes: int,
        *,
        conv: bool,
        skip: bool,
        k: int = 2,
        w: int = 64,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if k < 0 or w < 1:
            raise ValidationError(f"k must be >= 0 and w >= 1 (got k={k}, w={w})")
        drop: list[nn.Module] = [nn.Dropout(dropout)] if dropout else []
        if conv:
            c = input_shape[0] if len(input_shape) == 3 else 1
            self.stem = nn.Sequential(nn.Conv2d(c, w, 3, stride=2, padding=1), nn.ReLU())
            blocks = [
                _Block(nn.Sequential(nn.Conv2d(w, w, 3, padding=1), nn.ReLU(), *drop), skip)
                for _ in range(k)
            ]
            self.pool: nn.Module = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        else:
            self.stem = nn.Sequential(nn.Flatten(), nn.Linear(_flat_dim(input_shape), w), nn.ReLU())
            blocks = [
                _Block(nn.Sequential(nn.Linear(w, w), nn.ReLU(), *drop), skip) for _ in range(k)
            ]
            self.pool = nn.Identity()
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(w, n_classes)
        _he_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.blocks(self.stem(x))))


def _resnet18(
    input_shape: tuple[int, ...], n_classes: int, norm: str = "layernorm", dropout: float = 0.0
) -> nn.Module:
    from torchvision.models import resnet18

    if norm not in ("layernorm", "batchnorm"):
        raise ValidationError(f"norm must be 'layernorm' or 'batchnorm' (got {norm!r})")

    def norm_layer(c: int) -> nn.Module:
        return nn.GroupNorm(1, c) if norm == "layernorm" else nn.BatchNorm2d(c)

    net = resnet18(num_classes=n_classes, norm_layer=norm_layer)
    net.conv1 = nn.Conv2d(input_shape[0], 64, 3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    if dropout:
        net.fc = nn.Sequential(nn.Dropout(dropout), nn.Linear(512, n_classes))
    return net


def _vit(
    input_shape: tuple[int, ...],
    n_classes: int,
    patch_size: int | None = None,
    hidden_dim: int = 64,
    num_layers: int = 4,
    num_heads: int = 4,
    mlp_dim: int = 128,
    dropout: float = 0.0,
) -> nn.Module:
    from torchvision.models import VisionTransformer

    c, h, w = input_shape
    if h != w:
        raise ValidationError(f"vit needs square images (got input_shape={input_shape})")
    p = patch_size or next(s for s in (4, 7, 2, 1) if h % s == 0)
    if h % p:
        raise ValidationError(f"patch_size must divide the image size {h} (got {p})")
    net = VisionTransformer(
        image_size=h,
        patch_size=p,
        num_layers=num_layers,
        num_heads=num_heads,
        hidden_dim=hidden_dim,
        mlp_dim=mlp_dim,
        dropout=dropout,
        num_classes=n_classes,
    )
    net.conv_proj = nn.Conv2d(c, hidden_dim, kernel_size=p, stride=p)
    return net


ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "mlp": MLP,
    "lenet": LeNet,
    "model-a": lambda s, k_, **kw: BlockNet(s, k_, conv=False, skip=False, **kw),
    "model-b": lambda s, k_, **kw: BlockNet(s, k_, conv=False, skip=True, **kw),
    "model-c": lambda s, k_, **kw: BlockNet(s, k_, conv=True, skip=False, **kw),
    "model-d": lambda s, k_, **kw: BlockNet(s, k_, conv=True, skip=True, **kw),
    "resnet18": _resnet18,
    "vit": _vit,
}


def architecture_names() -> list[str]:
    """Return the registered architecture names."""
    return sorted(ARCHITECTURES)


def build_model(
    arch: str, input_shape: tuple[int, ...] | list[int], n_classes: int, **kwargs: Any
) -> nn.Module:
    """Build a registered architecture.

    Parameters
    ----------
    arch : str
        One of :func:`architecture_names`.
    input_shape : tuple of int
        Shape of one input, e.g. ``(1, 28, 28)``.
    n_classes : int
    **kwargs
        Architecture options (``width``/``depth`` for ``mlp``; ``k``/``w`` for models a–d;
        ``norm`` for ``resnet18``; ``patch_size``, ``hidden_dim``... for ``vit``;
        ``dropout`` everywhere).

    Returns
    -------
    nn.Module
        Freshly initialized (from torch's global generator: seed it, or use
        ``torch.random.fork_rng``, for a reproducible initialization).

    Examples
    --------
    >>> net = build_model("mlp", (1, 8, 8), 10, width=32)
    >>> net(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 10])
    """
    if arch not in ARCHITECTURES:
        raise unknown_name_error("arch", arch, ARCHITECTURES)
    shape = tuple(int(s) for s in input_shape)
    if arch in ("lenet", "model-c", "model-d", "resnet18", "vit") and len(shape) != 3:
        raise ValidationError(
            f"arch={arch!r} needs image inputs of shape (C, H, W) (got input_shape={shape}); "
            "use 'mlp', 'model-a' or 'model-b' for vector inputs"
        )
    try:
        return ARCHITECTURES[arch](shape, int(n_classes), **kwargs)
    except TypeError as exc:
        raise ValidationError(
            f"arch={arch!r} does not accept options {sorted(kwargs)}: {exc}"
        ) from None

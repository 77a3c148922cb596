"""Layer discovery and feature extraction with forward hooks.

Examples
--------
>>> from clt_gen.models import build_model
>>> net = build_model("model-a", (4,), 3, k=1, w=8)
>>> [layer.name for layer in list_layers(net, (4,))][:3]
['stem', 'stem.0', 'stem.1']
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from clt_gen._modes import eval_mode
from clt_gen.errors import ValidationError, unknown_name_error

__all__ = [
    "LayerInfo",
    "list_layers",
    "default_layers",
    "resolve_layers",
    "hooked",
    "INPUT_LAYER",
]

INPUT_LAYER = "input"
Reduce = Literal["avgpool", "flatten", "project"]


@dataclass(frozen=True)
class LayerInfo:
    """A named module: its type, output shape (one example) and own parameter count.

    Attributes
    ----------
    name : str
        As in ``named_modules()`` (or a graph node name).
    kind : str
        The module's class name, or ``"graph node"``.
    output_shape : tuple of int
        Output shape for one example (empty when the output is not a single tensor).
    n_params : int
        Parameters the module owns directly (not its children's).
    depth : int
        Nesting depth (0 for the model's children).
    """

    name: str
    kind: str
    output_shape: tuple[int, ...]
    n_params: int
    depth: int


def _example(model: nn.Module, example: torch.Tensor | tuple[int, ...] | list[int]) -> torch.Tensor:
    """One input batch: ``example`` itself, or zeros of shape ``(1, *example)``."""
    param = next(model.parameters(), None)
    dev = param.device if param is not None else torch.device("cpu")
    if isinstance(example, torch.Tensor):
        return example.to(dev)
    dtype = param.dtype if param is not None else torch.float32
    return torch.zeros(1, *example, device=dev, dtype=dtype)


def list_layers(
    model: nn.Module,
    example: torch.Tensor | tuple[int, ...] | list[int],
    *,
    graph: bool = False,
) -> list[LayerInfo]:
    """Every named submodule with the shape of its output for ``example``.

    Parameters
    ----------
    model : nn.Module
    example : tensor or shape
        An input batch, or the shape of one example (without the batch dimension).
    graph : bool
        Also list torchvision FX graph nodes (activations that are not module outputs,
        e.g. a residual ``add`` or a functional ``flatten``), with kind ``"graph node"``.

    Returns
    -------
    list of LayerInfo
        Modules whose output is not a single tensor have an empty shape.

    Examples
    --------
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    >>> [(info.name, info.output_shape) for info in list_layers(net, (4,))]
    [('0', (8,)), ('1', (8,)), ('2', (3,))]
    """
    shapes: dict[str, tuple[int, ...]] = {}
    handles = []
    named = [(n, m) for n, m in model.named_modules() if n]

    def hook_for(name: str):  # noqa: ANN202
        def hook(_m: nn.Module, _i: object, out: object) -> None:
            if isinstance(out, torch.Tensor) and name not in shapes:
                shapes[name] = tuple(out.shape[1:])

        return hook

    x = _example(model, example)
    try:
        for n, m in named:
            handles.append(m.register_forward_hook(hook_for(n)))
        with eval_mode(model), torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    infos = [
        LayerInfo(
            n,
            type(m).__name__,
            shapes.get(n, ()),
            sum(p.numel() for p in m.parameters(recurse=False)),
            n.count(".") + 1,
        )
        for n, m in named
    ]
    return infos + (_graph_infos(model, x, {n for n, _ in named}) if graph else [])


def _graph_infos(model: nn.Module, x: torch.Tensor, modules: set[str]) -> list[LayerInfo]:
    """Graph nodes that are not module names, with their output shapes."""
    from torchvision.models.feature_extraction import (
        create_feature_extractor,
        get_graph_node_names,
    )

    try:
        nodes = [n for n in get_graph_node_names(model)[1] if n not in modules]
        extractor = create_feature_extractor(model, return_nodes=nodes)
        with eval_mode(extractor), torch.no_grad():
            outs = extractor(x)
    except Exception as exc:  # noqa: BLE001 - an untraceable model has no graph nodes
        raise ValidationError(
            f"the model cannot be traced by torch.fx ({type(exc).__name__}: {exc}); use module "
            "names (list_layers without graph=True)"
        ) from exc
    return [
        LayerInfo(
            n,
            "graph node",
            tuple(o.shape[1:]) if isinstance(o, torch.Tensor) else (),
            0,
            n.count(".") + 1,
        )
        for n, o in outs.items()
    ]


_PLUMBING = (
    nn.modules.batchnorm._NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.ReLU,
    nn.GELU,
    nn.SiLU,
    nn.Tanh,
    nn.Sigmoid,
    nn.LeakyReLU,
    nn.ELU,
    nn.Dropout,
    nn.Identity,
)


def default_layers(
    model: nn.Module, example: torch.Tensor | tuple[int, ...] | list[int]
) -> list[str]:
    """Return the top-level blocks in forward order; the last one gives the logits.

    Blocks are the children of the model, and the blocks inside a top-level ``Sequential``
    of blocks.

    Stand-alone normalization, activation and dropout modules are left out (they refine a
    block's output rather than form a block), except as the penultimate or last layer.

    Parameters
    ----------
    model : nn.Module
    example : tensor or shape
        An input batch, or the shape of one example (without the batch dimension).

    Returns
    -------
    list of str
        Module names in forward order, the logits layer last.

    Examples
    --------
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))
    >>> default_layers(net, (4,))
    ['0', '2', '3', '4']
    """
    infos = [i for i in list_layers(model, example) if i.output_shape]
    names = [i.name for i in infos if i.depth == 1]
    expanded: list[str] = []
    for n in names:
        mod = dict(model.named_modules())[n]
        kids = [f"{n}.{c}" for c, _ in mod.named_children()]
        if (
            isinstance(mod, nn.Sequential)
            and len(kids) > 1
            and all(
                any(p.numel() for p in dict(model.named_modules())[k].parameters()) for k in kids
            )
        ):
            expanded.extend(kids)
        else:
            expanded.append(n)
    modules = dict(model.named_modules())
    keep = [
        n
        for i, n in enumerate(expanded)
        if i >= len(expanded) - 2 or not isinstance(modules[n], _PLUMBING)
    ]
    return keep


def resolve_layers(model: nn.Module, layers: list[str]) -> list[str]:
    """Check layer names against the model; unknown names list the valid ones."""
    valid = [n for n, _ in model.named_modules() if n]
    for name in layers:
        if name not in valid:
            raise unknown_name_error("layer", name, valid)
    if not layers:
        raise ValidationError("layers must name at least one layer (got an empty list)")
    return list(layers)


@contextlib.contextmanager
def hooked(model: nn.Module, layers: list[str]) -> Iterator[dict[str, torch.Tensor]]:
    """Forward hooks that store each named layer's output; always removed on exit.

    The model is put in eval mode with gradients off inside the block, and its previous
    train/eval mode and the global grad mode are restored afterwards, even on error.
    """
    modules = dict(model.named_modules())
    captured: dict[str, torch.Tensor] = {}
    handles = []

    def hook_for(name: str):  # noqa: ANN202
        def hook(_m: nn.Module, _i: object, out: object) -> None:
            if isinstance(out, (tuple, list)):
                out = out[0]
            if isinstance(out, torch.Tensor):
                captured[name] = out.detach()

        return hook

    modes = [(m, m.training) for m in model.modules()]
    grad_mode = torch.is_grad_enabled()
    try:
        for name in layers:
            if name != INPUT_LAYER:
                handles.append(modules[name].register_forward_hook(hook_for(name)))
        model.eval()
        torch.set_grad_enabled(False)
        yield captured
    finally:
        for h in handles:
            h.remove()
        for m_, t_ in modes:
            m_.training = t_
        torch.set_grad_enabled(grad_mode)


def _projection(d_in: int, d_out: int, seed: int, device: torch.device) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(d_in, d_out, generator=gen) / np.sqrt(d_out)).to(device)


def _reduce(out: torch.Tensor, reduce: str, proj: torch.Tensor | None) -> torch.Tensor:
    out = out.float()
    if out.ndim == 4 and reduce == "avgpool":
        out = out.mean((2, 3))
    elif out.ndim == 3 and reduce == "avgpool":  # token sequences: mean over tokens
        out = out.mean(1)
    out = out.reshape(len(out), -1)
    if proj is not None:
        out = out @ proj
    return out

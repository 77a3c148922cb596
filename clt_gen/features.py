"""Layer discovery and feature extraction with forward hooks.

Examples
--------
>>> from clt_gen.models import build_model
>>> net = build_model("model-a", (4,), 3, k=1, w=8)
>>> [layer.name for layer in list_layers(net, (4,))][:3]
['stem', 'stem.0', 'stem.1']
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from clt_gen.errors import ValidationError, unknown_name_error

__all__ = ["LayerInfo", "list_layers", "default_layers", "resolve_layers"]


@dataclass(frozen=True)
class LayerInfo:
    """A named module: its type, output shape (one example) and own parameter count."""

    name: str
    kind: str
    output_shape: tuple[int, ...]
    n_params: int
    depth: int


def list_layers(model: nn.Module, input_shape: tuple[int, ...] | list[int]) -> list[LayerInfo]:
    """Every named submodule with the shape of its output for one input of ``input_shape``.

    Modules whose output is not a single tensor are listed with an empty shape.
    """
    shapes: dict[str, tuple[int, ...]] = {}
    handles = []
    named = [(n, m) for n, m in model.named_modules() if n]

    def hook_for(name: str):  # noqa: ANN202
        def hook(_m: nn.Module, _i: object, out: object) -> None:
            if isinstance(out, torch.Tensor) and name not in shapes:
                shapes[name] = tuple(out.shape[1:])

        return hook

    was_training = model.training
    try:
        for n, m in named:
            handles.append(m.register_forward_hook(hook_for(n)))
        model.eval()
        param = next(model.parameters(), None)
        dev = param.device if param is not None else torch.device("cpu")
        dtype = param.dtype if param is not None else torch.float32
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=dev, dtype=dtype))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return [
        LayerInfo(
            n,
            type(m).__name__,
            shapes.get(n, ()),
            sum(p.numel() for p in m.parameters(recurse=False)),
            n.count(".") + 1,
        )
        for n, m in named
    ]


def default_layers(model: nn.Module, input_shape: tuple[int, ...] | list[int]) -> list[str]:
    """Top-level blocks (children of the model, and the blocks inside a top-level
    ``Sequential`` of blocks), in forward order; the last one gives the logits."""
    infos = [i for i in list_layers(model, input_shape) if i.output_shape]
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
    return expanded


def resolve_layers(model: nn.Module, layers: list[str]) -> list[str]:
    """Check layer names against the model; unknown names list the valid ones."""
    valid = [n for n, _ in model.named_modules() if n]
    for name in layers:
        if name not in valid:
            raise unknown_name_error("layer", name, valid)
    if not layers:
        raise ValidationError("layers must name at least one layer (got an empty list)")
    return list(layers)

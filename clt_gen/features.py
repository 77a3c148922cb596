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
import hashlib
import json
import os
import pathlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from clt_gen._modes import eval_mode
from clt_gen.errors import ValidationError, unknown_name_error

__all__ = [
    "LayerInfo",
    "list_layers",
    "default_layers",
    "resolve_layers",
    "extract_features",
    "hooked",
    "INPUT_LAYER",
]

INPUT_LAYER = "input"
Reduce = Literal["avgpool", "flatten", "project"]


@dataclass(frozen=True)
class LayerInfo:
    """A named module: its type, output shape (one example) and own parameter count."""

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
    """Top-level blocks (children of the model, and the blocks inside a top-level
    ``Sequential`` of blocks), in forward order; the last one gives the logits.

    Stand-alone normalization, activation and dropout modules are left out (they refine a
    block's output rather than form a block), except as the penultimate or last layer.
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


def _cache_key(parts: dict[str, object]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def extract_features(
    model: nn.Module,
    x: torch.Tensor,
    *,
    layers: list[str],
    reduce: Reduce = "avgpool",
    max_features: int | None = None,
    batch_size: int = 1024,
    device: str | torch.device | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    cache_parts: dict[str, object] | None = None,
    random_state: int = 0,
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """Features of ``layers`` for every row of ``x``, as float32 arrays ``(n_samples, d)``.

    Parameters
    ----------
    model : nn.Module
    x : tensor of shape (n_samples, ...)
        Inputs (on any device; moved batch by batch).
    layers : list of str
        Names from :func:`list_layers`, or ``"input"`` for the inputs themselves.
    reduce : {"avgpool", "flatten", "project"}
        Convolutional maps (and token sequences) are globally average pooled, flattened,
        or flattened and randomly projected (Gaussian, seeded by ``random_state``) to at
        most ``max_features`` dimensions. With ``avgpool``/``flatten`` and
        ``max_features``, wider layers are projected too.
    max_features : int, optional
        Upper bound on the feature dimension (``project`` defaults to 256).
    cache_dir : path, optional
        Stream features to NumPy memmaps under ``cache_dir``; a rerun with the same
        ``cache_parts`` (checkpoint hash, data hash, split) reuses them, and an
        interrupted extraction resumes from the last completed batch.
    cache_parts : dict
        What identifies the features (must include the checkpoint and data hashes).

    Examples
    --------
    >>> import torch
    >>> from clt_gen.models import build_model
    >>> net = build_model("model-c", (1, 8, 8), 3, k=1, w=4)
    >>> feats = extract_features(net, torch.rand(10, 1, 8, 8), layers=["stem", "head"],
    ...                          progress=False)
    >>> feats["stem"].shape, feats["head"].shape
    ((10, 4), (10, 3))
    """
    if reduce not in ("avgpool", "flatten", "project"):
        raise ValidationError(f"reduce must be 'avgpool', 'flatten' or 'project' (got {reduce!r})")
    valid = [INPUT_LAYER] + [n for n, _ in model.named_modules() if n]
    for name in layers:
        if name not in valid:
            raise unknown_name_error("layer", name, valid)
    if max_features is not None and max_features < 1:
        raise ValidationError(f"max_features must be an int >= 1 or None (got {max_features})")
    limit = max_features if max_features is not None else (256 if reduce == "project" else None)
    param = next(model.parameters(), None)
    dev = (
        torch.device(device)
        if device is not None
        else (param.device if param is not None else torch.device("cpu"))
    )
    n = len(x)
    cache: pathlib.Path | None = None
    if cache_dir is not None:
        parts = {
            **(cache_parts or {}),
            "reduce": reduce,
            "max_features": limit,
            "random_state": random_state,
            "n_samples": n,
        }
        cache = pathlib.Path(cache_dir) / _cache_key(parts)
        cache.mkdir(parents=True, exist_ok=True)
        (cache / "key.json").write_text(json.dumps(parts, sort_keys=True, default=str))
        done = [name for name in layers if (cache / f"{_safe(name)}.npy").exists()]
        if len(done) == len(layers):
            return {name: np.load(cache / f"{_safe(name)}.npy", mmap_mode="r") for name in layers}
    arrays: dict[str, np.ndarray] = {}
    projs: dict[str, torch.Tensor | None] = {}
    start = 0
    state_path = cache / "progress.json" if cache is not None else None
    if state_path is not None and state_path.exists():
        start = int(json.loads(state_path.read_text()).get("n_done", 0))
    with hooked(model, layers) as captured:
        bar = tqdm(
            total=n, initial=start, desc="features", unit="ex", disable=not progress, leave=False
        )
        for i in range(start, n, batch_size):
            xb = x[i : i + batch_size].to(dev)
            model(xb)
            outs = {name: (xb if name == INPUT_LAYER else captured[name]) for name in layers}
            for name, out in outs.items():
                if name not in projs:
                    flat = (
                        out.reshape(len(out), -1)
                        if reduce != "avgpool" or out.ndim < 3
                        else (out.mean((2, 3)) if out.ndim == 4 else out.mean(1))
                    )
                    d = flat.shape[1]
                    projs[name] = (
                        _projection(d, limit, random_state, dev)
                        if limit is not None and d > limit
                        else None
                    )
                feats = _reduce(out, reduce, projs[name]).cpu().numpy()
                if name not in arrays:
                    arr = _open(cache, name, (n, feats.shape[1]), resume=start > 0)
                    if arr is None:  # a partial file is missing or stale: start over
                        bar.close()
                        if state_path is not None:
                            state_path.unlink(missing_ok=True)
                        return extract_features(
                            model,
                            x,
                            layers=layers,
                            reduce=reduce,
                            max_features=max_features,
                            batch_size=batch_size,
                            device=device,
                            cache_dir=cache_dir,
                            cache_parts=cache_parts,
                            random_state=random_state,
                            progress=progress,
                        )
                    arrays[name] = arr
                arrays[name][i : i + len(feats)] = feats
            if state_path is not None:
                for arr in arrays.values():
                    if isinstance(arr, np.memmap):
                        arr.flush()
                _write_json(state_path, {"n_done": min(n, i + batch_size)})
            bar.update(len(xb))
        bar.close()
    if cache is not None:
        for name, arr in arrays.items():
            if isinstance(arr, np.memmap):
                arr.flush()
            os.replace(cache / f".{_safe(name)}.partial.npy", cache / f"{_safe(name)}.npy")
        if state_path is not None:
            state_path.unlink(missing_ok=True)
        return {name: np.load(cache / f"{_safe(name)}.npy", mmap_mode="r") for name in layers}
    return arrays


def _safe(name: str) -> str:
    return name.replace("/", "_")


def _write_json(path: pathlib.Path, data: dict[str, object]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def _open(
    cache: pathlib.Path | None, name: str, shape: tuple[int, int], *, resume: bool
) -> np.ndarray | None:
    """A fresh array, or the partial memmap to resume (None when it cannot be resumed)."""
    if cache is None:
        return np.empty(shape, dtype=np.float32)
    path = cache / f".{_safe(name)}.partial.npy"
    if resume:
        if not path.exists():
            return None
        arr = np.load(path, mmap_mode="r+")
        return arr if arr.shape == shape else None
    return np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape)

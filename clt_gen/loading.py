"""Models and data named on the command line: ``--model``, ``--weights``, ``--data``.

Models
    ``torchvision:NAME`` (``torchvision.models.get_model``), ``timm:NAME``
    (``timm.create_model``, needs ``clt_gen[timm]``) or ``PKG.MODULE:FACTORY`` (a function
    returning the ``nn.Module``; importing it runs that module's code, which naming it on
    the command line opts into). Keyword arguments come from ``--model-kwargs`` (JSON). No
    pretrained weights are downloaded: ``--weights FILE`` loads a ``.safetensors`` file or a
    state-dict ``.pt``/``.pth`` with ``torch.load(weights_only=True)``.

Data
    ``imagefolder:DIR`` (``DIR/train`` and ``DIR/test`` or ``DIR/val``), ``torchvision:NAME``
    with ``--data-dir ROOT`` (MNIST, FashionMNIST, CIFAR10, CIFAR100, SVHN in their standard
    on-disk formats, never downloaded), ``npz:FILE`` (arrays ``x_train``, ``y_train``,
    ``x_test``, ``y_test``; or ``x``, ``y`` for the held-out data with ``--train-data`` for
    the training data), or a built-in dataset name. ``--transform`` presets: ``none``,
    ``normalize`` (per-channel statistics of the training data), ``imagenet`` (resize 256,
    centre crop 224, ImageNet statistics).

Examples
--------
>>> net = model_from_spec("torchvision:resnet18", kwargs={"num_classes": 10})
>>> type(net).__name__, net.fc.out_features
('ResNet', 10)
"""

from __future__ import annotations

import importlib
import os
import pathlib
from typing import Any

import numpy as np
import torch
from torch import nn

from clt_gen.data import DATASETS, load_dataset
from clt_gen.errors import CheckpointError, DataError, ValidationError, unknown_name_error

__all__ = [
    "model_from_spec",
    "load_weights",
    "data_from_spec",
    "TRANSFORMS",
    "TORCHVISION_DATASETS",
]

TRANSFORMS = ("none", "normalize", "imagenet")
TORCHVISION_DATASETS = ("MNIST", "FashionMNIST", "CIFAR10", "CIFAR100", "SVHN")
_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


# ---------------------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------------------


def _factory(spec: str) -> Any:
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValidationError(
            f"model {spec!r}: module {module_name!r} does not import ({exc}); the module must "
            "be importable from the current directory or the environment "
            "(e.g. run from the project root, or pip install it)"
        ) from exc
    if not hasattr(module, attr):
        names = [n for n in dir(module) if not n.startswith("_")]
        raise unknown_name_error(f"factory in {module_name}", attr, names)
    return getattr(module, attr)


def model_from_spec(
    spec: str, *, kwargs: dict[str, Any] | None = None, weights: str | None = None
) -> nn.Module:
    """Build the model ``spec`` names (see the module doc) and load ``weights`` into it.

    Parameters
    ----------
    spec : str
        ``torchvision:NAME``, ``timm:NAME`` or ``PKG.MODULE:FACTORY``.
    kwargs : dict, optional
        Passed to the constructor or factory.
    weights : path, optional
        ``.safetensors`` or a state-dict file.

    Returns
    -------
    nn.Module
        In eval mode.

    Examples
    --------
    >>> net = model_from_spec("torchvision:resnet18", kwargs={"num_classes": 3})
    >>> net.fc.out_features, net.training
    (3, False)
    """
    kw = dict(kwargs or {})
    if ":" not in spec:
        raise ValidationError(
            f"model must be 'torchvision:NAME', 'timm:NAME' or 'PKG.MODULE:FACTORY' (got {spec!r})"
        )
    kind, _, name = spec.partition(":")
    if kind == "torchvision":
        import torchvision

        available = torchvision.models.list_models()
        if name not in available:
            raise unknown_name_error("torchvision model", name, available)
        model = torchvision.models.get_model(name, weights=None, **kw)
    elif kind == "timm":
        try:
            import timm
        except ImportError as exc:
            raise ValidationError(
                "model 'timm:...' needs timm: pip install 'clt_gen[timm]'"
            ) from exc
        if not timm.is_model(name):
            raise unknown_name_error("timm model", name, timm.list_models())
        model = timm.create_model(name, pretrained=False, **kw)
    else:
        made = _factory(spec)(**kw)
        if not isinstance(made, nn.Module):
            raise ValidationError(
                f"model factory {spec!r} must return a torch nn.Module (got {type(made).__name__})"
            )
        model = made
    if weights is not None:
        load_weights(model, weights)
    return model.eval()


def load_weights(model: nn.Module, path: str | os.PathLike[str]) -> nn.Module:
    """Load a ``.safetensors`` or state-dict file into ``model`` (never unpickles code).

    A dict holding the state dict under ``state_dict`` or ``model`` is unwrapped; keys
    that do not match are listed in the error.

    Parameters
    ----------
    model : nn.Module
        The architecture the weights belong to (changed in place).
    path : path
        A ``.safetensors`` file, or a ``.pt``/``.pth`` state dict (read with
        ``weights_only=True``).

    Returns
    -------
    nn.Module
        ``model``, with the weights loaded.

    Raises
    ------
    CheckpointError
        Missing, unexpected or mis-shaped keys (listed), or a file that is not a state dict.

    Examples
    --------
    >>> import os, tempfile
    >>> from torch import nn
    >>> from safetensors.torch import save_file
    >>> f = os.path.join(tempfile.mkdtemp(), "w.safetensors")
    >>> save_file({"weight": torch.ones(2, 3), "bias": torch.zeros(2)}, f)
    >>> float(load_weights(nn.Linear(3, 2), f).weight.detach().sum())
    6.0
    """
    p = pathlib.Path(path)
    if not p.is_file():
        raise CheckpointError(f"weights file does not exist: {str(p)!r}")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        state: Any = load_file(str(p))
    else:
        try:
            state = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - pickles with code, truncated files
            raise CheckpointError(
                f"{p} is not a plain state dict readable with weights_only=True ({exc}); save "
                "model.state_dict() or use safetensors"
            ) from exc
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise CheckpointError(f"{p} does not hold a state dict (got {type(state).__name__})")
    missing, unexpected = _key_mismatch(model, state)
    if missing or unexpected:
        raise CheckpointError(
            f"{p} does not fit the model: missing keys {missing[:5]}, unexpected keys "
            f"{unexpected[:5]} ({len(missing)} and {len(unexpected)} in all); check --model "
            "and --model-kwargs"
        )
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"{p} does not fit the model ({exc})") from exc
    return model


def _key_mismatch(model: nn.Module, state: dict[str, Any]) -> tuple[list[str], list[str]]:
    own = set(model.state_dict())
    return sorted(own - set(state)), sorted(set(state) - own)


# ---------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------


def _image_transform(preset: str, mean: Any = None, std: Any = None) -> Any:
    from torchvision import transforms as tvt

    if preset not in TRANSFORMS:
        raise unknown_name_error("transform", preset, TRANSFORMS)
    if preset == "imagenet":
        return tvt.Compose(
            [tvt.Resize(256), tvt.CenterCrop(224), tvt.ToTensor(), tvt.Normalize(*_IMAGENET)]
        )
    if preset == "normalize":
        return tvt.Compose([tvt.ToTensor(), tvt.Normalize(mean, std)])
    return tvt.ToTensor()


def _channel_stats(dataset: Any, n: int = 512) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of up to ``n`` evenly spaced examples (as ToTensor gives)."""
    idx = np.linspace(0, len(dataset) - 1, min(n, len(dataset))).astype(int)
    xs = torch.stack([dataset[int(i)][0] for i in idx])
    dims = [0, *range(2, xs.ndim)]
    return xs.mean(dims).tolist(), xs.std(dims).clamp_min(1e-6).tolist()


def _torchvision_data(name: str, root: str | None, preset: str) -> tuple[Any, Any]:
    import torchvision

    if name not in TORCHVISION_DATASETS:
        raise unknown_name_error("torchvision dataset", name, TORCHVISION_DATASETS)
    if root is None:
        raise ValidationError(
            f"data 'torchvision:{name}' needs --data-dir ROOT (the directory torchvision's "
            f"{name}(root=ROOT) reads; nothing is downloaded)"
        )
    cls = getattr(torchvision.datasets, name)

    def make(train: bool, transform: Any) -> Any:
        split = {"split": "train" if train else "test"} if name == "SVHN" else {"train": train}
        try:
            return cls(root, download=False, transform=transform, **split)
        except RuntimeError as exc:
            raise DataError(
                f"{name} not found under {root!r} ({exc}); put the files there in "
                "torchvision's layout (see docs/your-model.md)"
            ) from exc

    stats: tuple[Any, Any] = (None, None)
    if preset == "normalize":
        stats = _channel_stats(make(True, _image_transform("none")))
    tf = _image_transform(preset, *stats)
    return make(True, tf), make(False, tf)


def _imagefolder(root: str, preset: str, train_root: str | None) -> tuple[Any, Any]:
    from torchvision.datasets import ImageFolder

    base = pathlib.Path(root)
    test_dir = next((base / d for d in ("test", "val") if (base / d).is_dir()), None)
    train_dir = pathlib.Path(train_root) if train_root else base / "train"
    if test_dir is None or not train_dir.is_dir():
        raise DataError(
            f"imagefolder:{root} needs {root}/train and {root}/test (or {root}/val), each with "
            "one folder of images per class"
        )
    stats: tuple[Any, Any] = (None, None)
    if preset == "normalize":
        stats = _channel_stats(ImageFolder(str(train_dir), transform=_image_transform("none")))
    tf = _image_transform(preset, *stats)
    train, test = (
        ImageFolder(str(train_dir), transform=tf),
        ImageFolder(str(test_dir), transform=tf),
    )
    if train.classes != test.classes:
        raise DataError(
            f"imagefolder:{root}: train and test have different classes "
            f"({train.classes[:5]}... vs {test.classes[:5]}...)"
        )
    return train, test


def _npz_arrays(path: str, train_path: str | None) -> tuple[Any, Any]:
    def read(p: str) -> dict[str, np.ndarray]:
        if not pathlib.Path(p).is_file():
            raise DataError(f"npz file does not exist: {p!r}")
        with np.load(p, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}

    arrays = read(path)
    if {"x_train", "y_train", "x_test", "y_test"} <= set(arrays):
        return (arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"])
    if {"x", "y"} <= set(arrays) and train_path is not None:
        tr = read(train_path)
        if not {"x", "y"} <= set(tr):
            raise DataError(f"{train_path} must hold arrays 'x' and 'y' (got {sorted(tr)})")
        return (tr["x"], tr["y"]), (arrays["x"], arrays["y"])
    raise DataError(
        f"{path} must hold x_train, y_train, x_test, y_test, or x and y (the held-out data) "
        f"with --train-data npz:TRAIN.npz (got arrays {sorted(arrays)})"
    )


def _normalize_arrays(train: Any, test: Any) -> tuple[Any, Any]:
    x_tr = torch.as_tensor(np.asarray(train[0], dtype=np.float32))
    dims = [0, *range(2, x_tr.ndim)] if x_tr.ndim > 2 else [0]
    mean, std = x_tr.mean(dims, keepdim=True)[0:1], x_tr.std(dims, keepdim=True)[0:1]
    std = std.clamp_min(1e-6)

    def norm(x: Any) -> torch.Tensor:
        return (torch.as_tensor(np.asarray(x, dtype=np.float32)) - mean) / std

    return (norm(train[0]), train[1]), (norm(test[0]), test[1])


def data_from_spec(
    spec: str,
    *,
    data_dir: str | None = None,
    transform: str = "none",
    train_data: str | None = None,
) -> tuple[Any, Any, str]:
    """Training and held-out data named by ``spec`` (see the module doc).

    Parameters
    ----------
    spec : str
        ``imagefolder:DIR`` (``DIR/train`` and ``DIR/test``), ``torchvision:NAME``,
        ``npz:FILE`` (arrays ``x``, ``y``; held-out only unless ``x_train``/``y_train`` are
        there too) or a built-in dataset name.
    data_dir : path, optional
        Root of the torchvision dataset files (``torchvision:NAME`` and built-in names).
    transform : {"none", "normalize", "imagenet"}
        Preprocessing preset for image data.
    train_data : str, optional
        A second spec for the training data, when ``spec`` holds held-out data only.

    Returns
    -------
    train, test : Dataset or (inputs, labels)
    name : str
        What to call the data in the report.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> f = os.path.join(tempfile.mkdtemp(), "d.npz")
    >>> rng = np.random.default_rng(0)
    >>> np.savez(f, x_train=rng.normal(size=(40, 5)), y_train=np.arange(40) % 2,
    ...          x_test=rng.normal(size=(30, 5)), y_test=np.arange(30) % 2)
    >>> train, test, name = data_from_spec(f"npz:{f}")
    >>> len(train[1]), len(test[1]), name.endswith("d.npz")
    (40, 30, True)
    """
    if transform not in TRANSFORMS:
        raise unknown_name_error("transform", transform, TRANSFORMS)
    kind, _, rest = spec.partition(":")
    if kind == "imagefolder" and rest:
        train_root = train_data.partition(":")[2] if train_data else None
        train, test = _imagefolder(rest, transform, train_root)
    elif kind == "torchvision" and rest:
        train, test = _torchvision_data(rest, data_dir, transform)
    elif kind == "npz" and rest:
        train, test = _npz_arrays(rest, train_data.partition(":")[2] if train_data else None)
        if transform == "normalize":
            train, test = _normalize_arrays(train, test)
        elif transform == "imagenet":
            raise ValidationError(
                "transform 'imagenet' resizes images and applies to imagefolder/torchvision "
                "data; for npz arrays use 'none' or 'normalize'"
            )
    else:
        if spec not in DATASETS:
            raise ValidationError(
                f"data must be 'imagefolder:DIR', 'torchvision:NAME', 'npz:FILE' or a built-in "
                f"dataset {sorted(DATASETS)} (got {spec!r})"
            )
        ds = load_dataset(spec, data_dir=data_dir)
        train, test = (ds.x_train, ds.y_train), (ds.x_test, ds.y_test)
        if transform == "normalize":
            train, test = _normalize_arrays(train, test)
    return train, test, spec

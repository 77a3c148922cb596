"""Datasets, seeded transforms and deterministic splits.

Every dataset loads into memory as float32 tensors of shape ``(n_samples, C, H, W)``
(or ``(n_samples, n_features)`` for ``mixture``) in ``[0, 1]`` with integer labels.
Nothing is ever downloaded: real datasets come from disk, and a missing one raises an
error that says how to get it.

The held-out data are split into ``certify`` and ``check`` parts (the report computes
certificates on one and checks them on the other); a ``val`` part of the training data is
kept for early stopping when asked.

Examples
--------
>>> ds = load_dataset("digits")
>>> ds.input_shape, ds.n_classes
((1, 8, 8), 10)
>>> splits = make_splits(ds, DataConfig(random_state=0))
>>> sorted(splits.sizes())
['certify', 'check', 'train', 'val']
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pathlib
import pickle
import struct
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import torch

from clt_gen.errors import DataError, ValidationError, check_field_types, unknown_name_error

__all__ = [
    "Dataset",
    "DataConfig",
    "Splits",
    "DATASETS",
    "load_dataset",
    "make_splits",
    "tensor_hash",
    "augment_batch",
    "FASHION_MNIST_DIR",
    "renamed_keys",
]


def renamed_keys(d: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``d`` with the keys renamed since older checkpoints and manifests.

    ``seed`` became ``random_state`` (the project's one name for a seed).

    Parameters
    ----------
    d : mapping
        A configuration read from ``meta.json`` or a sweep manifest.

    Returns
    -------
    dict
        A copy, ``seed`` renamed (when ``random_state`` is not also there).

    Examples
    --------
    >>> renamed_keys({"seed": 3, "lr": 0.1})
    {'lr': 0.1, 'random_state': 3}
    """
    out = dict(d)
    if "seed" in out and "random_state" not in out:
        out["random_state"] = out.pop("seed")
    return out


FASHION_MNIST_DIR = pathlib.Path("/usr/share/datasets/fashion-mnist")


@dataclass
class Dataset:
    """In-memory dataset: a training part and a held-out part."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int
    image: bool = True
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Return the shape of one input example (without the batch axis)."""
        return tuple(self.x_train.shape[1:])


# ---------------------------------------------------------------------------
# Loaders
# ---------------------------------------------------------------------------


def _digits(data_dir: str | None = None, **_: Any) -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.tensor(bunch.images / 16.0, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(bunch.target, dtype=torch.int64)
    # digits has no official test set: a fixed seeded 60/40 split
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(1234))
    cut = int(0.6 * len(y))
    tr, te = perm[:cut], perm[cut:]
    return Dataset(
        "digits",
        x[tr],
        y[tr],
        x[te],
        y[te],
        10,
        info={"source": "sklearn.datasets.load_digits", "test_split_seed": 1234},
    )


def _read_idx(path: pathlib.Path) -> np.ndarray:
    opener: Callable[..., Any] = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read IDX file {path}: {exc}") from None
    if len(raw) < 4:
        raise DataError(f"IDX file {path} is truncated ({len(raw)} bytes)")
    zero, dtype_code, ndim = raw[0:2], raw[2], raw[3]
    if zero != b"\x00\x00" or dtype_code != 0x08:
        raise DataError(f"{path} is not an unsigned-byte IDX file (magic {raw[:4]!r})")
    dims = struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DataError(
            f"IDX file {path} is truncated: header says {dims}, found {body.size} values"
        )
    return body.reshape(dims)


def _find_idx(root: pathlib.Path, stem: str) -> pathlib.Path | None:
    for cand in (stem, stem + ".gz"):
        for sub in ("", "raw", "FashionMNIST/raw", "MNIST/raw"):
            p = root / sub / cand
            if p.exists():
                return p
    return None


def _idx_dataset(name: str, root: pathlib.Path, hint: str) -> Dataset:
    files = {}
    for key, stem in (
        ("xtr", "train-images-idx3-ubyte"),
        ("ytr", "train-labels-idx1-ubyte"),
        ("xte", "t10k-images-idx3-ubyte"),
        ("yte", "t10k-labels-idx1-ubyte"),
    ):
        p = _find_idx(root, stem)
        if p is None:
            raise DataError(f"dataset {name!r}: {stem}[.gz] not found under {root}; {hint}")
        files[key] = p
    xtr, ytr = _read_idx(files["xtr"]), _read_idx(files["ytr"])
    xte, yte = _read_idx(files["xte"]), _read_idx(files["yte"])
    if len(xtr) != len(ytr) or len(xte) != len(yte):
        raise DataError(f"dataset {name!r}: image and label counts differ under {root}")

    def imgs(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a.astype(np.float32) / 255.0).unsqueeze(1)

    def labels(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a.astype(np.int64))

    return Dataset(
        name, imgs(xtr), labels(ytr), imgs(xte), labels(yte), 10, info={"source": str(root)}
    )


def _fashion_mnist(data_dir: str | None = None, **_: Any) -> Dataset:
    root = pathlib.Path(data_dir) if data_dir else FASHION_MNIST_DIR
    hint = (
        "install it with `apt-get update && apt-get install -y dataset-fashion-mnist` "
        f"(files go to {FASHION_MNIST_DIR}) or pass --data-dir with the IDX files"
    )
    return _idx_dataset("fashion-mnist", root, hint)


def _require_dir(name: str, data_dir: str | None, layout: str) -> pathlib.Path:
    if not data_dir:
        raise DataError(
            f"dataset {name!r} needs --data-dir (data_dir=...) pointing at torchvision's "
            f"on-disk format ({layout}); clt_gen never downloads data"
        )
    root = pathlib.Path(data_dir)
    if not root.is_dir():
        raise DataError(f"data_dir must be an existing directory (got {str(root)!r})")
    return root


def _mnist(data_dir: str | None = None, **_: Any) -> Dataset:
    root = _require_dir("mnist", data_dir, "ROOT/MNIST/raw/train-images-idx3-ubyte ...")
    return _idx_dataset("mnist", root, "expected torchvision's MNIST/raw IDX files")


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles only plain containers and NumPy arrays: no code can run."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise DataError(
            f"refusing to unpickle {module}.{name}: CIFAR batches hold only arrays and lists"
        )


def _cifar(name: str, data_dir: str | None) -> Dataset:
    folder = "cifar-10-batches-py" if name == "cifar10" else "cifar-100-python"
    root = _require_dir(name, data_dir, f"ROOT/{folder}/...") / folder
    if name == "cifar10":
        train_files = [root / f"data_batch_{i}" for i in range(1, 6)]
        test_files, key, n_classes = [root / "test_batch"], "labels", 10
    else:
        train_files, test_files, key, n_classes = (
            [root / "train"],
            [root / "test"],
            "fine_labels",
            100,
        )

    def load(files: list[pathlib.Path]) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = [], []
        for f in files:
            if not f.exists():
                raise DataError(f"dataset {name!r}: {f} not found (torchvision layout)")
            with open(f, "rb") as fh:
                try:
                    d = _ArrayUnpickler(fh, encoding="latin1").load()
                except (pickle.UnpicklingError, EOFError) as exc:
                    raise DataError(f"{f} is corrupted: {exc}") from None
            xs.append(np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(d[key], dtype=np.int64))
        x = torch.from_numpy(np.concatenate(xs).astype(np.float32) / 255.0)
        return x, torch.from_numpy(np.concatenate(ys))

    xtr, ytr = load(train_files)
    xte, yte = load(test_files)
    return Dataset(name, xtr, ytr, xte, yte, n_classes, info={"source": str(root)})


def _mixture(
    data_dir: str | None = None,
    n_samples: int = 4000,
    n_features: int = 8,
    n_classes: int = 3,
    separation: float = 2.5,
    random_state: int = 0,
    **_: Any,
) -> Dataset:
    """Gaussian mixture (identity covariance) with exact posterior ``info['means']``."""
    gen = np.random.default_rng(random_state)
    means = gen.normal(size=(n_classes, n_features)) * separation / np.sqrt(2.0 * n_features)
    n_total = n_samples * 2
    y = gen.integers(0, n_classes, n_total)
    x = means[y] + gen.normal(size=(n_total, n_features))
    xt = torch.tensor(x, dtype=torch.float32)
    yt = torch.tensor(y, dtype=torch.int64)
    return Dataset(
        "mixture",
        xt[:n_samples],
        yt[:n_samples],
        xt[n_samples:],
        yt[n_samples:],
        n_classes,
        image=False,
        info={"means": means.tolist(), "random_state": random_state, "separation": separation},
    )


DATASETS: dict[str, Callable[..., Dataset]] = {
    "digits": _digits,
    "fashion-mnist": _fashion_mnist,
    "mnist": _mnist,
    "cifar10": lambda data_dir=None, **kw: _cifar("cifar10", data_dir),
    "cifar100": lambda data_dir=None, **kw: _cifar("cifar100", data_dir),
    "mixture": _mixture,
}


def load_dataset(
    name: str, *, data_dir: str | os.PathLike[str] | None = None, **params: Any
) -> Dataset:
    """Load a registered dataset into memory.

    Parameters
    ----------
    name : {"digits", "fashion-mnist", "mnist", "cifar10", "cifar100", "mixture"}
    data_dir : path, optional
        Where the files are (torchvision's on-disk layout; IDX files for Fashion-MNIST).
    **params
        ``mixture`` only: ``n_samples``, ``n_features``, ``n_classes``, ``separation``,
        ``random_state``.

    Returns
    -------
    Dataset
        Inputs and labels in memory, with its train/test parts and provenance ``info``.

    Examples
    --------
    >>> ds = load_dataset("digits")
    >>> ds.n_classes, ds.input_shape
    (10, (1, 8, 8))
    """
    if name not in DATASETS:
        raise unknown_name_error("dataset", name, DATASETS)
    return DATASETS[name](data_dir=str(data_dir) if data_dir else None, **params)


# ---------------------------------------------------------------------------
# Transforms and splits
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DataConfig:
    """Seeded transforms and split sizes; recorded in checkpoints and reports.

    Attributes
    ----------
    subset : int or None
        Keep this many training examples (seeded).
    random_labels : float
        Fraction of training labels replaced by uniform random labels.
    label_noise : float
        Fraction of training labels flipped to a different class (symmetric noise).
    duplicate_fraction : float
        Fraction of training inputs duplicated with a *different* label: conflicting
        duplicates make the data floor positive.
    quantize_levels : int or None
        Quantize inputs to this many grey levels (creates natural duplicates).
    val_fraction : float
        Part of the training data held out for early stopping.
    check_fraction : float
        Part of the held-out data used to *check* certificates (the rest certifies).
    random_state : int
        Seeds the subset, the label corruption and the splits.
    split_random_state : int or None
        Seeds the held-out data's certify/check split on its own (default: drawn from
        ``random_state`` after the training splits, as before). A population of
        checkpoints that each set their own gets independent certify/check draws, so the
        certificates' coverage over the population counts independent trials.

    Examples
    --------
    >>> cfg = DataConfig(subset=500, label_noise=0.1, random_state=1)
    >>> make_splits(load_dataset("digits"), cfg).sizes()["train"]
    450
    >>> DataConfig(label_noise=1.5)
    Traceback (most recent call last):
    ...
    estimators.errors.ValidationError: label_noise must be a fraction in [0, 1] (got 1.5)
    """

    subset: int | None = None
    random_labels: float = 0.0
    label_noise: float = 0.0
    duplicate_fraction: float = 0.0
    quantize_levels: int | None = None
    val_fraction: float = 0.1
    check_fraction: float = 0.5
    random_state: int = 0
    split_random_state: int | None = None

    def __post_init__(self) -> None:
        """Check every field; raise :class:`ValidationError` naming the bad one."""
        check_field_types(self)
        for name in ("random_labels", "label_noise", "duplicate_fraction"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValidationError(f"{name} must be a fraction in [0, 1] (got {v!r})")
        for name in ("val_fraction", "check_fraction"):
            v = getattr(self, name)
            if not 0.0 <= v < 1.0:
                raise ValidationError(f"{name} must be in [0, 1) (got {v!r})")
        if self.subset is not None and self.subset < 2:
            raise ValidationError(f"subset must be an int >= 2 or None (got {self.subset!r})")
        if self.quantize_levels is not None and self.quantize_levels < 2:
            raise ValidationError(
                f"quantize_levels must be an int >= 2 or None (got {self.quantize_levels!r})"
            )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DataConfig:
        """Inverse of :meth:`to_dict`; the key ``seed`` of older files is ``random_state``."""
        d = renamed_keys(d)
        known = {f.name for f in fields(cls)}
        for key in d:
            if key not in known:
                raise unknown_name_error("data key", key, sorted(known))
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        """Return the configuration as plain JSON types."""
        return asdict(self)


@dataclass
class Splits:
    """Named splits (tensors) after transforms; ``indices`` record where each came from."""

    x: dict[str, torch.Tensor]
    y: dict[str, torch.Tensor]
    n_classes: int
    config: DataConfig
    dataset: str
    image: bool = True

    def sizes(self) -> dict[str, int]:
        """Return the number of examples in each split."""
        return {k: len(v) for k, v in self.y.items()}

    def fingerprint(self) -> str:
        """sha256 over every split's inputs and labels (identifies the data exactly)."""
        h = hashlib.sha256()
        for name in sorted(self.x):
            h.update(name.encode())
            h.update(tensor_hash(self.x[name]).encode())
            h.update(tensor_hash(self.y[name]).encode())
        return h.hexdigest()


def tensor_hash(t: torch.Tensor) -> str:
    """sha256 of a tensor's bytes (contiguous, on CPU)."""
    return hashlib.sha256(t.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


def make_splits(ds: Dataset, config: DataConfig | None = None) -> Splits:
    """Apply the seeded transforms of ``config`` and split into train/val/certify/check.

    Parameters
    ----------
    ds : Dataset
        From :func:`load_dataset`.
    config : DataConfig, optional
        Seeded subset, label corruption and split fractions (defaults: ``DataConfig()``).

    Returns
    -------
    Splits
        ``train``, ``val``, ``certify`` and ``check`` tensors and their sizes.

    Examples
    --------
    >>> splits = make_splits(load_dataset("digits"), DataConfig(random_state=0))
    >>> sorted(splits.sizes())
    ['certify', 'check', 'train', 'val']
    """
    cfg = config or DataConfig()
    gen = torch.Generator().manual_seed(cfg.random_state)
    x, y = ds.x_train.clone(), ds.y_train.clone()
    if cfg.subset is not None:
        if cfg.subset > len(y):
            raise ValidationError(
                f"subset must be <= the {len(y)} training examples of {ds.name!r} "
                f"(got {cfg.subset})"
            )
        keep = torch.randperm(len(y), generator=gen)[: cfg.subset]
        x, y = x[keep], y[keep]
    k = ds.n_classes
    if cfg.quantize_levels is not None:
        lv = cfg.quantize_levels - 1
        x = torch.round(x * lv) / lv
    if cfg.duplicate_fraction > 0:
        n_dup = int(round(cfg.duplicate_fraction * len(y)))
        src = torch.randperm(len(y), generator=gen)[:n_dup]
        shift = torch.randint(1, k, (n_dup,), generator=gen)
        x = torch.cat([x, x[src]])
        y = torch.cat([y, (y[src] + shift) % k])
    if cfg.random_labels > 0:
        mask = torch.rand(len(y), generator=gen) < cfg.random_labels
        y = torch.where(mask, torch.randint(0, k, (len(y),), generator=gen), y)
    if cfg.label_noise > 0:
        mask = torch.rand(len(y), generator=gen) < cfg.label_noise
        shift = torch.randint(1, k, (len(y),), generator=gen)
        y = torch.where(mask, (y + shift) % k, y)
    perm = torch.randperm(len(y), generator=gen)
    n_val = int(round(cfg.val_fraction * len(y)))
    val_idx, tr_idx = perm[:n_val], perm[n_val:]
    xt, yt = ds.x_test, ds.y_test
    if cfg.quantize_levels is not None:
        lv = cfg.quantize_levels - 1
        xt = torch.round(xt * lv) / lv
    hgen = gen if cfg.split_random_state is None else torch.Generator().manual_seed(
        cfg.split_random_state
    )
    hperm = torch.randperm(len(yt), generator=hgen)
    n_check = int(round(cfg.check_fraction * len(yt)))
    check_idx, cert_idx = hperm[:n_check], hperm[n_check:]
    if len(tr_idx) < 2 or len(cert_idx) < 2 or len(check_idx) < 2:
        raise DataError(
            f"splits too small for {ds.name!r}: train={len(tr_idx)}, certify={len(cert_idx)}, "
            f"check={len(check_idx)}; use more data or smaller val_fraction/check_fraction"
        )
    return Splits(
        x={"train": x[tr_idx], "val": x[val_idx], "certify": xt[cert_idx], "check": xt[check_idx]},
        y={"train": y[tr_idx], "val": y[val_idx], "certify": yt[cert_idx], "check": yt[check_idx]},
        n_classes=k,
        config=cfg,
        dataset=ds.name,
        image=ds.image,
    )


def augment_batch(x: torch.Tensor, generator: torch.Generator, *, flip: bool) -> torch.Tensor:
    """Random translations by up to 1/8 of the image (zero padding) and optional flips."""
    if x.ndim != 4:
        return x
    n, _, h, w = x.shape
    pad = max(1, h // 8)
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    rows = (torch.arange(h).unsqueeze(0) + dy.unsqueeze(1)).to(x.device)  # (n, h)
    cols = (torch.arange(w).unsqueeze(0) + dx.unsqueeze(1)).to(x.device)  # (n, w)
    idx_n = torch.arange(n, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[idx_n, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    if flip:
        do = (torch.rand(n, generator=generator) < 0.5).to(x.device)
        out = torch.where(do[:, None, None, None], out.flip(-1), out)
    return out.contiguous()

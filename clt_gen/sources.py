"""Data sources for evaluation: a ``Dataset``, a ``DataLoader`` or ``(inputs, labels)``.

Everything downstream reads batches ``(x, y)`` from a :class:`Source`, so no split is ever
held in memory as a whole. A source knows how many rows it yields, whether its order is
fixed (needed to cache and resume), and a fingerprint of its content.

Examples
--------
>>> import torch
>>> src = as_source((torch.zeros(10, 3), torch.arange(10) % 2), name="train", batch_size=4)
>>> src.n_rows, [len(y) for _, y in src.batches()]
(10, [4, 4, 2])
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

from clt_gen.errors import DataError, ValidationError

__all__ = ["Source", "as_source", "split_rows", "unpack_batch", "FINGERPRINT_SAMPLES"]

FINGERPRINT_SAMPLES = 64
_X_KEYS = ("x", "input", "inputs", "image", "images", "pixel_values", "img")
_Y_KEYS = ("y", "label", "labels", "target", "targets")


def unpack_batch(batch: Any, *, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(inputs, labels)`` of one batch: a pair (or longer tuple), or a dict."""
    if isinstance(batch, Mapping):
        x = next((batch[k] for k in _X_KEYS if k in batch), None)
        y = next((batch[k] for k in _Y_KEYS if k in batch), None)
        if x is None or y is None:
            raise DataError(
                f"{where}: a batch dict must hold inputs under one of {_X_KEYS} and labels "
                f"under one of {_Y_KEYS} (got keys {sorted(batch)})"
            )
    elif isinstance(batch, (tuple, list)) and len(batch) >= 2:
        x, y = batch[0], batch[1]
    else:
        raise DataError(
            f"{where}: each batch must be (inputs, labels) or a dict (got {type(batch).__name__}); "
            "wrap unlabeled data as TensorDataset(x, y)"
        )
    x, y = torch.as_tensor(x), torch.as_tensor(y)
    if y.ndim == 2 and y.shape[1] == 1 and not y.dtype.is_floating_point:
        y = y[:, 0]  # a column of class indices
    if y.ndim != 1 or y.dtype.is_floating_point or y.dtype == torch.bool:
        if y.ndim == 2 and y.shape[1] == 1:
            raise DataError(
                f"{where}: labels must be integer class indices (got a column of dtype "
                f"{y.dtype}); pass labels.reshape(-1).long() if they hold whole numbers"
            )
        raise DataError(
            f"{where}: labels must be a 1-d integer tensor of class indices (got dtype "
            f"{y.dtype}, shape {tuple(y.shape)}); one-hot labels: pass labels.argmax(1)"
        )
    if len(x) != len(y):
        raise DataError(f"{where}: {len(x)} inputs but {len(y)} labels in one batch")
    return x, y


@dataclass(frozen=True)
class Source:
    """Batches of one split, with what is known about them.

    Attributes
    ----------
    name : str
        The split (``train``, ``test``, ``certify``, ``check``).
    loader : iterable
        Yields batches (see :func:`unpack_batch`).
    n_rows : int or None
        Rows the loader yields (None when it cannot be known before a pass).
    ordered : bool
        The same rows in the same order on every pass (no shuffling): caches and resumes
        are allowed only then.
    fingerprint : str
        sha256 of the content (tensors: every byte; datasets: the length and
        ``FINGERPRINT_SAMPLES`` evenly spaced examples).
    kind : str
        ``tensors``, ``dataset`` or ``dataloader``.
    """

    name: str
    loader: Any
    n_rows: int | None
    ordered: bool
    fingerprint: str
    kind: str

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Return ``(inputs, labels)`` batch by batch."""
        for batch in self.loader:
            yield unpack_batch(batch, where=f"{self.name} data")

    def describe(self) -> dict[str, Any]:
        """Provenance of this source for the report."""
        return {
            "kind": self.kind,
            "n_rows": self.n_rows,
            "ordered": self.ordered,
            "sha256": self.fingerprint,
        }


def _as_tensor(a: Any, what: str, name: str) -> torch.Tensor:
    if not isinstance(a, torch.Tensor) and np.asarray(a).dtype.kind in "USO":
        raise DataError(
            f"{name}: {what} hold strings or objects (dtype {np.asarray(a).dtype}); encode "
            "labels as class indices, e.g. sklearn.preprocessing.LabelEncoder().fit_transform"
            "(labels), and inputs as numbers"
        )
    try:
        t = torch.as_tensor(np.asarray(a) if not isinstance(a, torch.Tensor) else a)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{name}: {what} must be an array or tensor ({exc})") from exc
    return t.detach().cpu()


def _hash_tensors(*ts: torch.Tensor) -> str:
    h = hashlib.sha256()
    for t in ts:
        h.update(str((tuple(t.shape), str(t.dtype))).encode())
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()


def _hash_dataset(ds: Any) -> str:
    """sha256 of a map-style dataset's length and evenly spaced examples."""
    n = len(ds)
    h = hashlib.sha256(f"{type(ds).__name__}:{n}".encode())
    for i in sorted(set(np.linspace(0, n - 1, min(n, FINGERPRINT_SAMPLES)).astype(int))):
        x, y = unpack_batch(_collate_one(ds[int(i)]), where="dataset")
        h.update(x.contiguous().numpy().tobytes())
        h.update(y.contiguous().numpy().tobytes())
    return h.hexdigest()


def _collate_one(item: Any) -> Any:
    if isinstance(item, Mapping):
        return {k: torch.as_tensor(v)[None] for k, v in item.items()}
    if isinstance(item, (tuple, list)):
        return [torch.as_tensor(v)[None] for v in item]
    return item


def _loader_rows(loader: DataLoader[Any]) -> int | None:
    ds = loader.dataset
    if isinstance(ds, IterableDataset) or not hasattr(ds, "__len__"):
        return None
    if loader.batch_size is not None and loader.drop_last:
        return len(loader) * loader.batch_size
    return len(ds)


def _from_loader(loader: DataLoader[Any], name: str, heldout: bool) -> Source:
    sampler = type(loader.sampler).__name__
    shuffled = "Random" in sampler
    if heldout and (shuffled or loader.drop_last):
        warnings.warn(
            f"{name}: the held-out DataLoader {'shuffles' if shuffled else 'drops its last batch'}"
            "; certificates need a fixed split. Pass shuffle=False, drop_last=False (or the "
            "Dataset itself).",
            UserWarning,
            stacklevel=3,
        )
    ds = loader.dataset
    fp = _hash_dataset(ds) if not isinstance(ds, IterableDataset) and hasattr(ds, "__len__") else ""
    return Source(name, loader, _loader_rows(loader), not shuffled and bool(fp), fp, "dataloader")


def as_source(
    data: Any, *, name: str, batch_size: int = 1024, heldout: bool = False, num_workers: int = 0
) -> Source:
    """Wrap ``data`` (``Dataset``, ``DataLoader`` or ``(inputs, labels)``) as a :class:`Source`.

    Parameters
    ----------
    data : Dataset, DataLoader or (inputs, labels)
        ``inputs`` and ``labels`` may be tensors or arrays. Datasets yield ``(x, y)`` pairs
        (or dicts with common keys such as ``image``/``label``).
    name : str
        The split, used in messages.
    batch_size : int
        Batch size of the loader built for tensors and datasets.
    heldout : bool
        Warn when a DataLoader shuffles or drops rows (the split must be fixed).

    Returns
    -------
    Source

    Examples
    --------
    >>> import torch
    >>> src = as_source((torch.zeros(10, 3), torch.zeros(10).long()), name="train")
    >>> src.n_rows, src.ordered
    (10, True)
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValidationError(f"batch_size must be an int >= 1 (got {batch_size!r})")
    if isinstance(data, DataLoader):
        src = _from_loader(data, name, heldout)
    elif isinstance(data, (tuple, list)) and len(data) == 2 and not isinstance(data, Dataset):
        x, y = _as_tensor(data[0], "inputs", name), _as_tensor(data[1], "labels", name)
        unpack_batch((x[:1], y[:1]) if len(x) else (x, y), where=f"{name} data")
        if len(x) != len(y):
            raise DataError(f"{name}: {len(x)} inputs but {len(y)} labels; give one label each")
        loader = DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=False)
        src = Source(name, loader, len(y), True, _hash_tensors(x, y), "tensors")
    elif isinstance(data, Dataset):
        if isinstance(data, IterableDataset) or not hasattr(data, "__len__"):
            loader = DataLoader(data, batch_size=batch_size, num_workers=num_workers)
            src = Source(name, loader, None, False, "", "dataset")
        else:
            loader = DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=num_workers)
            src = Source(name, loader, len(data), True, _hash_dataset(data), "dataset")
    else:
        raise ValidationError(
            f"{name} must be a torch Dataset, a DataLoader or a pair (inputs, labels) "
            f"(got {type(data).__name__}); e.g. "
            "evaluate(model, (x_train, y_train), (x_test, y_test))"
        )
    if src.n_rows == 0:
        raise DataError(f"{name} data is empty: it must hold at least one example")
    return src


def split_rows(
    n: int, y: np.ndarray, *, check_fraction: float, random_state: int
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of ``n`` held-out rows into ``certify`` and ``check`` index arrays.

    Stratified by label, so both parts keep the class proportions. Returns sorted indices.

    Examples
    --------
    >>> import numpy as np
    >>> cert, check = split_rows(10, np.arange(10) % 2, check_fraction=0.5, random_state=0)
    >>> len(cert), len(check), sorted(np.r_[cert, check].tolist()) == list(range(10))
    (5, 5, True)
    """
    if not 0.0 < check_fraction < 1.0:
        raise ValidationError(f"check_fraction must be in (0, 1) (got {check_fraction!r}); 0.5")
    gen = np.random.default_rng(random_state)
    y = np.asarray(y)
    # each row's quantile within its class, in a random order: the smallest keys form the
    # check part, so every class gives its share and the total is exact
    key = np.empty(n)
    for c in np.unique(y):
        rows = np.flatnonzero(y == c)
        key[rows] = (gen.permutation(len(rows)) + 0.5) / len(rows)
    key += gen.uniform(0, 1e-9, n)  # ties between classes broken at random
    check_idx = np.sort(np.argsort(key, kind="stable")[: int(round(check_fraction * n))])
    mask = np.ones(n, dtype=bool)
    mask[check_idx] = False
    return np.flatnonzero(mask), check_idx

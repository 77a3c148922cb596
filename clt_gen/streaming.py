"""One streaming pass of a model over a data source: scores, labels and layer features.

A pass reads the source batch by batch and keeps only per-row results: the class scores
(``n × K``), the labels, optionally a 128-bit digest of each input (enough to group
identical inputs for the data floor) and the reduced features of the requested layers
for the rows asked for. Nothing holds a whole split of inputs. With a cache directory
the per-row results are appended to files as they come, so memory stays flat whatever
the dataset size, a finished pass is reused by a rerun with the same model, data and
options, and an interrupted pass resumes after its last completed batch.

Layers are module names (``named_modules``; read with forward hooks) or, for activations
that are not module outputs, torchvision FX graph node names
(:func:`torchvision.models.feature_extraction.get_graph_node_names`).

Examples
--------
>>> import torch
>>> from clt_gen.sources import as_source
>>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
>>> src = as_source((torch.randn(20, 4), torch.arange(20) % 3), name="test", batch_size=8)
>>> res = stream_pass(net, src, layers=["input", "1"], progress=False)
>>> res.scores.shape, res.features["1"].shape, res.labels[:4].tolist()
((20, 3), (20, 8), [0, 1, 2, 0])
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import pathlib
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from clt_gen._io import atomic_write_bytes, atomic_write_text
from clt_gen.errors import DataError, ValidationError, unknown_name_error
from clt_gen.features import INPUT_LAYER, _projection, _reduce, hooked
from clt_gen.sources import Source, as_source

__all__ = [
    "extract_features",
    "PassResult",
    "stream_pass",
    "select_scores",
    "graph_nodes",
    "layer_kinds",
    "forward_checked",
]

Output = None | str | int | Callable[[Any], torch.Tensor]


def select_scores(out: Any, output: Output = None) -> torch.Tensor:
    """Return the ``(batch, K)`` class scores in a model's output.

    Parameters
    ----------
    out : tensor, tuple, dict or dataclass
        What the model returned.
    output : None, str, int or callable
        ``None``: ``out`` itself; a key (dict) or attribute name (dataclass, named
        tuple); an index (tuple); or a function of ``out``.
    """
    try:
        if callable(output):
            s = output(out)
        elif output is None:
            s = out
        elif isinstance(output, int) and not isinstance(output, bool):
            s = out[output]
        elif isinstance(output, str):
            s = out[output] if isinstance(out, Mapping) else getattr(out, output)
        else:
            raise ValidationError(
                f"output must be None, a key, an index or a callable (got {output!r})"
            )
    except (KeyError, IndexError, AttributeError, TypeError) as exc:
        raise ValidationError(
            f"output={output!r} does not select anything in the model's output of type "
            f"{type(out).__name__} ({exc}); pass a key, an index or a callable"
        ) from exc
    if not isinstance(s, torch.Tensor) or s.ndim != 2:
        what = f"shape {tuple(s.shape)}" if isinstance(s, torch.Tensor) else type(s).__name__
        raise ValidationError(
            f"the model's scores must be a (batch, K) tensor (got {what}); when the model "
            "returns a tuple, dict or dataclass, pass output= (a key, an index or a callable)"
        )
    return s


def graph_nodes(model: nn.Module) -> list[str]:
    """Torchvision FX graph node names of ``model`` in eval mode (empty if it cannot trace)."""
    from torchvision.models.feature_extraction import get_graph_node_names

    try:
        return list(get_graph_node_names(model)[1])
    except Exception:  # noqa: BLE001 - untraceable models simply have no graph nodes
        return []


def layer_kinds(model: nn.Module, layers: list[str]) -> str:
    """``"modules"`` when every layer is a module (or ``input``), else ``"graph"``.

    Raises a :class:`ValidationError` with close matches for names that are neither.
    """
    if not layers:
        raise ValidationError("layers must name at least one layer (got an empty list)")
    modules = {n for n, _ in model.named_modules() if n} | {INPUT_LAYER}
    if all(name in modules for name in layers):
        return "modules"
    nodes = graph_nodes(model)
    for name in layers:
        if name not in modules and name not in nodes:
            raise unknown_name_error("layer", name, sorted(modules) + nodes)
    mixed = [n for n in layers if n != INPUT_LAYER and n not in nodes]
    if mixed:
        raise ValidationError(
            f"layers mix module names {mixed} with graph node names; name every layer by its "
            "graph node (clt_gen.list_layers(model, x, graph=True) lists them)"
        )
    return "graph"


@contextlib.contextmanager
def _tap(
    model: nn.Module, layers: list[str], kind: str
) -> Iterator[Callable[[torch.Tensor], tuple[Any, dict[str, torch.Tensor]]]]:
    """Return a function ``x -> (model output, {layer: activation})`` valid inside the block."""
    named = [n for n in layers if n != INPUT_LAYER]
    if kind == "modules":
        with hooked(model, named) as captured:

            def run(x: torch.Tensor) -> tuple[Any, dict[str, torch.Tensor]]:
                captured.clear()
                return model(x), dict(captured)

            yield run
        return
    from torchvision.models.feature_extraction import create_feature_extractor

    final = graph_nodes(model)[-1]
    nodes = {n: n for n in named}
    key = final if final in nodes else "__output__"
    nodes.setdefault(final, key)
    extractor = create_feature_extractor(model, return_nodes=nodes)
    with hooked(extractor, []):

        def run_graph(x: torch.Tensor) -> tuple[Any, dict[str, torch.Tensor]]:
            out = dict(extractor(x))
            return (out.pop(key) if key == "__output__" else out[key]), out

        yield run_graph


@dataclass
class PassResult:
    """Per-row results of one pass.

    Attributes
    ----------
    scores : array (n_rows, K), float64
    labels : array (n_rows,), int64
    features : dict of arrays (n_kept, d), float32
        For the kept rows, in row order.
    kept : array of int
        Row indices the features belong to.
    digests : array (n_rows, 16) of uint8, or None
        blake2b-128 of each input's bytes (identical inputs, identical digests).
    probe : (inputs, labels) or None
        The first ``probe_rows`` rows themselves (for trainability diagnostics).
    from_cache : bool
    """

    scores: np.ndarray
    labels: np.ndarray
    features: dict[str, np.ndarray]
    kept: np.ndarray
    digests: np.ndarray | None = None
    probe: tuple[torch.Tensor, torch.Tensor] | None = None
    from_cache: bool = False
    n_rows: int = field(init=False)

    def __post_init__(self) -> None:
        """Check the fields; raise :class:`ValidationError` naming the bad one."""
        self.n_rows = len(self.labels)

    def take(self, rows: np.ndarray) -> PassResult:
        """Return the rows ``rows`` (which must all be kept), e.g. one part of a held-out split."""
        pos = np.searchsorted(self.kept, rows)
        if len(rows) and (pos.max() >= len(self.kept) or np.any(self.kept[pos] != rows)):
            raise ValueError("take() needs rows whose features were kept")
        return PassResult(
            self.scores[rows],
            self.labels[rows],
            {k: np.asarray(v[pos]) for k, v in self.features.items()},
            np.arange(len(rows)),
            None if self.digests is None else self.digests[rows],
        )


class _Sink:
    """Append-only per-row arrays, in memory or as raw files in a cache directory."""

    def __init__(self, root: pathlib.Path | None) -> None:
        self.root, self.chunks, self.meta = root, {}, {}  # type: ignore[var-annotated]
        self.files: dict[str, Any] = {}

    def add(self, name: str, arr: np.ndarray) -> None:
        arr = np.ascontiguousarray(arr)
        self.meta.setdefault(name, (str(arr.dtype), list(arr.shape[1:])))
        if self.root is None:
            self.chunks.setdefault(name, []).append(arr)
            return
        if name not in self.files:
            self.files[name] = open(self.root / f"{_safe(name)}.bin", "ab")  # noqa: SIM115
        self.files[name].write(arr.tobytes())

    def commit(self, state: dict[str, Any]) -> None:
        """Flush the files and record how far the pass got (resumable from here)."""
        if self.root is None:
            return
        for fh in self.files.values():
            fh.flush()
            os.fsync(fh.fileno())
        state["arrays"] = {k: {"dtype": d, "row": s} for k, (d, s) in self.meta.items()}
        atomic_write_text(self.root / "progress.json", json.dumps(state))

    def close(self) -> None:
        for fh in self.files.values():
            fh.close()
        self.files = {}

    def arrays(self) -> dict[str, np.ndarray]:
        if self.root is None:
            return {k: np.concatenate(v) for k, v in self.chunks.items()}
        return _load_arrays(self.root, json.loads((self.root / "progress.json").read_text()))


def _safe(name: str) -> str:
    return hashlib.sha1(name.encode()).hexdigest()[:10] + "_" + name.replace("/", "_")[:40]


def _load_arrays(root: pathlib.Path, state: dict[str, Any]) -> dict[str, np.ndarray]:
    out = {}
    for name, spec in state.get("arrays", {}).items():
        path = root / f"{_safe(name)}.bin"
        dtype, row = np.dtype(spec["dtype"]), tuple(spec["row"])
        n = path.stat().st_size // (dtype.itemsize * int(np.prod(row, dtype=np.int64)))
        out[name] = (
            np.memmap(path, dtype=dtype, mode="r", shape=(n, *row))
            if n
            else np.zeros((0, *row), dtype)
        )
    return out


def _truncate(root: pathlib.Path, state: dict[str, Any]) -> None:
    """Cut every file back to the rows recorded in ``state`` (drops a half-written batch).

    Files the last commit does not list (written before it, or never committed) are
    emptied: their rows would otherwise sit in front of the rows a resumed pass appends.
    """
    sizes = _committed_sizes(state)
    for path in root.glob("*.bin"):
        with open(path, "r+b") as fh:
            fh.truncate(sizes.get(path.name, 0))


def _committed_sizes(state: dict[str, Any]) -> dict[str, int]:
    """Bytes each array file holds at the commit ``state`` records."""
    sizes = {}
    for name, spec in state.get("arrays", {}).items():
        row_bytes = np.dtype(spec["dtype"]).itemsize * int(np.prod(spec["row"], dtype=np.int64))
        rows = state["kept"] if name.startswith("f:") or name == "kept" else state["rows"]
        sizes[f"{_safe(name)}.bin"] = int(rows) * row_bytes
    return sizes


def _checksums(root: pathlib.Path, state: dict[str, Any]) -> dict[str, str]:
    """sha256 of every array file of a pass (and of the probe rows, when saved)."""
    from clt_gen._io import file_sha256

    names = [*_committed_sizes(state), *(["probe.pt"] if (root / "probe.pt").exists() else [])]
    return {name: file_sha256(root / name) for name in names if (root / name).exists()}


def _intact(root: pathlib.Path, state: dict[str, Any]) -> bool:
    """Whether every file of a finished pass holds exactly the bytes it recorded.

    Sizes first (cheap), then the sha256 recorded when the pass finished: a file
    overwritten in place at the same size (zeros from a disk fault, an edit) is caught.
    """
    sizes_ok = all(
        (root / name).exists() and (root / name).stat().st_size == size
        for name, size in _committed_sizes(state).items()
    )
    if not sizes_ok:
        return False
    recorded = state.get("checksums")
    if not recorded:
        return True  # passes finished before checksums were recorded: sizes only
    return recorded == _checksums(root, state)


def _digests(x: torch.Tensor) -> np.ndarray:
    flat = x.detach().cpu().contiguous().numpy().reshape(len(x), -1)
    return np.frombuffer(
        b"".join(hashlib.blake2b(r.tobytes(), digest_size=16).digest() for r in flat),
        dtype=np.uint8,
    ).reshape(len(x), 16)


@dataclass
class _Reducer:
    """Per-layer reduction to at most ``limit`` features (the projection drawn on first use)."""

    reduce: str
    limit: int | None
    random_state: int
    device: torch.device
    projs: dict[str, torch.Tensor | None] = field(default_factory=dict)

    def __call__(self, name: str, out: torch.Tensor) -> np.ndarray:
        if name not in self.projs:
            d = _reduce(out[:1], self.reduce, None).shape[1]
            big = self.limit is not None and d > self.limit
            self.projs[name] = (
                _projection(d, self.limit, self.random_state, self.device)  # type: ignore[arg-type]
                if big
                else None
            )
        return _reduce(out, self.reduce, self.projs[name]).cpu().numpy()


def _cache_root(cache_dir: Any, parts: dict[str, Any], source: Source) -> pathlib.Path | None:
    if cache_dir is None or not source.ordered:
        return None
    key = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()
    root = pathlib.Path(cache_dir) / f"pass-{key[:32]}"
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(root / "key.json", json.dumps(parts, sort_keys=True, default=str))
    return root


def _resume_state(root: pathlib.Path | None) -> dict[str, Any]:
    state: dict[str, Any] = {"rows": 0, "kept": 0, "complete": False}
    if root is None:
        return state
    if (root / "progress.json").exists():
        state = json.loads((root / "progress.json").read_text())
    if state.get("complete") and not _intact(root, state):
        warnings.warn(
            f"feature cache {root}: a file is missing, or its size or checksum differs from "
            "what the finished pass recorded (edited, or a disk problem); recomputing this "
            "pass",
            stacklevel=3,
        )
        state = {"rows": 0, "kept": 0, "complete": False}
    if not state.get("complete"):
        _truncate(root, state)
    return state


def _finish(sink: _Sink, state: dict[str, Any], layers: list[str], probe: Any) -> PassResult:
    arrays = sink.arrays()
    if "labels" not in arrays:
        raise DataError("the data yielded no batches; it must hold at least one example")
    if sink.root is not None and (sink.root / "probe.pt").exists() and probe is None:
        saved = torch.load(sink.root / "probe.pt", weights_only=True)
        probe = (saved["x"], saved["y"])
    return PassResult(
        scores=np.asarray(arrays.get("scores", np.zeros((0, 0))), dtype=np.float64),
        labels=np.array(arrays["labels"], dtype=np.int64),
        features={n: arrays[f"f:{n}"] for n in layers if f"f:{n}" in arrays},
        kept=np.asarray(arrays.get("kept", np.zeros(0, np.int64)), dtype=np.int64),
        digests=np.asarray(arrays["digests"]) if "digests" in arrays else None,
        probe=probe,
        from_cache=bool(state.get("from_cache")),
    )


def _pass_device(model: nn.Module, device: torch.device | str | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _reducer(
    model: nn.Module,
    reduce: str,
    max_features: int | None,
    random_state: int,
    device: torch.device | str | None,
) -> _Reducer:
    if reduce not in ("avgpool", "flatten", "project"):
        raise ValidationError(f"reduce must be 'avgpool', 'flatten' or 'project' (got {reduce!r})")
    limit = max_features if max_features is not None else (256 if reduce == "project" else None)
    return _Reducer(reduce, limit, random_state, _pass_device(model, device))


def stream_pass(
    model: nn.Module,
    source: Source,
    *,
    layers: list[str],
    output: Output = None,
    reduce: str = "project",
    max_features: int | None = 128,
    keep: np.ndarray | None = None,
    digests: bool = False,
    probe_rows: int = 0,
    device: torch.device | str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    cache_parts: dict[str, Any] | None = None,
    random_state: int = 0,
    progress: bool = True,
    scores: bool = True,
    commit_every: float = 5.0,
) -> PassResult:
    """Run ``model`` over ``source`` once and keep per-row results (see the module doc).

    Parameters
    ----------
    model : nn.Module
    source : Source
        From :func:`clt_gen.sources.as_source`.
    layers : list of str
        Module names, graph node names, or ``"input"``.
    output : None, str, int or callable
        Selects the scores in the model's output (:func:`select_scores`).
    reduce, max_features, random_state
        Feature reduction (as :func:`extract_features`).
    keep : sorted array of int, optional
        Rows whose features are kept (all by default); scores and labels are kept for all.
    digests, probe_rows
        Also keep a digest of each input (for the data floor); keep the first rows.
    cache_dir : path, optional
        Append results to files there (flat memory, reuse, resume); used only for sources
        with a fixed order. ``cache_parts`` must identify the model.
    scores, commit_every
        Read class scores from the output (False: features only, any output); seconds
        between the commits an interrupted pass resumes from (0: every batch).

    Returns
    -------
    PassResult

    Examples
    --------
    >>> from clt_gen.sources import as_source
    >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    >>> src = as_source((torch.randn(50, 4), torch.arange(50) % 3), name="train")
    >>> res = stream_pass(net, src, layers=["1"], progress=False)
    >>> res.scores.shape, res.features["1"].shape
    ((50, 3), (50, 8))
    """
    spec = _Spec(
        layers=list(layers),
        kind=layer_kinds(model, list(layers)),
        output=output,
        keep=None if keep is None else np.asarray(keep, dtype=np.int64),
        digests=digests,
        probe_rows=probe_rows,
        scores=scores,
        reducer=_reducer(model, reduce, max_features, random_state, device),
        device=_pass_device(model, device),
        progress=progress,
        commit_every=commit_every,
    )
    parts = None if cache_parts is None else spec.cache_key(cache_parts, source)
    root = None if parts is None else _cache_root(cache_dir, parts, source)
    with _exclusive(root):  # a second process on the same cache waits, then reads it
        state = _resume_state(root)
        sink = _Sink(root)
        if state["complete"]:
            return _finish(sink, {**state, "from_cache": True}, spec.layers, None)
        probe = _run_and_complete(model, source, sink, state, spec)
        return _finish(sink, state, spec.layers, probe)


def _run_and_complete(
    model: nn.Module, source: Source, sink: _Sink, state: dict[str, Any], spec: _Spec
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Run the pass and commit it; a full disk becomes a named error and no debris."""
    try:
        probe = _run_batches(model, source, sink, state, spec)
        _complete(sink, state, probe)
    except OSError as exc:
        sink.close()
        raise _disk_error(exc, sink.root, sink, source) from None
    return probe


def _disk_error(
    exc: OSError, root: pathlib.Path | None, sink: _Sink, source: Source
) -> Exception:
    """Remove a half-written cache entry; name the path and the space the pass needs."""
    import errno
    import shutil

    if root is None or exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return exc
    row_bytes = sum(
        np.dtype(d).itemsize * int(np.prod(r, dtype=np.int64)) for d, r in sink.meta.values()
    )
    need = row_bytes * (source.n_rows or 0)
    shutil.rmtree(root, ignore_errors=True)
    size = f"about {need / 2**20:.1f} MiB" if need else "more space"
    return DataError(
        f"no space left for the feature cache at {root.parent} ({exc.strerror}): this pass "
        f"needs {size} ({source.n_rows} rows x {row_bytes} bytes). The half-written entry "
        "was removed, so a rerun starts clean: free space, or point --cache-dir "
        "(cache_dir=) at a disk with room"
    )


@contextlib.contextmanager
def _exclusive(root: pathlib.Path | None) -> Iterator[None]:
    """Hold an exclusive lock on the cache directory ``root`` (POSIX ``flock``).

    Two passes appending to the same files would interleave their rows; with the lock the
    later one waits and then finds the pass complete. Without ``fcntl`` (Windows) or a
    cache, nothing is locked.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        fcntl = None  # type: ignore[assignment]
    if root is None or fcntl is None:
        yield
        return
    with open(root / ".lock", "a+b") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        except OSError:  # file systems without locks (some NFS mounts): run unlocked
            yield
            return
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _complete(sink: _Sink, state: dict[str, Any], probe: Any) -> None:
    """Save the probe rows, then commit the pass as complete (a kill between is safe)."""
    if sink.root is not None and probe is not None:
        buf = io.BytesIO()
        torch.save({"x": probe[0], "y": probe[1]}, buf)
        atomic_write_bytes(sink.root / "probe.pt", buf.getvalue())
    state["complete"] = True
    sink.commit(state)
    sink.close()
    if sink.root is not None:
        # checksums of the finished files: a rerun verifies them before reusing the pass
        state["checksums"] = _checksums(sink.root, state)
        atomic_write_text(sink.root / "progress.json", json.dumps(state))


@dataclass
class _Spec:
    """What one pass reads and keeps."""

    layers: list[str]
    kind: str
    output: Output
    keep: np.ndarray | None
    digests: bool
    probe_rows: int
    scores: bool
    reducer: _Reducer
    device: torch.device
    progress: bool
    commit_every: float

    def cache_key(self, parts: dict[str, Any] | None, source: Source) -> dict[str, Any]:
        """Everything the cached results depend on."""
        out = self.output
        return {
            **(parts or {}),
            "data": source.fingerprint,
            "layers": self.layers,
            "output": out if not callable(out) else getattr(out, "__qualname__", "fn"),
            "reduce": self.reducer.reduce,
            "limit": self.reducer.limit,
            "keep": None if self.keep is None else hashlib.sha256(self.keep.tobytes()).hexdigest(),
            "digests": self.digests,
            "probe_rows": self.probe_rows,
            "scores": self.scores,
            "random_state": self.reducer.random_state,
        }


def _expected_input(model: nn.Module) -> str:
    """Return what the first layer with weights takes, in words (for error messages)."""
    for m in model.modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            return f"{m.in_channels} input channels ({type(m).__name__})"
        if isinstance(m, nn.Linear):
            return f"{m.in_features} input features (Linear)"
    return "see the model's first layer"


def _forward(
    run: Any, x: torch.Tensor, *, first: bool, model: nn.Module
) -> tuple[Any, dict[str, torch.Tensor]]:
    if not first:
        return run(x)
    try:
        return run(x)
    except (RuntimeError, ValueError, TypeError) as exc:
        param = next(iter(model.parameters()), None)
        if param is not None and not x.is_floating_point() and param.is_floating_point():
            raise DataError(
                f"the model rejected inputs of dtype {x.dtype} (its weights are {param.dtype}): "
                f"convert them first, e.g. images as x.float() / 255 (shape "
                f"{tuple(x.shape[1:])} per example). ({exc})"
            ) from exc
        raise DataError(
            f"the model rejected a batch of inputs of shape {tuple(x.shape)} (one example: "
            f"{tuple(x.shape[1:])}); it expects {_expected_input(model)}. Resize or "
            f"transform the data (CLI: --transform), or check the model. ({exc})"
        ) from exc


def forward_checked(model: nn.Module, x: torch.Tensor) -> tuple[Any, dict[str, torch.Tensor]]:
    """Return ``model(x)``; a rejected input shape becomes a :class:`DataError`.

    The error shows the shape seen and what the first layer expects.
    """
    return _forward(lambda t: (model(t), {}), x, first=True, model=model)


def _check_labels(y: torch.Tensor, k: int, name: str) -> None:
    if k == 1:
        raise DataError(
            "the model has a single output, but clt_gen reads class scores, one per class: "
            "for a binary model with one logit s, evaluate a wrapper returning "
            "torch.cat([-s / 2, s / 2], dim=1) (the same probabilities, as two logits)"
        )
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= k):
        raise DataError(
            f"{name} labels must be class indices in 0..{k - 1} for a model with {k} outputs "
            f"(got labels from {int(y.min())} to {int(y.max())}); check the dataset, or that "
            "the model is the one trained on it"
        )


def _kept_rows(keep: np.ndarray | None, lo: int, hi: int) -> np.ndarray:
    if keep is None:
        return np.arange(hi - lo)
    return keep[(keep >= lo) & (keep < hi)] - lo


def _write_batch(
    sink: _Sink,
    batch: tuple[torch.Tensor, torch.Tensor],
    scores: torch.Tensor | None,
    acts: dict[str, torch.Tensor],
    lo: int,
    spec: _Spec,
) -> int:
    """Append one batch's per-row results; returns how many rows' features were kept."""
    x, y = batch
    sel = _kept_rows(spec.keep, lo, lo + len(y))
    if scores is not None:
        sink.add("scores", scores.detach().float().cpu().numpy())
    sink.add("labels", y.cpu().numpy().astype(np.int64))
    if spec.digests:
        sink.add("digests", _digests(x))
    if not len(sel):
        return 0
    sink.add("kept", (sel + lo).astype(np.int64))
    idx = torch.from_numpy(sel).to(spec.device) if len(sel) < len(y) else None
    for name in spec.layers:
        a: Any = x.to(spec.device) if name == INPUT_LAYER else acts[name]
        if isinstance(a, (tuple, list)):
            a = a[0]
        sink.add(f"f:{name}", spec.reducer(name, a if idx is None else a.index_select(0, idx)))
    return len(sel)


def _batch_scores(out: Any, y: torch.Tensor, spec: _Spec, name: str) -> torch.Tensor | None:
    if not spec.scores:
        return None
    scores = select_scores(out, spec.output)
    _check_labels(y, scores.shape[1], name)
    return scores


def _check_finite_inputs(x: torch.Tensor, lo: int, split: str) -> None:
    """Name a NaN or inf input before it reaches a model or a fit."""
    if not x.is_floating_point():
        return
    bad = ~torch.isfinite(x.reshape(len(x), -1)).all(dim=1)
    if bool(bad.any()):
        rows = (torch.nonzero(bad).flatten() + lo).tolist()
        raise DataError(
            f"{split} inputs hold NaN or inf values in {len(rows)} rows of this batch (first: "
            f"row {rows[0]}); drop or impute those rows before evaluating"
        )


def _run_batches(
    model: nn.Module, source: Source, sink: _Sink, state: dict[str, Any], spec: _Spec
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Run the loop: forward each batch not done before and append its results to ``sink``."""
    start, rows, last_commit = int(state["rows"]), 0, time.monotonic()
    probe: list[tuple[torch.Tensor, torch.Tensor]] = []
    bar = tqdm(
        total=source.n_rows,
        initial=start,
        desc=f"{source.name} pass",
        unit="ex",
        disable=not spec.progress,
        leave=False,
    )
    with _tap(model, spec.layers, spec.kind) as run:
        for x, y in source.batches():
            lo, rows = rows, rows + len(y)
            if lo < spec.probe_rows:
                probe.append((x[: spec.probe_rows - lo].cpu(), y[: spec.probe_rows - lo].cpu()))
            if rows <= start:
                continue  # done before an interruption
            _check_finite_inputs(x, lo, source.name)
            xd = x.to(spec.device, non_blocking=True)
            out, acts = _forward(run, xd, first=lo == start, model=model)
            scores = _batch_scores(out, y, spec, source.name)
            kept = _write_batch(sink, (x, y), scores, acts, lo, spec)
            state["rows"], state["kept"] = rows, int(state["kept"]) + kept
            if time.monotonic() - last_commit >= spec.commit_every:
                sink.commit(state)
                last_commit = time.monotonic()
            bar.update(len(y))
    bar.close()
    if not probe:
        return None
    return torch.cat([p[0] for p in probe]), torch.cat([p[1] for p in probe])


def extract_features(
    model: nn.Module,
    x: torch.Tensor,
    *,
    layers: list[str],
    reduce: str = "avgpool",
    max_features: int | None = None,
    batch_size: int = 1024,
    device: str | torch.device | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    cache_parts: dict[str, object] | None = None,
    random_state: int = 0,
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """Features of ``layers`` for every row of ``x``, as float32 arrays ``(n_samples, d)``.

    A one-pass :func:`stream_pass` over the tensor ``x`` that keeps features only (the
    model's output may be anything).

    Parameters
    ----------
    model : nn.Module
    x : tensor of shape (n_samples, ...)
        Inputs (on any device; moved batch by batch).
    layers : list of str
        Module or graph node names, or ``"input"`` for the inputs themselves.
    reduce : {"avgpool", "flatten", "project"}
        Convolutional maps (and token sequences) are globally average pooled, flattened,
        or flattened and randomly projected (Gaussian, seeded by ``random_state``) to at
        most ``max_features`` dimensions (``project`` defaults to 256). With
        ``avgpool``/``flatten`` and ``max_features``, wider layers are projected too.
    batch_size : int
    device : str or torch.device, optional
    cache_dir : path, optional
        Write features there as they come; a rerun with the same ``cache_parts``
        (checkpoint hash, data hash, split) reuses them, and an interrupted extraction
        resumes after the last completed batch.
    cache_parts : dict
        What identifies the features (must include the checkpoint and data hashes).
    random_state : int
    progress : bool

    Returns
    -------
    dict of str to array

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
    if max_features is not None and max_features < 1:
        raise ValidationError(f"max_features must be an int >= 1 or None (got {max_features})")
    src = as_source(
        (x.cpu(), torch.zeros(len(x), dtype=torch.long)), name="x", batch_size=batch_size
    )
    res = stream_pass(
        model,
        src,
        layers=list(layers),
        reduce=reduce,
        max_features=max_features,
        device=device,
        cache_dir=cache_dir,
        cache_parts=None if cache_dir is None else {**(cache_parts or {}), "extract": 1},
        random_state=random_state,
        progress=progress,
        scores=False,
        commit_every=0.0,
    )
    return res.features

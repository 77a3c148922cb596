"""Safe checkpoints: ``model.safetensors`` + ``meta.json`` in a directory.

``meta.json`` records the architecture and its kwargs, the dataset with its transforms
and split seeds, the training configuration, final metrics (``metrics.check_accuracy``
among them), the sha256 of the weights file and the package version. Loading verifies
the hash before reading a single weight.

Also accepted: a plain state-dict file read with ``torch.load(weights_only=True)``
together with an architecture spec. A fully pickled model would run arbitrary code when
unpickled, so it is loaded only with ``trust_pickle=True``.

Examples
--------
>>> import tempfile, torch
>>> from clt_gen.models import build_model
>>> net = build_model("mlp", (4,), 3, width=8, depth=1)
>>> d = tempfile.mkdtemp()
>>> _ = save_checkpoint(d + "/ckpt", net, {"arch": "mlp", "arch_kwargs": {"width": 8, "depth": 1},
...                                  "input_shape": [4], "n_classes": 3})
>>> ck = load_checkpoint(d + "/ckpt")
>>> torch.equal(ck.model(torch.ones(1, 4)), net.eval()(torch.ones(1, 4)))
True
"""

from __future__ import annotations

import json
import os
import pathlib
import pickle
import tempfile
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from clt_gen._io import atomic_write_text, file_sha256
from clt_gen._version import __version__
from clt_gen.errors import CheckpointError, ValidationError
from clt_gen.models import build_model

__all__ = [
    "Checkpoint",
    "save_checkpoint",
    "load_checkpoint",
    "save_tensors",
    "load_tensors",
    "INIT_FILE",
    "file_sha256",
    "atomic_write_text",
    "WEIGHTS_FILE",
    "META_FILE",
]

WEIGHTS_FILE = "model.safetensors"
META_FILE = "meta.json"
INIT_FILE = "init.safetensors"  # the weights w_0 before training (PAC-Bayes prior means)
REQUIRED_META = ("arch", "input_shape", "n_classes")


@dataclass
class Checkpoint:
    """A loaded model (in eval mode) and its metadata."""

    model: nn.Module
    meta: dict[str, Any]
    path: pathlib.Path
    sha256: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    verified: bool = False  # the weights' sha256 matched the one meta.json records


def save_checkpoint(path: str | os.PathLike[str], model: nn.Module, meta: dict[str, Any]) -> str:
    """Save ``model`` and ``meta`` to the directory ``path`` atomically.

    Each file is written to a temporary name and renamed into place, weights first and
    ``meta.json`` last: a crash leaves either the previous checkpoint or a weights file
    whose hash does not match ``meta.json`` (detected on load), never a silent mix. Other
    files in the directory (``metrics.jsonl``, reports) are kept. Returns the sha256 of the
    weights file.

    Parameters
    ----------
    path : path
        The checkpoint directory (created if needed).
    model : nn.Module
        Saved as ``model.safetensors`` (tensors only, no code).
    meta : dict
        JSON metadata; ``arch``, ``input_shape``, ``n_classes`` and ``arch_kwargs`` let
        :func:`load_checkpoint` rebuild the model.

    Returns
    -------
    str
        The sha256 of the weights file (also recorded in ``meta.json``).

    Examples
    --------
    >>> import tempfile
    >>> from clt_gen.models import build_model
    >>> meta = {"arch": "mlp", "input_shape": [4], "n_classes": 3, "arch_kwargs": {}}
    >>> len(save_checkpoint(tempfile.mkdtemp(), build_model("mlp", (4,), 3), meta))
    64
    """
    from safetensors.torch import save_file

    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise ValidationError(f"meta must contain {list(REQUIRED_META)} (missing {missing})")
    dest = pathlib.Path(path)
    dest.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest, prefix=f".{WEIGHTS_FILE}.", suffix=".tmp")
    os.close(fd)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        try:
            save_file(state, tmp)
        except Exception as exc:  # OSError, or safetensors' own error wrapping one
            from safetensors import SafetensorError

            if not isinstance(exc, (OSError, SafetensorError)):
                raise
            need = sum(t.numel() * t.element_size() for t in state.values())
            raise CheckpointError(
                f"cannot write the checkpoint's weights to {dest} ({exc}); "
                f"they need about {need / 2**20:.1f} MiB. Nothing was replaced: free space "
                "or save elsewhere"
            ) from None
        digest = file_sha256(tmp)
        os.replace(tmp, dest / WEIGHTS_FILE)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    full = {**meta, "weights_sha256": digest, "version": __version__, "format": 1}
    atomic_write_text(dest / META_FILE, json.dumps(full, indent=2, sort_keys=True, default=str))
    return digest


def save_tensors(path: str | os.PathLike[str], tensors: dict[str, torch.Tensor]) -> str:
    """Write named tensors to a safetensors file atomically; return its sha256.

    Used for the extra files of a checkpoint directory (``init.safetensors``: the
    initialization ``w_0``; ``prior.safetensors`` and ``posterior_std.safetensors`` of a
    PAC-Bayes run); ``meta.json`` records each file's hash.

    Examples
    --------
    >>> import tempfile, torch
    >>> d = tempfile.mkdtemp()
    >>> digest = save_tensors(d + "/t.safetensors", {"w": torch.ones(2)})
    >>> load_tensors(d + "/t.safetensors", digest)["w"].tolist()
    [1.0, 1.0]
    """
    from safetensors.torch import save_file

    dest = pathlib.Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, tmp)
        digest = file_sha256(tmp)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return digest


def load_tensors(path: str | os.PathLike[str], sha256: str | None) -> dict[str, torch.Tensor]:
    """Read a safetensors file, refusing it when its sha256 differs from ``sha256``.

    Raises
    ------
    CheckpointError
        Missing, corrupted, or changed since its hash was recorded.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    p = pathlib.Path(path)
    if not p.exists():
        raise CheckpointError(f"{p} is missing; the checkpoint's meta.json refers to it")
    if sha256 is not None and file_sha256(p) != sha256:
        raise CheckpointError(
            f"{p}: sha256 does not match meta.json; the file was changed or corrupted"
        )
    try:
        return load_file(str(p))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{p} is corrupted or truncated ({exc})") from None


def _load_state(model: nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise CheckpointError(
            f"{where}: parameter names do not match the architecture "
            f"(missing {missing[:5]}{'...' if len(missing) > 5 else ''}, unexpected "
            f"{unexpected[:5]}{'...' if len(unexpected) > 5 else ''}); check the arch and kwargs"
        )
    bad = [k for k in own if tuple(own[k].shape) != tuple(state[k].shape)]
    if bad:
        raise CheckpointError(
            f"{where}: shapes differ for {bad[:5]} (e.g. {bad[0]}: file "
            f"{tuple(state[bad[0]].shape)}, model {tuple(own[bad[0]].shape)})"
        )
    for k, t in state.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            n_bad = int((~torch.isfinite(t)).sum())
            raise CheckpointError(
                f"{where}: tensor {k!r} holds {n_bad} NaN or inf values of {t.numel()}; a "
                "network with non-finite weights gives meaningless risks and bounds (the "
                "training probably diverged: retrain with a lower lr, or load an earlier "
                "checkpoint)"
            )
    model.load_state_dict(state)


def _build(meta: dict[str, Any], where: str) -> nn.Module:
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise CheckpointError(f"{where}: metadata lacks {missing}; it needs {list(REQUIRED_META)}")
    return build_model(
        meta["arch"], meta["input_shape"], meta["n_classes"], **meta.get("arch_kwargs", {})
    )


def load_checkpoint(
    path: str | os.PathLike[str],
    *,
    arch: dict[str, Any] | None = None,
    trust_pickle: bool = False,
    map_location: str | torch.device = "cpu",
    allow_unverified: bool = False,
) -> Checkpoint:
    """Load a checkpoint directory, a state-dict file, or (opt-in) a pickled model.

    Parameters
    ----------
    path : path
        A checkpoint directory (``model.safetensors`` + ``meta.json``), a ``.safetensors``
        or ``.pt``/``.pth`` state-dict file (then ``arch`` is required), or a pickled
        model file (then ``trust_pickle=True`` is required).
    arch : dict, optional
        ``{"arch": ..., "input_shape": [...], "n_classes": ..., "arch_kwargs": {...}}`` for
        bare state-dict files.
    trust_pickle : bool
        Allow full unpickling, which can execute code stored in the file. Only for files
        you created yourself.
    allow_unverified : bool
        Load a checkpoint directory whose ``meta.json`` records no ``weights_sha256``
        (its weights cannot be checked; ``Checkpoint.verified`` is then False and the
        report says so). Without it such a directory is refused.

    Returns
    -------
    Checkpoint
        The model in eval mode, its metadata, path and weights hash.

    Raises
    ------
    CheckpointError
        Missing or corrupted files, hash mismatch, names or shapes that do not match,
        or a file that needs unpickling without ``trust_pickle``.

    Examples
    --------
    >>> import tempfile
    >>> from clt_gen.models import build_model
    >>> d = tempfile.mkdtemp()
    >>> meta = {"arch": "mlp", "input_shape": [4], "n_classes": 3, "arch_kwargs": {}}
    >>> _ = save_checkpoint(d, build_model("mlp", (4,), 3), meta)
    >>> load_checkpoint(d).meta["n_classes"]
    3
    """
    p = pathlib.Path(path)
    if not p.exists():
        raise CheckpointError(f"checkpoint path does not exist: {str(p)!r}")
    if p.is_dir():
        return _load_directory(p, map_location, allow_unverified)
    return _load_file(p, arch, trust_pickle, map_location)


def _load_directory(
    p: pathlib.Path, map_location: str | torch.device, allow_unverified: bool = False
) -> Checkpoint:
    """``model.safetensors`` + ``meta.json``, the hash checked before any weight is read."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    meta_path, weights = p / META_FILE, p / WEIGHTS_FILE
    if not meta_path.exists() or not weights.exists():
        raise CheckpointError(
            f"{p} is not a checkpoint directory: it needs {META_FILE} and {WEIGHTS_FILE}"
        )
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{meta_path} is not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(
            f"{meta_path} must hold a JSON object with the keys {list(REQUIRED_META)} (got a "
            f"{type(meta).__name__}); rewrite it, or re-save the model with save_checkpoint"
        )
    digest = file_sha256(weights)
    if not meta.get("weights_sha256") and not allow_unverified:
        raise CheckpointError(
            f"{meta_path} records no weights_sha256, so {WEIGHTS_FILE} cannot be checked "
            "against it (the weights may have been altered). Re-save the checkpoint with "
            "save_checkpoint, or, if you trust the file, pass allow_unverified=True "
            "(--allow-unverified); the report then records weights_verified: false"
        )
    if meta.get("weights_sha256") and meta["weights_sha256"] != digest:
        raise CheckpointError(
            f"{weights}: sha256 {digest[:12]}... does not match meta.json "
            f"({str(meta['weights_sha256'])[:12]}...); the file was changed or corrupted"
        )
    model = _build(meta, str(p))
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{weights} is corrupted or truncated ({exc})") from None
    _load_state(model, state, str(weights))
    verified = bool(meta.get("weights_sha256"))
    return Checkpoint(model.to(map_location).eval(), meta, p, digest, verified=verified)


def _load_file(
    p: pathlib.Path,
    arch: dict[str, Any] | None,
    trust_pickle: bool,
    map_location: str | torch.device,
) -> Checkpoint:
    """Load a ``.safetensors`` or state-dict file (with ``arch``), or an opted-in pickled model."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    digest = file_sha256(p)
    if p.suffix == ".safetensors":
        if arch is None:
            raise CheckpointError(f"{p} holds weights only: pass arch={{'arch': ...}} too")
        try:
            state = load_file(str(p))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{p} is corrupted or truncated ({exc})") from None
        model = _build(arch, str(p))
        _load_state(model, state, str(p))
        return Checkpoint(model.to(map_location).eval(), dict(arch), p, digest)

    try:
        obj = torch.load(p, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if not trust_pickle:
            raise CheckpointError(
                f"{p} is not a plain state dict: loading it needs full unpickling, which can "
                "run code stored in the file. If you created this file yourself, pass "
                f"trust_pickle=True (--trust-pickle). Detail: {str(exc).splitlines()[0]}"
            ) from None
        obj = torch.load(p, map_location=map_location, weights_only=False)
    except (RuntimeError, EOFError, OSError) as exc:
        raise CheckpointError(f"{p} is corrupted or truncated ({exc})") from None
    if isinstance(obj, nn.Module):
        return Checkpoint(obj.eval(), dict(arch or {}), p, digest)
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{p} does not hold a state dict of tensors (got {type(obj)})")
    if arch is None:
        raise CheckpointError(f"{p} holds weights only: pass arch={{'arch': ...}} too")
    model = _build(arch, str(p))
    _load_state(model, obj, str(p))
    return Checkpoint(model.to(map_location).eval(), dict(arch), p, digest)
